//go:build cuda

package cuda

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"gorgonia.org/cu"

	"qllama/infer"
)

// Kernel launch constants (kernels/attention.cu, matvec.cu).
const (
	attChunk      = 256 // ATT_CHUNK: the most key positions per attention block
	attMinChunk   = 16  // positions per block below which a step gets no more splits
	mvRowsPerBlk  = 4   // warps (rows) per matvec block of 128 threads
	mv1Threads    = 256 // MV1_THREADS: threads per one-row (mv1/sw1) matvec block
	mv1MaxSmem    = 48 << 10
	maxHeadDim    = 256 // attn_split keeps q in 256 floats of shared memory
	normThreads   = 256
	argmaxThreads = 1024
)

type layer struct {
	attnNorm, ffnNorm cu.DevicePtr
	q, k, v, o        *weight
	gate, up, down    *weight
}

// Model is an infer.Model uploaded to a Device. It is not safe for
// concurrent use.
type Model struct {
	infer.Config
	d       *Device
	embed   *weight
	layers  []layer
	norm    cu.DevicePtr
	output  *weight
	invFreq cu.DevicePtr
	weights []*weight
	vecs    []cu.DevicePtr
	// WeightBytes is the device memory the weights take (tied weights once).
	WeightBytes int64
	// DecodeBytes is what one decode step must read: every layer weight, the
	// lm_head and one embedding row.
	DecodeBytes int64
	// UseGraphs captures decode-sized steps (at most 64 tokens) as CUDA
	// graphs, one per step shape, and replays them: one launch per step
	// instead of about 6 per layer (batch 1). Upload turns it on.
	UseGraphs bool
	// GraphError is why graph capture was given up, if it was.
	GraphError      error
	graphFailed     bool
	gemmGraphFailed bool
	// UseGemm runs steps of more than gemmRows tokens on the tensor-core path
	// (gemm.go) when cuBLAS loads; Upload turns it on. GemmError is why that
	// path was not taken, if cuBLAS failed to load.
	UseGemm   bool
	GemmError error
	precise   bool         // every weight is float32: the GEMM path stays float32
	attQ      int64        // tests: queries per GEMM-attention chunk (0: attChunk's choice)
	dqRows    int64        // tests: rows per dequantised weight slice (0: dequantHalfs/cols)
	noFlash   bool         // tests: long spans take gemmAttention even with an FP16 cache
	noFuse    bool         // tests: decode steps run rope_store and attn_split apart
	attMin    int          // tests: attSplits' fewest positions per split (0: attMinChunk)
	prefix    *prefixStore // prompt prefixes Generate keeps between calls (prefix.go)
	kv        *pagePool    // the KV cache pages (kvcache.go)
	kvType    string       // the cache's element type, KVF32 or KVF16
	kvNames   kvKernels    // the kernels for that type
	calib     *calibHook   // set by the calibrator during its passes (calib.go)

	graphs map[graphKey]graph
	buf    buffers
}

// buffers are the per-step scratch allocations, grown to the largest step.
type buffers struct {
	rows, sel, part int64 // capacities: activation rows, selected rows, partial floats
	x, xn, q, k, v  cu.DevicePtr
	att, h, logits  cu.DevicePtr
	partial, meta   cu.DevicePtr
	ids             cu.DevicePtr
	metaCap         int64
	// attn_split's ticket counters, [rows][heads] int32, kept zero.
	count    cu.DevicePtr
	countCap int64
	// the GEMM path (gemm.go): up-projection output, FP16 activations, FP16
	// weight slices, attention scores, gathered keys and values, argmax
	// partials.
	u, xh, wh, sc, kvg, amax             cu.DevicePtr
	grows, whCap, scCap, kvgCap, amaxCap int64
}

