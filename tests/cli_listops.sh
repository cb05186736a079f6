#!/usr/bin/env bash
# Classification end to end on a small ListOps (trees of 16-127 tokens):
# prepare, train a classifier (accuracy above the majority class), eval on
# the test split at 1 and 3 ranks (the same accuracy), train split over 3
# ranks, and the bad setups refused with a clear message.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
"$MPL_BIN" prepare listops --out lo.h5 --train 3000 --val 300 --test 300 --min-tokens 16 \
  --max-tokens 127 --quiet || bad "prepare listops"
C=(-c "$MPL_SRC/configs/listops-dense.ini" --set data=lo.h5 --set seq_len=128 --set batch=16
   --set d_model=32 --set lr=3e-3 --set min_lr=3e-4 --set warmup=30 --set log_every=100
   --set ckpt_every=0)
"$MPL_BIN" train "${C[@]}" --set steps=300 --set eval_every=100 --set run_dir=a > loga 2>&1 ||
  bad "train: $(tail -3 loga)"
# the most common test label's share
major=$(h5dump -y -w 0 -d /test/labels lo.h5 | sed -n '/DATA {/,/}/p' | tr -cs '0-9' '\n' | grep . |
        sort | uniq -c | sort -rn | awk 'NR == 1 { m = $1 } { n += $1 } END { printf "%.4f", m / n }')
"$MPL_BIN" eval --ckpt a --split test --quiet > e1 2>&1 || bad "eval: $(cat e1)"
acc1=$(sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' e1)
if awk -v a="$acc1" -v m="$major" 'BEGIN { exit !(a != "" && a >= m + 0.03) }'; then
  ok "test accuracy $acc1 above the majority class $major"
else
  bad "test accuracy ${acc1:-?} vs majority $major: $(cat e1)"
fi
grep -q "val_acc" a/metrics.csv && tail -1 a/metrics.csv | grep -q ',0\.[0-9]*$' &&
  ok "metrics.csv logs val_acc" || bad "no val_acc in metrics.csv: $(tail -1 a/metrics.csv)"
acc_of() { sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' "$1"; }
"$MPIEXEC" --oversubscribe -n 3 "$MPL_BIN" eval --ckpt a --split test --quiet > e3 2>&1 ||
  bad "eval at 3 ranks: $(cat e3)"
[ "$(acc_of e3)" = "$acc1" ] && ok "eval over 3 data-parallel ranks: accuracy $acc1" ||
  bad "eval at dp=3: $(acc_of e3) vs $acc1"
for attn in fmm combiner_fixed; do
  "$MPIEXEC" --oversubscribe -n 3 "$MPL_BIN" train "${C[@]}" --set attn=$attn --set sp=3 \
    --set steps=20 --set warmup=2 --set run_dir=s_$attn > log_$attn 2>&1 &&
    ok "$attn classifier trains split over 3 ranks" || bad "$attn sp=3: $(tail -3 log_$attn)"
  "$MPL_BIN" eval --ckpt s_$attn --split val --quiet > f1 2>&1
  "$MPIEXEC" --oversubscribe -n 3 "$MPL_BIN" eval --ckpt s_$attn --split val --sp 3 --quiet > f3 2>&1
  [ -n "$(acc_of f1)" ] && [ "$(acc_of f1)" = "$(acc_of f3)" ] &&
    ok "$attn: eval at sp=3 equals one rank (accuracy $(acc_of f1))" ||
    bad "$attn eval sp=3: $(cat f3) vs $(cat f1)"
done
# refused before any work
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out text.h5 > /dev/null
check_refused() { # expected-fragment args...
  local frag=$1; shift
  "$MPL_BIN" train "$@" > log_bad 2>&1
  local rc=$?
  [ $rc -eq 2 ] && grep -q "$frag" log_bad && ok "refused: $frag" || bad "$frag: exit $rc $(cat log_bad)"
}
check_refused "needs a classification file" "${C[@]}" --set data=text.h5 --set run_dir=b
check_refused "set causal=0" "${C[@]}" --set causal=1 --set run_dir=b
check_refused "set seq_len=128" "${C[@]}" --set seq_len=2000 --set run_dir=b
check_refused "has 10 classes but n_classes=4" "${C[@]}" --set n_classes=4 --set run_dir=b
finish
