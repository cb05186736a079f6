/* What the token-file readers (data.c, data_inspect.c) share and nothing
 * outside io/data*.c needs. */
#ifndef MPL_DATA_INTERNAL_H
#define MPL_DATA_INTERNAL_H

#include <hdf5.h>

#include "../core/status.h"

/* Local. MPL_ERR_FORMAT naming path and dname unless dataset d holds
 * unsigned 1-, 2- or 4-byte integers in 1-D chunks of at most 64 Mi
 * tokens: a damaged file must not make HDF5 allocate a huge chunk buffer
 * (it reads a chunk whole however few tokens are asked for). */
mpl_status mpl_data_check_dataset(hid_t d, const char *path, const char *dname);

#endif
