/* Checkpoint readers (format in ckpt.h, writer in ckpt_save.c): load,
 * verify, read_config, inspect. A load on P ranks reads the file once:
 * every rank checks the root checksum and every shape (metadata), then
 * reads and verifies about 1/P of the tensors' bytes (share_out), the
 * group sums are added up over the ranks, and the verified parts of the
 * slabs are all-gathered. Reading the whole file on every rank instead
 * costs P times the reads and checksums, which on one node share the same
 * cores and memory bandwidth; across nodes it is P times the disk traffic.
 * A truncated, flipped or unfinished file is refused with one message
 * naming it, carried by rank 0 whichever rank's share found it. Collective
 * calls agree on one status, so no rank hangs or goes on alone. */
#include "ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_chunk.h"
#include "ckpt_internal.h"
#include "h5util.h"

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

/* ---- load ---------------------------------------------------------- */

static mpl_status check_tensor(hid_t g, const char *grp, const mpl_tensor_desc *t,
                               const char *path, hid_t *out)
{
    mpl_status st = MPL_OK;
    hid_t d = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    hsize_t dims[H5S_MAX_RANK];
    int64_t fshape[H5S_MAX_RANK];
    char want[128], have[128];
    *out = H5I_INVALID_HID;
    if (!mpl_h5_exists(g, t->name))
        return mpl_err(MPL_ERR_FORMAT, "%s: tensor '%s' missing from /%s", path, t->name, grp);
    MPL_H5_GOTO(d = H5Dopen2(g, t->name, H5P_DEFAULT), fail);
    MPL_H5_GOTO(sp = H5Dget_space(d), fail);
    int nd = H5Sget_simple_extent_ndims(sp);
    MPL_H5_GOTO(nd, fail);
    MPL_H5_GOTO(H5Sget_simple_extent_dims(sp, dims, NULL), fail);
    int same = nd == t->ndim;
    for (int k = 0; k < nd; k++) {
        fshape[k] = (int64_t)dims[k];
        if (same && fshape[k] != t->shape[k]) same = 0;
    }
    if (!same) {
        shape_str(have, sizeof have, nd, fshape);
        shape_str(want, sizeof want, t->ndim, t->shape);
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT,
                      "%s: tensor '%s' in /%s has shape %s in the file but %s in the model",
                      path, t->name, grp, have, want);
    }
    *out = d;
    d = H5I_INVALID_HID;
fail:
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    return st;
}

/* The "checksum" attribute of obj (a group or the root, named by what). */
static mpl_status read_sum(hid_t obj, const char *what, const char *path, uint64_t *out)
{
    int64_t v = 0;
    if (H5Aexists(obj, "checksum") <= 0)
        return mpl_err(MPL_ERR_FORMAT, "%s: incomplete checkpoint: %s has no checksum attribute "
                       "(the save did not finish)", path, what);
    MPL_CHECK(mpl_h5_attr_read_i64(obj, "checksum", path, &v));
    *out = (uint64_t)v;
    return MPL_OK;
}

/* A chunk buffer that grows to the largest chunk read. */
typedef struct chunk_buf {
    unsigned char *p;
    size_t n_bytes;
} chunk_buf;

/* Tensor t of /grp (dataset d, shape checked) into x, and its hash: chunk
 * by chunk with the Fletcher32 checked here, each chunk hashed while in
 * cache, when the file is laid out as the writer lays it out; else through
 * HDF5's read and its filter. */
