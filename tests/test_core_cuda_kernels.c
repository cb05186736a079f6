/* Every kernel of core/cuda/kernels.h and the products of core/cuda/gemm.h
 * against its CPU counterpart (core/layers.h, core/adamw.h) on random
 * inputs, under the per-op tolerance of tests/tolerance.h. Skips (exit 77)
 * when there is no usable GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/adamw.h"
#include "core/cuda/gemm.h"
#include "core/cuda/kernels.h"
#include "core/layers.h"
#include "gpuutil.h"

#define S(cu) mpl_cuda_stream(cu)

static float *rnd(int64_t n, uint64_t stream, double lo, double hi)
{
    float *x = mpl_test_falloc(n);
    mpl_test_fill_f32(x, n, mpl_test_seed(), stream, lo, hi);
    return x;
}

static void ok(mpl_status st)
{
    if (st != MPL_OK) mpl_err_print(stderr, "  ");
    assert_int_equal(st, MPL_OK);
}

static void test_core_cuda_kernels_embed(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t V = 13, C = 37, N = 50;
    float *wte = rnd(V * C, 1, -1, 1), *dout = rnd(N * C, 2, -1, 1);
    int32_t tok[50];
    for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)((i * 7 + i / 5) % (V - 2)); /* repeats, 2 unused */
    float *ref = mpl_test_falloc(N * C), *got = mpl_test_falloc(N * C);
    mpl_embed_forward_f32(ref, tok, wte, N, C);
    float *d_wte = mpl_test_dup_f32(cu, wte, V * C), *d_out = mpl_test_dzero(cu, N * C * 4);
    int32_t *d_tok = mpl_test_dzero(cu, sizeof tok);
    ok(mpl_cuda_upload(cu, d_tok, tok, sizeof tok));
    ok(mpl_cuda_embed_forward(d_out, d_tok, d_wte, N, C, S(cu)));
    mpl_test_get_f32(cu, got, d_out, N * C);
    assert_true(mpl_test_close_tol("embed_fwd", got, ref, N * C, MPL_TOL_EXACT));
    /* backward into a gradient that already holds something */
    float *gref = rnd(V * C, 3, -1, 1), *ggot = mpl_test_falloc(V * C);
    float *d_g = mpl_test_dup_f32(cu, gref, V * C), *d_dout = mpl_test_dup_f32(cu, dout, N * C);
    mpl_embed_backward_f32(gref, dout, tok, N, C);
    int32_t ids[13], start[14], pos[50], work[13];
    const int64_t n_ids = mpl_cuda_embed_groups(tok, N, V, ids, start, pos, work);
    assert_int_equal(n_ids, V - 2);
    int32_t *d_ids = mpl_test_dzero(cu, sizeof ids), *d_start = mpl_test_dzero(cu, sizeof start);
    int32_t *d_pos = mpl_test_dzero(cu, sizeof pos);
    ok(mpl_cuda_upload(cu, d_ids, ids, sizeof ids));
    ok(mpl_cuda_upload(cu, d_start, start, sizeof start));
    ok(mpl_cuda_upload(cu, d_pos, pos, sizeof pos));
    ok(mpl_cuda_embed_backward(d_g, d_dout, d_ids, d_start, d_pos, n_ids, C, S(cu)));
    mpl_test_get_f32(cu, ggot, d_g, V * C);
    assert_true(mpl_test_close_tol("embed_bwd", ggot, gref, V * C, MPL_TOL_F32));
    void *dev[] = {d_wte, d_out, d_tok, d_g, d_dout, d_ids, d_start, d_pos};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) mpl_test_dfree(cu, dev[i]);
    free(wte), free(dout), free(ref), free(got), free(gref), free(ggot);
}

