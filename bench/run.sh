#!/usr/bin/env bash
# bench/run.sh - kiln's benchmark entry (`make bench B=<name>`): runs kiln and PyTorch alternately
# (kiln, torch, kiln, torch, ...) for BENCH_ROUNDS rounds, then prints one line per case with the
# median over rounds and ratio_vs_pytorch = torch_ms / kiln_ms (> 1: kiln faster), and a summary.
# train: samples/s of a training loop (bench_train.c), ratio = kiln / PyTorch's best setting, plus
# peak RSS and a 1- vs 3-epoch flat-memory check.
# graph: static graphs (issue 4). Per round, per model: bench_train --mode eager, then --mode
# graph (compiled kn_train_step; kiln only): speedup = graph / eager samples/s and the step's
# memory (step_mem_mb, the graph's arena included; see bench_train.c), graph / eager; then
# bench_infer (kiln graph: trace + compile(freeze) + run_into, and kiln eager, batch 1 and 64,
# threads GRAPH_THREADS) and `peer_torch.py infer` (PyTorch eager under inference_mode and
# torch.jit.trace + freeze) per torch setting: per (model, batch) each side's best thread
# setting, ratio_vs_eager = torch_ms / kiln_ms, ratio_vs_jit = jit_ms / kiln_ms.
# Targets: graph training >= 1.18x eager (LeNet), >= 1.0x (MLP); step memory <= 0.7x eager;
# kiln <= 0.5x PyTorch eager latency at batch 1; kiln <= torch.jit in every case. The summary
# lists the targets not met.
# It appends nothing to docs/; raw lines are kept in bench/out/<name>-<time>.raw.
#
# onnx: kiln vs ONNX Runtime on .onnx models (bench/onnx.sh, which documents itself).
#
# Usage: bash bench/run.sh [gemm|ops|train|graph|onnx]  (no argument: all but onnx)
# Environment:
#   BENCH_ROUNDS=3        rounds of (kiln, torch) per benchmark
#   BENCH_QUICK=1         1 warm-up + 2 timed calls per case (train, graph: 2 + 5): a pipeline
#                         check, not a measurement
#   BENCH_TARGET_S=0.4    timed seconds per case per round (reps clamped to [5, 200])
#   BENCH_OPS=a,b         only these op cases (names as in bench_ops.c / peer_torch.py)
#   GEMM_SIZES=256,512,1024,2048   GEMM_THREADS="1 2"
#   OPS_THREADS=2         kiln's thread count for the ops benchmark
#   TORCH_OPS_CFGS="1:2 2:1"   torch_threads:openblas_threads settings for ops; best one reported
#   TRAIN_MODELS=mlp,lenet   models of the training benchmark (bench_train.c)
#   TRAIN_THREADS=2       kiln's thread count for the training benchmark
#   TORCH_TRAIN_CFGS="1:1 2:2"   torch_threads:openblas_threads settings for train; each is
#                         reported (torch_t<n>) and the best one gives the ratio
#   BENCH_TRAIN_S=6 BENCH_TRAIN_WARMUP=20   timed seconds / warm-up steps per training case
#                         (also for the graph benchmark's training part)
#   GRAPH_MODELS=mlp,lenet   models of the graph benchmark (training and inference)
#   GRAPH_BATCHES=1,64    inference batch sizes of the graph benchmark
#   GRAPH_THREADS="1 2"   thread settings of the inference part, kiln (bench_infer --threads)
#                         and PyTorch (torch t + OpenBLAS t each, unless TORCH_GRAPH_CFGS is set);
#                         the training part uses TRAIN_THREADS
#   TORCH_GRAPH_CFGS="1:1 2:2"   torch_threads:openblas_threads settings for inference (default
#                         from GRAPH_THREADS); the best one per case gives the ratios
#   (bench_infer and peer_torch.py infer: 20 warm-up calls, then calls for about BENCH_TARGET_S
#    = 0.4 s, clamped to [20, 5000]; median and p90 of per-call times)
#   TRAIN_RSS_MODELS=mlp TRAIN_RSS_EPOCHS="1 3"   flat-memory check after the rounds: peak RSS of
#                         separate kiln runs of these many full epochs (quick: 20 steps each)
#   BUILD=build           build folder holding bench_gemm, bench_ops, bench_train, bench_infer
#   BENCH_PYTHON=/usr/bin/python3
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

