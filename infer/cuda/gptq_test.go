//go:build cuda

package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"gorgonia.org/cu"

	"qllama/convert/gptq"
	"qllama/convert/quant"
)

// gptqProblem returns a weight [rows, cols] (normal, a few outliers) and n
// calibration inputs [n, cols] with columns of very different scales and a
// shared component, so that act-order and the error feedback matter.
func gptqProblem(rows, cols, n int, seed uint64) (w, x []float32) {
	rng := rand.New(rand.NewPCG(seed, 99))
	w = make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.02)
		if rng.IntN(200) == 0 {
			w[i] *= 6
		}
	}
	scale := make([]float64, cols)
	for j := range scale {
		scale[j] = math.Exp(rng.NormFloat64() * 0.7)
	}
	x = make([]float32, n*cols)
	for i := 0; i < n; i++ {
		c := rng.NormFloat64()
		for j := 0; j < cols; j++ {
			x[i*cols+j] = float32(scale[j] * (rng.NormFloat64() + 0.4*c))
		}
	}
	return w, x
}

func gptqHessian(t testing.TB, x []float32, n, cols int) *gptq.Hessian {
	h := gptq.NewHessian(cols)
	if err := h.Add(x, n); err != nil {
		t.Fatal(err)
	}
	return h
}

// gptqOutErr is Σ over the inputs of ||(W - Q) x||².
func gptqOutErr(t testing.TB, w []float32, g *quant.Grouped, x []float32, n int) float64 {
	q, err := g.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	rows, cols := g.Rows, g.Cols
	e := make([]float64, len(w))
	for i := range w {
		e[i] = float64(w[i]) - float64(q[i])
	}
	var sum float64
	for s := 0; s < n; s++ {
		xs := x[s*cols : (s+1)*cols]
		for r := 0; r < rows; r++ {
			var v float64
			for j, xv := range xs {
				v += e[r*cols+j] * float64(xv)
			}
			sum += v * v
		}
	}
	return sum
}

// gptqCompare checks a GPU result against the CPU's on the same problem and
// returns the fraction of identical codes.
func gptqCompare(t *testing.T, w []float32, x []float32, n int, cpu, gpu *quant.Grouped, cst, gst gptq.Stats, minSame float64) float64 {
	t.Helper()
	if err := gpu.Validate(); err != nil {
		t.Fatal(err)
	}
	if gpu.Bits != cpu.Bits || gpu.GroupSize != cpu.GroupSize || gpu.Sym != cpu.Sym || gpu.Rows != cpu.Rows || gpu.Cols != cpu.Cols {
		t.Fatalf("GPU header %d bits g%d sym %v [%d %d], CPU %d bits g%d sym %v [%d %d]", gpu.Bits, gpu.GroupSize, gpu.Sym, gpu.Rows, gpu.Cols,
			cpu.Bits, cpu.GroupSize, cpu.Sym, cpu.Rows, cpu.Cols)
	}
	if len(gpu.GIdx) != len(cpu.GIdx) {
		t.Fatalf("GPU g_idx of %d, CPU %d", len(gpu.GIdx), len(cpu.GIdx))
	}
	for j := range cpu.GIdx {
		if gpu.GIdx[j] != cpu.GIdx[j] {
			t.Fatalf("g_idx[%d]: GPU %d, CPU %d", j, gpu.GIdx[j], cpu.GIdx[j])
		}
	}
	if gst.DeadCols != cst.DeadCols || gst.DampRaises != cst.DampRaises {
		t.Errorf("GPU dead columns %d, damp raises %d; CPU %d, %d", gst.DeadCols, gst.DampRaises, cst.DeadCols, cst.DampRaises)
	}
	if math.Abs(gst.Damp-cst.Damp) > 1e-9*math.Abs(cst.Damp) {
		t.Errorf("GPU damp %g, CPU %g", gst.Damp, cst.Damp)
	}
	same := 0
	for i := range cpu.Codes {
		if gpu.Codes[i] == cpu.Codes[i] {
			same++
		}
	}
	frac := float64(same) / float64(len(cpu.Codes))
	if frac < minSame {
		t.Errorf("%.4f%% of the codes match the CPU's (want >= %.2f%%)", 100*frac, 100*minSame)
	}
	close := 0
	for k := range cpu.Scales {
		cs, gs := float64(cpu.Scales[k]), float64(gpu.Scales[k])
		if math.Abs(cs-gs) <= 1e-5*math.Abs(cs) && cpu.Zeros[k] == gpu.Zeros[k] {
			close++
		}
	}
	gfrac := float64(close) / float64(len(cpu.Scales))
	if gfrac < minSame {
		t.Errorf("%.4f%% of the groups' scale/zero match the CPU's (want >= %.2f%%)", 100*gfrac, 100*minSame)
	}
	ec, eg := gptqOutErr(t, w, cpu, x, n), gptqOutErr(t, w, gpu, x, n)
	if !(eg <= ec*1.01+1e-12) {
		t.Errorf("output error GPU %.6g, CPU %.6g (more than 1%% worse)", eg, ec)
	}
	if !(math.Abs(gst.Loss-cst.Loss) <= 0.01*cst.Loss+1e-12) {
		t.Errorf("loss GPU %.6g, CPU %.6g", gst.Loss, cst.Loss)
	}
	t.Logf("codes equal %.4f%%, groups equal %.4f%%, output error GPU %.5g CPU %.5g, loss GPU %.5g CPU %.5g, damp %.3g",
		100*frac, 100*gfrac, eg, ec, gst.Loss, cst.Loss, gst.Damp)
	return frac
}

