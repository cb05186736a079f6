/* `multipole train`: the command line, the config and data checks, resume,
 * then the training loop of train_loop.c; a clean stop on SIGTERM. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "config.h"
#include "io/ckpt.h"
#include "io/data.h"
#include "io/rundir.h"
#include "trace_out.h"
#include "train_loop.h"
#include "trainer.h"

#define MAX_SETS 256

static const char *const train_help =
    "usage: multipole train -c CONFIG.ini [--set key=value]... [--resume auto|PATH]\n"
    "                       [--stop-after N] [--log-every N] [--quiet] [--trace FILE]\n"
    "\n"
    "Train a language model. Launch with mpirun for sequence and data parallelism:\n"
    "  mpirun -np 4 multipole train -c configs/tiny.ini --set sp=2   (dp = 4/2)\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   INI config (keys: `multipole config --keys`)\n"
    "  --set key=value     override one config key (repeatable)\n"
    "  --resume auto       continue from the newest checkpoint in run_dir,\n"
    "                      or start fresh (saying so) when there is none\n"
    "  --resume PATH       continue from this checkpoint file\n"
    "  --stop-after N      train at most N steps in this run, then checkpoint\n"
    "                      and exit 0 (the schedule still runs to `steps`)\n"
    "  --log-every N       progress every N steps (the config key log_every)\n"
    "  --quiet             no progress, header or checkpoint lines (warnings,\n"
    "                      evaluations and errors still appear)\n"
    "  --trace FILE        write a timeline of the run to FILE (Chrome trace JSON:\n"
    "                      chrome://tracing or ui.perfetto.dev): per rank, spans\n"
    "                      of each layer's forward and backward, the optimizer,\n"
    "                      checkpoints, evaluations and every blocking exchange\n"
    "                      on track 'main', nonblocking exchanges (halos, gradient\n"
    "                      buckets) from post to completion on 'comm in flight'\n"
    "  -h, --help          this text\n"
    "\n"
    "Progress (rank 0): on a terminal one line rewritten in place; otherwise a\n"
    "line every log_every steps: step, loss, lr, gradient norm, tokens/s, MFU,\n"
    "elapsed, ETA. MFU = tokens/s x model FLOPs per token / peak FLOP/s, with\n"
    "model FLOPs = 3 x forward (matmuls 2 x (4 + 2 mlp_mult) d_model^2 per block\n"
    "+ 2 d_model vocab_size, plus the attention's own count, as `bench attention`\n"
    "counts it) and the peak = peak_flops per rank, or (peak_flops = 0) OpenBLAS\n"
    "sgemm measured on every rank at start.\n"
    "\n"
    "Writes <run_dir>/metrics.csv (step,tokens,loss,lr,grad_norm,tok_per_s,\n"
    "elapsed_s,mfu,val_loss,bad) and <run_dir>/ckpt-<step>.h5 (every ckpt_every\n"
    "steps, every ckpt_every_minutes minutes, and at the end; <run_dir>/latest\n"
    "names the newest). eval_every > 0 scores the data's /val split. A step\n"
    "whose loss or gradient norm is not finite on any rank changes nothing\n"
    "(nan_policy=skip logs and counts it; max_bad_steps in a row, or any with\n"
    "nan_policy=abort, end the run with exit 1 after saving the last good state).\n"
    "SIGTERM or SIGUSR1 stops at the next step boundary after a checkpoint (exit 0).\n";

/* Set from the signal handler, read at step boundaries. */
static volatile sig_atomic_t stop_requested;
static void on_stop_signal(int sig) { stop_requested = sig; }

typedef struct train_args {
    const char *config;
    const char *sets[MAX_SETS];
    int n_sets;
    const char *resume;
    const char *trace;        /* --trace FILE, or NULL */
    long long stop_after;     /* 0: run to cfg.steps */
    long long log_every;      /* 0: the config's */
    int quiet;
} train_args;

