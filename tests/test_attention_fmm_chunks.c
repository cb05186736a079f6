/* Tests of FMM attention's chunk contract and its interfaces: a sequence
 * split into uneven pieces with halos and far-field statistics passed by
 * hand must equal the one-piece result (outputs and every gradient);
 * streaming equals the full causal forward; the ops table and registry
 * equal the direct calls and reject bad configs; an opt-in timing
 * (MPL_FMM_BENCH=1). Separate from test_attention_fmm.c to keep files
 * short; helpers in test_attention_fmm.h. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/fmm.h"
#include "attention/fmm_dist.h"
#include "attention/fmm_pieces.h"
#include "attention/registry.h"
#include "core/slab.h"
#include "test_attention_fmm.h"

/* rows [r0, r0 + n) of a (S, L, X) array, columns [c0, c0 + nc) -> (S, n, nc) */
static double *rows_get(const double *x, int64_t S, int64_t L, int64_t X, int64_t r0, int64_t n,
                        int64_t c0, int64_t nc)
{
    double *p = mpl_test_dalloc(S * n * nc);
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = 0; t < n; t++)
            memcpy(p + (s * n + t) * nc, x + (s * L + r0 + t) * X + c0, (size_t)nc * sizeof *p);
    return p;
}

/* x[(s, r0 + t), c0 + c] += p[(s, t), c] */
static void rows_add(double *x, const double *p, int64_t S, int64_t L, int64_t X, int64_t r0,
                     int64_t n, int64_t c0, int64_t nc)
{
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = 0; t < n; t++)
            for (int64_t c = 0; c < nc; c++)
                x[(s * L + r0 + t) * X + c0 + c] += p[(s * n + t) * nc + c];
}

static uint8_t *mask_get(const uint8_t *m, int64_t S, int64_t L, int64_t r0, int64_t n)
{
    uint8_t *p = calloc((size_t)(S * n + 1), 1);
    assert_non_null(p);
    for (int64_t s = 0; s < S; s++) memcpy(p + s * n, m + s * L + r0, (size_t)n);
    return p;
}

#define MAXP 8

