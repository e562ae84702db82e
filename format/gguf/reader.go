package gguf

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Limits the reader applies to lengths read from a file, in addition to the
// bytes that remain in it.
const (
	// maxTensorNameRead is the longest tensor name docs/gguf.md allows.
	maxTensorNameRead = 64
	// maxStringLen caps any string, as GGUF_MAX_STRING_LENGTH in ggml's
	// src/gguf.cpp.
	maxStringLen = 1 << 30
	// maxArrayLen caps any array's element count, as GGUF_MAX_ARRAY_ELEMENTS.
	maxArrayLen = 1 << 30
)

// ErrKeyNotFound is wrapped by the typed getters when a key is absent.
var ErrKeyNotFound = errors.New("metadata key not found")

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	// Name is the tensor's name.
	Name string
	// Type is the ggml type of its data.
	Type Type
	// Shape is row-major (PyTorch order), the reverse of the ne[] stored in
	// the file.
	Shape []int64
	// Offset is the absolute byte offset of the data in the file.
	Offset int64
	// Size is the number of data bytes.
	Size int64
}

// Elements returns the number of elements of the tensor.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is a parsed GGUF file. Its metadata and tensor infos are read and
// validated when it is created; tensor data is read on demand.
type File struct {
	// Version is the GGUF version of the file (2 or 3).
	Version uint32
	// Alignment is the data alignment (general.alignment, or 32).
	Alignment int64
	// DataOffset is the absolute offset of the tensor data section.
	DataOffset int64

	path        string
	size        int64
	r           io.ReaderAt
	mem         []byte // the mapping when opened with Open
	kvs         []KV
	kvIndex     map[string]int
	tensors     []TensorInfo
	tensorIndex map[string]int
}

// Open memory-maps the file at path read-only and parses it. Call Close to
// unmap it; byte slices returned by TensorData are valid until then.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	size := st.Size()
	if size < 4 {
		return nil, &FormatError{Path: path, Offset: 0, Msg: fmt.Sprintf("file of %d bytes is too short for a GGUF header", size), Err: io.ErrUnexpectedEOF}
	}
	if int64(int(size)) != size {
		return nil, &FormatError{Path: path, Offset: -1, Msg: "file too large to map", Err: ErrUnsupported}
	}
	mem, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	f, err := parse(path, nil, mem, size)
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	return f, nil
}

// NewFile parses a GGUF file of size bytes read through r. Errors are
// *FormatError with an empty Path; Close has nothing to release.
func NewFile(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, &FormatError{Offset: -1, Msg: fmt.Sprintf("negative size %d", size)}
	}
	return parse("", r, nil, size)
}

// Close releases the memory mapping made by Open. Slices returned by
// TensorData must not be used afterwards.
func (f *File) Close() error {
	mem := f.mem
	f.mem, f.r = nil, nil
	if mem != nil {
		return unix.Munmap(mem)
	}
	return nil
}

// Path returns the path given to Open, or "" for NewFile.
func (f *File) Path() string { return f.path }

// Size returns the file size in bytes.
func (f *File) Size() int64 { return f.size }

// KVs returns the metadata in file order.
func (f *File) KVs() []KV { return slices.Clone(f.kvs) }

// KV returns the value stored under key, with the Go types listed on KV.
func (f *File) KV(key string) (any, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return nil, false
	}
	return f.kvs[i].Value, true
}

// Tensors returns the tensor infos in file order.
func (f *File) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(f.tensors))
	for i, t := range f.tensors {
		t.Shape = slices.Clone(t.Shape)
		out[i] = t
	}
	return out
}

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return TensorInfo{}, false
	}
	t := f.tensors[i]
	t.Shape = slices.Clone(t.Shape)
	return t, true
}

func (f *File) errorf(format string, args ...any) error {
	p := f.path
	if p != "" {
		p += ": "
	}
	return fmt.Errorf("gguf: "+p+format, args...)
}

// TensorData returns the bytes of the named tensor. For a file from Open the
// slice aliases the read-only mapping (do not modify it; it is valid until
// Close); for NewFile it is a fresh copy.
func (f *File) TensorData(name string) ([]byte, error) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, f.errorf("no tensor %q", name)
	}
	t := f.tensors[i]
	if f.mem != nil {
		return f.mem[t.Offset : t.Offset+t.Size : t.Offset+t.Size], nil
	}
	if f.r == nil {
		return nil, f.errorf("tensor %q: file is closed", name)
	}
	b := make([]byte, t.Size)
	if _, err := f.r.ReadAt(b, t.Offset); err != nil && !(errors.Is(err, io.EOF) && len(b) == int(t.Size)) {
		return nil, f.errorf("read tensor %q: %w", name, err)
	}
	return b, nil
}

