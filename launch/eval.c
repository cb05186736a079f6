/* Validation loss over a split (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

mpl_status mpl_eval_split(mpl_trainer *t, mpl_data_reader *rd, int64_t max_windows,
                          double bytes_per_token, mpl_eval_result *out,
                          void (*progress)(void *ctx, int64_t done, int64_t total), void *ctx)
{
    mpl_status st = MPL_OK;
    const mpl_config *c = &t->cfg;
    const int64_t L = c->seq_len, B = c->batch, n_split = mpl_data_reader_n_tokens(rd);
    const int64_t a = t->chunk_a, n = t->chunk_b - t->chunk_a;
    const double t0 = mpl_now();
    memset(out, 0, sizeof *out);
    mpl_nan_probe_set_step(t->probe, 0); /* debug_nan_* injects into training steps only */
    if (n_split < L + 1)
        return mpl_err(MPL_ERR_FORMAT, "the split holds %lld tokens, fewer than seq_len+1 = %lld",
                       (long long)n_split, (long long)(L + 1));
    /* Windows: full ones at k*L, then (maybe) the tail window ending at the
     * last token that scores only the `tail` targets beyond the last full one. */
    const int64_t n_full = (n_split - 1) / L, tail = (n_split - 1) % L;
    int64_t n_win = n_full + (tail > 0);
    if (max_windows > 0 && max_windows < n_win) n_win = max_windows;
    int32_t *buf = malloc((size_t)(n + 1) * sizeof *buf);
    int32_t *tok = malloc((size_t)(B * n) * sizeof *tok);
    int32_t *tgt = malloc((size_t)(B * n) * sizeof *tgt);
    if (!buf || !tok || !tgt) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for a batch");

    /* DP group p takes windows p, p+dp, ...; B of them per forward. */
    double sum[2] = {0, 0};
    const int64_t rounds = (n_win + B * t->dp - 1) / (B * t->dp);
    for (int64_t r = 0; r < rounds; r++) {
        int64_t nb = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t w = (r * B + b) * t->dp + t->dp_rank;
            if (w >= n_win) break;
            int64_t start = w < n_full ? w * L : n_split - 1 - L;
            /* tail window: targets at window positions < L - tail are scored already */
            int64_t first_new = w < n_full ? 0 : L - tail;
            st = mpl_data_reader_read_at(rd, start + a, n + 1, buf);
            if (st != MPL_OK) break;
            for (int64_t i = 0; i < n; i++) {
                tok[nb * n + i] = buf[i];
                tgt[nb * n + i] = a + i >= first_new ? buf[i + 1] : -1;
            }
            nb++;
        }
        /* A group may have run out of windows: it skips the forward, which
         * is collective on its own SP group only (all of which agree). */
        if (st == MPL_OK && nb > 0) {
            mpl_attn_geom g = {nb, n, a, NULL};
            double loss_sum = 0;
            int64_t cnt = 0;
            st = mpl_model_forward(t->model, &g, tok, tgt, &loss_sum, &cnt);
            sum[0] += loss_sum;
            sum[1] += (double)cnt;
        }
        MPL_CHECK_GOTO(mpl_comm_agree(t->world, &st), done);
        if (progress) {
            int64_t d = (r + 1) * B * t->dp;
            progress(ctx, d < n_win ? d : n_win, n_win);
        }
    }
    MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f64(t->world, sum, 2), done);
    out->n_tokens = (int64_t)sum[1];
    out->n_windows = n_win;
    out->loss = sum[1] > 0 ? sum[0] / sum[1] : NAN;
    out->bits_per_token = out->loss / log(2.0);
    out->bits_per_byte = bytes_per_token > 0 ? out->bits_per_token / bytes_per_token : NAN;
    out->perplexity = exp(out->loss);
    out->seconds = mpl_now() - t0;
done:
    free(buf);
    free(tok);
    free(tgt);
    return st;
}

mpl_status mpl_eval_cls(mpl_trainer *t, mpl_cls_reader *rd, int64_t max_examples,
                        mpl_eval_cls_result *out,
                        void (*progress)(void *ctx, int64_t done, int64_t total), void *ctx)
{
    mpl_status st = MPL_OK;
    const mpl_cls_info info = mpl_cls_reader_info(rd);
    const int64_t B = t->cfg.batch, a = t->chunk_a, n = t->chunk_b - t->chunk_a;
    const int64_t K = mpl_model_config(t->model)->n_classes;
    const double t0 = mpl_now();
    memset(out, 0, sizeof *out);
    if (K < 1) return mpl_err(MPL_ERR_ARG, "eval of a classification split with a language model");
    if (t->cfg.seq_len != info.max_len)
        return mpl_err(MPL_ERR_ARG, "the examples hold %lld tokens but the model's seq_len is %lld",
                       (long long)info.max_len, (long long)t->cfg.seq_len);
    mpl_nan_probe_set_step(t->probe, 0);
    int64_t n_ex = info.n;
    if (max_examples > 0 && max_examples < n_ex) n_ex = max_examples;
    int32_t *tok = malloc((size_t)(B * n) * sizeof *tok), *lab = malloc((size_t)B * sizeof *lab);
    uint8_t *mask = malloc((size_t)(B * n));
    if (!tok || !lab || !mask) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for a batch");
    /* loss sum, examples, correct: counted on SP rank 0 (the head owner) */
    double sum[3] = {0, 0, 0};
    const int64_t rounds = (n_ex + B * t->dp - 1) / (B * t->dp);
    for (int64_t r = 0; r < rounds; r++) {
        int64_t nb = 0;
        for (int64_t b = 0; b < B && st == MPL_OK; b++) {
            const int64_t e = (r * B + b) * t->dp + t->dp_rank;
            if (e >= n_ex) break;
            st = mpl_cls_reader_read(rd, e, a, n, tok + nb * n, mask + nb * n, lab + nb);
            nb++;
        }
        if (st == MPL_OK && nb > 0) {
            mpl_attn_geom g = {nb, n, a, mask};
            double loss_sum = 0;
            int64_t cnt = 0;
            st = mpl_model_forward(t->model, &g, tok, lab, &loss_sum, &cnt);
            const float *lg = mpl_model_class_logits(t->model);
            for (int64_t s = 0; st == MPL_OK && cnt > 0 && s < nb; s++) {
                int64_t best = 0;
                for (int64_t k = 1; k < K; k++)
                    if (lg[s * K + k] > lg[s * K + best]) best = k;
                sum[2] += best == lab[s];
            }
            sum[0] += loss_sum;
            sum[1] += (double)cnt;
        }
        MPL_CHECK_GOTO(mpl_comm_agree(t->world, &st), done);
        if (progress) {
            int64_t d = (r + 1) * B * t->dp;
            progress(ctx, d < n_ex ? d : n_ex, n_ex);
        }
    }
    MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f64(t->world, sum, 3), done);
    out->n_examples = (int64_t)sum[1];
    out->loss = sum[1] > 0 ? sum[0] / sum[1] : NAN;
    out->accuracy = sum[1] > 0 ? sum[2] / sum[1] : NAN;
    out->seconds = mpl_now() - t0;
done:
    free(tok);
    free(lab);
    free(mask);
    return st;
}
