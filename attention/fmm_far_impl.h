/* Template body of the FMM far field (fmm.h): feature maps, and the
 * chunked causal linear attention of one map on one chunk of C rows —
 * forward, the two backward sweeps, the statistics and their backward —
 * on padded thread-local panels with the kernels of fmm_kern_impl.h.
 * Included once per precision by fmm_f32.c / fmm_f64.c; no include guard
 * on purpose. Separate from the near field: a different algorithm (a
 * d x d state carried along the rows).
 *
 * Causal, per chunk of rows with features Qt, Kt and values V:
 * A = tril(Qt Kt^T) (inclusive), num = A V + Qt S, den = rowsum(A) +
 * Qt z + eps, far = scale num / den, then S += Kt^T V, z += sum Kt.
 * Backward without saving any per-row state of the forward: sweep A
 * (forward order) recomputes the prefix state, hence num and den, and
 * gives dq (dQt = dA Kt + dnum S^T + dden z^T, dA = tril(dnum V^T +
 * dden 1^T)) and, per row and map, f = scale/den and dden; sweep B
 * (reverse order) carries the gradient of the state, dS = sum of
 * Qt^T dnum over later rows, and gives dk, dv (dKt = dA^T Qt + V dS^T +
 * 1 dz^T, dV = A^T dnum + Kt dS) from those two numbers per row.
 * Bidirectional chunks see only the total state: num = Qt S. The state
 * is never recovered by subtraction (fp32 cancellation at long L). */

/* Rows per chunk: the in-chunk products cost O(C d) per row, the state
 * products O(d^2); 16 keeps the first small at d = 32. -DMPL_FMM_CB=n (a
 * divisor of FMM_NB, so that sweep A, which walks the chunks of each
 * block, and sweep B, which walks the chunks of the sequence, split the
 * rows alike) fixes it, e.g. 4 to cross many chunks in tests. */
#ifdef MPL_FMM_CB
#define FMM_CB MPL_FMM_CB
#else
#define FMM_CB 16
#endif

static MPL_REAL MPL_SUF(fmm_far_scale)(const mpl_attn_fmm_args *a)
{
    switch (a->far_scale) {
    case MPL_FMM_FAR_SCALE_INV_SQRT_N: return (MPL_REAL)(1.0 / sqrt((double)a->seq_len));
    case MPL_FMM_FAR_SCALE_ONE: return 1;
    default: return (MPL_REAL)(1.0 / sqrt((double)a->head_dim));
    }
}

/* Per-thread panels of one chunk (rows padded to Cp, columns to dp). */
typedef struct MPL_SUF(fmm_fws) {
    int64_t d, dp, nv, Cp;          /* nv = dp / VW */
    const MPL_REAL *lane1;          /* (dp) 1 for c < d, 0 in the pad */
    /* per map: (Cp, dp) features and phi' of the queries and keys, (Cp)
     * their divisors */
    MPL_REAL *Qt[MPL_FMM_MAX_MAPS], *Qd[MPL_FMM_MAX_MAPS], *Kt[MPL_FMM_MAX_MAPS];
    MPL_REAL *Kd[MPL_FMM_MAX_MAPS], *qs[MPL_FMM_MAX_MAPS], *ks[MPL_FMM_MAX_MAPS];
    MPL_REAL *KtT, *VcT;            /* (dp, Cp) */
    MPL_REAL *A, *dA;               /* (Cp, Cp) */
    MPL_REAL *N, *DN, *dQt, *dKt, *dVc; /* (Cp, dp) */
    MPL_REAL *E;                    /* (Cp, dp) exp(-|x|) of the rows being mapped */
    MPL_REAL *ST;                   /* (dp, dp): a state transposed */
} MPL_SUF(fmm_fws);

