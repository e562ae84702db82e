//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/x448/float16"
	"gorgonia.org/cu"

	"qllama/infer"
)

const nanBits = 0x7fc00000

// devF32 uploads v; poisoned allocates n float32 filled with NaN.
func devF32(t *testing.T, v []float32) cu.DevicePtr {
	t.Helper()
	p, err := upload(dev, v, "test input")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cu.MemFree(p) })
	return p
}

func poisoned(t *testing.T, n int) cu.DevicePtr {
	t.Helper()
	p, err := dev.alloc(int64(n)*4, "test output")
	if err != nil {
		t.Fatal(err)
	}
	dev.fencePending = true // the memset runs on the legacy stream
	if err := cu.MemsetD32(p, nanBits, int64(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cu.MemFree(p) })
	return p
}

func fetch(t *testing.T, p cu.DevicePtr, n int) []float32 {
	t.Helper()
	if err := cu.Synchronize(); err != nil {
		t.Fatalf("kernel failed: %v", err)
	}
	out := make([]float32, n)
	if err := download(out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMatvec checks y = W x, y += W x and silu(W x)*(U x) for every format
// against the CPU Linear (same packed data) on fresh random inputs, for
// 1, 3, 8 and 37 activation rows and a shape whose rows are not a multiple
// of 8 (the slow path).
func TestMatvec(t *testing.T) {
	defer dev.bind()()
	g := &Model{d: dev, Config: infer.Config{NormEps: 1e-5}}
	rng := rand.New(rand.NewPCG(1, 2))
	// 9000 rows: more than the one-row kernels' grid covers at once.
	for _, shape := range [][2]int{{100, 256}, {24, 172}, {9000, 64}} {
		rows, cols := shape[0], shape[1]
		for _, f := range weightFormats {
			wv := randVec(rng, rows*cols, 0.05)
			uv := randVec(rng, rows*cols, 0.05)
			W, U := f.make(t, wv, rows, cols), f.make(t, uv, rows, cols)
			if W == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/%dx%d", f.name, rows, cols), func(t *testing.T) {
				defer dev.bind()() // a subtest runs on its own goroutine
				dw, err := dev.uploadWeight("w", W)
				if err != nil {
					t.Fatal(err)
				}
				defer dw.free()
				du, err := dev.uploadWeight("u", U)
				if err != nil {
					t.Fatal(err)
				}
				defer du.free()
				for _, n := range []int{1, 3, 8, 37} {
					x := randVec(rng, n*cols, 1)
					want := make([]float32, n*rows)
					W.MatMul(want, x, n)
					dx := devF32(t, x)
					// store
					dy := poisoned(t, n*rows)
					if err := g.matvec(dw, dx, dy, int64(n), false, 0); err != nil {
						t.Fatal(err)
					}
					if e := relErr(fetch(t, dy, n*rows), want); e > 1e-5 {
						t.Errorf("n=%d store: relative error %.3g", n, e)
					}
					// add
					base := randVec(rng, n*rows, 1)
					dy = devF32(t, base)
					if err := g.matvec(dw, dx, dy, int64(n), true, 0); err != nil {
						t.Fatal(err)
					}
					sum := make([]float32, len(base))
					for i := range sum {
						sum[i] = base[i] + want[i]
					}
					if e := relErr(fetch(t, dy, n*rows), sum); e > 1e-5 {
						t.Errorf("n=%d add: relative error %.3g", n, e)
					}
					// fused SwiGLU
					up := make([]float32, n*rows)
					U.MatMul(up, x, n)
					for i, gv := range want {
						sum[i] = float32(float64(gv) / (1 + math.Exp(-float64(gv))) * float64(up[i]))
					}
					dy = poisoned(t, n*rows)
					if err := g.swiglu(dw, du, dx, dy, int64(n), 0); err != nil {
						t.Fatal(err)
					}
					if e := relErr(fetch(t, dy, n*rows), sum); e > 1e-5 {
						t.Errorf("n=%d swiglu: relative error %.3g", n, e)
					}
					// fused RMSNorm: W rmsnorm(x, gw), and the SwiGLU pair on it
					gw := randVec(rng, cols, 1)
					xn := rmsNormRef(x, gw, n, cols, float64(g.NormEps))
					W.MatMul(want, xn, n)
					U.MatMul(up, xn, n)
					dg := devF32(t, gw)
					dy = poisoned(t, n*rows)
					if err := g.matvec(dw, dx, dy, int64(n), false, dg); err != nil {
						t.Fatal(err)
					}
					if e := relErr(fetch(t, dy, n*rows), want); e > 1e-5 {
						t.Errorf("n=%d rmsnorm+matvec: relative error %.3g", n, e)
					}
					for i, gv := range want {
						sum[i] = float32(float64(gv) / (1 + math.Exp(-float64(gv))) * float64(up[i]))
					}
					dy = poisoned(t, n*rows)
					if err := g.swiglu(dw, du, dx, dy, int64(n), dg); err != nil {
						t.Fatal(err)
					}
					if e := relErr(fetch(t, dy, n*rows), sum); e > 1e-5 {
						t.Errorf("n=%d rmsnorm+swiglu: relative error %.3g", n, e)
					}
					// q, k and v in one launch (one row): W, U, W.
					dys := []cu.DevicePtr{poisoned(t, n*rows), poisoned(t, n*rows), poisoned(t, n*rows)}
					if err := g.matvecs([]*weight{dw, du, dw}, dx, dys, int64(n), dg); err != nil {
						t.Fatal(err)
					}
					for i, ref := range [][]float32{want, up, want} {
						if e := relErr(fetch(t, dys[i], n*rows), ref); e > 1e-5 {
							t.Errorf("n=%d matvecs output %d: relative error %.3g", n, i, e)
						}
					}
				}
			})
		}
	}
}

