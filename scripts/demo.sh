#!/usr/bin/env bash
# The README's demo: build, turn the fortune(6) cookie files into an HDF5
# token file, train the tiny config on 2 MPI ranks for the first half of its
# 600 steps, resume from the checkpoint for the second half, inspect the
# checkpoint, sample from it, score it on the whole validation split and
# plot the run.
# Everything it writes (data/, run/demo/) is relative to the repo root and
# git-ignored; rerunning starts the run over.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/demo.sh [--no-deps] [--help]

Installs dependencies, builds, prepares data/fortunes.h5 from
/usr/share/games/fortunes, trains configs/tiny.ini on 2 ranks (300 of 600
steps, then resumed to 600), inspects the checkpoint, samples 200 bytes,
evaluates it on the validation split and plots run/demo/{loss,throughput}.png.

  --no-deps   skip scripts/deps.sh
  --help      show this help
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DO_DEPS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-deps) DO_DEPS=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
BIN=build/multipole
MPIRUN=(mpirun --oversubscribe)
FORTUNES=/usr/share/games/fortunes
DATA=data/fortunes.h5
RUN_DIR=run/demo

step() { echo; echo "=== demo: $*"; }

if [[ $DO_DEPS -eq 1 ]]; then
  step "installing dependencies"
  bash scripts/deps.sh
fi

step "building"
bash scripts/build.sh

step "preparing $DATA from $FORTUNES"
# The text files only: regular files (symlinks such as *.u8 are skipped, they
# point at the same texts) that are not the strfile(1) *.dat indexes.
if [[ ! -d $FORTUNES ]]; then
  echo "demo.sh: $FORTUNES not found (Debian package 'fortunes')" >&2
  exit 1
fi
mapfile -d '' INPUTS < <(find "$FORTUNES" -type f ! -name '*.dat' -print0 | sort -z)
if [[ ${#INPUTS[@]} -eq 0 ]]; then
  echo "demo.sh: no text files in $FORTUNES" >&2
  exit 1
fi
echo "${#INPUTS[@]} files"
mkdir -p "$(dirname "$DATA")"
rm -f "$DATA"
"$BIN" prepare --in "${INPUTS[@]}" --out "$DATA" --val-fraction 0.02

step "inspecting $DATA"
"$BIN" inspect "$DATA"

# Sequence parallelism: each of the 2 ranks holds half of every sequence
# (sp=2); FMM attention moves only a halo of band-1 rows and the far-field
# statistics between them.
TRAIN=(-c configs/tiny.ini --set "data=$DATA" --set "run_dir=$RUN_DIR"
       --set steps=600 --set sp=2 --set ckpt_every=100 --set eval_every=100
       --set eval_windows=32)

step "training the first 300 of 600 steps on 2 ranks (a job that ends early)"
rm -rf "$RUN_DIR"
OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np 2 -x OMP_NUM_THREADS "$BIN" train \
  "${TRAIN[@]}" --stop-after 300

step "resuming from the newest checkpoint to step 600"
OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np 2 -x OMP_NUM_THREADS "$BIN" train \
  "${TRAIN[@]}" --resume auto

# run/demo/latest holds the file name of the newest checkpoint.
if [[ ! -s $RUN_DIR/latest ]]; then
  echo "demo.sh: $RUN_DIR/latest is missing: no checkpoint was written" >&2
  exit 1
fi
LATEST=$(head -n 1 "$RUN_DIR/latest")
if [[ $LATEST != /* ]]; then
  LATEST=$RUN_DIR/$LATEST
fi

step "inspecting $LATEST"
"$BIN" inspect "$LATEST"

step "sampling 200 bytes from $LATEST"
"$BIN" sample --ckpt "$LATEST" --prompt "Q: " --tokens 200 \
  --temperature 0.8 --top-k 40 --seed 1

step "validation loss of $LATEST over the whole /val split, each window over 2 ranks"
OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np 2 -x OMP_NUM_THREADS "$BIN" eval --ckpt "$RUN_DIR" --sp 2

step "plotting $RUN_DIR/metrics.csv"
"$BIN" plot "$RUN_DIR"
echo
echo "=== demo: done (data: $DATA, run: $RUN_DIR, plots: $RUN_DIR/loss.png, $RUN_DIR/throughput.png)"
