//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"

	"gorgonia.org/cu"
)

// The tensor-core path. Steps of more than gemmRows tokens (prefill, and
// decode of two or more sequences: measured on the H100, the 8-row
// matrix-vector kernels ran a batch-8 step 3x slower than the GEMMs run a
// batch-32 one) run every linear layer as a cuBLAS GEMM instead of the
// matrix-vector kernels: a packed weight is dequantised to FP16 in slices of
// at most dequantHalfs values (FP16 weights are used in place), the
// activations are rounded to FP16, and cuBLAS accumulates in float32 on the
// tensor cores. float32 weights (the reference) stay float32 end to end
// (CUBLAS_COMPUTE_32F, no TF32). A sequence with at least attGemmRows new
// tokens in a step gets its attention from flash_attn_f16 on the tensor cores
// when the KV cache is FP16 and the head dim 64, else from two
// strided-batched GEMMs (scores, then values) around a causal softmax kernel,
// in query chunks whose scores fit attScoreBytes; shorter sequences of the
// same step use the split-K kernels.
const (
	flashHeadDim  = 64 // FA_HD: the head dim flash_attn_f16 takes
	flashTile     = 64 // FA_T: its queries per block
	gemmRows      = 1
	attGemmRows   = 16
	attQueryChunk = 512
	attScoreBytes = 256 << 20
	dequantHalfs  = 16 << 20
	argmaxParts   = 64
)

// span is one sequence's rows in a step: rows [r0, r0+n) at cache positions
// [start, start+n) of the cache whose page table starts at entry tab of the
// step's tables.
type span struct {
	r0, n, start, tab int64
}

// blasHandle returns the device's cuBLAS handle, loading the library on first
// use; a failure is remembered and returned again.
func (d *Device) blasHandle() (*blas, error) {
	if d.blas == nil && d.blasErr == nil {
		d.blas, d.blasErr = d.openBlas()
	}
	return d.blas, d.blasErr
}

// useGemm says whether a step of n rows takes the tensor-core path.
func (g *Model) useGemm(n int) bool {
	if !g.UseGemm || n <= gemmRows {
		return false
	}
	if _, err := g.d.blasHandle(); err != nil {
		g.GemmError = err
		return false
	}
	return true
}

// gemmBuffers grows the GEMM path's scratch for n rows and the spans'
// attention scores.
func (g *Model) gemmBuffers(n int64, spans []span) error {
	c := &g.Config
	b := &g.buf
	dim, qDim, ffn := int64(c.Dim), int64(c.Heads*c.HeadDim), int64(c.FFNDim)
	if n > b.grows || b.u == 0 {
		for _, x := range []struct {
			p    *cu.DevicePtr
			size int64
		}{{&b.u, ffn * 4}, {&b.xh, max(dim, qDim, ffn) * 2}} {
			var have int64
			if *x.p != 0 {
				cu.MemFree(*x.p)
				*x.p = 0
			}
			if err := g.ensure(x.p, &have, n*x.size, fmt.Sprintf("FP16 activations of %d tokens", n)); err != nil {
				b.grows = 0
				return err
			}
		}
		b.grows = n
	}
	if err := g.ensure(&b.wh, &b.whCap, dequantHalfs*2, "the FP16 weight scratch"); err != nil {
		return err
	}
	var sc, kv int64 // GEMM attention's scores and gathered keys and values
	for _, s := range spans {
		if s.n >= attGemmRows && !g.flashOK() {
			_, ld := g.attChunk(s)
			sc = max(sc, int64(c.Heads)*min(s.n, attQueryChunk)*ld*4)
			kv = max(kv, 2*(s.start+s.n)*g.kvDim()*4)
		}
	}
	if sc == 0 {
		return nil
	}
	if err := g.ensure(&b.sc, &b.scCap, min(sc, attScoreBytes), "attention scores"); err != nil {
		return err
	}
	return g.ensure(&b.kvg, &b.kvgCap, kv, "gathered keys and values")
}

