#!/usr/bin/env bash
# Compiled training on the real data set: examples/fashion_mnist trained in --mode eager and in
# --mode graph (kn_train_step) from the same seed gives the same per-epoch losses and byte-identical
# checkpoints (weights, optimizer state, scheduler, step), for the MLP and LeNet, over 2 short
# epochs of 20 full batches and a partial one (which the graph traces and compiles separately).
set -euo pipefail
bin=${1:?usage: graph_mode_check.sh path/to/fashion_mnist}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for model in mlp lenet; do
  common=(--model "$model" --epochs 2 --limit 1300 --batch 64)
  "$bin" "${common[@]}" --mode eager --save "$tmp/$model-eager.kiln" > "$tmp/$model-eager.log"
  "$bin" "${common[@]}" --mode graph --save "$tmp/$model-graph.kiln" > "$tmp/$model-graph.log" 2>&1
  le=$(grep '^epoch [0-9]*: loss' "$tmp/$model-eager.log" | sed 's/, [0-9.]* s (.*//')
  lg=$(grep '^epoch [0-9]*: loss' "$tmp/$model-graph.log" | sed 's/, [0-9.]* s (.*//')
  if [ -n "$le" ] && [ "$le" = "$lg" ] && cmp -s "$tmp/$model-eager.kiln" "$tmp/$model-graph.kiln"; then
    echo "graph mode: $model: same losses and identical checkpoints"
  else
    echo "graph mode: $model: eager and graph training differ"
    printf '  eager: %s\n  graph: %s\n' "$le" "$lg"
    fail=1
  fi
done
if [ $fail = 0 ]; then echo "2 passed, 0 failed"; else echo "failed"; exit 1; fi
