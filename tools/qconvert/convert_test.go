package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errw bytes.Buffer
	err := newApp(&out, &errw).RunContext(context.Background(), append([]string{"qconvert"}, args...))
	return out.String(), errw.String(), err
}

// TestConvertCommands runs the default action, `convert --json` and
// `inspect` (table and JSON) on stories260k.
func TestConvertCommands(t *testing.T) {
	in := testutil.Shared(t, "models", "stories260k")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	out, _, err := run(t, "--in", in, "--out", a, "--method", "q4_0", "--embed-type", "q8_0")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"token_embd.weight", "q8_0", "blk.0.ffn_down.weight", "f16*", "linear layers", "llama.cpp compatible"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	out, _, err = run(t, "convert", "--in", in, "--out", b, "--method", "rtn", "--bits", "3", "--group", "32", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Tensors []struct {
			Name, Type string
			BPW        float64
		}
		LinearBPW float64 `json:"linear_bpw"`
		FileBytes int64   `json:"file_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if st, err := os.Stat(b); err != nil || st.Size() != rep.FileBytes || rep.LinearBPW < 3 || rep.LinearBPW > 6 {
		t.Errorf("report: %d bytes, linear bpw %g (file %v)", rep.FileBytes, rep.LinearBPW, err)
	}
	out, _, err = run(t, "inspect", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"qllama.quant.blk.0.attn_q.weight.format", `"int"`, "blk.0.attn_q.weight.codes", "I8", "tokenizer.ggml.tokens", "512 elements"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q", want)
		}
	}
	out, _, err = run(t, "inspect", "--json", a)
	if err != nil {
		t.Fatal(err)
	}
	var ins inspection
	if err := json.Unmarshal([]byte(out), &ins); err != nil {
		t.Fatal(err)
	}
	if len(ins.Tensors) != 47 || ins.Tensors[0].Name != "token_embd.weight" || ins.Tensors[0].Type != "Q8_0" {
		t.Errorf("inspect --json: %d tensors, first %+v", len(ins.Tensors), ins.Tensors[0])
	}
}

// TestConvertUsageErrors checks command-line mistakes give one clear error
// and write nothing.
func TestConvertUsageErrors(t *testing.T) {
	in := testutil.Shared(t, "models", "stories260k")
	dir := t.TempDir()
	out := filepath.Join(dir, "x.gguf")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--in", in, "--out", out}, "--method is required"},
		{[]string{"--out", out, "--method", "q8_0"}, "--in is required"},
		{[]string{"convert", "--in", in, "--out", out, "--method", "q9"}, `"q9"`},
		{[]string{"--in", filepath.Join(dir, "missing"), "--out", out, "--method", "q8_0"}, "missing"},
		{[]string{"inspect"}, "exactly one FILE"},
		{[]string{"inspect", in}, in},
		{[]string{"--in", in, "--out", out, "--method", "gptq", "--calib", in + "/tokenizer.json", "--device", "tpu"}, `--device "tpu"`},
		{[]string{"--in", in, "--out", out, "--method", "gptq", "--calib", in + "/tokenizer.json", "--awq-reference-qk"}, "awq only"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed commands left %d files", len(ents))
	}
}

// TestConvertDeviceCPUBuild checks that a build without CUDA refuses
// --device cuda for calibrated methods with a clear message, and accepts
// --device cpu.
func TestConvertDeviceCPUBuild(t *testing.T) {
	if cudaBuildTag {
		t.Skip("built with the cuda tag")
	}
	in := testutil.Shared(t, "models", "stories260k")
	out := filepath.Join(t.TempDir(), "x.gguf")
	_, _, err := run(t, "--in", in, "--out", out, "--method", "awq", "--calib", in+"/tokenizer.json", "--device", "cuda")
	if err == nil || !strings.Contains(err.Error(), "built without CUDA") {
		t.Errorf("--device cuda in a CPU build: error %v, want one saying the build has no CUDA", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("refused conversion left %s", out)
	}
	if _, _, err := run(t, "--in", in, "--out", out, "--method", "q8_0", "--device", "cuda"); err != nil {
		t.Errorf("--device only matters to gptq/awq; q8_0 with --device cuda: %v", err)
	}
}

// TestHelp checks --help on the app and on every command.
func TestHelp(t *testing.T) {
	out, _, err := run(t, "--help")
	if err != nil || !strings.Contains(out, "--method") {
		t.Errorf("qconvert --help: %v\n%s", err, out)
	}
	for _, c := range newApp(nil, nil).Commands {
		out, _, err := run(t, c.Name, "--help")
		if err != nil || !strings.Contains(out, c.Name) || !strings.Contains(out, c.Usage) {
			t.Errorf("%s --help: %v\n%s", c.Name, err, out)
		}
	}
}