// Upload copies m's weights to the device, keeping each in its packed format.
// Tied weights (the same Go value used twice, e.g. lm_head = embedding) are
// uploaded once. An unsupported format or too little memory is an error
// naming the tensor (and, for memory, how much was needed and free).
func (d *Device) Upload(m *infer.Model) (_ *Model, err error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("cuda: upload: %w", err)
	}
	c := &m.Config
	if c.HeadDim > maxHeadDim || c.HeadDim%4 != 0 {
		return nil, fmt.Errorf("cuda: head dim %d: the attention kernel needs a multiple of 4, at most %d", c.HeadDim, maxHeadDim)
	}
	defer d.bind()()
	g := &Model{Config: *c, d: d, UseGraphs: true, UseGemm: true, graphs: map[graphKey]graph{}}
	defer func() {
		if err != nil {
			g.closeLocked()
		}
	}()
	seen := map[any]*weight{}
	get := func(name string, x any) (*weight, error) {
		if w, ok := seen[x]; ok {
			return w, nil
		}
		w, err := d.uploadWeight(name, x)
		if err != nil {
			return nil, err
		}
		seen[x] = w
		g.weights = append(g.weights, w)
		g.WeightBytes += w.bytes
		return w, nil
	}
	vec := func(name string, v []float32) (cu.DevicePtr, error) {
		p, err := upload(d, v, name)
		if err == nil {
			g.vecs = append(g.vecs, p)
			g.WeightBytes += int64(len(v)) * 4
		}
		return p, err
	}
	if g.embed, err = get("token_embd", m.Embed); err != nil {
		return nil, err
	}
	g.layers = make([]layer, len(m.Layers))
	for i := range m.Layers {
		L, G := &m.Layers[i], &g.layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		for _, t := range []struct {
			dst  **weight
			name string
			w    infer.Linear
		}{{&G.q, "attn_q", L.Q}, {&G.k, "attn_k", L.K}, {&G.v, "attn_v", L.V}, {&G.o, "attn_output", L.O},
			{&G.gate, "ffn_gate", L.Gate}, {&G.up, "ffn_up", L.Up}, {&G.down, "ffn_down", L.Down}} {
			if *t.dst, err = get(p+t.name, t.w); err != nil {
				return nil, err
			}
			g.DecodeBytes += (*t.dst).bytes
		}
		if G.gate.format != G.up.format || G.gate.desc != G.up.desc {
			return nil, fmt.Errorf("cuda: %sffn_gate is %s but ffn_up is %s: the fused SwiGLU kernel needs one format", p, G.gate.desc, G.up.desc)
		}
		if G.attnNorm, err = vec(p+"attn_norm", L.AttnNorm); err != nil {
			return nil, err
		}
		if G.ffnNorm, err = vec(p+"ffn_norm", L.FFNNorm); err != nil {
			return nil, err
		}
	}
	if g.norm, err = vec("output_norm", m.Norm); err != nil {
		return nil, err
	}
	if g.output, err = get("output", m.Output); err != nil {
		return nil, err
	}
	g.DecodeBytes += g.output.bytes + g.embed.bytes/int64(c.Vocab)
	if g.invFreq, err = upload(d, c.RopeInvFreq, "rope frequencies"); err != nil {
		return nil, err
	}
	g.vecs = append(g.vecs, g.invFreq)
	g.precise = true
	for _, w := range g.weights {
		g.precise = g.precise && w.format == fmtF32
	}
	if err := g.SetKVType(KVAuto); err != nil {
		return nil, err
	}
	return g, nil
}

// Formats lists the storage formats of the uploaded weights (for reports).
func (g *Model) Formats() []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range g.weights {
		if !seen[w.desc] {
			seen[w.desc] = true
			out = append(out, w.desc)
		}
	}
	return out
}

// Close frees the model's device memory (caches made from it stay valid
// until freed themselves).
func (g *Model) Close() {
	g.DropPrefixes()
	defer g.d.bind()()
	g.closeLocked()
}

