/* The fp32 FMM kernels at the other vector width. attention/fmm_f32.c
 * builds the template bodies with 16 lanes where the compiler targets
 * AVX-512 and with 8 elsewhere; this file builds them a second time with
 * the other width (GCC lowers a 64-byte vector to two halves where the
 * target has no AVX-512), so that every machine tests both. The two
 * instances differ only in the order of their horizontal reductions, so
 * statistics, forward, backward and streaming must agree to fp32
 * rounding. Part of the attention.fmm test (helpers in
 * test_attention_fmm.h). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "core/fastexp.h"
#include "core/layers.h"
#include "attention/fmm.h"
#include "test_attention_fmm.h"

#if defined(__AVX512F__)
#define MPL_FMM_LANES 8
#else
#define MPL_FMM_LANES 16
#endif
#define MPL_SUF(name) name##_f32w
/* the public types and the layers' RoPE are the fp32 ones */
typedef mpl_attn_fmm_blend_f32 mpl_attn_fmm_blend_f32w;
typedef mpl_attn_fmm_dblend_f32 mpl_attn_fmm_dblend_f32w;
typedef mpl_attn_fmm_ctx_f32 mpl_attn_fmm_ctx_f32w;
typedef mpl_attn_fmm_dctx_f32 mpl_attn_fmm_dctx_f32w;
#define mpl_rope_apply_f32w mpl_rope_apply_f32
#include "attention/fmm_f32_body.h"

/* One instance's results on a case: the statistics (bidirectional), the
 * forward's output and saved rows, the backward's input and blend
 * gradients, and (causal, no mask) the streamed outputs. */
typedef struct lane_out {
    float *stat, *out, *saved, *dqkv, *da, *db, *dal, *stream;
} lane_out;

typedef mpl_status (*stats_fn)(const mpl_attn_fmm_args *, const float *, float *);
typedef mpl_status (*fwd_fn)(const mpl_attn_fmm_args *, const mpl_attn_fmm_ctx_f32 *,
                             mpl_attn_fmm_blend_f32, const float *, float *, float *);
typedef mpl_status (*bwd_fn)(const mpl_attn_fmm_args *, const mpl_attn_fmm_ctx_f32 *,
                             mpl_attn_fmm_blend_f32, const float *, const float *, const float *,
                             float *, const mpl_attn_fmm_dctx_f32 *, mpl_attn_fmm_dblend_f32);
typedef mpl_status (*sback_fn)(const mpl_attn_fmm_args *, const float *, const float *, float *);
typedef mpl_status (*step_fn)(const mpl_attn_fmm_args *, mpl_attn_fmm_blend_f32, float *, int64_t,
                              const float *, float *);

typedef struct lane_impl {
    stats_fn stats;
    fwd_fn forward;
    bwd_fn backward;
    sback_fn stats_backward;
    step_fn step;
} lane_impl;

static const lane_impl LIB = {mpl_attn_fmm_stats_f32, mpl_attn_fmm_forward_f32,
                              mpl_attn_fmm_backward_f32, mpl_attn_fmm_stats_backward_f32,
                              mpl_attn_fmm_stream_step_f32};
static const lane_impl ALT = {mpl_attn_fmm_stats_f32w, mpl_attn_fmm_forward_f32w,
                              mpl_attn_fmm_backward_f32w, mpl_attn_fmm_stats_backward_f32w,
                              mpl_attn_fmm_stream_step_f32w};

static lane_out lane_run(const lane_impl *f, const mpl_attn_fmm_args *a, const float *qkv,
                         const float *dout, mpl_attn_fmm_blend_f32 bl, int64_t nb)
{
    const int64_t S = a->n_seq, T = a->n_tok, HD = (int64_t)a->n_head * a->head_dim;
    lane_out o;
    o.stat = mpl_test_falloc(mpl_attn_fmm_stat_elems(a) + 1);
    o.out = mpl_test_falloc(S * T * HD);
    o.saved = mpl_test_falloc(mpl_attn_fmm_saved_elems(a) + 1);
    o.dqkv = mpl_test_falloc(S * T * 3 * HD);
    o.da = mpl_test_falloc(nb), o.db = mpl_test_falloc(nb), o.dal = mpl_test_falloc(4);
    o.stream = mpl_test_falloc(S * T * HD);
    mpl_attn_fmm_ctx_f32 ctx = {0};
    if (!a->causal) {
        assert_int_equal(f->stats(a, qkv, o.stat), MPL_OK);
        ctx.stat_in = o.stat;
    }
    assert_int_equal(f->forward(a, &ctx, bl, qkv, o.out, o.saved), MPL_OK);
    float *dstat = mpl_test_falloc(mpl_attn_fmm_stat_elems(a) + 1);
    const mpl_attn_fmm_dctx_f32 dctx = {.stat_in = dstat};
    const mpl_attn_fmm_dblend_f32 dbl = {o.da, o.db, o.dal};
    assert_int_equal(f->backward(a, &ctx, bl, qkv, o.saved, dout, o.dqkv, &dctx, dbl), MPL_OK);
    if (!a->causal) assert_int_equal(f->stats_backward(a, qkv, dstat, o.dqkv), MPL_OK);
    free(dstat);
    if (a->causal && !a->mask) {
        float *st = mpl_test_falloc(mpl_attn_fmm_stream_elems(a)), *row = mpl_test_falloc(S * 3 * HD);
        float *orow = mpl_test_falloc(S * HD);
        for (int64_t t = 0; t < T; t++) {
            for (int64_t s = 0; s < S; s++)
                memcpy(row + s * 3 * HD, qkv + (s * T + t) * 3 * HD, (size_t)(3 * HD) * sizeof *row);
            assert_int_equal(f->step(a, bl, st, t, row, orow), MPL_OK);
            for (int64_t s = 0; s < S; s++)
                memcpy(o.stream + (s * T + t) * HD, orow + s * HD, (size_t)HD * sizeof *orow);
        }
        free(st), free(row), free(orow);
    }
    return o;
}

