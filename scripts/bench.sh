#!/usr/bin/env bash
# Benchmarks with peer comparisons; results go to bench/results/ (git-ignored).
#   step       one training step (fwd + bwd + clip + AdamW) of multipole and
#              of the same model in PyTorch, on configs/tiny.ini and small.ini
#   attention  forward + backward of one attention layer vs. sequence length,
#              every kind in multipole, FMM also in PyTorch; CSV + PNG
#   comm       bytes per rank per layer with one sequence over 4 ranks
#   sp         training-step tokens/s at sp = 1, 2, 4 and the longest sequence
#              that trains at sp = 4
#   ckpt       checkpoint save/load MB/s at 1, 2, 4 ranks beside dd
#   maxlen     the longest sequence that trains (recompute=layer), by the plan
#              and by real steps
#   gpu-step   a training step of configs/gpu-16k.ini on one GPU beside the
#              PyTorch peer (eager, torch.compile): tokens/s, MFU
# bench/README.md describes what each measures and the CSV columns.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/bench.sh SUBCOMMAND [options]

subcommands:
  gpu-step
          one training step on one GPU (device=cuda) of configs/gpu-16k.ini
          (d_model 1024, 16 layers, 16 heads, L = 16384, FMM) beside the
          PyTorch peer bench/peers/torch_gpu_step.py, eager and torch.compile,
          on the same GPU: tokens/s, model TFLOP/s and MFU; options --config,
          --set key=value, --steps (10), --warmup (3), --peak-tflops P (bf16
          peak; default from the GPU's name), --no-torch, --no-build; python
          from $PYTHON (default python3); writes bench/results/gpu-step.csv
  comm    bytes each rank sends per attention layer (forward, backward) with
          one sequence split over 4 ranks, L = 2^12 .. 2^K (--max-log2, default
          20 for fmm and combiner_logsparse, which also runs L = 2^k + 1, 18
          for combiner_fixed), beside ATTENTION.md's formula;
          writes bench/results/comm.csv
  sp      tokens/s of an FMM training step (configs/tiny.ini, --len L, default
          16384, batch 1) at sp = 1, 2, 4 ranks (oversubscribed when the
          machine has fewer cores; threads per rank = cores / ranks), then the
          longest L = 2^k (k <= --max-log2, default 20) whose step completes at
          sp = 4; writes bench/results/sp.csv
  maxlen  the longest sequence whose FMM training step completes with
          recompute=layer: configs tiny (d 256, 4 layers) and small (d 512,
          8 layers), 1 and 4 ranks (sp = ranks): powers of two up to what
          `multipole plan` admits, then the plan's maximum x --margin (0.97);
          options --configs, --ranks, --max-log2 (24), --timeout S per step
          (7200), --plan-only; writes bench/results/maxlen.csv
  ckpt    checkpoint save/load MB/s of a synthetic model (--mb 100 MB of
          parameters, file 3x) at 1, 2, 4 ranks with the default writer and
          the parallel one (--writers "auto parallel"), each save and load
          paired with a raw write/read of as many bytes, --rounds 3 rounds
          of --runs 2 pairs, dd between rounds; options also --dir (default
          bench/results/ckpt-tmp), --no-build; writes
          bench/results/ckpt.csv and ckpt_summary.csv
  step    training-step time of multipole vs. the PyTorch peer
          (bench/peers/torch_step.py) on configs/tiny.ini and configs/small.ini;
          writes bench/results/step.csv
  attention
          forward + backward of one attention layer (4 heads x 32, band 64,
          maps elu,elu_flip, causal) for L = 2^10 .. 2^K, attn = dense fmm
          combiner_fixed combiner_logsparse in multipole and fmm in the
          PyTorch peer (bench/peers/torch_fmm.py); writes
          bench/results/attention.csv and attention.png, prints a summary

options (step):
  --steps N     timed steps per program and config (default 10)
  --warmup W    untimed steps before them (default 2)
  --threads T   threads for both programs (default: nproc)
  --no-deps     skip scripts/deps.sh --bench
  --no-build    skip scripts/build.sh (use the existing build/multipole)
  --help        show this help

options (attention):
  --max-log2 K        largest L = 2^K (default 20)
  --min-log2 K        smallest L = 2^K (default 10)
  --dense-max-log2 K  cap for dense (default 14)
  --kinds LIST        comma list of attn kinds (default
                      dense,fmm,combiner_fixed,combiner_logsparse)
  --no-torch          skip the PyTorch peer
  --reps N            timed runs per case (default 3; warmup is 1)
  --rounds R          cases per (kind, backend, L), interleaved (default 1);
                      the summary reports medians over the rounds
  --slow-s S          a case slower than S seconds ends its sweep (default 120)
  --mem-frac F        the next L runs only while 2 x the last peak memory
                      stays below F x MemAvailable (default 0.8)
  --threads T         threads for both programs (default: nproc)
  --no-deps, --no-build as for step
Per L the sweeps run in turn (multipole and torch side by side in time).
A kind's sweep stops at its first failure or timeout (600 s per case),
after a case that took more than --slow-s (120 s), or when twice the last peak memory
would exceed --mem-frac (80%) of MemAvailable; each stop is recorded as a '#' line.
USAGE
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BIN=${MPL_BIN:-build/multipole}   # MPL_BIN: another binary (e.g. from a bundle)
PY=/usr/bin/python3   # Debian's python3-torch lives here, not in a pyenv
RESULTS=bench/results
CSV_HEADER="config,backend,d_model,n_layer,n_head,seq_len,batch,threads,steps,median_ms,min_ms,max_ms,tok_per_s"

# data_row OUTPUT: the last line that is neither '#' nor the header row.
data_row() {
  printf '%s\n' "$1" | grep -v '^#' | grep -v '^config,' | tail -n 1
}

# tok_per_s ROW: the last CSV field.
tok_per_s() {
  printf '%s\n' "$1" | awk -F, 'NF > 1 { print $NF }'
}

# bench_prepare DO_DEPS DO_BUILD: scripts/deps.sh --bench when DO_DEPS is 1,
# scripts/build.sh when DO_BUILD is 1, then make $RESULTS.
bench_prepare() {
  if [[ $1 -eq 1 ]]; then
    bash scripts/deps.sh --bench
  fi
  if [[ $2 -eq 1 ]]; then
    bash scripts/build.sh
  fi
  mkdir -p "$RESULTS"
}

bench_step() {
  local steps=10 warmup=2 threads do_deps=1 do_build=1
  threads=$(nproc 2>/dev/null || echo 1)
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --steps) steps=${2:?--steps needs a value}; shift ;;
      --warmup) warmup=${2:?--warmup needs a value}; shift ;;
      --threads) threads=${2:?--threads needs a value}; shift ;;
      --no-deps) do_deps=0 ;;
      --no-build) do_build=0 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh step: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done

  bench_prepare "$do_deps" "$do_build"

  local configs=(configs/tiny.ini configs/small.ini)
  local comments=() rows=() table=() failed=0
  comments+=("# scripts/bench.sh step: $(date -u +%Y-%m-%dT%H:%M:%SZ) host $(hostname)")
  comments+=("# threads $threads steps $steps warmup $warmup")

  local cfg out row_m row_t tm tt ratio
  for cfg in "${configs[@]}"; do
    echo
    echo "=== bench step: $cfg, multipole, $threads threads"
    row_m=""
    # The peer's attention is dense: compare the same model.
    if out=$(OMP_NUM_THREADS=$threads "$BIN" bench step -c "$cfg" --set attn=dense \
               --steps "$steps" --warmup "$warmup"); then
      printf '%s\n' "$out"
      mapfile -t -O "${#comments[@]}" comments < <(printf '%s\n' "$out" | grep '^#' || true)
      row_m=$(data_row "$out")
    else
      printf '%s\n' "$out"
      echo "bench.sh: multipole bench step failed on $cfg" >&2
      failed=1
    fi

    echo "=== bench step: $cfg, torch peer, $threads threads"
    row_t=""
    if out=$(OMP_NUM_THREADS=$threads "$PY" bench/peers/torch_step.py \
               --config "$cfg" --steps "$steps" --warmup "$warmup" \
               --threads "$threads"); then
      printf '%s\n' "$out"
      mapfile -t -O "${#comments[@]}" comments < <(printf '%s\n' "$out" | grep '^#' || true)
      row_t=$(data_row "$out")
    else
      printf '%s\n' "$out"
      echo "bench.sh: torch peer failed on $cfg" >&2
      failed=1
    fi

    [[ -n $row_m ]] && rows+=("$row_m")
    [[ -n $row_t ]] && rows+=("$row_t")
    tm=$(tok_per_s "$row_m"); tt=$(tok_per_s "$row_t")
    if [[ -n $tm && -n $tt ]]; then
      ratio=$(awk -v a="$tm" -v b="$tt" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
    else
      ratio=n/a
    fi
    table+=("$(printf '%-20s %14s %14s %10s' "$cfg" "${tm:-n/a}" "${tt:-n/a}" "$ratio")")
    comments+=("# ratio $cfg multipole/torch tok_per_s = $ratio")
  done

  {
    printf '%s\n' "${comments[@]}"
    echo "$CSV_HEADER"
    if [[ ${#rows[@]} -gt 0 ]]; then printf '%s\n' "${rows[@]}"; fi
  } > "$RESULTS/step.csv"

  echo
  echo "=== bench step: tokens/s ($threads threads; ratio = multipole / torch)"
  printf '%-20s %14s %14s %10s\n' config multipole torch ratio
  printf '%s\n' "${table[@]}"
  echo "results: $RESULTS/step.csv"
  return "$failed"
}

ATTN_HEADER="op,attn,backend,L,heads,d,w,r,causal,threads,median_ms,min_ms,max_ms,ns_per_tok,peak_mb,gflops,sgemm_gflops,io_mb,extra_mb"
ATTN_CASE_TIMEOUT=600   # seconds per case (one process)
ATTN_SLOW_S=120         # a case slower than this ends its kind's sweep

# attn_row OUTPUT: the last line that is neither '#' nor the header row.
attn_row() {
  printf '%s\n' "$1" | grep -v '^#' | grep -v '^op,' | grep ',' | tail -n 1 || true
}

# attn_col ROW NAME: the field NAME (a column of ATTN_HEADER) of ROW.
attn_col() {
  awk -F, -v h="$ATTN_HEADER" -v name="$2" '
    BEGIN { n = split(h, hs, ","); for (i = 1; i <= n; i++) if (hs[i] == name) c = i }
    c && NF > 1 { print $c }' <<<"$1"
}

bench_attention() {
  local max_log2=20 min_log2=10 dense_max=14 reps=3 rounds=1 threads do_deps=1 do_build=1
  local slow_s=$ATTN_SLOW_S mem_frac=0.8
  local do_torch=1 kinds_arg="dense,fmm,combiner_fixed,combiner_logsparse"
  threads=$(nproc 2>/dev/null || echo 1)
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --max-log2) max_log2=${2:?--max-log2 needs a value}; shift ;;
      --min-log2) min_log2=${2:?--min-log2 needs a value}; shift ;;
      --dense-max-log2) dense_max=${2:?--dense-max-log2 needs a value}; shift ;;
      --kinds) kinds_arg=${2:?--kinds needs a value}; shift ;;
      --reps) reps=${2:?--reps needs a value}; shift ;;
      --rounds) rounds=${2:?--rounds needs a value}; shift ;;
      --slow-s) slow_s=${2:?--slow-s needs a value}; shift ;;
      --mem-frac) mem_frac=${2:?--mem-frac needs a value}; shift ;;
      --threads) threads=${2:?--threads needs a value}; shift ;;
      --no-torch) do_torch=0 ;;
      --no-deps) do_deps=0 ;;
      --no-build) do_build=0 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh attention: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done

  bench_prepare "$do_deps" "$do_build"

  local heads=4 dim=32 band=64 maps=elu,elu_flip
  local csv="$RESULTS/attention.csv" png="$RESULTS/attention.png"
  local kinds=() sweeps=() comments=() notes=() rows=() failed=0
  IFS=, read -r -a kinds <<<"$kinds_arg"
  # one sweep per (kind, backend): multipole for every kind, torch for fmm
  local k
  for k in "${kinds[@]}"; do
    sweeps+=("$k:multipole")
    if [[ $k == fmm && $do_torch -eq 1 ]]; then sweeps+=("fmm:torch"); fi
  done
  comments+=("# scripts/bench.sh attention: $(date -u +%Y-%m-%dT%H:%M:%SZ) host $(hostname), load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)")
  comments+=("# threads $threads reps $reps warmup 1 rounds $rounds heads $heads head_dim $dim band $band maps $maps causal 1 batch 1")
  comments+=("# L = 2^$min_log2 .. 2^$max_log2 (dense to 2^$dense_max); per L the sweeps run in turn, $rounds round(s) each (one process per case); per case timeout ${ATTN_CASE_TIMEOUT}s; a sweep stops after a failure, a case > ${slow_s}s, or when 2 x peak_mb > $mem_frac x MemAvailable")

  write_csv() {
    {
      printf '%s\n' "${comments[@]}"
      if [[ ${#notes[@]} -gt 0 ]]; then printf '%s\n' "${notes[@]}"; fi
      echo "$ATTN_HEADER"
      if [[ ${#rows[@]} -gt 0 ]]; then printf '%s\n' "${rows[@]}"; fi
    } > "$csv"
  }

  local sw kind backend lg len out rc t0 t1 secs row peak avail_mb seen round
  local -A seen_hdr=() done_sw=() last_lg=()
  for ((lg = min_log2; lg <= max_log2; lg++)); do
    len=$((1 << lg))
    for ((round = 1; round <= rounds; round++)); do
      for sw in "${sweeps[@]}"; do
        kind=${sw%%:*}; backend=${sw##*:}
        [[ -n ${done_sw[$sw]:-} ]] && continue
        [[ $kind == dense && $lg -gt $dense_max ]] && continue
        echo
        echo "=== bench attention: $kind, $backend, L=2^$lg=$len, round $round/$rounds, $threads threads, load $(cut -d' ' -f1 /proc/loadavg 2>/dev/null)"
        t0=$(date +%s.%N)
        rc=0
        if [[ $backend == multipole ]]; then
          out=$(OMP_NUM_THREADS=$threads timeout "$ATTN_CASE_TIMEOUT" "$BIN" bench attention \
                  --attn "$kind" --len "$len" --heads "$heads" --head-dim "$dim" \
                  --band "$band" --maps "$maps" --causal 1 --reps "$reps" --warmup 1) || rc=$?
        else
          out=$(OMP_NUM_THREADS=$threads timeout "$ATTN_CASE_TIMEOUT" "$PY" bench/peers/torch_fmm.py \
                  --len "$len" --heads "$heads" --head-dim "$dim" --band "$band" \
                  --maps "$maps" --threads "$threads" --reps "$reps" --warmup 1) || rc=$?
        fi
        t1=$(date +%s.%N)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
        printf '%s\n' "$out"
        row=""
        [[ $rc -eq 0 ]] && row=$(attn_row "$out")
        if [[ $rc -ne 0 || -z $row ]]; then
          local why="exit status $rc"
          [[ $rc -eq 124 ]] && why="timeout ${ATTN_CASE_TIMEOUT}s"
          [[ $rc -eq 137 ]] && why="killed (SIGKILL, out of memory?)"
          [[ $rc -eq 0 ]] && why="no data row in its output"
          notes+=("# failed: $kind $backend L=$len after ${secs}s: $why; sweep of $kind $backend stopped")
          echo "bench.sh: $kind $backend L=$len failed ($why); stopping this sweep" >&2
          failed=1
          done_sw[$sw]=1
          write_csv
          continue
        fi
        if [[ -z ${seen_hdr[$sw]:-} ]]; then
          # the '#' lines of a sweep's first successful case, without repeats
          seen_hdr[$sw]=1
          while IFS= read -r seen; do
            local dup=0 c
            [[ $seen == "# io_mb"* ]] && seen="# $backend: ${seen#\# }"
            for c in "${comments[@]}"; do [[ $c == "$seen" ]] && { dup=1; break; }; done
            [[ $dup -eq 0 ]] && comments+=("$seen")
          done < <(printf '%s\n' "$out" | grep '^#' || true)
        fi
        rows+=("$row")
        write_csv
        echo "--- case took ${secs}s"
        # after the last round of this L: stop the sweep if it got slow or
        # the next L (twice the memory) would not fit
        [[ $round -lt $rounds ]] && continue
        if awk -v s="$secs" -v m="$slow_s" 'BEGIN { exit !(s > m) }'; then
          ((lg < max_log2)) && notes+=("# stopped: $kind $backend after L=$len (case took ${secs}s > ${slow_s}s)")
          done_sw[$sw]=1
          continue
        fi
        peak=$(attn_col "$row" peak_mb)
        avail_mb=$(awk '/^MemAvailable:/ { printf "%d", $2 / 1024 }' /proc/meminfo 2>/dev/null || true)
        if [[ -n $peak && -n $avail_mb ]] && ((lg < max_log2)) &&
           awk -v p="$peak" -v a="$avail_mb" -v f="$mem_frac" 'BEGIN { exit !(2 * p > f * a) }'; then
          notes+=("# stopped: $kind $backend after L=$len (peak ${peak} MB; 2x would exceed $mem_frac x MemAvailable ${avail_mb} MB)")
          done_sw[$sw]=1
        fi
      done
    done
  done
  comments+=("# load average at end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)")
  write_csv

  # plot: one series per (attn, backend) that has rows
  local series="" s
  for sw in "${sweeps[@]}"; do
    kind=${sw%%:*}; backend=${sw##*:}
    for row in "${rows[@]}"; do
      if [[ $(attn_col "$row" attn) == "$kind" && $(attn_col "$row" backend) == "$backend" ]]; then
        series+="${series:+ }$sw"; break
      fi
    done
  done
  if [[ -z $series ]]; then
    echo "bench.sh: no rows, no plot" >&2
  elif ! command -v gnuplot >/dev/null 2>&1; then
    echo "bench.sh: gnuplot not found, no plot (apt-get install gnuplot-nox)" >&2
  elif gnuplot -c bench/plot_attention.gp "$csv" "$png" "$series"; then
    echo "plot: $png"
  else
    echo "bench.sh: gnuplot failed" >&2
    failed=1
  fi

  # summary: per L and series the median over rounds of ns per token; for
  # fmm the torch/multipole ratio, both processes' peak and extra memory,
  # multipole's GFLOP/s beside sgemm's; the flatness of each fmm series
  echo
  echo "=== bench attention: ns per token, forward + backward ($threads threads; medians over $rounds round(s); ratio = torch / multipole for fmm, > 1: multipole faster)"
  awk -F, -v h="$ATTN_HEADER" -v series="$series" -v lo="$min_log2" -v hi="$max_log2" '
    function median(key,   n, i, j, t, a) {
      n = cnt[key]; if (!n) return ""
      for (i = 1; i <= n; i++) a[i] = val[key, i]
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function put(key, x) { cnt[key]++; val[key, cnt[key]] = x }
    BEGIN { n = split(h, hs, ","); for (i = 1; i <= n; i++) col[hs[i]] = i
            ns = split(series, ss, " ") }
    /^#/ || /^op,/ { next }
    NF > 1 {
      s = $col["attn"] ":" $col["backend"]; L = $col["L"]
      put("t" SUBSEP s SUBSEP L, $col["ns_per_tok"]); put("p" SUBSEP s SUBSEP L, $col["peak_mb"])
      put("x" SUBSEP s SUBSEP L, $col["extra_mb"]); put("g" SUBSEP s SUBSEP L, $col["gflops"])
      put("r" SUBSEP s SUBSEP L, $col["sgemm_gflops"])
    }
    END {
      printf "%-6s", "L"
      for (i = 1; i <= ns; i++) printf " %20s", ss[i]
      printf " %8s\n", "fmm t/m"
      for (lg = lo; lg <= hi; lg++) {
        L = 2 ^ lg; any = 0
        for (i = 1; i <= ns; i++) if (cnt["t" SUBSEP ss[i] SUBSEP L]) any = 1
        if (!any) continue
        printf "%-6s", "2^" lg
        for (i = 1; i <= ns; i++) { v = median("t" SUBSEP ss[i] SUBSEP L); printf " %20s", v == "" ? "-" : v }
        m = median("t" SUBSEP "fmm:multipole" SUBSEP L); t = median("t" SUBSEP "fmm:torch" SUBSEP L)
        printf " %8s\n", (m > 0 && t > 0) ? sprintf("%.2f", t / m) : "n/a"
      }
      print ""
      print "fmm: us/token, ratio, memory (MB: process peak / the layer beyond its I/O tensors), GFLOP/s (counted) vs sgemm"
      printf "%-6s %10s %10s %7s %18s %18s %8s %8s\n", "L", "multipole", "torch", "ratio", "mp peak/extra", "torch peak/extra", "GFLOP/s", "sgemm"
      for (lg = lo; lg <= hi; lg++) {
        L = 2 ^ lg; m = median("t" SUBSEP "fmm:multipole" SUBSEP L); t = median("t" SUBSEP "fmm:torch" SUBSEP L)
        if (m == "" && t == "") continue
        mp = median("p" SUBSEP "fmm:multipole" SUBSEP L); mx = median("x" SUBSEP "fmm:multipole" SUBSEP L)
        tp = median("p" SUBSEP "fmm:torch" SUBSEP L); tx = median("x" SUBSEP "fmm:torch" SUBSEP L)
        printf "%-6s %10s %10s %7s %18s %18s %8s %8s\n", "2^" lg,
          m == "" ? "-" : sprintf("%.2f", m / 1000), t == "" ? "-" : sprintf("%.2f", t / 1000),
          (m > 0 && t > 0) ? sprintf("%.1fx", t / m) : "n/a",
          mp == "" ? "-" : sprintf("%.0f/%.0f", mp, mx), tp == "" ? "-" : sprintf("%.0f/%.0f", tp, tx),
          m == "" ? "-" : median("g" SUBSEP "fmm:multipole" SUBSEP L), m == "" ? "-" : median("r" SUBSEP "fmm:multipole" SUBSEP L)
      }
      for (i = 1; i <= ns; i++) {
        if (ss[i] !~ /^fmm:/) continue
        # 2^20 against 2^12; without 2^20, the largest L of the series
        a = median("t" SUBSEP ss[i] SUBSEP 2 ^ 12); top = 0
        for (lg = hi; lg > 12 && !top; lg--) if (median("t" SUBSEP ss[i] SUBSEP 2 ^ lg) > 0) top = lg
        b = top ? median("t" SUBSEP ss[i] SUBSEP 2 ^ top) : 0
        printf "flatness %s: ns/tok(2^%s) / ns/tok(2^12) = %s\n", ss[i],
          (top ? top : 20), (a > 0 && b > 0) ? sprintf("%.2f", b / a) : "n/a (missing L)"
      }
    }' "$csv" | tee "$RESULTS/attention.summary.txt"
  # the flatness lines also go into the CSV's top block
  while IFS= read -r s; do
    [[ $s == flatness* ]] && comments+=("# $s")
  done < "$RESULTS/attention.summary.txt"
  write_csv
  rm -f "$RESULTS/attention.summary.txt"
  echo "results: $csv"
  return "$failed"
}

# ckpt: save/load MB/s of a >= 100 MB model at 1, 2, 4 ranks. Every run of
# `multipole bench ckpt` pairs each save and load with a raw write/read of
# as many bytes in the same directory (dd's pattern, in the same process);
# rounds interleave the rank counts and writers, and real dd between rounds
# cross-checks the raw reference. The disk varies several-fold within
# minutes, so the summary is the median over all pairs of each case.
bench_ckpt() {
  local mb=100 rounds=3 runs=2 dir=bench/results/ckpt-tmp do_build=1 bin=${MPL_BIN:-$BIN}
  local writers="auto parallel"
  while [ $# -gt 0 ]; do
    case "$1" in
      --mb) mb=${2:?--mb needs a value}; shift ;;
      --rounds) rounds=${2:?--rounds needs a value}; shift ;;
      --runs) runs=${2:?--runs needs a value}; shift ;;
      --writers) writers=${2:?--writers needs a value}; shift ;;
      --dir) dir=${2:?--dir needs a value}; shift ;;
      --no-build) do_build=0 ;;
      --no-deps) ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh ckpt: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  bench_prepare 0 "$do_build"
  mkdir -p "$dir"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
  local out=$RESULTS/ckpt.csv sum=$RESULTS/ckpt_summary.csv file_mb="" round np wr serial rows
  {
    echo "# bench ckpt: $(git rev-parse --short HEAD 2>/dev/null) host=$(hostname) dir=$dir mb=$mb rounds=$rounds runs=$runs writers=$writers"
    echo "# load at start: $(uptime)"
    echo "op,writer,ranks,file_mb,run,seconds,mb_per_s,ref,ref_seconds,ref_mb_per_s,ratio,round"
    for round in $(seq 1 "$rounds"); do
      for np in 1 2 4; do
        for wr in $writers; do
          case "$wr" in auto) serial= ;; serial) serial=1 ;; parallel) serial=0 ;;
            *) echo "bench.sh ckpt: unknown writer '$wr' (auto, serial, parallel)" >&2; exit 2 ;;
          esac
          rows=$(MPL_CKPT_SERIAL=$serial mpiexec --oversubscribe -n $np "$bin" bench ckpt \
                   --mb "$mb" --reps "$runs" --dir "$dir" | grep -v '^#' | grep -v '^op,')
          printf '%s\n' "$rows" | sed "s/\$/,$round/"
          [ -n "$file_mb" ] || file_mb=$(printf '%s\n' "$rows" | grep -m1 '^save,' | cut -d, -f4)
        done
      done
      # dd itself, as many bytes as the checkpoint: write with fsync, read
      # back from the page cache, then drop the cache (nocache) and read.
      local bytes t0 t1 op
      bytes=$(awk -v m="$file_mb" 'BEGIN { printf "%d", m * 1e6 }')
      for op in dd_write dd_read dd_read_cold; do
        [ $op = dd_read_cold ] && dd if="$dir/dd.bin" iflag=nocache count=0 status=none
        t0=$(date +%s.%N)
        if [ $op = dd_write ]; then
          dd if=/dev/zero of="$dir/dd.bin" bs=4M count="$bytes" iflag=count_bytes conv=fsync status=none
        else
          dd if="$dir/dd.bin" of=/dev/null bs=4M status=none
        fi
        t1=$(date +%s.%N)
        awk -v op=$op -v m="$file_mb" -v a="$t0" -v b="$t1" -v r="$round" \
          'BEGIN { printf "%s,dd,1,%s,1,%.4f,%.1f,,,,,%d\n", op, m, b - a, m / (b - a), r }'
      done
      rm -f "$dir/dd.bin"
    done
    echo "# load at end: $(uptime)"
  } | tee "$out.part"
  mv "$out.part" "$out"
  rmdir "$dir" 2>/dev/null || true
  # Medians over every pair of each (op, writer, ranks).
  {
    echo "op,writer,ranks,pairs,median_mb_per_s,median_ref_mb_per_s,median_ratio,min_ratio,max_ratio"
    grep -v '^#' "$out" | grep -v '^op,' | cut -d, -f1-3 | sort -u | while IFS=, read -r op wr np; do
      grep -v '^#' "$out" | awk -F, -v o="$op" -v w="$wr" -v n="$np" '$1 == o && $2 == w && $3 == n' |
        awk -F, -v key="$op,$wr,$np" '
          function med(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
          }
          { n++; mbs[n] = $7; ref[n] = $10; rat[n] = $11 }
          END {
            lo = hi = rat[1]; for (i = 1; i <= n; i++) { if (rat[i] < lo) lo = rat[i]; if (rat[i] > hi) hi = rat[i] }
            if (ref[1] == "") printf "%s,%d,%.1f,,,,\n", key, n, med(mbs, n)
            else printf "%s,%d,%.1f,%.1f,%.3f,%.3f,%.3f\n", key, n, med(mbs, n), med(ref, n), med(rat, n), lo, hi
          }'
    done
  } | tee "$sum"
  echo "wrote $out and $sum"
}