// TestGPTQMatchesCPU runs the GPU GPTQ and gptq.Quantize on the same
// Hessian for bits 2, 3, 4, 8, groups 32, 128 and per channel, sym and
// asym, without act-order and with act-order static and dynamic groups.
func TestGPTQMatchesCPU(t *testing.T) {
	const rows, cols, n = 96, 512, 1024
	w, x := gptqProblem(rows, cols, n, 1)
	h := gptqHessian(t, x, n, cols)
	ctx := context.Background()
	worst := 1.0
	for _, bits := range []int{2, 3, 4, 8} {
		for _, gs := range []int{32, 128, 0} {
			for _, sym := range []bool{false, true} {
				for _, order := range []string{"", "act-order static", "act-order dynamic"} {
					opt := gptq.Options{Bits: bits, GroupSize: gs, Sym: sym, ActOrder: order != "", StaticGroups: order == "act-order static"}
					name := fmt.Sprintf("%dbit g%d sym=%v %s", bits, gs, sym, order)
					t.Run(name, func(t *testing.T) {
						cpu, cst, err := gptq.Quantize(ctx, w, rows, cols, h, opt)
						if err != nil {
							t.Fatal(err)
						}
						gpu, gst, err := dev.GPTQHessian(ctx, w, rows, cols, h, opt)
						if err != nil {
							t.Fatal(err)
						}
						minSame := 0.99
						if bits < 4 {
							minSame = 0.97
						}
						worst = min(worst, gptqCompare(t, w, x, n, cpu, gpu, cst, gst, minSame))
					})
				}
			}
		}
	}
	t.Logf("lowest fraction of identical codes: %.4f%%", 100*worst)
}