// rmsNormRef normalises n rows of x (float64 sums, as infer's rmsNorm).
func rmsNormRef(x, w []float32, n, dim int, eps float64) []float32 {
	out := make([]float32, len(x))
	for r := 0; r < n; r++ {
		var ss float64
		for _, v := range x[r*dim : (r+1)*dim] {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(float64(float32(ss/float64(dim)))+eps))
		for i := 0; i < dim; i++ {
			out[r*dim+i] = w[i] * (x[r*dim+i] * inv)
		}
	}
	return out
}

// TestEmbed gathers rows of every format and compares them with the CPU
// decoder (infer's Row or quant's Dequantize).
func TestEmbed(t *testing.T) {
	defer dev.bind()()
	g := &Model{d: dev}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, shape := range [][2]int{{50, 256}, {40, 172}} {
		rows, cols := shape[0], shape[1]
		for _, f := range weightFormats {
			W := f.make(t, randVec(rng, rows*cols, 1), rows, cols)
			if W == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/%dx%d", f.name, rows, cols), func(t *testing.T) {
				defer dev.bind()() // a subtest runs on its own goroutine
				full := dequant(t, W)
				dw, err := dev.uploadWeight("embd", W)
				if err != nil {
					t.Fatal(err)
				}
				defer dw.free()
				n := 19
				ids := make([]int32, n)
				want := make([]float32, 0, n*cols)
				for i := range ids {
					ids[i] = int32(rng.IntN(rows))
					want = append(want, full[int(ids[i])*cols:(int(ids[i])+1)*cols]...)
				}
				dids, err := upload(dev, ids, "ids")
				if err != nil {
					t.Fatal(err)
				}
				defer cu.MemFree(dids)
				dy := poisoned(t, n*cols)
				if err := g.embedRows(dw, dids, dy, int64(n)); err != nil {
					t.Fatal(err)
				}
				if e := relErr(fetch(t, dy, n*cols), want); e > 1e-6 {
					t.Errorf("relative error %.3g", e)
				}
			})
		}
	}
}

