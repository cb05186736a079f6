/* Helpers of the GPU tests (LABELS gpu): the skip when there is no usable
 * GPU, device buffers filled from host arrays, and the comparison against
 * the CPU reference under a tolerance of tests/tolerance.h. */
#ifndef MPL_GPUUTIL_H
#define MPL_GPUUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/cuda.h"
#include "testutil.h"
#include "tolerance.h"

/* ctest's SKIP_RETURN_CODE of the GPU tests. */
#define MPL_TEST_SKIP_RC 77

/* Local. The context every test of the program shares, created on first
 * use on GPU 0; NULL when there is none, with the reason (what
 * cudaGetDeviceCount returned, or that the build has no CUDA) in
 * mpl_test_gpu_why(). */
mpl_cuda *mpl_test_gpu(void);
const char *mpl_test_gpu_why(void);
/* Local. End of a GPU test's main: frees the shared context; returns
 * cmocka's rc when a test failed, else 0, or MPL_TEST_SKIP_RC when there
 * was no GPU (every test skipped). */
int mpl_test_gpu_exit(int rc);

/* In a cmocka test: skip with the reason when there is no GPU. */
#define MPL_TEST_NEED_GPU(cu)                                                  \
    mpl_cuda *cu = mpl_test_gpu();                                             \
    if (!cu) {                                                                 \
        printf("SKIP: %s\n", mpl_test_gpu_why());               \
        skip();                                                                \
    }

/* Local. Device copies of host arrays (fails the test on error); free
 * with mpl_test_dfree. */
float *mpl_test_dup_f32(mpl_cuda *cu, const float *h, int64_t n);
mpl_bf16 *mpl_test_dup_bf16(mpl_cuda *cu, const float *h, int64_t n); /* rounds h */
void *mpl_test_dzero(mpl_cuda *cu, size_t n_bytes);
void mpl_test_dfree(mpl_cuda *cu, void *p);
/* Local. Device to host, synchronously. */
void mpl_test_get_f32(mpl_cuda *cu, float *h, const float *d, int64_t n);
void mpl_test_get_bf16(mpl_cuda *cu, float *h, const mpl_bf16 *d, int64_t n);
/* Local. h[i] = bf16(h[i]) in place: the values a bf16 input holds. */
void mpl_test_round_bf16(float *h, int64_t n);

/* Local. got against ref under tol (tolerance.h); prints one line
 * "<what> n=.. nmse=../.. maxerr=.. of limit OK|FAIL" and returns 1 on pass. */
int mpl_test_close_tol(const char *what, const float *got, const float *ref, int64_t n,
                       mpl_tol tol);
/* Local. Cosine similarity of two vectors (1 when both are zero). */
double mpl_test_cosine(const float *a, const float *b, int64_t n);

#endif
