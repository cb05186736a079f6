/* The "fmm" entry of the attention registry: core/attn.h's table of
 * function pointers on the fp32 chunk functions of fmm.h, through
 * fmm_dist.c: split over an SP group, or on one rank (empty halos; causal:
 * zero prefix; bidirectional: the chunk's own stats are the total). Also the config check, the args builder and the
 * size helpers, which do not depend on the precision. Separate from the
 * templates so the numerics know nothing of the model's interface. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmm.h"
#include "fmm_dist.h"
#include "fmm_pieces.h"

typedef struct fmm_impl {
    mpl_attn_cfg cfg;    /* copied at create */
    struct mpl_comm *sp; /* borrowed; NULL: one rank */
    int64_t *off;        /* (cap, 3): slab offsets of blend_near, blend_far, blend_maps */
    int cap;
} fmm_impl;

typedef struct fmm_stream {
    int64_t n_seq, next_pos;
    float *state;        /* mpl_attn_fmm_stream_elems */
} fmm_stream;

mpl_attn_fmm_args mpl_attn_fmm_args_make(const mpl_attn_cfg *cfg, const mpl_attn_geom *g)
{
    mpl_attn_fmm_args a = {.n_seq = g->n_seq, .n_tok = g->n_tok, .pos0 = g->pos0,
                           .seq_len = cfg->seq_len, .n_head = cfg->n_head,
                           .head_dim = cfg->head_dim, .causal = cfg->causal,
                           .band = cfg->band, .rope_theta = cfg->rope_theta,
                           .n_maps = cfg->fmm_n_maps, .feature_norm = cfg->fmm_feature_norm,
                           .far_norm = cfg->fmm_far_norm, .far_scale = cfg->fmm_far_scale,
                           .eps = cfg->fmm_eps, .blend = cfg->fmm_blend,
                           .learn_far_weight = cfg->fmm_learn_far_weight, .mask = g->mask};
    for (int m = 0; m < MPL_FMM_MAX_MAPS; m++) a.maps[m] = cfg->fmm_maps[m];
    /* a window evaluated past seq_len (e.g. by a caller that leaves it 0)
     * is bounded by what it holds */
    if (a.seq_len < a.pos0 + a.n_tok) a.seq_len = a.pos0 + a.n_tok;
    return a;
}

mpl_status mpl_attn_fmm_cfg_check(const mpl_attn_cfg *cfg)
{
    if (cfg->band < 1)
        return mpl_err(MPL_ERR_ARG, "fmm: band=%lld must be >= 1", (long long)cfg->band);
    if (cfg->fmm_n_maps < 1 || cfg->fmm_n_maps > MPL_FMM_MAX_MAPS)
        return mpl_err(MPL_ERR_ARG, "fmm: fmm_n_maps=%d must be in 1..%d (fmm_maps)",
                       cfg->fmm_n_maps, MPL_FMM_MAX_MAPS);
    for (int m = 0; m < cfg->fmm_n_maps; m++)
        if ((int)cfg->fmm_maps[m] < 0 || cfg->fmm_maps[m] >= MPL_FMM_MAP_COUNT)
            return mpl_err(MPL_ERR_ARG, "fmm: fmm_maps[%d]=%d is not a known map", m,
                           (int)cfg->fmm_maps[m]);
    if (cfg->fmm_far_norm && !(cfg->fmm_eps > 0))
        return mpl_err(MPL_ERR_ARG, "fmm: fmm_eps=%g must be > 0 with fmm_far_norm=ratio",
                       cfg->fmm_eps);
    if ((int)cfg->fmm_far_scale < 0 || cfg->fmm_far_scale > MPL_FMM_FAR_SCALE_ONE)
        return mpl_err(MPL_ERR_ARG, "fmm: fmm_far_scale=%d is not a known scale",
                       (int)cfg->fmm_far_scale);
    if (cfg->fmm_far_scale == MPL_FMM_FAR_SCALE_INV_SQRT_N && cfg->seq_len < 1)
        return mpl_err(MPL_ERR_ARG, "fmm: fmm_far_scale=inv_sqrt_n needs seq_len >= 1, got %lld",
                       (long long)cfg->seq_len);
    if ((int)cfg->fmm_blend < 0 || cfg->fmm_blend > MPL_FMM_BLEND_LRA)
        return mpl_err(MPL_ERR_ARG, "fmm: fmm_blend=%d is not a known blend", (int)cfg->fmm_blend);
    if (cfg->rope_theta > 0 && cfg->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG, "fmm: RoPE (rope_theta=%g) needs an even head_dim, got %d",
                       cfg->rope_theta, cfg->head_dim);
    return MPL_OK;
}

