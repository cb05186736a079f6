/* Template body of FMM attention's backward (fmm.h): per (sequence, head),
 * sweep A in forward order recomputes the near field block by block (dq,
 * the window's dk, dv, the near blend gradient) and the far prefix
 * states chunk by chunk (dq, the far blend gradients, and per row and map
 * the two numbers sweep B needs); sweep B in reverse order carries the
 * gradient of the far state back (dk, dv). Included once per precision after
 * fmm_impl.h; no include guard on purpose. Separate from the forward to
 * keep each file to one pass over the rows. */

static void MPL_SUF(fmm_bwd_sh)(const mpl_attn_fmm_args *a, MPL_SUF(mpl_attn_fmm_blend) bl,
                                const MPL_SUF(fmm_rows) *x, int64_t h, const MPL_REAL *stat_in,
                                MPL_REAL *dstat_in, const MPL_REAL *dout, const MPL_REAL *lse,
                                MPL_SUF(fmm_ws) *ws, MPL_REAL *pb)
{
    const int64_t T = a->n_tok, d = a->head_dim, dp = ws->nw.dp, r = a->n_maps;
    const int64_t SZ = d * d + d, W = x->W, Cp = ws->fw.Cp;
    MPL_REAL cm[MPL_FMM_MAX_MAPS];
    MPL_SUF(fmm_blend_vecs)(a, bl, h, ws, cm);
    for (int64_t m = 0; m < r; m++) {
        MPL_SUF(fmm_state_load)(d, dp, stat_in ? stat_in + m * SZ : NULL, ws->S[m]);
        MPL_SUF(fmm_state_load)(d, dp, NULL, ws->dS[m]);
        ws->dal[m] = 0;
    }
    memset(ws->dAv, 0, (size_t)dp * sizeof *ws->dAv);
    memset(ws->dBv, 0, (size_t)dp * sizeof *ws->dBv);
    const MPL_SUF(fmm_far_acc) acc = {ws->dBv, ws->dal};
    /* sweep A */
    for (int64_t b = 0, i0 = 0; i0 < T; b++, i0 += FMM_NB) {
        const int64_t nb = T - i0 < FMM_NB ? T - i0 : FMM_NB;
        MPL_SUF(fmm_block_begin)(a, x, ws, b, nb, dout);
        MPL_SUF(fmm_near_bwd)(&ws->nw, ws->Qr, ws->G, ws->av, nb, lse + i0, ws->GN, ws->dQ);
        /* dQ: the near part w.r.t. the rotated queries, rotated back, then
         * every map's far part; one pass over the rows of dqkv */
        MPL_SUF(fmm_win_rope)(&ws->nw, ws->dQ, dp, nb, a->band - 1, -1);
        for (int64_t c0 = 0; c0 < nb; c0 += FMM_CB) {
            const MPL_SUF(fmm_chunk) c =
                MPL_SUF(fmm_chunk_at)(x, ws, i0, c0, nb - c0 < FMM_CB ? nb - c0 : FMM_CB);
            MPL_SUF(fmm_block_ahead)(x, i0, c0, d, dout, NULL);
            if (a->causal) MPL_SUF(fmm_tr)(Cp, dp, c.Vc, dp, ws->fw.VcT, Cp);
            MPL_SUF(fmm_far_feats)(a, &ws->fw, &c, 1, 1, a->causal, a->causal);
            /* the chunk's rows are window rows w - 1 + c0 .. */
            const int64_t tw = (a->band - 1 + c0) * dp;
            for (int m = 0; m < r; m++)
                MPL_SUF(fmm_far_bwd_a)(a, &ws->fw, m, cm[m], ws->bv, &c, ws->S[m], ws->dS[m],
                                       ws->dQ + c0 * dp, ws->nw.fdK + tw, ws->nw.fdV + tw,
                                       ws->fsc + m * T + i0 + c0, ws->ddn + m * T + i0 + c0,
                                       acc);
        }
        for (int64_t i = 0; i < nb; i++) MPL_SUF(fmm_add)(x->dqkv + (i0 + i) * W, ws->dQ + i * dp, d);
        MPL_SUF(fmm_win_flush)(&ws->nw, x, b, i0 + FMM_NB < T ? FMM_NB : ws->nw.Wn, ws->av,
                               ws->dAv);
    }
    /* sweep B (causal): the chunks in reverse, carrying dS */
    if (a->causal)
        for (int64_t c0 = (T - 1) / FMM_CB * FMM_CB; c0 >= 0; c0 -= FMM_CB) {
            const int64_t n = T - c0 < FMM_CB ? T - c0 : FMM_CB;
            MPL_SUF(fmm_block_load)(x, ws, c0, n, Cp, dout);
            const int64_t ahead = c0 - 2 * FMM_CB;
            if (ahead >= 0) MPL_SUF(fmm_block_prefetch)(x, ahead, FMM_CB, d, dout, NULL);
            const MPL_SUF(fmm_chunk) c = MPL_SUF(fmm_chunk_at)(x, ws, c0, 0, n);
            MPL_REAL *dK = ws->GN, *dV = ws->On; /* free in sweep B */
            memset(dK, 0, (size_t)(n * dp) * sizeof *dK);
            memset(dV, 0, (size_t)(n * dp) * sizeof *dV);
            MPL_SUF(fmm_far_feats)(a, &ws->fw, &c, 1, 0, 1, 1);
            for (int m = 0; m < r; m++)
                MPL_SUF(fmm_far_bwd_b)(a, &ws->fw, m, cm[m], ws->bv, &c, ws->fsc + m * T + c0,
                                       ws->ddn + m * T + c0, ws->dS[m], dK, dV);
            for (int64_t j = 0; j < n; j++) {
                MPL_REAL *gk = x->dqkv + (c0 + j) * W + x->HD;
                MPL_SUF(fmm_add)(gk, dK + j * dp, d);
                MPL_SUF(fmm_add)(gk + x->HD, dV + j * dp, d);
            }
        }
    if (dstat_in)
        for (int64_t m = 0; m < r; m++) MPL_SUF(fmm_state_add)(d, dp, ws->dS[m], dstat_in + m * SZ);
    /* this (s, h)'s blend partials: dA, dB (d each; LRA: summed into [0]), dalpha */
    const int lra = a->blend == MPL_FMM_BLEND_LRA;
    MPL_REAL *dA = pb, *dB = pb + d, *dal = pb + 2 * d;
    for (int64_t c = 0; c < d; c++) {
        dA[lra ? 0 : c] += ws->dAv[c];
        dB[lra ? 0 : c] += ws->dBv[c];
    }
    for (int64_t m = 0; m < r; m++) dal[m] += ws->dal[m];
}

