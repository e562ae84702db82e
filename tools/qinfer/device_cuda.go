//go:build cuda

package main

import (
	"fmt"

	"gorgonia.org/cu"

	"qllama/infer"
	"qllama/infer/cuda"
)

const cudaBuilt = true

// cudaAvailable reports whether the driver sees a device (gorgonia.org/cu
// has already initialised the driver, or exited, at start).
func cudaAvailable() bool {
	n, err := cu.NumDevices()
	return err == nil && n > 0
}

// openCUDA uploads m to device 0.
func openCUDA(m *infer.Model) (generator, func(), error) {
	d, err := cuda.Open(0)
	if err != nil {
		return nil, nil, err
	}
	g, err := d.Upload(m)
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("--device cuda: %w", err)
	}
	return g, func() { g.Close(); d.Close() }, nil
}
