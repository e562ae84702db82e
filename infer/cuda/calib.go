//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"time"
	"unsafe"

	"gorgonia.org/cu"

	"qllama/convert/calib"
	"qllama/convert/gptq"
	"qllama/convert/quant"
	"qllama/format/hf"
	"qllama/infer"
)

// Calibration stages as calibHook.stage values (calib.Stage's order).
const (
	calibQKV    = int(calib.StageQKV)
	calibO      = int(calib.StageO)
	calibGateUp = int(calib.StageGateUp)
	calibDown   = int(calib.StageDown)
)

// calibRows is about how many calibration tokens one forward step of the
// calibrator runs (whole samples; at least one).
const calibRows = 16384

// calibHook turns a forward step of the tensor-core path into a
// calibration pass over one batch of samples: the step starts from the
// hidden states at in instead of token embeddings, adds XᵀX of the input of
// stage to hsum (cols x cols float32, X in FP16 as the linears read it), and
// either stops there or, with stage < 0, runs the whole block and writes the
// output hidden states back over in.
//
// AWQ (awq.go) adds two optional hooks: with awq set, every stage's capture
// point also records that stage's FP16 input statistics (awqCapture); with
// out set, the step stops after the linear ending the sub-block outAt
// (calibO: o_proj, calibDown: down_proj) and writes that linear's output,
// before the residual add, to out (float32 rows) instead.
type calibHook struct {
	in    cu.DevicePtr
	stage int
	hsum  cu.DevicePtr
	awq   *awqStats
	out   cu.DevicePtr
	outAt int
}

// calibrator runs one decoder block at a time over every calibration sample
// on the GPU for QuantizeGPTQ: the hidden states of all samples stay on the
// device ([samples*seqLen][Dim] float32), the block's linears are FP16
// copies of the (already quantized, dequantized) float32 weights, and each
// stage's Hessian sum is accumulated by cuBLAS from FP16 inputs with float32
// accumulation, as the reference GPTQ does with an FP16 model.
type calibrator struct {
	d            *Device
	g            *Model
	nseq, seqLen int
	batch        int
	hidden       cu.DevicePtr
	hsum         cu.DevicePtr
	caches       []*Cache
	scratch      cu.DevicePtr // float32 staging of one linear's upload
	scratchLen   int64
}

// newCalibrator uploads x, the embedded samples ([nseq*seqLen][Dim]), and
// prepares a one-block model of configuration c.
func (d *Device) newCalibrator(c *infer.Config, x []float32, nseq, seqLen int) (k *calibrator, err error) {
	defer d.bind()()
	c1 := *c
	c1.Layers, c1.Vocab = 1, 1
	c1.MaxSeq = max(c.MaxSeq, seqLen)
	g := &Model{Config: c1, d: d, UseGemm: true, graphs: map[graphKey]graph{}, layers: make([]layer, 1)}
	if err := g.SetKVType(KVF32); err != nil { // calibration statistics stay float32
		return nil, err
	}
	k = &calibrator{d: d, g: g, nseq: nseq, seqLen: seqLen, batch: max(1, min(nseq, calibRows/seqLen))}
	defer func() {
		if err != nil {
			k.closeLocked()
		}
	}()
	if _, err := d.blasHandle(); err != nil {
		return nil, err
	}
	// A one-row float32 embedding and head: never read in calibration
	// steps, present so that the step's bookkeeping has its usual shapes.
	dummy := &infer.Dense{W: make([]float32, c.Dim), R: 1, C: c.Dim}
	if g.embed, err = d.uploadWeight("calibration embedding", dummy); err != nil {
		return nil, err
	}
	g.output = g.embed
	g.weights = append(g.weights, g.embed)
	if g.invFreq, err = upload(d, c.RopeInvFreq, "rope frequencies"); err != nil {
		return nil, err
	}
	g.vecs = append(g.vecs, g.invFreq)
	ones := make([]float32, c.Dim)
	for i := range ones {
		ones[i] = 1
	}
	if g.norm, err = upload(d, ones, "output norm"); err != nil {
		return nil, err
	}
	g.vecs = append(g.vecs, g.norm)
	if k.hidden, err = upload(d, x, fmt.Sprintf("the hidden states of %d calibration samples of %d tokens", nseq, seqLen)); err != nil {
		return nil, err
	}
	maxCols := int64(max(c.Dim, c.FFNDim, c.Heads*c.HeadDim))
	if k.hsum, err = d.alloc(maxCols*maxCols*4, "a Hessian"); err != nil {
		return nil, err
	}
	for range k.batch {
		cache, err := g.NewCache(seqLen)
		if err != nil {
			return nil, err
		}
		k.caches = append(k.caches, cache)
	}
	return k, nil
}

func (k *calibrator) close() {
	defer k.d.bind()()
	k.closeLocked()
}

