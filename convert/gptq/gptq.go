// Package gptq implements GPTQ (Frantar et al., "GPTQ: Accurate
// Post-Training Quantization for Generative Pre-trained Transformers", 2022)
// on the CPU: weights are quantized column by column to the grouped integer
// format of convert/quant, each column's rounding error being spread over the
// columns not yet quantized through the Cholesky factor of the inverse
// Hessian of the layer's calibration inputs.
//
// It follows GPTQ's fasterquant (and AutoGPTQ/GPTQModel): H = 2/n Σ x xᵀ in
// float64, dead columns (H_jj = 0) get H_jj = 1 and a zero weight column,
// dampening λ = Damp · mean(diag H) added to the diagonal (raised ×10 when
// the Cholesky factorisation fails), U = chol(H⁻¹) upper, lazy block updates
// of BlockSize columns, optional act-order (columns by decreasing H_jj) with
// static groups (parameters of every group fixed from the original column
// order before quantization, so g_idx stays trivial) or dynamic groups
// (parameters found when a group starts in the permuted order; g_idx
// recorded). Scales and zeros follow quant.RuleGPTQ (Quantizer.find_params).
//
// One deliberate difference from the reference code: when a group starts in
// the middle of a lazy block, fasterquant finds its parameters on W, which
// lacks the updates from the block's earlier columns; here they are found on
// the updated weights, as the published algorithm states. (With group size
// 128 and block size 128 the two agree.) The block size is adjusted so that
// groups never straddle two blocks.
//
// Rows are independent given U, so they are split across goroutines; each
// goroutine runs the whole column loop on its rows with gonum's BLAS for the
// lazy updates. The GPU version is infer/cuda's Device.GPTQ (same semantics,
// float64 on the device), which shares WithDefaults, GroupParams, ActOrder
// and LazyBlock with Quantize.
package gptq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"

	"qllama/convert/quant"
)

// ErrGPTQ is wrapped by errors about GPTQ inputs and options.
var ErrGPTQ = errors.New("gptq")

// Defaults of the reference implementation.
const (
	DefaultDamp      = 0.01
	DefaultBlockSize = 128
	// MaxDampRaises bounds the ×10 raises of the dampening after failed
	// Cholesky factorisations.
	MaxDampRaises = 6
)

// Options configure GPTQ.
type Options struct {
	// Bits per code (2..8; GPTQ kernels exist for 2, 3, 4, 8).
	Bits int
	// GroupSize is the number of columns sharing a scale and zero (32, 64,
	// 128...); 0 means one group per row (per channel).
	GroupSize int
	// Sym selects symmetric quantization.
	Sym bool
	// ActOrder quantizes columns in order of decreasing Hessian diagonal.
	ActOrder bool
	// StaticGroups fixes every group's parameters before quantization from
	// the original column order (GPTQ's static_groups); with ActOrder this
	// keeps g_idx trivial, which the fast kernels prefer.
	StaticGroups bool
	// Damp is the dampening as a fraction of the mean Hessian diagonal
	// (0: DefaultDamp).
	Damp float64
	// BlockSize is the lazy-update block (0: DefaultBlockSize).
	BlockSize int
	// Threads bounds the goroutines (<= 0: GOMAXPROCS).
	Threads int
}

// WithDefaults returns o with its zero fields set to the defaults, or an
// error wrapping ErrGPTQ for invalid options (as Quantize checks them).
func (o Options) WithDefaults() (Options, error) { return o.withDefaults() }

