/* Checkpoint writing (format in ckpt.h, checksums in ckpt_internal.h), kept
 * apart from the readers because it holds two write paths over one code:
 *   serial:   rank 0 writes every tensor whole with the default driver
 *             (serial HDF5 builds, or MPL_CKPT_SERIAL=1);
 *   parallel: every rank opens the file through MPI-IO and writes rows
 *             [rows*r/P, rows*(r+1)/P) of each tensor in one collective
 *             H5Dwrite; Fletcher32 chunked datasets are allowed there
 *             because HDF5 >= 1.10.2 supports filters in collective writes.
 * Both write "<path>.tmp", fsync it, rename it and fsync the directory, so
 * a crash at any point leaves the previous file intact. Parameters are
 * replicated, so no gather is needed: each rank already holds every row. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_internal.h"
#include "h5util.h"
#ifdef MPL_HDF5_PARALLEL
#include <mpi.h>
#endif

/* Chunks of at most 1 Mi floats (4 MiB): Fletcher32 needs chunking, and
 * chunks must stay below HDF5's 4 GiB limit for any tensor. */
#define CKPT_CHUNK_ELEMS ((int64_t)1 << 20)

static uint64_t group_sum(const mpl_slab_layout *lay, const float *slab)
{
    uint64_t sum = 0;
    for (int i = 0; i < lay->n_tensors; i++)
        sum += mpl_ckpt_tensor_hash(lay->t[i].name, slab + lay->t[i].offset, lay->t[i].n_elems);
    return sum;
}

/* ---- switches and test hooks ------------------------------------------- */

int mpl_ckpt_parallel_enabled(void)
{
#ifdef MPL_HDF5_PARALLEL
    const char *e = getenv("MPL_CKPT_SERIAL");
    return !(e && e[0] && strcmp(e, "0") != 0);
#else
    return 0;
#endif
}

/* "PHASE" or "PHASE@STEP" in env var `name`. */
static int hook_on(const char *name, const char *phase, int64_t step)
{
    const char *v = getenv(name);
    size_t n = strlen(phase);
    if (!v || strncmp(v, phase, n) != 0) return 0;
    if (v[n] == '\0') return 1;
    return v[n] == '@' && strtoll(v + n + 1, NULL, 10) == step;
}

mpl_status mpl_ckpt_fault_point(const char *phase, int64_t step, const char *path)
{
    if (hook_on("MPL_CKPT_CRASH", phase, step)) {
        fprintf(stderr, "MPL_CKPT_CRASH: killing the process at %s of step %lld\n", phase,
                (long long)step);
        fflush(stderr);
        raise(SIGKILL);
    }
    if (hook_on("MPL_CKPT_FAIL", phase, step))
        return mpl_err(MPL_ERR_IO, "cannot write %s: No space left on device (injected by "
                       "MPL_CKPT_FAIL=%s)", path, getenv("MPL_CKPT_FAIL"));
    return MPL_OK;
}

/* ---- the writer --------------------------------------------------------- */

typedef struct writer {
    mpl_comm *c;      /* NULL: serial (this is rank 0 alone) */
    int part, n_parts;
    hid_t dxpl;       /* collective MPI-IO transfer, or H5P_DEFAULT */
    int64_t step;
    const char *tmp;  /* the file being written, for messages */
} writer;

/* Parallel: every rank must stop together, or the next collective hangs. */
static mpl_status writer_agree(const writer *w, mpl_status st)
{
    return w->c ? mpl_comm_agree(w->c, &st) : st;
}

