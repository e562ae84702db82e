package coqa

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// story builds a one-story CoQA document; fields can be overridden with
// replacements applied to the JSON text.
func storyJSON(repl ...string) []byte {
	s := `{"version":"1.0","data":[{"source":"mctest","id":"s1","filename":"f","story":"Text.","name":"n",
"questions":[{"input_text":"Q1?","turn_id":1},{"input_text":"Q2?","turn_id":2}],
"answers":[{"span_start":0,"span_end":4,"span_text":"Text","input_text":"A1","turn_id":1},{"span_start":-1,"span_end":-1,"span_text":"unknown","input_text":"unknown","turn_id":2}],
"additional_answers":{"0":[{"input_text":"B1","turn_id":1},{"input_text":"B2","turn_id":2}],"1":[{"input_text":"C1","turn_id":1},{"input_text":"C2","turn_id":2}]}}]}`
	for i := 0; i+1 < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			panic("storyJSON: no " + repl[i])
		}
		s = strings.Replace(s, repl[i], repl[i+1], 1)
	}
	return []byte(s)
}

func TestParseValid(t *testing.T) {
	ds, err := Parse(storyJSON())
	if err != nil {
		t.Fatal(err)
	}
	s := ds.Stories[0]
	if ds.Version != "1.0" || s.ID != "s1" || len(s.Questions) != 2 || len(s.AdditionalAnswers) != 2 || ds.Turns() != 2 {
		t.Fatalf("parsed %+v", ds)
	}
	if s.AdditionalAnswers[0].Answers[0].SpanStart != -1 {
		t.Errorf("missing span should read as -1, got %d", s.AdditionalAnswers[0].Answers[0].SpanStart)
	}
	if got := OfficialGolds(&s, 1); !equalStrings(got, []string{"unknown", "B2", "C2"}) {
		t.Errorf("golds %q", got)
	}
	if len(ds.Warnings) != 0 {
		t.Errorf("warnings %q", ds.Warnings)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"not json", []byte("{\n\"data\": [,]}"), "line 2, column"},
		{"no data", []byte(`{"version":"1.0"}`), `missing "data"`},
		{"data not list", []byte(`{"data":{}}`), "invalid JSON"},
		{"missing id", storyJSON(`"id":"s1",`, ``), `story 0: missing "id"`},
		{"missing source", storyJSON(`"source":"mctest",`, ``), `story 0 (id "s1"): missing "source"`},
		{"unknown source", storyJSON(`"source":"mctest"`, `"source":"blog"`), `unknown source "blog"`},
		{"missing story", storyJSON(`"story":"Text.",`, ``), `missing "story"`},
		{"missing questions", storyJSON(`"questions":[{"input_text":"Q1?","turn_id":1},{"input_text":"Q2?","turn_id":2}],`, ``), `missing "questions"`},
		{"no questions", storyJSON(`"questions":[{"input_text":"Q1?","turn_id":1},{"input_text":"Q2?","turn_id":2}]`, `"questions":[]`), "no questions"},
		{"question text", storyJSON(`{"input_text":"Q2?","turn_id":2}`, `{"turn_id":2}`), `questions[1] (turn 2): missing "input_text"`},
		{"question turn", storyJSON(`{"input_text":"Q2?","turn_id":2}`, `{"input_text":"Q2?"}`), `questions[1] (turn 2): missing "turn_id"`},
		{"answer text", storyJSON(`"input_text":"A1",`, ``), `answers[0] (turn 1): missing "input_text"`},
		{"answer count", storyJSON(`,{"span_start":-1,"span_end":-1,"span_text":"unknown","input_text":"unknown","turn_id":2}`, ``), "1 answers for 2 questions"},
		{"additional misaligned", storyJSON(`,{"input_text":"C2","turn_id":2}`, ``), `additional_answers["1"] has 1 answers for 2 questions`},
		{"additional missing field", storyJSON(`{"input_text":"B2","turn_id":2}`, `{"turn_id":2}`), `additional_answers["0"][1] (turn 2): missing "input_text"`},
		{"wrong type", storyJSON(`{"input_text":"Q2?","turn_id":2}]`, `{"input_text":"Q2?","turn_id":"2"}]`), `story 0 (id "s1")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want containing %q", err, tc.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FormatError", err)
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "broken.json")
	if err := os.WriteFile(p, storyJSON(`"answers":[`, `"answers":[{"turn_id":1},`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p+`: story 0 (id "s1"): answers[0] (turn 1): missing "input_text"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "absent.json")); err == nil || !strings.Contains(err.Error(), "absent.json") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseTurnIDWarnings(t *testing.T) {
	// Wrong turn ids warn (like evaluate-v1.0.py) but parse.
	data := storyJSON(`{"input_text":"Q2?","turn_id":2}`, `{"input_text":"Q2?","turn_id":5}`)
	ds, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !containsSubstr(ds.Warnings, "question 1 has turn_id 5, want 2") || !containsSubstr(ds.Warnings, "answers[1] has turn_id 2, question has 5") {
		t.Errorf("warnings %q", ds.Warnings)
	}
	// The official scorer keys the turn by the question's turn_id.
	res, err := ScoreOfficial(ds, []Prediction{{ID: "s1", TurnID: 5, Answer: "unknown"}, {ID: "s1", TurnID: 1, Answer: "A1"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Predictions[1].TurnID != 5 || res.Predictions[1].Missing || res.EM != 2.0/3 { // 3 distinct golds: leave-one-out gives 2/3
		t.Errorf("records %+v, em %v", res.Predictions, res.EM)
	}
	if !containsSubstr(res.Warnings, "turn_id 5") {
		t.Errorf("dataset warnings not carried into the result: %q", res.Warnings)
	}
}

func TestDuplicateStoryIDs(t *testing.T) {
	one := string(storyJSON())
	story := one[strings.Index(one, "[{")+1 : strings.LastIndex(one, "]}")]
	data := []byte(`{"version":"1.0","data":[` + story + "," + strings.Replace(story, `"source":"mctest"`, `"source":"cnn"`, 1) + `]}`)
	ds, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !containsSubstr(ds.Warnings, `duplicate story id "s1"`) {
		t.Errorf("warnings %q", ds.Warnings)
	}
	// evaluate-v1.0.py: gold_dict keys repeat, so 2 turns in total; id_to_source
	// keeps the last source (cnn → news).
	res, err := ScoreOfficial(ds, []Prediction{{ID: "s1", TurnID: 1, Answer: "A1"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Official.Overall.Turns != 2 || res.Official.News.Turns != 2 || res.Official.ChildrenStories.Turns != 0 {
		t.Errorf("official %+v", *res.Official)
	}
}

func TestWriteDatasetRoundTrip(t *testing.T) {
	for _, name := range []string{"fixture", "tiny", "synth"} {
		t.Run(name, func(t *testing.T) {
			var ds *Dataset
			var err error
			switch name {
			case "fixture":
				ds = loadFixture(t)
			case "tiny":
				ds, err = Load(filepath.Join("testdata", "tinystories_coqa.json"))
			case "synth":
				ds = Synthesize(42, 20)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "out.json")
			if err := WriteDataset(p, ds); err != nil {
				t.Fatal(err)
			}
			back, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			back.Warnings = ds.Warnings
			if !reflect.DeepEqual(ds, back) {
				t.Error("dataset changed in a write/load round trip")
			}
		})
	}
}

func TestTinyStoriesFile(t *testing.T) {
	ds, err := Load(filepath.Join("testdata", "tinystories_coqa.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Stories) < 3 || len(ds.Stories) > 5 || len(ds.Warnings) != 0 {
		t.Fatalf("%d stories, warnings %q", len(ds.Stories), ds.Warnings)
	}
	for _, s := range ds.Stories {
		if len(s.Questions) < 3 || len(s.Questions) > 5 || len(s.AdditionalAnswers) != 3 {
			t.Errorf("story %s: %d questions, %d additional answer sets", s.ID, len(s.Questions), len(s.AdditionalAnswers))
		}
		for i, a := range s.Answers {
			if a.SpanStart >= 0 && s.Story[a.SpanStart:a.SpanEnd] != a.SpanText {
				t.Errorf("story %s turn %d: span does not match the text", s.ID, i+1)
			}
		}
	}
	// Gold answers score perfectly in both flavours.
	var preds []Prediction
	gens := map[string]string{}
	for _, s := range ds.Stories {
		for i, q := range s.Questions {
			preds = append(preds, Prediction{ID: s.ID, TurnID: q.TurnID, Answer: s.Answers[i].InputText})
		}
		gens[s.ID] = " " + s.Answers[len(s.Answers)-1].InputText + "\n\nQ:"
	}
	off, err := ScoreOfficial(ds, preds)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := ScoreLMEval(ds, gens)
	if err != nil {
		t.Fatal(err)
	}
	if off.Official.Overall.Turns != ds.Turns() || off.Official.Overall.F1 < 80 || lm.N != len(ds.Stories) || lm.F1 < 0.5 {
		t.Errorf("gold answers score official %+v, lmeval f1 %v", off.Official.Overall, lm.F1)
	}
}

func TestSynthesize(t *testing.T) {
	a, b := Synthesize(1, 30), Synthesize(1, 30)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("Synthesize is not deterministic")
	}
	if reflect.DeepEqual(a, Synthesize(2, 30)) {
		t.Fatal("different seeds give the same data")
	}
	data, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("synthetic data does not parse: %v", err)
	}
	if len(back.Stories) != 30 || len(back.Warnings) != 0 {
		t.Fatalf("%d stories, warnings %q", len(back.Stories), back.Warnings)
	}
	sources := map[string]bool{}
	ids := map[string]bool{}
	for _, s := range back.Stories {
		sources[s.Source] = true
		ids[s.ID] = true
		if n := len(s.Questions); n < 5 || n > 7 || len(s.AdditionalAnswers) != 3 {
			t.Errorf("story %s: %d turns, %d answer sets", s.ID, n, len(s.AdditionalAnswers))
		}
		for i, a := range s.Answers {
			if a.SpanStart >= 0 && s.Story[a.SpanStart:a.SpanEnd] != a.SpanText {
				t.Errorf("story %s turn %d: bad span", s.ID, i+1)
			}
		}
	}
	if len(sources) < 3 || len(ids) != 30 {
		t.Errorf("sources %v, %d distinct ids", sources, len(ids))
	}
	if len(Synthesize(3, 0).Stories) != 0 || len(Synthesize(3, -1).Stories) != 0 {
		t.Error("non-positive count should give an empty dataset")
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{
		filepath.Join("testdata", "tinystories_coqa.json"),
		filepath.Join("..", "..", "..", "shared", "testdata", "coqa", "coqa_synthetic.json"),
	} {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add(storyJSON())
	f.Add([]byte(`{"data":[{"additional_answers":{"0":null}}]}`))
	f.Add([]byte(`{"data":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := Parse(data)
		if err != nil {
			return
		}
		// A dataset that parses must be usable by every consumer.
		for i := range ds.Stories {
			s := &ds.Stories[i]
			last := len(s.Questions) - 1
			_ = LMEvalPrompt(s)
			_ = LMEvalGolds(s, last)
			_ = OfficialGolds(s, last)
		}
		if _, err := ScoreOfficial(ds, nil); err != nil {
			t.Fatalf("ScoreOfficial on a parsed dataset: %v", err)
		}
		if _, err := ScoreLMEval(ds, map[string]string{}); err != nil {
			t.Fatal(err)
		}
		out, err := ds.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of marshalled dataset: %v\n%s", err, out)
		}
		if len(back.Stories) != len(ds.Stories) || !bytes.Equal(mustMarshal(t, back), out) {
			t.Fatal("marshal/parse round trip changed the dataset")
		}
	})
}

func mustMarshal(t *testing.T, ds *Dataset) []byte {
	t.Helper()
	b, err := ds.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
