/* Progress lines: a bar rewritten in place on a terminal, plain lines
 * elsewhere (see progress.h). */
#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Under an MPI launcher a rank's stdout may be a pseudo-terminal that the
 * launcher forwards into a log file (Open MPI's mpirun does so), so
 * isatty() says nothing about where the text ends up: plain lines there. */
static int mpl_progress_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK",
                                       "SLURM_PROCID", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

void mpl_progress_init(mpl_progress *p, FILE *f, int quiet)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->quiet = quiet;
    const char *e = getenv("MPL_PROGRESS");
    if (e && !strcmp(e, "tty")) p->tty = 1;
    else if (e && !strcmp(e, "plain")) p->tty = 0;
    else p->tty = isatty(fileno(f)) && !mpl_progress_launched();
    p->t_last = mpl_now();
}

void mpl_progress_report(mpl_progress *p, int force, const char *fmt, ...)
{
    if (p->quiet) return;
    double now = mpl_now();
    /* Plain lines: the first only after plain_interval (a short job says
     * nothing), and a forced final one only after an earlier one. */
    int due = now - p->t_last >= (p->tty ? 0.1 : p->plain_interval);
    if (!due && !(force && (p->tty || p->shown))) return;
    va_list ap;
    va_start(ap, fmt);
    if (p->tty) {
        /* \r, the line, then clear what a longer previous line left. */
        fputc('\r', p->f);
        vfprintf(p->f, fmt, ap);
        fputs("\033[K", p->f);
        p->open_line = 1;
    } else {
        vfprintf(p->f, fmt, ap);
        fputc('\n', p->f);
    }
    va_end(ap);
    fflush(p->f);
    p->t_last = now;
    p->shown = 1;
}

void mpl_progress_end(mpl_progress *p)
{
    if (!p->open_line) return;
    fputc('\n', p->f);
    fflush(p->f);
    p->open_line = 0;
}

void mpl_progress_print(mpl_progress *p, const char *fmt, ...)
{
    mpl_progress_end(p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->f, fmt, ap);
    va_end(ap);
    fputc('\n', p->f);
    fflush(p->f);
}

void mpl_fmt_hms(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "-");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void mpl_fmt_bar(double frac, int width, char *buf, size_t n)
{
    if (n < 3) return;
    if (!(frac >= 0)) frac = 0;
    if (frac > 1) frac = 1;
    if ((size_t)width + 3 > n) width = (int)n - 3;
    int full = (int)(frac * width + 0.5);
    buf[0] = '[';
    for (int i = 0; i < width; i++) buf[1 + i] = i < full ? '#' : '.';
    buf[1 + width] = ']';
    buf[2 + width] = '\0';
}

void mpl_fmt_si(double v, char *buf, size_t n)
{
    static const char suffix[] = " kMGTPE";
    int k = 0;
    while (fabs(v) >= 999.5 && k < 6) {
        v /= 1000;
        k++;
    }
    if (k == 0) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, fabs(v) < 9.995 ? "%.2f%c" : fabs(v) < 99.95 ? "%.1f%c" : "%.0f%c", v,
                  suffix[k]);
}
