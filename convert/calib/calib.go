// Package calib draws calibration samples for GPTQ and AWQ: N windows of L
// tokens at seeded random offsets of a tokenized text corpus, as the
// reference implementations do (GPTQ's get_wikitext2/get_c4, AutoAWQ's
// pile-val loader), and records what was drawn (file hash, settings) so a
// quantized model can state its calibration.
//
// The corpus is a plain text file or JSON Lines with a "text" field per
// line. Text is tokenized piece by piece (a paragraph, or one JSONL record)
// and the pieces are joined by the tokens of "\n\n", the separator the
// reference GPTQ uses for wikitext-2; no BOS is inserted unless asked.
package calib

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// ErrCalib is wrapped by every error about calibration data or options.
var ErrCalib = errors.New("calibration")

// Encoder turns text into token ids; *tokenizer.Tokenizer satisfies it.
type Encoder interface {
	Encode(text string, addBOS bool) []int
	BOS() int
}

// Options choose the samples.
type Options struct {
	// Samples is the number of windows N; SeqLen the tokens per window L.
	Samples, SeqLen int
	// Seed seeds the window offsets (the references use 0).
	Seed uint64
	// BOS prepends the tokenizer's BOS id to every window (which then holds
	// SeqLen-1 corpus tokens). The references do not.
	BOS bool
	// MaxCorpusTokens bounds the tokens kept from the corpus (0: 1<<24); the
	// rest of the file is hashed but not tokenized.
	MaxCorpusTokens int
}

// Reference defaults: GPTQ draws 128 x 2048 tokens, AWQ 128 x 512.
var (
	DefaultGPTQ = Options{Samples: 128, SeqLen: 2048}
	DefaultAWQ  = Options{Samples: 128, SeqLen: 512}
)

const defaultMaxCorpus = 1 << 24

// Info records where samples came from; the pipeline stores it with the
// quantized model.
type Info struct {
	File         string `json:"file,omitempty"`
	SHA256       string `json:"sha256,omitempty"`
	Bytes        int64  `json:"bytes,omitempty"`
	Format       string `json:"format"` // "text", "jsonl" or "tokens"
	Records      int    `json:"records"`
	CorpusTokens int    `json:"corpus_tokens"`
	Truncated    bool   `json:"truncated,omitempty"`
	Samples      int    `json:"samples"`
	SeqLen       int    `json:"seq_len"`
	Seed         uint64 `json:"seed"`
	BOS          bool   `json:"bos,omitempty"`
}

// String is a one-line summary.
func (i Info) String() string {
	src := i.Format
	if i.File != "" {
		src = fmt.Sprintf("%s (%s, sha256 %.12s)", filepath.Base(i.File), i.Format, i.SHA256)
	}
	return fmt.Sprintf("%d x %d tokens from %s, %d corpus tokens, seed %d", i.Samples, i.SeqLen, src, i.CorpusTokens, i.Seed)
}

// Set is a drawn calibration set.
type Set struct {
	Info Info
	// Samples holds Info.Samples windows of Info.SeqLen token ids.
	Samples [][]int
}

// Tokens returns the total number of tokens.
func (s *Set) Tokens() int { return len(s.Samples) * s.Info.SeqLen }

// Split returns the first k samples and the rest as two sets (for
// held-out evaluation), sharing the token slices.
func (s *Set) Split(k int) (*Set, *Set, error) {
	if k <= 0 || k >= len(s.Samples) {
		return nil, nil, fmt.Errorf("split %d of %d samples: %w", k, len(s.Samples), ErrCalib)
	}
	a, b := *s, *s
	a.Samples, b.Samples = s.Samples[:k], s.Samples[k:]
	a.Info.Samples, b.Info.Samples = k, len(s.Samples)-k
	return &a, &b, nil
}

func (o Options) check() error {
	if o.Samples <= 0 || o.SeqLen <= 0 {
		return fmt.Errorf("%d samples of %d tokens: both must be positive: %w", o.Samples, o.SeqLen, ErrCalib)
	}
	if o.BOS && o.SeqLen < 2 {
		return fmt.Errorf("sequence length %d leaves no room after BOS: %w", o.SeqLen, ErrCalib)
	}
	if o.MaxCorpusTokens < 0 {
		return fmt.Errorf("max corpus tokens %d: %w", o.MaxCorpusTokens, ErrCalib)
	}
	return nil
}

