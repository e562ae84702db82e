package awq

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"qllama/convert/calib"
	"qllama/convert/quant"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
	"qllama/internal/testmodel"
)

func loadModel(t *testing.T, name string) (*infer.Model, *tokenizer.Tokenizer) {
	t.Helper()
	return testmodel.Load(t, name)
}

func sets(t *testing.T, tok *tokenizer.Tokenizer, n, heldOut, seqLen int) (*calib.Set, *calib.Set) {
	t.Helper()
	return testmodel.CalibSets(t, tok, n, heldOut, seqLen)
}

// layerErr is Σ_t ||(W - Ŵ) x_t||², the activation-weighted error.
func layerErr(w, deq, x []float32, rows, cols, n int) float64 {
	var sum float64
	for t := 0; t < n; t++ {
		xr := x[t*cols : (t+1)*cols]
		for r := 0; r < rows; r++ {
			var d float64
			for j, xv := range xr {
				d += (float64(w[r*cols+j]) - float64(deq[r*cols+j])) * float64(xv)
			}
			sum += d * d
		}
	}
	return sum
}

// effectiveModel is m with every linear replaced by its AWQ weight in the
// original basis (norms unchanged).
func effectiveModel(t *testing.T, m *infer.Model, r *Result) *infer.Model {
	t.Helper()
	q := *m
	q.Layers = append([]infer.Layer(nil), m.Layers...)
	for l := range q.Layers {
		for _, st := range calib.Stages {
			for _, sfx := range st.Linears() {
				f, _ := calib.LinearField(&q.Layers[l], sfx)
				w, err := r.Effective(hf.LayerTensorName(l, sfx))
				if err != nil {
					t.Fatal(err)
				}
				*f = infer.NewDense(w, (*f).Rows(), (*f).Cols())
			}
		}
	}
	return &q
}

// scaledModel is m as the pipeline would store it: scaled norms and the
// dequantized grouped weights.
func scaledModel(t *testing.T, m *infer.Model, r *Result) *infer.Model {
	t.Helper()
	q := *m
	q.Layers = append([]infer.Layer(nil), m.Layers...)
	for l := range q.Layers {
		L := &q.Layers[l]
		L.AttnNorm = r.Norms[hf.LayerTensorName(l, hf.AttnNorm)]
		L.FFNNorm = r.Norms[hf.LayerTensorName(l, hf.FFNNorm)]
		for _, st := range calib.Stages {
			for _, sfx := range st.Linears() {
				f, _ := calib.LinearField(L, sfx)
				w, err := r.Weights[hf.LayerTensorName(l, sfx)].Dequantize()
				if err != nil {
					t.Fatal(err)
				}
				*f = infer.NewDense(w, (*f).Rows(), (*f).Cols())
			}
		}
	}
	return &q
}

// beatsRTNCases are the settings in which AWQ must beat RTN.
var beatsRTNCases = []struct {
	model string
	opt   Options
}{
	{"stories260k", Options{Bits: 4, GroupSize: 32}},
	{"stories260k", Options{Bits: 3, GroupSize: 32}},
	{"random_llama32", Options{Bits: 4, GroupSize: 32}},
	{"random_llama32", Options{Bits: 3, GroupSize: -1}},
}

// linearErr is one linear's held-out activation-weighted error, AWQ and RTN.
type linearErr struct {
	sfx      string
	awq, rtn float64
}