static void test_core_cuda_kernels_rmsnorm(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t N = 19, C = 300; /* C not a multiple of the block */
    const double eps = 1e-5;
    float *x = rnd(N * C, 4, -2, 2), *g = rnd(C, 5, 0.5, 1.5), *dy = rnd(N * C, 6, -1, 1);
    float *dx0 = rnd(N * C, 7, -1, 1), *dg0 = rnd(C, 8, -1, 1);
    float *out = mpl_test_falloc(N * C), *rstd = mpl_test_falloc(N), *got = mpl_test_falloc(N * C);
    mpl_rmsnorm_forward_f32(out, rstd, x, g, N, C, eps);
    float *d_x = mpl_test_dup_f32(cu, x, N * C), *d_g = mpl_test_dup_f32(cu, g, C);
    float *d_r = mpl_test_dzero(cu, N * 4);
    mpl_bf16 *d_out = mpl_test_dzero(cu, N * C * 2), *d_dxb = mpl_test_dzero(cu, N * C * 2);
    ok(mpl_cuda_rmsnorm_forward(d_out, d_r, d_x, d_g, N, C, eps, S(cu)));
    mpl_test_get_bf16(cu, got, d_out, N * C);
    assert_true(mpl_test_close_tol("rmsnorm_fwd out(bf16)", got, out, N * C, MPL_TOL_BF16_OUT));
    mpl_test_get_f32(cu, got, d_r, N);
    assert_true(mpl_test_close_tol("rmsnorm_fwd rstd", got, rstd, N, MPL_TOL_F32));
    /* backward: dx accumulates onto dx0, dg onto dg0 */
    float *d_dy = mpl_test_dup_f32(cu, dy, N * C), *d_dx = mpl_test_dup_f32(cu, dx0, N * C);
    float *d_dg = mpl_test_dup_f32(cu, dg0, C);
    float *part = mpl_test_dzero(cu, (size_t)mpl_cuda_colsum_partials(N, C) * 4);
    mpl_rmsnorm_backward_f32(dx0, dg0, dy, x, g, rstd, N, C);
    ok(mpl_cuda_rmsnorm_backward(d_dx, d_dxb, 1, d_dy, d_x, d_g, d_r, N, C, S(cu)));
    ok(mpl_cuda_colsum(d_dg, d_dy, d_x, d_r, N, C, part, S(cu)));
    mpl_test_get_f32(cu, got, d_dx, N * C);
    assert_true(mpl_test_close_tol("rmsnorm_bwd dx", got, dx0, N * C, MPL_TOL_F32));
    mpl_test_get_bf16(cu, got, d_dxb, N * C);
    assert_true(mpl_test_close_tol("rmsnorm_bwd dx(bf16)", got, dx0, N * C, MPL_TOL_BF16_OUT));
    mpl_test_get_f32(cu, got, d_dg, C);
    assert_true(mpl_test_close_tol("rmsnorm_bwd dg (colsum)", got, dg0, C, MPL_TOL_F32));
    void *dev[] = {d_x, d_g, d_r, d_out, d_dxb, d_dy, d_dx, d_dg, part};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) mpl_test_dfree(cu, dev[i]);
    free(x), free(g), free(dy), free(dx0), free(dg0), free(out), free(rstd), free(got);
}

static void test_core_cuda_kernels_colsum_many_rows(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t R = 3 * MPL_CUDA_COLSUM_ROWS + 17, K = 9; /* several row blocks */
    float *a = rnd(R * K, 9, -1, 1), *b = rnd(R * K, 10, -1, 1), *ref = mpl_test_falloc(K);
    float *got = mpl_test_falloc(K);
    for (int64_t c = 0; c < K; c++) {
        double s = 0;
        for (int64_t r = 0; r < R; r++) s += (double)a[r * K + c] * b[r * K + c];
        ref[c] = (float)s;
    }
    float *d_a = mpl_test_dup_f32(cu, a, R * K), *d_b = mpl_test_dup_f32(cu, b, R * K);
    float *d_acc = mpl_test_dzero(cu, K * 4);
    float *part = mpl_test_dzero(cu, (size_t)mpl_cuda_colsum_partials(R, K) * 4);
    ok(mpl_cuda_colsum(d_acc, d_a, d_b, NULL, R, K, part, S(cu)));
    mpl_test_get_f32(cu, got, d_acc, K);
    assert_true(mpl_test_close_tol("colsum", got, ref, K, MPL_TOL_F32));
    mpl_test_dfree(cu, d_a), mpl_test_dfree(cu, d_b), mpl_test_dfree(cu, d_acc);
    mpl_test_dfree(cu, part);
    free(a), free(b), free(ref), free(got);
}

