package infer

import (
	"math"
	"math/rand/v2"
	"sort"
)

// SampleOptions choose the next token from logits. Temperature 0 is greedy.
type SampleOptions struct {
	Temperature float64 // 0: greedy (argmax)
	TopK        int     // keep the k most likely tokens; 0: all
	TopP        float64 // keep the smallest set with cumulative probability >= p; 0 or 1: all
	Seed        uint64  // seed of the sampler's random source
}

// Sampler draws tokens; it owns its random source, so equal seeds give equal
// draws.
type Sampler struct {
	opt SampleOptions
	rng *rand.Rand
	idx []int
	p   []float64
}

// NewSampler returns a sampler for opt.
func NewSampler(opt SampleOptions) *Sampler {
	return &Sampler{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15))}
}

// Argmax returns the index of the largest value (the first one on ties).
func Argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// Sample picks a token id from logits (which it does not modify).
// Order of operations follows Hugging Face's generate: temperature, top-k,
// then top-p over the remaining tokens.
func (s *Sampler) Sample(logits []float32) int {
	o := s.opt
	if o.Temperature <= 0 || o.TopK == 1 {
		return Argmax(logits)
	}
	n := len(logits)
	s.idx = s.idx[:0]
	for i := 0; i < n; i++ {
		s.idx = append(s.idx, i)
	}
	idx := s.idx
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if o.TopK > 0 && o.TopK < n {
		idx = idx[:o.TopK]
	}
	// Softmax of the temperature-scaled logits over the kept tokens.
	s.p = s.p[:0]
	maxL := float64(logits[idx[0]]) / o.Temperature
	var sum float64
	for _, i := range idx {
		e := math.Exp(float64(logits[i])/o.Temperature - maxL)
		s.p = append(s.p, e)
		sum += e
	}
	for i := range s.p {
		s.p[i] /= sum
	}
	if o.TopP > 0 && o.TopP < 1 {
		var cum float64
		keep := len(idx)
		for i, p := range s.p {
			cum += p
			if cum >= o.TopP {
				keep = i + 1
				break
			}
		}
		idx, s.p = idx[:keep], s.p[:keep]
		sum = 0
		for _, p := range s.p {
			sum += p
		}
		for i := range s.p {
			s.p[i] /= sum
		}
	}
	r := s.rng.Float64()
	var cum float64
	for i, p := range s.p {
		cum += p
		if r < cum {
			return idx[i]
		}
	}
	return idx[len(idx)-1]
}
