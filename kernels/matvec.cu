// matvec.cu: y = W x reading packed weights directly, float32 accumulation.
// matvec_/swiglu_<fmt>_<NT>: a few activation rows (steps of many tokens when
// cuBLAS is absent, and rows too wide for the one-row kernels); one warp per
// output row, each lane decoding 8 weights at a time and applying them to NT
// activation rows held in flight. mv1_/sw1_<fmt> (below): one activation row,
// the batch-1 decode step. Steps of several tokens normally take the cuBLAS
// path (infer/cuda/gemm.go).
#include "qllama.cuh"

// Modes of the epilogue (runtime).
#define MV_STORE 0 // dst = W x
#define MV_ADD 1   // dst += W x (residual add fused)


// decode_chunks decodes chunks c0, c0+32, ... (U of them, those below
// chunks) of row r of W, and of V too with DUAL: every load is issued before
// any use, so several are in flight per lane.
template <int FMT, bool DUAL, int U>
__device__ __forceinline__ void decode_chunks(const Weight& W, const Weight& V, long long r, long long cols, long long c0,
                                              long long chunks, float (&w)[U][8], float (&u)[DUAL ? U : 1][8]) {
#pragma unroll
    for (int k = 0; k < U; k++) {
        const long long c = c0 + 32 * k;
        if (c < chunks) {
            decode8<FMT>(W, r, cols, c, w[k]);
            if (DUAL) decode8<FMT>(V, r, cols, c, u[DUAL ? k : 0]);
        }
    }
}

// dot8 is the dot product of 8 weights with x[0..3] = a, x[4..7] = b.
__device__ __forceinline__ float dot8(const float* w, const float4& a, const float4& b) {
    return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

// With DUAL, a second weight U of the same format and shape is applied too and
// the result is silu(W x) * (U x): SwiGLU's gate and up in one pass.
// With normw set, x is first RMS-normalised with weights normw (RMSNorm
// fused: W (g*x*inv) = inv * W (g*x), the sum of squares gathered in the same
// pass over x).
template <int FMT, int NT, bool DUAL>
__device__ __forceinline__ void matvec_impl(const Weight W, const Weight U_, const float* __restrict__ x,
                                            float* __restrict__ dst, long long n, long long rows, long long cols,
                                            long long mode, const float* __restrict__ normw, double eps) {
    const int lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const long long t0 = (long long)blockIdx.y * NT;
    const int nt = (int)min((long long)NT, n - t0);
    float acc[NT], acc2[DUAL ? NT : 1], ss[NT];
    const bool norm = normw != nullptr;
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = ss[t] = 0.f;
#pragma unroll
    for (int t = 0; t < (DUAL ? NT : 1); t++) acc2[t] = 0.f;
    if (cols & 7) {  // slow path: rows not a multiple of 8 long (tiny models)
        for (long long j = lane; j < cols; j += 32) {
            const float w = decode1<FMT>(W, r, cols, j);
            const float u = DUAL ? decode1<FMT>(U_, r, cols, j) : 0.f;
            const float gj = norm ? normw[j] : 1.f;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < nt) {
                    const float xa = x[(t0 + t) * cols + j];
                    const float a = xa * gj;
                    ss[t] += xa * xa;
                    acc[t] += w * a;
                    if (DUAL) acc2[DUAL ? t : 0] += u * a;
                }
            }
        }
    }
    const long long chunks = (cols & 7) ? 0 : cols >> 3;
    // U chunks per lane per iteration, decoded (loads issued) before use, so
    // several 16-byte weight loads are in flight per lane.
    constexpr int U = NT == 1 ? 4 : (NT <= 8 ? 2 : 1);
    for (long long c0 = lane; c0 < chunks; c0 += 32 * U) {
        float w[U][8], u[DUAL ? U : 1][8];
        decode_chunks<FMT, DUAL, U>(W, U_, r, cols, c0, chunks, w, u);
#pragma unroll
        for (int k = 0; k < U; k++) {
            const long long c = c0 + 32 * k;
            if (c >= chunks) break;
            float4 ga = make_float4(1.f, 1.f, 1.f, 1.f), gb = ga;
            if (norm) {
                ga = __ldg(reinterpret_cast<const float4*>(normw) + 2 * c);
                gb = __ldg(reinterpret_cast<const float4*>(normw) + 2 * c + 1);
            }
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < nt) {
                    const float4* xp = reinterpret_cast<const float4*>(x + (t0 + t) * cols) + 2 * c;
                    float4 a = __ldg(xp), b = __ldg(xp + 1);
                    if (norm) {
                        ss[t] += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
                        a.x *= ga.x; a.y *= ga.y; a.z *= ga.z; a.w *= ga.w;
                        b.x *= gb.x; b.y *= gb.y; b.z *= gb.z; b.w *= gb.w;
                    }
                    acc[t] += dot8(w[k], a, b);
                    if (DUAL) acc2[DUAL ? t : 0] += dot8(u[DUAL ? k : 0], a, b);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t < nt) {
            float v = warp_sum(acc[t]);
            float inv = 1.f;
            if (norm) inv = (float)(1.0 / sqrt((double)(warp_sum(ss[t]) / (float)cols + (float)eps)));
            v *= inv;
            if (DUAL) {
                float g = v, up = warp_sum(acc2[DUAL ? t : 0]) * inv;
                v = g / (1.f + expf(-g)) * up;
            }
            if (lane == 0) {
                float* o = dst + (t0 + t) * rows + r;
                if (mode == MV_ADD) *o += v;
                else *o = v;
            }
        }
    }
}

