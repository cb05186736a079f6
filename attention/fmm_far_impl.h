/* Template body of the FMM far field (fmm.h): feature maps, the chunk's
 * statistics (S, z), the causal prefix scan / bidirectional total, and
 * their backward, for one (sequence, head, map). Included once per
 * precision by fmm_f32.c / fmm_f64.c (macros MPL_REAL, MPL_SUF, MPL_EXP,
 * MPL_TANH); no include guard on purpose. Separate from the near field:
 * a different algorithm (a d x d state carried along the rows).
 *
 * The causal scan is chunked linear attention on blocks of C = fmm_far_cb
 * rows: inside a block A = tril(Qt Kt^T) (inclusive), num = A V + Qt S,
 * den = A 1 + Qt z; between blocks S += Kt^T V, z += sum kt; all by GEMM,
 * O(n_tok * r * (C + d) * d). Blocks are visited in a fixed order and
 * each (s, h, map) is one thread's, so the result does not depend on the
 * thread count. */

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
    const MPL_REAL inv = (MPL_REAL)1 / sum;
#pragma omp simd
    for (int c = 0; c < d; c++) dx[c] += (dft[c] - dot) * inv * dph[c];
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

/* Rows per block of the chunked scan: 32 for d <= 32, else 64 (per row
 * the block costs O((C + d) d); smaller blocks run the GEMMs less well).
 * -DMPL_FMM_CB=n fixes it (e.g. 4 to run the tests across many blocks). */
static inline int64_t MPL_SUF(fmm_far_cb)(const mpl_attn_fmm_args *a)
{
#ifdef MPL_FMM_CB
    (void)a;
    return MPL_FMM_CB;
#else
    return a->head_dim <= 32 ? 32 : 64;
#endif
}

/* Rows ahead that fmm_feat_block and fmm_v_block prefetch. */
#define MPL_FMM_PF 8

/* Blocks of the chunked scan over n_tok rows. */
static inline int64_t MPL_SUF(fmm_far_nblk)(const mpl_attn_fmm_args *a)
{
    const int64_t C = MPL_SUF(fmm_far_cb)(a);
    return (a->n_tok + C - 1) / C;
}

/* Scratch one thread needs for the far field of one (s, h, map): the
 * block buffers, the running and carried (S, z), and (causal backward)
 * the state before every block and every row's key features. */
static int64_t MPL_SUF(fmm_far_scratch_elems)(const mpl_attn_fmm_args *a)
{
    const int64_t d = a->head_dim, C = MPL_SUF(fmm_far_cb)(a);
    const int64_t blk = 9 * C * d + 2 * C * C + 4 * C + 4 * (d * d + d) + 4 * d;
    return blk + MPL_SUF(fmm_far_nblk)(a) * (d * d + d) + a->n_tok * (2 * d + 1);
}

/* Row-major GEMM shorthand: C (m x n) = alpha op(A) op(B) + beta C. */
static inline void MPL_SUF(fmm_gemm)(int ta, int tb, int64_t m, int64_t n, int64_t k,
                                     const MPL_REAL *A, int64_t lda, const MPL_REAL *B,
                                     int64_t ldb, MPL_REAL beta, MPL_REAL *Cm, int64_t ldc)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                Cm[i * ldc + j] = beta == 0 ? 0 : beta * Cm[i * ldc + j];
        return;
    }
    MPL_GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
             (int)m, (int)n, (int)k, (MPL_REAL)1, A, (int)lda, B, (int)ldb, beta, Cm, (int)ldc);
}

/* Features of rows [i0, i0 + n) of sequence s, head h, map m, column
 * offset col (0: queries, HD: keys) into F (n x d), phi' into D, sums
 * into sm; padded rows get zeros (and sum 1). */