// blockHeldOut measures block l of m on held-out inputs: ae holds the
// block's activations in the AWQ model (eff: m with res's weights in the
// original basis) over the samples of hs. It returns every linear's
// activation-weighted error (Σ_t ‖(W − Ŵ)x_t‖², x_t the inputs the linear
// sees in the AWQ model) for AWQ and for RTN with opt's bits and groups, and
// the attention output's mean squared error from the float one with q, k, v
// quantized by each (o float).
func blockHeldOut(t *testing.T, m, eff *infer.Model, res *Result, l int, ae *infer.BlockActivations, hs *calib.Set, opt Options) (lin []linearErr, attnAWQ, attnRTN float64) {
	t.Helper()
	n := hs.Tokens()
	rtn := map[string]infer.Linear{}
	for _, st := range calib.Stages {
		for _, sfx := range st.Linears() {
			f, _ := calib.LinearField(&m.Layers[l], sfx)
			d := (*f).(*infer.Dense)
			w, err := res.Effective(hf.LayerTensorName(l, sfx))
			if err != nil {
				t.Fatal(err)
			}
			r, err := quant.RTN(d.W, d.R, d.C, Options{Bits: opt.Bits, GroupSize: max(opt.GroupSize, 0)}.grouped())
			if err != nil {
				t.Fatal(err)
			}
			rw, _ := r.Dequantize()
			rtn[sfx] = infer.NewDense(rw, d.R, d.C)
			x := st.Input(ae)
			lin = append(lin, linearErr{sfx, layerErr(d.W, w, x, d.R, d.C, n), layerErr(d.W, rw, x, d.R, d.C, n)})
		}
	}
	attn := func(q, k, v infer.Linear) []float32 {
		L := m.Layers[l]
		L.Q, L.K, L.V = q, k, v
		out := make([]float32, n*m.Dim)
		if err := infer.Attention(&m.Config, &L, out, nil, ae.AttnIn, len(hs.Samples), hs.Info.SeqLen); err != nil {
			t.Fatal(err)
		}
		return out
	}
	ref := attn(m.Layers[l].Q, m.Layers[l].K, m.Layers[l].V)
	attnAWQ = mseRef(attn(eff.Layers[l].Q, eff.Layers[l].K, eff.Layers[l].V), ref)
	attnRTN = mseRef(attn(rtn[hf.AttnQ], rtn[hf.AttnK], rtn[hf.AttnV]), ref)
	return lin, attnAWQ, attnRTN
}

func TestModelBeatsRTN(t *testing.T) {
	for _, c := range beatsRTNCases {
		t.Run(fmt.Sprintf("%s/%dbit-g%d", c.model, c.opt.Bits, c.opt.GroupSize), func(t *testing.T) {
			m, tok := loadModel(t, c.model)
			cs, hs := sets(t, tok, 12, 4, 48)
			res, rep, err := QuantizeModel(context.Background(), m, cs, ModelOptions{Options: c.opt})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Weights) != 7*len(m.Layers) || len(res.Norms) != 2*len(m.Layers) || len(rep.Importance) != 7*len(m.Layers) {
				t.Fatalf("%d weights, %d norms, %d importance entries", len(res.Weights), len(res.Norms), len(rep.Importance))
			}
			rejected := 0
			for _, s := range rep.Stages {
				if s.Skipped == "" && s.Loss > s.RTNLoss {
					t.Errorf("layer %d %s: chosen loss %g above alpha=0 loss %g", s.Layer, s.Pair, s.Loss, s.RTNLoss)
				}
				checkGuardReport(t, s)
				if s.Guard != nil {
					rejected += s.Guard.Rejected
				}
			}
			t.Logf("the q/k guard rejected %d grid points over %d blocks", rejected, len(m.Layers))
			eff, scaled := effectiveModel(t, m, res), scaledModel(t, m, res)
			// The stored (scaled) model computes the same function as the
			// effective weights in the original basis: the folding,
			// including v->o under GQA, is exact up to rounding.
			xe, err := calib.Embed(m, hs)
			if err != nil {
				t.Fatal(err)
			}
			xs := append([]float32(nil), xe...)
			var ae infer.BlockActivations
			var asum, rsum float64
			for l := range m.Layers {
				if err := infer.BlockForward(&m.Config, &scaled.Layers[l], xs, len(hs.Samples), hs.Info.SeqLen, nil); err != nil {
					t.Fatal(err)
				}
				if err := infer.BlockForward(&m.Config, &eff.Layers[l], xe, len(hs.Samples), hs.Info.SeqLen, &ae); err != nil {
					t.Fatal(err)
				}
				for i := range xs {
					if d := math.Abs(float64(xs[i] - xe[i])); d > 1e-3*(1+math.Abs(float64(xe[i]))) {
						t.Fatalf("layer %d: scaled model %v, effective weights %v at %d", l, xs[i], xe[i], i)
					}
				}
				// Every linear, q and k included (the q/k guard and their
				// clipping), and the attention output beat RTN on the
				// held-out inputs.
				lin, ea, er := blockHeldOut(t, m, eff, res, l, &ae, hs, c.opt)
				var ratios []string
				for _, e := range lin {
					asum += e.awq
					rsum += e.rtn
					if !(e.awq < e.rtn) {
						t.Errorf("%s: held-out activation-weighted error AWQ %.4g >= RTN %.4g", hf.LayerTensorName(l, e.sfx), e.awq, e.rtn)
					}
					ratios = append(ratios, fmt.Sprintf("%s %.3f", strings.TrimSuffix(e.sfx[strings.Index(e.sfx, ".")+1:], "_proj.weight"), e.awq/e.rtn))
				}
				if !(ea < er) {
					t.Errorf("layer %d: held-out attention output error with q,k,v quantized: AWQ %.4g >= RTN %.4g", l, ea, er)
				}
				t.Logf("layer %d: held-out AWQ/RTN error ratios: %s; attention output %.3f", l, strings.Join(ratios, ", "), ea/er)
			}
			if !(asum < rsum) {
				t.Errorf("held-out activation-weighted error over all linears: AWQ %.4g >= RTN %.4g", asum, rsum)
			}
			t.Logf("held-out activation-weighted error, all linears: AWQ %.4g, RTN %.4g (ratio %.3f)", asum, rsum, asum/rsum)
		})
	}
}

