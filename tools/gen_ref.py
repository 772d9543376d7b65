#!/usr/bin/python3
"""gen_ref.py - writes kiln's PyTorch golden fixture (the oracle for tests/test_golden.c).

Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_ref.py   (from anywhere)

Writes, next to each other under tests/golden/:
  ops.json           magic/version, torch version, and one case per line:
                       {"id", "op", "params", "inputs": [tensor], "outputs": [tensor],
                        "weights": [tensor|null per output], "grads": [tensor|null per input],
                        "gradcheck": bool}
                     tensor = {"name"?, "dtype", "shape", "offset"} (+ for inputs "grad": bool,
                     "noncontig": "transpose" | "stride"); offset is a byte offset into ops.bin.
  ops.bin            little-endian raw C-order data, each tensor 8-byte aligned (bool = 1 byte).
  autograd_basics.h  the numbers examples/autograd_basics.c prints (Linear(10,2), seed 0).

Semantics: every case calls the PyTorch functional API the way kiln's public function of the same
name is documented in include/kiln/ops.h (see OPS below: op name -> torch call from params).
Grads: for differentiable cases, grads[i] = d sum_k(outputs[k] * weights[k]) / d inputs[i] for each
input with "grad": true (weights[k] is a fixed random tensor for every float output that requires
grad; null otherwise). "noncontig" asks the C test to build that input as a non-contiguous view of
the same values: "transpose" = transposed copy viewed back through its last two dims, "stride" =
every other element of a tensor twice as long in its last dim. Values are identical either way.

Deterministic: each case seeds torch with crc32(case id) before making its inputs, so adding a case
leaves the others' data unchanged. Not covered here: dropout (its RNG differs from PyTorch's; it
is tested in the op family's own test).
"""

import json
import math
import os
import sys
import warnings
import zlib

import torch
import torch.nn.functional as F

MAGIC = "KILN-GOLDEN"
VERSION = 1

F32, F64 = torch.float32, torch.float64
I8, U8, I32, I64, BOOL = torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool
F16, BF16 = torch.float16, torch.bfloat16
DTYPE_NAMES = {F32: "float32", F64: "float64", F16: "float16", BF16: "bfloat16", I8: "int8",
               U8: "uint8", I32: "int32", I64: "int64", BOOL: "bool"}
KN_DTYPES = {v: k for k, v in DTYPE_NAMES.items()}


# ---------------------------------------------------------------- input makers
def rn(*shape, dt=F32, scale=1.0):
    """standard normal * scale"""
    return (torch.randn(shape, dtype=F64) * scale).to(dt)


def uni(lo, hi, *shape, dt=F32):
    return (torch.rand(shape, dtype=F64) * (hi - lo) + lo).to(dt)


def ri(lo, hi, *shape, dt=I64):
    """random integers in [lo, hi)"""
    return torch.randint(lo, hi, shape, dtype=I64).to(dt)


def sgn_away(*shape, dt=F32, lo=0.5, hi=2.0):
    """random sign * U[lo, hi): safe divisors, away from kinks at 0"""
    s = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(F64)
    return (s * (torch.rand(shape, dtype=F64) * (hi - lo) + lo)).to(dt)


def T(vals, dt=None):
    """literal tensor: python floats -> float32, ints -> int64 unless dt is given"""
    return torch.tensor(vals) if dt is None else torch.tensor(vals, dtype=dt)


def distinct(*shape, dt=F32):
    """a random permutation of well-separated values (no ties: max/min/sort-like ops)"""
    n = 1
    for s in shape:
        n *= s
    v = torch.randperm(n).to(F64) * 0.37 - n * 0.15
    return v.reshape(shape).to(dt)


# ---------------------------------------------------------------- op table: name -> torch call
def dims_of(p, x):
    ax = p.get("axes", [])
    return tuple(ax) if ax else tuple(range(x.dim()))


def red(fn_dims):
    """reduction with kiln's (axes, naxes == 0: all, keepdim) convention"""
    def make(p):
        def f(i):
            x = i["x"]
            d = dims_of(p, x)
            if not d:  # 0-d input: reducing "all axes" of a scalar is the identity
                return fn_dims(x, None, p.get("keepdim", False))
            return fn_dims(x, d, p.get("keepdim", False))
        return f
    return make


def _sum(x, d, k):
    return x.sum() if d is None else torch.sum(x, dim=d, keepdim=k)


def _mean(x, d, k):
    return x.mean() if d is None else torch.mean(x, dim=d, keepdim=k)


def _squeeze_dims(x, d):
    nd = x.dim()
    keep = [s for j, s in enumerate(x.shape) if j not in {a % nd for a in d}]
    return x.reshape(keep)


def _prod_k(x, d, k):
    if d is None:
        return x.prod()
    y = x
    for ax in sorted((a % x.dim() for a in d), reverse=True):
        y = torch.prod(y, dim=ax, keepdim=True)
    return y if k else _squeeze_dims(y, d)


def _amax(x, d, k):
    return x.amax() if d is None else torch.amax(x, dim=d, keepdim=k)


def _amin(x, d, k):
    return x.amin() if d is None else torch.amin(x, dim=d, keepdim=k)


def unary(fn):
    return lambda p: (lambda i: fn(i["x"]))


def binary(fn):
    return lambda p: (lambda i: fn(i["a"], i["b"]))


def reduction_name(p):
    return p.get("reduction", "mean")


def conv_kw(p, nd):
    kw = {"stride": tuple(p.get("stride", [1] * nd)[:nd]),
          "dilation": tuple(p.get("dilation", [1] * nd)[:nd]),
          "groups": p.get("groups", 1)}
    kw["padding"] = "same" if p.get("same", False) else tuple(p.get("padding", [0] * nd)[:nd])
    if nd == 1:
        kw = {k: (v[0] if isinstance(v, tuple) else v) for k, v in kw.items()}
    return kw


def pool_kw(p):
    k = p["kernel"]
    s = p.get("stride", [0, 0])
    s = [k[j] if s[j] == 0 else s[j] for j in range(2)]
    return {"kernel_size": tuple(k), "stride": tuple(s), "padding": tuple(p.get("padding", [0, 0])),
            "ceil_mode": p.get("ceil_mode", False)}


def loss_kw(p, i):
    kw = {"reduction": reduction_name(p)}
    if "ignore_index" in p:
        kw["ignore_index"] = p["ignore_index"]
    if "weight" in i:
        kw["weight"] = i["weight"]
    return kw


def bn(p):
    def f(i):
        rm, rv = i.get("running_mean"), i.get("running_var")
        y = F.batch_norm(i["x"], rm, rv, i.get("weight"), i.get("bias"), p["training"],
                         p["momentum"], p["eps"])
        outs = [y]
        if p["training"] and rm is not None:
            outs += [rm, rv]  # updated in place: the C test checks them too
        return tuple(outs)
    return f


def inplace(fn):
    def make(p):
        def f(i):
            d = i["dst"].clone()
            fn(d, i, p)
            return d
        return f
    return make


def _split(p):
    return lambda i: tuple(torch.split(i["x"], p["size"], dim=p["dim"]))


def _chunk(p):
    return lambda i: tuple(torch.chunk(i["x"], p["chunks"], dim=p["dim"]))


def _slice(p):
    def f(i):
        x = i["x"]
        idx = [slice(None)] * x.dim()
        end = p.get("end")  # null = KN_SLICE_END
        idx[p["dim"]] = slice(p["start"], end, p["step"])
        return x[tuple(idx)]
    return f


def _clamp(p):
    def f(i):
        x = i["x"]
        lo, hi = p.get("min"), p.get("max")  # absent = open side (kiln: NAN)
        return torch.clamp(x, min=None if lo is None else _scalar_as(x, lo),
                           max=None if hi is None else _scalar_as(x, hi))
    return f


def _div(p):
    def f(i):
        a, b = i["a"], i["b"]
        if a.dtype.is_floating_point:
            return torch.div(a, b)
        return torch.div(a, b, rounding_mode="trunc")  # kiln: integer dtypes truncate
    return f


def _scalar_as(x, s):
    return s if x.dtype.is_floating_point else int(s)  # kiln converts the scalar to x's dtype


def _autograd_basics(p):
    def f(i):
        x, w, b = i["x"], i["weight"].clone().requires_grad_(), i["bias"].clone().requires_grad_()
        out = F.linear(x, w, b)
        out.sum().backward()
        return (out.detach(), w.grad, b.grad)
    return f


