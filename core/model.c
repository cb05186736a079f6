/* Model assembly: the parameter layout and its initialisation, the
 * reservation of activations and the accessors, and the seam to the other
 * backends (model_internal.h, mpl_model_backend): every backend shares the
 * layout and the initialisation built here. The passes are in
 * model_pass.c, where activations live in model_acts.c, generation in
 * model_stream.c; the CUDA model in core/cuda/model_cuda*.c. */
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "philox.h"

static mpl_status add_param(mpl_model *m, const char *name, int ndim, int64_t d0,
                            int64_t d1, int64_t *off)
{
    int64_t shape[2] = {d0, d1};
    return mpl_slab_layout_add(&m->layout, name, ndim, shape, ndim > 1, off);
}

static mpl_status check_cfg(const mpl_model_cfg *c)
{
    if (c->vocab_size < 2) return mpl_err(MPL_ERR_ARG, "vocab_size=%lld must be >= 2", (long long)c->vocab_size);
    if (c->d_model < 1) return mpl_err(MPL_ERR_ARG, "d_model=%lld must be >= 1", (long long)c->d_model);
    if (c->n_layer < 1) return mpl_err(MPL_ERR_ARG, "n_layer=%lld must be >= 1", (long long)c->n_layer);
    if (c->n_head < 1 || c->d_model % c->n_head)
        return mpl_err(MPL_ERR_ARG, "n_head=%lld must be >= 1 and divide d_model=%lld",
                       (long long)c->n_head, (long long)c->d_model);
    if (c->mlp_mult < 1) return mpl_err(MPL_ERR_ARG, "mlp_mult=%lld must be >= 1", (long long)c->mlp_mult);
    if ((int)c->recompute < 0 || c->recompute >= MPL_RECOMPUTE_COUNT)
        return mpl_err(MPL_ERR_ARG, "recompute=%d is not a known mode", (int)c->recompute);
    if (c->n_pos < 0) return mpl_err(MPL_ERR_ARG, "n_pos=%lld must be >= 0", (long long)c->n_pos);
    if (c->piece_tokens < 0)
        return mpl_err(MPL_ERR_ARG, "piece_tokens=%lld must be >= 0", (long long)c->piece_tokens);
    if (c->n_classes < 0 || c->n_classes == 1)
        return mpl_err(MPL_ERR_ARG, "n_classes=%lld must be 0 (language model) or >= 2",
                       (long long)c->n_classes);
    if (c->device != MPL_DEVICE_CPU && c->device != MPL_DEVICE_CUDA)
        return mpl_err(MPL_ERR_ARG, "device=%d is not a known device", (int)c->device);
    return MPL_OK;
}

mpl_status mpl_model_create(const mpl_model_cfg *cfg, mpl_attn *attn, mpl_model **out)
{
    mpl_status st = MPL_OK;
    *out = NULL;
    MPL_CHECK(check_cfg(cfg));
    mpl_model *m;
    MPL_ALLOC(m, 1);
    m->cfg = *cfg;
    m->attn = attn;
    m->top_done_from = INT64_MAX; /* no top input overwritten (model_pass.c) */
    const int64_t C = cfg->d_model, V = cfg->vocab_size, H4 = cfg->mlp_mult * C;
    m->blk = calloc((size_t)cfg->n_layer, sizeof *m->blk);
    if (!m->blk) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory for model tables");

    MPL_CHECK_GOTO(add_param(m, "wte", 2, V, C, &m->wte), fail);
    m->wpe = -1;
    if (cfg->n_pos > 0) MPL_CHECK_GOTO(add_param(m, "wpe", 2, cfg->n_pos, C, &m->wpe), fail);
    for (int l = 0; l < cfg->n_layer; l++) {
        char name[MPL_TENSOR_NAME_MAX], prefix[MPL_TENSOR_NAME_MAX];
        block_params *b = &m->blk[l];
#define P(field, suffix, nd, a0, a1)                                         \
    snprintf(name, sizeof name, "blk%d.%s", l, suffix);                      \
    MPL_CHECK_GOTO(add_param(m, name, nd, a0, a1, &b->field), fail)
        P(ln1_g, "ln1.g", 1, C, 1);
        P(wqkv, "attn.wqkv", 2, 3 * C, C);
        P(wo, "attn.wo", 2, C, C);
        snprintf(prefix, sizeof prefix, "blk%d.attn.", l);
        if (attn->ops->declare_params)
            MPL_CHECK_GOTO(attn->ops->declare_params(attn->impl, l, prefix, &m->layout), fail);
        P(ln2_g, "ln2.g", 1, C, 1);
        P(w1, "mlp.w1", 2, H4, C);
        P(w2, "mlp.w2", 2, C, H4);
#undef P
    }
    MPL_CHECK_GOTO(add_param(m, "lnf.g", 1, C, 1, &m->lnf_g), fail);
    m->head_w = m->head_b = -1;
    if (cfg->n_classes > 0) {
        MPL_CHECK_GOTO(add_param(m, "head.w", 2, cfg->n_classes, C, &m->head_w), fail);
        MPL_CHECK_GOTO(add_param(m, "head.b", 1, cfg->n_classes, 1, &m->head_b), fail);
    }
    MPL_CHECK_GOTO(mpl_slab_alloc(m->layout.n_elems, &m->params), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(m->layout.n_elems, &m->grads), fail);
    if (cfg->device == MPL_DEVICE_CUDA) MPL_CHECK_GOTO(mpl_model_cuda_attach(m), fail);
    *out = m;
    return MPL_OK;
fail:
    mpl_model_destroy(&m);
    return st;
}

