// qllama.cuh: device-side decoding of the packed weight formats, mirroring
// convert/quant (see convert/quant/README.md for the layouts). Every format is
// decoded 8 consecutive weights ("a chunk") at a time: chunk c of row r covers
// columns [8c, 8c+8). Rows must hold a multiple of 8 columns (and of the block
// size for block formats); the Go side checks this before uploading.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

// Format ids; keep in sync with infer/cuda/weights.go.
#define FMT_F32 0     // float32 row-major
#define FMT_F16 1     // binary16 row-major
#define FMT_BF16 2    // bfloat16 row-major
#define FMT_Q8_0 3    // ggml q8_0: blocks of 32: fp16 d, int8 q[32]
#define FMT_Q4_0 4    // ggml q4_0: blocks of 32: fp16 d, qs[16] (elem j low nibble, j+16 high)
#define FMT_GROUPED 5 // quant.Grouped: PackBits codes (LSB first), float32 scales, uint8 zeros [rows*G], optional int32 g_idx
#define FMT_INT8 6    // quant.Int8: int8 codes row-major, float32 absmax per row
#define FMT_BNB4 7    // quant.Bnb4: two codes per byte (earlier element HIGH nibble), float32 absmax per block, 16-entry float32 codebook
#define FMT_Q4_1 8    // ggml q4_1: blocks of 32 (20 B): fp16 d, fp16 m, qs[16] as q4_0; x = d*q + m
#define FMT_Q5_0 9    // ggml q5_0: blocks of 32 (22 B): fp16 d, qh[4] (bit j: 5th bit of elem j), qs[16] as q4_0; x = d*(q-16)
#define FMT_Q5_1 10   // ggml q5_1: blocks of 32 (24 B): fp16 d, fp16 m, qh[4], qs[16]; x = d*q + m
#define FMT_IQ4_NL 11 // ggml iq4_nl: blocks of 32 (18 B): fp16 d, qs[16] as q4_0; x = d*kvalues_iq4nl[q]
#define FMT_Q4_K 12   // ggml q4_K: super-blocks of 256 (144 B): fp16 d, fp16 dmin, scales[12], qs[128]
#define FMT_Q6_K 13   // ggml q6_K: super-blocks of 256 (210 B): ql[128], qh[64], int8 scales[16], fp16 d

// QLLAMA_FORMATS(X) calls X(name, id) for every format: the one list each
// per-format kernel family (matvec_, swiglu_, embed_, dequant_) is stamped
// from. Adding a format: an id above, its decode8/decode1 cases below, a line
// here, and infer/cuda/weights.go's table.
#define QLLAMA_FORMATS(X) \
    X(f32, FMT_F32)       \
    X(f16, FMT_F16)       \
    X(bf16, FMT_BF16)     \
    X(q8_0, FMT_Q8_0)     \
    X(q4_0, FMT_Q4_0)     \
    X(grouped, FMT_GROUPED) \
    X(int8, FMT_INT8)     \
    X(bnb4, FMT_BNB4)     \
    X(q4_1, FMT_Q4_1)     \
    X(q5_0, FMT_Q5_0)     \
    X(q5_1, FMT_Q5_1)     \
    X(iq4_nl, FMT_IQ4_NL) \
    X(q4_k, FMT_Q4_K)     \
    X(q6_k, FMT_Q6_K)

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

// WPARAMS(p) declares a Weight's fields as kernel parameters named p...;
// WMAKE(p) builds the Weight from them (the Go side passes weight.args()).
#define WPARAMS(p) const uint8_t* p##data, const float* p##scale, const uint8_t* p##zero, const int* p##gidx, \
                   const float* p##lut, long long p##p0, long long p##p1, long long p##p2
#define WMAKE(p) Weight{p##data, p##scale, p##zero, p##gidx, p##lut, p##p0, p##p1, p##p2}

__device__ __forceinline__ float bf16f(uint16_t b) { return __uint_as_float(((uint32_t)b) << 16); }
__device__ __forceinline__ float h2f(uint16_t b) { return __half2float(__ushort_as_half(b)); }

// iq4nl_value is kvalues_iq4nl[q] (q < 16), looked up in registers: the
// 16 int8 entries are packed into four words and picked with byte permutes.
__device__ __forceinline__ float iq4nl_value(uint32_t q) {
    const uint32_t lo = __byte_perm(0xBFAD9881u, 0xF6EADDCFu, q & 7);  // -127 -104 -83 -65 -49 -35 -22 -10
    const uint32_t hi = __byte_perm(0x26190D01u, 0x71594535u, q & 7);  // 1 13 25 38 53 69 89 113
    return (float)(int8_t)(((q & 8) ? hi : lo) & 0xff);
}

