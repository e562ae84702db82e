package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/convert"
	"qllama/eval/ppl"
	"qllama/eval/sweep"
	"qllama/internal/testutil"
)

// storiesText writes text sampled from stories260k at temperature 1 with
// fixed seeds (a few hundred tokens) and returns its path.
func storiesText(t *testing.T, stories string) string {
	t.Helper()
	var b strings.Builder
	for _, seed := range []string{"1", "2", "3", "4"} {
		out, _, err := run(t, "generate", "--model", stories, "--prompt", "Once upon a time", "--max-tokens", "120", "--temperature", "1", "--seed", seed)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("Once upon a time" + out)
	}
	p := filepath.Join(t.TempDir(), "corpus.txt")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPPL(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	text := storiesText(t, stories)

	out, errOut, err := run(t, "ppl", "--model", stories, "--text", text, "--ref", stories, "--ctx", "64", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	num := func(k string) float64 {
		v, ok := res[k].(float64)
		if !ok {
			t.Fatalf("%s missing from %s", k, out)
		}
		return v
	}
	windows := num("windows")
	if windows < 3 || num("ctx") != 64 || num("tokens") != windows*(64-1-32) {
		t.Fatalf("windows %v ctx %v tokens %v", windows, num("ctx"), num("tokens"))
	}
	if p := num("ppl"); math.IsNaN(p) || p < 1 || p > 30 || num("ref_ppl") != p {
		t.Fatalf("ppl %v, ref ppl %v", p, num("ref_ppl"))
	}
	if num("kl_mean") != 0 || num("kl_p99") != 0 || num("kl_median") != 0 || num("top1_agree") != 1 {
		t.Fatalf("model against itself: %s", out)
	}
	if res["model"] != stories || res["ref"] != stories {
		t.Fatalf("model %v ref %v", res["model"], res["ref"])
	}
	if n := strings.Count(errOut, "ppl windows:"); n < int(windows) {
		t.Fatalf("%d progress lines for %v windows:\n%s", n, windows, errOut)
	}

	// Without a reference: perplexity only; --max-windows limits the work.
	out, _, err = run(t, "ppl", "--model", stories, "--text", text, "--ctx", "64", "--max-windows", "2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	res = nil
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if _, ok := res["kl_mean"]; ok || num("windows") != 2 || num("ppl") < 1 {
		t.Fatalf("without --ref: %s", out)
	}

	out, _, err = run(t, "ppl", "--model", stories, "--text", text, "--ctx", "64", "--ref", stories)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"perplexity", "KL divergence    mean 0.000000", "same top token   100.000%"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestPPLErrors(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	llama := testutil.Shared(t, "models", "random_llama32")
	short := filepath.Join(t.TempDir(), "short.txt")
	if err := os.WriteFile(short, []byte("Once upon a time there was a cat."), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ppl", "--model", stories, "--text", short}, "one window of context 512 needs 512"},
		{[]string{"ppl", "--model", stories, "--text", short, "--ctx", "4096"}, "exceeds the model's context length 512"},
		{[]string{"ppl", "--model", stories, "--text", short, "--ref", llama}, "different tokenizers"},
		{[]string{"ppl", "--model", stories, "--text", short, "--ref", "/nonexistent"}, "--ref"},
		{[]string{"ppl", "--model", stories, "--text", "/nonexistent.txt"}, "--text"},
		{[]string{"ppl", "--model", stories, "--text", short, "--max-windows", "-1"}, "negative"},
		{[]string{"ppl", "--model", stories}, "text"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

// TestPPLPackedFiles runs ppl on files written by the converter: the F32 file
// matches the Hugging Face checkpoint up to float32 rounding, and KL falls
// from 4 to 8 bits.
func TestPPLPackedFiles(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	text := storiesText(t, stories)
	kl := map[string]float64{}
	for _, method := range []string{"f32", "q8_0", "q4_0"} {
		file := filepath.Join(t.TempDir(), method+".gguf")
		if _, err := convert.Convert(context.Background(), convert.Options{In: stories, Out: file, Method: method}); err != nil {
			t.Fatal(err)
		}
		out, _, err := run(t, "ppl", "--model", file, "--text", text, "--ref", stories, "--ctx", "128", "--json")
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		var res ppl.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.KL == nil {
			t.Fatalf("%s: %v\n%s", method, err, out)
		}
		kl[method] = res.KL.Mean
	}
	t.Logf("KL mean vs the Hugging Face checkpoint: %v", kl)
	if !(kl["f32"] < 1e-9 && kl["f32"] < kl["q8_0"] && kl["q8_0"] < kl["q4_0"]) {
		t.Fatalf("KL does not fall with bits: %v", kl)
	}
}

// TestPPLDevice: --device cpu gives the default's numbers and says so;
// --device cuda needs a CUDA build with a GPU.
func TestPPLDevice(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	text := storiesText(t, stories)
	args := []string{"ppl", "--model", stories, "--text", text, "--ref", stories, "--ctx", "64", "--max-windows", "2"}
	plain, _, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	cpu, _, err := run(t, append(args, "--device", "cpu")...)
	if err != nil {
		t.Fatal(err)
	}
	if !cudaAvailable() && plain != cpu {
		t.Errorf("default device:\n%s\n--device cpu:\n%s", plain, cpu)
	}
	if !strings.Contains(cpu, "device           cpu (KV cache f32)\n") {
		t.Errorf("no device line:\n%s", cpu)
	}
	if !cudaBuilt {
		_, _, err := run(t, append(args, "--device", "cuda")...)
		if err == nil || !strings.Contains(err.Error(), "built without CUDA") {
			t.Errorf("--device cuda without CUDA: %v", err)
		}
	}
	if _, _, err := run(t, append(args, "--gpu", "-1")...); err == nil || !strings.Contains(err.Error(), "--gpu") {
		t.Errorf("--gpu -1: %v", err)
	}
}

// TestSweepPPLFlags: --ppl-ctx and --ppl-windows override experiments.toml.
func TestSweepPPLFlags(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	text := storiesText(t, stories)
	out := t.TempDir()
	_, stderr, err := run(t, "sweep", "--experiments", filepath.Join(testutil.RepoRoot(t), "experiments.toml"), "--only", "fp16_baseline",
		"--model-dir", stories, "--ppl-text", text, "--ppl-ctx", "32", "--ppl-windows", "3", "--out", out, "--no-bench", "--nvml", "off", "--device", "cpu")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	r, err := sweep.ReadResult(filepath.Join(out, "fp16_baseline", sweep.ResultFile))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != sweep.StatusOK || r.PPL == nil || r.PPL.Tokens != 3*(32-1-16) || r.PPL.KLMean < 0 || r.PPL.KLMean > 1e-3 || r.PPL.Top1Agree < 0.9 {
		t.Fatalf("%+v ppl %+v", r, r.PPL)
	}
	for _, bad := range [][]string{{"--ppl-ctx", "-1"}, {"--ppl-windows", "-2"}, {"--ppl-ctx", "2"}} {
		_, _, err := run(t, append([]string{"sweep", "--model-dir", stories, "--out", out, "--only", "fp16_baseline",
			"--experiments", filepath.Join(testutil.RepoRoot(t), "experiments.toml")}, bad...)...)
		if err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
