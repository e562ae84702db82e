package quant

import "fmt"

// FourBit selects the bitsandbytes 4-bit codebook.
type FourBit int

const (
	// NF4 is bitsandbytes' 4-bit NormalFloat codebook.
	NF4 FourBit = iota
	// FP4 is bitsandbytes' 4-bit float (1 sign bit, 3 magnitude bits with
	// values {0, 0.0625, 8, 12, 4, 6, 2, 3}/12).
	FP4
)

// String returns "nf4" or "fp4".
func (k FourBit) String() string {
	switch k {
	case NF4:
		return "nf4"
	case FP4:
		return "fp4"
	}
	return fmt.Sprintf("FourBit(%d)", int(k))
}

// nf4Values is bitsandbytes' NF4 table (get_4bit_type("nf4") and
// nf4_dequantization_lut in csrc/kernels.cu), as float32.
var nf4Values = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// fp4Magnitudes is fp4_dequantization_lut: the value of the low three bits;
// bit 3 is the sign (dDequantizeFP4Tree).
var fp4Magnitudes = [8]float32{0, 0.005208333333, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25}

// fourBitValue decodes one 4-bit code to its codebook value.
func fourBitValue(k FourBit, c uint8) float32 {
	if k == NF4 {
		return nf4Values[c&15]
	}
	v := fp4Magnitudes[c&7]
	if c&8 != 0 {
		return -v
	}
	return v
}

// quantizeNF4 is dQuantizeNF4: a decision tree on the midpoints between
// consecutive NF4 values; a value equal to a midpoint goes to the lower code,
// and NaN (0*inf from an all-zero block) gives code 0.
func quantizeNF4(x float32) uint8 {
	if x > 0.03979014977812767 {
		if x > 0.3893125355243683 {
			if x > 0.6427869200706482 {
				if x > 0.8614784181118011 {
					return 15
				}
				return 14
			}
			if x > 0.5016634166240692 {
				return 13
			}
			return 12
		}
		if x > 0.2035212516784668 {
			if x > 0.2920137718319893 {
				return 11
			}
			return 10
		}
		if x > 0.1202552504837513 {
			return 9
		}
		return 8
	}
	if x > -0.33967943489551544 {
		if x > -0.13791173323988914 {
			if x > -0.045525018125772476 {
				return 7
			}
			return 6
		}
		if x > -0.23460740596055984 {
			return 5
		}
		return 4
	}
	if x > -0.6106329262256622 {
		if x > -0.4599952697753906 {
			return 3
		}
		return 2
	}
	if x > -0.8480964004993439 {
		return 1
	}
	return 0
}

// quantizeFP4 is dQuantizeFP4: sign bit 8 for x < 0, then a decision tree on
// |x| with the kernel's pivots (midpoints of the sorted magnitudes).
func quantizeFP4(x float32) uint8 {
	var sign uint8
	if x < 0 {
		sign = 8
	}
	x = absf(x)
	switch {
	case x > 0.29166667:
		switch {
		case x > 0.583333:
			if x > 0.8333333 {
				return 3 + sign
			}
			return 2 + sign
		case x > 0.4166667:
			return 5 + sign
		default:
			return 4 + sign
		}
	case x > 0.0859375:
		if x > 0.20833333 {
			return 7 + sign
		}
		return 6 + sign
	case x > 0.00260417:
		return 1 + sign
	default:
		return sign
	}
}

// Bnb4Options mirrors bitsandbytes.functional.quantize_4bit's parameters.
type Bnb4Options struct {
	// Type is NF4 or FP4 (bnb.nn.Linear4bit's quant_type; quantize_4bit's
	// own default is fp4, Linear4bit's is fp4 too, most checkpoints use nf4).
	Type FourBit
	// BlockSize is the number of weights per absmax; 0 means 64, the
	// default of quantize_4bit and Linear4bit. Allowed: 32..4096, powers of 2.
	BlockSize int
	// CompressStatistics enables double quantization of the absmax
	// (quantize_4bit(compress_statistics=True), Linear4bit's default True).
	CompressStatistics bool
}

// NestedBlockSize is the block size of the absmax double quantization.
const NestedBlockSize = 256

// NestedAbsmax is the double-quantized absmax (bitsandbytes' state2):
// absmax[b] = Map[Codes[b]] * Absmax[b/256] + Offset.
type NestedAbsmax struct {
	// Map is the 8-bit code (bitsandbytes' nested_quant_map), DynamicMap().
	Map [256]float32
	// Codes holds one 8-bit dynamic-map code per 4-bit block.
	Codes []uint8
	// Absmax holds a float32 absmax per NestedBlockSize codes.
	Absmax []float32
	// Offset is the mean of the original absmax values.
	Offset float32
}

