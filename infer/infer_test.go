package infer_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"qllama/infer"
)

// TestBatchEqualsSeparate checks that sequences of different lengths run in
// one batched step give the logits they give alone, over prefill and decode.
func TestBatchEqualsSeparate(t *testing.T) {
	m := loadModel(t, "stories260k")
	prompts := [][]int{{1, 403, 407, 261, 378}, {1, 66}, {1, 351, 352, 353, 354, 355, 356, 357, 358}}
	r := infer.NewRunner(m)
	var alone [][]float32
	for _, p := range prompts {
		out, err := r.Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: p}})
		if err != nil {
			t.Fatal(err)
		}
		alone = append(alone, out[0][0])
	}
	steps := make([]infer.Step, len(prompts))
	for i, p := range prompts {
		steps[i] = infer.Step{Cache: infer.NewKVCache(&m.Config), Tokens: p}
	}
	out, err := r.Forward(steps)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		if d := maxAbsDiff(t, out[i][0], alone[i]); d > 1e-5 {
			t.Errorf("prompt %d: batched logits differ by %g", i, d)
		}
	}
	// One decode step for all three, against the same step alone.
	for i := range steps {
		steps[i].Tokens = []int{infer.Argmax(out[i][0])}
	}
	dec, err := r.Forward(steps)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		full := append(append([]int(nil), p...), steps[i].Tokens[0])
		ref, err := r.Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: full}})
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(t, dec[i][0], ref[0][0]); d > 1e-4 {
			t.Errorf("prompt %d: decode step after batched prefill differs by %g", i, d)
		}
	}
}

// TestGeneratePrefixReuse checks that requests sharing a prefix (as the
// turns of one CoQA story do) give the same tokens with and without reuse,
// that reuse happens, and that batching does not change greedy output.
func TestGeneratePrefixReuse(t *testing.T) {
	m := loadModel(t, "stories260k")
	r := infer.NewRunner(m)
	base := []int{1, 403, 407, 261, 378, 11, 344, 362, 261, 300, 301}
	var reqs []infer.Request
	for i := 0; i < 5; i++ {
		p := append(append([]int(nil), base...), 400+i, 410+i)
		reqs = append(reqs, infer.Request{Key: string(rune('a' + i)), Prompt: p, MaxNewTokens: 12, Group: "story"})
	}
	run := func(batch int, group bool) map[string]infer.Completion {
		rs := append([]infer.Request(nil), reqs...)
		if !group {
			for i := range rs {
				rs[i].Group = ""
			}
		}
		got := map[string]infer.Completion{}
		if err := r.Generate(context.Background(), rs, infer.GenerateOptions{MaxBatch: batch}, func(c infer.Completion) { got[c.Key] = c }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(reqs) {
			t.Fatalf("%d completions for %d requests", len(got), len(reqs))
		}
		return got
	}
	ref := run(1, false)
	for _, tc := range []struct {
		batch int
		group bool
	}{{1, true}, {3, true}, {8, false}, {8, true}} {
		got := run(tc.batch, tc.group)
		cached := 0
		for k, c := range got {
			cached += c.CachedPromptTokens
			if !equalInts(c.Tokens, ref[k].Tokens) {
				t.Errorf("batch %d group %v: request %s: %v, want %v", tc.batch, tc.group, k, c.Tokens, ref[k].Tokens)
			}
		}
		if tc.group && cached < (len(reqs)-1)*len(base) {
			t.Errorf("batch %d: %d prompt tokens reused, want at least %d", tc.batch, cached, (len(reqs)-1)*len(base))
		}
		if !tc.group && cached != 0 {
			t.Errorf("ungrouped requests reused %d tokens", cached)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type byteDecoder struct{}

func (byteDecoder) Decode(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteByte(byte('a' + id%26))
	}
	return b.String()
}

// TestGenerateStops covers EOS, stop strings and the length limit.
func TestGenerateStops(t *testing.T) {
	m := loadModel(t, "stories260k")
	r := infer.NewRunner(m)
	prompt := []int{1, 403, 407, 261, 378}
	var free infer.Completion
	err := r.Generate(context.Background(), []infer.Request{{Prompt: prompt, MaxNewTokens: 20}},
		infer.GenerateOptions{Decoder: byteDecoder{}}, func(c infer.Completion) { free = c })
	if err != nil {
		t.Fatal(err)
	}
	if free.StopReason != infer.StopLength || len(free.Tokens) != 20 {
		t.Fatalf("free run: reason %q, %d tokens", free.StopReason, len(free.Tokens))
	}
	// A stop string made of generated text 3..4 stops generation there.
	stop := free.Text[3:5]
	want := free.Text[:strings.Index(free.Text, stop)]
	var cut infer.Completion
	err = r.Generate(context.Background(), []infer.Request{{Prompt: prompt, MaxNewTokens: 20, Stop: []string{"zzzzz", stop}}},
		infer.GenerateOptions{Decoder: byteDecoder{}}, func(c infer.Completion) { cut = c })
	if err != nil {
		t.Fatal(err)
	}
	if cut.StopReason != infer.StopString || cut.Text != want || len(cut.Tokens) >= 20 {
		t.Errorf("stop string %q: reason %q text %q (%d tokens), want text %q", stop, cut.StopReason, cut.Text, len(cut.Tokens), want)
	}
	// Making the 4th generated token an EOS id ends the run before it.
	mm := *m
	mm.Config.EOS = []int{free.Tokens[3]}
	first := 3
	for i := 0; i < 3; i++ {
		if free.Tokens[i] == free.Tokens[3] {
			first = i
			break
		}
	}
	var eos infer.Completion
	err = infer.NewRunner(&mm).Generate(context.Background(), []infer.Request{{Prompt: prompt, MaxNewTokens: 20}},
		infer.GenerateOptions{}, func(c infer.Completion) { eos = c })
	if err != nil {
		t.Fatal(err)
	}
	if eos.StopReason != infer.StopEOS || len(eos.Tokens) != first {
		t.Errorf("eos: reason %q after %d tokens, want eos after %d", eos.StopReason, len(eos.Tokens), first)
	}
	// Errors, not panics, for bad requests.
	if err := r.Generate(context.Background(), []infer.Request{{}}, infer.GenerateOptions{}, func(infer.Completion) {}); err == nil {
		t.Error("empty prompt: no error")
	}
	if _, err := r.Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: []int{1, 99999}}}); err == nil {
		t.Error("token outside the vocabulary: no error")
	}
}

