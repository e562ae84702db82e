// attention.cu: causal grouped-query attention over the paged KV cache, split over
// the key positions (flash-decoding) in one launch: block (t, h, s) of
// attn_split handles split s of row t's positions 0..pos[t] for query head h
// (nsplit splits of ceil((pos[t]+1)/nsplit) positions each), and the last
// block of (t, h) to finish merges the splits (a ticket counter per (t, h),
// reset by that block, so a captured graph can be replayed). The same kernel
// serves decode (one row per sequence) and prefill (row t sees positions
// 0..pos[t]). Row t's keys and values are in the pages listed at
// tab + taboff[t] (KV_PAGE in qllama.cuh); each kernel is stamped per cache
// element type (attn_split_f32, attn_split_f16).
#include "qllama.cuh"

#define ATT_CHUNK 256  // the most positions per block (scores in shared memory)
#define ATT_THREADS 128

// part layout: [n][heads][nsplit][hd+2] = (max, sum, o[hd]); count: [n][heads]
// int32, zero before the first launch (each launch leaves it zero). Scores:
// 8 threads per position (float4 key loads, q from shared memory), 16
// positions per pass; values: threads over (hd/4 float4 dimension groups) x
// (position groups), reduced in shared memory. hd must be a multiple of 4 and
// at most 256; the caller picks nsplit so a split is at most ATT_CHUNK
// positions (a longer one writes NaN). With nsplit 1 the block writes out
// directly and part and count are unused.
//
// attn_decode_<kv> is attn_split for decode steps (one new token per row,
// every row its own sequence) with rope_store folded in: each block rotates
// its q head itself, the block of each split that holds position pos[t]
// rotates that position's key and uses it and the new value from shared
// memory, and the first query head of each KV head stores them in the cache
// (no block of the launch reads them from there), so a decode step has one
// launch per layer instead of two. Model.run uses it for batch-1 steps.
template <typename T, bool FUSED>
__device__ __forceinline__ void attn_split_impl(
    const float* __restrict__ q, float* __restrict__ part, int* __restrict__ count, float* __restrict__ out,
    const int* __restrict__ pos, const unsigned long long* __restrict__ tab, const int* __restrict__ taboff,
    long long layer, long long heads, long long kvheads, long long hd, double scale, long long nsplit,
    const float* __restrict__ knew, const float* __restrict__ vnew, const double* __restrict__ invfreq) {
    const long long t = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const long long kvdim = kvheads * hd, kh = h / (heads / kvheads);
    const long long npos = (long long)pos[t] + 1;
    const long long chunk = (npos + nsplit - 1) / nsplit;
    const long long p0 = min(npos, s * chunk), p1 = min(npos, p0 + chunk);
    const int m = (int)(p1 - p0);
    __shared__ float sc[ATT_CHUNK];
    __shared__ __align__(16) float qs[256];
    __shared__ __align__(16) float acc[4 * ATT_THREADS];
    __shared__ float red[ATT_THREADS / 32];
    __shared__ int last;
    float* o = out + t * heads * hd + h * hd;
    if (chunk > ATT_CHUNK) {  // caller error: make it visible
        for (long long i = threadIdx.x; i < hd; i += blockDim.x) o[i] = __int_as_float(0x7fc00000);
        return;
    }
    const unsigned long long* tb = tab + taboff[t];
    const float fscale = (float)scale;
    __shared__ __align__(16) float kn[FUSED ? 256 : 4], vn[FUSED ? 256 : 4];
    const long long cur = npos - 1;  // FUSED: the new position
    const bool holds = FUSED && p0 <= cur && cur < p1;
    if (FUSED) {
        const long long half = hd >> 1;
        const float* qr = q + t * heads * hd + h * hd;
        const float* kr = knew + t * kvdim + kh * hd;
        for (long long i = threadIdx.x; i < half; i += blockDim.x) {
            float cs, sn;
            rope_cs((int)cur, invfreq[i], cs, sn);
            const float x1 = qr[i], x2 = qr[i + half];
            qs[i] = (x1 * cs - x2 * sn) * fscale;
            qs[i + half] = (x2 * cs + x1 * sn) * fscale;
            if (holds) {
                const float k1 = kr[i], k2 = kr[i + half];
                kn[i] = k1 * cs - k2 * sn;
                kn[i + half] = k2 * cs + k1 * sn;
            }
        }
        if (holds)
            for (long long i = threadIdx.x; i < hd; i += blockDim.x) vn[i] = vnew[t * kvdim + kh * hd + i];
        __syncthreads();
        if (holds && h % (heads / kvheads) == 0) {
            T* kc = kv_row<T>(tb, layer, 0, cur, kvdim) + kh * hd;
            T* vc = kv_row<T>(tb, layer, 1, cur, kvdim) + kh * hd;
            for (long long i = threadIdx.x; i < hd; i += blockDim.x) {
                store1(kc + i, kn[i]);
                store1(vc + i, vn[i]);
            }
        }
    } else {
        for (long long i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = q[t * heads * hd + h * hd + i] * fscale;
        __syncthreads();
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int hd4 = (int)(hd >> 2);
    const float4* qp = reinterpret_cast<const float4*>(qs);
    // Scores.
    float mx = -INFINITY;
    {
        const int sub = threadIdx.x & 7, pg = threadIdx.x >> 3, npg = blockDim.x >> 3;
#pragma unroll 2
        for (int j0 = 0; j0 < m; j0 += npg) {
            const int j = j0 + pg;
            float d = 0.f;
            if (FUSED && j < m && p0 + j == cur) {
                for (int i = sub; i < hd4; i += 8) {
                    const float4 kv = reinterpret_cast<const float4*>(kn)[i], qv = qp[i];
                    d += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
                }
            } else if (j < m) {
                const T* kp = kv_row<const T>(tb, layer, 0, p0 + j, kvdim) + kh * hd;
                for (int i = sub; i < hd4; i += 8) {
                    const float4 kv = load4(kp + 4 * i), qv = qp[i];
                    d += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
                }
            }
            d += __shfl_xor_sync(0xffffffffu, d, 1);
            d += __shfl_xor_sync(0xffffffffu, d, 2);
            d += __shfl_xor_sync(0xffffffffu, d, 4);
            if (j < m) {
                if (sub == 0) sc[j] = d;
                mx = fmaxf(mx, d);
            }
        }
    }
    mx = warp_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
    for (int i = 1; i < nw; i++) mx = fmaxf(mx, red[i]);
    __syncthreads();
    float sum = 0.f;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    sum = 0.f;
    for (int i = 0; i < nw; i++) sum += red[i];
    // Weighted values.
    {
        const int npg = (int)blockDim.x / hd4, di = threadIdx.x % hd4, pg = threadIdx.x / hd4;
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
        if (pg < npg) {
#pragma unroll 4
            for (int j = pg; j < m; j += npg) {
                const float e = sc[j];
                const float4 v = FUSED && p0 + j == cur ? reinterpret_cast<const float4*>(vn)[di]
                                                        : load4(kv_row<const T>(tb, layer, 1, p0 + j, kvdim) + kh * hd + 4 * di);
                a.x += e * v.x; a.y += e * v.y; a.z += e * v.z; a.w += e * v.w;
            }
            reinterpret_cast<float4*>(acc)[pg * hd4 + di] = a;
        }
        __syncthreads();
        if (nsplit == 1) {
            for (long long i = threadIdx.x; i < hd; i += blockDim.x) {
                float v = 0.f;
                for (int g = 0; g < npg; g++) v += acc[g * hd + i];
                o[i] = v / sum;
            }
            return;
        }
        float* pp = part + ((t * heads + h) * nsplit + s) * (hd + 2);
        for (long long i = threadIdx.x; i < hd; i += blockDim.x) {
            float v = 0.f;
            for (int g = 0; g < npg; g++) v += acc[g * hd + i];
            pp[2 + i] = v;
        }
        if (threadIdx.x == 0) { pp[0] = mx; pp[1] = sum; }
    }
    // The last block of (t, h) merges the splits.
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const int ticket = atomicAdd(count + t * heads + h, 1);
        last = ticket == (int)nsplit - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Split k's weight e^(m_k - M) / L, one split per thread (kept in sc,
    // free now), then the weighted sum per dimension.
    const float* p = part + (t * heads + h) * nsplit * (hd + 2);
    float mk = -INFINITY, lk = 0.f;
    for (long long k = threadIdx.x; k < nsplit; k += blockDim.x) {
        const float a = __ldcg(p + k * (hd + 2));
        if (a > mk) { lk = lk * expf(mk - a) + __ldcg(p + k * (hd + 2) + 1); mk = a; }
        else if (a != -INFINITY) lk += expf(a - mk) * __ldcg(p + k * (hd + 2) + 1);
    }
    float M = warp_max(mk);
    if (lane == 0) red[warp] = M;
    __syncthreads();
    M = red[0];
    for (int i = 1; i < nw; i++) M = fmaxf(M, red[i]);
    __syncthreads();
    float L = mk == -INFINITY ? 0.f : lk * expf(mk - M);
    L = warp_sum(L);
    if (lane == 0) red[warp] = L;
    __syncthreads();
    L = 0.f;
    for (int i = 0; i < nw; i++) L += red[i];
    const bool cached = nsplit <= ATT_CHUNK;  // else (over 65,536 positions) recomputed per use
    for (long long k = threadIdx.x; cached && k < nsplit; k += blockDim.x) {
        const float a = __ldcg(p + k * (hd + 2));
        sc[k] = a == -INFINITY ? 0.f : expf(a - M) / L;
    }
    __syncthreads();
    for (long long i = threadIdx.x; i < hd; i += blockDim.x) {
        float v = 0.f;
#pragma unroll 4
        for (long long k = 0; k < nsplit; k++) {
            float w;
            if (cached) w = sc[k];
            else {
                const float a = __ldcg(p + k * (hd + 2));
                w = a == -INFINITY ? 0.f : expf(a - M) / L;
            }
            v += w * __ldcg(p + k * (hd + 2) + 2 + i);
        }
        o[i] = v;
    }
    if (threadIdx.x == 0) count[t * heads + h] = 0;
}

#define ATTN_SPLIT(SUF, T)                                                                                           \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_split_##SUF(                                      \
        const float* __restrict__ q, float* __restrict__ part, int* __restrict__ count, float* __restrict__ out,     \
        const int* __restrict__ pos, const unsigned long long* __restrict__ tab, const int* __restrict__ taboff,      \
        long long layer, long long heads, long long kvheads, long long hd, double scale, long long nsplit) {         \
        attn_split_impl<T, false>(q, part, count, out, pos, tab, taboff, layer, heads, kvheads, hd, scale, nsplit,    \
                                  nullptr, nullptr, nullptr);                                                        \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_decode_##SUF(                                     \
        const float* __restrict__ q, float* __restrict__ part, int* __restrict__ count, float* __restrict__ out,     \
        const int* __restrict__ pos, const unsigned long long* __restrict__ tab, const int* __restrict__ taboff,      \
        long long layer, long long heads, long long kvheads, long long hd, double scale, long long nsplit,           \
        const float* __restrict__ knew, const float* __restrict__ vnew, const double* __restrict__ invfreq) {        \
        attn_split_impl<T, true>(q, part, count, out, pos, tab, taboff, layer, heads, kvheads, hd, scale, nsplit,    \
                                 knew, vnew, invfreq);                                                               \
    }
KV_TYPES(ATTN_SPLIT)

// kv_gather_<kv> copies the keys and values of positions [0, len) of layer
// from one sequence's pages (table tab) into contiguous float32 rows k, v
// [len][kvdim], for the GEMM attention of a long span. One thread per 4
// values.
template <typename T>
__device__ __forceinline__ void kv_gather_impl(const unsigned long long* __restrict__ tab, float* __restrict__ k,
                                               float* __restrict__ v, long long layer, long long len,
                                               long long kvdim) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long per = kvdim >> 2;
    if (i >= len * per) return;
    const long long p = i / per, c = (i % per) * 4;
    reinterpret_cast<float4*>(k + p * kvdim + c)[0] = load4(kv_row<const T>(tab, layer, 0, p, kvdim) + c);
    reinterpret_cast<float4*>(v + p * kvdim + c)[0] = load4(kv_row<const T>(tab, layer, 1, p, kvdim) + c);
}

