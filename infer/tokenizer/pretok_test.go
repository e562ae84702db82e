package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// alphabet mixes every character class the patterns distinguish: ASCII
// letters, digits, punctuation, the contraction letters, all whitespace
// kinds (Unicode White_Space included), letters and numbers outside ASCII,
// marks, emoji and symbols.
var alphabet = []rune("aAsStTrReEvVmMlLdDxZ019'''’\" \t\n\r\v\f.,!?-_()<>|/\\#@$%&*+=~`^" +
	"\u0085\u00a0\u1680\u2000\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff\u200b\u200d" +
	"éÅßçİıκΣЖжاب中日한국Ⅻⅷ½²٣߀\u0301\u0308🦙🚀👍🏽€£©®")

func randomText(r *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteRune(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// TestScannersMatchRegexp2 checks the hand-written scanners against the
// backtracking regexp2 engine on the patterns themselves.
func TestScannersMatchRegexp2(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pattern string
		fast    matcher
	}{
		{"llama3", Llama3Pattern, llama3Scanner{}},
		{"gpt2", GPT2Pattern, gpt2Scanner{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := newRegexpMatcher(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			fixed := []string{"", " ", "  ", "a", " a", "  a", "\n", " \n ", "a \n\n b", "I'm", "I'M", "'sx",
				"'", "x'", "''s", "12345", " 123", "  !!\n\n", "!!\r\n", "\t\tx", " \u00a0x", "a  ", "a\u3000\u3000b",
				"don't you'll 've 'LL 'Re", "\r\n\r\n  \n", "x\u2028y", "ⅫⅫⅫⅫ", "½½½½½"}
			r := rand.New(rand.NewPCG(1, 2))
			for range 20000 {
				fixed = append(fixed, randomText(r, 1+r.IntN(24)))
			}
			bad := 0
			for _, s := range fixed {
				got := tc.fast.matches(s, nil)
				want := ref.matches(s, nil)
				if !slices.Equal(got, want) {
					bad++
					if bad < 10 {
						t.Errorf("%q:\n fast   %v %q\n regexp %v %q", s, got, pieces(s, got), want, pieces(s, want))
					}
				}
			}
		})
	}
}

func pieces(s string, spans [][2]int) []string {
	var out []string
	for _, sp := range spans {
		out = append(out, s[sp[0]:sp[1]])
	}
	return out
}

// TestContractionFolding documents where the scanner follows Oniguruma (which
// HF uses) rather than regexp2: (?i) folds U+017F LATIN SMALL LETTER LONG S to s.
func TestContractionFolding(t *testing.T) {
	got := pieces("'ſ", llama3Scanner{}.matches("'ſ", nil))
	if !slices.Equal(got, []string{"'ſ"}) {
		t.Errorf("got %q", got)
	}
}

func TestScannerTilesInput(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		s := randomText(r, r.IntN(40))
		for _, m := range []matcher{llama3Scanner{}, gpt2Scanner{}} {
			var b strings.Builder
			for _, sp := range m.matches(s, nil) {
				if sp[0] >= sp[1] || !utf8.ValidString(s[sp[0]:sp[1]]) {
					t.Fatalf("%q: bad span %v", s, sp)
				}
				b.WriteString(s[sp[0]:sp[1]])
			}
			if b.String() != s {
				t.Fatalf("%q: spans do not tile the input", s)
			}
		}
	}
}
