// Combiner-Fixed on the GPU (kernels.h), one rank: segment summaries
// (max-pooled q, k; v averaged by an inner softmax), then one softmax per
// query over its direct slots (its segment, causal: up to itself; RoPE'd
// q, k) and the summary slots (earlier segments, or every other segment
// when bidirectional; unrotated q). ATTENTION.md, "Combiner". One block
// per segment for the summaries, one warp per query / key / summary row
// for the attention, lanes over channels as in band.cu.
#include <math.h>

#include "rows.cuh"

#define SUM_THREADS 128

typedef struct geo {
    int64_t HD, W, n_seg;
    float scale;
} geo;

static __host__ __device__ geo geo_of(const mpl_cuda_attn_dims &a)
{
    geo g;
    g.HD = (int64_t)a.H * a.d;
    g.W = 3 * g.HD;
    g.n_seg = (a.T + a.seg - 1) / a.seg;
    g.scale = (float)(1.0 / sqrt((double)a.d));
    return g;
}

// ---- summaries ------------------------------------------------------------

// Block (s, h, m): qh, kh = max over the segment's rows, the inner softmax
// of qh . k_t, vh = its average of v. w: the logits, then the weights a_t.
static __device__ void span_softmax(const mpl_cuda_attn_dims &a, const geo &g, const float *qkv,
                                    int64_t s, int64_t h, int64_t t0, int64_t t1, float *qh,
                                    float *kh, float *w, float *sh)
{
    for (int c = threadIdx.x; c < a.d; c += blockDim.x) {
        float qm = -INFINITY, km = -INFINITY;
        for (int64_t t = t0; t < t1; t++) {
            const float *row = qkv + (s * a.T + t) * g.W + h * a.d;
            qm = fmaxf(qm, row[c]);
            km = fmaxf(km, row[g.HD + c]);
        }
        qh[c] = qm;
        kh[c] = km;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
        const float *k = qkv + (s * a.T + t) * g.W + g.HD + h * a.d;
        float acc = 0;
        for (int c = 0; c < a.d; c++) acc += qh[c] * k[c];
        w[t] = g.scale * acc;
        mx = fmaxf(mx, w[t]);
    }
    mx = mpl_block_max(mx, sh);
    float sum = 0;
    for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) sum += expf(w[t] - mx);
    sum = mpl_block_sum(sum, sh);
    const float inv = 1.0f / sum;
    for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) w[t] = expf(w[t] - mx) * inv;
    __syncthreads();
}

static __global__ void summarize_k(mpl_cuda_attn_dims a, const float *qkv, float *khat,
                                   float *vhat, float *qhat, float *w)
{
    __shared__ float qh[MPL_CUDA_ATTN_MAX_D], kh[MPL_CUDA_ATTN_MAX_D], sh[32];
    const geo g = geo_of(a);
    const int64_t m = blockIdx.x % g.n_seg, sh_i = blockIdx.x / g.n_seg;
    const int64_t s = sh_i / a.H, h = sh_i % a.H;
    const int64_t t0 = m * a.seg, t1 = t0 + a.seg < a.T ? t0 + a.seg : a.T;
    float *ws = w + sh_i * a.T;
    span_softmax(a, g, qkv, s, h, t0, t1, qh, kh, ws, sh);
    const int64_t o = (s * g.n_seg + m) * g.HD + h * a.d;
    for (int c = threadIdx.x; c < a.d; c += blockDim.x) {
        float acc = 0;
        for (int64_t t = t0; t < t1; t++) acc += ws[t] * qkv[(s * a.T + t) * g.W + 2 * g.HD + h * a.d + c];
        vhat[o + c] = acc;
        khat[o + c] = kh[c];
        qhat[o + c] = qh[c];
    }
}

