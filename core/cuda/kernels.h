/* The model's own GPU kernels, behind extern "C" launchers (layers.cu,
 * reduce.cu, adamw.cu). Each launcher queues its kernel on stream s,
 * checks the launch and returns a status; pointers are device memory;
 * shapes as in core/layers.h (activations row-major (n_tok, C), linear
 * weights (OC, IC)). Every reduction has a fixed order (no atomics), so a
 * launch gives the same bits on every run. Each kernel has its CPU
 * counterpart in core/layers.h or core/adamw.h, which the tests compare it
 * against (tests/test_core_cuda_kernels.c). Compiles without CUDA. */
#ifndef MPL_CUDA_KERNELS_H
#define MPL_CUDA_KERNELS_H

#include <stdint.h>

#include "../cuda.h"
#include "../status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out (n_tok, C) = wte[tok[t], :] (fp32, the master weights: exact). */
mpl_status mpl_cuda_embed_forward(float *out, const int32_t *tok, const float *wte, int64_t n_tok,
                                  int64_t C, struct CUstream_st *s);
/* dwte[ids[u], :] += sum over k in [start[u], start[u+1]) of dout[pos[k], :]:
 * the token positions grouped by id (mpl_cuda_embed_groups builds them on
 * the host), summed in position order; one block per (id, channel block),
 * so no two threads add into the same row. */
mpl_status mpl_cuda_embed_backward(float *dwte, const float *dout, const int32_t *ids,
                                   const int32_t *start, const int32_t *pos, int64_t n_ids,
                                   int64_t C, struct CUstream_st *s);
/* Local, host. Group tokens tok (n_tok, ids in [0, V)) by id: ids (<= V
 * distinct ids, ascending), start (n_ids + 1), pos (n_tok, ascending within
 * an id); work: V int32 of scratch. Returns n_ids. */
int64_t mpl_cuda_embed_groups(const int32_t *tok, int64_t n_tok, int64_t V, int32_t *ids,
                              int32_t *start, int32_t *pos, int32_t *work);

/* RMSNorm of fp32 rows into bf16: out = x * rstd * g, rstd saved (fp32). */
mpl_status mpl_cuda_rmsnorm_forward(mpl_bf16 *out, float *rstd, const float *x, const float *g,
                                    int64_t n_tok, int64_t C, double eps, struct CUstream_st *s);
/* RMSNorm backward, the per-row part: dx (fp32) = (accumulate ? dx : 0) +
 * r g dy - x r^3/C sum_j dy_j g_j x_j; dx_bf (may be NULL) receives dx in
 * bf16 for the next product. dg is mpl_cuda_colsum's job. */
mpl_status mpl_cuda_rmsnorm_backward(float *dx, mpl_bf16 *dx_bf, int accumulate, const float *dout,
                                     const float *x, const float *g, const float *rstd,
                                     int64_t n_tok, int64_t C, struct CUstream_st *s);

/* acc[c] += sum over rows r of a[r, c] * b[r, c] * (row_scale ? row_scale[r] : 1)
 * (a, b fp32 (n_rows, n_cols) contiguous): RMSNorm's dg, the FMM blend
 * gradients. Two passes over fixed blocks of MPL_CUDA_COLSUM_ROWS rows:
 * partials (mpl_cuda_colsum_partials floats), then their sum in block
 * order. */
#define MPL_CUDA_COLSUM_ROWS 256
int64_t mpl_cuda_colsum_partials(int64_t n_rows, int64_t n_cols);
mpl_status mpl_cuda_colsum(float *acc, const float *a, const float *b, const float *row_scale,
                           int64_t n_rows, int64_t n_cols, float *partials, struct CUstream_st *s);

/* GELU (tanh approximation, the CPU formula x * sigma(2u)) on bf16, fp32 math. */
mpl_status mpl_cuda_gelu_forward(mpl_bf16 *out, const mpl_bf16 *x, int64_t n,
                                 struct CUstream_st *s);
/* In place: d (in: dL/d out, out: dL/d x) = d * gelu'(x). */
mpl_status mpl_cuda_gelu_backward(mpl_bf16 *d, const mpl_bf16 *x, int64_t n,
                                  struct CUstream_st *s);

/* dst (bf16) = src (fp32), n elements. */
mpl_status mpl_cuda_to_bf16(mpl_bf16 *dst, const float *src, int64_t n, struct CUstream_st *s);
/* y[r, c] (+)= alpha x[r, c] over rows x cols with row strides ldy, ldx
 * (accumulate = 0: y = alpha x). For the column blocks of qkv. */
mpl_status mpl_cuda_axpy_2d(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows,
                            int64_t cols, float alpha, int accumulate, struct CUstream_st *s);

/* Softmax cross-entropy over fp32 logits (n_tok, V), fused with the
 * gradient: loss[t] = -log p[t, target[t]] and dlogits[t] = p[t] -
 * onehot(target[t]) in bf16 (unscaled: the backward's products apply the
 * loss scale); rows with target < 0 get loss 0 and zero gradient.
 * dlogits may be NULL (loss only). */
mpl_status mpl_cuda_xent_forward(float *loss, mpl_bf16 *dlogits, const float *logits,
                                 const int32_t *target, int64_t n_tok, int64_t V,
                                 struct CUstream_st *s);

/* RoPE in place, the layout and angles of mpl_rope_apply_f32 (angles in
 * double): x (n_seq, T, row_stride), heads at col0 + h*d, token t at
 * position pos0 + t; direction -1 rotates back. */
mpl_status mpl_cuda_rope(float *x, int64_t n_seq, int64_t T, int64_t row_stride, int64_t col0,
                         int n_head, int d, int64_t pos0, double theta, int direction,
                         struct CUstream_st *s);

/* *out (device double) = sum of x[i] (squares = 0) or x[i]^2 (squares = 1)
 * over n floats, in double, in a fixed order: MPL_CUDA_SUM_BLOCKS blocks
 * of grid-strided partials, then one block over them. partials:
 * MPL_CUDA_SUM_BLOCKS doubles of device scratch. */
#define MPL_CUDA_SUM_BLOCKS 512
mpl_status mpl_cuda_sum(double *out, const float *x, int64_t n, int squares, double *partials,
                        struct CUstream_st *s);

/* One fused pass of gradient clipping and AdamW over the parameter slab,
 * one grid row per tensor (tables t_off, t_n, t_decay in device memory):
 * with norm = sqrt(*norm2), nothing is written when norm or *loss (if
 * loss) is not finite, so a bad step leaves the model as it was; else
 * g = grad * (grad_clip > 0 && norm > grad_clip ? grad_clip / norm : 1) is
 * stored back (the clipped gradient, as on the CPU), then the update of
 * mpl_adamw_update_range with decay = 1 - lr * weight_decay on tensors
 * with t_decay, and params_bf = bf16(params). */
typedef struct mpl_cuda_adamw_args {
    float *params, *grads, *m, *v;
    mpl_bf16 *params_bf;
    const int64_t *t_off, *t_n;
    const int32_t *t_decay;
    int n_tensors;
    int64_t max_tensor_elems;                   /* the largest t_n: sizes the grid */
    float beta1, beta2, eps, c1, c2, lr, decay; /* c1, c2: bias corrections 1/(1 - beta^step) */
    double grad_clip;
    const double *norm2, *loss;
} mpl_cuda_adamw_args;
mpl_status mpl_cuda_adamw_update(const mpl_cuda_adamw_args *a, struct CUstream_st *s);

#ifdef __cplusplus
}
#endif

#endif
