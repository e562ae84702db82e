package coqa

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// Prediction is one entry of the official predictions format.
type Prediction struct {
	ID     string `json:"id"`
	TurnID int    `json:"turn_id"`
	Answer string `json:"answer"`
}

// answerSource supplies the answer for a (story, turn): raw text, the
// cleaned prediction that is scored, and whether one exists.
type answerSource func(id string, turnID int) (raw, pred string, ok bool)

// goldTurn is one entry of evaluate-v1.0.py's gold_dict.
type goldTurn struct {
	id     string
	turnID int
	story  int // index of the story that last defined this key
	t      int // turn index in that story
}

// scoreAllTurns scores every turn of ds like evaluate-v1.0.py: gold turns
// are keyed by (story id, question turn_id) in file order (a repeated key
// keeps its first position and its last golds), a missing answer scores 0,
// and totals are accumulated per source in that order, then combined into
// in-domain, out-of-domain and overall in the script's summation order.
func scoreAllTurns(ds *Dataset, ans answerSource) (*Result, error) {
	var order []*goldTurn
	index := make(map[string]*goldTurn)
	idSource := make(map[string]string)
	var warnings []string
	for si := range ds.Stories {
		s := &ds.Stories[si]
		idSource[s.ID] = s.Source
		for t, q := range s.Questions {
			k := turnKey(s.ID, q.TurnID)
			if g, ok := index[k]; ok {
				warnings = append(warnings, fmt.Sprintf("duplicate gold turn %s: the later one is used", k))
				g.story, g.t = si, t
				continue
			}
			g := &goldTurn{id: s.ID, turnID: q.TurnID, story: si, t: t}
			index[k] = g
			order = append(order, g)
		}
	}
	type totals struct {
		em, f1 float64
		n      int
	}
	bySource := make(map[string]*totals, len(sourceOrder))
	for _, src := range sourceOrder {
		bySource[src] = &totals{}
	}
	res := &Result{
		Protocol:    ProtocolAllTurns,
		Scorer:      scorerOfficial,
		Dataset:     DatasetInfo{Stories: len(ds.Stories), Turns: len(order)},
		Predictions: make([]PredictionRecord, 0, len(order)),
	}
	for _, g := range order {
		s := &ds.Stories[g.story]
		src := idSource[g.id]
		rec := PredictionRecord{ID: g.id, TurnID: g.turnID, Source: src, Golds: OfficialGolds(s, g.t)}
		raw, pred, ok := ans(g.id, g.turnID)
		if ok {
			rec.Raw, rec.Prediction = raw, pred
			rec.EM, rec.F1 = TurnScore(rec.Golds, pred)
		} else {
			rec.Missing = true
			warnings = append(warnings, fmt.Sprintf("missing prediction for %s and turn_id %d (scored 0)", g.id, g.turnID))
		}
		tot := bySource[src]
		if tot == nil { // cannot happen: Parse rejects unknown sources
			return nil, fmt.Errorf("story %q: unknown source %q", g.id, src)
		}
		tot.em += rec.EM
		tot.f1 += rec.F1
		tot.n++
		res.Predictions = append(res.Predictions, rec)
	}
	off := &OfficialScores{}
	pct := func(total float64, n int) float64 { return PyRound(total/float64(max(1, n))*100, 1) }
	var in, out totals
	for _, src := range sourceOrder {
		tot := bySource[src]
		*off.domain(src) = DomainScore{EM: pct(tot.em, tot.n), F1: pct(tot.f1, tot.n), Turns: tot.n}
		acc := &in
		if src == "reddit" || src == "science" {
			acc = &out
		}
		acc.em += tot.em
		acc.f1 += tot.f1
		acc.n += tot.n
	}
	off.InDomain = DomainScore{EM: pct(in.em, in.n), F1: pct(in.f1, in.n), Turns: in.n}
	off.OutDomain = DomainScore{EM: pct(out.em, out.n), F1: pct(out.f1, out.n), Turns: out.n}
	emTotal, f1Total, n := in.em+out.em, in.f1+out.f1, in.n+out.n
	off.Overall = DomainScore{EM: pct(emTotal, n), F1: pct(f1Total, n), Turns: n}
	res.Official = off
	res.N = n
	res.EM = emTotal / float64(max(1, n))
	res.F1 = f1Total / float64(max(1, n))
	res.Warnings = append(append([]string(nil), ds.Warnings...), warnings...)
	return res, nil
}

// scoreLMEval scores the last turn of every story of ds like lm-eval's coqa
// task: de-duplicated golds, and the plain mean over stories. raw returns the
// model output for a story; the scored prediction is CleanPrediction of it.
// A story without output scores 0 and is reported in Warnings.
func scoreLMEval(ds *Dataset, raw func(si int) (string, bool)) *Result {
	res := &Result{
		Protocol:    ProtocolLMEval,
		Scorer:      scorerLMEval,
		Dataset:     DatasetInfo{Stories: len(ds.Stories), Turns: len(ds.Stories)},
		Predictions: make([]PredictionRecord, 0, len(ds.Stories)),
		Warnings:    append([]string(nil), ds.Warnings...),
	}
	var emSum, f1Sum float64
	for si := range ds.Stories {
		s := &ds.Stories[si]
		last := len(s.Questions) - 1
		rec := PredictionRecord{ID: s.ID, TurnID: s.Questions[last].TurnID, Source: s.Source, Golds: LMEvalGolds(s, last)}
		if out, ok := raw(si); ok {
			rec.Raw = out
			rec.Prediction = CleanPrediction(out)
			rec.EM, rec.F1 = TurnScore(rec.Golds, rec.Prediction)
		} else {
			rec.Missing = true
			res.Warnings = append(res.Warnings, fmt.Sprintf("missing generation for story %s (scored 0)", s.ID))
		}
		emSum += rec.EM
		f1Sum += rec.F1
		res.Predictions = append(res.Predictions, rec)
	}
	res.N = len(ds.Stories)
	if res.N > 0 {
		res.EM = emSum / float64(res.N)
		res.F1 = f1Sum / float64(res.N)
	}
	return res
}

