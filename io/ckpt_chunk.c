/* Direct chunk I/O for checkpoints and HDF5's Fletcher32 (ckpt_chunk.h).
 * Its own file: the checksum arithmetic and the chunk geometry are what
 * must match HDF5 bit for bit, and are tested against HDF5 on their own. */
#include "ckpt_chunk.h"

#include <string.h>

#include "h5util.h"

/* Chunks go to disk as the bytes of the floats in memory, so the host must
 * store floats as the file's H5T_IEEE_F32LE does. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "direct chunk writes store native floats as IEEE F32LE");

/* ---- Fletcher32 --------------------------------------------------------
 * HDF5 sums the big-endian 16-bit words w_0 .. w_{n-1} with end-around
 * carry (modulo 65535):  sum1 = sum_t w_t,  sum2 = sum_t (n - t) w_t.
 * Two facts make that fast:
 *  - swapping a word's bytes multiplies it by 256 modulo 65535
 *    (lo*256 + hi = 256*(hi*256 + lo) - hi*65535), and both sums are
 *    linear, so we sum little-endian words (plain loads) and multiply the
 *    sums by 256 at the end;
 *  - 16 lanes: lane j takes words j, j+16, j+32, ... with its own sums a_j
 *    (of its words) and s_j (of its running a_j). For a block of m rows of
 *    16 words, sum1 gains sum_j a_j and sum2 gains
 *    16m * sum1_before + sum_j (16 s_j - j a_j), so the lanes vectorise
 *    and no word waits for the one before. 32-bit s_j overflow after 361
 *    rows (m(m+1)/2 * 65535 < 2^32), so a block has at most 360.
 * HDF5 reduces with (x & 0xffff) + (x >> 16), which keeps a positive sum
 * positive: a nonzero multiple of 65535 comes out as 0xffff, and 0 only
 * when every word is 0. */
#define F32_LANES 16
#define F32_ROWS 360
#define F32_MOD 65535u

static inline uint32_t load_le16(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8;
}