mpl_status MPL_SUF(mpl_attn_fmm_backward)(const mpl_attn_fmm_args *a,
                                          const MPL_SUF(mpl_attn_fmm_ctx) *ctx,
                                          MPL_SUF(mpl_attn_fmm_blend) bl, const MPL_REAL *qkv,
                                          const MPL_REAL *saved, const MPL_REAL *dout,
                                          MPL_REAL *dqkv, const MPL_SUF(mpl_attn_fmm_dctx) *dctx,
                                          MPL_SUF(mpl_attn_fmm_dblend) dbl)
{
    MPL_CHECK(MPL_SUF(fmm_check_ctx)(a, ctx));
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim, r = a->n_maps;
    const int64_t HD = H * d, SZ = d * d + d;
    if (S * T == 0) return MPL_OK;
    const int lra = a->blend == MPL_FMM_BLEND_LRA;
    /* per-(s, h) partial blend gradients: dA, dB (d each, or 1 for LRA), dalpha (r) */
    const int64_t nb_sh = 2 * d + r, n_pb = S * H * nb_sh;
    MPL_REAL *pb = NULL;
    MPL_ALLOC(pb, n_pb);
    MPL_SUF(fmm_pool) pl;
    mpl_status st = MPL_OK;
    MPL_CHECK_GOTO(MPL_SUF(fmm_pool_make)(a, 1, &pl), fail);
#pragma omp parallel
    {
        MPL_SUF(fmm_ws) ws;
        MPL_SUF(fmm_ws_of)(&pl, a, 1, &ws);
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const MPL_SUF(fmm_rows) x = MPL_SUF(fmm_rows_of)(a, ctx, qkv, dqkv, dctx, s, h);
            MPL_SUF(fmm_bwd_sh)(a, bl, &x, h, ctx->stat_in ? ctx->stat_in + sh * r * SZ : NULL,
                                dctx && dctx->stat_in ? dctx->stat_in + sh * r * SZ : NULL,
                                dout + s * T * HD + h * d, saved + sh * T, &ws, pb + sh * nb_sh);
        }
    }
    MPL_SUF(fmm_pool_free)(&pl);
    /* blend gradients, summed over sequences in a fixed order */
    for (int64_t s = 0; s < S; s++)
        for (int64_t h = 0; h < H; h++) {
            const MPL_REAL *dA = pb + (s * H + h) * nb_sh, *dB = dA + d, *dal = dB + d;
            const int64_t n = lra ? 1 : d, o = lra ? h : h * d;
            for (int64_t c = 0; c < n; c++) {
                if (dbl.a) dbl.a[o + c] += dA[c];
                if (dbl.b && a->learn_far_weight) dbl.b[o + c] += dB[c];
            }
            if (lra && dbl.alpha)
                for (int m = 0; m < r; m++) dbl.alpha[m] += dal[m];
        }
fail:
    free(pb);
    return st;
}