func (g *Model) closeLocked() {
	g.dropGraphs()
	g.freeKV()
	for _, w := range g.weights {
		w.free()
	}
	g.weights = nil
	for _, p := range g.vecs {
		cu.MemFree(p)
	}
	g.vecs = nil
	b := &g.buf
	for _, p := range []cu.DevicePtr{b.x, b.xn, b.q, b.k, b.v, b.att, b.h, b.logits, b.partial, b.meta, b.ids, b.count, b.u, b.xh, b.wh, b.sc, b.kvg, b.amax} {
		if p != 0 {
			cu.MemFree(p)
		}
	}
	g.buf = buffers{}
}

// Step is one sequence's share of a batched forward pass (as infer.Step).
type Step struct {
	Cache     *Cache
	Tokens    []int
	AllLogits bool
}

// ensure grows a scratch buffer to n bytes.
func (g *Model) ensure(p *cu.DevicePtr, have *int64, n int64, what string) error {
	if *have >= n && *p != 0 {
		return nil
	}
	if *p != 0 {
		cu.MemFree(*p)
		*p = 0
	}
	np, err := g.d.alloc(n, what)
	if err != nil {
		*have = 0
		return err
	}
	*p, *have = np, n
	return nil
}

// run executes steps and leaves the logits of the selected rows (per step the
// last token, or every token with AllLogits) in buf.logits. It returns the
// number of selected rows.
func (g *Model) run(steps []Step) (int, error) {
	c := &g.Config
	if g.weights == nil {
		return 0, errors.New("cuda: forward: the model was closed")
	}
	n, maxLen := 0, 0
	for i, s := range steps {
		if len(s.Tokens) == 0 {
			return 0, fmt.Errorf("cuda: forward: step %d has no tokens", i)
		}
		if s.Cache == nil || s.Cache.g != g {
			return 0, fmt.Errorf("cuda: forward: step %d has no cache of this model", i)
		}
		for _, id := range s.Tokens {
			if id < 0 || id >= c.Vocab {
				return 0, fmt.Errorf("cuda: forward: token id %d outside the vocabulary [0, %d)", id, c.Vocab)
			}
		}
		need := s.Cache.Len + len(s.Tokens)
		if c.MaxSeq > 0 && need > c.MaxSeq {
			return 0, fmt.Errorf("cuda: forward: step %d reaches position %d, over the context length %d", i, need, c.MaxSeq)
		}
		n += len(s.Tokens)
		maxLen = max(maxLen, need)
	}
	seen := make(map[*Cache]int, len(steps))
	for i, s := range steps {
		if j, ok := seen[s.Cache]; ok {
			return 0, fmt.Errorf("cuda: forward: steps %d and %d share a cache", j, i)
		}
		seen[s.Cache] = i
		if err := s.Cache.writable(len(s.Tokens)); err != nil {
			return 0, err
		}
	}
	// Per-row metadata, one upload (see stepMeta); the page tables of the
	// steps' caches go last, each covering its cache's positions up to the
	// end of the step.
	var sel []int32
	t := 0
	for _, s := range steps {
		for j := range s.Tokens {
			if s.AllLogits || j == len(s.Tokens)-1 {
				sel = append(sel, int32(t))
			}
			t++
		}
	}
	nsel := len(sel)
	spans := make([]span, len(steps))
	t, pages := 0, 0
	for i, s := range steps {
		spans[i] = span{r0: int64(t), n: int64(len(s.Tokens)), start: int64(s.Cache.Len), tab: int64(pages)}
		pages += pagesFor(s.Cache.Len + len(s.Tokens))
		t += len(s.Tokens)
	}
	gemm := g.useGemm(n)
	tabAt := (int64(3*n+nsel)*4 + 7) &^ 7
	metaBytes := tabAt + int64(pages)*8
	meta := make([]byte, metaBytes)
	le := binary.LittleEndian
	t = 0
	for i, s := range steps {
		for j, id := range s.Tokens {
			le.PutUint32(meta[4*t:], uint32(id))
			le.PutUint32(meta[4*n+4*t:], uint32(s.Cache.Len+j))
			le.PutUint32(meta[8*n+4*t:], uint32(spans[i].tab))
			t++
		}
		for j, pg := range s.Cache.pages[:pagesFor(s.Cache.Len+len(s.Tokens))] {
			le.PutUint64(meta[tabAt+8*(spans[i].tab+int64(j)):], uint64(pg))
		}
	}
	for i, r := range sel {
		le.PutUint32(meta[12*n+4*i:], uint32(r))
	}

	b := &g.buf
	before := g.buf
	dim, qDim, kvDim, ffn := int64(c.Dim), int64(c.Heads*c.HeadDim), g.kvDim(), int64(c.FFNDim)
	nsplit := g.attSplits(maxLen, n)
	rowsNeed := int64(n)
	if rowsNeed > b.rows || b.x == 0 {
		var have int64
		for _, x := range []struct {
			p    *cu.DevicePtr
			size int64
		}{{&b.x, dim}, {&b.xn, dim}, {&b.q, qDim}, {&b.k, kvDim}, {&b.v, kvDim}, {&b.att, qDim}, {&b.h, ffn}} {
			have = 0
			if *x.p != 0 {
				cu.MemFree(*x.p)
				*x.p = 0
			}
			if err := g.ensure(x.p, &have, rowsNeed*x.size*4, fmt.Sprintf("activations of %d tokens", n)); err != nil {
				b.rows = 0
				return 0, err
			}
		}
		b.rows = rowsNeed
	}
	if err := g.ensure(&b.logits, &b.sel, int64(nsel)*int64(c.Vocab)*4, fmt.Sprintf("logits of %d rows", nsel)); err != nil {
		return 0, err
	}
	if err := g.ensure(&b.partial, &b.part, int64(n)*int64(c.Heads)*nsplit*int64(c.HeadDim+2)*4, "attention partials"); err != nil {
		return 0, err
	}
	if metaBytes > b.metaCap {
		// With room to spare: the page tables grow as sequences do, and a
		// new buffer drops the captured graphs.
		if err := g.ensure(&b.meta, &b.metaCap, max(2*metaBytes, 64<<10), "step metadata"); err != nil {
			return 0, err
		}
	}
	if need := int64(n) * int64(c.Heads) * 4; need > b.countCap {
		if err := g.ensure(&b.count, &b.countCap, need, "attention counters"); err != nil {
			return 0, err
		}
		if err := g.d.st.zero(b.count, need); err != nil {
			return 0, err
		}
	}
	if b.ids == 0 {
		var have int64
		if err := g.ensure(&b.ids, &have, 4*4096, "argmax ids"); err != nil {
			return 0, err
		}
	}
	if gemm {
		if err := g.gemmBuffers(int64(n), spans); err != nil {
			return 0, err
		}
	}
	if err := g.d.fence(); err != nil {
		return 0, err
	}
	if err := g.d.st.upload(b.meta, unsafe.Pointer(&meta[0]), metaBytes); err != nil {
		return 0, fmt.Errorf("cuda: uploading step metadata: %w", err)
	}
	if g.buf != before {
		g.dropGraphs() // captured graphs name the old buffers
	}
	m := stepMeta{ids: b.meta, pos: b.meta + cu.DevicePtr(4*n), off: b.meta + cu.DevicePtr(8*n),
		sel: b.meta + cu.DevicePtr(12*n), tab: b.meta + cu.DevicePtr(tabAt)}

	// A batch-1 decode step (always on the matrix-vector path) folds RoPE
	// and the cache store into the attention launch (measured on the H100:
	// +2% at batch 1, but 11% and 24% slower steps at batch 32 and 256, where
	// every split block redoing the rotation costs more than the launch it
	// saves).
	decode := n == 1 && !g.noFuse
	enqueue := func() error {
		if gemm {
			return g.enqueueGemm(n, nsel, nsplit, spans, m)
		}
		return g.enqueue(n, nsel, nsplit, decode, m)
	}
	// Decode-sized steps are captured as CUDA graphs and replayed, on either
	// path, unless a sequence gets GEMM attention (its launches depend on
	// host-side positions).
	capturable := n <= maxGraphRows
	for _, sp := range spans {
		capturable = capturable && !(gemm && sp.n >= attGemmRows)
	}
	failed := g.graphFailed
	if gemm {
		failed = g.gemmGraphFailed
	}
	var err error
	key := graphKey{n, nsel, nsplit, gemm, decode}
	if ex, ok := g.graphs[key]; ok && capturable {
		err = g.d.st.run(ex)
	} else if g.UseGraphs && !failed && capturable {
		var ex graph
		if ex, err = g.d.st.capture(enqueue); err != nil {
			// Run this kind of step without graphs from now on; the error
			// is kept for reports.
			if gemm {
				g.gemmGraphFailed = true
			} else {
				g.graphFailed = true
			}
			g.GraphError = err
			err = enqueue()
		} else {
			if len(g.graphs) >= maxGraphs {
				g.dropGraphs()
			}
			g.graphs[key] = ex
			err = g.d.st.run(ex)
		}
	} else {
		err = enqueue()
	}
	if err != nil {
		return 0, err
	}
	for _, s := range steps {
		s.Cache.Len += len(s.Tokens)
	}
	return nsel, nil
}

