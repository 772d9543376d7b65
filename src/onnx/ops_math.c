/*
 * ops_math.c - ONNX elementwise ops onto kiln's: unary math (trigonometric and hyperbolic
 * included) and activations, binary arithmetic and comparisons (NumPy broadcasting, and the
 * opset < 7 `broadcast`/`axis` form), variadic Sum/Mean/Max/Min, Clip (attributes before opset
 * 11, inputs after), Where, Cast, CastLike. float16 / bfloat16 inputs of the unary, binary,
 * Mod and variadic ops are computed in f32 and rounded back.
 */
#include <math.h>
#include <string.h>

#include "onnx/onnx_impl.h"

/* ---- float16 / bfloat16: kiln stores them; the math runs in f32 and rounds back ---- */
static int widen_half(kn_ox *x) {
    int hd = -1;
    for (int i = 0; i < x->nin; i++) {
        kn_dtype dt = x->in[i] ? kn_tensor_dtype(x->in[i]) : KN_F32;
        if (dt != KN_F16 && dt != KN_BF16) continue;
        hd = (int)dt;
        x->in[i] = kn_cast(x->in[i], KN_F32);
    }
    return hd;
}

static kn_tensor *narrow(kn_tensor *r, int hd) {
    return r && hd >= 0 && kn_tensor_dtype(r) == KN_F32 ? kn_cast(r, (kn_dtype)hd) : r;
}

/* ---- unary ---- */

typedef kn_tensor *(*unary_fn)(kn_tensor *);

static kn_tensor *softsign(kn_tensor *x) {
    return kn_div(x, kn_add(kn__ox_scalar_like(x, 1), kn_abs(x)));
}

static kn_tensor *isnan_(kn_tensor *x) {
    return kn_ne(x, x);
}

static kn_tensor *softplus(kn_tensor *x) {
    /* log(1 + e^x), without kiln's PyTorch-style linear threshold */
    return kn_add(kn_relu(x), kn_log1p(kn_exp(kn_neg(kn_abs(x)))));
}

static const struct {
    const char *name;
    unary_fn fn;
} unary_ops[] = {
    {"Relu", kn_relu},   {"Sigmoid", kn_sigmoid}, {"Tanh", kn_tanh},
    {"Exp", kn_exp},     {"Log", kn_log},         {"Neg", kn_neg},
    {"Abs", kn_abs},     {"Sqrt", kn_sqrt},       {"Reciprocal", kn_reciprocal},
    {"Erf", kn_erf},     {"Floor", kn_floor},     {"Ceil", kn_ceil},
    {"Round", kn_round}, {"Sin", kn_sin},         {"Cos", kn_cos},
    {"Sign", kn_sign},   {"Not", kn_logical_not}, {"Softsign", softsign},
    {"IsNaN", isnan_},   {"Softplus", softplus},  {"Tan", kn_tan},
    {"Asin", kn_asin},   {"Acos", kn_acos},       {"Atan", kn_atan},
    {"Sinh", kn_sinh},   {"Cosh", kn_cosh},       {"Asinh", kn_asinh},
    {"Acosh", kn_acosh}, {"Atanh", kn_atanh},
};

static kn_status unary(kn_ox *x) {
    int hd = widen_half(x);
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    for (size_t i = 0; i < sizeof unary_ops / sizeof *unary_ops; i++)
        if (kn__ox_is(x, unary_ops[i].name))
            return kn__ox_set(x, 0, narrow(unary_ops[i].fn(a), hd));
    return kn__err(KN_EINTERNAL, "no unary kernel");
}

static kn_status leaky_relu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    return a ? kn__ox_set(x, 0, kn_leaky_relu(a, kn__ox_float(x, "alpha", 0.01)))
             : kn_last_status();
}

static kn_status elu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    return a ? kn__ox_set(x, 0, kn_elu(a, kn__ox_float(x, "alpha", 1.0))) : kn_last_status();
}