func (o Options) withDefaults() (Options, error) {
	if o.Bits < 2 || o.Bits > 8 {
		return o, fmt.Errorf("%d bits (want 2..8): %w", o.Bits, ErrGPTQ)
	}
	if o.GroupSize < 0 {
		return o, fmt.Errorf("group size %d (want >= 0, 0 per channel): %w", o.GroupSize, ErrGPTQ)
	}
	if o.Damp == 0 {
		o.Damp = DefaultDamp
	}
	if o.Damp < 0 || math.IsNaN(o.Damp) || math.IsInf(o.Damp, 0) {
		return o, fmt.Errorf("damp %v: %w", o.Damp, ErrGPTQ)
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < 0 {
		return o, fmt.Errorf("block size %d: %w", o.BlockSize, ErrGPTQ)
	}
	if o.Threads <= 0 {
		o.Threads = runtime.GOMAXPROCS(0)
	}
	return o, nil
}

// Hessian accumulates Σ x xᵀ of a linear layer's input rows in float64.
type Hessian struct {
	cols int
	n    int
	sum  []float64 // upper triangle of Σ x xᵀ, cols x cols row-major
	buf  []float64
}

// NewHessian returns an empty accumulator for inputs of cols values.
func NewHessian(cols int) *Hessian {
	return &Hessian{cols: cols, sum: make([]float64, cols*cols)}
}

// Cols returns the input width.
func (h *Hessian) Cols() int { return h.cols }

// N returns the number of rows accumulated.
func (h *Hessian) N() int { return h.n }

// Add accumulates the n rows of x ([n, Cols()]).
func (h *Hessian) Add(x []float32, n int) error {
	if n < 0 || len(x) < n*h.cols {
		return fmt.Errorf("hessian: %d rows of %d need %d values, have %d: %w", n, h.cols, n*h.cols, len(x), ErrGPTQ)
	}
	const chunk = 256
	for lo := 0; lo < n; lo += chunk {
		m := min(chunk, n-lo)
		if cap(h.buf) < m*h.cols {
			h.buf = make([]float64, chunk*h.cols)
		}
		b := h.buf[:m*h.cols]
		for i, v := range x[lo*h.cols : (lo+m)*h.cols] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("hessian: non-finite input %v in row %d: %w", v, lo+i/h.cols, ErrGPTQ)
			}
			b[i] = float64(v)
		}
		blas64.Syrk(blas.Trans, 1,
			blas64.General{Rows: m, Cols: h.cols, Stride: h.cols, Data: b}, 1,
			blas64.Symmetric{Uplo: blas.Upper, N: h.cols, Stride: h.cols, Data: h.sum})
	}
	h.n += n
	return nil
}

// Matrix returns H = 2/N Σ x xᵀ as a full symmetric cols x cols matrix,
// row-major (GPTQ's scaling; the algorithm is invariant to it).
func (h *Hessian) Matrix() []float64 {
	c := h.cols
	out := make([]float64, c*c)
	if h.n == 0 {
		return out
	}
	f := 2 / float64(h.n)
	for i := 0; i < c; i++ {
		for j := i; j < c; j++ {
			v := f * h.sum[i*c+j]
			out[i*c+j], out[j*c+i] = v, v
		}
	}
	return out
}

// Importance returns the mean of x² per input column (diag Σ x xᵀ / N).
func (h *Hessian) Importance() []float64 {
	out := make([]float64, h.cols)
	if h.n == 0 {
		return out
	}
	for j := range out {
		out[j] = h.sum[j*h.cols+j] / float64(h.n)
	}
	return out
}

// Stats describe one GPTQ run.
type Stats struct {
	// Damp is the absolute dampening added to the diagonal; DampRaises
	// counts the ×10 raises after failed factorisations.
	Damp       float64
	DampRaises int
	// DeadCols counts inputs that were always zero.
	DeadCols int
	// Loss is GPTQ's error proxy Σ (w-q)²/(2 U_ii²) over all weights.
	Loss float64
}

// params is one group's quantizer.
type params struct{ scale, zero float64 }

// findParams is quant.RuleGPTQ (Quantizer.find_params) for one run of
// weights, in float32 as the reference, returned as float64.
func findParams(x []float64, maxq float32, sym bool) params {
	var xmin, xmax float32
	for _, v := range x {
		f := float32(v)
		xmin, xmax = min(xmin, f), max(xmax, f)
	}
	if sym {
		xmax = max(-xmin, xmax)
		if xmin < 0 {
			xmin = -xmax
		}
	}
	if xmin == 0 && xmax == 0 {
		xmin, xmax = -1, 1
	}
	scale := (xmax - xmin) / maxq
	if sym {
		return params{float64(scale), float64((maxq + 1) / 2)}
	}
	return params{float64(scale), math.RoundToEven(float64(-xmin / scale))}
}

// GroupParams returns quant.RuleGPTQ's scale and zero for one group of
// weights x at bits bits, exactly as Quantize finds them (GPU
// implementations share it for parameters fixed before the column loop).
func GroupParams(x []float64, bits int, sym bool) (scale float32, zero uint8) {
	p := findParams(x, float32(int(1)<<bits-1), sym)
	return float32(p.scale), uint8(p.zero)
}

// ActOrder returns act-order's permutation of the columns: perm[i] is the
// column quantized i-th, by decreasing Hessian diagonal (dead columns
// counted as 1), ties in column order.
func ActOrder(diag []float64) []int {
	perm := make([]int, len(diag))
	for j := range perm {
		perm[j] = j
	}
	sort.SliceStable(perm, func(a, b int) bool { return diag[perm[a]] > diag[perm[b]] })
	return perm
}

// LazyBlock returns the lazy-update block Quantize uses for cols columns:
// opt.BlockSize (defaults applied) at most cols, set to the group size when
// dynamic groups (groupSize > 0 without static groups) would straddle two
// blocks. groupSize is the effective one (0 per channel).
func LazyBlock(opt Options, groupSize, cols int) int {
	B := min(opt.BlockSize, cols)
	fixed := groupSize == 0 || opt.StaticGroups
	if groupSize > 0 && !fixed && groupSize%B != 0 && B%groupSize != 0 {
		B = groupSize
	}
	return B
}

