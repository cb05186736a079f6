/* The CUDA model (model_cuda.h): attaching it to a model whose layout the
 * CPU code built, its device slabs, the carving of activations and
 * workspace for a geometry, the memory plan, and the copies between the
 * device slabs and the host mirrors. The passes are in model_cuda_pass.c. */
#include "model_cuda.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels.h"

static const char *const recompute_names[] = {"none", "attn", "layer"};

static void *take(mpl_cuda_carve *c, int64_t n_elems, size_t elem_bytes)
{
    return mpl_cuda_carve_take(c, n_elems, elem_bytes);
}

static int64_t ints_for(const mpl_model *m, int64_t N)
{
    return 3 * N + 2 * m->cfg.vocab_size + 2; /* tokens, targets, positions, ids, starts */
}

/* Offsets of every buffer for geometry g; assigns the pointers when the
 * bases are set. */
static void carve_all(mpl_model *m, mpl_model_cuda *mc, const mpl_attn_geom *g,
                      mpl_cuda_carve *A, mpl_cuda_carve *W)
{
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, H4 = m->cfg.mlp_mult * C;
    const int64_t N = g->n_seq * g->n_tok;
    const int64_t sv = m->attn->ops->saved_elems(m->attn->impl, g);
    const size_t F = sizeof(float), B = sizeof(mpl_bf16);
    for (int64_t l = 0; l < m->cfg.n_layer; l++) {
        cuda_block_acts *b = &mc->blk[l];
        b->xin = take(A, N * C, F);
        b->rstd1 = take(A, N, F);
        b->xn1 = take(A, N * C, B);
        b->qkv = take(A, N * 3 * C, F);
        b->saved = take(A, sv, F);
        b->att = take(A, N * C, B);
        b->xmid = take(A, N * C, F);
        b->rstd2 = take(A, N, F);
        b->xn2 = take(A, N * C, B);
        b->hpre = take(A, N * H4, B);
        b->hact = take(A, N * H4, B);
    }
    mc->xfin = take(A, N * C, F);
    mc->rstdf = take(A, N, F);
    mc->xnf = take(A, N * C, B);
    mc->dlogits = take(A, N * V, B);
    mc->losses = take(A, N, F);
    mc->loss_sum = take(A, 1, sizeof(double));
    mc->ints = take(A, ints_for(m, N), sizeof(int32_t));
    mc->logits = take(W, N * V, F);
    mc->att_f = take(W, N * C, F);
    mc->dx = take(W, N * C, F);
    mc->dxb = take(W, N * C, B);
    mc->dxn = take(W, N * C, F);
    mc->dh = take(W, N * H4, B);
    mc->datt = take(W, N * C, F);
    mc->dqkv = take(W, N * 3 * C, F);
    mc->dqkv_b = take(W, N * 3 * C, B);
    mc->colsum_part = take(W, mpl_cuda_colsum_partials(N, C), F);
    mc->sum_part = take(W, MPL_CUDA_SUM_BLOCKS, sizeof(double));
    mc->saved_per_layer = sv;
}

static mpl_status check_geom(const mpl_model *m, const mpl_attn_geom *g)
{
    if (g->n_seq < 1 || g->n_tok < 1)
        return mpl_err(MPL_ERR_ARG, "model: n_seq=%lld n_tok=%lld must be >= 1",
                       (long long)g->n_seq, (long long)g->n_tok);
    if (g->mask)
        return mpl_err(MPL_ERR_UNSUPPORTED, "the %s model takes no padding mask yet",
                       m->be->name);
    return MPL_OK;
}

mpl_status mpl_model_cuda_bind(mpl_model *m, const mpl_attn_geom *g)
{
    mpl_model_cuda *mc = m->be_impl;
    MPL_CHECK(check_geom(m, g));
    mpl_cuda_carve A = {0}, W = {0};
    carve_all(m, mc, g, &A, &W);
    if (A.off > mc->cap_acts) {
        mpl_cuda_free(mc->cu, &mc->acts);
        mc->cap_acts = 0;
        MPL_CHECK(mpl_cuda_alloc(mc->cu, A.off, &mc->acts));
        mc->cap_acts = A.off;
    }
    if (W.off > mc->cap_work) {
        mpl_cuda_free(mc->cu, &mc->work);
        mc->cap_work = 0;
        MPL_CHECK(mpl_cuda_alloc(mc->cu, W.off, &mc->work));
        mc->cap_work = W.off;
    }
    const int64_t n_ints = ints_for(m, g->n_seq * g->n_tok);
    if (n_ints > mc->cap_ints) {
        free(mc->h_ints);
        mc->h_ints = malloc((size_t)n_ints * sizeof *mc->h_ints);
        if (!mc->h_ints) {
            mc->cap_ints = 0;
            return mpl_err(MPL_ERR_NOMEM, "out of memory for %lld token ids", (long long)n_ints);
        }
        mc->cap_ints = n_ints;
    }
    A = (mpl_cuda_carve){mc->acts, 0};
    W = (mpl_cuda_carve){mc->work, 0};
    carve_all(m, mc, g, &A, &W);
    mc->geom = *g;
    return MPL_OK;
}

