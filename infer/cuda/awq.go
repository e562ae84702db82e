//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"gorgonia.org/cu"

	"qllama/convert/awq"
	"qllama/convert/calib"
	"qllama/convert/quant"
	"qllama/format/hf"
	"qllama/infer"
)

// awqThreads is the block size of the awq.cu kernels (AWQ_THREADS).
const awqThreads = 128

// awqMaxClipGroup is the longest group the device clipping search takes (its
// dynamic shared memory holds two groups of float32); longer groups (one
// group per row of a wide linear) are clipped by awq's ClipWeight on the host.
const awqMaxClipGroup = 4096

// awqStats is calibHook's AWQ capture: at the capture point of stage s (a
// calib.Stage) with sums[s] set, the per-column sums of |x| and of x² of the
// stage's FP16 input (float64, cols each, in that order) are added to
// sums[s], and with rows[s] set, the input rows whose global index (row0 for
// the step's first row) is a multiple of step are copied (float32) to
// rows[s] at row index/step.
type awqStats struct {
	sums       [4]cu.DevicePtr
	rows       [4]cu.DevicePtr
	row0, step int64
}

// awqCapture launches the AWQ capture of a stage input (buf.xh, n rows of
// cols) for calibHook.
func (g *Model) awqCapture(a *awqStats, stage int, cols, n int64) error {
	if stage < 0 || stage >= len(a.sums) || a.sums[stage] == 0 {
		return nil
	}
	b := &g.buf
	gx := int((cols + awqThreads - 1) / awqThreads)
	if err := g.d.launch("awq_colstats", dim3{x: gx, y: int(min(n, 256))}, awqThreads, 0, b.xh, n, cols,
		a.sums[stage], a.sums[stage]+cu.DevicePtr(cols*8)); err != nil {
		return err
	}
	if a.rows[stage] == 0 {
		return nil
	}
	return g.d.launch("awq_gather_rows", dim3{x: gx, y: int(min(n, 65535))}, awqThreads, 0, b.xh, n, cols, a.row0, a.step, a.rows[stage])
}

// awqWalk holds the device state of QuantizeAWQ besides the calibrator.
type awqWalk struct {
	d *Device
	k *calibrator
	c *infer.Config
	o awq.Options
	// n calibration tokens; the clipping search uses nclip rows, every
	// step-th (awq.Clip's sampling).
	n, nclip, step int64
	ref, out       cu.DevicePtr // [n][Dim] float32: a sub-block's output, float and fake-quantized
	acc            cu.DevicePtr // one float64: a squared error sum
	sc             cu.DevicePtr // the scales being tried
	st             awqStats
	orig           map[string]cu.DevicePtr // float32 copies of the block's linears
	gram, best, xs cu.DevicePtr            // clipping: Gram matrices, chosen maxima, scaled input rows
	// The q/k guard (not with ReferenceQK): a float32 weight being
	// clipped or measured, the guarded linears' outputs on the guard rows
	// (nclip of them) with that weight and with the float weights.
	gw, gout cu.DevicePtr
	gref     map[string]cu.DevicePtr
	bufs     []cu.DevicePtr
}

// awqLinears are the linears of a block in calib.Stages order.
var awqLinears = []string{hf.AttnQ, hf.AttnK, hf.AttnV, hf.AttnO, hf.FFNGate, hf.FFNUp, hf.FFNDown}

// groupOf returns the effective group length for cols input columns.
func (w *awqWalk) groupOf(cols int) int {
	if gs := w.o.GroupSize; gs > 0 && gs < cols {
		return gs
	}
	return cols
}

