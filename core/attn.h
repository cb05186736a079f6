/* The attention interface the model calls (a table of function pointers
 * with a context, ggml-backend style). core/ defines it; attention/
 * implements it (dense, FMM, Combiner) and launch/ plugs an implementation
 * into the model, so core/ depends on no mechanism and no communicator. */
#ifndef MPL_ATTN_H
#define MPL_ATTN_H

#include <stdint.h>

#include "device.h"
#include "slab.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

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
    /* Ranks the sequence is split over, for the size functions of an
     * instance created without a communicator (memory plans); such an
     * instance cannot run split. 0 or 1: one rank. */
    int plan_sp;
    /* Where forward and backward run: MPL_DEVICE_CUDA makes the registry
     * create the GPU implementation, whose pointers (qkv, out, saved,
     * params, dparams...) are device memory of cuda (borrowed; must
     * outlive the instance). */
    mpl_device device;
    struct mpl_cuda *cuda;
} mpl_attn_cfg;

/* Geometry of one call: n_seq sequences, of each this rank holds the
 * contiguous chunk of global positions [pos0, pos0 + n_tok). */
typedef struct mpl_attn_geom {
    int64_t n_seq;
    int64_t n_tok;
    int64_t pos0;
    const uint8_t *mask;   /* (n_seq, n_tok) 1 = real token, 0 = padding; NULL: none */
} mpl_attn_geom;

struct mpl_attn_piece_ops;

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

    /* Piecewise evaluation; NULL: not offered, and the model evaluates the
     * attention over the whole chunk through forward/backward. */
    const struct mpl_attn_piece_ops *pieces;

    /* Where the pointers of forward/backward live (MPL_DEVICE_CPU when
     * left zero); a model only runs an instance of its own device. */
    mpl_device device;
    /* Local. Bytes of its own memory (on its device) the whole-chunk
     * forward and backward of geometry g use at most, for memory plans.
     * NULL: none to speak of. */
    int64_t (*work_bytes)(void *impl, const mpl_attn_geom *g);
} mpl_attn_ops;

/* Piecewise evaluation. The model may walk the rank's chunk of every
 * sequence in pieces, so that per-token workspace does not grow with the
 * chunk (recompute = layer keeps only each layer's input). A piece is a
 * contiguous block of the (n_seq, n_tok) activations of at most
 * piece_tokens tokens: whole sequences [s0, s0 + n_seq) when the chunk is
 * that short (then n_tok is the chunk's), otherwise rows
 * [r0, r0 + n_tok) of the single sequence s0, r0 a multiple of
 * piece_tokens. mpl_attn_piece_at enumerates them; the forward walks them
 * in that order, the backward in reverse. */
typedef struct mpl_attn_piece {
    int64_t s0, n_seq;     /* sequences */
    int64_t r0, n_tok;     /* rows of the chunk (chunk-local) */
} mpl_attn_piece;

/* What the model offers the attention about rows outside the current
 * piece: their q, k, v (recomputed from the layer input, or its saved
 * copy) and a way to push late gradients of q, k, v back through the
 * projection into the layer input. */
typedef struct mpl_attn_rows {
    void *user;
    /* Local. *qkv = (p->n_seq, p->n_tok, 3*H*d) of piece p of the current
     * layer; valid until the next call. */
    mpl_status (*qkv)(void *user, const mpl_attn_piece *p, const float **qkv);
    /* Local. Backpropagate dqkv (p->n_seq, p->n_tok, 3*H*d), further
     * gradient of piece p's q, k, v, into the layer input and parameters. */
    mpl_status (*add_dqkv)(void *user, const mpl_attn_piece *p, const float *dqkv);
} mpl_attn_rows;

/* The arguments every piecewise call shares for one layer of one pass. */
typedef struct mpl_attn_pieces {
    int layer;
    const mpl_attn_geom *g;     /* the whole chunk (mask included) */
    int64_t piece_tokens;
    float *state;               /* state_elems floats, owned by the model,
                                 * kept from forward to backward */
    const mpl_attn_rows *rows;
} mpl_attn_pieces;

