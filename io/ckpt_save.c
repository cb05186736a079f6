/* Checkpoint writing (format in ckpt.h, checksums in ckpt_internal.h), kept
 * apart from the readers because it holds two write paths over one code:
 *   serial:   rank 0 writes every chunk with the default driver (serial
 *             HDF5 builds, or MPL_CKPT_SERIAL=1);
 *   parallel: every rank opens the file through MPI-IO, the datasets are
 *             created collectively and each rank writes its share of the
 *             chunks, about 1/P of the bytes (write_tensor says why raw
 *             chunk writes are safe there although HDF5 1.10 documents
 *             them as unsupported in parallel).
 * Chunks go to disk raw with our Fletcher32 (ckpt_chunk.h): HDF5's filter
 * path cost as much as the disk. Both write "<path>.tmp", fsync it, rename
 * it and fsync the directory, so a crash at any point leaves the previous
 * file intact. Parameters are replicated, so no gather is needed: each
 * rank already holds every row. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_chunk.h"
#include "ckpt_internal.h"
#include "h5util.h"
#ifdef MPL_HDF5_PARALLEL
#include <mpi.h>
#endif

/* Chunks of at most 256 Ki floats (1 MiB): Fletcher32 needs chunking; 1 MiB
 * is HDF5's default chunk cache, so stock readers of part of a tensor
 * cache whole chunks; and under MPI-IO HDF5 fills (and checksums) one
 * chunk-sized buffer per dataset on every rank. Larger chunks measured no
 * faster (bench/README.md). */
#define CKPT_CHUNK_ELEMS ((int64_t)1 << 18)
/* Metadata is allocated from blocks of this size, so the datasets' object
 * headers sit together instead of between the chunks, and opening every
 * dataset before reading (the shape check) does not seek through the file
 * when it is not in the page cache. */
#define CKPT_META_BLOCK_BYTES ((hsize_t)1 << 20)

/* ---- switches and test hooks ------------------------------------------- */

int mpl_ckpt_parallel_enabled(mpl_comm *c)
{
#ifdef MPL_HDF5_PARALLEL
    const char *e = getenv("MPL_CKPT_SERIAL");
    if (e && e[0]) return strcmp(e, "0") == 0;
    /* Unset: parallel when the ranks span nodes (ckpt.h says why). */
    MPI_Comm world = *(MPI_Comm *)mpl_comm_mpi_handle(c), node;
    int n_world = 0, n_node = 0;
    MPI_Comm_size(world, &n_world);
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &n_node);
    MPI_Comm_free(&node);
    int spans = n_node < n_world, any = 0;
    /* Nodes may differ in rank count: every rank must take the same path. */
    MPI_Allreduce(&spans, &any, 1, MPI_INT, MPI_MAX, world);
    return any;
#else
    (void)c;
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
    mpl_comm *c;          /* NULL: serial (this is rank 0 alone) */
    int part, n_parts;
    int64_t step;
    const char *tmp;      /* the file being written, for messages */
    unsigned char *buf;   /* one chunk and its checksum */
    int64_t total;        /* bytes of all chunks of the file */
    int64_t done;         /* bytes of the chunks before the current tensor */
    int64_t *hashes;      /* (3, n_tensors) tensor hashes; INT64_MIN where
                           * another rank hashed (max-reduced, parallel) */
} writer;

/* Parallel: every rank must stop together, or the next collective hangs. */
static mpl_status writer_agree(const writer *w, mpl_status st)
{
    return w->c ? mpl_comm_agree(w->c, &st) : st;
}

/* The chunks are shared out by bytes: rank r writes those that start in
 * [ceil(r T / P), ceil((r+1) T / P)) of the file's T chunk bytes, taken in
 * write order, so every rank writes about T / P whatever the tensor sizes.
 * share_first: the first of the current tensor's n chunks (of `full`
 * bytes) that rank r writes (n when none). */
static int64_t share_first(const writer *w, int r, int64_t full, int64_t n)
{
    if (r >= w->n_parts) return n;
    int64_t from = (r * w->total + w->n_parts - 1) / w->n_parts - w->done;
    if (from <= 0) return 0;
    int64_t i = (from + full - 1) / full;
    return i < n ? i : n;
}

/* Create the dataset, write this rank's chunks and hash the tensor on the
 * rank whose share it starts in (in the same pass when that rank writes
 * all of it). In parallel the create is collective, and HDF5 1.10 then
 * allocates every chunk at its filtered size and writes the filtered fill
 * value into it (under MPI-IO it allocates early, and even with
 * H5D_FILL_TIME_NEVER it fills filtered chunks). A raw chunk write of that
 * same size finds its space allocated and its index entry right, so it
 * only writes the bytes (independent MPI-IO) and changes no metadata: the
 * ranks' metadata stays identical, as collective HDF5 requires. The price
 * is the fill, a second write of every chunk through the page cache. */
