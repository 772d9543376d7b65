/*
 * elementwise.c - pointwise ops: unary math and activations, broadcasting binary arithmetic,
 * comparisons and logic, where, clamp, cast, clone, scalar forms and the in-place updates.
 *
 * Kernels run through kn__iter (broadcasting, collapsing, OpenMP over flat ranges), so every
 * output element is computed by exactly one thread: results do not depend on the thread count.
 * f32 fast kernels use vmath.h (vectorised exp/tanh/erf) and are cloned for AVX-512 / AVX2 at
 * run time; the f32 reference kernels use libm; f64 kernels use libm (they are the gradcheck
 * path). Integer dtypes go through exact integer loops for arithmetic and comparisons.
 * Backward rules are ops; relu and gelu have fused backward ops (one pass, like PyTorch's
 * threshold_backward/gelu_backward) that are themselves differentiable.
 */
#include <math.h>

#include "kernels/vmath.h"
#include "ops/op_impl.h"

#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

/* ======================= unary ======================= */

typedef enum {
    U_NEG,
    U_ABS,
    U_SIGN,
    U_EXP,
    U_LOG,
    U_LOG1P,
    U_SQRT,
    U_RSQRT,
    U_SQUARE,
    U_SIN,
    U_COS,
    U_TANH,
    U_SIGMOID,
    U_RELU,
    U_RELU6,
    U_LEAKY,
    U_ELU,
    U_GELU,
    U_SILU,
    U_SOFTPLUS,
    U_ERF,
    U_RECIP,
    U_FLOOR,
    U_CEIL,
    U_ROUND,
    U_TAN,
    U_ASIN,
    U_ACOS,
    U_ATAN,
    U_SINH,
    U_COSH,
    U_ASINH,
    U_ACOSH,
    U_ATANH,
    U_COUNT
} ufn;

typedef struct {
    ufn fn;
    double p0, p1; /* slope / alpha / beta / threshold / approximate */
} uargs;

#define SQRT1_2 0.70710678118654752440
#define SQRT2_PI 0.79788456080286535588 /* sqrt(2/pi) */

static inline double u_f64(ufn f, double x, double p0, double p1) {
    switch (f) {
    case U_NEG: return -x;
    case U_ABS: return fabs(x);
    case U_SIGN: return (x > 0) - (x < 0);
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_LOG1P: return log1p(x);
    case U_SQRT: return sqrt(x);
    case U_RSQRT: return 1.0 / sqrt(x);
    case U_SQUARE: return x * x;
    case U_SIN: return sin(x);
    case U_COS: return cos(x);
    case U_TANH: return tanh(x);
    case U_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case U_RELU: return x > 0 ? x : (x != x ? x : 0.0);
    case U_RELU6: return x != x ? x : fmin(fmax(x, 0.0), 6.0);
    case U_LEAKY: return x > 0 ? x : x * p0;
    case U_ELU: return x > 0 ? x : p0 * expm1(x);
    case U_GELU:
        if (p0 != 0) return 0.5 * x * (1.0 + tanh(SQRT2_PI * (x + 0.044715 * x * x * x)));
        return 0.5 * x * (1.0 + erf(x * SQRT1_2));
    case U_SILU: return x / (1.0 + exp(-x));
    case U_SOFTPLUS: return x * p0 > p1 ? x : log1p(exp(x * p0)) / p0;
    case U_ERF: return erf(x);
    case U_RECIP: return 1.0 / x;
    case U_FLOOR: return floor(x);
    case U_CEIL: return ceil(x);
    case U_ROUND: return nearbyint(x);
    case U_TAN: return tan(x);
    case U_ASIN: return asin(x);
    case U_ACOS: return acos(x);
    case U_ATAN: return atan(x);
    case U_SINH: return sinh(x);
    case U_COSH: return cosh(x);
    case U_ASINH: return asinh(x);
    case U_ACOSH: return acosh(x);
    case U_ATANH: return atanh(x);
    default: return NAN;
    }
}

static inline float u_f32_ref(ufn f, float x, float p0, float p1) {
    switch (f) {
    case U_NEG: return -x;
    case U_ABS: return fabsf(x);
    case U_SIGN: return (float)((x > 0) - (x < 0));
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    case U_LOG1P: return log1pf(x);
    case U_SQRT: return sqrtf(x);
    case U_RSQRT: return 1.0f / sqrtf(x);
    case U_SQUARE: return x * x;
    case U_SIN: return sinf(x);
    case U_COS: return cosf(x);
    case U_TANH: return tanhf(x);
    case U_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case U_RELU: return x > 0 ? x : (x != x ? x : 0.0f);
    case U_RELU6: return x != x ? x : fminf(fmaxf(x, 0.0f), 6.0f);
    case U_LEAKY: return x > 0 ? x : x * p0;
    case U_ELU: return x > 0 ? x : p0 * expm1f(x);
    case U_GELU:
        if (p0 != 0)
            return 0.5f * x * (1.0f + tanhf((float)SQRT2_PI * (x + 0.044715f * x * x * x)));
        return 0.5f * x * (1.0f + erff(x * (float)SQRT1_2));
    case U_SILU: return x / (1.0f + expf(-x));
    case U_SOFTPLUS: return x * p0 > p1 ? x : log1pf(expf(x * p0)) / p0;
    case U_ERF: return erff(x);
    case U_RECIP: return 1.0f / x;
    case U_FLOOR: return floorf(x);
    case U_CEIL: return ceilf(x);
    case U_ROUND: return nearbyintf(x);
    case U_TAN: return tanf(x);
    case U_ASIN: return asinf(x);
    case U_ACOS: return acosf(x);
    case U_ATAN: return atanf(x);
    case U_SINH: return sinhf(x);
    case U_COSH: return coshf(x);
    case U_ASINH: return asinhf(x);
    case U_ACOSH: return acoshf(x);
    case U_ATANH: return atanhf(x);
    default: return NAN;
    }
}

/* The fast f32 path: one specialised, vectorisable loop per function (switch hoisted). */
#define FAST_LOOP(EXPR)                                                                            \
    do {                                                                                           \
        if (sx == 4) {                                                                             \
            const float *xs = (const float *)xp;                                                   \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float v = xs[i];                                                                   \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float v = *(const float *)(xp + i * sx);                                           \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        }                                                                                          \
        return;                                                                                    \
    } while (0)

CLONES static void unary_f32_fast(void *args, int64_t n, char **p, const int64_t *s) {
    const uargs *a = args;
    float *o = (float *)p[0];
    const char *xp = p[1];
    int64_t sx = s[1];
    const float p0 = (float)a->p0;
    switch (a->fn) {
    case U_NEG: FAST_LOOP(-v);
    case U_ABS: FAST_LOOP(fabsf(v));
    case U_EXP: FAST_LOOP(kn__expf(v));
    case U_LOG: FAST_LOOP(kn__logf(v));
    case U_SQRT: FAST_LOOP(sqrtf(v));
    case U_RSQRT: FAST_LOOP(1.0f / sqrtf(v));
    case U_SQUARE: FAST_LOOP(v * v);
    case U_TANH: FAST_LOOP(kn__tanhf(v));
    case U_SIGMOID: FAST_LOOP(kn__sigmoidf(v));
    case U_RELU: FAST_LOOP(v > 0.0f ? v : (v != v ? v : 0.0f));
    case U_RELU6: FAST_LOOP(v != v ? v : (v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v)));
    case U_LEAKY: FAST_LOOP(v > 0.0f ? v : v * p0);
    case U_GELU:
        if (a->p0 != 0)
            FAST_LOOP(0.5f * v * (1.0f + kn__tanhf(0.7978845608f * (v + 0.044715f * v * v * v))));
        FAST_LOOP(0.5f * v * (1.0f + kn__erff(v * 0.70710678f)));
    case U_SILU: FAST_LOOP(v * kn__sigmoidf(v));
    case U_RECIP: FAST_LOOP(1.0f / v);
    default: {
        const float p1 = (float)a->p1;
        for (int64_t i = 0; i < n; i++)
            o[i] = u_f32_ref(a->fn, *(const float *)(xp + i * sx), p0, p1);
    }
    }
}

static void unary_f32_ref(void *args, int64_t n, char **p, const int64_t *s) {
    const uargs *a = args;
    float *o = (float *)p[0];
    for (int64_t i = 0; i < n; i++)
        o[i] = u_f32_ref(a->fn, *(const float *)(p[1] + i * s[1]), (float)a->p0, (float)a->p1);
}

static void unary_f64(void *args, int64_t n, char **p, const int64_t *s) {
    const uargs *a = args;
    double *o = (double *)p[0];
    for (int64_t i = 0; i < n; i++)
        o[i] = u_f64(a->fn, *(const double *)(p[1] + i * s[1]), a->p0, a->p1);
}

/* integers (neg, abs, sign, square, relu): exact 64-bit arithmetic, wrapping like C */
#define INT_UNARY(T, NAME)                                                                         \
    static void NAME(void *args, int64_t n, char **p, const int64_t *s) {                          \
        const uargs *a = args;                                                                     \
        T *o = (T *)p[0];                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T v = *(const T *)(p[1] + i * s[1]);                                                   \
            switch (a->fn) {                                                                       \
            case U_NEG: o[i] = (T)(0 - (uint64_t)v); break;                                        \
            case U_ABS: o[i] = v < 0 ? (T)(0 - (uint64_t)v) : v; break;                            \
            case U_SIGN: o[i] = (T)((v > 0) - (v < 0)); break;                                     \
            case U_SQUARE: o[i] = (T)((uint64_t)v * (uint64_t)v); break;                           \
            case U_RELU: o[i] = v > 0 ? v : 0; break;                                              \
            case U_RELU6: o[i] = v < 0 ? 0 : v > 6 ? 6 : v; break;                                 \
            default: o[i] = v;                                                                     \
            }                                                                                      \
        }                                                                                          \
    }
