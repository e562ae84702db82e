package safetensors

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"qllama/internal/testutil"
)

// FuzzParseHeader checks that ParseHeader never panics and that whatever it
// accepts satisfies the invariants the reader relies on. Seeds: the headers of
// the shared models plus small hand-written ones.
func FuzzParseHeader(f *testing.F) {
	for _, m := range []string{"stories260k", "random_llama32"} {
		b, err := os.ReadFile(filepath.Join(testutil.Shared(f, "models", m), "model.safetensors"))
		if err != nil {
			f.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(b)
		f.Add(b[8:8+n], int64(uint64(len(b))-8-n))
	}
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}}`), int64(8))
	f.Add([]byte(`{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}`), int64(4))
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{}}`), int64(8))
	f.Fuzz(func(t *testing.T, hdr []byte, dataSize int64) {
		tensors, meta, err := ParseHeader(hdr, dataSize)
		if err != nil {
			return
		}
		if meta == nil {
			t.Fatal("nil metadata without error")
		}
		for name, ti := range tensors {
			size, err := ti.DType.Size()
			if err != nil {
				t.Fatalf("%q: accepted unknown dtype %q", name, ti.DType)
			}
			n := ti.NumElements()
			if n < 0 || ti.Begin < 0 || ti.End > dataSize || ti.End-ti.Begin != n*int64(size) || ti.Name != name {
				t.Fatalf("%q: accepted invalid %+v (dataSize %d)", name, ti, dataSize)
			}
			for other, tj := range tensors {
				if other != name && ti.Begin < tj.End && tj.Begin < ti.End {
					t.Fatalf("accepted overlapping %q %+v and %q %+v", name, ti, other, tj)
				}
			}
		}
	})
}
