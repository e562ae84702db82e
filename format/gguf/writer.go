package gguf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Version is the GGUF version this package writes.
const Version = 3

// DefaultAlignment is the data alignment written as general.alignment unless
// the caller supplies its own (and the alignment a reader assumes when the key
// is absent, per docs/gguf.md).
const DefaultAlignment = 32

// MaxTensorNameLen is the longest tensor name the writer accepts: llama.cpp
// rejects names of GGML_MAX_NAME (64) bytes or more (ggml src/gguf.cpp).
const MaxTensorNameLen = 63

// maxKeyLen is the longest metadata key allowed by docs/gguf.md (2^16-1).
const maxKeyLen = 1<<16 - 1

// Well-known keys the container itself interprets.
const (
	KeyGeneralArchitecture = "general.architecture"
	KeyGeneralAlignment    = "general.alignment"
)

// TensorSpec describes one tensor to write.
type TensorSpec struct {
	// Name is the tensor name, 1 to MaxTensorNameLen bytes, unique in the file.
	Name string
	// Type is the ggml type of the stored data.
	Type Type
	// Shape is row-major (PyTorch order): the last dimension is contiguous.
	// It is stored reversed, in ggml order (see the package comment).
	Shape []int64
	// WriteData writes the tensor's bytes, exactly Size() of them, in ggml's
	// layout for Type (whole blocks along the last dimension, rows in order).
	WriteData func(w io.Writer) error
}

// Size returns the number of data bytes of the tensor, or an error when the
// type or shape is invalid.
func (s TensorSpec) Size() (int64, error) {
	_, size, err := checkShape(s.Type, s.Shape)
	return size, err
}

// plan is the validated layout of a file to write.
type plan struct {
	kvs       []KV
	alignment int64
	tensors   []TensorSpec
	sizes     []int64
	offsets   []int64 // relative to the start of the data section
}

// newPlan validates the input and computes the key order and every tensor
// offset before any byte is written.
func newPlan(kvs []KV, tensors []TensorSpec) (*plan, error) {
	p := &plan{alignment: DefaultAlignment}
	seen := make(map[string]bool, len(kvs)+1)
	hasAlignment := false
	for _, kv := range kvs {
		if err := checkKey(kv.Key); err != nil {
			return nil, err
		}
		if seen[kv.Key] {
			return nil, fmt.Errorf("duplicate metadata key %q", kv.Key)
		}
		seen[kv.Key] = true
		if err := checkValue(kv.Value, 0); err != nil {
			return nil, fmt.Errorf("metadata key %q: %w", kv.Key, err)
		}
		switch kv.Key {
		case KeyGeneralArchitecture:
			if _, ok := kv.Value.(string); !ok {
				return nil, fmt.Errorf("metadata key %q must be a string, not %T", kv.Key, kv.Value)
			}
		case KeyGeneralAlignment:
			a, ok := kv.Value.(uint32)
			if !ok {
				return nil, fmt.Errorf("metadata key %q must be a uint32, not %T", kv.Key, kv.Value)
			}
			if a < 8 || a&(a-1) != 0 {
				return nil, fmt.Errorf("metadata key %q = %d: want a power of two >= 8", kv.Key, a)
			}
			p.alignment = int64(a)
			hasAlignment = true
		}
		p.kvs = append(p.kvs, kv)
	}
	if !hasAlignment {
		p.kvs = append(p.kvs, KV{KeyGeneralAlignment, uint32(DefaultAlignment)})
	}
	slices.SortFunc(p.kvs, func(a, b KV) int {
		switch {
		case a.Key == b.Key:
			return 0
		case a.Key == KeyGeneralArchitecture:
			return -1
		case b.Key == KeyGeneralArchitecture:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})

	names := make(map[string]bool, len(tensors))
	var off int64
	for i, t := range tensors {
		if t.Name == "" || len(t.Name) > MaxTensorNameLen {
			return nil, fmt.Errorf("tensor %d: name %q must be 1 to %d bytes", i, t.Name, MaxTensorNameLen)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		names[t.Name] = true
		size, err := t.Size()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if t.WriteData == nil {
			return nil, fmt.Errorf("tensor %q: WriteData is nil", t.Name)
		}
		if off > math.MaxInt64-size-p.alignment {
			return nil, fmt.Errorf("tensor %q: data section overflows int64", t.Name)
		}
		p.tensors = append(p.tensors, t)
		p.sizes = append(p.sizes, size)
		p.offsets = append(p.offsets, off)
		off = alignUp(off+size, p.alignment)
	}
	return p, nil
}

// checkKey enforces docs/gguf.md's key rules that matter for readers:
// non-empty, at most 65535 bytes, printable ASCII.
func checkKey(k string) error {
	if k == "" || len(k) > maxKeyLen {
		return fmt.Errorf("metadata key %q must be 1 to %d bytes", k, maxKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return fmt.Errorf("metadata key %q: byte %d is not printable ASCII", k, i)
		}
	}
	return nil
}

// alignUp rounds off up to a multiple of the power of two a.
func alignUp(off, a int64) int64 {
	return (off + a - 1) &^ (a - 1)
}

// Write writes a GGUF v3 file to path atomically: it writes a temporary file
// in the same directory, syncs it, renames it over path and syncs the
// directory. On any error, including cancellation of ctx, the temporary file
// is removed and path is left as it was.
func Write(ctx context.Context, path string, kvs []KV, tensors []TensorSpec) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("gguf: write %s: %w", path, err)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := Encode(ctx, bw, kvs, tensors); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil // the file is in place; the directory sync is best effort
	}
	d.Sync()
	d.Close()
	return nil
}

