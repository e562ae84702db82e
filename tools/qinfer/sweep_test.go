package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"qllama/convert/random"
	"qllama/eval/bench"
	"qllama/eval/report"
	"qllama/eval/sweep"
	"qllama/internal/testutil"
)

// TestDemoFlow is `make demo` end to end, in process: a tiny random model, a
// synthetic CoQA file, the quick sweep on the CPU, a re-run that does
// nothing, and the report.
func TestDemoFlow(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny-random")
	shape, err := random.Lookup("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if err := random.Write(context.Background(), model, shape, random.Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	data, text := filepath.Join(dir, "coqa.json"), filepath.Join(dir, "stories.txt")
	if _, _, err := run(t, "coqa-synth", "--stories", "4", "--seed", "1", "--out", data, "--text", text); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(dir, "results")
	args := []string{"sweep", "--experiments", filepath.Join(testutil.RepoRoot(t), "experiments.toml"), "--quick", "--limit", "3",
		"--model-dir", model, "--coqa", data, "--ppl-text", text, "--out", results,
		"--bench-prompts", "16,64", "--bench-batches", "1,2", "--bench-repeats", "1", "--bench-decode-tokens", "4", "--bench-context", "8", "--nvml", "off"}
	_, stderr, err := run(t, args...)
	if err != nil {
		t.Fatalf("sweep: %v\n%s", err, stderr)
	}
	res, err := sweep.ReadResults(results)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range res {
		names = append(names, r.Name)
		if r.Status != sweep.StatusOK || r.Convert == nil || r.CoQA == nil || r.PPL == nil || r.Bench == nil {
			t.Errorf("%s: %+v", r.Name, r)
			continue
		}
		if r.CoQA.Limit != 3 || r.CoQA.N != 3 || r.Bench.Options.Repeats != 1 || len(r.Bench.Throughput) != 2 || len(r.Bench.TTFT) != 2 {
			t.Errorf("%s: flags not applied: coqa %+v, bench options %+v", r.Name, r.CoQA, r.Bench.Options)
		}
		if r.PPL.KLMean < 0 || r.PPL.Tokens == 0 || r.Convert.FileBytes <= 0 {
			t.Errorf("%s: ppl %+v convert %+v", r.Name, r.PPL, r.Convert)
		}
		if _, err := os.Stat(filepath.Join(results, r.Name, sweep.ModelFile)); err == nil {
			t.Errorf("%s: model kept without --keep-models", r.Name)
		}
	}
	if want := []string{"bnb_4bit_nf4", "fp16_baseline", "rtn_int3_g128"}; !slices.Equal(names, want) {
		t.Errorf("results %v, want %v", names, want)
	}
	// Lower bit widths store fewer bits and diverge more from the reference.
	by := map[string]*sweep.Result{}
	for _, r := range res {
		by[r.Name] = r
	}
	if f, n, r := by["fp16_baseline"], by["bnb_4bit_nf4"], by["rtn_int3_g128"]; f != nil && n != nil && r != nil {
		if !(f.Convert.LinearBPW > n.Convert.LinearBPW && n.Convert.LinearBPW > r.Convert.LinearBPW) {
			t.Errorf("bpw not ordered: %g %g %g", f.Convert.LinearBPW, n.Convert.LinearBPW, r.Convert.LinearBPW)
		}
		if !(f.PPL.KLMean < n.PPL.KLMean && n.PPL.KLMean < r.PPL.KLMean) {
			t.Errorf("KL not ordered: %g %g %g", f.PPL.KLMean, n.PPL.KLMean, r.PPL.KLMean)
		}
	}

	// A second run finds everything done.
	_, stderr, err = run(t, args...)
	if err != nil || !strings.Contains(stderr, "3 already finished, 0 to run") {
		t.Errorf("re-run: %v\n%s", err, stderr)
	}

	rep, err := report.Build(report.Options{Results: results, Out: filepath.Join(dir, "report")})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Figures {
		if st, err := os.Stat(filepath.Join(dir, "report", "figures", f+".png")); err != nil || st.Size() < 4000 {
			t.Errorf("figure %s: %v", f, err)
		}
	}
}

// TestSweepFailureRecorded: a calibrating experiment without calibration
// data fails and is recorded, and the sweep goes on.
func TestSweepFailureRecorded(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	out := t.TempDir()
	_, stderr, err := run(t, "sweep", "--experiments", filepath.Join(testutil.RepoRoot(t), "experiments.toml"),
		"--only", "gptq_4bit_g128,rtn_int3_g128", "--model-dir", stories, "--out", out, "--no-bench", "--nvml", "off")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	g, err := sweep.ReadResult(filepath.Join(out, "gptq_4bit_g128", sweep.ResultFile))
	if err != nil || g.Status != sweep.StatusFailed || !strings.Contains(g.Error, "--calib c4=FILE") {
		t.Errorf("gptq: %+v, %v", g, err)
	}
	r, err := sweep.ReadResult(filepath.Join(out, "rtn_int3_g128", sweep.ResultFile))
	if err != nil || r.Status != sweep.StatusOK || r.Convert == nil || r.Convert.Scheme != "rtn int3 g128 asym" {
		t.Errorf("rtn: %+v, %v", r, err)
	}
	if !strings.Contains(stderr, "sweep: failed (see DIR/NAME/result.json): gptq_4bit_g128") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestSweepFlagErrors(t *testing.T) {
	reg := filepath.Join(testutil.RepoRoot(t), "experiments.toml")
	stories := testutil.Shared(t, "models", "stories260k")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad shard", []string{"--shard", "3/3"}, "0 <= K < N"},
		{"bad gpus", []string{"--gpus", "0,0"}, "--gpus"},
		{"unknown experiment", []string{"--only", "nope"}, `"nope"`},
		{"negative limit", []string{"--limit", "-1"}, "--limit"},
		{"bad prompts", []string{"--bench-prompts", "12,x"}, "--bench-prompts"},
		{"missing calib file", []string{"--calib", "c4=/nonexistent"}, "/nonexistent"},
		{"missing coqa", []string{"--coqa", "/nonexistent.json"}, "nonexistent"},
		{"f16 cache on the cpu", []string{"--device", "cpu", "--kv-cache", "f16"}, "--kv-cache f16"},
		{"bad kv cache", []string{"--kv-cache", "q8"}, "--kv-cache"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"sweep", "--experiments", reg, "--model-dir", stories, "--out", t.TempDir()}, tc.args...)
			if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, _, err := run(t, "sweep", "--experiments", reg, "--model-dir", "/nonexistent", "--out", t.TempDir()); err == nil {
		t.Error("missing model directory: no error")
	}
}

func TestConvertOptions(t *testing.T) {
	st := &study{modelDir: "m", calib: map[string]string{"c4": "c4.txt"}}
	e := sweep.Experiment{Name: "g", Method: "gptq", Bits: 3, Group: 128, Sym: true, Params: map[string]any{"act_order": true},
		Calibration: sweep.Calibration{Dataset: "c4", Samples: 16, SeqLen: 256, Seed: 3}, EmbedType: "f16"}
	o, err := st.convertOptions(e, "out.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if o.In != "m" || o.Out != "out.gguf" || o.Bits != 3 || o.Group != 128 || !o.Sym || !o.ActOrder || o.Calib != "c4.txt" ||
		o.CalibSamples != 16 || o.CalibLen != 256 || o.CalibSeed != 3 || o.EmbedType != "f16" {
		t.Errorf("options %+v", o)
	}
	e.Method, e.Params = "awq", map[string]any{"reference_qk": true}
	if o, err = st.convertOptions(e, "x"); err != nil || !o.AWQReferenceQK || o.ActOrder {
		t.Errorf("reference_qk: options %+v, %v", o, err)
	}
	for _, p := range []map[string]any{{"damp": 0.1}, {"act_order": "yes"}, {"reference_qk": 1}} {
		e.Params = p
		if _, err := st.convertOptions(e, "x"); err == nil {
			t.Errorf("params %v: no error", p)
		}
	}
	e.Params, e.Calibration.Dataset = nil, "pileval"
	if _, err := st.convertOptions(e, "x"); err == nil || !strings.Contains(err.Error(), "--calib pileval=FILE") {
		t.Errorf("missing calibration: %v", err)
	}
}

func TestBenchCommand(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	out, _, err := run(t, "bench", "--model", stories, "--prompts", "16,100000", "--batches", "1,3", "--repeats", "1",
		"--decode-tokens", "4", "--context", "4", "--nvml", "off")
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.TTFT) != 1 || len(r.Throughput) != 2 || r.Memory.WeightBytes <= 0 || r.Memory.KVBytesPerToken != 2*5*4*8*4 || r.Memory.PeakBytes <= 0 || len(r.Warnings) != 1 {
		t.Errorf("bench result %+v", r)
	}
	for _, args := range [][]string{{"--prompts", "0"}, {"--batches", "a"}, {"--nvml", "maybe"}, {"--repeats", "-1"}} {
		if _, _, err := run(t, append([]string{"bench", "--model", stories}, args...)...); err == nil {
			t.Errorf("bench %v: no error", args)
		}
	}
}

func TestParseGPUs(t *testing.T) {
	if g, err := parseGPUs(" 0, 1,3"); err != nil || !slices.Equal(g, []int{0, 1, 3}) {
		t.Errorf("parseGPUs = %v, %v", g, err)
	}
	if g, err := parseGPUs(""); err != nil || g != nil {
		t.Errorf("empty: %v, %v", g, err)
	}
	for _, s := range []string{"a", "-1", "0,0", "1,"} {
		if _, err := parseGPUs(s); err == nil {
			t.Errorf("parseGPUs(%q): no error", s)
		}
	}
}
