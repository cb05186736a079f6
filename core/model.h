/* The decoder-only language model: embedding -> n_layer x [RMSNorm ->
 * attention -> residual; RMSNorm -> GELU MLP -> residual] -> RMSNorm ->
 * tied unembedding -> softmax cross-entropy. Parameters, gradients and the
 * activations saved for backward each live in one slab. The chunk is
 * evaluated in pieces of tokens and what the backward needs is either kept
 * or recomputed (mpl_recompute), so the memory per token can be as small
 * as one residual-stream row per layer.
 *
 * Backends: cfg.device chooses where the model lives. MPL_DEVICE_CPU is the
 * code of core/model*.c (fp32, the reference). MPL_DEVICE_CUDA
 * (core/cuda/model_cuda*.c) keeps parameters, gradients and activations
 * in GPU memory and runs the same model in bf16 with fp32 accumulation
 * and fp32 master weights, over the whole chunk at once; both sit behind
 * these functions. The parameter layout and initialisation are shared, so
 * a checkpoint of either loads into the other. */
#ifndef MPL_MODEL_H
#define MPL_MODEL_H

#include <stdint.h>

#include "attn.h"
#include "device.h"
#include "slab.h"
#include "status.h"

/* What the forward keeps for the backward; the rest is recomputed there. */
typedef enum mpl_recompute {
    MPL_RECOMPUTE_NONE = 0, /* every activation */
    MPL_RECOMPUTE_ATTN,     /* all but the attention's output and saved values */
    MPL_RECOMPUTE_LAYER,    /* each block's input only */
    MPL_RECOMPUTE_COUNT
} mpl_recompute;

/* A sum over the ranks that share the sequences (the SP group), for the
 * classifier's mean pooling; the model calls it collectively. */
typedef struct mpl_model_reduce {
    void *user;
    /* Collective on the group: buf (n) summed in place over its ranks. */
    mpl_status (*sum)(void *user, double *buf, int64_t n);
} mpl_model_reduce;

typedef struct mpl_model_cfg {
    int64_t vocab_size;
    int64_t d_model;
    int64_t n_layer;
    int64_t n_head;
    int64_t mlp_mult;      /* hidden = mlp_mult * d_model */
    /* Learned absolute positions (tensor wpe, n_pos x d_model) added to the
     * token embedding, for global positions [0, n_pos): the LRA codes'
     * setting, for tasks of bounded length. 0: none (RoPE alone; what
     * reaches any length). A forward past n_pos is refused. */
    int64_t n_pos;
    double norm_eps;       /* RMSNorm epsilon */
    mpl_recompute recompute;
    /* Tokens per piece: the chunk is evaluated in pieces of at most this
     * many tokens (core/attn.h, "Piecewise evaluation"), so workspace does
     * not grow with the sequence and no (L, V) logits exist. 0: the whole
     * chunk is one piece. */
    int64_t piece_tokens;
    int keep_logits;       /* 1: forward keeps (n_seq, n_tok, V) logits (mpl_model_logits) */
    /* Classifier (n_classes > 0): the final norm mean-pooled over each
     * sequence's real tokens (the geometry's mask), then a linear head
     * (head.w, head.b) and cross-entropy on one label per sequence,
     * instead of the tied unembedding and next-token loss. A sequence
     * split over ranks pools through reduce (NULL: one rank); only the
     * head_owner rank (1) reports the loss and accumulates the head's
     * gradient, so summing over ranks counts each sequence once. */
    int64_t n_classes;
    int head_owner;
    const mpl_model_reduce *reduce;   /* borrowed; must outlive the model */
    /* Where the model runs. MPL_DEVICE_CUDA needs cuda (borrowed; must
     * outlive the model), an attention instance created for the same
     * device, recompute = none, no classifier and keep_logits = 0 (the
     * CUDA backend of this version); piece_tokens is ignored there (the
     * chunk is one piece). */
    mpl_device device;
    struct mpl_cuda *cuda;
} mpl_model_cfg;

