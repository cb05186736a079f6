/* Template body of FMM attention's chunk functions (fmm.h): argument
 * checks, gathering the chunk and its halo into the extended row range,
 * RoPE, the blend, and the parallel loops over (sequence, head) that call
 * the near field (fmm_near_impl.h) and the far field (fmm_far_impl.h);
 * also streaming. fmm_f32.c and fmm_f64.c include the three bodies once
 * each, so the fp64 instance the finite-difference tests check is the code
 * that trains. No include guard on purpose.
 *
 * Determinism: one thread owns every output and gradient entry of its
 * (s, h) (the columns of head h in rows of sequence s, and the halo rows
 * of s); blend-weight gradients, shared by all sequences, are first summed
 * per (s, h) and then reduced in a fixed order after the parallel loop. */

static mpl_status MPL_SUF(fmm_check)(const mpl_attn_fmm_args *a, int64_t n_pre, int64_t n_post)
{
    if (a->n_seq < 0 || a->n_tok < 0 || a->pos0 < 0)
        return mpl_err(MPL_ERR_ARG, "fmm attention: n_seq=%lld, n_tok=%lld, pos0=%lld must be >= 0",
                       (long long)a->n_seq, (long long)a->n_tok, (long long)a->pos0);
    if (a->n_head < 1 || a->head_dim < 1)
        return mpl_err(MPL_ERR_ARG, "fmm attention: n_head=%d, head_dim=%d must be >= 1",
                       a->n_head, a->head_dim);
    if (a->band < 1) return mpl_err(MPL_ERR_ARG, "fmm attention: band w=%lld must be >= 1",
                                    (long long)a->band);
    if (a->n_maps < 1 || a->n_maps > MPL_FMM_MAX_MAPS)
        return mpl_err(MPL_ERR_ARG, "fmm attention: fmm_n_maps=%d must be in 1..%d", a->n_maps,
                       MPL_FMM_MAX_MAPS);
    for (int m = 0; m < a->n_maps; m++)
        if ((int)a->maps[m] < 0 || a->maps[m] >= MPL_FMM_MAP_COUNT)
            return mpl_err(MPL_ERR_ARG, "fmm attention: fmm_maps[%d]=%d is not a known map", m,
                           (int)a->maps[m]);
    if (a->far_norm && !(a->eps > 0))
        return mpl_err(MPL_ERR_ARG, "fmm attention: fmm_eps=%g must be > 0 with ratio", a->eps);
    if (a->rope_theta > 0 && a->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG, "fmm attention: RoPE needs an even head_dim, got %d",
                       a->head_dim);
    if (a->seq_len < a->pos0 + a->n_tok)
        return mpl_err(MPL_ERR_ARG, "fmm attention: seq_len=%lld < pos0 + n_tok = %lld",
                       (long long)a->seq_len, (long long)(a->pos0 + a->n_tok));
    const int64_t max_pre = a->pos0 < a->band - 1 ? a->pos0 : a->band - 1;
    const int64_t after = a->seq_len - a->pos0 - a->n_tok;
    const int64_t max_post = a->causal ? 0 : (after < a->band - 1 ? after : a->band - 1);
    if (n_pre < 0 || n_pre > max_pre || n_post < 0 || n_post > max_post)
        return mpl_err(MPL_ERR_ARG,
                       "fmm attention: halo n_pre=%lld, n_post=%lld out of range (at most %lld, %lld)",
                       (long long)n_pre, (long long)n_post, (long long)max_pre,
                       (long long)max_post);
    return MPL_OK;
}

/* The chunk and its halo in one extended buffer per sequence: Kx, Vx
 * (n_seq, E, H*d) with K rotated by global position, mx (n_seq, E), and
 * the rotated queries Qr (n_seq, n_tok, H*d). */
typedef struct MPL_SUF(fmm_ext) {
    MPL_REAL *Kx, *Vx, *Qr;
    uint8_t *mx;
    int64_t E;
} MPL_SUF(fmm_ext);

static void MPL_SUF(fmm_ext_free)(MPL_SUF(fmm_ext) *x)
{
    free(x->Kx), free(x->Vx), free(x->Qr), free(x->mx);
    memset(x, 0, sizeof *x);
}

