package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// File is an opened safetensors file. Tensor data is read on demand: from a
// read-only memory mapping for files from [Open], through the io.ReaderAt for
// files from [NewFile]. A File is safe for concurrent use until Close.
type File struct {
	path     string
	r        io.ReaderAt // data source when not mapped
	mapping  []byte      // whole file when mapped, else nil
	unmap    func() error
	closer   io.Closer
	size     int64 // file size
	dataOff  int64 // file offset of the data section
	tensors  map[string]TensorInfo
	sorted   []TensorInfo
	metadata map[string]string
	closed   bool
}

// Open memory-maps the named file read-only and validates its header (see
// [ParseHeader]). The file is never read whole into memory. Close releases
// the mapping; slices returned by [File.Data] are invalid afterwards.
func Open(path string) (*File, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer osf.Close() // the mapping outlives the descriptor
	st, err := osf.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, &FormatError{Path: path, Offset: -1, Msg: "not a regular file"}
	}
	size := st.Size()
	if size > math.MaxInt {
		return nil, &FormatError{Path: path, Offset: -1, Msg: fmt.Sprintf("file size %d too large to map", size)}
	}
	// Check the header length against the file before mapping anything.
	if _, err := readHeaderLen(osf, size); err != nil {
		return nil, withPath(err, path)
	}
	mapping, unmap, err := mmapFile(osf, size)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: map: %w", path, err)
	}
	f, err := newFile(bytes.NewReader(mapping), size, path)
	if err != nil {
		unmap()
		return nil, err
	}
	f.r = nil
	f.mapping = mapping
	f.unmap = unmap
	return f, nil
}

// NewFile reads a safetensors file of the given size from r; name is used in
// errors and returned by [File.Path]. Only the header is read now; tensor data
// is read by [File.Data] into a fresh slice. If r is an io.Closer, Close
// closes it.
func NewFile(r io.ReaderAt, size int64, name string) (*File, error) {
	f, err := newFile(r, size, name)
	if err != nil {
		return nil, err
	}
	if c, ok := r.(io.Closer); ok {
		f.closer = c
	}
	return f, nil
}

// readHeaderLen reads and checks the 8-byte header length of a size-byte file.
func readHeaderLen(r io.ReaderAt, size int64) (int64, error) {
	if size < 8 {
		return 0, &FormatError{Offset: 0, Msg: fmt.Sprintf("file is %d bytes, shorter than the 8-byte header length (truncated file?)", size)}
	}
	var lb [8]byte
	if _, err := r.ReadAt(lb[:], 0); err != nil {
		return 0, &FormatError{Offset: 0, Msg: "read header length", Err: err}
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > uint64(size-8) {
		return 0, &FormatError{Offset: 0, Msg: fmt.Sprintf("header length %d past end of the %d-byte file (truncated file?)", n, size)}
	}
	if n > MaxHeaderSize {
		return 0, &FormatError{Offset: 0, Msg: fmt.Sprintf("header length %d exceeds the %d-byte limit", n, MaxHeaderSize)}
	}
	if n < 2 {
		return 0, &FormatError{Offset: 0, Msg: fmt.Sprintf("header length %d too short for a JSON object", n)}
	}
	return int64(n), nil
}

func newFile(r io.ReaderAt, size int64, name string) (*File, error) {
	if size < 0 || size > math.MaxInt {
		return nil, &FormatError{Path: name, Offset: -1, Msg: fmt.Sprintf("invalid file size %d", size)}
	}
	n, err := readHeaderLen(r, size)
	if err != nil {
		return nil, withPath(err, name)
	}
	hdr := make([]byte, n) // n <= MaxHeaderSize and <= size-8, checked above
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, &FormatError{Path: name, Offset: 8, Msg: "read header (truncated file?)", Err: err}
	}
	tensors, metadata, err := ParseHeader(hdr, size-8-n)
	if err != nil {
		return nil, withPath(err, name)
	}
	sorted := make([]TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		sorted = append(sorted, t)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	return &File{
		path: name, r: r, size: size, dataOff: 8 + n,
		tensors: tensors, sorted: sorted, metadata: metadata,
	}, nil
}

// Path returns the name the file was opened with.
func (f *File) Path() string { return f.path }

// Tensors returns the tensors sorted by name. The slice is a copy; the Shape
// slices are shared and must not be modified.
func (f *File) Tensors() []TensorInfo {
	return append([]TensorInfo(nil), f.sorted...)
}

// Info returns the named tensor's description.
func (f *File) Info(name string) (TensorInfo, bool) {
	t, ok := f.tensors[name]
	return t, ok
}

// Metadata returns a copy of the header's __metadata__ map.
func (f *File) Metadata() map[string]string {
	m := make(map[string]string, len(f.metadata))
	for k, v := range f.metadata {
		m[k] = v
	}
	return m
}

// DataOffset returns the file offset of the data section.
func (f *File) DataOffset() int64 { return f.dataOff }

// ErrNotFound is wrapped by errors about a tensor name a file does not hold.
var ErrNotFound = errors.New("tensor not found")

// ErrClosed is returned by methods called after [File.Close].
var ErrClosed = errors.New("safetensors: file closed")

// Data returns the named tensor's raw little-endian bytes. For a mapped file
// it is a slice of the read-only mapping (do not modify it; it is invalid
// after Close); otherwise a freshly read copy.
func (f *File) Data(name string) ([]byte, error) {
	if f.closed {
		return nil, ErrClosed
	}
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: %q: %w", f.path, name, ErrNotFound)
	}
	begin, end := f.dataOff+t.Begin, f.dataOff+t.End // within size, checked by ParseHeader
	if f.mapping != nil {
		return f.mapping[begin:end:end], nil
	}
	buf := make([]byte, end-begin)
	if _, err := f.r.ReadAt(buf, begin); err != nil {
		return nil, &FormatError{Path: f.path, Offset: begin, Msg: fmt.Sprintf("read tensor %q (truncated file?)", name), Err: err}
	}
	return buf, nil
}

// Section returns a reader over the named tensor's raw bytes.
func (f *File) Section(name string) (*io.SectionReader, error) {
	if f.closed {
		return nil, ErrClosed
	}
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: %q: %w", f.path, name, ErrNotFound)
	}
	var r io.ReaderAt = f.r
	if f.mapping != nil {
		r = bytes.NewReader(f.mapping)
	}
	return io.NewSectionReader(r, f.dataOff+t.Begin, t.End-t.Begin), nil
}

// Close releases the mapping (or closes the underlying reader if it is an
// io.Closer). Calling Close more than once is harmless.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	var err error
	if f.unmap != nil {
		err = f.unmap()
	}
	if f.closer != nil {
		if cerr := f.closer.Close(); err == nil {
			err = cerr
		}
	}
	f.mapping = nil
	return err
}
