/* `multipole train`: config, data, resume, the training loop with
 * progress, metrics.csv and checkpoints, and a clean stop on SIGTERM. */
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
#include "trainer.h"

#define MAX_SETS 256

static const char *const train_help =
    "usage: multipole train -c CONFIG.ini [--set key=value]... [--resume auto|PATH]\n"
    "\n"
    "Train a language model. Launch with mpirun for data parallelism:\n"
    "  mpirun -np 2 multipole train -c configs/tiny.ini\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   INI config (keys: `multipole config --keys`)\n"
    "  --set key=value     override one config key (repeatable)\n"
    "  --resume auto       continue from the newest checkpoint in run_dir,\n"
    "                      or start fresh (saying so) when there is none\n"
    "  --resume PATH       continue from this checkpoint file\n"
    "  --stop-after N      train at most N steps in this run, then checkpoint\n"
    "                      and exit 0 (the schedule still runs to `steps`)\n"
    "  -h, --help          this text\n"
    "\n"
    "Writes <run_dir>/metrics.csv and <run_dir>/ckpt-<step>.h5 (every ckpt_every\n"
    "steps, every ckpt_every_minutes minutes, and at the end; <run_dir>/latest\n"
    "names the newest). SIGTERM or SIGUSR1 stops at the next step boundary after\n"
    "a checkpoint (exit 0).\n";

/* Set from the signal handler, read at step boundaries. */
static volatile sig_atomic_t stop_requested;
static void on_stop_signal(int sig) { stop_requested = sig; }

typedef struct train_args {
    const char *config;
    const char *sets[MAX_SETS];
    int n_sets;
    const char *resume;
    long long stop_after;     /* 0: run to cfg.steps */
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
                return mpl_cli_error(cli, MPL_EXIT_USAGE);
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
                                       const char *saved_text, const char *path)
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
        if (keys[i].shape) {
            size_t l = strlen(diff);
            snprintf(diff + l, sizeof diff - l, "%s%s (saved %s, now %s)", l ? ", " : "",
                     keys[i].name, a, b);
        } else if (cli->rank == 0) {
            printf("resume: %s changed from %s to %s\n", keys[i].name, a, b);
        }
    }
    if (diff[0])
        return mpl_err(MPL_ERR_CONFIG, "cannot resume from %s: the model differs in %s", path, diff);
    return MPL_OK;
}

