#!/usr/bin/env bash
# `multipole eval`: the same loss at 1 and 3 ranks (one window over 3 ranks,
# or 3 data-parallel groups), equal to the val_loss training logged at its
# last step (eval_every), bits and perplexity consistent with the loss, a
# different --len, a window limit, eval_every in metrics.csv, and
# `multipole plot` of the run (and of a metrics.csv of the older format).
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 --val-fraction 0.05 > /dev/null
"$MPL_BIN" train -c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2 \
  --set seq_len=40 --set band=8 --set batch=4 --set steps=12 --set warmup=2 --set run_dir=r \
  --set eval_every=5 --set peak_flops=1e9 --quiet > log 2>&1 || bad "train: $(cat log)"
# val_loss at steps 5, 10 and 12 (the last), empty elsewhere
vals=$(awk -F, 'NR > 1 && $9 != "" { printf "%s ", $1 }' r/metrics.csv)
[ "$vals" = "5 10 12 " ] && ok "eval_every=5 logged val_loss at steps $vals" || bad "val_loss at steps '$vals'"
want=$(awk -F, '$1 == 12 { print $9 }' r/metrics.csv)
E=("$MPL_BIN" eval --ckpt r --quiet)
loss_of() { sed -n 's/^loss \([0-9.]*\) nats.*/\1/p' <<< "$1"; }
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 2e-6 * a) }'; }
o1=$("${E[@]}")
l1=$(loss_of "$o1")
close "$l1" "$want" && ok "eval loss $l1 = training's last val_loss $want" || bad "eval '$o1' vs val_loss $want"
if awk -v line="$o1" 'BEGIN { split(line, f, " "); l = f[2]; b = f[5]; bb = f[8]; p = f[12];
     exit !(b - l / log(2) < 1e-5 && l / log(2) - b < 1e-5 && bb == b && (p - exp(l)) / p < 1e-4 && (exp(l) - p) / p < 1e-4) }'; then
  ok "bits/token = loss / ln 2 = bits/byte (bytes), perplexity = e^loss: $o1"
else
  bad "derived numbers: $o1"
fi
for lay in "--sp 3" ""; do
  o3=$(timeout 120 "$MPIEXEC" --oversubscribe -n 3 "${E[@]}" $lay 2>&1)
  close "$(loss_of "$o3")" "$l1" && ok "3 ranks ${lay:-dp=3}: $(loss_of "$o3")" || bad "3 ranks $lay: '$o3' vs $l1"
done
o=$("$MPL_BIN" eval --ckpt r/latest --len 80 --batch 2)
n=$(sed -n 's/.*: \([0-9]*\) tokens in \([0-9]*\) windows of 80.*/\1 \2/p' <<< "$o")
v=$("$MPL_BIN" inspect data.h5 | sed -n 's/^n_val_tokens: *//p')
[ "$n" = "$((v - 1)) $(( (v - 1 + 79) / 80 ))" ] && ok "--len 80: every val token but the first scored ($n)" || bad "--len 80: '$o' (val $v)"
o=$("${E[@]}" --max-windows 2 --split train)
[ -n "$(loss_of "$o")" ] && ok "--split train --max-windows 2: $o" || bad "train split: $o"
png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' ')" = "89504e470d0a1a0a" ] && [ "$(stat -c %s "$1")" -gt 10000 ]; }
o=$("$MPL_BIN" plot r 2>&1)
png r/loss.png && png r/throughput.png && ok "plot: $o" || bad "plot: $o"
mkdir old && cut -d, -f1-7 r/metrics.csv > old/metrics.csv
o=$("$MPL_BIN" plot old --out . 2>&1)
png loss.png && png throughput.png && ok "plot of a 7-column metrics.csv: $o" || bad "old plot: $o"
finish
