/* Tests of dense attention (attention/dense.h) and the registry: forward
 * against an explicit O(L^2) masked-softmax matrix in fp64 built here,
 * backward of the fp64 instance against central differences, fp32 against
 * fp64, RoPE positions, and the ops table against the direct call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/dense.h"
#include "attention/registry.h"

#define FD_H 1e-5
#define FD_ATOL 1e-8
#define FD_RTOL 1e-6
#define PREFILL 0.375
#define F32_ATOL 5e-6
#define F32_RTOL 2e-5

/* The whole score matrix per (seq, head): allowed(i, j) = (j <= i or not
 * causal) and both tokens unpadded; softmax over the allowed set; a row
 * with nothing allowed outputs 0. */
static void ref_attention(const mpl_attn_dense_args *a, const double *qkv, double *out)
{
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim;
    const int64_t HD = H * d, W = 3 * HD;
    double *q = mpl_test_dalloc(T * d), *k = mpl_test_dalloc(T * d), *sc = mpl_test_dalloc(T * T);
    uint8_t *ok = calloc((size_t)(T * T + 1), 1);
    assert_non_null(ok);
    for (int64_t s = 0; s < S; s++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t t = 0; t < T; t++) {
                for (int64_t c = 0; c < d; c++) {
                    q[t * d + c] = qkv[(s * T + t) * W + h * d + c];
                    k[t * d + c] = qkv[(s * T + t) * W + HD + h * d + c];
                }
                if (a->rope_theta > 0) {
                    mpl_test_rope_ref(q + t * d, (int)d, (double)(a->pos0 + t), a->rope_theta);
                    mpl_test_rope_ref(k + t * d, (int)d, (double)(a->pos0 + t), a->rope_theta);
                }
            }
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < T; j++) {
                    int vis = !a->causal || j <= i;
                    if (a->mask) vis = vis && a->mask[s * T + i] && a->mask[s * T + j];
                    ok[i * T + j] = (uint8_t)vis;
                    double dot = 0;
                    for (int64_t c = 0; c < d; c++) dot += q[i * d + c] * k[j * d + c];
                    sc[i * T + j] = dot / sqrt((double)d);
                }
            for (int64_t i = 0; i < T; i++) {
                double m = -INFINITY, z = 0;
                for (int64_t j = 0; j < T; j++)
                    if (ok[i * T + j] && sc[i * T + j] > m) m = sc[i * T + j];
                for (int64_t j = 0; j < T; j++) {
                    sc[i * T + j] = ok[i * T + j] ? exp(sc[i * T + j] - m) : 0;
                    z += sc[i * T + j];
                }
                for (int64_t c = 0; c < d; c++) {
                    double o = 0;
                    for (int64_t j = 0; j < T; j++)
                        if (ok[i * T + j])
                            o += sc[i * T + j] / z * qkv[(s * T + j) * W + 2 * HD + h * d + c];
                    out[(s * T + i) * HD + h * d + c] = o;
                }
            }
        }
    free(q), free(k), free(sc), free(ok);
}

typedef struct fdctx {
    const mpl_attn_dense_args *a;
    double *qkv, *out, *saved, *dout;
    int64_t n_out;
} fdctx;

static double fd_loss(void *p)
{
    fdctx *c = p;
    assert_int_equal(mpl_attn_dense_forward_f64(c->a, c->qkv, c->out, c->saved), MPL_OK);
    double L = 0;
    for (int64_t i = 0; i < c->n_out; i++) L += c->dout[i] * c->out[i];
    return L;
}

/* mask variants: 0 none; 1 scattered padding in seq 0, trailing in seq 1;
 * 2 seq 0 fully padded, scattered padding in seq 1. */
static void make_mask(uint8_t *m, int64_t S, int64_t T, int variant)
{
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = 0; t < T; t++) {
            const int scattered = t % 3 != 1, trailing = t < T - 2 || t == 0;
            m[s * T + t] = (uint8_t)(variant == 1 ? (s == 0 ? scattered : trailing)
                                                  : (s == 0 ? 0 : scattered));
        }
}

