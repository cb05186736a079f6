// CPU emulation of the CUDA runtime, kernel launches and cuBLASLt subset
// declared in include/ (see README.md). Device allocations are host
// allocations with guard zones (checked at every free and synchronisation),
// copies check their direction and bounds, launches check their
// configuration like the real runtime, and a block's threads run as
// cooperative fibers so that __syncthreads and warp shuffles mean what
// they mean on a GPU. Blocks run one after the other on the calling thread.
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <map>
#include <vector>

#include "cublasLt.h"
#include "cuda_bf16.h"
#include "cuda_runtime.h"

// ---- errors -------------------------------------------------------------------

static cudaError_t g_last = cudaSuccess;

static cudaError_t fail(cudaError_t e, const char *what)
{
    fprintf(stderr, "cuda_emu: %s\n", what);
    g_last = e;
    return e;
}

extern "C" void mpl_emu_set_error(cudaError_t e) { g_last = e; }

extern "C" const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInsufficientDriver:
        return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    default: return "unknown error";
    }
}

extern "C" cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
extern "C" cudaError_t cudaPeekAtLastError(void) { return g_last; }

// ---- device ------------------------------------------------------------------

static int no_gpu(void)
{
    const char *e = getenv("MPL_EMU_NO_GPU");
    return e && *e && strcmp(e, "0") != 0;
}

extern "C" cudaError_t cudaGetDeviceCount(int *n)
{
    if (no_gpu()) {
        *n = 0;
        g_last = cudaErrorInsufficientDriver;
        return cudaErrorInsufficientDriver;
    }
    *n = 1;
    return cudaSuccess;
}
static int g_dev = 0;
extern "C" cudaError_t cudaSetDevice(int d)
{
    if (d != 0 || no_gpu()) return fail(cudaErrorInvalidDevice, "cudaSetDevice: no such device");
    g_dev = d;
    return cudaSuccess;
}
extern "C" cudaError_t cudaGetDevice(int *d)
{
    *d = g_dev;
    return cudaSuccess;
}
static const size_t EMU_TOTAL = (size_t)80 << 30;
extern "C" cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    if (d != 0) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties: no such device");
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda_emu (CPU emulation)");
    p->multiProcessorCount = 132;
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = EMU_TOTAL;
    return cudaSuccess;
}

struct CUstream_st {
    int id;
};
extern "C" cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    *s = new CUstream_st{1};
    return cudaSuccess;
}
extern "C" cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}

// ---- memory ---------------------------------------------------------------------

static const size_t GUARD = 256;
static const unsigned char GUARD_BYTE = 0xa5;
static std::map<uintptr_t, size_t> g_allocs; // user base -> user bytes
static size_t g_used = 0;

static void check_guards(uintptr_t base, size_t n)
{
    const unsigned char *lo = (const unsigned char *)base - GUARD, *hi = (const unsigned char *)base + n;
    for (size_t i = 0; i < GUARD; i++)
        if (lo[i] != GUARD_BYTE || hi[i] != GUARD_BYTE) {
            fprintf(stderr, "cuda_emu: a kernel or copy wrote %s the device allocation %p (%zu bytes)\n",
                    lo[i] != GUARD_BYTE ? "before" : "past", (void *)base, n);
            abort();
        }
}

static void check_all(void)
{
    for (auto &a : g_allocs) check_guards(a.first, a.second);
}

// The allocation holding [p, p + n), or 0 when none does.
static int in_device(const void *p, size_t n)
{
    const uintptr_t u = (uintptr_t)p;
    auto it = g_allocs.upper_bound(u);
    if (it == g_allocs.begin()) return 0;
    --it;
    return u >= it->first && u + n <= it->first + it->second;
}

extern "C" int mpl_emu_is_device(const void *p) { return in_device(p, 1); }

extern "C" cudaError_t cudaMalloc(void **p, size_t n)
{
    unsigned char *raw = (unsigned char *)aligned_alloc(256, (n + 2 * GUARD + 255) / 256 * 256);
    if (!raw) return fail(cudaErrorMemoryAllocation, "cudaMalloc: out of memory");
    memset(raw, GUARD_BYTE, GUARD);
    memset(raw + GUARD, 0xff, n); // NaN everywhere until written
    memset(raw + GUARD + n, GUARD_BYTE, GUARD);
    *p = raw + GUARD;
    g_allocs[(uintptr_t)*p] = n;
    g_used += n;
    return cudaSuccess;
}