static int64_t MPL_SUF(fmm_fws_elems)(int64_t dp, int64_t r)
{
    const int64_t Cp = MPL_SUF(fmm_pad)(FMM_CB);
    return r * (4 * Cp * dp + 2 * Cp) + 6 * Cp * dp + 2 * dp * Cp + 2 * Cp * Cp + dp * dp;
}

static void MPL_SUF(fmm_fws_carve)(MPL_SUF(fmm_fws) *w, int64_t d, int64_t r,
                                   const MPL_REAL *lane1, MPL_REAL *p)
{
    const int64_t dp = MPL_SUF(fmm_pad)(d), Cp = MPL_SUF(fmm_pad)(FMM_CB);
    w->d = d, w->dp = dp, w->nv = dp / FMM_VW, w->Cp = Cp, w->lane1 = lane1;
    for (int64_t m = 0; m < r; m++) {
        w->Qt[m] = p, p += Cp * dp;
        w->Qd[m] = p, p += Cp * dp;
        w->Kt[m] = p, p += Cp * dp;
        w->Kd[m] = p, p += Cp * dp;
        w->qs[m] = p, p += Cp;
        w->ks[m] = p, p += Cp;
    }
    MPL_REAL **rows[] = {&w->N, &w->DN, &w->dQt, &w->dKt, &w->dVc, &w->E};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) *rows[i] = p, p += Cp * dp;
    w->KtT = p, p += dp * Cp;
    w->VcT = p, p += dp * Cp;
    w->A = p, p += Cp * Cp;
    w->dA = p, p += Cp * Cp;
    w->ST = p;
}

/* The rows of one chunk and its map: raw queries X, keys Kr, values Vc
 * (n rows, stride dp), the padding of the rows, the map's weight cm. */
typedef struct MPL_SUF(fmm_chunk) {
    const MPL_REAL *X, *Kr, *Vc, *G; /* G: upstream gradient rows (backward), 0 when padded */
    const uint8_t *ok;
    int64_t n;
} MPL_SUF(fmm_chunk);

/* Features of the raw rows X (n x dp, pad columns zero) for every map:
 * F[m] (n_pad x dp), divided by their sum when feature_norm (sm[m] = the
 * divisor, else 1), and phi' into D[m] unless D is NULL. Rows with
 * ok[i] = 0 (ok NULL: all real) and rows n .. n_pad-1 get zeros and sum 1.
 * elu(x)+1 is x+1 for x > 0 and exp(x) otherwise ((exp(x)-1)+1 would
 * underflow to 0); elu and elu_flip share e = exp(-|x|), one exp for both. */
