/* Template body of the small dense kernels FMM attention is built from
 * (fmm.h): a register-tiled product on thread-local panels, a blocked
 * transpose, a vector exp, horizontal reductions and RoPE on rows by
 * composed rotations. Included once per precision by fmm_f32.c /
 * fmm_f64.c after the precision macros (MPL_REAL, MPL_IREAL, MPL_SUF,
 * MPL_EXP, MPL_FMM_VEXP_F32); no include guard on purpose.
 *
 * Separate from the near and far fields because both use every kernel.
 * The vectors are GCC vector extensions of MPL_FMM_LANES reals: 64 bytes
 * (AVX-512) where the compiler targets it for fp32, 32 bytes (AVX2 + FMA
 * with -march=native on x86-64, two SSE halves or scalar code wherever
 * else the compiler is told less) otherwise; no intrinsics, so the same
 * source builds everywhere (tests/test_attention_fmm_lanes.c builds the
 * fp32 bodies at the other width too). Panels are padded: a row of d
 * values occupies dp = d rounded up to whole vectors, pad columns are
 * zero, so one code path serves every head_dim (the fp64 finite-difference
 * tests with d = 4 run the kernels that train with d = 32). Every
 * reduction runs in a fixed order, so results depend neither on the
 * thread count nor on alignment. */

/* Without AVX, GCC warns that wide vector arguments change the ABI:
 * they only pass between static functions of this translation unit, and
 * the small vector helpers (FMM_INLINE) are always inlined. */
#pragma GCC diagnostic ignored "-Wpsabi"
/* Row copies of a head are 128 bytes: GCC would turn the copy loops
 * into library calls that cost more than the copy. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif
#define FMM_INLINE static inline __attribute__((always_inline))

typedef MPL_REAL MPL_SUF(fmm_v) __attribute__((vector_size(MPL_FMM_LANES * sizeof(MPL_REAL))));
typedef MPL_IREAL MPL_SUF(fmm_vi) __attribute__((vector_size(MPL_FMM_LANES * sizeof(MPL_IREAL))));
_Static_assert(sizeof(MPL_REAL) == sizeof(MPL_IREAL), "lane masks must match the reals");
#define FMM_V MPL_SUF(fmm_v)
#define FMM_VI MPL_SUF(fmm_vi)
#define FMM_VW ((int64_t)MPL_FMM_LANES)

static inline int64_t MPL_SUF(fmm_pad)(int64_t n) { return (n + FMM_VW - 1) / FMM_VW * FMM_VW; }

FMM_INLINE FMM_V MPL_SUF(fmm_ld)(const MPL_REAL *p)
{
    FMM_V v;
    memcpy(&v, p, sizeof v);
    return v;
}
FMM_INLINE void MPL_SUF(fmm_st)(MPL_REAL *p, FMM_V v) { memcpy(p, &v, sizeof v); }
FMM_INLINE FMM_V MPL_SUF(fmm_splat)(MPL_REAL x) { return (FMM_V){0} + x; }
/* lanes of m (all ones / zero) pick a, the others b */
FMM_INLINE FMM_V MPL_SUF(fmm_sel)(FMM_VI m, FMM_V a, FMM_V b)
{
    return (FMM_V)(((FMM_VI)a & m) | ((FMM_VI)b & ~m));
}
FMM_INLINE FMM_V MPL_SUF(fmm_vmax)(FMM_V a, FMM_V b) { return MPL_SUF(fmm_sel)(a > b, a, b); }
FMM_INLINE FMM_V MPL_SUF(fmm_vmin)(FMM_V a, FMM_V b) { return MPL_SUF(fmm_sel)(a < b, a, b); }
/* lane index vector 0, 1, ..., VW-1 */
FMM_INLINE FMM_VI MPL_SUF(fmm_iota)(void)
{
    FMM_VI v;
    for (int l = 0; l < (int)FMM_VW; l++) v[l] = l;
    return v;
}
/* Horizontal sum and max as a fixed tree of lane swaps (halves, then
 * quarters, ...): in registers, and the same order every time. */
/* __builtin_shufflevector (constant lane indices) is what GCC >= 12 and
 * clang share; GCC's __builtin_shuffle with a mask vector is GCC's only. */
FMM_INLINE FMM_V MPL_SUF(fmm_swap)(FMM_V v, int k)
{
#if MPL_FMM_LANES == 16
    if (k == 8)
        return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    if (k == 4)
        return __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    if (k == 2)
        return __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#elif MPL_FMM_LANES == 8
    if (k == 4) return __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    if (k == 2) return __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#else
    if (k == 2) return __builtin_shufflevector(v, v, 2, 3, 0, 1);
    return __builtin_shufflevector(v, v, 1, 0, 3, 2);
#endif
}
/* The rounds written out: GCC leaves a k /= 2 loop rolled, with the
 * choice of shuffle made at run time. */
