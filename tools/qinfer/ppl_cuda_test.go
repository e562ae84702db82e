//go:build cuda

package main

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"qllama/convert"
	"qllama/eval/bench"
	"qllama/eval/ppl"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/internal/testutil"
)

// GPU tests of perplexity on the CUDA backend. Build on the CPU machine with
// `go test -c -tags cuda -o gpubin/qinfer.test ./tools/qinfer` and run from
// tools/qinfer with ../shared/testdata/models beside the repository:
// qinfer.test -test.v -test.run 'CUDA'.

func needGPU(t *testing.T) {
	t.Helper()
	if !cudaAvailable() {
		t.Skip("no CUDA device")
	}
}

// pplJSON runs qinfer ppl with --json and decodes the result.
func pplJSON(t *testing.T, args ...string) *ppl.Result {
	t.Helper()
	out, stderr, err := run(t, append([]string{"ppl", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("ppl %v: %v\n%s", args, err, stderr)
	}
	var res ppl.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return &res
}

func relDiff(a, b float64) float64 { return math.Abs(a-b) / max(math.Abs(a), math.Abs(b), 1e-30) }

// TestPPLCUDAMatchesCPU: qinfer ppl --device cuda gives the CPU's perplexity
// and KL divergence (up to float32 rounding in a different order), on the
// Hugging Face checkpoints and on a Q8_0 file against its checkpoint.
func TestPPLCUDAMatchesCPU(t *testing.T) {
	needGPU(t)
	stories := testutil.Shared(t, "models", "stories260k")
	llama := testutil.Shared(t, "models", "random_llama32")
	text := storiesText(t, stories)
	q8 := filepath.Join(t.TempDir(), "q8_0.gguf")
	if _, err := convert.Convert(context.Background(), convert.Options{In: stories, Out: q8, Method: "q8_0"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"stories against itself", []string{"--model", stories, "--ref", stories, "--ctx", "64"}},
		{"stories batch 7", []string{"--model", stories, "--ref", stories, "--ctx", "64", "--batch", "7"}},
		{"stories q8_0", []string{"--model", q8, "--ref", stories, "--ctx", "128"}},
		{"random llama 3.2", []string{"--model", llama, "--ctx", "64", "--max-windows", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--text", text}, tc.args...)
			cpu := pplJSON(t, append(args, "--device", "cpu")...)
			gpu := pplJSON(t, append(args, "--device", "cuda")...)
			t.Logf("ppl cpu %.6f cuda %.6f", cpu.PPL, gpu.PPL)
			if gpu.Tokens != cpu.Tokens || gpu.Windows != cpu.Windows || gpu.Ctx != cpu.Ctx {
				t.Fatalf("cuda %+v, cpu %+v", gpu, cpu)
			}
			if d := relDiff(gpu.PPL, cpu.PPL); d > 1e-3 || math.IsNaN(gpu.PPL) {
				t.Errorf("ppl cuda %v, cpu %v (relative difference %.2g)", gpu.PPL, cpu.PPL, d)
			}
			if (gpu.KL == nil) != (cpu.KL == nil) {
				t.Fatalf("KL cuda %v cpu %v", gpu.KL, cpu.KL)
			}
			if gpu.KL == nil {
				return
			}
			g, c := gpu.KL, cpu.KL
			t.Logf("KL mean cpu %.3g cuda %.3g, top-1 cpu %.4f cuda %.4f", c.Mean, g.Mean, c.Top1Agree, g.Top1Agree)
			if d := relDiff(g.RefPPL, c.RefPPL); d > 1e-3 {
				t.Errorf("ref ppl cuda %v, cpu %v", g.RefPPL, c.RefPPL)
			}
			if c.Mean == 0 {
				// The model against itself: both runs are the same kernels.
				if g.Mean > 1e-6 || g.Top1Agree != 1 {
					t.Errorf("model against itself on the GPU: %+v", *g)
				}
				return
			}
			if math.Abs(g.Mean-c.Mean) > 0.05*c.Mean+1e-5 || math.Abs(g.Top1Agree-c.Top1Agree) > 0.02 {
				t.Errorf("KL cuda %+v, cpu %+v", *g, *c)
			}
		})
	}
}

// TestCUDAScorer: the CUDA adapter returns the CPU runner's logits for a
// window split into a context and a scored part, and a window run again
// after Reset (the cache truncated, not reallocated) gives the same logits.
func TestCUDAScorer(t *testing.T) {
	needGPU(t)
	src, err := hf.Open(testutil.Shared(t, "models", "stories260k"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cudaBackend(0, &loaded{path: "stories260k", model: m}, bench.ModelInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	s, cpu := b.scorer, ppl.CPU(m)
	if s.Vocab() != m.Vocab || s.MaxSeq() != m.MaxSeq {
		t.Fatalf("vocab %d max seq %d", s.Vocab(), s.MaxSeq())
	}
	toks := make([]int, 40)
	for i := range toks {
		toks[i] = 1 + (i*37)%(m.Vocab-1)
	}
	window := func(sc ppl.Scorer, toks []int) [][]float32 {
		t.Helper()
		if err := sc.Reset(); err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Forward(toks[:20], false); err != nil {
			t.Fatal(err)
		}
		out, err := sc.Forward(toks[20:], true)
		if err != nil {
			t.Fatal(err)
		}
		rows := make([][]float32, len(out))
		for i := range out {
			rows[i] = slices.Clone(out[i])
		}
		return rows
	}
	first := window(s, toks)
	other := window(s, slices.Concat(toks[20:], toks[:20]))
	again := window(s, toks)
	want := window(cpu, toks)
	if len(first) != 20 || len(other) != 20 {
		t.Fatalf("%d rows", len(first))
	}
	for i := range first {
		if !slices.Equal(first[i], again[i]) {
			t.Fatalf("row %d differs after Reset", i)
		}
		for j := range first[i] {
			if d := math.Abs(float64(first[i][j] - want[i][j])); d > 1e-3*(1+math.Abs(float64(want[i][j]))) {
				t.Fatalf("row %d logit %d: cuda %v, cpu %v", i, j, first[i][j], want[i][j])
			}
		}
	}
}
