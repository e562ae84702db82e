package convert

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"qllama/convert/quant"
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
				if got := nestAbsmax(plain.Absmax); !reflect.DeepEqual(got, want.Nested) {
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
		{Scheme{Format: "bf16"}, 172, "bf16", false},
		{Scheme{Format: FormatNF4, Group: 64}, 192, FormatNF4, false},
		{Scheme{Format: FormatNF4, Group: 64}, 172, FormatInt8, true},
		{Scheme{Format: FormatFP4, Group: 128}, 192, FormatInt8, true},
		{Scheme{Format: FormatRTN, Bits: 3, Group: 128}, 172, FormatRTN, false},
		{Scheme{Format: FormatInt8}, 7, FormatInt8, false},
	} {
		got, why := fitScheme(tc.s, tc.cols)
		if got.Format != tc.want || (why != "") != tc.fell {
			t.Errorf("%s with %d cols: %s (%q), want %s fallback=%v", tc.s, tc.cols, got, why, tc.want, tc.fell)
		}
	}
}
