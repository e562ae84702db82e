//go:build cuda

package cuda

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"qllama/convert/quant"
	"qllama/infer"
)

var dev *Device

func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	dev, err = Open(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("device: %s (cc %d.%d, %d SMs, %.1f GiB), images %v\n", dev.Name, dev.Major, dev.Minor, dev.SMs, float64(dev.Total)/(1<<30), dev.ImageOf)
	code := m.Run()
	dev.Close()
	os.Exit(code)
}

// relErr is ||got-want|| / ||want||; any NaN or Inf in got gives +Inf, so an
// element the kernel never wrote (poisoned with NaN) fails.
func relErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		num += (g - w) * (g - w)
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// randTokens returns n token ids drawn uniformly from [0, vocab).
func randTokens(rng *rand.Rand, vocab, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = rng.IntN(vocab)
	}
	return out
}

func randVec(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64()) * scale
	}
	return v
}

// weightFormats are the formats the GPU reads; make builds a [rows, cols]
// weight of random values (seeded by rng) in that format, or nil when the
// shape does not suit the format.
var weightFormats = []struct {
	name string
	make func(t testing.TB, w []float32, rows, cols int) infer.Linear
}{
	{"f32", func(t testing.TB, w []float32, rows, cols int) infer.Linear { return infer.NewDense(w, rows, cols) }},
	{"f16", packedMaker("f16")},
	{"bf16", packedMaker("bf16")},
	{"q8_0", packedMaker("q8_0")},
	{"q4_0", packedMaker("q4_0")},
	{"q4_1", packedMaker("q4_1")},
	{"q5_0", packedMaker("q5_0")},
	{"q5_1", packedMaker("q5_1")},
	{"iq4_nl", packedMaker("iq4_nl")},
	{"q4_k", packedMaker("q4_k")},
	{"q6_k", packedMaker("q6_k")},
	{"int4 g128 sym", groupedMaker(quant.GroupedOptions{Bits: 4, GroupSize: 128, Sym: true}, false)},
	{"int4 g128 asym", groupedMaker(quant.GroupedOptions{Bits: 4, GroupSize: 128}, false)},
	{"int3 g128 asym", groupedMaker(quant.GroupedOptions{Bits: 3, GroupSize: 128}, false)},
	{"int2 g32 awq", groupedMaker(quant.GroupedOptions{Bits: 2, GroupSize: 32, Rule: quant.RuleAWQ}, false)},
	{"int8 per-channel", groupedMaker(quant.GroupedOptions{Bits: 8}, false)},
	{"int4 g32 act-order", groupedMaker(quant.GroupedOptions{Bits: 4, GroupSize: 32}, true)},
	{"int5 g64", groupedMaker(quant.GroupedOptions{Bits: 5, GroupSize: 64}, false)},
	{"llm.int8", func(t testing.TB, w []float32, rows, cols int) infer.Linear {
		q, err := quant.QuantizeInt8(w, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		return tensorLinear(t, q)
	}},
	{"nf4", bnbMaker(quant.Bnb4Options{Type: quant.NF4})},
	{"nf4 double-quant", bnbMaker(quant.Bnb4Options{Type: quant.NF4, CompressStatistics: true})},
	{"fp4 bs128", bnbMaker(quant.Bnb4Options{Type: quant.FP4, BlockSize: 128})},
}

func tensorLinear(t testing.TB, q quant.Tensor) infer.Linear {
	l, err := infer.NewTensorLinear(q)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func packedMaker(name string) func(t testing.TB, w []float32, rows, cols int) infer.Linear {
	return func(t testing.TB, w []float32, rows, cols int) infer.Linear {
		tr, err := quant.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if cols%tr.BlockSize != 0 {
			return nil
		}
		p, err := packRows(tr, w, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// packRows encodes a row-major matrix row by row in a traits format.
func packRows(tr quant.Traits, w []float32, rows, cols int) (*infer.Packed, error) {
	rb, err := tr.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	data := make([]byte, rb*rows)
	var errs = make([]error, rows)
	infer.ParallelFor(rows, cols*8, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			errs[r] = tr.Quantize(data[r*rb:(r+1)*rb], w[r*cols:(r+1)*cols])
		}
	})
	for _, e := range errs {
		if e != nil {
			return nil, e
		}
	}
	return infer.NewPacked(tr, data, rows, cols)
}

func groupedMaker(opt quant.GroupedOptions, actOrder bool) func(t testing.TB, w []float32, rows, cols int) infer.Linear {
	return func(t testing.TB, w []float32, rows, cols int) infer.Linear {
		if opt.GroupSize > 0 && cols%opt.GroupSize != 0 {
			return nil
		}
		q, err := quant.RTN(w, rows, cols, opt)
		if err != nil {
			t.Fatal(err)
		}
		if actOrder {
			// A permuted g_idx, as GPTQ's act-order writes: column j belongs
			// to group gidx[j], every group keeps GroupSize columns.
			ng := q.NumGroups()
			rng := rand.New(rand.NewPCG(uint64(cols), 7))
			perm := rng.Perm(cols)
			q.GIdx = make([]int32, cols)
			for j, p := range perm {
				q.GIdx[j] = int32(p * ng / cols)
			}
		}
		return tensorLinear(t, q)
	}
}

func bnbMaker(opt quant.Bnb4Options) func(t testing.TB, w []float32, rows, cols int) infer.Linear {
	return func(t testing.TB, w []float32, rows, cols int) infer.Linear {
		q, err := quant.QuantizeBnb4(w, rows, cols, opt)
		if err != nil {
			t.Fatal(err)
		}
		return tensorLinear(t, q)
	}
}

// dequant returns the float32 weights of any supported weight, row-major.
func dequant(t testing.TB, l infer.Linear) []float32 {
	switch v := l.(type) {
	case *infer.Dense:
		return v.W
	case *infer.Packed:
		out := make([]float32, v.R*v.C)
		for r := 0; r < v.R; r++ {
			v.Row(out[r*v.C:(r+1)*v.C], r)
		}
		return out
	case *infer.TensorLinear:
		w, err := v.T.Dequantize()
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	t.Fatalf("dequant: %T", l)
	return nil
}
