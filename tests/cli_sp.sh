#!/usr/bin/env bash
# Sequence parallelism through the command: the same run at sp = 1 and at
# sp = 2 and 3 (each rank reading only its chunk of every window) gives the
# same loss curve; sp = 2 x dp = 2 too.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
for attn in ${SP_KINDS:-fmm combiner_fixed combiner_logsparse}; do
  C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
     --set seq_len=41 --set band=16 --set segment=6 --set attn=$attn --set steps=8 --set warmup=2
     --set log_every=100 --set batch=4)
  "$MPIEXEC" --oversubscribe -n 1 "$MPL_BIN" train "${C[@]}" --set run_dir=$attn-1 > $attn-1.log 2>&1 || bad "$attn sp=1: $(cat $attn-1.log)"
  for layout in "2 2 1" "3 3 1" "4 2 2"; do
    read -r np sp dp <<< "$layout"
    r=$attn-np$np-sp$sp
    "$MPIEXEC" --oversubscribe -n "$np" "$MPL_BIN" train "${C[@]}" --set sp=$sp --set dp=$dp \
      --set batch=$((4 / dp)) --set run_dir=$r > $r.log 2>&1 || bad "$r: $(cat $r.log)"
    if paste -d' ' <(losses $attn-1/metrics.csv) <(losses $r/metrics.csv) |
       awk 'NF != 2 { exit 1 } { d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) exit 1; n++ } END { exit n != 8 }'; then
      ok "$attn: sp=$sp dp=$dp on $np ranks gives the sp=1 loss curve"
    else
      bad "$attn sp=$sp dp=$dp differs:"; paste -d' ' <(losses $attn-1/metrics.csv) <(losses $r/metrics.csv)
    fi
  done
done
finish