OPS = {
    # copies, casts, views
    "clone": unary(torch.clone),
    "contiguous": unary(lambda x: x.contiguous()),
    "cast": lambda p: (lambda i: i["x"].to(KN_DTYPES[p["dtype"]])),
    "reshape": lambda p: (lambda i: torch.reshape(i["x"], p["shape"])),
    "flatten": lambda p: (lambda i: torch.flatten(i["x"], p["start"], p["end"])),
    "transpose": lambda p: (lambda i: torch.transpose(i["x"], p["dim0"], p["dim1"])),
    "permute": lambda p: (lambda i: i["x"].permute(*p["dims"])),
    "squeeze": lambda p: (lambda i: i["x"].squeeze() if p["dim"] is None else
                          i["x"].squeeze(p["dim"])),
    "unsqueeze": lambda p: (lambda i: i["x"].unsqueeze(p["dim"])),
    "expand": lambda p: (lambda i: i["x"].expand(*p["shape"])),
    "slice": _slice,
    # unary
    "neg": unary(torch.neg), "abs": unary(torch.abs), "sign": unary(torch.sign),
    "exp": unary(torch.exp), "log": unary(torch.log), "log1p": unary(torch.log1p),
    "sqrt": unary(torch.sqrt), "rsqrt": unary(torch.rsqrt), "square": unary(torch.square),
    "sin": unary(torch.sin), "cos": unary(torch.cos), "tanh": unary(torch.tanh),
    "sigmoid": unary(torch.sigmoid), "relu": unary(torch.relu), "relu6": unary(F.relu6),
    "leaky_relu": lambda p: (lambda i: F.leaky_relu(i["x"], p["negative_slope"])),
    "elu": lambda p: (lambda i: F.elu(i["x"], p["alpha"])),
    "gelu": lambda p: (lambda i: F.gelu(i["x"], approximate="tanh" if p["tanh"] else "none")),
    "silu": unary(F.silu),
    "softplus": lambda p: (lambda i: F.softplus(i["x"], p["beta"], p["threshold"])),
    "erf": unary(torch.erf), "reciprocal": unary(torch.reciprocal),
    "floor": unary(torch.floor), "ceil": unary(torch.ceil), "round": unary(torch.round),
    "logical_not": unary(torch.logical_not),
    # binary
    "add": binary(torch.add), "sub": binary(torch.sub), "mul": binary(torch.mul), "div": _div,
    "pow": binary(torch.pow), "maximum": binary(torch.maximum), "minimum": binary(torch.minimum),
    "eq": binary(torch.eq), "ne": binary(torch.ne), "lt": binary(torch.lt), "le": binary(torch.le),
    "gt": binary(torch.gt), "ge": binary(torch.ge),
    "logical_and": binary(torch.logical_and), "logical_or": binary(torch.logical_or),
    "where": lambda p: (lambda i: torch.where(i["cond"], i["a"], i["b"])),
    "clamp": _clamp,
    "add_scalar": lambda p: (lambda i: i["x"] + _scalar_as(i["x"], p["s"])),
    "mul_scalar": lambda p: (lambda i: i["x"] * _scalar_as(i["x"], p["s"])),
    "pow_scalar": lambda p: (lambda i: torch.pow(i["x"], p["exponent"])),
    # reductions
    "sum": red(_sum), "mean": red(_mean), "prod": red(_prod_k), "amax": red(_amax),
    "amin": red(_amin),
    "max_dim": lambda p: (lambda i: tuple(torch.max(i["x"], p["dim"], p["keepdim"]))),
    "min_dim": lambda p: (lambda i: tuple(torch.min(i["x"], p["dim"], p["keepdim"]))),
    "argmax": lambda p: (lambda i: torch.argmax(i["x"], p["dim"], p["keepdim"])),
    "argmin": lambda p: (lambda i: torch.argmin(i["x"], p["dim"], p["keepdim"])),
    "var": lambda p: (lambda i: torch.var(i["x"], dim=dims_of(p, i["x"]),
                                          correction=p["correction"], keepdim=p["keepdim"])),
    "std": lambda p: (lambda i: torch.std(i["x"], dim=dims_of(p, i["x"]),
                                          correction=p["correction"], keepdim=p["keepdim"])),
    "logsumexp": lambda p: (lambda i: torch.logsumexp(i["x"], dim=dims_of(p, i["x"]),
                                                      keepdim=p["keepdim"])),
    "norm": lambda p: (lambda i: torch.linalg.vector_norm(i["x"], ord=p["p"],
                                                          dim=dims_of(p, i["x"]),
                                                          keepdim=p["keepdim"])),
    # linear algebra
    "matmul": binary(torch.matmul),
    "linear": lambda p: (lambda i: F.linear(i["x"], i["w"], i.get("b"))),
    # conv, pool
    "conv1d": lambda p: (lambda i: F.conv1d(i["x"], i["w"], i.get("b"), **conv_kw(p, 1))),
    "conv2d": lambda p: (lambda i: F.conv2d(i["x"], i["w"], i.get("b"), **conv_kw(p, 2))),
    "conv_transpose2d": lambda p: (lambda i: F.conv_transpose2d(
        i["x"], i["w"], i.get("b"), stride=tuple(p.get("stride", [1, 1])),
        padding=tuple(p.get("padding", [0, 0])), output_padding=tuple(p["output_padding"]),
        groups=p.get("groups", 1), dilation=tuple(p.get("dilation", [1, 1])))),
    "max_pool2d": lambda p: (lambda i: tuple(F.max_pool2d(
        i["x"], dilation=tuple(p.get("dilation", [1, 1])), return_indices=True, **pool_kw(p)))),
    "avg_pool2d": lambda p: (lambda i: F.avg_pool2d(
        i["x"], count_include_pad=p["count_include_pad"], **pool_kw(p))),
    "adaptive_avg_pool2d": lambda p: (lambda i: F.adaptive_avg_pool2d(i["x"], tuple(p["out"]))),
    "global_avg_pool2d": unary(lambda x: x.mean(dim=(2, 3), keepdim=True)),
    # normalisation
    "batch_norm": bn,
    "layer_norm": lambda p: (lambda i: F.layer_norm(
        i["x"], tuple(i["x"].shape[i["x"].dim() - p["nnorm"]:]), i.get("weight"), i.get("bias"),
        p["eps"])),
    "group_norm": lambda p: (lambda i: F.group_norm(i["x"], p["groups"], i.get("weight"),
                                                    i.get("bias"), p["eps"])),
    "softmax": lambda p: (lambda i: F.softmax(i["x"], p["dim"])),
    "log_softmax": lambda p: (lambda i: F.log_softmax(i["x"], p["dim"])),
    # losses
    "cross_entropy": lambda p: (lambda i: F.cross_entropy(
        i["x"], i["target"], label_smoothing=p.get("label_smoothing", 0.0), **loss_kw(p, i))),
    "nll_loss": lambda p: (lambda i: F.nll_loss(i["x"], i["target"], **loss_kw(p, i))),
    "mse_loss": lambda p: (lambda i: F.mse_loss(i["x"], i["y"], reduction=reduction_name(p))),
    "l1_loss": lambda p: (lambda i: F.l1_loss(i["x"], i["y"], reduction=reduction_name(p))),
    "smooth_l1_loss": lambda p: (lambda i: F.smooth_l1_loss(
        i["x"], i["y"], reduction=reduction_name(p), beta=p["beta"])),
    "binary_cross_entropy": lambda p: (lambda i: F.binary_cross_entropy(
        i["x"], i["y"], reduction=reduction_name(p))),
    "binary_cross_entropy_with_logits": lambda p: (lambda i: F.binary_cross_entropy_with_logits(
        i["x"], i["y"], reduction=reduction_name(p))),
    # embedding, joining, indexing
    "embedding": lambda p: (lambda i: F.embedding(i["indices"], i["weight"])),
    "concat": lambda p: (lambda i: torch.cat(list(i.values()), p["dim"])),
    "stack": lambda p: (lambda i: torch.stack(list(i.values()), p["dim"])),
    "split": _split,
    "chunk": _chunk,
    "gather": lambda p: (lambda i: torch.gather(i["x"], p["dim"], i["index"])),
    "scatter_add": lambda p: (lambda i: torch.scatter_add(i["x"], p["dim"], i["index"],
                                                          i["src"])),
    "index_select": lambda p: (lambda i: torch.index_select(i["x"], p["dim"], i["index"])),
    "pad": lambda p: (lambda i: F.pad(i["x"], tuple(p["pads"]), mode=p["mode"],
                                      value=p.get("value", 0.0)) if p["mode"] == "constant" else
                      F.pad(i["x"], tuple(p["pads"]), mode=p["mode"])),
    "repeat": lambda p: (lambda i: i["x"].repeat(*p["repeats"])),
    "tril": lambda p: (lambda i: torch.tril(i["x"], p["k"])),
    "triu": lambda p: (lambda i: torch.triu(i["x"], p["k"])),
    "one_hot": lambda p: (lambda i: F.one_hot(i["x"], p["num_classes"])),
    # in place (applied to a copy of "dst"; never differentiable)
    "copy_": inplace(lambda d, i, p: d.copy_(i["src"])),
    "fill_": inplace(lambda d, i, p: d.fill_(p["v"])),
    "zero_": inplace(lambda d, i, p: d.zero_()),
    "add_": inplace(lambda d, i, p: d.add_(i["src"], alpha=_scalar_as(d, p["alpha"]))),
    "mul_scalar_": inplace(lambda d, i, p: d.mul_(_scalar_as(d, p["s"]))),
    # creation (kiln/core.h), no inputs
    "arange": lambda p: (lambda i: torch.arange(p["start"], p["end"], p["step"],
                                                dtype=KN_DTYPES[p["dtype"]])),
    "linspace": lambda p: (lambda i: torch.linspace(p["start"], p["end"], p["steps"],
                                                    dtype=KN_DTYPES[p["dtype"]])),
    "eye": lambda p: (lambda i: torch.eye(p["n"], p["m"], dtype=KN_DTYPES[p["dtype"]])),
    # the example examples/autograd_basics.c (Linear(10,2), out.sum().backward())
    "autograd_basics": _autograd_basics,
}

# ops whose outputs carry no gradient in kiln (ops.h: floor/ceil/round "no gradient"; sign's
# derivative is zero almost everywhere and kiln does not record it either), and creation/in-place
NONDIFF = {"sign", "floor", "ceil", "round", "logical_not", "eq", "ne", "lt", "le", "gt", "ge",
           "logical_and", "logical_or", "argmax", "argmin", "one_hot", "copy_", "fill_", "zero_",
           "add_", "mul_scalar_", "arange", "linspace", "eye", "autograd_basics"}