static void cuda_destroy(mpl_model *m)
{
    mpl_model_cuda *mc = m->be_impl;
    if (!mc) return;
    if (mc->cu) {
        if (mpl_cuda_sync(mc->cu) != MPL_OK) mpl_err_clear(); /* nothing may still use them */
        mpl_cuda_free(mc->cu, (void **)&mc->params);
        mpl_cuda_free(mc->cu, (void **)&mc->grads);
        mpl_cuda_free(mc->cu, (void **)&mc->params_bf);
        mpl_cuda_free(mc->cu, (void **)&mc->t_off);
        mpl_cuda_free(mc->cu, (void **)&mc->t_n);
        mpl_cuda_free(mc->cu, (void **)&mc->t_decay);
        mpl_cuda_free(mc->cu, &mc->acts);
        mpl_cuda_free(mc->cu, &mc->work);
    }
    free(mc->blk);
    free(mc->h_ints);
    free(mc->h_work);
    free(mc);
    m->be_impl = NULL;
}

static mpl_status cuda_reserve(mpl_model *m, int64_t n_seq, int64_t n_tok)
{
    if (n_seq < 1 || n_tok < 1)
        return mpl_err(MPL_ERR_ARG, "reserve: n_seq=%lld n_tok=%lld must be >= 1",
                       (long long)n_seq, (long long)n_tok);
    mpl_model_cuda *mc = m->be_impl;
    mc->have_forward = 0;
    const mpl_attn_geom g = {n_seq, n_tok, 0, NULL};
    MPL_CHECK(mpl_model_cuda_bind(m, &g));
    m->cap_seq = n_seq;
    m->cap_tok = n_tok;
    return MPL_OK;
}

static mpl_status cuda_plan(const mpl_model *m, const mpl_attn_geom *g, mpl_model_mem *out)
{
    mpl_model_cuda tmp;
    memset(&tmp, 0, sizeof tmp);
    memset(out, 0, sizeof *out);
    MPL_CHECK(check_geom(m, g));
    tmp.blk = calloc((size_t)m->cfg.n_layer, sizeof *tmp.blk);
    if (!tmp.blk) return mpl_err(MPL_ERR_NOMEM, "out of memory for a plan");
    mpl_cuda_carve A = {0}, W = {0};
    carve_all((mpl_model *)m, &tmp, g, &A, &W);
    free(tmp.blk);
    const int64_t n = m->layout.n_elems;
    out->params = n * (int64_t)(sizeof(float) + sizeof(mpl_bf16)); /* master + bf16 copy */
    out->grads = n * (int64_t)sizeof(float);
    out->acts = (int64_t)A.off;
    out->work = (int64_t)W.off;
    if (m->attn->ops->work_bytes) out->attn_work = m->attn->ops->work_bytes(m->attn->impl, g);
    return MPL_OK;
}

static mpl_status cuda_zero_grad(mpl_model *m)
{
    mpl_model_cuda *mc = m->be_impl;
    MPL_CHECK(mpl_cuda_zero(mc->cu, mc->grads, (size_t)m->layout.n_elems * sizeof(float)));
    return MPL_OK;
}

static mpl_status cuda_params_push(mpl_model *m)
{
    mpl_model_cuda *mc = m->be_impl;
    const int64_t n = m->layout.n_elems;
    MPL_CHECK(mpl_cuda_upload(mc->cu, mc->params, m->params, (size_t)n * sizeof(float)));
    MPL_CHECK(mpl_cuda_to_bf16(mc->params_bf, mc->params, n, mpl_cuda_stream(mc->cu)));
    return MPL_OK;
}

static mpl_status cuda_params_pull(mpl_model *m)
{
    mpl_model_cuda *mc = m->be_impl;
    MPL_CHECK(mpl_cuda_download(mc->cu, m->params, mc->params,
                                (size_t)m->layout.n_elems * sizeof(float)));
    return MPL_OK;
}

