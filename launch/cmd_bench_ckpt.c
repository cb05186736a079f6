/* `multipole bench ckpt`: save and load throughput of a synthetic model
 * (params + AdamW m + v) through io/ckpt, with the writer the build and
 * MPL_CKPT_SERIAL select, each run paired with a raw write (dd's pattern:
 * 4 MiB write() calls, then fsync) and raw reads of as many bytes in the
 * same directory: the disk here varies several-fold from minute to
 * minute, so only side-by-side ratios mean anything. Its own file: it
 * needs no model, trainer or config, only a slab layout. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "core/slab.h"
#include "io/ckpt.h"

#define BENCH_REPS_MAX 64
/* Each tensor is (1024, 1024) fp32 = 4 MiB, like a large projection. */
#define BENCH_ROWS 1024
#define RAW_BLOCK ((size_t)4 << 20)

/* The timed operations of one run, in output order. */
enum { OP_SAVE, OP_RAW_WRITE, OP_LOAD, OP_RAW_READ, OP_LOAD_COLD, OP_RAW_READ_COLD, N_OPS };
static const char *const op_name[N_OPS] = {"save", "raw_write", "load", "raw_read",
                                           "load_cold", "raw_read_cold"};

static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Local. Drop path's pages from the page cache (they are clean: the file was
 * fsynced), so the next read comes from the disk. */
static mpl_status evict(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mpl_err(MPL_ERR_IO, "cannot open %s", path);
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return rc == 0 ? MPL_OK : mpl_err(MPL_ERR_IO, "posix_fadvise %s failed", path);
}

/* Local. Unlink path if it exists and commit that (fsync the directory),
 * so the blocks are freed before the next timed write. */
static mpl_status remove_durably(const char *path)
{
    if (unlink(path) != 0) return MPL_OK; /* nothing there */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return mpl_err(MPL_ERR_IO, "cannot open directory %s", dir);
    (void)fsync(fd);
    close(fd);
    return MPL_OK;
}

/* Local. What `dd bs=4M conv=fsync` does: n_bytes in 4 MiB write() calls
 * from src (cycled through; the data is not zero), then fsync. */
static mpl_status raw_write(const char *path, const unsigned char *src, size_t src_bytes,
                            int64_t n_bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return mpl_err(MPL_ERR_IO, "cannot create %s", path);
    mpl_status st = MPL_OK;
    size_t at = 0;
    for (int64_t done = 0; done < n_bytes && st == MPL_OK;) {
        size_t k = RAW_BLOCK;
        if ((int64_t)k > n_bytes - done) k = (size_t)(n_bytes - done);
        if (k > src_bytes - at) k = src_bytes - at;
        ssize_t w = write(fd, src + at, k);
        if (w <= 0) st = mpl_err(MPL_ERR_IO, "write %s failed", path);
        done += w;
        at = (at + (size_t)w) % src_bytes;
    }
    if (st == MPL_OK && fsync(fd) != 0) st = mpl_err(MPL_ERR_IO, "fsync %s failed", path);
    close(fd);
    return st;
}

/* Local. What `dd if=path of=/dev/null bs=4M` does: read() into one buffer. */
static mpl_status raw_read(const char *path, unsigned char *buf)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mpl_err(MPL_ERR_IO, "cannot open %s", path);
    ssize_t r;
    while ((r = read(fd, buf, RAW_BLOCK)) > 0) {
    }
    close(fd);
    return r == 0 ? MPL_OK : mpl_err(MPL_ERR_IO, "read %s failed", path);
}

typedef struct bench {
    mpl_comm *w;
    const char *path, *raw_path;
    const mpl_slab_layout *lay;
    float *p, *m, *v;
    unsigned char *raw_buf;
    int64_t file_bytes;  /* of the checkpoint; the raw file gets as many */
    int parallel;        /* the writer in use */
} bench;

/* Collective on b->w: op `op` once; the slowest rank's seconds (the raw
 * operations run on rank 0 alone). */
static mpl_status time_op(bench *b, int op, double *secs)
{
    mpl_ckpt_state s = {1, 0, 1, 0};
    mpl_ckpt_meta meta = {"[bench]\n", mpl_comm_size(b->w), 1, mpl_comm_size(b->w),
                          mpl_build_info()};
    int root = mpl_comm_rank(b->w) == 0;
    mpl_status st = MPL_OK;
    if (root && op == OP_LOAD_COLD) st = evict(b->path);
    if (root && op == OP_RAW_READ_COLD) st = evict(b->raw_path);
    /* Writes go to a new file, as dd's and a training run's do: freeing the
     * previous run's blocks (unlink, discard) is not part of the timing. */
    if (root && (op == OP_SAVE || op == OP_RAW_WRITE))
        st = remove_durably(op == OP_SAVE ? b->path : b->raw_path);
    MPL_CHECK(mpl_comm_agree(b->w, &st));
    MPL_CHECK(mpl_comm_barrier(b->w));
    double t0 = mpl_now();
    if (op == OP_SAVE) {
        st = mpl_ckpt_save(b->w, b->path, b->lay, b->p, b->m, b->v, &s, &meta);
    } else if (op == OP_LOAD || op == OP_LOAD_COLD) {
        st = mpl_ckpt_load(b->w, b->path, b->lay, b->p, b->m, b->v, &s, NULL);
    } else if (root && op == OP_RAW_WRITE) {
        st = raw_write(b->raw_path, (const unsigned char *)b->p,
                       (size_t)b->lay->n_elems * sizeof(float), b->file_bytes);
    } else if (root) {
        st = raw_read(b->raw_path, b->raw_buf);
    }
    int64_t ns = (int64_t)llround((mpl_now() - t0) * 1e9);
    MPL_CHECK(mpl_comm_agree(b->w, &st));
    MPL_CHECK(mpl_comm_allreduce_max_i64(b->w, &ns, 1));
    *secs = (double)ns * 1e-9;
    if (op == OP_SAVE && root) {
        struct stat sb;
        if (stat(b->path, &sb) == 0) b->file_bytes = (int64_t)sb.st_size;
    }
    return MPL_OK;
}

/* Collective on b->w: the warmup and `reps` timed runs; each run writes
 * (save and raw write, their order alternating between runs so neither
 * always follows the other), then reads what it wrote back from the page
 * cache and, with cold, after dropping it from the cache. t[op][rep]. */
static mpl_status run_reps(bench *b, int reps, int cold, double t[N_OPS][BENCH_REPS_MAX])
{
    for (int r = 0; r <= reps; r++) { /* run 0 is the untimed warmup */
        double x[N_OPS] = {0};
        int order[N_OPS] = {OP_SAVE, OP_RAW_WRITE, OP_LOAD, OP_RAW_READ, OP_LOAD_COLD,
                            OP_RAW_READ_COLD};
        if (r % 2) {
            order[0] = OP_RAW_WRITE;
            order[1] = OP_SAVE;
        }
        for (int k = 0; k < N_OPS; k++)
            if (cold || (order[k] != OP_LOAD_COLD && order[k] != OP_RAW_READ_COLD))
                MPL_CHECK(time_op(b, order[k], &x[order[k]]));
        if (r > 0)
            for (int op = 0; op < N_OPS; op++) t[op][r - 1] = x[op];
    }
    return MPL_OK;
}

