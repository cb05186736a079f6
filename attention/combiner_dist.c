/* Combiner-Fixed across an SP group (combiner_dist.h). The halo is planned
 * uniformly as s-1 rows before (and after, bidirectional) each chunk, the
 * bound of ATTENTION.md, and the kernel is given the rows of its
 * straddling segment out of it. Summaries are combined by an all-reduce of
 * per-rank buffers that are zero outside the segments a rank owns: every
 * segment has exactly one owner, so the sum is exact (it adds zeros).
 * Overlap: forward, the halo travels while the segments inside the chunk
 * are summarised, and the summaries while the direct slots are computed;
 * backward, the halo gradients go back while the summary gradients travel
 * whenever no summary gradient is owed to the halo rows. The order of
 * every addition is fixed by the layout, so results are deterministic. */
#include "combiner_dist.h"

#include <stdlib.h>
#include <string.h>

#include "../dist/grid.h"
#include "../dist/halo.h"

typedef struct ctx_layout {
    int64_t n_pre, n_post, n_lo, n_hi, n_seg;
    int64_t pre, post, mask_pre, mask_post, sum, total; /* offsets into saved */
} ctx_layout;

static int comm_size(const mpl_comm *sp) { return sp ? mpl_comm_size(sp) : 1; }
static int comm_rank(const mpl_comm *sp) { return sp ? mpl_comm_rank(sp) : 0; }

static mpl_status plan_of(const mpl_attn_combiner_args *a, const mpl_comm *sp,
                          mpl_halo_plan **plan)
{
    const int P = comm_size(sp), p = comm_rank(sp);
    int64_t lo, hi;
    mpl_grid_chunk(a->seq_len, P, p, &lo, &hi);
    if (a->pos0 != lo || a->n_tok != hi - lo)
        return mpl_err(MPL_ERR_ARG, "combiner: rank %d of %d holds [%lld, %lld), the split of "
                       "L=%lld gives [%lld, %lld)", p, P, (long long)a->pos0,
                       (long long)(a->pos0 + a->n_tok), (long long)a->seq_len, (long long)lo,
                       (long long)hi);
    const int64_t s1 = a->segment - 1;
    return mpl_halo_plan_create(a->seq_len, P, p, s1, a->causal ? 0 : s1, plan);
}

/* Summaries: khat (n_seq, n_seg, HD), vhat (same), present (n_seq, n_seg)
 * as floats, one buffer so one all-reduce combines them. */
static int64_t sum_elems(const mpl_attn_combiner_args *a, int64_t n_seg)
{
    const int64_t HD = (int64_t)a->n_head * a->head_dim;
    return a->n_seq * n_seg * (2 * HD + 1);
}

static ctx_layout layout_of(const mpl_attn_combiner_args *a, int64_t n_pre, int64_t n_post)
{
    const int64_t W = 3 * (int64_t)a->n_head * a->head_dim;
    ctx_layout c = {.n_pre = n_pre, .n_post = n_post};
    mpl_attn_combiner_fixed_halo(a, &c.n_lo, &c.n_hi);
    c.n_seg = mpl_attn_combiner_fixed_n_seg(a);
    int64_t off = mpl_attn_combiner_saved_elems(a);
    c.pre = off, off += a->n_seq * n_pre * W;
    c.post = off, off += a->n_seq * n_post * W;
    c.mask_pre = off, off += a->n_seq * n_pre;
    c.mask_post = off, off += a->n_seq * n_post;
    c.sum = off, off += sum_elems(a, c.n_seg);
    c.total = off;
    return c;
}

/* The layout of this rank's call, or (no valid plan) one sized for the
 * widest halo. */
static ctx_layout layout_planned(const mpl_attn_combiner_args *a, const mpl_comm *sp)
{
    mpl_halo_plan *plan = NULL;
    if (plan_of(a, sp, &plan) != MPL_OK) {
        mpl_err_clear();
        const int64_t s1 = a->segment - 1;
        return layout_of(a, s1, a->causal ? 0 : s1);
    }
    ctx_layout c = layout_of(a, mpl_halo_plan_n_pre(plan), mpl_halo_plan_n_post(plan));
    mpl_halo_plan_destroy(&plan);
    return c;
}

int64_t mpl_attn_combiner_dist_saved_elems(const mpl_attn_combiner_args *a, const mpl_comm *sp)
{
    return layout_planned(a, sp).total;
}

