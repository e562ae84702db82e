package safetensors

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// bytesTensor returns a WriteTensor whose data is b.
func bytesTensor(name string, dt DType, shape []int64, b []byte) WriteTensor {
	return WriteTensor{Name: name, DType: dt, Shape: shape, WriteData: func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}}
}

func TestWriteRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	type tensor struct {
		name  string
		dt    DType
		shape []int64
		data  []byte
	}
	in := []tensor{
		{"z.weight", F32, []int64{3, 5}, randBytes(60)},
		{"a.bias", BF16, []int64{7}, randBytes(14)},
		{"m<&>\"quoted\"", F16, []int64{2, 2, 2}, randBytes(16)},
		{"scalar", I64, []int64{}, randBytes(8)},
		{"empty", U8, []int64{0, 4}, nil},
		{"bools", Bool, []int64{3}, []byte{1, 0, 1}},
	}
	meta := map[string]string{"format": "pt", "note": "ünïcode \"q\""}
	var wts []WriteTensor
	for _, x := range in {
		wts = append(wts, bytesTensor(x.name, x.dt, x.shape, x.data))
	}
	dir := t.TempDir()
	p1 := filepath.Join(dir, "a.safetensors")
	if err := Write(context.Background(), p1, wts, meta); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !reflect.DeepEqual(f.Metadata(), meta) {
		t.Errorf("metadata = %v", f.Metadata())
	}
	if f.DataOffset()%8 != 0 {
		t.Errorf("data section at %d, not 8-aligned", f.DataOffset())
	}
	var prevEnd int64
	for _, ti := range f.Tensors() { // contiguous in name order
		if ti.Begin != prevEnd {
			t.Errorf("%s begins at %d, want %d", ti.Name, ti.Begin, prevEnd)
		}
		prevEnd = ti.End
	}
	for _, x := range in {
		ti, ok := f.Info(x.name)
		if !ok {
			t.Fatalf("%q missing", x.name)
		}
		if ti.DType != x.dt || !reflect.DeepEqual(ti.Shape, x.shape) {
			t.Errorf("%q: got %s %v, want %s %v", x.name, ti.DType, ti.Shape, x.dt, x.shape)
		}
		d, err := f.Data(x.name)
		if err != nil || !bytes.Equal(d, x.data) {
			t.Errorf("%q: data mismatch (%v)", x.name, err)
		}
	}

	// Deterministic: reversed input order gives identical bytes.
	rev := append([]WriteTensor(nil), wts...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	p2 := filepath.Join(dir, "b.safetensors")
	if err := Write(context.Background(), p2, rev, meta); err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) {
		t.Error("same tensors in another order gave different bytes")
	}
	if n := binary.LittleEndian.Uint64(b1); (8+n)%8 != 0 {
		t.Errorf("header length %d leaves data unaligned", n)
	}
}

func TestWriteErrors(t *testing.T) {
	ok := bytesTensor("a", F32, []int64{2}, make([]byte, 8))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		tensors []WriteTensor
		want    string
	}{
		{"short data", context.Background(), []WriteTensor{ok, bytesTensor("b", F32, []int64{2}, make([]byte, 7))}, `tensor "b": WriteData wrote 7 bytes, want 8`},
		{"long data", context.Background(), []WriteTensor{bytesTensor("b", BF16, []int64{2}, make([]byte, 5))}, `tensor "b": WriteData wrote more bytes`},
		{"duplicate", context.Background(), []WriteTensor{ok, ok}, `duplicate tensor name "a"`},
		{"reserved", context.Background(), []WriteTensor{bytesTensor("__metadata__", U8, nil, []byte{1})}, "reserved"},
		{"empty name", context.Background(), []WriteTensor{bytesTensor("", U8, nil, []byte{1})}, "empty tensor name"},
		{"unknown dtype", context.Background(), []WriteTensor{bytesTensor("a", "Q4", []int64{1}, nil)}, `dtype "Q4": unsupported`},
		{"negative shape", context.Background(), []WriteTensor{bytesTensor("a", U8, []int64{-1}, nil)}, "invalid shape [-1]"},
		{"no WriteData", context.Background(), []WriteTensor{{Name: "a", DType: U8, Shape: []int64{1}}}, "no WriteData"},
		{"WriteData error", context.Background(), []WriteTensor{{Name: "a", DType: U8, Shape: []int64{1}, WriteData: func(io.Writer) error { return io.ErrUnexpectedEOF }}}, "unexpected EOF"},
		{"cancelled", cancelled, []WriteTensor{ok}, "context canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "out.safetensors")
			err := Write(tc.ctx, p, tc.tensors, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error = %v, want one naming %s and containing %q", err, p, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("directory not clean after failed write: %v", ents)
			}
		})
	}
}

// A cancellation during WriteData aborts the write and keeps the old file.
func TestWriteCancelMidway(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.safetensors")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tensors := []WriteTensor{{Name: "a", DType: U8, Shape: []int64{4}, WriteData: func(w io.Writer) error {
		if _, err := w.Write([]byte{1, 2}); err != nil {
			return err
		}
		cancel()
		_, err := w.Write([]byte{3, 4})
		return err
	}}}
	if err := Write(ctx, p, tensors, nil); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("error = %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("destination changed to %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary file left behind: %v", ents)
	}
}
