//go:build !cuda

package main

const cudaBuilt = false

func cudaAvailable() bool { return false }
