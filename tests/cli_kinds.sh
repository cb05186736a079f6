#!/usr/bin/env bash
# Every attention mechanism trains a tiny byte-level LM on real text (the
# demo corpus, Debian's fortunes) and its loss falls well below the start.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
src=/usr/share/games/fortunes/fortunes
if [ ! -s "$src" ]; then
  bad "$src is missing: scripts/deps.sh installs the fortunes package"
  finish
  exit
fi
"$MPL_BIN" prepare --quiet --in "$src" --out data.h5 > /dev/null
for attn in dense fmm combiner_fixed combiner_logsparse; do
  "$MPL_BIN" train -c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set attn=$attn \
    --set d_model=64 --set n_layer=2 --set seq_len=128 --set band=16 --set batch=4 \
    --set steps=60 --set warmup=10 --set lr=5e-3 --set run_dir=$attn > $attn.log 2>&1 || bad "$attn: $(tail -3 $attn.log)"
  first=$(losses $attn/metrics.csv | head -1)
  last=$(losses $attn/metrics.csv | tail -10 | awk '{ s += $1 } END { printf "%.4f", s / NR }')
  if awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 5 && l < f - 2.0) }'; then
    ok "$attn: loss $first -> $last (mean of the last 10 of 60 steps)"
  else
    bad "$attn: loss $first -> $last did not fall by 2 nats"
  fi
done
finish
