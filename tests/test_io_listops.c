/* ListOps: generation is deterministic per seed and differs across seeds;
 * every stored example is well formed (length 501..1999, zero padding,
 * vocabulary tokens only, no duplicates) and its label is what the
 * independent evaluator computes; the evaluator is right on hand-written
 * expressions and rejects malformed ones; bad options are MPL_ERR_ARG. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/status.h"
#include "io/listops.h"
#include "tests/testutil.h"

#define N_TRAIN 200
#define N_VAL 20
#define N_TEST 20

typedef struct fixture {
    char *dir;
    char out_a[4096], out_b[4096], out_c[4096];
} fixture;

static int gen(const char *out, uint64_t seed)
{
    mpl_listops_opts o = {out, N_TRAIN, N_VAL, N_TEST, seed, 0, 0, 0};
    mpl_err_clear();
    if (mpl_listops_prepare(&o) != MPL_OK) {
        mpl_err_print(stderr, "gen: ");
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    uint64_t seed = mpl_test_seed();
    fx->dir = mpl_test_tmpdir("io_listops");
    if (!fx->dir) return -1;
    snprintf(fx->out_a, sizeof fx->out_a, "%s/a.h5", fx->dir);
    snprintf(fx->out_b, sizeof fx->out_b, "%s/b.h5", fx->dir);
    snprintf(fx->out_c, sizeof fx->out_c, "%s/c.h5", fx->dir);
    if (gen(fx->out_a, seed) || gen(fx->out_b, seed) || gen(fx->out_c, seed + 1)) return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (mpl_test_rmtree(fx->dir) != 0) return -1;
    free(fx->dir);
    free(fx);
    return 0;
}

typedef struct split {
    int64_t n;
    uint8_t *inputs; /* (n, MAX_LEN) */
    int32_t *lengths;
    uint8_t *labels;
} split;

static void read_dset(hid_t f, const char *name, hid_t mtype, void *buf, int64_t n_elems)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t sp = H5Dget_space(d);
    assert_int_equal(H5Sget_simple_extent_npoints(sp), n_elems);
    H5Sclose(sp);
    assert_true(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
}

static void read_split(const char *path, const char *name, int64_t n, split *s)
{
    char p[64];
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    s->n = n;
    s->inputs = calloc((size_t)n * MPL_LISTOPS_MAX_LEN + 1, 1);
    s->lengths = calloc((size_t)n + 1, sizeof *s->lengths);
    s->labels = calloc((size_t)n + 1, 1);
    snprintf(p, sizeof p, "/%s/inputs", name);
    read_dset(f, p, H5T_NATIVE_UINT8, s->inputs, n * MPL_LISTOPS_MAX_LEN);
    snprintf(p, sizeof p, "/%s/lengths", name);
    read_dset(f, p, H5T_NATIVE_INT32, s->lengths, n);
    snprintf(p, sizeof p, "/%s/labels", name);
    read_dset(f, p, H5T_NATIVE_UINT8, s->labels, n);
    H5Fclose(f);
}

static void free_split(split *s)
{
    free(s->inputs);
    free(s->lengths);
    free(s->labels);
}

static unsigned char *read_all(const char *path, long *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n + 1);
    assert_int_equal(fread(b, 1, (size_t)*n, f), (size_t)*n);
    fclose(f);
    return b;
}

