package hf

import (
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

func TestReadTokenizerConfigReal(t *testing.T) {
	tests := []struct {
		model     string
		hasAddBOS bool
		addBOS    bool
		bos, eos  string
		maxLen    int64
		added     map[int]string // a few added tokens
	}{
		{"stories260k", true, true, "<s>", "</s>", 512, nil},
		{"random_llama32", false, false, "<|begin_of_text|>", "<|end_of_text|>", 131072,
			map[int]string{128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>"}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			tc2, err := ReadTokenizerConfig(testutil.Shared(t, "models", tc.model))
			if err != nil {
				t.Fatal(err)
			}
			if tc2.HasAddBOS != tc.hasAddBOS || tc2.AddBOS != tc.addBOS || tc2.HasAddEOS != tc.hasAddBOS || tc2.AddEOS {
				t.Errorf("add_bos %v/%v add_eos %v/%v", tc2.AddBOS, tc2.HasAddBOS, tc2.AddEOS, tc2.HasAddEOS)
			}
			if tc2.BOSToken != tc.bos || tc2.EOSToken != tc.eos || tc2.ModelMaxLength != tc.maxLen ||
				tc2.TokenizerClass != "PreTrainedTokenizerFast" {
				t.Errorf("got %+v", tc2)
			}
			for id, content := range tc.added {
				if a := tc2.AddedTokens[id]; a.Content != content || !a.Special {
					t.Errorf("added token %d = %+v, want special %q", id, a, content)
				}
			}
		})
	}
}

func TestParseTokenizerConfig(t *testing.T) {
	got, err := ParseTokenizerConfig([]byte(`{"add_bos_token": false, "add_eos_token": true,
		"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false}, "eos_token": "</s>",
		"unk_token": null, "pad_token": {"content": "<pad>"}, "chat_template": "{{ x }}",
		"model_max_length": 1000000000000000019884624838656,
		"added_tokens_decoder": {"0": {"content": "<unk>", "special": true, "normalized": true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &TokenizerConfig{
		AddBOS: false, HasAddBOS: true, AddEOS: true, HasAddEOS: true,
		BOSToken: "<s>", EOSToken: "</s>", PadToken: "<pad>", ChatTemplate: "{{ x }}",
		ModelMaxLength: math.MaxInt64,
		AddedTokens:    map[int]AddedToken{0: {Content: "<unk>", Special: true, Normalized: true}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct{ data, want string }{
		{`{"bos_token": 5}`, "bos_token: 5: want a string"},
		{`{"eos_token": {"special": true}}`, "eos_token"},
		{`{"added_tokens_decoder": {"x": {}}}`, `key "x" is not a token id`},
		{`{"model_max_length": -1}`, "negative"},
		{`[`, "invalid JSON"},
	} {
		if _, err := ParseTokenizerConfig([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.data, err, tc.want)
		}
	}
	if _, err := ReadTokenizerConfig(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadGenerationConfig(t *testing.T) {
	tests := []struct {
		name    string
		dir     func(t *testing.T) string
		bos     int
		eos     []int
		wantErr string
	}{
		{"stories260k", func(t *testing.T) string { return testutil.Shared(t, "models", "stories260k") }, 1, []int{2}, ""},
		{"random_llama32", func(t *testing.T) string { return testutil.Shared(t, "models", "random_llama32") }, 128000, []int{128001}, ""},
		{"absent", func(t *testing.T) string { return t.TempDir() }, -1, nil, ""},
		{"list and null", tempWith(`{"bos_token_id": null, "eos_token_id": [128001, 128008, 128009]}`), -1, []int{128001, 128008, 128009}, ""},
		{"garbage", tempWith(`{"eos_token_id": "x"}`), -1, nil, `generation_config.json: eos_token_id "x"`},
		{"not json", tempWith(`}`), -1, nil, "generation_config.json: invalid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bos, eos, err := ReadGenerationConfig(tc.dir(t))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || bos != tc.bos || !reflect.DeepEqual(eos, tc.eos) {
				t.Errorf("got %d %v %v, want %d %v", bos, eos, err, tc.bos, tc.eos)
			}
		})
	}
}

func tempWith(content string) func(t *testing.T) string {
	return func(t *testing.T) string {
		dir := t.TempDir()
		writeFile(t, dir, GenerationConfigFile, []byte(content))
		return dir
	}
}
