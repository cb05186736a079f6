/* Halo plans, exchange and return (halo.h). Each message is one peer's
 * share of one halo for all n_seq sequences, packed contiguously. */
#include "halo.h"

#include <stdlib.h>
#include <string.h>

#include "grid.h"

enum { TAG_PRE = 7101, TAG_POST = 7102 };

/* One message: rows [g0, g0 + n) (global) between this rank and peer. */
typedef struct halo_msg {
    int peer;
    int tag;            /* TAG_PRE: goes into the receiver's pre halo */
    int64_t g0, n;
    int64_t local0;     /* sender: row in its chunk; receiver: row in its halo */
} halo_msg;

struct mpl_halo_plan {
    int64_t n_tok;          /* this rank's chunk length */
    int64_t n_pre, n_post;
    int64_t n_head, n_tail; /* edge rows other ranks use (mpl_halo_plan_n_edge) */
    halo_msg *send, *recv;  /* in peer order: the add order of the return */
    int n_send, n_recv;
};

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

mpl_status mpl_halo_plan_create(int64_t L, int sp, int rank, int64_t n_before, int64_t n_after,
                                mpl_halo_plan **out)
{
    if (L < sp || n_before < 0 || n_after < 0)
        return mpl_err(MPL_ERR_ARG, "halo plan: L=%lld rows over sp=%d ranks, halo %lld/%lld",
                       (long long)L, sp, (long long)n_before, (long long)n_after);
    mpl_halo_plan *p;
    MPL_ALLOC(p, 1);
    p->send = calloc((size_t)(2 * sp), sizeof *p->send);
    p->recv = calloc((size_t)(2 * sp), sizeof *p->recv);
    if (!p->send || !p->recv) {
        mpl_halo_plan_destroy(&p);
        return mpl_err(MPL_ERR_NOMEM, "out of memory for a halo plan");
    }
    int64_t a, b;
    mpl_grid_chunk(L, sp, rank, &a, &b);
    const int64_t lo = max64(0, a - n_before), hi = min64(L, b + n_after);
    p->n_tok = b - a;
    p->n_pre = a - lo;
    p->n_post = hi - b;
    p->n_head = min64(p->n_tok, n_after);
    p->n_tail = min64(p->n_tok, n_before);
    for (int q = 0; q < sp; q++) {
        if (q == rank) continue;
        int64_t qa, qb;
        mpl_grid_chunk(L, sp, q, &qa, &qb);
        /* what I receive from q */
        int64_t s0 = max64(lo, qa), s1 = min64(a, qb);
        if (q < rank && s1 > s0)
            p->recv[p->n_recv++] = (halo_msg){q, TAG_PRE, s0, s1 - s0, s0 - lo};
        s0 = max64(b, qa), s1 = min64(hi, qb);
        if (q > rank && s1 > s0)
            p->recv[p->n_recv++] = (halo_msg){q, TAG_POST, s0, s1 - s0, s0 - b};
        /* what q receives from me */
        const int64_t qlo = max64(0, qa - n_before), qhi = min64(L, qb + n_after);
        s0 = max64(qlo, a), s1 = min64(qa, b);
        if (rank < q && s1 > s0) p->send[p->n_send++] = (halo_msg){q, TAG_PRE, s0, s1 - s0, s0 - a};
        s0 = max64(qb, a), s1 = min64(qhi, b);
        if (rank > q && s1 > s0) p->send[p->n_send++] = (halo_msg){q, TAG_POST, s0, s1 - s0, s0 - a};
    }
    *out = p;
    return MPL_OK;
}

void mpl_halo_plan_destroy(mpl_halo_plan **p)
{
    if (!p || !*p) return;
    free((*p)->send);
    free((*p)->recv);
    free(*p);
    *p = NULL;
}

int64_t mpl_halo_plan_n_pre(const mpl_halo_plan *p) { return p->n_pre; }
int64_t mpl_halo_plan_n_post(const mpl_halo_plan *p) { return p->n_post; }

static int edges_whole(const mpl_halo_plan *p) { return p->n_head + p->n_tail >= p->n_tok; }

int64_t mpl_halo_plan_n_edge(const mpl_halo_plan *p)
{
    return edges_whole(p) ? p->n_tok : p->n_head + p->n_tail;
}

int64_t mpl_halo_plan_edge_row(const mpl_halo_plan *p, int64_t r)
{
    if (r < 0 || r >= p->n_tok) return -1;
    if (edges_whole(p) || r < p->n_head) return r;
    if (r >= p->n_tok - p->n_tail) return p->n_head + r - (p->n_tok - p->n_tail);
    return -1;
}