# ---------------------------------------------------------------- fixture writer
class Fixture:
    def __init__(self):
        self.bin = bytearray()
        self.cases = []
        self.ids = set()

    def tensor(self, t, name=None):
        t = t.detach().contiguous().cpu()
        while len(self.bin) % 8:
            self.bin.append(0)
        off = len(self.bin)
        if t.dtype == BOOL:
            raw = t.to(U8).numpy().tobytes()
        elif t.dtype == BF16:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            a = t.numpy()
            raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        self.bin += raw
        d = {}
        if name is not None:
            d["name"] = name
        d.update({"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "offset": off})
        return d

    def case(self, cid, op, inputs=None, params=None, nc=None, nograd=(), gradcheck=True,
             diff=None):
        """inputs: a function returning {name: tensor} (called after seeding), or None.
        diff=None: differentiable unless op is in NONDIFF or no float output needs a gradient."""
        assert cid not in self.ids, cid
        assert op in OPS, op
        self.ids.add(cid)
        params = dict(params or {})
        nc = nc or {}
        torch.manual_seed(zlib.crc32(cid.encode()))
        ins = inputs() if inputs else {}
        if diff is None:
            diff = op not in NONDIFF
        descs, live = [], {}
        for name, t in ins.items():
            d = self.tensor(t, name)
            g = diff and t.dtype.is_floating_point and name not in nograd
            d["grad"] = g
            if name in nc:
                assert nc[name] in ("transpose", "stride")
                assert nc[name] != "transpose" or t.dim() >= 2, cid
                assert nc[name] != "stride" or t.dim() >= 1, cid
                d["noncontig"] = nc[name]
            descs.append(d)
            c = t.clone()
            if g:
                c.requires_grad_(True)
            live[name] = c
        for name in nc:
            assert name in ins, (cid, name)
        outs = OPS[op](params)(live)
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        if not any(o.dtype.is_floating_point and o.requires_grad for o in outs):
            for d in descs:  # e.g. a cast to an integer dtype: nothing to differentiate
                d["grad"] = False
        case = {"id": cid, "op": op, "params": params, "inputs": descs,
                "outputs": [self.tensor(o) for o in outs]}
        gin = [live[n] for n, d in zip(ins, descs) if d["grad"]]
        if gin:
            ws, terms = [], []
            for o in outs:
                if o.dtype.is_floating_point and o.requires_grad:
                    w = torch.randn(o.shape, dtype=F64).to(o.dtype)
                    ws.append(self.tensor(w))
                    terms.append((o * w).sum())
                else:
                    ws.append(None)
            assert terms, cid
            gs = torch.autograd.grad(sum(terms), gin, allow_unused=True)
            it = iter(gs)
            grads = []
            for n, d in zip(ins, descs):
                if d["grad"]:
                    g = next(it)
                    grads.append(self.tensor(torch.zeros_like(live[n]) if g is None else g))
                else:
                    grads.append(None)
            case["weights"] = ws
            case["grads"] = grads
            case["gradcheck"] = bool(gradcheck)
        self.cases.append(case)
        return case

    def write(self, outdir):
        os.makedirs(outdir, exist_ok=True)
        with open(os.path.join(outdir, "ops.bin"), "wb") as f:
            f.write(self.bin)
        head = {"magic": MAGIC, "version": VERSION,
                "comment": "generated by tools/gen_ref.py with torch %s; do not edit" %
                           torch.__version__,
                "torch": torch.__version__, "bin": "ops.bin", "bin_size": len(self.bin),
                "bin_crc32": zlib.crc32(bytes(self.bin)), "ncases": len(self.cases)}
        lines = ["{"]
        for k, v in head.items():
            lines.append("%s: %s," % (json.dumps(k), json.dumps(v)))
        lines.append('"cases": [')
        for j, c in enumerate(self.cases):
            lines.append(json.dumps(c, allow_nan=False, separators=(",", ":")) +
                         ("," if j + 1 < len(self.cases) else ""))
        lines.append("]}")
        with open(os.path.join(outdir, "ops.json"), "w") as f:
            f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- the cases
def cases_views(fx):
    c = fx.case
    c("clone_f32", "clone", lambda: {"x": rn(3, 4)})
    c("clone_f64_nc", "clone", lambda: {"x": rn(4, 3, dt=F64)}, nc={"x": "transpose"})
    c("clone_i32", "clone", lambda: {"x": ri(-5, 5, 2, 3, dt=I32)})
    c("contiguous_nc", "contiguous", lambda: {"x": rn(2, 3, 4)}, nc={"x": "transpose"})
    c("contiguous_stride", "contiguous", lambda: {"x": rn(3, 5)}, nc={"x": "stride"})
    c("contiguous_f64", "contiguous", lambda: {"x": rn(5, dt=F64)})
    for src, dst, mk in [("f32", "float64", lambda: rn(3, 4)),
                         ("f64", "float32", lambda: rn(3, 4, dt=F64)),
                         ("f32", "int32", lambda: rn(3, 4, scale=5.0)),
                         ("f32", "int64", lambda: rn(2, 5, scale=5.0)),
                         ("f32", "bool", lambda: T([[0.0, 1.5, -0.0], [-2.0, 0.0, 1e-30]])),
                         ("i64", "float32", lambda: ri(-100, 100, 2, 3)),
                         ("i32", "int64", lambda: ri(-100, 100, 6, dt=I32)),
                         ("i64", "int32", lambda: ri(-1000, 1000, 6)),
                         ("bool", "float32", lambda: ri(0, 2, 2, 3).to(BOOL)),
                         ("u8", "int32", lambda: ri(0, 256, 7, dt=U8)),
                         ("i8", "float64", lambda: ri(-128, 128, 7, dt=I8)),
                         ("f32", "float16", lambda: rn(3, 4, scale=3.0)),
                         ("f32", "bfloat16", lambda: rn(3, 4, scale=3.0)),
                         ("f16", "float32", lambda: rn(3, 4, scale=3.0).to(F16))]:
        # gradients only between f32 and f64 (f16/bf16 are storage formats in kiln)
        c("cast_%s_%s" % (src, dst), "cast", (lambda mk=mk: {"x": mk()}), {"dtype": dst},
          diff=src in ("f32", "f64") and dst in ("float32", "float64"))
    c("cast_f32_f64_nc", "cast", lambda: {"x": rn(3, 4)}, {"dtype": "float64"},
      nc={"x": "transpose"})
    c("reshape_neg1", "reshape", lambda: {"x": rn(2, 3, 4)}, {"shape": [4, -1]})
    c("reshape_nc", "reshape", lambda: {"x": rn(3, 4)}, {"shape": [2, 6]}, nc={"x": "transpose"})
    c("reshape_scalar", "reshape", lambda: {"x": rn(1, 1)}, {"shape": []})
    c("reshape_empty", "reshape", lambda: {"x": rn(0, 6)}, {"shape": [3, 0, 2]})
    c("reshape_i64", "reshape", lambda: {"x": ri(0, 9, 6)}, {"shape": [3, 2]})
    c("flatten_1_end", "flatten", lambda: {"x": rn(2, 3, 4)}, {"start": 1, "end": -1})
    c("flatten_0_1", "flatten", lambda: {"x": rn(2, 3, 4, dt=F64)}, {"start": 0, "end": 1})
    c("flatten_nc", "flatten", lambda: {"x": rn(2, 3, 4)}, {"start": 0, "end": -1},
      nc={"x": "transpose"})
    c("transpose_0_2", "transpose", lambda: {"x": rn(2, 3, 4)}, {"dim0": 0, "dim1": 2})
    c("transpose_neg", "transpose", lambda: {"x": ri(0, 9, 3, 2, dt=I32)}, {"dim0": -1, "dim1": 0})
    c("permute_201", "permute", lambda: {"x": rn(2, 3, 4)}, {"dims": [2, 0, 1]})
    c("permute_nc_f64", "permute", lambda: {"x": rn(2, 3, 4, dt=F64)}, {"dims": [1, 2, 0]},
      nc={"x": "transpose"})
    c("squeeze_dim", "squeeze", lambda: {"x": rn(3, 1, 4)}, {"dim": 1})
    c("squeeze_noop", "squeeze", lambda: {"x": rn(3, 2)}, {"dim": 0})
    c("squeeze_all", "squeeze", lambda: {"x": rn(1, 3, 1, 2, 1)}, {"dim": None})
    c("squeeze_neg", "squeeze", lambda: {"x": rn(2, 1)}, {"dim": -1})
    c("unsqueeze_0", "unsqueeze", lambda: {"x": rn(3, 4)}, {"dim": 0})
    c("unsqueeze_last", "unsqueeze", lambda: {"x": rn(3, 4)}, {"dim": -1})
    c("unsqueeze_scalar", "unsqueeze", lambda: {"x": rn()}, {"dim": 0})
    c("expand_basic", "expand", lambda: {"x": rn(3, 1)}, {"shape": [3, 4]})
    c("expand_newdims", "expand", lambda: {"x": rn(2, 1)}, {"shape": [3, -1, 4]})
    c("expand_i64", "expand", lambda: {"x": ri(0, 5, 1, 3)}, {"shape": [2, 3]})
    c("slice_step", "slice", lambda: {"x": rn(3, 7)}, {"dim": 1, "start": 1, "end": 6, "step": 2})
    c("slice_neg_start", "slice", lambda: {"x": rn(5, 2)}, {"dim": 0, "start": -3, "end": None,
                                                            "step": 1})
    c("slice_clamp", "slice", lambda: {"x": rn(4, 3, dt=F64)}, {"dim": 0, "start": 2, "end": 100,
                                                                 "step": 3})
    c("slice_empty", "slice", lambda: {"x": rn(4, 3)}, {"dim": 0, "start": 3, "end": 1, "step": 1})
    c("slice_neg_end_nc", "slice", lambda: {"x": rn(3, 6)}, {"dim": -1, "start": 0, "end": -2,
                                                             "step": 2}, nc={"x": "transpose"})


def cases_unary(fx):
    c = fx.case
    mk = {  # op -> input maker (domain-safe, away from kinks)
        "neg": lambda *s, dt=F32: rn(*s, dt=dt),
        "abs": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.1),
        "sign": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.1),
        "exp": lambda *s, dt=F32: rn(*s, dt=dt, scale=2.0),
        "log": lambda *s, dt=F32: uni(0.1, 5.0, *s, dt=dt),
        "log1p": lambda *s, dt=F32: uni(-0.7, 3.0, *s, dt=dt),
        "sqrt": lambda *s, dt=F32: uni(0.1, 5.0, *s, dt=dt),
        "rsqrt": lambda *s, dt=F32: uni(0.1, 5.0, *s, dt=dt),
        "square": lambda *s, dt=F32: rn(*s, dt=dt),
        "sin": lambda *s, dt=F32: rn(*s, dt=dt, scale=3.0),
        "cos": lambda *s, dt=F32: rn(*s, dt=dt, scale=3.0),
        "tanh": lambda *s, dt=F32: rn(*s, dt=dt, scale=2.0),
        "sigmoid": lambda *s, dt=F32: rn(*s, dt=dt, scale=3.0),
        "relu": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.05, hi=3.0),
        "relu6": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.05, hi=9.0),
        "leaky_relu": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.05, hi=3.0),
        "elu": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.05, hi=3.0),
        "gelu": lambda *s, dt=F32: rn(*s, dt=dt, scale=2.0),
        "silu": lambda *s, dt=F32: rn(*s, dt=dt, scale=2.0),
        "softplus": lambda *s, dt=F32: rn(*s, dt=dt, scale=4.0),
        "erf": lambda *s, dt=F32: rn(*s, dt=dt),
        "reciprocal": lambda *s, dt=F32: sgn_away(*s, dt=dt, lo=0.3, hi=3.0),
        "floor": lambda *s, dt=F32: rn(*s, dt=dt, scale=3.0),
        "ceil": lambda *s, dt=F32: rn(*s, dt=dt, scale=3.0),
        "round": lambda *s, dt=F32: rn(*s, dt=dt, scale=3.0),
        "logical_not": lambda *s, dt=F32: rn(*s, dt=dt) * (torch.rand(s) < 0.5).to(dt),
    }
    params = {"leaky_relu": {"negative_slope": 0.1}, "elu": {"alpha": 1.3},
              "gelu": {"tanh": False}, "softplus": {"beta": 1.0, "threshold": 20.0}}
    for op, m in mk.items():
        p = params.get(op, {})
        c(op + "_f32", op, lambda m=m: {"x": m(3, 5)}, p)
        c(op + "_f64_nc", op, lambda m=m: {"x": m(2, 4, 3, dt=F64)}, p, nc={"x": "transpose"})
        c(op + "_f32_stride", op, lambda m=m: {"x": m(2, 17)}, p, nc={"x": "stride"})
    # long enough for the vector kernels' main loops and tails (f32 fast paths)
    for op in ("exp", "log", "tanh", "sigmoid", "gelu", "silu", "erf", "softplus", "sin"):
        c(op + "_f32_long", op, lambda op=op: {"x": mk[op](133)}, params.get(op, {}))
    # gradcheck off: exp(88) swamps the finite differences of the small entries in sum(f * w)
    c("exp_f32_extreme", "exp", lambda: {"x": T([-100.0, -87.0, -10.0, 0.0, 10.0, 80.0, 88.0])},
      gradcheck=False)
    c("tanh_f32_extreme", "tanh", lambda: {"x": T([-30.0, -9.0, -1e-4, 0.0, 1e-4, 9.0, 30.0])})
    c("sigmoid_f32_extreme", "sigmoid", lambda: {"x": T([-100.0, -20.0, 0.0, 20.0, 100.0])})
    c("relu_empty", "relu", lambda: {"x": rn(0, 3)})
    c("exp_scalar", "exp", lambda: {"x": rn()})
    c("leaky_relu_slope2", "leaky_relu", lambda: {"x": mk["relu"](4, 4)}, {"negative_slope": 0.02})
    c("elu_alpha05", "elu", lambda: {"x": mk["elu"](4, 4, dt=F64)}, {"alpha": 0.5})
    c("gelu_tanh_f32", "gelu", lambda: {"x": rn(3, 7, scale=2.0)}, {"tanh": True})
    c("gelu_tanh_f64", "gelu", lambda: {"x": rn(3, 7, scale=2.0, dt=F64)}, {"tanh": True})
    c("softplus_beta2_thr3", "softplus",
      lambda: {"x": torch.cat([rn(10, scale=3.0), T([1.4, 1.6, -1.6])])},
      {"beta": 2.0, "threshold": 3.0})
    c("softplus_beta05_f64", "softplus", lambda: {"x": rn(12, dt=F64, scale=6.0)},
      {"beta": 0.5, "threshold": 5.0})
    c("round_half_even", "round",
      lambda: {"x": T([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 2.51, -3.7, 1e7 + 0.5])})
    c("floor_ceil_edges", "floor", lambda: {"x": T([-0.0, -0.5, 0.5, -1.0, 1.0, -1e-7])})
    c("ceil_edges", "ceil", lambda: {"x": T([-0.0, -0.5, 0.5, -1.0, 1.0, -1e-7], dt=F64)})
    c("neg_i32", "neg", lambda: {"x": ri(-50, 50, 3, 4, dt=I32)})
    c("neg_i64", "neg", lambda: {"x": ri(-50, 50, 5)})
    c("abs_i32", "abs", lambda: {"x": ri(-50, 50, 3, 4, dt=I32)})
    c("abs_i8_nc", "abs", lambda: {"x": ri(-100, 100, 3, 4, dt=I8)}, nc={"x": "transpose"})
    c("sign_i64", "sign", lambda: {"x": ri(-3, 4, 8)})
    c("square_i32", "square", lambda: {"x": ri(-30, 30, 6, dt=I32)})
    c("logical_not_bool", "logical_not", lambda: {"x": ri(0, 2, 2, 5).to(BOOL)})
    c("logical_not_i32", "logical_not", lambda: {"x": ri(-2, 3, 7, dt=I32)})


