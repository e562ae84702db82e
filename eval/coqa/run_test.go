package coqa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// charTok is a character-level tokenizer: BOS = 1, EOS = 2, rune r = r+10.
type charTok struct{ bos bool }

const (
	fakeBOS = 1
	fakeEOS = 2
	// eosRune in a fake continuation stands for the EOS token.
	eosRune = '⏹'
)

func (c charTok) Encode(text string, addBOS bool) []int {
	var ids []int
	if addBOS {
		ids = append(ids, fakeBOS)
	}
	for _, r := range text {
		if r == eosRune {
			ids = append(ids, fakeEOS)
			continue
		}
		ids = append(ids, int(r)+10)
	}
	return ids
}

func (c charTok) Decode(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		switch id {
		case fakeBOS:
			b.WriteString("<s>")
		case fakeEOS:
			b.WriteString("</s>")
		default:
			b.WriteRune(rune(id - 10))
		}
	}
	return b.String()
}

func (c charTok) EOSString() string { return "</s>" }
func (c charTok) AddsBOS() bool     { return c.bos }

// lookupGen answers the last question of each prompt from a table and keeps
// going after the answer (as a base model does), emitting one token at a
// time until a stop string appears or MaxNewTokens is reached.
type lookupGen struct {
	tok      charTok
	answers  map[string]string // question → continuation (eosRune = EOS token)
	maxBatch int

	mu      sync.Mutex
	batches [][]Request
	prev    map[string][]int
	// misbehave: "skip" leaves one request unanswered, "alien" reports an
	// unknown key, "cancel" cancels the context after the first batch.
	misbehave string
	cancel    context.CancelFunc
}

func (g *lookupGen) MaxBatch() int { return g.maxBatch }

func (g *lookupGen) Generate(ctx context.Context, reqs []Request, done func(Completion)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	g.batches = append(g.batches, append([]Request(nil), reqs...))
	if g.prev == nil {
		g.prev = make(map[string][]int)
	}
	g.mu.Unlock()
	if g.misbehave == "alien" {
		done(Completion{Key: "no-such-key"})
	}
	var wg sync.WaitGroup
	for i := len(reqs) - 1; i >= 0; i-- { // any order, concurrently
		r := reqs[i]
		if g.misbehave == "skip" && i == 0 {
			continue
		}
		g.mu.Lock()
		cached := commonPrefix(g.prev[r.Group], r.Prompt)
		g.prev[r.Group] = r.Prompt
		g.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			done(g.complete(r, cached))
		}()
	}
	wg.Wait()
	if g.misbehave == "cancel" && g.cancel != nil {
		g.cancel()
	}
	return nil
}

func (g *lookupGen) complete(r Request, cached int) Completion {
	prompt := g.tok.Decode(r.Prompt)
	q := prompt
	if i := strings.LastIndex(q, "Q: "); i >= 0 {
		q = q[i+3:]
	}
	q = strings.TrimSuffix(q, "\n\nA:")
	cont, ok := g.answers[q]
	if !ok {
		cont = " no idea\nQ: what?"
	}
	ids := g.tok.Encode(cont, false)
	var out []int
	text := ""
	for _, id := range ids {
		if len(out) == r.MaxNewTokens {
			break
		}
		out = append(out, id)
		text = g.tok.Decode(out)
		if cut := firstStop(text, r.Stop); cut >= 0 {
			text = text[:cut]
			break
		}
	}
	return Completion{Key: r.Key, Text: text, Tokens: len(out), PromptTokens: len(r.Prompt), CachedPromptTokens: cached}
}