static mpl_status read_tensor(hid_t d, const char *grp, const mpl_tensor_desc *t, float *x,
                              chunk_buf *buf, const char *path, uint64_t *hash)
{
    mpl_ckpt_chunking ck;
    mpl_ckpt_hasher h;
    char what[MPL_TENSOR_NAME_MAX + 64];
    int done = 0;
    snprintf(what, sizeof what, "'%s' in /%s", t->name, grp);
    if (mpl_ckpt_chunking_of(d, t->ndim, t->shape, &ck)) {
        size_t need = mpl_ckpt_chunking_buf_bytes(&ck);
        if (need > buf->n_bytes) {
            free(buf->p);
            buf->n_bytes = 0;
            /* Page-aligned: the kernel copies into it 3-4x faster. */
            void *p = NULL;
            buf->p = NULL;
            if (posix_memalign(&p, 4096, need) != 0)
                return mpl_err(MPL_ERR_NOMEM, "out of memory for a %zu-byte chunk of %s", need,
                               what);
            buf->p = p;
            buf->n_bytes = need;
        }
        mpl_ckpt_hasher_init(&h, t->name);
        MPL_CHECK(mpl_ckpt_chunks_read(d, &ck, x, buf->p, &h, path, what, &done));
    }
    if (done) {
        *hash = mpl_ckpt_hasher_final(&h);
        return MPL_OK;
    }
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) {
        char m[256];
        return mpl_err(MPL_ERR_FORMAT, "%s: cannot read tensor %s (checksum mismatch or corrupt "
                       "file?): %s", path, what, mpl_h5_msg(m, sizeof m));
    }
    *hash = mpl_ckpt_tensor_hash(t->name, x, t->n_elems);
    return MPL_OK;
}

/* Open /grp and check every tensor's shape, before any data is read (every
 * rank checks all of them: it is metadata). Its stored sum was read with
 * the root's (check_root). */
static mpl_status check_group(hid_t f, const char *grp, const mpl_slab_layout *lay,
                              const char *path, hid_t *out)
{
    mpl_status st = MPL_OK;
    hid_t g = H5I_INVALID_HID, d = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    if (!mpl_h5_exists(f, grp))
        return mpl_err(MPL_ERR_FORMAT, "%s: no /%s group (saved without optimizer state?)",
                       path, grp);
    MPL_H5_GOTO(g = H5Gopen2(f, grp, H5P_DEFAULT), fail);
    for (int i = 0; i < lay->n_tensors; i++) {
        MPL_CHECK_GOTO(check_tensor(g, grp, &lay->t[i], path, &d), fail);
        H5Dclose(d);
        d = H5I_INVALID_HID;
    }
    *out = g;
    g = H5I_INVALID_HID;
fail:
    if (g >= 0) H5Gclose(g);
    return st;
}

/* Tensors [i0, i1) of group g (/grp) into slab; *sum += their hashes. */
static mpl_status read_tensors(hid_t g, const char *grp, const mpl_slab_layout *lay, int i0,
                               int i1, float *slab, chunk_buf *buf, const char *path,
                               uint64_t *sum)
{
    mpl_status st = MPL_OK;
    hid_t d = H5I_INVALID_HID;
    for (int i = i0; i < i1; i++) {
        const mpl_tensor_desc *t = &lay->t[i];
        uint64_t hash = 0;
        MPL_CHECK_GOTO(check_tensor(g, grp, t, path, &d), fail);
        MPL_CHECK_GOTO(read_tensor(d, grp, t, slab + t->offset, buf, path, &hash), fail);
        H5Dclose(d);
        d = H5I_INVALID_HID;
        *sum += hash;
    }
fail:
    if (d >= 0) H5Dclose(d);
    return st;
}

/* Open, check it is a checkpoint of our format version. */
static mpl_status open_ckpt(const char *path, hid_t *out)
{
    mpl_status st = MPL_OK;
    int64_t ver = 0;
    hid_t f = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    MPL_CHECK(mpl_h5_file_open(path, H5F_ACC_RDONLY, &f));
    if (!mpl_h5_exists(f, "params"))
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "%s: not a multipole checkpoint (no /params)", path);
    MPL_CHECK_GOTO(mpl_h5_attr_read_i64(f, "format_version", path, &ver), fail);
    if (ver != MPL_CKPT_FORMAT_VERSION)
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT,
                      "%s: checkpoint format_version %lld, this build reads %d", path,
                      (long long)ver, MPL_CKPT_FORMAT_VERSION);
    *out = f;
    f = H5I_INVALID_HID;
fail:
    if (f >= 0) H5Fclose(f);
    return st;
}

/* Read the state and the config and check the root checksum over them, the
 * metadata and the stored group sums (into sums); before any tensor data. */
