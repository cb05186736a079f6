/* The "fmm" attention on the GPU (attention/registry_cuda.h), one rank,
 * channel blend: the near field by the windowed softmax of band.cu, the
 * far field as chunked linear attention on batched fp32 GEMMs around the
 * kernels of fmm_far.cu, with the block states from a scan over blocks
 * (causal: exclusive prefix; bidirectional: the chunk's total, which on
 * one rank is the whole sequence's). Parameters are declared and
 * initialised by a CPU fmm instance, so layouts and initial values are
 * the CPU's. saved is the CPU's layout: lse (S, H, T), near (S, T, Hd),
 * far of every map (r, S, T, Hd); the backward recomputes the far field's
 * block quantities instead of saving them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/cuda/gemm.h"
#include "../../core/cuda/kernels.h"
#include "../fmm.h"
#include "attn_cuda.h"

#define FAR_C 64 /* rows per block of the chunked far field */

/* The workspace of one call (sized for the backward; the forward uses a part). */
typedef struct fmm_ws {
    float *QR, *KR, *dQR, *dKR, *gN, *gF, *fsum, *Dn;   /* (S, T, Hd), Dn (S, H, T) */
    float *Vg, *Qf, *Kf, *Num, *dN, *dQf, *dKf, *dVg;  /* (S H, Tp, d) */
    float *den, *dd, *rs;                              /* (S H, Tp) */
    float *Ab, *dA;                                    /* (S H nb, C, C) */
    float *Sst, *dSst, *zst, *dzst;                    /* (S H nb, d, d), (S H nb, d) */
    float *part;                                       /* blend gradient partials */
} fmm_ws;

typedef struct fmm_geo {
    int64_t S, T, H, d, HD, SH, Tp, nb, NB;
} fmm_geo;

static fmm_geo geo_of(const cuda_attn *a, const mpl_attn_geom *g)
{
    fmm_geo q;
    q.S = g->n_seq, q.T = g->n_tok, q.H = a->cfg.n_head, q.d = a->cfg.head_dim;
    q.HD = q.H * q.d, q.SH = q.S * q.H;
    q.nb = (q.T + FAR_C - 1) / FAR_C;
    q.Tp = q.nb * FAR_C, q.NB = q.SH * q.nb;
    return q;
}

static size_t ws_carve(const fmm_geo *q, char *base, fmm_ws *w)
{
    mpl_cuda_carve c = {base, 0};
    const size_t F = sizeof(float);
    const int64_t rows = q->S * q->T * q->HD, P = q->SH * q->Tp * q->d;
    float **big[] = {&w->QR, &w->KR, &w->dQR, &w->dKR, &w->gN, &w->gF, &w->fsum};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) *big[i] = mpl_cuda_carve_take(&c, rows, F);
    w->Dn = mpl_cuda_carve_take(&c, q->SH * q->T, F);
    float **pb[] = {&w->Vg, &w->Qf, &w->Kf, &w->Num, &w->dN, &w->dQf, &w->dKf, &w->dVg};
    for (size_t i = 0; i < sizeof pb / sizeof pb[0]; i++) *pb[i] = mpl_cuda_carve_take(&c, P, F);
    w->den = mpl_cuda_carve_take(&c, q->SH * q->Tp, F);
    w->dd = mpl_cuda_carve_take(&c, q->SH * q->Tp, F);
    w->rs = mpl_cuda_carve_take(&c, q->SH * q->Tp, F);
    w->Ab = mpl_cuda_carve_take(&c, q->NB * FAR_C * FAR_C, F);
    w->dA = mpl_cuda_carve_take(&c, q->NB * FAR_C * FAR_C, F);
    w->Sst = mpl_cuda_carve_take(&c, q->NB * q->d * q->d, F);
    w->dSst = mpl_cuda_carve_take(&c, q->NB * q->d * q->d, F);
    w->zst = mpl_cuda_carve_take(&c, q->NB * q->d, F);
    w->dzst = mpl_cuda_carve_take(&c, q->NB * q->d, F);
    w->part = mpl_cuda_carve_take(&c, mpl_cuda_colsum_partials(q->S * q->T, q->HD), F);
    return c.off;
}

static int64_t fmm_cuda_work_bytes(void *impl, const mpl_attn_geom *g)
{
    fmm_ws w;
    const fmm_geo q = geo_of(impl, g);
    return (int64_t)ws_carve(&q, NULL, &w);
}

