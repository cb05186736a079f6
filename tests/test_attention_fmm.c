/* Tests of FMM attention (attention/fmm.h): the forward against an explicit
 * O(L^2) fp64 reference written here from ATTENTION.md (band mask matrix,
 * far-field sums per query), the fp64 backward against central
 * differences, chunked evaluation with hand-passed halos and statistics
 * against the one-piece result, streaming against the full causal
 * forward, and the ops table + registry (the last four in
 * test_attention_fmm_chunks.c, which shares this file's helpers through
 * test_attention_fmm.h). MPL_FMM_BENCH=1 also times L=65536, H=4,
 * d=32, w=64, r=2, causal. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/fmm.h"
#include "attention/registry.h"
#include "test_attention_fmm.h"

#define FD_H 1e-5
#define FD_ATOL 1e-8
#define FD_RTOL 1e-6
#define PREFILL 0.375

/* ---------------------------------------------------------------- reference */

static double ref_phi(mpl_fmm_map m, double x)
{
    const double elu_p1 = x > 0 ? x + 1 : exp(x), elu_m1 = -x > 0 ? -x + 1 : exp(-x);
    return m == MPL_FMM_MAP_ELU ? elu_p1 : m == MPL_FMM_MAP_ELU_FLIP ? elu_m1 : tanh(x) + 1;
}

static void ref_feat(const mpl_attn_fmm_args *a, mpl_fmm_map m, const double *x, double *f)
{
    double s = 0;
    for (int c = 0; c < a->head_dim; c++) s += (f[c] = ref_phi(m, x[c]));
    if (a->feature_norm)
        for (int c = 0; c < a->head_dim; c++) f[c] /= s;
}

