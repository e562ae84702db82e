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
// stop strings, and calls done for each request as it finishes. Greedy
// requests take their next id from the device argmax (only the ids come back
// per step); sampled ones copy their logits back and use infer.Sampler.
// Unlike infer.Runner.Generate it does not yet reuse a group's prompt prefix
// (CachedPromptTokens is always 0).
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
		cache   *Cache
		pending []int
		out     []int
		sampler *infer.Sampler
		start   time.Time
		first   time.Duration
	}
	var active []*slot
	defer func() {
		for _, s := range active {
			s.cache.Free()
		}
	}()
	finish := func(s *slot, reason string) {
		text := ""
		if opt.Decoder != nil {
			text = opt.Decoder.Decode(s.out)
			if len(s.req.Stop) > 0 {
				text, _ = infer.CutStop(text, s.req.Stop)
			}
		}
		s.cache.Free()
		done(infer.Completion{
			Key: s.req.Key, Tokens: s.out, Text: text, StopReason: reason,
			PromptTokens: len(s.req.Prompt), FirstToken: s.first, Total: time.Since(s.start),
		})
	}
	next := 0
	for next < len(reqs) || len(active) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		for len(active) < maxBatch && next < len(reqs) {
			q := reqs[next]
			capacity := len(q.Prompt) + max(q.MaxNewTokens, 0)
			if c.MaxSeq > 0 {
				capacity = min(capacity, c.MaxSeq)
			}
			cache, err := g.NewCache(capacity)
			if err != nil {
				return fmt.Errorf("generate: request %s: %w", q.Key, err)
			}
			s := &slot{req: q, cache: cache, pending: q.Prompt, sampler: infer.NewSampler(q.Sample), start: time.Now()}
			next++
			if q.MaxNewTokens <= 0 {
				finish(s, infer.StopLength)
				continue
			}
			active = append(active, s)
		}
		if len(active) == 0 {
			continue
		}
		steps := make([]Step, len(active))
		greedy := true
		for i, s := range active {
			steps[i] = Step{Cache: s.cache, Tokens: s.pending}
			greedy = greedy && s.req.Sample.Temperature == 0
		}
		ids := make([]int, len(active))
		if greedy {
			var err error
			if ids, err = g.Greedy(steps); err != nil {
				return fmt.Errorf("generate: %w", err)
			}
		} else {
			logits, err := g.Forward(steps)
			if err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			for i, s := range active {
				ids[i] = s.sampler.Sample(logits[i][0])
			}
		}
		kept := active[:0]
		for i, s := range active {
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