/* What the forward keeps for the backward: the band's log-sum-exp per
 * row and head, the near field and each map's far field (the layout
 * fmm_cuda_forward writes; the CPU path saves less and recomputes). */
static int64_t fmm_cuda_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const cuda_attn *a = impl;
    const fmm_geo q = geo_of(a, g);
    return q.SH * q.T + (int64_t)(1 + a->cfg.fmm_n_maps) * q.S * q.T * q.HD;
}

/* One batched fp32 product over the NB blocks (row-major, fmm_gemm's
 * arguments plus the per-block strides). */
static mpl_status bgemm(const cuda_attn *a, int ta, int tb, int64_t m, int64_t n, int64_t k,
                        const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb,
                        int64_t sb, float beta, float *D, int64_t ldd, int64_t sd, int64_t batch)
{
    const mpl_cuda_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .alpha = 1,
                                  .beta = beta, .ab_type = MPL_CUDA_F32, .d_type = MPL_CUDA_F32,
                                  .a = A, .lda = lda, .stride_a = sa, .b = B, .ldb = ldb,
                                  .stride_b = sb, .d = D, .ldd = ldd, .stride_d = sd,
                                  .batch = batch};
    return mpl_cuda_gemm(a->cu, &g);
}

static mpl_cuda_far_opts opts_of(const cuda_attn *a, const mpl_attn_geom *g, int m)
{
    const mpl_attn_fmm_args args = mpl_attn_fmm_args_make(&a->cfg, g);
    double scale = 1.0 / sqrt((double)a->cfg.head_dim);
    if (args.far_scale == MPL_FMM_FAR_SCALE_INV_SQRT_N) scale = 1.0 / sqrt((double)args.seq_len);
    if (args.far_scale == MPL_FMM_FAR_SCALE_ONE) scale = 1.0;
    return (mpl_cuda_far_opts){.map = (int)a->cfg.fmm_maps[m],
                               .feature_norm = a->cfg.fmm_feature_norm,
                               .far_norm = a->cfg.fmm_far_norm, .scale = (float)scale,
                               .eps = (float)a->cfg.fmm_eps};
}

/* Map m's far field: features, block states, Num, den; far (the map's
 * rows, or NULL) and den (or NULL). Vg must hold v. */
static mpl_status far_forward(const cuda_attn *a, const mpl_attn_geom *g, const fmm_geo *q,
                              const fmm_ws *w, int m, const float *qkv, float *far, float *den)
{
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    const mpl_cuda_attn_dims dm = mpl_attn_cuda_dims(a, g, a->cfg.band, 1);
    const mpl_cuda_far_opts o = opts_of(a, g, m);
    const int64_t C = FAR_C, d = q->d, Cd = C * d, dd = d * d, CC = C * C;
    const int causal = a->cfg.causal;
    MPL_CHECK(mpl_cuda_far_features(&dm, &o, qkv, 0, q->Tp, w->Qf, s));
    MPL_CHECK(mpl_cuda_far_features(&dm, &o, qkv, q->HD, q->Tp, w->Kf, s));
    /* block sums S_b = Kf_b^T V_b, z_b = sum of Kf_b rows, then the states */
    MPL_CHECK(bgemm(a, 1, 0, d, d, C, w->Kf, d, Cd, w->Vg, d, Cd, 0, w->Sst, d, dd, q->NB));
    MPL_CHECK(mpl_cuda_far_block_colsum(w->Kf, NULL, q->NB, C, (int)d, w->zst, s));
    MPL_CHECK(mpl_cuda_far_scan(w->Sst, q->SH, q->nb, dd, causal ? 0 : 1, s));
    MPL_CHECK(mpl_cuda_far_scan(w->zst, q->SH, q->nb, d, causal ? 0 : 1, s));
    if (causal) {
        MPL_CHECK(bgemm(a, 0, 1, C, C, d, w->Qf, d, Cd, w->Kf, d, Cd, 0, w->Ab, C, CC, q->NB));
        MPL_CHECK(mpl_cuda_far_tril(w->Ab, q->NB, (int)C, w->rs, s));
        MPL_CHECK(bgemm(a, 0, 0, C, d, C, w->Ab, C, CC, w->Vg, d, Cd, 0, w->Num, d, Cd, q->NB));
    }
    MPL_CHECK(bgemm(a, 0, 0, C, d, d, w->Qf, d, Cd, w->Sst, d, dd, causal ? 1.0f : 0.0f, w->Num,
                    d, Cd, q->NB));
    MPL_CHECK(mpl_cuda_far_finish(&dm, &o, q->Tp, (int)C, w->Num, w->Qf, w->zst,
                                  causal ? w->rs : NULL, den, far, s));
    return MPL_OK;
}

