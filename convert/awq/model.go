package awq

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"qllama/convert/calib"
	"qllama/convert/quant"
	"qllama/format/hf"
	"qllama/infer"
)

// Result is an AWQ-quantized model: grouped weights in the scaled basis
// and the RMSNorm weights the scales were folded into. In the original
// basis, linear n's weight is approximately
// OutScales[n][r] · deq(Weights[n])[r, j] / InScales[n][j].
type Result struct {
	// Weights maps Hugging Face tensor names to grouped weights (Hugging
	// Face row order), to be stored instead of the float weights.
	Weights map[string]*quant.Grouped
	// Norms maps input_layernorm / post_attention_layernorm names to their
	// scaled weights, to be stored instead of the originals.
	Norms map[string][]float32
	// InScales: input columns of each linear were multiplied by these.
	InScales map[string][]float32
	// OutScales: output rows of v_proj and up_proj were divided by these
	// (nil for the other linears).
	OutScales map[string][]float32
}

// Store records linear sfx of block l, quantized as g (deq dequantized, in
// the scaled basis): its weight and the scales Apply gave it in r, deq in b
// (the linears after it see the quantized block), and its line in rep
// (clipped groups, time since t0).
func (r *Result) Store(rep *Report, b *Block, l int, sfx string, g *quant.Grouped, deq []float32,
	inScale, outScale map[string][]float32, clipped int, t0 time.Time) {
	name := hf.LayerTensorName(l, sfx)
	r.Weights[name] = g
	if s := inScale[sfx]; s != nil {
		r.InScales[name] = s
	}
	if s := outScale[sfx]; s != nil {
		r.OutScales[name] = s
	}
	b.W[sfx] = infer.NewDense(deq, g.Rows, g.Cols)
	rep.Layers = append(rep.Layers, LayerReport{Name: name, Rows: g.Rows, Cols: g.Cols, Clipped: clipped, Seconds: time.Since(t0).Seconds()})
}

// Effective returns linear name's weight in the original basis.
func (r *Result) Effective(name string) ([]float32, error) {
	g := r.Weights[name]
	if g == nil {
		return nil, fmt.Errorf("no weight %q: %w", name, ErrAWQ)
	}
	w, err := g.Dequantize()
	if err != nil {
		return nil, err
	}
	in, out := r.InScales[name], r.OutScales[name]
	for i := range w {
		if in != nil {
			w[i] /= in[i%g.Cols]
		}
		if out != nil {
			w[i] *= out[i/g.Cols]
		}
	}
	return w, nil
}

// StageReport describes the scale search of one stage of one block.
type StageReport struct {
	Layer int     `json:"layer"`
	Pair  string  `json:"pair"` // e.g. "input_layernorm->q,k,v"
	Alpha float64 `json:"alpha"`
	// Loss and RTNLoss are the inspected output's mean squared error with
	// the chosen scales and with none.
	Loss    float64 `json:"loss"`
	RTNLoss float64 `json:"rtn_loss"`
	Skipped string  `json:"skipped,omitempty"`
	// Guard describes the q/k guard of input_layernorm->q,k,v (nil for
	// the other stages and with ReferenceQK).
	Guard *GuardReport `json:"guard,omitempty"`
}

// Stage returns the report of a search's result for block layer's pair.
func (r SearchResult) Stage(layer int, pair string) StageReport {
	return StageReport{Layer: layer, Pair: pair, Alpha: r.Alpha, Loss: r.Loss, RTNLoss: r.RTNLoss, Guard: r.Guard}
}

// Stage pairs (StageReport.Pair).
const (
	PairQKV    = "input_layernorm->q,k,v"
	PairVO     = "v->o"
	PairGateUp = "post_attention_layernorm->gate,up"
	PairDown   = "up->down"
)

// LayerReport describes one linear.
type LayerReport struct {
	Name    string  `json:"name"`
	Rows    int     `json:"rows"`
	Cols    int     `json:"cols"`
	Clipped int     `json:"clipped_groups"`
	Seconds float64 `json:"seconds"`
}

// Report describes a QuantizeModel run.
type Report struct {
	Calib   calib.Info    `json:"calib"`
	Options Options       `json:"options"`
	Stages  []StageReport `json:"stages"`
	Layers  []LayerReport `json:"layers"`
	Seconds float64       `json:"seconds"`
	// Importance is the mean x² per input column of every linear in the
	// original basis (inputs after the already-quantized blocks).
	Importance calib.Importance `json:"-"`
}

