package tokenizer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"qllama/internal/testutil"
)

func loadStories(tb testing.TB) *Tokenizer {
	tb.Helper()
	tok, err := loadCached(testutil.Shared(tb, "models", "stories260k"))
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// roundTripTexts are texts every tokenizer must give back from Decode(Encode(x)).
var roundTripTexts = []string{
	"", " ", "  ", "Hello world", " Hello world", "a  b   c\t\td\n\n\ne \r\n",
	"It’s John’s book, isn’t it? I'M SURE YOU'LL SEE",
	"Café naïve résumé über Straße — Привет, мир! 今日はいい天気ですね。 한국어",
	"emoji 🦙🚀 👨\u200d👩\u200d👧 🇯🇵 👍🏽", "nul\x00bell\x07esc\x1b del\x7f",
	"def f(x):\n    return x ** 2  # square\n", "0123456789012345678901234567890",
}

func TestRoundTrip(t *testing.T) {
	gen := generated(t, 1000)
	for _, tc := range []struct {
		name string
		tok  *Tokenizer
	}{{"llama3", loadLlama3(t)}, {"stories260k", loadStories(t)}, {"generated", gen}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range roundTripTexts {
				ids := tc.tok.Encode(s, false)
				if got := tc.tok.Decode(ids); got != s {
					t.Errorf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
				}
				// Streaming: the raw bytes of the tokens concatenate to the text
				// (SentencePiece keeps the prepended space that Decode strips).
				var raw []byte
				for _, id := range ids {
					raw = append(raw, tc.tok.DecodeToken(id)...)
				}
				want := s
				if tc.tok.Kind() == KindSentencePiece && s != "" {
					want = " " + s
				}
				if string(raw) != want {
					t.Errorf("DecodeToken stream of %q = %q", s, raw)
				}
			}
		})
	}
}

