/* HDF5 plumbing shared by the token files (data*.c) and checkpoints
 * (ckpt.c): the MPL_H5 check macros, silencing HDF5's own error printing,
 * opening a file with errors that name it, attribute and dataset helpers,
 * and fsync helpers for the write-to-temp-then-rename protocol.
 * Internal to io/: launch/ and tests use io/data.h and io/ckpt.h. */
#ifndef MPL_H5UTIL_H
#define MPL_H5UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "../core/status.h"

/* Local. The innermost message of HDF5's error stack (where the error was
 * first detected: the most specific one), written into buf; returns buf. */
const char *mpl_h5_msg(char *buf, size_t n_bytes);

/* HDF5 calls return a negative value (herr_t, hid_t, htri_t) on failure.
 * MPL_H5 returns the status; MPL_H5_GOTO stores it into `st` and jumps. */
#define MPL_H5(expr)                                                           \
    MPL_CHECK_GEN((expr) >= 0, 1, MPL_ERR_H5, mpl_h5_msg((char[256]){0}, 256))

#define MPL_H5_GOTO(expr, label)                                               \
    do {                                                                       \
        if ((expr) < 0) {                                                      \
            char mpl_h5m_[256];                                                \
            st = mpl_err_push(MPL_ERR_H5, __FILE__, __LINE__, __func__,        \
                              "%s: %s", #expr,                                 \
                              mpl_h5_msg(mpl_h5m_, sizeof mpl_h5m_));          \
            goto label;                                                        \
        }                                                                      \
    } while (0)

/* HDF5 prints its whole error stack to stderr by default. Our public io
 * functions bracket their work with quiet_begin/end so that users see only
 * our one-line errors, and the host's previous setting is restored. */
typedef struct mpl_h5_quiet {
    H5E_auto2_t func;
    void *data;
} mpl_h5_quiet;
void mpl_h5_quiet_begin(mpl_h5_quiet *q);
void mpl_h5_quiet_end(const mpl_h5_quiet *q);

/* Local. Open an existing HDF5 file with errors that name it:
 * missing/unreadable -> MPL_ERR_IO "cannot open P: <strerror>";
 * a directory -> MPL_ERR_IO "P: is a directory"; 0 bytes -> MPL_ERR_FORMAT
 * "P: file is empty"; not HDF5 -> MPL_ERR_FORMAT "P: not an HDF5 file".
 * Uses the default (sec2) driver, so every rank may open it independently. */
mpl_status mpl_h5_file_open(const char *path, unsigned flags, hid_t *out);

/* Local. Create path (truncating) for writing with the default driver and
 * file-format bounds 1.8+ (dense attribute storage, so a long config text
 * fits in one attribute). MPL_ERR_IO naming path on failure. */
mpl_status mpl_h5_file_create(const char *path, hid_t *out);
/* Local. The same with a copy of the caller's file access list `base`
 * (driver and options; H5P_DEFAULT for none) and those bounds added. */
mpl_status mpl_h5_file_create_fapl(const char *path, hid_t base, hid_t *out);

/* Local. 1 if loc has a link `name` (a path relative to loc; every
 * component is checked, so missing parents give 0, not an error). */
int mpl_h5_exists(hid_t loc, const char *name);

/* Attributes. Readers report a missing attribute as MPL_ERR_FORMAT naming
 * `file` (for the message) and the attribute. */
mpl_status mpl_h5_attr_write_i64(hid_t obj, const char *name, int64_t v);
mpl_status mpl_h5_attr_read_i64(hid_t obj, const char *name, const char *file, int64_t *v);
mpl_status mpl_h5_attr_write_str(hid_t obj, const char *name, const char *s);
/* Fixed- or variable-length string attribute; *out is malloc'd. */
mpl_status mpl_h5_attr_read_str(hid_t obj, const char *name, const char *file, char **out);

/* Local. Create a chunked dataset of `ndim` dims; maxdims may be NULL
 * (fixed size). deflate_level 0 = no compression. With fletcher32, the
 * checksum filter comes AFTER deflate, so it checks the bytes on disk
 * (HDF5 rejects the other order for compressed data). */
mpl_status mpl_h5_dataset_create(hid_t loc, const char *name, hid_t type, int ndim,
                                 const hsize_t *dims, const hsize_t *maxdims,
                                 const hsize_t *chunk, int deflate_level, int fletcher32,
                                 hid_t *out);

/* Local. Create group `name` in loc, without time stamps (as every object
 * our files hold: the same content gives the same bytes). */
mpl_status mpl_h5_group_create(hid_t loc, const char *name, hid_t *out);

/* Local. Chunk dims for a tensor of `shape`: the whole tensor when it is at
 * most max_elems, else the largest dims halved until it is. Each chunk dim
 * is >= 1, and HDF5 limits a chunk to 4 GiB, which this respects. */
void mpl_h5_chunk_dims(int ndim, const int64_t *shape, int64_t max_elems, hsize_t *chunk);

/* Local. fsync a file by path, and the directory that holds it, so that a
 * rename is durable (MPL_ERR_IO naming the path). */
mpl_status mpl_io_fsync_path(const char *path);
mpl_status mpl_io_fsync_dir_of(const char *path);
/* Local. Rename tmp to path, then fsync the directory. */
mpl_status mpl_io_rename_durable(const char *tmp, const char *path);

#endif
