package convert

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"qllama/format/gguf"
	"qllama/format/safetensors"
)

// BenchmarkEncode quantizes one BF16 [2048, 8192] weight (an MLP matrix of
// Llama 3.2-1B) per format on all cores.
func BenchmarkEncode(b *testing.B) {
	const rows, cols = 2048, 8192
	raw := make([]byte, 2*rows*cols)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < rows*cols; i++ {
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(math32bits(float32(rng.NormFloat64()*0.02))>>16))
	}
	src := &source{raw: raw, dtype: safetensors.BF16, esize: 2, cols: cols}
	for _, s := range []Scheme{{Format: "q4_0"}, {Format: "q8_0"}, {Format: gguf.FormatNF4, Bits: 4, Group: 64}, {Format: gguf.FormatNF4, Bits: 4, Group: 64, DoubleQuant: true}, {Format: gguf.FormatInt8, Bits: 8}, {Format: gguf.FormatRTN, Bits: 4, Group: 128}} {
		b.Run(s.String(), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for i := 0; i < b.N; i++ {
				if _, err := encode(context.Background(), runtime.GOMAXPROCS(0), s, src, rows, cols); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func math32bits(f float32) uint32 { return math.Float32bits(f) }
