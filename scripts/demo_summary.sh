#!/usr/bin/env bash
# scripts/demo_summary.sh EAGER_LOG GRAPH_LOG - `make demo`'s last word: the first epoch's
# training throughput of the eager run and of the compiled-graph run of examples/fashion_mnist,
# their ratio (one run each on a shared machine: see docs/benchmarks.md for medians), and a
# check that both runs had the same per-epoch losses (exit 1 otherwise).
set -u
rate() { sed -n 's/^epoch 1: .*(\([0-9]*\) samples\/s).*/\1/p' "$1" | head -1; }
e=$(rate "$1") g=$(rate "$2")
if [ -z "$e" ] || [ -z "$g" ]; then
  echo "demo: could not read the epoch throughput from $1 / $2" >&2
  exit 1
fi
awk -v e="$e" -v g="$g" 'BEGIN {
  printf "demo: LeNet epoch 1, eager %d samples/s, compiled graph %d samples/s: %.2fx\n", e, g, g / e
}'
# the two runs train the same model on the same batches: their losses must be the same
le=$(grep '^epoch [0-9]*: loss' "$1" | sed 's/,.*//') lg=$(grep '^epoch [0-9]*: loss' "$2" | sed 's/,.*//')
if [ "$le" = "$lg" ]; then
  echo "demo: eager and graph training losses are identical ($(echo "$lg" | tr '\n' ' '))"
else
  echo "demo: eager and graph losses differ:" >&2
  printf '  eager: %s\n  graph: %s\n' "$le" "$lg" >&2
  exit 1
fi
