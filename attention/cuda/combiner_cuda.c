/* The "combiner_fixed" attention on the GPU (attention/registry_cuda.h),
 * one rank (pos0 = 0, the call holds whole sequences, as the CPU's
 * one-rank path): summaries, then the attention over direct and summary
 * slots (combiner.cu). saved is the CPU's layout: the log-sum-exp of every
 * row (S, H, T); the backward recomputes the summaries and the rotated
 * rows. */
#include "attn_cuda.h"

typedef struct cfx_ws {
    float *QR, *KR, *dQR, *dKR;           /* (S, T, Hd) */
    float *khat, *vhat, *qhat, *dkh, *dvh; /* (S, n_seg, Hd) */
    float *D, *w;                          /* (S, H, T) */
} cfx_ws;

static int64_t n_seg_of(const cuda_attn *a, const mpl_attn_geom *g)
{
    return (g->n_tok + a->cfg.segment - 1) / a->cfg.segment;
}

static size_t ws_carve(const cuda_attn *a, const mpl_attn_geom *g, char *base, cfx_ws *w)
{
    mpl_cuda_carve c = {base, 0};
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim, rows = g->n_seq * g->n_tok;
    const int64_t ns = g->n_seq * n_seg_of(a, g) * HD, st = g->n_seq * a->cfg.n_head * g->n_tok;
    float **r[] = {&w->QR, &w->KR, &w->dQR, &w->dKR};
    for (size_t i = 0; i < 4; i++) *r[i] = mpl_cuda_carve_take(&c, rows * HD, sizeof(float));
    float **s[] = {&w->khat, &w->vhat, &w->qhat, &w->dkh, &w->dvh};
    for (size_t i = 0; i < 5; i++) *s[i] = mpl_cuda_carve_take(&c, ns, sizeof(float));
    w->D = mpl_cuda_carve_take(&c, st, sizeof(float));
    w->w = mpl_cuda_carve_take(&c, st, sizeof(float));
    return c.off;
}

static int64_t cfx_work_bytes(void *impl, const mpl_attn_geom *g)
{
    cfx_ws w;
    return (int64_t)ws_carve(impl, g, NULL, &w);
}

static int64_t cfx_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const cuda_attn *a = impl;
    return g->n_seq * (int64_t)a->cfg.n_head * g->n_tok;
}

static mpl_status prepare(cuda_attn *a, const mpl_attn_geom *g, const float *qkv, cfx_ws *w,
                          mpl_cuda_attn_dims *dm)
{
    MPL_CHECK(mpl_attn_cuda_check_geom(a, g));
    if (g->pos0 != 0)
        return mpl_err(MPL_ERR_ARG,
                       "combiner_fixed (GPU) runs one rank holding whole sequences: pos0=%lld "
                       "must be 0", (long long)g->pos0);
    void *base;
    MPL_CHECK(mpl_attn_cuda_ws(a, ws_carve(a, g, NULL, w), &base));
    ws_carve(a, g, base, w);
    *dm = mpl_attn_cuda_dims(a, g, 1, a->cfg.segment);
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim;
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    MPL_CHECK(mpl_cuda_cfx_summarize(dm, qkv, w->khat, w->vhat, w->qhat, w->w, s));
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, 0, w->QR));
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, HD, w->KR));
    return MPL_OK;
}

static mpl_status cfx_forward(void *impl, int layer, const mpl_attn_geom *g, const float *params,
                              const float *qkv, float *out, float *saved)
{
    (void)layer, (void)params;
    cuda_attn *a = impl;
    if (g->n_seq * g->n_tok == 0) return MPL_OK;
    cfx_ws w;
    mpl_cuda_attn_dims dm;
    MPL_CHECK(prepare(a, g, qkv, &w, &dm));
    MPL_CHECK(mpl_cuda_cfx_forward(&dm, w.QR, w.KR, qkv, w.khat, w.vhat, out, saved,
                                   mpl_cuda_stream(a->cu)));
    return MPL_OK;
}

static mpl_status cfx_backward(void *impl, int layer, const mpl_attn_geom *g, const float *params,
                               const float *qkv, const float *saved, const float *dout,
                               float *dqkv, float *dparams)
{
    (void)layer, (void)params, (void)dparams;
    cuda_attn *a = impl;
    if (g->n_seq * g->n_tok == 0) return MPL_OK;
    cfx_ws w;
    mpl_cuda_attn_dims dm;
    MPL_CHECK(prepare(a, g, qkv, &w, &dm));
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim;
    MPL_CHECK(mpl_cuda_cfx_backward_q(&dm, w.QR, w.KR, qkv, w.khat, w.vhat, saved, dout, w.dQR,
                                      w.D, dqkv, s));
    MPL_CHECK(mpl_cuda_cfx_backward_kv(&dm, w.QR, w.KR, qkv, saved, dout, w.D, w.dKR, dqkv, s));
    MPL_CHECK(mpl_cuda_cfx_backward_summary(&dm, qkv, w.khat, w.vhat, saved, dout, w.D, w.dkh,
                                            w.dvh, s));
    MPL_CHECK(mpl_cuda_cfx_summarize_backward(&dm, qkv, w.dkh, w.dvh, w.w, dqkv, s));
    MPL_CHECK(mpl_attn_cuda_add_unrotated(a, g, w.dQR, 0, dqkv));
    MPL_CHECK(mpl_attn_cuda_add_unrotated(a, g, w.dKR, HD, dqkv));
    return MPL_OK;
}

static const mpl_attn_ops cfx_cuda_ops = {
    .name = "combiner_fixed",
    .saved_elems = cfx_saved_elems,
    .forward = cfx_forward,
    .backward = cfx_backward,
    .destroy = mpl_attn_cuda_base_free,
    .device = MPL_DEVICE_CUDA,
    .work_bytes = cfx_work_bytes,
};

mpl_status mpl_attn_cuda_combiner_create(const mpl_attn_cfg *cfg, mpl_attn *out)
{
    if (cfg->segment < 1)
        return mpl_err(MPL_ERR_ARG, "combiner_fixed: segment=%lld must be >= 1",
                       (long long)cfg->segment);
    cuda_attn *a;
    MPL_CHECK(mpl_attn_cuda_base(cfg, &a));
    out->ops = &cfx_cuda_ops;
    out->impl = a;
    return MPL_OK;
}
