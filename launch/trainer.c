/* The training step shared by `train` and `bench step`. */
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "core/trace.h"

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
    a->plan_sp = (int)cfg->sp;
}

void mpl_trainer_model_cfg(const mpl_config *cfg, mpl_model_cfg *m)
{
    memset(m, 0, sizeof *m);
    m->vocab_size = cfg->vocab_size;
    m->d_model = cfg->d_model;
    m->n_layer = cfg->n_layer;
    m->n_head = cfg->n_head;
    m->mlp_mult = cfg->mlp_mult;
    m->n_pos = cfg->n_pos;
    m->norm_eps = cfg->norm_eps;
    m->recompute = !strcmp(cfg->recompute, "layer") ? MPL_RECOMPUTE_LAYER
                 : !strcmp(cfg->recompute, "attn")  ? MPL_RECOMPUTE_ATTN
                                                    : MPL_RECOMPUTE_NONE;
    m->piece_tokens = cfg->chunk_tokens;
    /* a classifier (head_owner and reduce are the trainer's, per rank) */
    m->n_classes = !strcmp(cfg->task, "classify") ? cfg->n_classes : 0;
}

mpl_status mpl_trainer_model_standalone(const mpl_config *cfg, mpl_attn *attn, mpl_model **m)
{
    mpl_attn_cfg acfg;
    mpl_model_cfg mcfg;
    mpl_trainer_attn_cfg(cfg, &acfg);
    mpl_trainer_model_cfg(cfg, &mcfg);
    *m = NULL;
    MPL_CHECK(mpl_attn_create(&acfg, NULL, attn));
    return mpl_model_create(&mcfg, attn, m);
}

/* Collective on world: the GPU of this rank. One GPU, one rank in this
 * version (sp > 1 and data parallelism on GPUs come with the NCCL path). */
static mpl_status select_gpu(const mpl_config *cfg, mpl_comm *world, mpl_cuda **out)
{
    *out = NULL;
    if (mpl_comm_size(world) > 1 || cfg->sp > 1)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "device=cuda trains on one GPU with one rank in this version: %d ranks "
                       "(sp=%lld) need the multi-GPU path, which is not implemented yet",
                       mpl_comm_size(world), (long long)cfg->sp);
    int node_rank = 0, node_n = 1, n_gpu = 0;
    MPL_CHECK(mpl_comm_node_rank(world, &node_rank, &node_n));
    MPL_CHECK(mpl_cuda_device_count(&n_gpu));
    const int dev = cfg->cuda_device >= 0 ? (int)cfg->cuda_device : node_rank;
    if (dev >= n_gpu)
        return mpl_err(MPL_ERR_CONFIG,
                       cfg->cuda_device >= 0
                           ? "cuda_device=%d but this process sees %d GPU(s)"
                           : "rank %d of its node has no GPU of its own: the node shows %d GPU(s)",
                       dev, n_gpu);
    MPL_CHECK(mpl_cuda_create(dev, out));
    return MPL_OK;
}

/* Local. The memory a device rank may use: mem_limit, or the GPU's free
 * memory before the model was allocated. */
static void device_budget(const mpl_config *cfg, int64_t free_bytes, mpl_cuda *cu, mpl_plan *p)
{
    if (cfg->mem_limit > 0) {
        p->budget = (int64_t)(cfg->mem_limit * (double)(1LL << 30));
        snprintf(p->budget_src, sizeof p->budget_src, "mem_limit = %g GiB", cfg->mem_limit);
        return;
    }
    p->budget = free_bytes;
    snprintf(p->budget_src, sizeof p->budget_src, "free memory of GPU %d (%s)", mpl_cuda_device(cu),
             mpl_cuda_device_name(cu));
}

/* The classifier's pooling sums over the SP group. */
static mpl_status reduce_sp(void *user, double *buf, int64_t n)
{
    mpl_trainer *t = user;
    return mpl_comm_allreduce_sum_f64(t->grid->sp, buf, n);
}

