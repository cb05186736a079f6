/* Template body of the FMM far field (fmm.h): feature maps, the chunk's
 * statistics (S, z), the causal prefix scan / bidirectional total, and
 * their backward, for one (sequence, head, map). Included once per
 * precision by fmm_f32.c / fmm_f64.c (macros MPL_REAL, MPL_SUF, MPL_EXP,
 * MPL_TANH); no include guard on purpose. Separate from the near field:
 * a different algorithm (a d x d state carried along the rows).
 *
 * The scan is per token, O(d^2) per row and map: S += kt v^T, then
 * num = qt^T S. Rows are visited in order and sums never reassociate, so
 * the result does not depend on the thread count. */

/* phi(x) of a map and its derivative. elu(x)+1 is computed as x+1 for
 * x > 0 and exp(x) otherwise: (exp(x)-1)+1 would underflow to 0. */
static inline MPL_REAL MPL_SUF(fmm_phi)(mpl_fmm_map m, MPL_REAL x, MPL_REAL *dphi)
{
    if (m == MPL_FMM_MAP_ELU) {
        if (x > 0) { *dphi = 1; return x + 1; }
        const MPL_REAL e = MPL_EXP(x);
        *dphi = e;
        return e;
    }
    if (m == MPL_FMM_MAP_ELU_FLIP) { /* elu(-x) + 1 */
        if (x < 0) { *dphi = -1; return 1 - x; }
        const MPL_REAL e = MPL_EXP(-x);
        *dphi = -e;
        return e;
    }
    const MPL_REAL t = MPL_TANH(x);
    *dphi = 1 - t * t;
    return t + 1;
}

/* ft (d) = features of x (d, contiguous or strided by 1), normalised by
 * their sum when feature_norm; dph (d) = phi'(x); *sum = the divisor
 * (1 without normalisation). */
static inline void MPL_SUF(fmm_feat)(const mpl_attn_fmm_args *a, mpl_fmm_map m,
                                     const MPL_REAL *x, MPL_REAL *ft, MPL_REAL *dph,
                                     MPL_REAL *sum)
{
    const int d = a->head_dim;
    MPL_REAL s = 0;
    for (int c = 0; c < d; c++) {
        ft[c] = MPL_SUF(fmm_phi)(m, x[c], &dph[c]);
        s += ft[c];
    }
    if (a->feature_norm) {
        const MPL_REAL inv = (MPL_REAL)1 / s;
        for (int c = 0; c < d; c++) ft[c] *= inv;
    } else {
        s = 1;
    }
    *sum = s;
}

/* dx (d) += gradient through fmm_feat given dft, the gradient w.r.t. ft.
 * With normalisation ft = phi / s: dphi_c = (dft_c - dft . ft) / s. */
static inline void MPL_SUF(fmm_feat_backward)(const mpl_attn_fmm_args *a, const MPL_REAL *ft,
                                              const MPL_REAL *dph, MPL_REAL sum,
                                              const MPL_REAL *dft, MPL_REAL *dx)
{
    const int d = a->head_dim;
    MPL_REAL dot = 0;
    if (a->feature_norm)
        for (int c = 0; c < d; c++) dot += dft[c] * ft[c];
    for (int c = 0; c < d; c++) dx[c] += (dft[c] - dot) / sum * dph[c];
}

static MPL_REAL MPL_SUF(fmm_far_scale)(const mpl_attn_fmm_args *a)
{
    switch (a->far_scale) {
    case MPL_FMM_FAR_SCALE_INV_SQRT_N: return (MPL_REAL)(1.0 / sqrt((double)a->seq_len));
    case MPL_FMM_FAR_SCALE_ONE: return 1;
    default: return (MPL_REAL)(1.0 / sqrt((double)a->head_dim));
    }
}

/* S (d x d) += kt v^T, z += kt. */
static inline void MPL_SUF(fmm_rank1)(int d, MPL_REAL *restrict S, MPL_REAL *restrict z,
                                      const MPL_REAL *restrict kt, const MPL_REAL *restrict v)
{
    for (int p = 0; p < d; p++) {
        const MPL_REAL kp = kt[p];
        MPL_REAL *restrict row = S + (int64_t)p * d;
        for (int c = 0; c < d; c++) row[c] += kp * v[c];
        z[p] += kp;
    }
}