static int parse_args(const mpl_cli *cli, int argc, char **argv, train_args *a, int *help)
{
    memset(a, 0, sizeof *a);
    *help = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            *help = 1;
            return 0;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "-c", &v)) ||
                   (r = mpl_cli_opt(argc, argv, &i, "--config", &v))) {
            if (r < 0) return mpl_cli_usage(cli, "%s needs a file", argv[i]);
            a->config = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--set", &v))) {
            if (r < 0) return mpl_cli_usage(cli, "--set needs key=value");
            if (a->n_sets == MAX_SETS) return mpl_cli_usage(cli, "more than %d --set", MAX_SETS);
            a->sets[a->n_sets++] = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--stop-after", &v))) {
            if (r < 0) return mpl_cli_usage(cli, "--stop-after needs a number of steps");
            if (mpl_cli_parse_i64("--stop-after", v, 1, 1ll << 62, &a->stop_after) != MPL_OK)
                return mpl_cli_arg_error(cli);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--log-every", &v))) {
            if (r < 0) return mpl_cli_usage(cli, "--log-every needs a number of steps");
            if (mpl_cli_parse_i64("--log-every", v, 1, 1ll << 62, &a->log_every) != MPL_OK)
                return mpl_cli_arg_error(cli);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--trace", &v))) {
            if (r < 0) return mpl_cli_usage(cli, "--trace needs a file");
            a->trace = v;
        } else if (!strcmp(argv[i], "--quiet")) {
            a->quiet = 1;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--resume", &v))) {
            if (r < 0) return mpl_cli_usage(cli, "--resume needs 'auto' or a checkpoint path");
            a->resume = v;
        } else {
            return mpl_cli_usage(cli, "unknown argument '%s'", argv[i]);
        }
    }
    if (!a->config) return mpl_cli_usage(cli, "no config file given (-c CONFIG.ini)");
    return 0;
}

/* Resume: the saved model shape must equal ours; other keys may change
 * (more steps, another lr) and are reported. */
static mpl_status check_resumed_config(const mpl_cli *cli, const mpl_config *now,
                                       const char *saved_text, const char *path, int verbose)
{
    mpl_config saved;
    mpl_config_defaults(&saved);
    MPL_CHECK(mpl_config_load_text(&saved, saved_text, path));
    int n;
    const mpl_cfg_key *keys = mpl_config_keys(&n);
    char diff[4096] = "";
    for (int i = 0; i < n; i++) {
        char a[MPL_CFG_STR_MAX + 32], b[MPL_CFG_STR_MAX + 32];
        mpl_config_get(&saved, &keys[i], a, sizeof a);
        mpl_config_get(now, &keys[i], b, sizeof b);
        if (strcmp(a, b) == 0) continue;
        /* Checkpoints from before the tokenizer key hold "auto": bytes models. */
        if (!strcmp(keys[i].name, "tokenizer") && !strcmp(a, "auto") && !strcmp(b, "bytes"))
            continue;
        if (keys[i].shape) {
            size_t l = strlen(diff);
            snprintf(diff + l, sizeof diff - l, "%s%s (saved %s, now %s)", l ? ", " : "",
                     keys[i].name, a, b);
        } else if (cli->rank == 0 && verbose) {
            printf("resume: %s changed from %s to %s\n", keys[i].name, a, b);
        }
    }
    if (diff[0])
        return mpl_err(MPL_ERR_CONFIG, "cannot resume from %s: the model differs in %s", path, diff);
    return MPL_OK;
}

/* Collective on world: load path into t and *cursor. *hard = 1 when the
 * file is sound but unusable here (model shape differs, already at steps):
 * `--resume auto` must not fall back past that. */
