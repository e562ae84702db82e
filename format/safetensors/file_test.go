package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

// build returns a safetensors file: 8-byte length, header, data.
func build(header string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenRealModels(t *testing.T) {
	tests := []struct {
		model    string
		count    int
		metadata map[string]string
		name     string
		want     TensorInfo
	}{
		{"stories260k", 47, map[string]string{"format": "pt"}, "model.layers.0.self_attn.k_proj.weight",
			TensorInfo{Name: "model.layers.0.self_attn.k_proj.weight", DType: F32, Shape: []int64{32, 64}, Begin: 147712, End: 155904}},
		{"random_llama32", 20, map[string]string{"format": "pt"}, "model.embed_tokens.weight",
			TensorInfo{Name: "model.embed_tokens.weight", DType: BF16, Shape: []int64{128256, 64}, Begin: 0, End: 16416768}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			path := filepath.Join(testutil.Shared(t, "models", tc.model), "model.safetensors")
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Path() != path {
				t.Errorf("Path() = %q", f.Path())
			}
			ts := f.Tensors()
			if len(ts) != tc.count {
				t.Errorf("%d tensors, want %d", len(ts), tc.count)
			}
			for i := 1; i < len(ts); i++ {
				if ts[i-1].Name >= ts[i].Name {
					t.Errorf("Tensors not sorted: %q before %q", ts[i-1].Name, ts[i].Name)
				}
			}
			if !reflect.DeepEqual(f.Metadata(), tc.metadata) {
				t.Errorf("Metadata() = %v, want %v", f.Metadata(), tc.metadata)
			}
			got, ok := f.Info(tc.name)
			if !ok || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Info(%q) = %+v, %v; want %+v", tc.name, got, ok, tc.want)
			}

			// NewFile over the same bytes must agree with the mapping, tensor by tensor.
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			g, err := NewFile(bytes.NewReader(raw), int64(len(raw)), path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g.Tensors(), ts) {
				t.Errorf("NewFile tensors differ from Open")
			}
			var total int64
			for _, ti := range ts {
				a, err := f.Data(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				b, err := g.Data(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(a, b) || int64(len(a)) != ti.End-ti.Begin {
					t.Errorf("%s: mapped and read data differ or wrong length %d", ti.Name, len(a))
				}
				if !bytes.Equal(a, raw[f.DataOffset()+ti.Begin:f.DataOffset()+ti.End]) {
					t.Errorf("%s: data not at its offsets", ti.Name)
				}
				sr, err := f.Section(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				c, _ := io.ReadAll(sr)
				if !bytes.Equal(a, c) {
					t.Errorf("%s: Section bytes differ", ti.Name)
				}
				total += ti.End - ti.Begin
			}
			// Both real files are fully indexed.
			if want := int64(len(raw)) - f.DataOffset(); total != want {
				t.Errorf("tensors cover %d bytes of a %d-byte data section", total, want)
			}
			if _, err := f.Data("nope"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Data(nope) error = %v, want ErrNotFound", err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Data(tc.name); !errors.Is(err, ErrClosed) {
				t.Errorf("Data after Close: %v", err)
			}
			if err := f.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	f32x2 := `"dtype":"F32","shape":[2]`
	tests := []struct {
		name string
		file []byte
		want string // substring of the one error
	}{
		{"empty", nil, "shorter than the 8-byte header length"},
		{"short", []byte{1, 2, 3}, "shorter than the 8-byte header length"},
		{"header length past end", append(binary.LittleEndian.AppendUint64(nil, 1000), `{}`...), "header length 1000 past end of the 10-byte file"},
		{"header length huge", append(binary.LittleEndian.AppendUint64(nil, math.MaxUint64), `{}`...), "past end of the 10-byte file"},
		{"header too short", build(`{`, nil), "too short for a JSON object"},
		{"invalid JSON", build(`{"a":`, []byte("xxxxxxxx")), "invalid JSON"},
		{"not an object", build(`[1,2]`, nil), "not a JSON object"},
		{"trailing data", build(`{} {}`, nil), "trailing data"},
		{"unknown dtype", build(`{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": unknown dtype "F33": unsupported`},
		{"negative dim", build(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)), "shape[0] = -2 is not a non-negative integer"},
		{"fractional dim", build(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, make([]byte, 8)), "shape[0] = 1.5 is not a non-negative integer"},
		{"string dim", build(`{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, make([]byte, 8)), `shape[0] = "2" is not a non-negative integer`},
		{"numel overflow", build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}`, make([]byte, 8)), "element count overflows"},
		{"byte size overflow", build(`{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}`, make([]byte, 8)), "byte size overflows"},
		{"wrong length for shape", build(`{"a":{`+f32x2+`,"data_offsets":[0,12]}}`, make([]byte, 12)), "hold 12 bytes, but shape [2] of F32 needs 8"},
		{"offset out of bounds", build(`{"a":{`+f32x2+`,"data_offsets":[8,16]}}`, make([]byte, 8)), "data_offsets [8, 16] out of bounds of the 8-byte data section"},
		{"truncated data", build(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"b":{`+f32x2+`,"data_offsets":[8,16]}}`, make([]byte, 12)), `tensor "b": data_offsets [8, 16] out of bounds of the 12-byte data section (truncated file?)`},
		{"end before begin", build(`{"a":{`+f32x2+`,"data_offsets":[8,0]}}`, make([]byte, 8)), "end before begin"},
		{"three offsets", build(`{"a":{`+f32x2+`,"data_offsets":[0,8,8]}}`, make([]byte, 8)), "data_offsets has 3 values, want 2"},
		{"negative offset", build(`{"a":{`+f32x2+`,"data_offsets":[-8,0]}}`, make([]byte, 8)), "data_offsets[0] = -8"},
		{"overlap", build(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"b":{`+f32x2+`,"data_offsets":[4,12]}}`, make([]byte, 12)), `tensor "b" [4, 12] overlaps tensor "a" [0, 8]`},
		{"contained overlap", build(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 16)), `tensor "b" [4, 8] overlaps tensor "a" [0, 16]`},
		{"duplicate name", build(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"a":{`+f32x2+`,"data_offsets":[8,16]}}`, make([]byte, 16)), `duplicate tensor name "a"`},
		{"missing dtype", build(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "missing dtype"},
		{"missing shape", build(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, make([]byte, 8)), "missing shape"},
		{"missing offsets", build(`{"a":{`+f32x2+`}}`, make([]byte, 8)), "missing data_offsets"},
		{"metadata not strings", build(`{"__metadata__":{"a":1}}`, nil), "__metadata__ must map strings to strings"},
		{"entry not object", build(`{"a":3}`, nil), `tensor "a": malformed entry`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "bad.safetensors", tc.file)
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatalf("Open succeeded, want error containing %q", tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, path) {
				t.Errorf("Open error = %q, want it to name the file and contain %q", msg, tc.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("Open error %T is not a *FormatError", err)
			}
			// NewFile must give the same error.
			_, err2 := NewFile(bytes.NewReader(tc.file), int64(len(tc.file)), path)
			if err2 == nil || err2.Error() != msg {
				t.Errorf("NewFile error = %v, want %q", err2, msg)
			}
		})
	}
}

// hugeReader claims to be a 200 MB file whose header length is 150 MB; any
// read past the length prefix fails the test, proving nothing was allocated.
type hugeReader struct{ t *testing.T }

func (h hugeReader) ReadAt(p []byte, off int64) (int, error) {
	if off != 0 || len(p) != 8 {
		h.t.Errorf("unexpected ReadAt(len %d, off %d)", len(p), off)
		return 0, io.EOF
	}
	binary.LittleEndian.PutUint64(p, 150<<20)
	return 8, nil
}

func TestHeaderLengthCap(t *testing.T) {
	_, err := NewFile(hugeReader{t}, 200<<20, "huge.safetensors")
	if err == nil || !strings.Contains(err.Error(), "exceeds the 104857600-byte limit") || !strings.Contains(err.Error(), "huge.safetensors") {
		t.Fatalf("error = %v, want header length cap", err)
	}
}

// shortReader reports a size larger than the bytes it holds.
func TestNewFileReaderShorterThanSize(t *testing.T) {
	b := build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8))
	f, err := NewFile(bytes.NewReader(b[:len(b)-4]), int64(len(b)), "short.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Data("a"); err == nil || !strings.Contains(err.Error(), `read tensor "a" (truncated file?)`) {
		t.Errorf("Data error = %v", err)
	}
}

func TestGapsAndZeroSize(t *testing.T) {
	// A gap between tensors, a zero-sized tensor and a scalar are all valid.
	hdr := `{"a":{"dtype":"F32","shape": [ 1 ] ,"data_offsets":[ 0 , 4 ]},` +
		`"z":{"dtype":"BF16","shape":[0,5],"data_offsets":[2,2]},` +
		`"s":{"dtype":"I64","shape":[],"data_offsets":[8,16]},` +
		`"__metadata__":{"k":"v"}}  `
	data := []byte{0, 0, 128, 63, 9, 9, 9, 9, 42, 0, 0, 0, 0, 0, 0, 0}
	f, err := NewFile(bytes.NewReader(build(hdr, data)), int64(8+len(hdr)+len(data)), "gaps")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
	}
	if !reflect.DeepEqual(names, []string{"a", "s", "z"}) {
		t.Errorf("names = %v", names)
	}
	s, _ := f.Info("s")
	if s.NumElements() != 1 {
		t.Errorf("scalar NumElements = %d", s.NumElements())
	}
	z, _ := f.Info("z")
	if z.NumElements() != 0 {
		t.Errorf("zero NumElements = %d", z.NumElements())
	}
	d, err := f.Data("s")
	if err != nil || binary.LittleEndian.Uint64(d) != 42 {
		t.Errorf("Data(s) = %v, %v", d, err)
	}
	if f.Metadata()["k"] != "v" {
		t.Errorf("metadata = %v", f.Metadata())
	}
}

func TestDTypeSize(t *testing.T) {
	want := map[DType]int{F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, Bool: 1, F8E4M3: 1, F8E5M2: 1}
	for dt, w := range want {
		if got, err := dt.Size(); err != nil || got != w {
			t.Errorf("%s.Size() = %d, %v; want %d", dt, got, err, w)
		}
	}
	if _, err := DType("Q4").Size(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown dtype error = %v", err)
	}
	if n := (TensorInfo{Shape: []int64{1 << 62, 4}}).NumElements(); n != -1 {
		t.Errorf("overflowing NumElements = %d, want -1", n)
	}
}
