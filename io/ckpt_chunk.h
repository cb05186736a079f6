/* Internal to io/ckpt*.c: a tensor's checkpoint chunks written and read
 * raw (H5Dwrite_chunk / H5Dread_chunk) with the Fletcher32 checksum
 * computed here instead of by HDF5's filter. The bytes on disk are exactly
 * what HDF5's own Fletcher32 filter writes (the chunk, zero-padded at the
 * edge, then the checksum as a 32-bit little-endian word), so stock HDF5
 * readers (h5dump, h5py) verify them as usual; HDF5's filter path costs
 * a chunk-sized allocation, two copies and a byte-at-a-time checksum per
 * chunk, which is most of a save on a fast disk.
 *
 * Chunks tile one dimension `split` of the tensor: every dimension before it
 * is 1 in the chunk and every dimension after it is whole, so each chunk is
 * one contiguous run of the row-major tensor (the last chunk along `split`
 * may be partial; HDF5 stores it full size, the tail zero). */
#ifndef MPL_CKPT_CHUNK_H
#define MPL_CKPT_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "../core/slab.h"
#include "../core/status.h"
#include "ckpt_internal.h"

/* Bytes HDF5's Fletcher32 filter appends to a chunk. */
#define MPL_H5_FLETCHER32_BYTES 4

/* Local. HDF5's Fletcher32 (H5_checksum_fletcher32) of n_bytes: sums of the
 * data read as big-endian 16-bit words (an odd last byte is the high byte
 * of a last word), modulo 65535 with 0xffff kept for a nonzero multiple,
 * returned as (sum2 << 16) | sum1. Bit-identical to HDF5's for every input,
 * about 10x faster (16 independent lanes instead of one chain). */
uint32_t mpl_h5_fletcher32(const void *p, size_t n_bytes);

typedef struct mpl_ckpt_chunking {
    int ndim;
    hsize_t chunk[MPL_TENSOR_NDIM_MAX]; /* chunk dims, for H5Pset_chunk */
    int split;                          /* the dimension the chunks tile */
    int64_t shape[MPL_TENSOR_NDIM_MAX];
    int64_t inner;        /* elements per index of `split` */
    int64_t per_split;    /* chunks along `split` */
    int64_t n_chunks;     /* 0 when the tensor is empty */
    int64_t chunk_elems;  /* elements in a (full) chunk */
} mpl_ckpt_chunking;

/* Local. The chunking of a tensor of `shape` (ndim >= 1) with as many
 * elements per chunk as fit in max_elems (>= 1): `split` is the first
 * dimension whose trailing dimensions fit, and the chunk takes as many of
 * its indices as fit. */
void mpl_ckpt_chunking_plan(int ndim, const int64_t *shape, int64_t max_elems,
                            mpl_ckpt_chunking *ck);

/* Local. Bytes of the buffer the chunk functions need for ck. */
size_t mpl_ckpt_chunking_buf_bytes(const mpl_ckpt_chunking *ck);

/* Local. Write chunks [c0, c1) of tensor x (row-major, of ck's shape) to
 * dataset d, created with ck->chunk and Fletcher32 as its only filter,
 * through buf (mpl_ckpt_chunking_buf_bytes), each with the default
 * transfer (independent under MPI-IO: a chunk has one writer). h (may be
 * NULL) is fed the chunks' elements in order. */
mpl_status mpl_ckpt_chunks_write(hid_t d, const mpl_ckpt_chunking *ck, const float *x,
                                 int64_t c0, int64_t c1, unsigned char *buf, mpl_ckpt_hasher *h);

/* Local. If dataset d (of the given shape) is stored the way
 * mpl_ckpt_chunks_write stores it (Fletcher32 the only filter, chunk dims of
 * the tiled form), fill *ck and return 1; else 0 (read it with H5Dread). */
int mpl_ckpt_chunking_of(hid_t d, int ndim, const int64_t *shape, mpl_ckpt_chunking *ck);

/* Local. Read every chunk of d (ck from mpl_ckpt_chunking_of) into x
 * through buf, verifying each chunk's Fletcher32 as HDF5 does (which also
 * accepts the byte-swapped sum of HDF5 < 1.6.3) and feeding h (may be NULL)
 * the elements in order. *done = 0 with MPL_OK when a chunk is not what the
 * writer makes (filter skipped, other size, missing): the caller then reads
 * the dataset through HDF5 (and restarts h). A checksum mismatch is
 * MPL_ERR_FORMAT naming path, what and the chunk. */
mpl_status mpl_ckpt_chunks_read(hid_t d, const mpl_ckpt_chunking *ck, float *x,
                                unsigned char *buf, mpl_ckpt_hasher *h, const char *path,
                                const char *what, int *done);

#endif
