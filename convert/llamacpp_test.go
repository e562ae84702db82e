package convert_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"qllama/convert"
	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/internal/testutil"
)

// withConfig returns a model directory that links every file of the shared
// model name except config.json, which is the original edited by edit.
func withConfig(t *testing.T, name string, edit func(map[string]any)) string {
	t.Helper()
	src := testutil.Shared(t, "models", name)
	dir := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "config.json" {
			continue
		}
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLinearRopeScalingKeys checks the keys llama.cpp reads for linear RoPE
// scaling (llama.rope.scaling.type/factor, as convert_hf_to_gguf.py writes
// them) next to the exact qllama.rope.* values, and that the file runs like
// the Hugging Face model. The type key used to be written twice under the
// qllama name, which the writer rejects as a duplicate.
func TestLinearRopeScalingKeys(t *testing.T) {
	dir := withConfig(t, "stories260k", func(c map[string]any) {
		c["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.5}
	})
	c := convertAndLoad(t, convert.Options{In: dir, Method: "f32"})
	for _, tc := range []struct {
		key  string
		want any
	}{
		{gguf.KeyRopeScalingType, "linear"},
		{gguf.KeyRopeScalingFactor, float32(2.5)},
		{gguf.KeyQllamaRopeScalingType, "linear"},
		{gguf.KeyQllamaRopeFactor, 2.5},
	} {
		if got, ok := c.f.KV(tc.key); !ok || got != tc.want {
			t.Errorf("%s = %v (present %v), want %v", tc.key, got, ok, tc.want)
		}
	}
	if _, ok := c.f.Tensor(gguf.TensorRopeFreqs); ok {
		t.Errorf("%s written for linear scaling", gguf.TensorRopeFreqs)
	}
	src, err := hf.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ref, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int{1, 403, 407, 261, 378, 13, 290, 333, 400, 285}
	want, got := logits(t, ref, ids), logits(t, c.m, ids)
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
			t.Fatalf("logit %d differs by %g from the HF model's", i, d)
		}
	}
	_, plain := openHF(t, "stories260k")
	unscaled := logits(t, plain, ids)
	if relErr(got, unscaled) < 1e-3 {
		t.Errorf("linear scaling did not change the logits (rel err %g)", relErr(got, unscaled))
	}
}