FMM_INLINE MPL_REAL MPL_SUF(fmm_hsum)(FMM_V v)
{
    if (MPL_FMM_LANES >= 16) v += MPL_SUF(fmm_swap)(v, 8);
    if (MPL_FMM_LANES >= 8) v += MPL_SUF(fmm_swap)(v, 4);
    v += MPL_SUF(fmm_swap)(v, 2);
    v += MPL_SUF(fmm_swap)(v, 1);
    return v[0];
}
FMM_INLINE MPL_REAL MPL_SUF(fmm_hmax)(FMM_V v)
{
    if (MPL_FMM_LANES >= 16) v = MPL_SUF(fmm_vmax)(v, MPL_SUF(fmm_swap)(v, 8));
    if (MPL_FMM_LANES >= 8) v = MPL_SUF(fmm_vmax)(v, MPL_SUF(fmm_swap)(v, 4));
    v = MPL_SUF(fmm_vmax)(v, MPL_SUF(fmm_swap)(v, 2));
    v = MPL_SUF(fmm_vmax)(v, MPL_SUF(fmm_swap)(v, 1));
    return v[0];
}

/* dst[c] += src[c], c < n (whole vectors, then the rest). */
static inline void MPL_SUF(fmm_add)(MPL_REAL *restrict dst, const MPL_REAL *restrict src, int64_t n)
{
    int64_t c = 0;
    for (; c + FMM_VW <= n; c += FMM_VW)
        MPL_SUF(fmm_st)(dst + c, MPL_SUF(fmm_ld)(dst + c) + MPL_SUF(fmm_ld)(src + c));
    for (; c < n; c++) dst[c] += src[c];
}

/* dst[c] = src[c], c < n: one row of a head, copied in registers (a
 * library call per 128-byte row costs more than the copy). */
static inline void MPL_SUF(fmm_row_copy)(MPL_REAL *restrict dst, const MPL_REAL *restrict src,
                                         int64_t n)
{
    int64_t c = 0;
    for (; c + FMM_VW <= n; c += FMM_VW) MPL_SUF(fmm_st)(dst + c, MPL_SUF(fmm_ld)(src + c));
    for (; c < n; c++) dst[c] = src[c];
}

/* Rows ahead into L2 (n rows of n_el reals, stride ld): the rows of a
 * head lie a row of the layer apart, too far apart and too many streams
 * for the hardware prefetcher to follow alone. The empty asm keeps GCC
 * from deleting a loop that holds nothing but prefetches. */
#define FMM_PREFETCH_ROWS(RW)                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                             \
        for (int64_t c = 0; c < n_el; c += 64 / (int64_t)sizeof *p)                               \
            __builtin_prefetch(p + i * ld + c, RW, 2);                                            \
        __builtin_prefetch(p + i * ld + n_el - 1, RW, 2);                                         \
        __asm__ __volatile__("");                                                                 \
    }
static inline void MPL_SUF(fmm_prefetch)(const MPL_REAL *p, int64_t ld, int64_t n, int64_t n_el)
{
    FMM_PREFETCH_ROWS(0)
}
/* the same for rows about to be written (read for ownership) */
static inline void MPL_SUF(fmm_prefetch_w)(const MPL_REAL *p, int64_t ld, int64_t n, int64_t n_el)
{
    FMM_PREFETCH_ROWS(1)
}
#undef FMM_PREFETCH_ROWS

#if MPL_FMM_VEXP_F32
/* mpl_expf_vec (core/fastexp.h) on a vector, the same steps lane by lane:
 * Cephes expf, x = n ln2 + r, 2^n from exponent bits, 0 below -87. */