func firstStop(s string, stops []string) int {
	best := -1
	for _, st := range stops {
		if i := strings.Index(s, st); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

func commonPrefix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// fixtureAnswers returns the generator tables for the shared fixture: the
// all-turns table answers like preds_official.json (plus the turn it lacks),
// the lmeval table returns generations_lmeval.json's raw outputs.
func fixtureAnswers(t *testing.T, ds *Dataset) (allTurns, lmeval map[string]string, preds []Prediction) {
	t.Helper()
	data, err := os.ReadFile(fixture(t, "preds_official.json"))
	if err != nil {
		t.Fatal(err)
	}
	preds, err = ParsePredictions("preds_official.json", data)
	if err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(fixture(t, "generations_lmeval.json"))
	if err != nil {
		t.Fatal(err)
	}
	gens, err := ParseGenerations("generations_lmeval.json", data)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]string{}
	for _, p := range preds {
		byKey[turnKey(p.ID, p.TurnID)] = p.Answer
	}
	allTurns, lmeval = map[string]string{}, map[string]string{}
	for _, s := range ds.Stories {
		for _, q := range s.Questions {
			k := turnKey(s.ID, q.TurnID)
			a, ok := byKey[k]
			if !ok { // the turn preds_official.json leaves out: answer it, ended by EOS
				a = "tomorrow"
				preds = append(preds, Prediction{ID: s.ID, TurnID: q.TurnID, Answer: a})
				allTurns[q.InputText] = " " + a + string(eosRune) + "Q: more?"
				continue
			}
			// Keep talking after the answer: the "\nQ:" stop must cut it.
			allTurns[q.InputText] = " " + a + "\n\nQ: And then?\n\nA: nothing"
		}
		last := s.Questions[len(s.Questions)-1]
		lmeval[last.InputText] = gens[s.ID]
	}
	return allTurns, lmeval, preds
}

func TestRunLMEvalFixture(t *testing.T) {
	ds := loadFixture(t)
	want := loadExpected(t)
	_, table, _ := fixtureAnswers(t, ds)
	tok := charTok{bos: true}
	gen := &lookupGen{tok: tok, answers: table, maxBatch: 4}
	var prog bytes.Buffer
	model := &ModelInfo{Path: "fake.gguf", SHA256: "00", BPW: 4.5, Format: "q4_0", Backend: "fake"}
	res, err := Run(context.Background(), ds, tok, gen, Options{Protocol: ProtocolLMEval, Progress: &prog, Model: model, DatasetPath: "x.json"})
	if err != nil {
		t.Fatal(err)
	}
	if res.EM != want.LMEval.EM || res.F1 != want.LMEval.F1 || res.N != want.LMEval.N {
		t.Errorf("em/f1/n %v/%v/%d, want %+v", res.EM, res.F1, res.N, want.LMEval)
	}
	// Prompts fed to the generator: BOS + the exact lm-eval prompt.
	for _, b := range gen.batches {
		for _, r := range b {
			if r.Prompt[0] != fakeBOS {
				t.Errorf("%s: prompt does not start with BOS", r.Key)
			}
			if got := tok.Decode(r.Prompt[1:]); got != want.LMEvalPrompts[r.Group] {
				t.Errorf("%s: prompt %q, want %q", r.Key, got, want.LMEvalPrompts[r.Group])
			}
			if r.MaxNewTokens != DefaultMaxGenTokens || !equalStrings(r.Stop, []string{"\nQ:", "</s>"}) {
				t.Errorf("%s: max new %d, stop %q", r.Key, r.MaxNewTokens, r.Stop)
			}
		}
	}
	for _, p := range res.Predictions {
		if p.Prediction != want.LMEvalCleaned[p.ID] {
			t.Errorf("%s: cleaned %q, want %q", p.ID, p.Prediction, want.LMEvalCleaned[p.ID])
		}
		if w := want.LMEvalPerStory[p.ID]; p.EM != w[0] || p.F1 != w[1] {
			t.Errorf("%s: em/f1 %v/%v, want %v", p.ID, p.EM, p.F1, w)
		}
		if p.PromptTokens != len([]rune(want.LMEvalPrompts[p.ID]))+1 || p.Truncated {
			t.Errorf("%s: prompt tokens %d truncated %v", p.ID, p.PromptTokens, p.Truncated)
		}
		if strings.Contains(p.Raw, "\nQ:") {
			t.Errorf("%s: raw output not cut at stop: %q", p.ID, p.Raw)
		}
	}
	if !strings.Contains(prog.String(), "coqa: 2/2 (100.0%) q") || !strings.Contains(prog.String(), "q/s") {
		t.Errorf("progress output %q", prog.String())
	}
	checkResultJSON(t, res, ProtocolLMEval)
}

func TestRunAllTurnsFixture(t *testing.T) {
	ds := loadFixture(t)
	want := loadExpected(t)
	table, _, preds := fixtureAnswers(t, ds)
	tok := charTok{bos: false}
	gen := &lookupGen{tok: tok, answers: table, maxBatch: 3}
	res, err := Run(context.Background(), ds, tok, gen, Options{Protocol: ProtocolAllTurns})
	if err != nil {
		t.Fatal(err)
	}
	// Same numbers as scoring the equivalent predictions file directly.
	ref, err := ScoreOfficial(ds, preds)
	if err != nil {
		t.Fatal(err)
	}
	if *res.Official != *ref.Official || res.EM != ref.EM || res.F1 != ref.F1 || res.N != 12 {
		t.Errorf("run %+v (em %v f1 %v), score %+v", *res.Official, res.EM, res.F1, *ref.Official)
	}
	for i, p := range res.Predictions {
		r := ref.Predictions[i]
		if p.ID != r.ID || p.TurnID != r.TurnID || p.Prediction != r.Prediction || p.EM != r.EM || p.F1 != r.F1 {
			t.Errorf("turn %d: run %+v, score %+v", i, p, r)
		}
		if w, ok := want.OfficialPerTurn[turnKey(p.ID, p.TurnID)]; ok && (p.EM != w[0] || p.F1 != w[1]) {
			t.Errorf("%s/%d: %v/%v, want %v", p.ID, p.TurnID, p.EM, p.F1, w)
		}
		if p.Missing {
			t.Errorf("%s/%d missing", p.ID, p.TurnID)
		}
		// Gold history: the prompt of turn t is Prompt(story, t), no BOS.
		if p.PromptTokens != p.PromptTokensFull || p.PromptTokens == 0 {
			t.Errorf("%s/%d: prompt tokens %d/%d", p.ID, p.TurnID, p.PromptTokens, p.PromptTokensFull)
		}
	}
	// EOS stop: the turn answered "tomorrow</s>..." is cut before "</s>".
	if p := res.Predictions[6]; p.Raw != " tomorrow" || p.EM != 1 {
		t.Errorf("EOS-stopped turn: raw %q em %v", p.Raw, p.EM)
	}
	// Grouped order, batches of at most 3, story with the longest prompt first.
	var fed []Request
	for _, b := range gen.batches {
		if len(b) > 3 || len(b) == 0 {
			t.Errorf("batch of %d", len(b))
		}
		fed = append(fed, b...)
	}
	if len(gen.batches) != 4 || len(fed) != 12 {
		t.Fatalf("%d batches, %d requests", len(gen.batches), len(fed))
	}
	for i, r := range fed {
		wantGroup := ds.Stories[0].ID // story 1 has the longer last prompt
		if i >= 7 {
			wantGroup = ds.Stories[1].ID
		}
		if r.Group != wantGroup {
			t.Errorf("request %d: group %s, want %s", i, r.Group, wantGroup)
		}
		if i > 0 && fed[i-1].Group == r.Group {
			if len(r.Prompt) <= len(fed[i-1].Prompt) {
				t.Errorf("request %d: turns of a story not in turn order", i)
			}
		}
	}
	// Shared prefixes were reported and summed.
	if res.Timings.CachedPromptTokens == 0 || res.Timings.PromptTokens <= res.Timings.CachedPromptTokens {
		t.Errorf("timings %+v", res.Timings)
	}
	checkResultJSON(t, res, ProtocolAllTurns)
}

// checkResultJSON writes the result, reads the raw JSON back and checks that
// every documented field is there.
func checkResultJSON(t *testing.T, res *Result, protocol string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "res.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("result is not valid JSON: %v", err)
	}
	for _, k := range []string{"protocol", "scorer", "origin", "dataset", "limit", "max_gen_tokens", "max_context_tokens", "stop", "decoding", "n", "em", "f1", "timings", "predictions", "add_bos", "order", "max_position_embeddings", "started"} {
		if _, ok := m[k]; !ok {
			t.Errorf("result JSON lacks %q", k)
		}
	}
	if m["protocol"] != protocol {
		t.Errorf("protocol %v", m["protocol"])
	}
	if _, ok := m["official"]; ok != (protocol == ProtocolAllTurns) {
		t.Errorf("official present = %v for %s", ok, protocol)
	}
	tm := m["timings"].(map[string]any)
	for _, k := range []string{"wall_s", "prompt_tokens", "generated_tokens", "prompt_tokens_per_s", "questions_per_s", "cached_prompt_tokens"} {
		if _, ok := tm[k]; !ok {
			t.Errorf("timings lack %q", k)
		}
	}
	preds := m["predictions"].([]any)
	if len(preds) != res.N {
		t.Errorf("%d predictions for n %d", len(preds), res.N)
	}
	for _, p := range preds {
		pm := p.(map[string]any)
		for _, k := range []string{"id", "turn_id", "prompt_tokens", "raw", "prediction", "golds", "em", "f1"} {
			if _, ok := pm[k]; !ok {
				t.Errorf("prediction lacks %q: %v", k, pm)
			}
		}
	}
	back, err := ReadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.EM != res.EM || back.F1 != res.F1 || len(back.Predictions) != len(res.Predictions) {
		t.Error("result does not round-trip")
	}
	if res.Model != nil && *back.Model != *res.Model {
		t.Errorf("model info %+v", back.Model)
	}
}

