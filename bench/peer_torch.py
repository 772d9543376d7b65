#!/usr/bin/python3
"""peer_torch.py - PyTorch side of kiln's core benchmarks, and the aggregator of raw lines.

Subcommands:
  gemm --torch-threads N --blas-threads N [--sizes 256,512,1024,2048]
      f32 square matmul, the same cases as bench/bench_gemm.c.
  ops --torch-threads T --blas-threads B [--ops add,mul,...]
      the same op cases as bench/bench_ops.c (OPS below: same names, shapes and passes).
  aggregate FILE...
      reads raw lines written by both sides over several rounds, takes per-case medians across
      rounds, prints the result lines with ratio_vs_pytorch = torch_ms / kiln_ms (> 1: kiln is
      faster) and a summary (geometric mean and minimum of the ratios). Does not import torch.

Thread settings (see /work/shared/PEERS.md): OPENBLAS_NUM_THREADS must be in the environment
before torch (and with it OpenBLAS) is loaded, so this script sets it from --blas-threads before
`import torch`, then calls torch.set_num_threads(T). One process per setting. Note: with Debian's
OpenMP build of OpenBLAS, OpenBLAS follows the calling thread's omp_get_max_threads(), which
torch.set_num_threads() sets; the header line records both so the setting actually used is visible.

Method (the same as the C side): warm-up of at least 2 calls and up to ~0.25 s, then K timed calls
with K such that they take about BENCH_TARGET_S seconds (clamped to [5, 200]); median reported.
fwd times the op on inputs that do not require grad; bwd runs the forward untimed on inputs that
require grad and times torch.autograd.grad(out, inputs, g, retain_graph=True) for a fixed random
output grad g (the graph is freed outside the timing, as kiln's scope does).
BENCH_QUICK=1: 1 warm-up call and 2 timed calls.

Raw output lines (one per case):
  raw bench=gemm n=1024 threads=2 impl=torch cfg=t2b2 ms=<median> gflops=<..> reps=<k>
  raw bench=ops op=<op> pass=fwd|bwd shape=<..> impl=torch cfg=t2b1 ms=<median> reps=<k>
"""
import math
import os
import re
import statistics
import sys
import time

MIN_REPS, MAX_REPS = 5, 200


def env_flag(name):
    v = os.environ.get(name, "")
    return v not in ("", "0")


def env_float(name, default):
    try:
        v = float(os.environ.get(name, ""))
        return v if v > 0 else default
    except ValueError:
        return default


def time_fn(call, quick, target_s):
    """call() -> seconds of its timed part. Returns (median seconds, reps)."""
    warm, warm_total = 0, 0.0
    while True:
        warm_total += call()
        warm += 1
        if quick or not (warm < 2 or (warm_total < 0.25 and warm < 10)):
            break
    reps = 2
    if not quick:
        per = warm_total / warm
        reps = math.ceil(target_s / per) if per > 0 else MAX_REPS
        reps = max(MIN_REPS, min(MAX_REPS, reps))
    samples = [call() for _ in range(reps)]
    return statistics.median(samples), reps


def parse_list(s):
    return [int(x) for x in s.split(",") if x]


def setup_torch(torch_threads, blas_threads):
    """Sets OpenBLAS's thread count before loading torch, then torch's. Returns the module."""
    if blas_threads is not None:
        os.environ["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    import torch  # noqa: E402  (must follow the environment change)

    torch.set_num_threads(torch_threads)
    torch.manual_seed(1234)
    blas_now = "?"
    try:
        import ctypes

        blas_now = ctypes.CDLL("libopenblas.so.0").openblas_get_num_threads()
    except (OSError, AttributeError):
        pass
    print(f"# peer_torch: torch {torch.__version__} torch_threads={torch.get_num_threads()} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} "
          f"openblas_get_num_threads={blas_now}", flush=True)
    return torch


# ---- gemm ----

def run_gemm(args):
    torch_threads = int(args.get("--torch-threads", "1"))
    blas_threads = int(args.get("--blas-threads", str(torch_threads)))
    sizes = parse_list(args.get("--sizes", "256,512,1024,2048"))
    torch = setup_torch(torch_threads, blas_threads)
    quick, target = env_flag("BENCH_QUICK"), env_float("BENCH_TARGET_S", 0.4)
    cfg = f"t{torch_threads}b{blas_threads}"
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)

        def call():
            t0 = time.perf_counter()
            c = torch.matmul(a, b)
            t1 = time.perf_counter()
            del c
            return t1 - t0

        t, reps = time_fn(call, quick, target)
        print(f"raw bench=gemm n={n} threads={torch_threads} impl=torch cfg={cfg} "
              f"ms={t * 1e3:.4f} gflops={2.0 * n ** 3 / t * 1e-9:.2f} reps={reps}", flush=True)


