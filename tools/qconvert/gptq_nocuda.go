//go:build !cuda

package main

import (
	"fmt"

	"qllama/convert"
)

// gptqDevice resolves --device for GPTQ in a build without CUDA: the CPU.
func gptqDevice(device string, _ int) (convert.GPTQFunc, func(), error) {
	switch device {
	case "", "cpu":
		return nil, func() {}, nil
	case "cuda":
		return nil, nil, fmt.Errorf("--device cuda: this qconvert was built without CUDA support; build it with `make build-cuda` (go build -tags cuda)")
	}
	return nil, nil, fmt.Errorf("--device %q: want cpu or cuda", device)
}
