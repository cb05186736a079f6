/* FMM piece by piece (fmm_pieces.h). Positions below are chunk-local rows
 * of one sequence: [0, T) is the chunk, negative rows and rows >= T belong
 * to the neighbouring ranks. Piece c of a sequence holds rows [a_c, b_c);
 * its near-field halo is rows [a_c - n_pre(c), a_c) and, bidirectional,
 * [b_c, b_c + n_post(c)). */
#include "fmm_pieces.h"

#include <stdlib.h>
#include <string.h>

#include "../dist/grid.h"
#include "../dist/halo.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Where everything lives in the state of one layer. */
typedef struct lay {
    int64_t S, T, P, C;        /* sequences, chunk rows, piece_tokens, pieces per sequence */
    int64_t W, HD, K, E;       /* w-1; H*d; width of a k|v row (2Hd); stats of one sequence */
    int64_t n_rpre, n_rpost;   /* halo rows from other ranks */
    int64_t n_edge;            /* rows of the edge buffer */
    int causal, multi, pass_a;
    /* offsets (floats) */
    int64_t stat;    /* causal (C, S, E) prefix per piece; bidirectional (S, E) total */
    int64_t pre;     /* per piece c: rows (S, n_pre(c), K), then masks (S, n_pre(c)) */
    int64_t post;    /* bidirectional: the same with n_post(c) */
    int64_t dpost;   /* bidirectional: per piece (S, n_post(c), K), their gradients */
    int64_t D;       /* (S, E): pass A's running sum; in backward the statistics' gradient */
    int64_t pend;    /* (S, W, K): gradients owed to the W rows before the last piece done */
    int64_t rpre, rpost;      /* rows (S, n, K) then masks (S, n) from other ranks */
    int64_t dr_pre, dr_post;  /* (S, n, K): their gradients, to return */
    int64_t edge, dedge;      /* rows (S, n_edge, K) then masks (S, n_edge); gradients */
    int64_t total;
} lay;

static int64_t piece_a(const lay *L, int64_t c) { return c * L->P; }
static int64_t piece_b(const lay *L, int64_t c) { return L->C == 1 ? L->T : min64((c + 1) * L->P, L->T); }
static int64_t n_pre_of(const lay *L, int64_t c) { return min64(L->W, piece_a(L, c) + L->n_rpre); }
static int64_t n_post_of(const lay *L, int64_t c)
{
    return L->causal ? 0 : min64(L->W, L->T - piece_b(L, c) + L->n_rpost);
}

/* Ranks of the split: the communicator's, or a plan's (mpl_attn_cfg). */
static int sp_size(const mpl_attn_cfg *cfg, const mpl_comm *sp)
{
    return sp ? mpl_comm_size(sp) : (cfg->plan_sp > 1 ? cfg->plan_sp : 1);
}

static lay layout_of(const mpl_attn_cfg *cfg, const mpl_comm *sp, const mpl_attn_geom *g,
                     int64_t piece_tokens)
{
    lay L = {.S = g->n_seq, .T = g->n_tok, .P = piece_tokens, .causal = cfg->causal};
    L.C = g->n_tok <= piece_tokens ? 1 : (g->n_tok + piece_tokens - 1) / piece_tokens;
    L.W = cfg->band - 1;
    L.HD = (int64_t)cfg->n_head * cfg->head_dim;
    L.K = 2 * L.HD;
    L.E = (int64_t)cfg->n_head * cfg->fmm_n_maps * ((int64_t)cfg->head_dim * cfg->head_dim +
                                                    cfg->head_dim);
    L.multi = sp_size(cfg, sp) > 1;
    L.pass_a = L.multi || !L.causal;
    if (L.multi) {
        /* as mpl_halo_plan_create for (W before, W after) */
        const int64_t seq_len = cfg->seq_len > 0 ? cfg->seq_len : g->pos0 + g->n_tok;
        L.n_rpre = sp ? min64(L.W, g->pos0) : L.W; /* a plan: an interior rank */
        L.n_rpost = L.causal ? 0 : min64(L.W, seq_len - g->pos0 - g->n_tok);
        const int64_t head = min64(L.T, L.causal ? 0 : L.W), tail = min64(L.T, L.W);
        L.n_edge = head + tail >= L.T ? L.T : head + tail;
    }
    int64_t off = 0;
    L.stat = off, off += (L.causal ? L.C : 1) * L.S * L.E;
    L.pre = off;
    for (int64_t c = 0; c < L.C; c++) off += L.S * n_pre_of(&L, c) * (L.K + 1);
    L.post = off;
    for (int64_t c = 0; c < L.C; c++) off += L.S * n_post_of(&L, c) * (L.K + 1);
    L.dpost = off;
    for (int64_t c = 0; c < L.C; c++) off += L.S * n_post_of(&L, c) * L.K;
    L.D = off, off += L.S * L.E;
    L.pend = off, off += L.S * L.W * L.K;
    L.rpre = off, off += L.S * L.n_rpre * (L.K + 1);
    L.rpost = off, off += L.S * L.n_rpost * (L.K + 1);
    L.dr_pre = off, off += L.S * L.n_rpre * L.K;
    L.dr_post = off, off += L.S * L.n_rpost * L.K;
    L.edge = off, off += L.S * L.n_edge * (L.K + 1);
    L.dedge = off, off += L.S * L.n_edge * L.K;
    L.total = off;
    return L;
}

