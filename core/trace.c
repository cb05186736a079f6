/* Span recording for core/trace.h: one growing array per process. */
#include "trace.h"

#include <stdlib.h>
#include <time.h>

typedef struct span {
    double t0, t1;
    const char *name, *cat;
    int idx, tid;
} span;

static struct {
    int on, pid;
    double origin;
    span *ev;
    int64_t n, cap, max, dropped;
} tr;

static double clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mpl_status mpl_trace_start(int pid, int64_t max_events)
{
    if (max_events < 1) return mpl_err(MPL_ERR_ARG, "trace: max_events %lld < 1", (long long)max_events);
    free(tr.ev);
    tr.ev = NULL;
    tr.n = tr.cap = tr.dropped = 0;
    tr.max = max_events;
    tr.pid = pid;
    tr.origin = clock_s();
    tr.on = 1;
    return MPL_OK;
}

int mpl_trace_on(void) { return tr.on; }

double mpl_trace_now(void) { return tr.on ? clock_s() : 0.0; }

void mpl_trace_span_to(double t0, double t1, const char *name, int idx, const char *cat, int tid)
{
    if (!tr.on) return;
    if (tr.n == tr.max) {
        tr.dropped++;
        return;
    }
    if (tr.n == tr.cap) {
        int64_t cap = tr.cap ? 2 * tr.cap : 4096;
        if (cap > tr.max) cap = tr.max;
        span *p = realloc(tr.ev, (size_t)cap * sizeof *p);
        if (!p) { /* keep what we have; the rest counts as dropped */
            tr.max = tr.n;
            tr.dropped++;
            return;
        }
        tr.ev = p;
        tr.cap = cap;
    }
    tr.ev[tr.n++] = (span){t0, t1 > t0 ? t1 : t0, name, cat, idx, tid};
}

void mpl_trace_span(double t0, const char *name, int idx, const char *cat, int tid)
{
    if (tr.on) mpl_trace_span_to(t0, clock_s(), name, idx, cat, tid);
}

mpl_status mpl_trace_finish(FILE *f, int64_t *n_dropped)
{
    mpl_status st = MPL_OK;
    for (int64_t i = 0; f && i < tr.n && st == MPL_OK; i++) {
        const span *s = &tr.ev[i];
        char idx[24] = "";
        if (s->idx >= 0) snprintf(idx, sizeof idx, " %d", s->idx);
        if (fprintf(f, "%s{\"name\":\"%s%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                    "\"pid\":%d,\"tid\":%d}", i ? ",\n" : "", s->name, idx, s->cat,
                    (s->t0 - tr.origin) * 1e6, (s->t1 - s->t0) * 1e6, tr.pid, s->tid) < 0)
            st = mpl_err(MPL_ERR_IO, "trace: write failed");
    }
    if (n_dropped) *n_dropped = tr.dropped;
    free(tr.ev);
    tr.ev = NULL;
    tr.n = tr.cap = 0;
    tr.on = 0;
    return st;
}
