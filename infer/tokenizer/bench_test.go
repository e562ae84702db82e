package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

// story builds about n bytes of English prose from varied sentences.
func story(n int) string {
	subjects := []string{"Lily", "The old fisherman", "Tom's little sister", "A curious fox", "The teacher", "Grandma Rose", "The robot", "Everyone in the village"}
	verbs := []string{"walked slowly to", "ran across", "painted a picture of", "told a story about", "dreamed of", "carefully cleaned", "laughed at", "couldn't stop thinking about"}
	objects := []string{"the river near the mill", "a bright red kite", "the 3 tall trees", "yesterday's storm", "the bakery on Main Street", "her favourite book", "1,250 shiny pebbles", "the quiet, snowy hills"}
	tails := []string{".", "!", "?", ", and then it started to rain.", " before dinner.", "; nobody knew why.", " — it was wonderful.", ".\n\n\"Really?\" she asked."}
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString(subjects[i%len(subjects)])
		b.WriteByte(' ')
		b.WriteString(verbs[(i/3)%len(verbs)])
		b.WriteByte(' ')
		b.WriteString(objects[(i/7)%len(objects)])
		b.WriteString(tails[(i/2)%len(tails)])
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

func BenchmarkEncodeLlama3(b *testing.B) {
	tok := loadLlama3(b)
	text := story(100_000)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	var n int
	for b.Loop() {
		n = len(tok.Encode(text, true))
	}
	b.ReportMetric(float64(n), "tokens")
}

func BenchmarkDecodeLlama3(b *testing.B) {
	tok := loadLlama3(b)
	text := story(100_000)
	ids := tok.Encode(text, false)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		if tok.Decode(ids) != text {
			b.Fatal("round trip")
		}
	}
}

func BenchmarkEncodeStories260k(b *testing.B) {
	tok := loadStories(b)
	text := story(100_000)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		tok.Encode(text, true)
	}
}

func BenchmarkLoadLlama3(b *testing.B) {
	dir := testutil.Shared(b, "tokenizers", "llama3")
	st, err := os.Stat(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	for b.Loop() {
		if _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScannerLlama3(b *testing.B) {
	text := story(100_000)
	b.SetBytes(int64(len(text)))
	var spans [][2]int
	for b.Loop() {
		spans = llama3Scanner{}.matches(text, spans[:0])
	}
}

func BenchmarkRegexp2Llama3(b *testing.B) {
	text := story(10_000)
	m, err := newRegexpMatcher(Llama3Pattern)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		m.matches(text, nil)
	}
}
