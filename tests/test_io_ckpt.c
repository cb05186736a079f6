/* Checkpoints under MPI (1-3 ranks): save then load on every rank is
 * bitwise exact (params, m, v, state, config) with both write paths, and a
 * re-save after a load gives the same tensors and checksum; incomplete and
 * tampered files are refused; a save replaces the old file
 * and leaves no .tmp; loading a mismatched layout, a non-checkpoint or a
 * missing file fails with the same status on every rank, naming the cause,
 * and never hangs. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/slab.h"
#include "core/status.h"
#include "dist/comm.h"
#include "io/ckpt.h"
#include "tests/testutil.h"

/* Shared by the cases of this file (test code, not library code). */
static mpl_comm *comm;
static char dir[4096];

typedef struct model {
    mpl_slab_layout lay;
    float *p, *m, *v;
} model;

/* 3 tensors with odd shapes; `last` changes the last one's shape. */
static void model_make(model *md, int64_t last)
{
    memset(md, 0, sizeof *md);
    assert_int_equal(mpl_slab_layout_add(&md->lay, "tok_emb", 2, (int64_t[]){7, 5}, 1, NULL), MPL_OK);
    assert_int_equal(mpl_slab_layout_add(&md->lay, "blk0.norm", 1, (int64_t[]){13}, 0, NULL), MPL_OK);
    assert_int_equal(mpl_slab_layout_add(&md->lay, "blk0.attn.wq", 3, (int64_t[]){3, last, 2}, 1, NULL),
                     MPL_OK);
    assert_int_equal(mpl_slab_alloc(md->lay.n_elems, &md->p), MPL_OK);
    assert_int_equal(mpl_slab_alloc(md->lay.n_elems, &md->m), MPL_OK);
    assert_int_equal(mpl_slab_alloc(md->lay.n_elems, &md->v), MPL_OK);
}

static void model_fill(model *md, uint64_t seed)
{
    /* Same values on every rank: the tensors are replicated. */
    mpl_test_fill_f32(md->p, md->lay.n_elems, seed, 1, -1, 1);
    mpl_test_fill_f32(md->m, md->lay.n_elems, seed, 2, -1e-3, 1e-3);
    mpl_test_fill_f32(md->v, md->lay.n_elems, seed, 3, 0, 1e-6);
}

static void model_free(model *md)
{
    mpl_slab_free(&md->p);
    mpl_slab_free(&md->m);
    mpl_slab_free(&md->v);
    mpl_slab_layout_free(&md->lay);
}

static void tensors_equal(const model *a, const model *b)
{
    for (int i = 0; i < a->lay.n_tensors; i++) {
        const mpl_tensor_desc *t = &a->lay.t[i];
        size_t nb = (size_t)t->n_elems * sizeof(float);
        assert_memory_equal(a->p + t->offset, b->p + t->offset, nb);
        assert_memory_equal(a->m + t->offset, b->m + t->offset, nb);
        assert_memory_equal(a->v + t->offset, b->v + t->offset, nb);
    }
}

static void path_in_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

/* Expect st on every rank; rank 0, which did the file work, must name
 * `what`, the others must say that rank 0 failed (one report, not P). */
static void expect_err(mpl_status got, mpl_status want, const char *what0)
{
    const char *what = mpl_comm_rank(comm) == 0 ? what0 : "rank 0 failed";
    if (got != want || !strstr(mpl_err_cause(), what))
        fprintf(stderr, "[rank %d] got %s: '%s', want %s naming '%s'\n", mpl_comm_rank(comm),
                mpl_status_str(got), mpl_err_cause(), mpl_status_str(want), what);
    else if (mpl_comm_rank(comm) == mpl_comm_size(comm) - 1)
        printf("#   [rank %d] expected %s: %s\n", mpl_comm_rank(comm), mpl_status_str(got),
               mpl_err_cause());
    assert_int_equal(got, want);
    assert_non_null(strstr(mpl_err_cause(), what));
    mpl_err_clear();
}

static const char CONFIG[] = "[model]\nd_model = 32\nn_layer = 2\n[train]\nlr = 3e-4\n";

