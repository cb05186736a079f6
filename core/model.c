/* Model assembly: the parameter layout, initialisation, and the forward and
 * backward passes that chain the layers of layers.h with the attention
 * interface of attn.h. Activations saved for backward live in one slab,
 * sized by mpl_model_reserve for the largest call. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "philox.h"

/* Offsets of one block's parameters in the slab. */
typedef struct block_params {
    int64_t ln1_g, wqkv, wo, ln2_g, w1, w2;
} block_params;

/* Offsets of one block's saved activations in the activation slab. */
typedef struct block_acts {
    int64_t x_in;     /* (N, C) residual stream entering the block */
    int64_t rstd1;    /* (N)    */
    int64_t xn1;      /* (N, C) */
    int64_t qkv;      /* (N, 3C) */
    int64_t att;      /* (N, C) attention output */
    int64_t att_saved;/* attention's own saved floats */
    int64_t xmid;     /* (N, C) residual after attention */
    int64_t rstd2;    /* (N)    */
    int64_t xn2;      /* (N, C) */
    int64_t h_pre;    /* (N, H4) */
    int64_t h_act;    /* (N, H4) */
} block_acts;

struct mpl_model {
    mpl_model_cfg cfg;
    mpl_attn *attn;               /* borrowed */
    mpl_slab_layout layout;
    float *params, *grads;
    int64_t wte, lnf_g;           /* offsets */
    block_params *blk;            /* (n_layer) */

    /* activations, sized for cap_tok tokens in all */
    int64_t cap_seq, cap_tok_per_seq;
    float *acts;
    block_acts *act;              /* (n_layer) */
    int64_t x_final, rstdf, xnf, logits, losses; /* offsets in acts */
    /* backward scratch (not saved across calls) */
    float *scratch;
    int64_t s_dx, s_dxn, s_dqkv, s_datt, s_dh_act, s_dh_pre, s_dlogits;
    int32_t *tokens, *targets;    /* (cap) copies for backward */
    mpl_attn_geom geom;           /* of the last forward */
    int have_forward;

    /* streaming generation (mpl_model_stream_*) */
    int64_t st_seq, st_pos;
    void **st_attn;               /* (n_layer) per-layer attention states */
    float *st_buf;                /* one token's activations */
};

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
    const int64_t C = cfg->d_model, V = cfg->vocab_size, H4 = cfg->mlp_mult * C;
    m->blk = calloc((size_t)cfg->n_layer, sizeof *m->blk);
    m->act = calloc((size_t)cfg->n_layer, sizeof *m->act);
    if (!m->blk || !m->act) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory for model tables");

    MPL_CHECK_GOTO(add_param(m, "wte", 2, V, C, &m->wte), fail);
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
    MPL_CHECK_GOTO(mpl_slab_alloc(m->layout.n_elems, &m->params), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(m->layout.n_elems, &m->grads), fail);
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
    mpl_model_stream_end(m);
    mpl_slab_layout_free(&m->layout);
    mpl_slab_free(&m->params);
    mpl_slab_free(&m->grads);
    mpl_slab_free(&m->acts);
    mpl_slab_free(&m->scratch);
    free(m->blk);
    free(m->act);
    free(m->tokens);
    free(m->targets);
    free(m);
    *mp = NULL;
}

void mpl_model_init_params(mpl_model *m, uint64_t seed)
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
}

