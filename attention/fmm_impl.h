/* Template body of FMM attention's chunk functions (fmm.h): argument
 * checks, the per-thread workspace, and the loops over (sequence, head)
 * that run the near field (fmm_near_impl.h) and the far field
 * (fmm_far_impl.h) block by block, fused: a block of rows is read from
 * qkv once, its near rows, every map's far rows and the blend are formed
 * while it is in cache, and only the output (and the near field's
 * log-sum-exp) is written. The backward recomputes instead of reading
 * saved activations: sweep A (forward order) redoes the near field and
 * the far prefix states and gives dq, the near dk, dv and the blend
 * gradients; sweep B (reverse order, causal) gives the far dk, dv.
 * fmm_f32.c and fmm_f64.c include the bodies once each, so the fp64
 * instance the finite-difference tests check is the code that trains. No
 * include guard on purpose.
 *
 * Determinism: one thread owns every output and gradient entry of its
 * (s, h) (the columns of head h in rows of sequence s, and the halo rows
 * of s); blend-weight gradients, shared by all sequences, are first summed
 * per (s, h) and then reduced in a fixed order after the parallel loop. */

static mpl_status MPL_SUF(fmm_check)(const mpl_attn_fmm_args *a, int64_t n_pre, int64_t n_post)
{
    if (a->n_seq < 0 || a->n_tok < 0 || a->pos0 < 0)
        return mpl_err(MPL_ERR_ARG, "fmm attention: n_seq=%lld, n_tok=%lld, pos0=%lld must be >= 0",
                       (long long)a->n_seq, (long long)a->n_tok, (long long)a->pos0);
    if (a->n_head < 1 || a->head_dim < 1)
        return mpl_err(MPL_ERR_ARG, "fmm attention: n_head=%d, head_dim=%d must be >= 1",
                       a->n_head, a->head_dim);
    if (a->band < 1) return mpl_err(MPL_ERR_ARG, "fmm attention: band w=%lld must be >= 1",
                                    (long long)a->band);
    if (a->n_maps < 1 || a->n_maps > MPL_FMM_MAX_MAPS)
        return mpl_err(MPL_ERR_ARG, "fmm attention: fmm_n_maps=%d must be in 1..%d", a->n_maps,
                       MPL_FMM_MAX_MAPS);
    for (int m = 0; m < a->n_maps; m++)
        if ((int)a->maps[m] < 0 || a->maps[m] >= MPL_FMM_MAP_COUNT)
            return mpl_err(MPL_ERR_ARG, "fmm attention: fmm_maps[%d]=%d is not a known map", m,
                           (int)a->maps[m]);
    if (a->far_norm && !(a->eps > 0))
        return mpl_err(MPL_ERR_ARG, "fmm attention: fmm_eps=%g must be > 0 with ratio", a->eps);
    if (a->rope_theta > 0 && a->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG, "fmm attention: RoPE needs an even head_dim, got %d",
                       a->head_dim);
    if (a->seq_len < a->pos0 + a->n_tok)
        return mpl_err(MPL_ERR_ARG, "fmm attention: seq_len=%lld < pos0 + n_tok = %lld",
                       (long long)a->seq_len, (long long)(a->pos0 + a->n_tok));
    const int64_t max_pre = a->pos0 < a->band - 1 ? a->pos0 : a->band - 1;
    const int64_t after = a->seq_len - a->pos0 - a->n_tok;
    const int64_t max_post = a->causal ? 0 : (after < a->band - 1 ? after : a->band - 1);
    if (n_pre < 0 || n_pre > max_pre || n_post < 0 || n_post > max_post)
        return mpl_err(MPL_ERR_ARG,
                       "fmm attention: halo n_pre=%lld, n_post=%lld out of range (at most %lld, %lld)",
                       (long long)n_pre, (long long)n_post, (long long)max_pre,
                       (long long)max_post);
    return MPL_OK;
}

