/* The "dense" entry of the attention registry: core/attn.h's table of
 * function pointers on top of the fp32 dense functions. Separate from the
 * template so the numerics (dense_impl.h) know nothing of the model's
 * interface. Dense attention has no parameters and no communicator. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/layers.h"
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

static int64_t dense_work_bytes(void *impl, const mpl_attn_geom *g)
{
    const mpl_attn_dense_args a = dense_args(impl, g);
    return mpl_attn_dense_work_bytes_f32(&a);
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

/* Streaming: the K/V cache of every token so far (rotated k), grown by
 * doubling. Dense is the oracle: a token costs O(position). */
typedef struct dense_stream {
    int64_t n_seq, n, cap;
    float *k, *v;          /* (n_seq, cap, H*d) */
    float *p;              /* (cap) probabilities of one row */
    float *q;              /* (H*d) the rotated query */
} dense_stream;

static void dense_stream_destroy(void **state)
{
    if (!state || !*state) return;
    dense_stream *ds = *state;
    free(ds->k);
    free(ds->v);
    free(ds->p);
    free(ds->q);
    free(ds);
    *state = NULL;
}

static mpl_status dense_stream_create(void *impl, int layer, int64_t n_seq, void **state)
{
    (void)layer;
    const dense_impl *im = impl;
    if (!im->cfg.causal)
        return mpl_err(MPL_ERR_UNSUPPORTED, "streaming needs causal attention");
    dense_stream *ds;
    MPL_ALLOC(ds, 1);
    ds->n_seq = n_seq;
    ds->q = malloc((size_t)im->cfg.n_head * (size_t)im->cfg.head_dim * sizeof *ds->q);
    if (!ds->q) {
        free(ds);
        return mpl_err(MPL_ERR_NOMEM, "out of memory for a dense stream");
    }
    *state = ds;
    return MPL_OK;
}

static mpl_status dense_stream_grow(dense_stream *ds, int64_t HD)
{
    int64_t cap = ds->cap ? 2 * ds->cap : 64;
    float *k = malloc((size_t)(ds->n_seq * cap * HD) * sizeof *k);
    float *v = malloc((size_t)(ds->n_seq * cap * HD) * sizeof *v);
    float *p = malloc((size_t)cap * sizeof *p);
    if (!k || !v || !p) {
        free(k), free(v), free(p);
        return mpl_err(MPL_ERR_NOMEM, "out of memory growing the K/V cache to %lld tokens",
                       (long long)cap);
    }
    for (int64_t s = 0; s < ds->n_seq && ds->n; s++) {
        memcpy(k + s * cap * HD, ds->k + s * ds->cap * HD, (size_t)(ds->n * HD) * sizeof *k);
        memcpy(v + s * cap * HD, ds->v + s * ds->cap * HD, (size_t)(ds->n * HD) * sizeof *v);
    }
    free(ds->k), free(ds->v), free(ds->p);
    ds->k = k, ds->v = v, ds->p = p, ds->cap = cap;
    return MPL_OK;
}

static mpl_status dense_stream_step(void *impl, int layer, void *state, const float *params,
                                    int64_t pos, const float *qkv_row, float *out_row)
{
    (void)layer;
    (void)params;
    const dense_impl *im = impl;
    dense_stream *ds = state;
    const int H = im->cfg.n_head, d = im->cfg.head_dim;
    const int64_t HD = (int64_t)H * d;
    if (pos != ds->n)
        return mpl_err(MPL_ERR_ARG, "dense stream: position %lld after %lld tokens",
                       (long long)pos, (long long)ds->n);
    if (ds->n == ds->cap) MPL_CHECK(dense_stream_grow(ds, HD));
    const float scale = 1.0f / sqrtf((float)d);
    for (int64_t s = 0; s < ds->n_seq; s++) {
        const float *row = qkv_row + s * 3 * HD;
        float *K = ds->k + s * ds->cap * HD, *V = ds->v + s * ds->cap * HD;
        float *q = ds->q;
        memcpy(q, row, (size_t)HD * sizeof *q);
        memcpy(K + ds->n * HD, row + HD, (size_t)HD * sizeof *K);
        memcpy(V + ds->n * HD, row + 2 * HD, (size_t)HD * sizeof *V);
        if (im->cfg.rope_theta > 0) {
            mpl_rope_apply_f32(q, 1, 1, HD, 0, H, d, pos, im->cfg.rope_theta, 1);
            mpl_rope_apply_f32(K + ds->n * HD, 1, 1, HD, 0, H, d, pos, im->cfg.rope_theta, 1);
        }
        for (int h = 0; h < H; h++) {
            float m = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= ds->n; j++) {
                float dot = 0;
                for (int c = 0; c < d; c++) dot += q[h * d + c] * K[j * HD + h * d + c];
                ds->p[j] = dot * scale;
                m = ds->p[j] > m ? ds->p[j] : m;
            }
            float *o = out_row + s * HD + h * d;
            memset(o, 0, (size_t)d * sizeof *o);
            for (int64_t j = 0; j <= ds->n; j++) {
                float pj = expf(ds->p[j] - m);
                sum += pj;
                for (int c = 0; c < d; c++) o[c] += pj * V[j * HD + h * d + c];
            }
            for (int c = 0; c < d; c++) o[c] /= sum;
        }
    }
    ds->n++;
    return MPL_OK;
}

static const mpl_attn_ops dense_ops = {
    .name = "dense",
    .declare_params = NULL,
    .init_params = NULL,
    .saved_elems = dense_saved_elems,
    .forward = dense_forward,
    .backward = dense_backward,
    .destroy = dense_destroy,
    .stream_create = dense_stream_create,
    .stream_step = dense_stream_step,
    .stream_destroy = dense_stream_destroy,
    .work_bytes = dense_work_bytes,
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
