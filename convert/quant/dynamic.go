package quant

import (
	"math"
	"slices"
)

// DynamicMap returns bitsandbytes' signed 8-bit dynamic quantization map,
// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted
// ascending: for i in 0..6, the midpoints of torch.linspace(0.1, 1, 2^i+1)
// scaled by ±10^(i-6) (float32 products), plus 0 and 1.
//
// torch.linspace is reproduced with its scalar CPU rule (start+step*k below
// the halfway index, end-step*(steps-1-k) above it); torch's vectorised path
// for long ranges may differ from it by an ulp in the i = 5, 6 entries.
func DynamicMap() [256]float32 {
	data := make([]float32, 0, 256)
	for i := 0; i < 7; i++ {
		b := linspace32(0.1, 1, 1<<i+1)
		scale := float32(math.Pow(10, float64(i-6)))
		for k := 0; k+1 < len(b); k++ {
			mean := (b[k] + b[k+1]) / 2
			data = append(data, scale*mean, -scale*mean)
		}
	}
	data = append(data, 0, 1)
	slices.Sort(data)
	var out [256]float32
	copy(out[:], data)
	return out
}

// linspace32 follows torch.linspace for float32 on the CPU (scalar loop).
func linspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	step := (end - start) / float32(steps-1)
	half := steps / 2
	for k := range out {
		if k < half {
			out[k] = start + float32(step*float32(k))
		} else {
			out[k] = end - float32(step*float32(steps-k-1))
		}
	}
	return out
}

// quantizeDynamic is bitsandbytes' dQuantize<STOCHASTIC=0>: a 7-step binary
// search over the sorted 256-entry code starting at pivot 127, then a choice
// between the final pivot and its neighbour by the midpoint (ties stay on
// the pivot).
func quantizeDynamic(code *[256]float32, x float32) uint8 {
	pivot, upperPivot, lowerPivot := 127, 255, 0
	lower, upper := float32(-1), float32(1)
	val := code[pivot]
	for i := 64; i > 0; i >>= 1 {
		if x > val {
			lowerPivot, lower = pivot, val
			pivot += i
		} else {
			upperPivot, upper = pivot, val
			pivot -= i
		}
		val = code[pivot]
	}
	if upperPivot == 255 {
		upper = code[upperPivot]
	}
	if lowerPivot == 0 {
		lower = code[lowerPivot]
	}
	if x > val {
		if x > (upper+val)*0.5 {
			return uint8(upperPivot)
		}
		return uint8(pivot)
	}
	if x < (lower+val)*0.5 {
		return uint8(lowerPivot)
	}
	return uint8(pivot)
}

// quantizeBlockwise8 is bitsandbytes' quantize_blockwise (General8bit,
// non-stochastic): per block absmax, x*(1/absmax) coded with the map.
func quantizeBlockwise8(code *[256]float32, v []float32, bs int) (codes []uint8, absmax []float32) {
	nb := (len(v) + bs - 1) / bs
	codes = make([]uint8, len(v))
	absmax = make([]float32, nb)
	for b := 0; b < nb; b++ {
		blk := v[b*bs : min(len(v), (b+1)*bs)]
		var m float32
		for _, x := range blk {
			m = max(m, absf(x))
		}
		absmax[b] = m
		inv := float32(1) / m // +Inf for an all-zero block, as in the kernel
		for j, x := range blk {
			codes[b*bs+j] = quantizeDynamic(code, x*inv)
		}
	}
	return codes, absmax
}
