package gptq

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"qllama/convert/quant"
)

// naiveParams is Quantizer.find_params written out again for the reference.
func naiveParams(x []float64, bits int, sym bool) (scale, zero float64) {
	maxq := float32(int(1)<<bits - 1)
	var lo, hi float32
	for _, v := range x {
		lo = min(lo, float32(v))
		hi = max(hi, float32(v))
	}
	if sym {
		if -lo > hi {
			hi = -lo
		}
		if lo < 0 {
			lo = -hi
		}
	}
	if lo == 0 && hi == 0 {
		lo, hi = -1, 1
	}
	s := (hi - lo) / maxq
	if sym {
		return float64(s), float64((maxq + 1) / 2)
	}
	return float64(s), math.RoundToEven(float64(-lo / s))
}

// naiveGPTQ is the published algorithm without lazy batching or Cholesky:
// one column at a time, the error (w-q)/[H⁻¹]_ii times row i of H⁻¹ is
// subtracted from the remaining columns, and H⁻¹ is updated by Gaussian
// elimination of row/column i (the OBS update). Everything in float64.
func naiveGPTQ(w []float64, rows, cols int, x []float64, n int, o Options) (codes []uint8, scales []float32, zeros []uint8, gidx []int32) {
	H := make([]float64, cols*cols)
	for t := 0; t < n; t++ {
		for i := 0; i < cols; i++ {
			for j := 0; j < cols; j++ {
				H[i*cols+j] += 2 / float64(n) * x[t*cols+i] * x[t*cols+j]
			}
		}
	}
	W := append([]float64(nil), w...)
	for j := 0; j < cols; j++ {
		if H[j*cols+j] == 0 {
			H[j*cols+j] = 1
			for r := 0; r < rows; r++ {
				W[r*cols+j] = 0
			}
		}
	}
	gs := o.GroupSize
	ng := 1
	if gs > 0 {
		ng = (cols + gs - 1) / gs
	}
	scales, zeros = make([]float32, rows*ng), make([]uint8, rows*ng)
	static := gs == 0 || o.StaticGroups
	if static {
		for r := 0; r < rows; r++ {
			for k := 0; k < ng; k++ {
				lo, hi := 0, cols
				if gs > 0 {
					lo, hi = k*gs, min(cols, (k+1)*gs)
				}
				s, z := naiveParams(W[r*cols+lo:r*cols+hi], o.Bits, o.Sym)
				scales[r*ng+k], zeros[r*ng+k] = float32(s), uint8(z)
			}
		}
	}
	order := make([]int, cols)
	for j := range order {
		order[j] = j
	}
	if o.ActOrder {
		sort.SliceStable(order, func(a, b int) bool { return H[order[a]*cols+order[a]] > H[order[b]*cols+order[b]] })
	}
	var mean float64
	for j := 0; j < cols; j++ {
		mean += H[j*cols+j]
	}
	damp := o.Damp * mean / float64(cols)
	for j := 0; j < cols; j++ {
		H[j*cols+j] += damp
	}
	Hinv := gaussJordanInverse(H, cols)
	if o.ActOrder && gs > 0 && !static {
		gidx = make([]int32, cols)
		for i, j := range order {
			gidx[j] = int32(i / gs)
		}
	}
	codes = make([]uint8, rows*cols)
	maxq := float64(int(1)<<o.Bits - 1)
	cur := make([][2]float64, rows)
	for i, j := range order {
		if !static && i%gs == 0 {
			for r := 0; r < rows; r++ {
				grp := make([]float64, 0, gs)
				for _, jj := range order[i:min(cols, i+gs)] {
					grp = append(grp, W[r*cols+jj])
				}
				s, z := naiveParams(grp, o.Bits, o.Sym)
				cur[r] = [2]float64{float64(float32(s)), z}
				scales[r*ng+i/gs], zeros[r*ng+i/gs] = float32(s), uint8(z)
			}
		}
		d := Hinv[j*cols+j]
		for r := 0; r < rows; r++ {
			var s, z float64
			if static {
				k := 0
				if gs > 0 {
					k = j / gs
				}
				s, z = float64(scales[r*ng+k]), float64(zeros[r*ng+k])
			} else {
				s, z = cur[r][0], cur[r][1]
			}
			q := min(max(math.RoundToEven(float64(float32(W[r*cols+j])/float32(s)))+z, 0), maxq) // torch.round(x/scale) in float32
			codes[r*cols+j] = uint8(q)
			e := (W[r*cols+j] - s*(q-z)) / d
			for _, jj := range order[i+1:] {
				W[r*cols+jj] -= e * Hinv[j*cols+jj]
			}
		}
		// Remove j from the inverse Hessian of the remaining columns.
		for _, a := range order[i+1:] {
			f := Hinv[a*cols+j] / d
			for _, b := range order[i+1:] {
				Hinv[a*cols+b] -= f * Hinv[j*cols+b]
			}
		}
	}
	return codes, scales, zeros, gidx
}