func TestAddedTokensInText(t *testing.T) {
	l3 := loadLlama3(t)
	st := loadStories(t)
	for _, tc := range []struct {
		name string
		tok  *Tokenizer
		text string
		want []int
	}{
		{"bos_in_text", l3, "<|begin_of_text|>Hello", []int{128000, 9906}},
		{"two_specials", l3, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", []int{128006, 882, 128007, 271, 13347, 128009}},
		{"space_before_special", l3, "Hello <|eot_id|>", []int{9906, 220, 128009}},
		{"partial_special", l3, "<|begin_of_tex", l3.Encode("<|begin_of_tex", false)},
		{"spm_bos_in_text", st, "<s>Once", append([]int{1}, st.Encode("Once", false)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.tok.Encode(tc.text, false); !slices.Equal(got, tc.want) {
				t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
	if ids := l3.Encode("<|begin_of_tex", false); slices.Contains(ids, 128000) {
		t.Errorf("a prefix of a special token must not match: %v", ids)
	}
}

// tinyByteLevel is a hand-made byte-level tokenizer.json with added tokens
// that exercise lstrip, rstrip and single_word.
func tinyByteLevel(t *testing.T, added string) *Tokenizer {
	t.Helper()
	var vocab []string
	for b := range 256 {
		vocab = append(vocab, byteLevelEncode(string([]byte{byte(b)})))
	}
	vb, _ := json.Marshal(orderedVocab(vocab))
	js := `{"added_tokens":` + added + `,
	"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + mustJSON(Llama3Pattern) +
		`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},
	"decoder":{"type":"ByteLevel"},
	"model":{"type":"BPE","vocab":` + string(vb) + `,"merges":[]}}`
	tok, err := FromJSON([]byte(js), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestAddedTokenOptions(t *testing.T) {
	tok := tinyByteLevel(t, `[
		{"id":256,"content":"<L>","lstrip":true,"special":true},
		{"id":257,"content":"<R>","rstrip":true,"special":true},
		{"id":258,"content":"word","single_word":true},
		{"id":259,"content":"<LONG>","special":true},
		{"id":260,"content":"<LONGER>","special":true}]`)
	bytesOf := func(s string) []int {
		var ids []int
		for i := 0; i < len(s); i++ {
			ids = append(ids, int(s[i]))
		}
		return ids
	}
	cat := func(parts ...[]int) []int { return slices.Concat(parts...) }
	for _, tc := range []struct {
		text string
		want []int
	}{
		{"a  <L>b", cat(bytesOf("a"), []int{256}, bytesOf("b"))}, // lstrip eats the spaces before
		{"a<R>  b", cat(bytesOf("a"), []int{257}, bytesOf("b"))}, // rstrip eats the spaces after
		{"  <L>", []int{256}},                                        // lstrip at the start
		{"<R> <L>x", []int{257, 256, 'x'}},                           // both sides share the space
		{"a word b", cat(bytesOf("a "), []int{258}, bytesOf(" b"))},  // single word
		{"swordfish", bytesOf("swordfish")},                          // not a single word
		{"word_x", bytesOf("word_x")},                                // _ is a word character
		{"<LONGER><LONG>", []int{260, 259}},                          // longest match wins
		{"<LON", bytesOf("<LON")},                                    // no partial match
		{"x\u3000<L>y", cat(bytesOf("x"), []int{256}, bytesOf("y"))}, // Unicode whitespace
	} {
		if got := tok.Encode(tc.text, false); !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
	if got := tok.TokenTypes()[256:261]; !slices.Equal(got, []TokenType{TokenControl, TokenControl, TokenUserDefined, TokenControl, TokenControl}) {
		t.Errorf("token types %v", got)
	}
}

func TestInvalidUTF8(t *testing.T) {
	// Invalid input is read as Python's bytes.decode(errors="replace") would:
	// each maximal invalid sequence becomes U+FFFD. It never panics.
	l3 := loadLlama3(t)
	st := loadStories(t)
	for _, s := range []string{"\xff", "a\xffb", "\xf0\x9f\x98", "\xe2\x82", "\xed\xa0\x80", "ok\xc0\xafend", "\x80\x80"} {
		want := lossyUTF8(s)
		for _, tok := range []*Tokenizer{l3, st} {
			ids := tok.Encode(s, true)
			if !slices.Equal(ids, tok.Encode(want, true)) {
				t.Errorf("%s: Encode(%q) differs from Encode(%q)", tok.Kind(), s, want)
			}
			if got := tok.Decode(ids[1:]); got != want {
				t.Errorf("%s: Decode(Encode(%q)) = %q, want %q", tok.Kind(), s, got, want)
			}
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	// Expected values follow Rust's String::from_utf8_lossy (maximal subparts).
	for _, tc := range []struct{ in, want string }{
		{"abc", "abc"},
		{"\xff\xff", "\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98x", "\uFFFDx"},
		{"\xe0\x80\x80", "\uFFFD\uFFFD\uFFFD"}, // overlong: E0 needs A0..BF next
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xc3", "\uFFFD"},
		{"\xc3\xa9\xc3", "é\uFFFD"},
	} {
		if got := lossyUTF8(tc.in); got != tc.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDecodeByteFallback(t *testing.T) {
	st := loadStories(t)
	id := func(s string) int {
		i, ok := st.ID(s)
		if !ok {
			t.Fatalf("no token %q", s)
		}
		return i
	}
	// 🦙 is not in the 512-token vocabulary: four byte tokens.
	ids := st.Encode("🦙", false)
	want := []int{id("▁"), id("<0xF0>"), id("<0x9F>"), id("<0xA6>"), id("<0x99>")}
	if !slices.Equal(ids, want) {
		t.Fatalf("Encode(🦙) = %v, want %v", ids, want)
	}
	for _, tc := range []struct {
		ids  []int
		want string
	}{
		{want, "🦙"},
		{want[:3], "\uFFFD\uFFFD"}, // an incomplete sequence: one U+FFFD per byte, as HF ByteFallback
		{[]int{1, want[1], 2}, "<s>\uFFFD</s>"},
		{[]int{-1, 99999}, ""},
	} {
		if got := st.Decode(tc.ids); got != tc.want {
			t.Errorf("Decode(%v) = %q, want %q", tc.ids, got, tc.want)
		}
	}
	if got := st.DecodeToken(id("<0xF0>")); !bytes.Equal(got, []byte{0xF0}) {
		t.Errorf("DecodeToken(<0xF0>) = %v", got)
	}
}

func TestAccessors(t *testing.T) {
	l3 := loadLlama3(t)
	if l3.Kind() != KindByteLevel || l3.VocabSize() != 128256 || l3.Pattern() != Llama3Pattern {
		t.Errorf("kind %q size %d pattern %q", l3.Kind(), l3.VocabSize(), l3.Pattern())
	}
	if l3.Token(9906) != "Hello" || l3.Token(22691) != "ĠHello" || l3.Token(128000) != "<|begin_of_text|>" || l3.Token(-1) != "" {
		t.Errorf("Token: %q %q %q", l3.Token(9906), l3.Token(22691), l3.Token(128000))
	}
	if id, ok := l3.ID("<|eot_id|>"); !ok || id != 128009 {
		t.Errorf("ID(<|eot_id|>) = %d, %v", id, ok)
	}
	m := l3.Merges()
	if len(m) != 280147 || m[0] != "Ġ Ġ" || m[1] != "Ġ ĠĠĠ" {
		t.Errorf("merges: %d, first %q", len(m), m[:2])
	}
	types := l3.TokenTypes()
	if types[0] != TokenNormal || types[128000] != TokenControl || types[128255] != TokenControl || !l3.IsSpecial(128001) || l3.IsSpecial(5) {
		t.Errorf("types %v %v %v", types[0], types[128000], types[128255])
	}
	if string(l3.DecodeToken(22691)) != " Hello" || string(l3.DecodeToken(128000)) != "<|begin_of_text|>" || l3.DecodeToken(1<<30) != nil {
		t.Error("DecodeToken")
	}
	st := loadStories(t)
	stTypes := st.TokenTypes()
	if stTypes[0] != TokenUnknown || stTypes[1] != TokenControl || stTypes[3] != TokenByte || stTypes[259] != TokenNormal {
		t.Errorf("stories types %v", stTypes[:4])
	}
	if st.Pattern() != "" || len(st.Vocab()) != 512 || st.Vocab()[259] != "▁t" {
		t.Error("stories vocab")
	}
}

// TestFromPartsRoundTrip rebuilds each tokenizer from its GGUF-style parts
// and checks it encodes and decodes the golden texts identically.
func TestFromPartsRoundTrip(t *testing.T) {
	var g struct {
		Cases []tokCase `json:"cases"`
	}
	readJSON(t, testutil.Shared(t, "golden", "llama3_tokenizer_golden.json"), &g)
	var texts []string
	for _, c := range g.Cases {
		texts = append(texts, c.Text)
	}
	texts = append(texts, roundTripTexts...)
	st := loadStories(t)
	noMerges := st.Parts()
	noMerges.Merges = nil // SentencePiece GGUFs carry scores, not merges
	for _, tc := range []struct {
		name string
		tok  *Tokenizer
		p    Parts
	}{
		{"llama3", loadLlama3(t), loadLlama3(t).Parts()},
		{"stories260k", st, st.Parts()},
		{"stories260k_scores", st, noMerges},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := FromParts(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rt.Merges(), tc.tok.Merges()) {
				t.Errorf("merges differ: %d vs %d", len(rt.Merges()), len(tc.tok.Merges()))
			}
			if rt.BOS() != tc.tok.BOS() || !slices.Equal(rt.EOS(), tc.tok.EOS()) || rt.VocabSize() != tc.tok.VocabSize() ||
				rt.Kind() != tc.tok.Kind() || !slices.Equal(rt.TokenTypes(), tc.tok.TokenTypes()) {
				t.Errorf("metadata differs")
			}
			for _, s := range texts {
				want := tc.tok.EncodeDefault(s)
				if got := rt.EncodeDefault(s); !slices.Equal(got, want) {
					t.Errorf("EncodeDefault(%q) = %v, want %v", s, got, want)
				}
				if got, w := rt.Decode(want), tc.tok.Decode(want); got != w {
					t.Errorf("Decode = %q, want %q", got, w)
				}
			}
		})
	}
}

// TestMergesFromLlama2cScores derives merges from the scores in llama2.c's
// tok512.bin (the original SentencePiece model) and compares them with the
// merges of stories260k's tokenizer.json.
func TestMergesFromLlama2cScores(t *testing.T) {
	st := loadStories(t)
	b, err := os.ReadFile(filepath.Join(testutil.Shared(t, "models", "stories260k", "llama2c"), "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var scores []float32
	for off := 4; off+8 <= len(b); {
		scores = append(scores, math.Float32frombits(binary.LittleEndian.Uint32(b[off:])))
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		off += 8 + n
	}
	if len(scores) != st.VocabSize() {
		t.Fatalf("%d scores for %d tokens", len(scores), st.VocabSize())
	}
	got := mergesFromScores(st.Vocab(), scores)
	var gotStr []string
	for _, m := range got {
		gotStr = append(gotStr, m[0]+" "+m[1])
	}
	if !slices.Equal(gotStr, st.Merges()) {
		t.Errorf("derived %d merges, tokenizer.json has %d; first %q vs %q", len(gotStr), len(st.Merges()), gotStr[:3], st.Merges()[:3])
	}
	if exp := st.Parts().Scores; !slices.Equal(exp, scores) {
		t.Errorf("exported scores differ from tok512.bin's")
	}
}

// TestVariants loads rewritten copies of stories260k's tokenizer.json: merges
// as ["a","b"] pairs, and the Metaspace pre-tokenizer that newer
// conversions use instead of the Prepend/Replace normalizer.
func TestVariants(t *testing.T) {
	dir := testutil.Shared(t, "models", "stories260k")
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g modelGolden
	readJSON(t, testutil.Shared(t, "golden", "stories260k_golden.json"), &g)
	for _, tc := range []struct {
		name   string
		edit   func(m map[string]any)
		leadSp bool // " x" still encodes like the original
	}{
		{"pair_merges", func(m map[string]any) {
			model := m["model"].(map[string]any)
			var pairs [][]string
			for _, s := range model["merges"].([]any) {
				a, b, _ := strings.Cut(s.(string), " ")
				pairs = append(pairs, []string{a, b})
			}
			model["merges"] = pairs
		}, true},
		{"metaspace_first", func(m map[string]any) {
			m["normalizer"] = nil
			m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			b, _ := json.Marshal(m)
			tok, err := FromJSON(b, cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkModelGolden(t, tok, g)
			orig := loadStories(t)
			if got, want := tok.Encode(" x", false), orig.Encode(" x", false); slices.Equal(got, want) != tc.leadSp {
				t.Errorf("Encode(\" x\") = %v, original %v", got, want)
			}
		})
	}
}

func TestBadTokenizerJSON(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(testutil.Shared(t, "models", "stories260k"), "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	for _, tc := range []struct {
		name        string
		json, cfg   []byte
		want        string
		unsupported bool
	}{
		{"empty", nil, nil, "unexpected end", false},
		{"garbage", []byte("not json at all"), nil, "invalid JSON", false},
		{"array", []byte("[1,2]"), nil, "invalid JSON", false},
		{"truncated", good[:len(good)/2], nil, "invalid JSON", false},
		{"no_model", []byte(`{"version":"1.0"}`), nil, `no "model"`, false},
		{"unigram", []byte(`{"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["a",-1.0]]}}`), nil, "Unigram", false},
		{"wordpiece", []byte(`{"model":{"type":"WordPiece","unk_token":"[UNK]","vocab":{"[UNK]":0,"a":1}}}`), nil, "WordPiece", true},
		{"missing_vocab", edit(func(m map[string]any) { delete(model(m), "vocab") }), nil, "vocab is missing", false},
		{"empty_vocab", edit(func(m map[string]any) { model(m)["vocab"] = map[string]any{} }), nil, "vocab is missing or empty", false},
		{"vocab_not_int", edit(func(m map[string]any) { model(m)["vocab"] = map[string]any{"a": "x"} }), nil, "integer", false},
		{"huge_id", edit(func(m map[string]any) { model(m)["vocab"].(map[string]any)["zz"] = 1 << 30 }), nil, "far beyond", false},
		{"dup_id", edit(func(m map[string]any) { model(m)["vocab"].(map[string]any)["zz"] = 5 }), nil, "used by both", false},
		{"bad_merge", edit(func(m map[string]any) { model(m)["merges"] = []any{"▁t h e"} }), nil, "want \"left right\"", false},
		{"merge_oov", edit(func(m map[string]any) { model(m)["merges"] = []any{"q z"} }), nil, "not in the vocabulary", false},
		{"dropout", edit(func(m map[string]any) { model(m)["dropout"] = 0.1 }), nil, "dropout", true},
		{"nfkc", edit(func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFKC"} }), nil, "NFKC", true},
		{"bad_regex", edit(func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "(("}, "behavior": "Isolated"}
		}), nil, "regex", false},
		{"bad_added", edit(func(m map[string]any) { m["added_tokens"] = []any{map[string]any{"content": "x"}} }), nil, "missing or negative id", false},
		{"bos_oov", good, []byte(`{"bos_token":"<nope>"}`), "bos_token", false},
		{"bad_config", good, []byte(`{"bos_token":`), "tokenizer_config.json", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := FromJSON(tc.json, tc.cfg)
			if err == nil {
				t.Fatalf("no error (tokenizer %v)", tok != nil)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if tc.unsupported && !errors.Is(err, ErrUnsupported) {
				t.Errorf("error %q is not ErrUnsupported", err)
			}
		})
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("Load(empty dir) error %v", err)
	}
	if _, err := FromParts(Parts{Kind: "WordPiece", Tokens: []string{"a"}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("FromParts(WordPiece) error %v", err)
	}
	if _, err := FromParts(Parts{Kind: KindByteLevel, Tokens: []string{"a"}, TokenTypes: []TokenType{1, 1}}); err == nil {
		t.Error("FromParts with mismatched types: no error")
	}
}

// TestBPEHeapMatchesScan compares the two merge loops on long random words.
func TestBPEHeapMatchesScan(t *testing.T) {
	tok := loadLlama3(t)
	r := rand.New(rand.NewPCG(5, 6))
	var st encodeState
	for range 300 {
		n := 2 + r.IntN(200)
		syms := make([]int32, n)
		for i := range syms {
			// Mostly lower-case letters and spaces so that many merges apply.
			c := "etaoin shrdlu"[r.IntN(13)]
			syms[i] = int32(tok.byteToken[c])
		}
		a := tok.bpeHeap(slices.Clone(syms), &st)
		b := slices.Clone(syms)
		// Force the scan path regardless of length.
		for len(b) > 1 {
			best, bestRank, bestID := -1, int32(math.MaxInt32), int32(0)
			for i := 0; i+1 < len(b); i++ {
				if m, ok := tok.merges[pairKey(b[i], b[i+1])]; ok && m.rank < bestRank {
					best, bestRank, bestID = i, m.rank, m.id
				}
			}
			if best < 0 {
				break
			}
			b[best] = bestID
			b = append(b[:best+1], b[best+2:]...)
		}
		if !slices.Equal(a, b) {
			t.Fatalf("heap %v != scan %v", a, b)
		}
	}
}

func generated(tb testing.TB, n int) *Tokenizer {
	tb.Helper()
	tj, cfg, err := GenerateByteLevel(n, "")
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := FromJSON(tj, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func TestGenerateByteLevel(t *testing.T) {
	l3 := loadLlama3(t)
	for _, n := range []int{264, 512, 2048, 4096} {
		tj, cfg, err := GenerateByteLevel(n, "")
		if err != nil {
			t.Fatal(err)
		}
		tj2, cfg2, _ := GenerateByteLevel(n, "")
		if !bytes.Equal(tj, tj2) || !bytes.Equal(cfg, cfg2) {
			t.Errorf("%d: output is not deterministic", n)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		tok, err := Load(dir)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		types := tok.TokenTypes()
		nSpecial := 0
		for _, ty := range types {
			if ty == TokenControl {
				nSpecial++
			}
		}
		bos := n - nSpecial
		if tok.VocabSize() != n || tok.BOS() != bos || !slices.Equal(tok.EOS(), []int{bos + 1}) ||
			tok.Token(bos) != "<|begin_of_text|>" || tok.Token(n-1) == "" || types[n-1] != TokenControl ||
			tok.Pattern() != l3.Pattern() || tok.Kind() != KindByteLevel {
			t.Errorf("%d: size %d bos %d eos %v specials %d", n, tok.VocabSize(), tok.BOS(), tok.EOS(), nSpecial)
		}
		if n <= 512 && nSpecial != len(generatedSpecials) {
			t.Errorf("%d: %d specials, want training to fill the vocabulary", n, nSpecial)
		}
		for _, s := range append(roundTripTexts, DefaultCorpus, "<|begin_of_text|>x<|eot_id|>") {
			if got := tok.Decode(tok.Encode(s, false)); got != s {
				t.Errorf("%d: round trip of %q gave %q", n, s, got)
			}
		}
		ids := tok.EncodeDefault("Once upon a time")
		if ids[0] != bos || tok.Decode(ids) != "<|begin_of_text|>Once upon a time" || (n >= 512 && len(ids) > 10) {
			t.Errorf("%d: EncodeDefault = %v", n, ids)
		}
		// Same layout as the real file: parse both and compare the pipeline.
		if got, want := pipelineOf(t, tj), pipelineOf(t, mustRead(t, filepath.Join(testutil.Shared(t, "tokenizers", "llama3"), "tokenizer.json"))); got != want {
			t.Errorf("%d: pipeline differs from Llama 3's:\n%s\n%s", n, got, want)
		}
	}
	if _, _, err := GenerateByteLevel(100, ""); err == nil {
		t.Error("vocab 100: no error")
	}
}

func mustRead(tb testing.TB, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// pipelineOf returns the pre-tokenizer, decoder and model options of a
// tokenizer.json, with special token ids masked.
func pipelineOf(tb testing.TB, tj []byte) string {
	var m struct {
		Normalizer   json.RawMessage `json:"normalizer"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Decoder      json.RawMessage `json:"decoder"`
		Post         struct {
			Processors []map[string]any `json:"processors"`
		} `json:"post_processor"`
		Model map[string]any `json:"model"`
	}
	if err := json.Unmarshal(tj, &m); err != nil {
		tb.Fatal(err)
	}
	delete(m.Model, "vocab")
	delete(m.Model, "merges")
	delete(m.Post.Processors[1], "special_tokens")
	var buf bytes.Buffer
	for _, v := range []any{m.Normalizer, m.PreTokenizer, m.Decoder, m.Post.Processors, m.Model} {
		b, _ := json.Marshal(v)
		var x any
		_ = json.Unmarshal(b, &x)
		b, _ = json.Marshal(x) // canonical key order
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.String()
}

func FuzzEncodeDecode(f *testing.F) {
	for _, s := range roundTripTexts {
		f.Add(s)
	}
	f.Add("<|begin_of_text|><|eot_id|> <s> </s>")
	f.Add("\xff\xfe invalid")
	l3 := loadLlama3(f)
	st := loadStories(f)
	f.Fuzz(func(t *testing.T, s string) {
		want := lossyUTF8(s)
		if got := l3.Decode(l3.Encode(s, false)); got != want {
			t.Errorf("llama3: Decode(Encode(%q)) = %q", s, got)
		}
		ids := st.Encode(s, true)
		got := st.Decode(ids[1:])
		if !strings.Contains(s, "<") && got != want {
			t.Errorf("stories260k: Decode(Encode(%q)) = %q", s, got)
		}
		if !utf8.ValidString(got) {
			t.Errorf("invalid UTF-8 from Decode")
		}
	})
}