// ModelOptions add the model walk to Options.
type ModelOptions struct {
	Options
	// Progress, if set, is called after each decoder block with the number
	// of linears done, the total and the block's last linear's name.
	Progress func(done, total int, name string)
}

// QuantizeModel quantizes every linear of m's decoder blocks with AWQ. m is
// not modified; its linears must be *infer.Dense.
//
// Memory: the hidden states of all calibration tokens plus one block's
// captured activations for all of them ([N·L, 3·Dim + Heads·HeadDim + FFNDim]
// float32: 3.5 GiB for 128 x 512 tokens at Llama-3.2-1B's shape, as the
// reference holds them). Fewer samples shrink it proportionally.
func QuantizeModel(ctx context.Context, m *infer.Model, set *calib.Set, opt ModelOptions) (*Result, *Report, error) {
	return Walk(ctx, m, set, opt, func(o Options, x []float32) (BlockFunc, func(), error) {
		return func(ctx context.Context, l int, res *Result, rep *Report) error {
			return quantizeBlock(ctx, m, l, x, set, o, res, rep)
		}, func() {}, nil
	})
}

// BlockFunc quantizes decoder block l, given every earlier block already
// quantized, adding its results to res and rep.
type BlockFunc func(ctx context.Context, l int, res *Result, rep *Report) error

