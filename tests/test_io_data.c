/* Token files: prepare writes exactly the input bytes (train head, val
 * tail) and the attributes; the reader's windows form a seeded permutation
 * per epoch and read() returns exactly the requested slice, also when a
 * window is read in pieces (as sequence-parallel ranks do); errors carry
 * the right status and name the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/philox.h"
#include "core/status.h"
#include "io/data.h"
#include "tests/testutil.h"

typedef struct fixture {
    char *dir;
    char in_a[4096], in_b[4096], out[4096];
    unsigned char *all;  /* (n_all) concatenated inputs */
    int64_t n_a, n_b, n_all, n_val, n_train;
} fixture;

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Text-like bytes with every byte value present now and then. */
static void gen_bytes(unsigned char *x, int64_t n, uint64_t seed, uint64_t stream)
{
    static const char words[] = "the quick brown fox jumps over a lazy dog\n";
    for (int64_t i = 0; i < n; i++) {
        double u = mpl_philox_uniform(seed, stream, (uint64_t)i);
        x[i] = u < 0.05 ? (unsigned char)(u * 20.0 * 256.0)
                        : (unsigned char)words[(int)(u * (sizeof words - 1)) % (sizeof words - 1)];
    }
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    uint64_t seed = mpl_test_seed();
    fx->dir = mpl_test_tmpdir("io_data");
    if (!fx->dir) return -1;
    snprintf(fx->in_a, sizeof fx->in_a, "%s/a.txt", fx->dir);
    snprintf(fx->in_b, sizeof fx->in_b, "%s/b.txt", fx->dir);
    snprintf(fx->out, sizeof fx->out, "%s/data.h5", fx->dir);
    fx->n_a = 7013;
    fx->n_b = 3001;
    fx->n_all = fx->n_a + fx->n_b;
    fx->all = malloc((size_t)fx->n_all);
    gen_bytes(fx->all, fx->n_a, seed, 1);
    gen_bytes(fx->all + fx->n_a, fx->n_b, seed, 2);
    write_file(fx->in_a, fx->all, (size_t)fx->n_a);
    write_file(fx->in_b, fx->all + fx->n_a, (size_t)fx->n_b);
    const char *inputs[2] = {fx->in_a, fx->in_b};
    mpl_data_prepare_opts o = {.inputs = inputs, .n_inputs = 2, .out = fx->out, .val_fraction = 0.1};
    mpl_err_clear();
    if (mpl_data_prepare(&o) != MPL_OK) {
        mpl_err_print(stderr, "setup: ");
        return -1;
    }
    fx->n_val = 1001; /* round(0.1 * 10014) */
    fx->n_train = fx->n_all - fx->n_val;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (mpl_test_rmtree(fx->dir) != 0) return -1;
    free(fx->all);
    free(fx->dir);
    free(fx);
    return 0;
}

