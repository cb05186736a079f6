/* Shared CLI plumbing: error reporting, option parsing, build info. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void mpl_cli_init(mpl_cli *cli, const char *cmd)
{
    memset(cli, 0, sizeof *cli);
    MPI_Comm_rank(MPI_COMM_WORLD, &cli->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &cli->world);
    if (gethostname(cli->host, sizeof cli->host) != 0) snprintf(cli->host, sizeof cli->host, "?");
    cli->host[sizeof cli->host - 1] = '\0';
    cli->cmd = cmd;
}

int mpl_cli_error(const mpl_cli *cli, int exit_code)
{
    const char *cause = mpl_err_cause();
    int remote = strncmp(cause, "rank ", 5) == 0 && strstr(cause, " failed (") != NULL;
    if (cli->rank == 0 || !remote) {
        if (cli->world > 1 && cli->rank != 0)
            fprintf(stderr, "[rank %d/%d %s] multipole: error: %s\n", cli->rank, cli->world,
                    cli->host, cause[0] ? cause : "unknown error");
        else
            fprintf(stderr, "multipole: error: %s\n", cause[0] ? cause : "unknown error");
        const char *tr = getenv("MPL_TRACE");
        if (tr && strcmp(tr, "0") != 0) mpl_err_print(stderr, "  at ");
    }
    fflush(stderr);
    mpl_err_clear();
    return exit_code;
}

int mpl_cli_arg_error(const mpl_cli *cli)
{
    if (cli->rank == 0) return mpl_cli_error(cli, MPL_EXIT_USAGE);
    mpl_err_clear();
    return MPL_EXIT_USAGE;
}

int mpl_cli_rank0_rc(const mpl_cli *cli, int rc)
{
    if (cli->world > 1) MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return rc;
}

int mpl_cli_usage(const mpl_cli *cli, const char *fmt, ...)
{
    if (cli->rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "multipole: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\nTry 'multipole %s --help'.\n", cli->cmd ? cli->cmd : "");
        va_end(ap);
    }
    return MPL_EXIT_USAGE;
}

int mpl_cli_exit_code(mpl_status st)
{
    switch (st) {
    case MPL_ERR_ARG:
    case MPL_ERR_CONFIG:
    case MPL_ERR_IO:
    case MPL_ERR_FORMAT:
    case MPL_ERR_UNSUPPORTED: return MPL_EXIT_USAGE;
    default: return MPL_EXIT_FAIL;
    }
}

int mpl_cli_opt(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') { /* --out=x */
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') return 0;
    if (*i + 1 >= argc) return -1;
    *value = argv[++*i];
    return 1;
}

mpl_status mpl_cli_parse_i64(const char *name, const char *s, long long lo, long long hi,
                             long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno)
        return mpl_err(MPL_ERR_ARG, "%s: '%s' is not a whole number", name, s);
    if (v < lo || v > hi)
        return mpl_err(MPL_ERR_ARG, "%s: %lld is outside [%lld, %lld]", name, v, lo, hi);
    *out = v;
    return MPL_OK;
}

mpl_status mpl_cli_parse_f64(const char *name, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno || !isfinite(v))
        return mpl_err(MPL_ERR_ARG, "%s: '%s' is not a number", name, s);
    if (v < lo || v > hi)
        return mpl_err(MPL_ERR_ARG, "%s: %g is outside [%g, %g]", name, v, lo, hi);
    *out = v;
    return MPL_OK;
}

mpl_status mpl_cli_ckpt_path(const char *arg, char *path, size_t n)
{
    struct stat sb;
    char ptr[4096];
    if (stat(arg, &sb) != 0)
        return mpl_err(MPL_ERR_IO, "cannot open checkpoint %s: %s", arg, strerror(errno));
    const char *slash = strrchr(arg, '/');
    const char *base = slash ? slash + 1 : arg;
    int dir = S_ISDIR(sb.st_mode);
    if (!dir && strcmp(base, "latest") != 0) {
        snprintf(path, n, "%s", arg);
        return MPL_OK;
    }
    /* ptr: the pointer file; dirlen: the length of its directory prefix */
    int dirlen = dir ? (int)strlen(arg) : (int)(base - arg);
    snprintf(ptr, sizeof ptr, dir ? "%s/latest" : "%s", arg);
    FILE *f = fopen(ptr, "r");
    if (!f)
        return mpl_err(MPL_ERR_IO, "%s: no checkpoint (no %s: %s); give a ckpt-<step>.h5 file",
                       arg, ptr, strerror(errno));
    char name[1024] = "";
    int ok = fgets(name, sizeof name, f) != NULL;
    fclose(f);
    name[strcspn(name, "\r\n")] = '\0';
    if (!ok || !name[0])
        return mpl_err(MPL_ERR_FORMAT, "%s is empty; give a ckpt-<step>.h5 file", ptr);
    if (dirlen == 0) snprintf(path, n, "%s", name);
    else snprintf(path, n, "%.*s%s%s", dirlen, arg, dir ? "/" : "", name);
    return MPL_OK;
}

#ifndef MPL_VERSION_STR
#define MPL_VERSION_STR "0.0.0"
#endif
#ifndef MPL_GIT_STR
#define MPL_GIT_STR "unknown"
#endif

const char *mpl_build_info(void)
{
    return "multipole " MPL_VERSION_STR " (git " MPL_GIT_STR ")"
#if MPL_BUILD_CUDA_EMU
           " cuda=emulated"
#elif MPL_BUILD_CUDA
           " cuda=yes"
#else
           " cuda=no"
#endif
#if MPL_BUILD_NCCL
           " nccl=yes"
#else
           " nccl=no"
#endif
#ifdef MPL_HDF5_PARALLEL
           " hdf5=parallel"
#else
           " hdf5=serial"
#endif
#if MPL_BUILD_SANITIZE
           " sanitize=yes"
#endif
        ;
}

double mpl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
