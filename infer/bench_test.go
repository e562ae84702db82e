package infer_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"qllama/infer"
)

// BenchmarkGenerate measures greedy generation on stories260k (batch 1,
// 5-token prompt, 128 new tokens); tokens/s is reported.
func BenchmarkGenerate(b *testing.B) {
	m := loadModel(b, "stories260k")
	r := infer.NewRunner(m)
	req := infer.Request{Prompt: []int{1, 403, 407, 261, 378}, MaxNewTokens: 128}
	mm := *m
	mm.Config.EOS = nil // never stop early: every run generates 128 tokens
	r.M = &mm
	tokens := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Generate(context.Background(), []infer.Request{req}, infer.GenerateOptions{}, func(c infer.Completion) { tokens += len(c.Tokens) }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}

const benchRows, benchCols = 2048, 8192

// BenchmarkMatVec measures one float32 matrix-vector product of a 2048x8192
// matrix (64 MiB, far larger than the caches): bytes/s is the weight read
// rate, to compare with BenchmarkMemCopy.
func BenchmarkMatVec(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, benchRows*benchCols)
	for i := range w {
		w[i] = rng.Float32() - 0.5
	}
	x := make([]float32, benchCols)
	for i := range x {
		x[i] = rng.Float32()
	}
	d := infer.NewDense(w, benchRows, benchCols)
	dst := make([]float32, benchRows)
	b.SetBytes(int64(len(w)) * 4)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.MatMul(dst, x, 1)
	}
}

// BenchmarkMemCopy measures the machine's memory copy rate on a buffer the
// size of BenchmarkMatVec's matrix, copied by as many goroutines as MatMul
// uses; bytes/s counts each byte copied once.
func BenchmarkMemCopy(b *testing.B) {
	src := make([]byte, benchRows*benchCols*4)
	dst := make([]byte, len(src))
	for i := range src {
		src[i] = byte(i)
	}
	b.SetBytes(int64(len(src)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		infer.ParallelFor(len(src), 1, func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) })
	}
}