// checkGuardReport checks a stage report's guard: present exactly on the
// q,k,v stage (with the default options), and its choice within its bounds.
func checkGuardReport(t *testing.T, s StageReport) {
	t.Helper()
	g := s.Guard
	if (g != nil) != (s.Pair == PairQKV) {
		t.Fatalf("layer %d %s: guard report %+v", s.Layer, s.Pair, g)
	}
	if g == nil {
		return
	}
	if len(g.Linears) != 2 || len(g.Err) != 2 || len(g.Base) != 2 || len(g.RTNErr) != 2 {
		t.Fatalf("layer %d: guard report %+v", s.Layer, *g)
	}
	for j := range g.Err {
		if !(g.Err[j] <= g.Base[j]) {
			t.Errorf("layer %d: guarded %s error %g above its alpha=0 bound %g", s.Layer, g.Linears[j], g.Err[j], g.Base[j])
		}
	}
	if !(g.OutLoss <= g.OutBase) {
		t.Errorf("layer %d: guarded output loss %g above its alpha=0 bound %g", s.Layer, g.OutLoss, g.OutBase)
	}
	if g.Rejected == 0 && (g.UnguardedAlpha != s.Alpha || g.UnguardedLoss != s.Loss) {
		t.Errorf("layer %d: nothing rejected, yet alpha %g (loss %g) is not the unguarded %g (%g)", s.Layer, s.Alpha, s.Loss, g.UnguardedAlpha, g.UnguardedLoss)
	}
	if g.UnguardedLoss > s.Loss {
		t.Errorf("layer %d: unguarded loss %g above the chosen %g", s.Layer, g.UnguardedLoss, s.Loss)
	}
}

