/* Template body of the layers declared in layers_decl.h. layers_f32.c and
 * layers_f64.c each define the precision macros and include this file once,
 * so the fp64 instance the finite-difference tests check is the very code
 * the fp32 training path runs. No include guard on purpose.
 *
 * Expected macros:
 *   MPL_REAL          float | double
 *   MPL_SUF(name)     name##_f32 | name##_f64
 *   MPL_GEMM          cblas_sgemm | cblas_dgemm
 *   MPL_EXP, MPL_LOG  exp and log of that precision (fp32: a vectorisable exp)
 *
 * Determinism: every OpenMP loop below writes disjoint outputs per
 * iteration, and every reduction over tokens (dg, dwte) runs over a block
 * of channels owned by one iteration, in token order. The results are
 * therefore independent of the thread count, not only fixed for one. */

/* Channels per block in the reductions over tokens: 32 floats = 2 cache
 * lines, small enough to leave work for many threads at C = 768. */
#define MPL_LAYERS_COL_BLOCK 32
/* RoPE frequencies handled per pass; head_dim/2 is smaller in practice. */
#define MPL_LAYERS_ROPE_BLOCK 256

void MPL_SUF(mpl_embed_forward)(MPL_REAL *out, const int32_t *tok,
                                const MPL_REAL *wte, int64_t n_tok, int64_t C)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n_tok; t++)
        memcpy(out + t * C, wte + (int64_t)tok[t] * C, (size_t)C * sizeof *out);
}

void MPL_SUF(mpl_embed_backward)(MPL_REAL *dwte, const MPL_REAL *dout,
                                 const int32_t *tok, int64_t n_tok, int64_t C)
{
    /* Parallel over channel blocks: a repeated token adds into the same row,
     * so splitting tokens across threads would race or need atomics. */
    const int64_t n_blk = (C + MPL_LAYERS_COL_BLOCK - 1) / MPL_LAYERS_COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n_blk; b++) {
        const int64_t c0 = b * MPL_LAYERS_COL_BLOCK;
        const int64_t nc = C - c0 < MPL_LAYERS_COL_BLOCK ? C - c0 : MPL_LAYERS_COL_BLOCK;
        for (int64_t t = 0; t < n_tok; t++) {
            MPL_REAL *restrict dst = dwte + (int64_t)tok[t] * C + c0;
            const MPL_REAL *restrict src = dout + t * C + c0;
            for (int64_t c = 0; c < nc; c++) dst[c] += src[c];
        }
    }
}

void MPL_SUF(mpl_posemb_forward)(MPL_REAL *out, const MPL_REAL *wpe, int64_t n_seq,
                                 int64_t n_tok, int64_t pos0, int64_t C)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_seq * n_tok; r++) {
        MPL_REAL *restrict o = out + r * C;
        const MPL_REAL *restrict w = wpe + (pos0 + r % n_tok) * C;
        for (int64_t c = 0; c < C; c++) o[c] += w[c];
    }
}

void MPL_SUF(mpl_posemb_backward)(MPL_REAL *dwpe, const MPL_REAL *dout, int64_t n_seq,
                                  int64_t n_tok, int64_t pos0, int64_t C)
{
    /* Parallel over positions: each owns its row of dwpe and sums the
     * sequences in order. */
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n_tok; t++) {
        MPL_REAL *restrict d = dwpe + (pos0 + t) * C;
        for (int64_t s = 0; s < n_seq; s++) {
            const MPL_REAL *restrict g = dout + (s * n_tok + t) * C;
            for (int64_t c = 0; c < C; c++) d[c] += g[c];
        }
    }
}

void MPL_SUF(mpl_rmsnorm_forward)(MPL_REAL *out, MPL_REAL *rstd, const MPL_REAL *x,
                                  const MPL_REAL *g, int64_t n_tok, int64_t C, double eps)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n_tok; t++) {
        const MPL_REAL *restrict xr = x + t * C;
        MPL_REAL *restrict o = out + t * C;
        const MPL_REAL *restrict gr = g;
        MPL_REAL ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t c = 0; c < C; c++) ss += xr[c] * xr[c];
        /* One scalar per row: take the root in double. */
        const MPL_REAL r = (MPL_REAL)(1.0 / sqrt((double)ss / (double)C + eps));
        rstd[t] = r;
        for (int64_t c = 0; c < C; c++) o[c] = xr[c] * r * gr[c];
    }
}

