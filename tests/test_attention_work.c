/* What a mechanism that runs over the whole chunk allocates during a call
 * is what its work_bytes (core/attn.h) says, the figure memory plans add
 * as "attention work": the peak of this process's live heap during one
 * forward and one backward, measured by wrapping the allocator, lies
 * within 10% of it (plus a few pages for the runtime). Dense and both
 * Combiners, causal and bidirectional, with and without RoPE and padding,
 * on one rank (no communicator) and split over the ranks of the run. */
#include <errno.h>
#include <malloc.h>
#include <mpi.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "attention/registry.h"
#include "dist/comm.h"
#include "dist/grid.h"

static _Atomic int64_t live, peak; /* bytes of the heap now, and at most */

#ifndef __SANITIZE_ADDRESS__ /* the sanitizer owns the allocator there */
/* The allocator, wrapped: every block counted by its usable size. The
 * definitions here take the place of libc's for the whole process
 * (libgomp and MPI included), so blocks freed here were counted here. */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);


static void *counted(void *p)
{
    if (!p) return p;
    const int64_t n = (int64_t)malloc_usable_size(p);
    const int64_t now = atomic_fetch_add(&live, n) + n;
    int64_t was = atomic_load(&peak);
    while (now > was && !atomic_compare_exchange_weak(&peak, &was, now)) {
    }
    return p;
}

void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void *calloc(size_t n, size_t size) { return counted(__libc_calloc(n, size)); }
void *memalign(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }
void *aligned_alloc(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }

void free(void *p)
{
    if (!p) return;
    atomic_fetch_sub(&live, (int64_t)malloc_usable_size(p));
    __libc_free(p);
}

void *realloc(void *p, size_t n)
{
    const int64_t old = p ? (int64_t)malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q || n == 0) atomic_fetch_sub(&live, old); /* p is gone */
    return q ? counted(q) : q;
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p = counted(__libc_memalign(align, n));
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
#endif

static mpl_comm *world;

/* Bytes the heap grew by at most while the call ran. */
static int64_t peak_start(void)
{
    const int64_t now = atomic_load(&live);
    atomic_store(&peak, now);
    return now;
}

typedef struct work_case {
    mpl_attn_kind kind;
    int causal, masked, split;
    double theta;
    int64_t segment;
} work_case;

static void run_case(const work_case *w)
{
    const int64_t S = 2, L = 1200, H = 2, d = 16, HD = H * d, W = 3 * HD;
    const int P = w->split ? mpl_comm_size(world) : 1, p = w->split ? mpl_comm_rank(world) : 0;
    int64_t a, b;
    mpl_grid_chunk(L, P, p, &a, &b);
    const int64_t T = b - a;
    mpl_attn_cfg cfg = {.kind = w->kind, .causal = w->causal, .n_head = (int)H,
                        .head_dim = (int)d, .seq_len = L, .rope_theta = w->theta,
                        .segment = w->segment};
    mpl_attn at = {0};
    assert_int_equal(mpl_attn_create(&cfg, w->split ? world : NULL, &at), MPL_OK);
    assert_non_null(at.ops->work_bytes);
    uint8_t *mask = NULL;
    if (w->masked) { /* a padded tail on the second sequence */
        mask = malloc((size_t)(S * T));
        for (int64_t s = 0; s < S; s++)
            for (int64_t t = 0; t < T; t++) mask[s * T + t] = !(s == 1 && a + t >= L - 377);
    }
    const mpl_attn_geom g = {.n_seq = S, .n_tok = T, .pos0 = a, .mask = mask};
    const int64_t n_saved = at.ops->saved_elems(at.impl, &g);
    float *qkv = mpl_test_falloc(S * T * W), *out = mpl_test_falloc(S * T * HD);
    float *dout = mpl_test_falloc(S * T * HD), *dqkv = mpl_test_falloc(S * T * W);
    float *saved = mpl_test_falloc(n_saved > 0 ? n_saved : 1);
    mpl_test_fill_f32(qkv, S * T * W, mpl_test_seed(), 900, -1, 1);
    mpl_test_fill_f32(dout, S * T * HD, mpl_test_seed(), 901, -1, 1);
    memset(dqkv, 0, (size_t)(S * T * W) * sizeof *dqkv);
    /* once unmeasured: the runtimes set themselves up on first use */
    assert_int_equal(at.ops->forward(at.impl, 0, &g, NULL, qkv, out, saved), MPL_OK);
    assert_int_equal(at.ops->backward(at.impl, 0, &g, NULL, qkv, saved, dout, dqkv, NULL), MPL_OK);
    int64_t base = peak_start();
    assert_int_equal(at.ops->forward(at.impl, 0, &g, NULL, qkv, out, saved), MPL_OK);
    const int64_t fwd = atomic_load(&peak) - base;
    base = peak_start();
    assert_int_equal(at.ops->backward(at.impl, 0, &g, NULL, qkv, saved, dout, dqkv, NULL), MPL_OK);
    const int64_t bwd = atomic_load(&peak) - base;
    const int64_t used = fwd > bwd ? fwd : bwd, plan = at.ops->work_bytes(at.impl, &g);
    const int64_t slack = 64 << 10;
    const double dev = used > 0 ? (double)(plan - used) / (double)used : 0;
    printf("work %-18s causal=%d rope=%g mask=%d ranks=%d rank=%d: forward %lld, backward %lld, "
           "work_bytes %lld B (%+.1f%%)\n", at.ops->name, w->causal, w->theta, w->masked, P, p,
           (long long)fwd, (long long)bwd, (long long)plan, 100 * dev);
    assert_true(used <= plan + slack);
    assert_true(plan <= used + used / 10 + slack);
    mpl_attn_destroy(&at);
    free(mask), free(qkv), free(out), free(dout), free(dqkv), free(saved);
}

static void run_kind(mpl_attn_kind kind, int split)
{
    for (int causal = 0; causal <= 1; causal++)
        for (int v = 0; v < 2; v++) {
            const work_case w = {.kind = kind, .causal = causal, .masked = v, .split = split,
                                 .theta = v ? 10000.0 : 0, .segment = v ? 37 : 40};
            run_case(&w);
        }
}

static void test_attention_work_dense(void **state)
{
    (void)state;
    if (mpl_comm_rank(world) == 0) run_kind(MPL_ATTN_KIND_DENSE, 0);
}

static void test_attention_work_combiner(void **state)
{
    (void)state;
    for (int ls = 0; ls <= 1; ls++) {
        const mpl_attn_kind k = ls ? MPL_ATTN_KIND_COMBINER_LOGSPARSE : MPL_ATTN_KIND_COMBINER_FIXED;
        if (mpl_comm_rank(world) == 0) run_kind(k, 0);
        run_kind(k, 1);
    }
}

int main(int argc, char **argv)
{
#ifdef __SANITIZE_ADDRESS__
    (void)argc, (void)argv;
    puts("SKIP: the heap is measured by wrapping the allocator, which AddressSanitizer owns");
    return 77;
#endif
    MPI_Init(&argc, &argv);
    if (mpl_comm_create_world(&world) != MPL_OK) return 1;
    omp_set_num_threads(2); /* per-thread scratch counts */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_work_dense),
        cmocka_unit_test(test_attention_work_combiner),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mpl_comm_destroy(&world);
    MPI_Finalize();
    return rc;
}
