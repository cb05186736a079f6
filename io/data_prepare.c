/* `multipole prepare`: raw files -> HDF5 token file (format in data.h),
 * through one of the tokenizers of data_tokenizer.h. Separate from the
 * reader because it is the only writer and has its own streaming concerns:
 * inputs are never held in memory whole (they are sized first: with stat,
 * or for FASTA by a counting pass, then encoded in blocks into fixed-size
 * datasets), and the output appears under its final name only when
 * complete (written to "<out>.tmp", fsync'd, renamed). */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

#define BLOCK_BYTES ((int64_t)4 << 20)      /* read/encode/write block */
#define CHUNK_TOKENS ((int64_t)1 << 20)     /* HDF5 chunk: 1 Mi tokens */
#define PROGRESS_BYTES ((int64_t)16 << 20)  /* report at least this far apart */
#define DEFLATE_LEVEL 4

typedef struct prep_out {
    hid_t dset[2], space[2];   /* 0: /tokens (train), 1: /val/tokens */
    int64_t n_train, n_val;
} prep_out;

/* Where the passes are, for the progress callback. */
typedef struct prep_progress {
    const mpl_data_prepare_opts *o;
    int64_t done, total, last;
} prep_progress;

static void progress_add(prep_progress *p, int64_t n)
{
    p->done += n;
    if (p->o->progress && (p->done - p->last >= PROGRESS_BYTES || p->done == p->total)) {
        p->o->progress(p->o->progress_ctx, p->done, p->total);
        p->last = p->done;
    }
}

/* Write tokens [off, off+n) of the concatenated stream (elements of
 * memory type mtype, elem bytes each): the head goes to /tokens, the tail
 * (offsets >= n_train) to /val/tokens. */
static mpl_status write_range(prep_out *po, int64_t off, const void *buf, size_t elem,
                              hid_t mtype, int64_t n)
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
        MPL_H5_GOTO(H5Dwrite(po->dset[s], mtype, ms, po->space[s], H5P_DEFAULT,
                             (const char *)buf + (size_t)(lo[s] - off) * elem),
                    fail);
    fail:
        if (ms >= 0) H5Sclose(ms);
        if (st != MPL_OK) return st;
    }
    return MPL_OK;
}

/* Bytes of all inputs; errors name the file. */
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
        if (o->tokenizer == MPL_TOKENIZER_IDS && sizes[i] % o->id_bytes)
            return mpl_err(MPL_ERR_FORMAT, "%s: %lld bytes is not a whole number of uint%d "
                           "token ids%s", p, (long long)sizes[i], 8 * o->id_bytes,
                           o->id_bytes == 4 && sizes[i] % 2 == 0 ? " (is it uint16?)" : "");
        *total += sizes[i];
    }
    return MPL_OK;
}

/* Encode one block of raw bytes of input `path` (at byte offset `at` in
 * it) into tok; *n_tok ids. ids are little-endian on disk whatever the host. */
