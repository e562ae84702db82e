package quant

import "fmt"

// Tensor is a quantized 2-D weight [rows, cols] (rows = output channels)
// stored in one of the whole-tensor formats ggml lacks.
type Tensor interface {
	// Shape returns rows and cols.
	Shape() (rows, cols int)
	// Validate checks that the fields are mutually consistent and finite.
	Validate() error
	// Dequantize returns the rows*cols float32 weights, row-major.
	Dequantize() ([]float32, error)
	// DotRow returns the dot product of weight row r with x. It trusts its
	// caller (a Validate'd tensor, 0 <= r < rows, len(x) == cols) and panics
	// otherwise; it does not allocate.
	DotRow(r int, x []float32) float32
	// BitsPerWeight is 8*Bytes()/(rows*cols): codes plus every scale, zero
	// and absmax it stores.
	BitsPerWeight() float64
	// Bytes is the storage size of all components as documented per format.
	Bytes() int
}

// checkShape validates a rows x cols tensor of len(w) finite values.
func checkShape(name string, w []float32, rows, cols int) error {
	if rows <= 0 || cols <= 0 {
		return fmt.Errorf("quant: %s: shape [%d, %d] must be positive: %w", name, rows, cols, ErrSize)
	}
	if len(w) != rows*cols {
		return fmt.Errorf("quant: %s: %d weights for shape [%d, %d]: %w", name, len(w), rows, cols, ErrSize)
	}
	return checkFinite(name, w)
}

// checkLen reports a component slice of the wrong length.
func checkLen(name, what string, got, want int) error {
	if got != want {
		return fmt.Errorf("quant: %s: %s has %d entries, want %d: %w", name, what, got, want, ErrSize)
	}
	return nil
}

// checkFiniteSlice rejects NaN/Inf in a stored float32 component.
func checkFiniteSlice(name, what string, v []float32) error {
	if err := checkFinite(name, v); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func bitsPerWeight(bytes, rows, cols int) float64 {
	return 8 * float64(bytes) / float64(rows*cols)
}