func (k *calibrator) closeLocked() {
	for _, c := range k.caches {
		c.Free()
	}
	k.caches = nil
	for _, p := range []cu.DevicePtr{k.hidden, k.hsum, k.scratch} {
		if p != 0 {
			cu.MemFree(p)
		}
	}
	k.hidden, k.hsum, k.scratch = 0, 0, 0
	k.g.closeLocked()
}

// setLinear makes dst an FP16 device copy of the float32 weights w
// (rows x cols), reusing dst's memory when it has one.
func (k *calibrator) setLinear(dst **weight, name string, w []float32, rows, cols int) error {
	n := int64(rows) * int64(cols)
	if int64(len(w)) != n {
		return fmt.Errorf("cuda: calibration: %s has %d values for [%d %d]", name, len(w), rows, cols)
	}
	if *dst == nil {
		p, err := k.d.alloc(2*n, name+" (f16)")
		if err != nil {
			return err
		}
		*dst = &weight{format: fmtF16, desc: "f16", rows: rows, cols: cols, data: p, bytes: 2 * n, ptrs: []cu.DevicePtr{p}}
		k.g.weights = append(k.g.weights, *dst)
	}
	if err := k.g.ensure(&k.scratch, &k.scratchLen, 4*n, "a float32 weight staging buffer"); err != nil {
		return err
	}
	if err := k.d.fence(); err != nil {
		return err
	}
	if err := k.d.st.upload(k.scratch, unsafe.Pointer(&w[0]), 4*n); err != nil {
		return fmt.Errorf("cuda: calibration: uploading %s: %w", name, err)
	}
	return k.d.launch("to_half", dim3{x: int((n + 255) / 256)}, 256, 0, k.scratch, (*dst).data, n)
}

// setBlock makes L (float32 linears) the block the following passes run.
func (k *calibrator) setBlock(l int, L *infer.Layer) error {
	defer k.d.bind()()
	G := &k.g.layers[0]
	for _, sfx := range []string{hf.AttnQ, hf.AttnK, hf.AttnV, hf.AttnO, hf.FFNGate, hf.FFNUp, hf.FFNDown} {
		if err := k.setLinearLocked(l, L, G, sfx); err != nil {
			return err
		}
	}
	for _, v := range []struct {
		dst *cu.DevicePtr
		w   []float32
	}{{&G.attnNorm, L.AttnNorm}, {&G.ffnNorm, L.FFNNorm}} {
		if *v.dst == 0 {
			p, err := k.d.alloc(int64(len(v.w))*4, "a norm")
			if err != nil {
				return err
			}
			*v.dst = p
			k.g.vecs = append(k.g.vecs, p)
		}
		if err := k.d.fence(); err != nil {
			return err
		}
		if err := k.d.st.upload(*v.dst, unsafe.Pointer(&v.w[0]), int64(len(v.w))*4); err != nil {
			return fmt.Errorf("cuda: calibration: uploading a norm: %w", err)
		}
	}
	// The uploads read host memory asynchronously: wait before the caller
	// may change it.
	return k.d.st.sync()
}

// setLinearLocked uploads the linear of L with Hugging Face suffix sfx into
// the device block G.
func (k *calibrator) setLinearLocked(l int, L *infer.Layer, G *layer, sfx string) error {
	name := hf.LayerTensorName(l, sfx)
	field, err := calib.LinearField(L, sfx)
	if err != nil {
		return err
	}
	d, err := calib.DenseWeight(*field, name)
	if err != nil {
		return err
	}
	dst := map[string]**weight{hf.AttnQ: &G.q, hf.AttnK: &G.k, hf.AttnV: &G.v, hf.AttnO: &G.o,
		hf.FFNGate: &G.gate, hf.FFNUp: &G.up, hf.FFNDown: &G.down}[sfx]
	if err := k.setLinear(dst, name, d.W, d.R, d.C); err != nil {
		return err
	}
	return k.d.st.sync()
}

// pass runs the current block over every sample: with stage >= 0 it
// accumulates that stage's Hessian sum into k.hsum (zeroed first) and stops
// there; with stage < 0 it replaces the hidden states by the block's output.
func (k *calibrator) pass(ctx context.Context, stage int, cols int64) error {
	defer k.d.bind()()
	g := k.g
	if stage >= 0 {
		if err := k.d.fence(); err != nil {
			return err
		}
		if err := k.d.st.zero(k.hsum, cols*cols*4); err != nil {
			return err
		}
	}
	dim := int64(g.Dim)
	if err := k.batches(ctx, func(row0 int64) *calibHook {
		return &calibHook{in: k.hidden + cu.DevicePtr(row0*dim*4), stage: stage, hsum: k.hsum}
	}); err != nil {
		return fmt.Errorf("cuda: calibration pass: %w", err)
	}
	return k.d.st.sync()
}

