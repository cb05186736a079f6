/* The assembled model: its backward against central finite differences of
 * its own forward (fp32, loose but able to catch any missing term), and the
 * parameter layout and initialisation contracts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "core/model.h"
#include "testutil.h"

typedef struct fixture {
    mpl_attn attn;
    mpl_model *m;
    mpl_attn_geom g;
    int32_t tok[2 * 6], tgt[2 * 6];
} fixture;

/* n_pos > 0: with learned positions (wpe) for positions [0, n_pos). */
static void make(fixture *f, int causal, int64_t n_pos)
{
    mpl_model_cfg mc = {.vocab_size = 11, .d_model = 8, .n_layer = 2, .n_head = 2,
                        .mlp_mult = 2, .norm_eps = 1e-5, .keep_logits = 1, .n_pos = n_pos};
    mpl_attn_cfg ac = {.kind = MPL_ATTN_KIND_DENSE, .causal = causal, .n_head = 2,
                       .head_dim = 4, .seq_len = 6, .rope_theta = 100.0};
    assert_int_equal(mpl_attn_create(&ac, NULL, &f->attn), MPL_OK);
    assert_int_equal(mpl_model_create(&mc, &f->attn, &f->m), MPL_OK);
    assert_int_equal(mpl_model_reserve(f->m, 2, 6), MPL_OK);
    mpl_model_init_params(f->m, 5);
    /* Larger weights than the 0.02 init so every path carries gradient. */
    const mpl_slab_layout *lay = mpl_model_layout(f->m);
    float *p = mpl_model_params(f->m);
    uint64_t seed = mpl_test_seed();
    for (int t = 0; t < lay->n_tensors; t++)
        mpl_test_fill_f32(p + lay->t[t].offset, lay->t[t].n_elems, seed, (uint64_t)t, -0.6, 0.6);
    for (int i = 0; i < 12; i++) {
        f->tok[i] = (int32_t)((i * 7 + 3) % 11);
        f->tgt[i] = (i == 4) ? -1 : (int32_t)((i * 5 + 1) % 11); /* one ignored target */
    }
    f->g = (mpl_attn_geom){2, 6, 0, NULL};
}

static void unmake(fixture *f)
{
    mpl_model_destroy(&f->m);
    assert_null(f->m);
    mpl_model_destroy(&f->m); /* a second destroy is a no-op */
    mpl_attn_destroy(&f->attn);
}

static double loss_of(fixture *f)
{
    double s = 0;
    int64_t n = 0;
    assert_int_equal(mpl_model_forward(f->m, &f->g, f->tok, f->tgt, &s, &n), MPL_OK);
    assert_int_equal(n, 11);
    return s;
}

/* Central differences of loss(f) at up to n_max elements of every
 * parameter tensor of m against the gradient the backward left there. fp32
 * forward: the loss carries ~1e-6 noise, divided by 2h. */
static int fd_check(mpl_model *m, double (*loss)(void *), void *f, int n_max, const char *label)
{
    const mpl_slab_layout *lay = mpl_model_layout(m);
    float *p = mpl_model_params(m), *gr = mpl_model_grads(m);
    int ok = 1;
    for (int t = 0; t < lay->n_tensors; t++) {
        const mpl_tensor_desc *d = &lay->t[t];
        int64_t step = d->n_elems > n_max ? d->n_elems / n_max : 1, n = 0;
        double num[64], ana[64];
        for (int64_t i = 0; i < d->n_elems && n < n_max; i += step, n++) {
            float *x = p + d->offset + i, x0 = *x;
            const float h = 1e-2f;
            *x = x0 + h;
            double lp = loss(f);
            *x = x0 - h;
            double lm = loss(f);
            *x = x0;
            num[n] = (lp - lm) / (2.0 * h);
            ana[n] = gr[d->offset + i];
        }
        char what[128];
        snprintf(what, sizeof what, "%s %s", label, d->name);
        ok &= mpl_test_close_f64(what, ana, num, n, 2e-3, 3e-2);
    }
    return ok;
}

