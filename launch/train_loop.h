/* The training loop of `multipole train`: batches from the token file,
 * steps, the non-finite-step policy, periodic evaluation, progress output,
 * metrics.csv and checkpoints. Separate from cmd_train.c, which turns the
 * command line into a trainer (config, validation, data, resume).
 *
 * metrics.csv (rank 0, appended; the header is written when the file is
 * new), one row per step:
 *   step        steps done, skipped ones included
 *   tokens      tokens of the training stream consumed so far (cursor * seq_len)
 *   loss        mean training loss of the step's global batch, nats/token
 *               ("nan"/"inf" on a bad step)
 *   lr          learning rate of the step
 *   grad_norm   global gradient norm before clipping
 *   tok_per_s   training tokens per second since the last progress report
 *               (evaluation and checkpoint time excluded)
 *   elapsed_s   wall seconds since this run started
 *   mfu         model FLOPs utilisation of tok_per_s (flops.h), 0..1
 *   val_loss    validation loss (eval_every), empty on steps without one
 *   bad         1: the loss or gradient norm was not finite and the update
 *               was skipped, else 0
 *   val_acc     task=classify: validation accuracy (eval_every), else empty
 * A classifier's loss is per example and its tokens count every position
 * of the examples, padding included (what the model computes on).
 */
#ifndef MPL_TRAIN_LOOP_H
#define MPL_TRAIN_LOOP_H

#include <signal.h>
#include <stdint.h>

#include "cli.h"
#include "io/clsdata.h"
#include "io/data.h"
#include "trainer.h"

typedef struct mpl_train_opts {
    long long stop_after;               /* 0: run to steps */
    int quiet;                          /* no progress, header or checkpoint lines */
    int64_t resumed_step;               /* step of the checkpoint resumed from (0: fresh) */
    mpl_data_reader *val;               /* /val reader when eval_every > 0, else NULL */
    mpl_cls_reader *cls, *cls_val;      /* task=classify: the train and val (eval_every)
                                           splits instead of rd and val */
    double bytes_per_token;             /* of the data (0: unknown), for bits per byte */
    volatile sig_atomic_t *stop;        /* set by SIGTERM/SIGUSR1 */
} mpl_train_opts;

/* Collective on world: train t from global sample `cursor` until steps
 * (or stop_after steps, or a signal), then checkpoint. A run of bad steps
 * that the policy does not allow ends with MPL_ERR_NUMERIC after saving the
 * last good state (unless a checkpoint of it exists). */
mpl_status mpl_train_loop(const mpl_cli *cli, mpl_comm *world, mpl_trainer *t,
                          mpl_data_reader *rd, int64_t cursor, const mpl_train_opts *o);

#endif