// Bnb4 is a bitsandbytes 4-bit tensor (Params4bit with quant_storage uint8).
// The [rows, cols] tensor is flattened row-major and cut into blocks of
// BlockSize consecutive weights (blocks may span rows; the last may be
// short). Packed holds two codes per byte, the earlier element in the HIGH
// nibble; an odd count is padded with the code of 0 (the kernel loads padding
// as zero). Weight i is codebook[code_i] * absmax[i/BlockSize] in float32.
type Bnb4 struct {
	Type       FourBit
	Rows, Cols int
	BlockSize  int
	// Packed holds ceil(rows*cols/2) bytes.
	Packed []byte
	// Absmax holds one float32 per block, or is nil when Nested is set.
	Absmax []float32
	// Nested holds the double-quantized absmax, or nil.
	Nested *NestedAbsmax
}

var _ Tensor = (*Bnb4)(nil)

// QuantizeBnb4 quantizes a row-major [rows, cols] tensor as
// bitsandbytes.functional.quantize_4bit does on CUDA: per block absmax, x
// scaled by the float32 reciprocal 1/absmax, codes from the kernel's decision
// trees (dQuantizeNF4 / dQuantizeFP4). The reciprocal is IEEE here; bnb builds
// with --use_fast_math, so values within an ulp of a decision threshold may
// code differently there. With CompressStatistics the absmax are reduced by
// their mean (computed in float64, rounded to float32; torch's float32 mean
// may differ by an ulp) and coded with quantize_blockwise(blocksize=256).
func QuantizeBnb4(w []float32, rows, cols int, opt Bnb4Options) (*Bnb4, error) {
	if err := checkShape("bnb4", w, rows, cols); err != nil {
		return nil, err
	}
	bs, err := bnb4BlockSize(opt.BlockSize)
	if err != nil {
		return nil, err
	}
	if opt.Type != NF4 && opt.Type != FP4 {
		return nil, fmt.Errorf("quant: bnb4: type %v: %w", opt.Type, ErrParam)
	}
	n := rows * cols
	nb := (n + bs - 1) / bs
	q := &Bnb4{Type: opt.Type, Rows: rows, Cols: cols, BlockSize: bs, Packed: make([]byte, (n+1)/2)}
	absmax := make([]float32, nb)
	enc := quantizeNF4
	if opt.Type == FP4 {
		enc = quantizeFP4
	}
	for b := 0; b < nb; b++ {
		blk := w[b*bs : min(n, (b+1)*bs)]
		var m float32
		for _, v := range blk {
			m = max(m, absf(v))
		}
		absmax[b] = m
		inv := float32(1) / m // +Inf for an all-zero block: codes of NaN, as in the kernel
		for j, v := range blk {
			i := b*bs + j
			c := enc(v * inv)
			if i%2 == 0 {
				q.Packed[i/2] = c << 4
			} else {
				q.Packed[i/2] |= c
			}
		}
		if n%2 == 1 && b == nb-1 { // pad nibble: the kernel loads padding as 0
			q.Packed[n/2] |= enc(0 * inv)
		}
	}
	if !opt.CompressStatistics {
		q.Absmax = absmax
		return q, nil
	}
	q.Nested = NestAbsmax(absmax)
	return q, nil
}

// NestAbsmax is the double quantization of the 4-bit absmax
// (bitsandbytes quantize_4bit(compress_statistics=True)): the absmax minus
// their mean (float64 sum, float32 mean), coded with
// quantize_blockwise(blocksize=NestedBlockSize) on the signed dynamic map.
// QuantizeBnb4 calls it; a pipeline that codes the blocks in parallel
// chunks calls it once on the whole tensor's absmax.
func NestAbsmax(absmax []float32) *NestedAbsmax {
	nb := len(absmax)
	var sum float64
	for _, a := range absmax {
		sum += float64(a)
	}
	offset := float32(sum / float64(nb))
	centered := make([]float32, nb)
	for i, a := range absmax {
		centered[i] = a - offset
	}
	code := DynamicMap()
	codes, amax2 := quantizeBlockwise8(&code, centered, NestedBlockSize)
	return &NestedAbsmax{Map: code, Codes: codes, Absmax: amax2, Offset: offset}
}

func bnb4BlockSize(bs int) (int, error) {
	if bs == 0 {
		return 64, nil
	}
	if bs < 32 || bs > 4096 || bs&(bs-1) != 0 {
		return 0, fmt.Errorf("quant: bnb4: block size %d (want a power of two in 32..4096): %w", bs, ErrParam)
	}
	return bs, nil
}

// Shape returns rows and cols.
func (q *Bnb4) Shape() (int, int) { return q.Rows, q.Cols }

func (q *Bnb4) blocks() int { return (q.Rows*q.Cols + q.BlockSize - 1) / q.BlockSize }

