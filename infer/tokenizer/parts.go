package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Parts is a tokenizer in the shape GGUF stores it (tokenizer.ggml.*): what
// Tokenizer.Parts exports and FromParts rebuilds from.
type Parts struct {
	Kind       string      // KindByteLevel (GGUF model "gpt2") or KindSentencePiece (GGUF model "llama")
	Tokens     []string    // every token in id order, added tokens included (tokenizer.ggml.tokens)
	Merges     []string    // "left right" in rank order (tokenizer.ggml.merges)
	Scores     []float32   // SentencePiece piece scores (tokenizer.ggml.scores); used when Merges is empty
	TokenTypes []TokenType // per token (tokenizer.ggml.token_type); Control and UserDefined tokens are added tokens
	BOS        int         // -1 if none
	EOS        []int       // first is the primary EOS
	AddBOS     bool        // EncodeDefault prepends BOS (tokenizer.ggml.add_bos_token)
	AddEOS     bool        // EncodeDefault appends EOS (tokenizer.ggml.add_eos_token)
	Pattern    string      // byte-level pre-tokenizer regex; "" means Llama3Pattern
	// IgnoreMerges takes a pre-token that is itself a token whole (Llama 3
	// sets it; GGUF has no key for it, llama.cpp implies it for "llama-bpe").
	IgnoreMerges bool
}

// Parts exports the tokenizer for GGUF. For SentencePiece-style tokenizers
// Scores holds SentencePiece's convention (0 for special, unknown and byte
// tokens, minus the position for the others), which reproduces the merges.
func (t *Tokenizer) Parts() Parts {
	p := Parts{
		Kind:         t.kind,
		Tokens:       t.Vocab(),
		Merges:       t.Merges(),
		TokenTypes:   t.TokenTypes(),
		BOS:          t.bos,
		EOS:          t.EOS(),
		AddBOS:       t.addBOSDefault,
		AddEOS:       t.addEOSDefault,
		Pattern:      t.pattern,
		IgnoreMerges: t.ignoreMerges,
	}
	if t.kind == KindSentencePiece {
		p.Scores = make([]float32, len(t.vocab))
		n := 0
		for id, tt := range t.tokenTypes {
			if tt == TokenNormal {
				p.Scores[id] = -float32(n)
				n++
			}
		}
	}
	return p
}

