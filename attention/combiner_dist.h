/* Combiner-Fixed over a sequence split across the ranks of an SP group
 * (ATTENTION.md, "Distributed"): the rows of the segment that straddles a
 * chunk's start (and, bidirectional, its end) arrive as a halo of at most
 * s-1 rows of Q, K, V; every segment's summary is computed by the rank
 * holding its last token and all summaries are combined over the group;
 * backward returns halo gradients to their owners and sums every summary's
 * gradient at its owner. Per rank and layer this moves
 * O(L/s * H*d + s * H*d) floats: with s = sqrt(L), O(sqrt(L)) instead of
 * the O(L) of moving K and V.
 *
 * The chunk of rank p must be mpl_grid_chunk(seq_len, |sp|, p). */
#ifndef MPL_ATTN_COMBINER_DIST_H
#define MPL_ATTN_COMBINER_DIST_H

#include "../dist/comm.h"
#include "combiner.h"

/* Local. Floats the forward saves for the backward (the kernel's values,
 * the halo it used, the gathered summaries). */
int64_t mpl_attn_combiner_dist_saved_elems(const mpl_attn_combiner_args *a, const mpl_comm *sp);

/* Collective on sp. out (n_seq, n_tok, H*d) overwritten. */
mpl_status mpl_attn_combiner_dist_forward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                          const float *qkv, float *out, float *saved);

/* Collective on sp. Accumulates into dqkv (this chunk's rows, with the
 * gradients other ranks computed for them). */
mpl_status mpl_attn_combiner_dist_backward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                           const float *qkv, const float *saved,
                                           const float *dout, float *dqkv);

#endif
