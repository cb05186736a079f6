/* Combiner-Logsparse on chunks (attention/combiner.h, chunk-local API):
 * the context blocks and local blocks of a chunk against a brute-force
 * enumeration of its queries' blocks, the plan of a group, and chunked
 * evaluation by hand (2-5 unequal pieces, pieces shorter than a block,
 * padding, exact max-pool ties across pieces), the rounds combined here
 * in piece order, equal to the one-piece result in fp64; with a padded
 * tail that spans pieces, also equal to the unpadded sequence alone. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/combiner.h"

/* Every block query i uses in direction dir: level l, global [t0, t1).
 * Listed from combiner.h's definition: past (dir 0) the left sibling for
 * every set bit l of i, future (dir 1) the right sibling for every clear
 * bit l below Lambda, cut at L and dropped when it starts at or after L. */
static int blocks_of(int64_t L, int64_t i, int dir, int *lev, int64_t *t0, int64_t *t1)
{
    int n = 0, n_lev = 0;
    while (((int64_t)1 << n_lev) < L) n_lev++;
    for (int l = 0; l < n_lev; l++) {
        const int64_t half = (int64_t)1 << l, p0 = i / (2 * half) * (2 * half);
        const int set = i / half % 2 == 1;
        if (set != !dir) continue;
        const int64_t s = dir ? p0 + half : p0, e = dir ? p0 + 2 * half : p0 + half;
        if (s >= L) continue;
        lev[n] = l, t0[n] = s, t1[n] = e < L ? e : L;
        n++;
    }
    return n;
}

/* For chunk [a, e): the blocks its queries use that reach outside it are
 * exactly the context blocks (one per direction and level at most), and
 * those inside are exactly the local ones. */
static void check_geometry(int64_t L, int64_t a, int64_t e)
{
    const int n_lev = mpl_attn_combiner_logsparse_levels(L);
    for (int dir = 0; dir < 2; dir++)
        for (int l = 0; l < n_lev; l++) {
            int64_t c0 = -1, c1 = -1, seen_in = 0, b_lo, n_loc;
            uint8_t used[1024] = {0};
            assert_true(L <= 1024);
            for (int64_t i = a; i < e; i++) {
                int lev[64];
                int64_t t0[64], t1[64];
                const int n = blocks_of(L, i, dir, lev, t0, t1);
                for (int k = 0; k < n; k++) {
                    if (lev[k] != l) continue;
                    if (t0[k] < a || t1[k] > e) { /* context */
                        assert_true(c0 < 0 || (c0 == t0[k] && c1 == t1[k]));
                        c0 = t0[k], c1 = t1[k];
                    } else if (!used[t0[k]]) {
                        used[t0[k]] = 1;
                        seen_in++;
                    }
                }
            }
            int64_t t0, t1;
            const int got = mpl_attn_combiner_logsparse_ctx_block(L, a, e, dir, l, &t0, &t1);
            if (got != (c0 >= 0) || (got && (t0 != c0 || t1 != c1)))
                fail_msg("ctx block L=%lld [%lld,%lld) dir=%d l=%d: got %d [%lld,%lld), want "
                         "[%lld,%lld)", (long long)L, (long long)a, (long long)e, dir, l, got,
                         (long long)t0, (long long)t1, (long long)c0, (long long)c1);
            mpl_attn_combiner_logsparse_local(L, a, e, dir, l, &b_lo, &n_loc);
            assert_int_equal(n_loc, seen_in);
            for (int64_t k = 0; k < n_loc; k++) {
                const int64_t b = b_lo + 2 * k;
                assert_true((b & 1) == dir && used[b << l]);
            }
        }
}

