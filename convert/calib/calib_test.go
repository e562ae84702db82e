package calib

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wordEncoder gives each distinct whitespace-separated word an id
// (newlines become id 0).
type wordEncoder struct{ ids map[string]int }

func (e *wordEncoder) Encode(text string, addBOS bool) []int {
	var out []int
	if addBOS {
		out = append(out, 1)
	}
	for _, line := range strings.SplitAfter(text, "\n") {
		for _, w := range strings.Fields(line) {
			id, ok := e.ids[w]
			if !ok {
				id = len(e.ids) + 2
				e.ids[w] = id
			}
			out = append(out, id)
		}
		if strings.HasSuffix(line, "\n") {
			out = append(out, 0)
		}
	}
	return out
}

func (e *wordEncoder) BOS() int { return 1 }

func write(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	text := "a b c d e f g\nh i j\n\nk l m n o p\n\n\nq r s t u v w x y z\n"
	jsonl := `{"text": "a b c d e f g"}` + "\n" + `{"text": "h i j k l m n o p q r", "meta": 1}` + "\n\n"
	cases := []struct {
		name, file, body string
		opt              Options
		format           string
		records          int
		err              bool
	}{
		{"text", "c.txt", text, Options{Samples: 5, SeqLen: 4, Seed: 3}, "text", 3, false},
		{"text bos", "c.txt", text, Options{Samples: 2, SeqLen: 4, BOS: true}, "text", 3, false},
		{"jsonl by extension", "c.jsonl", jsonl, Options{Samples: 3, SeqLen: 6}, "jsonl", 2, false},
		{"jsonl sniffed", "c.txt", jsonl, Options{Samples: 3, SeqLen: 6}, "jsonl", 2, false},
		{"too short", "c.txt", "a b\n", Options{Samples: 1, SeqLen: 10}, "", 0, true},
		{"empty", "c.txt", "\n\n  \n", Options{Samples: 1, SeqLen: 1}, "", 0, true},
		{"jsonl without text", "c.jsonl", `{"content": "x"}` + "\n", Options{Samples: 1, SeqLen: 1}, "", 0, true},
		{"broken jsonl", "c.jsonl", `{"text": "x"` + "\n", Options{Samples: 1, SeqLen: 1}, "", 0, true},
		{"zero samples", "c.txt", text, Options{SeqLen: 4}, "", 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, c.file, c.body)
			s, err := Load(context.Background(), p, &wordEncoder{ids: map[string]int{}}, c.opt)
			if c.err {
				if !errors.Is(err, ErrCalib) {
					t.Fatalf("err = %v, want ErrCalib", err)
				}
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Info.Format != c.format || s.Info.Records != c.records || len(s.Info.SHA256) != 64 || s.Info.Bytes != int64(len(c.body)) {
				t.Errorf("info %+v", s.Info)
			}
			if len(s.Samples) != c.opt.Samples || s.Tokens() != c.opt.Samples*c.opt.SeqLen {
				t.Fatalf("%d samples, %d tokens", len(s.Samples), s.Tokens())
			}
			for _, w := range s.Samples {
				if len(w) != c.opt.SeqLen || (c.opt.BOS && w[0] != 1) {
					t.Fatalf("window %v", w)
				}
			}
			// Same seed, same windows.
			again, err := Load(context.Background(), p, &wordEncoder{ids: map[string]int{}}, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			for i := range s.Samples {
				for j := range s.Samples[i] {
					if s.Samples[i][j] != again.Samples[i][j] {
						t.Fatal("seeded draw is not reproducible")
					}
				}
			}
		})
	}
	if _, err := Load(context.Background(), filepath.Join(t.TempDir(), "missing.txt"), &wordEncoder{}, DefaultAWQ); err == nil {
		t.Error("missing file accepted")
	}
}

func TestFromTokensAndSplit(t *testing.T) {
	corpus := make([]int, 100)
	for i := range corpus {
		corpus[i] = i
	}
	s, err := FromTokens(corpus, 1, Options{Samples: 10, SeqLen: 100, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range s.Samples {
		if w[0] != 0 || w[99] != 99 {
			t.Fatalf("window of the whole corpus is %v", w)
		}
	}
	s, _ = FromTokens(corpus, 1, Options{Samples: 10, SeqLen: 8, Seed: 7})
	starts := map[int]bool{}
	for _, w := range s.Samples {
		for j := 1; j < len(w); j++ {
			if w[j] != w[j-1]+1 {
				t.Fatalf("window %v is not contiguous", w)
			}
		}
		starts[w[0]] = true
	}
	if len(starts) < 5 {
		t.Errorf("only %d distinct offsets in 10 draws", len(starts))
	}
	a, b, err := s.Split(7)
	if err != nil || len(a.Samples) != 7 || len(b.Samples) != 3 || a.Info.Samples != 7 || b.Info.Samples != 3 {
		t.Fatalf("split: %v", err)
	}
	if _, _, err := s.Split(10); err == nil {
		t.Error("split leaving nothing accepted")
	}
	if _, err := FromTokens(corpus, -1, Options{Samples: 1, SeqLen: 4, BOS: true}); err == nil {
		t.Error("BOS without a BOS id accepted")
	}
}

func TestImportanceJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "imp.json")
	imp := Importance{"model.layers.0.mlp.down_proj.weight": {1, 2.5}}
	if err := imp.WriteJSON(p, Info{Format: "text", Samples: 2, SeqLen: 3}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil || !strings.Contains(string(data), `"model.layers.0.mlp.down_proj.weight":[1,2.5]`) || !strings.Contains(string(data), `"seq_len":3`) {
		t.Fatalf("%s %v", data, err)
	}
	if err := imp.WriteJSON(filepath.Join(t.TempDir(), "no", "dir.json"), Info{}); err == nil {
		t.Error("unwritable path accepted")
	}
}
