/* Template body of Combiner-Logsparse (combiner.h), one rank. Included
 * after combiner_impl.h by combiner_f32.c/_f64.c.
 *
 * Per (sequence, head) every aligned dyadic block of every level
 * l < Lambda is summarised once (level l has floor(L/2^l) full blocks, each
 * costing O(2^l d): O(L d) per level, O(L log L d) in all), then each query
 * takes its <= Lambda blocks (one per set bit of i) plus its self slot,
 * and bidirectional also the mirrored blocks of L-1-i. Summary index
 * m = off[l] + b for forward block (l, b) = [b 2^l, (b+1) 2^l), and
 * nb + off[l] + b for the mirrored block [L-(b+1) 2^l, L-b 2^l). The self
 * slot is the only direct slot; RoPE rotates q_i and k_i by the same angle
 * and leaves q_i . k_i unchanged, so it is not applied (see combiner.h). */

typedef struct ls_geo {
    int64_t S, T, H, d, HD, W, nb, off[64];
    int n_lev;
    MPL_REAL scale;
} ls_geo;

static mpl_status ls_geo_make(const mpl_attn_combiner_args *a, ls_geo *g)
{
    MPL_CHECK(cb_check(a, 0));
    if (a->pos0 != 0 || a->n_tok != a->seq_len)
        return mpl_err(MPL_ERR_UNSUPPORTED,
                       "combiner_logsparse runs on one rank only: needs pos0=0 and "
                       "n_tok=seq_len, got pos0=%lld n_tok=%lld seq_len=%lld",
                       (long long)a->pos0, (long long)a->n_tok, (long long)a->seq_len);
    g->S = a->n_seq, g->T = a->n_tok, g->H = a->n_head, g->d = a->head_dim;
    g->HD = g->H * g->d, g->W = 3 * g->HD;
    g->n_lev = mpl_attn_combiner_logsparse_levels(g->T);
    g->nb = 0;
    for (int l = 0; l < g->n_lev; l++) g->off[l] = g->nb, g->nb += g->T >> l;
    g->scale = (MPL_REAL)(1.0 / sqrt((double)g->d));
    return MPL_OK;
}

/* Global span [*t0, *t1) of summary m. */
static void ls_span(const ls_geo *g, int64_t m, int64_t *t0, int64_t *t1)
{
    const int rev = m >= g->nb;
    const int64_t mm = rev ? m - g->nb : m;
    int l = 0;
    while (l + 1 < g->n_lev && mm >= g->off[l + 1]) l++;
    const int64_t b = mm - g->off[l];
    if (!rev)
        *t0 = b << l, *t1 = (b + 1) << l;
    else
        *t0 = g->T - ((b + 1) << l), *t1 = g->T - (b << l);
}

/* All summaries of (s, h) into KH, VH (2 nb rows of d), PR (2 nb). */
static void ls_summaries(const ls_geo *g, int causal, const MPL_REAL *qkv, const uint8_t *mask,
                         int64_t s, int64_t h, MPL_REAL *KH, MPL_REAL *VH, uint8_t *PR,
                         MPL_REAL *w, MPL_REAL *qh)
{
    const int64_t n_m = causal ? g->nb : 2 * g->nb;
    for (int64_t m = 0; m < n_m; m++) {
        int64_t t0, t1;
        ls_span(g, m, &t0, &t1);
        const MPL_REAL *base = qkv + (s * g->T + t0) * g->W + h * g->d;
        PR[m] = (uint8_t)cb_span_fwd(t1 - t0, g->d, g->W, base, base + g->HD, base + 2 * g->HD,
                                     mask ? mask + s * g->T + t0 : NULL, g->scale, qh,
                                     KH + m * g->d, VH + m * g->d, w);
    }
}

/* Slots of query i: self + present blocks. */
static void ls_slots(const ls_geo *g, int causal, const MPL_REAL *qkv, const MPL_REAL *KH,
                     const MPL_REAL *VH, const uint8_t *PR, int64_t s, int64_t h, int64_t i,
                     int64_t *idx, cb_slots *q)
{
    const MPL_REAL *row = qkv + (s * g->T + i) * g->W + h * g->d;
    int64_t n = 0;
    for (int l = 0; l < g->n_lev; l++)
        if ((i >> l) & 1) {
            const int64_t m = g->off[l] + (i >> l) - 1;
            if (PR[m]) idx[n++] = m;
        }
    if (!causal) {
        const int64_t r = g->T - 1 - i;
        for (int l = 0; l < g->n_lev; l++)
            if ((r >> l) & 1) {
                const int64_t m = g->nb + g->off[l] + (r >> l) - 1;
                if (PR[m]) idx[n++] = m;
            }
    }
    *q = (cb_slots){.d = g->d, .nj = 1, .ldk = g->W, .ldv = g->W, .n_m = n, .ldh = g->d,
                    .scale = g->scale, .qr = row, .qu = row, .Kd = row + g->HD,
                    .Vd = row + 2 * g->HD, .KH = KH, .VH = VH, .mk = NULL, .idx = idx};
}

/* Per-thread scratch: KH, VH, (dKH, dVH) 2nb*d each; w T; tmp 5d; lg. */
static int64_t ls_scratch_elems(const ls_geo *g, int grads)
{
    return (grads ? 4 : 2) * 2 * g->nb * g->d + g->T + 5 * g->d + 4 * (2 * g->n_lev + 1);
}

