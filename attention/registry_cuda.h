/* The GPU implementations of core/attn.h (attention/cuda/): dense, FMM
 * (channel blend) and Combiner-Fixed on one rank, whole-chunk forward and
 * backward on device pointers (no piecewise evaluation, no streaming, no
 * padding mask yet). The registry calls this for cfg->device = CUDA; a
 * build without CUDA links attention/attn_cuda_none.c, which answers
 * MPL_ERR_UNSUPPORTED with MPL_CUDA_NOT_BUILT. */
#ifndef MPL_ATTN_REGISTRY_CUDA_H
#define MPL_ATTN_REGISTRY_CUDA_H

#include "../core/attn.h"
#include "../core/status.h"

/* Local. cfg copied; cfg->cuda borrowed (must outlive the instance).
 * MPL_ERR_UNSUPPORTED naming the kind or option the GPU path lacks
 * (combiner_logsparse, fmm_blend=lra, head_dim > 256). */
mpl_status mpl_attn_cuda_create(const mpl_attn_cfg *cfg, mpl_attn *out);

#endif
