//go:build cuda

// Package cuda runs an infer.Model on an NVIDIA GPU through the CUDA driver
// API (gorgonia.org/cu) and the kernels embedded by package kernels.
//
// Weights stay in their packed formats in device memory and are decoded by
// the matrix-vector kernels as they are read; activations and the KV cache
// are float32 and every kernel accumulates in float32. A forward step uploads
// one small block of per-row metadata, runs every layer without returning to
// the host, and copies back either the logits or (greedy) one id per
// sequence.
//
// Every file of this package is behind the cuda build tag: gorgonia.org/cu
// initialises the driver in its package init and exits the process when that
// fails, so CPU-only builds must never import it.
package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"unsafe"

	"gorgonia.org/cu"

	"qllama/kernels"
)

// MinDriver is the oldest CUDA driver API version that can load the embedded
// images (PTX ISA 7.8 from nvcc 11.8 needs a CUDA 11.8 driver).
const MinDriver = 11080

// Device is one GPU with the kernel modules loaded into its primary context.
// Its methods lock the calling goroutine to its OS thread while they run and
// make the context current there, so a Device may be used from any goroutine,
// but not from several at once.
type Device struct {
	dev     cu.Device
	ctx     cu.CUContext
	Name    string // e.g. "NVIDIA H100 80GB HBM3"
	SMs     int    // multiprocessors
	Major   int    // compute capability
	Minor   int
	Total   int64 // device memory, bytes
	mods    []cu.Module
	fns     map[string]cu.Function
	ImageOf map[string]string // module -> which image loaded ("fatbin" or "ptx compute_80")
	st      stream
	// fencePending is set after a copy or memset through the legacy default
	// stream (gorgonia's synchronous calls may return before a pageable
	// upload or a device copy lands); the next launch synchronises first.
	fencePending bool
	args         []uint64
	blas         *blas // cuBLAS, loaded on first use (gemm.go)
	blasErr      error
	solver       *solverLib // cuSOLVER, loaded on first use (gptq.go)
	solverErr    error
}

// Open initialises device ordinal: it checks the driver version and the
// compute capability (8.0 or newer) and loads the kernel modules.
func Open(ordinal int) (*Device, error) {
	if v := cu.Version(); v < MinDriver {
		return nil, fmt.Errorf("cuda: driver API version %d.%d is too old: the kernels need %d.%d or newer (update the NVIDIA driver)",
			v/1000, v%1000/10, MinDriver/1000, MinDriver%1000/10)
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting devices: %w", err)
	}
	if n == 0 {
		return nil, errors.New("cuda: no CUDA device found")
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d present)", ordinal, n)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d := &Device{fns: map[string]cu.Function{}, ImageOf: map[string]string{}}
	if d.dev, err = cu.GetDevice(ordinal); err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", ordinal, err)
	}
	if d.Name, err = d.dev.Name(); err != nil {
		return nil, fmt.Errorf("cuda: device %d name: %w", ordinal, err)
	}
	if d.Major, d.Minor, err = d.dev.ComputeCapability(); err != nil {
		return nil, fmt.Errorf("cuda: %s: compute capability: %w", d.Name, err)
	}
	if d.Major < 8 {
		return nil, fmt.Errorf("cuda: %s has compute capability %d.%d; the kernels need 8.0 (Ampere) or newer", d.Name, d.Major, d.Minor)
	}
	d.SMs, _ = d.dev.Attribute(cu.MultiprocessorCount)
	if d.Total, err = d.dev.TotalMem(); err != nil {
		return nil, fmt.Errorf("cuda: %s: total memory: %w", d.Name, err)
	}
	if d.ctx, err = d.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("cuda: %s: primary context: %w", d.Name, err)
	}
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		return nil, fmt.Errorf("cuda: %s: set context: %w", d.Name, err)
	}
	if d.st, err = newStream(); err != nil {
		d.closeLocked()
		return nil, err
	}
	for _, name := range kernels.Modules {
		im, err := kernels.Load(name)
		if err != nil {
			d.closeLocked()
			return nil, err
		}
		mod, err := cu.LoadData(string(im.Fatbin))
		which := "fatbin"
		if err != nil {
			log := &cu.JITErrorLogBuffer{Buffer: make([]byte, 8192)}
			var perr error
			mod, perr = cu.LoadDataEx(string(im.PTX80), log)
			if perr != nil {
				d.closeLocked()
				return nil, fmt.Errorf("cuda: loading kernel module %s: fatbin: %v; PTX compute_80: %w (JIT log: %s)", name, err, perr, cstr(log.Buffer))
			}
			which = "ptx compute_80"
		}
		d.mods = append(d.mods, mod)
		d.ImageOf[name] = which
	}
	return d, nil
}

