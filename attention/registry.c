/* The attention registry (registry.h): configuration checks shared by all
 * kinds, then dispatch to the one implementation of the kind. */
#include <string.h>

#include "combiner.h"
#include "dense.h"
#include "fmm.h"
#include "registry.h"
#include "registry_cuda.h"

static mpl_status attn_cfg_check(const mpl_attn_cfg *cfg)
{
    if ((int)cfg->kind < 0 || cfg->kind >= MPL_ATTN_KIND_COUNT)
        return mpl_err(MPL_ERR_ARG, "attention kind %d is not a known kind", (int)cfg->kind);
    if (cfg->n_head < 1)
        return mpl_err(MPL_ERR_ARG, "attention n_head=%d must be >= 1", cfg->n_head);
    if (cfg->head_dim < 1)
        return mpl_err(MPL_ERR_ARG, "attention head_dim=%d must be >= 1", cfg->head_dim);
    if (cfg->causal != 0 && cfg->causal != 1)
        return mpl_err(MPL_ERR_ARG, "attention causal=%d must be 0 or 1", cfg->causal);
    if (!(cfg->rope_theta >= 0))
        return mpl_err(MPL_ERR_ARG, "attention rope_theta=%g must be >= 0", cfg->rope_theta);
    if (cfg->rope_theta > 0 && cfg->head_dim % 2 != 0)
        return mpl_err(MPL_ERR_ARG,
                       "RoPE (rope_theta=%g) needs an even head_dim, got head_dim=%d",
                       cfg->rope_theta, cfg->head_dim);
    return MPL_OK;
}

mpl_status mpl_attn_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp, mpl_attn *out)
{
    (void)sp; /* dense is local; sequence-parallel kinds will keep it */
    memset(out, 0, sizeof *out);
    MPL_CHECK(attn_cfg_check(cfg));
    if (cfg->device == MPL_DEVICE_CUDA) {
        if (sp)
            return mpl_err(MPL_ERR_UNSUPPORTED,
                           "device=cuda runs one rank per sequence in this version: sequence "
                           "parallelism on GPUs (sp > 1) is not implemented yet");
        MPL_CHECK(mpl_attn_cuda_create(cfg, out));
        return MPL_OK;
    }
    if (cfg->device != MPL_DEVICE_CPU)
        return mpl_err(MPL_ERR_ARG, "attention device=%d is not a known device", (int)cfg->device);
    switch (cfg->kind) {
    case MPL_ATTN_KIND_DENSE:
        MPL_CHECK(mpl_attn_dense_create(cfg, out));
        return MPL_OK;
    case MPL_ATTN_KIND_FMM:
        MPL_CHECK(mpl_attn_fmm_create(cfg, sp, out));
        return MPL_OK;
    case MPL_ATTN_KIND_COMBINER_FIXED:
    case MPL_ATTN_KIND_COMBINER_LOGSPARSE:
        MPL_CHECK(mpl_attn_combiner_create(cfg, sp, out));
        return MPL_OK;
    default:
        return mpl_err(MPL_ERR_UNSUPPORTED, "attn=%s is not available in this build yet",
                       mpl_attn_kind_name(cfg->kind));
    }
}

void mpl_attn_destroy(mpl_attn *a)
{
    if (!a) return;
    if (a->ops && a->ops->destroy) a->ops->destroy(&a->impl);
    a->ops = NULL;
    a->impl = NULL;
}
