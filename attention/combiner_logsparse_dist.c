/* Combiner-Logsparse across an SP group (combiner_dist.h). No rows move:
 * every chunk computes the summaries of its local blocks itself, and the
 * plan's context blocks (the <= Lambda per direction that some chunk's
 * queries need from before or after it) are assembled from per-chunk
 * partial statistics combined by all-reduces, three rounds forward
 * (maxima, max logit, log-sum-exp sums) and three backward (summary
 * gradients with the tie counts, A, d q-hat), each over n_slot <= (P-1)
 * Lambda slots per direction: O(P log L H d) floats per rank and layer.
 * The first round of each pass is posted before the local work that does
 * not need it (forward: the local summaries; backward: their gradients)
 * and waited for only where the next round needs it. Max is exact in any
 * order; the sums are fixed by the layout, so results are deterministic. */
#include <stdlib.h>
#include <string.h>

#include "../dist/grid.h"
#include "combiner_dist.h"

static int comm_size(const mpl_comm *sp) { return sp ? mpl_comm_size(sp) : 1; }
static int comm_rank(const mpl_comm *sp) { return sp ? mpl_comm_rank(sp) : 0; }

/* The plan of the group; checks that the call holds this rank's chunk. */
static mpl_status plan_of(const mpl_attn_combiner_args *a, const mpl_comm *sp,
                          mpl_attn_combiner_logsparse_plan **plan)
{
    const int P = comm_size(sp), p = comm_rank(sp);
    int64_t *pos = malloc((size_t)(P + 1) * sizeof *pos);
    if (!pos) return mpl_err(MPL_ERR_NOMEM, "out of memory for %d chunk bounds", P);
    for (int q = 0; q < P; q++) mpl_grid_chunk(a->seq_len, P, q, &pos[q], &pos[q + 1]);
    mpl_status st = MPL_OK;
    if (a->pos0 != pos[p] || a->pos0 + a->n_tok != pos[p + 1])
        st = mpl_err(MPL_ERR_ARG, "combiner_logsparse: rank %d of %d holds [%lld, %lld), the "
                     "split of L=%lld gives [%lld, %lld)", p, P, (long long)a->pos0,
                     (long long)(a->pos0 + a->n_tok), (long long)a->seq_len,
                     (long long)pos[p], (long long)pos[p + 1]);
    else
        st = mpl_attn_combiner_logsparse_plan_create(a->seq_len, a->causal, P, pos, plan);
    free(pos);
    return st;
}

/* Offsets into saved: the kernel's log-sum-exp, then the combined forward
 * statistics the backward needs. */
typedef struct ls_layout {
    int64_t fmax, flog, fsum, total;
} ls_layout;

static ls_layout layout_of(const mpl_attn_combiner_args *a, int64_t n_slot)
{
    const mpl_attn_combiner_logsparse_widths w = mpl_attn_combiner_logsparse_widths_of(a);
    ls_layout l;
    int64_t off = mpl_attn_combiner_saved_elems(a);
    l.fmax = off, off += a->n_seq * n_slot * w.fmax;
    l.flog = off, off += a->n_seq * n_slot * w.flog;
    l.fsum = off, off += a->n_seq * n_slot * w.fsum;
    l.total = off;
    return l;
}

/* Slots of this rank's plan, or (no valid plan) the most there can be. */
static int64_t slots_planned(const mpl_attn_combiner_args *a, const mpl_comm *sp)
{
    mpl_attn_combiner_logsparse_plan *plan = NULL;
    if (plan_of(a, sp, &plan) != MPL_OK) {
        mpl_err_clear();
        return 2 * (int64_t)comm_size(sp) * mpl_attn_combiner_logsparse_levels(a->seq_len);
    }
    const int64_t n = plan->n_slot;
    mpl_attn_combiner_logsparse_plan_destroy(&plan);
    return n;
}

int64_t mpl_attn_combiner_logsparse_dist_saved_elems(const mpl_attn_combiner_args *a,
                                                     const mpl_comm *sp)
{
    return layout_of(a, slots_planned(a, sp)).total;
}

int64_t mpl_attn_combiner_logsparse_dist_work_bytes(const mpl_attn_combiner_args *a,
                                                    const mpl_comm *sp)
{
    /* the backward's: the chunk phases' table and scratch, and the
     * backward statistics of every slot (ctx_make) */
    const mpl_attn_combiner_logsparse_widths w = mpl_attn_combiner_logsparse_widths_of(a);
    return a->n_seq * slots_planned(a, sp) * (w.bsum + w.ba + w.bdq) * (int64_t)sizeof(float) +
           mpl_attn_combiner_logsparse_work_bytes_f32(a);
}

