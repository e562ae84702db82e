package quant

// Independent references for the ggml row formats, written from the published
// definitions (ggml-common.h block layouts; quantize_row_*_ref /
// dequantize_row_* semantics) in float64 arithmetic, rounding to float32
// exactly where ggml stores a float. They share no code with the package.
//
// The package encoders were also verified byte for byte against ggml's own C
// reference (ggml-org/ggml commit d99724f2b141fed9e1a9f402213506c081433465,
// src/ggml-quants.c built with gcc -O2 -ffp-contract=off) on 4000 seeded rows
// of 256 weights per format (gaussian, small, integer-valued/ties, wide dynamic
// range, uniform, all-positive rows, with zero blocks, outliers and 1e-17
// blocks): all identical, except that for iq4_nl ggml leaves the indices of a
// row's leading all-zero blocks uninitialised (221 rows; d = 0 there, so the
// decoded values agree).

import (
	"encoding/binary"
	"math"
)

// f32 rounds a float64 to float32 precision.
func f32(v float64) float64 { return float64(float32(v)) }

// refFP16 rounds v to IEEE binary16, nearest with ties to even, from the
// definition (10 stored mantissa bits, exponent bias 15, subnormals below
// 2^-14); ok is false when the result would be infinite.
func refFP16(v float64) (h uint16, ok bool) {
	var sign uint16
	if math.Signbit(v) {
		sign, v = 0x8000, -v
	}
	if v == 0 {
		return sign, true
	}
	e := math.Floor(math.Log2(v))
	if math.Pow(2, e) > v { // guard Log2 rounding
		e--
	} else if math.Pow(2, e+1) <= v {
		e++
	}
	if e < -14 {
		e = -14 // subnormal spacing 2^-24
	}
	ulp := math.Pow(2, e-10)
	m := math.RoundToEven(v / ulp) // exact: v/ulp is a scaled float64
	r := m * ulp
	if r >= 65520 || r > 65504 {
		return 0, false
	}
	if r < math.Pow(2, -14) { // subnormal
		return sign | uint16(m), true
	}
	ex := math.Floor(math.Log2(r))
	if math.Pow(2, ex) > r {
		ex--
	}
	mant := r/math.Pow(2, ex) - 1
	return sign | uint16(ex+15)<<10 | uint16(math.Round(mant*1024)), true
}

// refFP16Value decodes binary16 bits from the definition.
func refFP16Value(h uint16) float64 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e := int(h >> 10 & 31)
	m := float64(h & 1023)
	if e == 0 {
		return s * m * math.Pow(2, -24)
	}
	return s * (1 + m/1024) * math.Pow(2, float64(e-15))
}

// refBF16 rounds to bfloat16 (8 stored mantissa bits), ties to even.
func refBF16(v float64) uint16 {
	bits := math.Float32bits(float32(v))
	keep, rest := bits>>16, bits&0xffff
	if rest > 0x8000 || (rest == 0x8000 && keep&1 == 1) {
		keep++
	}
	return uint16(keep)
}

// refAbsMaxSigned returns the first value of largest magnitude.
func refAbsMaxSigned(x []float32) float64 {
	best, val := 0.0, 0.0
	for _, v := range x {
		if math.Abs(float64(v)) > best {
			best, val = math.Abs(float64(v)), float64(v)
		}
	}
	return val
}

func refInv(d float64) float64 {
	if d == 0 {
		return 0
	}
	return f32(1 / d)
}

func refPutF16(b []byte, v float64) bool {
	h, ok := refFP16(v)
	binary.LittleEndian.PutUint16(b, h)
	return ok
}