static mpl_status MPL_SUF(fmm_check_ctx)(const mpl_attn_fmm_args *a,
                                         const MPL_SUF(mpl_attn_fmm_ctx) *ctx)
{
    MPL_CHECK(MPL_SUF(fmm_check)(a, ctx->n_pre, ctx->n_post));
    if ((ctx->n_pre > 0 && !ctx->halo_pre) || (ctx->n_post > 0 && !ctx->halo_post))
        return mpl_err(MPL_ERR_ARG, "fmm attention: halo n_pre=%lld, n_post=%lld without rows",
                       (long long)ctx->n_pre, (long long)ctx->n_post);
    return MPL_OK;
}

/* Blend coefficients of channel c of head h: o = A near + B sum_m C_m far_m. */
static inline MPL_REAL MPL_SUF(fmm_coef_a)(const mpl_attn_fmm_args *a,
                                           MPL_SUF(mpl_attn_fmm_blend) bl, int64_t h, int64_t c)
{
    return a->blend == MPL_FMM_BLEND_LRA ? bl.a[h] : bl.a[h * a->head_dim + c];
}
static inline MPL_REAL MPL_SUF(fmm_coef_b)(const mpl_attn_fmm_args *a,
                                           MPL_SUF(mpl_attn_fmm_blend) bl, int64_t h, int64_t c)
{
    return a->blend == MPL_FMM_BLEND_LRA ? bl.b[h] : bl.b[h * a->head_dim + c];
}
static inline MPL_REAL MPL_SUF(fmm_coef_c)(const mpl_attn_fmm_args *a,
                                           MPL_SUF(mpl_attn_fmm_blend) bl, int m)
{
    return a->blend == MPL_FMM_BLEND_LRA ? bl.alpha[m] : (MPL_REAL)1 / (MPL_REAL)a->n_maps;
}

static mpl_status MPL_SUF(fmm_scratch)(int64_t n_per, MPL_REAL **out)
{
    const int64_t n_elems = (int64_t)omp_get_max_threads() * n_per;
    MPL_ALLOC(*out, n_elems);
    return MPL_OK;
}

_Static_assert(FMM_NB % FMM_CB == 0, "sweeps A and B must split the rows into the same chunks");

/* One thread's buffers: the near window, the far chunk panels, a block of
 * rows (FMM_NB plus a chunk's worth so a chunk's panels may read past the
 * last row), the blend, the map states and (backward) what sweep A hands
 * to sweep B: scale/den and dden per row and map. */
typedef struct MPL_SUF(fmm_ws) {
    MPL_SUF(fmm_nws) nw;
    MPL_SUF(fmm_fws) fw;
    MPL_REAL *Qraw, *Kraw, *Vb, *G, *Qr, *GN, *On, *F, *dQ; /* (NB + Cp, dp) */
    MPL_REAL *lane1, *av, *bv, *dAv, *dBv;                 /* (dp) */
    MPL_REAL *S[MPL_FMM_MAX_MAPS], *dS[MPL_FMM_MAX_MAPS];  /* (dp*dp + dp) */
    MPL_REAL dal[MPL_FMM_MAX_MAPS];
    MPL_REAL *fsc, *ddn;                                   /* (r, n_tok) */
} MPL_SUF(fmm_ws);

static int64_t MPL_SUF(fmm_ws_elems)(const mpl_attn_fmm_args *a, int grad)
{
    const int64_t dp = MPL_SUF(fmm_pad)(a->head_dim), r = a->n_maps;
    const int64_t rows = FMM_NB + MPL_SUF(fmm_pad)(FMM_CB);
    int64_t n = MPL_SUF(fmm_nws_elems)(dp, a->band, a->causal) + MPL_SUF(fmm_fws_elems)(dp, r) +
                9 * rows * dp + 5 * dp + 2 * r * (dp * dp + dp);
    if (grad) n += 2 * r * a->n_tok;
    return (n + 15) / 16 * 16; /* whole 64-byte lines per thread */
}

