/* The CUDA model (bf16 products and activations, fp32 master weights)
 * against the CPU fp32 model of the same config and seed: forward loss
 * within MPL_TOL_MODEL_LOSS_REL, gradient cosine >= MPL_TOL_MODEL_GRAD_COS
 * over the whole slab and >= MPL_TOL_MODEL_TENSOR_COS per tensor, for
 * dense, fmm and combiner_fixed attention; the host mirrors' copies; the
 * memory plan; and what the CUDA model refuses. Skips (exit 77) without a
 * usable GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "core/model.h"
#include "core/philox.h"
#include "gpuutil.h"

static void ok(mpl_status st)
{
    if (st != MPL_OK) mpl_err_print(stderr, "  ");
    assert_int_equal(st, MPL_OK);
}

typedef struct pair {
    mpl_attn ca, ga;
    mpl_model *cm, *gm;
} pair;

static mpl_attn_cfg attn_cfg(mpl_attn_kind kind, int64_t L)
{
    mpl_attn_cfg c;
    memset(&c, 0, sizeof c);
    c.kind = kind, c.causal = 1, c.n_head = 4, c.head_dim = 16, c.seq_len = L;
    c.rope_theta = 10000, c.band = 8, c.segment = 7;
    c.fmm_n_maps = 2, c.fmm_maps[0] = MPL_FMM_MAP_ELU, c.fmm_maps[1] = MPL_FMM_MAP_ELU_FLIP;
    c.fmm_feature_norm = 1, c.fmm_far_norm = 1, c.fmm_eps = 1e-5;
    c.fmm_blend_near_init = 0.5, c.fmm_blend_far_init = 1, c.fmm_learn_far_weight = 1;
    return c;
}

static mpl_model_cfg model_cfg(void)
{
    return (mpl_model_cfg){.vocab_size = 96, .d_model = 64, .n_layer = 2, .n_head = 4,
                           .mlp_mult = 4, .norm_eps = 1e-5};
}

static void make(mpl_cuda *cu, mpl_attn_kind kind, int64_t S, int64_t L, pair *p)
{
    memset(p, 0, sizeof *p);
    mpl_attn_cfg ac = attn_cfg(kind, L), gc = ac;
    gc.device = MPL_DEVICE_CUDA, gc.cuda = cu;
    ok(mpl_attn_create(&ac, NULL, &p->ca));
    ok(mpl_attn_create(&gc, NULL, &p->ga));
    mpl_model_cfg mc = model_cfg(), gmc = mc;
    gmc.device = MPL_DEVICE_CUDA, gmc.cuda = cu;
    ok(mpl_model_create(&mc, &p->ca, &p->cm));
    ok(mpl_model_create(&gmc, &p->ga, &p->gm));
    assert_int_equal(mpl_model_device(p->gm), MPL_DEVICE_CUDA);
    ok(mpl_model_reserve(p->cm, S, L));
    ok(mpl_model_reserve(p->gm, S, L));
    ok(mpl_model_init_params(p->cm, 7));
    ok(mpl_model_init_params(p->gm, 7));
}

static void unmake(pair *p)
{
    mpl_model_destroy(&p->cm);
    mpl_model_destroy(&p->gm);
    assert_null(p->gm);
    mpl_attn_destroy(&p->ca);
    mpl_attn_destroy(&p->ga);
}

static void compare(mpl_cuda *cu, mpl_attn_kind kind)
{
    const int64_t S = 2, L = 40, N = S * L;
    pair p;
    make(cu, kind, S, L, &p);
    const mpl_slab_layout *lay = mpl_model_layout(p.cm);
    assert_int_equal(lay->n_elems, mpl_model_layout(p.gm)->n_elems);
    /* the same initial parameters on both devices */
    ok(mpl_model_params_pull(p.gm));
    assert_memory_equal(mpl_model_params(p.cm), mpl_model_params(p.gm),
                        (size_t)lay->n_elems * sizeof(float));
    int32_t tok[80], tgt[80];
    const uint64_t seed = mpl_test_seed();
    for (int64_t i = 0; i < N; i++) {
        tok[i] = (int32_t)(mpl_philox_uniform(seed, 60, (uint64_t)i) * 96);
        tgt[i] = i == 11 ? -1 : (int32_t)((tok[i] * 5 + 3) % 96);
    }
    const mpl_attn_geom g = {S, L, 0, NULL};
    double lc, lg;
    int64_t nc, ng;
    ok(mpl_model_forward(p.cm, &g, tok, tgt, &lc, &nc));
    ok(mpl_model_forward(p.gm, &g, tok, tgt, &lg, &ng));
    assert_int_equal(nc, N - 1);
    assert_int_equal(ng, nc);
    const double rel = fabs(lg - lc) / fabs(lc);
    printf("%s: loss cpu %.6f gpu %.6f (per token %.5f) rel %.2e (limit %.0e)\n",
           p.ga.ops->name, lc, lg, lc / nc, rel, MPL_TOL_MODEL_LOSS_REL);
    assert_true(rel <= MPL_TOL_MODEL_LOSS_REL);
    ok(mpl_model_zero_grad(p.cm));
    ok(mpl_model_zero_grad(p.gm));
    ok(mpl_model_backward(p.cm, 1.0 / (double)nc));
    ok(mpl_model_backward(p.gm, 1.0 / (double)nc));
    ok(mpl_model_grads_pull(p.gm));
    const float *gc = mpl_model_grads(p.cm), *gg = mpl_model_grads(p.gm);
    const double cos_all = mpl_test_cosine(gc, gg, lay->n_elems);
    double worst = 1;
    const char *worst_name = "";
    for (int t = 0; t < lay->n_tensors; t++) {
        const mpl_tensor_desc *d = &lay->t[t];
        const double c = mpl_test_cosine(gc + d->offset, gg + d->offset, d->n_elems);
        if (c < worst) worst = c, worst_name = d->name;
        if (c < MPL_TOL_MODEL_TENSOR_COS) printf("  %s: cosine %.6f\n", d->name, c);
    }
    printf("%s: gradient cosine %.6f (limit %.3f), worst tensor %s %.6f (limit %.2f)\n",
           p.ga.ops->name, cos_all, MPL_TOL_MODEL_GRAD_COS, worst_name, worst,
           MPL_TOL_MODEL_TENSOR_COS);
    assert_true(cos_all >= MPL_TOL_MODEL_GRAD_COS);
    assert_true(worst >= MPL_TOL_MODEL_TENSOR_COS);
    unmake(&p);
}

