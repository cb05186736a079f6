/* `multipole bench step`: time full training steps (forward, backward,
 * gradient all-reduce, clipping, AdamW) on generated tokens and print CSV. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <omp.h>

#include "attention/registry.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "flops.h"
#include "core/philox.h"
#include "trainer.h"

static const char *const bench_help =
    "usage: multipole bench step -c CONFIG.ini [--set key=value]... [--steps N] [--warmup W]\n"
    "                 [--peak-tflops P]\n"
    "       multipole bench attention --attn KIND --len L [--heads 4] [--head-dim 32]\n"
    "                 [--band 64] [--maps elu,elu_flip] [--causal 1] [--reps 3]\n"
    "                 [--warmup 1] [--set key=value]...\n"
    "\n"
    "step: time N training steps (after W untimed ones) of the config's model on\n"
    "generated tokens; prints '#' setting lines, a CSV header and one row:\n"
    "median/min/max milliseconds per step (max over ranks) and tokens/s. With\n"
    "--set device=cuda the row also has the model FLOPs of a step, TFLOP/s and\n"
    "MFU against the GPU's bf16 peak (by its name; --peak-tflops P overrides);\n"
    "bench/README.md says how the FLOPs are counted.\n"
    "\n"
    "attention: time forward + backward of one attention call (one sequence of L\n"
    "tokens, random inputs; the output doubles as the upstream gradient, so the\n"
    "call's tensors are qkv, out = dout and dqkv: io_mb = 7 L H d floats).\n"
    "Columns: median/min/max ms, ns_per_tok = median/L, peak_mb = the process's\n"
    "peak RSS, io_mb, extra_mb = peak_mb - io_mb - the RSS before the tensors\n"
    "(the layer's own memory: what it saves and its scratch), gflops = counted\n"
    "flops / median time with\n"
    "forward flops per head: dense 2dL^2 (causal; 4dL^2 bidirectional), fmm\n"
    "L(4wd + 4rd^2) (8wd bidirectional), combiner_fixed 4dL(s/2 + L/s),\n"
    "combiner_logsparse 4dL(log2 L + 1); forward + backward counted as 3x forward;\n"
    "sgemm_gflops = OpenBLAS sgemm 1024^3 on the same threads (the roofline).\n"
    "\n"
    "ckpt [--mb 100] [--reps 3] [--cold 1] [--dir .]: save and load a checkpoint\n"
    "of a synthetic model of MB megabytes of parameters (file = 3x: params, m, v)\n"
    "with the writer in use (MPL_CKPT_SERIAL=1 serial, 0 parallel, unset: parallel\n"
    "only across nodes), each paired with a raw write (4 MiB write()s + fsync) and\n"
    "read of as many bytes in the same directory, warm and (--cold 1) after\n"
    "dropping the file from the page cache; one row per run and operation:\n"
    "seconds (slowest rank), mb_per_s = file_mb / seconds, the raw pair's, and\n"
    "ratio = mb_per_s / ref_mb_per_s.\n"
    "\n"
    "comm [--attn fmm|combiner_fixed|combiner_logsparse] [--min-log2 12]\n"
    "[--max-log2 20] [--plus 0] [--heads 4] [--head-dim 32] [--band 64]\n"
    "[--maps elu,elu_flip] [--causal 1]: under mpirun -np P, one sequence of\n"
    "L = 2^k + plus tokens split over the P ranks; bytes each rank sends in one\n"
    "attention forward and backward (maximum over ranks) beside the closed form\n"
    "of ATTENTION.md:\n"
    "  fmm: fwd = bwd = 4 (2(w-1)Hd [4(w-1)Hd bidirectional] + H r (d^2 + d))\n"
    "  combiner_fixed causal: fwd = 4 ((s-1)(3Hd+1) + n_seg (2Hd+1)),\n"
    "                         bwd = 4 ((s-1) 3Hd + 2 n_seg Hd), n_seg = ceil(L/s)\n"
    "  combiner_logsparse: fwd = 4 n_ctx (3Hd + 2H + 1), bwd = 4 n_ctx (5Hd + H),\n"
    "    n_ctx = the distinct dyadic blocks (attention/combiner.h) some rank's\n"
    "    queries use that reach outside its chunk (column ctx_blocks;\n"
    "    <= (P-1) log2 L per direction)\n"
    "(halo rows counted at the sender: an interior rank whose chunk holds the\n"
    "whole halo; collectives count the rank's own contribution).\n"
    "\n"
    "comm --model [-c CONFIG.ini] [--set key=value]... [--tokens-per-rank 65536]\n"
    "[--max-p 4096] [--compute-ms MS] [--steps 3] [--warmup 1] [--overlap 0]\n"
    "[--gpus-per-node 8] [--nvlink-us 2] [--nvlink-gbs 450] [--ib-us 5] [--ib-gbs 50]\n"
    "[--measure-tokens 4096]: an alpha-beta MODEL (not a measurement) of one\n"
    "training step at P = 1, 2, 4, ... max-p GPUs with the tokens per rank fixed\n"
    "(one sequence of P x C tokens), for fmm, combiner_fixed, Ring Attention and\n"
    "Ulysses: per row the bytes a rank sends for attention, the time of the\n"
    "attention exchanges, of the gradient all-reduce of the parameter slab and of\n"
    "the step's small all-reduces, the step (compute + exposed communication) and\n"
    "the weak-scaling efficiency (compute / step). The compute is the median\n"
    "of bench step's loop for the config at C tokens on one rank, or MS; under\n"
    "mpirun -np >= 2 the bytes are also measured and must equal the closed forms\n"
    "the model uses. --overlap F: the gradient all-reduce hides behind up to F x\n"
    "the compute. Formulas: bench/README.md.\n";

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Dense bf16 tensor-core peaks (no sparsity) by device name, TFLOP/s. */
static double bf16_peak_tflops(const char *name, const char **which)
{
    static const struct { const char *key; double tflops; } peaks[] = {
        {"H200", 989.4}, {"H100 PCIe", 756.0}, {"H100", 989.4}, {"GH200", 989.4},
        {"A100", 312.0}, {"L40S", 362.1}};
    for (size_t i = 0; i < sizeof peaks / sizeof peaks[0]; i++)
        if (strstr(name, peaks[i].key)) {
            *which = peaks[i].key;
            return peaks[i].tflops;
        }
    *which = "unknown device (use --peak-tflops)";
    return 0;
}

