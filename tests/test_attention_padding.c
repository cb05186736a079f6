/* Padding at the end of a sequence changes nothing for its real tokens,
 * for every mechanism, bidirectional (the classifier's use): a sequence of
 * n real tokens (one padded token inside) padded with random rows to
 * several longer lengths L gives, in fp64, the outputs and the gradients
 * of its rows of the unpadded call, and its padded rows output 0 and get
 * no gradient. Options whose definition depends on the padded length are
 * held fixed here: FMM's far_scale inv_sqrt_n (n is the padded length by
 * ATTENTION.md) and Combiner-Fixed's default segment round(sqrt(L)). The
 * split forms are covered by each kind's chunked tests, which compare
 * chunks with padding (tails included) to the one-piece result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/combiner.h"
#include "attention/dense.h"
#include "attention/fmm.h"

enum { H = 2, D = 4, HD = H * D, W = 3 * HD, MAX_L = 48 };

/* One mechanism with its options. */
typedef struct pcase {
    const char *name;
    int kind;      /* 0 dense, 1 fmm, 2 combiner_fixed, 3 combiner_logsparse */
    int64_t seg;   /* Combiner-Fixed */
    int fnorm;     /* FMM: feature_norm sum and far_norm ratio (1), or none (0) */
} pcase;

/* Outputs and row gradients of one bidirectional call on the first L rows
 * of qkv (one sequence); for FMM also the blend gradients (dbl, 2 H d). */
typedef struct presult {
    double out[MAX_L * HD], dqkv[MAX_L * W], dbl[2 * HD];
} presult;

static void run_fmm(const pcase *c, int64_t L, const double *qkv, const uint8_t *mk,
                    const double *dout, const double *blend, presult *r)
{
    const mpl_attn_fmm_args a = {
        .n_seq = 1, .n_tok = L, .seq_len = L, .n_head = H, .head_dim = D, .causal = 0,
        .band = 3, .rope_theta = 100.0, .n_maps = 2,
        .maps = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP}, .feature_norm = c->fnorm,
        .far_norm = c->fnorm, .far_scale = MPL_FMM_FAR_SCALE_INV_SQRT_D, .eps = 1e-5,
        .blend = MPL_FMM_BLEND_CHANNEL, .learn_far_weight = 1, .mask = mk};
    const mpl_attn_fmm_blend_f64 bl = {blend, blend + HD, NULL};
    double *stat = mpl_test_dalloc(mpl_attn_fmm_stat_elems(&a)),
           *dstat = mpl_test_dalloc(mpl_attn_fmm_stat_elems(&a)),
           *saved = mpl_test_dalloc(mpl_attn_fmm_saved_elems(&a));
    /* one bidirectional rank: its own totals are the context */
    assert_int_equal(mpl_attn_fmm_stats_f64(&a, qkv, stat), MPL_OK);
    const mpl_attn_fmm_ctx_f64 ctx = {.stat_in = stat};
    assert_int_equal(mpl_attn_fmm_forward_f64(&a, &ctx, bl, qkv, r->out, saved), MPL_OK);
    const mpl_attn_fmm_dctx_f64 dctx = {.stat_in = dstat};
    assert_int_equal(mpl_attn_fmm_backward_f64(&a, &ctx, bl, qkv, saved, dout, r->dqkv, &dctx,
                                               (mpl_attn_fmm_dblend_f64){r->dbl, r->dbl + HD,
                                                                         NULL}),
                     MPL_OK);
    assert_int_equal(mpl_attn_fmm_stats_backward_f64(&a, qkv, dstat, r->dqkv), MPL_OK);
    free(stat), free(dstat), free(saved);
}

