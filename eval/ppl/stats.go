package ppl

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// scratch holds one goroutine's float64 log-probability buffers.
type scratch struct{ q, p []float64 }

// tokenStats is what one scored position contributes.
type tokenStats struct {
	nll    float64 // -log P_model(target)
	refNLL float64 // -log P_ref(target)
	kl     float64 // KL(P_ref || P_model)
	same   bool    // both argmaxes coincide
}

// logSoftmax writes log softmax(z), computed in float64, into dst (grown to
// len(z)) and returns it. Non-finite logits are an error.
func logSoftmax(dst []float64, z []float32) ([]float64, error) {
	if len(z) == 0 {
		return nil, fmt.Errorf("empty logits")
	}
	dst = slices.Grow(dst[:0], len(z))[:len(z)]
	mx := math.Inf(-1)
	for i, v := range z {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("logit %d is %v", i, v)
		}
		dst[i] = f
		mx = max(mx, f)
	}
	var sum float64
	for _, f := range dst {
		sum += math.Exp(f - mx)
	}
	// (z - max) - log(sum) keeps the precision that z - (max + log(sum))
	// would lose for large logits.
	ls := math.Log(sum)
	for i := range dst {
		dst[i] = (dst[i] - mx) - ls
	}
	return dst, nil
}

// argmax returns the index of the largest logit, the first on ties.
func argmax(z []float32) int {
	best := 0
	for i, v := range z {
		if v > z[best] {
			best = i
		}
	}
	return best
}

// klDivergence returns KL(P || Q) = sum_i p_i (log p_i - log q_i) from the
// log-probabilities of P and Q.
func klDivergence(logP, logQ []float64) float64 {
	var kl float64
	for i, lp := range logP {
		if d := lp - logQ[i]; d != 0 {
			kl += math.Exp(lp) * d
		}
	}
	return kl
}

// compare scores one position: the model's logits, the reference's (nil
// without a reference) and the token that actually follows.
func compare(logits, ref []float32, target int, sc *scratch) (tokenStats, error) {
	var s tokenStats
	if target < 0 || target >= len(logits) {
		return s, fmt.Errorf("target token %d outside the vocabulary [0, %d)", target, len(logits))
	}
	var err error
	if sc.q, err = logSoftmax(sc.q, logits); err != nil {
		return s, fmt.Errorf("model: %w", err)
	}
	s.nll = -sc.q[target]
	if ref == nil {
		return s, nil
	}
	if len(ref) != len(logits) {
		return s, fmt.Errorf("reference has %d logits, the model %d", len(ref), len(logits))
	}
	if sc.p, err = logSoftmax(sc.p, ref); err != nil {
		return s, fmt.Errorf("reference: %w", err)
	}
	s.refNLL = -sc.p[target]
	s.kl = klDivergence(sc.p, sc.q)
	s.same = argmax(logits) == argmax(ref)
	return s, nil
}

// accumulator sums the statistics of scored positions in a fixed order.
type accumulator struct {
	withRef          bool
	count            int
	sumNLL, sumNLL2  float64
	sumRefNLL, sumKL float64
	same             int
	kls              []float64
}

func (a *accumulator) add(s tokenStats) {
	a.count++
	a.sumNLL += s.nll
	a.sumNLL2 += s.nll * s.nll
	if !a.withRef {
		return
	}
	a.sumRefNLL += s.refNLL
	a.sumKL += s.kl
	a.kls = append(a.kls, s.kl)
	if s.same {
		a.same++
	}
}

// result turns the sums into a Result (counts of windows and tokens are the
// caller's).
func (a *accumulator) result() *Result {
	n := float64(a.count)
	r := &Result{Tokens: a.count}
	if a.count == 0 {
		return r
	}
	r.MeanNLL = a.sumNLL / n
	r.PPL = math.Exp(r.MeanNLL)
	if a.count > 1 {
		// llama.cpp: the standard error of the mean NLL, carried through exp.
		if v := a.sumNLL2/n - r.MeanNLL*r.MeanNLL; v > 0 {
			r.PPLStderr = r.PPL * math.Sqrt(v/(n-1))
		}
	}
	if !a.withRef {
		return r
	}
	kls := slices.Clone(a.kls)
	slices.Sort(kls)
	r.KL = &Divergence{
		RefPPL:    math.Exp(a.sumRefNLL / n),
		Mean:      a.sumKL / n,
		Median:    percentile(kls, 0.5),
		P90:       percentile(kls, 0.90),
		P99:       percentile(kls, 0.99),
		Max:       kls[len(kls)-1],
		Top1Agree: float64(a.same) / n,
	}
	return r
}

