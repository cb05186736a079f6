/* The CUDA context and device memory, as seen from C code that must also
 * compile where there is no CUDA toolkit: the handle is opaque, streams are
 * `struct CUstream_st *` (what cudaStream_t is), bf16 is its 16-bit storage
 * type. A build without the CUDA backend links core/cuda_none.c, whose
 * functions answer MPL_ERR_UNSUPPORTED with the sentence
 * MPL_CUDA_NOT_BUILT, so a config asking for device=cuda fails with that
 * message instead of at link time.
 *
 * The context holds what DESIGN.md forbids as globals: the device index,
 * one stream on which every kernel, copy and GEMM of the model runs, the
 * cuBLASLt handle with its workspace and a cache of GEMM algorithms. */
#ifndef MPL_CUDA_H
#define MPL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPL_CUDA_NOT_BUILT \
    "this build has no CUDA backend: configure with -DMPL_CUDA=ON and a CUDA toolkit"

/* bf16 in memory: the upper 16 bits of an IEEE fp32 (round to nearest even). */
typedef uint16_t mpl_bf16;

typedef struct mpl_cuda mpl_cuda;
struct CUstream_st;

/* Local. 1 when this build has the CUDA backend. */
int mpl_cuda_built(void);

/* Local. *n = the number of GPUs this process can use. Errors: a build
 * without CUDA (MPL_ERR_UNSUPPORTED, MPL_CUDA_NOT_BUILT); no usable GPU
 * (MPL_ERR_CUDA, saying what cudaGetDeviceCount returned, e.g. "CUDA
 * driver version is insufficient for CUDA runtime version"), including
 * zero devices. */
mpl_status mpl_cuda_device_count(int *n);

/* Local. A context on GPU `device` (0-based): selects it, creates the
 * stream, the cuBLASLt handle and its workspace. */
mpl_status mpl_cuda_create(int device, mpl_cuda **out);
/* Local. Waits for the stream, frees everything; *c = NULL; NULL is a no-op. */
void mpl_cuda_destroy(mpl_cuda **c);

/* Local. Accessors. */
int mpl_cuda_device(const mpl_cuda *c);
const char *mpl_cuda_device_name(const mpl_cuda *c);  /* e.g. "NVIDIA H100 80GB HBM3" */
struct CUstream_st *mpl_cuda_stream(const mpl_cuda *c);
/* Local. Streaming multiprocessors and compute capability (major*10+minor). */
int mpl_cuda_sm_count(const mpl_cuda *c);
int mpl_cuda_cc(const mpl_cuda *c);

/* Local. Block the host until the stream is idle; reports an error a
 * kernel raised since the last check. */
mpl_status mpl_cuda_sync(mpl_cuda *c);
/* Local. Free and total device memory in bytes (cudaMemGetInfo). */
mpl_status mpl_cuda_mem_info(mpl_cuda *c, int64_t *free_bytes, int64_t *total_bytes);

/* Local. Device memory: n_bytes (0 allowed), 256-byte aligned, zeroed
 * (returns when the zeroing is done). */
mpl_status mpl_cuda_alloc(mpl_cuda *c, size_t n_bytes, void **p);
/* Local. Waits for the stream, frees p (NULL is a no-op) and sets *p = NULL. */
void mpl_cuda_free(mpl_cuda *c, void **p);
/* Local. Host to device and device to host on the context's stream; both
 * return when the copy is complete, so the host buffer may be reused. */
mpl_status mpl_cuda_upload(mpl_cuda *c, void *dev_dst, const void *host_src, size_t n_bytes);
mpl_status mpl_cuda_download(mpl_cuda *c, void *host_dst, const void *dev_src, size_t n_bytes);
/* Local. Device to device and memset 0, queued on the stream (asynchronous). */
mpl_status mpl_cuda_copy(mpl_cuda *c, void *dev_dst, const void *dev_src, size_t n_bytes);
mpl_status mpl_cuda_zero(mpl_cuda *c, void *dev_p, size_t n_bytes);

/* Local. Buffers cut from one allocation at 256-byte boundaries (the
 * alignment cuBLASLt assumes): take returns base + the running offset and
 * advances it; with base NULL it only counts, so one function both sizes
 * and lays out a slab. */
typedef struct mpl_cuda_carve {
    char *base;
    size_t off;
} mpl_cuda_carve;
void *mpl_cuda_carve_take(mpl_cuda_carve *c, int64_t n_elems, size_t elem_bytes);

/* Local. fp32 <-> bf16 on the host, round to nearest even (NaN kept). */
mpl_bf16 mpl_bf16_from_f32(float x);
float mpl_bf16_to_f32(mpl_bf16 x);

#ifdef __cplusplus
}
#endif

#endif