// TensorReader returns a reader over the named tensor's bytes.
func (f *File) TensorReader(name string) (*io.SectionReader, error) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, f.errorf("no tensor %q", name)
	}
	t := f.tensors[i]
	var r io.ReaderAt = f.r
	if f.mem != nil {
		r = memReaderAt(f.mem)
	}
	if r == nil {
		return nil, f.errorf("tensor %q: file is closed", name)
	}
	return io.NewSectionReader(r, t.Offset, t.Size), nil
}

type memReaderAt []byte

func (m memReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(b, m[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// get returns the value under key as a T.
func get[T any](f *File, key, want string) (T, error) {
	var zero T
	v, ok := f.KV(key)
	if !ok {
		return zero, f.errorf("metadata key %q: %w", key, ErrKeyNotFound)
	}
	t, ok := v.(T)
	if !ok {
		return zero, f.errorf("metadata key %q holds %s, want %s", key, describe(v), want)
	}
	return t, nil
}

// describe names the GGUF type of a decoded value for error messages.
func describe(v any) string {
	vt, err := ValueTypeOf(v)
	if err != nil {
		return fmt.Sprintf("%T", v)
	}
	if vt == ValueArray {
		et, _, _ := arrayElemType(v)
		return "array of " + et.String()
	}
	return vt.String()
}

// String returns the string under key.
func (f *File) String(key string) (string, error) { return get[string](f, key, "string") }

// Bool returns the bool under key.
func (f *File) Bool(key string) (bool, error) { return get[bool](f, key, "bool") }

// Uint32 returns the uint32 under key (exactly that type).
func (f *File) Uint32(key string) (uint32, error) { return get[uint32](f, key, "uint32") }

// Int32 returns the int32 under key (exactly that type).
func (f *File) Int32(key string) (int32, error) { return get[int32](f, key, "int32") }

// Uint64 returns the uint64 under key (exactly that type).
func (f *File) Uint64(key string) (uint64, error) { return get[uint64](f, key, "uint64") }

// Int64 returns the int64 under key (exactly that type).
func (f *File) Int64(key string) (int64, error) { return get[int64](f, key, "int64") }

// Float32 returns the float32 under key (exactly that type).
func (f *File) Float32(key string) (float32, error) { return get[float32](f, key, "float32") }

// Float64 returns the float64 under key (exactly that type).
func (f *File) Float64(key string) (float64, error) { return get[float64](f, key, "float64") }

// Strings returns the array of strings under key.
func (f *File) Strings(key string) ([]string, error) {
	return get[[]string](f, key, "array of string")
}

// Int32s returns the array of int32 under key.
func (f *File) Int32s(key string) ([]int32, error) { return get[[]int32](f, key, "array of int32") }

// Uint32s returns the array of uint32 under key.
func (f *File) Uint32s(key string) ([]uint32, error) {
	return get[[]uint32](f, key, "array of uint32")
}

// Float32s returns the array of float32 under key.
func (f *File) Float32s(key string) ([]float32, error) {
	return get[[]float32](f, key, "array of float32")
}

// Uint returns an integer count stored under key with any integer type,
// widened to uint64; docs/gguf.md says counts may be uint32 or uint64 and
// readers should accept both. Negative values are an error.
func (f *File) Uint(key string) (uint64, error) {
	v, ok := f.KV(key)
	if !ok {
		return 0, f.errorf("metadata key %q: %w", key, ErrKeyNotFound)
	}
	var s int64
	switch x := v.(type) {
	case uint8:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint32:
		return uint64(x), nil
	case uint64:
		return x, nil
	case int8:
		s = int64(x)
	case int16:
		s = int64(x)
	case int32:
		s = int64(x)
	case int64:
		s = x
	default:
		return 0, f.errorf("metadata key %q holds %s, want an integer", key, describe(v))
	}
	if s < 0 {
		return 0, f.errorf("metadata key %q holds %d, want a non-negative integer", key, s)
	}
	return uint64(s), nil
}

// Float returns a float32 or float64 stored under key as a float64.
func (f *File) Float(key string) (float64, error) {
	v, ok := f.KV(key)
	if !ok {
		return 0, f.errorf("metadata key %q: %w", key, ErrKeyNotFound)
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, f.errorf("metadata key %q holds %s, want a float", key, describe(v))
}

// decoder reads GGUF primitives from a ReaderAt or a byte slice, checking
// every read against the file size.
type decoder struct {
	path   string
	r      io.ReaderAt
	mem    []byte
	size   int64
	off    int64
	buf    []byte // window of the file at bufOff, for ReaderAt input
	bufOff int64
}

func (d *decoder) fail(off int64, cause error, format string, args ...any) error {
	return &FormatError{Path: d.path, Offset: off, Msg: fmt.Sprintf(format, args...), Err: cause}
}

func (d *decoder) remaining() int64 { return d.size - d.off }

// read returns the next n bytes; the slice is valid until the next read.
func (d *decoder) read(n int64, what string) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, d.fail(d.off, io.ErrUnexpectedEOF, "%s: need %d bytes, %d remain", what, n, d.remaining())
	}
	off := d.off
	d.off += n
	if d.mem != nil {
		return d.mem[off : off+n], nil
	}
	if off >= d.bufOff && off+n <= d.bufOff+int64(len(d.buf)) {
		return d.buf[off-d.bufOff : off-d.bufOff+n], nil
	}
	chunk := min(max(n, 64<<10), d.size-off)
	if int64(cap(d.buf)) < chunk {
		d.buf = make([]byte, chunk)
	}
	d.buf = d.buf[:chunk]
	d.bufOff = off
	k, err := d.r.ReadAt(d.buf, off)
	if int64(k) < chunk {
		d.buf = d.buf[:0]
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, d.fail(off, err, "%s: read", what)
	}
	return d.buf[:n], nil
}

func (d *decoder) u8(what string) (uint8, error) {
	b, err := d.read(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (d *decoder) u16(what string) (uint16, error) {
	b, err := d.read(2, what)
	if err != nil {
		return 0, err
	}
	return uint16(b[0]) | uint16(b[1])<<8, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.read(4, what)
	if err != nil {
		return 0, err
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24, nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.read(8, what)
	if err != nil {
		return 0, err
	}
	lo := uint64(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
	hi := uint64(uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24)
	return lo | hi<<32, nil
}

// str reads a string of at most limit bytes.
func (d *decoder) str(what string, limit int64) (string, error) {
	at := d.off
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(limit) {
		return "", d.fail(at, nil, "%s: length %d exceeds the limit of %d bytes", what, n, limit)
	}
	if int64(n) > d.remaining() {
		return "", d.fail(at, io.ErrUnexpectedEOF, "%s: length %d exceeds the %d bytes remaining", what, n, d.remaining())
	}
	b, err := d.read(int64(n), what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// valueType reads a value type tag and checks it is one the spec defines.
func (d *decoder) valueType(what string) (ValueType, error) {
	at := d.off
	t, err := d.u32(what)
	if err != nil {
		return 0, err
	}
	if t > uint32(ValueFloat64) {
		return 0, d.fail(at, nil, "%s: unknown value type %d", what, t)
	}
	return ValueType(t), nil
}

// value reads one value of type vt.
func (d *decoder) value(vt ValueType, what string, depth int) (any, error) {
	switch vt {
	case ValueUint8:
		return d.u8(what)
	case ValueInt8:
		v, err := d.u8(what)
		return int8(v), err
	case ValueUint16:
		return d.u16(what)
	case ValueInt16:
		v, err := d.u16(what)
		return int16(v), err
	case ValueUint32:
		return d.u32(what)
	case ValueInt32:
		v, err := d.u32(what)
		return int32(v), err
	case ValueFloat32:
		v, err := d.u32(what)
		return math.Float32frombits(v), err
	case ValueBool:
		at := d.off
		v, err := d.u8(what)
		if err != nil {
			return nil, err
		}
		if v > 1 {
			return nil, d.fail(at, nil, "%s: bool byte is %d, want 0 or 1", what, v)
		}
		return v == 1, nil
	case ValueString:
		return d.str(what, maxStringLen)
	case ValueUint64:
		return d.u64(what)
	case ValueInt64:
		v, err := d.u64(what)
		return int64(v), err
	case ValueFloat64:
		v, err := d.u64(what)
		return math.Float64frombits(v), err
	case ValueArray:
		return d.array(what, depth+1)
	}
	return nil, d.fail(d.off, nil, "%s: unknown value type %d", what, vt)
}

// array reads an array's element type, count and elements. The count is
// checked against the bytes remaining before anything is allocated.
func (d *decoder) array(what string, depth int) (any, error) {
	at := d.off
	if depth > maxNesting {
		return nil, d.fail(at, nil, "%s: arrays nested deeper than %d", what, maxNesting)
	}
	et, err := d.valueType(what + " element type")
	if err != nil {
		return nil, err
	}
	n64, err := d.u64(what + " element count")
	if err != nil {
		return nil, err
	}
	minSize := uint64(et.minSize())
	if n64 > maxArrayLen {
		return nil, d.fail(at, nil, "%s: array of %d elements exceeds the limit of %d", what, n64, maxArrayLen)
	}
	if n64*minSize > uint64(d.remaining()) {
		return nil, d.fail(at, io.ErrUnexpectedEOF, "%s: array of %d %s needs at least %d bytes, %d remain",
			what, n64, et, n64*minSize, d.remaining())
	}
	n := int(n64)
	switch et {
	case ValueUint8:
		b, err := d.read(int64(n), what)
		if err != nil {
			return nil, err
		}
		return slices.Clone(b)[:n:n], nil
	case ValueInt8:
		return readArray(d, n, func() (int8, error) { v, err := d.u8(what); return int8(v), err })
	case ValueUint16:
		return readArray(d, n, func() (uint16, error) { return d.u16(what) })
	case ValueInt16:
		return readArray(d, n, func() (int16, error) { v, err := d.u16(what); return int16(v), err })
	case ValueUint32:
		return readArray(d, n, func() (uint32, error) { return d.u32(what) })
	case ValueInt32:
		return readArray(d, n, func() (int32, error) { v, err := d.u32(what); return int32(v), err })
	case ValueFloat32:
		return readArray(d, n, func() (float32, error) { v, err := d.u32(what); return math.Float32frombits(v), err })
	case ValueBool:
		return readArray(d, n, func() (bool, error) { v, err := d.value(ValueBool, what, depth); b, _ := v.(bool); return b, err })
	case ValueString:
		return readArray(d, n, func() (string, error) { return d.str(what, maxStringLen) })
	case ValueUint64:
		return readArray(d, n, func() (uint64, error) { return d.u64(what) })
	case ValueInt64:
		return readArray(d, n, func() (int64, error) { v, err := d.u64(what); return int64(v), err })
	case ValueFloat64:
		return readArray(d, n, func() (float64, error) { v, err := d.u64(what); return math.Float64frombits(v), err })
	case ValueArray:
		return readArray(d, n, func() (any, error) { return d.array(what, depth+1) })
	}
	return nil, d.fail(at, nil, "%s: unknown element type %d", what, et)
}

func readArray[T any](d *decoder, n int, next func() (T, error)) ([]T, error) {
	out := make([]T, n)
	for i := range out {
		v, err := next()
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// Minimum encoded sizes used to bound header counts: a KV is a non-empty key
// (8+1), a type (4) and at least one byte of value; a tensor info is a
// non-empty name (8+1), n_dims (4), one dimension (8), a type (4) and an
// offset (8).
const (
	minKVSize         = 8 + 1 + 4 + 1
	minTensorInfoSize = 8 + 1 + 4 + 8 + 4 + 8
)

// parse reads and validates the header, metadata and tensor infos.
func parse(path string, r io.ReaderAt, mem []byte, size int64) (*File, error) {
	d := &decoder{path: path, r: r, mem: mem, size: size}
	magic, err := d.read(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != "GGUF" {
		return nil, d.fail(0, nil, "bad magic %q, want \"GGUF\"", magic)
	}
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, d.fail(4, ErrUnsupported, "GGUF version 1 (only 2 and 3 are read)")
	case version&0xffff == 0:
		return nil, d.fail(4, ErrUnsupported, "GGUF version %d (0x%08x): a big-endian file?", version, version)
	default:
		return nil, d.fail(4, ErrUnsupported, "GGUF version %d (only 2 and 3 are read)", version)
	}
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	if nKV > uint64(d.remaining()/minKVSize) {
		return nil, d.fail(16, io.ErrUnexpectedEOF, "metadata count %d cannot fit in the %d bytes remaining", nKV, d.remaining())
	}
	if nTensors > uint64(d.remaining()/minTensorInfoSize) {
		return nil, d.fail(8, io.ErrUnexpectedEOF, "tensor count %d cannot fit in the %d bytes remaining", nTensors, d.remaining())
	}

	f := &File{
		Version:     version,
		Alignment:   DefaultAlignment,
		path:        path,
		size:        size,
		r:           r,
		mem:         mem,
		kvs:         make([]KV, 0, nKV),
		kvIndex:     make(map[string]int, nKV),
		tensors:     make([]TensorInfo, 0, nTensors),
		tensorIndex: make(map[string]int, nTensors),
	}
	for i := uint64(0); i < nKV; i++ {
		at := d.off
		key, err := d.str(fmt.Sprintf("metadata key %d", i), maxKeyLen)
		if err != nil {
			return nil, err
		}
		if key == "" {
			return nil, d.fail(at, nil, "metadata key %d is empty", i)
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, d.fail(at, nil, "duplicate metadata key %q", key)
		}
		what := fmt.Sprintf("metadata key %q", key)
		vt, err := d.valueType(what + " value type")
		if err != nil {
			return nil, err
		}
		vat := d.off
		v, err := d.value(vt, what, 0)
		if err != nil {
			return nil, err
		}
		if key == KeyGeneralAlignment {
			a, ok := v.(uint32)
			if !ok {
				return nil, d.fail(vat, nil, "%s holds %s, want uint32", what, describe(v))
			}
			if a == 0 || a&(a-1) != 0 {
				return nil, d.fail(vat, nil, "%s = %d is not a power of two", what, a)
			}
			f.Alignment = int64(a)
		}
		f.kvIndex[key] = len(f.kvs)
		f.kvs = append(f.kvs, KV{Key: key, Value: v})
	}

	for i := uint64(0); i < nTensors; i++ {
		at := d.off
		name, err := d.str(fmt.Sprintf("tensor %d name", i), maxTensorNameRead)
		if err != nil {
			return nil, err
		}
		if name == "" {
			return nil, d.fail(at, nil, "tensor %d has an empty name", i)
		}
		if _, dup := f.tensorIndex[name]; dup {
			return nil, d.fail(at, nil, "duplicate tensor name %q", name)
		}
		what := fmt.Sprintf("tensor %q", name)
		nat := d.off
		nDims, err := d.u32(what + " dimension count")
		if err != nil {
			return nil, err
		}
		if nDims == 0 || nDims > MaxDims {
			return nil, d.fail(nat, nil, "%s has %d dimensions, want 1 to %d", what, nDims, MaxDims)
		}
		ne := make([]int64, nDims)
		for j := range ne {
			dat := d.off
			v, err := d.u64(what + " dimension")
			if err != nil {
				return nil, err
			}
			if v == 0 || v > math.MaxInt64 {
				return nil, d.fail(dat, nil, "%s dimension ne[%d] = %d, want 1 to 2^63-1", what, j, v)
			}
			ne[j] = int64(v)
		}
		tat := d.off
		typ, err := d.u32(what + " type")
		if err != nil {
			return nil, err
		}
		if !Type(typ).Known() {
			return nil, d.fail(tat, ErrUnsupported, "%s has unknown ggml type id %d", what, typ)
		}
		oat := d.off
		rel, err := d.u64(what + " offset")
		if err != nil {
			return nil, err
		}
		shape := ggmlDims(ne)
		_, nbytes, err := checkShape(Type(typ), shape)
		if err != nil {
			return nil, d.fail(nat, nil, "%s (%v, ggml ne %v): %v", what, Type(typ), ne, err)
		}
		if rel%uint64(f.Alignment) != 0 {
			return nil, d.fail(oat, nil, "%s data offset %d is not a multiple of the alignment %d", what, rel, f.Alignment)
		}
		f.tensorIndex[name] = len(f.tensors)
		f.tensors = append(f.tensors, TensorInfo{
			Name: name, Type: Type(typ), Shape: shape,
			Offset: int64(min(rel, math.MaxInt64)), // made absolute below, after range checks
			Size:   nbytes,
		})
	}

	f.DataOffset = alignUp(d.off, f.Alignment)
	if len(f.tensors) > 0 && f.DataOffset > size {
		return nil, d.fail(d.off, io.ErrUnexpectedEOF, "tensor data section at %d starts past the end of the %d-byte file", f.DataOffset, size)
	}
	avail := size - f.DataOffset
	for i := range f.tensors {
		t := &f.tensors[i]
		if t.Offset > avail || t.Size > avail-t.Offset {
			return nil, d.fail(f.DataOffset, io.ErrUnexpectedEOF,
				"tensor %q: data [%d, +%d) relative to the data section at %d exceeds the %d-byte file (truncated?)",
				t.Name, t.Offset, t.Size, f.DataOffset, size)
		}
		t.Offset += f.DataOffset
	}
	order := make([]int, len(f.tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return int(min(max(f.tensors[a].Offset-f.tensors[b].Offset, -1), 1))
	})
	for k := 1; k < len(order); k++ {
		p, q := f.tensors[order[k-1]], f.tensors[order[k]]
		if p.Offset+p.Size > q.Offset {
			return nil, d.fail(q.Offset, nil, "tensor %q data [%d, %d) overlaps tensor %q data [%d, %d)",
				q.Name, q.Offset, q.Offset+q.Size, p.Name, p.Offset, p.Offset+p.Size)
		}
	}
	return f, nil
}
