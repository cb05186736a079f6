/* The closed forms of the bytes one rank sends per attention layer when a
 * sequence is split over P ranks (ATTENTION.md, "Distributed"), by kind of
 * exchange. One place for them: `bench comm` checks the measured bytes
 * against them at the ranks it runs on, and `bench comm --model` uses them
 * at the P it cannot run (4096 GPUs). Also the same quantities for the two
 * peers the model compares against, Ring Attention and Ulysses, which
 * multipole does not implement. All sizes are of 4-byte floats. */
#ifndef MPL_COMM_BYTES_H
#define MPL_COMM_BYTES_H

#include <stdint.h>

#include "core/attn.h"
#include "dist/comm.h"

/* Local. Bytes an interior rank (one whose chunk holds the whole halo)
 * sends in one forward and one backward of attention a (kind fmm,
 * combiner_fixed or combiner_logsparse; a->segment resolved for L) over P
 * ranks, filed under the kind of exchange that dist/comm counts them as:
 * halo rows p2p (counted at the sender), the FMM far field scan (causal)
 * or allreduce, Combiner summaries allreduce (each rank fills its own
 * segments of the whole buffer), Logsparse allreduce. *n_ctx receives
 * Logsparse's crossing blocks (0 for the others, -1 when the count failed
 * for lack of memory). */
void mpl_comm_bytes_formula(const mpl_attn_cfg *a, int64_t L, int P, mpl_comm_bytes *fwd,
                            mpl_comm_bytes *bwd, int64_t *n_ctx);

/* Local. The sum over kinds. */
int64_t mpl_comm_bytes_total(const mpl_comm_bytes *b);

/* Local. Ring Attention (all of K and V around the ring) with chunks of C
 * tokens of n_seq sequences, H heads of d: per hop, the bytes a rank sends
 * forward (its current K, V block: 2 C H d floats) and backward (K, V and
 * the accumulating dK, dV: 4 C H d); there are P - 1 hops each way. */
void mpl_comm_bytes_ring_hop(int64_t C, int64_t n_seq, int H, int d, int64_t *fwd,
                             int64_t *bwd);

/* Local. Ulysses (DeepSpeed-Ulysses: all-to-all from sequence to head
 * sharding and back): the bytes a rank holds for the all-to-alls of one
 * layer, of which it sends (P - 1) / P. Forward: q, k, v in (3 C H d) and
 * the output back (C H d); backward: dout in and dq, dk, dv back, the
 * same 4 C H d. Needs P <= H (and H % P == 0) to shard the heads. */
int64_t mpl_comm_bytes_ulysses(int64_t C, int64_t n_seq, int H, int d);

#endif
