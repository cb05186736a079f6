/* ListOps (Long Range Arena, Nangia & Bowman 2018 / Tay et al. 2020):
 * a synthetic classification task of nested list operations, generated
 * here (`multipole prepare listops`) and stored as an HDF5 file.
 *
 * Grammar: an expression is a digit 0-9 or `OP e1 ... ek ]` with OP one of
 * [MIN, [MAX, [MED (median; of an even count the floor of the mean of the
 * two middle values), [SM (sum mod 10). Its value, 0-9, is the label.
 *
 * Sampling (as LRA): a node at depth d (the root has d = 1) is an operator
 * with probability 0.25 when d < 10, else a digit; an operator draws its
 * kind uniformly and 2-10 arguments uniformly. A tree is kept only when it
 * has 501..1999 tokens (operators, digits and `]`) and its token sequence
 * was not kept before (64-bit FNV-1a hash, over all three splits, so no
 * example of val/test also appears in train). Train, val and test are drawn
 * in that order from one Philox stream keyed by the seed.
 *
 * File format (format_version 1):
 *   /train/inputs   uint8 (n_train, max_len), token ids, padded with 0
 *                   (max_len = max_tokens + 1: 2000 with LRA's lengths)
 *   /train/lengths  int32 (n_train), tokens before the padding
 *   /train/labels   uint8 (n_train), the value 0-9
 *   /val/..., /test/...  likewise
 *   /vocab          (16) variable-length strings, the token of each id
 *   root attributes: tokenizer "listops", vocab_size 16, n_classes 10,
 *     format_version 1, seed, max_len 2000, min_tokens 501, max_tokens 1999,
 *     n_train, n_val, n_test (all int64 except tokenizer). */
#ifndef MPL_LISTOPS_H
#define MPL_LISTOPS_H

#include <stdint.h>

#include "../core/status.h"

/* Token ids. */
enum {
    MPL_LISTOPS_PAD = 0,
    MPL_LISTOPS_DIGIT0 = 1, /* digit v has id 1 + v */
    MPL_LISTOPS_MIN = 11,
    MPL_LISTOPS_MAX = 12,
    MPL_LISTOPS_MED = 13,
    MPL_LISTOPS_SM = 14,
    MPL_LISTOPS_CLOSE = 15,
    MPL_LISTOPS_VOCAB_SIZE = 16,
    MPL_LISTOPS_MAX_LEN = 2000,    /* row width of /<split>/inputs */
    MPL_LISTOPS_MIN_TOKENS = 501,  /* kept trees: MIN_TOKENS..MAX_TOKENS */
    MPL_LISTOPS_MAX_TOKENS = 1999,
};

typedef struct mpl_listops_opts {
    const char *out;                 /* .h5 path, written to out.tmp then renamed */
    int64_t n_train, n_val, n_test;  /* examples per split, >= 0, sum >= 1 */
    uint64_t seed;
    int verbose;                     /* 1: progress lines on stderr */
    /* kept trees' lengths, 0: LRA's 501 and 1999; rows are max_tokens + 1
     * wide (a smaller task for quick runs and tests) */
    int64_t min_tokens, max_tokens;
} mpl_listops_opts;

/* Local. Generate the three splits and write the file. MPL_ERR_ARG for
 * negative or all-zero counts or a NULL out; MPL_ERR_IO naming the file. */
mpl_status mpl_listops_prepare(const mpl_listops_opts *o);

/* Local. The text of token id (e.g. "[MED", "7", "<pad>"); NULL when out of
 * range. */
const char *mpl_listops_token_str(int id);

/* Local. Parse tok[0..n) as one expression and write its value to *value.
 * An independent check of the generator's labels: it keeps the arguments
 * on a value stack and sorts them, rather than the generator's running
 * aggregates. MPL_ERR_FORMAT (naming the position) for an unknown or pad
 * token, an unbalanced `]`, an unclosed operator, an operator without
 * arguments, an empty input or tokens after the expression. */
mpl_status mpl_listops_eval(const uint8_t *tok, int64_t n, int *value);

#endif
