package safetensors

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/x448/float16"

	"qllama/internal/testutil"
)

// bf16Ref rounds f to bfloat16 in float64 arithmetic: the nearest value with an
// 8-bit significand, ties to even. Used to check BF16FromFloat32 independently.
func bf16Ref(f float32) uint16 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) || f == 0 {
		return uint16(math.Float32bits(f) >> 16)
	}
	x := float64(f)
	_, exp := math.Frexp(math.Abs(x)) // |x| = frac * 2^exp, frac in [0.5, 1)
	if exp < -125 {                   // subnormal in float32: fixed quantum 2^-133
		exp = -125
	}
	q := math.Ldexp(1, exp-8) // spacing of bf16 values near |x|
	r := math.RoundToEven(math.Abs(x)/q) * q
	if r > math.MaxFloat32 {
		r = math.Inf(1)
	}
	return uint16(math.Float32bits(float32(math.Copysign(r, x))) >> 16)
}

func TestBF16FromFloat32(t *testing.T) {
	tests := []struct {
		name string
		in   uint32
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"tie to even down", 0x3f808000, 0x3f80},
		{"tie to even up", 0x3f818000, 0x3f82},
		{"above tie", 0x3f808001, 0x3f81},
		{"below tie", 0x3f807fff, 0x3f80},
		{"max float rounds to inf", 0x7f7fffff, 0x7f80},
		{"neg inf", 0xff800000, 0xff80},
		{"neg zero", 0x80000000, 0x8000},
		{"smallest subnormal", 0x00000001, 0x0000},
		{"quiet NaN", 0x7fc00000, 0x7fc0},
		{"NaN low payload stays NaN", 0x7f800001, 0x7fc0},
		{"neg NaN", 0xffc00001, 0xffc0},
	}
	for _, tc := range tests {
		got := BF16FromFloat32(math.Float32frombits(tc.in))
		if got != tc.want {
			t.Errorf("%s: BF16FromFloat32(%#08x) = %#04x, want %#04x", tc.name, tc.in, got, tc.want)
		}
	}
	// Random bit patterns against the float64 reference.
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		f := math.Float32frombits(rng.Uint32())
		got := BF16FromFloat32(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(BF16ToFloat32(got))) {
				t.Fatalf("NaN %#08x -> %#04x not NaN", math.Float32bits(f), got)
			}
			continue
		}
		if want := bf16Ref(f); got != want {
			t.Fatalf("BF16FromFloat32(%#08x) = %#04x, want %#04x", math.Float32bits(f), got, want)
		}
	}
}

func TestF16ToF32Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		got, want := f16ToF32(uint16(i)), float16.Frombits(uint16(i)).Float32()
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("f16ToF32(%#04x) = %#08x, want %#08x", i, math.Float32bits(got), math.Float32bits(want))
		}
	}
}

func TestFromFloat32RoundTrip(t *testing.T) {
	// Every BF16 / F16 bit pattern survives decode then encode (NaNs stay NaN).
	src := make([]byte, 2*65536)
	for i := 0; i < 65536; i++ {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(i))
	}
	for _, dt := range []DType{BF16, F16} {
		f := make([]float32, 65536)
		if err := ToFloat32(f, src, dt); err != nil {
			t.Fatal(err)
		}
		out := make([]byte, len(src))
		if dt == BF16 {
			FromFloat32BF16(out, f)
		} else {
			FromFloat32F16(out, f)
		}
		for i := 0; i < 65536; i++ {
			got := binary.LittleEndian.Uint16(out[2*i:])
			if math.IsNaN(float64(f[i])) {
				if dt == BF16 && got&0x7f80 != 0x7f80 || dt == F16 && got&0x7c00 != 0x7c00 || got&0x8000 != uint16(i)&0x8000 {
					t.Fatalf("%s: NaN %#04x -> %#04x", dt, i, got)
				}
				continue
			}
			if got != uint16(i) {
				t.Fatalf("%s: %#04x -> %v -> %#04x", dt, i, f[i], got)
			}
		}
	}
	// F16 encoding of values between representable ones matches x448's rounding.
	rng := rand.New(rand.NewPCG(5, 6))
	in := make([]float32, 1000)
	for i := range in {
		in[i] = float32(rng.NormFloat64() * 1000)
	}
	out := make([]byte, 2*len(in))
	FromFloat32F16(out, in)
	for i, f := range in {
		if got, want := binary.LittleEndian.Uint16(out[2*i:]), float16.Fromfloat32(f).Bits(); got != want {
			t.Fatalf("F16(%v) = %#04x, want %#04x", f, got, want)
		}
	}
}

