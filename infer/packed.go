package infer

import (
	"fmt"

	"gonum.org/v1/gonum/blas/gonum"

	"qllama/convert/quant"
)

// Packed is a weight matrix stored row by row in a block format of the
// quant traits table (F16, BF16, Q8_0, Q4_0, ...), used in place: MatMul
// decodes each row on the fly through the format's Dot, so the packed bytes
// (often a slice of a memory-mapped file) are the only copy of the weights.
type Packed struct {
	T        quant.Traits
	Data     []byte
	R, C     int
	rowBytes int
}

// NewPacked wraps data holding rows x cols weights in format t.
func NewPacked(t quant.Traits, data []byte, rows, cols int) (*Packed, error) {
	rb, err := t.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	if len(data) != rb*rows {
		return nil, fmt.Errorf("%s weight [%d %d] needs %d bytes, got %d", t.Name, rows, cols, rb*rows, len(data))
	}
	return &Packed{T: t, Data: data, R: rows, C: cols, rowBytes: rb}, nil
}

// Rows implements Linear.
func (p *Packed) Rows() int { return p.R }

// Cols implements Linear.
func (p *Packed) Cols() int { return p.C }

// Row implements Embedding.
func (p *Packed) Row(dst []float32, i int) {
	// Lengths were checked by NewPacked, so decoding cannot fail.
	_ = p.T.Dequantize(dst[:p.C], p.Data[i*p.rowBytes:(i+1)*p.rowBytes])
}

// MatMul implements Linear. Each weight row is decoded once into a float32
// scratch row and multiplied with every activation row by the same SSE dot
// product Dense uses, so a batch of n tokens decodes the weights once (not n
// times) and a token's result does not depend on the batch it came in.
func (p *Packed) MatMul(dst, x []float32, n int) {
	rows, cols, rb := p.R, p.C, p.rowBytes
	ParallelFor(rows, cols*n, func(lo, hi int) {
		var impl gonum.Implementation
		w := make([]float32, cols)
		for r := lo; r < hi; r++ {
			// Lengths were checked by NewPacked, so decoding cannot fail.
			_ = p.T.Dequantize(w, p.Data[r*rb:(r+1)*rb])
			for t := 0; t < n; t++ {
				dst[t*rows+r] = impl.Sdot(cols, w, 1, x[t*cols:(t+1)*cols], 1)
			}
		}
	})
}

// TensorLinear adapts a whole-tensor quantized weight (INT8 per channel,
// NF4/FP4, grouped INT2-8) to Linear through its DotRow.
type TensorLinear struct {
	T quant.Tensor
}

// NewTensorLinear validates t and wraps it.
func NewTensorLinear(t quant.Tensor) (*TensorLinear, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &TensorLinear{T: t}, nil
}

// Rows implements Linear.
func (l *TensorLinear) Rows() int { r, _ := l.T.Shape(); return r }

// Cols implements Linear.
func (l *TensorLinear) Cols() int { _, c := l.T.Shape(); return c }

// MatMul implements Linear.
func (l *TensorLinear) MatMul(dst, x []float32, n int) {
	rows, cols := l.T.Shape()
	ParallelFor(rows, cols*n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for t := 0; t < n; t++ {
				dst[t*rows+r] = l.T.DotRow(r, x[t*cols:(t+1)*cols])
			}
		}
	})
}

// Quant returns the quantized tensor, for backends that decode the format
// themselves. Wrappers that embed a *TensorLinear expose it too.
func (l *TensorLinear) Quant() quant.Tensor { return l.T }
