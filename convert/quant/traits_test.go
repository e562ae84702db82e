package quant

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestBlockLayout(t *testing.T) {
	tests := []struct {
		name     string
		id       GGUFType
		bs, bb   int
		constBS  int
		constBB  int
		bpw      float64
		fromSpec int // bytes per block spelled as the sum of ggml-common.h fields
	}{
		{"f32", 0, 1, 4, BlockSizeF32, BlockBytesF32, 32, 4},
		{"f16", 1, 1, 2, BlockSizeF16, BlockBytesF16, 16, 2},
		{"bf16", 30, 1, 2, BlockSizeBF16, BlockBytesBF16, 16, 2},
		{"q8_0", 8, 32, 34, BlockSizeQ8_0, BlockBytesQ8_0, 8.5, 2 + 32},
		{"q4_0", 2, 32, 18, BlockSizeQ4_0, BlockBytesQ4_0, 4.5, 2 + 32/2},
		{"q4_1", 3, 32, 20, BlockSizeQ4_1, BlockBytesQ4_1, 5, 2*2 + 32/2},
		{"q5_0", 6, 32, 22, BlockSizeQ5_0, BlockBytesQ5_0, 5.5, 2 + 4 + 32/2},
		{"q5_1", 7, 32, 24, BlockSizeQ5_1, BlockBytesQ5_1, 6, 2*2 + 4 + 32/2},
		{"iq4_nl", 20, 32, 18, BlockSizeIQ4NL, BlockBytesIQ4NL, 4.5, 2 + 32/2},
		{"q4_k", 12, 256, 144, BlockSizeQ4K, BlockBytesQ4K, 4.5, 2*2 + 12 + 256/2},
		{"q6_k", 14, 256, 210, BlockSizeQ6K, BlockBytesQ6K, 6.5625, 256/2 + 256/4 + 256/16 + 2},
	}
	if len(tests) != len(All()) {
		t.Fatalf("table has %d rows, test expects %d", len(All()), len(tests))
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := All()[i]
			if tr.Name != tc.name || tr.GGUF != tc.id || tr.BlockSize != tc.bs || tr.BlockBytes != tc.bb || tr.BitsPerWeight != tc.bpw {
				t.Errorf("row %+v, want name %s id %d block %d bytes %d bpw %v", tr, tc.name, tc.id, tc.bs, tc.bb, tc.bpw)
			}
			if tc.constBS != tc.bs || tc.constBB != tc.bb || tc.fromSpec != tc.bb {
				t.Errorf("constants %d/%d, spec bytes %d, want %d/%d", tc.constBS, tc.constBB, tc.fromSpec, tc.bs, tc.bb)
			}
			if got := float64(8*tr.BlockBytes) / float64(tr.BlockSize); got != tr.BitsPerWeight {
				t.Errorf("bits per weight %v, bytes say %v", tr.BitsPerWeight, got)
			}
			if tr.Quantize == nil || tr.Dequantize == nil || tr.Dot == nil || tr.Validate == nil {
				t.Fatal("missing function")
			}
			byName, err := Lookup(tc.name)
			if err != nil || byName.GGUF != tc.id {
				t.Errorf("Lookup(%q) = %v, %v", tc.name, byName.Name, err)
			}
			byID, err := ByGGUFType(tc.id)
			if err != nil || byID.Name != tc.name {
				t.Errorf("ByGGUFType(%d) = %v, %v", tc.id, byID.Name, err)
			}
		})
	}
	if _, err := Lookup("q4_2"); !errors.Is(err, ErrUnknownType) {
		t.Errorf("Lookup(q4_2) error %v", err)
	}
	if _, err := ByGGUFType(4); !errors.Is(err, ErrUnknownType) {
		t.Errorf("ByGGUFType(4) error %v", err)
	}
}