static int all_zero(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

uint32_t mpl_h5_fletcher32(const void *p, size_t n_bytes)
{
    const unsigned char *b = p;
    size_t n_words = n_bytes / 2, t = 0;
    uint64_t s1 = 0, s2 = 0; /* modulo 65535, of the little-endian words */
    while (n_words - t >= F32_LANES) {
        size_t m = (n_words - t) / F32_LANES;
        if (m > F32_ROWS) m = F32_ROWS;
        uint32_t a[F32_LANES] = {0}, s[F32_LANES] = {0};
        const unsigned char *row = b + 2 * t;
        for (size_t k = 0; k < m; k++, row += 2 * F32_LANES)
            for (int j = 0; j < F32_LANES; j++) {
                a[j] += load_le16(row + 2 * j);
                s[j] += a[j];
            }
        uint64_t sum_a = 0, sum_s = 0, sum_ja = 0;
        for (int j = 0; j < F32_LANES; j++) {
            sum_a += a[j];
            sum_s += (uint64_t)F32_LANES * s[j];
            sum_ja += (uint64_t)j * a[j];
        }
        uint64_t n_blk = (uint64_t)m * F32_LANES;
        s2 = (s2 + n_blk % F32_MOD * s1 + sum_s % F32_MOD + F32_MOD - sum_ja % F32_MOD) % F32_MOD;
        s1 = (s1 + sum_a) % F32_MOD;
        t += m * F32_LANES;
    }
    for (; t < n_words; t++) {
        s1 = (s1 + load_le16(b + 2 * t)) % F32_MOD;
        s2 = (s2 + s1) % F32_MOD;
    }
    /* An odd last byte is the high byte of a last word: as a little-endian
     * word it is the low byte, and the final *256 moves it up. */
    if (n_bytes % 2) {
        s1 = (s1 + b[n_bytes - 1]) % F32_MOD;
        s2 = (s2 + s1) % F32_MOD;
    }
    s1 = s1 * 256 % F32_MOD;
    s2 = s2 * 256 % F32_MOD;
    if ((s1 == 0 || s2 == 0) && !all_zero(b, n_bytes)) {
        if (s1 == 0) s1 = 0xffff;
        if (s2 == 0) s2 = 0xffff;
    }
    return (uint32_t)(s2 << 16 | s1);
}

static void store_le32(unsigned char *b, uint32_t v)
{
    for (int k = 0; k < 4; k++) b[k] = (unsigned char)(v >> (8 * k));
}

static uint32_t load_le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* ---- chunk geometry ---------------------------------------------------- */

static int64_t dim1(int64_t n)
{
    return n > 0 ? n : 1; /* a chunk dim is >= 1 even for an empty dimension */
}

/* Fill ck for chunks of c indices of dimension `split`. */
static void chunking_fill(mpl_ckpt_chunking *ck, int ndim, const int64_t *shape, int split,
                          int64_t c)
{
    int64_t n_elems = 1, outer = 1;
    memset(ck, 0, sizeof *ck);
    ck->ndim = ndim;
    ck->split = split;
    ck->inner = 1;
    for (int k = 0; k < ndim; k++) {
        ck->shape[k] = shape[k];
        n_elems *= shape[k];
        if (k < split) {
            ck->chunk[k] = 1;
            outer *= shape[k];
        } else if (k > split) {
            ck->chunk[k] = (hsize_t)dim1(shape[k]);
            ck->inner *= dim1(shape[k]);
        }
    }
    ck->chunk[split] = (hsize_t)c;
    ck->per_split = (dim1(shape[split]) + c - 1) / c;
    ck->n_chunks = n_elems > 0 ? outer * ck->per_split : 0;
    ck->chunk_elems = c * ck->inner;
}

void mpl_ckpt_chunking_plan(int ndim, const int64_t *shape, int64_t max_elems,
                            mpl_ckpt_chunking *ck)
{
    if (max_elems < 1) max_elems = 1;
    int split = ndim - 1;
    int64_t inner = 1;
    while (split > 0 && inner * dim1(shape[split]) <= max_elems) inner *= dim1(shape[split--]);
    int64_t c = max_elems / inner;
    chunking_fill(ck, ndim, shape, split, c < dim1(shape[split]) ? c : dim1(shape[split]));
}

size_t mpl_ckpt_chunking_buf_bytes(const mpl_ckpt_chunking *ck)
{
    return (size_t)ck->chunk_elems * sizeof(float) + MPL_H5_FLETCHER32_BYTES;
}

/* Chunk i: its offset in the dataset (for HDF5) and its run of the
 * row-major tensor, [*first, *first + *n) elements. */
static void chunk_locate(const mpl_ckpt_chunking *ck, int64_t i, hsize_t *off, int64_t *first,
                         int64_t *n)
{
    int64_t o = i / ck->per_split, q = i % ck->per_split, c = (int64_t)ck->chunk[ck->split];
    int64_t len = ck->shape[ck->split], rest = o;
    for (int k = ck->ndim - 1; k >= 0; k--) {
        if (k > ck->split) {
            off[k] = 0;
        } else if (k < ck->split) {
            off[k] = (hsize_t)(rest % ck->shape[k]);
            rest /= ck->shape[k];
        }
    }
    off[ck->split] = (hsize_t)(q * c);
    *first = (o * len + q * c) * ck->inner;
    *n = (len - q * c < c ? len - q * c : c) * ck->inner;
}

/* ---- write and read ---------------------------------------------------- */

mpl_status mpl_ckpt_chunks_write(hid_t d, const mpl_ckpt_chunking *ck, const float *x,
                                 int64_t c0, int64_t c1, unsigned char *buf, mpl_ckpt_hasher *h)
{
    size_t full = (size_t)ck->chunk_elems * sizeof(float);
    for (int64_t i = c0; i < c1; i++) {
        hsize_t off[MPL_TENSOR_NDIM_MAX];
        int64_t first, n;
        chunk_locate(ck, i, off, &first, &n);
        size_t nb = (size_t)n * sizeof(float);
        memcpy(buf, x + first, nb);
        if (h) mpl_ckpt_hasher_update(h, buf, nb);
        /* HDF5 pads an edge chunk with the fill value, 0. */
        if (nb < full) memset(buf + nb, 0, full - nb);
        store_le32(buf + full, mpl_h5_fletcher32(buf, full));
        MPL_H5(H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, full + MPL_H5_FLETCHER32_BYTES, buf));
    }
    return MPL_OK;
}