static void MPL_SUF(fmm_feats)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w,
                               const MPL_REAL *X, int64_t n, int64_t n_pad, const uint8_t *ok,
                               MPL_REAL *const *F, MPL_REAL *const *D, MPL_REAL *const *sm)
{
    const int64_t dp = w->dp, nv = w->nv, r = a->n_maps;
    const FMM_V one = MPL_SUF(fmm_splat)(1), zero = {0};
    int need_e = 0;
    for (int64_t m = 0; m < r; m++) need_e |= a->maps[m] != MPL_FMM_MAP_TANH;
    if (need_e)
        for (int64_t i = 0; i < n * nv; i++) {
            const FMM_V x = MPL_SUF(fmm_ld)(X + i * FMM_VW);
            MPL_SUF(fmm_st)(w->E + i * FMM_VW, MPL_SUF(fmm_vexp)(MPL_SUF(fmm_sel)(x > zero, -x, x)));
        }
    for (int64_t m = 0; m < r; m++) {
        const mpl_fmm_map map = a->maps[m];
        for (int64_t i = 0; i < n_pad; i++) {
            MPL_REAL *f = F[m] + i * dp, *dd = D ? D[m] + i * dp : NULL;
            if (i >= n || (ok && !ok[i])) {
                memset(f, 0, (size_t)dp * sizeof *f);
                if (D) memset(dd, 0, (size_t)dp * sizeof *dd);
                if (sm) sm[m][i] = 1;
                continue;
            }
            const MPL_REAL *x = X + i * dp, *e = w->E + i * dp;
            FMM_V acc = zero;
            /* one loop per map; phi' only where it is wanted */
            if (map == MPL_FMM_MAP_ELU) {
                for (int64_t v = 0; v < nv; v++) {
                    const FMM_V xv = MPL_SUF(fmm_ld)(x + v * FMM_VW), ev = MPL_SUF(fmm_ld)(e + v * FMM_VW);
                    const FMM_VI pos = xv > zero;
                    const FMM_V ft = MPL_SUF(fmm_sel)(pos, xv + 1, ev);
                    acc += ft;
                    MPL_SUF(fmm_st)(f + v * FMM_VW, ft);
                    if (dd) MPL_SUF(fmm_st)(dd + v * FMM_VW, MPL_SUF(fmm_sel)(pos, one, ev));
                }
            } else if (map == MPL_FMM_MAP_ELU_FLIP) { /* elu(-x) + 1 */
                for (int64_t v = 0; v < nv; v++) {
                    const FMM_V xv = MPL_SUF(fmm_ld)(x + v * FMM_VW), ev = MPL_SUF(fmm_ld)(e + v * FMM_VW);
                    const FMM_VI neg = xv < zero;
                    const FMM_V ft = MPL_SUF(fmm_sel)(neg, 1 - xv, ev);
                    acc += ft;
                    MPL_SUF(fmm_st)(f + v * FMM_VW, ft);
                    if (dd) MPL_SUF(fmm_st)(dd + v * FMM_VW, MPL_SUF(fmm_sel)(neg, -one, -ev));
                }
            } else {
                for (int64_t v = 0; v < nv; v++) {
                    FMM_V t = MPL_SUF(fmm_ld)(x + v * FMM_VW);
                    for (int l = 0; l < (int)FMM_VW; l++) t[l] = MPL_TANH(t[l]);
                    acc += t + 1;
                    MPL_SUF(fmm_st)(f + v * FMM_VW, t + 1);
                    if (dd) MPL_SUF(fmm_st)(dd + v * FMM_VW, 1 - t * t);
                }
            }
            if (w->d < dp) { /* pad lanes: no feature (phi(0) would be 1) */
                acc = zero;
                for (int64_t v = 0; v < nv; v++) {
                    const FMM_V msk = MPL_SUF(fmm_ld)(w->lane1 + v * FMM_VW);
                    const FMM_V ft = MPL_SUF(fmm_ld)(f + v * FMM_VW) * msk;
                    acc += ft;
                    MPL_SUF(fmm_st)(f + v * FMM_VW, ft);
                    if (dd) MPL_SUF(fmm_st)(dd + v * FMM_VW, MPL_SUF(fmm_ld)(dd + v * FMM_VW) * msk);
                }
            }
            MPL_REAL s = 1;
            if (a->feature_norm) {
                s = MPL_SUF(fmm_hsum)(acc);
                const MPL_REAL inv = (MPL_REAL)1 / s;
                for (int64_t v = 0; v < nv; v++)
                    MPL_SUF(fmm_st)(f + v * FMM_VW, MPL_SUF(fmm_ld)(f + v * FMM_VW) * inv);
            }
            if (sm) sm[m][i] = s;
        }
    }
}

/* The features a sweep needs of a chunk, every map: queries (with phi'
 * when qd), keys when k (with phi' when kd). */
static void MPL_SUF(fmm_far_feats)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w,
                                   const MPL_SUF(fmm_chunk) *c, int q, int qd, int k, int kd)
{
    if (q)
        MPL_SUF(fmm_feats)(a, w, c->X, c->n, w->Cp, c->ok, w->Qt, qd ? w->Qd : NULL,
                           qd ? w->qs : NULL);
    if (k)
        MPL_SUF(fmm_feats)(a, w, c->Kr, c->n, w->Cp, c->ok, w->Kt, kd ? w->Kd : NULL,
                           kd ? w->ks : NULL);
}

