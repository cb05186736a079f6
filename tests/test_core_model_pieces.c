/* Piecewise evaluation and recomputation (mpl_model_cfg.piece_tokens,
 * .recompute): for every mechanism, causal and bidirectional, with and
 * without padding, the loss and every gradient equal those of the whole
 * chunk in one piece with everything kept (fp32: within 1e-6 of the
 * largest gradient), and the recompute modes give the same bits as each
 * other at the same pieces (recomputation repeats the same operations).
 * Pieces are smaller than the band and the segment, so halos and
 * summaries cross several pieces. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "core/model.h"
#include "testutil.h"

enum { S = 3, T = 13, V = 11 };

typedef struct result {
    double loss;
    float *grads;
    int64_t n;
} result;

static void run(mpl_attn_kind kind, int n_layer, int causal, int masked, int64_t piece,
                mpl_recompute rc, result *out)
{
    /* learned positions with 1 and 3 layers: the recomputed layer-0 input
     * carries them */
    mpl_model_cfg mc = {.vocab_size = V, .d_model = 8, .n_layer = n_layer, .n_head = 2,
                        .mlp_mult = 2, .norm_eps = 1e-5, .recompute = rc, .piece_tokens = piece,
                        .n_pos = n_layer == 2 ? 0 : T};
    mpl_attn_cfg ac = {.kind = kind, .causal = causal, .n_head = 2, .head_dim = 4,
                       .seq_len = T, .rope_theta = 100.0, .band = 6, .segment = 4,
                       .fmm_n_maps = 2, .fmm_maps = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP},
                       .fmm_feature_norm = 1, .fmm_far_norm = 1, .fmm_eps = 1e-5,
                       .fmm_blend_near_init = 0.5, .fmm_blend_far_init = 0.5,
                       .fmm_learn_far_weight = 1};
    mpl_attn attn;
    mpl_model *m = NULL;
    assert_int_equal(mpl_attn_create(&ac, NULL, &attn), MPL_OK);
    assert_int_equal(mpl_model_create(&mc, &attn, &m), MPL_OK);
    assert_int_equal(mpl_model_reserve(m, S, T), MPL_OK);
    mpl_model_init_params(m, 3);
    const mpl_slab_layout *lay = mpl_model_layout(m);
    float *p = mpl_model_params(m);
    for (int t = 0; t < lay->n_tensors; t++)
        mpl_test_fill_f32(p + lay->t[t].offset, lay->t[t].n_elems, 11, (uint64_t)t, -0.6, 0.6);
    int32_t tok[S * T], tgt[S * T];
    uint8_t mask[S * T];
    for (int i = 0; i < S * T; i++) {
        tok[i] = (int32_t)((i * 7 + 3) % V);
        tgt[i] = (i % 5 == 2) ? -1 : (int32_t)((i * 5 + 1) % V);
        /* padding at the end of sequence 1 and in the middle of 2 */
        mask[i] = !masked || !((i / T == 1 && i % T >= 9) || (i / T == 2 && i % T == 6));
    }
    const mpl_attn_geom g = {S, T, 0, masked ? mask : NULL};
    int64_t cnt;
    mpl_status st = mpl_model_forward(m, &g, tok, tgt, &out->loss, &cnt);
    if (st != MPL_OK) printf("forward: %s\n", mpl_err_cause());
    assert_int_equal(st, MPL_OK);
    mpl_model_zero_grad(m);
    assert_int_equal(mpl_model_backward(m, 1.0 / (double)cnt), MPL_OK);
    out->n = lay->n_elems;
    out->grads = malloc((size_t)out->n * sizeof *out->grads);
    memcpy(out->grads, mpl_model_grads(m), (size_t)out->n * sizeof *out->grads);
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
}

static int same_bits(const result *a, const result *b)
{
    return a->loss == b->loss && memcmp(a->grads, b->grads, (size_t)a->n * sizeof(float)) == 0;
}

static int close_to(const char *what, const result *got, const result *ref)
{
    double gmax = 0;
    for (int64_t i = 0; i < ref->n; i++) gmax = fmax(gmax, fabs(ref->grads[i]));
    int ok = mpl_test_close_f32(what, got->grads, ref->grads, ref->n, 1e-6 * gmax, 0);
    const double rel = fabs(got->loss - ref->loss) / fabs(ref->loss);
    if (rel > 1e-6) printf("%s: loss %.9g vs %.9g (relative %.2e) FAIL\n", what, got->loss,
                           ref->loss, rel);
    return ok && rel <= 1e-6;
}

