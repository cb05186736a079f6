#!/usr/bin/env bash
# Data parallelism: the same global batch gives the same losses at 1 and 2
# ranks (fp32 reassociation of the gradient sum only).
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=2
   --set seq_len=32 --set steps=12 --set warmup=2 --set log_every=100)
"$MPIEXEC" --oversubscribe -n 1 "$MPL_BIN" train "${C[@]}" --set batch=4 --set run_dir=r1 > log1 2>&1 || bad "np 1 run failed: $(cat log1)"
"$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" train "${C[@]}" --set batch=2 --set run_dir=r2 > log2 2>&1 || bad "np 2 run failed: $(cat log2)"
if paste -d' ' <(losses r1/metrics.csv) <(losses r2/metrics.csv) |
   awk 'NF != 2 { exit 1 } { d = $1 - $2; if (d < 0) d = -d; if (d > 2e-4 * ($1 > 1 ? $1 : 1)) exit 1; n++ } END { exit n != 12 }'; then
  ok "np1 batch 4 == np2 batch 2 over 12 steps"
else
  bad "losses differ:"; paste -d' ' <(losses r1/metrics.csv) <(losses r2/metrics.csv)
fi
# The gradient all-reduce in buckets overlapped with the backward
# (grad_overlap = 1, the default above) and as one call after it: the same
# sums of the same two contributions, so the same losses and parameters
# bit for bit (a sum of two floats does not depend on the grouping).
"$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" train "${C[@]}" --set batch=2 --set grad_overlap=0 --set run_dir=r4 > log4 2>&1 || bad "np 2 grad_overlap=0 run failed: $(cat log4)"
if [ -n "$(losses r2/metrics.csv)" ] && [ "$(losses r2/metrics.csv)" = "$(losses r4/metrics.csv)" ] &&
   h5diff -q r2/ckpt-12.h5 r4/ckpt-12.h5 /params /params; then
  ok "grad_overlap 1 and 0: identical losses and parameters at np 2"
else
  bad "grad_overlap changes the result:"; paste -d' ' <(losses r2/metrics.csv) <(losses r4/metrics.csv)
fi
# Different data would give different losses: the comparison can fail.
"$MPIEXEC" --oversubscribe -n 1 "$MPL_BIN" train "${C[@]}" --set batch=4 --set seed=9 --set run_dir=r3 > log3 2>&1
if [ "$(losses r3/metrics.csv | sed -n 5p)" != "$(losses r1/metrics.csv | sed -n 5p)" ]; then ok "another seed differs"; else bad "another seed gives the same loss"; fi
finish
