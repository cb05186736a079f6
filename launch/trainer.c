/* The training step shared by `train` and `bench step`. */
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"

void mpl_trainer_attn_cfg(const mpl_config *cfg, mpl_attn_cfg *a)
{
    memset(a, 0, sizeof *a);
    mpl_status st = mpl_attn_kind_parse(cfg->attn, &a->kind);
    MPL_ASSERT(st == MPL_OK); /* the config table only admits known kinds */
    a->causal = (int)cfg->causal;
    a->n_head = (int)cfg->n_head;
    a->head_dim = (int)(cfg->d_model / cfg->n_head);
    a->seq_len = cfg->seq_len;
    a->rope_theta = cfg->rope_theta;
    a->band = cfg->band;
    a->segment = cfg->segment > 0 ? cfg->segment : (int64_t)llround(sqrt((double)cfg->seq_len));
    if (a->segment < 1) a->segment = 1;
    st = mpl_attn_fmm_maps_parse(cfg->fmm_maps, a);
    MPL_ASSERT(st == MPL_OK); /* validated with the config */
    a->fmm_feature_norm = strcmp(cfg->fmm_feature_norm, "sum") == 0;
    a->fmm_far_norm = strcmp(cfg->fmm_far_norm, "ratio") == 0;
    a->fmm_far_scale = !strcmp(cfg->fmm_far_scale, "inv_sqrt_n") ? MPL_FMM_FAR_SCALE_INV_SQRT_N
                     : !strcmp(cfg->fmm_far_scale, "one")        ? MPL_FMM_FAR_SCALE_ONE
                                                                 : MPL_FMM_FAR_SCALE_INV_SQRT_D;
    a->fmm_eps = cfg->fmm_eps;
    a->fmm_blend = strcmp(cfg->fmm_blend, "lra") == 0 ? MPL_FMM_BLEND_LRA : MPL_FMM_BLEND_CHANNEL;
    st = mpl_config_blend_init(cfg, &a->fmm_blend_near_init, &a->fmm_blend_far_init);
    MPL_ASSERT(st == MPL_OK);
    a->fmm_learn_far_weight = (int)cfg->fmm_learn_far_weight;
}

void mpl_trainer_model_cfg(const mpl_config *cfg, mpl_model_cfg *m)
{
    memset(m, 0, sizeof *m);
    m->vocab_size = cfg->vocab_size;
    m->d_model = cfg->d_model;
    m->n_layer = cfg->n_layer;
    m->n_head = cfg->n_head;
    m->mlp_mult = cfg->mlp_mult;
    m->norm_eps = cfg->norm_eps;
    m->recompute = !strcmp(cfg->recompute, "layer") ? MPL_RECOMPUTE_LAYER
                 : !strcmp(cfg->recompute, "attn")  ? MPL_RECOMPUTE_ATTN
                                                    : MPL_RECOMPUTE_NONE;
    m->piece_tokens = cfg->chunk_tokens;
}

mpl_status mpl_trainer_create(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out)
{
    mpl_status st = MPL_OK;
    *out = NULL;
    mpl_trainer *t;
    MPL_ALLOC(t, 1);
    t->cfg = *cfg;
    t->world = world;
    if (strcmp(cfg->device, "cpu") != 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_UNSUPPORTED,
                      "device=%s: this build has no CUDA backend (use device=cpu)", cfg->device);
    if (cfg->sp > 1 && strcmp(cfg->attn, "dense") == 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_CONFIG,
                      "attn=dense is the single-rank oracle: sp=%lld needs attn=fmm, "
                      "combiner_fixed or combiner_logsparse", (long long)cfg->sp);
    MPL_CHECK_GOTO(mpl_grid_create(world, (int)cfg->sp, (int)cfg->dp, &t->grid), fail);
    t->sp = t->grid->sp_size;
    t->dp = t->grid->dp_size;
    t->sp_rank = t->grid->sp_rank;
    t->dp_rank = t->grid->dp_rank;
    mpl_grid_chunk(cfg->seq_len, t->sp, t->sp_rank, &t->chunk_a, &t->chunk_b);

    mpl_attn_cfg acfg;
    mpl_model_cfg mcfg;
    mpl_trainer_attn_cfg(cfg, &acfg);
    mpl_trainer_model_cfg(cfg, &mcfg);
    MPL_CHECK_GOTO(mpl_attn_create(&acfg, t->sp > 1 ? t->grid->sp : NULL, &t->attn), fail);
    MPL_CHECK_GOTO(mpl_model_create(&mcfg, &t->attn, &t->model), fail);
    MPL_CHECK_GOTO(mpl_model_reserve(t->model, cfg->batch, t->chunk_b - t->chunk_a), fail);
    mpl_model_init_params(t->model, (uint64_t)cfg->seed);
    int64_t n_elems = mpl_model_layout(t->model)->n_elems;
    MPL_CHECK_GOTO(mpl_slab_alloc(n_elems, &t->m), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(n_elems, &t->v), fail);
    *out = t;
    return MPL_OK;
fail:
    mpl_trainer_destroy(&t);
    return st;
}

