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

/* Run the command (on np ranks when np > 0); returns its exit code,
 * stderr in err. */
static int run_op_np(int np, const char *in, const char *out, char *err, size_t n)
{
    char cmd[16384], errf[4200], launch[64] = "";
    snprintf(errf, sizeof errf, "%s/err.txt", dir);
    if (np > 0) snprintf(launch, sizeof launch, "mpiexec --oversubscribe -n %d ", np);
    snprintf(cmd, sizeof cmd, "%s'%s' op attention --in '%s' --out '%s' 2> '%s'", launch,
             getenv("MPL_BIN"), in, out, errf);
    int rc = system(cmd);
    FILE *f = fopen(errf, "r");
    size_t got = f ? fread(err, 1, n - 1, f) : 0;
    err[got] = '\0';
    if (f) fclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int run_op(const char *in, const char *out, char *err, size_t n)
{
    return run_op_np(0, in, out, err, n);
}

static void set_attr_str(hid_t file, const char *name, const char *v)
{
    hid_t sp = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t a = H5Acreate2(file, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a), H5Tclose(t), H5Sclose(sp);
}

static void set_attr_int(hid_t file, const char *name, int v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &v);
    H5Aclose(a), H5Sclose(sp);
}

/* The op split over 1..4 ranks (uneven chunks, band and segments wider than
 * a chunk) writes the one-rank result. */
static void test_launch_op_split(void **s)
{
    (void)s;
    enum { LL = 23, HH = 2, DD = 4 };
    const char *kinds[] = {"fmm", "combiner_fixed", "combiner_logsparse"};
    for (int kind = 0; kind < 3; kind++)
        for (int causal = 0; causal <= 1; causal++) {
            char in[4200], ref[4200], out[4200], err[4096];
            snprintf(in, sizeof in, "%s/split.h5", dir);
            snprintf(ref, sizeof ref, "%s/split-ref.h5", dir);
            snprintf(out, sizeof out, "%s/split-out.h5", dir);
            mpl_opfile f = {0};
            int64_t shape[3] = {HH, LL, DD}, bshape[2] = {HH, DD}, mshape[1] = {LL};
            float x[HH * LL * DD], bl[HH * DD], m[LL];
            const char *names[] = {"q", "k", "v", "dout"};
            for (int i = 0; i < 4; i++) {
                mpl_test_fill_f32(x, HH * LL * DD, mpl_test_seed(), 40 + (uint64_t)i, -1, 1);
                assert_int_equal(mpl_opfile_add(&f, names[i], 3, shape, x), MPL_OK);
            }
            mpl_test_fill_f32(bl, HH * DD, mpl_test_seed(), 50, 0.2, 1);
            assert_int_equal(mpl_opfile_add(&f, "blend_near", 2, bshape, bl), MPL_OK);
            assert_int_equal(mpl_opfile_add(&f, "blend_far", 2, bshape, bl), MPL_OK);
            for (int t = 0; t < LL; t++) m[t] = (t % 7) != 3; /* padding here and there */
            assert_int_equal(mpl_opfile_add(&f, "mask", 1, mshape, m), MPL_OK);
            assert_int_equal(mpl_opfile_write(in, &f), MPL_OK);
            mpl_opfile_free(&f);
            hid_t file = H5Fopen(in, H5F_ACC_RDWR, H5P_DEFAULT);
            set_attr_str(file, "attn", kinds[kind]);
            set_attr_int(file, "causal", causal);
            set_attr_int(file, "band", 8);
            set_attr_int(file, "segment", 5);
            H5Fclose(file);
            assert_int_equal(run_op_np(1, in, ref, err, sizeof err), 0);
            const char *outs[] = {"out", "dq", "dk", "dv", "dblend_near", "dblend_far", NULL};
            mpl_opfile r;
            assert_int_equal(mpl_opfile_read(ref, outs, &r), MPL_OK);
            for (int np = 2; np <= 4; np++) {
                int rc = run_op_np(np, in, out, err, sizeof err);
                if (rc) printf("%s", err);
                assert_int_equal(rc, 0);
                mpl_opfile o;
                assert_int_equal(mpl_opfile_read(out, outs, &o), MPL_OK);
                int ok = 1;
                for (int i = 0; i < r.n_tensors; i++) {
                    const mpl_opfile_tensor *a = &r.t[i], *b = mpl_opfile_find(&o, a->name);
                    if (!b) {
                        printf("np=%d: /%s missing\n", np, a->name);
                        ok = 0;
                        continue;
                    }
                    int64_t n = 1;
                    for (int j = 0; j < a->ndim; j++) n *= a->shape[j];
                    char what[128];
                    snprintf(what, sizeof what, "op split %s causal=%d np=%d /%s", kinds[kind],
                             causal, np, a->name);
                    ok &= mpl_test_close_f32(what, b->data, a->data, n, 1e-6, 1e-5);
                }
                assert_true(ok);
                mpl_opfile_free(&o);
            }
            mpl_opfile_free(&r);
        }
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
        cmocka_unit_test(test_launch_op_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