func TestRunTruncation(t *testing.T) {
	ds := loadFixture(t)
	table, _, _ := fixtureAnswers(t, ds)
	tok := charTok{bos: true}
	gen := &lookupGen{tok: tok, answers: table, maxBatch: 2}
	const maxPos, maxGen = 560, 40
	res, err := Run(context.Background(), ds, tok, gen, Options{
		Protocol: ProtocolAllTurns, MaxPositionEmbeddings: maxPos, MaxGenTokens: maxGen, Order: OrderLongestFirst,
	})
	if err != nil {
		t.Fatal(err)
	}
	full := map[string][]int{}
	for si := range ds.Stories {
		for ti := range ds.Stories[si].Questions {
			full[ds.Stories[si].ID+"#"+ds.Stories[si].Questions[ti].InputText] = tok.Encode(Prompt(&ds.Stories[si], ti), true)
		}
	}
	truncated := 0
	prevLen := 1 << 30
	for _, b := range gen.batches {
		for _, r := range b {
			if len(r.Prompt) > prevLen {
				t.Errorf("longest-first order violated at %s", r.Key)
			}
			prevLen = len(r.Prompt)
			text := tok.Decode(r.Prompt)
			var f []int
			for k, v := range full {
				if strings.HasPrefix(k, r.Group+"#") && strings.HasSuffix(text, "Q: "+strings.TrimPrefix(k, r.Group+"#")+"\n\nA:") {
					f = v
				}
			}
			if f == nil {
				t.Fatalf("%s: prompt not found", r.Key)
			}
			if len(f) > maxPos-maxGen {
				truncated++
				// lm-eval keeps the LAST max_length-max_gen_toks tokens; BOS is lost.
				if len(r.Prompt) != maxPos-maxGen || r.Prompt[0] == fakeBOS || !equalInts(r.Prompt, f[len(f)-(maxPos-maxGen):]) {
					t.Errorf("%s: truncated prompt is not the last %d tokens", r.Key, maxPos-maxGen)
				}
			} else if !equalInts(r.Prompt, f) {
				t.Errorf("%s: short prompt changed", r.Key)
			}
			if r.MaxNewTokens != maxGen {
				t.Errorf("max new tokens %d", r.MaxNewTokens)
			}
		}
	}
	if truncated == 0 || truncated == 12 {
		t.Fatalf("%d truncated prompts; the test needs some of each", truncated)
	}
	n := 0
	for _, p := range res.Predictions {
		if p.Truncated {
			n++
			if p.PromptTokens != maxPos-maxGen || p.PromptTokensFull <= p.PromptTokens {
				t.Errorf("%s/%d: tokens %d of %d", p.ID, p.TurnID, p.PromptTokens, p.PromptTokensFull)
			}
		}
	}
	if n != truncated || !containsSubstr(res.Warnings, "left-truncated") || res.MaxContextTokens != maxPos-maxGen {
		t.Errorf("%d truncated records of %d, warnings %q", n, truncated, res.Warnings)
	}
}

