package coqa

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	pbar "qllama/internal/progress"
	"slices"
	"sync"
	"time"
)

// Tokenizer is the model's tokenizer as the evaluation needs it.
type Tokenizer interface {
	// Encode tokenises text, prepending BOS when addBOS is true.
	Encode(text string, addBOS bool) []int
	// Decode turns ids back into text.
	Decode(ids []int) string
	// EOSString is the decoded text of the end-of-sequence token (e.g.
	// "<|end_of_text|>"); lm-eval adds it to the stop strings. "" for none.
	EOSString() string
	// AddsBOS reports whether the tokenizer config adds BOS by default
	// (Hugging Face add_special_tokens=True behaviour).
	AddsBOS() bool
}

// Request is one prompt to complete.
type Request struct {
	Key          string
	Prompt       []int
	MaxNewTokens int
	Stop         []string
	// Group is the story id: requests of one group share a prompt prefix
	// (the story and the earlier turns) and are scheduled next to each other.
	Group string
}

// Completion is the result of one Request.
type Completion struct {
	Key string
	// Text is the decoded continuation, already cut at the first stop string.
	Text               string
	Tokens             int // generated tokens
	PromptTokens       int
	CachedPromptTokens int // prompt prefix reused from an earlier request
}

// Generator runs greedy decoding for a batch of requests (the backend
// batches and may reuse the KV cache of shared prefixes). It calls done for
// each finished request, in any order, possibly from several goroutines, and
// returns after all requests are done or with an error. It should return
// ctx.Err() promptly when ctx is cancelled.
type Generator interface {
	Generate(ctx context.Context, reqs []Request, done func(Completion)) error
	MaxBatch() int
}

// Order is how Schedule orders requests.
type Order int

const (
	// OrderGrouped keeps the requests of one Group adjacent in their given
	// order (turns of a story share its prefix) and puts the groups with the
	// longest prompt first.
	OrderGrouped Order = iota
	// OrderLongestFirst sorts all requests by prompt length, longest first
	// (lm-eval's order); ties keep their given order.
	OrderLongestFirst
	// OrderGiven keeps the given order.
	OrderGiven
)

// String names the order.
func (o Order) String() string {
	switch o {
	case OrderGrouped:
		return "grouped"
	case OrderLongestFirst:
		return "longest-first"
	case OrderGiven:
		return "given"
	}
	return fmt.Sprintf("Order(%d)", int(o))
}

// SortRequests reorders reqs in place according to o (stable).
func SortRequests(reqs []Request, o Order) {
	switch o {
	case OrderLongestFirst:
		slices.SortStableFunc(reqs, func(a, b Request) int { return cmp.Compare(len(b.Prompt), len(a.Prompt)) })
	case OrderGrouped:
		longest := make(map[string]int)
		first := make(map[string]int)
		for i, r := range reqs {
			longest[r.Group] = max(longest[r.Group], len(r.Prompt))
			if _, ok := first[r.Group]; !ok {
				first[r.Group] = i
			}
		}
		slices.SortStableFunc(reqs, func(a, b Request) int {
			if c := cmp.Compare(longest[b.Group], longest[a.Group]); c != 0 {
				return c
			}
			return cmp.Compare(first[a.Group], first[b.Group])
		})
	}
}

// ScheduleStats describes a Schedule call.
type ScheduleStats struct {
	Batches int
	Wall    time.Duration
}

// Schedule feeds reqs, in the given order, to gen in consecutive batches of
// gen.MaxBatch() (at least 1) and collects the completions by key. Progress
// (count, rate, ETA) goes to progress (nil: none). It fails if a key is
// duplicated, if the generator reports an unknown or repeated key or returns
// without completing its batch, or when ctx is cancelled.
func Schedule(ctx context.Context, gen Generator, reqs []Request, progress io.Writer) (map[string]Completion, ScheduleStats, error) {
	var st ScheduleStats
	want := make(map[string]bool, len(reqs))
	for _, r := range reqs {
		if want[r.Key] {
			return nil, st, fmt.Errorf("schedule: duplicate request key %q", r.Key)
		}
		want[r.Key] = true
	}
	bs := max(1, gen.MaxBatch())
	out := make(map[string]Completion, len(reqs))
	prog := pbar.New(progress, int64(len(reqs)), "coqa", pbar.Options{Unit: "q"})
	start := time.Now()
	var mu sync.Mutex
	for lo := 0; lo < len(reqs); lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, st, fmt.Errorf("schedule: %d of %d requests done: %w", len(out), len(reqs), err)
		}
		batch := reqs[lo:min(lo+bs, len(reqs))]
		inBatch := make(map[string]bool, len(batch))
		for _, r := range batch {
			inBatch[r.Key] = true
		}
		var cbErr error
		err := gen.Generate(ctx, batch, func(c Completion) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case !inBatch[c.Key]:
				if cbErr == nil {
					cbErr = fmt.Errorf("completion for key %q not in this batch", c.Key)
				}
				return
			case cmpHas(out, c.Key):
				if cbErr == nil {
					cbErr = fmt.Errorf("completion for key %q reported twice", c.Key)
				}
				return
			}
			out[c.Key] = c
			prog.Add(1)
		})
		st.Batches++
		if err != nil {
			return nil, st, fmt.Errorf("schedule: batch %d (%d requests): %w", st.Batches, len(batch), err)
		}
		mu.Lock()
		if cbErr != nil {
			mu.Unlock()
			return nil, st, fmt.Errorf("schedule: batch %d: %w", st.Batches, cbErr)
		}
		for _, r := range batch {
			if !cmpHas(out, r.Key) {
				mu.Unlock()
				return nil, st, fmt.Errorf("schedule: batch %d: generator returned without completing %q", st.Batches, r.Key)
			}
		}
		mu.Unlock()
	}
	prog.Finish()
	st.Wall = time.Since(start)
	return out, st, nil
}

