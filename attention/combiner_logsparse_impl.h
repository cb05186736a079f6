/* Template body of Combiner-Logsparse (combiner.h): the chunk phases that
 * touch the chunk's own blocks and queries (summarize, forward, backward,
 * backward_local) and the one-rank wrappers. The rounds over the pieces of
 * context blocks are in combiner_logsparse_pieces_impl.h. Included after
 * combiner_impl.h by combiner_f32.c/_f64.c.
 *
 * Per (sequence, head) the chunk keeps one summary table: its local blocks
 * (the used dyadic blocks that lie inside the chunk, level by level, past
 * then future; mpl_attn_combiner_logsparse_local), then 2 Lambda context
 * entries (dir, level) filled from the combined statistics of the rounds.
 * Query i takes its self slot, for every bit l set in i the past block
 * (i >> l) - 1 of level l and, bidirectional, for every bit l clear the
 * future block (i >> l) + 1 (cut at L, none when it starts at or after L);
 * a block is local when it lies inside the chunk, the context entry
 * otherwise. Slots are listed in the same order on every split (past by
 * level, then future by level), so a split computes what one rank does.
 * The self slot is the only direct slot; RoPE rotates q_i and k_i by the
 * same angle and leaves q_i . k_i unchanged, so it is not applied (see
 * combiner.h). */

typedef struct ls_geo {
    int64_t S, T, H, d, HD, W, L, a, e, n_loc, n_tab;
    int64_t blo[2][64], nloc[2][64], off[2][64];
    int n_lev, n_dir;
    MPL_REAL scale;
} ls_geo;

static mpl_status ls_geo_make(const mpl_attn_combiner_args *a, ls_geo *g)
{
    MPL_CHECK(cb_check(a, 0));
    g->S = a->n_seq, g->T = a->n_tok, g->H = a->n_head, g->d = a->head_dim;
    g->HD = g->H * g->d, g->W = 3 * g->HD, g->L = a->seq_len;
    g->a = a->pos0, g->e = a->pos0 + a->n_tok;
    g->n_lev = mpl_attn_combiner_logsparse_levels(g->L);
    g->n_dir = a->causal ? 1 : 2;
    g->n_loc = 0;
    for (int dir = 0; dir < 2; dir++)
        for (int l = 0; l < g->n_lev; l++) {
            g->blo[dir][l] = g->nloc[dir][l] = 0;
            if (dir < g->n_dir)
                mpl_attn_combiner_logsparse_local(g->L, g->a, g->e, dir, l, &g->blo[dir][l],
                                                  &g->nloc[dir][l]);
            g->off[dir][l] = g->n_loc, g->n_loc += g->nloc[dir][l];
        }
    g->n_tab = g->n_loc + 2 * (int64_t)g->n_lev;
    g->scale = (MPL_REAL)(1.0 / sqrt((double)g->d));
    return MPL_OK;
}

/* Global span of block b of level l, cut at L (future blocks may reach
 * past the end; past blocks never do). */
static void ls_block_span(const ls_geo *g, int l, int64_t b, int64_t *t0, int64_t *t1)
{
    *t0 = b << l;
    *t1 = ((b + 1) << l) < g->L ? (b + 1) << l : g->L;
}

/* Block query i uses at level l in direction dir (past: bit l of i set;
 * future: bit l clear), or -1 when it has none there. */
static int64_t ls_block_of(const ls_geo *g, int dir, int l, int64_t i)
{
    const int64_t x = i >> l;
    if (!dir) return (x & 1) ? x - 1 : -1;
    return !(x & 1) && ((x + 1) << l) < g->L ? x + 1 : -1;
}

/* Table row of block b of level l, used in direction dir by a query of
 * the chunk: local when inside the chunk, the context entry otherwise. */
static int64_t ls_entry(const ls_geo *g, int dir, int l, int64_t b)
{
    int64_t t0, t1;
    ls_block_span(g, l, b, &t0, &t1);
    if (t0 >= g->a && t1 <= g->e) return g->off[dir][l] + ((b - g->blo[dir][l]) >> 1);
    return g->n_loc + (int64_t)dir * g->n_lev + l;
}