static void test_attention_combiner_chunks_geometry(void **state)
{
    (void)state;
    int n = 0;
    for (int64_t L = 1; L <= 70; L++)
        for (int64_t a = 0; a < L; a++)
            for (int64_t e = a + 1; e <= L; e++, n++) check_geometry(L, a, e);
    printf("attn_combiner_chunks geometry: %d chunks of L = 1..70 OK\n", n);
    /* a plan: every chunk's use table points at its context block, slots
     * are distinct per (direction, level) and bounded by (P-1) Lambda */
    const int64_t pos[] = {0, 5, 9, 13, 17};
    mpl_attn_combiner_logsparse_plan *pl = NULL;
    assert_int_equal(mpl_attn_combiner_logsparse_plan_create(17, 0, 4, pos, &pl), MPL_OK);
    assert_int_equal(pl->n_lev, 5);
    assert_true(pl->n_slot <= 2 * 3 * 5);
    for (int p = 0; p < 4; p++)
        for (int dir = 0; dir < 2; dir++)
            for (int l = 0; l < 5; l++) {
                int64_t t0, t1;
                const int64_t j = pl->use[(p * 2 + dir) * 5 + l];
                const int got = mpl_attn_combiner_logsparse_ctx_block(17, pos[p], pos[p + 1], dir,
                                                                      l, &t0, &t1);
                assert_int_equal(got, j >= 0);
                if (got) assert_true(pl->span[2 * j] == t0 && pl->span[2 * j + 1] == t1);
            }
    /* two chunks share a slot exactly when they need the same block */
    for (int dir = 0; dir < 2; dir++)
        for (int l = 0; l < 5; l++)
            for (int p = 0; p < 4; p++)
                for (int q = 0; q < p; q++) {
                    const int64_t jp = pl->use[(p * 2 + dir) * 5 + l], jq = pl->use[(q * 2 + dir) * 5 + l];
                    if (jp < 0 || jq < 0) continue;
                    assert_int_equal(jp == jq, pl->span[2 * jp] == pl->span[2 * jq]);
                }
    /* query 16 of the last chunk uses [0, 16), which meets every chunk;
     * the first chunk's queries use the future blocks [8, 16) and [16, 17)
     * (cut at L), and the last chunk none */
    const int64_t top = pl->use[(3 * 2 + 0) * 5 + 4];
    assert_true(top >= 0 && pl->span[2 * top] == 0 && pl->span[2 * top + 1] == 16);
    const int64_t f3 = pl->use[(0 * 2 + 1) * 5 + 3], f4 = pl->use[(0 * 2 + 1) * 5 + 4];
    assert_true(f3 >= 0 && pl->span[2 * f3] == 8 && pl->span[2 * f3 + 1] == 16);
    assert_true(f4 >= 0 && pl->span[2 * f4] == 16 && pl->span[2 * f4 + 1] == 17);
    for (int l = 0; l < 5; l++) assert_int_equal(pl->use[(3 * 2 + 1) * 5 + l], -1);
    mpl_attn_combiner_logsparse_plan_destroy(&pl);
    assert_null(pl);
    const int64_t bad[] = {0, 9, 9, 17};
    mpl_err_clear();
    assert_int_equal(mpl_attn_combiner_logsparse_plan_create(17, 1, 3, bad, &pl), MPL_ERR_ARG);
    printf("attn_combiner_chunks plan error: %s\n", mpl_err_cause());
    mpl_err_clear();
}

/* Mask variant 3: sequence s is real up to real_len (then padded to L, the
 * padding spanning piece borders), with one padded token inside. */
static int64_t real_len(int64_t L, int64_t s) { return s == 0 ? L - 5 : (L + 1) / 2; }

/* Mask variant 3: the chunked result on the real prefix of each sequence
 * equals one piece of that sequence alone, unpadded (its outputs and the
 * gradients of its rows); the padded rows get no gradient. */
static void check_unpadded(const mpl_attn_combiner_args *a, const double *qkv,
                           const double *dout, const double *outc, const double *dqc,
                           const char *tag)
{
    const int64_t L = a->seq_len, H = a->n_head, HD = H * a->head_dim, W = 3 * HD;
    for (int64_t s = 0; s < a->n_seq; s++) {
        const int64_t n = real_len(L, s);
        uint8_t mk[64];
        assert_true(n <= 64);
        for (int64_t t = 0; t < n; t++) mk[t] = a->mask[s * L + t];
        mpl_attn_combiner_args u = *a;
        u.n_seq = 1, u.n_tok = u.seq_len = n, u.mask = mk;
        double *o = mpl_test_dalloc(n * HD), *sv = mpl_test_dalloc(H * n),
               *dx = mpl_test_dalloc(n * W);
        assert_int_equal(mpl_attn_combiner_logsparse_forward_f64(&u, qkv + s * L * W, o, sv), MPL_OK);
        assert_int_equal(mpl_attn_combiner_logsparse_backward_f64(&u, qkv + s * L * W, sv,
                                                                  dout + s * L * HD, dx), MPL_OK);
        char what[320];
        snprintf(what, sizeof what, "%.200s seq=%lld unpadded %lld of %lld: fwd", tag, (long long)s,
                 (long long)n, (long long)L);
        assert_true(mpl_test_close_f64(what, outc + s * L * HD, o, n * HD, 1e-14, 1e-12));
        snprintf(what, sizeof what, "%.200s seq=%lld unpadded %lld of %lld: bwd", tag, (long long)s,
                 (long long)n, (long long)L);
        assert_true(mpl_test_close_f64(what, dqc + s * L * W, dx, n * W, 1e-14, 1e-12));
        for (int64_t i = n * W; i < L * W; i++) assert_true(dqc[s * L * W + i] == 0);
        free(o), free(sv), free(dx);
    }
}

