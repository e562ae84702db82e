package gguf

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRead feeds arbitrary bytes to NewFile. Seeds are files the writer
// produced and the hand-made valid file; go test -fuzz=FuzzRead mutates them.
// Invariants: no panic; failures are *FormatError; a parsed file's tensors
// lie inside the file, are aligned and do not overlap.
func FuzzRead(f *testing.F) {
	f.Add(encode(f, allValueKVs(), testTensors(f)))
	f.Add(encode(f, []KV{{KeyGeneralArchitecture, "llama"}}, nil))
	f.Add(encode(f, []KV{{KeyGeneralAlignment, uint32(8)}, {"x.nested", []any{[]any{[]string{"a"}}}}},
		[]TensorSpec{bytesTensor(f, "q", TypeQ8_0, []int64{2, 32}, 1), bytesTensor(f, "r", TypeQ4_K, []int64{256}, 2)}))
	f.Add(build(rawOpts{}))
	f.Add(build(rawOpts{version: 2, skipTrailingPad: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := NewFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		ts := file.Tensors()
		for i, ti := range ts {
			if ti.Offset < file.DataOffset || ti.Offset+ti.Size > int64(len(b)) || ti.Offset%file.Alignment != 0 {
				t.Fatalf("tensor %q [%d, +%d) outside the %d-byte file or misaligned", ti.Name, ti.Offset, ti.Size, len(b))
			}
			if want, err := ti.Type.RowBytes(ti.Elements()); err != nil || want != ti.Size {
				t.Fatalf("tensor %q size %d, want %d (%v)", ti.Name, ti.Size, want, err)
			}
			data, err := file.TensorData(ti.Name)
			if err != nil || int64(len(data)) != ti.Size {
				t.Fatalf("TensorData(%q): %d bytes, %v", ti.Name, len(data), err)
			}
			for _, o := range ts[i+1:] {
				if ti.Offset < o.Offset+o.Size && o.Offset < ti.Offset+ti.Size {
					t.Fatalf("tensors %q and %q overlap", ti.Name, o.Name)
				}
			}
		}
		for _, kv := range file.KVs() {
			if v, ok := file.KV(kv.Key); !ok || v == nil {
				t.Fatalf("KV %q lost", kv.Key)
			}
		}
	})
}
