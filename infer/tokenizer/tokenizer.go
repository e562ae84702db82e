// Package tokenizer encodes and decodes text exactly like Hugging Face
// `tokenizers` for the two Llama tokenizer families:
//
//   - byte-level BPE (Llama 3, GPT-2 style; Kind "llama3-bpe"): added/special
//     tokens are cut out of the text first, the rest is split by the
//     pre-tokenizer regex (a hand-written scanner for the Llama 3 and GPT-2
//     patterns, regexp2 for any other), each piece is BPE-merged over its
//     bytes by merge rank (a piece that is itself a token is taken whole when
//     ignore_merges is set), and the ByteLevel decoder maps tokens back to
//     bytes;
//   - SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama,
//     stories260k; Kind "sentencepiece-bpe"): normalizer Prepend("▁") +
//     Replace(" ", "▁") or a Metaspace pre-tokenizer, BPE over characters,
//     characters outside the vocabulary become <0xNN> byte tokens, and the
//     decoder chain Replace/ByteFallback/Fuse/Strip undoes it.
//
// A Tokenizer is immutable after loading and safe for concurrent use.
//
// Text that is not valid UTF-8 cannot reach Hugging Face (Python strings are
// Unicode); Encode first replaces each maximal invalid byte sequence with
// U+FFFD, as Python's bytes.decode(errors="replace") does. Decode returns
// valid UTF-8 the same way (Rust's String::from_utf8_lossy); DecodeToken
// returns the raw bytes of one token for streaming.
package tokenizer

import (
	"container/heap"
	"strings"
)

// Model kinds reported by Kind.
const (
	KindByteLevel     = "llama3-bpe"        // byte-level BPE (Llama 3, GPT-2 style)
	KindSentencePiece = "sentencepiece-bpe" // SentencePiece-style BPE with byte fallback (Llama 2)
)

// TokenType classifies a token with the values of GGUF's
// tokenizer.ggml.token_type (llama.cpp's llama_token_type).
type TokenType int32

// Token types, numbered as in GGUF.
const (
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3 // special added tokens (BOS, EOS, <|eot_id|>...)
	TokenUserDefined TokenType = 4 // non-special added tokens
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6 // <0xNN> byte-fallback tokens
)

// Tokenizer encodes text to token ids and decodes ids to text.
type Tokenizer struct {
	kind      string
	byteLevel bool // the model works on raw bytes (ByteLevel pre-tokenizer)

	vocab      []string       // id -> token as written in tokenizer.json (model vocab and added tokens)
	ids        map[string]int // token -> id, model vocab then added tokens (added win)
	modelVocab []string       // id -> token of the model vocabulary alone ("" where unused)
	shadowed   map[string]int // model tokens whose string an added token with another id took over
	tokenTypes []TokenType

	merges       map[uint64]mergeResult // (left id, right id) -> rank and merged id
	mergeList    [][2]int32             // rank -> (left, right)
	ignoreMerges bool
	byteFallback bool
	fuseUnk      bool
	unk          int      // -1 if none
	byteToken    [256]int // byte-level: id of the one-byte token; SentencePiece: id of <0xNN>; -1 if absent

	added       []addedToken
	addedRaw    *addedMatcher // added tokens matched on the raw text (normalized=false)
	addedNorm   *addedMatcher // added tokens matched on normalized text (normalized=true)
	special     map[int]bool
	normalizers []normalizer
	pretoks     []pretokenizer
	decoders    []decoder

	bos           int
	eos           []int
	prefix        []int // ids EncodeDefault puts before the text
	suffix        []int // ids EncodeDefault puts after the text
	addBOSDefault bool
	addEOSDefault bool
	pattern       string
}

type mergeResult struct {
	rank int32
	id   int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// Kind returns KindByteLevel or KindSentencePiece.
func (t *Tokenizer) Kind() string { return t.kind }

// VocabSize returns the number of token ids, added tokens included
// (128256 for Llama 3).
func (t *Tokenizer) VocabSize() int { return len(t.vocab) }

// BOS returns the beginning-of-sequence id, or -1 if there is none.
func (t *Tokenizer) BOS() int { return t.bos }

// EOS returns the end-of-sequence ids: tokenizer_config's eos_token first,
// then any further ids from generation_config.json (Load only).
func (t *Tokenizer) EOS() []int { return append([]int(nil), t.eos...) }

// Token returns the token string of id as written in tokenizer.json (byte-level
// tokens in the ByteLevel alphabet, e.g. "Ġthe"), or "" if id is out of range.
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.vocab) {
		return ""
	}
	return t.vocab[id]
}

// ID returns the id of a token string as written in tokenizer.json.
func (t *Tokenizer) ID(token string) (int, bool) {
	id, ok := t.ids[token]
	return id, ok
}

// IsSpecial reports whether id is a special added token (skipped by HF's
// decode with skip_special_tokens=True).
func (t *Tokenizer) IsSpecial(id int) bool { return t.special[id] }

// Vocab returns all token strings in id order (what GGUF's
// tokenizer.ggml.tokens holds).
func (t *Tokenizer) Vocab() []string { return append([]string(nil), t.vocab...) }