static void test_core_cuda_kernels_gelu(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t n = 1000;
    float *x = rnd(n, 11, -5, 5), *d = rnd(n, 12, -1, 1);
    mpl_test_round_bf16(x, n), mpl_test_round_bf16(d, n); /* what bf16 inputs hold */
    float *ref = mpl_test_falloc(n), *dref = mpl_test_falloc(n), *got = mpl_test_falloc(n);
    mpl_gelu_forward_f32(ref, x, n);
    mpl_gelu_backward_f32(dref, d, x, n); /* dref = 0 + d gelu'(x) */
    mpl_bf16 *d_x = mpl_test_dup_bf16(cu, x, n), *d_o = mpl_test_dzero(cu, n * 2);
    mpl_bf16 *d_d = mpl_test_dup_bf16(cu, d, n);
    ok(mpl_cuda_gelu_forward(d_o, d_x, n, S(cu)));
    ok(mpl_cuda_gelu_backward(d_d, d_x, n, S(cu)));
    mpl_test_get_bf16(cu, got, d_o, n);
    assert_true(mpl_test_close_tol("gelu_fwd", got, ref, n, MPL_TOL_BF16_OUT));
    mpl_test_get_bf16(cu, got, d_d, n);
    assert_true(mpl_test_close_tol("gelu_bwd", got, dref, n, MPL_TOL_BF16_OUT));
    mpl_test_dfree(cu, d_x), mpl_test_dfree(cu, d_o), mpl_test_dfree(cu, d_d);
    free(x), free(d), free(ref), free(dref), free(got);
}

static void test_core_cuda_kernels_convert(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t R = 7, Cc = 10, ld = 30;
    float *x = rnd(R * ld, 13, -3, 3), *y = rnd(R * ld, 14, -1, 1), *ref = mpl_test_falloc(R * ld);
    float *got = mpl_test_falloc(R * ld);
    /* to_bf16 is exactly the host's rounding */
    for (int64_t i = 0; i < R * ld; i++) ref[i] = mpl_bf16_to_f32(mpl_bf16_from_f32(x[i]));
    float *d_x = mpl_test_dup_f32(cu, x, R * ld);
    mpl_bf16 *d_b = mpl_test_dzero(cu, R * ld * 2);
    ok(mpl_cuda_to_bf16(d_b, d_x, R * ld, S(cu)));
    mpl_test_get_bf16(cu, got, d_b, R * ld);
    assert_true(mpl_test_close_tol("to_bf16", got, ref, R * ld, MPL_TOL_EXACT));
    /* y[:, 5:15] += 0.5 x[:, 0:10] with row strides ld */
    memcpy(ref, y, (size_t)(R * ld) * 4);
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < Cc; c++) ref[r * ld + 5 + c] += 0.5f * x[r * ld + c];
    float *d_y = mpl_test_dup_f32(cu, y, R * ld);
    ok(mpl_cuda_axpy_2d(d_y + 5, ld, d_x, ld, R, Cc, 0.5f, 1, S(cu)));
    mpl_test_get_f32(cu, got, d_y, R * ld);
    assert_true(mpl_test_close_tol("axpy_2d", got, ref, R * ld, MPL_TOL_EXACT));
    mpl_test_dfree(cu, d_x), mpl_test_dfree(cu, d_b), mpl_test_dfree(cu, d_y);
    free(x), free(y), free(ref), free(got);
}

