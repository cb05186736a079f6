#!/usr/bin/env bash
# Resharding: checkpoints saved at world 1, 2, 3, 4 (dp = world, global
# batch 12 = 12/6/4/3 per rank) load at another world size; the next step's
# loss equals the unchanged-layout resume within 1e-5 relative.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set warmup=1 --set log_every=100 --set ckpt_every=0 --set steps=3)
run() { # world args...
  local w=$1; shift
  if [ "$w" -eq 1 ]; then "$MPL_BIN" "$@"; else "$MPIEXEC" --oversubscribe -n "$w" "$MPL_BIN" "$@"; fi
}
for w in 1 2 3 4; do
  run $w train "${C[@]}" --set batch=$((12 / w)) --set run_dir=s$w --stop-after 2 > s$w.log 2>&1 ||
    bad "save at world $w: $(cat s$w.log)"
done
loss3() { awk -F, '$1 == 3 { print $3 }' "$1/metrics.csv"; }
for w in 1 2 3 4; do
  for v in $w $((w % 4 + 1)) $(( (w + 1) % 4 + 1 )); do
    d=r${w}_$v
    cp -r s$w $d
    run $v train "${C[@]}" --set batch=$((12 / v)) --set run_dir=$d --resume auto > $d.log 2>&1 ||
      { bad "world $w -> $v: $(cat $d.log)"; continue; }
    grep -q "resumed from $d/ckpt-2.h5 at step 2 (sample 24)" $d.log || bad "world $w -> $v: $(grep resumed $d.log)"
  done
  for v in $((w % 4 + 1)) $(( (w + 1) % 4 + 1 )); do
    a=$(loss3 r${w}_$w) b=$(loss3 r${w}_$v)
    if awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-5 * a) }'; then
      ok "saved at world $w, resumed at $v: step-3 loss $b (same layout: $a)"
    else
      bad "saved at world $w, resumed at $v: loss $b vs $a"
    fi
  done
done
finish
