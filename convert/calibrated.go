package convert

import (
	"context"
	"fmt"
	"io"

	"qllama/convert/awq"
	"qllama/convert/calib"
	"qllama/convert/gptq"
	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
	"qllama/internal/progress"
)

// calibration is what GPTQ or AWQ chose for the model: grouped weights of
// every decoder-block linear (Hugging Face names and row order) and, for
// AWQ, the RMSNorm weights its scales were folded into.
type calibration struct {
	weights map[string]*quant.Grouped
	norms   map[string][]float32
	info    calib.Info
	awq     *awq.Result // nil for GPTQ
	// importance is the mean x² per input column of every linear, for
	// mixed-precision choices (Options.Importance writes it).
	importance calib.Importance
}

// effective returns a linear's quantized weight in the original basis (AWQ
// stores it scaled), to measure its error against the source.
func (c *calibration) effective(name string) ([]float32, error) {
	if c.awq != nil {
		return c.awq.Effective(name)
	}
	return c.weights[name].Dequantize()
}

// calibrate runs the policy's calibration method on the float model.
func calibrate(ctx context.Context, opt Options, pol policy, src *hf.Model, tok *tokenizer.Tokenizer) (*calibration, error) {
	m, err := infer.LoadHF(src)
	if err != nil {
		return nil, err
	}
	copt := calib.DefaultGPTQ
	if pol.calibrate == MethodAWQ {
		copt = calib.DefaultAWQ
	}
	if opt.CalibSamples > 0 {
		copt.Samples = opt.CalibSamples
	}
	if opt.CalibLen > 0 {
		copt.SeqLen = opt.CalibLen
	}
	copt.Seed = opt.CalibSeed
	set, err := calib.Load(ctx, opt.Calib, tok, copt)
	if err != nil {
		return nil, err
	}
	s := pol.linear
	var out io.Writer = opt.Progress
	total := 7 * m.Config.Layers
	bar := progress.New(out, int64(total), pol.calibrate+" layers", progress.Options{})
	last := 0
	tick := func(done, _ int, _ string) {
		bar.Add(int64(done - last))
		last = done
	}
	c := &calibration{info: set.Info}
	switch pol.calibrate {
	case MethodGPTQ:
		var rep *gptq.Report
		run := opt.GPTQ
		if run == nil {
			run = gptq.QuantizeModel
		}
		c.weights, rep, err = run(ctx, m, set, gptq.ModelOptions{
			Options:  gptq.Options{Bits: s.Bits, GroupSize: s.Group, Sym: s.Sym, ActOrder: opt.ActOrder, StaticGroups: true, Threads: opt.Threads},
			Progress: tick,
		})
		if rep != nil {
			c.importance = rep.Importance
		}
	case MethodAWQ:
		group := s.Group
		if group == 0 {
			group = -1 // per channel
		}
		var res *awq.Result
		var rep *awq.Report
		run := opt.AWQ
		if run == nil {
			run = awq.QuantizeModel
		}
		res, rep, err = run(ctx, m, set, awq.ModelOptions{Options: awq.Options{Bits: s.Bits, GroupSize: group, ReferenceQK: opt.AWQReferenceQK}, Progress: tick})
		if res != nil {
			c.weights, c.norms, c.awq = res.Weights, res.Norms, res
		}
		if rep != nil {
			c.importance = rep.Importance
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pol.calibrate, err)
	}
	bar.Finish()
	if opt.Importance != "" {
		if err := c.importance.WriteJSON(opt.Importance, c.info); err != nil {
			return nil, err
		}
	}
	// The stored layout has no g_idx: groups must be contiguous columns.
	for name, g := range c.weights {
		sameGroups := g.GroupSize == s.Group || (g.GroupSize == 0 && s.Group >= g.Cols) // a group as wide as the row is per channel
		if g.Bits != s.Bits || !sameGroups || g.Sym != s.Sym {
			return nil, fmt.Errorf("%s: %s came back as %d-bit group %d sym %v, want %s", pol.calibrate, name, g.Bits, g.GroupSize, g.Sym, s)
		}
		for col, gi := range g.GIdx {
			if s.Group > 0 && int(gi) != col/s.Group {
				return nil, fmt.Errorf("%s: %s has act-order groups (g_idx), which this file layout cannot store", pol.calibrate, name)
			}
		}
	}
	return c, nil
}

// kvs records the calibration in the file: the data (file, hash, windows)
// and the method's settings (GPTQ's act-order, AWQ's reference q/k walk).
func (c *calibration) kvs(method string, opt Options) []gguf.KV {
	kvs := []gguf.KV{
		{Key: "qllama.calib.method", Value: method},
		{Key: "qllama.calib.file", Value: c.info.File},
		{Key: "qllama.calib.sha256", Value: c.info.SHA256},
		{Key: "qllama.calib.samples", Value: uint32(c.info.Samples)},
		{Key: "qllama.calib.seq_len", Value: uint32(c.info.SeqLen)},
		{Key: "qllama.calib.seed", Value: uint64(c.info.Seed)},
	}
	switch method {
	case MethodGPTQ:
		kvs = append(kvs, gguf.KV{Key: "qllama.calib.act_order", Value: opt.ActOrder})
	case MethodAWQ:
		kvs = append(kvs, gguf.KV{Key: "qllama.calib.awq_reference_qk", Value: opt.AWQReferenceQK})
	}
	return kvs
}

// encodeGrouped stores precomputed grouped weights in the rtn layout, rows
// in output order (through src.perm for Q/K), and measures the error of the
// effective weight against the source.
func encodeGrouped(ctx context.Context, threads int, s Scheme, g *quant.Grouped, deq []float32, src *source, rows, cols int) (*encoded, error) {
	if g.Rows != rows || g.Cols != cols || len(deq) != rows*cols {
		return nil, fmt.Errorf("precomputed weight is [%d %d], want [%d %d]", g.Rows, g.Cols, rows, cols)
	}
	out := newGroupedOut(s, rows, cols)
	sums, err := chunkWork(ctx, threads, rows, cols, func(sc *scratch, lo, hi int, acc *errSums) error {
		w, _ := sc.grow((hi - lo) * cols)
		if err := src.rows(w, lo, hi); err != nil {
			return err
		}
		for r := lo; r < hi; r++ {
			p := r
			if src.perm != nil {
				p = src.perm[r]
			}
			out.put(r, g, p)
			acc.add(w[(r-lo)*cols:(r-lo+1)*cols], deq[p*cols:(p+1)*cols])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &encoded{data: out.data(), err: sums}, nil
}