static mpl_status check_root(hid_t f, const char *path, mpl_ckpt_state *state, char **config,
                             uint64_t sums[3])
{
    mpl_status st = MPL_OK;
    hid_t g = H5I_INVALID_HID;
    char *code = NULL;
    int64_t ver = 0, w[3] = {0, 0, 0};
    uint64_t want = 0;
    static const char *const wn[3] = {"world_size", "sp", "dp"};
    *config = NULL;
    MPL_CHECK_GOTO(read_sum(f, "the root", path, &want), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_i64(f, "format_version", path, &ver), fail);
    for (int i = 0; i < 3; i++) MPL_CHECK_GOTO(mpl_h5_attr_read_i64(f, wn[i], path, &w[i]), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_str(f, "code_version", path, &code), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_str(f, "config", path, config), fail);
    if (!mpl_h5_exists(f, "state"))
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "%s: no /state group", path);
    MPL_H5_GOTO(g = H5Gopen2(f, "state", H5P_DEFAULT), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_i64(g, "step", path, &state->step), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_i64(g, "data_cursor", path, &state->data_cursor), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_i64(g, "seed", path, &state->seed), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_read_i64(g, "rng_counter", path, &state->rng_counter), fail);
    for (int s = 0; s < 3; s++) {
        sums[s] = 0;
        if (!mpl_h5_exists(f, mpl_ckpt_groups[s])) continue;
        H5Gclose(g);
        MPL_H5_GOTO(g = H5Gopen2(f, mpl_ckpt_groups[s], H5P_DEFAULT), fail);
        MPL_CHECK_GOTO(read_sum(g, mpl_ckpt_groups[s], path, &sums[s]), fail);
    }
    mpl_ckpt_meta meta = {*config, (int)w[0], (int)w[1], (int)w[2], code};
    uint64_t have = mpl_ckpt_root_hash(ver, state, &meta, sums);
    if (have != want)
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT,
                      "%s: checksum mismatch in the state and metadata (stored %016llx, "
                      "computed %016llx): the file is corrupt", path, (unsigned long long)want,
                      (unsigned long long)have);
fail:
    if (g >= 0) H5Gclose(g);
    free(code);
    if (st != MPL_OK) {
        free(*config);
        *config = NULL;
    }
    return st;
}

/* Which rank reads which tensors: the tensors of the groups read, in file
 * order (params, then m, then v), cut into `size` runs of about equal
 * bytes; a tensor goes to the rank whose share holds the midpoint of its
 * elements. That is nondecreasing along the order, so rank r reads
 * tensors [first[k][r], first[k][r + 1]) of the k-th group read. */
static void share_out(const mpl_slab_layout *lay, int n_groups, int size, int *first)
{
    double per = 0.0, before = 0.0;
    for (int i = 0; i < lay->n_tensors; i++) per += (double)lay->t[i].n_elems;
    double total = per * n_groups;
    for (int k = 0; k < n_groups; k++) {
        int *fk = first + k * (size + 1), r = 0;
        fk[0] = 0;
        for (int i = 0; i < lay->n_tensors; i++) {
            double mid = before + 0.5 * (double)lay->t[i].n_elems;
            int owner = total > 0.0 ? (int)(mid / total * size) : 0;
            if (owner > size - 1) owner = size - 1;
            while (r < owner) fk[++r] = i;
            before += (double)lay->t[i].n_elems;
        }
        while (r < size) fk[++r] = lay->n_tensors;
    }
}

/* *n = the slab elements of tensors [i0, i1): from the first one's offset
 * to the next one's (padding included; the last run ends the slab), so the
 * runs of consecutive index ranges tile the slab. */
static void run_span(const mpl_slab_layout *lay, int i0, int i1, int64_t *n)
{
    int64_t a = i0 < lay->n_tensors ? lay->t[i0].offset : lay->n_elems;
    int64_t b = i1 < lay->n_tensors ? lay->t[i1].offset : lay->n_elems;
    *n = b > a ? b - a : 0;
}

/* Local: this rank's part of a load. Checks the root and every shape (all
 * ranks alike), then reads and verifies its own tensors (first, from
 * share_out) into the slabs, adding their hashes to have[] and the stored
 * group sums to want[]. */
