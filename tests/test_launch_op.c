/* `multipole op attention` end to end: a file written here, the command
 * run as a process, its output against an explicit softmax attention, and
 * errors that name the dataset or attribute. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/opfile.h"
#include "testutil.h"

enum { H = 2, L = 9, D = 4 };

static char dir[4096];

static void write_input(const char *path, int with_dout, const char *drop, int extra_attr)
{
    mpl_opfile f = {0};
    int64_t shape[3] = {H, L, D};
    float x[H * L * D];
    const char *names[] = {"q", "k", "v", "dout"};
    for (int i = 0; i < 4; i++) {
        if ((i == 3 && !with_dout) || (drop && !strcmp(drop, names[i]))) continue;
        mpl_test_fill_f32(x, H * L * D, mpl_test_seed(), (uint64_t)i, -1, 1);
        assert_int_equal(mpl_opfile_add(&f, names[i], 3, shape, x), MPL_OK);
    }
    assert_int_equal(mpl_opfile_write(path, &f), MPL_OK);
    mpl_opfile_free(&f);
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 6);
    hid_t a = H5Acreate2(file, "attn", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, st, "dense");
    H5Aclose(a);
    int causal = 1;
    a = H5Acreate2(file, "causal", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &causal);
    H5Aclose(a);
    double theta = 0;
    a = H5Acreate2(file, extra_attr ? "bogus_option" : "rope_theta", H5T_NATIVE_DOUBLE, sp,
                   H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &theta);
    H5Aclose(a);
    H5Tclose(st);
    H5Sclose(sp);
    H5Fclose(file);
}

/* Run the command; returns its exit code, stderr in err. */
static int run_op(const char *in, const char *out, char *err, size_t n)
{
    char cmd[16384], errf[4200];
    snprintf(errf, sizeof errf, "%s/err.txt", dir);
    snprintf(cmd, sizeof cmd, "'%s' op attention --in '%s' --out '%s' 2> '%s'",
             getenv("MPL_BIN"), in, out, errf);
    int rc = system(cmd);
    FILE *f = fopen(errf, "r");
    size_t got = f ? fread(err, 1, n - 1, f) : 0;
    err[got] = '\0';
    if (f) fclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_launch_op_dense(void **s)
{
    (void)s;
    char in[4200], out[4200], err[4096];
    snprintf(in, sizeof in, "%s/qkv.h5", dir);
    snprintf(out, sizeof out, "%s/out.h5", dir);
    write_input(in, 1, NULL, 0);
    assert_int_equal(run_op(in, out, err, sizeof err), 0);
    mpl_opfile fi, fo;
    const char *in_names[] = {"q", "k", "v", "dout", NULL};
    const char *out_names[] = {"out", "dq", "dk", "dv", NULL};
    assert_int_equal(mpl_opfile_read(in, in_names, &fi), MPL_OK);
    assert_int_equal(mpl_opfile_read(out, out_names, &fo), MPL_OK);
    const float *q = mpl_opfile_find(&fi, "q")->data, *k = mpl_opfile_find(&fi, "k")->data;
    const float *v = mpl_opfile_find(&fi, "v")->data, *g = mpl_opfile_find(&fi, "dout")->data;
    double ref[H * L * D] = {0}, dv[H * L * D] = {0};
    for (int h = 0; h < H; h++)
        for (int i = 0; i < L; i++) {
            double p[L], m = -INFINITY, z = 0;
            for (int j = 0; j <= i; j++) {
                double dot = 0;
                for (int c = 0; c < D; c++) dot += (double)q[(h * L + i) * D + c] * k[(h * L + j) * D + c];
                p[j] = dot / sqrt((double)D);
                m = p[j] > m ? p[j] : m;
            }
            for (int j = 0; j <= i; j++) z += (p[j] = exp(p[j] - m));
            for (int j = 0; j <= i; j++)
                for (int c = 0; c < D; c++) {
                    ref[(h * L + i) * D + c] += p[j] / z * v[(h * L + j) * D + c];
                    dv[(h * L + j) * D + c] += p[j] / z * g[(h * L + i) * D + c];
                }
        }
    assert_true(mpl_test_close_f32_f64("op out", mpl_opfile_find(&fo, "out")->data, ref,
                                       H * L * D, 1e-6, 1e-5));
    assert_true(mpl_test_close_f32_f64("op dv", mpl_opfile_find(&fo, "dv")->data, dv,
                                       H * L * D, 1e-6, 1e-5));
    assert_non_null(mpl_opfile_find(&fo, "dq"));
    mpl_opfile_free(&fi);
    mpl_opfile_free(&fo);
}

static void test_launch_op_errors(void **s)
{
    (void)s;
    char in[4200], out[4200], err[4096];
    snprintf(in, sizeof in, "%s/bad.h5", dir);
    snprintf(out, sizeof out, "%s/never.h5", dir);
    write_input(in, 0, "k", 0);
    assert_int_equal(run_op(in, out, err, sizeof err), 2);
    printf("%s", err);
    assert_non_null(strstr(err, "dataset /k is missing"));
    write_input(in, 0, NULL, 1);
    assert_int_equal(run_op(in, out, err, sizeof err), 2);
    printf("%s", err);
    assert_non_null(strstr(err, "attribute 'bogus_option'"));
    FILE *f = fopen(out, "r");
    assert_null(f); /* nothing written on error */
}

int main(void)
{
    if (!getenv("MPL_BIN")) {
        printf("MPL_BIN is not set (run through ctest)\n");
        return 1;
    }
    char *d = mpl_test_tmpdir("op");
    snprintf(dir, sizeof dir, "%s", d);
    free(d);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_op_dense),
        cmocka_unit_test(test_launch_op_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
