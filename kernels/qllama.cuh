// qllama.cuh: device-side decoding of the packed weight formats, mirroring
// convert/quant (see convert/quant/README.md for the layouts). Every format is
// decoded 8 consecutive weights ("a chunk") at a time: chunk c of row r covers
// columns [8c, 8c+8). Rows must hold a multiple of 8 columns (and of the block
// size for block formats); the Go side checks this before uploading.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

// Format ids; keep in sync with infer/cuda/format.go.
#define FMT_F32 0     // float32 row-major
#define FMT_F16 1     // binary16 row-major
#define FMT_BF16 2    // bfloat16 row-major
#define FMT_Q8_0 3    // ggml q8_0: blocks of 32: fp16 d, int8 q[32]
#define FMT_Q4_0 4    // ggml q4_0: blocks of 32: fp16 d, qs[16] (elem j low nibble, j+16 high)
#define FMT_GROUPED 5 // quant.Grouped: PackBits codes (LSB first), float32 scales, uint8 zeros [rows*G], optional int32 g_idx
#define FMT_INT8 6    // quant.Int8: int8 codes row-major, float32 absmax per row
#define FMT_BNB4 7    // quant.Bnb4: two codes per byte (earlier element HIGH nibble), float32 absmax per block, 16-entry float32 codebook

// Weight describes one matrix on the device. All fields are 8 bytes wide
// because the Go launcher passes kernel parameters as 8-byte values.
struct Weight {
    const uint8_t* data;  // packed codes / values
    const float* scale;   // q: unused; grouped: scales; int8: row absmax; bnb4: block absmax
    const uint8_t* zero;  // grouped: zeros
    const int* gidx;      // grouped: act-order group of each column, or null
    const float* lut;     // bnb4: codebook
    long long p0;         // grouped: group size in columns; bnb4: block size
    long long p1;         // grouped: bits
    long long p2;         // grouped: groups per row
};

__device__ __forceinline__ float bf16f(uint16_t b) { return __uint_as_float(((uint32_t)b) << 16); }
__device__ __forceinline__ float h2f(uint16_t b) { return __half2float(__ushort_as_half(b)); }

// decode8 writes the 8 weights of chunk c of row r (a row holds cols weights) into w.
template <int FMT>
__device__ __forceinline__ void decode8(const Weight& W, long long r, long long cols, long long c, float w[8]) {
    if (FMT == FMT_F32) {
        const float4* p = reinterpret_cast<const float4*>(reinterpret_cast<const float*>(W.data) + r * cols) + 2 * c;
        float4 a = __ldg(p), b = __ldg(p + 1);
        w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
    } else if (FMT == FMT_F16 || FMT == FMT_BF16) {
        uint4 v = __ldg(reinterpret_cast<const uint4*>(W.data + (r * cols) * 2) + c);
        uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint16_t lo = u[i] & 0xffff, hi = u[i] >> 16;
            if (FMT == FMT_F16) { w[2 * i] = h2f(lo); w[2 * i + 1] = h2f(hi); }
            else { w[2 * i] = bf16f(lo); w[2 * i + 1] = bf16f(hi); }
        }
    } else if (FMT == FMT_Q8_0) {
        const uint8_t* blk = W.data + r * (cols / 32) * 34 + (c >> 2) * 34;
        const uint16_t* p = reinterpret_cast<const uint16_t*>(blk);
        float d = h2f(__ldg(p));
        const uint16_t* q = p + 1 + (c & 3) * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint16_t v = __ldg(q + i);
            w[2 * i] = d * (float)(int8_t)(v & 0xff);
            w[2 * i + 1] = d * (float)(int8_t)(v >> 8);
        }
    } else if (FMT == FMT_Q4_0) {
        const uint8_t* blk = W.data + r * (cols / 32) * 18 + (c >> 2) * 18;
        const uint16_t* p = reinterpret_cast<const uint16_t*>(blk);
        float d = h2f(__ldg(p));
        int s = c & 3;
        const uint16_t* q = p + 1 + (s & 1) * 4;
        int shift = (s >> 1) * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint16_t v = __ldg(q + i);
            w[2 * i] = d * (float)((int)((v >> shift) & 15) - 8);
            w[2 * i + 1] = d * (float)((int)((v >> (8 + shift)) & 15) - 8);
        }
    } else if (FMT == FMT_GROUPED) {
        const int bits = (int)W.p1;
        const long long gs = W.p0;
        const long long G = W.p2;
        const uint8_t* p = W.data + (r * cols / 8 + c) * bits;
        uint64_t u = 0;
        if (bits == 4) u = __ldg(reinterpret_cast<const uint32_t*>(p));
        else for (int i = 0; i < bits; i++) u |= (uint64_t)__ldg(p + i) << (8 * i);
        const uint32_t mask = (1u << bits) - 1;
        if (W.gidx == nullptr) {
            long long g = r * G + (c * 8) / gs;
            float s = __ldg(W.scale + g);
            int z = __ldg(W.zero + g);
#pragma unroll
            for (int i = 0; i < 8; i++) w[i] = s * (float)((int)((u >> (i * bits)) & mask) - z);
        } else {
            // act-order: each column names its group
#pragma unroll
            for (int i = 0; i < 8; i++) {
                long long g = r * G + __ldg(W.gidx + c * 8 + i);
                w[i] = __ldg(W.scale + g) * (float)((int)((u >> (i * bits)) & mask) - (int)__ldg(W.zero + g));
            }
        }
    } else if (FMT == FMT_INT8) {
        const int8_t* p = reinterpret_cast<const int8_t*>(W.data) + r * cols + c * 8;
        uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
        float s = __ldg(W.scale + r) * (1.0f / 127.0f);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[i] = s * (float)(int8_t)(v.x >> (8 * i));
            w[4 + i] = s * (float)(int8_t)(v.y >> (8 * i));
        }
    } else if (FMT == FMT_BNB4) {
        long long i0 = r * cols + c * 8;
        uint32_t v = __ldg(reinterpret_cast<const uint32_t*>(W.data + i0 / 2));
        float am = __ldg(W.scale + i0 / W.p0);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t b = (v >> (8 * i)) & 0xff;
            w[2 * i] = __ldg(W.lut + (b >> 4)) * am;
            w[2 * i + 1] = __ldg(W.lut + (b & 15)) * am;
        }
    }
}

