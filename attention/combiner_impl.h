/* Template body shared by both Combiner kinds (combiner.h): the summary of
 * one span (forward and backward) and the one-query softmax over a list of
 * slots (forward and backward). combiner_f32.c / combiner_f64.c define the
 * precision macros and include this file, then combiner_fixed_impl.h,
 * combiner_logsparse_impl.h, combiner_logsparse_pieces_impl.h and
 * combiner_stream_impl.h, so the fp64
 * instance the finite-difference tests check is the code that trains.
 * No include guard on purpose; every helper is static (one TU each).
 *
 * Expected macros: MPL_REAL, MPL_SUF(name), MPL_EXP, MPL_LOG.
 *
 * Work is split per (sequence, head) by the callers: one thread owns every
 * output, log-sum-exp and gradient column of its (s, h) and sums in a fixed
 * order, so results do not depend on the thread count. */

static inline MPL_REAL cb_dot(const MPL_REAL *restrict a, const MPL_REAL *restrict b,
                              int64_t d)
{
    MPL_REAL acc = 0;
    for (int64_t c = 0; c < d; c++) acc += a[c] * b[c];
    return acc;
}

static inline int cb_real(const uint8_t *mk, int64_t t) { return !mk || mk[t]; }

/* Summary of the n rows t (q, k, v rows at Q + t*ld, K + t*ld, V + t*ld;
 * mk[t] = 0 skips a row): qh = max q, kh = max k (elementwise, real rows
 * only), vh = sum_t softmax_t(qh.k_t / sqrt d) v_t. Returns 0 (and zeros)
 * when no row is real. w: n scratch. */
static int cb_span_fwd(int64_t n, int64_t d, int64_t ld, const MPL_REAL *Q, const MPL_REAL *K,
                       const MPL_REAL *V, const uint8_t *mk, MPL_REAL scale,
                       MPL_REAL *restrict qh, MPL_REAL *restrict kh, MPL_REAL *restrict vh,
                       MPL_REAL *restrict w)
{
    int any = 0;
    for (int64_t c = 0; c < d; c++) qh[c] = kh[c] = vh[c] = 0;
    for (int64_t t = 0; t < n; t++) {
        if (!cb_real(mk, t)) continue;
        const MPL_REAL *q = Q + t * ld, *k = K + t * ld;
        if (!any) {
            for (int64_t c = 0; c < d; c++) qh[c] = q[c], kh[c] = k[c];
        } else {
            for (int64_t c = 0; c < d; c++) {
                qh[c] = q[c] > qh[c] ? q[c] : qh[c];
                kh[c] = k[c] > kh[c] ? k[c] : kh[c];
            }
        }
        any = 1;
    }
    if (!any) return 0;
    MPL_REAL m = -INFINITY;
    for (int64_t t = 0; t < n; t++) {
        w[t] = cb_real(mk, t) ? scale * cb_dot(qh, K + t * ld, d) : -INFINITY;
        m = w[t] > m ? w[t] : m;
    }
    MPL_REAL sum = 0;
    for (int64_t t = 0; t < n; t++) {
        w[t] = cb_real(mk, t) ? MPL_EXP(w[t] - m) : 0;
        sum += w[t];
    }
    const MPL_REAL inv = (MPL_REAL)1 / sum;
    for (int64_t t = 0; t < n; t++) {
        if (w[t] == 0) continue;
        const MPL_REAL a = w[t] * inv;
        const MPL_REAL *v = V + t * ld;
        for (int64_t c = 0; c < d; c++) vh[c] += a * v[c];
    }
    return 1;
}

/* Backward of cb_span_fwd: from dkh, dvh (d each) ACCUMULATE into the row
 * gradients dQ, dK, dV (same row stride ld as the inputs). The max-pool
 * gradient goes to the argmax row(s), split equally on ties. w: n scratch,
 * tmp: 5d scratch. A span with no real row gets nothing. */
