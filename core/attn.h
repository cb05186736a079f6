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

/* Everything that defines the mechanism (copied by implementations). */
typedef struct mpl_attn_cfg {
    mpl_attn_kind kind;
    int causal;            /* 1: token i sees j <= i */
    int n_head;
    int head_dim;          /* d; scale 1/sqrt(d) */
    int64_t seq_len;       /* global L (scales that depend on length use it) */
    double rope_theta;     /* > 0: RoPE on the near-field/direct part */
    int64_t band;          /* FMM near-field width w */
    int64_t segment;       /* Combiner-Fixed segment size s */
} mpl_attn_cfg;

/* Geometry of one call: n_seq sequences, of each this rank holds the
 * contiguous chunk of global positions [pos0, pos0 + n_tok). */
typedef struct mpl_attn_geom {
    int64_t n_seq;
    int64_t n_tok;
    int64_t pos0;
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

#endif
