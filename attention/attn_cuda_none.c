/* A build without the CUDA backend: the GPU attention is absent, and
 * asking for it says so (attention/cuda.h). */
#include "registry_cuda.h"

#include "../core/cuda.h"

mpl_status mpl_attn_cuda_create(const mpl_attn_cfg *cfg, mpl_attn *out)
{
    (void)cfg;
    (void)out;
    return mpl_err(MPL_ERR_UNSUPPORTED, "%s", MPL_CUDA_NOT_BUILT);
}
