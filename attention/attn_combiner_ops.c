/* The "combiner_fixed" and "combiner_logsparse" entries of the attention
 * registry: core/attn.h's table of function pointers on top of the fp32
 * Combiner functions (combiner.h) or their distributed form
 * (combiner_dist.h), plus the precision-free geometry of Combiner-Fixed
 * chunks. Separate from the templates so the numerics know nothing of the
 * model's interface. */
#include <stdlib.h>

#include "combiner.h"
#include "combiner_dist.h"

int64_t mpl_attn_combiner_fixed_n_seg(const mpl_attn_combiner_args *a)
{
    return a->segment < 1 ? 0 : (a->seq_len + a->segment - 1) / a->segment;
}

void mpl_attn_combiner_fixed_halo(const mpl_attn_combiner_args *a, int64_t *n_lo,
                                  int64_t *n_hi)
{
    const int64_t s = a->segment < 1 ? 1 : a->segment;
    *n_lo = a->n_tok > 0 ? a->pos0 % s : 0;
    *n_hi = 0;
    if (!a->causal && a->n_tok > 0) {
        const int64_t last = a->pos0 + a->n_tok - 1;
        int64_t end = (last / s + 1) * s;
        end = end < a->seq_len ? end : a->seq_len;
        *n_hi = end - (a->pos0 + a->n_tok);
    }
}

void mpl_attn_combiner_fixed_owned(const mpl_attn_combiner_args *a, int64_t *m0, int64_t *m1)
{
    const int64_t s = a->segment < 1 ? 1 : a->segment, end = a->pos0 + a->n_tok;
    if (a->n_tok <= 0) {
        *m0 = *m1 = 0;
        return;
    }
    /* segment m ends at min((m+1)s, L) - 1: owned iff that lies in the chunk */
    *m0 = a->pos0 / s;
    *m1 = end >= a->seq_len ? mpl_attn_combiner_fixed_n_seg(a) : end / s;
}

int64_t mpl_attn_combiner_saved_elems(const mpl_attn_combiner_args *a)
{
    return a->n_seq * (int64_t)a->n_head * a->n_tok;
}

typedef struct combiner_impl {
    mpl_attn_cfg cfg; /* copied at create */
    int logsparse;
    mpl_comm *sp;     /* borrowed; NULL: one rank */
} combiner_impl;

/* One rank: the call holds whole sequences, so L is its n_tok; split over
 * an SP group: the global length of the config. */
static mpl_attn_combiner_args combiner_args(const combiner_impl *im, const mpl_attn_geom *g)
{
    return (mpl_attn_combiner_args){.n_seq = g->n_seq,
                                    .n_tok = g->n_tok,
                                    .pos0 = g->pos0,
                                    .seq_len = im->sp ? im->cfg.seq_len : g->pos0 + g->n_tok,
                                    .n_head = im->cfg.n_head,
                                    .head_dim = im->cfg.head_dim,
                                    .causal = im->cfg.causal,
                                    .rope_theta = im->cfg.rope_theta,
                                    .segment = im->cfg.segment,
                                    .mask = g->mask};
}

static int64_t combiner_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const combiner_impl *im = impl;
    const mpl_attn_combiner_args a = combiner_args(im, g);
    if (im->sp && im->logsparse) return mpl_attn_combiner_logsparse_dist_saved_elems(&a, im->sp);
    if (im->sp) return mpl_attn_combiner_dist_saved_elems(&a, im->sp);
    return mpl_attn_combiner_saved_elems(&a);
}

static int64_t combiner_work_bytes(void *impl, const mpl_attn_geom *g)
{
    const combiner_impl *im = impl;
    const mpl_attn_combiner_args a = combiner_args(im, g);
    if (im->sp && im->logsparse) return mpl_attn_combiner_logsparse_dist_work_bytes(&a, im->sp);
    if (im->sp) return mpl_attn_combiner_dist_work_bytes(&a, im->sp);
    if (im->logsparse) return mpl_attn_combiner_logsparse_work_bytes_f32(&a);
    return mpl_attn_combiner_fixed_work_bytes_f32(&a);
}

static mpl_status combiner_forward(void *impl, int layer, const mpl_attn_geom *g,
                                   const float *params, const float *qkv, float *out,
                                   float *saved)
{
    (void)layer;
    (void)params;
    const combiner_impl *im = impl;
    const mpl_attn_combiner_args a = combiner_args(im, g);
    if (im->sp && im->logsparse)
        MPL_CHECK(mpl_attn_combiner_logsparse_dist_forward(im->sp, &a, qkv, out, saved));
    else if (im->sp)
        MPL_CHECK(mpl_attn_combiner_dist_forward(im->sp, &a, qkv, out, saved));
    else if (im->logsparse)
        MPL_CHECK(mpl_attn_combiner_logsparse_forward_f32(&a, qkv, out, saved));
    else
        MPL_CHECK(mpl_attn_combiner_fixed_forward_f32(&a, qkv, out, saved));
    return MPL_OK;
}