static void test_core_cuda_model_dense(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    compare(cu, MPL_ATTN_KIND_DENSE);
}

static void test_core_cuda_model_fmm(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    compare(cu, MPL_ATTN_KIND_FMM);
}

static void test_core_cuda_model_combiner_fixed(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    compare(cu, MPL_ATTN_KIND_COMBINER_FIXED);
}

/* Host mirrors: push then pull gives the same bits; the plan counts the
 * device slabs; zero_grad zeroes. */
static void test_core_cuda_model_mirrors_and_plan(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    pair p;
    make(cu, MPL_ATTN_KIND_FMM, 1, 16, &p);
    const int64_t n = mpl_model_layout(p.gm)->n_elems;
    float *w = mpl_model_params(p.gm), *keep = mpl_test_falloc(n);
    mpl_test_fill_f32(w, n, mpl_test_seed(), 5, -1, 1);
    memcpy(keep, w, (size_t)n * sizeof *w);
    ok(mpl_model_params_push(p.gm));
    memset(w, 0, (size_t)n * sizeof *w);
    ok(mpl_model_params_pull(p.gm));
    assert_memory_equal(w, keep, (size_t)n * sizeof *w);
    ok(mpl_model_zero_grad(p.gm));
    ok(mpl_model_grads_pull(p.gm));
    for (int64_t i = 0; i < n; i++) assert_true(mpl_model_grads(p.gm)[i] == 0.0f);
    mpl_model_mem mem;
    const mpl_attn_geom g = {1, 16, 0, NULL};
    ok(mpl_model_plan(p.gm, &g, &mem));
    printf("plan: params %lld grads %lld acts %lld work %lld attn_work %lld bytes\n",
           (long long)mem.params, (long long)mem.grads, (long long)mem.acts, (long long)mem.work,
           (long long)mem.attn_work);
    assert_int_equal(mem.params, n * 6); /* fp32 master + bf16 copy */
    assert_int_equal(mem.grads, n * 4);
    assert_true(mem.acts > 0 && mem.work > 0 && mem.attn_work > 0);
    free(keep);
    unmake(&p);
}

static void test_core_cuda_model_refusals(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    mpl_attn ca = {0}, ga = {0};
    mpl_attn_cfg ac = attn_cfg(MPL_ATTN_KIND_DENSE, 16), gc = ac;
    gc.device = MPL_DEVICE_CUDA, gc.cuda = cu;
    ok(mpl_attn_create(&ac, NULL, &ca));
    ok(mpl_attn_create(&gc, NULL, &ga));
    mpl_model *m = NULL;
    mpl_model_cfg mc = model_cfg();
    mc.device = MPL_DEVICE_CUDA, mc.cuda = cu;
    assert_int_equal(mpl_model_create(&mc, &ca, &m), MPL_ERR_ARG); /* CPU attention */
    printf("%s\n", mpl_err_cause());
    mpl_err_clear();
    mc.recompute = MPL_RECOMPUTE_LAYER;
    assert_int_equal(mpl_model_create(&mc, &ga, &m), MPL_ERR_UNSUPPORTED);
    printf("%s\n", mpl_err_cause());
    mpl_err_clear();
    mc.recompute = MPL_RECOMPUTE_NONE, mc.cuda = NULL;
    assert_int_equal(mpl_model_create(&mc, &ga, &m), MPL_ERR_ARG);
    mpl_err_clear();
    assert_null(m);
    mpl_attn_destroy(&ca);
    mpl_attn_destroy(&ga);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_cuda_model_dense),
        cmocka_unit_test(test_core_cuda_model_fmm),
        cmocka_unit_test(test_core_cuda_model_combiner_fixed),
        cmocka_unit_test(test_core_cuda_model_mirrors_and_plan),
        cmocka_unit_test(test_core_cuda_model_refusals),
    };
    return mpl_test_gpu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
