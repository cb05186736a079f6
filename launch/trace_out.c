/* launch/trace_out.h: one part file per rank, joined by rank 0, so no rank
 * sends its (possibly large) event list through MPI. */
#include "trace_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/trace.h"

/* Enough spans for long runs: 2^22 x 40 bytes per rank at most. */
#define TRACE_MAX_EVENTS ((int64_t)1 << 22)

static void part_path(char *buf, size_t n, const char *path, int rank)
{
    snprintf(buf, n, "%s.part%d", path, rank);
}

mpl_status mpl_trace_out_start(mpl_comm *world, const char *path)
{
    /* A path that cannot be written fails now, not after the run. */
    char part[4200];
    part_path(part, sizeof part, path, mpl_comm_rank(world));
    FILE *f = fopen(part, "wb");
    mpl_status st = f ? MPL_OK : mpl_err(MPL_ERR_IO, "--trace: cannot create %s", part);
    if (f) fclose(f);
    MPL_CHECK(mpl_comm_agree(world, &st));
    MPL_CHECK(mpl_comm_barrier(world));
    return mpl_trace_start(mpl_comm_rank(world), TRACE_MAX_EVENTS);
}

/* Local: rank 0 appends part file src to out (nonempty parts after the
 * first are preceded by a comma); *any = whether out holds an event. */
static mpl_status append_part(FILE *out, const char *src, int *any)
{
    FILE *in = fopen(src, "rb");
    if (!in) return mpl_err(MPL_ERR_IO, "trace: cannot read %s", src);
    char buf[1 << 16];
    size_t k;
    int first = 1;
    mpl_status st = MPL_OK;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) {
        if (first && *any) fputs(",\n", out);
        first = 0;
        *any = 1;
        if (fwrite(buf, 1, k, out) != k) {
            st = mpl_err(MPL_ERR_IO, "trace: write failed");
            break;
        }
    }
    if (ferror(in)) st = mpl_err(MPL_ERR_IO, "trace: read of %s failed", src);
    fclose(in);
    return st;
}

static mpl_status join_parts(const char *path, int size, int64_t dropped)
{
    char tmp[4200], part[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "wb");
    if (!out) return mpl_err(MPL_ERR_IO, "trace: cannot create %s", tmp);
    mpl_status st = MPL_OK;
    fprintf(out, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"dropped_events\":%lld},"
            "\"traceEvents\":[\n", (long long)dropped);
    int any = 0;
    for (int r = 0; r < size; r++) {
        /* Perfetto and chrome://tracing show these names on the tracks. */
        fprintf(out, "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":"
                "\"rank %d\"}},\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"name\":\"main\"}},\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":"
                "%d,\"tid\":1,\"args\":{\"name\":\"comm in flight\"}}", any ? ",\n" : "", r, r, r, r);
        any = 1;
    }
    for (int r = 0; r < size && st == MPL_OK; r++) {
        part_path(part, sizeof part, path, r);
        st = append_part(out, part, &any);
    }
    fputs("\n]}\n", out);
    if (fclose(out) != 0 && st == MPL_OK) st = mpl_err(MPL_ERR_IO, "trace: write of %s failed", tmp);
    if (st == MPL_OK && rename(tmp, path) != 0)
        st = mpl_err(MPL_ERR_IO, "trace: cannot rename %s to %s", tmp, path);
    if (st != MPL_OK) unlink(tmp);
    return st;
}

mpl_status mpl_trace_out_write(mpl_comm *world, const char *path)
{
    char part[4200];
    const int rank = mpl_comm_rank(world), size = mpl_comm_size(world);
    part_path(part, sizeof part, path, rank);
    int64_t dropped = 0;
    mpl_status st = MPL_OK;
    FILE *f = fopen(part, "wb");
    if (!f) {
        st = mpl_err(MPL_ERR_IO, "trace: cannot create %s", part);
        mpl_trace_finish(NULL, &dropped); /* stop recording all the same */
    } else {
        st = mpl_trace_finish(f, &dropped);
        if (fclose(f) != 0 && st == MPL_OK) st = mpl_err(MPL_ERR_IO, "trace: write of %s failed", part);
    }
    MPL_CHECK(mpl_comm_agree(world, &st));
    uint64_t n_drop = (uint64_t)dropped;
    MPL_CHECK(mpl_comm_allreduce_sum_u64(world, &n_drop, 1));
    dropped = (int64_t)n_drop;
    if (rank == 0) st = join_parts(path, size, dropped);
    MPL_CHECK(mpl_comm_agree(world, &st));
    unlink(part); /* joined; on a failure above it stays for a look */
    return MPL_OK;
}