FMM_INLINE FMM_V MPL_SUF(fmm_vexp)(FMM_V x)
{
    const FMM_V hi = MPL_SUF(fmm_splat)(88.7f), lo = MPL_SUF(fmm_splat)(-87.0f);
    const FMM_V shifter = MPL_SUF(fmm_splat)(12582912.0f);
    FMM_V xc = MPL_SUF(fmm_vmin)(x, hi);
    xc = MPL_SUF(fmm_vmax)(xc, lo);
    const FMM_V t = xc * 1.44269504088896341f + shifter;
    const FMM_V n = t - shifter;
    FMM_V r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    FMM_V p = MPL_SUF(fmm_splat)(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const FMM_VI e = (((FMM_VI)t - 0x4B400000) + 126) << 23;
    const FMM_V y = 2.0f * p * (FMM_V)e;
    return MPL_SUF(fmm_sel)(x < lo, (FMM_V){0}, y);
}
#else
/* the reference-precision instance: the libm function lane by lane */
FMM_INLINE FMM_V MPL_SUF(fmm_vexp)(FMM_V x)
{
    for (int l = 0; l < (int)FMM_VW; l++) x[l] = MPL_EXP(x[l]);
    return x;
}
#endif

/* Rows and vectors of one register tile. With 16 vector registers (AVX2,
 * SSE) 6 x 2: 12 accumulators, 2 B vectors and one broadcast; with the 32
 * of AVX-512, 8 x 2: 16 FMAs per 2 loads and 8 broadcasts, and the
 * 16- and 32-row panels of the far field split into whole tiles. Results do
 * not depend on the tile: every entry is one sum over c in order. */
#if defined(__AVX512F__)
#define FMM_MR 8
#else
#define FMM_MR 6
#endif
#define FMM_MV 2

/* The register tile: C (R x NV vectors) = or += sum_{c < k} A(r, c) B[c],
 * A(r, c) = A[r*ai + c*ac] (any strides: broadcast scalars), B rows of NV
 * vectors, stride ldb; C stride ldc. The sum over c runs in order. */
static inline __attribute__((always_inline)) void
MPL_SUF(fmm_mk_body)(const int R, const int NV, int64_t k, const MPL_REAL *restrict A, int64_t ai,
                     int64_t ac, const MPL_REAL *restrict B, int64_t ldb, MPL_REAL *restrict C,
                     int64_t ldc, int add)
{
    FMM_V acc[FMM_MR][FMM_MV];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            acc[r][v] = add ? MPL_SUF(fmm_ld)(C + r * ldc + v * FMM_VW) : (FMM_V){0};
    for (int64_t c = 0; c < k; c++) {
        const MPL_REAL *b = B + c * ldb, *a = A + c * ac;
        FMM_V bv[FMM_MV];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) bv[v] = MPL_SUF(fmm_ld)(b + v * FMM_VW);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const MPL_REAL x = a[r * ai];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[r][v] += x * bv[v];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) MPL_SUF(fmm_st)(C + r * ldc + v * FMM_VW, acc[r][v]);
}

typedef void (*MPL_SUF(fmm_mk_fn))(int64_t, const MPL_REAL *, int64_t, int64_t, const MPL_REAL *,
                                   int64_t, MPL_REAL *, int64_t, int);
#define FMM_MK_DEF(R, NV)                                                                         \
    static void MPL_SUF(fmm_mk_##R##_##NV)(int64_t k, const MPL_REAL *A, int64_t ai, int64_t ac,  \
                                           const MPL_REAL *B, int64_t ldb, MPL_REAL *C,           \
                                           int64_t ldc, int add)                                  \
    {                                                                                             \
        MPL_SUF(fmm_mk_body)(R, NV, k, A, ai, ac, B, ldb, C, ldc, add);                           \
    }
#define FMM_MK_ROW(R) FMM_MK_DEF(R, 1) FMM_MK_DEF(R, 2)
#define FMM_MK_NAMES(R) {MPL_SUF(fmm_mk_##R##_1), MPL_SUF(fmm_mk_##R##_2)}
FMM_MK_ROW(1)
FMM_MK_ROW(2)
FMM_MK_ROW(3)
FMM_MK_ROW(4)
FMM_MK_ROW(5)
FMM_MK_ROW(6)
#if FMM_MR == 8
FMM_MK_ROW(7)
FMM_MK_ROW(8)
static const MPL_SUF(fmm_mk_fn) MPL_SUF(fmm_mk_tab)[FMM_MR][FMM_MV] = {
    FMM_MK_NAMES(1), FMM_MK_NAMES(2), FMM_MK_NAMES(3), FMM_MK_NAMES(4),
    FMM_MK_NAMES(5), FMM_MK_NAMES(6), FMM_MK_NAMES(7), FMM_MK_NAMES(8)};
#else
static const MPL_SUF(fmm_mk_fn) MPL_SUF(fmm_mk_tab)[FMM_MR][FMM_MV] = {
    FMM_MK_NAMES(1), FMM_MK_NAMES(2), FMM_MK_NAMES(3),
    FMM_MK_NAMES(4), FMM_MK_NAMES(5), FMM_MK_NAMES(6)};
#endif
#undef FMM_MK_ROW
#undef FMM_MK_DEF
#undef FMM_MK_NAMES

