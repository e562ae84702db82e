package bench

import (
	"context"
	"fmt"

	"qllama/infer"
)

// InferTarget benchmarks a model on the CPU reference runtime.
type InferTarget struct {
	m    *infer.Model
	info ModelInfo
	r    *infer.Runner
}

// NewInferTarget wraps m. info's WeightBytes, Params, Path and Format are
// the caller's (the runtime does not know the file); Vocab, MaxSeq,
// KVBytesPerToken and Backend are filled from the model.
func NewInferTarget(m *infer.Model, info ModelInfo) *InferTarget {
	c := &m.Config
	info.Vocab, info.MaxSeq, info.Backend, info.KVCache = c.Vocab, c.MaxSeq, "cpu", "f32"
	info.KVBytesPerToken = KVBytesPerToken(c, 4)
	return &InferTarget{m: m, info: info, r: infer.NewRunner(m)}
}

// KVBytesPerToken is the key and value memory of one position over every
// layer with elemBytes per element (4 for the float32 CPU cache).
func KVBytesPerToken(c *infer.Config, elemBytes int) int64 {
	return int64(2*c.Layers*c.KVHeads*c.HeadDim) * int64(elemBytes)
}

// Info implements Target.
func (t *InferTarget) Info() ModelInfo { return t.info }

// Start implements Target.
func (t *InferTarget) Start(n int) (Batch, error) {
	if n <= 0 {
		return nil, fmt.Errorf("start %d sequences: must be positive", n)
	}
	s := &inferBatch{t: t, steps: make([]infer.Step, n)}
	for i := range s.steps {
		s.steps[i].Cache = infer.NewKVCache(&t.m.Config)
	}
	return s, nil
}

type inferBatch struct {
	t     *InferTarget
	steps []infer.Step
}

func (s *inferBatch) forward(ctx context.Context) ([]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	logits, err := s.t.r.Forward(s.steps)
	if err != nil {
		return nil, err
	}
	next := make([]int, len(logits))
	for i, l := range logits {
		next[i] = argmax(l[len(l)-1])
	}
	return next, nil
}

func (s *inferBatch) Prefill(ctx context.Context, prompts [][]int) ([]int, error) {
	if len(prompts) != len(s.steps) {
		return nil, fmt.Errorf("prefill: %d prompts for %d sequences", len(prompts), len(s.steps))
	}
	for i := range s.steps {
		s.steps[i].Tokens = prompts[i]
	}
	return s.forward(ctx)
}

func (s *inferBatch) Decode(ctx context.Context, tokens []int) ([]int, error) {
	if len(tokens) != len(s.steps) {
		return nil, fmt.Errorf("decode: %d tokens for %d sequences", len(tokens), len(s.steps))
	}
	for i := range s.steps {
		s.steps[i].Tokens = tokens[i : i+1]
	}
	return s.forward(ctx)
}

func (s *inferBatch) Close() { s.steps = nil }

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
