//go:build !cuda

package main

import (
	"errors"

	"qllama/convert"
	"qllama/eval/bench"
)

// cudaBackend fails: this qinfer was built without the CUDA backend.
func cudaBackend(int, *loaded, bench.ModelInfo) (*backend, error) {
	return nil, errNoCUDA
}

var errNoCUDA = errors.New("--device cuda: this qinfer was built without CUDA support (build with -tags cuda)")

// cudaCalib fails: this qinfer was built without the CUDA backend.
func cudaCalib(int) (convert.GPTQFunc, convert.AWQFunc, func(), error) {
	return nil, nil, nil, errNoCUDA
}
