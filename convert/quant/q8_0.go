package quant

import (
	"fmt"
	"math"
)

// Q8_0 layout (block_q8_0): fp16 d, then 32 int8 quants; x = d*q.
const (
	BlockSizeQ8_0  = 32
	BlockBytesQ8_0 = 2 + BlockSizeQ8_0
)

func traitsQ8_0() Traits {
	return Traits{
		Name: "q8_0", GGUF: GGUFQ8_0, BlockSize: BlockSizeQ8_0, BlockBytes: BlockBytesQ8_0,
		BitsPerWeight: 8.5,
		Quantize:      QuantizeQ8_0, Dequantize: DequantizeQ8_0, Validate: validateDOnly("q8_0", BlockBytesQ8_0), Dot: DotQ8_0,
	}
}

// QuantizeQ8_0 matches quantize_row_q8_0_ref: d = amax/127 and
// q = roundf(x/d) (float32 x*(1/d), halves away from zero).
func QuantizeQ8_0(dst []byte, src []float32) error {
	const name = "q8_0"
	if err := checkQuantize(name, BlockSizeQ8_0, BlockBytesQ8_0, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockSizeQ8_0; i++ {
		x := src[i*BlockSizeQ8_0 : (i+1)*BlockSizeQ8_0]
		y := dst[i*BlockBytesQ8_0 : (i+1)*BlockBytesQ8_0]
		var amax float32
		for _, v := range x {
			amax = max(amax, absf(v))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		h, err := fp16(d)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale: %w", name, i, err)
		}
		put16(y, h)
		for j, v := range x {
			y[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
		}
	}
	return nil
}

// DequantizeQ8_0 matches dequantize_row_q8_0: x = q*d in float32.
func DequantizeQ8_0(dst []float32, src []byte) error {
	if err := checkDequantize("q8_0", BlockSizeQ8_0, BlockBytesQ8_0, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ8_0; i++ {
		b := src[i*BlockBytesQ8_0 : (i+1)*BlockBytesQ8_0 : (i+1)*BlockBytesQ8_0]
		d := fp16to32(le16(b))
		q := b[2:34:34]
		y := dst[i*BlockSizeQ8_0 : (i+1)*BlockSizeQ8_0 : (i+1)*BlockSizeQ8_0]
		for j, c := range q {
			y[j] = float32(int8(c)) * d
		}
	}
	return nil
}

// DotQ8_0 is the dot product of a packed q8_0 row with x.
func DotQ8_0(src []byte, x []float32) float32 {
	checkDot("q8_0", BlockSizeQ8_0, BlockBytesQ8_0, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ8_0; i++ {
		b := src[i*BlockBytesQ8_0 : (i+1)*BlockBytesQ8_0 : (i+1)*BlockBytesQ8_0]
		q := b[2:34:34]
		xs := x[i*BlockSizeQ8_0 : (i+1)*BlockSizeQ8_0 : (i+1)*BlockSizeQ8_0]
		var s0, s1, s2, s3 float32
		for j := 0; j < 32; j += 4 {
			s0 += float32(int8(q[j])) * xs[j]
			s1 += float32(int8(q[j+1])) * xs[j+1]
			s2 += float32(int8(q[j+2])) * xs[j+2]
			s3 += float32(int8(q[j+3])) * xs[j+3]
		}
		sum += fp16to32(le16(b)) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}

// validateDOnly checks the leading fp16 scale d of each block.
func validateDOnly(name string, bb int) func([]byte) error {
	return func(src []byte) error {
		return validateBlocks(name, bb, src, func(b []byte) error { return validF16(le16(b), "scale d") })
	}
}

// validateDM checks the leading fp16 pair d, m of each block.
func validateDM(name string, bb int) func([]byte) error {
	return func(src []byte) error {
		return validateBlocks(name, bb, src, func(b []byte) error {
			if err := validF16(le16(b), "scale d"); err != nil {
				return err
			}
			return validF16(le16(b[2:]), "min m")
		})
	}
}

// signedAbsMax returns the value of largest magnitude in x (the first one on
// ties), as the q4_0/q5_0 reference encoders pick it.
func signedAbsMax(x []float32) float32 {
	var amax, m float32
	for _, v := range x {
		if amax < absf(v) {
			amax = absf(v)
			m = v
		}
	}
	return m
}

// minMax returns min and max of x starting from ±FLT_MAX like q4_1/q5_1.
func minMax(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return lo, hi
}