#define KV_GATHER(SUF, T)                                                                                 \
    extern "C" __global__ void kv_gather_##SUF(const unsigned long long* __restrict__ tab, float* __restrict__ k, \
                                               float* __restrict__ v, long long layer, long long len,        \
                                               long long kvdim) {                                            \
        kv_gather_impl<T>(tab, k, v, layer, len, kvdim);                                                     \
    }
KV_TYPES(KV_GATHER)

// flash_attn_f16 is the prefill attention of one sequence's span on the
// tensor cores (WMMA, FP16 inputs, float32 accumulation), FlashAttention-2
// style: no score matrix in memory. Block (x, h) takes queries [64x, 64x+64)
// of the span (rows of q and out; absolute positions start + row) for head
// h, four warps of 16 queries each, and walks the key tiles of 64 positions
// that the causal mask leaves, straight from the FP16 pages (table tab):
// S = (scale q) K^T per warp, an online softmax (running max and sum per
// row, in float, base 2), O = O * alpha + P V with P rounded to FP16. Head
// dim 64 only (FA_HD); the caller uses the GEMM path otherwise.
//
// The softmax and the rescaling of O work on the accumulator fragments in
// registers. WMMA leaves the fragment layout unspecified; this kernel uses
// the one of the m16n8k16 mma it compiles to on sm_80 and sm_90 (element i
// of lane L: row L/4 + 8*((i/2)%2), column 2*(L%4) + i%2 + 8*(i/4)), checks it
// at the start of every block, and writes NaN (which the tests catch) if the
// compiler ever lays fragments out otherwise.
#include <mma.h>
#define FA_HD 64
#define FA_T 64             // queries per block and keys per tile
#define FA_LDH (FA_HD + 8)  // halves per shared K, V, Q and P row
__device__ __forceinline__ int fa_row(int lane, int i) { return (lane >> 2) + 8 * ((i >> 1) & 1); }
__device__ __forceinline__ int fa_col(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * (i >> 2); }
extern "C" __global__ void __launch_bounds__(128, 4) flash_attn_f16(
    const float* __restrict__ q, float* __restrict__ out, const unsigned long long* __restrict__ tab, long long start,
    long long nq, long long layer, long long heads, long long kvheads, double scale) {
    using namespace nvcuda;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_t;
    const long long kvdim = kvheads * FA_HD, kh = blockIdx.y / (heads / kvheads), h = blockIdx.y;
    const long long q0 = (long long)blockIdx.x * FA_T;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __shared__ __align__(32) __half Ks[FA_T * FA_LDH];
    __shared__ __align__(32) __half Vs[FA_T * FA_LDH];
    __shared__ __align__(32) __half Ps[4][16 * FA_LDH];
    __shared__ __align__(32) float probe[4][16 * 16];
    // The layout check: element (r, c) of a loaded 16 x 16 tile is r*16 + c.
    bool ok;
    {
        float* pr = probe[warp];
        for (int i = lane; i < 256; i += 32) pr[i] = (float)i;
        __syncwarp();
        acc_t f;
        wmma::load_matrix_sync(f, pr, 16, wmma::mem_row_major);
        ok = f.num_elements == 8;
#pragma unroll
        for (int i = 0; i < f.num_elements; i++) ok = ok && f.x[i] == (float)(fa_row(lane, i) * 16 + fa_col(lane, i));
        ok = __all_sync(0xffffffffu, ok);
    }
    // Q tile, scaled (by log2 e too: the softmax is taken in base 2) and
    // rounded, staged in Ks; rows past the span are zero.
    const float fs = (float)(scale * 1.4426950408889634);
    for (int i = threadIdx.x; i < FA_T * FA_HD; i += blockDim.x) {
        const long long r = q0 + i / FA_HD;
        Ks[(i / FA_HD) * FA_LDH + i % FA_HD] = __float2half_rn(r < nq ? q[r * heads * FA_HD + h * FA_HD + i % FA_HD] * fs : 0.f);
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qa[FA_HD / 16];
#pragma unroll
    for (int k = 0; k < FA_HD / 16; k++) wmma::load_matrix_sync(qa[k], Ks + warp * 16 * FA_LDH + k * 16, FA_LDH);
    acc_t o[FA_HD / 16];
#pragma unroll
    for (int j = 0; j < FA_HD / 16; j++) wmma::fill_fragment(o[j], 0.f);
    // This lane's two rows of the warp's 16: g and g + 8 (index 0 and 1).
    const int g = lane >> 2;
    long long qpos[2];
#pragma unroll
    for (int a = 0; a < 2; a++) qpos[a] = start + min(q0 + warp * 16 + g + 8 * a, nq - 1);  // rows past the span mask like the last
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const long long last = start + min(q0 + FA_T, nq) - 1;  // the block's last query position
    __half* P = Ps[warp];
    for (long long k0 = 0; k0 <= last; k0 += FA_T) {
        __syncthreads();  // the previous tile (or the Q staging) is done with Ks, Vs
        for (int i = threadIdx.x; i < FA_T * FA_HD / 8; i += blockDim.x) {
            const int kr = i / (FA_HD / 8), c = (i % (FA_HD / 8)) * 8;
            const long long p = k0 + kr;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (p <= last) {
                kv = *reinterpret_cast<const uint4*>(kv_row<const __half>(tab, layer, 0, p, kvdim) + kh * FA_HD + c);
                vv = *reinterpret_cast<const uint4*>(kv_row<const __half>(tab, layer, 1, p, kvdim) + kh * FA_HD + c);
            }
            *reinterpret_cast<uint4*>(Ks + kr * FA_LDH + c) = kv;
            *reinterpret_cast<uint4*>(Vs + kr * FA_LDH + c) = vv;
        }
        __syncthreads();
        // S = Q K^T for the warp's 16 rows, in registers.
        acc_t s[FA_T / 16];
#pragma unroll
        for (int j = 0; j < FA_T / 16; j++) {
            wmma::fill_fragment(s[j], 0.f);
#pragma unroll
            for (int k = 0; k < FA_HD / 16; k++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kb;
                wmma::load_matrix_sync(kb, Ks + j * 16 * FA_LDH + k * 16, FA_LDH);
                wmma::mma_sync(s[j], qa[k], kb, s[j]);
            }
        }
        // Mask, row maxima (over the 4 lanes of a row), probabilities.
        float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < FA_T / 16; j++)
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int a = (i >> 1) & 1;
                if (k0 + j * 16 + fa_col(lane, i) > qpos[a]) s[j].x[i] = -INFINITY;
                mt[a] = fmaxf(mt[a], s[j].x[i]);
            }
        float alpha[2], sum[2] = {0.f, 0.f};
#pragma unroll
        for (int a = 0; a < 2; a++) {
            mt[a] = fmaxf(mt[a], __shfl_xor_sync(0xffffffffu, mt[a], 1));
            mt[a] = fmaxf(mt[a], __shfl_xor_sync(0xffffffffu, mt[a], 2));
            const float mn = fmaxf(m[a], mt[a]);  // finite: key 0 is in the first tile of every row
            alpha[a] = exp2f(m[a] - mn);
            m[a] = mn;
        }
#pragma unroll
        for (int j = 0; j < FA_T / 16; j++)
#pragma unroll
            for (int i = 0; i < 8; i += 2) {
                const int a = (i >> 1) & 1;
                const float e0 = exp2f(s[j].x[i] - m[a]), e1 = exp2f(s[j].x[i + 1] - m[a]);
                sum[a] += e0 + e1;
                *reinterpret_cast<__half2*>(P + fa_row(lane, i) * FA_LDH + j * 16 + fa_col(lane, i)) =
                    __floats2half2_rn(e0, e1);
            }
#pragma unroll
        for (int a = 0; a < 2; a++) {
            sum[a] += __shfl_xor_sync(0xffffffffu, sum[a], 1);
            sum[a] += __shfl_xor_sync(0xffffffffu, sum[a], 2);
            l[a] = l[a] * alpha[a] + sum[a];
        }
        // O = O * alpha + P V.
#pragma unroll
        for (int j = 0; j < FA_HD / 16; j++)
#pragma unroll
            for (int i = 0; i < 8; i++) o[j].x[i] *= alpha[(i >> 1) & 1];
        __syncwarp();
#pragma unroll
        for (int k = 0; k < FA_T / 16; k++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pa;
            wmma::load_matrix_sync(pa, P + k * 16, FA_LDH);
#pragma unroll
            for (int j = 0; j < FA_HD / 16; j++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vb;
                wmma::load_matrix_sync(vb, Vs + k * 16 * FA_LDH + j * 16, FA_LDH);
                wmma::mma_sync(o[j], pa, vb, o[j]);
            }
        }
        __syncwarp();  // P is rewritten by the next tile
    }
    const float inv[2] = {ok ? 1.f / l[0] : __int_as_float(0x7fc00000), ok ? 1.f / l[1] : __int_as_float(0x7fc00000)};
#pragma unroll
    for (int j = 0; j < FA_HD / 16; j++)
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            const int a = (i >> 1) & 1;
            const long long row = q0 + warp * 16 + fa_row(lane, i);
            if (row < nq)
                *reinterpret_cast<float2*>(out + row * heads * FA_HD + h * FA_HD + j * 16 + fa_col(lane, i)) =
                    make_float2(o[j].x[i] * inv[a], o[j].x[i + 1] * inv[a]);
        }
}
