// attention.cu: causal grouped-query attention over the KV cache, split over
// the key positions (flash-decoding): attn_partial handles up to ATT_CHUNK
// positions (the launch's chunk) per block and writes an unnormalised partial result with its max and sum;
// attn_combine merges the splits. The same pair serves decode (one row per
// sequence) and prefill (row t sees positions 0..pos[t]).
#include "qllama.cuh"

#define ATT_CHUNK 256
#define ATT_THREADS 128

// part layout: [n][heads][nsplit][hd+2] = (max, sum, o[hd]). Each block
// handles chunk (<= ATT_CHUNK) key positions of one (row, head): scores one
// position per thread (q from shared memory, float4 key loads), then the
// weighted sum of values one position per warp with lanes over the head
// dimensions (coalesced), reduced across warps in shared memory. hd must be a
// multiple of 4 and at most 256.
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_partial(
    const float* __restrict__ q, float* __restrict__ part, const int* __restrict__ pos,
    const unsigned long long* __restrict__ kvbase, const int* __restrict__ kvcap, long long layer, long long heads,
    long long kvheads, long long hd, double scale, long long nsplit, long long chunk) {
    const long long t = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const long long kvdim = kvheads * hd, cap = kvcap[t], kh = h / (heads / kvheads);
    const long long npos = (long long)pos[t] + 1;
    const long long p0 = s * chunk, p1 = min(npos, p0 + chunk);
    float* out = part + ((t * heads + h) * nsplit + s) * (hd + 2);
    if (p0 >= npos) {
        for (long long i = threadIdx.x; i < hd + 2; i += blockDim.x) out[i] = i == 0 ? -INFINITY : 0.f;
        return;
    }
    __shared__ float sc[ATT_CHUNK];
    __shared__ __align__(16) float qs[256];
    __shared__ float red[ATT_THREADS / 32];
    __shared__ float acc[ATT_THREADS / 32][256];
    const float* kc = reinterpret_cast<const float*>(kvbase[t]) + (layer * 2) * cap * kvdim + kh * hd;
    const float* vc = kc + cap * kvdim;
    const float fscale = (float)scale;
    for (long long i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = q[t * heads * hd + h * hd + i] * fscale;
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int m = (int)(p1 - p0);
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float4* kp = reinterpret_cast<const float4*>(kc + (p0 + j) * kvdim);
        const float4* qp = reinterpret_cast<const float4*>(qs);
        float d = 0.f;
        for (int i = 0; i < hd / 4; i++) {
            float4 kv = kp[i], qv = qp[i];
            d += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
        }
        sc[j] = d;
        mx = fmaxf(mx, d);
    }
    mx = warp_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
    for (int i = 1; i < nw; i++) mx = fmaxf(mx, red[i]);
    __syncthreads();
    float sum = 0.f;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    sum = 0.f;
    for (int i = 0; i < nw; i++) sum += red[i];
    // weighted values: warp w takes positions w, w+nw, ...; lane i takes dims i, i+32, ...
    float o[8];
#pragma unroll
    for (int k = 0; k < 8; k++) o[k] = 0.f;
    for (int j = warp; j < m; j += nw) {
        const float* vp = vc + (p0 + j) * kvdim;
        const float e = sc[j];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int i = lane + 32 * k;
            if (i < hd) o[k] += e * vp[i];
        }
    }
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int i = lane + 32 * k;
        if (i < hd) acc[warp][i] = o[k];
    }
    __syncthreads();
    for (long long i = threadIdx.x; i < hd; i += blockDim.x) {
        float v = 0.f;
        for (int w = 0; w < nw; w++) v += acc[w][i];
        out[2 + i] = v;
    }
    if (threadIdx.x == 0) { out[0] = mx; out[1] = sum; }
}

// attn_combine: out[t][h*hd+i] = sum_s e^(m_s-M) o_s[i] / sum_s e^(m_s-M) l_s.
// Grid (n, heads).
extern "C" __global__ void attn_combine(const float* __restrict__ part, float* __restrict__ out, long long heads,
                                       long long hd, long long nsplit) {
    const long long t = blockIdx.x, h = blockIdx.y;
    const float* p = part + (t * heads + h) * nsplit * (hd + 2);
    float M = -INFINITY;
    for (long long s = 0; s < nsplit; s++) M = fmaxf(M, p[s * (hd + 2)]);
    float L = 0.f;
    for (long long s = 0; s < nsplit; s++) {
        float ms = p[s * (hd + 2)];
        if (ms != -INFINITY) L += expf(ms - M) * p[s * (hd + 2) + 1];
    }
    for (long long i = threadIdx.x; i < hd; i += blockDim.x) {
        float o = 0.f;
        for (long long s = 0; s < nsplit; s++) {
            float ms = p[s * (hd + 2)];
            if (ms != -INFINITY) o += expf(ms - M) * p[s * (hd + 2) + 2 + i];
        }
        out[t * heads * hd + h * hd + i] = o / L;
    }
}
