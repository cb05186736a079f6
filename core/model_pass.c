/* Forward and backward of the model over pieces of the chunk
 * (model_internal.h). Two strategies for the attention:
 *   - pieces: the attention offers piecewise evaluation (core/attn.h); a
 *     block runs piece after piece in forward and in reverse in backward,
 *     recomputing what the forward did not keep. Workspace is one piece.
 *   - whole: the attention runs over the whole chunk at once; the
 *     pointwise parts around it still go piece by piece.
 * The head (final norm, tied unembedding, cross-entropy) runs per piece
 * inside the last block's loop, so no (L, V) logits exist unless the
 * config keeps them. Every sum over pieces runs in piece order, so a
 * layout gives the same bits every step, and the recompute modes give the
 * same bits as each other (recomputation repeats the very operations). */
#include <string.h>

#include "layers.h"
#include "trace.h"
#include "model_internal.h"

#define ZERO(p, n) memset((p), 0, (size_t)(n) * sizeof(float))

/* One layer's pass: the model, the piece context and the row callbacks
 * the attention uses for pieces other than the current one. */
typedef struct pass {
    mpl_model *m;
    int l;
    mpl_attn_pieces pc;
    mpl_attn_rows rows;
} pass;

static int64_t tok_of(const mpl_attn_piece *p) { return p->n_seq * p->n_tok; }
static int last_layer(const mpl_model *m, int l) { return l + 1 == (int)m->cfg.n_layer; }

/* Enumeration index of piece p (the inverse of mpl_attn_piece_at). */
static int64_t piece_number(const act_layout *L, const mpl_attn_piece *p)
{
    const int64_t P = L->piece_tokens;
    if (L->n_tok <= P) return p->s0 / (P / L->n_tok);
    return p->s0 * ((L->n_tok + P - 1) / P) + p->r0 / P;
}

/* The residual-stream gradient of piece p entering block l (or leaving
 * block l - 1), where the layout puts it (model_internal.h, dx_place). */
static float *dx_at(const mpl_model *m, int l, const mpl_attn_piece *p)
{
    const act_layout *L = &m->lay;
    float *buf = L->dx >= 0 ? m->acts + L->dx + mpl_model_piece_tok0(L, p) * m->cfg.d_model : NULL;
    switch (L->dx_mode) {
    case DX_ALIAS:
        if (l > 0) return mpl_model_act(m, l, A_XIN, p);
        return m->cfg.n_layer > 1 ? mpl_model_act(m, 1, A_XIN, p) : buf;
    case DX_SHIFT:
        if (!last_layer(m, l)) return mpl_model_act(m, l + 1, A_XIN, p);
        return L->top_alias ? mpl_model_act(m, l, A_XIN, p) : buf;
    default:
        return buf;
    }
}

/* The token (and position) embedding of piece p into x. */
static void embed_piece(const mpl_model *m, const mpl_attn_piece *p, const int32_t *tokens,
                        float *x)
{
    const int64_t C = m->cfg.d_model;
    mpl_embed_forward_f32(x, tokens + mpl_model_piece_tok0(&m->lay, p), m->params + m->wte,
                          tok_of(p), C);
    if (m->wpe >= 0)
        mpl_posemb_forward_f32(x, m->params + m->wpe, p->n_seq, p->n_tok, m->geom.pos0 + p->r0, C);
}

/* Block l's input on piece p: the kept copy, or for layer 0 where it is
 * not kept the embedding recomputed into the work field slot (W_X0 for
 * the piece being processed, W_CBX0 for the row callbacks, which run
 * while that one is in use). */
static const float *xin(const mpl_model *m, int l, const mpl_attn_piece *p, work_field slot)
{
    if (l > 0 || m->lay.x0_kept) return mpl_model_act(m, l, A_XIN, p);
    float *x = mpl_model_work(m, slot);
    embed_piece(m, p, m->tokens, x);
    return x;
}

/* Where block l's output for piece p goes: the next block's input, the
 * kept final stream, or the workspace. */
static float *xout_at(const mpl_model *m, int l, const mpl_attn_piece *p)
{
    const act_layout *L = &m->lay;
    if (!last_layer(m, l)) return mpl_model_act(m, l + 1, A_XIN, p);
    if (L->x_final >= 0) return m->acts + L->x_final + mpl_model_piece_tok0(L, p) * m->cfg.d_model;
    return mpl_model_work(m, W_XOUT);
}