/* Map m's backward, after far_forward(den): dq, dk into dqkv, dv into dVg. */
static mpl_status far_backward(const cuda_attn *a, const mpl_attn_geom *g, const fmm_geo *q,
                               const fmm_ws *w, int m, const float *qkv, float *dqkv)
{
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    const mpl_cuda_attn_dims dm = mpl_attn_cuda_dims(a, g, a->cfg.band, 1);
    const mpl_cuda_far_opts o = opts_of(a, g, m);
    const int64_t C = FAR_C, d = q->d, Cd = C * d, dd = d * d, CC = C * C;
    const int causal = a->cfg.causal;
    MPL_CHECK(mpl_cuda_far_div_backward(&dm, &o, q->Tp, 1.0f / (float)a->cfg.fmm_n_maps, w->gF,
                                        w->Num, w->den, w->dN, w->dd, s));
    /* dQf = dN S^T + dd z^T (+ dA Kf) */
    MPL_CHECK(bgemm(a, 0, 1, C, d, d, w->dN, d, Cd, w->Sst, d, dd, 0, w->dQf, d, Cd, q->NB));
    MPL_CHECK(mpl_cuda_far_add_rowvec(q->SH, q->Tp, (int)C, (int)d, w->dd, w->zst, w->dQf, s));
    /* gradients of the states: per block Qf^T dN and Qf^T dd, then the
     * blocks after each (causal) or the total (bidirectional) */
    MPL_CHECK(bgemm(a, 1, 0, d, d, C, w->Qf, d, Cd, w->dN, d, Cd, 0, w->dSst, d, dd, q->NB));
    MPL_CHECK(mpl_cuda_far_block_colsum(w->Qf, w->dd, q->NB, C, (int)d, w->dzst, s));
    MPL_CHECK(mpl_cuda_far_scan(w->dSst, q->SH, q->nb, dd, causal ? 2 : 1, s));
    MPL_CHECK(mpl_cuda_far_scan(w->dzst, q->SH, q->nb, d, causal ? 2 : 1, s));
    if (causal) {
        MPL_CHECK(bgemm(a, 0, 1, C, C, d, w->dN, d, Cd, w->Vg, d, Cd, 0, w->dA, C, CC, q->NB));
        MPL_CHECK(mpl_cuda_far_tril_grad(w->dA, w->dd, q->NB, (int)C, s));
        MPL_CHECK(bgemm(a, 0, 0, C, d, C, w->dA, C, CC, w->Kf, d, Cd, 1, w->dQf, d, Cd, q->NB));
    }
    /* dKf = V dS^T + dz (+ dA^T Qf); dV += Kf dS (+ A^T dN) */
    MPL_CHECK(bgemm(a, 0, 1, C, d, d, w->Vg, d, Cd, w->dSst, d, dd, 0, w->dKf, d, Cd, q->NB));
    MPL_CHECK(mpl_cuda_far_add_rowvec(q->SH, q->Tp, (int)C, (int)d, NULL, w->dzst, w->dKf, s));
    MPL_CHECK(bgemm(a, 0, 0, C, d, d, w->Kf, d, Cd, w->dSst, d, dd, 1, w->dVg, d, Cd, q->NB));
    if (causal) {
        MPL_CHECK(bgemm(a, 1, 0, C, d, C, w->dA, C, CC, w->Qf, d, Cd, 1, w->dKf, d, Cd, q->NB));
        MPL_CHECK(bgemm(a, 1, 0, C, d, C, w->Ab, C, CC, w->dN, d, Cd, 1, w->dVg, d, Cd, q->NB));
    }
    MPL_CHECK(mpl_cuda_far_features_backward(&dm, &o, qkv, 0, q->Tp, w->dQf, dqkv, s));
    MPL_CHECK(mpl_cuda_far_features_backward(&dm, &o, qkv, q->HD, q->Tp, w->dKf, dqkv, s));
    return MPL_OK;
}

