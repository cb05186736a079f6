#!/usr/bin/env bash
# `bench comm --model`: the alpha-beta model's arithmetic against an
# independent evaluation of the formulas of bench/README.md ("comm
# --model") on a small case (awk below), the measured bytes against the
# closed forms at 2 ranks, and the option checks.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
# C = 1024 tokens per rank, 4 layers of 4 heads x 32, band 64, 2 maps,
# 2 sequences; a network whose numbers are easy to follow: NVLink 1 us,
# 100 GB/s; IB 10 us, 10 GB/s; 4 GPUs per node.
M=(bench comm --model -c "$MPL_SRC/configs/tiny.ini" --set n_layer=4 --set d_model=128
   --set n_head=4 --set band=64 --set fmm_maps=elu,elu_flip --set batch=2 --set causal=1
   --tokens-per-rank 1024 --max-p 16 --nvlink-us 1 --nvlink-gbs 100 --ib-us 10 --ib-gbs 10
   --gpus-per-node 4)
"$MPL_BIN" "${M[@]}" --compute-ms 100 > m.csv 2> m.err && ok "model runs" || bad "model: $(cat m.err)"
params=$(sed -n 's/^# config=.* params=\([0-9]*\)$/\1/p' m.csv)
[ -n "$params" ] && ok "parameter slab: $params floats" || bad "no params in: $(head -5 m.csv)"
grep -q '^# .*MODEL of one training step, not a measurement' m.csv && ok "labelled a model" ||
  bad "the output does not say it is a model"
