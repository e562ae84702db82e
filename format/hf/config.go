package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"qllama/format/safetensors"
)

// ErrUnsupported is wrapped by errors about models, options or dtypes this
// toolchain does not implement. It is the same value as
// safetensors.ErrUnsupported, so one errors.Is check covers both packages.
var ErrUnsupported = safetensors.ErrUnsupported

// Limits on config dimensions: far above any real Llama, low enough that
// shape and parameter arithmetic cannot overflow int64.
const (
	maxDim    = 1 << 20 // hidden, intermediate, heads×head_dim
	maxVocab  = 1 << 24
	maxLayers = 1 << 12
)

// Rope scaling types accepted by [ParseConfig].
const (
	RopeLinear = "linear"
	RopeLlama3 = "llama3"
)

// RopeScaling is config.json's rope_scaling (or transformers 5's
// rope_parameters) for a non-default rope type.
type RopeScaling struct {
	Type                          string  // RopeLinear or RopeLlama3
	Factor                        float64 // both types
	LowFreqFactor                 float64 // llama3
	HighFreqFactor                float64 // llama3
	OriginalMaxPositionEmbeddings int     // llama3
}

// Config is a Llama config.json with defaults applied and validated.
type Config struct {
	Architectures []string
	ModelType     string

	HiddenSize            int
	IntermediateSize      int
	NumHiddenLayers       int
	NumAttentionHeads     int
	NumKeyValueHeads      int // default NumAttentionHeads
	HeadDim               int // default HiddenSize / NumAttentionHeads
	VocabSize             int
	MaxPositionEmbeddings int // default 2048

	RMSNormEps float64 // default 1e-6
	RopeTheta  float64 // default 10000

	// RopeScaling is nil for plain RoPE (rope_scaling null, absent or of
	// type "default").
	RopeScaling *RopeScaling

	TieWordEmbeddings bool // default false

	// BOSTokenID is -1 when bos_token_id is null; default 1 when absent.
	BOSTokenID int
	// EOSTokenIDs holds eos_token_id, given as an int or a list; empty when
	// null; default [2] when absent.
	EOSTokenIDs []int

	HiddenAct     string // must be "silu"
	TorchDType    string // torch_dtype, or dtype (transformers 5); "" if absent
	AttentionBias bool   // must be false
	MLPBias       bool   // must be false
}

