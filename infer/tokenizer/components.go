package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// normalizer is one step of the normalizer chain.
type normalizer struct {
	prepend      string // Prepend: added in front of a non-empty string
	from, to     string // Replace(String pattern)
	isPrepend    bool
	isReplaceStr bool
}

func (n normalizer) apply(s string) string {
	switch {
	case n.isPrepend:
		if s == "" {
			return s
		}
		return n.prepend + s
	case n.isReplaceStr:
		if n.from == "" {
			return s
		}
		return strings.ReplaceAll(s, n.from, n.to)
	}
	return s
}

// pretokPiece is a piece of text on its way through the pre-tokenizers;
// atStart is true when it begins at offset 0 of the input (Metaspace's
// prepend_scheme "first" looks at that).
type pretokPiece struct {
	text    string
	atStart bool
}

// pretokenizer is one step of the pre-tokenizer chain.
type pretokenizer interface {
	apply(in []pretokPiece, st *encodeState) []pretokPiece
}

// splitBehavior is how Split treats the matched spans.
type splitBehavior int

const (
	splitIsolated splitBehavior = iota // matches and gaps are separate pieces
	splitRemoved                       // matches are dropped
	splitMergedWithPrevious
	splitMergedWithNext
)

// splitPretok is Split(pattern, behavior) and ByteLevel(use_regex=true).
type splitPretok struct {
	m           matcher
	behavior    splitBehavior
	prefixSpace bool // ByteLevel add_prefix_space
}

func (p splitPretok) apply(in []pretokPiece, st *encodeState) []pretokPiece {
	out := make([]pretokPiece, 0, len(in)*4)
	for _, pc := range in {
		s := pc.text
		if p.prefixSpace && !strings.HasPrefix(s, " ") {
			s = " " + s
		}
		if p.m == nil {
			out = append(out, pretokPiece{s, pc.atStart})
			continue
		}
		st.spans = p.m.matches(s, st.spans[:0])
		prev := 0
		first := pc.atStart
		emit := func(a, b int) {
			if a < b {
				out = append(out, pretokPiece{s[a:b], first && a == 0})
			}
		}
		pendingStart := -1 // MergedWithNext: start of a match waiting for its gap
		for _, sp := range st.spans {
			switch p.behavior {
			case splitIsolated:
				emit(prev, sp[0])
				emit(sp[0], sp[1])
			case splitRemoved:
				emit(prev, sp[0])
			case splitMergedWithPrevious:
				emit(prev, sp[1])
			case splitMergedWithNext:
				if pendingStart >= 0 {
					emit(pendingStart, sp[0])
				} else {
					emit(prev, sp[0])
				}
				pendingStart = sp[0]
			}
			prev = sp[1]
		}
		if pendingStart >= 0 {
			emit(pendingStart, len(s))
		} else {
			emit(prev, len(s))
		}
	}
	return out
}

// metaspacePretok is Metaspace(replacement, prepend_scheme, split).
type metaspacePretok struct {
	replacement string
	scheme      string // "always", "first" or "never"
	split       bool
}

func (p metaspacePretok) apply(in []pretokPiece, _ *encodeState) []pretokPiece {
	out := make([]pretokPiece, 0, len(in))
	for _, pc := range in {
		s := strings.ReplaceAll(pc.text, " ", p.replacement)
		if !strings.HasPrefix(s, p.replacement) &&
			(p.scheme == "always" || (p.scheme == "first" && pc.atStart)) {
			s = p.replacement + s
		}
		if !p.split {
			out = append(out, pretokPiece{s, pc.atStart})
			continue
		}
		// MergedWithNext on the replacement character.
		start := 0
		for i := 0; i < len(s); {
			j := strings.Index(s[i:], p.replacement)
			if j < 0 {
				break
			}
			if i+j > start {
				out = append(out, pretokPiece{s[start : i+j], pc.atStart && start == 0})
				start = i + j
			}
			i += j + len(p.replacement)
		}
		if start < len(s) {
			out = append(out, pretokPiece{s[start:], pc.atStart && start == 0})
		}
	}
	return out
}

// decoder is one step of the decoder chain (HF's decode_chain).
type decoder interface {
	decodeChain(toks []string) []string
}

// byteLevelDecoder maps the ByteLevel alphabet back to bytes and joins them.
type byteLevelDecoder struct{}

func (byteLevelDecoder) decodeChain(toks []string) []string {
	var raw []byte
	for _, t := range toks {
		if b, ok := byteLevelDecode(t); ok {
			raw = append(raw, b...)
		} else {
			raw = append(raw, t...)
		}
	}
	return []string{lossyUTF8(string(raw))}
}

