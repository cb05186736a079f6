/* The alpha-beta model of a sequence-parallel training step (comm_model.h):
 * the time of each kind of exchange, and a step assembled from the
 * mechanism's exchanges per layer. */
#include "comm_model.h"

#include <string.h>

#include "comm_bytes.h"
#include "trainer.h"

static int ceil_log2(int64_t x)
{
    int r = 0;
    while (((int64_t)1 << r) < x) r++;
    return r;
}

/* Rounds of a log-step collective inside the node and across nodes: with
 * ranks placed node by node, the partners of the first log2(G) rounds are
 * on the same node. */
static void rounds(const mpl_cm_net *n, int P, int *r_nv, int *r_ib)
{
    const int r = ceil_log2(P), g = ceil_log2(n->gpus_per_node);
    *r_nv = r < g ? r : g;
    *r_ib = r - *r_nv;
}

static double alpha(const mpl_cm_net *n, int inter) { return 1e-6 * (inter ? n->ib_us : n->nvl_us); }
static double beta(const mpl_cm_net *n, int inter) { return 1e9 * (inter ? n->ib_gbs : n->nvl_gbs); }

double mpl_cm_p2p_s(const mpl_cm_net *n, int P, double bytes)
{
    if (P <= 1 || bytes <= 0) return 0; /* no exchange, no latency */
    /* the ranks at node borders exchange over IB, and the step waits for them */
    const int inter = P > n->gpus_per_node;
    return alpha(n, inter) + bytes / beta(n, inter);
}

double mpl_cm_scan_s(const mpl_cm_net *n, int P, double bytes)
{
    if (bytes <= 0) return 0;
    int r_nv, r_ib;
    rounds(n, P, &r_nv, &r_ib);
    return r_nv * (alpha(n, 0) + bytes / beta(n, 0)) + r_ib * (alpha(n, 1) + bytes / beta(n, 1));
}

double mpl_cm_allreduce_s(const mpl_cm_net *n, int P, double bytes)
{
    if (P <= 1 || bytes <= 0) return 0; /* no exchange, no latency */
    int r_nv, r_ib;
    rounds(n, P, &r_nv, &r_ib);
    const int inter = P > n->gpus_per_node;
    return 2 * (r_nv * alpha(n, 0) + r_ib * alpha(n, 1)) +
           2.0 * (P - 1) / P * bytes / beta(n, inter);
}

double mpl_cm_ring_s(const mpl_cm_net *n, int P, double bytes_per_hop)
{
    if (P <= 1 || bytes_per_hop <= 0) return 0;
    /* the hops are in lock step, so each takes as long as the slowest */
    const int inter = P > n->gpus_per_node;
    return (P - 1) * (alpha(n, inter) + bytes_per_hop / beta(n, inter));
}

double mpl_cm_alltoall_s(const mpl_cm_net *n, int P, double bytes)
{
    if (P <= 1 || bytes <= 0) return 0; /* no exchange, no latency */
    const int G = n->gpus_per_node;
    if (P <= G) return alpha(n, 0) + (double)(P - 1) / P * bytes / beta(n, 0);
    const double on = (double)(G - 1) / P * bytes / beta(n, 0);
    const double off = (double)(P - G) / P * bytes / beta(n, 1);
    return alpha(n, 1) + (on > off ? on : off);
}

const char *mpl_cm_mech_name(mpl_cm_mech m)
{
    static const char *const names[MPL_CM_MECH_COUNT] = {"fmm", "combiner_fixed", "ring",
                                                         "ulysses"};
    return m >= 0 && m < MPL_CM_MECH_COUNT ? names[m] : "?";
}

/* Seconds and bytes of the exchanges of one layer's forward or backward,
 * by the kinds dist/comm counts (comm_bytes.h). */
static double kinds_s(const mpl_cm_net *n, int P, const mpl_comm_bytes *b, double n_seq)
{
    return mpl_cm_p2p_s(n, P, n_seq * (double)b->p2p) +
           mpl_cm_scan_s(n, P, n_seq * (double)b->scan) +
           mpl_cm_allreduce_s(n, P, n_seq * (double)(b->allreduce + b->allgather));
}

void mpl_cm_predict(const mpl_cm_input *in, const mpl_cm_net *net, mpl_cm_mech m, int P,
                    mpl_cm_step *out)
{
    memset(out, 0, sizeof *out);
    mpl_config cfg = *in->cfg;
    const int64_t C = in->tokens_per_rank, L = (int64_t)P * C;
    cfg.seq_len = L;
    mpl_attn_cfg a;
    mpl_trainer_attn_cfg(&cfg, &a);
    const double n_seq = (double)cfg.batch, n_layer = (double)cfg.n_layer;
    const int H = a.n_head, d = a.head_dim;
    double layer_s = 0, layer_bytes = 0;
    out->feasible = 1;
    if (m == MPL_CM_MECH_FMM || m == MPL_CM_MECH_COMBINER_FIXED) {
        a.kind = m == MPL_CM_MECH_FMM ? MPL_ATTN_KIND_FMM : MPL_ATTN_KIND_COMBINER_FIXED;
        mpl_comm_bytes f, b;
        int64_t n_ctx;
        mpl_comm_bytes_formula(&a, L, P, &f, &b, &n_ctx);
        layer_s = kinds_s(net, P, &f, n_seq) + kinds_s(net, P, &b, n_seq);
        /* one rank exchanges nothing */
        layer_bytes = P > 1 ? n_seq * (double)(mpl_comm_bytes_total(&f) + mpl_comm_bytes_total(&b)) : 0;
    } else if (m == MPL_CM_MECH_RING) {
        int64_t hf, hb;
        mpl_comm_bytes_ring_hop(C, cfg.batch, H, d, &hf, &hb);
        layer_s = mpl_cm_ring_s(net, P, (double)hf) + mpl_cm_ring_s(net, P, (double)hb);
        layer_bytes = (double)(P - 1) * (double)(hf + hb);
    } else {
        /* forward: q, k, v in (3 of 4 parts), the output back (1 part);
         * backward the same sizes */
        const double x = (double)mpl_comm_bytes_ulysses(C, cfg.batch, H, d) / 4;
        out->feasible = P <= H && H % P == 0;
        layer_s = 2 * (mpl_cm_alltoall_s(net, P, 3 * x) + mpl_cm_alltoall_s(net, P, x));
        layer_bytes = 2 * 4 * x * (double)(P - 1) / P;
    }
    out->attn_s = n_layer * layer_s;
    out->attn_bytes = n_layer * layer_bytes;
    out->grad_s = mpl_cm_allreduce_s(net, P, 4.0 * (double)in->n_params);
    out->scalar_s = MPL_CM_SCALAR_ALLREDUCES * mpl_cm_allreduce_s(net, P, 16);
    double hidden = in->overlap * in->compute_s;
    if (hidden > out->grad_s) hidden = out->grad_s;
    out->exposed_s = out->attn_s + out->scalar_s + out->grad_s - hidden;
    out->step_s = in->compute_s + out->exposed_s;
    out->efficiency = out->step_s > 0 ? in->compute_s / out->step_s : 1;
}
