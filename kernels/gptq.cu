// gptq.cu: the GPU side of GPTQ (infer/cuda/gptq.go; the CPU reference is
// convert/gptq). Everything is float64 but the group parameters and the
// quantizing division, which are float32 exactly as convert/gptq does them
// (quant.RuleGPTQ). The Cholesky factorisations and the trailing lazy-block
// updates are cuSOLVER's and cuBLAS's; these kernels prepare the matrices and
// run the sequential column loop of one lazy block.
#include <stdint.h>

#define GPTQ_K 8                  // block columns per lane
#define GPTQ_MAXB (32 * GPTQ_K)   // largest lazy block (infer/cuda/gptq.go: gptqMaxBlock)
#define GPTQ_FULL 0xffffffffu

// gptq_hessian: h[i] = f * sum[i] for n values (H = 2/N Σ x xᵀ from a float32
// sum).
extern "C" __global__ void gptq_hessian(const float* __restrict__ sum, double* __restrict__ h, long long n, double f) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        h[i] = f * (double)sum[i];
}

// gptq_diag: diag[j] = a[j*n + j].
extern "C" __global__ void gptq_diag(const double* __restrict__ a, double* __restrict__ diag, long long n) {
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < n; j += (long long)gridDim.x * blockDim.x)
        diag[j] = a[j * n + j];
}

// gptq_build: a = P h Pᵀ + damp I for n x n matrices (a[r][c] =
// h[perm[r]][perm[c]]), a zero diagonal entry (dead column) counting as 1.
// Grid: x over columns, y over rows (looping past 65535).
extern "C" __global__ void gptq_build(const double* __restrict__ h, double* __restrict__ a, const int* __restrict__ perm,
                                      long long n, double damp) {
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= n) return;
    const long long pc = perm[c];
    for (long long r = blockIdx.y; r < n; r += gridDim.y) {
        double v = h[(long long)perm[r] * n + pc];
        if (r == c) {
            if (v == 0) v = 1;
            v += damp;
        }
        a[r * n + c] = v;
    }
}

// gptq_weights: out[r][i] = w[r][perm[i]] in float64, 0 for a dead column
// (diag[perm[i]] == 0). Grid: x over columns, y over rows (looping).
extern "C" __global__ void gptq_weights(const float* __restrict__ w, double* __restrict__ out, const int* __restrict__ perm,
                                        const double* __restrict__ diag, long long rows, long long cols) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= cols) return;
    const long long j = perm[i];
    const bool dead = diag[j] == 0;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) out[r * cols + i] = dead ? 0.0 : (double)w[r * cols + j];
}

__device__ __forceinline__ float gptq_wmin(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(GPTQ_FULL, v, o));
    return v;
}

__device__ __forceinline__ float gptq_wmax(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(GPTQ_FULL, v, o));
    return v;
}