static inline MPL_REAL MPL_SUF(fmm_dot)(int64_t nv, const MPL_REAL *x, const MPL_REAL *y)
{
    FMM_V acc = {0};
    for (int64_t v = 0; v < nv; v++)
        acc += MPL_SUF(fmm_ld)(x + v * FMM_VW) * MPL_SUF(fmm_ld)(y + v * FMM_VW);
    return MPL_SUF(fmm_hsum)(acc);
}

/* dx (a padded row) += the gradient through the features given dft:
 * with normalisation ft = phi / s, dphi_c = (dft_c - dft . ft) / s (pad
 * lanes: phi' = 0, nothing added). */
static inline void MPL_SUF(fmm_featback)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w,
                                         const MPL_REAL *ft, const MPL_REAL *dph, MPL_REAL sum,
                                         const MPL_REAL *dft, MPL_REAL *dx)
{
    const MPL_REAL dot = a->feature_norm ? MPL_SUF(fmm_dot)(w->nv, dft, ft) : 0;
    const MPL_REAL inv = (MPL_REAL)1 / sum;
    for (int64_t v = 0; v < w->nv; v++)
        MPL_SUF(fmm_st)(dx + v * FMM_VW, MPL_SUF(fmm_ld)(dx + v * FMM_VW) +
                                             (MPL_SUF(fmm_ld)(dft + v * FMM_VW) - dot) * inv *
                                                 MPL_SUF(fmm_ld)(dph + v * FMM_VW));
}

/* A (n x Cp) = tril(Qt Kt^T) of map m, inclusive; KtT gets Kt^T. */
static void MPL_SUF(fmm_far_tril)(const MPL_SUF(fmm_fws) *w, int m, int64_t n)
{
    const int64_t dp = w->dp, Cp = w->Cp;
    MPL_SUF(fmm_tr)(Cp, dp, w->Kt[m], dp, w->KtT, Cp);
    MPL_SUF(fmm_mm)(n, Cp / FMM_VW, dp, w->Qt[m], dp, 1, w->KtT, Cp, w->A, Cp, 0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < Cp; j++) w->A[i * Cp + j] = 0;
}

/* dA (n x Cp) = tril(dA + dden 1^T): the gradient w.r.t. A given dA =
 * dnum V^T. */
static void MPL_SUF(fmm_far_dtril)(const MPL_SUF(fmm_fws) *w, int64_t n, const MPL_REAL *ddn)
{
    const FMM_VI iota = MPL_SUF(fmm_iota)();
    for (int64_t i = 0; i < n; i++) {
        MPL_REAL *row = w->dA + i * w->Cp;
        const FMM_VI lim = (FMM_VI){0} + (MPL_IREAL)i;
        for (int64_t u = 0; u < w->Cp / FMM_VW; u++) {
            const FMM_VI j = iota + (MPL_IREAL)(u * FMM_VW);
            MPL_SUF(fmm_st)(row + u * FMM_VW, MPL_SUF(fmm_sel)(j <= lim, MPL_SUF(fmm_ld)(row + u * FMM_VW) + ddn[i],
                                                               (FMM_V){0}));
        }
    }
}

/* num (n x dp) = [A V +] Qt S into w->N; the denominator of row i is
 * [rowsum(A_i) +] Qt_i . z + eps. */
static void MPL_SUF(fmm_far_num)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w, int m,
                                 int64_t n, const MPL_REAL *Vc, const MPL_REAL *S)
{
    const int64_t dp = w->dp;
    if (a->causal) {
        MPL_SUF(fmm_mm)(n, w->nv, n, w->A, w->Cp, 1, Vc, dp, w->N, dp, 0);
        MPL_SUF(fmm_mm)(n, w->nv, dp, w->Qt[m], dp, 1, S, dp, w->N, dp, 1);
    } else {
        MPL_SUF(fmm_mm)(n, w->nv, dp, w->Qt[m], dp, 1, S, dp, w->N, dp, 0);
    }
}