static void test_core_cuda_kernels_xent(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t N = 23, V = 300;
    float *lg = rnd(N * V, 15, -4, 4), *loss = mpl_test_falloc(N), *dl = mpl_test_falloc(N * V);
    float *got = mpl_test_falloc(N * V);
    int32_t tgt[23];
    for (int64_t i = 0; i < N; i++) tgt[i] = i % 5 == 2 ? -1 : (int32_t)((i * 37) % V);
    mpl_xent_forward_f32(loss, lg, tgt, N, V);
    mpl_xent_backward_f32(dl, lg, tgt, N, V, 1.0);
    float *d_lg = mpl_test_dup_f32(cu, lg, N * V), *d_loss = mpl_test_dzero(cu, N * 4);
    mpl_bf16 *d_dl = mpl_test_dzero(cu, N * V * 2);
    int32_t *d_t = mpl_test_dzero(cu, sizeof tgt);
    ok(mpl_cuda_upload(cu, d_t, tgt, sizeof tgt));
    ok(mpl_cuda_xent_forward(d_loss, d_dl, d_lg, d_t, N, V, S(cu)));
    mpl_test_get_f32(cu, got, d_loss, N);
    assert_true(mpl_test_close_tol("xent loss", got, loss, N, MPL_TOL_F32));
    mpl_test_get_bf16(cu, got, d_dl, N * V);
    assert_true(mpl_test_close_tol("xent dlogits(bf16)", got, dl, N * V, MPL_TOL_BF16_OUT));
    mpl_test_dfree(cu, d_lg), mpl_test_dfree(cu, d_loss), mpl_test_dfree(cu, d_dl);
    mpl_test_dfree(cu, d_t);
    free(lg), free(loss), free(dl), free(got);
}

static void test_core_cuda_kernels_rope(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t Sq = 2, T = 9, H = 3, d = 8, W = 3 * H * d;
    const int64_t n = Sq * T * W;
    float *x = rnd(n, 16, -1, 1), *ref = mpl_test_falloc(n), *got = mpl_test_falloc(n);
    memcpy(ref, x, (size_t)n * 4);
    /* the k block of a qkv layout at position 1000.., then rotated back */
    mpl_rope_apply_f32(ref, Sq, T, W, H * d, (int)H, (int)d, 1000, 10000.0, 1);
    float *d_x = mpl_test_dup_f32(cu, x, n);
    ok(mpl_cuda_rope(d_x, Sq, T, W, H * d, (int)H, (int)d, 1000, 10000.0, 1, S(cu)));
    mpl_test_get_f32(cu, got, d_x, n);
    assert_true(mpl_test_close_tol("rope fwd", got, ref, n, MPL_TOL_F32));
    ok(mpl_cuda_rope(d_x, Sq, T, W, H * d, (int)H, (int)d, 1000, 10000.0, -1, S(cu)));
    mpl_test_get_f32(cu, got, d_x, n);
    assert_true(mpl_test_close_tol("rope back", got, x, n, MPL_TOL_F32));
    mpl_test_dfree(cu, d_x);
    free(x), free(ref), free(got);
}

static void test_core_cuda_kernels_sum(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t n = 200003;
    float *x = rnd(n, 17, -1, 1);
    double ref_sq = mpl_sumsq(x, n), ref = 0, got[2];
    for (int64_t i = 0; i < n; i++) ref += x[i];
    float *d_x = mpl_test_dup_f32(cu, x, n);
    double *d_out = mpl_test_dzero(cu, 2 * sizeof(double));
    double *part = mpl_test_dzero(cu, MPL_CUDA_SUM_BLOCKS * sizeof(double));
    ok(mpl_cuda_sum(d_out, d_x, n, 1, part, S(cu)));
    ok(mpl_cuda_sum(d_out + 1, d_x, n, 0, part, S(cu)));
    ok(mpl_cuda_download(cu, got, d_out, sizeof got));
    printf("sumsq %.17g vs %.17g, sum %.17g vs %.17g\n", got[0], ref_sq, got[1], ref);
    assert_true(fabs(got[0] - ref_sq) <= 1e-12 * ref_sq);
    assert_true(fabs(got[1] - ref) <= 1e-12 * ref_sq);
    /* a second run gives the same bits (fixed order) */
    double again;
    ok(mpl_cuda_sum(d_out, d_x, n, 1, part, S(cu)));
    ok(mpl_cuda_download(cu, &again, d_out, sizeof again));
    assert_true(memcmp(&again, &got[0], sizeof again) == 0);
    mpl_test_dfree(cu, d_x), mpl_test_dfree(cu, d_out), mpl_test_dfree(cu, part);
    free(x);
}

/* Clipping + AdamW over a three-tensor layout (decay on the matrix only)
 * against mpl_scale + mpl_adamw_update; a non-finite norm leaves all as is. */
