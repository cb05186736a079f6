/* Token files, read side: the attributes (mpl_data_info_read) and the
 * training-window reader with its seeded per-epoch permutation. Writing
 * (prepare) and inspect live in data_prepare.c and data_inspect.c. */
#include "data.h"

#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "h5util.h"
#include "sample_order.h"

struct mpl_data_reader {
    char *path;
    hid_t file, dset, fspace;
    int64_t n_tok;           /* tokens in the split */
    int64_t seq_len;         /* L: windows hold L+1 tokens */
    int64_t n_windows;
    uint64_t seed;
    mpl_sample_order *order;  /* of the windows */
};

/* Attributes of an open token file; errors name `path`. */
static mpl_status info_from_file(hid_t f, const char *path, mpl_data_info *info)
{
    char *s = NULL;
    memset(info, 0, sizeof *info);
    if (!mpl_h5_exists(f, "tokens"))
        return mpl_err(MPL_ERR_FORMAT, "%s: no /tokens dataset (not a multipole token file)",
                       path);
    MPL_CHECK(mpl_h5_attr_read_i64(f, "format_version", path, &info->format_version));
    if (info->format_version != 1)
        return mpl_err(MPL_ERR_FORMAT, "%s: token file format_version %lld, this build reads 1",
                       path, (long long)info->format_version);
    MPL_CHECK(mpl_h5_attr_read_i64(f, "vocab_size", path, &info->vocab_size));
    MPL_CHECK(mpl_h5_attr_read_i64(f, "n_tokens", path, &info->n_tokens));
    MPL_CHECK(mpl_h5_attr_read_i64(f, "n_val_tokens", path, &info->n_val_tokens));
    MPL_CHECK(mpl_h5_attr_read_str(f, "tokenizer", path, &s));
    snprintf(info->tokenizer, sizeof info->tokenizer, "%s", s);
    free(s);
    s = NULL;
    MPL_CHECK(mpl_h5_attr_read_str(f, "source", path, &s));
    snprintf(info->source, sizeof info->source, "%s", s);
    free(s);
    /* Optional (files of earlier builds lack it): bytes and dna tokens are
     * one byte of text each. */
    if (H5Aexists(f, "text_bytes") > 0)
        MPL_CHECK(mpl_h5_attr_read_i64(f, "text_bytes", path, &info->text_bytes));
    else if (strcmp(info->tokenizer, "ids") != 0)
        info->text_bytes = info->n_tokens + info->n_val_tokens;
    mpl_tokenizer tk;
    if (mpl_tokenizer_parse(info->tokenizer, &tk) != MPL_OK) {
        mpl_err_clear();
        return mpl_err(MPL_ERR_FORMAT, "%s: tokenizer '%s' is not one this build knows "
                       "(bytes, dna, ids)", path, info->tokenizer);
    }
    if (info->vocab_size < 2 || info->n_tokens < 0 || info->n_val_tokens < 0)
        return mpl_err(MPL_ERR_FORMAT, "%s: attributes vocab_size=%lld n_tokens=%lld "
                       "n_val_tokens=%lld are not a valid token file", path,
                       (long long)info->vocab_size, (long long)info->n_tokens,
                       (long long)info->n_val_tokens);
    return MPL_OK;
}

mpl_status mpl_data_info_read(const char *path, mpl_data_info *info)
{
    if (!path || !info) return mpl_err(MPL_ERR_ARG, "mpl_data_info_read: NULL argument");
    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    hid_t f = H5I_INVALID_HID;
    MPL_CHECK_GOTO(mpl_h5_file_open(path, H5F_ACC_RDONLY, &f), fail);
    MPL_CHECK_GOTO(info_from_file(f, path, info), fail);
fail:
    if (f >= 0) H5Fclose(f);
    mpl_h5_quiet_end(&q);
    return st;
}

