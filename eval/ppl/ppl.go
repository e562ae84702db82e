// Package ppl measures what quantization costs a model on a text: perplexity
// and, against a reference model run on the same windows, the KL divergence
// of the next-token distributions and how often both models pick the same
// top token.
//
// The windows follow llama.cpp's perplexity tool (tools/perplexity): the
// token stream is cut into non-overlapping chunks of Ctx tokens, the first
// token of each chunk is replaced by BOS when the vocabulary adds BOS, each
// chunk is run from an empty KV cache, and only the second half is scored:
// the logits at positions Ctx/2 .. Ctx-2 predict tokens Ctx/2+1 .. Ctx-1, so
// every scored token has at least Ctx/2 tokens of context. KL divergence is
// KL(P_ref || P_model) over the full vocabulary, per scored position; all
// log-softmaxes are computed in float64 from the float32 logits.
//
// Both models run window by window: at most Batch positions of logits per
// model are held at any time, never the logits of the whole corpus. The
// models are Scorers, so they may run on any device: CPU adapts the CPU
// runner; qinfer adapts its CUDA backend.
package ppl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"qllama/infer"
)

// DefaultCtx is the window length used when Options.Ctx is 0 (llama.cpp's
// default), capped at the model's context length.
const DefaultCtx = 512

// MinCtx is the shortest window: half of it is context, and at least one
// token must be scored.
const MinCtx = 3

// ErrTooShort is returned (wrapped) when the token stream does not fill one
// window.
var ErrTooShort = errors.New("text too short")

// Options configure an evaluation.
type Options struct {
	// Ctx is the window length in tokens, BOS included (llama.cpp's n_ctx).
	// 0 means DefaultCtx, or the model's context length if that is shorter.
	Ctx int
	// MaxWindows evaluates only the first MaxWindows windows (0: all).
	MaxWindows int
	// AddBOS puts BOS at position 0 of every window (replacing the stream's
	// token there), as llama.cpp does when the vocabulary adds BOS.
	AddBOS bool
	// BOS is the id written when AddBOS is set.
	BOS int
	// Ref is the reference model (typically the unquantized one), e.g.
	// CPU(m). When set, the result carries KL divergence and top-1
	// agreement. It must have the same vocabulary size as the evaluated
	// model.
	Ref Scorer
	// Batch is the number of scored positions per forward pass (0: the whole
	// scored half of a window at once). It bounds memory to Batch*Vocab
	// float32 logits per model and does not change the results.
	Batch int
	// OnWindow, if set, is called once before the first window (Window 0)
	// and after each window with the running totals.
	OnWindow func(Progress)
}

// Progress reports the running totals after a window (all zero but Windows
// before the first).
type Progress struct {
	Window  int     // windows done
	Windows int     // windows to do in all
	Tokens  int     // tokens scored so far
	PPL     float64 // perplexity so far
	KLMean  float64 // mean KL divergence so far (0 without a reference)
}

// Window is one evaluation window of the token stream.
type Window struct {
	Start  int   // offset of the window's first token in the stream
	Tokens []int // the Ctx tokens fed to the model (Tokens[0] is BOS when AddBOS)
	First  int   // logits at positions First .. len(Tokens)-2 are scored
}

// Scored is the number of tokens a window scores.
func (w Window) Scored() int { return len(w.Tokens) - 1 - w.First }

// Windows cuts ids into the windows Evaluate runs: len(ids)/opt.Ctx
// non-overlapping chunks (at most opt.MaxWindows when that is positive), BOS
// in the first position of each when opt.AddBOS is set, scoring from
// opt.Ctx/2. opt.Ctx must be set (no default is applied here).
func Windows(ids []int, opt Options) ([]Window, error) {
	n := opt.Ctx
	if n < MinCtx {
		return nil, fmt.Errorf("window length %d: must be at least %d (half of a window is context and at least one token must be scored)", n, MinCtx)
	}
	if opt.MaxWindows < 0 {
		return nil, fmt.Errorf("max windows %d: must not be negative", opt.MaxWindows)
	}
	count := len(ids) / n
	if count == 0 {
		return nil, fmt.Errorf("%w: the text has %d tokens, one window of context %d needs %d", ErrTooShort, len(ids), n, n)
	}
	if opt.MaxWindows > 0 {
		count = min(count, opt.MaxWindows)
	}
	ws := make([]Window, count)
	for i := range ws {
		start := i * n
		toks := slices.Clone(ids[start : start+n])
		if opt.AddBOS {
			toks[0] = opt.BOS
		}
		ws[i] = Window{Start: start, Tokens: toks, First: n / 2}
	}
	return ws, nil
}

