/* Progress output of long commands (train, prepare, eval): on a terminal
 * one line rewritten in place with \r (a bar, numbers, ETA); otherwise
 * (a log file on a cluster, a pipe, mpirun's forwarding) plain lines, one
 * per report. Other output goes through mpl_progress_print so it never
 * lands in the middle of a bar. Used on one rank (rank 0). */
#ifndef MPL_PROGRESS_H
#define MPL_PROGRESS_H

#include <stddef.h>
#include <stdio.h>

typedef struct mpl_progress {
    FILE *f;
    int tty;        /* 1: rewrite one line in place */
    int quiet;      /* 1: progress reports are dropped (prints still appear) */
    int open_line;  /* a bar is on screen without its newline */
    int shown;      /* a report has been shown */
    double t_last;  /* when the last report was shown */
    double plain_interval; /* plain lines at most this often, seconds (0: every report) */
} mpl_progress;

/* Local. Progress on f; tty is isatty(f) outside an MPI launcher (whose
 * forwarded output may sit behind a pseudo-terminal), unless the
 * environment sets MPL_PROGRESS=tty or MPL_PROGRESS=plain. */
void mpl_progress_init(mpl_progress *p, FILE *f, int quiet);
/* Local. One progress report: on a tty it replaces the current line
 * (drawn at most 10 times a second unless force), else it is a line. */
void mpl_progress_report(mpl_progress *p, int force, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Local. An ordinary line (the bar, if any, is ended first). */
void mpl_progress_print(mpl_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Local. End the bar line, if one is open. */
void mpl_progress_end(mpl_progress *p);

/* Local. "m:ss" or "h:mm:ss" of s seconds ("-" when s is not finite). */
void mpl_fmt_hms(double s, char *buf, size_t n);
/* Local. "[#####.....]" of frac in [0, 1], width characters inside. */
void mpl_fmt_bar(double frac, int width, char *buf, size_t n);
/* Local. 12345 -> "12.3k", 1.2e7 -> "12.0M" (3 significant digits). */
void mpl_fmt_si(double v, char *buf, size_t n);

#endif