// Backward of block (s, h, m) from dkhat, dvhat into the segment's rows.
static __global__ void summarize_bwd_k(mpl_cuda_attn_dims a, const float *qkv,
                                       const float *dkhat, const float *dvhat, float *w,
                                       float *dqkv)
{
    __shared__ float qh[MPL_CUDA_ATTN_MAX_D], kh[MPL_CUDA_ATTN_MAX_D], sh[32];
    const geo g = geo_of(a);
    const int64_t m = blockIdx.x % g.n_seg, sh_i = blockIdx.x / g.n_seg;
    const int64_t s = sh_i / a.H, h = sh_i % a.H;
    const int64_t t0 = m * a.seg, t1 = t0 + a.seg < a.T ? t0 + a.seg : a.T;
    float *ws = w + sh_i * a.T;
    const int64_t o = (s * g.n_seg + m) * g.HD + h * a.d;
    const float *dvh = dvhat + o, *dkh = dkhat + o;
    span_softmax(a, g, qkv, s, h, t0, t1, qh, kh, ws, sh);
    // A = sum_t a_t da_t, da_t = dvh . v_t
    float A = 0;
    for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
        const float *v = qkv + (s * a.T + t) * g.W + 2 * g.HD + h * a.d;
        float da = 0;
        for (int c = 0; c < a.d; c++) da += dvh[c] * v[c];
        A += ws[t] * da;
    }
    A = mpl_block_sum(A, sh);
    // per row: dv += a_t dvh; dz_t = a_t (da_t - A) scale; dk += dz_t qh
    for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
        const float *v = qkv + (s * a.T + t) * g.W + 2 * g.HD + h * a.d;
        float *gr = dqkv + (s * a.T + t) * g.W + h * a.d;
        float da = 0;
        for (int c = 0; c < a.d; c++) da += dvh[c] * v[c];
        const float at = ws[t], dz = at * (da - A) * g.scale;
        for (int c = 0; c < a.d; c++) {
            gr[2 * g.HD + c] += at * dvh[c];
            gr[g.HD + c] += dz * qh[c];
        }
        ws[t] = dz;
    }
    __syncthreads();
    // dqh = sum_t dz_t k_t; then the max-pools to their argmax rows, ties split
    for (int c = threadIdx.x; c < a.d; c += blockDim.x) {
        float acc = 0, cq = 0, ck = 0;
        for (int64_t t = t0; t < t1; t++) {
            const float *row = qkv + (s * a.T + t) * g.W + h * a.d;
            acc += ws[t] * row[g.HD + c];
            cq += row[c] == qh[c];
            ck += row[g.HD + c] == kh[c];
        }
        const float gq = acc / cq, gk = dkh[c] / ck; // acc = dqh[c]
        for (int64_t t = t0; t < t1; t++) {
            const float *row = qkv + (s * a.T + t) * g.W + h * a.d;
            float *gr = dqkv + (s * a.T + t) * g.W + h * a.d;
            if (row[c] == qh[c]) gr[c] += gq;
            if (row[g.HD + c] == kh[c]) gr[g.HD + c] += gk;
        }
    }
}

// ---- attention over the slots ---------------------------------------------

// The warp's query (or key) row (s H + h) T + i, its segment [gs, ge) and
// its direct slots [gs, jend); 0 when past the end.
typedef struct slot_row {
    int64_t row, i, shi, s, h, gq, gs, ge, jend;
} slot_row;

static __device__ __forceinline__ int slot_row_of(const mpl_cuda_attn_dims &a, slot_row *r)
{
    r->row = mpl_rows_index();
    if (r->row >= a.S * a.H * a.T) return 0;
    r->i = r->row % a.T, r->shi = r->row / a.T, r->s = r->shi / a.H, r->h = r->shi % a.H;
    r->gq = r->i / a.seg, r->gs = r->gq * a.seg;
    r->ge = r->gs + a.seg < a.T ? r->gs + a.seg : a.T;
    r->jend = a.causal ? r->i + 1 : r->ge;
    return 1;
}

