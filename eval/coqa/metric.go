package coqa

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// pyPunctuation is Python's string.punctuation: the 32 ASCII punctuation
// characters. Non-ASCII punctuation is deliberately not in it.
const pyPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

// Normalize is SQuAD's normalize_answer with Python semantics: str.lower()
// (full Unicode lowercasing), removal of ASCII string.punctuation, removal of
// the articles a/an/the as whole words (Python re's Unicode \b), and
// whitespace collapsing with str.split() (Unicode whitespace).
func Normalize(s string) string {
	return strings.Join(pySplit(removeArticles(removePunct(PyLower(s)))), " ")
}

// Tokens is get_tokens: nil for an empty string, else the whitespace split of
// Normalize(s).
func Tokens(s string) []string {
	if s == "" {
		return nil
	}
	return pySplit(removeArticles(removePunct(PyLower(s))))
}

// ExactMatch is compute_exact: 1 if the normalised strings are equal, else 0.
func ExactMatch(gold, pred string) float64 {
	if Normalize(gold) == Normalize(pred) {
		return 1
	}
	return 0
}

// F1 is compute_f1: the harmonic mean of token precision and recall over the
// token multisets of the normalised strings. If either side has no tokens the
// result is 1 when both have none, else 0. The floating-point operations are
// done in the same order as the Python reference so results are bit-identical.
func F1(gold, pred string) float64 {
	return f1Tokens(Tokens(gold), Tokens(pred))
}

// TurnScore combines EM and F1 of pred over a gold list as both reference
// implementations do: with n > 1 golds, each gold in turn is left out and the
// maximum over the remaining n-1 is taken; the n maxima are averaged. With a
// single gold it is compared directly. An empty gold list scores 0.
func TurnScore(golds []string, pred string) (em, f1 float64) {
	// Normalise and tokenise each string once; results equal the pairwise
	// ExactMatch/F1 calls.
	type norm struct {
		text string
		toks []string
	}
	mk := func(s string) norm {
		if s == "" {
			return norm{}
		}
		t := Tokens(s)
		return norm{strings.Join(t, " "), t}
	}
	p := mk(pred)
	gs := make([]norm, len(golds))
	ems := make([]float64, len(golds))
	f1s := make([]float64, len(golds))
	for i, g := range golds {
		gs[i] = mk(g)
		if gs[i].text == p.text {
			ems[i] = 1
		}
		f1s[i] = f1Tokens(gs[i].toks, p.toks)
	}
	var emSum, f1Sum float64
	n := len(golds)
	if n > 1 {
		for i := range n {
			bestEM, bestF1 := -1.0, -1.0
			for j := range n {
				if j == i {
					continue
				}
				bestEM = max(bestEM, ems[j])
				bestF1 = max(bestF1, f1s[j])
			}
			emSum += bestEM
			f1Sum += bestF1
		}
	} else if n == 1 {
		emSum += ems[0]
		f1Sum += f1s[0]
	}
	d := float64(max(1, n))
	return emSum / d, f1Sum / d
}

// f1Tokens is F1 on already tokenised strings.
func f1Tokens(g, p []string) float64 {
	if len(g) == 0 || len(p) == 0 {
		if len(g) == len(p) {
			return 1
		}
		return 0
	}
	counts := make(map[string]int, len(g))
	for _, t := range g {
		counts[t]++
	}
	same := 0
	for _, t := range p {
		if counts[t] > 0 {
			counts[t]--
			same++
		}
	}
	if same == 0 {
		return 0
	}
	precision := 1.0 * float64(same) / float64(len(p))
	recall := 1.0 * float64(same) / float64(len(g))
	return (2 * precision * recall) / (precision + recall)
}

func removePunct(s string) string {
	if !strings.ContainsAny(s, pyPunctuation) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r < utf8.RuneSelf && strings.ContainsRune(pyPunctuation, r) {
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// isPyWord reports whether r is a word character for Python re with the
// UNICODE flag (str.isalnum() or '_'): letters and numbers, not marks.
func isPyWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r)
}

// removeArticles is re.sub(r"\b(a|an|the)\b", " ", s) with Python's Unicode
// word boundaries. Boundaries are evaluated on the original string, as re.sub
// does, and matches do not overlap.
func removeArticles(s string) string {
	rs := []rune(s)
	var out []rune
	last := 0 // start of the not yet copied input
	i := 0
	for i < len(rs) {
		if (rs[i] == 'a' || rs[i] == 't') && (i == 0 || !isPyWord(rs[i-1])) {
			n := 0
			switch {
			case hasWordAt(rs, i, "a"):
				n = 1
			case hasWordAt(rs, i, "an"):
				n = 2
			case hasWordAt(rs, i, "the"):
				n = 3
			}
			if n > 0 {
				if out == nil {
					out = make([]rune, 0, len(rs))
				}
				out = append(out, rs[last:i]...)
				out = append(out, ' ')
				i += n
				last = i
				continue
			}
		}
		i++
	}
	if out == nil {
		return s
	}
	out = append(out, rs[last:]...)
	return string(out)
}

// hasWordAt reports whether w occurs at rs[i:] followed by a word boundary.
func hasWordAt(rs []rune, i int, w string) bool {
	j := i
	for _, r := range w {
		if j >= len(rs) || rs[j] != r {
			return false
		}
		j++
	}
	return j == len(rs) || !isPyWord(rs[j])
}

// isPySpace reports whether Python's str.isspace() holds for r: Unicode
// White_Space plus the ASCII information separators U+001C..U+001F.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// pySplit is Python's str.split() with no argument.
func pySplit(s string) []string {
	return strings.FieldsFunc(s, isPySpace)
}

// pyStrip is Python's str.strip() with no argument.
func pyStrip(s string) string {
	return strings.TrimFunc(s, isPySpace)
}

// PyLower is Python's str.lower(): full Unicode lowercasing, including the
// multi-rune mapping of U+0130 (İ → "i̇") and the Final_Sigma rule for
// U+03A3 (Σ → ς at the end of a word, σ elsewhere). Other runes use Go's
// simple case mapping, which equals Python's full mapping for them.
func PyLower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range rs {
		switch r {
		case 0x130:
			b.WriteString("i\u0307")
		case 0x3a3:
			if finalSigma(rs, i) {
				b.WriteRune(0x3c2)
			} else {
				b.WriteRune(0x3c3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma implements CPython's handle_capital_sigma: Σ at rs[i] is final
// when preceded by a cased letter (skipping case-ignorable runes) and not
// followed by one (again skipping case-ignorable runes).
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && isCaseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !isCased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && isCaseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !isCased(rs[j])
}

func isCased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

// isCaseIgnorable approximates Unicode's Case_Ignorable property: categories
// Mn, Me, Cf, Lm, Sk plus Word_Break MidLetter, MidNumLet and Single_Quote.
func isCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xb7, 0x387, 0x55f, 0x5f4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xfe13, 0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}
