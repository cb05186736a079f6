/* FMM attention evaluated piece by piece (core/attn.h, "Piecewise
 * evaluation"): the chunk functions of fmm.h on one piece at a time, with
 * everything a piece needs from outside itself kept in a per-layer state:
 *   - for each piece, the K/V rows of its near-field halo (from the pieces
 *     before and, bidirectional, after it, or from the neighbouring ranks)
 *     and its incoming far-field statistics (causal: the exclusive prefix
 *     over everything before the piece; bidirectional: the total);
 *   - in backward, the gradients pieces owe each other: the halo rows'
 *     gradients (added to the earlier piece when it is processed, or, for
 *     rows already processed, handed back at the end) and the statistics'
 *     gradients (a running suffix sum over the pieces after, then over the
 *     ranks after).
 * Causal on one rank this needs one pass in each direction; with more ranks
 * (or bidirectional) the forward first reads every piece's k, v for the
 * statistics and the halo edges (pass A), and the backward ends with a
 * second pass over every piece that adds what other ranks and later pieces
 * returned (the deferred gradients). Per-rank messages are those of
 * fmm_dist.h: w-1 rows each way and one scan of H*r*(d^2+d) floats. */
#ifndef MPL_ATTN_FMM_PIECES_H
#define MPL_ATTN_FMM_PIECES_H

#include "../core/attn.h"
#include "../dist/comm.h"
#include "fmm.h"

/* Local. Floats of the per-layer state (see mpl_attn_piece_ops). */
int64_t mpl_attn_fmm_pieces_state_elems(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                        const mpl_attn_geom *g, int64_t piece_rows);
/* Local. Bytes the calls below allocate for themselves, at most. */
int64_t mpl_attn_fmm_pieces_work_bytes(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                       const mpl_attn_geom *g, int64_t piece_rows);
/* Local. 1 when backward_end calls rows->add_dqkv: more than one rank or
 * bidirectional. */
int mpl_attn_fmm_pieces_deferred(const mpl_attn_cfg *cfg, const mpl_comm *sp);

/* Collective on sp (NULL: one rank). */
mpl_status mpl_attn_fmm_pieces_forward_begin(const mpl_attn_cfg *cfg, mpl_comm *sp,
                                             const mpl_attn_pieces *pc);
/* Local. */
mpl_status mpl_attn_fmm_pieces_forward(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                       const mpl_attn_pieces *pc, const mpl_attn_piece *p,
                                       int replay, mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                       float *out, float *saved);
/* Local. */
mpl_status mpl_attn_fmm_pieces_backward_begin(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                              const mpl_attn_pieces *pc);
/* Local. */
mpl_status mpl_attn_fmm_pieces_backward(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                        const mpl_attn_pieces *pc, const mpl_attn_piece *p,
                                        mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                        const float *saved, const float *dout, float *dqkv,
                                        mpl_attn_fmm_dblend_f32 dbl);
/* Collective on sp. */
mpl_status mpl_attn_fmm_pieces_backward_end(const mpl_attn_cfg *cfg, mpl_comm *sp,
                                            const mpl_attn_pieces *pc);

#endif
