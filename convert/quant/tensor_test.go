package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func gaussian(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 11))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	return w
}

func relRMS(t *testing.T, w, y []float32) float64 {
	t.Helper()
	var se, ss float64
	for i := range w {
		e := float64(y[i]) - float64(w[i])
		se += e * e
		ss += float64(w[i]) * float64(w[i])
	}
	return math.Sqrt(se / ss)
}

// checkTensor runs the checks every Tensor shares: shape, round-trip error
// under limit, DotRow against Dequantize + float64 dot, and size accounting.
func checkTensor(t *testing.T, q Tensor, w []float32, limit, wantBPW float64) {
	t.Helper()
	if err := q.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	rows, cols := q.Shape()
	y, err := q.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	if rel := relRMS(t, w, y); rel > limit {
		t.Errorf("relative RMS error %.5f above %v", rel, limit)
	}
	x := gaussian(77, cols)
	for r := 0; r < rows; r++ {
		var want, mag float64
		for j := 0; j < cols; j++ {
			want += float64(y[r*cols+j]) * float64(x[j])
			mag += math.Abs(float64(y[r*cols+j]) * float64(x[j]))
		}
		if got := q.DotRow(r, x); math.Abs(float64(got)-want) > 1e-5*mag+1e-6 {
			t.Fatalf("row %d: DotRow %v, float64 reference %v", r, got, want)
		}
	}
	if bpw := q.BitsPerWeight(); math.Abs(bpw-wantBPW) > 1e-9 {
		t.Errorf("BitsPerWeight %v, want %v (Bytes %d)", bpw, wantBPW, q.Bytes())
	}
}

