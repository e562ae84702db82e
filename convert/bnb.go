package convert

import "qllama/convert/quant"

// nestAbsmax is the double quantization of quant.QuantizeBnb4 with
// CompressStatistics (bitsandbytes quantize_4bit(compress_statistics=True)),
// applied to the absmax of the whole tensor after the blocks were coded in
// parallel chunks: the absmax minus their mean (float64 sum, float32 mean),
// coded with quantize_blockwise(blocksize=256) on the signed dynamic map.
// quant keeps this step unexported; tests check that the result is
// identical to quant.QuantizeBnb4's.
func nestAbsmax(absmax []float32) *quant.NestedAbsmax {
	nb := len(absmax)
	var sum float64
	for _, a := range absmax {
		sum += float64(a)
	}
	offset := float32(sum / float64(nb))
	code := quant.DynamicMap()
	const bs = quant.NestedBlockSize
	n := &quant.NestedAbsmax{Map: code, Codes: make([]uint8, nb), Absmax: make([]float32, (nb+bs-1)/bs), Offset: offset}
	for b := range n.Absmax {
		lo, hi := b*bs, min(nb, (b+1)*bs)
		var m float32
		for _, a := range absmax[lo:hi] {
			m = max(m, abs32(a-offset))
		}
		n.Absmax[b] = m
		inv := float32(1) / m
		for i, a := range absmax[lo:hi] {
			n.Codes[lo+i] = quantizeDynamic(&code, (a-offset)*inv)
		}
	}
	return n
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// quantizeDynamic is bitsandbytes' dQuantize<STOCHASTIC=0> over the sorted
// 256-entry map: a 7-step binary search from pivot 127, then the nearer of
// the final pivot and its neighbour by the midpoint (ties stay on the pivot).
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
