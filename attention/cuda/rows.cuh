// The row helpers of the warp-per-row attention kernels (band.cu,
// combiner.cu): one warp holds one query, key or summary row, lane l the
// channels l, l + 32, ... (so head_dim <= MPL_CUDA_ATTN_MAX_D); dot
// products are warp sums.
#ifndef MPL_ATTN_CUDA_ROWS_CUH
#define MPL_ATTN_CUDA_ROWS_CUH

#include "../../core/cuda/common.cuh"
#include "kernels.h"

#define MPL_ROWS_WARPS 4                          // rows per block
#define MPL_ROWS_KMAX (MPL_CUDA_ATTN_MAX_D / 32)  // channels per lane

// The row of this warp (all of its lanes agree).
static __device__ __forceinline__ int64_t mpl_rows_index()
{
    return (int64_t)blockIdx.x * MPL_ROWS_WARPS + threadIdx.x / 32;
}

static inline unsigned mpl_rows_blocks(int64_t rows)
{
    return (unsigned)((rows + MPL_ROWS_WARPS - 1) / MPL_ROWS_WARPS);
}

static __device__ __forceinline__ void mpl_row_load(const float *p, int d, int lane, float *x)
{
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) {
        const int c = lane + 32 * kk;
        x[kk] = c < d ? p[c] : 0.0f;
    }
}

static __device__ __forceinline__ void mpl_row_zero(float *x)
{
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) x[kk] = 0;
}

// x . p over the row (every lane gets it).
static __device__ __forceinline__ float mpl_row_dot(const float *x, const float *p, int d, int lane)
{
    float acc = 0;
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) acc += x[kk] * p[c];
    }
    return mpl_warp_sum(acc);
}

// p[c] = x (add = 0) or p[c] += x (add = 1), scaled by s.
static __device__ __forceinline__ void mpl_row_store(float *p, const float *x, float s, int d,
                                                     int lane, int add)
{
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) p[c] = (add ? p[c] : 0.0f) + s * x[kk];
    }
}

// The key side of a softmax slot's backward, one query at a time: with the
// slot's key kv and value vv in the lanes, query qi of log-sum-exp lse_i,
// output gradient gi and D_i = sum_j p_j dp_j adds ds qi to gk and p gi to gv.
static __device__ __forceinline__ void mpl_row_kv_step(const float *kv, const float *vv,
                                                       const float *qi, const float *gi,
                                                       float lse_i, float D_i, float scale, int d,
                                                       int lane, float *gk, float *gv)
{
    const float p = expf(mpl_row_dot(kv, qi, d, lane) * scale - lse_i);
    const float ds = p * (mpl_row_dot(vv, gi, d, lane) - D_i) * scale;
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) gk[kk] += ds * qi[c], gv[kk] += p * gi[c];
    }
}

// The query side: slot key kp, value vp add p dp kp to u and p kp to w and
// return p dp (dq = scale (u - D w), D = sum of the returns).
static __device__ __forceinline__ float mpl_row_q_step(const float *qv, const float *gv,
                                                       const float *kp, const float *vp,
                                                       float lse, float scale, int d, int lane,
                                                       float *u, float *w)
{
    const float p = expf(mpl_row_dot(qv, kp, d, lane) * scale - lse);
    const float dp = mpl_row_dot(gv, vp, d, lane);
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) u[kk] += p * dp * kp[c], w[kk] += p * kp[c];
    }
    return p * dp;
}

// One online-softmax step: logit lg with value row vp into (m, l, acc).
static __device__ __forceinline__ void mpl_row_softmax_step(float lg, const float *vp, int d,
                                                            int lane, float *m, float *l,
                                                            float *acc)
{
    const float mn = fmaxf(*m, lg), corr = expf(*m - mn), p = expf(lg - mn);
    *l = *l * corr + p;
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) acc[kk] = acc[kk] * corr + p * vp[c];
    }
    *m = mn;
}

#endif
