package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"

	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
)

// modelFlags are the flags every model-running subcommand takes.
func modelFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Required: true, Usage: "model: a Hugging Face directory (config.json, *.safetensors, tokenizer.json)"},
		&cli.IntFlag{Name: "threads", Usage: "CPU threads (default: all cores)"},
	}
}

// loaded is a model ready to run with its tokenizer.
type loaded struct {
	path  string
	model *infer.Model
	tok   *tokenizer.Tokenizer
	hf    *hf.Model // set for Hugging Face directories
}

func (l *loaded) Close() error {
	if l.hf != nil {
		return l.hf.Close()
	}
	return nil
}

// openModel opens the --model path.
func openModel(c *cli.Context) (*loaded, error) {
	path := c.String("model")
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model %s: not a Hugging Face directory (packed files are not supported yet)", path)
	}
	src, err := hf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := infer.LoadHF(src)
	if err != nil {
		src.Close()
		return nil, err
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		src.Close()
		return nil, err
	}
	if tok.VocabSize() > m.Vocab {
		src.Close()
		return nil, fmt.Errorf("model %s: tokenizer has %d tokens but the model's vocabulary is %d", path, tok.VocabSize(), m.Vocab)
	}
	if t := c.Int("threads"); t > 0 {
		runtime.GOMAXPROCS(t)
	}
	return &loaded{path: path, model: m, tok: tok, hf: src}, nil
}

// encodePrompt tokenizes text with BOS as the tokenizer config says, or
// without it when noBOS is set.
func encodePrompt(tok *tokenizer.Tokenizer, text string, noBOS bool) []int {
	if noBOS {
		return tok.Encode(text, false)
	}
	return tok.EncodeDefault(text)
}
