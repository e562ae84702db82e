// sample.cu: device-side candidates for sampling. Instead of a whole logits
// row (128,256 floats for Llama 3), the host gets back the row's k largest
// values and their ids, in the order infer.Sampler sorts a row: descending
// value, the lower id first among equal values.
#include "qllama.cuh"

#define TOPK_MAX 256  // most candidates per row (infer/cuda/sample.go: topKMax)
#define TOPK_UNROLL 8 // row values each thread loads at once

// topk_key maps a float to an unsigned key with the same order: a larger
// value gives a larger key, equal values (-0 and +0 included) equal keys, and
// NaN the smallest key of all (below -inf), so NaN is only chosen when a row
// has fewer than k other values.
__device__ __forceinline__ unsigned topk_key(float v) {
    if (isnan(v)) return 0u;
    unsigned b = __float_as_uint(v == 0.f ? 0.f : v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// topk: for each of n rows of vocab logits, vals[i*k+j] and ids[i*k+j] for
// j < min(k, vocab) are the j-th largest value of row i and its index (ties:
// the lowest index first); slots j >= vocab get -inf and -1. k is at most
// TOPK_MAX. One block per row; blockDim a multiple of 32, at most 1024.
//
// The k-th largest key T is found by a radix select (four passes of an 8-bit
// histogram over the row, each restricted to the keys matching the digits
// chosen so far); one more pass gathers every key above T and, in index
// order, the lowest-indexed keys equal to T that are still needed; the
// gathered candidates are then ranked in shared memory. The gather needs
// index order (and a barrier per chunk) only when more keys equal T than are
// taken, i.e. for a tie at the k-th place.
extern "C" __global__ void __launch_bounds__(1024) topk(const float* __restrict__ logits, float* __restrict__ vals,
                                                        int* __restrict__ ids, long long n, long long vocab, long long k) {
    const long long row = blockIdx.x;
    if (row >= n || k <= 0 || k > TOPK_MAX) return;
    const float* l = logits + row * vocab;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    const int kk = (int)min(k, vocab); // candidates that exist

    __shared__ int hist[256];
    __shared__ unsigned s_prefix, s_mask;
    __shared__ int s_need;     // equal-to-threshold keys still to take
    __shared__ int s_ngt;      // keys above the threshold gathered so far
    __shared__ int s_eqseen;   // keys equal to the threshold seen in earlier chunks
    __shared__ int s_wcount[32];
    __shared__ bool s_done;
    __shared__ int s_eqcount, s_neq;
    __shared__ unsigned c_key[TOPK_MAX];
    __shared__ int c_idx[TOPK_MAX];

    if (tid == 0) { s_prefix = 0u; s_mask = 0u; s_need = kk; s_ngt = 0; s_eqseen = 0; s_neq = 0; }
    // Radix select of the kk-th largest key, most significant digit first.
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const unsigned prefix = s_prefix, mask = s_mask;
        // The loop bounds are uniform over the block, so every lane of a warp
        // takes part in __match_any_sync (warp-aggregated shared atomics:
        // logits of one row share few top digits). TOPK_UNROLL loads per
        // thread are issued before they are used, to hide their latency.
        for (long long base = 0; base < vocab; base += (long long)blockDim.x * TOPK_UNROLL) {
            float v[TOPK_UNROLL];
#pragma unroll
            for (int u = 0; u < TOPK_UNROLL; u++) {
                const long long j = base + (long long)u * blockDim.x + tid;
                v[u] = j < vocab ? l[j] : 0.f;
            }
#pragma unroll
            for (int u = 0; u < TOPK_UNROLL; u++) {
                const long long j = base + (long long)u * blockDim.x + tid;
                int bin = -1;
                if (j < vocab) {
                    const unsigned key = topk_key(v[u]);
                    if ((key & mask) == prefix) bin = (int)((key >> shift) & 255u);
                }
                if (__any_sync(0xffffffffu, bin >= 0)) {
                    const unsigned peers = __match_any_sync(0xffffffffu, bin);
                    if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
                }
            }
        }
        __syncthreads();
        if (tid == 0) {
            int need = s_need;
            int b = 255;
            for (; b > 0; b--) {
                if (need <= hist[b]) break;
                need -= hist[b];
            }
            s_need = need;
            s_eqcount = hist[b]; // after the last pass: the keys equal to the threshold
            s_prefix = prefix | ((unsigned)b << shift);
            s_mask = mask | (255u << shift);
        }
        __syncthreads();
    }
    const unsigned T = s_prefix;   // the kk-th largest key
    const int need = s_need;       // keys equal to T to take (the lowest indices)
    const int ngt = kk - need;     // keys above T (all taken)

    // Gather: every key above T (slots [0, ngt)) and the need lowest-indexed
    // keys equal to T (slots [ngt, kk)), in any order: the ranking below
    // orders them.
    if (s_eqcount == need) {
        // Every key equal to T is taken (the usual case: no tie at the k-th
        // place), so no index order is needed: one pass of atomic slots.
        for (long long base = 0; base < vocab; base += (long long)blockDim.x * TOPK_UNROLL) {
            float v[TOPK_UNROLL];
#pragma unroll
            for (int u = 0; u < TOPK_UNROLL; u++) {
                const long long j = base + (long long)u * blockDim.x + tid;
                v[u] = j < vocab ? l[j] : 0.f;
            }
#pragma unroll
            for (int u = 0; u < TOPK_UNROLL; u++) {
                const long long j = base + (long long)u * blockDim.x + tid;
                if (j >= vocab) continue;
                const unsigned key = topk_key(v[u]);
                if (key > T) {
                    const int s = atomicAdd(&s_ngt, 1);
                    c_key[s] = key;
                    c_idx[s] = (int)j;
                } else if (key == T) {
                    const int s = ngt + atomicAdd(&s_neq, 1);
                    c_key[s] = key;
                    c_idx[s] = (int)j;
                }
            }
        }
    } else {
        // A tie at the k-th place: the keys equal to T are ranked in index
        // order, one chunk of blockDim indices at a time.
        for (long long base = 0; base < vocab; base += blockDim.x) {
            const long long j = base + tid;
            unsigned key = 0u;
            bool eq = false;
            if (j < vocab) {
                key = topk_key(l[j]);
                if (key > T) {
                    int s = atomicAdd(&s_ngt, 1);
                    c_key[s] = key;
                    c_idx[s] = (int)j;
                }
                eq = key == T;
            }
            const unsigned bal = __ballot_sync(0xffffffffu, eq);
            if (lane == 0) s_wcount[warp] = __popc(bal);
            __syncthreads();
            if (eq) {
                int rank = s_eqseen + __popc(bal & ((1u << lane) - 1u));
                for (int w = 0; w < warp; w++) rank += s_wcount[w];
                if (rank < need) {
                    c_key[ngt + rank] = key;
                    c_idx[ngt + rank] = (int)j;
                }
            }
            __syncthreads();
            // Every key above T of this chunk was counted before the barrier,
            // and the next chunk's atomics start only after the next one, so
            // s_done is the same for every thread.
            if (tid == 0) {
                int tot = 0;
                for (int w = 0; w < nwarps; w++) tot += s_wcount[w];
                s_eqseen += tot;
                s_done = s_eqseen >= need && s_ngt >= ngt;
            }
            __syncthreads();
            if (s_done) break; // all candidates found
        }
    }
    __syncthreads();

    // Rank the candidates: descending key, ascending index among equal keys.
    float* vo = vals + row * k;
    int* io = ids + row * k;
    for (int c = tid; c < kk; c += blockDim.x) {
        const unsigned key = c_key[c];
        const int idx = c_idx[c];
        int rank = 0;
        for (int o = 0; o < kk; o++) {
            const unsigned ok = c_key[o];
            rank += (ok > key) || (ok == key && c_idx[o] < idx);
        }
        vo[rank] = l[idx];
        io[rank] = idx;
    }
    for (long long c = kk + tid; c < k; c += blockDim.x) {
        vo[c] = -INFINITY;
        io[c] = -1;
    }
}