static void run_one(const pcase *c, int64_t L, const double *qkv, const uint8_t *mk,
                    const double *dout, const double *blend, presult *r)
{
    memset(r, 0, sizeof *r);
    if (c->kind == 1) {
        run_fmm(c, L, qkv, mk, dout, blend, r);
        return;
    }
    double *saved;
    if (c->kind == 0) {
        const mpl_attn_dense_args a = {.n_seq = 1, .n_tok = L, .n_head = H, .head_dim = D,
                                       .causal = 0, .rope_theta = 100.0, .mask = mk};
        saved = mpl_test_dalloc(mpl_attn_dense_saved_elems(&a));
        assert_int_equal(mpl_attn_dense_forward_f64(&a, qkv, r->out, saved), MPL_OK);
        assert_int_equal(mpl_attn_dense_backward_f64(&a, qkv, saved, dout, r->dqkv), MPL_OK);
    } else {
        const mpl_attn_combiner_args a = {.n_seq = 1, .n_tok = L, .seq_len = L, .n_head = H,
                                          .head_dim = D, .causal = 0, .rope_theta = 100.0,
                                          .segment = c->seg, .mask = mk};
        saved = mpl_test_dalloc(mpl_attn_combiner_saved_elems(&a));
        if (c->kind == 2) {
            assert_int_equal(mpl_attn_combiner_fixed_forward_f64(&a, qkv, r->out, saved), MPL_OK);
            assert_int_equal(mpl_attn_combiner_fixed_backward_f64(&a, qkv, saved, dout, r->dqkv),
                             MPL_OK);
        } else {
            assert_int_equal(mpl_attn_combiner_logsparse_forward_f64(&a, qkv, r->out, saved),
                             MPL_OK);
            assert_int_equal(
                mpl_attn_combiner_logsparse_backward_f64(&a, qkv, saved, dout, r->dqkv), MPL_OK);
        }
    }
    free(saved);
}

/* n real tokens (token 4 padded when n > 4) against every padded length. */
static void check_case(const pcase *c, int64_t n, const int64_t *lens, int n_lens)
{
    const uint64_t seed = mpl_test_seed();
    double *qkv = mpl_test_dalloc(MAX_L * W), *dout = mpl_test_dalloc(MAX_L * HD);
    double blend[2 * HD];
    mpl_test_fill_f64(qkv, MAX_L * W, seed, 900 + (uint64_t)n, -1.5, 1.5);
    mpl_test_fill_f64(dout, MAX_L * HD, seed, 901, -1, 1); /* padded rows too */
    mpl_test_fill_f64(blend, 2 * HD, seed, 902, 0.25, 1.25);
    uint8_t mk[MAX_L];
    for (int64_t t = 0; t < MAX_L; t++) mk[t] = t < n && t != 4;
    presult *ref = malloc(sizeof *ref), *got = malloc(sizeof *got);
    assert_non_null(ref);
    assert_non_null(got);
    run_one(c, n, qkv, mk, dout, blend, ref);
    for (int k = 0; k < n_lens; k++) {
        const int64_t L = lens[k];
        assert_true(L > n && L <= MAX_L);
        run_one(c, L, qkv, mk, dout, blend, got);
        char what[160];
        snprintf(what, sizeof what, "attn_padding %s n=%lld L=%lld fwd", c->name, (long long)n,
                 (long long)L);
        int ok = mpl_test_close_f64(what, got->out, ref->out, n * HD, 1e-14, 1e-12);
        snprintf(what, sizeof what, "attn_padding %s n=%lld L=%lld bwd", c->name, (long long)n,
                 (long long)L);
        ok &= mpl_test_close_f64(what, got->dqkv, ref->dqkv, n * W, 1e-14, 1e-12);
        if (c->kind == 1) {
            snprintf(what, sizeof what, "attn_padding %s n=%lld L=%lld dblend", c->name,
                     (long long)n, (long long)L);
            ok &= mpl_test_close_f64(what, got->dbl, ref->dbl, 2 * HD, 1e-13, 1e-12);
        }
        for (int64_t i = n * HD; i < L * HD; i++) ok &= got->out[i] == 0;
        for (int64_t i = n * W; i < L * W; i++) ok &= got->dqkv[i] == 0;
        if (!ok) fail_msg("%s: padding to L=%lld changed the real tokens or the padded rows",
                          c->name, (long long)L);
    }
    free(ref), free(got), free(qkv), free(dout);
}

static void test_attention_padding_bidirectional(void **state)
{
    (void)state;
    const pcase cases[] = {
        {"dense", 0, 0, 0},
        {"fmm", 1, 0, 1},
        {"fmm feature_norm=none far_norm=none", 1, 0, 0},
        {"combiner_fixed s=3", 2, 3, 0},
        {"combiner_fixed s=4", 2, 4, 0},
        {"combiner_logsparse", 3, 0, 0},
    };
    /* 13 real: padding crosses 16 and 32 (new levels); 16 real: a power of
     * two padded by one; 5 real: most of every block is padding */
    const int64_t l13[] = {14, 15, 16, 17, 24, 32, 33, 48};
    const int64_t l16[] = {17, 20, 31, 32, 40};
    const int64_t l5[] = {6, 8, 9, 23};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        check_case(&cases[k], 13, l13, 8);
        check_case(&cases[k], 16, l16, 5);
        check_case(&cases[k], 5, l5, 4);
    }
}

int main(void)
{
    mpl_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_padding_bidirectional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