def cases_binary(fx):
    c = fx.case
    b_pos = lambda *s, dt=F32: uni(0.5, 2.0, *s, dt=dt)
    mk_b = {"add": rn, "sub": rn, "mul": rn, "div": sgn_away, "pow": rn, "maximum": distinct,
            "minimum": distinct}
    mk_a = {"add": rn, "sub": rn, "mul": rn, "div": rn, "pow": b_pos, "maximum": distinct,
            "minimum": distinct}

    def pair(op, sa, sb, dt=F32):
        def f():
            if op in ("maximum", "minimum"):  # no ties between a and b
                n = max(1, math.prod(sa)) + max(1, math.prod(sb))
                v = distinct(n, dt=dt)
                a = v[:math.prod(sa)].reshape(sa)
                b = v[math.prod(sa):math.prod(sa) + math.prod(sb)].reshape(sb)
                return {"a": a, "b": b}
            return {"a": mk_a[op](*sa, dt=dt), "b": mk_b[op](*sb, dt=dt)}
        return f

    for op in ("add", "sub", "mul", "div", "pow", "maximum", "minimum"):
        c(op + "_f32", op, pair(op, (3, 4), (3, 4)))
        c(op + "_f32_bcast", op, pair(op, (2, 3, 1), (1, 4)))
        c(op + "_f64_bcast", op, pair(op, (4,), (3, 1), dt=F64))
        c(op + "_f32_nc", op, pair(op, (4, 3), (4, 3)), nc={"a": "transpose", "b": "stride"})
        c(op + "_f32_scalar", op, pair(op, (), (2, 3)))
        c(op + "_f32_empty", op, pair(op, (0, 3), (1, 3)))
        c(op + "_f32_long", op, pair(op, (5, 37), (37,)))
    for op in ("add", "sub", "mul", "maximum", "minimum"):
        c(op + "_i32", op, lambda: {"a": ri(-100, 100, 3, 4, dt=I32),
                                    "b": ri(-100, 100, 4, dt=I32)})
        c(op + "_i64_nc", op, lambda: {"a": ri(-100, 100, 3, 4), "b": ri(-100, 100, 3, 4)},
          nc={"a": "transpose"})
    c("add_u8_wrap", "add", lambda: {"a": ri(100, 256, 6, dt=U8), "b": ri(100, 256, 6, dt=U8)})
    c("mul_i8", "mul", lambda: {"a": ri(-11, 11, 8, dt=I8), "b": ri(-11, 11, 8, dt=I8)})
    c("div_i32_trunc", "div", lambda: {"a": ri(-50, 50, 3, 4, dt=I32),
                                       "b": T([[3, -3, 7, -2]], dt=I32)})
    c("div_i64_trunc", "div", lambda: {"a": T([7, -7, 7, -7, 0, 9]), "b": T([2, 2, -2, -2, 5, 3])})
    c("pow_i64", "pow", lambda: {"a": ri(-4, 5, 8), "b": ri(0, 4, 8)})
    c("pow_f32_negbase_intexp", "pow", lambda: {"a": T([-2.0, -1.5, -0.5, 3.0]),
                                               "b": T([2.0, 3.0, 2.0, -1.0])}, nograd=["b"])
    # comparisons (values drawn from a small set so that ties occur)
    for op in ("eq", "ne", "lt", "le", "gt", "ge"):
        c(op + "_f32_bcast", op, lambda: {"a": ri(0, 3, 3, 4).to(F32), "b": ri(0, 3, 4).to(F32)})
        c(op + "_f64_nc", op, lambda: {"a": ri(0, 3, 4, 3).to(F64), "b": ri(0, 3, 4, 3).to(F64)},
          nc={"a": "transpose"})
        c(op + "_i32", op, lambda: {"a": ri(-2, 2, 2, 5, dt=I32), "b": ri(-2, 2, 2, 1, dt=I32)})
    c("eq_i64_scalar", "eq", lambda: {"a": ri(0, 3, 6), "b": T(1, dt=I64)})
    c("lt_u8", "lt", lambda: {"a": ri(0, 256, 8, dt=U8), "b": ri(0, 256, 8, dt=U8)})
    c("eq_bool", "eq", lambda: {"a": ri(0, 2, 6).to(BOOL), "b": ri(0, 2, 6).to(BOOL)})
    c("gt_f32_empty", "gt", lambda: {"a": rn(0, 2), "b": rn(2)})
    for op in ("logical_and", "logical_or"):
        c(op + "_bool", op, lambda: {"a": ri(0, 2, 3, 4).to(BOOL), "b": ri(0, 2, 4).to(BOOL)})
        c(op + "_f32", op, lambda: {"a": ri(0, 2, 3, 4).to(F32) * rn(3, 4),
                                    "b": ri(0, 2, 3, 1).to(F32) * rn(3, 1)})
        c(op + "_i32_nc", op, lambda: {"a": ri(-1, 2, 4, 3, dt=I32), "b": ri(-1, 2, 4, 3, dt=I32)},
          nc={"a": "transpose"})
    c("where_f32_bcast", "where", lambda: {"cond": ri(0, 2, 3, 1).to(BOOL), "a": rn(3, 4),
                                           "b": rn(4)})
    c("where_f32_full", "where", lambda: {"cond": ri(0, 2, 3, 4).to(BOOL), "a": rn(3, 4),
                                          "b": rn(3, 4)})
    c("where_f64_nc", "where", lambda: {"cond": ri(0, 2, 4, 3).to(BOOL), "a": rn(4, 3, dt=F64),
                                        "b": rn(dt=F64)}, nc={"cond": "transpose", "a": "stride"})
    c("where_i64", "where", lambda: {"cond": ri(0, 2, 5).to(BOOL), "a": ri(0, 9, 5),
                                     "b": ri(-9, 0, 1)})
    c("clamp_both", "clamp", lambda: {"x": sgn_away(4, 5, lo=0.05, hi=3.0)},
      {"min": -1.0, "max": 0.75})
    c("clamp_lo", "clamp", lambda: {"x": sgn_away(4, 5, lo=0.05, hi=3.0)}, {"min": 0.3})
    c("clamp_hi_f64_nc", "clamp", lambda: {"x": sgn_away(4, 5, dt=F64, lo=0.05, hi=3.0)},
      {"max": -0.2}, nc={"x": "transpose"})
    c("clamp_i32", "clamp", lambda: {"x": ri(-20, 20, 10, dt=I32)}, {"min": -5.0, "max": 7.0})
    c("clamp_long", "clamp", lambda: {"x": sgn_away(77, lo=0.01, hi=3.0)},
      {"min": -1.5, "max": 1.5})
    c("add_scalar_f32", "add_scalar", lambda: {"x": rn(3, 4)}, {"s": 2.5})
    c("add_scalar_f64_nc", "add_scalar", lambda: {"x": rn(3, 4, dt=F64)}, {"s": -0.125},
      nc={"x": "transpose"})
    c("add_scalar_i32", "add_scalar", lambda: {"x": ri(-9, 9, 5, dt=I32)}, {"s": 3.0})
    c("mul_scalar_f32", "mul_scalar", lambda: {"x": rn(3, 4)}, {"s": -1.5})
    c("mul_scalar_f64", "mul_scalar", lambda: {"x": rn(7, dt=F64)}, {"s": 0.1})
    c("mul_scalar_i64", "mul_scalar", lambda: {"x": ri(-9, 9, 5)}, {"s": -3.0})
    c("mul_scalar_empty", "mul_scalar", lambda: {"x": rn(2, 0)}, {"s": 2.0})
    c("pow_scalar_2", "pow_scalar", lambda: {"x": rn(3, 4)}, {"exponent": 2.0})
    c("pow_scalar_3_f64", "pow_scalar", lambda: {"x": rn(3, 4, dt=F64)}, {"exponent": 3.0})
    c("pow_scalar_half", "pow_scalar", lambda: {"x": uni(0.2, 4.0, 3, 4)}, {"exponent": 0.5})
    c("pow_scalar_neg_nc", "pow_scalar", lambda: {"x": uni(0.5, 3.0, 4, 3)}, {"exponent": -1.5},
      nc={"x": "transpose"})
    c("pow_scalar_zero", "pow_scalar", lambda: {"x": rn(5)}, {"exponent": 0.0})


