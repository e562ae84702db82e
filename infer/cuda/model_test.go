//go:build cuda

package cuda

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"qllama/convert/quant"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/internal/testutil"
)

var model1B = flag.String("model1b", "", "Hugging Face directory of a full-size model (qconvert random --shape llama-3.2-1b) for the whole-model and perf tests")

func loadHF(t testing.TB, dir string) *infer.Model {
	t.Helper()
	src, err := hf.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	m, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// compareModel runs the same batched steps on the CPU runner and on the GPU:
// a prefill of three prompts of different lengths (one with logits for every
// token), then decode steps feeding the CPU's greedy ids. It checks every
// logits row against tol (relative error) and the GPU's greedy ids where the
// CPU's top-two margin is clear.
// Steps of more than gemmRows tokens take the tensor-core path unless opts
// turn it off.
func compareModel(t *testing.T, m *infer.Model, tol float64, lens []int, decode int, opts ...func(*Model)) {
	t.Helper()
	g, err := dev.Upload(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, o := range opts {
		o(g)
	}
	rng := rand.New(rand.NewPCG(uint64(m.Vocab), uint64(m.Dim)))
	cpu := infer.NewRunner(m)
	cc := make([]*infer.KVCache, len(lens))
	gc := make([]*Cache, len(lens))
	gcG := make([]*Cache, len(lens)) // second set of caches for Greedy
	for i := range lens {
		cc[i] = infer.NewKVCache(&m.Config)
		if gc[i], err = g.NewCache(4); err != nil { // small: forces growth
			t.Fatal(err)
		}
		defer gc[i].Free()
		if gcG[i], err = g.NewCache(lens[i] + decode); err != nil {
			t.Fatal(err)
		}
		defer gcG[i].Free()
	}
	toks := make([][]int, len(lens))
	for i, l := range lens {
		toks[i] = make([]int, l)
		for j := range toks[i] {
			toks[i][j] = rng.IntN(m.Vocab)
		}
	}
	worst := 0.0
	for step := 0; step <= decode; step++ {
		cs := make([]infer.Step, len(lens))
		gs := make([]Step, len(lens))
		gg := make([]Step, len(lens))
		for i := range lens {
			all := step == 0 && i == 0
			cs[i] = infer.Step{Cache: cc[i], Tokens: toks[i], AllLogits: all}
			gs[i] = Step{Cache: gc[i], Tokens: toks[i], AllLogits: all}
			gg[i] = Step{Cache: gcG[i], Tokens: toks[i]}
		}
		want, err := cpu.Forward(cs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := g.Forward(gs)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := g.Greedy(gg)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("step %d seq %d: %d logits rows, want %d", step, i, len(got[i]), len(want[i]))
			}
			for j := range want[i] {
				e := relErr(got[i][j], want[i][j])
				worst = max(worst, e)
				if e > tol {
					t.Errorf("step %d seq %d row %d: logits relative error %.3g > %.3g", step, i, j, e, tol)
				}
			}
			last := want[i][len(want[i])-1]
			top, margin := top2(last)
			if margin > 1e-2*rms(last) && ids[i] != top {
				t.Errorf("step %d seq %d: GPU greedy id %d, CPU %d (margin %.3g)", step, i, ids[i], top, margin)
			}
			toks[i] = []int{top}
		}
	}
	if g.GraphError != nil {
		t.Errorf("decode steps ran without CUDA graphs: %v", g.GraphError)
	}
	if g.GemmError != nil {
		t.Errorf("the tensor-core path was not taken: %v", g.GemmError)
	}
	t.Logf("worst logits relative error %.3g over %d steps (formats %v, %d graphs)", worst, decode+1, g.Formats(), len(g.graphs))
}

func top2(x []float32) (int, float64) {
	best := infer.Argmax(x)
	second := math.Inf(-1)
	for i, v := range x {
		if i != best && float64(v) > second {
			second = float64(v)
		}
	}
	return best, float64(x[best]) - second
}

func rms(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s / float64(len(x)))
}

