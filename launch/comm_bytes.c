/* Closed forms of the bytes per attention layer and rank (comm_bytes.h). */
#include "comm_bytes.h"

#include <stdlib.h>

#include "dist/grid.h"

/* Combiner-Logsparse: the distinct dyadic blocks that some rank's queries
 * use and that reach outside its chunk (past blocks before it;
 * bidirectional also future blocks after it), counted by enumerating every
 * query's blocks as attention/combiner.h defines them (left siblings for
 * the set bits of i, right siblings cut at L for the clear ones),
 * independently of the attention's own plan. */
static int64_t logsparse_ctx_blocks(int64_t L, int P, int causal)
{
    int64_t n = 0, *seen = malloc((size_t)P * sizeof *seen);
    if (!seen) return -1;
    for (int dir = 0; dir < (causal ? 1 : 2); dir++)
        for (int l = 0; ((L - 1) >> l) > 0; l++) {
            int n_seen = 0; /* starts of this level's blocks already counted */
            for (int p = 0; p < P; p++) {
                int64_t a, e;
                mpl_grid_chunk(L, P, p, &a, &e);
                for (int64_t i = a; i < e; i++) {
                    if (((i >> l) & 1) != !dir) continue;
                    const int64_t p0 = (i >> (l + 1)) << (l + 1), half = (int64_t)1 << l;
                    const int64_t t0 = dir ? p0 + half : p0;
                    const int64_t t1 = dir ? (p0 + 2 * half < L ? p0 + 2 * half : L) : p0 + half;
                    if (t0 >= L || (t0 >= a && t1 <= e)) continue; /* none, or inside */
                    int k = 0;
                    while (k < n_seen && seen[k] != t0) k++;
                    if (k < n_seen) continue;
                    if (n_seen == P) { /* more than one per rank: cannot be, says the plan */
                        free(seen);
                        return -1;
                    }
                    seen[n_seen++] = t0, n++;
                }
            }
        }
    free(seen);
    return n;
}

void mpl_comm_bytes_formula(const mpl_attn_cfg *a, int64_t L, int P, mpl_comm_bytes *fwd,
                            mpl_comm_bytes *bwd, int64_t *n_ctx)
{
    const int64_t H = a->n_head, d = a->head_dim, HD = H * d;
    *fwd = (mpl_comm_bytes){0};
    *bwd = (mpl_comm_bytes){0};
    *n_ctx = 0;
    if (a->kind == MPL_ATTN_KIND_COMBINER_LOGSPARSE) {
        *n_ctx = logsparse_ctx_blocks(L, P, a->causal);
        fwd->allreduce = 4 * *n_ctx * (3 * HD + 2 * H + 1);
        bwd->allreduce = 4 * *n_ctx * (5 * HD + H);
    } else if (a->kind == MPL_ATTN_KIND_FMM) {
        const int64_t halo = 4 * (a->causal ? 2 : 4) * (a->band - 1) * HD;
        const int64_t far = 4 * H * a->fmm_n_maps * (d * d + d);
        fwd->p2p = bwd->p2p = halo;
        if (a->causal) fwd->scan = bwd->scan = far;
        else fwd->allreduce = bwd->allreduce = far;
    } else {
        const int64_t s = a->segment, n_seg = (L + s - 1) / s, k = a->causal ? 1 : 2;
        fwd->p2p = 4 * k * (s - 1) * (3 * HD + 1);
        fwd->allreduce = 4 * n_seg * (2 * HD + 1);
        bwd->p2p = 4 * k * (s - 1) * 3 * HD;
        bwd->allreduce = 4 * 2 * n_seg * HD;
    }
}

int64_t mpl_comm_bytes_total(const mpl_comm_bytes *b)
{
    return b->p2p + b->allreduce + b->scan + b->allgather + b->bcast;
}

void mpl_comm_bytes_ring_hop(int64_t C, int64_t n_seq, int H, int d, int64_t *fwd, int64_t *bwd)
{
    *fwd = 4 * 2 * n_seq * C * H * d;
    *bwd = 4 * 4 * n_seq * C * H * d;
}

int64_t mpl_comm_bytes_ulysses(int64_t C, int64_t n_seq, int H, int d)
{
    return 4 * 4 * n_seq * C * H * d;
}
