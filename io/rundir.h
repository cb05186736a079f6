/* The run directory: where checkpoints go, the `latest` pointer to the
 * newest complete one, and the pruning of old ones. A checkpoint counts as
 * complete only once `latest` names it, and `latest` is replaced
 * atomically, so a crash at any point leaves a usable pointer. */
#ifndef MPL_RUNDIR_H
#define MPL_RUNDIR_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

/* Local. "<dir>/ckpt-<step>.h5" into buf. */
void mpl_rundir_ckpt_path(const char *dir, int64_t step, char *buf, size_t n);
/* Local. Create dir and its parents (like mkdir -p). */
mpl_status mpl_rundir_make(const char *dir);
/* Local. The checkpoint `<dir>/latest` names: *found = 0 (and MPL_OK) when
 * there is no pointer; MPL_ERR_FORMAT when it names a missing file. */
mpl_status mpl_rundir_latest(const char *dir, char *path, size_t n, int *found);
/* Local (call on one rank). Write `latest` -> ckpt-<step>.h5 through a
 * temporary file, fsync, rename and fsync of the directory; then delete
 * ckpt-*.h5 files older than the `keep` newest. */
mpl_status mpl_rundir_commit(const char *dir, int64_t step, int64_t keep);
/* Local. The steps of the ckpt-<step>.h5 files in dir (never *.tmp),
 * newest first, into a malloc'd *steps (caller frees; NULL when *n == 0). */
mpl_status mpl_rundir_list(const char *dir, int64_t **steps, int *n);
/* Local. fsync the directory holding path (after a rename into it). */
mpl_status mpl_rundir_sync_parent(const char *path);

#endif