/* The whole sequence (pos0 = 0, n_tok = L). Blend weights as fmm.h. */
static void ref_fmm(const mpl_attn_fmm_args *a, const double *qkv, const double *ba,
                    const double *bb, const double *bal, double *out)
{
    const int64_t S = a->n_seq, L = a->n_tok, H = a->n_head, d = a->head_dim, w = a->band;
    const int64_t HD = H * d, W = 3 * HD, r = a->n_maps;
    double *q = mpl_test_dalloc(L * d), *k = mpl_test_dalloc(L * d), *v = mpl_test_dalloc(L * d),
           *sc = mpl_test_dalloc(L * L);
    double *qt = mpl_test_dalloc(L * d), *kt = mpl_test_dalloc(L * d), *far = mpl_test_dalloc(d);
    uint8_t *band = calloc((size_t)(L * L + 1), 1);
    assert_non_null(band);
    const double scale = a->far_scale == MPL_FMM_FAR_SCALE_ONE ? 1.0
                         : a->far_scale == MPL_FMM_FAR_SCALE_INV_SQRT_N
                             ? 1.0 / sqrt((double)a->seq_len)
                             : 1.0 / sqrt((double)d);
    for (int64_t s = 0; s < S; s++) {
        const uint8_t *mk = a->mask ? a->mask + s * L : NULL;
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) {
                const int64_t dl = i - j;
                int in = a->causal ? (dl >= 0 && dl <= w - 1) : llabs(dl) <= w - 1;
                band[i * L + j] = (uint8_t)(in && (!mk || (mk[i] && mk[j])));
            }
        for (int64_t h = 0; h < H; h++) {
            for (int64_t t = 0; t < L; t++)
                for (int64_t c = 0; c < d; c++) {
                    q[t * d + c] = qkv[(s * L + t) * W + h * d + c];
                    k[t * d + c] = qkv[(s * L + t) * W + HD + h * d + c];
                    v[t * d + c] = qkv[(s * L + t) * W + 2 * HD + h * d + c];
                }
            /* near field: softmax over the band of rotated logits */
            for (int64_t i = 0; i < L; i++)
                for (int64_t j = 0; j < L; j++) {
                    double qi[64], kj[64], dot = 0;
                    memcpy(qi, q + i * d, (size_t)d * sizeof *qi);
                    memcpy(kj, k + j * d, (size_t)d * sizeof *kj);
                    if (a->rope_theta > 0) {
                        mpl_test_rope_ref(qi, (int)d, (double)i, a->rope_theta);
                        mpl_test_rope_ref(kj, (int)d, (double)j, a->rope_theta);
                    }
                    for (int64_t c = 0; c < d; c++) dot += qi[c] * kj[c];
                    sc[i * L + j] = dot / sqrt((double)d);
                }
            for (int64_t i = 0; i < L; i++) {
                double *o = out + (s * L + i) * HD + h * d;
                if (mk && !mk[i]) {
                    for (int64_t c = 0; c < d; c++) o[c] = 0;
                    continue;
                }
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j < L; j++)
                    if (band[i * L + j] && sc[i * L + j] > mx) mx = sc[i * L + j];
                for (int64_t j = 0; j < L; j++)
                    if (band[i * L + j]) z += exp(sc[i * L + j] - mx);
                for (int64_t c = 0; c < d; c++) {
                    double nr = 0;
                    for (int64_t j = 0; j < L; j++)
                        if (band[i * L + j]) nr += exp(sc[i * L + j] - mx) / z * v[j * d + c];
                    const double A = a->blend == MPL_FMM_BLEND_LRA ? ba[h] : ba[h * d + c];
                    o[c] = A * nr;
                }
            }
            /* far field: per query, num = sum_j (qt.kt_j) v_j, den = sum_j qt.kt_j */
            for (int64_t m = 0; m < r; m++) {
                for (int64_t t = 0; t < L; t++) {
                    ref_feat(a, a->maps[m], q + t * d, qt + t * d);
                    ref_feat(a, a->maps[m], k + t * d, kt + t * d);
                }
                for (int64_t i = 0; i < L; i++) {
                    if (mk && !mk[i]) continue;
                    double den = 0;
                    for (int64_t c = 0; c < d; c++) far[c] = 0;
                    for (int64_t j = 0; j < L; j++) {
                        if ((a->causal && j > i) || (mk && !mk[j])) continue;
                        double kern = 0;
                        for (int64_t c = 0; c < d; c++) kern += qt[i * d + c] * kt[j * d + c];
                        den += kern;
                        for (int64_t c = 0; c < d; c++) far[c] += kern * v[j * d + c];
                    }
                    double *o = out + (s * L + i) * HD + h * d;
                    for (int64_t c = 0; c < d; c++) {
                        double f = scale * far[c];
                        if (a->far_norm) f /= den + a->eps;
                        const int lra = a->blend == MPL_FMM_BLEND_LRA;
                        const double B = lra ? bb[h] : bb[h * d + c];
                        const double C = lra ? bal[m] : 1.0 / (double)r;
                        o[c] += B * C * f;
                    }
                }
            }
        }
    }
    free(q), free(k), free(v), free(sc), free(qt), free(kt), free(far), free(band);
}

/* ---------------------------------------------------------------- helpers */


mpl_attn_fmm_args case_args(const fcase *c, const uint8_t *mask)
{
    mpl_attn_fmm_args a = {.n_seq = c->S, .n_tok = c->L, .pos0 = 0, .seq_len = c->L,
                           .n_head = c->H, .head_dim = c->d, .causal = c->causal,
                           .band = c->w, .rope_theta = c->theta, .n_maps = c->r,
                           .feature_norm = c->fnorm, .far_norm = c->ratio,
                           .far_scale = c->fscale, .eps = 1e-5, .blend = c->blend,
                           .learn_far_weight = c->learn_b, .mask = c->mask ? mask : NULL};
    for (int m = 0; m < 4; m++) a.maps[m] = c->maps[m];
    return a;
}

