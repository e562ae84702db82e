//go:build cuda

package cuda

/*
#include <cuda.h>

// qlaunch launches f with n 8-byte kernel parameters (gorgonia's Launch
// allocates twice per call; this is the hot path of a decode step).
static CUresult qlaunch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned shmem,
                        CUstream s, unsigned long long* args, int n) {
	void* p[48];
	if (n > 48) return CUDA_ERROR_INVALID_VALUE;
	for (int i = 0; i < n; i++) p[i] = &args[i];
	return cuLaunchKernel(f, gx, gy, gz, bx, 1, 1, shmem, s, p, NULL);
}

static CUresult qcapture_begin(CUstream s) { return cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL); }

static CUresult qcapture_end(CUstream s, CUgraphExec* exec) {
	CUgraph g = NULL;
	CUresult r = cuStreamEndCapture(s, &g);
	if (r != CUDA_SUCCESS) return r;
	r = cuGraphInstantiateWithFlags(exec, g, 0);
	cuGraphDestroy(g);
	return r;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// cuErr turns a driver result into an error naming the call.
func cuErr(r C.CUresult, what string) error {
	if r == C.CUDA_SUCCESS {
		return nil
	}
	var name *C.char
	C.cuGetErrorName(r, &name)
	s := fmt.Sprintf("error %d", int(r))
	if name != nil {
		s = C.GoString(name)
	}
	return fmt.Errorf("cuda: %s: %s", what, s)
}

// cfunc extracts the driver handle from a gorgonia Function (a struct
// holding only the CUfunction).
func cfunc(f cu.Function) C.CUfunction { return *(*C.CUfunction)(unsafe.Pointer(&f)) }

// stream is the device's one work stream (non-blocking: it does not wait for
// the legacy default stream, so copies made through gorgonia's synchronous
// calls are fenced explicitly, see Device.fence).
type stream struct{ s C.CUstream }

func newStream() (stream, error) {
	var s C.CUstream
	if err := cuErr(C.cuStreamCreate(&s, C.CU_STREAM_NON_BLOCKING), "cuStreamCreate"); err != nil {
		return stream{}, err
	}
	return stream{s}, nil
}

func (s stream) destroy() { C.cuStreamDestroy(s.s) }

func (s stream) launch(f cu.Function, gx, gy, gz, bx, shmem int, args []uint64) error {
	var p *C.ulonglong
	if len(args) > 0 {
		p = (*C.ulonglong)(unsafe.Pointer(&args[0]))
	}
	return cuErr(C.qlaunch(cfunc(f), C.uint(gx), C.uint(gy), C.uint(gz), C.uint(bx), C.uint(shmem), s.s, p, C.int(len(args))), "cuLaunchKernel")
}

// upload copies host bytes to dst in stream order (pageable memory is staged
// before the call returns, so src may be reused at once).
func (s stream) upload(dst cu.DevicePtr, src unsafe.Pointer, n int64) error {
	return cuErr(C.cuMemcpyHtoDAsync(C.CUdeviceptr(dst), src, C.size_t(n), s.s), "cuMemcpyHtoDAsync")
}

// zero sets n bytes (a multiple of 4) at dst to zero in stream order.
func (s stream) zero(dst cu.DevicePtr, n int64) error {
	return cuErr(C.cuMemsetD32Async(C.CUdeviceptr(dst), 0, C.size_t(n/4), s.s), "cuMemsetD32Async")
}

// copyDtoD copies n bytes between device buffers in stream order (after the
// kernels queued before it, before those queued after it).
func (s stream) copyDtoD(dst, src cu.DevicePtr, n int64) error {
	return cuErr(C.cuMemcpyDtoDAsync(C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(n), s.s), "cuMemcpyDtoDAsync")
}

func (s stream) sync() error { return cuErr(C.cuStreamSynchronize(s.s), "cuStreamSynchronize") }

// graph is an instantiated CUDA graph captured from the stream.
type graph struct{ g C.CUgraphExec }

// capture records what enqueue launches on the stream into a graph instead
// of running it.
func (s stream) capture(enqueue func() error) (graph, error) {
	if err := cuErr(C.qcapture_begin(s.s), "cuStreamBeginCapture"); err != nil {
		return graph{}, err
	}
	eerr := enqueue()
	var ex C.CUgraphExec
	cerr := cuErr(C.qcapture_end(s.s, &ex), "capturing a decode step")
	if eerr != nil {
		if cerr == nil {
			C.cuGraphExecDestroy(ex)
		}
		return graph{}, eerr
	}
	return graph{ex}, cerr
}

func (s stream) run(g graph) error { return cuErr(C.cuGraphLaunch(g.g, s.s), "cuGraphLaunch") }

func (g graph) destroy() { C.cuGraphExecDestroy(g.g) }