static double median(const double *x, int n)
{
    double s[BENCH_REPS_MAX];
    memcpy(s, x, (size_t)n * sizeof *x);
    qsort(s, (size_t)n, sizeof *s, cmp_f64);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* One row per run and operation (its pair's raw reference beside it), then
 * '#' lines with the medians over the runs. */
static void print_results(const bench *b, int reps, int cold, double t[N_OPS][BENCH_REPS_MAX])
{
    double mb = (double)b->file_bytes / 1e6;
    const char *writer = b->parallel ? "parallel" : "serial";
    int ranks = mpl_comm_size(b->w);
    printf("# %s\n# ranks=%d writer=%s file=%s (%.1f MB) tensors=%d x (%d, 1024) fp32 x 3 (params, "
           "m, v) runs=%d (+1 warmup) cold=%d; times are the slowest rank's; ratio = mb_per_s / "
           "ref_mb_per_s of the same run\n",
           mpl_build_info(), ranks, writer, b->path, mb, b->lay->n_tensors, BENCH_ROWS, reps, cold);
    printf("op,writer,ranks,file_mb,run,seconds,mb_per_s,ref,ref_seconds,ref_mb_per_s,ratio\n");
    for (int r = 0; r < reps; r++)
        for (int op = 0; op < N_OPS; op += 2) {
            if (!cold && op == OP_LOAD_COLD) continue;
            printf("%s,%s,%d,%.1f,%d,%.4f,%.1f,%s,%.4f,%.1f,%.3f\n", op_name[op], writer, ranks, mb,
                   r + 1, t[op][r], mb / t[op][r], op_name[op + 1], t[op + 1][r],
                   mb / t[op + 1][r], t[op + 1][r] / t[op][r]);
        }
    for (int op = 0; op < N_OPS; op += 2) {
        if (!cold && op == OP_LOAD_COLD) continue;
        double ratio[BENCH_REPS_MAX];
        for (int r = 0; r < reps; r++) ratio[r] = t[op + 1][r] / t[op][r];
        printf("# median over %d runs: %s %.1f MB/s, %s %.1f MB/s, ratio %.3f\n", reps,
               op_name[op], mb / median(t[op], reps), op_name[op + 1],
               mb / median(t[op + 1], reps), median(ratio, reps));
    }
}

int mpl_cmd_bench_ckpt(int argc, char **argv)
{
    mpl_cli cli_;
    const mpl_cli *cli = &cli_;
    mpl_cli_init(&cli_, "bench");
    long long mb = 100, reps = 3, cold = 1;
    const char *dir = ".";
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if ((r = mpl_cli_opt(argc, argv, &i, "--mb", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--mb", v, 4, 1 << 20, &mb);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--reps", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--reps", v, 1, BENCH_REPS_MAX, &reps);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--cold", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--cold", v, 0, 1, &cold);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--dir", &v))) {
            dir = v;
        } else {
            return mpl_cli_usage(cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(cli);
    }
    mpl_status st = MPL_OK;
    mpl_slab_layout lay = {0};
    static double t[N_OPS][BENCH_REPS_MAX];
    char path[4096], raw_path[4096];
    bench b = {NULL, path, raw_path, &lay, NULL, NULL, NULL, NULL, 0, 0};
    snprintf(path, sizeof path, "%s/bench-ckpt.h5", dir);
    snprintf(raw_path, sizeof raw_path, "%s/bench-raw.bin", dir);
    MPL_CHECK_GOTO(mpl_comm_create_world(&b.w), fail);
    b.parallel = mpl_ckpt_parallel_enabled(b.w);
    int n_tensors = (int)((mb + 3) / 4);
    for (int i = 0; i < n_tensors; i++) {
        char name[32];
        snprintf(name, sizeof name, "blk%d.w", i);
        MPL_CHECK_GOTO(mpl_slab_layout_add(&lay, name, 2, (int64_t[]){BENCH_ROWS, 1024}, 1, NULL),
                       fail);
    }
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &b.p), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &b.m), fail);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &b.v), fail);
    /* Page-aligned like dd's buffer: read() into a misaligned one copies
     * 3-4x slower here. */
    void *raw_buf = NULL;
    if (posix_memalign(&raw_buf, 4096, RAW_BLOCK) != 0)
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory");
    b.raw_buf = raw_buf;
    for (int64_t i = 0; i < lay.n_elems; i++) { /* not all zeros: no sparse-file shortcuts */
        b.p[i] = (float)(i % 1009) * 1e-3f;
        b.m[i] = (float)(i % 997) * 1e-6f;
        b.v[i] = (float)(i % 991) * 1e-9f;
    }
    b.file_bytes = 3 * lay.n_elems * (int64_t)sizeof(float); /* until the first save says */
    MPL_CHECK_GOTO(run_reps(&b, (int)reps, (int)cold, t), fail);
    if (cli->rank == 0) {
        print_results(&b, (int)reps, (int)cold, t);
        unlink(path);
        unlink(raw_path);
    }
fail:
    free(b.raw_buf);
    mpl_slab_free(&b.p);
    mpl_slab_free(&b.m);
    mpl_slab_free(&b.v);
    mpl_slab_layout_free(&lay);
    mpl_comm_destroy(&b.w);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(cli, mpl_cli_exit_code(st));
}
