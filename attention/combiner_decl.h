/* Declarations of one precision of Combiner attention; included by
 * combiner.h with MPL_REAL/MPL_SUF set. No include guard on purpose. */

/* The explicit context of a Combiner-Fixed chunk (combiner.h, top). Every
 * pointer is borrowed for the call; NULL is allowed where the count is 0
 * (halo) or where the phase does not use it. n_lo, n_hi: from
 * mpl_attn_combiner_fixed_halo. */
typedef struct MPL_SUF(mpl_attn_combiner_ctx) {
    const MPL_REAL *qkv_lo;  /* (n_seq, n_lo, 3*H*d) rows [pos0 - n_lo, pos0) */
    const uint8_t *mask_lo;  /* (n_seq, n_lo) or NULL: all real */
    MPL_REAL *dqkv_lo;       /* (n_seq, n_lo, 3*H*d), accumulated (+=) */
    const MPL_REAL *qkv_hi;  /* (n_seq, n_hi, 3*H*d) rows [pos0 + n_tok, ...) */
    const uint8_t *mask_hi;  /* (n_seq, n_hi) or NULL */
    MPL_REAL *dqkv_hi;       /* (n_seq, n_hi, 3*H*d), accumulated (+=) */
    MPL_REAL *khat;          /* (n_seq, n_seg, H*d) summaries by global index */
    MPL_REAL *vhat;          /* (n_seq, n_seg, H*d) */
    uint8_t *present;        /* (n_seq, n_seg): 0 = segment has no real token */
    MPL_REAL *dkhat;         /* (n_seq, n_seg, H*d), accumulated (+=) */
    MPL_REAL *dvhat;         /* (n_seq, n_seg, H*d), accumulated (+=) */
} MPL_SUF(mpl_attn_combiner_ctx);

/* Local. Phase (i): summaries of the owned segments [m0, m1) into
 * c->khat, c->vhat, c->present (needs the lo halo). */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c);
/* Local. Phase (iii): out (n_seq, n_tok, H*d) overwritten, saved
 * (mpl_attn_combiner_saved_elems) written, from the gathered summaries and
 * both halos. */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_forward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c, MPL_REAL *out, MPL_REAL *saved);
/* Local. Gradient of chunk_forward: dqkv (n_seq, n_tok, 3*H*d),
 * c->dqkv_lo, c->dqkv_hi, c->dkhat, c->dvhat all ACCUMULATE. */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_backward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c, const MPL_REAL *saved, const MPL_REAL *dout,
    MPL_REAL *dqkv);
/* Local. Gradient of chunk_summarize: reads c->dkhat, c->dvhat of the owned
 * segments (already summed over all users) and ACCUMULATES into dqkv and
 * c->dqkv_lo. */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_backward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c, MPL_REAL *dqkv);

/* Local. One rank, whole sequences (pos0 = 0, n_tok = seq_len): the four
 * phases above with empty halos. out overwritten; saved written; dqkv
 * ACCUMULATES. The backward recomputes the summaries (O(L d)). */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_forward)(const mpl_attn_combiner_args *a,
                                                    const MPL_REAL *qkv, MPL_REAL *out,
                                                    MPL_REAL *saved);
mpl_status MPL_SUF(mpl_attn_combiner_fixed_backward)(const mpl_attn_combiner_args *a,
                                                     const MPL_REAL *qkv,
                                                     const MPL_REAL *saved,
                                                     const MPL_REAL *dout, MPL_REAL *dqkv);

/* Local. Combiner-Logsparse, one rank, whole sequences (pos0 = 0,
 * n_tok = seq_len). Same conventions as the Fixed pair. */
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_forward)(const mpl_attn_combiner_args *a,
                                                        const MPL_REAL *qkv, MPL_REAL *out,
                                                        MPL_REAL *saved);
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_backward)(const mpl_attn_combiner_args *a,
                                                         const MPL_REAL *qkv,
                                                         const MPL_REAL *saved,
                                                         const MPL_REAL *dout,
                                                         MPL_REAL *dqkv);

/* Causal streaming state (kind 0 = Fixed, 1 = Logsparse). */
typedef struct MPL_SUF(mpl_attn_combiner_stream) MPL_SUF(mpl_attn_combiner_stream);
/* Local. State for a->n_seq sequences of up to a->seq_len tokens starting
 * at position 0 (n_tok, pos0 and mask of a are ignored). Bidirectional:
 * MPL_ERR_UNSUPPORTED. */
mpl_status MPL_SUF(mpl_attn_combiner_stream_create)(const mpl_attn_combiner_args *a,
                                                    int logsparse,
                                                    MPL_SUF(mpl_attn_combiner_stream) **out);
/* Local. One token per sequence at position pos (must be the next one and
 * < seq_len): qkv_row (n_seq, 3*H*d) -> out_row (n_seq, H*d). */
mpl_status MPL_SUF(mpl_attn_combiner_stream_step)(MPL_SUF(mpl_attn_combiner_stream) *st,
                                                  int64_t pos, const MPL_REAL *qkv_row,
                                                  MPL_REAL *out_row);
/* Local. Frees and sets *st = NULL; NULL is a no-op. */
void MPL_SUF(mpl_attn_combiner_stream_destroy)(MPL_SUF(mpl_attn_combiner_stream) **st);
