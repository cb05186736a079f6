/* Template body of Combiner-Fixed (combiner.h): the chunk phases
 * (summarize, forward as direct slots then summary slots, backward,
 * summarize-backward) and the one-rank wrappers. Included after combiner_impl.h by combiner_f32.c/_f64.c.
 *
 * The direct-slot phases first copy the chunk's rows and its halos into
 * one "extended" block of global positions [e0, e1) (e0 = start of the
 * segment holding pos0; e1 = the chunk end, or bidirectional the end of
 * the segment holding the last token), so the per-query code never asks
 * where a row came from; gradients are computed on that block and
 * scattered back to the chunk and the halos at the end. RoPE'd copies of q
 * and k of the block feed the direct slots; summaries read the unrotated
 * columns. Summaries of segments inside the chunk read its rows in place,
 * so they need no halo (and may be computed while it travels). */

typedef struct fx_geo {
    int64_t S, T, H, d, HD, W, s, L, n_seg, pos0, e0, e1, Te, n_lo, n_hi, m0, m1;
    MPL_REAL scale;
} fx_geo;

static mpl_status fx_geo_make(const mpl_attn_combiner_args *a, fx_geo *g)
{
    MPL_CHECK(cb_check(a, 1));
    g->S = a->n_seq, g->T = a->n_tok, g->H = a->n_head, g->d = a->head_dim;
    g->HD = g->H * g->d, g->W = 3 * g->HD, g->s = a->segment, g->L = a->seq_len;
    g->pos0 = a->pos0;
    g->n_seg = mpl_attn_combiner_fixed_n_seg(a);
    mpl_attn_combiner_fixed_halo(a, &g->n_lo, &g->n_hi);
    mpl_attn_combiner_fixed_owned(a, &g->m0, &g->m1);
    g->e0 = g->pos0 - g->n_lo, g->e1 = g->pos0 + g->T + g->n_hi, g->Te = g->e1 - g->e0;
    g->scale = (MPL_REAL)(1.0 / sqrt((double)g->d));
    return MPL_OK;
}

/* The extended block: X (S, Te, W) unrotated rows, M (S, Te) mask, and
 * with RoPE QR, KR (S, Te, HD) rotated to global positions e0.. */
typedef struct fx_ext {
    MPL_REAL *X, *QR, *KR;
    uint8_t *M;
} fx_ext;

static void fx_ext_free(fx_ext *e)
{
    free(e->X), free(e->QR), free(e->KR), free(e->M);
    memset(e, 0, sizeof *e);
}

static mpl_status fx_ext_load(const fx_geo *g, const mpl_attn_combiner_args *a,
                              const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
                              double theta, fx_ext *e)
{
    memset(e, 0, sizeof *e);
    const int64_t n_rows = g->S * g->Te;
    e->X = malloc((size_t)(n_rows * g->W) * sizeof *e->X);
    e->M = malloc((size_t)(n_rows ? n_rows : 1));
    if (theta > 0) {
        e->QR = malloc((size_t)(n_rows * g->HD) * sizeof *e->QR);
        e->KR = malloc((size_t)(n_rows * g->HD) * sizeof *e->KR);
    }
    if (!e->X || !e->M || (theta > 0 && (!e->QR || !e->KR))) {
        fx_ext_free(e);
        return mpl_err(MPL_ERR_NOMEM, "combiner_fixed: out of memory for %lld extended rows",
                       (long long)n_rows);
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t s = r / g->Te, t = r % g->Te, p = g->e0 + t; /* global position */
        const MPL_REAL *src;
        uint8_t m;
        if (p < g->pos0) {
            const int64_t i = s * g->n_lo + (p - g->e0);
            src = c->qkv_lo + i * g->W, m = c->mask_lo ? c->mask_lo[i] : 1;
        } else if (p < g->pos0 + g->T) {
            const int64_t i = s * g->T + (p - g->pos0);
            src = qkv + i * g->W, m = a->mask ? a->mask[i] : 1;
        } else {
            const int64_t i = s * g->n_hi + (p - g->pos0 - g->T);
            src = c->qkv_hi + i * g->W, m = c->mask_hi ? c->mask_hi[i] : 1;
        }
        memcpy(e->X + r * g->W, src, (size_t)g->W * sizeof *src);
        e->M[r] = m;
        if (theta > 0) {
            memcpy(e->QR + r * g->HD, src, (size_t)g->HD * sizeof *src);
            memcpy(e->KR + r * g->HD, src + g->HD, (size_t)g->HD * sizeof *src);
        }
    }
    if (theta > 0) {
        MPL_SUF(mpl_rope_apply)(e->QR, g->S, g->Te, g->HD, 0, (int)g->H, (int)g->d, g->e0, theta, 1);
        MPL_SUF(mpl_rope_apply)(e->KR, g->S, g->Te, g->HD, 0, (int)g->H, (int)g->d, g->e0, theta, 1);
    }
    return MPL_OK;
}

