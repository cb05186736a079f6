/* Forward and backward of the CUDA model (model_cuda.h) over the whole
 * chunk, every operation queued on the context's one stream: the same
 * blocks as core/model_pass.c, with bf16 products (fp32 accumulation) from
 * the bf16 copy of the parameters, fp32 residual stream, norms and
 * attention, and the residual adds folded into the products (D = x W^T +
 * residual). The forward also leaves the unscaled gradient of the
 * cross-entropy (softmax - onehot) for the backward, whose products apply
 * the loss scale. The loss stays on the device unless asked for, so a
 * training step needs no copy back before the optimizer. */
#include <string.h>

#include "check.h"
#include "gemm.h"
#include "kernels.h"
#include "model_cuda.h"

typedef struct ctx {
    mpl_model *m;
    mpl_model_cuda *mc;
    mpl_cuda *cu;
    cudaStream_t s;
    int64_t N, C, H4, V;
} ctx;

static ctx ctx_of(mpl_model *m)
{
    mpl_model_cuda *mc = m->be_impl;
    const int64_t C = m->cfg.d_model;
    return (ctx){m, mc, mc->cu, mpl_cuda_stream(mc->cu), mc->geom.n_seq * mc->geom.n_tok, C,
                 m->cfg.mlp_mult * C, m->cfg.vocab_size};
}

/* Tokens, targets and the embedding's token groups in one host buffer,
 * uploaded in one copy: [tok N | tgt N | pos N | ids n_ids | start n_ids+1]. */
static mpl_status upload_ints(ctx *x, const int32_t *tokens, const int32_t *targets)
{
    mpl_model_cuda *mc = x->mc;
    const int64_t N = x->N;
    int32_t *h = mc->h_ints, *pos = h + 2 * N, *ids = h + 3 * N;
    memcpy(h, tokens, (size_t)N * sizeof *h);
    for (int64_t i = 0; i < N; i++) h[N + i] = targets ? targets[i] : -1;
    int32_t *start = ids + x->V; /* ids needs at most V entries */
    mc->n_ids = mpl_cuda_embed_groups(tokens, N, x->V, ids, start, pos, mc->h_work);
    /* pack start right after the n_ids ids */
    memmove(ids + mc->n_ids, start, (size_t)(mc->n_ids + 1) * sizeof *ids);
    MPL_CHECK(mpl_cuda_upload(x->cu, mc->ints, h,
                              (size_t)(3 * N + 2 * mc->n_ids + 1) * sizeof *h));
    return MPL_OK;
}

static const int32_t *d_tok(const ctx *x) { return x->mc->ints; }
static const int32_t *d_tgt(const ctx *x) { return x->mc->ints + x->N; }
static const int32_t *d_pos(const ctx *x) { return x->mc->ints + 2 * x->N; }
static const int32_t *d_ids(const ctx *x) { return x->mc->ints + 3 * x->N; }
static const int32_t *d_start(const ctx *x) { return d_ids(x) + x->mc->n_ids; }

/* Block l: xin -> xout (the next block's xin, or xfin). */
static mpl_status block_forward(ctx *x, int l)
{
    mpl_model *m = x->m;
    mpl_model_cuda *mc = x->mc;
    const block_params *bp = &m->blk[l];
    cuda_block_acts *a = &mc->blk[l];
    const float *P = mc->params;
    const mpl_bf16 *Pb = mc->params_bf;
    const int64_t N = x->N, C = x->C, H4 = x->H4;
    float *xout = l + 1 < m->cfg.n_layer ? mc->blk[l + 1].xin : mc->xfin;
    MPL_CHECK(mpl_cuda_rmsnorm_forward(a->xn1, a->rstd1, a->xin, P + bp->ln1_g, N, C,
                                       m->cfg.norm_eps, x->s));
    MPL_CHECK(mpl_cuda_linear_forward(x->cu, a->qkv, MPL_CUDA_F32, a->xn1, Pb + bp->wqkv, NULL,
                                      N, C, 3 * C));
    MPL_CHECK(m->attn->ops->forward(m->attn->impl, l, &mc->geom, P, a->qkv, mc->att_f, a->saved));
    MPL_CHECK(mpl_cuda_to_bf16(a->att, mc->att_f, N * C, x->s));
    MPL_CHECK(mpl_cuda_linear_forward(x->cu, a->xmid, MPL_CUDA_F32, a->att, Pb + bp->wo, a->xin,
                                      N, C, C));
    MPL_CHECK(mpl_cuda_rmsnorm_forward(a->xn2, a->rstd2, a->xmid, P + bp->ln2_g, N, C,
                                       m->cfg.norm_eps, x->s));
    MPL_CHECK(mpl_cuda_linear_forward(x->cu, a->hpre, MPL_CUDA_BF16, a->xn2, Pb + bp->w1, NULL,
                                      N, C, H4));
    MPL_CHECK(mpl_cuda_gelu_forward(a->hact, a->hpre, N * H4, x->s));
    MPL_CHECK(mpl_cuda_linear_forward(x->cu, xout, MPL_CUDA_F32, a->hact, Pb + bp->w2, a->xmid,
                                      N, H4, C));
    return MPL_OK;
}

