/* What the GPU attention implementations share (dense_cuda.c,
 * fmm_cuda.c, combiner_cuda.c): the instance with its context and a
 * workspace that grows to the largest geometry seen (allocated once for a
 * training run's fixed geometry, never per call), the call geometry, and
 * the rotated copies of q and k. CUDA builds only. */
#ifndef MPL_ATTN_CUDA_INTERNAL_H
#define MPL_ATTN_CUDA_INTERNAL_H

#include <stdint.h>

#include "../../core/attn.h"
#include "../../core/cuda.h"
#include "kernels.h"

typedef struct cuda_attn {
    mpl_attn_cfg cfg;   /* copied at create */
    mpl_cuda *cu;       /* borrowed */
    void *ws;           /* device workspace */
    size_t cap;         /* its bytes */
    mpl_attn cpu;       /* FMM: the CPU instance that declares and initialises
                         * the blend parameters, so both devices agree */
    int64_t *off;       /* FMM: (n_off, 2) offsets of blend_near, blend_far */
    int n_off;
} cuda_attn;

/* Local. A zeroed instance for cfg; checks the context and head_dim. */
mpl_status mpl_attn_cuda_base(const mpl_attn_cfg *cfg, cuda_attn **out);
/* Local. Frees the workspace, the CPU twin and the instance. */
void mpl_attn_cuda_base_free(void **impl);
/* Local. The workspace, at least n_bytes, in *ws. */
mpl_status mpl_attn_cuda_ws(cuda_attn *a, size_t n_bytes, void **ws);
/* Local. MPL_ERR_UNSUPPORTED for what the GPU path does not take yet. */
mpl_status mpl_attn_cuda_check_geom(const cuda_attn *a, const mpl_attn_geom *g);
/* Local. Dims of a call with the given softmax window and segment. */
mpl_cuda_attn_dims mpl_attn_cuda_dims(const cuda_attn *a, const mpl_attn_geom *g,
                                      int64_t window, int64_t seg);
/* Local. dst (S, T, H*d) = the q (col 0) or k (col H*d) block of qkv,
 * rotated by RoPE to positions pos0.. when rope_theta > 0. */
mpl_status mpl_attn_cuda_rotated(const cuda_attn *a, const mpl_attn_geom *g, const float *qkv,
                                 int64_t col, float *dst);
/* Local. dqkv's block col += src (S, T, H*d) rotated back to the
 * unrotated frame (RoPE's transpose), in place in src. */
mpl_status mpl_attn_cuda_add_unrotated(const cuda_attn *a, const mpl_attn_geom *g, float *src,
                                       int64_t col, float *dqkv);

/* Local. The three kinds. */
mpl_status mpl_attn_cuda_dense_create(const mpl_attn_cfg *cfg, mpl_attn *out);
mpl_status mpl_attn_cuda_fmm_create(const mpl_attn_cfg *cfg, mpl_attn *out);
mpl_status mpl_attn_cuda_combiner_create(const mpl_attn_cfg *cfg, mpl_attn *out);

#endif
