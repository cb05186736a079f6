/* Model FLOP counts and the sgemm peak (see flops.h). */
#include "flops.h"

#include <cblas.h>
#include <math.h>

#include "cli.h"
#include "core/slab.h"
#include "trainer.h"

double mpl_flops_attn_forward(const mpl_attn_cfg *a, int64_t L)
{
    const double d = a->head_dim, H = a->n_head, n = (double)L, w = (double)a->band;
    double f = 0;
    switch (a->kind) {
    case MPL_ATTN_KIND_DENSE: f = (a->causal ? 2 : 4) * d * n * n; break;
    case MPL_ATTN_KIND_FMM: f = n * ((a->causal ? 4 : 8) * w * d + 4.0 * a->fmm_n_maps * d * d); break;
    case MPL_ATTN_KIND_COMBINER_FIXED:
        f = 4 * d * n * ((double)a->segment / 2 + n / (double)a->segment);
        break;
    default: f = 4 * d * n * (log2(n > 1 ? n : 2) + 1); break;
    }
    return H * f;
}

double mpl_flops_train_per_token(const mpl_config *cfg)
{
    const double C = (double)cfg->d_model, V = (double)cfg->vocab_size;
    const double m = (double)cfg->mlp_mult, n_layer = (double)cfg->n_layer;
    mpl_attn_cfg a;
    mpl_trainer_attn_cfg(cfg, &a);
    double per_block = 2 * (4 * C * C + 2 * m * C * C) +
                       mpl_flops_attn_forward(&a, cfg->seq_len) / (double)cfg->seq_len;
    return 3 * (n_layer * per_block + 2 * C * V);
}

double mpl_flops_sgemm(int n)
{
    float *a = NULL, *b = NULL, *c = NULL;
    if (mpl_slab_alloc((int64_t)n * n, &a) || mpl_slab_alloc((int64_t)n * n, &b) ||
        mpl_slab_alloc((int64_t)n * n, &c)) {
        mpl_err_clear();
        mpl_slab_free(&a), mpl_slab_free(&b), mpl_slab_free(&c);
        return 0;
    }
    for (int64_t i = 0; i < (int64_t)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = mpl_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = mpl_now() - t0;
        best = t < best ? t : best;
    }
    mpl_slab_free(&a), mpl_slab_free(&b), mpl_slab_free(&c);
    return 2.0 * n * n * (double)n / best;
}
