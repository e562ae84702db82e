// norm.cu: RMSNorm (HF LlamaRMSNorm in float32) and the greedy head's argmax.
#include "qllama.cuh"

// rmsnorm: out[i] = w * x[rows[i]] / sqrt(mean(x^2) + eps) for n rows of dim
// values, as float32 (out) and/or rounded to FP16 (outh, the tensor-core
// path's GEMM input); either may be null, and rows may be null (row i of x).
// One block per row, blockDim a multiple of 32, at most 1024.
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                                   __half* __restrict__ outh, const int* __restrict__ rows, long long n, long long dim,
                                   double eps) {
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
    for (long long j = threadIdx.x; j < dim; j += blockDim.x) {
        const float v = w[j] * (xr[j] * inv);
        if (out) out[i * dim + j] = v;
        if (outh) outh[i * dim + j] = __float2half_rn(v);
    }
}

// argmax_reduce folds (value, index) into (best, bi): larger value wins, the
// lower index on ties; NaN never wins.
__device__ __forceinline__ void argmax_fold(float& best, int& bi, float v, int i) {
    if (v > best || (v == best && i < bi)) { best = v; bi = i; }
}

// argmax_block reduces the block's (best, bi) pairs; thread 0 gets the result.
__device__ __forceinline__ void argmax_block(float& best, int& bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_fold(best, bi, ov, oi);
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
            argmax_fold(best, bi, ov, oi);
        }
    }
}

// argmax_part: grid (n, parts); block (i, b) finds the best of its slice of
// row i and writes (value, index) to part[(i*parts + b)*2] (index as int bits).
extern "C" __global__ void argmax_part(const float* __restrict__ logits, float* __restrict__ part, long long n,
                                       long long vocab) {
    const long long i = blockIdx.x;
    if (i >= n) return;
    const long long per = (vocab + gridDim.y - 1) / gridDim.y;
    const long long j0 = (long long)blockIdx.y * per, j1 = min(vocab, j0 + per);
    const float* l = logits + i * vocab;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (long long j = j0 + threadIdx.x; j < j1; j += blockDim.x) argmax_fold(best, bi, l[j], (int)j);
    argmax_block(best, bi);
    if (threadIdx.x == 0) {
        float* o = part + (i * gridDim.y + blockIdx.y) * 2;
        o[0] = best;
        o[1] = __int_as_float(bi);
    }
}

// argmax_final: ids[i] = the index of the best of row i's parts (0 if every
// value was NaN or -inf). One block of at least parts threads per row.
extern "C" __global__ void argmax_final(const float* __restrict__ part, int* __restrict__ ids, long long n,
                                        long long parts) {
    const long long i = blockIdx.x;
    if (i >= n) return;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (long long b = threadIdx.x; b < parts; b += blockDim.x) {
        const float* p = part + (i * parts + b) * 2;
        argmax_fold(best, bi, p[0], __float_as_int(p[1]));
    }
    argmax_block(best, bi);
    if (threadIdx.x == 0) ids[i] = bi == 0x7fffffff ? 0 : bi;
}