/* q, k, v of piece p from x, block l's input there. */
static void norm1_qkv(const mpl_model *m, int l, const mpl_attn_piece *p, const float *x,
                      float *xn1, float *rstd1, float *qkv)
{
    const int64_t C = m->cfg.d_model, n = tok_of(p);
    const block_params *b = &m->blk[l];
    mpl_rmsnorm_forward_f32(xn1, rstd1, x, m->params + b->ln1_g, n, C, m->cfg.norm_eps);
    mpl_linear_forward_f32(qkv, xn1, m->params + b->wqkv, n, C, 3 * C);
}

/* After the attention, with xi block l's input on piece p: xmid = xi +
 * att Wo, then the MLP into out (if not NULL): out = xmid +
 * gelu(rmsnorm(xmid) W1) W2. */
static void post_attention(const mpl_model *m, int l, const mpl_attn_piece *p,
                           const float *restrict xi, float *out)
{
    const int64_t C = m->cfg.d_model, H4 = m->cfg.mlp_mult * C, n = tok_of(p);
    const block_params *b = &m->blk[l];
    const float *P = m->params;
    float *restrict xm = mpl_model_act(m, l, A_XMID, p);
    float *xn2 = mpl_model_act(m, l, A_XN2, p), *hpre = mpl_model_act(m, l, A_HPRE, p);
    float *hact = mpl_model_act(m, l, A_HACT, p);
    mpl_linear_forward_f32(xm, mpl_model_act(m, l, A_ATT, p), P + b->wo, n, C, C);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n * C; i++) xm[i] += xi[i];
    mpl_rmsnorm_forward_f32(xn2, mpl_model_act(m, l, A_RSTD2, p), xm, P + b->ln2_g, n, C,
                            m->cfg.norm_eps);
    mpl_linear_forward_f32(hpre, xn2, P + b->w1, n, C, H4);
    mpl_gelu_forward_f32(hact, hpre, n * H4);
    if (!out) return;
    mpl_linear_forward_f32(out, hact, P + b->w2, n, H4, C);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n * C; i++) out[i] += xm[i];
}

/* 1 when token i of piece p is real (not padding). */
static int piece_real(const mpl_model *m, const mpl_attn_piece *p, int64_t i, int64_t *seq)
{
    const int64_t j = i / p->n_tok, r = p->r0 + i % p->n_tok;
    *seq = p->s0 + j;
    return !m->geom.mask || m->geom.mask[*seq * m->geom.n_tok + r];
}

/* Classifier: the final norm of piece p, its real tokens added into the
 * pooled sums of their sequences. */
static void pool_forward(mpl_model *m, const mpl_attn_piece *p, const float *x)
{
    const int64_t C = m->cfg.d_model, n = tok_of(p);
    float *xnf = mpl_model_work(m, W_XNF);
    mpl_rmsnorm_forward_f32(xnf, mpl_model_work(m, W_RSTDF), x, m->params + m->lnf_g, n, C,
                            m->cfg.norm_eps);
    for (int64_t i = 0; i < n; i++) {
        int64_t s;
        if (!piece_real(m, p, i, &s)) continue;
        double *pl = m->pooled + s * C;
        for (int64_t c = 0; c < C; c++) pl[c] += xnf[i * C + c];
        m->count[s] += 1;
    }
}

/* Classifier, after every piece: the pooled means over the whole sequence
 * (summed over the ranks that share it), logits and the loss. */
static mpl_status pool_finish(mpl_model *m, double *sum, int64_t *cnt)
{
    const int64_t S = m->geom.n_seq, C = m->cfg.d_model, K = m->cfg.n_classes;
    if (m->cfg.reduce) {
        MPL_CHECK(m->cfg.reduce->sum(m->cfg.reduce->user, m->pooled, S * C));
        MPL_CHECK(m->cfg.reduce->sum(m->cfg.reduce->user, m->count, S));
    }
    for (int64_t s = 0; s < S; s++) {
        const double inv = m->count[s] > 0 ? 1.0 / m->count[s] : 0.0;
        for (int64_t c = 0; c < C; c++) m->pooled[s * C + c] *= inv;
        float *lg = m->cls_logits + s * K;
        for (int64_t k = 0; k < K; k++) {
            const float *w = m->params + m->head_w + k * C;
            double z = m->params[m->head_b + k];
            for (int64_t c = 0; c < C; c++) z += (double)w[c] * m->pooled[s * C + c];
            lg[k] = (float)z;
        }
        float loss;
        mpl_xent_forward_f32(&loss, lg, m->labels + s, 1, K);
        if (m->labels[s] >= 0 && m->cfg.head_owner) *sum += loss, (*cnt)++;
    }
    return MPL_OK;
}

