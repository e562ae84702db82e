//go:build !cuda

package main

import (
	"errors"

	"qllama/infer"
)

const cudaBuilt = false

func cudaAvailable() bool { return false }

func openCUDA(*infer.Model) (generator, func(), error) {
	return nil, nil, errors.New("--device cuda: this qinfer was built without CUDA support")
}