static mpl_status resume_from(const mpl_cli *cli, mpl_comm *world, const mpl_config *cfg,
                              mpl_trainer *t, const char *path, int64_t *cursor, int *hard)
{
    mpl_status st = MPL_OK;
    mpl_ckpt_state s;
    char *text = NULL;
    mpl_model *m = t->model;
    size_t n = strlen(path);
    *hard = 0;
    if (n > 4 && strcmp(path + n - 4, ".tmp") == 0)
        st = mpl_err(MPL_ERR_FORMAT, "%s is an unfinished temporary file of a save, not a "
                     "checkpoint", path);
    /* Checks the root checksum; then the shape check, whose message names the keys. */
    if (st == MPL_OK) st = mpl_ckpt_read_config(path, &text);
    MPL_CHECK(mpl_comm_agree(world, &st));
    st = check_resumed_config(cli, cfg, text, path, 1);
    free(text);
    *hard = st != MPL_OK;
    MPL_CHECK(mpl_comm_agree(world, &st));
    float *om = NULL, *ov = NULL;
    st = mpl_trainer_optim_gather(t, &om, &ov); /* buffers of the whole moments */
    if (st == MPL_OK)
        st = mpl_ckpt_load(world, path, mpl_model_layout(m), mpl_model_params(m), om, ov, &s, NULL);
    if (st == MPL_OK) st = mpl_model_params_push(m);
    if (st == MPL_OK) st = mpl_trainer_optim_scatter(t, om, ov);
    mpl_trainer_optim_release(t, &om, &ov);
    MPL_CHECK(st);
    if (s.step >= cfg->steps)
        st = mpl_err(MPL_ERR_CONFIG, "%s is at step %lld, not before steps=%lld: raise steps to train on",
                     path, (long long)s.step, (long long)cfg->steps);
    *hard = st != MPL_OK;
    MPL_CHECK(mpl_comm_agree(world, &st));
    t->step = s.step;
    *cursor = s.data_cursor;
    if (cli->rank == 0)
        printf("resumed from %s at step %lld (sample %lld)\n", path, (long long)s.step,
               (long long)s.data_cursor);
    return MPL_OK;
}

/* Collective on world: --resume auto. Candidates are every ckpt-<step>.h5
 * in run_dir, newest first (not only `latest`: a crash between the rename
 * and the pointer leaves a newer complete file); *.tmp files never are.
 * A corrupt, incomplete or foreign candidate is skipped with a warning. */
static mpl_status resume_auto(const mpl_cli *cli, mpl_comm *world, const mpl_config *cfg,
                              mpl_trainer *t, int64_t *cursor)
{
    mpl_status st = MPL_OK;
    int64_t *steps = NULL;
    int n = 0, hard = 0;
    char path[4096];
    if (cli->rank == 0) st = mpl_rundir_list(cfg->run_dir, &steps, &n);
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), fail);
    MPL_CHECK_GOTO(mpl_comm_bcast(world, &n, sizeof n, 0), fail);
    if (n == 0 && cli->rank == 0)
        printf("resume auto: no checkpoint in %s, starting fresh\n", cfg->run_dir);
    for (int i = 0; i < n; i++) {
        if (cli->rank == 0) mpl_rundir_ckpt_path(cfg->run_dir, steps[i], path, sizeof path);
        MPL_CHECK_GOTO(mpl_comm_bcast(world, path, sizeof path, 0), fail);
        st = resume_from(cli, world, cfg, t, path, cursor, &hard);
        if (st == MPL_OK || hard) goto fail;
        if (cli->rank == 0) {
            fprintf(stderr, "warning: skipping checkpoint %s: %s\n", path, mpl_err_cause());
            fflush(stderr);
        }
        mpl_err_clear();
    }
    if (n > 0)
        st = mpl_err(MPL_ERR_FORMAT, "--resume auto: none of the %d checkpoint(s) in %s is "
                     "usable (see the warnings)", n, cfg->run_dir);
fail:
    free(steps);
    return st;
}

/* The data file against the config: vocabulary and tokenizer (resolving
 * tokenizer=auto), the training split, and the /val split when eval_every
 * needs it; errors name the file and the fix. */
static mpl_status check_data(mpl_config *cfg, mpl_data_info *info, mpl_data_reader **rd,
                             mpl_data_reader **val)
{
    MPL_CHECK(mpl_data_info_read(cfg->data, info));
    if (info->vocab_size > cfg->vocab_size)
        return mpl_err(MPL_ERR_CONFIG, "%s holds %s tokens of vocab_size %lld but the model's "
                       "vocab_size is %lld: set vocab_size >= %lld", cfg->data, info->tokenizer,
                       (long long)info->vocab_size, (long long)cfg->vocab_size,
                       (long long)info->vocab_size);
    if (strcmp(cfg->tokenizer, "auto") == 0)
        snprintf(cfg->tokenizer, sizeof cfg->tokenizer, "%.15s", info->tokenizer);
    else if (strcmp(cfg->tokenizer, info->tokenizer) != 0)
        return mpl_err(MPL_ERR_CONFIG, "tokenizer=%s but %s holds '%s' tokens (set "
                       "tokenizer=auto, or prepare the data with the tokenizer you mean)",
                       cfg->tokenizer, cfg->data, info->tokenizer);
    MPL_CHECK(mpl_data_reader_open(cfg->data, "train", cfg->seq_len, (uint64_t)cfg->seed, rd));
    if (cfg->eval_every > 0 && info->n_val_tokens < cfg->seq_len + 1)
        return mpl_err(MPL_ERR_CONFIG, "eval_every=%lld needs a /val split of at least "
                       "seq_len+1 = %lld tokens, but %s has %lld (prepare it with a larger "
                       "--val-fraction, or set eval_every=0)", (long long)cfg->eval_every,
                       (long long)(cfg->seq_len + 1), cfg->data, (long long)info->n_val_tokens);
    if (cfg->eval_every > 0)
        MPL_CHECK(mpl_data_reader_open(cfg->data, "val", cfg->seq_len, (uint64_t)cfg->seed, val));
    return MPL_OK;
}