/* prepare writes chunks of 1 Mi tokens; 64 Mi leaves room for other writers. */
mpl_status mpl_data_check_dataset(hid_t d, const char *path, const char *dname)
{
    mpl_status st = MPL_OK;
    hid_t t = H5I_INVALID_HID, pl = H5I_INVALID_HID;
    MPL_H5_GOTO(t = H5Dget_type(d), done);
    size_t size = H5Tget_size(t);
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_sign(t) != H5T_SGN_NONE ||
        (size != 1 && size != 2 && size != 4))
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /%s is not an array of uint8, uint16 or uint32 "
                      "tokens (not a multipole token file)", path, dname);
    MPL_H5_GOTO(pl = H5Dget_create_plist(d), done);
    if (H5Pget_layout(pl) == H5D_CHUNKED) {
        hsize_t chunk[H5S_MAX_RANK];
        int nd = H5Pget_chunk(pl, H5S_MAX_RANK, chunk);
        if (nd != 1 || chunk[0] > ((hsize_t)1 << 26))
            MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /%s has %d-D chunks of %llu tokens, not the "
                          "1-D chunks of at most 64 Mi tokens of a multipole token file", path,
                          dname, nd, nd > 0 ? (unsigned long long)chunk[0] : 0ull);
    }
done:
    if (pl >= 0) H5Pclose(pl);
    if (t >= 0) H5Tclose(t);
    return st;
}

static mpl_status reader_open(const char *path, const char *split, int64_t seq_len,
                              uint64_t seed, mpl_data_reader *r)
{
    mpl_status st = MPL_OK;
    mpl_data_info info;
    const char *dname = strcmp(split, "train") == 0 ? "tokens" : "val/tokens";
    hsize_t dims[1] = {0};
    r->path = strdup(path);
    if (!r->path) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    MPL_CHECK(mpl_h5_file_open(path, H5F_ACC_RDONLY, &r->file));
    MPL_CHECK(info_from_file(r->file, path, &info));
    if (!mpl_h5_exists(r->file, dname))
        return mpl_err(MPL_ERR_FORMAT, "%s: no /%s dataset (split '%s' absent)", path, dname,
                       split);
    MPL_H5(r->dset = H5Dopen2(r->file, dname, H5P_DEFAULT));
    MPL_CHECK(mpl_data_check_dataset(r->dset, path, dname));
    MPL_H5(r->fspace = H5Dget_space(r->dset));
    if (H5Sget_simple_extent_ndims(r->fspace) != 1)
        return mpl_err(MPL_ERR_FORMAT, "%s: /%s is not 1-D", path, dname);
    MPL_H5(H5Sget_simple_extent_dims(r->fspace, dims, NULL));
    r->n_tok = (int64_t)dims[0];
    r->seq_len = seq_len;
    r->seed = seed;
    if (r->n_tok < seq_len + 1)
        return mpl_err(MPL_ERR_FORMAT,
                       "%s: split '%s' holds %lld tokens, fewer than seq_len+1 = %lld", path,
                       split, (long long)r->n_tok, (long long)(seq_len + 1));
    r->n_windows = (r->n_tok - 1) / seq_len;
    MPL_CHECK(mpl_sample_order_create(r->n_windows, seed, &r->order));
    return st;
}

mpl_status mpl_data_reader_open(const char *path, const char *split, int64_t seq_len,
                                uint64_t seed, mpl_data_reader **out)
{
    if (!out) return mpl_err(MPL_ERR_ARG, "mpl_data_reader_open: out is NULL");
    *out = NULL;
    if (!path || !split) return mpl_err(MPL_ERR_ARG, "mpl_data_reader_open: NULL path or split");
    if (strcmp(split, "train") != 0 && strcmp(split, "val") != 0)
        return mpl_err(MPL_ERR_ARG, "data split '%s' must be \"train\" or \"val\"", split);
    if (seq_len < 1)
        return mpl_err(MPL_ERR_ARG, "seq_len=%lld must be >= 1", (long long)seq_len);
    mpl_data_reader *r = calloc(1, sizeof *r);
    if (!r) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    r->file = r->dset = r->fspace = H5I_INVALID_HID;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    mpl_status st = reader_open(path, split, seq_len, seed, r);
    if (st != MPL_OK) {
        mpl_err(st, "opening token file %s", path);
        mpl_data_reader_close(&r);
    }
    mpl_h5_quiet_end(&q);
    *out = r;
    return st;
}