# columns: 1 model 2 P 3 nodes 4 mechanism 5 L 6 C 7 compute_ms 8 attn_bytes 9 attn_ms
# 10 grad_bytes 11 grad_ms 12 scalar_ms 13 exposed_ms 14 step_ms 15 efficiency 16 note
check=$(awk -F, -v np="$params" '
  function lg(x,  r) { r = 0; while (2 ^ r < x) r++; return r }
  function rnv(P) { return lg(P) < 2 ? lg(P) : 2 }           # log2 of 4 GPUs per node
  function rib(P) { return lg(P) - rnv(P) }
  function a(P) { return P > 4 ? 10e-6 : 1e-6 }              # the slowest link P spans
  function b(P) { return P > 4 ? 10e9 : 100e9 }
  function p2p(P, x) { return P < 2 ? 0 : a(P) + x / b(P) }
  function scan(P, x) { return rnv(P) * (1e-6 + x / 100e9) + rib(P) * (10e-6 + x / 10e9) }
  function ar(P, x) { return P < 2 ? 0 : 2 * (rnv(P) * 1e-6 + rib(P) * 10e-6) + 2 * (P - 1) / P * x / b(P) }
  function near(x, y,  e) { e = x - y; if (e < 0) e = -e; return e <= 1e-4 + 1e-4 * (y < 0 ? -y : y) }
  function no(msg) { print "FAIL " msg; bad++ }
  BEGIN { C = 1024; H = 4; d = 32; HD = 128; w = 64; r = 2; nl = 4; ns = 2; bad = 0 }
  /^model,[0-9]/ {
    P = $2; m = $4; rows++
    if (P == 1 && ($15 != "1.0000" || $13 != "0.0000" || $14 != "100.0000")) no("P=1 " m ": efficiency " $15 ", exposed " $13)
    if ($16 == "" && !near($15, 100 / $14)) no("P=" P " " m ": efficiency " $15 " != compute/step")
    if ($16 == "" && !near($14, 100 + $13)) no("P=" P " " m ": step != compute + exposed")
    if ($16 == "" && $10 != 4 * np) no("grad bytes " $10 " != 4 x params")
    if ($16 == "" && !near($11, 1e3 * ar(P, 4 * np))) no("P=" P " grad_ms " $11 " != " 1e3 * ar(P, 4 * np))
    if ($16 == "" && !near($12, 1e3 * 4 * ar(P, 16))) no("P=" P " scalar_ms " $12)
    halo = 4 * 2 * (w - 1) * HD * ns; far = 4 * H * r * (d * d + d) * ns
    if (m == "fmm") {
      if ($8 != (P > 1 ? nl * 2 * (halo + far) : 0)) no("P=" P " fmm bytes " $8)
      t = nl * 2 * (p2p(P, halo) + scan(P, far))
      if (!near($9, 1e3 * t)) no("P=" P " fmm attn_ms " $9 " != " 1e3 * t)
    }
    if (m == "ring") {
      hop_f = 4 * 2 * ns * C * HD; hop_b = 2 * hop_f
      if ($8 != nl * (P - 1) * (hop_f + hop_b)) no("P=" P " ring bytes " $8)
      t = nl * (P - 1) * (2 * a(P) + (hop_f + hop_b) / b(P))
      if (P > 1 && !near($9, 1e3 * t)) no("P=" P " ring attn_ms " $9 " != " 1e3 * t)
    }
    if (m == "ulysses") {
      if ((P <= H) != ($16 == "")) no("P=" P " ulysses feasibility: note \"" $16 "\"")
      x = 4 * ns * C * HD
      if (P <= H && !near($8, nl * 2 * 4 * x * (P - 1) / P)) no("P=" P " ulysses bytes " $8)
    }
  }
  END { if (rows != 5 * 4) no("rows: " rows " (P = 1..16 x 4 mechanisms)"); print bad + 0 }' m.csv)
[ "$(tail -n 1 <<< "$check")" = 0 ] && ok "every row matches the hand evaluation" || bad "model arithmetic: $check"
# the bandwidth term of the gradient all-reduce alone, with alpha = 0:
# 2 (P-1)/P x 4 params / beta at P = 16 across nodes (IB, 10 GB/s)
"$MPL_BIN" "${M[@]}" --compute-ms 100 --nvlink-us 0 --ib-us 0 > z.csv 2>&1
g=$(awk -F, '$1 == "model" && $2 == 16 && $4 == "fmm" { print $11 }' z.csv)
want=$(awk -v np="$params" 'BEGIN { printf "%.4f", 1e3 * 2 * 15 / 16 * 4 * np / 10e9 }')
[ "$g" = "$want" ] && ok "ring all-reduce 2(P-1)/P bytes/beta at P=16: $g ms" || bad "grad_ms $g != $want"
# overlap: the gradient all-reduce hides behind the compute it may use
"$MPL_BIN" "${M[@]}" --compute-ms 100 --overlap 1 > o.csv 2>&1
e=$(awk -F, '$1 == "model" && $2 == 16 && $4 == "fmm" { print ($13 - $9 - $12 < 1e-3) }' o.csv)
[ "$e" = 1 ] && ok "--overlap 1 hides the gradient all-reduce" || bad "overlap: $(grep ',16,4,fmm' o.csv)"
# 2 ranks: the bytes are measured and equal the closed forms; the compute
# is timed (one step of 256 tokens per rank)
"$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" "${M[@]}" --tokens-per-rank 256 --steps 1 --warmup 0 > n2.csv 2> n2.err || bad "np 2: $(cat n2.err)"
[ "$(grep -c '^# bytes measured: .* = the closed form$' n2.csv)" = 2 ] && ok "np 2: fmm and combiner bytes measured = closed form" ||
  bad "np 2 bytes: $(grep '^#' n2.csv)"
grep -q '^# tokens_per_rank=256 compute_ms=[0-9.]* (measured: median of 1 steps' n2.csv &&
  ! grep -q 'compute_ms=0.000 ' n2.csv && ok "np 2: compute measured" || bad "np 2 compute: $(grep '^# tok' n2.csv)"
# bad options
"$MPL_BIN" "${M[@]}" --gpus-per-node 3 > /dev/null 2> e.err; rc=$?
[ "$rc" = 2 ] && grep -q 'gpus-per-node 3 must be a power of two' e.err && ok "--gpus-per-node 3 refused" ||
  bad "gpus-per-node 3: rc=$rc $(cat e.err)"
"$MPL_BIN" "${M[@]}" --overlap 2 > /dev/null 2> e.err; rc=$?
[ "$rc" = 2 ] && ok "--overlap 2 refused" || bad "overlap 2: rc=$rc $(cat e.err)"
finish
