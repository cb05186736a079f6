/* `multipole plot RUN_DIR`: read <run_dir>/metrics.csv (train_loop.h has
 * the columns), smooth it, and let gnuplot draw loss.png (training loss,
 * raw and smoothed, and validation loss against tokens seen) and
 * throughput.png (tokens/s and MFU against tokens seen). The data gnuplot
 * reads is written by this program, so the plot does not depend on the
 * CSV's column order, and older metrics files (without mfu, val_loss and
 * bad) still plot. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "io/rundir.h"

static const char *const plot_help =
    "usage: multipole plot RUN_DIR [--out DIR] [--smooth N]\n"
    "\n"
    "Draw <run_dir>/metrics.csv with gnuplot (package gnuplot-nox):\n"
    "  loss.png        training loss (each step, and its mean over a centred\n"
    "                  window of N steps, default 20) and validation loss\n"
    "                  (eval_every) against tokens trained, in nats per token;\n"
    "                  skipped (non-finite) steps are marked on the x axis\n"
    "  throughput.png  training tokens/s (left axis) and MFU in % (right axis, the\n"
    "                  same centred mean) against tokens trained\n"
    "  --out DIR       where to write them (default: RUN_DIR; made if missing)\n";

enum { C_STEP, C_TOKENS, C_LOSS, C_TPS, C_MFU, C_VAL, C_BAD, C_N };
static const char *const col_names[C_N] = {"step", "tokens", "loss", "tok_per_s",
                                           "mfu", "val_loss", "bad"};

/* Column positions of the header line, -1 when absent. */
static void header_columns(char *line, int *pos)
{
    for (int c = 0; c < C_N; c++) pos[c] = -1;
    int k = 0;
    for (char *tok = strtok(line, ",\r\n"); tok; tok = strtok(NULL, ",\r\n"), k++)
        for (int c = 0; c < C_N; c++)
            if (!strcmp(tok, col_names[c])) pos[c] = k;
}

/* Fields of a data line (empty fields stay empty strings). */
static int split_fields(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = '\0';
        p = comma + 1;
    }
    return n;
}

static double field(char **f, int n, int pos)
{
    if (pos < 0 || pos >= n || f[pos][0] == '\0') return NAN;
    char *end;
    double v = strtod(f[pos], &end);
    return end == f[pos] ? NAN : v;
}

/* The rows of metrics.csv that plot needs. */
typedef struct series {
    double *v[C_N];
    long n, cap;
} series;

static int series_push(series *s, const double *row)
{
    if (s->n == s->cap) {
        long cap = s->cap ? 2 * s->cap : 1024;
        for (int c = 0; c < C_N; c++) {
            double *p = realloc(s->v[c], (size_t)cap * sizeof *p);
            if (!p) return 0;
            s->v[c] = p;
        }
        s->cap = cap;
    }
    for (int c = 0; c < C_N; c++) s->v[c][s->n] = row[c];
    s->n++;
    return 1;
}

static void series_free(series *s)
{
    for (int c = 0; c < C_N; c++) free(s->v[c]);
}

/* Mean of the finite x[j], |j - i| <= h (a centred window: no lag). */
static double window_mean(const double *x, long n, long i, long h)
{
    double sum = 0;
    long k = 0;
    for (long j = i - h < 0 ? 0 : i - h; j <= i + h && j < n; j++)
        if (isfinite(x[j])) sum += x[j], k++;
    return k ? sum / (double)k : NAN;
}

