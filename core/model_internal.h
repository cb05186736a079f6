/* The model's insides, shared by its files: model.c (parameters),
 * model_acts.c (where activations live, the memory plan), model_pass.c
 * (forward and backward), model_stream.c (generation). Not for use outside
 * core/model*.c. */
#ifndef MPL_MODEL_INTERNAL_H
#define MPL_MODEL_INTERNAL_H

#include "model.h"

/* Offsets of one block's parameters in the slab. */
typedef struct block_params {
    int64_t ln1_g, wqkv, wo, ln2_g, w1, w2;
} block_params;

/* Per-token activations of a block, in forward order. */
typedef enum act_field {
    A_XIN = 0, /* (C)  residual stream entering the block */
    A_RSTD1,   /* (1)  */
    A_XN1,     /* (C)  */
    A_QKV,     /* (3C) */
    A_ATT,     /* (C)  attention output */
    A_XMID,    /* (C)  residual after attention */
    A_RSTD2,   /* (1)  */
    A_XN2,     /* (C)  */
    A_HPRE,    /* (H4) */
    A_HACT,    /* (H4) */
    A_COUNT
} act_field;

/* Workspace buffers of one piece (widths per token) besides the act
 * fields that are not kept. */
typedef enum work_field {
    /* what a block's forward uses besides the act fields; they come first
     * in the workspace, so the second one of top_alias is this prefix */
    W_CBXN = 0, /* (C)  the attention's row callbacks */
    W_CBRSTD,   /* (1)  */
    W_CBQKV,    /* (3C) */
    W_X0,       /* (C)  layer 0's input when not kept (the embedding, recomputed) */
    W_CBX0,     /* (C)  the same for the row callbacks */
    W_XOUT,     /* (C)  block output when it is not kept; the first of the rest */
    W_XNF,      /* (C)  final norm */
    W_RSTDF,    /* (1)  */
    W_LOGITS,   /* (V)  */
    W_LOSSES,   /* (1)  */
    W_DLOGITS,  /* (V)  */
    W_DXO,      /* (C)  gradient of the block output */
    W_DXM,      /* (C)  gradient of the residual stream being built */
    W_DXN,      /* (C)  */
    W_DQKV,     /* (3C) */
    W_DATT,     /* (C)  */
    W_DHACT,    /* (H4) */
    W_DHPRE,    /* (H4) */
    W_XTOP,     /* (C)  the top block's input recomputed (top_alias) */
    W_COUNT
} work_field;

/* Where the gradient of block l's input (dx) lives in the backward:
 *   DX_BUF:   one buffer of N x C for every layer, in place;
 *   DX_ALIAS: over block l's kept input, piece by piece once the piece is
 *             done (recompute = layer, pieces that hand nothing back late);
 *             layer 0, whose input is not kept, over layer 1's;
 *   DX_SHIFT: over block l+1's kept input, free once block l+1 is done
 *             (recompute = layer with a deferred pass, which still needs
 *             block l's input after every piece: sp > 1 or bidirectional
 *             FMM); the top block over its own input (top_alias), which
 *             its deferred pass then recomputes from the block below, or
 *             with one layer into the buffer.
 * With recompute = layer both keep n_layer - 1 rows of C per token, the
 * inputs of layers 1.. (one layer: the buffer). */
typedef enum dx_place { DX_BUF = 0, DX_ALIAS, DX_SHIFT } dx_place;

/* Where activations live for one geometry (model_acts.c). Offsets are in
 * floats from the start of their buffer; -1: not kept. */
typedef struct act_layout {
    int64_t n_seq, n_tok, piece_tokens; /* piece_tokens resolved (> 0) */
    int whole;                          /* the attention runs over the whole chunk */
    int x0_kept;                        /* layer 0's input is kept (else recomputed) */
    dx_place dx_mode;                   /* where the residual-stream gradients live */
    int top_alias;                      /* DX_SHIFT: the top block's dx over its input */
    int64_t w[A_COUNT];                 /* widths per token */
    int64_t keep[A_COUNT];              /* per-layer offsets of kept fields (layer 0) */
    int64_t keep_saved;                 /* per-layer offset of kept attention values, or -1 */
    int64_t saved_piece;                /* floats of one piece's saved values (piece strategy) */
    int64_t saved_whole;                /* floats of the whole chunk's (whole strategy) */
    int64_t per_layer;                  /* kept floats per layer */
    int64_t x_final, logits, dx;        /* offsets in acts (-1: absent) */
    int64_t n_acts;                     /* floats of the kept slab */
    int64_t wpiece[A_COUNT];            /* workspace offsets of fields not kept, per piece */
    int64_t wbuf[W_COUNT];              /* workspace offsets of the work fields */
    int64_t wwhole[3];                  /* whole-chunk qkv, att, saved when not kept (whole) */
    int64_t wdwhole[2];                 /* whole-chunk dqkv, datt (whole strategy) */
    int64_t n_work;                     /* floats of the workspace */
    int64_t n_work_fwd;                 /* floats of its prefix a block's forward uses */
    int64_t state_per_layer;            /* floats of one layer's attention piece state */
} act_layout;

