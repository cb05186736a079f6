/* Matrix products on the GPU through cuBLASLt: bf16 or fp32 operands, fp32
 * accumulation, row-major arguments (the wrapper turns them into cuBLAS's
 * column-major view), optional strided batches, and C != D so that a
 * residual add rides in the product's epilogue (D = A B^T + C). Algorithms
 * are chosen once per shape, type and alignment by cuBLASLt's heuristic and
 * cached in the context. Compiles without CUDA; implemented in gemm.c. */
#ifndef MPL_CUDA_GEMM_H
#define MPL_CUDA_GEMM_H

#include <stdint.h>

#include "../cuda.h"

typedef enum mpl_cuda_dtype { MPL_CUDA_F32 = 0, MPL_CUDA_BF16 } mpl_cuda_dtype;

/* D (m x n) = alpha op(A) op(B) + beta C, every matrix row-major with its
 * leading dimension; op(X) = X when tX = 0, X^T when tX = 1 (then X is
 * stored as the transpose: A (k x m), B (n x k)). C has D's type; c = NULL
 * means C = D (beta then scales D's old content; beta = 0 ignores it).
 * batch >= 1 products with element strides stride_*; a stride may be 0
 * (the same matrix for every product). */
typedef struct mpl_cuda_gemm_args {
    int ta, tb;
    int64_t m, n, k;
    float alpha, beta;
    mpl_cuda_dtype ab_type, d_type;
    const void *a;
    int64_t lda, stride_a;
    const void *b;
    int64_t ldb, stride_b;
    const void *c;
    int64_t ldc, stride_c;
    void *d;
    int64_t ldd, stride_d;
    int64_t batch;
} mpl_cuda_gemm_args;

/* Local. Queue one (batched) product on the context's stream. fp32
 * operands are computed in fp32 (no TF32), bf16 ones with fp32
 * accumulation. MPL_ERR_ARG for bad sizes, MPL_ERR_CUDA when cuBLASLt has
 * no algorithm for the shape (the message names it) or fails. */
mpl_status mpl_cuda_gemm(mpl_cuda *c, const mpl_cuda_gemm_args *g);

/* Local. The model's linear layers, y = x W^T with W (OC, IC), on bf16
 * operands:
 *   forward:    out (n, OC) = x W^T + res; out fp32 or bf16 (out_type);
 *               res (fp32, n x OC) may be NULL, and needs out fp32;
 *   backward_x: dx (n, IC) = alpha dout W  (overwritten; fp32 or bf16);
 *   backward_w: dw (OC, IC) += alpha dout^T x  (fp32, accumulates). */
mpl_status mpl_cuda_linear_forward(mpl_cuda *c, void *out, mpl_cuda_dtype out_type,
                                   const mpl_bf16 *x, const mpl_bf16 *w, const float *res,
                                   int64_t n, int64_t IC, int64_t OC);
mpl_status mpl_cuda_linear_backward_x(mpl_cuda *c, void *dx, mpl_cuda_dtype dx_type, float alpha,
                                      const mpl_bf16 *dout, const mpl_bf16 *w, int64_t n,
                                      int64_t IC, int64_t OC);
mpl_status mpl_cuda_linear_backward_w(mpl_cuda *c, float *dw, float alpha, const mpl_bf16 *dout,
                                      const mpl_bf16 *x, int64_t n, int64_t IC, int64_t OC);

#endif