/* Classifier, before the blocks' backward: the head's gradient (on the
 * head owner) and the gradient of each pooled mean (on every rank). */
static void pool_backward_head(mpl_model *m, double scale)
{
    const int64_t S = m->geom.n_seq, C = m->cfg.d_model, K = m->cfg.n_classes;
    float *G = m->grads, *dlg = m->cls_dlogits;
    for (int64_t s = 0; s < S; s++) {
        memset(dlg, 0, (size_t)K * sizeof *dlg);
        mpl_xent_backward_f32(dlg, m->cls_logits + s * K, m->labels + s, 1, K, scale);
        float *dp = m->dpooled + s * C;
        for (int64_t c = 0; c < C; c++) dp[c] = 0;
        for (int64_t k = 0; k < K; k++) {
            const float *w = m->params + m->head_w + k * C;
            for (int64_t c = 0; c < C; c++) dp[c] += dlg[k] * w[c];
            if (!m->cfg.head_owner) continue;
            float *gw = G + m->head_w + k * C;
            for (int64_t c = 0; c < C; c++) gw[c] += dlg[k] * (float)m->pooled[s * C + c];
            G[m->head_b + k] += dlg[k];
        }
        /* the mean: every real token gets an equal share */
        const float inv = m->count[s] > 0 ? (float)(1.0 / m->count[s]) : 0.0f;
        for (int64_t c = 0; c < C; c++) dp[c] *= inv;
    }
}

/* The head on piece p of the final stream x: losses (and kept logits);
 * returns the loss sum and count over real targets. */
static void head_forward(mpl_model *m, const mpl_attn_piece *p, const float *x, double *sum,
                         int64_t *cnt)
{
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, n = tok_of(p);
    const int64_t t0 = mpl_model_piece_tok0(&m->lay, p);
    if (m->cfg.n_classes > 0) {
        pool_forward(m, p, x);
        return;
    }
    float *xnf = mpl_model_work(m, W_XNF), *losses = mpl_model_work(m, W_LOSSES);
    float *lg = m->lay.logits >= 0 ? m->acts + m->lay.logits + t0 * V : mpl_model_work(m, W_LOGITS);
    mpl_rmsnorm_forward_f32(xnf, mpl_model_work(m, W_RSTDF), x, m->params + m->lnf_g, n, C,
                            m->cfg.norm_eps);
    mpl_linear_forward_f32(lg, xnf, m->params + m->wte, n, C, V);
    mpl_xent_forward_f32(losses, lg, m->targets + t0, n, V);
    for (int64_t i = 0; i < n; i++)
        if (m->targets[t0 + i] >= 0) *sum += losses[i], (*cnt)++;
}

/* The head's backward on piece p of the final stream x (recomputed from
 * x): into dxo, the gradient of x (overwritten). */
static void head_backward(mpl_model *m, const mpl_attn_piece *p, const float *x, double scale,
                          float *dxo)
{
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, n = tok_of(p);
    const int64_t t0 = mpl_model_piece_tok0(&m->lay, p);
    float *P = m->params, *G = m->grads;
    float *xnf = mpl_model_work(m, W_XNF), *rstdf = mpl_model_work(m, W_RSTDF);
    float *lg = mpl_model_work(m, W_LOGITS), *dlg = mpl_model_work(m, W_DLOGITS);
    float *dxn = mpl_model_work(m, W_DXN);
    mpl_rmsnorm_forward_f32(xnf, rstdf, x, P + m->lnf_g, n, C, m->cfg.norm_eps);
    if (m->cfg.n_classes > 0) {
        /* the pooled mean's gradient, to the real tokens */
        for (int64_t i = 0; i < n; i++) {
            int64_t sq;
            const int real = piece_real(m, p, i, &sq);
            for (int64_t c = 0; c < C; c++) dxn[i * C + c] = real ? m->dpooled[sq * C + c] : 0.0f;
        }
    } else {
        mpl_linear_forward_f32(lg, xnf, P + m->wte, n, C, V);
        ZERO(dlg, n * V);
        mpl_xent_backward_f32(dlg, lg, m->targets + t0, n, V, scale);
        ZERO(dxn, n * C);
        mpl_linear_backward_f32(dxn, G + m->wte, dlg, xnf, P + m->wte, n, C, V);
    }
    ZERO(dxo, n * C);
    mpl_rmsnorm_backward_f32(dxo, G + m->lnf_g, dxn, x, P + m->lnf_g, rstdf, n, C);
}

/* The MLP's and the output projection's backward on piece p: from dxo, the
 * gradient of the block output, into dxm (the gradient of xmid) and datt. */
