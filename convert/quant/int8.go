package quant

import (
	"math"
)

// Int8 is the LLM.int8() weight format (bitsandbytes Linear8bitLt weights,
// int8_vectorwise_quant with threshold 0): per output row r,
// Absmax[r] = max |w[r,:]| (bitsandbytes' SCB / row_stats), codes
// Codes[r*cols+j] = round(w * (127/Absmax[r])) with round-half-to-even
// (CUDA __float2int_rn / torch.round), and w ≈ Codes * Absmax / 127.
type Int8 struct {
	Rows, Cols int
	// Codes holds rows*cols int8 codes, row-major.
	Codes []int8
	// Absmax holds one float32 row absmax per row.
	Absmax []float32
}

var _ Tensor = (*Int8)(nil)

// QuantizeInt8 quantizes a row-major [rows, cols] tensor. The row factor
// 127/absmax is computed in float32 with IEEE division (bitsandbytes' CUDA
// kernel uses the approximate __fdividef); an all-zero row gets Absmax 0 and
// zero codes (bitsandbytes would produce 0*inf). NaN/Inf inputs are errors.
func QuantizeInt8(w []float32, rows, cols int) (*Int8, error) {
	if err := checkShape("int8", w, rows, cols); err != nil {
		return nil, err
	}
	q := &Int8{Rows: rows, Cols: cols, Codes: make([]int8, rows*cols), Absmax: make([]float32, rows)}
	for r := 0; r < rows; r++ {
		row := w[r*cols : (r+1)*cols]
		var amax float32
		for _, v := range row {
			amax = max(amax, absf(v))
		}
		q.Absmax[r] = amax
		if amax == 0 {
			continue
		}
		s := 127 / amax
		for j, v := range row {
			q.Codes[r*cols+j] = int8(math.RoundToEven(float64(float32(v * s))))
		}
	}
	return q, nil
}

// Shape returns rows and cols.
func (q *Int8) Shape() (int, int) { return q.Rows, q.Cols }

// Validate checks component lengths and finite, non-negative absmax values.
func (q *Int8) Validate() error {
	if q.Rows <= 0 || q.Cols <= 0 {
		return checkShape("int8", nil, q.Rows, q.Cols)
	}
	if err := checkLen("int8", "Codes", len(q.Codes), q.Rows*q.Cols); err != nil {
		return err
	}
	if err := checkLen("int8", "Absmax", len(q.Absmax), q.Rows); err != nil {
		return err
	}
	return checkFiniteSlice("int8", "Absmax", q.Absmax)
}

// int8Recip is bitsandbytes' float32 1/127 used by int8_vectorwise_dequant.
const int8Recip = float32(7.874015718698502e-3)

// Dequantize returns Codes*Absmax*(1/127) as bitsandbytes'
// int8_vectorwise_dequant computes it (float32, left to right).
func (q *Int8) Dequantize() ([]float32, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	out := make([]float32, q.Rows*q.Cols)
	for r := 0; r < q.Rows; r++ {
		a := q.Absmax[r]
		for j := 0; j < q.Cols; j++ {
			out[r*q.Cols+j] = float32(float32(q.Codes[r*q.Cols+j])*a) * int8Recip
		}
	}
	return out, nil
}

// DotRow returns sum_j w[r,j]*x[j].
func (q *Int8) DotRow(r int, x []float32) float32 {
	codes := q.Codes[r*q.Cols : (r+1)*q.Cols]
	x = x[:len(codes)]
	var s0, s1, s2, s3 float32
	n := len(codes) &^ 3
	for j := 0; j < n; j += 4 {
		s0 += float32(codes[j]) * x[j]
		s1 += float32(codes[j+1]) * x[j+1]
		s2 += float32(codes[j+2]) * x[j+2]
		s3 += float32(codes[j+3]) * x[j+3]
	}
	for j := n; j < len(codes); j++ {
		s0 += float32(codes[j]) * x[j]
	}
	return ((s0 + s1) + (s2 + s3)) * q.Absmax[r] * int8Recip
}

// Bytes is one byte per code plus a float32 absmax per row.
func (q *Int8) Bytes() int { return q.Rows*q.Cols + 4*q.Rows }

// BitsPerWeight includes the per-row absmax.
func (q *Int8) BitsPerWeight() float64 { return bitsPerWeight(q.Bytes(), q.Rows, q.Cols) }
