#!/usr/bin/python3
"""gen_optim_ref.py - writes tests/golden/optim_ref.h, the PyTorch numbers tests/test_optim.c
checks kiln's optimizers, LR schedulers and gradient clipping against.

Run with Debian's python3-torch (1.13):  /usr/bin/python3 tools/gen_optim_ref.py   (from anywhere)

What it records (all deterministic, no RNG):
  - two parameters p0 (2, 3) and p1 (4,) with fixed initial values and 5 steps of fixed gradients
    (p1 has no gradient at step 2, so per-parameter step counters differ);
  - for each optimizer case, the parameters after every step, in float64 and in float32, with the
    single-tensor ("for-loop", foreach=False) implementation;
  - each scheduler's lr after construction and after each of 20 steps (SGD with lr 0.1; OneCycleLR
    also records the momentum it cycles);
  - clip_grad_norm_ (total norm + clipped grads) for several norms and clip_grad_value_.
The optimizer options in each case are kiln's option structs as written in C (0 means "default"
where optim.h says so); resolve() maps them to PyTorch's arguments the way optim.h documents.
"""

import math
import os
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                   "optim_ref.h")
NSTEPS = 5
NSCHED = 20

P0_INIT = [0.5, -1.2, 0.3, 2.0, -0.7, 0.05]
P1_INIT = [1.5, -0.25, 0.8, -2.2]


def grads_at(k):
    """Gradients of step k: 10 values (p0 then p1); p1 is None at step 2."""
    g = [math.sin(1.3 * j + 0.7 * k + 0.1) * (1.0 + 0.5 * math.cos(2.0 * k)) + 0.05 * (j % 3)
         for j in range(10)]
    return g[:6], (None if k == 2 else g[6:])


# kind, name, kiln options (C field names; 0 means default where optim.h says so)
CASES = [
    ("sgd", "sgd_plain", dict(lr=0.1)),
    ("sgd", "sgd_momentum_damp_wd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd", "sgd_nesterov", dict(lr=0.05, momentum=0.9, weight_decay=0.001, nesterov=1)),
    ("sgd", "sgd_maximize", dict(lr=0.1, momentum=0.5, maximize=1)),
    ("adam", "adam_default", dict(lr=0.01)),
    ("adam", "adam_amsgrad_wd", dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05,
                                     amsgrad=1)),
    ("adam", "adam_maximize", dict(lr=0.0, maximize=1)),
    ("adamw", "adamw_default", dict(lr=0.01)),
    ("adamw", "adamw_amsgrad_max", dict(lr=0.03, weight_decay=0.1, amsgrad=1, maximize=1,
                                        beta2=0.95)),
    ("rmsprop", "rmsprop_default", dict(lr=0.0)),
    ("rmsprop", "rmsprop_centered_momentum", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.01,
                                                 momentum=0.8, centered=1)),
    ("rmsprop", "rmsprop_momentum", dict(lr=0.02, momentum=0.5)),
]
FIELDS = ["lr", "momentum", "dampening", "weight_decay", "beta1", "beta2", "eps", "alpha",
          "nesterov", "maximize", "amsgrad", "centered"]


def make_opt(kind, o, params):
    g = lambda k, d=0.0: o.get(k, 0.0) or d  # noqa: E731  (0 means default)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=o.get("momentum", 0.0),
                               dampening=o.get("dampening", 0.0),
                               weight_decay=o.get("weight_decay", 0.0),
                               nesterov=bool(o.get("nesterov", 0)),
                               maximize=bool(o.get("maximize", 0)), foreach=False)
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        wd = o.get("weight_decay", 0.0) if kind == "adam" else g("weight_decay", 1e-2)
        return cls(params, lr=g("lr", 1e-3), betas=(g("beta1", 0.9), g("beta2", 0.999)),
                   eps=g("eps", 1e-8), weight_decay=wd, amsgrad=bool(o.get("amsgrad", 0)),
                   maximize=bool(o.get("maximize", 0)), foreach=False)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=g("lr", 1e-2), alpha=g("alpha", 0.99),
                                   eps=g("eps", 1e-8), weight_decay=o.get("weight_decay", 0.0),
                                   momentum=o.get("momentum", 0.0),
                                   centered=bool(o.get("centered", 0)), foreach=False)
    raise ValueError(kind)


