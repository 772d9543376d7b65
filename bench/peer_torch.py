#!/usr/bin/python3
"""peer_torch.py - PyTorch side of kiln's core benchmarks, and the aggregator of raw lines.

Subcommands:
  gemm --torch-threads N --blas-threads N [--sizes 256,512,1024,2048]
      f32 square matmul, the same cases as bench/bench_gemm.c.
  ops --torch-threads T --blas-threads B [--ops add,mul,...]
      the same op cases as bench/bench_ops.c (OPS below: same names, shapes and passes).
  train --model mlp|lenet --torch-threads T --blas-threads B [--steps N]
      samples/s of an eager training loop on the real Fashion-MNIST training set, the same models,
      loss, optimizer and data as bench/bench_train.c (TRAIN_* below), and the process's peak RSS.
  infer --torch-threads T --blas-threads B [--models mlp,lenet] [--batches 1,64]
      inference latency of the bench/bench_infer.c models (the TRAIN models, eval mode) at each
      batch size: impl=torch is eager under torch.inference_mode(); impl=torch_jit is
      torch.jit.trace (per batch size) + torch.jit.freeze, called under torch.no_grad().
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

Training (train): models as in bench_train.c (MLP 784-512-256-10; LeNet-5 with 5x5 convs and
2x2 max pools), cross_entropy, SGD(lr 0.01, momentum 0.9), zero_grad(set_to_none=True) (on both
sides; PyTorch 2's default), loss.item() every step, batch 64, last partial batch kept. Data: the IDX .gz files that
kn_mnist_load reads ($KILN_FASHION_MNIST or /usr/share/datasets/fashion-mnist), read with gzip +
numpy, normalised once into a float32 tensor ((x/255 - 0.2860) / 0.3530; (N,1,28,28) for LeNet);
each epoch indexes it with a fresh torch.randperm (seed 1234) in slices of 64. This plain loop is
PyTorch's fastest simple option (torch.utils.data.DataLoader with default collation is slower); the
cost is that the float copy of the data set (~180 MiB) counts in PyTorch's peak RSS while kiln's
loader keeps the u8 images and normalises per batch. Timing: BENCH_TRAIN_WARMUP (20) warm-up
steps, then N steps (N from the warm-up's speed to take about BENCH_TRAIN_S = 6 s, clamped to
[20, 100000]; --steps fixes N); samples/s = samples / wall time of the N steps (batch fetching
included). BENCH_QUICK=1: 2 warm-up and 5 timed steps. Peak RSS is getrusage's ru_maxrss.

Inference (infer): models as make_train_model builds them (torch.manual_seed(0) init; the weights
differ from kiln's but the layers and shapes are the same), model.eval(), input torch.randn
(N,1,28,28). Per case: INFER_WARMUP (20) warm-up calls (enough for the profiling executor of
torch.jit to profile and optimise; the freeze happens before them), then K calls with K from the
last 10 warm-up calls' speed to take about BENCH_TARGET_S (0.4) seconds, clamped to [20, 5000];
each call timed on its own with time.perf_counter, gc disabled; median and 90th percentile
(nearest rank) reported. BENCH_QUICK=1: 2 warm-up and 5 timed calls.

Raw output lines (one per case):
  raw bench=gemm n=1024 threads=2 impl=torch cfg=t2b2 ms=<median> gflops=<..> reps=<k>
  raw bench=ops op=<op> pass=fwd|bwd shape=<..> impl=torch cfg=t2b1 ms=<median> reps=<k>
  raw bench=train model=mlp impl=torch cfg=t1b1 torch_threads=1 samples_per_s=<..> steps=<N>
      samples=<..> seconds=<..> loss=<mean loss of the timed steps> peak_rss_mb=<ru_maxrss>
  raw bench=infer model=mlp batch=1 threads=<torch threads> impl=torch|torch_jit cfg=t1b1
      torch_threads=1 ms=<median> p90_ms=<..> reps=<k>
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


# ---- train: must match bench/bench_train.c ----

TRAIN_BATCH, TRAIN_LR, TRAIN_MOMENTUM = 64, 0.01, 0.9
TRAIN_MEAN, TRAIN_STD = 0.2860, 0.3530
TRAIN_MIN_STEPS, TRAIN_MAX_STEPS = 20, 100000
TRAIN_TARGETS = {"mlp": 1.5, "lenet": 2.0}  # required samples/s ratio vs PyTorch (the issue)
TRAIN_RSS_GROWTH_PCT = 5.0  # allowed peak-RSS growth from 1 to 3 epochs


def load_idx(directory, stem):
    """An IDX file of u8 (<dir>/<stem>.gz or <dir>/<stem>) as a numpy array."""
    import gzip

    import numpy as np

    path = os.path.join(directory, stem + ".gz")
    opener = gzip.open
    if not os.path.exists(path):
        path, opener = os.path.join(directory, stem), open
    with opener(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.from_numpy does not warn
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of u8")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def make_train_model(torch, name):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                             nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def run_train(args):
    import resource

    name = args.get("--model", "mlp")
    if name not in TRAIN_TARGETS:
        print(f"peer_torch.py: train: unknown model '{name}' (mlp, lenet)", file=sys.stderr)
        return 2
    torch_threads = int(args.get("--torch-threads", "1"))
    blas_threads = int(args.get("--blas-threads", str(torch_threads)))
    fixed_steps = int(args.get("--steps", "0"))
    torch = setup_torch(torch_threads, blas_threads)
    F = torch.nn.functional
    quick = env_flag("BENCH_QUICK")
    cfg = f"t{torch_threads}b{blas_threads}"
    data_dir = os.environ.get("KILN_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"

    images = load_idx(data_dir, "train-images-idx3-ubyte")
    labels = load_idx(data_dir, "train-labels-idx1-ubyte")
    x_all = torch.from_numpy(images).float().div_(255.0).sub_(TRAIN_MEAN).div_(TRAIN_STD)
    if name == "lenet":
        x_all = x_all.unsqueeze(1).contiguous()
    y_all = torch.from_numpy(labels).long()
    del images, labels
    n = x_all.shape[0]

    torch.manual_seed(1234)
    model = make_train_model(torch, name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=TRAIN_MOMENTUM)
    gen = torch.Generator().manual_seed(1234)
    pos, perm = n, None

    def step():
        nonlocal pos, perm
        if pos >= n:  # next epoch
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + TRAIN_BATCH]
        pos += TRAIN_BATCH
        xb, yb = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return xb.shape[0], loss.item()

    warm = 2 if quick else int(env_float("BENCH_TRAIN_WARMUP", 20))
    t0 = time.perf_counter()
    for _ in range(warm):
        step()
    per = (time.perf_counter() - t0) / max(warm, 1)
    steps = fixed_steps
    if steps <= 0:
        if quick:
            steps = 5
        else:
            steps = math.ceil(env_float("BENCH_TRAIN_S", 6.0) / per) if per > 0 else TRAIN_MAX_STEPS
            steps = max(TRAIN_MIN_STEPS, min(TRAIN_MAX_STEPS, steps))
    samples, loss_sum = 0, 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        k, loss = step()
        samples += k
        loss_sum += loss
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"raw bench=train model={name} impl=torch cfg={cfg} torch_threads={torch_threads} "
          f"samples_per_s={samples / secs:.1f} steps={steps} samples={samples} "
          f"seconds={secs:.3f} loss={loss_sum / steps:.4f} peak_rss_mb={rss:.1f}", flush=True)
    return 0


# ---- infer: must match bench/bench_infer.c ----

INFER_WARMUP, INFER_MIN_REPS, INFER_MAX_REPS = 20, 20, 5000


def time_calls(call, quick, target_s):
    """call() runs one inference. Returns (median s, p90 s, reps), each call timed alone."""
    warm = 2 if quick else INFER_WARMUP
    tail = []
    for i in range(warm):
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        if i >= warm // 2:
            tail.append(t1 - t0)
    reps = 5
    if not quick:
        per = sum(tail) / len(tail) if tail else 0.0
        reps = math.ceil(target_s / per) if per > 0 else INFER_MAX_REPS
        reps = max(INFER_MIN_REPS, min(INFER_MAX_REPS, reps))
    v = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        v.append(time.perf_counter() - t0)
    v.sort()
    return statistics.median(v), v[max(0, math.ceil(0.9 * reps) - 1)], reps


def run_infer(args):
    import gc

    models = [m for m in args.get("--models", "mlp,lenet").split(",") if m]
    bad = [m for m in models if m not in TRAIN_TARGETS]
    if bad or not models:
        print(f"peer_torch.py: infer: unknown model(s) {bad} (mlp, lenet)", file=sys.stderr)
        return 2
    batches = parse_list(args.get("--batches", "1,64"))
    torch_threads = int(args.get("--torch-threads", "1"))
    blas_threads = int(args.get("--blas-threads", str(torch_threads)))
    torch = setup_torch(torch_threads, blas_threads)
    quick, target = env_flag("BENCH_QUICK"), env_float("BENCH_TARGET_S", 0.4)
    cfg = f"t{torch_threads}b{blas_threads}"
    rc = 0
    for name in models:
        torch.manual_seed(0)
        model = make_train_model(torch, name).eval()
        for b in batches:
            torch.manual_seed(1)
            x = torch.randn(b, 1, 28, 28)
            head = (f"raw bench=infer model={name} batch={b} threads={torch_threads}")

            def eager():
                with torch.inference_mode():
                    return model(x)

            try:
                with torch.no_grad():
                    frozen = torch.jit.freeze(torch.jit.trace(model, x))
            except Exception as e:  # noqa: BLE001  (reported as an error line)
                frozen, err = None, str(e).replace('"', "'").replace("\n", " ")[:200]

            def jit():
                with torch.no_grad():
                    return frozen(x)

            for impl, call in (("torch", eager), ("torch_jit", jit)):
                if impl == "torch_jit" and frozen is None:
                    print(f'{head} impl=torch_jit cfg={cfg} status=error msg="{err}"', flush=True)
                    rc = 1
                    continue
                gc.disable()
                med, p90, reps = time_calls(call, quick, target)
                gc.enable()
                print(f"{head} impl={impl} cfg={cfg} torch_threads={torch_threads} "
                      f"ms={med * 1e3:.5f} p90_ms={p90 * 1e3:.5f} reps={reps}", flush=True)
            with torch.no_grad():  # the frozen graph must compute what eager does
                if frozen is not None and not torch.allclose(eager(), jit(), 1e-4, 1e-5):
                    print(f"peer_torch.py: infer: torch_jit differs from eager ({name}, batch {b})",
                          file=sys.stderr)
    return rc


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
    rc = aggregate_train(recs) or rc
    return aggregate_graph(recs) or rc


def aggregate_train(recs):
    """bench=train: per model, the median samples/s over rounds for kiln and for each torch
    setting; torch_t<n> is the best setting with n torch threads, the ratio uses the best of all.
    Peak RSS: kiln's largest over rounds against PyTorch's smallest (median over rounds per
    setting, then the smallest setting), so rss_ok does not flatter kiln.
    bench=train_rss: peak RSS of the fewest- against the most-epochs kiln run, per model."""
    rc = 0
    train, order = {}, []
    for r in (x for x in recs if x.get("bench") == "train"):
        m = r.get("model", "?")
        if m not in train:
            order.append(m)
            train[m] = {"kiln": [], "rss": [], "loss": [], "torch": {}, "err": "",
                        "threads": r.get("threads", "?")}
        e = train[m]
        if r.get("status"):
            if r["impl"] == "kiln":
                e["err"] = e["err"] or f'{r["status"]}: {r.get("msg", "")}'
        elif r["impl"] == "kiln":
            e["kiln"].append(float(r["samples_per_s"]))
            e["rss"].append(float(r["peak_rss_mb"]))
            e["loss"].append(float(r["loss"]))
            e["threads"] = r.get("threads", e["threads"])
        elif r["impl"] == "torch":
            c = e["torch"].setdefault(r.get("cfg", "?"), {"tt": int(r.get("torch_threads", 0)),
                                                          "sps": [], "rss": []})
            c["sps"].append(float(r["samples_per_s"]))
            c["rss"].append(float(r["peak_rss_mb"]))
    # The graph benchmark's eager lines (models that also have impl=kiln_graph lines and no torch
    # lines) belong to aggregate_graph, not here.
    graph_models = {x.get("model") for x in recs
                    if x.get("bench") == "train" and x.get("impl") == "kiln_graph"}
    order = [m for m in order if not (m in graph_models and not train[m]["torch"])]
    ratios, failed, below, rss_bad = [], [], [], []
    for m in order:
        e = train[m]
        if not e["kiln"]:
            print(f'bench=train model={m} impl=kiln status=error msg="{e["err"]}"')
            failed.append(m)
            continue
        k = statistics.median(e["kiln"])
        k_rss = max(e["rss"])
        per_cfg = {c: (statistics.median(v["sps"]), statistics.median(v["rss"]), v["tt"])
                   for c, v in e["torch"].items()}
        by_threads = {}
        for c, (sps, _, tt) in per_cfg.items():
            by_threads[tt] = max(by_threads.get(tt, 0.0), sps)
        best = max(((sps, c) for c, (sps, _, _) in per_cfg.items()), default=None)
        t, cfg = best if best else (None, "none")
        t_rss = min((rss for _, rss, _ in per_cfg.values()), default=None)
        ratio = k / t if t else None
        target = TRAIN_TARGETS.get(m)
        if ratio:
            ratios.append((ratio, m))
            if target and ratio < target:
                below.append(m)
        rss_ok = None if t_rss is None else k_rss <= t_rss
        if rss_ok is False:
            rss_bad.append(m)
        tcols = " ".join(f"torch_t{tt}={fmt(v, 1)}" for tt, v in sorted(by_threads.items()))
        print(f"bench=train model={m} impl=kiln samples_per_s={k:.1f} {tcols or 'torch_t1=NA'} "
              f"ratio_vs_pytorch={fmt(ratio, 3)} kiln_peak_rss_mb={k_rss:.1f} "
              f"torch_peak_rss_mb={fmt(t_rss, 1)} target={target} "
              f"rss_ok={'NA' if rss_ok is None else 'yes' if rss_ok else 'no'} "
              f"threads={e['threads']} torch_cfg={cfg} loss={statistics.median(e['loss']):.4f} "
              f"rounds={len(e['kiln'])}")
    if order:
        mn = min(ratios) if ratios else (None, "none")
        print(f"bench=train summary models={len(train)} compared={len(ratios)} "
              f"min_ratio={fmt(mn[0], 3)} min_case={mn[1]} "
              f"below_target={','.join(below) or 'none'} "
              f"rss_above_torch={','.join(rss_bad) or 'none'} failed={','.join(failed) or 'none'}")
        if failed:
            rc = 1

    rss = {}
    for r in (x for x in recs if x.get("bench") == "train_rss"):
        e = rss.setdefault(r.get("model", "?"), {"runs": {}, "err": ""})
        if r.get("status"):
            e["err"] = e["err"] or f'{r["status"]}: {r.get("msg", "")}'
        else:
            e["runs"].setdefault(int(r["epochs"]), []).append(
                (float(r["peak_rss_mb"]), r.get("live_tensors", "?"), int(r.get("steps", 0))))
    for m, e in rss.items():
        if len(e["runs"]) < 2:
            print(f'bench=train_rss model={m} impl=kiln status=error '
                  f'msg="{e["err"] or "needs runs with two epoch counts"}"')
            rc = 1
            continue
        lo, hi = min(e["runs"]), max(e["runs"])
        r_lo = max(x[0] for x in e["runs"][lo])
        r_hi = max(x[0] for x in e["runs"][hi])
        growth = (r_hi - r_lo) / r_lo * 100.0 if r_lo > 0 else float("inf")
        ok = growth <= TRAIN_RSS_GROWTH_PCT
        print(f"bench=train_rss model={m} epochs{lo}_rss_mb={r_lo:.1f} "
              f"epochs{hi}_rss_mb={r_hi:.1f} "
              f"growth_pct={growth:.2f} target_pct={TRAIN_RSS_GROWTH_PCT:g} "
              f"ok={'yes' if ok else 'no'} steps{lo}={e['runs'][lo][-1][2]} "
              f"steps{hi}={e['runs'][hi][-1][2]} live_tensors{hi}={e['runs'][hi][-1][1]}")
    return rc


GRAPH_TRAIN_TARGETS = {"mlp": 1.0, "lenet": 1.18}  # graph / eager samples/s (issue 4)
GRAPH_MEM_TARGET = 0.7  # graph step memory / eager step memory, at most
INFER_EAGER_TARGET = 2.0  # torch eager ms / kiln graph ms, at least, at batch 1 (kiln <= 0.5x)
INFER_EAGER_TARGET_BATCHES = (1,)
INFER_JIT_TARGET = 1.0  # torch_jit ms / kiln graph ms, at least, in every case


def aggregate_graph(recs):
    """The graph benchmark (issue 4).
    bench=train with impl=kiln_graph: per model, median samples/s over rounds of the compiled
    training step (impl=kiln_graph) against the eager loop of the same run (impl=kiln),
    speedup = graph / eager; step memory (step_mem_mb: what one step allocates, the graph's arena
    included) graph's largest over rounds against eager's smallest, mem_ratio = graph / eager.
    bench=infer: per (model, batch), the median ms over rounds of each thread setting, then each
    implementation's best setting: kiln graph (kiln_ms), PyTorch eager (torch_ms), torch.jit
    trace+freeze (jit_ms) and kiln eager (for reference); ratio_vs_eager = torch_ms / kiln_ms,
    ratio_vs_jit = jit_ms / kiln_ms (> 1: kiln faster). Prints every setting's median
    (kiln_t<n>, torch_t<n>, jit_t<n>, kiln_eager_t<n>) and a summary of the targets not met.
    Give it one graph run's file: every bench=train impl=kiln line read counts as the eager side
    of a model that has impl=kiln_graph lines."""
    rc = 0
    not_met, failed = [], []
    tg, torder = {}, []
    for r in (x for x in recs if x.get("bench") == "train"):
        m = r.get("model", "?")
        if r.get("impl") not in ("kiln", "kiln_graph"):
            continue
        if m not in tg:
            torder.append(m)
            tg[m] = {"kiln": {"sps": [], "mem": [], "peak": [], "arena": [], "err": ""},
                     "kiln_graph": {"sps": [], "mem": [], "peak": [], "arena": [], "err": ""}}
        e = tg[m][r["impl"]]
        if r.get("status"):
            e["err"] = e["err"] or f'{r["status"]}: {r.get("msg", "")}'
        else:
            e["sps"].append(float(r["samples_per_s"]))
            if "step_mem_mb" in r:
                e["mem"].append(float(r["step_mem_mb"]))
                e["peak"].append(float(r["step_peak_mb"]))
                e["arena"].append(float(r["arena_mb"]))
    for m in torder:
        ea, gr = tg[m]["kiln"], tg[m]["kiln_graph"]
        if not gr["sps"] and not gr["err"]:
            continue  # the plain train benchmark: aggregate_train's
        if not gr["sps"] or not ea["sps"]:
            which = "kiln_graph" if not gr["sps"] else "kiln"
            print(f'bench=train_graph model={m} impl={which} status=error '
                  f'msg="{(gr if not gr["sps"] else ea)["err"] or "no result"}"')
            failed.append(f"train_graph/{m}")
            continue
        g_sps, e_sps = statistics.median(gr["sps"]), statistics.median(ea["sps"])
        speedup = g_sps / e_sps
        target = GRAPH_TRAIN_TARGETS.get(m)
        speed_ok = None if target is None else speedup >= target
        g_mem = max(gr["mem"]) if gr["mem"] else None
        e_mem = min(ea["mem"]) if ea["mem"] else None
        mem_ratio = g_mem / e_mem if g_mem is not None and e_mem else None
        mem_ok = None if mem_ratio is None else mem_ratio <= GRAPH_MEM_TARGET
        if speed_ok is False:
            not_met.append(f"train_speed/{m}")
        if mem_ok is not True:
            not_met.append(f"train_mem/{m}")
        yn = {None: "NA", True: "yes", False: "no"}
        print(f"bench=train_graph model={m} graph_samples_per_s={g_sps:.1f} "
              f"eager_samples_per_s={e_sps:.1f} speedup={speedup:.3f} target={target} "
              f"speed_ok={yn[speed_ok]} graph_step_mem_mb={fmt(g_mem, 3)} "
              f"eager_step_mem_mb={fmt(e_mem, 3)} mem_ratio={fmt(mem_ratio, 3)} "
              f"mem_target={GRAPH_MEM_TARGET} mem_ok={yn[mem_ok]} "
              f"graph_step_peak_mb={fmt(max(gr['peak']) if gr['peak'] else None, 3)} "
              f"graph_arena_mb={fmt(max(gr['arena']) if gr['arena'] else None, 3)} "
              f"rounds={len(gr['sps'])}")

    inf, iorder = {}, []
    for r in (x for x in recs if x.get("bench") == "infer"):
        key = (r.get("model", "?"), int(r.get("batch", 0)))
        if key not in inf:
            iorder.append(key)
            inf[key] = {"kiln_graph": {}, "kiln_eager": {}, "torch": {}, "torch_jit": {},
                        "err": {}}
        e = inf[key]
        impl = r.get("impl", "?")
        if impl not in ("kiln_graph", "kiln_eager", "torch", "torch_jit"):
            continue
        if r.get("status"):
            e["err"].setdefault(impl, f'{r["status"]}: {r.get("msg", "")}')
            continue
        setting = r.get("cfg") or f't{r.get("threads", "?")}'
        c = e[impl].setdefault(setting, {"tt": int(r.get("threads", 0)), "ms": []})
        c["ms"].append(float(r["ms"]))

    def best(settings):
        """(best median ms, its setting, {threads: best median ms}) or (None, 'none', {})."""
        med = {s: (statistics.median(v["ms"]), v["tt"]) for s, v in settings.items()}
        by_t = {}
        for ms, tt in med.values():
            by_t[tt] = min(by_t.get(tt, ms), ms)
        b = min(((ms, s) for s, (ms, _) in med.items()), default=(None, "none"))
        return b[0], b[1], by_t

    for m, b in sorted(iorder, key=lambda k: (k[0] != "mlp", k[0], k[1])):
        e = inf[(m, b)]
        k, k_set, k_t = best(e["kiln_graph"])
        t, t_set, t_t = best(e["torch"])
        j, j_set, j_t = best(e["torch_jit"])
        ke, ke_set, ke_t = best(e["kiln_eager"])
        if k is None:
            print(f'bench=infer model={m} batch={b} impl=kiln_graph status=error '
                  f'msg="{e["err"].get("kiln_graph", "no result")}"')
            failed.append(f"infer/{m}/b{b}")
            continue
        r_eager = t / k if t else None
        r_jit = j / k if j else None
        eager_target = INFER_EAGER_TARGET if b in INFER_EAGER_TARGET_BATCHES else None
        eager_ok = None if eager_target is None or r_eager is None else r_eager >= eager_target
        jit_ok = None if r_jit is None else r_jit >= INFER_JIT_TARGET
        if eager_target is not None and eager_ok is not True:
            not_met.append(f"infer_vs_eager/{m}/b{b}")
        if jit_ok is not True:
            not_met.append(f"infer_vs_jit/{m}/b{b}")
        yn = {None: "NA", True: "yes", False: "no"}
        cols = " ".join(f"{p}_t{tt}={fmt(v)}" for p, d in
                        (("kiln", k_t), ("torch", t_t), ("jit", j_t), ("kiln_eager", ke_t))
                        for tt, v in sorted(d.items()))
        errs = " ".join(f"{i}_error=\"{msg}\"" for i, msg in e["err"].items())
        print(f"bench=infer model={m} batch={b} kiln_ms={fmt(k)} kiln_setting={k_set} "
              f"torch_ms={fmt(t)} torch_cfg={t_set} jit_ms={fmt(j)} jit_cfg={j_set} "
              f"ratio_vs_eager={fmt(r_eager, 3)} ratio_vs_jit={fmt(r_jit, 3)} "
              f"eager_target={eager_target or 'NA'} eager_ok={yn[eager_ok]} "
              f"jit_target={INFER_JIT_TARGET} jit_ok={yn[jit_ok]} "
              f"kiln_eager_ms={fmt(ke)} kiln_eager_setting={ke_set} {cols} "
              f"rounds={len(e['kiln_graph'].get(k_set, {'ms': []})['ms'])}"
              + (f" {errs}" if errs else ""))
    graph_train = [m for m in torder if tg[m]["kiln_graph"]["sps"] or tg[m]["kiln_graph"]["err"]]
    if graph_train or inf:
        print(f"bench=graph summary train_models={len(graph_train)} infer_cases={len(inf)} "
              f"targets_not_met={','.join(not_met) or 'none'} "
              f"failed={','.join(failed) or 'none'}")
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
    if len(argv) < 2 or argv[1] not in ("gemm", "ops", "train", "infer", "aggregate"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "aggregate":
        return aggregate(argv[2:])
    rest = argv[2:]
    if len(rest) % 2:
        print("peer_torch.py: options take one value each", file=sys.stderr)
        return 2
    args = dict(zip(rest[::2], rest[1::2]))
    allowed = {"--torch-threads", "--blas-threads", "--sizes", "--ops", "--model", "--steps",
               "--models", "--batches"}
    if set(args) - allowed:
        print(f"peer_torch.py: unknown option(s) {sorted(set(args) - allowed)}", file=sys.stderr)
        return 2
    if argv[1] == "train":
        return run_train(args)
    if argv[1] == "infer":
        return run_infer(args)
    (run_gemm if argv[1] == "gemm" else run_ops)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
