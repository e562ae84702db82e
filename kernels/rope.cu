// rope.cu: rotary position embedding (rotate_half) of q and k, and the store of
// k and v into each sequence's KV cache.
#include "qllama.cuh"

// KV cache of one sequence: one float32 buffer laid out [layer][2][cap][kvdim]
// (keys then values); kvbase[t] points at it for activation row t, kvcap[t]
// is its capacity in positions and pos[t] the row's absolute position.

// rope_store rotates q [n][heads*hd] in place and writes the rotated k and the
// v rows of layer into the cache at pos[t]. The angle is float32(pos) *
// float32(inv_freq[i]), as in HF; it is reduced modulo 2 pi in double and its
// cos/sin taken in float (within 2e-7 of the double values the CPU uses).
// Grid (n, any): the blocks of a row share its (heads+kvheads)*hd/2 rotations
// and kvdim value copies.
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
    const long long nrot = (heads + kvheads) * half;
    const long long step = (long long)gridDim.y * blockDim.x;
    for (long long j = (long long)blockIdx.y * blockDim.x + threadIdx.x; j < nrot + kvdim; j += step) {
        if (j >= nrot) {
            vc[j - nrot] = v[t * kvdim + j - nrot];
            continue;
        }
        const long long h = j / half, i = j % half;
        const float a = (float)p * (float)invfreq[i];
        const double twopi = 6.283185307179586;
        const double r = (double)a - twopi * rint((double)a / twopi);
        float sn, cs;
        sincosf((float)r, &sn, &cs);
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
}
