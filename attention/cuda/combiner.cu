// Combiner-Fixed on the GPU (kernels.h), one rank: segment summaries
// (max-pooled q, k; v averaged by an inner softmax), then one softmax per
// query over its direct slots (its segment, causal: up to itself; RoPE'd
// q, k) and the summary slots (earlier segments, or every other segment
// when bidirectional; unrotated q). ATTENTION.md, "Combiner". One block
// per segment for the summaries, one warp per query / key / summary row
// for the attention, lanes over channels as in band.cu.
#include <math.h>

#include "../../core/cuda/common.cuh"
#include "kernels.h"

#define WARPS 4
#define KMAX (MPL_CUDA_ATTN_MAX_D / 32)
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

static __device__ __forceinline__ void load_row(const float *p, int d, int lane, float *x)
{
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        x[kk] = c < d ? p[c] : 0.0f;
    }
}

static __device__ __forceinline__ float row_dot(const float *x, const float *p, int d, int lane)
{
    float acc = 0;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < d) acc += x[kk] * p[c];
    }
    return mpl_warp_sum(acc);
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

// Summary slots of a query in segment gq: m in [0, m_end) except gq.
static __device__ __forceinline__ int64_t summary_end(const mpl_cuda_attn_dims &a, const geo &g,
                                                      int64_t gq)
{
    return a.causal ? gq : g.n_seg;
}

static __global__ void forward_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                 const float *qkv, const float *khat, const float *vhat,
                                 float *out, float *lse)
{
    const geo g = geo_of(a);
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= a.S * a.H * a.T) return;
    const int64_t i = row % a.T, shi = row / a.T, s = shi / a.H, h = shi % a.H, d = a.d;
    const int64_t gq = i / a.seg, gs = gq * a.seg;
    const int64_t ge = gs + a.seg < a.T ? gs + a.seg : a.T, jend = a.causal ? i + 1 : ge;
    float qr[KMAX], qu[KMAX], acc[KMAX];
    load_row(q + (s * a.T + i) * g.HD + h * d, a.d, lane, qr);
    load_row(qkv + (s * a.T + i) * g.W + h * d, a.d, lane, qu);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) acc[kk] = 0;
    float m = -INFINITY, l = 0;
    const int64_t n_direct = jend - gs, n_slots = n_direct + summary_end(a, g, gq);
    for (int64_t e = 0; e < n_slots; e++) {
        const float *kp, *vp, *qq;
        if (e < n_direct) {
            const int64_t j = gs + e;
            kp = k + (s * a.T + j) * g.HD + h * d;
            vp = qkv + (s * a.T + j) * g.W + 2 * g.HD + h * d;
            qq = qr;
        } else {
            const int64_t ms = e - n_direct;
            if (ms == gq) continue;
            kp = khat + (s * g.n_seg + ms) * g.HD + h * d;
            vp = vhat + (s * g.n_seg + ms) * g.HD + h * d;
            qq = qu;
        }
        const float lg = row_dot(qq, kp, a.d, lane) * g.scale;
        const float mn = fmaxf(m, lg), corr = expf(m - mn), p = expf(lg - mn);
        l = l * corr + p;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c < a.d) acc[kk] = acc[kk] * corr + p * vp[c];
        }
        m = mn;
    }
    float *o = out + (s * a.T + i) * g.HD + h * d;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < a.d) o[c] = acc[kk] / l;
    }
    if (lane == 0) lse[row] = m + logf(l);
}

static __global__ void backward_q_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                    const float *qkv, const float *khat, const float *vhat,
                                    const float *lse, const float *dout, float *dq, float *D,
                                    float *dqkv)
{
    const geo g = geo_of(a);
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= a.S * a.H * a.T) return;
    const int64_t i = row % a.T, shi = row / a.T, s = shi / a.H, h = shi % a.H, d = a.d;
    const int64_t gq = i / a.seg, gs = gq * a.seg;
    const int64_t ge = gs + a.seg < a.T ? gs + a.seg : a.T, jend = a.causal ? i + 1 : ge;
    float qr[KMAX], qu[KMAX], go[KMAX], ur[KMAX], wr[KMAX], uu[KMAX], wu[KMAX];
    load_row(q + (s * a.T + i) * g.HD + h * d, a.d, lane, qr);
    load_row(qkv + (s * a.T + i) * g.W + h * d, a.d, lane, qu);
    load_row(dout + (s * a.T + i) * g.HD + h * d, a.d, lane, go);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) ur[kk] = wr[kk] = uu[kk] = wu[kk] = 0;
    const float li = lse[row];
    float Dacc = 0;
    const int64_t n_direct = jend - gs, n_slots = n_direct + summary_end(a, g, gq);
    for (int64_t e = 0; e < n_slots; e++) {
        const float *kp, *vp;
        const int direct = e < n_direct;
        if (direct) {
            const int64_t j = gs + e;
            kp = k + (s * a.T + j) * g.HD + h * d;
            vp = qkv + (s * a.T + j) * g.W + 2 * g.HD + h * d;
        } else {
            const int64_t ms = e - n_direct;
            if (ms == gq) continue;
            kp = khat + (s * g.n_seg + ms) * g.HD + h * d;
            vp = vhat + (s * g.n_seg + ms) * g.HD + h * d;
        }
        const float p = expf(row_dot(direct ? qr : qu, kp, a.d, lane) * g.scale - li);
        const float dp = row_dot(go, vp, a.d, lane);
        Dacc += p * dp;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c >= a.d) continue;
            if (direct) ur[kk] += p * dp * kp[c], wr[kk] += p * kp[c];
            else uu[kk] += p * dp * kp[c], wu[kk] += p * kp[c];
        }
    }
    float *gr = dq + (s * a.T + i) * g.HD + h * d, *gu = dqkv + (s * a.T + i) * g.W + h * d;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c >= a.d) continue;
        gr[c] = g.scale * (ur[kk] - Dacc * wr[kk]);
        gu[c] += g.scale * (uu[kk] - Dacc * wu[kk]);
    }
    if (lane == 0) D[row] = Dacc;
}