mpl_status mpl_model_cuda_forward(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                                  const int32_t *targets, double *loss_sum, int64_t *n_counted)
{
    mpl_model_cuda *mc = m->be_impl;
    const int64_t V = m->cfg.vocab_size, N = g->n_seq * g->n_tok;
    if (g->n_seq < 1 || g->n_tok < 1)
        return mpl_err(MPL_ERR_ARG, "forward: n_seq=%lld n_tok=%lld must be >= 1",
                       (long long)g->n_seq, (long long)g->n_tok);
    if (!m->cap_seq || N > m->cap_seq * m->cap_tok || g->n_tok > m->cap_tok)
        return mpl_err(MPL_ERR_ARG, "forward of %lldx%lld tokens exceeds the reserved %lldx%lld",
                       (long long)g->n_seq, (long long)g->n_tok, (long long)m->cap_seq,
                       (long long)m->cap_tok);
    int64_t cnt = 0;
    for (int64_t i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return mpl_err(MPL_ERR_ARG, "token id %d at %lld outside the vocabulary [0, %lld)",
                           tokens[i], (long long)i, (long long)V);
        if (targets && targets[i] >= V)
            return mpl_err(MPL_ERR_ARG, "target id %d at %lld outside the vocabulary [0, %lld)",
                           targets[i], (long long)i, (long long)V);
        cnt += targets && targets[i] >= 0;
    }
    mc->have_forward = 0;
    MPL_CHECK(mpl_model_cuda_bind(m, g));
    ctx x = ctx_of(m);
    MPL_CHECK(upload_ints(&x, tokens, targets));
    const float *P = mc->params;
    MPL_CHECK(mpl_cuda_embed_forward(mc->blk[0].xin, d_tok(&x), P + m->wte, N, x.C, x.s));
    for (int l = 0; l < m->cfg.n_layer; l++) MPL_CHECK(block_forward(&x, l));
    /* head: final norm, tied unembedding, cross-entropy and its gradient */
    MPL_CHECK(mpl_cuda_rmsnorm_forward(mc->xnf, mc->rstdf, mc->xfin, P + m->lnf_g, N, x.C,
                                       m->cfg.norm_eps, x.s));
    MPL_CHECK(mpl_cuda_linear_forward(x.cu, mc->logits, MPL_CUDA_F32, mc->xnf,
                                      mc->params_bf + m->wte, NULL, N, x.C, V));
    MPL_CHECK(mpl_cuda_xent_forward(mc->losses, mc->dlogits, mc->logits, d_tgt(&x), N, V, x.s));
    MPL_CHECK(mpl_cuda_sum(mc->loss_sum, mc->losses, N, 0, mc->sum_part, x.s));
    if (loss_sum) MPL_CHECK(mpl_cuda_download(x.cu, loss_sum, mc->loss_sum, sizeof *loss_sum));
    if (n_counted) *n_counted = cnt;
    m->geom = *g;
    mc->have_forward = 1;
    return MPL_OK;
}

/* Block l backward: mc->dx holds d(block output) in fp32 and mc->dxb in
 * bf16; leaves d(block input) in both. */
