package gguf

import (
	"fmt"
	"strconv"
	"strings"
)

// General keys (docs/gguf.md "General").
const (
	KeyGeneralName                = "general.name"
	KeyGeneralFileType            = "general.file_type"            // uint32, a FileType
	KeyGeneralQuantizationVersion = "general.quantization_version" // uint32, required when any tensor is quantized
)

// Architecture is the general.architecture value for Llama-family models.
const Architecture = "llama"

// Llama hyper-parameter keys, as llama.cpp reads them (docs/gguf.md "LLM",
// "LLaMA"; llama.cpp src/llama-arch.cpp). llama.cpp accepts uint32 for the
// counts; the converter should write uint32 for counts and lengths and
// float32 for the floats.
const (
	KeyContextLength                = "llama.context_length"
	KeyEmbeddingLength              = "llama.embedding_length"
	KeyBlockCount                   = "llama.block_count"
	KeyFeedForwardLength            = "llama.feed_forward_length"
	KeyHeadCount                    = "llama.attention.head_count"
	KeyHeadCountKV                  = "llama.attention.head_count_kv"
	KeyKeyLength                    = "llama.attention.key_length"
	KeyValueLength                  = "llama.attention.value_length"
	KeyLayerNormRMSEpsilon          = "llama.attention.layer_norm_rms_epsilon"
	KeyRopeFreqBase                 = "llama.rope.freq_base"
	KeyRopeDimensionCount           = "llama.rope.dimension_count"
	KeyRopeScalingType              = "llama.rope.scaling.type" // "none", "linear", "yarn"
	KeyRopeScalingFactor            = "llama.rope.scaling.factor"
	KeyRopeScalingOrigContextLength = "llama.rope.scaling.original_context_length"
	KeyVocabSize                    = "llama.vocab_size"
)

// Tokenizer keys (docs/gguf.md "Tokenizer"; tokenizer.ggml.pre and the
// add_*_token flags come from llama.cpp's gguf-py constants).
const (
	KeyTokenizerModel     = "tokenizer.ggml.model"
	KeyTokenizerPre       = "tokenizer.ggml.pre"
	KeyTokenizerTokens    = "tokenizer.ggml.tokens"     // []string
	KeyTokenizerTokenType = "tokenizer.ggml.token_type" // []int32, a TokenType per token
	KeyTokenizerScores    = "tokenizer.ggml.scores"     // []float32
	KeyTokenizerMerges    = "tokenizer.ggml.merges"     // []string, "a b"
	KeyTokenizerBOS       = "tokenizer.ggml.bos_token_id"
	KeyTokenizerEOS       = "tokenizer.ggml.eos_token_id"
	KeyTokenizerUNK       = "tokenizer.ggml.unknown_token_id"
	KeyTokenizerPAD       = "tokenizer.ggml.padding_token_id"
	KeyTokenizerAddBOS    = "tokenizer.ggml.add_bos_token" // bool
	KeyTokenizerAddEOS    = "tokenizer.ggml.add_eos_token" // bool
	KeyChatTemplate       = "tokenizer.chat_template"
)

// Tokenizer model and pre-tokenizer names.
const (
	TokenizerModelGPT2  = "gpt2"      // byte-level BPE from tokenizer.json (Llama 3)
	TokenizerModelLlama = "llama"     // SentencePiece (Llama 1/2)
	TokenizerPreLlama3  = "llama-bpe" // tokenizer.ggml.pre of Llama 3
	TokenizerPreDefault = "default"
)

// TokenType is a tokenizer.ggml.token_type value (docs/gguf.md).
type TokenType int32

// Token types.
const (
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3
	TokenUserDefined TokenType = 4
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6
)

// FileType is a general.file_type value (enum llama_ftype in llama.cpp
// include/llama.h). Only the values for the types this project writes are
// listed.
type FileType uint32

// File types.
const (
	FileTypeAllF32     FileType = 0
	FileTypeMostlyF16  FileType = 1
	FileTypeMostlyQ4_0 FileType = 2
	FileTypeMostlyQ4_1 FileType = 3
	FileTypeMostlyQ8_0 FileType = 7
	FileTypeMostlyQ5_0 FileType = 8
	FileTypeMostlyQ5_1 FileType = 9
	// FileTypeMostlyQ4_K_S is LLAMA_FTYPE_MOSTLY_Q4_K_S: what llama-quantize
	// names a file whose linear layers are all Q4_K.
	FileTypeMostlyQ4_K_S FileType = 14
	// FileTypeMostlyQ6_K is LLAMA_FTYPE_MOSTLY_Q6_K.
	FileTypeMostlyQ6_K FileType = 18
	// FileTypeMostlyIQ4NL is LLAMA_FTYPE_MOSTLY_IQ4_NL.
	FileTypeMostlyIQ4NL FileType = 25
	FileTypeMostlyBF16  FileType = 32
)

// QuantizationVersion is the general.quantization_version llama.cpp writes
// (GGML_QNT_VERSION).
const QuantizationVersion = 2

// TensorRopeFreqs is the tensor holding Llama 3 RoPE frequency factors
// (F32, shape [head_dim/2]); see docs/FORMAT.md.
const TensorRopeFreqs = "rope_freqs.weight"

// NamePair maps a Hugging Face module name to a llama.cpp one. In a layer
// module, "#" stands for the layer number. The parameter suffix that follows
// the module (".weight", ".bias", ".qweight", …) is carried over unchanged.
type NamePair struct {
	HF, GGUF string
}

