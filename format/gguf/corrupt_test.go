package gguf

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// validRaw assembles a small valid file by hand; the options let each
// corruption case change one field.
type rawOpts struct {
	magic            string
	version          uint32
	nTensors, nKV    uint64
	kvs              func(r *raw)
	tensors          func(r *raw)
	data             []byte
	truncateDataBy   int
	skipTrailingPad  bool
	overrideCounts   bool
	extraAfterHeader []byte
}

func defaultKVs(r *raw) {
	r.kvStr("general.architecture", "llama").kvU32("general.alignment", 32)
}

func defaultTensors(r *raw) {
	r.tensor("a", []uint64{8}, TypeF32, 0).
		tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
}

func build(o rawOpts) []byte {
	if o.magic == "" {
		o.magic = "GGUF"
	}
	if o.version == 0 {
		o.version = 3
	}
	if o.kvs == nil {
		o.kvs = defaultKVs
	}
	if o.tensors == nil {
		o.tensors = defaultTensors
	}
	if !o.overrideCounts {
		o.nTensors, o.nKV = 2, 2
	}
	if o.data == nil {
		o.data = append(pattern(32, 1), pattern(34, 2)...)
	}
	var r raw
	r.b = append(r.b, o.magic...)
	r.u32(o.version).u64(o.nTensors).u64(o.nKV)
	r.raw(o.extraAfterHeader)
	o.kvs(&r)
	o.tensors(&r)
	r.pad(32)
	r.raw(o.data)
	if !o.skipTrailingPad {
		r.pad(32)
	}
	return r.b[:len(r.b)-o.truncateDataBy]
}

