/* One training step of the model over the world: the process grid, the
 * attention instance, the model, the AdamW state and the step itself
 * (forward, global loss normalisation, backward, gradient all-reduce,
 * clipping, update). Shared by `train` and `bench step`. */
#ifndef MPL_TRAINER_H
#define MPL_TRAINER_H

#include <stdint.h>

#include "config.h"
#include "core/adamw.h"
#include "core/attn.h"
#include "core/model.h"
#include "dist/comm.h"
#include "dist/grid.h"

typedef struct mpl_trainer {
    mpl_config cfg;
    mpl_comm *world;          /* borrowed */
    mpl_grid *grid;           /* sp x dp */
    int sp, dp, dp_rank, sp_rank;
    int64_t chunk_a, chunk_b; /* this rank's positions [a, b) of every sequence */
    mpl_attn attn;
    mpl_model *model;
    float *m, *v;             /* AdamW moments, same layout as params */
    int64_t step;             /* optimizer steps done */
} mpl_trainer;

typedef struct mpl_step_stats {
    double loss;              /* mean over the global batch's tokens */
    double grad_norm;         /* before clipping */
    double lr;
    int64_t n_tokens;         /* counted tokens, global */
} mpl_step_stats;

/* Collective on world: check the layout (sp x dp = world), build attention,
 * model and optimizer, initialise parameters from cfg->seed. cfg is copied;
 * world is borrowed. */
mpl_status mpl_trainer_create(const mpl_config *cfg, mpl_comm *world, mpl_trainer **out);
/* Collective on world. */
void mpl_trainer_destroy(mpl_trainer **t);

/* Collective on world: one optimizer step on this rank's part of the
 * global batch: tokens and targets are (batch, chunk_b - chunk_a), the
 * positions [chunk_a, chunk_b) of this DP group's batch sequences. */
mpl_status mpl_trainer_step(mpl_trainer *t, const int32_t *tokens, const int32_t *targets,
                            mpl_step_stats *stats);

/* Local. The attention configuration the config describes. */
void mpl_trainer_attn_cfg(const mpl_config *cfg, mpl_attn_cfg *out);
/* Local. The model configuration the config describes. */
void mpl_trainer_model_cfg(const mpl_config *cfg, mpl_model_cfg *out);

#endif
