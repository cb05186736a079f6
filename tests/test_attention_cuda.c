/* The GPU attention (attention/registry_cuda.h) against the CPU
 * implementation of the same config on the same random fp32 inputs:
 * forward output, backward dqkv and the parameters' gradient (FMM blend),
 * for dense, fmm and combiner_fixed, causal and bidirectional, with and
 * without RoPE, chunks shorter and longer than the far field's blocks and
 * ragged segments. Tolerance MPL_TOL_ATTN_F32 (tests/tolerance.h). Skips
 * (exit 77) without a usable GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "gpuutil.h"

static void ok(mpl_status st)
{
    if (st != MPL_OK) mpl_err_print(stderr, "  ");
    assert_int_equal(st, MPL_OK);
}

/* Parameters of instance a in a fresh layout; random values (so both FMM
 * fields reach the output). */
static float *params_of(mpl_attn *a, mpl_slab_layout *lay, uint64_t seed)
{
    memset(lay, 0, sizeof *lay);
    if (a->ops->declare_params) ok(a->ops->declare_params(a->impl, 0, "blk0.attn.", lay));
    float *p = mpl_test_falloc(lay->n_elems);
    mpl_test_fill_f32(p, lay->n_elems, seed, 90, -1, 1);
    return p;
}

static void run_case(mpl_cuda *cu, mpl_attn_cfg cfg, int64_t S, int64_t T, const char *label)
{
    const int64_t HD = (int64_t)cfg.n_head * cfg.head_dim, n_qkv = S * T * 3 * HD;
    const uint64_t seed = mpl_test_seed();
    cfg.seq_len = T;
    const mpl_attn_geom g = {S, T, 0, NULL};
    mpl_attn ca = {0}, ga = {0};
    ok(mpl_attn_create(&cfg, NULL, &ca));
    mpl_attn_cfg gc = cfg;
    gc.device = MPL_DEVICE_CUDA;
    gc.cuda = cu;
    ok(mpl_attn_create(&gc, NULL, &ga));
    assert_int_equal(ga.ops->device, MPL_DEVICE_CUDA);
    mpl_slab_layout cl, gl;
    float *p = params_of(&ca, &cl, seed), *pg = params_of(&ga, &gl, seed);
    assert_int_equal(cl.n_elems, gl.n_elems); /* the same parameters on both */
    float *qkv = mpl_test_falloc(n_qkv), *dout = mpl_test_falloc(S * T * HD);
    mpl_test_fill_f32(qkv, n_qkv, seed, 91, -1.5, 1.5);
    mpl_test_fill_f32(dout, S * T * HD, seed, 92, -1, 1);
    /* CPU reference */
    float *out = mpl_test_falloc(S * T * HD), *dqkv = mpl_test_falloc(n_qkv);
    float *saved = mpl_test_falloc(ca.ops->saved_elems(ca.impl, &g));
    float *dp = mpl_test_falloc(cl.n_elems);
    ok(ca.ops->forward(ca.impl, 0, &g, p, qkv, out, saved));
    ok(ca.ops->backward(ca.impl, 0, &g, p, qkv, saved, dout, dqkv, dp));
    /* GPU */
    const int64_t n_saved = ga.ops->saved_elems(ga.impl, &g);
    float *d_qkv = mpl_test_dup_f32(cu, qkv, n_qkv), *d_dout = mpl_test_dup_f32(cu, dout, S * T * HD);
    float *d_p = mpl_test_dup_f32(cu, pg, gl.n_elems), *d_dp = mpl_test_dzero(cu, gl.n_elems * 4);
    float *d_out = mpl_test_dzero(cu, S * T * HD * 4), *d_saved = mpl_test_dzero(cu, n_saved * 4);
    float *d_dqkv = mpl_test_dzero(cu, n_qkv * 4);
    ok(ga.ops->forward(ga.impl, 0, &g, d_p, d_qkv, d_out, d_saved));
    ok(ga.ops->backward(ga.impl, 0, &g, d_p, d_qkv, d_saved, d_dout, d_dqkv, d_dp));
    float *got = mpl_test_falloc(n_qkv);
    char what[160];
    snprintf(what, sizeof what, "%s fwd", label);
    mpl_test_get_f32(cu, got, d_out, S * T * HD);
    assert_true(mpl_test_close_tol(what, got, out, S * T * HD, MPL_TOL_ATTN_F32));
    snprintf(what, sizeof what, "%s dqkv", label);
    mpl_test_get_f32(cu, got, d_dqkv, n_qkv);
    assert_true(mpl_test_close_tol(what, got, dqkv, n_qkv, MPL_TOL_ATTN_F32));
    if (cl.n_elems > 0) {
        snprintf(what, sizeof what, "%s dparams", label);
        mpl_test_get_f32(cu, got, d_dp, gl.n_elems);
        assert_true(mpl_test_close_tol(what, got, dp, cl.n_elems, MPL_TOL_ATTN_F32));
    }
    void *dev[] = {d_qkv, d_dout, d_p, d_dp, d_out, d_saved, d_dqkv};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) mpl_test_dfree(cu, dev[i]);
    mpl_attn_destroy(&ca);
    mpl_attn_destroy(&ga);
    mpl_slab_layout_free(&cl), mpl_slab_layout_free(&gl);
    free(p), free(pg), free(qkv), free(dout), free(out), free(dqkv), free(saved), free(dp);
    free(got);
}

