/* Internal to io/ckpt*.c: the checksum definitions shared by the writer
 * (ckpt_save.c) and the readers (ckpt.c), so both hash the same bytes.
 *   tensor hash  = FNV-1a 64 over the name (with its NUL), then the FNV-1a
 *                  step over the tensor's fp32 little-endian bytes taken as
 *                  64-bit little-endian words in four interleaved lanes
 *                  folded at the end (ckpt_save.c: fnv1a_words);
 *   group sum    = sum mod 2^64 of its tensors' hashes (order-free, so a
 *                  reader may visit datasets in any order), stored as the
 *                  group's "checksum" attribute;
 *   root checksum= FNV-1a 64 over format_version, world_size, sp, dp,
 *                  step, data_cursor, seed, rng_counter (int64 LE), config
 *                  and code_version (with NULs), then the group sums of
 *                  params, optim/m, optim/v (0 when absent). Written last:
 *                  a file without it is incomplete. */
#ifndef MPL_CKPT_INTERNAL_H
#define MPL_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

#define MPL_CKPT_FNV_BASIS 0xcbf29ce484222325ULL

extern const char *const mpl_ckpt_groups[3]; /* params, optim/m, optim/v */

/* Local. Continue an FNV-1a 64 hash over n_bytes. */
uint64_t mpl_ckpt_fnv1a(uint64_t h, const void *p, size_t n_bytes);

/* The tensor hash fed piece by piece (the chunk loops hash each chunk while
 * it is in cache): init, update with the tensor's bytes in order in any
 * number of pieces, final; the result is mpl_ckpt_tensor_hash's. */
typedef struct mpl_ckpt_hasher {
    uint64_t lane[4];
    unsigned char tail[32]; /* bytes of an unfinished 32-byte group */
    size_t n_tail;
} mpl_ckpt_hasher;
/* Local. */
void mpl_ckpt_hasher_init(mpl_ckpt_hasher *h, const char *name);
void mpl_ckpt_hasher_update(mpl_ckpt_hasher *h, const void *p, size_t n_bytes);
uint64_t mpl_ckpt_hasher_final(const mpl_ckpt_hasher *h);
/* Local. The tensor hash above. */
uint64_t mpl_ckpt_tensor_hash(const char *name, const float *x, int64_t n_elems);
/* Local. The root checksum above; group_sums[s] = 0 for an absent group. */
uint64_t mpl_ckpt_root_hash(int64_t format_version, const mpl_ckpt_state *s,
                            const mpl_ckpt_meta *meta, const uint64_t group_sums[3]);

#endif
