package gptq

import (
	"context"
	"fmt"
	"time"

	"qllama/convert/calib"
	"qllama/convert/quant"
	"qllama/format/hf"
	"qllama/infer"
)

// LayerReport describes the quantization of one linear layer.
type LayerReport struct {
	Name       string  `json:"name"`
	Rows       int     `json:"rows"`
	Cols       int     `json:"cols"`
	Damp       float64 `json:"damp"`
	DampRaises int     `json:"damp_raises,omitempty"`
	DeadCols   int     `json:"dead_cols,omitempty"`
	Loss       float64 `json:"loss"`
	Seconds    float64 `json:"seconds"`
}

// Report describes a QuantizeModel run.
type Report struct {
	Calib   calib.Info    `json:"calib"`
	Options Options       `json:"options"`
	Layers  []LayerReport `json:"layers"`
	Seconds float64       `json:"seconds"`
	// Importance is the mean x² per input column of every linear, taken
	// from its Hessian (inputs after the already-quantized layers).
	Importance calib.Importance `json:"-"`
}

// ModelOptions add the model walk to the per-layer Options.
type ModelOptions struct {
	Options
	// Progress, if set, is called after each linear layer is quantized
	// with the number done, the total and the layer's name.
	Progress func(done, total int, name string)
}

// QuantizeModel quantizes every linear of m's decoder blocks with GPTQ,
// true-sequentially: block by block, and inside a block stage by stage (q/k/v,
// o, gate/up, down), the Hessian of each stage is accumulated from inputs
// computed with every earlier linear already replaced by its quantized
// version. m is not modified; its linears must be *infer.Dense.
//
// Memory: the hidden states of all calibration tokens ([N·L, Dim] float32,
// 2 GiB for 128 x 2048 tokens at Llama-3.2-1B's Dim 2048) plus one block's
// captured activations for a batch of about 4096 rows and one Hessian per
// stage (cols² float64: 512 MiB for down_proj's 8192 columns). Fewer samples
// shrink the first term proportionally.
//
// The result maps Hugging Face tensor names (model.layers.N.self_attn.q_proj.weight...)
// to grouped weights in Hugging Face row order.
func QuantizeModel(ctx context.Context, m *infer.Model, set *calib.Set, opt ModelOptions) (map[string]*quant.Grouped, *Report, error) {
	start := time.Now()
	if _, err := opt.Options.withDefaults(); err != nil {
		return nil, nil, err
	}
	if err := m.Check(); err != nil {
		return nil, nil, fmt.Errorf("gptq: %w", err)
	}
	x, err := calib.Embed(m, set)
	if err != nil {
		return nil, nil, fmt.Errorf("gptq: %w", err)
	}
	c := &m.Config
	seqLen := set.Info.SeqLen
	nseq := len(set.Samples)
	batch := calib.BatchSamples(seqLen)
	out := map[string]*quant.Grouped{}
	rep := &Report{Calib: set.Info, Options: opt.Options, Importance: calib.Importance{}}
	total := 7 * len(m.Layers)
	done := 0
	var acts infer.BlockActivations
	for l := range m.Layers {
		L := m.Layers[l] // a copy: quantized linears replace its fields
		for _, stage := range calib.Stages {
			cols := stage.Cols(c)
			h := NewHessian(cols)
			for s0 := 0; s0 < nseq; s0 += batch {
				if err := ctx.Err(); err != nil {
					return nil, nil, err
				}
				nb := min(batch, nseq-s0)
				xb := append([]float32(nil), x[s0*seqLen*c.Dim:(s0+nb)*seqLen*c.Dim]...)
				if err := infer.BlockForward(c, &L, xb, nb, seqLen, &acts); err != nil {
					return nil, nil, fmt.Errorf("gptq: layer %d: %w", l, err)
				}
				if err := h.Add(stage.Input(&acts), nb*seqLen); err != nil {
					return nil, nil, fmt.Errorf("gptq: layer %d: %w", l, err)
				}
			}
			imp := h.Importance()
			for _, sfx := range stage.Linears() {
				name, err := QuantizeLinear(&L, l, sfx, out, rep, imp, func(w []float32, rows, cols int) (*quant.Grouped, Stats, error) {
					return Quantize(ctx, w, rows, cols, h, opt.Options)
				})
				if err != nil {
					return nil, nil, err
				}
				done++
				if opt.Progress != nil {
					opt.Progress(done, total, name)
				}
			}
		}
		// Inputs of the next block: this block fully quantized.
		for s0 := 0; s0 < nseq; s0 += batch {
			nb := min(batch, nseq-s0)
			if err := infer.BlockForward(c, &L, x[s0*seqLen*c.Dim:(s0+nb)*seqLen*c.Dim], nb, seqLen, nil); err != nil {
				return nil, nil, fmt.Errorf("gptq: layer %d: %w", l, err)
			}
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return out, rep, nil
}

// QuantizeLinear quantizes the linear of block l (in L) with Hugging Face
// suffix sfx by solve, replaces it in L by its dequantized weights (so that
// later stages see it quantized), and records the result in out and rep
// (with the stage's importance imp). It returns the tensor's name. Both the
// CPU walk and the GPU one (infer/cuda) use it.
func QuantizeLinear(L *infer.Layer, l int, sfx string, out map[string]*quant.Grouped, rep *Report, imp []float64,
	solve func(w []float32, rows, cols int) (*quant.Grouped, Stats, error)) (string, error) {
	name := hf.LayerTensorName(l, sfx)
	t0 := time.Now()
	field, err := calib.LinearField(L, sfx)
	if err != nil {
		return name, err
	}
	d, err := calib.DenseWeight(*field, name)
	if err != nil {
		return name, fmt.Errorf("gptq: %w", err)
	}
	g, st, err := solve(d.W, d.R, d.C)
	if err != nil {
		return name, fmt.Errorf("gptq: %s: %w", name, err)
	}
	deq, err := g.Dequantize()
	if err != nil {
		return name, fmt.Errorf("gptq: %s: %w", name, err)
	}
	*field = infer.NewDense(deq, d.R, d.C)
	out[name] = g
	rep.Importance[name] = imp
	rep.Layers = append(rep.Layers, LayerReport{Name: name, Rows: d.R, Cols: d.C, Damp: st.Damp,
		DampRaises: st.DampRaises, DeadCols: st.DeadCols, Loss: st.Loss, Seconds: time.Since(t0).Seconds()})
	return name, nil
}
