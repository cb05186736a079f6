/* The enumeration of pieces (core/attn.h, "Piecewise evaluation"), shared
 * by the model that walks them and the attention that reads them ahead
 * (pass A) or again (deferred gradients), so both agree on every piece. */
#include "attn.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Whole sequences per piece, or 0 when a sequence is cut into rows. */
static int64_t seqs_per_piece(const mpl_attn_geom *g, int64_t piece_tokens)
{
    return g->n_tok <= piece_tokens ? max64(1, piece_tokens / max64(1, g->n_tok)) : 0;
}

int64_t mpl_attn_pieces_count(const mpl_attn_geom *g, int64_t piece_tokens)
{
    const int64_t k = seqs_per_piece(g, piece_tokens);
    if (k) return (g->n_seq + k - 1) / k;
    return g->n_seq * ((g->n_tok + piece_tokens - 1) / piece_tokens);
}

mpl_attn_piece mpl_attn_piece_at(const mpl_attn_geom *g, int64_t piece_tokens, int64_t i)
{
    const int64_t k = seqs_per_piece(g, piece_tokens);
    if (k) return (mpl_attn_piece){i * k, min64(k, g->n_seq - i * k), 0, g->n_tok};
    const int64_t C = (g->n_tok + piece_tokens - 1) / piece_tokens, r0 = (i % C) * piece_tokens;
    return (mpl_attn_piece){i / C, 1, r0, min64(piece_tokens, g->n_tok - r0)};
}

int64_t mpl_attn_piece_max_tokens(const mpl_attn_geom *g, int64_t piece_tokens)
{
    const mpl_attn_piece p = mpl_attn_piece_at(g, piece_tokens, 0); /* none is longer */
    return p.n_seq * p.n_tok;
}

int64_t mpl_attn_piece_index(const mpl_attn_geom *g, int64_t piece_tokens,
                             const mpl_attn_piece *p)
{
    return seqs_per_piece(g, piece_tokens) ? 0 : p->r0 / piece_tokens;
}