extern "C" cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) return fail(cudaErrorInvalidValue, "cudaFree of a pointer cudaMalloc did not return");
    check_guards(it->first, it->second);
    g_used -= it->second;
    g_allocs.erase(it);
    free((unsigned char *)p - GUARD);
    return cudaSuccess;
}

extern "C" cudaError_t cudaMemGetInfo(size_t *f, size_t *t)
{
    *t = EMU_TOTAL;
    *f = EMU_TOTAL - g_used;
    return cudaSuccess;
}

extern "C" cudaError_t cudaMemset(void *p, int v, size_t n)
{
    if (n && !in_device(p, n)) return fail(cudaErrorInvalidValue, "cudaMemset outside a device allocation");
    memset(p, v, n);
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    (void)s;
    return cudaMemset(p, v, n);
}

extern "C" cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    if (!n) return cudaSuccess;
    const int dd = in_device(dst, n), sd = in_device(src, n);
    const int want_d = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    const int want_s = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if (k != cudaMemcpyDefault && (dd != want_d || sd != want_s)) {
        char msg[256];
        snprintf(msg, sizeof msg, "cudaMemcpy kind %d of %zu bytes: destination %s, source %s", (int)k,
                 n, dd ? "in device memory" : "not (wholly) in device memory",
                 sd ? "in device memory" : "not (wholly) in device memory");
        return fail(cudaErrorInvalidValue, msg);
    }
    memmove(dst, src, n);
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                                       cudaStream_t s)
{
    (void)s;
    return cudaMemcpy(dst, src, n, k);
}

extern "C" cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    check_all();
    return cudaSuccess;
}
extern "C" cudaError_t cudaDeviceSynchronize(void)
{
    check_all();
    return cudaSuccess;
}

// ---- kernels: blocks of cooperative fibers ------------------------------------

namespace {
struct Fiber {
    ucontext_t uc;
    jmp_buf jb;
    char *stack;
    int started, done;
    long bar, wbar; // barriers passed: block, warp
    mpl_emu_uint3 tid;
};
struct Block {
    std::vector<Fiber> f;
    std::vector<uint64_t> slot; // shuffle exchange, one per thread
    jmp_buf sched;
    int cur = -1;
    mpl_emu_uint3 bidx{0, 0, 0}, bdim{1, 1, 1}, gdim{1, 1, 1};
    std::function<void()> *fn = nullptr;
};
Block B;
const size_t STACK = 256 << 10;
mpl_emu_uint3 g_zero{0, 0, 0};
} // namespace

const mpl_emu_uint3 &mpl_emu_thread_idx() { return B.cur >= 0 ? B.f[B.cur].tid : g_zero; }
const mpl_emu_uint3 &mpl_emu_block_idx() { return B.bidx; }
const mpl_emu_uint3 &mpl_emu_block_dim() { return B.bdim; }
const mpl_emu_uint3 &mpl_emu_grid_dim() { return B.gdim; }

static void yield_to_scheduler()
{
    Fiber &f = B.f[B.cur];
    if (!_setjmp(f.jb)) _longjmp(B.sched, 1);
}

static void fiber_entry()
{
    (*B.fn)();
    B.f[B.cur].done = 1;
    _longjmp(B.sched, 1);
}

void __syncthreads()
{
    Fiber &me = B.f[B.cur];
    const long g = ++me.bar;
    for (;;) {
        int all = 1;
        for (auto &o : B.f)
            if (!o.done && o.bar < g) { all = 0; break; }
        if (all) return;
        yield_to_scheduler();
    }
}

static void warp_barrier()
{
    const int me_i = B.cur, w0 = me_i / 32 * 32;
    const int w1 = w0 + 32 < (int)B.f.size() ? w0 + 32 : (int)B.f.size();
    const long g = ++B.f[me_i].wbar;
    for (;;) {
        int all = 1;
        for (int i = w0; i < w1; i++)
            if (!B.f[i].done && B.f[i].wbar < g) { all = 0; break; }
        if (all) return;
        yield_to_scheduler();
    }
}

void __syncwarp(unsigned) { warp_barrier(); }

uint64_t mpl_emu_shfl_bits(uint64_t v, int lane, int xor_mode)
{
    const int me = B.cur, w0 = me / 32 * 32;
    const int src = w0 + (xor_mode ? ((me - w0) ^ lane) : (lane & 31));
    B.slot[me] = v;
    warp_barrier();
    const uint64_t r = src < (int)B.f.size() ? B.slot[src] : v;
    warp_barrier();
    return r;
}

