#!/usr/bin/env python3
"""PyTorch peer of `multipole bench attention --attn fmm`: one FMM attention
layer, forward + backward, written the way a PyTorch user would write a
linear-time FMMformer layer (CPU, fp32, autograd for the backward).

Inputs q, k, v of shape (1, H, L, d) are random (requires_grad), as are the
blend weights a, b of shape (H, d). Following /work/shared/ATTENTION.md
("FMM"), causal:

  near_i  = sum_{i-w < j <= i} softmax_j(q_i.k_j / sqrt(d)) v_j
            computed in blocks of w queries: block n attends to the 2w keys
            of blocks n-1 and n under a band mask, softmax over the band only;
  far_m,i = (1/sqrt(d)) (q~_i^T S_i) / (q~_i.z_i + 1e-5),  per map m,
            q~ = phi_m(q) / sum_c phi_m(q)_c (same for k~),
            S_i = sum_{j<=i} k~_j v_j^T, z_i = sum_{j<=i} k~_j (inclusive),
            computed as chunked causal linear attention: within a chunk of
            64 tokens a masked (lower-triangular) product, across chunks a
            running state (S, z) from torch.cumsum over the chunk states;
  o_i     = a * near_i + b * (1/r) sum_m far_m,i.

Maps: elu  phi(x) = x + 1 (x > 0), exp(x) (x <= 0);  elu_flip  phi(-x)
with the same elu; tanh  tanh(x) + 1.

A timed run is the forward plus o.backward(dout) for a fixed random dout
(gradients of q, k, v, a, b). Output is CSV in the format of the C side:
'#' lines, a header row and one data row (bench/README.md describes the
columns and the flop formula). `--check` compares against a naive O(L^2)
masked implementation in fp64 at small L and exits.

Runs with Debian's python3-torch (/usr/bin/python3; scripts/deps.sh --bench).
"""

import argparse
import math
import os
import platform
import resource
import socket
import statistics
import sys
import time

import torch

from peerlib import git_commit

HEADER = ("op,attn,backend,L,heads,d,w,r,causal,threads,median_ms,min_ms,max_ms,"
          "ns_per_tok,peak_mb,gflops,sgemm_gflops,io_mb,extra_mb")
EPS = 1e-5
MAPS = ("elu", "elu_flip", "tanh")


def elu1(x):
    """elu(x) + 1 as x + 1 (x > 0) / exp(x) (x <= 0); the clamp keeps the
    unused exp branch finite so that its zero gradient stays zero."""
    return torch.where(x > 0, x + 1, torch.exp(x.clamp(max=0)))


def phi(x, m):
    if m == "elu":
        return elu1(x)
    if m == "elu_flip":
        return elu1(-x)
    if m == "tanh":
        return torch.tanh(x) + 1
    raise ValueError(f"unknown feature map '{m}'")


def near_field(q, k, v, w):
    """Causal band softmax, keys i-w < j <= i, in blocks of w queries."""
    b, h, l, d = q.shape
    nb = (l + w - 1) // w
    pad = nb * w - l
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qb = q.view(b, h, nb, w, d)
    kb = k.view(b, h, nb, w, d)
    vb = v.view(b, h, nb, w, d)
    # keys of block n: blocks n-1 and n (block -1 = zeros, masked out below)
    zero = kb.new_zeros(b, h, 1, w, d)
    kk = torch.cat((torch.cat((zero, kb[:, :, :-1]), dim=2), kb), dim=3)
    vv = torch.cat((torch.cat((zero, vb[:, :, :-1]), dim=2), vb), dim=3)
    s = (qb @ kk.transpose(-2, -1)) * (1.0 / math.sqrt(d))      # (b,h,nb,w,2w)
    # query t of the block sits at position n*w + t, key u at n*w + u - w:
    # keep t < u <= t + w, and in block 0 no key from block -1 (u >= w).
    t = torch.arange(w, device=q.device)[:, None]
    u = torch.arange(2 * w, device=q.device)[None, :]
    band = (u > t) & (u <= t + w)
    mask = (~band).expand(nb, w, 2 * w).clone()
    mask[0, :, :w] = True
    s = s.masked_fill(mask, float("-inf"))
    o = torch.softmax(s, dim=-1) @ vv                            # (b,h,nb,w,d)
    return o.reshape(b, h, nb * w, d)[:, :, :l]