/* Model FLOPs of one training step over the world, as train's MFU counts
 * them (launch/flops.h). */
static double step_model_flops(const mpl_config *c, int dp)
{
    return mpl_flops_train_per_token(c) * (double)(c->batch * c->seq_len * dp);
}

/* The GPU form of bench step's output (scripts/bench.sh gpu-step). */
static void print_gpu_step(const mpl_cli *cli, const char *cfg_path, const mpl_config *cfg,
                           const mpl_trainer *t, long long steps, double med, double lo,
                           double hi, double tps, double peak_opt)
{
    const char *which = "--peak-tflops";
    const double peak = peak_opt > 0 ? peak_opt : bf16_peak_tflops(mpl_cuda_device_name(t->cuda), &which);
    const double flops = step_model_flops(cfg, t->dp), tflops = flops / (med * 1e-3) / 1e12;
    char mfu[32] = "n/a";
    if (peak > 0) snprintf(mfu, sizeof mfu, "%.4f", tflops / peak);
    printf("# %s\n# host=%s ranks=%d device=%s (GPU %d, %d SMs, compute %d.%d) config=%s\n",
           mpl_build_info(), cli->host, cli->world, mpl_cuda_device_name(t->cuda),
           mpl_cuda_device(t->cuda), mpl_cuda_sm_count(t->cuda), mpl_cuda_cc(t->cuda) / 10,
           mpl_cuda_cc(t->cuda) % 10, cfg_path);
    printf("# attn=%s band=%lld maps=%s d_model=%lld n_layer=%lld n_head=%lld seq_len=%lld "
           "batch=%lld params=%lld; memory plan %.2f GiB of %s\n", cfg->attn,
           (long long)cfg->band, cfg->fmm_maps, (long long)cfg->d_model, (long long)cfg->n_layer,
           (long long)cfg->n_head, (long long)cfg->seq_len, (long long)cfg->batch,
           (long long)mpl_model_layout(t->model)->n_elems, (double)t->plan.total / (1 << 30),
           t->plan.budget_src);
    printf("# model flops per step %.4e = 6 N P_matmul + attention (bench/README.md); bf16 peak "
           "%.1f TFLOP/s (%s)\n", flops, peak, which);
    printf("config,backend,mode,device,d_model,n_layer,n_head,seq_len,batch,steps,median_ms,"
           "min_ms,max_ms,tok_per_s,model_tflop_per_step,tflops,mfu\n");
    printf("%s,multipole,native,cuda,%lld,%lld,%lld,%lld,%lld,%lld,%.3f,%.3f,%.3f,%.1f,%.4f,%.2f,%s\n",
           cfg_path, (long long)cfg->d_model, (long long)cfg->n_layer, (long long)cfg->n_head,
           (long long)cfg->seq_len, (long long)(cfg->batch * t->dp), steps, med, lo, hi, tps,
           flops / 1e12, tflops, mfu);
}