B=${1:-}
BUILD=${BUILD:-build}
ROUNDS=${BENCH_ROUNDS:-3}
PY=${BENCH_PYTHON:-/usr/bin/python3}
GEMM_SIZES=${GEMM_SIZES:-256,512,1024,2048}
GEMM_THREADS=${GEMM_THREADS:-1 2}
OPS_THREADS=${OPS_THREADS:-2}
TORCH_OPS_CFGS=${TORCH_OPS_CFGS:-1:2 2:1}
BENCH_OPS=${BENCH_OPS:-}
TRAIN_MODELS=${TRAIN_MODELS:-mlp,lenet}
TRAIN_THREADS=${TRAIN_THREADS:-2}
TORCH_TRAIN_CFGS=${TORCH_TRAIN_CFGS:-1:1 2:2}
TRAIN_RSS_MODELS=${TRAIN_RSS_MODELS:-mlp}
TRAIN_RSS_EPOCHS=${TRAIN_RSS_EPOCHS:-1 3}
GRAPH_MODELS=${GRAPH_MODELS:-mlp,lenet}
GRAPH_BATCHES=${GRAPH_BATCHES:-1,64}
GRAPH_THREADS=${GRAPH_THREADS:-1 2}
if [ -z "${TORCH_GRAPH_CFGS:-}" ]; then
  TORCH_GRAPH_CFGS=""
  for t in $GRAPH_THREADS; do TORCH_GRAPH_CFGS="$TORCH_GRAPH_CFGS $t:$t"; done
fi

if [ "$B" = onnx ]; then
  exec bash bench/onnx.sh
fi
case "$B" in
  "") names=(gemm ops train graph) ;;
  gemm | ops | train | graph) names=("$B") ;;
  *)
    echo "bench/run.sh: unknown benchmark '$B' (known: gemm, ops, train, graph, onnx; empty for all but onnx)" >&2
    exit 2
    ;;
esac
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
  echo "bench/run.sh: BENCH_ROUNDS must be a positive integer, got '$ROUNDS'" >&2
  exit 2
fi

have_torch=0
if [ -x "$PY" ] && "$PY" -c 'import torch' >/dev/null 2>&1; then
  have_torch=1
else
  echo "bench/run.sh: PyTorch not importable with $PY: kiln numbers only, no ratios" \
       "(install the peer with KILN_DEPS_BENCH=1 make deps)" >&2
fi

mkdir -p bench/out
stamp=$(date +%Y%m%d-%H%M%S)
rc=0

say() { echo "[bench] $*" >&2; }

