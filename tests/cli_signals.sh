#!/usr/bin/env bash
# SIGTERM / SIGUSR1 (what SLURM sends before a time limit) stop training at
# the next step boundary with a checkpoint and exit 0, and --resume auto
# continues; ckpt_every_minutes saves on the wall clock.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set batch=4 --set warmup=2 --set log_every=1 --set ckpt_every=0)

# wait_steps DIR N: until DIR/metrics.csv has N data rows (30 s at most)
wait_steps() {
  for _ in $(seq 300); do
    [ -f "$1/metrics.csv" ] && [ "$(($(wc -l < "$1/metrics.csv") - 1))" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

for sig in TERM USR1; do
  "$MPL_BIN" train "${C[@]}" --set steps=100000 --set run_dir=s$sig > s$sig.log 2>&1 &
  pid=$!
  wait_steps s$sig 3 || bad "SIG$sig: training did not start: $(cat s$sig.log)"
  kill -$sig $pid
  wait $pid
  rc=$?
  n=$(ls s$sig/ckpt-*.h5 2>/dev/null | wc -l)
  if [ $rc -eq 0 ] && [ "$n" -eq 1 ] && grep -q "stopped after step" s$sig.log; then
    ok "SIG$sig: exit 0 with one checkpoint ($(cat s$sig/latest))"
  else
    bad "SIG$sig: exit $rc, $n checkpoints: $(tail -3 s$sig.log)"
  fi
  step=$(cat s$sig/latest | sed 's/ckpt-\(.*\)\.h5/\1/')
  "$MPL_BIN" train "${C[@]}" --set steps=$((step + 2)) --set run_dir=s$sig --resume auto > r$sig.log 2>&1
  grep -q "resumed from s$sig/ckpt-$step.h5 at step $step" r$sig.log && ok "SIG$sig: resumed at step $step" || bad "SIG$sig resume: $(cat r$sig.log)"
done

# Two ranks: mpiexec forwards SIGUSR1 to both; they agree on the step.
"$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" train "${C[@]}" --set steps=100000 --set run_dir=m > m.log 2>&1 &
pid=$!
wait_steps m 3 || bad "2 ranks: training did not start: $(cat m.log)"
kill -USR1 $pid
wait $pid
rc=$?
[ $rc -eq 0 ] && [ -f m/latest ] && ok "2 ranks, SIGUSR1 to mpiexec: exit 0, $(cat m/latest)" || bad "2 ranks: exit $rc: $(tail -5 m.log)"

# The wall clock: a checkpoint after every step when the period is tiny.
"$MPL_BIN" train "${C[@]}" --set steps=5 --set ckpt_every_minutes=1e-6 --set keep_ckpts=10 --set run_dir=t > t.log 2>&1
n=$(ls t/ckpt-*.h5 2>/dev/null | wc -l)
[ "$n" -eq 5 ] && ok "ckpt_every_minutes: 5 checkpoints in 5 steps" || bad "ckpt_every_minutes: $n checkpoints"
finish
