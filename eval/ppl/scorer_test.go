package ppl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// oracle is a fake Scorer that knows the token stream: at every position it
// puts logit boost on the token that truly follows (or on token wrong, when
// set) and 0 on every other token, so each scored token has probability
// e^boost / (e^boost + V - 1). It records how it is driven and checks that
// it sees the window's tokens at the window's positions.
type oracle struct {
	t      *testing.T
	vocab  int
	maxSeq int
	stream []int // the evaluated ids
	ctx    int   // window length (to locate the window in the stream)
	bos    int   // -1: no BOS replacement
	boost  float32
	wrong  int // >= 0: boost this token instead of the true next one

	windows int // Resets so far
	pos     int // positions in the current window
	calls   []string
	failOn  int // fail the failOn-th Forward (1-based; 0: never)
	forward int
	short   bool // return one row too few
}

func (o *oracle) Vocab() int  { return o.vocab }
func (o *oracle) MaxSeq() int { return o.maxSeq }

func (o *oracle) Reset() error {
	o.windows++
	o.pos = 0
	o.calls = append(o.calls, "reset")
	return nil
}

// token is the id the window holds at position p.
func (o *oracle) token(p int) int {
	if p == 0 && o.bos >= 0 {
		return o.bos
	}
	return o.stream[(o.windows-1)*o.ctx+p]
}

func (o *oracle) Forward(tokens []int, logits bool) ([][]float32, error) {
	o.forward++
	if o.forward == o.failOn {
		return nil, errors.New("device lost")
	}
	o.calls = append(o.calls, fmt.Sprintf("%d+%d/%v", o.pos, len(tokens), logits))
	var out [][]float32
	for _, tok := range tokens {
		if want := o.token(o.pos); tok != want {
			o.t.Fatalf("window %d position %d: token %d, want %d", o.windows, o.pos, tok, want)
		}
		if logits {
			row := make([]float32, o.vocab)
			hot := o.wrong
			if hot < 0 {
				hot = o.token(o.pos + 1)
			}
			row[hot] = o.boost
			out = append(out, row)
		}
		o.pos++
	}
	if o.short && len(out) > 0 {
		out = out[1:]
	}
	return out, nil
}

func newOracle(t *testing.T, ids []int, ctx int, boost float32) *oracle {
	return &oracle{t: t, vocab: 16, maxSeq: 64, stream: ids, ctx: ctx, bos: 0, boost: boost, wrong: -1}
}

func streamIDs(n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = 1 + (i*7+3)%15
	}
	return ids
}

func TestScorerWindows(t *testing.T) {
	const ctx = 8
	ids := streamIDs(3*ctx + 5)
	for _, tc := range []struct {
		batch int
		calls []string
	}{
		{0, []string{"reset", "0+4/false", "4+3/true"}},
		{2, []string{"reset", "0+4/false", "4+2/true", "6+1/true"}},
		{5, []string{"reset", "0+4/false", "4+3/true"}},
	} {
		m, ref := newOracle(t, ids, ctx, 2), newOracle(t, ids, ctx, 3)
		res, err := Evaluate(context.Background(), m, ids, Options{Ctx: ctx, AddBOS: true, BOS: 0, Ref: ref, Batch: tc.batch})
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Concat(tc.calls, tc.calls, tc.calls)
		if !slices.Equal(m.calls, want) || !slices.Equal(ref.calls, want) {
			t.Fatalf("batch %d: model calls %v, reference calls %v; want %v", tc.batch, m.calls, ref.calls, want)
		}
		if res.Windows != 3 || res.Tokens != 3*(ctx-1-ctx/2) || res.Ctx != ctx || res.CorpusTokens != len(ids) {
			t.Fatalf("batch %d: %+v", tc.batch, res)
		}
		// Every scored token has the same probability under each model.
		v := float64(m.vocab)
		p := math.Exp(2) / (math.Exp(2) + v - 1)
		pRef := math.Exp(3) / (math.Exp(3) + v - 1)
		qRest, pRest := (1-p)/(v-1), (1-pRef)/(v-1)
		kl := pRef*math.Log(pRef/p) + (v-1)*pRest*math.Log(pRest/qRest)
		k := res.KL
		if math.Abs(res.PPL-1/p) > 1e-12 || math.Abs(k.RefPPL-1/pRef) > 1e-12 || res.PPLStderr > 1e-9 {
			t.Fatalf("ppl %v ± %v (want %v), ref ppl %v (want %v)", res.PPL, res.PPLStderr, 1/p, k.RefPPL, 1/pRef)
		}
		if math.Abs(k.Mean-kl) > 1e-12 || math.Abs(k.Max-kl) > 1e-12 || math.Abs(k.Median-kl) > 1e-12 || k.Top1Agree != 1 {
			t.Fatalf("KL %+v, want %v everywhere and full top-1 agreement", *k, kl)
		}
	}
}

