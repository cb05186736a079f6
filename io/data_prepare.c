/* `multipole prepare`: raw byte files -> HDF5 token file (format in
 * data.h). Separate from the reader because it is the only writer and has
 * its own streaming concerns: inputs are never held in memory whole (they
 * are sized first with stat, then copied in blocks into fixed-size
 * datasets), and the output appears under its final name only when complete
 * (written to "<out>.tmp", fsync'd, renamed). */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

#define BLOCK_BYTES ((int64_t)4 << 20)      /* read/write block */
#define CHUNK_TOKENS ((int64_t)1 << 20)     /* HDF5 chunk: 1 MiB of uint8 */
#define PROGRESS_BYTES ((int64_t)64 << 20)
#define DEFLATE_LEVEL 4

typedef struct prep_out {
    hid_t dset[2], space[2];   /* 0: /tokens (train), 1: /val/tokens */
    int64_t n_train, n_val;
} prep_out;

/* Write bytes [off, off+n) of the concatenated stream: the head goes to
 * /tokens, the tail (offsets >= n_train) to /val/tokens. */
static mpl_status write_range(prep_out *po, int64_t off, const unsigned char *buf, int64_t n)
{
    int64_t lo[2] = {off, off > po->n_train ? off : po->n_train};
    int64_t hi[2] = {off + n < po->n_train ? off + n : po->n_train, off + n};
    int64_t base[2] = {0, po->n_train};
    for (int s = 0; s < 2; s++) {
        if (hi[s] <= lo[s]) continue;
        mpl_status st = MPL_OK;
        hsize_t o[1] = {(hsize_t)(lo[s] - base[s])}, c[1] = {(hsize_t)(hi[s] - lo[s])};
        hid_t ms = H5I_INVALID_HID;
        MPL_H5_GOTO(H5Sselect_hyperslab(po->space[s], H5S_SELECT_SET, o, NULL, c, NULL), fail);
        MPL_H5_GOTO(ms = H5Screate_simple(1, c, NULL), fail);
        MPL_H5_GOTO(H5Dwrite(po->dset[s], H5T_NATIVE_UCHAR, ms, po->space[s], H5P_DEFAULT,
                             buf + (lo[s] - off)),
                    fail);
    fail:
        if (ms >= 0) H5Sclose(ms);
        if (st != MPL_OK) return st;
    }
    return MPL_OK;
}

/* Sizes of all inputs; errors name the file. */
static mpl_status inputs_size(const mpl_data_prepare_opts *o, int64_t *sizes, int64_t *total)
{
    *total = 0;
    for (int i = 0; i < o->n_inputs; i++) {
        const char *p = o->inputs[i];
        struct stat sb;
        if (!p) return mpl_err(MPL_ERR_ARG, "input %d is NULL", i);
        if (stat(p, &sb) != 0 || access(p, R_OK) != 0)
            return mpl_err(MPL_ERR_IO, "cannot open %s: %s", p, strerror(errno));
        if (S_ISDIR(sb.st_mode))
            return mpl_err(MPL_ERR_IO, "%s: is a directory (give the files in it)", p);
        if (!S_ISREG(sb.st_mode))
            return mpl_err(MPL_ERR_IO, "%s: not a regular file", p);
        sizes[i] = (int64_t)sb.st_size;
        *total += sizes[i];
    }
    return MPL_OK;
}

