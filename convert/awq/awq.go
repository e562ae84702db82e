// Package awq implements AWQ (Lin et al., "AWQ: Activation-aware Weight
// Quantization for LLM Compression and Acceleration", 2023) on the CPU,
// following llm-awq / AutoAWQ's auto_scale and auto_clip for Llama:
//
//   - per input channel the mean |x| of the calibration activations;
//   - a grid search (Grid points, α = i/Grid) of s = mean|x|^α, clamped at
//     1e-4 and divided by sqrt(max(s)·min(s)), minimising the mean squared
//     error of the inspected module's output when the scaled weights are
//     fake-quantized (W' = Q(W·diag(s))·diag(s)⁻¹); α = 0 is plain RTN, so
//     the chosen scales never do worse than RTN on the calibration data;
//   - the scales folded into what precedes: input_layernorm for q/k/v
//     (inspecting the attention output), v_proj's rows for o_proj,
//     post_attention_layernorm for gate/up (inspecting the MLP output),
//     up_proj's rows for down_proj;
//   - a clipping search per (row, group) of every linear but q and k:
//     max |w| shrunk by i/Grid for i < MaxShrink·Grid, keeping the one whose
//     quantized group gives the smallest mean squared partial output on
//     ClipTokens evenly strided calibration rows;
//   - finally RTN with quant.RuleAWQ (zero point, group GroupSize).
//
// Grouped-query attention: v_proj has KVHeads·HeadDim outputs, o_proj
// Heads·HeadDim inputs, so the reference skips the v→o pair. Here the pair
// is scaled per kv channel: scaling v's output c = kh·HeadDim+i by 1/s_c
// scales the attention output of every query head h of that kv head
// (h / (Heads/KVHeads) = kh) at index i by 1/s_c, because attention is linear
// in v; o_proj's input column h·HeadDim+i is multiplied by the same s_c.
// The activation statistic of kv channel c is the mean of the group's query
// heads' mean|x| at index i. With Heads = KVHeads this is the reference.
//
// Calibration is block by block: the input of block l is the output of
// blocks 0..l-1 already quantized (the reference feeds the float outputs);
// inside a block, as in the reference, all scales are searched on the
// block's float activations, then applied, then clipping is searched.
//
// GPU execution is not implemented.
package awq

import (
	"errors"
	"fmt"
	"math"

	"qllama/convert/quant"
	"qllama/infer"
)

// ErrAWQ is wrapped by errors about AWQ inputs and options.
var ErrAWQ = errors.New("awq")

// Reference defaults.
const (
	DefaultGroupSize  = 128
	DefaultGrid       = 20
	DefaultMaxShrink  = 0.5
	DefaultClipTokens = 512
)

// Options configure AWQ.
type Options struct {
	// Bits per code, 2..8.
	Bits int
	// GroupSize is the group length; 0 means DefaultGroupSize, -1 one group
	// per row.
	GroupSize int
	// Grid is the number of scale exponents tried (0: DefaultGrid); also
	// the clipping step count denominator.
	Grid int
	// MaxShrink is the largest fraction of max|w| clipping removes (0:
	// DefaultMaxShrink).
	MaxShrink float64
	// ClipTokens is the number of calibration rows the clipping search
	// uses (0: DefaultClipTokens).
	ClipTokens int
	// NoClip skips the clipping search.
	NoClip bool
	// SkipGQA skips the v→o scaling when the shapes differ, as the
	// reference does.
	SkipGQA bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Bits < 2 || o.Bits > 8 {
		return o, fmt.Errorf("%d bits (want 2..8): %w", o.Bits, ErrAWQ)
	}
	switch {
	case o.GroupSize == 0:
		o.GroupSize = DefaultGroupSize
	case o.GroupSize == -1:
		o.GroupSize = 0
	case o.GroupSize < 0:
		return o, fmt.Errorf("group size %d: %w", o.GroupSize, ErrAWQ)
	}
	if o.Grid == 0 {
		o.Grid = DefaultGrid
	}
	if o.MaxShrink == 0 {
		o.MaxShrink = DefaultMaxShrink
	}
	if o.ClipTokens == 0 {
		o.ClipTokens = DefaultClipTokens
	}
	if o.Grid < 1 || o.ClipTokens < 1 || !(o.MaxShrink > 0 && o.MaxShrink < 1) {
		return o, fmt.Errorf("grid %d, clip tokens %d, max shrink %v: %w", o.Grid, o.ClipTokens, o.MaxShrink, ErrAWQ)
	}
	return o, nil
}

