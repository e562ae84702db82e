package coqa

import (
	"encoding/json"
	"fmt"
	"qllama/internal/atomicfile"
)

// Protocol names, written into every Result.
const (
	// ProtocolLMEval is lm-evaluation-harness coqa v3.0: last turn of each
	// story, de-duplicated golds, mean EM/F1 in [0,1].
	ProtocolLMEval = "lmeval"
	// ProtocolAllTurns asks every turn and scores like evaluate-v1.0.py.
	ProtocolAllTurns = "all-turns"
)

// Scorer descriptions written into Result.Scorer.
const (
	scorerLMEval   = "lm-evaluation-harness coqa v3.0 (last turn, de-duplicated golds, mean in [0,1])"
	scorerOfficial = "CoQA evaluate-v1.0.py (every turn, 4 golds, percent rounded to 0.1 per domain)"
)

// ModelInfo describes the evaluated model. The caller fills it; the package
// only copies it into the result.
type ModelInfo struct {
	Path    string  `json:"path"`
	SHA256  string  `json:"sha256,omitempty"`
	BPW     float64 `json:"bpw,omitempty"`      // bits per weight
	Format  string  `json:"format,omitempty"`   // e.g. "gguf q4_k"
	Backend string  `json:"backend,omitempty"`  // e.g. "cuda", "cpu"
	KVCache string  `json:"kv_cache,omitempty"` // the KV cache's element type: "f32", "f16"
}

// DatasetInfo identifies the data a result was computed on.
type DatasetInfo struct {
	Path    string `json:"path,omitempty"`
	Stories int    `json:"stories"` // stories evaluated (after Limit)
	Turns   int    `json:"turns"`   // questions scored
}

// DomainScore is one entry of the official report.
type DomainScore struct {
	EM    float64 `json:"em"`
	F1    float64 `json:"f1"`
	Turns int     `json:"turns"`
}

// OfficialScores mirrors the dictionary printed by evaluate-v1.0.py, field
// for field and in the same order. Values are percentages rounded to one
// decimal exactly as Python's round(x, 1).
type OfficialScores struct {
	ChildrenStories DomainScore `json:"children_stories"`
	Literature      DomainScore `json:"literature"`
	MidHighSchool   DomainScore `json:"mid-high_school"`
	News            DomainScore `json:"news"`
	Wikipedia       DomainScore `json:"wikipedia"`
	Reddit          DomainScore `json:"reddit"`
	Science         DomainScore `json:"science"`
	InDomain        DomainScore `json:"in_domain"`
	OutDomain       DomainScore `json:"out_domain"`
	Overall         DomainScore `json:"overall"`
}

// domain returns the field of the source's domain.
func (o *OfficialScores) domain(source string) *DomainScore {
	switch source {
	case "mctest":
		return &o.ChildrenStories
	case "gutenberg":
		return &o.Literature
	case "race":
		return &o.MidHighSchool
	case "cnn":
		return &o.News
	case "wikipedia":
		return &o.Wikipedia
	case "reddit":
		return &o.Reddit
	case "science":
		return &o.Science
	}
	return nil
}

// Timings summarises a generation run.
type Timings struct {
	WallSeconds        float64 `json:"wall_s"`
	Requests           int     `json:"requests"`
	Batches            int     `json:"batches"`
	PromptTokens       int     `json:"prompt_tokens"`
	CachedPromptTokens int     `json:"cached_prompt_tokens"` // prefix reused by the backend
	GeneratedTokens    int     `json:"generated_tokens"`
	PromptTokensPerSec float64 `json:"prompt_tokens_per_s"` // prompt tokens / wall
	GenTokensPerSec    float64 `json:"generated_tokens_per_s"`
	QuestionsPerSec    float64 `json:"questions_per_s"`
}

// PredictionRecord is one scored question with everything needed to audit
// its score.
type PredictionRecord struct {
	ID     string `json:"id"`
	TurnID int    `json:"turn_id"`
	Source string `json:"source"`
	// PromptTokens is the length of the prompt fed to the model (after
	// truncation); PromptTokensFull is its length before truncation.
	PromptTokens       int  `json:"prompt_tokens,omitempty"`
	PromptTokensFull   int  `json:"prompt_tokens_full,omitempty"`
	Truncated          bool `json:"truncated,omitempty"`
	CachedPromptTokens int  `json:"cached_prompt_tokens,omitempty"`
	GeneratedTokens    int  `json:"generated_tokens,omitempty"`
	// Raw is the model output (or the predictions file's answer) before
	// cleaning; Prediction is what was scored.
	Raw        string   `json:"raw"`
	Prediction string   `json:"prediction"`
	Golds      []string `json:"golds"`
	// Missing marks a turn without prediction; it scores 0.
	Missing bool    `json:"missing,omitempty"`
	EM      float64 `json:"em"`
	F1      float64 `json:"f1"`
}

// Result is the JSON document of one evaluation or scoring run.
type Result struct {
	Protocol string `json:"protocol"` // ProtocolLMEval or ProtocolAllTurns
	Scorer   string `json:"scorer"`
	// Origin is "generate" for Run, or "predictions" for the scorers.
	Origin       string      `json:"origin"`
	Model        *ModelInfo  `json:"model,omitempty"`
	Dataset      DatasetInfo `json:"dataset"`
	Limit        int         `json:"limit"` // stories, 0 = all
	MaxGenTokens int         `json:"max_gen_tokens,omitempty"`
	// MaxPositionEmbeddings is the model context; MaxContextTokens =
	// MaxPositionEmbeddings - MaxGenTokens is the prompt budget.
	MaxPositionEmbeddings int      `json:"max_position_embeddings,omitempty"`
	MaxContextTokens      int      `json:"max_context_tokens,omitempty"`
	AddBOS                *bool    `json:"add_bos,omitempty"` // set by Run
	Order                 string   `json:"order,omitempty"`   // request order (Run)
	Stop                  []string `json:"stop,omitempty"`
	Decoding              string   `json:"decoding,omitempty"`
	// N is the number of scored questions (stories for lmeval, turns for
	// all-turns).
	N int `json:"n"`
	// EM and F1 are unrounded means over the N questions in [0,1]: the
	// lm-eval metric for lmeval, the official overall (before *100 and
	// rounding) for all-turns.
	EM float64 `json:"em"`
	F1 float64 `json:"f1"`
	// Official is the evaluate-v1.0.py report (all-turns only).
	Official    *OfficialScores    `json:"official,omitempty"`
	Timings     *Timings           `json:"timings,omitempty"`
	Started     string             `json:"started,omitempty"` // RFC 3339
	Warnings    []string           `json:"warnings,omitempty"`
	Predictions []PredictionRecord `json:"predictions"`
}

// WriteJSON writes r as indented JSON to path atomically (temporary file in
// the same directory, then rename).
func (r *Result) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("encode coqa result for %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'))
}

// ReadResult reads a result written by WriteJSON.
func ReadResult(path string) (*Result, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, fmt.Errorf("read coqa result: %w", err)
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("read coqa result %s: %w", path, jsonErr(data, err))
	}
	return &r, nil
}