// percentile interpolates linearly between the closest ranks of sorted
// values, as llama.cpp's perplexity tool does: rank f*(n-1).
func percentile(sorted []float64, f float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	if f <= 0 {
		return sorted[0]
	}
	if f >= 1 {
		return sorted[len(sorted)-1]
	}
	p := f * float64(len(sorted)-1)
	i := int(p)
	p -= float64(i)
	j := min(i+1, len(sorted)-1)
	return (1-p)*sorted[i] + p*sorted[j]
}

// resultJSON is the flat JSON form of a Result; pointers leave out the
// reference fields when there is no reference.
type resultJSON struct {
	PPL          float64  `json:"ppl"`
	PPLStderr    *float64 `json:"ppl_stderr,omitempty"`
	MeanNLL      float64  `json:"nll_mean"`
	RefPPL       *float64 `json:"ref_ppl,omitempty"`
	KLMean       *float64 `json:"kl_mean,omitempty"`
	KLMedian     *float64 `json:"kl_median,omitempty"`
	KLP90        *float64 `json:"kl_p90,omitempty"`
	KLP99        *float64 `json:"kl_p99,omitempty"`
	KLMax        *float64 `json:"kl_max,omitempty"`
	Top1Agree    *float64 `json:"top1_agree,omitempty"`
	Tokens       int      `json:"tokens"`
	CorpusTokens int      `json:"corpus_tokens"`
	Windows      int      `json:"windows"`
	Ctx          int      `json:"ctx"`
	Model        string   `json:"model,omitempty"`
	Ref          string   `json:"ref,omitempty"`
}

// MarshalJSON writes the flat form described on Result.
func (r *Result) MarshalJSON() ([]byte, error) {
	if math.IsInf(r.PPL, 0) || math.IsNaN(r.PPL) {
		return nil, fmt.Errorf("perplexity is not a finite number (mean NLL %g nats)", r.MeanNLL)
	}
	j := resultJSON{
		PPL: r.PPL, MeanNLL: r.MeanNLL, Tokens: r.Tokens, CorpusTokens: r.CorpusTokens,
		Windows: r.Windows, Ctx: r.Ctx, Model: r.Model, Ref: r.Ref,
	}
	if r.Tokens > 1 {
		j.PPLStderr = &r.PPLStderr
	}
	if k := r.KL; k != nil {
		j.RefPPL, j.KLMean, j.KLMedian, j.KLP90, j.KLP99, j.KLMax, j.Top1Agree =
			&k.RefPPL, &k.Mean, &k.Median, &k.P90, &k.P99, &k.Max, &k.Top1Agree
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the flat form back (for scripts and tests).
func (r *Result) UnmarshalJSON(b []byte) error {
	var j resultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Result{
		PPL: j.PPL, MeanNLL: j.MeanNLL, Tokens: j.Tokens, CorpusTokens: j.CorpusTokens,
		Windows: j.Windows, Ctx: j.Ctx, Model: j.Model, Ref: j.Ref,
	}
	if j.PPLStderr != nil {
		r.PPLStderr = *j.PPLStderr
	}
	if j.KLMean != nil {
		get := func(p *float64) float64 {
			if p == nil {
				return 0
			}
			return *p
		}
		r.KL = &Divergence{
			RefPPL: get(j.RefPPL), Mean: *j.KLMean, Median: get(j.KLMedian), P90: get(j.KLP90),
			P99: get(j.KLP99), Max: get(j.KLMax), Top1Agree: get(j.Top1Agree),
		}
	}
	return nil
}