static mpl_status MPL_SUF(fmm_ext_build)(const mpl_attn_fmm_args *a,
                                         const MPL_SUF(mpl_attn_fmm_ctx) *ctx,
                                         const MPL_REAL *qkv, MPL_SUF(fmm_ext) *x)
{
    memset(x, 0, sizeof *x);
    if ((ctx->n_pre > 0 && !ctx->halo_pre) || (ctx->n_post > 0 && !ctx->halo_post))
        return mpl_err(MPL_ERR_ARG, "fmm attention: halo n_pre=%lld, n_post=%lld without rows",
                       (long long)ctx->n_pre, (long long)ctx->n_post);
    const int64_t S = a->n_seq, T = a->n_tok, HD = (int64_t)a->n_head * a->head_dim;
    const int64_t W = 3 * HD, np = ctx->n_pre, nq = ctx->n_post, E = np + T + nq;
    x->E = E;
    x->Kx = malloc((size_t)(S * E * HD + 1) * sizeof *x->Kx);
    x->Vx = malloc((size_t)(S * E * HD + 1) * sizeof *x->Vx);
    x->Qr = malloc((size_t)(S * T * HD + 1) * sizeof *x->Qr);
    x->mx = malloc((size_t)(S * E + 1));
    if (!x->Kx || !x->Vx || !x->Qr || !x->mx) {
        MPL_SUF(fmm_ext_free)(x);
        return mpl_err(MPL_ERR_NOMEM, "fmm attention: out of memory for %lld extended rows",
                       (long long)(S * E));
    }
#pragma omp parallel for schedule(static)
    for (int64_t se = 0; se < S * E; se++) {
        const int64_t s = se / E, e = se % E;
        const MPL_REAL *k, *v;
        uint8_t ok;
        if (e < np) {
            k = ctx->halo_pre + (s * np + e) * 2 * HD, v = k + HD;
            ok = ctx->mask_pre ? ctx->mask_pre[s * np + e] : 1;
        } else if (e < np + T) {
            k = qkv + (s * T + e - np) * W + HD, v = k + HD;
            ok = a->mask ? a->mask[s * T + e - np] : 1;
            memcpy(x->Qr + (s * T + e - np) * HD, k - HD, (size_t)HD * sizeof *k);
        } else {
            k = ctx->halo_post + (s * nq + e - np - T) * 2 * HD, v = k + HD;
            ok = ctx->mask_post ? ctx->mask_post[s * nq + e - np - T] : 1;
        }
        memcpy(x->Kx + se * HD, k, (size_t)HD * sizeof *k);
        memcpy(x->Vx + se * HD, v, (size_t)HD * sizeof *v);
        x->mx[se] = ok;
    }
    if (a->rope_theta > 0) {
        MPL_SUF(mpl_rope_apply)(x->Kx, S, E, HD, 0, a->n_head, a->head_dim, a->pos0 - np,
                                a->rope_theta, 1);
        MPL_SUF(mpl_rope_apply)(x->Qr, S, T, HD, 0, a->n_head, a->head_dim, a->pos0,
                                a->rope_theta, 1);
    }
    return MPL_OK;
}

static MPL_SUF(fmm_near_view) MPL_SUF(fmm_view)(const mpl_attn_fmm_args *a,
                                                const MPL_SUF(fmm_ext) *x, int64_t np,
                                                int64_t s, int64_t h)
{
    const int64_t HD = (int64_t)a->n_head * a->head_dim, T = a->n_tok;
    return (MPL_SUF(fmm_near_view)){.Q = x->Qr + s * T * HD + h * a->head_dim,
                                    .K = x->Kx + s * x->E * HD + h * a->head_dim,
                                    .V = x->Vx + s * x->E * HD + h * a->head_dim,
                                    .mx = x->mx + s * x->E,
                                    .mq = a->mask ? a->mask + s * T : NULL,
                                    .n_tok = T, .n_pre = np, .E = x->E, .ld = HD,
                                    .w = a->band, .d = a->head_dim, .causal = a->causal};
}

/* Blend coefficients of channel c of head h: o = A near + B sum_m C_m far_m. */
static inline MPL_REAL MPL_SUF(fmm_coef_a)(const mpl_attn_fmm_args *a,
                                           MPL_SUF(mpl_attn_fmm_blend) bl, int64_t h, int64_t c)
{
    return a->blend == MPL_FMM_BLEND_LRA ? bl.a[h] : bl.a[h * a->head_dim + c];
}
static inline MPL_REAL MPL_SUF(fmm_coef_b)(const mpl_attn_fmm_args *a,
                                           MPL_SUF(mpl_attn_fmm_blend) bl, int64_t h, int64_t c)
{
    return a->blend == MPL_FMM_BLEND_LRA ? bl.b[h] : bl.b[h * a->head_dim + c];
}
static inline MPL_REAL MPL_SUF(fmm_coef_c)(const mpl_attn_fmm_args *a,
                                           MPL_SUF(mpl_attn_fmm_blend) bl, int m)
{
    return a->blend == MPL_FMM_BLEND_LRA ? bl.alpha[m] : (MPL_REAL)1 / (MPL_REAL)a->n_maps;
}

