package infer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/x448/float16"

	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/infer/tokenizer"
)

// Limits on dimensions read from a GGUF file, far above any real Llama and
// low enough that shape arithmetic cannot overflow.
const (
	maxGGUFDim    = 1 << 20
	maxGGUFLayers = 1 << 12
	maxGGUFVocab  = 1 << 24
)

// LoadGGUF builds a model and its tokenizer from a GGUF file written by
// qllama's converter (or a llama.cpp Llama file of the types the runtime
// knows). Tensors of ggml row types are used in place from the file's memory
// mapping (Q and K rows are un-permuted back to the Hugging Face layout,
// which copies those two tensors); qllama component formats are rebuilt as
// their quant structs. The file must stay open while the model is used.
func LoadGGUF(f *gguf.File) (*Model, *tokenizer.Tokenizer, error) {
	cfg, err := GGUFConfig(f)
	if err != nil {
		return nil, nil, err
	}
	tok, err := GGUFTokenizer(f)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := f.KV(gguf.KeyQllamaConfigBOS); !ok {
		cfg.BOS = tok.BOS()
	}
	if _, ok := f.KV(gguf.KeyQllamaConfigEOS); !ok {
		cfg.EOS = tok.EOS()
	}
	if tok.VocabSize() > cfg.Vocab {
		return nil, nil, ggufErr(f, "tokenizer has %d tokens but the model's vocabulary is %d", tok.VocabSize(), cfg.Vocab)
	}
	l := &ggufLoader{f: f}
	m := &Model{Config: cfg}
	c := &m.Config
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	embed := l.weight("token_embd.weight", c.Vocab, c.Dim, 0)
	if embed != nil {
		m.Embed = embed
	}
	lin := func(name string, rows, cols, heads int) Linear {
		if w := l.weight(name, rows, cols, heads); w != nil {
			return w
		}
		return nil
	}
	m.Layers = make([]Layer, c.Layers)
	for i := range m.Layers {
		n := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		m.Layers[i] = Layer{
			AttnNorm: l.vector(n("attn_norm"), c.Dim),
			Q:        lin(n("attn_q"), q, c.Dim, c.Heads),
			K:        lin(n("attn_k"), kv, c.Dim, c.KVHeads),
			V:        lin(n("attn_v"), kv, c.Dim, 0),
			O:        lin(n("attn_output"), c.Dim, q, 0),
			FFNNorm:  l.vector(n("ffn_norm"), c.Dim),
			Gate:     lin(n("ffn_gate"), c.FFNDim, c.Dim, 0),
			Up:       lin(n("ffn_up"), c.FFNDim, c.Dim, 0),
			Down:     lin(n("ffn_down"), c.Dim, c.FFNDim, 0),
		}
	}
	m.Norm = l.vector("output_norm.weight", c.Dim)
	if l.has("output.weight") {
		m.Output = lin("output.weight", c.Vocab, c.Dim, 0)
	} else if embed != nil {
		m.Output = embed // tied: llama.cpp omits output.weight
	}
	if err := errors.Join(l.errs...); err != nil {
		return nil, nil, err
	}
	if err := m.Check(); err != nil {
		return nil, nil, ggufErr(f, "%w", err)
	}
	return m, tok, nil
}

// ggufErr formats an error naming the file.
func ggufErr(f *gguf.File, format string, args ...any) error {
	p := f.Path()
	if p == "" {
		p = "GGUF file"
	}
	return fmt.Errorf("%s: "+format, append([]any{p}, args...)...)
}