/* A backend other than the CPU code of core/model*.c: the model's public
 * functions call these when mpl_model.be is set. Each gets the model with
 * its layout, block offsets and host mirrors (params, grads) filled in;
 * be_impl is the backend's own state. */
typedef struct mpl_model_backend {
    const char *name;
    void (*destroy)(mpl_model *m);                  /* frees be_impl */
    mpl_status (*reserve)(mpl_model *m, int64_t n_seq, int64_t n_tok);
    mpl_status (*plan)(const mpl_model *m, const mpl_attn_geom *g, mpl_model_mem *out);
    mpl_status (*forward)(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                          const int32_t *targets, double *loss_sum, int64_t *n_counted);
    mpl_status (*backward)(mpl_model *m, double loss_scale);
    mpl_status (*zero_grad)(mpl_model *m);
    mpl_status (*params_pull)(mpl_model *m);
    mpl_status (*params_push)(mpl_model *m);
    mpl_status (*grads_pull)(mpl_model *m);
} mpl_model_backend;

/* Local (core/cuda/model_cuda.c; core/cuda_none.c in a build without
 * CUDA). Turn a model whose layout and host slabs exist into a CUDA model:
 * sets m->be, m->be_impl. */
mpl_status mpl_model_cuda_attach(mpl_model *m);

struct mpl_model {
    mpl_model_cfg cfg;
    const mpl_model_backend *be;  /* NULL: the CPU code of core/model*.c */
    void *be_impl;
    mpl_attn *attn;               /* borrowed */
    mpl_slab_layout layout;
    float *params, *grads;
    int64_t wte, wpe, lnf_g;      /* offsets (wpe -1 without n_pos) */
    int64_t head_w, head_b;       /* classifier head offsets, -1 without */
    block_params *blk;            /* (n_layer) */

    /* activations, sized by mpl_model_reserve for cap_seq x cap_tok */
    int64_t cap_seq, cap_tok;
    act_layout lay;               /* of the last forward */
    float *acts, *work, *state;
    int64_t cap_acts, cap_work, cap_state; /* floats allocated */
    /* top_alias: a second workspace, where the block below the top one
     * recomputes the top one's input while the top one's deferred pass
     * holds the first; the pieces from top_done_from on have their top
     * input overwritten, xtop_piece is the piece in W_XTOP (-1: none) */
    float *work_alt;
    int64_t cap_work_alt, top_done_from, xtop_piece;
    int32_t *tokens, *targets;    /* (cap) copies for backward */
    uint8_t *qkv_ready;           /* (pieces): q, k, v of the piece already computed */
    int64_t cap_pieces;
    mpl_attn_geom geom;           /* of the last forward */
    /* classifier, per sequence (cap_seq): pooled sums then means, real
     * token counts, logits, the gradient of the pooled mean, labels */
    double *pooled, *count;
    float *cls_logits, *dpooled, *cls_dlogits; /* cls_dlogits: (n_classes) scratch */
    int32_t *labels;
    int64_t cap_cls;
    int have_forward;
    mpl_grad_ready_fn grad_ready; /* mpl_model_set_grad_ready */
    void *grad_ready_ctx;

    /* streaming generation (mpl_model_stream_*) */
    int64_t st_seq, st_pos;
    void **st_attn;               /* (n_layer) per-layer attention states */
    float *st_buf;                /* one token's activations */
};

/* Local (model_acts.c). The layout of geometry g. */
mpl_status mpl_model_act_layout(const mpl_model *m, const mpl_attn_geom *g, act_layout *out);
/* Local (model_acts.c). Make the buffers hold layout m->lay. */
mpl_status mpl_model_act_alloc(mpl_model *m);

/* Local (model_acts.c). Pointer to field f of layer l for piece p (index i
 * in the enumeration): the kept copy, or the workspace. NULL for layer 0's
 * input where it is not kept (model_pass.c recomputes it). */
float *mpl_model_act(const mpl_model *m, int l, act_field f, const mpl_attn_piece *p);
/* Local. The attention's saved values of piece i / of the whole chunk. */
float *mpl_model_saved(const mpl_model *m, int l, int64_t i);
/* Local. A work field. */
float *mpl_model_work(const mpl_model *m, work_field f);
/* Local. 1 when field f of a block is kept in this layout. */
int mpl_model_kept(const act_layout *L, act_field f);
/* Local. Token offset of piece p in sequence-major (n_seq, n_tok) rows. */
int64_t mpl_model_piece_tok0(const act_layout *L, const mpl_attn_piece *p);

#endif
