package quant

import (
	"fmt"
	"math"
)

// Q4_K layout (block_q4_K): a super-block of 256 weights in 8 sub-blocks of
// 32. fp16 d, fp16 dmin, 12 bytes of 6-bit sub-block scales and mins, then
// 128 bytes of 4-bit codes. Sub-block j has scale sc_j and min m_j (6 bits
// each, packed as get_scale_min_k4 reads them: for j < 4 sc_j = s[j]&63 and
// m_j = s[j+4]&63; for j >= 4 sc_j = s[j+4]&15 | (s[j-4]>>6)<<4 and
// m_j = s[j+4]>>4 | (s[j]>>6)<<4). Codes come in 4 chunks of 32 bytes: byte l
// of chunk c holds weight 64c+l in its low nibble and 64c+32+l in its high
// nibble. x = (d*sc_j)*q - dmin*m_j.
const (
	BlockSizeQ4K  = 256
	BlockBytesQ4K = 2 + 2 + 12 + BlockSizeQ4K/2
)

func traitsQ4K() Traits {
	return Traits{
		Name: "q4_k", GGUF: GGUFQ4_K, BlockSize: BlockSizeQ4K, BlockBytes: BlockBytesQ4K,
		BitsPerWeight: 4.5,
		Quantize:      QuantizeQ4K, Dequantize: DequantizeQ4K, Validate: validateDM("q4_k", BlockBytesQ4K), Dot: DotQ4K,
	}
}

// nearestInt is ggml's nearest_int: float32(v + 1.5·2^23) leaves the nearest
// integer (ties to even) in the low mantissa bits. Like ggml it is only meant
// for |v| <= 4194303; beyond that it returns the same wrapped value ggml's
// bit trick does.
func nearestInt(v float32) int {
	s := v + 12582912
	return int(math.Float32bits(s)&0x007fffff) - 0x00400000
}

// finite32 reports whether v is neither NaN nor infinite.
func finite32(v float32) bool { return v-v == 0 }

// clampInt limits v to [lo, hi].
func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

// qkx2 is the scratch space of makeQKX2Quants for 32-weight sub-blocks.
type qkx2 struct {
	weights [32]float32
	aux     [32]uint8
}

// makeQKX2Quants is ggml's make_qkx2_quants(n, nmax=15, x, weights, L,
// &the_min, Laux, rmin=-1, rdelta=0.1, nstep=20, use_mad=false): codes in
// [0, 15] for x ≈ scale·L − theMin, searching 21 trial scales for the least
// weighted squared error with a least-squares fit of scale and min. Every
// operation rounds to float32 in ggml's order.
func makeQKX2Quants(x, w []float32, L, aux []uint8) (scale, theMin float32) {
	const (
		nmax   = 15
		rmin   = float32(-1)
		rdelta = float32(0.1)
		nstep  = 20
	)
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -lo
	}
	iscale := nmax / (hi - lo)
	scale = 1 / iscale
	var best float32
	for i := 0; i < n; i++ {
		l := clampInt(nearestInt(float32(iscale*float32(x[i]-lo))), 0, nmax)
		L[i] = uint8(l)
		diff := float32(float32(scale*float32(l))+lo) - x[i]
		best += float32(w[i] * float32(diff*diff))
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + nmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := 0; i < n; i++ {
			l := clampInt(nearestInt(float32(iscale*float32(x[i]-lo))), 0, nmax)
			aux[i] = uint8(l)
			wl := float32(w[i] * float32(l))
			sumL += wl
			sumL2 += float32(wl * float32(l))
			sumXL += float32(wl * x[i])
		}
		d := float32(sumW*sumL2) - float32(sumL*sumL)
		if !(d > 0) {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / d
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / d
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var cur float32
		for i := 0; i < n; i++ {
			diff := float32(float32(thisScale*float32(aux[i]))+thisMin) - x[i]
			cur += float32(w[i] * float32(diff*diff))
		}
		if cur < best {
			copy(L[:n], aux[:n])
			best, scale, lo = cur, thisScale, thisMin
		}
	}
	return scale, -lo
}

// scaleMinK4 is ggml's get_scale_min_k4: the 6-bit scale and min of
// sub-block j from the 12 packed bytes s.
func scaleMinK4(j int, s []byte) (sc, m uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0xf | (s[j-4]>>6)<<4, s[j+4]>>4 | (s[j]>>6)<<4
}