// WithDefaults returns the options with the defaults filled in (GroupSize
// -1 becoming 0, one group per row) as QuantizeModel uses and reports them,
// or an error for invalid ones.
func (o Options) WithDefaults() (Options, error) { return o.withDefaults() }

// Grouped returns the RTN options of the final quantization (quant.RuleAWQ);
// o must have its defaults (WithDefaults).
func (o Options) Grouped() quant.GroupedOptions { return o.grouped() }

func (o Options) grouped() quant.GroupedOptions {
	return quant.GroupedOptions{Bits: o.Bits, GroupSize: o.GroupSize, Rule: quant.RuleAWQ}
}

// MeanAbs returns the mean |x| per column of the n rows of x ([n, cols]).
func MeanAbs(x []float32, n, cols int) []float64 {
	m := make([]float64, cols)
	for t := 0; t < n; t++ {
		for j, v := range x[t*cols : (t+1)*cols] {
			m[j] += math.Abs(float64(v))
		}
	}
	for j := range m {
		m[j] /= float64(max(n, 1))
	}
	return m
}

// MeanSquare returns the mean x² per column (the importance).
func MeanSquare(x []float32, n, cols int) []float64 {
	m := make([]float64, cols)
	for t := 0; t < n; t++ {
		for j, v := range x[t*cols : (t+1)*cols] {
			m[j] += float64(v) * float64(v)
		}
	}
	for j := range m {
		m[j] /= float64(max(n, 1))
	}
	return m
}

// Scales returns the AWQ scales for exponent alpha: mean^alpha clamped at
// 1e-4, divided by sqrt(max·min), in float32 as the reference.
func Scales(mean []float64, alpha float64) []float32 {
	s := make([]float32, len(mean))
	lo, hi := float32(math.Inf(1)), float32(0)
	for j, v := range mean {
		f := max(float32(math.Pow(float64(float32(v)), alpha)), 1e-4)
		s[j] = f
		lo, hi = min(lo, f), max(hi, f)
	}
	norm := float32(math.Sqrt(float64(hi * lo)))
	for j := range s {
		s[j] /= norm
	}
	return s
}

// FakeQuant returns Q(W·diag(s))·diag(s)⁻¹ for the row-major [rows, cols] w
// (s nil: Q(W)), Q being RTN with the options' bits and groups.
func FakeQuant(w []float32, rows, cols int, s []float32, opt Options) ([]float32, error) {
	ws := w
	if s != nil {
		ws = make([]float32, len(w))
		for i, v := range w {
			ws[i] = v * s[i%cols]
		}
	}
	g, err := quant.RTN(ws, rows, cols, opt.grouped())
	if err != nil {
		return nil, err
	}
	deq, err := g.Dequantize()
	if err != nil {
		return nil, err
	}
	if s != nil {
		for i := range deq {
			deq[i] /= s[i%cols]
		}
	}
	return deq, nil
}

// mse is the mean squared difference.
func mse(a, b []float32) float64 {
	var s float64
	for i, v := range a {
		d := float64(v) - float64(b[i])
		s += d * d
	}
	return s / float64(max(len(a), 1))
}

// Search tries the Grid exponents α = i/Grid and returns the best scales,
// α and loss, and the loss at α = 0 (RTN). eval returns the inspected
// output for given scales (nil meaning the float weights).
func Search(mean []float64, grid int, eval func(s []float32) ([]float32, error)) (best []float32, alpha, loss, rtnLoss float64, err error) {
	org, err := eval(nil)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	loss = math.Inf(1)
	for i := 0; i < grid; i++ {
		a := float64(i) / float64(grid)
		s := Scales(mean, a)
		out, err := eval(s)
		if err != nil {
			return nil, 0, 0, 0, err
		}
		l := mse(out, org)
		if math.IsNaN(l) {
			return nil, 0, 0, 0, fmt.Errorf("non-finite output error at alpha %g: %w", a, ErrAWQ)
		}
		if i == 0 {
			rtnLoss = l
		}
		if l < loss {
			best, alpha, loss = s, a, l
		}
	}
	return best, alpha, loss, rtnLoss, nil
}