static void post_attention_backward(mpl_model *m, int l, const mpl_attn_piece *p,
                                    const float *dxo, float *dxm, float *datt)
{
    const int64_t C = m->cfg.d_model, H4 = m->cfg.mlp_mult * C, n = tok_of(p);
    const block_params *b = &m->blk[l];
    float *P = m->params, *G = m->grads;
    float *dhact = mpl_model_work(m, W_DHACT), *dhpre = mpl_model_work(m, W_DHPRE);
    float *dxn = mpl_model_work(m, W_DXN);
    ZERO(dhact, n * H4);
    mpl_linear_backward_f32(dhact, G + b->w2, dxo, mpl_model_act(m, l, A_HACT, p), P + b->w2, n,
                            H4, C);
    ZERO(dhpre, n * H4);
    mpl_gelu_backward_f32(dhpre, dhact, mpl_model_act(m, l, A_HPRE, p), n * H4);
    ZERO(dxn, n * C);
    mpl_linear_backward_f32(dxn, G + b->w1, dhpre, mpl_model_act(m, l, A_XN2, p), P + b->w1, n, C,
                            H4);
    if (dxm != dxo) memcpy(dxm, dxo, (size_t)(n * C) * sizeof *dxm); /* the residual */
    mpl_rmsnorm_backward_f32(dxm, G + b->ln2_g, dxn, mpl_model_act(m, l, A_XMID, p),
                             P + b->ln2_g, mpl_model_act(m, l, A_RSTD2, p), n, C);
    ZERO(datt, n * C);
    mpl_linear_backward_f32(datt, G + b->wo, dxm, mpl_model_act(m, l, A_ATT, p), P + b->wo, n, C,
                            C);
}

/* The q, k, v projection's and the first norm's backward: dqkv of piece p
 * (with its input x, and xn1, rstd1) adds into dx, the gradient of x. */
static void qkv_backward(mpl_model *m, int l, const mpl_attn_piece *p, const float *dqkv,
                         const float *x, const float *xn1, const float *rstd1, float *dx)
{
    const int64_t C = m->cfg.d_model, n = tok_of(p);
    const block_params *b = &m->blk[l];
    float *P = m->params, *G = m->grads, *dxn = mpl_model_work(m, W_DXN);
    ZERO(dxn, n * C);
    mpl_linear_backward_f32(dxn, G + b->wqkv, dqkv, xn1, P + b->wqkv, n, C, 3 * C);
    mpl_rmsnorm_backward_f32(dx, G + b->ln1_g, dxn, x, P + b->ln1_g, rstd1, n, C);
}

/* --- the attention's row callbacks (pieces strategy) --------------------- */

static void pass_init(pass *ps, mpl_model *m, int l);
static mpl_status rows_qkv(void *user, const mpl_attn_piece *p, const float **qkv);
static mpl_status rows_add_dqkv(void *user, const mpl_attn_piece *p, const float *dqkv);
static mpl_status block_piece_forward(mpl_model *m, pass *ps, int64_t i, const mpl_attn_piece *p,
                                      const float *x, int replay, float *out, double *sum,
                                      int64_t *cnt);

/* top_alias: the top block's input on piece p, whose copy its gradient
 * has overwritten, recomputed by the block below (a replay of its forward
 * on p, bit for bit the first) in the second workspace, as the top
 * block's own pass holds the first. Kept in W_XTOP for the next call,
 * which the deferred pass makes for the same piece. */
static mpl_status top_input(mpl_model *m, const mpl_attn_piece *p, const float **x)
{
    const int64_t i = piece_number(&m->lay, p);
    float *out = mpl_model_work(m, W_XTOP);
    *x = out;
    if (m->xtop_piece == i) return MPL_OK;
    const int l = (int)m->cfg.n_layer - 2;
    float *main_work = m->work;
    m->work = m->work_alt;
    pass ps;
    pass_init(&ps, m, l);
    const mpl_status st =
        block_piece_forward(m, &ps, i, p, xin(m, l, p, W_X0), 1, out, NULL, NULL);
    m->work = main_work;
    m->xtop_piece = st == MPL_OK ? i : -1;
    return st;
}

/* Block l's input on piece p for the row callbacks. */
static mpl_status rows_input(const pass *ps, const mpl_attn_piece *p, const float **x)
{
    mpl_model *m = ps->m;
    if (m->lay.top_alias && last_layer(m, ps->l) && piece_number(&m->lay, p) >= m->top_done_from)
        return top_input(m, p, x);
    *x = xin(m, ps->l, p, W_CBX0);
    return MPL_OK;
}