static mpl_status load_share(const char *path, const mpl_slab_layout *lay, float *const *slabs,
                             const int *groups, int n_groups, int rank, int size,
                             const int *first, mpl_ckpt_state *state, char **config,
                             uint64_t *want, uint64_t *have)
{
    mpl_status st = MPL_OK;
    hid_t f = H5I_INVALID_HID, g[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    uint64_t sums[3];
    chunk_buf buf = {NULL, 0};
    MPL_CHECK(open_ckpt(path, &f));
    MPL_CHECK_GOTO(check_root(f, path, state, config, sums), fail);
    for (int k = 0; k < n_groups; k++) {
        MPL_CHECK_GOTO(check_group(f, mpl_ckpt_groups[groups[k]], lay, path, &g[k]), fail);
        want[k] = sums[groups[k]];
    }
    for (int k = 0; k < n_groups; k++) {
        const int *fk = first + k * (size + 1);
        MPL_CHECK_GOTO(read_tensors(g[k], mpl_ckpt_groups[groups[k]], lay, fk[rank],
                                    fk[rank + 1], slabs[groups[k]], &buf, path, &have[k]),
                       fail);
    }
fail:
    for (int k = 0; k < 3; k++)
        if (g[k] >= 0) H5Gclose(g[k]);
    free(buf.p);
    if (f >= 0) H5Fclose(f);
    return st;
}

mpl_status mpl_ckpt_load(mpl_comm *c, const char *path, const mpl_slab_layout *lay,
                         float *params, float *m, float *v, mpl_ckpt_state *state,
                         char **config_text)
{
    if (!c) return mpl_err(MPL_ERR_ARG, "mpl_ckpt_load: communicator is NULL");
    mpl_status st = MPL_OK;
    char *config = NULL;
    float *slabs[3] = {params, m, v};
    int groups[3], n_groups = 0, rank = mpl_comm_rank(c), size = mpl_comm_size(c);
    uint64_t want[3] = {0, 0, 0}, have[3] = {0, 0, 0};
    int *first = NULL;
    int64_t *counts = NULL;
    if (config_text) *config_text = NULL;
    if (!path || !lay || !params || !state)
        st = mpl_err(MPL_ERR_ARG, "mpl_ckpt_load: NULL path, layout, params or state");
    for (int s = 0; s < 3; s++)
        if (slabs[s]) groups[n_groups++] = s;
    first = malloc(sizeof *first * (size_t)(3 * (size + 1)));
    counts = malloc(sizeof *counts * (size_t)size);
    if (st == MPL_OK && (!first || !counts))
        st = mpl_err(MPL_ERR_NOMEM, "mpl_ckpt_load: out of memory");
    if (st == MPL_OK) {
        share_out(lay, n_groups, size, first);
        mpl_h5_quiet q;
        mpl_h5_quiet_begin(&q);
        st = load_share(path, lay, slabs, groups, n_groups, rank, size, first, state, &config,
                        want, have);
        mpl_h5_quiet_end(&q);
    }
    /* The file is the same for every rank: rank 0 reports what is wrong
     * with it, whichever rank's share found it. */
    MPL_CHECK_GOTO(mpl_comm_agree_root(c, &st), fail);
    MPL_CHECK_GOTO(mpl_comm_allreduce_sum_u64(c, have, n_groups), fail);
    for (int k = 0; k < n_groups && st == MPL_OK; k++)
        if (have[k] != want[k])
            st = mpl_err(MPL_ERR_FORMAT, "%s: checksum mismatch in /%s (stored %016llx, data "
                         "hashes to %016llx): the file is corrupt", path,
                         mpl_ckpt_groups[groups[k]], (unsigned long long)want[k],
                         (unsigned long long)have[k]);
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), fail); /* alike on every rank */
    /* Each rank's verified tensors to the others: the runs tile each slab
     * in rank order, the blocks of one all-gather. */
    for (int k = 0; k < n_groups && size > 1; k++) {
        const int *fk = first + k * (size + 1);
        for (int r = 0; r < size; r++) run_span(lay, fk[r], fk[r + 1], &counts[r]);
        MPL_CHECK_GOTO(mpl_comm_allgatherv_f32(c, slabs[groups[k]], counts), fail);
    }
    if (config_text) {
        *config_text = config;
        config = NULL;
    }
