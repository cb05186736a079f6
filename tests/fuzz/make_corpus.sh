#!/usr/bin/env bash
# Seed corpora for the fuzz targets, made fresh from the sources and the
# multipole binary (no binaries in git):
#   OUT/config/  the repository's configs, a resolved config, the config text
#                saved in a checkpoint, FASTA and prompt snippets
#   OUT/h5/      small token files (bytes, dna, uint16 ids), a small
#                checkpoint, and truncated and bit-flipped copies of them
# usage: tests/fuzz/make_corpus.sh MULTIPOLE_BINARY OUT_DIR
set -euo pipefail
BIN=$1
OUT=$2
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mkdir -p "$OUT/config" "$OUT/h5"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

cp "$SRC"/configs/*.ini "$OUT/config/"
"$BIN" config -c "$SRC/configs/tiny.ini" > "$OUT/config/resolved.ini"
printf 'lr=3e-4\n' > "$OUT/config/set.txt"
printf '>chr1 test\nACGTNacgtn\nRYKM\n;comment\nGATTACA\n' > "$OUT/config/fasta.txt"
printf '15496, 11 995\n50256' > "$OUT/config/ids.txt"

cd "$W"
awk 'BEGIN { srand(1); for (i = 0; i < 3000; i++) printf "%c", 97 + int(rand() * 6) }' > text.txt
awk 'BEGIN { srand(2); print ">s"; for (i = 1; i <= 1200; i++) { printf "%s", substr("ACGT", int(rand() * 4) + 1, 1); if (i % 60 == 0) print "" } }' > g.fa
perl -e 'srand(3); print pack("v*", map { int(rand(500)) } 1 .. 1500)' > ids.bin
"$BIN" prepare --quiet --in text.txt --out "$OUT/h5/bytes.h5" --val-fraction 0.1
"$BIN" prepare --quiet --tokenizer dna --in g.fa --out "$OUT/h5/dna.h5" --val-fraction 0.1
"$BIN" prepare --quiet --tokenizer uint16 --vocab-size 500 --in ids.bin --out "$OUT/h5/ids.h5"
"$BIN" train -c "$SRC/configs/tiny.ini" --set data="$OUT/h5/dna.h5" --set vocab_size=5 \
  --set d_model=8 --set n_head=2 --set n_layer=1 --set mlp_mult=1 --set seq_len=16 --set band=4 \
  --set batch=1 --set steps=1 --set warmup=0 --set run_dir=r --set peak_flops=1e9 --quiet > /dev/null
cp r/ckpt-1.h5 "$OUT/h5/ckpt.h5"
"$BIN" inspect r/ckpt-1.h5 | sed -n '/^config/,$p' > "$OUT/config/ckpt-config.txt" || true
for f in bytes dna ids ckpt; do
  s=$(stat -c %s "$OUT/h5/$f.h5")
  head -c $((s / 2)) "$OUT/h5/$f.h5" > "$OUT/h5/$f-half.h5"
  # flip one byte in the middle third (metadata and data both live there)
  cp "$OUT/h5/$f.h5" "$OUT/h5/$f-flip.h5"
  printf '\xff' | dd of="$OUT/h5/$f-flip.h5" bs=1 seek=$((s / 3)) conv=notrunc status=none
done
echo "corpus: $(ls "$OUT/config" | wc -l) config seeds, $(ls "$OUT/h5" | wc -l) HDF5 seeds in $OUT"