func gaussJordanInverse(a []float64, n int) []float64 {
	m := append([]float64(nil), a...)
	inv := make([]float64, n*n)
	for i := 0; i < n; i++ {
		inv[i*n+i] = 1
	}
	for c := 0; c < n; c++ {
		p := c
		for r := c + 1; r < n; r++ {
			if math.Abs(m[r*n+c]) > math.Abs(m[p*n+c]) {
				p = r
			}
		}
		for k := 0; k < n; k++ {
			m[c*n+k], m[p*n+k] = m[p*n+k], m[c*n+k]
			inv[c*n+k], inv[p*n+k] = inv[p*n+k], inv[c*n+k]
		}
		f := 1 / m[c*n+c]
		for k := 0; k < n; k++ {
			m[c*n+k] *= f
			inv[c*n+k] *= f
		}
		for r := 0; r < n; r++ {
			if r != c && m[r*n+c] != 0 {
				g := m[r*n+c]
				for k := 0; k < n; k++ {
					m[r*n+k] -= g * m[c*n+k]
					inv[r*n+k] -= g * inv[c*n+k]
				}
			}
		}
	}
	return inv
}

// problem returns weights and correlated inputs (x = z·A with a random
// mixing matrix, a few columns with large magnitude, one dead column).
func problem(rows, cols, n int, seed uint64) (w []float32, x []float32) {
	rng := rand.New(rand.NewPCG(seed, 7))
	w = make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.05)
	}
	mix := make([]float64, cols*cols)
	for i := range mix {
		mix[i] = rng.NormFloat64() / math.Sqrt(float64(cols))
		if i%(cols+1) == 0 {
			mix[i] += 1
		}
	}
	x = make([]float32, n*cols)
	z := make([]float64, cols)
	for t := 0; t < n; t++ {
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for j := 0; j < cols; j++ {
			var s float64
			for i := 0; i < cols; i++ {
				s += z[i] * mix[i*cols+j]
			}
			if j%17 == 3 {
				s *= 8 // outlier channels
			}
			if j == cols-2 {
				s = 0 // dead column
			}
			x[t*cols+j] = float32(s)
		}
	}
	return w, x
}

func TestMatchesNaive(t *testing.T) {
	const rows, cols, n = 12, 96, 400
	w, x := problem(rows, cols, n, 1)
	w64 := make([]float64, len(w))
	for i, v := range w {
		w64[i] = float64(v)
	}
	x64 := make([]float64, len(x))
	for i, v := range x {
		x64[i] = float64(v)
	}
	h := NewHessian(cols)
	if err := h.Add(x[:n/2*cols], n/2); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(x[n/2*cols:], n-n/2); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		o    Options
	}{
		{"4bit g32 asym", Options{Bits: 4, GroupSize: 32}},
		{"4bit g32 asym block 16", Options{Bits: 4, GroupSize: 32, BlockSize: 16}},
		{"3bit g64 sym block 40", Options{Bits: 3, GroupSize: 64, Sym: true, BlockSize: 40}},
		{"2bit per-channel block 32", Options{Bits: 2, BlockSize: 32}},
		{"8bit g32 sym", Options{Bits: 8, GroupSize: 32, Sym: true}},
		{"4bit g32 act-order static", Options{Bits: 4, GroupSize: 32, ActOrder: true, StaticGroups: true, BlockSize: 32}},
		{"3bit g32 act-order dynamic", Options{Bits: 3, GroupSize: 32, ActOrder: true, BlockSize: 64}},
		{"4bit per-channel act-order", Options{Bits: 4, ActOrder: true, BlockSize: 20}},
		{"2bit g32 damp 0.1", Options{Bits: 2, GroupSize: 32, Damp: 0.1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, st, err := Quantize(context.Background(), w, rows, cols, h, c.o)
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			if st.DeadCols != 1 {
				t.Errorf("dead columns %d, want 1", st.DeadCols)
			}
			o, _ := c.o.withDefaults()
			codes, scales, zeros, gidx := naiveGPTQ(w64, rows, cols, x64, n, o)
			diff := 0
			for i := range codes {
				if codes[i] != g.Codes[i] {
					diff++
				}
			}
			if diff > 0 {
				t.Errorf("%d of %d codes differ from the naive float64 GPTQ", diff, len(codes))
			}
			for i := range scales {
				if scales[i] != g.Scales[i] || zeros[i] != g.Zeros[i] {
					t.Fatalf("group %d: scale/zero %v/%d, naive %v/%d", i, g.Scales[i], g.Zeros[i], scales[i], zeros[i])
				}
			}
			if len(gidx) != len(g.GIdx) {
				t.Fatalf("g_idx length %d, naive %d", len(g.GIdx), len(gidx))
			}
			for j := range gidx {
				if gidx[j] != g.GIdx[j] {
					t.Fatalf("g_idx[%d] = %d, naive %d", j, g.GIdx[j], gidx[j])
				}
			}
			// GPTQ must beat round-to-nearest on its own calibration data.
			rtn, err := quant.RTN(w, rows, cols, quant.GroupedOptions{Bits: c.o.Bits, GroupSize: c.o.GroupSize, Sym: c.o.Sym})
			if err != nil {
				t.Fatal(err)
			}
			eg, er := outputErr(t, w, g, x, n), outputErr(t, w, rtn, x, n)
			if !(eg < er) {
				t.Errorf("output error GPTQ %.4g, RTN %.4g", eg, er)
			}
			t.Logf("output error GPTQ %.4g RTN %.4g loss %.4g damp %.3g", eg, er, st.Loss, st.Damp)
		})
	}
}