/* Rows [lo, lo + n) of sequence s in a block of S sequences of n rows:
 * rows at b + (s*n + i)*K, masks at b + S*n*K + s*n + i. */
typedef struct span {
    float *rows, *mask;  /* of sequence s, row 0 */
    int64_t lo, n;
} span;

static span span_in(float *b, const lay *L, int64_t s, int64_t lo, int64_t n)
{
    return (span){b + s * n * L->K, b + L->S * n * L->K + s * n, lo, n};
}

static span pre_span(const lay *L, float *st, int64_t c, int64_t s)
{
    float *b = st + L->pre;
    for (int64_t i = 0; i < c; i++) b += L->S * n_pre_of(L, i) * (L->K + 1);
    return span_in(b, L, s, piece_a(L, c) - n_pre_of(L, c), n_pre_of(L, c));
}

static span post_span(const lay *L, float *st, int64_t c, int64_t s)
{
    float *b = st + L->post;
    for (int64_t i = 0; i < c; i++) b += L->S * n_post_of(L, i) * (L->K + 1);
    return span_in(b, L, s, piece_b(L, c), n_post_of(L, c));
}

/* Gradients of piece c's post halo: (S, n_post(c), K), sequence s. */
static float *dpost_rows(const lay *L, float *st, int64_t c, int64_t s)
{
    float *b = st + L->dpost;
    for (int64_t i = 0; i < c; i++) b += L->S * n_post_of(L, i) * L->K;
    return b + s * n_post_of(L, c) * L->K;
}

/* Copy the rows of positions [lo, lo + n) that fall into span d. Source
 * row i (position lo + i) at src + i*stride, its mask m(i). */
static void span_put(span d, int64_t lo, int64_t n, const float *src, int64_t stride,
                     const uint8_t *maskb, const float *maskf, int64_t K)
{
    const int64_t x0 = max64(lo, d.lo), x1 = min64(lo + n, d.lo + d.n);
    for (int64_t x = x0; x < x1; x++) {
        const int64_t i = x - lo;
        memcpy(d.rows + (x - d.lo) * K, src + i * stride, (size_t)K * sizeof *src);
        d.mask[x - d.lo] = maskb ? (float)maskb[i] : maskf ? maskf[i] : 1.0f;
    }
}

/* Local args of piece p (its rows, mask and global position). */
static mpl_attn_fmm_args piece_args(const mpl_attn_cfg *cfg, const mpl_attn_geom *g,
                                    const mpl_attn_piece *p)
{
    const mpl_attn_geom pg = {p->n_seq, p->n_tok, g->pos0 + p->r0,
                              g->mask ? g->mask + p->s0 * g->n_tok + p->r0 : NULL};
    return mpl_attn_fmm_args_make(cfg, &pg);
}

/* Piece p's k|v rows and their masks go into every span that needs them:
 * the pre halos of later pieces, the post halos of earlier ones, and the
 * edge buffer the other ranks are sent from. */
