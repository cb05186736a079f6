/* `multipole eval`: the validation loss of a checkpoint over a whole split
 * of a token file, sharded over the ranks like training (eval.h). The model
 * is rebuilt from the config saved in the checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "config.h"
#include "eval.h"
#include "io/ckpt.h"
#include "io/data.h"
#include "progress.h"

static const char *const eval_help =
    "usage: multipole eval --ckpt PATH [--data DATA.h5] [--len L] [--batch B] [--sp S]\n"
    "                      [--split val|train] [--max-windows N] [--quiet]\n"
    "\n"
    "Score a checkpoint on a split of a token file: mean cross-entropy (nats per\n"
    "token), bits per token (= nats / ln 2), bits per byte (bits per token x\n"
    "tokens / text bytes of the file; n/a for token ids prepared without\n"
    "--text-bytes) and perplexity (= e^loss). Every token of the split but the\n"
    "first is scored once, in windows of L tokens (the last window ends at the\n"
    "last token and scores only the tokens no window has scored).\n"
    "  --ckpt PATH     a ckpt-<step>.h5, a run directory or its `latest` file\n"
    "  --data FILE     token file (default: the checkpoint config's `data`)\n"
    "  --len L         window length (default: the training seq_len; the\n"
    "                  Combiner segment stays the training's)\n"
    "  --batch B       windows per forward on each data-parallel group\n"
    "                  (default: the training batch, 1 when L is longer)\n"
    "  --sp S          ranks per window (default 1); under mpirun -np N the\n"
    "                  N / S data-parallel groups take different windows\n"
    "  --split NAME    val (default) or train; a classifier also test\n"
    "  --max-windows N score only the first N windows\n"
    "  --quiet         only the result line\n"
    "\n"
    "A classifier (task=classify) is scored on the examples of a classification\n"
    "file (`prepare listops`): mean cross-entropy per example and accuracy\n"
    "(argmax of the logits); --max-windows counts examples, --len is refused.\n";

typedef struct eval_args {
    const char *ckpt, *data, *split;
    long long len, batch, sp, max_windows;
    int quiet;
} eval_args;

static void eval_progress(void *ctx, int64_t done, int64_t total)
{
    char bar[48];
    mpl_fmt_bar((double)done / (double)total, 24, bar, sizeof bar);
    mpl_progress_report(ctx, done == total, "eval %s %lld / %lld windows", bar, (long long)done,
                        (long long)total);
}

/* The checkpoint's model at the evaluation layout, the data checked
 * against it; errors before anything big is allocated are the user's. */
static mpl_status eval_setup(const eval_args *a, mpl_comm *world, char *ckpt, size_t n,
                             mpl_config *cfg, mpl_data_info *info, mpl_data_reader **rd,
                             mpl_cls_reader **crd)
{
    char *text = NULL;
    MPL_CHECK(mpl_cli_ckpt_path(a->ckpt, ckpt, n));
    mpl_config_defaults(cfg);
    mpl_status st = mpl_ckpt_read_config(ckpt, &text);
    if (st == MPL_OK) st = mpl_config_load_text(cfg, text, ckpt);
    free(text);
    MPL_CHECK(st);
    /* The segment is part of the trained model: resolve it at the training length. */
    if (cfg->segment == 0) cfg->segment = (int64_t)llround(sqrt((double)cfg->seq_len));
    if (a->len) {
        if (a->batch == 0 && a->len > cfg->seq_len) cfg->batch = 1;
        cfg->seq_len = a->len;
    }
    if (a->batch) cfg->batch = a->batch;
    if (a->data) snprintf(cfg->data, sizeof cfg->data, "%s", a->data);
    cfg->sp = a->sp;
    cfg->dp = 0;
    cfg->debug_nan_step = 0;
    if (cfg->sp > cfg->seq_len)
        return mpl_err(MPL_ERR_ARG, "--len %lld is shorter than --sp %lld: every rank needs a "
                       "token of each window", (long long)cfg->seq_len, (long long)cfg->sp);
    if (mpl_comm_size(world) % cfg->sp)
        return mpl_err(MPL_ERR_ARG, "--sp %lld does not divide the world size %d (mpirun -np)",
                       (long long)cfg->sp, mpl_comm_size(world));
    if (cfg->data[0] == '\0')
        return mpl_err(MPL_ERR_ARG, "%s names no data file: give --data DATA.h5", ckpt);
    if (!strcmp(cfg->task, "classify")) {
        if (a->len)
            return mpl_err(MPL_ERR_ARG, "--len: the classifier of %s reads whole examples", ckpt);
        MPL_CHECK(mpl_cls_reader_open(cfg->data, a->split, 1, crd));
        const mpl_cls_info ci = mpl_cls_reader_info(*crd);
        if (ci.vocab_size > cfg->vocab_size || ci.n_classes > cfg->n_classes ||
            ci.max_len != cfg->seq_len)
            return mpl_err(MPL_ERR_ARG, "%s (vocab %lld, %lld classes, rows of %lld) does not "
                           "fit the classifier of %s (vocab %lld, %lld classes, seq_len %lld)",
                           cfg->data, (long long)ci.vocab_size, (long long)ci.n_classes,
                           (long long)ci.max_len, ckpt, (long long)cfg->vocab_size,
                           (long long)cfg->n_classes, (long long)cfg->seq_len);
        return MPL_OK;
    }
    if (!strcmp(a->split, "test"))
        return mpl_err(MPL_ERR_ARG, "--split test: a token file has train and val");
    MPL_CHECK(mpl_data_info_read(cfg->data, info));
    if (info->vocab_size > cfg->vocab_size)
        return mpl_err(MPL_ERR_ARG, "%s holds tokens of vocab_size %lld but the model of %s has "
                       "vocab_size %lld: evaluate it on data of its own tokenizer", cfg->data,
                       (long long)info->vocab_size, ckpt, (long long)cfg->vocab_size);
    if (strcmp(cfg->tokenizer, "auto") != 0 && strcmp(cfg->tokenizer, info->tokenizer) != 0)
        return mpl_err(MPL_ERR_ARG, "the model of %s reads '%s' tokens but %s holds '%s' tokens",
                       ckpt, cfg->tokenizer, cfg->data, info->tokenizer);
    MPL_CHECK(mpl_data_reader_open(cfg->data, a->split, cfg->seq_len, 1, rd));
    return MPL_OK;
}

