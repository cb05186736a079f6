/* Geometry of Combiner-Logsparse chunks (combiner.h): levels, the local and
 * context blocks of a chunk, and the plan that numbers the distinct
 * context blocks of a whole group. Precision-free and separate from the
 * templates, so the kernels, the distributed code, the tests and the
 * benchmark share one definition of which blocks cross chunk borders. */
#include <stdlib.h>

#include "combiner.h"

int mpl_attn_combiner_logsparse_levels(int64_t L)
{
    int n = 0;
    for (int64_t x = L - 1; x > 0; x >>= 1) n++;
    return n;
}

/* The past block a chunk [a, e) needs at level l that starts before a.
 * Queries i in the chunk with bit l set use block (i >> l) - 1; with
 * x = a >> l only the first of them can reach before a:
 * x odd: query a itself uses block x - 1 (it ends at or before a);
 * x even: the first such query is (x+1) 2^l, using block x, which starts
 * before a unless a is aligned. Every later one starts after a. */
static int ctx_past(int64_t a, int64_t e, int l, int64_t *b)
{
    const int64_t x = a >> l;
    if (x & 1) {
        *b = x - 1;
        return 1;
    }
    if ((a & (((int64_t)1 << l) - 1)) != 0 && ((x + 1) << l) < e) {
        *b = x;
        return 1;
    }
    return 0;
}

/* The future block the chunk needs at level l that ends after e (blocks
 * are cut at L). Queries i with bit l clear use block (i >> l) + 1; with
 * y = (e-1) >> l only the last of them can reach past e:
 * y even: query e-1 itself uses block y + 1, which starts at or after e
 * (none when it starts at or after L);
 * y odd: the last such query is y 2^l - 1 (in the chunk when y 2^l > a),
 * using block y, which holds e-1 and ends after e unless it ends there.
 * Every earlier one ends before e. */
static int ctx_future(int64_t L, int64_t a, int64_t e, int l, int64_t *b)
{
    const int64_t y = (e - 1) >> l;
    if (!(y & 1)) {
        *b = y + 1;
        return ((y + 1) << l) < L;
    }
    const int64_t end = (y + 1) << l;
    if ((y << l) > a && (end < L ? end : L) > e) {
        *b = y;
        return 1;
    }
    return 0;
}

int mpl_attn_combiner_logsparse_ctx_block(int64_t L, int64_t a, int64_t e, int dir, int level,
                                          int64_t *t0, int64_t *t1)
{
    if (e <= a || level < 0 || level >= mpl_attn_combiner_logsparse_levels(L)) return 0;
    int64_t b;
    if (!(dir ? ctx_future(L, a, e, level, &b) : ctx_past(a, e, level, &b))) return 0;
    const int64_t end = (b + 1) << level;
    *t0 = b << level;
    *t1 = end < L ? end : L;
    return 1;
}

void mpl_attn_combiner_logsparse_local(int64_t L, int64_t a, int64_t e, int dir, int level,
                                       int64_t *b_lo, int64_t *n)
{
    *b_lo = 0, *n = 0;
    if (e <= a) return;
    int64_t lo, hi;
    if (!dir) {
        /* even b with b 2^l >= a and (b+1) 2^l < e (a query after it) */
        lo = (a + ((int64_t)1 << level) - 1) >> level;
        lo += lo & 1;
        hi = ((e - 1) >> level) - 1;
        hi -= hi & 1;
    } else {
        /* odd b with b 2^l > a (a query before it) and the block, cut at
         * L, ending at or before e */
        lo = (a >> level) + 1;
        lo += !(lo & 1);
        hi = e == L ? (L - 1) >> level : (e >> level) - 1;
        hi -= !(hi & 1);
    }
    *b_lo = lo;
    *n = hi >= lo ? (hi - lo) / 2 + 1 : 0;
}

int64_t mpl_attn_combiner_logsparse_n_tab(const mpl_attn_combiner_args *a)
{
    const int n_lev = mpl_attn_combiner_logsparse_levels(a->seq_len);
    int64_t n = 2 * (int64_t)n_lev;
    for (int dir = 0; dir < (a->causal ? 1 : 2); dir++)
        for (int l = 0; l < n_lev; l++) {
            int64_t b_lo, k;
            mpl_attn_combiner_logsparse_local(a->seq_len, a->pos0, a->pos0 + a->n_tok, dir, l,
                                              &b_lo, &k);
            n += k;
        }
    return n;
}

mpl_attn_combiner_logsparse_widths mpl_attn_combiner_logsparse_widths_of(
    const mpl_attn_combiner_args *a)
{
    const int64_t H = a->n_head, HD = H * a->head_dim;
    return (mpl_attn_combiner_logsparse_widths){.fmax = 2 * HD + 1, .flog = H,
                                                .fsum = HD + H, .bsum = 4 * HD, .ba = H,
                                                .bdq = HD};
}

mpl_status mpl_attn_combiner_logsparse_plan_create(int64_t L, int causal, int n_chunk,
                                                   const int64_t *pos,
                                                   mpl_attn_combiner_logsparse_plan **out)
{
    *out = NULL;
    if (n_chunk < 1 || pos[0] != 0 || pos[n_chunk] != L)
        return mpl_err(MPL_ERR_ARG, "logsparse plan: %d chunks must cover [0, L=%lld)", n_chunk,
                       (long long)L);
    for (int p = 0; p < n_chunk; p++)
        if (pos[p + 1] < pos[p] || (L > 0 && pos[p + 1] == pos[p]))
            return mpl_err(MPL_ERR_ARG, "logsparse plan: chunk %d is [%lld, %lld)", p,
                           (long long)pos[p], (long long)pos[p + 1]);
    mpl_attn_combiner_logsparse_plan *pl;
    MPL_ALLOC(pl, 1);
    pl->n_lev = mpl_attn_combiner_logsparse_levels(L);
    pl->n_chunk = n_chunk;
    const int64_t n_use = (int64_t)n_chunk * 2 * pl->n_lev;
    pl->use = malloc((size_t)(n_use + 1) * sizeof *pl->use);
    pl->span = malloc((size_t)(2 * n_use + 1) * sizeof *pl->span);
    if (!pl->use || !pl->span) {
        mpl_attn_combiner_logsparse_plan_destroy(&pl);
        return mpl_err(MPL_ERR_NOMEM, "out of memory for a logsparse plan");
    }
    for (int64_t i = 0; i < n_use; i++) pl->use[i] = -1;
    for (int dir = 0; dir < (causal ? 1 : 2); dir++)
        for (int l = 0; l < pl->n_lev; l++) {
            const int64_t first = pl->n_slot; /* slots of this (dir, level) */
            for (int p = 0; p < n_chunk; p++) {
                int64_t t0, t1, j;
                if (!mpl_attn_combiner_logsparse_ctx_block(L, pos[p], pos[p + 1], dir, l, &t0, &t1))
                    continue;
                for (j = first; j < pl->n_slot; j++)
                    if (pl->span[2 * j] == t0) break;
                if (j == pl->n_slot) {
                    pl->span[2 * j] = t0, pl->span[2 * j + 1] = t1;
                    pl->n_slot++;
                }
                pl->use[((int64_t)p * 2 + dir) * pl->n_lev + l] = j;
            }
        }
    *out = pl;
    return MPL_OK;
}

void mpl_attn_combiner_logsparse_plan_destroy(mpl_attn_combiner_logsparse_plan **p)
{
    if (!p || !*p) return;
    free((*p)->use);
    free((*p)->span);
    free(*p);
    *p = NULL;
}
