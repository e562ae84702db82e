// Package bench measures what a quantized model costs to run: weight and
// KV-cache memory, peak memory, time to first token at several prompt
// lengths, per-token decode latency percentiles and decode throughput at
// several batch sizes, and (on NVIDIA, through NVML) power and energy per
// token.
//
// The package drives a model through the small Target/Batch interfaces, so
// the same measurement code runs on the CPU reference runtime (see
// NewInferTarget), on a GPU backend, or on a fake in tests. Every measured
// phase runs once untimed first (warm-up), then Options.Repeats times; the
// reported number is the median of the repeats.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"qllama/internal/atomicfile"
	"slices"
	"time"
)

// Target is a model ready to be benchmarked.
type Target interface {
	// Info describes the model; WeightBytes and KVBytesPerToken must be set.
	Info() ModelInfo
	// Start opens n empty sequences that are run together.
	Start(n int) (Batch, error)
}

// Batch is a set of sequences decoded together.
type Batch interface {
	// Prefill feeds prompts[i] to sequence i and returns each sequence's
	// next (greedy) token: the first token of its answer.
	Prefill(ctx context.Context, prompts [][]int) ([]int, error)
	// Decode feeds one token to each sequence and returns each one's next
	// token.
	Decode(ctx context.Context, tokens []int) ([]int, error)
	// Close releases the sequences.
	Close()
}

// PeakReporter is implemented by targets that track their own peak memory
// (a GPU backend's device allocations). Without it the process's peak
// resident set size is reported.
type PeakReporter interface {
	// ResetPeak starts a new peak measurement.
	ResetPeak()
	// PeakBytes is the most memory held since ResetPeak.
	PeakBytes() int64
}

// ModelInfo describes the benchmarked model.
type ModelInfo struct {
	Path            string  `json:"path,omitempty"`
	Format          string  `json:"format,omitempty"` // e.g. "gguf q4_0"
	Params          int64   `json:"params,omitempty"`
	WeightBytes     int64   `json:"weight_bytes"`
	KVBytesPerToken int64   `json:"kv_bytes_per_token"` // keys and values of every layer for one position
	BPW             float64 `json:"bpw,omitempty"`      // 8 * WeightBytes / Params
	Vocab           int     `json:"vocab"`
	MaxSeq          int     `json:"max_seq"`            // context length
	Backend         string  `json:"backend"`            // "cpu", "cuda", ...
	KVCache         string  `json:"kv_cache,omitempty"` // the KV cache's element type: "f32", "f16"
}

// Options configure Run. Zero fields take the defaults below.
type Options struct {
	// Prompts are the prompt lengths, in tokens, timed for time to first
	// token (default 128, 512, 2048). Lengths beyond the context are
	// skipped with a warning.
	Prompts []int `json:"prompts"`
	// Batches are the batch sizes timed for decode throughput (default 1,
	// 8, 32, 64).
	Batches []int `json:"batches"`
	// Context is the prompt length of every sequence before decoding
	// (default 32).
	Context int `json:"context"`
	// DecodeTokens is the number of timed decode steps per run (default 32).
	DecodeTokens int `json:"decode_tokens"`
	// Repeats is the number of timed runs per measurement (default 3); the
	// median is reported.
	Repeats int `json:"repeats"`
	// Warmup is the number of untimed runs before them (default 1; -1: none).
	Warmup int `json:"warmup"`
	// Seed chooses the prompt token ids.
	Seed uint64 `json:"seed"`
	// Device, when set, describes and samples the device: clocks, driver,
	// and power/energy during the decode runs (see NVML).
	Device DeviceProbe `json:"-"`
	// Log, when set, receives one line per finished measurement.
	Log func(format string, args ...any) `json:"-"`
}

// Defaults applied to zero options.
var (
	DefaultPrompts = []int{128, 512, 2048}
	DefaultBatches = []int{1, 8, 32, 64}
)

// Default scalar options.
const (
	DefaultContext      = 32
	DefaultDecodeTokens = 32
	DefaultRepeats      = 3
)