/* Scratch one thread needs for the far field of one (s, h, map). */
static int64_t MPL_SUF(fmm_far_scratch_elems)(const mpl_attn_fmm_args *a)
{
    const int64_t d = a->head_dim;
    return a->n_tok * (2 * d + 1) + 2 * (d * d + d) + 8 * d;
}

/* Phase 1 for one (s, h, map): Sz (d*d + d) = the chunk's sums over its
 * unpadded rows. */
static void MPL_SUF(fmm_far_stats)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                   const MPL_REAL *qkv, MPL_REAL *Sz, MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, W = 3 * HD, T = a->n_tok;
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    MPL_REAL *kt = tmp, *dph = tmp + d, sum;
    memset(Sz, 0, (size_t)(d * d + d) * sizeof *Sz);
    for (int64_t i = 0; i < T; i++) {
        if (mk && !mk[i]) continue;
        const MPL_REAL *row = qkv + (s * T + i) * W + h * d;
        MPL_SUF(fmm_feat)(a, a->maps[m], row + HD, kt, dph, &sum);
        MPL_SUF(fmm_rank1)((int)d, Sz, Sz + d * d, kt, row + 2 * HD);
    }
}

/* Forward of one (s, h, map): far rows (n_tok, stride HD) overwritten.
 * Sz_in (d*d + d): causal exclusive prefix / bidirectional total, or NULL
 * for zeros. Causal sums include row i before query i (inclusive scan). */
static void MPL_SUF(fmm_far_forward)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                     const MPL_REAL *qkv, const MPL_REAL *Sz_in, MPL_REAL *far,
                                     MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, W = 3 * HD, T = a->n_tok;
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    MPL_REAL *S = tmp, *z = S + d * d, *ft = z + d, *dph = ft + d, sum;
    if (Sz_in) memcpy(S, Sz_in, (size_t)(d * d + d) * sizeof *S);
    else memset(S, 0, (size_t)(d * d + d) * sizeof *S);
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a), eps = (MPL_REAL)a->eps;
    for (int64_t i = 0; i < T; i++) {
        const MPL_REAL *row = qkv + (s * T + i) * W + h * d;
        MPL_REAL *F = far + i * HD;
        if (mk && !mk[i]) { /* padded: no key contribution, output 0 */
            for (int64_t c = 0; c < d; c++) F[c] = 0;
            continue;
        }
        if (a->causal) {
            MPL_SUF(fmm_feat)(a, a->maps[m], row + HD, ft, dph, &sum);
            MPL_SUF(fmm_rank1)((int)d, S, z, ft, row + 2 * HD);
        }
        MPL_SUF(fmm_feat)(a, a->maps[m], row, ft, dph, &sum);
        for (int64_t c = 0; c < d; c++) F[c] = 0;
        for (int64_t p = 0; p < d; p++) {
            const MPL_REAL qp = ft[p];
            const MPL_REAL *restrict Sr = S + p * d;
            for (int64_t c = 0; c < d; c++) F[c] += qp * Sr[c];
        }
        MPL_REAL f = scale;
        if (a->far_norm) {
            MPL_REAL den = 0;
            for (int64_t p = 0; p < d; p++) den += ft[p] * z[p];
            f = scale / (den + eps);
        }
        for (int64_t c = 0; c < d; c++) F[c] *= f;
    }
}

/* Gradient through (S, z) = the given dSz (d*d + d) held constant over the
 * rows: for every unpadded row j, dkt_j = dS v_j + dz and dv_j = dS^T kt_j,
 * into dqkv. Shared by the causal in-chunk suffix sums (dSz varies) and by
 * phase 3; this is the one-row helper. */
static inline void MPL_SUF(fmm_far_key_grad)(const mpl_attn_fmm_args *a, int m,
                                             const MPL_REAL *row, const MPL_REAL *dSz,
                                             MPL_REAL *drow, MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d;
    const MPL_REAL *dS = dSz, *dz = dSz + d * d, *v = row + 2 * HD;
    MPL_REAL *kt = tmp, *dph = kt + d, *dkt = dph + d, sum;
    MPL_REAL *dv = drow + 2 * HD;
    MPL_SUF(fmm_feat)(a, a->maps[m], row + HD, kt, dph, &sum);
    for (int64_t p = 0; p < d; p++) {
        const MPL_REAL *restrict r = dS + p * d;
        MPL_REAL acc = dz[p];
        for (int64_t c = 0; c < d; c++) {
            acc += r[c] * v[c];
            dv[c] += r[c] * kt[p];
        }
        dkt[p] = acc;
    }
    MPL_SUF(fmm_feat_backward)(a, kt, dph, sum, dkt, drow + HD);
}

