package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// Llama3Pattern is the pre-tokenizer regex of Llama 3 (tiktoken cl100k style).
// Tokenizers whose Split pattern equals it use a hand-written scanner.
const Llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// GPT2Pattern is the regex of the ByteLevel pre-tokenizer with use_regex=true
// (GPT-2); it too has a hand-written scanner.
const GPT2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// matcher finds the non-overlapping matches of a pattern, left to right, as
// byte spans appended to dst.
type matcher interface {
	matches(s string, dst [][2]int) [][2]int
}

// newMatcher returns the fast scanner for the known patterns and a regexp2
// (backtracking, .NET/Oniguruma-like syntax) matcher otherwise.
func newMatcher(pattern string) (matcher, error) {
	switch pattern {
	case Llama3Pattern:
		return llama3Scanner{}, nil
	case GPT2Pattern:
		return gpt2Scanner{}, nil
	}
	return newRegexpMatcher(pattern)
}

// regexpMatcher is the generic fallback; regexp2 reports rune offsets.
type regexpMatcher struct{ re *regexp2.Regexp }

func newRegexpMatcher(pattern string) (regexpMatcher, error) {
	re, err := regexp2.Compile(pattern, regexp2.Unicode)
	if err != nil {
		return regexpMatcher{}, fmt.Errorf("compile pre-tokenizer regex %q: %w", pattern, err)
	}
	return regexpMatcher{re}, nil
}

func (m regexpMatcher) matches(s string, dst [][2]int) [][2]int {
	runes := []rune(s)
	// byteAt[i] is the byte offset of rune i.
	byteAt := make([]int, len(runes)+1)
	off := 0
	for i, r := range runes {
		byteAt[i] = off
		off += utf8.RuneLen(r)
	}
	byteAt[len(runes)] = off
	mt, err := m.re.FindRunesMatch(runes)
	for err == nil && mt != nil {
		if mt.Length > 0 {
			dst = append(dst, [2]int{byteAt[mt.Index], byteAt[mt.Index+mt.Length]})
		}
		mt, err = m.re.FindNextMatch(mt)
	}
	return dst
}

// literalMatcher matches a fixed string (Split with a String pattern).
type literalMatcher string

func (m literalMatcher) matches(s string, dst [][2]int) [][2]int {
	if m == "" {
		return dst
	}
	for i := 0; ; {
		j := strings.Index(s[i:], string(m))
		if j < 0 {
			return dst
		}
		dst = append(dst, [2]int{i + j, i + j + len(m)})
		i += j + len(m)
	}
}

// Character classes of the patterns: \p{L}, \p{N} and \s (Unicode
// White_Space, which is what Oniguruma's and regexp2's \s match).
const (
	clsOther = iota // [^\s\p{L}\p{N}]
	clsLetter
	clsNumber
	clsSpace
)

var asciiClass = func() (t [128]uint8) {
	for c := 0; c < 128; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			t[c] = clsLetter
		case c >= '0' && c <= '9':
			t[c] = clsNumber
		case c == ' ', c >= '\t' && c <= '\r':
			t[c] = clsSpace
		default:
			t[c] = clsOther
		}
	}
	return t
}()

func classOf(r rune) uint8 {
	if r < 128 {
		return asciiClass[r]
	}
	switch {
	case unicode.IsLetter(r):
		return clsLetter
	case unicode.IsNumber(r):
		return clsNumber
	case unicode.IsSpace(r):
		return clsSpace
	}
	return clsOther
}

