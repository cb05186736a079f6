/* The GPU attention kernels, behind extern "C" launchers (band.cu,
 * fmm_far.cu, combiner.cu): first correct versions of the CPU mechanisms
 * of attention/ (simple kernels, one warp per query or key row, plus
 * batched GEMMs for the far field); the fused, fast ones come later.
 * Layouts as core/attn.h: qkv (S, T, 3*H*d) with q, k, v column blocks,
 * head h at h*d; outputs (S, T, H*d); per-row statistics (S, H, T). All
 * pointers are device memory; every launcher queues on stream s and
 * returns a status. No atomics: each output element has one writer per
 * launch, so results repeat bit for bit. Compiles without CUDA. */
#ifndef MPL_ATTN_CUDA_KERNELS_H
#define MPL_ATTN_CUDA_KERNELS_H

#include <stdint.h>

#include "../../core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st;

/* The kernels' largest head dimension (the lanes of a warp hold a row). */
#define MPL_CUDA_ATTN_MAX_D 256

/* Geometry of one call: S sequences of T tokens (the whole sequence on one
 * rank), H heads of d channels. */
typedef struct mpl_cuda_attn_dims {
    int64_t S, T;
    int H, d;
    int causal;
    int64_t window;   /* softmax window w: keys j with 0 <= i-j < w (causal) or
                       * |i-j| < w (bidirectional); dense: w = T */
    int64_t seg;      /* Combiner-Fixed segment size s */
} mpl_cuda_attn_dims;

/* ---- softmax attention in a window (band.cu): dense and the FMM near
 * field. q, k are the (rotated) rows (S, T, H*d), ld H*d; v is the v block
 * of qkv (ld 3*H*d). */
/* out (S, T, Hd) and lse (S, H, T). */
mpl_status mpl_cuda_band_forward(const mpl_cuda_attn_dims *a, const float *q, const float *k,
                                 const float *qkv, float *out, float *lse, struct CUstream_st *s);
/* From dout: dq (S, T, Hd) overwritten, D (S, H, T) = sum_j p_j dp_j. */
mpl_status mpl_cuda_band_backward_q(const mpl_cuda_attn_dims *a, const float *q, const float *k,
                                    const float *qkv, const float *lse, const float *dout,
                                    float *dq, float *D, struct CUstream_st *s);
/* dk (S, T, Hd) overwritten; dv ADDED into the v block of dqkv. */
mpl_status mpl_cuda_band_backward_kv(const mpl_cuda_attn_dims *a, const float *q, const float *k,
                                     const float *qkv, const float *lse, const float *dout,
                                     const float *D, float *dk, float *dqkv,
                                     struct CUstream_st *s);

/* ---- FMM far field and blend (fmm_far.cu) ---- */
/* Options of the feature map phi and of the far field (ATTENTION.md). */
typedef struct mpl_cuda_far_opts {
    int map;           /* mpl_fmm_map */
    int feature_norm;  /* divide the features by their sum */
    int far_norm;      /* ratio: divide by q.z + eps */
    float scale, eps;
} mpl_cuda_far_opts;
/* F (S*H, Tp, d) = features of the q (col = 0) or k (col = H*d) block of
 * qkv; rows t >= T are zero. */
mpl_status mpl_cuda_far_features(const mpl_cuda_attn_dims *a, const mpl_cuda_far_opts *o,
                                 const float *qkv, int64_t col, int64_t Tp, float *F,
                                 struct CUstream_st *s);
/* dqkv[col block] += the gradient through the features given dF (S*H, Tp, d). */
mpl_status mpl_cuda_far_features_backward(const mpl_cuda_attn_dims *a, const mpl_cuda_far_opts *o,
                                          const float *qkv, int64_t col, int64_t Tp,
                                          const float *dF, float *dqkv, struct CUstream_st *s);
/* Vg (S*H, Tp, d) = the v block of qkv, zero rows past T (dir = 0); or
 * dqkv's v block += Vg (dir = 1). */
mpl_status mpl_cuda_far_gather_v(const mpl_cuda_attn_dims *a, int64_t Tp, const float *qkv,
                                 float *Vg, int dir, float *dqkv, struct CUstream_st *s);
/* z (n_blk, d) = column sums of each block of blk_rows rows of X (n_blk *
 * blk_rows, d), rows weighted by w (n_blk * blk_rows) when w != NULL. */
mpl_status mpl_cuda_far_block_colsum(const float *X, const float *w, int64_t n_blk,
                                     int64_t blk_rows, int d, float *z, struct CUstream_st *s);
/* In place over the nb blocks of each of n_sh groups of `elems` floats
 * (X (n_sh, nb, elems)): mode 0 exclusive prefix (block b: sum of blocks
 * < b), 1 every block = the total, 2 exclusive suffix (sum of blocks > b). */
mpl_status mpl_cuda_far_scan(float *X, int64_t n_sh, int64_t nb, int64_t elems, int mode,
                             struct CUstream_st *s);
/* A (n_blk, C, C): zero above the diagonal; rs (n_blk * C) = row sums of
 * what is left (the in-block denominators). */
