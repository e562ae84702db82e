package coqa

import "strings"

// StopQ is the lm-eval coqa stop string ("until"); the tokenizer's EOS string
// is appended to it at generation time.
const StopQ = "\nQ:"

// Prompt returns the lm-eval coqa prompt for turn index t (0-based) of s:
// the story, "\n\n", then "Q: q\n\nA: a\n\n" for every earlier turn with its
// gold answer (answers[].input_text), then "Q: q_t\n\nA:" with no trailing
// space. Strings are inserted verbatim. With t = len(s.Questions)-1 this is
// exactly lm-eval's doc_to_text.
func Prompt(s *Story, t int) string {
	var b strings.Builder
	n := len(s.Story) + 2
	for i := 0; i <= t && i < len(s.Questions); i++ {
		n += len(s.Questions[i].InputText) + 10
		if i < t {
			n += len(s.Answers[i].InputText) + 5
		}
	}
	b.Grow(n)
	b.WriteString(s.Story)
	b.WriteString("\n\n")
	for i := 0; i <= t && i < len(s.Questions); i++ {
		b.WriteString("Q: ")
		b.WriteString(s.Questions[i].InputText)
		b.WriteString("\n\n")
		if i < t && i < len(s.Answers) {
			b.WriteString("A: ")
			b.WriteString(s.Answers[i].InputText)
			b.WriteString("\n\n")
		} else {
			b.WriteString("A:")
		}
	}
	return b.String()
}

// LMEvalPrompt is Prompt for the last turn, the only one lm-eval asks.
func LMEvalPrompt(s *Story) string { return Prompt(s, len(s.Questions)-1) }

// OfficialGolds returns the gold list of turn index t as evaluate-v1.0.py
// builds it: answers[t].input_text followed by each additional answer list's
// entry in file key order, with no de-duplication.
func OfficialGolds(s *Story, t int) []string {
	g := make([]string, 0, 1+len(s.AdditionalAnswers))
	g = append(g, s.Answers[t].InputText)
	for _, set := range s.AdditionalAnswers {
		g = append(g, set.Answers[t].InputText)
	}
	return g
}

// LMEvalGolds returns lm-eval's doc_to_target for turn index t: the answer,
// then each additional answer whose lowercase form (Python str.lower) is not
// already in the list (lowercased), in key order "0", "1", "2" (the keys of
// the EleutherAI/coqa loader; other keys are ignored).
func LMEvalGolds(s *Story, t int) []string {
	g := []string{s.Answers[t].InputText}
	lower := []string{PyLower(g[0])}
	for _, key := range [...]string{"0", "1", "2"} {
		for _, set := range s.AdditionalAnswers {
			if set.Key != key {
				continue
			}
			a := set.Answers[t].InputText
			la := PyLower(a)
			dup := false
			for _, l := range lower {
				if l == la {
					dup = true
					break
				}
			}
			if !dup {
				g = append(g, a)
				lower = append(lower, la)
			}
		}
	}
	return g
}

// CutAtStops applies lm-eval's post-hoc stop handling: for each non-empty
// stop string in order, s = s.split(stop)[0].
func CutAtStops(s string, stops []string) string {
	for _, st := range stops {
		if st == "" {
			continue
		}
		if i := strings.Index(s, st); i >= 0 {
			s = s[:i]
		}
	}
	return s
}

// CleanPrediction is lm-eval's process_results cleanup:
// result.strip().split("\n")[0] with Python's Unicode whitespace strip.
func CleanPrediction(raw string) string {
	s := pyStrip(raw)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