// stepMeta points at a step's per-row metadata on the device, uploaded in one
// buffer: ids, pos (each row's absolute position), off (the offset of each
// row's page table in tab) and sel (the rows whose logits are kept), int32
// each, then tab, the page addresses (u64). The offsets of all but tab
// depend only on the rows and selected rows, so captured graphs stay valid
// while the tables change.
type stepMeta struct {
	ids, pos, off, sel, tab cu.DevicePtr
}

// enqueue launches one forward step's kernels (embedding to lm_head).
func (g *Model) enqueue(n, nsel int, nsplit int64, decode bool, m stepMeta) error {
	c := &g.Config
	b := &g.buf
	dim := int64(c.Dim)
	N := int64(n)
	if err := g.embedRows(g.embed, m.ids, b.x, N); err != nil {
		return err
	}
	eps := float64(c.NormEps)
	var errs []error
	do := func(err error) { errs = append(errs, err) }
	for l := range g.layers {
		L := &g.layers[l]
		// Up to fuseNormRows rows, RMSNorm is fused into the q/k/v and
		// gate/up matvecs (fewer launches); for more rows the fused kernels'
		// register pressure costs more than the separate norm (measured:
		// batch-32 decode and prefill ran at half speed fused).
		xin, nw := b.x, L.attnNorm
		if N > fuseNormRows {
			do(g.d.launch("rmsnorm", dim3{x: n}, normThreads, 0, b.x, L.attnNorm, b.xn, cu.DevicePtr(0), cu.DevicePtr(0), N, dim, eps))
			xin, nw = b.xn, 0
		}
		do(g.matvecs([]*weight{L.q, L.k, L.v}, xin, []cu.DevicePtr{b.q, b.k, b.v}, N, nw))
		if decode {
			do(g.decodeAttention(int64(l), N, nsplit, m))
		} else {
			do(g.ropeStore(int64(l), N, m))
			do(g.splitAttention(int64(l), 0, N, nsplit, m))
		}
		do(g.matvec(L.o, b.att, b.x, N, true, 0))
		xin, nw = b.x, L.ffnNorm
		if N > fuseNormRows {
			do(g.d.launch("rmsnorm", dim3{x: n}, normThreads, 0, b.x, L.ffnNorm, b.xn, cu.DevicePtr(0), cu.DevicePtr(0), N, dim, eps))
			xin, nw = b.xn, 0
		}
		do(g.swiglu(L.gate, L.up, xin, b.h, N, nw))
		do(g.matvec(L.down, b.h, b.x, N, true, 0))
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if n == 1 && nsel == 1 && g.oneRow(g.output) {
		// One row: the final RMSNorm is fused into the lm_head.
		do(g.matvec(g.output, b.x, b.logits, 1, false, g.norm))
		return errors.Join(errs...)
	}
	do(g.d.launch("rmsnorm", dim3{x: nsel}, normThreads, 0, b.x, g.norm, b.xn, cu.DevicePtr(0), m.sel, int64(nsel), dim, eps))
	do(g.matvec(g.output, b.xn, b.logits, int64(nsel), false, 0))
	return errors.Join(errs...)
}

// graphKey names a captured step: everything its kernel arguments depend on
// besides the (fixed) weight and scratch pointers.
type graphKey struct {
	n, nsel      int
	nsplit       int64
	gemm, decode bool
}

const (
	maxGraphRows = 64 // steps of at most this many tokens are captured (decode)
	fuseNormRows = 8  // steps of at most this many tokens use the RMSNorm-fused matvecs
	maxGraphs    = 64 // captured steps kept at once
)

func (g *Model) dropGraphs() {
	for k, ex := range g.graphs {
		ex.destroy()
		delete(g.graphs, k)
	}
}

// kernelFamilies are the per-format kernel families kernelName names.
var kernelFamilies = []string{"matvec_", "swiglu_", "mv1_", "sw1_"}

// kernelNames caches the per-format kernel names by [family, format, n]: n
// is the activation rows per pass for matvec_/swiglu_ ("matvec_q4_0_8"),
// and for mv1_/sw1_ the bits of the wide grouped kernel ("mv1_grouped4"), 1
// for q4_0's whole-block kernel ("mv1_q4_0w") or 0 for the format's own
// ("mv1_q4_0").
var kernelNames = func() map[[3]int]string {
	m := map[[3]int]string{}
	for f, name := range fmtNames {
		for _, nt := range []int{1, 8, 32} {
			m[[3]int{0, f, nt}] = fmt.Sprintf("matvec_%s_%d", name, nt)
			m[[3]int{1, f, nt}] = fmt.Sprintf("swiglu_%s_%d", name, nt)
		}
		m[[3]int{2, f, 0}], m[[3]int{3, f, 0}] = "mv1_"+name, "sw1_"+name
	}
	for _, bits := range []int{2, 3, 4} {
		m[[3]int{2, fmtGrouped, bits}] = fmt.Sprintf("mv1_grouped%d", bits)
		m[[3]int{3, fmtGrouped, bits}] = fmt.Sprintf("sw1_grouped%d", bits)
	}
	m[[3]int{2, fmtQ4_0, 1}], m[[3]int{3, fmtQ4_0, 1}] = "mv1_q4_0w", "sw1_q4_0w"
	return m
}()

func kernelName(family string, format int, n int64) string {
	return kernelNames[[3]int{slices.Index(kernelFamilies, family), format, int(n)}]
}

// tile picks the activation rows per matvec pass.
func tile(n int64) int64 {
	switch {
	case n <= 1:
		return 1
	case n <= 8:
		return 8
	}
	return 32
}

// matvec launches dst (+)= W x over n activation rows; with normw set, x is
// RMS-normalised first (fused RMSNorm, epsilon of the model).
func (g *Model) matvec(w *weight, x, dst cu.DevicePtr, n int64, add bool, normw cu.DevicePtr) error {
	mode := int64(0)
	if add {
		mode = 1
	}
	if n == 1 && g.oneRow(w) {
		return g.mv1([]*weight{w}, x, []cu.DevicePtr{dst}, mode, normw)
	}
	nt := tile(n)
	args := append(w.args(), x, dst, n, int64(w.rows), int64(w.cols), mode, normw, float64(g.NormEps))
	return g.d.launch(kernelName("matvec_", w.format, nt),
		dim3{x: (w.rows + mvRowsPerBlk - 1) / mvRowsPerBlk, y: int((n + nt - 1) / nt)}, 32*mvRowsPerBlk, 0, args...)
}

// swiglu launches dst = silu(Gate xn) * (Up xn) with xn = RMSNorm(x, normw)
// (normw 0: xn = x).
func (g *Model) swiglu(gate, up *weight, x, dst cu.DevicePtr, n int64, normw cu.DevicePtr) error {
	if n == 1 && g.oneRow(gate) && up.format == gate.format {
		args := append(append(gate.args(), up.args()...), dst, int64(gate.rows), x, int64(gate.cols), normw, float64(g.NormEps))
		return g.d.launch(mv1Name("sw1_", gate, up), dim3{x: g.mv1Blocks(gate.rows)}, mv1Threads, gate.cols*4, args...)
	}
	nt := tile(n)
	args := append(gate.args(), up.data, up.scale, up.zero, up.gidx, x, dst, n, int64(gate.rows), int64(gate.cols), normw, float64(g.NormEps))
	return g.d.launch(kernelName("swiglu_", gate.format, nt),
		dim3{x: (gate.rows + mvRowsPerBlk - 1) / mvRowsPerBlk, y: int((n + nt - 1) / nt)}, 32*mvRowsPerBlk, 0, args...)
}

// oneRow reports whether w can use the one-row kernels (mv1_, sw1_): rows a
// multiple of 8 long and short enough for x to fit in shared memory.
func (g *Model) oneRow(w *weight) bool {
	return w.cols%8 == 0 && w.cols*4 <= mv1MaxSmem
}

// mv1Name names the one-row kernel (prefix "mv1_" or "sw1_") for weights ws
// of one format: grouped weights of 2-4 bits without act-order, whose groups
// are whole 32-column units, get the wide-load kernels (mv1_grouped4 ...),
// q4_0 the whole-block one (mv1_q4_0w).
func mv1Name(prefix string, ws ...*weight) string {
	w0 := ws[0]
	wide := w0.format == fmtGrouped && w0.p1 >= 2 && w0.p1 <= 4
	for _, w := range ws {
		wide = wide && w.gidx == 0 && w.p1 == w0.p1 && w.p0 == w0.p0 && w.p2 == w0.p2 && w.p0%32 == 0 && w.cols%32 == 0
	}
	if wide {
		return kernelName(prefix, fmtGrouped, w0.p1)
	}
	if w0.format == fmtQ4_0 {
		return kernelName(prefix, fmtQ4_0, 1) // whole 32-weight blocks per lane
	}
	return kernelName(prefix, w0.format, 0)
}

// mv1Blocks is the one-row kernels' grid for rows output rows: a warp per
// row, the grid striding over rows past eight blocks per multiprocessor.
func (g *Model) mv1Blocks(rows int) int {
	return min((rows+mv1Threads/32-1)/(mv1Threads/32), 8*max(g.d.SMs, 1))
}

// mv1 launches dst[i] (+)= ws[i] x for one activation row and up to three
// weights of one format and width (q, k and v in one launch); mode 1 adds.
func (g *Model) mv1(ws []*weight, x cu.DevicePtr, dst []cu.DevicePtr, mode int64, normw cu.DevicePtr) error {
	var args []any
	var rows [3]int64
	for i := range 3 {
		j := min(i, len(ws)-1)
		args = append(args, ws[j].args()...)
		if i < len(ws) {
			rows[i] = int64(ws[i].rows)
		}
	}
	for i := range 3 {
		args = append(args, dst[min(i, len(dst)-1)])
	}
	total := rows[0] + rows[1] + rows[2]
	args = append(args, rows[0], rows[1], total, x, int64(ws[0].cols), mode, normw, float64(g.NormEps))
	return g.d.launch(mv1Name("mv1_", ws...), dim3{x: g.mv1Blocks(int(total))}, mv1Threads, ws[0].cols*4, args...)
}

// matvecs stores dst[i] = ws[i] x for n activation rows (RMS-normalised with
// normw when set): one launch for one row when the weights share a format
// and width, else one launch each.
func (g *Model) matvecs(ws []*weight, x cu.DevicePtr, dst []cu.DevicePtr, n int64, normw cu.DevicePtr) error {
	same := n == 1 && len(ws) <= 3
	for _, w := range ws {
		same = same && g.oneRow(w) && w.format == ws[0].format && w.cols == ws[0].cols
	}
	if same {
		return g.mv1(ws, x, dst, 0, normw)
	}
	for i, w := range ws {
		if err := g.matvec(w, x, dst[i], n, false, normw); err != nil {
			return err
		}
	}
	return nil
}

// attSplits picks attn_split's splits for a step of n rows whose longest
// sequence reaches maxLen positions: enough blocks to fill the device twice
// over (at least attMinChunk positions each), never more than attChunk
// positions per split. The count changes rarely as sequences grow, so
// captured decode graphs stay valid.
func (g *Model) attSplits(maxLen, n int) int64 {
	fill := (2*max(g.d.SMs, 1) + n*g.Heads - 1) / max(n*g.Heads, 1)
	minChunk := attMinChunk
	if g.attMin > 0 {
		minChunk = g.attMin
	}
	s := min(fill, (maxLen+minChunk-1)/minChunk)
	return int64(max(s, (maxLen+attChunk-1)/attChunk, 1))
}

func (g *Model) embedRows(w *weight, ids, dst cu.DevicePtr, n int64) error {
	args := append(w.args(), ids, dst, n, int64(w.cols))
	return g.d.launch("embed_"+fmtNames[w.format], dim3{x: int(n)}, 128, 0, args...)
}

// Forward runs the new tokens of every step (as infer.Runner.Forward) and
// returns logits: per step one row per new token with AllLogits, else one row
// for its last token.
func (g *Model) Forward(steps []Step) ([][][]float32, error) {
	defer g.d.bind()()
	nsel, err := g.run(steps)
	if err != nil {
		return nil, err
	}
	if err := g.d.st.sync(); err != nil {
		return nil, err
	}
	V := g.Vocab
	logits := make([]float32, nsel*V)
	if err := download(logits, g.buf.logits); err != nil {
		return nil, err
	}
	counts := make([]int, len(steps))
	for i, s := range steps {
		counts[i] = 1
		if s.AllLogits {
			counts[i] = len(s.Tokens)
		}
	}
	return infer.SplitLogits(logits, V, counts), nil
}

// runLast runs the steps with only each step's last-token logits kept
// (AllLogits ignored) and returns the number of rows.
func (g *Model) runLast(steps []Step) (int, error) {
	plain := make([]Step, len(steps))
	for i, s := range steps {
		plain[i] = Step{Cache: s.Cache, Tokens: s.Tokens}
	}
	return g.run(plain)
}

// Greedy runs the steps and returns, per step, the argmax of its last
// token's logits, computed on the device (only the ids come back). AllLogits
// is ignored.
func (g *Model) Greedy(steps []Step) ([]int, error) {
	defer g.d.bind()()
	nsel, err := g.runLast(steps)
	if err != nil {
		return nil, err
	}
	if nsel > 4096 {
		return nil, fmt.Errorf("cuda: greedy: %d sequences in one step, at most 4096", nsel)
	}
	if err := g.argmax(g.buf.logits, g.buf.ids, int64(nsel)); err != nil {
		return nil, err
	}
	if err := g.d.st.sync(); err != nil {
		return nil, err
	}
	ids := make([]int32, nsel)
	if err := download(ids, g.buf.ids); err != nil {
		return nil, err
	}
	out := make([]int, nsel)
	for i, v := range ids {
		out[i] = int(v)
	}
	return out, nil
}

// Sync waits for the device to finish queued work and reports a failed
// kernel.
func (g *Model) Sync() error {
	defer g.d.bind()()
	return g.d.st.sync()
}