/* Local summaries of (s, h) into tab (n_tab rows of 2d) and pr. */
static void ls_local_summaries(const ls_geo *g, const MPL_REAL *qkv, const uint8_t *mask,
                               int64_t s, int64_t h, MPL_REAL *tab, uint8_t *pr, MPL_REAL *w,
                               MPL_REAL *qh)
{
    for (int dir = 0; dir < g->n_dir; dir++)
        for (int l = 0; l < g->n_lev; l++)
            for (int64_t k = 0; k < g->nloc[dir][l]; k++) {
                int64_t t0, t1;
                ls_block_span(g, l, g->blo[dir][l] + 2 * k, &t0, &t1);
                const int64_t r0 = s * g->T + (t0 - g->a), m = g->off[dir][l] + k;
                const MPL_REAL *base = qkv + r0 * g->W + h * g->d;
                pr[m] = (uint8_t)cb_span_fwd(t1 - t0, g->d, g->W, base, base + g->HD,
                                             base + 2 * g->HD, mask ? mask + r0 : NULL,
                                             g->scale, qh, tab + m * 2 * g->d,
                                             tab + m * 2 * g->d + g->d, w);
            }
}

/* Context entries of (s, h): k-hat from fmax, v-hat = U / S from fsum. */
static void ls_ctx_fill(const ls_geo *g, const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c,
                        int64_t s, int64_t h, MPL_REAL *tab, uint8_t *pr)
{
    const mpl_attn_combiner_args wa = {.n_head = (int)g->H, .head_dim = (int)g->d};
    const mpl_attn_combiner_logsparse_widths wd = mpl_attn_combiner_logsparse_widths_of(&wa);
    for (int dir = 0; dir < 2; dir++)
        for (int l = 0; l < g->n_lev; l++) {
            const int64_t m = g->n_loc + (int64_t)dir * g->n_lev + l;
            const int64_t j = c->use && dir < g->n_dir ? c->use[dir * g->n_lev + l] : -1;
            pr[m] = 0;
            if (j < 0) continue;
            const MPL_REAL *fm = c->fmax + (s * c->n_slot + j) * wd.fmax;
            if (fm[2 * g->HD] == 0) continue; /* no real row anywhere */
            const MPL_REAL *fs = c->fsum + (s * c->n_slot + j) * wd.fsum + h * (g->d + 1);
            const MPL_REAL inv = (MPL_REAL)1 / fs[0];
            MPL_REAL *kh = tab + m * 2 * g->d, *vh = kh + g->d;
            for (int64_t k = 0; k < g->d; k++) kh[k] = fm[g->HD + h * g->d + k], vh[k] = fs[1 + k] * inv;
            pr[m] = 1;
        }
}

/* Slots of query i: self + present blocks, past then future, by level. */
static void ls_slots(const ls_geo *g, const MPL_REAL *qkv, const MPL_REAL *tab,
                     const uint8_t *pr, int64_t s, int64_t h, int64_t i, int64_t *idx,
                     cb_slots *q)
{
    const MPL_REAL *row = qkv + (s * g->T + (i - g->a)) * g->W + h * g->d;
    int64_t n = 0;
    for (int dir = 0; dir < g->n_dir; dir++)
        for (int l = 0; l < g->n_lev; l++) {
            const int64_t b = ls_block_of(g, dir, l, i);
            if (b < 0) continue;
            const int64_t m = ls_entry(g, dir, l, b);
            if (pr[m]) idx[n++] = m;
        }
    *q = (cb_slots){.d = g->d, .nj = 1, .ldk = g->W, .ldv = g->W, .n_m = n, .ldh = 2 * g->d,
                    .scale = g->scale, .qr = row, .qu = row, .Kd = row + g->HD,
                    .Vd = row + 2 * g->HD, .KH = tab, .VH = tab + g->d, .mk = NULL, .idx = idx};
}

/* Per-thread scratch of one pass: reals w (longest local block or chunk),
 * tmp 5d, lg 2(2 Lambda + 1); 2 Lambda + 1 slot indices. */
typedef struct ls_scratch {
    MPL_REAL *real;
    int64_t *idx;
    int64_t n_per, n_iper;
} ls_scratch;

static void ls_scratch_free(ls_scratch *sc) { free(sc->real), free(sc->idx); }

static void ls_scratch_size(const ls_geo *g, ls_scratch *sc)
{
    sc->n_iper = 2 * (int64_t)g->n_lev + 1;
    sc->n_per = g->T + 5 * g->d + 2 * sc->n_iper;
}

static mpl_status ls_scratch_alloc(const ls_geo *g, ls_scratch *sc)
{
    const int nth = omp_get_max_threads();
    ls_scratch_size(g, sc);
    sc->real = malloc((size_t)(nth * sc->n_per) * sizeof *sc->real);
    sc->idx = malloc((size_t)(nth * sc->n_iper) * sizeof *sc->idx);
    if (sc->real && sc->idx) return MPL_OK;
    ls_scratch_free(sc);
    return mpl_err(MPL_ERR_NOMEM, "combiner_logsparse: out of memory for scratch");
}

