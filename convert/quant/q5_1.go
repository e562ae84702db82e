package quant

import (
	"encoding/binary"
	"fmt"
)

// Q5_1 layout (block_q5_1): fp16 d, fp16 m, 4 bytes qh (little-endian uint32;
// bit j is the 5th bit of element j), then 16 bytes of low nibbles (element j
// low, j+16 high); x = d*q + m.
const (
	BlockSizeQ5_1  = 32
	BlockBytesQ5_1 = 4 + 4 + BlockSizeQ5_1/2
)

func traitsQ5_1() Traits {
	return Traits{
		Name: "q5_1", GGUF: GGUFQ5_1, BlockSize: BlockSizeQ5_1, BlockBytes: BlockBytesQ5_1,
		BitsPerWeight: 6,
		Quantize:      QuantizeQ5_1, Dequantize: DequantizeQ5_1, Validate: validateDM("q5_1", BlockBytesQ5_1), Dot: DotQ5_1,
	}
}

// QuantizeQ5_1 matches quantize_row_q5_1_ref: d = (max-min)/31, m = min,
// q = trunc((x-min)*(1/d) + 0.5) (no clamp, as in ggml).
func QuantizeQ5_1(dst []byte, src []float32) error {
	const name = "q5_1"
	if err := checkQuantize(name, BlockSizeQ5_1, BlockBytesQ5_1, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockSizeQ5_1; i++ {
		x := src[i*BlockSizeQ5_1 : (i+1)*BlockSizeQ5_1]
		y := dst[i*BlockBytesQ5_1 : (i+1)*BlockBytesQ5_1]
		lo, hi := minMax(x)
		d := (hi - lo) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		hd, err := fp16(d)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale: %w", name, i, err)
		}
		hm, err := fp16(lo)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d min: %w", name, i, err)
		}
		put16(y, hd)
		put16(y[2:], hm)
		var qh uint32
		for j := 0; j < 16; j++ {
			q0 := uint8(int(float32((x[j]-lo)*id) + 0.5))
			q1 := uint8(int(float32((x[j+16]-lo)*id) + 0.5))
			y[8+j] = q0&15 | (q1&15)<<4
			qh |= uint32(q0>>4&1) << j
			qh |= uint32(q1>>4&1) << (j + 16)
		}
		binary.LittleEndian.PutUint32(y[4:], qh)
	}
	return nil
}

// DequantizeQ5_1 matches dequantize_row_q5_1.
func DequantizeQ5_1(dst []float32, src []byte) error {
	if err := checkDequantize("q5_1", BlockSizeQ5_1, BlockBytesQ5_1, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ5_1; i++ {
		b := src[i*BlockBytesQ5_1 : (i+1)*BlockBytesQ5_1]
		d, m := fp16to32(le16(b)), fp16to32(le16(b[2:]))
		qh := binary.LittleEndian.Uint32(b[4:])
		y := dst[i*BlockSizeQ5_1 : (i+1)*BlockSizeQ5_1]
		for j := 0; j < 16; j++ {
			q0 := int(b[8+j]&15) | int(qh>>j&1)<<4
			q1 := int(b[8+j]>>4) | int(qh>>(j+16)&1)<<4
			y[j] = float32(float32(q0)*d) + m
			y[j+16] = float32(float32(q1)*d) + m
		}
	}
	return nil
}

// DotQ5_1 is the dot product of a packed q5_1 row with x.
func DotQ5_1(src []byte, x []float32) float32 {
	checkDot("q5_1", BlockSizeQ5_1, BlockBytesQ5_1, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ5_1; i++ {
		b := src[i*BlockBytesQ5_1 : (i+1)*BlockBytesQ5_1 : (i+1)*BlockBytesQ5_1]
		qh := binary.LittleEndian.Uint32(b[4:])
		q := b[8:24:24]
		xs := x[i*BlockSizeQ5_1 : (i+1)*BlockSizeQ5_1 : (i+1)*BlockSizeQ5_1]
		lo, hi := xs[:16:16], xs[16:32:32]
		var s0, s1, sx float32
		for j := 0; j < 16; j++ {
			q0 := int(q[j]&15) | int(qh>>j&1)<<4
			q1 := int(q[j]>>4) | int(qh>>(j+16)&1)<<4
			s0 += float32(q0) * lo[j]
			s1 += float32(q1) * hi[j]
			sx += lo[j] + hi[j]
		}
		sum += fp16to32(le16(b))*(s0+s1) + fp16to32(le16(b[2:]))*sx
	}
	return sum
}