static mpl_status MPL_SUF(fmm_scratch)(int64_t n_per, MPL_REAL **out)
{
    const int64_t n_elems = (int64_t)omp_get_max_threads() * n_per;
    MPL_ALLOC(*out, n_elems);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_fmm_stats)(const mpl_attn_fmm_args *a, const MPL_REAL *qkv,
                                       MPL_REAL *stat_loc)
{
    MPL_CHECK(MPL_SUF(fmm_check)(a, 0, 0));
    const int64_t d = a->head_dim, H = a->n_head, r = a->n_maps, SZ = d * d + d;
    MPL_REAL *scratch = NULL;
    const int64_t n_per = MPL_SUF(fmm_far_stats_scratch_elems)(a);
    MPL_CHECK(MPL_SUF(fmm_scratch)(n_per, &scratch));
#pragma omp parallel
    {
        MPL_REAL *tmp = scratch + (int64_t)omp_get_thread_num() * n_per;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < a->n_seq * H; sh++)
            for (int m = 0; m < r; m++)
                MPL_SUF(fmm_far_stats)(a, sh / H, sh % H, m, qkv, stat_loc + (sh * r + m) * SZ,
                                       tmp);
    }
    free(scratch);
    return MPL_OK;
}

mpl_status MPL_SUF(mpl_attn_fmm_forward)(const mpl_attn_fmm_args *a,
                                         const MPL_SUF(mpl_attn_fmm_ctx) *ctx,
                                         MPL_SUF(mpl_attn_fmm_blend) bl, const MPL_REAL *qkv,
                                         MPL_REAL *out, MPL_REAL *saved)
{
    MPL_CHECK(MPL_SUF(fmm_check)(a, ctx->n_pre, ctx->n_post));
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim, r = a->n_maps;
    const int64_t HD = H * d, SZ = d * d + d;
    if (S * T == 0) return MPL_OK;
    MPL_REAL *lse = saved, *near = saved + S * H * T, *far = near + S * T * HD;
    MPL_SUF(fmm_ext) x;
    MPL_CHECK(MPL_SUF(fmm_ext_build)(a, ctx, qkv, &x));
    const int64_t n_per = MPL_SUF(fmm_near_scratch_elems)(a->band) +
                          MPL_SUF(fmm_far_scratch_elems)(a);
    MPL_REAL *scratch = NULL;
    mpl_status st = MPL_OK;
    MPL_CHECK_GOTO(MPL_SUF(fmm_scratch)(n_per, &scratch), fail);
#pragma omp parallel
    {
        MPL_REAL *P = scratch + (int64_t)omp_get_thread_num() * n_per;
        MPL_REAL *tmp = P + MPL_SUF(fmm_near_scratch_elems)(a->band);
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const MPL_SUF(fmm_near_view) v = MPL_SUF(fmm_view)(a, &x, ctx->n_pre, s, h);
            MPL_SUF(fmm_near_forward)(&v, near + s * T * HD + h * d, HD, lse + sh * T, P);
            for (int m = 0; m < r; m++)
                MPL_SUF(fmm_far_forward)(a, s, h, m, qkv,
                                         ctx->stat_in ? ctx->stat_in + (sh * r + m) * SZ : NULL,
                                         far + (m * S + s) * T * HD + h * d, tmp);
            for (int64_t i = 0; i < T; i++) {
                const int64_t o = (s * T + i) * HD + h * d;
                for (int64_t c = 0; c < d; c++) {
                    MPL_REAL f = 0;
                    for (int m = 0; m < r; m++)
                        f += MPL_SUF(fmm_coef_c)(a, bl, m) * far[m * S * T * HD + o + c];
                    out[o + c] = MPL_SUF(fmm_coef_a)(a, bl, h, c) * near[o + c] +
                                 MPL_SUF(fmm_coef_b)(a, bl, h, c) * f;
                }
            }
        }
    }
fail:
    free(scratch);
    MPL_SUF(fmm_ext_free)(&x);
    return st;
}