#define LS_TAB(c, g, s, h) ((c)->tab + ((s) * (g).H + (h)) * (g).n_tab * 2 * (g).d)
#define LS_DTAB(c, g, s, h) ((c)->dtab + ((s) * (g).H + (h)) * (g).n_tab * 2 * (g).d)
#define LS_PR(c, g, s, h) ((c)->tab_present + ((s) * (g).H + (h)) * (g).n_tab)

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_summarize)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    ls_scratch sc;
    MPL_CHECK(ls_scratch_alloc(&g, &sc));
#pragma omp parallel
    {
        MPL_REAL *w = sc.real + omp_get_thread_num() * sc.n_per, *tmp = w + g.T;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            ls_local_summaries(&g, qkv, a->mask, s, h, LS_TAB(c, g, s, h), LS_PR(c, g, s, h), w,
                               tmp);
        }
    }
    ls_scratch_free(&sc);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_forward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, MPL_REAL *out, MPL_REAL *saved)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    ls_scratch sc;
    MPL_CHECK(ls_scratch_alloc(&g, &sc));
#pragma omp parallel
    {
        const int tid = omp_get_thread_num();
        MPL_REAL *lg = sc.real + tid * sc.n_per + g.T + 5 * g.d;
        int64_t *idx = sc.idx + tid * sc.n_iper;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            MPL_REAL *tab = LS_TAB(c, g, s, h);
            uint8_t *pr = LS_PR(c, g, s, h);
            ls_ctx_fill(&g, c, s, h, tab, pr);
            MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            for (int64_t t = 0; t < g.T; t++) {
                MPL_REAL *o = out + (s * g.T + t) * g.HD + h * g.d;
                if (a->mask && !a->mask[s * g.T + t]) { /* padded query: 0 */
                    for (int64_t k = 0; k < g.d; k++) o[k] = 0;
                    ls[t] = -INFINITY;
                    continue;
                }
                cb_slots q;
                ls_slots(&g, qkv, tab, pr, s, h, g.a + t, idx, &q);
                ls[t] = cb_query_fwd(&q, lg, o);
            }
        }
    }
    ls_scratch_free(&sc);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_backward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, const MPL_REAL *saved,
    const MPL_REAL *dout, MPL_REAL *dqkv)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    ls_scratch sc;
    MPL_CHECK(ls_scratch_alloc(&g, &sc));
    const int64_t w_bsum = 4 * g.HD;
#pragma omp parallel
    {
        const int tid = omp_get_thread_num();
        MPL_REAL *lg = sc.real + tid * sc.n_per + g.T + 5 * g.d;
        int64_t *idx = sc.idx + tid * sc.n_iper;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            MPL_REAL *tab = LS_TAB(c, g, s, h), *dtab = LS_DTAB(c, g, s, h);
            uint8_t *pr = LS_PR(c, g, s, h);
            ls_ctx_fill(&g, c, s, h, tab, pr);
            for (int64_t k = 0; k < g.n_tab * 2 * g.d; k++) dtab[k] = 0;
            const MPL_REAL *ls = saved + (s * g.H + h) * g.T;
            for (int64_t t = 0; t < g.T; t++) {
                if (ls[t] == -INFINITY) continue; /* padded query: no gradient */
                cb_slots q;
                ls_slots(&g, qkv, tab, pr, s, h, g.a + t, idx, &q);
                MPL_REAL *dr = dqkv + (s * g.T + t) * g.W + h * g.d;
                cb_query_bwd(&q, ls[t], dout + (s * g.T + t) * g.HD + h * g.d, dr, dr,
                             dr + g.HD, dr + 2 * g.HD, dtab, dtab + g.d, lg);
            }
            for (int dir = 0; dir < g.n_dir; dir++) /* the users' share of the slots */
                for (int l = 0; l < g.n_lev; l++) {
                    const int64_t m = g.n_loc + (int64_t)dir * g.n_lev + l;
                    if (!pr[m]) continue;
                    MPL_REAL *bs = c->bsum + (s * c->n_slot + c->use[dir * g.n_lev + l]) * w_bsum;
                    for (int64_t k = 0; k < g.d; k++) {
                        bs[h * g.d + k] += dtab[m * 2 * g.d + k];
                        bs[g.HD + h * g.d + k] += dtab[m * 2 * g.d + g.d + k];
                    }
                }
        }
    }
    ls_scratch_free(&sc);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_backward_local)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, MPL_REAL *dqkv)
{
    ls_geo g;
    MPL_CHECK(ls_geo_make(a, &g));
    if (g.S * g.T == 0) return MPL_OK;
    ls_scratch sc;
    MPL_CHECK(ls_scratch_alloc(&g, &sc));
#pragma omp parallel
    {
        MPL_REAL *w = sc.real + omp_get_thread_num() * sc.n_per, *tmp = w + g.T;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < g.S * g.H; sh++) {
            const int64_t s = sh / g.H, h = sh % g.H;
            const MPL_REAL *dtab = LS_DTAB(c, g, s, h);
            const uint8_t *pr = LS_PR(c, g, s, h);
            for (int dir = 0; dir < g.n_dir; dir++)
                for (int l = 0; l < g.n_lev; l++)
                    for (int64_t k = 0; k < g.nloc[dir][l]; k++) {
                        const int64_t m = g.off[dir][l] + k;
                        if (!pr[m]) continue;
                        int64_t t0, t1;
                        ls_block_span(&g, l, g.blo[dir][l] + 2 * k, &t0, &t1);
                        const int64_t r0 = s * g.T + (t0 - g.a), o = r0 * g.W + h * g.d;
                        const MPL_REAL *base = qkv + o;
                        cb_span_bwd(t1 - t0, g.d, g.W, base, base + g.HD, base + 2 * g.HD,
                                    a->mask ? a->mask + r0 : NULL, g.scale, dtab + m * 2 * g.d,
                                    dtab + m * 2 * g.d + g.d, dqkv + o, dqkv + o + g.HD,
                                    dqkv + o + 2 * g.HD, w, tmp);
                    }
        }
    }
    ls_scratch_free(&sc);
    return MPL_OK;
}

