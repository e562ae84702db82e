package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// generatedSpecials are the named special tokens GenerateByteLevel puts at
// the top of the vocabulary (Llama 3.2 names, in Llama 3.2 order); any
// vocabulary left unfilled by training becomes <|reserved_special_token_N|>.
var generatedSpecials = []string{
	"<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
	"<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
}

// GenerateByteLevel builds a small byte-level BPE tokenizer in the exact
// layout of Llama 3's tokenizer.json (same regex, pre-tokenizer,
// post-processor and decoder, ignore_merges) plus a tokenizer_config.json.
// Ids 0-255 are the bytes; merges are learned by plain BPE on corpus (the
// built-in DefaultCorpus when empty): split with the Llama 3 regex, then
// repeatedly merge the most frequent adjacent pair (seen at least twice; ties
// by the merged bytes, then the left part) until vocabSize minus the eight
// named specials is reached. Specials take the top ids; slots training
// cannot fill become reserved special tokens. The output is deterministic
// and Decode(Encode(x)) == x holds for any valid UTF-8 x.
func GenerateByteLevel(vocabSize int, corpus string) (tokenizerJSON, tokenizerConfigJSON []byte, err error) {
	if vocabSize < 256+len(generatedSpecials) || vocabSize > maxVocab {
		return nil, nil, fmt.Errorf("generate tokenizer: vocab size %d outside [%d, %d]", vocabSize, 256+len(generatedSpecials), maxVocab)
	}
	if corpus == "" {
		corpus = DefaultCorpus
	}
	tokens, merges := trainBPE(lossyUTF8(corpus), vocabSize-len(generatedSpecials))
	specials := append([]string(nil), generatedSpecials...)
	for k := 0; len(tokens)+len(specials) < vocabSize; k++ {
		specials = append(specials, "<|reserved_special_token_"+strconv.Itoa(k)+"|>")
	}

	type addedJSON struct {
		ID         int    `json:"id,omitempty"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	type idJSON struct {
		ID     string `json:"id"`
		TypeID int    `json:"type_id"`
	}
	type templItem struct {
		SpecialToken *idJSON `json:"SpecialToken,omitempty"`
		Sequence     *idJSON `json:"Sequence,omitempty"`
	}
	bos := generatedSpecials[0]
	added := make([]addedJSON, len(specials))
	decoderCfg := map[string]addedJSON{}
	for i, s := range specials {
		id := len(tokens) + i
		added[i] = addedJSON{ID: id, Content: s, Special: true}
		decoderCfg[strconv.Itoa(id)] = addedJSON{Content: s, Special: true}
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
	vocab := make(orderedVocab, len(tokens))
	for i, t := range tokens {
		vocab[i] = byteLevelEncode(t)
	}
	mergeStrs := make([]string, len(merges))
	for i, m := range merges {
		mergeStrs[i] = byteLevelEncode(m[0]) + " " + byteLevelEncode(m[1])
	}
	doc := struct {
		Version       string      `json:"version"`
		Truncation    any         `json:"truncation"`
		Padding       any         `json:"padding"`
		AddedTokens   []addedJSON `json:"added_tokens"`
		Normalizer    any         `json:"normalizer"`
		PreTokenizer  any         `json:"pre_tokenizer"`
		PostProcessor any         `json:"post_processor"`
		Decoder       any         `json:"decoder"`
		Model         any         `json:"model"`
	}{
		Version:     "1.0",
		AddedTokens: added,
		PreTokenizer: map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]string{"Regex": Llama3Pattern}, "behavior": "Isolated", "invert": false},
			byteLevel,
		}},
		PostProcessor: map[string]any{"type": "Sequence", "processors": []any{
			map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
			map[string]any{
				"type":   "TemplateProcessing",
				"single": []templItem{{SpecialToken: &idJSON{bos, 0}}, {Sequence: &idJSON{"A", 0}}},
				"pair": []templItem{{SpecialToken: &idJSON{bos, 0}}, {Sequence: &idJSON{"A", 0}},
					{SpecialToken: &idJSON{bos, 1}}, {Sequence: &idJSON{"B", 1}}},
				"special_tokens": map[string]any{bos: map[string]any{"id": bos, "ids": []int{len(tokens)}, "tokens": []string{bos}}},
			},
		}},
		Decoder: map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		Model: struct {
			Type         string       `json:"type"`
			Dropout      any          `json:"dropout"`
			UnkToken     any          `json:"unk_token"`
			Prefix       any          `json:"continuing_subword_prefix"`
			Suffix       any          `json:"end_of_word_suffix"`
			FuseUnk      bool         `json:"fuse_unk"`
			ByteFallback bool         `json:"byte_fallback"`
			IgnoreMerges bool         `json:"ignore_merges"`
			Vocab        orderedVocab `json:"vocab"`
			Merges       []string     `json:"merges"`
		}{Type: "BPE", IgnoreMerges: true, Vocab: vocab, Merges: mergeStrs},
	}
	if tokenizerJSON, err = marshal(doc); err != nil {
		return nil, nil, fmt.Errorf("generate tokenizer: %w", err)
	}
	cfg := struct {
		AddedTokensDecoder map[string]addedJSON `json:"added_tokens_decoder"`
		BOS                string               `json:"bos_token"`
		CleanUp            bool                 `json:"clean_up_tokenization_spaces"`
		EOS                string               `json:"eos_token"`
		InputNames         []string             `json:"model_input_names"`
		MaxLength          int                  `json:"model_max_length"`
		Class              string               `json:"tokenizer_class"`
	}{decoderCfg, bos, true, generatedSpecials[1], []string{"input_ids", "attention_mask"}, 131072, "PreTrainedTokenizerFast"}
	if tokenizerConfigJSON, err = marshal(cfg); err != nil {
		return nil, nil, fmt.Errorf("generate tokenizer config: %w", err)
	}
	return tokenizerJSON, tokenizerConfigJSON, nil
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// orderedVocab marshals as a JSON object token -> id in id order.
type orderedVocab []string

func (v orderedVocab) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for id, tok := range v {
		if id > 0 {
			buf.WriteByte(',')
		}
		k, err := json.Marshal(tok)
		if err != nil {
			return nil, err
		}
		buf.Write(k)
		buf.WriteByte(':')
		buf.WriteString(strconv.Itoa(id))
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// trainBPE learns merges on corpus until the model vocabulary (256 bytes
// plus merged tokens) has size entries or no pair occurs twice. Tokens are
// raw byte strings.
func trainBPE(corpus string, size int) (tokens []string, merges [][2]string) {
	tokens = make([]string, 256)
	index := make(map[string]int, size)
	for b := range 256 {
		tokens[b] = string([]byte{byte(b)})
		index[tokens[b]] = b
	}
	counts := map[string]int{}
	for _, sp := range (llama3Scanner{}).matches(corpus, nil) {
		counts[corpus[sp[0]:sp[1]]]++
	}
	type word struct {
		syms  []int
		count int
	}
	keys := make([]string, 0, len(counts))
	for w := range counts {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	words := make([]word, len(keys))
	for i, w := range keys {
		syms := make([]int, len(w))
		for k := 0; k < len(w); k++ {
			syms[k] = int(w[k])
		}
		words[i] = word{syms, counts[w]}
	}
	for len(tokens) < size {
		pairs := map[[2]int]int{}
		for _, w := range words {
			for k := 0; k+1 < len(w.syms); k++ {
				pairs[[2]int{w.syms[k], w.syms[k+1]}] += w.count
			}
		}
		var best [2]int
		bestCount := 1
		for p, c := range pairs {
			if c > bestCount || (c == bestCount && c > 1 && pairLess(tokens, p, best)) {
				best, bestCount = p, c
			}
		}
		if bestCount < 2 {
			break
		}
		merged := tokens[best[0]] + tokens[best[1]]
		id, ok := index[merged]
		if !ok {
			id = len(tokens)
			tokens = append(tokens, merged)
			index[merged] = id
		}
		merges = append(merges, [2]string{tokens[best[0]], tokens[best[1]]})
		for i := range words {
			s := words[i].syms
			out := s[:0]
			for k := 0; k < len(s); k++ {
				if k+1 < len(s) && s[k] == best[0] && s[k+1] == best[1] {
					out = append(out, id)
					k++
					continue
				}
				out = append(out, s[k])
			}
			words[i].syms = out
		}
	}
	return tokens, merges
}

// pairLess orders pairs of equal count: by merged bytes, then left part.
func pairLess(tokens []string, a, b [2]int) bool {
	ma, mb := tokens[a[0]]+tokens[a[1]], tokens[b[0]]+tokens[b[1]]
	if ma != mb {
		return ma < mb
	}
	return tokens[a[0]] < tokens[b[0]]
}