INT_UNARY(int8_t, unary_i8)
INT_UNARY(uint8_t, unary_u8)
INT_UNARY(int32_t, unary_i32)
INT_UNARY(int64_t, unary_i64)

static kn_iter_fn unary_kernel(kn_dtype dt, bool ref) {
    switch (dt) {
    case KN_F32: return ref ? unary_f32_ref : unary_f32_fast;
    case KN_F64: return unary_f64;
    case KN_I8: return unary_i8;
    case KN_U8: return unary_u8;
    case KN_I32: return unary_i32;
    case KN_I64: return unary_i64;
    default: return NULL;
    }
}

static ufn op_ufn(const kn_opdef *op);

static uargs make_uargs(const kn_opdef *op, const kn_attrs *at) {
    uargs a = {.fn = op_ufn(op)};
    switch (a.fn) {
    case U_LEAKY: a.p0 = kn__attr_float(at, "negative_slope", 0.01); break;
    case U_ELU: a.p0 = kn__attr_float(at, "alpha", 1.0); break;
    case U_GELU: a.p0 = (double)kn__attr_int(at, "approximate", 0); break;
    case U_SOFTPLUS:
        a.p0 = kn__attr_float(at, "beta", 1.0);
        a.p1 = kn__attr_float(at, "threshold", 20.0);
        break;
    default: break;
    }
    return a;
}

static kn_status unary_infer(kn_opctx *c) {
    kn_dtype dt = c->in[0]->dtype;
    ufn f = op_ufn(c->op);
    bool int_ok =
        f == U_NEG || f == U_ABS || f == U_SIGN || f == U_SQUARE || f == U_RELU || f == U_RELU6;
    if (!kn_dtype_is_float(dt) && !int_ok)
        return kn__err(KN_EDTYPE, "%s: dtype %s is not supported (needs float32 or float64)",
                       c->op->name, kn_dtype_name(dt));
    kn__out_like(c, 0, c->in[0], dt);
    return KN_OK;
}

static kn_status unary_kernel_for(const kn_opdef *op, const kn_attrs *at, kn_dtype dt, bool ref,
                                  kn_iter_fn *fn, void *args) {
    if (!(*fn = unary_kernel(dt, ref)))
        return kn__err(KN_EDTYPE, "%s: no kernel for %s", op->name, kn_dtype_name(dt));
    uargs a = make_uargs(op, at);
    memcpy(args, &a, sizeof a);
    return KN_OK;
}
static kn_status unary_pointwise(const kn_opdef *op, const kn_attrs *at, const kn_dtype *dt,
                                 kn_iter_fn *fn, void *args) {
    return unary_kernel_for(op, at, dt[0], false, fn, args);
}
static kn_status unary_run(kn_opctx *c, bool ref) {
    kn_iter_fn k;
    _Alignas(16) char a[KN_PW_ARGS];
    kn_status st = unary_kernel_for(c->op, c->attrs, c->in[0]->dtype, ref, &k, a);
    return st ? st : kn__iter(c->out[0], c->in, 1, k, a);
}
static kn_status unary_forward(kn_opctx *c) {
    return unary_run(c, false);
}
static kn_status unary_forward_ref(kn_opctx *c) {
    return unary_run(c, true);
}

/* scalar helpers for backward rules: a 0-d tensor of x's dtype, owned by the current scope */
static kn_tensor *sc(const kn_tensor *like, double v) {
    return kn_scalar(like->dtype, v);
}

static kn_tensor *mask_f(kn_tensor *b, kn_dtype dt) {
    return kn_cast(b, dt);
}

static const kn_opdef op_relu_backward, op_gelu_backward;

static kn_status unary_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0], *y = c->out[0], *g = c->gout[0], *r = NULL;
    uargs a = make_uargs(c->op, c->attrs);
    switch (a.fn) {
    case U_NEG: r = kn_neg(g); break;
    case U_ABS: r = kn_mul(g, kn_sign(x)); break;
    case U_EXP: r = kn_mul(g, y); break;
    case U_LOG: r = kn_div(g, x); break;
    case U_LOG1P: r = kn_div(g, kn_add(x, sc(x, 1.0))); break;
    case U_SQRT: r = kn_div(g, kn_mul(y, sc(y, 2.0))); break;
    case U_RSQRT: r = kn_mul(g, kn_mul(kn_mul(y, kn_square(y)), sc(y, -0.5))); break;
    case U_SQUARE: r = kn_mul(g, kn_mul(x, sc(x, 2.0))); break;
    case U_SIN: r = kn_mul(g, kn_cos(x)); break;
    case U_COS: r = kn_neg(kn_mul(g, kn_sin(x))); break;
    case U_TANH: r = kn_mul(g, kn_sub(sc(y, 1.0), kn_square(y))); break;
    case U_SIGMOID: r = kn_mul(g, kn_mul(y, kn_sub(sc(y, 1.0), y))); break;
    case U_RELU: {
        kn_tensor *in[2] = {g, x};
        r = kn__op1(&op_relu_backward, in, 2, NULL);
        break;
    }
    case U_RELU6:
        r = kn_mul(g, mask_f(kn_logical_and(kn_gt(x, sc(x, 0)), kn_lt(x, sc(x, 6))), x->dtype));
        break;
    case U_LEAKY: r = kn_mul(g, kn_where(kn_gt(x, sc(x, 0)), sc(x, 1.0), sc(x, a.p0))); break;
    case U_ELU:
        r = kn_mul(g, kn_where(kn_gt(x, sc(x, 0)), sc(x, 1.0), kn_add(y, sc(y, a.p0))));
        break;
    case U_GELU: {
        kn_tensor *in[2] = {g, x};
        r = kn__op1(&op_gelu_backward, in, 2, c->attrs);
        break;
    }
    case U_SILU: {
        kn_tensor *s = kn_sigmoid(x); /* silu' = s (1 + x (1 - s)) */
        r = kn_mul(g, kn_mul(s, kn_add(sc(x, 1.0), kn_mul(x, kn_sub(sc(x, 1.0), s)))));
        break;
    }
    case U_SOFTPLUS: {
        /* d/dx = sigmoid(beta x), 1 above the threshold */
        kn_tensor *bx = kn_mul(x, sc(x, a.p0));
        r = kn_mul(g, kn_where(kn_gt(bx, sc(x, a.p1)), sc(x, 1.0), kn_sigmoid(bx)));
        break;
    }
    case U_ERF: /* 2/sqrt(pi) exp(-x^2) */
        r = kn_mul(g, kn_mul(kn_exp(kn_neg(kn_square(x))), sc(x, 1.1283791670955126)));
        break;
    case U_RECIP: r = kn_neg(kn_mul(g, kn_square(y))); break;
    case U_TAN: r = kn_mul(g, kn_add(sc(y, 1.0), kn_square(y))); break; /* 1 + tan^2 */
    case U_ASIN: r = kn_mul(g, kn_rsqrt(kn_sub(sc(x, 1.0), kn_square(x)))); break;
    case U_ACOS: r = kn_neg(kn_mul(g, kn_rsqrt(kn_sub(sc(x, 1.0), kn_square(x))))); break;
    case U_ATAN: r = kn_div(g, kn_add(sc(x, 1.0), kn_square(x))); break;
    case U_SINH: r = kn_mul(g, kn_cosh(x)); break;
    case U_COSH: r = kn_mul(g, kn_sinh(x)); break;
    case U_ASINH: r = kn_mul(g, kn_rsqrt(kn_add(kn_square(x), sc(x, 1.0)))); break;
    case U_ACOSH: r = kn_mul(g, kn_rsqrt(kn_sub(kn_square(x), sc(x, 1.0)))); break;
    case U_ATANH: r = kn_div(g, kn_sub(sc(x, 1.0), kn_square(x))); break;
    default: return kn__err(KN_EINTERNAL, "%s: no backward", c->op->name);
    }
    if (!r) return kn_last_status();
    c->gin[0] = r;
    return KN_OK;
}

#define UNARY_OP(ID, NAME, ONNX, DOC, BW)                                                          \
    static const kn_opdef op_##NAME = {.name = #NAME,                                              \
                                       .min_in = 1,                                                \
                                       .max_in = 1,                                                \
                                       .nout = 1,                                                  \
                                       .dtypes = UNARY_DTYPES(ID),                                 \
                                       .flags = KN_OPF_ELEMENTWISE,                                \
                                       .infer = unary_infer,                                       \
                                       .forward = unary_forward,                                   \
                                       .pointwise = unary_pointwise,                               \
                                       .forward_ref = unary_forward_ref,                           \
                                       .backward = BW,                                             \
                                       .onnx = ONNX,                                               \
                                       .doc = DOC};
/* integers are accepted by the ops whose integer results are exact (unary_infer agrees) */
#define UNARY_DTYPES(ID)                                                                           \
    ((ID) == U_NEG || (ID) == U_ABS || (ID) == U_SIGN || (ID) == U_SQUARE || (ID) == U_RELU ||     \
             (ID) == U_RELU6                                                                       \
         ? KN_DT_NUM                                                                               \
         : KN_DT_FLOAT)