// Walk is QuantizeModel's outer loop, shared by the CPU walk and the GPU one
// (infer/cuda): it checks the options and the model, embeds the samples,
// calls prepare with the options (defaults applied) and the embeddings
// ([samples*seqLen, Dim]), then runs the BlockFunc it returns on every
// block in order, reporting progress after each, and finally release.
func Walk(ctx context.Context, m *infer.Model, set *calib.Set, opt ModelOptions, prepare func(o Options, x []float32) (BlockFunc, func(), error)) (*Result, *Report, error) {
	start := time.Now()
	o, err := opt.Options.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	if err := m.Check(); err != nil {
		return nil, nil, fmt.Errorf("awq: %w", err)
	}
	x, err := calib.Embed(m, set)
	if err != nil {
		return nil, nil, fmt.Errorf("awq: %w", err)
	}
	run, release, err := prepare(o, x)
	if err != nil {
		return nil, nil, fmt.Errorf("awq: %w", err)
	}
	defer release()
	res := &Result{Weights: map[string]*quant.Grouped{}, Norms: map[string][]float32{},
		InScales: map[string][]float32{}, OutScales: map[string][]float32{}}
	rep := &Report{Calib: set.Info, Options: o, Importance: calib.Importance{}}
	done, total := 0, 7*len(m.Layers)
	for l := range m.Layers {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if err := run(ctx, l, res, rep); err != nil {
			return nil, nil, fmt.Errorf("awq: layer %d: %w", l, err)
		}
		done += 7
		if opt.Progress != nil {
			opt.Progress(done, total, hf.LayerTensorName(l, hf.FFNDown))
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return res, rep, nil
}

// Block holds float32 copies of one decoder block's norms and linears (by
// Hugging Face suffix), which the AWQ search rescales.
type Block struct {
	AttnNorm, FFNNorm []float32
	W                 map[string]*infer.Dense
}

// CopyBlock copies block l of m (its linears must be *infer.Dense).
func CopyBlock(m *infer.Model, l int) (*Block, error) {
	src := &m.Layers[l]
	b := &Block{AttnNorm: append([]float32(nil), src.AttnNorm...), FFNNorm: append([]float32(nil), src.FFNNorm...), W: map[string]*infer.Dense{}}
	for _, st := range calib.Stages {
		for _, sfx := range st.Linears() {
			f, err := calib.LinearField(src, sfx)
			if err != nil {
				return nil, err
			}
			d, err := calib.DenseWeight(*f, hf.LayerTensorName(l, sfx))
			if err != nil {
				return nil, err
			}
			b.W[sfx] = infer.NewDense(append([]float32(nil), d.W...), d.R, d.C)
		}
	}
	return b, nil
}

// Layer returns the block as an infer.Layer sharing its slices.
func (b *Block) Layer() infer.Layer {
	return infer.Layer{AttnNorm: b.AttnNorm, FFNNorm: b.FFNNorm, Q: b.W[hf.AttnQ], K: b.W[hf.AttnK], V: b.W[hf.AttnV],
		O: b.W[hf.AttnO], Gate: b.W[hf.FFNGate], Up: b.W[hf.FFNUp], Down: b.W[hf.FFNDown]}
}

func quantizeBlock(ctx context.Context, m *infer.Model, l int, x []float32, set *calib.Set, o Options, res *Result, rep *Report) error {
	c := &m.Config
	nseq, seqLen := len(set.Samples), set.Info.SeqLen
	n := nseq * seqLen
	b, err := CopyBlock(m, l)
	if err != nil {
		return err
	}
	// Float activations of this block on its (quantized-prefix) inputs.
	var acts infer.BlockActivations
	L := b.Layer()
	if err := infer.BlockForward(c, &L, append([]float32(nil), x...), nseq, seqLen, &acts); err != nil {
		return err
	}
	for _, st := range calib.Stages {
		imp := MeanSquare(st.Input(&acts), n, st.Cols(c))
		for _, sfx := range st.Linears() {
			rep.Importance[hf.LayerTensorName(l, sfx)] = imp
		}
	}
	// fq returns a copy of the layer with the named linears fake-quantized
	// under input scales s.
	fq := func(s []float32, names ...string) (infer.Layer, error) {
		L := b.Layer()
		for _, sfx := range names {
			d := b.W[sfx]
			deq, err := FakeQuant(d.W, d.R, d.C, s, o)
			if err != nil {
				return L, err
			}
			f, _ := calib.LinearField(&L, sfx)
			*f = infer.NewDense(deq, d.R, d.C)
		}
		return L, nil
	}
	// 1. input_layernorm -> q, k, v, inspecting the attention output,
	// under the q/k guard (see the package doc).
	guard, err := b.qkGuard(c, &acts, n, nseq, seqLen, o)
	if err != nil {
		return err
	}
	qkv, err := Search(MeanAbs(acts.AttnIn, n, c.Dim), o.Grid, func(s []float32) ([]float32, error) {
		L := b.Layer()
		if s != nil {
			var err error
			if L, err = fq(s, hf.AttnQ, hf.AttnK, hf.AttnV); err != nil {
				return nil, err
			}
		}
		r := make([]float32, n*c.Dim)
		return r, infer.Attention(c, &L, r, nil, acts.AttnIn, nseq, seqLen)
	}, guard)
	if err != nil {
		return err
	}
	rep.Stages = append(rep.Stages, qkv.Stage(l, PairQKV))
	// 2. v -> o, per kv channel (see the package doc for GQA).
	qDim, kvDim, hd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.HeadDim
	group := c.Heads / c.KVHeads
	var sKV, sO []float32
	if group > 1 && o.SkipGQA {
		rep.Stages = append(rep.Stages, StageReport{Layer: l, Pair: PairVO, Skipped: SkipGQAReason(kvDim, qDim)})
	} else {
		meanKV := GQAMeans(MeanAbs(acts.OIn, n, qDim), c.Heads, c.KVHeads, hd)
		expand := func(s []float32) []float32 { return GQAExpand(s, c.Heads, c.KVHeads, hd) }
		dO := b.W[hf.AttnO]
		vo, err := Search(meanKV, o.Grid, func(s []float32) ([]float32, error) {
			w := dO.W
			if s != nil {
				var err error
				if w, err = FakeQuant(dO.W, dO.R, dO.C, expand(s), o); err != nil {
					return nil, err
				}
			}
			r := make([]float32, n*c.Dim)
			infer.NewDense(w, dO.R, dO.C).MatMul(r, acts.OIn, n)
			return r, nil
		}, nil)
		if err != nil {
			return err
		}
		sKV = vo.Scales
		sO = expand(sKV)
		rep.Stages = append(rep.Stages, vo.Stage(l, PairVO))
	}
	// 3. post_attention_layernorm -> gate, up, inspecting the MLP output.
	gu, err := Search(MeanAbs(acts.FFNIn, n, c.Dim), o.Grid, func(s []float32) ([]float32, error) {
		L := b.Layer()
		if s != nil {
			var err error
			if L, err = fq(s, hf.FFNGate, hf.FFNUp); err != nil {
				return nil, err
			}
		}
		r := make([]float32, n*c.Dim)
		return r, infer.MLP(c, &L, r, nil, acts.FFNIn, n)
	}, nil)
	if err != nil {
		return err
	}
	rep.Stages = append(rep.Stages, gu.Stage(l, PairGateUp))
	// 4. up -> down.
	dD := b.W[hf.FFNDown]
	down, err := Search(MeanAbs(acts.DownIn, n, c.FFNDim), o.Grid, func(s []float32) ([]float32, error) {
		w := dD.W
		if s != nil {
			var err error
			if w, err = FakeQuant(dD.W, dD.R, dD.C, s, o); err != nil {
				return nil, err
			}
		}
		r := make([]float32, n*c.Dim)
		infer.NewDense(w, dD.R, dD.C).MatMul(r, acts.DownIn, n)
		return r, nil
	}, nil)
	if err != nil {
		return err
	}
	rep.Stages = append(rep.Stages, down.Stage(l, PairDown))

	// Apply the scales: fold into norms / preceding rows, scale columns and
	// the captured inputs.
	inScale, outScale := b.Apply(c, BlockScales{QKV: qkv.Scales, KV: sKV, O: sO, GateUp: gu.Scales, Down: down.Scales},
		[4][]float32{acts.AttnIn[:n*c.Dim], acts.OIn[:n*qDim], acts.FFNIn[:n*c.Dim], acts.DownIn[:n*c.FFNDim]})
	// Clip (not q, k with ReferenceQK) and quantize.
	for _, st := range calib.Stages {
		for _, sfx := range st.Linears() {
			if err := ctx.Err(); err != nil {
				return err
			}
			t0 := time.Now()
			d := b.W[sfx]
			name := hf.LayerTensorName(l, sfx)
			clipped := 0
			if o.Clips(sfx) {
				if clipped, err = o.ClipWeight(d.W, d.R, d.C, st.Input(&acts), n); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			g, err := quant.RTN(d.W, d.R, d.C, o.grouped())
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			deq, err := g.Dequantize()
			if err != nil {
				return err
			}
			res.Store(rep, b, l, sfx, g, deq, inScale, outScale, clipped, t0)
		}
	}
	res.Norms[hf.LayerTensorName(l, hf.AttnNorm)] = b.AttnNorm
	res.Norms[hf.LayerTensorName(l, hf.FFNNorm)] = b.FFNNorm
	// Next block's input: this block quantized (scaled basis, same function).
	L = b.Layer()
	return infer.BlockForward(c, &L, x, nseq, seqLen, nil)
}

// SkipGQAReason is StageReport.Skipped for v->o under SkipGQA.
func SkipGQAReason(kvDim, qDim int) string {
	return fmt.Sprintf("v_proj has %d outputs, o_proj %d inputs (SkipGQA)", kvDim, qDim)
}

// qkGuard returns the q/k guard of the block's input_layernorm->q,k,v
// search (nil with ReferenceQK), acts being the float block's activations
// on the calibration inputs (n rows, nseq samples of seqLen tokens): q_proj's
// and k_proj's errors on the guard rows (Options.SampleRows of the
// attention input) and the attention output's error over all calibration
// tokens, each with q, k and v stored as the walk stores them under the
// tried scales.
func (b *Block) qkGuard(c *infer.Config, acts *infer.BlockActivations, n, nseq, seqLen int, o Options) (*Guard, error) {
	names := o.QKGuard()
	if names == nil {
		return nil, nil
	}
	xg := o.SampleRows(acts.AttnIn, n, c.Dim)
	ng := len(xg) / c.Dim
	matmul := func(w []float32, rows int, x []float32) []float32 {
		r := make([]float32, ng*rows)
		infer.NewDense(w, rows, c.Dim).MatMul(r, x, ng)
		return r
	}
	g := &Guard{Linears: names, RTNErr: make([]float64, len(names))}
	refs := make([][]float32, len(names))
	for j, sfx := range names {
		d := b.W[sfx]
		refs[j] = matmul(d.W, d.R, xg)
		deq, err := FakeQuant(d.W, d.R, d.C, nil, o)
		if err != nil {
			return nil, err
		}
		g.RTNErr[j] = mse(matmul(deq, d.R, xg), refs[j])
	}
	L := b.Layer()
	org := make([]float32, n*c.Dim)
	if err := infer.Attention(c, &L, org, nil, acts.AttnIn, nseq, seqLen); err != nil {
		return nil, err
	}
	g.Eval = func(s []float32, bound []float64) ([]float64, float64, error) {
		// The stored weights, as quantizeBlock makes them after Apply:
		// columns scaled, clipped on the scaled rows (the rows Clip samples
		// from the scaled inputs), quantized. Each guarded linear is
		// measured as soon as it is stored, so a point over its bound
		// stops early.
		xs := ScaleRows(xg, s)
		L := b.Layer()
		errs := make([]float64, len(names))
		for i := range errs {
			errs[i] = math.Inf(1)
		}
		for _, sfx := range []string{hf.AttnQ, hf.AttnK, hf.AttnV} {
			d := b.W[sfx]
			ws := ScaleCols(d.W, s)
			if o.Clips(sfx) {
				if _, err := o.ClipWeight(ws, d.R, d.C, xs, ng); err != nil {
					return nil, 0, err
				}
			}
			deq, err := FakeQuant(ws, d.R, d.C, nil, o)
			if err != nil {
				return nil, 0, err
			}
			if j := slices.Index(names, sfx); j >= 0 {
				errs[j] = mse(matmul(deq, d.R, xs), refs[j])
				if bound != nil && errs[j] > bound[j] {
					return errs, math.Inf(1), nil
				}
			}
			f, _ := calib.LinearField(&L, sfx)
			*f = infer.NewDense(ScaleRows(deq, s), d.R, d.C) // the original basis
		}
		out := make([]float32, n*c.Dim)
		if err := infer.Attention(c, &L, out, nil, acts.AttnIn, nseq, seqLen); err != nil {
			return nil, 0, err
		}
		return errs, mse(out, org), nil
	}
	return g, nil
}

// GQAMeans averages o_proj's per-input-channel activation means over the
// query heads that share each KV head: the per-channel statistic of v_proj's
// outputs, whose scales o_proj's inputs then repeat (see the package doc).
func GQAMeans(meanO []float64, heads, kvHeads, hd int) []float64 {
	group := heads / kvHeads
	out := make([]float64, kvHeads*hd)
	for h := 0; h < heads; h++ {
		for i := 0; i < hd; i++ {
			out[(h/group)*hd+i] += meanO[h*hd+i] / float64(group)
		}
	}
	return out
}

// GQAExpand repeats per-KV-channel scales for every query head of the
// KV head's group: o_proj's input scales.
func GQAExpand(s []float32, heads, kvHeads, hd int) []float32 {
	group := heads / kvHeads
	e := make([]float32, heads*hd)
	for h := 0; h < heads; h++ {
		copy(e[h*hd:(h+1)*hd], s[(h/group)*hd:(h/group+1)*hd])
	}
	return e
}

// BlockScales are the scales a block's search chose, per input channel: of
// q/k/v, of o_proj (O: KV expanded to the query heads; KV is folded into
// v_proj's rows; both nil when v->o was skipped), of gate/up and of down.
type BlockScales struct{ QKV, KV, O, GateUp, Down []float32 }

// Apply folds s into the block: norms and preceding rows divided, the
// scaled linears' columns multiplied, so the block computes the same
// function; the captured stage inputs xs (by calib.Stage, rows of each
// stage's width) are divided to stay the inputs of the scaled linears. It
// returns each linear's input and output scales by Hugging Face suffix.
func (b *Block) Apply(c *infer.Config, s BlockScales, xs [4][]float32) (in, out map[string][]float32) {
	scaleCols := func(d *infer.Dense, v []float32) {
		infer.ParallelFor(d.R, d.C, func(r0, r1 int) {
			for i := r0 * d.C; i < r1*d.C; i++ {
				d.W[i] *= v[i%d.C]
			}
		})
	}
	divRows := func(d *infer.Dense, v []float32) {
		infer.ParallelFor(d.R, d.C, func(r0, r1 int) {
			for i := r0 * d.C; i < r1*d.C; i++ {
				d.W[i] /= v[i/d.C]
			}
		})
	}
	divInput := func(x []float32, v []float32) {
		for i := range x {
			x[i] /= v[i%len(v)]
		}
	}
	for j := range b.AttnNorm {
		b.AttnNorm[j] /= s.QKV[j]
		b.FFNNorm[j] /= s.GateUp[j]
	}
	for _, sfx := range []string{hf.AttnQ, hf.AttnK, hf.AttnV} {
		scaleCols(b.W[sfx], s.QKV)
	}
	divInput(xs[calib.StageQKV], s.QKV)
	if s.KV != nil {
		divRows(b.W[hf.AttnV], s.KV)
		scaleCols(b.W[hf.AttnO], s.O)
		divInput(xs[calib.StageO], s.O)
	}
	scaleCols(b.W[hf.FFNGate], s.GateUp)
	scaleCols(b.W[hf.FFNUp], s.GateUp)
	divInput(xs[calib.StageGateUp], s.GateUp)
	divRows(b.W[hf.FFNUp], s.Down)
	scaleCols(b.W[hf.FFNDown], s.Down)
	divInput(xs[calib.StageDown], s.Down)
	in = map[string][]float32{hf.AttnQ: s.QKV, hf.AttnK: s.QKV, hf.AttnV: s.QKV, hf.AttnO: s.O,
		hf.FFNGate: s.GateUp, hf.FFNUp: s.GateUp, hf.FFNDown: s.Down}
	out = map[string][]float32{hf.AttnV: s.KV, hf.FFNUp: s.Down}
	return in, out
}