// FromTokens draws the samples from an already tokenized corpus. bos is the
// BOS id used when opt.BOS is set.
func FromTokens(corpus []int, bos int, opt Options) (*Set, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	body := opt.SeqLen
	if opt.BOS {
		if bos < 0 {
			return nil, fmt.Errorf("BOS requested but the tokenizer has none: %w", ErrCalib)
		}
		body--
	}
	if len(corpus) < body {
		return nil, fmt.Errorf("corpus of %d tokens is shorter than one window of %d: %w", len(corpus), body, ErrCalib)
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x5851f42d4c957f2d))
	s := &Set{Info: Info{Format: "tokens", CorpusTokens: len(corpus), Samples: opt.Samples, SeqLen: opt.SeqLen, Seed: opt.Seed, BOS: opt.BOS}}
	for i := 0; i < opt.Samples; i++ {
		start := rng.IntN(len(corpus) - body + 1)
		w := make([]int, 0, opt.SeqLen)
		if opt.BOS {
			w = append(w, bos)
		}
		s.Samples = append(s.Samples, append(w, corpus[start:start+body]...))
	}
	return s, nil
}

// Load reads the corpus file path (plain text, or JSON Lines with a "text"
// field: chosen by the .jsonl/.ndjson extension or a first non-blank line
// starting with '{'), tokenizes it with enc and draws the samples.
func Load(ctx context.Context, path string, enc Encoder, opt Options) (*Set, error) {
	if err := opt.check(); err != nil {
		return nil, fmt.Errorf("calib %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	defer f.Close()
	info, corpus, err := Read(ctx, f, enc, opt.MaxCorpusTokens, isJSONLName(path))
	if err != nil {
		return nil, fmt.Errorf("calib %s: %w", path, err)
	}
	s, err := FromTokens(corpus, enc.BOS(), opt)
	if err != nil {
		return nil, fmt.Errorf("calib %s: %w", path, err)
	}
	info.File, _ = filepath.Abs(path)
	info.Samples, info.SeqLen, info.Seed, info.BOS = opt.Samples, opt.SeqLen, opt.Seed, opt.BOS
	s.Info = info
	return s, nil
}

func isJSONLName(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".jsonl" || ext == ".ndjson"
}

// Read tokenizes a corpus from r (JSON Lines if jsonl is set or the first
// non-blank line starts with '{', else plain text split at blank lines),
// keeping at most maxTokens tokens (0: 1<<24) and hashing all of r. The
// returned Info has the hash, size, format and counts filled.
func Read(ctx context.Context, r io.Reader, enc Encoder, maxTokens int, jsonl bool) (Info, []int, error) {
	if maxTokens <= 0 {
		maxTokens = defaultMaxCorpus
	}
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	br := bufio.NewReaderSize(cr, 1<<20)
	info := Info{Format: "text"}
	sep := enc.Encode("\n\n", false)
	var corpus []int
	var para strings.Builder
	decided := false
	flush := func(text string) {
		if strings.TrimSpace(text) == "" || len(corpus) >= maxTokens {
			if len(corpus) >= maxTokens {
				info.Truncated = true
			}
			return
		}
		if info.Records > 0 {
			corpus = append(corpus, sep...)
		}
		corpus = append(corpus, enc.Encode(text, false)...)
		info.Records++
	}
	for lineNo := 1; ; lineNo++ {
		if lineNo%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return info, nil, err
			}
		}
		line, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return info, nil, fmt.Errorf("read: %w", err)
		}
		trimmed := strings.TrimSpace(line)
		if !decided && trimmed != "" {
			decided = true
			jsonl = jsonl || strings.HasPrefix(trimmed, "{")
			if jsonl {
				info.Format = "jsonl"
			}
		}
		switch {
		case jsonl && trimmed != "":
			var rec struct {
				Text *string `json:"text"`
			}
			dec := json.NewDecoder(bytes.NewReader([]byte(trimmed)))
			if derr := dec.Decode(&rec); derr != nil {
				return info, nil, fmt.Errorf("line %d: not a JSON object: %v: %w", lineNo, derr, ErrCalib)
			}
			if rec.Text == nil {
				return info, nil, fmt.Errorf("line %d: no \"text\" field: %w", lineNo, ErrCalib)
			}
			flush(*rec.Text)
		case !jsonl && trimmed == "":
			flush(para.String())
			para.Reset()
		case !jsonl:
			para.WriteString(line)
		}
		if err == io.EOF {
			break
		}
	}
	if !jsonl {
		flush(para.String())
	}
	if len(corpus) > maxTokens {
		corpus, info.Truncated = corpus[:maxTokens], true
	}
	info.SHA256 = hex.EncodeToString(h.Sum(nil))
	info.Bytes = cr.n
	info.CorpusTokens = len(corpus)
	if len(corpus) == 0 {
		return info, nil, fmt.Errorf("no text: %w", ErrCalib)
	}
	return info, corpus, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
