package coqa

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"qllama/internal/atomicfile"
	"strconv"
)

// MaxFileSize bounds the size of a dataset or predictions file that Load and
// ScoreFile read into memory (the CoQA dev file is about 9 MB).
const MaxFileSize = 512 << 20

// Dataset is a CoQA v1.0 file: a list of stories, each with its questions,
// answers and (dev only) three additional answers per turn.
type Dataset struct {
	// Version is the file's "version" field ("1.0").
	Version string `json:"version"`
	// Stories in file order.
	Stories []Story `json:"data"`
	// Warnings are non-fatal problems found while parsing (turn ids that do
	// not match positions, duplicate story ids), as evaluate-v1.0.py prints
	// them to stderr. They are not written back by WriteDataset.
	Warnings []string `json:"-"`
}

// Story is one passage with its conversation.
type Story struct {
	// Source is the domain: mctest, gutenberg, race, cnn, wikipedia (dev),
	// reddit or science (test only).
	Source    string     `json:"source"`
	ID        string     `json:"id"`
	Filename  string     `json:"filename"`
	Story     string     `json:"story"`
	Questions []Question `json:"questions"`
	Answers   []Answer   `json:"answers"`
	// AdditionalAnswers holds the alternative answer lists ("0", "1", "2"
	// in the dev file) in file order; each list is aligned with Answers.
	AdditionalAnswers AnswerSets `json:"additional_answers,omitempty"`
	Name              string     `json:"name"`
}

// Question is one turn's question.
type Question struct {
	InputText string `json:"input_text"`
	TurnID    int    `json:"turn_id"`
}

// Answer is one turn's answer. Only InputText is scored; the span is the
// evidence rationale (-1 and "unknown" for unanswerable turns).
type Answer struct {
	SpanStart int    `json:"span_start"`
	SpanEnd   int    `json:"span_end"`
	SpanText  string `json:"span_text"`
	InputText string `json:"input_text"`
	TurnID    int    `json:"turn_id"`
}

// AnswerSet is one keyed list of additional answers.
type AnswerSet struct {
	Key     string
	Answers []Answer
}

// AnswerSets is the "additional_answers" object with its key order kept
// (Python's dict order, which evaluate-v1.0.py uses for the gold list).
type AnswerSets []AnswerSet

// MarshalJSON writes the sets as a JSON object in their order.
func (a AnswerSets) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, s := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(s.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(s.Answers)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON object of answer lists keeping the key order. A
// repeated key replaces the earlier value in place, as a Python dict does.
func (a *AnswerSets) UnmarshalJSON(data []byte) error {
	var sets AnswerSets
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil { // JSON null
		*a = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("additional_answers: want an object, got %v", tok)
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := kt.(string)
		var raw []rawAnswer
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("additional_answers[%q]: %w", key, err)
		}
		answers, err := convertAnswers(raw, fmt.Sprintf("additional_answers[%q]", key))
		if err != nil {
			return err
		}
		replaced := false
		for i := range sets {
			if sets[i].Key == key {
				sets[i].Answers = answers
				replaced = true
			}
		}
		if !replaced {
			sets = append(sets, AnswerSet{Key: key, Answers: answers})
		}
	}
	*a = sets
	return nil
}

// rawAnswer and rawQuestion use pointers so that missing fields are detected.
type rawAnswer struct {
	SpanStart *int    `json:"span_start"`
	SpanEnd   *int    `json:"span_end"`
	SpanText  *string `json:"span_text"`
	InputText *string `json:"input_text"`
	TurnID    *int    `json:"turn_id"`
}

type rawQuestion struct {
	InputText *string `json:"input_text"`
	TurnID    *int    `json:"turn_id"`
}

type rawStory struct {
	Source            *string        `json:"source"`
	ID                *string        `json:"id"`
	Filename          string         `json:"filename"`
	Story             *string        `json:"story"`
	Questions         *[]rawQuestion `json:"questions"`
	Answers           *[]rawAnswer   `json:"answers"`
	AdditionalAnswers AnswerSets     `json:"additional_answers"`
	Name              string         `json:"name"`
}

// fieldError is a missing-field problem inside one list entry, located later.
type fieldError struct {
	list  string
	index int
	field string
}

func (e *fieldError) Error() string {
	return fmt.Sprintf("%s[%d] (turn %d): missing %q", e.list, e.index, e.index+1, e.field)
}