mpl_status mpl_model_reserve(mpl_model *m, int64_t n_seq, int64_t n_tok)
{
    if (n_seq < 1 || n_tok < 1)
        return mpl_err(MPL_ERR_ARG, "reserve: n_seq=%lld n_tok=%lld must be >= 1",
                       (long long)n_seq, (long long)n_tok);
    if (m->acts && n_seq <= m->cap_seq && n_tok <= m->cap_tok_per_seq &&
        n_seq * n_tok <= m->cap_seq * m->cap_tok_per_seq)
        return MPL_OK;
    mpl_slab_free(&m->acts);
    mpl_slab_free(&m->scratch);
    free(m->tokens);
    free(m->targets);
    m->tokens = m->targets = NULL;
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    const int64_t N = n_seq * n_tok;
    mpl_attn_geom g = {n_seq, n_tok, 0, NULL};
    int64_t att_saved = m->attn->ops->saved_elems(m->attn->impl, &g);
    /* Offsets rounded to 16 floats so every buffer is 64-byte aligned. */
    int64_t off = 0;
#define TAKE(dst, n) do { dst = off; off += ((n) + 15) / 16 * 16; } while (0)
    for (int l = 0; l < m->cfg.n_layer; l++) {
        block_acts *a = &m->act[l];
        TAKE(a->x_in, N * C);
        TAKE(a->rstd1, N);
        TAKE(a->xn1, N * C);
        TAKE(a->qkv, N * 3 * C);
        TAKE(a->att, N * C);
        TAKE(a->att_saved, att_saved);
        TAKE(a->xmid, N * C);
        TAKE(a->rstd2, N);
        TAKE(a->xn2, N * C);
        TAKE(a->h_pre, N * H4);
        TAKE(a->h_act, N * H4);
    }
    TAKE(m->x_final, N * C);
    TAKE(m->rstdf, N);
    TAKE(m->xnf, N * C);
    TAKE(m->logits, N * V);
    TAKE(m->losses, N);
    MPL_CHECK(mpl_slab_alloc(off, &m->acts));
    off = 0;
    TAKE(m->s_dx, N * C);
    TAKE(m->s_dxn, N * C);
    TAKE(m->s_dqkv, N * 3 * C);
    TAKE(m->s_datt, N * C);
    TAKE(m->s_dh_act, N * H4);
    TAKE(m->s_dh_pre, N * H4);
    TAKE(m->s_dlogits, N * V);
#undef TAKE
    MPL_CHECK(mpl_slab_alloc(off, &m->scratch));
    m->tokens = malloc((size_t)N * sizeof *m->tokens);
    m->targets = malloc((size_t)N * sizeof *m->targets);
    if (!m->tokens || !m->targets)
        return mpl_err(MPL_ERR_NOMEM, "out of memory for %lld token ids", (long long)N);
    m->cap_seq = n_seq;
    m->cap_tok_per_seq = n_tok;
    return MPL_OK;
}

mpl_status mpl_model_forward(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                             const int32_t *targets, double *loss_sum, int64_t *n_counted)
{
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    const int64_t N = g->n_seq * g->n_tok;
    if (!m->acts || g->n_seq > m->cap_seq || g->n_tok > m->cap_tok_per_seq)
        return mpl_err(MPL_ERR_ARG, "forward of %lldx%lld tokens exceeds the reserved %lldx%lld",
                       (long long)g->n_seq, (long long)g->n_tok, (long long)m->cap_seq,
                       (long long)m->cap_tok_per_seq);
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return mpl_err(MPL_ERR_ARG, "token id %d at %lld outside the vocabulary [0, %lld)",
                           tokens[i], (long long)i, (long long)V);
    memcpy(m->tokens, tokens, (size_t)N * sizeof *tokens);
    for (int64_t i = 0; i < N; i++) m->targets[i] = targets ? targets[i] : -1;
    m->geom = *g;
    m->have_forward = 0;

    float *A = m->acts, *P = m->params;
    mpl_embed_forward_f32(A + m->act[0].x_in, tokens, P + m->wte, N, C);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const block_acts *a = &m->act[l];
        const block_params *b = &m->blk[l];
        float *x_out = l + 1 < m->cfg.n_layer ? A + m->act[l + 1].x_in : A + m->x_final;
        mpl_rmsnorm_forward_f32(A + a->xn1, A + a->rstd1, A + a->x_in, P + b->ln1_g, N, C,
                                m->cfg.norm_eps);
        mpl_linear_forward_f32(A + a->qkv, A + a->xn1, P + b->wqkv, N, C, 3 * C);
        MPL_CHECK(m->attn->ops->forward(m->attn->impl, l, g, P, A + a->qkv, A + a->att,
                                        A + a->att_saved));
        mpl_linear_forward_f32(A + a->xmid, A + a->att, P + b->wo, N, C, C);
        float *restrict xm = A + a->xmid;
        const float *restrict xi = A + a->x_in;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N * C; i++) xm[i] += xi[i];
        mpl_rmsnorm_forward_f32(A + a->xn2, A + a->rstd2, A + a->xmid, P + b->ln2_g, N, C,
                                m->cfg.norm_eps);
        mpl_linear_forward_f32(A + a->h_pre, A + a->xn2, P + b->w1, N, C, H4);
        mpl_gelu_forward_f32(A + a->h_act, A + a->h_pre, N * H4);
        mpl_linear_forward_f32(x_out, A + a->h_act, P + b->w2, N, H4, C);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N * C; i++) x_out[i] += xm[i];
    }
    mpl_rmsnorm_forward_f32(A + m->xnf, A + m->rstdf, A + m->x_final, P + m->lnf_g, N, C,
                            m->cfg.norm_eps);
    mpl_linear_forward_f32(A + m->logits, A + m->xnf, P + m->wte, N, C, V);
    double sum = 0;
    int64_t cnt = 0;
    mpl_xent_forward_f32(A + m->losses, A + m->logits, m->targets, N, V);
    for (int64_t i = 0; i < N; i++)
        if (m->targets[i] >= 0) {
            sum += A[m->losses + i];
            cnt++;
        }
    if (loss_sum) *loss_sum = sum;
    if (n_counted) *n_counted = cnt;
    m->have_forward = 1;
    return MPL_OK;
}