mpl_status mpl_bench_step_time(mpl_trainer *t, mpl_comm *c, long long steps, long long warmup,
                               double ms[3])
{
    mpl_status st = MPL_OK;
    const mpl_config *cfg = &t->cfg;
    const int64_t n = cfg->batch * (t->chunk_b - t->chunk_a);
    int32_t *tok = malloc((size_t)n * sizeof *tok), *tgt = malloc((size_t)n * sizeof *tgt);
    int64_t *ns = calloc((size_t)steps, sizeof *ns);
    if (!tok || !tgt || !ns) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        tok[i] = (int32_t)(mpl_philox_uniform(1, 7, (uint64_t)i) * (double)cfg->vocab_size);
        tgt[i] = (int32_t)(mpl_philox_uniform(1, 8, (uint64_t)i) * (double)cfg->vocab_size);
    }
    for (long long s = 0; s < warmup + steps; s++) {
        MPL_CHECK_GOTO(mpl_comm_barrier(c), done);
        double t0 = mpl_now();
        MPL_CHECK_GOTO(mpl_trainer_step(t, tok, tgt, NULL), done);
        if (s >= warmup) ns[s - warmup] = (int64_t)((mpl_now() - t0) * 1e9);
    }
    /* The step of the slowest rank is the step time. */
    MPL_CHECK_GOTO(mpl_comm_allreduce_max_i64(c, ns, steps), done);
    qsort(ns, (size_t)steps, sizeof *ns, cmp_i64);
    ms[0] = 1e-6 * (double)ns[steps / 2], ms[1] = 1e-6 * (double)ns[0];
    ms[2] = 1e-6 * (double)ns[steps - 1];
done:
    free(tok);
    free(tgt);
    free(ns);
    return st;
}

static mpl_status bench_step(const mpl_cli *cli, const char *cfg_path, const mpl_config *cfg,
                             long long steps, long long warmup, double peak_tflops)
{
    mpl_status st = MPL_OK;
    mpl_comm *world = NULL;
    mpl_trainer *t = NULL;
    double ms[3];
    MPL_CHECK(mpl_comm_create_world(&world));
    MPL_CHECK_GOTO(mpl_trainer_create(cfg, world, &t), done);
    MPL_CHECK_GOTO(mpl_bench_step_time(t, world, steps, warmup, ms), done);
    const double med = ms[0], lo = ms[1], hi = ms[2];
    double tps = (double)(cfg->batch * cfg->seq_len * t->dp) / (med * 1e-3);
    if (cli->rank == 0 && t->cuda) {
        print_gpu_step(cli, cfg_path, cfg, t, steps, med, lo, hi, tps, peak_tflops);
    } else if (cli->rank == 0) {
        printf("# %s\n# host=%s ranks=%d threads=%d config=%s\n", mpl_build_info(), cli->host,
               cli->world, omp_get_max_threads(), cfg_path);
        printf("# attn=%s d_model=%lld n_layer=%lld n_head=%lld seq_len=%lld batch=%lld "
               "params=%lld\n", cfg->attn, (long long)cfg->d_model, (long long)cfg->n_layer,
               (long long)cfg->n_head, (long long)cfg->seq_len, (long long)cfg->batch,
               (long long)mpl_model_layout(t->model)->n_elems);
        const int64_t peak = mpl_plan_rss_peak();
        printf("# recompute=%s chunk_tokens=%lld zero=%lld sp=%d dp=%d; rank 0: memory plan "
               "%.1f MiB, peak resident %.1f MiB (%.1f MiB at start)\n", cfg->recompute,
               (long long)cfg->chunk_tokens, (long long)cfg->zero, t->sp, t->dp,
               (double)t->plan.total / (1 << 20), (double)peak / (1 << 20),
               (double)t->rss_start / (1 << 20));
        printf("config,backend,d_model,n_layer,n_head,seq_len,batch,threads,steps,median_ms,"
               "min_ms,max_ms,tok_per_s\n");
        printf("%s,multipole,%lld,%lld,%lld,%lld,%lld,%d,%lld,%.3f,%.3f,%.3f,%.1f\n", cfg_path,
               (long long)cfg->d_model, (long long)cfg->n_layer, (long long)cfg->n_head,
               (long long)cfg->seq_len, (long long)(cfg->batch * t->dp), omp_get_max_threads(),
               steps, med, lo, hi, tps);
    }
done:
    mpl_trainer_destroy(&t);
    mpl_comm_destroy(&world);
    return st;
}