// FromParts rebuilds a tokenizer from GGUF-style parts: byte-level ones get
// the Split(Pattern) + ByteLevel pipeline of Llama 3, SentencePiece-style ones
// the Prepend/Replace normalizer, byte fallback and decoder chain of Llama 2.
func FromParts(p Parts) (*Tokenizer, error) {
	n := len(p.Tokens)
	if n == 0 {
		return nil, errors.New("tokenizer parts: no tokens")
	}
	if len(p.TokenTypes) != 0 && len(p.TokenTypes) != n {
		return nil, fmt.Errorf("tokenizer parts: %d token types for %d tokens", len(p.TokenTypes), n)
	}
	if len(p.Scores) != 0 && len(p.Scores) != n {
		return nil, fmt.Errorf("tokenizer parts: %d scores for %d tokens", len(p.Scores), n)
	}
	if p.BOS < -1 || p.BOS >= n {
		return nil, fmt.Errorf("tokenizer parts: BOS %d out of range [0, %d)", p.BOS, n)
	}
	sp := &spec{vocab: make([]string, n), extraEOS: p.EOS, ignoreMerges: p.IgnoreMerges}
	sp.addBOS, sp.addEOS = &p.AddBOS, &p.AddEOS
	typ := func(id int) TokenType {
		if len(p.TokenTypes) == 0 {
			return TokenNormal
		}
		return p.TokenTypes[id]
	}
	seen := make(map[string]bool, n)
	for id, tok := range p.Tokens {
		if tok == "" {
			return nil, fmt.Errorf("tokenizer parts: token %d is empty", id)
		}
		switch tt := typ(id); tt {
		case TokenControl, TokenUserDefined:
			sp.added = append(sp.added, addedToken{id: id, content: tok, special: tt == TokenControl})
		case TokenUnknown:
			sp.unk, sp.hasUnk = tok, true
		}
		if seen[tok] {
			// Duplicates (padding tokens in some GGUFs) stay reachable by id only.
			continue
		}
		seen[tok] = true
		sp.vocab[id] = tok
	}
	for i, m := range p.Merges {
		a, b, ok := strings.Cut(m, " ")
		if !ok || strings.Contains(b, " ") {
			return nil, fmt.Errorf("tokenizer parts: merge %d %q: want \"left right\"", i, m)
		}
		sp.merges = append(sp.merges, [2]string{a, b})
	}
	switch p.Kind {
	case KindByteLevel:
		pat := p.Pattern
		if pat == "" {
			pat = Llama3Pattern
		}
		m, err := newMatcher(pat)
		if err != nil {
			return nil, fmt.Errorf("tokenizer parts: %w", err)
		}
		sp.byteLevel, sp.pattern = true, pat
		sp.pretoks = []pretokenizer{splitPretok{m: m, behavior: splitIsolated}}
		sp.decoders = []decoder{byteLevelDecoder{}}
	case KindSentencePiece:
		sp.normalizers = []normalizer{{isPrepend: true, prepend: "▁"}, {isReplaceStr: true, from: " ", to: "▁"}}
		sp.decoders = []decoder{replaceDecoder{"▁", " "}, byteFallbackDecoder{}, fuseDecoder{}, stripDecoder{' ', 1, 0}}
		sp.byteFallback, sp.fuseUnk = true, true
		if len(sp.merges) == 0 && len(p.Scores) == n {
			sp.merges = mergesFromScores(sp.vocab, p.Scores)
		}
	default:
		return nil, fmt.Errorf("tokenizer parts: kind %q: %w", p.Kind, ErrUnsupported)
	}
	if p.BOS >= 0 {
		sp.bosName = p.Tokens[p.BOS]
	}
	t, err := build(sp)
	if err != nil {
		return nil, fmt.Errorf("tokenizer parts: %w", err)
	}
	if p.BOS >= 0 {
		t.bos = p.BOS
		if p.AddBOS {
			t.prefix = []int{p.BOS}
		}
	}
	for id, tok := range p.Tokens {
		if t.vocab[id] == "" { // a duplicate: keep its text for Token and Decode
			t.vocab[id] = tok
		}
	}
	if len(p.TokenTypes) != 0 {
		copy(t.tokenTypes, p.TokenTypes)
	}
	return t, nil
}

// mergesFromScores derives BPE merges from SentencePiece scores as
// transformers' SentencePieceExtractor does: every split of a piece into two
// pieces of the vocabulary is a merge, ordered by the piece's score (highest
// first), ties by the ids of the two halves.
func mergesFromScores(vocab []string, scores []float32) [][2]string {
	ids := make(map[string]int, len(vocab))
	for id, tok := range vocab {
		if tok != "" {
			ids[tok] = id
		}
	}
	type cand struct {
		l, r  string
		score float32
	}
	var all []cand
	for id, piece := range vocab {
		var local []cand
		for k := 1; k < len(piece); k++ {
			l, r := piece[:k], piece[k:]
			_, okL := ids[l]
			_, okR := ids[r]
			if okL && okR {
				local = append(local, cand{l, r, scores[id]})
			}
		}
		sort.SliceStable(local, func(i, j int) bool {
			if ids[local[i].l] != ids[local[j].l] {
				return ids[local[i].l] < ids[local[j].l]
			}
			return ids[local[i].r] < ids[local[j].r]
		})
		all = append(all, local...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].score > all[j].score })
	out := make([][2]string, len(all))
	for i, c := range all {
		out[i] = [2]string{c.l, c.r}
	}
	return out
}
