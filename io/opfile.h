/* The exchange file of `multipole op`: float32 datasets at the root, and
 * root attributes read back as text (so they can be set as config keys).
 * Kept apart from token files and checkpoints: it is a test interface for
 * external checks, not a training format. */
#ifndef MPL_OPFILE_H
#define MPL_OPFILE_H

#include <stdint.h>

#include "../core/status.h"

#define MPL_OPFILE_NAME_MAX 64

typedef struct mpl_opfile_tensor {
    char name[MPL_OPFILE_NAME_MAX];
    int ndim;
    int64_t shape[4];
    float *data;           /* owned */
} mpl_opfile_tensor;

typedef struct mpl_opfile_attr {
    char name[MPL_OPFILE_NAME_MAX];
    char value[512];       /* integers, reals and strings as text */
} mpl_opfile_attr;

typedef struct mpl_opfile {
    mpl_opfile_tensor *t;
    int n_tensors;
    mpl_opfile_attr *a;
    int n_attrs;
} mpl_opfile;

/* Local. Read the root datasets named in `names` (NULL-terminated) that
 * exist, converted to float32, and every root attribute (scalars only;
 * an array attribute is an error naming it). */
mpl_status mpl_opfile_read(const char *path, const char *const *names, mpl_opfile *out);
/* Local. The same, but of every 3-D dataset (heads, L, d) only the rows
 * [row0, row0 + n_rows) of its middle axis, and of every 1-D dataset only
 * those entries (the sequence axis): what one rank of a split call needs.
 * 2-D datasets are read whole. One hyperslab read per dataset. */
mpl_status mpl_opfile_read_rows(const char *path, const char *const *names, int64_t row0,
                                int64_t n_rows, mpl_opfile *out);
/* Local. ndim and shape (up to 4) of dataset /name; MPL_ERR_FORMAT naming
 * it when absent. */
mpl_status mpl_opfile_shape(const char *path, const char *name, int *ndim, int64_t *shape);
/* Local. The tensor called name, or NULL. */
const mpl_opfile_tensor *mpl_opfile_find(const mpl_opfile *f, const char *name);
/* Local. Add a tensor (data copied). */
mpl_status mpl_opfile_add(mpl_opfile *f, const char *name, int ndim, const int64_t *shape,
                          const float *data);
/* Local. Write every tensor as a float32 dataset at the root, through a
 * temporary file renamed into place. */
mpl_status mpl_opfile_write(const char *path, const mpl_opfile *f);
/* Local. Free everything; the file becomes empty. */
void mpl_opfile_free(mpl_opfile *f);

#endif
