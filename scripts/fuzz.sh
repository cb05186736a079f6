#!/usr/bin/env bash
# Fuzz the config/text parsers and the HDF5 token-file and checkpoint
# readers with libFuzzer (clang-14, libclang-rt-14-dev), under ASan,
# LeakSanitizer and UBSan, for a bounded time per target:
#   1. build      build-fuzz/ (CC=clang-14 -DMPL_FUZZ=ON), targets fuzz_config fuzz_h5
#   2. corpus     tests/fuzz/make_corpus.sh with build/multipole -> build-fuzz/corpus/
#   3. run        each target for --seconds S (default 60; CI uses 5), -seed fixed
# Findings (crash, leak, out of memory, timeout, failed property) are saved in
# build-fuzz/findings/ and re-run to tell ours from those inside libhdf5 (HDF5
# 1.10 cannot survive every damaged file); the exit code is non-zero when one
# of ours is found. Prints executions, coverage and findings per target.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/fuzz.sh [--seconds S] [--seed N] [--help]

Builds the libFuzzer targets into build-fuzz/ with clang-14, makes a seed
corpus with build/multipole (built first when missing) and runs each target
for S seconds (default 60).
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_PER=60
SEED=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_PER=$2; shift ;;
    --seed) SEED=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

CC_FUZZ=${CC_FUZZ:-clang-14}
if ! command -v "$CC_FUZZ" > /dev/null; then
  echo "fuzz.sh: $CC_FUZZ not found (apt-get install clang-14 libclang-rt-14-dev libomp-14-dev)" >&2
  exit 1
fi
[[ -x build/multipole ]] || bash scripts/build.sh
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER="$CC_FUZZ" -DMPL_FUZZ=ON -DMPL_NATIVE=OFF \
  -DMPL_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo > build-fuzz.log 2>&1 ||
  { cat build-fuzz.log; exit 1; }
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" --target fuzz_config fuzz_h5 >> build-fuzz.log 2>&1 ||
  { tail -40 build-fuzz.log; exit 1; }
rm -f build-fuzz.log
rm -rf build-fuzz/corpus build-fuzz/findings
mkdir -p build-fuzz/findings build-fuzz/corpus
bash tests/fuzz/make_corpus.sh "$ROOT/build/multipole" "$ROOT/build-fuzz/corpus"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# triage TARGET ARTIFACT: re-run one finding and say where it happened: in
# our code (a bug to fix) or inside libhdf5 (a damaged file that HDF5 itself
# cannot survive; our code can only avoid handing it such files).
triage() {
  local out frame where ours
  out=$(build-fuzz/tests/fuzz_$1 -runs=1 -timeout=20 -rss_limit_mb=2048 "$2" 2>&1)
  frame=$(grep -E '^ +#[0-9]+ 0x' <<< "$out" |
          grep -vE 'sanitizer|fuzzer::|__asan|__lsan|__interceptor|libc\.so|libstdc|in (malloc|calloc|realloc|free|abort|raise)' |
          head -1)
  ours=$(grep -E '^ +#[0-9]+ 0x.* in (mpl_|LLVMFuzzer|read_|check_|scan_|info_|reader_)' <<< "$out" |
         head -1 | sed 's/.* in //')
  case "$frame" in *libhdf5*) where=hdf5 ;; *) where=ours ;; esac
  echo "$where|$(basename "$2")|$(grep -m1 -oE '(ERROR|WARNING): [A-Za-z]+: [^(]*' <<< "$out")|${ours:-?}"
}

rc=0
for t in config h5; do
  # the run directory collects what the run finds; the seeds stay as they are
  mkdir -p build-fuzz/corpus/$t.run
  log=build-fuzz/fuzz_$t.log
  # fork mode: a finding is saved and fuzzing goes on, so one HDF5 crash
  # does not hide the rest
  build-fuzz/tests/fuzz_$t -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time="$SECONDS_PER" -seed="$SEED" -timeout=20 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/findings/$t- build-fuzz/corpus/$t.run build-fuzz/corpus/$t \
    > "$log" 2>&1 || true
  execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  n_ours=0 n_hdf5=0
  for a in build-fuzz/findings/$t-*; do
    [[ -e "$a" ]] || continue
    r=$(triage $t "$a")
    echo "fuzz.sh: finding in ${r%%|*}: ${r#*|}"
    if [[ $r == hdf5* ]]; then n_hdf5=$((n_hdf5 + 1)); else n_ours=$((n_ours + 1)); fi
  done
  echo "fuzz.sh: fuzz_$t: ${execs:-?} executions in ${SECONDS_PER}s, $cov," \
       "$(ls build-fuzz/corpus/$t.run | wc -l) new inputs kept; findings: $n_ours in our code," \
       "$n_hdf5 inside libhdf5 (log $log)"
  [[ $n_ours -eq 0 ]] || rc=1
done
echo "fuzz.sh: $( [[ $rc -eq 0 ]] && echo PASS || echo FAIL ): findings in build-fuzz/findings/ (re-run one: build-fuzz/tests/fuzz_h5 FILE)"
exit $rc