mpl_status MPL_SUF(mpl_attn_fmm_backward)(const mpl_attn_fmm_args *a,
                                          const MPL_SUF(mpl_attn_fmm_ctx) *ctx,
                                          MPL_SUF(mpl_attn_fmm_blend) bl, const MPL_REAL *qkv,
                                          const MPL_REAL *saved, const MPL_REAL *dout,
                                          MPL_REAL *dqkv, const MPL_SUF(mpl_attn_fmm_dctx) *dctx,
                                          MPL_SUF(mpl_attn_fmm_dblend) dbl)
{
    MPL_CHECK(MPL_SUF(fmm_check)(a, ctx->n_pre, ctx->n_post));
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim, r = a->n_maps;
    const int64_t HD = H * d, W = 3 * HD, SZ = d * d + d;
    if (S * T == 0) return MPL_OK;
    const int lra = a->blend == MPL_FMM_BLEND_LRA;
    const MPL_REAL *lse = saved, *near = saved + S * H * T, *far = near + S * T * HD;
    const int64_t np = ctx->n_pre, nq = ctx->n_post;
    /* per-(s, h) partial blend gradients: dA, dB (d each, or 1 for LRA), dalpha (r) */
    const int64_t nb_sh = 2 * d + r;
    MPL_SUF(fmm_ext) x;
    MPL_CHECK(MPL_SUF(fmm_ext_build)(a, ctx, qkv, &x));
    const int64_t E = x.E;
    const int64_t n_near = MPL_SUF(fmm_near_scratch_elems)(a->band);
    const int64_t n_per = n_near + MPL_SUF(fmm_far_scratch_elems)(a) + 2 * T * d;
    MPL_REAL *scratch = NULL, *dQ = NULL, *dKx = NULL, *dVx = NULL, *pb = NULL, *dst = NULL;
    mpl_status st = MPL_OK;
    MPL_CHECK_GOTO(MPL_SUF(fmm_scratch)(n_per, &scratch), fail);
    dQ = calloc((size_t)(S * T * HD), sizeof *dQ);
    dKx = calloc((size_t)(S * E * HD), sizeof *dKx);
    dVx = calloc((size_t)(S * E * HD), sizeof *dVx);
    pb = calloc((size_t)(S * H * nb_sh), sizeof *pb);
    dst = calloc((size_t)(S * H * r * SZ), sizeof *dst);
    if (!dQ || !dKx || !dVx || !pb || !dst)
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "fmm attention: out of memory in backward");
#pragma omp parallel
    {
        MPL_REAL *P = scratch + (int64_t)omp_get_thread_num() * n_per;
        MPL_REAL *tmp = P + n_near;
        MPL_REAL *gN = tmp + MPL_SUF(fmm_far_scratch_elems)(a), *gF = gN + T * d;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
            MPL_REAL *dA = pb + sh * nb_sh, *dB = dA + d, *dal = dB + d;
            /* blend: dnear = A g; weights' gradients from saved near, far */
            for (int64_t i = 0; i < T; i++) {
                const int64_t o = (s * T + i) * HD + h * d;
                const int ok = !mk || mk[i];
                for (int64_t c = 0; c < d; c++) {
                    const MPL_REAL g = ok ? dout[o + c] : 0;
                    MPL_REAL f = 0;
                    for (int m = 0; m < r; m++) {
                        const MPL_REAL fm = far[m * S * T * HD + o + c];
                        f += MPL_SUF(fmm_coef_c)(a, bl, m) * fm;
                        dal[m] += g * MPL_SUF(fmm_coef_b)(a, bl, h, c) * fm;
                    }
                    gN[i * d + c] = MPL_SUF(fmm_coef_a)(a, bl, h, c) * g;
                    dA[lra ? 0 : c] += g * near[o + c];
                    dB[lra ? 0 : c] += g * f;
                }
            }
            const MPL_SUF(fmm_near_view) v = MPL_SUF(fmm_view)(a, &x, np, s, h);
            MPL_SUF(fmm_near_backward)(&v, lse + sh * T, gN, d, dQ + s * T * HD + h * d,
                                       dKx + s * E * HD + h * d, dVx + s * E * HD + h * d, P);
            for (int m = 0; m < r; m++) {
                for (int64_t i = 0; i < T; i++) {
                    const MPL_REAL cm = MPL_SUF(fmm_coef_c)(a, bl, m);
                    const int ok = !mk || mk[i];
                    for (int64_t c = 0; c < d; c++)
                        gF[i * d + c] = ok ? MPL_SUF(fmm_coef_b)(a, bl, h, c) * cm *
                                                 dout[(s * T + i) * HD + h * d + c]
                                           : 0;
                }
                MPL_SUF(fmm_far_backward)(a, s, h, m, qkv,
                                          ctx->stat_in ? ctx->stat_in + (sh * r + m) * SZ
                                                       : NULL,
                                          gF, d, dqkv, dst + (sh * r + m) * SZ, tmp);
            }
        }
    }
    /* near-field gradients of rotated q, k back to unrotated, then out */
    if (a->rope_theta > 0) {
        MPL_SUF(mpl_rope_apply)(dQ, S, T, HD, 0, (int)H, (int)d, a->pos0, a->rope_theta, -1);
        MPL_SUF(mpl_rope_apply)(dKx, S, E, HD, 0, (int)H, (int)d, a->pos0 - np, a->rope_theta,
                                -1);
    }
