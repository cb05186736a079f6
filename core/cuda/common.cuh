// Device helpers shared by the .cu files of core/ and attention/: bf16
// loads and stores, warp and block reductions in a fixed order, launch
// sizes. CUDA builds only (or the CPU emulation of tests/cuda_emu).
#ifndef MPL_CUDA_COMMON_CUH
#define MPL_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../cuda.h"
#include "check.h"

#define MPL_WARP 32
#define MPL_FULL_MASK 0xffffffffu

static __device__ __forceinline__ float mpl_ld_bf16(const mpl_bf16 *p, int64_t i)
{
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16 *>(p)[i]);
}
static __device__ __forceinline__ void mpl_st_bf16(mpl_bf16 *p, int64_t i, float v)
{
    reinterpret_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16(v);
}

// Reductions over the 32 lanes of a warp by the xor butterfly: every lane
// gets the result, and the association is fixed, so results repeat bit for
// bit.
struct mpl_op_sum {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct mpl_op_max {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T, typename Op> static __device__ __forceinline__ T mpl_warp_reduce(T v, Op op)
{
    for (int o = MPL_WARP / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(MPL_FULL_MASK, v, o));
    return v;
}

// Over a block of blockDim.x threads (a multiple of 32, at most 1024): warp
// results, then the first warp reduces those. Every thread gets the result.
// sh: 32 values of shared memory. Contains __syncthreads: call from all threads.
template <typename T, typename Op>
static __device__ __forceinline__ T mpl_block_reduce(T v, T *sh, T identity, Op op)
{
    const int lane = threadIdx.x % MPL_WARP, warp = threadIdx.x / MPL_WARP;
    const int n_warps = blockDim.x / MPL_WARP;
    v = mpl_warp_reduce(v, op);
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < n_warps ? sh[lane] : identity;
    if (warp == 0) v = mpl_warp_reduce(v, op);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

static __device__ __forceinline__ float mpl_warp_sum(float v) { return mpl_warp_reduce(v, mpl_op_sum()); }
static __device__ __forceinline__ float mpl_block_sum(float v, float *sh)
{
    return mpl_block_reduce(v, sh, 0.0f, mpl_op_sum());
}
static __device__ __forceinline__ double mpl_block_sum_d(double v, double *sh)
{
    return mpl_block_reduce(v, sh, 0.0, mpl_op_sum());
}
static __device__ __forceinline__ float mpl_block_max(float v, float *sh)
{
    return mpl_block_reduce(v, sh, -INFINITY, mpl_op_max());
}

// Blocks for n elements at `threads` per block, capped for grid-stride loops.
static inline unsigned mpl_grid_1d(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535LL * 8) b = 65535LL * 8;
    return (unsigned)b;
}

#endif
