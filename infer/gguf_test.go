package infer_test

import (
	"context"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"qllama/convert"
	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/infer"
	"qllama/internal/testutil"
)

// convertTo writes stories260k (or another shared model) in method to a
// temporary file.
func convertTo(t *testing.T, model, method string, opt convert.Options) string {
	t.Helper()
	opt.In = testutil.Shared(t, "models", model)
	opt.Out = filepath.Join(t.TempDir(), method+".gguf")
	opt.Method = method
	if _, err := convert.Convert(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	return opt.Out
}

// rewrite copies the GGUF file at src into a new file after edit changes its
// keys and tensors (tensor data is copied as stored).
func rewrite(t *testing.T, src string, edit func(kvs []gguf.KV, ts []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec)) string {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ts []gguf.TensorSpec
	for _, ti := range f.Tensors() {
		data, err := f.TensorData(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, gguf.TensorSpec{Name: ti.Name, Type: ti.Type, Shape: ti.Shape,
			WriteData: func(w io.Writer) error { _, err := w.Write(data); return err }})
	}
	kvs, ts := edit(f.KVs(), ts)
	out := filepath.Join(t.TempDir(), "edited.gguf")
	if err := gguf.Write(context.Background(), out, kvs, ts); err != nil {
		t.Fatal(err)
	}
	return out
}

func load(t *testing.T, path string) (*infer.Model, error) {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, _, err := infer.LoadGGUF(f)
	return m, err
}

func dropKey(key string) func([]gguf.KV, []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
	return func(kvs []gguf.KV, ts []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
		return slices.DeleteFunc(kvs, func(kv gguf.KV) bool { return kv.Key == key }), ts
	}
}

func setKey(key string, v any) func([]gguf.KV, []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
	return func(kvs []gguf.KV, ts []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
		for i := range kvs {
			if kvs[i].Key == key {
				kvs[i].Value = v
			}
		}
		return kvs, ts
	}
}

func dropTensor(name string) func([]gguf.KV, []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
	return func(kvs []gguf.KV, ts []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
		return kvs, slices.DeleteFunc(ts, func(s gguf.TensorSpec) bool { return s.Name == name })
	}
}

// TestLoadGGUFErrors checks that broken files give one clear error naming
// the file and what is wrong.
func TestLoadGGUFErrors(t *testing.T) {
	q8 := convertTo(t, "stories260k", "q8_0", convert.Options{})
	nf4 := convertTo(t, "stories260k", "nf4", convert.Options{DoubleQuant: true})
	rtn := convertTo(t, "stories260k", "rtn", convert.Options{Bits: 3})
	for _, tc := range []struct {
		name string
		src  string
		edit func([]gguf.KV, []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec)
		want string
	}{
		{"missing block count", q8, dropKey(gguf.KeyBlockCount), "llama.block_count"},
		{"huge dimension", q8, setKey(gguf.KeyEmbeddingLength, uint32(1<<30)), "embedding_length"},
		{"wrong architecture", q8, setKey(gguf.KeyGeneralArchitecture, "gpt2"), "architecture"},
		{"missing tensor", q8, dropTensor("blk.3.ffn_up.weight"), `"blk.3.ffn_up.weight" missing`},
		{"missing norm", q8, dropTensor("output_norm.weight"), "output_norm.weight"},
		{"shape mismatch", q8, setKey(gguf.KeyFeedForwardLength, uint32(160)), "shape"},
		{"no tokenizer", q8, dropKey(gguf.KeyTokenizerModel), "no embedded tokenizer"},
		{"unknown tokenizer", q8, setKey(gguf.KeyTokenizerModel, "bert"), "tokenizer.ggml.model"},
		{"unknown scheme", nf4, setKey("qllama.quant.blk.0.attn_q.weight.format", "nf5"), "unknown scheme"},
		{"missing component", nf4, dropTensor("blk.1.ffn_up.weight.absmax.scales"), "absmax.scales"},
		{"other codebook", nf4, setKey("qllama.quant.blk.0.attn_v.weight.codebook", make([]float32, 16)), "codebook"},
		{"bad group", nf4, setKey("qllama.quant.blk.0.attn_v.weight.group_size", uint32(48)), "group_size"},
		{"bad shape key", rtn, setKey("qllama.quant.blk.2.ffn_gate.weight.shape", []int64{172, 65}), "shape"},
		{"bits out of range", rtn, setKey("qllama.quant.blk.2.ffn_gate.weight.bits", uint32(9)), "bits"},
		{"rope factors disagree", convertTo(t, "random_llama32", "f32", convert.Options{}), setKey(gguf.KeyQllamaRopeFactor, float64(8)), "rope_freqs.weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := rewrite(t, tc.src, tc.edit)
			_, err := load(t, path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded a broken file; want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should name %s and mention %q", err, path, tc.want)
			}
		})
	}
}