def cases_reduce(fx):
    c = fx.case
    for op in ("sum", "mean", "prod", "amax", "amin"):
        m = distinct if op in ("amax", "amin") else (
            (lambda *s, dt=F32: uni(0.5, 1.5, *s, dt=dt) * sgn_away(*s, dt=dt, lo=1, hi=1.0001))
            if op == "prod" else rn)
        c(op + "_all", op, lambda m=m: {"x": m(3, 4)}, {"axes": [], "keepdim": False})
        c(op + "_all_keep", op, lambda m=m: {"x": m(3, 4)}, {"axes": [], "keepdim": True})
        c(op + "_ax1", op, lambda m=m: {"x": m(3, 4)}, {"axes": [1], "keepdim": False})
        c(op + "_ax02_keep", op, lambda m=m: {"x": m(2, 3, 4)}, {"axes": [0, 2], "keepdim": True})
        c(op + "_neg_f64", op, lambda m=m: {"x": m(2, 3, 4, dt=F64)},
          {"axes": [-1], "keepdim": False})
        c(op + "_nc", op, lambda m=m: {"x": m(2, 5, 3)}, {"axes": [1], "keepdim": False},
          nc={"x": "transpose"})
        c(op + "_stride_all", op, lambda m=m: {"x": m(3, 6)}, {"axes": [], "keepdim": False},
          nc={"x": "stride"})
        c(op + "_scalar", op, lambda m=m: {"x": m()}, {"axes": [], "keepdim": False})
        c(op + "_size1", op, lambda m=m: {"x": m(1, 4, 1)}, {"axes": [0, 2], "keepdim": False})
    c("sum_long_f32", "sum", lambda: {"x": rn(1000, 3)}, {"axes": [0], "keepdim": False})
    c("sum_long_all", "sum", lambda: {"x": rn(4099)}, {"axes": [], "keepdim": False})
    c("mean_long_inner", "mean", lambda: {"x": rn(3, 1001)}, {"axes": [1], "keepdim": True})
    c("sum_empty_ax0", "sum", lambda: {"x": rn(0, 3)}, {"axes": [0], "keepdim": False})
    c("sum_empty_all", "sum", lambda: {"x": rn(2, 0)}, {"axes": [], "keepdim": False})
    c("prod_empty", "prod", lambda: {"x": rn(0, 3)}, {"axes": [0], "keepdim": False})
    c("mean_empty_nan", "mean", lambda: {"x": rn(0, 3)}, {"axes": [0], "keepdim": False})
    c("sum_i64", "sum", lambda: {"x": ri(-100, 100, 3, 4)}, {"axes": [1], "keepdim": False})
    c("sum_i64_all", "sum", lambda: {"x": ri(-100, 100, 3, 4)}, {"axes": [], "keepdim": False})
    # PyTorch sums and multiplies integer and bool tensors into int64
    c("sum_i32_to_i64", "sum", lambda: {"x": ri(-100, 100, 3, 4, dt=I32)},
      {"axes": [0], "keepdim": False})
    c("sum_u8_to_i64", "sum", lambda: {"x": ri(200, 256, 2, 6, dt=U8)},
      {"axes": [1], "keepdim": True})
    c("sum_bool_to_i64", "sum", lambda: {"x": ri(0, 2, 3, 5).to(BOOL)},
      {"axes": [], "keepdim": False})
    c("prod_i32_to_i64", "prod", lambda: {"x": ri(-4, 5, 2, 5, dt=I32)},
      {"axes": [1], "keepdim": False})
    c("amax_i32", "amax", lambda: {"x": ri(-100, 100, 3, 4, dt=I32)},
      {"axes": [0], "keepdim": False})
    c("amin_i64_nc", "amin", lambda: {"x": ri(-100, 100, 4, 3)}, {"axes": [1], "keepdim": True},
      nc={"x": "transpose"})
    c("amax_u8", "amax", lambda: {"x": ri(0, 256, 4, 5, dt=U8)}, {"axes": [], "keepdim": False})
    c("prod_with_zero", "prod", lambda: {"x": T([[1.5, 0.0, -2.0], [0.5, 2.0, 3.0]])},
      {"axes": [1], "keepdim": False})
    c("prod_two_zeros", "prod", lambda: {"x": T([0.0, 2.0, 0.0, 3.0], dt=F64)},
      {"axes": [], "keepdim": False})
    # ties: torch splits the gradient evenly between equal maxima (amax/amin)
    c("amax_ties", "amax", lambda: {"x": T([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])},
      {"axes": [1], "keepdim": False}, gradcheck=False)
    for op in ("max_dim", "min_dim"):
        c(op + "_d1", op, lambda: {"x": distinct(3, 5)}, {"dim": 1, "keepdim": False})
        c(op + "_d0_keep_f64", op, lambda: {"x": distinct(4, 3, dt=F64)},
          {"dim": 0, "keepdim": True})
        c(op + "_neg_nc", op, lambda: {"x": distinct(2, 4, 3)}, {"dim": -1, "keepdim": False},
          nc={"x": "transpose"})
        c(op + "_ties", op, lambda: {"x": T([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])},
          {"dim": 1, "keepdim": False}, gradcheck=False)
        c(op + "_i32", op, lambda: {"x": ri(-5, 5, 3, 6, dt=I32)}, {"dim": 1, "keepdim": False})
    for op in ("argmax", "argmin"):
        c(op + "_d1", op, lambda: {"x": distinct(3, 5)}, {"dim": 1, "keepdim": False})
        c(op + "_d0_keep", op, lambda: {"x": distinct(4, 3, dt=F64)}, {"dim": 0, "keepdim": True})
        c(op + "_ties", op, lambda: {"x": ri(0, 3, 4, 6).to(F32)}, {"dim": 1, "keepdim": False})
        c(op + "_i64_nc", op, lambda: {"x": ri(0, 4, 5, 4)}, {"dim": -1, "keepdim": False},
          nc={"x": "transpose"})
    for op in ("var", "std"):
        c(op + "_all", op, lambda: {"x": rn(3, 4)}, {"axes": [], "correction": 1, "keepdim": False})
        c(op + "_ax1_c0", op, lambda: {"x": rn(3, 5)}, {"axes": [1], "correction": 0,
                                                        "keepdim": False})
        c(op + "_ax02_keep_f64", op, lambda: {"x": rn(2, 3, 4, dt=F64)},
          {"axes": [0, 2], "correction": 1, "keepdim": True})
        c(op + "_c2_nc", op, lambda: {"x": rn(4, 6)}, {"axes": [0], "correction": 2,
                                                       "keepdim": False}, nc={"x": "transpose"})
        c(op + "_offset_mean", op, lambda: {"x": rn(64) * 0.01 + 1000.0},
          {"axes": [], "correction": 1, "keepdim": False})
    c("logsumexp_all", "logsumexp", lambda: {"x": rn(3, 4)}, {"axes": [], "keepdim": False})
    c("logsumexp_ax1_keep", "logsumexp", lambda: {"x": rn(3, 5)}, {"axes": [1], "keepdim": True})
    c("logsumexp_large", "logsumexp", lambda: {"x": rn(2, 4) * 5 + 100.0},
      {"axes": [-1], "keepdim": False})
    c("logsumexp_f64_nc", "logsumexp", lambda: {"x": rn(3, 4, 2, dt=F64)},
      {"axes": [0, 1], "keepdim": False}, nc={"x": "transpose"})
    c("logsumexp_neg_large", "logsumexp", lambda: {"x": rn(3, 4) - 200.0},
      {"axes": [0], "keepdim": False})
    for pv in (2.0, 1.0, 3.0, 0.5):
        tag = str(pv).replace(".", "_")
        c("norm_p%s" % tag, "norm", lambda: {"x": sgn_away(3, 4, lo=0.1)},
          {"p": pv, "axes": [1], "keepdim": False})
    c("norm_all_f64", "norm", lambda: {"x": rn(2, 3, 4, dt=F64)},
      {"p": 2.0, "axes": [], "keepdim": False})
    c("norm_keep_nc", "norm", lambda: {"x": rn(4, 3)}, {"p": 2.0, "axes": [0], "keepdim": True},
      nc={"x": "transpose"})


def cases_linalg(fx):
    c = fx.case
    c("matmul_2d", "matmul", lambda: {"a": rn(3, 4), "b": rn(4, 5)})
    c("matmul_2d_f64", "matmul", lambda: {"a": rn(3, 4, dt=F64), "b": rn(4, 5, dt=F64)})
    c("matmul_1d_1d", "matmul", lambda: {"a": rn(6), "b": rn(6)})
    c("matmul_1d_2d", "matmul", lambda: {"a": rn(4), "b": rn(4, 3)})
    c("matmul_2d_1d", "matmul", lambda: {"a": rn(3, 4), "b": rn(4)})
    c("matmul_batched_bcast", "matmul", lambda: {"a": rn(2, 1, 3, 4), "b": rn(5, 4, 2)})
    c("matmul_batched_2d", "matmul", lambda: {"a": rn(2, 3, 4), "b": rn(4, 2)})
    c("matmul_1d_batched", "matmul", lambda: {"a": rn(4), "b": rn(2, 4, 3)})
    c("matmul_batched_1d", "matmul", lambda: {"a": rn(2, 3, 4, dt=F64), "b": rn(4, dt=F64)})
    c("matmul_nc_a", "matmul", lambda: {"a": rn(5, 4), "b": rn(4, 3)}, nc={"a": "transpose"})
    c("matmul_nc_b", "matmul", lambda: {"a": rn(5, 4), "b": rn(4, 3)}, nc={"b": "transpose"})
    c("matmul_nc_both_batched", "matmul", lambda: {"a": rn(2, 3, 4), "b": rn(2, 4, 5)},
      nc={"a": "transpose", "b": "stride"})
    c("matmul_empty_m", "matmul", lambda: {"a": rn(0, 3), "b": rn(3, 2)})
    c("matmul_empty_k", "matmul", lambda: {"a": rn(2, 0), "b": rn(0, 3)})
    c("matmul_big", "matmul", lambda: {"a": rn(33, 70), "b": rn(70, 47)})
    c("matmul_big_f64", "matmul", lambda: {"a": rn(17, 40, dt=F64), "b": rn(40, 9, dt=F64)})
    c("matmul_size1", "matmul", lambda: {"a": rn(1, 4), "b": rn(4, 1)})
    c("linear_bias", "linear", lambda: {"x": rn(3, 4), "w": rn(5, 4), "b": rn(5)})
    c("linear_nobias_3d", "linear", lambda: {"x": rn(2, 3, 4), "w": rn(5, 4)})
    c("linear_1d", "linear", lambda: {"x": rn(4), "w": rn(2, 4), "b": rn(2)})
    c("linear_f64_nc", "linear", lambda: {"x": rn(3, 4, dt=F64), "w": rn(5, 4, dt=F64),
                                          "b": rn(5, dt=F64)}, nc={"w": "transpose"})
    c("linear_nc_x", "linear", lambda: {"x": rn(6, 4), "w": rn(3, 4), "b": rn(3)},
      nc={"x": "transpose"})
    c("linear_big", "linear", lambda: {"x": rn(16, 64), "w": rn(48, 64), "b": rn(48)})
    c("linear_empty_batch", "linear", lambda: {"x": rn(0, 4), "w": rn(3, 4), "b": rn(3)})


def cases_conv(fx):
    c = fx.case
    c("conv1d_basic", "conv1d", lambda: {"x": rn(2, 3, 8), "w": rn(4, 3, 3), "b": rn(4)},
      {"stride": [1], "padding": [0], "dilation": [1], "groups": 1})
    c("conv1d_s2_p1_d2_g2", "conv1d", lambda: {"x": rn(2, 4, 9), "w": rn(6, 2, 3), "b": rn(6)},
      {"stride": [2], "padding": [1], "dilation": [2], "groups": 2})
    c("conv1d_same_even_k", "conv1d", lambda: {"x": rn(1, 2, 7), "w": rn(3, 2, 4)},
      {"same": True, "dilation": [1], "groups": 1})
    c("conv1d_same_dil", "conv1d", lambda: {"x": rn(2, 2, 10, dt=F64), "w": rn(2, 2, 3, dt=F64),
                                            "b": rn(2, dt=F64)},
      {"same": True, "dilation": [2], "groups": 1})
    c("conv1d_nc", "conv1d", lambda: {"x": rn(2, 3, 6), "w": rn(2, 3, 2), "b": rn(2)},
      {"padding": [2]}, nc={"x": "transpose", "w": "stride"})
    c("conv2d_basic_p1", "conv2d", lambda: {"x": rn(2, 3, 6, 5), "w": rn(4, 3, 3, 3),
                                            "b": rn(4)}, {"padding": [1, 1]})
    c("conv2d_nobias", "conv2d", lambda: {"x": rn(1, 2, 5, 5), "w": rn(3, 2, 3, 3)}, {})
    c("conv2d_s2", "conv2d", lambda: {"x": rn(2, 3, 7, 8), "w": rn(2, 3, 3, 3), "b": rn(2)},
      {"stride": [2, 2], "padding": [1, 1]})
    c("conv2d_asym", "conv2d", lambda: {"x": rn(1, 2, 6, 7), "w": rn(3, 2, 2, 3), "b": rn(3)},
      {"stride": [2, 1], "padding": [0, 2], "dilation": [1, 2]})
    c("conv2d_depthwise", "conv2d", lambda: {"x": rn(2, 3, 7, 7), "w": rn(6, 1, 3, 3),
                                             "b": rn(6)},
      {"padding": [1, 1], "groups": 3})
    c("conv2d_groups2", "conv2d", lambda: {"x": rn(1, 4, 5, 5), "w": rn(4, 2, 3, 3), "b": rn(4)},
      {"groups": 2, "dilation": [2, 2], "padding": [2, 2]})
    c("conv2d_same_even", "conv2d", lambda: {"x": rn(1, 2, 5, 6), "w": rn(3, 2, 2, 3),
                                             "b": rn(3)}, {"same": True})
    c("conv2d_1x1", "conv2d", lambda: {"x": rn(2, 8, 4, 4), "w": rn(5, 8, 1, 1), "b": rn(5)}, {})
    c("conv2d_f64", "conv2d", lambda: {"x": rn(2, 2, 5, 4, dt=F64), "w": rn(3, 2, 3, 2, dt=F64),
                                       "b": rn(3, dt=F64)}, {"padding": [1, 0], "stride": [1, 2]})
    c("conv2d_nc", "conv2d", lambda: {"x": rn(1, 3, 6, 5), "w": rn(2, 3, 3, 3), "b": rn(2)},
      {"padding": [1, 1]}, nc={"x": "transpose", "w": "transpose"})
    c("conv2d_bigger", "conv2d", lambda: {"x": rn(2, 16, 12, 12), "w": rn(32, 16, 3, 3),
                                          "b": rn(32)}, {"padding": [1, 1]}, gradcheck=False)
    c("conv_transpose2d_s2_op1", "conv_transpose2d",
      lambda: {"x": rn(2, 4, 3, 3), "w": rn(4, 3, 3, 3), "b": rn(3)},
      {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]})
    c("conv_transpose2d_basic", "conv_transpose2d",
      lambda: {"x": rn(1, 2, 4, 3), "w": rn(2, 3, 2, 2)}, {"output_padding": [0, 0]})
    c("conv_transpose2d_groups", "conv_transpose2d",
      lambda: {"x": rn(1, 4, 3, 4), "w": rn(4, 2, 3, 2), "b": rn(4)},
      {"groups": 2, "stride": [1, 2], "output_padding": [0, 1]})
    c("conv_transpose2d_dil_f64", "conv_transpose2d",
      lambda: {"x": rn(2, 2, 3, 3, dt=F64), "w": rn(2, 2, 3, 3, dt=F64), "b": rn(2, dt=F64)},
      {"dilation": [2, 1], "padding": [1, 0], "output_padding": [0, 0]})
    c("conv_transpose2d_nc", "conv_transpose2d",
      lambda: {"x": rn(1, 3, 4, 4), "w": rn(3, 2, 3, 3), "b": rn(2)},
      {"stride": [2, 2], "output_padding": [0, 0]}, nc={"x": "transpose"})