static void MPL_SUF(fmm_ws_carve)(MPL_SUF(fmm_ws) *ws, const mpl_attn_fmm_args *a,
                                  const MPL_SUF(fmm_rope) *rope, MPL_REAL *p, int grad)
{
    const int64_t d = a->head_dim, dp = MPL_SUF(fmm_pad)(d), r = a->n_maps;
    const int64_t rows = (FMM_NB + MPL_SUF(fmm_pad)(FMM_CB)) * dp;
    MPL_SUF(fmm_nws_carve)(&ws->nw, a, rope, p);
    p += MPL_SUF(fmm_nws_elems)(dp, a->band, a->causal);
    ws->lane1 = p, p += dp;
    for (int64_t c = 0; c < dp; c++) ws->lane1[c] = c < d ? 1 : 0;
    MPL_SUF(fmm_fws_carve)(&ws->fw, d, r, ws->lane1, p);
    p += MPL_SUF(fmm_fws_elems)(dp, r);
    MPL_REAL **blk[] = {&ws->Qraw, &ws->Kraw, &ws->Vb, &ws->G, &ws->Qr,
                        &ws->GN,   &ws->On,   &ws->F,  &ws->dQ};
    for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++) *blk[i] = p, p += rows;
    ws->av = p, p += dp;
    ws->bv = p, p += dp;
    ws->dAv = p, p += dp;
    ws->dBv = p, p += dp;
    for (int64_t m = 0; m < r; m++) ws->S[m] = p, p += dp * dp + dp;
    for (int64_t m = 0; m < r; m++) ws->dS[m] = p, p += dp * dp + dp;
    ws->fsc = grad ? p : NULL;
    ws->ddn = grad ? p + r * a->n_tok : NULL;
}

/* Thread buffers (zeroed, 64-byte aligned) and the RoPE tables they share. */
typedef struct MPL_SUF(fmm_pool) {
    MPL_REAL *buf;
    int64_t per;
    MPL_SUF(fmm_rope) rope;
    double *rbuf;
    int has_rope;
} MPL_SUF(fmm_pool);

static void MPL_SUF(fmm_pool_free)(MPL_SUF(fmm_pool) *pl)
{
    free(pl->buf), free(pl->rbuf);
    memset(pl, 0, sizeof *pl);
}

static mpl_status MPL_SUF(fmm_pool_make)(const mpl_attn_fmm_args *a, int grad,
                                         MPL_SUF(fmm_pool) *pl)
{
    memset(pl, 0, sizeof *pl);
    pl->per = MPL_SUF(fmm_ws_elems)(a, grad);
    const size_t bytes = (size_t)(omp_get_max_threads() * pl->per) * sizeof(MPL_REAL);
    pl->buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!pl->buf)
        return mpl_err(MPL_ERR_NOMEM, "fmm attention: out of memory for %zu bytes of buffers",
                       bytes);
    memset(pl->buf, 0, bytes);
    if (a->rope_theta > 0) {
        MPL_SUF(fmm_rope) *rp = &pl->rope;
        rp->half = a->head_dim / 2, rp->n_max = MPL_SUF(fmm_near_wn)(a->band, a->causal);
        pl->rbuf = malloc((size_t)(rp->half * (1 + 2 * rp->n_max) + 1) * sizeof *pl->rbuf);
        if (!pl->rbuf) {
            MPL_SUF(fmm_pool_free)(pl);
            return mpl_err(MPL_ERR_NOMEM, "fmm attention: out of memory for RoPE tables");
        }
        rp->freq = pl->rbuf, rp->co = rp->freq + rp->half, rp->so = rp->co + rp->n_max * rp->half;
        MPL_SUF(fmm_rope_init)(rp, a->rope_theta, a->head_dim);
        pl->has_rope = 1;
    }
    return MPL_OK;
}

static void MPL_SUF(fmm_ws_of)(const MPL_SUF(fmm_pool) *pl, const mpl_attn_fmm_args *a, int grad,
                               MPL_SUF(fmm_ws) *ws)
{
    MPL_SUF(fmm_ws_carve)(ws, a, pl->has_rope ? &pl->rope : NULL,
                          pl->buf + (int64_t)omp_get_thread_num() * pl->per, grad);
}