static mpl_status trainer_create(const mpl_config *cfg, mpl_comm *world, int optim,
                                 mpl_trainer **out)
{
    mpl_status st = MPL_OK;
    *out = NULL;
    mpl_trainer *t;
    MPL_ALLOC(t, 1);
    t->cfg = *cfg;
    t->world = world;
    t->rss_start = mpl_plan_rss_now();
    const int cuda = strcmp(cfg->device, "cuda") == 0;
    if (strcmp(cfg->offload, "none") != 0 && cuda)
        MPL_FAIL_GOTO(fail, MPL_ERR_UNSUPPORTED,
                      "offload=%s is not implemented yet with device=cuda (use offload=none)",
                      cfg->offload);
    if (strcmp(cfg->offload, "none") != 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_CONFIG,
                      "offload=%s moves the saved block inputs from GPU memory to host memory; "
                      "with device=cpu they are in host memory already (use offload=none)",
                      cfg->offload);
    if (cuda) MPL_CHECK_GOTO(select_gpu(cfg, world, &t->cuda), fail);
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
    int64_t gpu_free = 0, gpu_total = 0;
    if (t->cuda) {
        acfg.device = mcfg.device = MPL_DEVICE_CUDA;
        acfg.cuda = mcfg.cuda = t->cuda;
        MPL_CHECK_GOTO(mpl_cuda_mem_info(t->cuda, &gpu_free, &gpu_total), fail);
    }
    if (mcfg.n_classes > 0) {
        if (mcfg.n_classes < 2)
            MPL_FAIL_GOTO(fail, MPL_ERR_CONFIG, "task=classify: n_classes=%lld (set it, or let "
                          "the data file give it)", (long long)mcfg.n_classes);
        /* SP rank 0 reports each sequence's loss and owns the head's gradient */
        mcfg.head_owner = t->sp_rank == 0;
        t->reduce = (mpl_model_reduce){t, reduce_sp};
        mcfg.reduce = t->sp > 1 ? &t->reduce : NULL;
    }
    MPL_CHECK_GOTO(mpl_attn_create(&acfg, t->sp > 1 ? t->grid->sp : NULL, &t->attn), fail);
    /* The probe reads activations on the host: CPU models only. */
    if (t->cuda && cfg->debug_nan_step > 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_UNSUPPORTED, "debug_nan_step: injecting non-finite values "
                      "works with device=cpu only");
    if (!t->cuda)
        MPL_CHECK_GOTO(mpl_nan_probe_wrap(&t->attn, cfg, mpl_comm_rank(world), &t->probe), fail);
    MPL_CHECK_GOTO(mpl_model_create(&mcfg, &t->attn, &t->model), fail);
    /* ZeRO-1: DP rank d keeps the AdamW state of block d of the slab (an
     * even split; the SP ranks of a DP group keep the same block). */
    const int64_t n_elems = mpl_model_layout(t->model)->n_elems;
    t->zero = optim && cfg->zero && t->dp > 1;
    t->shard_lo = 0, t->shard_hi = n_elems;
    if (t->zero) {
        t->shard_counts = calloc((size_t)t->dp, sizeof *t->shard_counts);
        if (!t->shard_counts) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory for shard counts");
        for (int d = 0; d < t->dp; d++) {
            int64_t lo, hi;
            mpl_grid_chunk(n_elems, t->dp, d, &lo, &hi);
            t->shard_counts[d] = hi - lo;
        }
        mpl_grid_chunk(n_elems, t->dp, t->dp_rank, &t->shard_lo, &t->shard_hi);
    }
    if (optim && !t->zero && !t->cuda && cfg->grad_overlap && mpl_comm_size(world) > 1)
        MPL_CHECK_GOTO(mpl_comm_reqs_create(&t->grad_reqs), fail);
    /* The plan of the largest chunk (rank 0's), so all ranks agree. */
    mpl_config pcfg = *cfg;
    if (!optim) pcfg.zero = 0;
    int node_ranks = 1;
    int64_t lo0, hi0, longest;
    mpl_grid_chunk(cfg->seq_len, t->sp, 0, &lo0, &hi0);
    MPL_CHECK_GOTO(mpl_comm_node_size(world, &node_ranks), fail);
    st = mpl_plan_make(&pcfg, t->model, mpl_comm_size(world), t->dp, hi0 - lo0, &t->plan);
    if (st == MPL_OK && !optim) t->plan.total -= t->plan.optim, t->plan.optim = 0;
    if (st == MPL_OK && t->cuda) device_budget(cfg, gpu_free, t->cuda, &t->plan);
    else if (st == MPL_OK)
        st = mpl_plan_budget(cfg, node_ranks, &t->plan.budget, t->plan.budget_src,
                             sizeof t->plan.budget_src);
    if (st == MPL_OK)
        st = mpl_plan_check(&pcfg, t->model, mpl_comm_size(world), t->sp, t->dp, &t->plan,
                            &longest);
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), fail);
    MPL_CHECK_GOTO(mpl_model_reserve(t->model, cfg->batch, t->chunk_b - t->chunk_a), fail);
    MPL_CHECK_GOTO(mpl_model_init_params(t->model, (uint64_t)cfg->seed), fail);
    if (t->cuda && optim) {
        MPL_CHECK_GOTO(mpl_optim_dev_create(t->model, &t->optim), fail);
    } else if (optim) {
        MPL_CHECK_GOTO(mpl_slab_alloc(t->shard_hi - t->shard_lo, &t->m), fail);
        MPL_CHECK_GOTO(mpl_slab_alloc(t->shard_hi - t->shard_lo, &t->v), fail);
    }
    *out = t;
    return MPL_OK;