static mpl_status rows_qkv(void *user, const mpl_attn_piece *p, const float **qkv)
{
    pass *ps = user;
    mpl_model *m = ps->m;
    const act_layout *L = &m->lay;
    const float *x;
    if (mpl_model_kept(L, A_QKV)) {
        /* kept: computed once, by whichever comes first, this or the loop */
        const int64_t i = piece_number(L, p);
        float *q = mpl_model_act(m, ps->l, A_QKV, p);
        if (!m->qkv_ready[i]) {
            MPL_CHECK(rows_input(ps, p, &x));
            norm1_qkv(m, ps->l, p, x, mpl_model_act(m, ps->l, A_XN1, p),
                      mpl_model_act(m, ps->l, A_RSTD1, p), q);
            m->qkv_ready[i] = 1;
        }
        *qkv = q;
        return MPL_OK;
    }
    float *q = mpl_model_work(m, W_CBQKV);
    MPL_CHECK(rows_input(ps, p, &x));
    norm1_qkv(m, ps->l, p, x, mpl_model_work(m, W_CBXN), mpl_model_work(m, W_CBRSTD), q);
    *qkv = q;
    return MPL_OK;
}

static mpl_status rows_add_dqkv(void *user, const mpl_attn_piece *p, const float *dqkv)
{
    pass *ps = user;
    mpl_model *m = ps->m;
    const int l = ps->l;
    const float *xn1, *rstd1, *x;
    MPL_CHECK(rows_input(ps, p, &x));
    if (mpl_model_kept(&m->lay, A_XN1)) {
        xn1 = mpl_model_act(m, l, A_XN1, p), rstd1 = mpl_model_act(m, l, A_RSTD1, p);
    } else {
        float *xn = mpl_model_work(m, W_CBXN), *r = mpl_model_work(m, W_CBRSTD);
        mpl_rmsnorm_forward_f32(xn, r, x, m->params + m->blk[l].ln1_g, tok_of(p), m->cfg.d_model,
                                m->cfg.norm_eps);
        xn1 = xn, rstd1 = r;
    }
    qkv_backward(m, l, p, dqkv, x, xn1, rstd1, dx_at(m, l, p));
    return MPL_OK;
}

/* The pass of layer l, its row callbacks pointing at itself. */
static void pass_init(pass *ps, mpl_model *m, int l)
{
    *ps = (pass){.m = m, .l = l};
    ps->pc = (mpl_attn_pieces){.layer = l, .g = &m->geom, .piece_tokens = m->lay.piece_tokens,
                               .state = m->state + l * m->lay.state_per_layer};
    ps->rows = (mpl_attn_rows){ps, rows_qkv, rows_add_dqkv};
    ps->pc.rows = &ps->rows;
}

/* --- pieces strategy ------------------------------------------------------ */

/* Block l on piece p (index i) from x, its input there. replay = 1 in
 * backward: recompute only what the forward did not keep, and the block
 * output only where the head needs it or into out. out NULL: the output
 * goes where xout_at says. */
static mpl_status block_piece_forward(mpl_model *m, pass *ps, int64_t i, const mpl_attn_piece *p,
                                      const float *x, int replay, float *out, double *sum,
                                      int64_t *cnt)
{
    const act_layout *L = &m->lay;
    const int l = ps->l;
    const mpl_attn_piece_ops *po = m->attn->ops->pieces;
    float *qkv = mpl_model_act(m, l, A_QKV, p);
    if (!mpl_model_kept(L, A_QKV) || (!replay && !m->qkv_ready[i]))
        norm1_qkv(m, l, p, x, mpl_model_act(m, l, A_XN1, p), mpl_model_act(m, l, A_RSTD1, p), qkv);
    if (!replay) m->qkv_ready[i] = 1;
    if (!replay || !mpl_model_kept(L, A_ATT))
        MPL_CHECK(po->forward(m->attn->impl, &ps->pc, p, replay, m->params, qkv,
                              mpl_model_act(m, l, A_ATT, p), mpl_model_saved(m, l, i)));
    const int head_needs = last_layer(m, l) && L->x_final < 0;
    if (!out && (!replay || head_needs)) out = xout_at(m, l, p);
    if (!replay || !mpl_model_kept(L, A_XMID) || out) post_attention(m, l, p, x, out);
    if (!replay && last_layer(m, l)) head_forward(m, p, out, sum, cnt);
    return MPL_OK;
}