// Encode writes a GGUF v3 stream to w: the header, the metadata (with
// general.alignment added when absent; general.architecture first, the other
// keys sorted), the tensor infos in the given order, and each tensor's data
// from its WriteData callback, zero-padded to the alignment after each
// tensor. The input is validated completely before the first byte is written.
// Encode checks ctx between tensors and on every write of tensor data.
func Encode(ctx context.Context, w io.Writer, kvs []KV, tensors []TensorSpec) error {
	p, err := newPlan(kvs, tensors)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e := &encoder{w: w}
	e.bytes([]byte("GGUF"))
	e.u32(Version)
	e.u64(uint64(len(p.tensors)))
	e.u64(uint64(len(p.kvs)))
	for _, kv := range p.kvs {
		e.str(kv.Key)
		vt, _ := ValueTypeOf(kv.Value)
		e.u32(uint32(vt))
		e.value(kv.Value)
	}
	for i, t := range p.tensors {
		e.str(t.Name)
		ne := ggmlDims(t.Shape)
		e.u32(uint32(len(ne)))
		for _, d := range ne {
			e.u64(uint64(d))
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(p.offsets[i]))
	}
	e.pad(p.alignment)
	if e.err != nil {
		return e.err
	}
	start := e.n
	for i, t := range p.tensors {
		if err := ctx.Err(); err != nil {
			return err
		}
		if got, want := e.n-start, p.offsets[i]; got != want {
			return fmt.Errorf("internal error: tensor %q at data offset %d, planned %d", t.Name, got, want)
		}
		xw := &exactWriter{ctx: ctx, e: e, remain: p.sizes[i]}
		if err := t.WriteData(xw); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if e.err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, e.err)
		}
		if xw.remain != 0 {
			return fmt.Errorf("tensor %q: WriteData wrote %d bytes, want %d",
				t.Name, p.sizes[i]-xw.remain, p.sizes[i])
		}
		e.pad(p.alignment)
	}
	return e.err
}

// errTooLong is returned by exactWriter when a callback writes past the size.
var errTooLong = errors.New("WriteData wrote more bytes than the tensor's size")

// exactWriter passes tensor bytes to the encoder and refuses more than the
// tensor's size.
type exactWriter struct {
	ctx    context.Context
	e      *encoder
	remain int64
}

func (x *exactWriter) Write(b []byte) (int, error) {
	if err := x.ctx.Err(); err != nil {
		return 0, err
	}
	if int64(len(b)) > x.remain {
		return 0, fmt.Errorf("%w (%d bytes over)", errTooLong, int64(len(b))-x.remain)
	}
	x.e.bytes(b)
	if x.e.err != nil {
		return 0, x.e.err
	}
	x.remain -= int64(len(b))
	return len(b), nil
}

// encoder writes little-endian GGUF primitives, counting bytes and keeping
// the first error.
type encoder struct {
	w   io.Writer
	n   int64
	err error
	buf [8]byte
}

func (e *encoder) bytes(b []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(b)
	e.n += int64(n)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	e.err = err
}

func (e *encoder) u8(v uint8) { e.buf[0] = v; e.bytes(e.buf[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.bytes(e.buf[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.bytes(e.buf[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.bytes(e.buf[:8])
}
func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	e.bytes([]byte(s))
}

var zeros [256]byte

func (e *encoder) pad(a int64) {
	n := alignUp(e.n, a) - e.n
	for n > 0 {
		k := min(n, int64(len(zeros)))
		e.bytes(zeros[:k])
		n -= k
	}
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// value writes v without its type tag; v has passed checkValue.
func (e *encoder) value(v any) {
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		e.u8(boolByte(x))
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	default:
		et, n, _ := arrayElemType(v)
		e.u32(uint32(et))
		e.u64(uint64(n))
		e.array(v)
	}
}

func (e *encoder) array(v any) {
	switch a := v.(type) {
	case []uint8:
		e.bytes(a)
	case []int8:
		for _, x := range a {
			e.u8(uint8(x))
		}
	case []uint16:
		for _, x := range a {
			e.u16(x)
		}
	case []int16:
		for _, x := range a {
			e.u16(uint16(x))
		}
	case []uint32:
		for _, x := range a {
			e.u32(x)
		}
	case []int32:
		for _, x := range a {
			e.u32(uint32(x))
		}
	case []float32:
		for _, x := range a {
			e.u32(math.Float32bits(x))
		}
	case []bool:
		for _, x := range a {
			e.u8(boolByte(x))
		}
	case []string:
		for _, x := range a {
			e.str(x)
		}
	case []uint64:
		for _, x := range a {
			e.u64(x)
		}
	case []int64:
		for _, x := range a {
			e.u64(uint64(x))
		}
	case []float64:
		for _, x := range a {
			e.u64(math.Float64bits(x))
		}
	case []any:
		for _, x := range a {
			e.value(x)
		}
	}
}
