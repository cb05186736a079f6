/* Tests of Combiner-Fixed and Combiner-Logsparse (attention/combiner.h):
 * forward against an explicit fp64 reference that builds every query's
 * slot list naively from ATTENTION.md (bidirectional Logsparse: from
 * attention/combiner.h), backward of the fp64 instance
 * against central differences, chunked Combiner-Fixed (summaries and halos
 * passed by hand) against the one-piece result, streaming against the
 * full causal forward, and the ops table / registry against the direct
 * call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/combiner.h"
#include "attention/registry.h"

#define FD_H 1e-5
#define FD_ATOL 1e-8
#define FD_RTOL 1e-6
#define PREFILL 0.375
#define F32_ATOL 1e-6
#define F32_RTOL 1e-5

/* A naive reference: per (s, h) copy the head, then per query a list of
 * slots (key, value) with one softmax. */
typedef struct ref_head {
    int64_t T, d;
    double *q, *k, *v, *qr, *kr; /* (T, d) each */
    const uint8_t *mk;
} ref_head;

/* Summary of [t0, t1): returns 0 if no real token. */
static int ref_summary(const ref_head *r, int64_t t0, int64_t t1, double *kh, double *vh)
{
    const int64_t d = r->d;
    double qh[64];
    int any = 0;
    for (int64_t c = 0; c < d; c++) {
        qh[c] = kh[c] = -INFINITY;
        vh[c] = 0;
    }
    for (int64_t t = t0; t < t1; t++) {
        if (r->mk && !r->mk[t]) continue;
        any = 1;
        for (int64_t c = 0; c < d; c++) {
            qh[c] = fmax(qh[c], r->q[t * d + c]);
            kh[c] = fmax(kh[c], r->k[t * d + c]);
        }
    }
    if (!any) return 0;
    double lg[4096], mx = -INFINITY, z = 0;
    assert_true(t1 - t0 <= 4096);
    for (int64_t t = t0; t < t1; t++) {
        double dot = 0;
        for (int64_t c = 0; c < d; c++) dot += qh[c] * r->k[t * d + c];
        lg[t - t0] = dot / sqrt((double)d);
        if ((!r->mk || r->mk[t]) && lg[t - t0] > mx) mx = lg[t - t0];
    }
    for (int64_t t = t0; t < t1; t++)
        if (!r->mk || r->mk[t]) z += exp(lg[t - t0] - mx);
    for (int64_t t = t0; t < t1; t++)
        if (!r->mk || r->mk[t])
            for (int64_t c = 0; c < d; c++) vh[c] += exp(lg[t - t0] - mx) / z * r->v[t * d + c];
    return 1;
}

typedef struct slot_list {
    int64_t n;
    double logit[8192];
    const double *val[8192];
    double store[2 * 4096 * 8]; /* summary values */
    int64_t n_store;
} slot_list;

static void add_direct(slot_list *s, const ref_head *r, int64_t i, int64_t j)
{
    if (r->mk && !r->mk[j]) return;
    double dot = 0;
    for (int64_t c = 0; c < r->d; c++) dot += r->qr[i * r->d + c] * r->kr[j * r->d + c];
    s->logit[s->n] = dot / sqrt((double)r->d);
    s->val[s->n++] = r->v + j * r->d;
}

static void add_summary(slot_list *s, const ref_head *r, int64_t i, int64_t t0, int64_t t1)
{
    double kh[64];
    double *vh = s->store + s->n_store * r->d;
    if (!ref_summary(r, t0, t1, kh, vh)) return;
    s->n_store++;
    double dot = 0;
    for (int64_t c = 0; c < r->d; c++) dot += r->q[i * r->d + c] * kh[c];
    s->logit[s->n] = dot / sqrt((double)r->d);
    s->val[s->n++] = vh;
}