// outputErr is Σ_t ||(W - deq) x_t||².
func outputErr(t *testing.T, w []float32, g *quant.Grouped, x []float32, n int) float64 {
	t.Helper()
	deq, err := g.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	rows, cols := g.Rows, g.Cols
	var sum float64
	for tt := 0; tt < n; tt++ {
		xr := x[tt*cols : (tt+1)*cols]
		for r := 0; r < rows; r++ {
			var d float64
			for j, xv := range xr {
				d += (float64(w[r*cols+j]) - float64(deq[r*cols+j])) * float64(xv)
			}
			sum += d * d
		}
	}
	return sum
}

// With uncorrelated inputs the inverse Hessian is diagonal, nothing is
// propagated, and GPTQ is round to nearest.
func TestDiagonalHessianIsRTN(t *testing.T) {
	const rows, cols = 16, 128
	w, _ := problem(rows, cols, 1, 3)
	h := NewHessian(cols)
	x := make([]float32, cols)
	for j := 0; j < cols; j++ {
		clear(x)
		x[j] = float32(1 + j%5)
		if err := h.Add(x, 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []Options{{Bits: 4, GroupSize: 32}, {Bits: 3, GroupSize: 64, Sym: true}, {Bits: 2}, {Bits: 8, GroupSize: 128}} {
		g, _, err := Quantize(context.Background(), w, rows, cols, h, o)
		if err != nil {
			t.Fatal(err)
		}
		r, err := quant.RTN(w, rows, cols, quant.GroupedOptions{Bits: o.Bits, GroupSize: o.GroupSize, Sym: o.Sym})
		if err != nil {
			t.Fatal(err)
		}
		for i := range r.Codes {
			if r.Codes[i] != g.Codes[i] {
				t.Fatalf("%+v: code %d is %d, RTN %d", o, i, g.Codes[i], r.Codes[i])
			}
		}
		for i := range r.Scales {
			if r.Scales[i] != g.Scales[i] || r.Zeros[i] != g.Zeros[i] {
				t.Fatalf("%+v: group %d differs from RTN", o, i)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	w, x := problem(4, 32, 8, 5)
	h := NewHessian(32)
	if err := h.Add(x, 8); err != nil {
		t.Fatal(err)
	}
	nan := append([]float32(nil), w...)
	nan[5] = float32(math.NaN())
	empty := NewHessian(32)
	cases := []struct {
		name string
		w    []float32
		rows int
		h    *Hessian
		o    Options
	}{
		{"bits 1", w, 4, h, Options{Bits: 1}},
		{"bits 9", w, 4, h, Options{Bits: 9}},
		{"negative group", w, 4, h, Options{Bits: 4, GroupSize: -2}},
		{"negative damp", w, 4, h, Options{Bits: 4, Damp: -1}},
		{"wrong length", w[:10], 4, h, Options{Bits: 4}},
		{"nil hessian", w, 4, nil, Options{Bits: 4}},
		{"hessian width", w, 4, NewHessian(16), Options{Bits: 4}},
		{"empty hessian", w, 4, empty, Options{Bits: 4}},
		{"nan weight", nan, 4, h, Options{Bits: 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := Quantize(context.Background(), c.w, c.rows, 32, c.h, c.o); !errors.Is(err, ErrGPTQ) {
				t.Fatalf("err = %v, want ErrGPTQ", err)
			}
		})
	}
	if err := h.Add(x[:5], 1); err == nil {
		t.Error("short input accepted")
	}
	bad := append([]float32(nil), x[:32]...)
	bad[0] = float32(math.Inf(1))
	if err := h.Add(bad, 1); !errors.Is(err, ErrGPTQ) {
		t.Errorf("inf input: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Quantize(ctx, w, 4, 32, h, Options{Bits: 4}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// A Hessian that is singular (rank-deficient inputs) with zero dampening
// must get a raised dampening, not fail.
func TestDampRaise(t *testing.T) {
	const cols = 32
	w, _ := problem(4, cols, 1, 9)
	h := NewHessian(cols)
	x := make([]float32, cols)
	for j := range x {
		x[j] = float32(j%3) + 1
	}
	for i := 0; i < 4; i++ { // rank 1
		if err := h.Add(x, 1); err != nil {
			t.Fatal(err)
		}
	}
	_, st, err := Quantize(context.Background(), w, 4, cols, h, Options{Bits: 4, Damp: 1e-18})
	if err != nil {
		t.Fatal(err)
	}
	if st.DampRaises == 0 {
		t.Errorf("no dampening raise for a rank-1 Hessian (damp %g)", st.Damp)
	}
}
