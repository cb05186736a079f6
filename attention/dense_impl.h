/* Template body of dense attention (dense.h). dense_f32.c and dense_f64.c
 * define the precision macros and include this file once each, so the fp64
 * instance that the finite-difference tests check is the code that trains.
 * No include guard on purpose.
 *
 * Expected macros: MPL_REAL (float | double), MPL_SUF(name) (name##_f32 |
 * name##_f64), MPL_EXP, MPL_LOG (libm functions of that precision).
 *
 * Expected also: MPL_GEMM (cblas_sgemm | cblas_dgemm).
 *
 * Work is split per (sequence, head): one thread owns every output, every
 * saved log-sum-exp and every gradient row of its (s, h), and sums in a
 * fixed order, so results do not depend on the thread count. A thread takes
 * DENSE_QB query rows at a time: their logits against the visible keys are
 * one GEMM straight from the strided q/k/v columns (no gathers), the
 * softmax runs on that (QB, keys) block, and the products with V (forward)
 * or the gradient products (backward) are GEMMs again. Scratch is two
 * blocks of QB x n_tok per thread; nothing is L x L. */

static mpl_status MPL_SUF(dense_check)(const mpl_attn_dense_args *a)
{
    if (a->n_seq < 0 || a->n_tok < 0)
        return mpl_err(MPL_ERR_ARG, "dense attention: n_seq=%lld, n_tok=%lld must be >= 0",
                       (long long)a->n_seq, (long long)a->n_tok);
    if (a->n_head < 1 || a->head_dim < 1)
        return mpl_err(MPL_ERR_ARG, "dense attention: n_head=%d, head_dim=%d must be >= 1",
                       a->n_head, a->head_dim);
    if (!(a->rope_theta >= 0))
        return mpl_err(MPL_ERR_ARG, "dense attention: rope_theta=%g must be >= 0",
                       a->rope_theta);
    if (a->rope_theta > 0 && a->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG, "dense attention: RoPE needs an even head_dim, got %d",
                       a->head_dim);
    return MPL_OK;
}

#define DENSE_QB 64
/* Reals of per-thread scratch: the forward's logit block, the backward's
 * logit and gradient blocks. */
#define DENSE_FWD_PER(T) (DENSE_QB * (T))
#define DENSE_BWD_PER(T) (2 * DENSE_QB * (T))

/* Per-thread scratch of n_per elements for every thread a parallel region
 * may start; indexed by omp_get_thread_num(). */
static mpl_status MPL_SUF(dense_scratch)(int64_t n_per, MPL_REAL **out)
{
    const int64_t n_elems = (int64_t)omp_get_max_threads() * n_per;
    MPL_ALLOC(*out, n_elems);
    return MPL_OK;
}

/* Keys visible to query i: [0, i] causal, [0, T) otherwise, minus padding. */
static inline int MPL_SUF(dense_visible)(const uint8_t *mk, int causal, int64_t i, int64_t j)
{
    return (!causal || j <= i) && (!mk || mk[j]);
}

/* P(nb, jn) = softmax rows of the logits already in P, in place, for the
 * query rows i0.. of one (s, h); writes each row's log-sum-exp (-inf when
 * the row sees no key: output 0, skipped by backward). */
static void MPL_SUF(dense_softmax_rows)(MPL_REAL *P, int64_t nb, int64_t jn, int64_t i0,
                                        const uint8_t *mk, int causal, MPL_REAL *ls)
{
    for (int64_t r = 0; r < nb; r++) {
        const int64_t i = i0 + r;
        MPL_REAL *restrict p = P + r * jn;
        MPL_REAL m = -INFINITY;
        const int q_ok = !mk || mk[i];
        for (int64_t j = 0; j < jn; j++) {
            if (!q_ok || !MPL_SUF(dense_visible)(mk, causal, i, j)) p[j] = -INFINITY;
            m = p[j] > m ? p[j] : m;
        }
        if (m == -INFINITY) { /* padded query or every key padded: 0, no NaN */
            for (int64_t j = 0; j < jn; j++) p[j] = 0;
            ls[i] = -INFINITY;
            continue;
        }
        MPL_REAL sum = 0;
        for (int64_t j = 0; j < jn; j++) {
            p[j] = MPL_EXP(p[j] - m); /* exp(-inf) = 0 exactly */
            sum += p[j];
        }
        const MPL_REAL inv = (MPL_REAL)1 / sum;
        for (int64_t j = 0; j < jn; j++) p[j] *= inv;
        ls[i] = m + MPL_LOG(sum);
    }
}

