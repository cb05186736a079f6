/* HDF5 helpers shared by token files and checkpoints (see h5util.h), kept
 * apart so the two formats read and report errors the same way. */
#include "h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct h5_msg_ctx {
    char *buf;
    size_t n;
    int found;
} h5_msg_ctx;

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    h5_msg_ctx *c = data;
    (void)n;
    /* Walking upward, the first entry is the innermost (most specific). */
    if (!c->found) {
        snprintf(c->buf, c->n, "%s", e->desc ? e->desc : "(no description)");
        c->found = 1;
    }
    return 0;
}

const char *mpl_h5_msg(char *buf, size_t n_bytes)
{
    h5_msg_ctx c = {buf, n_bytes, 0};
    if (n_bytes == 0) return buf;
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_cb, &c);
    if (!c.found) snprintf(buf, n_bytes, "HDF5 call failed (no message)");
    return buf;
}

void mpl_h5_quiet_begin(mpl_h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void mpl_h5_quiet_end(const mpl_h5_quiet *q)
{
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

mpl_status mpl_h5_file_open(const char *path, unsigned flags, hid_t *out)
{
    *out = H5I_INVALID_HID;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mpl_err(MPL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return mpl_err(MPL_ERR_IO, "%s: is a directory", path);
    if (access(path, (flags & H5F_ACC_RDWR) ? R_OK | W_OK : R_OK) != 0)
        return mpl_err(MPL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (sb.st_size == 0) return mpl_err(MPL_ERR_FORMAT, "%s: file is empty", path);
    htri_t is = H5Fis_hdf5(path);
    if (is < 0) {
        char m[256];
        return mpl_err(MPL_ERR_IO, "cannot open %s: %s", path, mpl_h5_msg(m, sizeof m));
    }
    if (is == 0) return mpl_err(MPL_ERR_FORMAT, "%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, flags, H5P_DEFAULT);
    if (f < 0) {
        char m[256];
        return mpl_err(MPL_ERR_FORMAT, "%s: cannot open as HDF5 (corrupt?): %s", path,
                       mpl_h5_msg(m, sizeof m));
    }
    *out = f;
    return MPL_OK;
}

mpl_status mpl_h5_file_create(const char *path, hid_t *out)
{
    return mpl_h5_file_create_fapl(path, H5P_DEFAULT, out);
}

mpl_status mpl_h5_file_create_fapl(const char *path, hid_t base, hid_t *out)
{
    *out = H5I_INVALID_HID;
    /* Try the file system first: its errno message is clearer than HDF5's. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return mpl_err(MPL_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    close(fd);
    hid_t fapl = base == H5P_DEFAULT ? H5Pcreate(H5P_FILE_ACCESS) : H5Pcopy(base);
    if (fapl < 0) MPL_H5(fapl);
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
        H5Pclose(fapl);
        MPL_H5(-1);
    }
    /* No time stamps in object headers: the same content gives the same
     * bytes (prepare listops promises that), whenever it is written. */
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl < 0 || H5Pset_obj_track_times(fcpl, 0) < 0) {
        if (fcpl >= 0) H5Pclose(fcpl);
        H5Pclose(fapl);
        MPL_H5(-1);
    }
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
    if (f < 0) {
        char m[256];
        mpl_h5_msg(m, sizeof m); /* before H5Pclose, which clears the stack */
        H5Pclose(fapl);
        return mpl_err(MPL_ERR_IO, "cannot create %s: %s", path, m);
    }
    H5Pclose(fapl);
    *out = f;
    return MPL_OK;
}

int mpl_h5_exists(hid_t loc, const char *name)
{
    /* H5Lexists fails (rather than returning 0) when an intermediate group is
     * missing, so walk the path one component at a time. */
    char part[1024];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof part) return 0;
    for (size_t i = 0; i <= n; i++) {
        if (i > 0 && (name[i] == '/' || name[i] == '\0')) {
            memcpy(part, name, i);
            part[i] = '\0';
            if (H5Lexists(loc, part, H5P_DEFAULT) <= 0) return 0;
        }
    }
    return 1;
}

mpl_status mpl_h5_attr_write_i64(hid_t obj, const char *name, int64_t v)
{
    mpl_status st = MPL_OK;
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    MPL_H5_GOTO(sp = H5Screate(H5S_SCALAR), fail);
    MPL_H5_GOTO(a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT), fail);
    MPL_H5_GOTO(H5Awrite(a, H5T_NATIVE_INT64, &v), fail);
fail:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return st;
}

mpl_status mpl_h5_attr_read_i64(hid_t obj, const char *name, const char *file, int64_t *v)
{
    mpl_status st = MPL_OK;
    hid_t a = H5I_INVALID_HID;
    if (H5Aexists(obj, name) <= 0)
        return mpl_err(MPL_ERR_FORMAT, "%s: missing attribute '%s'", file, name);
    MPL_H5_GOTO(a = H5Aopen(obj, name, H5P_DEFAULT), fail);
    if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "%s: attribute '%s' is not an integer", file, name);
fail:
    if (a >= 0) H5Aclose(a);
    return st;
}

mpl_status mpl_h5_attr_write_str(hid_t obj, const char *name, const char *s)
{
    mpl_status st = MPL_OK;
    hid_t sp = H5I_INVALID_HID, t = H5I_INVALID_HID, a = H5I_INVALID_HID;
    size_t n = strlen(s);
    MPL_H5_GOTO(sp = H5Screate(H5S_SCALAR), fail);
    MPL_H5_GOTO(t = H5Tcopy(H5T_C_S1), fail);
    /* Fixed length incl. the terminator: a size of 0 is invalid in HDF5. */
    MPL_H5_GOTO(H5Tset_size(t, n + 1), fail);
    MPL_H5_GOTO(H5Tset_strpad(t, H5T_STR_NULLTERM), fail);
    MPL_H5_GOTO(a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT), fail);
    MPL_H5_GOTO(H5Awrite(a, t, s), fail);
fail:
    if (a >= 0) H5Aclose(a);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return st;
}

