/* Helpers shared by the files of the FMM attention test
 * (test_attention_fmm.c defines them, test_attention_fmm_chunks.c and
 * test_attention_fmm_lanes.c use them): a case description, its seeded
 * inputs, single-rank evaluation. */
#ifndef MPL_TEST_ATTENTION_FMM_H
#define MPL_TEST_ATTENTION_FMM_H

#include <stddef.h>
#include <stdint.h>

#include "attention/fmm.h"

typedef struct fcase {
    int64_t S, L;
    int H, d, r;
    mpl_fmm_map maps[4];
    int causal;
    int64_t w;
    int fnorm, ratio;
    mpl_fmm_far_scale fscale;
    double theta;
    mpl_fmm_blend blend;
    int learn_b;
    int mask; /* 0 none; 1, 2: make_mask variants */
} fcase;

/* Random inputs and blend weights of a case. */
typedef struct fdata {
    double *qkv, *dout, *ba, *bb, *bal;
    uint8_t *mask;
    int64_t n_qkv, n_out, nb;
} fdata;

extern const fcase BASE; /* S=2 L=7 H=2 d=4 w=3 r=1 elu causal, default options */

double maxabs(const double *x, int64_t n);
mpl_attn_fmm_args case_args(const fcase *c, const uint8_t *mask);
void case_tag(const fcase *c, char *buf, size_t n);
void make_mask(uint8_t *m, int64_t S, int64_t T, int variant);
/* seeded inputs, blend weights, dout and the mask of a case */
fdata data_make(const fcase *c, uint64_t stream);
void data_free(fdata *x);
/* single rank: stats (bidirectional), forward; backward (+ stats backward) */
void full_forward_f64(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f64 bl, const double *qkv,
                      double *out, double *saved, double *stat);
void full_backward_f64(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f64 bl, const double *qkv,
                       const double *saved, const double *stat, const double *dout,
                       double *dqkv, mpl_attn_fmm_dblend_f64 dbl);
void full_forward_f32(const mpl_attn_fmm_args *a, mpl_attn_fmm_blend_f32 bl, const float *qkv,
                      float *out);

void test_attention_fmm_chunks(void **state);
void test_attention_fmm_stream(void **state);
void test_attention_fmm_ops(void **state);
void test_attention_fmm_registry_errors(void **state);
void test_attention_fmm_threads(void **state);
void test_attention_fmm_bench(void **state);
void test_attention_fmm_lanes(void **state);

#endif