for name in "${names[@]}"; do
  bin="$BUILD/bench_$name"
  bins=("$bin")
  [ "$name" = graph ] && bins=("$BUILD/bench_train" "$BUILD/bench_infer")
  missing=0
  for b in "${bins[@]}"; do
    if [ ! -x "$b" ]; then
      echo "bench/run.sh: $b not built (run 'make build' first)" >&2
      missing=1
    fi
  done
  if [ $missing = 1 ]; then
    rc=1
    continue
  fi
  raw="bench/out/$name-$stamp.raw"
  {
    echo "# bench=$name date=$(date -Is) host=$(hostname) nproc=$(nproc) rounds=$ROUNDS" \
         "quick=${BENCH_QUICK:-0} rev=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "# loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
  } >"$raw"
  start=$(date +%s)
  for ((r = 1; r <= ROUNDS; r++)); do
    if [ "$name" = gemm ]; then
      say "gemm round $r/$ROUNDS: kiln (threads ${GEMM_THREADS// /,})"
      "$bin" --threads "${GEMM_THREADS// /,}" --sizes "$GEMM_SIZES" >>"$raw" || rc=1
      if [ $have_torch = 1 ]; then
        for t in $GEMM_THREADS; do
          say "gemm round $r/$ROUNDS: torch (torch $t + OpenBLAS $t threads)"
          OPENBLAS_NUM_THREADS=$t "$PY" bench/peer_torch.py gemm --torch-threads "$t" \
            --blas-threads "$t" --sizes "$GEMM_SIZES" >>"$raw" || rc=1
        done
      fi
    elif [ "$name" = graph ]; then
      for model in ${GRAPH_MODELS//,/ }; do
        for mode in eager graph; do
          say "graph round $r/$ROUNDS: train $model kiln $mode (threads $TRAIN_THREADS)"
          "$BUILD/bench_train" --model "$model" --mode "$mode" --threads "$TRAIN_THREADS" \
            >>"$raw" || rc=1
        done
      done
      say "graph round $r/$ROUNDS: infer kiln graph+eager (threads ${GRAPH_THREADS// /,})"
      "$BUILD/bench_infer" --models "$GRAPH_MODELS" --batches "$GRAPH_BATCHES" \
        --threads "${GRAPH_THREADS// /,}" --mode both >>"$raw" || rc=1
      if [ $have_torch = 1 ]; then
        for cfg in $TORCH_GRAPH_CFGS; do
          t=${cfg%%:*} b=${cfg##*:}
          say "graph round $r/$ROUNDS: infer torch eager+jit (torch $t + OpenBLAS $b threads)"
          OPENBLAS_NUM_THREADS=$b "$PY" bench/peer_torch.py infer --models "$GRAPH_MODELS" \
            --batches "$GRAPH_BATCHES" --torch-threads "$t" --blas-threads "$b" >>"$raw" || rc=1
        done
      fi
    elif [ "$name" = train ]; then
      for model in ${TRAIN_MODELS//,/ }; do
        say "train round $r/$ROUNDS: $model kiln (threads $TRAIN_THREADS)"
        "$bin" --model "$model" --threads "$TRAIN_THREADS" >>"$raw" || rc=1
        if [ $have_torch = 1 ]; then
          for cfg in $TORCH_TRAIN_CFGS; do
            t=${cfg%%:*} b=${cfg##*:}
            say "train round $r/$ROUNDS: $model torch (torch $t + OpenBLAS $b threads)"
            OPENBLAS_NUM_THREADS=$b "$PY" bench/peer_torch.py train --model "$model" \
              --torch-threads "$t" --blas-threads "$b" >>"$raw" || rc=1
          done
        fi
      done
    else
      ops_arg=()
      [ -n "$BENCH_OPS" ] && ops_arg=(--ops "$BENCH_OPS")
      say "ops round $r/$ROUNDS: kiln (threads $OPS_THREADS)"
      "$bin" --threads "$OPS_THREADS" "${ops_arg[@]}" >>"$raw" || rc=1
      if [ $have_torch = 1 ]; then
        for cfg in $TORCH_OPS_CFGS; do
          t=${cfg%%:*} b=${cfg##*:}
          say "ops round $r/$ROUNDS: torch (torch $t + OpenBLAS $b threads)"
          OPENBLAS_NUM_THREADS=$b "$PY" bench/peer_torch.py ops --torch-threads "$t" \
            --blas-threads "$b" "${ops_arg[@]}" >>"$raw" || rc=1
        done
      fi
    fi
  done
  if [ "$name" = train ]; then
    # Flat memory: the same run for 1 and for 3 epochs, each in its own process; peak RSS must
    # not grow with the number of steps. Quick mode caps each epoch at 20 steps.
    cap=()
    [ "${BENCH_QUICK:-0}" != 0 ] && cap=(--epoch-steps 20)
    for model in ${TRAIN_RSS_MODELS//,/ }; do
      for ep in $TRAIN_RSS_EPOCHS; do
        say "train_rss: $model kiln, $ep epoch(s)"
        "$bin" --model "$model" --threads "$TRAIN_THREADS" --epochs "$ep" "${cap[@]}" \
          >>"$raw" || rc=1
      done
    done
  fi
  echo "# loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)" \
       "seconds=$(($(date +%s) - start))" >>"$raw"
  say "$name: raw lines in $raw ($(($(date +%s) - start)) s)"
  grep '^#' "$raw"
  if [ -x "$PY" ]; then
    "$PY" bench/peer_torch.py aggregate "$raw" || rc=1
  else
    grep '^raw ' "$raw"
  fi
done
exit $rc