def far_field(q, k, v, m, chunk):
    """Causal linear attention with feature map m, sum-normalised features,
    ratio normalisation, scale 1/sqrt(d); chunked with a cumsum state."""
    b, h, l, d = q.shape
    fq, fk = phi(q, m), phi(k, m)
    fq = fq / fq.sum(-1, keepdim=True)
    fk = fk / fk.sum(-1, keepdim=True)
    nc = (l + chunk - 1) // chunk
    pad = nc * chunk - l
    if pad:   # zero features: padded keys add nothing, padded rows are cut
        fq, fk, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (fq, fk, v))
    fq = fq.view(b, h, nc, chunk, d)
    fk = fk.view(b, h, nc, chunk, d)
    vc = v.view(b, h, nc, chunk, d)
    # intra-chunk: masked product (j <= i inside the chunk)
    a = (fq @ fk.transpose(-2, -1)).tril()                       # (b,h,nc,C,C)
    num = a @ vc
    den = a.sum(-1)
    # inter-chunk: exclusive prefix sums of the chunk states
    s_c = fk.transpose(-2, -1) @ vc                              # (b,h,nc,d,d)
    z_c = fk.sum(-2)                                             # (b,h,nc,d)
    s_prev = torch.cat((s_c.new_zeros(b, h, 1, d, d),
                        torch.cumsum(s_c, dim=2)[:, :, :-1]), dim=2)
    z_prev = torch.cat((z_c.new_zeros(b, h, 1, d),
                        torch.cumsum(z_c, dim=2)[:, :, :-1]), dim=2)
    num = num + fq @ s_prev
    den = den + (fq * z_prev.unsqueeze(-2)).sum(-1)
    far = num / (den + EPS).unsqueeze(-1) * (1.0 / math.sqrt(d))
    return far.reshape(b, h, nc * chunk, d)[:, :, :l]


def fmm(q, k, v, a, bw, w, maps, chunk):
    near = near_field(q, k, v, w)
    far = sum(far_field(q, k, v, m, chunk) for m in maps) / len(maps)
    h, d = a.shape
    return a.view(1, h, 1, d) * near + bw.view(1, h, 1, d) * far


def fmm_naive(q, k, v, a, bw, w, maps):
    """O(L^2) reference from the formulas, explicit masks, any dtype."""
    l, d = q.shape[-2], q.shape[-1]
    i = torch.arange(l)[:, None]
    j = torch.arange(l)[None, :]
    s = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    s = s.masked_fill(~((j <= i) & (j > i - w)), float("-inf"))
    near = torch.softmax(s, dim=-1) @ v
    far = 0
    for m in maps:
        fq, fk = phi(q, m), phi(k, m)
        fq = fq / fq.sum(-1, keepdim=True)
        fk = fk / fk.sum(-1, keepdim=True)
        att = (fq @ fk.transpose(-2, -1)) * (j <= i)
        far = far + (att @ v) / (att.sum(-1, keepdim=True) + EPS) / math.sqrt(d)
    far = far / len(maps)
    h = a.shape[0]
    return a.view(1, h, 1, d) * near + bw.view(1, h, 1, d) * far


def make_inputs(h, l, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, h, l, d, generator=g, dtype=dtype) for _ in range(3))
    a = torch.randn(h, d, generator=g, dtype=dtype)
    b = torch.randn(h, d, generator=g, dtype=dtype)
    dout = torch.randn(1, h, l, d, generator=g, dtype=dtype)
    leaves = [t.requires_grad_() for t in (q, k, v, a, b)]
    return leaves, dout


def check(args, maps):
    """Chunked/blocked peer (fp32) vs. the naive O(L^2) form (fp64): output
    and all five gradients, max abs diff < 1e-4, for several L."""
    worst = 0.0
    for l in sorted({1, args.band - 1, args.band, 2 * args.band + 3, 130, 257, 300}):
        if l < 1:
            continue
        leaves, dout = make_inputs(args.heads, l, args.head_dim, torch.float64, 7 + l)
        ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
        fast_leaves = [t.detach().float().requires_grad_() for t in leaves]
        o_ref = fmm_naive(*ref_leaves, args.band, maps)
        o_ref.backward(dout)
        o = fmm(*fast_leaves, args.band, maps, args.chunk)
        o.backward(dout.float())
        diffs = [(o.double() - o_ref).abs().max().item()]
        diffs += [(x.grad.double() - y.grad).abs().max().item()
                  for x, y in zip(fast_leaves, ref_leaves)]
        names = ["o", "dq", "dk", "dv", "da", "db"]
        # da, db sum over L tokens: compare them relative to their size
        scale = [1, 1, 1, 1] + [max(1.0, y.grad.abs().max().item()) for y in ref_leaves[3:]]
        rel = [x / s for x, s in zip(diffs, scale)]
        print(f"# check L={l}: " + " ".join(f"{n} {x:.2e}" for n, x in zip(names, rel)))
        worst = max(worst, max(rel))
    ok = worst < 1e-4
    print(f"# check {'passed' if ok else 'FAILED'}: max abs diff {worst:.2e} "
          f"(da, db relative to max(1, |grad|)) vs. naive fp64, tolerance 1e-4")
    return 0 if ok else 1