UNARY_OP(U_NEG, neg, "Neg", "-x", unary_backward)
UNARY_OP(U_ABS, abs, "Abs", "|x|", unary_backward)
UNARY_OP(U_SIGN, sign, "Sign", "sign(x), no gradient", NULL)
UNARY_OP(U_EXP, exp, "Exp", "e^x", unary_backward)
UNARY_OP(U_LOG, log, "Log", "natural log", unary_backward)
UNARY_OP(U_LOG1P, log1p, NULL, "log(1 + x)", unary_backward)
UNARY_OP(U_SQRT, sqrt, "Sqrt", "square root", unary_backward)
UNARY_OP(U_RSQRT, rsqrt, NULL, "1 / sqrt(x)", unary_backward)
UNARY_OP(U_SQUARE, square, NULL, "x * x", unary_backward)
UNARY_OP(U_SIN, sin, "Sin", "sine", unary_backward)
UNARY_OP(U_COS, cos, "Cos", "cosine", unary_backward)
UNARY_OP(U_TANH, tanh, "Tanh", "hyperbolic tangent", unary_backward)
UNARY_OP(U_SIGMOID, sigmoid, "Sigmoid", "1 / (1 + e^-x)", unary_backward)
UNARY_OP(U_RELU, relu, "Relu", "max(x, 0)", unary_backward)
UNARY_OP(U_RELU6, relu6, NULL, "min(max(x, 0), 6)", unary_backward)
UNARY_OP(U_LEAKY, leaky_relu, "LeakyRelu", "x or slope*x; attr negative_slope", unary_backward)
UNARY_OP(U_ELU, elu, "Elu", "x or alpha*(e^x - 1); attr alpha", unary_backward)
UNARY_OP(U_GELU, gelu, "Gelu", "x*Phi(x); attr approximate (1 = tanh form)", unary_backward)
UNARY_OP(U_SILU, silu, NULL, "x * sigmoid(x)", unary_backward)
UNARY_OP(U_SOFTPLUS, softplus, "Softplus", "log(1+e^(beta x))/beta; attrs beta, threshold",
         unary_backward)
UNARY_OP(U_ERF, erf, "Erf", "error function", unary_backward)
UNARY_OP(U_RECIP, reciprocal, "Reciprocal", "1 / x", unary_backward)
UNARY_OP(U_FLOOR, floor, "Floor", "floor, no gradient", NULL)
UNARY_OP(U_CEIL, ceil, "Ceil", "ceil, no gradient", NULL)
UNARY_OP(U_ROUND, round, "Round", "round half to even, no gradient", NULL)
UNARY_OP(U_TAN, tan, "Tan", "tangent", unary_backward)
UNARY_OP(U_ASIN, asin, "Asin", "arcsine", unary_backward)
UNARY_OP(U_ACOS, acos, "Acos", "arccosine", unary_backward)
UNARY_OP(U_ATAN, atan, "Atan", "arctangent", unary_backward)
UNARY_OP(U_SINH, sinh, "Sinh", "hyperbolic sine", unary_backward)
UNARY_OP(U_COSH, cosh, "Cosh", "hyperbolic cosine", unary_backward)
UNARY_OP(U_ASINH, asinh, "Asinh", "inverse hyperbolic sine", unary_backward)
UNARY_OP(U_ACOSH, acosh, "Acosh", "inverse hyperbolic cosine", unary_backward)
UNARY_OP(U_ATANH, atanh, "Atanh", "inverse hyperbolic tangent", unary_backward)

static const kn_opdef *const unary_ops[U_COUNT] = {
    [U_NEG] = &op_neg,          [U_ABS] = &op_abs,           [U_SIGN] = &op_sign,
    [U_EXP] = &op_exp,          [U_LOG] = &op_log,           [U_LOG1P] = &op_log1p,
    [U_SQRT] = &op_sqrt,        [U_RSQRT] = &op_rsqrt,       [U_SQUARE] = &op_square,
    [U_SIN] = &op_sin,          [U_COS] = &op_cos,           [U_TANH] = &op_tanh,
    [U_SIGMOID] = &op_sigmoid,  [U_RELU] = &op_relu,         [U_RELU6] = &op_relu6,
    [U_LEAKY] = &op_leaky_relu, [U_ELU] = &op_elu,           [U_GELU] = &op_gelu,
    [U_SILU] = &op_silu,        [U_SOFTPLUS] = &op_softplus, [U_ERF] = &op_erf,
    [U_RECIP] = &op_reciprocal, [U_FLOOR] = &op_floor,       [U_CEIL] = &op_ceil,
    [U_ROUND] = &op_round,      [U_TAN] = &op_tan,           [U_ASIN] = &op_asin,
    [U_ACOS] = &op_acos,        [U_ATAN] = &op_atan,         [U_SINH] = &op_sinh,
    [U_COSH] = &op_cosh,        [U_ASINH] = &op_asinh,       [U_ACOSH] = &op_acosh,
    [U_ATANH] = &op_atanh,
};

static ufn op_ufn(const kn_opdef *op) {
    for (int i = 0; i < U_COUNT; i++)
        if (unary_ops[i] == op) return (ufn)i;
    return U_COUNT;
}

static kn_tensor *unary(ufn f, kn_tensor *x, const kn_attrs *a) {
    return kn__op1(unary_ops[f], &x, 1, a);
}
kn_tensor *kn_neg(kn_tensor *x) {
    return unary(U_NEG, x, NULL);
}
kn_tensor *kn_abs(kn_tensor *x) {
    return unary(U_ABS, x, NULL);
}
kn_tensor *kn_sign(kn_tensor *x) {
    return unary(U_SIGN, x, NULL);
}
kn_tensor *kn_exp(kn_tensor *x) {
    return unary(U_EXP, x, NULL);
}
kn_tensor *kn_log(kn_tensor *x) {
    return unary(U_LOG, x, NULL);
}
kn_tensor *kn_log1p(kn_tensor *x) {
    return unary(U_LOG1P, x, NULL);
}
kn_tensor *kn_sqrt(kn_tensor *x) {
    return unary(U_SQRT, x, NULL);
}
kn_tensor *kn_rsqrt(kn_tensor *x) {
    return unary(U_RSQRT, x, NULL);
}
kn_tensor *kn_square(kn_tensor *x) {
    return unary(U_SQUARE, x, NULL);
}
kn_tensor *kn_sin(kn_tensor *x) {
    return unary(U_SIN, x, NULL);
}
kn_tensor *kn_cos(kn_tensor *x) {
    return unary(U_COS, x, NULL);
}
kn_tensor *kn_tanh(kn_tensor *x) {
    return unary(U_TANH, x, NULL);
}
kn_tensor *kn_sigmoid(kn_tensor *x) {
    return unary(U_SIGMOID, x, NULL);
}
kn_tensor *kn_relu(kn_tensor *x) {
    return unary(U_RELU, x, NULL);
}
kn_tensor *kn_relu6(kn_tensor *x) {
    return unary(U_RELU6, x, NULL);
}
kn_tensor *kn_silu(kn_tensor *x) {
    return unary(U_SILU, x, NULL);
}
kn_tensor *kn_erf(kn_tensor *x) {
    return unary(U_ERF, x, NULL);
}
kn_tensor *kn_reciprocal(kn_tensor *x) {
    return unary(U_RECIP, x, NULL);
}
kn_tensor *kn_floor(kn_tensor *x) {
    return unary(U_FLOOR, x, NULL);
}
kn_tensor *kn_ceil(kn_tensor *x) {
    return unary(U_CEIL, x, NULL);
}
kn_tensor *kn_round(kn_tensor *x) {
    return unary(U_ROUND, x, NULL);
}
kn_tensor *kn_tan(kn_tensor *x) {
    return unary(U_TAN, x, NULL);
}
kn_tensor *kn_asin(kn_tensor *x) {
    return unary(U_ASIN, x, NULL);
}
kn_tensor *kn_acos(kn_tensor *x) {
    return unary(U_ACOS, x, NULL);
}
kn_tensor *kn_atan(kn_tensor *x) {
    return unary(U_ATAN, x, NULL);
}
kn_tensor *kn_sinh(kn_tensor *x) {
    return unary(U_SINH, x, NULL);
}
kn_tensor *kn_cosh(kn_tensor *x) {
    return unary(U_COSH, x, NULL);
}
kn_tensor *kn_asinh(kn_tensor *x) {
    return unary(U_ASINH, x, NULL);
}
kn_tensor *kn_acosh(kn_tensor *x) {
    return unary(U_ACOSH, x, NULL);
}
kn_tensor *kn_atanh(kn_tensor *x) {
    return unary(U_ATANH, x, NULL);
}
kn_tensor *kn_leaky_relu(kn_tensor *x, double slope) {
    kn_attrs a = {0};
    kn_attrs_set_float(&a, "negative_slope", slope);
    return unary(U_LEAKY, x, &a);
}
kn_tensor *kn_elu(kn_tensor *x, double alpha) {
    kn_attrs a = {0};
    kn_attrs_set_float(&a, "alpha", alpha);
    return unary(U_ELU, x, &a);
}
kn_tensor *kn_gelu(kn_tensor *x, bool tanh_approx) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "approximate", tanh_approx);
    return unary(U_GELU, x, &a);
}
kn_tensor *kn_softplus(kn_tensor *x, double beta, double threshold) {
    if (beta == 0) return kn__errp(KN_EINVAL, "softplus: beta must be non-zero");
    kn_attrs a = {0};
    kn_attrs_set_float(&a, "beta", beta);
    kn_attrs_set_float(&a, "threshold", threshold);
    return unary(U_SOFTPLUS, x, &a);
}