// GGUFConfig reads the runtime configuration from a file's llama.* keys (and
// qllama.rope.* / qllama.config.* where present, which make RopeInvFreq,
// BOS and EOS identical to the source Hugging Face config's). Llama 3 RoPE
// factors come from rope_freqs.weight when the qllama keys are absent.
func GGUFConfig(f *gguf.File) (Config, error) {
	var c Config
	if a, err := f.String(gguf.KeyGeneralArchitecture); err != nil || a != gguf.Architecture {
		return c, ggufErr(f, "general.architecture is %q, want %q", a, gguf.Architecture)
	}
	var errs []error
	dim := func(key string, def, limit int) int {
		v, err := f.Uint(key)
		if errors.Is(err, gguf.ErrKeyNotFound) && def >= 0 {
			return def
		}
		if err != nil {
			errs = append(errs, err)
			return 0
		}
		if v == 0 || v > uint64(limit) {
			errs = append(errs, ggufErr(f, "%s = %d, want 1..%d", key, v, limit))
			return 0
		}
		return int(v)
	}
	c.Dim = dim(gguf.KeyEmbeddingLength, -1, maxGGUFDim)
	c.FFNDim = dim(gguf.KeyFeedForwardLength, -1, maxGGUFDim)
	c.Layers = dim(gguf.KeyBlockCount, -1, maxGGUFLayers)
	c.Heads = dim(gguf.KeyHeadCount, -1, maxGGUFDim)
	c.KVHeads = dim(gguf.KeyHeadCountKV, c.Heads, maxGGUFDim)
	c.MaxSeq = dim(gguf.KeyContextLength, 2048, math.MaxInt32)
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	c.HeadDim = dim(gguf.KeyKeyLength, c.Dim/c.Heads, maxGGUFDim)
	if v, ok := f.KV(gguf.KeyValueLength); ok && v != nil {
		if vl := dim(gguf.KeyValueLength, 0, maxGGUFDim); vl != c.HeadDim && vl != 0 {
			errs = append(errs, ggufErr(f, "value_length %d differs from key_length %d", vl, c.HeadDim))
		}
	}
	vocab := 0
	if toks, err := f.Strings(gguf.KeyTokenizerTokens); err == nil {
		vocab = len(toks)
	}
	if ti, ok := f.Tensor("token_embd.weight"); ok && len(ti.Shape) == 2 {
		vocab = int(ti.Shape[0])
	} else if s, err := int64s(f, gguf.TensorKey("token_embd.weight", "shape")); err == nil && len(s) == 2 {
		vocab = int(min(max(s[0], 0), maxGGUFVocab+1))
	}
	c.Vocab = dim(gguf.KeyVocabSize, vocab, maxGGUFVocab)
	eps, err := f.Float(gguf.KeyLayerNormRMSEpsilon)
	if err != nil {
		errs = append(errs, err)
	}
	c.NormEps = float32(eps)
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.RopeInvFreq, err = ggufRope(f, c.HeadDim); err != nil {
		return c, err
	}
	c.BOS = -1
	if v, err := f.Int32(gguf.KeyQllamaConfigBOS); err == nil {
		c.BOS = int(v)
	}
	if v, err := f.Int32s(gguf.KeyQllamaConfigEOS); err == nil {
		for _, id := range v {
			c.EOS = append(c.EOS, int(id))
		}
	}
	if err := c.Validate(); err != nil {
		return c, ggufErr(f, "%w", err)
	}
	return c, nil
}

