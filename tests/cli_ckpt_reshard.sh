#!/usr/bin/env bash
# Resharding: a checkpoint saved at any layout (world, sp, dp) of the
# matrix below loads at every other one; the next step's loss equals the
# unchanged-layout resume within 1e-5 relative. Global batch 12 = batch x dp
# everywhere; sp splits every sequence; z: the AdamW state sharded over dp
# (ZeRO-1), still saved as whole tensors.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set band=8 --set warmup=1 --set log_every=100 --set ckpt_every=0 --set steps=3)
LAYOUTS=("1 1 1 0" "2 1 2 0" "2 2 1 0" "3 1 3 0" "3 3 1 0" "4 2 2 0" "3 1 3 1")
run() { # world sp dp zero args...
  local w=$1 sp=$2 dp=$3 z=$4; shift 4
  local set=(--set sp=$sp --set dp=$dp --set batch=$((12 / dp)) --set zero=$z)
  if [ "$w" -eq 1 ]; then "$MPL_BIN" "$@" "${set[@]}"; else "$MPIEXEC" --oversubscribe -n "$w" "$MPL_BIN" "$@" "${set[@]}"; fi
}
name() { if [ "$4" = 1 ]; then echo "w$1sp$2dp$3z"; else echo "w$1sp$2dp$3"; fi; }
for l in "${LAYOUTS[@]}"; do
  read -r w sp dp z <<< "$l"
  s=$(name $w $sp $dp $z)
  run $w $sp $dp $z train "${C[@]}" --set run_dir=s_$s --stop-after 2 > s_$s.log 2>&1 || bad "save at $s: $(cat s_$s.log)"
done
loss3() { awk -F, '$1 == 3 { print $3 }' "$1/metrics.csv"; }
for l in "${LAYOUTS[@]}"; do
  read -r w sp dp z <<< "$l"
  s=$(name $w $sp $dp $z)
  for m in "${LAYOUTS[@]}"; do
    read -r v vsp vdp vz <<< "$m"
    d=r_${s}_$(name $v $vsp $vdp $vz)
    cp -r s_$s $d
    run $v $vsp $vdp $vz train "${C[@]}" --set run_dir=$d --resume auto > $d.log 2>&1 ||
      { bad "$s -> $(name $v $vsp $vdp $vz): $(tail -3 $d.log)"; continue; }
    grep -q "resumed from $d/ckpt-2.h5 at step 2 (sample 24)" $d.log || bad "$d: $(grep resumed $d.log)"
  done
  a=$(loss3 r_${s}_$s)
  for m in "${LAYOUTS[@]}"; do
    read -r v vsp vdp vz <<< "$m"
    t=$(name $v $vsp $vdp $vz)
    [ "$t" = "$s" ] && continue
    b=$(loss3 r_${s}_$t)
    if awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-5 * a) }'; then
      ok "saved at $s, resumed at $t: step-3 loss $b (same layout: $a)"
    else
      bad "saved at $s, resumed at $t: loss $b vs $a"
    fi
  done
done
finish
