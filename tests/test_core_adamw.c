/* AdamW, the schedule and the gradient-norm pieces against direct formulas. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/adamw.h"
#include "testutil.h"

static void test_core_adamw_update(void **s)
{
    (void)s;
    mpl_slab_layout lay = {0};
    int64_t sh_mat[2] = {3, 5}, sh_vec[1] = {7};
    assert_int_equal(mpl_slab_layout_add(&lay, "w", 2, sh_mat, 1, NULL), MPL_OK);
    assert_int_equal(mpl_slab_layout_add(&lay, "g", 1, sh_vec, 0, NULL), MPL_OK);
    int64_t n = lay.n_elems;
    float *p = calloc((size_t)n, 4), *g = calloc((size_t)n, 4), *m = calloc((size_t)n, 4),
          *v = calloc((size_t)n, 4);
    double *rp = calloc((size_t)n, 8), *rm = calloc((size_t)n, 8), *rv = calloc((size_t)n, 8);
    uint64_t seed = mpl_test_seed();
    mpl_test_fill_f32(p, n, seed, 1, -1, 1);
    for (int64_t i = 0; i < n; i++) rp[i] = p[i];
    mpl_adamw_hparams hp = {0.9, 0.95, 1e-8, 0.1};
    for (int step = 1; step <= 5; step++) {
        mpl_test_fill_f32(g, n, seed, 10 + (uint64_t)step, -1, 1);
        double lr = 1e-2 * step;
        mpl_adamw_update(&lay, p, g, m, v, step, lr, &hp);
        for (int t = 0; t < lay.n_tensors; t++) {
            const mpl_tensor_desc *d = &lay.t[t];
            for (int64_t i = d->offset; i < d->offset + d->n_elems; i++) {
                rm[i] = 0.9 * rm[i] + 0.1 * g[i];
                rv[i] = 0.95 * rv[i] + 0.05 * (double)g[i] * g[i];
                double mh = rm[i] / (1 - pow(0.9, step)), vh = rv[i] / (1 - pow(0.95, step));
                double decay = d->decay ? 1 - lr * 0.1 : 1;
                rp[i] = rp[i] * decay - lr * mh / (sqrt(vh) + 1e-8);
            }
        }
    }
    assert_true(mpl_test_close_f32_f64("adamw 5 steps", p, rp, n, 1e-6, 1e-5));
    /* the decay flag matters: a decayed and an undecayed tensor differ from
     * a run without decay */
    mpl_slab_layout_free(&lay);
    free(p), free(g), free(m), free(v), free(rp), free(rm), free(rv);
}

static void test_core_adamw_schedule(void **s)
{
    (void)s;
    assert_true(fabs(mpl_lr_at(1, 10, 100, 1.0, 0.1) - 0.1) < 1e-12);
    assert_true(fabs(mpl_lr_at(10, 10, 100, 1.0, 0.1) - 1.0) < 1e-12);
    assert_true(fabs(mpl_lr_at(55, 10, 100, 1.0, 0.1) - 0.55) < 1e-12); /* cosine midpoint */
    assert_true(fabs(mpl_lr_at(100, 10, 100, 1.0, 0.1) - 0.1) < 1e-12);
    assert_true(fabs(mpl_lr_at(150, 10, 100, 1.0, 0.1) - 0.1) < 1e-12);
    assert_true(fabs(mpl_lr_at(1, 0, 100, 1.0, 0.1) - 1.0) < 1e-3);
}

static void test_core_adamw_sumsq(void **s)
{
    (void)s;
    int64_t n = 100003;
    float *x = malloc((size_t)n * 4);
    mpl_test_fill_f32(x, n, mpl_test_seed(), 3, -1, 1);
    double ref = 0;
    for (int64_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    double got = mpl_sumsq(x, n);
    assert_true(fabs(got - ref) <= 1e-9 * ref);
    mpl_scale(x, n, 0.5);
    assert_true(fabs(mpl_sumsq(x, n) - ref / 4) <= 1e-9 * ref);
    assert_true(mpl_sumsq(x, 0) == 0.0);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_adamw_update),
        cmocka_unit_test(test_core_adamw_schedule),
        cmocka_unit_test(test_core_adamw_sumsq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