mpl_status MPL_SUF(mpl_attn_dense_forward)(const mpl_attn_dense_args *a, const MPL_REAL *qkv,
                                           MPL_REAL *out, MPL_REAL *saved)
{
    MPL_CHECK(MPL_SUF(dense_check)(a));
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim;
    const int64_t HD = H * d, W = 3 * HD, n_rows = S * T;
    if (n_rows == 0) return MPL_OK;
    MPL_REAL *qr = saved, *kr = saved + n_rows * HD, *lse = saved + 2 * n_rows * HD;

#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; r++) {
        memcpy(qr + r * HD, qkv + r * W, (size_t)HD * sizeof *qr);
        memcpy(kr + r * HD, qkv + r * W + HD, (size_t)HD * sizeof *kr);
    }
    if (a->rope_theta > 0) {
        MPL_SUF(mpl_rope_apply)(qr, S, T, HD, 0, (int)H, (int)d, a->pos0, a->rope_theta, 1);
        MPL_SUF(mpl_rope_apply)(kr, S, T, HD, 0, (int)H, (int)d, a->pos0, a->rope_theta, 1);
    }

    const int64_t n_per = DENSE_FWD_PER(T);
    MPL_REAL *scratch = NULL;
    MPL_CHECK(MPL_SUF(dense_scratch)(n_per, &scratch));
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)d));
    const int causal = a->causal;

#pragma omp parallel
    {
        MPL_REAL *P = scratch + (int64_t)omp_get_thread_num() * n_per;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
            const MPL_REAL *K = kr + s * T * HD + h * d;
            const MPL_REAL *V = qkv + s * T * W + 2 * HD + h * d;
            MPL_REAL *ls = lse + (s * H + h) * T;
            for (int64_t i0 = 0; i0 < T; i0 += DENSE_QB) {
                const int64_t nb = T - i0 < DENSE_QB ? T - i0 : DENSE_QB;
                const int64_t jn = causal ? i0 + nb : T; /* keys any row sees */
                const MPL_REAL *Q = qr + (s * T + i0) * HD + h * d;
                MPL_REAL *O = out + (s * T + i0) * HD + h * d;
                MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)jn, (int)d,
                         scale, Q, (int)HD, K, (int)HD, 0, P, (int)jn);
                MPL_SUF(dense_softmax_rows)(P, nb, jn, i0, mk, causal, ls);
                MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)d, (int)jn,
                         1, P, (int)jn, V, (int)W, 0, O, (int)HD);
            }
        }
    }
    free(scratch);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_dense_backward)(const mpl_attn_dense_args *a, const MPL_REAL *qkv,
                                            const MPL_REAL *saved, const MPL_REAL *dout,
                                            MPL_REAL *dqkv)
{
    MPL_CHECK(MPL_SUF(dense_check)(a));
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim;
    const int64_t HD = H * d, W = 3 * HD, n_rows = S * T;
    if (n_rows == 0) return MPL_OK;
    const MPL_REAL *qr = saved, *kr = saved + n_rows * HD, *lse = saved + 2 * n_rows * HD;

    /* Gradients of the rotated q and k, (n_rows, HD) each: rotated back
     * (RoPE's transpose is its inverse) before they are added to dqkv. */
    MPL_REAL *dqk = NULL, *scratch = NULL;
    mpl_status st = MPL_OK;
    const int64_t n_per = DENSE_BWD_PER(T);
    MPL_CHECK_GOTO(MPL_SUF(dense_scratch)(n_per, &scratch), fail);
    dqk = calloc((size_t)(2 * n_rows * HD), sizeof *dqk);
    if (!dqk)
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory allocating %zu bytes",
                      (size_t)(2 * n_rows * HD) * sizeof *dqk);
    MPL_REAL *dq_all = dqk, *dk_all = dqk + n_rows * HD;
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)d));
    const int causal = a->causal;

