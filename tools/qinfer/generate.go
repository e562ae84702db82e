package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"qllama/eval/bench"
	"qllama/infer"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "continue a prompt, streaming text to stdout",
		Flags: append(modelFlags(),
			&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Required: true, Usage: "prompt text"},
			&cli.IntFlag{Name: "max-tokens", Aliases: []string{"n"}, Value: 128, Usage: "tokens to generate at most"},
			&cli.Float64Flag{Name: "temperature", Usage: "sampling temperature; 0 is greedy"},
			&cli.IntFlag{Name: "top-k", Usage: "sample among the k most likely tokens (0: all)"},
			&cli.Float64Flag{Name: "top-p", Usage: "nucleus sampling probability mass (0 or 1: all)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "sampler seed"},
			&cli.StringSliceFlag{Name: "stop", Usage: "stop string (repeatable); the output is cut before it"},
			&cli.BoolFlag{Name: "no-bos", Usage: "do not prepend the BOS token"},
			&cli.BoolFlag{Name: "json", Usage: "print {ids, text, timings} as JSON instead of streaming"},
		),
		Action: runGenerate,
	}
}

type generateResult struct {
	PromptIDs []int         `json:"prompt_ids"`
	IDs       []int         `json:"ids"`
	Text      string        `json:"text"`
	Stop      string        `json:"stop_reason"`
	Timings   generateTimes `json:"timings"`
}

type generateTimes struct {
	LoadSeconds       float64 `json:"load_s"`
	FirstTokenSeconds float64 `json:"first_token_s"`
	TotalSeconds      float64 `json:"total_s"`
	PromptTokens      int     `json:"prompt_tokens"`
	GeneratedTokens   int     `json:"generated_tokens"`
	DecodeTokensPerS  float64 `json:"decode_tokens_per_s"`
}

func runGenerate(c *cli.Context) error {
	t0 := time.Now()
	l, err := openModel(c)
	if err != nil {
		return err
	}
	defer l.Close()
	load := time.Since(t0)
	prompt := encodePrompt(l.tok, c.String("prompt"), c.Bool("no-bos"))
	if len(prompt) == 0 {
		return fmt.Errorf("the prompt is empty after tokenization; give some text or drop --no-bos")
	}
	asJSON := c.Bool("json")
	w := c.App.Writer
	stream := newTextStream(l.tok)
	req := infer.Request{
		Key: "0", Prompt: prompt, MaxNewTokens: c.Int("max-tokens"), Stop: c.StringSlice("stop"),
		Sample: infer.SampleOptions{Temperature: c.Float64("temperature"), TopK: c.Int("top-k"), TopP: c.Float64("top-p"), Seed: c.Uint64("seed")},
	}
	opt := infer.GenerateOptions{MaxBatch: 1, Decoder: l.tok}
	if !asJSON && len(req.Stop) == 0 {
		opt.OnToken = func(_ string, id int) { fmt.Fprint(w, stream.add(id)) }
	}
	be, err := openBackend(c.String("device"), 0, l, bench.ModelInfo{})
	if err != nil {
		return err
	}
	defer be.close()
	var res infer.Completion
	if err := be.gen.Generate(c.Context, []infer.Request{req}, opt, func(cp infer.Completion) { res = cp }); err != nil {
		return err
	}
	if asJSON {
		tm := generateTimes{
			LoadSeconds: load.Seconds(), FirstTokenSeconds: res.FirstToken.Seconds(), TotalSeconds: res.Total.Seconds(),
			PromptTokens: len(prompt), GeneratedTokens: len(res.Tokens),
		}
		if d := res.Total - res.FirstToken; len(res.Tokens) > 1 && d > 0 {
			tm.DecodeTokensPerS = float64(len(res.Tokens)-1) / d.Seconds()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(generateResult{PromptIDs: prompt, IDs: res.Tokens, Text: res.Text, Stop: res.StopReason, Timings: tm})
	}
	if len(req.Stop) > 0 {
		fmt.Fprint(w, res.Text)
	} else {
		fmt.Fprint(w, stream.flush())
	}
	fmt.Fprintln(w)
	return nil
}

// textStream turns generated ids into printable text as they come, holding
// back bytes until they form whole UTF-8 characters.
type textStream struct {
	tok interface{ Decode([]int) string }
	ids []int
	out int // bytes of the decoded text already printed
}

func newTextStream(tok interface{ Decode([]int) string }) *textStream { return &textStream{tok: tok} }

func (s *textStream) add(id int) string {
	s.ids = append(s.ids, id)
	text := s.tok.Decode(s.ids)
	// Hold back a trailing replacement character: it may be half a character.
	end := len(text)
	for end > s.out && end >= 3 && text[end-3:end] == "\uFFFD" {
		end -= 3
	}
	if end <= s.out {
		return ""
	}
	chunk := text[s.out:end]
	s.out = end
	return chunk
}

func (s *textStream) flush() string {
	text := s.tok.Decode(s.ids)
	if len(text) <= s.out {
		return ""
	}
	chunk := text[s.out:]
	s.out = len(text)
	return chunk
}
