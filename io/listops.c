/* ListOps generation, its file writer and an independent evaluator (format
 * and sampling rules in listops.h). Separate from data_prepare.c because
 * its examples are sampled, not copied: trees are drawn straight into a
 * token buffer with an explicit stack (depth <= 10, so no recursion and a
 * fixed-size stack), evaluated as they close, and abandoned as soon as they
 * pass MAX_TOKENS: most rejected samples cost little (about 1 in 12
 * sampled trees is kept). Rows are written in blocks, so memory stays
 * small whatever the counts. */
#include "listops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "../core/philox.h"
#include "h5util.h"

#define LISTOPS_DEPTH 10        /* nodes at this depth are digits */
#define LISTOPS_OP_P (1u << 30) /* P(operator) = 2^30 / 2^32 = 0.25 */
#define LISTOPS_STREAM 0x4c4f5053u /* "LOPS": Philox counter word 2 */
#define BLOCK_ROWS 512           /* rows buffered before a write */
#define CHUNK_ROWS 256           /* HDF5 chunk of inputs: 256 x 2000 bytes */
#define PROGRESS_ROWS 10000
#define DEFLATE_LEVEL 4

static const char *const vocab[MPL_LISTOPS_VOCAB_SIZE] = {
    "<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    "[MIN", "[MAX", "[MED", "[SM", "]"};

const char *mpl_listops_token_str(int id)
{
    return id >= 0 && id < MPL_LISTOPS_VOCAB_SIZE ? vocab[id] : NULL;
}

/* ---- random numbers: Philox words (seed, running counter) ---- */

typedef struct rng {
    uint64_t seed, ctr;
    uint32_t buf[4];
    int left;
} rng;

static uint32_t rng_u32(rng *r)
{
    if (r->left == 0) {
        uint32_t c[4] = {(uint32_t)r->ctr, (uint32_t)(r->ctr >> 32), LISTOPS_STREAM, 0};
        mpl_philox_u4 x = mpl_philox4x32(c, r->seed);
        memcpy(r->buf, x.v, sizeof r->buf);
        r->ctr++;
        r->left = 4;
    }
    return r->buf[--r->left];
}

/* Uniform in [0, n) by multiply-shift; the bias (< n / 2^32) is far below
 * anything the task could notice. */
static int rng_below(rng *r, uint32_t n)
{
    return (int)(((uint64_t)rng_u32(r) * n) >> 32);
}

/* ---- sampling ---- */

typedef struct frame {
    int op, remaining, n, mn, mx, sum;
    int count[10]; /* digits seen, for the median */
} frame;

static int frame_value(const frame *f)
{
    switch (f->op) {
    case MPL_LISTOPS_MIN: return f->mn;
    case MPL_LISTOPS_MAX: return f->mx;
    case MPL_LISTOPS_SM: return f->sum;
    default: break;
    }
    /* median from the counts: the values at sorted positions lo and hi */
    int lo = (f->n - 1) / 2, hi = f->n / 2, a = -1, b = -1, seen = 0;
    for (int v = 0; v < 10; v++) {
        seen += f->count[v];
        if (a < 0 && seen > lo) a = v;
        if (b < 0 && seen > hi) b = v;
    }
    return (a + b) / 2;
}

/* Draw one tree into tok; 1 when it has MIN..MAX_TOKENS tokens (then *n_tok
 * and *label are set), 0 when it was abandoned or is too short. */
static int sample_tree(rng *r, int64_t min_tokens, int64_t max_tokens, uint8_t *tok,
                       int64_t *n_tok, int *label)
{
    frame st[LISTOPS_DEPTH];
    int sp = 0; /* open operators; the next node has depth sp + 1 */
    int64_t n = 0;
    for (;;) {
        if (n >= max_tokens) return 0;
        if (sp + 1 < LISTOPS_DEPTH && rng_u32(r) < LISTOPS_OP_P) {
            frame *f = &st[sp++];
            f->op = MPL_LISTOPS_MIN + rng_below(r, 4);
            f->remaining = 2 + rng_below(r, 9);
            f->n = f->sum = 0;
            f->mn = 9;
            f->mx = 0;
            memset(f->count, 0, sizeof f->count);
            tok[n++] = (uint8_t)f->op;
            continue;
        }
        int v = rng_below(r, 10);
        tok[n++] = (uint8_t)(MPL_LISTOPS_DIGIT0 + v);
        /* hand v to its parent; close every operator that is complete */
        for (;;) {
            if (sp == 0) {
                *n_tok = n;
                *label = v;
                return n >= min_tokens;
            }
            frame *f = &st[sp - 1];
            f->n++;
            f->count[v]++;
            f->sum = (f->sum + v) % 10;
            if (v < f->mn) f->mn = v;
            if (v > f->mx) f->mx = v;
            if (--f->remaining > 0) break;
            if (n >= max_tokens) return 0;
            tok[n++] = MPL_LISTOPS_CLOSE;
            v = frame_value(f);
            sp--;
        }
    }
}

/* ---- duplicate filter: open addressing over 64-bit FNV-1a hashes ---- */

typedef struct hset {
    uint64_t *slot; /* 0 = empty */
    uint64_t mask;
} hset;

static uint64_t tokens_hash(const uint8_t *tok, int64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) {
        h ^= tok[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

/* 1 when h was new (and is now in the set). The set is sized for all
 * examples at twice their number, so it never fills. */
static int hset_insert(hset *s, uint64_t h)
{
    for (uint64_t i = h & s->mask;; i = (i + 1) & s->mask) {
        if (s->slot[i] == h) return 0;
        if (s->slot[i] == 0) {
            s->slot[i] = h;
            return 1;
        }
    }
}

/* ---- writing ---- */

typedef struct split_out {
    hid_t grp, dset[3]; /* inputs, lengths, labels */
    int64_t n, done, width;
} split_out;

static mpl_status split_create(hid_t f, const char *name, int64_t n, int64_t width,
                               split_out *so)
{
    mpl_status st = MPL_OK;
    so->n = n;
    so->done = 0;
    so->width = width;
    MPL_CHECK(mpl_h5_group_create(f, name, &so->grp)); /* no time stamps: same seed, same bytes */
    /* unlimited first dim: a 0-row split still needs a chunk of >= 1 row */
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)width}, maxd[2] = {H5S_UNLIMITED, (hsize_t)width};
    hsize_t rows = (hsize_t)(n < 1 ? 1 : n < CHUNK_ROWS ? n : CHUNK_ROWS);
    hsize_t chunk2[2] = {rows, (hsize_t)width};
    hsize_t rows1 = (hsize_t)(n < 1 ? 1 : n < 65536 ? n : 65536), chunk1[1] = {rows1};
    MPL_CHECK(mpl_h5_dataset_create(so->grp, "inputs", H5T_STD_U8LE, 2, dims, maxd, chunk2,
                                    DEFLATE_LEVEL, 1, &so->dset[0]));
    MPL_CHECK(mpl_h5_dataset_create(so->grp, "lengths", H5T_STD_I32LE, 1, dims, maxd, chunk1,
                                    DEFLATE_LEVEL, 1, &so->dset[1]));
    MPL_CHECK(mpl_h5_dataset_create(so->grp, "labels", H5T_STD_U8LE, 1, dims, maxd, chunk1,
                                    DEFLATE_LEVEL, 1, &so->dset[2]));
    return st;
}

static void split_close(split_out *so)
{
    for (int i = 0; i < 3; i++)
        if (so->dset[i] >= 0) H5Dclose(so->dset[i]);
    if (so->grp >= 0) H5Gclose(so->grp);
    so->dset[0] = so->dset[1] = so->dset[2] = so->grp = H5I_INVALID_HID;
}

/* Rows [so->done, so->done + k) of the three datasets. */
static mpl_status split_write(split_out *so, int64_t k, const uint8_t *inputs,
                              const int32_t *lengths, const uint8_t *labels)
{
    mpl_status st = MPL_OK;
    const void *buf[3] = {inputs, lengths, labels};
    hid_t mtype[3] = {H5T_NATIVE_UINT8, H5T_NATIVE_INT32, H5T_NATIVE_UINT8};
    for (int i = 0; i < 3; i++) {
        hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
        int nd = i == 0 ? 2 : 1;
        hsize_t o[2] = {(hsize_t)so->done, 0}, c[2] = {(hsize_t)k, (hsize_t)so->width};
        MPL_H5_GOTO(fs = H5Dget_space(so->dset[i]), next);
        MPL_H5_GOTO(H5Sselect_hyperslab(fs, H5S_SELECT_SET, o, NULL, c, NULL), next);
        MPL_H5_GOTO(ms = H5Screate_simple(nd, c, NULL), next);
        MPL_H5_GOTO(H5Dwrite(so->dset[i], mtype[i], ms, fs, H5P_DEFAULT, buf[i]), next);
    next:
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        if (st != MPL_OK) return st;
    }
    so->done += k;
    return MPL_OK;
}

static mpl_status vocab_write(hid_t f)
{
    mpl_status st = MPL_OK;
    hid_t t = H5I_INVALID_HID, sp = H5I_INVALID_HID, d = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    hsize_t dims[1] = {MPL_LISTOPS_VOCAB_SIZE};
    MPL_H5_GOTO(t = H5Tcopy(H5T_C_S1), fail);
    MPL_H5_GOTO(H5Tset_size(t, H5T_VARIABLE), fail);
    MPL_H5_GOTO(H5Tset_cset(t, H5T_CSET_UTF8), fail);
    MPL_H5_GOTO(sp = H5Screate_simple(1, dims, NULL), fail);
    MPL_H5_GOTO(dcpl = H5Pcreate(H5P_DATASET_CREATE), fail);
    MPL_H5_GOTO(H5Pset_obj_track_times(dcpl, 0), fail);
    MPL_H5_GOTO(d = H5Dcreate2(f, "vocab", t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT), fail);
    MPL_H5_GOTO(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, vocab), fail);
fail:
    if (d >= 0) H5Dclose(d);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return st;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mpl_status mpl_listops_prepare(const mpl_listops_opts *o)
{
    if (!o || !o->out) return mpl_err(MPL_ERR_ARG, "mpl_listops_prepare: NULL options or output");
    if (o->n_train < 0 || o->n_val < 0 || o->n_test < 0)
        return mpl_err(MPL_ERR_ARG, "example counts train=%lld val=%lld test=%lld must be >= 0",
                       (long long)o->n_train, (long long)o->n_val, (long long)o->n_test);
    int64_t total = o->n_train + o->n_val + o->n_test;
    if (total < 1) return mpl_err(MPL_ERR_ARG, "no examples requested (train+val+test = 0)");
    if (total > ((int64_t)1 << 32))
        return mpl_err(MPL_ERR_ARG, "%lld examples is too many (at most 2^32)", (long long)total);
    const int64_t min_tok = o->min_tokens > 0 ? o->min_tokens : MPL_LISTOPS_MIN_TOKENS;
    const int64_t max_tok = o->max_tokens > 0 ? o->max_tokens : MPL_LISTOPS_MAX_TOKENS;
    if (min_tok < 1 || max_tok < min_tok || max_tok > MPL_LISTOPS_MAX_TOKENS)
        return mpl_err(MPL_ERR_ARG, "tree lengths %lld..%lld: need 1 <= min <= max <= %d",
                       (long long)min_tok, (long long)max_tok, MPL_LISTOPS_MAX_TOKENS);
    const int64_t W = max_tok + 1; /* row width: the longest tree and one pad at least */

    mpl_status st = MPL_OK;
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    static const char *const names[3] = {"train", "val", "test"};
    int64_t counts[3] = {o->n_train, o->n_val, o->n_test};
    split_out so[3];
    for (int s = 0; s < 3; s++)
        so[s] = (split_out){H5I_INVALID_HID, {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID}, 0, 0, 0};
    hid_t f = H5I_INVALID_HID;
    hset set = {NULL, 0};
    uint64_t cap = 1;
    while (cap < (uint64_t)total * 2) cap <<= 1;
    set.mask = cap - 1;
    set.slot = calloc(cap, sizeof *set.slot);
    uint8_t *inputs = calloc((size_t)(BLOCK_ROWS * W), 1);
    int32_t *lengths = calloc(BLOCK_ROWS, sizeof *lengths);
    uint8_t *labels = calloc(BLOCK_ROWS, 1);
    char *tmp = malloc(strlen(o->out) + 5);
    if (!set.slot || !inputs || !lengths || !labels || !tmp)
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    sprintf(tmp, "%s.tmp", o->out);

    MPL_CHECK_GOTO(mpl_h5_file_create(tmp, &f), fail);
    for (int s = 0; s < 3; s++)
        MPL_CHECK_GOTO(split_create(f, names[s], counts[s], W, &so[s]), fail);
    MPL_CHECK_GOTO(vocab_write(f), fail);

    rng r = {o->seed, 0, {0}, 0};
    int64_t kept = 0, sampled = 0, dups = 0;
    double t0 = now_s();
    for (int s = 0; s < 3; s++) {
        while (so[s].done < counts[s]) {
            int64_t want = counts[s] - so[s].done, k = 0;
            if (want > BLOCK_ROWS) want = BLOCK_ROWS;
            memset(inputs, 0, (size_t)(want * W));
            while (k < want) {
                uint8_t *row = inputs + k * W;
                int64_t n = 0;
                int label = 0;
                sampled++;
                if (!sample_tree(&r, min_tok, max_tok, row, &n, &label)) {
                    memset(row, 0, (size_t)W); /* keep the padding 0 */
                    continue;
                }
                if (!hset_insert(&set, tokens_hash(row, n))) {
                    dups++;
                    memset(row, 0, (size_t)W);
                    continue;
                }
                lengths[k] = (int32_t)n;
                labels[k] = (uint8_t)label;
                k++;
                if (o->verbose && ++kept % PROGRESS_ROWS == 0)
                    fprintf(stderr,
                            "prepare listops: %lld / %lld examples (%lld trees sampled, "
                            "%lld duplicates, %.1f s)\n",
                            (long long)kept, (long long)total, (long long)sampled,
                            (long long)dups, now_s() - t0);
            }
            MPL_CHECK_GOTO(split_write(&so[s], k, inputs, lengths, labels), fail);
        }
    }

    MPL_CHECK_GOTO(mpl_h5_attr_write_str(f, "tokenizer", "listops"), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "format_version", 1), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "vocab_size", MPL_LISTOPS_VOCAB_SIZE), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_classes", 10), fail);
    /* int64 attribute: the seed's bits, reinterpreted when >= 2^63 */
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "seed", (int64_t)o->seed), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "max_len", W), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "min_tokens", min_tok), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "max_tokens", max_tok), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_train", o->n_train), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_val", o->n_val), fail);
    MPL_CHECK_GOTO(mpl_h5_attr_write_i64(f, "n_test", o->n_test), fail);

    for (int s = 0; s < 3; s++) split_close(&so[s]);
    /* Close before rename: HDF5 writes its metadata at close. */
    herr_t rc = H5Fclose(f);
    f = H5I_INVALID_HID;
    MPL_H5_GOTO(rc, fail);
    MPL_CHECK_GOTO(mpl_io_fsync_path(tmp), fail);
    MPL_CHECK_GOTO(mpl_io_rename_durable(tmp, o->out), fail);
    if (o->verbose)
        fprintf(stderr,
                "prepare listops: wrote %s: %lld train + %lld val + %lld test examples "
                "(%lld trees sampled, %lld duplicates dropped, %.1f s)\n",
                o->out, (long long)o->n_train, (long long)o->n_val, (long long)o->n_test,
                (long long)sampled, (long long)dups, now_s() - t0);

