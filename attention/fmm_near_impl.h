/* Template body of the FMM near field (fmm.h): softmax inside the band,
 * forward and backward, for one (sequence, head). Included once per
 * precision by fmm_f32.c / fmm_f64.c after the precision macros (MPL_REAL,
 * MPL_SUF, MPL_EXP, MPL_LOG, MPL_GEMM); no include guard on purpose.
 * Separate from the far field because it is a different algorithm (banded
 * GEMM blocks) with its own scratch.
 *
 * The keys live in an "extended" row range: e = 0 .. E-1 covers global
 * positions pos0 - n_pre .. pos0 + n_tok + n_post - 1 (halo before, the
 * chunk, halo after), already rotated by RoPE. Query row i of the chunk is
 * extended row n_pre + i. A block of FMM_QB query rows is multiplied with
 * the keys of every row in its band ([i0 - w + 1, i1 + w - 1) clipped), one
 * GEMM of FMM_QB x (FMM_QB + 2w - 2) at most, and entries outside the band
 * are masked: the work is O(n_tok * (FMM_QB + w) * d), linear in n_tok. */

#define FMM_QB 64

/* The per-(s, h) views the near field works on. */
typedef struct MPL_SUF(fmm_near_view) {
    const MPL_REAL *Q;      /* (n_tok) rows, stride ld: rotated queries */
    const MPL_REAL *K, *V;  /* (E) rows, stride ld: rotated keys, values */
    const uint8_t *mx;      /* (E) key mask, 1 = real */
    const uint8_t *mq;      /* (n_tok) query mask or NULL */
    int64_t n_tok, n_pre, E, ld, w;
    int d, causal;
} MPL_SUF(fmm_near_view);

/* Scratch floats one thread needs: two blocks of logits. */
static int64_t MPL_SUF(fmm_near_scratch_elems)(int64_t w)
{
    return 2 * (int64_t)FMM_QB * (FMM_QB + 2 * w);
}

/* Key rows [lo, hi) any query of the block [i0, i0 + nb) may see. */
static void MPL_SUF(fmm_near_range)(const MPL_SUF(fmm_near_view) *v, int64_t i0, int64_t nb,
                                    int64_t *lo, int64_t *hi)
{
    const int64_t e0 = v->n_pre + i0, e1 = v->n_pre + i0 + nb; /* query rows, ext */
    *lo = e0 - (v->w - 1) < 0 ? 0 : e0 - (v->w - 1);
    const int64_t h = v->causal ? e1 : e1 + v->w - 1;
    *hi = h > v->E ? v->E : h;
}

static inline int MPL_SUF(fmm_near_in_band)(const MPL_SUF(fmm_near_view) *v, int64_t qe,
                                            int64_t e)
{
    const int64_t dlt = qe - e;
    if (!v->mx[e]) return 0;
    return v->causal ? (dlt >= 0 && dlt < v->w) : (dlt < v->w && -dlt < v->w);
}

/* near (n_tok rows, stride ld_out) and lse (n_tok) of one (s, h). A padded
 * query gets 0 and lse = -inf; an unpadded one always sees itself. */