func TestCorruptFiles(t *testing.T) {
	kvs := func(f func(r *raw)) func(r *raw) { return f }
	ts := func(f func(r *raw)) func(r *raw) { return f }
	nested := func(depth int) func(r *raw) {
		return func(r *raw) {
			r.kvStr("general.architecture", "llama")
			r.str("deep").u32(uint32(ValueArray))
			for i := 0; i < depth; i++ {
				r.u32(uint32(ValueArray)).u64(1)
			}
			r.u32(uint32(ValueUint8)).u64(0)
		}
	}
	tests := []struct {
		name        string
		opts        rawOpts
		want        string // substring of the error; "" means the file is valid
		unsupported bool
	}{
		{"valid", rawOpts{}, "", false},
		{"valid version 2", rawOpts{version: 2}, "", false},
		{"valid without trailing padding", rawOpts{skipTrailingPad: true}, "", false},
		{"valid without alignment key", rawOpts{nKV: 1, nTensors: 2, overrideCounts: true,
			kvs: kvs(func(r *raw) { r.kvStr("general.architecture", "llama") })}, "", false},
		{"valid nested arrays", rawOpts{nKV: 2, nTensors: 2, overrideCounts: true, kvs: nested(maxNesting - 1)}, "", false},

		{"bad magic", rawOpts{magic: "GGUG"}, `bad magic "GGUG"`, false},
		{"ggml magic", rawOpts{magic: "lmgg"}, "bad magic", false},
		{"version 1", rawOpts{version: 1}, "version 1", true},
		{"version 4", rawOpts{version: 4}, "version 4", true},
		{"big-endian", rawOpts{version: 0x03000000}, "big-endian", true},
		{"kv count lies", rawOpts{nKV: 1 << 40, nTensors: 2, overrideCounts: true}, "metadata count 1099511627776 cannot fit", false},
		{"tensor count lies", rawOpts{nKV: 2, nTensors: 1 << 62, overrideCounts: true}, "tensor count 4611686018427387904 cannot fit", false},
		{"tensor count one too many", rawOpts{nKV: 2, nTensors: 3, overrideCounts: true}, "tensor 2 has an empty name", false},
		{"huge key length", rawOpts{kvs: kvs(func(r *raw) { r.u64(1 << 63) })}, "exceeds the limit of 65535", false},
		{"key past end", rawOpts{kvs: kvs(func(r *raw) { r.u64(60000) })}, "exceeds the", false},
		{"huge string value", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueString)).u64(1 << 62) })}, "exceeds the limit", false},
		{"string value past end", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueString)).u64(900) })}, "length 900 exceeds the", false},
		{"array count lies", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueArray)).u32(uint32(ValueUint32)).u64(1 << 29) })}, "array of 536870912 uint32 needs at least", false},
		{"string array count lies", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueArray)).u32(uint32(ValueString)).u64(1 << 28) })}, "needs at least", false},
		{"array count over limit", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueArray)).u32(uint32(ValueUint8)).u64(1 << 62) })}, "exceeds the limit", false},
		{"unknown value type", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(13).u32(0) })}, "unknown value type 13", false},
		{"unknown element type", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueArray)).u32(99).u64(1) })}, "unknown value type 99", false},
		{"bool byte 2", rawOpts{kvs: kvs(func(r *raw) { r.str("a.b").u32(uint32(ValueBool)).u8(2); defaultKVs(r) })}, "bool byte is 2", false},
		{"empty key", rawOpts{kvs: kvs(func(r *raw) { r.str("").u32(uint32(ValueUint8)).u8(0); defaultKVs(r) })}, "metadata key 0 is empty", false},
		{"duplicate key", rawOpts{kvs: kvs(func(r *raw) { r.kvU32("general.alignment", 32).kvU32("general.alignment", 32) })}, `duplicate metadata key "general.alignment"`, false},
		{"alignment not power of two", rawOpts{kvs: kvs(func(r *raw) { r.kvStr("general.architecture", "llama").kvU32("general.alignment", 48) })}, "48 is not a power of two", false},
		{"alignment zero", rawOpts{kvs: kvs(func(r *raw) { r.kvStr("general.architecture", "llama").kvU32("general.alignment", 0) })}, "0 is not a power of two", false},
		{"alignment wrong type", rawOpts{kvs: kvs(func(r *raw) {
			r.kvStr("general.architecture", "llama").str("general.alignment").u32(uint32(ValueUint64)).u64(32)
		})}, "holds uint64, want uint32", false},
		{"too deeply nested", rawOpts{nKV: 2, nTensors: 2, overrideCounts: true, kvs: nested(maxNesting + 1)}, "nested deeper", false},
		{"removed tensor type 4", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{32}, 4, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "unknown ggml type id 4", true},
		{"unknown tensor type 99", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8}, 99, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "unknown ggml type id 99", true},
		{"five dims", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8, 1, 1, 1, 1}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "has 5 dimensions", false},
		{"zero dims", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", nil, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "has 0 dimensions", false},
		{"zero dim", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8, 0}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "ne[1] = 0", false},
		{"negative dim", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{1 << 63}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "ne[0] = 9223372036854775808", false},
		{"element count overflow", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{1 << 32, 1 << 32}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "element count of shape [4294967296 4294967296] overflows", false},
		{"byte size overflow", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{1 << 62}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "byte size overflows", false},
		{"ragged block", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8}, TypeF32, 0).tensor("b", []uint64{33, 1}, TypeQ8_0, 32)
		})}, "not a multiple of the Q8_0 block size 32", false},
		{"misaligned offset", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 16)
		})}, "offset 16 is not a multiple of the alignment 32", false},
		{"overlap", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{16}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, `tensor "b" data`, false},
		{"data truncated", rawOpts{skipTrailingPad: true, truncateDataBy: 1}, `tensor "b": data [32, +34)`, false},
		{"offset far past end", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 1<<62)
		})}, "exceeds the", false},
		{"duplicate tensor name", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("a", []uint64{8}, TypeF32, 0).tensor("a", []uint64{32, 1}, TypeQ8_0, 32)
		})}, `duplicate tensor name "a"`, false},
		{"empty tensor name", rawOpts{tensors: ts(func(r *raw) {
			r.tensor("", []uint64{8}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "empty name", false},
		{"tensor name too long", rawOpts{tensors: ts(func(r *raw) {
			r.tensor(strings.Repeat("n", 65), []uint64{8}, TypeF32, 0).tensor("b", []uint64{32, 1}, TypeQ8_0, 32)
		})}, "exceeds the limit of 64", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := build(tt.opts)
			f, err := NewFile(bytes.NewReader(b), int64(len(b)))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid file rejected: %v", err)
				}
				if len(f.Tensors()) != 2 {
					t.Errorf("%d tensors", len(f.Tensors()))
				}
				return
			}
			if err == nil {
				t.Fatalf("corrupt file accepted, want error containing %q", tt.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if errors.Is(err, ErrUnsupported) != tt.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", !tt.unsupported, tt.unsupported)
			}
			if fe.Offset < -1 || fe.Offset > int64(len(b)) {
				t.Errorf("error offset %d outside the %d-byte file", fe.Offset, len(b))
			}
		})
	}
}

// TestTruncatedEverywhere cuts a written file at every length: a prefix is
// valid exactly when it still holds the last tensor's data (the padding after
// it is optional), and every other prefix gives a FormatError, never a panic.
func TestTruncatedEverywhere(t *testing.T) {
	b := encode(t, allValueKVs(), testTensors(t))
	full, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var end int64
	for _, ti := range full.Tensors() {
		end = max(end, ti.Offset+ti.Size)
	}
	for n := 0; n < len(b); n++ {
		_, err := NewFile(bytes.NewReader(b[:n]), int64(n))
		if int64(n) >= end {
			if err != nil {
				t.Errorf("prefix of %d bytes (data ends at %d) rejected: %v", n, end, err)
			}
			continue
		}
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("prefix of %d bytes: error %v, want *FormatError", n, err)
		}
		if n >= 24 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("prefix of %d bytes: %v does not wrap io.ErrUnexpectedEOF", n, err)
		}
	}
}
