/* Counting model FLOPs and measuring a peak, for MFU (model FLOPs
 * utilisation = achieved model FLOP/s / peak FLOP/s) in `train`'s progress
 * and metrics and in `bench`.
 *
 * Counted per token, forward (a multiply-add is 2 FLOPs; norms, GELU,
 * softmax and the optimizer are not counted):
 *   matmuls   2 (3C^2 + C^2 + 2 m C^2) per block + 2 C V for the unembedding
 *             (C = d_model, m = mlp_mult, V = vocab_size)
 *   attention the mechanism's own count per head of head dim d, times H:
 *             dense 2dL (causal; 4dL bidirectional), fmm 4wd + 4rd^2
 *             (8wd bidirectional), combiner_fixed 4d(s/2 + L/s),
 *             combiner_logsparse 4d(log2 L + 1)
 * and a training step (forward + backward) counts 3x the forward. */
#ifndef MPL_FLOPS_H
#define MPL_FLOPS_H

#include <stdint.h>

#include "config.h"
#include "core/attn.h"

/* Local. Counted forward FLOPs of one attention call over a sequence of L
 * tokens, all heads. */
double mpl_flops_attn_forward(const mpl_attn_cfg *a, int64_t L);
/* Local. Counted training FLOPs (forward + backward) per token of the
 * model cfg describes at sequence length cfg->seq_len. */
double mpl_flops_train_per_token(const mpl_config *cfg);
/* Local. FLOP/s of OpenBLAS sgemm (n x n x n, best of 3) on this thread
 * count; 0 when the buffers cannot be had. n = 512 takes a few ms. */
double mpl_flops_sgemm(int n);

#endif
