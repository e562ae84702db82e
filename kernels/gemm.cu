// gemm.cu: the helpers of the tensor-core path (cuBLAS GEMMs, used for steps
// of many tokens: prefill and large batches): dequantisation of a packed
// weight's rows to FP16, FP16 activations, the fused SwiGLU product, and the
// causal softmax of attention scores computed by a GEMM.
#include "qllama.cuh"

// dequant_<fmt> writes rows [r0, r0+nr) of a packed weight as FP16 into
// out[(r-r0)*cols + j]. One thread per chunk of 8 weights (per weight when
// cols is not a multiple of 8).
#define DEQUANT(NAME, FMT)                                                                                \
    extern "C" __global__ void dequant_##NAME(WPARAMS(w), __half* __restrict__ out, long long r0, long long nr, \
                                              long long cols) {                                         \
        Weight W = WMAKE(w);                                                                              \
        const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;                             \
        if (cols & 7) {                                                                                   \
            if (i >= nr * cols) return;                                                                   \
            out[i] = __float2half(decode1<FMT>(W, r0 + i / cols, cols, i % cols));                         \
            return;                                                                                       \
        }                                                                                                 \
        const long long per = cols >> 3;                                                                  \
        if (i >= nr * per) return;                                                                        \
        float v[8];                                                                                       \
        decode8<FMT>(W, r0 + i / per, cols, i % per, v);                                                  \
        __half2 h[4];                                                                                     \
        for (int k = 0; k < 4; k++) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);                    \
        *reinterpret_cast<uint4*>(out + i * 8) = *reinterpret_cast<const uint4*>(h);                      \
    }
QLLAMA_FORMATS(DEQUANT)

// to_half: out[i] = (half)x[i] for n values.
extern "C" __global__ void to_half(const float* __restrict__ x, __half* __restrict__ out, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half(x[i]);
}

// silu_mul: h[i] = silu(g[i]) * u[i] for n values, written as float32 (outf,
// if not null) and FP16 (outh, if not null).
extern "C" __global__ void silu_mul(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ outf,
                                    __half* __restrict__ outh, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float a = g[i];
    const float v = a / (1.f + expf(-a)) * u[i];
    if (outf) outf[i] = v;
    if (outh) outh[i] = __float2half(v);
}

// softmax_causal normalises attention scores in place: s holds cols columns
// (one per (head, query)) of ld floats; column c = h*nq + t belongs to query t
// of the chunk, which sees keys [0, first + t] (first: the absolute position
// of query 0). Entries from first+t+1 to len are set to zero. One block per
// column. The scores already carry the 1/sqrt(head dim) scale.
extern "C" __global__ void softmax_causal(float* __restrict__ s, long long cols, long long nq, long long ld,
                                          long long len, long long first) {
    const long long c = blockIdx.x;
    if (c >= cols) return;
    const long long t = c % nq;
    const long long valid = min(len, first + t + 1);
    float* p = s + c * ld;
    __shared__ float red[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float mx = -INFINITY;
    for (long long j = threadIdx.x; j < valid; j += blockDim.x) mx = fmaxf(mx, p[j]);
    mx = warp_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
    for (int i = 1; i < nw; i++) mx = fmaxf(mx, red[i]);
    __syncthreads();
    float sum = 0.f;
    for (long long j = threadIdx.x; j < valid; j += blockDim.x) {
        const float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    sum = 0.f;
    for (int i = 0; i < nw; i++) sum += red[i];
    const float inv = 1.f / sum;
    for (long long j = threadIdx.x; j < len; j += blockDim.x) p[j] = j < valid ? p[j] * inv : 0.f;
}

// strided_copy: out[i] = x[i*stride] for n values (a matrix diagonal with
// stride cols+1).
extern "C" __global__ void strided_copy(const float* __restrict__ x, float* __restrict__ out, long long n,
                                        long long stride) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i * stride];
}