// TestRMSNorm compares the kernel with a float64 recomputation, with and
// without a row selection.
func TestRMSNorm(t *testing.T) {
	defer dev.bind()()
	rng := rand.New(rand.NewPCG(5, 6))
	for _, dim := range []int{64, 2048, 100} {
		n := 7
		x, w := randVec(rng, n*dim, 3), randVec(rng, dim, 1)
		sel := []int32{6, 0, 3}
		eps := 1e-5
		ref := func(r int) []float32 {
			var ss float64
			for _, v := range x[r*dim : (r+1)*dim] {
				ss += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(ss/float64(dim)+eps)
			out := make([]float32, dim)
			for i := range out {
				out[i] = float32(float64(w[i]) * float64(x[r*dim+i]) * inv)
			}
			return out
		}
		var want, wantSel []float32
		for r := 0; r < n; r++ {
			want = append(want, ref(r)...)
		}
		for _, r := range sel {
			wantSel = append(wantSel, ref(int(r))...)
		}
		dx, dw := devF32(t, x), devF32(t, w)
		dy := poisoned(t, n*dim)
		dh, err := dev.alloc(int64(2*n*dim), "half output")
		if err != nil {
			t.Fatal(err)
		}
		dev.fencePending = true
		cu.MemsetD16(dh, 0x7e00, int64(n*dim)) // FP16 NaN
		if err := dev.launch("rmsnorm", dim3{x: n}, normThreads, 0, dx, dw, dy, dh, cu.DevicePtr(0), int64(n), int64(dim), eps); err != nil {
			t.Fatal(err)
		}
		if e := relErr(fetch(t, dy, n*dim), want); e > 1e-6 {
			t.Errorf("dim %d: relative error %.3g", dim, e)
		}
		hb := make([]uint16, n*dim)
		if err := download(hb, dh); err != nil {
			t.Fatal(err)
		}
		gotH := make([]float32, n*dim)
		for i, b := range hb {
			gotH[i] = float16.Frombits(b).Float32()
		}
		if e := relErr(gotH, want); e > 1e-3 {
			t.Errorf("dim %d: FP16 output relative error %.3g", dim, e)
		}
		cu.MemFree(dh)
		dsel, err := upload(dev, sel, "sel")
		if err != nil {
			t.Fatal(err)
		}
		dy = poisoned(t, len(sel)*dim)
		if err := dev.launch("rmsnorm", dim3{x: len(sel)}, normThreads, 0, dx, dw, dy, cu.DevicePtr(0), dsel, int64(len(sel)), int64(dim), eps); err != nil {
			t.Fatal(err)
		}
		if e := relErr(fetch(t, dy, len(sel)*dim), wantSel); e > 1e-6 {
			t.Errorf("dim %d selected rows: relative error %.3g", dim, e)
		}
		cu.MemFree(dsel)
	}
}

// TestRopeAttention runs rope_store and the split attention for two
// sequences (300 positions: two splits; and 5) fed in one prefill step, on
// paged caches of either element type whose page tables list their pages out
// of order, and compares q after rotation and every row's attention output
// with a float64 recomputation of causal grouped-query attention (over keys
// and values rounded to FP16 for an FP16 cache).
func TestRopeAttention(t *testing.T) {
	for _, kv := range []string{KVF32, KVF16} {
		t.Run(kv, func(t *testing.T) { testRopeAttention(t, kv) })
	}
}

func testRopeAttention(t *testing.T, kvType string) {
	defer dev.bind()()
	rng := rand.New(rand.NewPCG(7, 8))
	const heads, kvheads, hd, layers, layer = 8, 2, 64, 2, 1
	lens := []int{300, 5}
	invFreq := make([]float64, hd/2)
	for i := range invFreq {
		invFreq[i] = 1 / math.Pow(500000, float64(2*i)/hd)
	}
	qDim, kvDim := heads*hd, kvheads*hd
	var n int
	for _, l := range lens {
		n += l
	}
	q, k, v := randVec(rng, n*qDim, 1), randVec(rng, n*kvDim, 1), randVec(rng, n*kvDim, 1)
	g := &Model{d: dev, Config: infer.Config{Layers: layers, Heads: heads, KVHeads: kvheads, HeadDim: hd}, graphs: map[graphKey]graph{}}
	if err := g.SetKVType(kvType); err != nil {
		t.Fatal(err)
	}
	defer g.freeKV()
	// Per-row metadata: ids (unused) | pos | off | sel (none) | page tables,
	// as Model.run lays it out; each sequence's pages in reverse order.
	var pos, off []int32
	var tab []uint64
	var spans []span
	for _, l := range lens {
		c := &Cache{g: g}
		if err := c.reserve(l); err != nil {
			t.Fatal(err)
		}
		defer c.Free()
		spans = append(spans, span{r0: int64(len(pos)), n: int64(l), tab: int64(len(tab))})
		for j := 0; j < l; j++ {
			pos, off = append(pos, int32(j)), append(off, int32(len(tab)))
		}
		for j := len(c.pages) - 1; j >= 0; j-- {
			tab = append(tab, uint64(c.pages[j]))
		}
	}
	meta := append(append(make([]int32, n), pos...), off...)
	if len(meta)%2 == 1 {
		meta = append(meta, 0)
	}
	for _, p := range tab {
		meta = append(meta, int32(uint32(p)), int32(uint32(p>>32)))
	}
	dmeta, err := upload(dev, meta, "step metadata")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(dmeta)
	m := stepMeta{ids: dmeta, pos: dmeta + cu.DevicePtr(4*n), off: dmeta + cu.DevicePtr(8*n), tab: dmeta + cu.DevicePtr(4*(len(meta)-2*len(tab)))}
	dq, dk, dv := devF32(t, q), devF32(t, k), devF32(t, v)
	dfreq, _ := upload(dev, invFreq, "freq")
	defer func() { cu.MemFree(dfreq) }()
	g.invFreq = dfreq
	g.buf.q, g.buf.k, g.buf.v = dq, dk, dv
	if err := g.ropeStore(layer, int64(n), m); err != nil {
		t.Fatal(err)
	}
	// Three blocks per row: the rotations and copies are spread over them.
	if err := dev.launch(g.kvNames.rope, dim3{x: n, y: 3}, 128, 0, dq, dk, dv, m.pos, m.tab, m.off, dfreq,
		int64(layer), int64(heads), int64(kvheads), int64(hd), int64(n)); err != nil {
		t.Fatal(err)
	}
	// rope_store ran twice: q is rotated twice, the cache holds k rotated
	// once (stored twice).
	gotQ2 := fetch(t, dq, n*qDim)
	scale := 1 / math.Sqrt(hd)
	var gotAtt [][]float32
	// Splits of at most 256 positions of the 300-row sequence (2, 3) and
	// of 15 positions (20: most of the 5-row sequence's splits are empty);
	// count poisoned-free (zero) as the model keeps it, and zero again after.
	count, err := dev.alloc(int64(n*heads*4), "count")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(count)
	if err := dev.st.zero(count, int64(n*heads*4)); err != nil {
		t.Fatal(err)
	}
	g.buf.count = count
	for _, nsplit := range []int{2, 3, 20} {
		g.buf.partial = poisoned(t, n*heads*nsplit*(hd+2))
		g.buf.att = poisoned(t, n*qDim)
		g.buf.q = dq
		if err := g.splitAttention(layer, 0, int64(n), int64(nsplit), m); err != nil {
			t.Fatal(err)
		}
		gotAtt = append(gotAtt, fetch(t, g.buf.att, n*qDim))
		cnt := make([]int32, n*heads)
		if err := download(cnt, count); err != nil {
			t.Fatal(err)
		}
		for i, v := range cnt {
			if v != 0 {
				t.Fatalf("nsplit %d: counter %d left at %d", nsplit, i, v)
			}
		}
	}
	// One split is only for sequences of at most 256 positions: the kernel
	// writes NaN rather than reading past its score buffer.
	g.buf.att = devF32(t, make([]float32, n*qDim))
	if err := g.splitAttention(layer, 0, int64(n), 1, m); err != nil {
		t.Fatal(err)
	}
	if got := fetch(t, g.buf.att, n*qDim); !math.IsNaN(float64(got[299*qDim])) || math.IsNaN(float64(got[0])) {
		t.Errorf("one split over 300 positions: row 299 %v (want NaN), row 0 %v", got[299*qDim], got[0])
	}
	// The GEMM path's Model.attention, with the 300-row sequence as two
	// spans (rows 0-99, then 100-299 at start 100, as a prefill in two
	// steps) and the 5-row one by the split kernels at row offset 300. The
	// long spans take the GEMMs (float32 and TF32, query chunks of 512 and
	// 128) over keys and values gathered from the pages, or, for an FP16
	// cache, flash_attn_f16 (FP16 q and probabilities).
	bl, err := dev.blasHandle()
	if err != nil {
		t.Fatal(err)
	}
	spans = []span{{r0: 0, n: 100, tab: spans[0].tab}, {r0: 100, n: 200, start: 100, tab: spans[0].tab}, spans[1]}
	var tf32 []int
	type variant struct {
		precise, flash bool
		attQ           int64
	}
	variants := []variant{{true, false, 0}, {true, false, 128}, {false, false, 0}, {false, false, 128}}
	if kvType == KVF16 {
		variants = append(variants, variant{flash: true})
	}
	for _, v := range variants {
		g.precise, g.attQ, g.noFlash = v.precise, v.attQ, !v.flash
		if v.flash != g.flashOK() {
			t.Fatalf("variant %+v: flashOK %v", v, g.flashOK())
		}
		g.buf.att = poisoned(t, n*qDim)
		g.buf.partial = poisoned(t, n*heads*(hd+2))
		if err := g.gemmBuffers(0, spans); err != nil {
			t.Fatal(err)
		}
		if err := g.attention(bl, layer, spans, 1, m); err != nil {
			t.Fatal(err)
		}
		if !v.precise {
			tf32 = append(tf32, len(gotAtt))
		}
		gotAtt = append(gotAtt, fetch(t, g.buf.att, n*qDim))
	}
	// attn_decode: the last row of each sequence as a decode step (positions
	// 299 and 4) from raw q, k and v, over caches whose rows at those
	// positions are poisoned first: it must rotate q and k itself, use the new
	// key and value without reading them back, and store them.
	last := []int{lens[0] - 1, n - 1}
	elem := 4
	if kvType == KVF16 {
		elem = 2
	}
	rowAddr := func(i, kv int) cu.DevicePtr {
		p := int(pos[last[i]])
		page := tab[int(off[last[i]])+p/kvPage]
		return cu.DevicePtr(page) + cu.DevicePtr(((layer*2+kv)*kvPage+p%kvPage)*kvDim*elem)
	}
	junk := make([]byte, kvDim*elem)
	for i := range junk {
		junk[i] = 0xff // NaN in float32 and FP16
	}
	for i := range last {
		for kv := range 2 {
			if err := dev.st.upload(rowAddr(i, kv), unsafe.Pointer(&junk[0]), int64(len(junk))); err != nil {
				t.Fatal(err)
			}
		}
	}
	dmeta2, err := upload(dev, append([]int32{0, 0, pos[last[0]], pos[last[1]], off[last[0]], off[last[1]]}, meta[len(meta)-2*len(tab):]...), "decode metadata")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(dmeta2)
	m2 := stepMeta{ids: dmeta2, pos: dmeta2 + 8, off: dmeta2 + 16, tab: dmeta2 + 24}
	pick := func(x []float32, width int) []float32 {
		return append(slices.Clone(x[last[0]*width:(last[0]+1)*width]), x[last[1]*width:(last[1]+1)*width]...)
	}
	g.buf.q, g.buf.k, g.buf.v = devF32(t, pick(q, qDim)), devF32(t, pick(k, kvDim)), devF32(t, pick(v, kvDim))
	var gotDec [][]float32
	for _, nsplit := range []int{2, 20} {
		g.buf.partial = poisoned(t, 2*heads*nsplit*(hd+2))
		g.buf.att = poisoned(t, 2*qDim)
		if err := g.decodeAttention(layer, 2, int64(nsplit), m2); err != nil {
			t.Fatal(err)
		}
		gotDec = append(gotDec, fetch(t, g.buf.att, 2*qDim))
	}
	var gotRows [2][2][]float32 // [row][k|v]
	for i := range last {
		for kv := range 2 {
			if elem == 4 {
				gotRows[i][kv] = fetch(t, rowAddr(i, kv), kvDim)
				continue
			}
			h := make([]uint16, kvDim)
			if err := download(h, rowAddr(i, kv)); err != nil {
				t.Fatal(err)
			}
			for _, b := range h {
				gotRows[i][kv] = append(gotRows[i][kv], float16.Frombits(b).Float32())
			}
		}
	}
	for _, p := range []cu.DevicePtr{g.buf.sc, g.buf.kvg, g.buf.u, g.buf.xh, g.buf.wh} {
		cu.MemFree(p)
	}

	// Reference.
	rot := func(x []float64, p int) {
		for i := 0; i < hd/2; i++ {
			a := float64(float32(p) * float32(invFreq[i]))
			c, s := math.Cos(a), math.Sin(a)
			x1, x2 := x[i], x[i+hd/2]
			x[i], x[i+hd/2] = x1*c-x2*s, x2*c+x1*s
		}
	}
	rq := make([]float64, n*qDim)
	rq2 := make([]float64, n*qDim)
	rk := make([]float64, n*kvDim)
	rv := make([]float64, n*kvDim)
	for i := range rq {
		rq[i] = float64(q[i])
	}
	for i := range rk {
		rk[i] = float64(k[i])
	}
	for r := 0; r < n; r++ {
		for h := 0; h < heads; h++ {
			rot(rq[r*qDim+h*hd:r*qDim+(h+1)*hd], int(pos[r]))
		}
		for h := 0; h < kvheads; h++ {
			rot(rk[r*kvDim+h*hd:r*kvDim+(h+1)*hd], int(pos[r]))
		}
	}
	copy(rq2, rq)
	for r := 0; r < n; r++ {
		for h := 0; h < heads; h++ {
			rot(rq2[r*qDim+h*hd:r*qDim+(h+1)*hd], int(pos[r]))
		}
	}
	round := func(x float64) float64 { return x }
	if kvType == KVF16 {
		round = func(x float64) float64 { return float64(float16.Fromfloat32(float32(x)).Float32()) }
	}
	for i := range rk {
		rk[i], rv[i] = round(rk[i]), round(float64(v[i]))
	}
	wantQ2 := make([]float32, n*qDim)
	for i := range wantQ2 {
		wantQ2[i] = float32(rq2[i])
	}
	if e := relErr(gotQ2, wantQ2); e > 1e-6 {
		t.Errorf("q rotated twice: relative error %.3g", e)
	}
	// attRow is the reference attention of row r (position j of the
	// sequence whose first row is start) for the rotated queries qr.
	attRow := func(qr []float64, r, start, j int) []float32 {
		out := make([]float32, qDim)
		for h := 0; h < heads; h++ {
			kh := h / (heads / kvheads)
			sc := make([]float64, j+1)
			m := math.Inf(-1)
			for p := 0; p <= j; p++ {
				var d float64
				for i := 0; i < hd; i++ {
					d += qr[r*qDim+h*hd+i] * rk[(start+p)*kvDim+kh*hd+i]
				}
				sc[p] = d * scale
				m = math.Max(m, sc[p])
			}
			var sum float64
			for p := range sc {
				sc[p] = math.Exp(sc[p] - m)
				sum += sc[p]
			}
			for i := 0; i < hd; i++ {
				var o float64
				for p := range sc {
					o += sc[p] * rv[(start+p)*kvDim+kh*hd+i]
				}
				out[h*hd+i] = float32(o / sum)
			}
		}
		return out
	}
	// The attention above read q rotated twice (rq2); the decode step q
	// rotated once.
	var wantAtt, wantDec []float32
	start := 0
	for _, l := range lens {
		for j := 0; j < l; j++ {
			wantAtt = append(wantAtt, attRow(rq2, start+j, start, j)...)
		}
		wantDec = append(wantDec, attRow(rq, start+l-1, start, l-1)...)
		start += l
	}
	decTol := 1e-5
	if kvType == KVF16 {
		decTol = 1e-3 // the new key rounded from float32 on the device, from float64 here
	}
	for i, got := range gotDec {
		if e := relErr(got, wantDec); e > decTol {
			t.Errorf("attn_decode (split variant %d): relative error %.3g", i, e)
		}
	}
	for i, r := range last {
		for kv, want64 := range [][]float64{rk[r*kvDim : (r+1)*kvDim], rv[r*kvDim : (r+1)*kvDim]} {
			want := make([]float32, kvDim)
			for j, x := range want64 {
				want[j] = float32(x)
			}
			if e := relErr(gotRows[i][kv], want); e > decTol {
				t.Errorf("attn_decode: stored cache row %d (k|v %d): relative error %.3g", r, kv, e)
			}
		}
	}
	for i, got := range gotAtt {
		tol := 1e-5
		if kvType == KVF16 {
			tol = 1e-4 // keys rounded from float32 on the device, from float64 here
		}
		if slices.Contains(tf32, i) {
			tol = 2e-3 // TF32 (or FP16) scores and products: 10-bit mantissas
		}
		if e := relErr(got, wantAtt); e > tol {
			t.Errorf("attention (variant %d): relative error %.3g", i, e)
		}
	}
}

// TestArgmax compares the device argmax with infer.Argmax, ties included
// (the first index wins).
func TestArgmax(t *testing.T) {
	defer dev.bind()()
	rng := rand.New(rand.NewPCG(9, 10))
	const n, vocab = 5, 128256
	x := randVec(rng, n*vocab, 3)
	// Row 1: a tie between two positions; row 2: maximum at the very end.
	x[1*vocab+777], x[1*vocab+99999] = 50, 50
	x[3*vocab-1] = 60
	dx := devF32(t, x)
	ids, err := dev.alloc(4*n, "ids")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(ids)
	dev.fencePending = true
	cu.MemsetD32(ids, 0xffffffff, n)
	g := &Model{d: dev, Config: infer.Config{Vocab: vocab}}
	if err := g.argmax(dx, ids, n); err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(g.buf.amax)
	if err := cu.Synchronize(); err != nil {
		t.Fatal(err)
	}
	got := make([]int32, n)
	if err := cu.MemcpyDtoH(unsafe.Pointer(&got[0]), ids, 4*n); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < n; r++ {
		if want := infer.Argmax(x[r*vocab : (r+1)*vocab]); int(got[r]) != want {
			t.Errorf("row %d: got %d, want %d", r, got[r], want)
		}
	}
}

// TestGemmLinear checks the tensor-core path's linear layer (dequantise to
// FP16 in row slices, FP16 activations, cuBLAS GEMM with float32
// accumulation; float32 weights stay float32) against the CPU Linear for
// every format, storing and adding, with one slice and with several.
func TestGemmLinear(t *testing.T) {
	defer dev.bind()()
	bl, err := dev.blasHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cuBLAS %d from %s", bl.Version, bl.Path)
	rng := rand.New(rand.NewPCG(11, 12))
	// 9000 rows: more than the one-row kernels' grid covers at once.
	for _, shape := range [][2]int{{100, 256}, {24, 172}, {9000, 64}} {
		rows, cols := shape[0], shape[1]
		for _, f := range weightFormats {
			wv := randVec(rng, rows*cols, 0.05)
			W := f.make(t, wv, rows, cols)
			if W == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/%dx%d", f.name, rows, cols), func(t *testing.T) {
				defer dev.bind()()
				dw, err := dev.uploadWeight("w", W)
				if err != nil {
					t.Fatal(err)
				}
				defer dw.free()
				tol := 3e-3 // FP16 weights and activations
				if dw.format == fmtF32 {
					tol = 1e-5
				}
				for _, dq := range []int64{0, 7} {
					g := &Model{d: dev, dqRows: dq}
					for _, n := range []int{9, 37} {
						x := randVec(rng, n*cols, 1)
						want := make([]float32, n*rows)
						W.MatMul(want, x, n)
						dx := devF32(t, x)
						var have int64
						if err := g.ensure(&g.buf.xh, &have, int64(n*cols*2), "x"); err != nil {
							t.Fatal(err)
						}
						if err := g.ensure(&g.buf.wh, &g.buf.whCap, dequantHalfs*2, "w"); err != nil {
							t.Fatal(err)
						}
						if err := dev.launch("to_half", dim3{x: (n*cols + 255) / 256}, 256, 0, dx, g.buf.xh, int64(n*cols)); err != nil {
							t.Fatal(err)
						}
						dy := poisoned(t, n*rows)
						if err := g.linear(bl, dw, dx, dy, int64(n), false); err != nil {
							t.Fatal(err)
						}
						if e := relErr(fetch(t, dy, n*rows), want); e > tol {
							t.Errorf("slices of %d rows, n=%d store: relative error %.3g", dq, n, e)
						}
						base := randVec(rng, n*rows, 1)
						dy = devF32(t, base)
						if err := g.linear(bl, dw, dx, dy, int64(n), true); err != nil {
							t.Fatal(err)
						}
						for i := range base {
							base[i] += want[i]
						}
						if e := relErr(fetch(t, dy, n*rows), base); e > tol {
							t.Errorf("slices of %d rows, n=%d add: relative error %.3g", dq, n, e)
						}
					}
					cu.MemFree(g.buf.xh)
					cu.MemFree(g.buf.wh)
				}
			})
		}
	}
}