int64_t mpl_attn_fmm_stat_elems(const mpl_attn_fmm_args *a)
{
    const int64_t d = a->head_dim;
    return a->n_seq * a->n_head * a->n_maps * (d * d + d);
}

int64_t mpl_attn_fmm_saved_elems(const mpl_attn_fmm_args *a)
{
    return a->n_seq * a->n_tok * a->n_head;
}

int64_t mpl_attn_fmm_stream_elems(const mpl_attn_fmm_args *a)
{
    const int64_t d = a->head_dim;
    return a->n_seq * a->n_head * (2 * (a->band - 1) * d + a->n_maps * (d * d + d));
}

static int64_t *fmm_offsets(fmm_impl *im, int layer)
{
    if (layer < 0) return NULL;
    if (layer >= im->cap) {
        const int cap = layer + 8;
        int64_t *p = realloc(im->off, (size_t)cap * 3 * sizeof *p);
        if (!p) return NULL;
        for (int64_t i = (int64_t)im->cap * 3; i < (int64_t)cap * 3; i++) p[i] = -1;
        im->off = p, im->cap = cap;
    }
    return im->off + (int64_t)layer * 3;
}

static mpl_status fmm_declare_params(void *impl, int layer, const char *prefix,
                                     mpl_slab_layout *lay)
{
    fmm_impl *im = impl;
    int64_t *off = fmm_offsets(im, layer);
    if (!off) return mpl_err(MPL_ERR_NOMEM, "fmm: no room for the offsets of layer %d", layer);
    const int lra = im->cfg.fmm_blend == MPL_FMM_BLEND_LRA;
    const int64_t shape[2] = {im->cfg.n_head, im->cfg.head_dim};
    const int ndim = lra ? 1 : 2;
    char name[256];
    snprintf(name, sizeof name, "%sblend_near", prefix);
    MPL_CHECK(mpl_slab_layout_add(lay, name, ndim, shape, 0, &off[0]));
    snprintf(name, sizeof name, "%sblend_far", prefix);
    MPL_CHECK(mpl_slab_layout_add(lay, name, ndim, shape, 0, &off[1]));
    if (lra) {
        const int64_t r = im->cfg.fmm_n_maps;
        snprintf(name, sizeof name, "%sblend_maps", prefix);
        MPL_CHECK(mpl_slab_layout_add(lay, name, 1, &r, 0, &off[2]));
    }
    return MPL_OK;
}

static void fmm_init_params(void *impl, int layer, float *params, uint64_t seed)
{
    (void)seed; /* deterministic constants from the config */
    fmm_impl *im = impl;
    if (layer < 0 || layer >= im->cap || im->off[layer * 3] < 0) return;
    const int64_t *off = im->off + (int64_t)layer * 3;
    const int lra = im->cfg.fmm_blend == MPL_FMM_BLEND_LRA;
    const int64_t n = lra ? im->cfg.n_head : (int64_t)im->cfg.n_head * im->cfg.head_dim;
    for (int64_t i = 0; i < n; i++) {
        params[off[0] + i] = (float)im->cfg.fmm_blend_near_init;
        params[off[1] + i] = (float)im->cfg.fmm_blend_far_init;
    }
    if (lra)
        for (int m = 0; m < im->cfg.fmm_n_maps; m++) params[off[2] + m] = m == 0 ? 1.0f : 0.0f;
}

static mpl_status fmm_blend_of(const fmm_impl *im, int layer, const float *params,
                               mpl_attn_fmm_blend_f32 *bl)
{
    if (layer < 0 || layer >= im->cap || im->off[layer * 3] < 0 || !params)
        return mpl_err(MPL_ERR_ARG, "fmm: layer %d has no declared parameters", layer);
    const int64_t *off = im->off + (int64_t)layer * 3;
    bl->a = params + off[0], bl->b = params + off[1];
    bl->alpha = off[2] >= 0 ? params + off[2] : NULL;
    return MPL_OK;
}