// ggufRope computes the rotary inverse frequencies exactly as
// hf.Config.RopeInvFreq does for the source config.
func ggufRope(f *gguf.File, headDim int) ([]float64, error) {
	hc := hf.Config{HeadDim: headDim, RopeTheta: 10000}
	if v, err := f.Float64(gguf.KeyQllamaRopeTheta); err == nil {
		hc.RopeTheta = v
	} else if v, err := f.Float(gguf.KeyRopeFreqBase); err == nil {
		hc.RopeTheta = v
	}
	if !(hc.RopeTheta > 1) || math.IsInf(hc.RopeTheta, 0) {
		return nil, ggufErr(f, "rope freq_base %g, want a finite value above 1", hc.RopeTheta)
	}
	plain := hc.RopeInvFreq()
	if typ, err := f.String(gguf.KeyQllamaRopeScalingType); err == nil {
		s := &hf.RopeScaling{Type: typ}
		var errs []error
		get := func(key string) float64 {
			v, err := f.Float64(key)
			errs = append(errs, err)
			return v
		}
		s.Factor = get(gguf.KeyQllamaRopeFactor)
		if typ == hf.RopeLlama3 {
			s.LowFreqFactor, s.HighFreqFactor = get(gguf.KeyQllamaRopeLowFreq), get(gguf.KeyQllamaRopeHighFreq)
			orig, err := f.Uint(gguf.KeyQllamaRopeOrigCtx)
			errs = append(errs, err)
			s.OriginalMaxPositionEmbeddings = int(orig)
		} else if typ != hf.RopeLinear {
			errs = append(errs, ggufErr(f, "%s %q: want linear or llama3", gguf.KeyQllamaRopeScalingType, typ))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		hc.RopeScaling = s
	} else if typ, err := f.String(gguf.KeyQllamaRopeScalingType); err == nil && typ == "linear" {
		factor, err := f.Float(gguf.KeyRopeScalingFactor)
		if err != nil {
			return nil, err
		}
		hc.RopeScaling = &hf.RopeScaling{Type: hf.RopeLinear, Factor: factor}
	} else if err == nil && typ != "none" {
		return nil, ggufErr(f, "%s %q is not supported", gguf.KeyQllamaRopeScalingType, typ)
	}
	inv := hc.RopeInvFreq()
	if _, ok := f.Tensor(gguf.TensorRopeFreqs); !ok {
		return inv, nil
	}
	factors, err := ggufFloats(f, gguf.TensorRopeFreqs, headDim/2)
	if err != nil {
		return nil, err
	}
	for i, fac := range factors {
		want := plain[i] / float64(fac)
		if hc.RopeScaling == nil {
			inv[i] = want
		} else if math.Abs(want-inv[i]) > 1e-6*inv[i] {
			return nil, ggufErr(f, "%s[%d] = %g disagrees with the %s rope scaling keys", gguf.TensorRopeFreqs, i, fac, gguf.KeyQllamaRopeScalingType)
		}
	}
	return inv, nil
}

// int64s returns the array of int64 under key.
func int64s(f *gguf.File, key string) ([]int64, error) {
	v, ok := f.KV(key)
	if !ok {
		return nil, ggufErr(f, "metadata key %q: %w", key, gguf.ErrKeyNotFound)
	}
	a, ok := v.([]int64)
	if !ok {
		return nil, ggufErr(f, "metadata key %q holds %T, want an array of int64", key, v)
	}
	return a, nil
}

// ggufFloats decodes a 1-D tensor of n values of any row type to float32.
func ggufFloats(f *gguf.File, name string, n int) ([]float32, error) {
	ti, ok := f.Tensor(name)
	if !ok {
		return nil, ggufErr(f, "tensor %q missing", name)
	}
	if len(ti.Shape) != 1 || ti.Shape[0] != int64(n) {
		return nil, ggufErr(f, "tensor %q has shape %v, want [%d]", name, ti.Shape, n)
	}
	t, err := quant.ByGGUFType(quant.GGUFType(ti.Type))
	if err != nil {
		return nil, ggufErr(f, "tensor %q has type %s: %w", name, ti.Type, err)
	}
	data, err := f.TensorData(name)
	if err != nil {
		return nil, err
	}
	if err := t.Validate(data); err != nil {
		return nil, ggufErr(f, "tensor %q: %w", name, err)
	}
	out := make([]float32, n)
	if err := t.Dequantize(out, data); err != nil {
		return nil, ggufErr(f, "tensor %q: %w", name, err)
	}
	return out, nil
}

// GGUFTokenizer rebuilds the tokenizer embedded in a file's tokenizer.ggml.*
// keys, with the qllama.tokenizer.* keys that make it identical to the
// source tokenizer.json's.
func GGUFTokenizer(f *gguf.File) (*tokenizer.Tokenizer, error) {
	model, err := f.String(gguf.KeyTokenizerModel)
	if err != nil {
		return nil, ggufErr(f, "no embedded tokenizer: %w", err)
	}
	var p tokenizer.Parts
	pre, _ := f.String(gguf.KeyTokenizerPre)
	switch model {
	case gguf.TokenizerModelGPT2:
		p.Kind = tokenizer.KindByteLevel
		switch pre {
		case gguf.TokenizerPreLlama3, "llama3", "":
			p.IgnoreMerges = true
		case "gpt-2", gguf.TokenizerPreDefault:
			p.Pattern = tokenizer.GPT2Pattern
		default:
			if _, ok := f.KV(gguf.KeyQllamaTokenizerPattern); !ok {
				return nil, ggufErr(f, "tokenizer.ggml.pre %q is not supported", pre)
			}
		}
	case gguf.TokenizerModelLlama:
		p.Kind = tokenizer.KindSentencePiece
	default:
		return nil, ggufErr(f, "tokenizer.ggml.model %q is not supported (want gpt2 or llama)", model)
	}
	if p.Tokens, err = f.Strings(gguf.KeyTokenizerTokens); err != nil {
		return nil, err
	}
	n := len(p.Tokens)
	if v, err := f.Uint(gguf.KeyQllamaTokenizerCount); err == nil {
		if v == 0 || v > uint64(n) {
			return nil, ggufErr(f, "%s = %d with %d tokens", gguf.KeyQllamaTokenizerCount, v, n)
		}
		n = int(v)
	}
	p.Tokens = p.Tokens[:n]
	if types, err := f.Int32s(gguf.KeyTokenizerTokenType); err == nil {
		if len(types) < n {
			return nil, ggufErr(f, "%d token types for %d tokens", len(types), n)
		}
		for _, t := range types[:n] {
			p.TokenTypes = append(p.TokenTypes, tokenizer.TokenType(t))
		}
	}
	if s, err := f.Float32s(gguf.KeyTokenizerScores); err == nil {
		if len(s) < n {
			return nil, ggufErr(f, "%d token scores for %d tokens", len(s), n)
		}
		p.Scores = s[:n]
	}
	if _, ok := f.KV(gguf.KeyTokenizerMerges); ok {
		if p.Merges, err = f.Strings(gguf.KeyTokenizerMerges); err != nil {
			return nil, err
		}
	}
	p.BOS = -1
	if v, err := f.Uint(gguf.KeyTokenizerBOS); err == nil {
		p.BOS = int(min(v, math.MaxInt32))
	}
	if v, err := f.Int32s(gguf.KeyQllamaTokenizerEOSList); err == nil {
		for _, id := range v {
			p.EOS = append(p.EOS, int(id))
		}
	} else if v, err := f.Uint(gguf.KeyTokenizerEOS); err == nil {
		p.EOS = []int{int(min(v, math.MaxInt32))}
	}
	for _, id := range p.EOS {
		if id < 0 || id >= n {
			return nil, ggufErr(f, "EOS id %d outside the %d tokens", id, n)
		}
	}
	p.AddBOS = p.BOS >= 0
	if v, err := f.Bool(gguf.KeyTokenizerAddBOS); err == nil {
		p.AddBOS = v
	}
	if v, err := f.Bool(gguf.KeyTokenizerAddEOS); err == nil {
		p.AddEOS = v
	}
	if v, err := f.String(gguf.KeyQllamaTokenizerPattern); err == nil {
		p.Pattern = v
	}
	if v, err := f.Bool(gguf.KeyQllamaTokenizerIgnore); err == nil {
		p.IgnoreMerges = v
	}
	tok, err := tokenizer.FromParts(p)
	if err != nil {
		return nil, ggufErr(f, "embedded tokenizer: %w", err)
	}
	return tok, nil
}

// ggufLoader collects errors while building the model.
type ggufLoader struct {
	f    *gguf.File
	errs []error
}

func (l *ggufLoader) fail(err error) { l.errs = append(l.errs, err) }

func (l *ggufLoader) has(name string) bool {
	if _, ok := l.f.Tensor(name); ok {
		return true
	}
	_, ok := l.f.KV(gguf.TensorKey(name, "format"))
	return ok
}

func (l *ggufLoader) vector(name string, n int) []float32 {
	v, err := ggufFloats(l.f, name, n)
	if err != nil {
		l.fail(err)
	}
	return v
}

// Weight is a loaded matrix that serves both as Linear and as Embedding.
type Weight interface {
	Linear
	Embedding
}

// weight loads a [rows, cols] matrix; heads > 0 un-permutes Q/K rows.
func (l *ggufLoader) weight(name string, rows, cols, heads int) Weight {
	w, err := l.load(name, rows, cols, heads)
	if err != nil {
		l.fail(err)
		return nil
	}
	return w
}

func (l *ggufLoader) load(name string, rows, cols, heads int) (Weight, error) {
	f := l.f
	if ti, ok := f.Tensor(name); ok {
		if !slices.Equal(ti.Shape, []int64{int64(rows), int64(cols)}) {
			return nil, ggufErr(f, "tensor %q has shape %v, the config implies [%d %d]", name, ti.Shape, rows, cols)
		}
		t, err := quant.ByGGUFType(quant.GGUFType(ti.Type))
		if err != nil {
			return nil, ggufErr(f, "tensor %q has type %s, which the runtime cannot run: %w", name, ti.Type, err)
		}
		data, err := f.TensorData(name)
		if err != nil {
			return nil, err
		}
		if err := t.Validate(data); err != nil {
			return nil, ggufErr(f, "tensor %q: %w", name, err)
		}
		if heads > 0 {
			rb, _ := t.RowBytes(cols)
			if data, err = gguf.UnpermuteQK(data, rb, heads); err != nil {
				return nil, ggufErr(f, "tensor %q: %w", name, err)
			}
		}
		p, err := NewPacked(t, data, rows, cols)
		if err != nil {
			return nil, ggufErr(f, "tensor %q: %w", name, err)
		}
		return p, nil
	}
	format, err := f.String(gguf.TensorKey(name, "format"))
	if errors.Is(err, gguf.ErrKeyNotFound) {
		return nil, ggufErr(f, "tensor %q missing", name)
	}
	if err != nil {
		return nil, err
	}
	c := &components{f: f, name: name, rows: rows, cols: cols}
	shape, err := int64s(f, gguf.TensorKey(name, "shape"))
	if err != nil {
		return nil, err
	}
	if !slices.Equal(shape, []int64{int64(rows), int64(cols)}) {
		return nil, ggufErr(f, "%s = %v, the config implies [%d %d]", gguf.TensorKey(name, "shape"), shape, rows, cols)
	}
	var q quant.Tensor
	switch format {
	case gguf.FormatInt8:
		q, err = c.int8(heads)
	case gguf.FormatNF4, gguf.FormatFP4:
		q, err = c.bnb4(format, heads)
	case gguf.StoredInt:
		q, err = c.grouped(heads)
	default:
		return nil, ggufErr(f, "%s = %q: unknown scheme", gguf.TensorKey(name, "format"), format)
	}
	if err != nil {
		return nil, err
	}
	return newQuantWeight(q)
}

// components reads the component tensors of one qllama.* weight.
type components struct {
	f          *gguf.File
	name       string
	rows, cols int
}

func (c *components) key(field string) string { return gguf.TensorKey(c.name, field) }

func (c *components) uint(field string) (int, error) {
	v, err := c.f.Uint(c.key(field))
	if err != nil {
		return 0, err
	}
	if v > maxGGUFDim {
		return 0, ggufErr(c.f, "%s = %d is too large", c.key(field), v)
	}
	return int(v), nil
}

// raw returns the bytes of component sfx, checking its type and shape.
func (c *components) raw(sfx string, typ gguf.Type, shape ...int64) ([]byte, error) {
	name := c.name + sfx
	ti, ok := c.f.Tensor(name)
	if !ok {
		return nil, ggufErr(c.f, "component tensor %q missing", name)
	}
	if ti.Type != typ || !slices.Equal(ti.Shape, shape) {
		return nil, ggufErr(c.f, "component tensor %q is %s %v, want %s %v", name, ti.Type, ti.Shape, typ, shape)
	}
	return c.f.TensorData(name)
}

func (c *components) f32(sfx string, shape ...int64) ([]float32, error) {
	b, err := c.raw(sfx, gguf.TypeF32, shape...)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// unpermute undoes the Q/K row permutation of rows of rowLen elements.
func unpermute[T any](c *components, v []T, rowLen, heads int) ([]T, error) {
	if heads <= 0 {
		return v, nil
	}
	out, err := gguf.UnpermuteQK(v, rowLen, heads)
	if err != nil {
		return nil, ggufErr(c.f, "tensor %q: %w", c.name, err)
	}
	return out, nil
}

func (c *components) int8(heads int) (*quant.Int8, error) {
	r, k := int64(c.rows), int64(c.cols)
	codes, err := c.raw(".codes", gguf.TypeI8, r, k)
	if err != nil {
		return nil, err
	}
	absmax, err := c.f32(".absmax", r)
	if err != nil {
		return nil, err
	}
	if codes, err = unpermute(c, codes, c.cols, heads); err != nil {
		return nil, err
	}
	if absmax, err = unpermute(c, absmax, 1, heads); err != nil {
		return nil, err
	}
	return &quant.Int8{Rows: c.rows, Cols: c.cols, Codes: asInt8(codes), Absmax: absmax}, nil
}

// asInt8 views bytes as int8 without copying (same size and alignment).
func asInt8(b []byte) []int8 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*int8)(unsafe.Pointer(&b[0])), len(b))
}