static mpl_attn_cfg base(mpl_attn_kind kind, int causal, double theta)
{
    mpl_attn_cfg c;
    memset(&c, 0, sizeof c);
    c.kind = kind, c.causal = causal, c.n_head = 2, c.head_dim = 16, c.rope_theta = theta;
    c.band = 5, c.segment = 6;
    c.fmm_n_maps = 2, c.fmm_maps[0] = MPL_FMM_MAP_ELU, c.fmm_maps[1] = MPL_FMM_MAP_ELU_FLIP;
    c.fmm_feature_norm = 1, c.fmm_far_norm = 1, c.fmm_eps = 1e-5;
    c.fmm_far_scale = MPL_FMM_FAR_SCALE_INV_SQRT_D, c.fmm_blend = MPL_FMM_BLEND_CHANNEL;
    c.fmm_learn_far_weight = 1;
    return c;
}

static void test_attention_cuda_dense(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    for (int causal = 0; causal < 2; causal++)
        for (int rope = 0; rope < 2; rope++) {
            char l[64];
            snprintf(l, sizeof l, "dense causal=%d rope=%d L=37", causal, rope);
            run_case(cu, base(MPL_ATTN_KIND_DENSE, causal, rope ? 100.0 : 0), 2, 37, l);
        }
}

static void test_attention_cuda_fmm(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t lens[2] = {37, 150}; /* one far block; two and a ragged one */
    for (int causal = 0; causal < 2; causal++)
        for (int rope = 0; rope < 2; rope++)
            for (int li = 0; li < 2; li++) {
                mpl_attn_cfg c = base(MPL_ATTN_KIND_FMM, causal, rope ? 100.0 : 0);
                if (li == 1) c.band = 64; /* a band wider than a near-field block */
                char l[96];
                snprintf(l, sizeof l, "fmm causal=%d rope=%d L=%lld w=%lld", causal, rope,
                         (long long)lens[li], (long long)c.band);
                run_case(cu, c, 2, lens[li], l);
            }
    /* the other options: tanh map, no feature norm, no ratio, 1/sqrt(n) */
    for (int causal = 0; causal < 2; causal++) {
        mpl_attn_cfg c = base(MPL_ATTN_KIND_FMM, causal, 0);
        c.fmm_n_maps = 1, c.fmm_maps[0] = MPL_FMM_MAP_TANH, c.fmm_feature_norm = 0;
        c.fmm_far_norm = 0, c.fmm_far_scale = MPL_FMM_FAR_SCALE_INV_SQRT_N;
        c.fmm_learn_far_weight = 0;
        char l[96];
        snprintf(l, sizeof l, "fmm tanh plain causal=%d L=70", causal);
        run_case(cu, c, 1, 70, l);
    }
}

static void test_attention_cuda_combiner_fixed(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    for (int causal = 0; causal < 2; causal++)
        for (int rope = 0; rope < 2; rope++) {
            mpl_attn_cfg c = base(MPL_ATTN_KIND_COMBINER_FIXED, causal, rope ? 100.0 : 0);
            char l[96];
            snprintf(l, sizeof l, "combiner_fixed causal=%d rope=%d L=37 s=6", causal, rope);
            run_case(cu, c, 2, 37, l);
        }
}

/* What the GPU path refuses says so. */
static void test_attention_cuda_refusals(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    mpl_attn a = {0};
    mpl_attn_cfg c = base(MPL_ATTN_KIND_COMBINER_LOGSPARSE, 1, 0);
    c.device = MPL_DEVICE_CUDA, c.cuda = cu;
    assert_int_equal(mpl_attn_create(&c, NULL, &a), MPL_ERR_UNSUPPORTED);
    printf("logsparse: %s\n", mpl_err_cause());
    mpl_err_clear();
    c = base(MPL_ATTN_KIND_FMM, 1, 0);
    c.device = MPL_DEVICE_CUDA, c.cuda = cu, c.fmm_blend = MPL_FMM_BLEND_LRA;
    assert_int_equal(mpl_attn_create(&c, NULL, &a), MPL_ERR_UNSUPPORTED);
    printf("lra: %s\n", mpl_err_cause());
    mpl_err_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_cuda_dense),
        cmocka_unit_test(test_attention_cuda_fmm),
        cmocka_unit_test(test_attention_cuda_combiner_fixed),
        cmocka_unit_test(test_attention_cuda_refusals),
    };
    return mpl_test_gpu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
