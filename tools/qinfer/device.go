package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"qllama/infer"
)

// generator runs batched generation: the CPU Runner, or a model uploaded to
// the GPU (infer/cuda, builds with the cuda tag).
type generator interface {
	Generate(ctx context.Context, reqs []infer.Request, opt infer.GenerateOptions, done func(infer.Completion)) error
}

// deviceFlag is --device, taken by every model-running command.
func deviceFlag() cli.Flag {
	return &cli.StringFlag{Name: "device", Usage: "cpu or cuda (default: cuda when this build has CUDA and a GPU is present, else cpu)"}
}

// kvCacheFlag is --kv-cache, the GPU KV cache's element type.
func kvCacheFlag() cli.Flag {
	return &cli.StringFlag{Name: "kv-cache", Value: "auto", Usage: "KV cache element type on the GPU: auto (float32 for a float32 model, else FP16), f16 or f32 (the CPU backend's cache is always f32)"}
}

// pickKVCache checks a --kv-cache value for the device dev.
func pickKVCache(kv, dev string) (string, error) {
	switch kv {
	case "", "auto", "f32":
		return kv, nil
	case "f16":
		if dev == "cpu" {
			return "", fmt.Errorf("--kv-cache f16: the CPU backend keeps its KV cache in float32; use --device cuda or --kv-cache f32")
		}
		return kv, nil
	}
	return "", fmt.Errorf("--kv-cache %q: want auto, f16 or f32", kv)
}

// pickDevice resolves a --device value: "" means cuda where available.
func pickDevice(name string) (string, error) {
	switch name {
	case "":
		if cudaAvailable() {
			return "cuda", nil
		}
		return "cpu", nil
	case "cpu":
		return "cpu", nil
	case "cuda":
		if !cudaBuilt {
			return "", fmt.Errorf("--device cuda: this qinfer was built without CUDA support; build it with `make build-cuda` (go build -tags cuda, needs cuda.h and the NVIDIA driver's libcuda)")
		}
		if !cudaAvailable() {
			return "", fmt.Errorf("--device cuda: no CUDA device found")
		}
		return "cuda", nil
	}
	return "", fmt.Errorf("--device %q: want cpu or cuda", name)
}

// cpuOnly refuses --device cuda for commands that run the CPU reference, so
// that nobody reads CPU figures as GPU ones.
func cpuOnly(c *cli.Context) error {
	if c.IsSet("device") && c.String("device") != "cpu" {
		return fmt.Errorf("%s runs on the CPU reference backend; drop --device %s", c.Command.Name, c.String("device"))
	}
	return nil
}
