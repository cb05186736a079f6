// Reductions with a fixed order (core/cuda/kernels.h): the sum of a slab in
// double (gradient norm, loss) and column sums over rows (RMSNorm's gain
// gradient, the FMM blend gradients). No atomics: every partial has one
// writer, and the partials are combined in index order, so a launch gives
// the same bits on every run.
#include "common.cuh"
#include "kernels.h"

#define SUM_THREADS 256
#define COL_THREADS 128

static __global__ void sum_partials_k(double *partials, const float *x, int64_t n, int squares)
{
    __shared__ double sh[32];
    double acc = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double v = x[i];
        acc += squares ? v * v : v;
    }
    acc = mpl_block_sum_d(acc, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

static __global__ void sum_final_k(double *out, const double *partials, int n_partials)
{
    __shared__ double sh[32];
    double acc = 0;
    for (int i = threadIdx.x; i < n_partials; i += blockDim.x) acc += partials[i];
    acc = mpl_block_sum_d(acc, sh);
    if (threadIdx.x == 0) out[0] = acc;
}

extern "C" mpl_status mpl_cuda_sum(double *out, const float *x, int64_t n, int squares,
                                   double *partials, cudaStream_t s)
{
    MPL_CUDA_LAUNCH(sum_partials_k, MPL_CUDA_SUM_BLOCKS, SUM_THREADS, 0, s, partials, x, n,
                    squares);
    MPL_CUDA(cudaGetLastError());
    MPL_CUDA_LAUNCH(sum_final_k, 1, MPL_CUDA_SUM_BLOCKS, 0, s, out, partials,
                    MPL_CUDA_SUM_BLOCKS);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" int64_t mpl_cuda_colsum_partials(int64_t n_rows, int64_t n_cols)
{
    return (n_rows + MPL_CUDA_COLSUM_ROWS - 1) / MPL_CUDA_COLSUM_ROWS * n_cols;
}

// Block (column block, row block): one thread per column sums its rows of
// the row block in order.
static __global__ void colsum_partials_k(float *partials, const float *a, const float *b,
                                         const float *row_scale, int64_t n_rows, int64_t n_cols)
{
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_cols) return;
    const int64_t r0 = (int64_t)blockIdx.y * MPL_CUDA_COLSUM_ROWS;
    const int64_t r1 = r0 + MPL_CUDA_COLSUM_ROWS < n_rows ? r0 + MPL_CUDA_COLSUM_ROWS : n_rows;
    float acc = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float p = a[r * n_cols + c] * b[r * n_cols + c];
        acc += row_scale ? p * row_scale[r] : p;
    }
    partials[(int64_t)blockIdx.y * n_cols + c] = acc;
}

static __global__ void colsum_final_k(float *acc, const float *partials, int64_t n_blocks,
                                      int64_t n_cols)
{
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_cols) return;
    float v = 0;
    for (int64_t b = 0; b < n_blocks; b++) v += partials[b * n_cols + c];
    acc[c] += v;
}

extern "C" mpl_status mpl_cuda_colsum(float *acc, const float *a, const float *b,
                                      const float *row_scale, int64_t n_rows, int64_t n_cols,
                                      float *partials, cudaStream_t s)
{
    if (n_rows == 0 || n_cols == 0) return MPL_OK;
    const int64_t n_blocks = (n_rows + MPL_CUDA_COLSUM_ROWS - 1) / MPL_CUDA_COLSUM_ROWS;
    const unsigned gx = (unsigned)((n_cols + COL_THREADS - 1) / COL_THREADS);
    if (n_blocks > 65535)
        return mpl_err(MPL_ERR_ARG, "column sum over %lld rows: more than %d row blocks",
                       (long long)n_rows, 65535);
    MPL_CUDA_LAUNCH(colsum_partials_k, dim3(gx, (unsigned)n_blocks), COL_THREADS, 0, s, partials,
                    a, b, row_scale, n_rows, n_cols);
    MPL_CUDA(cudaGetLastError());
    MPL_CUDA_LAUNCH(colsum_final_k, gx, COL_THREADS, 0, s, acc, partials, n_blocks, n_cols);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}