static mpl_status cuda_grads_pull(mpl_model *m)
{
    mpl_model_cuda *mc = m->be_impl;
    MPL_CHECK(mpl_cuda_download(mc->cu, m->grads, mc->grads,
                                (size_t)m->layout.n_elems * sizeof(float)));
    return MPL_OK;
}

static const mpl_model_backend cuda_backend = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .reserve = cuda_reserve,
    .plan = cuda_plan,
    .forward = mpl_model_cuda_forward,
    .backward = mpl_model_cuda_backward,
    .zero_grad = cuda_zero_grad,
    .params_pull = cuda_params_pull,
    .params_push = cuda_params_push,
    .grads_pull = cuda_grads_pull,
};

static mpl_status check_supported(const mpl_model *m)
{
    const mpl_model_cfg *c = &m->cfg;
    if (!c->cuda)
        return mpl_err(MPL_ERR_ARG, "device=cuda: the model config has no CUDA context");
    if (m->attn->ops->device != MPL_DEVICE_CUDA)
        return mpl_err(MPL_ERR_ARG,
                       "device=cuda: attention '%s' was created for the CPU; create it with "
                       "device=cuda", m->attn->ops->name);
    if (c->recompute != MPL_RECOMPUTE_NONE)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "device=cuda keeps every activation in this version: recompute=%s runs "
                       "on the CPU only (use recompute=none)", recompute_names[c->recompute]);
    if (c->n_classes > 0)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "device=cuda trains language models only in this version (n_classes=%lld)",
                       (long long)c->n_classes);
    if (c->keep_logits)
        return mpl_err(MPL_ERR_UNSUPPORTED, "device=cuda does not keep logits (keep_logits=1)");
    if (c->n_pos > 0)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "device=cuda has no learned absolute positions in this version (n_pos=%lld; "
                       "use n_pos=0)", (long long)c->n_pos);
    return MPL_OK;
}

/* The AdamW tables, from the layout. */
static mpl_status upload_tables(mpl_model *m, mpl_model_cuda *mc)
{
    const int nt = m->layout.n_tensors;
    int64_t *off = malloc((size_t)nt * sizeof *off), *n = malloc((size_t)nt * sizeof *n);
    int32_t *dec = malloc((size_t)nt * sizeof *dec);
    mpl_status st = MPL_OK;
    if (!off || !n || !dec) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for %d tensors", nt);
    mc->max_tensor = 0;
    for (int t = 0; t < nt; t++) {
        off[t] = m->layout.t[t].offset;
        n[t] = m->layout.t[t].n_elems;
        dec[t] = m->layout.t[t].decay;
        if (n[t] > mc->max_tensor) mc->max_tensor = n[t];
    }
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (size_t)nt * sizeof *off, (void **)&mc->t_off), done);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (size_t)nt * sizeof *n, (void **)&mc->t_n), done);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (size_t)nt * sizeof *dec, (void **)&mc->t_decay), done);
    MPL_CHECK_GOTO(mpl_cuda_upload(mc->cu, mc->t_off, off, (size_t)nt * sizeof *off), done);
    MPL_CHECK_GOTO(mpl_cuda_upload(mc->cu, mc->t_n, n, (size_t)nt * sizeof *n), done);
    MPL_CHECK_GOTO(mpl_cuda_upload(mc->cu, mc->t_decay, dec, (size_t)nt * sizeof *dec), done);
done:
    free(off), free(n), free(dec);
    return st;
}

mpl_status mpl_model_cuda_attach(mpl_model *m)
{
    mpl_status st = MPL_OK;
    MPL_CHECK(check_supported(m));
    mpl_model_cuda *mc;
    MPL_ALLOC(mc, 1);
    m->be = &cuda_backend;
    m->be_impl = mc;
    mc->cu = m->cfg.cuda;
    const int64_t n = m->layout.n_elems;
    mc->blk = calloc((size_t)m->cfg.n_layer, sizeof *mc->blk);
    mc->h_work = malloc((size_t)m->cfg.vocab_size * sizeof *mc->h_work);
    if (!mc->blk || !mc->h_work) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory for the model");
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (size_t)n * sizeof(float), (void **)&mc->params), fail);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (size_t)n * sizeof(float), (void **)&mc->grads), fail);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (size_t)n * sizeof(mpl_bf16), (void **)&mc->params_bf),
                   fail);
    MPL_CHECK_GOTO(upload_tables(m, mc), fail);
    return MPL_OK;
fail:
    cuda_destroy(m);
    m->be = NULL;
    return st;
}