static kn_status selu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    double alpha = kn__ox_float(x, "alpha", 1.67326319217681884765625);
    double gamma = kn__ox_float(x, "gamma", 1.05070102214813232421875);
    return kn__ox_set(x, 0, kn_mul_scalar(kn_elu(a, alpha), gamma));
}

static kn_status celu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    double alpha = kn__ox_float(x, "alpha", 1.0);
    /* max(0, x) + min(0, alpha * (exp(x / alpha) - 1)) = alpha * elu(x / alpha, 1) */
    return kn__ox_set(x, 0, kn_mul_scalar(kn_elu(kn_mul_scalar(a, 1.0 / alpha), 1.0), alpha));
}

static kn_tensor *hard_sigmoid(kn_tensor *a, double alpha, double beta) {
    return kn_clamp(kn_add_scalar(kn_mul_scalar(a, alpha), beta), 0.0, 1.0);
}

static kn_status hardsigmoid(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    return kn__ox_set(x, 0,
                      hard_sigmoid(a, kn__ox_float(x, "alpha", 0.2), kn__ox_float(x, "beta", 0.5)));
}

static kn_status hardswish(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    return a ? kn__ox_set(x, 0, kn_mul(a, hard_sigmoid(a, 1.0 / 6, 0.5))) : kn_last_status();
}

static kn_status thresholded_relu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    kn_tensor *th = kn__ox_scalar_like(a, kn__ox_float(x, "alpha", 1.0));
    return kn__ox_set(x, 0, kn_where(kn_gt(a, th), a, kn__ox_scalar_like(a, 0)));
}

static kn_status prelu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0), *s = kn__ox_need(x, 1);
    if (!a || !s) return kn_last_status();
    int r = kn_tensor_ndim(a);
    if (x->opset < 7 && kn_tensor_ndim(s) == 1 && r >= 3 &&
        kn_tensor_numel(s) == kn_tensor_shape(a)[1]) {
        /* before opset 7 a 1-D slope is per channel (dim 1) */
        int64_t cs[KN_MAX_DIMS];
        for (int i = 0; i < r - 1; i++)
            cs[i] = i == 0 ? kn_tensor_numel(s) : 1;
        s = kn_reshape(s, r - 1, cs);
    }
    kn_tensor *zero = kn__ox_scalar_like(a, 0);
    return kn__ox_set(x, 0, kn_where(kn_lt(a, zero), kn_mul(a, s), a));
}

static kn_status is_inf(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    bool pos = kn__ox_int(x, "detect_positive", 1), neg = kn__ox_int(x, "detect_negative", 1);
    kn_tensor *p = kn_eq(a, kn__ox_scalar_like(a, INFINITY));
    kn_tensor *n = kn_eq(a, kn__ox_scalar_like(a, -INFINITY));
    kn_tensor *r = pos && neg ? kn_logical_or(p, n) : pos ? p : neg ? n : kn_logical_and(p, n);
    return kn__ox_set(x, 0, r);
}

/* ---- binary ---- */

/* opset < 7: B broadcasts only with broadcast=1, aligned at `axis` (default: trailing). */
static kn_tensor *legacy_align(const kn_ox *x, kn_tensor *a, kn_tensor *b) {
    if (x->opset >= 7 || !kn__ox_attr(x, "axis") || !kn__ox_int(x, "broadcast", 0)) return b;
    int ra = kn_tensor_ndim(a), rb = kn_tensor_ndim(b), axis;
    if (kn__ox_axis(kn__ox_int(x, "axis", 0), ra, "axis", &axis)) return NULL;
    if (axis + rb > ra) return kn__errp(KN_ESHAPE, "broadcast axis %d does not fit", axis);
    int64_t shape[KN_MAX_DIMS];
    for (int d = 0; d < ra - axis; d++)
        shape[d] = d < rb ? kn_tensor_shape(b)[d] : 1;
    return kn_reshape(b, ra - axis, shape);
}

typedef kn_tensor *(*binary_fn)(kn_tensor *, kn_tensor *);

static kn_tensor *ge_(kn_tensor *a, kn_tensor *b) {
    return kn_ge(a, b);
}