int64_t MPL_SUF(mpl_attn_combiner_logsparse_work_bytes)(const mpl_attn_combiner_args *a)
{
    ls_geo g;
    if (ls_geo_make(a, &g) != MPL_OK) {
        mpl_err_clear();
        return 0;
    }
    /* the table, its gradient and presence, and one pass's scratch (the
     * rounds' scratch, 2d reals per thread, is less) */
    ls_scratch sc;
    ls_scratch_size(&g, &sc);
    const int64_t n = g.S * g.H * g.n_tab, R = (int64_t)sizeof(MPL_REAL);
    return n * (4 * g.d * R + 1) +
           omp_get_max_threads() * (sc.n_per * R + sc.n_iper * (int64_t)sizeof(int64_t));
}

/* One rank: a context with no slot and a table that lives for the call. */
static mpl_status ls_single(const mpl_attn_combiner_args *a, int grads,
                            MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c)
{
    memset(c, 0, sizeof *c);
    MPL_CHECK(cb_single_check(a, 0));
    const int64_t n = a->n_seq * a->n_head * mpl_attn_combiner_logsparse_n_tab(a);
    c->tab = malloc((size_t)(n * 2 * a->head_dim + 1) * sizeof *c->tab);
    c->tab_present = malloc((size_t)(n + 1));
    if (grads) c->dtab = malloc((size_t)(n * 2 * a->head_dim + 1) * sizeof *c->dtab);
    if (!c->tab || !c->tab_present || (grads && !c->dtab))
        return mpl_err(MPL_ERR_NOMEM, "combiner_logsparse: out of memory for %lld summaries",
                       (long long)n);
    return MPL_OK;
}

static void ls_single_free(MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c)
{
    free(c->tab), free(c->tab_present), free(c->dtab);
    memset(c, 0, sizeof *c);
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_forward)(const mpl_attn_combiner_args *a,
                                                        const MPL_REAL *qkv, MPL_REAL *out,
                                                        MPL_REAL *saved)
{
    mpl_status st = MPL_OK;
    MPL_SUF(mpl_attn_combiner_logsparse_ctx) c;
    MPL_CHECK_GOTO(ls_single(a, 0, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_logsparse_chunk_summarize)(a, qkv, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_logsparse_chunk_forward)(a, qkv, &c, out, saved),
                   fail);
fail:
    ls_single_free(&c);
    return st;
}

mpl_status MPL_SUF(mpl_attn_combiner_logsparse_backward)(const mpl_attn_combiner_args *a,
                                                         const MPL_REAL *qkv,
                                                         const MPL_REAL *saved,
                                                         const MPL_REAL *dout, MPL_REAL *dqkv)
{
    mpl_status st = MPL_OK;
    MPL_SUF(mpl_attn_combiner_logsparse_ctx) c;
    MPL_CHECK_GOTO(ls_single(a, 1, &c), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_logsparse_chunk_summarize)(a, qkv, &c), fail);
    MPL_CHECK_GOTO(
        MPL_SUF(mpl_attn_combiner_logsparse_chunk_backward)(a, qkv, &c, saved, dout, dqkv), fail);
    MPL_CHECK_GOTO(MPL_SUF(mpl_attn_combiner_logsparse_chunk_backward_local)(a, qkv, &c, dqkv),
                   fail);
fail:
    ls_single_free(&c);
    return st;
}
