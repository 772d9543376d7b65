#!/usr/bin/env bash
# Resuming from a checkpoint in a fresh process reproduces the uninterrupted run bit for bit:
# train 2 epochs straight vs 1 epoch (--stop-after 1), then --resume for the 2nd; the final
# checkpoints (weights, optimizer state, step, RNG) must be byte-identical.
set -euo pipefail
bin=${1:?usage: resume_check.sh path/to/fashion_mnist}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--model lenet --epochs 2 --limit 2048 --batch 64)
"$bin" "${common[@]}" --save "$tmp/straight.kiln" > "$tmp/a.log"
"$bin" "${common[@]}" --stop-after 1 --save "$tmp/resumed.kiln" > "$tmp/b.log"
"$bin" "${common[@]}" --resume "$tmp/resumed.kiln" --save "$tmp/resumed.kiln" >> "$tmp/b.log"
if cmp "$tmp/straight.kiln" "$tmp/resumed.kiln"; then
  echo "resume: checkpoints identical"
  echo "1 passed, 0 failed"
else
  echo "resume: the resumed run differs from the uninterrupted one"
  cat "$tmp/a.log" "$tmp/b.log"
  echo "0 passed, 1 failed"
  exit 1
fi