/* One case: f64 forward vs the reference, backward vs FD, f32 vs f64. */
static void run_case(int64_t S, int64_t T, int H, int d, int causal, double theta,
                     int64_t pos0, int mask_variant)
{
    const int64_t HD = (int64_t)H * d, n_qkv = S * T * 3 * HD, n_out = S * T * HD;
    uint8_t *mask = calloc((size_t)(S * T + 1), 1);
    assert_non_null(mask);
    if (mask_variant) make_mask(mask, S, T, mask_variant);
    mpl_attn_dense_args a = {.n_seq = S, .n_tok = T, .pos0 = pos0, .n_head = H, .head_dim = d,
                             .causal = causal, .rope_theta = theta,
                             .mask = mask_variant ? mask : NULL};
    const int64_t n_saved = mpl_attn_dense_saved_elems(&a);
    assert_int_equal(n_saved, S * T * H * (2 * d + 1));
    char what[160], tag[128];
    snprintf(tag, sizeof tag, "S=%lld L=%lld H=%d d=%d %s rope=%g pos0=%lld mask=%d",
             (long long)S, (long long)T, H, d, causal ? "causal" : "bidir", theta,
             (long long)pos0, mask_variant);

    const uint64_t seed = mpl_test_seed();
    double *qkv = mpl_test_dalloc(n_qkv), *dout = mpl_test_dalloc(n_out),
           *out = mpl_test_dalloc(n_out);
    double *ref = mpl_test_dalloc(n_out), *saved = mpl_test_dalloc(n_saved),
           *dqkv = mpl_test_dalloc(n_qkv);
    mpl_test_fill_f64(qkv, n_qkv, seed, 100, -1.5, 1.5);
    mpl_test_fill_f64(dout, n_out, seed, 101, -1, 1);

    assert_int_equal(mpl_attn_dense_forward_f64(&a, qkv, out, saved), MPL_OK);
    ref_attention(&a, qkv, ref);
    snprintf(what, sizeof what, "attn_dense_fwd f64 %s", tag);
    assert_true(mpl_test_close_f64(what, out, ref, n_out, 1e-13, 1e-11));

    for (int64_t i = 0; i < n_qkv; i++) dqkv[i] = PREFILL;
    assert_int_equal(mpl_attn_dense_backward_f64(&a, qkv, saved, dout, dqkv), MPL_OK);
    double *fd = mpl_test_dalloc(n_qkv);
    fdctx c = {.a = &a, .qkv = qkv, .out = out, .saved = saved, .dout = dout, .n_out = n_out};
    mpl_test_fd_grad(fd_loss, &c, qkv, n_qkv, FD_H, fd);
    for (int64_t i = 0; i < n_qkv; i++) fd[i] += PREFILL;
    snprintf(what, sizeof what, "attn_dense_bwd_fd dqkv %s", tag);
    assert_true(mpl_test_close_f64(what, dqkv, fd, n_qkv, FD_ATOL, FD_RTOL));
    fd_loss(&c); /* out and saved back at the unperturbed point */

    float *qkv32 = mpl_test_to_f32(qkv, n_qkv), *dout32 = mpl_test_to_f32(dout, n_out);
    float *out32 = mpl_test_falloc(n_out), *saved32 = mpl_test_falloc(n_saved),
          *dqkv32 = mpl_test_falloc(n_qkv);
    for (int64_t i = 0; i < n_qkv; i++) dqkv32[i] = (float)PREFILL;
    assert_int_equal(mpl_attn_dense_forward_f32(&a, qkv32, out32, saved32), MPL_OK);
    assert_int_equal(mpl_attn_dense_backward_f32(&a, qkv32, saved32, dout32, dqkv32), MPL_OK);
    snprintf(what, sizeof what, "attn_dense_fwd f32 %s", tag);
    assert_true(mpl_test_close_f32_f64(what, out32, out, n_out, F32_ATOL, F32_RTOL));
    snprintf(what, sizeof what, "attn_dense_bwd f32 %s", tag);
    assert_true(mpl_test_close_f32_f64(what, dqkv32, dqkv, n_qkv, F32_ATOL, F32_RTOL));
    /* the saved log-sum-exp too, -inf rows included */
    snprintf(what, sizeof what, "attn_dense_saved f32 %s", tag);
    assert_true(mpl_test_close_f32_f64(what, saved32, saved, n_saved, F32_ATOL, F32_RTOL));

    free(qkv32), free(dout32), free(out32), free(saved32), free(dqkv32);
    free(qkv), free(dout), free(out), free(ref), free(saved), free(dqkv), free(fd), free(mask);
}

static void test_attention_dense_shapes(void **state)
{
    (void)state;
    const int64_t Ls[] = {1, 7, 33};
    const int ds[] = {4, 8};
    for (size_t li = 0; li < 3; li++)
        for (size_t di = 0; di < 2; di++)
            for (int causal = 0; causal <= 1; causal++)
                for (int rope = 0; rope <= 1; rope++)
                    for (int mv = 0; mv <= 2; mv++)
                        run_case(2, Ls[li], 2, ds[di], causal, rope ? 10000.0 : 0.0, 0, mv);
}