/* task=classify: the classification file, its vocabulary, classes and row
 * length against the config (n_classes 0 and tokenizer auto take the
 * file's). */
static mpl_status check_cls_data(mpl_config *cfg, mpl_cls_reader **rd, mpl_cls_reader **val)
{
    if (!mpl_cls_is_dataset(cfg->data))
        return mpl_err(MPL_ERR_CONFIG, "task=classify needs a classification file (/train/inputs, "
                       "/train/labels; e.g. `multipole prepare listops`), but %s is not one",
                       cfg->data);
    MPL_CHECK(mpl_cls_reader_open(cfg->data, "train", (uint64_t)cfg->seed, rd));
    const mpl_cls_info info = mpl_cls_reader_info(*rd);
    if (info.vocab_size > cfg->vocab_size)
        return mpl_err(MPL_ERR_CONFIG, "%s holds tokens of vocab_size %lld but the model's "
                       "vocab_size is %lld: set vocab_size >= %lld", cfg->data,
                       (long long)info.vocab_size, (long long)cfg->vocab_size,
                       (long long)info.vocab_size);
    if (cfg->n_classes == 0) cfg->n_classes = info.n_classes;
    if (cfg->n_classes < info.n_classes)
        return mpl_err(MPL_ERR_CONFIG, "%s has %lld classes but n_classes=%lld", cfg->data,
                       (long long)info.n_classes, (long long)cfg->n_classes);
    if (cfg->seq_len != info.max_len)
        return mpl_err(MPL_ERR_CONFIG, "the examples of %s hold %lld tokens (padded): set "
                       "seq_len=%lld", cfg->data, (long long)info.max_len,
                       (long long)info.max_len);
    if (strcmp(cfg->tokenizer, "auto") == 0)
        snprintf(cfg->tokenizer, sizeof cfg->tokenizer, "%.15s", info.tokenizer);
    else if (strcmp(cfg->tokenizer, info.tokenizer) != 0)
        return mpl_err(MPL_ERR_CONFIG, "tokenizer=%s but %s holds '%s' tokens", cfg->tokenizer,
                       cfg->data, info.tokenizer);
    if (cfg->eval_every > 0) MPL_CHECK(mpl_cls_reader_open(cfg->data, "val", 1, val));
    return MPL_OK;
}

/* Everything before the first step; errors here are the user's input.
 * The cheap checks (config, data, an explicit checkpoint's config) come
 * before the model is built. */
