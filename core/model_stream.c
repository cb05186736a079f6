/* Generation token by token through the attention's streaming form
 * (mpl_model_stream_*): the blocks of mpl_model_forward on one row per
 * sequence, with per-layer attention states, so a token costs work
 * independent of its position. */
#include <stdlib.h>

#include "layers.h"
#include "model_internal.h"

void mpl_model_stream_end(mpl_model *m)
{
    if (!m->st_attn) return;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (m->st_attn[l]) m->attn->ops->stream_destroy(&m->st_attn[l]);
    free(m->st_attn);
    m->st_attn = NULL;
    mpl_slab_free(&m->st_buf);
}

mpl_status mpl_model_stream_begin(mpl_model *m, int64_t n_seq)
{
    mpl_status st = MPL_OK;
    const mpl_attn_ops *ops = m->attn->ops;
    if (m->be)
        return mpl_err(MPL_ERR_UNSUPPORTED, "the %s model has no streaming form (generate with "
                       "a CPU model: checkpoints load on either)", m->be->name);
    if (!ops->stream_create || !ops->stream_step || !ops->stream_destroy)
        return mpl_err(MPL_ERR_UNSUPPORTED, "attention '%s' has no streaming form", ops->name);
    if (n_seq < 1) return mpl_err(MPL_ERR_ARG, "stream of n_seq=%lld sequences", (long long)n_seq);
    if (m->cfg.n_classes > 0)
        return mpl_err(MPL_ERR_UNSUPPORTED, "a classifier (n_classes=%lld) does not generate",
                       (long long)m->cfg.n_classes);
    mpl_model_stream_end(m);
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    m->st_attn = calloc((size_t)m->cfg.n_layer, sizeof *m->st_attn);
    if (!m->st_attn) return mpl_err(MPL_ERR_NOMEM, "out of memory for a stream");
    for (int l = 0; l < m->cfg.n_layer; l++)
        MPL_CHECK_GOTO(ops->stream_create(m->attn->impl, l, n_seq, &m->st_attn[l]), fail);
    /* x, xn, qkv(3C), att, h(2*H4), logits(V), rstd, per sequence */
    MPL_CHECK_GOTO(mpl_slab_alloc(n_seq * (7 * C + 2 * H4 + V + 1), &m->st_buf), fail);
    m->st_seq = n_seq;
    m->st_pos = 0;
    return MPL_OK;
fail:
    mpl_model_stream_end(m);
    return st;
}

mpl_status mpl_model_stream_step(mpl_model *m, const int32_t *tokens, const float **logits)
{
    if (!m->st_attn) return mpl_err(MPL_ERR_ARG, "stream_step without stream_begin");
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    const int64_t N = m->st_seq;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return mpl_err(MPL_ERR_ARG, "token id %d outside the vocabulary [0, %lld)", tokens[i],
                           (long long)V);
    float *P = m->params, *b = m->st_buf;
    float *x = b, *xn = x + N * C, *qkv = xn + N * C, *att = qkv + 3 * N * C;
    float *h_pre = att + N * C, *h_act = h_pre + N * H4, *tmp = h_act + N * H4;
    float *lg = tmp + N * C, *rstd = lg + N * V;
    /* The same layers as mpl_model_forward, one row per sequence. */
    if (m->wpe >= 0 && m->st_pos >= m->cfg.n_pos)
        return mpl_err(MPL_ERR_ARG, "position %lld is past the learned positions (n_pos=%lld)",
                       (long long)m->st_pos, (long long)m->cfg.n_pos);
    mpl_embed_forward_f32(x, tokens, P + m->wte, N, C);
    /* N sequences of one token each, all at position st_pos */
    if (m->wpe >= 0) mpl_posemb_forward_f32(x, P + m->wpe, N, 1, m->st_pos, C);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const block_params *bp = &m->blk[l];
        mpl_rmsnorm_forward_f32(xn, rstd, x, P + bp->ln1_g, N, C, m->cfg.norm_eps);
        mpl_linear_forward_f32(qkv, xn, P + bp->wqkv, N, C, 3 * C);
        MPL_CHECK(m->attn->ops->stream_step(m->attn->impl, l, m->st_attn[l], P, m->st_pos, qkv,
                                            att));
        mpl_linear_forward_f32(tmp, att, P + bp->wo, N, C, C);
        for (int64_t i = 0; i < N * C; i++) x[i] += tmp[i];
        mpl_rmsnorm_forward_f32(xn, rstd, x, P + bp->ln2_g, N, C, m->cfg.norm_eps);
        mpl_linear_forward_f32(h_pre, xn, P + bp->w1, N, C, H4);
        mpl_gelu_forward_f32(h_act, h_pre, N * H4);
        mpl_linear_forward_f32(tmp, h_act, P + bp->w2, N, H4, C);
        for (int64_t i = 0; i < N * C; i++) x[i] += tmp[i];
    }
    mpl_rmsnorm_forward_f32(xn, rstd, x, P + m->lnf_g, N, C, m->cfg.norm_eps);
    mpl_linear_forward_f32(lg, xn, P + m->wte, N, C, V);
    m->st_pos++;
    *logits = lg;
    return MPL_OK;
}
