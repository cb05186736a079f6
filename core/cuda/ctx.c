/* The CUDA context (core/cuda.h): device selection, the stream, the
 * cuBLASLt handle and its workspace, device memory and copies. Every
 * operation of a model runs on the context's one stream, so the order of
 * kernels, products and copies is the order they were queued in. */
#include "ctx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cuda.h"

/* H100 guidance for cuBLASLt: 32 MiB lets every algorithm run. */
#define LT_WORK_BYTES ((size_t)32 << 20)

int mpl_cuda_built(void) { return 1; }

mpl_status mpl_cuda_device_count(int *n)
{
    *n = 0;
    const cudaError_t e = cudaGetDeviceCount(n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky error for the next caller */
        *n = 0;
        return mpl_err(MPL_ERR_CUDA, "no usable GPU: cudaGetDeviceCount returned %d (%s)", (int)e,
                       cudaGetErrorString(e));
    }
    if (*n < 1)
        return mpl_err(MPL_ERR_CUDA, "no usable GPU: cudaGetDeviceCount found 0 devices");
    return MPL_OK;
}

const char *mpl_cublas_status_str(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of device memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (bad argument)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
    }
}

mpl_status mpl_cuda_create(int device, mpl_cuda **out)
{
    mpl_status st = MPL_OK;
    *out = NULL;
    int n = 0;
    MPL_CHECK(mpl_cuda_device_count(&n));
    if (device < 0 || device >= n)
        return mpl_err(MPL_ERR_CUDA, "GPU %d does not exist: this process sees %d GPU(s)", device,
                       n);
    mpl_cuda *c;
    MPL_ALLOC(c, 1);
    c->device = device;
    c->cache = calloc(MPL_CUDA_GEMM_CACHE, sizeof *c->cache);
    if (!c->cache) MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "out of memory for the GEMM cache");
    struct cudaDeviceProp prop;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess)
        MPL_FAIL_GOTO(fail, MPL_ERR_CUDA, "GPU %d: %s", device, cudaGetErrorString(e));
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    c->sm_count = prop.multiProcessorCount;
    c->cc = prop.major * 10 + prop.minor;
    const cublasStatus_t bs = cublasLtCreate(&c->lt);
    if (bs != CUBLAS_STATUS_SUCCESS)
        MPL_FAIL_GOTO(fail, MPL_ERR_CUDA, "cublasLtCreate: %s", mpl_cublas_status_str(bs));
    c->lt_work_bytes = LT_WORK_BYTES;
    MPL_CHECK_GOTO(mpl_cuda_alloc(c, c->lt_work_bytes, &c->lt_work), fail);
    *out = c;
    return MPL_OK;
fail:
    mpl_cuda_destroy(&c);
    return st;
}

void mpl_cuda_destroy(mpl_cuda **cp)
{
    if (!cp || !*cp) return;
    mpl_cuda *c = *cp;
    if (c->stream) cudaStreamSynchronize(c->stream);
    mpl_cuda_free(c, &c->lt_work);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c->cache);
    free(c);
    *cp = NULL;
}

int mpl_cuda_device(const mpl_cuda *c) { return c->device; }
const char *mpl_cuda_device_name(const mpl_cuda *c) { return c->name; }
struct CUstream_st *mpl_cuda_stream(const mpl_cuda *c) { return c->stream; }
int mpl_cuda_sm_count(const mpl_cuda *c) { return c->sm_count; }
int mpl_cuda_cc(const mpl_cuda *c) { return c->cc; }

mpl_status mpl_cuda_sync(mpl_cuda *c)
{
    MPL_CUDA(cudaStreamSynchronize(c->stream));
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

mpl_status mpl_cuda_mem_info(mpl_cuda *c, int64_t *free_bytes, int64_t *total_bytes)
{
    size_t f = 0, t = 0;
    MPL_CUDA(cudaSetDevice(c->device));
    MPL_CUDA(cudaMemGetInfo(&f, &t));
    *free_bytes = (int64_t)f;
    *total_bytes = (int64_t)t;
    return MPL_OK;
}

mpl_status mpl_cuda_alloc(mpl_cuda *c, size_t n_bytes, void **p)
{
    *p = NULL;
    const size_t n = n_bytes ? (n_bytes + 255) / 256 * 256 : 256;
    const cudaError_t e = cudaMalloc(p, n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        int64_t fb = -1, tb = -1;
        if (mpl_cuda_mem_info(c, &fb, &tb) != MPL_OK) mpl_err_clear();
        return mpl_err(MPL_ERR_NOMEM, "GPU %d: cannot allocate %.1f MiB (%s; %.1f MiB free of %.1f)",
                       c->device, (double)n / (1 << 20), cudaGetErrorString(e),
                       (double)fb / (1 << 20), (double)tb / (1 << 20));
    }
    /* on the context's stream, which does not wait for the legacy default
     * stream a plain cudaMemset would use; then the host waits, so the
     * memory is ready for any later use */
    MPL_CUDA(cudaMemsetAsync(*p, 0, n, c->stream));
    MPL_CUDA(cudaStreamSynchronize(c->stream));
    return MPL_OK;
}

void mpl_cuda_free(mpl_cuda *c, void **p)
{
    if (!p || !*p) return;
    if (c && c->stream) cudaStreamSynchronize(c->stream); /* nothing queued may still use it */
    cudaFree(*p);
    *p = NULL;
}

mpl_status mpl_cuda_upload(mpl_cuda *c, void *dst, const void *src, size_t n_bytes)
{
    if (!n_bytes) return MPL_OK;
    MPL_CUDA(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyHostToDevice, c->stream));
    MPL_CUDA(cudaStreamSynchronize(c->stream));
    return MPL_OK;
}

mpl_status mpl_cuda_download(mpl_cuda *c, void *dst, const void *src, size_t n_bytes)
{
    if (!n_bytes) return MPL_OK;
    MPL_CUDA(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToHost, c->stream));
    MPL_CUDA(cudaStreamSynchronize(c->stream));
    return MPL_OK;
}

mpl_status mpl_cuda_copy(mpl_cuda *c, void *dst, const void *src, size_t n_bytes)
{
    if (!n_bytes) return MPL_OK;
    MPL_CUDA(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, c->stream));
    return MPL_OK;
}

mpl_status mpl_cuda_zero(mpl_cuda *c, void *p, size_t n_bytes)
{
    if (!n_bytes) return MPL_OK;
    MPL_CUDA(cudaMemsetAsync(p, 0, n_bytes, c->stream));
    return MPL_OK;
}
