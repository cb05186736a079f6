#!/usr/bin/env bash
# Sampling from a checkpoint: deterministic for a seed, prompt echoed,
# exactly the requested number of bytes.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
"$MPL_BIN" train -c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=1 \
  --set seq_len=32 --set batch=4 --set steps=5 --set warmup=1 --set run_dir=r > log 2>&1 || bad "train: $(cat log)"
S=("$MPL_BIN" sample --ckpt "r/$(cat r/latest)" --prompt "alpha " --tokens 40 --top-k 5 --temperature 0.9)
a=$("${S[@]}" --seed 3); b=$("${S[@]}" --seed 3); c=$("${S[@]}" --seed 4)
[ "$a" = "$b" ] && ok "same seed, same sample" || bad "same seed differs: '$a' vs '$b'"
[ "$a" != "$c" ] && ok "other seed, other sample" || bad "seeds 3 and 4 agree"
[[ "$a" == "alpha "* ]] && ok "prompt echoed" || bad "prompt not echoed: '$a'"
n=$("${S[@]}" --seed 3 | head -c -1 | wc -c)
[ "$n" -eq 46 ] && ok "46 bytes written" || bad "wrote $n bytes"
g=$("$MPL_BIN" sample --ckpt "r/$(cat r/latest)" --prompt "x" --tokens 10 --temperature 0)
[ -n "$g" ] && ok "greedy" || bad "greedy empty"
finish
