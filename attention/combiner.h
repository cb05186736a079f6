/* Combiner attention (Combiner-Fixed and Combiner-Logsparse) on CPU: the
 * public API of the numerics (two precisions from one template, fp32 for
 * training, fp64 for the finite-difference tests) and of the chunk-local
 * pieces the sequence-parallel code will call. Definitions:
 * /work/shared/ATTENTION.md, sections "Combiner" and "Numerics", except
 * for bidirectional Combiner-Logsparse, defined here:
 *
 * ---- Combiner-Logsparse, the blocks of a query ----
 * Levels l = 0..Lambda-1, Lambda = bit_length(L - 1); level-l blocks
 * B_{l,b} = [b 2^l, (b+1) 2^l) on one aligned grid from position 0, cut
 * at L. Query i has its self slot (q_i . k_i, value v_i) and
 *   past (both modes): for every bit l set in i, the left sibling
 *     B_{l, (i >> l) - 1} = [floor(i/2^(l+1)) 2^(l+1), floor(i/2^l) 2^l);
 *   future (bidirectional only): for every level l whose bit is clear in
 *     i, the right sibling B_{l, (i >> l) + 1} =
 *     [floor(i/2^(l+1)) 2^(l+1) + 2^l, (floor(i/2^(l+1)) + 1) 2^(l+1)),
 *     cut at L, and skipped when it starts at or after L.
 * The past blocks partition [0, i), the future ones (i, L): with the self
 * slot they partition [0, L). One softmax over the <= Lambda + 1 slots.
 * Past blocks have even b, future blocks odd b, so no block serves both
 * directions; a block's summary (max-pooled q and k, inner-softmax v over
 * its real tokens) is the same object whoever reads it. The blocks do not
 * depend on L except through the cut: a sequence padded at the end keeps
 * every block of its real queries (the padded keys are masked inside the
 * summaries; a block of padding only has no slot, and the levels added by
 * a longer L only have future blocks that start at or after the real
 * length). When L is a power of two the future blocks are exactly the past
 * blocks of L-1-i on the reversed sequence (ATTENTION.md's earlier
 * mirrored form, which anchored them at L and so moved them with padding).
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
 * ---- Combiner-Logsparse, chunk-local API ----
 * A query's blocks either lie inside its chunk [pos0, pos0 + n_tok)
 * ("local": summarised by the chunk) or start before pos0 (past) or end
 * after the chunk (future, bidirectional): the chunk's CONTEXT blocks, at
 * most one per direction and level
 * (mpl_attn_combiner_logsparse_ctx_block). A context block may span many
 * chunks, this one included. A plan (mpl_attn_combiner_logsparse_plan_*)
 * numbers the distinct context blocks of all chunks of a group ("slots");
 * every chunk assembles every slot's summary from the pieces the chunks
 * hold, in rounds the caller combines over the group (max or sum):
 *   forward  MAXIMA (max)  partial elementwise max of q and k, present flag
 *            LOGIT  (max)  partial max of the inner logits q-hat . k_t
 *            SUMS   (sum)  partial sum exp and sum exp * v, at the global
 *                          max: a log-sum-exp merge; v-hat = U / S
 *   backward (chunk_backward adds the users' d(k-hat, v-hat) of the slots)
 *            TIES   (sum)  counts of rows equal to q-hat / k-hat per
 *                          channel (combined with d(k-hat, v-hat))
 *            A      (sum)  partial sum_t a_t (dv-hat . v_t)
 *            DQ     (sum)  partial d(q-hat); adds dk, dv of the rows
 *            POOL   (-)    the max-pool gradients to the argmax rows, split
 *                          equally among ties across all chunks: the same
 *                          rule as one rank.
 * Phases per chunk, forward: pieces MAXIMA, chunk_summarize (the local
 * blocks; needs no other chunk, so it can run while MAXIMA travels),
 * pieces LOGIT, SUMS, chunk_forward. Backward: chunk_summarize again,
 * chunk_backward (local-block gradients kept in the context), pieces TIES,
 * chunk_backward_local (can run while the TIES round travels), pieces A,
 * DQ, POOL. One rank: a plan with no slot, which is what
 * mpl_attn_combiner_logsparse_forward_* does.
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
/* Local. The context block of chunk [a, e) of a sequence of length L in
 * direction dir (0: the past block its queries use that starts before a;
 * 1: the future block that ends after e) at level `level`: returns 1 and
 * its global span [*t0, *t1) (cut at L), or 0 when the chunk needs none
 * there. */
