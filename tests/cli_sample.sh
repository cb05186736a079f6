#!/usr/bin/env bash
# Sampling from a checkpoint: deterministic for a seed (also with top-p),
# prompt echoed, exactly the requested number of bytes; top-k 1 and a tiny
# top-p are greedy at any temperature; --prompt-file equals --prompt; a run
# directory or its `latest` file names the newest checkpoint.
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
G=("$MPL_BIN" sample --ckpt "r/$(cat r/latest)" --prompt "alpha " --tokens 40)
g=$("${G[@]}" --temperature 0)
[ "$(printf %s "$g" | wc -c)" -eq 46 ] && ok "greedy" || bad "greedy: '$g'"
k1=$("${G[@]}" --top-k 1 --temperature 1.7 --seed 5)
[ "$k1" = "$g" ] && ok "top-k 1 is greedy" || bad "top-k 1 '$k1' vs greedy '$g'"
p0=$("${G[@]}" --top-k 0 --top-p 1e-9 --temperature 1.3 --seed 6)
[ "$p0" = "$g" ] && ok "a tiny top-p is greedy" || bad "top-p 1e-9 '$p0' vs greedy '$g'"
P=("${G[@]}" --top-k 0 --top-p 0.9 --temperature 1.2)
p1=$("${P[@]}" --seed 7); p2=$("${P[@]}" --seed 7); p3=$("${P[@]}" --seed 8)
[ "$p1" = "$p2" ] && [ "$p1" != "$p3" ] && ok "top-p: same seed same text, other seed other text" ||
  bad "top-p: '$p1' '$p2' '$p3'"
printf 'alpha ' > prompt.txt
f=$("$MPL_BIN" sample --ckpt r --prompt-file prompt.txt --tokens 40 --top-k 5 --temperature 0.9 --seed 3)
[ "$f" = "$a" ] && ok "--prompt-file and a run directory give the same sample" || bad "prompt file: '$f' vs '$a'"
l=$("$MPL_BIN" sample --ckpt r/latest --prompt "alpha " --tokens 40 --top-k 5 --temperature 0.9 --seed 3)
[ "$l" = "$a" ] && ok "r/latest names the checkpoint" || bad "latest: '$l' vs '$a'"
finish
