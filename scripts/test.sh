#!/usr/bin/env bash
# The full test run (README's test command, called by .ci/run):
#   1. deps        scripts/deps.sh
#   2. build       scripts/build.sh                     -> build/
#   3. test        ctest: every test (unit, mpi, cli; gpu tests skip without a GPU)
#   4. build-asan  scripts/build.sh --sanitize          -> build-asan/
#   5. test-asan   ctest -L unit under ASan + UBSan
#   6. fuzz        scripts/fuzz.sh --seconds 5: the libFuzzer targets (config and
#                  text parsers, HDF5 token-file and checkpoint readers), clang-14
#   7. (--cuda-emu) build-emu, test-emu: the GPU tests on the CPU emulation
#      of tests/cuda_emu (slow; for changes to the CUDA code without a GPU)
# Prints the time of each phase and a summary; exits non-zero when any phase
# fails. A failed build skips the tests of that build; the other build still
# runs, so one run reports as much as it can.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/test.sh [--no-deps] [--no-asan] [--no-fuzz] [--cuda-emu] [--help]

Installs dependencies, builds, and runs all tests, then the unit tests
again under AddressSanitizer + UndefinedBehaviorSanitizer.

  --no-deps   skip scripts/deps.sh
  --no-asan   skip the sanitizer build and its tests
  --cuda-emu  also build build-emu/ and run the GPU tests on the CPU
              emulation of CUDA (tests/cuda_emu; about 7 minutes on 2 cores)
  --no-fuzz   skip the fuzz step (5 s per target; longer: scripts/fuzz.sh --seconds N)
  --help      show this help

Environment: CTEST_JOBS (default 2) sets ctest's parallelism.
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DO_DEPS=1
DO_ASAN=1
DO_EMU=0
DO_FUZZ=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-deps) DO_DEPS=0 ;;
    --no-asan) DO_ASAN=0 ;;
    --cuda-emu) DO_EMU=1 ;;
    --no-fuzz) DO_FUZZ=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# CI runs as root; Open MPI refuses that unless told. 2 cores: oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
CTEST_JOBS=${CTEST_JOBS:-2}

SUMMARY=()
FAILED=0
T_START=$(date +%s)

# run_phase NAME CMD...: runs CMD, records "NAME ok|FAILED (Ns)".
# Each CMD is one process, so a failure is caught by its exit status
# (set -e does not apply inside an `if` or `||` context).
run_phase() {
  local name=$1; shift
  local t0 rc=0
  t0=$(date +%s)
  echo
  echo "==== test.sh: $name: $*"
  "$@" || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [[ $rc -eq 0 ]]; then
    echo "==== test.sh: $name ok (${dt}s)"
    SUMMARY+=("$name ok ${dt}s")
  else
    echo "==== test.sh: $name FAILED with exit code $rc (${dt}s)"
    SUMMARY+=("$name FAILED ${dt}s")
    FAILED=1
  fi
  return "$rc"
}

skip_phase() {
  echo "==== test.sh: $1 skipped ($2)"
  SUMMARY+=("$1 skipped")
}

if [[ $DO_DEPS -eq 1 ]]; then
  run_phase deps bash scripts/deps.sh || true
else
  skip_phase deps "--no-deps"
fi

if run_phase build bash scripts/build.sh; then
  run_phase test ctest --test-dir build --output-on-failure -j"$CTEST_JOBS" || true
else
  skip_phase test "build failed"
fi

if [[ $DO_ASAN -eq 1 ]]; then
  if run_phase build-asan bash scripts/build.sh --sanitize; then
    run_phase test-asan ctest --test-dir build-asan -L unit --output-on-failure \
      -j"$CTEST_JOBS" || true
  else
    skip_phase test-asan "sanitizer build failed"
  fi
else
  skip_phase build-asan "--no-asan"
  skip_phase test-asan "--no-asan"
fi

if [[ $DO_FUZZ -eq 0 ]]; then
  skip_phase fuzz "--no-fuzz"
elif ! command -v clang-14 > /dev/null; then
  skip_phase fuzz "clang-14 is not installed (scripts/deps.sh installs it)"
else
  run_phase fuzz bash scripts/fuzz.sh --seconds 5 || true
fi

if [[ $DO_EMU -eq 1 ]]; then
  if run_phase build-emu bash scripts/build.sh --cuda-emu; then
    run_phase test-emu ctest --test-dir build-emu -L gpu --output-on-failure || true
  else
    skip_phase test-emu "emulation build failed"
  fi
fi

T_TOTAL=$(( $(date +%s) - T_START ))
echo
echo "==== test.sh summary"
for line in "${SUMMARY[@]}"; do
  echo "  $line"
done
if [[ $FAILED -eq 0 ]]; then
  echo "test.sh: PASS (${T_TOTAL}s)"
else
  echo "test.sh: FAIL (${T_TOTAL}s)"
fi
exit "$FAILED"