/* pos0 only moves RoPE: the saved q, k are rotated to pos0 + t, and the
 * forward matches the reference at those positions. */
static void test_attention_dense_pos0(void **state)
{
    (void)state;
    run_case(2, 7, 2, 8, 1, 100.0, 5, 0);
    run_case(2, 7, 2, 4, 0, 10000.0, 1000, 1);

    const int64_t S = 2, T = 9, H = 2, d = 4, HD = H * d, n_qkv = S * T * 3 * HD;
    const uint64_t seed = mpl_test_seed();
    mpl_attn_dense_args a = {.n_seq = S, .n_tok = T, .pos0 = 0, .n_head = H, .head_dim = d,
                             .causal = 1, .rope_theta = 50.0};
    const int64_t n_saved = mpl_attn_dense_saved_elems(&a);
    double *qkv = mpl_test_dalloc(n_qkv), *out0 = mpl_test_dalloc(S * T * HD),
           *out5 = mpl_test_dalloc(S * T * HD);
    double *sv0 = mpl_test_dalloc(n_saved), *sv5 = mpl_test_dalloc(n_saved),
           *rq = mpl_test_dalloc(2 * S * T * HD);
    mpl_test_fill_f64(qkv, n_qkv, seed, 110, -1, 1);
    assert_int_equal(mpl_attn_dense_forward_f64(&a, qkv, out0, sv0), MPL_OK);
    a.pos0 = 5;
    assert_int_equal(mpl_attn_dense_forward_f64(&a, qkv, out5, sv5), MPL_OK);
    /* explicit rotation of q and k of every head to position 5 + t */
    for (int64_t r = 0; r < S * T; r++)
        for (int64_t part = 0; part < 2; part++)
            for (int64_t h = 0; h < H; h++) {
                double *dst = rq + part * S * T * HD + r * HD + h * d;
                memcpy(dst, qkv + r * 3 * HD + part * HD + h * d, (size_t)d * sizeof *dst);
                mpl_test_rope_ref(dst, (int)d, (double)(5 + r % T), a.rope_theta);
            }
    assert_true(mpl_test_close_f64("attn_dense saved q,k at pos0=5", sv5, rq, 2 * S * T * HD,
                                   1e-14, 1e-12));
    /* and they differ from pos0 = 0, so pos0 is really used */
    double maxdiff = 0;
    for (int64_t i = 0; i < 2 * S * T * HD; i++) maxdiff = fmax(maxdiff, fabs(sv5[i] - sv0[i]));
    printf("attn_dense saved q,k pos0=5 vs 0 maxdiff=%.3g\n", maxdiff);
    assert_true(maxdiff > 1e-3);
    /* RoPE logits depend on i - j only: a common shift leaves out unchanged */
    assert_true(mpl_test_close_f64("attn_dense out pos0=5 vs 0 (relative)", out5, out0,
                                   S * T * HD, 1e-12, 1e-10));
    free(qkv), free(out0), free(out5), free(sv0), free(sv5), free(rq);
}

/* The registry's dense instance gives bit-identical results to the direct
 * fp32 call, and reports the documented saved size. */