// Merges returns the merges in rank order as "left right" strings (GGUF's
// tokenizer.ggml.merges).
func (t *Tokenizer) Merges() []string {
	out := make([]string, len(t.mergeList))
	for i, m := range t.mergeList {
		out[i] = t.vocab[m[0]] + " " + t.vocab[m[1]]
	}
	return out
}

// TokenTypes returns the GGUF token type of every id.
func (t *Tokenizer) TokenTypes() []TokenType { return append([]TokenType(nil), t.tokenTypes...) }

// Pattern returns the pre-tokenizer regex of a byte-level tokenizer ("" for
// SentencePiece-style ones).
func (t *Tokenizer) Pattern() string { return t.pattern }

// Encode tokenizes text. With addBOS the BOS id is prepended (if the
// tokenizer has one), as the Llama post-processors do; nothing else is added.
// Added and special tokens written in the text ("<|begin_of_text|>") are
// recognised, as HF does by default.
func (t *Tokenizer) Encode(text string, addBOS bool) []int {
	ids := make([]int, 0, len(text)/4+2)
	if addBOS && t.bos >= 0 {
		ids = append(ids, t.bos)
	}
	return t.encode(lossyUTF8(text), ids)
}

// EncodeDefault tokenizes text and adds special tokens as Hugging Face does
// with add_special_tokens=True: tokenizer_config's add_bos_token /
// add_eos_token when given (LlamaTokenizerFast), otherwise the
// post-processor's template from tokenizer.json.
func (t *Tokenizer) EncodeDefault(text string) []int {
	ids := make([]int, 0, len(text)/4+len(t.prefix)+len(t.suffix))
	ids = append(ids, t.prefix...)
	ids = t.encode(lossyUTF8(text), ids)
	return append(ids, t.suffix...)
}

// encode appends the ids of valid UTF-8 text to ids.
func (t *Tokenizer) encode(text string, ids []int) []int {
	var st encodeState
	for _, seg := range t.addedRaw.split(text, nil) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		piece := text[seg.start:seg.end]
		atStart := seg.start == 0
		for _, n := range t.normalizers {
			piece = n.apply(piece)
		}
		if t.addedNorm == nil {
			ids = t.encodeNormalized(piece, atStart, ids, &st)
			continue
		}
		for _, sub := range t.addedNorm.split(piece, nil) {
			if sub.id >= 0 {
				ids = append(ids, sub.id)
				continue
			}
			ids = t.encodeNormalized(piece[sub.start:sub.end], atStart && sub.start == 0, ids, &st)
		}
	}
	return ids
}

// encodeState holds scratch buffers reused within one Encode call.
type encodeState struct {
	spans [][2]int
	key   []byte
	syms  []int32
	heap  mergeHeap
	nodes []bpeNode
}

// encodeNormalized pre-tokenizes one normalized segment and runs the model.
func (t *Tokenizer) encodeNormalized(s string, atStart bool, ids []int, st *encodeState) []int {
	if s == "" {
		return ids
	}
	pieces := []pretokPiece{{s, atStart}}
	for _, p := range t.pretoks {
		pieces = p.apply(pieces, st)
	}
	for _, p := range pieces {
		ids = t.model(p.text, ids, st)
	}
	return ids
}

// model runs BPE on one pre-token.
func (t *Tokenizer) model(w string, ids []int, st *encodeState) []int {
	if w == "" {
		return ids
	}
	if t.ignoreMerges {
		var id int
		var ok bool
		if t.byteLevel {
			st.key = appendByteLevel(st.key[:0], w)
			id, ok = t.modelIDBytes(st.key)
		} else {
			id, ok = t.modelID(w)
		}
		if ok {
			return append(ids, id)
		}
	}
	syms := st.syms[:0]
	if t.byteLevel {
		for i := 0; i < len(w); i++ {
			if id := t.byteToken[w[i]]; id >= 0 {
				syms = append(syms, int32(id))
			} else if t.unk >= 0 {
				syms = t.appendUnk(syms)
			}
		}
	} else {
		for i, r := range w {
			n := len(string(r))
			if id, ok := t.modelID(w[i : i+n]); ok {
				syms = append(syms, int32(id))
				continue
			}
			if t.byteFallback && t.allBytes(w[i:i+n]) {
				for k := i; k < i+n; k++ {
					syms = append(syms, int32(t.byteToken[w[k]]))
				}
				continue
			}
			if t.unk >= 0 {
				syms = t.appendUnk(syms)
			}
		}
	}
	syms = t.bpe(syms, st)
	st.syms = syms
	for _, id := range syms {
		ids = append(ids, int(id))
	}
	return ids
}

// modelID looks a token up in the model vocabulary (added tokens excluded,
// as HF's BPE model sees only its own vocabulary).
func (t *Tokenizer) modelID(tok string) (int, bool) {
	id, ok := t.ids[tok]
	if !ok {
		return 0, false
	}
	if id < len(t.modelVocab) && t.modelVocab[id] == tok {
		return id, true
	}
	id, ok = t.shadowed[tok]
	return id, ok
}