/* One piece of the chunked evaluation. */
typedef struct piece {
    mpl_attn_combiner_args a;
    mpl_attn_combiner_logsparse_ctx_f64 c;
    double *x, *o, *sv, *go, *dx;
    uint8_t *mk;
} piece;

/* Combine statistic `off` (a member of the context, n reals) over the
 * pieces in piece order, and give every piece the result. */
static void combine(piece *pc, int n_piece, size_t off, int64_t n, int is_max)
{
    double *acc = mpl_test_dalloc(n);
    for (int p = 0; p < n_piece; p++) {
        const double *b = *(double **)((char *)&pc[p].c + off);
        for (int64_t i = 0; i < n; i++)
            acc[i] = p == 0 ? b[i] : is_max ? fmax(acc[i], b[i]) : acc[i] + b[i];
    }
    for (int p = 0; p < n_piece; p++)
        memcpy(*(double **)((char *)&pc[p].c + off), acc, (size_t)n * sizeof *acc);
    free(acc);
}

static void pieces_all(piece *pc, int n_piece, mpl_attn_ls_phase ph, int rows)
{
    for (int p = 0; p < n_piece; p++)
        assert_int_equal(mpl_attn_combiner_logsparse_chunk_pieces_f64(&pc[p].a, pc[p].x, &pc[p].c,
                                                                      ph, rows ? pc[p].dx : NULL),
                         MPL_OK);
}

#define OFF(m) offsetof(mpl_attn_combiner_logsparse_ctx_f64, m)