static void test_core_cuda_kernels_adamw(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    mpl_slab_layout lay = {0};
    int64_t o[3];
    assert_int_equal(mpl_slab_layout_add(&lay, "w", 2, (int64_t[]){7, 9}, 1, &o[0]), MPL_OK);
    assert_int_equal(mpl_slab_layout_add(&lay, "g", 1, (int64_t[]){5}, 0, &o[1]), MPL_OK);
    assert_int_equal(mpl_slab_layout_add(&lay, "v", 2, (int64_t[]){33, 3}, 1, &o[2]), MPL_OK);
    const int64_t n = lay.n_elems;
    float *p = rnd(n, 18, -1, 1), *gr = rnd(n, 19, -2, 2), *m = rnd(n, 20, -0.1, 0.1);
    float *v = rnd(n, 21, 0, 0.1), *got = mpl_test_falloc(n);
    /* the padding between tensors holds zeros, as in a model (the kernel
     * touches tensors only) */
    for (int64_t i = 0, t = 0; i < n; i++) {
        while (t < 3 && i >= lay.t[t].offset + lay.t[t].n_elems) t++;
        if (t == 3 || i < lay.t[t].offset) gr[i] = p[i] = 0;
    }
    const mpl_adamw_hparams hp = {0.9, 0.95, 1e-8, 0.1};
    const double clip = 1.0, lr = 3e-3;
    const int64_t step = 7;
    float *d_p = mpl_test_dup_f32(cu, p, n), *d_g = mpl_test_dup_f32(cu, gr, n);
    float *d_m = mpl_test_dup_f32(cu, m, n), *d_v = mpl_test_dup_f32(cu, v, n);
    mpl_bf16 *d_pb = mpl_test_dzero(cu, n * 2);
    int64_t toff[3], tn[3];
    int32_t tdec[3];
    for (int t = 0; t < 3; t++) toff[t] = lay.t[t].offset, tn[t] = lay.t[t].n_elems, tdec[t] = lay.t[t].decay;
    int64_t *d_off = mpl_test_dzero(cu, sizeof toff), *d_n = mpl_test_dzero(cu, sizeof tn);
    int32_t *d_dec = mpl_test_dzero(cu, sizeof tdec);
    ok(mpl_cuda_upload(cu, d_off, toff, sizeof toff));
    ok(mpl_cuda_upload(cu, d_n, tn, sizeof tn));
    ok(mpl_cuda_upload(cu, d_dec, tdec, sizeof tdec));
    double *d_sc = mpl_test_dzero(cu, 2 * sizeof(double));
    double *part = mpl_test_dzero(cu, MPL_CUDA_SUM_BLOCKS * sizeof(double));
    ok(mpl_cuda_sum(d_sc, d_g, n, 1, part, S(cu)));
    const double loss = 1.5;
    ok(mpl_cuda_upload(cu, d_sc + 1, &loss, sizeof loss));
    mpl_cuda_adamw_args a = {.params = d_p, .grads = d_g, .m = d_m, .v = d_v, .params_bf = d_pb,
                             .t_off = d_off, .t_n = d_n, .t_decay = d_dec, .n_tensors = 3,
                             .max_tensor_elems = 99, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                             .c1 = (float)(1.0 / (1.0 - pow(0.9, (double)step))),
                             .c2 = (float)(1.0 / (1.0 - pow(0.95, (double)step))),
                             .lr = (float)lr, .decay = (float)(1.0 - lr * 0.1),
                             .grad_clip = clip, .norm2 = d_sc, .loss = d_sc + 1};
    ok(mpl_cuda_adamw_update(&a, S(cu)));
    const double norm = sqrt(mpl_sumsq(gr, n));
    assert_true(norm > clip); /* the test clips */
    mpl_scale(gr, n, clip / norm);
    mpl_adamw_update(&lay, p, gr, m, v, step, lr, &hp);
    mpl_test_get_f32(cu, got, d_p, n);
    assert_true(mpl_test_close_tol("adamw params", got, p, n, MPL_TOL_F32));
    mpl_test_get_f32(cu, got, d_m, n);
    assert_true(mpl_test_close_tol("adamw m", got, m, n, MPL_TOL_F32));
    mpl_test_get_f32(cu, got, d_v, n);
    assert_true(mpl_test_close_tol("adamw v", got, v, n, MPL_TOL_F32));
    mpl_test_get_f32(cu, got, d_g, n);
    assert_true(mpl_test_close_tol("adamw clipped grads", got, gr, n, MPL_TOL_F32));
    mpl_test_get_bf16(cu, got, d_pb, n);
    assert_true(mpl_test_close_tol("adamw params(bf16)", got, p, n, MPL_TOL_BF16_OUT));
    /* a NaN loss: nothing moves */
    const double nan = NAN;
    ok(mpl_cuda_upload(cu, d_sc + 1, &nan, sizeof nan));
    ok(mpl_cuda_adamw_update(&a, S(cu)));
    mpl_test_get_f32(cu, got, d_p, n);
    assert_true(mpl_test_close_tol("adamw skipped on NaN", got, p, n, MPL_TOL_F32));
    void *dev[] = {d_p, d_g, d_m, d_v, d_pb, d_off, d_n, d_dec, d_sc, part};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) mpl_test_dfree(cu, dev[i]);
    mpl_slab_layout_free(&lay);
    free(p), free(gr), free(m), free(v), free(got);
}