func convertAnswers(raw []rawAnswer, list string) ([]Answer, error) {
	out := make([]Answer, len(raw))
	for i, r := range raw {
		switch {
		case r.InputText == nil:
			return nil, &fieldError{list, i, "input_text"}
		case r.TurnID == nil:
			return nil, &fieldError{list, i, "turn_id"}
		}
		a := Answer{InputText: *r.InputText, TurnID: *r.TurnID, SpanStart: -1, SpanEnd: -1}
		if r.SpanStart != nil {
			a.SpanStart = *r.SpanStart
		}
		if r.SpanEnd != nil {
			a.SpanEnd = *r.SpanEnd
		}
		if r.SpanText != nil {
			a.SpanText = *r.SpanText
		}
		out[i] = a
	}
	return out, nil
}

// sourceOrder lists the CoQA source domains in the order of the official
// script's report: the five in-domain sources, then the two out-of-domain.
var sourceOrder = [...]string{"mctest", "gutenberg", "race", "cnn", "wikipedia", "reddit", "science"}

func knownSource(s string) bool {
	for _, k := range sourceOrder {
		if k == s {
			return true
		}
	}
	return false
}

// FormatError reports a malformed CoQA file, naming the file and, where known,
// the story (index and id).
type FormatError struct {
	File    string // file name, "" when parsed from bytes
	Story   int    // 0-based story index in "data", -1 if not story-specific
	StoryID string // story id when known
	Msg     string
	Err     error // underlying error, if any
}

