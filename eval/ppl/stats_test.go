package ppl

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestWindows(t *testing.T) {
	seq := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i + 10
		}
		return s
	}
	tests := []struct {
		name    string
		n       int
		opt     Options
		want    []Window
		wantErr string
	}{
		{name: "two windows, no BOS", n: 10, opt: Options{Ctx: 4},
			want: []Window{{Start: 0, Tokens: []int{10, 11, 12, 13}, First: 2}, {Start: 4, Tokens: []int{14, 15, 16, 17}, First: 2}}},
		{name: "BOS replaces the first token", n: 10, opt: Options{Ctx: 4, AddBOS: true, BOS: 1},
			want: []Window{{Start: 0, Tokens: []int{1, 11, 12, 13}, First: 2}, {Start: 4, Tokens: []int{1, 15, 16, 17}, First: 2}}},
		{name: "BOS id 0", n: 4, opt: Options{Ctx: 4, AddBOS: true, BOS: 0},
			want: []Window{{Start: 0, Tokens: []int{0, 11, 12, 13}, First: 2}}},
		{name: "odd ctx", n: 11, opt: Options{Ctx: 5},
			want: []Window{{Start: 0, Tokens: []int{10, 11, 12, 13, 14}, First: 2}, {Start: 5, Tokens: []int{15, 16, 17, 18, 19}, First: 2}}},
		{name: "max windows", n: 12, opt: Options{Ctx: 4, MaxWindows: 1},
			want: []Window{{Start: 0, Tokens: []int{10, 11, 12, 13}, First: 2}}},
		{name: "max windows above count", n: 8, opt: Options{Ctx: 4, MaxWindows: 9},
			want: []Window{{Start: 0, Tokens: []int{10, 11, 12, 13}, First: 2}, {Start: 4, Tokens: []int{14, 15, 16, 17}, First: 2}}},
		{name: "smallest window", n: 3, opt: Options{Ctx: 3},
			want: []Window{{Start: 0, Tokens: []int{10, 11, 12}, First: 1}}},
		{name: "too short", n: 63, opt: Options{Ctx: 64}, wantErr: "the text has 63 tokens, one window of context 64 needs 64"},
		{name: "empty", n: 0, opt: Options{Ctx: 8}, wantErr: "needs 8"},
		{name: "ctx too small", n: 10, opt: Options{Ctx: 2}, wantErr: "at least 3"},
		{name: "negative max windows", n: 10, opt: Options{Ctx: 4, MaxWindows: -1}, wantErr: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids := seq(tc.n)
			orig := slices.Clone(ids)
			got, err := Windows(ids, tc.opt)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("windows\n got %+v\nwant %+v", got, tc.want)
			}
			if !slices.Equal(ids, orig) {
				t.Fatalf("Windows modified its input")
			}
			for _, w := range got {
				if w.Scored() != len(w.Tokens)-1-len(w.Tokens)/2 {
					t.Fatalf("scored %d", w.Scored())
				}
			}
		})
	}
	if _, err := Windows(seq(5), Options{Ctx: 8}); !errors.Is(err, ErrTooShort) {
		t.Fatalf("short text: %v, want ErrTooShort", err)
	}
}

func TestLogSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 7, 512} {
		z := make([]float32, n)
		for i := range z {
			z[i] = float32(rng.NormFloat64() * 5)
		}
		got, err := logSoftmax(nil, z)
		if err != nil {
			t.Fatal(err)
		}
		// Independent: log(exp(z_i) / sum exp(z_j)) without max subtraction
		// (|z| is small enough here).
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v))
		}
		var total float64
		for i, v := range z {
			want := math.Log(math.Exp(float64(v)) / sum)
			if math.Abs(got[i]-want) > 1e-12 {
				t.Fatalf("n=%d: log p[%d] = %v, want %v", n, i, got[i], want)
			}
			total += math.Exp(got[i])
		}
		if math.Abs(total-1) > 1e-12 {
			t.Fatalf("n=%d: probabilities sum to %v", n, total)
		}
	}
	// Large logits do not overflow.
	got, err := logSoftmax(nil, []float32{1e30, 1e30})
	if err != nil || math.Abs(got[0]-math.Log(0.5)) > 1e-15 {
		t.Fatalf("large logits: %v %v", got, err)
	}
	for _, bad := range [][]float32{{}, {float32(math.NaN())}, {1, float32(math.Inf(1))}, {float32(math.Inf(-1)), 0}} {
		if _, err := logSoftmax(nil, bad); err == nil {
			t.Fatalf("logits %v: no error", bad)
		}
	}
}