/* The rows of (s, h), with gradient destinations when dqkv is given. */
static MPL_SUF(fmm_rows) MPL_SUF(fmm_rows_of)(const mpl_attn_fmm_args *a,
                                              const MPL_SUF(mpl_attn_fmm_ctx) *ctx,
                                              const MPL_REAL *qkv, MPL_REAL *dqkv,
                                              const MPL_SUF(mpl_attn_fmm_dctx) *dctx, int64_t s,
                                              int64_t h)
{
    const int64_t T = a->n_tok, HD = (int64_t)a->n_head * a->head_dim, hd = h * a->head_dim;
    const int64_t np = ctx ? ctx->n_pre : 0, nq = ctx ? ctx->n_post : 0;
    MPL_SUF(fmm_rows) x = {.qkv = qkv + s * T * 3 * HD + hd, .mq = a->mask ? a->mask + s * T : NULL,
                           .T = T, .np = np, .nq = nq, .W = 3 * HD, .HD = HD, .pos0 = a->pos0};
    if (np) {
        x.pre = ctx->halo_pre + s * np * 2 * HD + hd;
        x.mpre = ctx->mask_pre ? ctx->mask_pre + s * np : NULL;
    }
    if (nq) {
        x.post = ctx->halo_post + s * nq * 2 * HD + hd;
        x.mpost = ctx->mask_post ? ctx->mask_post + s * nq : NULL;
    }
    if (dqkv) x.dqkv = dqkv + s * T * 3 * HD + hd;
    if (dctx && dctx->halo_pre && np) x.dpre = dctx->halo_pre + s * np * 2 * HD + hd;
    if (dctx && dctx->halo_post && nq) x.dpost = dctx->halo_post + s * nq * 2 * HD + hd;
    return x;
}

/* n rows of d values (stride ld) into dst (n_pad x dp); rows n.. zeroed. */
static void MPL_SUF(fmm_gather)(const MPL_REAL *src, int64_t ld, int64_t n, int64_t n_pad,
                                int64_t d, int64_t dp, MPL_REAL *dst)
{
    for (int64_t i = 0; i < n; i++) MPL_SUF(fmm_row_copy)(dst + i * dp, src + i * ld, d);
    if (n_pad > n) memset(dst + n * dp, 0, (size_t)((n_pad - n) * dp) * sizeof *dst);
}

/* The blend of head h as padded vectors; the map weights into cm. */
static void MPL_SUF(fmm_blend_vecs)(const mpl_attn_fmm_args *a, MPL_SUF(mpl_attn_fmm_blend) bl,
                                    int64_t h, MPL_SUF(fmm_ws) *ws, MPL_REAL *cm)
{
    for (int64_t c = 0; c < a->head_dim; c++) {
        ws->av[c] = MPL_SUF(fmm_coef_a)(a, bl, h, c);
        ws->bv[c] = MPL_SUF(fmm_coef_b)(a, bl, h, c);
    }
    for (int m = 0; m < a->n_maps; m++) cm[m] = MPL_SUF(fmm_coef_c)(a, bl, m);
}

/* Rows [i0, i0 + nb) of the chunk into the block buffers: raw q, k, v
 * (and, with dout, the upstream gradient, 0 for padded rows) and the
 * rotated queries. */
static void MPL_SUF(fmm_block_load)(const MPL_SUF(fmm_rows) *x, const MPL_SUF(fmm_ws) *ws,
                                    int64_t i0, int64_t nb, int64_t n_pad, const MPL_REAL *dout)
{
    const int64_t d = ws->nw.d, dp = ws->nw.dp;
    const MPL_REAL *row = x->qkv + i0 * x->W;
    MPL_SUF(fmm_gather)(row, x->W, nb, n_pad, d, dp, ws->Qraw);
    MPL_SUF(fmm_gather)(row + x->HD, x->W, nb, n_pad, d, dp, ws->Kraw);
    MPL_SUF(fmm_gather)(row + 2 * x->HD, x->W, nb, n_pad, d, dp, ws->Vb);
    if (dout) {
        MPL_SUF(fmm_gather)(dout + i0 * x->HD, x->HD, nb, n_pad, d, dp, ws->G);
        if (x->mq)
            for (int64_t i = 0; i < nb; i++)
                if (!x->mq[i0 + i]) memset(ws->G + i * dp, 0, (size_t)dp * sizeof *ws->G);
    }
}