static mpl_status layer_forward_pieces(mpl_model *m, int l, double *sum, int64_t *cnt)
{
    pass ps;
    pass_init(&ps, m, l);
    const int64_t n = mpl_attn_pieces_count(&m->geom, m->lay.piece_tokens);
    memset(m->qkv_ready, 0, (size_t)n);
    MPL_CHECK(m->attn->ops->pieces->forward_begin(m->attn->impl, &ps.pc, m->params));
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, m->lay.piece_tokens, i);
        MPL_CHECK(block_piece_forward(m, &ps, i, &p, xin(m, l, &p, W_X0), 0, NULL, sum, cnt));
    }
    return MPL_OK;
}

static mpl_status layer_backward_pieces(mpl_model *m, int l, double scale)
{
    const act_layout *L = &m->lay;
    const mpl_attn_piece_ops *po = m->attn->ops->pieces;
    const int64_t C = m->cfg.d_model;
    pass ps;
    pass_init(&ps, m, l);
    MPL_CHECK(po->backward_begin(m->attn->impl, &ps.pc));
    const int64_t n = mpl_attn_pieces_count(&m->geom, L->piece_tokens);
    const int top_alias = L->top_alias && last_layer(m, l);
    if (top_alias) m->top_done_from = n, m->xtop_piece = -1;
    for (int64_t i = n - 1; i >= 0; i--) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, L->piece_tokens, i);
        const int64_t nt = tok_of(&p);
        /* W_X0 of this workspace holds x until qkv_backward: the row
         * callbacks use W_CBX0, top_input the second workspace */
        const float *x = xin(m, l, &p, W_X0);
        MPL_CHECK(block_piece_forward(m, &ps, i, &p, x, 1, NULL, NULL, NULL));
        const float *dxo;
        if (last_layer(m, l) && L->x_final < 0) {
            head_backward(m, &p, xout_at(m, l, &p), scale, mpl_model_work(m, W_DXO));
            dxo = mpl_model_work(m, W_DXO);
        } else {
            dxo = last_layer(m, l) ? dx_at(m, l, &p) : dx_at(m, l + 1, &p);
        }
        float *dxm = mpl_model_work(m, W_DXM), *datt = mpl_model_work(m, W_DATT);
        float *dqkv = mpl_model_work(m, W_DQKV);
        post_attention_backward(m, l, &p, dxo, dxm, datt);
        ZERO(dqkv, nt * 3 * C);
        MPL_CHECK(po->backward(m->attn->impl, &ps.pc, &p, m->params, mpl_model_act(m, l, A_QKV, &p),
                               mpl_model_saved(m, l, i), datt, dqkv, m->grads));
        qkv_backward(m, l, &p, dqkv, x, mpl_model_act(m, l, A_XN1, &p),
                     mpl_model_act(m, l, A_RSTD1, &p), dxm);
        memcpy(dx_at(m, l, &p), dxm, (size_t)(nt * C) * sizeof *dxm);
        if (top_alias) m->top_done_from = i; /* its input is gone */
    }
    const mpl_status st = po->backward_end(m->attn->impl, &ps.pc, m->params);
    m->top_done_from = INT64_MAX;
    return st;
}

/* --- whole strategy -------------------------------------------------------- */

static mpl_attn_piece whole_piece(const mpl_model *m)
{
    return (mpl_attn_piece){0, m->geom.n_seq, 0, m->geom.n_tok};
}

/* q, k, v of every piece, then the attention over the whole chunk. */
static mpl_status whole_attention_forward(mpl_model *m, int l)
{
    const int64_t n = mpl_attn_pieces_count(&m->geom, m->lay.piece_tokens);
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, m->lay.piece_tokens, i);
        norm1_qkv(m, l, &p, xin(m, l, &p, W_X0), mpl_model_act(m, l, A_XN1, &p),
                  mpl_model_act(m, l, A_RSTD1, &p), mpl_model_act(m, l, A_QKV, &p));
    }
    const mpl_attn_piece all = whole_piece(m);
    MPL_CHECK(m->attn->ops->forward(m->attn->impl, l, &m->geom, m->params,
                                    mpl_model_act(m, l, A_QKV, &all),
                                    mpl_model_act(m, l, A_ATT, &all), mpl_model_saved(m, l, 0)));
    return MPL_OK;
}

static mpl_status layer_forward_whole(mpl_model *m, int l, double *sum, int64_t *cnt)
{
    MPL_CHECK(whole_attention_forward(m, l));
    const int64_t n = mpl_attn_pieces_count(&m->geom, m->lay.piece_tokens);
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, m->lay.piece_tokens, i);
        post_attention(m, l, &p, xin(m, l, &p, W_X0), xout_at(m, l, &p));
        if (last_layer(m, l)) head_forward(m, &p, xout_at(m, l, &p), sum, cnt);
    }
    return MPL_OK;
}

