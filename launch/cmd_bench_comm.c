/* `multipole bench comm`: bytes each rank sends per attention layer
 * (forward and backward) when one sequence is split over all ranks, for a
 * sweep of lengths, next to the closed form of ATTENTION.md (the formulas
 * are in `multipole bench --help`). The point of the framework is that the
 * FMM column does not grow with L (Combiner-Logsparse's grows as log L). */
#include <stdio.h>
#include <string.h>

#include "attention/registry.h"
#include "cli.h"
#include "comm_bytes.h"
#include "commands.h"
#include "config.h"
#include "core/philox.h"
#include "dist/grid.h"
#include "trainer.h"

mpl_status mpl_bench_comm_measure(mpl_comm *world, const mpl_config *cfg_in, int64_t L,
                                  mpl_comm_bytes *fwd, mpl_comm_bytes *bwd, double ms[2])
{
    mpl_status st = MPL_OK;
    mpl_attn attn = {0};
    mpl_slab_layout lay = {0};
    float *params = NULL, *dparams = NULL, *qkv = NULL, *dqkv = NULL, *out = NULL, *saved = NULL;
    mpl_config cfg = *cfg_in;
    cfg.seq_len = L;
    mpl_attn_cfg a;
    mpl_trainer_attn_cfg(&cfg, &a);
    const int P = mpl_comm_size(world), p = mpl_comm_rank(world);
    int64_t lo, hi;
    mpl_grid_chunk(L, P, p, &lo, &hi);
    const int64_t n = hi - lo, HD = cfg.d_model;
    MPL_CHECK_GOTO(mpl_attn_create(&a, world, &attn), done);
    if (attn.ops->declare_params)
        MPL_CHECK_GOTO(attn.ops->declare_params(attn.impl, 0, "", &lay), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &params), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &dparams), done);
    if (attn.ops->init_params) attn.ops->init_params(attn.impl, 0, params, 1);
    mpl_attn_geom g = {1, n, lo, NULL};
    MPL_CHECK_GOTO(mpl_slab_alloc(3 * n * HD, &qkv), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(3 * n * HD, &dqkv), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(n * HD, &out), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(attn.ops->saved_elems(attn.impl, &g), &saved), done);
    mpl_philox_fill_normal(qkv, 3 * n * HD, 1, 11, (uint64_t)(lo * 3 * HD), 1.0);
    mpl_comm_bytes b0, b1, b2;
    mpl_comm_bytes_get(world, &b0);
    double t0 = mpl_now();
    MPL_CHECK_GOTO(attn.ops->forward(attn.impl, 0, &g, params, qkv, out, saved), done);
    double t1 = mpl_now();
    mpl_comm_bytes_get(world, &b1);
    MPL_CHECK_GOTO(attn.ops->backward(attn.impl, 0, &g, params, qkv, saved, out, dqkv, dparams),
                   done);
    double t2 = mpl_now();
    mpl_comm_bytes_get(world, &b2);
    /* per kind, forward then backward, then the two times in ns */
#define DIFF(x, y) (x).p2p - (y).p2p, (x).allreduce - (y).allreduce, (x).scan - (y).scan, \
                   (x).allgather - (y).allgather, (x).bcast - (y).bcast
    int64_t v[12] = {DIFF(b1, b0), DIFF(b2, b1), (int64_t)((t1 - t0) * 1e9),
                     (int64_t)((t2 - t1) * 1e9)};
#undef DIFF
    MPL_CHECK_GOTO(mpl_comm_allreduce_max_i64(world, v, 12), done);
    *fwd = (mpl_comm_bytes){v[0], v[1], v[2], v[3], v[4]};
    *bwd = (mpl_comm_bytes){v[5], v[6], v[7], v[8], v[9]};
    ms[0] = 1e-6 * (double)v[10], ms[1] = 1e-6 * (double)v[11];
done:
    mpl_attn_destroy(&attn);
    mpl_slab_layout_free(&lay);
    mpl_slab_free(&params), mpl_slab_free(&dparams), mpl_slab_free(&qkv);
    mpl_slab_free(&dqkv), mpl_slab_free(&out), mpl_slab_free(&saved);
    return st;
}

static mpl_status one_length(mpl_comm *world, mpl_config *cfg, int64_t L)
{
    mpl_comm_bytes fwd, bwd, ff, fb;
    double ms[2];
    cfg->seq_len = L;
    cfg->segment = 0; /* default round(sqrt(L)) unless given */
    MPL_CHECK(mpl_bench_comm_measure(world, cfg, L, &fwd, &bwd, ms));
    mpl_attn_cfg a;
    mpl_trainer_attn_cfg(cfg, &a);
    const int P = mpl_comm_size(world);
    int64_t n_ctx = 0;
    if (mpl_comm_rank(world) != 0) return MPL_OK;
    mpl_comm_bytes_formula(&a, L, P, &ff, &fb, &n_ctx);
    printf("comm,%s,%lld,%d,%d,%d,%lld,%d,%lld,%d,%lld,%lld,%lld,%lld,%.3f,%.3f,%lld\n",
           cfg->attn, (long long)L, P, a.n_head, a.head_dim, (long long)a.band, a.fmm_n_maps,
           (long long)a.segment, a.causal, (long long)mpl_comm_bytes_total(&fwd),
           (long long)mpl_comm_bytes_total(&bwd), (long long)mpl_comm_bytes_total(&ff),
           (long long)mpl_comm_bytes_total(&fb), ms[0], ms[1], (long long)n_ctx);
    return MPL_OK;
}

int mpl_cmd_bench_comm(const mpl_cli *cli, int argc, char **argv)
{
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--model")) return mpl_cmd_bench_comm_model(cli, argc, argv);
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    mpl_config_set(&cfg, "attn", "fmm", NULL);
    long long lo = 12, hi = 20, heads = 4, head_dim = 32, plus = 0;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if ((r = mpl_bench_attn_opt(argc, argv, &i, &cfg, &heads, &head_dim, &st))) {
            /* parsed by the helper both benchmarks share */
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--min-log2", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--min-log2", v, 1, 40, &lo);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--max-log2", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--max-log2", v, 1, 40, &hi);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--plus", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--plus", v, 0, 1 << 20, &plus);
        } else {
            return mpl_cli_usage(cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(cli);
    }
    if (strcmp(cfg.attn, "fmm") && strcmp(cfg.attn, "combiner_fixed") &&
        strcmp(cfg.attn, "combiner_logsparse"))
        return mpl_cli_usage(cli, "--attn %s does not run split (fmm, combiner_fixed or "
                             "combiner_logsparse)", cfg.attn);
    if ((1ll << lo) < cli->world)
        return mpl_cli_usage(cli, "2^%lld tokens cannot be split over %d ranks", lo, cli->world);
    cfg.n_head = heads;
    cfg.d_model = heads * head_dim;
    mpl_comm *world = NULL;
    if (mpl_comm_create_world(&world) != MPL_OK) return mpl_cli_error(cli, MPL_EXIT_FAIL);
    if (cli->rank == 0) {
        printf("# %s\n# host=%s ranks=%d (sp=%d) heads=%lld head_dim=%lld band=%lld maps=%s "
               "causal=%lld\n", mpl_build_info(), cli->host, cli->world, cli->world, heads,
               head_dim, (long long)cfg.band, cfg.fmm_maps, (long long)cfg.causal);
        printf("op,attn,L,sp,heads,d,w,r,segment,causal,fwd_bytes,bwd_bytes,formula_fwd_bytes,"
               "formula_bwd_bytes,fwd_ms,bwd_ms,ctx_blocks\n");
    }
    mpl_status st = MPL_OK;
    for (long long k = lo; k <= hi && st == MPL_OK; k++) {
        st = one_length(world, &cfg, (1ll << k) + plus);
        mpl_comm_agree(world, &st);
        fflush(stdout);
    }
    mpl_comm_destroy(&world);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(cli, mpl_cli_exit_code(st));
}
