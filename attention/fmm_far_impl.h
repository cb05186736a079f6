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

/* ft (d) = features of x (d), normalised by their sum when feature_norm;
 * dph (d) = phi'(x); *sum = the divisor (1 without normalisation).
 * elu(x)+1 is computed as x+1 for x > 0 and exp(x) otherwise:
 * (exp(x)-1)+1 would underflow to 0. One branch-free loop per map so the
 * compiler vectorises it (MPL_EXP is plain arithmetic in fp32). */
static inline void MPL_SUF(fmm_feat)(const mpl_attn_fmm_args *a, mpl_fmm_map m,
                                     const MPL_REAL *restrict x, MPL_REAL *restrict ft,
                                     MPL_REAL *restrict dph, MPL_REAL *sum)
{
    const int d = a->head_dim;
    MPL_REAL s = 0;
    if (m == MPL_FMM_MAP_ELU) {
#pragma omp simd
        for (int c = 0; c < d; c++) {
            const MPL_REAL e = MPL_EXP(x[c] < 0 ? x[c] : 0);
            ft[c] = x[c] > 0 ? x[c] + 1 : e;
            dph[c] = x[c] > 0 ? 1 : e;
        }
    } else if (m == MPL_FMM_MAP_ELU_FLIP) { /* elu(-x) + 1 */
#pragma omp simd
        for (int c = 0; c < d; c++) {
            const MPL_REAL e = MPL_EXP(x[c] > 0 ? -x[c] : 0);
            ft[c] = x[c] < 0 ? 1 - x[c] : e;
            dph[c] = x[c] < 0 ? -1 : -e;
        }
    } else {
#pragma omp simd
        for (int c = 0; c < d; c++) {
            const MPL_REAL t = MPL_TANH(x[c]);
            ft[c] = t + 1;
            dph[c] = 1 - t * t;
        }
    }
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < d; c++) s += ft[c];
    if (a->feature_norm) {
        const MPL_REAL inv = (MPL_REAL)1 / s;
#pragma omp simd
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
    if (a->feature_norm) {
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < d; c++) dot += dft[c] * ft[c];
    }
#pragma omp simd
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
#pragma omp simd
        for (int c = 0; c < d; c++) row[c] += kp * v[c];
        z[p] += kp;
    }
}

/* y (d) = x^T S for S (d x d), summed over p in order. Four rows of S per
 * sweep over y: accumulating row by row would chain every p through a
 * store and a reload of y; the sum order is the same either way. */
static inline void MPL_SUF(fmm_vecmat)(int64_t d, const MPL_REAL *restrict x,
                                       const MPL_REAL *restrict S, MPL_REAL *restrict y)
{
    for (int64_t c = 0; c < d; c++) y[c] = 0;
    int64_t p = 0;
    for (; p + 4 <= d; p += 4) {
        const MPL_REAL x0 = x[p], x1 = x[p + 1], x2 = x[p + 2], x3 = x[p + 3];
        const MPL_REAL *restrict S0 = S + p * d, *restrict S1 = S0 + d, *restrict S2 = S1 + d,
                       *restrict S3 = S2 + d;
#pragma omp simd
        for (int64_t c = 0; c < d; c++)
            y[c] = (((y[c] + x0 * S0[c]) + x1 * S1[c]) + x2 * S2[c]) + x3 * S3[c];
    }
    for (; p < d; p++) {
        const MPL_REAL xp = x[p], *restrict Sp = S + p * d;
#pragma omp simd
        for (int64_t c = 0; c < d; c++) y[c] += xp * Sp[c];
    }
}

/* St (d x d) += (kt v^T)^T = v kt^T: the transposed copy of S that the
 * backward keeps, so that S x is a vecmat (vectorised across the output)
 * instead of d horizontal sums. */
static inline void MPL_SUF(fmm_rank1_t)(int64_t d, MPL_REAL *restrict St,
                                        const MPL_REAL *restrict kt, const MPL_REAL *restrict v)
{
    for (int64_t c = 0; c < d; c++) {
        const MPL_REAL vc = v[c];
        MPL_REAL *restrict row = St + c * d;
#pragma omp simd
        for (int64_t p = 0; p < d; p++) row[p] += vc * kt[p];
    }
}

static void MPL_SUF(fmm_transpose)(int64_t d, const MPL_REAL *restrict S, MPL_REAL *restrict St)
{
    for (int64_t p = 0; p < d; p++)
        for (int64_t c = 0; c < d; c++) St[c * d + p] = S[p * d + c];
}

/* Scratch one thread needs for the far field of one (s, h, map). */
static int64_t MPL_SUF(fmm_far_scratch_elems)(const mpl_attn_fmm_args *a)
{
    const int64_t d = a->head_dim;
    return a->n_tok * (4 * d + 3) + 4 * (d * d + d) + 8 * d;
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
        MPL_REAL f = scale;
        if (a->far_norm) {
            MPL_REAL den = 0;
#pragma omp simd reduction(+ : den)
            for (int64_t p = 0; p < d; p++) den += ft[p] * z[p];
            f = scale / (den + eps);
        }
        MPL_SUF(fmm_vecmat)(d, ft, S, F);
        for (int64_t c = 0; c < d; c++) F[c] *= f;
    }
}

