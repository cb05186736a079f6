#!/usr/bin/env bash
# Build the CUDA binaries on this (Debian) machine for a GPU machine that
# lacks the build's dependencies, and pack them with the shared libraries
# they need: build-gpu/gpu-bundle.tar.xz holds bin/ (multipole and the GPU
# tests), usr/lib/x86_64-linux-gnu (every library ldd resolves outside
# glibc, the CUDA driver and cuBLASLt, which the GPU machine has or gets
# from its CUDA or PyTorch install) and the Open MPI runtime tree, so that
# scripts/gpu_check.sh --bundle FILE runs them there with LD_LIBRARY_PATH
# and OPAL_PREFIX pointing into it (TOOLCHAIN.md: that is how a Debian
# binary ran on the GPU machine before). -march=native is off: the GPU
# machine's CPU may lack this one's instructions.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/gpu_bundle.sh [--no-build] [--help]

Builds build-gpu/ (-DMPL_CUDA=ON -DMPL_NATIVE=OFF) and writes
build-gpu/gpu-bundle.tar.xz (see the top of this file). --no-build packs an
existing build-gpu/.
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DO_BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) DO_BUILD=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

B=build-gpu
if [[ $DO_BUILD -eq 1 ]]; then
  cmake -S . -B "$B" -DMPL_CUDA=ON -DMPL_NATIVE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$B" -j"$(nproc 2>/dev/null || echo 2)" --target multipole \
    test_core_cuda_kernels test_attention_cuda test_core_cuda_model test_launch_cuda_train
fi
STAGE=$B/bundle
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/usr/bin" "$STAGE/usr/lib/x86_64-linux-gnu" "$STAGE/usr/share"
BINS=("$B/multipole" "$B"/tests/test_core_cuda_kernels "$B"/tests/test_attention_cuda
      "$B"/tests/test_core_cuda_model "$B"/tests/test_launch_cuda_train)
cp "${BINS[@]}" "$STAGE/bin/"
# glibc's own, the driver and the 500 MB cuBLASLt stay behind
skip='/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64|libcuda|libcublasLt)\.so'
for f in "${BINS[@]}"; do ldd "$f"; done | awk '$3 ~ /^\// { print $3 }' | sort -u |
  grep -Ev "$skip" | while read -r lib; do cp -L "$lib" "$STAGE/usr/lib/x86_64-linux-gnu/"; done
# the Open MPI runtime: components, help texts and the daemon a singleton
# MPI_Init starts (Debian's layout under /usr), and mpirun
cp -rL /usr/lib/x86_64-linux-gnu/openmpi "$STAGE/usr/lib/x86_64-linux-gnu/"
cp -L /usr/bin/orted /usr/bin/orterun "$STAGE/usr/bin/"
ln -s orterun "$STAGE/usr/bin/mpirun"
ln -s orterun "$STAGE/usr/bin/mpiexec"
cp -r /usr/share/openmpi "$STAGE/usr/share/"
rm -rf "$STAGE/usr/lib/x86_64-linux-gnu/openmpi/include"
tar -C "$STAGE" -cJf "$B/gpu-bundle.tar.xz" .
du -h "$B/gpu-bundle.tar.xz"
echo "gpu_bundle.sh: carry $B/gpu-bundle.tar.xz; there: scripts/gpu_check.sh --bundle $B/gpu-bundle.tar.xz"
