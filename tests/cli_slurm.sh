#!/usr/bin/env bash
# scripts/slurm/train.sbatch outside SLURM: its syntax, and one job's life
# with stand-ins for srun (mpiexec -n 2) and scontrol (records its
# arguments): SIGUSR1 to the batch script, as `--signal=B:USR1@300` sends
# it, reaches both ranks, they checkpoint and exit 0, the script requeues
# the job; the requeued run resumes from that checkpoint and, finishing
# its steps, does not requeue.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
S="$MPL_SRC/scripts/slurm/train.sbatch"
bash -n "$S" && ok "bash -n train.sbatch" || bad "train.sbatch has syntax errors"
mkdir bin
cat > bin/srun <<SH
#!/usr/bin/env bash
while [ \$# -gt 0 ] && [ "\${1#--}" != "\$1" ]; do shift; done  # srun's own options
exec "$MPIEXEC" --oversubscribe -n 2 "\$@"
SH
cat > bin/scontrol <<SH
#!/usr/bin/env bash
echo "\$*" >> "$WORK/scontrol.log"
SH
chmod +x bin/srun bin/scontrol
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=("$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2 --set seq_len=32
   --set batch=4 --set warmup=2 --set log_every=1 --set ckpt_every=0 --set run_dir=j)
# env execs bash in the same process, so $! below is the batch script's
# pid, as SLURM's B: signal targets it
J=(env PATH="$WORK/bin:$PATH" SLURM_JOB_ID=42 SLURM_CPUS_PER_TASK=1 MPL_BIN="$MPL_BIN" bash "$S")
job() { "${J[@]}" "$@"; }

# steps bounded, so that a failing test leaves no run behind for long
"${J[@]}" "${C[@]}" --set steps=5000 > j1.log 2>&1 &
pid=$!
for _ in $(seq 300); do
  [ -f j/metrics.csv ] && [ "$(wc -l < j/metrics.csv)" -ge 4 ] && break
  sleep 0.1
done
kill -USR1 $pid
wait $pid
rc=$?
[ $rc -eq 0 ] && [ -f j/latest ] && grep -q "stopped after step" j1.log &&
  ok "SIGUSR1 to the job script: the 2 ranks stop with $(cat j/latest), exit 0" || bad "stop: rc=$rc $(tail -5 j1.log)"
[ "$(cat scontrol.log 2>/dev/null)" = "requeue 42" ] && ok "the job requeues itself" ||
  bad "scontrol calls: '$(cat scontrol.log 2>/dev/null)'"
step=$(sed 's/ckpt-\(.*\)\.h5/\1/' j/latest)
job "${C[@]}" --set steps=$((step + 2)) > j2.log 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "resumed from j/ckpt-$step.h5 at step $step" j2.log &&
  ok "the requeued job resumes at step $step and finishes" || bad "resume: rc=$rc $(tail -5 j2.log)"
[ "$(wc -l < scontrol.log)" -eq 1 ] && ok "a finished job does not requeue" || bad "requeued again: $(cat scontrol.log)"
job > u.log 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "usage: sbatch train.sbatch" u.log && ok "no config: usage, exit 2" || bad "usage: rc=$rc $(cat u.log)"
LAUNCHER=pdsh job "${C[@]}" > l.log 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "LAUNCHER must be srun or mpirun" l.log && ok "unknown launcher refused" || bad "launcher: rc=$rc $(cat l.log)"
finish