func (d *Device) newAWQWalk(k *calibrator, c *infer.Config, o awq.Options) (w *awqWalk, err error) {
	defer d.bind()()
	n := int64(k.nseq) * int64(k.seqLen)
	step, nclip := o.ClipRows(int(n))
	w = &awqWalk{d: d, k: k, c: c, o: o, n: n, step: int64(step), nclip: int64(nclip), orig: map[string]cu.DevicePtr{}, gref: map[string]cu.DevicePtr{}}
	defer func() {
		if err != nil {
			w.closeLocked()
		}
	}()
	alloc := func(p *cu.DevicePtr, bytes int64, what string) error {
		q, err := d.alloc(bytes, what)
		if err != nil {
			return err
		}
		*p = q
		w.bufs = append(w.bufs, q)
		return nil
	}
	dim, qDim, ffn := int64(c.Dim), int64(c.Heads*c.HeadDim), int64(c.FFNDim)
	kvDim := int64(c.KVHeads * c.HeadDim)
	maxCols := max(dim, qDim, ffn)
	for _, a := range []struct {
		p     *cu.DevicePtr
		bytes int64
		what  string
	}{
		{&w.ref, n * dim * 4, "the float sub-block outputs"},
		{&w.out, n * dim * 4, "the fake-quantized sub-block outputs"},
		{&w.acc, 8, "an error sum"},
		{&w.sc, maxCols * 4, "AWQ scales"},
	} {
		if err := alloc(a.p, a.bytes, a.what); err != nil {
			return nil, err
		}
	}
	shapes := map[string][2]int64{hf.AttnQ: {qDim, dim}, hf.AttnK: {kvDim, dim}, hf.AttnV: {kvDim, dim}, hf.AttnO: {dim, qDim},
		hf.FFNGate: {ffn, dim}, hf.FFNUp: {ffn, dim}, hf.FFNDown: {dim, ffn}}
	var gram, best int64
	for _, sfx := range awqLinears {
		s := shapes[sfx]
		var p cu.DevicePtr
		if err := alloc(&p, s[0]*s[1]*4, hf.LayerTensorName(0, sfx)+" (float32 copy)"); err != nil {
			return nil, err
		}
		w.orig[sfx] = p
		gs := int64(w.groupOf(int(s[1])))
		ng := (s[1] + gs - 1) / gs
		best = max(best, s[0]*ng)
		if gs <= awqMaxClipGroup {
			gram = max(gram, ng*gs*gs)
		}
	}
	for i, st := range calib.Stages {
		cols := int64(st.Cols(c))
		if err := alloc(&w.st.sums[i], 2*cols*8, "activation statistics"); err != nil {
			return nil, err
		}
		if err := alloc(&w.st.rows[i], w.nclip*cols*4, "the clipping search's input rows"); err != nil {
			return nil, err
		}
	}
	w.st.step = w.step
	guarded := o.QKGuard()
	if !o.NoClip {
		if err := alloc(&w.gram, gram*4, "the clipping search's Gram matrices"); err != nil {
			return nil, err
		}
		if err := alloc(&w.best, best*4, "the clipping search's results"); err != nil {
			return nil, err
		}
	}
	if !o.NoClip || guarded != nil {
		if err := alloc(&w.xs, w.nclip*maxCols*4, "the clipping search's scaled input rows"); err != nil {
			return nil, err
		}
	}
	if guarded != nil {
		if err := alloc(&w.gw, max(qDim, kvDim)*dim*4, "the q/k guard's weight"); err != nil {
			return nil, err
		}
		if err := alloc(&w.gout, w.nclip*qDim*4, "the q/k guard's outputs"); err != nil {
			return nil, err
		}
		for _, sfx := range guarded {
			var p cu.DevicePtr
			if err := alloc(&p, w.nclip*shapes[sfx][0]*4, "the q/k guard's float outputs"); err != nil {
				return nil, err
			}
			w.gref[sfx] = p
		}
	}
	return w, nil
}

func (w *awqWalk) close() {
	defer w.d.bind()()
	w.closeLocked()
}

func (w *awqWalk) closeLocked() {
	for _, p := range w.bufs {
		cu.MemFree(p)
	}
	w.bufs = nil
}

// weight returns the device block's FP16 linear sfx.
func (w *awqWalk) weight(sfx string) *weight {
	G := &w.k.g.layers[0]
	return map[string]*weight{hf.AttnQ: G.q, hf.AttnK: G.k, hf.AttnV: G.v, hf.AttnO: G.o,
		hf.FFNGate: G.gate, hf.FFNUp: G.up, hf.FFNDown: G.down}[sfx]
}

// uploadF32 copies the host values v to p in stream order.
func (w *awqWalk) uploadF32(p cu.DevicePtr, v []float32, what string) error {
	if len(v) == 0 {
		return nil
	}
	if err := w.d.fence(); err != nil {
		return err
	}
	if err := w.d.st.upload(p, unsafe.Pointer(&v[0]), int64(len(v))*4); err != nil {
		return fmt.Errorf("cuda: awq: uploading %s: %w", what, err)
	}
	return nil
}

