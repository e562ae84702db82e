// Package kernels holds the CUDA C sources of the GPU backend (one .cu per
// concern, qllama.cuh mirroring convert/quant's layouts) and the images
// kernels/gen.sh builds from them, embedded here so that a build without
// nvcc still gets working kernels. This file has no cgo and no build tag:
// the images are plain bytes; infer/cuda (tag cuda) loads them.
package kernels

import (
	"embed"
	"fmt"
)

//go:embed *.fatbin *_sm80.ptx gen.sum
var files embed.FS

// Modules lists the kernel modules, one per .cu file.
var Modules = []string{"attention", "awq", "gemm", "gptq", "matvec", "norm", "rope", "sample"}

// Image is one module's code in the forms a driver can load.
type Image struct {
	Name   string
	Fatbin []byte // sm_90 SASS plus compute_90 PTX
	PTX80  []byte // compute_80 PTX, JIT-compiled where the fatbin does not load
}

// Load returns the embedded images of module name.
func Load(name string) (Image, error) {
	fb, err := files.ReadFile(name + ".fatbin")
	if err != nil {
		return Image{}, fmt.Errorf("kernels: module %q: %w", name, err)
	}
	ptx, err := files.ReadFile(name + "_sm80.ptx")
	if err != nil {
		return Image{}, fmt.Errorf("kernels: module %q: %w", name, err)
	}
	return Image{Name: name, Fatbin: fb, PTX80: ptx}, nil
}

// Sums returns gen.sum: the sha256 of each source the images were built from,
// as sha256sum prints them.
func Sums() []byte {
	b, _ := files.ReadFile("gen.sum") // embedded above, cannot fail
	return b
}
