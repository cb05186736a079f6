/* The process grid: world = dp x sp ranks. The sp ranks of one group hold
 * contiguous chunks of the same sequences (consecutive world ranks, so a
 * group sits on as few nodes as possible and halos stay local); the dp
 * groups hold different sequences. */
#ifndef MPL_GRID_H
#define MPL_GRID_H

#include <stdint.h>

#include "comm.h"

typedef struct mpl_grid {
    mpl_comm *world;      /* borrowed */
    mpl_comm *sp;         /* owned: the ranks sharing this rank's sequences */
    mpl_comm *dp;         /* owned: the ranks holding the same chunk positions */
    int sp_size, dp_size, sp_rank, dp_rank;
} mpl_grid;

/* Collective on world: split it into sp x dp (dp = 0: world / sp). A world
 * size that does not factor gives MPL_ERR_CONFIG with both numbers, on every
 * rank, before any communicator is made. world must outlive the grid. */
mpl_status mpl_grid_create(mpl_comm *world, int sp, int dp, mpl_grid **out);
/* Collective on world. *g = NULL; NULL is a no-op. */
void mpl_grid_destroy(mpl_grid **g);

/* Local. Chunk [*a, *b) of rank p when L tokens are split over sp ranks:
 * sizes differ by at most one (the first L mod sp chunks are longer). */
void mpl_grid_chunk(int64_t L, int sp, int p, int64_t *a, int64_t *b);

#endif
