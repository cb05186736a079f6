#!/usr/bin/env bash
# Crash injection: a run saving every 2 steps is killed (SIGKILL, through
# MPL_CKPT_CRASH) during its 2nd save at each phase; `--resume auto` then
# continues from a complete checkpoint (never a *.tmp) and the final
# parameters equal an uninterrupted run's bitwise. Also a full disk
# (MPL_CKPT_FAIL): the error is reported, the previous checkpoint and
# `latest` stay as they were.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set batch=4 --set warmup=2 --set log_every=100 --set ckpt_every=2
   --set steps=6)
"$MPL_BIN" train "${C[@]}" --set run_dir=ref_np1 > logref1 2>&1 || bad "reference run: $(cat logref1)"
"$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" train "${C[@]}" --set run_dir=ref_np2 > logref2 2>&1 ||
  bad "reference run np2: $(cat logref2)"

crash_case() { # phase np [MPL_CKPT_SERIAL value: the writer at np > 1]
  local phase=$1 np=$2 d=crash_$1_np$2${3:+_serial$3} run=("$MPL_BIN")
  [ "$np" -gt 1 ] && run=("$MPIEXEC" --oversubscribe -n "$np" -x MPL_CKPT_SERIAL="${3:-}" "$MPL_BIN")
  # (braces: bash's own "Killed" notice goes to /dev/null, not the log)
  { MPL_CKPT_CRASH=$phase@4 "${run[@]}" train "${C[@]}" --set run_dir=$d > $d.log1 2>&1; } 2>/dev/null
  local rc=$? ref=ref_np$np
  if [ $rc -eq 0 ] || ! grep -q "MPL_CKPT_CRASH: killing the process at $phase of step 4" $d.log1; then
    bad "$phase np$np: not killed (exit $rc): $(tail -3 $d.log1)"; return
  fi
  local want=2
  [ "$phase" = before_pointer ] && want=4
  grep -qx "ckpt-2.h5" $d/latest || bad "$phase np$np: latest is $(cat $d/latest)"
  "${run[@]}" train "${C[@]}" --set run_dir=$d --resume auto > $d.log2 2>&1 || { bad "$phase np$np: resume failed: $(cat $d.log2)"; return; }
  grep -q "resumed from $d/ckpt-$want.h5 at step $want" $d.log2 || bad "$phase np$np: resumed from the wrong file: $(grep resumed $d.log2)"
  if h5diff -q $ref/ckpt-6.h5 $d/ckpt-6.h5 /params /params && h5diff -q $ref/ckpt-6.h5 $d/ckpt-6.h5 /optim /optim; then
    ok "crash at $phase (np $np${3:+, MPL_CKPT_SERIAL=$3}): resumed from step $want, final state bitwise equal"
  else
    bad "crash at $phase (np $np${3:+, MPL_CKPT_SERIAL=$3}): final parameters differ"
  fi
}
for p in before_data mid_data before_rename before_pointer; do crash_case $p 1; done
crash_case mid_data 2 0   # the parallel (MPI-IO) writer, killed mid-collective
crash_case mid_data 2 1   # the serial writer (what one node uses by default)

# Full disk during the 2nd save: reported, ckpt-2 and `latest` untouched.
MPL_CKPT_FAIL=mid_data@4 "$MPL_BIN" train "${C[@]}" --set run_dir=full > full.log 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "multipole: error: cannot write full/ckpt-4.h5.*No space left on device" full.log &&
   grep -qx "ckpt-2.h5" full/latest && [ ! -e full/ckpt-4.h5 ] && [ ! -e full/ckpt-4.h5.tmp ] &&
   "$MPL_BIN" inspect full/ckpt-2.h5 --verify > full.verify 2>&1; then
  ok "full disk: error reported (exit $rc), ckpt-2.h5 verifies, latest unchanged, no temp left"
else
  bad "full disk: exit $rc: $(cat full.log) / latest=$(cat full/latest) / $(ls full)"
fi
# ... and the same with the parallel writer at 2 ranks.
MPL_CKPT_FAIL=before_data@4 "$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" train "${C[@]}" --set run_dir=full2 > full2.log 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "No space left on device" full2.log && grep -qx "ckpt-2.h5" full2/latest &&
   [ ! -e full2/ckpt-4.h5.tmp ] && "$MPL_BIN" inspect full2/ckpt-2.h5 --verify > /dev/null 2>&1; then
  ok "full disk at 2 ranks: reported, previous checkpoint intact"
else
  bad "full disk np2: exit $rc: $(cat full2.log)"
fi
finish
