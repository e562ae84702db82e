package quant

import (
	"encoding/binary"
	"fmt"
)

// Q5_0 layout (block_q5_0): fp16 d, 4 bytes qh (little-endian uint32; bit j
// is the 5th bit of element j), then 16 bytes of low nibbles (element j low,
// j+16 high); x = d*(q-16).
const (
	BlockSizeQ5_0  = 32
	BlockBytesQ5_0 = 2 + 4 + BlockSizeQ5_0/2
)

func traitsQ5_0() Traits {
	return Traits{
		Name: "q5_0", GGUF: GGUFQ5_0, BlockSize: BlockSizeQ5_0, BlockBytes: BlockBytesQ5_0,
		BitsPerWeight: 5.5,
		Quantize:      QuantizeQ5_0, Dequantize: DequantizeQ5_0, Validate: validateDOnly("q5_0", BlockBytesQ5_0), Dot: DotQ5_0,
	}
}

// QuantizeQ5_0 matches quantize_row_q5_0_ref: d = max/-16 (signed value of
// largest magnitude), q = min(31, trunc(x*(1/d) + 16.5)).
func QuantizeQ5_0(dst []byte, src []float32) error {
	const name = "q5_0"
	if err := checkQuantize(name, BlockSizeQ5_0, BlockBytesQ5_0, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockSizeQ5_0; i++ {
		x := src[i*BlockSizeQ5_0 : (i+1)*BlockSizeQ5_0]
		y := dst[i*BlockBytesQ5_0 : (i+1)*BlockBytesQ5_0]
		d := signedAbsMax(x) / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		h, err := fp16(d)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale: %w", name, i, err)
		}
		put16(y, h)
		var qh uint32
		for j := 0; j < 16; j++ {
			q0 := min(31, int(float32(x[j]*id)+16.5))
			q1 := min(31, int(float32(x[j+16]*id)+16.5))
			y[6+j] = byte(q0&15) | byte(q1&15)<<4
			qh |= uint32(q0>>4&1) << j
			qh |= uint32(q1>>4&1) << (j + 16)
		}
		binary.LittleEndian.PutUint32(y[2:], qh)
	}
	return nil
}

// DequantizeQ5_0 matches dequantize_row_q5_0.
func DequantizeQ5_0(dst []float32, src []byte) error {
	if err := checkDequantize("q5_0", BlockSizeQ5_0, BlockBytesQ5_0, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ5_0; i++ {
		b := src[i*BlockBytesQ5_0 : (i+1)*BlockBytesQ5_0]
		d := fp16to32(le16(b))
		qh := binary.LittleEndian.Uint32(b[2:])
		y := dst[i*BlockSizeQ5_0 : (i+1)*BlockSizeQ5_0]
		for j := 0; j < 16; j++ {
			q0 := int(b[6+j]&15) | int(qh>>j&1)<<4
			q1 := int(b[6+j]>>4) | int(qh>>(j+16)&1)<<4
			y[j] = float32(q0-16) * d
			y[j+16] = float32(q1-16) * d
		}
	}
	return nil
}

// DotQ5_0 is the dot product of a packed q5_0 row with x.
func DotQ5_0(src []byte, x []float32) float32 {
	checkDot("q5_0", BlockSizeQ5_0, BlockBytesQ5_0, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ5_0; i++ {
		b := src[i*BlockBytesQ5_0 : (i+1)*BlockBytesQ5_0 : (i+1)*BlockBytesQ5_0]
		qh := binary.LittleEndian.Uint32(b[2:])
		q := b[6:22:22]
		xs := x[i*BlockSizeQ5_0 : (i+1)*BlockSizeQ5_0 : (i+1)*BlockSizeQ5_0]
		lo, hi := xs[:16:16], xs[16:32:32]
		var s0, s1 float32
		for j := 0; j < 16; j++ {
			q0 := int(q[j]&15) | int(qh>>j&1)<<4
			q1 := int(q[j]>>4) | int(qh>>(j+16)&1)<<4
			s0 += float32(q0-16) * lo[j]
			s1 += float32(q1-16) * hi[j]
		}
		sum += fp16to32(le16(b)) * (s0 + s1)
	}
	return sum
}
