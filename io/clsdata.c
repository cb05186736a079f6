/* The classification reader (clsdata.h). */
#include "clsdata.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "sample_order.h"

struct mpl_cls_reader {
    char *path;
    hid_t file, inputs, fspace;
    mpl_cls_info info;
    int32_t *lengths, *labels;  /* (n) */
    mpl_sample_order *order;
};

int mpl_cls_is_dataset(const char *path)
{
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    int yes = 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0) {
        yes = H5Lexists(f, "train", H5P_DEFAULT) > 0 && H5Lexists(f, "train/labels", H5P_DEFAULT) > 0;
        H5Fclose(f);
    }
    mpl_h5_quiet_end(&q);
    return yes;
}

/* A whole 1-D integer dataset of n values into out. */
static mpl_status read_column(hid_t f, const char *path, const char *name, int64_t n,
                              int32_t *out)
{
    mpl_status st = MPL_OK;
    hid_t d = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    if (!mpl_h5_exists(f, name))
        return mpl_err(MPL_ERR_FORMAT, "%s: no /%s dataset", path, name);
    MPL_H5_GOTO(d = H5Dopen2(f, name, H5P_DEFAULT), done);
    MPL_H5_GOTO(sp = H5Dget_space(d), done);
    hsize_t dims[2] = {0, 0};
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 ||
        (int64_t)dims[0] != n)
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /%s is not 1-D of %lld values", path, name,
                      (long long)n);
    MPL_H5_GOTO(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), done);
done:
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    return st;
}

static mpl_status reader_open(mpl_cls_reader *r, const char *path, const char *split,
                              uint64_t seed)
{
    char name[64];
    r->path = strdup(path);
    if (!r->path) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    MPL_CHECK(mpl_h5_file_open(path, H5F_ACC_RDONLY, &r->file));
    MPL_CHECK(mpl_h5_attr_read_i64(r->file, "vocab_size", path, &r->info.vocab_size));
    MPL_CHECK(mpl_h5_attr_read_i64(r->file, "n_classes", path, &r->info.n_classes));
    char *tk = NULL;
    MPL_CHECK(mpl_h5_attr_read_str(r->file, "tokenizer", path, &tk));
    snprintf(r->info.tokenizer, sizeof r->info.tokenizer, "%s", tk);
    free(tk);
    snprintf(name, sizeof name, "%s/inputs", split);
    if (!mpl_h5_exists(r->file, split) || !mpl_h5_exists(r->file, name))
        return mpl_err(MPL_ERR_FORMAT, "%s: no /%s (split '%s' absent: a classification file "
                       "has /train, /val, /test)", path, name, split);
    MPL_H5(r->inputs = H5Dopen2(r->file, name, H5P_DEFAULT));
    MPL_H5(r->fspace = H5Dget_space(r->inputs));
    hsize_t dims[2];
    if (H5Sget_simple_extent_ndims(r->fspace) != 2)
        return mpl_err(MPL_ERR_FORMAT, "%s: /%s is not 2-D (examples x tokens)", path, name);
    MPL_H5(H5Sget_simple_extent_dims(r->fspace, dims, NULL));
    r->info.n = (int64_t)dims[0];
    r->info.max_len = (int64_t)dims[1];
    if (r->info.n < 1 || r->info.max_len < 1)
        return mpl_err(MPL_ERR_FORMAT, "%s: split '%s' is empty", path, split);
    if (r->info.vocab_size < 2 || r->info.n_classes < 2)
        return mpl_err(MPL_ERR_FORMAT, "%s: vocab_size=%lld, n_classes=%lld", path,
                       (long long)r->info.vocab_size, (long long)r->info.n_classes);
    r->lengths = malloc((size_t)r->info.n * sizeof *r->lengths);
    r->labels = malloc((size_t)r->info.n * sizeof *r->labels);
    if (!r->lengths || !r->labels) return mpl_err(MPL_ERR_NOMEM, "out of memory for labels");
    snprintf(name, sizeof name, "%s/lengths", split);
    MPL_CHECK(read_column(r->file, path, name, r->info.n, r->lengths));
    snprintf(name, sizeof name, "%s/labels", split);
    MPL_CHECK(read_column(r->file, path, name, r->info.n, r->labels));
    for (int64_t e = 0; e < r->info.n; e++) {
        if (r->lengths[e] < 1 || r->lengths[e] > r->info.max_len)
            return mpl_err(MPL_ERR_FORMAT, "%s: example %lld of '%s' has length %d outside "
                           "[1, %lld]", path, (long long)e, split, r->lengths[e],
                           (long long)r->info.max_len);
        if (r->labels[e] < 0 || r->labels[e] >= r->info.n_classes)
            return mpl_err(MPL_ERR_FORMAT, "%s: example %lld of '%s' has label %d outside "
                           "[0, %lld)", path, (long long)e, split, r->labels[e],
                           (long long)r->info.n_classes);
    }
    MPL_CHECK(mpl_sample_order_create(r->info.n, seed, &r->order));
    return MPL_OK;
}