void mpl_trainer_destroy(mpl_trainer **tp)
{
    if (!tp || !*tp) return;
    mpl_trainer *t = *tp;
    mpl_model_destroy(&t->model);
    mpl_attn_destroy(&t->attn);
    mpl_grid_destroy(&t->grid);
    mpl_slab_free(&t->m);
    mpl_slab_free(&t->v);
    free(t);
    *tp = NULL;
}

mpl_status mpl_trainer_step(mpl_trainer *t, const int32_t *tokens, const int32_t *targets,
                            mpl_step_stats *stats)
{
    const mpl_config *c = &t->cfg;
    mpl_attn_geom g = {c->batch, t->chunk_b - t->chunk_a, t->chunk_a, NULL};
    double loss_sum = 0;
    int64_t n_counted = 0;
    mpl_status st = mpl_model_forward(t->model, &g, tokens, targets, &loss_sum, &n_counted);
    /* Every rank must learn of a failure before the next collective. */
    MPL_CHECK(mpl_comm_agree(t->world, &st));
    /* The loss is normalised by the global token count (all SP chunks of
     * all DP groups), so the gradients summed over the world equal those of
     * one rank holding the whole global batch. */
    double tot[2] = {loss_sum, (double)n_counted};
    MPL_CHECK(mpl_comm_allreduce_sum_f64(t->world, tot, 2));
    if (tot[1] < 1) return mpl_err(MPL_ERR_ARG, "the global batch has no target tokens");
    mpl_model_zero_grad(t->model);
    st = mpl_model_backward(t->model, 1.0 / tot[1]);
    MPL_CHECK(mpl_comm_agree(t->world, &st));
    const mpl_slab_layout *lay = mpl_model_layout(t->model);
    float *grads = mpl_model_grads(t->model);
    MPL_CHECK(mpl_comm_allreduce_sum_f32(t->world, grads, lay->n_elems));
    double norm = sqrt(mpl_sumsq(grads, lay->n_elems));
    if (!isfinite(norm) || !isfinite(tot[0]))
        return mpl_err(MPL_ERR_NUMERIC, "step %lld: non-finite loss %g or gradient norm %g",
                       (long long)(t->step + 1), tot[0] / tot[1], norm);
    if (c->grad_clip > 0 && norm > c->grad_clip) mpl_scale(grads, lay->n_elems, c->grad_clip / norm);
    t->step++;
    double lr = mpl_lr_at(t->step, c->warmup, c->steps, c->lr, c->min_lr);
    mpl_adamw_hparams hp = {c->beta1, c->beta2, c->adam_eps, c->weight_decay};
    mpl_adamw_update(lay, mpl_model_params(t->model), grads, t->m, t->v, t->step, lr, &hp);
    if (stats) {
        stats->loss = tot[0] / tot[1];
        stats->grad_norm = norm;
        stats->lr = lr;
        stats->n_tokens = (int64_t)tot[1];
    }
    return MPL_OK;
}