static void ref_forward(const mpl_attn_combiner_args *a, int logsparse, const double *qkv,
                        double *out)
{
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim, HD = H * d;
    const int64_t L = T, s_ = a->segment;
    ref_head r = {.T = T, .d = d, .q = mpl_test_dalloc(T * d), .k = mpl_test_dalloc(T * d),
                  .v = mpl_test_dalloc(T * d), .qr = mpl_test_dalloc(T * d),
                  .kr = mpl_test_dalloc(T * d)};
    slot_list *sl = malloc(sizeof *sl);
    assert_non_null(sl);
    for (int64_t s = 0; s < S; s++)
        for (int64_t h = 0; h < H; h++) {
            r.mk = a->mask ? a->mask + s * T : NULL;
            for (int64_t t = 0; t < T; t++)
                for (int64_t c = 0; c < d; c++) {
                    const double *row = qkv + (s * T + t) * 3 * HD + h * d + c;
                    r.q[t * d + c] = r.qr[t * d + c] = row[0];
                    r.k[t * d + c] = r.kr[t * d + c] = row[HD];
                    r.v[t * d + c] = row[2 * HD];
                }
            if (a->rope_theta > 0)
                for (int64_t t = 0; t < T; t++) {
                    mpl_test_rope_ref(r.qr + t * d, (int)d, (double)t, a->rope_theta);
                    mpl_test_rope_ref(r.kr + t * d, (int)d, (double)t, a->rope_theta);
                }
            for (int64_t i = 0; i < T; i++) {
                double *o = out + (s * T + i) * HD + h * d;
                for (int64_t c = 0; c < d; c++) o[c] = 0;
                if (r.mk && !r.mk[i]) continue;
                sl->n = sl->n_store = 0;
                if (!logsparse) {
                    const int64_t g = i / s_, gs = g * s_, ge = fmin((double)(gs + s_), (double)L);
                    const int64_t jend = a->causal ? i + 1 : ge;
                    for (int64_t j = gs; j < jend; j++) add_direct(sl, &r, i, j);
                    const int64_t n_seg = (L + s_ - 1) / s_;
                    for (int64_t m = 0; m < (a->causal ? g : n_seg); m++)
                        if (m != g) add_summary(sl, &r, i, m * s_, fmin((double)((m + 1) * s_), (double)L));
                } else {
                    /* combiner.h: self, left siblings for the set bits of
                     * i, right siblings (cut at L) for the clear ones; they
                     * must cover [0, i] (causal) or [0, L) once each */
                    int cover[4096] = {0};
                    assert_true(L <= 4096);
                    add_direct(sl, &r, i, i);
                    cover[i]++;
                    int n_lev = 0;
                    while (((int64_t)1 << n_lev) < L) n_lev++; /* bit_length(L - 1) */
                    for (int l = 0; l < n_lev; l++) {
                        const int64_t half = (int64_t)1 << l, p0 = i / (2 * half) * (2 * half);
                        int64_t t0 = -1, t1 = -1;
                        if (i / half % 2 == 1) t0 = p0, t1 = p0 + half;
                        else if (!a->causal && p0 + half < L)
                            t0 = p0 + half, t1 = p0 + 2 * half < L ? p0 + 2 * half : L;
                        if (t0 < 0) continue;
                        add_summary(sl, &r, i, t0, t1);
                        for (int64_t j = t0; j < t1; j++) cover[j]++;
                    }
                    for (int64_t j = 0; j < L; j++)
                        assert_int_equal(cover[j], a->causal && j > i ? 0 : 1);
                }
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j < sl->n; j++) mx = fmax(mx, sl->logit[j]);
                for (int64_t j = 0; j < sl->n; j++) z += exp(sl->logit[j] - mx);
                for (int64_t j = 0; j < sl->n; j++)
                    for (int64_t c = 0; c < d; c++)
                        o[c] += exp(sl->logit[j] - mx) / z * sl->val[j][c];
            }
        }
    free(r.q), free(r.k), free(r.v), free(r.qr), free(r.kr), free(sl);
}

static mpl_status fwd64(const mpl_attn_combiner_args *a, int ls, const double *x, double *o,
                        double *sv)
{
    return ls ? mpl_attn_combiner_logsparse_forward_f64(a, x, o, sv)
              : mpl_attn_combiner_fixed_forward_f64(a, x, o, sv);
}
static mpl_status bwd64(const mpl_attn_combiner_args *a, int ls, const double *x,
                        const double *sv, const double *g, double *dx)
{
    return ls ? mpl_attn_combiner_logsparse_backward_f64(a, x, sv, g, dx)
              : mpl_attn_combiner_fixed_backward_f64(a, x, sv, g, dx);
}
static mpl_status fwd32(const mpl_attn_combiner_args *a, int ls, const float *x, float *o,
                        float *sv)
{
    return ls ? mpl_attn_combiner_logsparse_forward_f32(a, x, o, sv)
              : mpl_attn_combiner_fixed_forward_f32(a, x, o, sv);
}
static mpl_status bwd32(const mpl_attn_combiner_args *a, int ls, const float *x,
                        const float *sv, const float *g, float *dx)
{
    return ls ? mpl_attn_combiner_logsparse_backward_f32(a, x, sv, g, dx)
              : mpl_attn_combiner_fixed_backward_f32(a, x, sv, g, dx);
}

typedef struct fdctx {
    const mpl_attn_combiner_args *a;
    int ls;
    double *qkv, *out, *saved, *dout;
    int64_t n_out;
} fdctx;

static double fd_loss(void *p)
{
    fdctx *c = p;
    assert_int_equal(fwd64(c->a, c->ls, c->qkv, c->out, c->saved), MPL_OK);
    double L = 0;
    for (int64_t i = 0; i < c->n_out; i++) L += c->dout[i] * c->out[i];
    return L;
}

/* mask variants: 0 none; 1 scattered padding in seq 0 (a padded query,
 * padded keys), trailing in seq 1; 2 seq 0 has segment/block [s, 2s)
 * fully padded plus scattered padding, seq 1 fully real. */