#define MATVEC(NAME, FMT, NT)                                                                               \
    extern "C" __global__ void __launch_bounds__(128) matvec_##NAME##_##NT(                                \
        WPARAMS(w), const float* __restrict__ x, float* __restrict__ dst, long long n, long long rows,       \
        long long cols, long long mode, const float* normw, double eps) {                                   \
        Weight W = WMAKE(w);                                                                                \
        matvec_impl<FMT, NT, false>(W, W, x, dst, n, rows, cols, mode, normw, eps);                          \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(128) swiglu_##NAME##_##NT(                                \
        WPARAMS(w), const uint8_t* udata, const float* uscale, const uint8_t* uzero, const int* ugidx,       \
        const float* __restrict__ x, float* __restrict__ dst, long long n, long long rows, long long cols,   \
        const float* normw, double eps) {                                                                   \
        Weight W = WMAKE(w);                                                                                \
        Weight U = Weight{udata, uscale, uzero, ugidx, wlut, wp0, wp1, wp2};                                \
        matvec_impl<FMT, NT, true>(W, U, x, dst, n, rows, cols, MV_STORE, normw, eps);                       \
    }

#define MATVEC_ALL(NAME, FMT) MATVEC(NAME, FMT, 1) MATVEC(NAME, FMT, 8) MATVEC(NAME, FMT, 32)

QLLAMA_FORMATS(MATVEC_ALL)

// embed_<fmt> gathers rows ids[t] of an embedding table in that format into
// out[t*cols ...] as float32. One block per token.
#define EMBED(NAME, FMT)                                                                                  \
    extern "C" __global__ void embed_##NAME(WPARAMS(w), const int* __restrict__ ids, float* __restrict__ out, \
                                            long long n, long long cols) {                                \
        Weight W = WMAKE(w);                                                                              \
        const long long t = blockIdx.x;                                                                   \
        if (t >= n) return;                                                                               \
        const long long r = ids[t];                                                                       \
        if (cols & 7) {                                                                                   \
            for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[t * cols + j] = decode1<FMT>(W, r, cols, j); \
            return;                                                                                       \
        }                                                                                                 \
        for (long long c = threadIdx.x; c < (cols >> 3); c += blockDim.x) {                               \
            float w[8];                                                                                   \
            decode8<FMT>(W, r, cols, c, w);                                                               \
            float4* o = reinterpret_cast<float4*>(out + t * cols) + 2 * c;                                \
            o[0] = make_float4(w[0], w[1], w[2], w[3]);                                                   \
            o[1] = make_float4(w[4], w[5], w[6], w[7]);                                                   \
        }                                                                                                 \
    }

QLLAMA_FORMATS(EMBED)

