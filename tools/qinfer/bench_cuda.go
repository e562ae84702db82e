//go:build cuda

package main

import (
	"fmt"

	"qllama/convert"
	"qllama/eval/bench"
	"qllama/infer/cuda"
)

// cudaBackend uploads l's model to GPU gpu for benchmarks, perplexity and
// sweeps.
func cudaBackend(gpu int, l *loaded, info bench.ModelInfo) (*backend, error) {
	d, err := cuda.Open(max(gpu, 0))
	if err != nil {
		return nil, fmt.Errorf("--device cuda: GPU %d: %w", gpu, err)
	}
	// Memory already in use on the GPU (other processes, or this process's
	// other models, e.g. a sweep's perplexity reference) is not the model's.
	free0, total0, err := d.MemInfo()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("--device cuda: GPU %d: %w", gpu, err)
	}
	g, err := d.Upload(l.model)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("--device cuda: %s: %w", l.path, err)
	}
	if l.kv != "" {
		if err := g.SetKVType(l.kv); err != nil {
			g.Close()
			d.Close()
			return nil, fmt.Errorf("--kv-cache: %w", err)
		}
	}
	sc := &cudaScorer{g: g}
	return &backend{
		name:   "cuda",
		target: bench.NewCUDATarget(d, g, &l.model.Config, info, total0-free0),
		gen:    g,
		energy: true,
		scorer: sc,
		close:  func() { sc.free(); g.Close(); d.Close() },
	}, nil
}

// cudaScorer is a ppl.Scorer on a model uploaded to the GPU: one KV cache,
// emptied (not freed) between windows; the logits of one forward pass come
// back to the host, where ppl scores them in float64.
type cudaScorer struct {
	g     *cuda.Model
	cache *cuda.Cache
}

func (s *cudaScorer) Vocab() int  { return s.g.Vocab }
func (s *cudaScorer) MaxSeq() int { return s.g.MaxSeq }

func (s *cudaScorer) Reset() error {
	if s.cache != nil {
		s.cache.Truncate(0)
	}
	return nil
}

func (s *cudaScorer) Forward(tokens []int, logits bool) ([][]float32, error) {
	if s.cache == nil {
		// ppl feeds half a window first: room for the whole window, so the
		// cache need not grow (it would, doubling, up to the context length).
		capacity := 2 * len(tokens)
		if s.g.MaxSeq > 0 {
			capacity = min(capacity, s.g.MaxSeq)
		}
		c, err := s.g.NewCache(capacity)
		if err != nil {
			return nil, err
		}
		s.cache = c
	}
	out, err := s.g.Forward([]cuda.Step{{Cache: s.cache, Tokens: tokens, AllLogits: logits}})
	if err != nil || !logits {
		return nil, err
	}
	return out[0], nil
}

// free releases the cache's device memory.
func (s *cudaScorer) free() {
	if s.cache != nil {
		s.cache.Free()
		s.cache = nil
	}
}

// cudaCalib opens GPU gpu for a sweep's GPTQ or AWQ conversion (blocks,
// statistics and solves on the device); release closes it.
func cudaCalib(gpu int) (convert.GPTQFunc, convert.AWQFunc, func(), error) {
	d, err := cuda.Open(max(gpu, 0))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--device cuda: GPU %d: %w", gpu, err)
	}
	return d.QuantizeGPTQ, d.QuantizeAWQ, func() { d.Close() }, nil
}