static MPL_REAL MPL_SUF(fmm_far_den)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w,
                                     int m, int64_t i, const MPL_REAL *z)
{
    MPL_REAL den = MPL_SUF(fmm_dot)(w->nv, w->Qt[m] + i * w->dp, z);
    if (a->causal) {
        FMM_V acc = {0};
        for (int64_t v = 0; v < w->Cp / FMM_VW; v++)
            acc += MPL_SUF(fmm_ld)(w->A + i * w->Cp + v * FMM_VW);
        den += MPL_SUF(fmm_hsum)(acc);
    }
    return den + (MPL_REAL)a->eps;
}

/* S (dp x dp) += Kt^T Vc, z += sum of Kt rows: the chunk's rows join the
 * state. */
static void MPL_SUF(fmm_far_absorb)(const MPL_SUF(fmm_fws) *w, int m, int64_t n,
                                    const MPL_REAL *Vc, MPL_REAL *S)
{
    const int64_t dp = w->dp;
    MPL_SUF(fmm_mm)(dp, w->nv, n, w->Kt[m], 1, dp, Vc, dp, S, dp, 1);
    MPL_REAL *z = S + dp * dp;
    for (int64_t j = 0; j < n; j++)
        for (int64_t v = 0; v < w->nv; v++)
            MPL_SUF(fmm_st)(z + v * FMM_VW, MPL_SUF(fmm_ld)(z + v * FMM_VW) +
                                                MPL_SUF(fmm_ld)(w->Kt[m] + j * dp + v * FMM_VW));
}

/* dKt (n x dp) = Vc dS^T + 1 dz^T and dVc (n x dp) = Kt dS: the
 * gradient through a state that the rows' keys and values were summed
 * into. Shared by sweep B and phase 3. */
static void MPL_SUF(fmm_far_state_grad)(const MPL_SUF(fmm_fws) *w, int m, int64_t n,
                                        const MPL_REAL *Vc, const MPL_REAL *dS)
{
    const int64_t dp = w->dp;
    const MPL_REAL *dz = dS + dp * dp;
    MPL_SUF(fmm_tr)(dp, dp, dS, dp, w->ST, dp);
    MPL_SUF(fmm_mm)(n, w->nv, dp, Vc, dp, 1, w->ST, dp, w->dKt, dp, 0);
    for (int64_t j = 0; j < n; j++)
        for (int64_t v = 0; v < w->nv; v++)
            MPL_SUF(fmm_st)(w->dKt + j * dp + v * FMM_VW,
                            MPL_SUF(fmm_ld)(w->dKt + j * dp + v * FMM_VW) +
                                MPL_SUF(fmm_ld)(dz + v * FMM_VW));
    MPL_SUF(fmm_mm)(n, w->nv, dp, w->Kt[m], dp, 1, dS, dp, w->dVc, dp, 0);
}

/* dS (dp*dp + dp) += Qt^T dnum, dz += Qt^T dden: the rows' share of the
 * gradient w.r.t. a state their queries read (dnum in w->DN). */
static void MPL_SUF(fmm_far_carry)(const MPL_SUF(fmm_fws) *w, int m, int64_t n,
                                   const MPL_REAL *ddn, MPL_REAL *dS)
{
    const int64_t dp = w->dp;
    const MPL_REAL *Qt = w->Qt[m];
    MPL_SUF(fmm_mm)(dp, w->nv, n, Qt, 1, dp, w->DN, dp, dS, dp, 1);
    for (int64_t i = 0; i < n; i++)
        for (int64_t v = 0; v < w->nv; v++)
            MPL_SUF(fmm_st)(dS + dp * dp + v * FMM_VW,
                            MPL_SUF(fmm_ld)(dS + dp * dp + v * FMM_VW) +
                                ddn[i] * MPL_SUF(fmm_ld)(Qt + i * dp + v * FMM_VW));
}

