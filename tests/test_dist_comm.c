/* The SP building blocks on 1..4 ranks: chunk arithmetic, the process grid,
 * halos (including chunks shorter than the halo) and their return path,
 * forward and reverse exclusive scans, blocking and nonblocking
 * all-reduces. Inputs encode global positions or
 * are dyadic, so expected values are exact: tolerance 0. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/grid.h"
#include "dist/halo.h"
#include "testutil.h"

static mpl_comm *world;

static void test_dist_comm_chunks(void **s)
{
    (void)s;
    for (int64_t L = 1; L < 40; L++)
        for (int sp = 1; sp <= 5 && sp <= L; sp++) {
            int64_t prev_b = 0, mn = L, mx = 0;
            for (int p = 0; p < sp; p++) {
                int64_t a, b;
                mpl_grid_chunk(L, sp, p, &a, &b);
                assert_int_equal(a, prev_b);
                assert_true(b > a);
                mn = b - a < mn ? b - a : mn;
                mx = b - a > mx ? b - a : mx;
                prev_b = b;
            }
            assert_int_equal(prev_b, L);
            assert_true(mx - mn <= 1);
        }
}

static void test_dist_comm_grid(void **s)
{
    (void)s;
    const int n = mpl_comm_size(world);
    for (int sp = 1; sp <= n; sp++) {
        mpl_grid *g = NULL;
        mpl_status st = mpl_grid_create(world, sp, 0, &g);
        if (n % sp) {
            assert_int_equal(st, MPL_ERR_CONFIG);
            assert_null(g);
            mpl_err_clear();
            continue;
        }
        assert_int_equal(st, MPL_OK);
        assert_int_equal(mpl_comm_size(g->sp), sp);
        assert_int_equal(mpl_comm_size(g->dp), n / sp);
        assert_int_equal(mpl_comm_rank(g->sp), g->sp_rank);
        assert_int_equal(g->dp_rank * sp + g->sp_rank, mpl_comm_rank(world));
        mpl_grid_destroy(&g);
        assert_null(g);
    }
}

/* Row value: global row index g of sequence s, column c, exactly. */
static float enc(int64_t s, int64_t g, int64_t c) { return (float)(s * 100000 + g * 10 + c); }

static void check_halo(int64_t L, int64_t nb, int64_t na)
{
    const int sp = mpl_comm_size(world), p = mpl_comm_rank(world);
    const int64_t n_seq = 2, width = 3, stride = 5; /* 2 extra columns that must not move */
    int64_t a, b;
    mpl_grid_chunk(L, sp, p, &a, &b);
    const int64_t T = b - a;
    mpl_halo_plan *plan = NULL;
    assert_int_equal(mpl_halo_plan_create(L, sp, p, nb, na, &plan), MPL_OK);
    const int64_t npre = mpl_halo_plan_n_pre(plan), npost = mpl_halo_plan_n_post(plan);
    assert_int_equal(npre, a - (a - nb > 0 ? a - nb : 0));
    assert_int_equal(npost, (b + na < L ? b + na : L) - b);
    float *rows = calloc((size_t)(n_seq * T * stride), sizeof *rows);
    float *pre = calloc((size_t)(n_seq * npre * width + 1), sizeof *pre);
    float *post = calloc((size_t)(n_seq * npost * width + 1), sizeof *post);
    for (int64_t s = 0; s < n_seq; s++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < stride; c++) rows[(s * T + t) * stride + c] = enc(s, a + t, c);
    assert_int_equal(mpl_halo_exchange(world, plan, n_seq, width, rows, stride, pre, post), MPL_OK);
    int bad = 0;
    for (int64_t s = 0; s < n_seq; s++)
        for (int64_t c = 0; c < width; c++) {
            for (int64_t r = 0; r < npre; r++)
                bad += pre[(s * npre + r) * width + c] != enc(s, a - npre + r, c);
            for (int64_t r = 0; r < npost; r++)
                bad += post[(s * npost + r) * width + c] != enc(s, b + r, c);
        }
    /* Return: every halo row carries 1; the owner's row then counts the
     * ranks whose halo holds it, which is known in closed form. */
    float *drows = calloc((size_t)(n_seq * T * stride), sizeof *drows);
    for (int64_t i = 0; i < n_seq * npre * width; i++) pre[i] = 1;
    for (int64_t i = 0; i < n_seq * npost * width; i++) post[i] = 1;
    assert_int_equal(mpl_halo_return(world, plan, n_seq, width, pre, post, drows, stride), MPL_OK);
    for (int64_t s = 0; s < n_seq; s++)
        for (int64_t t = 0; t < T; t++) {
            int64_t g = a + t, want = 0;
            for (int q = 0; q < sp; q++) {
                int64_t qa, qb;
                mpl_grid_chunk(L, sp, q, &qa, &qb);
                if (q != p && g < qa && g >= qa - nb) want++;
                if (q != p && g >= qb && g < qb + na) want++;
            }
            for (int64_t c = 0; c < stride; c++)
                bad += drows[(s * T + t) * stride + c] != (c < width ? (float)want : 0.0f);
        }
    if (bad)
        printf("[rank %d] halo L=%lld before=%lld after=%lld: %d wrong values\n", p, (long long)L,
               (long long)nb, (long long)na, bad);
    assert_int_equal(bad, 0);
    mpl_halo_plan_destroy(&plan);
    free(rows), free(pre), free(post), free(drows);
}