// TestModelSmall compares whole-model logits with the CPU backend on the
// shared stories260k and random_llama32 models (float32 weights, and the same
// weights as F16).
func TestModelSmall(t *testing.T) {
	for _, name := range []string{"stories260k", "random_llama32"} {
		m := loadHF(t, testutil.Shared(t, "models", name))
		t.Run(name+"/f32", func(t *testing.T) { compareModel(t, m, 1e-4, []int{9, 1, 300}, 4) })
		t.Run(name+"/f32/matvec", func(t *testing.T) { compareModel(t, m, 1e-4, []int{9, 1, 300}, 2, noGemm) })
		f16 := requantize(t, m, "f16", "f16")
		// FP16 activations on the GEMM path: FP16 tolerance.
		t.Run(name+"/f16", func(t *testing.T) { compareModel(t, f16, 3e-3, []int{5, 12, 40}, 3) })
		// An FP16 KV cache (the default for packed weights): FP16 tolerance;
		// a float32 one: the matvec kernels' own.
		t.Run(name+"/f16/matvec", func(t *testing.T) { compareModel(t, f16, 3e-3, []int{5, 12}, 3, noGemm) })
		t.Run(name+"/f16/matvec/kvf32", func(t *testing.T) { compareModel(t, f16, 1e-4, []int{5, 12}, 3, noGemm, kvF32) })
	}
}

func noGemm(g *Model) { g.UseGemm = false }

// kvF32 gives the model a float32 KV cache (as the CPU backend's).
func kvF32(g *Model) {
	if err := g.SetKVType(KVF32); err != nil {
		panic(err)
	}
}

// requantize returns m with every layer weight in format layerFmt (a name of
// weightFormats) and the embedding (and a tied lm_head) in embFmt, a traits
// name.
func requantize(t testing.TB, m *infer.Model, layerFmt, embFmt string) *infer.Model {
	var mk func(t testing.TB, w []float32, rows, cols int) infer.Linear
	for _, f := range weightFormats {
		if f.name == layerFmt {
			mk = f.make
		}
	}
	if mk == nil {
		t.Fatalf("no format %s", layerFmt)
	}
	conv := func(l infer.Linear) infer.Linear {
		d, ok := l.(*infer.Dense)
		if !ok {
			t.Fatalf("requantize: %T", l)
		}
		out := mk(t, d.W, d.R, d.C)
		if out == nil {
			t.Fatalf("format %s does not fit [%d %d]", layerFmt, d.R, d.C)
		}
		return out
	}
	q := *m
	q.Layers = make([]infer.Layer, len(m.Layers))
	for i, L := range m.Layers {
		q.Layers[i] = L
		Q := &q.Layers[i]
		Q.Q, Q.K, Q.V, Q.O = conv(L.Q), conv(L.K), conv(L.V), conv(L.O)
		Q.Gate, Q.Up, Q.Down = conv(L.Gate), conv(L.Up), conv(L.Down)
	}
	ed := m.Embed.(*infer.Dense)
	tr, err := quant.Lookup(embFmt)
	if err != nil {
		t.Fatal(err)
	}
	pe, err := packRows(tr, ed.W, ed.R, ed.C)
	if err != nil {
		t.Fatal(err)
	}
	q.Embed = pe
	if m.Output == infer.Linear(ed) {
		q.Output = pe
	} else {
		q.Output = conv(m.Output)
	}
	return &q
}

// Formats of the full-size check: layer format, embedding/lm_head format.
var fullFormats = [][2]string{
	{"f16", "f16"}, {"q8_0", "q8_0"}, {"q4_0", "q4_0"}, {"int4 g128 asym", "f16"}, {"int3 g128 asym", "f16"}, {"nf4", "f16"},
	{"q4_1", "q4_1"}, {"q5_0", "q5_0"}, {"q5_1", "q5_1"}, {"iq4_nl", "iq4_nl"}, {"q4_k", "q4_k"}, {"q6_k", "q6_k"},
}