static mpl_status combiner_backward(void *impl, int layer, const mpl_attn_geom *g,
                                    const float *params, const float *qkv, const float *saved,
                                    const float *dout, float *dqkv, float *dparams)
{
    (void)layer;
    (void)params;
    (void)dparams;
    const combiner_impl *im = impl;
    const mpl_attn_combiner_args a = combiner_args(im, g);
    if (im->sp && im->logsparse)
        MPL_CHECK(mpl_attn_combiner_logsparse_dist_backward(im->sp, &a, qkv, saved, dout, dqkv));
    else if (im->sp)
        MPL_CHECK(mpl_attn_combiner_dist_backward(im->sp, &a, qkv, saved, dout, dqkv));
    else if (im->logsparse)
        MPL_CHECK(mpl_attn_combiner_logsparse_backward_f32(&a, qkv, saved, dout, dqkv));
    else
        MPL_CHECK(mpl_attn_combiner_fixed_backward_f32(&a, qkv, saved, dout, dqkv));
    return MPL_OK;
}

static void combiner_destroy(void **impl)
{
    if (!impl) return;
    free(*impl);
    *impl = NULL;
}

static mpl_status combiner_stream_create(void *impl, int layer, int64_t n_seq, void **state)
{
    (void)layer;
    const combiner_impl *im = impl;
    const mpl_attn_combiner_args a = {.n_seq = n_seq,
                                      .seq_len = im->cfg.seq_len,
                                      .n_head = im->cfg.n_head,
                                      .head_dim = im->cfg.head_dim,
                                      .causal = im->cfg.causal,
                                      .rope_theta = im->cfg.rope_theta,
                                      .segment = im->cfg.segment};
    mpl_attn_combiner_stream_f32 *st = NULL;
    MPL_CHECK(mpl_attn_combiner_stream_create_f32(&a, im->logsparse, &st));
    *state = st;
    return MPL_OK;
}

static mpl_status combiner_stream_step(void *impl, int layer, void *state, const float *params,
                                       int64_t pos, const float *qkv_row, float *out_row)
{
    (void)impl;
    (void)layer;
    (void)params;
    MPL_CHECK(mpl_attn_combiner_stream_step_f32(state, pos, qkv_row, out_row));
    return MPL_OK;
}

static void combiner_stream_destroy(void **state)
{
    if (!state) return;
    mpl_attn_combiner_stream_f32 *st = *state;
    mpl_attn_combiner_stream_destroy_f32(&st);
    *state = NULL;
}

static const mpl_attn_ops combiner_fixed_ops = {
    .name = "combiner_fixed",
    .saved_elems = combiner_saved_elems,
    .forward = combiner_forward,
    .backward = combiner_backward,
    .destroy = combiner_destroy,
    .stream_create = combiner_stream_create,
    .stream_step = combiner_stream_step,
    .stream_destroy = combiner_stream_destroy,
    .work_bytes = combiner_work_bytes,
};

static const mpl_attn_ops combiner_logsparse_ops = {
    .name = "combiner_logsparse",
    .saved_elems = combiner_saved_elems,
    .forward = combiner_forward,
    .backward = combiner_backward,
    .destroy = combiner_destroy,
    .stream_create = combiner_stream_create,
    .stream_step = combiner_stream_step,
    .stream_destroy = combiner_stream_destroy,
    .work_bytes = combiner_work_bytes,
};

mpl_status mpl_attn_combiner_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp,
                                    mpl_attn *out)
{
    const int logsparse = cfg->kind == MPL_ATTN_KIND_COMBINER_LOGSPARSE;
    if (!logsparse && cfg->kind != MPL_ATTN_KIND_COMBINER_FIXED)
        return mpl_err(MPL_ERR_ARG, "combiner: kind %d is not a Combiner kind", (int)cfg->kind);
    if (!logsparse && cfg->segment < 1)
        return mpl_err(MPL_ERR_ARG, "combiner_fixed: segment=%lld must be >= 1",
                       (long long)cfg->segment);
    if (cfg->rope_theta > 0 && cfg->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG, "combiner: RoPE (rope_theta=%g) needs an even head_dim, "
                       "got head_dim=%d", cfg->rope_theta, cfg->head_dim);
    combiner_impl *im = NULL;
    MPL_ALLOC(im, 1);
    im->cfg = *cfg;
    im->logsparse = logsparse;
    im->sp = sp;
    out->ops = logsparse ? &combiner_logsparse_ops : &combiner_fixed_ops;
    out->impl = im;
    return MPL_OK;
}