static kn_tensor *xor_(kn_tensor *a, kn_tensor *b) {
    return kn_ne(a, b);
}

static const struct {
    const char *name;
    binary_fn fn;
} binary_ops[] = {
    {"Add", kn_add},         {"Sub", kn_sub},         {"Mul", kn_mul},       {"Div", kn_div},
    {"Equal", kn_eq},        {"Less", kn_lt},         {"Greater", kn_gt},    {"LessOrEqual", kn_le},
    {"GreaterOrEqual", ge_}, {"And", kn_logical_and}, {"Or", kn_logical_or}, {"Xor", xor_},
};

static kn_status binary(kn_ox *x) {
    int hd = widen_half(x);
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1);
    if (!a || !b || !(b = legacy_align(x, a, b))) return kn_last_status();
    for (size_t i = 0; i < sizeof binary_ops / sizeof *binary_ops; i++)
        if (kn__ox_is(x, binary_ops[i].name))
            return kn__ox_set(x, 0, narrow(binary_ops[i].fn(a, b), hd));
    return kn__err(KN_EINTERNAL, "no binary kernel");
}

static kn_status pow_(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1);
    if (!a || !b || !(b = legacy_align(x, a, b))) return kn_last_status();
    /* the exponent may have another dtype (Pow-12+): compute in the base's */
    if (kn_tensor_dtype(b) != kn_tensor_dtype(a)) b = kn_cast(b, kn_tensor_dtype(a));
    return kn__ox_set(x, 0, kn_pow(a, b));
}

static kn_status mod_(kn_ox *x) {
    int hd = widen_half(x);
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1);
    if (!a || !b) return kn_last_status();
    kn_tensor *q = kn_div(a, b);
    bool fl = kn_dtype_is_float(kn_tensor_dtype(a));
    if (fl)
        q = kn__ox_int(x, "fmod", 0) ? kn_cast(kn_cast(q, KN_I64), kn_tensor_dtype(a))
                                     : kn_floor(q);
    kn_tensor *r = kn_sub(a, kn_mul(q, b));
    if (!fl && !kn__ox_int(x, "fmod", 0)) {
        /* integer mod takes the divisor's sign: fix truncated remainders of the other sign */
        kn_tensor *zero = kn__ox_scalar_like(a, 0);
        kn_tensor *fix = kn_logical_and(kn_ne(r, zero), kn_ne(kn_lt(r, zero), kn_lt(b, zero)));
        r = kn_where(fix, kn_add(r, b), r);
    }
    return kn__ox_set(x, 0, narrow(r, hd));
}

/* Sum / Mean / Max / Min of any number of inputs, broadcasting */
static kn_status variadic(kn_ox *x) {
    int hd = widen_half(x);
    kn_tensor *acc = kn__ox_need(x, 0);
    if (!acc) return kn_last_status();
    binary_fn fn = kn__ox_is(x, "Max") ? kn_maximum : kn__ox_is(x, "Min") ? kn_minimum : kn_add;
    for (int i = 1; i < x->nin; i++) {
        kn_tensor *b = kn__ox_need(x, i);
        if (!b || !(acc = fn(acc, b))) return kn_last_status();
    }
    if (x->nin == 1) acc = kn_clone(acc);
    if (kn__ox_is(x, "Mean")) acc = kn_div(acc, kn__ox_scalar_like(acc, x->nin));
    return kn__ox_set(x, 0, narrow(acc, hd));
}

static kn_status clip(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    if (x->opset < 11) {
        double lo = kn__ox_float(x, "min", -INFINITY), hi = kn__ox_float(x, "max", INFINITY);
        return kn__ox_set(x, 0, kn_clamp(a, lo, hi));
    }
    kn_tensor *lo = kn__ox_in(x, 1), *hi = kn__ox_in(x, 2), *r = a;
    if (lo) r = kn_maximum(r, lo);
    if (hi && r) r = kn_minimum(r, hi);
    if (r == a) r = kn_clone(a);
    return kn__ox_set(x, 0, r);
}