int64_t mpl_attn_combiner_dist_work_bytes(const mpl_attn_combiner_args *a, const mpl_comm *sp)
{
    /* the backward's peak (its buffers hold the forward's): work_make with
     * gradients, dsum, dpre/dpost and their transfer's pack buffers, then
     * the chunk phases */
    const ctx_layout c = layout_planned(a, sp);
    const int64_t HD = (int64_t)a->n_head * a->head_dim, W = 3 * HD, S = a->n_seq;
    const int64_t F = (int64_t)sizeof(float), n_halo = c.n_lo + c.n_hi;
    const int64_t n_plan = c.n_pre + c.n_post, n_hat = S * c.n_seg * HD;
    const int64_t work = S * n_halo * (2 * W * F + 1) + S * c.n_seg + 2 * n_hat * F;
    return work + 2 * n_hat * F + 3 * S * n_plan * W * F +
           mpl_attn_combiner_fixed_chunk_work_bytes_f32(a);
}

/* Working buffers of one call: the kernel's halo views (n_lo / n_hi rows
 * cut out of the planned halo) and the summaries in the kernel's types. */
typedef struct work {
    float *lo, *hi, *dlo, *dhi, *dkhat, *dvhat;
    uint8_t *mlo, *mhi, *present;
} work;

static void work_free(work *w)
{
    free(w->lo), free(w->hi), free(w->dlo), free(w->dhi), free(w->dkhat), free(w->dvhat);
    free(w->mlo), free(w->mhi), free(w->present);
    memset(w, 0, sizeof *w);
}

/* Copy rows [r0, r0 + n) of each sequence of a (n_seq, n_all, W) buffer
 * into (n_seq, n, W), or back (dir = -1). */
static void cut_rows(float *dst, float *src, int64_t n_seq, int64_t n_all, int64_t r0, int64_t n,
                     int64_t W, int dir)
{
    for (int64_t s = 0; s < n_seq; s++) {
        float *big = src + (s * n_all + r0) * W, *small = dst + s * n * W;
        if (dir > 0) memcpy(small, big, (size_t)(n * W) * sizeof *small);
        else for (int64_t i = 0; i < n * W; i++) big[i] += small[i];
    }
}

static mpl_status work_make(const mpl_attn_combiner_args *a, const ctx_layout *c,
                            const float *saved, int grads, work *w,
                            mpl_attn_combiner_ctx_f32 *x)
{
    const int64_t HD = (int64_t)a->n_head * a->head_dim, W = 3 * HD, S = a->n_seq;
    memset(w, 0, sizeof *w);
    w->lo = malloc((size_t)(S * c->n_lo * W + 1) * sizeof *w->lo);
    w->hi = malloc((size_t)(S * c->n_hi * W + 1) * sizeof *w->hi);
    w->mlo = malloc((size_t)(S * c->n_lo + 1));
    w->mhi = malloc((size_t)(S * c->n_hi + 1));
    w->present = calloc((size_t)(S * c->n_seg + 1), 1);
    if (grads) {
        w->dlo = calloc((size_t)(S * c->n_lo * W + 1), sizeof *w->dlo);
        w->dhi = calloc((size_t)(S * c->n_hi * W + 1), sizeof *w->dhi);
        w->dkhat = calloc((size_t)(S * c->n_seg * HD + 1), sizeof *w->dkhat);
        w->dvhat = calloc((size_t)(S * c->n_seg * HD + 1), sizeof *w->dvhat);
    }
    if (!w->lo || !w->hi || !w->mlo || !w->mhi || !w->present ||
        (grads && (!w->dlo || !w->dhi || !w->dkhat || !w->dvhat))) {
        work_free(w);
        return mpl_err(MPL_ERR_NOMEM, "out of memory for the Combiner context");
    }
    float *khat = (float *)saved + c->sum, *vhat = khat + S * c->n_seg * HD;
    *x = (mpl_attn_combiner_ctx_f32){.qkv_lo = w->lo, .mask_lo = w->mlo, .dqkv_lo = w->dlo,
                                     .qkv_hi = w->hi, .mask_hi = w->mhi, .dqkv_hi = w->dhi,
                                     .khat = khat, .vhat = vhat, .present = w->present,
                                     .dkhat = w->dkhat, .dvhat = w->dvhat};
    return MPL_OK;
}

/* The kernel's halo rows and masks, cut out of the planned halo in saved. */
static void work_load_halo(const mpl_attn_combiner_args *a, const ctx_layout *c,
                           const float *saved, work *w)
{
    const int64_t W = 3 * (int64_t)a->n_head * a->head_dim, S = a->n_seq;
    float *sv = (float *)saved; /* cut_rows reads only in this direction */
    cut_rows(w->lo, sv + c->pre, S, c->n_pre, c->n_pre - c->n_lo, c->n_lo, W, 1);
    cut_rows(w->hi, sv + c->post, S, c->n_post, 0, c->n_hi, W, 1);
    for (int64_t s = 0; s < S; s++) {
        for (int64_t r = 0; r < c->n_lo; r++)
            w->mlo[s * c->n_lo + r] = saved[c->mask_pre + s * c->n_pre + c->n_pre - c->n_lo + r] != 0;
        for (int64_t r = 0; r < c->n_hi; r++)
            w->mhi[s * c->n_hi + r] = saved[c->mask_post + s * c->n_post + r] != 0;
    }
}