// testRows returns seeded rows of n weights covering the shapes that matter
// to the encoders: gaussian, small, integer-valued (ties), wide dynamic
// range, all-positive, with all-zero blocks, outliers and 1e-17 blocks.
func testRows(seed uint64, count, n int) [][]float32 {
	r := rand.New(rand.NewPCG(seed, 99))
	rows := make([][]float32, count)
	for i := range rows {
		row := make([]float32, n)
		for j := range row {
			switch i % 7 {
			case 0, 1:
				row[j] = float32(r.NormFloat64())
			case 2:
				row[j] = float32(r.NormFloat64() * 0.02)
			case 3:
				row[j] = float32(r.IntN(33) - 16)
			case 4:
				row[j] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(9)-6)))
			case 5:
				row[j] = float32(r.IntN(17)-8) * 0.125
			case 6:
				row[j] = float32(r.ExpFloat64())
			}
		}
		nb := max(1, n/32)
		if i%3 == 0 {
			b := r.IntN(nb)
			for j := b * 32; j < min(n, b*32+32); j++ {
				row[j] = 0
			}
		}
		if i%4 == 1 {
			row[r.IntN(n)] = float32(r.NormFloat64() * 300)
		}
		if i%5 == 2 {
			b := r.IntN(nb)
			for j := b * 32; j < min(n, b*32+32); j++ {
				row[j] *= 1e-17
			}
		}
		rows[i] = row
	}
	// All-zero row and a row whose first blocks are zero.
	rows = append(rows, make([]float32, n))
	lead := make([]float32, n)
	for j := n / 2; j < n; j++ {
		lead[j] = float32(j%7) - 3
	}
	return append(rows, lead)
}

func quantizeRow(t *testing.T, tr Traits, x []float32) []byte {
	t.Helper()
	n, err := tr.RowBytes(len(x))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, n)
	if err := tr.Quantize(out, x); err != nil {
		t.Fatalf("%s: %v", tr.Name, err)
	}
	return out
}

func TestEncodeMatchesReference(t *testing.T) {
	rows := testRows(1, 300, 256)
	for _, tr := range All() {
		if searchEncoders[tr.Name] {
			continue // TestKQuantEncoders
		}
		t.Run(tr.Name, func(t *testing.T) {
			ref := refEncode[tr.Name]
			if ref == nil {
				t.Fatalf("no reference encoder for %s", tr.Name)
			}
			for i, x := range rows {
				got, want := quantizeRow(t, tr, x), ref(x)
				if !bytes.Equal(got, want) {
					k := 0
					for got[k] == want[k] {
						k++
					}
					t.Fatalf("row %d: first difference at byte %d (block %d): got %#x want %#x", i, k, k/tr.BlockBytes, got[k], want[k])
				}
			}
		})
	}
}

// TestHandCheckedBlocks pins a few blocks worked out by hand.
func TestHandCheckedBlocks(t *testing.T) {
	ramp := make([]float32, 32) // -16 .. 15
	for j := range ramp {
		ramp[j] = float32(j - 16)
	}
	q8 := quantizeRow(t, table[3], ramp)
	// d = 16/127 = 0.125984 -> fp16 0x3008 (2^-3 * (1 + 8/1024) = 0.1259766);
	// q = round(x * 127/16): -16 -> -127, -1 -> round(-7.9375) = -8, 0 -> 0, 15 -> 119.
	for _, c := range []struct{ at, want int }{{0, 0x08}, {1, 0x30}, {2, 0x81}, {2 + 15, 0xf8}, {2 + 16, 0}, {2 + 31, 119}} {
		if int(q8[c.at]) != c.want {
			t.Errorf("q8_0 byte %d = %#x, want %#x", c.at, q8[c.at], c.want)
		}
	}
	// q4_0 on -8..7 twice: max magnitude -8 -> d = 1 (0x3c00), q = x + 8.
	sym := make([]float32, 32)
	for j := range sym {
		sym[j] = float32(j%16 - 8)
	}
	q4 := quantizeRow(t, table[4], sym)
	want := []byte{0x00, 0x3c, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	if !bytes.Equal(q4, want) {
		t.Errorf("q4_0 = % x, want % x", q4, want)
	}
	// q4_1 on 0..15 twice: min 0, d = 1 (0x3c00), m = 0, q = x.
	up := make([]float32, 32)
	for j := range up {
		up[j] = float32(j % 16)
	}
	q41 := quantizeRow(t, table[5], up)
	want41 := append([]byte{0x00, 0x3c, 0x00, 0x00}, want[2:]...)
	if !bytes.Equal(q41, want41) {
		t.Errorf("q4_1 = % x, want % x", q41, want41)
	}
	// iq4_nl on the codebook itself twice: indices are the identity, and the
	// least-squares scale of x against itself is exactly 1 (0x3c00).
	book := make([]float32, 32)
	for j := range book {
		book[j] = float32(kvaluesIQ4NL[j%16])
	}
	iq := quantizeRow(t, table[8], book)
	if !bytes.Equal(iq, want) {
		t.Errorf("iq4_nl = % x, want % x", iq, want)
	}
}

// randomBlocks returns count random blocks of tr with finite random scales.
func randomBlocks(r *rand.Rand, tr Traits, count int) []byte {
	b := make([]byte, count*tr.BlockBytes)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for i := 0; i < count; i++ {
		blk := b[i*tr.BlockBytes:]
		switch tr.Name {
		case "f32":
			binary.LittleEndian.PutUint32(blk, math.Float32bits(float32(r.NormFloat64())))
		case "f16", "bf16":
			blk[1] &^= 0x40 // keep the exponent below all-ones
		case "q6_k":
			h, _ := refFP16(r.NormFloat64() * 0.01)
			binary.LittleEndian.PutUint16(blk[refQ6KDOff:], h)
		default:
			h, _ := refFP16(r.NormFloat64() * 0.01)
			binary.LittleEndian.PutUint16(blk, h)
			if tr.Name == "q4_1" || tr.Name == "q5_1" || tr.Name == "q4_k" {
				h, _ = refFP16(r.NormFloat64() * 0.05)
				binary.LittleEndian.PutUint16(blk[2:], h)
			}
		}
	}
	return b
}

func TestDequantizeMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, tr := range All() {
		t.Run(tr.Name, func(t *testing.T) {
			for rep := 0; rep < 20; rep++ {
				src := randomBlocks(r, tr, max(2, 64/tr.BlockSize*8))
				if err := tr.Validate(src); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				got := make([]float32, len(src)/tr.BlockBytes*tr.BlockSize)
				if err := tr.Dequantize(got, src); err != nil {
					t.Fatal(err)
				}
				want := refDecode[tr.Name](src)
				for i := range got {
					if float64(got[i]) != want[i] {
						t.Fatalf("weight %d: got %v want %v", i, got[i], want[i])
					}
				}
			}
		})
	}
}