bench_comm() {
  local max_log2=20 do_build=1 bin=${MPL_BIN:-$BIN}
  while [ $# -gt 0 ]; do
    case "$1" in
      --max-log2) max_log2=${2:?--max-log2 needs a value}; shift ;;
      --no-build) do_build=0 ;;
      --no-deps) ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh comm: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  bench_prepare 0 "$do_build"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
  local out=$RESULTS/comm.csv comb_max=$((max_log2 < 18 ? max_log2 : 18))
  {
    mpiexec --oversubscribe -n 4 "$bin" bench comm --attn fmm --causal 1 --max-log2 "$max_log2"
    mpiexec --oversubscribe -n 4 "$bin" bench comm --attn fmm --causal 0 --max-log2 "$max_log2" | grep -v '^op,'
    mpiexec --oversubscribe -n 4 "$bin" bench comm --attn combiner_fixed --max-log2 "$comb_max" | grep -v '^op,'
    mpiexec --oversubscribe -n 4 "$bin" bench comm --attn combiner_logsparse --causal 1 --max-log2 "$max_log2" | grep -v '^op,'
    mpiexec --oversubscribe -n 4 "$bin" bench comm --attn combiner_logsparse --causal 1 --plus 1 --max-log2 "$max_log2" | grep -v '^op,'
  } | tee "$out"
  awk -F, '$1 == "comm" && ($11 != $13 || $12 != $14) { bad = 1; print "measured bytes differ from the formula: " $0 }
           END { exit bad }' "$out" && echo "every row matches the formula"
  echo "wrote $out"
}

