/* The attention probe of nan_probe.h: a pass-through mpl_attn that checks
 * activations for non-finite values when asked, and injects NaNs for tests. */
#include "nan_probe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"

struct mpl_nan_probe {
    mpl_attn inner;             /* owned */
    int64_t width;              /* H * d: columns of the attention output */
    int checking;
    int64_t first;              /* MPL_NAN_LOC_NONE or the earliest location */
    int64_t step;               /* the step being computed */
    /* injection: steps [lo, hi), block `layer`, forward or backward */
    int64_t inj_lo, inj_hi;
    int inj_layer, inj_grad, inj_here;
};

int mpl_nan_any(const float *x, int64_t n)
{
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
    for (int64_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
    return bad;
}

static void note(mpl_nan_probe *p, int64_t loc)
{
    if (loc < p->first) p->first = loc;
}

static int injecting(const mpl_nan_probe *p, int layer, int grad)
{
    return p->inj_here && layer == p->inj_layer && grad == p->inj_grad && p->step >= p->inj_lo &&
           p->step < p->inj_hi;
}

static mpl_status probe_declare(void *impl, int layer, const char *prefix, mpl_slab_layout *lay)
{
    mpl_nan_probe *p = impl;
    if (!p->inner.ops->declare_params) return MPL_OK;
    return p->inner.ops->declare_params(p->inner.impl, layer, prefix, lay);
}

static void probe_init(void *impl, int layer, float *params, uint64_t seed)
{
    mpl_nan_probe *p = impl;
    if (p->inner.ops->init_params) p->inner.ops->init_params(p->inner.impl, layer, params, seed);
}

static int64_t probe_saved(void *impl, const mpl_attn_geom *g)
{
    mpl_nan_probe *p = impl;
    return p->inner.ops->saved_elems(p->inner.impl, g);
}

static int64_t probe_work(void *impl, const mpl_attn_geom *g)
{
    mpl_nan_probe *p = impl;
    return p->inner.ops->work_bytes ? p->inner.ops->work_bytes(p->inner.impl, g) : 0;
}

static mpl_status probe_forward(void *impl, int layer, const mpl_attn_geom *g,
                                const float *params, const float *qkv, float *out, float *saved)
{
    mpl_nan_probe *p = impl;
    const int64_t n = g->n_seq * g->n_tok;
    if (p->checking && mpl_nan_any(qkv, n * 3 * p->width)) note(p, 2 * (int64_t)layer);
    MPL_CHECK(p->inner.ops->forward(p->inner.impl, layer, g, params, qkv, out, saved));
    if (injecting(p, layer, 0) && n > 0) out[0] = NAN;
    if (p->checking && mpl_nan_any(out, n * p->width)) note(p, 2 * (int64_t)layer + 1);
    return MPL_OK;
}

static mpl_status probe_backward(void *impl, int layer, const mpl_attn_geom *g,
                                 const float *params, const float *qkv, const float *saved,
                                 const float *dout, float *dqkv, float *dparams)
{
    mpl_nan_probe *p = impl;
    MPL_CHECK(p->inner.ops->backward(p->inner.impl, layer, g, params, qkv, saved, dout, dqkv,
                                     dparams));
    if (injecting(p, layer, 1) && g->n_seq * g->n_tok > 0) dqkv[0] = NAN;
    return MPL_OK;
}

static void probe_destroy(void **impl)
{
    if (!impl || !*impl) return;
    mpl_nan_probe *p = *impl;
    mpl_attn_destroy(&p->inner);
    free(p);
    *impl = NULL;
}

/* Piecewise evaluation passes through too, with the same checks on each
 * piece and the injection on the chunk's first piece (forward and its
 * replays alike, so a replay still equals the forward). */
static const mpl_attn_piece_ops *inner_pieces(const mpl_nan_probe *p)
{
    return p->inner.ops->pieces;
}

static int64_t probe_pc_state(void *impl, const mpl_attn_geom *g, int64_t piece_tokens)
{
    mpl_nan_probe *p = impl;
    return inner_pieces(p)->state_elems(p->inner.impl, g, piece_tokens);
}

static int64_t probe_pc_saved(void *impl, const mpl_attn_geom *g)
{
    mpl_nan_probe *p = impl;
    return inner_pieces(p)->saved_elems(p->inner.impl, g);
}

static int64_t probe_pc_work(void *impl, const mpl_attn_geom *g, int64_t piece_tokens)
{
    mpl_nan_probe *p = impl;
    const mpl_attn_piece_ops *po = inner_pieces(p);
    return po->work_bytes ? po->work_bytes(p->inner.impl, g, piece_tokens) : 0;
}

static int probe_pc_deferred(void *impl)
{
    mpl_nan_probe *p = impl;
    return inner_pieces(p)->deferred(p->inner.impl);
}

static mpl_status probe_pc_fbegin(void *impl, const mpl_attn_pieces *pc, const float *params)
{
    mpl_nan_probe *p = impl;
    return inner_pieces(p)->forward_begin(p->inner.impl, pc, params);
}

static int first_piece(const mpl_attn_piece *q) { return q->s0 == 0 && q->r0 == 0; }

static mpl_status probe_pc_forward(void *impl, const mpl_attn_pieces *pc, const mpl_attn_piece *q,
                                   int replay, const float *params, const float *qkv, float *out,
                                   float *saved)
{
    mpl_nan_probe *p = impl;
    const int64_t n = q->n_seq * q->n_tok;
    if (p->checking && mpl_nan_any(qkv, n * 3 * p->width)) note(p, 2 * (int64_t)pc->layer);
    MPL_CHECK(inner_pieces(p)->forward(p->inner.impl, pc, q, replay, params, qkv, out, saved));
    if (injecting(p, pc->layer, 0) && first_piece(q) && n > 0) out[0] = NAN;
    if (p->checking && mpl_nan_any(out, n * p->width)) note(p, 2 * (int64_t)pc->layer + 1);
    return MPL_OK;
}

static mpl_status probe_pc_bbegin(void *impl, const mpl_attn_pieces *pc)
{
    mpl_nan_probe *p = impl;
    return inner_pieces(p)->backward_begin(p->inner.impl, pc);
}

static mpl_status probe_pc_backward(void *impl, const mpl_attn_pieces *pc,
                                    const mpl_attn_piece *q, const float *params,
                                    const float *qkv, const float *saved, const float *dout,
                                    float *dqkv, float *dparams)
{
    mpl_nan_probe *p = impl;
    MPL_CHECK(inner_pieces(p)->backward(p->inner.impl, pc, q, params, qkv, saved, dout, dqkv,
                                        dparams));
    if (injecting(p, pc->layer, 1) && first_piece(q) && q->n_seq * q->n_tok > 0) dqkv[0] = NAN;
    return MPL_OK;
}

static mpl_status probe_pc_bend(void *impl, const mpl_attn_pieces *pc, const float *params)
{
    mpl_nan_probe *p = impl;
    return inner_pieces(p)->backward_end(p->inner.impl, pc, params);
}

static const mpl_attn_piece_ops probe_piece_ops = {
    .state_elems = probe_pc_state,
    .saved_elems = probe_pc_saved,
    .work_bytes = probe_pc_work,
    .deferred = probe_pc_deferred,
    .forward_begin = probe_pc_fbegin,
    .forward = probe_pc_forward,
    .backward_begin = probe_pc_bbegin,
    .backward = probe_pc_backward,
    .backward_end = probe_pc_bend,
};

/* No streaming form: the trainer never generates (sample builds its own
 * attention without a probe). Two tables: with the pieces of a mechanism
 * that has them, and without. */
static const mpl_attn_ops probe_ops_pieces = {
    .name = "probe",
    .declare_params = probe_declare,
    .init_params = probe_init,
    .saved_elems = probe_saved,
    .forward = probe_forward,
    .backward = probe_backward,
    .destroy = probe_destroy,
    .pieces = &probe_piece_ops,
    .work_bytes = probe_work,
};

static const mpl_attn_ops probe_ops = {
    .name = "probe",
    .declare_params = probe_declare,
    .init_params = probe_init,
    .saved_elems = probe_saved,
    .forward = probe_forward,
    .backward = probe_backward,
    .destroy = probe_destroy,
    .work_bytes = probe_work,
};

mpl_status mpl_nan_probe_wrap(mpl_attn *attn, const mpl_config *cfg, int world_rank,
                              mpl_nan_probe **probe)
{
    mpl_nan_probe *p;
    MPL_ALLOC(p, 1);
    p->inner = *attn;
    p->width = cfg->d_model;
    p->first = MPL_NAN_LOC_NONE;
    p->inj_lo = cfg->debug_nan_step;
    p->inj_hi = cfg->debug_nan_step > 0 ? cfg->debug_nan_step + cfg->debug_nan_steps : 0;
    p->inj_layer = (int)cfg->debug_nan_layer;
    p->inj_grad = (int)cfg->debug_nan_grad;
    p->inj_here = cfg->debug_nan_step > 0 &&
                  (cfg->debug_nan_rank < 0 || cfg->debug_nan_rank == world_rank);
    attn->ops = p->inner.ops->pieces ? &probe_ops_pieces : &probe_ops;
    attn->impl = p;
    *probe = p;
    return MPL_OK;
}

void mpl_nan_probe_set_step(mpl_nan_probe *p, int64_t step)
{
    if (p) p->step = step;
}

void mpl_nan_probe_check(mpl_nan_probe *p, int on)
{
    if (!p) return;
    p->checking = on;
    if (on) p->first = MPL_NAN_LOC_NONE;
}

int64_t mpl_nan_probe_first(const mpl_nan_probe *p) { return p ? p->first : MPL_NAN_LOC_NONE; }