static void check_chunks(const fcase *c, const int64_t *len, int n_piece)
{
    char tag[256], what[400];
    case_tag(c, tag, sizeof tag);
    fdata x = data_make(c, 400);
    const mpl_attn_fmm_args a = case_args(c, x.mask);
    const int64_t S = c->S, L = c->L, HD = (int64_t)c->H * c->d, W = 3 * HD, w = c->w;
    const int64_t n_stat = mpl_attn_fmm_stat_elems(&a); /* per chunk: same n_seq */
    const mpl_attn_fmm_blend_f64 bl = {x.ba, x.bb, x.bal};

    /* one piece */
    double *out1 = mpl_test_dalloc(x.n_out),
           *saved1 = mpl_test_dalloc(mpl_attn_fmm_saved_elems(&a));
    double *stat1 = mpl_test_dalloc(n_stat), *dqkv1 = mpl_test_dalloc(x.n_qkv);
    double *da1 = mpl_test_dalloc(x.nb), *db1 = mpl_test_dalloc(x.nb), dal1[4] = {0};
    full_forward_f64(&a, bl, x.qkv, out1, saved1, stat1);
    full_backward_f64(&a, bl, x.qkv, saved1, stat1, x.dout, dqkv1,
                      (mpl_attn_fmm_dblend_f64){da1, db1, dal1});

    /* pieces */
    int64_t a0[MAXP + 1] = {0};
    for (int p = 0; p < n_piece; p++) a0[p + 1] = a0[p] + len[p];
    assert_int_equal(a0[n_piece], L);
    double *out2 = mpl_test_dalloc(x.n_out), *dqkv2 = mpl_test_dalloc(x.n_qkv);
    double *da2 = mpl_test_dalloc(x.nb), *db2 = mpl_test_dalloc(x.nb), dal2[4] = {0};
    double *st[MAXP], *dst_in[MAXP], *qkv_p[MAXP], *pre[MAXP], *post[MAXP], *sv[MAXP];
    uint8_t *mk[MAXP], *mpre[MAXP], *mpost[MAXP];
    mpl_attn_fmm_args ap[MAXP];
    int64_t npre[MAXP], npost[MAXP];
    for (int p = 0; p < n_piece; p++) {
        const int64_t C = len[p];
        npre[p] = a0[p] < w - 1 ? a0[p] : w - 1;
        const int64_t after = L - a0[p + 1];
        npost[p] = c->causal ? 0 : (after < w - 1 ? after : w - 1);
        mk[p] = mask_get(x.mask, S, L, a0[p], C);
        mpre[p] = mask_get(x.mask, S, L, a0[p] - npre[p], npre[p]);
        mpost[p] = mask_get(x.mask, S, L, a0[p + 1], npost[p]);
        ap[p] = a, ap[p].n_tok = C, ap[p].pos0 = a0[p], ap[p].mask = c->mask ? mk[p] : NULL;
        qkv_p[p] = rows_get(x.qkv, S, L, W, a0[p], C, 0, W);
        pre[p] = rows_get(x.qkv, S, L, W, a0[p] - npre[p], npre[p], HD, 2 * HD);
        post[p] = rows_get(x.qkv, S, L, W, a0[p + 1], npost[p], HD, 2 * HD);
        st[p] = mpl_test_dalloc(n_stat);
        assert_int_equal(mpl_attn_fmm_stats_f64(&ap[p], qkv_p[p], st[p]), MPL_OK);
    }
    /* forward: causal exclusive prefix of the stats, bidirectional total */
    for (int p = 0; p < n_piece; p++) {
        double *in = mpl_test_dalloc(n_stat), *o = mpl_test_dalloc(S * len[p] * HD);
        for (int q = 0; q < n_piece; q++)
            if (!c->causal || q < p)
                for (int64_t e = 0; e < n_stat; e++) in[e] += st[q][e];
        const mpl_attn_fmm_ctx_f64 ctx = {.n_pre = npre[p], .n_post = npost[p],
                                          .halo_pre = pre[p], .halo_post = post[p],
                                          .mask_pre = c->mask ? mpre[p] : NULL,
                                          .mask_post = c->mask ? mpost[p] : NULL,
                                          .stat_in = in};
        sv[p] = mpl_test_dalloc(mpl_attn_fmm_saved_elems(&ap[p]));
        assert_int_equal(mpl_attn_fmm_forward_f64(&ap[p], &ctx, bl, qkv_p[p], o, sv[p]), MPL_OK);
        rows_add(out2, o, S, L, HD, a0[p], len[p], 0, HD);
        /* backward: halo gradients go back to their owners' rows */
        double *g = rows_get(x.dout, S, L, HD, a0[p], len[p], 0, HD);
        double *dq = mpl_test_dalloc(S * len[p] * W), *dpre = mpl_test_dalloc(S * npre[p] * 2 * HD);
        double *dpost = mpl_test_dalloc(S * npost[p] * 2 * HD);
        dst_in[p] = mpl_test_dalloc(n_stat);
        const mpl_attn_fmm_dctx_f64 dctx = {.halo_pre = dpre, .halo_post = dpost,
                                            .stat_in = dst_in[p]};
        assert_int_equal(mpl_attn_fmm_backward_f64(&ap[p], &ctx, bl, qkv_p[p], sv[p], g, dq,
                                                   &dctx, (mpl_attn_fmm_dblend_f64){da2, db2, dal2}),
                         MPL_OK);
        rows_add(dqkv2, dq, S, L, W, a0[p], len[p], 0, W);
        rows_add(dqkv2, dpre, S, L, W, a0[p] - npre[p], npre[p], HD, 2 * HD);
        rows_add(dqkv2, dpost, S, L, W, a0[p + 1], npost[p], HD, 2 * HD);
        free(in), free(o), free(g), free(dq), free(dpre), free(dpost);
    }
    /* phase 3: causal reverse exclusive scan of dstat_in, bidirectional total */
    for (int p = 0; p < n_piece; p++) {
        double *dl = mpl_test_dalloc(n_stat), *dq = mpl_test_dalloc(S * len[p] * W);
        for (int q = 0; q < n_piece; q++)
            if (!c->causal || q > p)
                for (int64_t e = 0; e < n_stat; e++) dl[e] += dst_in[q][e];
        assert_int_equal(mpl_attn_fmm_stats_backward_f64(&ap[p], qkv_p[p], dl, dq), MPL_OK);
        rows_add(dqkv2, dq, S, L, W, a0[p], len[p], 0, W);
        free(dl), free(dq);
    }
    char lens[64] = "";
    for (int p = 0; p < n_piece; p++)
        snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%lld", p ? "," : "",
                 (long long)len[p]);
    snprintf(what, sizeof what, "attn_fmm_chunks out pieces=%s %s", lens, tag);
    assert_true(mpl_test_close_f64(what, out2, out1, x.n_out, 1e-12 * maxabs(out1, x.n_out), 1e-12));
    snprintf(what, sizeof what, "attn_fmm_chunks dqkv pieces=%s %s", lens, tag);
    assert_true(mpl_test_close_f64(what, dqkv2, dqkv1, x.n_qkv, 1e-12 * maxabs(dqkv1, x.n_qkv),
                                   1e-12));
    snprintf(what, sizeof what, "attn_fmm_chunks dblend pieces=%s %s", lens, tag);
    assert_true(mpl_test_close_f64(what, da2, da1, x.nb, 1e-12 * maxabs(da1, x.nb), 1e-12));
    assert_true(mpl_test_close_f64(what, db2, db1, x.nb, 1e-12 * maxabs(db1, x.nb), 1e-12));
    assert_true(mpl_test_close_f64(what, dal2, dal1, 4, 1e-12 * maxabs(dal1, 4), 1e-12));
    for (int p = 0; p < n_piece; p++) {
        free(st[p]), free(dst_in[p]), free(qkv_p[p]), free(pre[p]), free(post[p]), free(sv[p]);
        free(mk[p]), free(mpre[p]), free(mpost[p]);
    }
    free(out1), free(saved1), free(stat1), free(dqkv1), free(da1), free(db1);
    free(out2), free(dqkv2), free(da2), free(db2);
    data_free(&x);
}