static void lane_free(lane_out *o)
{
    free(o->stat), free(o->out), free(o->saved), free(o->dqkv);
    free(o->da), free(o->db), free(o->dal), free(o->stream);
}

static float fmaxabs(const float *x, int64_t n)
{
    float m = 0;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* alt == lib to fp32 rounding: |alt - lib| <= 1e-5 (max |lib| + 1). */
static void lane_close(const char *name, const char *tag, const float *alt, const float *lib,
                       int64_t n)
{
    char what[400];
    snprintf(what, sizeof what, "fmm %d lanes == library, %s %s", (int)MPL_FMM_LANES, name, tag);
    const double tol = 1e-5 * (fmaxabs(lib, n) + 1.0);
    assert_true(mpl_test_close_f32(what, alt, lib, n, tol, 1e-5));
}

static void check_lanes(const fcase *c)
{
    char tag[256];
    case_tag(c, tag, sizeof tag);
    fdata x = data_make(c, 900);
    const mpl_attn_fmm_args a = case_args(c, x.mask);
    float *qkv = mpl_test_to_f32(x.qkv, x.n_qkv), *dout = mpl_test_to_f32(x.dout, x.n_out);
    float *ba = mpl_test_to_f32(x.ba, x.nb), *bb = mpl_test_to_f32(x.bb, x.nb),
          *bal = mpl_test_to_f32(x.bal, 4);
    const mpl_attn_fmm_blend_f32 bl = {ba, bb, bal};
    lane_out lib = lane_run(&LIB, &a, qkv, dout, bl, x.nb);
    lane_out alt = lane_run(&ALT, &a, qkv, dout, bl, x.nb);
    if (!c->causal) lane_close("stats", tag, alt.stat, lib.stat, mpl_attn_fmm_stat_elems(&a));
    lane_close("out", tag, alt.out, lib.out, x.n_out);
    lane_close("saved", tag, alt.saved, lib.saved, mpl_attn_fmm_saved_elems(&a));
    lane_close("dqkv", tag, alt.dqkv, lib.dqkv, x.n_qkv);
    lane_close("dA", tag, alt.da, lib.da, x.nb);
    lane_close("dB", tag, alt.db, lib.db, x.nb);
    lane_close("dalpha", tag, alt.dal, lib.dal, 4);
    if (c->causal && !c->mask) lane_close("stream", tag, alt.stream, lib.stream, x.n_out);
    lane_free(&lib), lane_free(&alt);
    free(qkv), free(dout), free(ba), free(bb), free(bal);
    data_free(&x);
}

void test_attention_fmm_lanes(void **state)
{
    (void)state;
    const mpl_fmm_map M2[4] = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP};
    const mpl_fmm_map M3[4] = {MPL_FMM_MAP_ELU, MPL_FMM_MAP_ELU_FLIP, MPL_FMM_MAP_TANH};
    for (int causal = 0; causal <= 1; causal++) {
        /* the benchmark's shape at a short length: d = 32, w = 64, two maps, RoPE */
        fcase c = BASE;
        c.causal = causal, c.S = 1, c.L = 1000, c.H = 2, c.d = 32, c.w = 64, c.r = 2;
        c.theta = 10000;
        memcpy(c.maps, M2, sizeof M2);
        check_lanes(&c);
        /* padding; w does not divide L; a head dim that fills no whole vector */
        c = BASE, c.causal = causal, c.L = 151, c.d = 12, c.w = 17, c.r = 3, c.theta = 100;
        memcpy(c.maps, M3, sizeof M3);
        c.mask = 1;
        check_lanes(&c);
        /* a fully padded sequence, the LRA blend, L < w */
        c = BASE, c.causal = causal, c.L = 40, c.d = 8, c.w = 64, c.mask = 2;
        c.blend = MPL_FMM_BLEND_LRA;
        check_lanes(&c);
        /* L = 1 */
        c = BASE, c.causal = causal, c.S = 1, c.L = 1, c.d = 16, c.w = 64;
        check_lanes(&c);
    }
}