// TestSampler checks seeding, greedy and the top-k / top-p supports against
// the exact distribution.
func TestSampler(t *testing.T) {
	logits := []float32{2, 1, 0.5, 0, -1, -3}
	if got := infer.NewSampler(infer.SampleOptions{}).Sample(logits); got != 0 {
		t.Errorf("greedy: %d", got)
	}
	draw := func(o infer.SampleOptions, n int) []int {
		s := infer.NewSampler(o)
		counts := make([]int, len(logits))
		for i := 0; i < n; i++ {
			counts[s.Sample(logits)]++
		}
		return counts
	}
	o := infer.SampleOptions{Temperature: 0.7, Seed: 42}
	if a, b := draw(o, 200), draw(o, 200); !equalInts(a, b) {
		t.Errorf("same seed, different draws: %v %v", a, b)
	}
	// Empirical frequencies match softmax(logits/T) restricted by top-k/top-p.
	for _, tc := range []struct {
		o infer.SampleOptions
	}{
		{infer.SampleOptions{Temperature: 1, Seed: 1}},
		{infer.SampleOptions{Temperature: 0.5, TopK: 3, Seed: 2}},
		{infer.SampleOptions{Temperature: 1, TopP: 0.8, Seed: 3}},
	} {
		p := make([]float64, len(logits))
		var sum float64
		for i, l := range logits {
			p[i] = math.Exp(float64(l) / tc.o.Temperature)
			sum += p[i]
		}
		for i := range p {
			p[i] /= sum
		}
		support := len(p)
		if tc.o.TopK > 0 {
			support = tc.o.TopK
		}
		if tc.o.TopP > 0 {
			var cum float64
			for i := range p {
				cum += p[i]
				if cum >= tc.o.TopP {
					support = i + 1
					break
				}
			}
		}
		var kept float64
		for i := 0; i < support; i++ {
			kept += p[i]
		}
		const n = 40000
		counts := draw(tc.o, n)
		for i := range p {
			want := 0.0
			if i < support {
				want = p[i] / kept
			}
			got := float64(counts[i]) / n
			if math.Abs(got-want) > 0.01 {
				t.Errorf("%+v: token %d frequency %.4f, want %.4f", tc.o, i, got, want)
			}
		}
	}
}
