/* The inside of the CUDA model (model_cuda.c: buffers, copies, plan;
 * model_cuda_pass.c: forward and backward; optim_dev.c reads the slabs).
 * CUDA builds only; not for use outside core/cuda/.
 *
 * Memory: the fp32 parameter and gradient slabs and the bf16 copy of the
 * parameters are one cudaMalloc each; the activations kept for backward
 * (acts) and the workspace of a pass (work) are one each, carved into the
 * buffers below for the geometry of the call. Per token and block the
 * forward keeps the fp32 residual stream entering the block and after the
 * attention (xin, xmid), the fp32 q, k, v the attention reads (qkv) and
 * what it saved, and in bf16 the inputs of the four products (xn1, att,
 * xn2, hact) and the MLP's pre-activation (hpre). */
#ifndef MPL_MODEL_CUDA_H
#define MPL_MODEL_CUDA_H

#include "../cuda.h"
#include "../model_internal.h"

typedef struct cuda_block_acts {
    float *xin;           /* (N, C)  residual stream entering the block */
    float *rstd1;         /* (N) */
    mpl_bf16 *xn1;        /* (N, C) */
    float *qkv;           /* (N, 3C) */
    float *saved;         /* the attention's saved values */
    mpl_bf16 *att;        /* (N, C)  attention output, input of wo */
    float *xmid;          /* (N, C)  residual after the attention */
    float *rstd2;         /* (N) */
    mpl_bf16 *xn2;        /* (N, C) */
    mpl_bf16 *hpre;       /* (N, H4) */
    mpl_bf16 *hact;       /* (N, H4) */
} cuda_block_acts;

typedef struct mpl_model_cuda {
    mpl_cuda *cu;                 /* borrowed (cfg.cuda) */
    float *params, *grads;        /* device slabs (layout.n_elems) */
    mpl_bf16 *params_bf;          /* bf16 copy of params, what the products read */
    /* per-tensor tables of the fused AdamW (device): offset, size, decay */
    int64_t *t_off, *t_n;
    int32_t *t_decay;
    int64_t max_tensor;           /* the largest tensor's elements */

    /* activations and workspace for the geometry of the last call */
    void *acts, *work;
    size_t cap_acts, cap_work;    /* bytes allocated */
    int64_t saved_per_layer;      /* floats */
    cuda_block_acts *blk;         /* (n_layer) */
    float *xfin, *rstdf;          /* (N, C), (N): the final stream and its norm */
    mpl_bf16 *xnf;                /* (N, C) */
    mpl_bf16 *dlogits;            /* (N, V): softmax - onehot, unscaled */
    float *losses;                /* (N) */
    double *loss_sum;             /* (1) the forward's loss, read by the optimizer */
    int32_t *ints;                /* tokens (N), targets (N), embedding groups */
    /* work */
    float *logits;                /* (N, V) */
    float *att_f;                 /* (N, C)  the attention's fp32 output */
    float *dx;                    /* (N, C)  residual-stream gradient */
    mpl_bf16 *dxb;                /* (N, C)  its bf16 copy, input of products */
    float *dxn;                   /* (N, C)  gradient of a norm's output */
    mpl_bf16 *dh;                 /* (N, H4) MLP hidden gradient */
    float *datt;                  /* (N, C) */
    float *dqkv;                  /* (N, 3C) */
    mpl_bf16 *dqkv_b;             /* (N, 3C) */
    float *colsum_part;           /* partials of the gain gradients */
    double *sum_part;             /* partials of the loss sum (MPL_CUDA_SUM_BLOCKS) */

    /* host side: token groups for the embedding's backward, the packed
     * ints uploaded once per forward */
    int32_t *h_ints, *h_work;
    int64_t cap_ints;             /* int32 of h_ints / ints */
    int64_t n_ids;
    mpl_attn_geom geom;
    int have_forward;
} mpl_model_cuda;

/* Local (model_cuda.c). Point the buffers at the slabs for geometry g,
 * growing the slabs when g needs more than they hold. */
mpl_status mpl_model_cuda_bind(mpl_model *m, const mpl_attn_geom *g);

/* Local (model_cuda_pass.c). The backend's passes. */
mpl_status mpl_model_cuda_forward(mpl_model *m, const mpl_attn_geom *g, const int32_t *tokens,
                                  const int32_t *targets, double *loss_sum, int64_t *n_counted);
mpl_status mpl_model_cuda_backward(mpl_model *m, double loss_scale);

#endif
