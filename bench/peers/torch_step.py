#!/usr/bin/env python3
"""PyTorch peer of `multipole bench step`: one training step of the same model.

The model is the one in DESIGN.md, built from the same INI config on the CPU
in fp32 with the same number of threads, so that tokens/s of the two programs
can be compared (scripts/bench.sh step):

  token embedding E (V, C)
  n_layer x [ x += Wo(attn(RMSNorm1(x)));  x += W2(gelu_tanh(W1(RMSNorm2(x)))) ]
  final RMSNorm, logits = x @ E^T (tied), mean cross-entropy on the next token

All Linear layers are bias-free; qkv is one Linear(C, 3C) split into q, k, v
with n_head heads of C/n_head; RoPE (half-split pairs (x_c, x_{c+d/2}) rotated
by pos * theta^(-2c/d)) on q and k; causal softmax attention with scale
1/sqrt(d); RMSNorm y = x / sqrt(mean(x^2) + 1e-5) * g.

A timed step is zero_grad + forward + backward + clip_grad_norm_(1.0) +
AdamW step (betas (0.9, 0.95), eps 1e-8) on one fixed random batch. Output
is CSV: '#' lines with the settings, a header row and one data row
(bench/README.md describes the columns).

Runs with Debian's python3-torch (/usr/bin/python3; scripts/deps.sh --bench).
"""

import argparse
import configparser
import math
import os
import platform
import socket
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from peerlib import git_commit

# Keys the peer uses, with their type and the default when the INI lacks them.
KEYS = {
    "vocab_size": (int, 256),
    "d_model": (int, 128),
    "n_layer": (int, 4),
    "n_head": (int, 4),
    "mlp_mult": (int, 4),
    "seq_len": (int, 256),
    "batch": (int, 8),
    "lr": (float, 3e-3),
    "weight_decay": (float, 0.1),
    "rope_theta": (float, 10000.0),
    "seed": (int, 1337),
    "band": (int, 64),      # FMM near-field band (torch_gpu_step.py)
}

HEADER = ("config,backend,d_model,n_layer,n_head,seq_len,batch,threads,steps,"
          "median_ms,min_ms,max_ms,tok_per_s")