/* ---- fused activation backward ops: (g, x) -> g * f'(x) in one pass ---- */
static kn_status gx_infer(kn_opctx *c) {
    kn_status st = kn__same_dtype(c, 0, 1);
    if (st) return st;
    if (c->in[0]->ndim != c->in[1]->ndim ||
        memcmp(c->in[0]->shape, c->in[1]->shape, sizeof(int64_t) * c->in[0]->ndim))
        return kn__err(KN_ESHAPE, "%s: gradient and input shapes differ", c->op->name);
    kn__out_like(c, 0, c->in[1], c->in[1]->dtype);
    return KN_OK;
}

typedef struct {
    int kind; /* 0 relu', 1 gelu', 2 gelu'' */
    int approx;
} gxargs;

static inline double gelu_d1(double x, int approx) {
    if (approx) {
        double u = SQRT2_PI * (x + 0.044715 * x * x * x), t = tanh(u);
        double du = SQRT2_PI * (1 + 3 * 0.044715 * x * x);
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
    }
    double cdf = 0.5 * (1 + erf(x * SQRT1_2)), pdf = exp(-0.5 * x * x) * 0.3989422804014327;
    return cdf + x * pdf;
}
static inline double gelu_d2(double x, int approx) {
    if (approx) {
        double u = SQRT2_PI * (x + 0.044715 * x * x * x), t = tanh(u);
        double du = SQRT2_PI * (1 + 3 * 0.044715 * x * x), ddu = SQRT2_PI * 6 * 0.044715 * x;
        return (1 - t * t) * (du - x * t * du * du + 0.5 * x * ddu);
    }
    return exp(-0.5 * x * x) * 0.3989422804014327 * (2 - x * x);
}

CLONES static void gx_f32_fast(void *args, int64_t n, char **p, const int64_t *s) {
    const gxargs *a = args;
    float *o = (float *)p[0];
    if (a->kind == 0 && s[1] == 4 && s[2] == 4) {
        const float *g = (const float *)p[1], *x = (const float *)p[2];
        for (int64_t i = 0; i < n; i++)
            o[i] = x[i] > 0.0f ? g[i] : 0.0f;
        return;
    }
    if (a->kind == 1 && !a->approx && s[1] == 4 && s[2] == 4) {
        const float *g = (const float *)p[1], *x = (const float *)p[2];
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + kn__erff(v * 0.70710678f));
            float pdf = kn__expf(-0.5f * v * v) * 0.39894228f;
            o[i] = g[i] * (cdf + v * pdf);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float g = *(const float *)(p[1] + i * s[1]), x = *(const float *)(p[2] + i * s[2]);
        o[i] = a->kind == 0
                   ? (x > 0.0f ? g : 0.0f)
                   : g * (float)(a->kind == 1 ? gelu_d1(x, a->approx) : gelu_d2(x, a->approx));
    }
}
static void gx_f32_ref(void *args, int64_t n, char **p, const int64_t *s) {
    const gxargs *a = args;
    float *o = (float *)p[0];
    for (int64_t i = 0; i < n; i++) {
        float g = *(const float *)(p[1] + i * s[1]), x = *(const float *)(p[2] + i * s[2]);
        o[i] = a->kind == 0
                   ? (x > 0.0f ? g : 0.0f)
                   : g * (float)(a->kind == 1 ? gelu_d1(x, a->approx) : gelu_d2(x, a->approx));
    }
}
static void gx_f64(void *args, int64_t n, char **p, const int64_t *s) {
    const gxargs *a = args;
    double *o = (double *)p[0];
    for (int64_t i = 0; i < n; i++) {
        double g = *(const double *)(p[1] + i * s[1]), x = *(const double *)(p[2] + i * s[2]);
        o[i] = a->kind == 0 ? (x > 0 ? g : 0.0)
                            : g * (a->kind == 1 ? gelu_d1(x, a->approx) : gelu_d2(x, a->approx));
    }
}

static const kn_opdef op_gelu_grad2;
static int gx_kind(const kn_opdef *op) {
    return op == &op_relu_backward ? 0 : op == &op_gelu_backward ? 1 : 2;
}
static kn_iter_fn gx_kernel_for(const kn_opdef *op, const kn_attrs *at, kn_dtype dt, bool ref,
                                void *args) {
    gxargs a = {gx_kind(op), (int)kn__attr_int(at, "approximate", 0)};
    memcpy(args, &a, sizeof a);
    return dt == KN_F64 ? gx_f64 : ref ? gx_f32_ref : gx_f32_fast;
}
static kn_status gx_pointwise(const kn_opdef *op, const kn_attrs *at, const kn_dtype *dt,
                              kn_iter_fn *fn, void *args) {
    *fn = gx_kernel_for(op, at, dt[0], false, args);
    return KN_OK;
}
static kn_status gx_run(kn_opctx *c, bool ref) {
    _Alignas(16) char a[KN_PW_ARGS];
    kn_iter_fn k = gx_kernel_for(c->op, c->attrs, c->in[0]->dtype, ref, a);
    return kn__iter(c->out[0], c->in, 2, k, a);
}
static kn_status gx_forward(kn_opctx *c) {
    return gx_run(c, false);
}
static kn_status gx_forward_ref(kn_opctx *c) {
    return gx_run(c, true);
}

/* d/dg [g f'(x)] = f'(x) -> the same op on the incoming gradient;
 * d/dx [g f'(x)] = g f''(x): zero for relu, the gelu_grad2 op for gelu. */
static kn_status gx_backward(kn_bwctx *c) {
    kn_tensor *gg = c->gout[0], *g = c->in[0], *x = c->in[1];
    if (c->needs[0]) {
        kn_tensor *in[2] = {gg, x};
        c->gin[0] = kn__op1(c->op, in, 2, c->attrs);
        if (!c->gin[0]) return kn_last_status();
    }
    if (c->needs[1] && gx_kind(c->op) == 1) {
        kn_tensor *in[2] = {kn_mul(gg, g), x};
        c->gin[1] = kn__op1(&op_gelu_grad2, in, 2, c->attrs);
        if (!c->gin[1]) return kn_last_status();
    }
    return KN_OK;
}

static const kn_opdef op_relu_backward = {.name = "relu_backward",
                                          .min_in = 2,
                                          .max_in = 2,
                                          .nout = 1,
                                          .dtypes = KN_DT_FLOAT,
                                          .flags = KN_OPF_ELEMENTWISE | KN_OPF_INTERNAL,
                                          .infer = gx_infer,
                                          .forward = gx_forward,
                                          .pointwise = gx_pointwise,
                                          .forward_ref = gx_forward_ref,
                                          .backward = gx_backward,
                                          .doc = "g * (x > 0)"};
static const kn_opdef op_gelu_backward = {.name = "gelu_backward",
                                          .min_in = 2,
                                          .max_in = 2,
                                          .nout = 1,
                                          .dtypes = KN_DT_FLOAT,
                                          .flags = KN_OPF_ELEMENTWISE | KN_OPF_INTERNAL,
                                          .infer = gx_infer,
                                          .forward = gx_forward,
                                          .pointwise = gx_pointwise,
                                          .forward_ref = gx_forward_ref,
                                          .backward = gx_backward,
                                          .doc = "g * gelu'(x)"};
static const kn_opdef op_gelu_grad2 = {
    .name = "gelu_grad2",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_ELEMENTWISE | KN_OPF_INTERNAL,
    .infer = gx_infer,
    .forward = gx_forward,
    .pointwise = gx_pointwise,
    .forward_ref = gx_forward_ref,
    .backward = NULL,
    .doc = "g * gelu''(x) (third derivatives of gelu are not supported)"};

/* ======================= binary ======================= */

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_COUNT } bfn;
typedef enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_AND, C_OR, C_COUNT } cfn;

typedef struct {
    int fn;
    _Atomic int bad; /* integer division by zero / negative integer power */
} bargs;