// mv1_<fmt> / sw1_<fmt>: the one-activation-row (batch-1 decode) kernels. The
// block stages x in shared memory once (RMS-normalised with normw when set:
// the sum of squares is reduced over the block, W (g*x*inv) = inv * W (g*x)),
// split as xlo[c] = x[8c..8c+3], xhi[c] = x[8c+4..8c+7] so a warp's float4
// reads are conflict-free; then each warp computes whole rows, several
// 16-byte weight loads in flight per lane, and the grid strides over rows.
// mv1 applies up to three weights of the same format (q, k and v in one
// launch): rows [0, ra) of A go to da, the next rb rows (B) to db, the rest
// (C) to dc. sw1 computes silu(A x) * (B x) for SwiGLU. cols must be a
// multiple of 8; the dynamic shared memory is cols*4 bytes. With WIDE > 0
// the weights are grouped WIDE-bit codes read by grouped_row.
#define MV1_THREADS 256

// grouped_code returns code i (0..31) of a 32-column unit packed LSB first
// into BITS words (i and BITS compile-time after unrolling).
template <int BITS>
__device__ __forceinline__ int grouped_code(const uint32_t (&w)[BITS], int i) {
    const int pos = i * BITS, k = pos >> 5, sh = pos & 31;
    uint32_t v = w[k] >> sh;
    if (sh + BITS > 32) v |= w[k + 1] << (32 - sh);
    return (int)(v & ((1u << BITS) - 1));
}

template <int BITS>
__device__ __forceinline__ void grouped_load(const uint32_t* p, uint32_t (&w)[BITS]) {
    if (BITS == 4) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
        w[0] = v.x; w[1] = v.y; w[2 % BITS] = v.z; w[3 % BITS] = v.w;
    } else if (BITS == 2) {
        const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
        w[0] = v.x; w[1 % BITS] = v.y;
    } else if (BITS == 8) {
        const uint4 a = __ldg(reinterpret_cast<const uint4*>(p)), b = __ldg(reinterpret_cast<const uint4*>(p) + 1);
        w[0] = a.x; w[1 % BITS] = a.y; w[2 % BITS] = a.z; w[3 % BITS] = a.w;
        w[4 % BITS] = b.x; w[5 % BITS] = b.y; w[6 % BITS] = b.z; w[7 % BITS] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < BITS; i++) w[i] = __ldg(p + i);
    }
}

// grouped_row is the one-row dot product of row r of a grouped weight
// without act-order (and, with DUAL, of V's row r too) whose groups are a
// multiple of 32 columns: each lane takes whole 32-column units (BITS words
// of codes in one or two vector loads, one scale and zero), UW units in
// flight, and decodes them as it multiplies: acc += s * sum (q - z) x.
template <int BITS, bool DUAL, int UW>
__device__ __forceinline__ void grouped_row(const Weight& W, const Weight& V, long long r, long long cols,
                                            const float4* xlo, const float4* xhi, float& acc, float& acc2) {
    const int lane = threadIdx.x & 31;
    const long long units = cols >> 5, G = W.p2, gs = W.p0;
    const uint32_t* wp = reinterpret_cast<const uint32_t*>(W.data) + r * units * BITS;
    const uint32_t* vp = reinterpret_cast<const uint32_t*>(V.data) + r * units * BITS;
    for (long long u0 = lane; u0 < units; u0 += 32 * UW) {
        uint32_t a[UW][BITS], b[DUAL ? UW : 1][BITS];
        float sa[UW], sb[UW];
        int za[UW], zb[UW];
#pragma unroll
        for (int k = 0; k < UW; k++) {
            const long long u = u0 + 32 * k;
            if (u < units) {
                const long long g = r * G + (u << 5) / gs;
                grouped_load<BITS>(wp + u * BITS, a[k]);
                sa[k] = __ldg(W.scale + g);
                za[k] = __ldg(W.zero + g);
                if (DUAL) {
                    grouped_load<BITS>(vp + u * BITS, b[DUAL ? k : 0]);
                    sb[k] = __ldg(V.scale + g);
                    zb[k] = __ldg(V.zero + g);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < UW; k++) {
            const long long u = u0 + 32 * k;
            if (u >= units) continue;
            float d = 0.f, d2 = 0.f;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float4 xa = xlo[4 * u + c], xb = xhi[4 * u + c];
                const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    d += (float)(grouped_code<BITS>(a[k], 8 * c + j) - za[k]) * xv[j];
                    if (DUAL) d2 += (float)(grouped_code<BITS>(b[DUAL ? k : 0], 8 * c + j) - zb[k]) * xv[j];
                }
            }
            acc += sa[k] * d;
            if (DUAL) acc2 += sb[k] * d2;
        }
    }
}