static void run_chunked(int64_t L, int causal, int mv, int ties, const int64_t *sizes,
                        int n_piece)
{
    const int64_t S = 2, H = 2, d = 4, HD = H * d, W = 3 * HD;
    const uint64_t seed = mpl_test_seed();
    uint8_t *mask = malloc((size_t)(S * L));
    assert_non_null(mask);
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = 0; t < L; t++) /* 1: scattered; 2: block [4, 8) and more;
                                           3: padded tails (real_len) */
            mask[s * L + t] = mv == 0 ? 1 : mv == 1 ? (s == 0 ? t % 3 != 1 : t < L - 2 || t == 0)
                            : mv == 2 ? (s == 1 || ((t < 4 || t >= 8) && t % 5 != 3))
                                      : t < real_len(L, s) && t != 3;
    mpl_attn_combiner_args a = {.n_seq = S, .n_tok = L, .seq_len = L, .n_head = (int)H,
                                .head_dim = (int)d, .causal = causal, .mask = mask};
    double *qkv = mpl_test_dalloc(S * L * W), *dout = mpl_test_dalloc(S * L * HD);
    mpl_test_fill_f64(qkv, S * L * W, seed, 700 + (uint64_t)L, -1.5, 1.5);
    mpl_test_fill_f64(dout, S * L * HD, seed, 701, -1, 1);
    if (ties) /* rows 2, 9, 14 share q and k: max-pool ties across pieces */
        for (int64_t s = 0; s < S; s++)
            for (int r = 9; r <= 14; r += 5)
                if (r < L) memcpy(qkv + (s * L + r) * W, qkv + (s * L + 2) * W, (size_t)(2 * HD) * sizeof *qkv);
    double *out1 = mpl_test_dalloc(S * L * HD), *sv1 = mpl_test_dalloc(S * H * L),
           *dq1 = mpl_test_dalloc(S * L * W);
    assert_int_equal(mpl_attn_combiner_logsparse_forward_f64(&a, qkv, out1, sv1), MPL_OK);
    assert_int_equal(mpl_attn_combiner_logsparse_backward_f64(&a, qkv, sv1, dout, dq1), MPL_OK);

    int64_t pos[16] = {0};
    for (int p = 0; p < n_piece; p++) pos[p + 1] = pos[p] + sizes[p];
    assert_int_equal(pos[n_piece], L);
    mpl_attn_combiner_logsparse_plan *pl = NULL;
    assert_int_equal(mpl_attn_combiner_logsparse_plan_create(L, causal, n_piece, pos, &pl), MPL_OK);
    const mpl_attn_combiner_logsparse_widths wd = mpl_attn_combiner_logsparse_widths_of(&a);
    const int64_t ns = S * pl->n_slot;
    piece pc[16];
    for (int p = 0; p < n_piece; p++) {
        piece *q = &pc[p];
        const int64_t n = pos[p + 1] - pos[p];
        q->a = a, q->a.pos0 = pos[p], q->a.n_tok = n;
        q->mk = malloc((size_t)(S * n));
        q->x = mpl_test_dalloc(S * n * W), q->o = mpl_test_dalloc(S * n * HD);
        q->sv = mpl_test_dalloc(S * H * n), q->go = mpl_test_dalloc(S * n * HD);
        q->dx = mpl_test_dalloc(S * n * W);
        for (int64_t s = 0; s < S; s++) {
            memcpy(q->x + s * n * W, qkv + (s * L + pos[p]) * W, (size_t)(n * W) * sizeof *qkv);
            memcpy(q->go + s * n * HD, dout + (s * L + pos[p]) * HD, (size_t)(n * HD) * sizeof *dout);
            memcpy(q->mk + s * n, mask + s * L + pos[p], (size_t)n);
        }
        q->a.mask = q->mk;
        const int64_t nt = S * H * mpl_attn_combiner_logsparse_n_tab(&q->a);
        q->c = (mpl_attn_combiner_logsparse_ctx_f64){
            .n_slot = pl->n_slot, .span = pl->span, .use = pl->use + p * 2 * pl->n_lev,
            .fmax = mpl_test_dalloc(ns * wd.fmax), .flog = mpl_test_dalloc(ns * wd.flog),
            .fsum = mpl_test_dalloc(ns * wd.fsum), .bsum = mpl_test_dalloc(ns * wd.bsum),
            .ba = mpl_test_dalloc(ns * wd.ba), .bdq = mpl_test_dalloc(ns * wd.bdq),
            .tab = mpl_test_dalloc(nt * 2 * d), .tab_present = calloc((size_t)nt + 1, 1),
            .dtab = mpl_test_dalloc(nt * 2 * d)};
    }
    /* forward: maxima, local summaries, max logit, sums, queries */
    pieces_all(pc, n_piece, MPL_ATTN_LS_MAXIMA, 0);
    combine(pc, n_piece, OFF(fmax), ns * wd.fmax, 1);
    for (int p = 0; p < n_piece; p++)
        assert_int_equal(mpl_attn_combiner_logsparse_chunk_summarize_f64(&pc[p].a, pc[p].x, &pc[p].c), MPL_OK);
    pieces_all(pc, n_piece, MPL_ATTN_LS_LOGIT, 0);
    combine(pc, n_piece, OFF(flog), ns * wd.flog, 1);
    pieces_all(pc, n_piece, MPL_ATTN_LS_SUMS, 0);
    combine(pc, n_piece, OFF(fsum), ns * wd.fsum, 0);
    for (int p = 0; p < n_piece; p++)
        assert_int_equal(mpl_attn_combiner_logsparse_chunk_forward_f64(&pc[p].a, pc[p].x, &pc[p].c,
                                                                       pc[p].o, pc[p].sv), MPL_OK);
    /* backward */
    for (int p = 0; p < n_piece; p++) {
        assert_int_equal(mpl_attn_combiner_logsparse_chunk_backward_f64(&pc[p].a, pc[p].x, &pc[p].c,
                                                                        pc[p].sv, pc[p].go, pc[p].dx),
                         MPL_OK);
    }
    pieces_all(pc, n_piece, MPL_ATTN_LS_TIES, 0);
    combine(pc, n_piece, OFF(bsum), ns * wd.bsum, 0);
    for (int p = 0; p < n_piece; p++)
        assert_int_equal(mpl_attn_combiner_logsparse_chunk_backward_local_f64(&pc[p].a, pc[p].x,
                                                                              &pc[p].c, pc[p].dx), MPL_OK);
    pieces_all(pc, n_piece, MPL_ATTN_LS_A, 0);
    combine(pc, n_piece, OFF(ba), ns * wd.ba, 0);
    pieces_all(pc, n_piece, MPL_ATTN_LS_DQ, 1);
    combine(pc, n_piece, OFF(bdq), ns * wd.bdq, 0);
    pieces_all(pc, n_piece, MPL_ATTN_LS_POOL, 1);

    double *outc = mpl_test_dalloc(S * L * HD), *dqc = mpl_test_dalloc(S * L * W);
    for (int p = 0; p < n_piece; p++) {
        const int64_t n = pos[p + 1] - pos[p];
        for (int64_t s = 0; s < S; s++) {
            memcpy(outc + (s * L + pos[p]) * HD, pc[p].o + s * n * HD, (size_t)(n * HD) * sizeof *outc);
            memcpy(dqc + (s * L + pos[p]) * W, pc[p].dx + s * n * W, (size_t)(n * W) * sizeof *dqc);
        }
    }
    char sz[64] = "", what[200];
    for (int p = 0, len = 0; p < n_piece; p++)
        len += snprintf(sz + len, sizeof sz - (size_t)len, "%s%lld", p ? "," : "", (long long)sizes[p]);
    snprintf(what, sizeof what, "attn_logsparse_chunked fwd L=%lld %s mask=%d ties=%d slots=%lld pieces=%s",
             (long long)L, causal ? "causal" : "bidir", mv, ties, (long long)pl->n_slot, sz);
    assert_true(mpl_test_close_f64(what, outc, out1, S * L * HD, 1e-14, 1e-12));
    snprintf(what, sizeof what, "attn_logsparse_chunked bwd L=%lld %s mask=%d ties=%d slots=%lld pieces=%s",
             (long long)L, causal ? "causal" : "bidir", mv, ties, (long long)pl->n_slot, sz);
    assert_true(mpl_test_close_f64(what, dqc, dq1, S * L * W, 1e-14, 1e-12));
    if (mv == 3) check_unpadded(&a, qkv, dout, outc, dqc, what);
    if (ties && L > 14) { /* the tied rows' dq are the one-piece split, and nonzero */
        int nonzero = 0;
        for (int64_t c = 0; c < d; c++) nonzero += dqc[2 * W + c] != 0;
        assert_true(nonzero > 0);
    }
    for (int p = 0; p < n_piece; p++) {
        piece *q = &pc[p];
        free(q->x), free(q->o), free(q->sv), free(q->go), free(q->dx), free(q->mk);
        free(q->c.fmax), free(q->c.flog), free(q->c.fsum), free(q->c.bsum), free(q->c.ba);
        free(q->c.bdq), free(q->c.tab), free(q->c.tab_present), free(q->c.dtab);
    }
    mpl_attn_combiner_logsparse_plan_destroy(&pl);
    free(qkv), free(dout), free(out1), free(sv1), free(dq1), free(outc), free(dqc), free(mask);
}