/* C (m x nv vectors) = or += A (m x k) B (k x nv vectors) in register
 * tiles, column panels outside so a panel of B stays in L1. */
static void MPL_SUF(fmm_mm)(int64_t m, int64_t nv, int64_t k, const MPL_REAL *A, int64_t ai,
                            int64_t ac, const MPL_REAL *B, int64_t ldb, MPL_REAL *C, int64_t ldc,
                            int add)
{
    for (int64_t j = 0; j < nv; j += FMM_MV) {
        const int v = nv - j < FMM_MV ? (int)(nv - j) : FMM_MV;
        for (int64_t i = 0; i < m; i += FMM_MR) {
            const int r = m - i < FMM_MR ? (int)(m - i) : FMM_MR;
            MPL_SUF(fmm_mk_tab)[r - 1][v - 1](k, A + i * ai, ai, ac, B + j * FMM_VW, ldb,
                                              C + i * ldc + j * FMM_VW, ldc, add);
        }
    }
}

/* dst (nc x nr) = src (nr x nc)^T for nr, nc multiples of the vector
 * width, by VW x VW blocks: log2(VW) rounds, each swapping the
 * off-diagonal b x b sub-blocks of every 2b x 2b block with two constant
 * shuffles per row pair (b = VW/2, ..., 1). */
#define FMM_SWAP(i, j, LO, HI)                                                                    \
    do {                                                                                          \
        const FMM_V a_ = row[i], c_ = row[j];                                                     \
        row[i] = __builtin_shufflevector(a_, c_, LO);                                             \
        row[j] = __builtin_shufflevector(a_, c_, HI);                                             \
    } while (0)
static void MPL_SUF(fmm_tr)(int64_t nr, int64_t nc, const MPL_REAL *src, int64_t lds,
                            MPL_REAL *dst, int64_t ldd)
{
/* lane index lists of the two shuffles per round (macros: the builtin
 * takes constants, not a mask vector) */
#if MPL_FMM_LANES == 16
#define FMM_L8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define FMM_H8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define FMM_L4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define FMM_H4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define FMM_L2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define FMM_H2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define FMM_L1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define FMM_H1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#elif MPL_FMM_LANES == 8
#define FMM_L4 0, 1, 2, 3, 8, 9, 10, 11
#define FMM_H4 4, 5, 6, 7, 12, 13, 14, 15
#define FMM_L2 0, 1, 8, 9, 4, 5, 12, 13
#define FMM_H2 2, 3, 10, 11, 6, 7, 14, 15
#define FMM_L1 0, 8, 2, 10, 4, 12, 6, 14
#define FMM_H1 1, 9, 3, 11, 5, 13, 7, 15
#else
#define FMM_L2 0, 1, 4, 5
#define FMM_H2 2, 3, 6, 7
#define FMM_L1 0, 4, 2, 6
#define FMM_H1 1, 5, 3, 7
#endif
    for (int64_t i0 = 0; i0 < nr; i0 += FMM_VW)
        for (int64_t j0 = 0; j0 < nc; j0 += FMM_VW) {
            FMM_V row[MPL_FMM_LANES];
#pragma GCC unroll 16
            for (int i = 0; i < MPL_FMM_LANES; i++)
                row[i] = MPL_SUF(fmm_ld)(src + (i0 + i) * lds + j0);
#if MPL_FMM_LANES == 16
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) FMM_SWAP(i, i + 8, FMM_L8, FMM_H8);
#pragma GCC unroll 8
            for (int i = 0; i < 16; i += 8)
                for (int j = i; j < i + 4; j++) FMM_SWAP(j, j + 4, FMM_L4, FMM_H4);
#pragma GCC unroll 8
            for (int i = 0; i < 16; i += 4)
                for (int j = i; j < i + 2; j++) FMM_SWAP(j, j + 2, FMM_L2, FMM_H2);
#pragma GCC unroll 8
            for (int i = 0; i < 16; i += 2) FMM_SWAP(i, i + 1, FMM_L1, FMM_H1);
#else
#if MPL_FMM_LANES == 8
            FMM_SWAP(0, 4, FMM_L4, FMM_H4); FMM_SWAP(1, 5, FMM_L4, FMM_H4);
            FMM_SWAP(2, 6, FMM_L4, FMM_H4); FMM_SWAP(3, 7, FMM_L4, FMM_H4);
            FMM_SWAP(4, 6, FMM_L2, FMM_H2); FMM_SWAP(5, 7, FMM_L2, FMM_H2);
            FMM_SWAP(4, 5, FMM_L1, FMM_H1); FMM_SWAP(6, 7, FMM_L1, FMM_H1);
#endif
            FMM_SWAP(0, 2, FMM_L2, FMM_H2); FMM_SWAP(1, 3, FMM_L2, FMM_H2);
            FMM_SWAP(0, 1, FMM_L1, FMM_H1); FMM_SWAP(2, 3, FMM_L1, FMM_H1);
#endif
#pragma GCC unroll 16
            for (int i = 0; i < MPL_FMM_LANES; i++)
                MPL_SUF(fmm_st)(dst + (j0 + i) * ldd + i0, row[i]);
        }
}
#undef FMM_SWAP
#undef FMM_L8
#undef FMM_H8
#undef FMM_L4
#undef FMM_H4
#undef FMM_L2
#undef FMM_H2
#undef FMM_L1
#undef FMM_H1