static void test_dist_comm_halo(void **s)
{
    (void)s;
    const int sp = mpl_comm_size(world);
    const int64_t Ls[] = {4, 5, 7, 13, 64};
    for (size_t i = 0; i < sizeof Ls / sizeof Ls[0]; i++) {
        if (Ls[i] < sp) continue;
        check_halo(Ls[i], 3, 0);  /* causal band of 4: chunks may be shorter */
        check_halo(Ls[i], 3, 3);  /* bidirectional */
        check_halo(Ls[i], 0, 2);
        check_halo(Ls[i], 20, 20); /* wider than several chunks */
    }
}

static void test_dist_comm_scan(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world), p = mpl_comm_rank(world);
    const int64_t n = 37;
    uint64_t seed = mpl_test_seed();
    float *all = malloc((size_t)(P * n) * sizeof *all), *buf = malloc((size_t)n * sizeof *buf);
    for (int q = 0; q < P; q++) mpl_test_fill_dyadic(all + q * n, n, seed, (uint64_t)q);
    for (int rev = 0; rev < 2; rev++) {
        memcpy(buf, all + p * n, (size_t)n * sizeof *buf);
        assert_int_equal(mpl_comm_exscan_sum_f32(world, buf, n, rev), MPL_OK);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            float want = 0;
            for (int q = 0; q < P; q++)
                if (rev ? q > p : q < p) want += all[q * n + i];
            bad += buf[i] != want;
        }
        assert_int_equal(bad, 0);
    }
    float *gat = malloc((size_t)(P * n) * sizeof *gat);
    assert_int_equal(mpl_comm_allgather_f32(world, all + p * n, n, gat), MPL_OK);
    assert_memory_equal(gat, all, (size_t)(P * n) * sizeof *gat);
    mpl_comm_bytes by;
    mpl_comm_bytes_get(world, &by);
    assert_true(by.scan >= 2 * n * 4);
    assert_true(by.allgather >= n * 4);
    free(all), free(buf), free(gat);
}

/* Nonblocking sum and max, posted together, and the blocking max: every
 * rank gets the exact result (dyadic inputs: sums exact in any order). */
static void test_dist_comm_iallreduce(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world), p = mpl_comm_rank(world);
    const int64_t n = 41;
    const uint64_t seed = mpl_test_seed();
    float *all = malloc((size_t)(P * n) * sizeof *all), *sum = malloc((size_t)n * sizeof *sum),
          *mx = malloc((size_t)n * sizeof *mx), *mx2 = malloc((size_t)n * sizeof *mx2);
    for (int q = 0; q < P; q++) mpl_test_fill_dyadic(all + q * n, n, seed, 50 + (uint64_t)q);
    memcpy(sum, all + p * n, (size_t)n * sizeof *sum);
    memcpy(mx, all + p * n, (size_t)n * sizeof *mx);
    memcpy(mx2, all + p * n, (size_t)n * sizeof *mx2);
    if (p == 0) mx[3] = -INFINITY; /* a neutral element loses to every value */
    mpl_comm_bytes b0, b1;
    mpl_comm_bytes_get(world, &b0);
    mpl_comm_reqs *r = NULL;
    assert_int_equal(mpl_comm_reqs_create(&r), MPL_OK);
    assert_int_equal(mpl_comm_iallreduce_f32(world, sum, n, MPL_COMM_OP_SUM, r), MPL_OK);
    assert_int_equal(mpl_comm_iallreduce_f32(world, mx, n, MPL_COMM_OP_MAX, r), MPL_OK);
    assert_int_equal(mpl_comm_waitall(r), MPL_OK);
    mpl_comm_reqs_destroy(&r);
    assert_int_equal(mpl_comm_allreduce_max_f32(world, mx2, n), MPL_OK);
    mpl_comm_bytes_get(world, &b1);
    assert_int_equal(b1.allreduce - b0.allreduce, 3 * n * 4);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float ws = 0, wm = -INFINITY, wm2 = -INFINITY;
        for (int q = 0; q < P; q++) {
            const float v = all[q * n + i];
            ws += v;
            wm2 = v > wm2 ? v : wm2;
            if (!(q == 0 && i == 3)) wm = v > wm ? v : wm;
        }
        bad += sum[i] != ws || mx[i] != wm || mx2[i] != wm2;
    }
    assert_int_equal(bad, 0);
    free(all), free(sum), free(mx), free(mx2);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (mpl_comm_create_world(&world) != MPL_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dist_comm_chunks),
        cmocka_unit_test(test_dist_comm_grid),
        cmocka_unit_test(test_dist_comm_halo),
        cmocka_unit_test(test_dist_comm_scan),
        cmocka_unit_test(test_dist_comm_iallreduce),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mpl_comm_destroy(&world);
    MPI_Finalize();
    return rc;
}
