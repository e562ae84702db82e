package safetensors

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"unicode/utf8"
)

// WriteTensor is one tensor to write. WriteData must write exactly the
// tensor's byte size (elements × dtype size) in little-endian order.
type WriteTensor struct {
	Name      string
	DType     DType
	Shape     []int64
	WriteData func(w io.Writer) error
}

// headerAlign pads the header so that the data section starts at a multiple of
// 8 bytes, as the reference implementation does.
const headerAlign = 8

// Write writes tensors and metadata to path as a safetensors file.
//
// Tensors are laid out in name order, contiguously, whatever order they are
// given in, and the header lists __metadata__ first and then the tensors in
// name order, so the same input always gives the same bytes. Data is streamed
// through each tensor's WriteData into a temporary file in the same directory,
// which is fsynced and renamed to path; on any error or cancellation of ctx the
// temporary file is removed and path is left untouched.
func Write(ctx context.Context, path string, tensors []WriteTensor, metadata map[string]string) (err error) {
	sorted := append([]WriteTensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	sizes := make([]int64, len(sorted))
	for i, t := range sorted {
		switch {
		case t.Name == "":
			return fmt.Errorf("safetensors: write %s: empty tensor name", path)
		case t.Name == metadataKey:
			return fmt.Errorf("safetensors: write %s: tensor name %q is reserved", path, t.Name)
		case i > 0 && sorted[i-1].Name == t.Name:
			return fmt.Errorf("safetensors: write %s: duplicate tensor name %q", path, t.Name)
		case !utf8.ValidString(t.Name):
			return fmt.Errorf("safetensors: write %s: tensor name %q is not valid UTF-8", path, t.Name)
		case t.WriteData == nil:
			return fmt.Errorf("safetensors: write %s: tensor %q has no WriteData", path, t.Name)
		}
		es, err := t.DType.Size()
		if err != nil {
			return fmt.Errorf("safetensors: write %s: tensor %q: %w", path, t.Name, err)
		}
		n, ok := numElements(t.Shape)
		if !ok {
			return fmt.Errorf("safetensors: write %s: tensor %q: invalid shape %v", path, t.Name, t.Shape)
		}
		if sizes[i], ok = byteSize(n, es); !ok {
			return fmt.Errorf("safetensors: write %s: tensor %q: shape %v too large", path, t.Name, t.Shape)
		}
	}
	hdr, err := encodeHeader(sorted, sizes, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if _, err := bw.Write(hdr); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	for i, t := range sorted {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("safetensors: write %s: %w", path, err)
		}
		cw := &limitedWriter{ctx: ctx, w: bw, left: sizes[i]}
		if err := t.WriteData(cw); err != nil {
			return fmt.Errorf("safetensors: write %s: tensor %q: %w", path, t.Name, err)
		}
		if cw.left != 0 {
			return fmt.Errorf("safetensors: write %s: tensor %q: WriteData wrote %d bytes, want %d",
				path, t.Name, sizes[i]-cw.left, sizes[i])
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors: write %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if d, derr := os.Open(filepath.Dir(path)); derr == nil { // persist the rename; best effort
		d.Sync()
		d.Close()
	}
	return nil
}

// errTooMuchData is returned when WriteData writes past the tensor's size.
var errTooMuchData = errors.New("WriteData wrote more bytes than the shape and dtype imply")

// limitedWriter passes at most left bytes to w and checks ctx on every write.
type limitedWriter struct {
	ctx  context.Context
	w    io.Writer
	left int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		return 0, err
	}
	if int64(len(p)) > l.left {
		return 0, errTooMuchData
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// encodeHeader returns the 8-byte length and the padded JSON header.
func encodeHeader(tensors []WriteTensor, sizes []int64, metadata map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.Write(make([]byte, 8))
	b.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		comma()
		writeJSONString(&b, metadataKey)
		b.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
	}
	var off int64
	for i, t := range tensors {
		comma()
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeJSONString(&b, string(t.DType))
		b.WriteString(`,"shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteString(`],"data_offsets":[`)
		b.WriteString(strconv.FormatInt(off, 10))
		b.WriteByte(',')
		b.WriteString(strconv.FormatInt(off+sizes[i], 10))
		b.WriteString("]}")
		off += sizes[i]
		if off < 0 {
			return nil, errors.New("total data size overflows int64")
		}
	}
	b.WriteByte('}')
	for b.Len()%headerAlign != 0 {
		b.WriteByte(' ')
	}
	out := b.Bytes()
	n := uint64(len(out) - 8)
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	for i := 0; i < 8; i++ {
		out[i] = byte(n >> (8 * i))
	}
	return out, nil
}

// writeJSONString writes s as a JSON string literal without HTML escaping.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)           // cannot fail for a string
	b.Truncate(b.Len() - 1) // Encode appends '\n'
}
