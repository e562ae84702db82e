package quant

import "fmt"

// IQ4_NL layout (block_iq4_nl): fp16 d, then 16 bytes; byte j holds the
// codebook index of element j in its low nibble and of element j+16 in its
// high nibble; x = d*kvaluesIQ4NL[index].
const (
	BlockSizeIQ4NL  = 32
	BlockBytesIQ4NL = 2 + BlockSizeIQ4NL/2
)

// kvaluesIQ4NL is ggml's kvalues_iq4nl non-linear codebook.
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// groupMaxEps is ggml's GROUP_MAX_EPS: blocks whose amax is below it are zero.
const groupMaxEps = 1e-15

func traitsIQ4NL() Traits {
	return Traits{
		Name: "iq4_nl", GGUF: GGUFIQ4_NL, BlockSize: BlockSizeIQ4NL, BlockBytes: BlockBytesIQ4NL,
		BitsPerWeight: 4.5,
		Quantize:      QuantizeIQ4NL, Dequantize: DequantizeIQ4NL, Validate: validateDOnly("iq4_nl", BlockBytesIQ4NL), Dot: DotIQ4NL,
	}
}

// bestIndexIQ4NL is ggml's best_index_int8 on the iq4_nl codebook: the
// nearest entry, ties going to the larger one.
func bestIndexIQ4NL(x float32) int {
	v := &kvaluesIQ4NL
	if x <= float32(v[0]) {
		return 0
	}
	if x >= float32(v[15]) {
		return 15
	}
	lo, hi := 0, 15
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if x < float32(v[mid]) {
			hi = mid
		} else {
			lo = mid
		}
	}
	if x-float32(v[hi-1]) < float32(v[hi])-x {
		return hi - 1
	}
	return hi
}

// QuantizeIQ4NL matches quantize_row_iq4_nl_ref, i.e. quantize_row_iq4_nl_impl
// with no importance weights and ntry = -1, so no scale search runs: indices
// are nearest codebook entries of x*(-127/max) and d is the weighted least
// squares scale sum(w*q*x)/sum(w*q*q) with w = x*x, accumulated in float32 in
// element order. A block with amax < 1e-15 gets d = 0 and, as in ggml, keeps
// the indices of the previous block of the row (ggml's L buffer is reused); for
// the first block of a row, where ggml's buffer is uninitialised, indices are 0.
func QuantizeIQ4NL(dst []byte, src []float32) error {
	const name = "iq4_nl"
	if err := checkQuantize(name, BlockSizeIQ4NL, BlockBytesIQ4NL, dst, src); err != nil {
		return err
	}
	var l [BlockSizeIQ4NL]uint8
	for i := 0; i < len(src)/BlockSizeIQ4NL; i++ {
		x := src[i*BlockSizeIQ4NL : (i+1)*BlockSizeIQ4NL]
		y := dst[i*BlockBytesIQ4NL : (i+1)*BlockBytesIQ4NL]
		var amax, m float32
		for _, v := range x {
			if a := absf(v); a > amax {
				amax, m = a, v
			}
		}
		var d float32
		if amax >= groupMaxEps {
			id := 1 / (m / float32(kvaluesIQ4NL[0]))
			var sumqx, sumq2 float32
			for j, v := range x {
				k := bestIndexIQ4NL(float32(id * v))
				l[j] = uint8(k)
				q := float32(kvaluesIQ4NL[k])
				w := float32(v * v)
				sumqx = sumqx + float32(float32(w*q)*v)
				sumq2 = sumq2 + float32(float32(w*q)*q)
			}
			if sumq2 > 0 {
				d = sumqx / sumq2
			}
		}
		h, err := fp16(d)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale: %w", name, i, err)
		}
		put16(y, h)
		for j := 0; j < 16; j++ {
			y[2+j] = l[j] | l[j+16]<<4
		}
	}
	return nil
}

// DequantizeIQ4NL matches dequantize_row_iq4_nl.
func DequantizeIQ4NL(dst []float32, src []byte) error {
	if err := checkDequantize("iq4_nl", BlockSizeIQ4NL, BlockBytesIQ4NL, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesIQ4NL; i++ {
		b := src[i*BlockBytesIQ4NL : (i+1)*BlockBytesIQ4NL]
		d := fp16to32(le16(b))
		y := dst[i*BlockSizeIQ4NL : (i+1)*BlockSizeIQ4NL]
		for j := 0; j < 16; j++ {
			y[j] = d * float32(kvaluesIQ4NL[b[2+j]&15])
			y[j+16] = d * float32(kvaluesIQ4NL[b[2+j]>>4])
		}
	}
	return nil
}

// DotIQ4NL is the dot product of a packed iq4_nl row with x.
func DotIQ4NL(src []byte, x []float32) float32 {
	checkDot("iq4_nl", BlockSizeIQ4NL, BlockBytesIQ4NL, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesIQ4NL; i++ {
		b := src[i*BlockBytesIQ4NL : (i+1)*BlockBytesIQ4NL : (i+1)*BlockBytesIQ4NL]
		q := b[2:18:18]
		xs := x[i*BlockSizeIQ4NL : (i+1)*BlockSizeIQ4NL : (i+1)*BlockSizeIQ4NL]
		lo, hi := xs[:16:16], xs[16:32:32]
		var s0, s1 float32
		for j := 0; j < 16; j++ {
			s0 += float32(kvaluesIQ4NL[q[j]&15]) * lo[j]
			s1 += float32(kvaluesIQ4NL[q[j]>>4]) * hi[j]
		}
		sum += fp16to32(le16(b)) * (s0 + s1)
	}
	return sum
}
