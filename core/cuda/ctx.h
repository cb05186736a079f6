/* The inside of the CUDA context (core/cuda.h), shared by ctx.c and
 * gemm.c only. CUDA builds only. */
#ifndef MPL_CUDA_CTX_H
#define MPL_CUDA_CTX_H

#include <stdint.h>

#include "check.h"
#include "gemm.h"

/* Enough for the products of one model and its attention (about 30
 * distinct shapes); a full cache starts over. */
#define MPL_CUDA_GEMM_CACHE 128

/* What an algorithm depends on: shape, ops, types, leading dimensions,
 * batch, strides and pointer alignments. */
typedef struct mpl_cuda_gemm_key {
    int64_t v[18];
} mpl_cuda_gemm_key;

typedef struct mpl_cuda_gemm_entry {
    mpl_cuda_gemm_key key;
    cublasLtMatmulAlgo_t algo;
} mpl_cuda_gemm_entry;

struct mpl_cuda {
    int device;
    char name[256];
    int sm_count, cc;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_work;                 /* cuBLASLt workspace */
    size_t lt_work_bytes;
    mpl_cuda_gemm_entry *cache;    /* (MPL_CUDA_GEMM_CACHE) */
    int n_cache;
};

#endif