static void test_io_listops_deterministic(void **state)
{
    fixture *fx = *state;
    long na, nb;
    unsigned char *a = read_all(fx->out_a, &na), *b = read_all(fx->out_b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na);
    free(a);
    free(b);
    /* another seed: other examples */
    static const char *const names[3] = {"train", "val", "test"};
    int64_t counts[3] = {N_TRAIN, N_VAL, N_TEST};
    for (int k = 0; k < 3; k++) {
        split x, y;
        read_split(fx->out_a, names[k], counts[k], &x);
        read_split(fx->out_c, names[k], counts[k], &y);
        assert_memory_not_equal(x.inputs, y.inputs, (size_t)counts[k] * MPL_LISTOPS_MAX_LEN);
        free_split(&x);
        free_split(&y);
    }
    assert_int_equal(access(fx->out_a, F_OK), 0);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", fx->out_a);
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void test_io_listops_examples(void **state)
{
    fixture *fx = *state;
    static const char *const names[3] = {"train", "val", "test"};
    int64_t counts[3] = {N_TRAIN, N_VAL, N_TEST}, n_all = N_TRAIN + N_VAL + N_TEST, k = 0;
    uint8_t **rows = calloc((size_t)n_all, sizeof *rows);
    int32_t *lens = calloc((size_t)n_all, sizeof *lens);
    split sp[3];
    int hist[10] = {0};
    for (int s = 0; s < 3; s++) {
        read_split(fx->out_a, names[s], counts[s], &sp[s]);
        for (int64_t i = 0; i < counts[s]; i++, k++) {
            const uint8_t *row = sp[s].inputs + i * MPL_LISTOPS_MAX_LEN;
            int32_t n = sp[s].lengths[i];
            assert_in_range(n, MPL_LISTOPS_MIN_TOKENS, MPL_LISTOPS_MAX_TOKENS);
            for (int32_t j = 0; j < n; j++) assert_in_range(row[j], 1, MPL_LISTOPS_VOCAB_SIZE - 1);
            for (int32_t j = n; j < MPL_LISTOPS_MAX_LEN; j++) assert_int_equal(row[j], 0);
            int v = -1;
            mpl_err_clear();
            if (mpl_listops_eval(row, n, &v) != MPL_OK) mpl_err_print(stderr, "eval: ");
            assert_int_equal(v, sp[s].labels[i]);
            assert_in_range(sp[s].labels[i], 0, 9);
            hist[v]++;
            rows[k] = (uint8_t *)row;
            lens[k] = n;
        }
    }
    /* no duplicates within or across splits */
    for (int64_t i = 0; i < n_all; i++)
        for (int64_t j = i + 1; j < n_all; j++)
            assert_false(lens[i] == lens[j] && !memcmp(rows[i], rows[j], (size_t)lens[i]));
    printf("listops labels:");
    for (int v = 0; v < 10; v++) printf(" %d", hist[v]);
    printf("\n");

    /* vocabulary and attributes */
    hid_t f = H5Fopen(fx->out_a, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, "vocab", H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8); /* as stored: HDF5 does not convert between csets */
    char *voc[MPL_LISTOPS_VOCAB_SIZE] = {0};
    assert_true(H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, voc) >= 0);
    static const char *const want[MPL_LISTOPS_VOCAB_SIZE] = {
        "<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
        "[MIN", "[MAX", "[MED", "[SM", "]"};
    for (int i = 0; i < MPL_LISTOPS_VOCAB_SIZE; i++) {
        assert_string_equal(voc[i], want[i]);
        assert_string_equal(mpl_listops_token_str(i), want[i]);
        H5free_memory(voc[i]);
    }
    assert_null(mpl_listops_token_str(MPL_LISTOPS_VOCAB_SIZE));
    H5Tclose(t);
    H5Dclose(d);
    static const char *const attrs[] = {"vocab_size", "n_classes", "format_version", "seed"};
    int64_t attr_want[] = {16, 10, 1, (int64_t)mpl_test_seed()};
    for (int i = 0; i < 4; i++) {
        int64_t x = -1;
        hid_t a = H5Aopen(f, attrs[i], H5P_DEFAULT);
        assert_true(a >= 0);
        assert_true(H5Aread(a, H5T_NATIVE_INT64, &x) >= 0);
        assert_int_equal(x, attr_want[i]);
        H5Aclose(a);
    }
    assert_true(H5Aexists(f, "tokenizer") > 0);
    H5Fclose(f);
    for (int s = 0; s < 3; s++) free_split(&sp[s]);
    free(rows);
    free(lens);
}

/* Parse "[MAX 2 9 ]"-style text into token ids (test helper only). */
static int64_t tokenize(const char *text, uint8_t *tok)
{
    int64_t n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
        int id = -1;
        for (int i = 0; i < MPL_LISTOPS_VOCAB_SIZE; i++)
            if (!strcmp(w, mpl_listops_token_str(i))) id = i;
        assert_true(id >= 0);
        tok[n++] = (uint8_t)id;
    }
    return n;
}