// quantize returns the code of w and its dequantized value. The division
// is done in float32, as torch.round(x / scale) in the reference and in
// quant.RTN: the extreme weights of a symmetric group land exactly on a
// rounding tie, which float64 division would break the other way.
func (p params) quantize(w, maxq float64) (uint8, float64) {
	q := math.RoundToEven(float64(float32(w)/float32(p.scale))) + p.zero
	if math.IsNaN(q) {
		q = p.zero
	}
	q = min(max(q, 0), maxq)
	return uint8(q), p.scale * (q - p.zero)
}

// Quantize runs GPTQ on the row-major [rows, cols] weight w (rows = output
// channels) with the Hessian of its inputs. ctx is checked between blocks.
func Quantize(ctx context.Context, w []float32, rows, cols int, h *Hessian, opt Options) (*quant.Grouped, Stats, error) {
	var st Stats
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, st, err
	}
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return nil, st, fmt.Errorf("weight of %d values for shape [%d %d]: %w", len(w), rows, cols, ErrGPTQ)
	}
	if h == nil || h.cols != cols {
		return nil, st, fmt.Errorf("hessian for %d columns, weight has %d: %w", hcols(h), cols, ErrGPTQ)
	}
	if h.n == 0 {
		return nil, st, fmt.Errorf("hessian has no calibration rows: %w", ErrGPTQ)
	}
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, st, fmt.Errorf("non-finite weight %v at row %d col %d: %w", v, i/cols, i%cols, ErrGPTQ)
		}
	}
	gs := opt.GroupSize
	if gs >= cols {
		gs = 0
	}
	H := h.Matrix()
	W := make([]float64, rows*cols)
	for i, v := range w {
		W[i] = float64(v)
	}
	// Dead columns.
	for j := 0; j < cols; j++ {
		if H[j*cols+j] == 0 {
			H[j*cols+j] = 1
			st.DeadCols++
			for r := 0; r < rows; r++ {
				W[r*cols+j] = 0
			}
		}
	}
	maxq := float32(int(1)<<opt.Bits - 1)
	ng := 1
	if gs > 0 {
		ng = (cols + gs - 1) / gs
	}
	g := &quant.Grouped{Bits: opt.Bits, GroupSize: gs, Sym: opt.Sym, Rows: rows, Cols: cols,
		Codes: make([]uint8, rows*cols), Scales: make([]float32, rows*ng), Zeros: make([]uint8, rows*ng)}
	// Parameters fixed before the loop: per channel, or static groups.
	fixed := gs == 0 || opt.StaticGroups
	if fixed {
		for r := 0; r < rows; r++ {
			for k := 0; k < ng; k++ {
				lo, hi := 0, cols
				if gs > 0 {
					lo, hi = k*gs, min(cols, (k+1)*gs)
				}
				p := findParams(W[r*cols+lo:r*cols+hi], maxq, opt.Sym)
				g.Scales[r*ng+k], g.Zeros[r*ng+k] = float32(p.scale), uint8(p.zero)
			}
		}
	}
	// Act-order permutation.
	perm := make([]int, cols)
	for j := range perm {
		perm[j] = j
	}
	if opt.ActOrder {
		diag := make([]float64, cols)
		for j := range diag {
			diag[j] = H[j*cols+j]
		}
		perm = ActOrder(diag)
		Wp := make([]float64, rows*cols)
		for r := 0; r < rows; r++ {
			for i, j := range perm {
				Wp[r*cols+i] = W[r*cols+j]
			}
		}
		Hp := make([]float64, cols*cols)
		for a, i := range perm {
			for b, j := range perm {
				Hp[a*cols+b] = H[i*cols+j]
			}
		}
		W, H = Wp, Hp
	}
	U, damp, raises, err := invCholUpper(H, cols, opt.Damp)
	if err != nil {
		return nil, st, err
	}
	st.Damp, st.DampRaises = damp, raises
	// Block size: groups must not straddle blocks.
	B := LazyBlock(opt, gs, cols)
	// Group of permuted column i and, for dynamic groups, g_idx.
	groupOf := func(i int) int {
		switch {
		case gs == 0:
			return 0
		case opt.StaticGroups:
			return perm[i] / gs
		default:
			return i / gs
		}
	}
	if gs > 0 && !fixed && opt.ActOrder {
		g.GIdx = make([]int32, cols)
		for i, j := range perm {
			g.GIdx[j] = int32(i / gs)
		}
	}
	threads := max(1, min(opt.Threads, rows))
	chunk := (rows + threads - 1) / threads
	losses := make([]float64, threads)
	errs := make([]error, threads)
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		r0, r1 := t*chunk, min(rows, (t+1)*chunk)
		if r0 >= r1 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			losses[t], errs[t] = runRows(ctx, W[r0*cols:r1*cols], r1-r0, cols, U, B, gs, fixed, groupOf, perm, maxq, opt.Sym, g, r0, ng)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, st, err
	}
	for _, l := range losses {
		st.Loss += l
	}
	return g, st, nil
}

