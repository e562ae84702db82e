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
template <typename T>
__device__ __forceinline__ void attn_split_impl(
    const float* __restrict__ q, float* __restrict__ part, int* __restrict__ count, float* __restrict__ out,
    const int* __restrict__ pos, const unsigned long long* __restrict__ tab, const int* __restrict__ taboff,
    long long layer, long long heads, long long kvheads, long long hd, double scale, long long nsplit) {
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
    for (long long i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = q[t * heads * hd + h * hd + i] * fscale;
    __syncthreads();
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
            if (j < m) {
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
                const float4 v = load4(kv_row<const T>(tb, layer, 1, p0 + j, kvdim) + kh * hd + 4 * di);
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
        attn_split_impl<T>(q, part, count, out, pos, tab, taboff, layer, heads, kvheads, hd, scale, nsplit);         \
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