func cmpHas(m map[string]Completion, k string) bool { _, ok := m[k]; return ok }

// DefaultMaxGenTokens is lm-eval's max_gen_toks.
const DefaultMaxGenTokens = 256

// DefaultMaxLength is lm-eval's fallback context length when the model
// config gives none.
const DefaultMaxLength = 2048

// Options configures Run.
type Options struct {
	// Protocol is ProtocolLMEval or ProtocolAllTurns.
	Protocol string
	// Limit evaluates only the first Limit stories (0: all), like lm-eval's
	// --limit.
	Limit int
	// MaxGenTokens bounds each answer (default DefaultMaxGenTokens);
	// generation stops earlier at a stop string.
	MaxGenTokens int
	// MaxPositionEmbeddings is the model context (config
	// max_position_embeddings; default DefaultMaxLength). Prompts longer than
	// MaxPositionEmbeddings-MaxGenTokens tokens keep only their last tokens,
	// as lm-eval's input_ids[:, -max_ctx_len:] does; the BOS token is cut off
	// with the rest of the head (lm-eval does not re-add it).
	MaxPositionEmbeddings int
	// Order of the requests fed to the generator (default OrderGrouped).
	Order Order
	// Progress receives progress output (nil: none).
	Progress io.Writer
	// Model is copied into the result.
	Model *ModelInfo
	// DatasetPath is recorded in the result.
	DatasetPath string
}

type item struct {
	story, turn int // indices
	full        int // prompt tokens before truncation
	req         Request
}

// buildRequests tokenises the prompts of the protocol. With addBOS the
// tokenizer prepends BOS; when a prompt exceeds maxCtx tokens only its last
// maxCtx tokens are kept, exactly like lm-eval's
// tok_batch_encode(left_truncate_len=max_length-max_gen_toks), which slices
// input_ids[:, -left_truncate_len:] after encoding: the BOS token is dropped
// together with the rest of the head of a truncated prompt.
func buildRequests(ds *Dataset, tok Tokenizer, protocol string, maxCtx, maxGen int, stops []string) []item {
	addBOS := tok.AddsBOS()
	var items []item
	add := func(si, t int) {
		s := &ds.Stories[si]
		ids := tok.Encode(Prompt(s, t), addBOS)
		full := len(ids)
		if len(ids) > maxCtx {
			ids = ids[len(ids)-maxCtx:]
		}
		items = append(items, item{story: si, turn: t, full: full, req: Request{
			Key:          fmt.Sprintf("%d/%d", si, t),
			Prompt:       ids,
			MaxNewTokens: maxGen,
			Stop:         stops,
			Group:        s.ID,
		}})
	}
	for si := range ds.Stories {
		if protocol == ProtocolLMEval {
			add(si, len(ds.Stories[si].Questions)-1)
			continue
		}
		for t := range ds.Stories[si].Questions {
			add(si, t)
		}
	}
	return items
}