// q40_row is the one-row dot product of row r of a q4_0 weight (and, with
// DUAL, of V's row r): each lane takes whole 32-weight blocks, loading a
// block's 18 bytes as 9 halfwords (blocks are only 2-byte aligned) and
// decoding them as it multiplies: acc += d * sum (q - 8) x.
template <bool DUAL, int UW>
__device__ __forceinline__ void q40_row(const Weight& W, const Weight& V, long long r, long long cols,
                                        const float4* xlo, const float4* xhi, float& acc, float& acc2) {
    const int lane = threadIdx.x & 31;
    const long long nb = cols >> 5;
    const uint16_t* wp = reinterpret_cast<const uint16_t*>(W.data + r * nb * 18);
    const uint16_t* vp = reinterpret_cast<const uint16_t*>(V.data + r * nb * 18);
    for (long long b0 = lane; b0 < nb; b0 += 32 * UW) {
        uint16_t a[UW][9], c2[DUAL ? UW : 1][9];
#pragma unroll
        for (int k = 0; k < UW; k++) {
            const long long b = b0 + 32 * k;
            if (b < nb) {
#pragma unroll
                for (int i = 0; i < 9; i++) a[k][i] = __ldg(wp + b * 9 + i);
                if (DUAL) {
#pragma unroll
                    for (int i = 0; i < 9; i++) c2[DUAL ? k : 0][i] = __ldg(vp + b * 9 + i);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < UW; k++) {
            const long long b = b0 + 32 * k;
            if (b >= nb) continue;
            float d = 0.f, d2 = 0.f;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float4 xa = xlo[4 * b + c], xb = xhi[4 * b + c];
                const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const int e = 8 * c + j, m = e & 15, sh = 8 * (m & 1) + 4 * (e >> 4);
                    d += (float)((int)((a[k][1 + (m >> 1)] >> sh) & 15) - 8) * xv[j];
                    if (DUAL) d2 += (float)((int)((c2[DUAL ? k : 0][1 + (m >> 1)] >> sh) & 15) - 8) * xv[j];
                }
            }
            acc += h2f(a[k][0]) * d;
            if (DUAL) acc2 += h2f(c2[DUAL ? k : 0][0]) * d2;
        }
    }
}

