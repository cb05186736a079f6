/* AdamW, the warmup + cosine schedule and the pieces of gradient clipping.
 * Everything is a flat pass over a slab; reductions use a fixed blocking so
 * results are independent of the OpenMP thread count (bit-for-bit resume
 * and DP=1 vs DP=N comparisons rely on it). */
#include "adamw.h"

#include <math.h>

void mpl_adamw_update_range(const mpl_slab_layout *lay, float *params, const float *grads,
                            float *m, float *v, int64_t lo, int64_t hi, int64_t step, double lr,
                            const mpl_adamw_hparams *hp)
{
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, eps = (float)hp->eps;
    const float c1 = (float)(1.0 / (1.0 - pow(hp->beta1, (double)step)));
    const float c2 = (float)(1.0 / (1.0 - pow(hp->beta2, (double)step)));
    const float flr = (float)lr;
    for (int t = 0; t < lay->n_tensors; t++) {
        const mpl_tensor_desc *d = &lay->t[t];
        /* the part of this tensor inside [lo, hi) */
        const int64_t a = d->offset > lo ? d->offset : lo;
        const int64_t b = d->offset + d->n_elems < hi ? d->offset + d->n_elems : hi;
        if (a >= b) continue;
        float *restrict p = params + a;
        const float *restrict g = grads + a;
        float *restrict mm = m + (a - lo), *restrict vv = v + (a - lo);
        /* Decoupled weight decay (Loshchilov & Hutter), matrices only. */
        const float decay = d->decay ? (float)(1.0 - lr * hp->weight_decay) : 1.0f;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < b - a; i++) {
            float gi = g[i];
            float mi = b1 * mm[i] + (1.0f - b1) * gi;
            float vi = b2 * vv[i] + (1.0f - b2) * gi * gi;
            mm[i] = mi;
            vv[i] = vi;
            p[i] = p[i] * decay - flr * (mi * c1) / (sqrtf(vi * c2) + eps);
        }
    }
}

void mpl_adamw_update(const mpl_slab_layout *lay, float *params, const float *grads,
                      float *m, float *v, int64_t step, double lr,
                      const mpl_adamw_hparams *hp)
{
    mpl_adamw_update_range(lay, params, grads, m, v, 0, lay->n_elems, step, lr, hp);
}

double mpl_lr_at(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr)
{
    if (warmup > 0 && step <= warmup) return lr * (double)step / (double)warmup;
    if (step >= total) return min_lr;
    double frac = (double)(step - warmup) / (double)(total - warmup);
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.14159265358979323846 * frac));
}

#define SUMSQ_BLOCK 4096

double mpl_sumsq(const float *g, int64_t n_elems)
{
    int64_t n_blocks = (n_elems + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    double total = 0.0;
    /* Blocks are summed in order by the ordered reduction below: the
     * blocking, not the thread count, fixes the association. */
#pragma omp parallel
    {
        double part = 0.0;
#pragma omp for schedule(static) ordered
        for (int64_t b = 0; b < n_blocks; b++) {
            int64_t lo = b * SUMSQ_BLOCK;
            int64_t hi = lo + SUMSQ_BLOCK < n_elems ? lo + SUMSQ_BLOCK : n_elems;
            double s = 0.0;
            for (int64_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
            part = s;
#pragma omp ordered
            total += part;
        }
    }
    return total;
}

void mpl_scale(float *x, int64_t n_elems, double s)
{
    const float fs = (float)s;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n_elems; i++) x[i] *= fs;
}