/* Forward and backward go through fmm_dist.c for one rank too (sp NULL:
 * the same arithmetic without messages), so the single-rank and the
 * distributed paths cannot drift apart. */
static int64_t fmm_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const fmm_impl *im = impl;
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&im->cfg, g);
    return mpl_attn_fmm_dist_saved_elems(&a, im->sp);
}

static mpl_status fmm_forward(void *impl, int layer, const mpl_attn_geom *g,
                              const float *params, const float *qkv, float *out, float *saved)
{
    const fmm_impl *im = impl;
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&im->cfg, g);
    mpl_attn_fmm_blend_f32 bl;
    MPL_CHECK(fmm_blend_of(im, layer, params, &bl));
    MPL_CHECK(mpl_attn_fmm_dist_forward(im->sp, &a, bl, qkv, out, saved));
    return MPL_OK;
}

static mpl_status fmm_backward(void *impl, int layer, const mpl_attn_geom *g,
                               const float *params, const float *qkv, const float *saved,
                               const float *dout, float *dqkv, float *dparams)
{
    const fmm_impl *im = impl;
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&im->cfg, g);
    mpl_attn_fmm_blend_f32 bl, gb;
    MPL_CHECK(fmm_blend_of(im, layer, params, &bl));
    mpl_attn_fmm_dblend_f32 dbl = {0};
    if (dparams) {
        MPL_CHECK(fmm_blend_of(im, layer, dparams, &gb));
        dbl = (mpl_attn_fmm_dblend_f32){(float *)gb.a, (float *)gb.b, (float *)gb.alpha};
    }
    MPL_CHECK(mpl_attn_fmm_dist_backward(im->sp, &a, bl, qkv, saved, dout, dqkv, dbl));
    return MPL_OK;
}

static void fmm_destroy(void **impl)
{
    if (!impl || !*impl) return;
    fmm_impl *im = *impl;
    free(im->off);
    free(im);
    *impl = NULL;
}

static mpl_status fmm_stream_create(void *impl, int layer, int64_t n_seq, void **state)
{
    const fmm_impl *im = impl;
    (void)layer;
    *state = NULL;
    if (!im->cfg.causal)
        return mpl_err(MPL_ERR_UNSUPPORTED, "fmm: streaming needs causal attention");
    const mpl_attn_geom g = {.n_seq = n_seq, .n_tok = 1};
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&im->cfg, &g);
    fmm_stream *sm = NULL;
    MPL_ALLOC(sm, 1);
    sm->n_seq = n_seq;
    sm->state = calloc((size_t)mpl_attn_fmm_stream_elems(&a) + 1, sizeof *sm->state);
    if (!sm->state) {
        free(sm);
        return mpl_err(MPL_ERR_NOMEM, "fmm: out of memory for the stream state");
    }
    *state = sm;
    return MPL_OK;
}

static mpl_status fmm_stream_step(void *impl, int layer, void *state, const float *params,
                                  int64_t pos, const float *qkv_row, float *out_row)
{
    const fmm_impl *im = impl;
    fmm_stream *sm = state;
    if (pos != sm->next_pos)
        return mpl_err(MPL_ERR_ARG, "fmm: stream expects position %lld, got pos=%lld",
                       (long long)sm->next_pos, (long long)pos);
    mpl_attn_fmm_blend_f32 bl;
    MPL_CHECK(fmm_blend_of(im, layer, params, &bl));
    const mpl_attn_geom g = {.n_seq = sm->n_seq, .n_tok = 1, .pos0 = pos};
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&im->cfg, &g);
    MPL_CHECK(mpl_attn_fmm_stream_step_f32(&a, bl, sm->state, pos, qkv_row, out_row));
    sm->next_pos++;
    return MPL_OK;
}

static void fmm_stream_destroy(void **state)
{
    if (!state || !*state) return;
    fmm_stream *sm = *state;
    free(sm->state);
    free(sm);
    *state = NULL;
}

/* Piecewise evaluation (fmm_pieces.h). */
static int64_t fmm_pieces_state_elems(void *impl, const mpl_attn_geom *g, int64_t piece_tokens)
{
    const fmm_impl *im = impl;
    return mpl_attn_fmm_pieces_state_elems(&im->cfg, im->sp, g, piece_tokens);
}