// Slot e of query r: direct slots first (keys of the rotated k), then the
// summaries m in [0, causal ? gq : n_seg) other than gq. 0 for the own
// segment's (absent) summary.
static __device__ __forceinline__ int slot_of(const mpl_cuda_attn_dims &a, const geo &g,
                                              const slot_row &r, int64_t e, const float *k,
                                              const float *qkv, const float *khat,
                                              const float *vhat, const float **kp,
                                              const float **vp, int *direct)
{
    const int64_t n_direct = r.jend - r.gs;
    *direct = e < n_direct;
    if (*direct) {
        const int64_t j = r.gs + e;
        *kp = k + (r.s * a.T + j) * g.HD + r.h * a.d;
        *vp = qkv + (r.s * a.T + j) * g.W + 2 * g.HD + r.h * a.d;
        return 1;
    }
    const int64_t m = e - n_direct;
    if (m == r.gq) return 0;
    *kp = khat + (r.s * g.n_seg + m) * g.HD + r.h * a.d;
    *vp = vhat + (r.s * g.n_seg + m) * g.HD + r.h * a.d;
    return 1;
}

static __device__ __forceinline__ int64_t n_slots(const mpl_cuda_attn_dims &a, const geo &g,
                                                  const slot_row &r)
{
    return r.jend - r.gs + (a.causal ? r.gq : g.n_seg);
}

static __global__ void forward_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                 const float *qkv, const float *khat, const float *vhat,
                                 float *out, float *lse)
{
    const geo g = geo_of(a);
    slot_row r;
    if (!slot_row_of(a, &r)) return; // the whole warp
    const int lane = threadIdx.x % 32;
    float qr[MPL_ROWS_KMAX], qu[MPL_ROWS_KMAX], acc[MPL_ROWS_KMAX];
    mpl_row_load(q + (r.s * a.T + r.i) * g.HD + r.h * a.d, a.d, lane, qr);
    mpl_row_load(qkv + (r.s * a.T + r.i) * g.W + r.h * a.d, a.d, lane, qu);
    mpl_row_zero(acc);
    float m = -INFINITY, l = 0;
    for (int64_t e = 0; e < n_slots(a, g, r); e++) {
        const float *kp, *vp;
        int direct;
        if (!slot_of(a, g, r, e, k, qkv, khat, vhat, &kp, &vp, &direct)) continue;
        const float lg = mpl_row_dot(direct ? qr : qu, kp, a.d, lane) * g.scale;
        mpl_row_softmax_step(lg, vp, a.d, lane, &m, &l, acc);
    }
    mpl_row_store(out + (r.s * a.T + r.i) * g.HD + r.h * a.d, acc, 1.0f / l, a.d, lane, 0);
    if (lane == 0) lse[r.row] = m + logf(l);
}

static __global__ void backward_q_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                    const float *qkv, const float *khat, const float *vhat,
                                    const float *lse, const float *dout, float *dq, float *D,
                                    float *dqkv)
{
    const geo g = geo_of(a);
    slot_row r;
    if (!slot_row_of(a, &r)) return;
    const int lane = threadIdx.x % 32;
    float qr[MPL_ROWS_KMAX], qu[MPL_ROWS_KMAX], go[MPL_ROWS_KMAX];
    float ur[MPL_ROWS_KMAX], wr[MPL_ROWS_KMAX], uu[MPL_ROWS_KMAX], wu[MPL_ROWS_KMAX];
    mpl_row_load(q + (r.s * a.T + r.i) * g.HD + r.h * a.d, a.d, lane, qr);
    mpl_row_load(qkv + (r.s * a.T + r.i) * g.W + r.h * a.d, a.d, lane, qu);
    mpl_row_load(dout + (r.s * a.T + r.i) * g.HD + r.h * a.d, a.d, lane, go);
    mpl_row_zero(ur), mpl_row_zero(wr), mpl_row_zero(uu), mpl_row_zero(wu);
    float Dacc = 0;
    for (int64_t e = 0; e < n_slots(a, g, r); e++) {
        const float *kp, *vp;
        int direct;
        if (!slot_of(a, g, r, e, k, qkv, khat, vhat, &kp, &vp, &direct)) continue;
        Dacc += mpl_row_q_step(direct ? qr : qu, go, kp, vp, lse[r.row], g.scale, a.d, lane,
                               direct ? ur : uu, direct ? wr : wu);
    }
#pragma unroll
    for (int kk = 0; kk < MPL_ROWS_KMAX; kk++) ur[kk] -= Dacc * wr[kk], uu[kk] -= Dacc * wu[kk];
    mpl_row_store(dq + (r.s * a.T + r.i) * g.HD + r.h * a.d, ur, g.scale, a.d, lane, 0);
    mpl_row_store(dqkv + (r.s * a.T + r.i) * g.W + r.h * a.d, uu, g.scale, a.d, lane, 1);
    if (lane == 0) D[r.row] = Dacc;
}

