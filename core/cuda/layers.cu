// The model's pointwise and row-wise GPU kernels (core/cuda/kernels.h):
// embedding, RMSNorm, GELU, conversions, cross-entropy, RoPE. Each mirrors
// its CPU counterpart in core/layers_impl.h formula for formula; they
// differ from it only in summation order and in the bf16 rounding of what
// feeds the matrix products.
#include <math.h>

#include "common.cuh"
#include "kernels.h"

#define ROW_THREADS 256
#define EW_THREADS 256

// ---- embedding ------------------------------------------------------------

static __global__ void embed_fwd_k(float *out, const int32_t *tok, const float *wte,
                                   int64_t n_tok, int64_t C)
{
    const int64_t n = n_tok * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / C, c = i % C;
        out[i] = wte[(int64_t)tok[t] * C + c];
    }
}

extern "C" mpl_status mpl_cuda_embed_forward(float *out, const int32_t *tok, const float *wte,
                                             int64_t n_tok, int64_t C, cudaStream_t s)
{
    if (n_tok * C == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(embed_fwd_k, mpl_grid_1d(n_tok * C, EW_THREADS), EW_THREADS, 0, s, out, tok,
                    wte, n_tok, C);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

// Block (id u, channel block): the positions of id u, in order.
static __global__ void embed_bwd_k(float *dwte, const float *dout, const int32_t *ids,
                                   const int32_t *start, const int32_t *pos, int64_t C)
{
    const int64_t u = blockIdx.x, c = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0;
    for (int32_t k = start[u]; k < start[u + 1]; k++) acc += dout[(int64_t)pos[k] * C + c];
    dwte[(int64_t)ids[u] * C + c] += acc;
}

extern "C" mpl_status mpl_cuda_embed_backward(float *dwte, const float *dout, const int32_t *ids,
                                              const int32_t *start, const int32_t *pos,
                                              int64_t n_ids, int64_t C, cudaStream_t s)
{
    if (n_ids == 0 || C == 0) return MPL_OK;
    const dim3 grid((unsigned)n_ids, (unsigned)((C + EW_THREADS - 1) / EW_THREADS));
    MPL_CUDA_LAUNCH(embed_bwd_k, grid, EW_THREADS, 0, s, dwte, dout, ids, start, pos, C);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" int64_t mpl_cuda_embed_groups(const int32_t *tok, int64_t n_tok, int64_t V,
                                         int32_t *ids, int32_t *start, int32_t *pos,
                                         int32_t *work)
{
    // counting sort by id: work[v] = count, then the running start of v
    for (int64_t v = 0; v < V; v++) work[v] = 0;
    for (int64_t t = 0; t < n_tok; t++) work[tok[t]]++;
    int64_t n_ids = 0;
    int32_t run = 0;
    for (int64_t v = 0; v < V; v++) {
        const int32_t cnt = work[v];
        if (cnt == 0) continue;
        ids[n_ids] = (int32_t)v;
        start[n_ids] = run;
        work[v] = run;
        run += cnt;
        n_ids++;
    }
    start[n_ids] = run;
    for (int64_t t = 0; t < n_tok; t++) pos[work[tok[t]]++] = (int32_t)t;
    return n_ids;
}

// ---- RMSNorm ----------------------------------------------------------------

static __global__ void rmsnorm_fwd_k(mpl_bf16 *out, float *rstd, const float *x, const float *g,
                                     int64_t C, double eps)
{
    __shared__ float sh[32];
    const int64_t t = blockIdx.x;
    const float *xr = x + t * C;
    float ss = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
    ss = mpl_block_sum(ss, sh);
    // one scalar per row: the root in double, as on the CPU
    const float r = (float)(1.0 / sqrt((double)ss / (double)C + eps));
    if (threadIdx.x == 0) rstd[t] = r;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mpl_st_bf16(out, t * C + c, xr[c] * r * g[c]);
}

extern "C" mpl_status mpl_cuda_rmsnorm_forward(mpl_bf16 *out, float *rstd, const float *x,
                                               const float *g, int64_t n_tok, int64_t C,
                                               double eps, cudaStream_t s)
{
    if (n_tok == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(rmsnorm_fwd_k, (unsigned)n_tok, ROW_THREADS, 0, s, out, rstd, x, g, C, eps);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

static __global__ void rmsnorm_bwd_k(float *dx, mpl_bf16 *dx_bf, int accumulate, const float *dout,
                                     const float *x, const float *g, const float *rstd, int64_t C)
{
    __shared__ float sh[32];
    const int64_t t = blockIdx.x;
    const float *xr = x + t * C, *dy = dout + t * C;
    const float r = rstd[t];
    float dot = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += dy[c] * g[c] * xr[c];
    dot = mpl_block_sum(dot, sh);
    const float k = dot * r * r * r / (float)C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        const float v = (accumulate ? dx[t * C + c] : 0.0f) + r * g[c] * dy[c] - xr[c] * k;
        dx[t * C + c] = v;
        if (dx_bf) mpl_st_bf16(dx_bf, t * C + c, v);
    }
}

extern "C" mpl_status mpl_cuda_rmsnorm_backward(float *dx, mpl_bf16 *dx_bf, int accumulate,
                                                const float *dout, const float *x, const float *g,
                                                const float *rstd, int64_t n_tok, int64_t C,
                                                cudaStream_t s)
{
    if (n_tok == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(rmsnorm_bwd_k, (unsigned)n_tok, ROW_THREADS, 0, s, dx, dx_bf, accumulate, dout,
                    x, g, rstd, C);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

// ---- GELU -------------------------------------------------------------------

#define GELU_S 0.79788456080286535588f // sqrt(2/pi)
#define GELU_K 0.044715f

static __global__ void gelu_fwd_k(mpl_bf16 *out, const mpl_bf16 *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float xi = mpl_ld_bf16(x, i);
        const float u = GELU_S * (xi + GELU_K * xi * xi * xi);
        mpl_st_bf16(out, i, xi / (1.0f + expf(-2.0f * u)));
    }
}

static __global__ void gelu_bwd_k(mpl_bf16 *d, const mpl_bf16 *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float xi = mpl_ld_bf16(x, i), x2 = xi * xi;
        const float u = GELU_S * (xi + GELU_K * x2 * xi);
        const float sg = 1.0f / (1.0f + expf(-2.0f * u));
        const float du = GELU_S * (1.0f + 3.0f * GELU_K * x2);
        mpl_st_bf16(d, i, mpl_ld_bf16(d, i) * (sg + 2.0f * xi * sg * (1.0f - sg) * du));
    }
}

extern "C" mpl_status mpl_cuda_gelu_forward(mpl_bf16 *out, const mpl_bf16 *x, int64_t n,
                                            cudaStream_t s)
{
    if (n == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(gelu_fwd_k, mpl_grid_1d(n, EW_THREADS), EW_THREADS, 0, s, out, x, n);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_gelu_backward(mpl_bf16 *d, const mpl_bf16 *x, int64_t n,
                                             cudaStream_t s)
{
    if (n == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(gelu_bwd_k, mpl_grid_1d(n, EW_THREADS), EW_THREADS, 0, s, d, x, n);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

// ---- conversions and strided adds --------------------------------------------

static __global__ void to_bf16_k(mpl_bf16 *dst, const float *src, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        mpl_st_bf16(dst, i, src[i]);
}

extern "C" mpl_status mpl_cuda_to_bf16(mpl_bf16 *dst, const float *src, int64_t n, cudaStream_t s)
{
    if (n == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(to_bf16_k, mpl_grid_1d(n, EW_THREADS), EW_THREADS, 0, s, dst, src, n);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

static __global__ void axpy_2d_k(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows,
                                 int64_t cols, float alpha, int accumulate)
{
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        float *yy = y + r * ldy + c;
        *yy = (accumulate ? *yy : 0.0f) + alpha * x[r * ldx + c];
    }
}

extern "C" mpl_status mpl_cuda_axpy_2d(float *y, int64_t ldy, const float *x, int64_t ldx,
                                       int64_t rows, int64_t cols, float alpha, int accumulate,
                                       cudaStream_t s)
{
    if (rows * cols == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(axpy_2d_k, mpl_grid_1d(rows * cols, EW_THREADS), EW_THREADS, 0, s, y, ldy, x,
                    ldx, rows, cols, alpha, accumulate);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

// ---- cross-entropy ------------------------------------------------------------

static __global__ void xent_k(float *loss, mpl_bf16 *dlogits, const float *logits,
                              const int32_t *target, int64_t V)
{
    __shared__ float sh[32];
    const int64_t t = blockIdx.x;
    const float *r = logits + t * V;
    const int32_t y = target[t];
    if (y < 0) { // ignored row: no loss, no gradient
        if (threadIdx.x == 0) loss[t] = 0;
        if (dlogits)
            for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mpl_st_bf16(dlogits, t * V + v, 0.0f);
        return;
    }
    float m = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, r[v]);
    m = mpl_block_max(m, sh);
    float sum = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(r[v] - m);
    sum = mpl_block_sum(sum, sh);
    if (threadIdx.x == 0) loss[t] = logf(sum) + m - r[y]; // log sum exp(l - m) + m - l_y
    if (dlogits) {
        const float inv = 1.0f / sum;
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
            mpl_st_bf16(dlogits, t * V + v, expf(r[v] - m) * inv - (v == y ? 1.0f : 0.0f));
    }
}

extern "C" mpl_status mpl_cuda_xent_forward(float *loss, mpl_bf16 *dlogits, const float *logits,
                                            const int32_t *target, int64_t n_tok, int64_t V,
                                            cudaStream_t s)
{
    if (n_tok == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(xent_k, (unsigned)n_tok, ROW_THREADS, 0, s, loss, dlogits, logits, target, V);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

// ---- RoPE ---------------------------------------------------------------------

static __global__ void rope_k(float *x, int64_t n_seq, int64_t T, int64_t row_stride,
                              int64_t col0, int n_head, int d, int64_t pos0, double theta,
                              double sgn)
{
    const int half = d / 2;
    const int64_t n = n_seq * T * n_head * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % half);
        const int64_t h = (i / half) % n_head, st = i / ((int64_t)half * n_head);
        const int64_t t = st % T;
        // angles in double, as the CPU: pos * theta^(-2c/d) reaches thousands
        // of radians at long context
        const double ang = (double)(pos0 + t) * pow(theta, -2.0 * (double)c / (double)d);
        const float cs = (float)cos(ang), sn = (float)(sgn * sin(ang));
        float *lo = x + st * row_stride + col0 + h * d + c, *hi = lo + half;
        const float a = *lo, b = *hi;
        *lo = a * cs - b * sn;
        *hi = b * cs + a * sn;
    }
}

extern "C" mpl_status mpl_cuda_rope(float *x, int64_t n_seq, int64_t T, int64_t row_stride,
                                    int64_t col0, int n_head, int d, int64_t pos0, double theta,
                                    int direction, cudaStream_t s)
{
    const int64_t n = n_seq * T * n_head * (d / 2);
    if (n <= 0) return MPL_OK;
    MPL_CUDA_LAUNCH(rope_k, mpl_grid_1d(n, EW_THREADS), EW_THREADS, 0, s, x, n_seq, T, row_stride,
                    col0, n_head, d, pos0, theta, direction < 0 ? -1.0 : 1.0);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}