static mpl_status write_tensor(writer *w, hid_t g, int64_t *hash, const mpl_tensor_desc *t,
                               const float *slab)
{
    mpl_status st = MPL_OK;
    hsize_t dims[MPL_TENSOR_NDIM_MAX];
    hid_t d = H5I_INVALID_HID;
    mpl_ckpt_chunking ck;
    mpl_ckpt_hasher h;
    const float *x = slab + t->offset;
    mpl_ckpt_chunking_plan(t->ndim, t->shape, CKPT_CHUNK_ELEMS, &ck);
    for (int k = 0; k < t->ndim; k++) dims[k] = (hsize_t)t->shape[k];
    int64_t full = ck.chunk_elems * (int64_t)sizeof(float);
    int64_t c0 = share_first(w, w->part, full, ck.n_chunks);
    int64_t c1 = share_first(w, w->part + 1, full, ck.n_chunks);
    int hash_here = share_first(w, w->part, full, 1) == 0 && share_first(w, w->part + 1, full, 1);
    int fused = hash_here && c0 == 0 && c1 == ck.n_chunks;
    mpl_ckpt_hasher_init(&h, t->name);
    MPL_CHECK_GOTO(mpl_h5_dataset_create(g, t->name, H5T_IEEE_F32LE, t->ndim, dims, NULL, ck.chunk,
                                         0, 1, &d),
                   fail);
    MPL_CHECK_GOTO(mpl_ckpt_chunks_write(d, &ck, x, c0, c1, w->buf, fused ? &h : NULL), fail);
    if (hash_here)
        *hash = (int64_t)(fused ? mpl_ckpt_hasher_final(&h)
                                : mpl_ckpt_tensor_hash(t->name, x, t->n_elems));
fail:
    w->done += ck.n_chunks * full;
    if (d >= 0 && H5Dclose(d) < 0 && st == MPL_OK) st = mpl_err(MPL_ERR_IO, "closing '%s'", t->name);
    if (st != MPL_OK) mpl_err(st, "%s: cannot write tensor '%s'", w->tmp, t->name);
    return writer_agree(w, st);
}

/* Sizes for the share and the chunk buffer, the buffer and the hashes. */
static mpl_status writer_init(writer *w, const mpl_slab_layout *lay, const float *const slabs[3])
{
    size_t buf_bytes = 1;
    w->total = 0;
    for (int i = 0; i < lay->n_tensors; i++) {
        mpl_ckpt_chunking ck;
        mpl_ckpt_chunking_plan(lay->t[i].ndim, lay->t[i].shape, CKPT_CHUNK_ELEMS, &ck);
        for (int s = 0; s < 3; s++)
            if (slabs[s]) w->total += ck.n_chunks * ck.chunk_elems * (int64_t)sizeof(float);
        if (mpl_ckpt_chunking_buf_bytes(&ck) > buf_bytes) buf_bytes = mpl_ckpt_chunking_buf_bytes(&ck);
    }
    /* Page-aligned: the kernel copies reads into an aligned buffer 3-4x
     * faster; writes out of one no slower. */
    void *p = NULL;
    w->buf = posix_memalign(&p, 4096, buf_bytes) == 0 ? p : NULL;
    w->hashes = malloc(3 * (size_t)(lay->n_tensors > 0 ? lay->n_tensors : 1) * sizeof *w->hashes);
    if (!w->buf || !w->hashes)
        return mpl_err(MPL_ERR_NOMEM, "out of memory for a %zu-byte checkpoint chunk", buf_bytes);
    for (int i = 0; i < 3 * lay->n_tensors; i++) w->hashes[i] = INT64_MIN;
    return MPL_OK;
}

/* Create the file: default driver (serial) or MPI-IO (parallel). */
static mpl_status writer_create(writer *w, hid_t *out)
{
    mpl_status st = MPL_OK;
    hid_t fapl = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    if (!w->c) {
        if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 ||
            H5Pset_meta_block_size(fapl, CKPT_META_BLOCK_BYTES) < 0)
            st = mpl_err(MPL_ERR_H5, "cannot make the file access list for %s", w->tmp);
        else
            st = mpl_h5_file_create_fapl(w->tmp, fapl, out);
        if (fapl >= 0) H5Pclose(fapl);
        return st;
    }
#ifdef MPL_HDF5_PARALLEL
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
    MPL_H5_GOTO(H5Pset_meta_block_size(fapl, CKPT_META_BLOCK_BYTES), fail);
    MPL_H5_GOTO(*out = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), fail);
fail:
    if (fapl >= 0) H5Pclose(fapl);
    if (st != MPL_OK) mpl_err(st, "cannot create %s for parallel writing", w->tmp);
    return writer_agree(w, st);
#else
    return mpl_err(MPL_ERR_INTERNAL, "parallel checkpoint write without parallel HDF5");
#endif
}

