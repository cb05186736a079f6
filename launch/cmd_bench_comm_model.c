/* `multipole bench comm --model`: the alpha-beta model of one training
 * step at P = 1, 2, 4, ... GPUs (comm_model.h) from measured inputs: the
 * per-rank compute of a step at the tokens per rank (timed here with bench
 * step's loop, or given with --compute-ms, e.g. from a GPU run), the
 * parameter slab of the config's model, and the bytes of each exchange,
 * measured with bench comm's counters at the ranks this runs on and
 * required to equal the closed forms that the model then evaluates at
 * every P. A separate file from the byte sweep of cmd_bench_comm.c: the
 * sweep measures, this predicts. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "attention/registry.h"
#include "cli.h"
#include "comm_bytes.h"
#include "comm_model.h"
#include "commands.h"
#include "config.h"
#include "flops.h"
#include "trainer.h"

typedef struct model_opts {
    long long tokens_per_rank, max_p, steps, warmup, measure_tokens;
    double compute_ms, overlap;
    mpl_cm_net net;
} model_opts;

/* Local. The parameters of cfg's model (the same tensors on every
 * device). */
static mpl_status count_params(const mpl_config *cfg, int64_t *n)
{
    mpl_status st = MPL_OK;
    mpl_attn attn = {0};
    mpl_model *m = NULL;
    MPL_CHECK_GOTO(mpl_trainer_model_standalone(cfg, &attn, &m), done);
    *n = mpl_model_layout(m)->n_elems;
done:
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
    return st;
}

/* Collective on world: rank 0 alone times training steps of cfg at C
 * tokens on one rank (its own communicator, so no exchange is timed);
 * every rank receives the median in *ms. */
static mpl_status measure_compute(mpl_comm *world, const mpl_config *cfg_in, const model_opts *o,
                                  double *ms)
{
    mpl_status st = MPL_OK;
    mpl_comm *self = NULL;
    mpl_trainer *t = NULL;
    mpl_config cfg = *cfg_in;
    cfg.seq_len = o->tokens_per_rank;
    cfg.sp = 1, cfg.dp = 0;
    if (cfg.steps < o->steps + o->warmup) cfg.steps = o->steps + o->warmup + 1;
    double r[3] = {0, 0, 0};
    const int me = mpl_comm_rank(world);
    MPL_CHECK(mpl_comm_split(world, me, 0, &self));
    if (me == 0) {
        st = mpl_trainer_create(&cfg, self, &t);
        if (st == MPL_OK) st = mpl_bench_step_time(t, self, o->steps, o->warmup, r);
    }
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);
    MPL_CHECK_GOTO(mpl_comm_bcast(world, r, sizeof r, 0), done);
    *ms = r[0];
done:
    mpl_trainer_destroy(&t);
    mpl_comm_destroy(&self);
    return st;
}

/* Collective on world: the bytes of fmm and combiner_fixed measured at
 * this world size (one forward and backward on M tokens per rank) must
 * equal the closed forms the model uses; a '#' line each. One rank moves
 * nothing, and a bidirectional halo needs an interior rank (3 ranks), so
 * smaller worlds only say that the bytes are the closed forms'. */
static mpl_status check_bytes(const mpl_cli *cli, mpl_comm *world, const mpl_config *cfg_in,
                              const model_opts *o)
{
    const int P = mpl_comm_size(world);
    if (P < (cfg_in->causal ? 2 : 3)) {
        if (cli->rank == 0)
            printf("# bytes: the closed forms of launch/comm_bytes.h, not measured in this run "
                   "(needs mpirun -np >= %d; scripts/bench.sh comm checks them at 4 ranks)\n",
                   cfg_in->causal ? 2 : 3);
        return MPL_OK;
    }
    static const char *const kinds[] = {"fmm", "combiner_fixed"};
    for (int k = 0; k < 2; k++) {
        mpl_config cfg = *cfg_in;
        MPL_CHECK(mpl_config_set(&cfg, "attn", kinds[k], NULL));
        const int64_t L = (int64_t)P * o->measure_tokens;
        mpl_comm_bytes mf, mb, ff, fb;
        double ms[2];
        int64_t n_ctx;
        MPL_CHECK(mpl_bench_comm_measure(world, &cfg, L, &mf, &mb, ms));
        cfg.seq_len = L;
        mpl_attn_cfg a;
        mpl_trainer_attn_cfg(&cfg, &a);
        mpl_comm_bytes_formula(&a, L, P, &ff, &fb, &n_ctx);
        if (memcmp(&mf, &ff, sizeof mf) || memcmp(&mb, &fb, sizeof mb))
            return mpl_err(MPL_ERR_INTERNAL,
                           "%s at L=%lld over %d ranks: measured bytes (fwd p2p %lld scan %lld "
                           "allreduce %lld, bwd p2p %lld scan %lld allreduce %lld) differ from "
                           "the closed form (fwd %lld %lld %lld, bwd %lld %lld %lld)",
                           kinds[k], (long long)L, P, (long long)mf.p2p, (long long)mf.scan,
                           (long long)mf.allreduce, (long long)mb.p2p, (long long)mb.scan,
                           (long long)mb.allreduce, (long long)ff.p2p, (long long)ff.scan,
                           (long long)ff.allreduce, (long long)fb.p2p, (long long)fb.scan,
                           (long long)fb.allreduce);
        if (cli->rank == 0)
            printf("# bytes measured: %s at L=%lld over %d ranks, per layer fwd p2p %lld scan "
                   "%lld allreduce %lld, bwd p2p %lld scan %lld allreduce %lld = the closed "
                   "form\n", kinds[k], (long long)L, P, (long long)mf.p2p, (long long)mf.scan,
                   (long long)mf.allreduce, (long long)mb.p2p, (long long)mb.scan,
                   (long long)mb.allreduce);
    }
    return MPL_OK;
}