// modelIDBytes is modelID without converting tok to a string.
func (t *Tokenizer) modelIDBytes(tok []byte) (int, bool) {
	id, ok := t.ids[string(tok)]
	if ok && id < len(t.modelVocab) && t.modelVocab[id] == string(tok) {
		return id, true
	}
	if ok && t.shadowed != nil {
		return t.modelID(string(tok))
	}
	return 0, false
}

// appendUnk appends the unknown token, fusing it with a preceding one when
// fuse_unk is set.
func (t *Tokenizer) appendUnk(syms []int32) []int32 {
	if t.fuseUnk && len(syms) > 0 && syms[len(syms)-1] == int32(t.unk) {
		return syms
	}
	return append(syms, int32(t.unk))
}

func (t *Tokenizer) allBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if t.byteToken[s[i]] < 0 {
			return false
		}
	}
	return true
}

// bpe applies merges by rank (leftmost first among equal ranks) until none
// applies. Short words use a quadratic scan, long ones a heap; both give the
// order of HF's Word::merge_all.
func (t *Tokenizer) bpe(syms []int32, st *encodeState) []int32 {
	if len(syms) < 2 || len(t.merges) == 0 {
		return syms
	}
	if len(syms) > 48 {
		return t.bpeHeap(syms, st)
	}
	for len(syms) > 1 {
		best, bestRank, bestID := -1, int32(1<<31-1), int32(0)
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := t.merges[pairKey(syms[i], syms[i+1])]; ok && m.rank < bestRank {
				best, bestRank, bestID = i, m.rank, m.id
			}
		}
		if best < 0 {
			break
		}
		syms[best] = bestID
		syms = append(syms[:best+1], syms[best+2:]...)
	}
	return syms
}

type bpeNode struct {
	id         int32
	prev, next int32 // -1 at the ends
	dead       bool
}

type mergeCand struct {
	rank, pos, left, right, id int32
}

type mergeHeap []mergeCand

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeCand)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (t *Tokenizer) bpeHeap(syms []int32, st *encodeState) []int32 {
	nodes := st.nodes[:0]
	for i, id := range syms {
		nodes = append(nodes, bpeNode{id: id, prev: int32(i - 1), next: int32(i + 1)})
	}
	nodes[len(nodes)-1].next = -1
	h := st.heap[:0]
	push := func(pos int32) {
		if pos < 0 || nodes[pos].next < 0 {
			return
		}
		l, r := nodes[pos].id, nodes[nodes[pos].next].id
		if m, ok := t.merges[pairKey(l, r)]; ok {
			heap.Push(&h, mergeCand{m.rank, pos, l, r, m.id})
		}
	}
	for i := range nodes {
		if nodes[i].next >= 0 {
			if m, ok := t.merges[pairKey(nodes[i].id, nodes[i+1].id)]; ok {
				h = append(h, mergeCand{m.rank, int32(i), nodes[i].id, nodes[i+1].id, m.id})
			}
		}
	}
	heap.Init(&h)
	for h.Len() > 0 {
		c := heap.Pop(&h).(mergeCand)
		n := &nodes[c.pos]
		if n.dead || n.id != c.left || n.next < 0 || nodes[n.next].id != c.right {
			continue
		}
		right := n.next
		n.id = c.id
		n.next = nodes[right].next
		nodes[right].dead = true
		if n.next >= 0 {
			nodes[n.next].prev = c.pos
		}
		push(n.prev)
		push(c.pos)
	}
	out := syms[:0]
	for i := int32(0); i >= 0; i = nodes[i].next {
		out = append(out, nodes[i].id)
	}
	st.nodes, st.heap = nodes, h
	return out
}

// Decode turns ids into text like HF's decode with skip_special_tokens=False:
// tokens (added ones included) go through the decoder chain. Unknown ids are
// skipped. The result is valid UTF-8.
func (t *Tokenizer) Decode(ids []int) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < len(t.vocab) && t.vocab[id] != "" {
			toks = append(toks, t.vocab[id])
		}
	}
	if len(t.decoders) == 0 {
		return lossyUTF8(strings.Join(toks, " "))
	}
	for _, d := range t.decoders {
		toks = d.decodeChain(toks)
	}
	return lossyUTF8(strings.Join(toks, ""))
}

// DecodeToken returns the bytes one token stands for, for streaming output:
// byte-level tokens map back to raw bytes, <0xNN> byte-fallback tokens to one
// byte, and "▁" to a space. The bytes of consecutive tokens may split a UTF-8
// character; the leading space that Decode strips from a SentencePiece
// sequence is kept. Unknown ids give nil.
func (t *Tokenizer) DecodeToken(id int) []byte {
	if id < 0 || id >= len(t.vocab) {
		return nil
	}
	tok := t.vocab[id]
	if t.byteLevel {
		if raw, ok := byteLevelDecode(tok); ok {
			return raw
		}
		return []byte(tok)
	}
	if b, ok := byteFallbackByte(tok); ok && t.tokenTypes[id] == TokenByte {
		return []byte{b}
	}
	return []byte(strings.ReplaceAll(tok, "▁", " "))
}
