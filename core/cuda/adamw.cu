// Gradient clipping and AdamW in one pass over the parameter slab
// (core/cuda/kernels.h), the device form of core/adamw.c. The clip factor
// and the "skip a non-finite step" decision come from device scalars (the
// norm and the loss computed on the same stream), so the step needs no
// host round trip before the update.
#include <math.h>

#include "common.cuh"
#include "kernels.h"

#define ADAM_THREADS 256

// Grid (blocks over elements, tensors): block row y walks tensor y.
static __global__ void adamw_k(mpl_cuda_adamw_args a)
{
    const double norm = sqrt(*a.norm2);
    if (!isfinite(norm) || (a.loss && !isfinite(*a.loss))) return;
    // the CPU's mpl_scale: the factor in double, applied in float
    const float clip = a.grad_clip > 0 && norm > a.grad_clip ? (float)(a.grad_clip / norm) : 1.0f;
    const int t = blockIdx.y;
    const int64_t off = a.t_off[t], n = a.t_n[t];
    const float decay = a.t_decay[t] ? a.decay : 1.0f;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = off + j;
        float g = a.grads[i];
        if (clip != 1.0f) {
            g *= clip;
            a.grads[i] = g;
        }
        const float mi = a.beta1 * a.m[i] + (1.0f - a.beta1) * g;
        const float vi = a.beta2 * a.v[i] + (1.0f - a.beta2) * g * g;
        a.m[i] = mi;
        a.v[i] = vi;
        const float p = a.params[i] * decay - a.lr * (mi * a.c1) / (sqrtf(vi * a.c2) + a.eps);
        a.params[i] = p;
        mpl_st_bf16(a.params_bf, i, p);
    }
}

extern "C" mpl_status mpl_cuda_adamw_update(const mpl_cuda_adamw_args *a, cudaStream_t s)
{
    if (a->n_tensors < 1) return MPL_OK;
    if (a->n_tensors > 65535)
        return mpl_err(MPL_ERR_ARG, "AdamW over %d tensors: at most 65535", a->n_tensors);
    int64_t bx = (a->max_tensor_elems + ADAM_THREADS - 1) / ADAM_THREADS;
    if (bx < 1) bx = 1;
    if (bx > 4096) bx = 4096;
    MPL_CUDA_LAUNCH(adamw_k, dim3((unsigned)bx, (unsigned)a->n_tensors), ADAM_THREADS, 0, s, *a);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}