fail:
    for (int s = 0; s < 3; s++) split_close(&so[s]);
    if (f >= 0) H5Fclose(f);
    if (st != MPL_OK) {
        if (tmp) unlink(tmp); /* never leave a half file behind */
        mpl_err(st, "preparing %s", o->out);
    }
    mpl_h5_quiet_end(&q);
    free(tmp);
    free(labels);
    free(lengths);
    free(inputs);
    free(set.slot);
    return st;
}

/* ---- evaluator ---- */

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

mpl_status mpl_listops_eval(const uint8_t *tok, int64_t n, int *value)
{
    if (!tok || !value) return mpl_err(MPL_ERR_ARG, "mpl_listops_eval: NULL tokens or value");
    if (n < 1) return mpl_err(MPL_ERR_FORMAT, "listops: empty expression (n=%lld)", (long long)n);
    /* vals: digit values, and -(op) markers for open operators; at most n */
    int *vals = malloc((size_t)n * sizeof *vals);
    if (!vals) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    mpl_status st = MPL_OK;
    int64_t top = 0, open = 0;
    for (int64_t i = 0; i < n; i++) {
        int t = tok[i];
        if (top > 0 && open == 0)
            MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT,
                          "listops: token %lld (%s) after the end of the expression",
                          (long long)i, t < MPL_LISTOPS_VOCAB_SIZE ? vocab[t] : "?");
        if (t >= MPL_LISTOPS_DIGIT0 && t < MPL_LISTOPS_DIGIT0 + 10) {
            vals[top++] = t - MPL_LISTOPS_DIGIT0;
        } else if (t >= MPL_LISTOPS_MIN && t <= MPL_LISTOPS_SM) {
            vals[top++] = -t;
            open++;
        } else if (t == MPL_LISTOPS_CLOSE) {
            int64_t b = top;
            while (b > 0 && vals[b - 1] >= 0) b--;
            if (b == 0)
                MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "listops: unmatched ']' at token %lld",
                              (long long)i);
            int op = -vals[b - 1], k = (int)(top - b), *a = vals + b, v = 0;
            if (k == 0)
                MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT,
                              "listops: operator %s closed at token %lld has no arguments",
                              vocab[op], (long long)i);
            qsort(a, (size_t)k, sizeof *a, cmp_int);
            if (op == MPL_LISTOPS_MIN) v = a[0];
            else if (op == MPL_LISTOPS_MAX) v = a[k - 1];
            else if (op == MPL_LISTOPS_MED) v = (a[(k - 1) / 2] + a[k / 2]) / 2;
            else
                for (int j = 0; j < k; j++) v = (v + a[j]) % 10;
            vals[b - 1] = v;
            top = b;
            open--;
        } else {
            MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "listops: token %lld has id %d, not an operator, "
                          "digit or ']'", (long long)i, t);
        }
    }
    if (open > 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "listops: %lld operator(s) not closed by ']'",
                      (long long)open);
    *value = vals[0];
fail:
    free(vals);
    return st;
}