func hcols(h *Hessian) int {
	if h == nil {
		return 0
	}
	return h.cols
}

// invCholUpper returns U with UᵀU = (H + λI)⁻¹, raising λ ×10 while the
// factorisations fail.
func invCholUpper(H []float64, n int, dampFrac float64) ([]float64, float64, int, error) {
	var mean float64
	for j := 0; j < n; j++ {
		mean += H[j*n+j]
	}
	mean /= float64(n)
	damp := dampFrac * mean
	if damp == 0 {
		damp = dampFrac // all columns dead is handled before; guard anyway
	}
	for raise := 0; raise <= MaxDampRaises; raise++ {
		a := make([]float64, n*n)
		copy(a, H)
		for j := 0; j < n; j++ {
			a[j*n+j] += damp
		}
		var c mat.Cholesky
		if c.Factorize(mat.NewSymDense(n, a)) {
			var inv mat.SymDense
			err := c.InverseTo(&inv)
			var cond mat.Condition
			if err == nil || (errors.As(err, &cond) && !math.IsInf(float64(cond), 0)) {
				var c2 mat.Cholesky
				if c2.Factorize(&inv) {
					var u mat.TriDense
					c2.UTo(&u)
					raw := u.RawTriangular()
					U := make([]float64, n*n)
					for i := 0; i < n; i++ {
						copy(U[i*n+i:(i+1)*n], raw.Data[i*raw.Stride+i:i*raw.Stride+n])
					}
					return U, damp, raise, nil
				}
			}
		}
		damp *= 10
	}
	return nil, damp, MaxDampRaises, fmt.Errorf("Hessian not positive definite even with dampening %g: %w", damp/10, ErrGPTQ)
}

// runRows runs the column loop on m rows (W: [m, cols] in permuted column
// order, updated in place), writing codes (unpermuted) and, for dynamic
// groups, parameters of rows r0.. into g.
func runRows(ctx context.Context, W []float64, m, cols int, U []float64, B, gs int, fixed bool, groupOf func(int) int,
	perm []int, maxq32 float32, sym bool, g *quant.Grouped, r0, ng int) (float64, error) {
	maxq := float64(maxq32)
	Err := make([]float64, m*B)
	cur := make([]params, m) // dynamic groups: current parameters per row
	var loss float64
	for i1 := 0; i1 < cols; i1 += B {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		i2 := min(i1+B, cols)
		nb := i2 - i1
		for i := i1; i < i2; i++ {
			d := U[i*cols+i]
			if !fixed && i%gs == 0 {
				hi := min(cols, i+gs)
				k := i / gs
				for r := 0; r < m; r++ {
					p := findParams(W[r*cols+i:r*cols+hi], maxq32, sym)
					p.scale = float64(float32(p.scale))
					cur[r] = p
					g.Scales[(r0+r)*ng+k], g.Zeros[(r0+r)*ng+k] = float32(p.scale), uint8(p.zero)
				}
			}
			urow := U[i*cols+i+1 : i*cols+i2]
			for r := 0; r < m; r++ {
				var p params
				if fixed {
					k := (r0+r)*ng + groupOf(i)
					p = params{float64(g.Scales[k]), float64(g.Zeros[k])}
				} else {
					p = cur[r]
				}
				row := W[r*cols : (r+1)*cols]
				wv := row[i]
				code, q := p.quantize(wv, maxq)
				g.Codes[(r0+r)*cols+perm[i]] = code
				e := (wv - q) / d
				loss += e * e / 2
				rest := row[i+1 : i2]
				for j, u := range urow {
					rest[j] -= e * u
				}
				Err[r*B+(i-i1)] = e
			}
		}
		if i2 < cols {
			// W[:, i2:] -= Err · U[i1:i2, i2:]
			blas64.Gemm(blas.NoTrans, blas.NoTrans, -1,
				blas64.General{Rows: m, Cols: nb, Stride: B, Data: Err},
				blas64.General{Rows: nb, Cols: cols - i2, Stride: cols, Data: U[i1*cols+i2:]},
				1, blas64.General{Rows: m, Cols: cols - i2, Stride: cols, Data: W[i2:]})
		}
	}
	return loss, nil
}