def run_case(kind, o, dtype):
    p0 = torch.tensor(P0_INIT, dtype=dtype).reshape(2, 3).requires_grad_()
    p1 = torch.tensor(P1_INIT, dtype=dtype).requires_grad_()
    opt = make_opt(kind, o, [p0, p1])
    out = []
    for k in range(NSTEPS):
        g0, g1 = grads_at(k)
        p0.grad = torch.tensor(g0, dtype=dtype).reshape(2, 3)
        p1.grad = None if g1 is None else torch.tensor(g1, dtype=dtype)
        opt.step()
        out.append([float(v) for v in p0.detach().reshape(-1)] +
                   [float(v) for v in p1.detach().reshape(-1)])
    return out


# ---- schedulers: SGD(lr=0.1, momentum=0.9) unless stated
S = torch.optim.lr_scheduler
SCHEDS = [
    ("steplr", "StepLR(step_size=3, gamma=0.5)", lambda opt: [S.StepLR(opt, 3, 0.5)]),
    ("multisteplr", "MultiStepLR([2, 5, 5, 9], 0.3)",
     lambda opt: [S.MultiStepLR(opt, [2, 5, 5, 9], 0.3)]),
    ("exponentiallr", "ExponentialLR(0.9)", lambda opt: [S.ExponentialLR(opt, 0.9)]),
    ("cosinelr", "CosineAnnealingLR(T_max=7, eta_min=0.001)",
     lambda opt: [S.CosineAnnealingLR(opt, 7, 0.001)]),
    ("linearlr", "LinearLR(0.25, 1.0, 6)", lambda opt: [S.LinearLR(opt, 0.25, 1.0, 6)]),
    ("linearlr_down", "LinearLR(1.0, 0.1, 8)", lambda opt: [S.LinearLR(opt, 1.0, 0.1, 8)]),
    ("onecyclelr", "OneCycleLR(max_lr=0.5, total_steps=20)",
     lambda opt: [S.OneCycleLR(opt, 0.5, total_steps=20)]),
    ("onecyclelr_custom", "OneCycleLR(0.2, 25, pct_start=0.4, div_factor=10, final_div=100)",
     lambda opt: [S.OneCycleLR(opt, 0.2, total_steps=25, pct_start=0.4, div_factor=10.0,
                               final_div_factor=100.0)]),
    ("chain_exp_step", "ExponentialLR(0.9) then StepLR(3, 0.5), both stepped",
     lambda opt: [S.ExponentialLR(opt, 0.9), S.StepLR(opt, 3, 0.5)]),
]


def run_sched(make):
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    scheds = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    moms = [opt.param_groups[0]["momentum"]]
    for _ in range(NSCHED):
        opt.step()
        for s in scheds:
            s.step()
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
    return lrs, moms


# ---- clipping
G0 = [2.0 * math.sin(0.9 * j + 0.3) + 0.1 * j for j in range(12)]  # (3, 4)
G1 = [1.5 * math.cos(1.7 * j) - 0.2 for j in range(5)]              # (5,)
CLIPS = [(1.0, 2.0), (100.0, 2.0), (0.5, math.inf), (2.0, 1.0), (1.5, 3.0)]
CLIP_VALUE = 0.3


def clip_case(max_norm, norm_type, dtype):
    a = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    b = torch.zeros(5, dtype=dtype, requires_grad=True)
    a.grad = torch.tensor(G0, dtype=dtype).reshape(3, 4)
    b.grad = torch.tensor(G1, dtype=dtype)
    total = torch.nn.utils.clip_grad_norm_([a, b], max_norm, norm_type)
    return float(total), [float(v) for v in a.grad.reshape(-1)] + [float(v) for v in b.grad]


def clip_value_case(dtype):
    a = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    b = torch.zeros(5, dtype=dtype, requires_grad=True)
    a.grad = torch.tensor(G0, dtype=dtype).reshape(3, 4)
    b.grad = torch.tensor(G1, dtype=dtype)
    torch.nn.utils.clip_grad_value_([a, b], CLIP_VALUE)
    return [float(v) for v in a.grad.reshape(-1)] + [float(v) for v in b.grad]


def r(x):
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(float(x))


def arr(vals, per_line=4, indent="    "):
    s = [r(v) for v in vals]
    lines = [indent + ", ".join(s[i:i + per_line]) + "," for i in range(0, len(s), per_line)]
    return "\n".join(lines)