func TestCompare(t *testing.T) {
	ln3 := float32(math.Log(3))
	tests := []struct {
		name       string
		model, ref []float32
		target     int
		wantNLL    float64
		wantRefNLL float64
		wantKL     float64
		wantSame   bool
	}{
		// P = (1/2, 1/2), Q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
		{name: "two tokens", model: []float32{ln3, 0}, ref: []float32{0, 0}, target: 1,
			wantNLL: math.Log(4), wantRefNLL: math.Log(2), wantKL: 0.5 * math.Log(4.0/3), wantSame: true},
		// P = (3/4, 1/4), Q = (1/4, 3/4): KL = 3/4 ln 3 + 1/4 ln(1/3) = 1/2 ln 3.
		{name: "swapped top", model: []float32{0, ln3}, ref: []float32{ln3, 0}, target: 0,
			wantNLL: math.Log(4), wantRefNLL: math.Log(4.0 / 3), wantKL: 0.5 * math.Log(3), wantSame: false},
		{name: "identical", model: []float32{0.5, -2, 3, 1}, ref: []float32{0.5, -2, 3, 1}, target: 2,
			wantNLL: -math.Log(math.Exp(3) / (math.Exp(0.5) + math.Exp(-2) + math.Exp(3) + math.Exp(1))),
			wantKL:  0, wantSame: true},
		// Shifting all logits changes nothing.
		{name: "shifted", model: []float32{10.5, 8, 13, 11}, ref: []float32{0.5, -2, 3, 1}, target: 2,
			wantNLL: -math.Log(math.Exp(3) / (math.Exp(0.5) + math.Exp(-2) + math.Exp(3) + math.Exp(1))),
			wantKL:  0, wantSame: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sc scratch
			s, err := compare(tc.model, tc.ref, tc.target, &sc)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "identical" && s.kl != 0 {
				t.Fatalf("KL of identical logits is %v, want exactly 0", s.kl)
			}
			if tc.wantRefNLL == 0 {
				tc.wantRefNLL = tc.wantNLL
			}
			for _, c := range []struct {
				what      string
				got, want float64
			}{{"nll", s.nll, tc.wantNLL}, {"ref nll", s.refNLL, tc.wantRefNLL}, {"kl", s.kl, tc.wantKL}} {
				if math.Abs(c.got-c.want) > 1e-6 {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
			if s.same != tc.wantSame {
				t.Errorf("same top = %v, want %v", s.same, tc.wantSame)
			}
		})
	}
	var sc scratch
	if _, err := compare([]float32{1, 2}, nil, 2, &sc); err == nil {
		t.Fatal("target outside the vocabulary: no error")
	}
	if _, err := compare([]float32{1, 2}, []float32{1, 2, 3}, 0, &sc); err == nil {
		t.Fatal("reference of another size: no error")
	}
	if _, err := compare([]float32{1, 2}, []float32{1, float32(math.NaN())}, 0, &sc); err == nil || !strings.Contains(err.Error(), "reference") {
		t.Fatalf("NaN reference: %v", err)
	}
}

func TestKLNonNegative(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var sc scratch
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(64)
		a, b := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i] = float32(rng.NormFloat64()*3), float32(rng.NormFloat64()*3)
		}
		s, err := compare(a, b, 0, &sc)
		if err != nil {
			t.Fatal(err)
		}
		if s.kl < -1e-15 {
			t.Fatalf("KL %v < 0", s.kl)
		}
	}
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		vals []float64
		f    float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, 0.5, 2.5},
		{[]float64{1, 2, 3, 4}, 0.99, 3.97},
		{[]float64{1, 2, 3, 4}, 0, 1},
		{[]float64{1, 2, 3, 4}, 1, 4},
		{[]float64{1, 2, 3}, 0.5, 2},
		{[]float64{5}, 0.99, 5},
		{[]float64{0, 10}, 0.9, 9},
	}
	for _, tc := range tests {
		if got := percentile(tc.vals, tc.f); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.vals, tc.f, got, tc.want)
		}
	}
	if !math.IsNaN(percentile(nil, 0.5)) {
		t.Error("percentile of nothing is not NaN")
	}
}

