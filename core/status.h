/* Status codes, the thread-local error stack and the check macros.
 * Library code (core, attention, dist, io) reports failure by returning an
 * mpl_status and pushing a message here; only launch/ prints and exits.
 * The first message pushed is the cause, later ones are the call trace. */
#ifndef MPL_STATUS_H
#define MPL_STATUS_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mpl_status {
    MPL_OK = 0,
    MPL_ERR_ARG,         /* bad argument or value from the user            */
    MPL_ERR_CONFIG,      /* bad config key/value/file                      */
    MPL_ERR_IO,          /* file system: open, read, write, rename, fsync  */
    MPL_ERR_FORMAT,      /* a file exists but is not what we expect        */
    MPL_ERR_NOMEM,       /* allocation failed                              */
    MPL_ERR_MPI,         /* an MPI call failed                             */
    MPL_ERR_H5,          /* an HDF5 call failed                            */
    MPL_ERR_CUDA,        /* a CUDA call failed or no GPU                   */
    MPL_ERR_NCCL,        /* an NCCL call failed                            */
    MPL_ERR_UNSUPPORTED, /* valid request this build or backend cannot do  */
    MPL_ERR_NUMERIC,     /* non-finite values                              */
    MPL_ERR_REMOTE,      /* another rank failed (agreed through a collective) */
    MPL_ERR_INTERNAL,    /* our own bug                                    */
    MPL_STATUS_COUNT
} mpl_status;

/* Local. Stable short name of a status ("MPL_ERR_IO"). */
const char *mpl_status_str(mpl_status st);

/* Local. Push a formatted message; returns st so it can be returned. */
mpl_status mpl_err_push(mpl_status st, const char *file, int line,
                        const char *func, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Local. Forget all messages of this thread. */
void mpl_err_clear(void);
/* Local. Number of messages on the stack. */
int mpl_err_count(void);
/* Local. Message i (0 = the cause), "file:line func(): text"; NULL past end. */
const char *mpl_err_get(int i);
/* Local. Text only of the cause (message 0), or "" when empty. */
const char *mpl_err_cause(void);
/* Local. Print the whole stack, one line per entry, each with `prefix`. */
void mpl_err_print(FILE *f, const char *prefix);

/* mpl_err(MPL_ERR_ARG, "band w=%d must be >= 1", w): push and yield status. */
#define mpl_err(st, ...) mpl_err_push((st), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* Generic check: evaluate expr, compare with ok, on failure push the
 * library's message (msgexpr, a const char*) and return code. */
#define MPL_CHECK_GEN(expr, ok, code, msgexpr)                                  \
    do {                                                                         \
        __typeof__(expr) mpl_rc_ = (expr);                                       \
        if (mpl_rc_ != (ok)) {                                                   \
            (void)mpl_rc_;                                                       \
            return mpl_err_push((code), __FILE__, __LINE__, __func__, "%s: %s", \
                                #expr, (msgexpr));                               \
        }                                                                        \
    } while (0)

/* Propagate a status from one of our own calls, adding a trace line. */
#define MPL_CHECK(expr)                                                        \
    do {                                                                       \
        mpl_status mpl_st_ = (expr);                                           \
        if (mpl_st_ != MPL_OK)                                                 \
            return mpl_err_push(mpl_st_, __FILE__, __LINE__, __func__, "%s",   \
                                #expr);                                        \
    } while (0)

/* Same, but store into the local `st` and jump to `label` (one exit path). */
#define MPL_CHECK_GOTO(expr, label)                                            \
    do {                                                                       \
        st = (expr);                                                           \
        if (st != MPL_OK) {                                                    \
            mpl_err_push(st, __FILE__, __LINE__, __func__, "%s", #expr);       \
            goto label;                                                        \
        }                                                                      \
    } while (0)

/* Fail with a new message into `st`, then jump to `label`. */
#define MPL_FAIL_GOTO(label, code, ...)                                        \
    do {                                                                       \
        st = mpl_err((code), __VA_ARGS__);                                     \
        goto label;                                                            \
    } while (0)

/* Our own invariants only (never input validation): always compiled in. */
#define MPL_ASSERT(cond)                                                       \
    do {                                                                       \
        if (!(cond)) mpl_assert_fail(#cond, __FILE__, __LINE__, __func__);     \
    } while (0)
void mpl_assert_fail(const char *cond, const char *file, int line,
                     const char *func) __attribute__((noreturn));

/* Allocation that reports through the error stack. */
#define MPL_ALLOC(ptr, n_elems)                                                \
    do {                                                                       \
        (ptr) = calloc((size_t)(n_elems) ? (size_t)(n_elems) : 1, sizeof *(ptr)); \
        if (!(ptr))                                                            \
            return mpl_err(MPL_ERR_NOMEM, "out of memory allocating %zu bytes", \
                           (size_t)(n_elems) * sizeof *(ptr));                 \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
