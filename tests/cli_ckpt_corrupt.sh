#!/usr/bin/env bash
# Damaged checkpoints: a flipped byte in the tensor data, a truncated file,
# an empty file and a token (data) file given as checkpoint are each refused
# by `train --resume PATH` with one error naming the file (exit 2) and by
# `inspect --verify` (exit 2); `--resume auto` skips a damaged newest file
# with a warning, never loads a *.tmp, and continues from the one before.
# The stock h5dump reads every dataset of a good checkpoint (the chunks we
# checksum ourselves pass HDF5's Fletcher32 filter) and HDF5's own filter
# refuses the flipped byte.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set batch=4 --set warmup=2 --set log_every=100 --set ckpt_every=2)
"$MPL_BIN" train "${C[@]}" --set steps=6 --set run_dir=ref > logref 2>&1 || bad "reference: $(cat logref)"
"$MPL_BIN" train "${C[@]}" --set steps=4 --set run_dir=r > logr 2>&1 || bad "run: $(cat logr)"
"$MPL_BIN" inspect r/ckpt-4.h5 --verify > v.log 2>&1 && grep -q "/optim/v checksum .* OK" v.log &&
  ok "inspect --verify of a good checkpoint" || bad "verify good: $(cat v.log)"

# flip one byte inside the raw data of /params/blk0.mlp.w1 (16 KiB): find
# where its first 8 bytes lie in the file, then flip a byte 1000 further.
flip() { # src dst
  cp "$1" "$2"
  h5dump -d /params/blk0.mlp.w1 -b LE -o w1.bin "$1" > /dev/null
  local pat=$(head -c 8 w1.bin | od -An -tx1 | tr -s ' ' | sed 's/ /\\x/g')
  local off=$(( $(LC_ALL=C grep -obUaP "$pat" "$2" | head -1 | cut -d: -f1) + 1000 ))
  local b=$(od -An -tu1 -j $off -N1 "$2" | tr -d ' ')
  printf "$(printf '\\%03o' $(( b ^ 255 )))" | dd of="$2" bs=1 seek=$off conv=notrunc status=none
  cmp -s "$1" "$2" && bad "flip: file unchanged"
}
flip r/ckpt-4.h5 flipped.h5
if h5dump r/ckpt-4.h5 > dump.txt 2> dump.err && grep -q 'DATASET "blk0.mlp.w1"' dump.txt; then
  ok "h5dump reads every dataset of a checkpoint (HDF5's Fletcher32 check passes)"
else
  bad "h5dump of a good checkpoint: $(head -c 500 dump.err)"
fi
h5dump --enable-error-stack -d /params/blk0.mlp.w1 flipped.h5 > /dev/null 2> flip.err
rc=$?
[ $rc -ne 0 ] && grep -q "data error detected by Fletcher32 checksum" flip.err &&
  ok "h5dump refuses the flipped byte: HDF5's Fletcher32 filter detects it" ||
  bad "h5dump of the flipped file: exit $rc $(head -c 500 flip.err)"
head -c $(( $(stat -c %s r/ckpt-4.h5) * 2 / 3 )) r/ckpt-4.h5 > truncated.h5
: > empty.h5
for f in flipped.h5 truncated.h5 empty.h5 data.h5; do
  "$MPL_BIN" train "${C[@]}" --set steps=6 --set run_dir=x --resume $f > t.log 2>&1
  rc=$?
  n=$(grep -c "multipole: error:" t.log)
  if [ $rc -eq 2 ] && [ "$n" -eq 1 ] && grep -q "multipole: error: .*$f" t.log; then
    ok "--resume $f refused: $(grep 'error:' t.log)"
  else
    bad "--resume $f: exit $rc, $n errors: $(cat t.log)"
  fi
  "$MPL_BIN" inspect $f --verify > i.log 2>&1
  rc=$?
  [ $rc -eq 2 ] && grep -q "error: .*$f" i.log && ok "inspect --verify $f: exit 2" || bad "verify $f: exit $rc $(cat i.log)"
done

# auto: newest corrupt -> warning, resume from ckpt-2, same final state;
# a complete-looking ckpt-8.h5.tmp is never considered.
cp -r r a
cp flipped.h5 a/ckpt-4.h5
cp r/ckpt-4.h5 a/ckpt-8.h5.tmp
"$MPL_BIN" train "${C[@]}" --set steps=6 --set run_dir=a --resume auto > a.log 2>&1 || bad "auto fallback: $(cat a.log)"
if grep -q "warning: skipping checkpoint a/ckpt-4.h5: .*a/ckpt-4.h5" a.log &&
   grep -q "resumed from a/ckpt-2.h5 at step 2" a.log &&
   h5diff -q ref/ckpt-6.h5 a/ckpt-6.h5 /params /params; then
  ok "auto skips a flipped newest checkpoint with a warning, final params equal"
else
  bad "auto fallback (flipped): $(cat a.log)"
fi
cp -r r b
cp truncated.h5 b/ckpt-4.h5
"$MPL_BIN" train "${C[@]}" --set steps=6 --set run_dir=b --resume auto > b.log 2>&1
grep -q "warning: skipping checkpoint b/ckpt-4.h5" b.log && grep -q "resumed from b/ckpt-2.h5" b.log &&
  ok "auto skips a truncated newest checkpoint" || bad "auto fallback (truncated): $(cat b.log)"
# every candidate bad: a clear error, not a fresh start
mkdir -p c && cp empty.h5 c/ckpt-2.h5 && cp data.h5 c/ckpt-4.h5
"$MPL_BIN" train "${C[@]}" --set steps=6 --set run_dir=c --resume auto > c.log 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "none of the 2 checkpoint(s) in c is usable" c.log && grep -q "not a multipole checkpoint" c.log &&
  ok "auto with only bad checkpoints: exit 2" || bad "all bad: exit $rc $(cat c.log)"
finish
