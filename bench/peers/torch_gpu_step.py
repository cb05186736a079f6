#!/usr/bin/env python3
"""PyTorch peer of `multipole bench step --set device=cuda` (scripts/bench.sh
gpu-step): one training step of the same FMM language model on the same
GPU, eager or torch.compile.

The model is torch_step.py's (tied embedding, n_layer x [RMSNorm -> qkv ->
attention -> wo -> residual; RMSNorm -> W1 -> gelu_tanh -> W2 -> residual],
final RMSNorm, tied unembedding, mean cross-entropy) with multipole's FMM
attention (ATTENTION.md): near field = causal softmax in a band of w keys on
RoPE'd q, k (torch_fmm.near_field), far field = chunked causal linear
attention per map on unrotated q, k with sum-normalised features and the
ratio (torch_fmm.far_field), blended per head and channel,
o = a * near + b * mean_m far_m, a and b learnable (H, d).

Precision as a PyTorch user would train it: fp32 master weights, autocast
to bf16 for the products and the near field, the far field in fp32 (its
state sums must not be bf16), fused AdamW (betas 0.9, 0.95, eps 1e-8,
weight decay on matrices), clip_grad_norm_(1.0). --mode compile wraps the
model in torch.compile (the optimizer stays eager). A timed step is
zero_grad + forward + backward + clip + step on one fixed random batch,
timed with CUDA events after `--warmup` untimed steps (compile happens there).

MFU = model FLOPs per step / (median step time * bf16 peak), the FLOPs
counted as bench/README.md says (6 N P for the products, 3 N n_layer H
(4 w d + 4 r d^2) for the attention) and the peak from the device name
(--peak-tflops overrides). Output: '#' lines, the gpu-step header, one row.
"""

import argparse
import platform
import socket
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from peerlib import git_commit
from torch_fmm import far_field, near_field
from torch_step import Block, Model, load_config, rope

HEADER = ("config,backend,mode,device,d_model,n_layer,n_head,seq_len,batch,steps,"
          "median_ms,min_ms,max_ms,tok_per_s,model_tflop_per_step,tflops,mfu")

# Dense bf16 tensor-core peaks (no sparsity) by device name, TFLOP/s.
PEAKS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4),
         ("A100", 312.0), ("L40S", 362.1))


def peak_tflops(name, override):
    if override > 0:
        return override, "--peak-tflops"
    for key, v in PEAKS:
        if key in name:
            return v, f"the table for '{key}'"
    return 0.0, "unknown device (use --peak-tflops)"


def model_flops(cfg, maps):
    """Model FLOPs of one step: bench/README.md, 'gpu-step'."""
    n = cfg["batch"] * cfg["seq_len"]
    c, v, nl, h = cfg["d_model"], cfg["vocab_size"], cfg["n_layer"], cfg["n_head"]
    hid = cfg["mlp_mult"] * c
    d, w, r = c // h, cfg["band"], len(maps)
    p_mm = nl * (3 * c * c + c * c + 2 * c * hid) + v * c
    return 6.0 * n * p_mm + 3.0 * n * nl * h * (4.0 * w * d + 4.0 * r * d * d)


class FmmBlock(Block):
    """torch_step.Block's layers with FMM attention in place of dense."""

    def __init__(self, cfg, maps):
        super().__init__(cfg)
        self.h = cfg["n_head"]
        self.d = cfg["d_model"] // self.h
        self.w = cfg["band"]
        self.maps = maps
        # multipole's causal init: the layer starts as linear attention
        self.a = nn.Parameter(torch.zeros(self.h, self.d))
        self.b = nn.Parameter(torch.ones(self.h, self.d))

    def forward(self, x, cos, sin, mask):
        del mask  # the band and the chunked far field mask themselves
        bsz, l, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=-1)
        q, k, v = (t.view(bsz, l, self.h, self.d).transpose(1, 2) for t in (q, k, v))
        near = near_field(rope(q, cos, sin), rope(k, cos, sin), v, self.w)
        with torch.autocast("cuda", enabled=False):
            qf, kf, vf = q.float(), k.float(), v.float()
            far = sum(far_field(qf, kf, vf, m, 64) for m in self.maps) / len(self.maps)
        o = self.a.view(1, self.h, 1, self.d) * near + self.b.view(1, self.h, 1, self.d) * far
        x = x + self.wo(o.transpose(1, 2).reshape(bsz, l, c))
        return x + self.w2(F.gelu(self.w1(self.norm2(x)), approximate="tanh"))


def main():
    ap = argparse.ArgumentParser(description="PyTorch GPU peer of multipole's training step.")
    ap.add_argument("--config", "-c", required=True, help="INI config file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    ap.add_argument("--mode", choices=("eager", "compile"), default="eager")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="bf16 peak of the GPU (default: from its name)")
    ap.add_argument("--maps", default="elu,elu_flip", help="FMM feature maps")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("need --steps >= 1 and --warmup >= 0")
    if not torch.cuda.is_available():
        sys.exit("torch_gpu_step.py: torch sees no CUDA device")
    cfg = load_config(args.config, args.set)
    maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    dev = torch.device("cuda")
    torch.manual_seed(cfg["seed"])
    model = Model(cfg, block=lambda c: FmmBlock(c, maps), causal_mask=False).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8, fused=True)
    fwd = torch.compile(model) if args.mode == "compile" else model
    n_params = sum(p.numel() for p in model.parameters())
    b, l = cfg["batch"], cfg["seq_len"]
    window = torch.randint(0, cfg["vocab_size"], (b, l + 1), device=dev)
    idx, tgt = window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        step()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e-3)
    med = statistics.median(times)
    name = torch.cuda.get_device_name(dev)
    peak, peak_src = peak_tflops(name, args.peak_tflops)
    flops = model_flops(cfg, maps)
    tflops = flops / med / 1e12
    mfu = f"{tflops / peak:.4f}" if peak > 0 else "n/a"
    print("# scripts/bench.sh gpu-step: PyTorch peer (bench/peers/torch_gpu_step.py)")
    print(f"# torch {torch.__version__}, cuda {torch.version.cuda}, python "
          f"{platform.python_version()}, git {git_commit()}")
    print(f"# host {socket.gethostname()}, device {name}, mode {args.mode}, "
          f"autocast bf16 (far field fp32), fused AdamW, peak {peak} TFLOP/s from {peak_src}")
    print(f"# config {args.config}" + "".join(f" --set {s}" for s in args.set))
    print(f"# params {n_params} band {cfg['band']} maps {','.join(maps)} "
          f"peak memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB")
    print(f"# model flops per step {flops:.4e} = 6 N P_matmul + 3 N n_layer H (4 w d + 4 r d^2); "
          f"steps {args.steps} warmup {args.warmup}")
    print(HEADER)
    print(f"{args.config},torch,{args.mode},cuda,{cfg['d_model']},{cfg['n_layer']},"
          f"{cfg['n_head']},{l},{b},{args.steps},{med * 1e3:.3f},{min(times) * 1e3:.3f},"
          f"{max(times) * 1e3:.3f},{b * l / med:.1f},{flops / 1e12:.4f},{tflops:.2f},{mfu}")


if __name__ == "__main__":
    main()