static void MPL_SUF(fmm_feat_block)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                    const MPL_REAL *qkv, int64_t i0, int64_t n, int64_t col,
                                    MPL_REAL *F, MPL_REAL *D, MPL_REAL *sm)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, W = 3 * HD, T = a->n_tok;
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    for (int64_t r = 0; r < n; r++) {
        const int64_t i = i0 + r;
        if (i + MPL_FMM_PF < T) { /* rows lie a page apart: prefetch by hand */
            const MPL_REAL *x = qkv + (s * T + i + MPL_FMM_PF) * W + h * d + col;
            for (int64_t c = 0; c < d; c += 64 / (int64_t)sizeof *x) __builtin_prefetch(x + c);
            __builtin_prefetch(x + d - 1);
        }
        if (mk && !mk[i]) {
            memset(F + r * d, 0, (size_t)d * sizeof *F);
            memset(D + r * d, 0, (size_t)d * sizeof *D);
            sm[r] = 1;
            continue;
        }
        MPL_SUF(fmm_feat)(a, a->maps[m], qkv + (s * T + i) * W + h * d + col, F + r * d,
                          D + r * d, &sm[r]);
    }
}

/* V rows [i0, i0 + n) into Vb (n x d), zeros for padded rows. */
static void MPL_SUF(fmm_v_block)(const mpl_attn_fmm_args *a, int64_t s, int64_t h,
                                 const MPL_REAL *qkv, int64_t i0, int64_t n, MPL_REAL *Vb)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, W = 3 * HD, T = a->n_tok;
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    for (int64_t r = 0; r < n; r++) {
        const int64_t i = i0 + r;
        if (i + MPL_FMM_PF < T) {
            const MPL_REAL *x = qkv + (s * T + i + MPL_FMM_PF) * W + h * d + 2 * HD;
            for (int64_t c = 0; c < d; c += 64 / (int64_t)sizeof *x) __builtin_prefetch(x + c);
            __builtin_prefetch(x + d - 1);
        }
        if (mk && !mk[i]) memset(Vb + r * d, 0, (size_t)d * sizeof *Vb);
        else memcpy(Vb + r * d, qkv + (s * T + i) * W + h * d + 2 * HD, (size_t)d * sizeof *Vb);
    }
}

/* Sz (d*d + d) += sums of one block: S += Kt^T Vb, z += sum of Kt rows. */
static inline void MPL_SUF(fmm_block_stats)(int64_t d, int64_t n, const MPL_REAL *Kt,
                                            const MPL_REAL *Vb, MPL_REAL *Sz)
{
    MPL_SUF(fmm_gemm)(1, 0, d, d, n, Kt, d, Vb, d, 1, Sz, d);
    MPL_REAL *z = Sz + d * d;
    for (int64_t r = 0; r < n; r++) {
        const MPL_REAL *k = Kt + r * d;
#pragma omp simd
        for (int64_t p = 0; p < d; p++) z[p] += k[p];
    }
}

/* Scratch of fmm_far_stats. */
static int64_t MPL_SUF(fmm_far_stats_scratch_elems)(const mpl_attn_fmm_args *a)
{
    const int64_t C = MPL_SUF(fmm_far_cb)(a);
    return 3 * C * (int64_t)a->head_dim + C;
}

/* Phase 1 for one (s, h, map): Sz (d*d + d) = the chunk's sums over its
 * unpadded rows, one GEMM per block of rows. tmp: fmm_far_stats_scratch_elems. */
static void MPL_SUF(fmm_far_stats)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                   const MPL_REAL *qkv, MPL_REAL *Sz, MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, T = a->n_tok, HD = a->n_head * d;
    const int64_t C = MPL_SUF(fmm_far_cb)(a);
    MPL_REAL *Kt = tmp, *Kd = Kt + C * d, *Vb = Kd + C * d, *ks = Vb + C * d;
    memset(Sz, 0, (size_t)(d * d + d) * sizeof *Sz);
    for (int64_t i0 = 0; i0 < T; i0 += C) {
        const int64_t n = T - i0 < C ? T - i0 : C;
        MPL_SUF(fmm_feat_block)(a, s, h, m, qkv, i0, n, HD, Kt, Kd, ks);
        MPL_SUF(fmm_v_block)(a, s, h, qkv, i0, n, Vb);
        MPL_SUF(fmm_block_stats)(d, n, Kt, Vb, Sz);
    }
}

