/* Shared test helpers (see testutil.h). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"

double *mpl_test_dalloc(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    assert_non_null(p);
    return p;
}

float *mpl_test_falloc(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    assert_non_null(p);
    return p;
}

float *mpl_test_to_f32(const double *x, int64_t n)
{
    float *p = mpl_test_falloc(n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)x[i];
    return p;
}

void mpl_test_rope_ref(double *x, int d, double pos, double theta)
{
    for (int c = 0; c < d / 2; c++) {
        const double ang = pos * pow(theta, -2.0 * c / d);
        const double a = x[c], b = x[c + d / 2];
        x[c] = cos(ang) * a - sin(ang) * b;
        x[c + d / 2] = sin(ang) * a + cos(ang) * b;
    }
}

uint64_t mpl_test_seed(void)
{
    static int printed;
    const char *s = getenv("MPL_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : 42;
    if (!printed) {
        printf("# seed=%llu (set MPL_TEST_SEED to change)\n", (unsigned long long)seed);
        printed = 1;
    }
    return seed;
}

void mpl_test_fill_f64(double *x, int64_t n, uint64_t seed, uint64_t stream, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * mpl_philox_uniform(seed, stream, (uint64_t)i);
}

void mpl_test_fill_f32(float *x, int64_t n, uint64_t seed, uint64_t stream, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * mpl_philox_uniform(seed, stream, (uint64_t)i));
}

void mpl_test_fill_dyadic(float *x, int64_t n, uint64_t seed, uint64_t stream)
{
    for (int64_t i = 0; i < n; i++) {
        int k = (int)(mpl_philox_uniform(seed, stream, (uint64_t)i) * 128.0) - 64;
        x[i] = (float)k / 64.0f;
    }
}

static int close_generic(const char *what, int64_t n, double atol, double rtol,
                         double (*got)(const void *, int64_t), const void *g,
                         double (*ref)(const void *, int64_t), const void *r)
{
    double num = 0, den = 0, worst = 0;
    int64_t worst_i = -1, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = got(g, i), b = ref(r, i);
        if (isnan(b) || isinf(b) || isnan(a) || isinf(a)) {
            int same = (isnan(a) && isnan(b)) || (isinf(a) && isinf(b) && (a > 0) == (b > 0));
            if (!same) {
                bad++;
                if (worst_i < 0) worst_i = i;
                worst = INFINITY;
            }
            continue;
        }
        double e = fabs(a - b), lim = atol + rtol * fabs(b);
        num += (a - b) * (a - b);
        den += b * b;
        double frac = e / lim;
        if (frac > worst) {
            worst = frac;
            worst_i = i;
        }
        if (e > lim) bad++;
    }
    double nmse = den > 0 ? num / den : num;
    printf("%s n=%lld nmse=%.3g maxerr=%.3g of limit at %lld %s\n", what, (long long)n,
           nmse, worst, (long long)worst_i, bad ? "FAIL" : "OK");
    if (bad && worst_i >= 0)
        printf("  got=%.10g ref=%.10g (%lld elements off)\n", got(g, worst_i),
               ref(r, worst_i), (long long)bad);
    return bad == 0;
}

static double at_f64(const void *p, int64_t i) { return ((const double *)p)[i]; }
static double at_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }

int mpl_test_close_f64(const char *what, const double *got, const double *ref, int64_t n,
                       double atol, double rtol)
{
    return close_generic(what, n, atol, rtol, at_f64, got, at_f64, ref);
}

int mpl_test_close_f32(const char *what, const float *got, const float *ref, int64_t n,
                       double atol, double rtol)
{
    return close_generic(what, n, atol, rtol, at_f32, got, at_f32, ref);
}

int mpl_test_close_f32_f64(const char *what, const float *got, const double *ref,
                           int64_t n, double atol, double rtol)
{
    return close_generic(what, n, atol, rtol, at_f32, got, at_f64, ref);
}

void mpl_test_fd_grad(mpl_test_scalar_fn f, void *ctx, double *x, int64_t n, double h,
                      double *g)
{
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double fp = f(ctx);
        x[i] = x0 - h;
        double fm = f(ctx);
        x[i] = x0;
        g[i] = (fp - fm) / (2 * h);
    }
}

char *mpl_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/mpl-%s-XXXXXX", base ? base : "/tmp", tag);
    char *d = mkdtemp(tmpl);
    if (!d) return NULL;
    return strdup(d);
}

int mpl_test_rmtree(const char *dir)
{
    char cmd[4200];
    if (snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir) >= (int)sizeof cmd) return -1;
    return system(cmd) != 0;
}