static mpl_status read_metrics(const char *csv, series *s, int *have_mfu)
{
    FILE *in = fopen(csv, "r");
    if (!in) return mpl_err(MPL_ERR_IO, "cannot open %s: %s (is this a run directory?)", csv,
                            strerror(errno));
    mpl_status st = MPL_OK;
    char line[4096];
    int pos[C_N];
    if (!fgets(line, sizeof line, in)) {
        st = mpl_err(MPL_ERR_FORMAT, "%s is empty", csv);
        goto done;
    }
    header_columns(line, pos);
    if (pos[C_TOKENS] < 0 || pos[C_LOSS] < 0) {
        st = mpl_err(MPL_ERR_FORMAT, "%s: the header has no 'tokens' and 'loss' columns", csv);
        goto done;
    }
    *have_mfu = pos[C_MFU] >= 0;
    while (fgets(line, sizeof line, in)) {
        char *f[32];
        int n = split_fields(line, f, 32);
        if (n > 0 && !strcmp(f[0], "step")) continue; /* a repeated header */
        double row[C_N];
        for (int c = 0; c < C_N; c++) row[c] = field(f, n, pos[c]);
        if (isnan(row[C_TOKENS])) continue;
        if (!series_push(s, row)) {
            st = mpl_err(MPL_ERR_NOMEM, "out of memory reading %s", csv);
            goto done;
        }
    }
    if (s->n == 0) st = mpl_err(MPL_ERR_FORMAT, "%s has no data rows yet", csv);
done:
    fclose(in);
    return st;
}

/* metrics.csv -> dat: tokens loss loss_mean tps tps_mean mfu%_mean val bad
 * ("nan" where missing); *n_val evaluations, *n_bad skipped steps. */
static mpl_status convert(const char *csv, const char *dat, int smooth, long *n_rows,
                          long *n_val, long *n_bad, int *have_mfu)
{
    series s = {{0}, 0, 0};
    *n_rows = *n_val = *n_bad = 0;
    *have_mfu = 0;
    MPL_CHECK(read_metrics(csv, &s, have_mfu));
    FILE *out = fopen(dat, "w");
    if (!out) {
        series_free(&s);
        return mpl_err(MPL_ERR_IO, "cannot write %s: %s", dat, strerror(errno));
    }
    const long h = smooth / 2;
    for (long i = 0; i < s.n; i++) {
        double loss = s.v[C_LOSS][i], val = s.v[C_VAL][i];
        int bad = s.v[C_BAD][i] == 1 || !isfinite(loss);
        fprintf(out, "%.9g %.9g %.9g %.9g %.9g %.9g %.9g %d\n", s.v[C_TOKENS][i],
                isfinite(loss) ? loss : NAN, window_mean(s.v[C_LOSS], s.n, i, h),
                s.v[C_TPS][i], window_mean(s.v[C_TPS], s.n, i, h),
                100 * window_mean(s.v[C_MFU], s.n, i, h), val, bad);
        if (isfinite(val)) (*n_val)++;
        if (bad) (*n_bad)++;
    }
    *n_rows = s.n;
    series_free(&s);
    if (fclose(out) != 0) return mpl_err(MPL_ERR_IO, "cannot write %s", dat);
    return MPL_OK;
}

/* The gnuplot program for both figures. */
static void write_script(FILE *g, const char *dat, const char *dir, const char *title,
                         long n_val, long n_bad, int have_mfu, int smooth)
{
    fprintf(g, "set datafile missing 'nan'\n"
               "set terminal pngcairo size 1000,600 enhanced font 'Sans,11'\n"
               "set grid\nset key top right box opaque\n"
               "set xlabel 'tokens trained'\nset format x '%%.1s%%c'\n");
    fprintf(g, "set output '%s/loss.png'\n", dir);
    fprintf(g, "set title \"%s: loss\" noenhanced\nset ylabel 'loss (nats per token)'\n", title);
    fprintf(g, "plot '%s' using 1:2 with lines lc rgb '#b0c4de' lw 1 title 'train (each step)', \\\n"
               "     '' using 1:3 with lines lc rgb '#1f4e99' lw 2.5 title 'train (mean of %d steps)'",
            dat, smooth);
    if (n_bad > 0)
        fprintf(g, ", \\\n     '' using 1:($8 > 0 ? $3 : 1/0) with points pt 9 ps 1.8 "
                   "lc rgb '#d62728' title 'skipped step (non-finite)'");
    if (n_val > 0)
        fprintf(g, ", \\\n     '' using 1:7 with linespoints pt 7 ps 1.2 lw 2.5 lc rgb '#e08000' "
                   "title 'validation'");
    fprintf(g, "\nset output '%s/throughput.png'\n", dir);
    fprintf(g, "set title \"%s: throughput\" noenhanced\nset ylabel 'tokens / s'\n"
               "set format y '%%g'\nset yrange [0:*]\n", title);
    if (have_mfu)
        fprintf(g, "set y2label 'MFU (%%)'\nset y2tics\nset ytics nomirror\nset y2range [0:*]\n");
    fprintf(g, "plot '%s' using 1:4 with lines lc rgb '#b0c4de' lw 1 title 'tokens/s', \\\n"
               "     '' using 1:5 with lines lc rgb '#1f4e99' lw 2.5 title 'tokens/s (mean)'",
            dat);
    if (have_mfu)
        fprintf(g, ", \\\n     '' using 1:6 axes x1y2 with lines lc rgb '#2ca02c' lw 2.5 "
                   "title 'MFU (mean, right axis)'");
    fprintf(g, "\n");
}