fail:
    mpl_trainer_destroy(&t);
    return st;
}

mpl_status mpl_trainer_create(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out)
{
    return trainer_create(cfg, world, 1, out);
}

mpl_status mpl_trainer_create_eval(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out)
{
    return trainer_create(cfg, world, 0, out);
}

void mpl_trainer_destroy(mpl_trainer **tp)
{
    if (!tp || !*tp) return;
    mpl_trainer *t = *tp;
    mpl_optim_dev_destroy(&t->optim);
    mpl_model_destroy(&t->model);
    mpl_attn_destroy(&t->attn);
    mpl_cuda_destroy(&t->cuda); /* after everything that lives on it */
    mpl_grid_destroy(&t->grid);
    mpl_slab_free(&t->m);
    mpl_slab_free(&t->v);
    free(t->shard_counts);
    mpl_comm_reqs_destroy(&t->grad_reqs); /* empty: every step waits for its buckets */
    free(t);
    *tp = NULL;
}

/* The step on the GPU (one rank): the loss stays on the device until the
 * optimizer step brings it back with the norm; a non-finite one has left
 * the model untouched there (a bad step, counted as on the CPU). */
static mpl_status step_device(mpl_trainer *t, const int32_t *tokens, const int32_t *targets,
                              mpl_step_stats *stats)
{
    const mpl_config *c = &t->cfg;
    if (!t->optim) return mpl_err(MPL_ERR_ARG, "trainer made for evaluation cannot step");
    mpl_attn_geom g = {c->batch, t->chunk_b - t->chunk_a, t->chunk_a, NULL};
    int64_t n_counted = 0;
    MPL_CHECK(mpl_model_forward(t->model, &g, tokens, targets, NULL, &n_counted));
    if (n_counted < 1) return mpl_err(MPL_ERR_ARG, "the global batch has no target tokens");
    MPL_CHECK(mpl_model_zero_grad(t->model));
    MPL_CHECK(mpl_model_backward(t->model, 1.0 / (double)n_counted));
    t->step++;
    const double lr = mpl_lr_at(t->step, c->warmup, c->steps, c->lr, c->min_lr);
    const mpl_adamw_hparams hp = {c->beta1, c->beta2, c->adam_eps, c->weight_decay};
    double loss_sum = 0, norm = 0;
    MPL_CHECK(mpl_optim_dev_step(t->optim, t->step, lr, &hp, c->grad_clip, &loss_sum, &norm));
    if (stats) {
        stats->loss = loss_sum / (double)n_counted;
        stats->grad_norm = norm;
        stats->lr = lr;
        stats->n_tokens = n_counted;
        stats->bad = !isfinite(norm) || !isfinite(loss_sum);
    }
    return MPL_OK;
}

/* Gradient buckets all-reduced over the world while the backward goes on
 * (grad_overlap = 1): each range the model reports final is posted as a
 * nonblocking all-reduce, and the pending ones are given a chance to move
 * (MPI progresses them only inside MPI calls) each time a block is done. */
typedef struct grad_buckets {
    mpl_comm *world;
    float *grads;
    mpl_comm_reqs *reqs;
    int64_t posted; /* floats */
} grad_buckets;