void test_attention_fmm_chunks(void **state)
{
    (void)state;
    const int64_t five[] = {3, 9, 2, 1, 8}, two[] = {15, 8}, three[] = {1, 20, 2};
    for (int causal = 0; causal <= 1; causal++) {
        fcase c = BASE;
        c.causal = causal, c.L = 23, c.w = 6, c.r = 2, c.maps[1] = MPL_FMM_MAP_TANH;
        c.theta = 100, c.mask = 1;
        check_chunks(&c, five, 5);
        c.blend = MPL_FMM_BLEND_LRA, c.fnorm = 0, c.ratio = 0, c.fscale = MPL_FMM_FAR_SCALE_INV_SQRT_N;
        c.mask = 2;
        check_chunks(&c, two, 2);
        c = BASE, c.causal = causal, c.L = 23, c.w = 9, c.d = 8, c.theta = 10000;
        check_chunks(&c, three, 3);
    }
}

void test_attention_fmm_stream(void **state)
{
    (void)state;
    for (int lra = 0; lra <= 1; lra++) {
        fcase c = BASE;
        c.L = 150, c.w = 16, c.d = 8, c.r = 2, c.maps[1] = MPL_FMM_MAP_ELU_FLIP, c.theta = 10000;
        c.blend = lra ? MPL_FMM_BLEND_LRA : MPL_FMM_BLEND_CHANNEL;
        if (lra) c.w = 1, c.fnorm = 0, c.fscale = MPL_FMM_FAR_SCALE_INV_SQRT_N;
        char tag[256], what[400];
        case_tag(&c, tag, sizeof tag);
        fdata x = data_make(&c, 500);
        const mpl_attn_fmm_args a = case_args(&c, NULL);
        const int64_t S = c.S, L = c.L, HD = (int64_t)c.H * c.d, W = 3 * HD;
        float *qkv = mpl_test_to_f32(x.qkv, x.n_qkv), *ba = mpl_test_to_f32(x.ba, x.nb),
              *bb = mpl_test_to_f32(x.bb, x.nb);
        float *bal = mpl_test_to_f32(x.bal, 4), *full = mpl_test_falloc(x.n_out),
              *str = mpl_test_falloc(x.n_out);
        const mpl_attn_fmm_blend_f32 bl = {ba, bb, bal};
        full_forward_f32(&a, bl, qkv, full);
        float *stv = mpl_test_falloc(mpl_attn_fmm_stream_elems(&a)), *row = mpl_test_falloc(S * W),
              *o = mpl_test_falloc(S * HD);
        for (int64_t t = 0; t < L; t++) {
            for (int64_t s = 0; s < S; s++) memcpy(row + s * W, qkv + (s * L + t) * W, (size_t)W * 4);
            assert_int_equal(mpl_attn_fmm_stream_step_f32(&a, bl, stv, t, row, o), MPL_OK);
            for (int64_t s = 0; s < S; s++) memcpy(str + (s * L + t) * HD, o + s * HD, (size_t)HD * 4);
        }
        double mx = 0;
        for (int64_t i = 0; i < x.n_out; i++) mx = fmax(mx, fabs(full[i]));
        snprintf(what, sizeof what, "attn_fmm_stream == full causal f32 %s", tag);
        assert_true(mpl_test_close_f32(what, str, full, x.n_out, 1e-5 * mx, 1e-5));
        free(qkv), free(ba), free(bb), free(bal), free(full), free(str), free(stv), free(row), free(o);
        data_free(&x);
    }
}

