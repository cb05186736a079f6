/* The communicator interface. Model, attention and io code call mpl_comm_*,
 * never MPI directly, so a second backend (NCCL) can sit behind the same
 * calls. This backend: MPI on host buffers. Sizes are int64_t element
 * counts; calls larger than INT_MAX elements are split (the environment
 * variable MPL_COMM_MAX_COUNT lowers that limit, so tests can run the
 * split paths on small buffers). */
#ifndef MPL_COMM_H
#define MPL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

typedef struct mpl_comm mpl_comm;

/* Collective on MPI_COMM_WORLD: duplicate the world communicator.
 * MPI must be initialised. */
mpl_status mpl_comm_create_world(mpl_comm **out);
/* Collective on parent: ranks with equal color form a new communicator,
 * ordered by key. */
mpl_status mpl_comm_split(mpl_comm *parent, int color, int key, mpl_comm **out);
/* Collective on c: frees it; *c = NULL; NULL is a no-op. */
void mpl_comm_destroy(mpl_comm **c);

/* Collective on c: *n = the number of ranks of c that share this node's
 * memory. */
mpl_status mpl_comm_node_size(mpl_comm *c, int *n);
/* Collective on c: this rank's index among the ranks of c on its node
 * (ordered by their rank in c), and their number: what picks a GPU. */
mpl_status mpl_comm_node_rank(mpl_comm *c, int *rank, int *n);

/* Local. */
int mpl_comm_rank(const mpl_comm *c);
int mpl_comm_size(const mpl_comm *c);
/* Local. The underlying MPI_Comm, as a pointer to it (for parallel HDF5). */
void *mpl_comm_mpi_handle(mpl_comm *c);

/* Collective on c: same n on all ranks. In-place sum. */
mpl_status mpl_comm_allreduce_sum_f32(mpl_comm *c, float *buf, int64_t n_elems);
/* Collective on c: same n on all ranks. In-place sum. */
mpl_status mpl_comm_allreduce_sum_f64(mpl_comm *c, double *buf, int64_t n_elems);
/* Collective on c: same n on all ranks. In-place max. */
mpl_status mpl_comm_allreduce_max_i64(mpl_comm *c, int64_t *buf, int64_t n_elems);
/* Collective on c: same n on all ranks. In-place sum modulo 2^64 (exact in
 * any order: what adds up checksums computed on different ranks). */
mpl_status mpl_comm_allreduce_sum_u64(mpl_comm *c, uint64_t *buf, int64_t n_elems);
/* Collective on c: same n on all ranks. In-place max (exact in any order). */
mpl_status mpl_comm_allreduce_max_f32(mpl_comm *c, float *buf, int64_t n_elems);
/* Collective on c: same n_bytes and root on all ranks. */
mpl_status mpl_comm_bcast(mpl_comm *c, void *buf, size_t n_bytes, int root);
/* Collective on c. */
mpl_status mpl_comm_barrier(mpl_comm *c);
/* Collective on c: a barrier that waits by polling and sleeping (about
 * 0.2 ms) instead of spinning, for ranks that wait long on one that works
 * (a rank-0 write) and may share its cores. */
mpl_status mpl_comm_barrier_idle(mpl_comm *c);

/* Collective on c: exclusive prefix sum over ranks in rank order: rank p
 * receives the sum of the buffers of ranks 0..p-1 (rank 0: zeros). With
 * reverse = 1 the order is reversed (a suffix sum: ranks p+1..P-1), which
 * is the backward of the forward scan. In place; same n on all ranks. */
mpl_status mpl_comm_exscan_sum_f32(mpl_comm *c, float *buf, int64_t n_elems, int reverse);
/* Collective on c: every rank contributes n_elems floats; out receives
 * size * n_elems floats in rank order. */
mpl_status mpl_comm_allgather_f32(mpl_comm *c, const float *in, int64_t n_elems, float *out);

/* Blocks of a slab split over the ranks of c: block r is counts[r] floats
 * starting at counts[0] + ... + counts[r-1] (counts equal on all ranks,
 * each at most INT_MAX). */
