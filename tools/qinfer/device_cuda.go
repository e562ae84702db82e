//go:build cuda

package main

import "gorgonia.org/cu"

const cudaBuilt = true

// cudaAvailable reports whether the driver sees a device (gorgonia.org/cu
// has already initialised the driver, or exited, at start).
func cudaAvailable() bool {
	n, err := cu.NumDevices()
	return err == nil && n > 0
}