# ---- ops: must match CASES in bench/bench_ops.c ----

def make_ops(torch):
    F = torch.nn.functional
    act, rows, c768 = (64, 128, 768), (64 * 128, 768), (768,)
    img, img_big = (8, 64, 56, 56), (8, 64, 112, 112)
    r = torch.randn

    # name, shape string, input factory (differentiable inputs, extras), function
    return [
        ("add", "64x128x768+768", lambda: ([r(*act), r(*c768)], []),
         lambda x, e: torch.add(x[0], x[1])),
        ("mul", "64x128x768*64x128x768", lambda: ([r(*act), r(*act)], []),
         lambda x, e: torch.mul(x[0], x[1])),
        ("relu", "64x128x768", lambda: ([r(*act)], []), lambda x, e: torch.relu(x[0])),
        ("gelu", "64x128x768", lambda: ([r(*act)], []), lambda x, e: F.gelu(x[0])),
        ("exp", "64x128x768", lambda: ([r(*act)], []), lambda x, e: torch.exp(x[0])),
        ("sum", "8192x768:dim=-1", lambda: ([r(*rows)], []), lambda x, e: torch.sum(x[0], -1)),
        ("softmax", "8192x768:dim=-1", lambda: ([r(*rows)], []),
         lambda x, e: torch.softmax(x[0], -1)),
        ("layer_norm", "8192x768:w,b", lambda: ([r(*rows), r(*c768), r(*c768)], []),
         lambda x, e: F.layer_norm(x[0], (768,), x[1], x[2], 1e-5)),
        ("conv2d", "8x64x56x56:w=64x64x3x3,b,pad=1",
         lambda: ([r(*img), r(64, 64, 3, 3), r(64)], []),
         lambda x, e: F.conv2d(x[0], x[1], x[2], stride=1, padding=1)),
        ("max_pool2d", "8x64x112x112:k=2,s=2", lambda: ([r(*img_big)], []),
         lambda x, e: F.max_pool2d(x[0], 2, 2)),
        ("batch_norm", "8x64x56x56:train,w,b",
         lambda: ([r(*img), r(64), r(64)], [torch.zeros(64), torch.ones(64)]),
         lambda x, e: F.batch_norm(x[0], e[0], e[1], x[1], x[2], True, 0.1, 1e-5)),
    ]


def run_ops(args):
    torch_threads = int(args.get("--torch-threads", "2"))
    blas_threads = int(args.get("--blas-threads", "1"))
    only = set(x for x in args.get("--ops", "").split(",") if x)
    torch = setup_torch(torch_threads, blas_threads)
    quick, target = env_flag("BENCH_QUICK"), env_float("BENCH_TARGET_S", 0.4)
    cfg = f"t{torch_threads}b{blas_threads}"
    import gc

    for name, shape, make, fn in make_ops(torch):
        if only and name not in only:
            continue
        torch.manual_seed(1234)
        xs, extras = make()

        def fwd():
            with torch.no_grad():
                t0 = time.perf_counter()
                y = fn(xs, extras)
                t1 = time.perf_counter()
            del y
            return t1 - t0

        gc.disable()
        t, reps = time_fn(fwd, quick, target)
        print(f"raw bench=ops op={name} pass=fwd shape={shape} impl=torch cfg={cfg} "
              f"ms={t * 1e3:.4f} reps={reps}", flush=True)

        xg = [x.detach().requires_grad_(True) for x in xs]
        with torch.no_grad():
            g = torch.randn_like(fn(xs, extras))

        def bwd():
            y = fn(xg, extras)  # untimed forward that records the graph
            t0 = time.perf_counter()
            # retain_graph=True: saved tensors are freed at `del y`, outside the timing, as in
            # kiln (kn_grad keeps the graph; the scope frees it after the timed part).
            grads = torch.autograd.grad(y, xg, g, retain_graph=True)
            t1 = time.perf_counter()
            del grads, y
            return t1 - t0

        t, reps = time_fn(bwd, quick, target)
        gc.enable()
        print(f"raw bench=ops op={name} pass=bwd shape={shape} impl=torch cfg={cfg} "
              f"ms={t * 1e3:.4f} reps={reps}", flush=True)
        del xs, xg, extras, g


# ---- aggregate ----

TOKEN = re.compile(r'(\w+)=("[^"]*"|\S+)')


def parse_raw(paths):
    recs = []
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.startswith("raw "):
                    recs.append({k: v.strip('"') for k, v in TOKEN.findall(line)})
    return recs