static void check_kind(mpl_attn_kind kind)
{
    const int64_t pieces[] = {1, 4, T, 2 * T};
    int ok = 1;
    /* 1 layer: the layer-0 gradient has no later input to live over */
    for (int nl = 1; nl <= 3; nl++)
    for (int causal = 1; causal >= 0; causal--)
        for (int masked = 0; masked <= 1; masked++) {
            result ref;
            run(kind, nl, causal, masked, 0, MPL_RECOMPUTE_NONE, &ref);
            for (size_t pi = 0; pi < sizeof pieces / sizeof pieces[0]; pi++) {
                result r[MPL_RECOMPUTE_COUNT];
                for (int rc = 0; rc < MPL_RECOMPUTE_COUNT; rc++) {
                    run(kind, nl, causal, masked, pieces[pi], (mpl_recompute)rc, &r[rc]);
                    char what[128];
                    snprintf(what, sizeof what,
                             "pieces %s layers=%d causal=%d masked=%d piece=%lld rc=%d",
                             mpl_attn_kind_name(kind), nl, causal, masked, (long long)pieces[pi],
                             rc);
                    ok &= close_to(what, &r[rc], &ref);
                    if (rc > 0 && !same_bits(&r[rc], &r[0])) {
                        printf("%s: not bitwise equal to recompute=none FAIL\n", what);
                        ok = 0;
                    }
                }
                for (int rc = 0; rc < MPL_RECOMPUTE_COUNT; rc++) free(r[rc].grads);
            }
            free(ref.grads);
        }
    assert_true(ok);
}

static void test_core_model_pieces_dense(void **s) { (void)s; check_kind(MPL_ATTN_KIND_DENSE); }
static void test_core_model_pieces_fmm(void **s) { (void)s; check_kind(MPL_ATTN_KIND_FMM); }
static void test_core_model_pieces_combiner_fixed(void **s)
{
    (void)s;
    check_kind(MPL_ATTN_KIND_COMBINER_FIXED);
}
static void test_core_model_pieces_combiner_logsparse(void **s)
{
    (void)s;
    check_kind(MPL_ATTN_KIND_COMBINER_LOGSPARSE);
}

/* The plan's items add up to what the layout allocates, and recomputing
 * the layer keeps less than recomputing the attention, which keeps less
 * than keeping everything. Recomputing the layer keeps the inputs of
 * layers 1.. and nothing more, also where the attention hands gradients
 * back after its pieces (bidirectional). */
static void test_core_model_pieces_plan(void **s)
{
    (void)s;
    int64_t kept[MPL_RECOMPUTE_COUNT + 1];
    for (int rc = 0; rc <= MPL_RECOMPUTE_COUNT; rc++) {
        const int bidir = rc == MPL_RECOMPUTE_COUNT; /* the last round: layer, bidirectional */
        mpl_model_cfg mc = {.vocab_size = 256, .d_model = 64, .n_layer = 3, .n_head = 4,
                            .mlp_mult = 4, .norm_eps = 1e-5,
                            .recompute = bidir ? MPL_RECOMPUTE_LAYER : (mpl_recompute)rc,
                            .piece_tokens = 512};
        mpl_attn_cfg ac = {.kind = MPL_ATTN_KIND_FMM, .causal = !bidir, .n_head = 4, .head_dim = 16,
                           .seq_len = 4096, .band = 64, .fmm_n_maps = 2,
                           .fmm_maps = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP},
                           .fmm_feature_norm = 1, .fmm_far_norm = 1, .fmm_eps = 1e-5};
        mpl_attn attn;
        mpl_model *m = NULL;
        assert_int_equal(mpl_attn_create(&ac, NULL, &attn), MPL_OK);
        assert_int_equal(mpl_model_create(&mc, &attn, &m), MPL_OK);
        const mpl_attn_geom g = {1, 4096, 0, NULL};
        mpl_model_mem mem;
        assert_int_equal(mpl_model_plan(m, &g, &mem), MPL_OK);
        assert_true(mem.params > 0 && mem.params == mem.grads && mem.work > 0);
        kept[rc] = mem.acts;
        /* rows of C per token besides token ids and piece flags */
        const int64_t rows = (mem.acts - 2 * 4096 * 4 - 8) / (4096 * 64 * 4);
        if (rc == MPL_RECOMPUTE_LAYER || bidir) assert_int_equal(rows, 2);
        mpl_model_destroy(&m);
        mpl_attn_destroy(&attn);
    }
    assert_true(kept[MPL_RECOMPUTE_LAYER] < kept[MPL_RECOMPUTE_ATTN]);
    assert_true(kept[MPL_RECOMPUTE_ATTN] < kept[MPL_RECOMPUTE_NONE]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_model_pieces_dense),
        cmocka_unit_test(test_core_model_pieces_fmm),
        cmocka_unit_test(test_core_model_pieces_combiner_fixed),
        cmocka_unit_test(test_core_model_pieces_combiner_logsparse),
        cmocka_unit_test(test_core_model_pieces_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
