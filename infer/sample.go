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
	opt  SampleOptions
	rng  *rand.Rand
	idx  []int
	vals []float32
	p    []float64
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
	s.vals = s.vals[:0]
	for _, i := range idx {
		s.vals = append(s.vals, logits[i])
	}
	return idx[s.pick(s.vals)]
}

// TopCandidates is how many of a row's largest logits Sample looks at: 1
// when it is greedy (temperature 0 or TopK 1), TopK when that is set, and 0
// when it needs the whole row.
func (s *Sampler) TopCandidates() int {
	switch o := s.opt; {
	case o.Temperature <= 0 || o.TopK == 1:
		return 1
	case o.TopK > 0:
		return o.TopK
	}
	return 0
}

// SampleTop is Sample given only a row's largest logits: vals are the first
// len(vals) values of the row in Sample's order (descending, the lower id
// first among equal values) and ids their token ids. When TopCandidates() is
// positive and len(vals) >= min(TopCandidates(), len(row)), the id returned
// and the random draw consumed are exactly Sample's on the whole row (for
// rows without NaN), so a device can send back a few candidates instead of
// the row. Otherwise the draw is restricted to the candidates given.
func (s *Sampler) SampleTop(vals []float32, ids []int) int {
	o := s.opt
	if o.Temperature <= 0 || o.TopK == 1 {
		return ids[0]
	}
	if o.TopK > 0 && o.TopK < len(vals) {
		vals = vals[:o.TopK]
	}
	return ids[s.pick(vals)]
}

// pick draws an index into vals, the kept logits in descending order:
// softmax of the temperature-scaled values, then top-p, then one uniform
// draw from the random source.
func (s *Sampler) pick(vals []float32) int {
	o := s.opt
	// Softmax of the temperature-scaled logits over the kept tokens.
	s.p = s.p[:0]
	maxL := float64(vals[0]) / o.Temperature
	var sum float64
	for _, v := range vals {
		e := math.Exp(float64(v)/o.Temperature - maxL)
		s.p = append(s.p, e)
		sum += e
	}
	for i := range s.p {
		s.p[i] /= sum
	}
	keep := len(vals)
	if o.TopP > 0 && o.TopP < 1 {
		var cum float64
		for i, p := range s.p {
			cum += p
			if cum >= o.TopP {
				keep = i + 1
				break
			}
		}
		s.p = s.p[:keep]
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
			return i
		}
	}
	return keep - 1
}