/* Bytes one rank needs for a model and a chunk geometry, by item. */
typedef struct mpl_model_mem {
    int64_t params, grads;  /* the two slabs */
    int64_t acts;           /* kept from forward to backward (activations, token ids) */
    int64_t attn_state;     /* the attention's per-layer piece states */
    int64_t work;           /* workspace of one piece or layer, backward scratch */
    int64_t attn_work;      /* what the attention allocates for itself during a call */
} mpl_model_mem;

typedef struct mpl_model mpl_model;

/* Local. Build the parameter layout and allocate params and grads.
 * cfg is copied; attn is borrowed and must outlive the model. */
mpl_status mpl_model_create(const mpl_model_cfg *cfg, mpl_attn *attn, mpl_model **out);
/* Local. Frees everything; *m = NULL; NULL is a no-op. */
void mpl_model_destroy(mpl_model **m);

/* Local. Philox-keyed initialisation by (seed, tensor name, element):
 * identical at any rank layout and on any device (a device model is
 * initialised in its host mirror and pushed). */
mpl_status mpl_model_init_params(mpl_model *m, uint64_t seed);

/* Local. Make room for activations of n_seq sequences of n_tok tokens. */
mpl_status mpl_model_reserve(mpl_model *m, int64_t n_seq, int64_t n_tok);

/* Local. What reserve and a forward/backward of geometry g need, without
 * allocating anything. */
mpl_status mpl_model_plan(const mpl_model *m, const mpl_attn_geom *g, mpl_model_mem *out);

/* Collective on the attention's group (if any). Forward over
 * tokens (g->n_seq, g->n_tok) of global positions starting at g->pos0.
 * targets may be NULL (no loss). *loss_sum receives the sum of per-token
 * losses over targets >= 0, *n_counted their number. Saves what backward
 * needs. A classifier takes one label per sequence in targets (n_seq;
 * < 0: none) and counts sequences. */
mpl_status mpl_model_forward(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                             const int32_t *targets, double *loss_sum, int64_t *n_counted);

/* Collective like forward. Accumulate parameter gradients of
 * loss_scale * (sum of token losses) into the grad slab. */
mpl_status mpl_model_backward(mpl_model *m, double loss_scale);

/* Called by mpl_model_backward as parts of the gradient slab become final
 * (what lets a caller reduce them while the backward goes on): n floats
 * from offset will not change again in this backward. Block l's range
 * after its backward (the top block's with the final norm and the head
 * after it), the embedding's last; the ranges tile the slab, one call each
 * per backward. A failure returned stops the backward with it. The CUDA
 * backend does not call it (the caller then sees no call at all). */
typedef mpl_status (*mpl_grad_ready_fn)(void *ctx, int64_t offset, int64_t n);
/* Local. fn = NULL: none (the default). */
void mpl_model_set_grad_ready(mpl_model *m, mpl_grad_ready_fn fn, void *ctx);

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

/* Local. Logits (n_seq, n_tok, V) of the last forward (valid until the
 * next), or NULL unless the config asked to keep them. */
const float *mpl_model_logits(const mpl_model *m);

/* Local. A classifier's logits (n_seq, n_classes) of the last forward
 * (the same on every rank of the group), or NULL for a language model. */
const float *mpl_model_class_logits(const mpl_model *m);

/* Local. Accessors. params and grads are host slabs laid out by the
 * layout: the model's own on a CPU model; on a device model, mirrors of
 * the device slabs, valid after mpl_model_params_pull / grads_pull, and
 * written back by mpl_model_params_push (checkpoints, tests). */
const mpl_slab_layout *mpl_model_layout(const mpl_model *m);
float *mpl_model_params(mpl_model *m);
float *mpl_model_grads(mpl_model *m);
const mpl_model_cfg *mpl_model_config(const mpl_model *m);
mpl_status mpl_model_zero_grad(mpl_model *m);

/* Local. Copies between a device model and its host mirrors (no-ops on a
 * CPU model): params device -> host, host -> device (also refreshes the
 * bf16 copy the products read), grads device -> host. */
mpl_status mpl_model_params_pull(mpl_model *m);
mpl_status mpl_model_params_push(mpl_model *m);
mpl_status mpl_model_grads_pull(mpl_model *m);
/* Local. Where the model runs. */
mpl_device mpl_model_device(const mpl_model *m);

#endif
