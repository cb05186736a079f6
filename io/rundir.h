/* The run directory: where checkpoints go, the `latest` pointer to the
 * newest one (for people and scripts; resuming lists the checkpoints
 * themselves and trusts their checksums), and the pruning of old ones.
 * `latest` is replaced atomically, so a crash leaves a usable pointer. */
#ifndef MPL_RUNDIR_H
#define MPL_RUNDIR_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

/* Local. "<dir>/ckpt-<step>.h5" into buf. */
void mpl_rundir_ckpt_path(const char *dir, int64_t step, char *buf, size_t n);
/* Local. Create dir and its parents (like mkdir -p). */
mpl_status mpl_rundir_make(const char *dir);
/* Local (call on one rank). Write `latest` -> ckpt-<step>.h5 through a
 * temporary file, fsync, rename and fsync of the directory; then delete
 * ckpt-*.h5 files older than the `keep` newest. */
mpl_status mpl_rundir_commit(const char *dir, int64_t step, int64_t keep);
/* Local. The steps of the ckpt-<step>.h5 files in dir (never *.tmp),
 * newest first, into a malloc'd *steps (caller frees; NULL when *n == 0). */
mpl_status mpl_rundir_list(const char *dir, int64_t **steps, int *n);

#endif
