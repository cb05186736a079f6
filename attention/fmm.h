/* FMM attention (FMMformer): a banded softmax near field plus a low-rank
 * linear-attention far field, blended per head. Definitions:
 * /work/shared/ATTENTION.md, section "FMM". Two precisions from one
 * template (the fmm_*_impl.h bodies): fp32 trains, fp64 is what the
 * finite-difference tests check.
 *
 * THE CHUNK CONTRACT (what sequence parallelism builds on). Every function
 * works on one chunk: global positions [pos0, pos0 + n_tok) of n_seq
 * sequences of global length seq_len, and takes everything outside the
 * chunk explicitly in an mpl_attn_fmm_ctx:
 *   - near-field halo: the K, V rows of the n_pre positions just before the
 *     chunk and (bidirectional) the n_post just after, UNROTATED (the kernel
 *     rotates them by their global positions), with their padding mask.
 *     A full result needs n_pre = min(w-1, pos0) and, bidirectional,
 *     n_post = min(w-1, seq_len - pos0 - n_tok); fewer rows mean those
 *     positions are treated as absent.
 *   - far-field statistics per (seq, head, map): (S, z) with S (d x d),
 *     S[a][b] = sum_j kt_j[a] v_j[b], z = sum_j kt_j (kt the normalised
 *     key features), laid out stat (n_seq, H, r, d*d + d), S first.
 *     Causal: stat_in = the EXCLUSIVE prefix (the sum over every token
 *     before the chunk; the chunk adds its own rows inclusively).
 *     Bidirectional: stat_in = the TOTAL over the whole sequence, this
 *     chunk's rows included.
 * Forward of a split sequence:
 *   1. mpl_attn_fmm_stats: this chunk's (S_loc, z_loc), padded keys left out;
 *   2. the caller combines: causal exclusive prefix scan, bidirectional
 *      all-reduce (sum) -> stat_in; it also exchanges the halo rows;
 *   3. mpl_attn_fmm_forward with ctx.
 * Backward:
 *   1. mpl_attn_fmm_backward: accumulates dqkv, dhalo (the halo rows'
 *      gradients, to be ADDED at their owners), dstat_in (gradient w.r.t.
 *      stat_in) and the blend-weight gradients;
 *   2. the caller combines dstat_in: causal reverse exclusive scan (chunk p
 *      gets the sum of dstat_in over the chunks after p), bidirectional
 *      all-reduce (sum) -> dstat_loc;
 *   3. mpl_attn_fmm_stats_backward(dstat_loc): the gradient through this
 *      chunk's (S_loc, z_loc) into dk, dv.
 * The causal backward already routes the gradient of the chunk's own rows
 * through the inclusive in-chunk prefix; only what later chunks saw comes
 * through step 3 (a single causal rank skips it). Bidirectional rows reach
 * their own queries only through stat_in, so a single bidirectional rank
 * passes its own stats as stat_in and its own dstat_in to step 3.
 *
 * Work: near field O(n_tok * w * d) in register-tiled band blocks; far
 * field chunked linear attention O(n_tok * r * d^2). One (sequence, head)
 * is processed block by block with its working set in L1/L2: the forward
 * writes the output and saves only the near field's log-sum-exp (one
 * value per row and head); the backward recomputes the rest (near
 * probabilities, far prefix states) instead of reading saved activations.
 * Memory beyond the inputs and outputs: `saved` plus per thread O(w*d +
 * r*d^2) buffers and 2*r values per row, never n_tok^2. S, z accumulate in
 * the working precision (fp32 in the training instance, as ATTENTION.md
 * allows). Parallel over (sequence, head) with OpenMP; sums in a fixed
 * order, so results do not depend on the thread count. */
#ifndef MPL_ATTN_FMM_H
#define MPL_ATTN_FMM_H

#include <stdint.h>

#include "../core/attn.h"
#include "../core/status.h"

struct mpl_comm;