// rawConfig mirrors config.json; pointers tell absent from zero.
type rawConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             *string         `json:"model_type"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	VocabSize             *int            `json:"vocab_size"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	HiddenAct             *string         `json:"hidden_act"`
	TorchDType            *string         `json:"torch_dtype"`
	DType                 *string         `json:"dtype"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
}

// rawRope mirrors rope_scaling / rope_parameters.
type rawRope struct {
	RopeType                      *string  `json:"rope_type"`
	Type                          *string  `json:"type"`
	RopeTheta                     *float64 `json:"rope_theta"`
	Factor                        *float64 `json:"factor"`
	LowFreqFactor                 *float64 `json:"low_freq_factor"`
	HighFreqFactor                *float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings *float64 `json:"original_max_position_embeddings"`
}

// ParseConfig parses a Llama config.json. Absent optional fields take
// transformers' LlamaConfig defaults (see [Config]); hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads and vocab_size are
// required. Non-Llama models, activations other than silu, biases and rope
// types other than default, linear and llama3 give errors wrapping
// [ErrUnsupported].
func ParseConfig(data []byte) (*Config, error) {
	var r rawConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("invalid config JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid config JSON: trailing data after the object")
	}
	c := &Config{Architectures: r.Architectures}

	// Architecture.
	if r.ModelType != nil {
		c.ModelType = *r.ModelType
	}
	switch {
	case c.ModelType != "" && c.ModelType != "llama":
		return nil, fmt.Errorf("model_type %q: only llama models are supported: %w", c.ModelType, ErrUnsupported)
	case len(c.Architectures) > 0 && c.Architectures[0] != "LlamaForCausalLM":
		return nil, fmt.Errorf("architectures %q: only LlamaForCausalLM is supported: %w", c.Architectures, ErrUnsupported)
	case c.ModelType == "" && len(c.Architectures) == 0:
		return nil, fmt.Errorf("neither model_type nor architectures identifies a llama model: %w", ErrUnsupported)
	}

	// Dimensions.
	dims := []struct {
		name     string
		v        *int
		dst      *int
		def, max int // def 0: required
	}{
		{"hidden_size", r.HiddenSize, &c.HiddenSize, 0, maxDim},
		{"intermediate_size", r.IntermediateSize, &c.IntermediateSize, 0, maxDim},
		{"num_hidden_layers", r.NumHiddenLayers, &c.NumHiddenLayers, 0, maxLayers},
		{"num_attention_heads", r.NumAttentionHeads, &c.NumAttentionHeads, 0, maxDim},
		{"vocab_size", r.VocabSize, &c.VocabSize, 0, maxVocab},
		{"max_position_embeddings", r.MaxPositionEmbeddings, &c.MaxPositionEmbeddings, 2048, math.MaxInt32},
	}
	for _, d := range dims {
		switch {
		case d.v == nil && d.def == 0:
			return nil, fmt.Errorf("%s missing", d.name)
		case d.v == nil:
			*d.dst = d.def
		case *d.v <= 0 || *d.v > d.max:
			return nil, fmt.Errorf("%s = %d, want a positive value at most %d", d.name, *d.v, d.max)
		default:
			*d.dst = *d.v
		}
	}
	c.NumKeyValueHeads = c.NumAttentionHeads
	if r.NumKeyValueHeads != nil {
		c.NumKeyValueHeads = *r.NumKeyValueHeads
	}
	if c.NumKeyValueHeads <= 0 || c.NumKeyValueHeads > c.NumAttentionHeads || c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return nil, fmt.Errorf("num_key_value_heads = %d must be positive and divide num_attention_heads = %d",
			c.NumKeyValueHeads, c.NumAttentionHeads)
	}
	if r.HeadDim != nil {
		c.HeadDim = *r.HeadDim
	} else {
		if c.HiddenSize%c.NumAttentionHeads != 0 {
			return nil, fmt.Errorf("head_dim missing and hidden_size = %d is not a multiple of num_attention_heads = %d",
				c.HiddenSize, c.NumAttentionHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.HeadDim > maxDim/c.NumAttentionHeads {
		return nil, fmt.Errorf("head_dim = %d must be positive, even and at most %d per head", c.HeadDim, maxDim/c.NumAttentionHeads)
	}

	// Norm and RoPE.
	c.RMSNormEps = 1e-6
	if r.RMSNormEps != nil {
		c.RMSNormEps = *r.RMSNormEps
	}
	if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		return nil, fmt.Errorf("rms_norm_eps = %g, want a value in (0, 1)", c.RMSNormEps)
	}
	rope, ropeKey, err := parseRope(r.RopeScaling, r.RopeParameters)
	if err != nil {
		return nil, err
	}
	c.RopeTheta = 10000
	switch {
	case r.RopeTheta != nil:
		c.RopeTheta = *r.RopeTheta
	case rope != nil && rope.RopeTheta != nil:
		c.RopeTheta = *rope.RopeTheta
	}
	if !(c.RopeTheta > 1) || math.IsInf(c.RopeTheta, 0) {
		return nil, fmt.Errorf("rope_theta = %g, want a finite value above 1", c.RopeTheta)
	}
	if c.RopeScaling, err = ropeScaling(rope, ropeKey); err != nil {
		return nil, err
	}

	// Flags and tokens.
	if r.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *r.TieWordEmbeddings
	}
	c.HiddenAct = "silu"
	if r.HiddenAct != nil {
		c.HiddenAct = *r.HiddenAct
	}
	if c.HiddenAct != "silu" {
		return nil, fmt.Errorf("hidden_act %q: only silu is supported: %w", c.HiddenAct, ErrUnsupported)
	}
	if r.AttentionBias != nil && *r.AttentionBias {
		return nil, fmt.Errorf("attention_bias true: %w", ErrUnsupported)
	}
	if r.MLPBias != nil && *r.MLPBias {
		return nil, fmt.Errorf("mlp_bias true: %w", ErrUnsupported)
	}
	switch {
	case r.TorchDType != nil:
		c.TorchDType = *r.TorchDType
	case r.DType != nil:
		c.TorchDType = *r.DType
	}
	if c.BOSTokenID, err = parseBOS(r.BOSTokenID, 1); err != nil {
		return nil, err
	}
	if c.EOSTokenIDs, err = parseEOS(r.EOSTokenID, []int{2}); err != nil {
		return nil, err
	}
	return c, nil
}

// parseRope decodes rope_scaling, or else rope_parameters; nil if neither is
// set. It returns the key it read, for errors.
func parseRope(scaling, params json.RawMessage) (*rawRope, string, error) {
	raw, key := scaling, "rope_scaling"
	if isNull(raw) {
		raw, key = params, "rope_parameters"
	}
	if isNull(raw) {
		return nil, "", nil
	}
	var rr rawRope
	if err := json.Unmarshal(raw, &rr); err != nil {
		return nil, key, fmt.Errorf("%s: %w", key, err)
	}
	return &rr, key, nil
}

// ropeScaling validates a decoded rope record; nil for plain RoPE.
func ropeScaling(rr *rawRope, key string) (*RopeScaling, error) {
	if rr == nil {
		return nil, nil
	}
	typ := ""
	switch {
	case rr.RopeType != nil:
		typ = *rr.RopeType
	case rr.Type != nil:
		typ = *rr.Type
	}
	factor := func(v *float64) (float64, error) { // transformers requires factor >= 1
		if v == nil {
			return 0, fmt.Errorf("%s (%s): factor missing", key, typ)
		}
		if !(*v >= 1) || math.IsInf(*v, 0) {
			return 0, fmt.Errorf("%s (%s): factor = %g, want a finite value of at least 1", key, typ, *v)
		}
		return *v, nil
	}
	positive := func(name string, v *float64) (float64, error) {
		if v == nil {
			return 0, fmt.Errorf("%s (%s): %s missing", key, typ, name)
		}
		if !(*v > 0) || math.IsInf(*v, 0) {
			return 0, fmt.Errorf("%s (%s): %s = %g, want a positive finite value", key, typ, name, *v)
		}
		return *v, nil
	}
	switch typ {
	case "", "default":
		return nil, nil
	case RopeLinear:
		f, err := factor(rr.Factor)
		if err != nil {
			return nil, err
		}
		return &RopeScaling{Type: RopeLinear, Factor: f}, nil
	case RopeLlama3:
		s := &RopeScaling{Type: RopeLlama3}
		var err error
		if s.Factor, err = factor(rr.Factor); err != nil {
			return nil, err
		}
		if s.LowFreqFactor, err = positive("low_freq_factor", rr.LowFreqFactor); err != nil {
			return nil, err
		}
		if s.HighFreqFactor, err = positive("high_freq_factor", rr.HighFreqFactor); err != nil {
			return nil, err
		}
		if s.HighFreqFactor <= s.LowFreqFactor {
			return nil, fmt.Errorf("%s (llama3): high_freq_factor = %g must exceed low_freq_factor = %g", key, s.HighFreqFactor, s.LowFreqFactor)
		}
		orig, err := positive("original_max_position_embeddings", rr.OriginalMaxPositionEmbeddings)
		if err != nil {
			return nil, err
		}
		if orig != math.Trunc(orig) || orig > math.MaxInt32 {
			return nil, fmt.Errorf("%s (llama3): original_max_position_embeddings = %g, want an integer", key, orig)
		}
		s.OriginalMaxPositionEmbeddings = int(orig)
		return s, nil
	default:
		return nil, fmt.Errorf("%s type %q: only default, linear and llama3 are supported: %w", key, typ, ErrUnsupported)
	}
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// parseBOS decodes bos_token_id: def when absent, -1 when null.
func parseBOS(raw json.RawMessage, def int) (int, error) {
	if len(raw) == 0 {
		return def, nil
	}
	if isNull(raw) {
		return -1, nil
	}
	var id int
	if err := json.Unmarshal(raw, &id); err != nil || id < 0 {
		return 0, fmt.Errorf("bos_token_id %s: want a non-negative integer or null", raw)
	}
	return id, nil
}

// parseEOS decodes eos_token_id, an integer or a list of them: def when
// absent, empty when null.
func parseEOS(raw json.RawMessage, def []int) ([]int, error) {
	if len(raw) == 0 {
		return slices.Clone(def), nil
	}
	if isNull(raw) {
		return nil, nil
	}
	var ids []int
	var id int
	if err := json.Unmarshal(raw, &id); err == nil {
		ids = []int{id}
	} else if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, fmt.Errorf("eos_token_id %s: want an integer, a list of integers or null", raw)
	}
	for _, id := range ids {
		if id < 0 {
			return nil, fmt.Errorf("eos_token_id %s: negative id", raw)
		}
	}
	return ids, nil
}

// QDim returns NumAttentionHeads × HeadDim, the query projection's width.
func (c *Config) QDim() int { return c.NumAttentionHeads * c.HeadDim }

// KVDim returns NumKeyValueHeads × HeadDim, the key and value projections' width.
func (c *Config) KVDim() int { return c.NumKeyValueHeads * c.HeadDim }

// RopeInvFreq returns the RoPE inverse frequency of each dimension pair i in
// [0, HeadDim/2): theta^(-2i/HeadDim), then scaled as transformers does for the
// rope type: linear divides by the factor; llama3
// (_compute_llama3_parameters) keeps high frequencies (wavelength below
// orig/high_freq_factor), divides low ones (wavelength above
// orig/low_freq_factor) by the factor, and blends between. Computed in float64.
func (c *Config) RopeInvFreq() []float64 {
	d := c.HeadDim
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(d))
	}
	s := c.RopeScaling
	if s == nil {
		return inv
	}
	switch s.Type {
	case RopeLinear:
		for i := range inv {
			inv[i] /= s.Factor
		}
	case RopeLlama3:
		orig := float64(s.OriginalMaxPositionEmbeddings)
		lowWavelen := orig / s.LowFreqFactor
		highWavelen := orig / s.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen < highWavelen:
				// high frequency: unchanged
			case wavelen > lowWavelen:
				inv[i] = f / s.Factor
			default:
				smooth := (orig/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				inv[i] = (1-smooth)*f/s.Factor + smooth*f
			}
		}
	}
	return inv
}

// ParamCount returns the number of parameters of the model the config
// describes, counting lm_head only when embeddings are not tied.
func (c *Config) ParamCount() int64 {
	h, inter := int64(c.HiddenSize), int64(c.IntermediateSize)
	q, kv := int64(c.QDim()), int64(c.KVDim())
	layer := 2*h + // two norms
		q*h + 2*kv*h + h*q + // attention
		3*inter*h // mlp
	n := int64(c.VocabSize)*h + int64(c.NumHiddenLayers)*layer + h
	if !c.TieWordEmbeddings {
		n += int64(c.VocabSize) * h
	}
	return n
}
