/* The "dense" attention on the GPU (attention/registry_cuda.h): the
 * windowed softmax kernels of band.cu with the window = the whole chunk.
 * saved is laid out as the CPU's (dense.h): rotated q, rotated k, then the
 * log-sum-exp of every row, so the two can be compared entry by entry. */
#include "attn_cuda.h"

static int64_t dense_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const cuda_attn *a = impl;
    return g->n_seq * g->n_tok * (int64_t)a->cfg.n_head * (2 * (int64_t)a->cfg.head_dim + 1);
}

/* Workspace of the backward: dq, dk (S, T, Hd) and D (S, H, T). */
static int64_t dense_work_bytes(void *impl, const mpl_attn_geom *g)
{
    const cuda_attn *a = impl;
    const int64_t rows = g->n_seq * g->n_tok;
    return (int64_t)sizeof(float) * rows * (2 * (int64_t)a->cfg.n_head * a->cfg.head_dim +
                                            a->cfg.n_head);
}

static mpl_status dense_forward(void *impl, int layer, const mpl_attn_geom *g,
                                const float *params, const float *qkv, float *out, float *saved)
{
    (void)layer, (void)params;
    cuda_attn *a = impl;
    MPL_CHECK(mpl_attn_cuda_check_geom(a, g));
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim, rows = g->n_seq * g->n_tok;
    float *qr = saved, *kr = saved + rows * HD, *lse = saved + 2 * rows * HD;
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, 0, qr));
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, HD, kr));
    const mpl_cuda_attn_dims d = mpl_attn_cuda_dims(a, g, g->n_tok > 0 ? g->n_tok : 1, 1);
    MPL_CHECK(mpl_cuda_band_forward(&d, qr, kr, qkv, out, lse, mpl_cuda_stream(a->cu)));
    return MPL_OK;
}

static mpl_status dense_backward(void *impl, int layer, const mpl_attn_geom *g,
                                 const float *params, const float *qkv, const float *saved,
                                 const float *dout, float *dqkv, float *dparams)
{
    (void)layer, (void)params, (void)dparams;
    cuda_attn *a = impl;
    MPL_CHECK(mpl_attn_cuda_check_geom(a, g));
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim, rows = g->n_seq * g->n_tok;
    const float *qr = saved, *kr = saved + rows * HD, *lse = saved + 2 * rows * HD;
    void *ws;
    MPL_CHECK(mpl_attn_cuda_ws(a, (size_t)dense_work_bytes(a, g), &ws));
    float *dq = ws, *dk = dq + rows * HD, *D = dk + rows * HD;
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    const mpl_cuda_attn_dims d = mpl_attn_cuda_dims(a, g, g->n_tok > 0 ? g->n_tok : 1, 1);
    MPL_CHECK(mpl_cuda_band_backward_q(&d, qr, kr, qkv, lse, dout, dq, D, s));
    MPL_CHECK(mpl_cuda_band_backward_kv(&d, qr, kr, qkv, lse, dout, D, dk, dqkv, s));
    MPL_CHECK(mpl_attn_cuda_add_unrotated(a, g, dq, 0, dqkv));
    MPL_CHECK(mpl_attn_cuda_add_unrotated(a, g, dk, HD, dqkv));
    return MPL_OK;
}

static const mpl_attn_ops dense_cuda_ops = {
    .name = "dense",
    .saved_elems = dense_saved_elems,
    .forward = dense_forward,
    .backward = dense_backward,
    .destroy = mpl_attn_cuda_base_free,
    .device = MPL_DEVICE_CUDA,
    .work_bytes = dense_work_bytes,
};

mpl_status mpl_attn_cuda_dense_create(const mpl_attn_cfg *cfg, mpl_attn *out)
{
    cuda_attn *a;
    MPL_CHECK(mpl_attn_cuda_base(cfg, &a));
    out->ops = &dense_cuda_ops;
    out->impl = a;
    return MPL_OK;
}
