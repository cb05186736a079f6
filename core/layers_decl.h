/* Declarations of one precision of the layers; included by layers.h with
 * MPL_REAL/MPL_SUF set. No include guard on purpose. */

/* out(n_tok, C) = wte[tok[t], :]. Tokens are validated by the caller. */
void MPL_SUF(mpl_embed_forward)(MPL_REAL *out, const int32_t *tok,
                                const MPL_REAL *wte, int64_t n_tok, int64_t C);
/* dwte[tok[t], :] += dout[t, :] */
void MPL_SUF(mpl_embed_backward)(MPL_REAL *dwte, const MPL_REAL *dout,
                                 const int32_t *tok, int64_t n_tok, int64_t C);

/* Learned absolute positions over rows (n_seq, n_tok) whose token t sits
 * at position pos0 + t of its sequence: out[s, t, :] += wpe[pos0 + t, :].
 * Positions are validated by the caller. */
void MPL_SUF(mpl_posemb_forward)(MPL_REAL *out, const MPL_REAL *wpe, int64_t n_seq,
                                 int64_t n_tok, int64_t pos0, int64_t C);
/* dwpe[pos0 + t, :] += sum over s of dout[s, t, :] */
void MPL_SUF(mpl_posemb_backward)(MPL_REAL *dwpe, const MPL_REAL *dout, int64_t n_seq,
                                  int64_t n_tok, int64_t pos0, int64_t C);

/* RMSNorm: out = x * rstd * g, rstd(n_tok) = 1/sqrt(mean(x^2) + eps), saved. */
void MPL_SUF(mpl_rmsnorm_forward)(MPL_REAL *out, MPL_REAL *rstd, const MPL_REAL *x,
                                  const MPL_REAL *g, int64_t n_tok, int64_t C, double eps);
void MPL_SUF(mpl_rmsnorm_backward)(MPL_REAL *dx, MPL_REAL *dg, const MPL_REAL *dout,
                                   const MPL_REAL *x, const MPL_REAL *g,
                                   const MPL_REAL *rstd, int64_t n_tok, int64_t C);

/* Linear without bias: out(n_tok, OC) = x(n_tok, IC) W(OC, IC)^T, via BLAS. */
void MPL_SUF(mpl_linear_forward)(MPL_REAL *out, const MPL_REAL *x, const MPL_REAL *w,
                                 int64_t n_tok, int64_t IC, int64_t OC);
/* dx += dout W ; dw += dout^T x. Either of dx, dw may be NULL (skipped). */
void MPL_SUF(mpl_linear_backward)(MPL_REAL *dx, MPL_REAL *dw, const MPL_REAL *dout,
                                  const MPL_REAL *x, const MPL_REAL *w,
                                  int64_t n_tok, int64_t IC, int64_t OC);

/* GELU, tanh approximation (as GPT-2): out = gelu(x) over n_elems. */
void MPL_SUF(mpl_gelu_forward)(MPL_REAL *out, const MPL_REAL *x, int64_t n_elems);
void MPL_SUF(mpl_gelu_backward)(MPL_REAL *dx, const MPL_REAL *dout, const MPL_REAL *x,
                                int64_t n_elems);

/* RoPE in place on x laid out (n_seq, T, row_stride) with n_head heads of
 * head_dim d at column offset col0 + h*d: token t of every sequence has
 * global position pos0 + t. Half-split convention: for c < d/2 the pair
 * (x_c, x_{c+d/2}) turns by pos * theta^(-2c/d). direction = +1 rotates,
 * -1 rotates back (the backward of a rotation is the inverse rotation). */
void MPL_SUF(mpl_rope_apply)(MPL_REAL *x, int64_t n_seq, int64_t T, int64_t row_stride,
                             int64_t col0, int n_head, int d, int64_t pos0,
                             double theta, int direction);

/* Softmax cross-entropy over logits(n_tok, V): loss[t] = -log p[t, target[t]].
 * Targets < 0 are ignored (loss 0). */
void MPL_SUF(mpl_xent_forward)(MPL_REAL *loss, const MPL_REAL *logits,
                               const int32_t *target, int64_t n_tok, int64_t V);
/* dlogits += scale * (softmax(logits) - onehot(target)); rows with target < 0
 * get nothing. scale is usually 1 / (global number of counted tokens). */
void MPL_SUF(mpl_xent_backward)(MPL_REAL *dlogits, const MPL_REAL *logits,
                                const int32_t *target, int64_t n_tok, int64_t V,
                                double scale);