// awqGroup fake-quantizes one group in place (quant.RuleAWQ in float32).
func awqGroup(dst, w []float32, maxq float32) {
	lo, hi := w[0], w[0]
	for _, v := range w {
		lo, hi = min(lo, v), max(hi, v)
	}
	scale := max(hi-lo, float32(1e-5)) / maxq
	zero := min(max(-float32(math.RoundToEven(float64(lo/scale))), 0), maxq)
	for j, v := range w {
		q := min(max(float32(math.RoundToEven(float64(v/scale)))+zero, 0), maxq)
		dst[j] = scale * (q - zero)
	}
}

// Clip runs the clipping search on the row-major [rows, cols] w in place
// (w is already scaled; x holds n input rows in the same basis) and returns
// how many groups were clipped.
func Clip(w []float32, rows, cols int, x []float32, n int, opt Options) (int, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return 0, err
	}
	if len(w) != rows*cols || len(x) < n*cols || n <= 0 {
		return 0, fmt.Errorf("clip: weight of %d for [%d %d], %d input rows of %d values: %w", len(w), rows, cols, n, len(x), ErrAWQ)
	}
	gs := opt.GroupSize
	if gs <= 0 || gs > cols {
		gs = cols
	}
	ng := (cols + gs - 1) / gs
	step := max(1, n/opt.ClipTokens)
	var rowsUsed []int
	for t := 0; t < n; t += step {
		rowsUsed = append(rowsUsed, t)
	}
	// Per-group Gram matrices of the sampled inputs, mean over rows.
	grams := make([][]float64, ng)
	for k := 0; k < ng; k++ {
		lo, hi := k*gs, min(cols, (k+1)*gs)
		m := hi - lo
		G := make([]float64, m*m)
		for _, t := range rowsUsed {
			xr := x[t*cols+lo : t*cols+hi]
			for a, va := range xr {
				if va == 0 {
					continue
				}
				fa := float64(va)
				for b, vb := range xr {
					G[a*m+b] += fa * float64(vb)
				}
			}
		}
		for i := range G {
			G[i] /= float64(len(rowsUsed))
		}
		grams[k] = G
	}
	maxq := float32(int(1)<<opt.Bits - 1)
	steps := int(opt.MaxShrink * float64(opt.Grid))
	clipped := make([]int, rows)
	infer.ParallelFor(rows, cols*gs*steps, func(r0, r1 int) {
		cw, qw := make([]float32, gs), make([]float32, gs)
		d := make([]float64, gs)
		for r := r0; r < r1; r++ {
			for k := 0; k < ng; k++ {
				lo, hi := k*gs, min(cols, (k+1)*gs)
				m := hi - lo
				wg := w[r*cols+lo : r*cols+hi]
				var amax float32
				for _, v := range wg {
					amax = max(amax, float32(math.Abs(float64(v))))
				}
				best, bestErr := amax, math.Inf(1)
				for i := 0; i < steps; i++ {
					mx := amax * (1 - float32(i)/float32(opt.Grid))
					for j, v := range wg {
						cw[j] = min(max(v, -mx), mx)
					}
					awqGroup(qw[:m], cw[:m], maxq)
					for j := 0; j < m; j++ {
						d[j] = float64(qw[j]) - float64(wg[j])
					}
					G := grams[k]
					var e float64
					for a := 0; a < m; a++ {
						var s float64
						row := G[a*m : (a+1)*m]
						for b := 0; b < m; b++ {
							s += row[b] * d[b]
						}
						e += d[a] * s
					}
					if e < bestErr {
						best, bestErr = mx, e
					}
				}
				if best < amax {
					clipped[r]++
					for j, v := range wg {
						wg[j] = min(max(v, -best), best)
					}
				}
			}
		}
	})
	total := 0
	for _, c := range clipped {
		total += c
	}
	return total, nil
}