typedef struct mpl_attn_piece_ops {
    /* Local. Floats of the per-layer state for chunk g in pieces of
     * piece_tokens tokens. */
    int64_t (*state_elems)(void *impl, const mpl_attn_geom *g, int64_t piece_tokens);
    /* Local. Floats a piece's forward saves for its backward. */
    int64_t (*saved_elems)(void *impl, const mpl_attn_geom *piece_g);
    /* Local. Bytes the attention allocates by itself during one call, at
     * most (for memory plans). */
    int64_t (*work_bytes)(void *impl, const mpl_attn_geom *g, int64_t piece_tokens);
    /* Local. 1 when backward_end hands gradients back through
     * rows->add_dqkv (the model must then be able to give every piece's
     * layer input until it returns, kept or recomputed). */
    int (*deferred)(void *impl);
    /* Collective on the SP group: before the first piece of a layer's
     * forward; may read every piece through pc->rows->qkv. */
    mpl_status (*forward_begin)(void *impl, const mpl_attn_pieces *pc, const float *params);
    /* Local. qkv (n_seq, n_tok, 3Hd) of piece p -> out (n_seq, n_tok, Hd)
     * and saved. replay = 1: a recomputation in backward (the state is
     * final; the results equal the first forward bit for bit). */
    mpl_status (*forward)(void *impl, const mpl_attn_pieces *pc, const mpl_attn_piece *p,
                          int replay, const float *params, const float *qkv, float *out,
                          float *saved);
    /* Local. Before the first (= last in order) piece of the backward. */
    mpl_status (*backward_begin)(void *impl, const mpl_attn_pieces *pc);
    /* Local. Accumulates into dqkv (the piece's rows) and dparams: what
     * the pieces processed so far owe these rows, except what
     * backward_end delivers. */
    mpl_status (*backward)(void *impl, const mpl_attn_pieces *pc, const mpl_attn_piece *p,
                           const float *params, const float *qkv, const float *saved,
                           const float *dout, float *dqkv, float *dparams);
    /* Collective on the SP group: after the last piece; hands the
     * remaining gradients to pc->rows->add_dqkv (only when deferred). */
    mpl_status (*backward_end)(void *impl, const mpl_attn_pieces *pc, const float *params);
} mpl_attn_piece_ops;

/* An attention instance: ops + its context. */
typedef struct mpl_attn {
    const mpl_attn_ops *ops;
    void *impl;
} mpl_attn;

/* Local. Number of pieces of chunk g (see mpl_attn_piece), and piece i. */
int64_t mpl_attn_pieces_count(const mpl_attn_geom *g, int64_t piece_tokens);
mpl_attn_piece mpl_attn_piece_at(const mpl_attn_geom *g, int64_t piece_tokens, int64_t i);
/* Local. Tokens of the largest piece of chunk g. */
int64_t mpl_attn_piece_max_tokens(const mpl_attn_geom *g, int64_t piece_tokens);
/* Local. Index of piece p among the pieces of its sequence (0 for whole
 * sequences). */
int64_t mpl_attn_piece_index(const mpl_attn_geom *g, int64_t piece_tokens,
                             const mpl_attn_piece *p);

/* Local. Names used in configs: "dense", "fmm", "combiner_fixed",
 * "combiner_logsparse". */
const char *mpl_attn_kind_name(mpl_attn_kind k);
/* Local. Parse a name; MPL_ERR_ARG naming the value when unknown. */
mpl_status mpl_attn_kind_parse(const char *s, mpl_attn_kind *out);
/* Local. Parse "elu,elu_flip" into cfg->fmm_maps / fmm_n_maps. */
mpl_status mpl_attn_fmm_maps_parse(const char *s, mpl_attn_cfg *cfg);
/* Local. "elu", "elu_flip", "tanh". */
const char *mpl_attn_fmm_map_name(mpl_fmm_map m);

#ifdef __cplusplus
}
#endif

#endif
