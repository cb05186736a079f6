/* Tolerances of the GPU path against the CPU reference, one line per op,
 * each with its reason. A comparison passes when
 *   NMSE = sum (got - ref)^2 / sum ref^2  <= nmse, and
 *   every |got - ref| <= atol * rms(ref) + rtol * |ref|,
 * with NaN/Inf in the same places (mpl_test_close_tol in gpuutil.c). The
 * absolute part is relative to the reference's RMS so one line serves any
 * input scale. Units: bf16 keeps 8 significant bits (7 stored), so one
 * rounding is a relative error of at most 2^-8 ~ 3.9e-3, RMS about 2.3e-3
 * (NMSE ~ 5e-6); an fp32 sum in another order differs by a few 1e-7
 * relative per term.
 * Inputs of the tests are O(1) random values; products are over k <= 256. */
#ifndef MPL_TOLERANCE_H
#define MPL_TOLERANCE_H

typedef struct mpl_tol {
    double nmse, atol, rtol;
} mpl_tol;

/* fp32 copies (embedding gather, bf16 conversion of exact bf16 values): exact. */
#define MPL_TOL_EXACT ((mpl_tol){0, 0, 0})
/* fp32 results summed in another order (embedding backward, RMSNorm's rstd,
 * dx and gain sums, loss, RoPE with the same double angles, AdamW with FMA
 * contraction): a few ulp per term. */
#define MPL_TOL_F32 ((mpl_tol){1e-10, 1e-5, 1e-5})
/* One bf16 rounding of the result (RMSNorm output, GELU forward/backward,
 * dlogits, the bf16 parameter copy): 2^-8 relative plus the fp32
 * difference of the value rounded, NMSE ~ 5e-6. */
#define MPL_TOL_BF16_OUT ((mpl_tol){2e-5, 1e-4, 5e-3})
/* Products of bf16-rounded operands with fp32 accumulation against the
 * fp32 product of the unrounded ones: each term carries two roundings
 * (relative RMS ~ 3.3e-3), random signs over k terms average to NMSE ~
 * 1e-5 at most; elementwise about 5 RMS of that times rms(ref). */
#define MPL_TOL_BF16_GEMM ((mpl_tol){2e-5, 1.5e-2, 1e-2})
/* The same with a bf16 result: one more rounding. */
#define MPL_TOL_BF16_GEMM_OUT ((mpl_tol){4e-5, 2e-2, 1.4e-2})
/* fp32 attention on the GPU (fp32 inputs, online softmax, warp-sum and
 * batched-GEMM orders) against the CPU fp32 attention: 1e-5 relative per
 * output, NMSE 1e-9. */
#define MPL_TOL_ATTN_F32 ((mpl_tol){1e-9, 1e-4, 1e-4})
/* Whole model, bf16 activations and products against the CPU fp32 model
 * (issue 7): loss within 1e-2 relative, gradient cosine >= 0.999 over the
 * whole slab, and >= 0.99 for every tensor (a tensor's own bf16 noise). */
#define MPL_TOL_MODEL_LOSS_REL 1e-2
#define MPL_TOL_MODEL_GRAD_COS 0.999
#define MPL_TOL_MODEL_TENSOR_COS 0.99
/* Training: after 200 steps the GPU loss curve tracks the CPU one: the mean
 * loss over each window of 20 steps within 3% of the CPU's (bf16 noise in
 * the gradient is far below the batch noise both runs share). */
#define MPL_TOL_TRAIN_WINDOW 20
#define MPL_TOL_TRAIN_REL 3e-2

#endif