// roundTripLimit is the largest relative RMS error allowed on gaussian rows.
// For q8_0 the step is amax/127 with amax about 2.5 sigma over 32 samples, so
// the uniform-rounding error is about 0.0197/sqrt(12) = 0.0057 sigma: 0.005
// cannot be met by any absmax int8 code, hence 0.006.
var roundTripLimit = map[string]float64{
	"f32": 0, "f16": 0.0005, "bf16": 0.004,
	"q8_0": 0.006, "q5_0": 0.05, "q5_1": 0.05, "q4_0": 0.12, "q4_1": 0.10, "iq4_nl": 0.10,
	"q6_k": 0.025, "q4_k": 0.10,
}

func TestRoundTripError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for _, tr := range All() {
		t.Run(tr.Name, func(t *testing.T) {
			limit, ok := roundTripLimit[tr.Name]
			if !ok {
				t.Fatalf("no threshold for %s", tr.Name)
			}
			y := make([]float32, len(x))
			if err := tr.Dequantize(y, quantizeRow(t, tr, x)); err != nil {
				t.Fatal(err)
			}
			var se, ss float64
			for i := range x {
				e := float64(y[i]) - float64(x[i])
				se += e * e
				ss += float64(x[i]) * float64(x[i])
			}
			rel := math.Sqrt(se / ss)
			t.Logf("%s: relative RMS error %.5f (limit %v)", tr.Name, rel, limit)
			if rel > limit {
				t.Errorf("relative RMS error %.5f above %v", rel, limit)
			}
		})
	}
}