/* The chunk's context: slots of the plan, forward statistics in saved,
 * the summary table (and with grads its gradient and the backward
 * statistics) allocated here. */
static mpl_status ctx_make(const mpl_attn_combiner_args *a, const mpl_attn_combiner_logsparse_plan *pl,
                           int p, const float *saved, int grads,
                           mpl_attn_combiner_logsparse_ctx_f32 *c)
{
    const mpl_attn_combiner_logsparse_widths w = mpl_attn_combiner_logsparse_widths_of(a);
    const ls_layout l = layout_of(a, pl->n_slot);
    const int64_t S = a->n_seq, n_tab = a->n_seq * a->n_head * mpl_attn_combiner_logsparse_n_tab(a);
    float *sv = (float *)saved; /* written only by the forward, which owns it */
    *c = (mpl_attn_combiner_logsparse_ctx_f32){.n_slot = pl->n_slot, .span = pl->span,
                                               .use = pl->use + (int64_t)p * 2 * pl->n_lev,
                                               .fmax = sv + l.fmax, .flog = sv + l.flog,
                                               .fsum = sv + l.fsum};
    c->tab = malloc((size_t)(n_tab * 2 * a->head_dim + 1) * sizeof *c->tab);
    c->tab_present = malloc((size_t)(n_tab + 1));
    if (grads) {
        c->dtab = malloc((size_t)(n_tab * 2 * a->head_dim + 1) * sizeof *c->dtab);
        c->bsum = calloc((size_t)(S * pl->n_slot * w.bsum + 1), sizeof *c->bsum);
        c->ba = malloc((size_t)(S * pl->n_slot * w.ba + 1) * sizeof *c->ba);
        c->bdq = malloc((size_t)(S * pl->n_slot * w.bdq + 1) * sizeof *c->bdq);
    }
    if (!c->tab || !c->tab_present || (grads && (!c->dtab || !c->bsum || !c->ba || !c->bdq)))
        return mpl_err(MPL_ERR_NOMEM, "out of memory for %lld Logsparse summaries",
                       (long long)n_tab);
    return MPL_OK;
}

static void ctx_free(mpl_attn_combiner_logsparse_ctx_f32 *c)
{
    free(c->tab), free(c->tab_present), free(c->dtab), free(c->bsum), free(c->ba), free(c->bdq);
    memset(c, 0, sizeof *c);
}

/* What one pass (forward or backward) holds: the plan, the chunk's
 * context, the requests of its nonblocking round. */
static mpl_status pass_begin(mpl_comm *sp, const mpl_attn_combiner_args *a, const float *saved,
                             int grads, mpl_attn_combiner_logsparse_plan **pl,
                             mpl_attn_combiner_logsparse_ctx_f32 *c, mpl_comm_reqs **reqs)
{
    MPL_CHECK(plan_of(a, sp, pl));
    MPL_CHECK(ctx_make(a, *pl, comm_rank(sp), saved, grads, c));
    MPL_CHECK(mpl_comm_reqs_create(reqs));
    return MPL_OK;
}

static void pass_end(mpl_attn_combiner_logsparse_plan **pl,
                     mpl_attn_combiner_logsparse_ctx_f32 *c, mpl_comm_reqs **reqs)
{
    mpl_comm_reqs_destroy(reqs); /* every posted request was waited for */
    ctx_free(c);
    mpl_attn_combiner_logsparse_plan_destroy(pl);
}

/* One round: the chunk's pieces, then the blocking combination. */
static mpl_status round_blocking(mpl_comm *sp, const mpl_attn_combiner_args *a, const float *qkv,
                                 const mpl_attn_combiner_logsparse_ctx_f32 *c,
                                 mpl_attn_ls_phase phase, float *buf, int64_t n, mpl_comm_op op,
                                 float *dqkv)
{
    MPL_CHECK(mpl_attn_combiner_logsparse_chunk_pieces_f32(a, qkv, c, phase, dqkv));
    if (!sp || n == 0) return MPL_OK;
    if (op == MPL_COMM_OP_MAX) return mpl_comm_allreduce_max_f32(sp, buf, n);
    return mpl_comm_allreduce_sum_f32(sp, buf, n);
}

