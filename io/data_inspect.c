/* `multipole inspect` for token files: a human-readable summary (attributes,
 * sizes, compression, most frequent tokens, the first bytes as text). Kept
 * apart from the reader: it is presentation only. */
#include "data.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_internal.h"
#include "h5util.h"

#define SCAN_MAX ((int64_t)16 << 20)   /* histogram over at most 16 Mi tokens */
#define SCAN_BLOCK ((int64_t)1 << 20)
#define HEAD_TOKENS 200
#define TOP_K 10
#define HIST_VOCAB_MAX ((int64_t)1 << 24)

static void print_escaped_byte(int c)
{
    if (c == '\n') fputs("\\n", stdout);
    else if (c == '\t') fputs("\\t", stdout);
    else if (c == '\r') fputs("\\r", stdout);
    else if (c == '\\') fputs("\\\\", stdout);
    else if (c >= 0 && c < 128 && isprint(c)) putchar(c);
    else printf("\\x%02x", (unsigned)c & 0xffu);
}

/* bytes: 1 for the bytes tokenizer, 2 for dna (letters), 0 ids. */
static void print_token(int64_t t, int bytes)
{
    if (bytes == 2 && t >= 0 && t < MPL_DNA_VOCAB) {
        printf("%c", "ACGTN"[t]);
    } else if (bytes == 1 && t >= 0 && t < 256) {
        printf("'");
        print_escaped_byte((int)t);
        printf("'");
    } else {
        printf("%lld", (long long)t);
    }
}

/* Histogram of the first tokens and the head of /tokens. */
static mpl_status scan_tokens(hid_t d, const mpl_data_info *info, int bytes)
{
    mpl_status st = MPL_OK;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t dims[1] = {0};
    int32_t *buf = NULL;
    int64_t *hist = NULL;
    MPL_H5_GOTO(fs = H5Dget_space(d), fail);
    if (H5Sget_simple_extent_ndims(fs) != 1)
        MPL_FAIL_GOTO(fail, MPL_ERR_FORMAT, "/tokens is not 1-D");
    MPL_H5_GOTO(H5Sget_simple_extent_dims(fs, dims, NULL), fail);
    /* the dataset's own size, whatever the attribute says */
    int64_t n_scan = (int64_t)dims[0] < SCAN_MAX ? (int64_t)dims[0] : SCAN_MAX;
    int64_t vocab = info->vocab_size;
    buf = malloc((size_t)SCAN_BLOCK * sizeof *buf);
    if (!buf) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    if (vocab >= 1 && vocab <= HIST_VOCAB_MAX) {
        hist = calloc((size_t)vocab, sizeof *hist);
        if (!hist) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    }
    int64_t n_out_of_range = 0;
    for (int64_t off = 0; off < n_scan; off += SCAN_BLOCK) {
        hsize_t o[1] = {(hsize_t)off};
        hsize_t c[1] = {(hsize_t)(n_scan - off < SCAN_BLOCK ? n_scan - off : SCAN_BLOCK)};
        MPL_H5_GOTO(H5Sselect_hyperslab(fs, H5S_SELECT_SET, o, NULL, c, NULL), fail);
        MPL_H5_GOTO(ms = H5Screate_simple(1, c, NULL), fail);
        MPL_H5_GOTO(H5Dread(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, buf), fail);
        H5Sclose(ms);
        ms = H5I_INVALID_HID;
        if (off == 0) {
            printf("first tokens:   \"");
            for (int64_t i = 0; i < (int64_t)c[0] && i < HEAD_TOKENS; i++) {
                if (bytes == 1) print_escaped_byte(buf[i]);
                else if (bytes == 2) print_token(buf[i], 2);
                else printf("%s%d", i ? " " : "", buf[i]);
            }
            printf("\"%s\n", info->n_tokens > HEAD_TOKENS ? " ..." : "");
        }
        for (int64_t i = 0; hist && i < (int64_t)c[0]; i++) {
            if (buf[i] >= 0 && buf[i] < vocab) hist[buf[i]]++;
            else n_out_of_range++;
        }
    }
    if (hist) {
        printf("most frequent (first %lld tokens):\n", (long long)n_scan);
        for (int k = 0; k < TOP_K; k++) {
            int64_t best = -1;
            for (int64_t t = 0; t < vocab; t++)
                if (hist[t] > 0 && (best < 0 || hist[t] > hist[best])) best = t;
            if (best < 0) break;
            printf("  %2d. ", k + 1);
            print_token(best, bytes);
            printf("  %lld (%.2f%%)\n", (long long)hist[best],
                   100.0 * (double)hist[best] / (double)n_scan);
            hist[best] = -hist[best] - 1; /* mark as taken */
        }
        if (n_out_of_range)
            printf("  WARNING: %lld tokens outside [0, vocab_size)\n",
                   (long long)n_out_of_range);
    }
fail:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    free(hist);
    free(buf);
    return st;
}