// TestGPTQBlocks: lazy blocks larger than the kernel holds, groups larger
// than a block, and groups that straddle blocks all give the CPU's result.
func TestGPTQBlocks(t *testing.T) {
	const rows, cols, n = 40, 640, 800
	w, x := gptqProblem(rows, cols, n, 5)
	h := gptqHessian(t, x, n, cols)
	ctx := context.Background()
	for _, opt := range []gptq.Options{
		{Bits: 4, GroupSize: 64, BlockSize: 512},
		{Bits: 4, GroupSize: 320, BlockSize: 1024, ActOrder: true},
		{Bits: 3, GroupSize: 96, BlockSize: 64},
		{Bits: 4, GroupSize: 40, BlockSize: 48, ActOrder: true},
		{Bits: 8, BlockSize: 1000, Sym: true},
		{Bits: 4, GroupSize: 100, BlockSize: 7, ActOrder: true, StaticGroups: true},
	} {
		t.Run(fmt.Sprintf("%dbit g%d block %d act %v static %v", opt.Bits, opt.GroupSize, opt.BlockSize, opt.ActOrder, opt.StaticGroups), func(t *testing.T) {
			cpu, cst, err := gptq.Quantize(ctx, w, rows, cols, h, opt)
			if err != nil {
				t.Fatal(err)
			}
			gpu, gst, err := dev.GPTQHessian(ctx, w, rows, cols, h, opt)
			if err != nil {
				t.Fatal(err)
			}
			gptqCompare(t, w, x, n, cpu, gpu, cst, gst, 0.97)
		})
	}
}

// TestGPTQDeadColumns: inputs that are always zero give dead columns (zero
// weights, H_jj = 1) as on the CPU.
func TestGPTQDeadColumns(t *testing.T) {
	const rows, cols, n = 64, 256, 512
	w, x := gptqProblem(rows, cols, n, 2)
	dead := []int{0, 17, 130, 255}
	for i := 0; i < n; i++ {
		for _, j := range dead {
			x[i*cols+j] = 0
		}
	}
	h := gptqHessian(t, x, n, cols)
	ctx := context.Background()
	for _, opt := range []gptq.Options{
		{Bits: 4, GroupSize: 32},
		{Bits: 4, GroupSize: 32, ActOrder: true},
		{Bits: 3, GroupSize: 64, ActOrder: true, StaticGroups: true, Sym: true},
	} {
		t.Run(fmt.Sprintf("%dbit g%d act %v static %v", opt.Bits, opt.GroupSize, opt.ActOrder, opt.StaticGroups), func(t *testing.T) {
			cpu, cst, err := gptq.Quantize(ctx, w, rows, cols, h, opt)
			if err != nil {
				t.Fatal(err)
			}
			gpu, gst, err := dev.GPTQHessian(ctx, w, rows, cols, h, opt)
			if err != nil {
				t.Fatal(err)
			}
			if gst.DeadCols != len(dead) {
				t.Errorf("dead columns %d, want %d", gst.DeadCols, len(dead))
			}
			gptqCompare(t, w, x, n, cpu, gpu, cst, gst, 0.97)
		})
	}
}