static mpl_status setup(const mpl_cli *cli, const train_args *a, mpl_comm *world,
                        mpl_config *cfg, mpl_trainer **tr, mpl_data_reader **rd,
                        mpl_data_reader **val, mpl_cls_reader **crd, mpl_cls_reader **cval,
                        mpl_data_info *info, int64_t *cursor)
{
    mpl_status st = MPL_OK;
    mpl_config_defaults(cfg);
    st = mpl_config_load_file(cfg, a->config);
    for (int i = 0; st == MPL_OK && i < a->n_sets; i++) st = mpl_config_set_arg(cfg, a->sets[i]);
    if (st == MPL_OK && a->log_every) cfg->log_every = a->log_every;
    if (st == MPL_OK) st = mpl_config_validate(cfg);
    if (st == MPL_OK && cfg->data[0] == '\0')
        st = mpl_err(MPL_ERR_CONFIG, "no data file: set `data` in %s or --set data=FILE.h5", a->config);
    if (st == MPL_OK && cfg->debug_nan_rank >= mpl_comm_size(world))
        st = mpl_err(MPL_ERR_CONFIG, "debug_nan_rank=%lld: the world has ranks 0..%d",
                     (long long)cfg->debug_nan_rank, mpl_comm_size(world) - 1);
    MPL_CHECK(mpl_comm_agree(world, &st));

    memset(info, 0, sizeof *info);
    if (!strcmp(cfg->task, "classify")) st = check_cls_data(cfg, crd, cval);
    else st = check_data(cfg, info, rd, val);
    MPL_CHECK(mpl_comm_agree(world, &st));
    if (cli->rank == 0 && !a->quiet && !strcmp(cfg->attn, "fmm") && cfg->band >= cfg->seq_len)
        printf("warning: band=%lld >= seq_len=%lld: the near field covers whole sequences, "
               "so the far field adds little\n", (long long)cfg->band, (long long)cfg->seq_len);

    /* An explicit checkpoint of another model is refused before building ours. */
    if (a->resume && strcmp(a->resume, "auto") != 0) {
        char *text = NULL;
        st = mpl_ckpt_read_config(a->resume, &text);
        if (st == MPL_OK) st = check_resumed_config(cli, cfg, text, a->resume, 0);
        free(text);
        MPL_CHECK(mpl_comm_agree(world, &st));
    }

    st = mpl_trainer_create(cfg, world, tr);
    MPL_CHECK(mpl_comm_agree(world, &st));

    /* Resume: rank 0 lists run_dir (a shared file system). */
    if (a->resume) {
        int hard = 0;
        if (strcmp(a->resume, "auto") == 0) MPL_CHECK(resume_auto(cli, world, cfg, *tr, cursor));
        else MPL_CHECK(resume_from(cli, world, cfg, *tr, a->resume, cursor, &hard));
    }
    if (cli->rank == 0) st = mpl_rundir_make(cfg->run_dir);
    MPL_CHECK(mpl_comm_agree(world, &st));
    return MPL_OK;
}

int mpl_cmd_train(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "train");
    train_args a;
    int help, rc = parse_args(&cli, argc, argv, &a, &help);
    if (help) {
        if (cli.rank == 0) fputs(train_help, stdout);
        return MPL_EXIT_OK;
    }
    if (rc) return rc;

    signal(SIGTERM, on_stop_signal);
    signal(SIGUSR1, on_stop_signal);
    mpl_comm *world = NULL;
    mpl_config cfg;
    mpl_trainer *t = NULL;
    mpl_data_reader *rd = NULL, *val = NULL;
    mpl_cls_reader *crd = NULL, *cval = NULL;
    mpl_data_info info;
    int64_t cursor = 0;
    mpl_status st = mpl_comm_create_world(&world);
    if (st != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_FAIL);
    st = setup(&cli, &a, world, &cfg, &t, &rd, &val, &crd, &cval, &info, &cursor);
    if (st != MPL_OK) {
        rc = mpl_cli_error(&cli, mpl_cli_exit_code(st));
    } else {
        int64_t n_all = info.n_tokens + info.n_val_tokens;
        mpl_train_opts o = {a.stop_after, a.quiet, a.resume ? t->step : 0, val, crd, cval,
                            info.text_bytes > 0 ? (double)info.text_bytes / (double)n_all : 0,
                            &stop_requested};
        if (a.trace) st = mpl_trace_out_start(world, a.trace);
        int tracing = a.trace && st == MPL_OK;
        if (st == MPL_OK) st = mpl_train_loop(&cli, world, t, rd, cursor, &o);
        /* What was recorded is written even when the run failed: every
         * rank agreed on the failure, so all of them get here. */
        if (tracing) {
            mpl_status tst = mpl_trace_out_write(world, a.trace);
            if (tst == MPL_OK && cli.rank == 0 && !a.quiet) printf("trace: %s\n", a.trace);
            if (st == MPL_OK) st = tst;
        }
        rc = st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, MPL_EXIT_FAIL);
    }
    mpl_data_reader_close(&val);
    mpl_data_reader_close(&rd);
    mpl_cls_reader_close(&cval);
    mpl_cls_reader_close(&crd);
    mpl_trainer_destroy(&t);
    mpl_comm_destroy(&world);
    return rc;
}
