//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"unsafe"

	"gorgonia.org/cu"

	"qllama/infer"
	"qllama/internal/testutil"
)

// storyRequests returns CoQA-like requests: per group a random "story" of
// storyLen tokens (BOS first) and turns whose prompts grow by a few tokens
// each (turn i's prompt extends turn i-1's), groups one after another.
func storyRequests(m *infer.Model, groups, turns, storyLen, maxNew int, seed uint64) []infer.Request {
	rng := rand.New(rand.NewPCG(seed, 3))
	tok := func() int { return 3 + rng.IntN(m.Vocab-3) }
	var reqs []infer.Request
	for gi := range groups {
		prompt := []int{max(m.BOS, 1)}
		for range storyLen - 1 {
			prompt = append(prompt, tok())
		}
		for ti := range turns {
			for range 2 + rng.IntN(4) {
				prompt = append(prompt, tok())
			}
			reqs = append(reqs, infer.Request{
				Key: fmt.Sprintf("s%d#%d", gi, ti), Prompt: slices.Clone(prompt), MaxNewTokens: maxNew,
				Group: fmt.Sprintf("s%d", gi),
			})
		}
	}
	return reqs
}

// generateAll runs gen over reqs (in calls of perCall requests, 0: one call)
// and returns the completions by key.
func generateAll(t *testing.T, reqs []infer.Request, perCall int,
	gen func(context.Context, []infer.Request, func(infer.Completion)) error) map[string]infer.Completion {
	t.Helper()
	out := map[string]infer.Completion{}
	if perCall <= 0 {
		perCall = len(reqs)
	}
	for lo := 0; lo < len(reqs); lo += perCall {
		err := gen(context.Background(), reqs[lo:min(lo+perCall, len(reqs))], func(c infer.Completion) {
			if _, dup := out[c.Key]; dup {
				t.Errorf("%s completed twice", c.Key)
			}
			out[c.Key] = c
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) != len(reqs) {
		t.Fatalf("%d completions for %d requests", len(out), len(reqs))
	}
	return out
}

// sameGreedy reports whether greedy continuations got and want of prompt
// agree, accepting a divergence only where the CPU's top-two logits are
// within tieTol*rms of each other (a near tie float32 rounding may flip);
// after one the rest is not compared.
func sameGreedy(t *testing.T, m *infer.Model, what string, prompt []int, got, want infer.Completion) {
	t.Helper()
	const tieTol = 1e-3
	i := 0
	for i < len(got.Tokens) && i < len(want.Tokens) && got.Tokens[i] == want.Tokens[i] {
		i++
	}
	if i == len(got.Tokens) && i == len(want.Tokens) {
		if got.StopReason != want.StopReason {
			t.Errorf("%s: stop reason %s, want %s", what, got.StopReason, want.StopReason)
		}
		return
	}
	kv := infer.NewKVCache(&m.Config)
	ctx := append(slices.Clone(prompt), want.Tokens[:i]...)
	logits, err := infer.NewRunner(m).Forward([]infer.Step{{Cache: kv, Tokens: ctx}})
	if err != nil {
		t.Fatal(err)
	}
	row := logits[0][0]
	_, margin := top2(row)
	if margin <= tieTol*rms(row) {
		t.Logf("%s: diverges at token %d at a near tie (margin %.3g): %v vs %v", what, i, margin, got.Tokens, want.Tokens)
		return
	}
	t.Errorf("%s: tokens %v (%s), want %v (%s): first difference at %d (CPU margin %.3g)",
		what, got.Tokens, got.StopReason, want.Tokens, want.StopReason, i, margin)
}

// checkStore checks that, between Generate calls, g's prefix store holds
// its entries' caches and nothing else, each once and allocated.
func checkStore(t *testing.T, g *Model) {
	t.Helper()
	ps := g.prefixes()
	if len(ps.refs) != len(ps.entries) {
		t.Errorf("prefix store: %d caches held for %d entries (a sequence's cache leaked)", len(ps.refs), len(ps.entries))
	}
	for _, e := range ps.entries {
		if ps.refs[e.cache] != 1 || e.cache.Cap() < e.cache.Len || e.cache.Len < len(e.fed) {
			t.Errorf("prefix store: group %s: %d holders, %d pages, Len %d for %d tokens", e.group, ps.refs[e.cache], len(e.cache.pages), e.cache.Len, len(e.fed))
		}
	}
}

// TestGeneratePrefixGPU checks prefix reuse in Model.Generate: grouped
// requests (two stories, four turns each) give the tokens of ungrouped ones
// and of the CPU runner, reuse as many prompt tokens per request as the CPU
// runner does for the same batch size (so the same sharing rules), reuse
// across Generate calls, and DropPrefixes frees what was kept.
func TestGeneratePrefixGPU(t *testing.T) {
	for _, name := range []string{"stories260k", "random_llama32"} {
		t.Run(name, func(t *testing.T) {
			m := loadHF(t, testutil.Shared(t, "models", name))
			g, err := dev.Upload(m)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			defer g.DropPrefixes()
			reqs := storyRequests(m, 2, 4, 40, 12, 7)
			ungrouped := slices.Clone(reqs)
			for i := range ungrouped {
				ungrouped[i].Group = ""
			}
			gpu := func(batch int) func(context.Context, []infer.Request, func(infer.Completion)) error {
				return func(ctx context.Context, rs []infer.Request, done func(infer.Completion)) error {
					return g.Generate(ctx, rs, infer.GenerateOptions{MaxBatch: batch}, done)
				}
			}
			ref := generateAll(t, ungrouped, 0, gpu(1))
			checkStore(t, g)
			for k, c := range ref {
				if c.CachedPromptTokens != 0 {
					t.Errorf("ungrouped %s reused %d tokens", k, c.CachedPromptTokens)
				}
			}
			prompts := map[string][]int{}
			for _, r := range reqs {
				prompts[r.Key] = r.Prompt
			}
			for _, tc := range []struct{ batch, perCall int }{{1, 0}, {3, 0}, {8, 0}, {3, 2}} {
				what := fmt.Sprintf("batch %d per call %d", tc.batch, tc.perCall)
				g.DropPrefixes()
				cpu := infer.NewRunner(m)
				want := generateAll(t, reqs, tc.perCall, func(ctx context.Context, rs []infer.Request, done func(infer.Completion)) error {
					return cpu.Generate(ctx, rs, infer.GenerateOptions{MaxBatch: tc.batch}, done)
				})
				got := generateAll(t, reqs, tc.perCall, gpu(tc.batch))
				checkStore(t, g)
				cached, cachedCPU := 0, 0
				for _, r := range reqs {
					gc, wc := got[r.Key], want[r.Key]
					cached += gc.CachedPromptTokens
					cachedCPU += wc.CachedPromptTokens
					if gc.CachedPromptTokens != wc.CachedPromptTokens {
						t.Errorf("%s: %s reused %d prompt tokens, the CPU runner %d", what, r.Key, gc.CachedPromptTokens, wc.CachedPromptTokens)
					}
					if gc.PromptTokens != len(r.Prompt) {
						t.Errorf("%s: %s: PromptTokens %d, want %d", what, r.Key, gc.PromptTokens, len(r.Prompt))
					}
					sameGreedy(t, m, what+" "+r.Key+" vs ungrouped GPU", r.Prompt, gc, ref[r.Key])
					sameGreedy(t, m, what+" "+r.Key+" vs CPU", r.Prompt, gc, wc)
				}
				// Every turn after a story's first reuses at least the story.
				if cached < 2*3*40 {
					t.Errorf("%s: %d prompt tokens reused, want at least %d", what, cached, 2*3*40)
				}
				t.Logf("%s: %d prompt tokens reused (CPU %d), %d kept prefix bytes", what, cached, cachedCPU, g.PrefixBytes())
			}
			if g.PrefixBytes() == 0 {
				t.Error("no prefix kept after Generate")
			}
			g.DropPrefixes()
			if n := g.PrefixBytes(); n != 0 {
				t.Errorf("%d prefix bytes kept after DropPrefixes", n)
			}
		})
	}
}

// TestCopyPrefix checks Cache.CopyPrefix directly: the copy into a smaller
// cache (which must grow) and into a freed one gives the next step the
// logits of a cache that computed the whole prefix itself.
func TestCopyPrefix(t *testing.T) {
	m := loadHF(t, testutil.Shared(t, "models", "stories260k"))
	g, err := dev.Upload(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	toks := make([]int, 37)
	for i := range toks {
		toks[i] = rng.IntN(m.Vocab)
	}
	const n = 30
	src, err := g.NewCache(len(toks))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Free()
	if _, err := g.Forward([]Step{{Cache: src, Tokens: toks}}); err != nil {
		t.Fatal(err)
	}
	ref, err := g.NewCache(n) // computes the prefix itself
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Free()
	if _, err := g.Forward([]Step{{Cache: ref, Tokens: toks[:n]}}); err != nil {
		t.Fatal(err)
	}
	small, err := g.NewCache(3) // must grow
	if err != nil {
		t.Fatal(err)
	}
	defer small.Free()
	freed, err := g.NewCache(64)
	if err != nil {
		t.Fatal(err)
	}
	freed.Free() // must allocate again
	for _, dst := range []*Cache{small, freed} {
		if err := dst.CopyPrefix(src, n); err != nil {
			t.Fatal(err)
		}
		if dst.Len != n || dst.Cap() < n {
			t.Fatalf("after CopyPrefix: Len %d Cap %d, want Len %d", dst.Len, dst.Cap(), n)
		}
	}
	defer freed.Free()
	next := toks[n : n+4]
	wantL, err := g.Forward([]Step{{Cache: ref, Tokens: next}})
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []*Cache{small, freed} {
		got, err := g.Forward([]Step{{Cache: dst, Tokens: next}})
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(got[0][0], wantL[0][0]); e > 1e-4 {
			t.Errorf("logits after a copied prefix: relative error %.3g", e)
		}
	}
	// A longer n than the source holds is cut to its length.
	if err := small.CopyPrefix(ref, 1000); err != nil || small.Len != ref.Len {
		t.Errorf("CopyPrefix past the source: Len %d, want %d (%v)", small.Len, ref.Len, err)
	}
}

// cpuTopK is the reference: the first k indices of row in stable descending
// order (what infer.Sampler sorts by).
func cpuTopK(row []float32, k int) []int {
	idx := make([]int, len(row))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
	return idx[:min(k, len(row))]
}

// TestTopKKernel compares the topk kernel with a CPU stable sort on random
// rows (outputs poisoned with NaN first): Llama 3's vocabulary and small
// ones, k above the vocabulary, ties (the lowest index first, also across
// the k-th place), a constant row, -inf values and signed zeros.
func TestTopKKernel(t *testing.T) {
	defer dev.bind()()
	rng := rand.New(rand.NewPCG(21, 22))
	type tc struct {
		name        string
		rows, vocab int
		k           int
		fill        func(r []float32)
	}
	normal := func(r []float32) {
		for i := range r {
			r[i] = float32(rng.NormFloat64() * 4)
		}
	}
	ties := func(r []float32) { // few distinct values: long runs of equal ones
		for i := range r {
			r[i] = float32(rng.IntN(40)) / 8
		}
	}
	constant := func(r []float32) {
		for i := range r {
			r[i] = 0.5
		}
	}
	mixed := func(r []float32) {
		for i := range r {
			switch rng.IntN(5) {
			case 0:
				r[i] = float32(math.Inf(-1))
			case 1:
				r[i] = float32(math.Copysign(0, -1))
			case 2:
				r[i] = 0
			default:
				r[i] = float32(rng.NormFloat64())
			}
		}
	}
	cases := []tc{
		{"llama3 k64", 6, 128256, 64, normal},
		{"llama3 ties k64", 3, 128256, 64, ties},
		{"llama3 k256", 2, 128256, 256, normal},
		{"llama3 k1", 3, 128256, 1, normal},
		{"small k64", 5, 512, 64, normal},
		{"small ties k40", 5, 512, 40, ties},
		{"k above vocab", 3, 50, 64, normal},
		{"constant", 2, 1000, 64, constant},
		{"inf and zeros", 4, 3000, 200, mixed},
		{"odd vocab", 3, 1029, 7, ties},
	}
	for _, c := range cases {
		x := make([]float32, c.rows*c.vocab)
		for r := range c.rows {
			c.fill(x[r*c.vocab : (r+1)*c.vocab])
		}
		if c.name == "llama3 k64" {
			// A tie straddling the k-th place and the maximum at the very end.
			row := x[c.vocab : 2*c.vocab]
			top := cpuTopK(row, 64)
			v := row[top[60]]
			for _, j := range []int{5, 77777, 128000, 128255} {
				row[j] = v
			}
			x[3*c.vocab-1] = 100
		}
		dx := devF32(t, x)
		vals := poisoned(t, c.rows*c.k)
		ids := poisoned(t, c.rows*c.k)
		if err := dev.topK(dx, c.rows, c.vocab, c.k, vals, ids); err != nil {
			t.Fatal(err)
		}
		gv := fetch(t, vals, c.rows*c.k)
		gi := make([]int32, c.rows*c.k)
		if err := cu.MemcpyDtoH(unsafe.Pointer(&gi[0]), ids, int64(4*len(gi))); err != nil {
			t.Fatal(err)
		}
		for r := range c.rows {
			row := x[r*c.vocab : (r+1)*c.vocab]
			want := cpuTopK(row, c.k)
			for j := range c.k {
				v, id := gv[r*c.k+j], int(gi[r*c.k+j])
				if j >= len(want) {
					if !math.IsInf(float64(v), -1) || id != -1 {
						t.Errorf("%s row %d slot %d past the vocabulary: %v id %d, want -inf id -1", c.name, r, j, v, id)
					}
					continue
				}
				if id != want[j] || math.Float32bits(v) != math.Float32bits(row[want[j]]) {
					t.Errorf("%s row %d slot %d: id %d value %v, want id %d value %v", c.name, r, j, id, v, want[j], row[want[j]])
					break
				}
			}
		}
	}
	if err := dev.topK(0, 1, 10, topKMax+1, 0, 0); err == nil {
		t.Error("k above the kernel's maximum accepted")
	}
}

// TestGenerateSampledGPU checks sampled generation: the device-side top-k
// path (TopK <= candK) gives exactly the tokens of the whole-row path on the
// GPU, and on stories260k the CPU runner's tokens for the same seeds. One
// request has no TopK (whole row even with candidates on), one is greedy
// by TopK 1, and the requests share story prefixes.
func TestGenerateSampledGPU(t *testing.T) {
	for _, name := range []string{"stories260k", "random_llama32"} {
		t.Run(name, func(t *testing.T) {
			m := loadHF(t, testutil.Shared(t, "models", name))
			g, err := dev.Upload(m)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			defer g.DropPrefixes()
			reqs := storyRequests(m, 2, 3, 24, 20, 9)
			samples := []infer.SampleOptions{
				{Temperature: 0.8, TopK: 20},
				{Temperature: 1, TopK: 64, TopP: 0.9},
				{Temperature: 0.7, TopK: 1},
				{Temperature: 1.2, TopK: 5},
				{Temperature: 0.9}, // no TopK: the whole row
				{Temperature: 0.6, TopK: 40, TopP: 0.5},
			}
			for i := range reqs {
				reqs[i].Sample = samples[i%len(samples)]
				reqs[i].Sample.Seed = uint64(1000 + i)
			}
			opt := infer.GenerateOptions{MaxBatch: 4}
			run := func(k int) map[string]infer.Completion {
				old := candK
				candK = k
				defer func() { candK = old }()
				g.DropPrefixes()
				return generateAll(t, reqs, 0, func(ctx context.Context, rs []infer.Request, done func(infer.Completion)) error {
					return g.Generate(ctx, rs, opt, done)
				})
			}
			withCand := run(64)
			wholeRow := run(0)
			var want map[string]infer.Completion
			if name == "stories260k" {
				// random_llama32's logits are nearly flat: float32 rounding
				// differences between backends may change which tokens make
				// the top k, so only stories260k is compared with the CPU.
				want = generateAll(t, reqs, 0, func(ctx context.Context, rs []infer.Request, done func(infer.Completion)) error {
					return infer.NewRunner(m).Generate(ctx, rs, opt, done)
				})
			}
			for _, r := range reqs {
				gc, wr := withCand[r.Key], wholeRow[r.Key]
				if !slices.Equal(gc.Tokens, wr.Tokens) || gc.StopReason != wr.StopReason {
					t.Errorf("%s (%+v): top-k path %v (%s), whole-row path %v (%s)", r.Key, r.Sample, gc.Tokens, gc.StopReason, wr.Tokens, wr.StopReason)
				}
				if want != nil {
					w := want[r.Key]
					if !slices.Equal(gc.Tokens, w.Tokens) || gc.StopReason != w.StopReason {
						t.Errorf("%s (%+v): GPU %v (%s), CPU %v (%s)", r.Key, r.Sample, gc.Tokens, gc.StopReason, w.Tokens, w.StopReason)
					}
					if gc.CachedPromptTokens != w.CachedPromptTokens {
						t.Errorf("%s: reused %d prompt tokens, CPU %d", r.Key, gc.CachedPromptTokens, w.CachedPromptTokens)
					}
				}
			}
		})
	}
}

// BenchmarkTopK times the topk kernel (k 64) on 1 and 32 rows of Llama 3's
// vocabulary, against copying the rows back whole (what sampling did before).
func BenchmarkTopK(b *testing.B) {
	const vocab, k = 128256, 64
	for _, rows := range []int{1, 32} {
		x := make([]float32, rows*vocab)
		rng := rand.New(rand.NewPCG(1, 1))
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		func() {
			defer dev.bind()()
			dx, err := upload(dev, x, "bench logits")
			if err != nil {
				b.Fatal(err)
			}
			defer cu.MemFree(dx)
			out, err := dev.alloc(int64(rows*k*8), "bench candidates")
			if err != nil {
				b.Fatal(err)
			}
			defer cu.MemFree(out)
			host := make([]uint32, 2*rows*k)
			b.Run(fmt.Sprintf("topk/rows=%d", rows), func(b *testing.B) {
				defer dev.bind()() // b.Run runs this on another goroutine
				for range b.N {
					if err := dev.topK(dx, rows, vocab, k, out, out+cu.DevicePtr(rows*k*4)); err != nil {
						b.Fatal(err)
					}
					if err := dev.st.sync(); err != nil {
						b.Fatal(err)
					}
					if err := download(host, out); err != nil {
						b.Fatal(err)
					}
				}
			})
			row := make([]float32, rows*vocab)
			b.Run(fmt.Sprintf("whole/rows=%d", rows), func(b *testing.B) {
				defer dev.bind()()
				for range b.N {
					if err := download(row, dx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}()
	}
}