static void cb_span_bwd(int64_t n, int64_t d, int64_t ld, const MPL_REAL *Q, const MPL_REAL *K,
                        const MPL_REAL *V, const uint8_t *mk, MPL_REAL scale,
                        const MPL_REAL *dkh, const MPL_REAL *dvh, MPL_REAL *dQ, MPL_REAL *dK,
                        MPL_REAL *dV, MPL_REAL *w, MPL_REAL *tmp)
{
    MPL_REAL *qh = tmp, *kh = tmp + d, *dqh = tmp + 2 * d;
    MPL_REAL *vh_unused = dqh; /* overwritten below before dqh is used */
    if (!cb_span_fwd(n, d, ld, Q, K, V, mk, scale, qh, kh, vh_unused, w)) return;
    /* w = unnormalised weights; normalise to a_t */
    MPL_REAL sum = 0;
    for (int64_t t = 0; t < n; t++) sum += w[t];
    const MPL_REAL inv = (MPL_REAL)1 / sum;
    MPL_REAL A = 0; /* sum_t a_t da_t, da_t = dvh . v_t */
    for (int64_t t = 0; t < n; t++) {
        if (w[t] == 0) continue;
        w[t] *= inv;
        A += w[t] * cb_dot(dvh, V + t * ld, d);
    }
    for (int64_t c = 0; c < d; c++) dqh[c] = 0;
    for (int64_t t = 0; t < n; t++) {
        if (w[t] == 0) continue;
        const MPL_REAL a = w[t];
        const MPL_REAL *v = V + t * ld, *k = K + t * ld;
        const MPL_REAL dz = a * (cb_dot(dvh, v, d) - A) * scale;
        MPL_REAL *gk = dK + t * ld, *gv = dV + t * ld;
        for (int64_t c = 0; c < d; c++) {
            gv[c] += a * dvh[c];
            gk[c] += dz * qh[c];
            dqh[c] += dz * k[c];
        }
    }
    /* max-pool: count the ties of each channel (row-major passes: the rows
     * are strided, a channel-major loop would miss the cache), then share */
    MPL_REAL *cq = tmp + 3 * d, *ck = tmp + 4 * d;
    for (int64_t c = 0; c < d; c++) cq[c] = ck[c] = 0;
    for (int64_t t = 0; t < n; t++) {
        if (!cb_real(mk, t)) continue;
        const MPL_REAL *q = Q + t * ld, *k = K + t * ld;
        for (int64_t c = 0; c < d; c++) {
            cq[c] += q[c] == qh[c];
            ck[c] += k[c] == kh[c];
        }
    }
    for (int64_t c = 0; c < d; c++) cq[c] = dqh[c] / cq[c], ck[c] = dkh[c] / ck[c];
    for (int64_t t = 0; t < n; t++) {
        if (!cb_real(mk, t)) continue;
        const MPL_REAL *q = Q + t * ld, *k = K + t * ld;
        MPL_REAL *gq = dQ + t * ld, *gk = dK + t * ld;
        for (int64_t c = 0; c < d; c++) {
            gq[c] += q[c] == qh[c] ? cq[c] : 0;
            gk[c] += k[c] == kh[c] ? ck[c] : 0;
        }
    }
}

/* The slots of one query: nj direct rows (keys Kd + j*ldk, values
 * Vd + j*ldv, mk[j] = 0 skips; logit scale*qr.k) and n_m summaries
 * (KH + idx[m]*ldh, VH + idx[m]*ldh; logit scale*qu.kh; the caller lists
 * only present ones). */
typedef struct cb_slots {
    int64_t d, nj, ldk, ldv, n_m, ldh;
    MPL_REAL scale;
    const MPL_REAL *qr, *qu, *Kd, *Vd, *KH, *VH;
    const uint8_t *mk;
    const int64_t *idx;
} cb_slots;

/* One softmax over all slots into o (d); returns the log-sum-exp (-inf
 * and o = 0 when no slot is visible). lg: nj + n_m scratch. */
