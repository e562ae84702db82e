package convert

import (
	"math"
	"sync"

	"qllama/convert/quant"
)

// fourBitCoder is a fast, exact replacement for quant's bitsandbytes 4-bit
// decision trees (dQuantizeNF4 / dQuantizeFP4), which cost a branch
// misprediction per level on real weights. Both trees count how many sorted
// thresholds x (NF4) or |x| (FP4, plus a sign bit) exceeds, so a code is a
// count; the count is looked up by the top 12 bits of x's order-preserving
// integer key, then corrected by comparing with the (at most two)
// thresholds inside that key range.
//
// The thresholds are not restated here: they are found by bisection over
// float32 keys with quant.QuantizeBnb4 as the oracle, so the coder agrees
// with quant bit for bit by construction (and tests check it).
type fourBitCoder struct {
	bucket [1 << coderBits]coderBucket
	out    [16]uint8 // count -> code
	fp4    bool
}

// coderBits is the number of key bits indexing the buckets: enough that no
// bucket holds two thresholds (newFourBitCoder checks).
const coderBits = 12

// coderBucket is one key range: the thresholds below it, and the one inside
// it (math.MaxUint32 when none).
type coderBucket struct {
	thr  uint32
	base uint8
}

// orderKey maps a finite float32 to a uint32 with the same order (-0 < +0).
func orderKey(x float32) uint32 {
	b := math.Float32bits(x)
	// Branchless: weights' signs are random, a branch would mispredict half
	// the time.
	return b ^ (uint32(int32(b)>>31) | 1<<31)
}

// code returns the 4-bit code of x = v/absmax (finite).
func (c *fourBitCoder) code(x float32) uint8 {
	var sign uint8
	if c.fp4 {
		bits := math.Float32bits(x)
		if x != 0 { // -0 is not below 0: sign bit 0, as in dQuantizeFP4
			sign = uint8(bits>>31) << 3
		}
		x = math.Float32frombits(bits &^ (1 << 31))
	}
	k := orderKey(x)
	b := &c.bucket[k>>(32-coderBits)]
	cnt := b.base
	if k > b.thr {
		cnt++
	}
	return c.out[cnt&15] | sign
}

// nf4 is code for a coder without a sign bit, small enough to inline.
func (c *fourBitCoder) nf4(x float32) uint8 {
	k := orderKey(x)
	b := &c.bucket[k>>(32-coderBits)]
	cnt := b.base
	if k > b.thr {
		cnt++
	}
	return cnt & 15
}

// oracleCode is quant's code for x in [-1, 1] (absmax 1).
func oracleCode(t quant.FourBit, x float32) uint8 {
	w := make([]float32, 32)
	w[0], w[1] = x, 1
	q, err := quant.QuantizeBnb4(w, 1, 32, quant.Bnb4Options{Type: t, BlockSize: 32})
	if err != nil {
		panic("convert: 4-bit oracle: " + err.Error())
	}
	return q.Packed[0] >> 4
}

// newFourBitCoder builds the coder for t from quant's encoder.
func newFourBitCoder(t quant.FourBit) *fourBitCoder {
	c := &fourBitCoder{fp4: t == quant.FP4}
	lo := float32(-1)
	if c.fp4 {
		lo = 0
	}
	// Walk the codes in value order by bisection: each threshold is the
	// largest key whose code still has the current rank.
	k := orderKey(lo)
	end := orderKey(1)
	cur := oracleCode(t, lo)
	var thresholds []uint32
	order := []uint8{cur}
	for {
		if oracleCode(t, fromKey(end)) == cur {
			break
		}
		a, b := k, end // code(a) == cur, code(b) != cur
		for b-a > 1 {
			m := a + (b-a)/2
			if oracleCode(t, fromKey(m)) == cur {
				a = m
			} else {
				b = m
			}
		}
		thresholds = append(thresholds, a) // x > threshold moves to the next code
		cur = oracleCode(t, fromKey(b))
		order = append(order, cur)
		k = b
	}
	copy(c.out[:], order)
	const shift = 32 - coderBits
	for b := range c.bucket {
		bk := &c.bucket[b]
		bk.thr = math.MaxUint32
		start, stop := uint32(b)<<shift, uint32(b)<<shift|(1<<shift-1)
		for _, th := range thresholds {
			switch {
			case th < start:
				bk.base++
			case th <= stop:
				if bk.thr != math.MaxUint32 {
					panic("convert: two 4-bit thresholds in one coder bucket")
				}
				bk.thr = th
			}
		}
	}
	return c
}

func fromKey(k uint32) float32 {
	if k>>31 != 0 {
		return math.Float32frombits(k &^ (1 << 31))
	}
	return math.Float32frombits(^k)
}

var fourBitCoders = sync.OnceValue(func() [2]*fourBitCoder {
	return [2]*fourBitCoder{quant.NF4: newFourBitCoder(quant.NF4), quant.FP4: newFourBitCoder(quant.FP4)}
})

// quantizeFourBitRows codes rows of w (cols a multiple of bs, bs even) as
// quant.QuantizeBnb4 does, into packed (cols/2 bytes per row, earlier
// element in the high nibble) and absmax (cols/bs per row); when deq is not
// nil it also receives the dequantized values codebook[code]*absmax.
func quantizeFourBitRows(c *fourBitCoder, lut *[16]float32, w []float32, bs int, packed []byte, absmax []float32, deq []float32) {
	for b := 0; b < len(w)/bs; b++ {
		blk := w[b*bs : (b+1)*bs]
		// |v| compares as its bits (inputs are finite); integer max is branchless.
		var mb uint32
		for _, v := range blk {
			mb = max(mb, math.Float32bits(v)&^(1<<31))
		}
		m := math.Float32frombits(mb)
		absmax[b] = m
		dst := packed[b*bs/2 : (b+1)*bs/2]
		if m == 0 { // 0*inf is NaN, which both trees code as 0
			clear(dst)
			if deq != nil {
				for j := range blk {
					deq[b*bs+j] = lut[0] * m
				}
			}
			continue
		}
		inv := float32(1) / m
		for j := 0; j < bs; j += 2 {
			var hi, lo uint8
			if c.fp4 {
				hi, lo = c.code(blk[j]*inv), c.code(blk[j+1]*inv)
			} else {
				hi, lo = c.nf4(blk[j]*inv), c.nf4(blk[j+1]*inv)
			}
			dst[j/2] = hi<<4 | lo
			if deq != nil {
				deq[b*bs+j] = lut[hi] * m
				deq[b*bs+j+1] = lut[lo] * m
			}
		}
	}
}
