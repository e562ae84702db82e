package convert_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	ggufparser "github.com/gpustack/gguf-parser-go"

	"qllama/convert"
	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
	"qllama/internal/testutil"
)

// converted is a model converted into a temporary file and loaded back.
type converted struct {
	rep *convert.Report
	f   *gguf.File
	m   *infer.Model
	tok *tokenizer.Tokenizer
}

func convertAndLoad(t *testing.T, opt convert.Options) *converted {
	t.Helper()
	opt.Out = filepath.Join(t.TempDir(), "model.gguf")
	rep, err := convert.Convert(context.Background(), opt)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	f, err := gguf.Open(opt.Out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, tok, err := infer.LoadGGUF(f)
	if err != nil {
		t.Fatalf("LoadGGUF: %v", err)
	}
	// Every file we write must be readable by an independent parser.
	theirs, err := ggufparser.ParseGGUFFile(opt.Out, ggufparser.UseMMap())
	if err != nil {
		t.Fatalf("gguf-parser-go: %v", err)
	}
	if len(theirs.TensorInfos) != len(f.Tensors()) || len(theirs.Header.MetadataKV) != len(f.KVs()) || theirs.TensorDataStartOffset != f.DataOffset {
		t.Errorf("gguf-parser-go read %d tensors, %d keys; we wrote %d, %d", len(theirs.TensorInfos), len(theirs.Header.MetadataKV), len(f.Tensors()), len(f.KVs()))
	}
	if rep.FileBytes != f.Size() {
		t.Errorf("report says %d bytes, file has %d", rep.FileBytes, f.Size())
	}
	return &converted{rep: rep, f: f, m: m, tok: tok}
}

func openHF(t *testing.T, name string) (*hf.Model, *infer.Model) {
	t.Helper()
	src, err := hf.Open(testutil.Shared(t, "models", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	m, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	return src, m
}

// rows decodes every row of a loaded weight.
func rows(t *testing.T, e infer.Embedding) []float32 {
	t.Helper()
	r, c := e.Rows(), e.Cols()
	out := make([]float32, r*c)
	for i := 0; i < r; i++ {
		e.Row(out[i*c:(i+1)*c], i)
	}
	return out
}

// expected is what quant's own codecs give for source weight w [rows, cols]
// in the scheme the converter must pick (including its fallbacks); heads > 0
// for Q/K, which the converter quantizes in llama.cpp's row order.
func expected(t *testing.T, s convert.Scheme, w []float32, rows, cols, heads int) []float32 {
	t.Helper()
	fallback := func() convert.Scheme {
		switch {
		case s.Native():
			if tr, _ := quant.Lookup(s.Format); cols%tr.BlockSize != 0 {
				// llama.cpp's tensor_type_fallback: q4_K -> q5_0, q6_K -> q8_0
				// on rows of whole 32-blocks, else F16.
				if fb := map[string]string{"q4_k": "q5_0", "q6_k": "q8_0"}[s.Format]; fb != "" && cols%32 == 0 {
					return convert.Scheme{Format: fb}
				}
				return convert.Scheme{Format: "f16"}
			}
		case s.Format == gguf.FormatNF4 || s.Format == gguf.FormatFP4:
			if cols%s.Group != 0 {
				return convert.Scheme{Format: gguf.FormatInt8}
			}
		}
		return s
	}()
	s = fallback
	if s.Native() {
		tr, _ := quant.Lookup(s.Format)
		rb, _ := tr.RowBytes(cols)
		out := make([]float32, len(w))
		buf := make([]byte, rb)
		for r := 0; r < rows; r++ {
			if err := tr.Quantize(buf, w[r*cols:(r+1)*cols]); err != nil {
				t.Fatal(err)
			}
			if err := tr.Dequantize(out[r*cols:(r+1)*cols], buf); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	var q quant.Tensor
	var err error
	switch s.Format {
	case gguf.FormatInt8:
		q, err = quant.QuantizeInt8(w, rows, cols)
	case gguf.FormatRTN:
		g := s.Group
		q, err = quant.RTN(w, rows, cols, quant.GroupedOptions{Bits: s.Bits, GroupSize: g, Sym: s.Sym})
	case gguf.FormatNF4, gguf.FormatFP4:
		typ := quant.NF4
		if s.Format == gguf.FormatFP4 {
			typ = quant.FP4
		}
		src := w
		if heads > 0 {
			if src, err = gguf.PermuteQK(w, cols, heads); err != nil {
				t.Fatal(err)
			}
		}
		q, err = quant.QuantizeBnb4(src, rows, cols, quant.Bnb4Options{Type: typ, BlockSize: s.Group, CompressStatistics: s.DoubleQuant})
		if err == nil && heads > 0 {
			d, derr := q.Dequantize()
			if derr != nil {
				t.Fatal(derr)
			}
			out, perr := gguf.UnpermuteQK(d, cols, heads)
			if perr != nil {
				t.Fatal(perr)
			}
			return out
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	d, err := q.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkWeights compares every loaded weight with quant's own dequantization
// of the source, and MatMul with the dequantized rows.
func checkWeights(t *testing.T, src *hf.Model, c *converted, lin, emb, head convert.Scheme) {
	t.Helper()
	cfg := src.Config
	type item struct {
		hf    string
		w     infer.Embedding
		s     convert.Scheme
		heads int
	}
	items := []item{{hf.EmbedName, c.m.Embed, emb, 0}}
	for i, l := range c.m.Layers {
		n := func(s string) string { return hf.LayerTensorName(i, s) }
		items = append(items,
			item{n(hf.AttnQ), l.Q.(infer.Embedding), lin, cfg.NumAttentionHeads},
			item{n(hf.AttnK), l.K.(infer.Embedding), lin, cfg.NumKeyValueHeads},
			item{n(hf.AttnV), l.V.(infer.Embedding), lin, 0},
			item{n(hf.AttnO), l.O.(infer.Embedding), lin, 0},
			item{n(hf.FFNGate), l.Gate.(infer.Embedding), lin, 0},
			item{n(hf.FFNUp), l.Up.(infer.Embedding), lin, 0},
			item{n(hf.FFNDown), l.Down.(infer.Embedding), lin, 0})
		for _, v := range []struct {
			name string
			got  []float32
		}{{n(hf.AttnNorm), l.AttnNorm}, {n(hf.FFNNorm), l.FFNNorm}} {
			want, _ := src.Float32(v.name)
			if !slices.Equal(v.got, want) {
				t.Errorf("%s: norm differs", v.name)
			}
		}
	}
	items = append(items, item{src.OutputName(), c.m.Output.(infer.Embedding), head, 0})
	rng := rand.New(rand.NewPCG(5, 6))
	for _, it := range items {
		w, err := src.Float32(it.hf)
		if err != nil {
			t.Fatal(err)
		}
		r, k := it.w.Rows(), it.w.Cols()
		want := expected(t, it.s, w, r, k, it.heads)
		got := rows(t, it.w)
		if !slices.Equal(got, want) {
			n := 0
			for i := range got {
				if got[i] != want[i] {
					n++
				}
			}
			t.Errorf("%s (%s): %d of %d dequantized weights differ from quant's", it.hf, it.s, n, len(got))
			continue
		}
		// MatMul agrees with the dequantized rows (float64 reference).
		x := make([]float32, 2*k)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		y := make([]float32, 2*r)
		it.w.(infer.Linear).MatMul(y, x, 2)
		for tok := 0; tok < 2; tok++ {
			for i := 0; i < r; i++ {
				var ref, mag float64
				for j := 0; j < k; j++ {
					p := float64(want[i*k+j]) * float64(x[tok*k+j])
					ref += p
					mag += math.Abs(p)
				}
				if d := math.Abs(float64(y[tok*r+i]) - ref); d > 1e-5*mag+1e-6 {
					t.Fatalf("%s: MatMul row %d = %g, dequantized rows give %g", it.hf, i, y[tok*r+i], ref)
				}
			}
		}
	}
	if len(cfg.RopeInvFreq()) != len(c.m.RopeInvFreq) || !slices.Equal(cfg.RopeInvFreq(), c.m.RopeInvFreq) {
		t.Errorf("RopeInvFreq differs from the source config's")
	}
	if c.m.BOS != cfg.BOSTokenID || !slices.Equal(c.m.EOS, cfg.EOSTokenIDs) || c.m.MaxSeq != cfg.MaxPositionEmbeddings || c.m.NormEps != float32(cfg.RMSNormEps) {
		t.Errorf("config differs: bos %d eos %v max %d eps %g", c.m.BOS, c.m.EOS, c.m.MaxSeq, c.m.NormEps)
	}
}

// logits runs the prompt and returns the last position's logits.
func logits(t *testing.T, m *infer.Model, ids []int) []float32 {
	t.Helper()
	out, err := infer.NewRunner(m).Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: ids}})
	if err != nil {
		t.Fatal(err)
	}
	return out[0][len(out[0])-1]
}

// relErr is ||a - b|| / ||b|| in float64.
func relErr(a, b []float32) float64 {
	var d, n float64
	for i := range a {
		x := float64(a[i]) - float64(b[i])
		d += x * x
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / n)
}

func greedy(t *testing.T, m *infer.Model, ids []int, n int) []int {
	t.Helper()
	r := infer.NewRunner(m)
	cache := infer.NewKVCache(&m.Config)
	var out []int
	for i := 0; i < n; i++ {
		res, err := r.Forward([]infer.Step{{Cache: cache, Tokens: ids}})
		if err != nil {
			t.Fatal(err)
		}
		next := infer.Argmax(res[0][len(res[0])-1])
		out = append(out, next)
		ids = []int{next}
	}
	return out
}

// TestRoundTripStories converts the trained stories260k model to every
// format and loads it back.
func TestRoundTripStories(t *testing.T) {
	dir := testutil.Shared(t, "models", "stories260k")
	src, ref := openHF(t, "stories260k")
	refTok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	prompt := refTok.EncodeDefault("Once upon a time")
	refLogits := logits(t, ref, prompt)
	refGreedy := greedy(t, ref, prompt, 16)
	errs := map[string]float64{}
	for _, tc := range []struct {
		name string
		opt  convert.Options
	}{
		{"f32", convert.Options{Method: "f32"}},
		{"f16", convert.Options{Method: "f16"}},
		{"bf16", convert.Options{Method: "bf16"}},
		{"q8_0", convert.Options{Method: "q8_0"}},
		{"q5_1", convert.Options{Method: "q5_1"}},
		{"q5_0", convert.Options{Method: "q5_0"}},
		{"q4_1", convert.Options{Method: "q4_1"}},
		{"q4_0", convert.Options{Method: "q4_0"}},
		{"iq4_nl", convert.Options{Method: "iq4_nl"}},
		{"q4_k", convert.Options{Method: "q4_k"}}, // 64/172 columns: q5_0 and f16 fallbacks
		{"q6_k", convert.Options{Method: "q6_k"}}, // q8_0 and f16 fallbacks
		{"int8", convert.Options{Method: "int8"}},
		{"nf4", convert.Options{Method: "nf4"}},
		{"fp4", convert.Options{Method: "fp4", Group: 32}},
		{"nf4_dq", convert.Options{Method: "nf4", DoubleQuant: true}},
		{"rtn8", convert.Options{Method: "rtn", Bits: 8, Group: 32}},
		{"rtn4", convert.Options{Method: "rtn", Bits: 4, Group: 32}},
		{"rtn4_sym_perchannel", convert.Options{Method: "rtn", Bits: 4, Group: -1, Sym: true}},
		{"rtn3", convert.Options{Method: "rtn", Bits: 3, Group: 64}},
		{"rtn2", convert.Options{Method: "rtn", Bits: 2, Group: 32}},
		{"mixed_untied_head", convert.Options{Method: "q4_0", EmbedType: "q8_0", HeadType: "nf4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := tc.opt
			opt.In = dir
			c := convertAndLoad(t, opt)
			lin, _ := schemes(t, opt)
			checkWeights(t, src, c, lin[0], lin[1], lin[2])
			if !slices.Equal(c.tok.Parts().Tokens, refTok.Parts().Tokens) || !reflect.DeepEqual(c.tok.Parts(), refTok.Parts()) {
				t.Errorf("embedded tokenizer differs from tokenizer.json's")
			}
			got := logits(t, c.m, prompt)
			e := relErr(got, refLogits)
			errs[tc.name] = e
			switch tc.name {
			case "f32":
				for i := range got {
					if d := math.Abs(float64(got[i] - refLogits[i])); d > 1e-4 {
						t.Fatalf("logit %d differs by %g from the HF model's", i, d)
					}
				}
			case "f16", "q8_0", "int8", "rtn8":
				if e > 0.02 {
					t.Errorf("logits relative error %.4f, want < 0.02 at 8+ bits", e)
				}
				if g := greedy(t, c.m, prompt, 16); !slices.Equal(g, refGreedy) && tc.name != "rtn8" {
					t.Errorf("greedy ids %v, F32 model %v", g, refGreedy)
				}
			}
			if tc.name == "mixed_untied_head" {
				if _, ok := c.f.Tensor("output.weight"); ok || !hasKey(c.f, "qllama.quant.output.weight.format") {
					t.Errorf("tied model with a different head type: want an explicit nf4 output.weight")
				}
				if any(c.m.Output) == any(c.m.Embed) {
					t.Errorf("output shares the embedding")
				}
			}
			wantCompat := !strings.Contains("int8 nf4 fp4 nf4_dq rtn8 rtn4 rtn4_sym_perchannel rtn3 rtn2 mixed_untied_head", tc.name)
			if _, err := c.f.Uint(gguf.KeyGeneralFileType); (err == nil) != wantCompat || c.rep.LlamaCpp != wantCompat {
				t.Errorf("general.file_type present %v, want %v", err == nil, wantCompat)
			}
		})
	}
	t.Logf("logit relative errors: %v", errs)
	// Quality falls with bits.
	for _, pair := range [][2]string{{"f16", "q8_0"}, {"q8_0", "q4_0"}, {"q5_1", "q4_0"}, {"q6_k", "q4_k"}, {"int8", "nf4"}, {"rtn8", "rtn4"}, {"rtn4", "rtn2"}, {"rtn3", "rtn2"}} {
		if errs[pair[0]] >= errs[pair[1]] {
			t.Errorf("%s error %.4f not below %s error %.4f", pair[0], errs[pair[0]], pair[1], errs[pair[1]])
		}
	}
}

func hasKey(f *gguf.File, key string) bool { _, ok := f.KV(key); return ok }

// schemes returns the linear, embed and head schemes the options imply.
func schemes(t *testing.T, o convert.Options) ([3]convert.Scheme, error) {
	t.Helper()
	name := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	typ := name(o.Type, o.Method)
	emb := name(o.EmbedType, typ)
	head := name(o.HeadType, emb)
	var out [3]convert.Scheme
	for i, n := range []string{typ, emb, head} {
		s := convert.Scheme{Format: n}
		switch n {
		case gguf.FormatNF4, gguf.FormatFP4:
			s.Bits, s.Group, s.DoubleQuant = 4, o.Group, o.DoubleQuant
			if s.Group == 0 {
				s.Group = convert.DefaultBnbGroup
			}
		case gguf.FormatRTN:
			s.Bits, s.Group, s.Sym = o.Bits, o.Group, o.Sym
			if s.Group == -1 {
				s.Group = 0
			}
		}
		out[i] = s
	}
	return out, nil
}

// TestRoundTripLlama32 covers BF16 sources, llama3 RoPE (rope_freqs.weight),
// GQA and the 128k-token byte-level tokenizer.
func TestRoundTripLlama32(t *testing.T) {
	dir := testutil.Shared(t, "models", "random_llama32")
	src, ref := openHF(t, "random_llama32")
	refTok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	prompt := refTok.EncodeDefault("The quick brown fox jumps over the lazy dog")
	refLogits := logits(t, ref, prompt)
	for _, tc := range []struct {
		name string
		opt  convert.Options
	}{
		{"bf16", convert.Options{Method: "bf16"}},
		{"q4_0_nf4dq", convert.Options{Method: "q4_0", Type: "nf4", DoubleQuant: true, EmbedType: "q8_0"}},
		{"rtn3_f32embed_q41head", convert.Options{Method: "rtn", Bits: 3, Group: 32, EmbedType: "f32", HeadType: "q4_1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := tc.opt
			opt.In = dir
			c := convertAndLoad(t, opt)
			s, _ := schemes(t, opt)
			checkWeights(t, src, c, s[0], s[1], s[2])
			if _, ok := c.f.Tensor(gguf.TensorRopeFreqs); !ok {
				t.Errorf("no %s for llama3 rope scaling", gguf.TensorRopeFreqs)
			}
			p, q := c.tok.Parts(), refTok.Parts()
			if !reflect.DeepEqual(p, q) {
				t.Errorf("embedded tokenizer parts differ")
			}
			for _, text := range []string{"Hello, world! 123 <|begin_of_text|>", "  spaces\n\nnewlines\tand émojis 🤖"} {
				if a, b := c.tok.EncodeDefault(text), refTok.EncodeDefault(text); !slices.Equal(a, b) {
					t.Errorf("%q: %v, tokenizer.json gives %v", text, a, b)
				}
			}
			got := logits(t, c.m, prompt)
			if tc.name == "bf16" {
				for i := range got {
					if d := math.Abs(float64(got[i] - refLogits[i])); d > 1e-4 {
						t.Fatalf("logit %d differs by %g from the HF model's", i, d)
					}
				}
			}
		})
	}
}

// TestCancelLeavesNothing cancels conversions at many points in time: each
// either completes or fails with context.Canceled leaving no file behind.
func TestCancelLeavesNothing(t *testing.T) {
	dir := testutil.Shared(t, "models", "random_llama32")
	canceled := 0
	for _, delay := range []time.Duration{0, time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond} {
		out := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		if delay == 0 {
			cancel()
		} else {
			time.AfterFunc(delay, cancel)
		}
		_, err := convert.Convert(ctx, convert.Options{In: dir, Out: filepath.Join(out, "m.gguf"), Method: "nf4", DoubleQuant: true})
		cancel()
		ents, _ := os.ReadDir(out)
		switch {
		case err == nil:
			if len(ents) != 1 {
				t.Errorf("delay %v: completed but left %d files", delay, len(ents))
			}
		case !errors.Is(err, context.Canceled):
			t.Errorf("delay %v: error %v, want context.Canceled", delay, err)
		default:
			canceled++
			if len(ents) != 0 {
				t.Errorf("delay %v: cancelled conversion left %d files", delay, len(ents))
			}
		}
	}
	if canceled < 2 {
		t.Errorf("only %d conversions were cancelled", canceled)
	}
}

// TestBadInput checks option and input errors.
func TestBadInput(t *testing.T) {
	dir := testutil.Shared(t, "models", "stories260k")
	empty := t.TempDir()
	out := filepath.Join(t.TempDir(), "x.gguf")
	for _, tc := range []struct {
		name string
		opt  convert.Options
		want string
	}{
		{"missing dir", convert.Options{In: filepath.Join(empty, "nope"), Out: out, Method: "q8_0"}, "nope"},
		{"empty dir", convert.Options{In: empty, Out: out, Method: "q8_0"}, "config.json"},
		{"no method", convert.Options{In: dir, Out: out}, "method is required"},
		{"bad method", convert.Options{In: dir, Out: out, Method: "q3_k"}, `"q3_k"`},
		{"bad type", convert.Options{In: dir, Out: out, Method: "q8_0", Type: "int3"}, "type"},
		{"bits without rtn", convert.Options{In: dir, Out: out, Method: "q4_0", Bits: 4}, "bits"},
		{"bits range", convert.Options{In: dir, Out: out, Method: "rtn", Bits: 9}, "2..8"},
		{"group for q8_0", convert.Options{In: dir, Out: out, Method: "q8_0", Group: 64}, "group"},
		{"nf4 group", convert.Options{In: dir, Out: out, Method: "nf4", Group: 48}, "power of two"},
		{"sym for nf4", convert.Options{In: dir, Out: out, Method: "nf4", Sym: true}, "sym"},
		{"double quant for rtn", convert.Options{In: dir, Out: out, Method: "rtn", DoubleQuant: true}, "double quant"},
		{"no output", convert.Options{In: dir, Method: "f32"}, "output file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := convert.Convert(context.Background(), tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Errorf("a failed conversion wrote %s", out)
			}
		})
	}
}

// TestReport checks the summary arithmetic and the table.
func TestReport(t *testing.T) {
	c := convertAndLoad(t, convert.Options{In: testutil.Shared(t, "models", "stories260k"), Method: "q8_0"})
	var lb, lp, all int64
	for _, tr := range c.rep.Tensors {
		all += tr.Bytes
		if tr.Class == convert.ClassLinear {
			lb += tr.Bytes
			lp += tr.Params
		}
		if tr.Type == "q8_0" && math.Abs(tr.BPW-8.5) > 1e-9 {
			t.Errorf("%s: %g bpw for q8_0", tr.Name, tr.BPW)
		}
		if tr.RelRMSE < 0 || tr.RelRMSE > 0.02 {
			t.Errorf("%s: relative RMS error %g", tr.Name, tr.RelRMSE)
		}
	}
	if got := 8 * float64(lb) / float64(lp); math.Abs(got-c.rep.LinearBPW) > 1e-12 {
		t.Errorf("linear bpw %g, tensors give %g", c.rep.LinearBPW, got)
	}
	if all >= c.rep.FileBytes || c.rep.Params != 260032 {
		t.Errorf("tensor bytes %d, file %d, params %d", all, c.rep.FileBytes, c.rep.Params)
	}
	var sb strings.Builder
	if err := c.rep.WriteTable(&sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"blk.4.ffn_down.weight", "f16*", "172 columns are not whole q8_0 blocks", "llama.cpp compatible", "linear layers"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
}