/* Collective on c: buf (the whole slab) is summed over the ranks and rank
 * r receives the sum of its block r, in place in buf (the rest of buf is
 * left undefined). */
mpl_status mpl_comm_reduce_scatter_sum_f32(mpl_comm *c, float *buf, const int64_t *counts);
/* Collective on c: every rank's block r of buf is copied into the others'
 * buf (in place). Blocks of any size (beyond MPI's int counts the blocks
 * are broadcast one by one). */
mpl_status mpl_comm_allgatherv_f32(mpl_comm *c, float *buf, const int64_t *counts);

/* Collective on c: rank r contributes n_elems floats (may differ by rank);
 * root receives them in rank order into out (root only; NULL elsewhere),
 * the total fitting INT_MAX elements. */
mpl_status mpl_comm_gatherv_f32(mpl_comm *c, const float *in, int64_t n_elems, float *out,
                                int root);

/* Nonblocking point-to-point of float rows. A request set collects posted
 * operations; waitall completes them all. */
typedef struct mpl_comm_reqs mpl_comm_reqs;
/* Local. */
mpl_status mpl_comm_reqs_create(mpl_comm_reqs **out);
void mpl_comm_reqs_destroy(mpl_comm_reqs **r);
/* Point-to-point on c (the peer posts the matching call, same tag, n). */
mpl_status mpl_comm_isend_f32(mpl_comm *c, const float *buf, int64_t n_elems, int peer, int tag,
                              mpl_comm_reqs *r);
mpl_status mpl_comm_irecv_f32(mpl_comm *c, float *buf, int64_t n_elems, int peer, int tag,
                              mpl_comm_reqs *r);
/* Local: wait for every request of r; r is empty afterwards. */
mpl_status mpl_comm_waitall(mpl_comm_reqs *r);
/* Local: let the requests of r advance without waiting (MPI moves a
 * nonblocking collective along only inside MPI calls); they stay in r. */
mpl_status mpl_comm_progress(mpl_comm_reqs *r);

/* Reductions of the nonblocking all-reduce. */
typedef enum mpl_comm_op { MPL_COMM_OP_SUM = 0, MPL_COMM_OP_MAX } mpl_comm_op;
/* Collective on c (same n, op and posting order on all ranks): post an
 * in-place all-reduce into r and return; buf must not be touched until
 * mpl_comm_waitall(r), and r must be waited for (not destroyed) even on an
 * error path: MPI forbids freeing an active collective request. A sum may
 * associate differently from the blocking call's, but the same layout
 * always gives the same bits (the algorithm depends on sizes only). */
mpl_status mpl_comm_iallreduce_f32(mpl_comm *c, float *buf, int64_t n_elems, mpl_comm_op op,
                                   mpl_comm_reqs *r);

/* Bytes this rank has sent through c since creation or the last reset, by
 * kind: the logical payload (what the rank contributes), so the numbers
 * can be checked against the formulas of ATTENTION.md. Local. */
typedef struct mpl_comm_bytes {
    int64_t p2p, allreduce, scan, allgather, bcast;
} mpl_comm_bytes;
void mpl_comm_bytes_get(const mpl_comm *c, mpl_comm_bytes *out);
void mpl_comm_bytes_reset(mpl_comm *c);

/* Collective on c: agree on failure before exchanging data. Every rank
 * passes its local status; afterwards all ranks hold the worst one. A rank
 * that was fine but learns of a failure elsewhere gets that status with the
 * message "rank R failed (CODE)", so all ranks exit with the same code; only
 * the lowest failing rank keeps its own message as the cause (a failure all
 * ranks hit alike is reported once). Returns *st. */
mpl_status mpl_comm_agree(mpl_comm *c, mpl_status *st);
/* Collective on c: the same agreement, for a failure about something all
 * ranks share (a file each read part of): rank 0 carries the lowest
 * failing rank's message as the cause, whichever rank found it, and every
 * other rank holds "rank 0 failed (CODE)", so the cause is reported once
 * and by the rank that reports. Returns *st. */
mpl_status mpl_comm_agree_root(mpl_comm *c, mpl_status *st);

#endif
