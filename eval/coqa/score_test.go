package coqa

import "testing"

// A missing prediction counts as 0 in every denominator (evaluate-v1.0.py).
func TestMissingPredictionCountsZero(t *testing.T) {
	ds, err := Parse(storyJSON())
	if err != nil {
		t.Fatal(err)
	}
	res, err := ScoreOfficial(ds, []Prediction{{ID: "s1", TurnID: 1, Answer: "A1"}, {ID: "other", TurnID: 1, Answer: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	// Turn 1: golds A1, B1, C1 → leave-one-out EM 2/3; turn 2 missing → 0.
	if !res.Predictions[1].Missing || res.Predictions[1].EM != 0 || res.Predictions[0].EM != 2.0/3 {
		t.Fatalf("records %+v", res.Predictions)
	}
	want := DomainScore{EM: 33.3, F1: 33.3, Turns: 2}
	if res.Official.ChildrenStories != want || res.Official.Overall != want || res.Official.InDomain != want {
		t.Errorf("official %+v, want children/in/overall %+v", *res.Official, want)
	}
	if res.Official.OutDomain != (DomainScore{}) || res.Official.News != (DomainScore{}) {
		t.Errorf("empty domains not zero: %+v", *res.Official)
	}
	if res.EM != (2.0/3)/2 || res.N != 2 {
		t.Errorf("em %v n %d", res.EM, res.N)
	}
	// No predictions at all: still every turn counted.
	res, err = ScoreOfficial(ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Official.Overall != (DomainScore{EM: 0, F1: 0, Turns: 2}) {
		t.Errorf("overall %+v", res.Official.Overall)
	}
	// lmeval: a story without generation scores 0 and is listed.
	lm, err := ScoreLMEval(ds, map[string]string{"ghost": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if lm.N != 1 || lm.EM != 0 || !lm.Predictions[0].Missing || !containsSubstr(lm.Warnings, `unknown story "ghost"`) {
		t.Errorf("lmeval %+v", lm)
	}
}
