//go:build !cuda

package main

import (
	"errors"

	"qllama/eval/bench"
)

// cudaBackend fails: this qinfer was built without the CUDA backend.
func cudaBackend(int, *loaded, bench.ModelInfo) (*backend, error) {
	return nil, errors.New("--device cuda: this qinfer was built without CUDA support (build with -tags cuda)")
}
