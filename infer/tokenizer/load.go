package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unicode/utf8"
	"unsafe"
)

// ErrUnsupported is wrapped by errors about tokenizer.json features this
// package does not implement (other model types, normalizers...).
var ErrUnsupported = errors.New("unsupported")

// Load reads dir/tokenizer.json and, when present, dir/tokenizer_config.json
// (BOS/EOS, add_bos_token), dir/special_tokens_map.json (BOS/EOS when the
// config has none) and dir/generation_config.json (further EOS ids).
func Load(dir string) (*Tokenizer, error) {
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load tokenizer: %w", err)
		}
		return b, nil
	}
	cfg, err := read("tokenizer_config.json")
	if err != nil {
		return nil, err
	}
	stm, err := read("special_tokens_map.json")
	if err != nil {
		return nil, err
	}
	gen, err := read("generation_config.json")
	if err != nil {
		return nil, err
	}
	sp, err := parseTokenizerJSON(tj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer.json"), err)
	}
	if err := sp.applyConfig(cfg, stm); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(gen) > 0 {
		var g struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(gen, &g); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "generation_config.json"), err)
		}
		ids, err := intOrList(g.EOS)
		if err != nil {
			return nil, fmt.Errorf("%s: eos_token_id: %w", filepath.Join(dir, "generation_config.json"), err)
		}
		sp.extraEOS = ids
	}
	t, err := build(sp)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return t, nil
}

// FromJSON builds a tokenizer from the contents of tokenizer.json and
// tokenizer_config.json (which may be nil).
func FromJSON(tokenizerJSON, tokenizerConfigJSON []byte) (*Tokenizer, error) {
	sp, err := parseTokenizerJSON(tokenizerJSON)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if err := sp.applyConfig(tokenizerConfigJSON, nil); err != nil {
		return nil, err
	}
	return build(sp)
}

// spec is a tokenizer description independent of where it came from
// (tokenizer.json or GGUF parts).
type spec struct {
	vocab        []string       // model vocabulary by id ("" for unused ids)
	vocabMap     map[string]int // token -> id of vocab, when the parser already built it
	merges       [][2]string    // merges still as strings (FromParts, or merges before vocab in the file)
	unk          string
	hasUnk       bool
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	added        []addedToken

	normalizers []normalizer
	pretoks     []pretokenizer
	decoders    []decoder
	byteLevel   bool
	pattern     string
	template    *template // post-processor; nil if none

	bosName, eosName string
	addBOS, addEOS   *bool // tokenizer_config add_bos_token / add_eos_token
	extraEOS         []int
}

// template is the single-sequence TemplateProcessing: ids around $A.
type template struct{ prefix, suffix []int }

// component is the union of the fields of the normalizer, pre-tokenizer,
// post-processor and decoder objects used by Llama tokenizers.
type component struct {
	Type          string            `json:"type"`
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`

	Prepend string `json:"prepend"`
	Pattern *struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content  *string `json:"content"`
	Behavior string  `json:"behavior"`
	Invert   bool    `json:"invert"`

	AddPrefixSpace *bool   `json:"add_prefix_space"`
	UseRegex       *bool   `json:"use_regex"`
	Replacement    string  `json:"replacement"`
	PrependScheme  *string `json:"prepend_scheme"`
	Split          *bool   `json:"split"`
	Start          int     `json:"start"`
	Stop           int     `json:"stop"`

	Single        []templateItem `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
}

type templateItem struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

type addedTokenJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// parseTokenizerJSON reads the parts of tokenizer.json this package uses.
func parseTokenizerJSON(b []byte) (*spec, error) {
	sc := &scanner{b: b}
	raw := map[string][]byte{}
	sp := &spec{}
	var sawModel bool
	err := sc.object(func(key string) error {
		if key == "model" {
			sawModel = true
			return parseModel(sc, sp)
		}
		v, err := sc.skip()
		raw[key] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	if sc.peek() != 0 {
		return nil, sc.errorf("trailing data after the top-level object")
	}
	if !sawModel {
		return nil, errors.New(`no "model" member`)
	}
	if v, ok := raw["added_tokens"]; ok && !isNull(v) {
		var at []addedTokenJSON
		if err := json.Unmarshal(v, &at); err != nil {
			return nil, fmt.Errorf("added_tokens: %w", err)
		}
		for i, a := range at {
			if a.ID == nil || *a.ID < 0 {
				return nil, fmt.Errorf("added_tokens[%d] (%q): missing or negative id", i, a.Content)
			}
			if a.Content == "" {
				return nil, fmt.Errorf("added_tokens[%d]: empty content", i)
			}
			sp.added = append(sp.added, addedToken{id: *a.ID, content: a.Content, special: a.Special,
				lstrip: a.LStrip, rstrip: a.RStrip, singleWord: a.SingleWord, normed: a.Normalized})
		}
	}
	if err := sp.parseNormalizer(raw["normalizer"]); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	if err := sp.parsePretokenizer(raw["pre_tokenizer"]); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if err := sp.parseDecoder(raw["decoder"]); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	if err := sp.parsePostProcessor(raw["post_processor"]); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	return sp, nil
}

// unsafeString views b as a string without copying. The parser only uses it
// for slices of the tokenizer.json buffer (or freshly decoded escapes), which
// stay unchanged while build runs; build copies nothing out of them.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func isNull(v []byte) bool { return len(v) == 0 || string(v) == "null" }

// parseModel reads the "model" object; vocab and merges go through the fast
// scanner.
func parseModel(sc *scanner, sp *spec) error {
	if sc.peek() != '{' {
		return sc.errorf(`"model" must be an object`)
	}
	var vocab map[string]int
	var sawVocab bool
	raw := map[string][]byte{}
	err := sc.object(func(key string) error {
		switch key {
		case "vocab":
			sawVocab = true
			if sc.peek() != '{' {
				return sc.errorf("model.vocab must be an object of token -> id (Unigram vocabularies are lists)")
			}
			vocab = make(map[string]int, 1<<17)
			return sc.object(func(tok string) error {
				id, err := sc.integer()
				if err != nil {
					return fmt.Errorf("model.vocab[%q]: %w", tok, err)
				}
				vocab[tok] = id
				return nil
			})
		case "merges":
			if sc.peek() == 'n' {
				_, err := sc.skip()
				return err
			}
			return sc.array(func(i int) error {
				var l, r []byte
				switch sc.peek() {
				case '"':
					s, err := sc.strBytes()
					if err != nil {
						return err
					}
					k := bytes.IndexByte(s, ' ')
					if k < 0 || bytes.IndexByte(s[k+1:], ' ') >= 0 {
						return fmt.Errorf("model.merges[%d] = %q: want \"left right\"", i, s)
					}
					l, r = s[:k], s[k+1:]
				case '[':
					n := 0
					err := sc.array(func(k int) error {
						s, err := sc.strBytes()
						if err != nil {
							return err
						}
						switch k {
						case 0:
							l = s
						case 1:
							r = s
						}
						n++
						return nil
					})
					if err != nil {
						return err
					}
					if n != 2 {
						return fmt.Errorf("model.merges[%d]: want a pair, got %d strings", i, n)
					}
				default:
					return sc.errorf("model.merges[%d]: want a string or a pair", i)
				}
				sp.merges = append(sp.merges, [2]string{unsafeString(l), unsafeString(r)})
				return nil
			})
		}
		v, err := sc.skip()
		raw[key] = v
		return err
	})
	if err != nil {
		return err
	}
	var m struct {
		Type         string   `json:"type"`
		Dropout      *float64 `json:"dropout"`
		UnkToken     *string  `json:"unk_token"`
		Prefix       *string  `json:"continuing_subword_prefix"`
		Suffix       *string  `json:"end_of_word_suffix"`
		FuseUnk      bool     `json:"fuse_unk"`
		ByteFallback bool     `json:"byte_fallback"`
		IgnoreMerges bool     `json:"ignore_merges"`
	}
	for k, v := range raw {
		// Re-assemble the scalar members into one object for encoding/json.
		if k == "type" || k == "dropout" || k == "unk_token" || k == "continuing_subword_prefix" ||
			k == "end_of_word_suffix" || k == "fuse_unk" || k == "byte_fallback" || k == "ignore_merges" {
			kb, _ := json.Marshal(k)
			if err := json.Unmarshal([]byte("{"+string(kb)+":"+string(v)+"}"), &m); err != nil {
				return fmt.Errorf("model.%s: %w", k, err)
			}
		}
	}
	switch {
	case m.Type == "BPE":
	case m.Type == "" && sawVocab && sp.merges != nil:
	case m.Type == "":
		return errors.New("model has no type and is not a BPE model (vocab + merges)")
	default:
		return fmt.Errorf("model type %q: %w (only BPE)", m.Type, ErrUnsupported)
	}
	if !sawVocab || len(vocab) == 0 {
		return errors.New("model.vocab is missing or empty")
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return fmt.Errorf("model.dropout %v: %w", *m.Dropout, ErrUnsupported)
	}
	if (m.Prefix != nil && *m.Prefix != "") || (m.Suffix != nil && *m.Suffix != "") {
		return fmt.Errorf("continuing_subword_prefix / end_of_word_suffix: %w", ErrUnsupported)
	}
	if m.UnkToken != nil {
		sp.unk, sp.hasUnk = *m.UnkToken, true
	}
	sp.fuseUnk, sp.byteFallback, sp.ignoreMerges = m.FuseUnk, m.ByteFallback, m.IgnoreMerges
	maxID := -1
	for _, id := range vocab {
		maxID = max(maxID, id)
	}
	if maxID >= 2*len(vocab)+1024 {
		return fmt.Errorf("model.vocab: id %d is far beyond the %d entries", maxID, len(vocab))
	}
	sp.vocab = make([]string, maxID+1)
	for tok, id := range vocab {
		if sp.vocab[id] != "" {
			return fmt.Errorf("model.vocab: id %d used by both %q and %q", id, sp.vocab[id], tok)
		}
		if tok == "" {
			return fmt.Errorf("model.vocab: empty token for id %d", id)
		}
		sp.vocab[id] = tok
	}
	sp.vocabMap = vocab
	return nil
}

func parseComponent(v []byte) (*component, error) {
	if isNull(v) {
		return nil, nil
	}
	var c component
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func (sp *spec) parseNormalizer(v []byte) error {
	c, err := parseComponent(v)
	if err != nil || c == nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Normalizers {
			if err := sp.parseNormalizer(sub); err != nil {
				return fmt.Errorf("normalizers[%d]: %w", i, err)
			}
		}
	case "Prepend":
		sp.normalizers = append(sp.normalizers, normalizer{isPrepend: true, prepend: c.Prepend})
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || c.Content == nil {
			return fmt.Errorf("\"Replace\" with a non-string pattern: %w", ErrUnsupported)
		}
		sp.normalizers = append(sp.normalizers, normalizer{isReplaceStr: true, from: *c.Pattern.String, to: *c.Content})
	default:
		return fmt.Errorf("normalizer %q: %w", c.Type, ErrUnsupported)
	}
	return nil
}

func (sp *spec) parsePretokenizer(v []byte) error {
	c, err := parseComponent(v)
	if err != nil || c == nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Pretokenizers {
			if err := sp.parsePretokenizer(sub); err != nil {
				return fmt.Errorf("pretokenizers[%d]: %w", i, err)
			}
		}
	case "Split":
		if c.Invert {
			return fmt.Errorf("\"Split\" with invert: %w", ErrUnsupported)
		}
		var p splitPretok
		switch {
		case c.Pattern != nil && c.Pattern.Regex != nil:
			if p.m, err = newMatcher(*c.Pattern.Regex); err != nil {
				return err
			}
			if sp.pattern == "" {
				sp.pattern = *c.Pattern.Regex
			}
		case c.Pattern != nil && c.Pattern.String != nil:
			p.m = literalMatcher(*c.Pattern.String)
		default:
			return errors.New("\"Split\" without a pattern")
		}
		switch c.Behavior {
		case "Isolated":
			p.behavior = splitIsolated
		case "Removed":
			p.behavior = splitRemoved
		case "MergedWithPrevious":
			p.behavior = splitMergedWithPrevious
		case "MergedWithNext":
			p.behavior = splitMergedWithNext
		default:
			return fmt.Errorf("\"Split\" behavior %q: %w", c.Behavior, ErrUnsupported)
		}
		sp.pretoks = append(sp.pretoks, p)
	case "ByteLevel":
		sp.byteLevel = true
		p := splitPretok{prefixSpace: c.AddPrefixSpace == nil || *c.AddPrefixSpace}
		if c.UseRegex == nil || *c.UseRegex {
			p.m = gpt2Scanner{}
			if sp.pattern == "" {
				sp.pattern = GPT2Pattern
			}
		}
		if p.m != nil || p.prefixSpace {
			sp.pretoks = append(sp.pretoks, p)
		}
	case "Metaspace":
		p := metaspacePretok{replacement: c.Replacement, scheme: "always", split: c.Split == nil || *c.Split}
		if utf8.RuneCountInString(p.replacement) != 1 {
			return fmt.Errorf("\"Metaspace\" replacement %q is not one character", p.replacement)
		}
		switch {
		case c.PrependScheme != nil:
			p.scheme = *c.PrependScheme
		case c.AddPrefixSpace != nil && !*c.AddPrefixSpace:
			p.scheme = "never"
		}
		if p.scheme != "always" && p.scheme != "first" && p.scheme != "never" {
			return fmt.Errorf("\"Metaspace\" prepend_scheme %q: %w", p.scheme, ErrUnsupported)
		}
		sp.pretoks = append(sp.pretoks, p)
	default:
		return fmt.Errorf("pre-tokenizer %q: %w", c.Type, ErrUnsupported)
	}
	return nil
}

func (sp *spec) parseDecoder(v []byte) error {
	c, err := parseComponent(v)
	if err != nil || c == nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Decoders {
			if err := sp.parseDecoder(sub); err != nil {
				return fmt.Errorf("decoders[%d]: %w", i, err)
			}
		}
	case "ByteLevel":
		sp.decoders = append(sp.decoders, byteLevelDecoder{})
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || c.Content == nil {
			return fmt.Errorf("\"Replace\" with a non-string pattern: %w", ErrUnsupported)
		}
		sp.decoders = append(sp.decoders, replaceDecoder{*c.Pattern.String, *c.Content})
	case "ByteFallback":
		sp.decoders = append(sp.decoders, byteFallbackDecoder{})
	case "Fuse":
		sp.decoders = append(sp.decoders, fuseDecoder{})
	case "Strip":
		if c.Content == nil || utf8.RuneCountInString(*c.Content) != 1 || c.Start < 0 || c.Stop < 0 {
			return errors.New("\"Strip\" needs a one-character content and non-negative start/stop")
		}
		r, _ := utf8.DecodeRuneInString(*c.Content)
		sp.decoders = append(sp.decoders, stripDecoder{r, c.Start, c.Stop})
	case "Metaspace":
		d := metaspaceDecoder{scheme: "always"}
		r, n := utf8.DecodeRuneInString(c.Replacement)
		if n == 0 || n != len(c.Replacement) {
			return fmt.Errorf("\"Metaspace\" replacement %q is not one character", c.Replacement)
		}
		d.replacement = r
		switch {
		case c.PrependScheme != nil:
			d.scheme = *c.PrependScheme
		case c.AddPrefixSpace != nil && !*c.AddPrefixSpace:
			d.scheme = "never"
		}
		sp.decoders = append(sp.decoders, d)
	default:
		return fmt.Errorf("decoder %q: %w", c.Type, ErrUnsupported)
	}
	return nil
}

