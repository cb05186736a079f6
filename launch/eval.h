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

#include "io/clsdata.h"
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

/* A classifier's score over a split of a classification file: the mean
 * cross-entropy of the labels and the accuracy (argmax of the logits). */
typedef struct mpl_eval_cls_result {
    double loss;              /* mean cross-entropy, nats per example */
    double accuracy;          /* fraction of examples whose argmax is the label */
    int64_t n_examples;
    double seconds;
} mpl_eval_cls_result;

/* Collective on t->world (task=classify): every example of the split once,
 * in order (max_examples > 0: only the first max_examples); the DP groups
 * take different examples, each split over the SP group. */
mpl_status mpl_eval_cls(mpl_trainer *t, mpl_cls_reader *rd, int64_t max_examples,
                        mpl_eval_cls_result *out,
                        void (*progress)(void *ctx, int64_t done, int64_t total), void *ctx);

#endif
