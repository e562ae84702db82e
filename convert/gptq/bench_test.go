package gptq

import (
	"context"
	"math/rand/v2"
	"testing"
)

// BenchmarkGPTQLayer is GPTQ 4-bit g128 of one Llama-3.2-1B gate/up-shaped
// layer (8192 x 2048, a 2048 x 2048 Hessian) on the CPU. Run with
// -benchtime=1x; the Hessian accumulation is timed separately.
func BenchmarkGPTQLayer(b *testing.B) {
	const rows, cols, n = 8192, 2048, 4096
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.02)
	}
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	b.Run("hessian-4096-rows", func(b *testing.B) {
		for range b.N {
			h := NewHessian(cols)
			if err := h.Add(x, n); err != nil {
				b.Fatal(err)
			}
		}
	})
	h := NewHessian(cols)
	if err := h.Add(x, n); err != nil {
		b.Fatal(err)
	}
	b.Run("quantize-4bit-g128", func(b *testing.B) {
		for range b.N {
			if _, _, err := Quantize(context.Background(), w, rows, cols, h, Options{Bits: 4, GroupSize: 128}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