static void capture(const lay *L, float *st, const mpl_halo_plan *plan, const mpl_attn_geom *g,
                    int64_t piece_tokens, const mpl_attn_piece *p, const float *qkv)
{
    const int64_t c = mpl_attn_piece_index(g, piece_tokens, p);
    const int64_t a = p->r0, n = p->n_tok, W3 = 3 * L->HD;
    for (int64_t j = 0; j < p->n_seq; j++) {
        const int64_t s = p->s0 + j;
        const float *rows = qkv + j * n * W3 + L->HD;
        const uint8_t *m = g->mask ? g->mask + s * L->T + a : NULL;
        for (int64_t q = c + 1; q < L->C && piece_a(L, q) - L->W < a + n; q++)
            span_put(pre_span(L, st, q, s), a, n, rows, W3, m, NULL, L->K);
        for (int64_t q = c - 1; !L->causal && q >= 0 && piece_b(L, q) + L->W > a; q--)
            span_put(post_span(L, st, q, s), a, n, rows, W3, m, NULL, L->K);
        if (plan) {
            span e = span_in(st + L->edge, L, s, 0, L->n_edge);
            for (int64_t i = 0; i < n; i++) {
                const int64_t er = mpl_halo_plan_edge_row(plan, a + i);
                if (er < 0) continue;
                memcpy(e.rows + er * L->K, rows + i * W3, (size_t)L->K * sizeof *rows);
                e.mask[er] = m ? (float)m[i] : 1.0f;
            }
        }
    }
}

/* The rows received from other ranks go into the spans that reach past
 * the chunk. */
static void install_rank_halo(const lay *L, float *st)
{
    for (int64_t s = 0; s < L->S; s++)
        for (int64_t c = 0; c < L->C; c++) {
            span r = span_in(st + L->rpre, L, s, -L->n_rpre, L->n_rpre);
            span_put(pre_span(L, st, c, s), r.lo, r.n, r.rows, L->K, NULL, r.mask, L->K);
            if (!L->causal) {
                span q = span_in(st + L->rpost, L, s, L->T, L->n_rpost);
                span_put(post_span(L, st, c, s), q.lo, q.n, q.rows, L->K, NULL, q.mask, L->K);
            }
        }
}

int64_t mpl_attn_fmm_pieces_state_elems(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                        const mpl_attn_geom *g, int64_t piece_tokens)
{
    return layout_of(cfg, sp, g, piece_tokens).total;
}

int mpl_attn_fmm_pieces_deferred(const mpl_attn_cfg *cfg, const mpl_comm *sp)
{
    return sp_size(cfg, sp) > 1 || !cfg->causal;
}

/* Scratch of one call: the context's masks as bytes, the context
 * gradients, one piece's statistics, and the deferred pass's dqkv. */
typedef struct scratch {
    uint8_t *mpre, *mpost;
    float *dpre, *dpost, *dstat, *extra;
} scratch;

static int64_t piece_max_tokens(const lay *L)
{
    const mpl_attn_geom g = {.n_seq = L->S, .n_tok = L->T};
    return mpl_attn_piece_max_tokens(&g, L->P);
}

int64_t mpl_attn_fmm_pieces_work_bytes(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                       const mpl_attn_geom *g, int64_t piece_tokens)
{
    const lay L = layout_of(cfg, sp, g, piece_tokens);
    const int64_t ns = min64(L.S, L.C == 1 ? max64(1, L.P / max64(1, L.T)) : 1);
    const int64_t floats = ns * (2 * L.W * L.K + L.E) + piece_max_tokens(&L) * 3 * L.HD;
    /* the chunk functions' own buffers: the extended K, V and rotated Q of
     * the piece and its halo (fmm_impl.h) */
    const int64_t kern = 3 * (piece_max_tokens(&L) + 2 * ns * L.W) * L.HD;
    return (floats + kern) * (int64_t)sizeof(float) + 2 * ns * L.W;
}

static void scratch_free(scratch *x)
{
    free(x->mpre), free(x->mpost), free(x->dpre), free(x->dpost), free(x->dstat), free(x->extra);
    memset(x, 0, sizeof *x);
}

