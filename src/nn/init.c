/*
 * init.c - torch.nn.init in C: uniform_, normal_, constant_, zeros_, ones_, xavier_*, kaiming_*
 * and the fan computation, in place and never recorded by autograd (PyTorch runs them under
 * no_grad, so parameters that require grad may be initialised).
 *
 * Random draws use the global counter-based generator with the same per-element mapping as
 * kn_rand / kn_randn (draw i of a tensor = element i in C order), so after kn_manual_seed(s),
 * kn_init_uniform_(t, 0, 1) fills t exactly as kn_rand would. Values differ from PyTorch's
 * generator; bounds, standard deviations and distributions follow torch.nn.init.
 *
 * Not here: truncated normal, orthogonal, sparse initialisers.
 */
#include <math.h>

#include "nn/nn_impl.h"

typedef enum { FILL_CONST, FILL_UNIFORM, FILL_NORMAL } fill_kind;

/* draw r -> value, the same mappings kn_rand / kn_randn use */
static double u01(uint64_t r) {
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}
static double n01(uint64_t r) {
    double u1 = ((double)(r >> 40) + 1.0) / 16777217.0;
    double u2 = (double)((r >> 8) & 0xffffffu) / 16777216.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* a NULL tensor from a failed call keeps that call's error */
static kn_status null_tensor(const char *who) {
    kn_status s = kn_last_status();
    return s ? s : kn__err(KN_EINVAL, "%s: NULL tensor", who);
}

static kn_status fill(const char *who, kn_tensor *t, fill_kind kind, double a, double b) {
    if (!t) return null_tensor(who);
    if (kind != FILL_CONST && !kn_dtype_is_float(t->dtype))
        return kn__err(KN_EDTYPE, "%s: needs a floating tensor, got %s", who,
                       kn_dtype_name(t->dtype));
    int64_t n = kn__numel(t->ndim, t->shape);
    if (n == 0) return KN_OK; /* PyTorch: initialising a zero-element tensor is a no-op */
    uint64_t seed = 0, base = kind == FILL_CONST ? 0 : kn__rng_reserve((uint64_t)n, &seed);
    size_t es = kn_dtype_size(t->dtype);
    char *data = kn__ptr(t);
    bool contig = kn__is_contiguous(t);
    int64_t idx[KN_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        if (contig)
            off = i;
        else {
            for (int d = 0; d < t->ndim; d++)
                off += idx[d] * t->strides[d];
            for (int d = t->ndim - 1; d >= 0; d--) { /* advance the C-order multi-index */
                if (++idx[d] < t->shape[d]) break;
                idx[d] = 0;
            }
        }
        double v = a;
        if (kind == FILL_UNIFORM)
            v = a + (b - a) * u01(kn__rng_at(seed, base + (uint64_t)i));
        else if (kind == FILL_NORMAL)
            v = a + b * n01(kn__rng_at(seed, base + (uint64_t)i));
        kn__store_f64(t->dtype, data + (size_t)off * es, v);
    }
    return KN_OK;
}

kn_status kn_init_uniform_(kn_tensor *t, double a, double b) {
    if (!(a <= b) || !isfinite(a) || !isfinite(b))
        return kn__err(KN_EINVAL, "init_uniform_: expects a <= b (finite), got [%g, %g]", a, b);
    return fill("init_uniform_", t, FILL_UNIFORM, a, b);
}

kn_status kn_init_normal_(kn_tensor *t, double mean, double std) {
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
        return kn__err(KN_EINVAL,
                       "init_normal_: expects std >= 0 and finite values, got mean %g "
                       "std %g",
                       mean, std);
    return fill("init_normal_", t, FILL_NORMAL, mean, std);
}

kn_status kn_init_constant_(kn_tensor *t, double v) {
    return fill("init_constant_", t, FILL_CONST, v, 0);
}
kn_status kn_init_zeros_(kn_tensor *t) {
    return fill("init_zeros_", t, FILL_CONST, 0, 0);
}
kn_status kn_init_ones_(kn_tensor *t) {
    return fill("init_ones_", t, FILL_CONST, 1, 0);
}

/* torch.nn.init._calculate_fan_in_and_fan_out */
static kn_status fans(const char *who, const kn_tensor *t, int64_t *fan_in, int64_t *fan_out) {
    if (!t) return null_tensor(who);
    if (t->ndim < 2)
        return kn__err(KN_EINVAL,
                       "%s: fan in and fan out can not be computed for a tensor with "
                       "fewer than 2 dimensions (got %d)",
                       who, t->ndim);
    int64_t rf = 1;
    for (int d = 2; d < t->ndim; d++)
        rf *= t->shape[d];
    if (fan_in) *fan_in = t->shape[1] * rf;
    if (fan_out) *fan_out = t->shape[0] * rf;
    return KN_OK;
}

kn_status kn_init_fans(const kn_tensor *t, int64_t *fan_in, int64_t *fan_out) {
    return fans("init_fans", t, fan_in, fan_out);
}

static kn_status xavier(const char *who, kn_tensor *t, double gain, bool normal) {
    int64_t fi = 0, fo = 0;
    kn_status s = fans(who, t, &fi, &fo);
    if (s) return s;
    if (kn__numel(t->ndim, t->shape) == 0) return KN_OK;
    double std = gain * sqrt(2.0 / (double)(fi + fo));
    if (normal) return fill(who, t, FILL_NORMAL, 0.0, std);
    double a = sqrt(3.0) * std;
    return fill(who, t, FILL_UNIFORM, -a, a);
}
kn_status kn_init_xavier_uniform_(kn_tensor *t, double gain) {
    return xavier("init_xavier_uniform_", t, gain, false);
}
kn_status kn_init_xavier_normal_(kn_tensor *t, double gain) {
    return xavier("init_xavier_normal_", t, gain, true);
}

/* torch.nn.init.calculate_gain(nonlinearity, param=a); NULL means PyTorch's default
 * "leaky_relu". Returns NAN for an unknown name. */
static double gain_of(const char *nl, double a) {
    if (!nl) nl = "leaky_relu";
    static const char *one[] = {"linear",           "conv1d",           "conv2d",
                                "conv3d",           "conv_transpose1d", "conv_transpose2d",
                                "conv_transpose3d", "sigmoid",          "identity"};
    for (size_t i = 0; i < sizeof one / sizeof *one; i++)
        if (!strcmp(nl, one[i])) return 1.0;
    if (!strcmp(nl, "tanh")) return 5.0 / 3.0;
    if (!strcmp(nl, "relu")) return sqrt(2.0);
    if (!strcmp(nl, "leaky_relu")) return sqrt(2.0 / (1.0 + a * a));
    if (!strcmp(nl, "selu")) return 3.0 / 4.0;
    return NAN;
}

static kn_status kaiming(const char *who, kn_tensor *t, double a, kn_fan_mode mode, const char *nl,
                         bool normal) {
    if (!t) return null_tensor(who);
    if (kn__numel(t->ndim, t->shape) == 0) return KN_OK; /* PyTorch warns and returns */
    if (mode != KN_FAN_IN && mode != KN_FAN_OUT)
        return kn__err(KN_EINVAL, "%s: mode must be KN_FAN_IN or KN_FAN_OUT", who);
    double gain = gain_of(nl, a);
    if (isnan(gain)) return kn__err(KN_EINVAL, "%s: unsupported nonlinearity '%s'", who, nl);
    int64_t fi = 0, fo = 0;
    kn_status s = fans(who, t, &fi, &fo);
    if (s) return s;
    double std = gain / sqrt((double)(mode == KN_FAN_IN ? fi : fo));
    if (normal) return fill(who, t, FILL_NORMAL, 0.0, std);
    double bound = sqrt(3.0) * std;
    return fill(who, t, FILL_UNIFORM, -bound, bound);
}
kn_status kn_init_kaiming_uniform_(kn_tensor *t, double a, kn_fan_mode mode,
                                   const char *nonlinearity) {
    return kaiming("init_kaiming_uniform_", t, a, mode, nonlinearity, false);
}
kn_status kn_init_kaiming_normal_(kn_tensor *t, double a, kn_fan_mode mode,
                                  const char *nonlinearity) {
    return kaiming("init_kaiming_normal_", t, a, mode, nonlinearity, true);
}