mpl_status mpl_model_backward(mpl_model *m, double loss_scale)
{
    if (!m->have_forward) return mpl_err(MPL_ERR_ARG, "backward without a forward");
    const mpl_attn_geom *g = &m->geom;
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    const int64_t N = g->n_seq * g->n_tok;
    float *A = m->acts, *P = m->params, *G = m->grads, *S = m->scratch;
    float *dx = S + m->s_dx, *dxn = S + m->s_dxn, *dqkv = S + m->s_dqkv;
    float *datt = S + m->s_datt, *dh_act = S + m->s_dh_act, *dh_pre = S + m->s_dh_pre;
    float *dlogits = S + m->s_dlogits;
#define ZERO(p, n) memset((p), 0, (size_t)(n) * sizeof(float))
    ZERO(dlogits, N * V);
    mpl_xent_backward_f32(dlogits, A + m->logits, m->targets, N, V, loss_scale);
    ZERO(dxn, N * C);
    mpl_linear_backward_f32(dxn, G + m->wte, dlogits, A + m->xnf, P + m->wte, N, C, V);
    ZERO(dx, N * C);
    mpl_rmsnorm_backward_f32(dx, G + m->lnf_g, dxn, A + m->x_final, P + m->lnf_g,
                             A + m->rstdf, N, C);
    for (int l = (int)m->cfg.n_layer - 1; l >= 0; l--) {
        const block_acts *a = &m->act[l];
        const block_params *b = &m->blk[l];
        /* dx holds d(block output); the residual passes it to xmid as is. */
        ZERO(dh_act, N * H4);
        mpl_linear_backward_f32(dh_act, G + b->w2, dx, A + a->h_act, P + b->w2, N, H4, C);
        ZERO(dh_pre, N * H4);
        mpl_gelu_backward_f32(dh_pre, dh_act, A + a->h_pre, N * H4);
        ZERO(dxn, N * C);
        mpl_linear_backward_f32(dxn, G + b->w1, dh_pre, A + a->xn2, P + b->w1, N, C, H4);
        mpl_rmsnorm_backward_f32(dx, G + b->ln2_g, dxn, A + a->xmid, P + b->ln2_g,
                                 A + a->rstd2, N, C);
        /* dx now holds d(xmid); again the residual passes it to x_in. */
        ZERO(datt, N * C);
        mpl_linear_backward_f32(datt, G + b->wo, dx, A + a->att, P + b->wo, N, C, C);
        ZERO(dqkv, N * 3 * C);
        MPL_CHECK(m->attn->ops->backward(m->attn->impl, l, g, P, A + a->qkv,
                                         A + a->att_saved, datt, dqkv, G));
        ZERO(dxn, N * C);
        mpl_linear_backward_f32(dxn, G + b->wqkv, dqkv, A + a->xn1, P + b->wqkv, N, C, 3 * C);
        mpl_rmsnorm_backward_f32(dx, G + b->ln1_g, dxn, A + a->x_in, P + b->ln1_g,
                                 A + a->rstd1, N, C);
    }
    mpl_embed_backward_f32(G + m->wte, dx, m->tokens, N, C);
#undef ZERO
    return MPL_OK;
}

const float *mpl_model_logits(const mpl_model *m) { return m->acts + m->logits; }
const mpl_slab_layout *mpl_model_layout(const mpl_model *m) { return &m->layout; }
float *mpl_model_params(mpl_model *m) { return m->params; }
float *mpl_model_grads(mpl_model *m) { return m->grads; }
const mpl_model_cfg *mpl_model_config(const mpl_model *m) { return &m->cfg; }