/* Resident memory now, MiB (/proc/self/statm; 0 where unreadable). */
static double rss_now_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long size = 0, res = 0;
    if (!f) return 0;
    if (fscanf(f, "%lld %lld", &size, &res) != 2) res = 0;
    fclose(f);
    return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static mpl_status bench_attention(const mpl_cli *cli, const mpl_config *cfg, long long reps,
                                  long long warmup)
{
    mpl_status st = MPL_OK;
    mpl_attn attn = {0};
    mpl_slab_layout lay = {0};
    float *params = NULL, *dparams = NULL, *qkv = NULL, *out = NULL, *saved = NULL;
    float *dqkv = NULL;
    double *ms = calloc((size_t)reps, sizeof *ms);
    if (!ms) return mpl_err(MPL_ERR_NOMEM, "out of memory");
    mpl_attn_cfg a;
    mpl_trainer_attn_cfg(cfg, &a);
    const int64_t L = cfg->seq_len, HD = cfg->d_model;
    MPL_CHECK_GOTO(mpl_attn_create(&a, NULL, &attn), done);
    if (attn.ops->declare_params)
        MPL_CHECK_GOTO(attn.ops->declare_params(attn.impl, 0, "", &lay), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &params), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &dparams), done);
    if (attn.ops->init_params) attn.ops->init_params(attn.impl, 0, params, 1);
    mpl_attn_geom g = {1, L, 0, NULL};
    /* the call's tensors (slabs are zeroed, so resident); saved is the
     * layer's own memory and comes after the baseline */
    const double base_mb = rss_now_mb();
    MPL_CHECK_GOTO(mpl_slab_alloc(3 * L * HD, &qkv), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(3 * L * HD, &dqkv), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(L * HD, &out), done);
    const double io_mb = (double)(7 * L * HD) * sizeof(float) / (1024.0 * 1024.0);
    MPL_CHECK_GOTO(mpl_slab_alloc(attn.ops->saved_elems(attn.impl, &g), &saved), done);
    mpl_philox_fill_normal(qkv, 3 * L * HD, 1, 11, 0, 1.0);
    for (long long r = 0; r < warmup + reps; r++) {
        double t0 = mpl_now();
        MPL_CHECK_GOTO(attn.ops->forward(attn.impl, 0, &g, params, qkv, out, saved), done);
        /* dout = out: a fixed, data-dependent upstream gradient */
        MPL_CHECK_GOTO(attn.ops->backward(attn.impl, 0, &g, params, qkv, saved, out, dqkv,
                                          dparams), done);
        if (r >= warmup) ms[r - warmup] = (mpl_now() - t0) * 1e3;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_f64);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double med = ms[reps / 2], peak_mb = (double)ru.ru_maxrss / 1024.0;
    if (cli->rank == 0) {
        printf("# %s\n# host=%s threads=%d attn=%s causal=%d heads=%d head_dim=%d band=%lld "
               "maps=%s segment=%lld reps=%lld warmup=%lld\n", mpl_build_info(), cli->host,
               omp_get_max_threads(), cfg->attn, a.causal, a.n_head, a.head_dim,
               (long long)a.band, cfg->fmm_maps, (long long)a.segment, reps, warmup);
        printf("# io_mb: qkv, out (= dout) and dqkv, 7 L H d floats; extra_mb = peak_mb - io_mb "
               "- %.1f MB resident before them\n", base_mb);
        printf("op,attn,backend,L,heads,d,w,r,causal,threads,median_ms,min_ms,max_ms,ns_per_tok,"
               "peak_mb,gflops,sgemm_gflops,io_mb,extra_mb\n");
        printf("attention,%s,multipole,%lld,%d,%d,%lld,%d,%d,%d,%.3f,%.3f,%.3f,%.1f,%.1f,%.2f,%.1f,"
               "%.1f,%.1f\n",
               cfg->attn, (long long)L, a.n_head, a.head_dim, (long long)a.band, a.fmm_n_maps,
               a.causal, omp_get_max_threads(), med, ms[0], ms[reps - 1], med * 1e6 / (double)L,
               peak_mb, 3e-9 * mpl_flops_attn_forward(&a, L) / (med * 1e-3),
               1e-9 * mpl_flops_sgemm(1024), io_mb, peak_mb - io_mb - base_mb);
    }