static void print_table(const mpl_cli *cli, const char *cfg_path, const mpl_config *cfg,
                        const model_opts *o, const mpl_cm_input *in, const char *compute_src)
{
    if (cli->rank != 0) return;
    const mpl_cm_net *n = &o->net;
    printf("# %s\n# host=%s ranks=%d: an alpha-beta MODEL of one training step, not a "
           "measurement (bench/README.md, comm --model)\n", mpl_build_info(), cli->host,
           cli->world);
    printf("# config=%s d_model=%lld n_layer=%lld n_head=%lld batch=%lld band=%lld maps=%s "
           "causal=%lld segment=%s params=%lld\n", cfg_path, (long long)cfg->d_model,
           (long long)cfg->n_layer, (long long)cfg->n_head, (long long)cfg->batch,
           (long long)cfg->band, cfg->fmm_maps, (long long)cfg->causal,
           cfg->segment > 0 ? "given" : "round(sqrt(L))", (long long)in->n_params);
    /* the rate the compute time implies, to judge a --compute-ms figure */
    const double flops = mpl_flops_train_per_token(cfg) * (double)(cfg->batch * in->tokens_per_rank);
    printf("# tokens_per_rank=%lld compute_ms=%.3f (%s; %.4g model flops per rank and step, "
           "%.3g TFLOP/s) overlap=%.2f\n", (long long)in->tokens_per_rank, 1e3 * in->compute_s,
           compute_src, flops, in->compute_s > 0 ? flops / in->compute_s / 1e12 : 0, in->overlap);
    printf("# network: %d GPUs per node; NVLink alpha=%g us beta=%g GB/s; InfiniBand alpha=%g us "
           "beta=%g GB/s per GPU\n", n->gpus_per_node, n->nvl_us, n->nvl_gbs, n->ib_us, n->ib_gbs);
    printf("model,P,nodes,mechanism,L,tokens_per_rank,compute_ms,attn_bytes,attn_ms,grad_bytes,"
           "grad_ms,scalar_ms,exposed_ms,step_ms,efficiency,note\n");
    double fmm_1024 = -1;
    for (long long P = 1; P <= o->max_p; P *= 2)
        for (int m = 0; m < MPL_CM_MECH_COUNT; m++) {
            mpl_cm_step s;
            mpl_cm_predict(in, n, (mpl_cm_mech)m, (int)P, &s);
            const long long nodes = (P + n->gpus_per_node - 1) / n->gpus_per_node;
            printf("model,%lld,%lld,%s,%lld,%lld,%.3f,", P, nodes, mpl_cm_mech_name(m),
                   P * (long long)in->tokens_per_rank, (long long)in->tokens_per_rank,
                   1e3 * in->compute_s);
            if (!s.feasible) {
                printf(",,,,,,,,P does not divide n_head=%lld\n", (long long)cfg->n_head);
                continue;
            }
            printf("%.0f,%.4f,%.0f,%.4f,%.4f,%.4f,%.4f,%.4f,\n", s.attn_bytes, 1e3 * s.attn_s,
                   4.0 * (double)in->n_params, 1e3 * s.grad_s, 1e3 * s.scalar_s,
                   1e3 * s.exposed_s, 1e3 * s.step_s, s.efficiency);
            if (P == 1024 && m == MPL_CM_MECH_FMM) fmm_1024 = s.efficiency;
        }
    if (fmm_1024 >= 0)
        printf("# target (issue 9): fmm weak-scaling efficiency at P=1024 >= 0.95: predicted "
               "%.4f, %s\n", fmm_1024, fmm_1024 >= 0.95 ? "met" : "NOT met");
}

/* Local. The options of --model besides -c/--set: 1 when argv[*i] is one
 * (parsed into o, *st set), -1 when its value is missing, 0 otherwise. */