/* Rows [i0, i0 + n) of q, k, v and of what the pass writes there toward
 * L2, a block ahead of their use: out (forward, out != NULL) or dout and
 * the gradient rows of q, k, v (backward, dout != NULL). */
static void MPL_SUF(fmm_block_prefetch)(const MPL_SUF(fmm_rows) *x, int64_t i0, int64_t n,
                                        int64_t d, const MPL_REAL *dout, MPL_REAL *out)
{
    if (n <= 0) return;
    for (int64_t k = 0; k < 3; k++) {
        MPL_SUF(fmm_prefetch)(x->qkv + i0 * x->W + k * x->HD, x->W, n, d);
        if (dout) MPL_SUF(fmm_prefetch_w)(x->dqkv + i0 * x->W + k * x->HD, x->W, n, d);
    }
    if (dout) MPL_SUF(fmm_prefetch)(dout + i0 * x->HD, x->HD, n, d);
    if (out) MPL_SUF(fmm_prefetch_w)(out + i0 * x->HD, x->HD, n, d);
}

/* While the block at i0 works on its chunk at row c0, the rows c0 ..
 * c0 + CB of the next block are prefetched: a block ahead, issued a
 * chunk's rows at a time so the misses overlap the chunk's arithmetic
 * instead of queueing up at once. */
static void MPL_SUF(fmm_block_ahead)(const MPL_SUF(fmm_rows) *x, int64_t i0, int64_t c0,
                                     int64_t d, const MPL_REAL *dout, MPL_REAL *out)
{
    const int64_t r0 = i0 + FMM_NB + c0, n = x->T - r0;
    MPL_SUF(fmm_block_prefetch)(x, r0, n < FMM_CB ? n : FMM_CB, d, dout, out);
}

/* Block b (nb rows) of a forward (out given) or sweep A (dout given):
 * its rows loaded, the near window slid to it and the rotated queries in
 * Qr. */
static void MPL_SUF(fmm_block_begin)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_rows) *x,
                                     const MPL_SUF(fmm_ws) *ws, int64_t b, int64_t nb,
                                     const MPL_REAL *dout)
{
    const int64_t i0 = b * FMM_NB, dp = ws->nw.dp;
    MPL_SUF(fmm_block_load)(x, ws, i0, nb, FMM_NB, dout);
    MPL_SUF(fmm_win_advance)(&ws->nw, x, b, dout != NULL);
    memcpy(ws->Qr, ws->Qraw, (size_t)(nb * dp) * sizeof *ws->Qr);
    MPL_SUF(fmm_win_rope)(&ws->nw, ws->Qr, dp, nb, a->band - 1, 1);
}

static MPL_SUF(fmm_chunk) MPL_SUF(fmm_chunk_at)(const MPL_SUF(fmm_rows) *x,
                                                const MPL_SUF(fmm_ws) *ws, int64_t i0,
                                                int64_t c0, int64_t n)
{
    const int64_t o = c0 * ws->nw.dp;
    return (MPL_SUF(fmm_chunk)){.X = ws->Qraw + o, .Kr = ws->Kraw + o, .Vc = ws->Vb + o,
                                .G = ws->G + o, .ok = x->mq ? x->mq + i0 + c0 : NULL, .n = n};
}

