/* The attention registry: turns an mpl_attn_cfg into an instance of the
 * matching implementation. Separate from the implementations so launch/
 * and the tests name one function, and a mechanism that is not built yet
 * fails with one clear message. */
#ifndef MPL_ATTN_REGISTRY_H
#define MPL_ATTN_REGISTRY_H

#include "../core/attn.h"
#include "../core/status.h"
#include "../dist/comm.h"

/* Local. Create the attention instance for cfg (copied). sp is the
 * sequence-parallel communicator, borrowed (it must outlive the instance),
 * or NULL for a single rank. Validates cfg (n_head >= 1, head_dim >= 1,
 * causal 0/1, rope_theta >= 0, RoPE needs an even head_dim) with messages
 * naming the value: MPL_ERR_ARG. A kind this build does not implement yet
 * (everything but dense for now) gives MPL_ERR_UNSUPPORTED, "attn=<name> is
 * not available in this build yet"; a kind outside the enum MPL_ERR_ARG.
 * cfg->device = MPL_DEVICE_CUDA creates the GPU implementation
 * (registry_cuda.h) on cfg->cuda; it takes no sp (MPL_ERR_UNSUPPORTED). */
mpl_status mpl_attn_create(const mpl_attn_cfg *cfg, struct mpl_comm *sp, mpl_attn *out);

/* Local. Calls ops->destroy on the instance and zeroes *a; a zeroed
 * instance (or NULL) is a no-op. */
void mpl_attn_destroy(mpl_attn *a);

#endif
