/* Tests of core/layers.h: every layer's fp64 forward against a naive loop
 * written here, its fp64 backward against central differences of
 * L = sum(dout * out) (with gradients pre-filled, to check that backward
 * accumulates), and the fp32 instance against the fp64 one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "core/layers.h"

#define FD_H 1e-5
#define FD_ATOL 1e-8
#define FD_RTOL 1e-6
#define PREFILL 0.375 /* any non-zero value: backward must add to it */
/* fp32 vs fp64 on O(1) data: a few ulps of fp32 per accumulated term. */
#define F32_ATOL 2e-6
#define F32_RTOL 1e-5

static double *drand_new(int64_t n, uint64_t stream, double lo, double hi)
{
    double *p = mpl_test_dalloc(n);
    mpl_test_fill_f64(p, n, mpl_test_seed(), stream, lo, hi);
    return p;
}

static void dfill(double *x, int64_t n, double v)
{
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

static void ffill(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

/* Tokens/targets in [0, V) from a seeded stream. */
static int32_t *tok_new(int64_t n, int64_t V, uint64_t stream)
{
    int32_t *t = calloc((size_t)(n > 0 ? n : 1), sizeof *t);
    double *u = drand_new(n, stream, 0, 1);
    assert_non_null(t);
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)(u[i] * (double)V) % (int32_t)V;
    free(u);
    return t;
}

/* One context for the finite differences of every layer: fwd recomputes
 * out from the fields it uses; the loss is sum(dout * out). */
typedef struct fdctx {
    void (*fwd)(struct fdctx *);
    double *out, *dout;
    int64_t n_out;
    double *x, *w, *g, *aux;
    int32_t *tok;
    int64_t n, C, IC, OC;
    double eps, scale;
    /* RoPE */
    int64_t n_seq, T, stride, col0, pos0;
    int H, d;
    double theta;
} fdctx;

static double fd_loss(void *p)
{
    fdctx *c = p;
    c->fwd(c);
    double L = 0;
    for (int64_t i = 0; i < c->n_out; i++) L += c->dout[i] * c->out[i];
    return L;
}

/* got (after backward on a PREFILL-ed gradient) against PREFILL + FD. */
static int fd_check(const char *what, fdctx *c, double *x, int64_t n, const double *got)
{
    double *fd = mpl_test_dalloc(n);
    mpl_test_fd_grad(fd_loss, c, x, n, FD_H, fd);
    c->fwd(c); /* leave out (and saved values) at the unperturbed point */
    for (int64_t i = 0; i < n; i++) fd[i] += PREFILL;
    int ok = mpl_test_close_f64(what, got, fd, n, FD_ATOL, FD_RTOL);
    free(fd);
    return ok;
}

/* ---------------------------------------------------------------- embed */

static void fwd_embed(fdctx *c) { mpl_embed_forward_f64(c->out, c->tok, c->w, c->n, c->C); }

static void test_core_layers_embed(void **state)
{
    (void)state;
    const int64_t sizes[][3] = {{1, 1, 1}, {5, 7, 3}, {9, 33, 6}}; /* n, C, V */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int64_t n = sizes[k][0], C = sizes[k][1], V = sizes[k][2];
        char what[96];
        double *wte = drand_new(V * C, 1, -1, 1), *out = mpl_test_dalloc(n * C);
        double *dout = drand_new(n * C, 2, -1, 1), *dwte = mpl_test_dalloc(V * C);
        int32_t *tok = tok_new(n, V, 3); /* n > V: tokens repeat */
        fdctx c = {.fwd = fwd_embed, .out = out, .dout = dout, .n_out = n * C, .w = wte,
                   .tok = tok, .n = n, .C = C};
        fwd_embed(&c);
        double *ref = mpl_test_dalloc(n * C);
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < C; i++) ref[t * C + i] = wte[tok[t] * C + i];
        snprintf(what, sizeof what, "embed_fwd n=%lld C=%lld", (long long)n, (long long)C);
        assert_true(mpl_test_close_f64(what, out, ref, n * C, 0, 0));

        dfill(dwte, V * C, PREFILL);
        mpl_embed_backward_f64(dwte, dout, tok, n, C);
        snprintf(what, sizeof what, "embed_bwd_fd n=%lld C=%lld", (long long)n, (long long)C);
        assert_true(fd_check(what, &c, wte, V * C, dwte));

        float *wte32 = mpl_test_to_f32(wte, V * C), *out32 = mpl_test_falloc(n * C);
        float *dout32 = mpl_test_to_f32(dout, n * C), *dwte32 = mpl_test_falloc(V * C);
        mpl_embed_forward_f32(out32, tok, wte32, n, C);
        ffill(dwte32, V * C, (float)PREFILL);
        mpl_embed_backward_f32(dwte32, dout32, tok, n, C);
        assert_true(mpl_test_close_f32_f64("embed_fwd f32", out32, out, n * C, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("embed_bwd f32", dwte32, dwte, V * C, F32_ATOL, F32_RTOL));
        free(wte32), free(out32), free(dout32), free(dwte32);
        free(wte), free(out), free(dout), free(dwte), free(tok), free(ref);
    }
}