// TestModel1B compares a full-size random Llama-3.2-1B on the GPU with the
// CPU backend in each format (-model1b DIR; made by qconvert random).
func TestModel1B(t *testing.T) {
	if *model1B == "" {
		t.Skip("no -model1b directory given (scripts/gpu-check.sh makes one)")
	}
	m := loadHF(t, *model1B)
	for _, f := range fullFormats {
		t.Run(f[0], func(t *testing.T) {
			q := requantize(t, m, f[0], f[1])
			compareModel(t, q, 1e-3, []int{7, 1}, 2, noGemm, kvF32)
			compareModel(t, q, 5e-3, []int{7, 1}, 2)
			// A 40-token prompt beside a 5-token one: the tensor-core path
			// (FP16 activations) with GEMM and split-K attention in one step,
			// on the default FP16 KV cache like the steps above.
			compareModel(t, q, 5e-3, []int{40, 5}, 1)
		})
	}
}

// opaqueTensor is a quantized tensor type the GPU does not know (every
// ggml block format is supported now).
type opaqueTensor struct{ quant.Tensor }

// TestErrors checks the clear errors: an unsupported format, a bad token, a
// step without a cache, and an allocation larger than the device.
func TestErrors(t *testing.T) {
	m := loadHF(t, testutil.Shared(t, "models", "stories260k"))
	q := *m
	q.Layers = append([]infer.Layer(nil), m.Layers...)
	d := m.Layers[0].Q.(*infer.Dense)
	i8, err := quant.QuantizeInt8(d.W, d.R, d.C)
	if err != nil {
		t.Fatal(err)
	}
	q.Layers[0].Q = &infer.TensorLinear{T: opaqueTensor{i8}}
	_, err = dev.Upload(&q)
	var ue *UnsupportedError
	if want := fmt.Sprintf("%T", opaqueTensor{}); !errors.As(err, &ue) || ue.Format != want {
		t.Errorf("upload of an unknown tensor type: got %v, want an UnsupportedError for %s", err, want)
	} else {
		t.Log(err)
	}
	g, err := dev.Upload(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	c, err := g.NewCache(8)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if _, err := g.Forward([]Step{{Cache: c, Tokens: []int{m.Vocab}}}); err == nil {
		t.Error("token outside the vocabulary accepted")
	}
	if _, err := g.Forward([]Step{{Tokens: []int{1}}}); err == nil {
		t.Error("step without a cache accepted")
	}
	func() {
		defer dev.bind()()
		_, err = dev.alloc(dev.Total*2, "a test buffer")
	}()
	var oe *OOMError
	if !errors.As(err, &oe) || oe.Need != dev.Total*2 {
		t.Errorf("huge allocation: got %v, want an OOMError", err)
	} else {
		t.Log(err)
	}
	// A KV cache larger than the device: an OOMError naming the cache, and
	// nothing left allocated.
	kvBefore := g.KVBytes()
	if _, err := g.NewCache(1 << 30); !errors.As(err, &oe) || !strings.Contains(oe.What, "KV cache") {
		t.Errorf("huge KV cache: got %v, want an OOMError naming the cache", err)
	} else {
		t.Log(err)
	}
	if g.KVBytes() != kvBefore {
		t.Errorf("a failed KV cache left the pool at %d bytes (was %d)", g.KVBytes(), kvBefore)
	}
	// A step after Close is an error, not a launch over freed memory; the
	// cache's Free after Close is harmless.
	g2, err := dev.Upload(m)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := g2.NewCache(4)
	if err != nil {
		t.Fatal(err)
	}
	g2.Close()
	if _, err := g2.Forward([]Step{{Cache: c2, Tokens: []int{1}}}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("forward after Close: %v, want an error saying the model was closed", err)
	}
	c2.Free()
}
