//go:build cuda

package bench

import (
	"context"
	"fmt"
	"sync"

	"qllama/infer"
	"qllama/infer/cuda"
)

// CUDATarget benchmarks a model uploaded to a GPU by infer/cuda (built with
// -tags cuda). Its peak memory is the most device memory in use (total
// minus free, as the driver reports it for the whole GPU) seen after any
// prefill or decode step since ResetPeak, less what was in use before the
// model was uploaded (its context, weights, caches and scratch remain).
type CUDATarget struct {
	d    *cuda.Device
	g    *cuda.Model
	info ModelInfo

	mu   sync.Mutex
	peak int64
	base int64
}

// NewCUDATarget wraps g (uploaded to d from a model with configuration c).
// info's WeightBytes, Params, Path and Format are the caller's; Vocab,
// MaxSeq, KVBytesPerToken and KVCache (the device cache and its element
// type) and Backend are filled.
// base is the device memory in use before the upload (Device.MemInfo's total
// minus free), which PeakBytes leaves out.
func NewCUDATarget(d *cuda.Device, g *cuda.Model, c *infer.Config, info ModelInfo, base int64) *CUDATarget {
	info.Vocab, info.MaxSeq, info.Backend = c.Vocab, c.MaxSeq, "cuda"
	info.KVBytesPerToken, info.KVCache = g.KVBytesPerToken(), g.KVType()
	return &CUDATarget{d: d, g: g, info: info, base: base}
}

// Info implements Target.
func (t *CUDATarget) Info() ModelInfo { return t.info }

// ResetPeak implements PeakReporter.
func (t *CUDATarget) ResetPeak() {
	t.mu.Lock()
	t.peak = 0
	t.mu.Unlock()
	t.sample()
}

// PeakBytes implements PeakReporter.
func (t *CUDATarget) PeakBytes() int64 {
	t.sample()
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(t.peak-t.base, 0)
}

func (t *CUDATarget) sample() {
	free, total, err := t.d.MemInfo()
	if err != nil {
		return
	}
	t.mu.Lock()
	t.peak = max(t.peak, total-free)
	t.mu.Unlock()
}

// Start implements Target.
func (t *CUDATarget) Start(n int) (Batch, error) {
	if n <= 0 {
		return nil, fmt.Errorf("start %d sequences: must be positive", n)
	}
	b := &cudaBatch{t: t, steps: make([]cuda.Step, n)}
	for i := range b.steps {
		c, err := t.g.NewCache(256)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.steps[i].Cache = c
	}
	return b, nil
}

type cudaBatch struct {
	t     *CUDATarget
	steps []cuda.Step
}

func (b *cudaBatch) run(ctx context.Context) ([]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	next, err := b.t.g.Greedy(b.steps)
	b.t.sample()
	return next, err
}

func (b *cudaBatch) Prefill(ctx context.Context, prompts [][]int) ([]int, error) {
	if len(prompts) != len(b.steps) {
		return nil, fmt.Errorf("prefill: %d prompts for %d sequences", len(prompts), len(b.steps))
	}
	for i := range b.steps {
		b.steps[i].Tokens = prompts[i]
	}
	return b.run(ctx)
}

func (b *cudaBatch) Decode(ctx context.Context, tokens []int) ([]int, error) {
	if len(tokens) != len(b.steps) {
		return nil, fmt.Errorf("decode: %d tokens for %d sequences", len(tokens), len(b.steps))
	}
	for i := range b.steps {
		b.steps[i].Tokens = tokens[i : i+1]
	}
	return b.run(ctx)
}

func (b *cudaBatch) Close() {
	for _, s := range b.steps {
		if s.Cache != nil {
			s.Cache.Free()
		}
	}
	b.steps = nil
}
