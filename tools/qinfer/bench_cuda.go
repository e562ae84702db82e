//go:build cuda

package main

import (
	"fmt"

	"qllama/eval/bench"
	"qllama/infer/cuda"
)

// cudaBackend uploads l's model to GPU gpu for benchmarks and sweeps.
func cudaBackend(gpu int, l *loaded, info bench.ModelInfo) (*backend, error) {
	d, err := cuda.Open(max(gpu, 0))
	if err != nil {
		return nil, fmt.Errorf("--device cuda: GPU %d: %w", gpu, err)
	}
	g, err := d.Upload(l.model)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("--device cuda: %s: %w", l.path, err)
	}
	return &backend{
		name:   "cuda",
		target: bench.NewCUDATarget(d, g, &l.model.Config, info),
		gen:    g,
		energy: true,
		close:  func() { g.Close(); d.Close() },
	}, nil
}