static void MPL_SUF(fmm_fwd_sh)(const mpl_attn_fmm_args *a, MPL_SUF(mpl_attn_fmm_blend) bl,
                                const MPL_SUF(fmm_rows) *x, int64_t h, const MPL_REAL *stat_in,
                                MPL_REAL *out, MPL_REAL *lse, MPL_SUF(fmm_ws) *ws)
{
    const int64_t T = a->n_tok, d = a->head_dim, dp = ws->nw.dp, r = a->n_maps;
    const int64_t SZ = d * d + d, HD = x->HD;
    MPL_REAL cm[MPL_FMM_MAX_MAPS];
    MPL_SUF(fmm_blend_vecs)(a, bl, h, ws, cm);
    for (int64_t m = 0; m < r; m++)
        MPL_SUF(fmm_state_load)(d, dp, stat_in ? stat_in + m * SZ : NULL, ws->S[m]);
    for (int64_t b = 0, i0 = 0; i0 < T; b++, i0 += FMM_NB) {
        const int64_t nb = T - i0 < FMM_NB ? T - i0 : FMM_NB;
        MPL_SUF(fmm_block_begin)(a, x, ws, b, nb, NULL);
        MPL_SUF(fmm_near_fwd)(&ws->nw, ws->Qr, nb, x->mq ? x->mq + i0 : NULL, ws->On, lse + i0);
        memset(ws->F, 0, (size_t)(nb * dp) * sizeof *ws->F);
        for (int64_t c0 = 0; c0 < nb; c0 += FMM_CB) {
            const MPL_SUF(fmm_chunk) c =
                MPL_SUF(fmm_chunk_at)(x, ws, i0, c0, nb - c0 < FMM_CB ? nb - c0 : FMM_CB);
            MPL_SUF(fmm_block_ahead)(x, i0, c0, d, NULL, out);
            MPL_SUF(fmm_far_feats)(a, &ws->fw, &c, 1, 0, a->causal, 0);
            for (int m = 0; m < r; m++)
                MPL_SUF(fmm_far_fwd_chunk)(a, &ws->fw, m, cm[m], &c, ws->S[m], ws->F + c0 * dp);
        }
        /* the blend, into On, then the rows out */
        for (int64_t i = 0; i < nb; i++)
            for (int64_t v = 0; v < ws->nw.nv; v++) {
                MPL_REAL *o = ws->On + i * dp + v * FMM_VW;
                MPL_SUF(fmm_st)(o, MPL_SUF(fmm_ld)(ws->av + v * FMM_VW) * MPL_SUF(fmm_ld)(o) +
                                       MPL_SUF(fmm_ld)(ws->bv + v * FMM_VW) *
                                           MPL_SUF(fmm_ld)(ws->F + i * dp + v * FMM_VW));
            }
        for (int64_t i = 0; i < nb; i++)
            MPL_SUF(fmm_row_copy)(out + (i0 + i) * HD, ws->On + i * dp, d);
    }
}

/* Phase 1 (stat_loc overwritten) or, with dqkv, phase 3 (the gradient
 * dstat_loc into the k, v columns of dqkv): one pass over each (s, h)'s
 * keys and values, chunk by chunk. */