mpl_status mpl_h5_attr_read_str(hid_t obj, const char *name, const char *file, char **out)
{
    mpl_status st = MPL_OK;
    hid_t a = H5I_INVALID_HID, ft = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    char *s = NULL;
    *out = NULL;
    if (H5Aexists(obj, name) <= 0)
        return mpl_err(MPL_ERR_FORMAT, "%s: missing attribute '%s'", file, name);
    MPL_H5_GOTO(a = H5Aopen(obj, name, H5P_DEFAULT), fail);
    MPL_H5_GOTO(ft = H5Aget_type(a), fail);
    if (H5Tget_class(ft) != H5T_STRING)
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "%s: attribute '%s' is not a string", file, name);
    MPL_H5_GOTO(mt = H5Tcopy(H5T_C_S1), fail);
    if (H5Tis_variable_str(ft) > 0) {
        /* Written by other tools (h5py writes variable-length strings). */
        char *vs = NULL;
        MPL_H5_GOTO(H5Tset_size(mt, H5T_VARIABLE), fail);
        MPL_H5_GOTO(H5Aread(a, mt, &vs), fail);
        s = strdup(vs ? vs : "");
        H5free_memory(vs);
        if (!s) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory reading '%s'", name);
    } else {
        size_t n = H5Tget_size(ft);
        s = calloc(n + 1, 1);
        if (!s) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory reading '%s'", name);
        MPL_H5_GOTO(H5Tset_size(mt, n), fail);
        MPL_H5_GOTO(H5Aread(a, mt, s), fail);
        s[n] = '\0';
    }
    *out = s;
    s = NULL;
fail:
    free(s);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return st;
}

mpl_status mpl_h5_dataset_create(hid_t loc, const char *name, hid_t type, int ndim,
                                 const hsize_t *dims, const hsize_t *maxdims,
                                 const hsize_t *chunk, int deflate_level, int fletcher32,
                                 hid_t *out)
{
    mpl_status st = MPL_OK;
    hid_t sp = H5I_INVALID_HID, dcpl = H5I_INVALID_HID, d = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    MPL_H5_GOTO(sp = H5Screate_simple(ndim, dims, maxdims), fail);
    MPL_H5_GOTO(dcpl = H5Pcreate(H5P_DATASET_CREATE), fail);
    MPL_H5_GOTO(H5Pset_chunk(dcpl, ndim, chunk), fail);
    MPL_H5_GOTO(H5Pset_obj_track_times(dcpl, 0), fail); /* see mpl_h5_file_create */
    /* Filter order matters: checksum the compressed bytes (what is on disk). */
    if (deflate_level > 0) MPL_H5_GOTO(H5Pset_deflate(dcpl, (unsigned)deflate_level), fail);
    if (fletcher32) MPL_H5_GOTO(H5Pset_fletcher32(dcpl), fail);
    MPL_H5_GOTO(d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT), fail);
    *out = d;
fail:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return st;
}

mpl_status mpl_h5_group_create(hid_t loc, const char *name, hid_t *out)
{
    mpl_status st = MPL_OK;
    hid_t gcpl = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    MPL_H5_GOTO(gcpl = H5Pcreate(H5P_GROUP_CREATE), fail);
    MPL_H5_GOTO(H5Pset_obj_track_times(gcpl, 0), fail);
    MPL_H5_GOTO(*out = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT), fail);
fail:
    if (gcpl >= 0) H5Pclose(gcpl);
    return st;
}

void mpl_h5_chunk_dims(int ndim, const int64_t *shape, int64_t max_elems, hsize_t *chunk)
{
    int64_t n = 1;
    if (max_elems < 1) max_elems = 1;
    for (int i = 0; i < ndim; i++) {
        chunk[i] = (hsize_t)(shape[i] > 0 ? shape[i] : 1);
        n *= (int64_t)chunk[i];
    }
    while (n > max_elems) {
        int big = 0;
        for (int i = 1; i < ndim; i++)
            if (chunk[i] > chunk[big]) big = i;
        if (chunk[big] <= 1) break;
        n /= (int64_t)chunk[big];
        chunk[big] = (chunk[big] + 1) / 2;
        n *= (int64_t)chunk[big];
    }
}

mpl_status mpl_io_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mpl_err(MPL_ERR_IO, "cannot open %s for fsync: %s", path, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return mpl_err(MPL_ERR_IO, "fsync %s: %s", path, strerror(e));
    }
    close(fd);
    return MPL_OK;
}

mpl_status mpl_io_fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    mpl_status st = MPL_OK;
    if (fd < 0) {
        st = mpl_err(MPL_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
    } else {
        /* Some file systems refuse fsync on directories (EINVAL): nothing
         * more can be done there, so that is not an error. */
        if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
            st = mpl_err(MPL_ERR_IO, "fsync directory %s: %s", dir, strerror(errno));
        close(fd);
    }
    free(copy);
    return st;
}

mpl_status mpl_io_rename_durable(const char *tmp, const char *path)
{
    if (rename(tmp, path) != 0)
        return mpl_err(MPL_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    MPL_CHECK(mpl_io_fsync_dir_of(path));
    return MPL_OK;
}
