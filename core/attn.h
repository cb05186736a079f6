/* The attention interface the model calls (a table of function pointers
 * with a context, ggml-backend style). core/ defines it; attention/
 * implements it (dense, FMM, Combiner) and launch/ plugs an implementation
 * into the model, so core/ depends on no mechanism and no communicator. */
#ifndef MPL_ATTN_H
#define MPL_ATTN_H

#include <stdint.h>

#include "slab.h"
#include "status.h"

typedef enum mpl_attn_kind {
    MPL_ATTN_KIND_DENSE = 0,
    MPL_ATTN_KIND_FMM,
    MPL_ATTN_KIND_COMBINER_FIXED,
    MPL_ATTN_KIND_COMBINER_LOGSPARSE,
    MPL_ATTN_KIND_COUNT
} mpl_attn_kind;

/* FMM far-field feature maps (ATTENTION.md): phi(x) = elu(x)+1,
 * elu(-x)+1, tanh(x)+1. */
typedef enum mpl_fmm_map {
    MPL_FMM_MAP_ELU = 0,
    MPL_FMM_MAP_ELU_FLIP,
    MPL_FMM_MAP_TANH,
    MPL_FMM_MAP_COUNT
} mpl_fmm_map;
#define MPL_FMM_MAX_MAPS 4

/* Scale of each far-field term. */
typedef enum mpl_fmm_far_scale {
    MPL_FMM_FAR_SCALE_INV_SQRT_D = 0,
    MPL_FMM_FAR_SCALE_INV_SQRT_N, /* n = the global padded length seq_len */
    MPL_FMM_FAR_SCALE_ONE
} mpl_fmm_far_scale;

/* How near and far fields are blended. */
typedef enum mpl_fmm_blend {
    /* o = a*near + b*(1/r) sum_m far_m; a, b (H, d) per head per channel */
    MPL_FMM_BLEND_CHANNEL = 0,
    /* the official LRA code: o = a*near + b*sum_m alpha_m far_m; a, b (H)
     * per head, alpha (r) learnable scalars initialised (1, 0, 0, ...) */
    MPL_FMM_BLEND_LRA
} mpl_fmm_blend;

/* Everything that defines the mechanism (copied by implementations). */
typedef struct mpl_attn_cfg {
    mpl_attn_kind kind;
    int causal;            /* 1: token i sees j <= i */
    int n_head;
    int head_dim;          /* d; scale 1/sqrt(d) */
    int64_t seq_len;       /* global L (scales that depend on length use it) */
    double rope_theta;     /* > 0: RoPE on the near-field/direct part */
    int64_t band;          /* FMM near-field width w */
    int64_t segment;       /* Combiner-Fixed segment size s (>= 1, resolved) */
    /* FMM far field and blend (ATTENTION.md, "FMM") */
    int fmm_n_maps;                          /* r >= 1 */
    mpl_fmm_map fmm_maps[MPL_FMM_MAX_MAPS];
    int fmm_feature_norm;                    /* 1: sum-normalise features */
    int fmm_far_norm;                        /* 1: ratio (divide by q.z + eps) */
    mpl_fmm_far_scale fmm_far_scale;
    double fmm_eps;
    mpl_fmm_blend fmm_blend;
    double fmm_blend_near_init;              /* a at init */
    double fmm_blend_far_init;               /* b at init */
    int fmm_learn_far_weight;                /* 0: b is frozen (no gradient) */
} mpl_attn_cfg;

/* Geometry of one call: n_seq sequences, of each this rank holds the
 * contiguous chunk of global positions [pos0, pos0 + n_tok). */
typedef struct mpl_attn_geom {
    int64_t n_seq;
    int64_t n_tok;
    int64_t pos0;
    const uint8_t *mask;   /* (n_seq, n_tok) 1 = real token, 0 = padding; NULL: none */
} mpl_attn_geom;

/* Activations layout shared by forward and backward:
 *   qkv  (n_seq, n_tok, 3*H*d): q in columns [0, Hd), k in [Hd, 2Hd),
 *        v in [2Hd, 3Hd); head h at column offset h*d inside each;
 *   out  (n_seq, n_tok, H*d).
 * Mechanism parameters (e.g. FMM blend weights) live in the model's
 * parameter slab: declare_params adds them for layer `layer` under `prefix`
 * and the implementation remembers their offsets; forward/backward receive
 * the slab base (params, dparams) and the layer index. */
typedef struct mpl_attn_ops {
    const char *name;
    /* Local. Add this layer's parameters to lay. NULL: the mechanism has none. */
    mpl_status (*declare_params)(void *impl, int layer, const char *prefix,
                                 mpl_slab_layout *lay);
    /* Local. Deterministic initial values of this layer's parameters. */
    void (*init_params)(void *impl, int layer, float *params, uint64_t seed);
    /* Local. Floats the forward saves for the backward. */
    int64_t (*saved_elems)(void *impl, const mpl_attn_geom *g);
    /* Collective on the implementation's sequence-parallel group, if any. */
    mpl_status (*forward)(void *impl, int layer, const mpl_attn_geom *g,
                          const float *params, const float *qkv, float *out,
                          float *saved);
    /* Collective like forward. Accumulates into dqkv and dparams. */
    mpl_status (*backward)(void *impl, int layer, const mpl_attn_geom *g,
                           const float *params, const float *qkv,
                           const float *saved, const float *dout, float *dqkv,
                           float *dparams);
    /* Local. Frees impl and sets *impl = NULL. */
    void (*destroy)(void **impl);

    /* Streaming generation (all three NULL: the mechanism has none and the
     * caller recomputes over the window). A stream holds, per layer, what
     * the next token needs (dense: the K/V cache; FMM: the last w-1 rows
     * and the running S, z; Combiner: finished summaries + the current
     * segment), so a token costs work independent of its position. */
    /* Local. State for n_seq sequences starting at position 0. */
    mpl_status (*stream_create)(void *impl, int layer, int64_t n_seq, void **state);
    /* Local. One token per sequence at global position pos: qkv_row
     * (n_seq, 3*H*d) -> out_row (n_seq, H*d); advances the state. */
    mpl_status (*stream_step)(void *impl, int layer, void *state, const float *params,
                              int64_t pos, const float *qkv_row, float *out_row);
    /* Local. Frees the state and sets *state = NULL. */
    void (*stream_destroy)(void **state);
} mpl_attn_ops;

/* An attention instance: ops + its context. */
typedef struct mpl_attn {
    const mpl_attn_ops *ops;
    void *impl;
} mpl_attn;

/* Local. Names used in configs: "dense", "fmm", "combiner_fixed",
 * "combiner_logsparse". */
const char *mpl_attn_kind_name(mpl_attn_kind k);
/* Local. Parse a name; MPL_ERR_ARG naming the value when unknown. */
mpl_status mpl_attn_kind_parse(const char *s, mpl_attn_kind *out);
/* Local. Parse "elu,elu_flip" into cfg->fmm_maps / fmm_n_maps. */
mpl_status mpl_attn_fmm_maps_parse(const char *s, mpl_attn_cfg *cfg);
/* Local. "elu", "elu_flip", "tanh". */
const char *mpl_attn_fmm_map_name(mpl_fmm_map m);

#endif
