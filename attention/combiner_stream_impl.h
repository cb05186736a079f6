/* Template body of causal Combiner streaming (combiner.h): one token per
 * sequence per step. Included after the other combiner templates.
 *
 * State: a cache of every row of the stream (unrotated q, k, v, plus the
 * RoPE'd k for Combiner-Fixed's direct slots), like a dense K/V cache, and
 * the summary of every finished segment (Fixed) or finished dyadic block
 * (Logsparse), computed once when its last token arrives. A token then
 * costs O((s + L/s) d) (Fixed) or O(Lambda d) plus amortised O(Lambda d)
 * for the blocks it finishes (Logsparse). The same per-query code as the
 * full forward runs here, so streaming equals the forward up to nothing
 * but the order of RoPE's evaluation. */

struct MPL_SUF(mpl_attn_combiner_stream) {
    mpl_attn_combiner_args a; /* copied; mask/n_tok/pos0 unused */
    int logsparse, n_lev;
    int64_t S, H, d, HD, W, L, seg, n_sum, next, off[64], n_per;
    MPL_REAL *X;  /* (S, L, W) the rows so far */
    MPL_REAL *KR; /* (S, L, HD) rotated k (Fixed with RoPE) */
    MPL_REAL *QR; /* (S, HD) the current rotated q */
    MPL_REAL *KH, *VH; /* (S, H, n_sum, d) summaries */
    uint8_t *PR;  /* (S, n_sum) */
    MPL_REAL *scratch;
    int64_t *iscratch;
};

void MPL_SUF(mpl_attn_combiner_stream_destroy)(MPL_SUF(mpl_attn_combiner_stream) **st)
{
    if (!st || !*st) return;
    MPL_SUF(mpl_attn_combiner_stream) *z = *st;
    free(z->X), free(z->KR), free(z->QR), free(z->KH), free(z->VH), free(z->PR);
    free(z->scratch), free(z->iscratch);
    free(z);
    *st = NULL;
}

mpl_status MPL_SUF(mpl_attn_combiner_stream_create)(const mpl_attn_combiner_args *a,
                                                    int logsparse,
                                                    MPL_SUF(mpl_attn_combiner_stream) **out)
{
    *out = NULL;
    mpl_attn_combiner_args b = *a;
    b.n_tok = 0, b.pos0 = 0, b.mask = NULL;
    MPL_CHECK(cb_check(&b, !logsparse));
    if (!a->causal)
        return mpl_err(MPL_ERR_UNSUPPORTED, "streaming needs causal attention (causal=%d)",
                       a->causal);
    MPL_SUF(mpl_attn_combiner_stream) *z = NULL;
    MPL_ALLOC(z, 1);
    mpl_status st = MPL_OK;
    z->a = b, z->logsparse = logsparse;
    z->S = b.n_seq, z->H = b.n_head, z->d = b.head_dim, z->HD = z->H * z->d, z->W = 3 * z->HD;
    z->L = b.seq_len, z->seg = logsparse ? 1 : b.segment;
    if (logsparse) {
        z->n_lev = mpl_attn_combiner_logsparse_levels(z->L);
        for (int l = 0; l < z->n_lev; l++) z->off[l] = z->n_sum, z->n_sum += z->L >> l;
    } else {
        z->n_sum = mpl_attn_combiner_fixed_n_seg(&b);
    }
    const int nth = omp_get_max_threads();
    z->n_per = 2 * (z->seg + z->n_sum + 2 * z->n_lev + 2) + z->L + 3 * z->d;
    z->X = malloc((size_t)(z->S * z->L * z->W + 1) * sizeof *z->X);
    z->QR = malloc((size_t)(z->S * z->HD + 1) * sizeof *z->QR);
    z->KH = malloc((size_t)(z->S * z->HD * z->n_sum + 1) * sizeof *z->KH);
    z->VH = malloc((size_t)(z->S * z->HD * z->n_sum + 1) * sizeof *z->VH);
    z->PR = calloc((size_t)(z->S * z->n_sum + 1), 1);
    z->scratch = malloc((size_t)(nth * z->n_per) * sizeof *z->scratch);
    z->iscratch = malloc((size_t)(nth * (z->n_sum + 2 * z->n_lev + 1)) * sizeof *z->iscratch);
    if (!logsparse && b.rope_theta > 0)
        z->KR = malloc((size_t)(z->S * z->L * z->HD + 1) * sizeof *z->KR);
    if (!z->X || !z->QR || !z->KH || !z->VH || !z->PR || !z->scratch || !z->iscratch ||
        (!logsparse && b.rope_theta > 0 && !z->KR))
        MPL_FAIL_GOTO(fail, MPL_ERR_NOMEM, "combiner stream: out of memory for L=%lld",
                      (long long)z->L);
    *out = z;
    return MPL_OK;
fail:
    MPL_SUF(mpl_attn_combiner_stream_destroy)(&z);
    return st;
}