func TestScorerNoBOSAndTop1(t *testing.T) {
	const ctx = 6
	ids := streamIDs(2 * ctx)
	m := newOracle(t, ids, ctx, 1)
	m.bos = -1
	ref := newOracle(t, ids, ctx, 1)
	ref.bos, ref.wrong = -1, 0 // the reference always favours token 0, never in the stream
	res, err := Evaluate(context.Background(), m, ids, Options{Ctx: ctx, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if res.KL.Top1Agree != 0 || res.KL.RefPPL <= res.PPL || res.KL.Mean <= 0 {
		t.Fatalf("%+v %+v", res, *res.KL)
	}
}

func TestScorerErrors(t *testing.T) {
	const ctx = 8
	ids := streamIDs(2 * ctx)
	for _, tc := range []struct {
		name string
		set  func(m, ref *oracle)
		want string
	}{
		{"model fails", func(m, ref *oracle) { m.failOn = 2 }, "window 0 (tokens 0..7): model: device lost"},
		{"reference fails", func(m, ref *oracle) { ref.failOn = 3 }, "window 1 (tokens 8..15): reference: device lost"},
		{"rows missing", func(m, ref *oracle) { m.short = true }, "model: 2 rows of logits for 3 tokens"},
		{"reference rows missing", func(m, ref *oracle) { ref.short = true }, "reference: 2 rows of logits for 3 tokens"},
		{"reference context", func(m, ref *oracle) { ref.maxSeq = 4 }, "exceeds the reference model's context length 4"},
		{"model context", func(m, ref *oracle) { m.maxSeq = 4 }, "exceeds the model's context length 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ref := newOracle(t, ids, ctx, 2), newOracle(t, ids, ctx, 2)
			tc.set(m, ref)
			_, err := Evaluate(context.Background(), m, ids, Options{Ctx: ctx, AddBOS: true, Ref: ref})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestCPUScorer: the CPU adapter returns the runner's logits for every
// position of a window, and nothing when logits are not asked for.
func TestCPUScorer(t *testing.T) {
	m := loadStories(t)
	s := CPU(m)
	if s.Vocab() != m.Vocab || s.MaxSeq() != m.MaxSeq {
		t.Fatalf("vocab %d max seq %d", s.Vocab(), s.MaxSeq())
	}
	toks := sample(t, m, 12, 1, 5)
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Forward(toks[:5], false); err != nil || out != nil {
		t.Fatalf("context: %v %v", out, err)
	}
	got, err := s.Forward(toks[5:], true)
	if err != nil {
		t.Fatal(err)
	}
	got = slices.Clone(got)
	// The same positions again after a Reset, and in one pass from a runner.
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	all, err := s.Forward(toks, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || len(all) != 12 {
		t.Fatalf("%d and %d rows", len(got), len(all))
	}
	for i := range got {
		for j := range got[i] {
			if d := math.Abs(float64(got[i][j] - all[5+i][j])); d > 1e-4 {
				t.Fatalf("row %d logit %d: %v split, %v in one pass", i, j, got[i][j], all[5+i][j])
			}
		}
	}
	if CPU(nil) != nil {
		t.Fatal("CPU(nil) is not nil")
	}
}
