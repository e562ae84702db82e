package infer_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"qllama/infer"
)

// topCandidates returns the first k (value, id) pairs of row in Sample's
// order: descending value, the lower id first among equal values.
func topCandidates(row []float32, k int) ([]float32, []int) {
	idx := make([]int, len(row))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
	idx = idx[:min(k, len(row))]
	vals := make([]float32, len(idx))
	for i, j := range idx {
		vals[i] = row[j]
	}
	return vals, idx
}

// TestSampleTopEqualsSample checks that SampleTop on a row's top K
// candidates picks exactly what Sample picks on the whole row, draw after
// draw from the same seed, whenever TopCandidates() is in (0, K]: greedy,
// top-k with and without top-p, rows with ties (also across the K-th
// place), rows shorter than K, and -inf values.
func TestSampleTopEqualsSample(t *testing.T) {
	const K = 64
	rng := rand.New(rand.NewPCG(5, 6))
	rows := map[string]func(n int) []float32{
		"normal": func(n int) []float32 {
			r := make([]float32, n)
			for i := range r {
				r[i] = float32(rng.NormFloat64() * 3)
			}
			return r
		},
		"ties": func(n int) []float32 { // few distinct values: ties everywhere, across the cut too
			r := make([]float32, n)
			for i := range r {
				r[i] = float32(rng.IntN(12)) / 4
			}
			return r
		},
		"flat": func(n int) []float32 { // all equal but a few
			r := make([]float32, n)
			for i := 0; i < 5; i++ {
				r[rng.IntN(n)] = 1
			}
			return r
		},
		"neginf": func(n int) []float32 {
			r := make([]float32, n)
			for i := range r {
				r[i] = float32(rng.NormFloat64())
				if rng.IntN(3) == 0 {
					r[i] = float32(math.Inf(-1))
				}
			}
			return r
		},
	}
	opts := []infer.SampleOptions{
		{Temperature: 0},
		{Temperature: 0.8, TopK: 1},
		{Temperature: 0.8, TopK: 2},
		{Temperature: 1, TopK: 40},
		{Temperature: 0.6, TopK: 40, TopP: 0.9},
		{Temperature: 1.3, TopK: K, TopP: 0.5},
		{Temperature: 1, TopK: K},
		{Temperature: 2, TopK: 7, TopP: 0.99},
		{Temperature: 1, TopK: 1000}, // more than a short row holds
	}
	checked := 0
	for name, mk := range rows {
		for _, n := range []int{3, 50, 64, 500, 4096} {
			for oi, o := range opts {
				o.Seed = uint64(100*oi + n)
				full, top := infer.NewSampler(o), infer.NewSampler(o)
				need := top.TopCandidates()
				if need <= 0 || need > K && n > K {
					continue // not a case SampleTop covers with K candidates
				}
				for step := 0; step < 50; step++ {
					row := mk(n)
					vals, ids := topCandidates(row, K)
					want := full.Sample(row)
					got := top.SampleTop(vals, ids)
					if got != want {
						t.Fatalf("%s n=%d %+v step %d: SampleTop %d, Sample %d", name, n, o, step, got, want)
					}
					checked++
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
	// TopCandidates: greedy needs one, top-k needs k, neither needs the row.
	for _, c := range []struct {
		o    infer.SampleOptions
		want int
	}{{infer.SampleOptions{}, 1}, {infer.SampleOptions{Temperature: 1, TopK: 1}, 1},
		{infer.SampleOptions{Temperature: 1, TopK: 30}, 30}, {infer.SampleOptions{Temperature: 1}, 0},
		{infer.SampleOptions{Temperature: 1, TopP: 0.9}, 0}} {
		if got := infer.NewSampler(c.o).TopCandidates(); got != c.want {
			t.Errorf("%+v: TopCandidates %d, want %d", c.o, got, c.want)
		}
	}
}