/* The metadata, the tensors, then the group checksums (once every tensor
 * is hashed) and the root checksum last. Called by rank 0 alone (serial)
 * or by all (parallel), where every metadata call gets the same arguments
 * on every rank. */
static mpl_status write_file(writer *w, const mpl_slab_layout *lay, const float *const slabs[3],
                             const mpl_ckpt_state *state, const mpl_ckpt_meta *meta)
{
    mpl_status st = MPL_OK;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    hid_t gs[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    uint64_t sums[3] = {0, 0, 0};
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
        MPL_H5_GOTO(gs[s] = H5Gcreate2(f, mpl_ckpt_groups[s], H5P_DEFAULT, H5P_DEFAULT,
                                       H5P_DEFAULT),
                    fail);
        for (int i = 0; i < lay->n_tensors; i++) {
            if (s == 0 && i == lay->n_tensors / 2)
                MPL_CHECK_GOTO(writer_agree(w, mpl_ckpt_fault_point("mid_data", w->step, w->tmp)),
                               fail);
            MPL_CHECK_GOTO(write_tensor(w, gs[s], &w->hashes[s * lay->n_tensors + i], &lay->t[i],
                                        slabs[s]),
                           fail);
        }
    }
    if (w->c)
        MPL_CHECK_GOTO(mpl_comm_allreduce_max_i64(w->c, w->hashes, 3 * (int64_t)lay->n_tensors),
                       fail);
    for (int s = 0; s < 3; s++) {
        if (!slabs[s]) continue;
        for (int i = 0; i < lay->n_tensors; i++) sums[s] += (uint64_t)w->hashes[s * lay->n_tensors + i];
        MPL_CHECK_GOTO(mpl_h5_attr_write_i64(gs[s], "checksum", (int64_t)sums[s]), fail);
    }
    /* Last: marks the file complete. */
    uint64_t root = mpl_ckpt_root_hash(MPL_CKPT_FORMAT_VERSION, state, meta, sums);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "checksum", (int64_t)root), fail);
    for (int s = 0; s < 3; s++) {
        if (gs[s] >= 0) H5Gclose(gs[s]);
        gs[s] = H5I_INVALID_HID;
    }
    MPL_H5_GOTO(H5Fflush(f, H5F_SCOPE_GLOBAL), fail);
    herr_t rc = H5Fclose(f);
    f = H5I_INVALID_HID;
    MPL_H5_GOTO(rc, fail);
fail:
    /* Agree before the closes: in parallel they are collective too. */
    st = writer_agree(w, st);
    for (int s = 0; s < 3; s++)
        if (gs[s] >= 0) H5Gclose(gs[s]);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    return st;
}

mpl_status mpl_ckpt_save(mpl_comm *c, const char *path, const mpl_slab_layout *lay,
                         const float *params, const float *m, const float *v,
                         const mpl_ckpt_state *state, const mpl_ckpt_meta *meta)
{
    if (!c) return mpl_err(MPL_ERR_ARG, "mpl_ckpt_save: communicator is NULL");
    mpl_status st = MPL_OK;
    char *tmp = NULL;
    int rank = mpl_comm_rank(c), par = mpl_ckpt_parallel_enabled(c);
    if (!path || !lay || !params || !state)
        st = mpl_err(MPL_ERR_ARG, "mpl_ckpt_save: NULL path, layout, params or state");
    else if (!(tmp = malloc(strlen(path) + 5)))
        st = mpl_err(MPL_ERR_NOMEM, "out of memory");
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), fail);
    sprintf(tmp, "%s.tmp", path);
    const float *slabs[3] = {params, m, v};
    writer w = {par ? c : NULL, par ? rank : 0, par ? mpl_comm_size(c) : 1, state->step, tmp,
                NULL, 0, 0, NULL};
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    if (par || rank == 0) st = writer_init(&w, lay, slabs);
    if (par) st = writer_agree(&w, st);
    if (st == MPL_OK && (par || rank == 0)) st = write_file(&w, lay, slabs, state, meta);
    mpl_h5_quiet_end(&q);
    free(w.buf);
    free(w.hashes);
    if (rank == 0 && st == MPL_OK) {
        st = mpl_io_fsync_path(tmp);
        if (st == MPL_OK) st = mpl_ckpt_fault_point("before_rename", state->step, path);
        if (st == MPL_OK) st = mpl_io_rename_durable(tmp, path);
    }
    if (st != MPL_OK && rank == 0) {
        unlink(tmp);
        mpl_err(st, "saving checkpoint %s", path);
    }
    /* The other ranks wait for rank 0 without spinning: ranks that share
     * its cores (several ranks per core, as in tests and on small nodes)
     * would otherwise take most of its CPU time while it writes. */
    mpl_status wst = mpl_comm_barrier_idle(c);
    if (st == MPL_OK) st = wst;
    /* Rank 0 did the final file work: every rank fails with its code. */
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), fail);
fail:
    free(tmp);
    return st;
}