/* dk, dv (n padded rows) += featback(dKt), dVc for the chunk's unpadded
 * rows (dKt, dVc: the key-feature and value gradients in w). */
static void MPL_SUF(fmm_far_kv_back)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w, int m,
                                     const MPL_SUF(fmm_chunk) *c, MPL_REAL *dk, MPL_REAL *dv)
{
    const int64_t dp = w->dp;
    for (int64_t j = 0; j < c->n; j++) {
        if (c->ok && !c->ok[j]) continue;
        MPL_SUF(fmm_featback)(a, w, w->Kt[m] + j * dp, w->Kd[m] + j * dp, w->ks[m][j],
                              w->dKt + j * dp, dk + j * dp);
        MPL_SUF(fmm_add)(dv + j * dp, w->dVc + j * dp, dp);
    }
}

/* Forward of one chunk and map (features: fmm_far_feats q, k): F (n x dp)
 * += cm * far. Causal: S (the state before the chunk, dp*dp + dp)
 * advances past it. */
static void MPL_SUF(fmm_far_fwd_chunk)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w,
                                       int m, MPL_REAL cm, const MPL_SUF(fmm_chunk) *c,
                                       MPL_REAL *S, MPL_REAL *F)
{
    const int64_t dp = w->dp, n = c->n;
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a);
    if (a->causal) MPL_SUF(fmm_far_tril)(w, m, n);
    MPL_SUF(fmm_far_num)(a, w, m, n, c->Vc, S);
    for (int64_t i = 0; i < n; i++) {
        if (c->ok && !c->ok[i]) continue; /* padded query: far = 0 */
        const MPL_REAL f =
            cm * (a->far_norm ? scale / MPL_SUF(fmm_far_den)(a, w, m, i, S + dp * dp) : scale);
        for (int64_t v = 0; v < w->nv; v++)
            MPL_SUF(fmm_st)(F + i * dp + v * FMM_VW,
                            MPL_SUF(fmm_ld)(F + i * dp + v * FMM_VW) +
                                f * MPL_SUF(fmm_ld)(w->N + i * dp + v * FMM_VW));
    }
    if (a->causal) MPL_SUF(fmm_far_absorb)(w, m, n, c->Vc, S);
}

/* What sweep A returns per (s, h): blend-gradient partials. */
typedef struct MPL_SUF(fmm_far_acc) {
    MPL_REAL *dB;   /* (dp) sum of g . cm far, per channel */
    MPL_REAL *dal;  /* (r) sum of g . b . far_m */
} MPL_SUF(fmm_far_acc);

/* Sweep A of one chunk and map (forward order; features: fmm_far_feats
 * q with phi', and causal k with phi'): dq (n padded rows) += the far
 * field's query gradient; causal: dk, dv (n padded rows) += the part of
 * the key and value gradients from this chunk's own queries (dKt = dA^T
 * Qt, dV = A^T dnum: it needs no later state), fsc, ddn (n) = scale/den
 * and dden per row for sweep B, and S advances; bidirectional: dS
 * (dp*dp + dp) += the gradient w.r.t. the total. bv (dp): the far blend b. */
