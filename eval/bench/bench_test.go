package bench

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"qllama/format/hf"
	"qllama/infer"
	"qllama/internal/testutil"
)

func TestPercentile(t *testing.T) {
	// numpy.percentile(v, p) (linear interpolation) computed by hand.
	tests := []struct {
		name string
		v    []float64
		p    float64
		want float64
	}{
		{"single", []float64{7}, 99, 7},
		{"median even", []float64{1, 2, 3, 4}, 50, 2.5},
		{"p90", []float64{1, 2, 3, 4}, 90, 3.7},
		{"p99", []float64{1, 2, 3, 4}, 99, 3.97},
		{"p0", []float64{1, 2, 3, 4}, 0, 1},
		{"p100", []float64{1, 2, 3, 4}, 100, 4},
		{"clamped", []float64{1, 2}, 150, 2},
		{"p50 odd", []float64{1, 5, 9}, 50, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.v, tc.p); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("Percentile(%v, %g) = %g, want %g", tc.v, tc.p, got, tc.want)
			}
		})
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of nothing is not NaN")
	}
}

// fakeTarget counts the work it is given; each decode step sleeps step per
// sequence so throughput grows sublinearly with the batch.
type fakeTarget struct {
	maxSeq           int
	prefills, decode atomic.Int64
	tokens           atomic.Int64
	step             time.Duration
	failAt           int64 // fail the n-th decode call (0: never)
	peak             int64
	reset            bool
}

func (f *fakeTarget) Info() ModelInfo {
	return ModelInfo{WeightBytes: 1000, Params: 2000, KVBytesPerToken: 64, Vocab: 100, MaxSeq: f.maxSeq, Backend: "fake"}
}

func (f *fakeTarget) Start(n int) (Batch, error) { return &fakeBatch{f: f, n: n}, nil }

type fakeBatch struct {
	f *fakeTarget
	n int
}

func (b *fakeBatch) Prefill(_ context.Context, p [][]int) ([]int, error) {
	b.f.prefills.Add(1)
	for _, s := range p {
		for _, id := range s {
			if id < 0 || id >= 100 {
				return nil, errors.New("prompt id outside the vocabulary")
			}
		}
	}
	return make([]int, len(p)), nil
}

func (b *fakeBatch) Decode(_ context.Context, toks []int) ([]int, error) {
	if c := b.f.decode.Add(1); b.f.failAt > 0 && c == b.f.failAt {
		return nil, errors.New("device lost")
	}
	b.f.tokens.Add(int64(len(toks)))
	time.Sleep(b.f.step)
	return make([]int, len(toks)), nil
}

func (b *fakeBatch) Close() {}

func (f *fakeTarget) ResetPeak()       { f.reset = true }
func (f *fakeTarget) PeakBytes() int64 { return f.peak }

type fakeProbe struct{ joules float64 }

func (p fakeProbe) Describe() (*GPUInfo, error) {
	return &GPUInfo{Name: "Fake GPU", Driver: "1.0"}, nil
}
func (p fakeProbe) Meter() (Meter, error) { return fakeMeter(p), nil }

type fakeMeter fakeProbe

func (m fakeMeter) Stop() (Energy, error) { return Energy{Joules: m.joules, Seconds: 0.5}, nil }

