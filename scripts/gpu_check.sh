#!/usr/bin/env bash
# Everything a session on a GPU machine should run, in one command, with one
# PASS/FAIL line per phase and the logs in $OUT (the device runner's output
# folder) or gpu-check/:
#   env        the GPU, driver, toolkit, compute-sanitizer, torch
#   build      scripts/build.sh -- -DMPL_CUDA=ON   (skipped with --no-build or --bundle)
#   libs       every shared library of the binaries resolves
#   gpu-tests  the GPU tests (kernels, attention, model, 200-step training);
#              a skip counts as a failure here: a GPU is expected
#   smoke      prepare -> train 2 steps on the GPU -> resume 1 step on the CPU
#              -> sample on the CPU (checkpoints cross devices)
#   sanitizer  compute-sanitizer memcheck, racecheck and initcheck on one
#              training step of a small FMM model, and memcheck on the
#              attention test
#   bench      (--bench) scripts/bench.sh gpu-step: tokens/s and MFU beside
#              PyTorch eager and torch.compile
# Exit status: 0 when every phase that ran passed.
set -uo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/gpu_check.sh [--no-build] [--build-dir DIR] [--bundle FILE] [--no-sanitizer]
                            [--bench] [--quick] [--help]

  --no-build      use the existing build/ (e.g. carried from another machine)
  --build-dir DIR the build folder to use (default build/; implies --no-build;
                  build-emu/ checks this script on a machine without a GPU)
  --bundle FILE   use the binaries and libraries of scripts/gpu_bundle.sh's
                  tarball instead of building (no cmake or dependencies needed)
  --no-sanitizer  skip compute-sanitizer
  --bench         also run scripts/bench.sh gpu-step (about 5 minutes)
  --quick         the GPU tests only, no training test of 200 steps
Environment: OUT (log folder, default gpu-check/), PYTHON (for the peer).
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DO_BUILD=1 BUNDLE="" DO_SAN=1 DO_BENCH=0 QUICK=0 BDIR=build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) DO_BUILD=0 ;;
    --build-dir) BDIR=${2:?--build-dir needs a folder}; DO_BUILD=0; shift ;;
    --bundle) BUNDLE=${2:?--bundle needs a file}; DO_BUILD=0; shift ;;
    --no-sanitizer) DO_SAN=0 ;;
    --bench) DO_BENCH=1 ;;
    --quick) QUICK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

LOGS=${OUT:-$ROOT/gpu-check}
mkdir -p "$LOGS"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

BIN=$ROOT/$BDIR/multipole
TESTS=$ROOT/$BDIR/tests
if [[ -n $BUNDLE ]]; then
  DIR=$(mktemp -d /tmp/mpl-bundle.XXXXXX)
  tar -C "$DIR" -xJf "$BUNDLE" || { echo "gpu_check.sh: cannot unpack $BUNDLE" >&2; exit 1; }
  BIN=$DIR/bin/multipole
  TESTS=$DIR/bin
  export LD_LIBRARY_PATH="$DIR/usr/lib/x86_64-linux-gnu:$DIR/usr/lib/x86_64-linux-gnu/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OPAL_PREFIX=$DIR/usr PATH="$DIR/usr/bin:$PATH"
fi
# cuBLASLt from the toolkit, or from PyTorch's wheels when there is no toolkit
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib \
         $(${PYTHON:-python3} -c 'import glob, site; [print(p) for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/*/lib")]' 2>/dev/null); do
  if [[ -e $d/libcublasLt.so.13 ]]; then
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
    break
  fi
done
export MPL_BIN=$BIN

SUMMARY=()
FAILED=0
T0=$(date +%s)

# phase NAME CMD...: CMD's output to $LOGS/NAME.log (its tail shown on failure).
phase() {
  local name=$1 t0 rc=0
  shift
  t0=$(date +%s)
  echo "==== gpu_check: $name"
  "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [[ $rc -eq 0 ]]; then
    SUMMARY+=("PASS $name (${dt}s)")
    grep -E '^(ok|SKIP|step |steps |.*: loss |.*cosine|.*nmse=.*FAIL|ERROR SUMMARY|=== |[a-z]+ +[a-z]+ +[0-9])' "$LOGS/$name.log" | tail -n 40
  else
    SUMMARY+=("FAIL $name (${dt}s, exit $rc): $LOGS/$name.log")
    FAILED=1
    tail -n 60 "$LOGS/$name.log"
  fi
  return 0
}

