/* The checksums defined in ckpt_internal.h (the tensor hash, whole or fed
 * piece by piece, and the root checksum), shared by the writer and the
 * readers, whose chunk loops hash each chunk while it is in cache. */
#include <string.h>

#include "ckpt_internal.h"

#define FNV_PRIME 0x100000001b3ULL

const char *const mpl_ckpt_groups[3] = {"params", "optim/m", "optim/v"};

uint64_t mpl_ckpt_fnv1a(uint64_t h, const void *p, size_t n_bytes)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n_bytes; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* FNV-1a's step over 64-bit little-endian words, in four interleaved
 * lanes (words i, i+1, i+2, i+3 of each group of four go to lanes 0..3)
 * folded together at the end: the same mixing with 32x fewer dependent
 * multiplies than bytewise FNV, so hashing a slab costs little next to
 * writing it. Tail words and bytes go through lane 0. The hasher keeps an
 * unfinished group between pieces, so any split gives the same hash. */
static uint64_t load_le64(const unsigned char *b)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t w;
    memcpy(&w, b, 8);
    return w;
#else
    uint64_t w = 0;
    for (int k = 0; k < 8; k++) w |= (uint64_t)b[k] << (8 * k);
    return w;
#endif
}

static void hash_groups(uint64_t *l, const unsigned char *b, size_t n_groups)
{
    uint64_t l0 = l[0], l1 = l[1], l2 = l[2], l3 = l[3];
    for (size_t i = 0; i < n_groups; i++, b += 32) {
        l0 = (l0 ^ load_le64(b)) * FNV_PRIME;
        l1 = (l1 ^ load_le64(b + 8)) * FNV_PRIME;
        l2 = (l2 ^ load_le64(b + 16)) * FNV_PRIME;
        l3 = (l3 ^ load_le64(b + 24)) * FNV_PRIME;
    }
    l[0] = l0;
    l[1] = l1;
    l[2] = l2;
    l[3] = l3;
}

void mpl_ckpt_hasher_init(mpl_ckpt_hasher *h, const char *name)
{
    uint64_t h0 = mpl_ckpt_fnv1a(MPL_CKPT_FNV_BASIS, name, strlen(name) + 1);
    for (int k = 0; k < 4; k++) h->lane[k] = h0 ^ (uint64_t)k;
    h->n_tail = 0;
}

void mpl_ckpt_hasher_update(mpl_ckpt_hasher *h, const void *p, size_t n_bytes)
{
    const unsigned char *b = p;
    if (h->n_tail > 0) {
        size_t k = 32 - h->n_tail < n_bytes ? 32 - h->n_tail : n_bytes;
        memcpy(h->tail + h->n_tail, b, k);
        h->n_tail += k;
        b += k;
        n_bytes -= k;
        if (h->n_tail < 32) return;
        hash_groups(h->lane, h->tail, 1);
        h->n_tail = 0;
    }
    hash_groups(h->lane, b, n_bytes / 32);
    h->n_tail = n_bytes % 32;
    memcpy(h->tail, b + n_bytes - h->n_tail, h->n_tail);
}

uint64_t mpl_ckpt_hasher_final(const mpl_ckpt_hasher *h)
{
    uint64_t l0 = h->lane[0];
    size_t i = 0;
    for (; i + 8 <= h->n_tail; i += 8) l0 = (l0 ^ load_le64(h->tail + i)) * FNV_PRIME;
    uint64_t r = mpl_ckpt_fnv1a(l0, h->tail + i, h->n_tail - i);
    for (int k = 1; k < 4; k++) r = (r ^ h->lane[k]) * FNV_PRIME;
    return r;
}

uint64_t mpl_ckpt_tensor_hash(const char *name, const float *x, int64_t n_elems)
{
    mpl_ckpt_hasher h;
    mpl_ckpt_hasher_init(&h, name);
    mpl_ckpt_hasher_update(&h, x, (size_t)n_elems * sizeof *x);
    return mpl_ckpt_hasher_final(&h);
}

static uint64_t fnv_i64(uint64_t h, int64_t v)
{
    unsigned char b[8]; /* little-endian whatever the host */
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)v >> (8 * k));
    return mpl_ckpt_fnv1a(h, b, 8);
}

uint64_t mpl_ckpt_root_hash(int64_t format_version, const mpl_ckpt_state *s,
                            const mpl_ckpt_meta *meta, const uint64_t group_sums[3])
{
    const char *cfg = meta && meta->config_text ? meta->config_text : "";
    const char *code = meta && meta->code_version ? meta->code_version : "";
    int64_t v[8] = {format_version, meta ? meta->world_size : 0, meta ? meta->sp : 0,
                    meta ? meta->dp : 0, s->step, s->data_cursor, s->seed, s->rng_counter};
    uint64_t h = MPL_CKPT_FNV_BASIS;
    for (int i = 0; i < 8; i++) h = fnv_i64(h, v[i]);
    h = mpl_ckpt_fnv1a(h, cfg, strlen(cfg) + 1);
    h = mpl_ckpt_fnv1a(h, code, strlen(code) + 1);
    for (int i = 0; i < 3; i++) h = fnv_i64(h, (int64_t)group_sums[i]);
    return h;
}