// batches runs the block over every sample, one forward step per batch of
// k.batch samples, each with the hook hook returns for the batch's first
// hidden-state row (the device must be bound).
func (k *calibrator) batches(ctx context.Context, hook func(row0 int64) *calibHook) error {
	g := k.g
	zeros := make([]int, k.seqLen)
	for s0 := 0; s0 < k.nseq; s0 += k.batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		nb := min(k.batch, k.nseq-s0)
		steps := make([]Step, nb)
		for i := range steps {
			k.caches[i].Len = 0
			steps[i] = Step{Cache: k.caches[i], Tokens: zeros}
		}
		g.calib = hook(int64(s0) * int64(k.seqLen))
		_, err := g.run(steps)
		g.calib = nil
		if err != nil {
			return err
		}
	}
	return nil
}

// diag returns the diagonal of the Hessian sum (cols values).
func (k *calibrator) diag(cols int64) ([]float64, error) {
	defer k.d.bind()()
	if err := k.g.ensure(&k.scratch, &k.scratchLen, cols*4, "a Hessian diagonal"); err != nil {
		return nil, err
	}
	if err := k.d.launch("strided_copy", dim3{x: int((cols + 255) / 256)}, 256, 0, k.hsum, k.scratch, cols, cols+1); err != nil {
		return nil, err
	}
	if err := k.d.st.sync(); err != nil {
		return nil, err
	}
	out := make([]float32, cols)
	if err := download(out, k.scratch); err != nil {
		return nil, err
	}
	d := make([]float64, cols)
	for i, v := range out {
		d[i] = float64(v)
	}
	return d, nil
}

// QuantizeGPTQ is gptq.QuantizeModel on the GPU: the same true-sequential
// walk (block by block; q/k/v, o, gate/up, down in turn, each stage's
// inputs computed with the earlier linears already quantized), the same
// options and results, with the blocks run, the Hessians accumulated and
// GPTQ solved on the device. Only the embedding of the samples and the
// assembly of the results happen on the host. Its signature matches
// convert.Options.GPTQ.
func (d *Device) QuantizeGPTQ(ctx context.Context, m *infer.Model, set *calib.Set, opt gptq.ModelOptions) (map[string]*quant.Grouped, *gptq.Report, error) {
	start := time.Now()
	if _, err := opt.Options.WithDefaults(); err != nil {
		return nil, nil, err // before the uploads, as the CPU walk
	}
	if err := m.Check(); err != nil {
		return nil, nil, fmt.Errorf("gptq: %w", err)
	}
	x, err := calib.Embed(m, set)
	if err != nil {
		return nil, nil, fmt.Errorf("gptq: %w", err)
	}
	c := &m.Config
	k, err := d.newCalibrator(c, x, len(set.Samples), set.Info.SeqLen)
	if err != nil {
		return nil, nil, fmt.Errorf("gptq: %w", err)
	}
	defer k.close()
	ntok := len(set.Samples) * set.Info.SeqLen
	out := map[string]*quant.Grouped{}
	rep := &gptq.Report{Calib: set.Info, Options: opt.Options, Importance: calib.Importance{}}
	total, done := 7*len(m.Layers), 0
	for l := range m.Layers {
		L := m.Layers[l] // a copy: quantized linears replace its fields
		if err := k.setBlock(l, &L); err != nil {
			return nil, nil, fmt.Errorf("gptq: layer %d: %w", l, err)
		}
		for _, stage := range calib.Stages {
			cols := int64(stage.Cols(c))
			if err := k.pass(ctx, int(stage), cols); err != nil {
				return nil, nil, fmt.Errorf("gptq: layer %d: %w", l, err)
			}
			dg, err := k.diag(cols)
			if err != nil {
				return nil, nil, err
			}
			imp := make([]float64, cols)
			for i, v := range dg {
				imp[i] = v / float64(ntok)
			}
			for _, sfx := range stage.Linears() {
				name, err := gptq.QuantizeLinear(&L, l, sfx, out, rep, imp, func(w []float32, rows, cols int) (*quant.Grouped, gptq.Stats, error) {
					return d.GPTQ(ctx, w, rows, cols, k.hsum, ntok, opt.Options)
				})
				if err != nil {
					return nil, nil, err
				}
				// The block on the device sees the quantized weights too.
				func() {
					defer d.bind()()
					err = k.setLinearLocked(l, &L, &k.g.layers[0], sfx)
				}()
				if err != nil {
					return nil, nil, fmt.Errorf("gptq: %s: %w", name, err)
				}
				done++
				if opt.Progress != nil {
					opt.Progress(done, total, name)
				}
			}
		}
		// Inputs of the next block: this block fully quantized.
		if err := k.pass(ctx, -1, 0); err != nil {
			return nil, nil, fmt.Errorf("gptq: layer %d: %w", l, err)
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return out, rep, nil
}