/* Copy one input into the stream at *off. */
static mpl_status copy_input(prep_out *po, const char *path, int64_t size, unsigned char *buf,
                             int64_t *off, int64_t total, int verbose)
{
    mpl_status st = MPL_OK;
    FILE *f = fopen(path, "rb");
    if (!f) return mpl_err(MPL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    int64_t done = 0;
    while (done < size) {
        int64_t want = size - done < BLOCK_BYTES ? size - done : BLOCK_BYTES;
        size_t got = fread(buf, 1, (size_t)want, f);
        if (got != (size_t)want)
            MPL_FAIL_GOTO(fail, MPL_ERR_IO, "%s: %s after %lld of %lld bytes", path,
                          ferror(f) ? strerror(errno) : "file shrank while reading",
                          (long long)(done + (int64_t)got), (long long)size);
        MPL_CHECK_GOTO(write_range(po, *off, buf, want), fail);
        if (verbose && (*off + want) / PROGRESS_BYTES != *off / PROGRESS_BYTES)
            fprintf(stderr, "prepare: %lld / %lld MiB (%.0f%%)\n",
                    (long long)((*off + want) >> 20), (long long)(total >> 20),
                    100.0 * (double)(*off + want) / (double)total);
        *off += want;
        done += want;
    }
fail:
    fclose(f);
    return st;
}

static char *join_sources(const mpl_data_prepare_opts *o)
{
    size_t n = 1;
    for (int i = 0; i < o->n_inputs; i++) n += strlen(o->inputs[i]) + 2;
    char *s = calloc(n, 1);
    if (!s) return NULL;
    for (int i = 0; i < o->n_inputs; i++) {
        if (i) strcat(s, ", ");
        strcat(s, o->inputs[i]);
    }
    return s;
}

mpl_status mpl_data_prepare(const mpl_data_prepare_opts *o)
{
    if (!o || !o->out || !o->inputs)
        return mpl_err(MPL_ERR_ARG, "mpl_data_prepare: NULL options, inputs or output");
    if (o->n_inputs < 1) return mpl_err(MPL_ERR_ARG, "no input files given");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        return mpl_err(MPL_ERR_ARG, "val_fraction=%g must be in [0, 1)", o->val_fraction);

    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    prep_out po = {{H5I_INVALID_HID, H5I_INVALID_HID}, {H5I_INVALID_HID, H5I_INVALID_HID}, 0, 0};
    hid_t f = H5I_INVALID_HID, gval = H5I_INVALID_HID;
    int64_t *sizes = calloc((size_t)o->n_inputs, sizeof *sizes), total = 0;
    unsigned char *buf = malloc((size_t)BLOCK_BYTES);
    char *tmp = malloc(strlen(o->out) + 5), *source = NULL;
    if (!sizes || !buf || !tmp) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    sprintf(tmp, "%s.tmp", o->out);

    MPL_CHECK_GOTO(inputs_size(o, sizes, &total), fail);
    if (total == 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_ARG, "no input bytes: all %d input file(s) are empty",
                      o->n_inputs);
    po.n_val = llround(o->val_fraction * (double)total);
    po.n_train = total - po.n_val;
    if (po.n_train < 1)
        MPL_FAIL_GOTO(fail, MPL_ERR_ARG, "val_fraction=%g leaves no training tokens of %lld",
                      o->val_fraction, (long long)total);

    MPL_CHECK_GOTO(mpl_h5_file_create(tmp, &f), fail);
    MPL_H5_GOTO(gval = H5Gcreate2(f, "val", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), fail);
    for (int s = 0; s < 2; s++) {
        int64_t n = s == 0 ? po.n_train : po.n_val;
        /* Chunk never larger than the data (small files stay small); an
         * empty val split still needs a chunk of >= 1. */
        hsize_t dims[1] = {(hsize_t)n};
        hsize_t chunk[1] = {(hsize_t)(n < 1 ? 1 : n < CHUNK_TOKENS ? n : CHUNK_TOKENS)};
        hsize_t maxd[1] = {H5S_UNLIMITED};
        MPL_CHECK_GOTO(mpl_h5_dataset_create(s == 0 ? f : gval, "tokens", H5T_STD_U8LE, 1, dims,
                                             maxd, chunk, DEFLATE_LEVEL, 1, &po.dset[s]),
                       fail);
        MPL_H5_GOTO(po.space[s] = H5Dget_space(po.dset[s]), fail);
    }

    int64_t off = 0;
    for (int i = 0; i < o->n_inputs; i++)
        MPL_CHECK_GOTO(copy_input(&po, o->inputs[i], sizes[i], buf, &off, total, o->verbose),
                       fail);

    source = join_sources(o);
    if (!source) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "format_version", 1), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "vocab_size", 256), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "tokenizer", "bytes"), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "source", source), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_tokens", po.n_train), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_val_tokens", po.n_val), fail);

    for (int s = 0; s < 2; s++) {
        H5Sclose(po.space[s]);
        H5Dclose(po.dset[s]);
        po.space[s] = po.dset[s] = H5I_INVALID_HID;
    }
    H5Gclose(gval);
    gval = H5I_INVALID_HID;
    /* Close before rename: HDF5 writes its metadata at close. */
    herr_t rc = H5Fclose(f);
    f = H5I_INVALID_HID;
    MPL_H5_GOTO(rc, fail);
    MPL_CHECK_GOTO(mpl_io_fsync_path(tmp), fail);
    MPL_CHECK_GOTO(mpl_io_rename_durable(tmp, o->out), fail);
    if (o->verbose)
        fprintf(stderr, "prepare: wrote %s: %lld train + %lld val tokens from %d file(s)\n",
                o->out, (long long)po.n_train, (long long)po.n_val, o->n_inputs);

fail:
    for (int s = 0; s < 2; s++) {
        if (po.space[s] >= 0) H5Sclose(po.space[s]);
        if (po.dset[s] >= 0) H5Dclose(po.dset[s]);
    }
    if (gval >= 0) H5Gclose(gval);
    if (f >= 0) H5Fclose(f);
    if (st != MPL_OK) {
        if (tmp) unlink(tmp); /* never leave a half file behind */
        mpl_err(st, "preparing %s", o->out);
    }
    mpl_h5_quiet_end(&q);
    free(source);
    free(tmp);
    free(buf);
    free(sizes);
    return st;
}
