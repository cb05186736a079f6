/* Process grid and chunk arithmetic. */
#include "grid.h"

#include <stdlib.h>

void mpl_grid_chunk(int64_t L, int sp, int p, int64_t *a, int64_t *b)
{
    const int64_t base = L / sp, extra = L % sp;
    *a = (int64_t)p * base + (p < extra ? p : extra);
    *b = *a + base + (p < extra ? 1 : 0);
}

mpl_status mpl_grid_create(mpl_comm *world, int sp, int dp, mpl_grid **out)
{
    *out = NULL;
    const int n = mpl_comm_size(world);
    if (sp < 1 || n % sp)
        return mpl_err(MPL_ERR_CONFIG, "sp=%d does not divide the world size %d", sp, n);
    if (dp == 0) dp = n / sp;
    if ((int64_t)dp * sp != n)
        return mpl_err(MPL_ERR_CONFIG, "sp=%d x dp=%d = %d ranks, but the world has %d", sp, dp,
                       sp * dp, n);
    mpl_status st = MPL_OK;
    mpl_grid *g;
    MPL_ALLOC(g, 1);
    const int r = mpl_comm_rank(world);
    g->world = world;
    g->sp_size = sp;
    g->dp_size = dp;
    g->sp_rank = r % sp;
    g->dp_rank = r / sp;
    MPL_CHECK_GOTO(mpl_comm_split(world, g->dp_rank, g->sp_rank, &g->sp), fail);
    MPL_CHECK_GOTO(mpl_comm_split(world, g->sp_rank, g->dp_rank, &g->dp), fail);
    *out = g;
    return MPL_OK;
fail:
    mpl_grid_destroy(&g);
    return st;
}

void mpl_grid_destroy(mpl_grid **g)
{
    if (!g || !*g) return;
    mpl_comm_destroy(&(*g)->sp);
    mpl_comm_destroy(&(*g)->dp);
    free(*g);
    *g = NULL;
}
