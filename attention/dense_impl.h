/* Template body of dense attention (dense.h). dense_f32.c and dense_f64.c
 * define the precision macros and include this file once each, so the fp64
 * instance that the finite-difference tests check is the code that trains.
 * No include guard on purpose.
 *
 * Expected macros: MPL_REAL (float | double), MPL_SUF(name) (name##_f32 |
 * name##_f64), MPL_EXP, MPL_LOG (libm functions of that precision).
 *
 * Work is split per (sequence, head): one thread owns every output, every
 * saved log-sum-exp and every gradient row of its (s, h), and sums in a
 * fixed order, so results do not depend on the thread count. Each thread
 * gathers its head's K and V into contiguous scratch (O(n_tok * d)) and
 * handles one query row at a time with a row of n_tok logits. */

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

/* Per-thread scratch of n_per elements for every thread a parallel region
 * may start; indexed by omp_get_thread_num(). */
static mpl_status MPL_SUF(dense_scratch)(int64_t n_per, MPL_REAL **out)
{
    const int64_t n_elems = (int64_t)omp_get_max_threads() * n_per;
    MPL_ALLOC(*out, n_elems);
    return MPL_OK;
}

static inline MPL_REAL MPL_SUF(dense_dot)(const MPL_REAL *restrict a,
                                          const MPL_REAL *restrict b, int64_t d)
{
    MPL_REAL s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < d; c++) s += a[c] * b[c];
    return s;
}

/* Copy head h of sequence s, columns [col, col + d) of rows with stride
 * `stride`, into a contiguous (T, d) block. */
static void MPL_SUF(dense_gather)(MPL_REAL *restrict dst, const MPL_REAL *restrict src,
                                  int64_t T, int64_t stride, int64_t d)
{
    for (int64_t j = 0; j < T; j++) memcpy(dst + j * d, src + j * stride, (size_t)d * sizeof *dst);
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

    const int64_t n_per = 2 * T * d + T;
    MPL_REAL *scratch = NULL;
    MPL_CHECK(MPL_SUF(dense_scratch)(n_per, &scratch));
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)d));
    const int causal = a->causal;

#pragma omp parallel
    {
        MPL_REAL *K = scratch + (int64_t)omp_get_thread_num() * n_per;
        MPL_REAL *V = K + T * d, *p = V + T * d;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
            MPL_SUF(dense_gather)(K, kr + s * T * HD + h * d, T, HD, d);
            MPL_SUF(dense_gather)(V, qkv + s * T * W + 2 * HD + h * d, T, W, d);
            MPL_REAL *ls = lse + (s * H + h) * T;
            for (int64_t i = 0; i < T; i++) {
                MPL_REAL *restrict o = out + (s * T + i) * HD + h * d;
                const MPL_REAL *q = qr + (s * T + i) * HD + h * d;
                for (int64_t c = 0; c < d; c++) o[c] = 0;
                ls[i] = -INFINITY; /* "no visible key": backward skips the row */
                if (mk && !mk[i]) continue;
                const int64_t jn = causal ? i + 1 : T;
                MPL_REAL m = -INFINITY;
                for (int64_t j = 0; j < jn; j++) {
                    if (mk && !mk[j]) {
                        p[j] = -INFINITY; /* exp gives exactly 0 below */
                        continue;
                    }
                    p[j] = MPL_SUF(dense_dot)(q, K + j * d, d) * scale;
                    m = p[j] > m ? p[j] : m;
                }
                if (m == -INFINITY) continue; /* every key padded: output 0, no NaN */
                MPL_REAL sum = 0;
                for (int64_t j = 0; j < jn; j++) {
                    p[j] = MPL_EXP(p[j] - m);
                    sum += p[j];
                }
                for (int64_t j = 0; j < jn; j++) {
                    const MPL_REAL pj = p[j];
                    const MPL_REAL *restrict vj = V + j * d;
                    for (int64_t c = 0; c < d; c++) o[c] += pj * vj[c];
                }
                const MPL_REAL inv = (MPL_REAL)1 / sum;
                for (int64_t c = 0; c < d; c++) o[c] *= inv;
                ls[i] = m + MPL_LOG(sum);
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
    const int64_t n_per = 4 * T * d + 2 * T;
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
        MPL_REAL *K = scratch + (int64_t)omp_get_thread_num() * n_per;
        MPL_REAL *V = K + T * d, *dK = V + T * d, *dV = dK + T * d;
        MPL_REAL *p = dV + T * d, *dp = p + T;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
            MPL_SUF(dense_gather)(K, kr + s * T * HD + h * d, T, HD, d);
            MPL_SUF(dense_gather)(V, qkv + s * T * W + 2 * HD + h * d, T, W, d);
            memset(dK, 0, (size_t)(2 * T * d) * sizeof *dK); /* dK and dV */
            const MPL_REAL *ls = lse + (s * H + h) * T;
            for (int64_t i = 0; i < T; i++) {
                if ((mk && !mk[i]) || ls[i] == -INFINITY) continue; /* output was 0 */
                const MPL_REAL *restrict q = qr + (s * T + i) * HD + h * d;
                const MPL_REAL *restrict g = dout + (s * T + i) * HD + h * d;
                MPL_REAL *restrict dq = dq_all + (s * T + i) * HD + h * d;
                const int64_t jn = causal ? i + 1 : T;
                const MPL_REAL li = ls[i];
                /* p_j = exp(s_ij - lse_i); dp_j = g . v_j; D = sum p dp = g . o_i */
                MPL_REAL D = 0;
                for (int64_t j = 0; j < jn; j++) {
                    if (mk && !mk[j]) {
                        p[j] = 0;
                        dp[j] = 0;
                        continue;
                    }
                    p[j] = MPL_EXP(MPL_SUF(dense_dot)(q, K + j * d, d) * scale - li);
                    dp[j] = MPL_SUF(dense_dot)(g, V + j * d, d);
                    D += p[j] * dp[j];
                    MPL_REAL *restrict dvj = dV + j * d;
                    for (int64_t c = 0; c < d; c++) dvj[c] += p[j] * g[c];
                }
                /* dlogit_j = p_j (dp_j - D); the 1/sqrt(d) goes to q and k */
                for (int64_t j = 0; j < jn; j++) {
                    const MPL_REAL ds = p[j] * (dp[j] - D) * scale;
                    const MPL_REAL *restrict kj = K + j * d;
                    MPL_REAL *restrict dkj = dK + j * d;
                    for (int64_t c = 0; c < d; c++) {
                        dq[c] += ds * kj[c];
                        dkj[c] += ds * q[c];
                    }
                }
            }
            for (int64_t j = 0; j < T; j++) {
                MPL_REAL *restrict dst_k = dk_all + (s * T + j) * HD + h * d;
                MPL_REAL *restrict dst_v = dqkv + (s * T + j) * W + 2 * HD + h * d;
                for (int64_t c = 0; c < d; c++) {
                    dst_k[c] = dK[j * d + c];
                    dst_v[c] += dV[j * d + c];
                }
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