static void test_attention_combiner_chunks_logsparse(void **state)
{
    (void)state;
    const int64_t p1[] = {3, 9, 2, 6, 3}; /* L = 23: short and misaligned pieces */
    const int64_t p2[] = {11, 12};
    const int64_t p3[] = {1, 1, 5, 16};
    const int64_t p4[] = {5, 4, 4, 4};    /* L = 17 = 2^4 + 1: [0, 16) meets every piece */
    const int64_t p5[] = {16, 1};
    const int64_t p6[] = {1, 16};
    const int64_t p7[] = {2, 30, 1};      /* L = 33 */
    const int64_t p8[] = {7, 9};          /* L = 16 */
    for (int causal = 0; causal <= 1; causal++)
        for (int mv = 0; mv <= 3; mv++) {
            run_chunked(23, causal, mv, 0, p1, 5);
            run_chunked(23, causal, mv, mv == 0, p2, 2);
            run_chunked(23, causal, mv, 0, p3, 4);
            run_chunked(17, causal, mv, mv != 1, p4, 4);
            run_chunked(17, causal, mv, 0, p5, 2);
            run_chunked(17, causal, mv, 0, p6, 2);
            run_chunked(33, causal, mv, 1, p7, 3);
            run_chunked(16, causal, mv, 0, p8, 2);
        }
}

int main(void)
{
    mpl_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_combiner_chunks_geometry),
        cmocka_unit_test(test_attention_combiner_chunks_logsparse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