static mpl_status scratch_alloc(const lay *L, int64_t n_seq, int grads, int64_t extra,
                                scratch *x)
{
    memset(x, 0, sizeof *x);
    const int64_t nw = n_seq * L->W;
    x->mpre = malloc((size_t)nw + 1);
    x->mpost = malloc((size_t)nw + 1);
    if (grads) {
        x->dpre = calloc((size_t)(nw * L->K + 1), sizeof *x->dpre);
        x->dpost = calloc((size_t)(nw * L->K + 1), sizeof *x->dpost);
        x->dstat = calloc((size_t)(n_seq * L->E + 1), sizeof *x->dstat);
    }
    if (extra) x->extra = malloc((size_t)extra * sizeof *x->extra);
    if (!x->mpre || !x->mpost || (grads && (!x->dpre || !x->dpost || !x->dstat)) ||
        (extra && !x->extra)) {
        scratch_free(x);
        return mpl_err(MPL_ERR_NOMEM, "fmm pieces: out of memory for a piece's context");
    }
    return MPL_OK;
}

/* The chunk-function context of piece p from the state (masks as bytes
 * into x). Spans of consecutive sequences are contiguous, so a piece of
 * several whole sequences reads one block. */
static mpl_attn_fmm_ctx_f32 piece_ctx(const lay *L, float *st, const mpl_attn_piece *p,
                                      int64_t c, scratch *x)
{
    const span pr = pre_span(L, st, c, p->s0), po = post_span(L, st, c, p->s0);
    mpl_attn_fmm_ctx_f32 ctx = {.n_pre = pr.n, .n_post = po.n, .halo_pre = pr.rows,
                                .halo_post = po.rows, .mask_pre = x->mpre,
                                .mask_post = x->mpost};
    for (int64_t i = 0; i < p->n_seq * pr.n; i++) x->mpre[i] = pr.mask[i] != 0.0f;
    for (int64_t i = 0; i < p->n_seq * po.n; i++) x->mpost[i] = po.mask[i] != 0.0f;
    ctx.stat_in = st + L->stat + ((L->causal ? c * L->S : 0) + p->s0) * L->E;
    return ctx;
}

static void add_into(float *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* Pass A (more ranks, or bidirectional): every piece's rows go into the
 * spans and the edges, and its statistics into the prefixes (causal,
 * still without what precedes the chunk) or the total. */
static mpl_status pass_a(const mpl_attn_cfg *cfg, const lay *L, const mpl_halo_plan *plan,
                         const mpl_attn_pieces *pc)
{
    float *sb = pc->state, *run = sb + L->D;
    float *tmp = malloc((size_t)(L->S * L->E + 1) * sizeof *tmp);
    if (!tmp) return mpl_err(MPL_ERR_NOMEM, "fmm pieces: out of memory for piece statistics");
    mpl_status st = MPL_OK;
    memset(run, 0, (size_t)(L->S * L->E) * sizeof *run);
    const int64_t n = mpl_attn_pieces_count(pc->g, pc->piece_tokens);
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(pc->g, pc->piece_tokens, i);
        const int64_t c = mpl_attn_piece_index(pc->g, pc->piece_tokens, &p);
        const float *qkv;
        MPL_CHECK_GOTO(pc->rows->qkv(pc->rows->user, &p, &qkv), done);
        capture(L, sb, plan, pc->g, pc->piece_tokens, &p, qkv);
        const mpl_attn_fmm_args a = piece_args(cfg, pc->g, &p);
        MPL_CHECK_GOTO(mpl_attn_fmm_stats_f32(&a, qkv, tmp), done);
        float *r = run + p.s0 * L->E;
        if (L->causal)
            memcpy(sb + L->stat + (c * L->S + p.s0) * L->E, r,
                   (size_t)(p.n_seq * L->E) * sizeof *r);
        add_into(r, tmp, p.n_seq * L->E);
    }
done:
    free(tmp);
    return st;
}

