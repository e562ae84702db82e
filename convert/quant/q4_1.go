package quant

import "fmt"

// Q4_1 layout (block_q4_1): fp16 d, fp16 m, then 16 bytes of nibbles as in
// Q4_0 (element j low, j+16 high); x = d*q + m.
const (
	BlockSizeQ4_1  = 32
	BlockBytesQ4_1 = 4 + BlockSizeQ4_1/2
)

func traitsQ4_1() Traits {
	return Traits{
		Name: "q4_1", GGUF: GGUFQ4_1, BlockSize: BlockSizeQ4_1, BlockBytes: BlockBytesQ4_1,
		BitsPerWeight: 5,
		Quantize:      QuantizeQ4_1, Dequantize: DequantizeQ4_1, Validate: validateDM("q4_1", BlockBytesQ4_1), Dot: DotQ4_1,
	}
}

// QuantizeQ4_1 matches quantize_row_q4_1_ref: d = (max-min)/15, m = min,
// q = min(15, trunc((x-min)*(1/d) + 0.5)).
func QuantizeQ4_1(dst []byte, src []float32) error {
	const name = "q4_1"
	if err := checkQuantize(name, BlockSizeQ4_1, BlockBytesQ4_1, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockSizeQ4_1; i++ {
		x := src[i*BlockSizeQ4_1 : (i+1)*BlockSizeQ4_1]
		y := dst[i*BlockBytesQ4_1 : (i+1)*BlockBytesQ4_1]
		lo, hi := minMax(x)
		d := (hi - lo) / 15
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
		for j := 0; j < 16; j++ {
			q0 := min(15, int(float32((x[j]-lo)*id)+0.5))
			q1 := min(15, int(float32((x[j+16]-lo)*id)+0.5))
			y[4+j] = byte(q0) | byte(q1)<<4
		}
	}
	return nil
}

// DequantizeQ4_1 matches dequantize_row_q4_1.
func DequantizeQ4_1(dst []float32, src []byte) error {
	if err := checkDequantize("q4_1", BlockSizeQ4_1, BlockBytesQ4_1, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ4_1; i++ {
		b := src[i*BlockBytesQ4_1 : (i+1)*BlockBytesQ4_1]
		d, m := fp16to32(le16(b)), fp16to32(le16(b[2:]))
		y := dst[i*BlockSizeQ4_1 : (i+1)*BlockSizeQ4_1]
		for j := 0; j < 16; j++ {
			y[j] = float32(float32(b[4+j]&15)*d) + m
			y[j+16] = float32(float32(b[4+j]>>4)*d) + m
		}
	}
	return nil
}

// DotQ4_1 is the dot product of a packed q4_1 row with x.
func DotQ4_1(src []byte, x []float32) float32 {
	checkDot("q4_1", BlockSizeQ4_1, BlockBytesQ4_1, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ4_1; i++ {
		b := src[i*BlockBytesQ4_1 : (i+1)*BlockBytesQ4_1 : (i+1)*BlockBytesQ4_1]
		q := b[4:20:20]
		xs := x[i*BlockSizeQ4_1 : (i+1)*BlockSizeQ4_1 : (i+1)*BlockSizeQ4_1]
		lo, hi := xs[:16:16], xs[16:32:32]
		var s0, s1, sx0, sx1 float32
		for j := 0; j < 16; j++ {
			s0 += float32(q[j]&15) * lo[j]
			s1 += float32(q[j]>>4) * hi[j]
			sx0 += lo[j]
			sx1 += hi[j]
		}
		sum += fp16to32(le16(b))*(s0+s1) + fp16to32(le16(b[2:]))*(sx0+sx1)
	}
	return sum
}