static void make_mask(uint8_t *m, int64_t S, int64_t T, int64_t seg, int variant)
{
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = 0; t < T; t++) {
            int v = 1;
            if (variant == 1) v = s == 0 ? t % 3 != 1 : (t < T - 2 || t == 0);
            if (variant == 2) v = s == 0 ? !(t >= seg && t < 2 * seg) && t % 5 != 3 : 1;
            m[s * T + t] = (uint8_t)v;
        }
}

static const char *kind_name(int ls) { return ls ? "logsparse" : "fixed"; }

/* Forward vs reference (f64 and f32); with fd, backward vs central
 * differences and f32 backward vs f64. */
static void run_case(int ls, int64_t S, int64_t T, int H, int d, int causal, int64_t seg,
                     double theta, int mv, int fd)
{
    const int64_t HD = (int64_t)H * d, n_qkv = S * T * 3 * HD, n_out = S * T * HD;
    uint8_t *mask = calloc((size_t)(S * T + 1), 1);
    assert_non_null(mask);
    if (mv) make_mask(mask, S, T, ls ? 4 : seg, mv);
    mpl_attn_combiner_args a = {.n_seq = S, .n_tok = T, .seq_len = T, .n_head = H,
                                .head_dim = d, .causal = causal, .rope_theta = theta,
                                .segment = seg, .mask = mv ? mask : NULL};
    const int64_t n_saved = mpl_attn_combiner_saved_elems(&a);
    char what[200], tag[160];
    snprintf(tag, sizeof tag, "%s S=%lld L=%lld H=%d d=%d s=%lld %s rope=%g mask=%d",
             kind_name(ls), (long long)S, (long long)T, H, d, (long long)seg,
             causal ? "causal" : "bidir", theta, mv);
    const uint64_t seed = mpl_test_seed();
    double *qkv = mpl_test_dalloc(n_qkv), *dout = mpl_test_dalloc(n_out),
           *out = mpl_test_dalloc(n_out);
    double *ref = mpl_test_dalloc(n_out), *saved = mpl_test_dalloc(n_saved),
           *dqkv = mpl_test_dalloc(n_qkv);
    mpl_test_fill_f64(qkv, n_qkv, seed, 200 + (uint64_t)T, -1.5, 1.5);
    mpl_test_fill_f64(dout, n_out, seed, 201, -1, 1);

    assert_int_equal(fwd64(&a, ls, qkv, out, saved), MPL_OK);
    ref_forward(&a, ls, qkv, ref);
    snprintf(what, sizeof what, "attn_combiner_fwd f64 %s", tag);
    assert_true(mpl_test_close_f64(what, out, ref, n_out, 1e-13, 1e-11));
    float *qkv32 = mpl_test_to_f32(qkv, n_qkv), *dout32 = mpl_test_to_f32(dout, n_out);
    float *out32 = mpl_test_falloc(n_out), *saved32 = mpl_test_falloc(n_saved);
    assert_int_equal(fwd32(&a, ls, qkv32, out32, saved32), MPL_OK);
    snprintf(what, sizeof what, "attn_combiner_fwd f32 %s", tag);
    assert_true(mpl_test_close_f32_f64(what, out32, ref, n_out, F32_ATOL, F32_RTOL));

    if (fd) {
        for (int64_t i = 0; i < n_qkv; i++) dqkv[i] = PREFILL;
        assert_int_equal(bwd64(&a, ls, qkv, saved, dout, dqkv), MPL_OK);
        double *g = mpl_test_dalloc(n_qkv);
        fdctx c = {.a = &a, .ls = ls, .qkv = qkv, .out = out, .saved = saved, .dout = dout,
                   .n_out = n_out};
        mpl_test_fd_grad(fd_loss, &c, qkv, n_qkv, FD_H, g);
        for (int64_t i = 0; i < n_qkv; i++) g[i] += PREFILL;
        snprintf(what, sizeof what, "attn_combiner_bwd_fd dqkv %s", tag);
        assert_true(mpl_test_close_f64(what, dqkv, g, n_qkv, FD_ATOL, FD_RTOL));
        fd_loss(&c);
        float *dqkv32 = mpl_test_falloc(n_qkv);
        for (int64_t i = 0; i < n_qkv; i++) dqkv32[i] = (float)PREFILL;
        assert_int_equal(bwd32(&a, ls, qkv32, saved32, dout32, dqkv32), MPL_OK);
        snprintf(what, sizeof what, "attn_combiner_bwd f32 %s", tag);
        assert_true(mpl_test_close_f32_f64(what, dqkv32, dqkv, n_qkv, 1e-5, 1e-4));
        free(g), free(dqkv32);
    }
    free(qkv32), free(dout32), free(out32), free(saved32);
    free(qkv), free(dout), free(out), free(ref), free(saved), free(dqkv), free(mask);
}

