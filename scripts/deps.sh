#!/usr/bin/env bash
# Install the Debian packages multipole needs to build, test and run its demo.
# Idempotent: when every package is already installed (checked with
# dpkg-query) the apt step is skipped without touching the network.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/deps.sh [--bench] [--help]

Installs the Debian packages needed to build and test multipole
(apt-get, non-interactive). Runs as root, or through sudo when available.

  --bench   also install python3-torch (Debian's, for /usr/bin/python3),
            used by the PyTorch peer in scripts/bench.sh
  --help    show this help
USAGE
}

PKGS=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev
      libhdf5-openmpi-dev hdf5-tools libcmocka-dev libinih-dev
      libopenblas-dev libopenblas0-openmp fortunes gnuplot-nox
      clang-14 libclang-rt-14-dev libomp-14-dev)   # clang: the fuzz step (scripts/fuzz.sh)

while [[ $# -gt 0 ]]; do
  case "$1" in
    --bench) PKGS+=(python3-torch) ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deps.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# A package counts as present only when dpkg says "install ok installed".
missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps.sh: all ${#PKGS[@]} packages already installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "deps.sh: not root and sudo is not available; install as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps.sh: done"