// Run fiber i until it finishes or waits (a separate frame for _setjmp,
// so nothing of the caller's is clobbered by the jump back).
static __attribute__((noinline)) void resume(int i)
{
    Fiber &f = B.f[i];
    B.cur = i;
    if (!_setjmp(B.sched)) {
        if (!f.started) {
            f.started = 1;
            ucontext_t from;
            swapcontext(&from, &f.uc);
        } else {
            _longjmp(f.jb, 1);
        }
    }
}

void mpl_emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> fn)
{
    const unsigned long long n_thr = (unsigned long long)block.x * block.y * block.z;
    if (n_thr == 0 || n_thr > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u || smem > 48 * 1024) {
        fprintf(stderr, "cuda_emu: bad launch grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", grid.x,
                grid.y, grid.z, block.x, block.y, block.z, smem);
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    if (B.cur >= 0) {
        fprintf(stderr, "cuda_emu: a kernel launched a kernel\n");
        abort();
    }
    B.fn = &fn;
    B.bdim = {block.x, block.y, block.z};
    B.gdim = {grid.x, grid.y, grid.z};
    const int n = (int)n_thr;
    if ((int)B.f.size() != n) {
        for (auto &f : B.f) free(f.stack);
        B.f.assign(n, Fiber{});
        for (auto &f : B.f) f.stack = (char *)malloc(STACK);
        B.slot.assign(n, 0);
    }
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                B.bidx = {bx, by, bz};
                for (int i = 0; i < n; i++) {
                    Fiber &f = B.f[i];
                    f.tid = {(unsigned)(i % block.x), (unsigned)(i / block.x % block.y),
                             (unsigned)(i / (block.x * block.y))};
                    f.started = f.done = 0;
                    f.bar = f.wbar = 0;
                    getcontext(&f.uc);
                    f.uc.uc_stack.ss_sp = f.stack;
                    f.uc.uc_stack.ss_size = STACK;
                    f.uc.uc_link = nullptr;
                    makecontext(&f.uc, fiber_entry, 0);
                }
                for (int left = n; left > 0;) {
                    left = 0;
                    for (int i = 0; i < n; i++) {
                        if (B.f[i].done) continue;
                        resume(i);
                        left += !B.f[i].done;
                    }
                }
                B.cur = -1;
            }
    B.cur = -1;
    B.fn = nullptr;
}

// ---- cuBLASLt -------------------------------------------------------------------

struct mpl_emu_lt {
    int magic;
};
struct mpl_emu_lt_op {
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};
struct mpl_emu_lt_layout {
    cudaDataType_t t;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch = 1;
    int64_t stride = 0;
};
struct mpl_emu_lt_pref {
    uint32_t align[4] = {256, 256, 256, 256};
};