#pragma omp parallel for schedule(static)
    for (int64_t se = 0; se < S * E; se++) {
        const int64_t s = se / E, e = se % E;
        MPL_REAL *gk;
        if (e < np) {
            if (!dctx || !dctx->halo_pre) continue;
            gk = dctx->halo_pre + (s * np + e) * 2 * HD;
        } else if (e < np + T) {
            gk = dqkv + (s * T + e - np) * W + HD;
            MPL_REAL *gq = gk - HD;
            const MPL_REAL *sq = dQ + (s * T + e - np) * HD;
            for (int64_t c = 0; c < HD; c++) gq[c] += sq[c];
        } else {
            if (!dctx || !dctx->halo_post) continue;
            gk = dctx->halo_post + (s * nq + e - np - T) * 2 * HD;
        }
        const MPL_REAL *sk = dKx + se * HD, *sv = dVx + se * HD;
        for (int64_t c = 0; c < HD; c++) gk[c] += sk[c], gk[HD + c] += sv[c];
    }
    if (dctx && dctx->stat_in)
        for (int64_t e = 0; e < S * H * r * SZ; e++) dctx->stat_in[e] += dst[e];
    /* blend gradients, summed over sequences in a fixed order */
    for (int64_t s = 0; s < S; s++)
        for (int64_t h = 0; h < H; h++) {
            const MPL_REAL *dA = pb + (s * H + h) * nb_sh, *dB = dA + d, *dal = dB + d;
            const int64_t n = lra ? 1 : d, o = lra ? h : h * d;
            for (int64_t c = 0; c < n; c++) {
                if (dbl.a) dbl.a[o + c] += dA[c];
                if (dbl.b && a->learn_far_weight) dbl.b[o + c] += dB[c];
            }
            if (lra && dbl.alpha)
                for (int m = 0; m < r; m++) dbl.alpha[m] += dal[m];
        }
fail:
    free(scratch), free(dQ), free(dKx), free(dVx), free(pb), free(dst);
    MPL_SUF(fmm_ext_free)(&x);
    return st;
}

mpl_status MPL_SUF(mpl_attn_fmm_stats_backward)(const mpl_attn_fmm_args *a, const MPL_REAL *qkv,
                                                const MPL_REAL *dstat_loc, MPL_REAL *dqkv)
{
    MPL_CHECK(MPL_SUF(fmm_check)(a, 0, 0));
    const int64_t S = a->n_seq, T = a->n_tok, H = a->n_head, d = a->head_dim, r = a->n_maps;
    const int64_t HD = H * d, W = 3 * HD, SZ = d * d + d;
    MPL_REAL *scratch = NULL;
    const int64_t n_per = d * d + 5 * d;
    MPL_CHECK(MPL_SUF(fmm_scratch)(n_per, &scratch));
#pragma omp parallel
    {
        MPL_REAL *dSt = scratch + (int64_t)omp_get_thread_num() * n_per, *tmp = dSt + d * d;
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const uint8_t *mk = a->mask ? a->mask + s * T : NULL;
            for (int m = 0; m < r; m++) {
                const MPL_REAL *dSz = dstat_loc + (sh * r + m) * SZ;
                MPL_SUF(fmm_transpose)(d, dSz, dSt);
                for (int64_t i = 0; i < T; i++) {
                    if (mk && !mk[i]) continue;
                    const int64_t o = (s * T + i) * W + h * d;
                    MPL_REAL *kt = tmp, *dph = kt + d, *kg = dph + d, sum;
                    MPL_SUF(fmm_feat)(a, a->maps[m], qkv + o + HD, kt, dph, &sum);
                    MPL_SUF(fmm_far_key_grad)(a, qkv + o, kt, dph, sum, dSz, dSt, dqkv + o, kg);
                }
            }
        }
    }
    free(scratch);
    return MPL_OK;
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