static mpl_attn_cfg fmm_cfg(int causal, mpl_fmm_blend blend)
{
    return (mpl_attn_cfg){.kind = MPL_ATTN_KIND_FMM, .causal = causal, .n_head = 2,
                          .head_dim = 6, .seq_len = 29, .rope_theta = 10000, .band = 5,
                          .fmm_n_maps = 2, .fmm_maps = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP},
                          .fmm_feature_norm = 1, .fmm_far_norm = 1,
                          .fmm_far_scale = MPL_FMM_FAR_SCALE_INV_SQRT_D, .fmm_eps = 1e-5,
                          .fmm_blend = blend, .fmm_blend_near_init = 0.25,
                          .fmm_blend_far_init = 0.75, .fmm_learn_far_weight = 1};
}

/* A chunk shorter than piece_tokens is one piece of the sequences there
 * are: its work is that of pieces the chunk's length, not piece_tokens. */
static void check_short_chunk_work(const mpl_attn_cfg *cfg)
{
    for (int64_t S = 1; S <= 3; S++) {
        const mpl_attn_geom g = {.n_seq = S, .n_tok = 29};
        assert_int_equal(mpl_attn_fmm_pieces_work_bytes(cfg, NULL, &g, 8192),
                         mpl_attn_fmm_pieces_work_bytes(cfg, NULL, &g, S * 29));
    }
}

