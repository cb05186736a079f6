#!/usr/bin/env bash
# Training output: plain progress lines every --log-every steps (and the
# first and last) with loss, tokens/s, MFU and ETA; a bar rewritten in place
# on a terminal; nothing but the essentials with --quiet; MFU in
# metrics.csv between 0 and 1, consistent with tok_per_s and peak_flops.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
T=("$MPL_BIN" train -c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=1
   --set seq_len=32 --set band=8 --set batch=2 --set steps=7 --set warmup=1 --set peak_flops=1e12)
MPL_PROGRESS=plain "${T[@]}" --set run_dir=a --log-every 3 > a.log 2>&1 || bad "train: $(cat a.log)"
steps=$(sed -n 's/^step \([0-9]*\)\/7 | loss [0-9.]* | lr .* | [0-9]* tok\/s | MFU [0-9.]*% | elapsed .* | eta .*/\1/p' a.log | tr '\n' ' ')
[ "$steps" = "1 3 6 7 " ] && ok "plain lines at steps $steps" || bad "plain progress: '$steps': $(cat a.log)"
grep -q "^MFU: .* model FLOPs per token .* peak of 1e+12 FLOP/s for 1 rank(s) (peak_flops per rank)" a.log &&
  ok "the header says how MFU is counted" || bad "MFU header: $(cat a.log)"
if awk -F, 'NR > 1 { fpt_mfu = $8 * 1e12 / $6; if (NR == 2) f = fpt_mfu;
     if ($8 <= 0 || $8 >= 1 || fpt_mfu < 0.999 * f || fpt_mfu > 1.001 * f) exit 1 } END { exit NR != 8 }' a/metrics.csv; then
  ok "mfu = tok_per_s x (one FLOPs-per-token constant) / peak_flops in every row"
else
  bad "mfu column: $(cat a/metrics.csv)"
fi
MPL_PROGRESS=tty "${T[@]}" --set run_dir=b > b.log 2>&1 || bad "train tty: $(cat b.log)"
if grep -q $'\r''step 7/7 \[#*\] 100% | loss [0-9.]* | [0-9.]*[kM]\? tok/s | MFU [0-9.]*% | eta 0:00' b.log &&
   grep -q $'\033\\[K' b.log; then
  ok "terminal: one line rewritten in place"
else
  bad "tty progress: $(od -c b.log | head -20)"
fi
"${T[@]}" --set run_dir=c --quiet > c.log 2>&1 || bad "train quiet: $(cat c.log)"
[ ! -s c.log ] && [ "$(wc -l < c/metrics.csv)" -eq 8 ] && ok "--quiet: no output, metrics.csv written" ||
  bad "quiet: $(cat c.log)"
finish
