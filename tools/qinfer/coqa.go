package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"qllama/eval/bench"
	"qllama/eval/coqa"
	"qllama/infer"
	"qllama/infer/tokenizer"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "evaluate a model on a benchmark",
		Subcommands: []*cli.Command{
			{
				Name:  "coqa",
				Usage: "CoQA accuracy (F1 / exact match) under the lm-eval or the official all-turns protocol",
				Flags: append(optionalModelFlags(),
					&cli.StringFlag{Name: "data", Usage: "CoQA v1.0 JSON file (e.g. coqa-dev-v1.0.json)"},
					&cli.BoolFlag{Name: "download", Usage: "fetch coqa-dev-v1.0.json into --cache-dir first (resumable) and use it"},
					&cli.StringFlag{Name: "cache-dir", Value: defaultCacheDir(), Usage: "where --download keeps the dataset"},
					&cli.StringFlag{Name: "protocol", Value: coqa.ProtocolLMEval, Usage: "lmeval (last turn per story, lm-eval coqa v3.0) or all-turns (every turn, official scoring)"},
					&cli.IntFlag{Name: "limit", Usage: "evaluate only the first N stories (0: all)"},
					&cli.IntFlag{Name: "max-gen-tokens", Value: coqa.DefaultMaxGenTokens, Usage: "tokens generated per answer at most (stops earlier at \\nQ: or EOS)"},
					&cli.IntFlag{Name: "batch", Value: 8, Usage: "sequences decoded together"},
					&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write the results JSON here (default: print it)"},
					&cli.BoolFlag{Name: "sanity", Usage: "run 3 stories and print prompt, prediction and golds side by side"},
				),
				Action: runCoQA,
				Subcommands: []*cli.Command{{
					Name:  "score",
					Usage: "score an existing predictions file with no model and print the results JSON",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "data", Required: true, Usage: "CoQA v1.0 JSON file"},
						&cli.StringFlag{Name: "predictions", Required: true, Usage: "official: JSON list of {id, turn_id, answer}; lmeval: {story id: raw generation}"},
						&cli.StringFlag{Name: "protocol", Value: "official", Usage: "official (= all-turns) or lmeval"},
						&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write the results JSON here (default: print it)"},
					},
					Action: func(c *cli.Context) error {
						res, err := coqa.ScoreFile(c.String("data"), c.String("predictions"), c.String("protocol"))
						if err != nil {
							return err
						}
						return emitResult(c, res)
					},
				}},
			},
		},
	}
}

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "qllama")
	}
	return ".cache"
}

// optionalModelFlags are modelFlags with --model checked by the action, so
// that subcommands needing no model (eval coqa score) can run.
func optionalModelFlags() []cli.Flag {
	fs := modelFlags()
	fs[0].(*cli.StringFlag).Required = false
	return fs
}

func runCoQA(c *cli.Context) error {
	if c.String("model") == "" {
		return fmt.Errorf("--model is required (or use 'qinfer eval coqa score' to score a predictions file)")
	}
	data := c.String("data")
	if c.Bool("download") {
		p, err := coqa.Download(c.Context, coqa.DefaultURL, c.String("cache-dir"), c.App.ErrWriter)
		if err != nil {
			return err
		}
		data = p
	}
	if data == "" {
		return fmt.Errorf("give the CoQA file with --data FILE, or --download to fetch the dev set")
	}
	ds, err := coqa.Load(data)
	if err != nil {
		return err
	}
	l, err := openModel(c)
	if err != nil {
		return err
	}
	defer l.Close()
	info := describe(l)
	sum, err := hashModel(l.path)
	if err != nil {
		return err
	}
	be, err := openBackend(c.String("device"), 0, l, bench.ModelInfo{})
	if err != nil {
		return err
	}
	defer be.close()
	mi := &coqa.ModelInfo{Path: l.path, SHA256: sum, Format: info.Format, Backend: be.name, KVCache: be.target.Info().KVCache}
	if info.Params > 0 {
		mi.BPW = 8 * float64(info.WeightBytes) / float64(info.Params)
	}
	opt := coqa.Options{
		Protocol: c.String("protocol"), Limit: c.Int("limit"), MaxGenTokens: c.Int("max-gen-tokens"),
		MaxPositionEmbeddings: l.model.MaxSeq, Progress: c.App.ErrWriter, Model: mi, DatasetPath: data,
	}
	gen := &coqaGenerator{g: be.gen, tok: l.tok, batch: max(1, c.Int("batch"))}
	tok := newCoQATokenizer(l.tok)
	if c.Bool("sanity") {
		_, err := coqa.Sanity(c.Context, ds, tok, gen, opt, c.App.Writer)
		return err
	}
	res, err := coqa.Run(c.Context, ds, tok, gen, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "coqa %s: %d questions, F1 %.4f, EM %.4f\n", res.Protocol, res.N, res.F1, res.EM)
	return emitResult(c, res)
}

func emitResult(c *cli.Context, res *coqa.Result) error {
	if out := c.String("out"); out != "" {
		return res.WriteJSON(out)
	}
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// coqaTokenizer adapts the tokenizer to coqa.Tokenizer.
type coqaTokenizer struct {
	*tokenizer.Tokenizer
	addsBOS bool
}

func newCoQATokenizer(t *tokenizer.Tokenizer) coqaTokenizer {
	return coqaTokenizer{Tokenizer: t, addsBOS: t.Parts().AddBOS}
}

func (t coqaTokenizer) AddsBOS() bool { return t.addsBOS }

func (t coqaTokenizer) EOSString() string {
	if eos := t.EOS(); len(eos) > 0 {
		return t.Token(eos[0])
	}
	return ""
}

// coqaGenerator adapts a backend's batched greedy generation to
// coqa.Generator; requests of one story share a group, so a backend that
// reuses prompt prefixes (the CPU runner) reuses the story's keys and values.
type coqaGenerator struct {
	g     generator
	tok   *tokenizer.Tokenizer
	batch int
}

func (g *coqaGenerator) MaxBatch() int { return g.batch }

func (g *coqaGenerator) Generate(ctx context.Context, reqs []coqa.Request, done func(coqa.Completion)) error {
	in := make([]infer.Request, len(reqs))
	for i, q := range reqs {
		in[i] = infer.Request{Key: q.Key, Prompt: q.Prompt, MaxNewTokens: q.MaxNewTokens, Stop: q.Stop, Group: q.Group}
	}
	return g.g.Generate(ctx, in, infer.GenerateOptions{MaxBatch: g.batch, Decoder: g.tok}, func(c infer.Completion) {
		done(coqa.Completion{Key: c.Key, Text: c.Text, Tokens: len(c.Tokens), PromptTokens: c.PromptTokens, CachedPromptTokens: c.CachedPromptTokens})
	})
}

// hashModel is the sha256 of a packed model file, or of a Hugging Face
// directory's config.json and weight files (in name order).
func hashModel(path string) (string, error) {
	var files []string
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return "", err
		}
		for _, e := range ents {
			if n := e.Name(); n == "config.json" || strings.HasSuffix(n, ".safetensors") {
				files = append(files, filepath.Join(path, n))
			}
		}
		sort.Strings(files)
	} else {
		files = []string{path}
	}
	h := sha256.New()
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", f, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
