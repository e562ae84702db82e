//go:build cuda

package main

import (
	"fmt"

	"gorgonia.org/cu"

	"qllama/convert"
	"qllama/infer/cuda"
)

// gptqDevice resolves --device for GPTQ: "" means cuda when a GPU is
// present. It returns the GPU walk (nil: the CPU one) and a function that
// releases the device.
func gptqDevice(device string, gpu int) (convert.GPTQFunc, func(), error) {
	if device == "" {
		if n, err := cu.NumDevices(); err != nil || n == 0 {
			return nil, func() {}, nil
		}
		device = "cuda"
	}
	switch device {
	case "cpu":
		return nil, func() {}, nil
	case "cuda":
		d, err := cuda.Open(gpu)
		if err != nil {
			return nil, nil, fmt.Errorf("--device cuda: GPU %d: %w", gpu, err)
		}
		return d.QuantizeGPTQ, func() { d.Close() }, nil
	}
	return nil, nil, fmt.Errorf("--device %q: want cpu or cuda", device)
}
