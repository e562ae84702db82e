package quant

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// fp16 converts to IEEE binary16 rounding to nearest even, as
// GGML_FP32_TO_FP16 does; it reports overflow to infinity.
func fp16(v float32) (uint16, error) {
	h := float16.Fromfloat32(v)
	if !h.IsFinite() {
		return 0, fmt.Errorf("%v does not fit float16: %w", v, ErrOverflow)
	}
	return h.Bits(), nil
}

// fp16to32 converts binary16 bits to float32 exactly.
func fp16to32(h uint16) float32 { return float16.Frombits(h).Float32() }

// validF16 rejects NaN/Inf float16 bits, like ggml's validate_fp16.
func validF16(h uint16, what string) error {
	if h&0x7c00 == 0x7c00 {
		if h&0x03ff == 0 {
			return fmt.Errorf("%s is infinite: %w", what, ErrNonFinite)
		}
		return fmt.Errorf("%s is NaN: %w", what, ErrNonFinite)
	}
	return nil
}

// le16 reads a little-endian uint16.
func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }

// put16 writes a little-endian uint16.
func put16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }

// absf is |v| for float32.
func absf(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }
