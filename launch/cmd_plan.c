/* `multipole plan`: the memory plan of one rank of a layout (plan.h) and
 * the longest seq_len that fits it, without running anything, so a job can
 * be sized before it waits in a queue. */
#include <stdio.h>
#include <string.h>

#include "attention/registry.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "dist/grid.h"
#include "plan.h"
#include "trainer.h"

static const char *const plan_help =
    "usage: multipole plan -c CONFIG.ini [--set key=value]... [--world N]\n"
    "                      [--ranks-per-node R]\n"
    "\n"
    "Prints the memory plan of one rank of the layout (sp from the config,\n"
    "dp = N / sp): parameters, gradients, optimizer state, activations kept\n"
    "for the backward, the attention's per-layer state, workspace, the\n"
    "attention's own buffers and communication, against what a rank may use\n"
    "(mem_limit, or the memory available here shared by R ranks), and the\n"
    "longest seq_len that fits. Exit code 0 when the config fits, 1 when not,\n"
    "2 on bad input. The halo buffers of sp > 1 (O(band * d_model) floats) are\n"
    "not counted here; train counts them.\n"
    "\n"
    "  --world N            ranks in all (default sp x dp of the config, dp 0 -> 1)\n"
    "  --ranks-per-node R   ranks sharing this machine's memory (default N)\n";

static int fmt_gib(int64_t b, char *buf, size_t n)
{
    return snprintf(buf, n, "%.2f GiB", (double)b / (double)(1LL << 30));
}

int mpl_cmd_plan(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "plan");
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    const char *path = NULL;
    long long world = 0, per_node = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(plan_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "-c", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "-c needs a file");
            path = v;
            if (mpl_config_load_file(&cfg, v) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--set", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "--set needs key=value");
            if (mpl_config_set_arg(&cfg, v) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--world", &v))) {
            if (r < 0 || mpl_cli_parse_i64("--world", v, 1, 1 << 24, &world) != MPL_OK)
                return r < 0 ? mpl_cli_usage(&cli, "--world needs a number")
                             : mpl_cli_error(&cli, MPL_EXIT_USAGE);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--ranks-per-node", &v))) {
            if (r < 0 || mpl_cli_parse_i64("--ranks-per-node", v, 1, 1 << 20, &per_node) != MPL_OK)
                return r < 0 ? mpl_cli_usage(&cli, "--ranks-per-node needs a number")
                             : mpl_cli_error(&cli, MPL_EXIT_USAGE);
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
    }
    if (!path) return mpl_cli_usage(&cli, "plan needs -c CONFIG.ini");
    if (mpl_config_validate(&cfg) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    if (!world) world = cfg.sp * (cfg.dp > 0 ? cfg.dp : 1);
    if (world % cfg.sp != 0) {
        mpl_err(MPL_ERR_CONFIG, "--world %lld is not a multiple of sp=%lld", world,
                (long long)cfg.sp);
        return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    }
    if (cfg.seq_len < cfg.sp) {
        mpl_err(MPL_ERR_CONFIG, "seq_len=%lld is shorter than sp=%lld", (long long)cfg.seq_len,
                (long long)cfg.sp);
        return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    }
    if (!per_node) per_node = world;
    const int dp = (int)(world / cfg.sp);

    mpl_attn attn = {0};
    mpl_model *m = NULL;
    int rc = MPL_EXIT_OK;
    mpl_status st = mpl_trainer_model_standalone(&cfg, &attn, &m);
    int64_t lo, hi, longest = 0;
    mpl_plan p;
    mpl_grid_chunk(cfg.seq_len, (int)cfg.sp, 0, &lo, &hi);
    if (st == MPL_OK) st = mpl_plan_make(&cfg, m, (int)world, dp, hi - lo, &p);
    if (st == MPL_OK)
        st = mpl_plan_budget(&cfg, (int)per_node, &p.budget, p.budget_src, sizeof p.budget_src);
    if (st != MPL_OK) {
        rc = mpl_cli_error(&cli, mpl_cli_exit_code(st));
        goto done;
    }
    longest = mpl_plan_longest(&cfg, m, (int)world, (int)cfg.sp, dp, p.budget);
    if (cli.rank == 0) {
        printf("%s: %lld parameters, seq_len %lld over sp=%lld x dp=%d ranks (%lld per node)\n",
               path, (long long)mpl_model_layout(m)->n_elems, (long long)cfg.seq_len,
               (long long)cfg.sp, dp, per_node);
        if (strcmp(cfg.device, "cuda") == 0)
            printf("device=cuda: this is the CPU model's plan; train and bench step print the "
                   "GPU's (another layout, bf16 activations) when they start\n");
        mpl_plan_print(stdout, &cfg, &p);
        char b[32];
        fmt_gib(p.budget, b, sizeof b);
        if (p.total <= p.budget) printf("fits; ");
        else printf("does NOT fit; ");
        printf("the longest seq_len that fits %s per rank: %lld\n", b, (long long)longest);
    }
    rc = p.total <= p.budget ? MPL_EXIT_OK : MPL_EXIT_FAIL;
done:
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
    return rc;
}
