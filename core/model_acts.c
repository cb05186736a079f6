/* Where the model's activations live: which are kept from forward to
 * backward (by mpl_recompute), which are workspace of one piece or one
 * layer, and what it all costs (mpl_model_plan). One layout function
 * serves the plan and the allocation, so the plan is what is allocated.
 * Kept fields are sequence-major (n_seq, n_tok, width) per layer, so a
 * piece (core/attn.h) is a contiguous block of every field. */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

int mpl_model_kept(const act_layout *L, act_field f) { return L->keep[f] >= 0; }

int64_t mpl_model_piece_tok0(const act_layout *L, const mpl_attn_piece *p)
{
    return p->s0 * L->n_tok + p->r0;
}

/* Tokens of the largest piece. */
static int64_t piece_max(const act_layout *L)
{
    const mpl_attn_geom g = {.n_seq = L->n_seq, .n_tok = L->n_tok};
    return mpl_attn_piece_max_tokens(&g, L->piece_tokens);
}

mpl_status mpl_model_act_layout(const mpl_model *m, const mpl_attn_geom *g, act_layout *out)
{
    const mpl_model_cfg *c = &m->cfg;
    const mpl_attn_ops *ops = m->attn->ops;
    const int64_t C = c->d_model, V = c->vocab_size, H4 = c->mlp_mult * C;
    const int64_t N = g->n_seq * g->n_tok;
    act_layout L;
    memset(&L, 0, sizeof L);
    if (g->n_seq < 1 || g->n_tok < 1)
        return mpl_err(MPL_ERR_ARG, "model: n_seq=%lld n_tok=%lld must be >= 1",
                       (long long)g->n_seq, (long long)g->n_tok);
    if ((int)c->recompute < 0 || c->recompute >= MPL_RECOMPUTE_COUNT)
        return mpl_err(MPL_ERR_ARG, "model: recompute=%d is not a known mode", (int)c->recompute);
    L.n_seq = g->n_seq;
    L.n_tok = g->n_tok;
    L.piece_tokens = c->piece_tokens > 0 ? c->piece_tokens : N;
    L.whole = ops->pieces == NULL;
    const int64_t w[A_COUNT] = {C, 1, C, 3 * C, C, C, 1, C, H4, H4};
    memcpy(L.w, w, sizeof w);
    /* what the forward keeps */
    for (int f = 0; f < A_COUNT; f++) {
        int keep = 1;
        if (c->recompute == MPL_RECOMPUTE_ATTN) keep = f != A_ATT;
        if (c->recompute == MPL_RECOMPUTE_LAYER) keep = f == A_XIN;
        L.keep[f] = keep ? 0 : -1;
    }
    const int keep_saved = c->recompute == MPL_RECOMPUTE_NONE;
    /* Layer 0's input is a table lookup: recompute = layer recomputes it
     * rather than keep a row of C per token. */
    L.x0_kept = c->recompute != MPL_RECOMPUTE_LAYER;
    L.dx_mode = DX_BUF;
    const int64_t Pm = piece_max(&L);
    if (L.whole) {
        L.saved_whole = ops->saved_elems(m->attn->impl, g);
    } else {
        /* the largest piece: whole sequences, or piece_tokens rows of one */
        mpl_attn_geom pg = {1, Pm, g->pos0, NULL};
        if (L.n_tok <= L.piece_tokens) pg.n_seq = Pm / L.n_tok, pg.n_tok = L.n_tok;
        L.saved_piece = ops->pieces->saved_elems(m->attn->impl, &pg);
        if (c->recompute == MPL_RECOMPUTE_LAYER)
            L.dx_mode = ops->pieces->deferred(m->attn->impl) ? DX_SHIFT : DX_ALIAS;
        L.top_alias = L.dx_mode == DX_SHIFT && c->n_layer > 1;
        L.state_per_layer = ops->pieces->state_elems(m->attn->impl, g, L.piece_tokens);
    }
    /* kept, per layer */
    int64_t off = 0;
    for (int f = 0; f < A_COUNT; f++)
        if (L.keep[f] >= 0) L.keep[f] = off, off += round16(N * L.w[f]);
    L.keep_saved = -1;
    if (keep_saved) {
        L.keep_saved = off;
        off += round16(L.whole ? L.saved_whole
                               : mpl_attn_pieces_count(g, L.piece_tokens) * L.saved_piece);
    }
    L.per_layer = off;
    off *= c->n_layer - (L.x0_kept ? 0 : 1);
    L.x_final = L.logits = L.dx = -1;
    if (c->recompute != MPL_RECOMPUTE_LAYER) L.x_final = off, off += round16(N * C);
    if (c->keep_logits) L.logits = off, off += round16(N * V);
    if (L.dx_mode == DX_BUF || c->n_layer == 1) L.dx = off, off += round16(N * C);
    L.n_acts = off;
    /* workspace: one piece of every field not kept (the whole chunk for
     * the attention's own inputs and outputs when it runs whole) */
    off = 0;
    for (int f = 0; f < A_COUNT; f++) {
        L.wpiece[f] = -1;
        if (L.keep[f] >= 0) continue;
        if (L.whole && (f == A_QKV || f == A_ATT)) continue;
        L.wpiece[f] = off, off += round16(Pm * L.w[f]);
    }
    for (int i = 0; i < 3; i++) L.wwhole[i] = -1;
    for (int i = 0; i < 2; i++) L.wdwhole[i] = -1;
    if (L.whole) {
        if (L.keep[A_QKV] < 0) L.wwhole[0] = off, off += round16(N * 3 * C);
        if (L.keep[A_ATT] < 0) L.wwhole[1] = off, off += round16(N * C);
        if (!keep_saved) L.wwhole[2] = off, off += round16(L.saved_whole);
        L.wdwhole[0] = off, off += round16(N * 3 * C);
        L.wdwhole[1] = off, off += round16(N * C);
    } else if (!keep_saved) {
        L.wwhole[2] = off, off += round16(L.saved_piece);
    }
    const int64_t X0 = L.x0_kept ? 0 : C;
    const int64_t XT = L.top_alias ? C : 0;
    const int64_t ww[W_COUNT] = {C, 1, 3 * C, X0, X0, C, C, 1, V, 1, V, C, C, C, 3 * C, C, H4, H4, XT};
    for (int f = 0; f < W_COUNT; f++) {
        if (f == W_XOUT) L.n_work_fwd = off;
        L.wbuf[f] = off, off += round16(Pm * ww[f]);
    }
    L.n_work = off;
    *out = L;
    return MPL_OK;
}