static int64_t fmm_piece_saved_elems(void *impl, const mpl_attn_geom *g)
{
    const fmm_impl *im = impl;
    const mpl_attn_fmm_args a = mpl_attn_fmm_args_make(&im->cfg, g);
    return mpl_attn_fmm_saved_elems(&a);
}

static int64_t fmm_pieces_work_bytes(void *impl, const mpl_attn_geom *g, int64_t piece_tokens)
{
    const fmm_impl *im = impl;
    return mpl_attn_fmm_pieces_work_bytes(&im->cfg, im->sp, g, piece_tokens);
}

static int fmm_pieces_deferred(void *impl)
{
    const fmm_impl *im = impl;
    return mpl_attn_fmm_pieces_deferred(&im->cfg, im->sp);
}

static mpl_status fmm_pieces_forward_begin(void *impl, const mpl_attn_pieces *pc,
                                           const float *params)
{
    (void)params;
    fmm_impl *im = impl;
    return mpl_attn_fmm_pieces_forward_begin(&im->cfg, im->sp, pc);
}

static mpl_status fmm_piece_forward(void *impl, const mpl_attn_pieces *pc,
                                    const mpl_attn_piece *p, int replay, const float *params,
                                    const float *qkv, float *out, float *saved)
{
    const fmm_impl *im = impl;
    mpl_attn_fmm_blend_f32 bl;
    MPL_CHECK(fmm_blend_of(im, pc->layer, params, &bl));
    return mpl_attn_fmm_pieces_forward(&im->cfg, im->sp, pc, p, replay, bl, qkv, out, saved);
}

static mpl_status fmm_pieces_backward_begin(void *impl, const mpl_attn_pieces *pc)
{
    const fmm_impl *im = impl;
    return mpl_attn_fmm_pieces_backward_begin(&im->cfg, im->sp, pc);
}

static mpl_status fmm_piece_backward(void *impl, const mpl_attn_pieces *pc,
                                     const mpl_attn_piece *p, const float *params,
                                     const float *qkv, const float *saved, const float *dout,
                                     float *dqkv, float *dparams)
{
    const fmm_impl *im = impl;
    mpl_attn_fmm_blend_f32 bl, gb;
    MPL_CHECK(fmm_blend_of(im, pc->layer, params, &bl));
    mpl_attn_fmm_dblend_f32 dbl = {0};
    if (dparams) {
        MPL_CHECK(fmm_blend_of(im, pc->layer, dparams, &gb));
        dbl = (mpl_attn_fmm_dblend_f32){(float *)gb.a, (float *)gb.b, (float *)gb.alpha};
    }
    return mpl_attn_fmm_pieces_backward(&im->cfg, im->sp, pc, p, bl, qkv, saved, dout, dqkv,
                                        dbl);
}

static mpl_status fmm_pieces_backward_end(void *impl, const mpl_attn_pieces *pc,
                                          const float *params)
{
    (void)params;
    fmm_impl *im = impl;
    return mpl_attn_fmm_pieces_backward_end(&im->cfg, im->sp, pc);
}

static const mpl_attn_piece_ops fmm_piece_ops = {
    .state_elems = fmm_pieces_state_elems,
    .saved_elems = fmm_piece_saved_elems,
    .work_bytes = fmm_pieces_work_bytes,
    .deferred = fmm_pieces_deferred,
    .forward_begin = fmm_pieces_forward_begin,
    .forward = fmm_piece_forward,
    .backward_begin = fmm_pieces_backward_begin,
    .backward = fmm_piece_backward,
    .backward_end = fmm_pieces_backward_end,
};

static const mpl_attn_ops fmm_ops = {
    .name = "fmm",
    .declare_params = fmm_declare_params,
    .init_params = fmm_init_params,
    .saved_elems = fmm_saved_elems,
    .forward = fmm_forward,
    .backward = fmm_backward,
    .destroy = fmm_destroy,
    .stream_create = fmm_stream_create,
    .stream_step = fmm_stream_step,
    .stream_destroy = fmm_stream_destroy,
    .pieces = &fmm_piece_ops,
};

mpl_status mpl_attn_fmm_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp, mpl_attn *out)
{
    MPL_CHECK(mpl_attn_fmm_cfg_check(cfg));
    fmm_impl *im = NULL;
    MPL_ALLOC(im, 1);
    im->cfg = *cfg;
    im->sp = sp;
    out->ops = &fmm_ops;
    out->impl = im;
    return MPL_OK;
}
