package random

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
)

// TestShapes checks each named shape against the parameter count of the
// released checkpoint and that its config parses.
func TestShapes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params int64
	}{
		{"llama-3.2-1b", 1_235_814_400},
		{"llama-3.2-3b", 3_212_749_824},
		{"llama-3.1-8b", 8_030_261_248},
	} {
		s, err := Lookup(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, ti := range s.Tensors() {
			n += ti.NumElements()
		}
		if n != tc.params {
			t.Errorf("%s: %d parameters, want %d", tc.name, n, tc.params)
		}
		cfg, err := s.ConfigJSON(1, 2)
		if err != nil {
			t.Fatal(err)
		}
		hc, err := hf.ParseConfig(cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if hc.ParamCount() != tc.params {
			t.Errorf("%s: config implies %d parameters", tc.name, hc.ParamCount())
		}
	}
	if _, err := Lookup("llama-9"); err == nil || !strings.Contains(err.Error(), "tiny") {
		t.Errorf("unknown shape: %v", err)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestWriteTiny writes the tiny shape twice, checks the bytes are equal for
// equal seeds, and that the result loads and runs.
func TestWriteTiny(t *testing.T) {
	s, _ := Lookup("tiny")
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	var progress int64
	for _, d := range []struct {
		path string
		seed uint64
	}{{a, 1}, {b, 1}, {c, 2}} {
		if err := Write(context.Background(), d.path, s, Options{Seed: d.seed, Progress: func(n int64) { progress += n }}); err != nil {
			t.Fatal(err)
		}
	}
	if progress != 3*s.Bytes() {
		t.Errorf("progress reported %d bytes, want %d", progress, 3*s.Bytes())
	}
	st := func(d string) string { return filepath.Join(d, "model.safetensors") }
	if fileHash(t, st(a)) != fileHash(t, st(b)) {
		t.Error("same seed, different weights")
	}
	if fileHash(t, st(a)) == fileHash(t, st(c)) {
		t.Error("different seeds, same weights")
	}
	src, err := hf.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(a)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != m.Vocab || tok.BOS() != m.BOS || !m.IsEOS(tok.EOS()[0]) {
		t.Errorf("tokenizer (%d tokens, bos %d, eos %v) disagrees with config (vocab %d, bos %d, eos %v)",
			tok.VocabSize(), tok.BOS(), tok.EOS(), m.Vocab, m.BOS, m.EOS)
	}
	w, err := src.Float32(hf.LayerTensorName(0, "mlp.up_proj.weight"))
	if err != nil {
		t.Fatal(err)
	}
	var sum, sq float64
	for _, v := range w {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean, variance := sum/float64(len(w)), sq/float64(len(w))
	if mean > 0.002 || mean < -0.002 || variance < 0.0003 || variance > 0.0005 { // variance of N(0, 0.02^2) = 0.0004
		t.Errorf("weights: mean %g, variance %g; want N(0, 0.02^2)", mean, variance)
	}
	ids := tok.EncodeDefault("Once upon a time")
	var got infer.Completion
	err = infer.NewRunner(m).Generate(context.Background(), []infer.Request{{Prompt: ids, MaxNewTokens: 8}},
		infer.GenerateOptions{Decoder: tok}, func(c infer.Completion) { got = c })
	if err != nil || len(got.Tokens) == 0 {
		t.Errorf("generate: %v, %+v", err, got)
	}
}

// TestWriteErrors: an existing directory is refused and a cancelled run
// leaves nothing behind.
func TestWriteErrors(t *testing.T) {
	s, _ := Lookup("tiny")
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), full, s, Options{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("existing directory: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(dir, "cancelled")
	if err := Write(ctx, out, s, Options{}); err == nil {
		t.Error("cancelled write: no error")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("cancelled write left %v", names)
	}
}