int mpl_attn_combiner_logsparse_ctx_block(int64_t L, int64_t a, int64_t e, int dir, int level,
                                          int64_t *t0, int64_t *t1);

/* The distinct context blocks of chunks [pos[p], pos[p+1]) of one group. */
typedef struct mpl_attn_combiner_logsparse_plan {
    int n_lev;      /* Lambda */
    int n_chunk;
    int64_t n_slot; /* distinct context blocks; <= (n_chunk - 1) * Lambda per direction */
    int64_t *span;  /* (n_slot, 2): global [t0, t1), by (direction, level, first user) */
    int64_t *use;   /* (n_chunk, 2, n_lev): the slot chunk p reads at (dir, level), or -1 */
} mpl_attn_combiner_logsparse_plan;
/* Local. pos: n_chunk + 1 increasing positions from 0 to L (chunks may be
 * empty only when L = 0). causal = 0 adds the future direction. */
mpl_status mpl_attn_combiner_logsparse_plan_create(int64_t L, int causal, int n_chunk,
                                                   const int64_t *pos,
                                                   mpl_attn_combiner_logsparse_plan **out);
/* Local. Frees; *p = NULL; NULL is a no-op. */
void mpl_attn_combiner_logsparse_plan_destroy(mpl_attn_combiner_logsparse_plan **p);

/* Widths (per sequence and slot, in reals) of the per-slot statistics of
 * the rounds (combiner.h, top), each laid out (n_seq, n_slot, width):
 *   fmax: q-hat (H*d) | k-hat (H*d) | present (1)
 *   flog: max logit (H)
 *   fsum: per head (sum exp, sum exp * v (d))  = H*(d+1)
 *   bsum: dk-hat (H*d) | dv-hat (H*d) | q ties (H*d) | k ties (H*d)
 *   ba:   A (H)
 *   bdq:  d q-hat (H*d) */
typedef struct mpl_attn_combiner_logsparse_widths {
    int64_t fmax, flog, fsum, bsum, ba, bdq;
} mpl_attn_combiner_logsparse_widths;
/* Local. */
mpl_attn_combiner_logsparse_widths mpl_attn_combiner_logsparse_widths_of(
    const mpl_attn_combiner_args *a);
/* Local. The local blocks of chunk [a, e) in direction dir at `level`:
 * the block indices *b_lo, *b_lo + 2, ... (*n of them) of the blocks
 * [b 2^l, min((b+1) 2^l, L)) that lie inside the chunk and are used by
 * one of its queries in that direction. Past blocks are even (query i
 * uses (i >> l) - 1 when bit l of i is set), future blocks odd (query i
 * uses (i >> l) + 1 when bit l is clear). */
void mpl_attn_combiner_logsparse_local(int64_t L, int64_t a, int64_t e, int dir, int level,
                                       int64_t *b_lo, int64_t *n);
/* Local. Rows of the summary table of each (sequence, head) of a chunk:
 * its local blocks, then 2 * Lambda context entries. */
int64_t mpl_attn_combiner_logsparse_n_tab(const mpl_attn_combiner_args *a);

/* The rounds of the pieces of context blocks (combiner.h, top). */
typedef enum mpl_attn_ls_phase {
    MPL_ATTN_LS_MAXIMA = 0,
    MPL_ATTN_LS_LOGIT,
    MPL_ATTN_LS_SUMS,
    MPL_ATTN_LS_TIES,
    MPL_ATTN_LS_A,
    MPL_ATTN_LS_DQ,
    MPL_ATTN_LS_POOL
} mpl_attn_ls_phase;

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
 * core/attn.h on the fp32 functions. sp NULL: one rank, pos0 must be 0 and
 * L = n_tok of the call; otherwise the sequence of length cfg->seq_len is
 * split over sp (combiner_dist.h; sp is borrowed and must outlive the
 * instance). cfg is copied. Checks segment >= 1 (Fixed) with MPL_ERR_ARG.
 * Streaming (causal only): a cache of all rows of the stream (like a K/V
 * cache) plus every finished segment's / dyadic block's summary, computed
 * once when its last token arrives; a token costs O(s + L/s) (Fixed) and
 * amortised O(Lambda) summaries' worth of work (Logsparse). */
mpl_status mpl_attn_combiner_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp,
                                    mpl_attn *out);

#endif
