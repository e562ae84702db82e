package infer_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"qllama/format/hf"
	"qllama/infer"
	"qllama/internal/testutil"
)

// golden mirrors ../shared/testdata/golden/*_golden.json (Hugging Face
// transformers, float32, logits rounded to 6 significant digits).
type golden struct {
	Prompts []struct {
		Text          string      `json:"text"`
		IDs           []int       `json:"ids"`
		LastLogits    []float32   `json:"last_logits"`
		AllLogits     [][]float32 `json:"all_logits"`
		GreedyIDs     []int       `json:"greedy_ids"`
		GreedyMargins []float64   `json:"greedy_margins"`
		GreedyText    string      `json:"greedy_text"`
	} `json:"prompts"`
}

func readGolden(t *testing.T, name string) *golden {
	t.Helper()
	path := testutil.Shared(t, "golden", name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r interface{ Read([]byte) (int, error) } = f
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	var g golden
	if err := json.NewDecoder(r).Decode(&g); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &g
}

func loadModel(t testing.TB, name string) *infer.Model {
	t.Helper()
	src, err := hf.Open(testutil.Shared(t, "models", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	m, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const logitTol = 1e-4 // absolute, float32 forward vs transformers (testdata README)

func maxAbsDiff(t *testing.T, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d logits, want %d", len(got), len(want))
	}
	var d float64
	for i := range got {
		d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
	}
	return d
}

// TestGolden compares logits and greedy decoding with Hugging Face
// transformers for the real tiny model and the Llama-3.2-architecture one.
func TestGolden(t *testing.T) {
	for _, tc := range []struct{ model, golden string }{
		{"stories260k", "stories260k_golden.json"},
		{"random_llama32", "random_llama32_golden.json.gz"},
	} {
		t.Run(tc.model, func(t *testing.T) {
			m := loadModel(t, tc.model)
			g := readGolden(t, tc.golden)
			r := infer.NewRunner(m)
			for pi, p := range g.Prompts {
				// Last-position (and, where the golden has them, all-position) logits.
				all := p.AllLogits != nil
				out, err := r.Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: p.IDs, AllLogits: all}})
				if err != nil {
					t.Fatal(err)
				}
				rows := out[0]
				if d := maxAbsDiff(t, rows[len(rows)-1], p.LastLogits); d > logitTol {
					t.Errorf("prompt %d (%d ids): last logits differ by %.3g > %g", pi, len(p.IDs), d, logitTol)
				}
				if all {
					if len(rows) != len(p.AllLogits) {
						t.Fatalf("prompt %d: %d positions, want %d", pi, len(rows), len(p.AllLogits))
					}
					for j := range rows {
						if d := maxAbsDiff(t, rows[j], p.AllLogits[j]); d > logitTol {
							t.Errorf("prompt %d position %d: logits differ by %.3g", pi, j, d)
						}
					}
				}
				// Greedy ids, teacher-forced on the golden continuation: the
				// argmax must match wherever the golden margin is clear.
				cache := infer.NewKVCache(&m.Config)
				out, err = r.Forward([]infer.Step{{Cache: cache, Tokens: p.IDs}})
				if err != nil {
					t.Fatal(err)
				}
				forced := [][]float32{out[0][0]}
				out, err = r.Forward([]infer.Step{{Cache: cache, Tokens: p.GreedyIDs[:len(p.GreedyIDs)-1], AllLogits: true}})
				if err != nil {
					t.Fatal(err)
				}
				forced = append(forced, out[0]...)
				for k, want := range p.GreedyIDs {
					got := infer.Argmax(forced[k])
					if got != want && p.GreedyMargins[k] > 1e-3 {
						t.Errorf("prompt %d greedy step %d: id %d, want %d (margin %.4g)", pi, k, got, want, p.GreedyMargins[k])
					}
				}
				// Free-running greedy generation agrees up to the first near tie.
				agree := len(p.GreedyIDs)
				for k, mg := range p.GreedyMargins {
					if mg <= 1e-3 {
						agree = k
						break
					}
				}
				var got []int
				err = r.Generate(context.Background(), []infer.Request{{Prompt: p.IDs, MaxNewTokens: len(p.GreedyIDs)}},
					infer.GenerateOptions{}, func(c infer.Completion) { got = c.Tokens })
				if err != nil {
					t.Fatal(err)
				}
				for k := 0; k < agree && k < len(got); k++ {
					if got[k] != p.GreedyIDs[k] {
						t.Errorf("prompt %d generate step %d: id %d, want %d", pi, k, got[k], p.GreedyIDs[k])
						break
					}
				}
				if len(got) < agree {
					t.Errorf("prompt %d: generated %d tokens, want at least %d", pi, len(got), agree)
				}
			}
		})
	}
}