static mpl_status grow(float **buf, int64_t *cap, int64_t n)
{
    if (*buf && n <= *cap) return MPL_OK;
    mpl_slab_free(buf);
    *cap = 0;
    MPL_CHECK(mpl_slab_alloc(n > 0 ? n : 1, buf));
    *cap = n;
    return MPL_OK;
}

mpl_status mpl_model_act_alloc(mpl_model *m)
{
    const act_layout *L = &m->lay;
    const int64_t N = L->n_seq * L->n_tok;
    MPL_CHECK(grow(&m->acts, &m->cap_acts, L->n_acts));
    MPL_CHECK(grow(&m->work, &m->cap_work, L->n_work));
    if (L->top_alias) MPL_CHECK(grow(&m->work_alt, &m->cap_work_alt, L->n_work_fwd));
    MPL_CHECK(grow(&m->state, &m->cap_state, m->cfg.n_layer * L->state_per_layer));
    if (!m->tokens || N > m->cap_seq * m->cap_tok) {
        free(m->tokens);
        free(m->targets);
        m->tokens = malloc((size_t)N * sizeof *m->tokens);
        m->targets = malloc((size_t)N * sizeof *m->targets);
        if (!m->tokens || !m->targets)
            return mpl_err(MPL_ERR_NOMEM, "out of memory for %lld token ids", (long long)N);
    }
    const int64_t K = m->cfg.n_classes;
    if (K > 0 && L->n_seq > m->cap_cls) {
        free(m->pooled), free(m->count), free(m->cls_logits), free(m->dpooled), free(m->labels);
        free(m->cls_dlogits);
        const size_t S = (size_t)L->n_seq, C = (size_t)m->cfg.d_model;
        m->pooled = malloc(S * C * sizeof *m->pooled);
        m->count = malloc(S * sizeof *m->count);
        m->cls_logits = malloc(S * (size_t)K * sizeof *m->cls_logits);
        m->dpooled = malloc(S * C * sizeof *m->dpooled);
        m->labels = malloc(S * sizeof *m->labels);
        m->cls_dlogits = malloc((size_t)K * sizeof *m->cls_dlogits);
        if (!m->pooled || !m->count || !m->cls_logits || !m->dpooled || !m->labels ||
            !m->cls_dlogits)
            return mpl_err(MPL_ERR_NOMEM, "out of memory for the classifier of %lld sequences",
                           (long long)L->n_seq);
        m->cap_cls = L->n_seq;
    }
    const int64_t n_pieces = mpl_attn_pieces_count(&m->geom, L->piece_tokens);
    if (n_pieces > m->cap_pieces) {
        free(m->qkv_ready);
        m->qkv_ready = calloc((size_t)n_pieces, 1);
        if (!m->qkv_ready) return mpl_err(MPL_ERR_NOMEM, "out of memory for piece flags");
        m->cap_pieces = n_pieces;
    }
    return MPL_OK;
}

