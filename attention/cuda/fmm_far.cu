// The FMM far field on the GPU (kernels.h): the pointwise and small-scan
// kernels around the batched GEMMs of fmm_cuda.c (chunked linear
// attention: per block of C rows, num = tril(Qf Kf^T) V + Qf S_prev,
// den = rowsum + Qf z_prev + eps, S_prev from a scan over blocks), and the
// blend of near and far fields. Buffers of one map are laid out
// (S*H, Tp, d) with Tp = the chunk padded to whole blocks (padded rows are
// zero), so block b of (s, h) is the (s H + h) nb + b-th matrix of a
// uniformly strided batch.
#include <math.h>

#include "../../core/attn.h"
#include "../../core/cuda/common.cuh"
#include "kernels.h"

#define THREADS 256

static __device__ __forceinline__ float phi_of(int map, float x, float *dphi)
{
    if (map == MPL_FMM_MAP_ELU) { // elu(x) + 1 as x + 1 or exp(x): no underflow to 0
        const float e = expf(x < 0 ? x : 0.0f);
        *dphi = x > 0 ? 1.0f : e;
        return x > 0 ? x + 1.0f : e;
    }
    if (map == MPL_FMM_MAP_ELU_FLIP) { // elu(-x) + 1
        const float e = expf(x > 0 ? -x : 0.0f);
        *dphi = x < 0 ? -1.0f : -e;
        return x < 0 ? 1.0f - x : e;
    }
    const float t = tanhf(x);
    *dphi = 1.0f - t * t;
    return t + 1.0f;
}

static __global__ void features_k(mpl_cuda_attn_dims a, mpl_cuda_far_opts o, const float *qkv,
                                  int64_t col, int64_t Tp, float *F)
{
    const int64_t n = a.S * a.H * Tp;
    const int64_t HD = (int64_t)a.H * a.d, W = 3 * HD;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = r % Tp, sh = r / Tp, s = sh / a.H, h = sh % a.H;
        float *f = F + r * a.d;
        if (t >= a.T) {
            for (int c = 0; c < a.d; c++) f[c] = 0;
            continue;
        }
        const float *x = qkv + (s * a.T + t) * W + col + h * a.d;
        float sum = 0, dphi;
        for (int c = 0; c < a.d; c++) sum += (f[c] = phi_of(o.map, x[c], &dphi));
        if (o.feature_norm) {
            const float inv = 1.0f / sum;
            for (int c = 0; c < a.d; c++) f[c] *= inv;
        }
    }
}

static __global__ void features_bwd_k(mpl_cuda_attn_dims a, mpl_cuda_far_opts o,
                                      const float *qkv, int64_t col, int64_t Tp, const float *dF,
                                      float *dqkv)
{
    const int64_t n = a.S * a.H * a.T;
    const int64_t HD = (int64_t)a.H * a.d, W = 3 * HD;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = r % a.T, sh = r / a.T, s = sh / a.H, h = sh % a.H;
        const int64_t o_row = (s * a.T + t) * W + col + h * a.d;
        const float *x = qkv + o_row, *g = dF + (sh * Tp + t) * a.d;
        float *dx = dqkv + o_row;
        // ft = phi / sum: dphi_c = (g_c - g . ft) / sum (ATTENTION.md's sum norm)
        float sum = 0, dot = 0, dphi;
        for (int c = 0; c < a.d; c++) sum += phi_of(o.map, x[c], &dphi);
        if (!o.feature_norm) sum = 1.0f;
        const float inv = 1.0f / sum;
        if (o.feature_norm)
            for (int c = 0; c < a.d; c++) dot += g[c] * phi_of(o.map, x[c], &dphi) * inv;
        for (int c = 0; c < a.d; c++) {
            phi_of(o.map, x[c], &dphi);
            dx[c] += (g[c] - dot) * inv * dphi;
        }
    }
}

static __global__ void gather_v_k(mpl_cuda_attn_dims a, int64_t Tp, const float *qkv, float *Vg,
                                  int dir, float *dqkv)
{
    const int64_t n = a.S * a.H * Tp * a.d;
    const int64_t HD = (int64_t)a.H * a.d, W = 3 * HD;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = e % a.d, r = e / a.d, t = r % Tp, sh = r / Tp;
        const int64_t s = sh / a.H, h = sh % a.H;
        const int64_t src = (s * a.T + t) * W + 2 * HD + h * a.d + c;
        if (dir == 0) Vg[e] = t < a.T ? qkv[src] : 0.0f;
        else if (t < a.T) dqkv[src] += Vg[e];
    }
}

static __global__ void block_colsum_k(const float *X, const float *w, int64_t n_blk,
                                      int64_t blk_rows, int d, float *z)
{
    const int64_t n = n_blk * d;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t b = e / d, c = e % d;
        float acc = 0;
        for (int64_t r = b * blk_rows; r < (b + 1) * blk_rows; r++)
            acc += w ? w[r] * X[r * d + c] : X[r * d + c];
        z[e] = acc;
    }
}

