/* The decoder-only language model: embedding -> n_layer x [RMSNorm ->
 * attention -> residual; RMSNorm -> GELU MLP -> residual] -> RMSNorm ->
 * tied unembedding -> softmax cross-entropy. Parameters, gradients and the
 * activations saved for backward each live in one slab. */
#ifndef MPL_MODEL_H
#define MPL_MODEL_H

#include <stdint.h>

#include "attn.h"
#include "slab.h"
#include "status.h"

typedef struct mpl_model_cfg {
    int64_t vocab_size;
    int64_t d_model;
    int64_t n_layer;
    int64_t n_head;
    int64_t mlp_mult;      /* hidden = mlp_mult * d_model */
    double norm_eps;       /* RMSNorm epsilon */
} mpl_model_cfg;

typedef struct mpl_model mpl_model;

/* Local. Build the parameter layout and allocate params and grads.
 * cfg is copied; attn is borrowed and must outlive the model. */
mpl_status mpl_model_create(const mpl_model_cfg *cfg, mpl_attn *attn, mpl_model **out);
/* Local. Frees everything; *m = NULL; NULL is a no-op. */
void mpl_model_destroy(mpl_model **m);

/* Local. Philox-keyed initialisation by (seed, tensor name, element):
 * identical at any rank layout. */
void mpl_model_init_params(mpl_model *m, uint64_t seed);

/* Local. Make room for activations of n_seq sequences of n_tok tokens. */
mpl_status mpl_model_reserve(mpl_model *m, int64_t n_seq, int64_t n_tok);

/* Collective on the attention's group (if any). Forward over
 * tokens (g->n_seq, g->n_tok) of global positions starting at g->pos0.
 * targets may be NULL (no loss). *loss_sum receives the sum of per-token
 * losses over targets >= 0, *n_counted their number. Saves what backward
 * needs. */
mpl_status mpl_model_forward(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                             const int32_t *targets, double *loss_sum, int64_t *n_counted);

/* Collective like forward. Accumulate parameter gradients of
 * loss_scale * (sum of token losses) into the grad slab. */
mpl_status mpl_model_backward(mpl_model *m, double loss_scale);

/* Local. Start generating n_seq sequences token by token through the
 * attention's streaming form, so a token costs work independent of its
 * position (FMM, Combiner) . MPL_ERR_UNSUPPORTED when the mechanism has no
 * streaming form (or is bidirectional); the caller then recomputes over a
 * window with mpl_model_forward. */
mpl_status mpl_model_stream_begin(mpl_model *m, int64_t n_seq);
/* Local. Feed one token per sequence (n_seq) at the next position (0, 1,
 * ...); *logits receives (n_seq, V), valid until the next call. */
mpl_status mpl_model_stream_step(mpl_model *m, const int32_t *tokens, const float **logits);
/* Local. Free the stream (no-op without one). */
void mpl_model_stream_end(mpl_model *m);

/* Local. Logits (n_seq, n_tok, V) of the last forward (valid until the next). */
const float *mpl_model_logits(const mpl_model *m);

/* Local. Accessors. */
const mpl_slab_layout *mpl_model_layout(const mpl_model *m);
float *mpl_model_params(mpl_model *m);
float *mpl_model_grads(mpl_model *m);
const mpl_model_cfg *mpl_model_config(const mpl_model *m);
void mpl_model_zero_grad(mpl_model *m);

#endif