def main():
    torch.set_num_threads(1)
    o = []
    w = o.append
    w("/*")
    w(" * optim_ref.h - PyTorch reference numbers for tests/test_optim.c. Generated by")
    w(" * tools/gen_optim_ref.py with torch %s; do not edit." % torch.__version__)
    w(" * Optimizers: params p0 (2,3) and p1 (4,), 5 steps of fixed grads (p1 has none at step 2);")
    w(" * oref_cases[i].f64/f32[k] = p0 then p1 after step k. Schedulers: lr after construction")
    w(" * and after each of 20 steps (SGD lr 0.1, momentum 0.9). Clipping: grads g0 (3,4), g1 (5).")
    w(" */")
    w("#ifndef KILN_GOLDEN_OPTIM_REF_H")
    w("#define KILN_GOLDEN_OPTIM_REF_H")
    w("")
    w("#include <math.h>")
    w("")
    w("#define OREF_NSTEPS %d" % NSTEPS)
    w("#define OREF_NSCHED %d" % NSCHED)
    w("#define OREF_NCLIP %d" % len(CLIPS))
    w("#define OREF_CLIP_VALUE %s" % r(CLIP_VALUE))
    w("")
    w("static const double oref_p0_init[6] = {\n%s\n};" % arr(P0_INIT))
    w("static const double oref_p1_init[4] = {\n%s\n};" % arr(P1_INIT))
    w("/* grads per step: p0 (6) then p1 (4); oref_p1_has_grad[k] == 0: p1 has no grad */")
    gl, has = [], []
    for k in range(NSTEPS):
        g0, g1 = grads_at(k)
        gl += g0 + (g1 if g1 is not None else [0.0] * 4)
        has.append(0 if g1 is None else 1)
    w("static const double oref_grads[%d][10] = {" % NSTEPS)
    for k in range(NSTEPS):
        w("    {\n%s\n    }," % arr(gl[k * 10:(k + 1) * 10], indent="        "))
    w("};")
    w("static const int oref_p1_has_grad[%d] = {%s};" % (NSTEPS, ", ".join(map(str, has))))
    w("")
    w("typedef struct oref_case {")
    w("    const char *name, *kind; /* kind: sgd adam adamw rmsprop */")
    w("    double " + ", ".join(FIELDS[:8]) + ";")
    w("    int " + ", ".join(FIELDS[8:]) + ";")
    w("    double f64[%d][10], f32[%d][10];" % (NSTEPS, NSTEPS))
    w("} oref_case;")
    w("static const oref_case oref_cases[] = {")
    for kind, name, opts in CASES:
        r64 = run_case(kind, opts, torch.float64)
        r32 = run_case(kind, opts, torch.float32)
        vals = ", ".join(r(opts.get(f, 0.0)) if i < 8 else str(int(opts.get(f, 0)))
                         for i, f in enumerate(FIELDS))
        w("    {\"%s\", \"%s\", %s," % (name, kind, vals))
        for res in (r64, r32):
            w("     {")
            for k in range(NSTEPS):
                w("         {\n%s\n         }," % arr(res[k], indent="             "))
            w("     },")
        w("    },")
    w("};")
    w("#define OREF_NCASES %d" % len(CASES))
    w("")
    w("typedef struct oref_sched {")
    w("    const char *name, *what;")
    w("    double lr[%d], momentum[%d];" % (NSCHED + 1, NSCHED + 1))
    w("} oref_sched;")
    w("static const oref_sched oref_scheds[] = {")
    for name, what, make in SCHEDS:
        lrs, moms = run_sched(make)
        w("    {\"%s\", \"%s\",\n     {\n%s\n     },\n     {\n%s\n     }}," %
          (name, what, arr(lrs, 3, "         "), arr(moms, 3, "         ")))
    w("};")
    w("#define OREF_NSCHEDS %d" % len(SCHEDS))
    w("")
    w("static const double oref_clip_g0[12] = {\n%s\n};" % arr(G0))
    w("static const double oref_clip_g1[5] = {\n%s\n};" % arr(G1))
    w("typedef struct oref_clip {")
    w("    double max_norm, norm_type, total64, total32;")
    w("    double g64[17], g32[17];")
    w("} oref_clip;")
    w("static const oref_clip oref_clips[] = {")
    for mx, nt in CLIPS:
        t64, g64 = clip_case(mx, nt, torch.float64)
        t32, g32 = clip_case(mx, nt, torch.float32)
        w("    {%s, %s, %s, %s,\n     {\n%s\n     },\n     {\n%s\n     }}," %
          (r(mx), r(nt), r(t64), r(t32), arr(g64, 4, "         "), arr(g32, 4, "         ")))
    w("};")
    w("static const double oref_clip_value64[17] = {\n%s\n};" % arr(clip_value_case(torch.float64)))
    w("static const double oref_clip_value32[17] = {\n%s\n};" % arr(clip_value_case(torch.float32)))
    w("")
    w("#endif")
    with open(OUT, "w") as f:
        f.write("\n".join(o) + "\n")
    print("wrote", os.path.normpath(OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
