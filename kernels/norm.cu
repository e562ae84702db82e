// norm.cu: RMSNorm (HF LlamaRMSNorm in float32) and the greedy head's argmax.
#include "qllama.cuh"

// rmsnorm: out[i] = w * x[rows[i]] / sqrt(mean(x^2) + eps) for n rows of dim
// values; rows may be null (row i of x). One block per row, blockDim a
// multiple of 32, at most 1024.
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                                   const int* __restrict__ rows, long long n, long long dim, double eps) {
    const long long i = blockIdx.x;
    if (i >= n) return;
    const float* xr = x + (rows ? (long long)rows[i] : i) * dim;
    float ss = 0.f;
    for (long long j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
    __shared__ float part[32];
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
        v = warp_sum(v);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    const float inv = (float)(1.0 / sqrt((double)(part[0] / (float)dim + (float)eps)));
    for (long long j = threadIdx.x; j < dim; j += blockDim.x) out[i * dim + j] = w[j] * (xr[j] * inv);
}

// argmax: ids[i] = the index of the largest of the vocab values of row i
// (the lowest index on ties; NaN never wins). One block per row.
extern "C" __global__ void argmax(const float* __restrict__ logits, int* __restrict__ ids, long long n, long long vocab) {
    const long long i = blockIdx.x;
    if (i >= n) return;
    const float* l = logits + i * vocab;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float v = l[j];
        if (v > best) { best = v; bi = (int)j; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    __shared__ float sv[32];
    __shared__ int si[32];
    if ((threadIdx.x & 31) == 0) { sv[threadIdx.x >> 5] = best; si[threadIdx.x >> 5] = bi; }
    __syncthreads();
    if (threadIdx.x < 32) {
        bool ok = threadIdx.x < (blockDim.x >> 5);
        best = ok ? sv[threadIdx.x] : -INFINITY;
        bi = ok ? si[threadIdx.x] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
        }
        if (threadIdx.x == 0) ids[i] = bi == 0x7fffffff ? 0 : bi;
    }
}