func (o *Options) fill() error {
	if len(o.Prompts) == 0 {
		o.Prompts = slices.Clone(DefaultPrompts)
	}
	if len(o.Batches) == 0 {
		o.Batches = slices.Clone(DefaultBatches)
	}
	if o.Context == 0 {
		o.Context = DefaultContext
	}
	if o.DecodeTokens == 0 {
		o.DecodeTokens = DefaultDecodeTokens
	}
	if o.Repeats == 0 {
		o.Repeats = DefaultRepeats
	}
	if o.Warmup == 0 {
		o.Warmup = 1
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	for _, p := range o.Prompts {
		if p <= 0 {
			return fmt.Errorf("bench: prompt length %d must be positive", p)
		}
	}
	for _, b := range o.Batches {
		if b <= 0 {
			return fmt.Errorf("bench: batch size %d must be positive", b)
		}
	}
	switch {
	case o.Context < 1:
		return fmt.Errorf("bench: context %d must be positive", o.Context)
	case o.DecodeTokens < 1:
		return fmt.Errorf("bench: decode tokens %d must be positive", o.DecodeTokens)
	case o.Repeats < 1:
		return fmt.Errorf("bench: repeats %d must be positive", o.Repeats)
	}
	return nil
}

// Result is the JSON document of one benchmark.
type Result struct {
	Model      ModelInfo    `json:"model"`
	Device     DeviceInfo   `json:"device"`
	Options    Options      `json:"options"`
	Memory     Memory       `json:"memory"`
	TTFT       []TTFT       `json:"ttft"`
	Decode     *Decode      `json:"decode,omitempty"`
	Throughput []Throughput `json:"throughput"`
	Started    string       `json:"started"` // RFC 3339
	Seconds    float64      `json:"seconds"` // wall time of the whole benchmark
	Warnings   []string     `json:"warnings,omitempty"`
}

// Memory is the memory footprint.
type Memory struct {
	WeightBytes     int64 `json:"weight_bytes"`
	KVBytesPerToken int64 `json:"kv_bytes_per_token"`
	// PeakBytes is the most memory held during the benchmark: the device's
	// allocations for a PeakReporter target, else the process's peak
	// resident set (PeakKind says which).
	PeakBytes int64  `json:"peak_bytes"`
	PeakKind  string `json:"peak_kind"` // "device", "rss" or "rss-lifetime"
}

// TTFT is the time to first token of one prompt length at batch 1.
type TTFT struct {
	PromptTokens int       `json:"prompt_tokens"`
	Seconds      float64   `json:"seconds"` // median of Runs
	TokensPerSec float64   `json:"prompt_tokens_per_s"`
	Runs         []float64 `json:"runs"`
}

// Decode is the per-token decode latency at batch 1: percentiles of the
// step times within each run, medians over the runs.
type Decode struct {
	ContextTokens int     `json:"context_tokens"`
	Tokens        int     `json:"tokens"` // timed steps per run
	P50Ms         float64 `json:"p50_ms"`
	P90Ms         float64 `json:"p90_ms"`
	P99Ms         float64 `json:"p99_ms"`
	MeanMs        float64 `json:"mean_ms"`
}

// Throughput is the decode throughput at one batch size.
type Throughput struct {
	Batch        int       `json:"batch"`
	TokensPerSec float64   `json:"tokens_per_s"` // median of Runs; all sequences together
	StepMs       float64   `json:"step_ms"`      // median time of one decode step
	Runs         []float64 `json:"runs"`         // tokens/s of each run
	// AvgWatts and JoulesPerToken are the device's average power and energy
	// per generated token over the timed runs (NVML only).
	AvgWatts       float64 `json:"avg_watts,omitempty"`
	JoulesPerToken float64 `json:"joules_per_token,omitempty"`
}

// Run benchmarks t. Measurements that cannot run (a prompt longer than the
// context) are skipped with a warning; an error from the target ends the
// run.
func Run(ctx context.Context, t Target, opt Options) (*Result, error) {
	if err := opt.fill(); err != nil {
		return nil, err
	}
	start := time.Now()
	info := t.Info()
	if info.Vocab <= 0 {
		return nil, fmt.Errorf("bench: model %s reports a vocabulary of %d", info.Path, info.Vocab)
	}
	if info.Params > 0 && info.BPW == 0 {
		info.BPW = 8 * float64(info.WeightBytes) / float64(info.Params)
	}
	r := &Result{Model: info, Options: opt, Started: start.UTC().Format(time.RFC3339)}
	r.Device = hostInfo(info.Backend)
	if opt.Device != nil {
		d, err := opt.Device.Describe()
		if err != nil {
			r.warn("device: %v", err)
		} else {
			r.Device.GPU = d
		}
	}
	b := &runner{t: t, opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15)), maxSeq: info.MaxSeq}
	pr, tracked := t.(PeakReporter)
	if tracked {
		pr.ResetPeak()
	}
	rssReset := resetPeakRSS() == nil

	for _, p := range opt.Prompts {
		if info.MaxSeq > 0 && p+1 > info.MaxSeq {
			r.warn("ttft: prompt of %d tokens does not fit the context of %d: skipped", p, info.MaxSeq)
			continue
		}
		runs, err := b.repeat(ctx, func() (float64, error) { return b.ttft(ctx, p) })
		if err != nil {
			return nil, fmt.Errorf("bench: ttft at %d tokens: %w", p, err)
		}
		m := median(runs)
		r.TTFT = append(r.TTFT, TTFT{PromptTokens: p, Seconds: m, TokensPerSec: float64(p) / m, Runs: runs})
		b.log("ttft %5d tokens: %8.2f ms", p, 1e3*m)
	}

	if info.MaxSeq > 0 && opt.Context+opt.DecodeTokens+1 > info.MaxSeq {
		return nil, fmt.Errorf("bench: context %d + %d decode tokens do not fit the model's context of %d", opt.Context, opt.DecodeTokens, info.MaxSeq)
	}
	var p50, p90, p99, mean []float64
	if _, err := b.repeat(ctx, func() (float64, error) {
		steps, _, err := b.decode(ctx, 1)
		if err != nil {
			return 0, err
		}
		s := slices.Clone(steps)
		slices.Sort(s)
		p50 = append(p50, Percentile(s, 50))
		p90 = append(p90, Percentile(s, 90))
		p99 = append(p99, Percentile(s, 99))
		mean = append(mean, meanOf(s))
		return 0, nil
	}); err != nil {
		return nil, fmt.Errorf("bench: decode latency: %w", err)
	}
	r.Decode = &Decode{ContextTokens: opt.Context, Tokens: opt.DecodeTokens,
		P50Ms: 1e3 * median(p50[opt.Warmup:]), P90Ms: 1e3 * median(p90[opt.Warmup:]),
		P99Ms: 1e3 * median(p99[opt.Warmup:]), MeanMs: 1e3 * median(mean[opt.Warmup:])}
	b.log("decode batch 1: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms", r.Decode.P50Ms, r.Decode.P90Ms, r.Decode.P99Ms)

	for _, n := range opt.Batches {
		var steps []float64
		var energy Energy
		runs, err := b.repeat(ctx, func() (float64, error) {
			st, el, err := b.decodeMetered(ctx, n, &energy)
			if err != nil {
				return 0, err
			}
			steps = append(steps, st...)
			return float64(n*opt.DecodeTokens) / el, nil
		})
		if err != nil {
			return nil, fmt.Errorf("bench: throughput at batch %d: %w", n, err)
		}
		th := Throughput{Batch: n, TokensPerSec: median(runs), StepMs: 1e3 * median(steps), Runs: runs}
		if energy.Seconds > 0 && energy.Joules > 0 {
			th.AvgWatts = energy.Joules / energy.Seconds
			th.JoulesPerToken = energy.Joules / float64(n*opt.DecodeTokens*opt.Repeats)
		}
		r.Throughput = append(r.Throughput, th)
		b.log("decode batch %3d: %10.1f tokens/s", n, th.TokensPerSec)
	}

	r.Memory = Memory{WeightBytes: info.WeightBytes, KVBytesPerToken: info.KVBytesPerToken}
	switch {
	case tracked:
		r.Memory.PeakBytes, r.Memory.PeakKind = pr.PeakBytes(), "device"
	default:
		peak, err := PeakRSS()
		if err != nil {
			r.warn("peak memory: %v", err)
		}
		r.Memory.PeakBytes, r.Memory.PeakKind = peak, "rss"
		if !rssReset {
			r.Memory.PeakKind = "rss-lifetime"
		}
	}
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

