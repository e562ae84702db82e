//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"

	"qllama/internal/testutil"
)

// TestPagedCache checks page sharing: two caches that copy a 30-position
// prefix of a 37-position one share its first two pages (the second only
// partly filled); the three then step together, each writing into the shared
// page or past it, and each step's logits must equal those of a cache that
// computed its whole sequence itself. Afterwards every page is back in the
// pool and TrimKV frees the pool's memory. Both cache element types.
func TestPagedCache(t *testing.T) {
	m := loadHF(t, testutil.Shared(t, "models", "random_llama32"))
	for _, kv := range []string{KVF32, KVF16} {
		t.Run(kv, func(t *testing.T) {
			g, err := dev.Upload(m)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if err := g.SetKVType(kv); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, 6))
			seq := func(n int) []int { return randTokens(rng, m.Vocab, n) }
			const n = 30
			base := seq(37)
			// The three sequences' full token lists: src goes on after its 37;
			// a and b leave base at n.
			full := [][]int{append(base, seq(3)...), append(base[:n:n], seq(6)...), append(base[:n:n], seq(20)...)}
			mk := func(toks []int) *Cache {
				c, err := g.NewCache(0)
				if err != nil {
					t.Fatal(err)
				}
				if toks != nil {
					if _, err := g.Forward([]Step{{Cache: c, Tokens: toks}}); err != nil {
						t.Fatal(err)
					}
				}
				return c
			}
			src := mk(base)
			a, b := mk(nil), mk(nil)
			for _, c := range []*Cache{a, b} {
				if err := c.CopyPrefix(src, n); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				if a.pages[i] != src.pages[i] || b.pages[i] != src.pages[i] || g.kv.refs[src.pages[i]] != 3 {
					t.Fatalf("page %d: not shared three ways (refs %d)", i, g.kv.refs[src.pages[i]])
				}
			}
			shared := src.pages[1]
			caches := []*Cache{src, a, b}
			// Step 1: src decodes one token; a feeds 4 (into the shared
			// page), b 17 (a second page too). Then two decode steps.
			feeds := [][]int{{1, 4, 17}, {1, 1, 1}, {1, 1, 1}}
			for step, k := range feeds {
				steps := make([]Step, 3)
				for i, c := range caches {
					steps[i] = Step{Cache: c, Tokens: full[i][c.Len : c.Len+k[i]]}
				}
				got, err := g.Forward(steps)
				if err != nil {
					t.Fatal(err)
				}
				for i, c := range caches {
					ref := mk(nil)
					want, err := g.Forward([]Step{{Cache: ref, Tokens: full[i][:c.Len]}})
					ref.Free()
					if err != nil {
						t.Fatal(err)
					}
					if e := relErr(got[i][0], want[0][0]); e > 1e-4 {
						t.Errorf("step %d, cache %d: logits relative error %.3g against a cache of its own", step, i, e)
					}
				}
			}
			if src.pages[1] != shared || a.pages[1] == shared || b.pages[1] == shared || a.pages[1] == b.pages[1] {
				t.Errorf("copy on write: src %#x, a %#x, b %#x (shared %#x)", src.pages[1], a.pages[1], b.pages[1], shared)
			}
			if g.kv.refs[src.pages[0]] != 3 || g.kv.refs[shared] != 1 {
				t.Errorf("refs after the writes: page 0 %d (want 3), page 1 %d (want 1)", g.kv.refs[src.pages[0]], g.kv.refs[shared])
			}
			for _, c := range caches {
				c.Free()
			}
			if len(g.kv.refs) != 0 || g.KVBytes() == 0 {
				t.Errorf("after freeing every cache: %d pages held, pool %d bytes", len(g.kv.refs), g.KVBytes())
			}
			if err := g.TrimKV(); err != nil {
				t.Fatal(err)
			}
			if g.KVBytes() != 0 || len(g.kv.free) != 0 {
				t.Errorf("after TrimKV: pool %d bytes, %d free pages", g.KVBytes(), len(g.kv.free))
			}
			if err := g.SetKVType(KVF32); err != nil {
				t.Errorf("SetKVType with no pages in use: %v", err)
			}
			c := mk(base[:3])
			defer c.Free()
			if err := g.SetKVType(KVF16); err == nil {
				t.Error("SetKVType with a cache holding pages: no error")
			}
		})
	}
}
