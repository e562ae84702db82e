package coqa

import (
	"math"
	"testing"
)

// Expected values in this file were produced with CPython 3 running the
// normalize_answer / compute_exact / compute_f1 / _compute_turn_score code of
// evaluate-v1.0.py (identical to transformers' squad_metrics) and round().

func TestNormalize(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"article alone", "The", ""},
		{"article a", "a", ""},
		{"punct then article", "the.", ""},
		{"punct removed before articles", "a-b", "ab"},
		{"punctuation only", "...", ""},
		{"another is not an article", "Another answer", "another answer"},
		{"articles inside", "an apple and the pear", "apple and pear"},
		{"articles repeated", "the, the", ""},
		{"articles adjacent", "a a a", ""},
		{"dotted capital I", "İstanbul", "i\u0307stanbul"},
		{"final sigma", "ΟΔΟΣ", "οδος"},
		{"final and initial sigma", "ΟΔΟΣ ΣΑ", "οδος σα"},
		{"lone sigma", "Σ", "σ"},
		{"sigma before ignorable", "aΣ.b", "aσb"},
		{"unicode whitespace", "in\u00a0a\u2009barn\u3000now", "in barn now"},
		{"python-only whitespace", "x\x1cy", "x y"},
		{"combining mark ends word", "the\u0301 cat", "\u0301 cat"},
		{"underscore and digits are word chars", "café the_x the2 an_a", "café thex the2 ana"},
		{"non-ascii punctuation kept", "“quoted” — dash…", "“quoted” — dash…"},
		{"apostrophe", "Don't", "dont"},
		{"ligature unchanged", "ﬁne", "ﬁne"},
		{"capital sharp s", "ẞ", "ß"},
		{"titlecase digraph", "Ǆemal", "ǆemal"},
		{"tabs and newlines", "The\tcat\nsat", "cat sat"},
		{"spaces only", "  ", ""},
		{"empty", "", ""},
		{"number", "3,000", "3000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Normalize(tc.in); got != tc.want {
				t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestExactAndF1Pairs(t *testing.T) {
	tests := []struct {
		name       string
		gold, pred string
		em, f1     float64
	}{
		{"both normalise to nothing", "The", "a", 1, 1},
		{"punctuation-only pred vs word", "x", "...", 0, 0},
		{"empty pred", "Tomas", "", 0, 0},
		{"both empty", "", "", 1, 1},
		{"case", "Yes", "YES", 1, 1},
		{"multiset counts", "the cat sat on the mat", "cat cat mat", 0, 0.5714285714285715},
		{"worked example pair", "in a barn near", "in a barn", 0, 0.8},
		{"no overlap", "red", "blue", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExactMatch(tc.gold, tc.pred); got != tc.em {
				t.Errorf("EM = %v, want %v", got, tc.em)
			}
			if got := F1(tc.gold, tc.pred); got != tc.f1 {
				t.Errorf("F1 = %v, want %v", got, tc.f1)
			}
		})
	}
}

func TestTurnScore(t *testing.T) {
	tests := []struct {
		name   string
		golds  []string
		pred   string
		em, f1 float64
	}{
		// coqa.md section 7 worked example, both flavours.
		{"worked example official (4 golds)", []string{"in a barn", "in a barn", "in a barn", "in a barn near"}, "in a barn", 1, 1},
		{"worked example lmeval (dedup)", []string{"in a barn", "in a barn near"}, "in a barn", 0.5, 0.9},
		{"single gold", []string{"The"}, "a", 1, 1},
		{"duplicate golds with case", []string{"yes", "Yes", "yes", "no"}, "YES", 1, 1},
		{"partial credit", []string{"red ball", "a red ball", "blue ball", "the red ball"}, "red", 0, 0.6666666666666666},
		{"unknown", []string{"unknown", "unknown", "unknown", "no"}, "Unknown", 1, 1},
		{"empty pred", []string{"Tomas"}, "", 0, 0},
		{"empty gold and pred", []string{""}, "", 1, 1},
		{"punctuation-only golds", []string{"...", "!!"}, "the", 1, 1},
		{"leave one out average", []string{"big big dog", "dog"}, "big dog dog", 0, 0.5833333333333333},
		{"no golds", nil, "x", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			em, f1 := TurnScore(tc.golds, tc.pred)
			if em != tc.em || f1 != tc.f1 {
				t.Errorf("TurnScore = %v/%v, want %v/%v", em, f1, tc.em, tc.f1)
			}
		})
	}
}

