package gguf

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"path/filepath"
	"testing"
)

// pattern returns n deterministic pseudo-random bytes (xorshift, seeded).
func pattern(n int64, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x >> 24)
	}
	return b
}

// bytesTensor returns a spec whose data is pattern(size, seed).
func bytesTensor(tb testing.TB, name string, typ Type, shape []int64, seed uint64) TensorSpec {
	tb.Helper()
	s := TensorSpec{Name: name, Type: typ, Shape: shape}
	size, err := s.Size()
	if err != nil {
		tb.Fatalf("tensor %s: %v", name, err)
	}
	orig := pattern(size, seed)
	s.WriteData = func(w io.Writer) error {
		d := orig
		for len(d) > 0 {
			k := min(len(d), 7)
			if _, err := w.Write(d[:k]); err != nil {
				return err
			}
			d = d[k:]
		}
		return nil
	}
	return s
}

// f32Tensor returns an F32 spec holding vals (row-major).
func f32Tensor(name string, shape []int64, vals []float32) TensorSpec {
	return TensorSpec{Name: name, Type: TypeF32, Shape: shape, WriteData: func(w io.Writer) error {
		return binary.Write(w, binary.LittleEndian, vals)
	}}
}

// allValueKVs covers every GGUF value type, arrays of each, empty and nested
// arrays, and edge values.
func allValueKVs() []KV {
	return []KV{
		{KeyGeneralArchitecture, Architecture},
		{"test.u8", uint8(255)},
		{"test.i8", int8(-128)},
		{"test.u16", uint16(65535)},
		{"test.i16", int16(-32768)},
		{"test.u32", uint32(math.MaxUint32)},
		{"test.i32", int32(math.MinInt32)},
		{"test.f32", float32(-1.5e-7)},
		{"test.f32_inf", float32(math.Inf(1))},
		{"test.bool_true", true},
		{"test.bool_false", false},
		{"test.string", "héllo, wörld ▁token Ġx"},
		{"test.string_empty", ""},
		{"test.u64", uint64(math.MaxUint64)},
		{"test.i64", int64(math.MinInt64)},
		{"test.f64", math.Pi},
		{"test.arr.u8", []uint8{0, 1, 254, 255}},
		{"test.arr.i8", []int8{-1, 0, 127}},
		{"test.arr.u16", []uint16{1, 65535}},
		{"test.arr.i16", []int16{-2, 2}},
		{"test.arr.u32", []uint32{7, 8, 9}},
		{"test.arr.i32", []int32{1, 2, 3, 6}},
		{"test.arr.f32", []float32{0.25, -1e30, float32(math.Inf(-1))}},
		{"test.arr.bool", []bool{true, false, true}},
		{"test.arr.string", []string{"a", "Ġthe", "<0x0A>", "▁x", "日本"}},
		{"test.arr.u64", []uint64{1 << 63}},
		{"test.arr.i64", []int64{-1 << 63, 1<<63 - 1}},
		{"test.arr.f64", []float64{1e300, -0.5}},
		{"test.arr.empty_string", []string{}},
		{"test.arr.nested", []any{[]int32{1, 2}, []string{"x"}, []any{[]float32{3}}, []uint8{}}},
		{"test.arr.nested_empty", []any{}},
	}
}

// testTensors covers plain, integer and block-quantized types, 1 to 4 dims.
func testTensors(tb testing.TB) []TensorSpec {
	tb.Helper()
	return []TensorSpec{
		f32Tensor("token_embd.weight", []int64{3, 5}, []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}),
		bytesTensor(tb, "blk.0.attn_q.weight", TypeQ8_0, []int64{4, 64}, 1),
		bytesTensor(tb, "blk.0.attn_k.weight", TypeQ4_0, []int64{2, 32}, 2),
		bytesTensor(tb, "blk.0.ffn_up.weight", TypeF16, []int64{2, 3, 5}, 3),
		bytesTensor(tb, "blk.0.ffn_down.weight", TypeBF16, []int64{2, 1, 3, 5}, 4),
		bytesTensor(tb, "blk.0.ffn_gate.weight", TypeQ4_K, []int64{2, 256}, 5),
		bytesTensor(tb, "blk.0.attn_q.weight.perm", TypeI32, []int64{7}, 6),
		bytesTensor(tb, "blk.0.attn_v.weight", TypeIQ4_NL, []int64{1, 64}, 7),
		bytesTensor(tb, "blk.0.attn_output.weight", TypeQ5_1, []int64{3, 32}, 8),
		bytesTensor(tb, "blk.0.attn_norm.weight", TypeF64, []int64{1}, 9),
	}
}

// writeTemp writes a file into a temporary directory and returns its path.
func writeTemp(tb testing.TB, kvs []KV, tensors []TensorSpec) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "model.gguf")
	if err := Write(context.Background(), path, kvs, tensors); err != nil {
		tb.Fatalf("Write: %v", err)
	}
	return path
}

// encode returns the bytes Encode produces.
func encode(tb testing.TB, kvs []KV, tensors []TensorSpec) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := Encode(context.Background(), &buf, kvs, tensors); err != nil {
		tb.Fatalf("Encode: %v", err)
	}
	return buf.Bytes()
}

// raw builds GGUF bytes field by field, for hand-made and corrupted files.
type raw struct{ b []byte }

func (r *raw) u8(v uint8) *raw   { r.b = append(r.b, v); return r }
func (r *raw) u32(v uint32) *raw { r.b = binary.LittleEndian.AppendUint32(r.b, v); return r }
func (r *raw) u64(v uint64) *raw { r.b = binary.LittleEndian.AppendUint64(r.b, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.b = append(r.b, s...); return r }
func (r *raw) raw(b []byte) *raw { r.b = append(r.b, b...); return r }
func (r *raw) pad(a int) *raw {
	for len(r.b)%a != 0 {
		r.b = append(r.b, 0)
	}
	return r
}
func (r *raw) header(version uint32, nTensors, nKV uint64) *raw {
	r.b = append(r.b, "GGUF"...)
	return r.u32(version).u64(nTensors).u64(nKV)
}
func (r *raw) kvU32(key string, v uint32) *raw { return r.str(key).u32(uint32(ValueUint32)).u32(v) }
func (r *raw) kvStr(key, v string) *raw        { return r.str(key).u32(uint32(ValueString)).str(v) }
func (r *raw) tensor(name string, ne []uint64, typ Type, off uint64) *raw {
	r.str(name).u32(uint32(len(ne)))
	for _, d := range ne {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}
