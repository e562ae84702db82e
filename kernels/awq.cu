// awq.cu: the GPU side of AWQ (infer/cuda/awq.go; the CPU reference is
// convert/awq). The fake quantization and the clipping search follow
// quant.RuleAWQ in float32 exactly as convert/awq does: scale =
// max(max-min, 1e-5)/maxq, zero = clamp(-rint(min/scale), 0, maxq), code =
// clamp(rint(x/scale) + zero, 0, maxq) (rint: halves to even, IEEE
// division). Blocks of AWQ_THREADS threads (the block reductions assume it).
#include <cuda_fp16.h>
#include <math.h>

#define AWQ_THREADS 128
#define AWQ_WARPS (AWQ_THREADS / 32)
#define AWQ_FULL 0xffffffffu

__device__ __forceinline__ float awq_wmin(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(AWQ_FULL, v, o));
    return v;
}

__device__ __forceinline__ float awq_wmax(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(AWQ_FULL, v, o));
    return v;
}

__device__ __forceinline__ float awq_wsum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(AWQ_FULL, v, o);
    return v;
}

// awq_minmax reduces lo and hi over the block (every thread gets the result).
__device__ __forceinline__ void awq_minmax(float& lo, float& hi) {
    __shared__ float slo[AWQ_WARPS], shi[AWQ_WARPS];
    lo = awq_wmin(lo);
    hi = awq_wmax(hi);
    const int w = threadIdx.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) slo[w] = lo, shi[w] = hi;
    __syncthreads();
    lo = slo[0], hi = shi[0];
#pragma unroll
    for (int i = 1; i < AWQ_WARPS; i++) lo = fminf(lo, slo[i]), hi = fmaxf(hi, shi[i]);
}

// awq_bsum returns the block sum of v (every thread gets it).
__device__ __forceinline__ float awq_bsum(float v) {
    __shared__ float ss[AWQ_WARPS];
    v = awq_wsum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) ss[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0;
#pragma unroll
    for (int i = 0; i < AWQ_WARPS; i++) s += ss[i];
    return s;
}

// awq_params: the group's scale and zero from its min and max (RuleAWQ).
__device__ __forceinline__ void awq_params(float lo, float hi, float maxq, float& scale, float& zero) {
    scale = __fdiv_rn(fmaxf(hi - lo, 1e-5f), maxq);
    zero = fminf(fmaxf(-rintf(__fdiv_rn(lo, scale)), 0.f), maxq);
}

// awq_colstats adds, per column j of the FP16 rows x ([rows][cols]), the sum
// of |x| to sabs[j] and of x² to ssq[j] (float64). Grid: x over columns
// (AWQ_THREADS per block), y over row slices.
extern "C" __global__ void awq_colstats(const __half* __restrict__ x, long long rows, long long cols, double* __restrict__ sabs,
                                        double* __restrict__ ssq) {
    const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double a = 0, q = 0;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const double v = (double)__half2float(x[r * cols + j]);
        a += fabs(v);
        q += v * v;
    }
    atomicAdd(sabs + j, a);
    atomicAdd(ssq + j, q);
}

// awq_gather_rows copies, as float32, the rows r of the FP16 x ([rows][cols])
// whose global index row0+r is a multiple of step to dst[(row0+r)/step].
// Grid: x over columns, y over rows (looping).
extern "C" __global__ void awq_gather_rows(const __half* __restrict__ x, long long rows, long long cols, long long row0,
                                           long long step, float* __restrict__ dst) {
    const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (j >= cols) return;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const long long t = row0 + r;
        if (t % step == 0) dst[(t / step) * cols + j] = __half2float(x[r * cols + j]);
    }
}

