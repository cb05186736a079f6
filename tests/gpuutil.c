/* GPU test helpers (gpuutil.h). */
#include "gpuutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mpl_cuda *shared_cu;
static int probed;
static char why[512];

mpl_cuda *mpl_test_gpu(void)
{
    if (probed) return shared_cu;
    probed = 1;
    int n = 0;
    mpl_status st = mpl_cuda_device_count(&n);
    if (st == MPL_OK) st = mpl_cuda_create(0, &shared_cu);
    if (st != MPL_OK) {
        snprintf(why, sizeof why, "%s", mpl_err_cause());
        mpl_err_clear();
        shared_cu = NULL;
    }
    return shared_cu;
}

const char *mpl_test_gpu_why(void) { return why; }
int mpl_test_gpu_exit(int rc)
{
    const int gpu = mpl_test_gpu() != NULL;
    mpl_cuda_destroy(&shared_cu);
    return rc ? rc : gpu ? 0 : MPL_TEST_SKIP_RC;
}

static void check_ok(mpl_status st)
{
    if (st != MPL_OK) {
        mpl_err_print(stderr, "  ");
        mpl_err_clear();
    }
    assert_int_equal(st, MPL_OK);
}

void *mpl_test_dzero(mpl_cuda *cu, size_t n_bytes)
{
    void *p = NULL;
    check_ok(mpl_cuda_alloc(cu, n_bytes, &p));
    return p;
}

float *mpl_test_dup_f32(mpl_cuda *cu, const float *h, int64_t n)
{
    float *d = mpl_test_dzero(cu, (size_t)n * sizeof *d);
    check_ok(mpl_cuda_upload(cu, d, h, (size_t)n * sizeof *d));
    return d;
}

mpl_bf16 *mpl_test_dup_bf16(mpl_cuda *cu, const float *h, int64_t n)
{
    mpl_bf16 *t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    assert_non_null(t);
    for (int64_t i = 0; i < n; i++) t[i] = mpl_bf16_from_f32(h[i]);
    mpl_bf16 *d = mpl_test_dzero(cu, (size_t)n * sizeof *d);
    check_ok(mpl_cuda_upload(cu, d, t, (size_t)n * sizeof *d));
    free(t);
    return d;
}

void mpl_test_dfree(mpl_cuda *cu, void *p) { mpl_cuda_free(cu, &p); }

void mpl_test_get_f32(mpl_cuda *cu, float *h, const float *d, int64_t n)
{
    check_ok(mpl_cuda_download(cu, h, d, (size_t)n * sizeof *h));
}

void mpl_test_get_bf16(mpl_cuda *cu, float *h, const mpl_bf16 *d, int64_t n)
{
    mpl_bf16 *t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    assert_non_null(t);
    check_ok(mpl_cuda_download(cu, t, d, (size_t)n * sizeof *t));
    for (int64_t i = 0; i < n; i++) h[i] = mpl_bf16_to_f32(t[i]);
    free(t);
}

void mpl_test_round_bf16(float *h, int64_t n)
{
    for (int64_t i = 0; i < n; i++) h[i] = mpl_bf16_to_f32(mpl_bf16_from_f32(h[i]));
}

int mpl_test_close_tol(const char *what, const float *got, const float *ref, int64_t n,
                       mpl_tol tol)
{
    double se = 0, sr = 0, worst = 0;
    int64_t at = -1, bad_nan = -1;
    for (int64_t i = 0; i < n; i++) sr += (double)ref[i] * ref[i];
    const double rms = n > 0 ? sqrt(sr / (double)n) : 0;
    for (int64_t i = 0; i < n; i++) {
        const double r = ref[i], g = got[i];
        if (!isfinite(r) || !isfinite(g)) {
            if ((isnan(r) != isnan(g) || (isinf(r) && r != g)) && bad_nan < 0) bad_nan = i;
            continue;
        }
        const double e = fabs(g - r), lim = tol.atol * rms + tol.rtol * fabs(r);
        se += e * e;
        const double frac = lim > 0 ? e / lim : (e > 0 ? INFINITY : 0);
        if (frac > worst || at < 0) worst = frac, at = i;
    }
    const double nmse = sr > 0 ? se / sr : se;
    const int ok = bad_nan < 0 && nmse <= tol.nmse && worst <= 1.0;
    printf("%s n=%lld nmse=%.2e/%.0e maxerr=%.2f of limit at %lld%s %s\n", what, (long long)n,
           nmse, tol.nmse, worst, (long long)at, bad_nan >= 0 ? " NaN/Inf mismatch" : "",
           ok ? "OK" : "FAIL");
    if (!ok && at >= 0)
        printf("  got %.9g ref %.9g (rms of ref %.3g)\n", (double)got[at], (double)ref[at], rms);
    return ok;
}

double mpl_test_cosine(const float *a, const float *b, int64_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa == 0 && bb == 0) return 1;
    if (aa == 0 || bb == 0) return 0;
    return ab / sqrt(aa * bb);
}