// Validate checks the fields against each other and for finite values.
func (q *Bnb4) Validate() error {
	const name = "bnb4"
	if q.Rows <= 0 || q.Cols <= 0 {
		return checkShape(name, nil, q.Rows, q.Cols)
	}
	if _, err := bnb4BlockSize(q.BlockSize); err != nil || q.BlockSize == 0 {
		return fmt.Errorf("quant: bnb4: block size %d: %w", q.BlockSize, ErrParam)
	}
	if q.Type != NF4 && q.Type != FP4 {
		return fmt.Errorf("quant: bnb4: type %v: %w", q.Type, ErrParam)
	}
	if err := checkLen(name, "Packed", len(q.Packed), (q.Rows*q.Cols+1)/2); err != nil {
		return err
	}
	nb := q.blocks()
	if q.Nested == nil {
		if err := checkLen(name, "Absmax", len(q.Absmax), nb); err != nil {
			return err
		}
		return checkFiniteSlice(name, "Absmax", q.Absmax)
	}
	if q.Absmax != nil {
		return fmt.Errorf("quant: bnb4: both Absmax and Nested are set: %w", ErrParam)
	}
	if err := checkLen(name, "Nested.Codes", len(q.Nested.Codes), nb); err != nil {
		return err
	}
	if err := checkLen(name, "Nested.Absmax", len(q.Nested.Absmax), (nb+NestedBlockSize-1)/NestedBlockSize); err != nil {
		return err
	}
	if err := checkFiniteSlice(name, "Nested.Absmax", q.Nested.Absmax); err != nil {
		return err
	}
	if err := checkFiniteSlice(name, "Nested.Map", q.Nested.Map[:]); err != nil {
		return err
	}
	return checkFiniteSlice(name, "Nested.Offset", []float32{q.Nested.Offset})
}

// BlockAbsmax returns the float32 absmax of every block: Absmax, or the
// decoded nested absmax Map[c]*absmax2 + offset (dequantize_4bit).
func (q *Bnb4) BlockAbsmax() ([]float32, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	if q.Nested == nil {
		return append([]float32(nil), q.Absmax...), nil
	}
	out := make([]float32, q.blocks())
	for b := range out {
		out[b] = q.nestedAbsmax(b)
	}
	return out, nil
}

func (q *Bnb4) nestedAbsmax(b int) float32 {
	n := q.Nested
	return float32(n.Map[n.Codes[b]]*n.Absmax[b/NestedBlockSize]) + n.Offset
}

// Code returns the 4-bit code of flat element i.
func (q *Bnb4) Code(i int) uint8 {
	if i%2 == 0 {
		return q.Packed[i/2] >> 4
	}
	return q.Packed[i/2] & 15
}

// Dequantize returns codebook[code]*absmax per weight (float32), row-major.
func (q *Bnb4) Dequantize() ([]float32, error) {
	am, err := q.BlockAbsmax()
	if err != nil {
		return nil, err
	}
	out := make([]float32, q.Rows*q.Cols)
	for i := range out {
		out[i] = fourBitValue(q.Type, q.Code(i)) * am[i/q.BlockSize]
	}
	return out, nil
}

// DotRow returns sum_j w[r,j]*x[j], one block segment at a time. For a
// nested tensor it decodes each block's absmax on the fly; call BlockAbsmax
// once and keep a plain copy for a hot loop.
func (q *Bnb4) DotRow(r int, x []float32) float32 {
	if len(x) != q.Cols || r < 0 || r >= q.Rows {
		panic(fmt.Sprintf("quant: bnb4: DotRow(%d) with %d values on a [%d, %d] tensor", r, len(x), q.Rows, q.Cols))
	}
	var lut [16]float32
	for c := range lut {
		lut[c] = fourBitValue(q.Type, uint8(c))
	}
	base := r * q.Cols
	var sum float32
	for j := 0; j < q.Cols; {
		b := (base + j) / q.BlockSize
		end := min(q.Cols, (b+1)*q.BlockSize-base)
		var s float32
		k := j
		if (base+k)%2 == 1 { // odd start: low nibble first
			s += lut[q.Packed[(base+k)/2]&15] * x[k]
			k++
		}
		for ; k+1 < end; k += 2 {
			p := q.Packed[(base+k)/2]
			s += lut[p>>4]*x[k] + lut[p&15]*x[k+1]
		}
		if k < end {
			s += lut[q.Packed[(base+k)/2]>>4] * x[k]
		}
		var am float32
		if q.Nested == nil {
			am = q.Absmax[b]
		} else {
			am = q.nestedAbsmax(b)
		}
		sum += s * am
		j = end
	}
	return sum
}

// Bytes counts the packed codes plus float32 absmax per block, or for a
// nested tensor one byte per block, a float32 per 256 blocks and the float32
// offset (the 256-entry dynamic map, a constant, is not counted).
func (q *Bnb4) Bytes() int {
	nb := q.blocks()
	if q.Nested == nil {
		return len(q.Packed) + 4*nb
	}
	return len(q.Packed) + nb + 4*((nb+NestedBlockSize-1)/NestedBlockSize) + 4
}

// BitsPerWeight includes the absmax overhead.
func (q *Bnb4) BitsPerWeight() float64 { return bitsPerWeight(q.Bytes(), q.Rows, q.Cols) }

// Codebook returns the 16 dequantization values of a 4-bit type, indexed by
// code (what a runtime multiplies by a block's absmax).
func Codebook(k FourBit) [16]float32 {
	var lut [16]float32
	for c := range lut {
		lut[c] = fourBitValue(k, uint8(c))
	}
	return lut
}