/* Bytes of the extended block (with RoPE: and its rotated q, k) and of its
 * gradient, as fx_ext_load and chunk_backward allocate them. */
static int64_t fx_ext_grad_bytes(const fx_geo *g, int rope)
{
    const int64_t n_rows = g->S * g->Te, w = g->W + (rope ? 2 * g->HD : 0);
    return n_rows * 2 * w * (int64_t)sizeof(MPL_REAL) + n_rows;
}

/* Add the extended-block gradient dX (S, Te, W) to dqkv and the halos. */
static void fx_ext_scatter(const fx_geo *g, const MPL_REAL *dX, MPL_REAL *dqkv,
                           const MPL_SUF(mpl_attn_combiner_ctx) *c)
{
    const int64_t n_rows = g->S * g->Te;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t s = r / g->Te, t = r % g->Te, p = g->e0 + t;
        MPL_REAL *dst;
        if (p < g->pos0)
            dst = c->dqkv_lo + (s * g->n_lo + (p - g->e0)) * g->W;
        else if (p < g->pos0 + g->T)
            dst = dqkv + (s * g->T + (p - g->pos0)) * g->W;
        else
            dst = c->dqkv_hi + (s * g->n_hi + (p - g->pos0 - g->T)) * g->W;
        const MPL_REAL *src = dX + r * g->W;
        for (int64_t k = 0; k < g->W; k++) dst[k] += src[k];
    }
}

/* The slots of global query i (in segment gq) of sequence s, head h; idx
 * (n_seg scratch) receives the present summary indices it sees
 * (present = NULL: the direct slots only). */
static void fx_slots(const fx_geo *g, int causal, const fx_ext *e, const uint8_t *present,
                     const MPL_REAL *khat, const MPL_REAL *vhat, int64_t s, int64_t h, int64_t i,
                     int64_t *idx, cb_slots *q)
{
    const int64_t gq = i / g->s, gs = gq * g->s, ge = gs + g->s < g->L ? gs + g->s : g->L;
    const int64_t ie = s * g->Te + (i - g->e0), j0 = s * g->Te + (gs - g->e0);
    q->d = g->d, q->scale = g->scale;
    q->nj = (causal ? i + 1 : ge) - gs;
    q->qu = e->X + ie * g->W + h * g->d;
    q->qr = e->QR ? e->QR + ie * g->HD + h * g->d : q->qu;
    q->Kd = e->KR ? e->KR + j0 * g->HD + h * g->d : e->X + j0 * g->W + g->HD + h * g->d;
    q->ldk = e->KR ? g->HD : g->W;
    q->Vd = e->X + j0 * g->W + 2 * g->HD + h * g->d, q->ldv = g->W;
    q->mk = e->M + j0;
    q->n_m = 0, q->idx = idx, q->ldh = g->HD, q->KH = q->VH = NULL;
    if (!present) return; /* direct slots only */
    const uint8_t *pr = present + s * g->n_seg;
    const int64_t m_hi = causal ? gq : g->n_seg;
    int64_t n = 0;
    for (int64_t m = 0; m < m_hi; m++)
        if (m != gq && pr[m]) idx[n++] = m;
    q->n_m = n;
    q->KH = khat + s * g->n_seg * g->HD + h * g->d;
    q->VH = vhat + s * g->n_seg * g->HD + h * g->d;
}

/* Summaries of the owned segments [mb, me) into c. Rows come from qkv, or
 * for the straddling segment (X != NULL) from its rows gathered into X
 * (n_seq, nX, W) with mask MX, row 0 at the segment's start. */