/* Scratch of one pass for every thread: per thread n_per reals
 * (ls_scratch_elems), n_iper = 2 n_lev + 1 slot indices and 2nb
 * summary-present flags. */
typedef struct ls_scratch {
    MPL_REAL *real;
    int64_t *idx;
    uint8_t *pres;
    int64_t n_per, n_iper;
} ls_scratch;

static void ls_scratch_free(ls_scratch *sc)
{
    free(sc->real), free(sc->idx), free(sc->pres);
}

static mpl_status ls_scratch_alloc(const ls_geo *g, int grads, ls_scratch *sc)
{
    const int nth = omp_get_max_threads();
    sc->n_per = ls_scratch_elems(g, grads), sc->n_iper = 2 * g->n_lev + 1;
    sc->real = malloc((size_t)(nth * sc->n_per) * sizeof *sc->real);
    sc->idx = malloc((size_t)(nth * sc->n_iper) * sizeof *sc->idx);
    sc->pres = malloc((size_t)(nth * 2 * g->nb + 1));
    if (sc->real && sc->idx && sc->pres) return MPL_OK;
    ls_scratch_free(sc);
    return mpl_err(MPL_ERR_NOMEM, "combiner_logsparse: out of memory for scratch");
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_forward)(const mpl_attn_combiner_args *a,
                                                        const MPL_REAL *qkv, MPL_REAL *out,
                                                        MPL_REAL *saved)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    ls_scratch sc;
    MPL_CHECK(ls_scratch_alloc(&g, 0, &sc));
#pragma omp parallel
    {
        const int tid = omp_get_thread_num();
        MPL_REAL *KH = sc.real + tid * sc.n_per, *VH = KH + 2 * g.nb * g.d;
        MPL_REAL *w = VH + 2 * g.nb * g.d, *tmp = w + g.T, *lg = tmp + 5 * g.d;
        int64_t *idx = sc.idx + tid * sc.n_iper;
        uint8_t *PR = sc.pres + tid * 2 * g.nb;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            ls_summaries(&g, a->causal, qkv, a->mask, s, h, KH, VH, PR, w, tmp);
            MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            for (int64_t i = 0; i < g.T; i++) {
                MPL_REAL *o = out + (s * g.T + i) * g.HD + h * g.d;
                if (a->mask && !a->mask[s * g.T + i]) {
                    for (int64_t k = 0; k < g.d; k++) o[k] = 0;
                    ls[i] = -INFINITY;
                    continue;
                }
                cb_slots q;
                ls_slots(&g, a->causal, qkv, KH, VH, PR, s, h, i, idx, &q);
                ls[i] = cb_query_fwd(&q, lg, o);
            }
        }
    }
    ls_scratch_free(&sc);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_backward)(const mpl_attn_combiner_args *a,
                                                         const MPL_REAL *qkv,
                                                         const MPL_REAL *saved,
                                                         const MPL_REAL *dout, MPL_REAL *dqkv)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    ls_scratch sc;
    MPL_CHECK(ls_scratch_alloc(&g, 1, &sc));
#pragma omp parallel
    {
        const int tid = omp_get_thread_num();
        const int64_t n_sum = 2 * g.nb * g.d;
        MPL_REAL *KH = sc.real + tid * sc.n_per, *VH = KH + n_sum, *dKH = VH + n_sum;
        MPL_REAL *dVH = dKH + n_sum, *w = dVH + n_sum, *tmp = w + g.T, *lg = tmp + 5 * g.d;
        int64_t *idx = sc.idx + tid * sc.n_iper;
        uint8_t *PR = sc.pres + tid * 2 * g.nb;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            ls_summaries(&g, a->causal, qkv, a->mask, s, h, KH, VH, PR, w, tmp);
            for (int64_t k = 0; k < 2 * n_sum; k++) dKH[k] = 0; /* dKH and dVH */
            const MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            for (int64_t i = 0; i < g.T; i++) {
                if (ls[i] == -INFINITY) continue;
                cb_slots q;
                ls_slots(&g, a->causal, qkv, KH, VH, PR, s, h, i, idx, &q);
                MPL_REAL *dr = dqkv + (s * g.T + i) * g.W + h * g.d;
                cb_query_bwd(&q, ls[i], dout + (s * g.T + i) * g.HD + h * g.d, dr, dr,
                             dr + g.HD, dr + 2 * g.HD, dKH, dVH, lg);
            }
            const int64_t n_m = a->causal ? g.nb : 2 * g.nb;
            for (int64_t m = 0; m < n_m; m++) {
                if (!PR[m]) continue;
                int64_t t0, t1;
                ls_span(&g, m, &t0, &t1);
                const int64_t o = (s * g.T + t0) * g.W + h * g.d;
                const MPL_REAL *base = qkv + o;
                cb_span_bwd(t1 - t0, g.d, g.W, base, base + g.HD, base + 2 * g.HD,
                            a->mask ? a->mask + s * g.T + t0 : NULL, g.scale, dKH + m * g.d,
                            dVH + m * g.d, dqkv + o, dqkv + o + g.HD, dqkv + o + 2 * g.HD, w,
                            tmp);
            }
        }
    }
    ls_scratch_free(&sc);
    return MPL_OK;
}