static void MPL_SUF(fmm_near_forward)(const MPL_SUF(fmm_near_view) *v, MPL_REAL *near,
                                      int64_t ld_out, MPL_REAL *lse, MPL_REAL *P)
{
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)v->d));
    for (int64_t i0 = 0; i0 < v->n_tok; i0 += FMM_QB) {
        const int64_t nb = v->n_tok - i0 < FMM_QB ? v->n_tok - i0 : FMM_QB;
        int64_t lo, hi;
        MPL_SUF(fmm_near_range)(v, i0, nb, &lo, &hi);
        const int64_t jn = hi - lo;
        MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)jn, v->d, scale,
                 v->Q + i0 * v->ld, (int)v->ld, v->K + lo * v->ld, (int)v->ld, 0, P, (int)jn);
        for (int64_t r = 0; r < nb; r++) {
            const int64_t i = i0 + r, qe = v->n_pre + i;
            MPL_REAL *restrict p = P + r * jn;
            if (v->mq && !v->mq[i]) { /* padded query: output 0, no NaN */
                for (int64_t j = 0; j < jn; j++) p[j] = 0;
                lse[i] = -INFINITY;
                continue;
            }
            MPL_REAL m = -INFINITY;
            for (int64_t j = 0; j < jn; j++) {
                if (!MPL_SUF(fmm_near_in_band)(v, qe, lo + j)) p[j] = -INFINITY;
                m = p[j] > m ? p[j] : m;
            }
            MPL_REAL sum = 0;
            for (int64_t j = 0; j < jn; j++) /* masked: exp(-inf) is 0, kept exact */
                p[j] = p[j] == -INFINITY ? 0 : MPL_EXP(p[j] - m);
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < jn; j++) sum += p[j];
            const MPL_REAL inv = (MPL_REAL)1 / sum;
            for (int64_t j = 0; j < jn; j++) p[j] *= inv;
            lse[i] = m + MPL_LOG(sum);
        }
        MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, v->d, (int)jn, 1, P,
                 (int)jn, v->V + lo * v->ld, (int)v->ld, 0, near + i0 * ld_out, (int)ld_out);
    }
}

/* Backward of one (s, h) given dnear (n_tok rows, stride ld_g; rows of
 * padded queries ignored): dQ (n_tok rows, stride ld) OVERWRITTEN, dK, dV
 * (E rows, stride ld) ACCUMULATE. Probabilities are recomputed from lse. */
static void MPL_SUF(fmm_near_backward)(const MPL_SUF(fmm_near_view) *v, const MPL_REAL *lse,
                                       const MPL_REAL *dnear, int64_t ld_g, MPL_REAL *dQ,
                                       MPL_REAL *dK, MPL_REAL *dV, MPL_REAL *P)
{
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)v->d));
    MPL_REAL *dP = P + (int64_t)FMM_QB * (FMM_QB + 2 * v->w);
    for (int64_t i0 = 0; i0 < v->n_tok; i0 += FMM_QB) {
        const int64_t nb = v->n_tok - i0 < FMM_QB ? v->n_tok - i0 : FMM_QB;
        int64_t lo, hi;
        MPL_SUF(fmm_near_range)(v, i0, nb, &lo, &hi);
        const int64_t jn = hi - lo;
        const MPL_REAL *Q = v->Q + i0 * v->ld, *G = dnear + i0 * ld_g;
        MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)jn, v->d, scale, Q,
                 (int)v->ld, v->K + lo * v->ld, (int)v->ld, 0, P, (int)jn);
        MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)jn, v->d, 1, G,
                 (int)ld_g, v->V + lo * v->ld, (int)v->ld, 0, dP, (int)jn);
        for (int64_t r = 0; r < nb; r++) {
            const int64_t i = i0 + r, qe = v->n_pre + i;
            MPL_REAL *restrict p = P + r * jn, *restrict dp = dP + r * jn;
            const MPL_REAL li = lse[i];
            if (li == -INFINITY) { /* padded query: output was 0 */
                for (int64_t j = 0; j < jn; j++) p[j] = dp[j] = 0;
                continue;
            }
            MPL_REAL D = 0; /* sum_j p_j dp_j = dnear_i . near_i */
            for (int64_t j = 0; j < jn; j++)
                p[j] = MPL_SUF(fmm_near_in_band)(v, qe, lo + j) ? MPL_EXP(p[j] - li) : 0;
#pragma omp simd reduction(+ : D)
            for (int64_t j = 0; j < jn; j++) D += p[j] * dp[j];
            for (int64_t j = 0; j < jn; j++) dp[j] = p[j] * (dp[j] - D) * scale;
        }
        MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, v->d, (int)jn, 1, dP,
                 (int)jn, v->K + lo * v->ld, (int)v->ld, 0, dQ + i0 * v->ld, (int)v->ld);
        MPL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)jn, v->d, (int)nb, 1, dP,
                 (int)jn, Q, (int)v->ld, 1, dK + lo * v->ld, (int)v->ld);
        MPL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)jn, v->d, (int)nb, 1, P,
                 (int)jn, G, (int)ld_g, 1, dV + lo * v->ld, (int)v->ld);
    }
}
