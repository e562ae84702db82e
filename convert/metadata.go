package convert

import (
	"errors"
	"fmt"
	"math"
	"os"

	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/infer/tokenizer"
)

// llamaKVs returns general.* (but file_type), llama.* and qllama.rope/config keys.
func llamaKVs(c *hf.Config, name string) []gguf.KV {
	u := func(v int) uint32 { return uint32(v) }
	kvs := []gguf.KV{
		{Key: gguf.KeyGeneralArchitecture, Value: gguf.Architecture},
		{Key: gguf.KeyGeneralName, Value: name},
		{Key: gguf.KeyContextLength, Value: u(c.MaxPositionEmbeddings)},
		{Key: gguf.KeyEmbeddingLength, Value: u(c.HiddenSize)},
		{Key: gguf.KeyBlockCount, Value: u(c.NumHiddenLayers)},
		{Key: gguf.KeyFeedForwardLength, Value: u(c.IntermediateSize)},
		{Key: gguf.KeyHeadCount, Value: u(c.NumAttentionHeads)},
		{Key: gguf.KeyHeadCountKV, Value: u(c.NumKeyValueHeads)},
		{Key: gguf.KeyLayerNormRMSEpsilon, Value: float32(c.RMSNormEps)},
		{Key: gguf.KeyRopeFreqBase, Value: float32(c.RopeTheta)},
		{Key: gguf.KeyRopeDimensionCount, Value: u(c.HeadDim)},
		{Key: gguf.KeyVocabSize, Value: u(c.VocabSize)},
		{Key: gguf.KeyQllamaRopeTheta, Value: c.RopeTheta},
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 || c.HeadDim != c.HiddenSize/c.NumAttentionHeads {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyKeyLength, Value: u(c.HeadDim)}, gguf.KV{Key: gguf.KeyValueLength, Value: u(c.HeadDim)})
	}
	if s := c.RopeScaling; s != nil {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaRopeScalingType, Value: s.Type}, gguf.KV{Key: gguf.KeyQllamaRopeFactor, Value: s.Factor})
		switch s.Type {
		case hf.RopeLinear:
			kvs = append(kvs, gguf.KV{Key: gguf.KeyRopeScalingType, Value: "linear"}, gguf.KV{Key: gguf.KeyRopeScalingFactor, Value: float32(s.Factor)})
		case hf.RopeLlama3:
			kvs = append(kvs,
				gguf.KV{Key: gguf.KeyQllamaRopeLowFreq, Value: s.LowFreqFactor},
				gguf.KV{Key: gguf.KeyQllamaRopeHighFreq, Value: s.HighFreqFactor},
				gguf.KV{Key: gguf.KeyQllamaRopeOrigCtx, Value: u(s.OriginalMaxPositionEmbeddings)})
		}
	}
	kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaConfigBOS, Value: int32(c.BOSTokenID)})
	if len(c.EOSTokenIDs) > 0 {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaConfigEOS, Value: int32s(c.EOSTokenIDs)})
	}
	return kvs
}

func int32s(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

// ropeFactors returns llama.cpp's rope_freqs.weight for llama3 scaling
// (docs/FORMAT.md "Llama 3 RoPE scaling"), or nil.
func ropeFactors(c *hf.Config) []float32 {
	s := c.RopeScaling
	if s == nil || s.Type != hf.RopeLlama3 {
		return nil
	}
	dim := c.HeadDim
	orig := float64(s.OriginalMaxPositionEmbeddings)
	lowWavelen, highWavelen := orig/s.LowFreqFactor, orig/s.HighFreqFactor
	out := make([]float32, dim/2)
	for i := range out {
		freq := 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(dim))
		wavelen := 2 * math.Pi / freq
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = float32(s.Factor)
		default:
			smooth := (orig/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
			out[i] = float32(1 / ((1-smooth)/s.Factor + smooth))
		}
	}
	return out
}

// tokenizerKVs embeds the tokenizer (tokenizer.ggml.* plus the qllama.tokenizer.*
// keys FromParts needs to rebuild it exactly), padding the vocabulary to the
// model's as llama.cpp's converter does ("[PAD<id>]", type unused).
func tokenizerKVs(tok *tokenizer.Tokenizer, vocab int, dir string) ([]gguf.KV, error) {
	p := tok.Parts()
	n := len(p.Tokens)
	if n > vocab {
		return nil, fmt.Errorf("tokenizer has %d tokens, more than the model's vocab_size %d", n, vocab)
	}
	tokens := append([]string(nil), p.Tokens...)
	types := make([]int32, vocab)
	for i := range types {
		types[i] = int32(tokenizer.TokenUnused)
		if i < len(p.TokenTypes) {
			types[i] = int32(p.TokenTypes[i])
		} else if i < n {
			types[i] = int32(tokenizer.TokenNormal)
		}
	}
	for i := n; i < vocab; i++ {
		tokens = append(tokens, fmt.Sprintf("[PAD%d]", i))
	}
	kvs := []gguf.KV{
		{Key: gguf.KeyTokenizerTokens, Value: tokens},
		{Key: gguf.KeyTokenizerTokenType, Value: types},
		{Key: gguf.KeyTokenizerAddBOS, Value: p.AddBOS},
		{Key: gguf.KeyTokenizerAddEOS, Value: p.AddEOS},
		{Key: gguf.KeyQllamaTokenizerCount, Value: uint32(n)},
		{Key: gguf.KeyQllamaTokenizerIgnore, Value: p.IgnoreMerges},
	}
	if len(p.Merges) > 0 {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyTokenizerMerges, Value: p.Merges})
	}
	switch p.Kind {
	case tokenizer.KindByteLevel:
		pre := gguf.TokenizerPreDefault
		switch p.Pattern {
		case "", tokenizer.Llama3Pattern:
			pre = gguf.TokenizerPreLlama3
		case tokenizer.GPT2Pattern:
			pre = "gpt-2"
		}
		kvs = append(kvs,
			gguf.KV{Key: gguf.KeyTokenizerModel, Value: gguf.TokenizerModelGPT2},
			gguf.KV{Key: gguf.KeyTokenizerPre, Value: pre})
		if p.Pattern != "" {
			kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaTokenizerPattern, Value: p.Pattern})
		}
	case tokenizer.KindSentencePiece:
		scores := make([]float32, vocab)
		copy(scores, p.Scores)
		for i := len(p.Scores); i < vocab; i++ {
			scores[i] = -1e9
		}
		kvs = append(kvs,
			gguf.KV{Key: gguf.KeyTokenizerModel, Value: gguf.TokenizerModelLlama},
			gguf.KV{Key: gguf.KeyTokenizerScores, Value: scores})
	default:
		return nil, fmt.Errorf("tokenizer kind %q cannot be embedded", p.Kind)
	}
	if p.BOS >= 0 {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyTokenizerBOS, Value: uint32(p.BOS)})
	}
	if len(p.EOS) > 0 {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyTokenizerEOS, Value: uint32(p.EOS[0])},
			gguf.KV{Key: gguf.KeyQllamaTokenizerEOSList, Value: int32s(p.EOS)})
	}
	for id, tt := range p.TokenTypes {
		if tt == tokenizer.TokenUnknown {
			kvs = append(kvs, gguf.KV{Key: gguf.KeyTokenizerUNK, Value: uint32(id)})
			break
		}
	}
	tc, err := hf.ReadTokenizerConfig(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	case tc.ChatTemplate != "":
		kvs = append(kvs, gguf.KV{Key: gguf.KeyChatTemplate, Value: tc.ChatTemplate})
	}
	return kvs, nil
}