def cases_pool(fx):
    c = fx.case

    def pool(k, s=(0, 0), p=(0, 0), d=(1, 1), ceil=False, cip=True):
        return {"kernel": list(k), "stride": list(s), "padding": list(p), "dilation": list(d),
                "ceil_mode": ceil, "count_include_pad": cip}
    c("max_pool2d_k2", "max_pool2d", lambda: {"x": distinct(2, 3, 6, 6)}, pool((2, 2)))
    c("max_pool2d_k3s2p1", "max_pool2d", lambda: {"x": distinct(1, 2, 7, 7)},
      pool((3, 3), (2, 2), (1, 1)))
    c("max_pool2d_ceil", "max_pool2d", lambda: {"x": distinct(1, 2, 7, 8)},
      pool((3, 3), (2, 2), ceil=True))
    c("max_pool2d_dil", "max_pool2d", lambda: {"x": distinct(1, 1, 8, 8, dt=F64)},
      pool((2, 3), (1, 2), (1, 1), (2, 2)))
    c("max_pool2d_rect_nc", "max_pool2d", lambda: {"x": distinct(2, 2, 5, 6)},
      pool((2, 3), (2, 1)), nc={"x": "transpose"})
    # ties inside a window: PyTorch reports (and routes the gradient to) the first maximum
    c("max_pool2d_ties", "max_pool2d", lambda: {"x": ri(0, 3, 1, 2, 4, 6).to(F32)},
      pool((2, 3), (2, 2)), gradcheck=False)
    c("max_pool2d_negative", "max_pool2d", lambda: {"x": -uni(1, 2, 1, 1, 4, 4)},
      pool((2, 2), (2, 2), (1, 1)))
    c("avg_pool2d_k2", "avg_pool2d", lambda: {"x": rn(2, 3, 6, 6)}, pool((2, 2)))
    c("avg_pool2d_p1_incl", "avg_pool2d", lambda: {"x": rn(1, 2, 5, 5)},
      pool((3, 3), (2, 2), (1, 1), cip=True))
    c("avg_pool2d_p1_excl", "avg_pool2d", lambda: {"x": rn(1, 2, 5, 5)},
      pool((3, 3), (2, 2), (1, 1), cip=False))
    c("avg_pool2d_ceil_incl", "avg_pool2d", lambda: {"x": rn(1, 1, 6, 6, dt=F64)},
      pool((3, 3), (2, 2), (1, 1), ceil=True, cip=True))
    c("avg_pool2d_ceil_excl", "avg_pool2d", lambda: {"x": rn(1, 1, 6, 7)},
      pool((3, 2), (2, 2), (0, 1), ceil=True, cip=False))
    c("avg_pool2d_nc", "avg_pool2d", lambda: {"x": rn(2, 2, 4, 6)}, pool((2, 3), (1, 2)),
      nc={"x": "transpose"})
    c("adaptive_avg_pool2d_uneven", "adaptive_avg_pool2d", lambda: {"x": rn(2, 3, 7, 5)},
      {"out": [3, 2]})
    c("adaptive_avg_pool2d_1x1", "adaptive_avg_pool2d", lambda: {"x": rn(2, 3, 4, 5)},
      {"out": [1, 1]})
    c("adaptive_avg_pool2d_identity", "adaptive_avg_pool2d", lambda: {"x": rn(1, 2, 3, 4)},
      {"out": [3, 4]})
    c("adaptive_avg_pool2d_up_f64", "adaptive_avg_pool2d", lambda: {"x": rn(1, 2, 3, 3, dt=F64)},
      {"out": [4, 5]})
    c("adaptive_avg_pool2d_nc", "adaptive_avg_pool2d", lambda: {"x": rn(1, 2, 6, 6)},
      {"out": [4, 3]}, nc={"x": "transpose"})
    c("global_avg_pool2d_f32", "global_avg_pool2d", lambda: {"x": rn(2, 3, 4, 5)})
    c("global_avg_pool2d_f64_nc", "global_avg_pool2d", lambda: {"x": rn(2, 3, 3, 4, dt=F64)},
      nc={"x": "transpose"})
    c("global_avg_pool2d_1x1", "global_avg_pool2d", lambda: {"x": rn(3, 2, 1, 1)})


def cases_norm(fx):
    c = fx.case

    def bn_in(shape, rs=True, affine=True, dt=F32):
        C = shape[1]

        def f():
            d = {"x": rn(*shape, dt=dt) * 2 + 0.5}
            if rs:
                d["running_mean"] = rn(C, dt=dt) * 0.1
                d["running_var"] = uni(0.5, 1.5, C, dt=dt)
            if affine:
                d["weight"] = uni(0.5, 1.5, C, dt=dt)
                d["bias"] = rn(C, dt=dt)
            return d
        return f
    tr = {"training": True, "momentum": 0.1, "eps": 1e-5}
    ev = {"training": False, "momentum": 0.1, "eps": 1e-5}
    rs_ng = ["running_mean", "running_var"]
    c("batch_norm_train_2d", "batch_norm", bn_in((6, 3)), tr, nograd=rs_ng)
    c("batch_norm_train_4d", "batch_norm", bn_in((2, 3, 4, 5)), tr, nograd=rs_ng)
    c("batch_norm_train_3d_noaffine", "batch_norm", bn_in((2, 3, 5), affine=False),
      dict(tr, momentum=0.3, eps=1e-3), nograd=rs_ng)
    c("batch_norm_train_nostats", "batch_norm", bn_in((4, 2, 3), rs=False), tr)
    c("batch_norm_train_f64_nc", "batch_norm", bn_in((3, 2, 4, 3), dt=F64), tr, nograd=rs_ng,
      nc={"x": "transpose"})
    c("batch_norm_eval_4d", "batch_norm", bn_in((2, 3, 4, 4)), ev, nograd=rs_ng)
    c("batch_norm_eval_f64", "batch_norm", bn_in((3, 4, 2), dt=F64), ev, nograd=rs_ng)
    c("batch_norm_eval_noaffine", "batch_norm", bn_in((5, 2), affine=False), ev, nograd=rs_ng)

    def ln_in(shape, wshape, dt=F32):
        def f():
            d = {"x": rn(*shape, dt=dt) * 1.5 + 0.3}
            if wshape is not None:
                d["weight"] = uni(0.5, 1.5, *wshape, dt=dt)
                d["bias"] = rn(*wshape, dt=dt)
            return d
        return f
    c("layer_norm_last", "layer_norm", ln_in((2, 3, 4), (4,)), {"nnorm": 1, "eps": 1e-5})
    c("layer_norm_last2", "layer_norm", ln_in((2, 3, 4), (3, 4)), {"nnorm": 2, "eps": 1e-5})
    c("layer_norm_noaffine", "layer_norm", ln_in((3, 5), None), {"nnorm": 1, "eps": 1e-5})
    c("layer_norm_f64_nc", "layer_norm", ln_in((3, 4, 5), (5,), dt=F64),
      {"nnorm": 1, "eps": 1e-6}, nc={"x": "transpose"})
    c("layer_norm_long", "layer_norm", ln_in((4, 300), (300,)), {"nnorm": 1, "eps": 1e-5})
    c("layer_norm_stride", "layer_norm", ln_in((3, 6), (6,)), {"nnorm": 1, "eps": 1e-5},
      nc={"x": "stride"})

    def gn_in(shape, affine=True, dt=F32):
        C = shape[1]

        def f():
            d = {"x": rn(*shape, dt=dt) + 0.2}
            if affine:
                d["weight"] = uni(0.5, 1.5, C, dt=dt)
                d["bias"] = rn(C, dt=dt)
            return d
        return f
    c("group_norm_g3", "group_norm", gn_in((2, 6, 4)), {"groups": 3, "eps": 1e-5})
    c("group_norm_4d_g2", "group_norm", gn_in((2, 4, 3, 3)), {"groups": 2, "eps": 1e-5})
    c("group_norm_g1", "group_norm", gn_in((2, 3, 4)), {"groups": 1, "eps": 1e-5})
    c("group_norm_gC_f64", "group_norm", gn_in((2, 4, 5), dt=F64), {"groups": 4, "eps": 1e-5})
    c("group_norm_noaffine_nc", "group_norm", gn_in((2, 4, 3, 2), affine=False),
      {"groups": 2, "eps": 1e-5}, nc={"x": "transpose"})
    for op in ("softmax", "log_softmax"):
        c(op + "_last", op, lambda: {"x": rn(3, 5, scale=2.0)}, {"dim": -1})
        c(op + "_dim0", op, lambda: {"x": rn(4, 3)}, {"dim": 0})
        c(op + "_mid_3d", op, lambda: {"x": rn(2, 4, 3)}, {"dim": 1})
        c(op + "_large", op, lambda: {"x": rn(2, 6) * 10 + T([[500.0], [-500.0]])}, {"dim": 1})
        c(op + "_f64_nc", op, lambda: {"x": rn(3, 4, dt=F64)}, {"dim": -1},
          nc={"x": "transpose"})
        c(op + "_long", op, lambda: {"x": rn(3, 300, scale=3.0)}, {"dim": -1})
        c(op + "_size1", op, lambda: {"x": rn(3, 1)}, {"dim": 1})
        c(op + "_empty", op, lambda: {"x": rn(0, 4)}, {"dim": -1})
        c(op + "_neg_inf", op, lambda: {"x": T([[0.5, -math.inf, 1.0], [-math.inf, 2.0, 0.0]])},
          {"dim": 1}, gradcheck=False)