mpl_status mpl_attn_fmm_pieces_forward_begin(const mpl_attn_cfg *cfg, mpl_comm *sp,
                                             const mpl_attn_pieces *pc)
{
    mpl_status st = MPL_OK;
    const lay L = layout_of(cfg, sp, pc->g, pc->piece_tokens);
    float *s = pc->state;
    mpl_halo_plan *plan = NULL;
    mpl_halo_xfer *xr = NULL, *xm = NULL;
    if (L.multi && !sp)
        return mpl_err(MPL_ERR_ARG, "fmm pieces: an instance planned for sp=%d has no "
                       "communicator to run with", cfg->plan_sp);
    memset(s, 0, (size_t)L.total * sizeof *s);
    if (!L.pass_a) return MPL_OK; /* causal on one rank: the pieces fill the state in order */
    if (L.multi) {
        int64_t lo, hi;
        const int P = mpl_comm_size(sp), me = mpl_comm_rank(sp);
        mpl_grid_chunk(cfg->seq_len, P, me, &lo, &hi);
        if (pc->g->pos0 != lo || pc->g->n_tok != hi - lo)
            return mpl_err(MPL_ERR_ARG, "fmm pieces: rank %d of %d holds [%lld, %lld) but the "
                           "split of L=%lld gives [%lld, %lld)", me, P, (long long)pc->g->pos0,
                           (long long)(pc->g->pos0 + pc->g->n_tok), (long long)cfg->seq_len,
                           (long long)lo, (long long)hi);
        MPL_CHECK(mpl_halo_plan_create(cfg->seq_len, P, me, L.W, L.causal ? 0 : L.W, &plan));
        MPL_ASSERT(mpl_halo_plan_n_edge(plan) == L.n_edge &&
                   mpl_halo_plan_n_pre(plan) == L.n_rpre && mpl_halo_plan_n_post(plan) == L.n_rpost);
    }
    MPL_CHECK_GOTO(pass_a(cfg, &L, plan, pc), done);
    float *run = s + L.D;
    if (L.multi) {
        /* the edge rows travel while the statistics are combined */
        const int64_t ne = L.S * L.n_edge;
        MPL_CHECK_GOTO(mpl_halo_exchange_begin_edges(sp, plan, L.S, L.K, s + L.edge, s + L.rpre,
                                                     s + L.rpost, &xr), done);
        MPL_CHECK_GOTO(mpl_halo_exchange_begin_edges(sp, plan, L.S, 1, s + L.edge + ne * L.K,
                                                     s + L.rpre + L.S * L.n_rpre * L.K,
                                                     s + L.rpost + L.S * L.n_rpost * L.K, &xm),
                       done);
        if (L.causal) MPL_CHECK_GOTO(mpl_comm_exscan_sum_f32(sp, run, L.S * L.E, 0), done);
        else MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f32(sp, run, L.S * L.E), done);
        MPL_CHECK_GOTO(mpl_halo_exchange_end(&xr), done);
        MPL_CHECK_GOTO(mpl_halo_exchange_end(&xm), done);
        install_rank_halo(&L, s);
    }
    if (L.causal) {
        /* what precedes the chunk joins every piece's prefix */
        for (int64_t c = 0; c < L.C; c++)
            add_into(s + L.stat + c * L.S * L.E, run, L.S * L.E);
    } else {
        memcpy(s + L.stat, run, (size_t)(L.S * L.E) * sizeof *run);
    }
done:
    if (xr) mpl_halo_exchange_end(&xr); /* complete the messages even on an error */
    if (xm) mpl_halo_exchange_end(&xm);
    mpl_halo_plan_destroy(&plan);
    return st;
}

mpl_status mpl_attn_fmm_pieces_forward(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                       const mpl_attn_pieces *pc, const mpl_attn_piece *p,
                                       int replay, mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                       float *out, float *saved)
{
    mpl_status st = MPL_OK;
    const lay L = layout_of(cfg, sp, pc->g, pc->piece_tokens);
    const int64_t c = mpl_attn_piece_index(pc->g, pc->piece_tokens, p);
    scratch x;
    MPL_CHECK(scratch_alloc(&L, p->n_seq, 0, 0, &x));
    const mpl_attn_fmm_args a = piece_args(cfg, pc->g, p);
    const mpl_attn_fmm_ctx_f32 ctx = piece_ctx(&L, pc->state, p, c, &x);
    MPL_CHECK_GOTO(mpl_attn_fmm_forward_f32(&a, &ctx, bl, qkv, out, saved), done);
    if (!replay && !L.pass_a && c + 1 < L.C) {
        /* causal on one rank: the next piece's halo and prefix follow from this one */
        capture(&L, pc->state, NULL, pc->g, pc->piece_tokens, p, qkv);
        float *next = pc->state + L.stat + ((c + 1) * L.S + p->s0) * L.E;
        MPL_CHECK_GOTO(mpl_attn_fmm_stats_f32(&a, qkv, next), done);
        add_into(next, ctx.stat_in, L.E);
    }
done:
    scratch_free(&x);
    return st;
}

