/* FMM across an SP group (fmm_dist.h). The order of the exchanges follows
 * the dependencies: the halo and the statistics are both needed before the
 * local kernel runs; in backward the kernel runs first and produces what
 * goes back (halo gradients, statistics' gradients). */
#include "fmm_dist.h"

#include <stdlib.h>
#include <string.h>

#include "../dist/grid.h"
#include "../dist/halo.h"

/* Where the context lives inside `saved`, after the kernel's values. */
typedef struct ctx_layout {
    int64_t n_pre, n_post;
    int64_t kern, pre, post, mask_pre, mask_post, stat, total; /* offsets, total */
} ctx_layout;

static int sp_size(const mpl_comm *sp) { return sp ? mpl_comm_size(sp) : 1; }
static int sp_rank(const mpl_comm *sp) { return sp ? mpl_comm_rank(sp) : 0; }
static int64_t n_pre_of(const mpl_halo_plan *p) { return p ? mpl_halo_plan_n_pre(p) : 0; }
static int64_t n_post_of(const mpl_halo_plan *p) { return p ? mpl_halo_plan_n_post(p) : 0; }

/* One rank (sp NULL) holds [pos0, pos0 + n_tok) of whatever length and
 * has no halo: no plan. */
static mpl_status plan_of(const mpl_attn_fmm_args *a, const mpl_comm *sp, mpl_halo_plan **plan)
{
    *plan = NULL;
    if (!sp) return MPL_OK;
    const int P = sp_size(sp), p = sp_rank(sp);
    int64_t lo, hi;
    mpl_grid_chunk(a->seq_len, P, p, &lo, &hi);
    if (a->pos0 != lo || a->n_tok != hi - lo)
        return mpl_err(MPL_ERR_ARG,
                       "fmm: rank %d of %d holds [%lld, %lld) but the split of L=%lld gives "
                       "[%lld, %lld)", p, P, (long long)a->pos0, (long long)(a->pos0 + a->n_tok),
                       (long long)a->seq_len, (long long)lo, (long long)hi);
    const int64_t w1 = a->band - 1;
    return mpl_halo_plan_create(a->seq_len, P, p, w1, a->causal ? 0 : w1, plan);
}

static ctx_layout layout_of(const mpl_attn_fmm_args *a, int64_t n_pre, int64_t n_post)
{
    const int64_t W = 2 * (int64_t)a->n_head * a->head_dim;
    ctx_layout c = {.n_pre = n_pre, .n_post = n_post};
    int64_t off = mpl_attn_fmm_saved_elems(a);
    c.kern = 0;
    c.pre = off, off += a->n_seq * n_pre * W;
    c.post = off, off += a->n_seq * n_post * W;
    /* room for the halo's padding even without a mask: the size must not
     * depend on whether a call is masked */
    c.mask_pre = off, off += a->n_seq * n_pre;
    c.mask_post = off, off += a->n_seq * n_post;
    c.stat = off, off += mpl_attn_fmm_stat_elems(a);
    c.total = off;
    return c;
}

int64_t mpl_attn_fmm_dist_saved_elems(const mpl_attn_fmm_args *a, const mpl_comm *sp)
{
    mpl_halo_plan *plan = NULL;
    if (plan_of(a, sp, &plan) != MPL_OK) {
        /* an inconsistent geometry is reported by forward; size for the
         * widest halo meanwhile */
        mpl_err_clear();
        const int64_t w1 = a->band - 1;
        return layout_of(a, w1, a->causal ? 0 : w1).total;
    }
    ctx_layout c = layout_of(a, n_pre_of(plan), n_post_of(plan));
    mpl_halo_plan_destroy(&plan);
    return c.total;
}

/* Halo masks travel as floats (1 real, 0 padding) and come back as bytes. */
static void mask_bytes(const float *f, int64_t n, uint8_t *b)
{
    for (int64_t i = 0; i < n; i++) b[i] = f[i] != 0.0f;
}

/* The context struct over the saved floats (masks converted into mb). */
static mpl_attn_fmm_ctx_f32 ctx_view(const mpl_attn_fmm_args *a, const ctx_layout *c,
                                     const float *saved, uint8_t *mb)
{
    mpl_attn_fmm_ctx_f32 x = {.n_pre = c->n_pre, .n_post = c->n_post,
                              .halo_pre = saved + c->pre, .halo_post = saved + c->post,
                              .stat_in = saved + c->stat};
    if (a->mask) {
        mask_bytes(saved + c->mask_pre, a->n_seq * c->n_pre, mb);
        mask_bytes(saved + c->mask_post, a->n_seq * c->n_post, mb + a->n_seq * c->n_pre);
        x.mask_pre = mb;
        x.mask_post = mb + a->n_seq * c->n_pre;
    }
    return x;
}

