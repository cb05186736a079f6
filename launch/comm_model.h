/* An alpha-beta model of one training step of sequence parallelism over P
 * GPUs (weak scaling: the tokens per rank fixed, the sequence P times
 * longer), for `multipole bench comm --model`. Inputs are measured: the
 * per-rank compute time of a step and the bytes of each exchange
 * (comm_bytes.h, checked against dist/comm's counters); the network is
 * two tiers, NVLink inside a node and InfiniBand across nodes, each a
 * latency alpha and a per-direction bandwidth beta. The formulas are
 * written down in bench/README.md ("comm --model"); it is a model, not a
 * measurement. */
#ifndef MPL_COMM_MODEL_H
#define MPL_COMM_MODEL_H

#include <stdint.h>

#include "config.h"

typedef struct mpl_cm_net {
    double nvl_us, nvl_gbs;   /* NVLink: alpha (microseconds), beta (GB/s = 1e9 B/s) */
    double ib_us, ib_gbs;     /* InfiniBand, per GPU (one NIC per GPU) */
    int gpus_per_node;        /* a power of two */
} mpl_cm_net;

/* Seconds of one exchange among P ranks of payload `bytes` (Local, pure
 * arithmetic; every one is 0 at P = 1
 * and for no bytes: no exchange is made). A collective runs in ceil(log2 P)
 * rounds, the first log2(gpus_per_node) inside a node (NVLink alpha), the
 * rest across nodes (InfiniBand alpha); its bandwidth term uses the
 * slowest link it crosses: NVLink while P <= gpus_per_node, else IB. */
/* Neighbour exchange (halo): all pairs at once, one round. */
double mpl_cm_p2p_s(const mpl_cm_net *n, int P, double bytes);
/* Exclusive prefix scan by recursive doubling: every round carries the
 * whole payload. */
double mpl_cm_scan_s(const mpl_cm_net *n, int P, double bytes);
/* All-reduce, bandwidth-optimal (ring or Rabenseifner):
 * 2 (P-1)/P bytes/beta + 2 rounds of latency per log2 step. */
double mpl_cm_allreduce_s(const mpl_cm_net *n, int P, double bytes);
/* Ring: P - 1 hops, each alpha + bytes/beta of the slowest hop. */
double mpl_cm_ring_s(const mpl_cm_net *n, int P, double bytes_per_hop);
/* All-to-all: every rank sends (P-1)/P of bytes, the messages at once (one
 * alpha); inside a node over NVLink; across nodes the (P - G)/P going
 * off-node over IB and the (G - 1)/P staying over NVLink at the same
 * time (G = gpus_per_node). */
double mpl_cm_alltoall_s(const mpl_cm_net *n, int P, double bytes);

typedef enum mpl_cm_mech {
    MPL_CM_MECH_FMM = 0,
    MPL_CM_MECH_COMBINER_FIXED,
    MPL_CM_MECH_RING,
    MPL_CM_MECH_ULYSSES,
    MPL_CM_MECH_COUNT
} mpl_cm_mech;

/* Local. "fmm", "combiner_fixed", "ring", "ulysses". */
const char *mpl_cm_mech_name(mpl_cm_mech m);

typedef struct mpl_cm_input {
    const mpl_config *cfg;    /* shapes: d_model n_head n_layer batch band fmm_maps causal
                               * segment (0: round sqrt(L) at each L); borrowed */
    int64_t tokens_per_rank;  /* C; the sequence is L = P C */
    int64_t n_params;         /* the parameter slab (fp32 gradients all-reduced) */
    double compute_s;         /* one step's compute on one rank at C tokens */
    double overlap;           /* fraction of compute_s the gradient all-reduce may hide behind */
} mpl_cm_input;

typedef struct mpl_cm_step {
    int feasible;             /* 0: the mechanism cannot split over P (Ulysses, P > heads) */
    double attn_bytes;        /* bytes a rank sends for attention in one step */
    double attn_s;            /* attention exchanges of all layers, forward and backward */
    double grad_s;            /* the gradient all-reduce */
    double scalar_s;          /* the step's small all-reduces (loss, norm, status) */
    double exposed_s;         /* attn_s + scalar_s + what overlap does not hide of grad_s */
    double step_s;            /* compute_s + exposed_s */
    double efficiency;        /* step at P = 1 (compute_s) / step_s */
} mpl_cm_step;

/* Local. The model's step of mechanism m at P ranks. */
void mpl_cm_predict(const mpl_cm_input *in, const mpl_cm_net *net, mpl_cm_mech m, int P,
                    mpl_cm_step *out);

/* Small all-reduces a training step makes besides the gradients (train's
 * loss sum, status agreements and the non-finite flag, launch/trainer.c). */
enum { MPL_CM_SCALAR_ALLREDUCES = 4 };

#endif