static __global__ void scan_k(float *X, int64_t n_sh, int64_t nb, int64_t elems, int mode)
{
    const int64_t n = n_sh * elems;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        float *x = X + (e / elems) * nb * elems + e % elems;
        float run = 0;
        if (mode == 1) {
            for (int64_t b = 0; b < nb; b++) run += x[b * elems];
            for (int64_t b = 0; b < nb; b++) x[b * elems] = run;
        } else {
            for (int64_t bb = 0; bb < nb; bb++) {
                const int64_t b = mode == 0 ? bb : nb - 1 - bb;
                const float v = x[b * elems];
                x[b * elems] = run;
                run += v;
            }
        }
    }
}

static __global__ void tril_k(float *A, int64_t n_blk, int C, float *rs)
{
    const int64_t n = n_blk * C;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x) {
        float *row = A + r * C;
        const int i = (int)(r % C);
        float acc = 0;
        for (int j = 0; j <= i; j++) acc += row[j];
        for (int j = i + 1; j < C; j++) row[j] = 0;
        rs[r] = acc;
    }
}

static __global__ void tril_grad_k(float *dA, const float *dd, int64_t n_blk, int C)
{
    const int64_t n = n_blk * C;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x) {
        float *row = dA + r * C;
        const int i = (int)(r % C);
        for (int j = 0; j <= i; j++) row[j] += dd[r];
        for (int j = i + 1; j < C; j++) row[j] = 0;
    }
}

static __global__ void finish_k(mpl_cuda_attn_dims a, mpl_cuda_far_opts o, int64_t Tp, int C,
                                const float *Num, const float *Qf, const float *z,
                                const float *rs, float *den, float *far)
{
    const int64_t n = a.S * a.H * a.T, nb = Tp / C;
    const int64_t HD = (int64_t)a.H * a.d;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = r % a.T, sh = r / a.T, s = sh / a.H, h = sh % a.H;
        const int64_t pr = sh * Tp + t;
        float f = o.scale;
        if (o.far_norm) {
            const float *q = Qf + pr * a.d, *zb = z + (sh * nb + t / C) * a.d;
            float dn = rs ? rs[pr] : 0.0f;
            for (int c = 0; c < a.d; c++) dn += q[c] * zb[c];
            dn += o.eps;
            if (den) den[pr] = dn;
            f = o.scale / dn;
        }
        if (!far) continue;
        const float *nm = Num + pr * a.d;
        float *out = far + (s * a.T + t) * HD + h * a.d;
        for (int c = 0; c < a.d; c++) out[c] = nm[c] * f;
    }
}

static __global__ void div_bwd_k(mpl_cuda_attn_dims a, mpl_cuda_far_opts o, int64_t Tp, float cm,
                                 const float *gF, const float *Num, const float *den, float *dN,
                                 float *dd)
{
    const int64_t n = a.S * a.H * Tp;
    const int64_t HD = (int64_t)a.H * a.d;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = r % Tp, sh = r / Tp, s = sh / a.H, h = sh % a.H;
        float *dn = dN + r * a.d;
        if (t >= a.T) {
            for (int c = 0; c < a.d; c++) dn[c] = 0;
            dd[r] = 0;
            continue;
        }
        const float *g = gF + (s * a.T + t) * HD + h * a.d, *nm = Num + r * a.d;
        float f = o.scale, ddr = 0;
        if (o.far_norm) {
            const float dv = den[r];
            float gn = 0;
            for (int c = 0; c < a.d; c++) gn += cm * g[c] * nm[c];
            f = o.scale / dv;
            ddr = -gn * o.scale / (dv * dv);
        }
        for (int c = 0; c < a.d; c++) dn[c] = cm * g[c] * f;
        dd[r] = ddr;
    }
}

static __global__ void add_rowvec_k(int64_t n_sh, int64_t Tp, int C, int d, const float *w,
                                    const float *z, float *X)
{
    const int64_t n = n_sh * Tp * d, nb = Tp / C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = e % d, r = e / d, t = r % Tp, sh = r / Tp;
        const float zv = z[(sh * nb + t / C) * d + c];
        X[e] += w ? w[r] * zv : zv;
    }
}

static __global__ void blend_fwd_k(mpl_cuda_attn_dims a, int r, const float *A, const float *B,
                                   const float *near, const float *far, float *out)
{
    const int64_t HD = (int64_t)a.H * a.d, n = a.S * a.T * HD;
    const float cm = 1.0f / (float)r;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t hc = e % HD;
        float f = 0;
        for (int m = 0; m < r; m++) f += cm * far[m * n + e];
        out[e] = A[hc] * near[e] + B[hc] * f;
    }
}