// Warp per key row j: the queries of its segment that see it.
static __global__ void backward_kv_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                     const float *qkv, const float *lse, const float *dout,
                                     const float *D, float *dk, float *dqkv)
{
    const geo g = geo_of(a);
    slot_row r;
    if (!slot_row_of(a, &r)) return;
    const int lane = threadIdx.x % 32;
    const int64_t j = r.i;
    float kv[MPL_ROWS_KMAX], vv[MPL_ROWS_KMAX], gk[MPL_ROWS_KMAX], gv[MPL_ROWS_KMAX];
    mpl_row_load(k + (r.s * a.T + j) * g.HD + r.h * a.d, a.d, lane, kv);
    mpl_row_load(qkv + (r.s * a.T + j) * g.W + 2 * g.HD + r.h * a.d, a.d, lane, vv);
    mpl_row_zero(gk), mpl_row_zero(gv);
    for (int64_t i = a.causal ? j : r.gs; i < r.ge; i++)
        mpl_row_kv_step(kv, vv, q + (r.s * a.T + i) * g.HD + r.h * a.d,
                        dout + (r.s * a.T + i) * g.HD + r.h * a.d, lse[r.shi * a.T + i],
                        D[r.shi * a.T + i], g.scale, a.d, lane, gk, gv);
    mpl_row_store(dk + (r.s * a.T + j) * g.HD + r.h * a.d, gk, 1.0f, a.d, lane, 0);
    mpl_row_store(dqkv + (r.s * a.T + j) * g.W + 2 * g.HD + r.h * a.d, gv, 1.0f, a.d, lane, 1);
}

// Warp per summary (s, h, m): the queries that see it.
static __global__ void backward_summary_k(mpl_cuda_attn_dims a, const float *qkv,
                                          const float *khat, const float *vhat, const float *lse,
                                          const float *dout, const float *D, float *dkhat,
                                          float *dvhat)
{
    const geo g = geo_of(a);
    const int lane = threadIdx.x % 32;
    const int64_t row = mpl_rows_index(); // (s H + h) n_seg + m
    if (row >= a.S * a.H * g.n_seg) return;
    const int64_t m = row % g.n_seg, shi = row / g.n_seg, s = shi / a.H, h = shi % a.H;
    const int64_t o = (s * g.n_seg + m) * g.HD + h * a.d;
    const int64_t ms = m * a.seg, me = ms + a.seg < a.T ? ms + a.seg : a.T;
    float kv[MPL_ROWS_KMAX], vv[MPL_ROWS_KMAX], gk[MPL_ROWS_KMAX], gv[MPL_ROWS_KMAX];
    mpl_row_load(khat + o, a.d, lane, kv);
    mpl_row_load(vhat + o, a.d, lane, vv);
    mpl_row_zero(gk), mpl_row_zero(gv);
    for (int64_t i = a.causal ? me : 0; i < a.T; i++) {
        if (i >= ms && i < me) continue; // the own segment has no summary slot
        mpl_row_kv_step(kv, vv, qkv + (s * a.T + i) * g.W + h * a.d,
                        dout + (s * a.T + i) * g.HD + h * a.d, lse[shi * a.T + i], D[shi * a.T + i],
                        g.scale, a.d, lane, gk, gv);
    }
    mpl_row_store(dkhat + o, gk, 1.0f, a.d, lane, 0);
    mpl_row_store(dvhat + o, gv, 1.0f, a.d, lane, 0);
}

