#!/usr/bin/env bash
# Benchmarks with peer comparisons; results go to bench/results/ (git-ignored).
#   step   one training step (fwd + bwd + clip + AdamW) of multipole and of
#          the same model in PyTorch, on configs/tiny.ini and configs/small.ini
# bench/README.md describes what each measures and the CSV columns.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/bench.sh SUBCOMMAND [options]

subcommands:
  step    training-step time of multipole vs. the PyTorch peer
          (bench/peers/torch_step.py) on configs/tiny.ini and configs/small.ini;
          writes bench/results/step.csv

options (step):
  --steps N     timed steps per program and config (default 10)
  --warmup W    untimed steps before them (default 2)
  --threads T   threads for both programs (default: nproc)
  --no-deps     skip scripts/deps.sh --bench
  --no-build    skip scripts/build.sh (use the existing build/multipole)
  --help        show this help
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BIN=build/multipole
PY=/usr/bin/python3   # Debian's python3-torch lives here, not in a pyenv
RESULTS=bench/results
CSV_HEADER="config,backend,d_model,n_layer,n_head,seq_len,batch,threads,steps,median_ms,min_ms,max_ms,tok_per_s"

# data_row OUTPUT: the last line that is neither '#' nor the header row.
data_row() {
  printf '%s\n' "$1" | grep -v '^#' | grep -v '^config,' | tail -n 1
}

# tok_per_s ROW: the last CSV field.
tok_per_s() {
  printf '%s\n' "$1" | awk -F, 'NF > 1 { print $NF }'
}

bench_step() {
  local steps=10 warmup=2 threads do_deps=1 do_build=1
  threads=$(nproc 2>/dev/null || echo 1)
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --steps) steps=${2:?--steps needs a value}; shift ;;
      --warmup) warmup=${2:?--warmup needs a value}; shift ;;
      --threads) threads=${2:?--threads needs a value}; shift ;;
      --no-deps) do_deps=0 ;;
      --no-build) do_build=0 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh step: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done

  if [[ $do_deps -eq 1 ]]; then
    bash scripts/deps.sh --bench
  fi
  if [[ $do_build -eq 1 ]]; then
    bash scripts/build.sh
  fi
  mkdir -p "$RESULTS"

  local configs=(configs/tiny.ini configs/small.ini)
  local comments=() rows=() table=() failed=0
  comments+=("# scripts/bench.sh step: $(date -u +%Y-%m-%dT%H:%M:%SZ) host $(hostname)")
  comments+=("# threads $threads steps $steps warmup $warmup")

  local cfg out row_m row_t tm tt ratio
  for cfg in "${configs[@]}"; do
    echo
    echo "=== bench step: $cfg, multipole, $threads threads"
    row_m=""
    if out=$(OMP_NUM_THREADS=$threads "$BIN" bench step -c "$cfg" \
               --steps "$steps" --warmup "$warmup"); then
      printf '%s\n' "$out"
      mapfile -t -O "${#comments[@]}" comments < <(printf '%s\n' "$out" | grep '^#' || true)
      row_m=$(data_row "$out")
    else
      printf '%s\n' "$out"
      echo "bench.sh: multipole bench step failed on $cfg" >&2
      failed=1
    fi

    echo "=== bench step: $cfg, torch peer, $threads threads"
    row_t=""
    if out=$(OMP_NUM_THREADS=$threads "$PY" bench/peers/torch_step.py \
               --config "$cfg" --steps "$steps" --warmup "$warmup" \
               --threads "$threads"); then
      printf '%s\n' "$out"
      mapfile -t -O "${#comments[@]}" comments < <(printf '%s\n' "$out" | grep '^#' || true)
      row_t=$(data_row "$out")
    else
      printf '%s\n' "$out"
      echo "bench.sh: torch peer failed on $cfg" >&2
      failed=1
    fi

    [[ -n $row_m ]] && rows+=("$row_m")
    [[ -n $row_t ]] && rows+=("$row_t")
    tm=$(tok_per_s "$row_m"); tt=$(tok_per_s "$row_t")
    if [[ -n $tm && -n $tt ]]; then
      ratio=$(awk -v a="$tm" -v b="$tt" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
    else
      ratio=n/a
    fi
    table+=("$(printf '%-20s %14s %14s %10s' "$cfg" "${tm:-n/a}" "${tt:-n/a}" "$ratio")")
    comments+=("# ratio $cfg multipole/torch tok_per_s = $ratio")
  done

  {
    printf '%s\n' "${comments[@]}"
    echo "$CSV_HEADER"
    if [[ ${#rows[@]} -gt 0 ]]; then printf '%s\n' "${rows[@]}"; fi
  } > "$RESULTS/step.csv"

  echo
  echo "=== bench step: tokens/s ($threads threads; ratio = multipole / torch)"
  printf '%-20s %14s %14s %10s\n' config multipole torch ratio
  printf '%s\n' "${table[@]}"
  echo "results: $RESULTS/step.csv"
  return "$failed"
}

case "${1:-}" in
  step) shift; bench_step "$@" ;;
  -h|--help) usage ;;
  "") usage >&2; exit 2 ;;
  *) echo "bench.sh: unknown subcommand '$1'" >&2; usage >&2; exit 2 ;;
esac