static void test_io_listops_eval(void **state)
{
    (void)state;
    static const struct { const char *text; int value; } ok[] = {
        {"7", 7},
        {"[MAX 2 9 [MIN 4 7 ] 0 ]", 9},
        {"[MIN 2 9 [MIN 4 7 ] 0 ]", 0},
        {"[MED 1 2 3 4 ]", 2},                  /* floor(2.5) */
        {"[MED 9 1 5 ]", 5},
        {"[MED 3 8 ]", 5},                      /* floor(5.5) */
        {"[SM 5 6 7 ]", 8},
        {"[SM 9 9 9 9 9 9 9 9 9 9 ]", 0},
        {"[MED [MED 1 2 3 4 ] [MED 7 8 9 ] [MED 0 9 ] ]", 4}, /* MED(2 8 4) */
        {"[MED [MED 1 2 ] [MED 6 9 1 ] [SM 5 5 4 ] [MAX 0 ] ]", 2}, /* MED(1 6 4 0)=floor(2.5) */
        {"[MAX [SM 3 4 ] [MIN 8 [MAX 1 6 ] ] ]", 7},
    };
    uint8_t tok[128];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t n = tokenize(ok[i].text, tok);
        int v = -1;
        mpl_err_clear();
        assert_int_equal(mpl_listops_eval(tok, n, &v), MPL_OK);
        printf("eval %-50s = %d\n", ok[i].text, v);
        assert_int_equal(v, ok[i].value);
    }
    static const char *const bad[] = {
        "[MAX 2 9", "[MAX 2 9 ] ]", "]", "[SM ]", "[MAX 1 [MIN ] ]", "3 4", "[MIN 1 ] 2",
        "[MED 1 2 ] [MIN 3 ]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t n = tokenize(bad[i], tok);
        int v = -1;
        mpl_err_clear();
        assert_int_equal(mpl_listops_eval(tok, n, &v), MPL_ERR_FORMAT);
        printf("eval %-24s -> %s\n", bad[i], mpl_err_cause());
    }
    int v = -1;
    mpl_err_clear();
    assert_int_equal(mpl_listops_eval(tok, 0, &v), MPL_ERR_FORMAT);
    uint8_t pad[3] = {MPL_LISTOPS_MAX, 0, MPL_LISTOPS_CLOSE}, big[1] = {200};
    assert_int_equal(mpl_listops_eval(pad, 3, &v), MPL_ERR_FORMAT);
    assert_int_equal(mpl_listops_eval(big, 1, &v), MPL_ERR_FORMAT);
    mpl_err_clear();
}

static void expect_arg_err(const mpl_listops_opts *o, const char *needle)
{
    mpl_err_clear();
    assert_int_equal(mpl_listops_prepare(o), MPL_ERR_ARG);
    printf("prepare error: %s\n", mpl_err_cause());
    assert_non_null(strstr(mpl_err_cause(), needle));
    if (o->out) assert_int_not_equal(access(o->out, F_OK), 0);
    mpl_err_clear();
}

static void test_io_listops_errors(void **state)
{
    fixture *fx = *state;
    char out[4200];
    snprintf(out, sizeof out, "%s/bad.h5", fx->dir);
    mpl_listops_opts o = {out, -1, 1, 1, 3, 0, 0, 0};
    expect_arg_err(&o, "train=-1");
    o.n_train = 1;
    o.n_test = -5;
    expect_arg_err(&o, "test=-5");
    o.n_train = o.n_val = o.n_test = 0;
    expect_arg_err(&o, "no examples");
    o.n_train = 1;
    o.out = NULL;
    expect_arg_err(&o, "output");
    /* an unwritable output names the file, leaves nothing behind */
    snprintf(out, sizeof out, "%s/no/such/dir/x.h5", fx->dir);
    o.out = out;
    mpl_err_clear();
    assert_int_equal(mpl_listops_prepare(&o), MPL_ERR_IO);
    assert_non_null(strstr(mpl_err_cause(), "x.h5"));
    mpl_err_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_listops_deterministic),
        cmocka_unit_test(test_io_listops_examples),
        cmocka_unit_test(test_io_listops_eval),
        cmocka_unit_test(test_io_listops_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