fail:
    if (st != MPL_OK) mpl_err(st, "loading checkpoint %s", path);
    free(first);
    free(counts);
    free(config);
    return st;
}

/* ---- local readers --------------------------------------------------- */

mpl_status mpl_ckpt_read_config(const char *path, char **config_text)
{
    if (!path || !config_text) return mpl_err(MPL_ERR_ARG, "mpl_ckpt_read_config: NULL argument");
    mpl_status st = MPL_OK;
    hid_t f = H5I_INVALID_HID;
    *config_text = NULL;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    mpl_ckpt_state state;
    uint64_t sums[3];
    MPL_CHECK_GOTO(open_ckpt(path, &f), fail);
    MPL_CHECK_GOTO(check_root(f, path, &state, config_text, sums), fail);
fail:
    if (f >= 0) H5Fclose(f);
    mpl_h5_quiet_end(&q);
    return st;
}

int mpl_ckpt_is_checkpoint(const char *path)
{
    if (!path || access(path, R_OK) != 0) return 0;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    int yes = 0;
    if (H5Fis_hdf5(path) > 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f >= 0) {
            yes = mpl_h5_exists(f, "params");
            H5Fclose(f);
        }
    }
    mpl_h5_quiet_end(&q);
    return yes;
}

typedef struct inspect_ctx {
    const char *grp;
    mpl_status st;
} inspect_ctx;

static herr_t inspect_tensor(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    inspect_ctx *ic = data;
    hid_t d = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    hsize_t dims[H5S_MAX_RANK];
    int64_t shape[H5S_MAX_RANK] = {0};
    float *x = NULL;
    char sh[128];
    (void)info;
    d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return 0; /* a subgroup: not a tensor */
    sp = H5Dget_space(d);
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (nd < 0 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) goto done;
    int64_t n = 1;
    for (int k = 0; k < nd; k++) {
        shape[k] = (int64_t)dims[k];
        n *= shape[k];
    }
    shape_str(sh, sizeof sh, nd, shape);
    x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (!x) {
        ic->st = mpl_err(MPL_ERR_NOMEM, "out of memory reading '%s'", name);
        goto done;
    }
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) {
        printf("  %-10s %-40s %-20s UNREADABLE (checksum mismatch?)\n", ic->grp, name, sh);
        goto done;
    }
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    printf("  %-10s %-40s %-20s %.6g\n", ic->grp, name, sh, sqrt(ss));
done:
    free(x);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return ic->st == MPL_OK ? 0 : -1;
}

mpl_status mpl_ckpt_inspect(const char *path)
{
    if (!path) return mpl_err(MPL_ERR_ARG, "mpl_ckpt_inspect: path is NULL");
    mpl_status st = MPL_OK;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    char *config = NULL, *code = NULL;
    int64_t v[4];
    static const char *const root_i64[4] = {"format_version", "world_size", "sp", "dp"};
    static const char *const state_i64[4] = {"step", "data_cursor", "seed", "rng_counter"};
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    MPL_CHECK_GOTO(open_ckpt(path, &f), fail);
    printf("checkpoint:     %s\n", path);
    for (int i = 0; i < 4; i++) {
        MPL_CHECK_GOTO(mpl_h5_attr_read_i64(f, root_i64[i], path, &v[i]), fail);
        printf("%-15s %lld\n", root_i64[i], (long long)v[i]);
    }
    MPL_CHECK_GOTO(mpl_h5_attr_read_str(f, "code_version", path, &code), fail);
    printf("code_version    %s\n", code);
    MPL_H5_GOTO(g = H5Gopen2(f, "state", H5P_DEFAULT), fail);
    for (int i = 0; i < 4; i++) {
        MPL_CHECK_GOTO(mpl_h5_attr_read_i64(g, state_i64[i], path, &v[i]), fail);
        printf("%-15s %lld\n", state_i64[i], (long long)v[i]);
    }
    H5Gclose(g);
    g = H5I_INVALID_HID;
    MPL_CHECK_GOTO(mpl_h5_attr_read_str(f, "config", path, &config), fail);
    printf("config:\n%s%s", config, (config[0] && config[strlen(config) - 1] != '\n') ? "\n" : "");
    printf("tensors:\n  %-10s %-40s %-20s %s\n", "group", "name", "shape", "L2 norm");
    for (int s = 0; s < 3; s++) {
        if (!mpl_h5_exists(f, mpl_ckpt_groups[s])) continue;
        inspect_ctx ic = {mpl_ckpt_groups[s], MPL_OK};
        MPL_H5_GOTO(g = H5Gopen2(f, mpl_ckpt_groups[s], H5P_DEFAULT), fail);
        /* Creation order is not tracked; name order is stable and readable. */
        if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, inspect_tensor, &ic) < 0 &&
            ic.st != MPL_OK)
            MPL_FAIL_GOTO(fail, ic.st, "%s: listing /%s", path, mpl_ckpt_groups[s]);
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
fail:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    mpl_h5_quiet_end(&q);
    free(config);
    free(code);
    return st;
}

