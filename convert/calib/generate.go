package calib

import (
	"context"
	"fmt"
	"strings"

	"qllama/infer"
)

// Generate samples n texts of up to maxTokens tokens from m itself (BOS
// prompt, temperature 1, seeded), joined by blank lines: calibration text
// for when no corpus is at hand (data-free calibration, as in LLM-QAT). The
// tests calibrate with it; real runs should prefer a corpus.
func Generate(ctx context.Context, m *infer.Model, dec infer.Decoder, n, maxTokens int, seed uint64) (string, error) {
	if n <= 0 || maxTokens <= 0 {
		return "", fmt.Errorf("generate %d texts of %d tokens: %w", n, maxTokens, ErrCalib)
	}
	if m.BOS < 0 {
		return "", fmt.Errorf("generate: the model has no BOS token: %w", ErrCalib)
	}
	reqs := make([]infer.Request, n)
	for i := range reqs {
		reqs[i] = infer.Request{Key: fmt.Sprint(i), Prompt: []int{m.BOS}, MaxNewTokens: maxTokens,
			Sample: infer.SampleOptions{Temperature: 1, Seed: seed + uint64(i)}}
	}
	texts := make([]string, n)
	err := infer.NewRunner(m).Generate(ctx, reqs, infer.GenerateOptions{MaxBatch: n, Decoder: dec}, func(c infer.Completion) {
		var i int
		fmt.Sscan(c.Key, &i)
		texts[i] = strings.TrimSpace(dec.Decode(c.Tokens))
	})
	if err != nil {
		return "", fmt.Errorf("generate: %w", err)
	}
	return strings.Join(texts, "\n\n") + "\n", nil
}