/* present as bytes from the floats after the summaries (see sum_elems). */
static void work_load_present(const mpl_attn_combiner_args *a, const ctx_layout *c,
                              const float *saved, work *w)
{
    const int64_t n = a->n_seq * c->n_seg, HD = (int64_t)a->n_head * a->head_dim;
    const float *pres = saved + c->sum + 2 * n * HD;
    for (int64_t i = 0; i < n; i++) w->present[i] = pres[i] != 0;
}

mpl_status mpl_attn_combiner_dist_forward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                          const float *qkv, float *out, float *saved)
{
    mpl_status st = MPL_OK;
    mpl_halo_plan *plan = NULL;
    mpl_halo_xfer *xq = NULL, *xm = NULL;
    mpl_comm_reqs *reqs = NULL;
    float *mrows = NULL;
    work w = {0};
    const int64_t HD = (int64_t)a->n_head * a->head_dim, S = a->n_seq;
    MPL_CHECK(plan_of(a, sp, &plan));
    const ctx_layout c = layout_of(a, mpl_halo_plan_n_pre(plan), mpl_halo_plan_n_post(plan));
    const int64_t n_sum = sum_elems(a, c.n_seg);
    mpl_attn_combiner_ctx_f32 x;
    MPL_CHECK_GOTO(work_make(a, &c, saved, 0, &w, &x), done);
    MPL_CHECK_GOTO(mpl_comm_reqs_create(&reqs), done);
    /* Halo rows (all of q, k, v: the straddling segment's summary needs q)
     * and their padding, as floats, travel while the segments inside the
     * chunk are summarised (owned ones; zero elsewhere, summed later). */
    mrows = malloc((size_t)(S * a->n_tok + 1) * sizeof *mrows);
    if (!mrows) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for halo masks");
    for (int64_t i = 0; i < S * a->n_tok; i++) mrows[i] = !a->mask || a->mask[i] ? 1.0f : 0.0f;
    memset(saved + c.sum, 0, (size_t)n_sum * sizeof(float));
    if (sp) {
        MPL_CHECK_GOTO(mpl_halo_exchange_begin(sp, plan, S, 3 * HD, qkv, 3 * HD, saved + c.pre,
                                               saved + c.post, &xq), done);
        MPL_CHECK_GOTO(mpl_halo_exchange_begin(sp, plan, S, 1, mrows, 1, saved + c.mask_pre,
                                               saved + c.mask_post, &xm), done);
    }
    st = mpl_attn_combiner_fixed_chunk_summarize_part_f32(a, qkv, &x, 0);
    const mpl_status hq = xq ? mpl_halo_exchange_end(&xq) : MPL_OK;
    const mpl_status hm = xm ? mpl_halo_exchange_end(&xm) : MPL_OK;
    if (st != MPL_OK) goto done;
    MPL_CHECK_GOTO(hq, done);
    MPL_CHECK_GOTO(hm, done);
    work_load_halo(a, &c, saved, &w);
    MPL_CHECK_GOTO(mpl_attn_combiner_fixed_chunk_summarize_part_f32(a, qkv, &x, 1), done);
    int64_t m0, m1;
    mpl_attn_combiner_fixed_owned(a, &m0, &m1);
    float *pres = saved + c.sum + 2 * S * c.n_seg * HD;
    for (int64_t s = 0; s < S; s++)
        for (int64_t m = m0; m < m1; m++) pres[s * c.n_seg + m] = w.present[s * c.n_seg + m];
    /* The summaries travel while the direct slots are computed. */
    if (sp) MPL_CHECK_GOTO(mpl_comm_iallreduce_f32(sp, saved + c.sum, n_sum, MPL_COMM_OP_SUM, reqs),
                           done);
    st = mpl_attn_combiner_fixed_chunk_forward_direct_f32(a, qkv, &x, out, saved);
    const mpl_status ws = mpl_comm_waitall(reqs);
    if (st != MPL_OK) goto done;
    MPL_CHECK_GOTO(ws, done);
    work_load_present(a, &c, saved, &w);
    MPL_CHECK_GOTO(mpl_attn_combiner_fixed_chunk_forward_summaries_f32(a, qkv, &x, out, saved),
                   done);
done:
    if (xq) mpl_halo_exchange_end(&xq);
    if (xm) mpl_halo_exchange_end(&xm);
    mpl_comm_reqs_destroy(&reqs);
    free(mrows);
    work_free(&w);
    mpl_halo_plan_destroy(&plan);
    return st;
}

