//go:build cuda

package cuda

import (
	"context"
	"errors"
	"fmt"
	"time"

	"qllama/infer"
)

// Generate continues every request on the GPU with continuous batching (up to
// opt.MaxBatch sequences per step; a finished sequence's place is taken by the
// next request at once), honouring EOS, MaxNewTokens, the context length and
// stop strings, and calls done for each request as it finishes.
//
// Like infer.Runner.Generate it reuses prompt prefixes within a Group: a
// request starts from the KV cache pages of the longest common prefix with
// its group's previous request (shared, not copied: see Cache.CopyPrefix;
// reported in CachedPromptTokens) and prefills only the rest; a request
// whose group is being prefilled in the same step waits one step to share
// it. The caches of
// the 2 + MaxBatch/8 most recent groups are kept between calls (a story's
// turns may come in several calls); DropPrefixes frees them.
//
// Greedy requests take their next id from the device argmax when the whole
// step is greedy (only the ids come back). Otherwise each row whose sampler
// needs at most candK of the largest logits (TopK set) gets them from the
// device-side top-k and draws with infer.Sampler.SampleTop, which gives
// exactly Sample's id; rows without TopK (or a larger one) copy their whole
// logits row back and use infer.Sampler.Sample.
func (g *Model) Generate(ctx context.Context, reqs []infer.Request, opt infer.GenerateOptions, done func(infer.Completion)) error {
	c := &g.Config
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
	type slot struct {
		req     infer.Request
		cache   *Cache // nil once released
		fed     []int  // tokens whose keys and values are in cache
		pending []int  // tokens to feed next step
		out     []int
		sampler *infer.Sampler
		cached  int
		start   time.Time
		first   time.Duration
	}
	var (
		active  []*slot
		next    int
		cand    candidates
		ps      = g.prefixes()
		maxPref = 2 + maxBatch/8 // groups kept; turns of a story arrive together
	)
	defer func() {
		for _, s := range active {
			if s.cache != nil {
				ps.release(s.cache)
			}
		}
		cand.free(g)
	}()
	remember := func(s *slot) {
		if s.req.Group != "" {
			ps.remember(s.req.Group, s.fed, s.cache, maxPref)
		}
	}
	newCache := func(capacity int) (*Cache, error) {
		cache, err := g.NewCache(capacity)
		var oom *OOMError
		if errors.As(err, &oom) && len(ps.entries) > 0 {
			ps.clear() // kept prefixes give way to running requests
			cache, err = g.NewCache(capacity)
		}
		return cache, err
	}
	start := func(q infer.Request) (*slot, error) {
		capacity := len(q.Prompt) + max(q.MaxNewTokens, 0)
		if c.MaxSeq > 0 {
			capacity = min(capacity, c.MaxSeq)
		}
		cache, err := newCache(capacity)
		if err != nil {
			return nil, err
		}
		ps.acquire(cache)
		s := &slot{req: q, cache: cache, sampler: infer.NewSampler(q.Sample), start: time.Now()}
		if q.Group != "" {
			if e := ps.find(q.Group); e != nil {
				n := commonPrefix(e.fed, q.Prompt)
				n = min(n, len(q.Prompt)-1) // at least one token must run to give logits
				if n > 0 {
					if err := cache.CopyPrefix(e.cache, n); err != nil {
						ps.release(cache)
						return nil, err
					}
					s.cached = cache.Len
				}
			}
		}
		s.fed = append(s.fed, q.Prompt[:s.cached]...)
		s.pending = q.Prompt[s.cached:]
		return s, nil
	}
	finish := func(s *slot, reason string) {
		text := ""
		if opt.Decoder != nil {
			text = opt.Decoder.Decode(s.out)
			if len(s.req.Stop) > 0 {
				text, _ = infer.CutStop(text, s.req.Stop)
			}
		}
		remember(s)
		ps.release(s.cache)
		s.cache = nil
		done(infer.Completion{
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
			if gr := reqs[next].Group; gr != "" && startedGroups[gr] {
				break
			}
			s, err := start(reqs[next])
			if err != nil {
				return fmt.Errorf("generate: request %s: %w", reqs[next].Key, err)
			}
			startedGroups[s.req.Group] = true
			next++
			if s.req.MaxNewTokens <= 0 {
				finish(s, infer.StopLength)
				continue
			}
			active = append(active, s)
		}
		if len(active) == 0 {
			continue
		}
		steps := make([]Step, len(active))
		samplers := make([]*infer.Sampler, len(active))
		greedy := true
		for i, s := range active {
			steps[i] = Step{Cache: s.cache, Tokens: s.pending}
			samplers[i] = s.sampler
			greedy = greedy && s.sampler.TopCandidates() == 1
		}
		var ids []int
		var err error
		if greedy {
			ids, err = g.Greedy(steps)
		} else {
			ids, err = g.sample(steps, samplers, &cand)
		}
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		kept := active[:0]
		for i, s := range active {
			s.fed = append(s.fed, s.pending...)
			if len(s.out) == 0 {
				remember(s) // its prompt is now in the cache: later turns can share it
			}
			id := ids[i]
			if len(s.out) == 0 {
				s.first = time.Since(s.start)
			}
			reason := ""
			if c.IsEOS(id) {
				reason = infer.StopEOS
			} else {
				s.out = append(s.out, id)
				if opt.OnToken != nil {
					opt.OnToken(s.req.Key, id)
				}
				if len(s.req.Stop) > 0 {
					if _, hit := infer.CutStop(opt.Decoder.Decode(s.out), s.req.Stop); hit {
						reason = infer.StopString
					}
				}
				if reason == "" && (len(s.out) >= s.req.MaxNewTokens || (c.MaxSeq > 0 && s.cache.Len+1 >= c.MaxSeq)) {
					reason = infer.StopLength
				}
			}
			if reason != "" {
				finish(s, reason)
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
