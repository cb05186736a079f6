/* MPI implementation of the communicator interface (host buffers). */
#include "comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/trace.h"

struct mpl_comm {
    MPI_Comm mc;
    MPI_Comm reversed;     /* same group, rank order reversed (suffix scans) */
    int rank, size;
    int max_count;         /* elements per MPI call: INT_MAX, lower for tests */
    mpl_comm_bytes bytes;
};

static const char *mpi_msg(int rc)
{
    static _Thread_local char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "unknown MPI error";
    return buf;
}

#define MPL_MPI(expr) MPL_CHECK_GEN((expr), MPI_SUCCESS, MPL_ERR_MPI, mpi_msg(mpl_rc_))

/* A blocking call's span on the rank's main track (core/trace.h). */
#define TRACE_BEGIN() const double tr0_ = mpl_trace_now()
#define TRACE_END(name) mpl_trace_span(tr0_, (name), -1, "comm", MPL_TRACE_MAIN)

static mpl_status comm_wrap(MPI_Comm mc, mpl_comm **out)
{
    mpl_comm *c;
    MPL_ALLOC(c, 1);
    c->mc = mc;
    c->reversed = MPI_COMM_NULL;
    c->max_count = INT_MAX;
    /* Tests set a small limit so the split paths run on small buffers;
     * every rank of a job sees the same environment. */
    const char *e = getenv("MPL_COMM_MAX_COUNT");
    if (e && atol(e) > 0 && atol(e) < INT_MAX) c->max_count = (int)atol(e);
    MPI_Comm_rank(mc, &c->rank);
    MPI_Comm_size(mc, &c->size);
    *out = c;
    return MPL_OK;
}

mpl_status mpl_comm_create_world(mpl_comm **out)
{
    MPI_Comm mc;
    MPL_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &mc));
    /* Errors come back as codes, so we can report them with context. */
    MPL_MPI(MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN));
    return comm_wrap(mc, out);
}

mpl_status mpl_comm_split(mpl_comm *parent, int color, int key, mpl_comm **out)
{
    MPI_Comm mc;
    MPL_MPI(MPI_Comm_split(parent->mc, color, key, &mc));
    MPL_MPI(MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN));
    return comm_wrap(mc, out);
}