// pass runs the device block over every sample from the hidden states,
// writing the output of the sub-block ending at outAt (calibO or calibDown)
// to out; with stats, it also records the AWQ statistics of every stage
// input (w.st).
func (w *awqWalk) pass(ctx context.Context, outAt int, out cu.DevicePtr, stats bool) error {
	k := w.k
	defer w.d.bind()()
	dim := int64(k.g.Dim)
	if err := k.batches(ctx, func(row0 int64) *calibHook {
		hook := &calibHook{in: k.hidden + cu.DevicePtr(row0*dim*4), stage: -1, out: out + cu.DevicePtr(row0*dim*4), outAt: outAt}
		if stats {
			st := w.st
			st.row0 = row0
			hook.awq = &st
		}
		return hook
	}); err != nil {
		return fmt.Errorf("cuda: awq pass: %w", err)
	}
	return k.d.st.sync()
}

// loss returns the mean squared difference of w.out and w.ref.
func (w *awqWalk) loss() (float64, error) {
	return w.mse(w.out, w.ref, w.n*int64(w.c.Dim))
}

// mse returns the mean squared difference of the cnt float32 values at a
// and b.
func (w *awqWalk) mse(a, b cu.DevicePtr, cnt int64) (float64, error) {
	defer w.d.bind()()
	if err := w.d.st.zero(w.acc, 8); err != nil {
		return 0, err
	}
	if err := w.d.launch("awq_sqerr", dim3{x: int(min((cnt+awqThreads-1)/awqThreads, 2048))}, awqThreads, 0, a, b, cnt, w.acc); err != nil {
		return 0, err
	}
	if err := w.d.st.sync(); err != nil {
		return 0, err
	}
	v := make([]float64, 1)
	if err := download(v, w.acc); err != nil {
		return 0, err
	}
	return v[0] / float64(max(cnt, 1)), nil
}

// fakeQuant writes Q(W·diag(s))·diag(s)⁻¹ of linear sfx's float32 copy into
// its FP16 device weight, s being the scales at w.sc (scaled) or none.
func (w *awqWalk) fakeQuant(sfx string, scaled bool) error {
	wt := w.weight(sfx)
	rows, cols := int64(wt.rows), int64(wt.cols)
	gs := int64(w.groupOf(wt.cols))
	var sp cu.DevicePtr
	if scaled {
		sp = w.sc
	}
	return w.d.launch("awq_fakequant", dim3{x: int((cols + gs - 1) / gs), y: int(min(rows, 65535))}, awqThreads, 0,
		w.orig[sfx], sp, wt.data, rows, cols, gs, float64(int(1)<<w.o.Bits-1))
}

// restore puts linear sfx's float weights back into the device block.
func (w *awqWalk) restore(sfx string) error {
	wt := w.weight(sfx)
	n := int64(wt.rows) * int64(wt.cols)
	return w.d.launch("to_half", dim3{x: int((n + 255) / 256)}, 256, 0, w.orig[sfx], wt.data, n)
}