// TestSiluMul checks the GEMM path's SwiGLU product in both output types.
func TestSiluMul(t *testing.T) {
	defer dev.bind()()
	rng := rand.New(rand.NewPCG(13, 14))
	const n = 1000
	a, b := randVec(rng, n, 4), randVec(rng, n, 1)
	want := make([]float32, n)
	for i := range want {
		want[i] = float32(float64(a[i]) / (1 + math.Exp(-float64(a[i]))) * float64(b[i]))
	}
	da, db, out := devF32(t, a), devF32(t, b), poisoned(t, n)
	oh, err := dev.alloc(2*n, "half out")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(oh)
	if err := dev.launch("silu_mul", dim3{x: 4}, 256, 0, da, db, out, oh, int64(n)); err != nil {
		t.Fatal(err)
	}
	if e := relErr(fetch(t, out, n), want); e > 1e-6 {
		t.Errorf("float32 output: relative error %.3g", e)
	}
	h := make([]uint16, n)
	if err := download(h, oh); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n)
	for i, v := range h {
		got[i] = float16.Frombits(v).Float32()
	}
	if e := relErr(got, want); e > 1e-3 {
		t.Errorf("FP16 output: relative error %.3g", e)
	}
}

// TestMV1Name checks which one-row kernel each weight set gets: the wide
// grouped kernels only for 2-4 bits, no act-order, 32-column groups alike.
func TestMV1Name(t *testing.T) {
	gw := func(bits, gs, cols int, gidx cu.DevicePtr) *weight {
		return &weight{format: fmtGrouped, p0: int64(gs), p1: int64(bits), p2: int64(cols / gs), cols: cols, gidx: gidx}
	}
	f16 := &weight{format: fmtF16, cols: 2048}
	cases := []struct {
		ws   []*weight
		want string
	}{
		{[]*weight{gw(4, 128, 2048, 0)}, "mv1_grouped4"},
		{[]*weight{gw(3, 128, 2048, 0), gw(3, 128, 2048, 0), gw(3, 128, 2048, 0)}, "mv1_grouped3"},
		{[]*weight{gw(2, 32, 2048, 0)}, "mv1_grouped2"},
		{[]*weight{gw(4, 2048, 2048, 0)}, "mv1_grouped4"}, // per channel
		{[]*weight{gw(8, 128, 2048, 0)}, "mv1_grouped"},
		{[]*weight{gw(4, 64, 2048, 1)}, "mv1_grouped"}, // act-order
		{[]*weight{gw(4, 48, 1536, 0)}, "mv1_grouped"},
		{[]*weight{gw(4, 128, 2048, 0), gw(4, 64, 2048, 0)}, "mv1_grouped"},
		{[]*weight{f16}, "mv1_f16"},
		{[]*weight{{format: fmtQ4_0, cols: 2048}}, "mv1_q4_0w"},
		{[]*weight{{format: fmtQ8_0, cols: 2048}}, "mv1_q8_0"},
	}
	for i, c := range cases {
		if got := mv1Name("mv1_", c.ws...); got != c.want {
			t.Errorf("case %d: %s, want %s", i, got, c.want)
		}
	}
}