// uploadHsum uploads Σ x xᵀ of x [n, cols] as float32 (the production
// input of Device.GPTQ), from the CPU accumulator's H = 2/n Σ x xᵀ.
func uploadHsum(t testing.TB, h *gptq.Hessian) cu.DevicePtr {
	m := h.Matrix()
	s := make([]float32, len(m))
	f := float64(h.N()) / 2
	for i, v := range m {
		s[i] = float32(v * f)
	}
	defer dev.bind()()
	p, err := upload(dev, s, "test Hessian sum")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freeDev(p cu.DevicePtr) {
	defer dev.bind()()
	cu.MemFree(p)
}

// TestGPTQDeviceSum runs the production entry point (a float32 Σ x xᵀ on
// the device) against the CPU on the float64 Hessian: float32 rounding of H
// changes some codes, not the quality.
func TestGPTQDeviceSum(t *testing.T) {
	const rows, cols, n = 96, 512, 1024
	w, x := gptqProblem(rows, cols, n, 3)
	h := gptqHessian(t, x, n, cols)
	hs := uploadHsum(t, h)
	defer freeDev(hs)
	ctx := context.Background()
	for _, opt := range []gptq.Options{
		{Bits: 4, GroupSize: 128},
		{Bits: 4, GroupSize: 128, ActOrder: true},
		{Bits: 8, Sym: true, ActOrder: true, StaticGroups: true},
	} {
		t.Run(fmt.Sprintf("%dbit g%d act %v", opt.Bits, opt.GroupSize, opt.ActOrder), func(t *testing.T) {
			cpu, cst, err := gptq.Quantize(ctx, w, rows, cols, h, opt)
			if err != nil {
				t.Fatal(err)
			}
			gpu, gst, err := dev.GPTQ(ctx, w, rows, cols, hs, n, opt)
			if err != nil {
				t.Fatal(err)
			}
			if err := gpu.Validate(); err != nil {
				t.Fatal(err)
			}
			ec, eg := gptqOutErr(t, w, cpu, x, n), gptqOutErr(t, w, gpu, x, n)
			if !(eg <= ec*1.02) {
				t.Errorf("output error GPU (float32 Σxxᵀ) %.6g, CPU %.6g", eg, ec)
			}
			same := 0
			for i := range cpu.Codes {
				if cpu.Codes[i] == gpu.Codes[i] {
					same++
				}
			}
			t.Logf("codes equal %.3f%%, output error GPU %.5g CPU %.5g, loss GPU %.5g CPU %.5g, damp %.3g / %.3g",
				100*float64(same)/float64(len(cpu.Codes)), eg, ec, gst.Loss, cst.Loss, gst.Damp, cst.Damp)
		})
	}
}

// TestGPTQDampRaise: a Σ x xᵀ that is not positive definite (one negative
// diagonal entry of 5% of the mean, its row and column otherwise zero) fails
// the factorisation at dampening 1% and passes after one ×10 raise.
func TestGPTQDampRaise(t *testing.T) {
	const rows, cols, n = 32, 128, 512
	w, x := gptqProblem(rows, cols, n, 4)
	h := gptqHessian(t, x, n, cols)
	m := h.Matrix()
	const j0 = 37
	var mean float64
	for j := 0; j < cols; j++ {
		if j != j0 {
			mean += m[j*cols+j]
		}
	}
	mean /= cols - 1
	s := make([]float32, cols*cols)
	for i := 0; i < cols; i++ {
		for j := 0; j < cols; j++ {
			v := m[i*cols+j]
			if i == j0 || j == j0 {
				v = 0
			}
			s[i*cols+j] = float32(v * n / 2)
		}
	}
	s[j0*cols+j0] = float32(-0.05 * mean * n / 2)
	var hs cu.DevicePtr
	func() {
		defer dev.bind()()
		var err error
		if hs, err = upload(dev, s, "test Hessian sum"); err != nil {
			t.Fatal(err)
		}
	}()
	defer freeDev(hs)
	for _, act := range []bool{false, true} {
		g, st, err := dev.GPTQ(context.Background(), w, rows, cols, hs, n, gptq.Options{Bits: 4, GroupSize: 32, ActOrder: act})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Validate(); err != nil {
			t.Fatal(err)
		}
		if st.DampRaises != 1 {
			t.Errorf("act-order %v: %d dampening raises (damp %g), want 1", act, st.DampRaises, st.Damp)
		}
		t.Logf("act-order %v: damp %.4g after %d raises (mean diag %.4g), loss %.4g", act, st.Damp, st.DampRaises, mean, st.Loss)
	}

	// A rank-1 Hessian with next to no dampening (the CPU's TestDampRaise):
	// both must succeed; their raise counts may differ (rounding decides).
	const c1 = 32
	w1, _ := gptqProblem(4, c1, 1, 9)
	h1 := gptq.NewHessian(c1)
	x1 := make([]float32, c1)
	for j := range x1 {
		x1[j] = float32(j%3) + 1
	}
	for i := 0; i < 4; i++ {
		if err := h1.Add(x1, 1); err != nil {
			t.Fatal(err)
		}
	}
	opt := gptq.Options{Bits: 4, Damp: 1e-18}
	_, cst, err := gptq.Quantize(context.Background(), w1, 4, c1, h1, opt)
	if err != nil {
		t.Fatal(err)
	}
	g1, gst, err := dev.GPTQHessian(context.Background(), w1, 4, c1, h1, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := g1.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Logf("rank-1 Hessian: GPU %d raises (damp %.3g), CPU %d (damp %.3g)", gst.DampRaises, gst.Damp, cst.DampRaises, cst.Damp)
}

// TestGPTQErrors: invalid inputs are refused with gptq.ErrGPTQ, a
// cancelled context stops the run.
func TestGPTQErrors(t *testing.T) {
	const rows, cols, n = 8, 64, 128
	w, x := gptqProblem(rows, cols, n, 6)
	h := gptqHessian(t, x, n, cols)
	ctx := context.Background()
	bad := append([]float32(nil), w...)
	bad[5] = float32(math.NaN())
	for _, c := range []struct {
		name string
		w    []float32
		cols int
		opt  gptq.Options
	}{
		{"1 bit", w, cols, gptq.Options{Bits: 1}},
		{"9 bits", w, cols, gptq.Options{Bits: 9}},
		{"negative group", w, cols, gptq.Options{Bits: 4, GroupSize: -1}},
		{"negative damp", w, cols, gptq.Options{Bits: 4, Damp: -1}},
		{"short weight", w[:len(w)-1], cols, gptq.Options{Bits: 4}},
		{"NaN weight", bad, cols, gptq.Options{Bits: 4}},
		{"hessian width", w, cols / 2, gptq.Options{Bits: 4}},
	} {
		if _, _, err := dev.GPTQHessian(ctx, c.w, rows, c.cols, h, c.opt); !errors.Is(err, gptq.ErrGPTQ) {
			t.Errorf("%s: error %v, want gptq.ErrGPTQ", c.name, err)
		}
	}
	if _, _, err := dev.GPTQ(ctx, w, rows, cols, 0, n, gptq.Options{Bits: 4}); !errors.Is(err, gptq.ErrGPTQ) {
		t.Errorf("no Hessian buffer: error %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := dev.GPTQHessian(cctx, w, rows, cols, h, gptq.Options{Bits: 4}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: error %v", err)
	}
}

// TestGPTQTiming logs the time of a Llama-3.2-1B down_proj sized problem
// (2048 x 8192, Σ x xᵀ of 2048 random inputs made on the device with cuBLAS).
func TestGPTQTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const rows, cols, n = 2048, 8192, 2048
	w, x := gptqProblem(rows, cols, n, 7)
	var dx, hs cu.DevicePtr
	func() {
		defer dev.bind()()
		var err error
		if dx, err = upload(dev, x, "timing inputs"); err != nil {
			t.Fatal(err)
		}
		if hs, err = dev.alloc(int64(cols)*cols*4, "timing Hessian sum"); err != nil {
			t.Fatal(err)
		}
		bl, err := dev.blasHandle()
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.fence(); err != nil {
			t.Fatal(err)
		}
		// x row-major [n, cols] is column-major cols x n: hsum = X Xᵀ there.
		X := mat{ptr: dx, dt: dtF32, ld: cols}
		if err := bl.gemm(opN, opT, cols, cols, n, 1, X, X, 0, mat{ptr: hs, dt: dtF32, ld: cols}, 1, compute32F); err != nil {
			t.Fatal(err)
		}
		if err := dev.st.sync(); err != nil {
			t.Fatal(err)
		}
	}()
	defer freeDev(dx)
	defer freeDev(hs)
	if p, err := dev.CusolverPath(); err == nil {
		t.Logf("cuSOLVER: %s", p)
	}
	for _, opt := range []gptq.Options{
		{Bits: 4, GroupSize: 128},
		{Bits: 4, GroupSize: 128, ActOrder: true},
		{Bits: 4, GroupSize: 128, ActOrder: true, StaticGroups: true, Sym: true},
	} {
		for run := 0; run < 2; run++ {
			t0 := time.Now()
			g, st, err := dev.GPTQ(context.Background(), w, rows, cols, hs, n, opt)
			if err != nil {
				t.Fatal(err)
			}
			el := time.Since(t0)
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			t.Logf("GPTQ %dx%d %dbit g%d act-order %v static %v (run %d): %v, loss %.4g, damp %.3g",
				rows, cols, opt.Bits, opt.GroupSize, opt.ActOrder, opt.StaticGroups, run, el, st.Loss, st.Damp)
		}
	}
}
