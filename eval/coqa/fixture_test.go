package coqa

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

// expectedScores is the layout of the shared fixture's expected_scores.json.
type expectedScores struct {
	Official        OfficialScores        `json:"official"`
	OfficialPerTurn map[string][2]float64 `json:"official_per_turn_em_f1"`
	LMEval          struct {
		EM, F1 float64
		N      int
	} `json:"lmeval"`
	LMEvalPerStory map[string][2]float64                          `json:"lmeval_per_story_em_f1"`
	LMEvalPrompts  map[string]string                              `json:"lmeval_prompts_last_turn"`
	GoldsLastTurn  map[string]struct{ Official, LMEval []string } `json:"golds_last_turn"`
	LMEvalCleaned  map[string]string                              `json:"lmeval_cleaned_predictions"`
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	return testutil.Shared(t, "coqa", name)
}

func loadExpected(t *testing.T) *expectedScores {
	t.Helper()
	data, err := os.ReadFile(fixture(t, "expected_scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectedScores
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.OfficialPerTurn) == 0 || len(e.LMEvalPrompts) == 0 || len(e.GoldsLastTurn) == 0 {
		t.Fatal("expected_scores.json: missing sections")
	}
	return &e
}

func loadFixture(t *testing.T) *Dataset {
	t.Helper()
	ds, err := Load(fixture(t, "coqa_synthetic.json"))
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestFixturePromptsAndGolds(t *testing.T) {
	ds := loadFixture(t)
	want := loadExpected(t)
	if len(ds.Stories) != len(want.LMEvalPrompts) {
		t.Fatalf("%d stories, expected file has %d prompts", len(ds.Stories), len(want.LMEvalPrompts))
	}
	for i := range ds.Stories {
		s := &ds.Stories[i]
		if got := LMEvalPrompt(s); got != want.LMEvalPrompts[s.ID] {
			t.Errorf("story %s: prompt differs\n got %q\nwant %q", s.ID, got, want.LMEvalPrompts[s.ID])
		}
		last := len(s.Questions) - 1
		g := want.GoldsLastTurn[s.ID]
		if got := OfficialGolds(s, last); !equalStrings(got, g.Official) {
			t.Errorf("story %s: official golds %q, want %q", s.ID, got, g.Official)
		}
		if got := LMEvalGolds(s, last); !equalStrings(got, g.LMEval) {
			t.Errorf("story %s: lmeval golds %q, want %q", s.ID, got, g.LMEval)
		}
	}
}

func TestFixtureScoreOfficial(t *testing.T) {
	want := loadExpected(t)
	res, err := ScoreFile(fixture(t, "coqa_synthetic.json"), fixture(t, "preds_official.json"), "official")
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != ProtocolAllTurns {
		t.Errorf("protocol %q", res.Protocol)
	}
	if *res.Official != want.Official {
		t.Errorf("official scores\n got %+v\nwant %+v", *res.Official, want.Official)
	}
	// The whole official dict, compared as JSON objects.
	gotJSON, _ := json.Marshal(res.Official)
	wantJSON, _ := json.Marshal(want.Official)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("official JSON\n got %s\nwant %s", gotJSON, wantJSON)
	}
	scored := 0
	for _, p := range res.Predictions {
		k := turnKey(p.ID, p.TurnID)
		w, ok := want.OfficialPerTurn[k]
		if p.Missing {
			if ok {
				t.Errorf("%s: reported missing but expected scores %v", k, w)
			}
			if p.EM != 0 || p.F1 != 0 {
				t.Errorf("%s: missing prediction scored %v/%v", k, p.EM, p.F1)
			}
			continue
		}
		scored++
		if !ok {
			t.Errorf("%s: unexpected scored turn", k)
			continue
		}
		if p.EM != w[0] || p.F1 != w[1] {
			t.Errorf("%s: em/f1 = %v/%v, want %v/%v (exact)", k, p.EM, p.F1, w[0], w[1])
		}
	}
	if scored != len(want.OfficialPerTurn) || res.N != want.Official.Overall.Turns {
		t.Errorf("scored %d turns of %d, want %d of %d", scored, res.N, len(want.OfficialPerTurn), want.Official.Overall.Turns)
	}
	if !containsSubstr(res.Warnings, "missing prediction") {
		t.Errorf("no warning about the missing prediction: %q", res.Warnings)
	}
}

func TestFixtureScoreLMEval(t *testing.T) {
	want := loadExpected(t)
	res, err := ScoreFile(fixture(t, "coqa_synthetic.json"), fixture(t, "generations_lmeval.json"), "lmeval")
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != ProtocolLMEval || res.Official != nil {
		t.Errorf("protocol %q, official %v", res.Protocol, res.Official)
	}
	if res.EM != want.LMEval.EM || res.F1 != want.LMEval.F1 || res.N != want.LMEval.N {
		t.Errorf("lmeval em/f1/n = %v/%v/%d, want %v/%v/%d", res.EM, res.F1, res.N, want.LMEval.EM, want.LMEval.F1, want.LMEval.N)
	}
	for _, p := range res.Predictions {
		w, ok := want.LMEvalPerStory[p.ID]
		if !ok {
			t.Errorf("unexpected story %s", p.ID)
			continue
		}
		if p.EM != w[0] || p.F1 != w[1] {
			t.Errorf("%s: em/f1 = %v/%v, want %v/%v", p.ID, p.EM, p.F1, w[0], w[1])
		}
		if p.Prediction != want.LMEvalCleaned[p.ID] {
			t.Errorf("%s: cleaned %q, want %q", p.ID, p.Prediction, want.LMEvalCleaned[p.ID])
		}
		if !equalStrings(p.Golds, want.GoldsLastTurn[p.ID].LMEval) {
			t.Errorf("%s: golds %q", p.ID, p.Golds)
		}
	}
	if len(res.Predictions) != len(want.LMEvalPerStory) {
		t.Errorf("%d predictions, want %d", len(res.Predictions), len(want.LMEvalPerStory))
	}
}

// TestFixtureScoreRoundTrip writes the result JSON and reads it back.
func TestFixtureScoreRoundTrip(t *testing.T) {
	res, err := ScoreFile(fixture(t, "coqa_synthetic.json"), fixture(t, "preds_official.json"), "all-turns")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(res)
	b, _ := json.Marshal(back)
	if string(a) != string(b) {
		t.Errorf("round trip differs\n%s\n%s", a, b)
	}
	if back.Dataset.Path == "" || back.Dataset.Turns != 12 {
		t.Errorf("dataset info %+v", back.Dataset)
	}
}

func TestScoreFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	data := fixture(t, "coqa_synthetic.json")
	tests := []struct {
		name, preds, protocol, want string
	}{
		{"bad protocol", fixture(t, "preds_official.json"), "squad", "unknown protocol"},
		{"map as official", fixture(t, "generations_lmeval.json"), "official", "JSON list"},
		{"list as lmeval", fixture(t, "preds_official.json"), "lmeval", "JSON object"},
		{"missing answer", write("p1.json", `[{"id":"x","turn_id":1}]`), "official", `missing "answer"`},
		{"fractional turn", write("p2.json", `[{"id":"x","turn_id":1.5,"answer":"a"}]`), "official", "not an integer"},
		{"syntax", write("p3.json", "[\n{"), "official", "p3.json"},
		{"no file", filepath.Join(dir, "nope.json"), "official", "nope.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ScoreFile(data, tc.preds, tc.protocol)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want containing %q", err, tc.want)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func containsSubstr(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