static mpl_status write_tensor(const writer *w, hid_t g, const mpl_tensor_desc *t,
                               const float *slab)
{
    mpl_status st = MPL_OK;
    hsize_t dims[MPL_TENSOR_NDIM_MAX], chunk[MPL_TENSOR_NDIM_MAX];
    hsize_t start[MPL_TENSOR_NDIM_MAX] = {0}, count[MPL_TENSOR_NDIM_MAX];
    hid_t d = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    for (int k = 0; k < t->ndim; k++) count[k] = dims[k] = (hsize_t)t->shape[k];
    mpl_h5_chunk_dims(t->ndim, t->shape, CKPT_CHUNK_ELEMS, chunk);
    /* No compression: fp32 weights barely compress and saves must be fast. */
    MPL_CHECK_GOTO(mpl_h5_dataset_create(g, t->name, H5T_IEEE_F32LE, t->ndim, dims, NULL, chunk,
                                         0, 1, &d),
                   fail);
    /* This rank's rows; whole tensor when serial. */
    int64_t rows = t->shape[0], r0 = rows * w->part / w->n_parts;
    int64_t r1 = rows * (w->part + 1) / w->n_parts, row_elems = rows ? t->n_elems / rows : 0;
    start[0] = (hsize_t)r0;
    count[0] = (hsize_t)(r1 - r0);
    MPL_H5_GOTO(fs = H5Dget_space(d), fail);
    MPL_H5_GOTO(ms = H5Screate_simple(t->ndim, count, NULL), fail);
    if (r1 > r0) {
        MPL_H5_GOTO(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL), fail);
    } else { /* no rows here, but the collective write needs every rank */
        MPL_H5_GOTO(H5Sselect_none(fs), fail);
        MPL_H5_GOTO(H5Sselect_none(ms), fail);
    }
    MPL_H5_GOTO(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, w->dxpl, slab + t->offset + r0 * row_elems),
                fail);
fail:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0 && H5Dclose(d) < 0 && st == MPL_OK) st = mpl_err(MPL_ERR_IO, "closing '%s'", t->name);
    if (st != MPL_OK) mpl_err(st, "%s: cannot write tensor '%s'", w->tmp, t->name);
    return writer_agree(w, st);
}

/* Create the file: default driver (serial) or MPI-IO (parallel). */
static mpl_status writer_create(writer *w, hid_t *out)
{
    if (!w->c) return mpl_h5_file_create(w->tmp, out);
#ifdef MPL_HDF5_PARALLEL
    mpl_status st = MPL_OK;
    hid_t fapl = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    if (mpl_comm_rank(w->c) == 0) {
        /* The file system's errno message is clearer than HDF5's. */
        int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) st = mpl_err(MPL_ERR_IO, "cannot create %s: %s", w->tmp, strerror(errno));
        else close(fd);
    }
    MPL_CHECK(mpl_comm_agree(w->c, &st));
    MPL_H5_GOTO(fapl = H5Pcreate(H5P_FILE_ACCESS), fail);
    MPL_H5_GOTO(H5Pset_fapl_mpio(fapl, *(MPI_Comm *)mpl_comm_mpi_handle(w->c), MPI_INFO_NULL),
                fail);
    MPL_H5_GOTO(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST), fail);
    MPL_H5_GOTO(*out = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), fail);
    MPL_H5_GOTO(w->dxpl = H5Pcreate(H5P_DATASET_XFER), fail);
    MPL_H5_GOTO(H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE), fail);
fail:
    if (fapl >= 0) H5Pclose(fapl);
    if (st != MPL_OK) mpl_err(st, "cannot create %s for parallel writing", w->tmp);
    return writer_agree(w, st);
#else
    return mpl_err(MPL_ERR_INTERNAL, "parallel checkpoint write without parallel HDF5");
#endif
}

/* The whole file; called by rank 0 alone (serial) or by all (parallel),
 * where every metadata call gets the same arguments on every rank. */