func (c *components) bnb4(format string, heads int) (*quant.Bnb4, error) {
	typ := quant.NF4
	if format == gguf.FormatFP4 {
		typ = quant.FP4
	}
	gs, err := c.uint("group_size")
	if err != nil {
		return nil, err
	}
	if gs < 32 || gs&(gs-1) != 0 || c.cols%gs != 0 || c.cols%2 != 0 {
		return nil, ggufErr(c.f, "%s = %d does not divide %d columns into power-of-two blocks", c.key("group_size"), gs, c.cols)
	}
	if bits, err := c.uint("bits"); err != nil || bits != 4 {
		return nil, ggufErr(c.f, "%s: want 4 bits (%d, %v)", c.key("bits"), bits, err)
	}
	cb, err := c.f.Float32s(c.key("codebook"))
	if err != nil {
		return nil, err
	}
	if want := quant.Codebook(typ); !slices.Equal(cb, want[:]) {
		return nil, ggufErr(c.f, "%s differs from bitsandbytes' %s codebook; other codebooks are not supported", c.key("codebook"), format)
	}
	r, k, nb := int64(c.rows), int64(c.cols), int64(c.cols/gs)
	packed, err := c.raw(".codes", gguf.TypeI8, r, k/2)
	if err != nil {
		return nil, err
	}
	q := &quant.Bnb4{Type: typ, Rows: c.rows, Cols: c.cols, BlockSize: gs, Packed: packed}
	dq, _ := c.f.Bool(c.key("double_quant"))
	if !dq {
		if q.Absmax, err = c.f32(".absmax", r, nb); err != nil {
			return nil, err
		}
	} else {
		if g, err := c.uint("double_quant_group_size"); err != nil || g != quant.NestedBlockSize {
			return nil, ggufErr(c.f, "%s: want %d (%d, %v)", c.key("double_quant_group_size"), quant.NestedBlockSize, g, err)
		}
		n := &quant.NestedAbsmax{}
		if n.Codes, err = c.raw(".absmax", gguf.TypeI8, r, nb); err != nil {
			return nil, err
		}
		if n.Absmax, err = c.f32(".absmax.scales", (r*nb+quant.NestedBlockSize-1)/quant.NestedBlockSize); err != nil {
			return nil, err
		}
		off, err := c.f32(".absmax.offset", 1)
		if err != nil {
			return nil, err
		}
		n.Offset = off[0]
		m, err := c.f32(".absmax.codebook", 256)
		if err != nil {
			return nil, err
		}
		copy(n.Map[:], m)
		q.Nested = n
	}
	if heads > 0 {
		// Nested absmax groups run across rows in the stored (permuted)
		// order: decode them, then move whole rows.
		am, err := q.BlockAbsmax()
		if err != nil {
			return nil, ggufErr(c.f, "tensor %q: %w", c.name, err)
		}
		q.Nested = nil
		if q.Absmax, err = unpermute(c, am, int(nb), heads); err != nil {
			return nil, err
		}
		if q.Packed, err = unpermute(c, packed, c.cols/2, heads); err != nil {
			return nil, err
		}
	}
	return q, nil
}