func (r *Result) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// runner holds the state shared by the measurements.
type runner struct {
	t      Target
	opt    Options
	rng    *rand.Rand
	maxSeq int
	meter  bool // the current repeat is timed (not warm-up)
}

func (b *runner) log(format string, args ...any) {
	if b.opt.Log != nil {
		b.opt.Log(format, args...)
	}
}

// repeat runs fn Warmup times untimed and Repeats times timed, returning the
// timed results.
func (b *runner) repeat(ctx context.Context, fn func() (float64, error)) ([]float64, error) {
	var out []float64
	for i := 0; i < b.opt.Warmup+b.opt.Repeats; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.meter = i >= b.opt.Warmup
		v, err := fn()
		if err != nil {
			return nil, err
		}
		if b.meter {
			out = append(out, v)
		}
	}
	return out, nil
}

func (b *runner) prompt(n int) []int {
	vocab := b.t.Info().Vocab
	p := make([]int, n)
	for i := range p {
		p[i] = b.rng.IntN(vocab)
	}
	return p
}

// ttft times one prefill of an n-token prompt at batch 1.
func (b *runner) ttft(ctx context.Context, n int) (float64, error) {
	s, err := b.t.Start(1)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	p := [][]int{b.prompt(n)}
	t0 := time.Now()
	if _, err := s.Prefill(ctx, p); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds(), nil
}

