package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"qllama/internal/testutil"
)

// run executes qinfer with args and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := newApp(&out, &errb).RunContext(context.Background(), append([]string{"qinfer"}, args...))
	return out.String(), errb.String(), err
}

func TestCommands(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	llama := testutil.Shared(t, "models", "random_llama32")

	out, _, err := run(t, "tokenize", "--model", llama, "--text", "Once upon a time, there was a little girl named Lily.")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), "[128000,12805,5304,264,892,11,1070,574,264,2697,3828,7086,48390,13]"; got != want {
		t.Errorf("tokenize: %s, want %s", got, want)
	}
	out, _, err = run(t, "tokenize", "--model", stories, "--text", "Once upon a time", "--no-bos")
	if err != nil || strings.HasPrefix(out, "[1,") {
		t.Errorf("tokenize --no-bos: %q %v", out, err)
	}

	out, _, err = run(t, "logits", "--model", stories, "--ids", "1,403,407,261,378")
	if err != nil {
		t.Fatal(err)
	}
	var last struct{ Last []float32 }
	if err := json.Unmarshal([]byte(out), &last); err != nil || len(last.Last) != 512 {
		t.Fatalf("logits: %d values, %v", len(last.Last), err)
	}
	out, _, err = run(t, "logits", "--model", stories, "--ids", "1,403,407", "--all-positions")
	if err != nil {
		t.Fatal(err)
	}
	var all struct{ Positions [][]float32 }
	if err := json.Unmarshal([]byte(out), &all); err != nil || len(all.Positions) != 3 || len(all.Positions[2]) != 512 {
		t.Fatalf("logits --all-positions: %v", err)
	}

	out, _, err = run(t, "generate", "--model", stories, "--prompt", "Once upon a time", "--max-tokens", "16")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, ", there was a little girl named Lily.") {
		t.Errorf("generate: %q", out)
	}
	out, _, err = run(t, "generate", "--model", stories, "--prompt", "Once upon a time", "--max-tokens", "16", "--json",
		"--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "7")
	if err != nil {
		t.Fatal(err)
	}
	var g generateResult
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatal(err)
	}
	if len(g.IDs) == 0 || g.Text == "" || g.Timings.GeneratedTokens != len(g.IDs) || g.PromptIDs[0] != 1 {
		t.Errorf("generate --json: %+v", g)
	}
	out2, _, _ := run(t, "generate", "--model", stories, "--prompt", "Once upon a time", "--max-tokens", "16", "--json",
		"--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "7")
	var g2 generateResult
	_ = json.Unmarshal([]byte(out2), &g2)
	if g2.Text != g.Text {
		t.Errorf("same seed, different text: %q vs %q", g.Text, g2.Text)
	}
	out, _, err = run(t, "generate", "--model", stories, "--prompt", "Once upon a time", "--max-tokens", "40", "--stop", "Lily")
	if err != nil || strings.Contains(out, "Lily") || !strings.Contains(out, "girl named") {
		t.Errorf("generate --stop: %q %v", out, err)
	}

	out, _, err = run(t, "info", "--model", llama)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"llama3 x32", "BF16", "llama3-bpe", "128256"} {
		if !strings.Contains(out, want) {
			t.Errorf("info lacks %q:\n%s", want, out)
		}
	}
}

// TestErrors checks that bad input gives one clear error, never a panic.
func TestErrors(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	garbage := t.TempDir()
	if err := os.WriteFile(filepath.Join(garbage, "config.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--model", "/nonexistent", "--prompt", "x"}, "/nonexistent"},
		{[]string{"generate", "--model", garbage, "--prompt", "x"}, "config.json"},
		{[]string{"logits", "--model", stories, "--ids", "1,x"}, `"x" is not a token id`},
		{[]string{"logits", "--model", stories, "--ids", "1,100000"}, "outside the vocabulary"},
		{[]string{"generate", "--model", stories}, "prompt"},
		{[]string{"tokenize", "--model", garbage, "--text", "x"}, "tokenizer"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

// TestHelp checks that every command has --help.
func TestHelp(t *testing.T) {
	var walk func(path []string, cs []*cli.Command)
	walk = func(path []string, cs []*cli.Command) {
		for _, c := range cs {
			p := append(append([]string(nil), path...), c.Name)
			out, _, err := run(t, append(p, "--help")...)
			if err != nil || !strings.Contains(out, c.Name) || !strings.Contains(out, c.Usage) {
				t.Errorf("%v --help: %v\n%s", p, err, out)
			}
			walk(p, c.Subcommands)
		}
	}
	walk(nil, newApp(nil, nil).Commands)
}

// TestEvalCoQA runs both protocols end to end on the real tiny model with the
// hand-made TinyStories-style CoQA file, and scores the shared fixture.
func TestEvalCoQA(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	data := filepath.Join(testutil.RepoRoot(t), "eval", "coqa", "testdata", "tinystories_coqa.json")
	for _, tc := range []struct {
		protocol string
		n        int
	}{{"lmeval", 4}, {"all-turns", 17}} {
		out := filepath.Join(t.TempDir(), "res.json")
		_, _, err := run(t, "eval", "coqa", "--model", stories, "--data", data, "--protocol", tc.protocol,
			"--max-gen-tokens", "24", "--batch", "4", "--out", out)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Protocol string
			N        int
			F1, EM   *float64
			Model    struct {
				SHA256  string
				BPW     float64
				KVCache string `json:"kv_cache"`
			}
			Timings struct {
				PromptTokens       int `json:"prompt_tokens"`
				CachedPromptTokens int `json:"cached_prompt_tokens"`
			}
			Predictions []struct {
				Golds []string
			}
		}
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatal(err)
		}
		if res.N != tc.n || len(res.Predictions) != tc.n || res.F1 == nil || res.EM == nil || len(res.Model.SHA256) != 64 || res.Model.BPW != 32 || res.Model.KVCache != "f32" {
			t.Errorf("%s: incomplete result: %s", tc.protocol, b[:min(len(b), 600)])
		}
		if tc.protocol == "all-turns" && res.Timings.CachedPromptTokens == 0 {
			t.Errorf("all-turns reused no story prefix: %+v", res.Timings)
		}
	}
	fix := testutil.Shared(t, "coqa")
	out, _, err := run(t, "eval", "coqa", "score", "--data", filepath.Join(fix, "coqa_synthetic.json"),
		"--predictions", filepath.Join(fix, "preds_official.json"), "--protocol", "official")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Official map[string]any `json:"official"`
	}
	b, err := os.ReadFile(filepath.Join(fix, "expected_scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(b, &exp)
	if !strings.Contains(out, `"overall"`) {
		t.Errorf("score output lacks the overall score:\n%s", out[:min(len(out), 400)])
	}
}

// TestCPUOnlyCommands: commands that run the CPU reference refuse --device cuda.
func TestCPUOnlyCommands(t *testing.T) {
	stories := testutil.Shared(t, "models", "stories260k")
	for _, args := range [][]string{
		{"logits", "--model", stories, "--ids", "1,2", "--device", "cuda"},
		{"info", "--model", stories, "--device", "cuda"},
	} {
		if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "CPU reference") {
			t.Errorf("%v: %v", args, err)
		}
	}
}