static mpl_status block_backward(ctx *x, int l)
{
    mpl_model *m = x->m;
    mpl_model_cuda *mc = x->mc;
    const block_params *bp = &m->blk[l];
    cuda_block_acts *a = &mc->blk[l];
    const float *P = mc->params;
    const mpl_bf16 *Pb = mc->params_bf;
    float *G = mc->grads;
    const int64_t N = x->N, C = x->C, H4 = x->H4;
    /* MLP: dW2, dh = dxo W2, GELU, dW1, dxn2 = dh W1 */
    MPL_CHECK(mpl_cuda_linear_backward_w(x->cu, G + bp->w2, 1, mc->dxb, a->hact, N, H4, C));
    MPL_CHECK(mpl_cuda_linear_backward_x(x->cu, mc->dh, MPL_CUDA_BF16, 1, mc->dxb, Pb + bp->w2, N,
                                         H4, C));
    MPL_CHECK(mpl_cuda_gelu_backward(mc->dh, a->hpre, N * H4, x->s));
    MPL_CHECK(mpl_cuda_linear_backward_w(x->cu, G + bp->w1, 1, mc->dh, a->xn2, N, C, H4));
    MPL_CHECK(mpl_cuda_linear_backward_x(x->cu, mc->dxn, MPL_CUDA_F32, 1, mc->dh, Pb + bp->w1, N,
                                         C, H4));
    /* dx += the second norm's backward: dx = d(xmid) */
    MPL_CHECK(mpl_cuda_rmsnorm_backward(mc->dx, mc->dxb, 1, mc->dxn, a->xmid, P + bp->ln2_g,
                                        a->rstd2, N, C, x->s));
    MPL_CHECK(mpl_cuda_colsum(G + bp->ln2_g, mc->dxn, a->xmid, a->rstd2, N, C, mc->colsum_part,
                              x->s));
    /* attention: dWo, datt = dxmid Wo, the attention's backward */
    MPL_CHECK(mpl_cuda_linear_backward_w(x->cu, G + bp->wo, 1, mc->dxb, a->att, N, C, C));
    MPL_CHECK(mpl_cuda_linear_backward_x(x->cu, mc->datt, MPL_CUDA_F32, 1, mc->dxb, Pb + bp->wo,
                                         N, C, C));
    MPL_CHECK(mpl_cuda_zero(x->cu, mc->dqkv, (size_t)(N * 3 * C) * sizeof(float)));
    MPL_CHECK(m->attn->ops->backward(m->attn->impl, l, &mc->geom, P, a->qkv, a->saved, mc->datt,
                                     mc->dqkv, G));
    MPL_CHECK(mpl_cuda_to_bf16(mc->dqkv_b, mc->dqkv, N * 3 * C, x->s));
    MPL_CHECK(mpl_cuda_linear_backward_w(x->cu, G + bp->wqkv, 1, mc->dqkv_b, a->xn1, N, C, 3 * C));
    MPL_CHECK(mpl_cuda_linear_backward_x(x->cu, mc->dxn, MPL_CUDA_F32, 1, mc->dqkv_b,
                                         Pb + bp->wqkv, N, C, 3 * C));
    /* dx += the first norm's backward: dx = d(xin) */
    MPL_CHECK(mpl_cuda_rmsnorm_backward(mc->dx, mc->dxb, 1, mc->dxn, a->xin, P + bp->ln1_g,
                                        a->rstd1, N, C, x->s));
    MPL_CHECK(mpl_cuda_colsum(G + bp->ln1_g, mc->dxn, a->xin, a->rstd1, N, C, mc->colsum_part,
                              x->s));
    return MPL_OK;
}

mpl_status mpl_model_cuda_backward(mpl_model *m, double loss_scale)
{
    mpl_model_cuda *mc = m->be_impl;
    if (!mc->have_forward) return mpl_err(MPL_ERR_ARG, "backward without a forward");
    ctx x = ctx_of(m);
    const int64_t N = x.N, C = x.C, V = x.V;
    const float *P = mc->params;
    float *G = mc->grads;
    const float alpha = (float)loss_scale;
    /* head: dxnf = s dlogits wte, dwte += s dlogits^T xnf, final norm */
    MPL_CHECK(mpl_cuda_linear_backward_x(x.cu, mc->dxn, MPL_CUDA_F32, alpha, mc->dlogits,
                                         mc->params_bf + m->wte, N, C, V));
    MPL_CHECK(mpl_cuda_linear_backward_w(x.cu, G + m->wte, alpha, mc->dlogits, mc->xnf, N, C, V));
    MPL_CHECK(mpl_cuda_rmsnorm_backward(mc->dx, mc->dxb, 0, mc->dxn, mc->xfin, P + m->lnf_g,
                                        mc->rstdf, N, C, x.s));
    MPL_CHECK(mpl_cuda_colsum(G + m->lnf_g, mc->dxn, mc->xfin, mc->rstdf, N, C, mc->colsum_part,
                              x.s));
    for (int l = (int)m->cfg.n_layer - 1; l >= 0; l--) MPL_CHECK(block_backward(&x, l));
    MPL_CHECK(mpl_cuda_embed_backward(G + m->wte, mc->dx, d_ids(&x), d_start(&x), d_pos(&x),
                                      mc->n_ids, C, x.s));
    return MPL_OK;
}
