/* Row-major matrix products through cuBLASLt (gemm.h). cuBLAS is
 * column-major: a row-major D (m x n) is the column-major D^T (n x m), so
 * D = op(A) op(B) is computed as D^T = op(B)^T op(A)^T, i.e. cuBLASLt's A
 * is our B and its B our A, with the transposes as given. The algorithm of
 * each distinct problem (shape, types, leading dimensions, strides, pointer
 * alignments) comes from the heuristic once and is cached in the context;
 * alignments are part of the key because cuBLASLt assumes 256-byte aligned
 * pointers unless told otherwise. */
#include <stdio.h>
#include <string.h>

#include "ctx.h"

static int64_t align_of(const void *p, int64_t stride_bytes)
{
    uint64_t a = (uint64_t)(uintptr_t)p | 256u;
    if (stride_bytes) a |= (uint64_t)stride_bytes;
    return (int64_t)(a & (~a + 1)); /* lowest set bit, at most 256 */
}

static cudaDataType_t dt(mpl_cuda_dtype t) { return t == MPL_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F; }
static int64_t esize(mpl_cuda_dtype t) { return t == MPL_CUDA_BF16 ? 2 : 4; }

static mpl_status layout(cublasLtMatrixLayout_t *l, mpl_cuda_dtype t, int64_t rows, int64_t cols,
                         int64_t ld, int64_t batch, int64_t stride)
{
    MPL_CUBLAS(cublasLtMatrixLayoutCreate(l, dt(t), (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        const int32_t b = (int32_t)batch;
        MPL_CUBLAS(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b,
                                                    sizeof b));
        MPL_CUBLAS(cublasLtMatrixLayoutSetAttribute(
            *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
    return MPL_OK;
}

static mpl_status check_args(const mpl_cuda_gemm_args *g)
{
    const int64_t ra = g->ta ? g->k : g->m, ca = g->ta ? g->m : g->k; /* A as stored */
    const int64_t rb = g->tb ? g->n : g->k, cb = g->tb ? g->k : g->n;
    (void)ra, (void)rb;
    if (g->m < 0 || g->n < 0 || g->k < 1 || g->batch < 1)
        return mpl_err(MPL_ERR_ARG, "gemm: m=%lld n=%lld k=%lld batch=%lld (need k, batch >= 1)",
                       (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->batch);
    if (g->lda < ca || g->ldb < cb || g->ldd < g->n || (g->c && g->ldc < g->n))
        return mpl_err(MPL_ERR_ARG,
                       "gemm: leading dimensions lda=%lld ldb=%lld ldc=%lld ldd=%lld too small "
                       "for m=%lld n=%lld k=%lld ta=%d tb=%d",
                       (long long)g->lda, (long long)g->ldb, (long long)g->ldc,
                       (long long)g->ldd, (long long)g->m, (long long)g->n, (long long)g->k, g->ta,
                       g->tb);
    if (g->batch > INT32_MAX)
        return mpl_err(MPL_ERR_ARG, "gemm: batch=%lld exceeds INT32_MAX", (long long)g->batch);
    return MPL_OK;
}

/* The cached algorithm for key, or -1. */
static int cache_find(const mpl_cuda *c, const mpl_cuda_gemm_key *k)
{
    for (int i = 0; i < c->n_cache; i++)
        if (memcmp(&c->cache[i].key, k, sizeof *k) == 0) return i;
    return -1;
}

typedef struct lt_problem {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc, ld;
} lt_problem;

static void problem_free(lt_problem *p)
{
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

/* cuBLASLt's view: its A = our B, its B = our A, its (M, N) = our (n, m). */
static mpl_status problem_make(const mpl_cuda_gemm_args *g, lt_problem *p)
{
    memset(p, 0, sizeof *p);
    MPL_CUBLAS(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    MPL_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    MPL_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    MPL_CHECK(layout(&p->la, g->ab_type, g->tb ? g->k : g->n, g->tb ? g->n : g->k, g->ldb,
                     g->batch, g->stride_b));
    MPL_CHECK(layout(&p->lb, g->ab_type, g->ta ? g->m : g->k, g->ta ? g->k : g->m, g->lda,
                     g->batch, g->stride_a));
    MPL_CHECK(layout(&p->ld, g->d_type, g->n, g->m, g->ldd, g->batch, g->stride_d));
    if (g->c) MPL_CHECK(layout(&p->lc, g->d_type, g->n, g->m, g->ldc, g->batch, g->stride_c));
    return MPL_OK;
}

static mpl_status choose(mpl_cuda *c, const mpl_cuda_gemm_args *g, const lt_problem *p,
                         const int64_t al[4], cublasLtMatmulAlgo_t *algo)
{
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
    const uint64_t ws = c->lt_work_bytes;
    const uint32_t a32[4] = {(uint32_t)al[0], (uint32_t)al[1], (uint32_t)al[2], (uint32_t)al[3]};
    const cublasLtMatmulPreferenceAttributes_t which[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &ws, sizeof ws);
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, which[i], &a32[i], sizeof a32[i]);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->lc ? p->lc : p->ld,
                                           p->ld, pref, 1, &res, &n_res);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || n_res < 1)
        return mpl_err(MPL_ERR_CUDA,
                       "cuBLASLt has no algorithm for m=%lld n=%lld k=%lld ta=%d tb=%d %s->%s "
                       "lda=%lld ldb=%lld ldd=%lld batch=%lld, alignments %lld/%lld/%lld/%lld "
                       "bytes: %s",
                       (long long)g->m, (long long)g->n, (long long)g->k, g->ta, g->tb,
                       g->ab_type == MPL_CUDA_BF16 ? "bf16" : "fp32",
                       g->d_type == MPL_CUDA_BF16 ? "bf16" : "fp32", (long long)g->lda,
                       (long long)g->ldb, (long long)g->ldd, (long long)g->batch,
                       (long long)al[0], (long long)al[1], (long long)al[2], (long long)al[3],
                       s != CUBLAS_STATUS_SUCCESS ? mpl_cublas_status_str(s) : "none found");
    *algo = res.algo;
    return MPL_OK;
}

mpl_status mpl_cuda_gemm(mpl_cuda *c, const mpl_cuda_gemm_args *g)
{
    if (g->m == 0 || g->n == 0) return MPL_OK;
    MPL_CHECK(check_args(g));
    const int64_t ea = esize(g->ab_type), ed = esize(g->d_type);
    /* alignments of cuBLASLt's A (our b), B (our a), C, D */
    const void *cp = g->c ? g->c : g->d;
    const int64_t sc = g->c ? g->stride_c : g->stride_d;
    const int64_t al[4] = {align_of(g->b, g->batch > 1 ? g->stride_b * ea : 0),
                           align_of(g->a, g->batch > 1 ? g->stride_a * ea : 0),
                           align_of(cp, g->batch > 1 ? sc * ed : 0),
                           align_of(g->d, g->batch > 1 ? g->stride_d * ed : 0)};
    mpl_cuda_gemm_key key;
    memset(&key, 0, sizeof key);
    const int64_t kv[18] = {g->ta, g->tb, g->m, g->n, g->k, g->ab_type, g->d_type, g->lda,
                            g->ldb, g->c ? g->ldc : -1, g->ldd, g->batch,
                            g->batch > 1 ? g->stride_a : 0, g->batch > 1 ? g->stride_b : 0,
                            g->batch > 1 ? sc : 0, g->batch > 1 ? g->stride_d : 0,
                            al[0] | al[1] << 9 | al[2] << 18 | al[3] << 27, g->c != NULL};
    memcpy(key.v, kv, sizeof kv);
    mpl_status st = MPL_OK;
    lt_problem p;
    MPL_CHECK_GOTO(problem_make(g, &p), done);
    cublasLtMatmulAlgo_t algo;
    const int hit = cache_find(c, &key);
    if (hit >= 0) {
        algo = c->cache[hit].algo;
    } else {
        MPL_CHECK_GOTO(choose(c, g, &p, al, &algo), done);
        if (c->n_cache == MPL_CUDA_GEMM_CACHE) c->n_cache = 0;
        c->cache[c->n_cache].key = key;
        c->cache[c->n_cache].algo = algo;
        c->n_cache++;
    }
    const cublasStatus_t s =
        cublasLtMatmul(c->lt, p.op, &g->alpha, g->b, p.la, g->a, p.lb, &g->beta, cp,
                       p.lc ? p.lc : p.ld, g->d, p.ld, &algo, c->lt_work, c->lt_work_bytes,
                       c->stream);
    if (s != CUBLAS_STATUS_SUCCESS)
        st = mpl_err(MPL_ERR_CUDA, "cublasLtMatmul (m=%lld n=%lld k=%lld batch=%lld): %s",
                     (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->batch,
                     mpl_cublas_status_str(s));
done:
    problem_free(&p);
    return st;
}

mpl_status mpl_cuda_linear_forward(mpl_cuda *c, void *out, mpl_cuda_dtype out_type,
                                   const mpl_bf16 *x, const mpl_bf16 *w, const float *res,
                                   int64_t n, int64_t IC, int64_t OC)
{
    if (res && out_type != MPL_CUDA_F32)
        return mpl_err(MPL_ERR_ARG, "linear forward: a residual needs an fp32 output");
    /* out (n, OC) = x (n, IC) W^T, W stored (OC, IC) */
    const mpl_cuda_gemm_args g = {.ta = 0, .tb = 1, .m = n, .n = OC, .k = IC, .alpha = 1,
                                  .beta = res ? 1.0f : 0.0f, .ab_type = MPL_CUDA_BF16,
                                  .d_type = out_type, .a = x, .lda = IC, .b = w, .ldb = IC,
                                  .c = res, .ldc = OC, .d = out, .ldd = OC, .batch = 1};
    return mpl_cuda_gemm(c, &g);
}

mpl_status mpl_cuda_linear_backward_x(mpl_cuda *c, void *dx, mpl_cuda_dtype dx_type, float alpha,
                                      const mpl_bf16 *dout, const mpl_bf16 *w, int64_t n,
                                      int64_t IC, int64_t OC)
{
    /* dx (n, IC) = dout (n, OC) W (OC, IC) */
    const mpl_cuda_gemm_args g = {.ta = 0, .tb = 0, .m = n, .n = IC, .k = OC, .alpha = alpha,
                                  .beta = 0, .ab_type = MPL_CUDA_BF16, .d_type = dx_type,
                                  .a = dout, .lda = OC, .b = w, .ldb = IC, .d = dx, .ldd = IC,
                                  .batch = 1};
    return mpl_cuda_gemm(c, &g);
}

mpl_status mpl_cuda_linear_backward_w(mpl_cuda *c, float *dw, float alpha, const mpl_bf16 *dout,
                                      const mpl_bf16 *x, int64_t n, int64_t IC, int64_t OC)
{
    /* dW (OC, IC) += dout^T (OC, n) x (n, IC); dout stored (n, OC) */
    const mpl_cuda_gemm_args g = {.ta = 1, .tb = 0, .m = OC, .n = IC, .k = n, .alpha = alpha,
                                  .beta = 1, .ab_type = MPL_CUDA_BF16, .d_type = MPL_CUDA_F32,
                                  .a = dout, .lda = OC, .b = x, .ldb = IC, .d = dw, .ldd = IC,
                                  .batch = 1};
    return mpl_cuda_gemm(c, &g);
}