bench_sp() {
  local len=16384 max_log2=20 do_build=1 bin=${MPL_BIN:-$BIN} cores
  cores=$(nproc 2>/dev/null || echo 1)
  while [ $# -gt 0 ]; do
    case "$1" in
      --len) len=${2:?--len needs a value}; shift ;;
      --max-log2) max_log2=${2:?--max-log2 needs a value}; shift ;;
      --no-build) do_build=0 ;;
      --no-deps) ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh sp: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  bench_prepare 0 "$do_build"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  local out=$RESULTS/sp.csv np th row
  local C=(-c configs/tiny.ini --set attn=fmm --set batch=1)
  {
    echo "# bench sp: $(git rev-parse --short HEAD 2>/dev/null) host=$(hostname) cores=$cores config=configs/tiny.ini attn=fmm batch=1"
    echo "$CSV_HEADER,sp"
    for np in 1 2 4; do
      th=$((cores / np)); th=$((th > 0 ? th : 1))
      # --bind-to none: Open MPI binds 1-2 ranks to one core each, which
      # would put all of a rank's threads on one core
      row=$(OMP_NUM_THREADS=$th mpiexec --oversubscribe --bind-to none -n $np -x OMP_NUM_THREADS "$bin" bench step \
              "${C[@]}" --set seq_len="$len" --set sp=$np --steps 3 --warmup 1 2>&1 | grep '^configs/' || true)
      echo "${row:-# sp=$np failed},$np"
    done
    local k best=0 t0 t1 mem_kb
    for ((k = 14; k <= max_log2; k++)); do
      mem_kb=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
      t0=$(date +%s)
      if OMP_NUM_THREADS=1 timeout 900 mpiexec --oversubscribe -n 4 "$bin" bench step "${C[@]}" \
           --set seq_len=$((1 << k)) --set sp=4 --steps 1 --warmup 0 > /dev/null 2>&1; then
        best=$k
        t1=$(date +%s)
        echo "# sp=4: L=2^$k trains (one step $((t1 - t0)) s, MemAvailable before $((mem_kb / 1024)) MiB)"
      else
        echo "# sp=4: L=2^$k failed or timed out"
        break
      fi
    done
    echo "# longest L trained at sp=4: 2^$best = $((1 << best)) tokens"
  } | tee "$out"
  echo "wrote $out"
}