static int64_t default_seg(int64_t L)
{
    const int64_t s = (int64_t)llround(sqrt((double)L));
    return s < 1 ? 1 : s;
}

static void test_attention_combiner_forward(void **state)
{
    (void)state;
    const int64_t Ls[] = {1, 2, 7, 13, 16, 17};
    for (int ls = 0; ls <= 1; ls++)
        for (size_t li = 0; li < sizeof Ls / sizeof *Ls; li++)
            for (int causal = 0; causal <= 1; causal++)
                for (int rope = 0; rope <= 1; rope++)
                    for (int mv = 0; mv <= 2; mv++) {
                        const int64_t L = Ls[li], seg = L == 13 ? 4 : default_seg(L);
                        run_case(ls, 2, L, 2, 4, causal, seg, rope ? 100.0 : 0, mv, 0);
                    }
    for (int ls = 0; ls <= 1; ls++)
        for (int causal = 0; causal <= 1; causal++)
            for (int mv = 0; mv <= 1; mv++)
                run_case(ls, 1, 1000, 2, 8, causal, 32, mv ? 10000.0 : 0, mv, 0);
}

static void test_attention_combiner_backward(void **state)
{
    (void)state;
    for (int ls = 0; ls <= 1; ls++)
        for (int causal = 0; causal <= 1; causal++) {
            run_case(ls, 2, 7, 2, 4, causal, 3, 100.0, 0, 1);
            run_case(ls, 2, 13, 2, 4, causal, 4, 0, 2, 1);
            run_case(ls, 1, 17, 2, 4, causal, 4, 10000.0, 1, 1);
        }
    /* Logsparse future blocks cut at L = 12 ([8, 16) -> [8, 12)) with a
     * padded tail inside them (mask variant 1, sequence 1) */
    run_case(1, 2, 12, 2, 4, 0, 4, 0, 1, 1);
}

/* Copy rows [p0, p1) of every sequence of x (S, T, w) into y (S, p1-p0, w). */
static void rows_copy(double *y, const double *x, int64_t S, int64_t T, int64_t w, int64_t p0,
                      int64_t p1)
{
    for (int64_t s = 0; s < S; s++)
        memcpy(y + s * (p1 - p0) * w, x + (s * T + p0) * w, (size_t)((p1 - p0) * w) * sizeof *y);
}
static void rows_add(double *x, const double *y, int64_t S, int64_t T, int64_t w, int64_t p0,
                     int64_t p1)
{
    for (int64_t s = 0; s < S; s++)
        for (int64_t k = 0; k < (p1 - p0) * w; k++) x[(s * T + p0) * w + k] += y[s * (p1 - p0) * w + k];
}
static void mask_copy(uint8_t *y, const uint8_t *x, int64_t S, int64_t T, int64_t p0, int64_t p1)
{
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = p0; t < p1; t++) y[s * (p1 - p0) + t - p0] = x[s * T + t];
}

/* Chunked Combiner-Fixed: pieces of the given sizes, summaries gathered
 * and halos passed by hand; outputs and all gradients (summary and halo
 * gradients summed at their owners) equal the one-piece result. */
