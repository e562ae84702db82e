package hf

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

func readShared(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.Shared(t, elem...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stories260kConfig and randomLlama32Config are the shared models' configs as
// ParseConfig must return them.
var (
	stories260kConfig = Config{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		HiddenSize: 64, IntermediateSize: 172, NumHiddenLayers: 5, NumAttentionHeads: 8, NumKeyValueHeads: 4,
		HeadDim: 8, VocabSize: 512, MaxPositionEmbeddings: 512, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieWordEmbeddings: true, BOSTokenID: 1, EOSTokenIDs: []int{2}, HiddenAct: "silu", TorchDType: "float32",
	}
	randomLlama32Config = Config{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		HiddenSize: 64, IntermediateSize: 192, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		HeadDim: 16, VocabSize: 128256, MaxPositionEmbeddings: 131072, RMSNormEps: 1e-5, RopeTheta: 500000,
		RopeScaling:       &RopeScaling{Type: RopeLlama3, Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
		TieWordEmbeddings: true, BOSTokenID: 128000, EOSTokenIDs: []int{128001}, HiddenAct: "silu", TorchDType: "bfloat16",
	}
)

func TestParseConfigReal(t *testing.T) {
	for _, tc := range []struct {
		model  string
		want   Config
		params int64
	}{
		{"stories260k", stories260kConfig, 512*64 + 5*(2*64+64*64+2*32*64+64*64+3*172*64) + 64},
		{"random_llama32", randomLlama32Config, 128256*64 + 2*(2*64+64*64+2*32*64+64*64+3*192*64) + 64},
	} {
		t.Run(tc.model, func(t *testing.T) {
			c, err := ParseConfig(readShared(t, "models", tc.model, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *c, tc.want)
			}
			if got := c.ParamCount(); got != tc.params {
				t.Errorf("ParamCount = %d, want %d", got, tc.params)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"model_type":"llama","hidden_size":128,"intermediate_size":256,
		"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,"eos_token_id":[7,8,9],"bos_token_id":null,
		"rope_scaling":{"type":"linear","factor":2.0}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ModelType: "llama", HiddenSize: 128, IntermediateSize: 256, NumHiddenLayers: 2, NumAttentionHeads: 4,
		NumKeyValueHeads: 4, HeadDim: 32, VocabSize: 100, MaxPositionEmbeddings: 2048, RMSNormEps: 1e-6,
		RopeTheta: 10000, RopeScaling: &RopeScaling{Type: RopeLinear, Factor: 2},
		BOSTokenID: -1, EOSTokenIDs: []int{7, 8, 9}, HiddenAct: "silu",
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got  %+v\nwant %+v", *c, want)
	}
	// Absent token ids take LlamaConfig's defaults; transformers 5 keys are read.
	c, err = ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":64,
		"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10,"dtype":"bfloat16",
		"rope_parameters":{"rope_type":"default","rope_theta":123456.0}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.BOSTokenID != 1 || !reflect.DeepEqual(c.EOSTokenIDs, []int{2}) || c.TorchDType != "bfloat16" ||
		c.RopeTheta != 123456 || c.RopeScaling != nil {
		t.Errorf("got %+v", *c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := map[string]any{
		"model_type": "llama", "architectures": []string{"LlamaForCausalLM"}, "hidden_size": 64,
		"intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
		"vocab_size": 512,
	}
	with := func(kv ...any) []byte {
		m := make(map[string]any, len(base))
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return b
	}
	llama3 := map[string]any{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
	tests := []struct {
		name        string
		data        []byte
		want        string
		unsupported bool
	}{
		{"garbage", []byte("not json at all"), "invalid config JSON", false},
		{"array", []byte("[1,2]"), "invalid config JSON", false},
		{"trailing", append(with(), "{}"...), "trailing data", false},
		{"string dim", with("hidden_size", "64"), "invalid config JSON", false},
		{"mistral", with("model_type", "mistral"), `model_type "mistral": only llama models are supported`, true},
		{"other architecture", with("architectures", []string{"Qwen2ForCausalLM"}), `architectures ["Qwen2ForCausalLM"]`, true},
		{"unidentified", with("model_type", nil, "architectures", nil), "neither model_type nor architectures", true},
		{"missing hidden", with("hidden_size", nil), "hidden_size missing", false},
		{"zero layers", with("num_hidden_layers", 0), "num_hidden_layers = 0, want a positive value", false},
		{"negative vocab", with("vocab_size", -5), "vocab_size = -5", false},
		{"huge hidden", with("hidden_size", 1<<40), "hidden_size = 1099511627776", false},
		{"kv not dividing", with("num_key_value_heads", 3), "num_key_value_heads = 3 must be positive and divide num_attention_heads = 8", false},
		{"kv zero", with("num_key_value_heads", 0), "num_key_value_heads = 0", false},
		{"hidden not multiple", with("hidden_size", 60), "head_dim missing and hidden_size = 60 is not a multiple", false},
		{"odd head_dim", with("head_dim", 7), "head_dim = 7 must be positive, even", false},
		{"eps zero", with("rms_norm_eps", 0), "rms_norm_eps = 0", false},
		{"theta", with("rope_theta", 0.5), "rope_theta = 0.5", false},
		{"gelu", with("hidden_act", "gelu"), `hidden_act "gelu": only silu is supported`, true},
		{"attention bias", with("attention_bias", true), "attention_bias true", true},
		{"mlp bias", with("mlp_bias", true), "mlp_bias true", true},
		{"yarn", with("rope_scaling", map[string]any{"rope_type": "yarn", "factor": 4.0}), `rope_scaling type "yarn": only default, linear and llama3 are supported`, true},
		{"dynamic legacy key", with("rope_scaling", map[string]any{"type": "dynamic", "factor": 2.0}), `rope_scaling type "dynamic"`, true},
		{"longrope v5", with("rope_parameters", map[string]any{"rope_type": "longrope"}), `rope_parameters type "longrope"`, true},
		{"linear no factor", with("rope_scaling", map[string]any{"type": "linear"}), "rope_scaling (linear): factor missing", false},
		{"llama3 bad factors", with("rope_scaling", merge(llama3, "high_freq_factor", 0.5)), "high_freq_factor = 0.5 must exceed low_freq_factor = 1", false},
		{"llama3 factor below 1", with("rope_scaling", merge(llama3, "factor", 0.5)), "factor = 0.5, want a finite value of at least 1", false},
		{"llama3 no orig", with("rope_scaling", merge(llama3, "original_max_position_embeddings", nil)), "original_max_position_embeddings missing", false},
		{"llama3 fractional orig", with("rope_scaling", merge(llama3, "original_max_position_embeddings", 10.5)), "want an integer", false},
		{"rope not object", with("rope_scaling", "llama3"), "rope_scaling: json", false},
		{"eos string", with("eos_token_id", "eos"), `eos_token_id "eos": want an integer`, false},
		{"eos negative", with("eos_token_id", []int{1, -2}), "negative id", false},
		{"bos float", with("bos_token_id", 1.5), "bos_token_id 1.5", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(tc.data)
			if err == nil {
				t.Fatalf("no error, config %+v; want %q", c, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
			if got := errors.Is(err, ErrUnsupported); got != tc.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v (%v)", got, tc.unsupported, err)
			}
		})
	}
}

func merge(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m))
	for key, val := range m {
		out[key] = val
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestRopeInvFreqGolden(t *testing.T) {
	var summary struct {
		RandomRope struct {
			RopeType string    `json:"rope_type"`
			InvFreq  []float64 `json:"inv_freq"`
		} `json:"random_rope"`
	}
	if err := json.Unmarshal(readShared(t, "golden", "summary.json"), &summary); err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(readShared(t, "models", "random_llama32", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.RopeInvFreq()
	want := summary.RandomRope.InvFreq
	if summary.RandomRope.RopeType != "llama3" || len(got) != len(want) || len(want) != 8 {
		t.Fatalf("rope %q: got %d frequencies, golden %d", summary.RandomRope.RopeType, len(got), len(want))
	}
	for i := range want {
		// The golden values are float32 rounded to 6 significant digits.
		if rel := math.Abs(got[i]-want[i]) / want[i]; rel > 1e-5 {
			t.Errorf("inv_freq[%d] = %.7g, golden %.7g (rel err %.2g)", i, got[i], want[i], rel)
		}
	}
	// Wavelengths 2π/f against the cut-offs 8192/4 and 8192/1: pairs 0-3 keep
	// their frequency, pair 4 (wavelength 4443) is blended, 5-7 are divided.
	plain := *c
	plain.RopeScaling = nil
	base := plain.RopeInvFreq()
	for i, f := range got {
		switch {
		case i < 4 && f != base[i]:
			t.Errorf("pair %d: high frequency changed: %g -> %g", i, base[i], f)
		case i > 4 && math.Abs(f-base[i]/32) > 1e-18:
			t.Errorf("pair %d: low frequency %g, want %g/32", i, f, base[i])
		case i == 4 && !(f < base[i] && f > base[i]/32):
			t.Errorf("pair 4: %g not blended between %g and %g", f, base[i]/32, base[i])
		}
	}
}

func TestRopeInvFreq(t *testing.T) {
	c := stories260kConfig
	got := c.RopeInvFreq()
	// theta^(-2i/d) with d = 8: 1, 10000^-0.25, 10000^-0.5, 10000^-0.75.
	want := []float64{1, 0.1, 0.01, 0.001}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-15 {
			t.Errorf("inv_freq[%d] = %g, want %g", i, got[i], want[i])
		}
	}
	c.RopeScaling = &RopeScaling{Type: RopeLinear, Factor: 4}
	for i, f := range c.RopeInvFreq() {
		if math.Abs(f-want[i]/4) > 1e-15 {
			t.Errorf("linear inv_freq[%d] = %g, want %g", i, f, want[i]/4)
		}
	}
}

// FuzzParseConfig checks that ParseConfig never panics and that an accepted
// config is safe to compute with.
func FuzzParseConfig(f *testing.F) {
	for _, m := range []string{"stories260k", "random_llama32"} {
		f.Add(readShared(f, "models", m, "config.json"))
	}
	f.Add([]byte(`{"model_type":"llama","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":4,"rope_scaling":{"type":"linear","factor":2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if c.HiddenSize <= 0 || c.IntermediateSize <= 0 || c.NumHiddenLayers <= 0 || c.VocabSize <= 0 ||
			c.NumKeyValueHeads <= 0 || c.NumAttentionHeads%c.NumKeyValueHeads != 0 || c.HeadDim <= 0 || c.HeadDim%2 != 0 {
			t.Fatalf("accepted invalid config %+v", c)
		}
		inv := c.RopeInvFreq()
		if len(inv) != c.HeadDim/2 {
			t.Fatalf("%d frequencies for head_dim %d", len(inv), c.HeadDim)
		}
		for i, v := range inv {
			if !(v > 0) || math.IsInf(v, 0) {
				t.Fatalf("inv_freq[%d] = %g", i, v)
			}
		}
		if p := c.ParamCount(); p <= 0 {
			t.Fatalf("ParamCount = %d", p)
		}
		if n := len(c.ExpectedTensors()); n != 9*c.NumHiddenLayers+3 {
			t.Fatalf("%d expected tensors", n)
		}
	})
}

// FuzzParseTokenizerConfig checks that tokenizer_config.json parsing never
// panics on untrusted input.
func FuzzParseTokenizerConfig(f *testing.F) {
	for _, m := range []string{"stories260k", "random_llama32"} {
		f.Add(readShared(f, "models", m, "tokenizer_config.json"))
	}
	f.Add([]byte(`{"add_bos_token":true,"bos_token":{"content":"<s>"},"added_tokens_decoder":{"0":{"content":"<unk>","special":true}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseTokenizerConfig(data)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}