static int64_t total_rows(const halo_msg *m, int n)
{
    int64_t t = 0;
    for (int i = 0; i < n; i++) t += m[i].n;
    return t;
}

/* Row r of sequence s of message m in a buffer of rows_per_seq rows. */
static size_t row_at(const halo_msg *m, int64_t s, int64_t r, int64_t rows_per_seq,
                     int64_t stride)
{
    return (size_t)((s * rows_per_seq + m->local0 + r) * stride);
}

/* Offset of chunk row r (message m, row r of it) of sequence s in a chunk
 * buffer: the whole chunk, or its edge buffer when edges is set. Rows that
 * messages carry are always edge rows (mpl_halo_plan_n_edge). */
static size_t chunk_at(const mpl_halo_plan *p, int edges, const halo_msg *m, int64_t s,
                       int64_t r, int64_t stride)
{
    if (!edges) return row_at(m, s, r, p->n_tok, stride);
    const int64_t e = mpl_halo_plan_edge_row(p, m->local0 + r);
    MPL_ASSERT(e >= 0);
    return (size_t)((s * mpl_halo_plan_n_edge(p) + e) * stride);
}

/* One transfer in flight: receives of `in` land message after message in
 * rbuf, each (n_seq, n, width); `out` was packed into sbuf and sent. */
struct mpl_halo_xfer {
    const mpl_halo_plan *p;
    const halo_msg *in;
    int n_in;
    int64_t n_seq, width;
    float *sbuf, *rbuf;
    float *pre, *post;       /* exchange: where received rows go */
    float *drows;            /* return: where received gradients are added */
    int64_t row_stride;
    int edges;               /* drows is an edge buffer */
    mpl_comm_reqs *reqs;
};

static void xfer_free(mpl_halo_xfer **x)
{
    if (!x || !*x) return;
    mpl_comm_reqs_destroy(&(*x)->reqs);
    free((*x)->sbuf);
    free((*x)->rbuf);
    free(*x);
    *x = NULL;
}

/* Post the receives of `in`, pack and send `out` from src (rows_per_seq =
 * the chunk, src_stride) or, when src is NULL, from the halo buffers. */
static mpl_status xfer_begin(mpl_comm *c, const mpl_halo_plan *p, const halo_msg *out, int n_out,
                             const halo_msg *in, int n_in, int64_t n_seq, int64_t width,
                             const float *src, int64_t src_stride, int src_edges,
                             const float *src_pre, const float *src_post, mpl_halo_xfer **xp)
{
    mpl_status st = MPL_OK;
    mpl_halo_xfer *x;
    MPL_ALLOC(x, 1);
    *x = (mpl_halo_xfer){.p = p, .in = in, .n_in = n_in, .n_seq = n_seq, .width = width};
    const int64_t ns = total_rows(out, n_out) * n_seq * width;
    const int64_t nr = total_rows(in, n_in) * n_seq * width;
    x->sbuf = malloc((size_t)(ns ? ns : 1) * sizeof *x->sbuf);
    x->rbuf = malloc((size_t)(nr ? nr : 1) * sizeof *x->rbuf);
    if (!x->sbuf || !x->rbuf) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory staging halo rows");
    MPL_CHECK_GOTO(mpl_comm_reqs_create(&x->reqs), fail);
    int64_t off = 0;
    for (int i = 0; i < n_in; i++) {
        MPL_CHECK_GOTO(mpl_comm_irecv_f32(c, x->rbuf + off, in[i].n * n_seq * width, in[i].peer,
                                          in[i].tag, x->reqs), fail);
        off += in[i].n * n_seq * width;
    }
    off = 0;
    for (int i = 0; i < n_out; i++) {
        const halo_msg *m = &out[i];
        float *dst = x->sbuf + off;
        for (int64_t s = 0; s < n_seq; s++)
            for (int64_t r = 0; r < m->n; r++) {
                const float *from;
                if (src) from = src + chunk_at(p, src_edges, m, s, r, src_stride);
                else if (m->tag == TAG_PRE) from = src_pre + row_at(m, s, r, p->n_pre, width);
                else from = src_post + row_at(m, s, r, p->n_post, width);
                memcpy(dst + (s * m->n + r) * width, from, (size_t)width * sizeof *dst);
            }
        MPL_CHECK_GOTO(mpl_comm_isend_f32(c, dst, m->n * n_seq * width, m->peer, m->tag, x->reqs),
                       fail);
        off += m->n * n_seq * width;
    }
    *xp = x;
    return MPL_OK;
fail:
    if (x->reqs) mpl_comm_waitall(x->reqs); /* never free buffers under live requests */
    xfer_free(&x);
    return st;
}