// gptq_block runs GPTQ's column loop over the lazy block [i1, i2) (at most
// GPTQ_MAXB columns) of W (rows x cols, row-major, permuted column order, all
// updates of earlier blocks applied), one warp per row, lane l holding block
// columns l, l+32, ... in registers. U is the upper Cholesky factor of H⁻¹
// (row-major, only the upper triangle is read). For each column i:
//   mode 0 (dynamic groups of gs): when i % gs == 0, the group's scale and
//     zero are found (quant.RuleGPTQ, float32) on the current weights of
//     columns [i, min(i+gs, cols)) and stored in scales/zeros[r*ng + i/gs];
//     columns past the block are read from W (a group starting inside the
//     block ends inside it; one longer than the block starts at a block's
//     first column and its later blocks reload the parameters stored);
//   mode 1 (per channel): scales/zeros[r*ng] (ng = 1), given;
//   mode 2 (static groups): scales/zeros[r*ng + perm[i]/gs], given;
// q = clamp(rint(w/scale) + zero, 0, maxq) (division in float32), codes[r*cols
// + perm[i]] = q, e = (w - scale*(q - zero)) / U[i][i], err[r*lde + i-i1] = e,
// the block's later columns of the row -= e * U[i][j], loss[r] += e²/2.
extern "C" __global__ void __launch_bounds__(128)
    gptq_block(const double* __restrict__ W, const double* __restrict__ U, double* __restrict__ err,
               uint8_t* __restrict__ codes, float* __restrict__ scales, uint8_t* __restrict__ zeros,
               const int* __restrict__ perm, double* __restrict__ loss, long long rows, long long cols, long long i1,
               long long i2, long long lde, long long gs, long long mode, long long maxq, long long sym,
               long long ng) {
    const int lane = threadIdx.x & 31;
    const long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    if (r >= rows) return; // uniform over the warp
    const double* wr = W + r * cols;
    const int nb = (int)min(i2 - i1, (long long)GPTQ_MAXB);
    const float fmaxq = (float)maxq;
    double w[GPTQ_K];
#pragma unroll
    for (int k = 0; k < GPTQ_K; k++) {
        const int c = k * 32 + lane;
        w[k] = c < nb ? wr[i1 + c] : 0.0;
    }
    double acc = 0;
    // Dynamic groups: a group that began in an earlier block (gs larger
    // than the block) keeps the parameters found then.
    float scale = 1.f;
    double zero = 0;
    if (mode == 0 && i1 % gs != 0) {
        scale = scales[r * ng + i1 / gs];
        zero = (double)zeros[r * ng + i1 / gs];
    }
#pragma unroll
    for (int kk = 0; kk < GPTQ_K; kk++) {
        if (kk * 32 >= nb) break;
        const int lend = min(32, nb - kk * 32);
        for (int l = 0; l < lend; l++) {
            const int ci = kk * 32 + l; // column within the block
            const long long i = i1 + ci;
            const double* ur = U + i * cols + i1;
            const double d = ur[ci];
            const double wv = __shfl_sync(GPTQ_FULL, w[kk], l);
            if (mode == 0) {
                if (i % gs == 0) {
                    const long long hi = min(i + gs, cols);
                    float xmin = 0.f, xmax = 0.f;
#pragma unroll
                    for (int k = 0; k < GPTQ_K; k++) {
                        const long long j = i1 + k * 32 + lane;
                        if (j >= i && j < hi && j < i2) {
                            const float f = (float)w[k];
                            xmin = fminf(xmin, f);
                            xmax = fmaxf(xmax, f);
                        }
                    }
                    for (long long j = i2 + lane; j < hi; j += 32) {
                        const float f = (float)wr[j];
                        xmin = fminf(xmin, f);
                        xmax = fmaxf(xmax, f);
                    }
                    xmin = gptq_wmin(xmin);
                    xmax = gptq_wmax(xmax);
                    if (sym) {
                        xmax = fmaxf(-xmin, xmax);
                        if (xmin < 0) xmin = -xmax;
                    }
                    if (xmin == 0.f && xmax == 0.f) {
                        xmin = -1.f;
                        xmax = 1.f;
                    }
                    scale = (xmax - xmin) / fmaxq;
                    zero = sym ? (double)((fmaxq + 1.f) / 2.f) : (double)rintf(-xmin / scale);
                    if (lane == 0) {
                        scales[r * ng + i / gs] = scale;
                        zeros[r * ng + i / gs] = (uint8_t)zero;
                    }
                }
            } else {
                const long long g = mode == 1 ? 0 : perm[i] / gs;
                scale = scales[r * ng + g];
                zero = (double)zeros[r * ng + g];
            }
            double q = (double)rintf((float)wv / scale) + zero;
            if (isnan(q)) q = zero;
            q = fmin(fmax(q, 0.0), (double)maxq);
            const double e = (wv - (double)scale * (q - zero)) / d;
            if (lane == 0) {
                codes[r * cols + perm[i]] = (uint8_t)q;
                err[r * lde + ci] = e;
                acc += e * e / 2;
            }
#pragma unroll
            for (int k = 0; k < GPTQ_K; k++) {
                const int c = k * 32 + lane;
                if (c > ci && c < nb) w[k] -= e * ur[c];
            }
        }
    }
    if (lane == 0) loss[r] += acc;
}
