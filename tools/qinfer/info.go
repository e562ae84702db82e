package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:  "info",
		Usage: "print the architecture, parameter count, dtype, bytes and tokenizer kind",
		Flags: append(modelFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		),
		Action: func(c *cli.Context) error {
			if err := cpuOnly(c); err != nil {
				return err
			}
			l, err := openModel(c)
			if err != nil {
				return err
			}
			defer l.Close()
			info := describe(l)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
			for _, kv := range info.rows() {
				fmt.Fprintf(tw, "%s\t%v\n", kv[0], kv[1])
			}
			return tw.Flush()
		},
	}
}

type modelInfo struct {
	Path          string  `json:"path"`
	Format        string  `json:"format"`
	Architecture  string  `json:"architecture"`
	Params        int64   `json:"params"`
	DType         string  `json:"dtype"`
	WeightBytes   int64   `json:"weight_bytes"`
	Layers        int     `json:"layers"`
	Hidden        int     `json:"hidden_size"`
	FFN           int     `json:"intermediate_size"`
	Heads         int     `json:"heads"`
	KVHeads       int     `json:"kv_heads"`
	HeadDim       int     `json:"head_dim"`
	Vocab         int     `json:"vocab_size"`
	Context       int     `json:"context_length"`
	RopeTheta     float64 `json:"rope_theta"`
	RopeScaling   string  `json:"rope_scaling"`
	Tied          bool    `json:"tied_embeddings"`
	Tokenizer     string  `json:"tokenizer"`
	TokenizerSize int     `json:"tokenizer_tokens"`
	BOS           int     `json:"bos_id"`
	EOS           []int   `json:"eos_ids"`
	KVBytesPerTok int64   `json:"kv_cache_bytes_per_token_f32"`
}

func describe(l *loaded) modelInfo {
	m := l.model
	info := modelInfo{
		Path: l.path, Layers: m.Config.Layers, Hidden: m.Dim, FFN: m.FFNDim, Heads: m.Heads, KVHeads: m.KVHeads,
		HeadDim: m.HeadDim, Vocab: m.Vocab, Context: m.MaxSeq, Tokenizer: l.tok.Kind(), TokenizerSize: l.tok.VocabSize(),
		BOS: m.BOS, EOS: m.EOS, KVBytesPerTok: int64(2 * m.Config.Layers * m.KVHeads * m.HeadDim * 4),
	}
	if l.hf != nil {
		hc := l.hf.Config
		info.Format = "huggingface"
		info.Architecture = "llama"
		if len(hc.Architectures) > 0 {
			info.Architecture = hc.Architectures[0]
		}
		info.Params = hc.ParamCount()
		info.DType = string(l.hf.DType())
		for _, name := range l.hf.Names() {
			if ti, ok := l.hf.Info(name); ok {
				info.WeightBytes += ti.Size()
			}
		}
		info.RopeTheta = hc.RopeTheta
		info.RopeScaling = "none"
		if hc.RopeScaling != nil {
			info.RopeScaling = fmt.Sprintf("%s x%g", hc.RopeScaling.Type, hc.RopeScaling.Factor)
		}
		info.Tied = hc.TieWordEmbeddings
	}
	if l.gguf != nil {
		describeGGUF(l, &info)
	}
	return info
}

func (i modelInfo) rows() [][2]any {
	return [][2]any{
		{"path", i.Path}, {"format", i.Format}, {"architecture", i.Architecture},
		{"parameters", fmt.Sprintf("%d (%.3f B)", i.Params, float64(i.Params)/1e9)},
		{"dtype", i.DType}, {"weight bytes", fmt.Sprintf("%d (%.1f MiB)", i.WeightBytes, float64(i.WeightBytes)/(1<<20))},
		{"layers", i.Layers}, {"hidden size", i.Hidden}, {"intermediate size", i.FFN},
		{"heads / kv heads / head dim", fmt.Sprintf("%d / %d / %d", i.Heads, i.KVHeads, i.HeadDim)},
		{"vocab size", i.Vocab}, {"context length", i.Context},
		{"rope", fmt.Sprintf("theta %g, scaling %s", i.RopeTheta, i.RopeScaling)},
		{"tied embeddings", i.Tied}, {"tokenizer", fmt.Sprintf("%s, %d tokens, bos %d, eos %v", i.Tokenizer, i.TokenizerSize, i.BOS, i.EOS)},
		{"kv cache / token (f32)", fmt.Sprintf("%d bytes", i.KVBytesPerTok)},
	}
}
