//go:build cuda

package cuda

// GPTQ on the GPU: the semantics of convert/gptq.Quantize (read its package
// documentation) with the linear algebra on the device. cuSOLVER is loaded at
// run time with dlopen, as cuBLAS is (cublas.go): no link-time dependency on
// any libcusolver soname.
//
// Precision: everything is float64 on the device (H, its Cholesky
// factorisations and inverse, the weights during the column loop, the lazy
// trailing updates as a DGEMM), except what the CPU code also does in float32
// (group parameters, the quantizing division). On Hopper and Ampere
// data-centre parts float64 is fast enough (a 2048 x 8192 layer is a few
// DGEMMs and factorisations of 8192 x 8192), the Cholesky of H + λI fails at
// the same dampening as the CPU's, and the codes match the CPU reference on
// the same Hessian almost exactly (a float32 column loop flips a rounding now
// and then, and GPTQ spreads a flip over the rest of the row). Consumer GPUs
// (1/64-rate float64) are slower but still far faster than the CPU.

/*
#cgo LDFLAGS: -ldl
#include "dl.h" // first: it defines _GNU_SOURCE for dlinfo
#include <stdlib.h>
#include <cuda.h>

typedef int (*qcs_create_t)(void**);
typedef int (*qcs_destroy_t)(void*);
typedef int (*qcs_stream_t)(void*, CUstream);
typedef int (*qcs_bufsize_t)(void*, int, int, double*, int, int*);
typedef int (*qcs_fact_t)(void*, int, int, double*, int, double*, int, int*);

typedef struct {
	void* lib;
	qcs_create_t create;
	qcs_destroy_t destroy;
	qcs_stream_t stream;
	qcs_bufsize_t potrf_bs, potri_bs;
	qcs_fact_t potrf, potri;
	char path[1024];
	char err[1024];
} qcs_lib;

// qcs_preload makes a dependency (cuBLAS, nvJitLink) of a cuSOLVER outside
// the loader's search path resolvable; failures are ignored.
static void qcs_preload(const char* name) { dlopen(name, RTLD_NOW | RTLD_GLOBAL); }

static int qcs_open(qcs_lib* l, const char* name) {
	memset(l, 0, sizeof *l);
	void* h = qdl_open(name, NULL, l->err, sizeof l->err);
	if (!h) return 1;
	l->create = (qcs_create_t)dlsym(h, "cusolverDnCreate");
	l->destroy = (qcs_destroy_t)dlsym(h, "cusolverDnDestroy");
	l->stream = (qcs_stream_t)dlsym(h, "cusolverDnSetStream");
	l->potrf_bs = (qcs_bufsize_t)dlsym(h, "cusolverDnDpotrf_bufferSize");
	l->potri_bs = (qcs_bufsize_t)dlsym(h, "cusolverDnDpotri_bufferSize");
	l->potrf = (qcs_fact_t)dlsym(h, "cusolverDnDpotrf");
	l->potri = (qcs_fact_t)dlsym(h, "cusolverDnDpotri");
	if (!l->create || !l->destroy || !l->stream || !l->potrf_bs || !l->potri_bs || !l->potrf || !l->potri)
		return qdl_missing(h, "a cuSOLVER entry point is missing (cuSOLVER 11 or newer is needed)", l->err, sizeof l->err);
	qdl_path(h, l->path, sizeof l->path);
	l->lib = h;
	return 0;
}

static int qcs_create(qcs_lib* l, void** h) { return l->create(h); }
static int qcs_destroy(qcs_lib* l, void* h) { return l->destroy(h); }
static int qcs_set_stream(qcs_lib* l, void* h, CUstream s) { return l->stream(h, s); }
static int qcs_bufsize(qcs_lib* l, void* h, int inv, int uplo, int n, CUdeviceptr a, int lda, int* lwork) {
	return (inv ? l->potri_bs : l->potrf_bs)(h, uplo, n, (double*)a, lda, lwork);
}
static int qcs_fact(qcs_lib* l, void* h, int inv, int uplo, int n, CUdeviceptr a, int lda, CUdeviceptr work, int lwork,
                    CUdeviceptr info) {
	return (inv ? l->potri : l->potrf)(h, uplo, n, (double*)a, lda, (double*)work, lwork, (int*)info);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"gorgonia.org/cu"

	"qllama/convert/gptq"
	"qllama/convert/quant"
)

// gptqMaxBlock is the largest lazy block the column-loop kernel holds
// (kernels/gptq.cu: GPTQ_MAXB).
const gptqMaxBlock = 256

const fillLower = 0 // CUBLAS_FILL_MODE_LOWER

// solverLib is a loaded cuSOLVER (Device.cusolver loads it on first use).
type solverLib struct{ lib *C.qcs_lib }

// cusolver returns the device's cuSOLVER, loading it on first use: the dlopen
// search order is QLLAMA_CUSOLVER if set, then each soname bare (ld.so cache,
// LD_LIBRARY_PATH) and in the usual toolkit directories (libcusolver.so.11
// is CUDA 11 and 12, .12 CUDA 13). A failure is remembered.
func (d *Device) cusolver() (*C.qcs_lib, error) {
	if d.solver != nil || d.solverErr != nil {
		if d.solverErr != nil {
			return nil, d.solverErr
		}
		return d.solver.lib, nil
	}
	lib := (*C.qcs_lib)(C.calloc(1, C.sizeof_qcs_lib))
	var tried []string
	for _, name := range libCandidates("QLLAMA_CUSOLVER", "libcusolver.so", "12", "11", "13") {
		if filepath.IsAbs(name) {
			// Its NEEDED cuBLAS / nvJitLink may live next to it only.
			dir := filepath.Dir(name)
			for _, dep := range []string{"libnvJitLink.so", "libcublasLt.so", "libcublas.so"} {
				for _, v := range []string{"13", "12", "11"} {
					p := filepath.Join(dir, dep+"."+v)
					if _, err := os.Stat(p); err == nil {
						cp := C.CString(p)
						C.qcs_preload(cp)
						C.free(unsafe.Pointer(cp))
					}
				}
			}
		}
		cname := C.CString(name)
		rc := C.qcs_open(lib, cname)
		C.free(unsafe.Pointer(cname))
		if rc != 0 {
			tried = append(tried, fmt.Sprintf("%s (%s)", name, C.GoString(&lib.err[0])))
			continue
		}
		d.solver = &solverLib{lib}
		return lib, nil
	}
	C.free(unsafe.Pointer(lib))
	d.solverErr = fmt.Errorf("cuda: no cuSOLVER library could be loaded (set QLLAMA_CUSOLVER to its path); tried %s", strings.Join(tried, "; "))
	return nil, d.solverErr
}

// CusolverPath returns the cuSOLVER library GPTQ uses (loading it).
func (d *Device) CusolverPath() (string, error) {
	lib, err := d.cusolver()
	if err != nil {
		return "", err
	}
	return C.GoString(&lib.path[0]), nil
}

// GPTQ quantizes the row-major float32 weight w [rows, cols] (rows = output
// channels) with GPTQ on the device, with the semantics and result of
// gptq.Quantize (see convert/gptq): hsum is a device buffer of cols*cols
// float32 holding the full symmetric Σ x xᵀ over the n calibration rows of
// the layer's input, so that H = 2/n · hsum; it is read, not modified. ctx
// is checked between lazy blocks. The codes match gptq.Quantize's on the same
// Hessian up to rounding (see the file comment: float64 on the device).
func (d *Device) GPTQ(ctx context.Context, w []float32, rows, cols int, hsum cu.DevicePtr, n int, opt gptq.Options) (*quant.Grouped, gptq.Stats, error) {
	defer d.bind()()
	if hsum == 0 {
		return nil, gptq.Stats{}, fmt.Errorf("cuda: GPTQ: no Hessian buffer: %w", gptq.ErrGPTQ)
	}
	if n <= 0 {
		return nil, gptq.Stats{}, fmt.Errorf("cuda: GPTQ: hessian has no calibration rows: %w", gptq.ErrGPTQ)
	}
	return d.gptqRun(ctx, w, rows, cols, opt, func(H cu.DevicePtr) error {
		nn := int64(cols) * int64(cols)
		return d.launch("gptq_hessian", dim3{x: int(min((nn+255)/256, 4*int64(max(d.SMs, 1))*16))}, 256, 0,
			hsum, H, nn, 2/float64(n))
	})
}

// GPTQHessian is GPTQ with the Hessian of a CPU accumulator (its float64
// matrix uploaded): the same H gptq.Quantize uses, for comparisons.
func (d *Device) GPTQHessian(ctx context.Context, w []float32, rows, cols int, h *gptq.Hessian, opt gptq.Options) (*quant.Grouped, gptq.Stats, error) {
	defer d.bind()()
	if h == nil || h.Cols() != cols {
		hc := 0
		if h != nil {
			hc = h.Cols()
		}
		return nil, gptq.Stats{}, fmt.Errorf("cuda: GPTQ: hessian for %d columns, weight has %d: %w", hc, cols, gptq.ErrGPTQ)
	}
	if h.N() == 0 {
		return nil, gptq.Stats{}, fmt.Errorf("cuda: GPTQ: hessian has no calibration rows: %w", gptq.ErrGPTQ)
	}
	return d.gptqRun(ctx, w, rows, cols, opt, func(H cu.DevicePtr) error {
		m := h.Matrix()
		return d.st.upload(H, unsafe.Pointer(&m[0]), int64(len(m))*8)
	})
}

// gptqBlock is the lazy block on the device: gptq.LazyBlock, brought down to
// gptqMaxBlock where larger. The result does not depend on the block (the
// lazy updates only defer exact updates) as long as a dynamic group never
// straddles two blocks.
func gptqBlock(opt gptq.Options, gs, cols int) int {
	B := gptq.LazyBlock(opt, gs, cols)
	if B <= gptqMaxBlock {
		return B
	}
	if gs == 0 || opt.StaticGroups {
		return gptqMaxBlock
	}
	if gs <= gptqMaxBlock {
		return gs * (gptqMaxBlock / gs)
	}
	for b := gptqMaxBlock; b > 1; b-- {
		if gs%b == 0 {
			return b
		}
	}
	return 1
}

// gptqRun is GPTQ once the context is bound; fill writes H (cols x cols
// float64, 2/n Σ x xᵀ) into the buffer it is given, on the stream.
func (d *Device) gptqRun(ctx context.Context, w []float32, rows, cols int, opt gptq.Options, fill func(H cu.DevicePtr) error) (g *quant.Grouped, st gptq.Stats, err error) {
	opt, err = opt.WithDefaults()
	if err != nil {
		return nil, st, err
	}
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return nil, st, fmt.Errorf("cuda: GPTQ: weight of %d values for shape [%d %d]: %w", len(w), rows, cols, gptq.ErrGPTQ)
	}
	if int64(cols) > 1<<31-1 {
		return nil, st, fmt.Errorf("cuda: GPTQ: %d columns exceed cuSOLVER's int range: %w", cols, gptq.ErrGPTQ)
	}
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, st, fmt.Errorf("cuda: GPTQ: non-finite weight %v at row %d col %d: %w", v, i/cols, i%cols, gptq.ErrGPTQ)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, st, err
	}
	lib, err := d.cusolver()
	if err != nil {
		return nil, st, err
	}
	bl, err := d.blasHandle()
	if err != nil {
		return nil, st, err
	}
	var sh unsafe.Pointer
	if s := C.qcs_create(lib, &sh); s != 0 {
		return nil, st, fmt.Errorf("cuda: cusolverDnCreate failed with status %d", int(s))
	}
	defer C.qcs_destroy(lib, sh)
	if s := C.qcs_set_stream(lib, sh, d.st.s); s != 0 {
		return nil, st, fmt.Errorf("cuda: cusolverDnSetStream failed with status %d", int(s))
	}

	// Device buffers, freed on return after the stream drained.
	var bufs []*cu.DevicePtr
	defer func() {
		_ = d.st.sync()
		for _, p := range bufs {
			if *p != 0 {
				cu.MemFree(*p)
				*p = 0
			}
		}
	}()
	alloc := func(p *cu.DevicePtr, bytes int64, what string) error {
		var e error
		*p, e = d.alloc(bytes, what)
		if e == nil {
			bufs = append(bufs, p)
		}
		return e
	}
	free := func(p *cu.DevicePtr) {
		if *p != 0 {
			_ = d.st.sync()
			cu.MemFree(*p)
			*p = 0
		}
	}
	up := func(p *cu.DevicePtr, src unsafe.Pointer, bytes int64, what string) error {
		if e := alloc(p, bytes, what); e != nil {
			return e
		}
		return d.st.upload(*p, src, bytes)
	}

	nc := int64(cols)
	nn := nc * nc
	var dH, dA, dDiag, dPerm, dWf, dW, dErr, dCodes, dScales, dZeros, dLoss, dWork, dInfo cu.DevicePtr
	if err := alloc(&dH, nn*8, "the GPTQ Hessian"); err != nil {
		return nil, st, err
	}
	if err := fill(dH); err != nil {
		return nil, st, err
	}
	if err := alloc(&dDiag, nc*8, "the GPTQ Hessian diagonal"); err != nil {
		return nil, st, err
	}
	diag := make([]float64, cols)
	if err := d.launch("gptq_diag", dim3{x: (cols + 255) / 256}, 256, 0, dH, dDiag, nc); err != nil {
		return nil, st, err
	}
	if err := d.st.sync(); err != nil {
		return nil, st, err
	}
	if err := download(diag, dDiag); err != nil {
		return nil, st, err
	}

	gs := opt.GroupSize
	if gs >= cols {
		gs = 0
	}
	// Dead columns (H_jj = 0): H_jj = 1, weight column zeroed (the kernels
	// test the original diagonal, kept in dDiag).
	dead := make([]bool, cols)
	fdiag := make([]float64, cols)
	var mean float64
	for j, v := range diag {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, st, fmt.Errorf("cuda: GPTQ: non-finite Hessian diagonal %v at %d: %w", v, j, gptq.ErrGPTQ)
		}
		fdiag[j] = v
		if v == 0 {
			dead[j], fdiag[j] = true, 1
			st.DeadCols++
		}
		mean += fdiag[j]
	}
	mean /= float64(cols)
	maxq := int(1)<<opt.Bits - 1
	ng := 1
	if gs > 0 {
		ng = (cols + gs - 1) / gs
	}
	g = &quant.Grouped{Bits: opt.Bits, GroupSize: gs, Sym: opt.Sym, Rows: rows, Cols: cols,
		Codes: make([]uint8, rows*cols), Scales: make([]float32, rows*ng), Zeros: make([]uint8, rows*ng)}
	fixed := gs == 0 || opt.StaticGroups
	mode := 0
	switch {
	case gs == 0:
		mode = 1
	case opt.StaticGroups:
		mode = 2
	}
	if fixed {
		// Parameters from the original column order, dead columns zero.
		x := make([]float64, 0, cols)
		for r := 0; r < rows; r++ {
			for k := 0; k < ng; k++ {
				lo, hi := 0, cols
				if gs > 0 {
					lo, hi = k*gs, min(cols, (k+1)*gs)
				}
				x = x[:0]
				for j := lo; j < hi; j++ {
					v := float64(w[r*cols+j])
					if dead[j] {
						v = 0
					}
					x = append(x, v)
				}
				g.Scales[r*ng+k], g.Zeros[r*ng+k] = gptq.GroupParams(x, opt.Bits, opt.Sym)
			}
		}
	}
	var perm []int
	if opt.ActOrder {
		perm = gptq.ActOrder(fdiag)
	} else {
		perm = make([]int, cols)
		for j := range perm {
			perm[j] = j
		}
	}
	perm32 := make([]int32, cols)
	for i, j := range perm {
		perm32[i] = int32(j)
	}
	if err := up(&dPerm, unsafe.Pointer(&perm32[0]), nc*4, "the GPTQ permutation"); err != nil {
		return nil, st, err
	}

	// U = chol((P H Pᵀ + λI)⁻¹) upper. The buffers are column-major for
	// cuSOLVER and the matrices symmetric: potrf (lower) gives L, potri
	// (lower) (LLᵀ)⁻¹ in the lower triangle, potrf (lower) again L₂ with
	// L₂L₂ᵀ = H⁻¹; read row-major, that lower column-major triangle is
	// U = L₂ᵀ, upper, UᵀU = H⁻¹, as gonum's Cholesky.UTo on the CPU.
	if err := alloc(&dA, nn*8, "the GPTQ inverse Hessian factor"); err != nil {
		return nil, st, err
	}
	if err := alloc(&dInfo, 8, "cuSOLVER's info"); err != nil {
		return nil, st, err
	}
	var lw1, lw2 C.int
	if s := C.qcs_bufsize(lib, sh, 0, fillLower, C.int(cols), C.CUdeviceptr(dA), C.int(cols), &lw1); s != 0 {
		return nil, st, fmt.Errorf("cuda: cusolverDnDpotrf_bufferSize failed with status %d", int(s))
	}
	if s := C.qcs_bufsize(lib, sh, 1, fillLower, C.int(cols), C.CUdeviceptr(dA), C.int(cols), &lw2); s != 0 {
		return nil, st, fmt.Errorf("cuda: cusolverDnDpotri_bufferSize failed with status %d", int(s))
	}
	lwork := max(int(lw1), int(lw2), 1)
	if err := alloc(&dWork, int64(lwork)*8, "cuSOLVER's workspace"); err != nil {
		return nil, st, err
	}
	step := func(inv int, what string) (bool, error) {
		if s := C.qcs_fact(lib, sh, C.int(inv), fillLower, C.int(cols), C.CUdeviceptr(dA), C.int(cols), C.CUdeviceptr(dWork), C.int(lwork), C.CUdeviceptr(dInfo)); s != 0 {
			return false, fmt.Errorf("cuda: %s failed with status %d", what, int(s))
		}
		if err := d.st.sync(); err != nil {
			return false, err
		}
		info := make([]int32, 1)
		if err := download(info, dInfo); err != nil {
			return false, err
		}
		if info[0] < 0 {
			return false, fmt.Errorf("cuda: %s: invalid argument %d", what, -info[0])
		}
		return info[0] == 0, nil
	}
	rowsY := func(n int) int { return min(n, 65535) }
	damp := opt.Damp * mean
	if damp == 0 {
		damp = opt.Damp
	}
	ok := false
	for raise := 0; raise <= gptq.MaxDampRaises && !ok; raise++ {
		if err := d.launch("gptq_build", dim3{x: (cols + 255) / 256, y: rowsY(cols)}, 256, 0, dH, dA, dPerm, nc, damp); err != nil {
			return nil, st, err
		}
		good, err := step(0, "cusolverDnDpotrf")
		if err == nil && good {
			good, err = step(1, "cusolverDnDpotri")
		}
		if err == nil && good {
			good, err = step(0, "cusolverDnDpotrf of the inverse")
		}
		if err != nil {
			return nil, st, err
		}
		if good {
			// The column loop divides by U's diagonal.
			if err := d.launch("gptq_diag", dim3{x: (cols + 255) / 256}, 256, 0, dA, dDiag, nc); err != nil {
				return nil, st, err
			}
			ud := make([]float64, cols)
			if err := d.st.sync(); err != nil {
				return nil, st, err
			}
			if err := download(ud, dDiag); err != nil {
				return nil, st, err
			}
			good = true
			for _, v := range ud {
				if !(v > 0) || math.IsInf(v, 0) {
					good = false
					break
				}
			}
		}
		if good {
			ok = true
			st.Damp, st.DampRaises = damp, raise
			break
		}
		damp *= 10
	}
	if !ok {
		return nil, st, fmt.Errorf("cuda: GPTQ: Hessian not positive definite even with dampening %g: %w", damp/10, gptq.ErrGPTQ)
	}
	free(&dH)
	U := dA

	// The weights, permuted, float64, dead columns zero. (dDiag was
	// overwritten by U's diagonal: the original goes up again.)
	if err := d.st.upload(dDiag, unsafe.Pointer(&diag[0]), nc*8); err != nil {
		return nil, st, err
	}
	if err := up(&dWf, unsafe.Pointer(&w[0]), int64(len(w))*4, "the GPTQ weight"); err != nil {
		return nil, st, err
	}
	if err := alloc(&dW, int64(len(w))*8, "the GPTQ weight in float64"); err != nil {
		return nil, st, err
	}
	if err := d.launch("gptq_weights", dim3{x: (cols + 255) / 256, y: rowsY(rows)}, 256, 0, dWf, dW, dPerm, dDiag, int64(rows), nc); err != nil {
		return nil, st, err
	}
	free(&dWf)

	B := gptqBlock(opt, gs, cols)
	if err := alloc(&dErr, int64(rows)*int64(B)*8, "the GPTQ block errors"); err != nil {
		return nil, st, err
	}
	if err := alloc(&dCodes, int64(rows)*nc, "the GPTQ codes"); err != nil {
		return nil, st, err
	}
	if fixed {
		if err := up(&dScales, unsafe.Pointer(&g.Scales[0]), int64(len(g.Scales))*4, "the GPTQ scales"); err != nil {
			return nil, st, err
		}
		if err := up(&dZeros, unsafe.Pointer(&g.Zeros[0]), int64(len(g.Zeros)), "the GPTQ zeros"); err != nil {
			return nil, st, err
		}
	} else {
		if err := alloc(&dScales, int64(len(g.Scales))*4, "the GPTQ scales"); err != nil {
			return nil, st, err
		}
		if err := alloc(&dZeros, int64(len(g.Zeros)), "the GPTQ zeros"); err != nil {
			return nil, st, err
		}
	}
	zero := make([]float64, rows)
	if err := up(&dLoss, unsafe.Pointer(&zero[0]), int64(rows)*8, "the GPTQ losses"); err != nil {
		return nil, st, err
	}
	gsArg := max(gs, 1)
	const warps = 4
	grid := dim3{x: (rows + warps - 1) / warps}
	for i1 := 0; i1 < cols; i1 += B {
		if err := ctx.Err(); err != nil {
			return nil, st, err
		}
		i2 := min(i1+B, cols)
		if err := d.launch("gptq_block", grid, 32*warps, 0, dW, U, dErr, dCodes, dScales, dZeros, dPerm, dLoss,
			int64(rows), nc, int64(i1), int64(i2), int64(B), int64(gsArg), int64(mode), int64(maxq), b2i(opt.Sym), int64(ng)); err != nil {
			return nil, st, err
		}
		if i2 < cols {
			// W[:, i2:] -= Err · U[i1:i2, i2:], column-major: Wᵀ[i2:, :] -=
			// U[i1:i2, i2:]ᵀ · Errᵀ.
			A := mat{ptr: U + cu.DevicePtr((int64(i1)*nc+int64(i2))*8), dt: dtF64, ld: nc}
			Bm := mat{ptr: dErr, dt: dtF64, ld: int64(B)}
			Cm := mat{ptr: dW + cu.DevicePtr(int64(i2)*8), dt: dtF64, ld: nc}
			if err := bl.gemm(opN, opN, int64(cols-i2), int64(rows), int64(i2-i1), -1, A, Bm, 1, Cm, 1, compute64F); err != nil {
				return nil, st, err
			}
		}
	}
	if err := d.st.sync(); err != nil {
		return nil, st, err
	}
	if err := download(g.Codes, dCodes); err != nil {
		return nil, st, err
	}
	if !fixed {
		if err := download(g.Scales, dScales); err != nil {
			return nil, st, err
		}
		if err := download(g.Zeros, dZeros); err != nil {
			return nil, st, err
		}
	}
	losses := make([]float64, rows)
	if err := download(losses, dLoss); err != nil {
		return nil, st, err
	}
	for _, l := range losses {
		st.Loss += l
	}
	if gs > 0 && !fixed && opt.ActOrder {
		g.GIdx = make([]int32, cols)
		for i, j := range perm {
			g.GIdx[j] = int32(i / gs)
		}
	}
	if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
		return nil, st, errors.New("cuda: GPTQ: non-finite loss (the factorisation lost precision)")
	}
	return g, st, nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