static void run_chunked(int64_t L, int64_t seg, int causal, double theta, int mv,
                        const int64_t *sizes, int n_piece)
{
    const int64_t S = 2, H = 2, d = 4, HD = H * d, W = 3 * HD;
    const uint64_t seed = mpl_test_seed();
    uint8_t *mask = calloc((size_t)(S * L), 1);
    assert_non_null(mask);
    make_mask(mask, S, L, seg, mv ? mv : 0);
    if (!mv) memset(mask, 1, (size_t)(S * L));
    mpl_attn_combiner_args a = {.n_seq = S, .n_tok = L, .seq_len = L, .n_head = (int)H,
                                .head_dim = (int)d, .causal = causal, .rope_theta = theta,
                                .segment = seg, .mask = mask};
    const int64_t n_seg = mpl_attn_combiner_fixed_n_seg(&a);
    double *qkv = mpl_test_dalloc(S * L * W), *dout = mpl_test_dalloc(S * L * HD),
           *out1 = mpl_test_dalloc(S * L * HD);
    double *sv1 = mpl_test_dalloc(S * H * L), *dq1 = mpl_test_dalloc(S * L * W);
    mpl_test_fill_f64(qkv, S * L * W, seed, 300, -1.5, 1.5);
    mpl_test_fill_f64(dout, S * L * HD, seed, 301, -1, 1);
    assert_int_equal(mpl_attn_combiner_fixed_forward_f64(&a, qkv, out1, sv1), MPL_OK);
    assert_int_equal(mpl_attn_combiner_fixed_backward_f64(&a, qkv, sv1, dout, dq1), MPL_OK);

    double *kh = mpl_test_dalloc(S * n_seg * HD), *vh = mpl_test_dalloc(S * n_seg * HD);
    double *dkh = mpl_test_dalloc(S * n_seg * HD), *dvh = mpl_test_dalloc(S * n_seg * HD);
    uint8_t *pres = calloc((size_t)(S * n_seg), 1);
    double *outc = mpl_test_dalloc(S * L * HD), *dqc = mpl_test_dalloc(S * L * W);
    assert_non_null(pres);
    int64_t pos[16];
    pos[0] = 0;
    for (int p = 0; p < n_piece; p++) pos[p + 1] = pos[p] + sizes[p];
    assert_int_equal(pos[n_piece], L);
    /* per piece: its args, rows, mask and halos */
    mpl_attn_combiner_args ap[16];
    mpl_attn_combiner_ctx_f64 cp[16];
    double *xp[16], *xlo[16], *xhi[16], *dlo[16], *dhi[16];
    uint8_t *mp[16], *mlo[16], *mhi[16];
    int64_t nlo[16], nhi[16];
    for (int p = 0; p < n_piece; p++) {
        const int64_t p0 = pos[p], p1 = pos[p + 1], n = p1 - p0;
        mp[p] = calloc((size_t)(S * n), 1);
        assert_non_null(mp[p]);
        mask_copy(mp[p], mask, S, L, p0, p1);
        ap[p] = a;
        ap[p].n_tok = n, ap[p].pos0 = p0, ap[p].mask = mp[p];
        mpl_attn_combiner_fixed_halo(&ap[p], &nlo[p], &nhi[p]);
        xp[p] = mpl_test_dalloc(S * n * W), xlo[p] = mpl_test_dalloc(S * nlo[p] * W),
        xhi[p] = mpl_test_dalloc(S * nhi[p] * W);
        dlo[p] = mpl_test_dalloc(S * nlo[p] * W), dhi[p] = mpl_test_dalloc(S * nhi[p] * W);
        mlo[p] = calloc((size_t)(S * nlo[p] + 1), 1), mhi[p] = calloc((size_t)(S * nhi[p] + 1), 1);
        rows_copy(xp[p], qkv, S, L, W, p0, p1);
        rows_copy(xlo[p], qkv, S, L, W, p0 - nlo[p], p0);
        rows_copy(xhi[p], qkv, S, L, W, p1, p1 + nhi[p]);
        mask_copy(mlo[p], mask, S, L, p0 - nlo[p], p0);
        mask_copy(mhi[p], mask, S, L, p1, p1 + nhi[p]);
        cp[p] = (mpl_attn_combiner_ctx_f64){.qkv_lo = xlo[p], .mask_lo = mlo[p],
                                            .dqkv_lo = dlo[p], .qkv_hi = xhi[p],
                                            .mask_hi = mhi[p], .dqkv_hi = dhi[p], .khat = kh,
                                            .vhat = vh, .present = pres};
    }
    /* (i) owned summaries into the gathered arrays; every segment once */
    memset(pres, 7, (size_t)(S * n_seg));
    for (int p = 0; p < n_piece; p++)
        assert_int_equal(mpl_attn_combiner_fixed_chunk_summarize_f64(&ap[p], xp[p], &cp[p]), MPL_OK);
    for (int64_t i = 0; i < S * n_seg; i++) assert_true(pres[i] <= 1);
    /* (iii) forward; backward with per-piece summary gradients */
    for (int p = 0; p < n_piece; p++) {
        const int64_t p0 = pos[p], p1 = pos[p + 1], n = p1 - p0;
        double *o = mpl_test_dalloc(S * n * HD), *sv = mpl_test_dalloc(S * H * n),
               *go = mpl_test_dalloc(S * n * HD);
        double *dx = mpl_test_dalloc(S * n * W), *dk = mpl_test_dalloc(S * n_seg * HD),
               *dv = mpl_test_dalloc(S * n_seg * HD);
        assert_int_equal(mpl_attn_combiner_fixed_chunk_forward_f64(&ap[p], xp[p], &cp[p], o, sv), MPL_OK);
        rows_add(outc, o, S, L, HD, p0, p1);
        rows_copy(go, dout, S, L, HD, p0, p1);
        cp[p].dkhat = dk, cp[p].dvhat = dv;
        assert_int_equal(mpl_attn_combiner_fixed_chunk_backward_f64(&ap[p], xp[p], &cp[p], sv, go, dx), MPL_OK);
        rows_add(dqc, dx, S, L, W, p0, p1);
        rows_add(dqc, dlo[p], S, L, W, p0 - nlo[p], p0); /* halo gradients to their owners */
        rows_add(dqc, dhi[p], S, L, W, p1, p1 + nhi[p]);
        for (int64_t i = 0; i < S * n_seg * HD; i++) dkh[i] += dk[i], dvh[i] += dv[i];
        free(o), free(sv), free(go), free(dx), free(dk), free(dv);
    }
    /* summary backward at the owners with the summed summary gradients */
    for (int p = 0; p < n_piece; p++) {
        const int64_t p0 = pos[p], p1 = pos[p + 1], n = p1 - p0;
        double *dx = mpl_test_dalloc(S * n * W);
        memset(dlo[p], 0, (size_t)(S * nlo[p] * W) * sizeof *dlo[p]);
        cp[p].dkhat = dkh, cp[p].dvhat = dvh;
        assert_int_equal(mpl_attn_combiner_fixed_chunk_summarize_backward_f64(&ap[p], xp[p], &cp[p], dx), MPL_OK);
        rows_add(dqc, dx, S, L, W, p0, p1);
        rows_add(dqc, dlo[p], S, L, W, p0 - nlo[p], p0);
        free(dx);
    }
    char what[200];
    int len = 0;
    char sz[64] = "";
    for (int p = 0; p < n_piece; p++) len += snprintf(sz + len, sizeof sz - (size_t)len, "%s%lld", p ? "," : "", (long long)sizes[p]);
    snprintf(what, sizeof what, "attn_combiner_chunked fwd L=%lld s=%lld %s rope=%g mask=%d pieces=%s",
             (long long)L, (long long)seg, causal ? "causal" : "bidir", theta, mv, sz);
    assert_true(mpl_test_close_f64(what, outc, out1, S * L * HD, 1e-14, 1e-12));
    snprintf(what, sizeof what, "attn_combiner_chunked bwd L=%lld s=%lld %s rope=%g mask=%d pieces=%s",
             (long long)L, (long long)seg, causal ? "causal" : "bidir", theta, mv, sz);
    assert_true(mpl_test_close_f64(what, dqc, dq1, S * L * W, 1e-14, 1e-12));
    for (int p = 0; p < n_piece; p++) {
        free(xp[p]), free(xlo[p]), free(xhi[p]), free(dlo[p]), free(dhi[p]);
        free(mp[p]), free(mlo[p]), free(mhi[p]);
    }
    free(qkv), free(dout), free(out1), free(sv1), free(dq1), free(kh), free(vh), free(dkh);
    free(dvh), free(pres), free(outc), free(dqc), free(mask);
}