static mpl_status layer_backward_whole(mpl_model *m, int l, double scale)
{
    const act_layout *L = &m->lay;
    const int64_t C = m->cfg.d_model;
    const int64_t n = mpl_attn_pieces_count(&m->geom, L->piece_tokens);
    if (!mpl_model_kept(L, A_ATT)) {
        if (mpl_model_kept(L, A_QKV)) {
            const mpl_attn_piece all = whole_piece(m);
            MPL_CHECK(m->attn->ops->forward(m->attn->impl, l, &m->geom, m->params,
                                            mpl_model_act(m, l, A_QKV, &all),
                                            mpl_model_act(m, l, A_ATT, &all),
                                            mpl_model_saved(m, l, 0)));
        } else {
            MPL_CHECK(whole_attention_forward(m, l));
        }
    }
    float *datt_all = m->work + L->wdwhole[1], *dqkv_all = m->work + L->wdwhole[0];
    for (int64_t i = n - 1; i >= 0; i--) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, L->piece_tokens, i);
        const int64_t t0 = mpl_model_piece_tok0(L, &p);
        const int head_needs = last_layer(m, l) && L->x_final < 0;
        if (!mpl_model_kept(L, A_XMID) || head_needs)
            post_attention(m, l, &p, xin(m, l, &p, W_X0),
                           head_needs ? xout_at(m, l, &p) : NULL);
        const float *dxo;
        if (head_needs) {
            head_backward(m, &p, xout_at(m, l, &p), scale, mpl_model_work(m, W_DXO));
            dxo = mpl_model_work(m, W_DXO);
        } else {
            dxo = dx_at(m, l, &p); /* the dx buffer holds d(block output) */
        }
        float *dxm = dx_at(m, l, &p); /* becomes d(xmid), in place */
        post_attention_backward(m, l, &p, dxo, dxm, datt_all + t0 * C);
    }
    ZERO(dqkv_all, m->geom.n_seq * m->geom.n_tok * 3 * C);
    const mpl_attn_piece all = whole_piece(m);
    MPL_CHECK(m->attn->ops->backward(m->attn->impl, l, &m->geom, m->params,
                                     mpl_model_act(m, l, A_QKV, &all), mpl_model_saved(m, l, 0),
                                     datt_all, dqkv_all, m->grads));
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, L->piece_tokens, i);
        float *xn1 = mpl_model_act(m, l, A_XN1, &p), *rstd1 = mpl_model_act(m, l, A_RSTD1, &p);
        const float *x = xin(m, l, &p, W_X0);
        if (!mpl_model_kept(L, A_XN1))
            mpl_rmsnorm_forward_f32(xn1, rstd1, x, m->params + m->blk[l].ln1_g, tok_of(&p), C,
                                    m->cfg.norm_eps);
        qkv_backward(m, l, &p, dqkv_all + mpl_model_piece_tok0(L, &p) * 3 * C, x, xn1, rstd1,
                     dx_at(m, l, &p));
    }
    return MPL_OK;
}

/* --- the model's passes ---------------------------------------------------- */