template <int FMT, bool DUAL, int U, int WIDE = 0>
__device__ __forceinline__ void mv1_impl(const Weight A, const Weight B, const Weight C, float* da, float* db, float* dc,
                                         long long ra, long long rb, long long rows, const float* __restrict__ x,
                                         long long cols, long long mode, const float* __restrict__ normw, double eps) {
    extern __shared__ float4 xs[];
    const long long chunks = cols >> 3;
    float4* xlo = xs;
    float4* xhi = xs + chunks;
    const bool norm = normw != nullptr;
    float ss = 0.f;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const float4* g4 = reinterpret_cast<const float4*>(normw);
    for (long long c = threadIdx.x; c < chunks; c += blockDim.x) {
        float4 a = x4[2 * c], b = x4[2 * c + 1];
        if (norm) {
            ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
            const float4 ga = __ldg(g4 + 2 * c), gb = __ldg(g4 + 2 * c + 1);
            a.x *= ga.x; a.y *= ga.y; a.z *= ga.z; a.w *= ga.w;
            b.x *= gb.x; b.y *= gb.y; b.z *= gb.z; b.w *= gb.w;
        }
        xlo[c] = a;
        xhi[c] = b;
    }
    __shared__ float red[MV1_THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (norm) {
        ss = warp_sum(ss);
        if (lane == 0) red[warp] = ss;
    }
    __syncthreads();
    float inv = 1.f;
    if (norm) {
        float t = 0.f;
        for (int i = 0; i < nw; i++) t += red[i];
        inv = (float)(1.0 / sqrt((double)(t / (float)cols + (float)eps)));
    }
    for (long long r = (long long)blockIdx.x * nw + warp; r < rows; r += (long long)gridDim.x * nw) {
        long long rr = r;
        float* d = da;
        Weight W = A;
        if (!DUAL && r >= ra) {
            if (r < ra + rb) { W = B; rr = r - ra; d = db; }
            else { W = C; rr = r - ra - rb; d = dc; }
        }
        float acc = 0.f, acc2 = 0.f;
        if (WIDE > 0 && FMT == FMT_GROUPED) grouped_row<(WIDE > 0 ? WIDE : 1), DUAL, U>(W, B, rr, cols, xlo, xhi, acc, acc2);
        if (WIDE > 0 && FMT == FMT_Q4_0) q40_row<DUAL, (U > 1 ? U / 2 : 1)>(W, B, rr, cols, xlo, xhi, acc, acc2);
        for (long long c0 = WIDE > 0 ? chunks : lane; c0 < chunks; c0 += 32 * U) {
            float w[U][8], u[DUAL ? U : 1][8];
            decode_chunks<FMT, DUAL, U>(W, B, rr, cols, c0, chunks, w, u);
#pragma unroll
            for (int k = 0; k < U; k++) {
                const long long c = c0 + 32 * k;
                if (c >= chunks) break;
                const float4 a = xlo[c], b = xhi[c];
                acc += dot8(w[k], a, b);
                if (DUAL) acc2 += dot8(u[DUAL ? k : 0], a, b);
            }
        }
        float v = warp_sum(acc) * inv;
        if (DUAL) {
            const float up = warp_sum(acc2) * inv;
            v = v / (1.f + expf(-v)) * up;
        }
        if (lane == 0) {
            if (mode == MV_ADD) d[rr] += v;
            else d[rr] = v;
        }
    }
}

// U: chunks per lane per iteration (several 16-byte loads in flight); the
// register budget allows four blocks per multiprocessor. Measured on the H100
// (batch-1 decode of the 1B): U 4 (2 per weight for SwiGLU) at four blocks
// beat U 8 at two blocks by 7-19% (F16 754 vs 701 tok/s, Q4_0 710 vs 598).
#define MV1V(NAME, FMT, WIDE)                                                                               \
    extern "C" __global__ void __launch_bounds__(MV1_THREADS, 4) mv1_##NAME(                                \
        WPARAMS(a), WPARAMS(b), WPARAMS(c), float* da, float* db, float* dc, long long ra, long long rb,     \
        long long rows, const float* __restrict__ x, long long cols, long long mode, const float* normw,     \
        double eps) {                                                                                       \
        mv1_impl<FMT, false, 4, WIDE>(WMAKE(a), WMAKE(b), WMAKE(c), da, db, dc, ra, rb, rows, x, cols, mode, normw, eps); \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(MV1_THREADS, 4) sw1_##NAME(                                \
        WPARAMS(a), WPARAMS(b), float* d, long long rows, const float* __restrict__ x, long long cols,       \
        const float* normw, double eps) {                                                                   \
        const Weight A = WMAKE(a);                                                                          \
        mv1_impl<FMT, true, 2, WIDE>(A, WMAKE(b), A, d, d, d, rows, 0, rows, x, cols, MV_STORE, normw, eps); \
    }
#define MV1(NAME, FMT) MV1V(NAME, FMT, 0)

// mv1_grouped<b> / sw1_grouped<b>: the one-row kernels for grouped weights of
// b = 2, 3 or 4 bits without act-order whose groups are a multiple of 32
// columns (the study's RTN/GPTQ/AWQ formats): grouped_row's wide loads.
MV1V(grouped2, FMT_GROUPED, 2)
MV1V(grouped3, FMT_GROUPED, 3)
MV1V(grouped4, FMT_GROUPED, 4)
// mv1_q4_0w / sw1_q4_0w: q4_0 rows of whole 32-weight blocks (q40_row).
MV1V(q4_0w, FMT_Q4_0, 1)

QLLAMA_FORMATS(MV1)
