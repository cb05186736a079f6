/* Template body of FMM streaming (fmm.h, mpl_attn_fmm_stream_step): one
 * token per sequence against a ring of the last w-1 (k, v) rows and the
 * running (S, z) of each map, O(w d + r d^2) per (sequence, head) whatever
 * the position. Row-at-a-time scalar code: a step has no block to tile.
 * Included once per precision by fmm_f32.c / fmm_f64.c after fmm_impl.h
 * (the blend coefficients, checks, far scale); no include guard on
 * purpose. Separate from the chunk kernels, which work on blocks. */

/* ft (d) = features of x (d), normalised by their sum when feature_norm;
 * dph (d) = phi'(x); *sum = the divisor (1 without normalisation). */
static inline void MPL_SUF(fmm_feat)(const mpl_attn_fmm_args *a, mpl_fmm_map m,
                                     const MPL_REAL *restrict x, MPL_REAL *restrict ft,
                                     MPL_REAL *restrict dph, MPL_REAL *sum)
{
    const int d = a->head_dim;
    MPL_REAL s = 0;
    for (int c = 0; c < d; c++) {
        if (m == MPL_FMM_MAP_ELU) {
            const MPL_REAL e = MPL_EXP(x[c] < 0 ? x[c] : 0);
            ft[c] = x[c] > 0 ? x[c] + 1 : e;
            dph[c] = x[c] > 0 ? 1 : e;
        } else if (m == MPL_FMM_MAP_ELU_FLIP) { /* elu(-x) + 1 */
            const MPL_REAL e = MPL_EXP(x[c] > 0 ? -x[c] : 0);
            ft[c] = x[c] < 0 ? 1 - x[c] : e;
            dph[c] = x[c] < 0 ? -1 : -e;
        } else {
            const MPL_REAL t = MPL_TANH(x[c]);
            ft[c] = t + 1;
            dph[c] = 1 - t * t;
        }
        s += ft[c];
    }
    if (a->feature_norm) {
        const MPL_REAL inv = (MPL_REAL)1 / s;
        for (int c = 0; c < d; c++) ft[c] *= inv;
    } else {
        s = 1;
    }
    *sum = s;
}

/* S (d x d) += kt v^T, z += kt. */
static inline void MPL_SUF(fmm_rank1)(int d, MPL_REAL *restrict S, MPL_REAL *restrict z,
                                      const MPL_REAL *restrict kt, const MPL_REAL *restrict v)
{
    for (int p = 0; p < d; p++) {
        const MPL_REAL kp = kt[p];
        MPL_REAL *restrict row = S + (int64_t)p * d;
        for (int c = 0; c < d; c++) row[c] += kp * v[c];
        z[p] += kp;
    }
}

/* y (d) = x^T S for S (d x d), summed over p in order. */
static inline void MPL_SUF(fmm_vecmat)(int64_t d, const MPL_REAL *restrict x,
                                       const MPL_REAL *restrict S, MPL_REAL *restrict y)
{
    for (int64_t c = 0; c < d; c++) y[c] = 0;
    for (int64_t p = 0; p < d; p++) {
        const MPL_REAL xp = x[p], *restrict Sp = S + p * d;
        for (int64_t c = 0; c < d; c++) y[c] += xp * Sp[c];
    }
}

mpl_status MPL_SUF(mpl_attn_fmm_stream_step)(const mpl_attn_fmm_args *a,
                                             MPL_SUF(mpl_attn_fmm_blend) bl, MPL_REAL *state,
                                             int64_t pos, const MPL_REAL *qkv_row,
                                             MPL_REAL *out_row)
{
    if (!a->causal)
        return mpl_err(MPL_ERR_UNSUPPORTED, "fmm attention: streaming needs causal attention");
    mpl_attn_fmm_args a1 = *a;
    a1.n_tok = 1, a1.pos0 = pos, a1.mask = NULL;
    if (a1.seq_len < pos + 1) a1.seq_len = pos + 1; /* no bound while generating */
    const int64_t np = pos < a->band - 1 ? pos : a->band - 1;
    MPL_CHECK(MPL_SUF(fmm_check)(&a1, np, 0));
    const int64_t S = a->n_seq, H = a->n_head, d = a->head_dim, r = a->n_maps, w = a->band;
    const int64_t HD = H * d, W = 3 * HD, SZ = d * d + d;
    const int64_t per_sh = 2 * (w - 1) * d + r * SZ;
    /* rotated q, k of this row for every sequence: (n_seq, 2*H*d) */
    MPL_REAL *qk = NULL, *scratch = NULL;
    const int64_t n_per = w + 4 * d;
    const int64_t n_qk = S * 2 * HD;
    MPL_ALLOC(qk, n_qk);
    mpl_status st = MPL_OK;
    MPL_CHECK_GOTO(MPL_SUF(fmm_scratch)(n_per, &scratch), fail);
    for (int64_t s = 0; s < S; s++) memcpy(qk + s * 2 * HD, qkv_row + s * W, (size_t)(2 * HD) * sizeof *qk);
    if (a->rope_theta > 0)
        MPL_SUF(mpl_rope_apply)(qk, S, 1, 2 * HD, 0, (int)(2 * H), (int)d, pos, a->rope_theta, 1);
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)d));
    const MPL_REAL fscale = MPL_SUF(fmm_far_scale)(&a1), eps = (MPL_REAL)a->eps;
