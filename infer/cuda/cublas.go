//go:build cuda

package cuda

// cuBLAS, loaded at run time with dlopen: the binary has no link-time
// dependency on any libcublas soname (the build machine's toolkit ships
// libcublas.so.11, a current driver machine .12 or .13), and a machine
// without cuBLAS still runs every path but the tensor-core one. Only stable C
// ABI entry points are used (cuBLAS 11 and newer signatures).

/*
#cgo LDFLAGS: -ldl
#include "dl.h" // first: it defines _GNU_SOURCE for dlinfo
#include <stdlib.h>
#include <cuda.h>

typedef int (*qcb_create_t)(void**);
typedef int (*qcb_destroy_t)(void*);
typedef int (*qcb_version_t)(void*, int*);
typedef int (*qcb_stream_t)(void*, CUstream);
typedef int (*qcb_workspace_t)(void*, void*, size_t);
typedef int (*qcb_gemm_t)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                          const void*, void*, int, int, int, int);
typedef int (*qcb_gemm_sb_t)(void*, int, int, int, int, int, const void*, const void*, int, int, long long,
                             const void*, int, int, long long, const void*, void*, int, int, long long, int, int, int);

typedef struct {
	void* lib;
	qcb_create_t create;
	qcb_destroy_t destroy;
	qcb_version_t version;
	qcb_stream_t stream;
	qcb_workspace_t workspace;
	qcb_gemm_t gemm;
	qcb_gemm_sb_t gemm_sb;
	char path[1024];
	char err[1024];
} qcb_lib;

// qcb_open loads name (after lt, libcublasLt of the same directory, so that
// libcublas's NEEDED entry resolves outside the loader's search path) and
// looks up every symbol. 0 on success, else l->err says why.
static int qcb_open(qcb_lib* l, const char* name, const char* lt) {
	memset(l, 0, sizeof *l);
	void* h = qdl_open(name, lt, l->err, sizeof l->err);
	if (!h) return 1;
	l->create = (qcb_create_t)dlsym(h, "cublasCreate_v2");
	l->destroy = (qcb_destroy_t)dlsym(h, "cublasDestroy_v2");
	l->version = (qcb_version_t)dlsym(h, "cublasGetVersion_v2");
	l->stream = (qcb_stream_t)dlsym(h, "cublasSetStream_v2");
	l->workspace = (qcb_workspace_t)dlsym(h, "cublasSetWorkspace_v2");
	l->gemm = (qcb_gemm_t)dlsym(h, "cublasGemmEx");
	l->gemm_sb = (qcb_gemm_sb_t)dlsym(h, "cublasGemmStridedBatchedEx");
	if (!l->create || !l->destroy || !l->version || !l->stream || !l->workspace || !l->gemm || !l->gemm_sb)
		return qdl_missing(h, "a cuBLAS entry point is missing (cuBLAS 11 or newer is needed)", l->err, sizeof l->err);
	qdl_path(h, l->path, sizeof l->path);
	l->lib = h;
	return 0;
}

static int qcb_create(qcb_lib* l, void** h) { return l->create(h); }
static int qcb_destroy(qcb_lib* l, void* h) { return l->destroy(h); }
static int qcb_version(qcb_lib* l, void* h, int* v) { return l->version(h, v); }
static int qcb_setup(qcb_lib* l, void* h, CUstream s, CUdeviceptr ws, size_t wsBytes) {
	int r = l->stream(h, s);
	if (r) return r;
	return l->workspace(h, (void*)ws, wsBytes);
}

// Device pointers travel as integers; alpha and beta are converted to the
// compute type's scalar (double for CUBLAS_COMPUTE_64F = 70, else float).
static int qcb_gemm(qcb_lib* l, void* h, int ta, int tb, int m, int n, int k, double alpha, CUdeviceptr A, int at,
                    int lda, long long sa, CUdeviceptr B, int bt, int ldb, long long sb, double beta, CUdeviceptr C,
                    int ct, int ldc, long long sc, int batch, int comp) {
	float fa = (float)alpha, fb = (float)beta;
	const void* pa = comp == 70 ? (const void*)&alpha : (const void*)&fa;
	const void* pb = comp == 70 ? (const void*)&beta : (const void*)&fb;
	if (batch <= 1)
		return l->gemm(h, ta, tb, m, n, k, pa, (const void*)A, at, lda, (const void*)B, bt, ldb, pb, (void*)C, ct, ldc,
		               comp, -1);
	return l->gemm_sb(h, ta, tb, m, n, k, pa, (const void*)A, at, lda, sa, (const void*)B, bt, ldb, sb, pb, (void*)C, ct,
	                  ldc, sc, batch, comp, -1);
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"gorgonia.org/cu"
)

// cuBLAS enum values (cublas_api.h, library_types.h; stable since CUDA 11).
const (
	opN = 0 // CUBLAS_OP_N
	opT = 1 // CUBLAS_OP_T

	dtF32 = 0 // CUDA_R_32F
	dtF64 = 1 // CUDA_R_64F
	dtF16 = 2 // CUDA_R_16F

	compute32F     = 68 // CUBLAS_COMPUTE_32F: full float32
	compute32FTF32 = 77 // CUBLAS_COMPUTE_32F_FAST_TF32: float32 inputs rounded to TF32 on tensor cores
	compute64F     = 70 // CUBLAS_COMPUTE_64F
)

// cublasWorkspace is the workspace given to cuBLAS up front, so that it never
// allocates while a stream is being captured.
const cublasWorkspace = 32 << 20

// blas is a cuBLAS handle bound to the device's stream.
type blas struct {
	lib     *C.qcb_lib
	h       unsafe.Pointer
	ws      cu.DevicePtr
	Path    string // the library loaded
	Version int    // cublasGetVersion, e.g. 130100
}

// libCandidates is the dlopen search order of an NVIDIA library: the path in
// the environment variable env if set, then for each major version in turn
// the bare soname (ld.so cache, LD_LIBRARY_PATH), then $CUDA_HOME/lib64 and
// the usual toolkit directories, which a runfile install does not register.
func libCandidates(env, soname string, versions ...string) []string {
	dirs := []string{"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"}
	if h := os.Getenv("CUDA_HOME"); h != "" {
		dirs = append([]string{filepath.Join(h, "lib64")}, dirs...)
	}
	var out []string
	if p := os.Getenv(env); p != "" {
		out = append(out, p)
	}
	for _, v := range versions {
		out = append(out, soname+"."+v)
		for _, dir := range dirs {
			out = append(out, filepath.Join(dir, soname+"."+v))
		}
	}
	return out
}

// openBlas loads cuBLAS and makes a handle on the device's stream (the
// device's context must be current). The error lists every library tried.
func (d *Device) openBlas() (*blas, error) {
	lib := (*C.qcb_lib)(C.calloc(1, C.sizeof_qcb_lib))
	var tried []string
	for _, name := range libCandidates("QLLAMA_CUBLAS", "libcublas.so", "13", "12", "11") {
		cname := C.CString(name)
		var clt *C.char
		if filepath.IsAbs(name) {
			clt = C.CString(strings.Replace(name, "libcublas.so", "libcublasLt.so", 1))
		}
		rc := C.qcb_open(lib, cname, clt)
		C.free(unsafe.Pointer(cname))
		if clt != nil {
			C.free(unsafe.Pointer(clt))
		}
		if rc != 0 {
			tried = append(tried, fmt.Sprintf("%s (%s)", name, C.GoString(&lib.err[0])))
			continue
		}
		b := &blas{lib: lib, Path: C.GoString(&lib.path[0])}
		if st := C.qcb_create(lib, &b.h); st != 0 {
			C.free(unsafe.Pointer(lib))
			return nil, fmt.Errorf("cuda: %s loaded but cublasCreate failed with status %d", name, int(st))
		}
		var v C.int
		if C.qcb_version(lib, b.h, &v) == 0 {
			b.Version = int(v)
		}
		ws, err := d.alloc(cublasWorkspace, "the cuBLAS workspace")
		if err != nil {
			b.close()
			return nil, err
		}
		b.ws = ws
		if st := C.qcb_setup(lib, b.h, d.st.s, C.CUdeviceptr(ws), cublasWorkspace); st != 0 {
			b.close()
			return nil, fmt.Errorf("cuda: cuBLAS stream/workspace setup failed with status %d", int(st))
		}
		return b, nil
	}
	C.free(unsafe.Pointer(lib))
	return nil, fmt.Errorf("cuda: no cuBLAS library could be loaded (set QLLAMA_CUBLAS to its path); tried %s", strings.Join(tried, "; "))
}

func (b *blas) close() {
	if b == nil || b.lib == nil {
		return
	}
	if b.h != nil {
		C.qcb_destroy(b.lib, b.h)
	}
	if b.ws != 0 {
		cu.MemFree(b.ws)
	}
	C.free(unsafe.Pointer(b.lib))
	b.lib, b.h, b.ws = nil, nil, 0
}

// mat is one operand of a (strided batched) GEMM: a column-major matrix at
// ptr of element type dt with leading dimension ld, and the element stride
// between the matrices of a batch.
type mat struct {
	ptr    cu.DevicePtr
	dt     int
	ld     int64
	stride int64
}

// gemm computes C = alpha op(A) op(B) + beta C for batch matrices
// (column-major, as cuBLAS), C of m x n, on the device's stream.
func (b *blas) gemm(ta, tb int, m, n, k int64, alpha float64, A, B mat, beta float64, Cm mat, batch, compute int) error {
	for _, v := range []int64{m, n, k, A.ld, B.ld, Cm.ld} {
		if v > 1<<31-1 {
			return fmt.Errorf("cuda: GEMM dimension %d exceeds cuBLAS's int range", v)
		}
	}
	st := C.qcb_gemm(b.lib, b.h, C.int(ta), C.int(tb), C.int(m), C.int(n), C.int(k), C.double(alpha),
		C.CUdeviceptr(A.ptr), C.int(A.dt), C.int(A.ld), C.longlong(A.stride),
		C.CUdeviceptr(B.ptr), C.int(B.dt), C.int(B.ld), C.longlong(B.stride), C.double(beta),
		C.CUdeviceptr(Cm.ptr), C.int(Cm.dt), C.int(Cm.ld), C.longlong(Cm.stride), C.int(batch), C.int(compute))
	if st != 0 {
		return fmt.Errorf("cuda: cuBLAS GEMM (m=%d n=%d k=%d batch %d) failed with status %d", m, n, k, batch, int(st))
	}
	return nil
}
