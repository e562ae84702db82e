package quant

import "fmt"

// F16 layout: one little-endian IEEE binary16 per weight.
const (
	BlockSizeF16  = 1
	BlockBytesF16 = 2
)

func traitsF16() Traits {
	return Traits{
		Name: "f16", GGUF: GGUFF16, BlockSize: BlockSizeF16, BlockBytes: BlockBytesF16,
		BitsPerWeight: 16,
		Quantize:      QuantizeF16, Dequantize: DequantizeF16, Validate: ValidateF16, Dot: DotF16,
	}
}

// QuantizeF16 rounds each value to the nearest binary16 (ties to even, as
// GGML_FP32_TO_FP16). NaN/Inf inputs and values that round to infinity
// (|v| >= 65520) are errors.
func QuantizeF16(dst []byte, src []float32) error {
	if err := checkQuantize("f16", BlockSizeF16, BlockBytesF16, dst, src); err != nil {
		return err
	}
	for i, v := range src {
		h, err := fp16(v)
		if err != nil {
			return fmt.Errorf("quant: f16: element %d: %w", i, err)
		}
		put16(dst[2*i:], h)
	}
	return nil
}

// DequantizeF16 widens binary16 values to float32 exactly.
func DequantizeF16(dst []float32, src []byte) error {
	if err := checkDequantize("f16", BlockSizeF16, BlockBytesF16, dst, src); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = fp16to32(le16(src[2*i:]))
	}
	return nil
}

// ValidateF16 rejects NaN/Inf values and a trailing odd byte.
func ValidateF16(src []byte) error {
	return validateBlocks("f16", BlockBytesF16, src, func(b []byte) error { return validF16(le16(b), "value") })
}

// DotF16 is the float32 dot product of a packed f16 row with x.
func DotF16(src []byte, x []float32) float32 {
	checkDot("f16", BlockSizeF16, BlockBytesF16, src, x)
	var s0, s1 float32
	n := len(x) &^ 1
	for i := 0; i < n; i += 2 {
		s0 += fp16to32(le16(src[2*i:])) * x[i]
		s1 += fp16to32(le16(src[2*i+2:])) * x[i+1]
	}
	if n < len(x) {
		s0 += fp16to32(le16(src[2*n:])) * x[n]
	}
	return s0 + s1
}
