package quant

import (
	"fmt"
	"math"
)

// Rule picks whose scale/zero recipe RTN follows.
type Rule int

const (
	// RuleGPTQ is Quantizer.find_params of GPTQ / AutoGPTQ / GPTQModel
	// (quant.py) without the MSE grid search.
	RuleGPTQ Rule = iota
	// RuleAWQ is AutoAWQ's pseudo_quantize_tensor with zero_point=True.
	RuleAWQ
)

// String returns "gptq" or "awq".
func (r Rule) String() string {
	switch r {
	case RuleGPTQ:
		return "gptq"
	case RuleAWQ:
		return "awq"
	}
	return fmt.Sprintf("Rule(%d)", int(r))
}

// GroupedOptions are the parameters of RTN.
type GroupedOptions struct {
	// Bits per code, 2..8.
	Bits int
	// GroupSize is the number of consecutive input columns sharing a scale
	// and zero (32, 64, 128...); 0 means one group per row (per channel).
	GroupSize int
	// Sym selects symmetric quantization (GPTQ only).
	Sym bool
	// Rule is RuleGPTQ (default) or RuleAWQ.
	Rule Rule
}

// Grouped is a grouped integer weight as GPTQ and AWQ store it, before
// bit packing: w[r,j] = Scales[r*G+g] * (Codes[r*Cols+j] - Zeros[r*G+g]) in
// float32, where g = GIdx[j] if GIdx is set (act-order) and j/GroupSize
// otherwise, and G = NumGroups(). Calibration-based quantizers fill Codes,
// Scales, Zeros (and GIdx) themselves; RTN fills them by rounding to nearest.
type Grouped struct {
	Bits int
	// GroupSize is the group length in columns; 0 means one group per row.
	GroupSize int
	Sym       bool
	Rows      int
	Cols      int
	// Codes holds Rows*Cols unsigned codes in [0, 2^Bits), row-major.
	Codes []uint8
	// Scales holds Rows*NumGroups() float32 scales, row-major.
	Scales []float32
	// Zeros holds Rows*NumGroups() integer zero points in [0, 2^Bits).
	Zeros []uint8
	// GIdx optionally maps each input column to its group (GPTQ act-order
	// g_idx); nil means column j is in group j/GroupSize.
	GIdx []int32
}

var _ Tensor = (*Grouped)(nil)

// NumGroups returns the number of groups per row.
func (g *Grouped) NumGroups() int {
	if g.GroupSize <= 0 || g.GroupSize >= g.Cols {
		return 1
	}
	return (g.Cols + g.GroupSize - 1) / g.GroupSize
}

func checkGroupedParams(bits, groupSize int) error {
	if bits < 2 || bits > 8 {
		return fmt.Errorf("quant: grouped: %d bits (want 2..8): %w", bits, ErrParam)
	}
	if groupSize < 0 {
		return fmt.Errorf("quant: grouped: group size %d: %w", groupSize, ErrParam)
	}
	return nil
}