static void test_io_ckpt_roundtrip(void **state)
{
    (void)state;
    char path[4200], tmp[4300];
    path_in_dir(path, sizeof path, "ckpt-5.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    model a, b;
    model_make(&a, 4);
    model_make(&b, 4);
    model_fill(&a, mpl_test_seed());
    mpl_ckpt_state sa = {5, 1234567890123LL, 42, 99}, sb = {0, 0, 0, 0};
    mpl_ckpt_meta meta = {CONFIG, mpl_comm_size(comm), mpl_comm_size(comm), 1, "0.1.0-test"};
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, a.m, a.v, &sa, &meta), MPL_OK);
    assert_int_not_equal(access(tmp, F_OK), 0);
    assert_int_equal(access(path, R_OK), 0);
    assert_int_equal(mpl_ckpt_is_checkpoint(path), 1);

    char *cfg = NULL;
    assert_int_equal(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &sb, &cfg), MPL_OK);
    tensors_equal(&a, &b);
    assert_memory_equal(&sa, &sb, sizeof sa);
    assert_non_null(cfg);
    assert_string_equal(cfg, CONFIG);
    free(cfg);

    char *cfg2 = NULL;
    assert_int_equal(mpl_ckpt_read_config(path, &cfg2), MPL_OK);
    assert_string_equal(cfg2, CONFIG);
    free(cfg2);
    if (mpl_comm_rank(comm) == 0) assert_int_equal(mpl_ckpt_inspect(path), MPL_OK);

    /* Overwrite with other values: the new file replaces the old one. */
    model_fill(&a, mpl_test_seed() + 1);
    sa.step = 6;
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, a.m, a.v, &sa, &meta), MPL_OK);
    assert_int_not_equal(access(tmp, F_OK), 0);
    memset(b.p, 0, (size_t)b.lay.n_elems * sizeof(float));
    assert_int_equal(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &sb, NULL), MPL_OK);
    tensors_equal(&a, &b);
    assert_int_equal(sb.step, 6);
    model_free(&a);
    model_free(&b);
}

static void test_io_ckpt_params_only(void **state)
{
    (void)state;
    char path[4200];
    path_in_dir(path, sizeof path, "params-only.h5");
    model a, b;
    model_make(&a, 4);
    model_make(&b, 4);
    model_fill(&a, mpl_test_seed());
    mpl_ckpt_state s = {1, 2, 3, 4};
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, NULL, NULL, &s, NULL), MPL_OK);
    assert_int_equal(mpl_ckpt_load(comm, path, &b.lay, b.p, NULL, NULL, &s, NULL), MPL_OK);
    for (int i = 0; i < a.lay.n_tensors; i++) /* padding is not saved */
        assert_memory_equal(a.p + a.lay.t[i].offset, b.p + a.lay.t[i].offset,
                            (size_t)a.lay.t[i].n_elems * sizeof(float));
    /* Asking for optimizer state that was not saved fails on all ranks. */
    expect_err(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &s, NULL), MPL_ERR_FORMAT,
               "optim");
    model_free(&a);
    model_free(&b);
}

static void test_io_ckpt_shape_mismatch(void **state)
{
    (void)state;
    char path[4200];
    path_in_dir(path, sizeof path, "ckpt-shape.h5");
    model a, b;
    model_make(&a, 4);
    model_make(&b, 5);
    model_fill(&a, mpl_test_seed());
    mpl_ckpt_state s = {1, 2, 3, 4};
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_OK);
    char *cfg = NULL;
    expect_err(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &s, &cfg), MPL_ERR_FORMAT,
               "blk0.attn.wq");
    assert_null(cfg);
    model_free(&a);
    model_free(&b);
}

