package awq

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
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

func TestModelBeatsRTN(t *testing.T) {
	cases := []struct {
		model string
		opt   Options
	}{
		{"stories260k", Options{Bits: 4, GroupSize: 32}},
		{"stories260k", Options{Bits: 3, GroupSize: 32}},
		{"random_llama32", Options{Bits: 4, GroupSize: 32}},
		{"random_llama32", Options{Bits: 3, GroupSize: -1}},
	}
	for _, c := range cases {
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
			for _, s := range rep.Stages {
				if s.Skipped == "" && s.Loss > s.RTNLoss {
					t.Errorf("layer %d %s: chosen loss %g above alpha=0 loss %g", s.Layer, s.Pair, s.Loss, s.RTNLoss)
				}
			}
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
			n := hs.Tokens()
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
				// Activation-weighted error of every linear on the held-out
				// inputs it sees in the quantized model. q and k share
				// their scales with v and AWQ minimises the attention
				// output, not their own error (which may rise): for them
				// the attention output error must be below RTN's.
				rtnQKV := map[string][]float32{}
				for _, st := range calib.Stages {
					for _, sfx := range st.Linears() {
						name := hf.LayerTensorName(l, sfx)
						f, _ := calib.LinearField(&m.Layers[l], sfx)
						d := (*f).(*infer.Dense)
						w, _ := res.Effective(name)
						r, err := quant.RTN(d.W, d.R, d.C, Options{Bits: c.opt.Bits, GroupSize: max(c.opt.GroupSize, 0)}.grouped())
						if err != nil {
							t.Fatal(err)
						}
						rw, _ := r.Dequantize()
						x := st.Input(&ae)
						ea, er := layerErr(d.W, w, x, d.R, d.C, n), layerErr(d.W, rw, x, d.R, d.C, n)
						asum += ea
						rsum += er
						if sfx == hf.AttnQ || sfx == hf.AttnK {
							rtnQKV[sfx] = rw
							continue // judged by the attention output below
						}
						if !(ea < er) {
							t.Errorf("%s: held-out activation-weighted error AWQ %.4g >= RTN %.4g", name, ea, er)
						}
					}
				}
				// Attention output with q, k, v quantized (o float).
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
				awqOut := attn(eff.Layers[l].Q, eff.Layers[l].K, eff.Layers[l].V)
				vd := m.Layers[l].V.(*infer.Dense)
				rv, _ := quant.RTN(vd.W, vd.R, vd.C, Options{Bits: c.opt.Bits, GroupSize: max(c.opt.GroupSize, 0)}.grouped())
				rvw, _ := rv.Dequantize()
				rtnOut := attn(infer.NewDense(rtnQKV[hf.AttnQ], m.Layers[l].Q.Rows(), m.Dim), infer.NewDense(rtnQKV[hf.AttnK], m.Layers[l].K.Rows(), m.Dim), infer.NewDense(rvw, vd.R, vd.C))
				if ea, er := mseRef(awqOut, ref), mseRef(rtnOut, ref); !(ea < er) {
					t.Errorf("layer %d: held-out attention output error with q,k,v quantized: AWQ %.4g >= RTN %.4g", l, ea, er)
				}
			}
			if !(asum < rsum) {
				t.Errorf("held-out activation-weighted error over all linears: AWQ %.4g >= RTN %.4g", asum, rsum)
			}
			t.Logf("held-out activation-weighted error, all linears: AWQ %.4g, RTN %.4g (ratio %.3f)", asum, rsum, asum/rsum)
		})
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