static void read_dataset(const char *path, const char *name, unsigned char *buf, int64_t n)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[1];
    assert_int_equal(H5Sget_simple_extent_ndims(sp), 1);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    assert_int_equal((int64_t)dims[0], n);
    hid_t dcpl = H5Dget_create_plist(d);
    /* deflate first, then Fletcher32 (checksum of the bytes on disk) */
    assert_int_equal(H5Pget_nfilters(dcpl), 2);
    unsigned flags, cd[8];
    size_t ncd = 8;
    assert_int_equal(H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL),
                     H5Z_FILTER_DEFLATE);
    ncd = 8;
    assert_int_equal(H5Pget_filter2(dcpl, 1, &flags, &ncd, cd, 0, NULL, NULL),
                     H5Z_FILTER_FLETCHER32);
    if (n > 0) assert_true(H5Dread(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_io_data_prepare_content(void **state)
{
    fixture *fx = *state;
    unsigned char *got = malloc((size_t)fx->n_all);
    read_dataset(fx->out, "tokens", got, fx->n_train);
    assert_memory_equal(got, fx->all, (size_t)fx->n_train);
    read_dataset(fx->out, "val/tokens", got, fx->n_val);
    assert_memory_equal(got, fx->all + fx->n_train, (size_t)fx->n_val);
    free(got);

    mpl_data_info info;
    assert_int_equal(mpl_data_info_read(fx->out, &info), MPL_OK);
    assert_int_equal(info.n_tokens, fx->n_train);
    assert_int_equal(info.n_val_tokens, fx->n_val);
    assert_int_equal(info.vocab_size, 256);
    assert_int_equal(info.format_version, 1);
    assert_string_equal(info.tokenizer, "bytes");
    assert_non_null(strstr(info.source, "a.txt"));
    assert_non_null(strstr(info.source, "b.txt"));
    assert_true(strstr(info.source, "a.txt") < strstr(info.source, "b.txt"));

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", fx->out);
    assert_int_not_equal(access(tmp, F_OK), 0);
    assert_int_equal(mpl_data_inspect(fx->out), MPL_OK);
}

static void test_io_data_prepare_no_val(void **state)
{
    fixture *fx = *state;
    char out[4200];
    snprintf(out, sizeof out, "%s/noval.h5", fx->dir);
    const char *inputs[1] = {fx->in_b};
    mpl_data_prepare_opts o = {.inputs = inputs, .n_inputs = 1, .out = out, .val_fraction = 0.0};
    assert_int_equal(mpl_data_prepare(&o), MPL_OK);
    mpl_data_info info;
    assert_int_equal(mpl_data_info_read(out, &info), MPL_OK);
    assert_int_equal(info.n_tokens, fx->n_b);
    assert_int_equal(info.n_val_tokens, 0);
    mpl_data_reader *r = NULL;
    mpl_err_clear();
    assert_int_equal(mpl_data_reader_open(out, "val", 8, 1, &r), MPL_ERR_FORMAT);
    assert_null(r);
    assert_non_null(strstr(mpl_err_cause(), "noval.h5"));
    mpl_err_clear();
}

static void test_io_data_reader_permutation(void **state)
{
    fixture *fx = *state;
    const int64_t L = 16;
    mpl_data_reader *r = NULL, *r2 = NULL, *r3 = NULL;
    assert_int_equal(mpl_data_reader_open(fx->out, "train", L, 7, &r), MPL_OK);
    assert_int_equal(mpl_data_reader_open(fx->out, "train", L, 7, &r2), MPL_OK);
    assert_int_equal(mpl_data_reader_open(fx->out, "train", L, 8, &r3), MPL_OK);
    int64_t nw = mpl_data_reader_n_windows(r);
    assert_int_equal(nw, (fx->n_train - 1) / L);
    char *seen = calloc((size_t)nw, 1);
    int64_t *e0 = malloc((size_t)nw * sizeof *e0);
    int64_t diff_epoch = 0, diff_seed = 0;
    for (int64_t e = 0; e < 3; e++) {
        memset(seen, 0, (size_t)nw);
        for (int64_t i = 0; i < nw; i++) {
            int64_t k = mpl_data_reader_window_of(r, e * nw + i);
            assert_true(k >= 0 && k < nw);
            assert_int_equal(seen[k], 0); /* each window exactly once per epoch */
            seen[k] = 1;
            if (e == 0) e0[i] = k;
            else diff_epoch += k != e0[i];
        }
    }
    for (int64_t i = 0; i < nw; i++) diff_seed += mpl_data_reader_window_of(r3, i) != e0[i];
    assert_true(diff_epoch > nw);   /* epochs 1 and 2 are both reshuffled */
    assert_true(diff_seed > nw / 2);
    /* Same seed, any query order (alternating epochs hits the cache): same. */
    for (int64_t i = 0; i < nw; i++) {
        int64_t g = (i % 2) ? i : 4 * nw + i;
        int64_t k2 = mpl_data_reader_window_of(r2, g);
        int64_t k1 = mpl_data_reader_window_of(r, g);
        assert_int_equal(k1, k2);
        if (g == i) assert_int_equal(k1, e0[i]);
    }
    free(e0);
    free(seen);
    mpl_data_reader_close(&r);
    mpl_data_reader_close(&r2);
    mpl_data_reader_close(&r3);
    assert_null(r);
    mpl_data_reader_close(&r); /* second close is a no-op */
}

static void test_io_data_reader_slices(void **state)
{
    fixture *fx = *state;
    uint64_t seed = mpl_test_seed();
    const int64_t L = 37;
    mpl_data_reader *r = NULL;
    assert_int_equal(mpl_data_reader_open(fx->out, "train", L, seed, &r), MPL_OK);
    int32_t buf[64], parts[64];
    for (int it = 0; it < 300; it++) {
        int64_t g = (int64_t)(mpl_philox_uniform(seed, 11, (uint64_t)it) * 2000.0);
        int64_t start = (int64_t)(mpl_philox_uniform(seed, 12, (uint64_t)it) * (double)(L + 1));
        int64_t count =
            (int64_t)(mpl_philox_uniform(seed, 13, (uint64_t)it) * (double)(L + 2 - start));
        int64_t k = mpl_data_reader_window_of(r, g);
        for (int64_t i = 0; i < 64; i++) buf[i] = -7;
        assert_int_equal(mpl_data_reader_read(r, g, start, count, buf), MPL_OK);
        for (int64_t i = 0; i < count; i++)
            assert_int_equal(buf[i], fx->all[k * L + start + i]);
        assert_int_equal(buf[count], -7); /* nothing written past count */
    }
    /* A window read in 3 uneven pieces equals one read of it. */
    for (int64_t g = 0; g < 50; g++) {
        assert_int_equal(mpl_data_reader_read(r, g, 0, L + 1, buf), MPL_OK);
        int64_t c1 = 1 + g % 5, c2 = 20 - g % 7, c3 = L + 1 - c1 - c2;
        assert_int_equal(mpl_data_reader_read(r, g, 0, c1, parts), MPL_OK);
        assert_int_equal(mpl_data_reader_read(r, g, c1, c2, parts + c1), MPL_OK);
        assert_int_equal(mpl_data_reader_read(r, g, c1 + c2, c3, parts + c1 + c2), MPL_OK);
        assert_memory_equal(parts, buf, (size_t)(L + 1) * sizeof *buf);
    }
    mpl_err_clear();
    assert_int_equal(mpl_data_reader_read(r, 0, 30, L + 1 - 29, buf), MPL_ERR_ARG);
    assert_int_equal(mpl_data_reader_read(r, -1, 0, 1, buf), MPL_ERR_ARG);
    assert_int_equal(mpl_data_reader_read(r, 0, -1, 1, buf), MPL_ERR_ARG);
    mpl_err_clear();
    mpl_data_reader_close(&r);

    /* The val split reads the tail of the stream. */
    assert_int_equal(mpl_data_reader_open(fx->out, "val", 10, seed, &r), MPL_OK);
    assert_int_equal(mpl_data_reader_n_windows(r), (fx->n_val - 1) / 10);
    int64_t k = mpl_data_reader_window_of(r, 3);
    assert_int_equal(mpl_data_reader_read(r, 3, 0, 11, buf), MPL_OK);
    for (int64_t i = 0; i < 11; i++) assert_int_equal(buf[i], fx->all[fx->n_train + k * 10 + i]);
    mpl_data_reader_close(&r);
}

/* Expect status st and a cause that names `name`. */
static void expect_err(mpl_status got, mpl_status st, const char *name)
{
    if (got != st || !strstr(mpl_err_cause(), name))
        fprintf(stderr, "got %s: '%s', want %s naming %s\n", mpl_status_str(got),
                mpl_err_cause(), mpl_status_str(st), name);
    else
        printf("#   expected %s: %s\n", mpl_status_str(got), mpl_err_cause());
    assert_int_equal(got, st);
    assert_non_null(strstr(mpl_err_cause(), name));
    mpl_err_clear();
}

static void test_io_data_errors(void **state)
{
    fixture *fx = *state;
    char p[4200];
    mpl_data_info info;
    mpl_data_reader *r = NULL;
    mpl_err_clear();

    snprintf(p, sizeof p, "%s/missing.h5", fx->dir);
    expect_err(mpl_data_info_read(p, &info), MPL_ERR_IO, "missing.h5");
    expect_err(mpl_data_reader_open(p, "train", 4, 1, &r), MPL_ERR_IO, "missing.h5");
    assert_null(r);

    snprintf(p, sizeof p, "%s/empty.h5", fx->dir);
    write_file(p, "", 0);
    expect_err(mpl_data_info_read(p, &info), MPL_ERR_FORMAT, "empty.h5");
    assert_int_equal(mpl_err_count(), 0);

    snprintf(p, sizeof p, "%s/garbage.h5", fx->dir);
    write_file(p, "this is not an HDF5 file at all, just some text\n", 48);
    expect_err(mpl_data_info_read(p, &info), MPL_ERR_FORMAT, "garbage.h5");
    expect_err(mpl_data_reader_open(p, "train", 4, 1, &r), MPL_ERR_FORMAT, "garbage.h5");

    snprintf(p, sizeof p, "%s/notokens.h5", fx->dir);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    H5Fclose(f);
    expect_err(mpl_data_info_read(p, &info), MPL_ERR_FORMAT, "notokens.h5");
    assert_int_equal(mpl_data_info_read(p, &info), MPL_ERR_FORMAT);
    assert_non_null(strstr(mpl_err_cause(), "/tokens"));
    mpl_err_clear();

    expect_err(mpl_data_reader_open(fx->out, "train", fx->n_train, 1, &r), MPL_ERR_FORMAT,
               "data.h5");
    assert_null(r);
    expect_err(mpl_data_reader_open(fx->out, "test", 4, 1, &r), MPL_ERR_ARG, "test");
    expect_err(mpl_data_reader_open(fx->out, "train", 0, 1, &r), MPL_ERR_ARG, "seq_len");
    /* seq_len = n_train - 1 is the largest that fits: exactly one window */
    assert_int_equal(mpl_data_reader_open(fx->out, "train", fx->n_train - 1, 1, &r), MPL_OK);
    assert_int_equal(mpl_data_reader_n_windows(r), 1);
    mpl_data_reader_close(&r);

    /* prepare errors */
    char out[4200], dir2[4200];
    snprintf(out, sizeof out, "%s/bad.h5", fx->dir);
    snprintf(p, sizeof p, "%s/nope.txt", fx->dir);
    const char *in1[2] = {fx->in_a, p};
    mpl_data_prepare_opts o = {.inputs = in1, .n_inputs = 2, .out = out, .val_fraction = 0.1};
    expect_err(mpl_data_prepare(&o), MPL_ERR_IO, "nope.txt");
    assert_int_not_equal(access(out, F_OK), 0);

    snprintf(p, sizeof p, "%s/empty.txt", fx->dir);
    write_file(p, "", 0);
    const char *in2[2] = {p, p};
    o.inputs = in2;
    expect_err(mpl_data_prepare(&o), MPL_ERR_ARG, "no input bytes");

    snprintf(dir2, sizeof dir2, "%s/subdir", fx->dir);
    assert_int_equal(mkdir(dir2, 0700), 0);
    const char *in3[1] = {dir2};
    o.inputs = in3;
    o.n_inputs = 1;
    expect_err(mpl_data_prepare(&o), MPL_ERR_IO, "subdir");

    snprintf(out, sizeof out, "%s/no/such/dir/x.h5", fx->dir);
    const char *in4[1] = {fx->in_a};
    o.inputs = in4;
    o.out = out;
    expect_err(mpl_data_prepare(&o), MPL_ERR_IO, "x.h5");
    o.out = fx->out;
    o.val_fraction = 1.5;
    expect_err(mpl_data_prepare(&o), MPL_ERR_ARG, "val_fraction");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_data_prepare_content),
        cmocka_unit_test(test_io_data_prepare_no_val),
        cmocka_unit_test(test_io_data_reader_permutation),
        cmocka_unit_test(test_io_data_reader_slices),
        cmocka_unit_test(test_io_data_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