static double lm_loss(void *f) { return loss_of(f); }

static void check_grads(int causal, int64_t n_pos)
{
    fixture f;
    make(&f, causal, n_pos);
    loss_of(&f);
    mpl_model_zero_grad(f.m);
    assert_int_equal(mpl_model_backward(f.m, 1.0), MPL_OK);
    char label[64];
    snprintf(label, sizeof label, "model_grad %s n_pos=%lld", causal ? "causal" : "bidir",
             (long long)n_pos);
    /* with 7 positions for 6 tokens, the last row of wpe has gradient 0 */
    assert_true(fd_check(f.m, lm_loss, &f, 64, label));
    unmake(&f);
}

static void test_core_model_grad_causal(void **s) { (void)s; check_grads(1, 0); }
static void test_core_model_grad_bidirectional(void **s) { (void)s; check_grads(0, 0); }
static void test_core_model_grad_positions(void **s)
{
    (void)s;
    check_grads(1, 7);
    check_grads(0, 7);
}

/* Learned positions are indexed by global position: a chunk at pos0 > 0
 * uses rows pos0.., and a chunk reaching past n_pos is refused by name. */
static void test_core_model_positions_range(void **s)
{
    (void)s;
    fixture f;
    make(&f, 1, 7);
    double sum;
    int64_t n;
    mpl_attn_geom g = {1, 5, 2, NULL};
    assert_int_equal(mpl_model_forward(f.m, &g, f.tok, f.tgt, &sum, &n), MPL_OK);
    const float *lg = mpl_model_logits(f.m);
    float first[11];
    memcpy(first, lg, sizeof first);
    /* a different wpe row 2 changes the first token's logits */
    const mpl_tensor_desc *wpe = mpl_slab_layout_find(mpl_model_layout(f.m), "wpe");
    assert_non_null(wpe);
    assert_int_equal(wpe->shape[0], 7);
    assert_int_equal(wpe->shape[1], 8);
    mpl_model_params(f.m)[wpe->offset + 2 * 8] += 0.5f;
    assert_int_equal(mpl_model_forward(f.m, &g, f.tok, f.tgt, &sum, &n), MPL_OK);
    assert_true(fabsf(mpl_model_logits(f.m)[0] - first[0]) > 1e-4f);
    g.pos0 = 3; /* 3 + 5 > 7 */
    assert_int_equal(mpl_model_forward(f.m, &g, f.tok, f.tgt, &sum, &n), MPL_ERR_ARG);
    assert_non_null(strstr(mpl_err_cause(), "n_pos"));
    mpl_err_clear();
    unmake(&f);
}

/* The classifier: mean pooling over the real tokens, a linear head, one
 * label per sequence; its backward against finite differences, and a
 * padded sequence's logits equal to the unpadded one's. */
typedef struct cls_fixture {
    mpl_attn attn;
    mpl_model *m;
    mpl_attn_geom g;
    int32_t tok[2 * 7], lab[2];
    uint8_t mask[2 * 7];
} cls_fixture;

