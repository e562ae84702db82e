//go:build cuda

package main

import (
	"fmt"

	"gorgonia.org/cu"

	"qllama/convert"
	"qllama/infer/cuda"
)

// calibDevice resolves --device for GPTQ and AWQ: "" means cuda when a GPU
// is present. It returns the GPU walks (nil: the CPU ones) and a function
// that releases the device.
func calibDevice(device string, gpu int) (convert.GPTQFunc, convert.AWQFunc, func(), error) {
	if device == "" {
		if n, err := cu.NumDevices(); err != nil || n == 0 {
			return nil, nil, func() {}, nil
		}
		device = "cuda"
	}
	switch device {
	case "cpu":
		return nil, nil, func() {}, nil
	case "cuda":
		d, err := cuda.Open(gpu)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--device cuda: GPU %d: %w", gpu, err)
		}
		return d.QuantizeGPTQ, d.QuantizeAWQ, func() { d.Close() }, nil
	}
	return nil, nil, nil, fmt.Errorf("--device %q: want cpu or cuda", device)
}

// cudaBuildTag is true in builds with the cuda tag (tests skip CPU-build checks).
const cudaBuildTag = true