void MPL_SUF(mpl_rmsnorm_backward)(MPL_REAL *dx, MPL_REAL *dg, const MPL_REAL *dout,
                                   const MPL_REAL *x, const MPL_REAL *g,
                                   const MPL_REAL *rstd, int64_t n_tok, int64_t C)
{
    /* y_c = x_c r g_c, r = (mean x^2 + eps)^(-1/2), dr/dx_c = -r^3 x_c / C:
     * dx_c = r g_c dy_c - x_c r^3 / C * sum_j dy_j g_j x_j. */
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n_tok; t++) {
        const MPL_REAL *restrict xr = x + t * C;
        const MPL_REAL *restrict dy = dout + t * C;
        const MPL_REAL *restrict gr = g;
        MPL_REAL *restrict dxr = dx + t * C;
        const MPL_REAL r = rstd[t];
        MPL_REAL dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++) dot += dy[c] * gr[c] * xr[c];
        const MPL_REAL k = dot * r * r * r / (MPL_REAL)C;
        for (int64_t c = 0; c < C; c++) dxr[c] += r * gr[c] * dy[c] - xr[c] * k;
    }
    /* dg_c = sum_t dy_tc x_tc r_t: a reduction over tokens, so each channel
     * block sums its tokens in order, then adds once into dg. */
    const int64_t n_blk = (C + MPL_LAYERS_COL_BLOCK - 1) / MPL_LAYERS_COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n_blk; b++) {
        const int64_t c0 = b * MPL_LAYERS_COL_BLOCK;
        const int64_t nc = C - c0 < MPL_LAYERS_COL_BLOCK ? C - c0 : MPL_LAYERS_COL_BLOCK;
        MPL_REAL acc[MPL_LAYERS_COL_BLOCK] = {0};
        for (int64_t t = 0; t < n_tok; t++) {
            const MPL_REAL *restrict xr = x + t * C + c0;
            const MPL_REAL *restrict dy = dout + t * C + c0;
            const MPL_REAL r = rstd[t];
            for (int64_t c = 0; c < nc; c++) acc[c] += dy[c] * xr[c] * r;
        }
        for (int64_t c = 0; c < nc; c++) dg[c0 + c] += acc[c];
    }
}

/* BLAS takes int sizes: the model's matrices are far below INT_MAX rows. */
void MPL_SUF(mpl_linear_forward)(MPL_REAL *out, const MPL_REAL *x, const MPL_REAL *w,
                                 int64_t n_tok, int64_t IC, int64_t OC)
{
    if (n_tok <= 0 || OC <= 0) return;
    if (IC <= 0) {
        memset(out, 0, (size_t)(n_tok * OC) * sizeof *out);
        return;
    }
    /* out(n, OC) = x(n, IC) * W(OC, IC)^T */
    MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_tok, (int)OC, (int)IC, 1, x,
             (int)IC, w, (int)IC, 0, out, (int)OC);
}

void MPL_SUF(mpl_linear_backward)(MPL_REAL *dx, MPL_REAL *dw, const MPL_REAL *dout,
                                  const MPL_REAL *x, const MPL_REAL *w,
                                  int64_t n_tok, int64_t IC, int64_t OC)
{
    if (n_tok <= 0 || IC <= 0 || OC <= 0) return;
    /* dx(n, IC) += dout(n, OC) * W(OC, IC) */
    if (dx)
        MPL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_tok, (int)IC, (int)OC, 1,
                 dout, (int)OC, w, (int)IC, 1, dx, (int)IC);
    /* dW(OC, IC) += dout(n, OC)^T * x(n, IC) */
    if (dw)
        MPL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)IC, (int)n_tok, 1,
                 dout, (int)OC, x, (int)IC, 1, dw, (int)IC);
}

/* GPT-2's tanh approximation: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
 * evaluated as x * sigma(2u) with sigma(z) = 1 / (1 + exp(-z)), which is the
 * same function: 0.5 (1 + tanh(u)) = sigma(2u). It avoids the cancellation
 * of 1 + tanh(u) for negative x and needs only exp (vectorised in fp32). */
#define MPL_GELU_S ((MPL_REAL)0.79788456080286535588) /* sqrt(2/pi) */
#define MPL_GELU_K ((MPL_REAL)0.044715)

void MPL_SUF(mpl_gelu_forward)(MPL_REAL *out, const MPL_REAL *x, int64_t n_elems)
{
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n_elems; i++) {
        const MPL_REAL xi = x[i];
        const MPL_REAL u = MPL_GELU_S * (xi + MPL_GELU_K * xi * xi * xi);
        out[i] = xi / ((MPL_REAL)1 + MPL_EXP((MPL_REAL)-2 * u));
    }
}

void MPL_SUF(mpl_gelu_backward)(MPL_REAL *dx, const MPL_REAL *dout, const MPL_REAL *x,
                                int64_t n_elems)
{
    /* d/dx [x sigma(2u)] = sigma + x * 2 sigma (1 - sigma) * du/dx */
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n_elems; i++) {
        const MPL_REAL xi = x[i];
        const MPL_REAL x2 = xi * xi;
        const MPL_REAL u = MPL_GELU_S * (xi + MPL_GELU_K * x2 * xi);
        const MPL_REAL sg = (MPL_REAL)1 / ((MPL_REAL)1 + MPL_EXP((MPL_REAL)-2 * u));
        const MPL_REAL du = MPL_GELU_S * ((MPL_REAL)1 + (MPL_REAL)3 * MPL_GELU_K * x2);
        dx[i] += dout[i] * (sg + (MPL_REAL)2 * xi * sg * ((MPL_REAL)1 - sg) * du);
    }
}