// LossSearch's guard: the point of lowest loss is rejected when a guarded
// measure is above its alpha = 0 value, the next best acceptable point
// wins, the report counts the rejections, and alpha = 0 is taken when every
// other point fails.
func TestLossSearchGuard(t *testing.T) {
	mean := []float64{1, math.E} // s[0] = exp(-alpha/2): alpha from the scales
	alphaOf := func(s []float32) float64 { return math.Abs(math.Round(-2*math.Log(float64(s[0]))*20) / 20) }
	// The loss falls towards alpha = 0.6; k's error rises past alpha = 0.4,
	// q's stays flat; the output loss with the stored weights follows the
	// loss.
	loss := func(s []float32) (float64, error) { a := alphaOf(s); return 1 + (a-0.6)*(a-0.6), nil }
	var evals []float64
	var bounds []string
	g := &Guard{Linears: []string{"q", "k"}, RTNErr: []float64{2, 2}, Eval: func(s []float32, bound []float64) ([]float64, float64, error) {
		a := alphaOf(s)
		evals = append(evals, a)
		bounds = append(bounds, fmt.Sprint(bound))
		k := 1.0
		if a > 0.4 {
			k = 1 + a
		}
		l, _ := loss(s)
		return []float64{1, k}, l - 0.5, nil
	}}
	free, err := LossSearch(mean, 20, loss, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := LossSearch(mean, 20, loss, g)
	if err != nil {
		t.Fatal(err)
	}
	if free.Alpha != 0.6 || free.Guard != nil {
		t.Fatalf("unguarded: alpha %g, guard %+v; want 0.6 and none", free.Alpha, free.Guard)
	}
	// Visited in increasing loss: 0.6, 0.55, 0.65, 0.5, 0.7, 0.45, 0.75
	// rejected (k above its alpha = 0 error); 0.4 accepted.
	if r.Alpha != 0.4 || r.Guard == nil || r.Guard.Rejected != 7 || r.Guard.UnguardedAlpha != 0.6 || r.Guard.Err[1] != 1 || r.Guard.Base[1] != 1 || r.Guard.RTNErr[1] != 2 {
		t.Fatalf("guarded: alpha %g, report %+v; want 0.4 after 7 rejections", r.Alpha, r.Guard)
	}
	if want := []float64{0, 0.6, 0.55, 0.65, 0.5, 0.7, 0.45, 0.75, 0.4}; fmt.Sprint(evals) != fmt.Sprint(want) {
		t.Errorf("guard evaluated alphas %v, want %v", evals, want)
	}
	// alpha = 0 is measured without a bound, every other point against
	// alpha = 0's errors (Eval may stop early there).
	for i, b := range bounds {
		if want := "[1 1]"; i == 0 && b != "[]" || i > 0 && b != want {
			t.Errorf("evaluation %d (alpha %g) got bound %s", i, evals[i], b)
		}
	}
	if math.Abs(r.Loss-1.04) > 1e-12 || math.Abs(r.RTNLoss-1.36) > 1e-12 {
		t.Errorf("loss %g (want 1.04), RTN loss %g (want 1.36)", r.Loss, r.RTNLoss)
	}
	// The output loss guards too: above its alpha = 0 value everywhere
	// but at alpha = 0, which is then chosen.
	g.Eval = func(s []float32, _ []float64) ([]float64, float64, error) {
		a := alphaOf(s)
		return []float64{1, 1}, a, nil
	}
	if r, err = LossSearch(mean, 20, loss, g); err != nil || r.Alpha != 0 || r.Guard.Rejected != 19 || r.Loss != r.RTNLoss {
		t.Fatalf("output guard: alpha %g, %+v, %v; want alpha 0 after 19 rejections", r.Alpha, r.Guard, err)
	}
	// NaN counts as worse.
	g.Eval = func(s []float32, _ []float64) ([]float64, float64, error) {
		if alphaOf(s) == 0 {
			return []float64{1, 1}, 0, nil
		}
		return []float64{1, math.NaN()}, 0, nil
	}
	if r, err = LossSearch(mean, 20, loss, g); err != nil || r.Alpha != 0 {
		t.Fatalf("NaN error accepted: alpha %g, %v", r.Alpha, err)
	}
	g.Eval = func(s []float32, _ []float64) ([]float64, float64, error) { return []float64{1}, 0, nil }
	if _, err := LossSearch(mean, 20, loss, g); err == nil {
		t.Error("a guard measuring 1 error for 2 linears accepted")
	}
}

// The q/k guard on a real block: on stories260k, 4-bit g32, some block's
// attention-optimal exponent makes q_proj's or k_proj's stored weight worse
// than at alpha = 0; there the guard picks another exponent, within every
// bound.
func TestQKGuardBlock(t *testing.T) {
	m, tok := loadModel(t, "stories260k")
	cs, _ := sets(t, tok, 12, 4, 48)
	o, err := Options{Bits: 4, GroupSize: 32}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	x, err := calib.Embed(m, cs)
	if err != nil {
		t.Fatal(err)
	}
	c, nseq, seqLen, n := &m.Config, len(cs.Samples), cs.Info.SeqLen, cs.Tokens()
	found := false
	for l := range m.Layers {
		b, err := CopyBlock(m, l)
		if err != nil {
			t.Fatal(err)
		}
		var acts infer.BlockActivations
		L := b.Layer()
		if err := infer.BlockForward(c, &L, x, nseq, seqLen, &acts); err != nil {
			t.Fatal(err)
		}
		g, err := b.qkGuard(c, &acts, n, nseq, seqLen, o)
		if err != nil {
			t.Fatal(err)
		}
		eval := func(s []float32) ([]float32, error) {
			L := b.Layer()
			for _, sfx := range []string{hf.AttnQ, hf.AttnK, hf.AttnV} {
				if s == nil {
					break
				}
				d := b.W[sfx]
				deq, err := FakeQuant(d.W, d.R, d.C, s, o)
				if err != nil {
					return nil, err
				}
				f, _ := calib.LinearField(&L, sfx)
				*f = infer.NewDense(deq, d.R, d.C)
			}
			r := make([]float32, n*c.Dim)
			return r, infer.Attention(c, &L, r, nil, acts.AttnIn, nseq, seqLen)
		}
		mean := MeanAbs(acts.AttnIn, n, c.Dim)
		free, err := Search(mean, o.Grid, eval, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Search(mean, o.Grid, eval, g)
		if err != nil {
			t.Fatal(err)
		}
		checkGuardReport(t, r.Stage(l, PairQKV))
		if r.Guard.UnguardedAlpha != free.Alpha {
			t.Errorf("layer %d: unguarded alpha %g, the unguarded search's %g", l, r.Guard.UnguardedAlpha, free.Alpha)
		}
		errs, _, err := g.Eval(free.Scales, nil)
		if err != nil {
			t.Fatal(err)
		}
		worse := false
		for j := range errs {
			worse = worse || errs[j] > r.Guard.Base[j]
		}
		t.Logf("layer %d: unguarded alpha %.2f (q, k errors %.4g, %.4g; alpha 0: %.4g, %.4g; RTN %.4g, %.4g), guarded %.2f after %d rejections",
			l, free.Alpha, errs[0], errs[1], r.Guard.Base[0], r.Guard.Base[1], r.Guard.RTNErr[0], r.Guard.RTNErr[1], r.Alpha, r.Guard.Rejected)
		if worse {
			found = true
			if r.Alpha == free.Alpha || r.Guard.Rejected == 0 {
				t.Errorf("layer %d: the guard kept alpha %g, whose q/k errors %v exceed %v", l, r.Alpha, errs, r.Guard.Base)
			}
		}
		if err := infer.BlockForward(c, &L, x, nseq, seqLen, nil); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Error("no block where the unguarded exponent makes q or k worse: the test no longer exercises the guard")
	}
}

// ReferenceQK is the reference's walk: no q/k guard, q and k not clipped
// (their stored codes are plain RTN of the scaled weights), and layer 0's
// q,k,v exponent the attention output's best, as the default walk reports
// it unguarded.
func TestReferenceQK(t *testing.T) {
	m, tok := loadModel(t, "stories260k")
	cs, _ := sets(t, tok, 12, 4, 48)
	opt := Options{Bits: 4, GroupSize: 32}
	_, def, err := QuantizeModel(context.Background(), m, cs, ModelOptions{Options: opt})
	if err != nil {
		t.Fatal(err)
	}
	opt.ReferenceQK = true
	res, rep, err := QuantizeModel(context.Background(), m, cs, ModelOptions{Options: opt})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Options.ReferenceQK {
		t.Error("the report's options lost ReferenceQK")
	}
	for _, s := range rep.Stages {
		if s.Guard != nil {
			t.Errorf("layer %d %s: guard report %+v with ReferenceQK", s.Layer, s.Pair, *s.Guard)
		}
	}
	if rep.Stages[0].Pair != PairQKV || def.Stages[0].Pair != PairQKV || rep.Stages[0].Alpha != def.Stages[0].Guard.UnguardedAlpha {
		t.Errorf("layer 0 q,k,v: reference alpha %g, the default walk's unguarded %g", rep.Stages[0].Alpha, def.Stages[0].Guard.UnguardedAlpha)
	}
	clippedQK, clippedDef := 0, 0
	for i, lr := range rep.Layers {
		isQK := strings.HasSuffix(lr.Name, hf.AttnQ) || strings.HasSuffix(lr.Name, hf.AttnK)
		if isQK {
			clippedQK += lr.Clipped
			clippedDef += def.Layers[i].Clipped
		}
		if !isQK {
			continue
		}
		var l int
		var sfx string
		fmt.Sscanf(lr.Name, "model.layers.%d.", &l)
		sfx = lr.Name[len(fmt.Sprintf("model.layers.%d.", l)):]
		f, _ := calib.LinearField(&m.Layers[l], sfx)
		d := (*f).(*infer.Dense)
		want, err := quant.RTN(ScaleCols(d.W, res.InScales[lr.Name]), d.R, d.C, quant.GroupedOptions{Bits: 4, GroupSize: 32, Rule: quant.RuleAWQ})
		if err != nil {
			t.Fatal(err)
		}
		got := res.Weights[lr.Name]
		if fmt.Sprint(got.Codes) != fmt.Sprint(want.Codes) || fmt.Sprint(got.Scales) != fmt.Sprint(want.Scales) {
			t.Errorf("%s: stored codes are not RTN of the scaled float weight", lr.Name)
		}
	}
	if clippedQK != 0 || clippedDef == 0 {
		t.Errorf("q/k groups clipped: %d with ReferenceQK (want 0), %d by default (want some)", clippedQK, clippedDef)
	}
}

func TestScalesAndFakeQuant(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	mean := make([]float64, 64)
	for i := range mean {
		mean[i] = rng.ExpFloat64()
	}
	s0 := Scales(mean, 0)
	for _, v := range s0 {
		if v != 1 {
			t.Fatalf("alpha 0 scale %v, want 1", v)
		}
	}
	s := Scales(mean, 0.5)
	lo, hi := float32(math.Inf(1)), float32(0)
	for _, v := range s {
		lo, hi = min(lo, v), max(hi, v)
	}
	if p := float64(lo) * float64(hi); math.Abs(p-1) > 1e-5 {
		t.Errorf("max*min of normalised scales = %v, want 1", p)
	}
	w := make([]float32, 8*64)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	o := Options{Bits: 4, GroupSize: 32}
	a, err := FakeQuant(w, 8, 64, s0, o)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := quant.RTN(w, 8, 64, quant.GroupedOptions{Bits: 4, GroupSize: 32, Rule: quant.RuleAWQ})
	b, _ := g.Dequantize()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("unit scales: %v, RTN %v", a[i], b[i])
		}
	}
	// awqGroup is quant.RuleAWQ.
	q := make([]float32, 32)
	awqGroup(q, w[:32], 15)
	for i := range q {
		if q[i] != b[i] {
			t.Fatalf("awqGroup %v, RTN %v at %d", q[i], b[i], i)
		}
	}
}