static MPL_REAL cb_query_fwd(const cb_slots *q, MPL_REAL *restrict lg, MPL_REAL *restrict o)
{
    const int64_t d = q->d, nj = q->nj, n = nj + q->n_m;
    MPL_REAL m = -INFINITY;
    for (int64_t j = 0; j < nj; j++) {
        lg[j] = cb_real(q->mk, j) ? q->scale * cb_dot(q->qr, q->Kd + j * q->ldk, d) : -INFINITY;
        m = lg[j] > m ? lg[j] : m;
    }
    for (int64_t r = 0; r < q->n_m; r++) {
        lg[nj + r] = q->scale * cb_dot(q->qu, q->KH + q->idx[r] * q->ldh, d);
        m = lg[nj + r] > m ? lg[nj + r] : m;
    }
    for (int64_t c = 0; c < d; c++) o[c] = 0;
    if (m == -INFINITY) return -INFINITY;
    MPL_REAL sum = 0;
    for (int64_t j = 0; j < n; j++) {
        lg[j] = lg[j] == -INFINITY ? 0 : MPL_EXP(lg[j] - m);
        sum += lg[j];
    }
    const MPL_REAL inv = (MPL_REAL)1 / sum;
    for (int64_t j = 0; j < n; j++) {
        if (lg[j] == 0) continue;
        const MPL_REAL p = lg[j] * inv;
        const MPL_REAL *v = j < nj ? q->Vd + j * q->ldv : q->VH + q->idx[j - nj] * q->ldh;
        for (int64_t c = 0; c < d; c++) o[c] += p * v[c];
    }
    return m + MPL_LOG(sum);
}

/* Merge the summary slots of q (q->nj = 0) into a query whose direct
 * slots alone gave the normalised output o (d) and log-sum-exp lse_d:
 * afterwards o and the returned log-sum-exp are those of one softmax over
 * both lists (cb_query_fwd), up to rounding. lg: n_m scratch. */
static MPL_REAL cb_query_merge(const cb_slots *q, MPL_REAL lse_d, MPL_REAL *restrict lg,
                               MPL_REAL *restrict o)
{
    const int64_t d = q->d, n = q->n_m;
    if (n == 0) return lse_d;
    MPL_REAL m = lse_d;
    for (int64_t r = 0; r < n; r++) {
        lg[r] = q->scale * cb_dot(q->qu, q->KH + q->idx[r] * q->ldh, d);
        m = lg[r] > m ? lg[r] : m;
    }
    if (m == -INFINITY) return -INFINITY;
    const MPL_REAL wd = lse_d == -INFINITY ? 0 : MPL_EXP(lse_d - m);
    MPL_REAL sum = wd;
    for (int64_t r = 0; r < n; r++) {
        lg[r] = lg[r] == -INFINITY ? 0 : MPL_EXP(lg[r] - m);
        sum += lg[r];
    }
    const MPL_REAL inv = (MPL_REAL)1 / sum, a = wd * inv;
    for (int64_t c = 0; c < d; c++) o[c] *= a;
    for (int64_t r = 0; r < n; r++) {
        if (lg[r] == 0) continue;
        const MPL_REAL p = lg[r] * inv;
        const MPL_REAL *v = q->VH + q->idx[r] * q->ldh;
        for (int64_t c = 0; c < d; c++) o[c] += p * v[c];
    }
    return m + MPL_LOG(sum);
}

/* Backward of cb_query_fwd from its log-sum-exp and go = dL/do (d).
 * ACCUMULATES: dqr, dqu (d; may alias), dKd/dVd (strides ldk/ldv),
 * dKH/dVH (stride ldh, at idx). lg: 2*(nj + n_m) scratch. */