func TestDotMatchesDequantize(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, tr := range All() {
		t.Run(tr.Name, func(t *testing.T) {
			for _, n := range []int{max(32, tr.BlockSize), 3 * max(32, tr.BlockSize), 4096} {
				w := make([]float32, n)
				x := make([]float32, n)
				for i := range w {
					w[i], x[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
				}
				q := quantizeRow(t, tr, w)
				deq := make([]float32, n)
				if err := tr.Dequantize(deq, q); err != nil {
					t.Fatal(err)
				}
				var want, mag float64
				for i := range deq {
					want += float64(deq[i]) * float64(x[i])
					mag += math.Abs(float64(deq[i]) * float64(x[i]))
				}
				got := tr.Dot(q, x)
				if math.Abs(float64(got)-want) > 1e-5*mag+1e-6 {
					t.Errorf("n=%d: Dot %v, float64 reference %v (sum |w x| %v)", n, got, want, mag)
				}
			}
		})
	}
}

func TestQuantizeErrors(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(-1))
	for _, tr := range All() {
		bs := max(32, tr.BlockSize) // whole blocks for all
		tests := []struct {
			name string
			x    []float32
			dst  int // bytes; -1: the right size
			err  error
		}{
			{"nan", withAt(bs, 5, nan), -1, ErrNonFinite},
			{"inf", withAt(bs, 31, inf), -1, ErrNonFinite},
			{"short dst", make([]float32, bs), 3, ErrSize},
		}
		if tr.BlockSize > 1 {
			tests = append(tests, struct {
				name string
				x    []float32
				dst  int
				err  error
			}{"ragged", make([]float32, bs+5), -1, ErrSize})
		}
		if tr.Name != "f32" {
			tests = append(tests, struct {
				name string
				x    []float32
				dst  int
				err  error
			}{"fp16 overflow", withAt(bs, 0, math.MaxFloat32), -1, ErrOverflow})
		}
		for _, tc := range tests {
			t.Run(tr.Name+"/"+tc.name, func(t *testing.T) {
				n := tc.dst
				if n < 0 {
					n = (len(tc.x) + tr.BlockSize - 1) / tr.BlockSize * tr.BlockBytes
				}
				err := tr.Quantize(make([]byte, n), tc.x)
				if !errors.Is(err, tc.err) {
					t.Errorf("error %v, want %v", err, tc.err)
				}
			})
		}
		t.Run(tr.Name+"/dequantize sizes", func(t *testing.T) {
			if err := tr.Dequantize(make([]float32, 1), make([]byte, tr.BlockBytes*2)); !errors.Is(err, ErrSize) {
				t.Errorf("error %v, want ErrSize", err)
			}
			if err := tr.Validate(make([]byte, tr.BlockBytes+1)); !errors.Is(err, ErrSize) {
				t.Errorf("Validate partial block: %v", err)
			}
		})
		t.Run(tr.Name+"/validate non-finite", func(t *testing.T) {
			blk := make([]byte, 2*tr.BlockBytes)
			if tr.Name == "f32" {
				binary.LittleEndian.PutUint32(blk[tr.BlockBytes:], 0x7fc00000)
			} else if tr.Name == "bf16" {
				binary.LittleEndian.PutUint16(blk[tr.BlockBytes:], 0x7f80)
			} else if tr.Name == "q6_k" {
				binary.LittleEndian.PutUint16(blk[tr.BlockBytes+refQ6KDOff:], 0x7e00)
			} else {
				binary.LittleEndian.PutUint16(blk[tr.BlockBytes:], 0x7e00)
			}
			if err := tr.Validate(blk); !errors.Is(err, ErrNonFinite) {
				t.Errorf("error %v, want ErrNonFinite", err)
			}
		})
		t.Run(tr.Name+"/dot contract", func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Dot with a short vector did not panic")
				}
			}()
			tr.Dot(make([]byte, tr.BlockBytes), make([]float32, tr.BlockSize+1))
		})
	}
}

func withAt(n, i int, v float32) []float32 {
	x := make([]float32, n)
	for j := range x {
		x[j] = float32(j%5) - 2
	}
	x[i] = v
	return x
}

func benchmarkDot(b *testing.B, name string) {
	tr, err := Lookup(name)
	if err != nil {
		b.Fatal(err)
	}
	const n = 4096
	r := rand.New(rand.NewPCG(5, 5))
	w, x := make([]float32, n), make([]float32, n)
	for i := range w {
		w[i], x[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	q := make([]byte, n/tr.BlockSize*tr.BlockBytes)
	if err := tr.Quantize(q, w); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(q)))
	b.ReportAllocs()
	var sink float32
	for b.Loop() {
		sink += tr.Dot(q, x)
	}
	_ = fmt.Sprint(sink)
}

func BenchmarkDotQ4_0(b *testing.B) { benchmarkDot(b, "q4_0") }
func BenchmarkDotQ8_0(b *testing.B) { benchmarkDot(b, "q8_0") }
func BenchmarkDotQ4K(b *testing.B)  { benchmarkDot(b, "q4_k") }
func BenchmarkDotQ6K(b *testing.B)  { benchmarkDot(b, "q6_k") }