// ---- launchers -------------------------------------------------------------

static mpl_status check(const mpl_cuda_attn_dims *a)
{
    if (a->d < 1 || a->d > MPL_CUDA_ATTN_MAX_D)
        return mpl_err(MPL_ERR_ARG, "GPU combiner_fixed: head_dim=%d must be in 1..%d", a->d,
                       MPL_CUDA_ATTN_MAX_D);
    if (a->seg < 1)
        return mpl_err(MPL_ERR_ARG, "GPU combiner_fixed: segment=%lld must be >= 1",
                       (long long)a->seg);
    return MPL_OK;
}


extern "C" mpl_status mpl_cuda_cfx_summarize(const mpl_cuda_attn_dims *a, const float *qkv,
                                             float *khat, float *vhat, float *qhat, float *w,
                                             cudaStream_t s)
{
    MPL_CHECK(check(a));
    const geo g = geo_of(*a);
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(summarize_k, (unsigned)(a->S * a->H * g.n_seg), SUM_THREADS, 0, s, *a, qkv,
                    khat, vhat, qhat, w);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_cfx_forward(const mpl_cuda_attn_dims *a, const float *q,
                                           const float *k, const float *qkv, const float *khat,
                                           const float *vhat, float *out, float *lse,
                                           cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(forward_k, mpl_rows_blocks(a->S * a->H * a->T), MPL_ROWS_WARPS * 32, 0, s, *a, q, k, qkv,
                    khat, vhat, out, lse);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_cfx_backward_q(const mpl_cuda_attn_dims *a, const float *q,
                                              const float *k, const float *qkv, const float *khat,
                                              const float *vhat, const float *lse,
                                              const float *dout, float *dq, float *D, float *dqkv,
                                              cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(backward_q_k, mpl_rows_blocks(a->S * a->H * a->T), MPL_ROWS_WARPS * 32, 0, s, *a, q, k, qkv,
                    khat, vhat, lse, dout, dq, D, dqkv);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_cfx_backward_kv(const mpl_cuda_attn_dims *a, const float *q,
                                               const float *k, const float *qkv, const float *lse,
                                               const float *dout, const float *D, float *dk,
                                               float *dqkv, cudaStream_t s)
{
    MPL_CHECK(check(a));
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(backward_kv_k, mpl_rows_blocks(a->S * a->H * a->T), MPL_ROWS_WARPS * 32, 0, s, *a, q, k, qkv,
                    lse, dout, D, dk, dqkv);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_cfx_backward_summary(const mpl_cuda_attn_dims *a, const float *qkv,
                                                    const float *khat, const float *vhat,
                                                    const float *lse, const float *dout,
                                                    const float *D, float *dkhat, float *dvhat,
                                                    cudaStream_t s)
{
    MPL_CHECK(check(a));
    const geo g = geo_of(*a);
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(backward_summary_k, mpl_rows_blocks(a->S * a->H * g.n_seg), MPL_ROWS_WARPS * 32, 0, s, *a,
                    qkv, khat, vhat, lse, dout, D, dkhat, dvhat);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}

extern "C" mpl_status mpl_cuda_cfx_summarize_backward(const mpl_cuda_attn_dims *a,
                                                      const float *qkv, const float *dkhat,
                                                      const float *dvhat, float *w, float *dqkv,
                                                      cudaStream_t s)
{
    MPL_CHECK(check(a));
    const geo g = geo_of(*a);
    if (a->S * a->T == 0) return MPL_OK;
    MPL_CUDA_LAUNCH(summarize_bwd_k, (unsigned)(a->S * a->H * g.n_seg), SUM_THREADS, 0, s, *a,
                    qkv, dkhat, dvhat, w, dqkv);
    MPL_CUDA(cudaGetLastError());
    return MPL_OK;
}
