// rope.cu: rotary position embedding (rotate_half) of q and k, and the store of
// k and v into each sequence's paged KV cache (see KV_PAGE in qllama.cuh).
#include "qllama.cuh"

// rope_store_<kv> rotates q [n][heads*hd] in place and writes the rotated k
// and the v rows of layer into row t's cache at position pos[t] (its page
// table at tab + taboff[t]), rounded to the cache's type (angles: rope_cs in
// qllama.cuh). Grid (n, any): the blocks of a row share its
// (heads+kvheads)*hd/2 rotations and kvdim value copies.
template <typename T>
__device__ __forceinline__ void rope_store_impl(float* __restrict__ q, const float* __restrict__ k,
                                                const float* __restrict__ v, const int* __restrict__ pos,
                                                const unsigned long long* __restrict__ tab,
                                                const int* __restrict__ taboff, const double* __restrict__ invfreq,
                                                long long layer, long long heads, long long kvheads, long long hd,
                                                long long n) {
    const long long t = blockIdx.x;
    if (t >= n) return;
    const long long half = hd / 2, kvdim = kvheads * hd;
    const int p = pos[t];
    T* kc = kv_row<T>(tab + taboff[t], layer, 0, p, kvdim);
    T* vc = kv_row<T>(tab + taboff[t], layer, 1, p, kvdim);
    const long long nrot = (heads + kvheads) * half;
    const long long step = (long long)gridDim.y * blockDim.x;
    for (long long j = (long long)blockIdx.y * blockDim.x + threadIdx.x; j < nrot + kvdim; j += step) {
        if (j >= nrot) {
            store1(vc + j - nrot, v[t * kvdim + j - nrot]);
            continue;
        }
        const long long h = j / half, i = j % half;
        float cs, sn;
        rope_cs(p, invfreq[i], cs, sn);
        if (h < heads) {
            float* x = q + t * heads * hd + h * hd;
            float x1 = x[i], x2 = x[i + half];
            x[i] = x1 * cs - x2 * sn;
            x[i + half] = x2 * cs + x1 * sn;
        } else {
            const long long kh = h - heads;
            const float* x = k + t * kvdim + kh * hd;
            float x1 = x[i], x2 = x[i + half];
            store1(kc + kh * hd + i, x1 * cs - x2 * sn);
            store1(kc + kh * hd + i + half, x2 * cs + x1 * sn);
        }
    }
}

#define ROPE_STORE(SUF, T)                                                                                       \
    extern "C" __global__ void rope_store_##SUF(float* __restrict__ q, const float* __restrict__ k,             \
                                                const float* __restrict__ v, const int* __restrict__ pos,       \
                                                const unsigned long long* __restrict__ tab,                     \
                                                const int* __restrict__ taboff,                                 \
                                                const double* __restrict__ invfreq, long long layer,            \
                                                long long heads, long long kvheads, long long hd, long long n) { \
        rope_store_impl<T>(q, k, v, pos, tab, taboff, invfreq, layer, heads, kvheads, hd, n);                    \
    }
KV_TYPES(ROPE_STORE)
