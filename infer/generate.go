package infer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Decoder turns token ids into text; stop strings are matched on its output.
type Decoder interface {
	Decode(ids []int) string
}

// Request is one prompt to continue.
type Request struct {
	Key          string // caller's name for the request, echoed in its Completion
	Prompt       []int  // token ids, BOS included when wanted
	MaxNewTokens int    // generated tokens at most
	Stop         []string
	// Group names requests that share a prompt prefix (the turns of one
	// story): the runner reuses the keys and values of the longest common
	// prefix with the group's previous request instead of recomputing them.
	Group  string
	Sample SampleOptions
}

// Stop reasons reported in Completion.StopReason.
const (
	StopEOS    = "eos"    // an end-of-sequence token was generated (not included)
	StopString = "stop"   // a stop string appeared; Text is cut before it
	StopLength = "length" // MaxNewTokens or the context length was reached
)

// Completion is the result of one Request.
type Completion struct {
	Key                string
	Tokens             []int  // generated ids, EOS excluded
	Text               string // decoded Tokens, cut at the first stop string
	StopReason         string
	PromptTokens       int // prompt length
	CachedPromptTokens int // prompt tokens whose keys and values were reused
	FirstToken         time.Duration
	Total              time.Duration
}

// GenerateOptions configure a batched generation run.
type GenerateOptions struct {
	MaxBatch int     // sequences in flight at once (default 1)
	Decoder  Decoder // required when any request has stop strings
	// OnToken, if set, is called after each generated token (for streaming).
	OnToken func(key string, id int)
}

type slot struct {
	req     Request
	cache   *KVCache
	fed     []int // tokens whose keys and values are in cache
	pending []int // tokens to feed next step
	out     []int
	sampler *Sampler
	cached  int
	start   time.Time
	first   time.Duration
}

type prefixEntry struct {
	group string
	fed   []int
	cache *KVCache
}

// Generate continues every request, keeping up to MaxBatch sequences in one
// forward pass (continuous batching: a finished sequence's place is taken by
// the next request at once), and calls done for each request as it finishes.
func (r *Runner) Generate(ctx context.Context, reqs []Request, opt GenerateOptions, done func(Completion)) error {
	c := &r.M.Config
	maxBatch := max(opt.MaxBatch, 1)
	for i, q := range reqs {
		if len(q.Prompt) == 0 {
			return fmt.Errorf("generate: request %d (%s) has an empty prompt", i, q.Key)
		}
		if len(q.Stop) > 0 && opt.Decoder == nil {
			return errors.New("generate: stop strings need a decoder")
		}
		if c.MaxSeq > 0 && len(q.Prompt) > c.MaxSeq {
			return fmt.Errorf("generate: request %s: prompt of %d tokens exceeds the context length %d", q.Key, len(q.Prompt), c.MaxSeq)
		}
	}
	var (
		active  []*slot
		next    int
		maxPref = 2 + maxBatch/8 // groups kept; turns of a story arrive together
	)
	// r.prefixes outlives this call, so a story's later turns reuse its
	// prompt even when the caller submits them in separate calls.
	remember := func(s *slot) {
		if s.req.Group == "" {
			return
		}
		for i, e := range r.prefixes {
			if e.group == s.req.Group {
				r.prefixes = append(r.prefixes[:i], r.prefixes[i+1:]...)
				break
			}
		}
		r.prefixes = append(r.prefixes, prefixEntry{s.req.Group, s.fed, s.cache})
		if len(r.prefixes) > maxPref {
			r.prefixes = r.prefixes[1:]
		}
	}
	start := func(q Request) *slot {
		s := &slot{req: q, cache: NewKVCache(c), sampler: NewSampler(q.Sample), start: time.Now()}
		if q.Group != "" {
			for _, e := range r.prefixes {
				if e.group != q.Group {
					continue
				}
				n := commonPrefix(e.fed, q.Prompt)
				n = min(n, len(q.Prompt)-1) // at least one token must run to give logits
				if n > 0 {
					s.cache.CopyPrefix(e.cache, n)
					s.cached = n
				}
			}
		}
		s.fed = append(s.fed, q.Prompt[:s.cached]...)
		s.pending = q.Prompt[s.cached:]
		return s
	}
	finish := func(s *slot, reason string) {
		text := ""
		if opt.Decoder != nil {
			text = opt.Decoder.Decode(s.out)
			if reason == StopString || len(s.req.Stop) > 0 {
				text, _ = CutStop(text, s.req.Stop)
			}
		}
		remember(s)
		done(Completion{
			Key: s.req.Key, Tokens: s.out, Text: text, StopReason: reason,
			PromptTokens: len(s.req.Prompt), CachedPromptTokens: s.cached,
			FirstToken: s.first, Total: time.Since(s.start),
		})
	}
	for next < len(reqs) || len(active) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		startedGroups := map[string]bool{}
		for len(active) < maxBatch && next < len(reqs) {
			// A request whose group is being prefilled in this very step waits
			// one step, so that it can reuse that prefix instead of recomputing it.
			if g := reqs[next].Group; g != "" && startedGroups[g] {
				break
			}
			s := start(reqs[next])
			startedGroups[s.req.Group] = true
			next++
			if s.req.MaxNewTokens <= 0 {
				finish(s, StopLength)
				continue
			}
			active = append(active, s)
		}
		if len(active) == 0 {
			continue
		}
		steps := make([]Step, len(active))
		for i, s := range active {
			steps[i] = Step{Cache: s.cache, Tokens: s.pending}
		}
		logits, err := r.Forward(steps)
		if err != nil {
			return err
		}
		kept := active[:0]
		for i, s := range active {
			s.fed = append(s.fed, s.pending...)
			if len(s.out) == 0 {
				remember(s) // its prompt is now in the cache: later turns can share it
			}
			id := s.sampler.Sample(logits[i][0])
			if len(s.out) == 0 {
				s.first = time.Since(s.start)
			}
			if c.IsEOS(id) {
				finish(s, StopEOS)
				continue
			}
			s.out = append(s.out, id)
			if opt.OnToken != nil {
				opt.OnToken(s.req.Key, id)
			}
			if len(s.req.Stop) > 0 {
				if _, hit := CutStop(opt.Decoder.Decode(s.out), s.req.Stop); hit {
					finish(s, StopString)
					continue
				}
			}
			if len(s.out) >= s.req.MaxNewTokens || (c.MaxSeq > 0 && s.cache.Len+1 >= c.MaxSeq) {
				finish(s, StopLength)
				continue
			}
			s.pending = []int{id}
			kept = append(kept, s)
		}
		active = kept
	}
	return nil
}

func commonPrefix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// CutStop cuts text at the earliest occurrence of any stop string (what
// splitting on each stop string in turn and keeping the head amounts to)
// and reports whether one occurred. Every backend's Generate uses it.
func CutStop(text string, stops []string) (string, bool) {
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return text, false
	}
	return text[:cut], true
}