static mpl_status fx_summarize(const fx_geo *g, const mpl_attn_combiner_args *a,
                               const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
                               int64_t mb, int64_t me, const MPL_REAL *X, const uint8_t *MX,
                               int64_t nX)
{
    if (g->S * g->T == 0 || me <= mb) return MPL_OK;
    const int64_t n_per = g->s + 2 * g->d;
    MPL_REAL *scratch = malloc((size_t)(omp_get_max_threads() * n_per) * sizeof *scratch);
    if (!scratch) return mpl_err(MPL_ERR_NOMEM, "combiner_fixed: out of memory for scratch");
#pragma omp parallel
    {
        MPL_REAL *w = scratch + (int64_t)omp_get_thread_num() * n_per, *qh = w + g->s;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g->S * g->H; sh++) {
            const int64_t s = sh / g->H, h = sh % g->H;
            for (int64_t m = mb; m < me; m++) {
                const int64_t t0 = m * g->s, t1 = t0 + g->s < g->L ? t0 + g->s : g->L;
                const MPL_REAL *base;
                const uint8_t *mk;
                if (X) {
                    base = X + s * nX * g->W + h * g->d, mk = MX + s * nX;
                } else {
                    const int64_t r0 = s * g->T + (t0 - g->pos0);
                    base = qkv + r0 * g->W + h * g->d, mk = a->mask ? a->mask + r0 : NULL;
                }
                const int pres = cb_span_fwd(t1 - t0, g->d, g->W, base, base + g->HD,
                                             base + 2 * g->HD, mk, g->scale, qh,
                                             c->khat + (s * g->n_seg + m) * g->HD + h * g->d,
                                             c->vhat + (s * g->n_seg + m) * g->HD + h * g->d, w);
                if (h == 0) c->present[s * g->n_seg + m] = (uint8_t)pres;
            }
        }
    }
    free(scratch);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_part)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
    int halo)
{
    fx_geo g;
    MPL_CHECK(fx_geo_make(a, &g));
    /* the owned segment m0 straddles pos0 when it starts before it */
    const int straddle = g.m1 > g.m0 && g.n_lo > 0;
    if (!halo) return fx_summarize(&g, a, qkv, c, g.m0 + straddle, g.m1, NULL, NULL, 0);
    if (!straddle || g.S * g.T == 0) return MPL_OK;
    const int64_t t0 = g.m0 * g.s, t1 = t0 + g.s < g.L ? t0 + g.s : g.L, n = t1 - t0;
    MPL_REAL *X = malloc((size_t)(g.S * n * g.W) * sizeof *X);
    uint8_t *MX = malloc((size_t)(g.S * n));
    mpl_status st = MPL_OK;
    if (!X || !MX)
        MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "combiner_fixed: out of memory for %lld rows",
                      (long long)(g.S * n));
    for (int64_t s = 0; s < g.S; s++) /* n_lo halo rows, then the chunk's */
        for (int64_t r = 0; r < n; r++) {
            const int64_t p = t0 + r;
            const MPL_REAL *src;
            uint8_t m;
            if (p < g.pos0) {
                const int64_t i = s * g.n_lo + r;
                src = c->qkv_lo + i * g.W, m = c->mask_lo ? c->mask_lo[i] : 1;
            } else {
                const int64_t i = s * g.T + (p - g.pos0);
                src = qkv + i * g.W, m = a->mask ? a->mask[i] : 1;
            }
            memcpy(X + (s * n + r) * g.W, src, (size_t)g.W * sizeof *src);
            MX[s * n + r] = m;
        }
    st = fx_summarize(&g, a, qkv, c, g.m0, g.m0 + 1, X, MX, n);
