// Package testmodel loads the shared test models (../shared/testdata/models)
// for tests, and draws calibration sets from text sampled from them, so that
// every package's tests use the same few lines.
package testmodel

import (
	"context"
	"strings"
	"sync"
	"testing"

	"qllama/convert/calib"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
	"qllama/internal/testutil"
)

// Load opens the shared model name as a float32 infer.Model with its
// tokenizer, failing the test on any error.
func Load(tb testing.TB, name string) (*infer.Model, *tokenizer.Tokenizer) {
	tb.Helper()
	dir := testutil.Shared(tb, "models", name)
	src, err := hf.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close() // LoadHF keeps float32 copies, not the mapping
	m, err := infer.LoadHF(src)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return m, tok
}

var (
	corpusOnce sync.Once
	corpus     string
	corpusErr  error
)

// CalibText is text sampled from stories260k with a fixed seed (24 texts of
// up to 200 tokens), made once per test binary.
func CalibText(tb testing.TB) string {
	tb.Helper()
	corpusOnce.Do(func() {
		m, tok := Load(tb, "stories260k")
		corpus, corpusErr = calib.Generate(context.Background(), m, tok, 24, 200, 42)
	})
	if corpusErr != nil {
		tb.Fatal(corpusErr)
	}
	return corpus
}

// CalibSets tokenizes CalibText for tok and draws a calibration set of n
// windows and a held-out set of heldOut windows (another seed), seqLen
// tokens each.
func CalibSets(tb testing.TB, tok *tokenizer.Tokenizer, n, heldOut, seqLen int) (*calib.Set, *calib.Set) {
	tb.Helper()
	info, toks, err := calib.Read(context.Background(), strings.NewReader(CalibText(tb)), tok, 0, false)
	if err != nil {
		tb.Fatal(err)
	}
	cs, err := calib.FromTokens(toks, tok.BOS(), calib.Options{Samples: n, SeqLen: seqLen, Seed: 1})
	if err != nil {
		tb.Fatal(err)
	}
	cs.Info.SHA256 = info.SHA256
	hs, err := calib.FromTokens(toks, tok.BOS(), calib.Options{Samples: heldOut, SeqLen: seqLen, Seed: 2})
	if err != nil {
		tb.Fatal(err)
	}
	return cs, hs
}