/* The halo rows' gradients packed into the planned halo and posted back to
 * their owners (they are added there by mpl_halo_return_end). */
static mpl_status return_begin(mpl_comm *sp, const mpl_halo_plan *plan,
                               const mpl_attn_combiner_args *a, const ctx_layout *c,
                               const work *w, float *dpre, float *dpost, float *dqkv,
                               mpl_halo_xfer **xr)
{
    const int64_t W = 3 * (int64_t)a->n_head * a->head_dim, S = a->n_seq;
    cut_rows(w->dlo, dpre, S, c->n_pre, c->n_pre - c->n_lo, c->n_lo, W, -1);
    cut_rows(w->dhi, dpost, S, c->n_post, 0, c->n_hi, W, -1);
    return mpl_halo_return_begin(sp, plan, S, W, dpre, dpost, dqkv, W, xr);
}

mpl_status mpl_attn_combiner_dist_backward(mpl_comm *sp, const mpl_attn_combiner_args *a,
                                           const float *qkv, const float *saved,
                                           const float *dout, float *dqkv)
{
    mpl_status st = MPL_OK;
    mpl_halo_plan *plan = NULL;
    mpl_halo_xfer *xr = NULL;
    mpl_comm_reqs *reqs = NULL;
    float *dpre = NULL, *dpost = NULL, *dsum = NULL;
    work w = {0};
    const int64_t HD = (int64_t)a->n_head * a->head_dim, W = 3 * HD, S = a->n_seq;
    MPL_CHECK(plan_of(a, sp, &plan));
    const ctx_layout c = layout_of(a, mpl_halo_plan_n_pre(plan), mpl_halo_plan_n_post(plan));
    mpl_attn_combiner_ctx_f32 x;
    MPL_CHECK_GOTO(work_make(a, &c, saved, 1, &w, &x), done);
    work_load_halo(a, &c, saved, &w);
    work_load_present(a, &c, saved, &w);
    MPL_CHECK_GOTO(mpl_comm_reqs_create(&reqs), done);
    const int64_t n_hat = S * c.n_seg * HD;
    dsum = malloc((size_t)(2 * n_hat + 1) * sizeof *dsum);
    dpre = calloc((size_t)(S * c.n_pre * W + 1), sizeof *dpre);
    dpost = calloc((size_t)(S * c.n_post * W + 1), sizeof *dpost);
    if (!dsum || !dpre || !dpost)
        MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for Combiner gradients");
    MPL_CHECK_GOTO(mpl_attn_combiner_fixed_chunk_backward_f32(a, qkv, &x, saved, dout, dqkv),
                   done);
    /* Every user's d(khat, vhat) summed: each owner reads its segments. */
    memcpy(dsum, w.dkhat, (size_t)n_hat * sizeof *dsum);
    memcpy(dsum + n_hat, w.dvhat, (size_t)n_hat * sizeof *dsum);
    if (sp) MPL_CHECK_GOTO(mpl_comm_iallreduce_f32(sp, dsum, 2 * n_hat, MPL_COMM_OP_SUM, reqs),
                           done);
    /* The halo rows get a summary gradient only when this chunk owns the
     * segment straddling its start; otherwise they are final now and go
     * back while the summary gradients travel. */
    int64_t m0, m1;
    mpl_attn_combiner_fixed_owned(a, &m0, &m1);
    const int early = m1 <= m0 || c.n_lo == 0;
    if (sp && early) st = return_begin(sp, plan, a, &c, &w, dpre, dpost, dqkv, &xr);
    const mpl_status ws = mpl_comm_waitall(reqs);
    if (st != MPL_OK) goto done;
    MPL_CHECK_GOTO(ws, done);
    memcpy(w.dkhat, dsum, (size_t)n_hat * sizeof *dsum);
    memcpy(w.dvhat, dsum + n_hat, (size_t)n_hat * sizeof *dsum);
    MPL_CHECK_GOTO(mpl_attn_combiner_fixed_chunk_summarize_backward_f32(a, qkv, &x, dqkv), done);
    if (sp && !early) MPL_CHECK_GOTO(return_begin(sp, plan, a, &c, &w, dpre, dpost, dqkv, &xr),
                                     done);
    if (xr) MPL_CHECK_GOTO(mpl_halo_return_end(&xr), done);
done:
    if (xr) mpl_halo_return_end(&xr);
    mpl_comm_reqs_destroy(&reqs);
    free(dpre);
    free(dpost);
    free(dsum);
    work_free(&w);
    mpl_halo_plan_destroy(&plan);
    return st;
}