static void cls_make(cls_fixture *f, mpl_attn_kind kind)
{
    mpl_model_cfg mc = {.vocab_size = 11, .d_model = 8, .n_layer = 2, .n_head = 2,
                        .mlp_mult = 2, .norm_eps = 1e-5, .n_classes = 3, .head_owner = 1,
                        .n_pos = 7};
    mpl_attn_cfg ac = {.kind = kind, .causal = 0, .n_head = 2, .head_dim = 4, .seq_len = 7,
                       .rope_theta = 100.0, .band = 3, .segment = 3, .fmm_n_maps = 2,
                       .fmm_maps = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP},
                       .fmm_eps = 1e-5, .fmm_blend_near_init = 1, .fmm_learn_far_weight = 1};
    assert_int_equal(mpl_attn_create(&ac, NULL, &f->attn), MPL_OK);
    assert_int_equal(mpl_model_create(&mc, &f->attn, &f->m), MPL_OK);
    assert_int_equal(mpl_model_reserve(f->m, 2, 7), MPL_OK);
    const mpl_slab_layout *lay = mpl_model_layout(f->m);
    float *p = mpl_model_params(f->m);
    for (int t = 0; t < lay->n_tensors; t++)
        mpl_test_fill_f32(p + lay->t[t].offset, lay->t[t].n_elems, mpl_test_seed(), (uint64_t)t,
                          -0.6, 0.6);
    for (int i = 0; i < 14; i++) {
        f->tok[i] = (int32_t)((i * 7 + 3) % 11);
        f->mask[i] = !(i >= 12); /* sequence 1 has 5 real tokens */
    }
    f->lab[0] = 2, f->lab[1] = 0;
    f->g = (mpl_attn_geom){2, 7, 0, f->mask};
}

static double cls_loss(cls_fixture *f)
{
    double sum = 0;
    int64_t n = 0;
    assert_int_equal(mpl_model_forward(f->m, &f->g, f->tok, f->lab, &sum, &n), MPL_OK);
    assert_int_equal(n, 2);
    return sum;
}

static double cls_loss_v(void *f) { return cls_loss(f); }

static void cls_check(mpl_attn_kind kind)
{
    cls_fixture f;
    cls_make(&f, kind);
    cls_loss(&f);
    mpl_model_zero_grad(f.m);
    assert_int_equal(mpl_model_backward(f.m, 1.0), MPL_OK);
    char label[64];
    snprintf(label, sizeof label, "cls_grad %s", mpl_attn_kind_name(kind));
    int ok = fd_check(f.m, cls_loss_v, &f, 16, label);
    /* the padded sequence 1 alone, unpadded, gives the same logits */
    float padded[3];
    cls_loss(&f);
    memcpy(padded, mpl_model_class_logits(f.m) + 3, sizeof padded);
    mpl_attn_geom g5 = {1, 5, 0, NULL};
    double sum;
    int64_t cnt;
    assert_int_equal(mpl_model_forward(f.m, &g5, f.tok + 7, f.lab + 1, &sum, &cnt), MPL_OK);
    char what[64];
    snprintf(what, sizeof what, "cls padding %s", mpl_attn_kind_name(kind));
    ok &= mpl_test_close_f32(what, padded, mpl_model_class_logits(f.m), 3, 1e-5, 1e-4);
    assert_true(ok);
    mpl_model_destroy(&f.m);
    mpl_attn_destroy(&f.attn);
}

static void test_core_model_classifier(void **s)
{
    (void)s;
    for (int k = 0; k < MPL_ATTN_KIND_COUNT; k++) cls_check((mpl_attn_kind)k);
}

static void test_core_model_layout(void **s)
{
    (void)s;
    fixture f;
    make(&f, 1, 0);
    const mpl_slab_layout *lay = mpl_model_layout(f.m);
    assert_null(mpl_slab_layout_find(lay, "wpe")); /* n_pos = 0: no learned positions */
    const mpl_tensor_desc *wte = mpl_slab_layout_find(lay, "wte");
    assert_non_null(wte);
    assert_int_equal(wte->shape[0], 11);
    assert_int_equal(wte->shape[1], 8);
    assert_non_null(mpl_slab_layout_find(lay, "blk1.mlp.w2"));
    assert_non_null(mpl_slab_layout_find(lay, "lnf.g"));
    for (int t = 0; t < lay->n_tensors; t++) assert_int_equal(lay->t[t].offset % 16, 0);
    /* Initialisation is a function of (seed, name, element) only. */
    mpl_model_init_params(f.m, 9);
    float first = mpl_model_params(f.m)[mpl_slab_layout_find(lay, "blk0.attn.wqkv")->offset];
    mpl_model_init_params(f.m, 9);
    assert_true(first == mpl_model_params(f.m)[mpl_slab_layout_find(lay, "blk0.attn.wqkv")->offset]);
    mpl_model_init_params(f.m, 10);
    assert_true(first != mpl_model_params(f.m)[mpl_slab_layout_find(lay, "blk0.attn.wqkv")->offset]);
    /* Bad tokens and oversize calls are refused with a message. */
    f.tok[3] = 11;
    double sum;
    int64_t n;
    assert_int_equal(mpl_model_forward(f.m, &f.g, f.tok, f.tgt, &sum, &n), MPL_ERR_ARG);
    assert_non_null(strstr(mpl_err_cause(), "outside the vocabulary"));
    mpl_err_clear();
    mpl_attn_geom big = {2, 7, 0, NULL};
    assert_int_equal(mpl_model_forward(f.m, &big, f.tok, f.tgt, &sum, &n), MPL_ERR_ARG);
    mpl_err_clear();
    unmake(&f);
}