static void test_io_ckpt_bad_files(void **state)
{
    (void)state;
    char path[4200];
    model b;
    model_make(&b, 4);
    mpl_ckpt_state s;

    path_in_dir(path, sizeof path, "missing.h5");
    expect_err(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &s, NULL), MPL_ERR_IO,
               "missing.h5");
    assert_int_equal(mpl_ckpt_is_checkpoint(path), 0);

    /* An HDF5 file without /params (e.g. a token file). */
    path_in_dir(path, sizeof path, "other.h5");
    if (mpl_comm_rank(comm) == 0) {
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(f >= 0);
        H5Fclose(f);
    }
    assert_int_equal(mpl_comm_barrier(comm), MPL_OK);
    expect_err(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &s, NULL), MPL_ERR_FORMAT,
               "not a multipole checkpoint (no /params)");
    assert_int_equal(mpl_ckpt_is_checkpoint(path), 0);

    path_in_dir(path, sizeof path, "garbage.h5");
    if (mpl_comm_rank(comm) == 0) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs("garbage, not HDF5\n", f);
        fclose(f);
    }
    assert_int_equal(mpl_comm_barrier(comm), MPL_OK);
    expect_err(mpl_ckpt_load(comm, path, &b.lay, b.p, b.m, b.v, &s, NULL), MPL_ERR_FORMAT,
               "garbage.h5");
    char *cfg = NULL;
    /* read_config is local: every rank reads the file and names it. */
    assert_int_equal(mpl_ckpt_read_config(path, &cfg), MPL_ERR_FORMAT);
    assert_non_null(strstr(mpl_err_cause(), "garbage.h5"));
    mpl_err_clear();
    assert_null(cfg);

    /* Unwritable destination: every rank fails, no rank hangs. */
    path_in_dir(path, sizeof path, "no/such/dir/ckpt.h5");
    s = (mpl_ckpt_state){0, 0, 0, 0};
    expect_err(mpl_ckpt_save(comm, path, &b.lay, b.p, b.m, b.v, &s, NULL), MPL_ERR_IO,
               "ckpt.h5");
    model_free(&b);
}