static mpl_status plot(const char *run, const char *dir, int smooth)
{
    mpl_status st = MPL_OK;
    char csv[4096], dat[4200], gp[4200];
    snprintf(csv, sizeof csv, "%s/metrics.csv", run);
    snprintf(dat, sizeof dat, "%s/.plot.dat", dir);
    snprintf(gp, sizeof gp, "%s/.plot.gp", dir);
    if (system("command -v gnuplot > /dev/null 2>&1") != 0)
        return mpl_err(MPL_ERR_UNSUPPORTED, "gnuplot is not installed: apt-get install gnuplot-nox "
                       "(scripts/deps.sh installs it)");
    if (strpbrk(dir, "'\"") || strpbrk(run, "'\""))
        return mpl_err(MPL_ERR_ARG, "%s: a path with a quote cannot be handed to gnuplot", dir);
    MPL_CHECK(mpl_rundir_make(dir));
    long n_rows = 0, n_val = 0, n_bad = 0;
    int have_mfu = 0;
    MPL_CHECK_GOTO(convert(csv, dat, smooth, &n_rows, &n_val, &n_bad, &have_mfu), done);
    FILE *g = fopen(gp, "w");
    if (!g) MPL_FAIL_GOTO(done, MPL_ERR_IO, "cannot write %s: %s", gp, strerror(errno));
    write_script(g, dat, dir, run, n_val, n_bad, have_mfu, smooth);
    if (fclose(g) != 0) MPL_FAIL_GOTO(done, MPL_ERR_IO, "cannot write %s", gp);
    char cmd[8600];
    snprintf(cmd, sizeof cmd, "gnuplot '%s'", gp);
    int rc = system(cmd);
    if (rc != 0) MPL_FAIL_GOTO(done, MPL_ERR_IO, "gnuplot failed on %s (exit %d)", gp, rc);
    printf("wrote %s/loss.png and %s/throughput.png (%ld steps, %ld evaluations, %ld skipped)\n",
           dir, dir, n_rows, n_val, n_bad);
done:
    unlink(dat);
    unlink(gp);
    return st;
}

int mpl_cmd_plot(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "plot");
    const char *run = NULL, *out = NULL;
    long long smooth = 20;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(plot_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--out", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "--out needs a directory");
            out = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--smooth", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "--smooth needs a number of steps");
            if (mpl_cli_parse_i64("--smooth", v, 1, 1000000, &smooth) != MPL_OK)
                return mpl_cli_arg_error(&cli);
        } else if (argv[i][0] == '-' || run) {
            return mpl_cli_usage(&cli, "unexpected argument '%s'", argv[i]);
        } else {
            run = argv[i];
        }
    }
    if (!run) return mpl_cli_usage(&cli, "no run directory given");
    int rc = MPL_EXIT_OK;
    if (cli.rank == 0 && plot(run, out ? out : run, (int)smooth) != MPL_OK)
        rc = mpl_cli_error(&cli, MPL_EXIT_USAGE);
    return mpl_cli_rank0_rc(&cli, rc);
}