static mpl_status write_file(writer *w, const mpl_slab_layout *lay, const float *const slabs[3],
                             const uint64_t sums[3], const mpl_ckpt_state *state,
                             const mpl_ckpt_meta *meta)
{
    mpl_status st = MPL_OK;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    MPL_CHECK_GOTO(writer_create(w, &f), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "format_version", MPL_CKPT_FORMAT_VERSION), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "config", meta && meta->config_text
                                                          ? meta->config_text : ""), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "world_size", meta ? meta->world_size : 0), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "sp", meta ? meta->sp : 0), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "dp", meta ? meta->dp : 0), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "code_version", meta && meta->code_version
                                                                ? meta->code_version : ""),
                   fail);
    MPL_H5_GOTO(g = H5Gcreate2(f, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(g, "step", state->step), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(g, "data_cursor", state->data_cursor), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(g, "seed", state->seed), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(g, "rng_counter", state->rng_counter), fail);
    /* The LR schedule is a function of step; saved explicitly for readers. */
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(g, "lr_step", state->step), fail);
    H5Gclose(g);
    g = H5I_INVALID_HID;
    if (slabs[1] || slabs[2]) {
        MPL_H5_GOTO(g = H5Gcreate2(f, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), fail);
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
    MPL_CHECK_GOTO(writer_agree(w, st), fail);
    MPL_CHECK_GOTO(writer_agree(w, mpl_ckpt_fault_point("before_data", w->step, w->tmp)), fail);
    for (int s = 0; s < 3; s++) {
        if (!slabs[s]) continue;
        MPL_H5_GOTO(g = H5Gcreate2(f, mpl_ckpt_groups[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    fail);
        MPL_CHECK_GOTO(mpl_h5_attr_write_i64(g, "checksum", (int64_t)sums[s]), fail);
        for (int i = 0; i < lay->n_tensors; i++) {
            if (s == 0 && i == lay->n_tensors / 2)
                MPL_CHECK_GOTO(writer_agree(w, mpl_ckpt_fault_point("mid_data", w->step, w->tmp)),
                               fail);
            MPL_CHECK_GOTO(write_tensor(w, g, &lay->t[i], slabs[s]), fail);
        }
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
    /* Last: marks the file complete. */
    uint64_t root = mpl_ckpt_root_hash(MPL_CKPT_FORMAT_VERSION, state, meta, sums);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "checksum", (int64_t)root), fail);
    MPL_H5_GOTO(H5Fflush(f, H5F_SCOPE_GLOBAL), fail);
    herr_t rc = H5Fclose(f);
    f = H5I_INVALID_HID;
    MPL_H5_GOTO(rc, fail);
fail:
    /* Agree before the closes: in parallel they are collective too. */
    st = writer_agree(w, st);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    if (w->dxpl != H5P_DEFAULT) H5Pclose(w->dxpl);
    w->dxpl = H5P_DEFAULT;
    return st;
}

mpl_status mpl_ckpt_save(mpl_comm *c, const char *path, const mpl_slab_layout *lay,
                         const float *params, const float *m, const float *v,
                         const mpl_ckpt_state *state, const mpl_ckpt_meta *meta)
{
    if (!c) return mpl_err(MPL_ERR_ARG, "mpl_ckpt_save: communicator is NULL");
    mpl_status st = MPL_OK;
    char *tmp = NULL;
    int rank = mpl_comm_rank(c), par = mpl_ckpt_parallel_enabled();
    if (!path || !lay || !params || !state)
        st = mpl_err(MPL_ERR_ARG, "mpl_ckpt_save: NULL path, layout, params or state");
    else if (!(tmp = malloc(strlen(path) + 5)))
        st = mpl_err(MPL_ERR_NOMEM, "out of memory");
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), fail);
    sprintf(tmp, "%s.tmp", path);
    const float *slabs[3] = {params, m, v};
    uint64_t sums[3] = {0, 0, 0};
    /* Rank 0 hashes; the parallel writers get its sums (same bits anyway). */
    if (rank == 0)
        for (int s = 0; s < 3; s++)
            if (slabs[s]) sums[s] = group_sum(lay, slabs[s]);
    writer w = {par ? c : NULL, par ? rank : 0, par ? mpl_comm_size(c) : 1, H5P_DEFAULT,
                state->step, tmp};
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    if (par) {
        st = mpl_comm_bcast(c, sums, sizeof sums, 0);
        if (st == MPL_OK) st = write_file(&w, lay, slabs, sums, state, meta);
    } else if (rank == 0) {
        st = write_file(&w, lay, slabs, sums, state, meta);
    }
    mpl_h5_quiet_end(&q);
    if (rank == 0 && st == MPL_OK) {
        st = mpl_io_fsync_path(tmp);
        if (st == MPL_OK) st = mpl_ckpt_fault_point("before_rename", state->step, path);
        if (st == MPL_OK) st = mpl_io_rename_durable(tmp, path);
    }
    if (st != MPL_OK && rank == 0) {
        unlink(tmp);
        mpl_err(st, "saving checkpoint %s", path);
    }
    /* Rank 0 did the final file work: every rank fails with its code. */
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), fail);
fail:
    free(tmp);
    return st;
}