// search is awq.LossSearch on the device: the inspected output is the
// sub-block ending at outAt with the linears names fake-quantized under the
// scales (expanded by expand, if set), compared with the float block's;
// guard, if set, is evaluated after the grid. The float weights are back in
// the device block when it returns.
func (w *awqWalk) search(ctx context.Context, mean []float64, outAt int, names []string, expand func([]float32) []float32, guard *awq.Guard) (awq.SearchResult, error) {
	if err := w.pass(ctx, outAt, w.ref, false); err != nil {
		return awq.SearchResult{}, err
	}
	r, err := awq.LossSearch(mean, w.o.Grid, func(s []float32) (float64, error) {
		if expand != nil {
			s = expand(s)
		}
		err := func() error {
			defer w.d.bind()()
			if err := w.uploadF32(w.sc, s, "scales"); err != nil {
				return err
			}
			for _, sfx := range names {
				if err := w.fakeQuant(sfx, true); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return 0, err
		}
		if err := w.pass(ctx, outAt, w.out, false); err != nil {
			return 0, err
		}
		return w.loss()
	}, guard)
	if err != nil {
		return awq.SearchResult{}, err
	}
	defer w.d.bind()()
	for _, sfx := range names {
		if err := w.restore(sfx); err != nil {
			return awq.SearchResult{}, err
		}
	}
	return r, w.d.st.sync()
}

// linearOut writes x·Wᵀ to out ([nclip][rows] float32) for the float32 rows
// x ([nclip][Dim]) and weight wt ([rows][Dim]), both on the device.
func (w *awqWalk) linearOut(x, wt, out cu.DevicePtr, rows int) error {
	defer w.d.bind()()
	bl, err := w.d.blasHandle()
	if err != nil {
		return err
	}
	dim := int64(w.c.Dim)
	return bl.gemm(opT, opN, int64(rows), w.nclip, dim, 1, mat{ptr: wt, dt: dtF32, ld: dim}, mat{ptr: x, dt: dtF32, ld: dim},
		0, mat{ptr: out, dt: dtF32, ld: int64(rows)}, 1, compute32F)
}

// guardErr returns the mean squared difference, over the guard rows, of
// x·Wᵀ for the host weight v (rows x Dim, uploaded to w.gw) from linear
// sfx's float output (w.gref).
func (w *awqWalk) guardErr(sfx string, x cu.DevicePtr, v []float32, rows int) (float64, error) {
	err := func() error {
		defer w.d.bind()()
		return w.uploadF32(w.gw, v, "a guarded weight")
	}()
	if err != nil {
		return 0, err
	}
	if err := w.linearOut(x, w.gw, w.gout, rows); err != nil {
		return 0, err
	}
	return w.mse(w.gout, w.gref[sfx], w.nclip*int64(rows))
}

// qkGuard is the q/k guard of the block's input_layernorm->q,k,v search
// (nil with ReferenceQK), as awq's (Block.qkGuard) on the device: x holds
// the guard rows (the clipping rows of the float block's q/k/v input,
// nclip x Dim, also at w.st.rows[calibQKV]), and the device's float32
// copies of the block's linears are still unscaled.
func (w *awqWalk) qkGuard(ctx context.Context, b *awq.Block, x []float32) (*awq.Guard, error) {
	names := w.o.QKGuard()
	if names == nil {
		return nil, nil
	}
	xq := w.st.rows[calibQKV]
	g := &awq.Guard{Linears: names, RTNErr: make([]float64, len(names))}
	for j, sfx := range names {
		d := b.W[sfx]
		if err := w.linearOut(xq, w.orig[sfx], w.gref[sfx], d.R); err != nil {
			return nil, err
		}
		_, deq, err := awqRTN(d.W, d.R, d.C, w.o.Grouped())
		if err != nil {
			return nil, err
		}
		if g.RTNErr[j], err = w.guardErr(sfx, xq, deq, d.R); err != nil {
			return nil, err
		}
	}
	G := &w.k.g.layers[0]
	g.Eval = func(s []float32, bound []float64) ([]float64, float64, error) {
		// The stored weights, as block makes them after Apply: columns
		// scaled, clipped on the scaled rows, quantized. A guarded linear
		// over its bound stops the evaluation (awq.Guard.Eval).
		xs := awq.ScaleRows(x, s)
		if err := func() error {
			defer w.d.bind()()
			return w.uploadF32(w.xs, xs, "the guard rows")
		}(); err != nil {
			return nil, 0, err
		}
		gramReady := false
		errs := make([]float64, len(names))
		for i := range errs {
			errs[i] = math.Inf(1)
		}
		for _, sfx := range []string{hf.AttnQ, hf.AttnK, hf.AttnV} {
			d := b.W[sfx]
			ws := infer.NewDense(awq.ScaleCols(d.W, s), d.R, d.C)
			if w.o.Clips(sfx) {
				if _, err := w.clipLinear(w.gw, ws, xs, &gramReady); err != nil {
					return nil, 0, err
				}
			}
			_, deq, err := awqRTN(ws.W, d.R, d.C, w.o.Grouped())
			if err != nil {
				return nil, 0, err
			}
			if j := slices.Index(names, sfx); j >= 0 {
				if errs[j], err = w.guardErr(sfx, w.xs, deq, d.R); err != nil {
					return nil, 0, err
				}
				if bound != nil && errs[j] > bound[j] {
					return errs, math.Inf(1), nil // the block's q/k/v are restored by search
				}
			}
			// The device block's copy, in the original basis.
			orig := awq.ScaleRows(deq, s)
			dst := map[string]*weight{hf.AttnQ: G.q, hf.AttnK: G.k, hf.AttnV: G.v}[sfx]
			if err := func() error {
				defer w.d.bind()()
				if err := w.uploadF32(w.gw, orig, "a stored weight"); err != nil {
					return err
				}
				n := int64(d.R) * int64(d.C)
				return w.d.launch("to_half", dim3{x: int((n + 255) / 256)}, 256, 0, w.gw, dst.data, n)
			}(); err != nil {
				return nil, 0, err
			}
		}
		if err := w.pass(ctx, calibO, w.out, false); err != nil {
			return nil, 0, err
		}
		out, err := w.loss()
		return errs, out, err
	}
	return g, nil
}

// gramFor computes the per-group Gram matrices (mean over the rows) of the
// scaled clipping rows (nclip x cols) at w.xs into w.gram.
func (w *awqWalk) gramFor(cols int) error {
	defer w.d.bind()()
	bl, err := w.d.blasHandle()
	if err != nil {
		return err
	}
	gs := int64(w.groupOf(cols))
	C, T := int64(cols), w.nclip
	alpha := 1 / float64(T)
	nfull, rem := C/gs, C%gs
	if nfull > 0 {
		A := mat{ptr: w.xs, dt: dtF32, ld: C, stride: gs}
		if err := bl.gemm(opN, opT, gs, gs, T, alpha, A, A, 0, mat{ptr: w.gram, dt: dtF32, ld: gs, stride: gs * gs}, int(nfull), compute32F); err != nil {
			return err
		}
	}
	if rem > 0 {
		A := mat{ptr: w.xs + cu.DevicePtr(nfull*gs*4), dt: dtF32, ld: C}
		if err := bl.gemm(opN, opT, rem, rem, T, alpha, A, A, 0, mat{ptr: w.gram + cu.DevicePtr(nfull*gs*gs*4), dt: dtF32, ld: gs}, 1, compute32F); err != nil {
			return err
		}
	}
	return nil
}

// clipLinear is the clipping search (awq.Clip) of the scaled weight d (in place) on the scaled
// clipping rows x (nclip x d.C), which must also be at w.xs: on the device
// through buf (room for d as float32) and the Gram matrices of x (computed
// first unless *gramReady, which it then sets), or by ClipWeight on the host
// for groups longer than awqMaxClipGroup. It returns the clipped group
// count.
func (w *awqWalk) clipLinear(buf cu.DevicePtr, d *infer.Dense, x []float32, gramReady *bool) (int, error) {
	if w.groupOf(d.C) > awqMaxClipGroup {
		return w.o.ClipWeight(d.W, d.R, d.C, x, int(w.nclip))
	}
	if !*gramReady {
		if err := w.gramFor(d.C); err != nil {
			return 0, err
		}
		*gramReady = true
	}
	return w.clip(buf, d)
}

// clip is awq.Clip on the device for the scaled weight d (in place, through
// buf) whose stage's Gram matrices are in w.gram; it returns the clipped
// group count.
func (w *awqWalk) clip(buf cu.DevicePtr, d *infer.Dense) (int, error) {
	rows, cols := d.R, d.C
	gs := w.groupOf(cols)
	ng := (cols + gs - 1) / gs
	best := make([]float32, rows*ng)
	err := func() error {
		defer w.d.bind()()
		if err := w.uploadF32(buf, d.W, "a scaled weight"); err != nil {
			return err
		}
		steps := int64(w.o.MaxShrink * float64(w.o.Grid))
		if err := w.d.launch("awq_clip", dim3{x: rows, y: ng}, awqThreads, 2*gs*4, buf, w.gram, w.best,
			int64(rows), int64(cols), int64(gs), steps, float64(w.o.Grid), float64(int(1)<<w.o.Bits-1)); err != nil {
			return err
		}
		if err := w.d.st.sync(); err != nil {
			return err
		}
		return download(best, w.best)
	}()
	if err != nil {
		return 0, err
	}
	counts := make([]int, rows)
	infer.ParallelFor(rows, cols, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			for k := 0; k < ng; k++ {
				wg := d.W[r*cols+k*gs : r*cols+min(cols, (k+1)*gs)]
				var amax float32
				for _, v := range wg {
					amax = max(amax, float32(math.Abs(float64(v))))
				}
				if b := best[r*ng+k]; b < amax {
					counts[r]++
					for j, v := range wg {
						wg[j] = min(max(v, -b), b)
					}
				}
			}
		}
	})
	clipped := 0
	for _, c := range counts {
		clipped += c
	}
	return clipped, nil
}