static mpl_status encode_block(const mpl_data_prepare_opts *o, const char *path, int64_t at,
                               mpl_dna_state *dna, const unsigned char *raw, int64_t n,
                               void *tok, int64_t *n_tok)
{
    switch (o->tokenizer) {
    case MPL_TOKENIZER_DNA: return mpl_dna_feed(dna, path, raw, n, tok, n_tok);
    case MPL_TOKENIZER_IDS: {
        uint32_t *t = tok;
        const int w = o->id_bytes;
        for (int64_t i = 0; i < n / w; i++) {
            const unsigned char *b = raw + i * w;
            uint32_t v = (uint32_t)b[0] | (uint32_t)b[1] << 8;
            if (w == 4) v |= (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            if ((int64_t)v >= o->vocab_size)
                return mpl_err(MPL_ERR_FORMAT, "%s: token id %lu at index %lld is not below "
                               "--vocab-size %lld", path, (unsigned long)v,
                               (long long)(at / w + i), (long long)o->vocab_size);
            t[i] = v;
        }
        *n_tok = n / w;
        return MPL_OK;
    }
    default:
        memcpy(tok, raw, (size_t)n);
        *n_tok = n;
        return MPL_OK;
    }
}

/* One pass over one input: encode every block and, when po is given,
 * write the ids at *off of the stream (else only count them into *off). */
static mpl_status pass_input(const mpl_data_prepare_opts *o, prep_out *po, const char *path,
                             int64_t size, unsigned char *raw, void *tok, int64_t *off,
                             prep_progress *pp)
{
    mpl_status st = MPL_OK;
    FILE *f = fopen(path, "rb");
    if (!f) return mpl_err(MPL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    mpl_dna_state dna;
    mpl_dna_state_init(&dna);
    const int ids = o->tokenizer == MPL_TOKENIZER_IDS;
    const size_t elem = ids ? sizeof(uint32_t) : 1;
    const hid_t mtype = ids ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT8;
    int64_t done = 0;
    while (done < size) {
        int64_t want = size - done < BLOCK_BYTES ? size - done : BLOCK_BYTES;
        size_t got = fread(raw, 1, (size_t)want, f);
        if (got != (size_t)want)
            MPL_FAIL_GOTO(fail, MPL_ERR_IO, "%s: %s after %lld of %lld bytes", path,
                          ferror(f) ? strerror(errno) : "file shrank while reading",
                          (long long)(done + (int64_t)got), (long long)size);
        int64_t n_tok = 0;
        MPL_CHECK_GOTO(encode_block(o, path, done, &dna, raw, want, po ? tok : NULL, &n_tok),
                       fail);
        if (po) MPL_CHECK_GOTO(write_range(po, *off, tok, elem, mtype, n_tok), fail);
        *off += n_tok;
        done += want;
        progress_add(pp, want);
    }
    if (o->verbose && po && dna.n_ambiguous)
        fprintf(stderr, "prepare: %s: %lld IUPAC ambiguity code(s) stored as N\n", path,
                (long long)dna.n_ambiguous);
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

static mpl_status check_opts(const mpl_data_prepare_opts *o)
{
    if (!o || !o->out || !o->inputs)
        return mpl_err(MPL_ERR_ARG, "mpl_data_prepare: NULL options, inputs or output");
    if (o->n_inputs < 1) return mpl_err(MPL_ERR_ARG, "no input files given");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        return mpl_err(MPL_ERR_ARG, "val_fraction=%g must be in [0, 1)", o->val_fraction);
    if ((unsigned)o->tokenizer >= MPL_TOKENIZER_COUNT)
        return mpl_err(MPL_ERR_ARG, "unknown tokenizer %d", (int)o->tokenizer);
    if (o->tokenizer == MPL_TOKENIZER_IDS) {
        if (o->id_bytes != 2 && o->id_bytes != 4)
            return mpl_err(MPL_ERR_ARG, "token ids are uint16 or uint32, not %d bytes",
                           o->id_bytes);
        if (o->vocab_size < 2 || o->vocab_size > ((int64_t)1 << (8 * o->id_bytes)))
            return mpl_err(MPL_ERR_ARG, "--vocab-size %lld must be in [2, %lld] for uint%d ids "
                           "(e.g. 50257 for GPT-2's)", (long long)o->vocab_size,
                           (long long)((int64_t)1 << (8 * o->id_bytes)), 8 * o->id_bytes);
        if (o->text_bytes < 0)
            return mpl_err(MPL_ERR_ARG, "--text-bytes %lld must be >= 0",
                           (long long)o->text_bytes);
    }
    return MPL_OK;
}

mpl_status mpl_data_prepare(const mpl_data_prepare_opts *o)
{
    MPL_CHECK(check_opts(o));
    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    prep_out po = {{H5I_INVALID_HID, H5I_INVALID_HID}, {H5I_INVALID_HID, H5I_INVALID_HID}, 0, 0};
    hid_t f = H5I_INVALID_HID, gval = H5I_INVALID_HID;
    const int dna = o->tokenizer == MPL_TOKENIZER_DNA, ids = o->tokenizer == MPL_TOKENIZER_IDS;
    const int64_t vocab = ids ? o->vocab_size : dna ? MPL_DNA_VOCAB : 256;
    int64_t *sizes = calloc((size_t)o->n_inputs, sizeof *sizes), total = 0, n_tok = 0;
    unsigned char *buf = malloc((size_t)BLOCK_BYTES);
    void *tok = malloc((size_t)BLOCK_BYTES * (ids ? 2 : 1)); /* uint32 per 2 bytes at most */
    char *tmp = malloc(strlen(o->out) + 5), *source = NULL;
    prep_progress pp = {o, 0, 0, 0};
    if (!sizes || !buf || !tok || !tmp) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    sprintf(tmp, "%s.tmp", o->out);

    MPL_CHECK_GOTO(inputs_size(o, sizes, &total), fail);
    pp.total = dna ? 2 * total : total;
    if (dna) /* pass 1 counts the bases, so the split sizes are known */
        for (int i = 0; i < o->n_inputs; i++)
            MPL_CHECK_GOTO(pass_input(o, NULL, o->inputs[i], sizes[i], buf, tok, &n_tok, &pp),
                           fail);
    else
        n_tok = ids ? total / o->id_bytes : total;
    if (n_tok == 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_ARG, "no input %s: all %d input file(s) are empty%s",
                      dna ? "bases" : ids ? "token ids" : "bytes", o->n_inputs,
                      dna ? " or hold only headers" : "");
    po.n_val = llround(o->val_fraction * (double)n_tok);
    po.n_train = n_tok - po.n_val;
    if (po.n_train < 1)
        MPL_FAIL_GOTO(fail, MPL_ERR_ARG, "val_fraction=%g leaves no training tokens of %lld",
                      o->val_fraction, (long long)n_tok);

    MPL_CHECK_GOTO(mpl_h5_file_create(tmp, &f), fail);
    MPL_CHECK_GOTO(mpl_h5_group_create(f, "val", &gval), fail);
    const hid_t ftype = vocab <= 256 ? H5T_STD_U8LE : vocab <= 65536 ? H5T_STD_U16LE
                                                                      : H5T_STD_U32LE;
    for (int s = 0; s < 2; s++) {
        int64_t n = s == 0 ? po.n_train : po.n_val;
        /* Chunk never larger than the data (small files stay small); an
         * empty val split still needs a chunk of >= 1. */
        hsize_t dims[1] = {(hsize_t)n};
        hsize_t chunk[1] = {(hsize_t)(n < 1 ? 1 : n < CHUNK_TOKENS ? n : CHUNK_TOKENS)};
        hsize_t maxd[1] = {H5S_UNLIMITED};
        MPL_CHECK_GOTO(mpl_h5_dataset_create(s == 0 ? f : gval, "tokens", ftype, 1, dims, maxd,
                                             chunk, DEFLATE_LEVEL, 1, &po.dset[s]),
                       fail);
        MPL_H5_GOTO(po.space[s] = H5Dget_space(po.dset[s]), fail);
    }

    int64_t off = 0;
    for (int i = 0; i < o->n_inputs; i++)
        MPL_CHECK_GOTO(pass_input(o, &po, o->inputs[i], sizes[i], buf, tok, &off, &pp), fail);
    if (off != n_tok)
        MPL_FAIL_GOTO(fail, MPL_ERR_IO, "the inputs changed while being read (%lld bases "
                      "counted, then %lld)", (long long)n_tok, (long long)off);

    source = join_sources(o);
    if (!source) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "format_version", 1), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "vocab_size", vocab), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "tokenizer", mpl_tokenizer_name(o->tokenizer)), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "source", source), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_tokens", po.n_train), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_val_tokens", po.n_val), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "text_bytes", ids ? o->text_bytes : n_tok), fail);

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
        fprintf(stderr, "prepare: wrote %s: %lld train + %lld val tokens (%s, vocab_size %lld) "
                "from %d file(s)\n", o->out, (long long)po.n_train, (long long)po.n_val,
                mpl_tokenizer_name(o->tokenizer), (long long)vocab, o->n_inputs);

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
    free(tok);
    free(buf);
    free(sizes);
    return st;
}