#define FBIN(EXPR)                                                                                 \
    do {                                                                                           \
        if (sa == ES && sb == ES) {                                                                \
            const T *A = (const T *)pa, *B = (const T *)pb;                                        \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = A[i], y = B[i];                                                              \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (sa == ES && sb == 0) {                                                          \
            const T *A = (const T *)pa;                                                            \
            const T y = *(const T *)pb;                                                            \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = A[i];                                                                        \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (sa == 0 && sb == ES) {                                                          \
            const T x = *(const T *)pa;                                                            \
            const T *B = (const T *)pb;                                                            \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T y = B[i];                                                                        \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = *(const T *)(pa + i * sa), y = *(const T *)(pb + i * sb);                    \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        }                                                                                          \
        return;                                                                                    \
    } while (0)

#define FLOAT_BINARY(TY, NAME, POW, ATTR)                                                          \
    ATTR static void NAME(void *args, int64_t n, char **p, const int64_t *s) {                     \
        typedef TY T;                                                                              \
        enum { ES = sizeof(T) };                                                                   \
        bargs *a = args;                                                                           \
        T *o = (T *)p[0];                                                                          \
        const char *pa = p[1], *pb = p[2];                                                         \
        int64_t sa = s[1], sb = s[2];                                                              \
        switch (a->fn) {                                                                           \
        case B_ADD: FBIN(x + y);                                                                   \
        case B_SUB: FBIN(x - y);                                                                   \
        case B_MUL: FBIN(x *y);                                                                    \
        case B_DIV: FBIN(x / y);                                                                   \
        case B_POW: FBIN(POW(x, y));                                                               \
        case B_MAX: FBIN((x != x || y != y) ? x + y : (x > y ? x : y));                            \
        case B_MIN: FBIN((x != x || y != y) ? x + y : (x < y ? x : y));                            \
        }                                                                                          \
    }
FLOAT_BINARY(float, binary_f32, powf, CLONES)
FLOAT_BINARY(float, binary_f32_ref, powf, )
FLOAT_BINARY(double, binary_f64, pow, )

static inline int64_t ipow(int64_t b, int64_t e) {
    uint64_t r = 1, x = (uint64_t)b;
    while (e > 0) {
        if (e & 1) r *= x;
        x *= x;
        e >>= 1;
    }
    return (int64_t)r;
}

/* Integer arithmetic wraps (computed in uint64) like PyTorch; x/0 and x^negative are errors. */
#define INT_BINARY(T, NAME, TMIN)                                                                  \
    static void NAME(void *args, int64_t n, char **p, const int64_t *s) {                          \
        bargs *a = args;                                                                           \
        T *o = (T *)p[0];                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T x = *(const T *)(p[1] + i * s[1]), y = *(const T *)(p[2] + i * s[2]);                \
            switch (a->fn) {                                                                       \
            case B_ADD: o[i] = (T)((uint64_t)x + (uint64_t)y); break;                              \
            case B_SUB: o[i] = (T)((uint64_t)x - (uint64_t)y); break;                              \
            case B_MUL: o[i] = (T)((uint64_t)x * (uint64_t)y); break;                              \
            case B_DIV:                                                                            \
                if (y == 0) {                                                                      \
                    a->bad = 1;                                                                    \
                    o[i] = 0;                                                                      \
                } else if (TMIN && x == (T)TMIN && y == (T)-1) {                                   \
                    o[i] = x;                                                                      \
                } else {                                                                           \
                    o[i] = (T)(x / y);                                                             \
                }                                                                                  \
                break;                                                                             \
            case B_POW:                                                                            \
                if (y < 0) a->bad = 2;                                                             \
                o[i] = y < 0 ? 0 : (T)ipow(x, y);                                                  \
                break;                                                                             \
            case B_MAX: o[i] = x > y ? x : y; break;                                               \
            case B_MIN: o[i] = x < y ? x : y; break;                                               \
            }                                                                                      \
        }                                                                                          \
    }
INT_BINARY(int8_t, binary_i8, INT8_MIN)
INT_BINARY(uint8_t, binary_u8, 0)
INT_BINARY(int32_t, binary_i32, INT32_MIN)
INT_BINARY(int64_t, binary_i64, INT64_MIN)

static kn_iter_fn binary_kernel(kn_dtype dt, bool ref) {
    switch (dt) {
    case KN_F32: return ref ? binary_f32_ref : binary_f32;
    case KN_F64: return binary_f64;
    case KN_I8: return binary_i8;
    case KN_U8: return binary_u8;
    case KN_I32: return binary_i32;
    case KN_I64: return binary_i64;
    default: return NULL;
    }
}

static kn_status bcast_infer(kn_opctx *c, int first, kn_dtype out_dt) {
    int nd = c->in[first]->ndim;
    int64_t shape[KN_MAX_DIMS];
    memcpy(shape, c->in[first]->shape, sizeof shape);
    for (int i = first + 1; i < c->nin; i++) {
        int64_t tmp[KN_MAX_DIMS];
        int nt;
        kn_status st =
            kn__broadcast_shape(c->op->name, nd, shape, c->in[i]->ndim, c->in[i]->shape, &nt, tmp);
        if (st) return st;
        nd = nt;
        memcpy(shape, tmp, sizeof shape);
    }
    c->out_dtype[0] = out_dt;
    c->out_ndim[0] = nd;
    memcpy(c->out_shape[0], shape, sizeof shape);
    return KN_OK;
}

static bfn op_bfn(const kn_opdef *op);

static kn_status binary_infer(kn_opctx *c) {
    kn_status st = kn__same_dtype(c, 0, 1);
    if (st) return st;
    if (c->in[0]->dtype == KN_BOOL || !binary_kernel(c->in[0]->dtype, false))
        return kn__err(KN_EDTYPE, "%s: dtype %s is not supported", c->op->name,
                       kn_dtype_name(c->in[0]->dtype));
    return bcast_infer(c, 0, c->in[0]->dtype);
}

_Static_assert(sizeof(uargs) <= KN_PW_ARGS && sizeof(bargs) <= KN_PW_ARGS, "pointwise args");
/* Fusable for float dtypes only (integer kernels report errors through their args). */
static kn_status binary_pointwise(const kn_opdef *op, const kn_attrs *at, const kn_dtype *dt,
                                  kn_iter_fn *fn, void *args) {
    if (!kn_dtype_is_float(dt[0]) || !(*fn = binary_kernel(dt[0], false)))
        return kn__err(KN_EUNSUPPORTED, "%s: not fusable for %s", op->name, kn_dtype_name(dt[0]));
    bargs a = {.fn = op_bfn(op)};
    memcpy(args, &a, sizeof a);
    return KN_OK;
}
static kn_status binary_run(kn_opctx *c, bool ref) {
    bargs a = {.fn = op_bfn(c->op)};
    kn_status st = kn__iter(c->out[0], c->in, 2, binary_kernel(c->in[0]->dtype, ref), &a);
    if (st) return st;
    if (a.bad == 1) return kn__err(KN_EINVAL, "div: integer division by zero");
    if (a.bad == 2) return kn__err(KN_EINVAL, "pow: integers cannot be raised to negative powers");
    return KN_OK;
}
static kn_status binary_forward(kn_opctx *c) {
    return binary_run(c, false);
}
static kn_status binary_forward_ref(kn_opctx *c) {
    return binary_run(c, true);
}

static kn_status set_gin(kn_bwctx *c, int i, kn_tensor *g) {
    if (!c->needs[i]) return KN_OK;
    c->gin[i] = kn__sum_to(g, c->in[i]->ndim, c->in[i]->shape);
    return c->gin[i] ? KN_OK : kn_last_status();
}

static kn_status binary_backward(kn_bwctx *c) {
    kn_tensor *a = c->in[0], *b = c->in[1], *g = c->gout[0], *y = c->out[0];
    kn_status st = KN_OK;
    switch (op_bfn(c->op)) {
    case B_ADD:
        st = set_gin(c, 0, g);
        if (!st) st = set_gin(c, 1, g);
        break;
    case B_SUB:
        st = set_gin(c, 0, g);
        if (!st && c->needs[1]) st = set_gin(c, 1, kn_neg(g));
        break;
    case B_MUL:
        if (c->needs[0]) st = set_gin(c, 0, kn_mul(g, b));
        if (!st && c->needs[1]) st = set_gin(c, 1, kn_mul(g, a));
        break;
    case B_DIV:
        if (c->needs[0]) st = set_gin(c, 0, kn_div(g, b));
        if (!st && c->needs[1]) st = set_gin(c, 1, kn_neg(kn_div(kn_mul(g, a), kn_square(b))));
        break;
    case B_POW:
        /* d/da = b a^(b-1); d/db = a^b log a, taken as 0 where a == 0 (PyTorch's rule) */
        if (c->needs[0]) st = set_gin(c, 0, kn_mul(g, kn_mul(b, kn_pow(a, kn_sub(b, sc(b, 1.0))))));
        if (!st && c->needs[1]) {
            kn_tensor *z = kn_eq(a, sc(a, 0));
            kn_tensor *safe = kn_where(z, sc(a, 1.0), a);
            st = set_gin(c, 1, kn_mul(g, kn_where(z, sc(a, 0.0), kn_mul(y, kn_log(safe)))));
        }
        break;
    case B_MAX:
    case B_MIN: {
        /* ties split the gradient evenly (PyTorch's maximum/minimum rule) */
        kn_tensor *win = op_bfn(c->op) == B_MAX ? kn_gt(a, b) : kn_lt(a, b);
        kn_tensor *half = kn_mul(kn_cast(kn_eq(a, b), g->dtype), sc(g, 0.5));
        kn_tensor *ma = kn_add(kn_cast(win, g->dtype), half);
        if (c->needs[0]) st = set_gin(c, 0, kn_mul(g, ma));
        if (!st && c->needs[1]) st = set_gin(c, 1, kn_mul(g, kn_sub(sc(g, 1.0), ma)));
        break;
    }
    default: st = kn__err(KN_EINTERNAL, "%s: no backward", c->op->name);
    }
    return st;
}

#define BINARY_OP(NAME, ONNX, DOC)                                                                 \
    static const kn_opdef op_##NAME = {.name = #NAME,                                              \
                                       .min_in = 2,                                                \
                                       .max_in = 2,                                                \
                                       .nout = 1,                                                  \
                                       .dtypes = KN_DT_NUM,                                        \
                                       .flags = KN_OPF_ELEMENTWISE,                                \
                                       .infer = binary_infer,                                      \
                                       .forward = binary_forward,                                  \
                                       .pointwise = binary_pointwise,                              \
                                       .forward_ref = binary_forward_ref,                          \
                                       .backward = binary_backward,                                \
                                       .onnx = ONNX,                                               \
                                       .doc = DOC};