def rss_now_mb():
    """Resident memory now, MiB (/proc/self/statm; 0 where unreadable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2.0 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


def sgemm_gflops(reps=5):
    x = torch.randn(1024, 1024)
    y = torch.randn(1024, 1024)
    torch.mm(x, y)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(x, y)
        times.append(time.perf_counter() - t0)
    return 2.0 * 1024 ** 3 / statistics.median(times) / 1e9


def main():
    ap = argparse.ArgumentParser(
        description="PyTorch peer of `multipole bench attention --attn fmm` "
                    "(CPU, fp32, forward + backward of one causal FMM layer).")
    ap.add_argument("--len", type=int, default=4096, help="sequence length L")
    ap.add_argument("--heads", type=int, default=4, help="heads H")
    ap.add_argument("--head-dim", type=int, default=32, help="head dim d")
    ap.add_argument("--band", type=int, default=64, help="near-field band w")
    ap.add_argument("--maps", default="elu,elu_flip",
                    help="far-field feature maps, comma list (elu, elu_flip, tanh)")
    ap.add_argument("--chunk", type=int, default=64,
                    help="far-field chunk length (default 64)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--check", action="store_true",
                    help="compare with a naive O(L^2) fp64 implementation at "
                         "small L (max abs diff < 1e-4) and exit")
    args = ap.parse_args()
    maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    if not maps or any(m not in MAPS for m in maps):
        ap.error(f"--maps: comma list of {', '.join(MAPS)}")
    if min(args.len, args.heads, args.head_dim, args.band, args.chunk,
           args.threads, args.reps) < 1 or args.warmup < 0:
        ap.error("need --len, --heads, --head-dim, --band, --chunk, --threads, "
                 "--reps >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    if args.check:
        sys.exit(check(args, maps))

    h, l, d, w, r = args.heads, args.len, args.head_dim, args.band, len(maps)
    base_mb = rss_now_mb()
    leaves, dout = make_inputs(h, l, d, torch.float32, args.seed)
    # the call's tensors: q, k, v, dout, the output and the gradients of
    # q, k, v (8 H L d floats); autograd's saved activations are the layer's
    io_mb = 8.0 * h * l * d * 4 / 2.0 ** 20

    def run():
        for t in leaves:
            t.grad = None
        o = fmm(*leaves, w, maps, args.chunk)
        o.backward(dout)

    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    # ru_maxrss is in KiB on Linux: the process's peak RSS, torch itself included
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    flops = 3.0 * h * l * (4.0 * w * d + r * 4.0 * d * d)
    sg = sgemm_gflops()

    print("# multipole bench attention: PyTorch peer (bench/peers/torch_fmm.py)")
    print(f"# torch {torch.__version__}, python {platform.python_version()}, "
          f"git {git_commit()}")
    print(f"# host {socket.gethostname()}, device cpu, dtype fp32, ranks 1, batch 1")
    print(f"# threads {torch.get_num_threads()} (requested {args.threads}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"# attn fmm causal, maps {','.join(maps)}, feature_norm sum, far_norm ratio, "
          f"far_scale inv_sqrt_d, eps {EPS}, near in blocks of w (2w keys, masked), "
          f"far in chunks of {args.chunk} (cumsum state)")
    print(f"# timed: forward + o.backward(dout) (grads of q k v a b); "
          f"reps {args.reps} warmup {args.warmup}")
    print("# peak_mb: peak RSS of the whole process (ru_maxrss), torch included; "
          "gflops = 3*H*L*(4*w*d + r*4*d*d) / median; "
          "sgemm_gflops: torch.mm 1024^3, same threads")
    print(f"# io_mb: q, k, v, dout, out, dq, dk, dv, 8 H L d floats; extra_mb = peak_mb - io_mb "
          f"- {base_mb:.1f} MB resident before them (autograd's saved tensors, temporaries)")
    print(HEADER)
    print(f"attention,fmm,torch,{l},{h},{d},{w},{r},1,{args.threads},"
          f"{med * 1e3:.3f},{min(times) * 1e3:.3f},{max(times) * 1e3:.3f},"
          f"{med * 1e9 / l:.1f},{peak_mb:.1f},{flops / med / 1e9:.2f},{sg:.2f},"
          f"{io_mb:.1f},{peak_mb - io_mb - base_mb:.1f}")


if __name__ == "__main__":
    main()