/* RoPE by composed rotations: the angle of position p + t is p*theta_c +
 * t*theta_c, so cos and sin of p*theta_c times those of t*theta_c (a
 * table per call, shared by the threads) give n consecutive positions
 * with d/2 sincos instead of n d/2. All in double whatever MPL_REAL is, as
 * mpl_rope_apply, then rounded; the composition differs from the direct
 * angle by rounding (~1e-16 relative). */
typedef struct MPL_SUF(fmm_rope) {
    double *freq;        /* (half) theta^(-2c/d) */
    double *co, *so;     /* (n_max, half): cos, sin of t * freq[c], t < n_max */
    int64_t n_max;
    int half;
} MPL_SUF(fmm_rope);

static void MPL_SUF(fmm_rope_init)(MPL_SUF(fmm_rope) *rp, double theta, int d)
{
    for (int c = 0; c < rp->half; c++)
        rp->freq[c] = pow(theta, -2.0 * (double)c / (double)d);
    (void)d;
    for (int64_t t = 0; t < rp->n_max; t++)
        for (int c = 0; c < rp->half; c++) {
            rp->co[t * rp->half + c] = cos((double)t * rp->freq[c]);
            rp->so[t * rp->half + c] = sin((double)t * rp->freq[c]);
        }
}

/* cs, sn (n x half) = cos, sin of positions pos, pos + 1, ... for every
 * frequency, n <= rp->n_max. */
static void MPL_SUF(fmm_rope_table)(const MPL_SUF(fmm_rope) *rp, int64_t pos, int64_t n,
                                    MPL_REAL *restrict cs, MPL_REAL *restrict sn)
{
    const int half = rp->half;
    for (int c = 0; c < half; c++) {
        const double ang = (double)pos * rp->freq[c], cb = cos(ang), sb = sin(ang);
        for (int64_t t = 0; t < n; t++) {
            const double co = rp->co[t * half + c], so = rp->so[t * half + c];
            cs[t * half + c] = (MPL_REAL)(cb * co - sb * so);
            sn[t * half + c] = (MPL_REAL)(sb * co + cb * so);
        }
    }
}

/* Rows r < n of x (stride ld) rotated by the table rows r (cs, sn: n x
 * half): by +angle (dir = 1) or back (dir = -1, the transpose, for
 * gradients); the half-split pairs (x_c, x_{c+half}) as mpl_rope_apply. */
static void MPL_SUF(fmm_rope_apply)(MPL_REAL *x, int64_t ld, int64_t n, int half,
                                    const MPL_REAL *cs, const MPL_REAL *sn, int dir)
{
    for (int64_t r = 0; r < n; r++) {
        MPL_REAL *restrict lo = x + r * ld, *restrict hi = lo + half;
        const MPL_REAL *c = cs + r * half, *s = sn + r * half;
        int k = 0;
        for (; k + FMM_VW <= half; k += FMM_VW) {
            const FMM_V a = MPL_SUF(fmm_ld)(lo + k), b = MPL_SUF(fmm_ld)(hi + k);
            const FMM_V cv = MPL_SUF(fmm_ld)(c + k);
            const FMM_V sv = dir > 0 ? MPL_SUF(fmm_ld)(s + k) : -MPL_SUF(fmm_ld)(s + k);
            MPL_SUF(fmm_st)(lo + k, a * cv - b * sv);
            MPL_SUF(fmm_st)(hi + k, b * cv + a * sv);
        }
        for (; k < half; k++) {
            const MPL_REAL a = lo[k], b = hi[k], sv = dir > 0 ? s[k] : -s[k];
            lo[k] = a * c[k] - b * sv;
            hi[k] = b * c[k] + a * sv;
        }
    }
}
