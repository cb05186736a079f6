// Softmax attention inside a window of keys (kernels.h): the dense oracle
// (window = T) and the FMM near field (window = the band w), forward and
// backward. One warp per query row (forward, dq) or key row (dk, dv); the
// lanes hold the row's channels (lane + 32 k), dot products are warp sums,
// the softmax is online (running max and sum) in fp32, as ATTENTION.md's
// numerics ask.
#include <math.h>

#include "../../core/cuda/common.cuh"
#include "kernels.h"

#define WARPS 4                          // rows per block
#define KMAX (MPL_CUDA_ATTN_MAX_D / 32)  // channels per lane

static __device__ __forceinline__ void window_of(const mpl_cuda_attn_dims &a, int64_t i,
                                                 int64_t *j0, int64_t *j1)
{
    *j0 = i - a.window + 1 > 0 ? i - a.window + 1 : 0;
    const int64_t hi = a.causal ? i : i + a.window - 1;
    *j1 = hi < a.T - 1 ? hi : a.T - 1;
}

// Queries i whose window holds key j.
static __device__ __forceinline__ void queries_of(const mpl_cuda_attn_dims &a, int64_t j,
                                                  int64_t *i0, int64_t *i1)
{
    const int64_t lo = a.causal ? j : j - a.window + 1;
    *i0 = lo > 0 ? lo : 0;
    *i1 = j + a.window - 1 < a.T - 1 ? j + a.window - 1 : a.T - 1;
}

static __device__ __forceinline__ void load_row(const float *p, int d, int lane, float *x)
{
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        x[kk] = c < d ? p[c] : 0.0f;
    }
}

static __device__ __forceinline__ float row_dot(const float *x, const float *p, int d, int lane)
{
    float acc = 0;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) acc += x[kk] * p[c];
    }
    return mpl_warp_sum(acc);
}

static __global__ void band_fwd_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                  const float *qkv, float *out, float *lse)
{
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32; // (s H + h) T + i
    if (row >= a.S * a.H * a.T) return;                                  // the whole warp
    const int64_t i = row % a.T, sh = row / a.T, s = sh / a.H, h = sh % a.H;
    const int64_t HD = (int64_t)a.H * a.d, W = 3 * HD, d = a.d;
    const float scale = (float)(1.0 / sqrt((double)d));
    float qv[KMAX], acc[KMAX];
    load_row(q + (s * a.T + i) * HD + h * d, a.d, lane, qv);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) acc[kk] = 0;
    int64_t j0, j1;
    window_of(a, i, &j0, &j1);
    float m = -INFINITY, l = 0;
    for (int64_t j = j0; j <= j1; j++) {
        const float lg = row_dot(qv, k + (s * a.T + j) * HD + h * d, a.d, lane) * scale;
        const float mn = fmaxf(m, lg), corr = expf(m - mn), p = expf(lg - mn);
        l = l * corr + p;
        const float *vj = qkv + (s * a.T + j) * W + 2 * HD + h * d;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c < a.d) acc[kk] = acc[kk] * corr + p * vj[c];
        }
        m = mn;
    }
    const float inv = 1.0f / l;
    float *o = out + (s * a.T + i) * HD + h * d;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < a.d) o[c] = acc[kk] * inv;
    }
    if (lane == 0) lse[row] = m + logf(l);
}

// dq_i = scale (sum_j p dp k_j - D sum_j p k_j), D = sum_j p dp: one pass.
static __global__ void band_bwd_q_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                    const float *qkv, const float *lse, const float *dout,
                                    float *dq, float *D)
{
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= a.S * a.H * a.T) return;
    const int64_t i = row % a.T, sh = row / a.T, s = sh / a.H, h = sh % a.H;
    const int64_t HD = (int64_t)a.H * a.d, W = 3 * HD, d = a.d;
    const float scale = (float)(1.0 / sqrt((double)d));
    float qv[KMAX], gv[KMAX], u[KMAX], w[KMAX];
    load_row(q + (s * a.T + i) * HD + h * d, a.d, lane, qv);
    load_row(dout + (s * a.T + i) * HD + h * d, a.d, lane, gv);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) u[kk] = w[kk] = 0;
    const float li = lse[row];
    int64_t j0, j1;
    window_of(a, i, &j0, &j1);
    float Dacc = 0;
    for (int64_t j = j0; j <= j1; j++) {
        const float *kj = k + (s * a.T + j) * HD + h * d;
        const float p = expf(row_dot(qv, kj, a.d, lane) * scale - li);
        const float dp = row_dot(gv, qkv + (s * a.T + j) * W + 2 * HD + h * d, a.d, lane);
        Dacc += p * dp;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c < a.d) u[kk] += p * dp * kj[c], w[kk] += p * kj[c];
        }
    }
    float *g = dq + (s * a.T + i) * HD + h * d;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < a.d) g[c] = scale * (u[kk] - Dacc * w[kk]);
    }
    if (lane == 0) D[row] = Dacc;
}

