package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/x448/float16"
)

// parallelMin is the element count above which conversions are split across
// goroutines.
const parallelMin = 1 << 20

// ToFloat32 converts src, little-endian elements of dtype dt (F32, F16 or
// BF16), into dst, which must hold exactly len(src)/size elements. Large
// inputs are converted in parallel.
func ToFloat32(dst []float32, src []byte, dt DType) error {
	size, err := dt.Size()
	if err != nil {
		return fmt.Errorf("safetensors: convert to float32: %w", err)
	}
	if !dt.IsFloat() {
		return fmt.Errorf("safetensors: convert %s to float32: %w", dt, ErrUnsupported)
	}
	if len(src)%size != 0 {
		return fmt.Errorf("safetensors: convert %s to float32: %d bytes is not a whole number of %d-byte elements", dt, len(src), size)
	}
	if n := len(src) / size; n != len(dst) {
		return fmt.Errorf("safetensors: convert %s to float32: %d source elements, %d destination elements", dt, n, len(dst))
	}
	var conv func(dst []float32, src []byte)
	switch dt {
	case F32:
		conv = f32ToFloat32
	case F16:
		conv = f16ToFloat32
	case BF16:
		conv = bf16ToFloat32
	}
	parallel(len(dst), func(lo, hi int) { conv(dst[lo:hi], src[lo*size:hi*size]) })
	return nil
}

// parallel calls fn over [0,n) in contiguous chunks, concurrently when n is large.
func parallel(n int, fn func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < parallelMin || workers < 2 {
		fn(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	chunk = (chunk + 63) &^ 63 // keep chunk boundaries cache-line aligned in dst
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// littleEndian reports whether the host stores integers little-endian.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

func f32ToFloat32(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	if littleEndian() {
		// Copy bytes into dst's (aligned) memory; src may be unaligned.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
		return
	}
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func bf16ToFloat32(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		v := binary.LittleEndian.Uint64(src[2*i:])
		d := dst[i : i+4 : i+4]
		d[0] = math.Float32frombits(uint32(v) << 16)
		d[1] = math.Float32frombits(uint32(v>>16) << 16)
		d[2] = math.Float32frombits(uint32(v>>32) << 16)
		d[3] = math.Float32frombits(uint32(v>>48) << 16)
	}
	for ; i < len(dst); i++ {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

func f16ToFloat32(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = f16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// f16ToF32 widens IEEE half bits to float32 exactly. Shifting the exponent and
// mantissa into float32 position and multiplying by 2^112 re-biases the
// exponent, subnormals included (the product is exact); Inf and NaN (payload
// kept, made quiet) are patched afterwards. Matches float16.Float16.Float32 on all inputs.
func f16ToF32(h uint16) float32 {
	const rebias = 0x77800000 // 2^112 as float32 bits
	em := uint32(h&0x7fff) << 13
	var b uint32
	switch {
	case em == 0x7c00<<13: // Inf
		b = 0x7f800000
	case em > 0x7c00<<13: // NaN, made quiet as F16C's vcvtph2ps does
		b = 0x7fc00000 | em
	default:
		b = math.Float32bits(math.Float32frombits(em) * math.Float32frombits(rebias))
	}
	return math.Float32frombits(b | uint32(h&0x8000)<<16)
}

// BF16FromFloat32 returns the bfloat16 bits nearest to f, rounding to nearest
// even. NaN stays NaN (made quiet, sign kept); overflow rounds to ±Inf.
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: truncation could clear the payload
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToFloat32 widens bfloat16 bits to float32 exactly.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// FromFloat32BF16 encodes src as little-endian BF16 into dst, rounding to
// nearest even with NaN preserved. It panics unless len(dst) == 2*len(src).
func FromFloat32BF16(dst []byte, src []float32) {
	if len(dst) != 2*len(src) {
		panic(fmt.Sprintf("safetensors: FromFloat32BF16: len(dst) = %d, want %d", len(dst), 2*len(src)))
	}
	parallel(len(src), func(lo, hi int) {
		d := dst[2*lo : 2*hi]
		for i, f := range src[lo:hi] {
			binary.LittleEndian.PutUint16(d[2*i:], BF16FromFloat32(f))
		}
	})
}

// FromFloat32F16 encodes src as little-endian IEEE half precision into dst,
// rounding to nearest even; NaN stays NaN and out-of-range values become ±Inf.
// It panics unless len(dst) == 2*len(src).
func FromFloat32F16(dst []byte, src []float32) {
	if len(dst) != 2*len(src) {
		panic(fmt.Sprintf("safetensors: FromFloat32F16: len(dst) = %d, want %d", len(dst), 2*len(src)))
	}
	parallel(len(src), func(lo, hi int) {
		d := dst[2*lo : 2*hi]
		for i, f := range src[lo:hi] {
			binary.LittleEndian.PutUint16(d[2*i:], float16.Fromfloat32(f).Bits())
		}
	})
}
