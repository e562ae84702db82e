package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"qllama/eval/bench"
	"qllama/eval/ppl"
	"qllama/infer/tokenizer"
	"qllama/internal/progress"
)

func pplCommand() *cli.Command {
	return &cli.Command{
		Name:  "ppl",
		Usage: "perplexity on a text file and, with --ref, KL divergence and top-1 agreement against a reference model (llama.cpp's windows)",
		Description: "The text is tokenized without BOS and cut into non-overlapping windows of --ctx tokens; BOS replaces the\n" +
			"first token of each window when the tokenizer adds BOS, and only the second half of each window is scored,\n" +
			"as llama.cpp's perplexity tool does. With --ref both models run on the same windows and the result adds\n" +
			"KL(P_ref || P_model) over the full vocabulary per scored token (mean, median, p90, p99, max) and the rate\n" +
			"at which both models' most likely token is the same. Both models run on --device (the CPU runtime or the GPU);\n" +
			"the log-softmaxes and statistics are computed on the CPU in float64 either way.",
		Flags: append(modelFlags(),
			&cli.StringFlag{Name: "text", Aliases: []string{"f"}, Required: true, Usage: "UTF-8 text file to evaluate on"},
			&cli.StringFlag{Name: "ref", Usage: "reference model (Hugging Face directory or packed file) with the same tokenizer, e.g. the unquantized model"},
			&cli.IntFlag{Name: "ctx", Aliases: []string{"c"}, Usage: fmt.Sprintf("window length in tokens (default %d, or the model's context length if shorter)", ppl.DefaultCtx)},
			&cli.IntFlag{Name: "max-windows", Usage: "evaluate only the first K windows (0: all)"},
			&cli.IntFlag{Name: "batch", Usage: "scored positions per forward pass; bounds logits memory to batch x vocab per model (0: half a window)"},
			&cli.IntFlag{Name: "gpu", Usage: "GPU index for --device cuda"},
			&cli.BoolFlag{Name: "json", Usage: `print {"ppl", "ppl_stderr", "kl_mean", "kl_median", "kl_p99", "top1_agree", "tokens", "windows", "ctx", ...} as JSON`},
		),
		Action: runPPL,
	}
}

func runPPL(c *cli.Context) error {
	textPath := c.String("text")
	text, err := os.ReadFile(textPath)
	if err != nil {
		return fmt.Errorf("--text: %w", err)
	}
	dev, err := pickDevice(c.String("device"))
	if err != nil {
		return err
	}
	gpu := c.Int("gpu")
	if gpu < 0 {
		return fmt.Errorf("--gpu %d: must not be negative", gpu)
	}
	l, err := openModel(c)
	if err != nil {
		return err
	}
	defer l.Close()
	opt := ppl.Options{
		Ctx:        c.Int("ctx"),
		MaxWindows: c.Int("max-windows"),
		Batch:      c.Int("batch"),
		AddBOS:     l.tok.Parts().AddBOS,
		BOS:        l.tok.BOS(),
	}
	if opt.Ctx < 0 || opt.MaxWindows < 0 || opt.Batch < 0 {
		return fmt.Errorf("--ctx, --max-windows and --batch must not be negative")
	}
	if opt.AddBOS && opt.BOS < 0 {
		opt.AddBOS = false
	}
	refPath := c.String("ref")
	if refPath != "" {
		ref, err := openRef(c, refPath)
		if err != nil {
			return fmt.Errorf("--ref: %w", err)
		}
		defer ref.Close()
		if err := sameTokenizer(l.tok, ref.tok); err != nil {
			return fmt.Errorf("--ref %s and --model %s: %w", refPath, l.path, err)
		}
		if ref.model.Vocab != l.model.Vocab {
			return fmt.Errorf("--ref %s has a vocabulary of %d logits, --model %s %d", refPath, ref.model.Vocab, l.path, l.model.Vocab)
		}
		rb, err := openBackend(dev, gpu, ref, bench.ModelInfo{})
		if err != nil {
			return fmt.Errorf("--ref %s: %w", refPath, err)
		}
		defer rb.close()
		opt.Ref = rb.scorer
	}
	b, err := openBackend(dev, gpu, l, bench.ModelInfo{})
	if err != nil {
		return err
	}
	defer b.close()
	ids := l.tok.Encode(string(text), false)

	var bar *progress.Bar
	opt.OnWindow = func(p ppl.Progress) {
		if p.Window == 0 {
			bar = progress.New(c.App.ErrWriter, int64(p.Windows), "ppl windows", progress.Options{Every: time.Nanosecond})
			return
		}
		bar.Add(1)
	}
	res, err := ppl.Evaluate(c.Context, b.scorer, ids, opt)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return fmt.Errorf("--text %s: %w", textPath, err)
	}
	res.Model, res.Ref = l.path, refPath

	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(w, "model            %s\n", res.Model)
	fmt.Fprintf(w, "device           %s (KV cache %s)\n", b.name, b.target.Info().KVCache)
	fmt.Fprintf(w, "text             %s: %d tokens, %d windows of %d, %d tokens scored\n", textPath, res.CorpusTokens, res.Windows, res.Ctx, res.Tokens)
	fmt.Fprintf(w, "perplexity       %.4f ± %.4f\n", res.PPL, res.PPLStderr)
	if k := res.KL; k != nil {
		fmt.Fprintf(w, "reference        %s: perplexity %.4f\n", res.Ref, k.RefPPL)
		fmt.Fprintf(w, "KL divergence    mean %.6f, median %.6f, p90 %.6f, p99 %.6f, max %.6f\n", k.Mean, k.Median, k.P90, k.P99, k.Max)
		fmt.Fprintf(w, "same top token   %.3f%%\n", 100*k.Top1Agree)
	}
	return nil
}

// openRef opens path as a model exactly as --model would be opened, through
// a child context whose "model" flag is path (other flags, such as
// --threads, come from c).
func openRef(c *cli.Context, path string) (*loaded, error) {
	fs := flag.NewFlagSet("ref", flag.ContinueOnError)
	fs.String("model", path, "")
	return openModel(cli.NewContext(c.App, fs, c))
}

// sameTokenizer reports how two tokenizers differ in what decides the ids:
// the vocabulary in id order and BOS.
func sameTokenizer(a, b *tokenizer.Tokenizer) error {
	va, vb := a.Vocab(), b.Vocab()
	if len(va) != len(vb) {
		return fmt.Errorf("different tokenizers: %d tokens vs %d", len(va), len(vb))
	}
	for i := range va {
		if va[i] != vb[i] {
			return fmt.Errorf("different tokenizers: token %d is %q vs %q", i, va[i], vb[i])
		}
	}
	if a.BOS() != b.BOS() {
		return fmt.Errorf("different tokenizers: BOS %d vs %d", a.BOS(), b.BOS())
	}
	return nil
}