done:
    free(X), free(MX);
    return st;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c)
{
    MPL_CHECK(MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_part)(a, qkv, c, 0));
    MPL_CHECK(MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_part)(a, qkv, c, 1));
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_forward_direct)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
    MPL_REAL *out, MPL_REAL *saved)
{
    fx_geo g;
    MPL_CHECK(fx_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    fx_ext e;
    MPL_CHECK(fx_ext_load(&g, a, qkv, c, a->rope_theta, &e));
    const int64_t n_per = g.s;
    MPL_REAL *scratch = malloc((size_t)(omp_get_max_threads() * n_per) * sizeof *scratch);
    if (!scratch) {
        fx_ext_free(&e);
        return mpl_err(MPL_ERR_NOMEM, "combiner_fixed: out of memory for scratch");
    }
#pragma omp parallel
    {
        MPL_REAL *lg = scratch + (int64_t)omp_get_thread_num() * n_per;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            for (int64_t t = 0; t < g.T; t++) {
                MPL_REAL *o = out + (s * g.T + t) * g.HD + h * g.d;
                if (a->mask && !a->mask[s * g.T + t]) { /* padded query: 0 */
                    for (int64_t k = 0; k < g.d; k++) o[k] = 0;
                    ls[t] = -INFINITY;
                    continue;
                }
                cb_slots q;
                fx_slots(&g, a->causal, &e, NULL, NULL, NULL, s, h, g.pos0 + t, NULL, &q);
                ls[t] = cb_query_fwd(&q, lg, o);
            }
        }
    }
    free(scratch);
    fx_ext_free(&e);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_forward_summaries)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
    MPL_REAL *out, MPL_REAL *saved)
{
    fx_geo g;
    MPL_CHECK(fx_geo_make(a, &g));
    if (g.S * g.T == 0 || g.n_seg == 0) return MPL_OK;
    const int nth = omp_get_max_threads();
    MPL_REAL *scratch = malloc((size_t)(nth * g.n_seg) * sizeof *scratch);
    int64_t *iscratch = malloc((size_t)(nth * g.n_seg) * sizeof *iscratch);
    if (!scratch || !iscratch) {
        free(scratch), free(iscratch);
        return mpl_err(MPL_ERR_NOMEM, "combiner_fixed: out of memory for scratch");
    }
#pragma omp parallel
    {
        MPL_REAL *lg = scratch + (int64_t)omp_get_thread_num() * g.n_seg;
        int64_t *idx = iscratch + (int64_t)omp_get_thread_num() * g.n_seg;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            const uint8_t *pr = c->present + s * g.n_seg;
            for (int64_t t = 0; t < g.T; t++) {
                if (ls[t] == -INFINITY) continue; /* padded query */
                const int64_t gq = (g.pos0 + t) / g.s, m_hi = a->causal ? gq : g.n_seg;
                int64_t n = 0;
                for (int64_t m = 0; m < m_hi; m++)
                    if (m != gq && pr[m]) idx[n++] = m;
                const cb_slots q = {.d = g.d, .n_m = n, .ldh = g.HD, .scale = g.scale,
                                    .qu = qkv + (s * g.T + t) * g.W + h * g.d,
                                    .KH = c->khat + s * g.n_seg * g.HD + h * g.d,
                                    .VH = c->vhat + s * g.n_seg * g.HD + h * g.d, .idx = idx};
                ls[t] = cb_query_merge(&q, ls[t], lg, out + (s * g.T + t) * g.HD + h * g.d);
            }
        }
    }
    free(scratch), free(iscratch);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_forward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
    MPL_REAL *out, MPL_REAL *saved)
{
    MPL_CHECK(MPL_SUF(mpl_attn_combiner_fixed_chunk_forward_direct)(a, qkv, c, out, saved));
    MPL_CHECK(MPL_SUF(mpl_attn_combiner_fixed_chunk_forward_summaries)(a, qkv, c, out, saved));
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_backward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
    const MPL_REAL *saved, const MPL_REAL *dout, MPL_REAL *dqkv)
{
    fx_geo g;
    MPL_CHECK(fx_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    mpl_status st = MPL_OK;
    fx_ext e = {0};
    MPL_REAL *dX = NULL, *dQR = NULL, *dKR = NULL, *scratch = NULL;
    int64_t *iscratch = NULL;
    MPL_CHECK_GOTO(fx_ext_load(&g, a, qkv, c, a->rope_theta, &e), fail);
    const int64_t n_rows = g.S * g.Te, n_lg = g.s + g.n_seg, n_per = 2 * n_lg;
    dX = calloc((size_t)(n_rows * g.W), sizeof *dX);
    scratch = malloc((size_t)(omp_get_max_threads() * n_per) * sizeof *scratch);
    iscratch = malloc((size_t)(omp_get_max_threads() * g.n_seg) * sizeof *iscratch);
    if (e.QR) {
        dQR = calloc((size_t)(n_rows * g.HD), sizeof *dQR);
        dKR = calloc((size_t)(n_rows * g.HD), sizeof *dKR);
    }
    if (!dX || !scratch || !iscratch || (e.QR && (!dQR || !dKR)))
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "combiner_fixed: out of memory for %lld rows",
                      (long long)n_rows);
#pragma omp parallel
    {
        MPL_REAL *lg = scratch + (int64_t)omp_get_thread_num() * n_per;
        int64_t *idx = iscratch + (int64_t)omp_get_thread_num() * g.n_seg;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            const MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            for (int64_t t = 0; t < g.T; t++) {
                if (ls[t] == -INFINITY) continue; /* padded query: no gradient */
                const int64_t i = g.pos0 + t, gq = i / g.s;
                const int64_t ie = s * g.Te + (i - g.e0), j0 = s * g.Te + (gq * g.s - g.e0);
                cb_slots q;
                fx_slots(&g, a->causal, &e, c->present, c->khat, c->vhat, s, h, i, idx, &q);
                MPL_REAL *dqu = dX + ie * g.W + h * g.d;
                MPL_REAL *dqr = dQR ? dQR + ie * g.HD + h * g.d : dqu;
                MPL_REAL *dKd = dKR ? dKR + j0 * g.HD + h * g.d : dX + j0 * g.W + g.HD + h * g.d;
                MPL_REAL *dVd = dX + j0 * g.W + 2 * g.HD + h * g.d;
                cb_query_bwd(&q, ls[t], dout + (s * g.T + t) * g.HD + h * g.d, dqr, dqu, dKd,
                             dVd, c->dkhat + s * g.n_seg * g.HD + h * g.d,
                             c->dvhat + s * g.n_seg * g.HD + h * g.d, lg);
            }
        }
    }
    if (dQR) { /* rotate back (the transpose of a rotation) and fold into dX */
        MPL_SUF(mpl_rope_apply)(dQR, g.S, g.Te, g.HD, 0, (int)g.H, (int)g.d, g.e0, a->rope_theta, -1);
        MPL_SUF(mpl_rope_apply)(dKR, g.S, g.Te, g.HD, 0, (int)g.H, (int)g.d, g.e0, a->rope_theta, -1);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n_rows; r++)
            for (int64_t k = 0; k < g.HD; k++) {
                dX[r * g.W + k] += dQR[r * g.HD + k];
                dX[r * g.W + g.HD + k] += dKR[r * g.HD + k];
            }
    }
    fx_ext_scatter(&g, dX, dqkv, c);