mpl_status mpl_cls_reader_open(const char *path, const char *split, uint64_t seed,
                               mpl_cls_reader **out)
{
    *out = NULL;
    mpl_cls_reader *r;
    MPL_ALLOC(r, 1);
    r->file = r->inputs = r->fspace = H5I_INVALID_HID;
    mpl_status st = reader_open(r, path, split, seed);
    if (st != MPL_OK) {
        mpl_cls_reader_close(&r);
        return st;
    }
    *out = r;
    return MPL_OK;
}

void mpl_cls_reader_close(mpl_cls_reader **rp)
{
    if (!rp || !*rp) return;
    mpl_cls_reader *r = *rp;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    if (r->fspace >= 0) H5Sclose(r->fspace);
    if (r->inputs >= 0) H5Dclose(r->inputs);
    if (r->file >= 0) H5Fclose(r->file);
    mpl_h5_quiet_end(&q);
    mpl_sample_order_destroy(&r->order);
    free(r->lengths);
    free(r->labels);
    free(r->path);
    free(r);
    *rp = NULL;
}

mpl_cls_info mpl_cls_reader_info(const mpl_cls_reader *r) { return r->info; }

int64_t mpl_cls_reader_example_of(mpl_cls_reader *r, int64_t g)
{
    return mpl_sample_order_item(r->order, g);
}

mpl_status mpl_cls_reader_read(mpl_cls_reader *r, int64_t e, int64_t start, int64_t count,
                               int32_t *tok, uint8_t *mask, int32_t *label)
{
    mpl_status st = MPL_OK;
    if (e < 0 || e >= r->info.n || start < 0 || count < 0 || start + count > r->info.max_len)
        return mpl_err(MPL_ERR_ARG, "%s: example %lld positions [%lld, %lld) outside %lld x %lld",
                       r->path, (long long)e, (long long)start, (long long)(start + count),
                       (long long)r->info.n, (long long)r->info.max_len);
    *label = r->labels[e];
    for (int64_t i = 0; i < count; i++) mask[i] = start + i < r->lengths[e];
    if (count == 0) return MPL_OK;
    hid_t ms = H5I_INVALID_HID;
    hsize_t off[2] = {(hsize_t)e, (hsize_t)start}, cnt[2] = {1, (hsize_t)count};
    MPL_H5_GOTO(H5Sselect_hyperslab(r->fspace, H5S_SELECT_SET, off, NULL, cnt, NULL), done);
    MPL_H5_GOTO(ms = H5Screate_simple(2, cnt, NULL), done);
    MPL_H5_GOTO(H5Dread(r->inputs, H5T_NATIVE_INT32, ms, r->fspace, H5P_DEFAULT, tok), done);
    for (int64_t i = 0; i < count; i++)
        if (tok[i] < 0 || tok[i] >= r->info.vocab_size)
            MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: example %lld holds token %d outside the "
                          "vocabulary [0, %lld)", r->path, (long long)e, tok[i],
                          (long long)r->info.vocab_size);
done:
    if (ms >= 0) H5Sclose(ms);
    return st;
}

mpl_status mpl_cls_inspect(const char *path)
{
    static const char *const splits[3] = {"train", "val", "test"};
    printf("%s: classification data\n", path);
    for (int k = 0; k < 3; k++) {
        mpl_cls_reader *r = NULL;
        if (mpl_cls_reader_open(path, splits[k], 0, &r) != MPL_OK) {
            printf("  %-5s: absent or unreadable (%s)\n", splits[k], mpl_err_cause());
            mpl_err_clear();
            continue;
        }
        const mpl_cls_info in = r->info;
        if (k == 0)
            printf("  tokenizer %s, vocab_size %lld, n_classes %lld, rows of %lld tokens\n",
                   in.tokenizer, (long long)in.vocab_size, (long long)in.n_classes,
                   (long long)in.max_len);
        int64_t lo = in.max_len, hi = 0, count[64] = {0};
        double sum = 0;
        for (int64_t e = 0; e < in.n; e++) {
            lo = r->lengths[e] < lo ? r->lengths[e] : lo;
            hi = r->lengths[e] > hi ? r->lengths[e] : hi;
            sum += r->lengths[e];
            if (r->labels[e] < 64) count[r->labels[e]]++;
        }
        printf("  %-5s: %lld examples, length %lld..%lld (mean %.1f); classes %%:", splits[k],
               (long long)in.n, (long long)lo, (long long)hi, sum / (double)in.n);
        for (int64_t c = 0; c < in.n_classes && c < 64; c++)
            printf(" %.1f", 100.0 * (double)count[c] / (double)in.n);
        printf("\n");
        mpl_cls_reader_close(&r);
    }
    return MPL_OK;
}