/* Forward of one (s, h, map): far rows (n_tok, stride HD) overwritten.
 * Sz_in (d*d + d): causal exclusive prefix / bidirectional total, or NULL
 * for zeros. Causal sums include row i before query i (inclusive scan).
 * Chunked: per block of C rows, num = tril(Qt Kt^T) Vb + Qt S_prev,
 * den = rowsum(tril(Qt Kt^T)) + Qt z_prev + eps, then S += Kt^T Vb. */
static void MPL_SUF(fmm_far_forward)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                     const MPL_REAL *qkv, const MPL_REAL *Sz_in, MPL_REAL *far,
                                     MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, T = a->n_tok, C = MPL_SUF(fmm_far_cb)(a);
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    MPL_REAL *S = tmp, *z = S + d * d;
    MPL_REAL *Qt = z + d, *Qd = Qt + C * d, *Kt = Qd + C * d, *Kd = Kt + C * d, *Vb = Kd + C * d;
    MPL_REAL *A = Vb + C * d, *qs = A + C * C, *ks = qs + C;
    if (Sz_in) memcpy(S, Sz_in, (size_t)(d * d + d) * sizeof *S);
    else memset(S, 0, (size_t)(d * d + d) * sizeof *S);
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a), eps = (MPL_REAL)a->eps;
    for (int64_t i0 = 0; i0 < T; i0 += C) {
        const int64_t n = T - i0 < C ? T - i0 : C;
        MPL_REAL *F = far + i0 * HD;
        MPL_SUF(fmm_feat_block)(a, s, h, m, qkv, i0, n, 0, Qt, Qd, qs);
        if (a->causal) {
            MPL_SUF(fmm_feat_block)(a, s, h, m, qkv, i0, n, HD, Kt, Kd, ks);
            MPL_SUF(fmm_v_block)(a, s, h, qkv, i0, n, Vb);
            MPL_SUF(fmm_gemm)(0, 1, n, n, d, Qt, d, Kt, d, 0, A, C);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i + 1; j < n; j++) A[i * C + j] = 0;
            MPL_SUF(fmm_gemm)(0, 0, n, d, n, A, C, Vb, d, 0, F, HD);
            MPL_SUF(fmm_gemm)(0, 0, n, d, d, Qt, d, S, d, 1, F, HD);
        } else {
            MPL_SUF(fmm_gemm)(0, 0, n, d, d, Qt, d, S, d, 0, F, HD);
        }
        for (int64_t i = 0; i < n; i++) {
            MPL_REAL *Fi = F + i * HD;
            if (mk && !mk[i0 + i]) { /* padded: output 0 */
                for (int64_t c = 0; c < d; c++) Fi[c] = 0;
                continue;
            }
            MPL_REAL f = scale;
            if (a->far_norm) {
                MPL_REAL den = 0;
                const MPL_REAL *q = Qt + i * d;
                if (a->causal)
                    for (int64_t j = 0; j <= i; j++) den += A[i * C + j];
#pragma omp simd reduction(+ : den)
                for (int64_t p = 0; p < d; p++) den += q[p] * z[p];
                f = scale / (den + eps);
            }
#pragma omp simd
            for (int64_t c = 0; c < d; c++) Fi[c] *= f;
        }
        if (a->causal) MPL_SUF(fmm_block_stats)(d, n, Kt, Vb, S);
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
 * into dqkv; dSz_in (d*d + d) += gradient w.r.t. Sz_in.
 * Causal: pass 1 stores the state (S, z) before every block; pass 2 goes
 * over the blocks in reverse, carrying dS, dz (the gradient w.r.t. the
 * state after the block): with A = tril(Qt Kt^T), dA = tril(dN Vb^T +
 * dden 1^T), dQt = dA Kt + dN S_prev^T + dden z_prev^T, dKt = dA^T Qt +
 * Vb dS^T + 1 dz^T, dV = A^T dN + Kt dS; then dS += Qt^T dN,
 * dz += Qt^T dden. Bidirectional: the same without the in-block terms. */
