/* Run directory bookkeeping: latest pointer, atomic replace, pruning. */
#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

void mpl_rundir_ckpt_path(const char *dir, int64_t step, char *buf, size_t n)
{
    snprintf(buf, n, "%s/ckpt-%lld.h5", dir, (long long)step);
}

mpl_status mpl_rundir_make(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
        return mpl_err(MPL_ERR_ARG, "run directory path too long: %s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
            return mpl_err(MPL_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
        return mpl_err(MPL_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
    struct stat sb;
    if (stat(tmp, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return mpl_err(MPL_ERR_IO, "%s exists and is not a directory", tmp);
    return MPL_OK;
}

static int is_ckpt_name(const char *s, long long *step)
{
    char tail[8];
    return sscanf(s, "ckpt-%lld.%7s", step, tail) == 2 && strcmp(tail, "h5") == 0;
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

mpl_status mpl_rundir_list(const char *dir, int64_t **steps, int *n_out)
{
    *steps = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return MPL_OK;
        return mpl_err(MPL_ERR_IO, "cannot list %s: %s", dir, strerror(errno));
    }
    int64_t *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        if (!is_ckpt_name(e->d_name, &s)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *p = realloc(v, cap * sizeof *p);
            if (!p) {
                free(v);
                closedir(d);
                return mpl_err(MPL_ERR_NOMEM, "out of memory listing %s", dir);
            }
            v = p;
        }
        v[n++] = s;
    }
    closedir(d);
    qsort(v, n, sizeof *v, cmp_desc);
    *steps = v;
    *n_out = (int)n;
    return MPL_OK;
}

mpl_status mpl_rundir_commit(const char *dir, int64_t step, int64_t keep)
{
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/latest.tmp", dir);
    snprintf(dst, sizeof dst, "%s/latest", dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return mpl_err(MPL_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    int bad = fprintf(f, "ckpt-%lld.h5\n", (long long)step) < 0;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        mpl_status st = mpl_err(MPL_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return st;
    }
    MPL_CHECK(mpl_io_rename_durable(tmp, dst));

    /* Prune only after the pointer is durable: the newest `keep` stay. */
    int64_t *steps = NULL;
    int n = 0;
    MPL_CHECK(mpl_rundir_list(dir, &steps, &n));
    for (int i = (int)keep; i < n; i++) {
        if (steps[i] == step) continue;
        char p[4096];
        mpl_rundir_ckpt_path(dir, steps[i], p, sizeof p);
        unlink(p);
    }
    free(steps);
    return MPL_OK;
}