static void test_attention_combiner_chunked(void **state)
{
    (void)state;
    const int64_t p1[] = {3, 9, 2, 6, 3};  /* L=23, s=5: short and misaligned pieces */
    const int64_t p2[] = {11, 12};         /* L=23: a piece inside a segment boundary */
    const int64_t p3[] = {1, 1, 5, 16};    /* L=23, s=4 */
    const int64_t p4[] = {20, 3};          /* L=23, s=23: one segment, two pieces */
    for (int causal = 0; causal <= 1; causal++)
        for (int mv = 0; mv <= 2; mv += 2) {
            run_chunked(23, 5, causal, 100.0, mv, p1, 5);
            run_chunked(23, 5, causal, 0, mv, p2, 2);
            run_chunked(23, 4, causal, 10000.0, mv, p3, 4);
            run_chunked(23, 23, causal, 0, mv, p4, 2);
        }
}

/* Streaming token by token equals the full causal forward (fp32, ops). */
static void run_stream(mpl_attn_kind kind, int64_t L, int64_t seg, double theta)
{
    const int64_t S = 2, H = 2, d = 4, HD = H * d, W = 3 * HD;
    mpl_attn_cfg cfg = {.kind = kind, .causal = 1, .n_head = (int)H, .head_dim = (int)d,
                        .seq_len = L, .rope_theta = theta, .segment = seg};
    mpl_attn at = {0};
    assert_int_equal(mpl_attn_create(&cfg, NULL, &at), MPL_OK);
    const mpl_attn_geom g = {.n_seq = S, .n_tok = L};
    float *qkv = mpl_test_falloc(S * L * W), *out = mpl_test_falloc(S * L * HD),
          *so = mpl_test_falloc(S * L * HD);
    float *sv = mpl_test_falloc(at.ops->saved_elems(at.impl, &g)), *row = mpl_test_falloc(S * W),
          *orow = mpl_test_falloc(S * HD);
    mpl_test_fill_f32(qkv, S * L * W, mpl_test_seed(), 400, -1.5, 1.5);
    assert_int_equal(at.ops->forward(at.impl, 0, &g, NULL, qkv, out, sv), MPL_OK);
    void *st = NULL;
    assert_int_equal(at.ops->stream_create(at.impl, 0, S, &st), MPL_OK);
    for (int64_t t = 0; t < L; t++) {
        for (int64_t s = 0; s < S; s++) memcpy(row + s * W, qkv + (s * L + t) * W, (size_t)W * sizeof *row);
        assert_int_equal(at.ops->stream_step(at.impl, 0, st, NULL, t, row, orow), MPL_OK);
        for (int64_t s = 0; s < S; s++) memcpy(so + (s * L + t) * HD, orow + s * HD, (size_t)HD * sizeof *so);
    }
    mpl_err_clear();
    assert_int_equal(at.ops->stream_step(at.impl, 0, st, NULL, L, row, orow), MPL_ERR_ARG);
    mpl_err_clear();
    at.ops->stream_destroy(&st);
    assert_null(st);
    char what[160];
    snprintf(what, sizeof what, "attn_combiner_stream %s L=%lld s=%lld rope=%g", at.ops->name,
             (long long)L, (long long)seg, theta);
    assert_true(mpl_test_close_f32(what, so, out, S * L * HD, 1e-6, 1e-5));
    mpl_attn_destroy(&at);
    free(qkv), free(out), free(so), free(sv), free(row), free(orow);
}

