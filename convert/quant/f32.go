package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F32 layout: one little-endian IEEE binary32 per weight.
const (
	BlockSizeF32  = 1
	BlockBytesF32 = 4
)

func traitsF32() Traits {
	return Traits{
		Name: "f32", GGUF: GGUFF32, BlockSize: BlockSizeF32, BlockBytes: BlockBytesF32,
		BitsPerWeight: 32,
		Quantize:      QuantizeF32, Dequantize: DequantizeF32, Validate: ValidateF32, Dot: DotF32,
	}
}

// QuantizeF32 stores src as little-endian float32; NaN/Inf are errors.
func QuantizeF32(dst []byte, src []float32) error {
	if err := checkQuantize("f32", BlockSizeF32, BlockBytesF32, dst, src); err != nil {
		return err
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
	return nil
}

// DequantizeF32 decodes little-endian float32 values.
func DequantizeF32(dst []float32, src []byte) error {
	if err := checkDequantize("f32", BlockSizeF32, BlockBytesF32, dst, src); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
	return nil
}

// ValidateF32 rejects NaN/Inf values and partial values.
func ValidateF32(src []byte) error {
	return validateBlocks("f32", BlockBytesF32, src, func(b []byte) error {
		v := math.Float32frombits(binary.LittleEndian.Uint32(b))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("value %v: %w", v, ErrNonFinite)
		}
		return nil
	})
}

// DotF32 is the float32 dot product of a packed f32 row with x.
func DotF32(src []byte, x []float32) float32 {
	checkDot("f32", BlockSizeF32, BlockBytesF32, src, x)
	var s0, s1, s2, s3 float32
	n := len(x) &^ 3
	for i := 0; i < n; i += 4 {
		b := src[4*i : 4*i+16 : 4*i+16]
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(b[0:])) * x[i]
		s1 += math.Float32frombits(binary.LittleEndian.Uint32(b[4:])) * x[i+1]
		s2 += math.Float32frombits(binary.LittleEndian.Uint32(b[8:])) * x[i+2]
		s3 += math.Float32frombits(binary.LittleEndian.Uint32(b[12:])) * x[i+3]
	}
	for i := n; i < len(x); i++ {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}