func TestToFloat32(t *testing.T) {
	// Sizes around the unrolling (4) and the parallel cut-off.
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 3, 4, 5, 17, parallelMin - 1, parallelMin + 5} {
		src := make([]byte, 4*n)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		for _, dt := range []DType{F32, F16, BF16} {
			size, _ := dt.Size()
			b := src[:size*n]
			dst := make([]float32, n)
			if err := ToFloat32(dst, b, dt); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				var want float32
				switch dt {
				case F32:
					want = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
				case F16:
					want = float16.Frombits(binary.LittleEndian.Uint16(b[2*i:])).Float32()
				case BF16:
					want = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
				}
				if math.Float32bits(dst[i]) != math.Float32bits(want) {
					t.Fatalf("%s n=%d: element %d = %#08x, want %#08x", dt, n, i, math.Float32bits(dst[i]), math.Float32bits(want))
				}
			}
		}
	}
	// Unaligned F32 source.
	raw := make([]byte, 4*3+1)
	binary.LittleEndian.PutUint32(raw[1:], math.Float32bits(1.5))
	binary.LittleEndian.PutUint32(raw[5:], math.Float32bits(-2))
	binary.LittleEndian.PutUint32(raw[9:], math.Float32bits(3.25))
	dst := make([]float32, 3)
	if err := ToFloat32(dst, raw[1:], F32); err != nil || dst[0] != 1.5 || dst[1] != -2 || dst[2] != 3.25 {
		t.Errorf("unaligned F32 = %v, %v", dst, err)
	}

	errs := []struct {
		name string
		dst  int
		src  int
		dt   DType
	}{
		{"ragged", 1, 3, BF16},
		{"dst too short", 1, 8, F32},
		{"dst too long", 3, 4, BF16},
		{"not float", 2, 2, I8},
		{"unknown", 1, 1, "X"},
	}
	for _, e := range errs {
		if err := ToFloat32(make([]float32, e.dst), make([]byte, e.src), e.dt); err == nil {
			t.Errorf("%s: no error", e.name)
		}
	}
}

// The BF16 weights of random_llama32 converted by ToFloat32 equal the bytes
// shifted into the top half of a float32.
func TestToFloat32RealBF16(t *testing.T) {
	f, err := Open(filepath.Join(testutil.Shared(t, "models", "random_llama32"), "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const name = "model.layers.1.mlp.down_proj.weight"
	ti, _ := f.Info(name)
	raw, err := f.Data(name)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, ti.NumElements())
	if err := ToFloat32(dst, raw, ti.DType); err != nil {
		t.Fatal(err)
	}
	var sumsq float64
	for i, v := range dst {
		want := math.Float32frombits(uint32(raw[2*i])<<16 | uint32(raw[2*i+1])<<24)
		if v != want {
			t.Fatalf("element %d = %v, want %v", i, v, want)
		}
		sumsq += float64(v) * float64(v)
	}
	if sumsq == 0 {
		t.Error("all weights zero")
	}
}

// BenchmarkToFloat32 converts 4M weight-like values (N(0, 0.02), as in a
// Llama checkpoint) of each dtype; MB/s counts source bytes.
func BenchmarkToFloat32(b *testing.B) {
	const n = 1 << 22
	rng := rand.New(rand.NewPCG(1, 1))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.02)
	}
	for _, dt := range []DType{BF16, F16, F32} {
		size, _ := dt.Size()
		src := make([]byte, n*size)
		switch dt {
		case BF16:
			FromFloat32BF16(src, w)
		case F16:
			FromFloat32F16(src, w)
		case F32:
			for i, v := range w {
				binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
			}
		}
		dst := make([]float32, n)
		b.Run(string(dt), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if err := ToFloat32(dst, src, dt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFromFloat32BF16(b *testing.B) {
	const n = 1 << 22
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(i) * 0.37
	}
	dst := make([]byte, 2*n)
	b.SetBytes(4 * n)
	for b.Loop() {
		FromFloat32BF16(dst, src)
	}
}
