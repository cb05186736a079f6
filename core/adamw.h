/* AdamW over slabs, the learning-rate schedule and gradient clipping.
 * One pass over the whole parameter slab: the layout only says which
 * tensors get weight decay. */
#ifndef MPL_ADAMW_H
#define MPL_ADAMW_H

#include <stdint.h>

#include "slab.h"
#include "status.h"

typedef struct mpl_adamw_hparams {
    double beta1, beta2, eps, weight_decay;
} mpl_adamw_hparams;

/* Local. One AdamW update; step is 1-based (bias correction). */
void mpl_adamw_update(const mpl_slab_layout *lay, float *params, const float *grads,
                      float *m, float *v, int64_t step, double lr,
                      const mpl_adamw_hparams *hp);

/* Local. The same update restricted to the elements [lo, hi) of the slab
 * (a ZeRO shard): params and grads are whole slabs, m and v hold only the
 * shard (m[0] is element lo). Each element gets exactly the update the
 * whole-slab call gives it. */
void mpl_adamw_update_range(const mpl_slab_layout *lay, float *params, const float *grads,
                            float *m, float *v, int64_t lo, int64_t hi, int64_t step, double lr,
                            const mpl_adamw_hparams *hp);

/* Local. Linear warmup over `warmup` steps, then cosine from lr to min_lr at
 * `total`; step is 1-based. */
double mpl_lr_at(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);

/* Local. Sum of squares of g[0..n), accumulated in double with a fixed
 * blocking, so the result does not depend on the thread count. */
double mpl_sumsq(const float *g, int64_t n_elems);

/* Local. x *= s. */
void mpl_scale(float *x, int64_t n_elems, double s);

#endif
