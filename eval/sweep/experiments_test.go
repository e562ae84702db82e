package sweep

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

const sample = `
version = 1
quick = ["a", "c"]
[defaults]
embed_type = "f16"
head_type = "f16"
calibration = { dataset = "c4", samples = 128, seq_len = 2048 }
[defaults.eval]
protocol = "lmeval"
limit = 50
batch = 8
[defaults.bench]
prompts = [128, 512]
batches = [1, 8]
repeats = 3

[[experiment]]
name = "a"
method = "f16"
embed_type = "f32"

[[experiment]]
name = "b"
method = "gptq"
bits = 4
group = 128
params = { damp = 0.01, act_order = false }
eval = { limit = 5 }

[[experiment]]
name = "c"
method = "rtn"
bits = 3
bench = { batches = [1] }
`

func TestParseRegistry(t *testing.T) {
	r, err := ParseRegistry([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("names = %v", got)
	}
	a, _ := r.Lookup("a")
	b, _ := r.Lookup("b")
	c, _ := r.Lookup("c")
	if a.EmbedType != "f32" || a.HeadType != "f16" || a.Eval.Limit != 50 || a.Eval.Protocol != "lmeval" || a.Calibration.Samples != 128 {
		t.Errorf("a = %+v", a)
	}
	if b.Eval.Limit != 5 || b.Eval.Batch != 8 || b.Params["damp"] != 0.01 || b.Params["act_order"] != false {
		t.Errorf("b = %+v", b)
	}
	if !slices.Equal(c.Bench.Batches, []int{1}) || !slices.Equal(c.Bench.Prompts, []int{128, 512}) || c.Bench.Repeats != 3 {
		t.Errorf("c bench = %+v", c.Bench)
	}
	fa, faAgain := a.Fingerprint(), a.Fingerprint() // computed twice: it must be deterministic
	if fa == b.Fingerprint() || fa != faAgain {
		t.Error("fingerprints do not tell experiments apart")
	}

	sel, err := r.Select(nil, true)
	if err != nil || len(sel) != 2 || sel[0].Name != "a" || sel[1].Name != "c" {
		t.Errorf("quick = %v, %v", sel, err)
	}
	sel, err = r.Select([]string{"c", "b"}, false)
	if err != nil || len(sel) != 2 || sel[0].Name != "b" {
		t.Errorf("only = %v, %v", sel, err)
	}
	if _, err := r.Select([]string{"zz"}, false); err == nil || !strings.Contains(err.Error(), `"zz"`) {
		t.Errorf("unknown --only: %v", err)
	}
	if _, err := r.Select([]string{"b"}, true); err == nil {
		t.Error("b is not quick: want no selection error")
	}
}

func TestParseRegistryErrors(t *testing.T) {
	exp := "[[experiment]]\nname = \"a\"\nmethod = \"f16\"\n"
	tests := []struct{ name, in, want string }{
		{"syntax", "version = ", "expected"},
		{"version", "version = 2\n" + exp, "version = 2"},
		{"empty", "version = 1\n", "no [[experiment]]"},
		{"unknown key", "version = 1\n" + exp + "colour = 1\n", "experiment.colour"},
		{"bad name", "version = 1\n[[experiment]]\nname = \"A b\"\nmethod = \"f16\"\n", "name"},
		{"duplicate", "version = 1\n" + exp + exp, "twice"},
		{"no method", "version = 1\n[[experiment]]\nname = \"a\"\n", "method is required"},
		{"quick unknown", "version = 1\nquick = [\"x\"]\n" + exp, `"x"`},
		{"negative limit", "version = 1\n" + exp + "eval = { limit = -1 }\n", "negative"},
		{"zero batch", "version = 1\n" + exp + "bench = { batches = [0] }\n", "positive"},
		{"bits", "version = 1\n" + exp + "bits = 99\n", "bits 99"},
		{"group", "version = 1\n" + exp + "group = -5\n", "group -5"},
		{"nan param", "version = 1\n" + exp + "params = { damp = nan }\n", "NaN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRegistry([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := LoadRegistry(filepath.Join(t.TempDir(), "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestRepositoryRegistry checks the experiments.toml shipped at the root.
func TestRepositoryRegistry(t *testing.T) {
	path := filepath.Join(testutil.RepoRoot(t), "experiments.toml")
	r, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"fp16_baseline", "bnb_8bit", "bnb_4bit_nf4", "bnb_4bit_fp4", "gptq_4bit_g128", "gptq_3bit_g128", "awq_4bit_g128",
		"rtn_int3_g128", "rtn_int2_g64", "q4_0", "iq4_nl", "gptq_2bit_g64"} {
		if _, ok := r.Lookup(n); !ok {
			t.Errorf("experiments.toml lacks %s", n)
		}
	}
	if len(r.Quick) != 3 {
		t.Errorf("quick set = %v, want three", r.Quick)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

func TestShard(t *testing.T) {
	exps := make([]Experiment, 7)
	for i := range exps {
		exps[i].Name = string(rune('a' + i))
	}
	seen := map[string]int{}
	for k := 0; k < 3; k++ {
		for _, e := range (Shard{k, 3}).Of(exps) {
			seen[e.Name]++
		}
	}
	if len(seen) != 7 {
		t.Errorf("3 shards cover %d of 7", len(seen))
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("%s in %d shards", n, c)
		}
	}
	good := map[string]Shard{"": {0, 1}, "0/1": {0, 1}, "3/4": {3, 4}}
	for in, want := range good {
		if got, err := ParseShard(in); err != nil || got != want {
			t.Errorf("ParseShard(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"4/4", "-1/2", "1", "a/b", "1/0", "1/2/3", " 1/2", "+1/2"} {
		if _, err := ParseShard(in); err == nil {
			t.Errorf("ParseShard(%q): no error", in)
		}
	}
}

func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("version = 1\n[[experiment]]\nname = \"a\"\nmethod = \"f16\"\nparams = { x = nan }\n"))
	f.Add([]byte("version = 1\nquick = [1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistry(data)
		if err != nil {
			return
		}
		for _, e := range r.Experiments {
			if e.Fingerprint() == "" || !nameRE.MatchString(e.Name) {
				t.Fatalf("bad experiment accepted: %+v", e)
			}
		}
	})
}
