/* One training step of the model over the world: the process grid, the
 * attention instance, the model, the AdamW state and the step itself
 * (forward, global loss normalisation, backward, gradient all-reduce,
 * clipping, update). Shared by `train` and `bench step`. With device=cuda
 * (one rank, one GPU in this version) the model, its attention and AdamW
 * live on the GPU picked by cuda_device (-1: the rank's index on its
 * node); the step then waits for the device once, for the loss and the
 * gradient norm. */
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
#include "plan.h"

typedef struct mpl_trainer {
    mpl_config cfg;
    mpl_comm *world;          /* borrowed */
    mpl_grid *grid;           /* sp x dp */
    int sp, dp, dp_rank, sp_rank;
    int64_t chunk_a, chunk_b; /* this rank's positions [a, b) of every sequence */
    mpl_attn attn;
    mpl_model *model;
    float *m, *v;             /* AdamW moments: the whole slab, or under ZeRO-1 this
                               * rank's shard [shard_lo, shard_hi) of it; NULL
                               * with device=cuda (they are in optim) */
    mpl_cuda *cuda;           /* device=cuda: the GPU context, else NULL */
    mpl_optim_dev *optim;     /* device=cuda: AdamW on the GPU */
    int zero;                 /* 1: AdamW state sharded over the DP group */
    int64_t shard_lo, shard_hi;
    int64_t *shard_counts;    /* (dp) elements of each DP rank's shard */
    int64_t step;             /* optimizer steps done */
    mpl_plan plan;            /* this rank's memory plan */
    int64_t rss_start;        /* resident bytes when creation began */
} mpl_trainer;

typedef struct mpl_step_stats {
    double loss;              /* mean over the global batch's tokens */
    double grad_norm;         /* before clipping */
    double lr;
    int64_t n_tokens;         /* counted tokens, global */
} mpl_step_stats;

/* Collective on world: check the layout (sp x dp = world), build attention,
 * model and optimizer, initialise parameters from cfg->seed. Before the
 * activations and the optimizer state are allocated, the memory plan is
 * checked against what a rank may use (plan.h): a config that does not fit
 * fails on every rank with MPL_ERR_CONFIG. cfg is copied; world is
 * borrowed. */
mpl_status mpl_trainer_create(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out);
/* Collective on world. */
void mpl_trainer_destroy(mpl_trainer **t);

/* Collective on world: one optimizer step on this rank's part of the
 * global batch: tokens and targets are (batch, chunk_b - chunk_a), the
 * positions [chunk_a, chunk_b) of this DP group's batch sequences.
 * Afterwards the model's gradient slab holds the world's summed (and
 * clipped) gradients: all of it, or under ZeRO-1 only the shard
 * [shard_lo, shard_hi). */
mpl_status mpl_trainer_step(mpl_trainer *t, const int32_t *tokens, const int32_t *targets,
                            mpl_step_stats *stats);

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

/* Local. The attention configuration the config describes. */
void mpl_trainer_attn_cfg(const mpl_config *cfg, mpl_attn_cfg *out);
/* Local. The model configuration the config describes. */
void mpl_trainer_model_cfg(const mpl_config *cfg, mpl_model_cfg *out);

#endif
