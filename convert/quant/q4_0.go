package quant

import "fmt"

// Q4_0 layout (block_q4_0): fp16 d, then 16 bytes; byte j holds element j in
// its low nibble and element j+16 in its high nibble; x = d*(q-8).
const (
	BlockSizeQ4_0  = 32
	BlockBytesQ4_0 = 2 + BlockSizeQ4_0/2
)

func traitsQ4_0() Traits {
	return Traits{
		Name: "q4_0", GGUF: GGUFQ4_0, BlockSize: BlockSizeQ4_0, BlockBytes: BlockBytesQ4_0,
		BitsPerWeight: 4.5,
		Quantize:      QuantizeQ4_0, Dequantize: DequantizeQ4_0, Validate: validateDOnly("q4_0", BlockBytesQ4_0), Dot: DotQ4_0,
	}
}

// QuantizeQ4_0 matches quantize_row_q4_0_ref: d = max/-8 where max is the
// signed value of largest magnitude, q = min(15, trunc(x*(1/d) + 8.5)).
func QuantizeQ4_0(dst []byte, src []float32) error {
	const name = "q4_0"
	if err := checkQuantize(name, BlockSizeQ4_0, BlockBytesQ4_0, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockSizeQ4_0; i++ {
		x := src[i*BlockSizeQ4_0 : (i+1)*BlockSizeQ4_0]
		y := dst[i*BlockBytesQ4_0 : (i+1)*BlockBytesQ4_0]
		d := signedAbsMax(x) / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		h, err := fp16(d)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale: %w", name, i, err)
		}
		put16(y, h)
		for j := 0; j < 16; j++ {
			q0 := min(15, int(float32(x[j]*id)+8.5))
			q1 := min(15, int(float32(x[j+16]*id)+8.5))
			y[2+j] = byte(q0) | byte(q1)<<4
		}
	}
	return nil
}

// DequantizeQ4_0 matches dequantize_row_q4_0.
func DequantizeQ4_0(dst []float32, src []byte) error {
	if err := checkDequantize("q4_0", BlockSizeQ4_0, BlockBytesQ4_0, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ4_0; i++ {
		b := src[i*BlockBytesQ4_0 : (i+1)*BlockBytesQ4_0]
		d := fp16to32(le16(b))
		y := dst[i*BlockSizeQ4_0 : (i+1)*BlockSizeQ4_0]
		for j := 0; j < 16; j++ {
			y[j] = float32(int(b[2+j]&15)-8) * d
			y[j+16] = float32(int(b[2+j]>>4)-8) * d
		}
	}
	return nil
}

// DotQ4_0 is the dot product of a packed q4_0 row with x.
func DotQ4_0(src []byte, x []float32) float32 {
	checkDot("q4_0", BlockSizeQ4_0, BlockBytesQ4_0, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ4_0; i++ {
		b := src[i*BlockBytesQ4_0 : (i+1)*BlockBytesQ4_0 : (i+1)*BlockBytesQ4_0]
		q := b[2:18:18]
		xs := x[i*BlockSizeQ4_0 : (i+1)*BlockSizeQ4_0 : (i+1)*BlockSizeQ4_0]
		lo, hi := xs[:16:16], xs[16:32:32]
		var s0, s1, s2, s3 float32
		for j := 0; j < 16; j += 2 {
			s0 += float32(int(q[j]&15)-8) * lo[j]
			s1 += float32(int(q[j]>>4)-8) * hi[j]
			s2 += float32(int(q[j+1]&15)-8) * lo[j+1]
			s3 += float32(int(q[j+1]>>4)-8) * hi[j+1]
		}
		sum += fp16to32(le16(b)) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}