/* The registry's instance equals the direct fp32 calls bit for bit. */
static void check_ops(int causal, mpl_fmm_blend blend)
{
    const mpl_attn_cfg cfg = fmm_cfg(causal, blend);
    check_short_chunk_work(&cfg);
    const int lra = blend == MPL_FMM_BLEND_LRA;
    mpl_attn at = {0};
    assert_int_equal(mpl_attn_create(&cfg, NULL, &at), MPL_OK);
    assert_string_equal(at.ops->name, "fmm");
    mpl_slab_layout lay = {0};
    assert_int_equal(at.ops->declare_params(at.impl, 0, "blk0.attn.", &lay), MPL_OK);
    assert_int_equal(at.ops->declare_params(at.impl, 1, "blk1.attn.", &lay), MPL_OK);
    const mpl_tensor_desc *tn = mpl_slab_layout_find(&lay, "blk1.attn.blend_near");
    const mpl_tensor_desc *tf = mpl_slab_layout_find(&lay, "blk1.attn.blend_far");
    const mpl_tensor_desc *tm = mpl_slab_layout_find(&lay, "blk1.attn.blend_maps");
    assert_non_null(tn);
    assert_non_null(tf);
    assert_int_equal(tn->n_elems, lra ? 2 : 12);
    assert_int_equal(tn->decay, 0);
    if (lra) assert_non_null(tm), assert_int_equal(tm->n_elems, 2);
    else assert_null(tm);
    float *params = NULL, *dparams = NULL, *dparams2 = NULL;
    assert_int_equal(mpl_slab_alloc(lay.n_elems, &params), MPL_OK);
    assert_int_equal(mpl_slab_alloc(lay.n_elems, &dparams), MPL_OK);
    assert_int_equal(mpl_slab_alloc(lay.n_elems, &dparams2), MPL_OK);
    at.ops->init_params(at.impl, 0, params, 1);
    at.ops->init_params(at.impl, 1, params, 1);
    for (int64_t i = 0; i < tn->n_elems; i++) {
        assert_true(params[tn->offset + i] == 0.25f);
        assert_true(params[tf->offset + i] == 0.75f);
    }
    if (lra) assert_true(params[tm->offset] == 1.0f && params[tm->offset + 1] == 0.0f);
    /* non-trivial weights for the comparison */
    for (int64_t i = 0; i < tn->n_elems; i++)
        params[tn->offset + i] = 0.5f + 0.1f * (float)i, params[tf->offset + i] = 1.0f - 0.05f * (float)i;
    if (lra) params[tm->offset + 1] = 0.5f;

    uint8_t mask[2 * 29];
    make_mask(mask, 2, 29, 1);
    const mpl_attn_geom g = {.n_seq = 2, .n_tok = 29, .pos0 = 0, .mask = mask};
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&cfg, &g);
    const int64_t HD = 12, n_qkv = 2 * 29 * 3 * HD, n_out = 2 * 29 * HD;
    const int64_t n_saved = at.ops->saved_elems(at.impl, &g);
    /* the kernel's values, then the (empty) halo and the statistics */
    assert_int_equal(n_saved, mpl_attn_fmm_dist_saved_elems(&a, NULL));
    const uint64_t seed = mpl_test_seed();
    float *qkv = mpl_test_falloc(n_qkv), *dout = mpl_test_falloc(n_out),
          *o1 = mpl_test_falloc(n_out), *o2 = mpl_test_falloc(n_out);
    float *s1 = mpl_test_falloc(n_saved), *s2 = mpl_test_falloc(n_saved),
          *d1 = mpl_test_falloc(n_qkv), *d2 = mpl_test_falloc(n_qkv);
    mpl_test_fill_f32(qkv, n_qkv, seed, 600, -1, 1);
    mpl_test_fill_f32(dout, n_out, seed, 601, -1, 1);
    assert_int_equal(at.ops->forward(at.impl, 1, &g, params, qkv, o1, s1), MPL_OK);
    assert_int_equal(at.ops->backward(at.impl, 1, &g, params, qkv, s1, dout, d1, dparams), MPL_OK);
    const mpl_attn_fmm_blend_f32 bl = {params + tn->offset, params + tf->offset,
                                       lra ? params + tm->offset : NULL};
    const mpl_attn_fmm_dblend_f32 dbl = {dparams2 + tn->offset, dparams2 + tf->offset,
                                         lra ? dparams2 + tm->offset : NULL};
    float *stat = s2 + mpl_attn_fmm_saved_elems(&a),
          *dstat = mpl_test_falloc(mpl_attn_fmm_stat_elems(&a));
    mpl_attn_fmm_ctx_f32 ctx = {0};
    if (!causal) {
        assert_int_equal(mpl_attn_fmm_stats_f32(&a, qkv, stat), MPL_OK);
        ctx.stat_in = stat;
    }
    assert_int_equal(mpl_attn_fmm_forward_f32(&a, &ctx, bl, qkv, o2, s2), MPL_OK);
    const mpl_attn_fmm_dctx_f32 dctx = {.stat_in = dstat};
    assert_int_equal(mpl_attn_fmm_backward_f32(&a, &ctx, bl, qkv, s2, dout, d2, &dctx, dbl), MPL_OK);
    if (!causal) assert_int_equal(mpl_attn_fmm_stats_backward_f32(&a, qkv, dstat, d2), MPL_OK);
    char what[160];
    snprintf(what, sizeof what, "attn_fmm ops == direct fwd %s %s", causal ? "causal" : "bidir",
             lra ? "lra" : "channel");
    assert_true(mpl_test_close_f32(what, o1, o2, n_out, 0, 0));
    assert_true(mpl_test_close_f32("attn_fmm ops == direct saved", s1, s2, n_saved, 0, 0));
    assert_true(mpl_test_close_f32("attn_fmm ops == direct dqkv", d1, d2, n_qkv, 0, 0));
    assert_true(mpl_test_close_f32("attn_fmm ops == direct dparams", dparams, dparams2,
                                   lay.n_elems, 0, 0));
    /* layer 0's gradients untouched, and nonzero ones for layer 1 */
    double g0 = 0, g1 = 0;
    for (int64_t i = 0; i < tn->n_elems; i++) g1 += fabs(dparams[tn->offset + i]);
    const mpl_tensor_desc *t0 = mpl_slab_layout_find(&lay, "blk0.attn.blend_near");
    for (int64_t i = 0; i < t0->n_elems; i++) g0 += fabs(dparams[t0->offset + i]);
    assert_true(g0 == 0 && g1 > 0);

    /* streaming through the table: causal equals the forward (no mask) */
    void *sm = NULL;
    if (!causal) {
        assert_int_equal(at.ops->stream_create(at.impl, 1, 2, &sm), MPL_ERR_UNSUPPORTED);
        mpl_err_clear();
    } else {
        const mpl_attn_geom g2 = {.n_seq = 2, .n_tok = 29};
        assert_int_equal(at.ops->forward(at.impl, 1, &g2, params, qkv, o1, s1), MPL_OK);
        assert_int_equal(at.ops->stream_create(at.impl, 1, 2, &sm), MPL_OK);
        float row[2 * 36], orow[2 * 12];
        for (int64_t t = 0; t < 29; t++) {
            for (int s = 0; s < 2; s++) memcpy(row + s * 36, qkv + (s * 29 + t) * 36, 36 * 4);
            assert_int_equal(at.ops->stream_step(at.impl, 1, sm, params, t, row, orow), MPL_OK);
            for (int s = 0; s < 2; s++) memcpy(o2 + (s * 29 + t) * 12, orow + s * 12, 12 * 4);
        }
        assert_int_equal(at.ops->stream_step(at.impl, 1, sm, params, 3, row, orow), MPL_ERR_ARG);
        mpl_err_clear();
        assert_true(mpl_test_close_f32("attn_fmm ops stream == forward", o2, o1, n_out, 1e-5, 1e-5));
        at.ops->stream_destroy(&sm);
        assert_null(sm);
    }
    mpl_slab_free(&params), mpl_slab_free(&dparams), mpl_slab_free(&dparams2);
    mpl_slab_layout_free(&lay);
    free(qkv), free(dout), free(o1), free(o2), free(s1), free(s2), free(d1), free(d2), free(dstat);
    mpl_attn_destroy(&at);
    assert_null(at.impl);
}