// Error formats the problem as "file: story N (id X): message: cause".
func (e *FormatError) Error() string {
	var b bytes.Buffer
	if e.File != "" {
		b.WriteString(e.File)
	} else {
		b.WriteString("coqa data")
	}
	if e.Story >= 0 {
		fmt.Fprintf(&b, ": story %d", e.Story)
		if e.StoryID != "" {
			fmt.Fprintf(&b, " (id %q)", e.StoryID)
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Err != nil {
		if e.Msg != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *FormatError) Unwrap() error { return e.Err }

// Load reads and validates a CoQA v1.0 JSON file (see Parse).
func Load(path string) (*Dataset, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, fmt.Errorf("load coqa data: %w", err)
	}
	return parse(path, data)
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// Parse decodes and validates CoQA v1.0 JSON. It fails with a *FormatError on
// missing required fields (story id, source, story text, question and answer
// input_text and turn_id), an unknown source, a story without questions, an
// answer count different from the question count, or an additional_answers
// list not aligned with the questions. Turn ids that do not match positions
// and duplicate story ids are only reported in Dataset.Warnings, as the
// official script does (it matches turns by position).
func Parse(data []byte) (*Dataset, error) { return parse("", data) }

func parse(file string, data []byte) (*Dataset, error) {
	ferr := func(story int, id, msg string, err error) error {
		return &FormatError{File: file, Story: story, StoryID: id, Msg: msg, Err: err}
	}
	var top struct {
		Version *string            `json:"version"`
		Data    *[]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, ferr(-1, "", "invalid JSON", jsonErr(data, err))
	}
	if top.Data == nil {
		return nil, ferr(-1, "", `missing "data" list`, nil)
	}
	ds := &Dataset{Stories: make([]Story, 0, len(*top.Data))}
	if top.Version != nil {
		ds.Version = *top.Version
	}
	seen := make(map[string]int, len(*top.Data))
	for si, rawMsg := range *top.Data {
		var rs rawStory
		if err := json.Unmarshal(rawMsg, &rs); err != nil {
			var idOnly struct {
				ID any `json:"id"`
			}
			_ = json.Unmarshal(rawMsg, &idOnly)
			id, _ := idOnly.ID.(string)
			return nil, ferr(si, id, "", err)
		}
		id := ""
		if rs.ID != nil {
			id = *rs.ID
		}
		switch {
		case rs.ID == nil || *rs.ID == "":
			return nil, ferr(si, "", `missing "id"`, nil)
		case rs.Source == nil:
			return nil, ferr(si, id, `missing "source"`, nil)
		case !knownSource(*rs.Source):
			return nil, ferr(si, id, fmt.Sprintf("unknown source %q (want one of %v)", *rs.Source, sourceOrder), nil)
		case rs.Story == nil:
			return nil, ferr(si, id, `missing "story"`, nil)
		case rs.Questions == nil:
			return nil, ferr(si, id, `missing "questions"`, nil)
		case rs.Answers == nil:
			return nil, ferr(si, id, `missing "answers"`, nil)
		case len(*rs.Questions) == 0:
			return nil, ferr(si, id, "no questions", nil)
		}
		st := Story{Source: *rs.Source, ID: id, Filename: rs.Filename, Story: *rs.Story, Name: rs.Name}
		st.Questions = make([]Question, len(*rs.Questions))
		for qi, q := range *rs.Questions {
			switch {
			case q.InputText == nil:
				return nil, ferr(si, id, (&fieldError{"questions", qi, "input_text"}).Error(), nil)
			case q.TurnID == nil:
				return nil, ferr(si, id, (&fieldError{"questions", qi, "turn_id"}).Error(), nil)
			}
			st.Questions[qi] = Question{InputText: *q.InputText, TurnID: *q.TurnID}
		}
		answers, err := convertAnswers(*rs.Answers, "answers")
		if err != nil {
			return nil, ferr(si, id, err.Error(), nil)
		}
		st.Answers = answers
		nq := len(st.Questions)
		if len(st.Answers) != nq {
			return nil, ferr(si, id, fmt.Sprintf("%d answers for %d questions", len(st.Answers), nq), nil)
		}
		for _, set := range rs.AdditionalAnswers {
			if len(set.Answers) != nq {
				return nil, ferr(si, id, fmt.Sprintf("additional_answers[%q] has %d answers for %d questions",
					set.Key, len(set.Answers), nq), nil)
			}
		}
		st.AdditionalAnswers = rs.AdditionalAnswers
		for qi, q := range st.Questions {
			if q.TurnID != qi+1 {
				ds.Warnings = append(ds.Warnings, fmt.Sprintf("%sstory %d (id %q): question %d has turn_id %d, want %d",
					filePrefix(file), si, id, qi, q.TurnID, qi+1))
			}
			if a := st.Answers[qi]; a.TurnID != q.TurnID {
				ds.Warnings = append(ds.Warnings, fmt.Sprintf("%sstory %d (id %q): answers[%d] has turn_id %d, question has %d",
					filePrefix(file), si, id, qi, a.TurnID, q.TurnID))
			}
			for _, set := range st.AdditionalAnswers {
				if a := set.Answers[qi]; a.TurnID != q.TurnID {
					ds.Warnings = append(ds.Warnings, fmt.Sprintf("%sstory %d (id %q): additional_answers[%q][%d] has turn_id %d, question has %d",
						filePrefix(file), si, id, set.Key, qi, a.TurnID, q.TurnID))
				}
			}
		}
		if prev, dup := seen[id]; dup {
			ds.Warnings = append(ds.Warnings, fmt.Sprintf("%sstory %d: duplicate story id %q (first at story %d)",
				filePrefix(file), si, id, prev))
		} else {
			seen[id] = si
		}
		ds.Stories = append(ds.Stories, st)
	}
	return ds, nil
}

func filePrefix(file string) string {
	if file == "" {
		return ""
	}
	return file + ": "
}

// jsonErr adds a line:column position to JSON syntax errors.
func jsonErr(data []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(data, se.Offset)
		return fmt.Errorf("line %d, column %d: %w", line, col, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		line, col := lineCol(data, te.Offset)
		return fmt.Errorf("line %d, column %d: %w", line, col, err)
	}
	return err
}

func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line, col = 1, 1
	for _, c := range data[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// Turns returns the total number of questions in the dataset.
func (d *Dataset) Turns() int {
	n := 0
	for i := range d.Stories {
		n += len(d.Stories[i].Questions)
	}
	return n
}

// Head returns a shallow copy of d limited to its first n stories (all when
// n <= 0 or n exceeds the count), as lm-eval's --limit does.
func (d *Dataset) Head(n int) *Dataset {
	c := *d
	if n > 0 && n < len(d.Stories) {
		c.Stories = d.Stories[:n]
	}
	return &c
}

// Marshal encodes the dataset in CoQA v1.0 JSON layout.
func (d *Dataset) Marshal() ([]byte, error) {
	v := d.Version
	if v == "" {
		v = "1.0"
	}
	out := struct {
		Version string  `json:"version"`
		Data    []Story `json:"data"`
	}{v, d.Stories}
	if out.Data == nil {
		out.Data = []Story{}
	}
	return json.MarshalIndent(out, "", " ")
}

// WriteDataset writes d as CoQA v1.0 JSON to path atomically (temporary file
// in the same directory, then rename).
func WriteDataset(path string, d *Dataset) error {
	data, err := d.Marshal()
	if err != nil {
		return fmt.Errorf("encode coqa data for %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'))
}

// turnKey formats a (story id, turn id) key as "id/turn".
func turnKey(id string, turn int) string { return id + "/" + strconv.Itoa(turn) }