static void MPL_SUF(fmm_far_bwd_a)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w, int m,
                                   MPL_REAL cm, const MPL_REAL *bv, const MPL_SUF(fmm_chunk) *c,
                                   MPL_REAL *S, MPL_REAL *dS, MPL_REAL *dq, MPL_REAL *dk,
                                   MPL_REAL *dv, MPL_REAL *fsc, MPL_REAL *ddn,
                                   MPL_SUF(fmm_far_acc) acc)
{
    const int64_t dp = w->dp, nv = w->nv, n = c->n, Cp = w->Cp;
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a);
    const MPL_REAL *z = S + dp * dp, *Qt = w->Qt[m];
    if (a->causal) MPL_SUF(fmm_far_tril)(w, m, n);
    MPL_SUF(fmm_far_num)(a, w, m, n, c->Vc, S);
    for (int64_t i = 0; i < n; i++) {
        MPL_REAL *dn = w->DN + i * dp;
        if (c->ok && !c->ok[i]) {
            memset(dn, 0, (size_t)dp * sizeof *dn);
            fsc[i] = ddn[i] = 0;
            continue;
        }
        MPL_REAL den = 1, f = scale, gfar = 0, gbfar = 0;
        if (a->far_norm) den = MPL_SUF(fmm_far_den)(a, w, m, i, z), f = scale / den;
        FMM_V s1 = {0}, s2 = {0};
        for (int64_t v = 0; v < nv; v++) {
            const FMM_V g = MPL_SUF(fmm_ld)(c->G + i * dp + v * FMM_VW);
            const FMM_V b = MPL_SUF(fmm_ld)(bv + v * FMM_VW);
            const FMM_V far = f * MPL_SUF(fmm_ld)(w->N + i * dp + v * FMM_VW);
            const FMM_V gf = g * b * cm; /* gradient w.r.t. far_m */
            s1 += gf * far;
            s2 += g * b * far;
            MPL_SUF(fmm_st)(acc.dB + v * FMM_VW,
                            MPL_SUF(fmm_ld)(acc.dB + v * FMM_VW) + g * (cm * far));
            MPL_SUF(fmm_st)(dn + v * FMM_VW, f * gf);
        }
        gfar = MPL_SUF(fmm_hsum)(s1), gbfar = MPL_SUF(fmm_hsum)(s2);
        acc.dal[m] += gbfar;
        fsc[i] = f;
        ddn[i] = a->far_norm ? -gfar / den : 0;
    }
    /* dQt = dnum S^T + dden z^T (+ dA Kt) */
    MPL_SUF(fmm_tr)(dp, dp, S, dp, w->ST, dp);
    MPL_SUF(fmm_mm)(n, nv, dp, w->DN, dp, 1, w->ST, dp, w->dQt, dp, 0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t v = 0; v < nv; v++)
            MPL_SUF(fmm_st)(w->dQt + i * dp + v * FMM_VW,
                            MPL_SUF(fmm_ld)(w->dQt + i * dp + v * FMM_VW) +
                                ddn[i] * MPL_SUF(fmm_ld)(z + v * FMM_VW));
    if (a->causal) {
        MPL_SUF(fmm_mm)(n, Cp / FMM_VW, dp, w->DN, dp, 1, w->VcT, Cp, w->dA, Cp, 0);
        MPL_SUF(fmm_far_dtril)(w, n, ddn);
        MPL_SUF(fmm_mm)(n, nv, n, w->dA, Cp, 1, w->Kt[m], dp, w->dQt, dp, 1);
    }
    for (int64_t i = 0; i < n; i++)
        if (!c->ok || c->ok[i])
            MPL_SUF(fmm_featback)(a, w, Qt + i * dp, w->Qd[m] + i * dp, w->qs[m][i],
                                  w->dQt + i * dp, dq + i * dp);
    if (a->causal) {
        /* in-chunk dKt = dA^T Qt, dV = A^T dnum */
        MPL_SUF(fmm_mm)(n, nv, n, w->dA, 1, Cp, Qt, dp, w->dKt, dp, 0);
        MPL_SUF(fmm_mm)(n, nv, n, w->A, 1, Cp, w->DN, dp, w->dVc, dp, 0);
        MPL_SUF(fmm_far_kv_back)(a, w, m, c, dk, dv);
        MPL_SUF(fmm_far_absorb)(w, m, n, c->Vc, S);
    } else {
        MPL_SUF(fmm_far_carry)(w, m, n, ddn, dS);
    }
}

