package tokenizer

import (
	"os"
	"path/filepath"
	"testing"

	"qllama/internal/testutil"
)

// FuzzFromJSON feeds mutated tokenizer.json / tokenizer_config.json pairs to
// the loader: it must return an error or a tokenizer that encodes and
// decodes without panicking.
func FuzzFromJSON(f *testing.F) {
	dir := testutil.Shared(f, "models", "stories260k")
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	tc, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tj, tc)
	gj, gc, err := GenerateByteLevel(300, "the cat sat on the mat. the dog sat on the log. 123 456")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(gj, gc)
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, tokJSON, cfgJSON []byte) {
		tok, err := FromJSON(tokJSON, cfgJSON)
		if err != nil {
			return
		}
		for _, s := range []string{"", "Once upon a time", "héllo wörld 🙂\n\t<s>", "\xff\xfe"} {
			ids := tok.Encode(s, true)
			for _, id := range ids {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("Encode(%q) gave id %d outside [0, %d)", s, id, tok.VocabSize())
				}
			}
			_ = tok.Decode(ids)
		}
	})
}
