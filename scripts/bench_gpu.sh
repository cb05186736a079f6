# scripts/bench.sh gpu-step (sourced by bench.sh; a file of its own to keep
# bench.sh short): one training step of configs/gpu-16k.ini on one GPU,
# multipole (device=cuda) beside the PyTorch peer bench/peers/torch_gpu_step.py
# in eager mode and under torch.compile, on the same GPU; tokens/s and MFU.
# bench/README.md says how model FLOPs and the bf16 peak are counted.

GPU_HEADER="config,backend,mode,device,d_model,n_layer,n_head,seq_len,batch,steps,median_ms,min_ms,max_ms,tok_per_s,model_tflop_per_step,tflops,mfu"

# gpu_col ROW NAME: field NAME of a gpu-step CSV row.
gpu_col() {
  awk -F, -v h="$GPU_HEADER" -v name="$2" '
    BEGIN { n = split(h, hs, ","); for (i = 1; i <= n; i++) if (hs[i] == name) c = i }
    c && NF > 1 { print $c }' <<<"$1"
}

# gpu_run LABEL CMD...: run one program, echo its output, keep its '#' lines
# in comments and its row in rows (the caller's arrays); 1 when it failed.
gpu_run() {
  local label=$1 out
  shift
  echo "=== gpu-step: $label"
  if out=$("$@" 2>&1); then
    printf '%s\n' "$out"
    mapfile -t -O "${#comments[@]}" comments < <(printf '%s\n' "$out" | grep '^#' || true)
    local row
    row=$(data_row "$out")
    [[ -n $row ]] && rows+=("$row")
    return 0
  fi
  printf '%s\n' "$out"
  echo "bench.sh gpu-step: $label failed" >&2
  return 1
}

bench_gpu_step() {
  local cfg=configs/gpu-16k.ini steps=10 warmup=3 peak=0 do_build=1 do_torch=1
  local py=${PYTHON:-python3} sets=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --config) cfg=${2:?--config needs a file}; shift ;;
      --steps) steps=${2:?--steps needs a value}; shift ;;
      --warmup) warmup=${2:?--warmup needs a value}; shift ;;
      --peak-tflops) peak=${2:?--peak-tflops needs a value}; shift ;;
      --set) sets+=(--set "${2:?--set needs key=value}"); shift ;;
      --no-build) do_build=0 ;;
      --no-torch) do_torch=0 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh gpu-step: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  # no deps.sh: GPU machines have their own toolchain and no apt
  bench_prepare 0 "$do_build"
  local peak_arg=()
  if [[ $peak != 0 ]]; then peak_arg=(--peak-tflops "$peak"); fi

  local comments=() rows=() failed=0
  comments+=("# scripts/bench.sh gpu-step: $(date -u +%Y-%m-%dT%H:%M:%SZ) host $(hostname)")
  comments+=("# config $cfg ${sets[*]} steps $steps warmup $warmup")
  if command -v nvidia-smi > /dev/null; then
    comments+=("# $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | head -n 1)")
  fi

  gpu_run "multipole, device=cuda" "$BIN" bench step -c "$cfg" --set device=cuda "${sets[@]}" \
    --steps "$steps" --warmup "$warmup" "${peak_arg[@]}" || failed=1
  local mode
  for mode in eager compile; do
    [[ $do_torch -eq 1 ]] || break
    gpu_run "torch peer, $mode" "$py" bench/peers/torch_gpu_step.py --config "$cfg" "${sets[@]}" \
      --mode "$mode" --steps "$steps" --warmup "$warmup" "${peak_arg[@]}" || failed=1
  done

  local best=0 mine=0 r tps
  for r in "${rows[@]}"; do
    tps=$(gpu_col "$r" tok_per_s)
    if [[ $(gpu_col "$r" backend) == multipole ]]; then mine=$tps
    else best=$(awk -v a="$best" -v b="$tps" 'BEGIN { print (b > a ? b : a) }'); fi
  done
  local ratio
  ratio=$(awk -v a="$mine" -v b="$best" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b; else print "n/a" }')
  comments+=("# ratio multipole / best torch tok_per_s = $ratio")
  {
    printf '%s\n' "${comments[@]}"
    echo "$GPU_HEADER"
    if [[ ${#rows[@]} -gt 0 ]]; then printf '%s\n' "${rows[@]}"; fi
  } > "$RESULTS/gpu-step.csv"

  echo
  echo "=== gpu-step: tokens/s and MFU (targets: MFU >= 0.40, >= 1.3x the better torch)"
  printf '%-10s %-8s %12s %10s %8s\n' backend mode tok_per_s median_ms mfu
  for r in "${rows[@]}"; do
    printf '%-10s %-8s %12s %10s %8s\n' "$(gpu_col "$r" backend)" "$(gpu_col "$r" mode)" \
      "$(gpu_col "$r" tok_per_s)" "$(gpu_col "$r" median_ms)" "$(gpu_col "$r" mfu)"
  done
  echo "multipole / best torch: $ratio"
  echo "results: $RESULTS/gpu-step.csv"
  return "$failed"
}