def load_config(path, overrides):
    """Flat key -> value from the INI file (section names are ignored: keys
    are unique across sections), then `--set key=value` overrides. Keys the
    peer does not model (attn, run_dir, ...) are kept but unused."""
    cp = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    with open(path, encoding="utf-8") as f:
        cp.read_file(f)
    raw = {}
    for sec in cp.sections():
        for k, v in cp.items(sec):
            raw[k] = v.strip()
    for ov in overrides:
        if "=" not in ov:
            sys.exit(f"torch_step.py: --set expects key=value, got '{ov}'")
        k, v = ov.split("=", 1)
        raw[k.strip()] = v.strip()
    cfg = {}
    for k, (typ, default) in KEYS.items():
        try:
            cfg[k] = typ(raw[k]) if k in raw else default
        except ValueError:
            sys.exit(f"torch_step.py: {k}={raw[k]!r} is not a valid {typ.__name__}")
    cfg["attn"] = raw.get("attn", "dense")
    cfg["causal"] = int(raw.get("causal", "1"))
    if cfg["d_model"] % cfg["n_head"] != 0:
        sys.exit(f"torch_step.py: d_model={cfg['d_model']} is not divisible "
                 f"by n_head={cfg['n_head']}")
    if (cfg["d_model"] // cfg["n_head"]) % 2 != 0:
        sys.exit("torch_step.py: head dim must be even for RoPE")
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.g = nn.Parameter(torch.ones(c))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.g


def rope_tables(seq_len, d, theta):
    """cos, sin of shape (L, d/2): angle pos * theta^(-2c/d) for c < d/2."""
    c = torch.arange(d // 2, dtype=torch.float64)
    inv = theta ** (-2.0 * c / d)
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()


def rope(x, cos, sin):
    """Half-split RoPE on x (B, H, L, d): pairs (x_c, x_{c+d/2})."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def attention(q, k, v, causal, mask):
    """Softmax attention, scale 1/sqrt(d). Uses SDPA where this torch has it
    (>= 2.0); Debian 12's torch 1.13 does not, so the explicit form runs."""
    if HAVE_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
    s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["d_model"]
        self.n_head = cfg["n_head"]
        self.causal = cfg["causal"]
        self.norm1 = RMSNorm(c)
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.wo = nn.Linear(c, c, bias=False)
        self.norm2 = RMSNorm(c)
        self.w1 = nn.Linear(c, cfg["mlp_mult"] * c, bias=False)
        self.w2 = nn.Linear(cfg["mlp_mult"] * c, c, bias=False)

    def forward(self, x, cos, sin, mask):
        b, l, c = x.shape
        hd = c // self.n_head
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=-1)
        q, k, v = (t.view(b, l, self.n_head, hd).transpose(1, 2) for t in (q, k, v))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = attention(q, k, v, self.causal, mask)
        x = x + self.wo(a.transpose(1, 2).reshape(b, l, c))
        return x + self.w2(F.gelu(self.w1(self.norm2(x)), approximate="tanh"))


class Model(nn.Module):
    """The language model around `block(cfg)` blocks (Block: dense attention;
    torch_gpu_step.py passes its FMM block). causal_mask: keep the (L, L)
    mask the explicit dense softmax needs."""

    def __init__(self, cfg, block=Block, causal_mask=True):
        super().__init__()
        self.emb = nn.Parameter(torch.empty(cfg["vocab_size"], cfg["d_model"]))
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg["n_layer"]))
        self.norm = RMSNorm(cfg["d_model"])
        cos, sin = rope_tables(cfg["seq_len"], cfg["d_model"] // cfg["n_head"],
                               cfg["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        l = cfg["seq_len"]
        mask = torch.ones(l, l, dtype=torch.bool).triu(1) if causal_mask else None
        self.register_buffer("mask", mask, persistent=False)
        # GPT-2 style init; only the timing matters here.
        nn.init.normal_(self.emb, std=0.02)
        for blk in self.blocks:
            for lin in (blk.qkv, blk.wo, blk.w1, blk.w2):
                nn.init.normal_(lin.weight, std=0.02)

    def forward(self, idx, tgt):
        x = self.emb[idx]
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin, self.mask)
        logits = self.norm(x) @ self.emb.t()
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1))


def main():
    ap = argparse.ArgumentParser(
        description="PyTorch peer of `multipole bench step` (CPU, fp32).")
    ap.add_argument("--config", "-c", required=True, help="INI config file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (default: all cores)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("need --steps >= 1, --warmup >= 0, --threads >= 1")

    cfg = load_config(args.config, args.set)
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg["seed"])

    model = Model(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8)
    n_params = sum(p.numel() for p in model.parameters())

    b, l = cfg["batch"], cfg["seq_len"]
    window = torch.randint(0, cfg["vocab_size"], (b, l + 1))
    idx, tgt = window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)

    print("# multipole bench step: PyTorch peer (bench/peers/torch_step.py)")
    print(f"# torch {torch.__version__}, python {platform.python_version()}, "
          f"git {git_commit()}")
    print(f"# host {socket.gethostname()}, device cpu, dtype fp32, ranks 1")
    print(f"# threads {torch.get_num_threads()} (requested {args.threads}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"# config {args.config}" + "".join(f" --set {s}" for s in args.set))
    print(f"# vocab_size {cfg['vocab_size']} mlp_mult {cfg['mlp_mult']} "
          f"params {n_params} lr {cfg['lr']} weight_decay {cfg['weight_decay']}")
    print(f"# attention {'sdpa' if HAVE_SDPA else 'explicit softmax'}, "
          f"causal {cfg['causal']} (config attn={cfg['attn']}; the peer is always dense)")
    print(f"# steps {args.steps} warmup {args.warmup}")
    print(HEADER)
    print(f"{args.config},torch,{cfg['d_model']},{cfg['n_layer']},{cfg['n_head']},"
          f"{l},{b},{args.threads},{args.steps},{med * 1e3:.3f},"
          f"{min(times) * 1e3:.3f},{max(times) * 1e3:.3f},{b * l / med:.1f}")


if __name__ == "__main__":
    main()