mpl_status mpl_attn_fmm_pieces_backward_begin(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                              const mpl_attn_pieces *pc)
{
    const lay L = layout_of(cfg, sp, pc->g, pc->piece_tokens);
    float *s = pc->state;
    memset(s + L.D, 0, (size_t)(L.S * L.E + L.S * L.W * L.K) * sizeof *s); /* D and pend */
    memset(s + L.dpost, 0, (size_t)(L.D - L.dpost) * sizeof *s);
    memset(s + L.dr_pre, 0, (size_t)(L.edge - L.dr_pre) * sizeof *s);
    memset(s + L.dedge, 0, (size_t)(L.total - L.dedge) * sizeof *s);
    return MPL_OK;
}

mpl_status mpl_attn_fmm_pieces_backward(const mpl_attn_cfg *cfg, const mpl_comm *sp,
                                        const mpl_attn_pieces *pc, const mpl_attn_piece *p,
                                        mpl_attn_fmm_blend_f32 bl, const float *qkv,
                                        const float *saved, const float *dout, float *dqkv,
                                        mpl_attn_fmm_dblend_f32 dbl)
{
    mpl_status st = MPL_OK;
    const lay L = layout_of(cfg, sp, pc->g, pc->piece_tokens);
    float *s = pc->state;
    const int64_t c = mpl_attn_piece_index(pc->g, pc->piece_tokens, p);
    scratch x;
    MPL_CHECK(scratch_alloc(&L, p->n_seq, 1, 0, &x));
    const mpl_attn_fmm_args a = piece_args(cfg, pc->g, p);
    const mpl_attn_fmm_ctx_f32 ctx = piece_ctx(&L, s, p, c, &x);
    const mpl_attn_fmm_dctx_f32 dctx = {x.dpre, x.dpost, x.dstat};
    MPL_CHECK_GOTO(mpl_attn_fmm_backward_f32(&a, &ctx, bl, qkv, saved, dout, dqkv, &dctx, dbl),
                   done);
    float *D = s + L.D + p->s0 * L.E;
    /* Causal: the pieces after this one (already done) saw its rows through
     * their prefixes; D holds their prefix gradients. */
    if (L.causal && c + 1 < L.C) MPL_CHECK_GOTO(mpl_attn_fmm_stats_backward_f32(&a, qkv, D, dqkv), done);
    add_into(D, x.dstat, p->n_seq * L.E);
    const int64_t A = p->r0, B = p->r0 + p->n_tok, W3 = 3 * L.HD, np = ctx.n_pre;
    for (int64_t j = 0; j < p->n_seq; j++) {
        const int64_t sq = p->s0 + j;
        float *pend = s + L.pend + sq * L.W * L.K; /* rows [B - W, B) */
        /* what later pieces' halos owe this piece's rows */
        for (int64_t r = max64(A, B - L.W); r < B; r++)
            add_into(dqkv + (j * p->n_tok + r - A) * W3 + L.HD, pend + (r - (B - L.W)) * L.K, L.K);
        /* ... and what is owed to the rows before it: rows [A - W, A) */
        const int64_t keep = max64(0, L.W - p->n_tok); /* rows of pend below A */
        memmove(pend + (L.W - keep) * L.K, pend, (size_t)(keep * L.K) * sizeof *pend);
        memset(pend, 0, (size_t)((L.W - keep) * L.K) * sizeof *pend);
        for (int64_t i = 0; i < np; i++)
            add_into(pend + (L.W - np + i) * L.K, x.dpre + (j * np + i) * L.K, L.K);
        if (A == 0 && L.n_rpre > 0)
            memcpy(s + L.dr_pre + sq * L.n_rpre * L.K, pend + (L.W - L.n_rpre) * L.K,
                   (size_t)(L.n_rpre * L.K) * sizeof *pend);
        if (!L.causal)
            memcpy(dpost_rows(&L, s, c, sq), x.dpost + j * ctx.n_post * L.K,
                   (size_t)(ctx.n_post * L.K) * sizeof *pend);
    }
done:
    scratch_free(&x);
    return st;
}

/* The deferred pass: every piece's rows get what the statistics' gradient
 * (G, S x E) and the returned or late halo gradients owe them. */