def cases_loss(fx):
    c = fx.case
    R = ("mean", "sum", "none")
    for r in R:
        c("cross_entropy_" + r, "cross_entropy",
          lambda: {"x": rn(4, 5, scale=2.0), "target": ri(0, 5, 4)}, {"reduction": r})
    c("cross_entropy_default_ignore", "cross_entropy",
      lambda: {"x": rn(5, 3), "target": T([0, -100, 2, 1, -100], dt=I64)}, {"reduction": "mean"})
    c("cross_entropy_ignore2_sum", "cross_entropy",
      lambda: {"x": rn(6, 4), "target": T([2, 0, 2, 3, 1, 2], dt=I64)},
      {"reduction": "sum", "ignore_index": 2})
    c("cross_entropy_weight_mean", "cross_entropy",
      lambda: {"x": rn(6, 4), "target": ri(0, 4, 6), "weight": uni(0.2, 2.0, 4)},
      {"reduction": "mean"}, nograd=["weight"])
    c("cross_entropy_weight_none_ignore", "cross_entropy",
      lambda: {"x": rn(5, 3), "target": T([0, 1, 1, 2, 0], dt=I64), "weight": uni(0.2, 2.0, 3)},
      {"reduction": "none", "ignore_index": 1}, nograd=["weight"])
    c("cross_entropy_ls_mean", "cross_entropy",
      lambda: {"x": rn(4, 5), "target": ri(0, 5, 4)}, {"reduction": "mean",
                                                       "label_smoothing": 0.1})
    c("cross_entropy_ls_none", "cross_entropy",
      lambda: {"x": rn(4, 5), "target": ri(0, 5, 4)}, {"reduction": "none",
                                                       "label_smoothing": 0.25})
    c("cross_entropy_ls_weight_ignore", "cross_entropy",
      lambda: {"x": rn(6, 4), "target": T([0, 3, -100, 1, 2, 3], dt=I64),
               "weight": uni(0.2, 2.0, 4)},
      {"reduction": "mean", "label_smoothing": 0.2}, nograd=["weight"])
    c("cross_entropy_ls_weight_sum", "cross_entropy",
      lambda: {"x": rn(5, 3), "target": ri(0, 3, 5), "weight": uni(0.2, 2.0, 3)},
      {"reduction": "sum", "label_smoothing": 0.1}, nograd=["weight"])
    c("cross_entropy_spatial", "cross_entropy",
      lambda: {"x": rn(2, 4, 3, 3), "target": ri(0, 4, 2, 3, 3)}, {"reduction": "mean"})
    c("cross_entropy_spatial_ls_none", "cross_entropy",
      lambda: {"x": rn(2, 3, 4), "target": ri(0, 3, 2, 4)},
      {"reduction": "none", "label_smoothing": 0.1})
    c("cross_entropy_f64_nc", "cross_entropy",
      lambda: {"x": rn(5, 4, dt=F64), "target": ri(0, 4, 5)}, {"reduction": "mean"},
      nc={"x": "transpose"})
    c("cross_entropy_large_logits", "cross_entropy",
      lambda: {"x": rn(3, 4) * 30 + 200.0, "target": ri(0, 4, 3)}, {"reduction": "mean"})
    c("cross_entropy_all_ignored", "cross_entropy",
      lambda: {"x": rn(2, 3), "target": T([-100, -100], dt=I64)}, {"reduction": "mean"},
      nograd=["x"])
    for r in R:
        c("nll_loss_" + r, "nll_loss",
          lambda: {"x": F.log_softmax(rn(4, 5), 1), "target": ri(0, 5, 4)}, {"reduction": r})
    c("nll_loss_weight_ignore", "nll_loss",
      lambda: {"x": F.log_softmax(rn(6, 4), 1), "target": T([0, 3, 3, 1, 2, 3], dt=I64),
               "weight": uni(0.2, 2.0, 4)},
      {"reduction": "mean", "ignore_index": 3}, nograd=["weight"])
    c("nll_loss_spatial_f64", "nll_loss",
      lambda: {"x": F.log_softmax(rn(2, 3, 4, dt=F64), 1), "target": ri(0, 3, 2, 4)},
      {"reduction": "sum"})
    c("nll_loss_default_ignore", "nll_loss",
      lambda: {"x": rn(4, 3), "target": T([1, -100, 0, 2], dt=I64)}, {"reduction": "mean"})
    for op in ("mse_loss", "l1_loss"):
        for r in R:
            c("%s_%s" % (op, r), op, lambda: {"x": rn(3, 4), "y": rn(3, 4)}, {"reduction": r})
        c(op + "_f64_nc", op, lambda: {"x": rn(4, 3, dt=F64), "y": rn(4, 3, dt=F64)},
          {"reduction": "mean"}, nc={"x": "transpose", "y": "stride"})
        c(op + "_long", op, lambda: {"x": rn(1000), "y": rn(1000)}, {"reduction": "mean"})
    for r in R:
        c("smooth_l1_loss_" + r, "smooth_l1_loss",
          lambda: {"x": rn(3, 4, scale=2.0), "y": rn(3, 4)}, {"reduction": r, "beta": 1.0})
    c("smooth_l1_loss_beta05_f64", "smooth_l1_loss",
      lambda: {"x": rn(3, 5, dt=F64), "y": rn(3, 5, dt=F64)}, {"reduction": "mean", "beta": 0.5})
    c("smooth_l1_loss_beta2_nc", "smooth_l1_loss",
      lambda: {"x": rn(4, 3, scale=3.0), "y": rn(4, 3)}, {"reduction": "sum", "beta": 2.0},
      nc={"x": "transpose"})
    # beta = 0 is plain L1 in PyTorch (kn_smooth_l1_loss passes beta through)
    c("smooth_l1_loss_beta0_is_l1", "smooth_l1_loss",
      lambda: {"x": rn(6, scale=2.0), "y": rn(6)}, {"reduction": "mean", "beta": 0.0})
    for r in R:
        c("binary_cross_entropy_" + r, "binary_cross_entropy",
          lambda: {"x": uni(0.05, 0.95, 3, 4), "y": ri(0, 2, 3, 4).to(F32)}, {"reduction": r},
          nograd=["y"])
    c("binary_cross_entropy_soft_f64", "binary_cross_entropy",
      lambda: {"x": uni(0.05, 0.95, 5, dt=F64), "y": uni(0, 1, 5, dt=F64)},
      {"reduction": "mean"}, nograd=["y"])
    c("binary_cross_entropy_nc", "binary_cross_entropy",
      lambda: {"x": uni(0.05, 0.95, 4, 3), "y": ri(0, 2, 4, 3).to(F32)},
      {"reduction": "sum"}, nograd=["y"], nc={"x": "transpose"})
    for r in R:
        c("binary_cross_entropy_with_logits_" + r, "binary_cross_entropy_with_logits",
          lambda: {"x": rn(3, 4, scale=3.0), "y": ri(0, 2, 3, 4).to(F32)}, {"reduction": r},
          nograd=["y"])
    c("binary_cross_entropy_with_logits_extreme", "binary_cross_entropy_with_logits",
      lambda: {"x": T([-100.0, -30.0, 0.0, 30.0, 100.0]), "y": T([1.0, 0.0, 1.0, 1.0, 0.0])},
      {"reduction": "none"}, nograd=["y"], gradcheck=False)
    c("binary_cross_entropy_with_logits_soft_f64_nc", "binary_cross_entropy_with_logits",
      lambda: {"x": rn(4, 3, dt=F64), "y": uni(0, 1, 4, 3, dt=F64)}, {"reduction": "mean"},
      nograd=["y"], nc={"x": "transpose"})