mpl_status mpl_data_inspect(const char *path)
{
    if (!path) return mpl_err(MPL_ERR_ARG, "mpl_data_inspect: path is NULL");
    mpl_status st = MPL_OK;
    mpl_data_info info;
    hid_t f = H5I_INVALID_HID, d = H5I_INVALID_HID, t = H5I_INVALID_HID;
    MPL_CHECK(mpl_data_info_read(path, &info));
    mpl_h5_quiet q;
    mpl_h5_quiet_begin(&q);
    MPL_CHECK_GOTO(mpl_h5_file_open(path, H5F_ACC_RDONLY, &f), fail);
    MPL_H5_GOTO(d = H5Dopen2(f, "tokens", H5P_DEFAULT), fail);
    MPL_CHECK_GOTO(mpl_data_check_dataset(d, path, "tokens"), fail);
    MPL_H5_GOTO(t = H5Dget_type(d), fail);
    size_t tsize = H5Tget_size(t);
    struct stat sb;
    int64_t file_bytes = stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
    int64_t stored = (int64_t)H5Dget_storage_size(d);
    if (mpl_h5_exists(f, "val/tokens")) {
        hid_t dv = H5Dopen2(f, "val/tokens", H5P_DEFAULT);
        if (dv >= 0) {
            stored += (int64_t)H5Dget_storage_size(dv);
            H5Dclose(dv);
        }
    }
    int64_t raw = (info.n_tokens + info.n_val_tokens) * (int64_t)tsize;
    int bytes = !strcmp(info.tokenizer, "bytes") ? 1 : !strcmp(info.tokenizer, "dna") ? 2 : 0;

    printf("token file:     %s\n", path);
    printf("format_version: %lld\n", (long long)info.format_version);
    printf("tokenizer:      %s\n", info.tokenizer);
    printf("vocab_size:     %lld\n", (long long)info.vocab_size);
    printf("source:         %s\n", info.source);
    printf("n_tokens:       %lld (train, %zu byte(s) each)\n", (long long)info.n_tokens, tsize);
    printf("n_val_tokens:   %lld\n", (long long)info.n_val_tokens);
    if (info.text_bytes > 0)
        printf("text_bytes:     %lld (%.3f bytes per token)\n", (long long)info.text_bytes,
               (double)info.text_bytes / (double)(info.n_tokens + info.n_val_tokens));
    else
        printf("text_bytes:     unknown (bits per byte not reported)\n");
    printf("on disk:        %lld bytes (%.2f MiB); data %lld -> %lld bytes, ratio %.2fx\n",
           (long long)file_bytes, (double)file_bytes / (1 << 20), (long long)raw,
           (long long)stored, stored > 0 ? (double)raw / (double)stored : 0.0);
    MPL_CHECK_GOTO(scan_tokens(d, &info, bytes), fail);
fail:
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    mpl_h5_quiet_end(&q);
    return st;
}