static void test_attention_combiner_stream(void **state)
{
    (void)state;
    run_stream(MPL_ATTN_KIND_COMBINER_FIXED, 37, 6, 10000.0);
    run_stream(MPL_ATTN_KIND_COMBINER_FIXED, 16, 4, 0);
    run_stream(MPL_ATTN_KIND_COMBINER_LOGSPARSE, 37, 1, 10000.0);
    run_stream(MPL_ATTN_KIND_COMBINER_LOGSPARSE, 32, 1, 0);
    run_stream(MPL_ATTN_KIND_COMBINER_LOGSPARSE, 1, 1, 0);
}

/* The registry's instances equal the direct fp32 calls bit for bit. */
static void test_attention_combiner_ops(void **state)
{
    (void)state;
    for (int ls = 0; ls <= 1; ls++) {
        const int64_t S = 2, T = 29, H = 3, d = 6, HD = H * d, W = 3 * HD;
        mpl_attn_cfg cfg = {.kind = ls ? MPL_ATTN_KIND_COMBINER_LOGSPARSE : MPL_ATTN_KIND_COMBINER_FIXED,
                            .causal = ls, .n_head = (int)H, .head_dim = (int)d, .seq_len = T,
                            .rope_theta = 10000.0, .segment = 5};
        mpl_attn at = {0};
        assert_int_equal(mpl_attn_create(&cfg, NULL, &at), MPL_OK);
        assert_string_equal(at.ops->name, ls ? "combiner_logsparse" : "combiner_fixed");
        assert_null(at.ops->declare_params);
        uint8_t mask[58];
        make_mask(mask, S, T, 5, 1);
        const mpl_attn_geom g = {.n_seq = S, .n_tok = T, .mask = mask};
        const int64_t n_saved = at.ops->saved_elems(at.impl, &g);
        assert_int_equal(n_saved, S * H * T);
        mpl_attn_combiner_args a = {.n_seq = S, .n_tok = T, .seq_len = T, .n_head = (int)H,
                                    .head_dim = (int)d, .causal = ls, .rope_theta = 10000.0,
                                    .segment = 5, .mask = mask};
        float *qkv = mpl_test_falloc(S * T * W), *dout = mpl_test_falloc(S * T * HD);
        mpl_test_fill_f32(qkv, S * T * W, mpl_test_seed(), 500, -1, 1);
        mpl_test_fill_f32(dout, S * T * HD, mpl_test_seed(), 501, -1, 1);
        float *o1 = mpl_test_falloc(S * T * HD), *o2 = mpl_test_falloc(S * T * HD),
              *s1 = mpl_test_falloc(n_saved), *s2 = mpl_test_falloc(n_saved);
        float *d1 = mpl_test_falloc(S * T * W), *d2 = mpl_test_falloc(S * T * W);
        for (int64_t i = 0; i < S * T * W; i++) d1[i] = d2[i] = (float)PREFILL;
        assert_int_equal(at.ops->forward(at.impl, 0, &g, NULL, qkv, o1, s1), MPL_OK);
        assert_int_equal(at.ops->backward(at.impl, 0, &g, NULL, qkv, s1, dout, d1, NULL), MPL_OK);
        assert_int_equal(fwd32(&a, ls, qkv, o2, s2), MPL_OK);
        assert_int_equal(bwd32(&a, ls, qkv, s2, dout, d2), MPL_OK);
        assert_true(mpl_test_close_f32("attn_combiner ops fwd == direct", o1, o2, S * T * HD, 0, 0));
        assert_true(mpl_test_close_f32("attn_combiner ops saved == direct", s1, s2, n_saved, 0, 0));
        assert_true(mpl_test_close_f32("attn_combiner ops bwd == direct", d1, d2, S * T * W, 0, 0));
        mpl_attn_destroy(&at);
        assert_null(at.impl);
        free(qkv), free(dout), free(o1), free(o2), free(s1), free(s2), free(d1), free(d2);
    }
}

static void expect_fail(mpl_status st, mpl_status want, const char *needle)
{
    printf("attn_combiner error -> %s: %s\n", mpl_status_str(st), mpl_err_cause());
    assert_int_equal(st, want);
    assert_non_null(strstr(mpl_err_cause(), needle));
    mpl_err_clear();
}