mpl_status mpl_attn_fmm_dist_forward(mpl_comm *sp, const mpl_attn_fmm_args *a,
                                     mpl_attn_fmm_blend_f32 bl, const float *qkv, float *out,
                                     float *saved)
{
    mpl_status st = MPL_OK;
    mpl_halo_plan *plan = NULL;
    mpl_halo_xfer *xkv = NULL, *xm = NULL;
    float *mrows = NULL;
    uint8_t *mb = NULL;
    const int64_t HD = (int64_t)a->n_head * a->head_dim;
    MPL_CHECK(plan_of(a, sp, &plan));
    const ctx_layout c = layout_of(a, n_pre_of(plan), n_post_of(plan));
    float *stat = saved + c.stat;
    /* The halo travels while this chunk's far-field statistics are
     * computed and combined over the group (causal: the exclusive prefix of
     * what precedes the chunk; bidirectional: the total, own rows
     * included); the kernel waits for both. */
    if (sp) {
        /* Near-field halo: K and V (columns [HD, 3HD) of qkv), unrotated. */
        MPL_CHECK_GOTO(mpl_halo_exchange_begin(sp, plan, a->n_seq, 2 * HD, qkv + HD, 3 * HD,
                                               saved + c.pre, saved + c.post, &xkv), done);
        if (a->mask) {
            mrows = malloc((size_t)(a->n_seq * a->n_tok) * sizeof *mrows);
            if (!mrows) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for halo masks");
            for (int64_t i = 0; i < a->n_seq * a->n_tok; i++) mrows[i] = a->mask[i] ? 1.0f : 0.0f;
            MPL_CHECK_GOTO(mpl_halo_exchange_begin(sp, plan, a->n_seq, 1, mrows, 1,
                                                   saved + c.mask_pre, saved + c.mask_post, &xm),
                           done);
        }
    }
    if (sp || !a->causal) MPL_CHECK_GOTO(mpl_attn_fmm_stats_f32(a, qkv, stat), done);
    if (sp && a->causal)
        MPL_CHECK_GOTO(mpl_comm_exscan_sum_f32(sp, stat, mpl_attn_fmm_stat_elems(a), 0), done);
    else if (sp)
        MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f32(sp, stat, mpl_attn_fmm_stat_elems(a)), done);
    else if (a->causal)
        memset(stat, 0, (size_t)mpl_attn_fmm_stat_elems(a) * sizeof *stat);
    if (xkv) MPL_CHECK_GOTO(mpl_halo_exchange_end(&xkv), done);
    if (xm) MPL_CHECK_GOTO(mpl_halo_exchange_end(&xm), done);
    mb = malloc((size_t)(a->n_seq * (c.n_pre + c.n_post) + 1));
    if (!mb) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for halo masks");
    const mpl_attn_fmm_ctx_f32 x = ctx_view(a, &c, saved, mb);
    MPL_CHECK_GOTO(mpl_attn_fmm_forward_f32(a, &x, bl, qkv, out, saved + c.kern), done);
done:
    /* On an error the transfers still complete: no rank is left waiting
     * and no buffer is freed under a live request. */
    if (xkv) mpl_halo_exchange_end(&xkv);
    if (xm) mpl_halo_exchange_end(&xm);
    free(mrows);
    free(mb);
    mpl_halo_plan_destroy(&plan);
    return st;
}

mpl_status mpl_attn_fmm_dist_backward(mpl_comm *sp, const mpl_attn_fmm_args *a,
                                      mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                      const float *saved, const float *dout, float *dqkv,
                                      mpl_attn_fmm_dblend_f32 dbl)
{
    mpl_status st = MPL_OK;
    mpl_halo_plan *plan = NULL;
    mpl_halo_xfer *xr = NULL;
    float *dctx = NULL;
    uint8_t *mb = NULL;
    const int64_t HD = (int64_t)a->n_head * a->head_dim, W = 2 * HD;
    MPL_CHECK(plan_of(a, sp, &plan));
    const ctx_layout c = layout_of(a, n_pre_of(plan), n_post_of(plan));
    const int64_t n_stat = mpl_attn_fmm_stat_elems(a);
    const int64_t n_pre = a->n_seq * c.n_pre * W, n_post = a->n_seq * c.n_post * W;
    dctx = calloc((size_t)(n_pre + n_post + n_stat + 1), sizeof *dctx);
    mb = malloc((size_t)(a->n_seq * (c.n_pre + c.n_post) + 1));
    if (!dctx || !mb) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for FMM context gradients");
    float *dpre = dctx, *dpost = dctx + n_pre, *dstat = dctx + n_pre + n_post;
    const mpl_attn_fmm_ctx_f32 x = ctx_view(a, &c, saved, mb);
    const mpl_attn_fmm_dctx_f32 dx = {dpre, dpost, dstat};
    MPL_CHECK_GOTO(mpl_attn_fmm_backward_f32(a, &x, bl, qkv, saved + c.kern, dout, dqkv, &dx, dbl),
                   done);
    /* Halo gradients travel to the rows' owners while the statistics'
     * gradient is combined: chunk p's dstat reaches every chunk whose rows
     * it summed, the chunks before p (causal: a suffix scan) or all
     * (bidirectional). The halo's rows are added into dqkv after the
     * local statistics' backward, always in that order (deterministic). */
    if (sp) {
        MPL_CHECK_GOTO(mpl_halo_return_begin(sp, plan, a->n_seq, W, dpre, dpost, dqkv + HD,
                                             3 * HD, &xr), done);
        if (a->causal)
            MPL_CHECK_GOTO(mpl_comm_exscan_sum_f32(sp, dstat, n_stat, 1), done);
        else
            MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f32(sp, dstat, n_stat), done);
    } else if (a->causal) {
        goto done; /* one causal rank: no later chunk saw these rows */
    }
    MPL_CHECK_GOTO(mpl_attn_fmm_stats_backward_f32(a, qkv, dstat, dqkv), done);
    if (xr) MPL_CHECK_GOTO(mpl_halo_return_end(&xr), done);
done:
    if (xr) mpl_halo_return_end(&xr); /* complete the messages even on an error */
    free(dctx);
    free(mb);
    mpl_halo_plan_destroy(&plan);
    return st;
}
