//go:build !cuda

package main

import (
	"fmt"

	"qllama/convert"
)

// calibDevice resolves --device for GPTQ and AWQ in a build without CUDA:
// the CPU.
func calibDevice(device string, _ int) (convert.GPTQFunc, convert.AWQFunc, func(), error) {
	switch device {
	case "", "cpu":
		return nil, nil, func() {}, nil
	case "cuda":
		return nil, nil, nil, fmt.Errorf("--device cuda: this qconvert was built without CUDA support; build it with `make build-cuda` (go build -tags cuda)")
	}
	return nil, nil, nil, fmt.Errorf("--device %q: want cpu or cuda", device)
}

// cudaBuildTag is true in builds with the cuda tag (tests skip CPU-build checks).
const cudaBuildTag = false