/* Sweep B of one causal chunk and map (reverse order; features:
 * fmm_far_feats q, and k with phi'): dk, dv (n padded rows) += the part of
 * the key and value gradients from the queries after the chunk, through
 * dS (dp*dp + dp), the gradient w.r.t. the state after the chunk, which
 * then becomes the one before it (dS += Qt^T dnum, dz += Qt^T dden, with
 * dnum = fsc gF, dden = ddn from sweep A). */
static void MPL_SUF(fmm_far_bwd_b)(const mpl_attn_fmm_args *a, const MPL_SUF(fmm_fws) *w, int m,
                                   MPL_REAL cm, const MPL_REAL *bv, const MPL_SUF(fmm_chunk) *c,
                                   const MPL_REAL *fsc, const MPL_REAL *ddn, MPL_REAL *dS,
                                   MPL_REAL *dk, MPL_REAL *dv)
{
    const int64_t dp = w->dp, nv = w->nv, n = c->n;
    MPL_SUF(fmm_far_state_grad)(w, m, n, c->Vc, dS);
    MPL_SUF(fmm_far_kv_back)(a, w, m, c, dk, dv);
    for (int64_t i = 0; i < n; i++)
        for (int64_t v = 0; v < nv; v++)
            MPL_SUF(fmm_st)(w->DN + i * dp + v * FMM_VW,
                            (fsc[i] * cm) * (MPL_SUF(fmm_ld)(c->G + i * dp + v * FMM_VW) *
                                             MPL_SUF(fmm_ld)(bv + v * FMM_VW)));
    MPL_SUF(fmm_far_carry)(w, m, n, ddn, dS);
}

/* Phase 1 of one chunk and map (features: fmm_far_feats k): S += the
 * chunk's sums over its unpadded rows. */
static void MPL_SUF(fmm_far_stats_chunk)(const MPL_SUF(fmm_fws) *w, int m,
                                         const MPL_SUF(fmm_chunk) *c, MPL_REAL *S)
{
    MPL_SUF(fmm_far_absorb)(w, m, c->n, c->Vc, S);
}

/* Phase 3 of one chunk and map (features: fmm_far_feats k with phi'): dk,
 * dv (n padded rows) += the gradient through the chunk's sums given dS,
 * the gradient w.r.t. them. */
static void MPL_SUF(fmm_far_stats_bwd_chunk)(const mpl_attn_fmm_args *a,
                                             const MPL_SUF(fmm_fws) *w, int m,
                                             const MPL_SUF(fmm_chunk) *c, const MPL_REAL *dS,
                                             MPL_REAL *dk, MPL_REAL *dv)
{
    MPL_SUF(fmm_far_state_grad)(w, m, c->n, c->Vc, dS);
    MPL_SUF(fmm_far_kv_back)(a, w, m, c, dk, dv);
}

/* A state (dp*dp + dp, padded) from stat layout (d*d + d) or zeros, and
 * back (added). */
static void MPL_SUF(fmm_state_load)(int64_t d, int64_t dp, const MPL_REAL *src, MPL_REAL *S)
{
    memset(S, 0, (size_t)(dp * dp + dp) * sizeof *S);
    if (!src) return;
    for (int64_t p = 0; p < d; p++) memcpy(S + p * dp, src + p * d, (size_t)d * sizeof *S);
    memcpy(S + dp * dp, src + d * d, (size_t)d * sizeof *S);
}

static void MPL_SUF(fmm_state_add)(int64_t d, int64_t dp, const MPL_REAL *S, MPL_REAL *dst)
{
    for (int64_t p = 0; p < d; p++)
        for (int64_t c = 0; c < d; c++) dst[p * d + c] += S[p * dp + c];
    for (int64_t c = 0; c < d; c++) dst[d * d + c] += S[dp * dp + c];
}