// refEncode maps a format name to an independent encoder of whole blocks.
var refEncode = map[string]func(x []float32) []byte{
	"f32": func(x []float32) []byte {
		out := make([]byte, 4*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out
	},
	"f16": func(x []float32) []byte {
		out := make([]byte, 2*len(x))
		for i, v := range x {
			refPutF16(out[2*i:], float64(v))
		}
		return out
	},
	"bf16": func(x []float32) []byte {
		out := make([]byte, 2*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint16(out[2*i:], refBF16(float64(v)))
		}
		return out
	},
	"q8_0": func(x []float32) []byte {
		var out []byte
		for b := 0; b < len(x); b += 32 {
			blk := make([]byte, 34)
			amax := 0.0
			for _, v := range x[b : b+32] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			d := f32(amax / 127)
			id := refInv(d)
			refPutF16(blk, d)
			for j, v := range x[b : b+32] {
				blk[2+j] = byte(int8(math.Round(f32(float64(v) * id)))) // roundf: halves away from 0
			}
			out = append(out, blk...)
		}
		return out
	},
	"q4_0": func(x []float32) []byte { return refSymNibbles(x, 8) },
	"q5_0": func(x []float32) []byte { return refSymNibbles(x, 16) },
	"q4_1": func(x []float32) []byte { return refAsymNibbles(x, 4) },
	"q5_1": func(x []float32) []byte { return refAsymNibbles(x, 5) },
	"iq4_nl": func(x []float32) []byte {
		var out []byte
		var idx [32]int
		for b := 0; b < len(x); b += 32 {
			xb := x[b : b+32]
			blk := make([]byte, 18)
			amax, mx := 0.0, 0.0
			for _, v := range xb {
				if math.Abs(float64(v)) > amax {
					amax, mx = math.Abs(float64(v)), float64(v)
				}
			}
			d := 0.0
			if amax >= 1e-15 {
				id := f32(1 / f32(mx/-127))
				sqx, sq2 := 0.0, 0.0
				for j, v := range xb {
					idx[j] = refNearestIQ4NL(f32(id * float64(v)))
					q := refIQ4NLValues[idx[j]]
					w := f32(float64(v) * float64(v))
					sqx = f32(sqx + f32(f32(w*q)*float64(v)))
					sq2 = f32(sq2 + f32(f32(w*q)*q))
				}
				if sq2 > 0 {
					d = f32(sqx / sq2)
				}
			} // else: indices stay those of the previous block (0 at row start)
			refPutF16(blk, d)
			for j := 0; j < 16; j++ {
				blk[2+j] = byte(idx[j] | idx[j+16]<<4)
			}
			out = append(out, blk...)
		}
		return out
	},
}

// refIQ4NLValues is the iq4_nl codebook as published in ggml-common.h.
var refIQ4NLValues = []float64{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// refNearestIQ4NL returns the nearest codebook index by linear scan, ties to
// the larger value (ggml's best_index_int8 rule).
func refNearestIQ4NL(v float64) int {
	best, bestErr := 0, math.Inf(1)
	for i, c := range refIQ4NLValues {
		if e := math.Abs(v - c); e <= bestErr {
			best, bestErr = i, e
		}
	}
	return best
}

// refSymNibbles encodes q4_0 (half = 8) or q5_0 (half = 16):
// d = max/-half, q = min(2*half-1, trunc(x/d + half + 0.5)).
func refSymNibbles(x []float32, half int) []byte {
	five := half == 16
	size := 18
	if five {
		size = 22
	}
	var out []byte
	for b := 0; b < len(x); b += 32 {
		blk := make([]byte, size)
		d := f32(refAbsMaxSigned(x[b:b+32]) / float64(-half))
		id := refInv(d)
		refPutF16(blk, d)
		qs := blk[2:]
		var qh uint32
		if five {
			qs = blk[6:]
		}
		for j := 0; j < 32; j++ {
			q := min(2*half-1, int(math.Trunc(f32(f32(float64(x[b+j])*id)+float64(half)+0.5))))
			if j < 16 {
				qs[j] |= byte(q & 15)
			} else {
				qs[j-16] |= byte(q&15) << 4
			}
			qh |= uint32(q>>4&1) << j
		}
		if five {
			binary.LittleEndian.PutUint32(blk[2:], qh)
		}
		out = append(out, blk...)
	}
	return out
}

// refAsymNibbles encodes q4_1 (bits 4) or q5_1 (bits 5): d = (max-min)/(2^bits-1),
// m = min, q = trunc((x-min)/d + 0.5), clamped to 15 for q4_1 only.
func refAsymNibbles(x []float32, bits int) []byte {
	five := bits == 5
	size := 20
	if five {
		size = 24
	}
	var out []byte
	for b := 0; b < len(x); b += 32 {
		blk := make([]byte, size)
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, v := range x[b : b+32] {
			lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
		}
		d := f32(f32(hi-lo) / float64(int(1)<<bits-1))
		id := refInv(d)
		refPutF16(blk, d)
		refPutF16(blk[2:], lo)
		qs := blk[4:]
		if five {
			qs = blk[8:]
		}
		var qh uint32
		for j := 0; j < 32; j++ {
			q := int(math.Trunc(f32(f32(f32(float64(x[b+j])-lo)*id) + 0.5)))
			if !five {
				q = min(15, q)
			}
			if j < 16 {
				qs[j] |= byte(q & 15)
			} else {
				qs[j-16] |= byte(q&15) << 4
			}
			qh |= uint32(q>>4&1) << j
		}
		if five {
			binary.LittleEndian.PutUint32(blk[4:], qh)
		}
		out = append(out, blk...)
	}
	return out
}

// refDecode maps a format name to an independent decoder: the value of each
// weight as float64 from the block definition, then rounded as ggml's float32
// expression (d*q, or d*q + m with the product rounded first).
var refDecode = map[string]func(b []byte) []float64{
	"f32": func(b []byte) []float64 {
		out := make([]float64, len(b)/4)
		for i := range out {
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
		return out
	},
	"f16": func(b []byte) []float64 {
		out := make([]float64, len(b)/2)
		for i := range out {
			out[i] = refFP16Value(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out
	},
	"bf16": func(b []byte) []float64 {
		out := make([]float64, len(b)/2)
		for i := range out {
			out[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16))
		}
		return out
	},
	"q8_0": func(b []byte) []float64 {
		var out []float64
		for ; len(b) >= 34; b = b[34:] {
			d := refFP16Value(binary.LittleEndian.Uint16(b))
			for j := 0; j < 32; j++ {
				out = append(out, f32(float64(int8(b[2+j]))*d))
			}
		}
		return out
	},
	"q4_0":   func(b []byte) []float64 { return refDecodeNibbles(b, 18, 2, false, false, -8, nil) },
	"q4_1":   func(b []byte) []float64 { return refDecodeNibbles(b, 20, 4, false, true, 0, nil) },
	"q5_0":   func(b []byte) []float64 { return refDecodeNibbles(b, 22, 6, true, false, -16, nil) },
	"q5_1":   func(b []byte) []float64 { return refDecodeNibbles(b, 24, 8, true, true, 0, nil) },
	"iq4_nl": func(b []byte) []float64 { return refDecodeNibbles(b, 18, 2, false, false, 0, refIQ4NLValues) },
	"q4_k":   refDecodeQ4K,
	"q6_k":   refDecodeQ6K,
}

// refDecodeQ4K decodes block_q4_K (ggml-common.h: fp16 d, fp16 dmin,
// scales[12], qs[128]) weight by weight. The 12 scale bytes hold eight 6-bit
// scales sc and mins m: sc0..3 and m0..3 are the low 6 bits of bytes 0..3
// and 4..7; bytes 8..11 carry the low 4 bits of sc4..7 (low nibble) and
// m4..7 (high nibble), whose top 2 bits are the top 2 bits of bytes 0..3
// (sc) and 4..7 (m). Weight k is nibble k%64 < 32 ? low : high of
// qs[32·(k/64) + k%32], in sub-block k/32; x = f32(f32(d·sc)·q) − f32(dmin·m).
func refDecodeQ4K(b []byte) []float64 {
	var out []float64
	for ; len(b) >= 144; b = b[144:] {
		d := refFP16Value(binary.LittleEndian.Uint16(b))
		dmin := refFP16Value(binary.LittleEndian.Uint16(b[2:]))
		s := b[4:16]
		var sc, m [8]int
		for j := 0; j < 4; j++ {
			sc[j], m[j] = int(s[j]&0x3f), int(s[4+j]&0x3f)
			sc[4+j] = int(s[8+j]&0x0f) + int(s[j]>>6)*16
			m[4+j] = int(s[8+j]>>4) + int(s[4+j]>>6)*16
		}
		for k := 0; k < 256; k++ {
			q := int(b[16+32*(k/64)+k%32])
			if k%64 >= 32 {
				q >>= 4
			}
			q &= 15
			j := k / 32
			out = append(out, f32(f32(f32(d*float64(sc[j]))*float64(q))-f32(dmin*float64(m[j]))))
		}
	}
	return out
}

// refQ6KDOff is the offset of d in block_q6_K (after ql[128], qh[64],
// scales[16]).
const refQ6KDOff = 128 + 64 + 16

// refDecodeQ6K decodes block_q6_K weight by weight: in half h = k/128, with
// r = k%128, quarter t = r/32 and l = r%32, the low 4 bits are nibble
// (t < 2 ? low : high) of ql[64h + 32·(t%2) + l], the high 2 bits are bits
// 2t, 2t+1 of qh[32h + l]; x = f32(f32(d·scales[k/16])·(q − 32)).
func refDecodeQ6K(b []byte) []float64 {
	var out []float64
	for ; len(b) >= 210; b = b[210:] {
		d := refFP16Value(binary.LittleEndian.Uint16(b[refQ6KDOff:]))
		for k := 0; k < 256; k++ {
			h, r := k/128, k%128
			t, l := r/32, r%32
			lo := int(b[64*h+32*(t%2)+l])
			if t >= 2 {
				lo >>= 4
			}
			hi := int(b[128+32*h+l]) >> (2 * t) & 3
			q := lo&15 + 16*hi
			sc := float64(int8(b[192+k/16]))
			out = append(out, f32(f32(d*sc)*float64(q-32)))
		}
	}
	return out
}

func refDecodeNibbles(b []byte, size, qsOff int, five, hasMin bool, offset int, book []float64) []float64 {
	var out []float64
	for ; len(b) >= size; b = b[size:] {
		d := refFP16Value(binary.LittleEndian.Uint16(b))
		m := 0.0
		if hasMin {
			m = refFP16Value(binary.LittleEndian.Uint16(b[2:]))
		}
		var qh uint32
		if five {
			qh = binary.LittleEndian.Uint32(b[qsOff-4:])
		}
		for j := 0; j < 32; j++ {
			nib := int(b[qsOff+j%16])
			if j >= 16 {
				nib >>= 4
			}
			q := nib&15 | int(qh>>j&1)<<4
			var v float64
			switch {
			case book != nil:
				v = f32(d * book[q])
			case hasMin:
				v = f32(f32(float64(q)*d) + m)
			default:
				v = f32(float64(q+offset) * d)
			}
			out = append(out, v)
		}
	}
	return out
}
