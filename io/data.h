/* HDF5 token datasets: writing them (`multipole prepare`), describing them
 * (`multipole inspect`) and reading training windows.
 *
 * File format (format_version 1):
 *   /tokens       1-D, uint8 when vocab_size <= 256, else uint16 (<= 65536)
 *                 or uint32; chunked (1 Mi tokens or less), deflate-compressed
 *   /val/tokens   the validation split, same type (may be absent/empty)
 *   root attributes: vocab_size (int64), tokenizer (string: "bytes", "dna"
 *                 or "ids", see data_tokenizer.h), source (string: the input
 *                 file names), format_version (int64), n_tokens (int64),
 *                 n_val_tokens (int64), text_bytes (int64, optional: bytes
 *                 of text the tokens stand for, for bits per byte; absent or
 *                 0 when unknown, as for ids without --text-bytes)
 *
 * Samples: window k covers tokens [k*L, k*L + L] (L+1 tokens: inputs and
 * shifted targets), k in [0, n_windows), n_windows = (n_tokens - 1) / L.
 * Global sample g of the run is window perm_e[g mod n_windows] of epoch
 * e = g / n_windows, perm_e a Philox-keyed permutation of (seed, e): the
 * order depends only on (seed, g), never on the rank layout. */
#ifndef MPL_DATA_H
#define MPL_DATA_H

#include <stdint.h>

#include "../core/status.h"
#include "data_tokenizer.h"

typedef struct mpl_data_prepare_opts {
    const char *const *inputs;  /* (n_inputs) paths of raw input files */
    int n_inputs;
    const char *out;            /* .h5 path, written to out.tmp then renamed */
    double val_fraction;        /* tail fraction of the stream kept for /val */
    int verbose;                /* 1: the summary line on stderr */
    /* Fields below may be left 0: bytes tokenizer, no progress. */
    mpl_tokenizer tokenizer;    /* how inputs become ids (data_tokenizer.h) */
    int id_bytes;               /* ids: 2 (uint16) or 4 (uint32) per id */
    int64_t vocab_size;         /* ids: every id must be below it (required) */
    int64_t text_bytes;         /* ids: bytes of text the ids encode (0: unknown) */
    /* Called now and then with the input bytes done and in all (both
     * passes of dna count: total is twice the input size). */
    void (*progress)(void *ctx, int64_t done, int64_t total);
    void *progress_ctx;
} mpl_data_prepare_opts;

/* Local. The ids of all inputs, concatenated in order, into a token file.
 * Errors name the file: missing, unreadable, empty input, unwritable
 * output, a uint16/uint32 file whose size is not a multiple of the id
 * size, an id >= vocab_size (with its position), a non-FASTA byte. */
mpl_status mpl_data_prepare(const mpl_data_prepare_opts *o);

typedef struct mpl_data_info {
    int64_t n_tokens, n_val_tokens, vocab_size, format_version;
    int64_t text_bytes;         /* 0: unknown */
    char tokenizer[32];
    char source[1024];
} mpl_data_info;

/* Local. Read the attributes; MPL_ERR_FORMAT naming the file and what is
 * missing when it is not a multipole token file (or not HDF5 at all). */
mpl_status mpl_data_info_read(const char *path, mpl_data_info *info);

typedef struct mpl_data_reader mpl_data_reader;

/* Local. Open read-only for windows of seq_len+1 tokens of split
 * "train" (/tokens) or "val" (/val/tokens). Fails (MPL_ERR_FORMAT, naming
 * the file and the sizes) when the split holds fewer than seq_len+1 tokens. */
mpl_status mpl_data_reader_open(const char *path, const char *split, int64_t seq_len,
                                uint64_t seed, mpl_data_reader **out);
/* Local. */
void mpl_data_reader_close(mpl_data_reader **r);
/* Local. Number of distinct windows (one epoch). */
int64_t mpl_data_reader_n_windows(const mpl_data_reader *r);
/* Local. The window index of global sample g (see above). */
int64_t mpl_data_reader_window_of(const mpl_data_reader *r, int64_t g);
/* Local. Number of tokens in the split. */
int64_t mpl_data_reader_n_tokens(const mpl_data_reader *r);
/* Local. Read tokens [offset, offset+count) of the split, in file order
 * (evaluation walks the split in order, not by permuted windows). */
mpl_status mpl_data_reader_read_at(mpl_data_reader *r, int64_t offset, int64_t count,
                                   int32_t *out);
/* Local. Read tokens [start, start+count) of global sample g's window
 * (0 <= start, start+count <= seq_len+1) into out: only those tokens are
 * read from the file (one hyperslab). */
mpl_status mpl_data_reader_read(mpl_data_reader *r, int64_t g, int64_t start, int64_t count,
                                int32_t *out);

/* Local. Print a human-readable description of a token file to stdout:
 * attributes, sizes, a histogram summary and the first bytes as text. */
mpl_status mpl_data_inspect(const char *path);

#endif