void case_tag(const fcase *c, char *buf, size_t n)
{
    snprintf(buf, n, "S=%lld L=%lld H=%d d=%d w=%lld r=%d %s fnorm=%d ratio=%d scale=%d rope=%g "
             "blend=%s mask=%d",
             (long long)c->S, (long long)c->L, c->H, c->d, (long long)c->w, c->r,
             c->causal ? "causal" : "bidir", c->fnorm, c->ratio, (int)c->fscale, c->theta,
             c->blend == MPL_FMM_BLEND_LRA ? "lra" : "channel", c->mask);
}

/* padding, variant 1: seq 0 every 3rd token padded (token 0 too, so a
 * leading query is padded), seq 1 the last 2 tokens padded; variant 2:
 * seq 0 as in 1, seq 1 fully padded (no key anywhere, every output 0). */
void make_mask(uint8_t *m, int64_t S, int64_t T, int variant)
{
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = 0; t < T; t++)
            m[s * T + t] = (uint8_t)(s == 0 ? t % 3 != 0
                                            : variant == 2 ? 0 : (t < T - 2 || t == 0));
}

static int64_t n_blend(const fcase *c)
{
    return c->blend == MPL_FMM_BLEND_LRA ? c->H : (int64_t)c->H * c->d;
}

/* Single-rank evaluation of the whole chunk, as the ops table does it. */
void full_forward_f64(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f64 bl,
                             const double *qkv, double *out, double *saved, double *stat)
{
    mpl_attn_fmm_ctx_f64 ctx = {0};
    if (!a->causal) {
        assert_int_equal(mpl_attn_fmm_stats_f64(a, qkv, stat), MPL_OK);
        ctx.stat_in = stat;
    }
    assert_int_equal(mpl_attn_fmm_forward_f64(a, &ctx, bl, qkv, out, saved), MPL_OK);
}

void full_backward_f64(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f64 bl,
                              const double *qkv, const double *saved, const double *stat,
                              const double *dout, double *dqkv, mpl_attn_fmm_dblend_f64 dbl)
{
    const mpl_attn_fmm_ctx_f64 ctx = {.stat_in = a->causal ? NULL : stat};
    double *dstat = mpl_test_dalloc(mpl_attn_fmm_stat_elems(a));
    const mpl_attn_fmm_dctx_f64 dctx = {.stat_in = dstat};
    assert_int_equal(mpl_attn_fmm_backward_f64(a, &ctx, bl, qkv, saved, dout, dqkv, &dctx, dbl),
                     MPL_OK);
    if (!a->causal) assert_int_equal(mpl_attn_fmm_stats_backward_f64(a, qkv, dstat, dqkv), MPL_OK);
    free(dstat);
}

void full_forward_f32(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f32 bl,
                             const float *qkv, float *out)
{
    float *saved = mpl_test_falloc(mpl_attn_fmm_saved_elems(a)),
          *stat = mpl_test_falloc(mpl_attn_fmm_stat_elems(a));
    mpl_attn_fmm_ctx_f32 ctx = {0};
    if (!a->causal) {
        assert_int_equal(mpl_attn_fmm_stats_f32(a, qkv, stat), MPL_OK);
        ctx.stat_in = stat;
    }
    assert_int_equal(mpl_attn_fmm_forward_f32(a, &ctx, bl, qkv, out, saved), MPL_OK);
    free(saved), free(stat);
}

double maxabs(const double *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}


fdata data_make(const fcase *c, uint64_t stream)
{
    const uint64_t seed = mpl_test_seed();
    fdata x;
    const int64_t HD = (int64_t)c->H * c->d;
    x.n_qkv = c->S * c->L * 3 * HD, x.n_out = c->S * c->L * HD, x.nb = n_blend(c);
    x.qkv = mpl_test_dalloc(x.n_qkv), x.dout = mpl_test_dalloc(x.n_out);
    x.ba = mpl_test_dalloc(x.nb), x.bb = mpl_test_dalloc(x.nb), x.bal = mpl_test_dalloc(4);
    x.mask = calloc((size_t)(c->S * c->L + 1), 1);
    assert_non_null(x.mask);
    make_mask(x.mask, c->S, c->L, c->mask);
    mpl_test_fill_f64(x.qkv, x.n_qkv, seed, stream, -1.5, 1.5);
    mpl_test_fill_f64(x.dout, x.n_out, seed, stream + 1, -1, 1);
    mpl_test_fill_f64(x.ba, x.nb, seed, stream + 2, 0.5, 1.5);
    mpl_test_fill_f64(x.bb, x.nb, seed, stream + 3, 0.5, 1.5);
    mpl_test_fill_f64(x.bal, 4, seed, stream + 4, -1, 1);
    return x;
}