static void test_attention_combiner_errors(void **state)
{
    (void)state;
    const mpl_attn_cfg ok = {.kind = MPL_ATTN_KIND_COMBINER_FIXED, .causal = 1, .n_head = 2,
                             .head_dim = 4, .seq_len = 16, .segment = 4};
    mpl_attn at = {0};
    mpl_attn_cfg c = ok;
    mpl_err_clear();
    c.segment = 0;
    expect_fail(mpl_attn_create(&c, NULL, &at), MPL_ERR_ARG, "segment=0");
    assert_null(at.ops);
    c = ok, c.rope_theta = 100, c.head_dim = 5;
    expect_fail(mpl_attn_create(&c, NULL, &at), MPL_ERR_ARG, "head_dim=5");
    for (int ls = 0; ls <= 1; ls++) {
        c = ok, c.causal = 0;
        c.kind = ls ? MPL_ATTN_KIND_COMBINER_LOGSPARSE : MPL_ATTN_KIND_COMBINER_FIXED;
        assert_int_equal(mpl_attn_create(&c, NULL, &at), MPL_OK);
        void *st = NULL;
        expect_fail(at.ops->stream_create(at.impl, 0, 1, &st), MPL_ERR_UNSUPPORTED,
                    "streaming needs causal attention");
        assert_null(st);
        mpl_attn_destroy(&at);
    }
    mpl_attn_combiner_args a = {.n_seq = 1, .n_tok = 4, .pos0 = 0, .seq_len = 4, .n_head = 1,
                                .head_dim = 2, .causal = 1, .segment = 0};
    double x[24] = {0}, o[8], s[4];
    expect_fail(mpl_attn_combiner_fixed_forward_f64(&a, x, o, s), MPL_ERR_ARG, "segment=0");
    a.segment = 2, a.pos0 = 1, a.seq_len = 5;
    expect_fail(mpl_attn_combiner_logsparse_forward_f64(&a, x, o, s), MPL_ERR_ARG, "pos0=1");
}

/* Max-pool ties: rows 0 and 1 share the same q (segment 0), and their own
 * outputs carry no gradient, so their dq comes only from q-hat: it must be
 * split equally, and the sum must match the derivative of moving both. */
static void test_attention_combiner_ties(void **state)
{
    (void)state;
    const int64_t S = 1, T = 4, H = 1, d = 2, W = 3 * H * d, HD = H * d;
    mpl_attn_combiner_args a = {.n_seq = S, .n_tok = T, .seq_len = T, .n_head = (int)H,
                                .head_dim = (int)d, .causal = 0, .segment = 2};
    double qkv[24], dout[8], out[8], sv[4], dq[24] = {0};
    mpl_test_fill_f64(qkv, S * T * W, mpl_test_seed(), 600, -1.5, 1.5);
    mpl_test_fill_f64(dout, S * T * HD, mpl_test_seed(), 601, -1, 1);
    for (int64_t c = 0; c < d; c++) qkv[W + c] = qkv[c]; /* q_1 = q_0 */
    for (int64_t c = 0; c < 2 * HD; c++) dout[c] = 0;   /* rows 0, 1 */
    assert_int_equal(mpl_attn_combiner_fixed_forward_f64(&a, qkv, out, sv), MPL_OK);
    assert_int_equal(mpl_attn_combiner_fixed_backward_f64(&a, qkv, sv, dout, dq), MPL_OK);
    fdctx ctx = {.a = &a, .ls = 0, .qkv = qkv, .out = out, .saved = sv, .dout = dout, .n_out = 8};
    for (int64_t c = 0; c < d; c++) {
        const double x0 = qkv[c];
        qkv[c] = qkv[W + c] = x0 + FD_H;
        const double fp = fd_loss(&ctx);
        qkv[c] = qkv[W + c] = x0 - FD_H;
        const double fm = fd_loss(&ctx);
        qkv[c] = qkv[W + c] = x0;
        const double joint = (fp - fm) / (2 * FD_H);
        printf("attn_combiner ties c=%lld dq0=%.12g dq1=%.12g sum=%.12g joint_fd=%.12g\n",
               (long long)c, dq[c], dq[W + c], dq[c] + dq[W + c], joint);
        assert_true(dq[c] == dq[W + c]);
        assert_true(fabs(dq[c]) > 1e-6);
        assert_true(fabs(dq[c] + dq[W + c] - joint) <= 1e-8 + 1e-6 * fabs(joint));
    }
}

int main(void)
{
    mpl_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_combiner_forward),
        cmocka_unit_test(test_attention_combiner_backward),
        cmocka_unit_test(test_attention_combiner_chunked),
        cmocka_unit_test(test_attention_combiner_stream),
        cmocka_unit_test(test_attention_combiner_ops),
        cmocka_unit_test(test_attention_combiner_errors),
        cmocka_unit_test(test_attention_combiner_ties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