func (sp *spec) parsePostProcessor(v []byte) error {
	c, err := parseComponent(v)
	if err != nil || c == nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Processors {
			if err := sp.parsePostProcessor(sub); err != nil {
				return fmt.Errorf("processors[%d]: %w", i, err)
			}
		}
	case "ByteLevel":
		// Only adjusts offsets; ids are unchanged.
	case "TemplateProcessing":
		tp := &template{}
		seenA := false
		for _, it := range c.Single {
			switch {
			case it.Sequence != nil:
				if seenA {
					return errors.New("TemplateProcessing single has $A twice")
				}
				seenA = true
			case it.SpecialToken != nil:
				st, ok := c.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return fmt.Errorf("TemplateProcessing: special token %q not in special_tokens", it.SpecialToken.ID)
				}
				if seenA {
					tp.suffix = append(tp.suffix, st.IDs...)
				} else {
					tp.prefix = append(tp.prefix, st.IDs...)
				}
			}
		}
		sp.template = tp
	default:
		return fmt.Errorf("post-processor %q: %w", c.Type, ErrUnsupported)
	}
	return nil
}

// applyConfig reads BOS/EOS and add_bos_token/add_eos_token from
// tokenizer_config.json, falling back to special_tokens_map.json for names.
func (sp *spec) applyConfig(cfg, specialMap []byte) error {
	var c struct {
		BOS    json.RawMessage `json:"bos_token"`
		EOS    json.RawMessage `json:"eos_token"`
		AddBOS *bool           `json:"add_bos_token"`
		AddEOS *bool           `json:"add_eos_token"`
	}
	if len(cfg) > 0 {
		if err := json.Unmarshal(cfg, &c); err != nil {
			return fmt.Errorf("tokenizer_config.json: %w", err)
		}
	}
	var m struct {
		BOS json.RawMessage `json:"bos_token"`
		EOS json.RawMessage `json:"eos_token"`
	}
	if len(specialMap) > 0 {
		if err := json.Unmarshal(specialMap, &m); err != nil {
			return fmt.Errorf("special_tokens_map.json: %w", err)
		}
	}
	var err error
	if sp.bosName, err = tokenName(c.BOS, m.BOS); err != nil {
		return fmt.Errorf("tokenizer_config.json: bos_token: %w", err)
	}
	if sp.eosName, err = tokenName(c.EOS, m.EOS); err != nil {
		return fmt.Errorf("tokenizer_config.json: eos_token: %w", err)
	}
	sp.addBOS, sp.addEOS = c.AddBOS, c.AddEOS
	return nil
}

// tokenName reads a token given as a string or as {"content": ...}; the
// first non-empty of the candidates wins.
func tokenName(cands ...json.RawMessage) (string, error) {
	for _, v := range cands {
		if isNull(v) {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			if s != "" {
				return s, nil
			}
			continue
		}
		var o struct {
			Content string `json:"content"`
		}
		if err := json.Unmarshal(v, &o); err != nil {
			return "", fmt.Errorf("want a string or an object with content: %w", err)
		}
		if o.Content != "" {
			return o.Content, nil
		}
	}
	return "", nil
}

// intOrList reads an id given as a number or a list of numbers.
func intOrList(v json.RawMessage) ([]int, error) {
	if isNull(v) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(v, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(v, &many); err != nil {
		return nil, err
	}
	return many, nil
}