func TestAccumulator(t *testing.T) {
	a := accumulator{withRef: true}
	stats := []tokenStats{
		{nll: 1, refNLL: 0.5, kl: 0.1, same: true},
		{nll: 2, refNLL: 1.5, kl: 0.3, same: false},
		{nll: 3, refNLL: 1, kl: 0.2, same: true},
		{nll: 2, refNLL: 1, kl: 0.0, same: true},
	}
	for _, s := range stats {
		a.add(s)
	}
	r := a.result()
	if r.Tokens != 4 || math.Abs(r.MeanNLL-2) > 1e-15 || math.Abs(r.PPL-math.Exp(2)) > 1e-12 {
		t.Fatalf("tokens %d, nll %v, ppl %v", r.Tokens, r.MeanNLL, r.PPL)
	}
	// Sample variance of (1,2,3,2) around 2 is 2/4 = 0.5 (population), so
	// the standard error is sqrt(0.5/3).
	if want := math.Exp(2) * math.Sqrt(0.5/3); math.Abs(r.PPLStderr-want) > 1e-12 {
		t.Fatalf("stderr %v, want %v", r.PPLStderr, want)
	}
	k := r.KL
	want := Divergence{RefPPL: math.Exp(1), Mean: 0.15, Median: 0.15, P90: 0.27, P99: 0.297, Max: 0.3, Top1Agree: 0.75}
	for _, c := range [][2]float64{{k.RefPPL, want.RefPPL}, {k.Mean, want.Mean}, {k.Median, want.Median}, {k.P90, want.P90}, {k.P99, want.P99}, {k.Max, want.Max}, {k.Top1Agree, want.Top1Agree}} {
		if math.Abs(c[0]-c[1]) > 1e-12 {
			t.Fatalf("divergence %+v, want %+v", *k, want)
		}
	}
	if (&accumulator{}).result().KL != nil {
		t.Fatal("KL without a reference")
	}
}

func TestResultJSON(t *testing.T) {
	withRef := &Result{PPL: 3.5, PPLStderr: 0.1, MeanNLL: math.Log(3.5), Tokens: 100, CorpusTokens: 300, Windows: 2, Ctx: 128,
		Model: "q4.gguf", Ref: "f32", KL: &Divergence{RefPPL: 3.4, Mean: 0, Median: 0, P90: 0, P99: 0, Max: 0, Top1Agree: 1}}
	noRef := &Result{PPL: 3.5, PPLStderr: 0.1, MeanNLL: math.Log(3.5), Tokens: 100, CorpusTokens: 300, Windows: 2, Ctx: 128, Model: "f32"}
	for _, tc := range []struct {
		name    string
		r       *Result
		keys    []string
		notKeys []string
	}{
		{"with reference", withRef, []string{"ppl", "ppl_stderr", "ref_ppl", "kl_mean", "kl_median", "kl_p90", "kl_p99", "kl_max", "top1_agree", "tokens", "windows", "ctx", "model", "ref"}, nil},
		{"without reference", noRef, []string{"ppl", "ppl_stderr", "tokens", "windows", "ctx", "model"}, []string{"kl_mean", "kl_p99", "top1_agree", "ref_ppl", "ref"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range tc.keys {
				if _, ok := m[k]; !ok {
					t.Errorf("%s missing from %s", k, b)
				}
			}
			for _, k := range tc.notKeys {
				if _, ok := m[k]; ok {
					t.Errorf("%s present in %s", k, b)
				}
			}
			var back Result
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&back, tc.r) {
				t.Fatalf("round trip\n got %+v\nwant %+v", back, *tc.r)
			}
		})
	}
	if _, err := json.Marshal(&Result{PPL: math.Inf(1), MeanNLL: 1000, Tokens: 2}); err == nil || !strings.Contains(err.Error(), "not a finite") {
		t.Fatalf("infinite perplexity: %v", err)
	}
}
