/* The file of `train --trace FILE`: every rank's spans (core/trace.h) in one
 * Chrome trace JSON document. */
#ifndef MPL_TRACE_OUT_H
#define MPL_TRACE_OUT_H

#include "dist/comm.h"

/* Collective on world: check that every rank can create its part file of
 * path, then start recording, the clocks' origin taken right after a
 * barrier so the ranks' spans line up. */
mpl_status mpl_trace_out_start(mpl_comm *world, const char *path);

/* Collective on world: each rank writes its spans to <path>.part<rank>
 * (a shared directory, as for checkpoints), then rank 0 joins them, with
 * the names of the ranks and tracks, into <path> (written as <path>.tmp
 * and renamed) and removes the parts. Recording stops. */
mpl_status mpl_trace_out_write(mpl_comm *world, const char *path);

#endif
