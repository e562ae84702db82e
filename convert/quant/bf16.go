package quant

import (
	"fmt"
	"math"
)

// BF16 layout: the high 16 bits of a binary32, little-endian, one per weight.
const (
	BlockSizeBF16  = 1
	BlockBytesBF16 = 2
)

func traitsBF16() Traits {
	return Traits{
		Name: "bf16", GGUF: GGUFBF16, BlockSize: BlockSizeBF16, BlockBytes: BlockBytesBF16,
		BitsPerWeight: 16,
		Quantize:      QuantizeBF16, Dequantize: DequantizeBF16, Validate: ValidateBF16, Dot: DotBF16,
	}
}

// bf16 rounds a finite float32 to bfloat16 bits, nearest with ties to even,
// subnormals kept (ggml_compute_fp32_to_bf16 for non-NaN input).
func bf16(v float32) uint16 {
	u := math.Float32bits(v)
	return uint16((u + (0x7fff + ((u >> 16) & 1))) >> 16)
}

// bf16to32 widens bfloat16 bits exactly.
func bf16to32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// QuantizeBF16 rounds each value to bfloat16 (ties to even). NaN/Inf inputs
// and finite values that round to infinity are errors.
func QuantizeBF16(dst []byte, src []float32) error {
	if err := checkQuantize("bf16", BlockSizeBF16, BlockBytesBF16, dst, src); err != nil {
		return err
	}
	for i, v := range src {
		h := bf16(v)
		if h&0x7f80 == 0x7f80 {
			return fmt.Errorf("quant: bf16: element %d: %v does not fit bfloat16: %w", i, v, ErrOverflow)
		}
		put16(dst[2*i:], h)
	}
	return nil
}

// DequantizeBF16 widens bfloat16 values to float32 exactly.
func DequantizeBF16(dst []float32, src []byte) error {
	if err := checkDequantize("bf16", BlockSizeBF16, BlockBytesBF16, dst, src); err != nil {
		return err
	}
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = bf16to32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
	return nil
}

// ValidateBF16 rejects NaN/Inf values and a trailing odd byte.
func ValidateBF16(src []byte) error {
	return validateBlocks("bf16", BlockBytesBF16, src, func(b []byte) error {
		if le16(b)&0x7f80 == 0x7f80 {
			return fmt.Errorf("value bits %#04x: %w", le16(b), ErrNonFinite)
		}
		return nil
	})
}

// DotBF16 is the float32 dot product of a packed bf16 row with x.
func DotBF16(src []byte, x []float32) float32 {
	checkDot("bf16", BlockSizeBF16, BlockBytesBF16, src, x)
	var s0, s1 float32
	n := len(x) &^ 1
	for i := 0; i < n; i += 2 {
		s0 += bf16to32(le16(src[2*i:])) * x[i]
		s1 += bf16to32(le16(src[2*i+2:])) * x[i+1]
	}
	if n < len(x) {
		s0 += bf16to32(le16(src[2*n:])) * x[n]
	}
	return s0 + s1
}