// RTN quantizes a row-major [rows, cols] tensor group by group with round to
// nearest (torch.round: halves to even), choosing scale and zero as the rule
// does, all in float32:
//
// GPTQ: xmin = min(min(x), 0), xmax = max(max(x), 0); if Sym, xmax =
// max(|xmin|, xmax) and xmin = -xmax when xmin < 0; if both are 0 they become
// -1 and +1; scale = (xmax-xmin)/maxq; zero = (maxq+1)/2 if Sym else
// round(-xmin/scale); code = clamp(round(x/scale) + zero, 0, maxq).
//
// AWQ: scale = max(max(x)-min(x), 1e-5)/maxq; zero = clamp(-round(min(x)/scale),
// 0, maxq); code = clamp(round(x/scale) + zero, 0, maxq). AWQ is asymmetric
// only; Sym with RuleAWQ is an error.
func RTN(w []float32, rows, cols int, opt GroupedOptions) (*Grouped, error) {
	if err := checkShape("grouped", w, rows, cols); err != nil {
		return nil, err
	}
	if err := checkGroupedParams(opt.Bits, opt.GroupSize); err != nil {
		return nil, err
	}
	if opt.Rule != RuleGPTQ && opt.Rule != RuleAWQ {
		return nil, fmt.Errorf("quant: grouped: rule %v: %w", opt.Rule, ErrParam)
	}
	if opt.Rule == RuleAWQ && opt.Sym {
		return nil, fmt.Errorf("quant: grouped: AWQ stores zero-point (asymmetric) weights only: %w", ErrParam)
	}
	g := &Grouped{Bits: opt.Bits, GroupSize: opt.GroupSize, Sym: opt.Sym, Rows: rows, Cols: cols}
	if g.GroupSize >= cols {
		g.GroupSize = 0
	}
	ng := g.NumGroups()
	gs := cols
	if g.GroupSize > 0 {
		gs = g.GroupSize
	}
	g.Codes = make([]uint8, rows*cols)
	g.Scales = make([]float32, rows*ng)
	g.Zeros = make([]uint8, rows*ng)
	maxq := float32(int(1)<<opt.Bits - 1)
	for r := 0; r < rows; r++ {
		for k := 0; k < ng; k++ {
			lo, hi := k*gs, min(cols, (k+1)*gs)
			x := w[r*cols+lo : r*cols+hi]
			var scale, zero float32
			if opt.Rule == RuleGPTQ {
				scale, zero = gptqParams(x, maxq, opt.Sym)
			} else {
				scale, zero = awqParams(x, maxq)
			}
			g.Scales[r*ng+k], g.Zeros[r*ng+k] = scale, uint8(zero)
			for j, v := range x {
				q := float32(math.RoundToEven(float64(v/scale))) + zero
				if q != q { // 0/0 when a subnormal range underflows the scale
					q = zero
				}
				g.Codes[r*cols+lo+j] = uint8(min(max(q, 0), maxq))
			}
		}
	}
	return g, nil
}

func gptqParams(x []float32, maxq float32, sym bool) (scale, zero float32) {
	var xmin, xmax float32
	for _, v := range x {
		xmin, xmax = min(xmin, v), max(xmax, v)
	}
	if sym {
		xmax = max(absf(xmin), xmax)
		if xmin < 0 {
			xmin = -xmax
		}
	}
	if xmin == 0 && xmax == 0 {
		xmin, xmax = -1, 1
	}
	scale = (xmax - xmin) / maxq
	if sym {
		return scale, (maxq + 1) / 2
	}
	return scale, float32(math.RoundToEven(float64(-xmin / scale)))
}

func awqParams(x []float32, maxq float32) (scale, zero float32) {
	xmin, xmax := x[0], x[0]
	for _, v := range x {
		xmin, xmax = min(xmin, v), max(xmax, v)
	}
	scale = max(xmax-xmin, float32(1e-5)) / maxq
	zero = -float32(math.RoundToEven(float64(xmin / scale)))
	return scale, min(max(zero, 0), maxq)
}

// Shape returns rows and cols.
func (g *Grouped) Shape() (int, int) { return g.Rows, g.Cols }

// Validate checks parameters, component lengths, code and zero ranges,
// finite scales and g_idx range.
func (g *Grouped) Validate() error {
	const name = "grouped"
	if g.Rows <= 0 || g.Cols <= 0 {
		return checkShape(name, nil, g.Rows, g.Cols)
	}
	if err := checkGroupedParams(g.Bits, g.GroupSize); err != nil {
		return err
	}
	ng := g.NumGroups()
	if err := checkLen(name, "Codes", len(g.Codes), g.Rows*g.Cols); err != nil {
		return err
	}
	if err := checkLen(name, "Scales", len(g.Scales), g.Rows*ng); err != nil {
		return err
	}
	if err := checkLen(name, "Zeros", len(g.Zeros), g.Rows*ng); err != nil {
		return err
	}
	if err := checkFiniteSlice(name, "Scales", g.Scales); err != nil {
		return err
	}
	maxq := uint8(int(1)<<g.Bits - 1)
	for i, c := range g.Codes {
		if c > maxq {
			return fmt.Errorf("quant: grouped: code %d at %d exceeds %d bits: %w", c, i, g.Bits, ErrParam)
		}
	}
	for i, z := range g.Zeros {
		if z > maxq {
			return fmt.Errorf("quant: grouped: zero %d at %d exceeds %d bits: %w", z, i, g.Bits, ErrParam)
		}
	}
	if g.GIdx != nil {
		if err := checkLen(name, "GIdx", len(g.GIdx), g.Cols); err != nil {
			return err
		}
		for j, k := range g.GIdx {
			if k < 0 || int(k) >= ng {
				return fmt.Errorf("quant: grouped: g_idx[%d] = %d outside [0, %d): %w", j, k, ng, ErrParam)
			}
		}
	}
	return nil
}