mpl_status MPL_SUF(mpl_attn_combiner_stream_step)(MPL_SUF(mpl_attn_combiner_stream) *z,
                                                  int64_t pos, const MPL_REAL *qkv_row,
                                                  MPL_REAL *out_row)
{
    if (pos != z->next || pos >= z->L)
        return mpl_err(MPL_ERR_ARG, "combiner stream: pos=%lld, expected %lld (< seq_len=%lld)",
                       (long long)pos, (long long)z->next, (long long)z->L);
    const int64_t S = z->S, H = z->H, d = z->d, HD = z->HD, W = z->W, L = z->L;
    const double theta = z->a.rope_theta;
    const MPL_REAL scale = (MPL_REAL)(1.0 / sqrt((double)d));
    for (int64_t s = 0; s < S; s++) {
        memcpy(z->X + (s * L + pos) * W, qkv_row + s * W, (size_t)W * sizeof *qkv_row);
        memcpy(z->QR + s * HD, qkv_row + s * W, (size_t)HD * sizeof *qkv_row);
    }
    if (z->KR) { /* QR and each new KR row rotated to pos (same code as the forward) */
        MPL_SUF(mpl_rope_apply)(z->QR, S, 1, HD, 0, (int)H, (int)d, pos, theta, 1);
        for (int64_t s = 0; s < S; s++) {
            MPL_REAL *kr = z->KR + (s * L + pos) * HD;
            memcpy(kr, qkv_row + s * W + HD, (size_t)HD * sizeof *kr);
            MPL_SUF(mpl_rope_apply)(kr, 1, 1, HD, 0, (int)H, (int)d, pos, theta, 1);
        }
    }
#pragma omp parallel
    {
        const int tid = omp_get_thread_num();
        MPL_REAL *lg = z->scratch + tid * z->n_per;
        MPL_REAL *w = lg + 2 * (z->seg + z->n_sum + 2 * z->n_lev + 2), *tmp = w + L;
        int64_t *idx = z->iscratch + tid * (z->n_sum + 2 * z->n_lev + 1);
#pragma omp for schedule(static)
        for (int64_t sh = 0; sh < S * H; sh++) {
            const int64_t s = sh / H, h = sh % H;
            const MPL_REAL *Xs = z->X + s * L * W + h * d;
            MPL_REAL *KH = z->KH + (s * H + h) * z->n_sum * d, *VH = z->VH + (s * H + h) * z->n_sum * d;
            const uint8_t *pr = z->PR + s * z->n_sum;
            cb_slots q = {.d = d, .scale = scale, .ldv = W, .ldh = d, .KH = KH, .VH = VH,
                          .idx = idx, .qu = Xs + pos * W};
            int64_t n = 0, t0 = pos; /* t0: first direct row */
            if (z->logsparse) {
                for (int l = 0; l < z->n_lev; l++)
                    if ((pos >> l) & 1) {
                        const int64_t m = z->off[l] + (pos >> l) - 1;
                        if (pr[m]) idx[n++] = m;
                    }
                q.qr = q.qu;
            } else {
                const int64_t g = pos / z->seg;
                t0 = g * z->seg;
                for (int64_t m = 0; m < g; m++)
                    if (pr[m]) idx[n++] = m;
                q.qr = z->KR ? z->QR + s * HD + h * d : q.qu;
            }
            q.nj = pos - t0 + 1, q.n_m = n;
            q.Kd = z->KR ? z->KR + (s * L + t0) * HD + h * d : Xs + t0 * W + HD;
            q.ldk = z->KR ? HD : W;
            q.Vd = Xs + t0 * W + 2 * HD;
            cb_query_fwd(&q, lg, out_row + s * HD + h * d);
            /* summaries finished by this token */
            if (z->logsparse) {
                for (int l = 0; l < z->n_lev; l++) {
                    if ((pos + 1) % ((int64_t)1 << l)) break; /* higher levels neither */
                    const int64_t b = ((pos + 1) >> l) - 1, m = z->off[l] + b;
                    const int64_t u0 = b << l;
                    const int p = cb_span_fwd(pos + 1 - u0, d, W, Xs + u0 * W, Xs + u0 * W + HD,
                                              Xs + u0 * W + 2 * HD, NULL, scale, tmp,
                                              KH + m * d, VH + m * d, w);
                    if (h == 0) z->PR[s * z->n_sum + m] = (uint8_t)p;
                }
            } else {
                const int64_t g = pos / z->seg, end = t0 + z->seg < L ? t0 + z->seg : L;
                if (pos == end - 1) {
                    const int p = cb_span_fwd(pos + 1 - t0, d, W, Xs + t0 * W, Xs + t0 * W + HD,
                                              Xs + t0 * W + 2 * HD, NULL, scale, tmp,
                                              KH + g * d, VH + g * d, w);
                    if (h == 0) z->PR[s * z->n_sum + g] = (uint8_t)p;
                }
            }
        }
    }
    z->next = pos + 1;
    return MPL_OK;
}