mpl_status mpl_comm_node_rank(mpl_comm *c, int *rank, int *n)
{
    MPI_Comm node;
    MPL_MPI(MPI_Comm_split_type(c->mc, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    int rc = MPI_Comm_size(node, n);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(node, rank);
    MPI_Comm_free(&node);
    MPL_MPI(rc);
    return MPL_OK;
}

mpl_status mpl_comm_node_size(mpl_comm *c, int *n)
{
    int r;
    MPL_CHECK(mpl_comm_node_rank(c, &r, n));
    return MPL_OK;
}

void mpl_comm_destroy(mpl_comm **c)
{
    if (!c || !*c) return;
    MPI_Comm_free(&(*c)->mc);
    if ((*c)->reversed != MPI_COMM_NULL) MPI_Comm_free(&(*c)->reversed);
    free(*c);
    *c = NULL;
}

int mpl_comm_rank(const mpl_comm *c) { return c->rank; }
int mpl_comm_size(const mpl_comm *c) { return c->size; }
void *mpl_comm_mpi_handle(mpl_comm *c) { return &c->mc; }

/* Split big reductions into INT_MAX-element pieces (MPI counts are int). */
static mpl_status allreduce(mpl_comm *c, void *buf, int64_t n_elems, MPI_Datatype t,
                            size_t elem_bytes, MPI_Op op)
{
    TRACE_BEGIN();
    char *p = buf;
    while (n_elems > 0) {
        int n = n_elems > c->max_count ? c->max_count : (int)n_elems;
        MPL_MPI(MPI_Allreduce(MPI_IN_PLACE, p, n, t, op, c->mc));
        p += (size_t)n * elem_bytes;
        n_elems -= n;
    }
    { TRACE_END("allreduce"); return MPL_OK; }
}

mpl_status mpl_comm_allreduce_sum_f32(mpl_comm *c, float *buf, int64_t n_elems)
{
    c->bytes.allreduce += n_elems * (int64_t)sizeof(float);
    return allreduce(c, buf, n_elems, MPI_FLOAT, sizeof(float), MPI_SUM);
}

mpl_status mpl_comm_allreduce_sum_f64(mpl_comm *c, double *buf, int64_t n_elems)
{
    c->bytes.allreduce += n_elems * (int64_t)sizeof(double);
    return allreduce(c, buf, n_elems, MPI_DOUBLE, sizeof(double), MPI_SUM);
}

mpl_status mpl_comm_allreduce_max_i64(mpl_comm *c, int64_t *buf, int64_t n_elems)
{
    return allreduce(c, buf, n_elems, MPI_INT64_T, sizeof(int64_t), MPI_MAX);
}

mpl_status mpl_comm_allreduce_sum_u64(mpl_comm *c, uint64_t *buf, int64_t n_elems)
{
    c->bytes.allreduce += n_elems * (int64_t)sizeof(uint64_t);
    return allreduce(c, buf, n_elems, MPI_UINT64_T, sizeof(uint64_t), MPI_SUM);
}

mpl_status mpl_comm_allreduce_max_f32(mpl_comm *c, float *buf, int64_t n_elems)
{
    c->bytes.allreduce += n_elems * (int64_t)sizeof(float);
    return allreduce(c, buf, n_elems, MPI_FLOAT, sizeof(float), MPI_MAX);
}

mpl_status mpl_comm_bcast(mpl_comm *c, void *buf, size_t n_bytes, int root)
{
    TRACE_BEGIN();
    char *p = buf;
    if (c->rank == root) c->bytes.bcast += (int64_t)n_bytes;
    while (n_bytes > 0) {
        int n = n_bytes > (size_t)c->max_count ? c->max_count : (int)n_bytes;
        MPL_MPI(MPI_Bcast(p, n, MPI_BYTE, root, c->mc));
        p += n;
        n_bytes -= (size_t)n;
    }
    { TRACE_END("bcast"); return MPL_OK; }
}

mpl_status mpl_comm_barrier(mpl_comm *c)
{
    TRACE_BEGIN();
    MPL_MPI(MPI_Barrier(c->mc));
    { TRACE_END("barrier"); return MPL_OK; }
}

mpl_status mpl_comm_barrier_idle(mpl_comm *c)
{
    TRACE_BEGIN();
    MPI_Request r;
    int done = 0;
    MPL_MPI(MPI_Ibarrier(c->mc, &r));
    for (;;) {
        MPL_MPI(MPI_Test(&r, &done, MPI_STATUS_IGNORE));
        if (done) { TRACE_END("barrier"); return MPL_OK; }
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
}

/* The agreement both mpl_comm_agree* share: v[0] = the worst status of
 * any rank, v[1] = minus the lowest failing rank (INT64_MIN when every
 * rank is fine). On an MPI failure *st says so and 0 is returned. */
static int agree_pair(mpl_comm *c, mpl_status *st, int64_t v[2])
{
    v[0] = (int64_t)*st;
    v[1] = *st != MPL_OK ? -(int64_t)c->rank : INT64_MIN;
    TRACE_BEGIN();
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT64_T, MPI_MAX, c->mc);
    TRACE_END("agree");
    if (rc == MPI_SUCCESS) return 1;
    *st = mpl_err(MPL_ERR_MPI, "agreeing on status: %s", mpi_msg(rc));
    return 0;
}

mpl_status mpl_comm_agree(mpl_comm *c, mpl_status *st)
{
    int64_t v[2];
    if (!agree_pair(c, st, v)) return *st;
    /* Only the lowest failing rank keeps its message as the cause, so a
     * failure every rank hits alike (a bad config) is reported once. */
    /* v[1] is INT64_MIN when every rank is fine: negate only a rank */
    int64_t lowest = v[0] != MPL_OK ? -v[1] : -1;
    if (v[0] != MPL_OK && (*st == MPL_OK || lowest != c->rank)) {
        if (*st != MPL_OK) mpl_err_clear();
        *st = mpl_err((mpl_status)v[0], "rank %lld failed (%s)", (long long)lowest,
                      mpl_status_str((mpl_status)v[0]));
    }
    return *st;
}

mpl_status mpl_comm_exscan_sum_f32(mpl_comm *c, float *buf, int64_t n_elems, int reverse)
{
    TRACE_BEGIN();
    if (n_elems > INT_MAX)
        return mpl_err(MPL_ERR_ARG, "scan of %lld elements exceeds INT_MAX", (long long)n_elems);
    MPI_Comm mc = c->mc;
    int first = c->rank == 0;
    if (reverse) {
        if (c->reversed == MPI_COMM_NULL) {
            /* Collective: every rank reaches this line with the same c. */
            MPL_MPI(MPI_Comm_split(c->mc, 0, c->size - 1 - c->rank, &c->reversed));
            MPL_MPI(MPI_Comm_set_errhandler(c->reversed, MPI_ERRORS_RETURN));
        }
        mc = c->reversed;
        first = c->rank == c->size - 1;
    }
    c->bytes.scan += n_elems * (int64_t)sizeof(float);
    MPL_MPI(MPI_Exscan(MPI_IN_PLACE, buf, (int)n_elems, MPI_FLOAT, MPI_SUM, mc));
    /* MPI leaves the first rank's buffer undefined: it has no predecessor. */
    if (first)
        for (int64_t i = 0; i < n_elems; i++) buf[i] = 0.0f;
    { TRACE_END("scan"); return MPL_OK; }
}

mpl_status mpl_comm_allgather_f32(mpl_comm *c, const float *in, int64_t n_elems, float *out)
{
    TRACE_BEGIN();
    if (n_elems > INT_MAX)
        return mpl_err(MPL_ERR_ARG, "allgather of %lld elements exceeds INT_MAX", (long long)n_elems);
    c->bytes.allgather += n_elems * (int64_t)sizeof(float);
    MPL_MPI(MPI_Allgather(in, (int)n_elems, MPI_FLOAT, out, (int)n_elems, MPI_FLOAT, c->mc));
    { TRACE_END("allgather"); return MPL_OK; }
}

/* int counts and displacements of a block split (comm.h). */
static mpl_status block_ints(const mpl_comm *c, const int64_t *counts, int **cnt, int **dsp)
{
    *cnt = malloc((size_t)c->size * sizeof **cnt);
    *dsp = malloc((size_t)c->size * sizeof **dsp);
    if (!*cnt || !*dsp) {
        free(*cnt), free(*dsp);
        return mpl_err(MPL_ERR_NOMEM, "out of memory for %d block counts", c->size);
    }
    int64_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (counts[r] < 0 || counts[r] > INT_MAX || off > INT_MAX) {
            free(*cnt), free(*dsp);
            return mpl_err(MPL_ERR_ARG, "block %d of %lld floats at %lld exceeds INT_MAX", r,
                           (long long)counts[r], (long long)off);
        }
        (*cnt)[r] = (int)counts[r];
        (*dsp)[r] = (int)off;
        off += counts[r];
    }
    return MPL_OK;
}

mpl_status mpl_comm_reduce_scatter_sum_f32(mpl_comm *c, float *buf, const int64_t *counts)
{
    TRACE_BEGIN();
    int *cnt, *dsp;
    MPL_CHECK(block_ints(c, counts, &cnt, &dsp));
    int64_t total = 0;
    for (int r = 0; r < c->size; r++) total += counts[r];
    c->bytes.allreduce += total * (int64_t)sizeof(float);
    /* In place, MPI leaves the result at the start of buf: move it home. */
    int rc = MPI_Reduce_scatter(MPI_IN_PLACE, buf, cnt, MPI_FLOAT, MPI_SUM, c->mc);
    if (rc == MPI_SUCCESS && dsp[c->rank] > 0)
        memmove(buf + dsp[c->rank], buf, (size_t)cnt[c->rank] * sizeof *buf);
    free(cnt), free(dsp);
    MPL_MPI(rc);
    { TRACE_END("reduce_scatter"); return MPL_OK; }
}

mpl_status mpl_comm_allgatherv_f32(mpl_comm *c, float *buf, const int64_t *counts)
{
    TRACE_BEGIN();
    int64_t total = 0;
    for (int r = 0; r < c->size; r++) {
        if (counts[r] < 0)
            return mpl_err(MPL_ERR_ARG, "block %d of %lld floats", r, (long long)counts[r]);
        total += counts[r];
    }
    c->bytes.allgather += counts[c->rank] * (int64_t)sizeof(float);
    if (total > c->max_count) {
        /* MPI's counts and displacements are int: past them each block is
         * broadcast from its rank, in pieces (mpl_comm_bcast splits). */
        c->bytes.bcast -= counts[c->rank] * (int64_t)sizeof(float); /* counted above */
        int64_t off = 0;
        for (int r = 0; r < c->size; r++) {
            MPL_CHECK(mpl_comm_bcast(c, buf + off, (size_t)counts[r] * sizeof(float), r));
            off += counts[r];
        }
        { TRACE_END("allgather"); return MPL_OK; }
    }
    int *cnt, *dsp;
    MPL_CHECK(block_ints(c, counts, &cnt, &dsp));
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, dsp, MPI_FLOAT, c->mc);
    free(cnt), free(dsp);
    MPL_MPI(rc);
    { TRACE_END("allgather"); return MPL_OK; }
}

