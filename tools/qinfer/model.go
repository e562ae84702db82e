package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"

	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/infer"
	"qllama/infer/tokenizer"
)

// modelFlags are the flags every model-running subcommand takes.
func modelFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Required: true, Usage: "model: a Hugging Face directory (config.json, *.safetensors, tokenizer.json) or a GGUF file from qconvert"},
		&cli.IntFlag{Name: "threads", Usage: "CPU threads (default: all cores)"},
		deviceFlag(),
		kvCacheFlag(),
	}
}

// loaded is a model ready to run with its tokenizer.
type loaded struct {
	path  string
	model *infer.Model
	tok   *tokenizer.Tokenizer
	hf    *hf.Model  // set for Hugging Face directories
	gguf  *gguf.File // set for GGUF files
	kv    string     // --kv-cache: the GPU cache's element type ("" or auto: the backend's default)
}

func (l *loaded) Close() error {
	if l.hf != nil {
		return l.hf.Close()
	}
	if l.gguf != nil {
		return l.gguf.Close()
	}
	return nil
}

// openGGUF loads a GGUF file (weights used in place from the mapping).
func openGGUF(path string) (*loaded, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	m, tok, err := infer.LoadGGUF(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &loaded{path: path, model: m, tok: tok, gguf: f}, nil
}

// openTokenizer loads only the tokenizer of a model directory or GGUF file.
func openTokenizer(path string) (*tokenizer.Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if st.IsDir() {
		return tokenizer.Load(path)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	defer f.Close()
	return infer.GGUFTokenizer(f)
}

// openModel opens the --model path, with --kv-cache's choice.
func openModel(c *cli.Context) (*loaded, error) {
	dev, err := pickDevice(c.String("device"))
	if err != nil {
		return nil, err
	}
	kv, err := pickKVCache(c.String("kv-cache"), dev)
	if err != nil {
		return nil, err
	}
	l, err := openModelPath(c)
	if err != nil {
		return nil, err
	}
	l.kv = kv
	return l, nil
}

// openModelPath opens the --model path: a GGUF file or a Hugging Face
// directory.
func openModelPath(c *cli.Context) (*loaded, error) {
	path := c.String("model")
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if !st.IsDir() {
		l, err := openGGUF(path)
		if err == nil {
			if t := c.Int("threads"); t > 0 {
				runtime.GOMAXPROCS(t)
			}
		}
		return l, err
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

// describeGGUF fills the info fields a GGUF file determines.
func describeGGUF(l *loaded, info *modelInfo) {
	f, m := l.gguf, l.model
	info.Format = "gguf"
	info.Architecture, _ = f.String(gguf.KeyGeneralArchitecture)
	info.DType = "unknown"
	if s, err := f.String(gguf.KeyQllamaScheme); err == nil {
		info.DType = s
	} else if ft, err := f.Uint(gguf.KeyGeneralFileType); err == nil {
		info.DType = fmt.Sprintf("general.file_type %d", ft)
	}
	for _, t := range f.Tensors() {
		info.WeightBytes += t.Size
	}
	c := m.Config
	layer := int64(2*c.Dim + 2*c.Heads*c.HeadDim*c.Dim + 2*c.KVHeads*c.HeadDim*c.Dim + 3*c.FFNDim*c.Dim)
	info.Params = int64(c.Vocab*c.Dim) + int64(c.Layers)*layer + int64(c.Dim)
	_, hasOut := m.Output.(infer.Embedding)
	info.Tied = hasOut && any(m.Output) == any(m.Embed)
	if !info.Tied {
		info.Params += int64(c.Vocab * c.Dim)
	}
	info.RopeTheta, _ = f.Float(gguf.KeyRopeFreqBase)
	if v, err := f.Float64(gguf.KeyQllamaRopeTheta); err == nil {
		info.RopeTheta = v
	}
	info.RopeScaling = "none"
	if typ, err := f.String(gguf.KeyQllamaRopeScalingType); err == nil {
		factor, _ := f.Float64(gguf.KeyQllamaRopeFactor)
		info.RopeScaling = fmt.Sprintf("%s x%g", typ, factor)
	} else if _, ok := f.Tensor(gguf.TensorRopeFreqs); ok {
		info.RopeScaling = "rope_freqs.weight"
	}
}