fail:
    free(dX), free(dQR), free(dKR), free(scratch), free(iscratch);
    fx_ext_free(&e);
    return st;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_backward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv, const MPL_SUF(mpl_attn_combiner_ctx) *c,
    MPL_REAL *dqkv)
{
    fx_geo g;
    MPL_CHECK(fx_geo_make(a, &g));
    if (g.S * g.T == 0 || g.m1 <= g.m0) return MPL_OK;
    mpl_status st = MPL_OK;
    fx_ext e = {0};
    MPL_REAL *dX = NULL, *scratch = NULL;
    MPL_CHECK_GOTO(fx_ext_load(&g, a, qkv, c, 0, &e), fail);
    const int64_t n_per = g.s + 5 * g.d;
    dX = calloc((size_t)(g.S * g.Te * g.W), sizeof *dX);
    scratch = malloc((size_t)(omp_get_max_threads() * n_per) * sizeof *scratch);
    if (!dX || !scratch)
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "combiner_fixed: out of memory for scratch");
#pragma omp parallel
    {
        MPL_REAL *w = scratch + (int64_t)omp_get_thread_num() * n_per, *tmp = w + g.s;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            for (int64_t m = g.m0; m < g.m1; m++) {
                const int64_t t0 = m * g.s, t1 = t0 + g.s < g.L ? t0 + g.s : g.L;
                const int64_t r0 = s * g.Te + (t0 - g.e0), o = r0 * g.W + h * g.d;
                const MPL_REAL *base = e.X + o;
                cb_span_bwd(t1 - t0, g.d, g.W, base, base + g.HD, base + 2 * g.HD, e.M + r0,
                            g.scale, c->dkhat + (s * g.n_seg + m) * g.HD + h * g.d,
                            c->dvhat + (s * g.n_seg + m) * g.HD + h * g.d, dX + o,
                            dX + o + g.HD, dX + o + 2 * g.HD, w, tmp);
            }
        }
    }
    fx_ext_scatter(&g, dX, dqkv, c);
