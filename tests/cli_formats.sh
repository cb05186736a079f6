#!/usr/bin/env bash
# Inputs beyond bytes through the command: FASTA (dna) and raw uint16 ids
# are prepared (inspect shows the tokenizer), a model trains on them only
# with a vocabulary that covers the data, eval reports bits per byte where
# the text size is known, and sample decodes with the model's tokenizer
# (bases as letters, ids as numbers below vocab_size).
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
# FASTA: two records, 60 bases a line, lower case and an N run in the middle
awk 'BEGIN { srand(3); split("A C G T", b, " ");
  for (r = 0; r < 2; r++) { printf ">chr%d test\n", r + 1;
    for (i = 1; i <= 12000; i++) { c = b[int(rand() * 4) + 1]; if (i > 5000 && i < 5100) c = "N";
      if (i % 7 == 0) c = tolower(c); printf "%s%s", c, (i % 60 == 0) ? "\n" : "" } printf "\n" } }' > g.fa
"$MPL_BIN" prepare --quiet --tokenizer dna --in g.fa --out dna.h5 --val-fraction 0.05 || bad "prepare dna"
i=$("$MPL_BIN" inspect dna.h5)
grep -q "^tokenizer: *dna" <<< "$i" && grep -q "^vocab_size: *5$" <<< "$i" && grep -q "^n_tokens: *22800 " <<< "$i" &&
  ok "dna: 24000 bases (headers and line breaks skipped), vocab 5" || bad "dna inspect: $i"
T=(-c "$MPL_SRC/configs/tiny.ini" --set d_model=32 --set n_layer=1 --set seq_len=32 --set band=8
   --set batch=4 --set steps=4 --set warmup=1 --set peak_flops=1e9 --quiet)
"$MPL_BIN" train "${T[@]}" --set data=dna.h5 --set vocab_size=8 --set run_dir=d > d.log 2>&1 &&
  ok "dna model trains (vocab_size 8 >= 5)" || bad "dna train: $(cat d.log)"
s=$("$MPL_BIN" sample --ckpt d --prompt "ACGT" --tokens 60 --seed 1)
[[ "$s" =~ ^ACGT[ACGTN]{60}$ ]] && ok "dna sample decodes bases: $s" || bad "dna sample: '$s'"
e=$("$MPL_BIN" eval --ckpt d --quiet)
grep -q "bits/token | [0-9.]* bits/byte" <<< "$e" && ok "dna eval: $e" || bad "dna eval: $e"

# uint16 ids below 1000, little-endian (nanoGPT's train.bin)
perl -e 'srand(5); my @t; for (1..30000) { push @t, int(rand(40)) * 25 + ($_ % 25) }; print pack("v*", @t)' > ids.bin
"$MPL_BIN" prepare --quiet --tokenizer uint16 --vocab-size 1000 --in ids.bin --out ids.h5 || bad "prepare uint16"
i=$("$MPL_BIN" inspect ids.h5)
grep -q "^tokenizer: *ids" <<< "$i" && grep -q "^vocab_size: *1000$" <<< "$i" && grep -q "(train, 2 byte(s) each)" <<< "$i" &&
  ok "uint16: 30000 ids, vocab 1000, stored as uint16" || bad "ids inspect: $i"
"$MPL_BIN" train "${T[@]}" --set data=ids.h5 --set run_dir=x > x.log 2>&1
grep -q "ids.h5 holds ids tokens of vocab_size 1000 but the model's vocab_size is 256: set vocab_size >= 1000" x.log &&
  ok "a model of vocab 256 is refused on ids of vocab 1000" || bad "vocab check: $(cat x.log)"
"$MPL_BIN" train "${T[@]}" --set data=ids.h5 --set vocab_size=1000 --set run_dir=i > i.log 2>&1 &&
  ok "ids model trains (vocab_size 1000)" || bad "ids train: $(cat i.log)"
s=$("$MPL_BIN" sample --ckpt i --prompt "7 32 999" --tokens 20 --seed 2)
if awk '{ if ($1 != 7 || $2 != 32 || $3 != 999 || NF != 23) exit 1; for (k = 1; k <= NF; k++) if ($k !~ /^[0-9]+$/ || $k >= 1000) exit 1 }' <<< "$s"; then
  ok "ids sample: numbers below 1000: ${s:0:40}..."
else
  bad "ids sample: '$s'"
fi
e=$("$MPL_BIN" eval --ckpt i --quiet)
grep -q "bits/token | n/a bits/byte" <<< "$e" && ok "ids eval without --text-bytes: bits/byte n/a" || bad "ids eval: $e"
"$MPL_BIN" prepare --quiet --tokenizer uint16 --vocab-size 1000 --text-bytes 120000 --in ids.bin --out ids4.h5
e=$("$MPL_BIN" eval --ckpt i --data ids4.h5 --quiet)
awk '{ exit !($5 > 0 && $8 > 0 && ($5 / $8 - 4) < 1e-4 && ($5 / $8 - 4) > -1e-4) }' <<< "$e" &&
  ok "--text-bytes 4 per id: bits/byte = bits/token / 4: $e" || bad "text-bytes eval: $e"
finish
