package quant

import "fmt"

// Q6_K layout (block_q6_K): a super-block of 256 weights in 16 groups of 16.
// ql[128] (low 4 bits of the codes), qh[64] (high 2 bits), int8 scales[16],
// then fp16 d. For half h (weights 128h..128h+127) and l in 0..31, with
// L = ql[64h:], H = qh[32h:]:
//
//	weight 128h+l    = L[l]&15    | (H[l]>>0&3)<<4
//	weight 128h+l+32 = L[l+32]&15 | (H[l]>>2&3)<<4
//	weight 128h+l+64 = L[l]>>4    | (H[l]>>4&3)<<4
//	weight 128h+l+96 = L[l+32]>>4 | (H[l]>>6&3)<<4
//
// and x = (d*scales[k/16])*(q-32) for weight k of the super-block.
const (
	BlockSizeQ6K  = 256
	BlockBytesQ6K = BlockSizeQ6K/2 + BlockSizeQ6K/4 + BlockSizeQ6K/16 + 2
)

// offQ6KScales and offQ6KD locate scales and d inside a q6_K block.
const (
	offQ6KQh     = BlockSizeQ6K / 2
	offQ6KScales = offQ6KQh + BlockSizeQ6K/4
	offQ6KD      = offQ6KScales + BlockSizeQ6K/16
)

func traitsQ6K() Traits {
	return Traits{
		Name: "q6_k", GGUF: GGUFQ6_K, BlockSize: BlockSizeQ6K, BlockBytes: BlockBytesQ6K,
		BitsPerWeight: 6.5625,
		Quantize:      QuantizeQ6K, Dequantize: DequantizeQ6K, Validate: validateQ6K, Dot: DotQ6K,
	}
}

// makeQXQuants is ggml's make_qx_quants(n, nmax=32, x, L, rmse_type=1,
// qw=NULL): signed codes in [-32, 31] (stored +32) for x ≈ scale·l with
// weights x², trying 19 scales -(32 + 0.1·is)/max (is = -9..9) and keeping
// the one with the largest (Σw·x·l)²/Σw·l². A group below GROUP_MAX_EPS gets
// codes 0 (not 32) and scale 0.
func makeQXQuants(x []float32, L []int8) float32 {
	const nmax = 32
	var mx, amax float32
	for _, v := range x {
		if ax := absf(v); ax > amax {
			amax, mx = ax, v
		}
	}
	if amax < groupMaxEps {
		for i := range L[:len(x)] {
			L[i] = 0
		}
		return 0
	}
	sums := func(iscale float32) (sumlx, suml2 float32) {
		for _, v := range x {
			l := float32(clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1))
			w := float32(v * v)
			sumlx += float32(float32(w*v) * l)
			suml2 += float32(float32(w*l) * l)
		}
		return sumlx, suml2
	}
	setCodes := func(iscale float32) {
		for i, v := range x {
			L[i] = int8(nmax + clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1))
		}
	}
	iscale := -nmax / mx
	setCodes(iscale)
	sumlx, suml2 := sums(iscale)
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(nmax + float32(float32(0.1)*float32(is))) / mx
		sumlx, suml2 = sums(iscale)
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			setCodes(iscale)
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// QuantizeQ6K matches quantize_row_q6_K_ref: each group of 16 gets a scale
// from makeQXQuants; d = −(scale of largest magnitude)/128, the group scales
// are coded as min(127, nearest_int(scale/d)) in int8, and the codes are
// recomputed as nearest_int(x/(d·sc)) clamped to [-32, 31], except in groups
// whose coded scale is 0 (they keep the search's codes). A super-block whose
// scales are all below GROUP_MAX_EPS is stored as zeros.
func QuantizeQ6K(dst []byte, src []float32) error {
	const name = "q6_k"
	if err := checkQuantize(name, BlockSizeQ6K, BlockBytesQ6K, dst, src); err != nil {
		return err
	}
	var (
		L      [BlockSizeQ6K]int8
		scales [16]float32
	)
	for i := 0; i < len(src)/BlockSizeQ6K; i++ {
		x := src[i*BlockSizeQ6K : (i+1)*BlockSizeQ6K]
		y := dst[i*BlockBytesQ6K : (i+1)*BlockBytesQ6K]
		var maxScale, maxAbs float32
		for g := 0; g < 16; g++ {
			scales[g] = makeQXQuants(x[16*g:16*g+16], L[16*g:16*g+16])
			if !finite32(scales[g]) {
				return fmt.Errorf("quant: %s: block %d group %d: values too large (scale %v): %w", name, i, g, scales[g], ErrOverflow)
			}
			if a := absf(scales[g]); a > maxAbs {
				maxAbs, maxScale = a, scales[g]
			}
		}
		if maxAbs < groupMaxEps {
			clear(y)
			continue
		}
		iscale := -128 / maxScale
		hd, err := fp16(1 / iscale)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale d: %w", name, i, err)
		}
		put16(y[offQ6KD:], hd)
		sc := y[offQ6KScales:offQ6KD]
		for g := 0; g < 16; g++ {
			sc[g] = byte(int8(min(127, nearestInt(float32(iscale*scales[g])))))
		}
		d := fp16to32(hd)
		for g := 0; g < 16; g++ {
			dg := d * float32(int8(sc[g]))
			if dg == 0 {
				continue
			}
			for k := 16 * g; k < 16*g+16; k++ {
				L[k] = int8(32 + clampInt(nearestInt(x[k]/dg), -32, 31))
			}
		}
		ql, qh := y[:offQ6KQh], y[offQ6KQh:offQ6KScales]
		for h := 0; h < 2; h++ {
			Lh, ql, qh := L[128*h:], ql[64*h:], qh[32*h:]
			for l := 0; l < 32; l++ {
				q1, q2, q3, q4 := uint8(Lh[l]), uint8(Lh[l+32]), uint8(Lh[l+64]), uint8(Lh[l+96])
				ql[l] = q1&0xf | (q3&0xf)<<4
				ql[l+32] = q2&0xf | (q4&0xf)<<4
				qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
			}
		}
	}
	return nil
}