static int64_t root_checksum(const char *path)
{
    int64_t v = 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t at = H5Aopen(f, "checksum", H5P_DEFAULT);
    assert_true(at >= 0);
    assert_true(H5Aread(at, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(at);
    H5Fclose(f);
    return v;
}

/* Both write paths (MPI-IO collective rows, rank-0 serial) round-trip
 * bitwise, and a load followed by a save with the other path gives the
 * same tensors and the same whole-state checksum. */
static void test_io_ckpt_both_paths(void **state)
{
    (void)state;
    char p1[4200], p2[4200];
    model a, b, c;
    model_make(&a, 4);
    model_make(&b, 4);
    model_make(&c, 4);
    model_fill(&a, mpl_test_seed() + 7);
    mpl_ckpt_state sa = {8, 96, 42, 5}, sb, sc;
    mpl_ckpt_meta meta = {CONFIG, mpl_comm_size(comm), 1, mpl_comm_size(comm), "0.1.0-test"};
    for (int first = 0; first < 2; first++) {
        const char *m1 = first ? "1" : "0", *m2 = first ? "0" : "1";
        path_in_dir(p1, sizeof p1, first ? "serial.h5" : "parallel.h5");
        path_in_dir(p2, sizeof p2, first ? "resaved-parallel.h5" : "resaved-serial.h5");
        setenv("MPL_CKPT_SERIAL", m1, 1);
        int par = mpl_ckpt_parallel_enabled(comm);
        if (mpl_comm_rank(comm) == 0)
            printf("#   save with the %s writer, re-save with the other\n",
                   par ? "parallel (MPI-IO)" : "serial (rank 0)");
        assert_int_equal(mpl_ckpt_save(comm, p1, &a.lay, a.p, a.m, a.v, &sa, &meta), MPL_OK);
        assert_int_equal(mpl_ckpt_load(comm, p1, &b.lay, b.p, b.m, b.v, &sb, NULL), MPL_OK);
        tensors_equal(&a, &b);
        assert_memory_equal(&sa, &sb, sizeof sa);
        setenv("MPL_CKPT_SERIAL", m2, 1);
        assert_int_equal(mpl_ckpt_save(comm, p2, &b.lay, b.p, b.m, b.v, &sb, &meta), MPL_OK);
        assert_int_equal(mpl_ckpt_load(comm, p2, &c.lay, c.p, c.m, c.v, &sc, NULL), MPL_OK);
        tensors_equal(&a, &c);
        if (mpl_comm_rank(comm) == 0) {
            assert_int_equal(root_checksum(p1), root_checksum(p2));
            assert_int_equal(mpl_ckpt_verify(p1), MPL_OK);
            assert_int_equal(mpl_ckpt_verify(p2), MPL_OK);
        }
    }
    /* Unset, the writer follows the node count: these ranks share one. */
    unsetenv("MPL_CKPT_SERIAL");
    assert_int_equal(mpl_ckpt_parallel_enabled(comm), 0);
    model_free(&a);
    model_free(&b);
    model_free(&c);
}

/* A tensor of five chunks (256 Ki floats each) between small ones:
 * in parallel its chunks go to different ranks and the rank that hashes it
 * does not write all of it. Both writers give the same tensors and root
 * checksum, and HDF5's own read (Fletcher32 checked) accepts both files. */
static void test_io_ckpt_multi_chunk(void **state)
{
    (void)state;
    char p1[4200], p2[4200];
    model a, b;
    for (int k = 0; k < 2; k++) {
        model *md = k ? &b : &a;
        memset(md, 0, sizeof *md);
        assert_int_equal(mpl_slab_layout_add(&md->lay, "a", 1, (int64_t[]){5}, 0, NULL), MPL_OK);
        assert_int_equal(mpl_slab_layout_add(&md->lay, "big", 2, (int64_t[]){1030, 1024}, 1, NULL),
                         MPL_OK);
        assert_int_equal(mpl_slab_layout_add(&md->lay, "b", 2, (int64_t[]){3, 7}, 1, NULL), MPL_OK);
        assert_int_equal(mpl_slab_alloc(md->lay.n_elems, &md->p), MPL_OK);
        assert_int_equal(mpl_slab_alloc(md->lay.n_elems, &md->m), MPL_OK);
        assert_int_equal(mpl_slab_alloc(md->lay.n_elems, &md->v), MPL_OK);
    }
    model_fill(&a, mpl_test_seed() + 3);
    mpl_ckpt_state sa = {4, 40, 7, 2}, sb;
    mpl_ckpt_meta meta = {CONFIG, mpl_comm_size(comm), 1, mpl_comm_size(comm), "0.1.0-test"};
    path_in_dir(p1, sizeof p1, "multi-parallel.h5");
    path_in_dir(p2, sizeof p2, "multi-serial.h5");
    for (int serial = 0; serial < 2; serial++) {
        setenv("MPL_CKPT_SERIAL", serial ? "1" : "0", 1);
        const char *p = serial ? p2 : p1;
        assert_int_equal(mpl_ckpt_save(comm, p, &a.lay, a.p, a.m, a.v, &sa, &meta), MPL_OK);
        memset(b.p, 0, (size_t)b.lay.n_elems * sizeof(float));
        assert_int_equal(mpl_ckpt_load(comm, p, &b.lay, b.p, b.m, b.v, &sb, NULL), MPL_OK);
        tensors_equal(&a, &b);
    }
    unsetenv("MPL_CKPT_SERIAL");
    if (mpl_comm_rank(comm) == 0) {
        assert_int_equal(root_checksum(p1), root_checksum(p2));
        assert_int_equal(mpl_ckpt_verify(p1), MPL_OK);
        assert_int_equal(mpl_ckpt_verify(p2), MPL_OK);
    }
    model_free(&a);
    model_free(&b);
}

/* A file whose save did not finish (no root checksum), one whose tensors
 * were changed behind our back and one with a flipped byte are refused,
 * naming the file. */
static void test_io_ckpt_incomplete_and_tampered(void **state)
{
    (void)state;
    char path[4200];
    model a;
    model_make(&a, 4);
    model_fill(&a, mpl_test_seed());
    mpl_ckpt_state s = {3, 12, 1, 0};
    path_in_dir(path, sizeof path, "ckpt-incomplete.h5");
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_OK);
    if (mpl_comm_rank(comm) == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        assert_true(f >= 0);
        assert_true(H5Adelete(f, "checksum") >= 0);
        H5Fclose(f);
    }
    assert_int_equal(mpl_comm_barrier(comm), MPL_OK);
    expect_err(mpl_ckpt_load(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_ERR_FORMAT,
               "incomplete checkpoint");

    /* Rewrite one tensor with valid Fletcher32 but other values. */
    path_in_dir(path, sizeof path, "ckpt-tampered.h5");
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_OK);
    if (mpl_comm_rank(comm) == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t d = H5Dopen2(f, "optim/v/blk0.norm", H5P_DEFAULT);
        float x[13] = {0};
        assert_true(d >= 0);
        assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
        H5Dclose(d);
        H5Fclose(f);
        assert_int_equal(mpl_ckpt_verify(path), MPL_ERR_FORMAT);
        assert_non_null(strstr(mpl_err_cause(), "checksum mismatch in /optim/v"));
        mpl_err_clear();
    }
    assert_int_equal(mpl_comm_barrier(comm), MPL_OK);
    expect_err(mpl_ckpt_load(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_ERR_FORMAT,
               "checksum mismatch in /optim/v");

    /* A load on P ranks has each rank verify part of the file: a byte
     * flipped in the last tensor of /optim/v (the last rank's share) is
     * refused on every rank, rank 0 naming the chunk that rank found. */
    path_in_dir(path, sizeof path, "ckpt-flipped.h5");
    assert_int_equal(mpl_ckpt_save(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_OK);
    if (mpl_comm_rank(comm) == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t d = H5Dopen2(f, "optim/v/blk0.attn.wq", H5P_DEFAULT);
        hid_t sp = H5Dget_space(d);
        hsize_t off[3], size = 0;
        haddr_t addr = 0;
        unsigned mask = 0;
        assert_true(d >= 0 && sp >= 0);
        assert_true(H5Dget_chunk_info(d, sp, 0, off, &mask, &addr, &size) >= 0);
        H5Sclose(sp);
        H5Dclose(d);
        H5Fclose(f);
        FILE *fp = fopen(path, "r+b");
        assert_non_null(fp);
        assert_int_equal(fseek(fp, (long)addr + 5, SEEK_SET), 0);
        int ch = fgetc(fp);
        assert_int_equal(fseek(fp, (long)addr + 5, SEEK_SET), 0);
        fputc(ch ^ 0x10, fp);
        fclose(fp);
    }
    assert_int_equal(mpl_comm_barrier(comm), MPL_OK);
    expect_err(mpl_ckpt_load(comm, path, &a.lay, a.p, a.m, a.v, &s, NULL), MPL_ERR_FORMAT,
               "Fletcher32 checksum mismatch in chunk 0 of tensor 'blk0.attn.wq' in /optim/v");
    model_free(&a);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rc = 1;
    if (mpl_comm_create_world(&comm) != MPL_OK) {
        mpl_err_print(stderr, "test_io_ckpt: ");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* One directory for all ranks: rank 0 makes it and tells the others. */
    if (mpl_comm_rank(comm) == 0) {
        char *d = mpl_test_tmpdir("io_ckpt");
        snprintf(dir, sizeof dir, "%s", d ? d : "");
        free(d);
    }
    mpl_comm_bcast(comm, dir, sizeof dir, 0);
    if (dir[0]) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_io_ckpt_roundtrip),
            cmocka_unit_test(test_io_ckpt_params_only),
            cmocka_unit_test(test_io_ckpt_shape_mismatch),
            cmocka_unit_test(test_io_ckpt_bad_files),
            cmocka_unit_test(test_io_ckpt_both_paths),
            cmocka_unit_test(test_io_ckpt_multi_chunk),
            cmocka_unit_test(test_io_ckpt_incomplete_and_tampered),
        };
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    }
    /* Any rank's failure fails every rank's exit code. */
    int64_t worst = rc != 0;
    mpl_comm_allreduce_max_i64(comm, &worst, 1);
    mpl_comm_barrier(comm);
    if (mpl_comm_rank(comm) == 0 && dir[0]) {
        if (mpl_test_rmtree(dir) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    mpl_comm_destroy(&comm);
    MPI_Finalize();
    return worst ? 1 : 0;
}