struct mpl_comm_reqs {
    MPI_Request *r;
    int n, cap;
    double t_post; /* when the first pending request was posted (trace) */
    int coll;      /* a pending request is a collective (trace name) */
};

mpl_status mpl_comm_reqs_create(mpl_comm_reqs **out)
{
    mpl_comm_reqs *r;
    MPL_ALLOC(r, 1);
    *out = r;
    return MPL_OK;
}

void mpl_comm_reqs_destroy(mpl_comm_reqs **r)
{
    if (!r || !*r) return;
    for (int i = 0; i < (*r)->n; i++)
        if ((*r)->r[i] != MPI_REQUEST_NULL) MPI_Request_free(&(*r)->r[i]);
    free((*r)->r);
    free(*r);
    *r = NULL;
}

static mpl_status reqs_slot(mpl_comm_reqs *r, MPI_Request **slot)
{
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 16;
        MPI_Request *p = realloc(r->r, (size_t)cap * sizeof *p);
        if (!p) return mpl_err(MPL_ERR_NOMEM, "out of memory for MPI requests");
        r->r = p;
        r->cap = cap;
    }
    if (r->n == 0) {
        r->t_post = mpl_trace_now();
        r->coll = 0;
    }
    *slot = &r->r[r->n++];
    return MPL_OK;
}