mpl_status mpl_cuda_far_tril(float *A, int64_t n_blk, int C, float *rs, struct CUstream_st *s);
/* Causal backward: dA (n_blk, C, C) += dd_i on and below the diagonal,
 * zero above. */
mpl_status mpl_cuda_far_tril_grad(float *dA, const float *dd, int64_t n_blk, int C,
                                  struct CUstream_st *s);
/* The far rows: den_i = rs_i (or 0 without rs) + Qf_i . z_blk(i) + eps;
 * far (the map's (S, T, Hd) slab; NULL: not written) = scale * Num / den
 * (ratio) or scale * Num. Also keeps den (S*H, Tp) when den != NULL. */
mpl_status mpl_cuda_far_finish(const mpl_cuda_attn_dims *a, const mpl_cuda_far_opts *o,
                               int64_t Tp, int C, const float *Num, const float *Qf,
                               const float *z, const float *rs, float *den, float *far,
                               struct CUstream_st *s);
/* Backward of the division: with g = cm gF (gF (S, T, Hd) from the blend,
 * cm the map's weight), Num and den: dN (S*H, Tp, d) = g f, dd (S*H, Tp)
 * = -scale g.Num / den^2 (0 without ratio); rows past T are zero. */
mpl_status mpl_cuda_far_div_backward(const mpl_cuda_attn_dims *a, const mpl_cuda_far_opts *o,
                                     int64_t Tp, float cm, const float *gF, const float *Num,
                                     const float *den, float *dN, float *dd,
                                     struct CUstream_st *s);
/* X (S*H, Tp, d) += w_i z_blk(i) (w = dd: the denominators' q gradient)
 * or += z_blk(i) (w = NULL: the normalisers' k gradient). */
mpl_status mpl_cuda_far_add_rowvec(int64_t n_sh, int64_t Tp, int C, int d, const float *w,
                                   const float *z, float *X, struct CUstream_st *s);
/* out = A near + B sum_m c_m far_m (CHANNEL blend: A, B (H, d), c_m = 1/r). */
mpl_status mpl_cuda_fmm_blend_forward(const mpl_cuda_attn_dims *a, int r, const float *A,
                                      const float *B, const float *near, const float *far,
                                      float *out, struct CUstream_st *s);
/* gN = A g, gF = B g (each map's share c_m = 1/r is applied by
 * mpl_cuda_far_div_backward), fsum = sum_m far_m / r (for dB). */
mpl_status mpl_cuda_fmm_blend_backward(const mpl_cuda_attn_dims *a, int r, const float *A,
                                       const float *B, const float *far, const float *dout,
                                       float *gN, float *gF, float *fsum, struct CUstream_st *s);

/* ---- Combiner-Fixed (combiner.cu). q, k rotated rows (S, T, Hd) for the
 * direct slots; qkv's unrotated q, k for the summaries. ---- */
/* khat, vhat, qhat (S, n_seg, Hd); w: (S, H, T) scratch. */
mpl_status mpl_cuda_cfx_summarize(const mpl_cuda_attn_dims *a, const float *qkv, float *khat,
                                  float *vhat, float *qhat, float *w, struct CUstream_st *s);
/* out (S, T, Hd), lse (S, H, T). */
mpl_status mpl_cuda_cfx_forward(const mpl_cuda_attn_dims *a, const float *q, const float *k,
                                const float *qkv, const float *khat, const float *vhat,
                                float *out, float *lse, struct CUstream_st *s);
/* dq (S, T, Hd) (rotated) overwritten, D (S, H, T), and the summaries'
 * q gradient ADDED into dqkv's q block. */
mpl_status mpl_cuda_cfx_backward_q(const mpl_cuda_attn_dims *a, const float *q, const float *k,
                                   const float *qkv, const float *khat, const float *vhat,
                                   const float *lse, const float *dout, float *dq, float *D,
                                   float *dqkv, struct CUstream_st *s);
/* dk (S, T, Hd) overwritten; dv ADDED into dqkv's v block. */
mpl_status mpl_cuda_cfx_backward_kv(const mpl_cuda_attn_dims *a, const float *q, const float *k,
                                    const float *qkv, const float *lse, const float *dout,
                                    const float *D, float *dk, float *dqkv,
                                    struct CUstream_st *s);
/* dkhat, dvhat (S, n_seg, Hd) overwritten. */
mpl_status mpl_cuda_cfx_backward_summary(const mpl_cuda_attn_dims *a, const float *qkv,
                                         const float *khat, const float *vhat, const float *lse,
                                         const float *dout, const float *D, float *dkhat,
                                         float *dvhat, struct CUstream_st *s);
/* dqkv (q, k, v blocks of each segment's rows) += the summaries' backward
 * (inner softmax, max-pool to the argmax rows, ties split equally);
 * w: (S, H, T) scratch. */
mpl_status mpl_cuda_cfx_summarize_backward(const mpl_cuda_attn_dims *a, const float *qkv,
                                           const float *dkhat, const float *dvhat, float *w,
                                           float *dqkv, struct CUstream_st *s);

#ifdef __cplusplus
}
#endif

#endif