func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// bind locks the goroutine to its thread and makes the context current; call
// the returned function when done.
func (d *Device) bind() func() {
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		// Only fails on a destroyed context; the next call reports it.
		_ = err
	}
	return runtime.UnlockOSThread
}

// Close unloads the modules and releases the primary context.
func (d *Device) Close() error {
	defer d.bind()()
	return d.closeLocked()
}

func (d *Device) closeLocked() error {
	var errs []error
	d.blas.close()
	d.blas = nil
	if d.st.s != nil {
		d.st.destroy()
		d.st = stream{}
	}
	for _, m := range d.mods {
		errs = append(errs, m.Unload())
	}
	d.mods = nil
	errs = append(errs, d.dev.ReleasePrimaryCtx())
	return errors.Join(errs...)
}

// MemInfo returns the free and total device memory in bytes.
func (d *Device) MemInfo() (free, total int64, err error) {
	defer d.bind()()
	return cu.MemInfo()
}

func (d *Device) fn(name string) (cu.Function, error) {
	if f, ok := d.fns[name]; ok {
		return f, nil
	}
	for _, m := range d.mods {
		if f, err := m.Function(name); err == nil {
			d.fns[name] = f
			return f, nil
		}
	}
	return cu.Function{}, fmt.Errorf("cuda: kernel %s not found in the embedded modules", name)
}

// dim3 is a launch grid.
type dim3 struct{ x, y, z int }

// launch runs kernel name on the default stream. Arguments may be
// cu.DevicePtr, int, int64 or float64; each is passed as 8 bytes (gorgonia's
// Launch copies 8 bytes per parameter, so kernels take long long and double).
func (d *Device) launch(name string, grid dim3, block, shmem int, args ...any) error {
	f, err := d.fn(name)
	if err != nil {
		return err
	}
	vals := d.args[:0]
	for i, a := range args {
		switch v := a.(type) {
		case cu.DevicePtr:
			vals = append(vals, uint64(v))
		case int:
			vals = append(vals, uint64(int64(v)))
		case int64:
			vals = append(vals, uint64(v))
		case float64:
			vals = append(vals, math.Float64bits(v))
		default:
			return fmt.Errorf("cuda: launch %s: argument %d has unsupported type %T", name, i, a)
		}
	}
	d.args = vals
	grid.y, grid.z = max(grid.y, 1), max(grid.z, 1)
	if grid.x <= 0 {
		return nil // nothing to do
	}
	if err := d.fence(); err != nil {
		return err
	}
	if err := d.st.launch(f, grid.x, grid.y, grid.z, block, shmem, vals); err != nil {
		return fmt.Errorf("%w (kernel %s, grid %d,%d,%d block %d)", err, name, grid.x, grid.y, grid.z, block)
	}
	return nil
}

// fence waits for copies made on the legacy default stream (see
// fencePending).
func (d *Device) fence() error {
	if !d.fencePending {
		return nil
	}
	if err := cu.Synchronize(); err != nil {
		return fmt.Errorf("cuda: %w", err)
	}
	d.fencePending = false
	return nil
}

// alloc allocates bytes of device memory for what; running out gives an
// error naming how much was needed and how much was free.
func (d *Device) alloc(bytes int64, what string) (cu.DevicePtr, error) {
	if bytes <= 0 {
		bytes = 16
	}
	p, err := cu.MemAlloc(bytes)
	if err != nil {
		free, total, ierr := cu.MemInfo()
		if ierr != nil {
			return 0, fmt.Errorf("cuda: allocating %s (%s): %w", what, mib(bytes), err)
		}
		return 0, &OOMError{What: what, Need: bytes, Free: free, Total: total, Err: err}
	}
	return p, nil
}

// OOMError reports a device allocation that did not fit.
type OOMError struct {
	What              string
	Need, Free, Total int64
	Err               error
}

func (e *OOMError) Error() string {
	return fmt.Sprintf("cuda: out of device memory for %s: needed %s, %s free of %s (%v)", e.What, mib(e.Need), mib(e.Free), mib(e.Total), e.Err)
}

func (e *OOMError) Unwrap() error { return e.Err }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// upload copies a host slice to a new device allocation.
func upload[T any](d *Device, s []T, what string) (cu.DevicePtr, error) {
	var z T
	n := int64(len(s)) * int64(unsafe.Sizeof(z))
	p, err := d.alloc(n, what)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		d.fencePending = true
		if err := cu.MemcpyHtoD(p, unsafe.Pointer(&s[0]), n); err != nil {
			cu.MemFree(p)
			return 0, fmt.Errorf("cuda: copying %s to the device: %w", what, err)
		}
	}
	return p, nil
}

// download copies len(dst) elements from p.
func download[T any](dst []T, p cu.DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	var z T
	if err := cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), p, int64(len(dst))*int64(unsafe.Sizeof(z))); err != nil {
		return fmt.Errorf("cuda: copying from the device: %w", err)
	}
	return nil
}
