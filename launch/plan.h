/* The memory plan of one rank: what a training step of a config needs,
 * item by item, computed before anything big is allocated, against what
 * the rank may use. Train refuses a config that does not fit, naming the
 * biggest item and the longest seq_len that would fit; `multipole plan`
 * prints the same for any layout without running it. */
#ifndef MPL_PLAN_H
#define MPL_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "core/model.h"

typedef struct mpl_plan {
    mpl_model_mem model;   /* params, grads, activations, states, workspace */
    int64_t optim;         /* AdamW m and v (this rank's shard under zero=1) */
    int64_t comm;          /* buffers of the collectives (the gradient all-reduce's temporary) */
    int64_t total;
    int64_t n_tok;         /* tokens of this rank's chunk of one sequence */
    int64_t budget;        /* bytes the rank may use */
    char budget_src[96];   /* where the budget comes from */
} mpl_plan;

/* Local. The plan of a rank holding n_tok tokens of each of cfg->batch
 * sequences, for model m (created, not reserved), in a world of
 * world_size ranks and dp_size data-parallel groups. budget and
 * budget_src are left zero. */
mpl_status mpl_plan_make(const mpl_config *cfg, const mpl_model *m, int world_size, int dp_size,
                         int64_t n_tok, mpl_plan *out);

/* Local. Bytes a rank may use: mem_limit GiB when set, otherwise the
 * memory available on this node (MemAvailable, or less under a cgroup
 * limit) shared by node_ranks ranks. */
mpl_status mpl_plan_budget(const mpl_config *cfg, int node_ranks, int64_t *bytes, char *src,
                           size_t n_src);

/* Local. MPL_ERR_CONFIG when p->total exceeds p->budget, naming the
 * biggest item and the longest seq_len (a multiple of sp, the rest of cfg
 * as it is) that fits; *longest receives it (0: not even sp tokens). */
mpl_status mpl_plan_check(const mpl_config *cfg, const mpl_model *m, int world_size, int sp,
                          int dp, const mpl_plan *p, int64_t *longest);
/* Local. The longest seq_len whose plan fits p->budget (see check). */
int64_t mpl_plan_longest(const mpl_config *cfg, const mpl_model *m, int world_size, int sp,
                         int dp, int64_t budget);

/* Local. The plan as a table, one item per line. */
void mpl_plan_print(FILE *f, const mpl_config *cfg, const mpl_plan *p);

/* Local. Resident memory of this process now and at its peak, bytes. */
int64_t mpl_plan_rss_now(void);
int64_t mpl_plan_rss_peak(void);

#endif