mpl_status mpl_attn_combiner_logsparse_dist_forward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                                    const float *qkv, float *out, float *saved)
{
    mpl_status st = MPL_OK;
    mpl_attn_combiner_logsparse_plan *pl = NULL;
    mpl_comm_reqs *reqs = NULL;
    mpl_attn_combiner_logsparse_ctx_f32 c = {0};
    const mpl_attn_combiner_logsparse_widths w = mpl_attn_combiner_logsparse_widths_of(a);
    MPL_CHECK_GOTO(pass_begin(sp, a, saved, 0, &pl, &c, &reqs), done);
    const int64_t S = a->n_seq, n = pl->n_slot;
    /* round 1 travels while the local blocks are summarised */
    MPL_CHECK_GOTO(mpl_attn_combiner_logsparse_chunk_pieces_f32(a, qkv, &c, MPL_ATTN_LS_MAXIMA,
                                                                NULL), done);
    if (sp && n > 0)
        MPL_CHECK_GOTO(mpl_comm_iallreduce_f32(sp, c.fmax, S * n * w.fmax, MPL_COMM_OP_MAX, reqs),
                       done);
    st = mpl_attn_combiner_logsparse_chunk_summarize_f32(a, qkv, &c);
    const mpl_status wst = mpl_comm_waitall(reqs);
    if (st != MPL_OK) goto done;
    MPL_CHECK_GOTO(wst, done);
    MPL_CHECK_GOTO(round_blocking(sp, a, qkv, &c, MPL_ATTN_LS_LOGIT, c.flog, S * n * w.flog,
                                  MPL_COMM_OP_MAX, NULL), done);
    MPL_CHECK_GOTO(round_blocking(sp, a, qkv, &c, MPL_ATTN_LS_SUMS, c.fsum, S * n * w.fsum,
                                  MPL_COMM_OP_SUM, NULL), done);
    MPL_CHECK_GOTO(mpl_attn_combiner_logsparse_chunk_forward_f32(a, qkv, &c, out, saved), done);
done:
    pass_end(&pl, &c, &reqs);
    return st;
}

mpl_status mpl_attn_combiner_logsparse_dist_backward(mpl_comm *sp,
                                                     const mpl_attn_combiner_args *a,
                                                     const float *qkv, const float *saved,
                                                     const float *dout, float *dqkv)
{
    mpl_status st = MPL_OK;
    mpl_attn_combiner_logsparse_plan *pl = NULL;
    mpl_comm_reqs *reqs = NULL;
    mpl_attn_combiner_logsparse_ctx_f32 c = {0};
    const mpl_attn_combiner_logsparse_widths w = mpl_attn_combiner_logsparse_widths_of(a);
    MPL_CHECK_GOTO(pass_begin(sp, a, saved, 1, &pl, &c, &reqs), done);
    const int64_t S = a->n_seq, n = pl->n_slot;
    MPL_CHECK_GOTO(mpl_attn_combiner_logsparse_chunk_summarize_f32(a, qkv, &c), done);
    MPL_CHECK_GOTO(mpl_attn_combiner_logsparse_chunk_backward_f32(a, qkv, &c, saved, dout, dqkv),
                   done);
    /* the users' summary gradients and the tie counts travel while the
     * local blocks' gradients reach their rows */
    MPL_CHECK_GOTO(mpl_attn_combiner_logsparse_chunk_pieces_f32(a, qkv, &c, MPL_ATTN_LS_TIES,
                                                                NULL), done);
    if (sp && n > 0)
        MPL_CHECK_GOTO(mpl_comm_iallreduce_f32(sp, c.bsum, S * n * w.bsum, MPL_COMM_OP_SUM, reqs),
                       done);
    st = mpl_attn_combiner_logsparse_chunk_backward_local_f32(a, qkv, &c, dqkv);
    const mpl_status wst = mpl_comm_waitall(reqs);
    if (st != MPL_OK) goto done;
    MPL_CHECK_GOTO(wst, done);
    MPL_CHECK_GOTO(round_blocking(sp, a, qkv, &c, MPL_ATTN_LS_A, c.ba, S * n * w.ba,
                                  MPL_COMM_OP_SUM, NULL), done);
    MPL_CHECK_GOTO(round_blocking(sp, a, qkv, &c, MPL_ATTN_LS_DQ, c.bdq, S * n * w.bdq,
                                  MPL_COMM_OP_SUM, dqkv), done);
    MPL_CHECK_GOTO(mpl_attn_combiner_logsparse_chunk_pieces_f32(a, qkv, &c, MPL_ATTN_LS_POOL,
                                                                dqkv), done);
done:
    pass_end(&pl, &c, &reqs);
    return st;
}