func (c *components) grouped(heads int) (*quant.Grouped, error) {
	bits, err := c.uint("bits")
	if err != nil {
		return nil, err
	}
	gs, err := c.uint("group_size")
	if err != nil {
		return nil, err
	}
	sym, err := c.f.Bool(c.key("symmetric"))
	if err != nil {
		return nil, err
	}
	if bits < 2 || bits > 8 {
		return nil, ggufErr(c.f, "%s = %d, want 2..8", c.key("bits"), bits)
	}
	g := &quant.Grouped{Bits: bits, GroupSize: gs, Sym: sym, Rows: c.rows, Cols: c.cols}
	ng := g.NumGroups()
	r := int64(c.rows)
	rb := (c.cols*bits + 7) / 8
	packed, err := c.raw(".codes", gguf.TypeI8, r, int64(rb))
	if err != nil {
		return nil, err
	}
	g.Codes = make([]uint8, c.rows*c.cols)
	mask := uint64(1)<<bits - 1
	for row := 0; row < c.rows; row++ {
		src, dst := packed[row*rb:(row+1)*rb], g.Codes[row*c.cols:(row+1)*c.cols]
		var acc uint64
		n, o := 0, 0
		for j := range dst {
			for n < bits {
				acc |= uint64(src[o]) << n
				o++
				n += 8
			}
			dst[j] = uint8(acc & mask)
			acc >>= bits
			n -= bits
		}
	}
	if g.Scales, err = c.f32(".scales", r, int64(ng)); err != nil {
		return nil, err
	}
	g.Zeros = make([]uint8, c.rows*ng)
	if sym {
		for i := range g.Zeros {
			g.Zeros[i] = uint8(1 << (bits - 1))
		}
	} else {
		zb, err := c.raw(".zeros", gguf.TypeF16, r, int64(ng))
		if err != nil {
			return nil, err
		}
		for i := range g.Zeros {
			z := float16.Frombits(binary.LittleEndian.Uint16(zb[2*i:])).Float32()
			if z != float32(int(z)) || z < 0 || z >= float32(int(1)<<bits) {
				return nil, ggufErr(c.f, "tensor %q.zeros[%d] = %g is not a %d-bit code", c.name, i, z, bits)
			}
			g.Zeros[i] = uint8(z)
		}
	}
	if g.Codes, err = unpermute(c, g.Codes, c.cols, heads); err != nil {
		return nil, err
	}
	if g.Scales, err = unpermute(c, g.Scales, ng, heads); err != nil {
		return nil, err
	}
	if g.Zeros, err = unpermute(c, g.Zeros, ng, heads); err != nil {
		return nil, err
	}
	return g, nil
}