func TestRunCountsAndShape(t *testing.T) {
	f := &fakeTarget{maxSeq: 600, step: 100 * time.Microsecond, peak: 12345}
	opt := Options{Prompts: []int{16, 512, 2048}, Batches: []int{1, 4}, Context: 8, DecodeTokens: 5, Repeats: 3, Device: fakeProbe{joules: 2}}
	r, err := Run(context.Background(), f, opt)
	if err != nil {
		t.Fatal(err)
	}
	// 2048 does not fit 600 positions: skipped with a warning.
	if len(r.TTFT) != 2 || r.TTFT[0].PromptTokens != 16 || r.TTFT[1].PromptTokens != 512 {
		t.Fatalf("ttft = %+v", r.TTFT)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "2048") {
		t.Errorf("warnings = %q", r.Warnings)
	}
	for _, tt := range r.TTFT {
		if len(tt.Runs) != 3 || tt.Seconds <= 0 || tt.TokensPerSec <= 0 {
			t.Errorf("ttft %+v: want 3 positive runs", tt)
		}
	}
	// (warm-up + repeats) runs: 2 ttft lengths, decode latency, 2 batches.
	runs := int64(1 + 3)
	if got, want := f.prefills.Load(), runs*(2+1+2); got != want {
		t.Errorf("%d prefills, want %d", got, want)
	}
	if got, want := f.tokens.Load(), runs*5*(1+1+4); got != want {
		t.Errorf("%d decoded tokens, want %d", got, want)
	}
	if r.Decode == nil || r.Decode.Tokens != 5 || !(r.Decode.P50Ms > 0 && r.Decode.P50Ms <= r.Decode.P90Ms && r.Decode.P90Ms <= r.Decode.P99Ms) {
		t.Errorf("decode = %+v", r.Decode)
	}
	if len(r.Throughput) != 2 || r.Throughput[1].Batch != 4 {
		t.Fatalf("throughput = %+v", r.Throughput)
	}
	for _, th := range r.Throughput {
		// 2 J per timed run (warm-up excluded) over batch*5*3 tokens.
		if want := 2.0 * 3 / float64(th.Batch*5*3); math.Abs(th.JoulesPerToken-want) > 1e-12 {
			t.Errorf("batch %d: %g J/token, want %g", th.Batch, th.JoulesPerToken, want)
		}
		if math.Abs(th.AvgWatts-4) > 1e-12 {
			t.Errorf("batch %d: %g W, want 4", th.Batch, th.AvgWatts)
		}
	}
	if r.Memory.PeakKind != "device" || r.Memory.PeakBytes != 12345 || !f.reset {
		t.Errorf("memory = %+v (reset %v)", r.Memory, f.reset)
	}
	if r.Model.BPW != 4 || r.Memory.KVBytesPerToken != 64 || r.Device.GPU == nil || r.Device.GPU.Name != "Fake GPU" {
		t.Errorf("model %+v device %+v", r.Model, r.Device)
	}
	path := filepath.Join(t.TempDir(), "b.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Throughput[1].TokensPerSec != r.Throughput[1].TokensPerSec || back.Options.Repeats != 3 {
		t.Errorf("round trip: %+v", back)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name string
		f    *fakeTarget
		opt  Options
		want string
	}{
		{"bad prompt", &fakeTarget{maxSeq: 100}, Options{Prompts: []int{0}}, "prompt length 0"},
		{"bad batch", &fakeTarget{maxSeq: 100}, Options{Batches: []int{-1}}, "batch size -1"},
		{"bad repeats", &fakeTarget{maxSeq: 100}, Options{Repeats: -2}, "repeats"},
		{"decode does not fit", &fakeTarget{maxSeq: 40}, Options{Prompts: []int{8}, Context: 32, DecodeTokens: 32}, "do not fit"},
		{"target error", &fakeTarget{maxSeq: 100, failAt: 3}, Options{Prompts: []int{8}, Batches: []int{1}, DecodeTokens: 4}, "device lost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.f, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, &fakeTarget{maxSeq: 100}, Options{Prompts: []int{4}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

func TestInferTarget(t *testing.T) {
	dir := testutil.Shared(t, "models", "stories260k")
	src, err := hf.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m, err := infer.LoadHF(src)
	if err != nil {
		t.Fatal(err)
	}
	tgt := NewInferTarget(m, ModelInfo{WeightBytes: 1 << 20, Params: 1 << 18})
	// dim 64, 5 layers, 4 KV heads of 8: 2*5*4*8 float32 values per position.
	if got := tgt.Info(); got.KVBytesPerToken != 2*5*4*8*4 || got.KVCache != "f32" {
		t.Errorf("kv bytes per token = %d, cache %q", got.KVBytesPerToken, got.KVCache)
	}
	r, err := Run(context.Background(), tgt, Options{Prompts: []int{32, 100000}, Batches: []int{1, 3}, Context: 4, DecodeTokens: 4, Repeats: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.TTFT) != 1 || len(r.Throughput) != 2 || r.Memory.PeakBytes <= 0 || r.Model.Backend != "cpu" || r.Device.Threads <= 0 {
		t.Errorf("result = %+v", r)
	}
	// Greedy decoding through the runtime must equal Forward's argmax.
	s, _ := tgt.Start(1)
	defer s.Close()
	next, err := s.Prefill(context.Background(), [][]int{{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	logits, err := infer.NewRunner(m).Forward([]infer.Step{{Cache: infer.NewKVCache(&m.Config), Tokens: []int{1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := argmax(logits[0][0]); next[0] != want {
		t.Errorf("prefill next token %d, want %d", next[0], want)
	}
	if _, err := s.Decode(context.Background(), []int{1, 2}); err == nil {
		t.Error("decode with 2 tokens for 1 sequence: no error")
	}
}

func TestHostParsing(t *testing.T) {
	cpu := []byte("processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\ncpu MHz\t\t: 2000.000\n\nprocessor\t: 1\nmodel name\t: Test CPU @ 2.0GHz\ncpu MHz\t\t: 3000.000\n")
	name, mhz := parseCPUInfo(cpu)
	if name != "Test CPU @ 2.0GHz" || mhz != 2500 {
		t.Errorf("parseCPUInfo = %q, %g", name, mhz)
	}
	status := []byte("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n")
	if got := procKB(status, "VmHWM:"); got != 2048*1024 {
		t.Errorf("VmHWM = %d", got)
	}
	if got := procKB(status, "VmSwap:"); got != 0 {
		t.Errorf("missing key = %d", got)
	}
	if p, err := PeakRSS(); err != nil || p <= 0 {
		t.Errorf("PeakRSS = %d, %v", p, err)
	}
}

func TestOpenNVMLWithoutGPU(t *testing.T) {
	// On machines without an NVIDIA driver OpenNVML must fail cleanly; on
	// machines with one it must describe GPU 0.
	n, err := OpenNVML(0)
	if err != nil {
		if !errors.Is(err, errNoDevice) {
			t.Logf("OpenNVML: %v", err)
		}
		return
	}
	defer n.Close()
	g, err := n.Describe()
	if err != nil || g.Name == "" {
		t.Errorf("Describe = %+v, %v", g, err)
	}
}

// TestNVMLMeter measures a GPU's energy for a moment where NVML is present
// (on machines without a driver it only checks OpenNVML fails cleanly).
func TestNVMLMeter(t *testing.T) {
	n, err := OpenNVML(0)
	if err != nil {
		t.Logf("no NVML: %v", err)
		return
	}
	defer n.Close()
	g, err := n.Describe()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device: %+v", *g)
	m, err := n.Meter()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	e, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	w := e.Joules / e.Seconds
	t.Logf("idle: %.3f J over %.3f s = %.1f W", e.Joules, e.Seconds, w)
	if e.Seconds < 0.25 || w <= 1 || w > 2000 {
		t.Errorf("implausible energy %+v (%.1f W)", e, w)
	}
	if _, err := OpenNVML(1 << 20); err == nil {
		t.Error("GPU 1048576 opened")
	}
}
