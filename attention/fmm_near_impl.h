/* Template body of the FMM near field (fmm.h): softmax inside the band,
 * forward and backward, one block of query rows at a time, with the
 * kernels of fmm_kern_impl.h. Included once per precision by fmm_f32.c /
 * fmm_f64.c; no include guard on purpose. Separate from the far field
 * because it is a different algorithm with its own buffers.
 *
 * The keys live in an "extended" row range: e = 0 .. E-1 covers global
 * positions pos0 - n_pre .. pos0 + n_tok + n_post - 1 (halo before, the
 * chunk, halo after); query row i of the chunk is extended row n_pre + i.
 * Block b holds queries [i0, i0 + NB) and a window of the Wn = NB + bw
 * keys they may see (bw = w - 1 causal, 2(w - 1) bidirectional): window
 * row t is extended row Lb + t, Lb = n_pre + i0 - (w - 1); rows outside
 * [0, E) or padded are absent (key bias -inf). The window slides by NB
 * rows per block, so every key is loaded and rotated once. A tile of
 * FMM_MR query rows multiplies only the vectors of keys its band covers
 * (about 1.2 w keys per query), so the work is O(n_tok w d). */

#define FMM_NB 64 /* query rows per block; a multiple of FMM_CB (checked in fmm_impl.h) */

/* The rows of one (sequence, head): column h*d of each. */
typedef struct MPL_SUF(fmm_rows) {
    const MPL_REAL *qkv;            /* chunk row 0 (q; k at +HD, v at +2HD), stride W */
    const MPL_REAL *pre, *post;     /* halo rows (k; v at +HD), stride 2HD */
    const uint8_t *mq, *mpre, *mpost; /* padding (NULL: all real) */
    MPL_REAL *dqkv, *dpre, *dpost;  /* backward: gradients, same layouts (halo: NULL skips) */
    int64_t T, np, nq, W, HD, pos0;
} MPL_SUF(fmm_rows);

/* Per-thread window and logits of the near field. */
typedef struct MPL_SUF(fmm_nws) {
    int64_t d, dp, nv, w, bw, Wn, Wnp;
    MPL_REAL scale;
    const MPL_SUF(fmm_rope) *rope; /* NULL: no RoPE */
    int half;                      /* d / 2 */
    MPL_REAL *rc, *rs;             /* (Wnp, half) cos, sin of the window rows' positions */
    MPL_REAL *K, *V, *dK, *dV;     /* (Wnp, dp) window rows; K rotated */
    MPL_REAL *fdK, *fdV;           /* (Wnp, dp) the far field's in-chunk dk, dv of the rows */
    MPL_REAL *KT, *VT;             /* (dp, Wnp) */
    MPL_REAL *kb;                  /* (Wnp) 0: a real key, -inf: absent */
    MPL_REAL *P, *dP;              /* (NB, Wnp) probabilities, their gradient */
} MPL_SUF(fmm_nws);

static int64_t MPL_SUF(fmm_near_wn)(int64_t w, int causal)
{
    return FMM_NB + (w - 1) * (causal ? 1 : 2);
}

static int64_t MPL_SUF(fmm_nws_elems)(int64_t dp, int64_t w, int causal)
{
    const int64_t Wnp = MPL_SUF(fmm_pad)(MPL_SUF(fmm_near_wn)(w, causal));
    return 9 * Wnp * dp + Wnp + 2 * FMM_NB * Wnp;
}

static void MPL_SUF(fmm_nws_carve)(MPL_SUF(fmm_nws) *nw, const mpl_attn_fmm_args *a,
                                   const MPL_SUF(fmm_rope) *rope, MPL_REAL *p)
{
    nw->d = a->head_dim, nw->dp = MPL_SUF(fmm_pad)(a->head_dim), nw->nv = nw->dp / FMM_VW;
    nw->w = a->band, nw->bw = (a->band - 1) * (a->causal ? 1 : 2);
    nw->Wn = MPL_SUF(fmm_near_wn)(a->band, a->causal), nw->Wnp = MPL_SUF(fmm_pad)(nw->Wn);
    nw->scale = (MPL_REAL)(1.0 / sqrt((double)a->head_dim));
    nw->rope = rope;
    nw->half = a->head_dim / 2;
    const int64_t rows = nw->Wnp * nw->dp;
    nw->rc = p, p += nw->Wnp * nw->half;
    nw->rs = p, p += nw->Wnp * nw->half;
    p += rows - 2 * nw->Wnp * nw->half; /* one panel's room for both tables */
    nw->K = p, p += rows;
    nw->V = p, p += rows;
    nw->dK = p, p += rows;
    nw->dV = p, p += rows;
    nw->fdK = p, p += rows;
    nw->fdV = p, p += rows;
    nw->KT = p, p += rows;
    nw->VT = p, p += rows;
    nw->kb = p, p += nw->Wnp;
    nw->P = p, p += FMM_NB * nw->Wnp;
    nw->dP = p;
    for (int64_t t = 0; t < nw->Wnp; t++) nw->kb[t] = -INFINITY;
}