extern "C" cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new mpl_emu_lt{1};
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
                                                   cudaDataType_t scale)
{
    if (c != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new mpl_emu_lt_op;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                                         cublasLtMatmulDescAttributes_t a,
                                                         const void *buf, size_t n)
{
    if (n != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
    if (a == CUBLASLT_MATMUL_DESC_TRANSA) memcpy(&d->ta, buf, n);
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB) memcpy(&d->tb, buf, n);
    else return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                                     uint64_t rows, uint64_t cols, int64_t ld)
{
    if (ld < (int64_t)rows || ld < 1) return CUBLAS_STATUS_INVALID_VALUE; // column-major: ld >= rows
    *l = new mpl_emu_lt_layout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                           cublasLtMatrixLayoutAttribute_t a,
                                                           const void *buf, size_t n)
{
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && n == sizeof(int32_t)) memcpy(&l->batch, buf, n);
    else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && n == sizeof(int64_t)) memcpy(&l->stride, buf, n);
    else return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new mpl_emu_lt_pref;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                               cublasLtMatmulPreferenceAttributes_t a,
                                                               const void *buf, size_t n)
{
    if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return n == 8 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES && n == 4) {
        memcpy(&p->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, n);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

// The problem's consistency, as the real library checks it.
static cublasStatus_t lt_check(const mpl_emu_lt_op *op, const mpl_emu_lt_layout *a,
                               const mpl_emu_lt_layout *b, const mpl_emu_lt_layout *c,
                               const mpl_emu_lt_layout *d)
{
    const uint64_t M = d->rows, N = d->cols;
    const uint64_t am = op->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = op->ta == CUBLAS_OP_N ? a->cols : a->rows;
    const uint64_t bk = op->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = op->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != M || bn != N || ak != bk || c->rows != M || c->cols != N) {
        fprintf(stderr, "cuda_emu: cublasLt shapes disagree: op(A) %llux%llu op(B) %llux%llu C %llux%llu D %llux%llu\n",
                (unsigned long long)am, (unsigned long long)ak, (unsigned long long)bk,
                (unsigned long long)bn, (unsigned long long)c->rows, (unsigned long long)c->cols,
                (unsigned long long)M, (unsigned long long)N);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (a->batch != d->batch || b->batch != d->batch || c->batch != d->batch) return CUBLAS_STATUS_INVALID_VALUE;
    if (c->t != d->t || a->t != b->t) return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                                         cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                         cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                         cublasLtMatmulPreference_t pref, int requested,
                                                         cublasLtMatmulHeuristicResult_t *res, int *n_res)
{
    (void)h;
    *n_res = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    const cublasStatus_t s = lt_check(op, a, b, c, d);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    memset(res, 0, sizeof *res);
    for (int i = 0; i < 4; i++) res->algo.data[i] = pref->align[i]; // what it may assume
    res->state = CUBLAS_STATUS_SUCCESS;
    *n_res = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static double elem(const void *p, cudaDataType_t t, int64_t i)
{
    if (t == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

static int aligned(const void *p, const mpl_emu_lt_layout *l, uint64_t need)
{
    const size_t es = l->t == CUDA_R_16BF ? 2 : 4;
    if ((uintptr_t)p % need) return 0;
    return l->batch <= 1 || ((uint64_t)l->stride * es) % need == 0;
}

static int covered(const void *p, const mpl_emu_lt_layout *l)
{
    const size_t es = l->t == CUDA_R_16BF ? 2 : 4;
    const int64_t last = (int64_t)(l->batch - 1) * l->stride + ((int64_t)l->cols - 1) * l->ld + (int64_t)l->rows;
    return in_device(p, (size_t)last * es);
}

extern "C" cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                                         const void *A, cublasLtMatrixLayout_t la, const void *B,
                                         cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                                         cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                                         const cublasLtMatmulAlgo_t *algo, void *work, size_t work_bytes,
                                         cudaStream_t s)
{
    (void)h, (void)work, (void)work_bytes, (void)s;
    cublasStatus_t st = lt_check(op, la, lb, lc, ld);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    const void *ptr[4] = {A, B, C, D};
    const mpl_emu_lt_layout *lay[4] = {la, lb, lc, ld};
    for (int i = 0; i < 4; i++) {
        if (!aligned(ptr[i], lay[i], algo->data[i])) {
            fprintf(stderr, "cuda_emu: cublasLtMatmul operand %c at %p less aligned than the %llu bytes "
                    "the algorithm was chosen for\n", "ABCD"[i], ptr[i], (unsigned long long)algo->data[i]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (!covered(ptr[i], lay[i])) {
            fprintf(stderr, "cuda_emu: cublasLtMatmul operand %c (%llux%llu ld %lld batch %d stride %lld) "
                    "runs past its device allocation\n", "ABCD"[i], (unsigned long long)lay[i]->rows,
                    (unsigned long long)lay[i]->cols, (long long)lay[i]->ld, lay[i]->batch,
                    (long long)lay[i]->stride);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    const float al = *(const float *)alpha, be = *(const float *)beta;
    const int64_t M = (int64_t)ld->rows, N = (int64_t)ld->cols;
    const int64_t K = (int64_t)(op->ta == CUBLAS_OP_N ? la->cols : la->rows);
    std::vector<float> out((size_t)(M * N));
    for (int32_t bi = 0; bi < ld->batch; bi++) {
        const int64_t oa = bi * la->stride, ob = bi * lb->stride, oc = bi * lc->stride, od = bi * ld->stride;
        for (int64_t j = 0; j < N; j++)
            for (int64_t i = 0; i < M; i++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++) {
                    const int64_t ia = op->ta == CUBLAS_OP_N ? i + k * la->ld : k + i * la->ld;
                    const int64_t ib = op->tb == CUBLAS_OP_N ? k + j * lb->ld : j + k * lb->ld;
                    acc += elem(A, la->t, oa + ia) * elem(B, lb->t, ob + ib);
                }
                double v = al * acc;
                if (be != 0) v += be * elem(C, lc->t, oc + i + j * lc->ld);
                out[(size_t)(i + j * M)] = (float)v;
            }
        // written after all reads: C and D may be the same matrix
        for (int64_t j = 0; j < N; j++)
            for (int64_t i = 0; i < M; i++) {
                const float v = out[(size_t)(i + j * M)];
                if (ld->t == CUDA_R_16BF) ((__nv_bfloat16 *)D)[od + i + j * ld->ld] = __float2bfloat16(v);
                else ((float *)D)[od + i + j * ld->ld] = v;
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