def fmt(x, nd=4):
    return "NA" if x is None else f"{x:.{nd}f}"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def aggregate(paths):
    recs = parse_raw(paths)
    rc = 0
    # gemm: key (n, threads)
    gemm = {}
    for r in (x for x in recs if x.get("bench") == "gemm"):
        e = gemm.setdefault((int(r["n"]), int(r["threads"])), {"kiln": [], "torch": [], "err": ""})
        if r.get("status"):
            e["err"] = e["err"] or f'{r["status"]}: {r.get("msg", "")}'
        elif r["impl"] in ("kiln", "torch"):
            e[r["impl"]].append(float(r["ms"]))
    ratios = []
    for (n, th), e in sorted(gemm.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not e["kiln"]:
            print(f'bench=gemm n={n} threads={th} impl=kiln status=error msg="{e["err"]}"')
            rc = 1
            continue
        k = statistics.median(e["kiln"])
        t = statistics.median(e["torch"]) if e["torch"] else None
        flop = 2.0 * n ** 3
        ratio = t / k if t else None
        if ratio:
            ratios.append((ratio, f"n={n},threads={th}"))
        print(f"bench=gemm n={n} threads={th} impl=kiln ms={fmt(k)} gflops={flop / k * 1e-6:.2f} "
              f"torch_ms={fmt(t)} torch_gflops={fmt(flop / t * 1e-6 if t else None, 2)} "
              f"ratio_vs_pytorch={fmt(ratio, 3)} rounds={len(e['kiln'])}")
    if gemm:
        summarize("gemm", ratios, len(gemm), target=0.95)

    # ops: key (op, pass), in first-seen order
    ops, order = {}, []
    for r in (x for x in recs if x.get("bench") == "ops"):
        key = (r["op"], r["pass"])
        if key not in ops:
            order.append(key)
            ops[key] = {"shape": r.get("shape", "?"), "kiln": [], "torch": {}, "err": "",
                        "threads": r.get("threads", "?")}
        e = ops[key]
        if r.get("status"):
            if r["impl"] == "kiln":
                e["err"] = e["err"] or f'{r["status"]}: {r.get("msg", "")}'
        elif r["impl"] == "kiln":
            e["kiln"].append(float(r["ms"]))
            e["threads"] = r.get("threads", e["threads"])
        elif r["impl"] == "torch":
            e["torch"].setdefault(r.get("cfg", "?"), []).append(float(r["ms"]))
    ratios, failed = [], []
    for key in order:
        e, (op, ps) = ops[key], key
        if not e["kiln"]:
            print(f'bench=ops op={op} pass={ps} shape={e["shape"]} impl=kiln status=error '
                  f'msg="{e["err"]}"')
            failed.append(f"{op}/{ps}")
            continue
        k = statistics.median(e["kiln"])
        best = min(((statistics.median(v), c) for c, v in e["torch"].items()), default=None)
        t, cfg = best if best else (None, "none")
        ratio = t / k if t else None
        if ratio:
            ratios.append((ratio, f"{op}/{ps}"))
        print(f"bench=ops op={op} pass={ps} shape={e['shape']} impl=kiln ms={fmt(k)} "
              f"torch_ms={fmt(t)} ratio_vs_pytorch={fmt(ratio, 3)} threads={e['threads']} "
              f"torch_cfg={cfg} rounds={len(e['kiln'])}")
    if ops:
        summarize("ops", ratios, len(ops), failed=failed)
        if failed:
            rc = 1
    return rc


def summarize(bench, ratios, ncases, target=None, failed=()):
    gm = geomean([r for r, _ in ratios])
    mn = min(ratios) if ratios else (None, "none")
    line = (f"bench={bench} summary cases={ncases} compared={len(ratios)} "
            f"geomean_ratio={fmt(gm, 3)} min_ratio={fmt(mn[0], 3)} min_case={mn[1]}")
    if target is not None:
        below = [c for r, c in ratios if r < target]
        line += f" target={target} below_target={','.join(below) or 'none'}"
    if failed is not None and bench == "ops":
        line += f" failed={','.join(failed) or 'none'}"
    print(line)


def main(argv):
    if len(argv) < 2 or argv[1] not in ("gemm", "ops", "aggregate"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "aggregate":
        return aggregate(argv[2:])
    rest = argv[2:]
    if len(rest) % 2:
        print("peer_torch.py: options take one value each", file=sys.stderr)
        return 2
    args = dict(zip(rest[::2], rest[1::2]))
    allowed = {"--torch-threads", "--blas-threads", "--sizes", "--ops"}
    if set(args) - allowed:
        print(f"peer_torch.py: unknown option(s) {sorted(set(args) - allowed)}", file=sys.stderr)
        return 2
    (run_gemm if argv[1] == "gemm" else run_ops)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