/* Window rows [t0, t1) for base Lb: K, V (rotated K) and the key bias. */
static void MPL_SUF(fmm_win_load)(const MPL_SUF(fmm_nws) *nw, const MPL_SUF(fmm_rows) *x,
                                  int64_t Lb, int64_t t0, int64_t t1)
{
    const int64_t dp = nw->dp, E = x->np + x->T + x->nq;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t e = Lb + t;
        MPL_REAL *kr = nw->K + t * dp, *vr = nw->V + t * dp;
        memset(kr, 0, (size_t)dp * sizeof *kr);
        memset(vr, 0, (size_t)dp * sizeof *vr);
        nw->kb[t] = -INFINITY;
        if (e < 0 || e >= E) continue;
        const MPL_REAL *k;
        int ok;
        if (e < x->np) {
            k = x->pre + e * 2 * x->HD, ok = x->mpre ? x->mpre[e] : 1;
        } else if (e < x->np + x->T) {
            k = x->qkv + (e - x->np) * x->W + x->HD, ok = x->mq ? x->mq[e - x->np] : 1;
        } else {
            const int64_t j = e - x->np - x->T;
            k = x->post + j * 2 * x->HD, ok = x->mpost ? x->mpost[j] : 1;
        }
        MPL_SUF(fmm_row_copy)(kr, k, nw->d);
        MPL_SUF(fmm_row_copy)(vr, k + x->HD, nw->d);
        nw->kb[t] = ok ? 0 : -INFINITY;
    }
    if (nw->rope && t1 > t0) {
        const int64_t h = nw->half;
        MPL_SUF(fmm_rope_table)(nw->rope, x->pos0 - x->np + Lb + t0, t1 - t0, nw->rc + t0 * h,
                                nw->rs + t0 * h);
        MPL_SUF(fmm_rope_apply)(nw->K + t0 * dp, dp, t1 - t0, nw->half, nw->rc + t0 * h,
                                nw->rs + t0 * h, 1);
    }
}

/* Rows r < n of x (stride ld) at window rows t0 + r: rotated by their
 * positions (dir = 1) or back (dir = -1). */
static void MPL_SUF(fmm_win_rope)(const MPL_SUF(fmm_nws) *nw, MPL_REAL *x, int64_t ld, int64_t n,
                                  int64_t t0, int dir)
{
    if (nw->rope && n > 0)
        MPL_SUF(fmm_rope_apply)(x, ld, n, nw->half, nw->rc + t0 * nw->half,
                                nw->rs + t0 * nw->half, dir);
}

/* The window of block b (b > 0: slid by NB rows from block b - 1; with
 * grad, the gradient accumulators slide too and their new rows start at
 * zero); KT (and, with grad, VT) rebuilt. */
static void MPL_SUF(fmm_win_advance)(const MPL_SUF(fmm_nws) *nw, const MPL_SUF(fmm_rows) *x,
                                     int64_t b, int grad)
{
    const int64_t dp = nw->dp, Wn = nw->Wn, Lb = x->np + b * FMM_NB - (nw->w - 1);
    int64_t t0 = 0;
    if (b > 0) {
        const int64_t keep = Wn - FMM_NB;
        t0 = keep;
        memmove(nw->K, nw->K + FMM_NB * dp, (size_t)(keep * dp) * sizeof *nw->K);
        memmove(nw->V, nw->V + FMM_NB * dp, (size_t)(keep * dp) * sizeof *nw->V);
        memmove(nw->kb, nw->kb + FMM_NB, (size_t)keep * sizeof *nw->kb);
        if (nw->rope) {
            memmove(nw->rc, nw->rc + FMM_NB * nw->half, (size_t)(keep * nw->half) * sizeof *nw->rc);
            memmove(nw->rs, nw->rs + FMM_NB * nw->half, (size_t)(keep * nw->half) * sizeof *nw->rs);
        }
    }
    if (grad) {
        MPL_REAL *acc[] = {nw->dK, nw->dV, nw->fdK, nw->fdV};
        for (int k = 0; k < 4; k++) {
            if (b > 0)
                memmove(acc[k], acc[k] + FMM_NB * dp, (size_t)(t0 * dp) * sizeof *acc[k]);
            memset(acc[k] + t0 * dp, 0, (size_t)((Wn - t0) * dp) * sizeof *acc[k]);
        }
    }
    MPL_SUF(fmm_win_load)(nw, x, Lb, t0, Wn);
    MPL_SUF(fmm_tr)(nw->Wnp, dp, nw->K, dp, nw->KT, nw->Wnp);
    if (grad) MPL_SUF(fmm_tr)(nw->Wnp, dp, nw->V, dp, nw->VT, nw->Wnp);
}

