#!/usr/bin/env bash
# bench/onnx.sh - `make bench B=onnx`: kiln vs ONNX Runtime 1.30 (npm onnxruntime-node) on the
# same .onnx files, in the same run. Setup: npm installs onnxruntime-node into bench/ort/
# (ignored; --ignore-scripts, see shared PEERS.md) and tools/gen_onnx_models.py --bench exports
# the models with Debian's PyTorch into bench/out/onnx/: the Fashion-MNIST MLP and LeNet and
# ResNet-18 (random weights, 3x224x224), batch dim symbolic.
# Per round, per (model, batch, threads): `kiln bench MODEL.onnx` (import, compile frozen,
# run_into) then `node bench/ort_bench.js` (session with intraOpNumThreads = threads, graph
# optimisation "all"); each prints the median of per-call latencies after a warm-up. Rounds
# interleave kiln and ORT. One line per case: medians over rounds and ratio = kiln_ms / ort_ms
# (< 1: kiln faster). Targets (issue 5): MLP and LeNet <= 1.0, ResNet-18 <= 1.3.
# Environment: BENCH_ROUNDS=3, ONNX_MODELS=mlp,lenet,resnet18, ONNX_BATCHES="1 64",
#   ONNX_THREADS="1 2", BENCH_TARGET_S=0.5 (timed seconds per case per round), BUILD=build.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
ROUNDS=${BENCH_ROUNDS:-3}
MODELS=${ONNX_MODELS:-mlp,lenet,resnet18}
BATCHES=${ONNX_BATCHES:-1 64}
THREADS=${ONNX_THREADS:-1 2}
TARGET=${BENCH_TARGET_S:-0.5}
say() { echo "[bench] $*" >&2; }

if [ ! -d bench/ort/node_modules/onnxruntime-node ]; then
  command -v npm >/dev/null || { echo "bench/onnx.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
  say "installing onnxruntime-node@1.30.0 into bench/ort (npm, --ignore-scripts)"
  mkdir -p bench/ort
  (cd bench/ort && npm install --no-audit --no-fund --ignore-scripts onnxruntime-node@1.30.0 \
     >/dev/null) || { echo "bench/onnx.sh: npm install failed" >&2; exit 1; }
fi
mkdir -p bench/out/onnx
for m in ${MODELS//,/ }; do
  if [ ! -f "bench/out/onnx/$m.onnx" ]; then
    say "exporting the benchmark models with PyTorch (tools/gen_onnx_models.py --bench)"
    /usr/bin/python3 tools/gen_onnx_models.py --bench bench/out/onnx >/dev/null || exit 1
    break
  fi
done
stamp=$(date +%Y%m%d-%H%M%S)
raw="bench/out/onnx-$stamp.raw"
echo "# bench=onnx date=$(date -Is) nproc=$(nproc) rounds=$ROUNDS rev=$(git rev-parse --short HEAD 2>/dev/null)" >"$raw"
for ((r = 1; r <= ROUNDS; r++)); do
  for m in ${MODELS//,/ }; do
    for b in $BATCHES; do
      for t in $THREADS; do
        iters=400 warm=50
        [ "$b" = 64 ] && iters=100 warm=10
        [ "$m" = resnet18 ] && iters=$(( b == 1 ? 30 : 3 )) warm=3
        say "round $r/$ROUNDS: $m batch $b threads $t"
        p=$("./$BUILD/kiln" bench "bench/out/onnx/$m.onnx" --batch "$b" --threads "$t" \
              --iters "$iters" --warmup "$warm" 2>/dev/null | sed -n 's/^bench=graph.* p50_ms=\([0-9.]*\).*/\1/p')
        echo "raw kiln model=$m batch=$b threads=$t p50_ms=${p:-nan}" >>"$raw"
        node bench/ort_bench.js "bench/out/onnx/$m.onnx" "$m" "$b" "$t" "$TARGET" >>"$raw" 2>&2
      done
    done
  done
done
/usr/bin/python3 - "$raw" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"raw (\w+) model=(\S+) batch=(\d+) threads=(\d+) p50_ms=(\S+)", line)
    if m and m.group(5) != "nan":
        rows.setdefault((m.group(2), int(m.group(3)), int(m.group(4))), {}).setdefault(
            m.group(1), []).append(float(m.group(5)))
target = {"mlp": 1.0, "lenet": 1.0, "resnet18": 1.3}
missed = []
print("%-9s %5s %7s %10s %10s %7s %s" % ("model", "batch", "threads", "kiln_ms", "ort_ms", "ratio", "target"))
for (model, b, t), v in sorted(rows.items()):
    if "kiln" not in v or "ort" not in v:
        continue
    k, o = statistics.median(v["kiln"]), statistics.median(v["ort"])
    ratio = k / o
    ok = ratio <= target.get(model, 1.0)
    if not ok:
        missed.append("%s b%d t%d %.2f" % (model, b, t, ratio))
    print("%-9s %5d %7d %10.4f %10.4f %7.3f <= %.1f %s" % (model, b, t, k, o, ratio,
          target.get(model, 1.0), "ok" if ok else "MISSED"))
print("targets missed: " + (", ".join(missed) if missed else "none"))
PY
echo "raw lines: $raw" >&2
