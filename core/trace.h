/* A timeline of one process (`multipole train --trace FILE`): spans of
 * compute and communication recorded while tracing is on, written as Chrome
 * trace events ("ph": "X", microseconds; open in chrome://tracing or
 * Perfetto) with the rank as the process id and two tracks: tid 0 for what
 * the rank's main thread does (compute, and the time it blocks in a
 * collective or a wait), tid 1 for communication in flight (a posted
 * nonblocking exchange, from its post to the wait that completed it), so
 * overlap is the tid-1 span lying beside tid-0 compute.
 * Spans are recorded from the main thread only (outside OpenMP regions).
 * When tracing is off a span costs one branch. */
#ifndef MPL_TRACE_H
#define MPL_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "status.h"

enum { MPL_TRACE_MAIN = 0, MPL_TRACE_COMM = 1 };

/* Local. Start recording; times count from now (callers make "now" the
 * same instant on every rank with a barrier just before). pid: the rank.
 * At most max_events are kept (later ones are counted, not kept). */
mpl_status mpl_trace_start(int pid, int64_t max_events);
/* Local. Whether recording. */
int mpl_trace_on(void);
/* Local. The clock of spans (seconds, monotonic); 0 when off. */
double mpl_trace_now(void);
/* Local. One span [t0, now) named name (a string that outlives the trace,
 * with index idx >= 0 appended as " <idx>", -1 for none), of category cat
 * ("compute", "comm", "io"), on track tid. No-op when off. */
void mpl_trace_span(double t0, const char *name, int idx, const char *cat, int tid);
/* Local. The same with an explicit end time. */
void mpl_trace_span_to(double t0, double t1, const char *name, int idx, const char *cat,
                       int tid);
/* Local. Write the kept events as JSON objects, ",\n"-separated (no
 * enclosing array, so ranks' parts can be concatenated), to f (NULL:
 * nowhere); *n_dropped
 * receives the events past max_events. Stops recording and frees them. */
mpl_status mpl_trace_finish(FILE *f, int64_t *n_dropped);

#endif