/* Keys of the tile of rows [r0, r1): window rows [r0, t_hi), whole
 * vectors [u0, u1). */
static void MPL_SUF(fmm_near_tile)(const MPL_SUF(fmm_nws) *nw, int64_t r0, int64_t r1,
                                   int64_t *t_hi, int64_t *u0, int64_t *u1)
{
    *t_hi = r1 + nw->bw < nw->Wn ? r1 + nw->bw : nw->Wn;
    *u0 = r0 / FMM_VW;
    *u1 = (*t_hi + FMM_VW - 1) / FMM_VW;
}

/* Logits of rows [r0, r1) into P (scaled, band and key bias applied:
 * -inf outside), lanes [u0 VW, u1 VW). */
static void MPL_SUF(fmm_near_logits)(const MPL_SUF(fmm_nws) *nw, const MPL_REAL *Qr, int64_t r0,
                                     int64_t r1, int64_t u0, int64_t u1)
{
    const int64_t Wnp = nw->Wnp;
    MPL_SUF(fmm_mm)(r1 - r0, u1 - u0, nw->dp, Qr + r0 * nw->dp, nw->dp, 1, nw->KT + u0 * FMM_VW,
                    Wnp, nw->P + r0 * Wnp + u0 * FMM_VW, Wnp, 0);
    const FMM_VI iota = MPL_SUF(fmm_iota)();
    const FMM_V ninf = MPL_SUF(fmm_splat)(-INFINITY);
    for (int64_t i = r0; i < r1; i++) {
        const FMM_VI lo = (FMM_VI){0} + (MPL_IREAL)i, hi = (FMM_VI){0} + (MPL_IREAL)(i + nw->bw);
        MPL_REAL *p = nw->P + i * Wnp;
        for (int64_t u = u0; u < u1; u++) {
            const FMM_VI t = iota + (MPL_IREAL)(u * FMM_VW);
            const FMM_V l = MPL_SUF(fmm_ld)(p + u * FMM_VW) * nw->scale +
                            MPL_SUF(fmm_ld)(nw->kb + u * FMM_VW);
            MPL_SUF(fmm_st)(p + u * FMM_VW, MPL_SUF(fmm_sel)((t >= lo) & (t <= hi), l, ninf));
        }
    }
}

/* Forward of rows [0, nb) of block b: near rows On (NB x dp) and lse (nb;
 * -inf for a padded query, whose output is 0). Qr: the rotated queries.
 * mq: the block's query padding or NULL. */
static void MPL_SUF(fmm_near_fwd)(const MPL_SUF(fmm_nws) *nw, const MPL_REAL *Qr, int64_t nb,
                                  const uint8_t *mq, MPL_REAL *On, MPL_REAL *lse)
{
    const int64_t Wnp = nw->Wnp, dp = nw->dp;
    for (int64_t r0 = 0; r0 < nb; r0 += FMM_MR) {
        const int64_t r1 = r0 + FMM_MR < nb ? r0 + FMM_MR : nb;
        int64_t t_hi, u0, u1;
        MPL_SUF(fmm_near_tile)(nw, r0, r1, &t_hi, &u0, &u1);
        MPL_SUF(fmm_near_logits)(nw, Qr, r0, r1, u0, u1);
        for (int64_t i = r0; i < r1; i++) {
            MPL_REAL *p = nw->P + i * Wnp;
            if (mq && !mq[i]) {
                memset(p + u0 * FMM_VW, 0, (size_t)((u1 - u0) * FMM_VW) * sizeof *p);
                lse[i] = -INFINITY;
                continue;
            }
            FMM_V mx = MPL_SUF(fmm_splat)(-INFINITY), s = {0};
            for (int64_t u = u0; u < u1; u++) mx = MPL_SUF(fmm_vmax)(mx, MPL_SUF(fmm_ld)(p + u * FMM_VW));
            const MPL_REAL m = MPL_SUF(fmm_hmax)(mx); /* finite: the query sees itself */
            for (int64_t u = u0; u < u1; u++) {
                const FMM_V e = MPL_SUF(fmm_vexp)(MPL_SUF(fmm_ld)(p + u * FMM_VW) - m);
                MPL_SUF(fmm_st)(p + u * FMM_VW, e);
                s += e;
            }
            const MPL_REAL sum = MPL_SUF(fmm_hsum)(s), inv = (MPL_REAL)1 / sum;
            for (int64_t u = u0; u < u1; u++)
                MPL_SUF(fmm_st)(p + u * FMM_VW, MPL_SUF(fmm_ld)(p + u * FMM_VW) * inv);
            lse[i] = m + MPL_LOG(sum);
        }
        MPL_SUF(fmm_mm)(r1 - r0, nw->nv, t_hi - r0, nw->P + r0 * Wnp + r0, Wnp, 1,
                        nw->V + r0 * dp, dp, On + r0 * dp, dp, 0);
    }
}