mpl_status mpl_comm_isend_f32(mpl_comm *c, const float *buf, int64_t n_elems, int peer, int tag,
                              mpl_comm_reqs *r)
{
    if (n_elems > INT_MAX)
        return mpl_err(MPL_ERR_ARG, "send of %lld elements exceeds INT_MAX", (long long)n_elems);
    MPI_Request *slot;
    MPL_CHECK(reqs_slot(r, &slot));
    c->bytes.p2p += n_elems * (int64_t)sizeof(float);
    MPL_MPI(MPI_Isend(buf, (int)n_elems, MPI_FLOAT, peer, tag, c->mc, slot));
    return MPL_OK;
}

mpl_status mpl_comm_irecv_f32(mpl_comm *c, float *buf, int64_t n_elems, int peer, int tag,
                              mpl_comm_reqs *r)
{
    if (n_elems > INT_MAX)
        return mpl_err(MPL_ERR_ARG, "receive of %lld elements exceeds INT_MAX", (long long)n_elems);
    MPI_Request *slot;
    MPL_CHECK(reqs_slot(r, &slot));
    MPL_MPI(MPI_Irecv(buf, (int)n_elems, MPI_FLOAT, peer, tag, c->mc, slot));
    return MPL_OK;
}

mpl_status mpl_comm_waitall(mpl_comm_reqs *r)
{
    TRACE_BEGIN();
    int rc = MPI_Waitall(r->n, r->r, MPI_STATUSES_IGNORE);
    if (r->n > 0 && mpl_trace_on()) {
        /* In flight from the first post to now, beside the main track. */
        mpl_trace_span(r->t_post, r->coll ? "iallreduce" : "p2p", -1, "comm", MPL_TRACE_COMM);
        TRACE_END("wait");
    }
    r->n = 0;
    if (rc != MPI_SUCCESS) return mpl_err(MPL_ERR_MPI, "MPI_Waitall: %s", mpi_msg(rc));
    return MPL_OK;
}

