package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// AddedToken is one entry of tokenizer_config.json's added_tokens_decoder.
type AddedToken struct {
	Content    string `json:"content"`
	Special    bool   `json:"special"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	SingleWord bool   `json:"single_word"`
}

// TokenizerConfig is the part of tokenizer_config.json the toolchain uses.
type TokenizerConfig struct {
	// AddBOS and AddEOS are add_bos_token and add_eos_token; HasAddBOS and
	// HasAddEOS report whether the file sets them. When it does not, the
	// tokenizer's own post-processor decides (for Llama 3, tokenizer.json's
	// TemplateProcessing adds <|begin_of_text|>), which is the caller's call.
	AddBOS, HasAddBOS bool
	AddEOS, HasAddEOS bool

	// Special token strings, given in the file as a string or an AddedToken
	// object; "" when absent or null.
	BOSToken, EOSToken, UnkToken, PadToken string

	ChatTemplate   string // "" unless given as a single string
	TokenizerClass string
	// ModelMaxLength is model_max_length, saturated to math.MaxInt64
	// (transformers writes 1e30 for "unlimited"); 0 when absent.
	ModelMaxLength int64

	// AddedTokens maps token id to added_tokens_decoder's entry.
	AddedTokens map[int]AddedToken
}

type rawTokenizerConfig struct {
	AddBOSToken        *bool                 `json:"add_bos_token"`
	AddEOSToken        *bool                 `json:"add_eos_token"`
	BOSToken           json.RawMessage       `json:"bos_token"`
	EOSToken           json.RawMessage       `json:"eos_token"`
	UnkToken           json.RawMessage       `json:"unk_token"`
	PadToken           json.RawMessage       `json:"pad_token"`
	ChatTemplate       json.RawMessage       `json:"chat_template"`
	TokenizerClass     *string               `json:"tokenizer_class"`
	ModelMaxLength     *float64              `json:"model_max_length"`
	AddedTokensDecoder map[string]AddedToken `json:"added_tokens_decoder"`
}

// ReadTokenizerConfig reads dir/tokenizer_config.json. A missing file gives
// an error wrapping os.ErrNotExist.
func ReadTokenizerConfig(dir string) (*TokenizerConfig, error) {
	path := filepath.Join(dir, TokenizerConfigFile)
	data, err := readJSONFile(path)
	if err != nil {
		return nil, err
	}
	tc, err := ParseTokenizerConfig(data)
	if err != nil {
		return nil, fmt.Errorf("hf: %s: %w", path, err)
	}
	return tc, nil
}

// ParseTokenizerConfig parses the contents of a tokenizer_config.json.
func ParseTokenizerConfig(data []byte) (*TokenizerConfig, error) {
	var r rawTokenizerConfig
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	tc := &TokenizerConfig{AddedTokens: make(map[int]AddedToken, len(r.AddedTokensDecoder))}
	if r.AddBOSToken != nil {
		tc.AddBOS, tc.HasAddBOS = *r.AddBOSToken, true
	}
	if r.AddEOSToken != nil {
		tc.AddEOS, tc.HasAddEOS = *r.AddEOSToken, true
	}
	for _, t := range []struct {
		key string
		raw json.RawMessage
		dst *string
	}{
		{"bos_token", r.BOSToken, &tc.BOSToken},
		{"eos_token", r.EOSToken, &tc.EOSToken},
		{"unk_token", r.UnkToken, &tc.UnkToken},
		{"pad_token", r.PadToken, &tc.PadToken},
	} {
		s, err := tokenString(t.raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.key, err)
		}
		*t.dst = s
	}
	if !isNull(r.ChatTemplate) {
		var s string
		if json.Unmarshal(r.ChatTemplate, &s) == nil { // lists of named templates are skipped
			tc.ChatTemplate = s
		}
	}
	if r.TokenizerClass != nil {
		tc.TokenizerClass = *r.TokenizerClass
	}
	if r.ModelMaxLength != nil {
		switch v := *r.ModelMaxLength; {
		case v < 0:
			return nil, fmt.Errorf("model_max_length = %g is negative", v)
		case v >= math.MaxInt64:
			tc.ModelMaxLength = math.MaxInt64
		default:
			tc.ModelMaxLength = int64(v)
		}
	}
	for k, v := range r.AddedTokensDecoder {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 {
			return nil, fmt.Errorf("added_tokens_decoder: key %q is not a token id", k)
		}
		tc.AddedTokens[id] = v
	}
	return tc, nil
}

// tokenString decodes a special token given as a string, an AddedToken
// object or null.
func tokenString(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(raw), &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("%s: want a string, an object with content, or null", raw)
	}
	return *obj.Content, nil
}

// ReadGenerationConfig reads bos_token_id and eos_token_id (an integer or a
// list) from dir/generation_config.json. The file is optional: when it is
// absent, bos is -1, eos is nil and err is nil. A null or absent bos is -1.
func ReadGenerationConfig(dir string) (bos int, eos []int, err error) {
	path := filepath.Join(dir, GenerationConfigFile)
	data, err := readJSONFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return -1, nil, nil
	}
	if err != nil {
		return -1, nil, err
	}
	var r struct {
		BOS json.RawMessage `json:"bos_token_id"`
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return -1, nil, fmt.Errorf("hf: %s: invalid JSON: %w", path, err)
	}
	if bos, err = parseBOS(r.BOS, -1); err != nil {
		return -1, nil, fmt.Errorf("hf: %s: %w", path, err)
	}
	if eos, err = parseEOS(r.EOS, nil); err != nil {
		return -1, nil, fmt.Errorf("hf: %s: %w", path, err)
	}
	return bos, eos, nil
}