/* Backward of rows [0, nb) of block b given G (NB x dp), the upstream
 * gradient rows (0 for padded queries), and av, the near blend (so the
 * gradient w.r.t. the near rows is av G; GN holds it): dQ (NB x dp, w.r.t.
 * the rotated queries) overwritten; the window's dK (rotated keys) and dV
 * accumulate, dV as P^T G without av, so that the flush gets both the
 * value gradient av P^T G and the blend's sum_i G_i near_i = sum_t V_t
 * (P^T G)_t. Probabilities are recomputed from lse. */
static void MPL_SUF(fmm_near_bwd)(const MPL_SUF(fmm_nws) *nw, const MPL_REAL *Qr,
                                  const MPL_REAL *G, const MPL_REAL *av, int64_t nb,
                                  const MPL_REAL *lse, MPL_REAL *GN, MPL_REAL *dQ)
{
    const int64_t Wnp = nw->Wnp, dp = nw->dp, nv = nw->nv;
    /* The transposed products below read, for key tile [t0, t0 + MR), the
     * rows i of [t0 - bw, t0 + MR): row i's query tile starts at or before
     * t0 (both tilings start at 0 in steps of MR) and its keys end less
     * than MR past its vectors, so zeroing MR entries (whole vectors) after
     * each row's vectors makes every entry read either computed or 0. */
    const int64_t margin = (FMM_MR + FMM_VW - 1) / FMM_VW;
    for (int64_t i = 0; i < nb; i++)
        for (int64_t v = 0; v < nv; v++)
            MPL_SUF(fmm_st)(GN + i * dp + v * FMM_VW, MPL_SUF(fmm_ld)(av + v * FMM_VW) *
                                                          MPL_SUF(fmm_ld)(G + i * dp + v * FMM_VW));
    for (int64_t r0 = 0; r0 < nb; r0 += FMM_MR) {
        const int64_t r1 = r0 + FMM_MR < nb ? r0 + FMM_MR : nb;
        int64_t t_hi, u0, u1;
        MPL_SUF(fmm_near_tile)(nw, r0, r1, &t_hi, &u0, &u1);
        MPL_SUF(fmm_near_logits)(nw, Qr, r0, r1, u0, u1);
        MPL_SUF(fmm_mm)(r1 - r0, u1 - u0, dp, GN + r0 * dp, dp, 1, nw->VT + u0 * FMM_VW, Wnp,
                        nw->dP + r0 * Wnp + u0 * FMM_VW, Wnp, 0);
        const int64_t u2 = u1 + margin < Wnp / FMM_VW ? u1 + margin : Wnp / FMM_VW;
        for (int64_t i = r0; i < r1; i++) {
            MPL_REAL *p = nw->P + i * Wnp, *dp_ = nw->dP + i * Wnp;
            memset(p + u1 * FMM_VW, 0, (size_t)((u2 - u1) * FMM_VW) * sizeof *p);
            memset(dp_ + u1 * FMM_VW, 0, (size_t)((u2 - u1) * FMM_VW) * sizeof *p);
            if (lse[i] == -INFINITY) { /* padded query: output was 0 */
                memset(p + u0 * FMM_VW, 0, (size_t)((u1 - u0) * FMM_VW) * sizeof *p);
                memset(dp_ + u0 * FMM_VW, 0, (size_t)((u1 - u0) * FMM_VW) * sizeof *p);
                continue;
            }
            FMM_V s = {0}; /* D = sum_t p_t dp_t = dnear_i . near_i */
            for (int64_t u = u0; u < u1; u++) {
                const FMM_V e = MPL_SUF(fmm_vexp)(MPL_SUF(fmm_ld)(p + u * FMM_VW) - lse[i]);
                MPL_SUF(fmm_st)(p + u * FMM_VW, e);
                s += e * MPL_SUF(fmm_ld)(dp_ + u * FMM_VW);
            }
            const MPL_REAL D = MPL_SUF(fmm_hsum)(s);
            for (int64_t u = u0; u < u1; u++)
                MPL_SUF(fmm_st)(dp_ + u * FMM_VW, MPL_SUF(fmm_ld)(p + u * FMM_VW) *
                                                      (MPL_SUF(fmm_ld)(dp_ + u * FMM_VW) - D) *
                                                      nw->scale);
        }
        MPL_SUF(fmm_mm)(r1 - r0, nv, t_hi - r0, nw->dP + r0 * Wnp + r0, Wnp, 1, nw->K + r0 * dp,
                        dp, dQ + r0 * dp, dp, 0);
    }
    /* dK += dS^T Qr, dV += P^T G over the key rows the block's queries see */
    const int64_t t_end = nb + nw->bw < nw->Wn ? nb + nw->bw : nw->Wn;
    for (int64_t t0 = 0; t0 < t_end; t0 += FMM_MR) {
        const int64_t t1 = t0 + FMM_MR < t_end ? t0 + FMM_MR : t_end;
        const int64_t ilo = t0 - nw->bw > 0 ? t0 - nw->bw : 0, ihi = t1 < nb ? t1 : nb;
        if (ihi <= ilo) continue;
        MPL_SUF(fmm_mm)(t1 - t0, nv, ihi - ilo, nw->dP + ilo * Wnp + t0, 1, Wnp, Qr + ilo * dp, dp,
                        nw->dK + t0 * dp, dp, 1);
        MPL_SUF(fmm_mm)(t1 - t0, nv, ihi - ilo, nw->P + ilo * Wnp + t0, 1, Wnp, G + ilo * dp, dp,
                        nw->dV + t0 * dp, dp, 1);
    }
}