void data_free(fdata *x)
{
    free(x->qkv), free(x->dout), free(x->ba), free(x->bb), free(x->bal), free(x->mask);
}

/* ---------------------------------------------------------------- forward */

static void check_forward(const fcase *c)
{
    char tag[256], what[400];
    case_tag(c, tag, sizeof tag);
    fdata x = data_make(c, 200);
    const mpl_attn_fmm_args a = case_args(c, x.mask);
    double *ref = mpl_test_dalloc(x.n_out), *out = mpl_test_dalloc(x.n_out);
    double *saved = mpl_test_dalloc(mpl_attn_fmm_saved_elems(&a)),
           *stat = mpl_test_dalloc(mpl_attn_fmm_stat_elems(&a));
    ref_fmm(&a, x.qkv, x.ba, x.bb, x.bal, ref);
    const mpl_attn_fmm_blend_f64 bl = {x.ba, x.bb, x.bal};
    full_forward_f64(&a, bl, x.qkv, out, saved, stat);
    const double mx = maxabs(ref, x.n_out);
    snprintf(what, sizeof what, "attn_fmm_fwd f64 %s", tag);
    assert_true(mpl_test_close_f64(what, out, ref, x.n_out, 1e-12 * mx, 1e-10));
    float *qkv32 = mpl_test_to_f32(x.qkv, x.n_qkv), *out32 = mpl_test_falloc(x.n_out);
    float *ba = mpl_test_to_f32(x.ba, x.nb), *bb = mpl_test_to_f32(x.bb, x.nb),
          *bal = mpl_test_to_f32(x.bal, 4);
    full_forward_f32(&a, (mpl_attn_fmm_blend_f32){ba, bb, bal}, qkv32, out32);
    /* the fp32 inputs are the rounded fp64 ones: compare with the
     * reference on those exact values */
    double *qkv_r = mpl_test_dalloc(x.n_qkv), *ba_r = mpl_test_dalloc(x.nb),
           *bb_r = mpl_test_dalloc(x.nb), bal_r[4];
    for (int64_t i = 0; i < x.n_qkv; i++) qkv_r[i] = qkv32[i];
    for (int64_t i = 0; i < x.nb; i++) ba_r[i] = ba[i], bb_r[i] = bb[i];
    for (int i = 0; i < 4; i++) bal_r[i] = bal[i];
    ref_fmm(&a, qkv_r, ba_r, bb_r, bal_r, ref);
    snprintf(what, sizeof what, "attn_fmm_fwd f32 %s", tag);
    assert_true(mpl_test_close_f32_f64(what, out32, ref, x.n_out, 1e-5 * mx, 1e-5));
    free(qkv32), free(out32), free(ba), free(bb), free(bal), free(qkv_r), free(ba_r), free(bb_r);
    free(ref), free(out), free(saved), free(stat);
    data_free(&x);
}

const fcase BASE = {.S = 2, .L = 7, .H = 2, .d = 4, .r = 1, .maps = {MPL_FMM_MAP_ELU},
                           .causal = 1, .w = 3, .fnorm = 1, .ratio = 1,
                           .fscale = MPL_FMM_FAR_SCALE_INV_SQRT_D, .theta = 0,
                           .blend = MPL_FMM_BLEND_CHANNEL, .learn_b = 1, .mask = 0};