# maxlen: the longest sequence whose training step completes, per config
# and rank count: powers of two up to what the memory plan admits, then the
# plan's own maximum (times --margin), each one real step.
bench_maxlen() {
  local do_build=1 bin=${MPL_BIN:-$BIN} configs="tiny small" ranks="1 4" max_log2=24
  local margin=0.97 tmo=7200 cores dry=0
  cores=$(nproc 2>/dev/null || echo 1)
  while [ $# -gt 0 ]; do
    case "$1" in
      --configs) configs=${2:?--configs needs a value}; shift ;;
      --ranks) ranks=${2:?--ranks needs a value}; shift ;;
      --max-log2) max_log2=${2:?--max-log2 needs a value}; shift ;;
      --margin) margin=${2:?--margin needs a value}; shift ;;
      --timeout) tmo=${2:?--timeout needs a value}; shift ;;
      --plan-only) dry=1 ;;
      --no-build) do_build=0 ;;
      --no-deps) ;;
      -h|--help) usage; exit 0 ;;
      *) echo "bench.sh maxlen: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  bench_prepare 0 "$do_build"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  local out=$RESULTS/maxlen.csv
  {
    echo "# bench maxlen: $(git rev-parse --short HEAD 2>/dev/null) host=$(hostname) cores=$cores" \
         "MemTotal=$(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB margin=$margin"
    echo "# every run: attn=fmm band=64 maps=elu,elu_flip batch=1 recompute=layer chunk_tokens=8192, one step on generated tokens"
    echo "config,d_model,n_layer,n_head,ranks,seq_len,kind,plan_mib,peak_mib,step_s,tok_per_s,status"
    local name d nl nh np C plan longest k L row th t0 t1 pmib peak status
    for name in $configs; do
      case $name in
        tiny) d=256 nl=4 nh=4 ;;
        small) d=512 nl=8 nh=8 ;;
        *) echo "# unknown config $name (tiny|small)"; continue ;;
      esac
      for np in $ranks; do
        th=$((cores / np)); th=$((th > 0 ? th : 1))
        C=(-c configs/tiny.ini --set attn=fmm --set band=64 --set fmm_maps=elu,elu_flip --set batch=1
           --set recompute=layer --set chunk_tokens=8192 --set d_model=$d --set n_layer=$nl
           --set n_head=$nh --set sp=$np --set dp=1)
        plan=$("$bin" plan "${C[@]}" --set seq_len=$((1 << 20)) --world $np 2>&1 || true)
        longest=$(printf '%s\n' "$plan" | sed -n 's/.*the longest seq_len that fits .* per rank: \([0-9]*\)$/\1/p')
        echo "# $name ranks=$np: the plan admits seq_len <= ${longest:-?} ($(printf '%s\n' "$plan" | grep -o 'of [0-9.]* GiB ([^)]*)' | head -1))"
        [ -n "$longest" ] || continue
        local lens=() top
        top=$(awk -v l="$longest" -v m="$margin" -v p="$np" 'BEGIN { printf "%d", int(l * m / p) * p }')
        for ((k = 14; k <= max_log2 && (1 << k) <= top; k++)); do lens+=("$((1 << k)):pow2"); done
        lens+=("$top:max")
        for L in "${lens[@]}"; do
          local kind=${L#*:}; L=${L%:*}
          if [ $dry -eq 1 ]; then echo "$name,$d,$nl,$nh,$np,$L,$kind,,,,,planned"; continue; fi
          t0=$(date +%s)
          row=$(OMP_NUM_THREADS=$th timeout "$tmo" mpiexec --oversubscribe --bind-to none -n $np -x OMP_NUM_THREADS "$bin" \
                  bench step "${C[@]}" --set seq_len=$L --steps 1 --warmup 0 2>&1 || true)
          t1=$(date +%s)
          pmib=$(printf '%s\n' "$row" | sed -n 's/.*memory plan \([0-9.]*\) MiB, peak resident \([0-9.]*\) MiB.*/\1/p')
          peak=$(printf '%s\n' "$row" | sed -n 's/.*memory plan \([0-9.]*\) MiB, peak resident \([0-9.]*\) MiB.*/\2/p')
          status=ok; [ -n "$peak" ] || status="failed: $(printf '%s\n' "$row" | grep -m1 -i 'error\|killed' | tr ',' ';')"
          echo "$name,$d,$nl,$nh,$np,$L,$kind,$pmib,$peak,$((t1 - t0)),$(awk -v l=$L -v s=$((t1 - t0)) 'BEGIN { if (s > 0) printf "%.0f", l / s }'),$status"
          [ "$status" = ok ] || break
        done
      done
    done
  } | tee "$out"
  echo "wrote $out"
}

source "$ROOT/scripts/bench_gpu.sh"

case "${1:-}" in
  step) shift; bench_step "$@" ;;
  gpu-step) shift; bench_gpu_step "$@" ;;
  maxlen) shift; bench_maxlen "$@" ;;
  comm) shift; bench_comm "$@" ;;
  sp) shift; bench_sp "$@" ;;
  attention) shift; bench_attention "$@" ;;
  ckpt) shift; bench_ckpt "$@" ;;
  -h|--help) usage ;;
  "") usage >&2; exit 2 ;;
  *) echo "bench.sh: unknown subcommand '$1'" >&2; usage >&2; exit 2 ;;
esac
