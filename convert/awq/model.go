package awq

import (
	"context"
	"fmt"
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
}

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
	report := func(pair string, alpha, loss, rtn float64, skipped string) {
		rep.Stages = append(rep.Stages, StageReport{Layer: l, Pair: pair, Alpha: alpha, Loss: loss, RTNLoss: rtn, Skipped: skipped})
	}
	// 1. input_layernorm -> q, k, v, inspecting the attention output.
	sQKV, a, loss, rtn, err := Search(MeanAbs(acts.AttnIn, n, c.Dim), o.Grid, func(s []float32) ([]float32, error) {
		L := b.Layer()
		if s != nil {
			var err error
			if L, err = fq(s, hf.AttnQ, hf.AttnK, hf.AttnV); err != nil {
				return nil, err
			}
		}
		r := make([]float32, n*c.Dim)
		return r, infer.Attention(c, &L, r, nil, acts.AttnIn, nseq, seqLen)
	})
	if err != nil {
		return err
	}
	report("input_layernorm->q,k,v", a, loss, rtn, "")
	// 2. v -> o, per kv channel (see the package doc for GQA).
	qDim, kvDim, hd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.HeadDim
	group := c.Heads / c.KVHeads
	var sKV, sO []float32
	if group > 1 && o.SkipGQA {
		report("v->o", 0, 0, 0, fmt.Sprintf("v_proj has %d outputs, o_proj %d inputs (SkipGQA)", kvDim, qDim))
	} else {
		meanO := MeanAbs(acts.OIn, n, qDim)
		meanKV := make([]float64, kvDim)
		for h := 0; h < c.Heads; h++ {
			for i := 0; i < hd; i++ {
				meanKV[(h/group)*hd+i] += meanO[h*hd+i] / float64(group)
			}
		}
		expand := func(s []float32) []float32 {
			e := make([]float32, qDim)
			for h := 0; h < c.Heads; h++ {
				copy(e[h*hd:(h+1)*hd], s[(h/group)*hd:(h/group+1)*hd])
			}
			return e
		}
		dO := b.W[hf.AttnO]
		sKV, a, loss, rtn, err = Search(meanKV, o.Grid, func(s []float32) ([]float32, error) {
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
		})
		if err != nil {
			return err
		}
		sO = expand(sKV)
		report("v->o", a, loss, rtn, "")
	}
	// 3. post_attention_layernorm -> gate, up, inspecting the MLP output.
	sGU, a, loss, rtn, err := Search(MeanAbs(acts.FFNIn, n, c.Dim), o.Grid, func(s []float32) ([]float32, error) {
		L := b.Layer()
		if s != nil {
			var err error
			if L, err = fq(s, hf.FFNGate, hf.FFNUp); err != nil {
				return nil, err
			}
		}
		r := make([]float32, n*c.Dim)
		return r, infer.MLP(c, &L, r, nil, acts.FFNIn, n)
	})
	if err != nil {
		return err
	}
	report("post_attention_layernorm->gate,up", a, loss, rtn, "")
	// 4. up -> down.
	dD := b.W[hf.FFNDown]
	sDown, a, loss, rtn, err := Search(MeanAbs(acts.DownIn, n, c.FFNDim), o.Grid, func(s []float32) ([]float32, error) {
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
	})
	if err != nil {
		return err
	}
	report("up->down", a, loss, rtn, "")

	// Apply the scales: fold into norms / preceding rows, scale columns and
	// the captured inputs.
	scaleCols := func(d *infer.Dense, s []float32) {
		for i := range d.W {
			d.W[i] *= s[i%d.C]
		}
	}
	divRows := func(d *infer.Dense, s []float32) {
		for i := range d.W {
			d.W[i] /= s[i/d.C]
		}
	}
	divInput := func(x []float32, cols int, s []float32) {
		for i := range x[:n*cols] {
			x[i] /= s[i%cols]
		}
	}
	for j := range b.AttnNorm {
		b.AttnNorm[j] /= sQKV[j]
		b.FFNNorm[j] /= sGU[j]
	}
	for _, sfx := range []string{hf.AttnQ, hf.AttnK, hf.AttnV} {
		scaleCols(b.W[sfx], sQKV)
	}
	divInput(acts.AttnIn, c.Dim, sQKV)
	if sKV != nil {
		divRows(b.W[hf.AttnV], sKV)
		scaleCols(b.W[hf.AttnO], sO)
		divInput(acts.OIn, qDim, sO)
	}
	scaleCols(b.W[hf.FFNGate], sGU)
	scaleCols(b.W[hf.FFNUp], sGU)
	divInput(acts.FFNIn, c.Dim, sGU)
	divRows(b.W[hf.FFNUp], sDown)
	scaleCols(b.W[hf.FFNDown], sDown)
	divInput(acts.DownIn, c.FFNDim, sDown)

	inScale := map[string][]float32{hf.AttnQ: sQKV, hf.AttnK: sQKV, hf.AttnV: sQKV, hf.AttnO: sO,
		hf.FFNGate: sGU, hf.FFNUp: sGU, hf.FFNDown: sDown}
	outScale := map[string][]float32{hf.AttnV: sKV, hf.FFNUp: sDown}
	// Clip (not q, k) and quantize.
	for _, st := range calib.Stages {
		for _, sfx := range st.Linears() {
			if err := ctx.Err(); err != nil {
				return err
			}
			t0 := time.Now()
			d := b.W[sfx]
			name := hf.LayerTensorName(l, sfx)
			clipped := 0
			if !o.NoClip && sfx != hf.AttnQ && sfx != hf.AttnK {
				if clipped, err = Clip(d.W, d.R, d.C, st.Input(&acts), n, o); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			g, err := quant.RTN(d.W, d.R, d.C, o.grouped())
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			res.Weights[name] = g
			if s := inScale[sfx]; s != nil {
				res.InScales[name] = s
			}
			if s := outScale[sfx]; s != nil {
				res.OutScales[name] = s
			}
			deq, err := g.Dequantize()
			if err != nil {
				return err
			}
			b.W[sfx] = infer.NewDense(deq, d.R, d.C)
			rep.Layers = append(rep.Layers, LayerReport{Name: name, Rows: d.R, Cols: d.C, Clipped: clipped, Seconds: time.Since(t0).Seconds()})
		}
	}
	res.Norms[hf.LayerTensorName(l, hf.AttnNorm)] = b.AttnNorm
	res.Norms[hf.LayerTensorName(l, hf.FFNNorm)] = b.FFNNorm
	// Next block's input: this block quantized (scaled basis, same function).
	L = b.Layer()
	return infer.BlockForward(c, &L, x, nseq, seqLen, nil)
}