mpl_status mpl_halo_exchange_begin(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                   int64_t width, const float *rows, int64_t row_stride,
                                   float *pre, float *post, mpl_halo_xfer **x)
{
    MPL_CHECK(xfer_begin(sp, p, p->send, p->n_send, p->recv, p->n_recv, n_seq, width, rows,
                         row_stride, 0, NULL, NULL, x));
    (*x)->pre = pre;
    (*x)->post = post;
    return MPL_OK;
}

mpl_status mpl_halo_exchange_begin_edges(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                         int64_t width, const float *edges, float *pre,
                                         float *post, mpl_halo_xfer **x)
{
    MPL_CHECK(xfer_begin(sp, p, p->send, p->n_send, p->recv, p->n_recv, n_seq, width, edges,
                         width, 1, NULL, NULL, x));
    (*x)->pre = pre;
    (*x)->post = post;
    return MPL_OK;
}

mpl_status mpl_halo_exchange_end(mpl_halo_xfer **xp)
{
    mpl_halo_xfer *x = *xp;
    mpl_status st = mpl_comm_waitall(x->reqs);
    const float *in = x->rbuf;
    const int64_t width = x->width, n_seq = x->n_seq;
    for (int i = 0; st == MPL_OK && i < x->n_in; i++) {
        const halo_msg *m = &x->in[i];
        float *dst = m->tag == TAG_PRE ? x->pre : x->post;
        const int64_t n_halo = m->tag == TAG_PRE ? x->p->n_pre : x->p->n_post;
        for (int64_t s = 0; s < n_seq; s++)
            for (int64_t r = 0; r < m->n; r++)
                memcpy(dst + row_at(m, s, r, n_halo, width), in + (s * m->n + r) * width,
                       (size_t)width * sizeof *dst);
        in += m->n * n_seq * width;
    }
    xfer_free(xp);
    if (st != MPL_OK) return mpl_err(st, "halo exchange");
    return MPL_OK;
}

mpl_status mpl_halo_exchange(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                             int64_t width, const float *rows, int64_t row_stride, float *pre,
                             float *post)
{
    mpl_halo_xfer *x = NULL;
    MPL_CHECK(mpl_halo_exchange_begin(sp, p, n_seq, width, rows, row_stride, pre, post, &x));
    MPL_CHECK(mpl_halo_exchange_end(&x));
    return MPL_OK;
}

mpl_status mpl_halo_return_begin(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                 int64_t width, const float *dpre, const float *dpost,
                                 float *drows, int64_t row_stride, mpl_halo_xfer **x)
{
    /* The reverse of exchange: what was received goes back, what was sent
     * comes back (to be added at end). */
    MPL_CHECK(xfer_begin(sp, p, p->recv, p->n_recv, p->send, p->n_send, n_seq, width, NULL, 0,
                         0, dpre, dpost, x));
    (*x)->drows = drows;
    (*x)->row_stride = row_stride;
    return MPL_OK;
}

mpl_status mpl_halo_return_begin_edges(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq,
                                       int64_t width, const float *dpre, const float *dpost,
                                       float *dedges, mpl_halo_xfer **x)
{
    MPL_CHECK(mpl_halo_return_begin(sp, p, n_seq, width, dpre, dpost, dedges, width, x));
    (*x)->edges = 1;
    return MPL_OK;
}

mpl_status mpl_halo_return_end(mpl_halo_xfer **xp)
{
    mpl_halo_xfer *x = *xp;
    const mpl_halo_plan *p = x->p;
    mpl_status st = mpl_comm_waitall(x->reqs);
    const float *in = x->rbuf;
    const int64_t width = x->width, n_seq = x->n_seq;
    for (int i = 0; st == MPL_OK && i < p->n_send; i++) {
        const halo_msg *m = &p->send[i];
        for (int64_t s = 0; s < n_seq; s++)
            for (int64_t r = 0; r < m->n; r++) {
                float *dst = x->drows + chunk_at(p, x->edges, m, s, r, x->row_stride);
                const float *g = in + (s * m->n + r) * width;
                for (int64_t c = 0; c < width; c++) dst[c] += g[c];
            }
        in += m->n * n_seq * width;
    }
    xfer_free(xp);
    if (st != MPL_OK) return mpl_err(st, "halo return");
    return MPL_OK;
}

mpl_status mpl_halo_return(mpl_comm *sp, const mpl_halo_plan *p, int64_t n_seq, int64_t width,
                           const float *dpre, const float *dpost, float *drows,
                           int64_t row_stride)
{
    mpl_halo_xfer *x = NULL;
    MPL_CHECK(mpl_halo_return_begin(sp, p, n_seq, width, dpre, dpost, drows, row_stride, &x));
    MPL_CHECK(mpl_halo_return_end(&x));
    return MPL_OK;
}