static void test_core_model_bad_config(void **s)
{
    (void)s;
    mpl_attn_cfg ac = {.kind = MPL_ATTN_KIND_DENSE, .causal = 1, .n_head = 2, .head_dim = 4,
                       .seq_len = 6};
    mpl_attn attn;
    assert_int_equal(mpl_attn_create(&ac, NULL, &attn), MPL_OK);
    mpl_model_cfg mc = {.vocab_size = 11, .d_model = 9, .n_layer = 1, .n_head = 2, .mlp_mult = 1};
    mpl_model *m = NULL;
    assert_int_equal(mpl_model_create(&mc, &attn, &m), MPL_ERR_ARG);
    assert_null(m);
    assert_non_null(strstr(mpl_err_cause(), "n_head=2"));
    mpl_err_clear();
    mpl_attn_destroy(&attn);
}

/* Token-by-token streaming gives the logits of the full forward pass. */
static void test_core_model_stream(void **s)
{
    (void)s;
    for (int64_t n_pos = 0; n_pos <= 6; n_pos += 6) {
    fixture f;
    make(&f, 1, n_pos);
    double sum;
    int64_t n;
    assert_int_equal(mpl_model_forward(f.m, &f.g, f.tok, f.tgt, &sum, &n), MPL_OK);
    const int64_t V = 11, T = 6;
    float *full = malloc((size_t)(2 * T * V) * sizeof *full);
    memcpy(full, mpl_model_logits(f.m), (size_t)(2 * T * V) * sizeof *full);
    assert_int_equal(mpl_model_stream_begin(f.m, 2), MPL_OK);
    int ok = 1;
    for (int64_t t = 0; t < T; t++) {
        int32_t tok[2] = {f.tok[t], f.tok[T + t]};
        const float *lg;
        assert_int_equal(mpl_model_stream_step(f.m, tok, &lg), MPL_OK);
        char what[64];
        snprintf(what, sizeof what, "stream logits t=%lld", (long long)t);
        ok &= mpl_test_close_f32(what, lg, full + t * V, V, 1e-5, 1e-4);
        ok &= mpl_test_close_f32(what, lg + V, full + (T + t) * V, V, 1e-5, 1e-4);
    }
    assert_true(ok);
    if (n_pos) { /* a 7th token has no learned position */
        int32_t tok[2] = {1, 2};
        const float *lg;
        assert_int_equal(mpl_model_stream_step(f.m, tok, &lg), MPL_ERR_ARG);
        assert_non_null(strstr(mpl_err_cause(), "n_pos=6"));
        mpl_err_clear();
    }
    mpl_model_stream_end(f.m);
    free(full);
    unmake(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_model_grad_causal),
        cmocka_unit_test(test_core_model_grad_bidirectional),
        cmocka_unit_test(test_core_model_grad_positions),
        cmocka_unit_test(test_core_model_positions_range),
        cmocka_unit_test(test_core_model_classifier),
        cmocka_unit_test(test_core_model_layout),
        cmocka_unit_test(test_core_model_bad_config),
        cmocka_unit_test(test_core_model_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