void test_attention_fmm_ops(void **state)
{
    (void)state;
    for (int causal = 0; causal <= 1; causal++) {
        check_ops(causal, MPL_FMM_BLEND_CHANNEL);
        check_ops(causal, MPL_FMM_BLEND_LRA);
    }
}

static void expect_fail(const mpl_attn_cfg *cfg, struct mpl_comm *sp, mpl_status want,
                        const char *needle)
{
    mpl_attn at = {0};
    mpl_err_clear();
    const mpl_status st = mpl_attn_create(cfg, sp, &at);
    printf("attn_fmm_create -> %s: %s\n", mpl_status_str(st), mpl_err_cause());
    assert_int_equal(st, want);
    assert_non_null(strstr(mpl_err_cause(), needle));
    assert_null(at.ops);
    mpl_err_clear();
}

void test_attention_fmm_registry_errors(void **state)
{
    (void)state;
    const mpl_attn_cfg ok = fmm_cfg(1, MPL_FMM_BLEND_CHANNEL);
    mpl_attn_cfg c = ok;
    c.band = 0;
    expect_fail(&c, NULL, MPL_ERR_ARG, "band=0");
    c = ok, c.fmm_n_maps = 0;
    expect_fail(&c, NULL, MPL_ERR_ARG, "fmm_n_maps=0");
    c = ok, c.fmm_n_maps = 5;
    expect_fail(&c, NULL, MPL_ERR_ARG, "fmm_n_maps=5");
    c = ok, c.fmm_maps[1] = (mpl_fmm_map)9;
    expect_fail(&c, NULL, MPL_ERR_ARG, "fmm_maps[1]=9");
    c = ok, c.fmm_eps = 0;
    expect_fail(&c, NULL, MPL_ERR_ARG, "fmm_eps=0");
    c = ok, c.head_dim = 5;
    expect_fail(&c, NULL, MPL_ERR_ARG, "head_dim=5");
    c = ok, c.fmm_far_scale = (mpl_fmm_far_scale)7;
    expect_fail(&c, NULL, MPL_ERR_ARG, "fmm_far_scale=7");
    c = ok, c.fmm_blend = (mpl_fmm_blend)3;
    expect_fail(&c, NULL, MPL_ERR_ARG, "fmm_blend=3");
    /* the direct call validates its halo against w and pos0 */
    fcase fc = BASE;
    const mpl_attn_fmm_args a = case_args(&fc, NULL);
    double qkv[7 * 2 * 24] = {0}, out[7 * 2 * 8], sv[7 * 2 * 2 * 10], halo[2 * 16] = {0};
    const double w1[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    const mpl_attn_fmm_ctx_f64 ctx = {.n_pre = 1, .halo_pre = halo};
    assert_int_equal(mpl_attn_fmm_forward_f64(&a, &ctx, (mpl_attn_fmm_blend_f64){w1, w1, w1}, qkv,
                                              out, sv),
                     MPL_ERR_ARG);
    printf("attn_fmm halo at pos0=0 -> %s\n", mpl_err_cause());
    assert_non_null(strstr(mpl_err_cause(), "n_pre=1"));
    mpl_err_clear();
}

/* Results do not depend on the thread count: bit-identical outputs and
 * gradients (blend weights included) with 1, 2 and 3 threads. */
void test_attention_fmm_threads(void **state)
{
    (void)state;
    for (int causal = 0; causal <= 1; causal++) {
        fcase c = BASE;
        c.causal = causal, c.S = 2, c.L = 300, c.H = 3, c.d = 8, c.w = 16, c.r = 2;
        c.maps[1] = MPL_FMM_MAP_TANH, c.theta = 10000, c.mask = 1;
        fdata x = data_make(&c, 800);
        const mpl_attn_fmm_args a = case_args(&c, x.mask);
        float *qkv = mpl_test_to_f32(x.qkv, x.n_qkv), *dout = mpl_test_to_f32(x.dout, x.n_out);
        float *ba = mpl_test_to_f32(x.ba, x.nb), *bb = mpl_test_to_f32(x.bb, x.nb),
              *bal = mpl_test_to_f32(x.bal, 4);
        const mpl_attn_fmm_blend_f32 bl = {ba, bb, bal};
        const int64_t n_sv = mpl_attn_fmm_saved_elems(&a), n_st = mpl_attn_fmm_stat_elems(&a);
        const int64_t n_all = x.n_out + x.n_qkv + 2 * x.nb + n_st;
        float *res[3];
        const int nt0 = omp_get_max_threads();
        for (int t = 0; t < 3; t++) {
            omp_set_num_threads(t + 1);
            float *all = res[t] = mpl_test_falloc(n_all), *sv = mpl_test_falloc(n_sv),
                  *stat = mpl_test_falloc(n_st);
            float *out = all, *dq = out + x.n_out, *da = dq + x.n_qkv, *db = da + x.nb;
            float *dstat = db + x.nb;
            mpl_attn_fmm_ctx_f32 ctx = {0};
            if (!causal) {
                assert_int_equal(mpl_attn_fmm_stats_f32(&a, qkv, stat), MPL_OK);
                ctx.stat_in = stat;
            }
            assert_int_equal(mpl_attn_fmm_forward_f32(&a, &ctx, bl, qkv, out, sv), MPL_OK);
            const mpl_attn_fmm_dctx_f32 dctx = {.stat_in = dstat};
            assert_int_equal(mpl_attn_fmm_backward_f32(&a, &ctx, bl, qkv, sv, dout, dq, &dctx,
                                                       (mpl_attn_fmm_dblend_f32){da, db, NULL}),
                             MPL_OK);
            free(sv), free(stat);
        }
        omp_set_num_threads(nt0);
        char what[128];
        for (int t = 1; t < 3; t++) {
            snprintf(what, sizeof what, "attn_fmm %s threads=%d == threads=1 (bitwise)",
                     causal ? "causal" : "bidir", t + 1);
            assert_true(mpl_test_close_f32(what, res[t], res[0], n_all, 0, 0));
        }
        for (int t = 0; t < 3; t++) free(res[t]);
        free(qkv), free(dout), free(ba), free(bb), free(bal);
        data_free(&x);
    }
}

/* Opt-in timing: forward + backward, fp32, causal, one sequence. */
void test_attention_fmm_bench(void **state)
{
    (void)state;
    if (!getenv("MPL_FMM_BENCH")) {
        printf("attn_fmm bench skipped (set MPL_FMM_BENCH=1)\n");
        return;
    }
    fcase c = BASE;
    c.S = 1, c.L = 65536, c.H = 4, c.d = 32, c.w = 64, c.r = 2, c.maps[1] = MPL_FMM_MAP_ELU_FLIP;
    const mpl_attn_fmm_args a = case_args(&c, NULL);
    const int64_t HD = 128, n_qkv = c.L * 3 * HD, n_out = c.L * HD;
    float *qkv = mpl_test_falloc(n_qkv), *dout = mpl_test_falloc(n_out),
          *out = mpl_test_falloc(n_out), *dq = mpl_test_falloc(n_qkv);
    float *sv = mpl_test_falloc(mpl_attn_fmm_saved_elems(&a)), *bw = mpl_test_falloc(HD);
    float *da = mpl_test_falloc(HD), *db = mpl_test_falloc(HD);
    for (int64_t i = 0; i < HD; i++) bw[i] = 0.5f;
    mpl_test_fill_f32(qkv, n_qkv, 1, 700, -1, 1);
    mpl_test_fill_f32(dout, n_out, 1, 701, -1, 1);
    const mpl_attn_fmm_ctx_f32 ctx = {0};
    const mpl_attn_fmm_blend_f32 bl = {bw, bw, NULL};
    double best_f = 1e30, best_b = 1e30;
    for (int it = 0; it < 3; it++) {
        double t0 = omp_get_wtime();
        assert_int_equal(mpl_attn_fmm_forward_f32(&a, &ctx, bl, qkv, out, sv), MPL_OK);
        double t1 = omp_get_wtime();
        assert_int_equal(mpl_attn_fmm_backward_f32(&a, &ctx, bl, qkv, sv, dout, dq, NULL,
                                                   (mpl_attn_fmm_dblend_f32){da, db, NULL}),
                         MPL_OK);
        double t2 = omp_get_wtime();
        best_f = fmin(best_f, t1 - t0), best_b = fmin(best_b, t2 - t1);
    }
    printf("# attn_fmm bench L=65536 H=4 d=32 w=64 r=2 causal f32 threads=%d (best of 3)\n",
           omp_get_max_threads());
    printf("attn_fmm bench forward=%.3f s backward=%.3f s total=%.3f s\n", best_f, best_b,
           best_f + best_b);
    free(qkv), free(dout), free(out), free(dq), free(sv), free(bw), free(da), free(db);
}
