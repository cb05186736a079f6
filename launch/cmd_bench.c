/* `multipole bench step`: time full training steps (forward, backward,
 * gradient all-reduce, clipping, AdamW) on generated tokens and print CSV. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "cli.h"
#include "commands.h"
#include "config.h"
#include "core/philox.h"
#include "trainer.h"

static const char *const bench_help =
    "usage: multipole bench step -c CONFIG.ini [--set key=value]... [--steps N] [--warmup W]\n"
    "\n"
    "Time N training steps (after W untimed ones) of the config's model on\n"
    "generated tokens; prints '#' setting lines, a CSV header and one row:\n"
    "median/min/max milliseconds per step (max over ranks) and tokens/s.\n";

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static mpl_status bench_step(const mpl_cli *cli, const char *cfg_path, const mpl_config *cfg,
                             long long steps, long long warmup)
{
    mpl_status st = MPL_OK;
    mpl_comm *world = NULL;
    mpl_trainer *t = NULL;
    int32_t *tok = NULL, *tgt = NULL;
    int64_t *ns = NULL;
    MPL_CHECK(mpl_comm_create_world(&world));
    MPL_CHECK_GOTO(mpl_trainer_create(cfg, world, &t), done);
    const int64_t n = cfg->batch * cfg->seq_len;
    tok = malloc((size_t)n * sizeof *tok);
    tgt = malloc((size_t)n * sizeof *tgt);
    ns = calloc((size_t)steps, sizeof *ns);
    if (!tok || !tgt || !ns) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        tok[i] = (int32_t)(mpl_philox_uniform(1, 7, (uint64_t)i) * (double)cfg->vocab_size);
        tgt[i] = (int32_t)(mpl_philox_uniform(1, 8, (uint64_t)i) * (double)cfg->vocab_size);
    }
    for (long long s = 0; s < warmup + steps; s++) {
        MPL_CHECK_GOTO(mpl_comm_barrier(world), done);
        double t0 = mpl_now();
        MPL_CHECK_GOTO(mpl_trainer_step(t, tok, tgt, NULL), done);
        if (s >= warmup) ns[s - warmup] = (int64_t)((mpl_now() - t0) * 1e9);
    }
    /* The step of the slowest rank is the step time. */
    MPL_CHECK_GOTO(mpl_comm_allreduce_max_i64(world, ns, steps), done);
    qsort(ns, (size_t)steps, sizeof *ns, cmp_i64);
    double med = 1e-6 * (double)ns[steps / 2], lo = 1e-6 * (double)ns[0];
    double hi = 1e-6 * (double)ns[steps - 1];
    double tps = (double)(cfg->batch * cfg->seq_len * t->dp) / (med * 1e-3);
    if (cli->rank == 0) {
        printf("# %s\n# host=%s ranks=%d threads=%d config=%s\n", mpl_build_info(), cli->host,
               cli->world, omp_get_max_threads(), cfg_path);
        printf("# attn=%s d_model=%lld n_layer=%lld n_head=%lld seq_len=%lld batch=%lld "
               "params=%lld\n", cfg->attn, (long long)cfg->d_model, (long long)cfg->n_layer,
               (long long)cfg->n_head, (long long)cfg->seq_len, (long long)cfg->batch,
               (long long)mpl_model_layout(t->model)->n_elems);
        printf("config,backend,d_model,n_layer,n_head,seq_len,batch,threads,steps,median_ms,"
               "min_ms,max_ms,tok_per_s\n");
        printf("%s,multipole,%lld,%lld,%lld,%lld,%lld,%d,%lld,%.3f,%.3f,%.3f,%.1f\n", cfg_path,
               (long long)cfg->d_model, (long long)cfg->n_layer, (long long)cfg->n_head,
               (long long)cfg->seq_len, (long long)(cfg->batch * t->dp), omp_get_max_threads(),
               steps, med, lo, hi, tps);
    }
done:
    free(tok);
    free(tgt);
    free(ns);
    mpl_trainer_destroy(&t);
    mpl_comm_destroy(&world);
    return st;
}

int mpl_cmd_bench(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "bench");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        if (cli.rank == 0) fputs(bench_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? MPL_EXIT_USAGE : MPL_EXIT_OK;
    }
    if (strcmp(argv[1], "step") != 0)
        return mpl_cli_usage(&cli, "unknown benchmark '%s' (available: step)", argv[1]);
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    const char *cfg_path = "defaults";
    long long steps = 10, warmup = 2;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(bench_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "-c", &v))) {
            if (r > 0) st = mpl_config_load_file(&cfg, cfg_path = v);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--set", &v))) {
            if (r > 0) st = mpl_config_set_arg(&cfg, v);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--steps", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--steps", v, 1, 1000000, &steps);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--warmup", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--warmup", v, 0, 1000000, &warmup);
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    }
    /* Benchmarks run many steps: the schedule must not end before them. */
    if (cfg.steps < steps + warmup) cfg.steps = steps + warmup + 1;
    if (mpl_config_validate(&cfg) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    mpl_status st = bench_step(&cli, cfg_path, &cfg, steps, warmup);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
}