void mpl_data_reader_close(mpl_data_reader **rp)
{
    if (!rp || !*rp) return;
    mpl_data_reader *r = *rp;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    if (r->fspace >= 0) H5Sclose(r->fspace);
    if (r->dset >= 0) H5Dclose(r->dset);
    if (r->file >= 0) H5Fclose(r->file);
    mpl_h5_quiet_end(&q);
    mpl_sample_order_destroy(&r->order);
    free(r->path);
    free(r);
    *rp = NULL;
}

int64_t mpl_data_reader_n_windows(const mpl_data_reader *r) { return r ? r->n_windows : 0; }

int64_t mpl_data_reader_window_of(const mpl_data_reader *r, int64_t g)
{
    if (!r || g < 0 || r->n_windows < 1) return -1;
    return mpl_sample_order_item(r->order, g);
}

int64_t mpl_data_reader_n_tokens(const mpl_data_reader *r) { return r ? r->n_tok : 0; }

/* One hyperslab [off, off+count) of the split into out; errors name the
 * file and the range (and `what`, the window when there is one). */
static mpl_status read_range(mpl_data_reader *r, int64_t off, int64_t count, int32_t *out,
                             int64_t window)
{
    hsize_t o[1] = {(hsize_t)off}, cnt[1] = {(hsize_t)count};
    mpl_status st = MPL_OK;
    hid_t mspace = H5I_INVALID_HID;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    MPL_H5_GOTO(H5Sselect_hyperslab(r->fspace, H5S_SELECT_SET, o, NULL, cnt, NULL), fail);
    MPL_H5_GOTO(mspace = H5Screate_simple(1, cnt, NULL), fail);
    /* The memory type makes HDF5 widen uint8/uint16/uint32 on disk to int32. */
    MPL_H5_GOTO(H5Dread(r->dset, H5T_NATIVE_INT32, mspace, r->fspace, H5P_DEFAULT, out), fail);
fail:
    if (st != MPL_OK && window >= 0)
        mpl_err(st, "%s: reading tokens [%lld, %lld) of window %lld", r->path, (long long)off,
                (long long)(off + count), (long long)window);
    else if (st != MPL_OK)
        mpl_err(st, "%s: reading tokens [%lld, %lld)", r->path, (long long)off,
                (long long)(off + count));
    if (mspace >= 0) H5Sclose(mspace);
    mpl_h5_quiet_end(&q);
    return st;
}

mpl_status mpl_data_reader_read(mpl_data_reader *r, int64_t g, int64_t start, int64_t count,
                                int32_t *out)
{
    if (!r) return mpl_err(MPL_ERR_ARG, "mpl_data_reader_read: reader is NULL");
    if (g < 0) return mpl_err(MPL_ERR_ARG, "sample index g=%lld must be >= 0", (long long)g);
    if (start < 0 || count < 0 || start + count > r->seq_len + 1)
        return mpl_err(MPL_ERR_ARG,
                       "token range [%lld, %lld) is outside the window of seq_len+1 = %lld",
                       (long long)start, (long long)(start + count),
                       (long long)(r->seq_len + 1));
    if (count == 0) return MPL_OK;
    if (!out) return mpl_err(MPL_ERR_ARG, "mpl_data_reader_read: out is NULL");
    int64_t k = mpl_data_reader_window_of(r, g);
    return read_range(r, k * r->seq_len + start, count, out, k);
}

mpl_status mpl_data_reader_read_at(mpl_data_reader *r, int64_t offset, int64_t count,
                                   int32_t *out)
{
    if (!r) return mpl_err(MPL_ERR_ARG, "mpl_data_reader_read_at: reader is NULL");
    if (offset < 0 || count < 0 || offset + count > r->n_tok)
        return mpl_err(MPL_ERR_ARG, "token range [%lld, %lld) is outside the split of %lld tokens",
                       (long long)offset, (long long)(offset + count), (long long)r->n_tok);
    if (count == 0) return MPL_OK;
    if (!out) return mpl_err(MPL_ERR_ARG, "mpl_data_reader_read_at: out is NULL");
    return read_range(r, offset, count, out, -1);
}