// decode1 returns weight (r, j): the slow path for rows whose length is not a
// multiple of 8 (tiny models); block formats always have whole blocks.
template <int FMT>
__device__ __forceinline__ float decode1(const Weight& W, long long r, long long cols, long long j) {
    const long long i = r * cols + j;
    if (FMT == FMT_F32) return __ldg(reinterpret_cast<const float*>(W.data) + i);
    if (FMT == FMT_F16) return h2f(__ldg(reinterpret_cast<const uint16_t*>(W.data) + i));
    if (FMT == FMT_BF16) return bf16f(__ldg(reinterpret_cast<const uint16_t*>(W.data) + i));
    if (FMT == FMT_Q8_0) {
        const uint8_t* blk = W.data + r * (cols / 32) * 34 + (j >> 5) * 34;
        return h2f(__ldg(reinterpret_cast<const uint16_t*>(blk))) * (float)(int8_t)__ldg(blk + 2 + (j & 31));
    }
    if (FMT == FMT_Q4_0) {
        const uint8_t* blk = W.data + r * (cols / 32) * 18 + (j >> 5) * 18;
        int e = j & 31;
        int q = (__ldg(blk + 2 + (e & 15)) >> ((e >> 4) * 4)) & 15;
        return h2f(__ldg(reinterpret_cast<const uint16_t*>(blk))) * (float)(q - 8);
    }
    if (FMT == FMT_GROUPED) {
        const int bits = (int)W.p1;
        const long long bit = i * bits;
        uint32_t u = __ldg(W.data + (bit >> 3));
        if ((bit & 7) + bits > 8) u |= (uint32_t)__ldg(W.data + (bit >> 3) + 1) << 8;
        int q = (u >> (bit & 7)) & ((1u << bits) - 1);
        long long g = r * W.p2 + (W.gidx ? (long long)__ldg(W.gidx + j) : j / W.p0);
        return __ldg(W.scale + g) * (float)(q - (int)__ldg(W.zero + g));
    }
    if (FMT == FMT_INT8) return __ldg(W.scale + r) * (1.0f / 127.0f) * (float)(int8_t)__ldg(W.data + i);
    if (FMT == FMT_BNB4) {
        uint8_t b = __ldg(W.data + i / 2);
        return __ldg(W.lut + ((i & 1) ? (b & 15) : (b >> 4))) * __ldg(W.scale + i / W.p0);
    }
    return 0.f;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
