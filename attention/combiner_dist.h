/* Combiner attention over a sequence split across the ranks of an SP
 * group (ATTENTION.md, "Distributed").
 *
 * Combiner-Fixed (combiner_dist.c): the rows of the segment that straddles a
 * chunk's start (and, bidirectional, its end) arrive as a halo of at most
 * s-1 rows of Q, K, V; every segment's summary is computed by the rank
 * holding its last token and all summaries are combined over the group;
 * backward returns halo gradients to their owners and sums every summary's
 * gradient at its owner. Per rank and layer this moves
 * O(L/s * H*d + s * H*d) floats: with s = sqrt(L), O(sqrt(L)) instead of
 * the O(L) of moving K and V. The halo and the summaries travel while the
 * summaries inside the chunk and the direct slots are computed.
 *
 * Combiner-Logsparse (combiner_logsparse_dist.c): no rows move; the
 * summaries of the dyadic blocks that cross chunk borders are combined
 * from every chunk's partial statistics (combiner.h, top): per rank and
 * layer 4 n_slot (3Hd + 2H + 1) bytes forward and 4 n_slot (5Hd + H)
 * backward, n_slot <= (P-1) Lambda causal, twice that bidirectional:
 * O(P log L H d).
 *
 * sp may be NULL (one rank). The chunk of rank p must be
 * mpl_grid_chunk(seq_len, |sp|, p). */
#ifndef MPL_ATTN_COMBINER_DIST_H
#define MPL_ATTN_COMBINER_DIST_H

#include "../dist/comm.h"
#include "combiner.h"

/* Local. Floats the forward saves for the backward (the kernel's values,
 * the halo it used, the gathered summaries). */
int64_t mpl_attn_combiner_dist_saved_elems(const mpl_attn_combiner_args *a, const mpl_comm *sp);

/* Local. Bytes the forward or the backward allocates for itself at most,
 * for memory plans. */
int64_t mpl_attn_combiner_dist_work_bytes(const mpl_attn_combiner_args *a, const mpl_comm *sp);

/* Collective on sp. out (n_seq, n_tok, H*d) overwritten. */
mpl_status mpl_attn_combiner_dist_forward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                          const float *qkv, float *out, float *saved);

/* Collective on sp. Accumulates into dqkv (this chunk's rows, with the
 * gradients other ranks computed for them). */
mpl_status mpl_attn_combiner_dist_backward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                           const float *qkv, const float *saved,
                                           const float *dout, float *dqkv);

/* The same four for Combiner-Logsparse. */
int64_t mpl_attn_combiner_logsparse_dist_saved_elems(const mpl_attn_combiner_args *a,
                                                     const mpl_comm *sp);
/* Local. */
int64_t mpl_attn_combiner_logsparse_dist_work_bytes(const mpl_attn_combiner_args *a,
                                                    const mpl_comm *sp);
/* Collective on sp. */
mpl_status mpl_attn_combiner_logsparse_dist_forward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                                    const float *qkv, float *out, float *saved);
/* Collective on sp. */
mpl_status mpl_attn_combiner_logsparse_dist_backward(mpl_comm *sp,
                                                     const mpl_attn_combiner_args *a,
                                                     const float *qkv, const float *saved,
                                                     const float *dout, float *dqkv);

#endif
