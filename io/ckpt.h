/* Checkpoints: one HDF5 file per save, tensors global and unsharded fp32.
 *   /params/<name>, /optim/m/<name>, /optim/v/<name>  (shape as the layout)
 *   /state  group with attributes step, data_cursor, seed, rng_counter,
 *           lr_step (= step: the LR schedule is a function of it)
 *   root attributes: format_version, config (the full config text),
 *   world_size, sp, dp, code_version
 * Datasets carry Fletcher32 checksums; each of /params, /optim/m,
 * /optim/v has a 64-bit "checksum" attribute over its tensors and the root
 * one over the state, the metadata and those (ckpt_internal.h defines
 * them). The root checksum is written last, so a file without it is
 * incomplete and is refused. */
#ifndef MPL_CKPT_H
#define MPL_CKPT_H

#include <stdint.h>

#include "../core/slab.h"
#include "../core/status.h"
#include "../dist/comm.h"

#define MPL_CKPT_FORMAT_VERSION 2 /* 2: checksum attributes */

typedef struct mpl_ckpt_state {
    int64_t step;          /* optimizer steps done */
    int64_t data_cursor;   /* next global sample */
    int64_t seed;
    int64_t rng_counter;   /* next value of the run's Philox stream */
} mpl_ckpt_state;

typedef struct mpl_ckpt_meta {
    const char *config_text;   /* saved as attribute "config" */
    int world_size, sp, dp;
    const char *code_version;
} mpl_ckpt_meta;

/* Collective on c (every rank holds the same replicated tensors; same
 * arguments everywhere). Writes path.tmp, flushes, fsyncs, renames to path
 * and fsyncs the directory. With the parallel writer (see
 * mpl_ckpt_parallel_enabled) every rank writes about 1/P of the chunks
 * through MPI-IO; with the serial one rank 0 writes everything. m, v may be
 * NULL (then /optim is omitted). Errors are agreed on all ranks. Fault
 * injection for tests: see mpl_ckpt_fault_point. */
mpl_status mpl_ckpt_save(mpl_comm *c, const char *path, const mpl_slab_layout *lay,
                         const float *params, const float *m, const float *v,
                         const mpl_ckpt_state *state, const mpl_ckpt_meta *meta);

/* Collective on c: every rank receives the whole state; each reads and
 * verifies about 1/P of the file and broadcasts it (io/ckpt.c). The
 * statuses are agreed: rank 0 names the cause, the others say that it
 * failed. Every tensor of lay must be present with the same
 * shape (else MPL_ERR_FORMAT naming it). m, v may be NULL (not read).
 * *config_text (may be NULL) receives a malloc'd copy of the saved config
 * text, to be freed by the caller. */
mpl_status mpl_ckpt_load(mpl_comm *c, const char *path, const mpl_slab_layout *lay,
                         float *params, float *m, float *v, mpl_ckpt_state *state,
                         char **config_text);

/* Local. Read only the saved config text (for `sample`, which builds the
 * model from it, and `train --resume` to compare shapes first) after
 * checking the root checksum (no tensor data is read); malloc'd, caller
 * frees. */
mpl_status mpl_ckpt_read_config(const char *path, char **config_text);

/* Local. Recompute every group checksum and the root checksum (reading
 * every tensor, so Fletcher32 is checked too) and print one line each;
 * MPL_ERR_FORMAT naming the file and the first bad part when any differs
 * or is missing. */
mpl_status mpl_ckpt_verify(const char *path);

/* Collective on c: 1 when saves on c use the parallel (MPI-IO) path. Needs
 * parallel HDF5; then MPL_CKPT_SERIAL=0 selects it and MPL_CKPT_SERIAL=1
 * the serial one; unset, it is used when the ranks of c span more than one
 * node. On one node every writer shares one disk and one page cache, and
 * the serial writer is faster: HDF5 1.10 under MPI-IO writes every
 * filtered chunk twice (a fill at dataset creation, then the data) and
 * each dataset costs collective calls, while rank 0 alone streams the
 * chunks (measured in bench/README.md, `ckpt`). */
int mpl_ckpt_parallel_enabled(mpl_comm *c);

/* Local. Test hooks, read from the environment at each phase of a save of
 * step `step`: MPL_CKPT_CRASH=PHASE[@STEP] makes the process raise(SIGKILL)
 * there; MPL_CKPT_FAIL=PHASE[@STEP] returns MPL_ERR_IO as a full disk
 * would (the message names path). PHASE: before_data, mid_data, before_rename (in mpl_ckpt_save),
 * before_pointer (called by `train` before the `latest` pointer). */
mpl_status mpl_ckpt_fault_point(const char *phase, int64_t step, const char *path);

/* Local. Print step, layout, config and each tensor's shape and L2 norm. */
mpl_status mpl_ckpt_inspect(const char *path);

/* Local. 1 when path is an HDF5 file holding a /params group. */
int mpl_ckpt_is_checkpoint(const char *path);

#endif