mpl_status mpl_comm_progress(mpl_comm_reqs *r)
{
    int done = 0;
    /* Completed requests become MPI_REQUEST_NULL, which a later wait skips. */
    if (r->n > 0) MPL_MPI(MPI_Testall(r->n, r->r, &done, MPI_STATUSES_IGNORE));
    return MPL_OK;
}

mpl_status mpl_comm_iallreduce_f32(mpl_comm *c, float *buf, int64_t n_elems, mpl_comm_op op,
                                   mpl_comm_reqs *r)
{
    c->bytes.allreduce += n_elems * (int64_t)sizeof(float);
    const MPI_Op mop = op == MPL_COMM_OP_MAX ? MPI_MAX : MPI_SUM;
    while (n_elems > 0) { /* INT_MAX-element pieces, one request each */
        const int n = n_elems > INT_MAX ? INT_MAX : (int)n_elems;
        MPI_Request *slot = NULL;
        MPL_CHECK(reqs_slot(r, &slot));
        MPL_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, mop, c->mc, slot));
        r->coll = 1;
        buf += n;
        n_elems -= n;
    }
    return MPL_OK;
}

void mpl_comm_bytes_get(const mpl_comm *c, mpl_comm_bytes *out) { *out = c->bytes; }
void mpl_comm_bytes_reset(mpl_comm *c) { memset(&c->bytes, 0, sizeof c->bytes); }

mpl_status mpl_comm_gatherv_f32(mpl_comm *c, const float *in, int64_t n_elems, float *out,
                                int root)
{
    TRACE_BEGIN();
    /* Every rank learns the total first, so all refuse an oversize gather
     * together instead of some waiting in MPI_Gatherv. */
    int64_t total = n_elems;
    MPL_MPI(MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT64_T, MPI_SUM, c->mc));
    if (total > INT_MAX)
        return mpl_err(MPL_ERR_ARG, "gather of %lld elements exceeds INT_MAX", (long long)total);
    int n = (int)n_elems, *counts = NULL, *displs = NULL;
    if (c->rank == root) {
        counts = malloc((size_t)c->size * sizeof *counts);
        displs = malloc((size_t)c->size * sizeof *displs);
    }
    int ok = c->rank != root || (counts && displs);
    int rc = MPI_Gather(&n, 1, MPI_INT, ok ? counts : NULL, 1, MPI_INT, root, c->mc);
    if (rc == MPI_SUCCESS && c->rank == root && ok)
        for (int r = 0, off = 0; r < c->size; off += counts[r], r++) displs[r] = off;
    c->bytes.allgather += n_elems * (int64_t)sizeof(float);
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(in, n, MPI_FLOAT, out, counts, displs, MPI_FLOAT, root, c->mc);
    free(counts);
    free(displs);
    if (rc != MPI_SUCCESS) return mpl_err(MPL_ERR_MPI, "MPI_Gatherv: %s", mpi_msg(rc));
    { TRACE_END("gather"); return MPL_OK; }
}

mpl_status mpl_comm_agree_root(mpl_comm *c, mpl_status *st)
{
    int64_t v[2];
    if (!agree_pair(c, st, v) || v[0] == MPL_OK) return *st;
    int lowest = (int)-v[1];
    char cause[1024] = "";
    if (c->rank == lowest) snprintf(cause, sizeof cause, "%s", mpl_err_cause());
    if (lowest != 0) {
        int rc = MPI_Bcast(cause, (int)sizeof cause, MPI_CHAR, lowest, c->mc);
        if (rc != MPI_SUCCESS) snprintf(cause, sizeof cause, "(cause lost: %s)", mpi_msg(rc));
    }
    mpl_status code = (mpl_status)v[0];
    if (c->rank == 0 && lowest == 0) return *st = code; /* the cause is here already */
    mpl_err_clear();
    if (c->rank == 0)
        *st = mpl_err(code, "%s", cause);
    else
        *st = mpl_err(code, "rank 0 failed (%s)", mpl_status_str(code));
    return *st;
}
