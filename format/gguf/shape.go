package gguf

import (
	"fmt"
	"math"
)

// MaxDims is the largest number of dimensions a tensor may have
// (GGML_MAX_DIMS; docs/gguf.md: "Currently at most 4").
const MaxDims = 4

// ggmlDims converts between this package's row-major (PyTorch) shape order
// and ggml's ne[] order by reversing the dimensions: shape [rows, cols] is
// stored as ne = [cols, rows], ne[0] being the innermost, contiguous
// dimension. Reversal is its own inverse, so this one function is the only
// place either direction happens: the writer calls it on TensorSpec.Shape and
// the reader on the dimensions it decodes.
func ggmlDims(dims []int64) []int64 {
	out := make([]int64, len(dims))
	for i, d := range dims {
		out[len(dims)-1-i] = d
	}
	return out
}

// checkShape validates a row-major shape for type t and returns the number
// of elements and bytes of the tensor. Every dimension must be positive, the
// innermost (last) dimension a multiple of t's block size, and neither count
// may overflow int64.
func checkShape(t Type, shape []int64) (elems, size int64, err error) {
	if !t.Known() {
		return 0, 0, fmt.Errorf("tensor type %v: %w", t, ErrUnsupported)
	}
	if len(shape) == 0 || len(shape) > MaxDims {
		return 0, 0, fmt.Errorf("%d dimensions, want 1 to %d", len(shape), MaxDims)
	}
	elems = 1
	for i, d := range shape {
		if d <= 0 {
			return 0, 0, fmt.Errorf("dimension %d of shape %v is %d, want > 0", i, shape, d)
		}
		if elems > math.MaxInt64/d {
			return 0, 0, fmt.Errorf("element count of shape %v overflows int64", shape)
		}
		elems *= d
	}
	inner := shape[len(shape)-1]
	if inner%int64(t.BlockSize()) != 0 {
		return 0, 0, fmt.Errorf("innermost dimension %d of shape %v is not a multiple of the %v block size %d",
			inner, shape, t, t.BlockSize())
	}
	size, err = t.RowBytes(elems)
	if err != nil {
		return 0, 0, err
	}
	return elems, size, nil
}
