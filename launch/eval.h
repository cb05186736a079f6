/* Validation loss of a model over a split of a token file, sharded like
 * training: each window of seq_len tokens is split over the SP group and
 * the DP groups take different windows. Every token of the split after
 * the first is scored exactly once: the split is cut into windows of L+1
 * tokens that overlap by one ([kL, kL+L]); when (n-1) is not a multiple
 * of L, a last window [n-1-L, n-1] scores only its targets not scored yet.
 * Shared by `eval` and by `train` (eval_every). */
#ifndef MPL_EVAL_H
#define MPL_EVAL_H

#include <stdint.h>

#include "io/data.h"
#include "trainer.h"

typedef struct mpl_eval_result {
    double loss;              /* mean cross-entropy, nats per token */
    double bits_per_token;    /* loss / ln 2 */
    double bits_per_byte;     /* bits_per_token * tokens / text bytes; NAN when unknown */
    double perplexity;        /* exp(loss) */
    int64_t n_tokens;         /* tokens scored */
    int64_t n_windows;        /* windows evaluated */
    double seconds;
} mpl_eval_result;

/* Collective on t->world: score split `rd` (opened with t's seq_len) with
 * t's model and current parameters. max_windows > 0 scores only the first
 * max_windows windows (training's eval_windows), 0 the whole split.
 * bytes_per_token (text bytes / tokens of the file; 0 when unknown) gives
 * bits per byte. progress (may be NULL) is called on every rank after each
 * round with the windows done and in all. */
mpl_status mpl_eval_split(mpl_trainer *t, mpl_data_reader *rd, int64_t max_windows,
                          double bytes_per_token, mpl_eval_result *out,
                          void (*progress)(void *ctx, int64_t done, int64_t total), void *ctx);

#endif
