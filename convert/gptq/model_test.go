package gptq

import (
	"context"
	"fmt"
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

// layerErr is Σ_t ||(W - deq) x_t||² over the n rows of x.
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

// quantizedModel returns a copy of m whose linears are the dequantized ws.
func quantizedModel(t *testing.T, m *infer.Model, ws map[string]*quant.Grouped) *infer.Model {
	t.Helper()
	q := *m
	q.Layers = append([]infer.Layer(nil), m.Layers...)
	for l := range q.Layers {
		for _, st := range calib.Stages {
			for _, sfx := range st.Linears() {
				f, _ := calib.LinearField(&q.Layers[l], sfx)
				deq, err := ws[hf.LayerTensorName(l, sfx)].Dequantize()
				if err != nil {
					t.Fatal(err)
				}
				*f = infer.NewDense(deq, (*f).Rows(), (*f).Cols())
			}
		}
	}
	return &q
}

// heldOutInputs calls fn for every linear of m with its float weights and
// its input on the held-out set when the blocks run as in run: with run =
// the quantized model, every linear sees what it sees in the quantized
// model (earlier linears quantized), as during true-sequential calibration.
func heldOutInputs(t *testing.T, m, run *infer.Model, hs *calib.Set, fn func(name string, w *infer.Dense, x []float32, n int)) {
	t.Helper()
	x, err := calib.Embed(m, hs)
	if err != nil {
		t.Fatal(err)
	}
	n := hs.Tokens()
	var acts infer.BlockActivations
	for l := range m.Layers {
		if err := infer.BlockForward(&m.Config, &run.Layers[l], x, len(hs.Samples), hs.Info.SeqLen, &acts); err != nil {
			t.Fatal(err)
		}
		for _, st := range calib.Stages {
			for _, sfx := range st.Linears() {
				f, err := calib.LinearField(&m.Layers[l], sfx)
				if err != nil {
					t.Fatal(err)
				}
				name := hf.LayerTensorName(l, sfx)
				d, err := calib.DenseWeight(*f, name)
				if err != nil {
					t.Fatal(err)
				}
				fn(name, d, st.Input(&acts), n)
			}
		}
	}
}

func TestModelBeatsRTN(t *testing.T) {
	cases := []struct {
		model string
		opt   Options
	}{
		{"stories260k", Options{Bits: 4, GroupSize: 32}},
		{"stories260k", Options{Bits: 3, GroupSize: 32, ActOrder: true, StaticGroups: true}},
		{"stories260k", Options{Bits: 2, GroupSize: 32, Sym: true}},
		{"random_llama32", Options{Bits: 4, GroupSize: 32}},
		{"random_llama32", Options{Bits: 3, ActOrder: true}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%dbit-g%d-sym%v-act%v", c.model, c.opt.Bits, c.opt.GroupSize, c.opt.Sym, c.opt.ActOrder), func(t *testing.T) {
			m, tok := loadModel(t, c.model)
			cs, hs := sets(t, tok, 16, 6, 64)
			calls := 0
			ws, rep, err := QuantizeModel(context.Background(), m, cs, ModelOptions{Options: c.opt,
				Progress: func(done, total int, name string) { calls++ }})
			if err != nil {
				t.Fatal(err)
			}
			if calls != 7*len(m.Layers) || len(ws) != 7*len(m.Layers) || len(rep.Layers) != 7*len(m.Layers) || len(rep.Importance) != 7*len(m.Layers) {
				t.Fatalf("%d progress calls, %d weights, %d reports, %d importance entries for %d layers", calls, len(ws), len(rep.Layers), len(rep.Importance), len(m.Layers))
			}
			var gsum, rsum float64
			heldOutInputs(t, m, quantizedModel(t, m, ws), hs, func(name string, d *infer.Dense, x []float32, n int) {
				g := ws[name]
				if g == nil || g.Rows != d.R || g.Cols != d.C {
					t.Fatalf("%s: missing or misshaped result", name)
				}
				if imp := rep.Importance[name]; len(imp) != d.C {
					t.Fatalf("%s: importance of %d columns", name, len(imp))
				}
				deq, err := g.Dequantize()
				if err != nil {
					t.Fatal(err)
				}
				r, err := quant.RTN(d.W, d.R, d.C, quant.GroupedOptions{Bits: c.opt.Bits, GroupSize: c.opt.GroupSize, Sym: c.opt.Sym})
				if err != nil {
					t.Fatal(err)
				}
				rdeq, _ := r.Dequantize()
				eg, er := layerErr(d.W, deq, x, d.R, d.C, n), layerErr(d.W, rdeq, x, d.R, d.C, n)
				gsum += eg
				rsum += er
				if !(eg < er) {
					t.Errorf("%s: held-out output error GPTQ %.4g >= RTN %.4g", name, eg, er)
				}
			})
			t.Logf("held-out output error, all linears: GPTQ %.4g, RTN %.4g (ratio %.3f)", gsum, rsum, gsum/rsum)
		})
	}
}

// BlockForward over every block, then the final norm and lm_head, must
// give the runtime's logits.
func TestBlockForwardMatchesRunner(t *testing.T) {
	m, _ := loadModel(t, "stories260k")
	ids := []int{1, 403, 407, 261, 378, 429, 306, 262, 287, 359}
	logits, err := infer.NewRunner(m).Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: ids, AllLogits: true}})
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, len(ids)*m.Dim)
	if err := m.EmbedRows(x, ids); err != nil {
		t.Fatal(err)
	}
	for l := range m.Layers {
		if err := infer.BlockForward(&m.Config, &m.Layers[l], x, 1, len(ids), nil); err != nil {
			t.Fatal(err)
		}
	}
	xn := make([]float32, len(x))
	if err := infer.RMSNormRows(xn, x, m.Norm, m.NormEps, len(ids)); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(ids)*m.Vocab)
	m.Output.MatMul(out, xn, len(ids))
	for p := range ids {
		for v := 0; v < m.Vocab; v++ {
			if d := out[p*m.Vocab+v] - logits[0][p][v]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("position %d token %d: block logits %v, runner %v", p, v, out[p*m.Vocab+v], logits[0][p][v])
			}
		}
	}
	if err := infer.BlockForward(&m.Config, &m.Layers[0], x[:5], 1, len(ids), nil); err == nil {
		t.Error("short activations accepted")
	}
	if err := m.EmbedRows(x, []int{-1}); err == nil {
		t.Error("negative token id accepted")
	}
}