// replaceDecoder is Replace(String pattern, content) applied to every token.
type replaceDecoder struct{ from, to string }

func (d replaceDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		out[i] = strings.ReplaceAll(t, d.from, d.to)
	}
	return out
}

// byteFallbackByte parses a "<0xNN>" token.
func byteFallbackByte(tok string) (byte, bool) {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(tok[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

// byteFallbackDecoder turns runs of <0xNN> tokens into text; a run that is
// not valid UTF-8 becomes one U+FFFD per byte, as in HF.
type byteFallbackDecoder struct{}

func (byteFallbackDecoder) decodeChain(toks []string) []string {
	out := make([]string, 0, len(toks))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range toks {
		if b, ok := byteFallbackByte(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// fuseDecoder joins all tokens into one.
type fuseDecoder struct{}

func (fuseDecoder) decodeChain(toks []string) []string {
	return []string{strings.Join(toks, "")}
}

// stripDecoder removes up to start leading and stop trailing copies of
// content from every token.
type stripDecoder struct {
	content     rune
	start, stop int
}

func (d stripDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		rs := []rune(t)
		a := 0
		for a < d.start && a < len(rs) && rs[a] == d.content {
			a++
		}
		b := len(rs)
		for k := 0; k < d.stop && b > a && rs[b-1] == d.content; k++ {
			b--
		}
		out[i] = string(rs[a:b])
	}
	return out
}

// metaspaceDecoder replaces the replacement character by a space; in the
// first token it is dropped instead unless prepend_scheme is "never".
type metaspaceDecoder struct {
	replacement rune
	scheme      string
}

func (d metaspaceDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		var b strings.Builder
		for _, r := range t {
			if r == d.replacement {
				if i == 0 && d.scheme != "never" {
					continue
				}
				b.WriteByte(' ')
				continue
			}
			b.WriteRune(r)
		}
		out[i] = b.String()
	}
	return out
}

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	id                                          int
	content                                     string
	special, lstrip, rstrip, singleWord, normed bool
}

// addedMatcher finds added tokens in text: leftmost match first, the longest
// among those starting there (Aho-Corasick LeftmostLongest, as HF).
type addedMatcher struct {
	byFirst [256][]addedPattern // candidates by first byte, longest first
}

type addedPattern struct {
	text string
	tok  *addedToken
}

func newAddedMatcher(patterns []addedPattern) *addedMatcher {
	if len(patterns) == 0 {
		return nil
	}
	m := &addedMatcher{}
	for _, p := range patterns {
		if p.text == "" {
			continue
		}
		m.byFirst[p.text[0]] = append(m.byFirst[p.text[0]], p)
	}
	for i := range m.byFirst {
		sort.SliceStable(m.byFirst[i], func(a, b int) bool {
			return len(m.byFirst[i][a].text) > len(m.byFirst[i][b].text)
		})
	}
	return m
}

// segment is a span of the input that is either an added token (id >= 0)
// or text still to be tokenized (id == -1).
type segment struct {
	start, end, id int
}

// split cuts s at added tokens, honouring single_word, lstrip and rstrip like
// HF's AddedVocabulary::find_matches. A nil matcher returns s whole.
func (m *addedMatcher) split(s string, dst []segment) []segment {
	if m == nil {
		return append(dst, segment{0, len(s), -1})
	}
	startOffset := 0
	for i := 0; i < len(s); {
		cands := m.byFirst[s[i]]
		var hit *addedPattern
		for k := range cands {
			if strings.HasPrefix(s[i:], cands[k].text) {
				hit = &cands[k]
				break
			}
		}
		if hit == nil {
			i++
			continue
		}
		start, stop := i, i+len(hit.text)
		i = stop // the match iterator resumes after the match itself
		tok := hit.tok
		if start < startOffset {
			continue // inside whitespace already taken by an rstrip
		}
		if tok.singleWord {
			if (start > 0 && endsWithWord(s[:start])) || (stop < len(s) && startsWithWord(s[stop:])) {
				continue
			}
		}
		if tok.lstrip {
			start = max(len(strings.TrimRightFunc(s[:start], unicode.IsSpace)), startOffset)
		}
		if tok.rstrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
		}
		if startOffset < start {
			dst = append(dst, segment{startOffset, start, -1})
		}
		dst = append(dst, segment{start, stop, tok.id})
		startOffset = stop
	}
	if startOffset < len(s) {
		dst = append(dst, segment{startOffset, len(s), -1})
	}
	return dst
}

func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.In(r, unicode.M, unicode.Pc)
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordRune(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordRune(r)
}