// quantWeight is a whole-tensor quantized matrix usable as Linear (through
// DotRow) and as Embedding (rows decoded exactly as quant's Dequantize).
type quantWeight struct {
	*TensorLinear
	row func(dst []float32, i int)
}

func newQuantWeight(q quant.Tensor) (*quantWeight, error) {
	tl, err := NewTensorLinear(q)
	if err != nil {
		return nil, err
	}
	w := &quantWeight{TensorLinear: tl}
	switch t := q.(type) {
	case *quant.Int8:
		// quant's dequantization is (code*absmax)*float32(1/127); read the
		// constant back through it rather than restating it.
		one, _ := (&quant.Int8{Rows: 1, Cols: 1, Codes: []int8{1}, Absmax: []float32{1}}).Dequantize()
		recip := one[0]
		w.row = func(dst []float32, i int) {
			a := t.Absmax[i]
			for j, c := range t.Codes[i*t.Cols : (i+1)*t.Cols] {
				dst[j] = float32(float32(c)*a) * recip
			}
		}
	case *quant.Bnb4:
		am, err := t.BlockAbsmax()
		if err != nil {
			return nil, err
		}
		lut := quant.Codebook(t.Type)
		w.row = func(dst []float32, i int) {
			base := i * t.Cols
			for j := range dst[:t.Cols] {
				e := base + j
				c := t.Packed[e/2] >> 4
				if e%2 == 1 {
					c = t.Packed[e/2] & 15
				}
				dst[j] = lut[c] * am[e/t.BlockSize]
			}
		}
	case *quant.Grouped:
		ng := t.NumGroups()
		w.row = func(dst []float32, i int) {
			for j, c := range t.Codes[i*t.Cols : (i+1)*t.Cols] {
				k := 0
				if t.GIdx != nil {
					k = int(t.GIdx[j])
				} else if t.GroupSize > 0 {
					k = j / t.GroupSize
				}
				k += i * ng
				dst[j] = t.Scales[k] * float32(int(c)-int(t.Zeros[k]))
			}
		}
	default:
		return nil, fmt.Errorf("quantized tensor %T has no row decoder", q)
	}
	return w, nil
}

// Row implements Embedding.
func (w *quantWeight) Row(dst []float32, i int) { w.row(dst, i) }