static mpl_status post_bucket(void *ctx, int64_t offset, int64_t n)
{
    grad_buckets *b = ctx;
    if (n <= 0) return MPL_OK;
    MPL_CHECK(mpl_comm_iallreduce_f32(b->world, b->grads + offset, n, MPL_COMM_OP_SUM, b->reqs));
    b->posted += n;
    return mpl_comm_progress(b->reqs);
}

static mpl_status step_body(mpl_trainer *t, const mpl_attn_geom g, const int32_t *tokens,
                            const int32_t *targets, mpl_step_stats *stats)
{
    if (t->cuda) return step_device(t, tokens, targets, stats);
    const mpl_config *c = &t->cfg;
    if (!t->m) return mpl_err(MPL_ERR_ARG, "trainer made for evaluation cannot step");
    double loss_sum = 0;
    int64_t n_counted = 0;
    mpl_nan_probe_set_step(t->probe, t->step + 1);
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
    const mpl_slab_layout *lay = mpl_model_layout(t->model);
    float *grads = mpl_model_grads(t->model), *params = mpl_model_params(t->model);
    /* A backward that fails on one rank leaves the others' posted buckets
     * (and, at sp > 1, its exchanges) unmatched: like any collective
     * failure mid-backward it ends the job, reported by the failing rank. */
    grad_buckets gb = {t->world, grads, t->grad_reqs, 0};
    if (t->grad_reqs) mpl_model_set_grad_ready(t->model, post_bucket, &gb);
    st = mpl_model_backward(t->model, 1.0 / tot[1]);
    mpl_model_set_grad_ready(t->model, NULL, NULL);
    if (t->grad_reqs) {
        mpl_status wst = mpl_comm_waitall(t->grad_reqs);
        if (st == MPL_OK) st = wst;
        if (st == MPL_OK && gb.posted != lay->n_elems)
            st = mpl_err(MPL_ERR_INTERNAL, "gradient buckets cover %lld of %lld floats",
                         (long long)gb.posted, (long long)lay->n_elems);
    }
    MPL_CHECK(mpl_comm_agree(t->world, &st));
    /* The gradients summed over the world: in one all-reduce, or under
     * ZeRO-1 over the SP group and then reduced onto each DP rank's shard. */
    const int64_t lo = t->shard_lo, n_shard = t->shard_hi - t->shard_lo;
    double norm2;
    if (t->zero) {
        if (t->sp > 1) MPL_CHECK(mpl_comm_allreduce_sum_f32(t->grid->sp, grads, lay->n_elems));
        MPL_CHECK(mpl_comm_reduce_scatter_sum_f32(t->grid->dp, grads, t->shard_counts));
        norm2 = mpl_sumsq(grads + lo, n_shard);
        MPL_CHECK(mpl_comm_allreduce_sum_f64(t->grid->dp, &norm2, 1));
    } else {
        if (!t->grad_reqs) MPL_CHECK(mpl_comm_allreduce_sum_f32(t->world, grads, lay->n_elems));
        norm2 = mpl_sumsq(grads, lay->n_elems);
    }
    const double norm = sqrt(norm2);
    /* The sums above already spread a NaN to every rank; agreeing on the
     * flag explicitly makes the decision identical even where reductions
     * round differently (an overflow to inf on one rank only). */
    int64_t bad = !isfinite(norm) || !isfinite(tot[0]);
    MPL_CHECK(mpl_comm_allreduce_max_i64(t->world, &bad, 1));
    t->step++;
    double lr = mpl_lr_at(t->step, c->warmup, c->steps, c->lr, c->min_lr);
    if (!bad) {
        if (c->grad_clip > 0 && norm > c->grad_clip)
            mpl_scale(grads + lo, n_shard, c->grad_clip / norm);
        mpl_adamw_hparams hp = {c->beta1, c->beta2, c->adam_eps, c->weight_decay};
        const double t0 = mpl_trace_now();
        mpl_adamw_update_range(lay, params, grads, t->m, t->v, lo, lo + n_shard, t->step, lr, &hp);
        mpl_trace_span(t0, "optimizer", -1, "compute", MPL_TRACE_MAIN);
        /* every DP rank's updated block to the others */
        if (t->zero) MPL_CHECK(mpl_comm_allgatherv_f32(t->grid->dp, params, t->shard_counts));
    }
    if (stats) {
        stats->loss = tot[0] / tot[1];
        stats->grad_norm = norm;
        stats->lr = lr;
        stats->n_tokens = (int64_t)tot[1];
        stats->bad = (int)bad;
    }
    return MPL_OK;
}