static void fmt_hms(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static mpl_status save_ckpt(mpl_trainer *t, mpl_comm *world, int64_t cursor, const mpl_cli *cli)
{
    char path[4096];
    mpl_rundir_ckpt_path(t->cfg.run_dir, t->step, path, sizeof path);
    char *text = mpl_config_to_text(&t->cfg);
    if (!text) return mpl_err(MPL_ERR_NOMEM, "out of memory writing the config text");
    mpl_ckpt_state s = {t->step, cursor, t->cfg.seed, 0};
    mpl_ckpt_meta meta = {text, mpl_comm_size(world), t->sp, t->dp, mpl_build_info()};
    mpl_model *m = t->model;
    float *om = NULL, *ov = NULL;
    /* a device model's parameters and moments are staged through host
     * memory: the file holds fp32 global tensors whatever the device */
    mpl_status st = mpl_model_params_pull(m);
    if (st == MPL_OK) st = mpl_trainer_optim_gather(t, &om, &ov);
    if (st == MPL_OK)
        st = mpl_ckpt_save(world, path, mpl_model_layout(m), mpl_model_params(m), om, ov, &s, &meta);
    mpl_trainer_optim_release(t, &om, &ov);
    free(text);
    MPL_CHECK(st);
    if (cli->rank == 0) st = mpl_ckpt_fault_point("before_pointer", t->step, path);
    if (cli->rank == 0 && st == MPL_OK)
        st = mpl_rundir_commit(t->cfg.run_dir, t->step, t->cfg.keep_ckpts);
    MPL_CHECK(mpl_comm_agree(world, &st));
    if (cli->rank == 0) printf("checkpoint %s\n", path);
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
    st = check_resumed_config(cli, cfg, text, path);
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

/* Everything before the first step; errors here are the user's input. */
static mpl_status setup(const mpl_cli *cli, const train_args *a, mpl_comm *world,
                        mpl_config *cfg, mpl_trainer **tr, mpl_data_reader **rd,
                        int64_t *cursor)
{
    mpl_status st = MPL_OK;
    mpl_config_defaults(cfg);
    st = mpl_config_load_file(cfg, a->config);
    for (int i = 0; st == MPL_OK && i < a->n_sets; i++) st = mpl_config_set_arg(cfg, a->sets[i]);
    if (st == MPL_OK) st = mpl_config_validate(cfg);
    if (st == MPL_OK && cfg->data[0] == '\0')
        st = mpl_err(MPL_ERR_CONFIG, "no data file: set `data` in %s or --set data=FILE.h5", a->config);
    MPL_CHECK(mpl_comm_agree(world, &st));

    mpl_data_info info;
    st = mpl_data_info_read(cfg->data, &info);
    if (st == MPL_OK && info.vocab_size > cfg->vocab_size)
        st = mpl_err(MPL_ERR_CONFIG, "%s has vocab_size %lld but the model's vocab_size is %lld",
                     cfg->data, (long long)info.vocab_size, (long long)cfg->vocab_size);
    if (st == MPL_OK) st = mpl_data_reader_open(cfg->data, "train", cfg->seq_len, (uint64_t)cfg->seed, rd);
    MPL_CHECK(mpl_comm_agree(world, &st));

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

static mpl_status train_loop(const mpl_cli *cli, mpl_comm *world, mpl_trainer *t,
                             mpl_data_reader *rd, int64_t cursor, long long stop_after)
{
    mpl_status st = MPL_OK;
    const mpl_config *c = &t->cfg;
    const int64_t L = c->seq_len, B = c->batch;
    /* This rank reads only its chunk [a, a+n) of each sequence, plus the
     * next token as the last target: n + 1 tokens per window. */
    const int64_t a = t->chunk_a, n = t->chunk_b - t->chunk_a;
    int32_t *buf = malloc((size_t)(n + 1) * sizeof *buf);
    int32_t *tok = malloc((size_t)(B * n) * sizeof *tok);
    int32_t *tgt = malloc((size_t)(B * n) * sizeof *tgt);
    FILE *csv = NULL;
    if (!buf || !tok || !tgt) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for a batch");
    if (cli->rank == 0) {
        char p[4096];
        snprintf(p, sizeof p, "%s/metrics.csv", c->run_dir);
        FILE *probe = fopen(p, "r");
        int fresh = probe == NULL;
        if (probe) fclose(probe);
        csv = fopen(p, "a");
        if (!csv) st = mpl_err(MPL_ERR_IO, "cannot append to %s", p);
        else if (fresh) fprintf(csv, "step,tokens,loss,lr,grad_norm,tok_per_s,elapsed_s\n");
        printf("%s\ntraining %s: %lld parameters, %d rank(s) (sp=%d dp=%d), seq_len=%lld, "
               "global batch=%lld, steps %lld..%lld\n", mpl_build_info(), c->data,
               (long long)mpl_model_layout(t->model)->n_elems, mpl_comm_size(world), t->sp,
               t->dp, (long long)L, (long long)(B * t->dp), (long long)t->step + 1,
               (long long)c->steps);
        mpl_plan_print(stdout, c, &t->plan);
        fflush(stdout);
    }
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);

    const double t0 = mpl_now();
    double t_last = t0, t_ckpt = t0;
    int64_t tok_since = 0, start_step = t->step;
    while (t->step < c->steps) {
        for (int64_t b = 0; b < B; b++) {
            int64_t g = cursor + (int64_t)t->dp_rank * B + b;
            st = mpl_data_reader_read(rd, g, a, n + 1, buf);
            if (st != MPL_OK) break;
            memcpy(tok + b * n, buf, (size_t)n * sizeof *buf);
            memcpy(tgt + b * n, buf + 1, (size_t)n * sizeof *buf);
        }
        MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);
        mpl_step_stats s;
        MPL_CHECK_GOTO(mpl_trainer_step(t, tok, tgt, &s), done);
        cursor += B * t->dp;
        tok_since += s.n_tokens;

        double now = mpl_now();
        int last = t->step == c->steps || t->step - start_step == stop_after;
        if (cli->rank == 0) {
            double tps = (double)tok_since / fmax(now - t_last, 1e-9);
            fprintf(csv, "%lld,%lld,%.6f,%.6e,%.6f,%.1f,%.3f\n", (long long)t->step,
                    (long long)(cursor * L), s.loss, s.lr, s.grad_norm, tps, now - t0);
            if (t->step % c->log_every == 0 || last || t->step == start_step + 1) {
                char el[32], eta[32];
                double per = (now - t0) / (double)(t->step - start_step);
                fmt_hms(now - t0, el, sizeof el);
                int64_t end = stop_after ? start_step + stop_after : c->steps;
                if (end > c->steps) end = c->steps;
                fmt_hms(per * (double)(end - t->step), eta, sizeof eta);
                printf("step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | "
                       "elapsed %s | eta %s\n", (long long)t->step, (long long)c->steps, s.loss,
                       s.lr, s.grad_norm, tps, el, eta);
                fflush(stdout);
                fflush(csv);
                t_last = now;
                tok_since = 0;
            }
        }
        /* Signals and the wall clock are agreed on (rank 0's clock decides),
         * so every rank stops or saves at the same step: one small
         * all-reduce per step. */
        int64_t flags[2] = {stop_requested,
                            cli->rank == 0 && c->ckpt_every_minutes > 0 &&
                                mpl_now() - t_ckpt >= 60.0 * c->ckpt_every_minutes};
        MPL_CHECK_GOTO(mpl_comm_allreduce_max_i64(world, flags, 2), done);
        const int64_t stop = flags[0], timed = flags[1];
        int ckpt_due = last || stop || timed || (c->ckpt_every > 0 && t->step % c->ckpt_every == 0);
        if (ckpt_due) {
            MPL_CHECK_GOTO(save_ckpt(t, world, cursor, cli), done);
            t_ckpt = mpl_now();
        }
        if (last) {
            if (t->step < c->steps && cli->rank == 0)
                printf("stopped after %lld step(s) (--stop-after); continue with --resume auto\n",
                       stop_after);
            break;
        }
        if (stop) {
            if (cli->rank == 0)
                printf("signal %d: stopped after step %lld with a checkpoint; resume with "
                       "--resume auto\n", (int)stop, (long long)t->step);
            break;
        }
    }
    if (cli->rank == 0) {
        /* what the plan promised against what the process used */
        const int64_t peak = mpl_plan_rss_peak();
        printf("memory: peak resident %.1f MiB = %.1f MiB at start + %.1f MiB; plan %.1f MiB\n",
               (double)peak / (1 << 20), (double)t->rss_start / (1 << 20),
               (double)(peak - t->rss_start) / (1 << 20), (double)t->plan.total / (1 << 20));
    }
done:
    if (csv) fclose(csv);
    free(buf);
    free(tok);
    free(tgt);
    return st;
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
    mpl_data_reader *rd = NULL;
    int64_t cursor = 0;
    mpl_status st = mpl_comm_create_world(&world);
    if (st != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_FAIL);
    st = setup(&cli, &a, world, &cfg, &t, &rd, &cursor);
    if (st != MPL_OK) {
        rc = mpl_cli_error(&cli, mpl_cli_exit_code(st));
    } else {
        st = train_loop(&cli, world, t, rd, cursor, a.stop_after);
        rc = st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, MPL_EXIT_FAIL);
    }
    mpl_data_reader_close(&rd);
    mpl_trainer_destroy(&t);
    mpl_comm_destroy(&world);
    return rc;
}