// DequantizeQ6K matches dequantize_row_q6_K: x = (d·sc)·(q−32).
func DequantizeQ6K(dst []float32, src []byte) error {
	if err := checkDequantize("q6_k", BlockSizeQ6K, BlockBytesQ6K, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ6K; i++ {
		b := src[i*BlockBytesQ6K : (i+1)*BlockBytesQ6K]
		d := fp16to32(le16(b[offQ6KD:]))
		y := dst[i*BlockSizeQ6K : (i+1)*BlockSizeQ6K]
		for h := 0; h < 2; h++ {
			ql, qh, sc, yh := b[64*h:], b[offQ6KQh+32*h:], b[offQ6KScales+8*h:], y[128*h:]
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int8(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int8(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int8(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int8(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				yh[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				yh[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				yh[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				yh[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
	return nil
}

// DotQ6K is the dot product of a packed q6_K row with x: per group of 16,
// (d·sc)·Σ(q−32)·x, accumulated in float32.
func DotQ6K(src []byte, x []float32) float32 {
	checkDot("q6_k", BlockSizeQ6K, BlockBytesQ6K, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ6K; i++ {
		b := src[i*BlockBytesQ6K : (i+1)*BlockBytesQ6K : (i+1)*BlockBytesQ6K]
		d := fp16to32(le16(b[offQ6KD:]))
		xb := x[i*BlockSizeQ6K : (i+1)*BlockSizeQ6K : (i+1)*BlockSizeQ6K]
		for h := 0; h < 2; h++ {
			ql, qh := b[64*h:64*h+64:64*h+64], b[offQ6KQh+32*h:offQ6KQh+32*h+32:offQ6KQh+32*h+32]
			sc := b[offQ6KScales+8*h : offQ6KScales+8*h+8 : offQ6KScales+8*h+8]
			xh := xb[128*h : 128*h+128 : 128*h+128]
			for half := 0; half < 2; half++ { // l in [16·half, 16·half+16): groups half, half+2, half+4, half+6
				var s [4]float32
				for l := 16 * half; l < 16*half+16; l++ {
					s[0] += float32(int8(ql[l]&0xf|(qh[l]&3)<<4)-32) * xh[l]
					s[1] += float32(int8(ql[l+32]&0xf|(qh[l]>>2&3)<<4)-32) * xh[l+32]
					s[2] += float32(int8(ql[l]>>4|(qh[l]>>4&3)<<4)-32) * xh[l+64]
					s[3] += float32(int8(ql[l+32]>>4|(qh[l]>>6&3)<<4)-32) * xh[l+96]
				}
				for k := 0; k < 4; k++ {
					sum += d * float32(int8(sc[half+2*k])) * s[k]
				}
			}
		}
	}
	return sum
}

// validateQ6K checks each block's fp16 d (the last two bytes), as
// ggml_validate_row_data does for q6_K.
func validateQ6K(src []byte) error {
	return validateBlocks("q6_k", BlockBytesQ6K, src, func(b []byte) error { return validF16(le16(b[offQ6KD:]), "scale d") })
}
