/* One training step of the model over the world: the process grid, the
 * attention instance, the model, the AdamW state and the step itself
 * (forward, global loss normalisation, backward, gradient all-reduce,
 * clipping, update; no update when the loss or gradient norm is not
 * finite on some rank). Shared by `train`, `eval` and `bench step`. With
 * device=cuda (one rank, one GPU in this version) the model, its attention
 * and AdamW live on the GPU picked by cuda_device (-1: the rank's index on
 * its node); the step then waits for the device once, for the loss and
 * the gradient norm. */
#ifndef MPL_TRAINER_H
#define MPL_TRAINER_H

#include <stdint.h>

#include "config.h"
#include "core/adamw.h"
#include "core/attn.h"
#include "core/cuda.h"
#include "core/model.h"
#include "core/optim_dev.h"
#include "dist/comm.h"
#include "dist/grid.h"
#include "nan_probe.h"
#include "plan.h"

typedef struct mpl_trainer {
    mpl_config cfg;
    mpl_comm *world;          /* borrowed */
    mpl_grid *grid;           /* sp x dp */
    int sp, dp, dp_rank, sp_rank;
    int64_t chunk_a, chunk_b; /* this rank's positions [a, b) of every sequence */
    mpl_attn attn;            /* the mechanism, wrapped by the probe (CPU) */
    mpl_nan_probe *probe;     /* borrowed from attn; NULL with device=cuda */
    mpl_model *model;
    float *m, *v;             /* AdamW moments: the whole slab, or under ZeRO-1 this
                               * rank's shard [shard_lo, shard_hi) of it; NULL for eval only and
                               * with device=cuda (they are in optim) */
    mpl_cuda *cuda;           /* device=cuda: the GPU context, else NULL */
    mpl_optim_dev *optim;     /* device=cuda: AdamW on the GPU */
    int zero;                 /* 1: AdamW state sharded over the DP group */
    mpl_comm_reqs *grad_reqs; /* grad_overlap: the bucket all-reduces; NULL: one blocking */
    int64_t shard_lo, shard_hi;
    int64_t *shard_counts;    /* (dp) elements of each DP rank's shard */
    int64_t step;             /* steps done, bad (skipped) ones included */
    mpl_plan plan;            /* this rank's memory plan */
    mpl_model_reduce reduce;  /* task=classify: pooling sums over the SP group */
    int64_t rss_start;        /* resident bytes when creation began */
} mpl_trainer;

typedef struct mpl_step_stats {
    double loss;              /* mean over the global batch's tokens */
    double grad_norm;         /* before clipping */
    double lr;
    int64_t n_tokens;         /* counted tokens, global */
    int bad;                  /* 1: loss or gradient norm not finite on some rank
                                 (agreed on every rank); the update was skipped */
} mpl_step_stats;

/* Collective on world: check the layout (sp x dp = world), build attention,
 * model and optimizer, initialise parameters from cfg->seed. Before the
 * activations and the optimizer state are allocated, the memory plan is
 * checked against what a rank may use (plan.h): a config that does not fit
 * fails on every rank with MPL_ERR_CONFIG. cfg is copied; world is
 * borrowed. */
mpl_status mpl_trainer_create(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out);
/* Collective on world: the same without optimizer state, for evaluation. */
mpl_status mpl_trainer_create_eval(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out);
/* Collective on world. */
void mpl_trainer_destroy(mpl_trainer **t);

/* Collective on world: one optimizer step on this rank's part of the
 * global batch: tokens and targets are (batch, chunk_b - chunk_a), the
 * positions [chunk_a, chunk_b) of this DP group's batch sequences. The
 * step counter advances also on a bad step (stats->bad), which changes no
 * parameter and no optimizer moment. Afterwards the model's gradient slab
 * holds the world's summed (and clipped) gradients: all of it, or under
 * ZeRO-1 only the shard [shard_lo, shard_hi). */
mpl_status mpl_trainer_step(mpl_trainer *t, const int32_t *tokens, const int32_t *targets,
                            mpl_step_stats *stats);

/* Collective on world: the same step for a classifier (task=classify):
 * tokens and mask (batch, chunk_b - chunk_a) (mask 1 = real token), labels
 * (batch), one per sequence (< 0: none). */
mpl_status mpl_trainer_step_cls(mpl_trainer *t, const int32_t *tokens, const uint8_t *mask,
                                const int32_t *labels, mpl_step_stats *stats);

/* Collective on the DP group: the whole AdamW moments (*m, *v): t->m and
 * t->v themselves, or under ZeRO-1 new slabs gathered from the shards, or
 * with device=cuda host copies of the device moments (free them with
 * mpl_trainer_optim_release). */
mpl_status mpl_trainer_optim_gather(mpl_trainer *t, float **m, float **v);
/* Local. Frees what optim_gather allocated (no-op for t->m, t->v). */
void mpl_trainer_optim_release(mpl_trainer *t, float **m, float **v);
/* Local. Whole moments m, v (e.g. loaded from a checkpoint, in buffers
 * from optim_gather) into this rank's state: a copy of the shard, or of
 * everything to the device. */
mpl_status mpl_trainer_optim_scatter(mpl_trainer *t, const float *m, const float *v);

/* Collective on world: right after a bad step, with the same tokens and
 * targets, find where the first non-finite value appeared and describe it
 * in buf ("the output of block 1's attention (fmm) on rank 2", "the
 * gradient of blk0.attn.wqkv", ...): non-finite parameters first, then the
 * forward re-run with the probe checking every block (earliest location
 * over all ranks), then the gradients in backward order. */
mpl_status mpl_trainer_locate_nonfinite(mpl_trainer *t, const int32_t *tokens,
                                        const int32_t *targets, char *buf, size_t n);

/* Local. The attention configuration the config describes. */
void mpl_trainer_attn_cfg(const mpl_config *cfg, mpl_attn_cfg *out);
/* Local. The model configuration the config describes. */
void mpl_trainer_model_cfg(const mpl_config *cfg, mpl_model_cfg *out);
/* Local. The config's model on the CPU, its attention created without a
 * communicator (it plans for cfg->sp ranks but cannot run split): what
 * memory plans and parameter counts need. Free with mpl_model_destroy,
 * then mpl_attn_destroy, after a failure too (*attn zeroed before). */
mpl_status mpl_trainer_model_standalone(const mpl_config *cfg, mpl_attn *attn, mpl_model **m);

#endif
