#!/usr/bin/env bash
# Bad input ends with one clear error line, exit code 2, and nothing written.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out good.h5 > /dev/null
: > empty.h5
echo "this is not HDF5" > text.h5
printf '[model]\nd_model = 64\n' > ok.ini
printf '[model]\nd_modle = 64\n' > typo.ini

# expect CODE FRAGMENT -- command...
expect() {
  local code=$1 frag=$2
  shift 3
  local out rc
  out=$("$@" 2>&1 > /dev/null)
  rc=$?
  if [ "$rc" -eq "$code" ] && grep -qF -- "$frag" <<< "$out"; then
    ok "exit $rc: $*"
  else
    bad "$* -> exit $rc (want $code), stderr: $out (want '$frag')"
  fi
}
T=("$MPL_BIN" train -c ok.ini --set run_dir=run --set steps=2 --set warmup=0 --set seq_len=16 --set batch=2)
expect 2 "cannot open data.h5" -- "${T[@]}" --set data=missing.h5 --set data=data.h5
expect 2 "empty.h5: file is empty" -- "${T[@]}" --set data=empty.h5
expect 2 "text.h5: not an HDF5 file" -- "${T[@]}" --set data=text.h5
expect 2 "no data file" -- "${T[@]}"
expect 2 "typo.ini: unknown config key 'd_modle'" -- "$MPL_BIN" train -c typo.ini --set data=good.h5
expect 2 "cannot open config file nope.ini" -- "$MPL_BIN" train -c nope.ini
expect 2 "key 'n_layer': 'x' is not an integer" -- "${T[@]}" --set data=good.h5 --set n_layer=x
expect 2 "key 'attn': 'flash' is not one of" -- "${T[@]}" --set data=good.h5 --set attn=flash
expect 2 "n_head=3 must divide d_model=64" -- "${T[@]}" --set data=good.h5 --set n_head=3
expect 2 "seq_len" -- "${T[@]}" --set data=good.h5 --set seq_len=100000000
expect 2 "no config file given" -- "$MPL_BIN" train
expect 2 "unknown argument '--bogus'" -- "$MPL_BIN" train -c ok.ini --bogus
expect 2 "unknown command 'trian'" -- "$MPL_BIN" trian
expect 2 "missing.txt" -- "$MPL_BIN" prepare --quiet --in missing.txt --out x.h5
expect 2 "no output file" -- "$MPL_BIN" prepare --in corpus.txt
expect 2 "text.h5: not an HDF5 file" -- "$MPL_BIN" inspect text.h5
expect 2 "no checkpoint given" -- "$MPL_BIN" sample --prompt hi
expect 2 "not a multipole checkpoint" -- "$MPL_BIN" sample --ckpt good.h5
if [ -e run ] || [ -e x.h5 ] || [ -e x.h5.tmp ]; then bad "a failed command left files behind"; else ok "nothing written"; fi
# The same error on 3 ranks: one message from rank 0, every rank exits, no hang.
out=$(timeout 60 "$MPIEXEC" --oversubscribe -n 3 "${T[@]}" --set data=text.h5 2>&1)
rc=$?
n=$(grep -c "multipole: error:" <<< "$out")
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$n" -eq 1 ]; then ok "3 ranks: one error line, exit $rc"; else bad "3 ranks: exit $rc, $n error lines: $out"; fi
# Layout errors: one message from rank 0, all ranks exit non-zero, no hang.
layout_error() {
  local np=$1 frag=$2
  shift 2
  out=$(timeout 60 "$MPIEXEC" --oversubscribe -n "$np" "${T[@]}" --set data=good.h5 "$@" 2>&1)
  rc=$?
  n=$(grep -c "multipole: error:" <<< "$out")
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$n" -eq 1 ] && grep -qF -- "$frag" <<< "$out"; then
    ok "$np ranks $*: '$frag'"
  else
    bad "$np ranks $*: exit $rc, $n error lines: $out"
  fi
}
layout_error 3 "sp=2 does not divide the world size 3" --set sp=2 --set attn=fmm
layout_error 2 "seq_len=3 is shorter than sp=4" --set sp=4 --set seq_len=3 --set attn=fmm
layout_error 2 "attn=dense is the single-rank oracle" --set sp=2
layout_error 4 "sp=2 x dp=3 = 6 ranks, but the world has 4" --set sp=2 --set dp=3 --set attn=fmm
# device=cuda where it cannot run: a build without CUDA (exit 2) or no
# usable GPU (exit 1, saying what the runtime answered); one rank only.
G=("${T[@]}" --set data=good.h5 --set device=cuda --set attn=fmm)
case "$("$MPL_BIN" --version)" in
  *cuda=no*)
    expect 2 "this build has no CUDA backend: configure with -DMPL_CUDA=ON and a CUDA toolkit" -- "${G[@]}" ;;
  *)
    out=$("${G[@]}" --set run_dir=run_gpu 2>&1 > /dev/null)
    rc=$?
    if [ "$rc" -eq 0 ]; then
      ok "device=cuda trains (a GPU is present)"
    elif [ "$rc" -eq 1 ] && grep -qF "no usable GPU: cudaGetDeviceCount returned" <<< "$out"; then
      ok "device=cuda without a GPU: exit 1, '$(grep -o 'no usable GPU.*' <<< "$out" | head -1)'"
    else
      bad "device=cuda: exit $rc: $out"
    fi
    rm -rf run_gpu ;;
esac
layout_error 2 "device=cuda trains on one GPU with one rank in this version" --set device=cuda --set attn=fmm
for c in train sample prepare inspect bench config op; do
  if "$MPL_BIN" "$c" --help | grep -q "usage: multipole $c"; then ok "$c --help"; else bad "$c --help"; fi
done
finish
