// matvec.cu: y = W x for a few activation rows, reading packed weights directly
// (decode path; prefill uses the same kernels with more activation tiles).
// One warp per output row; each lane decodes 8 weights at a time and applies
// them to NT activation rows held in flight; float32 accumulation.
#include "qllama.cuh"

// Modes of the epilogue (runtime).
#define MV_STORE 0 // dst = W x
#define MV_ADD 1   // dst += W x (residual add fused)


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
#pragma unroll
        for (int k = 0; k < U; k++) {
            const long long c = c0 + 32 * k;
            if (c < chunks) {
                decode8<FMT>(W, r, cols, c, w[k]);
                if (DUAL) decode8<FMT>(U_, r, cols, c, u[DUAL ? k : 0]);
            }
        }
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
                    const float* wk = w[k];
                    acc[t] += wk[0] * a.x + wk[1] * a.y + wk[2] * a.z + wk[3] * a.w + wk[4] * b.x + wk[5] * b.y + wk[6] * b.z + wk[7] * b.w;
                    if (DUAL) {
                        const float* uk = u[DUAL ? k : 0];
                        acc2[DUAL ? t : 0] += uk[0] * a.x + uk[1] * a.y + uk[2] * a.z + uk[3] * a.w + uk[4] * b.x + uk[5] * b.y + uk[6] * b.z + uk[7] * b.w;
                    }
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
// multiple of 8; the dynamic shared memory is cols*4 bytes.
#define MV1_THREADS 256

template <int FMT, bool DUAL, int U>
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
        for (long long c0 = lane; c0 < chunks; c0 += 32 * U) {
            float w[U][8], u[DUAL ? U : 1][8];
#pragma unroll
            for (int k = 0; k < U; k++) {
                const long long c = c0 + 32 * k;
                if (c < chunks) {
                    decode8<FMT>(W, rr, cols, c, w[k]);
                    if (DUAL) decode8<FMT>(B, rr, cols, c, u[DUAL ? k : 0]);
                }
            }
#pragma unroll
            for (int k = 0; k < U; k++) {
                const long long c = c0 + 32 * k;
                if (c >= chunks) break;
                const float4 a = xlo[c], b = xhi[c];
                const float* wk = w[k];
                acc += wk[0] * a.x + wk[1] * a.y + wk[2] * a.z + wk[3] * a.w + wk[4] * b.x + wk[5] * b.y + wk[6] * b.z + wk[7] * b.w;
                if (DUAL) {
                    const float* uk = u[DUAL ? k : 0];
                    acc2 += uk[0] * a.x + uk[1] * a.y + uk[2] * a.z + uk[3] * a.w + uk[4] * b.x + uk[5] * b.y + uk[6] * b.z + uk[7] * b.w;
                }
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
#define MV1V(NAME, FMT, U, MINB)                                                                                  \
    extern "C" __global__ void __launch_bounds__(MV1_THREADS, MINB) mv1_##NAME(                        \
        WPARAMS(a), WPARAMS(b), WPARAMS(c), float* da, float* db, float* dc, long long ra, long long rb,     \
        long long rows, const float* __restrict__ x, long long cols, long long mode, const float* normw,     \
        double eps) {                                                                                       \
        mv1_impl<FMT, false, U>(WMAKE(a), WMAKE(b), WMAKE(c), da, db, dc, ra, rb, rows, x, cols, mode, normw, eps); \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(MV1_THREADS, MINB) sw1_##NAME(                        \
        WPARAMS(a), WPARAMS(b), float* d, long long rows, const float* __restrict__ x, long long cols,       \
        const float* normw, double eps) {                                                                   \
        const Weight A = WMAKE(a);                                                                          \
        mv1_impl<FMT, true, U / 2>(A, WMAKE(b), A, d, d, d, rows, 0, rows, x, cols, MV_STORE, normw, eps);   \
    }
#define MV1(NAME, FMT) MV1V(NAME, FMT, 4, 4)

QLLAMA_FORMATS(MV1)
