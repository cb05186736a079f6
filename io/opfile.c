/* Reading and writing the `multipole op` exchange file (opfile.h). */
#include "opfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"

static int64_t n_elems_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

mpl_status mpl_opfile_add(mpl_opfile *f, const char *name, int ndim, const int64_t *shape,
                          const float *data)
{
    if (ndim < 1 || ndim > 4) return mpl_err(MPL_ERR_ARG, "dataset /%s: %d dimensions", name, ndim);
    mpl_opfile_tensor *t = realloc(f->t, (size_t)(f->n_tensors + 1) * sizeof *t);
    if (!t) return mpl_err(MPL_ERR_NOMEM, "out of memory adding /%s", name);
    f->t = t;
    mpl_opfile_tensor *x = &t[f->n_tensors];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ndim = ndim;
    memcpy(x->shape, shape, (size_t)ndim * sizeof *shape);
    int64_t n = n_elems_of(ndim, shape);
    x->data = malloc((size_t)(n ? n : 1) * sizeof *x->data);
    if (!x->data) return mpl_err(MPL_ERR_NOMEM, "out of memory for /%s", name);
    if (data) memcpy(x->data, data, (size_t)n * sizeof *x->data);
    f->n_tensors++;
    return MPL_OK;
}

const mpl_opfile_tensor *mpl_opfile_find(const mpl_opfile *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

void mpl_opfile_free(mpl_opfile *f)
{
    for (int i = 0; i < f->n_tensors; i++) free(f->t[i].data);
    free(f->t);
    free(f->a);
    memset(f, 0, sizeof *f);
}

typedef struct attr_ctx {
    mpl_opfile *f;
    const char *path;
    mpl_status st;
} attr_ctx;

/* One root attribute as text: integers and reals formatted, strings as is. */
static herr_t on_attr(hid_t loc, const char *name, const H5A_info_t *info, void *user)
{
    (void)info;
    attr_ctx *x = user;
    hid_t a = -1, t = -1, sp = -1;
    char value[512] = "";
    a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) goto bad;
    t = H5Aget_type(a);
    sp = H5Aget_space(a);
    if (t < 0 || sp < 0) goto bad;
    if (H5Sget_simple_extent_npoints(sp) != 1) {
        x->st = mpl_err(MPL_ERR_FORMAT, "%s: attribute '%s' must be a scalar", x->path, name);
        goto done;
    }
    H5T_class_t cls = H5Tget_class(t);
    if (cls == H5T_INTEGER) {
        long long v;
        if (H5Aread(a, H5T_NATIVE_LLONG, &v) < 0) goto bad;
        snprintf(value, sizeof value, "%lld", v);
    } else if (cls == H5T_FLOAT) {
        double v;
        if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) goto bad;
        snprintf(value, sizeof value, "%.17g", v);
    } else if (cls == H5T_STRING) {
        char *s = NULL;
        H5Aclose(a);
        a = -1;
        x->st = mpl_h5_attr_read_str(loc, name, x->path, &s);
        if (x->st != MPL_OK) goto done;
        snprintf(value, sizeof value, "%s", s);
        free(s);
    } else {
        x->st = mpl_err(MPL_ERR_FORMAT, "%s: attribute '%s' is neither a number nor a string",
                        x->path, name);
        goto done;
    }
    mpl_opfile_attr *arr = realloc(x->f->a, (size_t)(x->f->n_attrs + 1) * sizeof *arr);
    if (!arr) {
        x->st = mpl_err(MPL_ERR_NOMEM, "out of memory reading attributes");
        goto done;
    }
    x->f->a = arr;
    snprintf(arr[x->f->n_attrs].name, sizeof arr->name, "%s", name);
    snprintf(arr[x->f->n_attrs].value, sizeof arr->value, "%s", value);
    x->f->n_attrs++;
    goto done;
bad:
    x->st = mpl_err(MPL_ERR_FORMAT, "%s: cannot read attribute '%s'", x->path, name);
done:
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return x->st == MPL_OK ? 0 : -1;
}

/* rows: NULL for the whole dataset, else {row0, n_rows} of the sequence
 * axis (the middle one of 3-D datasets, the only one of 1-D datasets). */
