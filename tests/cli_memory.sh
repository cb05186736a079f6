#!/usr/bin/env bash
# Memory: the plan printed by train agrees with the measured peak (resident
# memory added by the run, within 10%) with and without recomputation, and
# for the mechanisms that run over the whole chunk at once (what they
# allocate during a call counted as attention work); the recompute modes
# and piece sizes train to the same losses; a config that does not fit is refused before any work, naming the biggest item and the
# longest seq_len that fits; `multipole plan` says the same and exits 1.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
for i in 1 2 3 4 5 6 7 8; do cat corpus.txt; done > big.txt
"$MPL_BIN" prepare --quiet --in big.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set n_layer=2 --set seq_len=32768
   --set batch=1 --set steps=2 --set warmup=1 --set log_every=1 --set ckpt_every=0)
plan_mib() { sed -n 's/.*; plan \([0-9.]*\) MiB$/\1/p' "$1"; }
used_mib() { sed -n 's/.* MiB at start + \([0-9.]*\) MiB; plan.*/\1/p' "$1"; }
# plan_agrees WHAT LOG: the plan in LOG within 10% of the memory the run added
plan_agrees() {
  local p u
  p=$(plan_mib "$2") u=$(used_mib "$2")
  if awk -v p="$p" -v u="$u" 'BEGIN { d = (u - p) / p; if (d < 0) d = -d; exit !(p > 0 && d <= 0.10) }'; then
    ok "$1: plan $p MiB, measured $u MiB"
  else
    bad "$1: plan $p MiB, measured $u MiB: $(grep memory: "$2")"
  fi
}
# (layer keeps so little that 2 sequences are needed to dwarf the runtime's own memory;
# bidir: recompute=layer where FMM hands gradients back after its pieces)
for rc in none layer bidir; do
  if [ $rc = bidir ]; then X=(--set recompute=layer --set causal=0); else X=(--set recompute=$rc); fi
  "$MPL_BIN" train "${C[@]}" "${X[@]}" --set batch=2 --set chunk_tokens=4096 --set run_dir=r_$rc > log_$rc 2>&1 ||
    bad "train recompute=$rc: $(tail -3 log_$rc)"
  plan_agrees "recompute=$rc" log_$rc
done
# mechanisms that run over the whole chunk at once: the plan counts what
# they allocate for themselves during the call (attention work)
for k in dense combiner_fixed combiner_logsparse; do
  case $k in
    dense) X=(--set seq_len=8192 --set recompute=layer) ;;
    combiner_fixed) X=(--set seq_len=16384 --set segment=128 --set recompute=layer) ;;
    combiner_logsparse) X=(--set seq_len=16384 --set recompute=layer --set causal=0) ;;
  esac
  "$MPL_BIN" train "${C[@]}" --set attn=$k "${X[@]}" --set run_dir=r_$k > log_$k 2>&1 ||
    bad "train attn=$k: $(tail -3 log_$k)"
  plan_agrees "attn=$k" log_$k
done
pn=$(plan_mib log_none) pl=$(plan_mib log_layer)
awk -v a="$pn" -v b="$pl" 'BEGIN { exit !(b < a / 2) }' && ok "recompute=layer plans $pl MiB < half of $pn MiB" ||
  bad "recompute=layer plans $pl MiB vs $pn MiB"
if diff <(losses r_none/metrics.csv) <(losses r_layer/metrics.csv) > /dev/null; then
  ok "recompute=none and =layer: identical losses"
else
  bad "losses differ: $(losses r_none/metrics.csv | tr '\n' ' ') vs $(losses r_layer/metrics.csv | tr '\n' ' ')"
fi
# refused before any work: no run directory is made
"$MPL_BIN" train "${C[@]}" --set mem_limit=0.05 --set run_dir=r_small > log_small 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "the memory plan of a rank needs" log_small && grep -q "biggest item is activations" log_small &&
   grep -q "the longest seq_len that fits is [0-9]" log_small && [ ! -d r_small ]; then
  ok "does not fit: refused ($(grep -o 'the longest seq_len that fits is [0-9]*' log_small))"
else
  bad "mem_limit refusal: exit $rc $(cat log_small)"
fi
"$MPL_BIN" plan "${C[@]}" --set mem_limit=0.05 > plan_small 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "does NOT fit" plan_small && ok "plan: does not fit, exit 1" || bad "plan: exit $rc $(cat plan_small)"
"$MPL_BIN" plan "${C[@]}" --set recompute=layer --set sp=4 --world 4 > plan_sp 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "8192 tokens" plan_sp && grep -q "longest seq_len that fits" plan_sp &&
  ok "plan of sp=4: rank holds 8192 tokens" || bad "plan sp=4: exit $rc $(cat plan_sp)"
finish