static __global__ void band_bwd_kv_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                     const float *qkv, const float *lse, const float *dout,
                                     const float *D, float *dk, float *dqkv)
{
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32; // (s H + h) T + j
    if (row >= a.S * a.H * a.T) return;
    const int64_t j = row % a.T, sh = row / a.T, s = sh / a.H, h = sh % a.H;
    const int64_t HD = (int64_t)a.H * a.d, W = 3 * HD, d = a.d;
    const float scale = (float)(1.0 / sqrt((double)d));
    float kv[KMAX], vv[KMAX], gk[KMAX], gv[KMAX];
    load_row(k + (s * a.T + j) * HD + h * d, a.d, lane, kv);
    load_row(qkv + (s * a.T + j) * W + 2 * HD + h * d, a.d, lane, vv);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) gk[kk] = gv[kk] = 0;
    int64_t i0, i1;
    queries_of(a, j, &i0, &i1);
    for (int64_t i = i0; i <= i1; i++) {
        const int64_t ri = sh * a.T + i;
        const float *qi = q + (s * a.T + i) * HD + h * d, *gi = dout + (s * a.T + i) * HD + h * d;
        const float p = expf(row_dot(kv, qi, a.d, lane) * scale - lse[ri]);
        const float dp = row_dot(vv, gi, a.d, lane);
        const float ds = p * (dp - D[ri]) * scale;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c < a.d) gk[kk] += ds * qi[c], gv[kk] += p * gi[c];
        }
    }
    float *ok = dk + (s * a.T + j) * HD + h * d, *ov = dqkv + (s * a.T + j) * W + 2 * HD + h * d;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < a.d) ok[c] = gk[kk], ov[c] += gv[kk];
    }
}

static mpl_status check(const mpl_cuda_attn_dims *a)
{
    if (a->d < 1 || a->d > MPL_CUDA_ATTN_MAX_D)
        return mpl_err(MPL_ERR_ARG, "GPU attention: head_dim=%d must be in 1..%d", a->d,
                       MPL_CUDA_ATTN_MAX_D);
    if (a->window < 1)
        return mpl_err(MPL_ERR_ARG, "GPU attention: window=%lld must be >= 1",
                       (long long)a->window);
    return MPL_OK;
}

static unsigned blocks_of(const mpl_cuda_attn_dims *a)
{
    return (unsigned)((a->S * a->H * a->T + WARPS - 1) / WARPS);
}

extern "C" mpl_status mpl_cuda_band_forward(const mpl_cuda_attn_dims *a, const float *q,
                                            const float *k, const float *qkv, float *out,
                                            float *lse, cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(band_fwd_k, blocks_of(a), WARPS * 32, 0, s, *a, q, k, qkv, out, lse);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_band_backward_q(const mpl_cuda_attn_dims *a, const float *q,
                                               const float *k, const float *qkv, const float *lse,
                                               const float *dout, float *dq, float *D,
                                               cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(band_bwd_q_k, blocks_of(a), WARPS * 32, 0, s, *a, q, k, qkv, lse, dout, dq, D);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_band_backward_kv(const mpl_cuda_attn_dims *a, const float *q,
                                                const float *k, const float *qkv, const float *lse,
                                                const float *dout, const float *D, float *dk,
                                                float *dqkv, cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(band_bwd_kv_k, blocks_of(a), WARPS * 32, 0, s, *a, q, k, qkv, lse, dout, D,
                    dk, dqkv);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}