void mpl_model_destroy(mpl_model **mp)
{
    if (!mp || !*mp) return;
    mpl_model *m = *mp;
    if (m->be) m->be->destroy(m);
    mpl_model_stream_end(m);
    mpl_slab_layout_free(&m->layout);
    mpl_slab_free(&m->params);
    mpl_slab_free(&m->grads);
    mpl_slab_free(&m->acts);
    mpl_slab_free(&m->work);
    mpl_slab_free(&m->work_alt);
    mpl_slab_free(&m->state);
    free(m->blk);
    free(m->tokens);
    free(m->targets);
    free(m->qkv_ready);
    free(m->pooled);
    free(m->count);
    free(m->cls_logits);
    free(m->dpooled);
    free(m->labels);
    free(m->cls_dlogits);
    free(m);
    *mp = NULL;
}

mpl_status mpl_model_init_params(mpl_model *m, uint64_t seed)
{
    const double std = 0.02;
    /* Projections into the residual stream are scaled down with depth
     * (GPT-2), so the stream's variance does not grow with n_layer. */
    const double std_res = std / sqrt(2.0 * (double)m->cfg.n_layer);
    for (int t = 0; t < m->layout.n_tensors; t++) {
        const mpl_tensor_desc *d = &m->layout.t[t];
        float *p = m->params + d->offset;
        const char *dot = strrchr(d->name, '.');
        if (dot && strcmp(dot, ".g") == 0) {
            for (int64_t i = 0; i < d->n_elems; i++) p[i] = 1.0f;
        } else if (d->ndim == 2 && strcmp(d->name, "wte") != 0 && dot &&
                   (strcmp(dot, ".wo") == 0 || strcmp(dot, ".w2") == 0)) {
            mpl_philox_fill_normal(p, d->n_elems, seed, mpl_philox_stream(d->name), 0, std_res);
        } else if (d->ndim == 2) {
            mpl_philox_fill_normal(p, d->n_elems, seed, mpl_philox_stream(d->name), 0, std);
        }
    }
    /* Mechanism parameters are initialised by the mechanism. */
    if (m->attn->ops->init_params)
        for (int l = 0; l < m->cfg.n_layer; l++)
            m->attn->ops->init_params(m->attn->impl, l, m->params, seed);
    if (m->be) MPL_CHECK(m->be->params_push(m));
    return MPL_OK;
}

mpl_status mpl_model_reserve(mpl_model *m, int64_t n_seq, int64_t n_tok)
{
    if (n_seq < 1 || n_tok < 1)
        return mpl_err(MPL_ERR_ARG, "reserve: n_seq=%lld n_tok=%lld must be >= 1",
                       (long long)n_seq, (long long)n_tok);
    /* The buffers of this geometry now; a later forward of another
     * geometry within the reservation grows them if its layout needs. */
    if (m->be) return m->be->reserve(m, n_seq, n_tok);
    const mpl_attn_geom g = {n_seq, n_tok, 0, NULL};
    m->have_forward = 0;
    m->geom = g;
    m->cap_seq = n_seq;
    m->cap_tok = n_tok;
    MPL_CHECK(mpl_model_act_layout(m, &g, &m->lay));
    MPL_CHECK(mpl_model_act_alloc(m));
    return MPL_OK;
}

const float *mpl_model_class_logits(const mpl_model *m)
{
    return m->cfg.n_classes > 0 ? m->cls_logits : NULL;
}

const float *mpl_model_logits(const mpl_model *m)
{
    return m->acts && m->lay.logits >= 0 ? m->acts + m->lay.logits : NULL;
}
const mpl_slab_layout *mpl_model_layout(const mpl_model *m) { return &m->layout; }
float *mpl_model_params(mpl_model *m) { return m->params; }
float *mpl_model_grads(mpl_model *m) { return m->grads; }
const mpl_model_cfg *mpl_model_config(const mpl_model *m) { return &m->cfg; }

mpl_status mpl_model_zero_grad(mpl_model *m)
{
    if (m->be) return m->be->zero_grad(m);
    memset(m->grads, 0, (size_t)m->layout.n_elems * sizeof(float));
    return MPL_OK;
}

mpl_status mpl_model_params_pull(mpl_model *m) { return m->be ? m->be->params_pull(m) : MPL_OK; }
mpl_status mpl_model_params_push(mpl_model *m) { return m->be ? m->be->params_push(m) : MPL_OK; }
mpl_status mpl_model_grads_pull(mpl_model *m) { return m->be ? m->be->grads_pull(m) : MPL_OK; }
mpl_device mpl_model_device(const mpl_model *m) { return m->cfg.device; }

