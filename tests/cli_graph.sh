#!/usr/bin/env bash
# The graph file commands of the kiln CLI, on the fixture test_graph_file writes into DIR (a LeNet
# graph file, an input batch of 4, the output the library computed for it, a weights-only file):
# `kiln info` (with and without --plan, on a graph and on a weights file), `kiln run` (the output
# .npy has the right size and the library's exact bytes), `kiln bench --iters 5`, and bad
# invocations exit non-zero with a message.
set -uo pipefail
kiln=${1:?usage: cli_graph.sh path/to/kiln DIR}
dir=${2:?usage: cli_graph.sh path/to/kiln DIR}
graph=$dir/test_lenet_graph.kiln
input=$dir/test_lenet_input.npy
expected=$dir/test_lenet_expected.npy
weights=$dir/test_lenet_weights.kiln
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() { echo "[ ok ] $1"; passed=$((passed + 1)); }
bad() { echo "[FAIL] $1"; failed=$((failed + 1)); }

# expect_ok NAME GREP-PATTERN CMD...: exit 0 and stdout matching the pattern
expect_ok() {
  local name=$1 pat=$2
  shift 2
  if "$@" > "$tmp/out" 2> "$tmp/err" && grep -qE -- "$pat" "$tmp/out"; then
    ok "$name"
  else
    bad "$name"
    cat "$tmp/out" "$tmp/err"
  fi
}
# expect_fail NAME GREP-PATTERN CMD...: non-zero exit and a message on stderr matching the pattern
expect_fail() {
  local name=$1 pat=$2
  shift 2
  if "$@" > "$tmp/out" 2> "$tmp/err"; then
    bad "$name (exit 0)"
  elif grep -qE -- "$pat" "$tmp/err"; then
    ok "$name"
  else
    bad "$name (message)"
    cat "$tmp/err"
  fi
}

for f in "$graph" "$input" "$expected" "$weights"; do
  [ -f "$f" ] || { echo "missing fixture $f (run test_graph_file first)"; echo "0 passed, 1 failed"; exit 1; }
done

expect_ok "info graph" "output +float32 +\(batch, 10\)" "$kiln" info "$graph"
expect_ok "info graph parameters" "44426 parameters" "$kiln" info "$graph"
expect_ok "info --plan" "schedule \(batch 2\)" "$kiln" info "$graph" --plan --batch 2
expect_ok "info weights file" "total: 44426 parameters" "$kiln" info "$weights"

expect_ok "run" "output.npy" "$kiln" run "$graph" -i "$input" -o "$tmp/out1/sub"
if [ -f "$tmp/out1/sub/output.npy" ]; then
  # npy header (a multiple of 64 bytes) + 4 x 10 float32
  size=$(stat -c %s "$tmp/out1/sub/output.npy")
  if [ $(( (size - 160) % 64 )) -eq 0 ] && [ "$size" -gt 160 ]; then ok "run output size"; else bad "run output size ($size)"; fi
  if cmp -s "$tmp/out1/sub/output.npy" "$expected"; then ok "run output bytes"; else bad "run output bytes"; fi
else
  bad "run output exists"
fi
expect_ok "run named input" "output.npy" "$kiln" run "$graph" -i "input=$input" -o "$tmp/out2"
[ -f "$tmp/out2/output.npy" ] && ok "named output exists" || bad "named output exists"

expect_ok "bench" "samples_per_s=" "$kiln" bench "$graph" --iters 5 --warmup 1 --batch 2
expect_ok "bench percentiles" "p50 .* p90 .* p99" "$kiln" bench "$graph" --iters 5 --warmup 0

expect_fail "info missing file" "nope.kiln: cannot open" "$kiln" info "$tmp/nope.kiln"
expect_fail "info not a kiln file" "test_lenet_input.npy" "$kiln" info "$input"
expect_fail "run missing file" "nope.kiln" "$kiln" run "$tmp/nope.kiln" -i "$input" -o "$tmp/o"
expect_fail "run bad -i file" "missing.npy: cannot open" "$kiln" run "$graph" -i "$tmp/missing.npy" -o "$tmp/o"
expect_fail "run no -i" "input 'input' .* not given" "$kiln" run "$graph" -o "$tmp/o"
expect_fail "run extra -i" "extra input" "$kiln" run "$graph" -i "$input" -i "$input" -o "$tmp/o"
expect_fail "run wrong shape" "input 'input' has shape \(4, 10\)" "$kiln" run "$graph" -i "$expected" -o "$tmp/o"
expect_fail "run -i without argument" "-i needs an argument" "$kiln" run "$graph" -i
expect_fail "run without -o" "no output directory" "$kiln" run "$graph" -i "$input"
expect_fail "run on a weights file" "not a graph file" "$kiln" run "$weights" -i "$input" -o "$tmp/o"
expect_fail "bench bad --iters" "--iters needs an integer" "$kiln" bench "$graph" --iters 0
expect_fail "info bad --batch" "--batch needs a positive integer" "$kiln" info "$graph" --batch x

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
