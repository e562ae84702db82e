package kernels

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qllama/convert/quant"
)

// TestDecodeHost compiles qllama.cuh's decode8 and decode1 for the host
// (a C++ compiler and a few shims standing in for the CUDA intrinsics, every
// load checked for natural alignment) and checks, bit for bit, that they
// decode random rows of every ggml block format the GPU reads exactly as
// convert/quant's Dequantize does. It needs no GPU; it is skipped where no
// C++ compiler is installed.
func TestDecodeHost(t *testing.T) {
	cxx, err := exec.LookPath("g++")
	if err != nil {
		if cxx, err = exec.LookPath("c++"); err != nil {
			t.Skip("no C++ compiler")
		}
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "shim"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "shim", "cuda_fp16.h"), []byte(hostShim), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "decode.cc")
	if err := os.WriteFile(src, []byte(hostHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "decode")
	cmd := exec.Command(cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-I", filepath.Join(dir, "shim"), "-I", here, "-o", bin, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compiling the host harness: %v\n%s", err, out)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for _, name := range []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q4_k", "q6_k"} {
		tr, err := quant.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, shape := range [][2]int{{3, 256}, {5, 512}, {2, 768}} {
			rows, cols := shape[0], shape[1]
			rb, err := tr.RowBytes(cols)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, rows*rb)
			want := make([]float32, rows*cols)
			for r := 0; r < rows; r++ {
				x := make([]float32, cols)
				for i := range x {
					x[i] = float32(rng.NormFloat64()) * 0.05
				}
				// A constant sub-block and a zero one in the first row.
				if r == 0 {
					for i := 0; i < 32; i++ {
						x[i] = 0.25
						x[32+i] = 0
					}
				}
				if err := tr.Quantize(data[r*rb:(r+1)*rb], x); err != nil {
					t.Fatal(err)
				}
				if err := tr.Dequantize(want[r*cols:(r+1)*cols], data[r*rb:(r+1)*rb]); err != nil {
					t.Fatal(err)
				}
			}
			in := filepath.Join(dir, "in.bin")
			if err := os.WriteFile(in, data, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, name, fmt.Sprint(rows), fmt.Sprint(cols), in).Output()
			if err != nil {
				msg := ""
				if ee, ok := err.(*exec.ExitError); ok {
					msg = string(ee.Stderr)
				}
				t.Fatalf("%s [%d %d]: %v %s", name, rows, cols, err, msg)
			}
			if len(out) != 2*4*rows*cols {
				t.Fatalf("%s [%d %d]: %d bytes of output", name, rows, cols, len(out))
			}
			for pass, what := range []string{"decode8", "decode1"} {
				got := make([]float32, rows*cols)
				if err := binary.Read(bytes.NewReader(out[pass*4*rows*cols:]), binary.LittleEndian, got); err != nil {
					t.Fatal(err)
				}
				bad := 0
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] == 0 && want[i] == 0) {
						if bad < 5 {
							t.Errorf("%s [%d %d] %s: weight (%d, %d) = %v, want %v", name, rows, cols, what, i/cols, i%cols, got[i], want[i])
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("%s [%d %d] %s: %d of %d weights differ", name, rows, cols, what, bad, len(got))
				}
			}
		}
	}
}

// hostShim replaces cuda_fp16.h (and the few CUDA built-ins qllama.cuh
// uses) for a host compiler.
const hostShim = `#pragma once
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#define __device__
#define __forceinline__ inline
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { uint32_t x, y, z, w; };
struct alignas(8) uint2 { uint32_t x, y; };
struct __half { uint16_t x; };
template <class T> inline T __ldg(const T* p) {
	assert(reinterpret_cast<uintptr_t>(p) % alignof(T) == 0 && "misaligned load");
	return *p;
}
inline __half __ushort_as_half(uint16_t b) { return __half{b}; }
inline float __half2float(__half h) {
	const uint32_t s = h.x >> 15, e = (h.x >> 10) & 31, m = h.x & 1023;
	float v;
	if (e == 0) v = std::ldexp((float)m, -24);
	else if (e == 31) v = m ? NAN : INFINITY;
	else v = std::ldexp((float)(m | 1024), (int)e - 25);
	return s ? -v : v;
}
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
	const uint64_t v = (uint64_t)y << 32 | x;
	uint32_t r = 0;
	for (int i = 0; i < 4; i++) {
		const uint32_t n = (s >> (4 * i)) & 15;
		uint32_t b = (uint32_t)(v >> (8 * (n & 7))) & 0xff;
		if (n & 8) b = (b & 0x80) ? 0xff : 0;
		r |= b << (8 * i);
	}
	return r;
}
inline float __shfl_xor_sync(unsigned, float v, int) { return v; }
`

// hostHarness decodes a whole [rows cols] matrix of format argv[1] read
// from file argv[4] with decode8 and then with decode1, writing both as
// float32 to stdout.
const hostHarness = `#include "qllama.cuh"
#include <cstdio>
#include <cstdlib>
#include <vector>

template <int FMT>
static void run(const uint8_t* data, long long rows, long long cols, float* out8, float* out1) {
	Weight W{data, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
	for (long long r = 0; r < rows; r++) {
		for (long long c = 0; c < cols / 8; c++) decode8<FMT>(W, r, cols, c, out8 + r * cols + 8 * c);
		for (long long j = 0; j < cols; j++) out1[r * cols + j] = decode1<FMT>(W, r, cols, j);
	}
}

int main(int argc, char** argv) {
	if (argc != 5) return 2;
	const long long rows = atoll(argv[2]), cols = atoll(argv[3]);
	FILE* f = fopen(argv[4], "rb");
	if (!f) return 3;
	// 256-byte aligned like a device allocation, with slack for wide loads.
	std::vector<uint8_t> buf;
	uint8_t* data = nullptr;
	{
		fseek(f, 0, SEEK_END);
		long n = ftell(f);
		fseek(f, 0, SEEK_SET);
		data = static_cast<uint8_t*>(aligned_alloc(256, (n + 16 + 255) / 256 * 256));
		if (fread(data, 1, n, f) != (size_t)n) return 4;
		fclose(f);
	}
	std::vector<float> out8(rows * cols, NAN), out1(rows * cols, NAN);
	bool found = false;
#define RUN(NAME, ID) \
	if (std::strcmp(argv[1], #NAME) == 0) { run<ID>(data, rows, cols, out8.data(), out1.data()); found = true; }
	QLLAMA_FORMATS(RUN)
	if (!found) { fprintf(stderr, "no format %s in QLLAMA_FORMATS\n", argv[1]); return 5; }
	fwrite(out8.data(), 4, out8.size(), stdout);
	fwrite(out1.data(), 4, out1.size(), stdout);
	return 0;
}
`