#pragma omp parallel
    {
        MPL_REAL *P = scratch + (int64_t)omp_get_thread_num() * n_per;
        MPL_REAL *dP = P + DENSE_QB * T;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
            const MPL_REAL *K = kr + s * T * HD + h * d;
            const MPL_REAL *V = qkv + s * T * W + 2 * HD + h * d;
            MPL_REAL *dK = dk_all + s * T * HD + h * d;
            MPL_REAL *dV = dqkv + s * T * W + 2 * HD + h * d;
            const MPL_REAL *ls = lse + (s * H + h) * T;
            for (int64_t i0 = 0; i0 < T; i0 += DENSE_QB) {
                const int64_t nb = T - i0 < DENSE_QB ? T - i0 : DENSE_QB;
                const int64_t jn = causal ? i0 + nb : T;
                const MPL_REAL *Q = qr + (s * T + i0) * HD + h * d;
                const MPL_REAL *G = dout + (s * T + i0) * HD + h * d;
                /* P = exp(logits - lse), recomputed; dP = dO V^T */
                MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)jn, (int)d,
                         scale, Q, (int)HD, K, (int)HD, 0, P, (int)jn);
                MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)jn, (int)d,
                         1, G, (int)HD, V, (int)W, 0, dP, (int)jn);
                for (int64_t r = 0; r < nb; r++) {
                    const int64_t i = i0 + r;
                    MPL_REAL *restrict p = P + r * jn, *restrict dp = dP + r * jn;
                    const MPL_REAL li = ls[i];
                    if (li == -INFINITY) { /* output was 0: no gradient */
                        for (int64_t j = 0; j < jn; j++) p[j] = dp[j] = 0;
                        continue;
                    }
                    MPL_REAL D = 0; /* sum_j p_j dp_j = dO_i . O_i */
                    for (int64_t j = 0; j < jn; j++) {
                        p[j] = MPL_SUF(dense_visible)(mk, causal, i, j) ? MPL_EXP(p[j] - li) : 0;
                        D += p[j] * dp[j];
                    }
                    /* dlogit_j = p_j (dp_j - D); the 1/sqrt(d) goes to q and k */
                    for (int64_t j = 0; j < jn; j++) dp[j] = p[j] * (dp[j] - D) * scale;
                }
                /* dQ = dS K; dK += dS^T Q; dV += P^T dO */
                MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)d, (int)jn,
                         1, dP, (int)jn, K, (int)HD, 0, dq_all + (s * T + i0) * HD + h * d,
                         (int)HD);
                MPL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)jn, (int)d, (int)nb,
                         1, dP, (int)jn, Q, (int)HD, 1, dK, (int)HD);
                MPL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)jn, (int)d, (int)nb,
                         1, P, (int)jn, G, (int)HD, 1, dV, (int)W);
            }
        }
    }

    if (a->rope_theta > 0) {
        MPL_SUF(mpl_rope_apply)(dq_all, S, T, HD, 0, (int)H, (int)d, a->pos0, a->rope_theta, -1);
        MPL_SUF(mpl_rope_apply)(dk_all, S, T, HD, 0, (int)H, (int)d, a->pos0, a->rope_theta, -1);
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; r++) {
        MPL_REAL *restrict gq = dqkv + r * W, *restrict gk = dqkv + r * W + HD;
        const MPL_REAL *restrict sq = dq_all + r * HD, *restrict sk = dk_all + r * HD;
        for (int64_t c = 0; c < HD; c++) {
            gq[c] += sq[c];
            gk[c] += sk[c];
        }
    }
fail:
    free(dqk);
    free(scratch);
    return st;
}

int64_t MPL_SUF(mpl_attn_dense_work_bytes)(const mpl_attn_dense_args *a)
{
    /* the backward's peak: its scratch and the rotated q, k gradients;
     * the forward allocates half that scratch only */
    const int64_t HD = (int64_t)a->n_head * a->head_dim, n_rows = a->n_seq * a->n_tok;
    const int64_t n = (int64_t)omp_get_max_threads() * DENSE_BWD_PER(a->n_tok) + 2 * n_rows * HD;
    return n * (int64_t)sizeof(MPL_REAL);
}
