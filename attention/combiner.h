/* Combiner attention (Combiner-Fixed and Combiner-Logsparse) on CPU: the
 * public API of the numerics (two precisions from one template, fp32 for
 * training, fp64 for the finite-difference tests) and of the chunk-local
 * pieces the sequence-parallel code will call. Definitions:
 * /work/shared/ATTENTION.md, sections "Combiner" and "Numerics".
 *
 * Layouts (as core/attn.h): qkv (n_seq, n_tok, 3*H*d), out (n_seq, n_tok,
 * H*d), mask (n_seq, n_tok) 1 = real token. Summaries use the unrotated
 * q, k; RoPE (rope_theta > 0) rotates only the direct slots by global
 * position. A padded query outputs 0; padded keys contribute to no slot
 * and to no summary; a span with no real token has no summary slot.
 *
 * ---- Combiner-Fixed, chunk-local API (what one rank of a
 * sequence-parallel group computes) ----
 * A chunk holds global positions [pos0, pos0 + n_tok) of a sequence of
 * global length seq_len. Segment m is [m*s, min((m+1)*s, L)); the chunk
 * OWNS the summaries of the segments whose last token it holds,
 * m in [m0, m1) (mpl_attn_combiner_fixed_owned). Its context (the inputs
 * that are not its rows) is an mpl_attn_combiner_ctx_*:
 *   halo lo: the n_lo = pos0 - floor(pos0/s)*s rows of the segment that
 *            straddles pos0, positions [pos0 - n_lo, pos0) (they may come
 *            from several predecessors when chunks are shorter than s);
 *            used by the direct slots and by the summary of that segment
 *            when this chunk owns it;
 *   halo hi: bidirectional only: the rows after the chunk up to the end of
 *            the segment holding the chunk's last token, n_hi rows
 *            (causal: n_hi = 0);
 *   khat, vhat (n_seq, n_seg, H*d), present (n_seq, n_seg): the summaries
 *            of ALL segments indexed by global segment index m (the
 *            all-gather of every chunk's owned range; entries a chunk does
 *            not use may hold anything: causal reads m < the segment of
 *            its last token, bidirectional every m).
 * Phases, forward: (i) chunk_summarize writes the owned entries [m0, m1);
 * (ii) the caller all-gathers khat, vhat, present; (iii) chunk_forward.
 * Backward: chunk_backward accumulates dqkv of the chunk rows, dqkv_lo /
 * dqkv_hi of the halo rows (send them to their owners and add there), and
 * dkhat, dvhat of every summary used (reduce-scatter: sum them at the
 * owner); then, at the owner, chunk_summarize_backward turns the summed
 * d(khat, vhat) of owned summaries into dq, dk, dv of the chunk and lo-halo
 * rows (again: halo gradients go back to their owners). One rank: pos0 = 0,
 * n_tok = L, empty halos, which is what mpl_attn_combiner_fixed_forward_*
 * does.
 *
 * ---- Combiner-Logsparse ----
 * Single rank only for now (pos0 = 0, n_tok = seq_len). The distributed
 * version will need, per chunk, the <= Lambda summaries of dyadic blocks
 * starting before pos0 (and, bidirectional, the mirrored blocks ending
 * after the chunk): blocks wholly inside one chunk are summarised by their
 * owner; a block straddling chunks is built in two rounds: elementwise max
 * partials of (q, k) all-reduced over the ranks the block touches, then the
 * inner softmax's (max, sum, weighted v) partials merged by log-sum-exp.
 * Backward mirrors it: d(khat, vhat) summed at the block's ranks, the
 * inner-softmax gradient needs the merged log-sum-exp and the argmax rows
 * (ties split equally, across ranks too).
 * Note: RoPE does not change Combiner-Logsparse: its only direct slot is
 * the self slot, and rotating q_i and k_i by the same position keeps
 * q_i . k_i. */
#ifndef MPL_ATTN_COMBINER_H
#define MPL_ATTN_COMBINER_H

#include <stdint.h>

#include "../core/attn.h"
#include "../core/status.h"
#include "../dist/comm.h"

/* Geometry and options of one call (borrowed for the call). */
typedef struct mpl_attn_combiner_args {
    int64_t n_seq;         /* sequences in the batch */
    int64_t n_tok;         /* tokens of each sequence held here */
    int64_t pos0;          /* global position of token 0 */
    int64_t seq_len;       /* global L (>= pos0 + n_tok): last segment, Lambda */
    int n_head;            /* H */
    int head_dim;          /* d; logits are scaled by 1/sqrt(d) */
    int causal;            /* 1: causal, 0: bidirectional */
    double rope_theta;     /* > 0: rotate direct slots (d even) */
    int64_t segment;       /* s >= 1 (Combiner-Fixed only) */
    const uint8_t *mask;   /* (n_seq, n_tok) or NULL; 0 = padded token */
} mpl_attn_combiner_args;

/* Local. ceil(L / s): segments of Combiner-Fixed. */
int64_t mpl_attn_combiner_fixed_n_seg(const mpl_attn_combiner_args *a);
/* Local. Halo rows of a chunk: *n_lo before pos0, *n_hi after the chunk
 * (bidirectional only). */
void mpl_attn_combiner_fixed_halo(const mpl_attn_combiner_args *a, int64_t *n_lo,
                                  int64_t *n_hi);
/* Local. The segments [*m0, *m1) whose summaries the chunk owns. */
void mpl_attn_combiner_fixed_owned(const mpl_attn_combiner_args *a, int64_t *m0, int64_t *m1);
/* Local. Floats of `saved` (both kinds): the log-sum-exp of every row,
 * n_seq*H*n_tok, layout (n_seq, H, n_tok); -inf for a padded query. */
int64_t mpl_attn_combiner_saved_elems(const mpl_attn_combiner_args *a);
/* Local. Lambda = bit_length(L - 1) (0 for L <= 1). */
int mpl_attn_combiner_logsparse_levels(int64_t L);

#define MPL_REAL float
#define MPL_SUF(name) name##_f32
#include "combiner_decl.h"
#undef MPL_REAL
#undef MPL_SUF

#define MPL_REAL double
#define MPL_SUF(name) name##_f64
#include "combiner_decl.h"
#undef MPL_REAL
#undef MPL_SUF

/* Local. The "combiner_fixed" / "combiner_logsparse" implementations of
 * core/attn.h on the fp32 functions (one rank: pos0 must be 0, L = n_tok
 * of the call). cfg is copied; sp must be NULL (non-NULL: not wired yet,
 * MPL_ERR_UNSUPPORTED). Checks segment >= 1 (Fixed) with MPL_ERR_ARG.
 * Streaming (causal only): a cache of all rows of the stream (like a K/V
 * cache) plus every finished segment's / dyadic block's summary, computed
 * once when its last token arrives; a token costs O(s + L/s) (Fixed) and
 * amortised O(Lambda) summaries' worth of work (Logsparse). */
mpl_status mpl_attn_combiner_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp,
                                    mpl_attn *out);

#endif
