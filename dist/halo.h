/* Halos: the rows of a chunked sequence that a rank needs from other ranks.
 * Rank p of an SP group holds rows [a_p, b_p) of every sequence; it may need
 * the n_before rows preceding a_p and the n_after rows following b_p. When
 * chunks are shorter than the halo those rows come from several ranks. The
 * plan is computed locally from (L, sp, rank), so no negotiation is needed;
 * the exchange posts nonblocking sends and receives, and the return path
 * (backward) sends halo gradients to their owners, which add them.
 * dist/ knows rows of floats, not what they mean. */
#ifndef MPL_HALO_H
#define MPL_HALO_H

#include <stdint.h>

#include "comm.h"

typedef struct mpl_halo_plan mpl_halo_plan;

/* Local. Plan for rank `rank` of `sp` ranks over L rows: the halo before
 * is rows [max(0, a - n_before), a), the halo after [b, min(L, b + n_after)). */
mpl_status mpl_halo_plan_create(int64_t L, int sp, int rank, int64_t n_before, int64_t n_after,
                                mpl_halo_plan **out);
void mpl_halo_plan_destroy(mpl_halo_plan **p);
/* Local. Rows in this rank's halo before / after its chunk. */
int64_t mpl_halo_plan_n_pre(const mpl_halo_plan *p);
int64_t mpl_halo_plan_n_post(const mpl_halo_plan *p);

/* Rows are (n_seq, n_rows, row_stride) floats of which `width` consecutive
 * columns starting at the given pointer move; halo buffers are packed
 * (n_seq, n_pre or n_post, width). */

/* Collective on sp (same plan parameters, n_seq, width on all ranks):
 * fill pre and post (either may be NULL when its size is 0) with the rows
 * of other ranks. Returns after all messages completed. */
mpl_status mpl_halo_exchange(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                             int64_t width, const float *rows, int64_t row_stride, float *pre,
                             float *post);
/* The same in two halves, so local work can run while rows travel:
 * begin posts every receive and send and returns; end waits, unpacks into
 * pre/post and frees *x (*x = NULL). Between them rows, pre and post must
 * not be touched. Collective on sp like exchange (begin and end in the same
 * order on all ranks). */
typedef struct mpl_halo_xfer mpl_halo_xfer;
mpl_status mpl_halo_exchange_begin(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                   int64_t width, const float *rows, int64_t row_stride,
                                   float *pre, float *post, mpl_halo_xfer **x);
mpl_status mpl_halo_exchange_end(mpl_halo_xfer **x);

/* Collective on sp: the backward of exchange. dpre/dpost (packed as above)
 * go back to the ranks that own those rows, which add them into drows
 * (strided as rows) in a fixed order (deterministic). */
mpl_status mpl_halo_return(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq, int64_t width,
                           const float *dpre, const float *dpost, float *drows,
                           int64_t row_stride);

/* The return in two halves, like the exchange: begin posts every message
 * (dpre/dpost are packed at once and may be reused), end waits and adds
 * into drows in the fixed plan order; *x = NULL. drows is written only by
 * end, so the caller may accumulate into it in between. Collective on sp
 * like return. */
mpl_status mpl_halo_return_begin(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                 int64_t width, const float *dpre, const float *dpost,
                                 float *drows, int64_t row_stride, mpl_halo_xfer **x);
mpl_status mpl_halo_return_end(mpl_halo_xfer **x);

/* Edge buffers, for a caller that walks its chunk in pieces and never
 * holds it whole. The rows of this rank's chunk that other ranks' halos
 * use lie within its first n_head = min(n_tok, n_after) rows and its last
 * n_tail = min(n_tok, n_before) rows. An edge buffer holds only those,
 * packed (n_seq, n_edge, width): rows [0, n_head) then
 * [n_tok - n_tail, n_tok) when n_head + n_tail < n_tok (n_edge =
 * n_head + n_tail), otherwise the whole chunk (n_edge = n_tok). Local. */
int64_t mpl_halo_plan_n_edge(const mpl_halo_plan *p);
/* Local. The edge-buffer row of chunk row r, or -1 when r is no edge row. */
int64_t mpl_halo_plan_edge_row(const mpl_halo_plan *p, int64_t r);
/* As mpl_halo_exchange_begin, with the rows to send read from an edge
 * buffer. Collective on sp; finish with mpl_halo_exchange_end. */
mpl_status mpl_halo_exchange_begin_edges(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                         int64_t width, const float *edges, float *pre,
                                         float *post, mpl_halo_xfer **x);
/* As mpl_halo_return_begin, with the returned gradients added into an edge
 * buffer dedges at mpl_halo_return_end. Collective on sp. */
mpl_status mpl_halo_return_begin_edges(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                       int64_t width, const float *dpre, const float *dpost,
                                       float *dedges, mpl_halo_xfer **x);

#endif
