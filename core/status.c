/* The thread-local error stack behind status.h: the only file-scope state
 * the library keeps, so that errors carry a trace without globals elsewhere. */
#include "status.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MPL_ERR_DEPTH 32
#define MPL_ERR_LEN 512

static _Thread_local char err_msgs[MPL_ERR_DEPTH][MPL_ERR_LEN + 256];
static _Thread_local char err_text[MPL_ERR_LEN];
static _Thread_local int err_n;

static const char *const status_names[MPL_STATUS_COUNT] = {
    "MPL_OK", "MPL_ERR_ARG", "MPL_ERR_CONFIG", "MPL_ERR_IO", "MPL_ERR_FORMAT",
    "MPL_ERR_NOMEM", "MPL_ERR_MPI", "MPL_ERR_H5", "MPL_ERR_CUDA",
    "MPL_ERR_NCCL", "MPL_ERR_UNSUPPORTED", "MPL_ERR_NUMERIC", "MPL_ERR_REMOTE",
    "MPL_ERR_INTERNAL",
};

const char *mpl_status_str(mpl_status st)
{
    if ((int)st < 0 || st >= MPL_STATUS_COUNT) return "MPL_ERR_UNKNOWN";
    return status_names[st];
}

mpl_status mpl_err_push(mpl_status st, const char *file, int line,
                        const char *func, const char *fmt, ...)
{
    char msg[MPL_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err_n == 0) snprintf(err_text, sizeof err_text, "%s", msg);
    if (err_n < MPL_ERR_DEPTH) {
        const char *base = strrchr(file, '/');
        snprintf(err_msgs[err_n], sizeof err_msgs[err_n], "%s:%d %s(): %s",
                 base ? base + 1 : file, line, func, msg);
        err_n++;
    }
    return st;
}

void mpl_err_clear(void) { err_n = 0; err_text[0] = '\0'; }
int mpl_err_count(void) { return err_n; }
const char *mpl_err_get(int i) { return (i >= 0 && i < err_n) ? err_msgs[i] : NULL; }
const char *mpl_err_cause(void) { return err_text; }

void mpl_err_print(FILE *f, const char *prefix)
{
    for (int i = 0; i < err_n; i++) fprintf(f, "%s%s\n", prefix, err_msgs[i]);
}

void mpl_assert_fail(const char *cond, const char *file, int line, const char *func)
{
    fprintf(stderr, "multipole: internal error: assertion '%s' failed at %s:%d in %s()\n",
            cond, file, line, func);
    fflush(stderr);
    abort();
}