static void MPL_SUF(fmm_far_backward)(const mpl_attn_fmm_args *a, int64_t s, int64_t h, int m,
                                      const MPL_REAL *qkv, const MPL_REAL *Sz_in,
                                      const MPL_REAL *gF, int64_t ldg, MPL_REAL *dqkv,
                                      MPL_REAL *dSz_in, MPL_REAL *tmp)
{
    const int64_t d = a->head_dim, HD = a->n_head * d, W = 3 * HD, T = a->n_tok;
    const int64_t C = MPL_SUF(fmm_far_cb)(a);
    const int64_t SZ = d * d + d, nb = MPL_SUF(fmm_far_nblk)(a);
    const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
    MPL_REAL *Sz = tmp, *dS = Sz + SZ, *dz = dS + d * d;
    MPL_REAL *Qt = dz + d, *Qd = Qt + C * d, *Kt = Qd + C * d, *Kd = Kt + C * d, *Vb = Kd + C * d;
    MPL_REAL *Nm = Vb + C * d, *dN = Nm + C * d, *dQ = dN + C * d, *dK = dQ + C * d;
    MPL_REAL *A = dK + C * d, *dA = A + C * C, *qs = dA + C * C, *ks = qs + C, *dd = ks + C;
    MPL_REAL *Sp = dd + C; /* nb states, causal */
    MPL_REAL *Kt_all = Sp + nb * SZ, *Kd_all = Kt_all + T * d, *ks_all = Kd_all + T * d;
    if (Sz_in) memcpy(Sz, Sz_in, (size_t)SZ * sizeof *Sz);
    else memset(Sz, 0, (size_t)SZ * sizeof *Sz);
    memset(dS, 0, (size_t)SZ * sizeof *dS);
    const MPL_REAL scale = MPL_SUF(fmm_far_scale)(a), eps = (MPL_REAL)a->eps;

    /* Pass 1 (causal): the state before every block. */
    if (a->causal)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t i0 = b * C, n = T - i0 < C ? T - i0 : C;
            memcpy(Sp + b * SZ, Sz, (size_t)SZ * sizeof *Sz);
            MPL_SUF(fmm_feat_block)(a, s, h, m, qkv, i0, n, HD, Kt_all + i0 * d,
                                    Kd_all + i0 * d, ks_all + i0);
            MPL_SUF(fmm_v_block)(a, s, h, qkv, i0, n, Vb);
            MPL_SUF(fmm_block_stats)(d, n, Kt_all + i0 * d, Vb, Sz);
        }

    for (int64_t bb = 0; bb < nb; bb++) {
        const int64_t b = a->causal ? nb - 1 - bb : bb;
        const int64_t i0 = b * C, n = T - i0 < C ? T - i0 : C;
        const MPL_REAL *S = a->causal ? Sp + b * SZ : Sz, *z = S + d * d;
        MPL_SUF(fmm_feat_block)(a, s, h, m, qkv, i0, n, 0, Qt, Qd, qs);
        if (a->causal) {
            Kt = Kt_all + i0 * d, Kd = Kd_all + i0 * d, ks = ks_all + i0;
            MPL_SUF(fmm_v_block)(a, s, h, qkv, i0, n, Vb);
            MPL_SUF(fmm_gemm)(0, 1, n, n, d, Qt, d, Kt, d, 0, A, C);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i + 1; j < n; j++) A[i * C + j] = 0;
        }
        /* num (ratio only), then dN, dden */
        if (a->far_norm) {
            if (a->causal) {
                MPL_SUF(fmm_gemm)(0, 0, n, d, n, A, C, Vb, d, 0, Nm, d);
                MPL_SUF(fmm_gemm)(0, 0, n, d, d, Qt, d, S, d, 1, Nm, d);
            } else {
                MPL_SUF(fmm_gemm)(0, 0, n, d, d, Qt, d, S, d, 0, Nm, d);
            }
        }
        for (int64_t i = 0; i < n; i++) {
            MPL_REAL *dn = dN + i * d;
            const MPL_REAL *g = gF + (i0 + i) * ldg;
            if (mk && !mk[i0 + i]) {
                for (int64_t c = 0; c < d; c++) dn[c] = 0;
                dd[i] = 0;
                continue;
            }
            MPL_REAL f = scale, dden = 0;
            if (a->far_norm) {
                MPL_REAL den = 0, gn = 0;
                const MPL_REAL *q = Qt + i * d, *nm = Nm + i * d;
                if (a->causal)
                    for (int64_t j = 0; j <= i; j++) den += A[i * C + j];
#pragma omp simd reduction(+ : den)
                for (int64_t p = 0; p < d; p++) den += q[p] * z[p];
                den += eps;
#pragma omp simd reduction(+ : gn)
                for (int64_t c = 0; c < d; c++) gn += g[c] * nm[c];
                f = scale / den;
                dden = -gn * scale / (den * den);
            }
#pragma omp simd
            for (int64_t c = 0; c < d; c++) dn[c] = g[c] * f;
            dd[i] = dden;
        }
        /* dQt = dN S^T + dden z^T (+ dA Kt) */
        MPL_SUF(fmm_gemm)(0, 1, n, d, d, dN, d, S, d, 0, dQ, d);
        if (a->causal) {
            MPL_SUF(fmm_gemm)(0, 1, n, n, d, dN, d, Vb, d, 0, dA, C);
            for (int64_t i = 0; i < n; i++) {
                for (int64_t j = 0; j <= i; j++) dA[i * C + j] += dd[i];
                for (int64_t j = i + 1; j < n; j++) dA[i * C + j] = 0;
            }
            MPL_SUF(fmm_gemm)(0, 0, n, d, n, dA, C, Kt, d, 1, dQ, d);
            /* dKt = dA^T Qt + Vb dS^T + dz; dV = A^T dN + Kt dS */
            MPL_SUF(fmm_gemm)(1, 0, n, d, n, dA, C, Qt, d, 0, dK, d);
            MPL_SUF(fmm_gemm)(0, 1, n, d, d, Vb, d, dS, d, 1, dK, d);
            MPL_SUF(fmm_gemm)(1, 0, n, d, n, A, C, dN, d, 0, Nm, d);
            MPL_SUF(fmm_gemm)(0, 0, n, d, d, Kt, d, dS, d, 1, Nm, d);
        }
        for (int64_t i = 0; i < n; i++) {
            if (mk && !mk[i0 + i]) continue;
            MPL_REAL *drow = dqkv + (s * T + i0 + i) * W + h * d, *dq = dQ + i * d;
            const MPL_REAL ddi = dd[i];
#pragma omp simd
            for (int64_t p = 0; p < d; p++) dq[p] += ddi * z[p];
            MPL_SUF(fmm_feat_backward)(a, Qt + i * d, Qd + i * d, qs[i], dq, drow);
            if (a->causal) {
                MPL_REAL *dk = dK + i * d, *dv = drow + 2 * HD;
                const MPL_REAL *nv = Nm + i * d;
#pragma omp simd
                for (int64_t p = 0; p < d; p++) dk[p] += dz[p];
                MPL_SUF(fmm_feat_backward)(a, Kt + i * d, Kd + i * d, ks[i], dk, drow + HD);
#pragma omp simd
                for (int64_t c = 0; c < d; c++) dv[c] += nv[c];
            }
        }
        /* carry: dS += Qt^T dN, dz += Qt^T dden */
        MPL_SUF(fmm_gemm)(1, 0, d, d, n, Qt, d, dN, d, 1, dS, d);
        for (int64_t i = 0; i < n; i++) {
            const MPL_REAL *q = Qt + i * d, ddi = dd[i];
#pragma omp simd
            for (int64_t p = 0; p < d; p++) dz[p] += ddi * q[p];
        }
    }
    if (dSz_in)
        for (int64_t e = 0; e < SZ; e++) dSz_in[e] += dS[e];
}