/* --------------------------------------------------------------- posemb */

/* out = x + wpe rows; x is copied first so the forward adds to it. */
static void fwd_posemb(fdctx *c)
{
    memcpy(c->out, c->x, (size_t)(c->n_seq * c->T * c->C) * sizeof *c->out);
    mpl_posemb_forward_f64(c->out, c->w, c->n_seq, c->T, c->pos0, c->C);
}

static void test_core_layers_posemb(void **state)
{
    (void)state;
    const int64_t sizes[][4] = {{1, 1, 1, 0}, {3, 5, 4, 2}, {2, 9, 7, 0}}; /* n_seq, T, C, pos0 */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int64_t S = sizes[k][0], T = sizes[k][1], C = sizes[k][2], p0 = sizes[k][3];
        const int64_t n = S * T, P = p0 + T + 1; /* one table row past the last used */
        char what[96];
        double *wpe = drand_new(P * C, 1, -1, 1), *x = drand_new(n * C, 4, -1, 1);
        double *out = mpl_test_dalloc(n * C), *dout = drand_new(n * C, 2, -1, 1);
        double *dwpe = mpl_test_dalloc(P * C), *ref = mpl_test_dalloc(n * C);
        fdctx c = {.fwd = fwd_posemb, .out = out, .dout = dout, .n_out = n * C, .w = wpe,
                   .x = x, .n_seq = S, .T = T, .pos0 = p0, .C = C};
        fwd_posemb(&c);
        for (int64_t s = 0; s < S; s++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t i = 0; i < C; i++)
                    ref[(s * T + t) * C + i] = x[(s * T + t) * C + i] + wpe[(p0 + t) * C + i];
        snprintf(what, sizeof what, "posemb_fwd S=%lld T=%lld", (long long)S, (long long)T);
        assert_true(mpl_test_close_f64(what, out, ref, n * C, 0, 0));

        dfill(dwpe, P * C, PREFILL);
        mpl_posemb_backward_f64(dwpe, dout, S, T, p0, C);
        snprintf(what, sizeof what, "posemb_bwd_fd S=%lld T=%lld", (long long)S, (long long)T);
        assert_true(fd_check(what, &c, wpe, P * C, dwpe));

        float *wpe32 = mpl_test_to_f32(wpe, P * C), *out32 = mpl_test_to_f32(x, n * C);
        float *dout32 = mpl_test_to_f32(dout, n * C), *dwpe32 = mpl_test_falloc(P * C);
        mpl_posemb_forward_f32(out32, wpe32, S, T, p0, C);
        ffill(dwpe32, P * C, (float)PREFILL);
        mpl_posemb_backward_f32(dwpe32, dout32, S, T, p0, C);
        assert_true(mpl_test_close_f32_f64("posemb_fwd f32", out32, out, n * C, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("posemb_bwd f32", dwpe32, dwpe, P * C, F32_ATOL, F32_RTOL));
        free(wpe32), free(out32), free(dout32), free(dwpe32);
        free(wpe), free(x), free(out), free(dout), free(dwpe), free(ref);
    }
}

/* -------------------------------------------------------------- rmsnorm */

static void fwd_rmsnorm(fdctx *c)
{
    mpl_rmsnorm_forward_f64(c->out, c->aux, c->x, c->g, c->n, c->C, c->eps);
}

