package convert

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"qllama/convert/quant"
	"qllama/format/gguf"
)

// TestNestAbsmaxMatchesQuant checks the parallel path's double quantization
// against quant.QuantizeBnb4 with CompressStatistics on whole tensors.
func TestNestAbsmaxMatchesQuant(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name       string
		rows, cols int
		scale      float32
	}{
		{"one nested block", 4, 64, 1},
		{"partial nested block", 37, 128, 0.02},
		{"many blocks", 300, 256, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := make([]float32, tc.rows*tc.cols)
			for i := range w {
				w[i] = float32(rng.NormFloat64()) * tc.scale
			}
			for _, typ := range []quant.FourBit{quant.NF4, quant.FP4} {
				want, err := quant.QuantizeBnb4(w, tc.rows, tc.cols, quant.Bnb4Options{Type: typ, CompressStatistics: true})
				if err != nil {
					t.Fatal(err)
				}
				plain, err := quant.QuantizeBnb4(w, tc.rows, tc.cols, quant.Bnb4Options{Type: typ})
				if err != nil {
					t.Fatal(err)
				}
				if got := quant.NestAbsmax(plain.Absmax); !reflect.DeepEqual(got, want.Nested) {
					t.Errorf("%v: nested absmax differs from quant's", typ)
				}
			}
		})
	}
}

// TestPackRowMatchesPackBits checks the per-row LSB-first packing against
// quant.PackBits (identical when a row fills whole bytes) and the stream
// definition bit by bit otherwise.
func TestPackRowMatchesPackBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for bits := 2; bits <= 8; bits++ {
		for _, n := range []int{1, 7, 8, 64, 172} {
			codes := make([]uint8, n)
			for i := range codes {
				codes[i] = uint8(rng.IntN(1 << bits))
			}
			got := make([]byte, rtnRowBytes(bits, n))
			packRow(got, codes, bits)
			want, err := quant.PackBits(codes, bits)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("bits %d n %d: packRow %x, PackBits %x", bits, n, got, want)
			}
		}
	}
}

// TestFitScheme covers every fallback rule.
func TestFitScheme(t *testing.T) {
	for _, tc := range []struct {
		s    Scheme
		cols int
		want string
		fell bool
	}{
		{Scheme{Format: "q4_0"}, 64, "q4_0", false},
		{Scheme{Format: "q4_0"}, 172, "f16", true},
		{Scheme{Format: "iq4_nl"}, 100, "f16", true},
		{Scheme{Format: "q4_k"}, 512, "q4_k", false},
		{Scheme{Format: "q4_k"}, 64, "q5_0", true},
		{Scheme{Format: "q4_k"}, 172, "f16", true},
		{Scheme{Format: "q6_k"}, 2048, "q6_k", false},
		{Scheme{Format: "q6_k"}, 288, "q8_0", true},
		{Scheme{Format: "q6_k"}, 100, "f16", true},
		{Scheme{Format: "bf16"}, 172, "bf16", false},
		{Scheme{Format: gguf.FormatNF4, Group: 64}, 192, gguf.FormatNF4, false},
		{Scheme{Format: gguf.FormatNF4, Group: 64}, 172, gguf.FormatInt8, true},
		{Scheme{Format: gguf.FormatFP4, Group: 128}, 192, gguf.FormatInt8, true},
		{Scheme{Format: gguf.FormatRTN, Bits: 3, Group: 128}, 172, gguf.FormatRTN, false},
		{Scheme{Format: gguf.FormatInt8}, 7, gguf.FormatInt8, false},
	} {
		got, why := fitScheme(tc.s, tc.cols)
		if got.Format != tc.want || (why != "") != tc.fell {
			t.Errorf("%s with %d cols: %s (%q), want %s fallback=%v", tc.s, tc.cols, got, why, tc.want, tc.fell)
		}
	}
}

// TestFourBitCoderMatchesQuant checks the fast 4-bit coder against
// quant.QuantizeBnb4 on random rows, all-zero blocks, values at and next to
// every threshold, signed zeros and subnormals.
func TestFourBitCoderMatchesQuant(t *testing.T) {
	const cols, bs = 256, 64
	rng := rand.New(rand.NewPCG(7, 8))
	var w []float32
	for i := 0; i < 64*cols; i++ {
		w = append(w, float32(rng.NormFloat64())*0.02)
	}
	zero := make([]float32, cols) // an all-zero row
	w = append(w, zero...)
	edge := []float32{1, -1, 0, float32(math.Copysign(0, -1)), 1e-40, -1e-40, 0.5, -0.5}
	for _, typ := range []quant.FourBit{quant.NF4, quant.FP4} {
		c := newFourBitCoder(typ)
		if c.out != [16]uint8{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} && typ == quant.NF4 {
			t.Fatalf("nf4 codes are not counts: %v", c.out)
		}
		for _, b := range c.bucket {
			if b.thr != math.MaxUint32 {
				x := fromKey(b.thr)
				edge = append(edge, x, math.Nextafter32(x, 2), math.Nextafter32(x, -2), -x)
			}
		}
	}
	for len(edge)%cols != 0 {
		edge = append(edge, float32(rng.Float64()*2-1))
	}
	w = append(w, edge...)
	rows := len(w) / cols
	for _, typ := range []quant.FourBit{quant.NF4, quant.FP4} {
		want, err := quant.QuantizeBnb4(w, rows, cols, quant.Bnb4Options{Type: typ, BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		packed := make([]byte, len(w)/2)
		absmax := make([]float32, len(w)/bs)
		deq := make([]float32, len(w))
		lut := quant.Codebook(typ)
		quantizeFourBitRows(fourBitCoders()[typ], &lut, w, bs, packed, absmax, deq)
		if !reflect.DeepEqual(packed, want.Packed) || !reflect.DeepEqual(absmax, want.Absmax) {
			for i := range packed {
				if packed[i] != want.Packed[i] {
					t.Fatalf("%v: byte %d (values %g, %g): %#x, quant %#x", typ, i, w[2*i], w[2*i+1], packed[i], want.Packed[i])
				}
			}
			t.Fatalf("%v: absmax differ", typ)
		}
		wd, _ := want.Dequantize()
		if !reflect.DeepEqual(deq, wd) {
			t.Errorf("%v: dequantized values differ from quant's", typ)
		}
	}
}