static __global__ void blend_bwd_k(mpl_cuda_attn_dims a, int r, const float *A, const float *B,
                                   const float *far, const float *dout, float *gN, float *gF,
                                   float *fsum)
{
    const int64_t HD = (int64_t)a.H * a.d, n = a.S * a.T * HD;
    const float cm = 1.0f / (float)r;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t hc = e % HD;
        const float g = dout[e];
        float f = 0;
        for (int m = 0; m < r; m++) f += cm * far[m * n + e];
        gN[e] = A[hc] * g;
        gF[e] = B[hc] * g;
        fsum[e] = f;
    }
}

#define LAUNCH_1D(kernel, n, s, ...)                                                     \
    do {                                                                                 \
        if ((n) > 0) {                                                                   \
            MPL_CUDA_LAUNCH(kernel, mpl_grid_1d((n), THREADS), THREADS, 0, s, __VA_ARGS__); \
            MPL_CUDA(cudaGetLastError());                                                \
        }                                                                                \
    } while (0)

extern "C" mpl_status mpl_cuda_far_features(const mpl_cuda_attn_dims *a,
                                            const mpl_cuda_far_opts *o, const float *qkv,
                                            int64_t col, int64_t Tp, float *F, cudaStream_t s)
{
    LAUNCH_1D(features_k, a->S * a->H * Tp, s, *a, *o, qkv, col, Tp, F);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_features_backward(const mpl_cuda_attn_dims *a,
                                                     const mpl_cuda_far_opts *o, const float *qkv,
                                                     int64_t col, int64_t Tp, const float *dF,
                                                     float *dqkv, cudaStream_t s)
{
    LAUNCH_1D(features_bwd_k, a->S * a->H * a->T, s, *a, *o, qkv, col, Tp, dF, dqkv);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_gather_v(const mpl_cuda_attn_dims *a, int64_t Tp,
                                            const float *qkv, float *Vg, int dir, float *dqkv,
                                            cudaStream_t s)
{
    LAUNCH_1D(gather_v_k, a->S * a->H * Tp * a->d, s, *a, Tp, qkv, Vg, dir, dqkv);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_block_colsum(const float *X, const float *w, int64_t n_blk,
                                                int64_t blk_rows, int d, float *z, cudaStream_t s)
{
    LAUNCH_1D(block_colsum_k, n_blk * d, s, X, w, n_blk, blk_rows, d, z);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_scan(float *X, int64_t n_sh, int64_t nb, int64_t elems,
                                        int mode, cudaStream_t s)
{
    LAUNCH_1D(scan_k, n_sh * elems, s, X, n_sh, nb, elems, mode);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_tril(float *A, int64_t n_blk, int C, float *rs, cudaStream_t s)
{
    LAUNCH_1D(tril_k, n_blk * C, s, A, n_blk, C, rs);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_tril_grad(float *dA, const float *dd, int64_t n_blk, int C,
                                             cudaStream_t s)
{
    LAUNCH_1D(tril_grad_k, n_blk * C, s, dA, dd, n_blk, C);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_finish(const mpl_cuda_attn_dims *a, const mpl_cuda_far_opts *o,
                                          int64_t Tp, int C, const float *Num, const float *Qf,
                                          const float *z, const float *rs, float *den, float *far,
                                          cudaStream_t s)
{
    LAUNCH_1D(finish_k, a->S * a->H * a->T, s, *a, *o, Tp, C, Num, Qf, z, rs, den, far);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_div_backward(const mpl_cuda_attn_dims *a,
                                                const mpl_cuda_far_opts *o, int64_t Tp, float cm,
                                                const float *gF, const float *Num,
                                                const float *den, float *dN, float *dd,
                                                cudaStream_t s)
{
    LAUNCH_1D(div_bwd_k, a->S * a->H * Tp, s, *a, *o, Tp, cm, gF, Num, den, dN, dd);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_far_add_rowvec(int64_t n_sh, int64_t Tp, int C, int d,
                                              const float *w, const float *z, float *X,
                                              cudaStream_t s)
{
    LAUNCH_1D(add_rowvec_k, n_sh * Tp * d, s, n_sh, Tp, C, d, w, z, X);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_fmm_blend_forward(const mpl_cuda_attn_dims *a, int r,
                                                 const float *A, const float *B,
                                                 const float *near, const float *far, float *out,
                                                 cudaStream_t s)
{
    LAUNCH_1D(blend_fwd_k, a->S * a->T * a->H * a->d, s, *a, r, A, B, near, far, out);
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_fmm_blend_backward(const mpl_cuda_attn_dims *a, int r,
                                                  const float *A, const float *B,
                                                  const float *far, const float *dout, float *gN,
                                                  float *gF, float *fsum, cudaStream_t s)
{
    LAUNCH_1D(blend_bwd_k, a->S * a->T * a->H * a->d, s, *a, r, A, B, far, dout, gN, gF, fsum);
    return MPL_OK;
}