// awqRTN is quant.RTN over row slices in parallel, returning the grouped
// weight and its dequantization.
func awqRTN(w []float32, rows, cols int, opt quant.GroupedOptions) (*quant.Grouped, []float32, error) {
	parts := min(runtime.GOMAXPROCS(0), rows, max(1, rows*cols/(1<<16)))
	per := (rows + parts - 1) / parts
	type part struct {
		g   *quant.Grouped
		deq []float32
		err error
	}
	out := make([]part, parts)
	var wg sync.WaitGroup
	for p := range parts {
		r0, r1 := p*per, min(rows, (p+1)*per)
		if r0 >= r1 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := quant.RTN(w[r0*cols:r1*cols], r1-r0, cols, opt)
			if err != nil {
				out[p].err = err
				return
			}
			out[p].g = g
			out[p].deq, out[p].err = g.Dequantize()
		}()
	}
	wg.Wait()
	var g *quant.Grouped
	deq := make([]float32, 0, rows*cols)
	for _, p := range out {
		if p.err != nil {
			return nil, nil, p.err
		}
		if p.g == nil {
			continue
		}
		if g == nil {
			g = &quant.Grouped{Bits: p.g.Bits, GroupSize: p.g.GroupSize, Sym: p.g.Sym, Cols: cols}
		}
		g.Rows += p.g.Rows
		g.Codes = append(g.Codes, p.g.Codes...)
		g.Scales = append(g.Scales, p.g.Scales...)
		g.Zeros = append(g.Zeros, p.g.Zeros...)
		deq = append(deq, p.deq...)
	}
	if g == nil || g.Rows != rows {
		return nil, nil, fmt.Errorf("cuda: awq: quantized %v rows of %d", g, rows)
	}
	return g, deq, nil
}

