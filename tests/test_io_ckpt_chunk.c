/* The checkpoint chunk path (io/ckpt_chunk.h) against HDF5 itself:
 * - our Fletcher32 equals the checksum HDF5's own filter stores, for odd
 *   and even lengths, all-zero, all-0xff (sums that are multiples of 65535)
 *   and random data;
 * - chunks we write are byte for byte the chunks HDF5's filter writes for
 *   the same tensor and chunk dims (edge padding and checksum included),
 *   and stock HDF5 reads them with its Fletcher32 check on;
 * - one flipped byte in a chunk is refused by HDF5's H5Dread and by our
 *   reader, naming the tensor;
 * - the chunk plans tile every tensor exactly, the reader recognises them
 *   and leaves any other layout to HDF5; the piecewise tensor hash equals
 *   the whole one for any split. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "core/status.h"
#include "io/ckpt_chunk.h"
#include "io/ckpt_internal.h"
#include "tests/testutil.h"

static char *dir;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* 0: random, 1: all 0xff, 2: all zero, 3: sparse, 4: 0x00 0xff repeated. */
static void fill_pattern(unsigned char *b, size_t n, int pattern, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        b[i] = pattern == 0 ? (unsigned char)rng_next(s)
             : pattern == 1 ? 0xff
             : pattern == 2 ? 0
             : pattern == 3 ? (rng_next(s) % 97 == 0 ? (unsigned char)rng_next(s) : 0)
                            : (unsigned char)(i % 2 ? 0xff : 0);
}