BINARY_OP(add, "Add", "a + b, broadcasting")
BINARY_OP(sub, "Sub", "a - b, broadcasting")
BINARY_OP(mul, "Mul", "a * b, broadcasting")
BINARY_OP(div, "Div", "a / b, broadcasting; integers truncate")
BINARY_OP(pow, "Pow", "a ^ b, broadcasting")
BINARY_OP(maximum, "Max", "elementwise max, NaN propagates")
BINARY_OP(minimum, "Min", "elementwise min, NaN propagates")

static const kn_opdef *const binary_ops[B_COUNT] = {&op_add, &op_sub,     &op_mul,    &op_div,
                                                    &op_pow, &op_maximum, &op_minimum};
static bfn op_bfn(const kn_opdef *op) {
    for (int i = 0; i < B_COUNT; i++)
        if (binary_ops[i] == op) return (bfn)i;
    return B_COUNT;
}

kn_tensor *kn_add(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_add, (kn_tensor *[]){a, b}, 2, NULL);
}
kn_tensor *kn_sub(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_sub, (kn_tensor *[]){a, b}, 2, NULL);
}
kn_tensor *kn_mul(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_mul, (kn_tensor *[]){a, b}, 2, NULL);
}
kn_tensor *kn_div(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_div, (kn_tensor *[]){a, b}, 2, NULL);
}
kn_tensor *kn_pow(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_pow, (kn_tensor *[]){a, b}, 2, NULL);
}
kn_tensor *kn_maximum(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_maximum, (kn_tensor *[]){a, b}, 2, NULL);
}
kn_tensor *kn_minimum(kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_minimum, (kn_tensor *[]){a, b}, 2, NULL);
}

/* scalar forms: the scalar becomes a 0-d tensor of x's dtype (owned here, kept by the tape) */
static kn_tensor *with_scalar(const kn_opdef *op, kn_tensor *x, double v) {
    if (!x) return NULL;
    kn_tensor *s = kn__tensor_alloc(x->dtype, 0, NULL);
    if (!s) return NULL;
    kn__store_f64(x->dtype, kn__ptr(s), v);
    kn_tensor *r = kn__op1(op, (kn_tensor *[]){x, s}, 2, NULL);
    kn_tensor_free(s);
    return r;
}
kn_tensor *kn_add_scalar(kn_tensor *x, double s) {
    return with_scalar(&op_add, x, s);
}
kn_tensor *kn_mul_scalar(kn_tensor *x, double s) {
    return with_scalar(&op_mul, x, s);
}
kn_tensor *kn_pow_scalar(kn_tensor *x, double e) {
    return with_scalar(&op_pow, x, e);
}

/* ---- comparisons and logic -> bool ---- */
static inline bool truthy(kn_dtype dt, const char *p) {
    switch (kn_dtype_size(dt)) {
    case 1: return *(const uint8_t *)p != 0;
    case 2: return (*(const uint16_t *)p & 0x7fff) != 0; /* f16/bf16: -0 is false */
    case 4: return dt == KN_F32 ? *(const float *)p != 0 : *(const int32_t *)p != 0;
    default: return dt == KN_F64 ? *(const double *)p != 0 : *(const int64_t *)p != 0;
    }
}

typedef struct {
    int fn;
    kn_dtype dt;
} cargs;

#define CMP_LOOP(T)                                                                                \
    for (int64_t i = 0; i < n; i++) {                                                              \
        T x = *(const T *)(p[1] + i * s[1]), y = *(const T *)(p[2] + i * s[2]);                    \
        bool r;                                                                                    \
        switch (a->fn) {                                                                           \
        case C_EQ: r = x == y; break;                                                              \
        case C_NE: r = x != y; break;                                                              \
        case C_LT: r = x < y; break;                                                               \
        case C_LE: r = x <= y; break;                                                              \
        case C_GT: r = x > y; break;                                                               \
        default: r = x >= y; break;                                                                \
        }                                                                                          \
        o[i] = r;                                                                                  \
    }

static void compare_kernel(void *args, int64_t n, char **p, const int64_t *s) {
    const cargs *a = args;
    uint8_t *o = (uint8_t *)p[0];
    if (a->fn == C_AND || a->fn == C_OR) {
        for (int64_t i = 0; i < n; i++) {
            bool x = truthy(a->dt, p[1] + i * s[1]), y = truthy(a->dt, p[2] + i * s[2]);
            o[i] = a->fn == C_AND ? (x && y) : (x || y);
        }
        return;
    }
    switch (a->dt) {
    case KN_F32: CMP_LOOP(float) break;
    case KN_F64: CMP_LOOP(double) break;
    case KN_I8: CMP_LOOP(int8_t) break;
    case KN_U8:
    case KN_BOOL: CMP_LOOP(uint8_t) break;
    case KN_I32: CMP_LOOP(int32_t) break;
    case KN_I64: CMP_LOOP(int64_t) break;
    default: break;
    }
}

static cfn op_cfn(const kn_opdef *op);
static kn_status compare_infer(kn_opctx *c) {
    kn_status st = kn__same_dtype(c, 0, 1);
    if (st) return st;
    kn_dtype dt = c->in[0]->dtype;
    if ((dt == KN_F16 || dt == KN_BF16) && op_cfn(c->op) < C_AND)
        return kn__err(KN_EDTYPE, "%s: dtype %s is not supported (cast to float32)", c->op->name,
                       kn_dtype_name(dt));
    return bcast_infer(c, 0, KN_BOOL);
}
static kn_status compare_forward(kn_opctx *c) {
    cargs a = {op_cfn(c->op), c->in[0]->dtype};
    return kn__iter(c->out[0], c->in, 2, compare_kernel, &a);
}

#define CMP_OP(NAME, ONNX, DOC)                                                                    \
    static const kn_opdef op_##NAME = {.name = #NAME,                                              \
                                       .min_in = 2,                                                \
                                       .max_in = 2,                                                \
                                       .nout = 1,                                                  \
                                       .dtypes = KN_DT_ALL,                                        \
                                       .flags = KN_OPF_ELEMENTWISE,                                \
                                       .infer = compare_infer,                                     \
                                       .forward = compare_forward,                                 \
                                       .onnx = ONNX,                                               \
                                       .doc = DOC};
CMP_OP(eq, "Equal", "a == b -> bool")
CMP_OP(ne, NULL, "a != b -> bool")
CMP_OP(lt, "Less", "a < b -> bool")
CMP_OP(le, "LessOrEqual", "a <= b -> bool")
CMP_OP(gt, "Greater", "a > b -> bool")
CMP_OP(ge, "GreaterOrEqual", "a >= b -> bool")
CMP_OP(logical_and, "And", "a && b (nonzero is true) -> bool")
CMP_OP(logical_or, "Or", "a || b (nonzero is true) -> bool")
static const kn_opdef *const cmp_ops[C_COUNT] = {&op_eq, &op_ne, &op_lt,          &op_le,
                                                 &op_gt, &op_ge, &op_logical_and, &op_logical_or};
static cfn op_cfn(const kn_opdef *op) {
    for (int i = 0; i < C_COUNT; i++)
        if (cmp_ops[i] == op) return (cfn)i;
    return C_COUNT;
}
#define CMP_API(NAME)                                                                              \
    kn_tensor *kn_##NAME(kn_tensor *a, kn_tensor *b) {                                             \
        return kn__op1(&op_##NAME, (kn_tensor *[]){a, b}, 2, NULL);                                \
    }
CMP_API(eq)
CMP_API(ne)
CMP_API(lt)
CMP_API(le)
CMP_API(gt)
CMP_API(ge)
CMP_API(logical_and)
CMP_API(logical_or)

static void not_kernel(void *args, int64_t n, char **p, const int64_t *s) {
    kn_dtype dt = *(const kn_dtype *)args;
    uint8_t *o = (uint8_t *)p[0];
    for (int64_t i = 0; i < n; i++)
        o[i] = !truthy(dt, p[1] + i * s[1]);
}
static kn_status not_infer(kn_opctx *c) {
    kn__out_like(c, 0, c->in[0], KN_BOOL);
    return KN_OK;
}
static kn_status not_forward(kn_opctx *c) {
    kn_dtype dt = c->in[0]->dtype;
    return kn__iter(c->out[0], c->in, 1, not_kernel, &dt);
}
static const kn_opdef op_logical_not = {.name = "logical_not",
                                        .min_in = 1,
                                        .max_in = 1,
                                        .nout = 1,
                                        .dtypes = KN_DT_ALL,
                                        .flags = KN_OPF_ELEMENTWISE,
                                        .infer = not_infer,
                                        .forward = not_forward,
                                        .onnx = "Not",
                                        .doc = "!x (nonzero is true) -> bool"};
kn_tensor *kn_logical_not(kn_tensor *x) {
    return kn__op1(&op_logical_not, &x, 1, NULL);
}

