# Plot of bench/results/attention.csv (scripts/bench.sh attention runs it):
#   gnuplot -c bench/plot_attention.gp CSV PNG "SERIES"
# SERIES is a space-separated list of attn:backend pairs present in CSV,
# e.g. "dense:multipole fmm:multipole fmm:torch". Two panels: time per token
# (ns_per_tok, column 14) and peak memory (peak_mb, column 15) against L
# (column 4), both axes logarithmic. '#' lines are comments; the header row
# has no numbers and is skipped.
csv    = ARG1
png    = ARG2
series = ARG3

set datafile separator ","
set datafile commentschars "#"
# pngcairo where this gnuplot has it, the libgd png terminal otherwise
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1400,560 font ",10"
} else {
  set terminal png size 1400,560
}
set output png

set multiplot layout 1,2 title "attention forward + backward, one layer (".csv.")" noenhanced
set logscale xy 2
set format x "2^{%L}"
set xlabel "sequence length L"
set grid
set key top left

# value of column c for rows of series s, NaN elsewhere
sel(s, c) = (strcol(2).":".strcol(3) eq s) ? column(c) : NaN

set ylabel "time per token (ns, median)"
set logscale y 10
set format y "10^{%L}"
plot for [s in series] csv using 4:(sel(s, 14)) with linespoints title s noenhanced

set ylabel "peak memory (MB)"
plot for [s in series] csv using 4:(sel(s, 15)) with linespoints title s noenhanced

unset multiplot