// QuantizeAWQ is awq.QuantizeModel on the GPU: the same walk (block by
// block, the input of block l being the output of blocks 0..l-1 quantized;
// inside a block the four scale searches on the float block, then the scales
// folded, then the clipping search and RTN), the same options, results and
// report, with the blocks run in FP16 on the tensor cores (the reference AWQ
// runs an FP16 model), the grid search's fake quantization, output errors
// and the clipping search on the device. The final RTN, the folding of the
// scales and the assembly of the results happen on the host, exactly as
// awq.QuantizeModel does them. Its signature matches convert.Options.AWQ.
//
// Device memory: the calibrator's (hidden states of all samples, one batch
// of activations), two [tokens][Dim] float32 sub-block outputs, float32
// copies of one block's linears and the clipping rows.
func (d *Device) QuantizeAWQ(ctx context.Context, m *infer.Model, set *calib.Set, opt awq.ModelOptions) (*awq.Result, *awq.Report, error) {
	return awq.Walk(ctx, m, set, opt, func(o awq.Options, x []float32) (awq.BlockFunc, func(), error) {
		k, err := d.newCalibrator(&m.Config, x, len(set.Samples), set.Info.SeqLen)
		if err != nil {
			return nil, nil, err
		}
		w, err := d.newAWQWalk(k, &m.Config, o)
		if err != nil {
			k.close()
			return nil, nil, err
		}
		return func(ctx context.Context, l int, res *awq.Result, rep *awq.Report) error {
			return w.block(ctx, m, l, res, rep)
		}, func() { w.close(); k.close() }, nil
	})
}