func (g *Grouped) group(j int) int {
	if g.GIdx != nil {
		return int(g.GIdx[j])
	}
	if g.GroupSize <= 0 {
		return 0
	}
	return j / g.GroupSize
}

// Dequantize returns scale*(code-zero) per weight, row-major.
func (g *Grouped) Dequantize() ([]float32, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	ng := g.NumGroups()
	out := make([]float32, g.Rows*g.Cols)
	for r := 0; r < g.Rows; r++ {
		for j := 0; j < g.Cols; j++ {
			k := r*ng + g.group(j)
			out[r*g.Cols+j] = g.Scales[k] * float32(int(g.Codes[r*g.Cols+j])-int(g.Zeros[k]))
		}
	}
	return out, nil
}

// DotRow returns sum_j w[r,j]*x[j]; without GIdx it works a group at a time
// as scale*(sum q*x - zero*sum x).
func (g *Grouped) DotRow(r int, x []float32) float32 {
	if len(x) != g.Cols || r < 0 || r >= g.Rows {
		panic(fmt.Sprintf("quant: grouped: DotRow(%d) with %d values on a [%d, %d] tensor", r, len(x), g.Rows, g.Cols))
	}
	ng := g.NumGroups()
	codes := g.Codes[r*g.Cols : (r+1)*g.Cols]
	scales, zeros := g.Scales[r*ng:(r+1)*ng], g.Zeros[r*ng:(r+1)*ng]
	if g.GIdx != nil {
		var sum float32
		for j, c := range codes {
			k := g.GIdx[j]
			sum += scales[k] * float32(int(c)-int(zeros[k])) * x[j]
		}
		return sum
	}
	gs := g.Cols
	if g.GroupSize > 0 {
		gs = g.GroupSize
	}
	var sum float32
	for k := 0; k < ng; k++ {
		lo, hi := k*gs, min(g.Cols, (k+1)*gs)
		var sqx, sx float32
		xs := x[lo:hi]
		for j, c := range codes[lo:hi] {
			sqx += float32(c) * xs[j]
			sx += xs[j]
		}
		sum += scales[k] * (sqx - float32(zeros[k])*sx)
	}
	return sum
}

// Bytes counts the bit-packed codes and zeros (see Pack), float32 scales and
// int32 g_idx entries when present.
func (g *Grouped) Bytes() int {
	return packedLen(g.Rows*g.Cols, g.Bits) + 4*len(g.Scales) + packedLen(len(g.Zeros), g.Bits) + 4*len(g.GIdx)
}

// BitsPerWeight includes scales, zeros and g_idx.
func (g *Grouped) BitsPerWeight() float64 { return bitsPerWeight(g.Bytes(), g.Rows, g.Cols) }

// PackedGrouped is Grouped with Codes and Zeros bit-packed by PackBits.
type PackedGrouped struct {
	Bits, GroupSize int
	Sym             bool
	Rows, Cols      int
	// QWeight holds the Rows*Cols codes, row-major, packed by PackBits.
	QWeight []byte
	Scales  []float32
	// QZeros holds the Rows*NumGroups zeros packed by PackBits.
	QZeros []byte
	GIdx   []int32
}