/* The linear layers on bf16 operands against the fp32 CPU layers on the
 * unrounded inputs: forward (fp32 out with a residual, bf16 out),
 * backward_x, backward_w (accumulating). */
static void test_core_cuda_kernels_linear(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t n = 37, IC = 48, OC = 80;
    float *x = rnd(n * IC, 22, -1, 1), *w = rnd(OC * IC, 23, -1, 1), *res = rnd(n * OC, 24, -1, 1);
    float *dout = rnd(n * OC, 25, -1, 1), *dw0 = rnd(OC * IC, 26, -1, 1);
    float *ref = mpl_test_falloc(n * OC), *got = mpl_test_falloc(OC * IC);
    float *dxr = mpl_test_falloc(n * IC), *gx = mpl_test_falloc(n * IC), *gw = mpl_test_falloc(OC * IC);
    mpl_bf16 *d_x = mpl_test_dup_bf16(cu, x, n * IC), *d_w = mpl_test_dup_bf16(cu, w, OC * IC);
    mpl_bf16 *d_do = mpl_test_dup_bf16(cu, dout, n * OC), *d_ob = mpl_test_dzero(cu, n * OC * 2);
    float *d_res = mpl_test_dup_f32(cu, res, n * OC), *d_o = mpl_test_dzero(cu, n * OC * 4);
    float *d_dx = mpl_test_dzero(cu, n * IC * 4), *d_dw = mpl_test_dup_f32(cu, dw0, OC * IC);
    /* forward with the residual */
    mpl_linear_forward_f32(ref, x, w, n, IC, OC);
    for (int64_t i = 0; i < n * OC; i++) ref[i] += res[i];
    ok(mpl_cuda_linear_forward(cu, d_o, MPL_CUDA_F32, d_x, d_w, d_res, n, IC, OC));
    mpl_test_get_f32(cu, got, d_o, n * OC);
    assert_true(mpl_test_close_tol("linear_fwd +res", got, ref, n * OC, MPL_TOL_BF16_GEMM));
    /* forward into bf16 */
    mpl_linear_forward_f32(ref, x, w, n, IC, OC);
    ok(mpl_cuda_linear_forward(cu, d_ob, MPL_CUDA_BF16, d_x, d_w, NULL, n, IC, OC));
    mpl_test_get_bf16(cu, got, d_ob, n * OC);
    assert_true(mpl_test_close_tol("linear_fwd (bf16 out)", got, ref, n * OC, MPL_TOL_BF16_GEMM_OUT));
    /* backward: dx = 0.5 dout W; dW += 0.5 dout^T x */
    memset(dxr, 0, (size_t)(n * IC) * 4);
    memcpy(gw, dw0, (size_t)(OC * IC) * 4);
    float *dout_h = mpl_test_falloc(n * OC);
    for (int64_t i = 0; i < n * OC; i++) dout_h[i] = 0.5f * dout[i];
    mpl_linear_backward_f32(dxr, gw, dout_h, x, w, n, IC, OC);
    ok(mpl_cuda_linear_backward_x(cu, d_dx, MPL_CUDA_F32, 0.5f, d_do, d_w, n, IC, OC));
    ok(mpl_cuda_linear_backward_w(cu, d_dw, 0.5f, d_do, d_x, n, IC, OC));
    mpl_test_get_f32(cu, gx, d_dx, n * IC);
    assert_true(mpl_test_close_tol("linear_bwd dx", gx, dxr, n * IC, MPL_TOL_BF16_GEMM));
    mpl_test_get_f32(cu, got, d_dw, OC * IC);
    assert_true(mpl_test_close_tol("linear_bwd dw (+=)", got, gw, OC * IC, MPL_TOL_BF16_GEMM));
    void *dev[] = {d_x, d_w, d_do, d_ob, d_res, d_o, d_dx, d_dw};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) mpl_test_dfree(cu, dev[i]);
    free(x), free(w), free(res), free(dout), free(dw0), free(ref), free(got), free(dxr);
    free(gx), free(gw), free(dout_h);
}

