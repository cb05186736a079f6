#!/usr/bin/env bash
# Bad input ends before any work with one line `multipole: error: ...` from
# rank 0 only, the expected exit code on every rank (2: bad input), no
# hang, and nothing written. A table of bad invocations, each run at world
# size 1 (plain command) and 3 (mpiexec -n 3), several at a time; then
# layout errors at other world sizes and every command's --help.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out good.h5 > /dev/null
"$MPL_BIN" prepare --quiet --in corpus.txt --out noval.h5 --val-fraction 0 > /dev/null
: > empty.h5
echo "this is not HDF5" > text.h5
printf 'abc' > odd.bin
mkdir emptyrun
printf 'abcd' > ab.bin
printf '[model]\nd_model = 64\n' > ok.ini
printf '[model]\nd_modle = 64\n' > typo.ini
printf '[model]\nthis line has no equals sign\n' > broken.ini
# one small checkpoint (n_layer 2) for resume, sample and eval rows
"$MPL_BIN" train -c ok.ini --set data=good.h5 --set d_model=16 --set n_layer=2 --set seq_len=16 \
  --set batch=1 --set steps=1 --set warmup=0 --set run_dir=ck --set peak_flops=1e9 --quiet > ck.log 2>&1 ||
  bad "making the checkpoint: $(cat ck.log)"
CK=ck/ckpt-1.h5

S="--set run_dir=run --set steps=2 --set warmup=0 --set seq_len=16 --set batch=2"
G="$S --set data=good.h5"
# code | message fragment | arguments of multipole (word-split; no spaces inside arguments)
TABLE=$(cat <<EOF
2|cannot open data.h5|train -c ok.ini $S --set data=missing.h5 --set data=data.h5
2|empty.h5: file is empty|train -c ok.ini $S --set data=empty.h5
2|text.h5: not an HDF5 file|train -c ok.ini $S --set data=text.h5
2|no data file|train -c ok.ini $S
2|typo.ini: unknown config key 'd_modle'|train -c typo.ini --set data=good.h5
2|broken.ini:2: not a valid INI line|train -c broken.ini
2|cannot open config file nope.ini|train -c nope.ini
2|key 'n_layer': 'x' is not an integer|train -c ok.ini $G --set n_layer=x
2|key 'attn': 'flash' is not one of|train -c ok.ini $G --set attn=flash
2|key 'lr': 20 is outside [0, 10]|train -c ok.ini $G --set lr=20
2|n_head=3 must divide d_model=64|train -c ok.ini $G --set n_head=3
2|min_lr=0.1 must not exceed lr=0.01|train -c ok.ini $G --set lr=0.01 --set min_lr=0.1
2|fewer than seq_len+1|train -c ok.ini $G --set seq_len=100000000
2|the model's vocab_size is 100: set vocab_size >= 256|train -c ok.ini $G --set vocab_size=100
2|tokenizer=dna but good.h5 holds 'bytes' tokens|train -c ok.ini $G --set tokenizer=dna
2|eval_every=5 needs a /val split of at least seq_len+1 = 17 tokens|train -c ok.ini $S --set data=noval.h5 --set eval_every=5
2|--set 'lr': expected key=value|train -c ok.ini $G --set lr
2|sp=4 does not divide the world size|train -c ok.ini $G --set sp=4 --set attn=fmm
2|sp=1 x dp=2 = 2 ranks, but the world has|train -c ok.ini $G --set dp=2
2|comm=nccl moves GPU buffers and needs device=cuda (device=cpu|train -c ok.ini $G --set comm=nccl
2|the model differs in d_model (saved 16, now 64)|train -c ok.ini $G --resume $CK
2|not a multipole checkpoint|train -c ok.ini $G --resume good.h5
2|--log-every: 0 is outside|train -c ok.ini $G --log-every 0
2|no config file given|train
2|unknown argument '--bogus'|train -c ok.ini --bogus
2|unknown command 'trian'|trian
2|cannot open missing.txt|prepare --in missing.txt --out x.h5
2|--tokenizer uint16 needs --vocab-size V|prepare --tokenizer uint16 --in ab.bin --out x.h5
2|odd.bin: 3 bytes is not a whole number of uint16 token ids|prepare --tokenizer uint16 --vocab-size 300 --in odd.bin --out x.h5
2|ab.bin: token id 25185 at index 0 is not below --vocab-size 300|prepare --tokenizer uint16 --vocab-size 300 --in ab.bin --out x.h5
2|is not a FASTA base (A C G T N or an IUPAC code)|prepare --tokenizer dna --in corpus.txt --out x.h5
2|--val-fraction: 0.9 is outside [0, 0.5]|prepare --in corpus.txt --out x.h5 --val-fraction 0.9
2|text.h5: not an HDF5 file|inspect text.h5
2|no checkpoint given|sample --prompt hi
2|good.h5: not a multipole checkpoint|sample --ckpt good.h5
2|--top-p: 0 is outside|sample --ckpt $CK --top-p 0
2|cannot open prompt file nope.txt|sample --ckpt $CK --prompt-file nope.txt
2|--split test: a token file has train and val|eval --ckpt $CK --split test
2|--sp 2 does not divide the world size|eval --ckpt $CK --sp 2
2|split 'val' holds 0 tokens, fewer than seq_len+1 = 17|eval --ckpt $CK --data noval.h5
2|emptyrun: no checkpoint (no emptyrun/latest|eval --ckpt emptyrun
2|cannot open nope/metrics.csv|plot nope
2|unknown config key 'bogus'|config --set bogus=1
EOF
)

# check ID NP CODE FRAG ARGS...: run one row, write its verdict to ID.res
check() {
  local id=$1 np=$2 code=$3 frag=$4
  shift 4
  local out rc n
  if [ "$np" -eq 1 ]; then
    out=$(timeout 60 "$MPL_BIN" "$@" 2>&1 > /dev/null)
  else
    out=$(timeout 60 "$MPIEXEC" --oversubscribe -n "$np" "$MPL_BIN" "$@" 2>&1 > /dev/null)
  fi
  rc=$?
  n=$(grep -c "multipole: error:" <<< "$out")
  if [ "$rc" -eq "$code" ] && [ "$n" -eq 1 ] && grep -qF -- "$frag" <<< "$(grep "multipole: error:" <<< "$out")"; then
    echo "ok   np$np exit $rc: $*: $(grep "multipole: error:" <<< "$out")" > "$id.res"
  else
    echo "FAIL np$np $* -> exit $rc (want $code), $n error lines (want 1), want '$frag'; output: $out" > "$id.res"
  fi
}

rows=0
jobs_max=8
while IFS='|' read -r code frag args; do
  [ -z "$code" ] && continue
  for np in 1 3; do
    rows=$((rows + 1))
    # shellcheck disable=SC2086 # the arguments are word-split on purpose
    check "row$rows" "$np" "$code" "$frag" $args < /dev/null &
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n; done
  done
done <<< "$TABLE"
wait
for i in $(seq 1 $rows); do
  line=$(cat "row$i.res")
  echo "$line"
  case "$line" in ok*) n_pass=$((n_pass + 1)) ;; *) n_fail=$((n_fail + 1)) ;; esac