/* Collective on world: step_body, a span of the trace. */
static mpl_status trainer_step(mpl_trainer *t, const mpl_attn_geom g, const int32_t *tokens,
                               const int32_t *targets, mpl_step_stats *stats)
{
    const double t0 = mpl_trace_now();
    MPL_CHECK(step_body(t, g, tokens, targets, stats));
    mpl_trace_span(t0, "step", (int)t->step, "compute", MPL_TRACE_MAIN);
    return MPL_OK;
}

mpl_status mpl_trainer_step(mpl_trainer *t, const int32_t *tokens, const int32_t *targets,
                            mpl_step_stats *stats)
{
    const mpl_attn_geom g = {t->cfg.batch, t->chunk_b - t->chunk_a, t->chunk_a, NULL};
    return trainer_step(t, g, tokens, targets, stats);
}

mpl_status mpl_trainer_step_cls(mpl_trainer *t, const int32_t *tokens, const uint8_t *mask,
                                const int32_t *labels, mpl_step_stats *stats)
{
    if (mpl_model_config(t->model)->n_classes < 1)
        return mpl_err(MPL_ERR_ARG, "a classification step for a language model (task=%s)",
                       t->cfg.task);
    const mpl_attn_geom g = {t->cfg.batch, t->chunk_b - t->chunk_a, t->chunk_a, mask};
    return trainer_step(t, g, tokens, labels, stats);
}

/* The first tensor of lay (in order, or reversed) with a non-finite
 * element of x inside [lo, hi), or -1. */
static int first_bad_tensor(const mpl_slab_layout *lay, const float *x, int reverse, int64_t lo,
                            int64_t hi)
{
    for (int i = 0; i < lay->n_tensors; i++) {
        int k = reverse ? lay->n_tensors - 1 - i : i;
        const int64_t a = lay->t[k].offset > lo ? lay->t[k].offset : lo;
        const int64_t e = lay->t[k].offset + lay->t[k].n_elems;
        const int64_t b = e < hi ? e : hi;
        if (a < b && mpl_nan_any(x + a, b - a)) return k;
    }
    return -1;
}