fail:
    free(dX), free(scratch);
    fx_ext_free(&e);
    return st;
}

int64_t MPL_SUF(mpl_attn_combiner_fixed_chunk_work_bytes)(const mpl_attn_combiner_args *a)
{
    fx_geo g;
    if (fx_geo_make(a, &g) != MPL_OK) {
        mpl_err_clear();
        return 0;
    }
    /* chunk_backward's peak: the block, its gradient, the scratch */
    const int64_t nth = omp_get_max_threads(), R = (int64_t)sizeof(MPL_REAL);
    return fx_ext_grad_bytes(&g, a->rope_theta > 0) +
           nth * (2 * (g.s + g.n_seg) * R + g.n_seg * (int64_t)sizeof(int64_t));
}

int64_t MPL_SUF(mpl_attn_combiner_fixed_work_bytes)(const mpl_attn_combiner_args *a)
{
    /* fx_ctx_alloc with gradients, then the chunk phases */
    const int64_t n = a->n_seq * mpl_attn_combiner_fixed_n_seg(a);
    const int64_t HD = (int64_t)a->n_head * a->head_dim;
    return 4 * n * HD * (int64_t)sizeof(MPL_REAL) + n +
           MPL_SUF(mpl_attn_combiner_fixed_chunk_work_bytes)(a);
}

/* One rank: summaries of every segment into a context that lives for the
 * call. dk/dv: also allocate the summary gradients. */
static mpl_status fx_ctx_alloc(const mpl_attn_combiner_args *a, int grads,
                               MPL_SUF(mpl_attn_combiner_ctx) *c)
{
    memset(c, 0, sizeof *c);
    const int64_t n = a->n_seq * mpl_attn_combiner_fixed_n_seg(a);
    const int64_t HD = (int64_t)a->n_head * a->head_dim;
    c->khat = calloc((size_t)(n * HD + 1), sizeof *c->khat);
    c->vhat = calloc((size_t)(n * HD + 1), sizeof *c->vhat);
    c->present = calloc((size_t)(n + 1), 1);
    if (grads) {
        c->dkhat = calloc((size_t)(n * HD + 1), sizeof *c->dkhat);
        c->dvhat = calloc((size_t)(n * HD + 1), sizeof *c->dvhat);
    }
    if (!c->khat || !c->vhat || !c->present || (grads && (!c->dkhat || !c->dvhat)))
        return mpl_err(MPL_ERR_NOMEM, "combiner_fixed: out of memory for %lld summaries",
                       (long long)n);
    return MPL_OK;
}

static void fx_ctx_free(MPL_SUF(mpl_attn_combiner_ctx) *c)
{
    free(c->khat), free(c->vhat), free(c->present), free(c->dkhat), free(c->dvhat);
    memset(c, 0, sizeof *c);
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_forward)(const mpl_attn_combiner_args *a,
                                                    const MPL_REAL *qkv, MPL_REAL *out,
                                                    MPL_REAL *saved)
{
    MPL_CHECK(cb_single_check(a, 1));
    mpl_status st = MPL_OK;
    MPL_SUF(mpl_attn_combiner_ctx) c;
    MPL_CHECK_GOTO(fx_ctx_alloc(a, 0, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize)(a, qkv, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_fixed_chunk_forward)(a, qkv, &c, out, saved), fail);
fail:
    fx_ctx_free(&c);
    return st;
}

mpl_status MPL_SUF(mpl_attn_combiner_fixed_backward)(const mpl_attn_combiner_args *a,
                                                     const MPL_REAL *qkv, const MPL_REAL *saved,
                                                     const MPL_REAL *dout, MPL_REAL *dqkv)
{
    MPL_CHECK(cb_single_check(a, 1));
    mpl_status st = MPL_OK;
    MPL_SUF(mpl_attn_combiner_ctx) c;
    MPL_CHECK_GOTO(fx_ctx_alloc(a, 1, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize)(a, qkv, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_fixed_chunk_backward)(a, qkv, &c, saved, dout, dqkv),
                   fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_backward)(a, qkv, &c, dqkv),
                   fail);
fail:
    fx_ctx_free(&c);
    return st;
}
