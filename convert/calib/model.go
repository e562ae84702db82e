package calib

import (
	"encoding/json"
	"fmt"

	"qllama/format/hf"
	"qllama/infer"
	"qllama/internal/atomicfile"
)

// Stage is one of the four places a decoder block's linears read their
// input; the linears of a stage share it.
type Stage int

// Stages in execution order.
const (
	StageQKV    Stage = iota // q, k, v read the attention RMSNorm output
	StageO                   // o reads the attention output
	StageGateUp              // gate, up read the FFN RMSNorm output
	StageDown                // down reads silu(gate)*up
)

// Stages lists the stages in execution order.
var Stages = [...]Stage{StageQKV, StageO, StageGateUp, StageDown}

// Linears returns the Hugging Face suffixes of the stage's linears.
func (s Stage) Linears() []string {
	switch s {
	case StageQKV:
		return []string{hf.AttnQ, hf.AttnK, hf.AttnV}
	case StageO:
		return []string{hf.AttnO}
	case StageGateUp:
		return []string{hf.FFNGate, hf.FFNUp}
	case StageDown:
		return []string{hf.FFNDown}
	}
	return nil
}

// Input returns the stage's captured input ([n, cols]).
func (s Stage) Input(a *infer.BlockActivations) []float32 {
	switch s {
	case StageQKV:
		return a.AttnIn
	case StageO:
		return a.OIn
	case StageGateUp:
		return a.FFNIn
	}
	return a.DownIn
}

// Cols returns the width of the stage's input.
func (s Stage) Cols(c *infer.Config) int {
	switch s {
	case StageO:
		return c.Heads * c.HeadDim
	case StageDown:
		return c.FFNDim
	}
	return c.Dim
}

// LinearField returns a pointer to the layer's linear with the given
// Hugging Face suffix.
func LinearField(L *infer.Layer, suffix string) (*infer.Linear, error) {
	switch suffix {
	case hf.AttnQ:
		return &L.Q, nil
	case hf.AttnK:
		return &L.K, nil
	case hf.AttnV:
		return &L.V, nil
	case hf.AttnO:
		return &L.O, nil
	case hf.FFNGate:
		return &L.Gate, nil
	case hf.FFNUp:
		return &L.Up, nil
	case hf.FFNDown:
		return &L.Down, nil
	}
	return nil, fmt.Errorf("no linear %q in a decoder block: %w", suffix, ErrCalib)
}

// DenseWeight returns the float32 weights of a linear, which calibration
// needs; other storage formats are an error.
func DenseWeight(l infer.Linear, name string) (*infer.Dense, error) {
	d, ok := l.(*infer.Dense)
	if !ok || d == nil {
		return nil, fmt.Errorf("%s: calibration needs float32 weights, have %T: %w", name, l, ErrCalib)
	}
	return d, nil
}

// Embed returns the token embeddings of every sample, [Tokens(), Dim]:
// the input of the first decoder block.
func Embed(m *infer.Model, s *Set) ([]float32, error) {
	if len(s.Samples) == 0 || s.Info.SeqLen <= 0 {
		return nil, fmt.Errorf("empty calibration set: %w", ErrCalib)
	}
	L := s.Info.SeqLen
	x := make([]float32, len(s.Samples)*L*m.Dim)
	for i, ids := range s.Samples {
		if len(ids) != L {
			return nil, fmt.Errorf("sample %d has %d tokens, want %d: %w", i, len(ids), L, ErrCalib)
		}
		if err := m.EmbedRows(x[i*L*m.Dim:(i+1)*L*m.Dim], ids); err != nil {
			return nil, fmt.Errorf("sample %d: %w", i, err)
		}
	}
	return x, nil
}

// BatchSamples returns how many samples of seqLen rows make a batch of
// about 4096 rows (at least 1): the unit in which blocks are run to bound
// the memory of captured activations.
func BatchSamples(seqLen int) int { return max(1, 4096/max(seqLen, 1)) }

// Importance is the mean of x² per input column of every linear layer, by
// Hugging Face tensor name; mixed-precision policies rank columns and
// layers by it.
type Importance map[string][]float64

// WriteJSON writes the importance map with the calibration info to path
// (through a temporary file renamed into place).
func (imp Importance) WriteJSON(path string, info Info) error {
	data, err := json.Marshal(struct {
		Calib      Info       `json:"calib"`
		Definition string     `json:"definition"`
		Importance Importance `json:"importance"`
	}{info, "mean of x^2 per input column of each linear layer over the calibration tokens", imp})
	if err != nil {
		return fmt.Errorf("importance: %w", err)
	}
	if err := atomicfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("importance: %w", err)
	}
	return nil
}
