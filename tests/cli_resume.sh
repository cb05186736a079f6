#!/usr/bin/env bash
# Resume: 20 steps straight, or 10 + resume + 10, give identical losses and
# bitwise identical parameters and optimizer state.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set batch=4 --set warmup=3 --set log_every=100 --set ckpt_every=0)
"$MPL_BIN" train "${C[@]}" --set steps=20 --set run_dir=a > loga 2>&1 || bad "straight run: $(cat loga)"
"$MPL_BIN" train "${C[@]}" --set steps=20 --stop-after 10 --set run_dir=b > logb1 2>&1 || bad "first half: $(cat logb1)"
"$MPL_BIN" train "${C[@]}" --set steps=20 --set run_dir=b --resume auto > logb2 2>&1 || bad "resume: $(cat logb2)"
grep -q "resumed from b/ckpt-10.h5 at step 10" logb2 && ok "resumed at step 10" || bad "no resume message: $(cat logb2)"
if diff <(losses a/metrics.csv) <(losses b/metrics.csv) > /dev/null; then ok "identical losses"; else bad "losses differ"; diff <(losses a/metrics.csv) <(losses b/metrics.csv); fi
if h5diff -q a/ckpt-20.h5 b/ckpt-20.h5 /params /params && h5diff -q a/ckpt-20.h5 b/ckpt-20.h5 /optim /optim; then
  ok "bitwise identical parameters and AdamW state"
else
  bad "checkpoints differ"
fi
# auto with no checkpoint starts fresh and says so
"$MPL_BIN" train "${C[@]}" --set steps=4 --set run_dir=c --resume auto > logc 2>&1
grep -q "no checkpoint in c, starting fresh" logc && ok "auto starts fresh" || bad "auto fresh: $(cat logc)"
# a changed model shape is refused, naming the key
"$MPL_BIN" train "${C[@]}" --set steps=30 --set run_dir=b --set n_layer=3 --resume auto > logd 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "n_layer (saved 2, now 3)" logd && ok "shape change refused" || bad "shape change: exit $rc $(cat logd)"
finish