// at decodes the rune at byte i; invalid bytes come back as U+FFFD (class
// other), width 1. Callers pass valid UTF-8.
func at(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// letterRun returns the end of the run of letters starting at i.
func letterRun(s string, i int) int {
	for i < len(s) {
		r, n := at(s, i)
		if classOf(r) != clsLetter {
			break
		}
		i += n
	}
	return i
}

// otherRun returns the end of the run of [^\s\p{L}\p{N}] starting at i.
func otherRun(s string, i int) int {
	for i < len(s) {
		r, n := at(s, i)
		if classOf(r) != clsOther {
			break
		}
		i += n
	}
	return i
}

// foldEq reports whether r equals the lower-case ASCII letter c under
// Unicode simple case folding, as Oniguruma's (?i) does: besides the ASCII
// upper case, U+017F (long s) folds to 's' and U+212A (Kelvin) to 'k'.
func foldEq(r rune, c byte) bool {
	if r == rune(c) || r == rune(c)-'a'+'A' {
		return true
	}
	return (c == 's' && r == 0x17F) || (c == 'k' && r == 0x212A)
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (s[i] == '\”) and
// returns the end, or -1. fold selects case-insensitive matching.
func contraction(s string, i int, fold bool) int {
	eq := func(r rune, c byte) bool {
		if fold {
			return foldEq(r, c)
		}
		return r == rune(c)
	}
	j := i + 1
	if j >= len(s) {
		return -1
	}
	r1, n1 := at(s, j)
	for _, c := range []byte{'s', 't', 'm', 'd'} {
		if eq(r1, c) {
			return j + n1
		}
	}
	if j+n1 >= len(s) {
		return -1
	}
	r2, n2 := at(s, j+n1)
	switch {
	case eq(r1, 'r') && eq(r2, 'e'), eq(r1, 'v') && eq(r2, 'e'), eq(r1, 'l') && eq(r2, 'l'):
		return j + n1 + n2
	}
	return -1
}

// spaceTail handles the whitespace alternatives shared by both patterns,
// `\s+(?!\S)|\s+`, for a whitespace run [i, j) whose last rune starts at
// last: the run minus its last rune if a non-space follows, else the run.
func spaceTail(s string, i, j, last int) int {
	if j < len(s) && last > i {
		return last
	}
	return j
}

// spaceRun returns the end of the whitespace run from i, the start of its
// last rune, and the end of its last \r or \n (-1 if none).
func spaceRun(s string, i int) (end, last, lastNL int) {
	lastNL = -1
	last = i
	for i < len(s) {
		r, n := at(s, i)
		if classOf(r) != clsSpace {
			break
		}
		if r == '\r' || r == '\n' {
			lastNL = i + 1
		}
		last = i
		i += n
	}
	return i, last, lastNL
}

// llama3Scanner implements Llama3Pattern exactly, alternative by alternative
// (leftmost-first, greedy, with the backtracking each alternative needs):
//
//	1 (?i:'s|'t|'re|'ve|'m|'ll|'d)
//	2 [^\r\n\p{L}\p{N}]?\p{L}+
//	3 \p{N}{1,3}
//	4  ?[^\s\p{L}\p{N}]+[\r\n]*
//	5 \s*[\r\n]+
//	6 \s+(?!\S)
//	7 \s+
//
// Every rune is a letter, number, space or other, so some alternative
// always matches and the spans tile the input.
type llama3Scanner struct{}

func (llama3Scanner) matches(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		end := llama3Next(s, i)
		dst = append(dst, [2]int{i, end})
		i = end
	}
	return dst
}

func llama3Next(s string, i int) int {
	r0, n0 := at(s, i)
	c0 := classOf(r0)
	if r0 == '\'' {
		if e := contraction(s, i, true); e > 0 {
			return e
		}
	}
	// 2: optional non-letter/number/newline, then letters.
	if c0 == clsLetter {
		return letterRun(s, i+n0)
	}
	if c0 != clsNumber && r0 != '\r' && r0 != '\n' && i+n0 < len(s) {
		if r1, _ := at(s, i+n0); classOf(r1) == clsLetter {
			return letterRun(s, i+n0)
		}
	}
	// 3: up to three numbers.
	if c0 == clsNumber {
		j := i + n0
		for k := 0; k < 2 && j < len(s); k++ {
			r, n := at(s, j)
			if classOf(r) != clsNumber {
				break
			}
			j += n
		}
		return j
	}
	// 4: optional space, others, trailing newlines.
	j := -1
	if c0 == clsOther {
		j = otherRun(s, i+n0)
	} else if r0 == ' ' && i+1 < len(s) {
		if r1, _ := at(s, i+1); classOf(r1) == clsOther {
			j = otherRun(s, i+1)
		}
	}
	if j >= 0 {
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j
	}
	// c0 is whitespace from here on.
	end, last, lastNL := spaceRun(s, i)
	if lastNL > 0 { // 5
		return lastNL
	}
	return spaceTail(s, i, end, last) // 6, 7
}

// gpt2Scanner implements GPT2Pattern:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
type gpt2Scanner struct{}

func (gpt2Scanner) matches(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		end := gpt2Next(s, i)
		dst = append(dst, [2]int{i, end})
		i = end
	}
	return dst
}

func gpt2Next(s string, i int) int {
	r0, _ := at(s, i)
	if r0 == '\'' {
		if e := contraction(s, i, false); e > 0 {
			return e
		}
	}
	start, c := i, classOf(r0)
	if r0 == ' ' && i+1 < len(s) {
		if r1, _ := at(s, i+1); classOf(r1) != clsSpace {
			start, c = i+1, classOf(r1)
		}
	} else if c != clsSpace {
		start = i
	}
	if c != clsSpace {
		j := start
		for j < len(s) {
			r, n := at(s, j)
			if classOf(r) != c {
				break
			}
			j += n
		}
		return j
	}
	end, last, _ := spaceRun(s, i)
	return spaceTail(s, i, end, last)
}
