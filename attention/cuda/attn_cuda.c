/* The shared part of the GPU attention (attn_cuda.h) and its entry from
 * the registry (attention/cuda.h). */
#include "attn_cuda.h"

#include <stdlib.h>

#include "../../core/cuda/kernels.h"
#include "../registry_cuda.h"

mpl_status mpl_attn_cuda_create(const mpl_attn_cfg *cfg, mpl_attn *out)
{
    switch (cfg->kind) {
    case MPL_ATTN_KIND_DENSE: return mpl_attn_cuda_dense_create(cfg, out);
    case MPL_ATTN_KIND_FMM: return mpl_attn_cuda_fmm_create(cfg, out);
    case MPL_ATTN_KIND_COMBINER_FIXED: return mpl_attn_cuda_combiner_create(cfg, out);
    default:
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "attn=%s has no GPU implementation yet (device=cuda runs dense, fmm and "
                       "combiner_fixed)", mpl_attn_kind_name(cfg->kind));
    }
}

mpl_status mpl_attn_cuda_base(const mpl_attn_cfg *cfg, cuda_attn **out)
{
    *out = NULL;
    if (!cfg->cuda) return mpl_err(MPL_ERR_ARG, "device=cuda attention needs a CUDA context");
    if (cfg->head_dim > MPL_CUDA_ATTN_MAX_D)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "attention on the GPU takes head_dim <= %d in this version, got %d "
                       "(d_model / n_head)", MPL_CUDA_ATTN_MAX_D, cfg->head_dim);
    cuda_attn *a;
    MPL_ALLOC(a, 1);
    a->cfg = *cfg;
    a->cu = cfg->cuda;
    *out = a;
    return MPL_OK;
}

void mpl_attn_cuda_base_free(void **impl)
{
    if (!impl || !*impl) return;
    cuda_attn *a = *impl;
    if (a->ws) {
        if (mpl_cuda_sync(a->cu) != MPL_OK) mpl_err_clear();
        mpl_cuda_free(a->cu, &a->ws);
    }
    if (a->cpu.ops) a->cpu.ops->destroy(&a->cpu.impl);
    free(a->off);
    free(a);
    *impl = NULL;
}

mpl_status mpl_attn_cuda_ws(cuda_attn *a, size_t n_bytes, void **ws)
{
    if (n_bytes > a->cap || !a->ws) {
        mpl_cuda_free(a->cu, &a->ws);
        a->cap = 0;
        MPL_CHECK(mpl_cuda_alloc(a->cu, n_bytes, &a->ws));
        a->cap = n_bytes;
    }
    *ws = a->ws;
    return MPL_OK;
}

mpl_status mpl_attn_cuda_check_geom(const cuda_attn *a, const mpl_attn_geom *g)
{
    if (g->n_seq < 0 || g->n_tok < 0)
        return mpl_err(MPL_ERR_ARG, "GPU attention: n_seq=%lld n_tok=%lld must be >= 0",
                       (long long)g->n_seq, (long long)g->n_tok);
    if (g->mask)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "attention '%s' on the GPU takes no padding mask in this version",
                       mpl_attn_kind_name(a->cfg.kind));
    return MPL_OK;
}

mpl_cuda_attn_dims mpl_attn_cuda_dims(const cuda_attn *a, const mpl_attn_geom *g, int64_t window,
                                      int64_t seg)
{
    return (mpl_cuda_attn_dims){.S = g->n_seq, .T = g->n_tok, .H = a->cfg.n_head,
                                .d = a->cfg.head_dim, .causal = a->cfg.causal,
                                .window = window, .seg = seg};
}

mpl_status mpl_attn_cuda_rotated(const cuda_attn *a, const mpl_attn_geom *g, const float *qkv,
                                 int64_t col, float *dst)
{
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim, rows = g->n_seq * g->n_tok;
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    MPL_CHECK(mpl_cuda_axpy_2d(dst, HD, qkv + col, 3 * HD, rows, HD, 1.0f, 0, s));
    if (a->cfg.rope_theta > 0)
        MPL_CHECK(mpl_cuda_rope(dst, g->n_seq, g->n_tok, HD, 0, a->cfg.n_head, a->cfg.head_dim,
                                g->pos0, a->cfg.rope_theta, 1, s));
    return MPL_OK;
}

mpl_status mpl_attn_cuda_add_unrotated(const cuda_attn *a, const mpl_attn_geom *g, float *src,
                                       int64_t col, float *dqkv)
{
    const int64_t HD = (int64_t)a->cfg.n_head * a->cfg.head_dim, rows = g->n_seq * g->n_tok;
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    if (a->cfg.rope_theta > 0)
        MPL_CHECK(mpl_cuda_rope(src, g->n_seq, g->n_tok, HD, 0, a->cfg.n_head, a->cfg.head_dim,
                                g->pos0, a->cfg.rope_theta, -1, s));
    MPL_CHECK(mpl_cuda_axpy_2d(dqkv + col, 3 * HD, src, HD, rows, HD, 1.0f, 1, s));
    return MPL_OK;
}