// TestLoadGGUFLlamaCppRope loads a file as llama.cpp writes it (no qllama.rope
// keys, only rope_freqs.weight): the inverse frequencies agree with Hugging
// Face's to float32 precision of the factors.
func TestLoadGGUFLlamaCppRope(t *testing.T) {
	src := convertTo(t, "random_llama32", "q8_0", convert.Options{})
	exact, err := load(t, src)
	if err != nil {
		t.Fatal(err)
	}
	path := rewrite(t, src, func(kvs []gguf.KV, ts []gguf.TensorSpec) ([]gguf.KV, []gguf.TensorSpec) {
		return slices.DeleteFunc(kvs, func(kv gguf.KV) bool {
			return strings.HasPrefix(kv.Key, "qllama.rope.") || strings.HasPrefix(kv.Key, "qllama.config.")
		}), ts
	})
	m, err := load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range m.RopeInvFreq {
		if d := math.Abs(v-exact.RopeInvFreq[i]) / exact.RopeInvFreq[i]; d > 1e-6 {
			t.Errorf("inv freq %d: %g, exact %g", i, v, exact.RopeInvFreq[i])
		}
	}
	if m.BOS != exact.BOS || !slices.Equal(m.EOS, exact.EOS) {
		t.Errorf("bos/eos from the tokenizer keys: %d %v, want %d %v", m.BOS, m.EOS, exact.BOS, exact.EOS)
	}
	// Without rope_freqs.weight either, the rope is plain: a different model.
	plain, err := load(t, rewrite(t, path, dropTensor(gguf.TensorRopeFreqs)))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(plain.RopeInvFreq, m.RopeInvFreq) {
		t.Errorf("rope_freqs.weight was ignored")
	}
}

// TestLoadGGUFZeroCopy checks that ggml-typed weights alias the mapping,
// except Q and K, which are un-permuted copies.
func TestLoadGGUFZeroCopy(t *testing.T) {
	path := convertTo(t, "stories260k", "q8_0", convert.Options{})
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, _, err := infer.LoadGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		l     infer.Linear
		alias bool
	}{
		{"blk.0.attn_v.weight", m.Layers[0].V, true},
		{"blk.0.ffn_gate.weight", m.Layers[0].Gate, true},
		{"blk.0.attn_q.weight", m.Layers[0].Q, false},
		{"blk.0.attn_k.weight", m.Layers[0].K, false},
	} {
		p, ok := tc.l.(*infer.Packed)
		if !ok {
			t.Fatalf("%s: %T, want *infer.Packed", tc.name, tc.l)
		}
		data, _ := f.TensorData(tc.name)
		if same := &p.Data[0] == &data[0]; same != tc.alias {
			t.Errorf("%s: aliases the mapping %v, want %v", tc.name, same, tc.alias)
		}
	}
}

// TestLoadGGUFQuantExposed: every whole-tensor quantized weight loaded from a
// file exposes its quant.Tensor, which backends that decode the formats
// themselves (the CUDA backend) rely on.
func TestLoadGGUFQuantExposed(t *testing.T) {
	for _, method := range []string{"nf4", "int8", "rtn"} {
		path := convertTo(t, "stories260k", method, convert.Options{})
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := infer.LoadGGUF(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range []infer.Linear{m.Layers[0].Q, m.Layers[0].K, m.Layers[1].Gate, m.Layers[4].O} {
			q, ok := l.(interface{ Quant() quant.Tensor })
			if !ok {
				t.Fatalf("%s: linear %d (%T) does not expose its quantized tensor", method, i, l)
			}
			if r, c := q.Quant().Shape(); r != l.Rows() || c != l.Cols() {
				t.Errorf("%s: linear %d: tensor [%d %d], linear [%d %d]", method, i, r, c, l.Rows(), l.Cols())
			}
		}
		f.Close()
	}
}

// TestPackedBatchInvariant: a packed model gives every sequence the same
// logits, bit for bit, whether it runs alone or batched with others.
func TestPackedBatchInvariant(t *testing.T) {
	for _, method := range []string{"q4_0", "q8_0", "bf16"} {
		f, err := gguf.Open(convertTo(t, "stories260k", method, convert.Options{}))
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := infer.LoadGGUF(f)
		if err != nil {
			t.Fatal(err)
		}
		r := infer.NewRunner(m)
		prompts := [][]int{{1, 403, 407, 261, 378}, {1, 66}, {1, 351, 352, 353, 354, 355, 356}}
		steps := make([]infer.Step, len(prompts))
		for i, p := range prompts {
			steps[i] = infer.Step{Cache: infer.NewKVCache(&m.Config), Tokens: p}
		}
		batched, err := r.Forward(steps)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range prompts {
			alone, err := r.Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: p}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(alone[0][0], batched[i][0]) {
				t.Errorf("%s: prompt %d: batched logits differ from the same prompt alone", method, i)
			}
		}
		f.Close()
	}
}