/* Window rows [0, n) of block b are final: their dK (rotated back) and
 * dV (av P^T G), plus the far field's fdK, fdV, are added at their rows'
 * owners (the chunk's rows in dqkv, the halo rows in dpre / dpost when
 * given); dA (dp) += V_t (P^T G)_t, the near blend's gradient. */
static void MPL_SUF(fmm_win_flush)(const MPL_SUF(fmm_nws) *nw, const MPL_SUF(fmm_rows) *x,
                                   int64_t b, int64_t n, const MPL_REAL *av, MPL_REAL *dA)
{
    const int64_t dp = nw->dp, E = x->np + x->T + x->nq, Lb = x->np + b * FMM_NB - (nw->w - 1);
    MPL_SUF(fmm_win_rope)(nw, nw->dK, dp, n, 0, -1);
    for (int64_t t = 0; t < n; t++) {
        const int64_t e = Lb + t;
        if (e < 0 || e >= E) continue; /* absent: P^T G is 0 there */
        MPL_REAL *dv = nw->dV + t * dp;
        for (int64_t v = 0; v < nw->nv; v++) {
            const FMM_V g = MPL_SUF(fmm_ld)(dv + v * FMM_VW);
            MPL_SUF(fmm_st)(dA + v * FMM_VW, MPL_SUF(fmm_ld)(dA + v * FMM_VW) +
                                                 MPL_SUF(fmm_ld)(nw->V + t * dp + v * FMM_VW) * g);
            MPL_SUF(fmm_st)(dv + v * FMM_VW, MPL_SUF(fmm_ld)(av + v * FMM_VW) * g);
        }
        MPL_REAL *gk;
        if (e < x->np) {
            if (!x->dpre) continue;
            gk = x->dpre + e * 2 * x->HD;
        } else if (e < x->np + x->T) {
            gk = x->dqkv + (e - x->np) * x->W + x->HD;
        } else {
            if (!x->dpost) continue;
            gk = x->dpost + (e - x->np - x->T) * 2 * x->HD;
        }
        MPL_SUF(fmm_add)(nw->dK + t * dp, nw->fdK + t * dp, dp);
        MPL_SUF(fmm_add)(nw->dV + t * dp, nw->fdV + t * dp, dp);
        MPL_SUF(fmm_add)(gk, nw->dK + t * dp, nw->d);
        MPL_SUF(fmm_add)(gk + x->HD, nw->dV + t * dp, nw->d);
    }
}