done
n_inv=$(grep -c '|' <<< "$TABLE")
[ "$n_inv" -ge 30 ] && ok "$n_inv bad invocations, each at world sizes 1 and 3" || bad "only $n_inv rows"
if [ -e run ] || [ -e x.h5 ] || [ -e x.h5.tmp ]; then bad "a failed command left files behind"; else ok "nothing written"; fi

# Layout errors that need a particular world size.
layout_error() {
  local np=$1 frag=$2
  shift 2
  out=$(timeout 60 "$MPIEXEC" --oversubscribe -n "$np" "$MPL_BIN" train -c ok.ini $G "$@" 2>&1)
  rc=$?
  n=$(grep -c "multipole: error:" <<< "$out")
  if [ "$rc" -eq 2 ] && [ "$n" -eq 1 ] && grep -qF -- "$frag" <<< "$out"; then
    ok "$np ranks $*: '$frag'"
  else
    bad "$np ranks $*: exit $rc, $n error lines: $out"
  fi
}
layout_error 3 "sp=2 does not divide the world size 3" --set sp=2 --set attn=fmm
layout_error 2 "seq_len=3 is shorter than sp=4" --set sp=4 --set seq_len=3 --set attn=fmm
layout_error 2 "attn=dense is the single-rank oracle" --set sp=2
layout_error 4 "sp=2 x dp=3 = 6 ranks, but the world has 4" --set sp=2 --set dp=3 --set attn=fmm
# device=cuda where it cannot run: a build without CUDA refuses the config
# (exit 2); a build with it and no usable GPU fails when it attaches (exit
# 1, saying what the runtime answered); one rank only.
case "$("$MPL_BIN" --version)" in *cuda=no*) cuda_built=0 ;; *) cuda_built=1 ;; esac
gpu_row() {
  local out rc
  out=$(timeout 120 "$MPL_BIN" train -c ok.ini $G --set device=cuda --set attn=fmm --set run_dir=run_gpu 2>&1 > /dev/null)
  rc=$?
  case $cuda_built in
    0)
      if [ "$rc" -eq 2 ] && grep -qF "this build has no CUDA backend" <<< "$out"; then
        ok "device=cuda in a build without CUDA: exit 2"
      else
        bad "device=cuda without CUDA: exit $rc: $out"
      fi ;;
    *)
      if [ "$rc" -eq 0 ]; then
        ok "device=cuda trains (a GPU is present)"
      elif [ "$rc" -eq 1 ] && grep -qF "no usable GPU: cudaGetDeviceCount" <<< "$out"; then
        ok "device=cuda without a GPU: exit 1, '$(grep -o 'no usable GPU.*' <<< "$out" | head -1)'"
      else
        bad "device=cuda: exit $rc: $out"
      fi ;;
  esac
  rm -rf run_gpu
}
gpu_row
if [ "$cuda_built" -eq 1 ]; then
  layout_error 2 "device=cuda trains on one GPU with one rank in this version" --set device=cuda --set attn=fmm
fi
layout_error 3 "debug_nan_rank=3: the world has ranks 0..2" --set debug_nan_step=1 --set debug_nan_rank=3
for c in train eval sample prepare inspect plot bench config op; do
  if "$MPL_BIN" "$c" --help | grep -q "usage: multipole $c"; then ok "$c --help"; else bad "$c --help"; fi
done
finish
