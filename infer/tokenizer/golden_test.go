package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"qllama/internal/testutil"
)

func loadLlama3(tb testing.TB) *Tokenizer {
	tb.Helper()
	dir := testutil.Shared(tb, "tokenizers", "llama3")
	tok, err := loadCached(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Tokenizer{}
)

// loadCached avoids re-reading the 9 MB file in every test.
func loadCached(dir string) (*Tokenizer, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if t, ok := cache[dir]; ok {
		return t, nil
	}
	t, err := Load(dir)
	if err != nil {
		return nil, err
	}
	cache[dir] = t
	return t, nil
}

func readJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if filepath.Ext(path) == ".gz" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			tb.Fatal(err)
		}
		if err := json.NewDecoder(zr).Decode(v); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		return
	}
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

type tokCase struct {
	Name       string `json:"name"`
	Text       string `json:"text"`
	IDs        []int  `json:"ids"`
	IDsWithBOS []int  `json:"ids_with_bos"`
	Decoded    string `json:"decoded"`
}

func checkCases(t *testing.T, tok *Tokenizer, cases []tokCase, checkDecoded bool) {
	t.Helper()
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
				t.Errorf("Encode(%q) =\n %v\nwant\n %v", c.Text, got, c.IDs)
			}
			if got := tok.Encode(c.Text, true); !slices.Equal(got, c.IDsWithBOS) {
				t.Errorf("Encode(%q, BOS) = %v, want %v", c.Text, got, c.IDsWithBOS)
			}
			if got := tok.EncodeDefault(c.Text); !slices.Equal(got, c.IDsWithBOS) {
				t.Errorf("EncodeDefault(%q) = %v, want %v", c.Text, got, c.IDsWithBOS)
			}
			if checkDecoded {
				if got := tok.Decode(c.IDs); got != c.Decoded {
					t.Errorf("Decode = %q, want %q", got, c.Decoded)
				}
			}
		})
	}
}

func TestLlama3Golden(t *testing.T) {
	tok := loadLlama3(t)
	var g struct {
		BOS   int       `json:"bos_id"`
		Cases []tokCase `json:"cases"`
	}
	readJSON(t, testutil.Shared(t, "golden", "llama3_tokenizer_golden.json"), &g)
	if tok.BOS() != g.BOS {
		t.Errorf("BOS = %d, want %d", tok.BOS(), g.BOS)
	}
	checkCases(t, tok, g.Cases, true)
}

func TestLlama3EncodeExpected(t *testing.T) {
	tok := loadLlama3(t)
	var cases []tokCase
	readJSON(t, testutil.Shared(t, "tokenizers", "llama3", "encode_expected.json"), &cases)
	checkCases(t, tok, cases, false)
}

type modelGolden struct {
	Prompts []struct {
		Text       string `json:"text"`
		IDs        []int  `json:"ids"`
		GreedyIDs  []int  `json:"greedy_ids"`
		GreedyText string `json:"greedy_text"`
	} `json:"prompts"`
}

func checkModelGolden(t *testing.T, tok *Tokenizer, g modelGolden) {
	t.Helper()
	if len(g.Prompts) == 0 {
		t.Fatal("no prompts")
	}
	for i, p := range g.Prompts {
		if got := tok.EncodeDefault(p.Text); !slices.Equal(got, p.IDs) {
			t.Errorf("prompt %d: EncodeDefault(%q) =\n %v\nwant\n %v", i, p.Text, got, p.IDs)
		}
		if got := tok.Encode(p.Text, true); !slices.Equal(got, p.IDs) {
			t.Errorf("prompt %d: Encode(%q, true) = %v, want %v", i, p.Text, got, p.IDs)
		}
		if got := tok.Decode(p.GreedyIDs); got != p.GreedyText {
			t.Errorf("prompt %d: Decode(greedy) = %q, want %q", i, got, p.GreedyText)
		}
	}
}

func TestStories260kGolden(t *testing.T) {
	tok, err := Load(testutil.Shared(t, "models", "stories260k"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Kind() != KindSentencePiece || tok.VocabSize() != 512 || tok.BOS() != 1 || !slices.Equal(tok.EOS(), []int{2}) {
		t.Errorf("kind %s vocab %d bos %d eos %v", tok.Kind(), tok.VocabSize(), tok.BOS(), tok.EOS())
	}
	var g modelGolden
	readJSON(t, testutil.Shared(t, "golden", "stories260k_golden.json"), &g)
	checkModelGolden(t, tok, g)
}

func TestRandomLlama32Golden(t *testing.T) {
	tok, err := loadCached(testutil.Shared(t, "models", "random_llama32"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Kind() != KindByteLevel || tok.VocabSize() != 128256 || tok.BOS() != 128000 || !slices.Equal(tok.EOS(), []int{128001}) {
		t.Errorf("kind %s vocab %d bos %d eos %v", tok.Kind(), tok.VocabSize(), tok.BOS(), tok.EOS())
	}
	var g modelGolden
	readJSON(t, testutil.Shared(t, "golden", "random_llama32_golden.json.gz"), &g)
	checkModelGolden(t, tok, g)
}