/* Options and geometry of one FMM call (borrowed for the call). */
typedef struct mpl_attn_fmm_args {
    int64_t n_seq;
    int64_t n_tok;           /* rows of the chunk */
    int64_t pos0;            /* global position of row 0 */
    int64_t seq_len;         /* global L: inv_sqrt_n and halo checks */
    int n_head, head_dim;    /* H, d */
    int causal;
    int64_t band;            /* w >= 1 */
    double rope_theta;       /* > 0: RoPE on the near field (d even) */
    int n_maps;              /* r, 1..MPL_FMM_MAX_MAPS */
    mpl_fmm_map maps[MPL_FMM_MAX_MAPS];
    int feature_norm;        /* 1: features divided by their sum */
    int far_norm;            /* 1: ratio, divide by q.z + eps */
    mpl_fmm_far_scale far_scale;
    double eps;
    mpl_fmm_blend blend;
    int learn_far_weight;    /* 0: no gradient for b */
    const uint8_t *mask;     /* (n_seq, n_tok) 1 = real, 0 = padding; NULL: none */
} mpl_attn_fmm_args;

/* Local. Args from a config and a call geometry (mask from g). */
mpl_attn_fmm_args mpl_attn_fmm_args_make(const mpl_attn_cfg *cfg, const mpl_attn_geom *g);
/* Local. Validates a config's FMM fields (band >= 1, 1 <= n_maps <= 4 with
 * known maps, eps > 0 with ratio, far_scale and blend known); MPL_ERR_ARG
 * naming the value. */
mpl_status mpl_attn_fmm_cfg_check(const mpl_attn_cfg *cfg);

/* Blend weights (borrowed). CHANNEL: a, b (H, d), alpha unused (NULL ok);
 * LRA: a, b (H), alpha (r). Gradients are laid out the same and
 * ACCUMULATE; db is untouched when learn_far_weight = 0, dalpha unless
 * LRA; any gradient pointer may be NULL to skip it. */
typedef struct mpl_attn_fmm_blend_f32 { const float *a, *b, *alpha; } mpl_attn_fmm_blend_f32;
typedef struct mpl_attn_fmm_blend_f64 { const double *a, *b, *alpha; } mpl_attn_fmm_blend_f64;
typedef struct mpl_attn_fmm_dblend_f32 { float *a, *b, *alpha; } mpl_attn_fmm_dblend_f32;
typedef struct mpl_attn_fmm_dblend_f64 { double *a, *b, *alpha; } mpl_attn_fmm_dblend_f64;

/* Context of a chunk (borrowed). A zeroed struct = single rank, causal:
 * empty halos, zero prefix. Halo rows are (n_seq, n_pre|n_post, 2*H*d):
 * k in columns [0, Hd), v in [Hd, 2Hd), head h at offset h*d. */
typedef struct mpl_attn_fmm_ctx_f32 {
    int64_t n_pre, n_post;
    const float *halo_pre;        /* positions [pos0 - n_pre, pos0) */
    const float *halo_post;       /* positions [pos0 + n_tok, pos0 + n_tok + n_post) */
    const uint8_t *mask_pre;      /* (n_seq, n_pre) or NULL: all real */
    const uint8_t *mask_post;     /* (n_seq, n_post) or NULL */
    const float *stat_in;         /* (n_seq, H, r, d*d + d) or NULL = zeros */
} mpl_attn_fmm_ctx_f32;
typedef struct mpl_attn_fmm_ctx_f64 {
    int64_t n_pre, n_post;
    const double *halo_pre, *halo_post;
    const uint8_t *mask_pre, *mask_post;
    const double *stat_in;
} mpl_attn_fmm_ctx_f64;
/* Gradients of the context (ACCUMULATE; NULL skips). Same layouts. */
typedef struct mpl_attn_fmm_dctx_f32 { float *halo_pre, *halo_post, *stat_in; } mpl_attn_fmm_dctx_f32;
typedef struct mpl_attn_fmm_dctx_f64 { double *halo_pre, *halo_post, *stat_in; } mpl_attn_fmm_dctx_f64;

/* Floats of one stat block: n_seq * H * r * (d*d + d). */
int64_t mpl_attn_fmm_stat_elems(const mpl_attn_fmm_args *a);
/* Floats of `saved`: n_seq * n_tok * H = the near-field log-sum-exp
 * (n_seq, H, n_tok); -inf for padded queries. */
