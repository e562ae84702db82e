//go:build cuda

package cuda

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gorgonia.org/cu"

	"qllama/infer"
	"qllama/internal/testutil"
)

var (
	perf        = flag.Bool("perf", false, "run TestPerf: decode/prefill throughput per format on -model1b")
	perfFormats = flag.String("perfformats", "", "comma-separated layer formats TestPerf times, with variants (\"f16 nograph\", \"f16 kvf32\", \"f16 noflash\", \"f16 nofuse\": see TestPerf); default: all")
)

// TestGenerate checks that greedy generation on the GPU gives the CPU
// runner's tokens and stop reasons (stories260k, three requests, two in
// flight at once, one with a stop length of 0).
func TestGenerate(t *testing.T) {
	m := loadHF(t, testutil.Shared(t, "models", "stories260k"))
	g, err := dev.Upload(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	reqs := []infer.Request{
		{Key: "a", Prompt: []int{1, 403, 407, 261}, MaxNewTokens: 40},
		{Key: "b", Prompt: []int{1, 300}, MaxNewTokens: 25},
		{Key: "c", Prompt: []int{1, 72}, MaxNewTokens: 0},
		{Key: "d", Prompt: []int{1, 403, 407, 261, 500, 12}, MaxNewTokens: 60},
	}
	collect := func(run func(func(infer.Completion)) error) map[string]infer.Completion {
		out := map[string]infer.Completion{}
		if err := run(func(c infer.Completion) { out[c.Key] = c }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	opt := infer.GenerateOptions{MaxBatch: 2}
	want := collect(func(d func(infer.Completion)) error {
		return infer.NewRunner(m).Generate(context.Background(), reqs, opt, d)
	})
	got := collect(func(d func(infer.Completion)) error { return g.Generate(context.Background(), reqs, opt, d) })
	for _, r := range reqs {
		w, gt := want[r.Key], got[r.Key]
		if !slices.Equal(w.Tokens, gt.Tokens) || w.StopReason != gt.StopReason {
			t.Errorf("%s: GPU %v (%s), CPU %v (%s)", r.Key, gt.Tokens, gt.StopReason, w.Tokens, w.StopReason)
		}
	}
}

// copyBandwidth measures a device-to-device copy of 256 MiB, counting bytes
// read plus written (GB/s).
func copyBandwidth(t *testing.T) float64 {
	defer dev.bind()()
	const bytes = 256 << 20
	src, err := dev.alloc(bytes, "copy src")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(src)
	dst, err := dev.alloc(bytes, "copy dst")
	if err != nil {
		t.Fatal(err)
	}
	defer cu.MemFree(dst)
	cu.MemsetD32(src, 0x3f800000, bytes/4)
	var times []float64
	for i := 0; i < 12; i++ {
		start := time.Now()
		cu.MemcpyDtoD(dst, src, bytes)
		cu.Synchronize()
		if i >= 2 {
			times = append(times, time.Since(start).Seconds())
		}
	}
	return 2 * bytes / median(times) / 1e9
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestPerf times decode at batch 1 and 32, prefill of 512 and 2048 tokens,
// peak device memory and decode bandwidth for each full-size format, and
// prints one table (medians of repeats; wall clock around synchronous steps,
// so launch overhead is included).
func TestPerf(t *testing.T) {
	if !*perf || *model1B == "" {
		t.Skip("needs -perf and -model1b")
	}
	bw := copyBandwidth(t)
	m := loadHF(t, *model1B)
	rng := rand.New(rand.NewPCG(11, 12))
	randToks := func(n int) []int { return randTokens(rng, m.Vocab, n) }
	var rows []string
	// A run's embedding format may carry a variant: " nograph" (no CUDA
	// graphs, batch-1 decode only), " kvf32" (a float32 KV cache), " noflash"
	// (GEMM attention for prefill), " nofuse" (decode attention without
	// RoPE folded in) or " splitN" (decode attention splits of at least N
	// positions).
	runs := append([][2]string{{"f16", "f16 nograph"}, {"f16", "f16 kvf32"}, {"f16", "f16 noflash"}, {"f16", "f16 nofuse"}, {"f16", "f16 split32"}, {"f16", "f16 split64"}}, fullFormats...)
	for _, f := range runs {
		emb, variant, _ := strings.Cut(f[1], " ")
		if *perfFormats != "" {
			name := strings.TrimSpace(f[0] + " " + variant)
			if !slices.Contains(strings.Split(*perfFormats, ","), name) {
				continue
			}
		}
		noGraph := variant == "nograph"
		q := requantize(t, m, f[0], emb)
		free0, _, _ := dev.MemInfo()
		g, err := dev.Upload(q)
		if err != nil {
			t.Fatal(err)
		}
		g.UseGraphs = !noGraph
		g.noFlash, g.noFuse = variant == "noflash", variant == "nofuse"
		if c, ok := strings.CutPrefix(variant, "split"); ok {
			g.attMin, _ = strconv.Atoi(c)
		}
		if variant == "kvf32" {
			if err := g.SetKVType(KVF32); err != nil {
				t.Fatal(err)
			}
		}
		peak := int64(0)
		track := func() {
			if free, _, err := dev.MemInfo(); err == nil {
				peak = max(peak, free0-free)
			}
		}
		// decode: a prompt per sequence (prefilled 16 sequences at a time),
		// then timed greedy steps.
		decode := func(batch, steps, prompt int) float64 {
			caches := make([]*Cache, batch)
			st := make([]Step, batch)
			for i := range caches {
				if caches[i], err = g.NewCache(prompt + steps); err != nil {
					t.Fatal(err)
				}
				st[i] = Step{Cache: caches[i], Tokens: randToks(prompt)}
			}
			defer func() {
				for _, c := range caches {
					c.Free()
				}
			}()
			for i := 0; i < batch; i += 16 {
				if _, err := g.Greedy(st[i:min(i+16, batch)]); err != nil {
					t.Fatal(err)
				}
			}
			var per []float64
			for rep := 0; rep < 3; rep++ {
				for i := range st {
					caches[i].Truncate(prompt)
					st[i].Tokens = []int{rng.IntN(m.Vocab)}
				}
				start := time.Now()
				for s := 0; s < steps; s++ {
					ids, err := g.Greedy(st)
					if err != nil {
						t.Fatal(err)
					}
					for i := range st {
						st[i].Tokens = []int{ids[i]}
					}
				}
				per = append(per, time.Since(start).Seconds()/float64(steps))
			}
			track()
			return median(per)
		}
		prefill := func(n int) float64 {
			c, err := g.NewCache(n)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Free()
			var per []float64
			for rep := 0; rep < 4; rep++ {
				c.Truncate(0)
				toks := randToks(n)
				start := time.Now()
				if _, err := g.Greedy([]Step{{Cache: c, Tokens: toks}}); err != nil {
					t.Fatal(err)
				}
				if rep > 0 {
					per = append(per, time.Since(start).Seconds())
				}
			}
			track()
			return float64(n) / median(per)
		}
		s1 := decode(1, 64, 128)
		var s32, s256, p512, p2048 float64 = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		if !noGraph {
			s32 = decode(32, 32, 128)
			// Many sequences in flight, as a CoQA batch keeps them.
			s256 = decode(256, 16, 512)
			p512, p2048 = prefill(512), prefill(2048)
		}
		if g.GraphError != nil {
			t.Errorf("%s: %v", f[0], g.GraphError)
		}
		achieved := float64(g.DecodeBytes) / s1 / 1e9
		rows = append(rows, fmt.Sprintf("| %-22s | %8.0f | %8.0f | %8.0f | %8.0f | %8.0f | %7.0f | %7.0f | %6.0f | %5.0f%% |",
			f[0]+"/"+f[1]+" kv "+g.KVType(), 1/s1, 32/s32, 256/s256, p512, p2048, float64(peak)/(1<<20), float64(g.DecodeBytes)/(1<<20), achieved, 100*achieved/bw))
		g.Close()
	}
	fmt.Printf("\nPERF %s, copy bandwidth %.0f GB/s (read+write), model %s\n", dev.Name, bw, *model1B)
	fmt.Println("(dec b1/b32: 128-token prompts; dec b256: 512-token prompts, tokens/s of the whole batch)")
	fmt.Println("| layers/emb kv           | dec b1/s | dec b32/s| dec b256/s| pre512/s | pre2048/s| peakMiB | wt MiB  | GB/s   | pct copy |")
	fmt.Println("|" + strings.Repeat("---|", 10))
	for _, r := range rows {
		fmt.Println(r)
	}
}

var (
	profile        = flag.Bool("profile", false, "run TestProfile: a few F16 decode steps without graphs, for ncu")
	profilePrefill = flag.Int("profileprefill", 0, "TestProfile runs one prefill of this many tokens on the tensor-core path instead")
	profileFormat  = flag.String("profileformat", "f16", "TestProfile's weight format (layers and embedding, a ggml type or f16)")
)

// TestProfile runs a 128-token prefill and 4 batch-1 decode steps of the
// F16 (-profileformat) model without CUDA graphs, for scripts/gpu-check.sh to time each kernel
// under Nsight Compute; with -profileprefill N, one N-token prefill on the
// tensor-core path instead.
func TestProfile(t *testing.T) {
	if !*profile || *model1B == "" {
		t.Skip("needs -profile and -model1b")
	}
	m := requantize(t, loadHF(t, *model1B), *profileFormat, *profileFormat)
	g, err := dev.Upload(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.UseGraphs = false
	if n := *profilePrefill; n > 0 {
		c, err := g.NewCache(n)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Free()
		toks := make([]int, n)
		for i := range toks {
			toks[i] = (i * 7919) % m.Vocab
		}
		if _, err := g.Greedy([]Step{{Cache: c, Tokens: toks}}); err != nil {
			t.Fatal(err)
		}
		return
	}
	g.UseGemm = false // keeps the prefill's launch count fixed (gpu-check.sh skips it)
	c, err := g.NewCache(256)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	toks := make([]int, 128)
	for i := range toks {
		toks[i] = (i * 7919) % m.Vocab
	}
	ids, err := g.Greedy([]Step{{Cache: c, Tokens: toks}})
	for s := 0; s < 4 && err == nil; s++ {
		ids, err = g.Greedy([]Step{{Cache: c, Tokens: ids}})
	}
	if err != nil {
		t.Fatal(err)
	}
}