// awq_fakequant writes out (FP16, [rows][cols]) = Q(W·diag(s))·diag(s)⁻¹ for
// the float32 w ([rows][cols]); s null means no scaling. Q is RTN per group
// of gs columns (the last one may be shorter), as convert/awq.FakeQuant
// (quant.RTN then Dequantize; a NaN code becomes the zero point). Grid: x
// over groups, y over rows (looping); AWQ_THREADS threads.
extern "C" __global__ void awq_fakequant(const float* __restrict__ w, const float* __restrict__ s, __half* __restrict__ out,
                                         long long rows, long long cols, long long gs, double maxqd) {
    const float maxq = (float)maxqd;
    const long long lo = blockIdx.x * gs, hi = min(cols, lo + gs);
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const float* wr = w + r * cols;
        float mn = INFINITY, mx = -INFINITY;
        for (long long j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            const float v = s ? wr[j] * s[j] : wr[j];
            mn = fminf(mn, v), mx = fmaxf(mx, v);
        }
        awq_minmax(mn, mx);
        float scale, zero;
        awq_params(mn, mx, maxq, scale, zero);
        for (long long j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            const float v = s ? wr[j] * s[j] : wr[j];
            float q = rintf(__fdiv_rn(v, scale)) + zero;
            if (q != q) q = zero;
            q = fminf(fmaxf(q, 0.f), maxq);
            float d = scale * (q - zero);
            if (s) d = __fdiv_rn(d, s[j]);
            out[r * cols + j] = __float2half_rn(d);
        }
    }
}

// awq_clip runs convert/awq.Clip's search for every (row, group) of the
// float32 w ([rows][cols], already scaled): with amax = max|w| over the
// group, for i < steps the group clamped to ±amax·(1 - i/grid) is
// fake-quantized and its error d = Q(clamped) - w weighed by the group's
// Gram matrix (G + k·gs·gs, leading dimension gs, symmetric), dᵀGd; best[r·ng
// + k] gets the shrunk max with the smallest error (amax when none is
// finite). Grid: x over rows, y over groups (consecutive blocks share a
// group's Gram matrix in the caches); AWQ_THREADS threads; dynamic shared
// memory 2·gs floats.
extern "C" __global__ void awq_clip(const float* __restrict__ w, const float* __restrict__ G, float* __restrict__ best,
                                    long long rows, long long cols, long long gs, long long steps, double gridd,
                                    double maxqd) {
    extern __shared__ float sh[];
    float* wg = sh;
    float* d = sh + gs;
    const float maxq = (float)maxqd, grid = (float)gridd;
    const long long k = blockIdx.y, ng = gridDim.y;
    const long long lo = k * gs, m = min(cols, lo + gs) - lo;
    const float* Gk = G + k * gs * gs;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        float amax = 0;
        __syncthreads();
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            const float v = w[r * cols + lo + j];
            wg[j] = v;
            amax = fmaxf(amax, fabsf(v));
        }
        float dummy = 0;
        awq_minmax(dummy, amax);
        float bestMax = amax, bestErr = INFINITY;
        for (long long i = 0; i < steps; i++) {
            const float mx = amax * (1.f - __fdiv_rn((float)i, grid));
            float mn = INFINITY, hi = -INFINITY;
            for (long long j = threadIdx.x; j < m; j += blockDim.x) {
                const float c = fminf(fmaxf(wg[j], -mx), mx);
                mn = fminf(mn, c), hi = fmaxf(hi, c);
            }
            awq_minmax(mn, hi);
            float scale, zero;
            awq_params(mn, hi, maxq, scale, zero);
            for (long long j = threadIdx.x; j < m; j += blockDim.x) {
                const float c = fminf(fmaxf(wg[j], -mx), mx);
                const float q = fminf(fmaxf(rintf(__fdiv_rn(c, scale)) + zero, 0.f), maxq);
                d[j] = scale * (q - zero) - wg[j];
            }
            __syncthreads();
            float e = 0;
            for (long long a = threadIdx.x; a < m; a += blockDim.x) {
                float acc = 0;
                for (long long b = 0; b < m; b++) acc = fmaf(Gk[b * gs + a], d[b], acc);
                e = fmaf(d[a], acc, e);
            }
            e = awq_bsum(e);
            if (e < bestErr) bestErr = e, bestMax = mx;
        }
        if (threadIdx.x == 0) best[r * ng + k] = bestMax;
    }
}

// awq_sqerr adds the sum of (a[i] - b[i])² over n values to acc[0]
// (float64). Grid-stride; AWQ_THREADS threads.
extern "C" __global__ void awq_sqerr(const float* __restrict__ a, const float* __restrict__ b, long long n, double* __restrict__ acc) {
    double s = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double v = (double)a[i] - (double)b[i];
        s += v * v;
    }
    __shared__ double sd[AWQ_WARPS];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(AWQ_FULL, s, o);
    if ((threadIdx.x & 31) == 0) sd[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int i = 0; i < AWQ_WARPS; i++) t += sd[i];
        atomicAdd(acc, t);
    }
}