static void test_attention_fmm_forward(void **state)
{
    (void)state;
    const mpl_fmm_map M3[4] = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP, MPL_FMM_MAP_TANH};
    for (int causal = 0; causal <= 1; causal++) {
        fcase c = BASE;
        c.causal = causal;
        /* L = 1 */
        c.S = 1, c.L = 1, c.w = 64, c.d = 8;
        check_forward(&c);
        /* L < w, rope, 2 maps, lra */
        c = BASE, c.causal = causal, c.L = 20, c.w = 64, c.d = 8, c.r = 2, c.theta = 100;
        c.maps[1] = MPL_FMM_MAP_ELU_FLIP, c.blend = MPL_FMM_BLEND_LRA;
        check_forward(&c);
        /* w does not divide L, 3 maps, no norms, inv_sqrt_n, mask */
        c = BASE, c.causal = causal, c.L = 37, c.w = 8, c.r = 3, c.fnorm = 0, c.ratio = 0;
        memcpy(c.maps, M3, sizeof M3);
        c.fscale = MPL_FMM_FAR_SCALE_INV_SQRT_N, c.mask = 1;
        check_forward(&c);
        /* scale one, ratio without feature norm, rope, mask, w = 1 */
        c = BASE, c.causal = causal, c.L = 19, c.w = 1, c.fnorm = 0, c.ratio = 1;
        c.fscale = MPL_FMM_FAR_SCALE_ONE, c.theta = 10000, c.mask = 2, c.maps[0] = MPL_FMM_MAP_TANH;
        check_forward(&c);
        /* L = 1000, w = 64: blocks crossing the band edge, one sequence */
        c = BASE, c.causal = causal, c.S = 1, c.L = 1000, c.w = 64, c.d = 8, c.r = 2;
        c.maps[1] = MPL_FMM_MAP_TANH, c.theta = 10000, c.mask = 1;
        c.blend = causal ? MPL_FMM_BLEND_CHANNEL : MPL_FMM_BLEND_LRA;
        check_forward(&c);
        /* d = 32, the benchmark's maps: whole vectors without pad lanes in
         * both precisions, RoPE on whole vectors */
        c = BASE, c.causal = causal, c.S = 1, c.L = 150, c.H = 2, c.d = 32, c.w = 16, c.r = 2;
        c.maps[1] = MPL_FMM_MAP_ELU_FLIP, c.theta = 10000, c.mask = 1;
        check_forward(&c);
    }
}

/* ---------------------------------------------------------------- backward */

typedef struct fdctx {
    const mpl_attn_fmm_args *a;
    fdata *x;
    double *out, *saved, *stat;
} fdctx;

static double fd_loss(void *p)
{
    fdctx *c = p;
    full_forward_f64(c->a, (mpl_attn_fmm_blend_f64){c->x->ba, c->x->bb, c->x->bal}, c->x->qkv,
                     c->out, c->saved, c->stat);
    double L = 0;
    for (int64_t i = 0; i < c->x->n_out; i++) L += c->x->dout[i] * c->out[i];
    return L;
}