mpl_status mpl_model_forward(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                             const int32_t *targets, double *loss_sum, int64_t *n_counted)
{
    if (m->be) return m->be->forward(m, g, tokens, targets, loss_sum, n_counted);
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size;
    const int64_t N = g->n_seq * g->n_tok;
    if (!m->cap_seq || N > m->cap_seq * m->cap_tok || g->n_tok > m->cap_tok)
        return mpl_err(MPL_ERR_ARG, "forward of %lldx%lld tokens exceeds the reserved %lldx%lld",
                       (long long)g->n_seq, (long long)g->n_tok, (long long)m->cap_seq,
                       (long long)m->cap_tok);
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return mpl_err(MPL_ERR_ARG, "token id %d at %lld outside the vocabulary [0, %lld)",
                           tokens[i], (long long)i, (long long)V);
    if (m->wpe >= 0 && (g->pos0 < 0 || g->pos0 + g->n_tok > m->cfg.n_pos))
        return mpl_err(MPL_ERR_ARG, "positions [%lld, %lld) are outside the learned positions "
                       "[0, %lld) (n_pos)", (long long)g->pos0, (long long)(g->pos0 + g->n_tok),
                       (long long)m->cfg.n_pos);
    m->have_forward = 0;
    m->geom = *g;
    MPL_CHECK(mpl_model_act_layout(m, g, &m->lay));
    MPL_CHECK(mpl_model_act_alloc(m));
    memcpy(m->tokens, tokens, (size_t)N * sizeof *tokens);
    const int cls = m->cfg.n_classes > 0;
    for (int64_t i = 0; i < N; i++) m->targets[i] = targets && !cls ? targets[i] : -1;
    if (cls) {
        for (int64_t s = 0; s < g->n_seq; s++) {
            const int32_t y = targets ? targets[s] : -1;
            if (y >= m->cfg.n_classes)
                return mpl_err(MPL_ERR_ARG, "label %d of sequence %lld outside [0, %lld)", y,
                               (long long)s, (long long)m->cfg.n_classes);
            m->labels[s] = y;
        }
        memset(m->pooled, 0, (size_t)(g->n_seq * C) * sizeof *m->pooled);
        memset(m->count, 0, (size_t)g->n_seq * sizeof *m->count);
    }
    const int64_t n = mpl_attn_pieces_count(g, m->lay.piece_tokens);
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(g, m->lay.piece_tokens, i);
        if (m->lay.x0_kept) embed_piece(m, &p, tokens, mpl_model_act(m, 0, A_XIN, &p));
    }
    double sum = 0;
    int64_t cnt = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const double t0 = mpl_trace_now();
        if (m->lay.whole) MPL_CHECK(layer_forward_whole(m, l, &sum, &cnt));
        else MPL_CHECK(layer_forward_pieces(m, l, &sum, &cnt));
        mpl_trace_span(t0, "forward layer", l, "compute", MPL_TRACE_MAIN);
    }
    if (cls) MPL_CHECK(pool_finish(m, &sum, &cnt));
    if (loss_sum) *loss_sum = sum;
    if (n_counted) *n_counted = cnt;
    m->have_forward = 1;
    return MPL_OK;
}

void mpl_model_set_grad_ready(mpl_model *m, mpl_grad_ready_fn fn, void *ctx)
{
    m->grad_ready = fn;
    m->grad_ready_ctx = ctx;
}

/* Where block l's parameters begin in the slab: its first tensor (ln1.g,
 * core/model.c declares a block's tensors together, in this order). */
static int64_t block_start(const mpl_model *m, int l) { return m->blk[l].ln1_g; }

mpl_status mpl_model_backward(mpl_model *m, double loss_scale)
{
    if (m->be) return m->be->backward(m, loss_scale);
    if (!m->have_forward) return mpl_err(MPL_ERR_ARG, "backward without a forward");
    const act_layout *L = &m->lay;
    const int64_t C = m->cfg.d_model;
    const int64_t n = mpl_attn_pieces_count(&m->geom, L->piece_tokens);
    const int top = (int)m->cfg.n_layer - 1;
    if (m->cfg.n_classes > 0) pool_backward_head(m, loss_scale);
    if (L->x_final >= 0) {
        /* the final stream is kept: the head's backward fills dx first, in
         * the order the fused head of recompute = layer takes */
        for (int64_t i = n - 1; i >= 0; i--) {
            const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, L->piece_tokens, i);
            head_backward(m, &p, xout_at(m, top, &p), loss_scale, dx_at(m, top, &p));
        }
    }
    for (int l = top; l >= 0; l--) {
        const double t0 = mpl_trace_now();
        if (L->whole) MPL_CHECK(layer_backward_whole(m, l, loss_scale));
        else MPL_CHECK(layer_backward_pieces(m, l, loss_scale));
        mpl_trace_span(t0, "backward layer", l, "compute", MPL_TRACE_MAIN);
        if (m->grad_ready) {
            const int64_t lo = block_start(m, l), hi = l == top ? m->layout.n_elems
                                                                : block_start(m, l + 1);
            MPL_CHECK(m->grad_ready(m->grad_ready_ctx, lo, hi - lo));
        }
    }
    for (int64_t i = 0; i < n; i++) {
        const mpl_attn_piece p = mpl_attn_piece_at(&m->geom, L->piece_tokens, i);
        mpl_embed_backward_f32(m->grads + m->wte, dx_at(m, 0, &p),
                               m->tokens + mpl_model_piece_tok0(L, &p), tok_of(&p), C);
        if (m->wpe >= 0)
            mpl_posemb_backward_f32(m->grads + m->wpe, dx_at(m, 0, &p), p.n_seq, p.n_tok,
                                    m->geom.pos0 + p.r0, C);
    }
    if (m->grad_ready) MPL_CHECK(m->grad_ready(m->grad_ready_ctx, 0, block_start(m, 0)));
    return MPL_OK;
}