#pragma omp parallel
    {
        MPL_REAL *lg = scratch + (int64_t)omp_get_thread_num() * n_per;
        MPL_REAL *nr = lg + w, *ft = nr + d, *dph = ft + d, *fv = dph + d, sum;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            MPL_REAL *Kr = state + sh * per_sh, *Vr = Kr + (w - 1) * d, *Sz = Vr + (w - 1) * d;
            const MPL_REAL *q = qk + s * 2 * HD + h * d, *k = q + HD;
            const MPL_REAL *row = qkv_row + s * W + h * d, *v = row + 2 * HD;
            /* near: keys at positions pos - np .. pos - 1 (ring) and pos */
            MPL_REAL mx = -INFINITY;
            for (int64_t j = 0; j <= np; j++) {
                const MPL_REAL *kj = j < np ? Kr + ((pos - np + j) % (w - 1)) * d : k;
                MPL_REAL dot = 0;
                for (int64_t c = 0; c < d; c++) dot += q[c] * kj[c];
                lg[j] = dot * scale;
                mx = lg[j] > mx ? lg[j] : mx;
            }
            MPL_REAL z = 0;
            for (int64_t j = 0; j <= np; j++) z += (lg[j] = MPL_EXP(lg[j] - mx));
            for (int64_t c = 0; c < d; c++) nr[c] = 0;
            for (int64_t j = 0; j <= np; j++) {
                const MPL_REAL *vj = j < np ? Vr + ((pos - np + j) % (w - 1)) * d : v;
                for (int64_t c = 0; c < d; c++) nr[c] += lg[j] * vj[c];
            }
            for (int64_t c = 0; c < d; c++) nr[c] /= z;
            /* far: update S, z with this row (inclusive), then query */
            for (int64_t c = 0; c < d; c++) fv[c] = 0;
            for (int m = 0; m < r; m++) {
                MPL_REAL *Sm = Sz + m * SZ, *zm = Sm + d * d;
                MPL_SUF(fmm_feat)(a, a->maps[m], row + HD, ft, dph, &sum);
                MPL_SUF(fmm_rank1)((int)d, Sm, zm, ft, v);
                MPL_SUF(fmm_feat)(a, a->maps[m], row, ft, dph, &sum);
                MPL_REAL f = fscale;
                if (a->far_norm) {
                    MPL_REAL den = 0;
                    for (int64_t p = 0; p < d; p++) den += ft[p] * zm[p];
                    f = fscale / (den + eps);
                }
                const MPL_REAL cm = MPL_SUF(fmm_coef_c)(a, bl, m);
                MPL_SUF(fmm_vecmat)(d, ft, Sm, dph); /* dph: free here */
                for (int64_t c = 0; c < d; c++) fv[c] += cm * (dph[c] * f);
            }
            MPL_REAL *o = out_row + s * HD + h * d;
            for (int64_t c = 0; c < d; c++)
                o[c] = MPL_SUF(fmm_coef_a)(a, bl, h, c) * nr[c] +
                       MPL_SUF(fmm_coef_b)(a, bl, h, c) * fv[c];
            if (w > 1) { /* this row joins the ring, replacing pos - w + 1 */
                memcpy(Kr + (pos % (w - 1)) * d, k, (size_t)d * sizeof *k);
                memcpy(Vr + (pos % (w - 1)) * d, v, (size_t)d * sizeof *v);
            }
        }
    }
fail:
    free(qk), free(scratch);
    return st;
}