static void test_attention_dense_ops(void **state)
{
    (void)state;
    mpl_attn_cfg cfg = {.kind = MPL_ATTN_KIND_DENSE, .causal = 1, .n_head = 3, .head_dim = 6,
                        .seq_len = 11, .rope_theta = 10000.0};
    mpl_attn at = {0};
    assert_int_equal(mpl_attn_create(&cfg, NULL, &at), MPL_OK);
    assert_non_null(at.ops);
    assert_string_equal(at.ops->name, "dense");
    assert_null(at.ops->declare_params);
    assert_null(at.ops->init_params);
    const mpl_attn_geom g = {.n_seq = 2, .n_tok = 11, .pos0 = 3};
    const int64_t HD = 18, n_qkv = g.n_seq * g.n_tok * 3 * HD, n_out = g.n_seq * g.n_tok * HD;
    const int64_t n_saved = at.ops->saved_elems(at.impl, &g);
    assert_int_equal(n_saved, g.n_seq * g.n_tok * 3 * (2 * 6 + 1));
    mpl_attn_dense_args a = {.n_seq = g.n_seq, .n_tok = g.n_tok, .pos0 = g.pos0, .n_head = 3,
                             .head_dim = 6, .causal = 1, .rope_theta = 10000.0};
    const uint64_t seed = mpl_test_seed();
    float *qkv = mpl_test_falloc(n_qkv), *dout = mpl_test_falloc(n_out);
    mpl_test_fill_f32(qkv, n_qkv, seed, 120, -1, 1);
    mpl_test_fill_f32(dout, n_out, seed, 121, -1, 1);
    float *o1 = mpl_test_falloc(n_out), *o2 = mpl_test_falloc(n_out),
          *s1 = mpl_test_falloc(n_saved), *s2 = mpl_test_falloc(n_saved);
    float *d1 = mpl_test_falloc(n_qkv), *d2 = mpl_test_falloc(n_qkv);
    for (int64_t i = 0; i < n_qkv; i++) d1[i] = d2[i] = (float)PREFILL;
    assert_int_equal(at.ops->forward(at.impl, 0, &g, NULL, qkv, o1, s1), MPL_OK);
    assert_int_equal(at.ops->backward(at.impl, 0, &g, NULL, qkv, s1, dout, d1, NULL), MPL_OK);
    assert_int_equal(mpl_attn_dense_forward_f32(&a, qkv, o2, s2), MPL_OK);
    assert_int_equal(mpl_attn_dense_backward_f32(&a, qkv, s2, dout, d2), MPL_OK);
    assert_true(mpl_test_close_f32("attn_dense ops fwd == direct", o1, o2, n_out, 0, 0));
    assert_true(mpl_test_close_f32("attn_dense ops saved == direct", s1, s2, n_saved, 0, 0));
    assert_true(mpl_test_close_f32("attn_dense ops bwd == direct", d1, d2, n_qkv, 0, 0));
    mpl_attn_destroy(&at);
    assert_null(at.ops);
    assert_null(at.impl);
    mpl_attn_destroy(&at); /* a second destroy is a no-op */
    free(qkv), free(dout), free(o1), free(o2), free(s1), free(s2), free(d1), free(d2);
}

static void expect_create_fails(const mpl_attn_cfg *cfg, mpl_status want, const char *needle)
{
    mpl_attn at = {0};
    mpl_err_clear();
    const mpl_status st = mpl_attn_create(cfg, NULL, &at);
    printf("attn_create kind=%d -> %s: %s\n", (int)cfg->kind, mpl_status_str(st),
           mpl_err_cause());
    assert_int_equal(st, want);
    assert_non_null(strstr(mpl_err_cause(), needle));
    assert_null(at.ops);
    assert_null(at.impl);
    mpl_err_clear();
}

static void test_attention_dense_registry_errors(void **state)
{
    (void)state;
    const mpl_attn_cfg ok = {.kind = MPL_ATTN_KIND_DENSE, .causal = 1, .n_head = 2,
                             .head_dim = 4, .seq_len = 16, .rope_theta = 0};
    mpl_attn_cfg c = ok;
    /* the other kinds validate their own fields through the same registry */
    c.kind = MPL_ATTN_KIND_FMM, c.band = 0;
    expect_create_fails(&c, MPL_ERR_ARG, "band=0");
    c = ok, c.kind = MPL_ATTN_KIND_COMBINER_FIXED, c.segment = 0;
    expect_create_fails(&c, MPL_ERR_ARG, "segment=0");
    c = ok, c.kind = (mpl_attn_kind)77;
    expect_create_fails(&c, MPL_ERR_ARG, "77");
    c = ok, c.head_dim = 0;
    expect_create_fails(&c, MPL_ERR_ARG, "head_dim=0");
    c = ok, c.n_head = -1;
    expect_create_fails(&c, MPL_ERR_ARG, "n_head=-1");
    c = ok, c.causal = 2;
    expect_create_fails(&c, MPL_ERR_ARG, "causal=2");
    c = ok, c.rope_theta = -1;
    expect_create_fails(&c, MPL_ERR_ARG, "rope_theta=-1");
    c = ok, c.rope_theta = 10000, c.head_dim = 5;
    expect_create_fails(&c, MPL_ERR_ARG, "head_dim=5");
    /* the direct call validates too */
    mpl_attn_dense_args a = {.n_seq = 1, .n_tok = 1, .n_head = 0, .head_dim = 4};
    float x[12] = {0}, o[4], s[9];
    assert_int_equal(mpl_attn_dense_forward_f32(&a, x, o, s), MPL_ERR_ARG);
    mpl_err_clear();
}

int main(void)
{
    mpl_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_dense_shapes),
        cmocka_unit_test(test_attention_dense_pos0),
        cmocka_unit_test(test_attention_dense_ops),
        cmocka_unit_test(test_attention_dense_registry_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