static mpl_status blend_of(const cuda_attn *a, int layer, const float *params, const float **A,
                           const float **B)
{
    if (layer < 0 || layer >= a->n_off || a->off[2 * layer] < 0 || !params)
        return mpl_err(MPL_ERR_ARG, "fmm (GPU): layer %d has no declared parameters", layer);
    *A = params + a->off[2 * layer];
    *B = params + a->off[2 * layer + 1];
    return MPL_OK;
}

static mpl_status prepare(cuda_attn *a, const mpl_attn_geom *g, fmm_geo *q, fmm_ws *w)
{
    MPL_CHECK(mpl_attn_cuda_check_geom(a, g));
    *q = geo_of(a, g);
    const size_t n = ws_carve(q, NULL, w);
    void *base;
    MPL_CHECK(mpl_attn_cuda_ws(a, n, &base));
    ws_carve(q, base, w);
    return MPL_OK;
}

static mpl_status fmm_cuda_forward(void *impl, int layer, const mpl_attn_geom *g,
                                   const float *params, const float *qkv, float *out,
                                   float *saved)
{
    cuda_attn *a = impl;
    const float *A, *B;
    MPL_CHECK(blend_of(a, layer, params, &A, &B));
    fmm_geo q;
    fmm_ws w;
    MPL_CHECK(prepare(a, g, &q, &w));
    if (q.S * q.T == 0) return MPL_OK;
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    float *lse = saved, *near = saved + q.SH * q.T, *far = near + q.S * q.T * q.HD;
    const mpl_cuda_attn_dims dm = mpl_attn_cuda_dims(a, g, a->cfg.band, 1);
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, 0, w.QR));
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, q.HD, w.KR));
    MPL_CHECK(mpl_cuda_band_forward(&dm, w.QR, w.KR, qkv, near, lse, s));
    MPL_CHECK(mpl_cuda_far_gather_v(&dm, q.Tp, qkv, w.Vg, 0, NULL, s));
    for (int m = 0; m < a->cfg.fmm_n_maps; m++)
        MPL_CHECK(far_forward(a, g, &q, &w, m, qkv, far + m * q.S * q.T * q.HD, NULL));
    MPL_CHECK(mpl_cuda_fmm_blend_forward(&dm, a->cfg.fmm_n_maps, A, B, near, far, out, s));
    return MPL_OK;
}

static mpl_status fmm_cuda_backward(void *impl, int layer, const mpl_attn_geom *g,
                                    const float *params, const float *qkv, const float *saved,
                                    const float *dout, float *dqkv, float *dparams)
{
    cuda_attn *a = impl;
    const float *A, *B, *gA = NULL, *gB = NULL;
    MPL_CHECK(blend_of(a, layer, params, &A, &B));
    if (dparams) MPL_CHECK(blend_of(a, layer, dparams, &gA, &gB));
    fmm_geo q;
    fmm_ws w;
    MPL_CHECK(prepare(a, g, &q, &w));
    if (q.S * q.T == 0) return MPL_OK;
    struct CUstream_st *s = mpl_cuda_stream(a->cu);
    const float *lse = saved, *near = saved + q.SH * q.T, *far = near + q.S * q.T * q.HD;
    const mpl_cuda_attn_dims dm = mpl_attn_cuda_dims(a, g, a->cfg.band, 1);
    const int64_t rows = q.S * q.T;
    /* blend: the fields' gradients and the weights' (sums over tokens) */
    MPL_CHECK(mpl_cuda_fmm_blend_backward(&dm, a->cfg.fmm_n_maps, A, B, far, dout, w.gN, w.gF,
                                          w.fsum, s));
    if (gA) MPL_CHECK(mpl_cuda_colsum((float *)gA, dout, near, NULL, rows, q.HD, w.part, s));
    if (gB && a->cfg.fmm_learn_far_weight)
        MPL_CHECK(mpl_cuda_colsum((float *)gB, dout, w.fsum, NULL, rows, q.HD, w.part, s));
    /* near field */
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, 0, w.QR));
    MPL_CHECK(mpl_attn_cuda_rotated(a, g, qkv, q.HD, w.KR));
    MPL_CHECK(mpl_cuda_band_backward_q(&dm, w.QR, w.KR, qkv, lse, w.gN, w.dQR, w.Dn, s));
    MPL_CHECK(mpl_cuda_band_backward_kv(&dm, w.QR, w.KR, qkv, lse, w.gN, w.Dn, w.dKR, dqkv, s));
    MPL_CHECK(mpl_attn_cuda_add_unrotated(a, g, w.dQR, 0, dqkv));
    MPL_CHECK(mpl_attn_cuda_add_unrotated(a, g, w.dKR, q.HD, dqkv));
    /* far field, map by map; dv summed over the maps in dVg */
    MPL_CHECK(mpl_cuda_far_gather_v(&dm, q.Tp, qkv, w.Vg, 0, NULL, s));
    MPL_CHECK(mpl_cuda_zero(a->cu, w.dVg, (size_t)(q.SH * q.Tp * q.d) * sizeof(float)));
    for (int m = 0; m < a->cfg.fmm_n_maps; m++) {
        MPL_CHECK(far_forward(a, g, &q, &w, m, qkv, NULL, w.den));
        MPL_CHECK(far_backward(a, g, &q, &w, m, qkv, dqkv));
    }
    MPL_CHECK(mpl_cuda_far_gather_v(&dm, q.Tp, qkv, w.dVg, 1, dqkv, s));
    return MPL_OK;
}