int64_t mpl_attn_fmm_saved_elems(const mpl_attn_fmm_args *a);
/* Floats of a stream state: n_seq * H * (2*(w-1)*d + r*(d*d + d)). */
int64_t mpl_attn_fmm_stream_elems(const mpl_attn_fmm_args *a);

/* Local. Phase 1: stat_loc (n_seq, H, r, d*d+d) = this chunk's sums over
 * its unpadded rows (overwritten). */
mpl_status mpl_attn_fmm_stats_f32(const mpl_attn_fmm_args *a, const float *qkv, float *stat_loc);
mpl_status mpl_attn_fmm_stats_f64(const mpl_attn_fmm_args *a, const double *qkv, double *stat_loc);

/* Local. Phase 2: out (n_seq, n_tok, H*d) overwritten; saved as
 * mpl_attn_fmm_saved_elems. A padded query outputs 0. */
mpl_status mpl_attn_fmm_forward_f32(const mpl_attn_fmm_args *a, const mpl_attn_fmm_ctx_f32 *ctx,
                                    mpl_attn_fmm_blend_f32 bl, const float *qkv, float *out,
                                    float *saved);
mpl_status mpl_attn_fmm_forward_f64(const mpl_attn_fmm_args *a, const mpl_attn_fmm_ctx_f64 *ctx,
                                    mpl_attn_fmm_blend_f64 bl, const double *qkv, double *out,
                                    double *saved);

/* Local. Backward of the forward above (same a, ctx, bl, qkv, saved).
 * dqkv, dctx, dbl ACCUMULATE. */
mpl_status mpl_attn_fmm_backward_f32(const mpl_attn_fmm_args *a, const mpl_attn_fmm_ctx_f32 *ctx,
                                     mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                     const float *saved, const float *dout, float *dqkv,
                                     const mpl_attn_fmm_dctx_f32 *dctx,
                                     mpl_attn_fmm_dblend_f32 dbl);
mpl_status mpl_attn_fmm_backward_f64(const mpl_attn_fmm_args *a, const mpl_attn_fmm_ctx_f64 *ctx,
                                     mpl_attn_fmm_blend_f64 bl, const double *qkv,
                                     const double *saved, const double *dout, double *dqkv,
                                     const mpl_attn_fmm_dctx_f64 *dctx,
                                     mpl_attn_fmm_dblend_f64 dbl);

/* Local. Backward phase 3: adds the gradient through stat_loc (given its
 * gradient dstat_loc, layout of a stat block) into the k, v columns of
 * dqkv. */
mpl_status mpl_attn_fmm_stats_backward_f32(const mpl_attn_fmm_args *a, const float *qkv,
                                           const float *dstat_loc, float *dqkv);
mpl_status mpl_attn_fmm_stats_backward_f64(const mpl_attn_fmm_args *a, const double *qkv,
                                           const double *dstat_loc, double *dqkv);

/* Local. Streaming, causal only: state (mpl_attn_fmm_stream_elems) zeroed
 * = position 0. One token per sequence at global position pos (a->n_tok
 * and a->mask ignored): qkv_row (n_seq, 3*H*d) -> out_row (n_seq, H*d).
 * Cost O(w*d + r*d^2) per (sequence, head). The caller feeds positions
 * 0, 1, 2, ... in order. */
mpl_status mpl_attn_fmm_stream_step_f32(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f32 bl,
                                        float *state, int64_t pos, const float *qkv_row,
                                        float *out_row);
mpl_status mpl_attn_fmm_stream_step_f64(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f64 bl,
                                        double *state, int64_t pos, const double *qkv_row,
                                        double *out_row);

/* Local. The "fmm" implementation of core/attn.h on the fp32 functions,
 * through fmm_dist.h: sp (borrowed; it must outlive the instance) is the
 * SP group the sequences are split over, or NULL for one rank. cfg copied.
 * Parameters "<prefix>blend_near", "<prefix>blend_far" ((H, d) for
 * CHANNEL, (H) for LRA) and, LRA, "<prefix>blend_maps" (r). */
mpl_status mpl_attn_fmm_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp, mpl_attn *out);

#endif
