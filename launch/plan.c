/* The memory plan (plan.h). The model's part comes from the same layout
 * function that allocates its buffers (core/model_acts.c), so the plan is
 * what will be allocated, not an estimate of it. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct item {
    const char *name;
    int64_t bytes;
} item;

enum { N_ITEMS = 8 };

static void items_of(const mpl_plan *p, item *it)
{
    const item all[N_ITEMS] = {
        {"parameters", p->model.params},       {"gradients", p->model.grads},
        {"optimizer state", p->optim},         {"activations", p->model.acts},
        {"attention state", p->model.attn_state}, {"workspace", p->model.work},
        {"attention work", p->model.attn_work},   {"communication", p->comm},
    };
    memcpy(it, all, sizeof all);
}

mpl_status mpl_plan_make(const mpl_config *cfg, const mpl_model *m, int world_size, int dp_size,
                         int64_t n_tok, mpl_plan *out)
{
    memset(out, 0, sizeof *out);
    const mpl_attn_geom g = {cfg->batch, n_tok, 0, NULL};
    MPL_CHECK(mpl_model_plan(m, &g, &out->model));
    const int64_t shard = cfg->zero && dp_size > 1 ? dp_size : 1;
    out->optim = (2 * out->model.params + shard - 1) / shard;
    /* A large in-place all-reduce takes a temporary of up to the message
     * in the MPI library (Open MPI's ring and recursive doubling). */
    out->comm = world_size > 1 ? out->model.grads : 0;
    out->n_tok = n_tok;
    item it[N_ITEMS];
    items_of(out, it);
    for (int i = 0; i < N_ITEMS; i++) out->total += it[i].bytes;
    return MPL_OK;
}

/* A number from the first line of a file, or -1 ("max" or missing). */
static int64_t read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

static int64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : (int64_t)kb * 1024;
}

mpl_status mpl_plan_budget(const mpl_config *cfg, int node_ranks, int64_t *bytes, char *src,
                           size_t n_src)
{
    if (cfg->mem_limit > 0) {
        *bytes = (int64_t)(cfg->mem_limit * (double)(1LL << 30));
        snprintf(src, n_src, "mem_limit = %g GiB", cfg->mem_limit);
        return MPL_OK;
    }
    int64_t avail = mem_available();
    const char *what = "MemAvailable";
    /* A job under a cgroup limit (SLURM, containers) may use less. */
    const int64_t cg_max = read_number("/sys/fs/cgroup/memory.max");
    const int64_t cg_cur = read_number("/sys/fs/cgroup/memory.current");
    if (cg_max > 0 && cg_cur >= 0 && (avail < 0 || cg_max - cg_cur < avail))
        avail = cg_max - cg_cur, what = "the cgroup's memory.max";
    if (avail < 0) {
        *bytes = INT64_MAX;
        snprintf(src, n_src, "unknown: set mem_limit");
        return MPL_OK;
    }
    if (node_ranks < 1) node_ranks = 1;
    *bytes = avail / node_ranks;
    snprintf(src, n_src, "%s / %d rank%s on this node", what, node_ranks,
             node_ranks == 1 ? "" : "s");
    return MPL_OK;
}

int64_t mpl_plan_longest(const mpl_config *cfg, const mpl_model *m, int world_size, int sp,
                         int dp, int64_t budget)
{
    /* The plan grows with the chunk; find the longest chunk that fits. */
    mpl_plan p;
    int64_t lo = 0, hi = 1;
    while (hi < (1LL << 40)) {
        if (mpl_plan_make(cfg, m, world_size, dp, hi, &p) != MPL_OK || p.total > budget) break;
        lo = hi, hi *= 2;
    }
    mpl_err_clear();
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (mpl_plan_make(cfg, m, world_size, dp, mid, &p) == MPL_OK && p.total <= budget) lo = mid;
        else hi = mid;
    }
    mpl_err_clear();
    return lo * sp;
}

static void fmt_bytes(int64_t b, char *buf, size_t n)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

mpl_status mpl_plan_check(const mpl_config *cfg, const mpl_model *m, int world_size, int sp,
                          int dp, const mpl_plan *p, int64_t *longest)
{
    *longest = 0;
    if (p->total <= p->budget) return MPL_OK;
    item it[N_ITEMS];
    items_of(p, it);
    int big = 0;
    for (int i = 1; i < N_ITEMS; i++)
        if (it[i].bytes > it[big].bytes) big = i;
    *longest = mpl_plan_longest(cfg, m, world_size, sp, dp, p->budget);
    char need[32], have[32], bb[32];
    fmt_bytes(p->total, need, sizeof need);
    fmt_bytes(p->budget, have, sizeof have);
    fmt_bytes(it[big].bytes, bb, sizeof bb);
    char hint[256] = "";
    if (!strcmp(it[big].name, "activations") && strcmp(cfg->recompute, "layer") != 0)
        snprintf(hint, sizeof hint, "; recompute=layer keeps only each block's input");
    if (*longest >= sp)
        return mpl_err(MPL_ERR_CONFIG,
                       "the memory plan of a rank needs %s but %s may be used (%s); the biggest "
                       "item is %s (%s)%s; the longest seq_len that fits is %lld (seq_len=%lld; "
                       "see `multipole plan`)",
                       need, have, p->budget_src, it[big].name, bb, hint, (long long)*longest,
                       (long long)cfg->seq_len);
    return mpl_err(MPL_ERR_CONFIG,
                   "the memory plan of a rank needs %s but %s may be used (%s); the biggest item "
                   "is %s (%s)%s; no seq_len fits this model and batch",
                   need, have, p->budget_src, it[big].name, bb, hint);
}

void mpl_plan_print(FILE *f, const mpl_config *cfg, const mpl_plan *p)
{
    item it[N_ITEMS];
    items_of(p, it);
    char b[32];
    fprintf(f, "memory plan per rank (%lld x %lld tokens, recompute=%s, chunk_tokens=%lld):\n",
            (long long)cfg->batch, (long long)p->n_tok, cfg->recompute,
            (long long)cfg->chunk_tokens);
    for (int i = 0; i < N_ITEMS; i++) {
        fmt_bytes(it[i].bytes, b, sizeof b);
        fprintf(f, "  %-16s %12s\n", it[i].name, b);
    }
    fmt_bytes(p->total, b, sizeof b);
    fprintf(f, "  %-16s %12s", "total", b);
    if (p->budget > 0 && p->budget < INT64_MAX) {
        char h[32];
        fmt_bytes(p->budget, h, sizeof h);
        fprintf(f, " of %s (%s)", h, p->budget_src);
    }
    fprintf(f, "\n");
}

int64_t mpl_plan_rss_now(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long long size = 0, rss = -1;
    if (fscanf(f, "%lld %lld", &size, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : (int64_t)rss * (int64_t)sysconf(_SC_PAGESIZE);
}

int64_t mpl_plan_rss_peak(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}