static void check_backward(const fcase *c)
{
    char tag[256], what[400];
    case_tag(c, tag, sizeof tag);
    fdata x = data_make(c, 300);
    const mpl_attn_fmm_args a = case_args(c, x.mask);
    double *out = mpl_test_dalloc(x.n_out), *saved = mpl_test_dalloc(mpl_attn_fmm_saved_elems(&a));
    double *stat = mpl_test_dalloc(mpl_attn_fmm_stat_elems(&a)), *dqkv = mpl_test_dalloc(x.n_qkv);
    double *da = mpl_test_dalloc(x.nb), *db = mpl_test_dalloc(x.nb), dal[4] = {0};
    const mpl_attn_fmm_blend_f64 bl = {x.ba, x.bb, x.bal};
    full_forward_f64(&a, bl, x.qkv, out, saved, stat);
    for (int64_t i = 0; i < x.n_qkv; i++) dqkv[i] = PREFILL;
    full_backward_f64(&a, bl, x.qkv, saved, stat, x.dout, dqkv,
                      (mpl_attn_fmm_dblend_f64){da, db, dal});
    fdctx fc = {.a = &a, .x = &x, .out = out, .saved = saved, .stat = stat};
    double *fd = mpl_test_dalloc(x.n_qkv);
    mpl_test_fd_grad(fd_loss, &fc, x.qkv, x.n_qkv, FD_H, fd);
    for (int64_t i = 0; i < x.n_qkv; i++) fd[i] += PREFILL;
    snprintf(what, sizeof what, "attn_fmm_bwd_fd dqkv %s", tag);
    assert_true(mpl_test_close_f64(what, dqkv, fd, x.n_qkv, FD_ATOL, FD_RTOL));
    mpl_test_fd_grad(fd_loss, &fc, x.ba, x.nb, FD_H, fd);
    snprintf(what, sizeof what, "attn_fmm_bwd_fd dblend_near %s", tag);
    assert_true(mpl_test_close_f64(what, da, fd, x.nb, FD_ATOL, FD_RTOL));
    mpl_test_fd_grad(fd_loss, &fc, x.bb, x.nb, FD_H, fd);
    if (!c->learn_b) memset(fd, 0, (size_t)x.nb * sizeof *fd); /* frozen: no gradient */
    snprintf(what, sizeof what, "attn_fmm_bwd_fd dblend_far %s", tag);
    assert_true(mpl_test_close_f64(what, db, fd, x.nb, FD_ATOL, FD_RTOL));
    if (c->blend == MPL_FMM_BLEND_LRA) {
        mpl_test_fd_grad(fd_loss, &fc, x.bal, c->r, FD_H, fd);
        snprintf(what, sizeof what, "attn_fmm_bwd_fd dblend_maps %s", tag);
        assert_true(mpl_test_close_f64(what, dal, fd, c->r, FD_ATOL, FD_RTOL));
    }
    free(out), free(saved), free(stat), free(dqkv), free(da), free(db), free(fd);
    data_free(&x);
}

static void test_attention_fmm_backward(void **state)
{
    (void)state;
    for (int causal = 0; causal <= 1; causal++) {
        fcase c = BASE;
        c.causal = causal;
        check_backward(&c);
        c.r = 2, c.maps[1] = MPL_FMM_MAP_ELU_FLIP, c.theta = 100, c.mask = 1;
        c.blend = MPL_FMM_BLEND_LRA;
        check_backward(&c);
        c = BASE, c.causal = causal, c.L = 9, c.r = 3, c.maps[1] = MPL_FMM_MAP_TANH;
        c.maps[2] = MPL_FMM_MAP_ELU_FLIP, c.fnorm = 0, c.ratio = 0, c.learn_b = 0, c.mask = 2;
        c.fscale = MPL_FMM_FAR_SCALE_INV_SQRT_N;
        check_backward(&c);
        c = BASE, c.causal = causal, c.S = 1, c.L = 5, c.w = 8, c.fnorm = 0;
        c.fscale = MPL_FMM_FAR_SCALE_ONE, c.theta = 10000;
        check_backward(&c);
        /* L = 70: several far chunks, the near window slid past a block */
        c = BASE, c.causal = causal, c.S = 1, c.L = 70, c.H = 1, c.w = 5, c.r = 2;
        c.maps[1] = MPL_FMM_MAP_ELU_FLIP, c.theta = 100, c.mask = 1;
        check_backward(&c);
    }
}

int main(void)
{
    mpl_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_fmm_forward),
        cmocka_unit_test(test_attention_fmm_backward),
        cmocka_unit_test(test_attention_fmm_chunks),
        cmocka_unit_test(test_attention_fmm_stream),
        cmocka_unit_test(test_attention_fmm_ops),
        cmocka_unit_test(test_attention_fmm_registry_errors),
        cmocka_unit_test(test_attention_fmm_threads),
        cmocka_unit_test(test_attention_fmm_bench),
        cmocka_unit_test(test_attention_fmm_lanes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
