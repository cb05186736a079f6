/* Check macros and the kernel-launch macro of the CUDA sources (CUDA builds
 * only: this header includes the CUDA runtime). MPL_CUDA and MPL_CUBLAS are
 * the one-line specialisations of MPL_CHECK_GEN that DESIGN.md names: on
 * failure they push file:line, the expression and the library's message,
 * then return MPL_ERR_CUDA from the calling function.
 *
 * Kernels are launched through MPL_CUDA_LAUNCH instead of the <<<>>>
 * syntax so that the same sources also compile as C++ against the CPU
 * emulation in tests/cuda_emu (MPL_CUDA_EMU), which runs every kernel on
 * the host. A launcher follows every launch with
 * MPL_CUDA(cudaGetLastError()), which reports a bad launch configuration. */
#ifndef MPL_CUDA_CHECK_H
#define MPL_CUDA_CHECK_H

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "../status.h"

#define MPL_CUDA(expr) \
    MPL_CHECK_GEN((expr), cudaSuccess, MPL_ERR_CUDA, cudaGetErrorString(mpl_rc_))
#define MPL_CUBLAS(expr) \
    MPL_CHECK_GEN((expr), CUBLAS_STATUS_SUCCESS, MPL_ERR_CUDA, mpl_cublas_status_str(mpl_rc_))

/* Local. Name and meaning of a cuBLAS status. */
#ifdef __cplusplus
extern "C" {
#endif
const char *mpl_cublas_status_str(cublasStatus_t s);
#ifdef __cplusplus
}
#endif

#ifdef MPL_CUDA_EMU
#define MPL_CUDA_LAUNCH(kernel, grid, block, smem, stream, ...)             \
    do {                                                                      \
        (void)(stream);                                                       \
        mpl_emu_launch((grid), (block), (smem), [=]() { kernel(__VA_ARGS__); }); \
    } while (0)
#else
#define MPL_CUDA_LAUNCH(kernel, grid, block, smem, stream, ...) \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

#endif