void mpl_model_zero_grad(mpl_model *m)
{
    memset(m->grads, 0, (size_t)m->layout.n_elems * sizeof(float));
}

void mpl_model_stream_end(mpl_model *m)
{
    if (!m->st_attn) return;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (m->st_attn[l]) m->attn->ops->stream_destroy(&m->st_attn[l]);
    free(m->st_attn);
    m->st_attn = NULL;
    mpl_slab_free(&m->st_buf);
}

mpl_status mpl_model_stream_begin(mpl_model *m, int64_t n_seq)
{
    mpl_status st = MPL_OK;
    const mpl_attn_ops *ops = m->attn->ops;
    if (!ops->stream_create || !ops->stream_step || !ops->stream_destroy)
        return mpl_err(MPL_ERR_UNSUPPORTED, "attention '%s' has no streaming form", ops->name);
    if (n_seq < 1) return mpl_err(MPL_ERR_ARG, "stream of n_seq=%lld sequences", (long long)n_seq);
    mpl_model_stream_end(m);
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    m->st_attn = calloc((size_t)m->cfg.n_layer, sizeof *m->st_attn);
    if (!m->st_attn) return mpl_err(MPL_ERR_NOMEM, "out of memory for a stream");
    for (int l = 0; l < m->cfg.n_layer; l++)
        MPL_CHECK_GOTO(ops->stream_create(m->attn->impl, l, n_seq, &m->st_attn[l]), fail);
    /* x, xn, qkv(3C), att, h(2*H4), logits(V), rstd, per sequence */
    MPL_CHECK_GOTO(mpl_slab_alloc(n_seq * (7 * C + 2 * H4 + V + 1), &m->st_buf), fail);
    m->st_seq = n_seq;
    m->st_pos = 0;
    return MPL_OK;
fail:
    mpl_model_stream_end(m);
    return st;
}

mpl_status mpl_model_stream_step(mpl_model *m, const int32_t *tokens, const float **logits)
{
    if (!m->st_attn) return mpl_err(MPL_ERR_ARG, "stream_step without stream_begin");
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    const int64_t N = m->st_seq;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return mpl_err(MPL_ERR_ARG, "token id %d outside the vocabulary [0, %lld)", tokens[i],
                           (long long)V);
    float *P = m->params, *b = m->st_buf;
    float *x = b, *xn = x + N * C, *qkv = xn + N * C, *att = qkv + 3 * N * C;
    float *h_pre = att + N * C, *h_act = h_pre + N * H4, *tmp = h_act + N * H4;
    float *lg = tmp + N * C, *rstd = lg + N * V;
    /* The same layers as mpl_model_forward, one row per sequence. */
    mpl_embed_forward_f32(x, tokens, P + m->wte, N, C);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const block_params *bp = &m->blk[l];
        mpl_rmsnorm_forward_f32(xn, rstd, x, P + bp->ln1_g, N, C, m->cfg.norm_eps);
        mpl_linear_forward_f32(qkv, xn, P + bp->wqkv, N, C, 3 * C);
        MPL_CHECK(m->attn->ops->stream_step(m->attn->impl, l, m->st_attn[l], P, m->st_pos, qkv,
                                            att));
        mpl_linear_forward_f32(tmp, att, P + bp->wo, N, C, C);
        for (int64_t i = 0; i < N * C; i++) x[i] += tmp[i];
        mpl_rmsnorm_forward_f32(xn, rstd, x, P + bp->ln2_g, N, C, m->cfg.norm_eps);
        mpl_linear_forward_f32(h_pre, xn, P + bp->w1, N, C, H4);
        mpl_gelu_forward_f32(h_act, h_pre, N * H4);
        mpl_linear_forward_f32(tmp, h_act, P + bp->w2, N, H4, C);
        for (int64_t i = 0; i < N * C; i++) x[i] += tmp[i];
    }
    mpl_rmsnorm_forward_f32(xn, rstd, x, P + m->lnf_g, N, C, m->cfg.norm_eps);
    mpl_linear_forward_f32(lg, xn, P + m->wte, N, C, V);
    m->st_pos++;
    *logits = lg;
    return MPL_OK;
}
