/* CPU emulation of the part of the CUDA runtime and of the CUDA C++ kernel
 * language that multipole uses (tests/cuda_emu/README.md). Host code (C or
 * C++) gets the runtime API; C++ gets, in addition, dim3, threadIdx and
 * friends, __syncthreads, warp shuffles and mpl_emu_launch, which
 * MPL_CUDA_LAUNCH expands to when MPL_CUDA_EMU is defined. Device memory
 * is host memory, so every kernel runs on the host. */
#ifndef MPL_EMU_CUDA_RUNTIME_H
#define MPL_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef struct CUstream_st *cudaStream_t;
#define cudaStreamNonBlocking 0x01

struct cudaDeviceProp {
    char name[256];
    int multiProcessorCount;
    int major, minor;
    size_t totalGlobalMem;
};

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

/* Emulation only: set by the launcher when a kernel is started with a bad
 * configuration (as the real runtime reports cudaErrorInvalidConfiguration). */
void mpl_emu_set_error(cudaError_t e);
/* Emulation only: 1 when p lies in an emulated device allocation. */
int mpl_emu_is_device(const void *p);

#ifdef __cplusplus
}

#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct mpl_emu_uint3 {
    unsigned x, y, z;
};

const mpl_emu_uint3 &mpl_emu_thread_idx();
const mpl_emu_uint3 &mpl_emu_block_idx();
const mpl_emu_uint3 &mpl_emu_block_dim();
const mpl_emu_uint3 &mpl_emu_grid_dim();
#define threadIdx (mpl_emu_thread_idx())
#define blockIdx (mpl_emu_block_idx())
#define blockDim (mpl_emu_block_dim())
#define gridDim (mpl_emu_grid_dim())

void __syncthreads();
void __syncwarp(unsigned mask = 0xffffffffu);
uint64_t mpl_emu_shfl_bits(uint64_t v, int src_lane, int xor_mode);

template <typename T> static inline T mpl_emu_shfl(T v, int lane, int xor_mode)
{
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    uint64_t b = 0;
    __builtin_memcpy(&b, &v, sizeof v);
    b = mpl_emu_shfl_bits(b, lane, xor_mode);
    T r;
    __builtin_memcpy(&r, &b, sizeof r);
    return r;
}
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m) { return mpl_emu_shfl(v, m, 1); }
template <typename T> static inline T __shfl_sync(unsigned, T v, int l) { return mpl_emu_shfl(v, l, 0); }

/* Run fn as a grid of blocks of threads: blocks one after the other, the
 * threads of a block as cooperative fibers (they switch at __syncthreads
 * and warp shuffles), so barriers and shuffles behave as on a GPU. */
void mpl_emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> fn);
#endif

#endif