// Run evaluates a model on ds with the given protocol: it builds the prompts
// (Prompt), tokenises them with the tokenizer's BOS setting, left-truncates
// over-long ones, generates greedily through gen via Schedule with stop
// strings "\nQ:" and the tokenizer's EOS string, cuts each output at the stop
// strings again (lm-eval does so post hoc), cleans it with CleanPrediction and
// scores it (lm-eval scorer for ProtocolLMEval, evaluate-v1.0 for
// ProtocolAllTurns).
func Run(ctx context.Context, ds *Dataset, tok Tokenizer, gen Generator, opt Options) (*Result, error) {
	if opt.Protocol != ProtocolLMEval && opt.Protocol != ProtocolAllTurns {
		return nil, fmt.Errorf("coqa run: unknown protocol %q (want %s or %s)", opt.Protocol, ProtocolLMEval, ProtocolAllTurns)
	}
	if opt.Limit < 0 {
		return nil, fmt.Errorf("coqa run: negative limit %d", opt.Limit)
	}
	maxGen := opt.MaxGenTokens
	if maxGen == 0 {
		maxGen = DefaultMaxGenTokens
	}
	maxLen := opt.MaxPositionEmbeddings
	if maxLen == 0 {
		maxLen = DefaultMaxLength
	}
	maxCtx := maxLen - maxGen
	if maxGen < 0 || maxCtx <= 0 {
		return nil, fmt.Errorf("coqa run: max_gen_tokens %d leaves no room for a prompt in %d positions", maxGen, maxLen)
	}
	started := time.Now()
	sub := ds.Head(opt.Limit)
	stops := []string{StopQ}
	if eos := tok.EOSString(); eos != "" {
		stops = append(stops, eos)
	}
	items := buildRequests(sub, tok, opt.Protocol, maxCtx, maxGen, stops)
	reqs := make([]Request, len(items))
	for i := range items {
		reqs[i] = items[i].req
	}
	SortRequests(reqs, opt.Order)
	comps, st, err := Schedule(ctx, gen, reqs, opt.Progress)
	if err != nil {
		return nil, fmt.Errorf("coqa run: %w", err)
	}
	out := func(it *item) string { return CutAtStops(comps[it.req.Key].Text, stops) }

	var res *Result
	// info maps a scored record back to its request.
	var info func(rec *PredictionRecord, i int) *item
	if opt.Protocol == ProtocolLMEval {
		res = scoreLMEval(sub, func(si int) (string, bool) { return out(&items[si]), true })
		info = func(_ *PredictionRecord, i int) *item { return &items[i] }
	} else {
		byKey := make(map[string]*item, len(items))
		for i := range items {
			it := &items[i]
			s := &sub.Stories[it.story]
			byKey[turnKey(s.ID, s.Questions[it.turn].TurnID)] = it // later duplicates win, as in the gold dict
		}
		res, err = scoreAllTurns(sub, func(id string, turnID int) (string, string, bool) {
			it, ok := byKey[turnKey(id, turnID)]
			if !ok {
				return "", "", false
			}
			raw := out(it)
			return raw, CleanPrediction(raw), true
		})
		if err != nil {
			return nil, fmt.Errorf("coqa run: %w", err)
		}
		info = func(rec *PredictionRecord, _ int) *item { return byKey[turnKey(rec.ID, rec.TurnID)] }
	}
	tm := &Timings{WallSeconds: st.Wall.Seconds(), Requests: len(reqs), Batches: st.Batches}
	for _, it := range items {
		c := comps[it.req.Key]
		tm.PromptTokens += len(it.req.Prompt)
		tm.CachedPromptTokens += c.CachedPromptTokens
		tm.GeneratedTokens += c.Tokens
	}
	for i := range res.Predictions {
		rec := &res.Predictions[i]
		it := info(rec, i)
		if it == nil {
			continue
		}
		c := comps[it.req.Key]
		rec.PromptTokens = len(it.req.Prompt)
		rec.PromptTokensFull = it.full
		rec.Truncated = it.full > len(it.req.Prompt)
		rec.CachedPromptTokens = c.CachedPromptTokens
		rec.GeneratedTokens = c.Tokens
	}
	if w := tm.WallSeconds; w > 0 {
		tm.PromptTokensPerSec = float64(tm.PromptTokens) / w
		tm.GenTokensPerSec = float64(tm.GeneratedTokens) / w
		tm.QuestionsPerSec = float64(len(reqs)) / w
	}
	nTrunc := 0
	for _, it := range items {
		if it.full > len(it.req.Prompt) {
			nTrunc++
		}
	}
	if nTrunc > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d prompts left-truncated to their last %d tokens", nTrunc, maxCtx))
	}
	res.Origin = "generate"
	res.Model = opt.Model
	res.Dataset.Path = opt.DatasetPath
	res.Limit = opt.Limit
	res.MaxGenTokens = maxGen
	res.MaxContextTokens = maxCtx
	res.MaxPositionEmbeddings = maxLen
	bos := tok.AddsBOS()
	res.AddBOS = &bos
	res.Order = opt.Order.String()
	res.Stop = stops
	res.Decoding = "greedy"
	res.Timings = tm
	res.Started = started.UTC().Format(time.RFC3339)
	return res, nil
}

// errNoStories is returned by Sanity for an empty dataset.
var errNoStories = errors.New("coqa sanity: dataset has no stories")