// attChunk returns the queries per chunk of a span's GEMM attention and the
// leading dimension of its score matrices (keys, rounded up to 4).
func (g *Model) attChunk(s span) (int64, int64) {
	ld := (s.start + s.n + 3) &^ 3
	q := min(s.n, attQueryChunk, max(1, attScoreBytes/(int64(g.Heads)*ld*4)))
	if g.attQ > 0 {
		q = min(s.n, g.attQ)
	}
	return q, ld
}

// enqueueGemm launches one forward step on the tensor-core path (see the
// constants above); the arguments are enqueue's.
func (g *Model) enqueueGemm(n, nsel int, nsplit int64, spans []span, m stepMeta) error {
	c := &g.Config
	b := &g.buf
	bl := g.d.blas
	dim, qDim, ffn := int64(c.Dim), int64(c.Heads*c.HeadDim), int64(c.FFNDim)
	N := int64(n)
	hook := g.calib
	if hook != nil {
		if err := g.d.st.copyDtoD(b.x, hook.in, N*dim*4); err != nil {
			return err
		}
	} else if err := g.embedRows(g.embed, m.ids, b.x, N); err != nil {
		return err
	}
	eps := float64(c.NormEps)
	var errs []error
	do := func(err error) { errs = append(errs, err) }
	half := func(src cu.DevicePtr, count int64, ws ...*weight) {
		if _, h := gemmInputs(ws); h {
			do(g.d.launch("to_half", dim3{x: int((count + 255) / 256)}, 256, 0, src, b.xh, count))
		}
	}
	// norm writes RMSNorm(x) as the inputs ws's GEMMs read: float32 in
	// buf.xn for float32 weights, FP16 in buf.xh for the others.
	norm := func(rows int, w, sel cu.DevicePtr, ws ...*weight) {
		var out, outh cu.DevicePtr
		f, h := gemmInputs(ws)
		if f {
			out = b.xn
		}
		if h {
			outh = b.xh
		}
		do(g.d.launch("rmsnorm", dim3{x: rows}, normThreads, 0, b.x, w, out, outh, sel, int64(rows), dim, eps))
	}
	// capture adds XᵀX of a stage's FP16 input (buf.xh) to the calibration
	// Hessian sum and says whether the pass stops there.
	capture := func(stage int, cols int64) bool {
		if hook == nil {
			return false
		}
		if hook.awq != nil {
			do(g.awqCapture(hook.awq, stage, cols, N))
		}
		if hook.stage != stage {
			return false
		}
		do(bl.gemm(opN, opT, cols, cols, N, 1, mat{ptr: b.xh, dt: dtF16, ld: cols}, mat{ptr: b.xh, dt: dtF16, ld: cols},
			1, mat{ptr: hook.hsum, dt: dtF32, ld: cols}, 1, compute32F))
		return true
	}
	for l := range g.layers {
		L := &g.layers[l]
		norm(n, L.attnNorm, 0, L.q, L.k, L.v)
		if capture(calibQKV, dim) {
			return errors.Join(errs...)
		}
		do(g.linear(bl, L.q, b.xn, b.q, N, false))
		do(g.linear(bl, L.k, b.xn, b.k, N, false))
		do(g.linear(bl, L.v, b.xn, b.v, N, false))
		do(g.ropeStore(int64(l), N, m))
		do(g.attention(bl, int64(l), spans, nsplit, m))
		half(b.att, N*qDim, L.o)
		if capture(calibO, qDim) {
			return errors.Join(errs...)
		}
		if hook != nil && hook.out != 0 && hook.outAt == calibO {
			do(g.linear(bl, L.o, b.att, hook.out, N, false))
			return errors.Join(errs...)
		}
		do(g.linear(bl, L.o, b.att, b.x, N, true))
		norm(n, L.ffnNorm, 0, L.gate, L.up)
		if capture(calibGateUp, dim) {
			return errors.Join(errs...)
		}
		do(g.linear(bl, L.gate, b.xn, b.h, N, false))
		do(g.linear(bl, L.up, b.xn, b.u, N, false))
		outf, outh := b.h, b.xh
		if L.down.format != fmtF32 {
			outf = 0
		} else {
			outh = 0
		}
		do(g.d.launch("silu_mul", dim3{x: int((N*ffn + 255) / 256)}, 256, 0, b.h, b.u, outf, outh, N*ffn))
		if capture(calibDown, ffn) {
			return errors.Join(errs...)
		}
		if hook != nil && hook.out != 0 && hook.outAt == calibDown {
			do(g.linear(bl, L.down, b.h, hook.out, N, false))
			return errors.Join(errs...)
		}
		do(g.linear(bl, L.down, b.h, b.x, N, true))
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if hook != nil {
		do(g.d.st.copyDtoD(hook.in, b.x, N*dim*4))
		return errors.Join(errs...)
	}
	if nsel > gemmRows {
		norm(nsel, g.norm, m.sel, g.output)
		do(g.linear(bl, g.output, b.xn, b.logits, int64(nsel), false))
	} else {
		do(g.d.launch("rmsnorm", dim3{x: nsel}, normThreads, 0, b.x, g.norm, b.xn, cu.DevicePtr(0), m.sel, int64(nsel), dim, eps))
		do(g.matvec(g.output, b.xn, b.logits, int64(nsel), false, 0))
	}
	return errors.Join(errs...)
}

// gemmInputs says which inputs the GEMMs of ws read: float32 (a float32
// weight) and/or FP16 (any other).
func gemmInputs(ws []*weight) (f32, f16 bool) {
	for _, w := range ws {
		if w.format == fmtF32 {
			f32 = true
		} else {
			f16 = true
		}
	}
	return f32, f16
}

// linear computes dst (+)= W x for n rows by GEMM: x is xf (float32) for a
// float32 weight and buf.xh (its FP16 copy, made by the caller) otherwise.
func (g *Model) linear(bl *blas, w *weight, xf, dst cu.DevicePtr, n int64, add bool) error {
	beta := 0.0
	if add {
		beta = 1
	}
	rows, cols := int64(w.rows), int64(w.cols)
	out := mat{ptr: dst, dt: dtF32, ld: rows}
	switch w.format {
	case fmtF32:
		return bl.gemm(opT, opN, rows, n, cols, 1, mat{ptr: w.data, dt: dtF32, ld: cols}, mat{ptr: xf, dt: dtF32, ld: cols}, beta, out, 1, compute32F)
	case fmtF16:
		return bl.gemm(opT, opN, rows, n, cols, 1, mat{ptr: w.data, dt: dtF16, ld: cols}, mat{ptr: g.buf.xh, dt: dtF16, ld: cols}, beta, out, 1, compute32F)
	}
	chunk := max(1, dequantHalfs/cols)
	if g.dqRows > 0 {
		chunk = g.dqRows
	}
	args := w.args()
	name := "dequant_" + fmtNames[w.format]
	for r0 := int64(0); r0 < rows; r0 += chunk {
		nr := min(chunk, rows-r0)
		threads := nr * cols
		if cols%8 == 0 {
			threads /= 8
		}
		if err := g.d.launch(name, dim3{x: int((threads + 255) / 256)}, 256, 0, append(args, g.buf.wh, r0, nr, cols)...); err != nil {
			return err
		}
		out.ptr = dst + cu.DevicePtr(r0*4)
		if err := bl.gemm(opT, opN, nr, n, cols, 1, mat{ptr: g.buf.wh, dt: dtF16, ld: cols}, mat{ptr: g.buf.xh, dt: dtF16, ld: cols}, beta, out, 1, compute32F); err != nil {
			return err
		}
	}
	return nil
}

// ropeStore launches rope_store over n rows (q rotated in place, k and v
// stored in the caches).
func (g *Model) ropeStore(l, n int64, m stepMeta) error {
	c := &g.Config
	items := int64((c.Heads+c.KVHeads)*c.HeadDim/2) + g.kvDim()
	b := &g.buf
	return g.d.launch(g.kvNames.rope, dim3{x: int(n), y: int((items + 127) / 128)}, 128, 0, b.q, b.k, b.v, m.pos, m.tab, m.off, g.invFreq,
		l, int64(c.Heads), int64(c.KVHeads), int64(c.HeadDim), n)
}

// splitAttention launches the split-K attention kernel over rows [r0,
// r0+cnt) of the step.
func (g *Model) splitAttention(l, r0, cnt, nsplit int64, m stepMeta) error {
	c := &g.Config
	b := &g.buf
	hd, heads := int64(c.HeadDim), int64(c.Heads)
	qDim := heads * hd
	part := b.partial + cu.DevicePtr(r0*heads*nsplit*(hd+2)*4)
	scale := 1 / math.Sqrt(float64(c.HeadDim))
	return g.d.launch(g.kvNames.attn, dim3{int(cnt), c.Heads, int(nsplit)}, 128, 0, b.q+cu.DevicePtr(r0*qDim*4), part,
		b.count+cu.DevicePtr(r0*heads*4), b.att+cu.DevicePtr(r0*qDim*4),
		m.pos+cu.DevicePtr(4*r0), m.tab, m.off+cu.DevicePtr(4*r0),
		l, heads, int64(c.KVHeads), hd, scale, nsplit)
}

// decodeAttention launches attn_decode over the n rows of a decode step (one
// new token per sequence): RoPE of q and k, the store of k and v and the
// split-K attention in one launch.
func (g *Model) decodeAttention(l, n, nsplit int64, m stepMeta) error {
	c := &g.Config
	b := &g.buf
	hd, heads := int64(c.HeadDim), int64(c.Heads)
	return g.d.launch(g.kvNames.decode, dim3{int(n), c.Heads, int(nsplit)}, 128, 0, b.q, b.partial, b.count, b.att,
		m.pos, m.tab, m.off, l, heads, int64(c.KVHeads), hd, 1/math.Sqrt(float64(hd)), nsplit, b.k, b.v, g.invFreq)
}

// attention fills buf.att for every span of layer l: GEMM attention for
// spans of at least attGemmRows rows, the split-K kernels for runs of
// shorter ones.
func (g *Model) attention(bl *blas, l int64, spans []span, nsplit int64, m stepMeta) error {
	for i := 0; i < len(spans); {
		if spans[i].n >= attGemmRows {
			var err error
			if g.flashOK() {
				err = g.flashAttention(l, spans[i], m)
			} else {
				err = g.gemmAttention(bl, l, spans[i], m)
			}
			if err != nil {
				return err
			}
			i++
			continue
		}
		j := i
		for j < len(spans) && spans[j].n < attGemmRows {
			j++
		}
		r0 := spans[i].r0
		if err := g.splitAttention(l, r0, spans[j-1].r0+spans[j-1].n-r0, nsplit, m); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// flashOK says whether long spans get flash_attn_f16 (an FP16 cache and head
// dim 64, as Llama 3.2-1B's) rather than gemmAttention.
func (g *Model) flashOK() bool {
	return g.kvType == KVF16 && g.HeadDim == flashHeadDim && !g.noFlash
}

// flashAttention computes one span's causal attention for layer l with
// flash_attn_f16: tensor cores, keys and values read from the pages, no
// score matrix.
func (g *Model) flashAttention(l int64, s span, m stepMeta) error {
	c := &g.Config
	b := &g.buf
	qDim := int64(c.Heads * c.HeadDim)
	return g.d.launch("flash_attn_f16", dim3{x: int((s.n + flashTile - 1) / flashTile), y: c.Heads}, 128, 0,
		b.q+cu.DevicePtr(s.r0*qDim*4), b.att+cu.DevicePtr(s.r0*qDim*4), m.tab+cu.DevicePtr(8*s.tab),
		s.start, s.n, l, int64(c.Heads), int64(c.KVHeads), 1/math.Sqrt(float64(c.HeadDim)))
}

// gemmAttention computes one sequence's causal attention for layer l: its
// keys and values are gathered from the pages into float32 rows (buf.kvg),
// then per query chunk S = K^T Q / sqrt(hd) for every head (one
// strided-batched GEMM per head of a GQA group, batched over the KV heads),
// softmax_causal, and O = V P. Scores use TF32 tensor cores unless the model
// is float32.
func (g *Model) gemmAttention(bl *blas, l int64, s span, m stepMeta) error {
	c := &g.Config
	b := &g.buf
	hd, heads, kvh := int64(c.HeadDim), int64(c.Heads), int64(c.KVHeads)
	rep, qDim, kvDim := heads/kvh, heads*hd, g.kvDim()
	total := s.start + s.n
	kbase := b.kvg
	vbase := kbase + cu.DevicePtr(total*kvDim*4)
	if err := g.d.launch(g.kvNames.gather, dim3{x: int((total*kvDim/4 + 255) / 256)}, 256, 0,
		m.tab+cu.DevicePtr(8*s.tab), kbase, vbase, l, total, kvDim); err != nil {
		return err
	}
	comp := compute32FTF32
	if g.precise {
		comp = compute32F
	}
	scale := 1 / math.Sqrt(float64(hd))
	tq, _ := g.attChunk(s)
	for q0 := int64(0); q0 < s.n; q0 += tq {
		nq := min(tq, s.n-q0)
		L := s.start + q0 + nq
		ld := (L + 3) &^ 3
		qrow := (s.r0 + q0) * qDim
		for j := range rep {
			S := mat{ptr: b.sc + cu.DevicePtr(j*nq*ld*4), dt: dtF32, ld: ld, stride: rep * nq * ld}
			if err := bl.gemm(opT, opN, L, nq, hd, scale,
				mat{ptr: kbase, dt: dtF32, ld: kvDim, stride: hd},
				mat{ptr: b.q + cu.DevicePtr((qrow+j*hd)*4), dt: dtF32, ld: qDim, stride: rep * hd},
				0, S, int(kvh), comp); err != nil {
				return err
			}
		}
		if err := g.d.launch("softmax_causal", dim3{x: int(heads * nq)}, 256, 0, b.sc, heads*nq, nq, ld, L, s.start+q0); err != nil {
			return err
		}
		for j := range rep {
			if err := bl.gemm(opN, opN, hd, nq, L, 1,
				mat{ptr: vbase, dt: dtF32, ld: kvDim, stride: hd},
				mat{ptr: b.sc + cu.DevicePtr(j*nq*ld*4), dt: dtF32, ld: ld, stride: rep * nq * ld},
				0, mat{ptr: b.att + cu.DevicePtr((qrow+j*hd)*4), dt: dtF32, ld: qDim, stride: rep * hd}, int(kvh), comp); err != nil {
				return err
			}
		}
	}
	return nil
}

// argmax launches the two-stage argmax of n logits rows into ids.
func (g *Model) argmax(logits, ids cu.DevicePtr, n int64) error {
	if err := g.ensure(&g.buf.amax, &g.buf.amaxCap, n*argmaxParts*8, "argmax partials"); err != nil {
		return err
	}
	if err := g.d.launch("argmax_part", dim3{x: int(n), y: argmaxParts}, 256, 0, logits, g.buf.amax, n, int64(g.Vocab)); err != nil {
		return err
	}
	return g.d.launch("argmax_final", dim3{x: int(n)}, argmaxParts, 0, g.buf.amax, ids, n, int64(argmaxParts))
}