static mpl_status read_dataset(hid_t file, const char *path, const char *name,
                               const int64_t *rows, mpl_opfile *f)
{
    mpl_status st = MPL_OK;
    hid_t d = -1, sp = -1, mem = -1;
    d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: cannot open dataset /%s", path, name);
    sp = H5Dget_space(d);
    int ndim = H5Sget_simple_extent_ndims(sp);
    if (ndim < 1 || ndim > 4)
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: dataset /%s has %d dimensions (1 to 4 expected)",
                      path, name, ndim);
    hsize_t dims[4], start[4] = {0, 0, 0, 0};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    const int axis = ndim == 3 ? 1 : ndim == 1 ? 0 : -1;
    if (rows && axis >= 0) {
        if (rows[0] < 0 || rows[0] + rows[1] > (int64_t)dims[axis])
            MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: dataset /%s has %llu rows, %lld..%lld asked",
                          path, name, (unsigned long long)dims[axis], (long long)rows[0],
                          (long long)(rows[0] + rows[1]));
        start[axis] = (hsize_t)rows[0];
        dims[axis] = (hsize_t)rows[1];
    }
    int64_t shape[4];
    for (int i = 0; i < ndim; i++) shape[i] = (int64_t)dims[i];
    MPL_CHECK_GOTO(mpl_opfile_add(f, name, ndim, shape, NULL), done);
    if (n_elems_of(ndim, shape) > 0) {
        mem = H5Screate_simple(ndim, dims, NULL);
        if (mem < 0 || H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, dims, NULL) < 0 ||
            H5Dread(d, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, f->t[f->n_tensors - 1].data) < 0)
            MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: dataset /%s cannot be read as float32",
                          path, name);
    }
done:
    if (mem >= 0) H5Sclose(mem);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    return st;
}

mpl_status mpl_opfile_read(const char *path, const char *const *names, mpl_opfile *out)
{
    return mpl_opfile_read_rows(path, names, 0, -1, out);
}

mpl_status mpl_opfile_shape(const char *path, const char *name, int *ndim, int64_t *shape)
{
    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    hid_t file = -1, d = -1, sp = -1;
    mpl_h5_quiet_begin(&q);
    MPL_CHECK_GOTO(mpl_h5_file_open(path, H5F_ACC_RDONLY, &file), done);
    if (!mpl_h5_exists(file, name) || (d = H5Dopen2(file, name, H5P_DEFAULT)) < 0)
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: dataset /%s is missing", path, name);
    sp = H5Dget_space(d);
    *ndim = H5Sget_simple_extent_ndims(sp);
    if (*ndim < 1 || *ndim > 4)
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: dataset /%s has %d dimensions", path, name, *ndim);
    hsize_t dims[4];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    for (int i = 0; i < *ndim; i++) shape[i] = (int64_t)dims[i];
done:
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (file >= 0) H5Fclose(file);
    mpl_h5_quiet_end(&q);
    return st;
}

mpl_status mpl_opfile_read_rows(const char *path, const char *const *names, int64_t row0,
                                int64_t n_rows, mpl_opfile *out)
{
    const int64_t rows[2] = {row0, n_rows};
    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    hid_t file = -1;
    memset(out, 0, sizeof *out);
    mpl_h5_quiet_begin(&q);
    MPL_CHECK_GOTO(mpl_h5_file_open(path, H5F_ACC_RDONLY, &file), done);
    for (const char *const *n = names; n && *n; n++)
        if (mpl_h5_exists(file, *n))
            MPL_CHECK_GOTO(read_dataset(file, path, *n, n_rows < 0 ? NULL : rows, out), done);
    attr_ctx x = {out, path, MPL_OK};
    hsize_t idx = 0;
    if (H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, &idx, on_attr, &x) < 0 || x.st != MPL_OK) {
        st = x.st != MPL_OK ? x.st : mpl_err(MPL_ERR_FORMAT, "%s: cannot list attributes", path);
        goto done;
    }
done:
    if (file >= 0) H5Fclose(file);
    mpl_h5_quiet_end(&q);
    if (st != MPL_OK) mpl_opfile_free(out);
    return st;
}

mpl_status mpl_opfile_write(const char *path, const mpl_opfile *f)
{
    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    hid_t file = -1;
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    mpl_h5_quiet_begin(&q);
    MPL_CHECK_GOTO(mpl_h5_file_create(tmp, &file), done);
    for (int i = 0; i < f->n_tensors; i++) {
        const mpl_opfile_tensor *t = &f->t[i];
        hsize_t dims[4];
        for (int k = 0; k < t->ndim; k++) dims[k] = (hsize_t)t->shape[k];
        hid_t sp = H5Screate_simple(t->ndim, dims, NULL);
        hid_t d = sp < 0 ? -1
                         : H5Dcreate2(file, t->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                                      H5P_DEFAULT);
        herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t->data);
        if (d >= 0) H5Dclose(d);
        if (sp >= 0) H5Sclose(sp);
        if (rc < 0) MPL_FAIL_GOTO(done, MPL_ERR_IO, "%s: cannot write dataset /%s", path, t->name);
    }
    if (H5Fclose(file) < 0) {
        file = -1;
        MPL_FAIL_GOTO(done, MPL_ERR_IO, "%s: cannot close", tmp);
    }
    file = -1;
    MPL_CHECK_GOTO(mpl_io_rename_durable(tmp, path), done);
done:
    if (file >= 0) H5Fclose(file);
    if (st != MPL_OK) remove(tmp);
    mpl_h5_quiet_end(&q);
    free(tmp);
    return st;
}
