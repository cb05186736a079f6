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

/* Local. Bytes the chunk phases above allocate for themselves at most
 * (the backward's extended block and its gradient exceed the others), for
 * memory plans; 0 for invalid args. */
int64_t MPL_SUF(mpl_attn_combiner_fixed_chunk_work_bytes)(const mpl_attn_combiner_args *a);
/* Local. Likewise for the one-rank pair below: the chunk phases plus the
 * summaries and their gradients. */
int64_t MPL_SUF(mpl_attn_combiner_fixed_work_bytes)(const mpl_attn_combiner_args *a);

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

/* Local. Combiner-Fixed forward in two halves, so that the summaries can
 * travel while the direct slots are computed: forward_direct writes out
 * and saved as a softmax over the direct slots only (needs the halos, not
 * khat, vhat, present); forward_summaries then merges the summary slots
 * into both (log-sum-exp), giving chunk_forward's result up to rounding.
 * chunk_forward is the two in a row. */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_forward_direct)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c, MPL_REAL *out, MPL_REAL *saved);
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_forward_summaries)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c, MPL_REAL *out, MPL_REAL *saved);
/* Local. chunk_summarize restricted: halo = 0 summarises the owned
 * segments that lie inside the chunk (reads neither halo, so it may run
 * while the halo travels), halo = 1 only the owned segment that straddles
 * pos0 (if any). */
mpl_status MPL_SUF(mpl_attn_combiner_fixed_chunk_summarize_part)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_ctx) *c, int halo);

/* The explicit context of a Combiner-Logsparse chunk (combiner.h, top):
 * the plan's slots and the chunk's row of its use table, the per-slot
 * statistics of the rounds (shapes: mpl_attn_combiner_logsparse_widths),
 * and the summary table of the chunk. Borrowed for every call; a buffer
 * a phase does not use may be NULL. */
typedef struct MPL_SUF(mpl_attn_combiner_logsparse_ctx) {
    int64_t n_slot;
    const int64_t *span;   /* (n_slot, 2) global [t0, t1) */
    const int64_t *use;    /* (2, Lambda) slot read at (dir, level), -1: none */
    MPL_REAL *fmax, *flog, *fsum; /* forward rounds, (n_seq, n_slot, width) */
    MPL_REAL *bsum, *ba, *bdq;    /* backward rounds */
    MPL_REAL *tab;         /* (n_seq, H, n_tab, 2d): k-hat | v-hat of every block */
    uint8_t *tab_present;  /* (n_seq, H, n_tab) */
    MPL_REAL *dtab;        /* (n_seq, H, n_tab, 2d): their gradients */
} MPL_SUF(mpl_attn_combiner_logsparse_ctx);

/* Local. The local blocks' summaries into c->tab, c->tab_present. */
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_summarize)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c);
/* Local. One round of the pieces of the slots that meet the chunk: MAXIMA,
 * LOGIT, SUMS, A, DQ overwrite their statistic (neutral values for slots
 * the chunk holds no row of: -inf for a max, 0 for a sum), TIES overwrites
 * the tie part of bsum; DQ and POOL ACCUMULATE row gradients into dqkv
 * (NULL otherwise). Each reads the combined statistics of earlier rounds. */
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_pieces)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, mpl_attn_ls_phase phase,
    MPL_REAL *dqkv);
/* Local. out (n_seq, n_tok, H*d) overwritten, saved (log-sum-exp)
 * written, from the local table (chunk_summarize) and the combined fmax,
 * fsum (copied into the table's context entries). */
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_forward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, MPL_REAL *out, MPL_REAL *saved);
/* Local. Gradient of the queries: ACCUMULATES dqkv (the rows' own slots)
 * and the users' d(k-hat, v-hat) into bsum; overwrites c->dtab. Needs the
 * table as chunk_forward left it (chunk_summarize, then the context entries
 * are refilled from fmax, fsum here). */
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_backward)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, const MPL_REAL *saved,
    const MPL_REAL *dout, MPL_REAL *dqkv);
/* Local. Gradient of the local summaries (from c->dtab): ACCUMULATES dqkv. */
mpl_status MPL_SUF(mpl_attn_combiner_logsparse_chunk_backward_local)(
    const mpl_attn_combiner_args *a, const MPL_REAL *qkv,
    const MPL_SUF(mpl_attn_combiner_logsparse_ctx) *c, MPL_REAL *dqkv);

/* Local. Bytes the chunk phases above allocate for themselves at most
 * (the summary table, its gradient, a pass's scratch), for memory plans;
 * also what the one-rank pair below allocates. 0 for invalid args. */
int64_t MPL_SUF(mpl_attn_combiner_logsparse_work_bytes)(const mpl_attn_combiner_args *a);

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
