/* The seeded per-epoch sample order (sample_order.h). */
#include "sample_order.h"

#include <stdlib.h>

#include "../core/philox.h"

/* Two epochs' permutations are cached: a batch that straddles an epoch
 * boundary asks for both alternately, and must not regenerate each time. */
#define PERM_SLOTS 2

struct mpl_sample_order {
    int64_t n;
    uint64_t seed;
    int64_t *perm[PERM_SLOTS];      /* (n) each */
    int64_t perm_epoch[PERM_SLOTS]; /* -1: empty */
    int last_slot;                  /* most recently used, for replacement */
};

mpl_status mpl_sample_order_create(int64_t n, uint64_t seed, mpl_sample_order **out)
{
    *out = NULL;
    if (n < 1) return mpl_err(MPL_ERR_ARG, "sample order over n=%lld items", (long long)n);
    mpl_sample_order *o;
    MPL_ALLOC(o, 1);
    o->n = n;
    o->seed = seed;
    for (int s = 0; s < PERM_SLOTS; s++) {
        o->perm_epoch[s] = -1;
        o->perm[s] = malloc((size_t)n * sizeof *o->perm[s]);
        if (!o->perm[s]) {
            mpl_sample_order_destroy(&o);
            return mpl_err(MPL_ERR_NOMEM, "out of memory for a permutation of %lld samples",
                           (long long)n);
        }
    }
    *out = o;
    return MPL_OK;
}

void mpl_sample_order_destroy(mpl_sample_order **o)
{
    if (!o || !*o) return;
    for (int s = 0; s < PERM_SLOTS; s++) free((*o)->perm[s]);
    free(*o);
    *o = NULL;
}

/* Fisher-Yates driven by (seed, stream "data.perm" + epoch, n = i): the
 * same permutation at any rank layout, and independent draws per epoch. */
static void perm_fill(int64_t *p, int64_t n, uint64_t seed, int64_t epoch)
{
    uint64_t stream = mpl_philox_stream("data.perm") + (uint64_t)epoch;
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        double u = mpl_philox_uniform(seed, stream, (uint64_t)i);
        int64_t j = (int64_t)(u * (double)(i + 1));
        if (j > i) j = i; /* u < 1, but guard the rounding of u*(i+1) */
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

int64_t mpl_sample_order_item(mpl_sample_order *o, int64_t g)
{
    if (!o || g < 0) return -1;
    const int64_t e = g / o->n, i = g % o->n;
    for (int s = 0; s < PERM_SLOTS; s++)
        if (o->perm_epoch[s] == e) {
            o->last_slot = s;
            return o->perm[s][i];
        }
    const int s = (o->last_slot + 1) % PERM_SLOTS;
    perm_fill(o->perm[s], o->n, o->seed, e);
    o->perm_epoch[s] = e;
    o->last_slot = s;
    return o->perm[s][i];
}