static mpl_status pass_deferred(const mpl_attn_cfg *cfg, const lay *L, const mpl_halo_plan *plan,
                                const mpl_attn_pieces *pc, const float *G)
{
    mpl_status st = MPL_OK;
    float *s = pc->state;
    const int64_t W3 = 3 * L->HD;
    scratch x;
    MPL_CHECK(scratch_alloc(L, 1, 0, piece_max_tokens(L) * W3, &x));
    const int64_t n = mpl_attn_pieces_count(pc->g, pc->piece_tokens);
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(pc->g, pc->piece_tokens, i);
        const int64_t A = p.r0, B = p.r0 + p.n_tok;
        const float *qkv;
        MPL_CHECK_GOTO(pc->rows->qkv(pc->rows->user, &p, &qkv), done);
        memset(x.extra, 0, (size_t)(p.n_seq * p.n_tok * W3) * sizeof *x.extra);
        const mpl_attn_fmm_args a = piece_args(cfg, pc->g, &p);
        MPL_CHECK_GOTO(mpl_attn_fmm_stats_backward_f32(&a, qkv, G + p.s0 * L->E, x.extra), done);
        for (int64_t j = 0; j < p.n_seq; j++) {
            const int64_t sq = p.s0 + j;
            float *ex = x.extra + j * p.n_tok * W3 + L->HD; /* k|v of row A */
            for (int64_t q = 0; !L->causal && q < L->C; q++) {
                const int64_t lo = piece_b(L, q), m = n_post_of(L, q);
                const float *g = dpost_rows(L, s, q, sq);
                for (int64_t r = max64(lo, A); r < min64(lo + m, B); r++)
                    add_into(ex + (r - A) * W3, g + (r - lo) * L->K, L->K);
            }
            const float *de = s + L->dedge + sq * L->n_edge * L->K;
            for (int64_t r = A; plan && r < B; r++) {
                const int64_t er = mpl_halo_plan_edge_row(plan, r);
                if (er >= 0) add_into(ex + (r - A) * W3, de + er * L->K, L->K);
            }
        }
        MPL_CHECK_GOTO(pc->rows->add_dqkv(pc->rows->user, &p, x.extra), done);
    }
done:
    scratch_free(&x);
    return st;
}

mpl_status mpl_attn_fmm_pieces_backward_end(const mpl_attn_cfg *cfg, mpl_comm *sp,
                                            const mpl_attn_pieces *pc)
{
    mpl_status st = MPL_OK;
    const lay L = layout_of(cfg, sp, pc->g, pc->piece_tokens);
    if (!mpl_attn_fmm_pieces_deferred(cfg, sp)) return MPL_OK;
    float *s = pc->state, *D = s + L.D;
    mpl_halo_plan *plan = NULL;
    mpl_halo_xfer *xr = NULL;
    if (L.multi) {
        /* rows past the chunk that the last pieces' post halos used */
        for (int64_t sq = 0; !L.causal && sq < L.S; sq++)
            for (int64_t c = 0; c < L.C; c++) {
                const int64_t lo = piece_b(&L, c), m = n_post_of(&L, c);
                const float *g = dpost_rows(&L, s, c, sq);
                for (int64_t r = max64(lo, L.T); r < lo + m; r++)
                    add_into(s + L.dr_post + (sq * L.n_rpost + r - L.T) * L.K, g + (r - lo) * L.K,
                             L.K);
            }
        MPL_CHECK(mpl_halo_plan_create(cfg->seq_len, mpl_comm_size(sp), mpl_comm_rank(sp), L.W,
                                       L.causal ? 0 : L.W, &plan));
        MPL_CHECK_GOTO(mpl_halo_return_begin_edges(sp, plan, L.S, L.K, s + L.dr_pre,
                                                   s + L.dr_post, s + L.dedge, &xr), done);
        /* chunk p's prefix gradient reaches the chunks before it (causal:
         * a suffix scan) or all (bidirectional) */
        if (L.causal) MPL_CHECK_GOTO(mpl_comm_exscan_sum_f32(sp, D, L.S * L.E, 1), done);
        else MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f32(sp, D, L.S * L.E), done);
        MPL_CHECK_GOTO(mpl_halo_return_end(&xr), done);
    }
    MPL_CHECK_GOTO(pass_deferred(cfg, &L, plan, pc, D), done);
done:
    if (xr) mpl_halo_return_end(&xr);
    mpl_halo_plan_destroy(&plan);
    return st;
}
