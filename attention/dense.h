/* Dense softmax attention: the O(L^2) oracle every other mechanism is
 * tested against, and the "dense" entry of the attention registry. Two
 * precisions from one template (dense_impl.h): fp32 for training, fp64 for
 * the finite-difference tests. Definitions: /work/shared/ATTENTION.md,
 * section "Dense". */
#ifndef MPL_ATTN_DENSE_H
#define MPL_ATTN_DENSE_H

#include <stdint.h>

#include "../core/attn.h"
#include "../core/status.h"

/* Geometry and options of one dense call (all borrowed for the call). */
typedef struct mpl_attn_dense_args {
    int64_t n_seq;         /* sequences in the batch */
    int64_t n_tok;         /* tokens of each sequence held here */
    int64_t pos0;          /* global position of token 0 (RoPE only) */
    int n_head;            /* H */
    int head_dim;          /* d; logits are scaled by 1/sqrt(d) */
    int causal;            /* 1: key j visible to query i iff j <= i */
    double rope_theta;     /* > 0: rotate q, k by global position (d even) */
    const uint8_t *mask;   /* (n_seq, n_tok) or NULL; 0 = padded token */
} mpl_attn_dense_args;

/* Floats of `saved` for these args: n_seq*n_tok*H*(2d+1). */
int64_t mpl_attn_dense_saved_elems(const mpl_attn_dense_args *a);

/* Local. Dense softmax attention over the n_tok tokens of each of n_seq
 * sequences, at global positions pos0.. (single rank: pos0 = 0, n_tok = L).
 *   qkv   (n_seq, n_tok, 3*H*d), layout as core/attn.h;
 *   out   (n_seq, n_tok, H*d), overwritten;
 *   saved rotated q (n_seq, n_tok, H*d), rotated k (same), then the
 *         log-sum-exp (n_seq, H, n_tok) of every row (-inf for a row with
 *         no visible key); mpl_attn_dense_saved_elems() floats.
 * Padded keys get no weight; a padded query, or one that sees no key,
 * outputs 0 (never NaN). Softmax is max-subtracted in the working
 * precision. Memory: O(threads * n_tok * d), never a score matrix.
 * Returns MPL_ERR_ARG for bad sizes, MPL_ERR_NOMEM when scratch fails. */
mpl_status mpl_attn_dense_forward_f32(const mpl_attn_dense_args *a, const float *qkv,
                                      float *out, float *saved);
mpl_status mpl_attn_dense_forward_f64(const mpl_attn_dense_args *a, const double *qkv,
                                      double *out, double *saved);

/* Local. Gradient of the forward above, from the `saved` it wrote (the
 * probabilities are recomputed from the saved log-sum-exp).
 *   dout (n_seq, n_tok, H*d); dqkv (n_seq, n_tok, 3*H*d) ACCUMULATES (+=). */
mpl_status mpl_attn_dense_backward_f32(const mpl_attn_dense_args *a, const float *qkv,
                                       const float *saved, const float *dout,
                                       float *dqkv);
mpl_status mpl_attn_dense_backward_f64(const mpl_attn_dense_args *a, const double *qkv,
                                       const double *saved, const double *dout,
                                       double *dqkv);

/* Local. Bytes the forward or the backward allocates for itself at most
 * (the threads being omp_get_max_threads()), for memory plans. */
int64_t mpl_attn_dense_work_bytes_f32(const mpl_attn_dense_args *a);
int64_t mpl_attn_dense_work_bytes_f64(const mpl_attn_dense_args *a);

/* Local. The "dense" implementation of core/attn.h on the fp32 functions:
 * no parameters, no mask, no communicator. cfg is copied (kind must be
 * MPL_ATTN_KIND_DENSE; validated by mpl_attn_create). */
mpl_status mpl_attn_dense_create(const mpl_attn_cfg *cfg, mpl_attn *out);

#endif