float *mpl_model_act(const mpl_model *m, int l, act_field f, const mpl_attn_piece *p)
{
    const act_layout *L = &m->lay;
    const int64_t t0 = mpl_model_piece_tok0(L, p);
    if (L->keep[f] >= 0) {
        const int64_t li = l - (L->x0_kept ? 0 : 1); /* layers stored */
        if (li < 0) return NULL;
        return m->acts + L->keep[f] + li * L->per_layer + t0 * L->w[f];
    }
    if (L->whole && f == A_QKV) return m->work + L->wwhole[0] + t0 * L->w[f];
    if (L->whole && f == A_ATT) return m->work + L->wwhole[1] + t0 * L->w[f];
    return m->work + L->wpiece[f];
}

float *mpl_model_saved(const mpl_model *m, int l, int64_t i)
{
    const act_layout *L = &m->lay;
    if (L->keep_saved >= 0)
        return m->acts + L->keep_saved + l * L->per_layer + (L->whole ? 0 : i * L->saved_piece);
    return m->work + L->wwhole[2];
}

float *mpl_model_work(const mpl_model *m, work_field f) { return m->work + m->lay.wbuf[f]; }

mpl_status mpl_model_plan(const mpl_model *m, const mpl_attn_geom *g, mpl_model_mem *out)
{
    if (m->be) return m->be->plan(m, g, out);
    act_layout L;
    MPL_CHECK(mpl_model_act_layout(m, g, &L));
    const int64_t F = (int64_t)sizeof(float), N = g->n_seq * g->n_tok;
    memset(out, 0, sizeof *out);
    out->params = m->layout.n_elems * F;
    out->grads = m->layout.n_elems * F;
    out->acts = L.n_acts * F + 2 * N * (int64_t)sizeof(int32_t) +
                mpl_attn_pieces_count(g, L.piece_tokens);
    out->attn_state = m->cfg.n_layer * L.state_per_layer * F;
    out->work = (L.n_work + (L.top_alias ? L.n_work_fwd : 0)) * F;
    const mpl_attn_ops *ops = m->attn->ops;
    if (ops->pieces && ops->pieces->work_bytes)
        out->attn_work = ops->pieces->work_bytes(m->attn->impl, g, L.piece_tokens);
    else if (L.whole && ops->work_bytes)
        out->attn_work = ops->work_bytes(m->attn->impl, g);
    return MPL_OK;
}