// ScoreOfficial scores predictions in the official format against every
// turn of ds exactly like evaluate-v1.0.py: predictions are keyed by (id,
// turn_id), a later duplicate replaces an earlier one, predictions for
// unknown turns are ignored, and a missing prediction scores 0 (and is listed
// in Warnings). Answers are scored as given (no cleaning).
func ScoreOfficial(ds *Dataset, preds []Prediction) (*Result, error) {
	m := make(map[string]string, len(preds))
	for _, p := range preds {
		m[turnKey(p.ID, p.TurnID)] = p.Answer
	}
	res, err := scoreAllTurns(ds, func(id string, turnID int) (string, string, bool) {
		a, ok := m[turnKey(id, turnID)]
		return a, a, ok
	})
	if err != nil {
		return nil, err
	}
	res.Origin = "predictions"
	return res, nil
}

// ScoreLMEval scores raw generations, keyed by story id, like lm-eval's coqa
// task. Each generation is first cut at the stop string "\nQ:" (as the
// harness does after generation), then cleaned with CleanPrediction. Stories
// of ds without a generation score 0; generations for unknown stories are
// reported in Warnings.
func ScoreLMEval(ds *Dataset, generations map[string]string) (*Result, error) {
	res := scoreLMEval(ds, func(si int) (string, bool) {
		g, ok := generations[ds.Stories[si].ID]
		if !ok {
			return "", false
		}
		return CutAtStops(g, []string{StopQ}), true
	})
	known := make(map[string]bool, len(ds.Stories))
	for i := range ds.Stories {
		known[ds.Stories[i].ID] = true
	}
	var unknown []string
	for id := range generations {
		if !known[id] {
			unknown = append(unknown, id)
		}
	}
	sort.Strings(unknown)
	for _, id := range unknown {
		res.Warnings = append(res.Warnings, fmt.Sprintf("generation for unknown story %q ignored", id))
	}
	res.Origin = "predictions"
	return res, nil
}

// ParsePredictions decodes the official predictions format: a JSON list of
// {"id": string, "turn_id": int, "answer": string}. name is used in errors.
func ParsePredictions(name string, data []byte) ([]Prediction, error) {
	var raw []struct {
		ID     *string      `json:"id"`
		TurnID *json.Number `json:"turn_id"`
		Answer *string      `json:"answer"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: official predictions must be a JSON list of {id, turn_id, answer}: %w", name, jsonErr(data, err))
	}
	preds := make([]Prediction, len(raw))
	for i, r := range raw {
		switch {
		case r.ID == nil:
			return nil, fmt.Errorf("%s: prediction %d: missing \"id\"", name, i)
		case r.TurnID == nil:
			return nil, fmt.Errorf("%s: prediction %d (id %q): missing \"turn_id\"", name, i, *r.ID)
		case r.Answer == nil:
			return nil, fmt.Errorf("%s: prediction %d (id %q): missing \"answer\"", name, i, *r.ID)
		}
		// Python compares 3 and 3.0 as equal keys; accept integral numbers.
		f, err := r.TurnID.Float64()
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<31 {
			return nil, fmt.Errorf("%s: prediction %d (id %q): turn_id %s is not an integer", name, i, *r.ID, r.TurnID.String())
		}
		preds[i] = Prediction{ID: *r.ID, TurnID: int(f), Answer: *r.Answer}
	}
	return preds, nil
}

// ParseGenerations decodes lm-eval style raw generations: a JSON object
// mapping story id to the raw model output. name is used in errors.
func ParseGenerations(name string, data []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: generations must be a JSON object {story id: raw output}: %w", name, jsonErr(data, err))
	}
	if m == nil {
		return nil, fmt.Errorf("%s: generations must be a JSON object, got null", name)
	}
	return m, nil
}

// ScoreFile loads a CoQA data file and a predictions file and scores them.
// protocol "official" (or "all-turns") reads the official predictions format
// and scores every turn; "lmeval" reads {story id: raw generation} and scores
// the last turn of each story.
func ScoreFile(dataPath, predPath, protocol string) (*Result, error) {
	ds, err := Load(dataPath)
	if err != nil {
		return nil, err
	}
	data, err := readLimited(predPath)
	if err != nil {
		return nil, fmt.Errorf("score coqa: %w", err)
	}
	var res *Result
	switch protocol {
	case "official", ProtocolAllTurns:
		preds, err := ParsePredictions(predPath, data)
		if err != nil {
			return nil, err
		}
		if res, err = ScoreOfficial(ds, preds); err != nil {
			return nil, err
		}
	case ProtocolLMEval:
		gens, err := ParseGenerations(predPath, data)
		if err != nil {
			return nil, err
		}
		if res, err = ScoreLMEval(ds, gens); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("score coqa: unknown protocol %q (want official, all-turns or lmeval)", protocol)
	}
	res.Dataset.Path = dataPath
	return res, nil
}