func TestInt8(t *testing.T) {
	// Hand-checked row: absmax 127 so the factor is 1; -63.5 rounds to even (-64).
	q, err := QuantizeInt8([]float32{127, -63.5, 0.5, 1.5, 0, 0, 0, 0}, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int8{127, -64, 0, 2, 0, 0, 0, 0}; !equalInt8(q.Codes, want) || q.Absmax[0] != 127 || q.Absmax[1] != 0 {
		t.Errorf("codes %v absmax %v, want %v [127 0]", q.Codes, q.Absmax, want)
	}
	const rows, cols = 16, 300
	w := gaussian(1, rows*cols)
	q, err = QuantizeInt8(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	// Independent recomputation: round half to even of x*127/absmax.
	for r := 0; r < rows; r++ {
		amax := 0.0
		for _, v := range w[r*cols : (r+1)*cols] {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		if float64(q.Absmax[r]) != amax {
			t.Fatalf("row %d absmax %v want %v", r, q.Absmax[r], amax)
		}
		s := f32(127 / amax)
		for j, v := range w[r*cols : (r+1)*cols] {
			if want := int8(math.RoundToEven(f32(float64(v) * s))); q.Codes[r*cols+j] != want {
				t.Fatalf("code [%d,%d] %d want %d", r, j, q.Codes[r*cols+j], want)
			}
		}
	}
	checkTensor(t, q, w, 0.008, 8+32.0/cols)
}

func equalInt8(a, b []int8) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBnb4Trees(t *testing.T) {
	// The kernel's decision thresholds are the midpoints of the codebook.
	sorted := nf4Values[:]
	nfPivots := []float64{-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
		-0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
		0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
		0.5016634166240692, 0.6427869200706482, 0.8614784181118011}
	for i, p := range nfPivots {
		mid := (float64(sorted[i]) + float64(sorted[i+1])) / 2
		if math.Abs(mid-p) > 1e-7 {
			t.Errorf("nf4 pivot %d: %v, midpoint %v", i, p, mid)
		}
	}
	r := rand.New(rand.NewPCG(6, 6))
	for k := 0; k < 20000; k++ {
		x := float32(r.Float64()*2.2 - 1.1)
		if c := quantizeNF4(x); nearest(float64(x), func(c int) float64 { return float64(nf4Values[c]) }) != int(c) && !nearMidpoint(float64(x), nfPivots) {
			t.Fatalf("nf4(%v) = %d", x, c)
		}
		fpv := func(c int) float64 { return float64(fourBitValue(FP4, uint8(c))) }
		if c := quantizeFP4(x); math.Abs(fpv(int(c))-float64(x)) > math.Abs(fpv(nearest(float64(x), fpv))-float64(x))+1e-6 {
			t.Fatalf("fp4(%v) = %d (%v)", x, c, fpv(int(c)))
		}
	}
	// Ties at a midpoint go to the lower code; NaN (0*inf) gives code 0.
	if c := quantizeNF4(0.03979014977812767); c != 7 {
		t.Errorf("nf4 at the 0/0.0796 midpoint = %d, want 7", c)
	}
	if c := quantizeNF4(float32(math.NaN())); c != 0 {
		t.Errorf("nf4(NaN) = %d", c)
	}
	// FP4 encoding: sign bit 8, magnitudes {0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4}.
	for _, c := range []struct {
		x    float32
		code uint8
	}{{1, 3}, {-1, 11}, {0.5, 5}, {-0.25, 15}, {0.7, 2}, {0.17, 6}, {0.004, 1}, {0.001, 0}, {-0.001, 8}} {
		if got := quantizeFP4(c.x); got != c.code {
			t.Errorf("fp4(%v) = %d, want %d", c.x, got, c.code)
		}
	}
}

func nearest(x float64, val func(int) float64) int {
	best, be := 0, math.Inf(1)
	for c := 0; c < 16; c++ {
		if e := math.Abs(val(c) - x); e < be {
			best, be = c, e
		}
	}
	return best
}

func nearMidpoint(x float64, pivots []float64) bool {
	for _, p := range pivots {
		if math.Abs(x-p) < 1e-6 {
			return true
		}
	}
	return false
}

func TestBnb4(t *testing.T) {
	// Packing: first element in the high nibble; odd count padded with code(0).
	// Codes by hand: 1->15, -1->0, 0->7, 0.5->12, -0.5->2, 0.25->10, 0.1->8.
	q, err := QuantizeBnb4([]float32{1, -1, 0, 0.5, -0.5, 0.25, 0.1, 0, 1}, 3, 3, Bnb4Options{Type: NF4})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0xf0, 0x7c, 0x2a, 0x87, 0xf7}; !bytes.Equal(q.Packed, want) || len(q.Absmax) != 1 || q.Absmax[0] != 1 {
		t.Errorf("packed % x absmax %v, want % x [1]", q.Packed, q.Absmax, want)
	}
	for _, tc := range []struct {
		name       string
		rows, cols int
		opt        Bnb4Options
		limit, bpw float64
	}{
		{"nf4", 32, 256, Bnb4Options{Type: NF4}, 0.11, 4 + 32.0/64},
		{"fp4", 32, 256, Bnb4Options{Type: FP4}, 0.16, 4 + 32.0/64},
		{"nf4 bs128", 8, 512, Bnb4Options{Type: NF4, BlockSize: 128}, 0.12, 4 + 32.0/128},
		{"nf4 ragged", 7, 45, Bnb4Options{Type: NF4}, 0.11, 8 * float64(158+5*4) / 315},
		{"nf4 nested", 64, 1024, Bnb4Options{Type: NF4, CompressStatistics: true}, 0.11, 8 * float64(32768+1024+4*4+4) / 65536},
		{"fp4 nested ragged", 9, 77, Bnb4Options{Type: FP4, CompressStatistics: true}, 0.17, 8 * float64(347+11+4+4) / 693},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := gaussian(8, tc.rows*tc.cols)
			w[3] = 0 // keep an exact zero
			q, err := QuantizeBnb4(w, tc.rows, tc.cols, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			// Independent check: absmax per flat block, nearest code on x/absmax.
			bs := q.BlockSize
			am, err := q.BlockAbsmax()
			if err != nil {
				t.Fatal(err)
			}
			val := func(c int) float64 { return float64(fourBitValue(tc.opt.Type, uint8(c))) }
			for b := 0; b*bs < len(w); b++ {
				blk := w[b*bs : min(len(w), (b+1)*bs)]
				amax := 0.0
				for _, v := range blk {
					amax = math.Max(amax, math.Abs(float64(v)))
				}
				if tc.opt.CompressStatistics {
					if math.Abs(float64(am[b])-amax) > 0.01*amax {
						t.Fatalf("block %d nested absmax %v, true %v", b, am[b], amax)
					}
				} else if float64(am[b]) != amax {
					t.Fatalf("block %d absmax %v want %v", b, am[b], amax)
				}
				for j, v := range blk {
					i := b*bs + j
					x := float64(v) / amax
					want := nearest(x, val)
					if got := int(q.Code(i)); got != want && math.Abs(val(got)-x) > math.Abs(val(want)-x)+1e-6 {
						t.Fatalf("element %d: code %d, nearest %d (x=%v)", i, got, want, x)
					}
				}
			}
			y, _ := q.Dequantize()
			for i := range y {
				if want := f32(float64(fourBitValue(tc.opt.Type, q.Code(i))) * float64(am[i/bs])); float64(y[i]) != want {
					t.Fatalf("dequantized %d: %v want %v", i, y[i], want)
				}
			}
			checkTensor(t, q, w, tc.limit, tc.bpw)
		})
	}
}

func TestDynamicMap(t *testing.T) {
	m := DynamicMap()
	if m[0] > -0.99 || m[0] < -1 || m[255] != 1 {
		t.Errorf("ends %v %v", m[0], m[255])
	}
	zeros, pos := 0, 0
	for i := 1; i < 256; i++ {
		if m[i] < m[i-1] {
			t.Fatalf("not sorted at %d", i)
		}
	}
	for _, v := range m {
		switch {
		case v == 0:
			zeros++
		case v > 0:
			pos++
		}
	}
	if zeros != 1 || pos != 128 { // 1+2+...+64 per sign, plus 0 and 1
		t.Errorf("%d zeros, %d positive; want 1, 128", zeros, pos)
	}
	// Decade i holds 2^i values in 10^(i-6) * (0.1, 1), from the definition.
	for i := 0; i < 7; i++ {
		lo, hi := 0.1*math.Pow(10, float64(i-6)), math.Pow(10, float64(i-6))
		n := 0
		for _, v := range m {
			if float64(v) > lo*0.999 && float64(v) < hi*0.999 {
				n++
			}
		}
		if n != 1<<i {
			t.Errorf("decade %d: %d values, want %d", i, n, 1<<i)
		}
	}
	// First positive-decade values by hand: 1e-6 * (0.1+1)/2 = 5.5e-7.
	if got := m[128]; math.Abs(float64(got)-5.5e-7) > 1e-12 {
		t.Errorf("smallest positive %v, want 5.5e-7", got)
	}
}

func TestGroupedHandChecked(t *testing.T) {
	// GPTQ asym 2 bits on [-1, 0, 0.5, 1]: scale 2/3, zero round(1.5) = 2,
	// codes round(x/scale)+2 clamped to 3.
	g, err := RTN([]float32{-1, 0, 0.5, 1}, 1, 4, GroupedOptions{Bits: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.Codes, []byte{0, 2, 3, 3}) || g.Zeros[0] != 2 || g.Scales[0] != float32(2)/3 {
		t.Errorf("asym: codes %v zero %v scale %v", g.Codes, g.Zeros, g.Scales)
	}
	// GPTQ sym 4 bits on [-7.5, 1, 0.5, 2.5]: xmax 7.5, scale 15/15 = 1, zero 8;
	// halves round to even: -7.5 -> -8, 0.5 -> 0, 2.5 -> 2.
	g, err = RTN([]float32{-7.5, 1, 0.5, 2.5}, 1, 4, GroupedOptions{Bits: 4, Sym: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.Codes, []byte{0, 9, 8, 10}) || g.Zeros[0] != 8 || g.Scales[0] != 1 {
		t.Errorf("sym: codes %v zero %v", g.Codes, g.Zeros)
	}
	// AWQ 4 bits on [-1, 2]: scale 3/15, zero -round(-5) = 5.
	g, err = RTN([]float32{-1, 2}, 1, 2, GroupedOptions{Bits: 4, Rule: RuleAWQ})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.Codes, []byte{0, 15}) || g.Zeros[0] != 5 || g.Scales[0] != float32(3)/15 {
		t.Errorf("awq: codes %v zero %v scale %v", g.Codes, g.Zeros, g.Scales)
	}
	// PackBits, 4 bits: codes 1..8 form the GPTQ int32 word 0x87654321.
	p, _ := PackBits([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 4)
	if !bytes.Equal(p, []byte{0x21, 0x43, 0x65, 0x87}) {
		t.Errorf("PackBits 4 = % x", p)
	}
	p, _ = PackBits([]byte{7, 0, 5}, 3) // bits 111 000 101 -> 0b01_000_111, 0b1
	if !bytes.Equal(p, []byte{0x47, 0x01}) {
		t.Errorf("PackBits 3 = % x", p)
	}
}

// refGrouped recomputes GPTQ/AWQ parameters and codes in float64 with
// float32 rounding at each stored step.
func refGrouped(x []float32, bits int, sym bool, rule Rule) (codes []uint8, scale float64, zero int) {
	maxq := float64(int(1)<<bits - 1)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range x {
		lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
	}
	if rule == RuleAWQ {
		scale = f32(f32(math.Max(f32(hi-lo), f32(1e-5))) / maxq)
		zero = int(math.Min(math.Max(-math.RoundToEven(f32(lo/scale)), 0), maxq))
	} else {
		lo, hi = math.Min(lo, 0), math.Max(hi, 0)
		if sym {
			hi = math.Max(-lo, hi)
			if lo < 0 {
				lo = -hi
			}
		}
		if lo == 0 && hi == 0 {
			lo, hi = -1, 1
		}
		scale = f32(f32(hi-lo) / maxq)
		if sym {
			zero = (int(maxq) + 1) / 2
		} else {
			zero = int(math.RoundToEven(f32(-lo / scale)))
		}
	}
	for _, v := range x {
		q := math.RoundToEven(f32(float64(v)/scale)) + float64(zero)
		codes = append(codes, uint8(math.Min(math.Max(q, 0), maxq)))
	}
	return codes, scale, zero
}

func TestGrouped(t *testing.T) {
	const rows, cols = 12, 320
	w := gaussian(9, rows*cols)
	for _, tc := range []struct {
		name  string
		opt   GroupedOptions
		limit float64
	}{
		{"gptq 8 g128", GroupedOptions{Bits: 8, GroupSize: 128}, 0.01},
		{"gptq 4 g128 asym", GroupedOptions{Bits: 4, GroupSize: 128}, 0.12},
		{"gptq 4 g32 sym", GroupedOptions{Bits: 4, GroupSize: 32, Sym: true}, 0.12},
		{"gptq 3 g64", GroupedOptions{Bits: 3, GroupSize: 64}, 0.25},
		{"gptq 2 g32", GroupedOptions{Bits: 2, GroupSize: 32}, 0.6},
		{"gptq 4 per-channel", GroupedOptions{Bits: 4}, 0.16},
		{"gptq 5 g64 sym", GroupedOptions{Bits: 5, GroupSize: 64, Sym: true}, 0.07},
		{"awq 4 g128", GroupedOptions{Bits: 4, GroupSize: 128, Rule: RuleAWQ}, 0.12},
		{"awq 6 g64", GroupedOptions{Bits: 6, GroupSize: 64, Rule: RuleAWQ}, 0.035},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := RTN(w, rows, cols, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			gs := tc.opt.GroupSize
			if gs == 0 {
				gs = cols
			}
			ng := g.NumGroups()
			for r := 0; r < rows; r++ {
				for k := 0; k < ng; k++ {
					lo, hi := k*gs, min(cols, (k+1)*gs)
					codes, scale, zero := refGrouped(w[r*cols+lo:r*cols+hi], tc.opt.Bits, tc.opt.Sym, tc.opt.Rule)
					if float64(g.Scales[r*ng+k]) != scale || int(g.Zeros[r*ng+k]) != zero || !bytes.Equal(codes, g.Codes[r*cols+lo:r*cols+hi]) {
						t.Fatalf("row %d group %d: scale %v zero %d, reference %v %d", r, k, g.Scales[r*ng+k], g.Zeros[r*ng+k], scale, zero)
					}
				}
			}
			y, _ := g.Dequantize()
			for i := range y {
				k := (i/cols)*ng + (i%cols)/gs
				if want := f32(float64(g.Scales[k]) * float64(int(g.Codes[i])-int(g.Zeros[k]))); float64(y[i]) != want {
					t.Fatalf("dequantized %d: %v want %v", i, y[i], want)
				}
			}
			bpw := float64(tc.opt.Bits) + float64(32+tc.opt.Bits)*float64(ng)/float64(cols)
			if ng*tc.opt.Bits*rows%8 != 0 || rows*cols*tc.opt.Bits%8 != 0 {
				bpw = float64(8*g.Bytes()) / float64(rows*cols) // padding bytes
			}
			checkTensor(t, g, w, tc.limit, bpw)
			p, err := g.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(p.QWeight) != (rows*cols*tc.opt.Bits+7)/8 {
				t.Errorf("QWeight %d bytes", len(p.QWeight))
			}
			back, err := p.Unpack()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Codes, g.Codes) || !bytes.Equal(back.Zeros, g.Zeros) {
				t.Error("Pack/Unpack changed codes or zeros")
			}
		})
	}
}

func TestGroupedActOrder(t *testing.T) {
	// Columns permuted with g_idx give the same products as the plain layout.
	const rows, cols, gs = 4, 96, 32
	w := gaussian(10, rows*cols)
	g, err := RTN(w, rows, cols, GroupedOptions{Bits: 4, GroupSize: gs})
	if err != nil {
		t.Fatal(err)
	}
	perm := rand.New(rand.NewPCG(1, 1)).Perm(cols)
	pg := &Grouped{Bits: 4, GroupSize: gs, Rows: rows, Cols: cols, Scales: g.Scales, Zeros: g.Zeros,
		Codes: make([]uint8, rows*cols), GIdx: make([]int32, cols)}
	for j, src := range perm {
		pg.GIdx[j] = int32(src / gs)
		for r := 0; r < rows; r++ {
			pg.Codes[r*cols+j] = g.Codes[r*cols+src]
		}
	}
	x := gaussian(11, cols)
	px := make([]float32, cols)
	for j, src := range perm {
		px[j] = x[src]
	}
	for r := 0; r < rows; r++ {
		if a, b := g.DotRow(r, x), pg.DotRow(r, px); math.Abs(float64(a-b)) > 1e-4 {
			t.Errorf("row %d: %v vs act-order %v", r, a, b)
		}
	}
	y, _ := pg.Dequantize()
	checkTensor(t, pg, y, 1e-7, float64(8*pg.Bytes())/float64(rows*cols))
	for r := 0; r < rows; r++ {
		for j, src := range perm {
			if want := g.Scales[r*3+src/gs] * float32(int(g.Codes[r*cols+src])-int(g.Zeros[r*3+src/gs])); y[r*cols+j] != want {
				t.Fatalf("act-order dequant [%d,%d]", r, j)
			}
		}
	}
}

func TestPackBitsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	for bits := 1; bits <= 8; bits++ {
		for _, n := range []int{0, 1, 7, 64, 333} {
			codes := make([]uint8, n)
			for i := range codes {
				codes[i] = uint8(r.IntN(1 << bits))
			}
			p, err := PackBits(codes, bits)
			if err != nil {
				t.Fatal(err)
			}
			back, err := UnpackBits(p, bits, n)
			if err != nil || !bytes.Equal(back, codes) {
				t.Fatalf("bits %d n %d: round trip failed (%v)", bits, n, err)
			}
		}
	}
}

