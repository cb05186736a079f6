/* `multipole bench ckpt`: save and load throughput of a synthetic model
 * (params + AdamW m + v) through io/ckpt, with the writer the build and
 * MPL_CKPT_SERIAL select. Its own file: it needs no model, trainer or
 * config, only a slab layout, so it shares nothing with bench step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "core/slab.h"
#include "io/ckpt.h"

#define BENCH_REPS_MAX 64
/* Each tensor is (1024, 1024) fp32 = 4 MiB, like a large projection. */
#define BENCH_ROWS 1024

static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Collective on world: the slowest rank's time of each rep; sorted. */
static mpl_status time_reps(mpl_comm *w, int save, int reps, const char *path,
                            const mpl_slab_layout *lay, float *p, float *m, float *v, double *t)
{
    mpl_ckpt_state s = {1, 0, 1, 0};
    mpl_ckpt_meta meta = {"[bench]\n", mpl_comm_size(w), 1, mpl_comm_size(w), mpl_build_info()};
    for (int r = 0; r <= reps; r++) { /* rep 0 is the untimed warmup */
        MPL_CHECK(mpl_comm_barrier(w));
        double t0 = mpl_now();
        if (save) MPL_CHECK(mpl_ckpt_save(w, path, lay, p, m, v, &s, &meta));
        else MPL_CHECK(mpl_ckpt_load(w, path, lay, p, m, v, &s, NULL));
        int64_t ns = (int64_t)llround((mpl_now() - t0) * 1e9);
        MPL_CHECK(mpl_comm_allreduce_max_i64(w, &ns, 1));
        if (r > 0) t[r - 1] = (double)ns * 1e-9;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_f64);
    return MPL_OK;
}

int mpl_cmd_bench_ckpt(int argc, char **argv)
{
    mpl_cli cli_;
    const mpl_cli *cli = &cli_;
    mpl_cli_init(&cli_, "bench");
    long long mb = 100, reps = 3;
    const char *dir = ".";
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if ((r = mpl_cli_opt(argc, argv, &i, "--mb", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--mb", v, 4, 1 << 20, &mb);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--reps", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--reps", v, 1, BENCH_REPS_MAX, &reps);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--dir", &v))) {
            dir = v;
        } else {
            return mpl_cli_usage(cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(cli);
    }
    mpl_status st = MPL_OK;
    mpl_comm *w = NULL;
    mpl_slab_layout lay = {0};
    float *p = NULL, *m = NULL, *v = NULL;
    double ts[BENCH_REPS_MAX], tl[BENCH_REPS_MAX];
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-ckpt.h5", dir);
    MPL_CHECK_GOTO(mpl_comm_create_world(&w), fail);
    int n_tensors = (int)((mb + 3) / 4);
    for (int i = 0; i < n_tensors; i++) {
        char name[32];
        snprintf(name, sizeof name, "blk%d.w", i);
        MPL_CHECK_GOTO(mpl_slab_layout_add(&lay, name, 2, (int64_t[]){BENCH_ROWS, 1024}, 1, NULL),
                       fail);
    }
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &p), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &m), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &v), fail);
    for (int64_t i = 0; i < lay.n_elems; i++) { /* not all zeros: no sparse-file shortcuts */
        p[i] = (float)(i % 1009) * 1e-3f;
        m[i] = (float)(i % 997) * 1e-6f;
        v[i] = (float)(i % 991) * 1e-9f;
    }
    MPL_CHECK_GOTO(time_reps(w, 1, (int)reps, path, &lay, p, m, v, ts), fail);
    MPL_CHECK_GOTO(time_reps(w, 0, (int)reps, path, &lay, p, m, v, tl), fail);
    if (cli->rank == 0) {
        double file_mb = 3.0 * (double)lay.n_elems * sizeof(float) / 1e6;
        const char *writer = mpl_ckpt_parallel_enabled() ? "parallel" : "serial";
        printf("# %s\n# ranks=%d writer=%s file=%s tensors=%d x (%d, 1024) fp32 x 3 (params, m, "
               "v) reps=%lld (+1 warmup); times are the slowest rank's\n",
               mpl_build_info(), mpl_comm_size(w), writer, path, n_tensors, BENCH_ROWS, reps);
        printf("op,writer,ranks,file_mb,reps,median_s,min_s,max_s,mb_per_s\n");
        for (int k = 0; k < 2; k++) {
            const double *t = k ? tl : ts;
            printf("%s,%s,%d,%.1f,%lld,%.4f,%.4f,%.4f,%.1f\n", k ? "load" : "save", writer,
                   mpl_comm_size(w), file_mb, reps, t[reps / 2], t[0], t[reps - 1],
                   file_mb / t[reps / 2]);
        }
        unlink(path);
    }
fail:
    mpl_slab_free(&p);
    mpl_slab_free(&m);
    mpl_slab_free(&v);
    mpl_slab_layout_free(&lay);
    mpl_comm_destroy(&w);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(cli, mpl_cli_exit_code(st));
}
