# Shared helpers of the shell-driven command tests (sourced).
# MPL_BIN is set by ctest to the multipole binary.
set -u
: "${MPL_BIN:?MPL_BIN must point at the multipole binary}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIEXEC=${MPIEXEC:-mpiexec}
n_fail=0
n_pass=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mpl-cli-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

ok() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
bad() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }

# A generated corpus of words, deterministic, ~100 KB.
make_corpus() {
  awk 'BEGIN { srand(7); split("alpha bravo charlie delta echo foxtrot golf hotel", w, " ");
               for (i = 0; i < 16000; i++) { printf "%s%s", w[int(rand() * 8) + 1], (i % 12 == 11) ? "\n" : " " } }' > "$1"
}

# Loss column of a metrics.csv, one value per line.
losses() { tail -n +2 "$1" | cut -d, -f3; }

finish() {
  echo "$n_pass passed, $n_fail failed"
  [ "$n_fail" -eq 0 ]
}