func TestTensorErrors(t *testing.T) {
	nanW := []float32{1, 2, float32(math.NaN()), 4}
	infW := []float32{1, float32(math.Inf(1)), 3, 4}
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"int8 nan", func() error { _, err := QuantizeInt8(nanW, 2, 2); return err }, ErrNonFinite},
		{"int8 shape", func() error { _, err := QuantizeInt8(make([]float32, 5), 2, 2); return err }, ErrSize},
		{"bnb4 inf", func() error { _, err := QuantizeBnb4(infW, 2, 2, Bnb4Options{}); return err }, ErrNonFinite},
		{"bnb4 blocksize", func() error { _, err := QuantizeBnb4(make([]float32, 4), 2, 2, Bnb4Options{BlockSize: 48}); return err }, ErrParam},
		{"bnb4 zero rows", func() error { _, err := QuantizeBnb4(nil, 0, 2, Bnb4Options{}); return err }, ErrSize},
		{"rtn nan", func() error { _, err := RTN(nanW, 1, 4, GroupedOptions{Bits: 4}); return err }, ErrNonFinite},
		{"rtn bits", func() error { _, err := RTN(make([]float32, 4), 1, 4, GroupedOptions{Bits: 9}); return err }, ErrParam},
		{"rtn awq sym", func() error {
			_, err := RTN(make([]float32, 4), 1, 4, GroupedOptions{Bits: 4, Sym: true, Rule: RuleAWQ})
			return err
		}, ErrParam},
		{"grouped bad code", func() error {
			_, err := (&Grouped{Bits: 2, Rows: 1, Cols: 2, Codes: []uint8{0, 4}, Scales: []float32{1}, Zeros: []uint8{0}}).Dequantize()
			return err
		}, ErrParam},
		{"grouped short scales", func() error {
			_, err := (&Grouped{Bits: 2, GroupSize: 1, Rows: 1, Cols: 2, Codes: []uint8{0, 1}, Scales: []float32{1}, Zeros: []uint8{0, 0}}).Dequantize()
			return err
		}, ErrSize},
		{"grouped g_idx range", func() error {
			g := &Grouped{Bits: 2, Rows: 1, Cols: 2, Codes: []uint8{0, 1}, Scales: []float32{1}, Zeros: []uint8{0}, GIdx: []int32{0, 1}}
			return g.Validate()
		}, ErrParam},
		{"grouped nan scale", func() error {
			g := &Grouped{Bits: 2, Rows: 1, Cols: 2, Codes: []uint8{0, 1}, Scales: []float32{float32(math.NaN())}, Zeros: []uint8{0}}
			return g.Validate()
		}, ErrNonFinite},
		{"unpack short", func() error { _, err := UnpackBits([]byte{1}, 4, 3); return err }, ErrSize},
		{"pack overflow", func() error { _, err := PackBits([]byte{4}, 2); return err }, ErrParam},
		{"bnb4 short packed", func() error {
			_, err := (&Bnb4{Rows: 1, Cols: 4, BlockSize: 64, Packed: []byte{0}, Absmax: []float32{1}}).Dequantize()
			return err
		}, ErrSize},
		{"int8 short absmax", func() error {
			_, err := (&Int8{Rows: 2, Cols: 1, Codes: []int8{1, 2}, Absmax: []float32{1}}).Dequantize()
			return err
		}, ErrSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}