static mpl_status run_eval(const mpl_cli *cli, const eval_args *a, mpl_comm *world)
{
    mpl_status st = MPL_OK;
    char ckpt[4096];
    mpl_config cfg;
    mpl_data_info info;
    mpl_data_reader *rd = NULL;
    mpl_cls_reader *crd = NULL;
    mpl_trainer *t = NULL;
    memset(&info, 0, sizeof info);
    st = eval_setup(a, world, ckpt, sizeof ckpt, &cfg, &info, &rd, &crd);
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);
    st = mpl_trainer_create_eval(&cfg, world, &t);
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);
    mpl_ckpt_state s;
    mpl_model *m = t->model;
    MPL_CHECK_GOTO(mpl_ckpt_load(world, ckpt, mpl_model_layout(m), mpl_model_params(m), NULL,
                                 NULL, &s, NULL), done);
    MPL_CHECK_GOTO(mpl_model_params_push(m), done); /* a device model: to the GPU */
    mpl_progress prog;
    mpl_progress_init(&prog, stderr, a->quiet || cli->rank != 0);
    prog.plain_interval = 10;
    if (crd) {
        mpl_eval_cls_result r;
        MPL_CHECK_GOTO(mpl_eval_cls(t, crd, a->max_windows, &r, eval_progress, &prog), done);
        mpl_progress_end(&prog);
        if (cli->rank == 0) {
            if (!a->quiet)
                printf("eval %s (step %lld) on %s /%s: %lld examples, sp=%d dp=%d, %.2f s\n",
                       ckpt, (long long)s.step, cfg.data, a->split, (long long)r.n_examples,
                       t->sp, t->dp, r.seconds);
            printf("loss %.6f nats/example | accuracy %.4f\n", r.loss, r.accuracy);
            fflush(stdout);
        }
        goto done;
    }
    int64_t n_all = info.n_tokens + info.n_val_tokens;
    double bpt = info.text_bytes > 0 ? (double)info.text_bytes / (double)n_all : 0;
    mpl_eval_result r;
    MPL_CHECK_GOTO(mpl_eval_split(t, rd, a->max_windows, bpt, &r, eval_progress, &prog), done);
    mpl_progress_end(&prog);
    if (cli->rank == 0) {
        char bpb[32] = "n/a";
        if (isfinite(r.bits_per_byte)) snprintf(bpb, sizeof bpb, "%.6f", r.bits_per_byte);
        if (!a->quiet)
            printf("eval %s (step %lld) on %s /%s: %lld tokens in %lld windows of %lld, "
                   "sp=%d dp=%d, %.2f s\n", ckpt, (long long)s.step, cfg.data, a->split,
                   (long long)r.n_tokens, (long long)r.n_windows, (long long)cfg.seq_len,
                   t->sp, t->dp, r.seconds);
        printf("loss %.6f nats/token | %.6f bits/token | %s bits/byte | perplexity %.4f\n",
               r.loss, r.bits_per_token, bpb, r.perplexity);
        fflush(stdout);
    }
done:
    mpl_trainer_destroy(&t);
    mpl_data_reader_close(&rd);
    mpl_cls_reader_close(&crd);
    return st;
}

int mpl_cmd_eval(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "eval");
    eval_args a = {NULL, NULL, "val", 0, 0, 1, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(eval_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--ckpt", &v))) {
            a.ckpt = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--data", &v))) {
            a.data = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--split", &v))) {
            a.split = v;
            if (r > 0 && strcmp(v, "val") && strcmp(v, "train") && strcmp(v, "test"))
                return mpl_cli_usage(&cli, "--split '%s' is not val, train or test", v);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--len", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--len", v, 1, 1ll << 40, &a.len);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--batch", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--batch", v, 1, 1 << 20, &a.batch);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--sp", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--sp", v, 1, 1 << 20, &a.sp);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--max-windows", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--max-windows", v, 1, 1ll << 62, &a.max_windows);
        } else if (!strcmp(argv[i], "--quiet")) {
            r = 1;
            a.quiet = 1;
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(&cli);
    }
    if (!a.ckpt) return mpl_cli_usage(&cli, "no checkpoint given (--ckpt PATH)");
    mpl_comm *world = NULL;
    if (mpl_comm_create_world(&world) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_FAIL);
    mpl_status st = run_eval(&cli, &a, world);
    int rc = st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
    mpl_comm_destroy(&world);
    return rc;
}