static hid_t file_new(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

/* A dataset of `type` with chunk dims and Fletcher32 only. */
static hid_t dset_new(hid_t f, const char *name, hid_t type, int ndim, const int64_t *shape,
                      const hsize_t *chunk)
{
    hsize_t dims[MPL_TENSOR_NDIM_MAX];
    for (int k = 0; k < ndim; k++) dims[k] = (hsize_t)shape[k];
    hid_t sp = H5Screate_simple(ndim, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(H5Pset_chunk(dcpl, ndim, chunk) >= 0);
    assert_true(H5Pset_fletcher32(dcpl) >= 0);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* HDF5's filter computes the checksum of n bytes (one chunk of a 1-D byte
 * dataset): the last 4 bytes of the raw chunk. */
static void test_io_ckpt_chunk_fletcher32_matches_hdf5(void **state)
{
    (void)state;
    static const size_t lens[] = {1,    2,    3,     7,     31,    32,    33,     63,    359,
                                  360,  361,  719,   720,   721,   5759,  5760,   5761,  5762,
                                  11520, 11521, 65535, 65536, 65537, 262147, 1048576, 1048579};
    const int n_lens = (int)(sizeof lens / sizeof lens[0]);
    uint64_t s = mpl_test_seed() | 1;
    hid_t f = file_new("fletcher.h5");
    unsigned char *b = malloc(1048579 + 4), *raw = malloc(1048579 + 4);
    assert_non_null(b);
    assert_non_null(raw);
    int n_cases = 0;
    assert_int_equal(mpl_h5_fletcher32(b, 0), 0); /* HDF5: both sums start at 0 */
    for (int li = 0; li < n_lens; li++)
        for (int pat = 0; pat < 5; pat++) {
            size_t n = lens[li];
            char name[64];
            snprintf(name, sizeof name, "n%zu_p%d", n, pat);
            fill_pattern(b, n, pat, &s);
            hsize_t chunk = n;
            hid_t d = dset_new(f, name, H5T_NATIVE_UCHAR, 1, (int64_t[]){(int64_t)n}, &chunk);
            assert_true(H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0);
            assert_true(H5Dflush(d) >= 0);
            hsize_t off = 0, stored = 0;
            uint32_t mask = 1;
            assert_true(H5Dget_chunk_storage_size(d, &off, &stored) >= 0);
            assert_int_equal(stored, n + 4);
            assert_true(H5Dread_chunk(d, H5P_DEFAULT, &off, &mask, raw) >= 0);
            assert_int_equal(mask, 0);
            uint32_t want = le32(raw + n), have = mpl_h5_fletcher32(b, n);
            if (have != want)
                fprintf(stderr, "n=%zu pattern %d: ours %08x, HDF5 %08x\n", n, pat, have, want);
            assert_int_equal(have, want);
            H5Dclose(d);
            n_cases++;
        }
    printf("# fletcher32: %d lengths x 5 patterns equal to HDF5's filter\n", n_cases / 5);
    free(b);
    free(raw);
    H5Fclose(f);
}

typedef struct shape_case {
    int ndim;
    int64_t shape[MPL_TENSOR_NDIM_MAX];
    int64_t max_elems;
} shape_case;

/* Shapes whose plans split each dimension, with partial edge chunks. */
static const shape_case shapes[] = {
    {2, {7, 5}, 1 << 20},      {1, {13}, 1 << 20},      {1, {1000}, 96},
    {2, {1000, 3}, 100},        {3, {3, 4, 2}, 3},       {4, {2, 3, 5, 7}, 12},
    {4, {2, 3, 5, 7}, 1},       {2, {3, 1000}, 64},      {3, {5, 1, 9}, 20},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static int64_t n_of(const shape_case *c)
{
    int64_t n = 1;
    for (int k = 0; k < c->ndim; k++) n *= c->shape[k];
    return n;
}

/* Chunks within max_elems, their dims multiply to chunk_elems, and the
 * reader recognises a dataset made with them as the same plan (that every
 * element lands in its place is the next test's byte comparison). */
static void test_io_ckpt_chunk_plan_tiles(void **state)
{
    (void)state;
    for (int ci = 0; ci < N_SHAPES; ci++) {
        const shape_case *c = &shapes[ci];
        mpl_ckpt_chunking ck;
        mpl_ckpt_chunking_plan(c->ndim, c->shape, c->max_elems, &ck);
        int64_t chunk_elems = 1;
        for (int k = 0; k < c->ndim; k++) chunk_elems *= (int64_t)ck.chunk[k];
        assert_int_equal(chunk_elems, ck.chunk_elems);
        assert_true(ck.chunk_elems <= c->max_elems);
        hid_t f = file_new("plan.h5");
        hid_t d = dset_new(f, "x", H5T_IEEE_F32LE, c->ndim, c->shape, ck.chunk);
        mpl_ckpt_chunking back;
        assert_int_equal(mpl_ckpt_chunking_of(d, c->ndim, c->shape, &back), 1);
        assert_int_equal(back.split, ck.split);
        assert_int_equal(back.n_chunks, ck.n_chunks);
        assert_int_equal(back.chunk_elems, ck.chunk_elems);
        H5Dclose(d);
        H5Fclose(f);
        printf("# plan (%lld", (long long)c->shape[0]);
        for (int k = 1; k < c->ndim; k++) printf(", %lld", (long long)c->shape[k]);
        printf(") max %lld: split %d, %lld chunks of %lld\n", (long long)c->max_elems, ck.split,
               (long long)ck.n_chunks, (long long)ck.chunk_elems);
    }
}

/* Same tensor through our chunk writer and through HDF5's H5Dwrite with
 * the same chunk dims: identical raw chunks; stock H5Dread (Fletcher32
 * checked) returns the tensor; our reader does too, hashing as it goes. */
static void test_io_ckpt_chunk_write_equals_hdf5_filter(void **state)
{
    (void)state;
    for (int ci = 0; ci < N_SHAPES; ci++) {
        const shape_case *c = &shapes[ci];
        int64_t n = n_of(c);
        mpl_ckpt_chunking ck;
        mpl_ckpt_chunking_plan(c->ndim, c->shape, c->max_elems, &ck);
        float *x = mpl_test_falloc(n), *y = mpl_test_falloc(n);
        mpl_test_fill_f32(x, n, mpl_test_seed(), (uint64_t)ci, -2, 2);
        size_t nb = mpl_ckpt_chunking_buf_bytes(&ck);
        unsigned char *buf = malloc(nb), *ra = malloc(nb), *rb = malloc(nb);
        assert_non_null(buf);
        assert_non_null(ra);
        assert_non_null(rb);
        hid_t f = file_new("same.h5");
        hid_t da = dset_new(f, "ours", H5T_IEEE_F32LE, c->ndim, c->shape, ck.chunk);
        hid_t db = dset_new(f, "hdf5", H5T_IEEE_F32LE, c->ndim, c->shape, ck.chunk);
        mpl_ckpt_hasher h;
        mpl_ckpt_hasher_init(&h, "t");
        assert_int_equal(mpl_ckpt_chunks_write(da, &ck, x, 0, ck.n_chunks, buf, &h), MPL_OK);
        assert_int_equal(mpl_ckpt_hasher_final(&h), mpl_ckpt_tensor_hash("t", x, n));
        assert_true(H5Dwrite(db, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
        assert_true(H5Dflush(db) >= 0);
        hid_t sp = H5Dget_space(da);
        hsize_t n_chunks = 0;
        assert_true(H5Dget_num_chunks(da, sp, &n_chunks) >= 0);
        assert_int_equal((int64_t)n_chunks, ck.n_chunks);
        for (hsize_t i = 0; i < n_chunks; i++) {
            hsize_t off[MPL_TENSOR_NDIM_MAX], sa = 0, sb = 0;
            uint32_t ma = 1, mb = 1;
            assert_true(H5Dget_chunk_info(da, sp, i, off, NULL, NULL, &sa) >= 0);
            assert_true(H5Dget_chunk_storage_size(db, off, &sb) >= 0);
            assert_int_equal(sa, nb);
            assert_int_equal(sb, nb);
            assert_true(H5Dread_chunk(da, H5P_DEFAULT, off, &ma, ra) >= 0);
            assert_true(H5Dread_chunk(db, H5P_DEFAULT, off, &mb, rb) >= 0);
            assert_int_equal(ma, 0);
            assert_int_equal(mb, 0);
            assert_memory_equal(ra, rb, nb);
        }
        H5Sclose(sp);
        assert_true(H5Dread(da, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
        assert_memory_equal(x, y, (size_t)n * sizeof *x);
        for (int which = 0; which < 2; which++) { /* our reader, on both datasets */
            int done = 0;
            memset(y, 0, (size_t)n * sizeof *y);
            mpl_ckpt_hasher_init(&h, "t");
            assert_int_equal(mpl_ckpt_chunks_read(which ? db : da, &ck, y, buf, &h, "same.h5",
                                                  "t", &done),
                             MPL_OK);
            assert_int_equal(done, 1);
            assert_memory_equal(x, y, (size_t)n * sizeof *x);
            assert_int_equal(mpl_ckpt_hasher_final(&h), mpl_ckpt_tensor_hash("t", x, n));
        }
        printf("# shape %d of %d: %lld chunks byte-equal to HDF5's filter, read back by H5Dread "
               "and by ours\n", ci + 1, N_SHAPES, (long long)ck.n_chunks);
        H5Dclose(da);
        H5Dclose(db);
        H5Fclose(f);
        free(buf);
        free(ra);
        free(rb);
        free(x);
        free(y);
    }
}

/* Flip one byte of a chunk in the file (data or stored checksum): HDF5's
 * own read fails, and so does ours, naming the tensor and chunk. */
static void test_io_ckpt_chunk_flip_detected(void **state)
{
    (void)state;
    const int64_t shape[2] = {100, 30};
    const int64_t n = 3000;
    char path[4200];
    snprintf(path, sizeof path, "%s/flip.h5", dir);
    mpl_ckpt_chunking ck;
    mpl_ckpt_chunking_plan(2, shape, 1000, &ck); /* 3 full chunks of 33 rows, one of 1 */
    float *x = mpl_test_falloc(n), *y = mpl_test_falloc(n);
    mpl_test_fill_f32(x, n, mpl_test_seed(), 9, -1, 1);
    unsigned char *buf = malloc(mpl_ckpt_chunking_buf_bytes(&ck));
    assert_non_null(buf);
    size_t full = (size_t)ck.chunk_elems * sizeof(float);
    /* byte positions within chunk 1: first data byte, middle, checksum */
    const size_t at[3] = {0, full / 2 + 1, full + 2};
    for (int w = 0; w < 3; w++) {
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hid_t d = dset_new(f, "x", H5T_IEEE_F32LE, 2, shape, ck.chunk);
        assert_int_equal(mpl_ckpt_chunks_write(d, &ck, x, 0, ck.n_chunks, buf, NULL), MPL_OK);
        hid_t sp = H5Dget_space(d);
        haddr_t addr = 0;
        assert_true(H5Dget_chunk_info(d, sp, 1, NULL, NULL, &addr, NULL) >= 0);
        H5Sclose(sp);
        H5Dclose(d);
        H5Fclose(f);
        FILE *fp = fopen(path, "r+b");
        assert_non_null(fp);
        assert_int_equal(fseek(fp, (long)(addr + at[w]), SEEK_SET), 0);
        int c = fgetc(fp);
        assert_int_equal(fseek(fp, (long)(addr + at[w]), SEEK_SET), 0);
        fputc(c ^ 0x10, fp);
        fclose(fp);

        f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        d = H5Dopen2(f, "x", H5P_DEFAULT);
        H5E_auto2_t fn;
        void *data;
        H5Eget_auto2(H5E_DEFAULT, &fn, &data);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) < 0);
        H5Eset_auto2(H5E_DEFAULT, fn, data);
        int done = 0;
        mpl_status st = mpl_ckpt_chunks_read(d, &ck, y, buf, NULL, path, "'x'", &done);
        printf("# flipped byte %zu of chunk 1: H5Dread refused; ours: %s\n", at[w],
               mpl_err_cause());
        assert_int_equal(st, MPL_ERR_FORMAT);
        assert_non_null(strstr(mpl_err_cause(), "Fletcher32 checksum mismatch in chunk 1"));
        assert_non_null(strstr(mpl_err_cause(), "'x'"));
        mpl_err_clear();
        H5Dclose(d);
        H5Fclose(f);
    }
    free(buf);
    free(x);
    free(y);
}

/* Layouts the writer does not make are left to HDF5: chunks that are not
 * whole trailing rows, another filter in the pipeline, no Fletcher32. */
static void test_io_ckpt_chunk_other_layouts(void **state)
{
    (void)state;
    const int64_t shape[2] = {8, 8};
    hid_t f = file_new("other.h5");
    mpl_ckpt_chunking ck;
    hid_t d = dset_new(f, "square", H5T_IEEE_F32LE, 2, shape, (hsize_t[]){4, 4});
    assert_int_equal(mpl_ckpt_chunking_of(d, 2, shape, &ck), 0);
    H5Dclose(d);
    hsize_t dims[2] = {8, 8}, chunk[2] = {2, 8};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    for (int v = 0; v < 2; v++) {
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        assert_true(H5Pset_chunk(dcpl, 2, chunk) >= 0);
        if (v == 0) {
            assert_true(H5Pset_deflate(dcpl, 1) >= 0);
            assert_true(H5Pset_fletcher32(dcpl) >= 0);
        }
        d = H5Dcreate2(f, v ? "plain" : "deflated", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl,
                       H5P_DEFAULT);
        assert_true(d >= 0);
        assert_int_equal(mpl_ckpt_chunking_of(d, 2, shape, &ck), 0);
        H5Dclose(d);
        H5Pclose(dcpl);
    }
    H5Sclose(sp);
    H5Fclose(f);
}

/* The hash fed in pieces of every size from 1 to 70 bytes, and in random
 * pieces, equals the hash of the whole. */
static void test_io_ckpt_chunk_hasher_pieces(void **state)
{
    (void)state;
    const int64_t n = 1001; /* 4004 bytes: not a multiple of 8 or 32 */
    float *x = mpl_test_falloc(n);
    mpl_test_fill_f32(x, n, mpl_test_seed(), 4, -1, 1);
    uint64_t want = mpl_ckpt_tensor_hash("blk0.w", x, n), s = mpl_test_seed() | 1;
    const unsigned char *b = (const unsigned char *)x;
    size_t nb = (size_t)n * sizeof *x;
    for (size_t piece = 0; piece <= 70; piece++) {
        mpl_ckpt_hasher h;
        mpl_ckpt_hasher_init(&h, "blk0.w");
        for (size_t i = 0; i < nb;) {
            size_t k = piece ? piece : 1 + rng_next(&s) % 97;
            if (k > nb - i) k = nb - i;
            mpl_ckpt_hasher_update(&h, b + i, k);
            i += k;
        }
        assert_int_equal(mpl_ckpt_hasher_final(&h), want);
    }
    free(x);
}

int main(void)
{
    dir = mpl_test_tmpdir("io_ckpt_chunk");
    if (!dir) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_ckpt_chunk_fletcher32_matches_hdf5),
        cmocka_unit_test(test_io_ckpt_chunk_plan_tiles),
        cmocka_unit_test(test_io_ckpt_chunk_write_equals_hdf5_filter),
        cmocka_unit_test(test_io_ckpt_chunk_flip_detected),
        cmocka_unit_test(test_io_ckpt_chunk_other_layouts),
        cmocka_unit_test(test_io_ckpt_chunk_hasher_pieces),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (mpl_test_rmtree(dir) != 0) fprintf(stderr, "could not remove %s\n", dir);
    free(dir);
    return rc;
}