static int model_opt(int argc, char **argv, int *i, model_opts *o, mpl_status *st)
{
    static const struct {
        const char *name;
        double lo, hi;
        size_t off;
    } reals[] = {{"--compute-ms", 0, 1e9, offsetof(model_opts, compute_ms)},
                 {"--overlap", 0, 1, offsetof(model_opts, overlap)},
                 {"--nvlink-us", 0, 1e6, offsetof(model_opts, net.nvl_us)},
                 {"--nvlink-gbs", 1e-6, 1e6, offsetof(model_opts, net.nvl_gbs)},
                 {"--ib-us", 0, 1e6, offsetof(model_opts, net.ib_us)},
                 {"--ib-gbs", 1e-6, 1e6, offsetof(model_opts, net.ib_gbs)}};
    static const struct {
        const char *name;
        long long lo, hi;
        size_t off;
    } ints[] = {{"--tokens-per-rank", 1, 1ll << 32, offsetof(model_opts, tokens_per_rank)},
                {"--max-p", 1, 1 << 20, offsetof(model_opts, max_p)},
                {"--steps", 1, 1000000, offsetof(model_opts, steps)},
                {"--warmup", 0, 1000000, offsetof(model_opts, warmup)},
                {"--measure-tokens", 1, 1ll << 32, offsetof(model_opts, measure_tokens)}};
    const char *v = NULL;
    int r;
    for (size_t k = 0; k < sizeof reals / sizeof reals[0]; k++)
        if ((r = mpl_cli_opt(argc, argv, i, reals[k].name, &v))) {
            if (r > 0)
                *st = mpl_cli_parse_f64(reals[k].name, v, reals[k].lo, reals[k].hi,
                                        (double *)((char *)o + reals[k].off));
            return r;
        }
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if ((r = mpl_cli_opt(argc, argv, i, ints[k].name, &v))) {
            if (r > 0)
                *st = mpl_cli_parse_i64(ints[k].name, v, ints[k].lo, ints[k].hi,
                                        (long long *)((char *)o + ints[k].off));
            return r;
        }
    long long g = 0;
    if ((r = mpl_cli_opt(argc, argv, i, "--gpus-per-node", &v)) > 0) {
        *st = mpl_cli_parse_i64("--gpus-per-node", v, 1, 1 << 16, &g);
        if (*st == MPL_OK && (g & (g - 1)))
            *st = mpl_err(MPL_ERR_ARG, "--gpus-per-node %lld must be a power of two", g);
        o->net.gpus_per_node = (int)g;
    }
    return r;
}

int mpl_cmd_bench_comm_model(const mpl_cli *cli, int argc, char **argv)
{
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    const char *cfg_path = "defaults";
    /* NVLink 4 (H100/H200): 900 GB/s is both directions together, 450 each;
     * NDR InfiniBand: 400 Gb/s = 50 GB/s per GPU with one NIC per GPU; the
     * latencies are NCCL's per-operation ones rather than the wire's. */
    model_opts o = {65536, 4096, 3, 1, 0, 0, 0, {2, 450, 5, 50, 8}};
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if (!strcmp(argv[i], "--model")) {
            continue;
        } else if ((r = model_opt(argc, argv, &i, &o, &st))) {
            /* parsed into o */
        } else if ((r = mpl_cli_opt(argc, argv, &i, "-c", &v))) {
            if (r > 0) st = mpl_config_load_file(&cfg, cfg_path = v);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--set", &v))) {
            if (r > 0) st = mpl_config_set_arg(&cfg, v);
        } else {
            return mpl_cli_usage(cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(cli);
    }
    if (!o.measure_tokens) o.measure_tokens = o.tokens_per_rank < 4096 ? o.tokens_per_rank : 4096;
    cfg.seq_len = o.tokens_per_rank;
    if (cfg.steps < o.steps + o.warmup) cfg.steps = o.steps + o.warmup + 1;
    if (mpl_config_validate(&cfg) != MPL_OK) return mpl_cli_arg_error(cli);
    if (o.measure_tokens < cfg.band)
        return mpl_cli_usage(cli, "--measure-tokens %lld is shorter than the band %lld (the "
                             "closed forms are an interior rank's, holding the whole halo)",
                             o.measure_tokens, (long long)cfg.band);
    mpl_comm *world = NULL;
    mpl_cm_input in = {&cfg, o.tokens_per_rank, 0, 1e-3 * o.compute_ms, o.overlap};
    if (mpl_comm_create_world(&world) != MPL_OK) return mpl_cli_error(cli, MPL_EXIT_FAIL);
    mpl_status st = count_params(&cfg, &in.n_params);
    mpl_comm_agree(world, &st);
    if (st == MPL_OK) st = check_bytes(cli, world, &cfg, &o);
    mpl_comm_agree(world, &st);
    char src[96] = "given by --compute-ms";
    if (st == MPL_OK && o.compute_ms <= 0) {
        double ms = 0;
        st = measure_compute(world, &cfg, &o, &ms);
        in.compute_s = 1e-3 * ms;
        snprintf(src, sizeof src, "measured: median of %lld steps on one rank, device=%s",
                 o.steps, cfg.device);
    }
    if (st == MPL_OK) print_table(cli, cfg_path, &cfg, &o, &in, src);
    mpl_comm_destroy(&world);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(cli, mpl_cli_exit_code(st));
}