/* Gradient through (S, z) for one unpadded key row, given dSz (d*d + d),
 * the gradient w.r.t. the sums that row is part of, and dSt = dS^T:
 * dkt = dS v + dz and dv = dS^T kt, into drow (a row of dqkv). kt, dph,
 * sum: the row's key features as fmm_feat gives them. tmp: 2d. Shared by
 * the causal in-chunk suffix sums and by phase 3. */
static inline void MPL_SUF(fmm_far_key_grad)(const mpl_attn_fmm_args *a, const MPL_REAL *row,
                                             const MPL_REAL *kt, const MPL_REAL *dph,
                                             MPL_REAL sum, const MPL_REAL *dSz,
                                             const MPL_REAL *dSt, MPL_REAL *drow, MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d;
    const MPL_REAL *dz = dSz + d * d;
    MPL_REAL *dkt = tmp, *y = tmp + d, *dv = drow + 2 * HD;
    MPL_SUF(fmm_vecmat)(d, row + 2 * HD, dSt, dkt); /* (dS v)[p] */
    for (int64_t p = 0; p < d; p++) dkt[p] += dz[p];
    MPL_SUF(fmm_vecmat)(d, kt, dSz, y); /* (dS^T kt)[c] */
    for (int64_t c = 0; c < d; c++) dv[c] += y[c];
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
    /* per row: qt, dn (gradient of num), dden; causal also the key
     * features kt, phi'(k) and their sum, kept from pass 1 for pass 2 */
    MPL_REAL *qt_all = tmp, *dn_all = qt_all + T * d, *dden_all = dn_all + T * d;
    MPL_REAL *kt_all = dden_all + T, *kd_all = kt_all + T * d, *ks_all = kd_all + T * d;
    MPL_REAL *S = ks_all + T, *z = S + d * d, *dS = z + d, *dz = dS + d * d;
    MPL_REAL *St = dz + d, *dSt = St + d * d;
    MPL_REAL *dph = dSt + d * d, *dqt = dph + d, *num = dqt + d, *ktmp = num + d;
    MPL_REAL sum;
    if (Sz_in) memcpy(S, Sz_in, (size_t)(d * d + d) * sizeof *S);
    else memset(S, 0, (size_t)(d * d + d) * sizeof *S);
    MPL_SUF(fmm_transpose)(d, S, St);
    memset(dS, 0, (size_t)(d * d + d) * sizeof *dS);
    memset(dSt, 0, (size_t)(d * d) * sizeof *dSt);
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a), eps = (MPL_REAL)a->eps;

    /* Pass 1, in row order: S_i, z_i as in the forward; dqt_i. */
    for (int64_t i = 0; i < T; i++) {
        if (mk && !mk[i]) continue;
        const MPL_REAL *row = qkv + (s * T + i) * W + h * d;
        if (a->causal) {
            MPL_REAL *kt = kt_all + i * d;
            MPL_SUF(fmm_feat)(a, a->maps[m], row + HD, kt, kd_all + i * d, &ks_all[i]);
            MPL_SUF(fmm_rank1)((int)d, S, z, kt, row + 2 * HD);
            MPL_SUF(fmm_rank1_t)(d, St, kt, row + 2 * HD);
        }
        MPL_REAL *qt = qt_all + i * d, *dn = dn_all + i * d;
        const MPL_REAL *g = gF + i * ldg;
        MPL_SUF(fmm_feat)(a, a->maps[m], row, qt, dph, &sum);
        /* far = scale * num / den, num = qt^T S, den = qt . z + eps */
        MPL_REAL f = scale, dden = 0;
        if (a->far_norm) {
            MPL_REAL den = 0, gn = 0;
#pragma omp simd reduction(+ : den)
            for (int64_t p = 0; p < d; p++) den += qt[p] * z[p];
            den += eps;
            MPL_SUF(fmm_vecmat)(d, qt, S, num); /* as in the forward */
#pragma omp simd reduction(+ : gn)
            for (int64_t c = 0; c < d; c++) gn += g[c] * num[c];
            f = scale / den;
            dden = -gn * scale / (den * den);
        }
        for (int64_t c = 0; c < d; c++) dn[c] = g[c] * f;
        dden_all[i] = dden;
        MPL_SUF(fmm_vecmat)(d, dn, St, dqt); /* (S dn)[p] */
        for (int64_t p = 0; p < d; p++) dqt[p] += dden * z[p];
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
#pragma omp simd
            for (int64_t c = 0; c < d; c++) r[c] += qp * dn[c];
            dz[p] += dden_all[i] * qp;
        }
        MPL_SUF(fmm_rank1_t)(d, dSt, qt, dn);
        if (a->causal)
            MPL_SUF(fmm_far_key_grad)(a, qkv + (s * T + i) * W + h * d, kt_all + i * d,
                                      kd_all + i * d, ks_all[i], dS, dSt,
                                      dqkv + (s * T + i) * W + h * d, ktmp);
    }
    if (dSz_in)
        for (int64_t e = 0; e < d * d + d; e++) dSz_in[e] += dS[e];
}
