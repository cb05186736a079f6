/* FMM attention over a sequence split across the ranks of an SP group: the
 * chunk functions of fmm.h plus the exchanges of ATTENTION.md
 * ("Distributed"): the near-field halo of w-1 K/V rows before (and,
 * bidirectional, after) each chunk, the far-field statistics combined by an
 * exclusive prefix scan (causal) or an all-reduce (bidirectional), and
 * mirrored in backward (halo gradients returned to their owners, a reverse
 * scan or all-reduce of the statistics' gradients). Per rank and layer this
 * moves O(w*H*d + H*r*d^2) floats, independent of the sequence length.
 *
 * sp may be NULL: one rank, the same arithmetic without messages. The
 * chunk of rank p must be mpl_grid_chunk(seq_len, |sp|, p). */
#ifndef MPL_ATTN_FMM_DIST_H
#define MPL_ATTN_FMM_DIST_H

#include "../dist/comm.h"
#include "fmm.h"

/* Local. Floats the forward saves for the backward: the kernel's own saved
 * values, then the context it used (halo rows, their padding as floats,
 * the incoming statistics), so the backward sees the same context. */
int64_t mpl_attn_fmm_dist_saved_elems(const mpl_attn_fmm_args *a, const mpl_comm *sp);

/* Collective on sp (same a except the chunk, same call order on all
 * ranks). out (n_seq, n_tok, H*d) overwritten. */
mpl_status mpl_attn_fmm_dist_forward(mpl_comm *sp, const mpl_attn_fmm_args *a,
                                     mpl_attn_fmm_blend_f32 bl, const float *qkv, float *out,
                                     float *saved);

/* Collective on sp. Accumulates into dqkv (this chunk's rows, including the
 * gradients other ranks computed for its rows as their halo) and dbl. */
mpl_status mpl_attn_fmm_dist_backward(mpl_comm *sp, const mpl_attn_fmm_args *a,
                                      mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                      const float *saved, const float *dout, float *dqkv,
                                      mpl_attn_fmm_dblend_f32 dbl);

#endif