// Pack bit-packs the codes and zeros.
func (g *Grouped) Pack() (*PackedGrouped, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	qw, err := PackBits(g.Codes, g.Bits)
	if err != nil {
		return nil, err
	}
	qz, err := PackBits(g.Zeros, g.Bits)
	if err != nil {
		return nil, err
	}
	return &PackedGrouped{Bits: g.Bits, GroupSize: g.GroupSize, Sym: g.Sym, Rows: g.Rows, Cols: g.Cols,
		QWeight: qw, Scales: append([]float32(nil), g.Scales...), QZeros: qz, GIdx: append([]int32(nil), g.GIdx...)}, nil
}

// Unpack restores the Grouped form and validates it.
func (p *PackedGrouped) Unpack() (*Grouped, error) {
	if err := checkGroupedParams(p.Bits, p.GroupSize); err != nil {
		return nil, err
	}
	if p.Rows <= 0 || p.Cols <= 0 {
		return nil, checkShape("grouped", nil, p.Rows, p.Cols)
	}
	g := &Grouped{Bits: p.Bits, GroupSize: p.GroupSize, Sym: p.Sym, Rows: p.Rows, Cols: p.Cols,
		Scales: append([]float32(nil), p.Scales...)}
	if p.GIdx != nil {
		g.GIdx = append([]int32(nil), p.GIdx...)
	}
	var err error
	if g.Codes, err = UnpackBits(p.QWeight, p.Bits, p.Rows*p.Cols); err != nil {
		return nil, fmt.Errorf("quant: grouped: QWeight: %w", err)
	}
	if g.Zeros, err = UnpackBits(p.QZeros, p.Bits, p.Rows*g.NumGroups()); err != nil {
		return nil, fmt.Errorf("quant: grouped: QZeros: %w", err)
	}
	return g, g.Validate()
}

func packedLen(n, bits int) int { return (n*bits + 7) / 8 }

// PackBits packs n = len(codes) codes of the given width (1..8 bits) into a
// little-endian bit stream: code i occupies stream bits [i*bits, (i+1)*bits),
// least significant bit first, and stream bit k is bit k%8 of byte k/8. For
// 2, 4 and 8 bits this equals GPTQ's int32 packing read as little-endian
// bytes (code i in bits (i%m)*bits of word i/m); the final byte is zero-padded.
func PackBits(codes []uint8, bits int) ([]byte, error) {
	if bits < 1 || bits > 8 {
		return nil, fmt.Errorf("quant: PackBits: %d bits: %w", bits, ErrParam)
	}
	out := make([]byte, packedLen(len(codes), bits))
	limit := uint16(1) << bits
	for i, c := range codes {
		if uint16(c) >= limit {
			return nil, fmt.Errorf("quant: PackBits: code %d at %d does not fit %d bits: %w", c, i, bits, ErrParam)
		}
		bit := i * bits
		v := uint16(c) << (bit % 8)
		out[bit/8] |= byte(v)
		if hi := byte(v >> 8); hi != 0 {
			out[bit/8+1] |= hi
		}
	}
	return out, nil
}

// UnpackBits reverses PackBits for n codes; packed must be exactly
// ceil(n*bits/8) bytes.
func UnpackBits(packed []byte, bits, n int) ([]uint8, error) {
	if bits < 1 || bits > 8 || n < 0 {
		return nil, fmt.Errorf("quant: UnpackBits: %d bits, %d codes: %w", bits, n, ErrParam)
	}
	if len(packed) != packedLen(n, bits) {
		return nil, fmt.Errorf("quant: UnpackBits: %d bytes for %d codes of %d bits, want %d: %w", len(packed), n, bits, packedLen(n, bits), ErrSize)
	}
	out := make([]uint8, n)
	mask := uint16(1)<<bits - 1
	for i := range out {
		bit := i * bits
		v := uint16(packed[bit/8])
		if bit/8+1 < len(packed) {
			v |= uint16(packed[bit/8+1]) << 8
		}
		out[i] = uint8(v >> (bit % 8) & mask)
	}
	return out, nil
}
