/* The "dense" entry of the attention registry: core/attn.h's table of
 * function pointers on top of the fp32 dense functions. Separate from the
 * template so the numerics (dense_impl.h) know nothing of the model's
 * interface. Dense attention has no parameters and no communicator. */
#include <stdlib.h>

#include "dense.h"

typedef struct dense_impl {
    mpl_attn_cfg cfg; /* copied at create */
} dense_impl;

int64_t mpl_attn_dense_saved_elems(const mpl_attn_dense_args *a)
{
    return a->n_seq * a->n_tok * (int64_t)a->n_head * (2 * (int64_t)a->head_dim + 1);
}

static mpl_attn_dense_args dense_args(const dense_impl *im, const mpl_attn_geom *g)
{
    return (mpl_attn_dense_args){.n_seq = g->n_seq,
                                 .n_tok = g->n_tok,
                                 .pos0 = g->pos0,
                                 .n_head = im->cfg.n_head,
                                 .head_dim = im->cfg.head_dim,
                                 .causal = im->cfg.causal,
                                 .rope_theta = im->cfg.rope_theta,
                                 .mask = g->mask};
}

static int64_t dense_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const mpl_attn_dense_args a = dense_args(impl, g);
    return mpl_attn_dense_saved_elems(&a);
}

static mpl_status dense_forward(void *impl, int layer, const mpl_attn_geom *g,
                                const float *params, const float *qkv, float *out,
                                float *saved)
{
    (void)layer;
    (void)params;
    const mpl_attn_dense_args a = dense_args(impl, g);
    MPL_CHECK(mpl_attn_dense_forward_f32(&a, qkv, out, saved));
    return MPL_OK;
}

static mpl_status dense_backward(void *impl, int layer, const mpl_attn_geom *g,
                                 const float *params, const float *qkv, const float *saved,
                                 const float *dout, float *dqkv, float *dparams)
{
    (void)layer;
    (void)params;
    (void)dparams;
    const mpl_attn_dense_args a = dense_args(impl, g);
    MPL_CHECK(mpl_attn_dense_backward_f32(&a, qkv, saved, dout, dqkv));
    return MPL_OK;
}

static void dense_destroy(void **impl)
{
    if (!impl) return;
    free(*impl);
    *impl = NULL;
}

static const mpl_attn_ops dense_ops = {
    .name = "dense",
    .declare_params = NULL,
    .init_params = NULL,
    .saved_elems = dense_saved_elems,
    .forward = dense_forward,
    .backward = dense_backward,
    .destroy = dense_destroy,
};

mpl_status mpl_attn_dense_create(const mpl_attn_cfg *cfg, mpl_attn *out)
{
    dense_impl *im = NULL;
    MPL_ALLOC(im, 1);
    im->cfg = *cfg;
    out->ops = &dense_ops;
    out->impl = im;
    return MPL_OK;
}