void MPL_SUF(mpl_rope_apply)(MPL_REAL *x, int64_t n_seq, int64_t T, int64_t row_stride,
                             int64_t col0, int n_head, int d, int64_t pos0,
                             double theta, int direction)
{
    const int half = d / 2;
    if (half <= 0 || T <= 0 || n_seq <= 0 || n_head <= 0) return;
    const double sgn = direction < 0 ? -1.0 : 1.0;
    /* Angles in double whatever MPL_REAL is: pos * theta^(-2c/d) reaches
     * thousands of radians at long context, where fp32 would lose the phase.
     * sin/cos are computed once per (position, frequency) and shared by all
     * sequences and heads, which is why the loop is over positions. */
    for (int c0 = 0; c0 < half; c0 += MPL_LAYERS_ROPE_BLOCK) {
        const int nc = half - c0 < MPL_LAYERS_ROPE_BLOCK ? half - c0 : MPL_LAYERS_ROPE_BLOCK;
        double inv_freq[MPL_LAYERS_ROPE_BLOCK];
        for (int c = 0; c < nc; c++)
            inv_freq[c] = pow(theta, -2.0 * (double)(c0 + c) / (double)d);
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            MPL_REAL cs[MPL_LAYERS_ROPE_BLOCK], sn[MPL_LAYERS_ROPE_BLOCK];
            const double pos = (double)(pos0 + t);
            for (int c = 0; c < nc; c++) {
                const double ang = pos * inv_freq[c];
                cs[c] = (MPL_REAL)cos(ang);
                sn[c] = (MPL_REAL)(sgn * sin(ang));
            }
            for (int64_t s = 0; s < n_seq; s++)
                for (int h = 0; h < n_head; h++) {
                    MPL_REAL *restrict lo = x + (s * T + t) * row_stride + col0 +
                                            (int64_t)h * d + c0;
                    MPL_REAL *restrict hi = lo + half;
                    for (int c = 0; c < nc; c++) {
                        const MPL_REAL a = lo[c], b = hi[c];
                        lo[c] = a * cs[c] - b * sn[c];
                        hi[c] = b * cs[c] + a * sn[c];
                    }
                }
        }
    }
}

/* Max of a row (stable log-sum-exp subtracts it). */
static inline MPL_REAL MPL_SUF(mpl_row_max)(const MPL_REAL *restrict r, int64_t V)
{
    MPL_REAL m = r[0];
#pragma omp simd reduction(max : m)
    for (int64_t v = 1; v < V; v++) m = r[v] > m ? r[v] : m;
    return m;
}

void MPL_SUF(mpl_xent_forward)(MPL_REAL *loss, const MPL_REAL *logits,
                               const int32_t *target, int64_t n_tok, int64_t V)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n_tok; t++) {
        if (target[t] < 0 || V <= 0) {
            loss[t] = 0;
            continue;
        }
        const MPL_REAL *restrict r = logits + t * V;
        const MPL_REAL m = MPL_SUF(mpl_row_max)(r, V);
        MPL_REAL s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t v = 0; v < V; v++) s += MPL_EXP(r[v] - m);
        /* -log p = log sum exp(l - m) + m - l_target */
        loss[t] = MPL_LOG(s) + m - r[target[t]];
    }
}

void MPL_SUF(mpl_xent_backward)(MPL_REAL *dlogits, const MPL_REAL *logits,
                                const int32_t *target, int64_t n_tok, int64_t V,
                                double scale)
{
    if (V <= 0) return;
#pragma omp parallel
    {
        /* One row of exponentials per thread, so exp runs once per logit.
         * If it cannot be had, fall back to computing exp twice. */
        MPL_REAL *e = malloc((size_t)V * sizeof *e);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n_tok; t++) {
            if (target[t] < 0) continue;
            const MPL_REAL *restrict r = logits + t * V;
            MPL_REAL *restrict dr = dlogits + t * V;
            const MPL_REAL m = MPL_SUF(mpl_row_max)(r, V);
            MPL_REAL s = 0;
            if (e) {
                MPL_REAL *restrict eb = e;
#pragma omp simd reduction(+ : s)
                for (int64_t v = 0; v < V; v++) {
                    eb[v] = MPL_EXP(r[v] - m);
                    s += eb[v];
                }
                const MPL_REAL k = (MPL_REAL)(scale / (double)s);
#pragma omp simd
                for (int64_t v = 0; v < V; v++) dr[v] += eb[v] * k;
            } else {
#pragma omp simd reduction(+ : s)
                for (int64_t v = 0; v < V; v++) s += MPL_EXP(r[v] - m);
                const MPL_REAL k = (MPL_REAL)(scale / (double)s);
#pragma omp simd
                for (int64_t v = 0; v < V; v++) dr[v] += MPL_EXP(r[v] - m) * k;
            }
            dr[target[t]] -= (MPL_REAL)scale;
        }
        free(e);
    }
}

#undef MPL_GELU_S
#undef MPL_GELU_K
#undef MPL_LAYERS_COL_BLOCK
#undef MPL_LAYERS_ROPE_BLOCK
