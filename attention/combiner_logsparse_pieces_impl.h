/* Template body of the rounds over the pieces of Combiner-Logsparse
 * context blocks (combiner.h, top): what a chunk contributes to the
 * summary of a block that other chunks hold rows of, forward and backward.
 * Included after combiner_logsparse_impl.h (it uses ls_geo).
 *
 * A block's summary on one rank (cb_span_fwd / cb_span_bwd) is a chain of
 * reductions over its rows: maxima, the max logit, the sums of the inner
 * softmax; backward the sum A, d q-hat and the tie counts. Each round here
 * is one of those reductions restricted to the rows the chunk holds; the
 * caller combines the rounds over the group (max or sum) before the next
 * reads them. Every combined value is thus the one-rank value up to the
 * order of a sum, and the max-pool gradient is split by the global tie
 * count, as on one rank. */

static void ls_piece(const ls_geo *g, const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c,
                     const mpl_attn_combiner_logsparse_widths *wd, mpl_attn_ls_phase phase,
                     const MPL_REAL *qkv, const uint8_t *mask, int64_t s, int64_t h, int64_t j,
                     MPL_REAL *dqkv, MPL_REAL *tmp)
{
    const int64_t d = g->d, HD = g->HD, W = g->W, sj = s * c->n_slot + j;
    const int64_t u0 = c->span[2 * j] > g->a ? c->span[2 * j] : g->a;
    const int64_t u1 = c->span[2 * j + 1] < g->e ? c->span[2 * j + 1] : g->e;
    const int64_t n = u1 > u0 ? u1 - u0 : 0, r0 = s * g->T + (u0 - g->a);
    const MPL_REAL *X = qkv + r0 * W + h * d;
    const uint8_t *mk = mask ? mask + r0 : NULL;
    MPL_REAL *fm = c->fmax + sj * wd->fmax;
    if (phase == MPL_ATTN_LS_MAXIMA) {
        MPL_REAL *qh = fm + h * d, *kh = fm + HD + h * d;
        int any = 0;
        for (int64_t k = 0; k < d; k++) qh[k] = kh[k] = -INFINITY;
        for (int64_t t = 0; t < n; t++) {
            if (!cb_real(mk, t)) continue;
            const MPL_REAL *q = X + t * W, *kk = q + HD;
            for (int64_t k = 0; k < d; k++) {
                qh[k] = q[k] > qh[k] ? q[k] : qh[k];
                kh[k] = kk[k] > kh[k] ? kk[k] : kh[k];
            }
            any = 1;
        }
        if (h == 0) fm[2 * HD] = (MPL_REAL)any;
        return;
    }
    /* every later round reads the combined maxima */
    const int present = fm[2 * HD] != 0;
    const MPL_REAL *qh = fm + h * d, *kh = fm + HD + h * d;
    MPL_REAL *fl = c->flog + sj * wd->flog + h;
    if (phase == MPL_ATTN_LS_LOGIT) {
        MPL_REAL m = -INFINITY;
        for (int64_t t = 0; present && t < n; t++) {
            if (!cb_real(mk, t)) continue;
            const MPL_REAL z = g->scale * cb_dot(qh, X + t * W + HD, d);
            m = z > m ? z : m;
        }
        *fl = m;
        return;
    }
    MPL_REAL *fs = c->fsum + sj * wd->fsum + h * (d + 1);
    if (phase == MPL_ATTN_LS_SUMS) {
        for (int64_t k = 0; k <= d; k++) fs[k] = 0;
        for (int64_t t = 0; present && t < n; t++) {
            if (!cb_real(mk, t)) continue;
            const MPL_REAL w = MPL_EXP(g->scale * cb_dot(qh, X + t * W + HD, d) - *fl);
            const MPL_REAL *v = X + t * W + 2 * HD;
            fs[0] += w;
            for (int64_t k = 0; k < d; k++) fs[1 + k] += w * v[k];
        }
        return;
    }
    MPL_REAL *bs = c->bsum + sj * wd->bsum;
    const MPL_REAL *dkh = bs + h * d, *dvh = bs + HD + h * d;
    MPL_REAL *cq = bs + 2 * HD + h * d, *ck = bs + 3 * HD + h * d;
    if (phase == MPL_ATTN_LS_TIES) {
        for (int64_t k = 0; k < d; k++) cq[k] = ck[k] = 0;
        for (int64_t t = 0; present && t < n; t++) {
            if (!cb_real(mk, t)) continue;
            const MPL_REAL *q = X + t * W, *kk = q + HD;
            for (int64_t k = 0; k < d; k++) {
                cq[k] += q[k] == qh[k];
                ck[k] += kk[k] == kh[k];
            }
        }
        return;
    }
    const MPL_REAL inv = present ? (MPL_REAL)1 / fs[0] : 0;
    MPL_REAL *A = c->ba + sj * wd->ba + h, *dqh = c->bdq + sj * wd->bdq + h * d;
    if (phase == MPL_ATTN_LS_A) {
        MPL_REAL acc = 0;
        for (int64_t t = 0; present && t < n; t++) {
            if (!cb_real(mk, t)) continue;
            const MPL_REAL at = MPL_EXP(g->scale * cb_dot(qh, X + t * W + HD, d) - *fl) * inv;
            if (at != 0) acc += at * cb_dot(dvh, X + t * W + 2 * HD, d);
        }
        *A = acc;
        return;
    }
    if (phase == MPL_ATTN_LS_DQ) {
        for (int64_t k = 0; k < d; k++) dqh[k] = 0;
        for (int64_t t = 0; present && t < n; t++) {
            if (!cb_real(mk, t)) continue;
            const MPL_REAL *kk = X + t * W + HD, *v = kk + HD;
            const MPL_REAL at = MPL_EXP(g->scale * cb_dot(qh, kk, d) - *fl) * inv;
            if (at == 0) continue;
            const MPL_REAL dz = at * (cb_dot(dvh, v, d) - *A) * g->scale;
            MPL_REAL *gk = dqkv + (r0 + t) * W + HD + h * d, *gv = gk + HD;
            for (int64_t k = 0; k < d; k++) {
                gv[k] += at * dvh[k];
                gk[k] += dz * qh[k];
                dqh[k] += dz * kk[k];
            }
        }
        return;
    }
    /* POOL: the combined d q-hat and d k-hat to the argmax rows, shared by
     * the ties of all chunks */
    if (!present) return;
    MPL_REAL *rq = tmp, *rk = tmp + d;
    for (int64_t k = 0; k < d; k++) rq[k] = dqh[k] / cq[k], rk[k] = dkh[k] / ck[k];
    for (int64_t t = 0; t < n; t++) {
        if (!cb_real(mk, t)) continue;
        const MPL_REAL *q = X + t * W, *kk = q + HD;
        MPL_REAL *gq = dqkv + (r0 + t) * W + h * d, *gk = gq + HD;
        for (int64_t k = 0; k < d; k++) {
            gq[k] += q[k] == qh[k] ? rq[k] : 0;
            gk[k] += kk[k] == kh[k] ? rk[k] : 0;
        }
    }
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_pieces)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, mpl_attn_ls_phase phase,
    MPL_REAL *dqkv)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if ((phase == MPL_ATTN_LS_DQ || phase == MPL_ATTN_LS_POOL) && !dqkv && c->n_slot > 0)
        return mpl_err(MPL_ERR_ARG, "combiner_logsparse: phase %d needs dqkv", (int)phase);
    if (g.S * g.H * c->n_slot == 0) return MPL_OK;
    const mpl_attn_combiner_logsparse_widths wd = mpl_attn_combiner_logsparse_widths_of(a);
    MPL_REAL *scratch = malloc((size_t)(omp_get_max_threads() * 2 * g.d) * sizeof *scratch);
    if (!scratch) return mpl_err(MPL_ERR_NOMEM, "combiner_logsparse: out of memory for scratch");
#pragma omp parallel
    {
        MPL_REAL *tmp = scratch + omp_get_thread_num() * 2 * g.d;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++)
            for (int64_t j = 0; j < c->n_slot; j++)
                ls_piece(&g, c, &wd, phase, qkv, a->mask, sh / g.H, sh % g.H, j, dqkv, tmp);
    }
    free(scratch);
    return MPL_OK;
}