// Result is the outcome of an evaluation. It marshals to flat JSON:
// {"ppl", "ppl_stderr", "ref_ppl", "kl_mean", "kl_median", "kl_p90",
// "kl_p99", "kl_max", "top1_agree", "tokens", "corpus_tokens", "windows",
// "ctx", "model", "ref"}, the reference fields only when there was one.
type Result struct {
	PPL       float64 // exp(mean negative log-likelihood of the scored tokens)
	PPLStderr float64 // standard error of PPL, as llama.cpp estimates it (0 if fewer than 2 tokens)
	MeanNLL   float64 // mean negative log-likelihood in nats

	KL *Divergence // comparison with the reference model; nil without one

	Tokens       int // tokens scored
	CorpusTokens int // tokens in the stream
	Windows      int // windows evaluated
	Ctx          int // window length

	Model string // names of the models, for reports (set by the caller)
	Ref   string
}

// Divergence compares the model's next-token distributions with the
// reference model's on the scored positions.
type Divergence struct {
	RefPPL    float64 // the reference model's perplexity on the same tokens
	Mean      float64 // mean of KL(P_ref || P_model) in nats
	Median    float64
	P90       float64
	P99       float64
	Max       float64
	Top1Agree float64 // fraction of positions where both argmaxes coincide
}

// Scorer is a model placed on some device, run one window at a time: the
// CPU runner (CPU), or a GPU in the tools built with one. Evaluate calls
// Reset before each window, then Forward on the window's tokens in order. A
// Scorer need not be safe for concurrent use.
type Scorer interface {
	// Vocab is the number of logits per position.
	Vocab() int
	// MaxSeq is the model's context length (0: unknown, no limit checked).
	MaxSeq() int
	// Reset starts a new window: the next Forward is at position 0 of an
	// empty KV cache.
	Reset() error
	// Forward appends tokens to the current window. With logits set it
	// returns one row of Vocab() logits per token, valid until the next call
	// to Forward or Reset; without, it may return nil (the tokens only fill
	// the cache).
	Forward(tokens []int, logits bool) ([][]float32, error)
}

// CPU runs m on the CPU (infer.Runner), from a fresh KV cache each window.
// CPU(nil) is nil.
func CPU(m *infer.Model) Scorer {
	if m == nil {
		return nil
	}
	return &cpuScorer{m: m, run: infer.NewRunner(m)}
}

type cpuScorer struct {
	m     *infer.Model
	run   *infer.Runner
	cache *infer.KVCache
}

func (s *cpuScorer) Vocab() int  { return s.m.Vocab }
func (s *cpuScorer) MaxSeq() int { return s.m.MaxSeq }

func (s *cpuScorer) Reset() error {
	s.cache = infer.NewKVCache(&s.m.Config)
	return nil
}

func (s *cpuScorer) Forward(tokens []int, logits bool) ([][]float32, error) {
	if s.cache == nil {
		s.cache = infer.NewKVCache(&s.m.Config)
	}
	out, err := s.run.Forward([]infer.Step{{Cache: s.cache, Tokens: tokens, AllLogits: logits}})
	if err != nil || !logits {
		return nil, err
	}
	return out[0], nil
}