// decode prefills n sequences with Context tokens, then times DecodeTokens
// steps; it returns each step's seconds and their sum.
func (b *runner) decode(ctx context.Context, n int) ([]float64, float64, error) {
	return b.decodeMetered(ctx, n, nil)
}

func (b *runner) decodeMetered(ctx context.Context, n int, energy *Energy) ([]float64, float64, error) {
	s, err := b.t.Start(n)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	prompts := make([][]int, n)
	for i := range prompts {
		prompts[i] = b.prompt(b.opt.Context)
	}
	next, err := s.Prefill(ctx, prompts)
	if err != nil {
		return nil, 0, err
	}
	var m Meter
	if energy != nil && b.meter && b.opt.Device != nil {
		if m, err = b.opt.Device.Meter(); err != nil {
			m = nil
		}
	}
	steps := make([]float64, b.opt.DecodeTokens)
	t0 := time.Now()
	for i := range steps {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		ts := time.Now()
		if next, err = s.Decode(ctx, next); err != nil {
			return nil, 0, err
		}
		if len(next) != n {
			return nil, 0, fmt.Errorf("decode returned %d tokens for %d sequences", len(next), n)
		}
		steps[i] = time.Since(ts).Seconds()
	}
	el := time.Since(t0).Seconds()
	if m != nil {
		if e, err := m.Stop(); err == nil {
			energy.Joules += e.Joules
			energy.Seconds += e.Seconds
		}
	}
	return steps, el, nil
}

// Percentile returns the p-th percentile (0..100) of sorted values by
// linear interpolation between closest ranks (numpy's default); NaN for no
// values.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	p = min(max(p, 0), 100)
	pos := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	f := pos - float64(lo)
	return sorted[lo] + f*(sorted[hi]-sorted[lo])
}

// median of values (not modified); NaN for none.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return Percentile(s, 50)
}

func meanOf(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// WriteJSON writes r as indented JSON to path atomically.
func (r *Result) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode bench result for %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'))
}

// ReadResult reads a result written by WriteJSON.
func ReadResult(path string) (*Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bench result: %w", err)
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("read bench result %s: %w", path, err)
	}
	return &r, nil
}

// errNoDevice is returned by probes on machines without the device.
var errNoDevice = errors.New("no device")