def cases_index(fx):
    c = fx.case
    c("embedding_i64", "embedding", lambda: {"weight": rn(10, 4), "indices": T([[1, 3, 1],
                                                                                [9, 0, 3]])})
    c("embedding_i32_f64", "embedding",
      lambda: {"weight": rn(6, 3, dt=F64), "indices": T([5, 5, 2, 0], dt=I32)})
    c("embedding_scalar_idx", "embedding", lambda: {"weight": rn(5, 2), "indices": T(3)})
    c("embedding_nc", "embedding", lambda: {"weight": rn(7, 4), "indices": ri(0, 7, 3, 2)},
      nc={"weight": "transpose"})
    c("embedding_empty", "embedding", lambda: {"weight": rn(5, 3), "indices": ri(0, 5, 0)})
    c("concat_d0", "concat", lambda: {"t0": rn(2, 3), "t1": rn(1, 3), "t2": rn(3, 3)}, {"dim": 0})
    c("concat_d1", "concat", lambda: {"t0": rn(2, 3), "t1": rn(2, 1)}, {"dim": 1})
    c("concat_neg_f64", "concat", lambda: {"t0": rn(2, 2, 3, dt=F64), "t1": rn(2, 2, 2, dt=F64)},
      {"dim": -1})
    c("concat_empty_piece", "concat", lambda: {"t0": rn(2, 3), "t1": rn(0, 3), "t2": rn(1, 3)},
      {"dim": 0})
    c("concat_nc", "concat", lambda: {"t0": rn(3, 2), "t1": rn(3, 4)}, {"dim": 1},
      nc={"t0": "transpose", "t1": "stride"})
    c("concat_i32", "concat", lambda: {"t0": ri(0, 9, 2, 2, dt=I32), "t1": ri(0, 9, 2, 3, dt=I32)},
      {"dim": 1})
    c("concat_one", "concat", lambda: {"t0": rn(2, 3)}, {"dim": 0})
    c("stack_d0", "stack", lambda: {"t0": rn(2, 3), "t1": rn(2, 3), "t2": rn(2, 3)}, {"dim": 0})
    c("stack_last", "stack", lambda: {"t0": rn(2, 3), "t1": rn(2, 3)}, {"dim": -1})
    c("stack_mid_f64_nc", "stack", lambda: {"t0": rn(3, 2, dt=F64), "t1": rn(3, 2, dt=F64)},
      {"dim": 1}, nc={"t1": "transpose"})
    c("stack_i64", "stack", lambda: {"t0": ri(0, 9, 4), "t1": ri(0, 9, 4)}, {"dim": 1})
    c("stack_scalars", "stack", lambda: {"t0": rn(), "t1": rn(), "t2": rn()}, {"dim": 0})
    c("split_d1", "split", lambda: {"x": rn(3, 5)}, {"size": 2, "dim": 1})
    c("split_d0_exact", "split", lambda: {"x": rn(4, 2, dt=F64)}, {"size": 2, "dim": 0})
    c("split_big", "split", lambda: {"x": rn(3, 2)}, {"size": 5, "dim": 0})
    c("split_nc", "split", lambda: {"x": rn(4, 5)}, {"size": 3, "dim": -1}, nc={"x": "transpose"})
    c("split_i32", "split", lambda: {"x": ri(0, 9, 7, dt=I32)}, {"size": 3, "dim": 0})
    c("chunk_3of5", "chunk", lambda: {"x": rn(5, 2)}, {"chunks": 3, "dim": 0})
    c("chunk_4of6_gives3", "chunk", lambda: {"x": rn(2, 6)}, {"chunks": 4, "dim": 1})
    c("chunk_3of7_f64", "chunk", lambda: {"x": rn(7, dt=F64)}, {"chunks": 3, "dim": 0})
    c("chunk_more_than_size", "chunk", lambda: {"x": rn(2, 3)}, {"chunks": 5, "dim": 0})
    c("gather_d1", "gather", lambda: {"x": rn(3, 4), "index": T([[0, 3], [1, 1], [2, 0]])},
      {"dim": 1})
    c("gather_d0", "gather", lambda: {"x": rn(3, 4), "index": ri(0, 3, 2, 4)}, {"dim": 0})
    c("gather_smaller_idx", "gather", lambda: {"x": rn(4, 5, dt=F64), "index": ri(0, 5, 2, 3)},
      {"dim": 1})
    c("gather_nc", "gather", lambda: {"x": rn(4, 3), "index": ri(0, 3, 4, 2)}, {"dim": -1},
      nc={"x": "transpose"})
    c("gather_i32_values", "gather", lambda: {"x": ri(0, 99, 3, 3, dt=I32),
                                              "index": ri(0, 3, 3, 3)}, {"dim": 0})
    c("gather_3d", "gather", lambda: {"x": rn(2, 3, 4), "index": ri(0, 3, 2, 2, 4)}, {"dim": 1})
    c("scatter_add_d1_dupes", "scatter_add",
      lambda: {"x": rn(3, 5), "index": T([[0, 0], [4, 1], [2, 2]]), "src": rn(3, 2)}, {"dim": 1})
    c("scatter_add_d0", "scatter_add",
      lambda: {"x": rn(3, 4, dt=F64), "index": ri(0, 3, 4, 4), "src": rn(4, 4, dt=F64)},
      {"dim": 0})
    c("scatter_add_small_idx", "scatter_add",
      lambda: {"x": rn(4, 4), "index": ri(0, 4, 2, 2), "src": rn(2, 2)}, {"dim": 1})
    c("scatter_add_nc", "scatter_add",
      lambda: {"x": rn(4, 3), "index": ri(0, 4, 2, 3), "src": rn(2, 3)}, {"dim": 0},
      nc={"x": "transpose", "src": "stride"})
    c("scatter_add_i64", "scatter_add",
      lambda: {"x": ri(0, 9, 5), "index": T([0, 0, 4]), "src": ri(0, 9, 3)}, {"dim": 0})
    c("index_select_d0_i64", "index_select",
      lambda: {"x": rn(5, 3), "index": T([4, 0, 4, 2])}, {"dim": 0})
    c("index_select_d1_i32", "index_select",
      lambda: {"x": rn(3, 5, dt=F64), "index": T([1, 3], dt=I32)}, {"dim": 1})
    c("index_select_nc", "index_select",
      lambda: {"x": rn(4, 6), "index": T([5, 0, 1])}, {"dim": -1}, nc={"x": "transpose"})
    c("index_select_empty", "index_select",
      lambda: {"x": rn(4, 3), "index": ri(0, 4, 0)}, {"dim": 0})
    c("index_select_i32_values", "index_select",
      lambda: {"x": ri(0, 99, 4, 2, dt=I32), "index": T([3, 3, 1])}, {"dim": 0})
    c("pad_const_last", "pad", lambda: {"x": rn(2, 3)}, {"pads": [1, 2], "mode": "constant",
                                                         "value": 0.0})
    c("pad_const_2d_value", "pad", lambda: {"x": rn(2, 3, 4)},
      {"pads": [1, 1, 2, 0], "mode": "constant", "value": 0.5})
    c("pad_const_3dims_f64", "pad", lambda: {"x": rn(2, 2, 3, dt=F64)},
      {"pads": [0, 1, 1, 0, 1, 1], "mode": "constant", "value": -1.0})
    c("pad_const_negative", "pad", lambda: {"x": rn(3, 5)},
      {"pads": [-1, 2, 0, -1], "mode": "constant", "value": 0.0})
    c("pad_const_nc", "pad", lambda: {"x": rn(3, 4)}, {"pads": [2, 1, 1, 1], "mode": "constant",
                                                       "value": 0.0}, nc={"x": "transpose"})
    c("pad_const_i32", "pad", lambda: {"x": ri(0, 9, 2, 2, dt=I32)},
      {"pads": [1, 1], "mode": "constant", "value": 7.0})
    c("pad_reflect_1d", "pad", lambda: {"x": rn(1, 2, 5)}, {"pads": [2, 3], "mode": "reflect"})
    c("pad_reflect_2d", "pad", lambda: {"x": rn(1, 2, 4, 5)},
      {"pads": [1, 2, 3, 1], "mode": "reflect"})
    c("pad_reflect_2d_f64_nc", "pad", lambda: {"x": rn(2, 1, 4, 4, dt=F64)},
      {"pads": [3, 0, 2, 2], "mode": "reflect"}, nc={"x": "transpose"})
    c("repeat_2d", "repeat", lambda: {"x": rn(2, 3)}, {"repeats": [2, 1]})
    c("repeat_more_dims", "repeat", lambda: {"x": rn(2, 3)}, {"repeats": [2, 2, 3]})
    c("repeat_1d_f64", "repeat", lambda: {"x": rn(3, dt=F64)}, {"repeats": [3]})
    c("repeat_nc", "repeat", lambda: {"x": rn(3, 2)}, {"repeats": [1, 2]}, nc={"x": "transpose"})
    c("repeat_i64", "repeat", lambda: {"x": ri(0, 9, 2, 2)}, {"repeats": [2, 1, 1]})
    c("repeat_zero", "repeat", lambda: {"x": rn(2, 3)}, {"repeats": [0, 2]})
    for op in ("tril", "triu"):
        c(op + "_k0", op, lambda: {"x": rn(4, 5)}, {"k": 0})
        c(op + "_k1", op, lambda: {"x": rn(4, 5)}, {"k": 1})
        c(op + "_km1_f64", op, lambda: {"x": rn(5, 4, dt=F64)}, {"k": -1})
        c(op + "_batched", op, lambda: {"x": rn(2, 3, 3)}, {"k": 0})
        c(op + "_big_k", op, lambda: {"x": rn(3, 4)}, {"k": 10})
        c(op + "_nc", op, lambda: {"x": rn(4, 4)}, {"k": 0}, nc={"x": "transpose"})
        c(op + "_i32", op, lambda: {"x": ri(1, 9, 3, 4, dt=I32)}, {"k": -2})
    c("one_hot_basic", "one_hot", lambda: {"x": T([0, 3, 1, 3, 2])}, {"num_classes": 4})
    c("one_hot_infer", "one_hot", lambda: {"x": T([[1, 4], [0, 2]])}, {"num_classes": -1})
    c("one_hot_extra_classes", "one_hot", lambda: {"x": T([1, 0])}, {"num_classes": 5})
    c("one_hot_empty", "one_hot", lambda: {"x": ri(0, 3, 0)}, {"num_classes": 3})
    # in place (on a fresh input; the C test checks the mutated tensor)
    c("copy__bcast_cast", "copy_", lambda: {"dst": rn(2, 3), "src": rn(3, dt=F64)})
    c("copy__into_nc", "copy_", lambda: {"dst": rn(3, 4), "src": rn(3, 4)},
      nc={"dst": "transpose"})
    c("copy__i32_from_f32", "copy_", lambda: {"dst": ri(0, 5, 4, dt=I32),
                                              "src": T([1.7, -2.7, 0.2, 5.0])})
    c("fill__f32", "fill_", lambda: {"dst": rn(2, 3)}, {"v": 1.25})
    c("fill__i64_nc", "fill_", lambda: {"dst": ri(0, 9, 3, 2)}, {"v": -4.0},
      nc={"dst": "transpose"})
    c("zero__f64", "zero_", lambda: {"dst": rn(4, dt=F64)})
    c("zero__stride", "zero_", lambda: {"dst": rn(2, 3)}, nc={"dst": "stride"})
    c("add__alpha", "add_", lambda: {"dst": rn(3, 4), "src": rn(4)}, {"alpha": 0.5})
    c("add__f64_nc", "add_", lambda: {"dst": rn(3, 4, dt=F64), "src": rn(3, 4, dt=F64)},
      {"alpha": -2.0}, nc={"dst": "transpose"})
    c("add__i32", "add_", lambda: {"dst": ri(0, 9, 5, dt=I32), "src": ri(0, 9, 5, dt=I32)},
      {"alpha": 3.0})
    c("mul_scalar__f32", "mul_scalar_", lambda: {"dst": rn(3, 3)}, {"s": -0.5})
    c("mul_scalar__i64_nc", "mul_scalar_", lambda: {"dst": ri(-9, 9, 2, 3)}, {"s": 3.0},
      nc={"dst": "transpose"})
    # creation (core.h)
    c("arange_f32", "arange", None, {"start": 0.0, "end": 5.0, "step": 0.5, "dtype": "float32"})
    c("arange_i64", "arange", None, {"start": 1.0, "end": 10.0, "step": 3.0, "dtype": "int64"})
    c("arange_neg_step_f64", "arange", None, {"start": 5.0, "end": -1.0, "step": -1.5,
                                              "dtype": "float64"})
    c("arange_empty", "arange", None, {"start": 2.0, "end": 2.0, "step": 1.0,
                                       "dtype": "float32"})
    c("linspace_f32", "linspace", None, {"start": 0.0, "end": 1.0, "steps": 7,
                                         "dtype": "float32"})
    c("linspace_one_f64", "linspace", None, {"start": -1.0, "end": 1.0, "steps": 1,
                                             "dtype": "float64"})
    c("linspace_zero", "linspace", None, {"start": 0.0, "end": 1.0, "steps": 0,
                                          "dtype": "float32"})
    c("linspace_desc", "linspace", None, {"start": 3.0, "end": -2.0, "steps": 11,
                                          "dtype": "float32"})
    c("eye_rect_f32", "eye", None, {"n": 3, "m": 4, "dtype": "float32"})
    c("eye_sq_i64", "eye", None, {"n": 3, "m": 3, "dtype": "int64"})


def autograd_basics(fx, outdir):
    """examples/autograd_basics.c: Linear(10, 2) on a (1, 10) input, out.sum().backward()."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 2)
    x = torch.randn(1, 10)
    w = lin.weight.detach().clone()
    b = lin.bias.detach().clone()
    case = fx.case("autograd_basics", "autograd_basics",
                   lambda: {"x": x, "weight": w, "bias": b})
    out = lin(x)
    out.sum().backward()
    assert torch.equal(lin.weight.grad, F.linear(x, w, b).new_ones(2, 1) @ x)

    def lit(v):
        s = "%.9g" % v
        return s + ("f" if any(ch in s for ch in ".e") else ".0f")

    def arr(name, t):
        vals = [lit(v) for v in t.detach().reshape(-1).tolist()]
        rows = ["    " + ", ".join(vals[j:j + 5]) + "," for j in range(0, len(vals), 5)]
        return "static const float %s[%d] = {\n%s\n};\n" % (name, t.numel(), "\n".join(rows))
    hdr = [
        "/*\n",
        " * autograd_basics.h - golden numbers for examples/autograd_basics.c. Generated by\n",
        " * tools/gen_ref.py with torch %s; do not edit.\n" % torch.__version__,
        " *   torch.manual_seed(0); lin = torch.nn.Linear(10, 2); x = torch.randn(1, 10)\n",
        " *   out = lin(x); out.sum().backward()\n",
        " * weight (2,10) and bias (2) are lin's initial parameters; x is (1,10); out is (1,2);\n",
        " * weight_grad = lin.weight.grad (2,10) and bias_grad = lin.bias.grad (2).\n",
        " */\n",
        "#ifndef KILN_GOLDEN_AUTOGRAD_BASICS_H\n",
        "#define KILN_GOLDEN_AUTOGRAD_BASICS_H\n\n",
        "#define AUTOGRAD_BASICS_IN 10\n",
        "#define AUTOGRAD_BASICS_OUT 2\n\n",
        arr("autograd_basics_x", x),
        arr("autograd_basics_weight", w),
        arr("autograd_basics_bias", b),
        arr("autograd_basics_out", out),
        arr("autograd_basics_weight_grad", lin.weight.grad),
        arr("autograd_basics_bias_grad", lin.bias.grad),
        "\n#endif\n",
    ]
    with open(os.path.join(outdir, "autograd_basics.h"), "w") as f:
        f.write("".join(hdr))
    return case


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = os.path.join(os.path.dirname(here), "tests", "golden")
    if len(sys.argv) > 1:
        outdir = sys.argv[1]
    warnings.filterwarnings("ignore", message=".*padding='same'.*")
    torch.set_num_threads(1)  # bit-stable across machines as far as torch allows
    fx = Fixture()
    for part in (cases_views, cases_unary, cases_binary, cases_reduce, cases_linalg, cases_conv,
                 cases_pool, cases_norm, cases_loss, cases_index):
        part(fx)
    os.makedirs(outdir, exist_ok=True)
    autograd_basics(fx, outdir)
    fx.write(outdir)
    ops = sorted({c["op"] for c in fx.cases})
    print("gen_ref: %d cases, %d ops, %d bytes of data -> %s" %
          (len(fx.cases), len(ops), len(fx.bin), outdir))


if __name__ == "__main__":
    main()