// block runs awq's quantizeBlock for layer l on the device.
func (w *awqWalk) block(ctx context.Context, m *infer.Model, l int, res *awq.Result, rep *awq.Report) error {
	c, o, k := w.c, w.o, w.k
	n := int(w.n)
	b, err := awq.CopyBlock(m, l)
	if err != nil {
		return err
	}
	// The float block on the device, its float32 linears beside it.
	L := b.Layer()
	if err := k.setBlock(l, &L); err != nil {
		return err
	}
	err = func() error {
		defer w.d.bind()()
		for _, sfx := range awqLinears {
			if err := w.uploadF32(w.orig[sfx], b.W[sfx].W, hf.LayerTensorName(l, sfx)); err != nil {
				return err
			}
		}
		for i, st := range calib.Stages {
			if err := w.d.st.zero(w.st.sums[i], 2*int64(st.Cols(c))*8); err != nil {
				return err
			}
		}
		return w.d.st.sync()
	}()
	if err != nil {
		return err
	}
	// Statistics of the float block's stage inputs.
	if err := w.pass(ctx, calibDown, w.out, true); err != nil {
		return err
	}
	var means [4][]float64
	var xs [4][]float32
	for i, st := range calib.Stages {
		cols := st.Cols(c)
		sums := make([]float64, 2*cols)
		xs[i] = make([]float32, int(w.nclip)*cols)
		if err := func() error {
			defer w.d.bind()() // the copies need the context current on this thread
			if err := download(sums, w.st.sums[i]); err != nil {
				return err
			}
			return download(xs[i], w.st.rows[i])
		}(); err != nil {
			return err
		}
		mean, imp := sums[:cols], sums[cols:]
		for j := range mean {
			mean[j] /= float64(max(n, 1))
			imp[j] /= float64(max(n, 1))
		}
		means[i] = mean
		for _, sfx := range st.Linears() {
			rep.Importance[hf.LayerTensorName(l, sfx)] = imp
		}
	}
	// 1. input_layernorm -> q, k, v, inspecting the attention output,
	// under the q/k guard.
	guard, err := w.qkGuard(ctx, b, xs[calibQKV])
	if err != nil {
		return err
	}
	qkv, err := w.search(ctx, means[calibQKV], calibO, []string{hf.AttnQ, hf.AttnK, hf.AttnV}, nil, guard)
	if err != nil {
		return err
	}
	rep.Stages = append(rep.Stages, qkv.Stage(l, awq.PairQKV))
	// 2. v -> o, per kv channel.
	qDim, kvDim, hd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.HeadDim
	group := c.Heads / c.KVHeads
	var sKV, sO []float32
	if group > 1 && o.SkipGQA {
		rep.Stages = append(rep.Stages, awq.StageReport{Layer: l, Pair: awq.PairVO, Skipped: awq.SkipGQAReason(kvDim, qDim)})
	} else {
		meanKV := awq.GQAMeans(means[calibO], c.Heads, c.KVHeads, hd)
		expand := func(s []float32) []float32 { return awq.GQAExpand(s, c.Heads, c.KVHeads, hd) }
		vo, err := w.search(ctx, meanKV, calibO, []string{hf.AttnO}, expand, nil)
		if err != nil {
			return err
		}
		sKV = vo.Scales
		sO = expand(sKV)
		rep.Stages = append(rep.Stages, vo.Stage(l, awq.PairVO))
	}
	// 3. post_attention_layernorm -> gate, up, inspecting the MLP output.
	gu, err := w.search(ctx, means[calibGateUp], calibDown, []string{hf.FFNGate, hf.FFNUp}, nil, nil)
	if err != nil {
		return err
	}
	rep.Stages = append(rep.Stages, gu.Stage(l, awq.PairGateUp))
	// 4. up -> down.
	down, err := w.search(ctx, means[calibDown], calibDown, []string{hf.FFNDown}, nil, nil)
	if err != nil {
		return err
	}
	rep.Stages = append(rep.Stages, down.Stage(l, awq.PairDown))

	// Apply the scales as awq does.
	inScale, outScale := b.Apply(c, awq.BlockScales{QKV: qkv.Scales, KV: sKV, O: sO, GateUp: gu.Scales, Down: down.Scales}, xs)
	// Clip (not q, k with ReferenceQK) and quantize.
	for i, st := range calib.Stages {
		gramReady, uploaded := false, false
		for _, sfx := range st.Linears() {
			if err := ctx.Err(); err != nil {
				return err
			}
			t0 := time.Now()
			dw := b.W[sfx]
			name := hf.LayerTensorName(l, sfx)
			clipped := 0
			if o.Clips(sfx) {
				if !uploaded {
					if err := func() error {
						defer w.d.bind()()
						return w.uploadF32(w.xs, xs[i], "clipping rows")
					}(); err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					uploaded = true
				}
				if clipped, err = w.clipLinear(w.orig[sfx], dw, xs[i], &gramReady); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			g, deq, err := awqRTN(dw.W, dw.R, dw.C, o.Grouped())
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			res.Store(rep, b, l, sfx, g, deq, inScale, outScale, clipped, t0)
		}
	}
	res.Norms[hf.LayerTensorName(l, hf.AttnNorm)] = b.AttnNorm
	res.Norms[hf.LayerTensorName(l, hf.FFNNorm)] = b.FFNNorm
	// Next block's input: this block quantized (scaled basis, same function).
	L = b.Layer()
	if err := k.setBlock(l, &L); err != nil {
		return err
	}
	return k.pass(ctx, -1, 0)
}