static mpl_status MPL_SUF(fmm_stats_run)(const mpl_attn_fmm_args *a, const MPL_REAL *qkv,
                                         MPL_REAL *stat_loc, const MPL_REAL *dstat_loc,
                                         MPL_REAL *dqkv)
{
    MPL_CHECK(MPL_SUF(fmm_check)(a, 0, 0));
    const int64_t d = a->head_dim, H = a->n_head, r = a->n_maps, SZ = d * d + d, T = a->n_tok;
    const int grad = dqkv != NULL;
    MPL_SUF(fmm_pool) pl;
    MPL_CHECK(MPL_SUF(fmm_pool_make)(a, 0, &pl));
#pragma omp parallel
    {
        MPL_SUF(fmm_ws) ws;
        MPL_SUF(fmm_ws_of)(&pl, a, 0, &ws);
        const int64_t dp = ws.nw.dp, Cp = ws.fw.Cp;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < a->n_seq * H; sh++) {
            const MPL_SUF(fmm_rows) x = MPL_SUF(fmm_rows_of)(a, NULL, qkv, dqkv, NULL, sh / H, sh % H);
            for (int64_t m = 0; m < r; m++) {
                if (grad) MPL_SUF(fmm_state_load)(d, dp, dstat_loc + (sh * r + m) * SZ, ws.dS[m]);
                else MPL_SUF(fmm_state_load)(d, dp, NULL, ws.S[m]);
            }
            for (int64_t c0 = 0; c0 < T; c0 += FMM_CB) {
                const int64_t n = T - c0 < FMM_CB ? T - c0 : FMM_CB;
                MPL_SUF(fmm_block_load)(&x, &ws, c0, n, Cp, NULL);
                const MPL_SUF(fmm_chunk) c = MPL_SUF(fmm_chunk_at)(&x, &ws, c0, 0, n);
                MPL_SUF(fmm_far_feats)(a, &ws.fw, &c, 0, 0, 1, grad);
                if (!grad) {
                    for (int m = 0; m < r; m++) MPL_SUF(fmm_far_stats_chunk)(&ws.fw, m, &c, ws.S[m]);
                    continue;
                }
                memset(ws.GN, 0, (size_t)(n * dp) * sizeof *ws.GN);
                memset(ws.On, 0, (size_t)(n * dp) * sizeof *ws.On);
                for (int m = 0; m < r; m++)
                    MPL_SUF(fmm_far_stats_bwd_chunk)(a, &ws.fw, m, &c, ws.dS[m], ws.GN, ws.On);
                for (int64_t j = 0; j < n; j++) {
                    MPL_REAL *gk = x.dqkv + (c0 + j) * x.W + x.HD;
                    MPL_SUF(fmm_add)(gk, ws.GN + j * dp, d);
                    MPL_SUF(fmm_add)(gk + x.HD, ws.On + j * dp, d);
                }
            }
            if (!grad) {
                MPL_REAL *blk = stat_loc + sh * r * SZ;
                memset(blk, 0, (size_t)(r * SZ) * sizeof *blk);
                for (int64_t m = 0; m < r; m++) MPL_SUF(fmm_state_add)(d, dp, ws.S[m], blk + m * SZ);
            }
        }
    }
    MPL_SUF(fmm_pool_free)(&pl);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_fmm_stats)(const mpl_attn_fmm_args *a, const MPL_REAL *qkv,
                                       MPL_REAL *stat_loc)
{
    return MPL_SUF(fmm_stats_run)(a, qkv, stat_loc, NULL, NULL);
}

mpl_status MPL_SUF(mpl_attn_fmm_stats_backward)(const mpl_attn_fmm_args *a, const MPL_REAL *qkv,
                                                const MPL_REAL *dstat_loc, MPL_REAL *dqkv)
{
    return MPL_SUF(fmm_stats_run)(a, qkv, NULL, dstat_loc, dqkv);
}

mpl_status MPL_SUF(mpl_attn_fmm_forward)(const mpl_attn_fmm_args *a,
                                         const MPL_SUF(mpl_attn_fmm_ctx) *ctx,
                                         MPL_SUF(mpl_attn_fmm_blend) bl, const MPL_REAL *qkv,
                                         MPL_REAL *out, MPL_REAL *saved)
{
    MPL_CHECK(MPL_SUF(fmm_check_ctx)(a, ctx));
    const int64_t T = a->n_tok, H = a->n_head, d = a->head_dim, r = a->n_maps;
    const int64_t HD = H * d, SZ = d * d + d;
    if (a->n_seq * T == 0) return MPL_OK;
    MPL_SUF(fmm_pool) pl;
    MPL_CHECK(MPL_SUF(fmm_pool_make)(a, 0, &pl));
#pragma omp parallel
    {
        MPL_SUF(fmm_ws) ws;
        MPL_SUF(fmm_ws_of)(&pl, a, 0, &ws);
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < a->n_seq * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const MPL_SUF(fmm_rows) x = MPL_SUF(fmm_rows_of)(a, ctx, qkv, NULL, NULL, s, h);
            MPL_SUF(fmm_fwd_sh)(a, bl, &x, h, ctx->stat_in ? ctx->stat_in + sh * r * SZ : NULL,
                                out + s * T * HD + h * d, saved + sh * T, &ws);
        }
    }
    MPL_SUF(fmm_pool_free)(&pl);
    return MPL_OK;
}