static void cb_query_bwd(const cb_slots *q, MPL_REAL lse, const MPL_REAL *go, MPL_REAL *dqr,
                         MPL_REAL *dqu, MPL_REAL *dKd, MPL_REAL *dVd, MPL_REAL *dKH,
                         MPL_REAL *dVH, MPL_REAL *restrict lg)
{
    if (lse == -INFINITY) return; /* output was 0 */
    const int64_t d = q->d, nj = q->nj, n = nj + q->n_m;
    MPL_REAL D = 0; /* sum_j p_j dp_j = go . o */
    MPL_REAL *dp = lg + n;
    for (int64_t j = 0; j < n; j++) {
        const MPL_REAL *k, *v, *qq;
        if (j < nj) {
            if (!cb_real(q->mk, j)) { lg[j] = dp[j] = 0; continue; }
            k = q->Kd + j * q->ldk, v = q->Vd + j * q->ldv, qq = q->qr;
        } else {
            k = q->KH + q->idx[j - nj] * q->ldh, v = q->VH + q->idx[j - nj] * q->ldh, qq = q->qu;
        }
        lg[j] = MPL_EXP(q->scale * cb_dot(qq, k, d) - lse);
        dp[j] = cb_dot(go, v, d);
        D += lg[j] * dp[j];
    }
    for (int64_t j = 0; j < n; j++) {
        const MPL_REAL p = lg[j];
        if (p == 0) continue;
        const MPL_REAL ds = p * (dp[j] - D) * q->scale;
        if (j < nj) {
            const MPL_REAL *k = q->Kd + j * q->ldk;
            MPL_REAL *gk = dKd + j * q->ldk, *gv = dVd + j * q->ldv;
            for (int64_t c = 0; c < d; c++) {
                dqr[c] += ds * k[c];
                gk[c] += ds * q->qr[c];
                gv[c] += p * go[c];
            }
        } else {
            const int64_t m = q->idx[j - nj];
            const MPL_REAL *k = q->KH + m * q->ldh;
            MPL_REAL *gk = dKH + m * q->ldh, *gv = dVH + m * q->ldh;
            for (int64_t c = 0; c < d; c++) {
                dqu[c] += ds * k[c];
                gk[c] += ds * q->qu[c];
                gv[c] += p * go[c];
            }
        }
    }
}

/* Shared validation of the args of every entry point. */
static mpl_status cb_check(const mpl_attn_combiner_args *a, int need_segment)
{
    if (a->n_seq < 0 || a->n_tok < 0 || a->pos0 < 0)
        return mpl_err(MPL_ERR_ARG, "combiner: n_seq=%lld, n_tok=%lld, pos0=%lld must be >= 0",
                       (long long)a->n_seq, (long long)a->n_tok, (long long)a->pos0);
    if (a->seq_len < a->pos0 + a->n_tok)
        return mpl_err(MPL_ERR_ARG, "combiner: seq_len=%lld is shorter than pos0+n_tok=%lld",
                       (long long)a->seq_len, (long long)(a->pos0 + a->n_tok));
    if (a->n_head < 1 || a->head_dim < 1)
        return mpl_err(MPL_ERR_ARG, "combiner: n_head=%d, head_dim=%d must be >= 1",
                       a->n_head, a->head_dim);
    if (a->causal != 0 && a->causal != 1)
        return mpl_err(MPL_ERR_ARG, "combiner: causal=%d must be 0 or 1", a->causal);
    if (!(a->rope_theta >= 0))
        return mpl_err(MPL_ERR_ARG, "combiner: rope_theta=%g must be >= 0", a->rope_theta);
    if (a->rope_theta > 0 && a->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG, "combiner: RoPE needs an even head_dim, got head_dim=%d",
                       a->head_dim);
    if (need_segment && a->segment < 1)
        return mpl_err(MPL_ERR_ARG, "combiner_fixed: segment=%lld must be >= 1",
                       (long long)a->segment);
    return MPL_OK;
}

/* Validation of the one-rank entry points: whole sequences. */
static mpl_status cb_single_check(const mpl_attn_combiner_args *a, int need_segment)
{
    MPL_CHECK(cb_check(a, need_segment));
    if (a->pos0 != 0 || a->n_tok != a->seq_len)
        return mpl_err(MPL_ERR_ARG,
                       "combiner one-rank call needs pos0=0 and n_tok=seq_len, got pos0=%lld "
                       "n_tok=%lld seq_len=%lld",
                       (long long)a->pos0, (long long)a->n_tok, (long long)a->seq_len);
    return MPL_OK;
}