static mpl_status fmm_cuda_declare(void *impl, int layer, const char *prefix,
                                   mpl_slab_layout *lay)
{
    cuda_attn *a = impl;
    MPL_CHECK(a->cpu.ops->declare_params(a->cpu.impl, layer, prefix, lay));
    if (layer < 0) return mpl_err(MPL_ERR_ARG, "fmm (GPU): layer %d", layer);
    if (layer >= a->n_off) {
        const int n = layer + 8;
        int64_t *p = realloc(a->off, (size_t)n * 2 * sizeof *p);
        if (!p) return mpl_err(MPL_ERR_NOMEM, "fmm (GPU): no room for layer %d", layer);
        for (int i = 2 * a->n_off; i < 2 * n; i++) p[i] = -1;
        a->off = p, a->n_off = n;
    }
    const char *const names[2] = {"blend_near", "blend_far"};
    for (int i = 0; i < 2; i++) {
        char name[MPL_TENSOR_NAME_MAX + 16];
        snprintf(name, sizeof name, "%s%s", prefix, names[i]);
        const mpl_tensor_desc *t = mpl_slab_layout_find(lay, name);
        if (!t) return mpl_err(MPL_ERR_INTERNAL, "fmm (GPU): %s was not declared", name);
        a->off[2 * layer + i] = t->offset;
    }
    return MPL_OK;
}

static void fmm_cuda_init(void *impl, int layer, float *params, uint64_t seed)
{
    cuda_attn *a = impl;
    a->cpu.ops->init_params(a->cpu.impl, layer, params, seed); /* host mirror */
}

static const mpl_attn_ops fmm_cuda_ops = {
    .name = "fmm",
    .declare_params = fmm_cuda_declare,
    .init_params = fmm_cuda_init,
    .saved_elems = fmm_cuda_saved_elems,
    .forward = fmm_cuda_forward,
    .backward = fmm_cuda_backward,
    .destroy = mpl_attn_cuda_base_free,
    .device = MPL_DEVICE_CUDA,
    .work_bytes = fmm_cuda_work_bytes,
};

mpl_status mpl_attn_cuda_fmm_create(const mpl_attn_cfg *cfg, mpl_attn *out)
{
    if (cfg->fmm_blend != MPL_FMM_BLEND_CHANNEL)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "fmm_blend=lra has no GPU implementation yet (device=cuda: fmm_blend=channel)");
    cuda_attn *a;
    MPL_CHECK(mpl_attn_cuda_base(cfg, &a));
    mpl_attn_cfg cpu = *cfg;
    cpu.device = MPL_DEVICE_CPU;
    cpu.cuda = NULL;
    const mpl_status st = mpl_attn_fmm_create(&cpu, NULL, &a->cpu);
    if (st != MPL_OK) {
        void *p = a;
        mpl_attn_cuda_base_free(&p);
        return mpl_err(st, "fmm (GPU): the CPU twin for the parameters");
    }
    out->ops = &fmm_cuda_ops;
    out->impl = a;
    return MPL_OK;
}