// TestTurnScoreMatchesPairwise recomputes the leave-one-out rule from the
// pairwise metrics, the way the Python reference does.
func TestTurnScoreMatchesPairwise(t *testing.T) {
	golds := []string{"The Lantern Festival", "lantern festival", "the festival of lanterns", "a festival"}
	for _, pred := range []string{"the festival of lanterns", "Festival", "", "lanterns!", "The Lantern Festival."} {
		var emSum, f1Sum float64
		for i := range golds {
			bestEM, bestF1 := math.Inf(-1), math.Inf(-1)
			for j, g := range golds {
				if j != i {
					bestEM = max(bestEM, ExactMatch(g, pred))
					bestF1 = max(bestF1, F1(g, pred))
				}
			}
			emSum += bestEM
			f1Sum += bestF1
		}
		em, f1 := TurnScore(golds, pred)
		if em != emSum/4 || f1 != f1Sum/4 {
			t.Errorf("pred %q: TurnScore %v/%v, pairwise %v/%v", pred, em, f1, emSum/4, f1Sum/4)
		}
	}
}

func TestPyRound(t *testing.T) {
	tests := []struct{ x, want float64 }{
		{0.25, 0.2}, // exact tie: to even
		{0.35, 0.3}, // double below the half
		{0.45, 0.5}, // double above the half
		{26.75, 26.8},
		{78.57142857142857, 78.6},
		{60.416666666666664, 60.4},
		{0.05, 0.1},
		{0.15, 0.1},
		{12.25, 12.2},
		{12.35, 12.3},
		{99.95, 100.0},
		{33.33333333333333, 33.3},
		{58.333333333333336, 58.3},
		{100, 100},
		{0, 0},
		{62.45, 62.5},
		{33.35, 33.4},
	}
	for _, tc := range tests {
		if got := PyRound(tc.x, 1); got != tc.want {
			t.Errorf("PyRound(%v, 1) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if got := PyRound(2.675, 2); got != 2.67 {
		t.Errorf("PyRound(2.675, 2) = %v, want 2.67", got)
	}
	if !math.IsNaN(PyRound(math.NaN(), 1)) || !math.IsInf(PyRound(math.Inf(1), 1), 1) {
		t.Error("NaN/Inf not passed through")
	}
}

func TestCleanAndStops(t *testing.T) {
	tests := []struct {
		name, raw string
		stops     []string
		cut, pred string
	}{
		{"stop then first line", " Tomorrow.\n\nQ: Will it float?", []string{StopQ}, " Tomorrow.\n", "Tomorrow."},
		{"no stop, newline", " Unknown\nA: yes", []string{StopQ}, " Unknown\nA: yes", "Unknown"},
		{"eos string", " yes<|end_of_text|>junk", []string{StopQ, "<|end_of_text|>"}, " yes", "yes"},
		{"empty stop ignored", " a b", []string{"", StopQ}, " a b", "a b"},
		{"first line keeps inner trailing space", "\n\n red \n blue", nil, "\n\n red \n blue", "red "},
		{"unicode space strip", "\u3000red\u00a0", nil, "\u3000red\u00a0", "red"},
		{"sequential split", "xQ:ab\nQ:c", []string{"b\nQ", "\nQ:"}, "xQ:a", "xQ:a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cut := CutAtStops(tc.raw, tc.stops)
			if cut != tc.cut {
				t.Errorf("CutAtStops = %q, want %q", cut, tc.cut)
			}
			if got := CleanPrediction(cut); got != tc.pred {
				t.Errorf("CleanPrediction = %q, want %q", got, tc.pred)
			}
		})
	}
}

func TestLMEvalGoldsDedup(t *testing.T) {
	s := &Story{
		Questions: []Question{{"q", 1}},
		Answers:   []Answer{{InputText: "İ"}},
		AdditionalAnswers: AnswerSets{
			{Key: "1", Answers: []Answer{{InputText: "B"}}},
			{Key: "0", Answers: []Answer{{InputText: "i\u0307"}}},
			{Key: "2", Answers: []Answer{{InputText: "b"}}},
		},
	}
	// lm-eval walks keys "0","1","2"; "i̇" is "İ".lower(); "b" duplicates "B".
	if got, want := LMEvalGolds(s, 0), []string{"İ", "B"}; !equalStrings(got, want) {
		t.Errorf("LMEvalGolds = %q, want %q", got, want)
	}
	// The official list keeps file order and duplicates.
	if got, want := OfficialGolds(s, 0), []string{"İ", "B", "i\u0307", "b"}; !equalStrings(got, want) {
		t.Errorf("OfficialGolds = %q, want %q", got, want)
	}
}
