// rope.cu: rotary position embedding (rotate_half) of q and k, and the store of
// k and v into each sequence's KV cache.
#include "qllama.cuh"

// KV cache of one sequence: one float32 buffer laid out [layer][2][cap][kvdim]
// (keys then values); kvbase[t] points at it for activation row t, kvcap[t]
// is its capacity in positions and pos[t] the row's absolute position.

// rope_store rotates q [n][heads*hd] in place and writes the rotated k and the
// v rows of layer into the cache at pos[t]. The angle is float32(pos) *
// float32(inv_freq[i]), as in HF, and its cos/sin are taken in double. One
// block per row.
extern "C" __global__ void rope_store(float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                      const int* __restrict__ pos, const unsigned long long* __restrict__ kvbase,
                                      const int* __restrict__ kvcap, const double* __restrict__ invfreq,
                                      long long layer, long long heads, long long kvheads, long long hd, long long n) {
    const long long t = blockIdx.x;
    if (t >= n) return;
    const long long half = hd / 2, kvdim = kvheads * hd, cap = kvcap[t];
    const int p = pos[t];
    float* kc = reinterpret_cast<float*>(kvbase[t]) + ((layer * 2) * cap + p) * kvdim;
    float* vc = kc + cap * kvdim;
    for (long long j = threadIdx.x; j < (heads + kvheads) * half; j += blockDim.x) {
        const long long h = j / half, i = j % half;
        const float a = (float)p * (float)invfreq[i];
        double sd, cd;
        sincos((double)a, &sd, &cd);
        const float cs = (float)cd, sn = (float)sd;
        if (h < heads) {
            float* x = q + t * heads * hd + h * hd;
            float x1 = x[i], x2 = x[i + half];
            x[i] = x1 * cs - x2 * sn;
            x[i + half] = x2 * cs + x1 * sn;
        } else {
            const long long kh = h - heads;
            const float* x = k + t * kvdim + kh * hd;
            float x1 = x[i], x2 = x[i + half];
            kc[kh * hd + i] = x1 * cs - x2 * sn;
            kc[kh * hd + i + half] = x2 * cs + x1 * sn;
        }
    }
    for (long long j = threadIdx.x; j < kvdim; j += blockDim.x) vc[j] = v[t * kvdim + j];
}
