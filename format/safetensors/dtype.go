package safetensors

import (
	"fmt"
	"math"
	"math/bits"
)

// DType is a safetensors element type, spelled as in the header ("F32", "BF16", ...).
type DType string

// The element types of the safetensors format. Only F32, F16 and BF16 can be
// converted to float32 by [ToFloat32]; the others are recognised so that files
// holding them parse and their sizes validate.
const (
	F64    DType = "F64"
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U8     DType = "U8"
	Bool   DType = "BOOL"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	U16    DType = "U16"
	U32    DType = "U32"
	U64    DType = "U64"
)

// Size returns the size of one element in bytes, or an error wrapping
// [ErrUnsupported] for a dtype this package does not know. This switch is the
// one table of element sizes.
func (d DType) Size() (int, error) {
	switch d {
	case F64, I64, U64:
		return 8, nil
	case F32, I32, U32:
		return 4, nil
	case F16, BF16, I16, U16:
		return 2, nil
	case I8, U8, Bool, F8E4M3, F8E5M2:
		return 1, nil
	}
	return 0, fmt.Errorf("dtype %q: %w", string(d), ErrUnsupported)
}

// IsFloat reports whether [ToFloat32] can convert d (F32, F16 or BF16).
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 }

// TensorInfo describes one tensor of a file. Begin and End are byte offsets
// relative to the start of the data section (End exclusive).
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	Begin int64
	End   int64
}

// NumElements returns the product of the shape (1 for a scalar). It returns
// -1 if a dimension is negative or the product overflows int64; tensors from a
// parsed file never do.
func (t TensorInfo) NumElements() int64 {
	n, ok := numElements(t.Shape)
	if !ok {
		return -1
	}
	return n
}

// Size returns End-Begin, the tensor's size in bytes.
func (t TensorInfo) Size() int64 { return t.End - t.Begin }

// numElements multiplies dims, reporting false on a negative dim or overflow.
func numElements(shape []int64) (int64, bool) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, false
		}
		n = lo
	}
	return int64(n), true
}

// byteSize returns numel*size of dtype, reporting false on overflow.
func byteSize(numel int64, size int) (int64, bool) {
	hi, lo := bits.Mul64(uint64(numel), uint64(size))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	return int64(lo), true
}