/* ---- where(cond, a, b) ---- */
static void where_kernel(void *args, int64_t n, char **p, const int64_t *s) {
    size_t es = *(const size_t *)args;
    for (int64_t i = 0; i < n; i++) {
        const char *src = *(const uint8_t *)(p[1] + i * s[1]) ? p[2] + i * s[2] : p[3] + i * s[3];
        memcpy(p[0] + (size_t)i * es, src, es);
    }
}
static kn_status where_infer(kn_opctx *c) {
    if (c->in[1]->dtype != c->in[2]->dtype)
        return kn__err(KN_EDTYPE, "where: branches are %s and %s (cast explicitly)",
                       kn_dtype_name(c->in[1]->dtype), kn_dtype_name(c->in[2]->dtype));
    return bcast_infer(c, 0, c->in[1]->dtype);
}
static kn_status where_forward(kn_opctx *c) {
    size_t es = kn_dtype_size(c->in[1]->dtype);
    return kn__iter(c->out[0], c->in, 3, where_kernel, &es);
}
static kn_status where_backward(kn_bwctx *c) {
    kn_tensor *g = c->gout[0], *z = sc(g, 0.0);
    kn_status st = KN_OK;
    if (c->needs[1]) st = set_gin(c, 1, kn_where(c->in[0], g, z));
    if (!st && c->needs[2]) st = set_gin(c, 2, kn_where(c->in[0], z, g));
    return st;
}
static const kn_opdef op_where = {.name = "where",
                                  .min_in = 3,
                                  .max_in = 3,
                                  .nout = 1,
                                  .dtypes = KN_DT(KN_BOOL),
                                  .flags = KN_OPF_ELEMENTWISE,
                                  .infer = where_infer,
                                  .forward = where_forward,
                                  .backward = where_backward,
                                  .onnx = "Where",
                                  .doc = "cond ? a : b, broadcasting"};
kn_tensor *kn_where(kn_tensor *cond, kn_tensor *a, kn_tensor *b) {
    return kn__op1(&op_where, (kn_tensor *[]){cond, a, b}, 3, NULL);
}

/* ---- clamp ---- */
typedef struct {
    double lo, hi;
    bool has_lo, has_hi;
} clampargs;
#define CLAMP_LOOP(T)                                                                              \
    do {                                                                                           \
        T *o = (T *)p[0];                                                                          \
        const T lo = (T)a->lo, hi = (T)a->hi;                                                      \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T v = *(const T *)(p[1] + i * s[1]);                                                   \
            if (a->has_lo && v < lo) v = lo;                                                       \
            if (a->has_hi && v > hi) v = hi;                                                       \
            o[i] = v;                                                                              \
        }                                                                                          \
    } while (0)
static kn_status clamp_infer(kn_opctx *c) {
    kn__out_like(c, 0, c->in[0], c->in[0]->dtype);
    return KN_OK;
}
typedef struct {
    clampargs a;
    kn_dtype dt;
} clampk;
static void clamp_kernel_t(void *args, int64_t n, char **p, const int64_t *s) {
    const clampk *k = args;
    const clampargs *a = &k->a;
    switch (k->dt) {
    case KN_F32: CLAMP_LOOP(float); break;
    case KN_F64: CLAMP_LOOP(double); break;
    case KN_I8: CLAMP_LOOP(int8_t); break;
    case KN_U8: CLAMP_LOOP(uint8_t); break;
    case KN_I32: CLAMP_LOOP(int32_t); break;
    case KN_I64: CLAMP_LOOP(int64_t); break;
    default: break;
    }
}
static clampargs clamp_args(const kn_attrs *at) {
    clampargs a = {.has_lo = kn__attr_has(at, "min"), .has_hi = kn__attr_has(at, "max")};
    a.lo = kn__attr_float(at, "min", 0);
    a.hi = kn__attr_float(at, "max", 0);
    return a;
}
/* Integer clamps: bounds rounded inward (ceil / floor) and saturated to the dtype's range, so
 * converting them is defined (an infinite or huge bound from a file was undefined behaviour);
 * a NaN bound is no bound. */
static void clamp_int_bounds(clampargs *a, kn_dtype dt) {
    double lo = dt == KN_I8    ? -128.0
                : dt == KN_U8  ? 0.0
                : dt == KN_I32 ? -2147483648.0
                               : -9223372036854775808.0;
    double hi = dt == KN_I8    ? 127.0
                : dt == KN_U8  ? 255.0
                : dt == KN_I32 ? 2147483647.0
                               : 9223372036854774784.0; /* the largest double below 2^63 */
    if (a->has_lo) a->has_lo = !isnan(a->lo), a->lo = fmin(fmax(ceil(a->lo), lo), hi);
    if (a->has_hi) a->has_hi = !isnan(a->hi), a->hi = fmin(fmax(floor(a->hi), lo), hi);
}