/* Backward of one (s, h, map). gF (n_tok rows, stride ldg) = gradient
 * w.r.t. this map's far rows. Adds dq (and, causal, the in-chunk dk, dv)
 * into dqkv; dSz_in (d*d + d) += gradient w.r.t. Sz_in. */
static void MPL_SUF(fmm_far_backward)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                      const MPL_REAL *qkv, const MPL_REAL *Sz_in,
                                      const MPL_REAL *gF, int64_t ldg, MPL_REAL *dqkv,
                                      MPL_REAL *dSz_in, MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, W = 3 * HD, T = a->n_tok;
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    MPL_REAL *qt_all = tmp, *dn_all = qt_all + T * d, *dden_all = dn_all + T * d;
    MPL_REAL *S = dden_all + T, *z = S + d * d, *dS = z + d, *dz = dS + d * d;
    MPL_REAL *ft = dz + d, *dph = ft + d, *dqt = dph + d, *num = dqt + d, *ktmp = num + d;
    MPL_REAL sum;
    if (Sz_in) memcpy(S, Sz_in, (size_t)(d * d + d) * sizeof *S);
    else memset(S, 0, (size_t)(d * d + d) * sizeof *S);
    memset(dS, 0, (size_t)(d * d + d) * sizeof *dS);
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a), eps = (MPL_REAL)a->eps;

    /* Pass 1, in row order: S_i, z_i as in the forward; dqt_i. */
    for (int64_t i = 0; i < T; i++) {
        if (mk && !mk[i]) continue;
        const MPL_REAL *row = qkv + (s * T + i) * W + h * d;
        if (a->causal) {
            MPL_SUF(fmm_feat)(a, a->maps[m], row + HD, ft, dph, &sum);
            MPL_SUF(fmm_rank1)((int)d, S, z, ft, row + 2 * HD);
        }
        MPL_REAL *qt = qt_all + i * d, *dn = dn_all + i * d;
        const MPL_REAL *g = gF + i * ldg;
        MPL_SUF(fmm_feat)(a, a->maps[m], row, qt, dph, &sum);
        /* far = scale * num / den, num = qt^T S, den = qt . z + eps */
        MPL_REAL f = scale, dden = 0;
        if (a->far_norm) {
            MPL_REAL den = 0, gn = 0;
            for (int64_t p = 0; p < d; p++) den += qt[p] * z[p];
            den += eps;
            for (int64_t c = 0; c < d; c++) num[c] = 0;
            for (int64_t p = 0; p < d; p++)
                for (int64_t c = 0; c < d; c++) num[c] += qt[p] * S[p * d + c];
            for (int64_t c = 0; c < d; c++) gn += g[c] * num[c];
            f = scale / den;
            dden = -gn * scale / (den * den);
        }
        for (int64_t c = 0; c < d; c++) dn[c] = g[c] * f;
        dden_all[i] = dden;
        for (int64_t p = 0; p < d; p++) {
            const MPL_REAL *restrict Sr = S + p * d;
            MPL_REAL acc = dden * z[p];
            for (int64_t c = 0; c < d; c++) acc += Sr[c] * dn[c];
            dqt[p] = acc;
        }
        MPL_SUF(fmm_feat_backward)(a, qt, dph, sum, dqt, dqkv + (s * T + i) * W + h * d);
    }

    /* Pass 2, reverse: dS_i = sum over queries i' >= i of qt dn^T (the
     * gradient w.r.t. S_i); causal keys take it at their own row. */
    for (int64_t i = T - 1; i >= 0; i--) {
        if (mk && !mk[i]) continue;
        const MPL_REAL *qt = qt_all + i * d, *dn = dn_all + i * d;
        for (int64_t p = 0; p < d; p++) {
            const MPL_REAL qp = qt[p];
            MPL_REAL *restrict r = dS + p * d;
            for (int64_t c = 0; c < d; c++) r[c] += qp * dn[c];
            dz[p] += dden_all[i] * qp;
        }
        if (a->causal) {
            const MPL_REAL *row = qkv + (s * T + i) * W + h * d;
            MPL_SUF(fmm_far_key_grad)(a, m, row, dS, dqkv + (s * T + i) * W + h * d, ktmp);
        }
    }
    if (dSz_in)
        for (int64_t e = 0; e < d * d + d; e++) dSz_in[e] += dS[e];
}