// q4k_scale_min returns the 6-bit scale and min of sub-block j (0..7) of the
// q4_K super-block at blk (16-byte aligned): scales[12] at offset 4, as
// convert/quant's scaleMinK4.
__device__ __forceinline__ void q4k_scale_min(const uint8_t* blk, int j, int& sc, int& m) {
    const uint32_t* p = reinterpret_cast<const uint32_t*>(blk + 4);
    const uint32_t a = __ldg(p), b = __ldg(p + 1);  // scales[0..3], scales[4..7]
    if (j < 4) {
        sc = (a >> (8 * j)) & 63;
        m = (b >> (8 * j)) & 63;
    } else {
        const int k = 8 * (j - 4);
        const uint32_t c = (__ldg(p + 2) >> k) & 0xff;  // scales[j+4]
        sc = (int)(c & 15) | (int)((a >> (k + 6)) & 3) << 4;
        m = (int)(c >> 4) | (int)((b >> (k + 6)) & 3) << 4;
    }
}

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
    } else if (FMT == FMT_Q4_1) {
        // 20-byte blocks: 4-byte aligned. x = d*q + m, the product rounded
        // first as in dequantize_row_q4_1 (__fmul_rn: no fused multiply-add).
        const uint8_t* blk = W.data + r * (cols / 32) * 20 + (c >> 2) * 20;
        const uint32_t dm = __ldg(reinterpret_cast<const uint32_t*>(blk));
        const float d = h2f(dm & 0xffff), m = h2f(dm >> 16);
        const int s = c & 3, shift = (s >> 1) * 4;
        const uint32_t* q = reinterpret_cast<const uint32_t*>(blk + 4) + (s & 1) * 2;
        const uint32_t v[2] = {__ldg(q), __ldg(q + 1)};
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = __fmul_rn(d, (float)((v[i >> 2] >> (8 * (i & 3) + shift)) & 15)) + m;
    } else if (FMT == FMT_Q5_0) {
        // 22-byte blocks: only 2-byte aligned; qh bits 8s..8s+7 are byte s.
        const uint8_t* blk = W.data + r * (cols / 32) * 22 + (c >> 2) * 22;
        const float d = h2f(__ldg(reinterpret_cast<const uint16_t*>(blk)));
        const int s = c & 3, shift = (s >> 1) * 4;
        const uint32_t h = __ldg(blk + 2 + s);
        const uint16_t* q = reinterpret_cast<const uint16_t*>(blk + 6) + (s & 1) * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t v = __ldg(q + i);
            w[2 * i] = d * (float)((int)(((v >> shift) & 15) | ((h >> (2 * i)) & 1) << 4) - 16);
            w[2 * i + 1] = d * (float)((int)(((v >> (8 + shift)) & 15) | ((h >> (2 * i + 1)) & 1) << 4) - 16);
        }
    } else if (FMT == FMT_Q5_1) {
        // 24-byte blocks: 8-byte aligned.
        const uint8_t* blk = W.data + r * (cols / 32) * 24 + (c >> 2) * 24;
        const uint32_t dm = __ldg(reinterpret_cast<const uint32_t*>(blk));
        const float d = h2f(dm & 0xffff), m = h2f(dm >> 16);
        const int s = c & 3, shift = (s >> 1) * 4;
        const uint32_t h = __ldg(blk + 4 + s);
        const uint2 qv = __ldg(reinterpret_cast<const uint2*>(blk + 8) + (s & 1));
        const uint32_t v[2] = {qv.x, qv.y};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t q = ((v[i >> 2] >> (8 * (i & 3) + shift)) & 15) | ((h >> i) & 1) << 4;
            w[i] = __fmul_rn(d, (float)q) + m;
        }
    } else if (FMT == FMT_IQ4_NL) {
        // 18-byte blocks, nibbles as q4_0, values from the codebook.
        const uint8_t* blk = W.data + r * (cols / 32) * 18 + (c >> 2) * 18;
        const uint16_t* p = reinterpret_cast<const uint16_t*>(blk);
        const float d = h2f(__ldg(p));
        const int s = c & 3, shift = (s >> 1) * 4;
        const uint16_t* q = p + 1 + (s & 1) * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t v = __ldg(q + i);
            w[2 * i] = d * iq4nl_value((v >> shift) & 15);
            w[2 * i + 1] = d * iq4nl_value((v >> (8 + shift)) & 15);
        }
    } else if (FMT == FMT_Q4_K) {
        // 144-byte super-blocks: 16-byte aligned. Chunk b (0..31) of the
        // super-block lies in sub-block j = b/4 of 32 weights; byte l of
        // qs chunk j/2 holds weight 64(j/2)+l (low nibble) and 64(j/2)+32+l
        // (high). x = (d*sc_j)*q - dmin*m_j, as dequantize_row_q4_K.
        const uint8_t* blk = W.data + r * (cols / 256) * 144 + (c >> 5) * 144;
        const int b = c & 31, j = b >> 2, shift = (j & 1) * 4;
        const uint32_t dd = __ldg(reinterpret_cast<const uint32_t*>(blk));
        int sc, mn;
        q4k_scale_min(blk, j, sc, mn);
        // Both products rounded on their own (__fmul_rn: never fused into the
        // subtraction), as in ggml.
        const float dl = h2f(dd & 0xffff) * (float)sc, ml = __fmul_rn(h2f(dd >> 16), (float)mn);
        const uint2 qv = __ldg(reinterpret_cast<const uint2*>(blk + 16 + 32 * (j >> 1) + 8 * (b & 3)));
        const uint32_t v[2] = {qv.x, qv.y};
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = __fmul_rn(dl, (float)((v[i >> 2] >> (8 * (i & 3) + shift)) & 15)) - ml;
    } else if (FMT == FMT_Q6_K) {
        // 210-byte super-blocks: only 2-byte aligned. Chunk b (0..31): half
        // h = b/16 (128 weights), quarter k = (b/4)%4 of it, l0 = 8(b%4)
        // within the quarter: low nibbles from ql[64h + 32(k%2) + l], shift
        // 4(k/2); 2 high bits from qh[32h + l], shift 2k; one int8 scale
        // scales[8h + l0/16 + 2k]. x = (d*sc)*(q-32), as dequantize_row_q6_K.
        const uint8_t* blk = W.data + r * (cols / 256) * 210 + (c >> 5) * 210;
        const int b = c & 31, h = b >> 4, k = (b >> 2) & 3, l0 = 8 * (b & 3);
        const float d = h2f(__ldg(reinterpret_cast<const uint16_t*>(blk + 208)));
        const float dl = d * (float)(int8_t)__ldg(blk + 192 + 8 * h + (l0 >> 4) + 2 * k);
        const uint16_t* ql = reinterpret_cast<const uint16_t*>(blk + 64 * h + 32 * (k & 1) + l0);
        const uint16_t* qh = reinterpret_cast<const uint16_t*>(blk + 128 + 32 * h + l0);
        const int ls = 4 * (k >> 1), hs = 2 * k;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t lv = __ldg(ql + i), hv = __ldg(qh + i);
            const int q0 = (int)(((lv >> ls) & 15) | ((hv >> hs) & 3) << 4);
            const int q1 = (int)(((lv >> (8 + ls)) & 15) | ((hv >> (8 + hs)) & 3) << 4);
            w[2 * i] = dl * (float)(q0 - 32);
            w[2 * i + 1] = dl * (float)(q1 - 32);
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
    if (FMT == FMT_Q4_1) {
        const uint8_t* blk = W.data + r * (cols / 32) * 20 + (j >> 5) * 20;
        const int e = j & 31;
        const int q = (__ldg(blk + 4 + (e & 15)) >> ((e >> 4) * 4)) & 15;
        const uint32_t dm = __ldg(reinterpret_cast<const uint32_t*>(blk));
        return __fmul_rn(h2f(dm & 0xffff), (float)q) + h2f(dm >> 16);
    }
    if (FMT == FMT_Q5_0) {
        const uint8_t* blk = W.data + r * (cols / 32) * 22 + (j >> 5) * 22;
        const int e = j & 31;
        const int q = ((__ldg(blk + 6 + (e & 15)) >> ((e >> 4) * 4)) & 15) | ((__ldg(blk + 2 + (e >> 3)) >> (e & 7)) & 1) << 4;
        return h2f(__ldg(reinterpret_cast<const uint16_t*>(blk))) * (float)(q - 16);
    }
    if (FMT == FMT_Q5_1) {
        const uint8_t* blk = W.data + r * (cols / 32) * 24 + (j >> 5) * 24;
        const int e = j & 31;
        const int q = ((__ldg(blk + 8 + (e & 15)) >> ((e >> 4) * 4)) & 15) | ((__ldg(blk + 4 + (e >> 3)) >> (e & 7)) & 1) << 4;
        const uint32_t dm = __ldg(reinterpret_cast<const uint32_t*>(blk));
        return __fmul_rn(h2f(dm & 0xffff), (float)q) + h2f(dm >> 16);
    }
    if (FMT == FMT_IQ4_NL) {
        const uint8_t* blk = W.data + r * (cols / 32) * 18 + (j >> 5) * 18;
        const int e = j & 31;
        const uint32_t q = (__ldg(blk + 2 + (e & 15)) >> ((e >> 4) * 4)) & 15;
        return h2f(__ldg(reinterpret_cast<const uint16_t*>(blk))) * iq4nl_value(q);
    }
    if (FMT == FMT_Q4_K) {
        const uint8_t* blk = W.data + r * (cols / 256) * 144 + (j >> 8) * 144;
        const int e = j & 255, sb = e >> 5;  // sub-block of 32
        int sc, mn;
        q4k_scale_min(blk, sb, sc, mn);
        const uint32_t dd = __ldg(reinterpret_cast<const uint32_t*>(blk));
        const int q = (__ldg(blk + 16 + 32 * (sb >> 1) + (e & 31)) >> ((sb & 1) * 4)) & 15;
        return __fmul_rn(h2f(dd & 0xffff) * (float)sc, (float)q) - __fmul_rn(h2f(dd >> 16), (float)mn);
    }
    if (FMT == FMT_Q6_K) {
        const uint8_t* blk = W.data + r * (cols / 256) * 210 + (j >> 8) * 210;
        const int e = j & 255, h = e >> 7, k = (e >> 5) & 3, l = e & 31;
        const int lo = (__ldg(blk + 64 * h + 32 * (k & 1) + l) >> (4 * (k >> 1))) & 15;
        const int hi = (__ldg(blk + 128 + 32 * h + l) >> (2 * k)) & 3;
        const float d = h2f(__ldg(reinterpret_cast<const uint16_t*>(blk + 208)));
        return d * (float)(int8_t)__ldg(blk + 192 + 8 * h + (l >> 4) + 2 * k) * (float)((lo | hi << 4) - 32);
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

#ifdef __CUDACC__  // device-only (kernels/decode_test.go compiles the decoders above on the host)
// The KV cache is paged: a page holds KV_PAGE consecutive positions of one
// sequence for every layer, laid out [layer][k|v][KV_PAGE][kvdim] in the
// cache's element type (float, or __half for FP16 caches). A sequence's page
// table lists its pages' device addresses in position order; row t of a step
// finds its table at tab + taboff[t]. Keep KV_PAGE in sync with kvPage in
// infer/cuda/kvcache.go.
#define KV_PAGE 16

// kv_row points at the keys (kv 0) or values (kv 1) of position p of layer
// in the sequence whose page table is tab.
template <typename T>
__device__ __forceinline__ T* kv_row(const unsigned long long* __restrict__ tab, long long layer, int kv, long long p,
                                     long long kvdim) {
    T* page = reinterpret_cast<T*>(tab[p / KV_PAGE]);
    return page + ((layer * 2 + kv) * KV_PAGE + p % KV_PAGE) * kvdim;
}

// load4 reads 4 consecutive cache values (16-byte aligned for float, 8 for
// half) as float4; store1 writes one.
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const __half* p) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
    return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ void store1(float* p, float v) { *p = v; }
__device__ __forceinline__ void store1(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float load1(const float* p) { return *p; }
__device__ __forceinline__ float load1(const __half* p) { return __half2float(*p); }

// rope_cs returns cos and sin of position p's angle for frequency invfreq:
// float32(p) * float32(invfreq), as in HF, reduced modulo 2 pi in double and
// taken in float (within 2e-7 of the double values the CPU uses).
__device__ __forceinline__ void rope_cs(int p, double invfreq, float& cs, float& sn) {
    const float a = (float)p * (float)invfreq;
    const double twopi = 6.283185307179586;
    const double r = (double)a - twopi * rint((double)a / twopi);
    sincosf((float)r, &sn, &cs);
}

// KV_TYPES(X) calls X(suffix, type) for each cache element type: the kernels
// that touch the cache (rope_store_, attn_split_, kv_gather_) are stamped
// once per type.
#define KV_TYPES(X) \
    X(f32, float)   \
    X(f16, __half)
#endif  // __CUDACC__