static void test_core_layers_rmsnorm(void **state)
{
    (void)state;
    const int64_t sizes[][2] = {{1, 1}, {3, 7}, {6, 33}};
    const double eps = 1e-5;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int64_t n = sizes[k][0], C = sizes[k][1];
        char what[96];
        double *x = drand_new(n * C, 10, -2, 2), *g = drand_new(C, 11, 0.5, 1.5);
        double *dout = drand_new(n * C, 12, -1, 1), *out = mpl_test_dalloc(n * C),
               *rstd = mpl_test_dalloc(n);
        fdctx c = {.fwd = fwd_rmsnorm, .out = out, .dout = dout, .n_out = n * C, .x = x,
                   .g = g, .aux = rstd, .n = n, .C = C, .eps = eps};
        fwd_rmsnorm(&c);
        double *ref = mpl_test_dalloc(n * C), *ref_r = mpl_test_dalloc(n);
        for (int64_t t = 0; t < n; t++) {
            double ms = 0;
            for (int64_t i = 0; i < C; i++) ms += x[t * C + i] * x[t * C + i];
            ref_r[t] = 1.0 / sqrt(ms / (double)C + eps);
            for (int64_t i = 0; i < C; i++) ref[t * C + i] = x[t * C + i] * ref_r[t] * g[i];
        }
        snprintf(what, sizeof what, "rmsnorm_fwd n=%lld C=%lld", (long long)n, (long long)C);
        assert_true(mpl_test_close_f64(what, out, ref, n * C, 1e-14, 1e-13));
        assert_true(mpl_test_close_f64("rmsnorm_rstd", rstd, ref_r, n, 1e-14, 1e-13));

        double *dx = mpl_test_dalloc(n * C), *dg = mpl_test_dalloc(C);
        dfill(dx, n * C, PREFILL), dfill(dg, C, PREFILL);
        mpl_rmsnorm_backward_f64(dx, dg, dout, x, g, rstd, n, C);
        snprintf(what, sizeof what, "rmsnorm_bwd_fd dx n=%lld C=%lld", (long long)n, (long long)C);
        assert_true(fd_check(what, &c, x, n * C, dx));
        assert_true(fd_check("rmsnorm_bwd_fd dg", &c, g, C, dg));

        float *x32 = mpl_test_to_f32(x, n * C), *g32 = mpl_test_to_f32(g, C),
              *dout32 = mpl_test_to_f32(dout, n * C);
        float *out32 = mpl_test_falloc(n * C), *r32 = mpl_test_falloc(n),
              *dx32 = mpl_test_falloc(n * C), *dg32 = mpl_test_falloc(C);
        mpl_rmsnorm_forward_f32(out32, r32, x32, g32, n, C, eps);
        ffill(dx32, n * C, (float)PREFILL), ffill(dg32, C, (float)PREFILL);
        mpl_rmsnorm_backward_f32(dx32, dg32, dout32, x32, g32, r32, n, C);
        assert_true(mpl_test_close_f32_f64("rmsnorm_fwd f32", out32, out, n * C, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("rmsnorm_dx f32", dx32, dx, n * C, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("rmsnorm_dg f32", dg32, dg, C, F32_ATOL, F32_RTOL));
        free(x32), free(g32), free(dout32), free(out32), free(r32), free(dx32), free(dg32);
        free(x), free(g), free(dout), free(out), free(rstd), free(ref), free(ref_r);
        free(dx), free(dg);
    }
}

/* --------------------------------------------------------------- linear */

static void fwd_linear(fdctx *c)
{
    mpl_linear_forward_f64(c->out, c->x, c->w, c->n, c->IC, c->OC);
}

static void test_core_layers_linear(void **state)
{
    (void)state;
    const int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {4, 13, 9}, {17, 33, 10}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int64_t n = sizes[k][0], IC = sizes[k][1], OC = sizes[k][2];
        char what[96];
        double *x = drand_new(n * IC, 20, -1, 1), *w = drand_new(OC * IC, 21, -1, 1);
        double *dout = drand_new(n * OC, 22, -1, 1), *out = mpl_test_dalloc(n * OC);
        fdctx c = {.fwd = fwd_linear, .out = out, .dout = dout, .n_out = n * OC, .x = x,
                   .w = w, .n = n, .IC = IC, .OC = OC};
        fwd_linear(&c);
        double *ref = mpl_test_dalloc(n * OC);
        for (int64_t t = 0; t < n; t++)
            for (int64_t o = 0; o < OC; o++) {
                double s = 0;
                for (int64_t i = 0; i < IC; i++) s += x[t * IC + i] * w[o * IC + i];
                ref[t * OC + o] = s;
            }
        snprintf(what, sizeof what, "linear_fwd n=%lld IC=%lld OC=%lld", (long long)n,
                 (long long)IC, (long long)OC);
        assert_true(mpl_test_close_f64(what, out, ref, n * OC, 1e-14, 1e-13));

        double *dx = mpl_test_dalloc(n * IC), *dw = mpl_test_dalloc(OC * IC);
        dfill(dx, n * IC, PREFILL), dfill(dw, OC * IC, PREFILL);
        mpl_linear_backward_f64(dx, dw, dout, x, w, n, IC, OC);
        assert_true(fd_check("linear_bwd_fd dx", &c, x, n * IC, dx));
        assert_true(fd_check("linear_bwd_fd dw", &c, w, OC * IC, dw));
        /* NULL gradients are skipped, the other one is still computed */
        double *dw2 = mpl_test_dalloc(OC * IC), *dx2 = mpl_test_dalloc(n * IC);
        dfill(dw2, OC * IC, PREFILL), dfill(dx2, n * IC, PREFILL);
        mpl_linear_backward_f64(NULL, dw2, dout, x, w, n, IC, OC);
        mpl_linear_backward_f64(dx2, NULL, dout, x, w, n, IC, OC);
        assert_true(mpl_test_close_f64("linear_bwd dw only", dw2, dw, OC * IC, 0, 0));
        assert_true(mpl_test_close_f64("linear_bwd dx only", dx2, dx, n * IC, 0, 0));

        float *x32 = mpl_test_to_f32(x, n * IC), *w32 = mpl_test_to_f32(w, OC * IC),
              *dout32 = mpl_test_to_f32(dout, n * OC);
        float *out32 = mpl_test_falloc(n * OC), *dx32 = mpl_test_falloc(n * IC),
              *dw32 = mpl_test_falloc(OC * IC);
        mpl_linear_forward_f32(out32, x32, w32, n, IC, OC);
        ffill(dx32, n * IC, (float)PREFILL), ffill(dw32, OC * IC, (float)PREFILL);
        mpl_linear_backward_f32(dx32, dw32, dout32, x32, w32, n, IC, OC);
        assert_true(mpl_test_close_f32_f64("linear_fwd f32", out32, out, n * OC, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("linear_dx f32", dx32, dx, n * IC, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("linear_dw f32", dw32, dw, OC * IC, F32_ATOL, F32_RTOL));
        free(x32), free(w32), free(dout32), free(out32), free(dx32), free(dw32);
        free(x), free(w), free(dout), free(out), free(ref), free(dx), free(dw), free(dx2), free(dw2);
    }
}

/* ----------------------------------------------------------------- gelu */

static void fwd_gelu(fdctx *c) { mpl_gelu_forward_f64(c->out, c->x, c->n); }

static void test_core_layers_gelu(void **state)
{
    (void)state;
    const int64_t sizes[] = {1, 7, 257};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int64_t n = sizes[k];
        char what[96];
        double *x = drand_new(n, 30, -9, 9), *dout = drand_new(n, 31, -1, 1),
               *out = mpl_test_dalloc(n);
        fdctx c = {.fwd = fwd_gelu, .out = out, .dout = dout, .n_out = n, .x = x, .n = n};
        fwd_gelu(&c);
        double *ref = mpl_test_dalloc(n);
        for (int64_t i = 0; i < n; i++) {
            const double v = x[i];
            ref[i] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
        }
        snprintf(what, sizeof what, "gelu_fwd n=%lld", (long long)n);
        assert_true(mpl_test_close_f64(what, out, ref, n, 1e-15, 1e-13));
        double *dx = mpl_test_dalloc(n);
        dfill(dx, n, PREFILL);
        mpl_gelu_backward_f64(dx, dout, x, n);
        assert_true(fd_check("gelu_bwd_fd", &c, x, n, dx));

        float *x32 = mpl_test_to_f32(x, n), *dout32 = mpl_test_to_f32(dout, n),
              *out32 = mpl_test_falloc(n), *dx32 = mpl_test_falloc(n);
        mpl_gelu_forward_f32(out32, x32, n);
        ffill(dx32, n, (float)PREFILL);
        mpl_gelu_backward_f32(dx32, dout32, x32, n);
        assert_true(mpl_test_close_f32_f64("gelu_fwd f32", out32, out, n, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("gelu_bwd f32", dx32, dx, n, F32_ATOL, F32_RTOL));
        free(x32), free(dout32), free(out32), free(dx32);
        free(x), free(dout), free(out), free(ref), free(dx);
    }
}

/* ----------------------------------------------------------------- rope */

static void fwd_rope(fdctx *c)
{
    memcpy(c->out, c->x, (size_t)c->n_out * sizeof *c->out);
    mpl_rope_apply_f64(c->out, c->n_seq, c->T, c->stride, c->col0, c->H, c->d, c->pos0,
                       c->theta, 1);
}

/* The rotation written out: pair (c, c + d/2) of head h at position
 * pos0 + t turns by (pos0 + t) * theta^(-2c/d). */
static void rope_ref(double *y, const double *x, const fdctx *c)
{
    memcpy(y, x, (size_t)c->n_out * sizeof *y);
    for (int64_t s = 0; s < c->n_seq; s++)
        for (int64_t t = 0; t < c->T; t++)
            for (int h = 0; h < c->H; h++)
                mpl_test_rope_ref(y + (s * c->T + t) * c->stride + c->col0 + (int64_t)h * c->d,
                                  c->d, (double)(c->pos0 + t), c->theta);
}

static void test_core_layers_rope(void **state)
{
    (void)state;
    /* n_seq, T, H, d, extra columns, col0, pos0, theta */
    const struct { int64_t n_seq, T; int H, d; int64_t extra, col0, pos0; double theta; } cs[] = {
        {1, 1, 1, 2, 0, 0, 0, 10000}, {2, 5, 2, 8, 3, 5, 3, 10000},
        {2, 7, 3, 4, 1, 1, 100, 50}, {1, 3, 1, 6, 0, 0, 4097, 10000}};
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        const int64_t stride = cs[k].col0 + (int64_t)cs[k].H * cs[k].d + cs[k].extra;
        const int64_t n = cs[k].n_seq * cs[k].T * stride;
        char what[128];
        double *x = drand_new(n, 40, -1, 1), *dout = drand_new(n, 41, -1, 1),
               *out = mpl_test_dalloc(n);
        fdctx c = {.fwd = fwd_rope, .out = out, .dout = dout, .n_out = n, .x = x,
                   .n_seq = cs[k].n_seq, .T = cs[k].T, .stride = stride, .col0 = cs[k].col0,
                   .pos0 = cs[k].pos0, .H = cs[k].H, .d = cs[k].d, .theta = cs[k].theta};
        fwd_rope(&c);
        double *ref = mpl_test_dalloc(n);
        rope_ref(ref, x, &c);
        snprintf(what, sizeof what, "rope_fwd n_seq=%lld T=%lld H=%d d=%d pos0=%lld",
                 (long long)c.n_seq, (long long)c.T, c.H, c.d, (long long)c.pos0);
        assert_true(mpl_test_close_f64(what, out, ref, n, 1e-14, 1e-12));
        /* inverse(apply(x)) == x, columns outside the heads untouched */
        double *back = mpl_test_dalloc(n);
        memcpy(back, out, (size_t)n * sizeof *back);
        mpl_rope_apply_f64(back, c.n_seq, c.T, stride, c.col0, c.H, c.d, c.pos0, c.theta, -1);
        assert_true(mpl_test_close_f64("rope_inverse", back, x, n, 1e-14, 1e-13));
        /* backward = inverse rotation of dout (accumulated by the caller) */
        double *dx = mpl_test_dalloc(n);
        memcpy(dx, dout, (size_t)n * sizeof *dx);
        mpl_rope_apply_f64(dx, c.n_seq, c.T, stride, c.col0, c.H, c.d, c.pos0, c.theta, -1);
        for (int64_t i = 0; i < n; i++) dx[i] += PREFILL;
        assert_true(fd_check("rope_bwd_fd", &c, x, n, dx));

        float *x32 = mpl_test_to_f32(x, n);
        mpl_rope_apply_f32(x32, c.n_seq, c.T, stride, c.col0, c.H, c.d, c.pos0, c.theta, 1);
        assert_true(mpl_test_close_f32_f64("rope_fwd f32", x32, out, n, F32_ATOL, F32_RTOL));
        free(x32), free(x), free(dout), free(out), free(ref), free(back), free(dx);
    }
}

/* ----------------------------------------------------------------- xent */

static void fwd_xent(fdctx *c)
{
    /* out = loss per token; dout = scale everywhere: L = scale * sum loss */
    mpl_xent_forward_f64(c->out, c->x, c->tok, c->n, c->C);
}

static void test_core_layers_xent(void **state)
{
    (void)state;
    const int64_t sizes[][2] = {{1, 1}, {4, 5}, {7, 33}}; /* n, V */
    const double scale = 0.37;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int64_t n = sizes[k][0], V = sizes[k][1];
        char what[96];
        double *lg = drand_new(n * V, 50, -3, 3), *loss = mpl_test_dalloc(n),
               *dout = mpl_test_dalloc(n);
        int32_t *tgt = tok_new(n, V, 51);
        if (n > 2) tgt[1] = -1, tgt[n - 1] = -7; /* ignored rows */
        dfill(dout, n, scale);
        fdctx c = {.fwd = fwd_xent, .out = loss, .dout = dout, .n_out = n, .x = lg,
                   .tok = tgt, .n = n, .C = V};
        fwd_xent(&c);
        double *ref = mpl_test_dalloc(n);
        for (int64_t t = 0; t < n; t++) {
            if (tgt[t] < 0) continue;
            double s = 0;
            for (int64_t v = 0; v < V; v++) s += exp(lg[t * V + v]);
            ref[t] = log(s) - lg[t * V + tgt[t]];
        }
        snprintf(what, sizeof what, "xent_fwd n=%lld V=%lld", (long long)n, (long long)V);
        assert_true(mpl_test_close_f64(what, loss, ref, n, 1e-14, 1e-12));
        double *dl = mpl_test_dalloc(n * V);
        dfill(dl, n * V, PREFILL);
        mpl_xent_backward_f64(dl, lg, tgt, n, V, scale);
        assert_true(fd_check("xent_bwd_fd", &c, lg, n * V, dl));

        float *lg32 = mpl_test_to_f32(lg, n * V), *loss32 = mpl_test_falloc(n),
              *dl32 = mpl_test_falloc(n * V);
        mpl_xent_forward_f32(loss32, lg32, tgt, n, V);
        ffill(dl32, n * V, (float)PREFILL);
        mpl_xent_backward_f32(dl32, lg32, tgt, n, V, scale);
        assert_true(mpl_test_close_f32_f64("xent_fwd f32", loss32, loss, n, F32_ATOL, F32_RTOL));
        assert_true(mpl_test_close_f32_f64("xent_bwd f32", dl32, dl, n * V, F32_ATOL, F32_RTOL));
        /* stability: logits shifted by 1e4 overflow a naive exp in fp32 */
        for (int64_t i = 0; i < n * V; i++) lg32[i] += 1e4f;
        mpl_xent_forward_f32(loss32, lg32, tgt, n, V);
        ffill(dl32, n * V, (float)PREFILL);
        mpl_xent_backward_f32(dl32, lg32, tgt, n, V, scale);
        /* 1e4 in fp32 keeps ~1e-3 of each logit: loose, but must stay finite */
        assert_true(mpl_test_close_f32_f64("xent_fwd f32 +1e4", loss32, loss, n, 2e-3, 1e-3));
        assert_true(mpl_test_close_f32_f64("xent_bwd f32 +1e4", dl32, dl, n * V, 2e-3, 1e-3));
        free(lg32), free(loss32), free(dl32);
        free(lg), free(loss), free(dout), free(tgt), free(ref), free(dl);
    }
}

int main(void)
{
    mpl_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_layers_embed),  cmocka_unit_test(test_core_layers_posemb),
        cmocka_unit_test(test_core_layers_rmsnorm),
        cmocka_unit_test(test_core_layers_linear), cmocka_unit_test(test_core_layers_gelu),
        cmocka_unit_test(test_core_layers_rope),   cmocka_unit_test(test_core_layers_xent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