// Evaluate runs model (and opt.Ref, if set) over the windows of ids and
// returns perplexity and, with a reference, KL divergence statistics. ids is
// the tokenized text without BOS; Evaluate places BOS itself (opt.AddBOS).
func Evaluate(ctx context.Context, model Scorer, ids []int, opt Options) (*Result, error) {
	if model == nil {
		return nil, errors.New("ppl: no model")
	}
	vocab, maxSeq := model.Vocab(), model.MaxSeq()
	if opt.Ref != nil && opt.Ref.Vocab() != vocab {
		return nil, fmt.Errorf("ppl: the reference model's vocabulary has %d tokens, the model's %d: they must share one tokenizer", opt.Ref.Vocab(), vocab)
	}
	if opt.Ctx == 0 {
		opt.Ctx = DefaultCtx
		if maxSeq > 0 {
			opt.Ctx = min(opt.Ctx, maxSeq)
		}
	}
	if maxSeq > 0 && opt.Ctx > maxSeq {
		return nil, fmt.Errorf("ppl: window length %d exceeds the model's context length %d", opt.Ctx, maxSeq)
	}
	if opt.Ref != nil {
		if rs := opt.Ref.MaxSeq(); rs > 0 && opt.Ctx > rs {
			return nil, fmt.Errorf("ppl: window length %d exceeds the reference model's context length %d", opt.Ctx, rs)
		}
	}
	if opt.Batch < 0 {
		return nil, fmt.Errorf("ppl: batch %d must not be negative", opt.Batch)
	}
	if opt.AddBOS && (opt.BOS < 0 || opt.BOS >= vocab) {
		return nil, fmt.Errorf("ppl: BOS id %d outside the vocabulary [0, %d)", opt.BOS, vocab)
	}
	ws, err := Windows(ids, opt)
	if err != nil {
		return nil, fmt.Errorf("ppl: %w", err)
	}
	e := &evaluator{
		opt: opt,
		run: model,
		ref: opt.Ref,
		acc: accumulator{withRef: opt.Ref != nil},
	}
	if opt.OnWindow != nil {
		opt.OnWindow(Progress{Windows: len(ws)})
	}
	for i, w := range ws {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := e.window(ctx, w); err != nil {
			return nil, fmt.Errorf("ppl: window %d (tokens %d..%d): %w", i, w.Start, w.Start+len(w.Tokens)-1, err)
		}
		if opt.OnWindow != nil {
			opt.OnWindow(Progress{Window: i + 1, Windows: len(ws), Tokens: e.acc.count, PPL: math.Exp(e.acc.sumNLL / float64(e.acc.count)), KLMean: e.acc.sumKL / float64(e.acc.count)})
		}
	}
	res := e.acc.result()
	res.CorpusTokens, res.Windows, res.Ctx = len(ids), len(ws), opt.Ctx
	return res, nil
}

type evaluator struct {
	opt      Options
	run, ref Scorer
	acc      accumulator
}

// window runs one window through both models and accumulates its scored
// positions.
func (e *evaluator) window(ctx context.Context, w Window) error {
	if err := e.run.Reset(); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if e.ref != nil {
		if err := e.ref.Reset(); err != nil {
			return fmt.Errorf("reference: %w", err)
		}
	}
	// The unscored first half only fills the caches.
	ctxToks := w.Tokens[:w.First]
	if _, err := e.run.Forward(ctxToks, false); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if e.ref != nil {
		if _, err := e.ref.Forward(ctxToks, false); err != nil {
			return fmt.Errorf("reference: %w", err)
		}
	}
	// Scored positions First .. len-2; the last token is only a target.
	end := len(w.Tokens) - 1
	batch := e.opt.Batch
	if batch == 0 {
		batch = end - w.First
	}
	vocab := e.run.Vocab()
	for lo := w.First; lo < end; lo += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+batch, end)
		toks := w.Tokens[lo:hi]
		out, err := e.run.Forward(toks, true)
		if err != nil {
			return fmt.Errorf("model: %w", err)
		}
		if err := checkRows(out, len(toks), vocab); err != nil {
			return fmt.Errorf("model: %w", err)
		}
		var refOut [][]float32
		if e.ref != nil {
			if refOut, err = e.ref.Forward(toks, true); err != nil {
				return fmt.Errorf("reference: %w", err)
			}
			if err := checkRows(refOut, len(toks), vocab); err != nil {
				return fmt.Errorf("reference: %w", err)
			}
		}
		stats := make([]tokenStats, hi-lo)
		errs := make([]error, hi-lo)
		parallel(hi-lo, func(a, b int) {
			var sc scratch
			for k := a; k < b; k++ {
				var ref []float32
				if refOut != nil {
					ref = refOut[k]
				}
				stats[k], errs[k] = compare(out[k], ref, w.Tokens[lo+k+1], &sc)
			}
		})
		for k, err := range errs {
			if err != nil {
				return fmt.Errorf("position %d: %w", lo+k, err)
			}
		}
		for _, s := range stats {
			e.acc.add(s)
		}
	}
	return nil
}

// checkRows verifies that a Scorer returned rows x vocab logits.
func checkRows(out [][]float32, rows, vocab int) error {
	if len(out) != rows {
		return fmt.Errorf("%d rows of logits for %d tokens", len(out), rows)
	}
	for i, r := range out {
		if len(r) != vocab {
			return fmt.Errorf("row %d has %d logits, want %d", i, len(r), vocab)
		}
	}
	return nil
}

// parallel splits [0, n) into contiguous chunks run on GOMAXPROCS goroutines
// and waits for them.
func parallel(n int, fn func(lo, hi int)) {
	threads := min(runtime.GOMAXPROCS(0), n)
	if threads <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + threads - 1) / threads
	for lo := 0; lo < n; lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(lo+chunk, n))
	}
	wg.Wait()
}
