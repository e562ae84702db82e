//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"qllama/convert/calib"
	"qllama/convert/gptq"
	"qllama/internal/testutil"
)

// randomSet draws n windows of seqLen tokens from a random corpus.
func randomSet(t testing.TB, vocab, n, seqLen int, seed uint64) *calib.Set {
	rng := rand.New(rand.NewPCG(seed, 1))
	corpus := make([]int, n*seqLen*2)
	for i := range corpus {
		corpus[i] = rng.IntN(vocab)
	}
	set, err := calib.FromTokens(corpus, 0, calib.Options{Samples: n, SeqLen: seqLen, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestQuantizeGPTQ runs the GPU GPTQ walk and the CPU one (float32 blocks,
// float64 solve) on the shared small models and compares them linear by
// linear: the GPU runs the blocks in FP16, as the reference GPTQ does, so
// codes may differ where a value sits near a rounding boundary, but most
// must agree and the GPTQ losses must be close.
func TestQuantizeGPTQ(t *testing.T) {
	for _, tc := range []struct {
		model string
		opt   gptq.Options
	}{
		{"stories260k", gptq.Options{Bits: 4}},
		{"random_llama32", gptq.Options{Bits: 4, GroupSize: 32}},
		{"random_llama32", gptq.Options{Bits: 3, GroupSize: 32, ActOrder: true, StaticGroups: true}},
	} {
		t.Run(fmt.Sprintf("%s/%d-bit/g%d/act%v", tc.model, tc.opt.Bits, tc.opt.GroupSize, tc.opt.ActOrder), func(t *testing.T) {
			m := loadHF(t, testutil.Shared(t, "models", tc.model))
			set := randomSet(t, m.Vocab, 8, 64, 3)
			mo := gptq.ModelOptions{Options: tc.opt}
			want, wrep, err := gptq.QuantizeModel(context.Background(), m, set, mo)
			if err != nil {
				t.Fatal(err)
			}
			var calls int
			mo.Progress = func(done, total int, name string) { calls++ }
			got, grep, err := dev.QuantizeGPTQ(context.Background(), m, set, mo)
			if err != nil {
				t.Fatal(err)
			}
			if calls != 7*len(m.Layers) || len(got) != len(want) || len(grep.Layers) != len(wrep.Layers) {
				t.Fatalf("%d progress calls, %d linears, %d reports; want %d, %d, %d", calls, len(got), len(grep.Layers), 7*len(m.Layers), len(want), len(wrep.Layers))
			}
			var same, all int
			var lossG, lossC float64
			for i, lr := range wrep.Layers {
				g, w := got[lr.Name], want[lr.Name]
				if g == nil || g.Bits != w.Bits || g.Rows != w.Rows || g.Cols != w.Cols {
					t.Fatalf("%s: GPU result %+v does not match the CPU's shape", lr.Name, g)
				}
				for j := range w.Codes {
					if g.Codes[j] == w.Codes[j] {
						same++
					}
				}
				all += len(w.Codes)
				lossC += lr.Loss
				lossG += grep.Layers[i].Loss
				if imp, ok := grep.Importance[lr.Name]; !ok || len(imp) != lr.Cols {
					t.Errorf("%s: importance of %d columns, want %d", lr.Name, len(imp), lr.Cols)
				}
			}
			frac := float64(same) / float64(all)
			t.Logf("identical codes %.2f%%, loss GPU %.4g CPU %.4g, GPU %.2fs CPU %.2fs", 100*frac, lossG, lossC, grep.Seconds, wrep.Seconds)
			if frac < 0.9 {
				t.Errorf("only %.1f%% of the codes agree with the CPU walk", 100*frac)
			}
			if lossG > 1.15*lossC+1e-9 || lossG < 0.85*lossC-1e-9 {
				t.Errorf("GPU loss %.4g vs CPU %.4g", lossG, lossC)
			}
		})
	}
}

// TestGPTQ1B times GPTQ 4-bit g128 of the full-size random Llama-3.2-1B
// (-model1b) with the reference calibration size, 128 x 2048 tokens (random
// tokens: the time does not depend on the text), and prints wall time and
// peak device and host memory.
func TestGPTQ1B(t *testing.T) {
	if *model1B == "" || !*perf {
		t.Skip("needs -perf and -model1b")
	}
	m := loadHF(t, *model1B)
	set := randomSet(t, m.Vocab, 128, 2048, 1)
	free0, _, _ := dev.MemInfo()
	var peak int64
	var lastLog time.Time
	start := time.Now()
	mo := gptq.ModelOptions{Options: gptq.Options{Bits: 4, GroupSize: 128}, Progress: func(done, total int, name string) {
		if free, _, err := dev.MemInfo(); err == nil {
			peak = max(peak, free0-free)
		}
		if time.Since(lastLog) > 5*time.Second || done == total {
			t.Logf("%d/%d %s at %.1fs", done, total, name, time.Since(start).Seconds())
			lastLog = time.Now()
		}
	}}
	out, rep, err := dev.QuantizeGPTQ(context.Background(), m, set, mo)
	if err != nil {
		t.Fatal(err)
	}
	wall := time.Since(start).Seconds()
	var solve float64
	for _, l := range rep.Layers {
		solve += l.Seconds
	}
	fmt.Printf("\nGPTQ1B %s: 4-bit g128, 128 x 2048 calibration tokens, %d linears: wall %.1f s (GPTQ solves %.1f s), peak device memory %.0f MiB above the model-free baseline, host peak RSS %s\n",
		dev.Name, len(out), wall, solve, float64(peak)/(1<<20), hostPeakRSS())
}

// hostPeakRSS reads VmHWM from /proc/self/status.
func hostPeakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