// QuantizeQ4K matches quantize_row_q4_K_ref: each sub-block gets a scale and
// min from makeQKX2Quants (weights av_x + |x|, av_x the sub-block's RMS);
// they are coded in 6 bits against d = max scale/63 and dmin = max min/63;
// the codes are then recomputed as nearest_int((x + dmin·m)/(d·sc)) clamped
// to [0, 15], except in sub-blocks whose coded scale is 0, which keep the
// search's codes.
func QuantizeQ4K(dst []byte, src []float32) error {
	const name = "q4_k"
	if err := checkQuantize(name, BlockSizeQ4K, BlockBytesQ4K, dst, src); err != nil {
		return err
	}
	var (
		L              [BlockSizeQ4K]uint8
		scales, mins   [8]float32
		scratch        qkx2
		sumX2, avX, mn float32
	)
	for i := 0; i < len(src)/BlockSizeQ4K; i++ {
		x := src[i*BlockSizeQ4K : (i+1)*BlockSizeQ4K]
		y := dst[i*BlockBytesQ4K : (i+1)*BlockBytesQ4K]
		var maxScale, maxMin float32
		for j := 0; j < 8; j++ {
			xs := x[32*j : 32*j+32]
			sumX2 = 0
			for _, v := range xs {
				sumX2 += float32(v * v)
			}
			avX = float32(math.Sqrt(float64(sumX2 / 32))) // sqrtf: double rounding is exact for sqrt
			for l, v := range xs {
				scratch.weights[l] = avX + absf(v)
			}
			scales[j], mn = makeQKX2Quants(xs, scratch.weights[:], L[32*j:32*j+32], scratch.aux[:])
			if !finite32(scales[j]) || !finite32(mn) {
				return fmt.Errorf("quant: %s: block %d sub-block %d: values too large (scale %v, min %v): %w", name, i, j, scales[j], mn, ErrOverflow)
			}
			mins[j] = mn
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mn > maxMin {
				maxMin = mn
			}
		}
		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		s := y[4:16]
		clear(s)
		for j := 0; j < 8; j++ {
			ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
			lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
			if j < 4 {
				s[j] = ls
				s[j+4] = lm
			} else {
				s[j+4] = ls&0xf | (lm&0xf)<<4
				s[j-4] |= (ls >> 4) << 6
				s[j] |= (lm >> 4) << 6
			}
		}
		hd, err := fp16(maxScale / 63)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d scale d: %w", name, i, err)
		}
		hm, err := fp16(maxMin / 63)
		if err != nil {
			return fmt.Errorf("quant: %s: block %d min dmin: %w", name, i, err)
		}
		put16(y, hd)
		put16(y[2:], hm)
		d, dmin := fp16to32(hd), fp16to32(hm)
		for j := 0; j < 8; j++ {
			sc, m := scaleMinK4(j, s)
			dj := d * float32(sc)
			if dj == 0 {
				continue
			}
			dm := dmin * float32(m)
			for l := 32 * j; l < 32*j+32; l++ {
				L[l] = uint8(clampInt(nearestInt((x[l]+dm)/dj), 0, 15))
			}
		}
		q := y[16:]
		for c := 0; c < 4; c++ {
			for l := 0; l < 32; l++ {
				q[32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
			}
		}
	}
	return nil
}

// DequantizeQ4K matches dequantize_row_q4_K.
func DequantizeQ4K(dst []float32, src []byte) error {
	if err := checkDequantize("q4_k", BlockSizeQ4K, BlockBytesQ4K, dst, src); err != nil {
		return err
	}
	for i := 0; i < len(src)/BlockBytesQ4K; i++ {
		b := src[i*BlockBytesQ4K : (i+1)*BlockBytesQ4K]
		d, dmin := fp16to32(le16(b)), fp16to32(le16(b[2:]))
		s, q := b[4:16], b[16:]
		y := dst[i*BlockSizeQ4K : (i+1)*BlockSizeQ4K]
		for c := 0; c < 4; c++ {
			sc1, m1 := scaleMinK4(2*c, s)
			sc2, m2 := scaleMinK4(2*c+1, s)
			d1, mm1 := d*float32(sc1), dmin*float32(m1)
			d2, mm2 := d*float32(sc2), dmin*float32(m2)
			qc, yc := q[32*c:32*c+32], y[64*c:64*c+64]
			for l := 0; l < 32; l++ {
				yc[l] = float32(d1*float32(qc[l]&0xf)) - mm1
				yc[32+l] = float32(d2*float32(qc[l]>>4)) - mm2
			}
		}
	}
	return nil
}

// DotQ4K is the dot product of a packed q4_K row with x: per sub-block
// (d·sc)·Σq·x − (dmin·m)·Σx, accumulated in float32.
func DotQ4K(src []byte, x []float32) float32 {
	checkDot("q4_k", BlockSizeQ4K, BlockBytesQ4K, src, x)
	var sum float32
	for i := 0; i < len(src)/BlockBytesQ4K; i++ {
		b := src[i*BlockBytesQ4K : (i+1)*BlockBytesQ4K : (i+1)*BlockBytesQ4K]
		d, dmin := fp16to32(le16(b)), fp16to32(le16(b[2:]))
		s := b[4:16:16]
		xb := x[i*BlockSizeQ4K : (i+1)*BlockSizeQ4K : (i+1)*BlockSizeQ4K]
		for c := 0; c < 4; c++ {
			q := b[16+32*c : 48+32*c : 48+32*c]
			lo, hi := xb[64*c:64*c+32:64*c+32], xb[64*c+32:64*c+64:64*c+64]
			var s0, s1, sx0, sx1 float32
			for l := 0; l < 32; l++ {
				s0 += float32(q[l]&0xf) * lo[l]
				s1 += float32(q[l]>>4) * hi[l]
				sx0 += lo[l]
				sx1 += hi[l]
			}
			sc1, m1 := scaleMinK4(2*c, s)
			sc2, m2 := scaleMinK4(2*c+1, s)
			sum += d*(float32(sc1)*s0+float32(sc2)*s1) - dmin*(float32(m1)*sx0+float32(m2)*sx1)
		}
	}
	return sum
}