static kn_status where(kn_ox *x) {
    kn_tensor *c = kn__ox_need(x, 0), *a = kn__ox_need(x, 1), *b = kn__ox_need(x, 2);
    return c && a && b ? kn__ox_set(x, 0, kn_where(c, a, b)) : kn_last_status();
}

static kn_status cast(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int32_t to = (int32_t)kn__ox_int(x, "to", 0);
    int dt = kn__ox_dtype(to);
    if (dt < 0) return kn__err(KN_EUNSUPPORTED, "cast to %s", kn__ox_dtype_name(to));
    return kn__ox_set(x, 0, kn_cast(a, (kn_dtype)dt));
}

static kn_status cast_like(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1);
    return a && b ? kn__ox_set(x, 0, kn_cast(a, kn_tensor_dtype(b))) : kn_last_status();
}

const kn_ox_op kn__ox_ops_math[] = {
    {"Relu", unary, 1, 0, false},
    {"Sigmoid", unary, 1, 0, false},
    {"Tanh", unary, 1, 0, false},
    {"Exp", unary, 1, 0, false},
    {"Log", unary, 1, 0, false},
    {"Neg", unary, 1, 0, false},
    {"Abs", unary, 1, 0, false},
    {"Sqrt", unary, 1, 0, false},
    {"Reciprocal", unary, 1, 0, false},
    {"Erf", unary, 1, 0, false},
    {"Floor", unary, 1, 0, false},
    {"Ceil", unary, 1, 0, false},
    {"Round", unary, 1, 0, false},
    {"Sin", unary, 1, 0, false},
    {"Cos", unary, 1, 0, false},
    {"Sign", unary, 1, 0, false},
    {"Not", unary, 1, 0, false},
    {"Softsign", unary, 1, 0, false},
    {"Softplus", unary, 1, 0, false},
    {"IsNaN", unary, 1, 0, false},
    {"Tan", unary, 7, 0, false},
    {"Asin", unary, 7, 0, false},
    {"Acos", unary, 7, 0, false},
    {"Atan", unary, 7, 0, false},
    {"Sinh", unary, 9, 0, false},
    {"Cosh", unary, 9, 0, false},
    {"Asinh", unary, 9, 0, false},
    {"Acosh", unary, 9, 0, false},
    {"Atanh", unary, 9, 0, false},
    {"IsInf", is_inf, 1, 0, false},
    {"LeakyRelu", leaky_relu, 1, 0, false},
    {"Elu", elu, 1, 0, false},
    {"Selu", selu, 1, 0, false},
    {"Celu", celu, 1, 0, false},
    {"HardSigmoid", hardsigmoid, 1, 0, false},
    {"HardSwish", hardswish, 1, 0, false},
    {"ThresholdedRelu", thresholded_relu, 1, 0, false},
    {"PRelu", prelu, 1, 0, false},
    {"Add", binary, 1, 0, false},
    {"Sub", binary, 1, 0, false},
    {"Mul", binary, 1, 0, false},
    {"Div", binary, 1, 0, false},
    {"Equal", binary, 1, 0, false},
    {"Less", binary, 1, 0, false},
    {"Greater", binary, 1, 0, false},
    {"LessOrEqual", binary, 1, 0, false},
    {"GreaterOrEqual", binary, 1, 0, false},
    {"And", binary, 1, 0, false},
    {"Or", binary, 1, 0, false},
    {"Xor", binary, 1, 0, false},
    {"Pow", pow_, 1, 0, false},
    {"Mod", mod_, 1, 0, false},
    {"Sum", variadic, 1, 0, false},
    {"Mean", variadic, 1, 0, false},
    {"Max", variadic, 1, 0, false},
    {"Min", variadic, 1, 0, false},
    {"Clip", clip, 1, 0, false},
    {"Where", where, 1, 0, false},
    {"Cast", cast, 1, 0, false},
    {"CastLike", cast_like, 15, 0, false},
    {NULL, NULL, 0, 0, false},
};