done:
    free(ms);
    mpl_attn_destroy(&attn);
    mpl_slab_layout_free(&lay);
    mpl_slab_free(&params), mpl_slab_free(&dparams), mpl_slab_free(&qkv);
    mpl_slab_free(&dqkv), mpl_slab_free(&out), mpl_slab_free(&saved);
    return st;
}

int mpl_bench_attn_opt(int argc, char **argv, int *i, mpl_config *cfg, long long *heads,
                       long long *head_dim, mpl_status *st)
{
    static const struct {
        const char *opt, *key;
    } keys[] = {{"--attn", "attn"}, {"--band", "band"}, {"--maps", "fmm_maps"},
                {"--causal", "causal"}};
    const char *v = NULL;
    int r;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        if ((r = mpl_cli_opt(argc, argv, i, keys[k].opt, &v))) {
            if (r > 0) *st = mpl_config_set(cfg, keys[k].key, v, keys[k].opt);
            return r;
        }
    if ((r = mpl_cli_opt(argc, argv, i, "--heads", &v))) {
        if (r > 0) *st = mpl_cli_parse_i64("--heads", v, 1, 4096, heads);
    } else if ((r = mpl_cli_opt(argc, argv, i, "--head-dim", &v))) {
        if (r > 0) *st = mpl_cli_parse_i64("--head-dim", v, 1, 4096, head_dim);
    }
    return r;
}

static int cmd_bench_attention(const mpl_cli *cli, int argc, char **argv)
{
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    long long reps = 3, warmup = 1, heads = 4, head_dim = 32, len = 0;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if ((r = mpl_bench_attn_opt(argc, argv, &i, &cfg, &heads, &head_dim, &st))) {
            /* parsed by the helper both benchmarks share */
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--len", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--len", v, 1, 1ll << 40, &len);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--reps", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--reps", v, 1, 100000, &reps);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--warmup", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--warmup", v, 0, 100000, &warmup);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--set", &v))) {
            if (r > 0) st = mpl_config_set_arg(&cfg, v);
        } else {
            return mpl_cli_usage(cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(cli);
    }
    if (len < 1) return mpl_cli_usage(cli, "--len L is required");
    cfg.seq_len = len;
    cfg.n_head = heads;
    cfg.d_model = heads * head_dim;
    cfg.warmup = 0;
    if (mpl_config_validate(&cfg) != MPL_OK) return mpl_cli_arg_error(cli);
    mpl_status st = bench_attention(cli, &cfg, reps, warmup);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(cli, mpl_cli_exit_code(st));
}

int mpl_cmd_bench(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "bench");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        if (cli.rank == 0) fputs(bench_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? MPL_EXIT_USAGE : MPL_EXIT_OK;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(bench_help, stdout);
            return MPL_EXIT_OK;
        }
    if (strcmp(argv[1], "attention") == 0) return cmd_bench_attention(&cli, argc, argv);
    if (strcmp(argv[1], "comm") == 0) return mpl_cmd_bench_comm(&cli, argc, argv);
    if (strcmp(argv[1], "ckpt") == 0) return mpl_cmd_bench_ckpt(argc, argv);
    if (strcmp(argv[1], "step") != 0)
        return mpl_cli_usage(&cli, "unknown benchmark '%s' (available: step, attention, comm, ckpt)",
                             argv[1]);
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    const char *cfg_path = "defaults";
    long long steps = 10, warmup = 2;
    double peak = 0;
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
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--peak-tflops", &v))) {
            if (r > 0) st = mpl_cli_parse_f64("--peak-tflops", v, 0, 1e9, &peak);
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(&cli);
    }
    /* Benchmarks run many steps: the schedule must not end before them. */
    if (cfg.steps < steps + warmup) cfg.steps = steps + warmup + 1;
    if (mpl_config_validate(&cfg) != MPL_OK) return mpl_cli_arg_error(&cli);
    mpl_status st = bench_step(&cli, cfg_path, &cfg, steps, warmup, peak);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
}
