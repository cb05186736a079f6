#!/usr/bin/env bash
# Configure and build multipole with CMake.
#   default:     build/       (CMake's default build type, CUDA auto-detected)
#   --sanitize:  build-asan/  (ASan + UBSan, no -march=native)
#   --cuda-emu:  build-emu/   (the CUDA sources against the CPU emulation of
#                tests/cuda_emu: the GPU tests run, slowly, without a GPU)
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/build.sh [--sanitize | --cuda-emu] [--help] [-- extra cmake configure args]

Configures and builds multipole into build/ (-DMPL_CUDA=AUTO).

  --sanitize  build into build-asan/ with -DMPL_SANITIZE=ON -DMPL_NATIVE=OFF
  --cuda-emu  build into build-emu/ with -DMPL_CUDA_EMU=ON: the CUDA code is
              compiled as C++ against tests/cuda_emu and its kernels run on
              the CPU, so `ctest --test-dir build-emu -L gpu` checks it here
  --help      show this help

Arguments after "--" are passed to the cmake configure step.
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=build
CMAKE_ARGS=(-DMPL_CUDA=AUTO)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sanitize)
      BUILD_DIR=build-asan
      CMAKE_ARGS+=(-DMPL_SANITIZE=ON -DMPL_NATIVE=OFF) ;;
    --cuda-emu)
      BUILD_DIR=build-emu
      CMAKE_ARGS=(-DMPL_CUDA=OFF -DMPL_CUDA_EMU=ON) ;;
    -h|--help) usage; exit 0 ;;
    --) shift; CMAKE_ARGS+=("$@"); break ;;
    *) echo "build.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

JOBS=$(nproc 2>/dev/null || echo 2)
echo "build.sh: configuring $BUILD_DIR/ (${CMAKE_ARGS[*]})"
cmake -S . -B "$BUILD_DIR" "${CMAKE_ARGS[@]}"
echo "build.sh: building $BUILD_DIR/ with $JOBS jobs"
cmake --build "$BUILD_DIR" -j"$JOBS"
echo "build.sh: binary: $ROOT/$BUILD_DIR/multipole"