mpl_status mpl_trainer_locate_nonfinite(mpl_trainer *t, const int32_t *tokens,
                                        const int32_t *targets, char *buf, size_t n)
{
    const mpl_config *c = &t->cfg;
    if (t->cuda) {
        snprintf(buf, n, "somewhere on the GPU (device=cuda does not locate non-finite values "
                 "in this version; rerun the step with device=cpu to find the layer)");
        return MPL_OK;
    }
    const mpl_slab_layout *lay = mpl_model_layout(t->model);
    const int64_t n_layer = c->n_layer;
    /* Parameters are replicated: every rank finds the same tensor. */
    int k = first_bad_tensor(lay, mpl_model_params(t->model), 0, 0, lay->n_elems);
    if (k >= 0) {
        snprintf(buf, n, "the parameter %s is not finite (the run started from it: a bad "
                 "checkpoint?)", lay->t[k].name);
        return MPL_OK;
    }
    mpl_attn_geom g = {c->batch, t->chunk_b - t->chunk_a, t->chunk_a, NULL};
    double loss_sum = 0;
    int64_t n_counted = 0;
    mpl_nan_probe_set_step(t->probe, t->step); /* the step just taken */
    mpl_nan_probe_check(t->probe, 1);
    mpl_status st = mpl_model_forward(t->model, &g, tokens, targets, &loss_sum, &n_counted);
    mpl_nan_probe_check(t->probe, 0);
    MPL_CHECK(mpl_comm_agree(t->world, &st));
    int64_t loc = mpl_nan_probe_first(t->probe);
    const int64_t n_logits = g.n_seq * g.n_tok * c->vocab_size;
    /* logits are kept only when the model was asked to (pieces never hold
     * them all); otherwise a non-finite loss after finite blocks names the
     * head as a whole */
    const float *logits = mpl_model_logits(t->model);
    if (loc == MPL_NAN_LOC_NONE && logits && mpl_nan_any(logits, n_logits)) loc = 2 * n_layer;
    if (loc == MPL_NAN_LOC_NONE && !isfinite(loss_sum)) loc = 2 * n_layer + 1;
    /* The earliest location over the world, then the lowest rank there. */
    int64_t v[2] = {-loc, 0};
    MPL_CHECK(mpl_comm_allreduce_max_i64(t->world, v, 1));
    int64_t best = -v[0];
    v[1] = loc == best ? -(int64_t)mpl_comm_rank(t->world) : INT64_MIN;
    MPL_CHECK(mpl_comm_allreduce_max_i64(t->world, v + 1, 1));
    const int rank = (int)-v[1];
    if (best != MPL_NAN_LOC_NONE) {
        const int64_t l = best / 2;
        if (best == 2 * n_layer + 1)
            snprintf(buf, n, "the loss (after the last block: final norm, unembedding or "
                     "cross-entropy), on rank %d", rank);
        else if (best == 2 * n_layer)
            snprintf(buf, n, "the logits (after the last block: final norm or unembedding), "
                     "on rank %d", rank);
        else if (best % 2)
            snprintf(buf, n, "the output of block %lld's attention (attn=%s), on rank %d",
                     (long long)l, c->attn, rank);
        else if (l == 0)
            snprintf(buf, n, "the input of block 0's attention (embedding, norm or qkv "
                     "projection), on rank %d", rank);
        else
            snprintf(buf, n, "the input of block %lld's attention (made by block %lld's MLP or "
                     "the norm and qkv projection after it), on rank %d", (long long)l,
                     (long long)l - 1, rank);
        return MPL_OK;
    }
    /* A finite forward: the gradients (all-reduced, so alike everywhere),
     * the first in backward order. */
    /* under ZeRO-1 only this rank's shard holds summed gradients: the first
     * bad tensor in backward order over the shards */
    k = first_bad_tensor(lay, mpl_model_grads(t->model), 1, t->shard_lo, t->shard_hi);
    if (t->zero) {
        int64_t kk = k >= 0 ? (int64_t)k : -1; /* backward order: the largest index first */
        MPL_CHECK(mpl_comm_allreduce_max_i64(t->world, &kk, 1));
        k = (int)kk;
    }
    if (k >= 0)
        snprintf(buf, n, "the gradient of %s (forward finite; first in backward order)",
                 lay->t[k].name);
    else
        snprintf(buf, n, "nowhere on a re-run (not reproducible: a hardware or race problem?)");
    return MPL_OK;
}

mpl_status mpl_trainer_optim_gather(mpl_trainer *t, float **m, float **v)
{
    *m = t->m, *v = t->v;
    if (!t->zero && !t->optim) return MPL_OK;
    const int64_t n = mpl_model_layout(t->model)->n_elems;
    *m = *v = NULL;
    mpl_status st = mpl_slab_alloc(n, m);
    if (st == MPL_OK) st = mpl_slab_alloc(n, v);
    if (st == MPL_OK && t->optim) {
        st = mpl_optim_dev_get(t->optim, *m, *v);
    } else if (st == MPL_OK) {
        const size_t b = (size_t)(t->shard_hi - t->shard_lo) * sizeof(float);
        memcpy(*m + t->shard_lo, t->m, b);
        memcpy(*v + t->shard_lo, t->v, b);
        st = mpl_comm_allgatherv_f32(t->grid->dp, *m, t->shard_counts);
        if (st == MPL_OK) st = mpl_comm_allgatherv_f32(t->grid->dp, *v, t->shard_counts);
    }
    if (st != MPL_OK) mpl_trainer_optim_release(t, m, v);
    return st;
}

void mpl_trainer_optim_release(mpl_trainer *t, float **m, float **v)
{
    if (*m != t->m) mpl_slab_free(m);
    if (*v != t->v) mpl_slab_free(v);
    *m = *v = NULL;
}

mpl_status mpl_trainer_optim_scatter(mpl_trainer *t, const float *m, const float *v)
{
    if (t->optim) return mpl_optim_dev_set(t->optim, m, v);
    if (m == t->m) return MPL_OK;
    const size_t b = (size_t)(t->shard_hi - t->shard_lo) * sizeof(float);
    memcpy(t->m, m + t->shard_lo, b);
    memcpy(t->v, v + t->shard_lo, b);
    return MPL_OK;
}
