#!/usr/bin/env bash
# Non-finite steps (injected with the debug_nan_* keys) at world sizes 1 and
# 3 (one sequence split over 3 ranks), the NaN made on each rank in turn:
#  * nan_policy=skip: the step is logged and counted (metrics.csv `bad`), no
#    update happens (the parameters after steps 1, 2 and a skipped 3 equal
#    those after steps 1 and 2 of a clean run, bit for bit: constant lr), the
#    run ends normally, and the warning names the block and the rank;
#  * nan_policy=abort: exit 1 with one error line naming the block and rank,
#    the periodic checkpoint of the last good step is kept, not rewritten,
#    and nothing newer is written;
#  * max_bad_steps consecutive bad steps (NaN in backward) end a skip run,
#    saving the last good state, the error naming the gradient; a periodic
#    checkpoint written at a skipped step (it holds the good parameters) is
#    kept as that state instead.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=3
   --set seq_len=36 --set band=8 --set batch=2 --set warmup=0 --set lr=1e-3 --set min_lr=1e-3
   --set peak_flops=1e9 --set log_every=100)

same_params() { h5diff -q "$1" "$2" /params /params > /dev/null 2>&1; }

# bg NP NAME ARGS...: train at NP ranks into run dir NAME (log NAME.log,
# exit code NAME.rc) in the background; at most 6 at a time.
bg() {
  local np=$1 d=$2
  shift 2
  ( timeout 120 "$MPIEXEC" --oversubscribe -n $np "$MPL_BIN" train "${C[@]}" --set sp=$np \
      --set run_dir=$d "$@" > $d.log 2>&1 < /dev/null; echo $? > $d.rc ) &
  while [ "$(jobs -rp | wc -l)" -ge 6 ]; do wait -n; done
}
for np in 1 3; do
  bg $np ref$np --set steps=6 --stop-after 2
  for r in $(seq 0 $((np - 1))); do
    bg $np skip$np.$r --set steps=3 --set debug_nan_step=3 --set debug_nan_rank=$r --set debug_nan_layer=1
  done
  bg $np abort$np --set steps=6 --set ckpt_every=2 --set nan_policy=abort --set debug_nan_step=3 \
    --set debug_nan_rank=$((np - 1)) --set debug_nan_layer=2
  bg $np many$np --set steps=8 --set max_bad_steps=2 --set debug_nan_step=2 --set debug_nan_steps=4 \
    --set debug_nan_grad=1 --set debug_nan_layer=1
done
# a periodic save during the bad run (step 2, parameters of step 1) stays the newest
bg 1 late1 --set steps=8 --set max_bad_steps=2 --set ckpt_every=2 --set keep_ckpts=1 \
  --set debug_nan_step=2 --set debug_nan_steps=4
wait

for np in 1 3; do
  [ "$(cat ref$np.rc)" -eq 0 ] || bad "np$np reference: $(cat ref$np.log)"
  for r in $(seq 0 $((np - 1))); do
    d=skip$np.$r
    rc=$(cat $d.rc)
    row=$(awk -F, '$1 == 3 { print $3 "," $10 }' $d/metrics.csv)
    if [ $rc -eq 0 ] && [ "$row" = "nan,1" ] && same_params ref$np/ckpt-2.h5 $d/ckpt-3.h5 &&
       grep -q "warning: step 3: .*update skipped (1 in a row, 1 in all.*output of block 1's attention (attn=fmm), on rank $r" $d.log; then
      ok "np$np NaN on rank $r, skip: step 3 logged ($row), no update, named block 1 and rank $r"
    else
      bad "np$np NaN on rank $r, skip: exit $rc, row '$row', $(cat $d.log)"
    fi
  done
  r=$((np - 1))
  d=abort$np
  rc=$(cat $d.rc)
  n_err=$(grep -c "multipole: error:" $d.log)
  n_saves=$(grep -c "checkpoint $d/ckpt-2.h5" $d.log)
  if [ $rc -eq 1 ] && [ "$n_err" -eq 1 ] && [ "$n_saves" -eq 1 ] &&
     grep -q "error: step 3: the loss is nan.*output of block 2's attention (attn=fmm), on rank $r.*nan_policy=abort.*last good state is $d/ckpt-2.h5" $d.log &&
     grep -qx "ckpt-2.h5" $d/latest && [ ! -e $d/ckpt-3.h5 ] && same_params ref$np/ckpt-2.h5 $d/ckpt-2.h5; then
    ok "np$np NaN on rank $r, abort: exit 1, one error line, ckpt-2 kept as saved"
  else
    bad "np$np abort: exit $rc, $n_err error lines, $n_saves saves of ckpt-2: $(cat $d.log)"
  fi
  d=many$np
  rc=$(cat $d.rc)
  if [ $rc -eq 1 ] && [ "$(grep -c "multipole: error:" $d.log)" -eq 1 ] &&
     grep -q "warning: step 2: .*(1 in a row" $d.log &&
     grep -q "error: step 3: the gradient norm is nan.*gradient of blk1.attn.wqkv.*2 bad step(s) in a row.*last good state is $d/ckpt-1.h5" $d.log &&
     grep -qx "ckpt-1.h5" $d/latest && [ "$(ls $d/ckpt-*.h5 | wc -l)" -eq 1 ]; then
    ok "np$np two bad steps in a row (backward NaN): exit 1, ckpt-1 saved as the last good state"
  else
    bad "np$np max_bad_steps: exit $rc: $(cat $d.log)"
  fi
done
d=late1
rc=$(cat $d.rc)
if [ $rc -eq 1 ] && grep -q "last good state is $d/ckpt-2.h5 (the parameters after step 1)" $d.log &&
   grep -qx "ckpt-2.h5" $d/latest && [ "$(ls $d/ckpt-*.h5)" = "$d/ckpt-2.h5" ]; then
  ok "np1 a checkpoint saved at a skipped step is kept as the last good state"
else
  bad "np1 late: exit $rc: $(cat $d.log); $(ls $d)"
fi
finish