/* Batched fp32 products with strides and both transposes against loops. */
static void test_core_cuda_kernels_gemm_batched(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t B = 5, m = 6, nn = 7, k = 9;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int64_t lda = ta ? m : k, ldb = tb ? k : nn, sa = 64, sb = 72, sd = 48;
            float *A = rnd(B * sa, 27, -1, 1), *Bm = rnd(B * sb, 28, -1, 1), *D = rnd(B * sd, 29, -1, 1);
            float *ref = mpl_test_falloc(B * sd), *got = mpl_test_falloc(B * sd);
            memcpy(ref, D, (size_t)(B * sd) * 4);
            for (int64_t b = 0; b < B; b++)
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = 0; j < nn; j++) {
                        double acc = 0;
                        for (int64_t p = 0; p < k; p++)
                            acc += (double)A[b * sa + (ta ? p * lda + i : i * lda + p)] *
                                   Bm[b * sb + (tb ? j * ldb + p : p * ldb + j)];
                        ref[b * sd + i * nn + j] = (float)(acc + 0.5 * D[b * sd + i * nn + j]);
                    }
            float *d_a = mpl_test_dup_f32(cu, A, B * sa), *d_b = mpl_test_dup_f32(cu, Bm, B * sb);
            float *d_d = mpl_test_dup_f32(cu, D, B * sd);
            const mpl_cuda_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = nn, .k = k, .alpha = 1,
                                          .beta = 0.5f, .ab_type = MPL_CUDA_F32,
                                          .d_type = MPL_CUDA_F32, .a = d_a, .lda = lda,
                                          .stride_a = sa, .b = d_b, .ldb = ldb, .stride_b = sb,
                                          .d = d_d, .ldd = nn, .stride_d = sd, .batch = B};
            ok(mpl_cuda_gemm(cu, &g));
            mpl_test_get_f32(cu, got, d_d, B * sd);
            char what[64];
            snprintf(what, sizeof what, "gemm fp32 batched ta=%d tb=%d", ta, tb);
            assert_true(mpl_test_close_tol(what, got, ref, B * sd, MPL_TOL_F32));
            mpl_test_dfree(cu, d_a), mpl_test_dfree(cu, d_b), mpl_test_dfree(cu, d_d);
            free(A), free(Bm), free(D), free(ref), free(got);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_cuda_kernels_embed),
        cmocka_unit_test(test_core_cuda_kernels_rmsnorm),
        cmocka_unit_test(test_core_cuda_kernels_colsum_many_rows),
        cmocka_unit_test(test_core_cuda_kernels_gelu),
        cmocka_unit_test(test_core_cuda_kernels_convert),
        cmocka_unit_test(test_core_cuda_kernels_xent),
        cmocka_unit_test(test_core_cuda_kernels_rope),
        cmocka_unit_test(test_core_cuda_kernels_sum),
        cmocka_unit_test(test_core_cuda_kernels_adamw),
        cmocka_unit_test(test_core_cuda_kernels_linear),
        cmocka_unit_test(test_core_cuda_kernels_gemm_batched),
    };
    return mpl_test_gpu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