/* ---- verify ------------------------------------------------------------ */

typedef struct verify_ctx {
    const char *path, *grp;
    uint64_t sum;
    int n;
    mpl_status st;
} verify_ctx;

static herr_t verify_tensor(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    verify_ctx *vc = data;
    mpl_status st = MPL_OK;
    hid_t d = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    float *x = NULL;
    (void)info;
    MPL_H5_GOTO(d = H5Dopen2(g, name, H5P_DEFAULT), fail);
    MPL_H5_GOTO(sp = H5Dget_space(d), fail);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    MPL_H5_GOTO(n, fail);
    x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (!x) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory reading '%s'", name);
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) {
        char m[256];
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "%s: cannot read tensor '%s' in /%s (Fletcher32 "
                      "checksum mismatch or corrupt file?): %s", vc->path, name, vc->grp,
                      mpl_h5_msg(m, sizeof m));
    }
    vc->sum += mpl_ckpt_tensor_hash(name, x, (int64_t)n);
    vc->n++;
fail:
    free(x);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    vc->st = st;
    return st == MPL_OK ? 0 : -1;
}

mpl_status mpl_ckpt_verify(const char *path)
{
    if (!path) return mpl_err(MPL_ERR_ARG, "mpl_ckpt_verify: path is NULL");
    mpl_status st = MPL_OK;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    char *config = NULL;
    mpl_ckpt_state s;
    uint64_t sums[3];
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    MPL_CHECK_GOTO(open_ckpt(path, &f), fail);
    MPL_CHECK_GOTO(check_root(f, path, &s, &config, sums), fail);
    printf("%s: root checksum OK (state, metadata, group sums)\n", path);
    for (int i = 0; i < 3; i++) {
        if (!mpl_h5_exists(f, mpl_ckpt_groups[i])) continue;
        verify_ctx vc = {path, mpl_ckpt_groups[i], 0, 0, MPL_OK};
        MPL_H5_GOTO(g = H5Gopen2(f, mpl_ckpt_groups[i], H5P_DEFAULT), fail);
        if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, verify_tensor, &vc) < 0) {
            if (vc.st == MPL_OK) vc.st = mpl_err(MPL_ERR_FORMAT, "%s: cannot list /%s", path,
                                                 mpl_ckpt_groups[i]);
            MPL_CHECK_GOTO(vc.st, fail);
        }
        if (vc.sum != sums[i])
            MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT,
                          "%s: checksum mismatch in /%s (stored %016llx, data hashes to "
                          "%016llx): the file is corrupt", path, mpl_ckpt_groups[i],
                          (unsigned long long)sums[i], (unsigned long long)vc.sum);
        printf("%s: /%s checksum %016llx OK (%d tensors)\n", path, mpl_ckpt_groups[i],
               (unsigned long long)vc.sum, vc.n);
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
fail:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    mpl_h5_quiet_end(&q);
    free(config);
    return st;
}
