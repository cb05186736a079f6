// Softmax attention inside a window of keys (kernels.h): the dense oracle
// (window = T) and the FMM near field (window = the band w), forward and
// backward. One warp per query row (forward, dq) or key row (dk, dv); the
// lanes hold the row's channels (lane + 32 k), dot products are warp sums,
// the softmax is online (running max and sum) in fp32, as ATTENTION.md's
// numerics ask.
#include <math.h>

#include "rows.cuh"

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

// The warp's row (s H + h) T + i and its parts; 0 when past the end.
typedef struct band_row {
    int64_t row, i, sh, s, h, HD, W;
    float scale;
} band_row;

static __device__ __forceinline__ int row_of(const mpl_cuda_attn_dims &a, band_row *r)
{
    r->row = mpl_rows_index();
    if (r->row >= a.S * a.H * a.T) return 0;
    r->i = r->row % a.T, r->sh = r->row / a.T, r->s = r->sh / a.H, r->h = r->sh % a.H;
    r->HD = (int64_t)a.H * a.d, r->W = 3 * r->HD;
    r->scale = (float)(1.0 / sqrt((double)a.d));
    return 1;
}

static __global__ void band_fwd_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                  const float *qkv, float *out, float *lse)
{
    band_row r;
    if (!row_of(a, &r)) return; // the whole warp
    const int lane = threadIdx.x % 32;
    float qv[MPL_ROWS_KMAX], acc[MPL_ROWS_KMAX];
    mpl_row_load(q + (r.s * a.T + r.i) * r.HD + r.h * a.d, a.d, lane, qv);
    mpl_row_zero(acc);
    int64_t j0, j1;
    window_of(a, r.i, &j0, &j1);
    float m = -INFINITY, l = 0;
    for (int64_t j = j0; j <= j1; j++) {
        const float *kj = k + (r.s * a.T + j) * r.HD + r.h * a.d;
        const float lg = mpl_row_dot(qv, kj, a.d, lane) * r.scale;
        mpl_row_softmax_step(lg, qkv + (r.s * a.T + j) * r.W + 2 * r.HD + r.h * a.d, a.d, lane, &m,
                             &l, acc);
    }
    mpl_row_store(out + (r.s * a.T + r.i) * r.HD + r.h * a.d, acc, 1.0f / l, a.d, lane, 0);
    if (lane == 0) lse[r.row] = m + logf(l);
}

// dq_i = scale (sum_j p dp k_j - D sum_j p k_j), D = sum_j p dp: one pass.
static __global__ void band_bwd_q_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                    const float *qkv, const float *lse, const float *dout,
                                    float *dq, float *D)
{
    band_row r;
    if (!row_of(a, &r)) return;
    const int lane = threadIdx.x % 32;
    float qv[MPL_ROWS_KMAX], gv[MPL_ROWS_KMAX], u[MPL_ROWS_KMAX], w[MPL_ROWS_KMAX];
    mpl_row_load(q + (r.s * a.T + r.i) * r.HD + r.h * a.d, a.d, lane, qv);
    mpl_row_load(dout + (r.s * a.T + r.i) * r.HD + r.h * a.d, a.d, lane, gv);
    mpl_row_zero(u), mpl_row_zero(w);
    int64_t j0, j1;
    window_of(a, r.i, &j0, &j1);
    float Dacc = 0;
    for (int64_t j = j0; j <= j1; j++)
        Dacc += mpl_row_q_step(qv, gv, k + (r.s * a.T + j) * r.HD + r.h * a.d,
                               qkv + (r.s * a.T + j) * r.W + 2 * r.HD + r.h * a.d, lse[r.row],
                               r.scale, a.d, lane, u, w);
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) u[kk] -= Dacc * w[kk];
    mpl_row_store(dq + (r.s * a.T + r.i) * r.HD + r.h * a.d, u, r.scale, a.d, lane, 0);
    if (lane == 0) D[r.row] = Dacc;
}

// Warp per key row j (the row index's i is the key).
static __global__ void band_bwd_kv_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                     const float *qkv, const float *lse, const float *dout,
                                     const float *D, float *dk, float *dqkv)
{
    band_row r;
    if (!row_of(a, &r)) return;
    const int lane = threadIdx.x % 32;
    const int64_t j = r.i;
    float kv[MPL_ROWS_KMAX], vv[MPL_ROWS_KMAX], gk[MPL_ROWS_KMAX], gv[MPL_ROWS_KMAX];
    mpl_row_load(k + (r.s * a.T + j) * r.HD + r.h * a.d, a.d, lane, kv);
    mpl_row_load(qkv + (r.s * a.T + j) * r.W + 2 * r.HD + r.h * a.d, a.d, lane, vv);
    mpl_row_zero(gk), mpl_row_zero(gv);
    int64_t i0, i1;
    queries_of(a, j, &i0, &i1);
    for (int64_t i = i0; i <= i1; i++)
        mpl_row_kv_step(kv, vv, q + (r.s * a.T + i) * r.HD + r.h * a.d,
                        dout + (r.s * a.T + i) * r.HD + r.h * a.d, lse[r.sh * a.T + i],
                        D[r.sh * a.T + i], r.scale, a.d, lane, gk, gv);
    mpl_row_store(dk + (r.s * a.T + j) * r.HD + r.h * a.d, gk, 1.0f, a.d, lane, 0);
    mpl_row_store(dqkv + (r.s * a.T + j) * r.W + 2 * r.HD + r.h * a.d, gv, 1.0f, a.d, lane, 1);
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

static unsigned blocks_of(const mpl_cuda_attn_dims *a) { return mpl_rows_blocks(a->S * a->H * a->T); }

extern "C" mpl_status mpl_cuda_band_forward(const mpl_cuda_attn_dims *a, const float *q,
                                            const float *k, const float *qkv, float *out,
                                            float *lse, cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(band_fwd_k, blocks_of(a), MPL_ROWS_WARPS * 32, 0, s, *a, q, k, qkv, out,
                    lse);
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
    MPL_CUDA_LAUNCH(band_bwd_q_k, blocks_of(a), MPL_ROWS_WARPS * 32, 0, s, *a, q, k, qkv, lse,
                    dout, dq, D);
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
    MPL_CUDA_LAUNCH(band_bwd_kv_k, blocks_of(a), MPL_ROWS_WARPS * 32, 0, s, *a, q, k, qkv, lse, dout, D,
                    dk, dqkv);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}
