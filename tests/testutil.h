/* Shared test helpers: zeroed allocations, seeded inputs (MPL_TEST_SEED),
 * an explicit RoPE reference, comparisons that report NMSE and the worst
 * element, and finite-difference gradients. */
#ifndef MPL_TESTUTIL_H
#define MPL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Local. Zeroed arrays of n elements (at least one, so n = 0 still gives a
 * pointer); a failed allocation fails the test. Release with free(). */
double *mpl_test_dalloc(int64_t n);
float *mpl_test_falloc(int64_t n);
/* Local. A new float copy of x (n elements), from mpl_test_falloc. */
float *mpl_test_to_f32(const double *x, int64_t n);

/* Local. RoPE written out: rotate one head vector x (d elements, d even) in
 * place to position pos with an explicit 2x2 matrix per pair (c, c + d/2),
 * angle pos * theta^(-2c/d). */
void mpl_test_rope_ref(double *x, int d, double pos, double theta);

/* Local. The seed of this run: MPL_TEST_SEED or 42; printed once. */
uint64_t mpl_test_seed(void);

/* Local. Uniform values in [lo, hi) from (seed, stream). */
void mpl_test_fill_f64(double *x, int64_t n, uint64_t seed, uint64_t stream, double lo, double hi);
void mpl_test_fill_f32(float *x, int64_t n, uint64_t seed, uint64_t stream, double lo, double hi);
/* Local. Dyadic values k/64, k in [-64, 64): sums of them are exact in any
 * order (for distributed-vs-single-rank comparisons with tolerance 0). */
void mpl_test_fill_dyadic(float *x, int64_t n, uint64_t seed, uint64_t stream);

/* Local. Compare got against ref: passes when every |got-ref| <= atol +
 * rtol*|ref| and NaN/Inf positions match. Prints one line
 * "<what> n=.. nmse=.. maxerr=.. at i OK|FAIL" and returns 1 on pass. */
int mpl_test_close_f64(const char *what, const double *got, const double *ref, int64_t n,
                       double atol, double rtol);
int mpl_test_close_f32(const char *what, const float *got, const float *ref, int64_t n,
                       double atol, double rtol);
/* Same, float result against a double reference. */
int mpl_test_close_f32_f64(const char *what, const float *got, const double *ref,
                           int64_t n, double atol, double rtol);

/* Local. Central-difference gradient of f at x (x restored afterwards):
 * g[i] = (f(x + h e_i) - f(x - h e_i)) / 2h. */
typedef double (*mpl_test_scalar_fn)(void *ctx);
void mpl_test_fd_grad(mpl_test_scalar_fn f, void *ctx, double *x, int64_t n, double h,
                      double *g);

/* Local. Make an empty temporary directory; returns a malloc'd path. */
char *mpl_test_tmpdir(const char *tag);
/* Local. Remove a directory made by mpl_test_tmpdir and everything in it;
 * returns 0 on success. */
int mpl_test_rmtree(const char *dir);

#endif