func TestRunMaxGenTokensAndLimit(t *testing.T) {
	ds := loadFixture(t)
	tok := charTok{}
	last := ds.Stories[0].Questions[len(ds.Stories[0].Questions)-1].InputText
	gen := &lookupGen{tok: tok, maxBatch: 8, answers: map[string]string{last: " " + strings.Repeat("la ", 100)}}
	res, err := Run(context.Background(), ds, tok, gen, Options{Protocol: ProtocolLMEval, Limit: 1, MaxGenTokens: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.N != 1 || len(res.Predictions) != 1 || res.Dataset.Stories != 1 || res.Limit != 1 {
		t.Fatalf("limit 1: n %d, stories %d", res.N, res.Dataset.Stories)
	}
	p := res.Predictions[0]
	if p.GeneratedTokens != 20 || len(p.Raw) != 20 || res.Timings.GeneratedTokens != 20 {
		t.Errorf("generated %d tokens, raw %q", p.GeneratedTokens, p.Raw)
	}
}

func TestRunErrors(t *testing.T) {
	ds := loadFixture(t)
	tok := charTok{}
	tests := []struct {
		name      string
		opt       Options
		misbehave string
		want      string
		is        error
	}{
		{"bad protocol", Options{Protocol: "squad"}, "", "unknown protocol", nil},
		{"no room", Options{Protocol: ProtocolLMEval, MaxPositionEmbeddings: 100, MaxGenTokens: 100}, "", "no room", nil},
		{"negative limit", Options{Protocol: ProtocolLMEval, Limit: -1}, "", "negative limit", nil},
		{"incomplete batch", Options{Protocol: ProtocolAllTurns}, "skip", "without completing", nil},
		{"unknown key", Options{Protocol: ProtocolAllTurns}, "alien", "not in this batch", nil},
		{"cancelled", Options{Protocol: ProtocolAllTurns}, "cancel", "requests done", context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gen := &lookupGen{tok: tok, maxBatch: 5, misbehave: tc.misbehave, cancel: cancel}
			_, err := Run(ctx, ds, tok, gen, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want containing %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
		})
	}
}

func TestScheduleDuplicateKey(t *testing.T) {
	gen := &lookupGen{tok: charTok{}, maxBatch: 0} // MaxBatch 0 means 1
	_, _, err := Schedule(context.Background(), gen, []Request{{Key: "a"}, {Key: "a"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("err = %v", err)
	}
	comps, st, err := Schedule(context.Background(), gen, []Request{{Key: "a", Prompt: []int{50}, MaxNewTokens: 3}, {Key: "b", MaxNewTokens: 3}}, nil)
	if err != nil || len(comps) != 2 || st.Batches != 2 {
		t.Fatalf("comps %v, stats %+v, err %v", comps, st, err)
	}
}

func TestSortRequestsGrouped(t *testing.T) {
	reqs := []Request{
		{Key: "a1", Group: "a", Prompt: make([]int, 5)},
		{Key: "b1", Group: "b", Prompt: make([]int, 3)},
		{Key: "a2", Group: "a", Prompt: make([]int, 8)},
		{Key: "c1", Group: "c", Prompt: make([]int, 9)},
		{Key: "b2", Group: "b", Prompt: make([]int, 4)},
	}
	SortRequests(reqs, OrderGrouped)
	var keys []string
	for _, r := range reqs {
		keys = append(keys, r.Key)
	}
	if got, want := strings.Join(keys, ","), "c1,a1,a2,b1,b2"; got != want {
		t.Errorf("grouped order %s, want %s", got, want)
	}
	SortRequests(reqs, OrderLongestFirst)
	keys = keys[:0]
	for _, r := range reqs {
		keys = append(keys, r.Key)
	}
	if got, want := strings.Join(keys, ","), "c1,a2,a1,b2,b1"; got != want {
		t.Errorf("longest-first order %s, want %s", got, want)
	}
}

func TestSanity(t *testing.T) {
	ds := Synthesize(7, 5)
	tok := charTok{bos: true}
	answers := map[string]string{}
	for _, s := range ds.Stories {
		for i, q := range s.Questions {
			answers[q.InputText] = " " + s.Answers[i].InputText + "\nQ: next"
		}
	}
	var out bytes.Buffer
	res, err := Sanity(context.Background(), ds, tok, &lookupGen{tok: tok, answers: answers, maxBatch: 4}, Options{Protocol: ProtocolLMEval}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if res.N != SanityStories || strings.Count(out.String(), "=== ") != SanityStories {
		t.Errorf("n %d, output:\n%s", res.N, out.String())
	}
	for _, want := range []string{"prompt tail:", "pred:", "golds:", "\\n\\nA:\""} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sanity output lacks %q:\n%s", want, out.String())
		}
	}
}

func equalInts(a, b []int) bool {
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
