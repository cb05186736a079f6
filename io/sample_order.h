/* The order in which a run visits the n samples of a split: global sample
 * g is item perm_e[g mod n] of epoch e = g / n, perm_e a Fisher-Yates
 * permutation driven by Philox keyed by (seed, epoch). It depends only on
 * (seed, g), never on the rank layout, so any layout and any resume see
 * the same samples. Shared by the token-window reader (data.h) and the
 * classification reader (clsdata.h). */
#ifndef MPL_SAMPLE_ORDER_H
#define MPL_SAMPLE_ORDER_H

#include <stdint.h>

#include "../core/status.h"

typedef struct mpl_sample_order mpl_sample_order;

/* Local. An order over n >= 1 items. */
mpl_status mpl_sample_order_create(int64_t n, uint64_t seed, mpl_sample_order **out);
/* Local. *o = NULL; NULL is a no-op. */
void mpl_sample_order_destroy(mpl_sample_order **o);
/* Local. The item of global sample g >= 0 (-1 for g < 0). Two epochs'
 * permutations are cached, so a batch that straddles an epoch boundary
 * does not regenerate them. */
int64_t mpl_sample_order_item(mpl_sample_order *o, int64_t g);

#endif