// LlamaNames is the Hugging Face → llama.cpp tensor naming of Llama models
// (llama.cpp gguf-py/gguf/tensor_mapping.py; ollama convert/convert_llama.go
// Replacements), one module per pair.
var LlamaNames = []NamePair{
	{"model.embed_tokens", "token_embd"},
	{"model.norm", "output_norm"},
	{"lm_head", "output"},
	{"model.layers.#.input_layernorm", "blk.#.attn_norm"},
	{"model.layers.#.self_attn.q_proj", "blk.#.attn_q"},
	{"model.layers.#.self_attn.k_proj", "blk.#.attn_k"},
	{"model.layers.#.self_attn.v_proj", "blk.#.attn_v"},
	{"model.layers.#.self_attn.o_proj", "blk.#.attn_output"},
	{"model.layers.#.post_attention_layernorm", "blk.#.ffn_norm"},
	{"model.layers.#.mlp.gate_proj", "blk.#.ffn_gate"},
	{"model.layers.#.mlp.up_proj", "blk.#.ffn_up"},
	{"model.layers.#.mlp.down_proj", "blk.#.ffn_down"},
}

// GGUFName returns the llama.cpp name of a Hugging Face tensor name, e.g.
// "model.layers.3.self_attn.q_proj.weight" → "blk.3.attn_q.weight".
func GGUFName(hf string) (string, bool) {
	for _, p := range LlamaNames {
		if s, ok := rename(hf, p.HF, p.GGUF); ok {
			return s, true
		}
	}
	return "", false
}

// HFName returns the Hugging Face name of a llama.cpp tensor name, the
// inverse of GGUFName.
func HFName(gguf string) (string, bool) {
	for _, p := range LlamaNames {
		if s, ok := rename(gguf, p.GGUF, p.HF); ok {
			return s, true
		}
	}
	return "", false
}

// rename matches name against the module pattern from (segments separated by
// dots, "#" matching a decimal layer number) followed by at least one more
// segment, and returns the name with the module replaced by to.
func rename(name, from, to string) (string, bool) {
	segs := strings.Split(name, ".")
	pat := strings.Split(from, ".")
	if len(segs) <= len(pat) {
		return "", false
	}
	layer := ""
	for i, p := range pat {
		if p == "#" {
			if !isLayerNumber(segs[i]) {
				return "", false
			}
			layer = segs[i]
		} else if segs[i] != p {
			return "", false
		}
	}
	for _, s := range segs[len(pat):] {
		if s == "" {
			return "", false
		}
	}
	return strings.ReplaceAll(to, "#", layer) + "." + strings.Join(segs[len(pat):], "."), true
}

// isLayerNumber accepts canonical non-negative decimals ("0", "17", not "017").
func isLayerNumber(s string) bool {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 31)
	return err == nil
}

// qkPermutation returns, for each output row of the llama.cpp Q/K layout,
// the input (Hugging Face) row it comes from. llama.cpp's converter
// (convert_hf_to_gguf.py, LlamaModel.permute) does
//
//	w.reshape(n_head, 2, rows/n_head/2, *rest).swapaxes(1, 2).reshape(w.shape)
//
// so within each head of hd = rows/n_head rows, output row 2*j+i takes input
// row i*hd/2+j (i in {0,1}, j < hd/2): the two rotary halves are interleaved.
func qkPermutation(rows, nHead int) ([]int, error) {
	if nHead <= 0 || rows <= 0 || rows%(2*nHead) != 0 {
		return nil, fmt.Errorf("gguf: Q/K permutation: %d rows is not a positive multiple of 2×%d heads", rows, nHead)
	}
	hd := rows / nHead
	half := hd / 2
	src := make([]int, rows)
	for h := 0; h < nHead; h++ {
		for j := 0; j < half; j++ {
			for i := 0; i < 2; i++ {
				src[h*hd+2*j+i] = h*hd + i*half + j
			}
		}
	}
	return src, nil
}

// PermuteQK reorders the rows of a Q or K projection from Hugging Face to
// llama.cpp layout. w holds rows of rowLen elements each (row-major,
// [out_features, in_features]); T may be float32 for plain weights or byte
// for rows of any row-wise packed format (rowLen = bytes per row), since the
// permutation only moves whole rows. nHead is num_attention_heads for Q and
// num_key_value_heads for K.
func PermuteQK[T any](w []T, rowLen, nHead int) ([]T, error) {
	return permuteRows(w, rowLen, nHead, false)
}

// UnpermuteQK is the inverse of PermuteQK: llama.cpp layout back to Hugging
// Face layout.
func UnpermuteQK[T any](w []T, rowLen, nHead int) ([]T, error) {
	return permuteRows(w, rowLen, nHead, true)
}

func permuteRows[T any](w []T, rowLen, nHead int, inverse bool) ([]T, error) {
	if rowLen <= 0 || len(w)%rowLen != 0 {
		return nil, fmt.Errorf("gguf: Q/K permutation: %d elements are not whole rows of %d", len(w), rowLen)
	}
	src, err := qkPermutation(len(w)/rowLen, nHead)
	if err != nil {
		return nil, err
	}
	out := make([]T, len(w))
	for dst, s := range src {
		if inverse {
			dst, s = s, dst
		}
		copy(out[dst*rowLen:(dst+1)*rowLen], w[s*rowLen:(s+1)*rowLen])
	}
	return out, nil
}