env_info() {
  nvidia-smi || echo "nvidia-smi: not found"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
  (command -v nvcc && nvcc --version | tail -n 2) || echo "nvcc: not found"
  command -v cmake && cmake --version | head -n 1
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null ||
    echo "compute-sanitizer: not found"
  ${PYTHON:-python3} -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 || true
  echo "binary: $BIN"
  "$BIN" --version || true
}

libs() {
  local f bad=0
  for f in "$BIN" "$TESTS"/test_core_cuda_kernels "$TESTS"/test_attention_cuda \
           "$TESTS"/test_core_cuda_model "$TESTS"/test_launch_cuda_train; do
    if [[ ! -x $f ]]; then echo "missing: $f"; bad=1; continue; fi
    if ldd "$f" | grep 'not found'; then echo "^ unresolved in $f"; bad=1; fi
  done
  [[ $bad -eq 0 ]] && echo "ok all libraries resolve"
  return $bad
}

# One GPU test binary; 77 (no usable GPU) is a failure here.
gpu_test() {
  local t=$1 rc=0
  shift
  "$@" "$TESTS/$t" || rc=$?
  if [[ $rc -eq 77 ]]; then echo "FAIL $t skipped: no usable GPU"; return 1; fi
  return $rc
}

gpu_tests() {
  local rc=0
  gpu_test test_core_cuda_kernels || rc=1
  gpu_test test_attention_cuda || rc=1
  gpu_test test_core_cuda_model || rc=1
  if [[ $QUICK -eq 0 ]]; then gpu_test test_launch_cuda_train || rc=1; fi
  return $rc
}

SMOKE=$(mktemp -d /tmp/mpl-smoke.XXXXXX)
TRAIN=("$BIN" train -c "$ROOT/configs/tiny.ini" --set data="$SMOKE/d.h5" --set attn=fmm
       --set n_layer=2 --set seq_len=128 --set batch=2 --set warmup=1 --set log_every=1)
smoke() {
  cat "$ROOT"/README.md "$ROOT"/bench/README.md > "$SMOKE/corpus.txt"
  "$BIN" prepare --quiet --in "$SMOKE/corpus.txt" --out "$SMOKE/d.h5" || return 1
  "${TRAIN[@]}" --set device=cuda --set steps=3 --set run_dir="$SMOKE/r" --stop-after 2 || return 1
  "${TRAIN[@]}" --set device=cpu --set steps=3 --set run_dir="$SMOKE/r" --resume auto || return 1
  "$BIN" sample --ckpt "$SMOKE/r/$(cat "$SMOKE/r/latest")" --prompt "The " --tokens 40 || return 1
  echo
  echo "ok trained on the GPU, resumed on the CPU, sampled"
}

sanitizer() {
  local cs rc=0 tool
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  [[ -x $cs ]] || { echo "compute-sanitizer not found"; return 1; }
  for tool in memcheck racecheck initcheck; do
    echo "=== $tool: one training step"
    "$cs" --tool "$tool" --error-exitcode 9 "${TRAIN[@]}" --set device=cuda --set steps=1 \
      --set run_dir="$SMOKE/s-$tool" || rc=1
  done
  echo "=== memcheck: the attention test"
  "$cs" --tool memcheck --error-exitcode 9 "$TESTS/test_attention_cuda" || rc=1
  return $rc
}

phase env env_info
if [[ $DO_BUILD -eq 1 ]]; then
  phase build bash scripts/build.sh -- -DMPL_CUDA=ON
fi
phase libs libs
phase gpu-tests gpu_tests
phase smoke smoke
if [[ $DO_SAN -eq 1 ]]; then phase sanitizer sanitizer; fi
if [[ $DO_BENCH -eq 1 ]]; then
  phase bench bash scripts/bench.sh gpu-step --no-build
  cp bench/results/gpu-step.csv "$LOGS/" 2>/dev/null || true
fi
rm -rf "$SMOKE"

echo
echo "==== gpu_check summary ($(( $(date +%s) - T0 ))s; logs in $LOGS)"
printf '  %s\n' "${SUMMARY[@]}"
if [[ $FAILED -eq 0 ]]; then echo "gpu_check.sh: PASS"; else echo "gpu_check.sh: FAIL"; fi
exit "$FAILED"