int mpl_ckpt_chunking_of(hid_t d, int ndim, const int64_t *shape, mpl_ckpt_chunking *ck)
{
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[MPL_TENSOR_NDIM_MAX];
    unsigned flags = 0, cd[8];
    size_t n_cd = 8;
    int ok = dcpl >= 0 && ndim >= 1 && ndim <= MPL_TENSOR_NDIM_MAX &&
             H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_nfilters(dcpl) == 1 &&
             H5Pget_filter2(dcpl, 0, &flags, &n_cd, cd, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32 &&
             H5Pget_chunk(dcpl, ndim, chunk) == ndim;
    if (dcpl >= 0) H5Pclose(dcpl);
    if (!ok) return 0;
    /* The tiled form: whole trailing dims, 1 before `split`. */
    int split = ndim - 1;
    while (split > 0 && chunk[split] == (hsize_t)dim1(shape[split])) split--;
    for (int k = 0; k < split; k++)
        if (chunk[k] != 1) return 0;
    if (chunk[split] < 1 || chunk[split] > (hsize_t)dim1(shape[split])) return 0;
    chunking_fill(ck, ndim, shape, split, (int64_t)chunk[split]);
    return 1;
}

mpl_status mpl_ckpt_chunks_read(hid_t d, const mpl_ckpt_chunking *ck, float *x,
                                unsigned char *buf, mpl_ckpt_hasher *h, const char *path,
                                const char *what, int *done)
{
    size_t full = (size_t)ck->chunk_elems * sizeof(float);
    *done = 0;
    for (int64_t i = 0; i < ck->n_chunks; i++) {
        hsize_t off[MPL_TENSOR_NDIM_MAX], stored = 0;
        uint32_t mask = 0;
        int64_t first, n;
        chunk_locate(ck, i, off, &first, &n);
        /* Anything else (a skipped filter, another size, no chunk): HDF5's
         * own read path decides. The size check also keeps buf in bounds. */
        if (H5Dget_chunk_storage_size(d, off, &stored) < 0 ||
            stored != full + MPL_H5_FLETCHER32_BYTES) {
            H5Eclear2(H5E_DEFAULT);
            return MPL_OK;
        }
        /* A full chunk that is not the tensor's last is read straight into
         * x: its 4 checksum bytes land on the next chunk's first element,
         * which that chunk's read overwrites. That saves a copy of every
         * byte (a fifth of a warm load); a destination off a 64-byte line
         * would copy 3x slower than the buffer, so those go through it. */
        unsigned char *dst = (unsigned char *)(x + first);
        int direct = n == ck->chunk_elems && i + 1 < ck->n_chunks && ((uintptr_t)dst & 63) == 0;
        if (!direct) dst = buf;
        MPL_H5(H5Dread_chunk(d, H5P_DEFAULT, off, &mask, dst));
        if (mask != 0) return MPL_OK;
        uint32_t have = mpl_h5_fletcher32(dst, full), want = load_le32(dst + full);
        /* HDF5 also accepts the sum of its pre-1.6.3 bug: bytes of each
         * 16-bit half swapped. */
        uint32_t swapped = (have & 0x00ff00ffu) << 8 | (have >> 8 & 0x00ff00ffu);
        if (want != have && want != swapped)
            return mpl_err(MPL_ERR_FORMAT,
                           "%s: Fletcher32 checksum mismatch in chunk %lld of tensor %s (stored "
                           "%08x, data sums to %08x): the file is corrupt", path, (long long)i,
                           what, (unsigned)want, (unsigned)have);
        if (h) mpl_ckpt_hasher_update(h, dst, (size_t)n * sizeof(float));
        if (!direct) memcpy(x + first, buf, (size_t)n * sizeof(float));
    }
    *done = 1;
    return MPL_OK;
}