static kn_status clamp_pointwise(const kn_opdef *op, const kn_attrs *at, const kn_dtype *dt,
                                 kn_iter_fn *fn, void *args) {
    clampk k = {clamp_args(at), dt[0]};
    if (dt[0] == KN_I8 || dt[0] == KN_U8 || dt[0] == KN_I32 || dt[0] == KN_I64)
        clamp_int_bounds(&k.a, dt[0]);
    memcpy(args, &k, sizeof k);
    *fn = clamp_kernel_t;
    return KN_OK;
}
static kn_status clamp_forward(kn_opctx *c) {
    _Alignas(16) char a[KN_PW_ARGS];
    kn_iter_fn k;
    clamp_pointwise(c->op, c->attrs, &c->in[0]->dtype, &k, a);
    return kn__iter(c->out[0], c->in, 1, k, a);
}
static kn_status clamp_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    clampargs a = clamp_args(c->attrs);
    kn_tensor *x = c->in[0], *m = kn_ones_like(x);
    if (a.has_lo) m = kn_mul(m, kn_cast(kn_ge(x, sc(x, a.lo)), x->dtype));
    if (a.has_hi) m = kn_mul(m, kn_cast(kn_le(x, sc(x, a.hi)), x->dtype));
    c->gin[0] = kn_mul(c->gout[0], m);
    return c->gin[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_clamp = {.name = "clamp",
                                  .min_in = 1,
                                  .max_in = 1,
                                  .nout = 1,
                                  .dtypes = KN_DT_NUM,
                                  .flags = KN_OPF_ELEMENTWISE,
                                  .infer = clamp_infer,
                                  .forward = clamp_forward,
                                  .pointwise = clamp_pointwise,
                                  .backward = clamp_backward,
                                  .onnx = "Clip",
                                  .doc = "clamp to [min, max]; attrs min, max"};
kn_tensor *kn_clamp(kn_tensor *x, double lo, double hi) {
    kn_attrs a = {0};
    if (!isnan(lo)) kn_attrs_set_float(&a, "min", lo);
    if (!isnan(hi)) kn_attrs_set_float(&a, "max", hi);
    return kn__op1(&op_clamp, &x, 1, &a);
}

/* ---- cast and clone ---- */
typedef struct {
    kn_dtype from, to;
} castargs;
static void cast_kernel(void *args, int64_t n, char **p, const int64_t *s) {
    const castargs *a = args;
    size_t es = kn_dtype_size(a->to);
    if (a->from == a->to) {
        for (int64_t i = 0; i < n; i++)
            memcpy(p[0] + (size_t)i * es, p[1] + i * s[1], es);
    } else if (a->from == KN_F32 && a->to == KN_F64) {
        for (int64_t i = 0; i < n; i++)
            ((double *)p[0])[i] = *(const float *)(p[1] + i * s[1]);
    } else if (a->from == KN_F64 && a->to == KN_F32) {
        for (int64_t i = 0; i < n; i++)
            ((float *)p[0])[i] = (float)*(const double *)(p[1] + i * s[1]);
    } else if (a->from == KN_BOOL && a->to == KN_F32) {
        for (int64_t i = 0; i < n; i++)
            ((float *)p[0])[i] = *(const uint8_t *)(p[1] + i * s[1]) ? 1.0f : 0.0f;
    } else if (a->to == KN_BOOL) {
        for (int64_t i = 0; i < n; i++)
            ((uint8_t *)p[0])[i] = truthy(a->from, p[1] + i * s[1]);
    } else if (a->from == KN_I64 && a->to == KN_I32) {
        for (int64_t i = 0; i < n; i++)
            ((int32_t *)p[0])[i] = (int32_t) * (const int64_t *)(p[1] + i * s[1]);
    } else if (a->from == KN_I32 && a->to == KN_I64) {
        for (int64_t i = 0; i < n; i++)
            ((int64_t *)p[0])[i] = *(const int32_t *)(p[1] + i * s[1]);
    } else if (a->from == KN_I64 && a->to != KN_I64 && !kn_dtype_is_float(a->to)) {
        /* integer narrowing wraps like C/PyTorch */
        for (int64_t i = 0; i < n; i++) {
            int64_t v = *(const int64_t *)(p[1] + i * s[1]);
            if (a->to == KN_I8)
                ((int8_t *)p[0])[i] = (int8_t)v;
            else if (a->to == KN_U8)
                ((uint8_t *)p[0])[i] = (uint8_t)v;
            else
                ((int32_t *)p[0])[i] = (int32_t)v;
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            kn__store_f64(a->to, p[0] + (size_t)i * es, kn__load_f64(a->from, p[1] + i * s[1]));
    }
}
static kn_status cast_infer(kn_opctx *c) {
    int64_t to = kn__attr_int(c->attrs, "dtype", -1);
    if (to < 0 || to >= KN_NDTYPES)
        return kn__err(KN_EDTYPE, "cast: invalid target dtype %lld", (long long)to);
    kn__out_like(c, 0, c->in[0], (kn_dtype)to);
    return KN_OK;
}
static kn_status cast_pointwise(const kn_opdef *op, const kn_attrs *at, const kn_dtype *dt,
                                kn_iter_fn *fn, void *args) {
    castargs a = {dt[0], (kn_dtype)kn__attr_int(at, "dtype", dt[0])};
    memcpy(args, &a, sizeof a);
    *fn = cast_kernel;
    return KN_OK;
}
static kn_status cast_forward(kn_opctx *c) {
    _Alignas(16) char a[KN_PW_ARGS];
    kn_iter_fn k;
    cast_pointwise(c->op, c->attrs, &c->in[0]->dtype, &k, a);
    return kn__iter(c->out[0], c->in, 1, k, a);
}
static kn_status cast_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    c->gin[0] = kn_cast(c->gout[0], c->in[0]->dtype);
    return c->gin[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_cast = {
    .name = "cast",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_ALL,
    .flags = KN_OPF_ELEMENTWISE,
    .infer = cast_infer,
    .forward = cast_forward,
    .pointwise = cast_pointwise,
    .backward = cast_backward,
    .onnx = "Cast",
    .doc = "convert dtype (float->int truncates and saturates); attr dtype"};
kn_tensor *kn_cast(kn_tensor *t, kn_dtype dt) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dtype", dt);
    return kn__op1(&op_cast, &t, 1, &a);
}

static kn_status clone_infer(kn_opctx *c) {
    kn__out_like(c, 0, c->in[0], c->in[0]->dtype);
    return KN_OK;
}
static kn_status clone_forward(kn_opctx *c) {
    kn__copy_into(c->out[0], c->in[0]);
    return KN_OK;
}
static kn_status clone_backward(kn_bwctx *c) {
    if (c->needs[0]) c->gin[0] = kn_tensor_retain(c->gout[0]), kn__scope_adopt(c->gin[0]);
    return KN_OK;
}
static const kn_opdef op_clone = {.name = "clone",
                                  .min_in = 1,
                                  .max_in = 1,
                                  .nout = 1,
                                  .dtypes = KN_DT_ALL,
                                  .flags = KN_OPF_ELEMENTWISE,
                                  .infer = clone_infer,
                                  .forward = clone_forward,
                                  .backward = clone_backward,
                                  .onnx = "Identity",
                                  .doc = "contiguous copy"};
kn_tensor *kn_clone(kn_tensor *t) {
    return kn__op1(&op_clone, &t, 1, NULL);
}
kn_tensor *kn_contiguous(kn_tensor *t) {
    if (!t) return NULL;
    if (kn__is_contiguous(t)) return kn__scope_adopt(kn_tensor_retain(t));
    return kn_clone(t);
}

/* ---- in place (never recorded) ---- */
kn_status kn_copy_(kn_tensor *dst, kn_tensor *src) {
    kn_status st = kn__check_inplace("copy_", dst);
    if (st) return st;
    if (!src) return kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "copy_: NULL source");
    int nd;
    int64_t shape[KN_MAX_DIMS];
    st = kn__broadcast_shape("copy_", dst->ndim, dst->shape, src->ndim, src->shape, &nd, shape);
    if (st) return st;
    if (nd != dst->ndim || memcmp(shape, dst->shape, sizeof(int64_t) * nd)) {
        char a[128], b[128];
        return kn__err(KN_ESHAPE, "copy_: source %s does not broadcast to destination %s",
                       kn__shape_str(a, sizeof a, src->ndim, src->shape),
                       kn__shape_str(b, sizeof b, dst->ndim, dst->shape));
    }
    castargs a = {src->dtype, dst->dtype};
    if (kn__is_contiguous(dst)) return kn__iter(dst, &src, 1, cast_kernel, &a);
    /* strided destination: compute into a temporary, then scatter element by element */
    kn_tensor *tmp = kn__tensor_alloc(dst->dtype, dst->ndim, dst->shape);
    if (!tmp) return kn_last_status();
    st = kn__iter(tmp, &src, 1, cast_kernel, &a);
    int64_t n = kn__numel(dst->ndim, dst->shape);
    size_t es = kn_dtype_size(dst->dtype);
    for (int64_t i = 0; i < n && !st; i++) {
        int64_t off = dst->offset, rem = i;
        for (int k = dst->ndim - 1; k >= 0; k--) {
            off += (rem % dst->shape[k]) * dst->strides[k];
            rem /= dst->shape[k];
        }
        memcpy((char *)dst->storage->data + off * (int64_t)es, kn__ptr(tmp) + (size_t)i * es, es);
    }
    kn_tensor_free(tmp);
    return st;
}

kn_status kn_fill_(kn_tensor *t, double v) {
    kn_status st = kn__check_inplace("fill_", t);
    if (st) return st;
    kn_tensor *s = kn__tensor_alloc(KN_F64, 0, NULL);
    if (!s) return kn_last_status();
    *(double *)kn__ptr(s) = v;
    st = kn_copy_(t, s);
    kn_tensor_free(s);
    return st;
}
kn_status kn_zero_(kn_tensor *t) {
    return kn_fill_(t, 0.0);
}

/* t = t + alpha * src (src broadcasts); t must be contiguous f32/f64 or goes through a temp */
typedef struct {
    double alpha;
} axpyargs;
CLONES static void axpy_f32(void *args, int64_t n, char **p, const int64_t *s) {
    float al = (float)((const axpyargs *)args)->alpha;
    float *o = (float *)p[0];
    const float *t = (const float *)p[1];
    if (s[2] == 4) {
        const float *x = (const float *)p[2];
        for (int64_t i = 0; i < n; i++)
            o[i] = t[i] + al * x[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i] = t[i] + al * *(const float *)(p[2] + i * s[2]);
    }
}
static void axpy_f64(void *args, int64_t n, char **p, const int64_t *s) {
    double al = ((const axpyargs *)args)->alpha;
    double *o = (double *)p[0];
    for (int64_t i = 0; i < n; i++)
        o[i] = *(const double *)(p[1] + i * s[1]) + al * *(const double *)(p[2] + i * s[2]);
}
kn_status kn_add_(kn_tensor *t, kn_tensor *src, double alpha) {
    kn_status st = kn__check_inplace("add_", t);
    if (st) return st;
    if (!src) return kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "add_: NULL source");
    if (src->dtype != t->dtype)
        return kn__err(KN_EDTYPE, "add_: source is %s, destination %s", kn_dtype_name(src->dtype),
                       kn_dtype_name(t->dtype));
    if ((t->dtype == KN_F32 || t->dtype == KN_F64) && kn__is_contiguous(t)) {
        int nd;
        int64_t shape[KN_MAX_DIMS];
        st = kn__broadcast_shape("add_", t->ndim, t->shape, src->ndim, src->shape, &nd, shape);
        if (st) return st;
        if (nd != t->ndim || memcmp(shape, t->shape, sizeof(int64_t) * nd))
            return kn__err(KN_ESHAPE, "add_: source does not broadcast to the destination");
        axpyargs a = {alpha};
        kn_tensor *ins[2] = {t, src};
        return kn__iter(t, ins, 2, t->dtype == KN_F32 ? axpy_f32 : axpy_f64, &a);
    }
    bool prev = kn_set_grad_enabled(false);
    kn_scope sc_ = kn_scope_begin();
    kn_tensor *r = with_scalar(&op_mul, src, alpha);
    kn_tensor *sum = r ? kn_add(t, r) : NULL;
    st = sum ? kn_copy_(t, sum) : kn_last_status();
    kn_scope_end(sc_);
    kn_set_grad_enabled(prev);
    return st;
}

kn_status kn_mul_scalar_(kn_tensor *t, double s) {
    kn_status st = kn__check_inplace("mul_scalar_", t);
    if (st) return st;
    bool prev = kn_set_grad_enabled(false);
    kn_scope sc_ = kn_scope_begin();
    kn_tensor *r = with_scalar(&op_mul, t, s);
    st = r ? kn_copy_(t, r) : kn_last_status();
    kn_scope_end(sc_);
    kn_set_grad_enabled(prev);
    return st;
}

const kn_opdef *const kn__ops_elementwise[] = {&op_neg,
                                               &op_abs,
                                               &op_sign,
                                               &op_exp,
                                               &op_log,
                                               &op_log1p,
                                               &op_sqrt,
                                               &op_rsqrt,
                                               &op_square,
                                               &op_sin,
                                               &op_cos,
                                               &op_tanh,
                                               &op_sigmoid,
                                               &op_relu,
                                               &op_relu6,
                                               &op_leaky_relu,
                                               &op_elu,
                                               &op_gelu,
                                               &op_silu,
                                               &op_softplus,
                                               &op_erf,
                                               &op_reciprocal,
                                               &op_floor,
                                               &op_ceil,
                                               &op_round,
                                               &op_tan,
                                               &op_asin,
                                               &op_acos,
                                               &op_atan,
                                               &op_sinh,
                                               &op_cosh,
                                               &op_asinh,
                                               &op_acosh,
                                               &op_atanh,
                                               &op_relu_backward,
                                               &op_gelu_backward,
                                               &op_gelu_grad2,
                                               &op_add,
                                               &op_sub,
                                               &op_mul,
                                               &op_div,
                                               &op_pow,
                                               &op_maximum,
                                               &op_minimum,
                                               &op_eq,
                                               &op_ne,
                                               &op_lt,
                                               &op_le,
                                               &op_gt,
                                               &op_ge,
                                               &op_logical_and,
                                               &op_logical_or,
                                               &op_logical_not,
                                               &op_where,
                                               &op_clamp,
                                               &op_cast,
                                               &op_clone,
                                               NULL};
