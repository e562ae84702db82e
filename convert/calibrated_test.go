package convert_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/convert"
	"qllama/convert/awq"
	"qllama/convert/calib"
	"qllama/format/gguf"
	"qllama/infer"
	"qllama/infer/tokenizer"
	"qllama/internal/testutil"
)

// TestCalibratedMethods converts stories260k with GPTQ and AWQ from a
// calibration text sampled from the model itself, and checks that the files
// load, record their calibration, and that on held-out text their logits are
// closer to the float model's than round-to-nearest's at the same bits.
func TestCalibratedMethods(t *testing.T) {
	dir := testutil.Shared(t, "models", "stories260k")
	_, ref := openHF(t, "stories260k")
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	text, err := calib.Generate(context.Background(), ref, tok, 8, 300, 11)
	if err != nil {
		t.Fatal(err)
	}
	calibPath := filepath.Join(t.TempDir(), "calib.txt")
	if err := os.WriteFile(calibPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := calib.Generate(context.Background(), ref, tok, 1, 256, 99)
	if err != nil {
		t.Fatal(err)
	}
	heldOut := tok.EncodeDefault(held)
	allLogits := func(m *infer.Model) []float32 {
		out, err := infer.NewRunner(m).Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: heldOut, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		var flat []float32
		for _, row := range out[0] {
			flat = append(flat, row...)
		}
		return flat
	}
	want := allLogits(ref)
	errOf := func(o convert.Options) (float64, *converted) {
		o.In = dir
		c := convertAndLoad(t, o)
		return relErr(allLogits(c.m), want), c
	}
	rtn, _ := errOf(convert.Options{Method: "rtn", Bits: 4, Group: 32})
	for _, method := range []string{"gptq", "awq"} {
		impPath := filepath.Join(t.TempDir(), "importance.json")
		got, c := errOf(convert.Options{Method: method, Bits: 4, Group: 32, Calib: calibPath, CalibSamples: 16, CalibLen: 128, Importance: impPath})
		var imp struct {
			Importance map[string][]float64 `json:"importance"`
		}
		if b, err := os.ReadFile(impPath); err != nil || json.Unmarshal(b, &imp) != nil || len(imp.Importance) != 7*5 {
			t.Errorf("%s: importance file: %v, %d linears", method, err, len(imp.Importance))
		} else if v := imp.Importance["model.layers.0.mlp.down_proj.weight"]; len(v) != 172 {
			t.Errorf("%s: down_proj importance has %d columns, want 172", method, len(v))
		}
		t.Logf("%s 4-bit g32: held-out logit error %.4f, rtn %.4f", method, got, rtn)
		if got >= rtn {
			t.Errorf("%s: held-out logit error %.4f is not below rtn's %.4f", method, got, rtn)
		}
		if m, _ := c.f.String(gguf.KeyQllamaMethod); m != method {
			t.Errorf("%s: file records method %q", method, m)
		}
		if s, err := c.f.String("qllama.calib.sha256"); err != nil || len(s) != 64 {
			t.Errorf("%s: calibration hash %q %v", method, s, err)
		}
		if n, err := c.f.Uint("qllama.calib.samples"); err != nil || n != 16 {
			t.Errorf("%s: calibration samples %d %v", method, n, err)
		}
		setting := map[string]string{"gptq": "qllama.calib.act_order", "awq": "qllama.calib.awq_reference_qk"}[method]
		if b, err := c.f.Bool(setting); err != nil || b {
			t.Errorf("%s: %s = %v, %v; want false", method, setting, b, err)
		}
		var emb string
		for _, r := range c.rep.Tensors {
			if r.Name == "token_embd.weight" {
				emb = r.Type
			}
		}
		if emb != "f16" {
			t.Errorf("%s: embedding stored as %q, want f16 by default", method, emb)
		}
	}
	for _, tc := range []struct {
		o    convert.Options
		want string
	}{
		{convert.Options{Method: "gptq", Bits: 4}, "--calib"},
		{convert.Options{Method: "awq", Bits: 4, Sym: true, Calib: calibPath}, "asymmetric"},
		{convert.Options{Method: "q4_0", Calib: calibPath}, "gptq and awq only"},
		{convert.Options{Method: "gptq", Type: "q4_0", Calib: calibPath}, "rtn"},
		{convert.Options{Method: "gptq", Bits: 4, Calib: calibPath, AWQReferenceQK: true}, "awq only"},
	} {
		tc.o.In, tc.o.Out = dir, filepath.Join(t.TempDir(), "x.gguf")
		if _, err := convert.Convert(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to mention %q", tc.o, err, tc.want)
		}
	}
}

// TestAWQReferenceQKOption checks that Options.AWQReferenceQK reaches the
// AWQ walk as awq.Options.ReferenceQK (and that it is off by default).
func TestAWQReferenceQKOption(t *testing.T) {
	dir := testutil.Shared(t, "models", "stories260k")
	calibPath := filepath.Join(t.TempDir(), "calib.txt")
	if err := os.WriteFile(calibPath, []byte(strings.Repeat("Once upon a time there was a little cat. ", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop here")
	for _, ref := range []bool{false, true} {
		var got *awq.Options
		o := convert.Options{In: dir, Out: filepath.Join(t.TempDir(), "x.gguf"), Method: "awq", Bits: 4, Group: 32, Calib: calibPath,
			CalibSamples: 2, CalibLen: 32, AWQReferenceQK: ref,
			AWQ: func(ctx context.Context, m *infer.Model, set *calib.Set, opt awq.ModelOptions) (*awq.Result, *awq.Report, error) {
				got = &opt.Options
				return nil, nil, stop
			}}
		if _, err := convert.Convert(context.Background(), o); !errors.Is(err, stop) {
			t.Fatalf("reference %v: error %v, want the walk's", ref, err)
		}
		if got == nil || got.ReferenceQK != ref {
			t.Errorf("AWQReferenceQK %v: the walk got options %+v", ref, got)
		}
	}
}