static __global__ void backward_kv_k(mpl_cuda_attn_dims a, const float *q, const float *k,
                                     const float *qkv, const float *lse, const float *dout,
                                     const float *D, float *dk, float *dqkv)
{
    const geo g = geo_of(a);
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= a.S * a.H * a.T) return;
    const int64_t j = row % a.T, shi = row / a.T, s = shi / a.H, h = shi % a.H, d = a.d;
    const int64_t gs = j / a.seg * a.seg, ge = gs + a.seg < a.T ? gs + a.seg : a.T;
    float kv[KMAX], vv[KMAX], gk[KMAX], gv[KMAX];
    load_row(k + (s * a.T + j) * g.HD + h * d, a.d, lane, kv);
    load_row(qkv + (s * a.T + j) * g.W + 2 * g.HD + h * d, a.d, lane, vv);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) gk[kk] = gv[kk] = 0;
    for (int64_t i = a.causal ? j : gs; i < ge; i++) {
        const int64_t ri = shi * a.T + i;
        const float *qi = q + (s * a.T + i) * g.HD + h * d;
        const float *gi = dout + (s * a.T + i) * g.HD + h * d;
        const float p = expf(row_dot(kv, qi, a.d, lane) * g.scale - lse[ri]);
        const float ds = p * (row_dot(vv, gi, a.d, lane) - D[ri]) * g.scale;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c < a.d) gk[kk] += ds * qi[c], gv[kk] += p * gi[c];
        }
    }
    float *ok = dk + (s * a.T + j) * g.HD + h * d, *ov = dqkv + (s * a.T + j) * g.W + 2 * g.HD + h * d;
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < a.d) ok[c] = gk[kk], ov[c] += gv[kk];
    }
}

// Warp per summary (s, h, m): the queries that see it.
static __global__ void backward_summary_k(mpl_cuda_attn_dims a, const float *qkv,
                                          const float *khat, const float *vhat, const float *lse,
                                          const float *dout, const float *D, float *dkhat,
                                          float *dvhat)
{
    const geo g = geo_of(a);
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32; // (s H + h) n_seg + m
    if (row >= a.S * a.H * g.n_seg) return;
    const int64_t m = row % g.n_seg, shi = row / g.n_seg, s = shi / a.H, h = shi % a.H, d = a.d;
    const int64_t o = (s * g.n_seg + m) * g.HD + h * d;
    const int64_t ms = m * a.seg, me = ms + a.seg < a.T ? ms + a.seg : a.T;
    float kv[KMAX], vv[KMAX], gk[KMAX], gv[KMAX];
    load_row(khat + o, a.d, lane, kv);
    load_row(vhat + o, a.d, lane, vv);
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) gk[kk] = gv[kk] = 0;
    for (int64_t i = a.causal ? me : 0; i < a.T; i++) {
        if (i >= ms && i < me) continue; // the own segment has no summary slot
        const int64_t ri = shi * a.T + i;
        const float *qi = qkv + (s * a.T + i) * g.W + h * d;
        const float *gi = dout + (s * a.T + i) * g.HD + h * d;
        const float p = expf(row_dot(kv, qi, a.d, lane) * g.scale - lse[ri]);
        const float ds = p * (row_dot(vv, gi, a.d, lane) - D[ri]) * g.scale;
#pragma unroll
        for (int kk = 0; kk < KMAX; kk++) {
            const int c = lane + 32 * kk;
            if (c < a.d) gk[kk] += ds * qi[c], gv[kk] += p * gi[c];
        }
    }
#pragma unroll
    for (int kk = 0; kk < KMAX; kk++) {
        const int c = lane + 32 * kk;
        if (c < a.d) dkhat[o + c] = gk[kk], dvhat[o + c] = gv[kk];
    }
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

static unsigned warps_for(int64_t rows) { return (unsigned)((rows + WARPS - 1) / WARPS); }

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
    MPL_CUDA_LAUNCH(forward_k, warps_for(a->S * a->H * a->T), WARPS * 32, 0, s, *a, q, k, qkv,
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
    MPL_CUDA_LAUNCH(backward_q_k, warps_for(a->S * a->H * a->T), WARPS * 32, 0, s, *a, q, k, qkv,
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
    MPL_CUDA_LAUNCH(backward_kv_k, warps_for(a->S * a->H * a->T), WARPS * 32, 0, s, *a, q, k, qkv,
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
    MPL_CUDA_LAUNCH(backward_summary_k, warps_for(a->S * a->H * g.n_seg), WARPS * 32, 0, s, *a,
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