// Clipping never increases the per-group partial output error on the rows
// it searched, and leaves weights unclipped when clipping does not help.
func TestClip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, cols, n = 6, 64, 300
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
		if i%37 == 0 {
			w[i] *= 6 // outliers worth clipping
		}
	}
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	o := Options{Bits: 3, GroupSize: 32}
	c := append([]float32(nil), w...)
	k, err := Clip(c, rows, cols, x, n, o)
	if err != nil {
		t.Fatal(err)
	}
	o, _ = o.withDefaults()
	before, _ := FakeQuant(w, rows, cols, nil, o)
	after, _ := FakeQuant(c, rows, cols, nil, o)
	step := max(1, n/o.ClipTokens)
	var xs []float32
	for t0 := 0; t0 < n; t0 += step {
		xs = append(xs, x[t0*cols:(t0+1)*cols]...)
	}
	eb, ea := layerErr(w, before, xs, rows, cols, len(xs)/cols), layerErr(w, after, xs, rows, cols, len(xs)/cols)
	t.Logf("%d groups clipped; error %.4g -> %.4g", k, eb, ea)
	if k == 0 || !(ea < eb) {
		t.Errorf("clipping: %d groups, error %.4g -> %.4g", k, eb, ea)
	}
	if _, err := Clip(c, rows, cols, x, 0, o); err == nil {
		t.Error("no input rows accepted")
	}
	if _, err := Clip(c, rows, cols, x, n, Options{Bits: 1}); err == nil {
		t.Error("1 bit accepted")
	}
}

func mseRef(a, b []float32) float64 {
	var s float64
	for i, v := range a {
		d := float64(v) - float64(b[i])
		s += d * d
	}
	return s / float64(len(a))
}
