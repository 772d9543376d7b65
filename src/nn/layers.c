/*
 * layers.c - the built-in layers of kiln/nn.h (torch.nn's Linear, Conv1d/2d, ConvTranspose2d,
 * BatchNorm1d/2d, LayerNorm, GroupNorm, Dropout, Embedding, pools, Flatten, activations).
 *
 * Each layer is a module made with kn_module_new whose state is one `layer` record (its
 * configuration and borrowed pointers to its own parameters and buffers). Names, registration
 * order, defaults, initialisation and repr follow PyTorch; forward calls the public ops.
 *
 * Not here: the module tree (module.c), Sequential (module.c), the initialisers (init.c).
 *
 * Invariants: parameters are f32 leaves allocated outside any scope (kn__tensor_alloc) and
 * registered before they are initialised; the layer record's tensor pointers stay valid for the
 * module's lifetime because the module owns those tensors.
 */
#include <math.h>
#include <stdio.h>

#include "nn/nn_impl.h"

typedef enum {
    L_LINEAR,
    L_CONV1D,
    L_CONV2D,
    L_CONVT2D,
    L_BN1D,
    L_BN2D,
    L_LAYERNORM,
    L_GROUPNORM,
    L_DROPOUT,
    L_EMBEDDING,
    L_MAXPOOL,
    L_AVGPOOL,
    L_ADAPTIVE,
    L_FLATTEN,
    L_RELU,
    L_RELU6,
    L_LEAKY,
    L_ELU,
    L_GELU,
    L_SILU,
    L_SIGMOID,
    L_TANH,
    L_SOFTMAX,
    L_LOGSOFTMAX,
    L_IDENTITY,
} layer_kind;

typedef struct layer {
    layer_kind kind;
    int64_t in, out;    /* features / channels / (num_embeddings, dim) / (groups, channels) */
    kn_conv_opts conv;  /* normalised: stride, dilation, groups >= 1 */
    int64_t kernel[2];  /* conv kernel; [1] unused for Conv1d */
    int64_t out_pad[2]; /* ConvTranspose2d */
    kn_pool_opts pool;  /* normalised: stride, dilation >= 1 */
    int64_t out_hw[2];  /* AdaptiveAvgPool2d */
    int nnorm;          /* LayerNorm */
    int64_t norm_shape[KN_MAX_DIMS];
    double eps, momentum, p; /* p: dropout probability, slope, alpha */
    int dim0, dim1;          /* Flatten start/end, Softmax dim */
    bool flag;               /* bias present / affine / gelu tanh */
    kn_tensor *weight, *bias, *running_mean, *running_var, *num_batches;
} layer;

static void layer_free(void *p) {
    kn__free(p);
}

static const char *type_name(layer_kind k) {
    static const char *names[] = {
        [L_LINEAR] = "Linear",
        [L_CONV1D] = "Conv1d",
        [L_CONV2D] = "Conv2d",
        [L_CONVT2D] = "ConvTranspose2d",
        [L_BN1D] = "BatchNorm1d",
        [L_BN2D] = "BatchNorm2d",
        [L_LAYERNORM] = "LayerNorm",
        [L_GROUPNORM] = "GroupNorm",
        [L_DROPOUT] = "Dropout",
        [L_EMBEDDING] = "Embedding",
        [L_MAXPOOL] = "MaxPool2d",
        [L_AVGPOOL] = "AvgPool2d",
        [L_ADAPTIVE] = "AdaptiveAvgPool2d",
        [L_FLATTEN] = "Flatten",
        [L_RELU] = "ReLU",
        [L_RELU6] = "ReLU6",
        [L_LEAKY] = "LeakyReLU",
        [L_ELU] = "ELU",
        [L_GELU] = "GELU",
        [L_SILU] = "SiLU",
        [L_SIGMOID] = "Sigmoid",
        [L_TANH] = "Tanh",
        [L_SOFTMAX] = "Softmax",
        [L_LOGSOFTMAX] = "LogSoftmax",
        [L_IDENTITY] = "Identity",
    };
    return names[k];
}

/* ---------------------------------------------------------------------------------------- */
/* repr (PyTorch's extra_repr)                                                              */

static const char *tf(bool b) {
    return b ? "True" : "False";
}

/* "(5, 5)" / "(3,)" for n values */
static const char *tup(char *buf, size_t len, const int64_t *v, int n) {
    if (n == 1)
        snprintf(buf, len, "(%lld,)", (long long)v[0]);
    else {
        size_t k = (size_t)snprintf(buf, len, "(");
        for (int i = 0; i < n && k < len; i++)
            k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)v[i]);
        if (k < len) snprintf(buf + k, len - k, ")");
    }
    return buf;
}
/* a pool size: the int when both sides agree (how these are usually given), else a tuple */
static const char *pair(char *buf, size_t len, const int64_t v[2]) {
    if (v[0] == v[1])
        snprintf(buf, len, "%lld", (long long)v[0]);
    else
        tup(buf, len, v, 2);
    return buf;
}

static void layer_repr(kn_module *m, char *buf, size_t len) {
    const layer *L = kn_module_state(m);
    char a[128], b[128], c[128], d[128];
    buf[0] = 0;
    switch (L->kind) {
    case L_LINEAR:
        snprintf(buf, len, "in_features=%lld, out_features=%lld, bias=%s", (long long)L->in,
                 (long long)L->out, tf(L->flag));
        break;
    case L_CONV1D:
    case L_CONV2D:
    case L_CONVT2D: {
        int n = L->kind == L_CONV1D ? 1 : 2;
        size_t k = (size_t)snprintf(
            buf, len, "%lld, %lld, kernel_size=%s, stride=%s", (long long)L->in, (long long)L->out,
            tup(a, sizeof a, L->kernel, n), tup(b, sizeof b, L->conv.stride, n));
        bool pad0 = true, dil1 = true, op0 = true;
        for (int i = 0; i < n; i++) {
            pad0 &= L->conv.padding[i] == 0;
            dil1 &= L->conv.dilation[i] == 1;
            op0 &= L->out_pad[i] == 0;
        }
        if (k < len && L->conv.same_padding)
            k += (size_t)snprintf(buf + k, len - k, ", padding=same");
        else if (k < len && !pad0)
            k += (size_t)snprintf(buf + k, len - k, ", padding=%s",
                                  tup(a, sizeof a, L->conv.padding, n));
        if (k < len && !dil1)
            k += (size_t)snprintf(buf + k, len - k, ", dilation=%s",
                                  tup(a, sizeof a, L->conv.dilation, n));
        if (k < len && !op0)
            k += (size_t)snprintf(buf + k, len - k, ", output_padding=%s",
                                  tup(a, sizeof a, L->out_pad, n));
        if (k < len && L->conv.groups != 1)
            k += (size_t)snprintf(buf + k, len - k, ", groups=%lld", (long long)L->conv.groups);
        if (k < len && !L->flag) snprintf(buf + k, len - k, ", bias=False");
        break;
    }
    case L_BN1D:
    case L_BN2D:
        snprintf(buf, len, "%lld, eps=%s, momentum=%s, affine=True, track_running_stats=True",
                 (long long)L->in, kn__py_float(a, sizeof a, L->eps),
                 kn__py_float(b, sizeof b, L->momentum));
        break;
    case L_LAYERNORM:
        snprintf(buf, len, "%s, eps=%s, elementwise_affine=%s",
                 tup(a, sizeof a, L->norm_shape, L->nnorm), kn__py_float(b, sizeof b, L->eps),
                 tf(L->flag));
        break;
    case L_GROUPNORM:
        snprintf(buf, len, "%lld, %lld, eps=%s, affine=%s", (long long)L->in, (long long)L->out,
                 kn__py_float(a, sizeof a, L->eps), tf(L->flag));
        break;
    case L_DROPOUT:
        snprintf(buf, len, "p=%s, inplace=False", kn__py_float(a, sizeof a, L->p));
        break;
    case L_EMBEDDING: snprintf(buf, len, "%lld, %lld", (long long)L->in, (long long)L->out); break;
    case L_MAXPOOL:
        snprintf(buf, len, "kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s",
                 pair(a, sizeof a, L->pool.kernel), pair(b, sizeof b, L->pool.stride),
                 pair(c, sizeof c, L->pool.padding), pair(d, sizeof d, L->pool.dilation),
                 tf(L->pool.ceil_mode));
        break;
    case L_AVGPOOL:
        snprintf(buf, len, "kernel_size=%s, stride=%s, padding=%s",
                 pair(a, sizeof a, L->pool.kernel), pair(b, sizeof b, L->pool.stride),
                 pair(c, sizeof c, L->pool.padding));
        break;
    case L_ADAPTIVE: snprintf(buf, len, "output_size=%s", tup(a, sizeof a, L->out_hw, 2)); break;
    case L_FLATTEN: snprintf(buf, len, "start_dim=%d, end_dim=%d", L->dim0, L->dim1); break;
    case L_LEAKY: snprintf(buf, len, "negative_slope=%s", kn__py_float(a, sizeof a, L->p)); break;
    case L_ELU: snprintf(buf, len, "alpha=%s", kn__py_float(a, sizeof a, L->p)); break;
    case L_GELU: snprintf(buf, len, "approximate='%s'", L->flag ? "tanh" : "none"); break;
    case L_SOFTMAX:
    case L_LOGSOFTMAX: snprintf(buf, len, "dim=%d", L->dim0); break;
    default: break; /* ReLU(), Sigmoid(), ... */
    }
}

/* ---------------------------------------------------------------------------------------- */
/* forward                                                                                  */

static kn_tensor *forward_batched(kn_module *m, layer *L, kn_tensor *x);

static kn_tensor *layer_forward(kn_module *m, kn_tensor *x) {
    layer *L = kn_module_state(m);
    const char *who = type_name(L->kind);
    char s1[128];
    int batched = L->kind == L_CONV1D ? 3 : (L->kind == L_CONV2D || L->kind == L_CONVT2D) ? 4 : 0;
    if (batched) {
        if (x->ndim != batched && x->ndim != batched - 1)
            return kn__errp(KN_ESHAPE,
                            "%s: expected %d-D (unbatched) or %d-D (batched) input, "
                            "got %s",
                            who, batched - 1, batched,
                            kn__shape_str(s1, sizeof s1, x->ndim, x->shape));
        int64_t c = x->shape[x->ndim - batched + 1];
        if (c != L->in)
            return kn__errp(KN_ESHAPE,
                            "%s: input %s has %lld channels, expected in_channels "
                            "%lld",
                            who, kn__shape_str(s1, sizeof s1, x->ndim, x->shape), (long long)c,
                            (long long)L->in);
        if (x->ndim == batched - 1) { /* unbatched, like PyTorch: add and drop the batch dim */
            kn_scope sc = kn_scope_begin();
            kn_tensor *y = forward_batched(m, L, kn_unsqueeze(x, 0));
            y = kn_keep(kn_squeeze(y, 0));
            kn_scope_end(sc);
            return y;
        }
    }
    return forward_batched(m, L, x);
}

static kn_tensor *batch_norm_forward(kn_module *m, layer *L, kn_tensor *x) {
    const char *who = type_name(L->kind);
    char s1[128];
    bool ok = L->kind == L_BN2D ? x->ndim == 4 : (x->ndim == 2 || x->ndim == 3);
    if (!ok)
        return kn__errp(KN_ESHAPE, "%s: expected %s input (got %dD input %s)", who,
                        L->kind == L_BN2D ? "4D" : "2D or 3D", x->ndim,
                        kn__shape_str(s1, sizeof s1, x->ndim, x->shape));
    if (x->shape[1] != L->in)
        return kn__errp(KN_ESHAPE, "%s: input %s has %lld channels, expected num_features %lld",
                        who, kn__shape_str(s1, sizeof s1, x->ndim, x->shape),
                        (long long)x->shape[1], (long long)L->in);
    bool training = kn_module_is_training(m);
    kn_tensor *y = kn_batch_norm(x, L->running_mean, L->running_var, L->weight, L->bias, training,
                                 L->momentum, L->eps);
    if (y && training) (*(int64_t *)kn__ptr(L->num_batches))++; /* like PyTorch's add_(1) */
    return y;
}

static kn_tensor *forward_batched(kn_module *m, layer *L, kn_tensor *x) {
    const char *who = type_name(L->kind);
    char s1[128], s2[128];
    if (!x) return NULL;
    switch (L->kind) {
    case L_LINEAR:
        if (x->ndim < 1 || x->shape[x->ndim - 1] != L->in)
            return kn__errp(KN_ESHAPE, "Linear: input %s last dim != in_features %lld",
                            kn__shape_str(s1, sizeof s1, x->ndim, x->shape), (long long)L->in);
        return kn_linear(x, L->weight, L->bias);
    case L_CONV1D: return kn_conv1d(x, L->weight, L->bias, &L->conv);
    case L_CONV2D: return kn_conv2d(x, L->weight, L->bias, &L->conv);
    case L_CONVT2D: return kn_conv_transpose2d(x, L->weight, L->bias, &L->conv, L->out_pad);
    case L_BN1D:
    case L_BN2D: return batch_norm_forward(m, L, x);
    case L_LAYERNORM: {
        bool ok = x->ndim >= L->nnorm;
        for (int i = 0; ok && i < L->nnorm; i++)
            ok = x->shape[x->ndim - L->nnorm + i] == L->norm_shape[i];
        if (!ok)
            return kn__errp(KN_ESHAPE, "LayerNorm: input %s does not end with normalized_shape %s",
                            kn__shape_str(s1, sizeof s1, x->ndim, x->shape),
                            tup(s2, sizeof s2, L->norm_shape, L->nnorm));
        return kn_layer_norm(x, L->nnorm, L->weight, L->bias, L->eps);
    }
    case L_GROUPNORM:
        if (x->ndim < 2 || x->shape[1] != L->out)
            return kn__errp(KN_ESHAPE, "GroupNorm: input %s, expected (N, %lld, *)",
                            kn__shape_str(s1, sizeof s1, x->ndim, x->shape), (long long)L->out);
        return kn_group_norm(x, L->in, L->weight, L->bias, L->eps);
    case L_DROPOUT: return kn_dropout(x, L->p, kn_module_is_training(m));
    case L_EMBEDDING: return kn_embedding(L->weight, x);
    case L_MAXPOOL: return kn_max_pool2d(x, &L->pool, NULL);
    case L_AVGPOOL: return kn_avg_pool2d(x, &L->pool);
    case L_ADAPTIVE: return kn_adaptive_avg_pool2d(x, L->out_hw[0], L->out_hw[1]);
    case L_FLATTEN: return kn_flatten(x, L->dim0, L->dim1);
    case L_RELU: return kn_relu(x);
    case L_RELU6: return kn_relu6(x);
    case L_LEAKY: return kn_leaky_relu(x, L->p);
    case L_ELU: return kn_elu(x, L->p);
    case L_GELU: return kn_gelu(x, L->flag);
    case L_SILU: return kn_silu(x);
    case L_SIGMOID: return kn_sigmoid(x);
    case L_TANH: return kn_tanh(x);
    case L_SOFTMAX: return kn_softmax(x, L->dim0);
    case L_LOGSOFTMAX: return kn_log_softmax(x, L->dim0);
    case L_IDENTITY: return kn__scope_adopt(kn_tensor_retain(x));
    }
    return kn__errp(KN_EINTERNAL, "%s: unknown layer kind", who);
}

/* ---------------------------------------------------------------------------------------- */
/* construction                                                                             */

static kn_module *make(layer_kind kind, const layer *cfg) {
    layer *L = kn__malloc(sizeof *L);
    if (!L) return NULL;
    *L = *cfg;
    L->kind = kind;
    kn_module *m = kn_module_new(type_name(kind), layer_forward, L, layer_free);
    if (m) kn__module_set_repr(m, layer_repr);
    return m;
}

/* Registers a new f32 parameter / buffer (outside any scope); returns it borrowed or NULL. */
static kn_tensor *new_tensor(kn_module *m, const char *name, bool param, kn_dtype dt, int nd,
                             const int64_t *shape) {
    kn_tensor *t = kn__tensor_alloc(dt, nd, shape);
    if (!t) return NULL;
    kn_status s = param ? kn__module_own_param(m, name, t) : kn__module_own_buffer(m, name, t);
    return s ? NULL : t;
}

/* PyTorch's Linear/_ConvNd.reset_parameters: kaiming_uniform_(w, a=sqrt(5)), then the bias
 * from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (0 when fan_in is 0). */
static kn_status reset_linear_like(layer *L) {
    kn_status s = kn_init_kaiming_uniform_(L->weight, sqrt(5.0), KN_FAN_IN, "leaky_relu");
    if (s || !L->bias) return s;
    int64_t fan_in = 0;
    if ((s = kn_init_fans(L->weight, &fan_in, NULL))) return s;
    double bound = fan_in > 0 ? 1.0 / sqrt((double)fan_in) : 0.0;
    return kn_init_uniform_(L->bias, -bound, bound);
}

static kn_module *with_weight_bias(kn_module *m, int nd, const int64_t *wshape, bool bias,
                                   int64_t nbias) {
    if (!m) return NULL;
    layer *L = kn_module_state(m);
    if (!(L->weight = new_tensor(m, "weight", true, KN_F32, nd, wshape))) goto fail;
    if (bias && !(L->bias = new_tensor(m, "bias", true, KN_F32, 1, &nbias))) goto fail;
    if (reset_linear_like(L)) goto fail;
    return m;
fail:
    kn_module_free(m);
    return NULL;
}

kn_module *kn_nn_linear(int64_t in_features, int64_t out_features, bool bias) {
    if (in_features < 0 || out_features < 0)
        return kn__errp(KN_EINVAL, "Linear: in_features %lld and out_features %lld must be >= 0",
                        (long long)in_features, (long long)out_features);
    layer cfg = {.in = in_features, .out = out_features, .flag = bias};
    int64_t ws[2] = {out_features, in_features};
    return with_weight_bias(make(L_LINEAR, &cfg), 2, ws, bias, out_features);
}

/* Validates and normalises conv options for a layer with n spatial dims. */
static kn_status conv_cfg(const char *who, int n, int64_t in, int64_t out, const int64_t *k,
                          const kn_conv_opts *o, bool transposed, layer *cfg) {
    kn_conv_opts c = o ? *o : (kn_conv_opts){0};
    if (in < 1 || out < 1)
        return kn__err(KN_EINVAL, "%s: in_channels %lld and out_channels %lld must be >= 1", who,
                       (long long)in, (long long)out);
    if (c.groups == 0) c.groups = 1;
    if (c.groups < 0 || in % c.groups || out % c.groups)
        return kn__err(KN_EINVAL,
                       "%s: in_channels %lld and out_channels %lld must be divisible "
                       "by groups %lld",
                       who, (long long)in, (long long)out, (long long)c.groups);
    for (int i = 0; i < n; i++) {
        if (k[i] < 1)
            return kn__err(KN_EINVAL, "%s: kernel size %lld must be >= 1", who, (long long)k[i]);
        if (c.stride[i] == 0) c.stride[i] = 1;
        if (c.dilation[i] == 0) c.dilation[i] = 1;
        if (c.stride[i] < 0 || c.dilation[i] < 0 || c.padding[i] < 0)
            return kn__err(KN_EINVAL, "%s: stride, padding and dilation must be >= 0", who);
        if (c.same_padding && c.stride[i] != 1)
            return kn__err(KN_EINVAL,
                           "%s: padding='same' is not supported for strided "
                           "convolutions",
                           who);
    }
    if (transposed && c.same_padding)
        return kn__err(KN_EINVAL, "%s: padding='same' is not supported", who);
    if (c.same_padding)
        for (int i = 0; i < 2; i++)
            c.padding[i] = 0;
    if (n == 1) { /* only [0] is used; keep [1] neutral */
        c.stride[1] = c.dilation[1] = 1;
        c.padding[1] = 0;
    }
    cfg->in = in;
    cfg->out = out;
    cfg->conv = c;
    cfg->kernel[0] = k[0];
    cfg->kernel[1] = n == 2 ? k[1] : 1;
    return KN_OK;
}

kn_module *kn_nn_conv1d(int64_t in_ch, int64_t out_ch, int64_t kernel, const kn_conv_opts *o,
                        bool bias) {
    layer cfg = {.flag = bias};
    if (conv_cfg("Conv1d", 1, in_ch, out_ch, &kernel, o, false, &cfg)) return NULL;
    int64_t ws[3] = {out_ch, in_ch / cfg.conv.groups, kernel};
    return with_weight_bias(make(L_CONV1D, &cfg), 3, ws, bias, out_ch);
}

kn_module *kn_nn_conv2d(int64_t in_ch, int64_t out_ch, int64_t kh, int64_t kw,
                        const kn_conv_opts *o, bool bias) {
    layer cfg = {.flag = bias};
    int64_t k[2] = {kh, kw};
    if (conv_cfg("Conv2d", 2, in_ch, out_ch, k, o, false, &cfg)) return NULL;
    int64_t ws[4] = {out_ch, in_ch / cfg.conv.groups, kh, kw};
    return with_weight_bias(make(L_CONV2D, &cfg), 4, ws, bias, out_ch);
}

kn_module *kn_nn_conv_transpose2d(int64_t in_ch, int64_t out_ch, int64_t kh, int64_t kw,
                                  const kn_conv_opts *o, const int64_t output_padding[2],
                                  bool bias) {
    layer cfg = {.flag = bias};
    int64_t k[2] = {kh, kw};
    if (conv_cfg("ConvTranspose2d", 2, in_ch, out_ch, k, o, true, &cfg)) return NULL;
    for (int i = 0; i < 2; i++) {
        cfg.out_pad[i] = output_padding ? output_padding[i] : 0;
        int64_t lim =
            cfg.conv.stride[i] > cfg.conv.dilation[i] ? cfg.conv.stride[i] : cfg.conv.dilation[i];
        if (cfg.out_pad[i] < 0 || cfg.out_pad[i] >= lim)
            return kn__errp(KN_EINVAL,
                            "ConvTranspose2d: output_padding %lld must be >= 0 and "
                            "smaller than either stride or dilation",
                            (long long)cfg.out_pad[i]);
    }
    /* weight (in, out/groups, kh, kw): fan_in = out/groups * kh * kw, as PyTorch computes it */
    int64_t ws[4] = {in_ch, out_ch / cfg.conv.groups, kh, kw};
    return with_weight_bias(make(L_CONVT2D, &cfg), 4, ws, bias, out_ch);
}

static kn_module *batchnorm(layer_kind kind, int64_t features, double eps, double momentum) {
    const char *who = type_name(kind);
    if (features < 1)
        return kn__errp(KN_EINVAL, "%s: num_features %lld must be >= 1", who, (long long)features);
    if (!(eps >= 0)) return kn__errp(KN_EINVAL, "%s: eps %g must be >= 0", who, eps);
    if (!isfinite(momentum))
        return kn__errp(KN_EINVAL, "%s: momentum %g must be finite", who, momentum);
    layer cfg = {.in = features, .eps = eps, .momentum = momentum, .flag = true};
    kn_module *m = make(kind, &cfg);
    if (!m) return NULL;
    layer *L = kn_module_state(m);
    /* PyTorch's _NormBase order: weight, bias, running_mean, running_var, num_batches_tracked */
    if (!(L->weight = new_tensor(m, "weight", true, KN_F32, 1, &features)) ||
        !(L->bias = new_tensor(m, "bias", true, KN_F32, 1, &features)) ||
        !(L->running_mean = new_tensor(m, "running_mean", false, KN_F32, 1, &features)) ||
        !(L->running_var = new_tensor(m, "running_var", false, KN_F32, 1, &features)) ||
        !(L->num_batches = new_tensor(m, "num_batches_tracked", false, KN_I64, 0, NULL)))
        goto fail;
    kn_init_ones_(L->weight);
    kn_init_zeros_(L->bias);
    kn_init_zeros_(L->running_mean);
    kn_init_ones_(L->running_var);
    kn_init_zeros_(L->num_batches);
    return m;
fail:
    kn_module_free(m);
    return NULL;
}
kn_module *kn_nn_batchnorm1d(int64_t features, double eps, double momentum) {
    return batchnorm(L_BN1D, features, eps, momentum);
}
kn_module *kn_nn_batchnorm2d(int64_t features, double eps, double momentum) {
    return batchnorm(L_BN2D, features, eps, momentum);
}

/* weight ones, bias zeros of the given shape (LayerNorm / GroupNorm with affine) */
static kn_module *affine_ones_zeros(kn_module *m, int nd, const int64_t *shape) {
    if (!m) return NULL;
    layer *L = kn_module_state(m);
    if (!(L->weight = new_tensor(m, "weight", true, KN_F32, nd, shape)) ||
        !(L->bias = new_tensor(m, "bias", true, KN_F32, nd, shape))) {
        kn_module_free(m);
        return NULL;
    }
    kn_init_ones_(L->weight);
    kn_init_zeros_(L->bias);
    return m;
}

kn_module *kn_nn_layernorm(int nnorm, const int64_t *normalized_shape, double eps, bool affine) {
    if (nnorm < 1 || nnorm > KN_MAX_DIMS || !normalized_shape)
        return kn__errp(KN_EINVAL, "LayerNorm: normalized_shape needs 1 to %d dims, got %d",
                        KN_MAX_DIMS, nnorm);
    if (!(eps >= 0)) return kn__errp(KN_EINVAL, "LayerNorm: eps %g must be >= 0", eps);
    layer cfg = {.nnorm = nnorm, .eps = eps, .flag = affine};
    for (int i = 0; i < nnorm; i++) {
        if (normalized_shape[i] < 1)
            return kn__errp(KN_EINVAL, "LayerNorm: normalized_shape sizes must be >= 1");
        cfg.norm_shape[i] = normalized_shape[i];
    }
    kn_module *m = make(L_LAYERNORM, &cfg);
    return affine ? affine_ones_zeros(m, nnorm, normalized_shape) : m;
}

kn_module *kn_nn_groupnorm(int64_t groups, int64_t channels, double eps, bool affine) {
    if (groups < 1 || channels < 1 || channels % groups)
        return kn__errp(KN_EINVAL,
                        "GroupNorm: num_channels %lld must be divisible by num_groups "
                        "%lld (both >= 1)",
                        (long long)channels, (long long)groups);
    if (!(eps >= 0)) return kn__errp(KN_EINVAL, "GroupNorm: eps %g must be >= 0", eps);
    layer cfg = {.in = groups, .out = channels, .eps = eps, .flag = affine};
    kn_module *m = make(L_GROUPNORM, &cfg);
    return affine ? affine_ones_zeros(m, 1, &channels) : m;
}

kn_module *kn_nn_dropout(double p) {
    if (!(p >= 0 && p <= 1))
        return kn__errp(KN_EINVAL, "Dropout: probability has to be between 0 and 1, but got %g", p);
    layer cfg = {.p = p};
    return make(L_DROPOUT, &cfg);
}

kn_module *kn_nn_embedding(int64_t num_embeddings, int64_t dim) {
    if (num_embeddings < 0 || dim < 0)
        return kn__errp(KN_EINVAL,
                        "Embedding: num_embeddings %lld and embedding_dim %lld must "
                        "be >= 0",
                        (long long)num_embeddings, (long long)dim);
    layer cfg = {.in = num_embeddings, .out = dim};
    kn_module *m = make(L_EMBEDDING, &cfg);
    if (!m) return NULL;
    layer *L = kn_module_state(m);
    int64_t ws[2] = {num_embeddings, dim};
    if (!(L->weight = new_tensor(m, "weight", true, KN_F32, 2, ws)) ||
        kn_init_normal_(L->weight, 0.0, 1.0)) {
        kn_module_free(m);
        return NULL;
    }
    return m;
}

static kn_module *pool(layer_kind kind, const kn_pool_opts *o) {
    const char *who = type_name(kind);
    if (!o) return kn__errp(KN_EINVAL, "%s: options are required (kernel size)", who);
    kn_pool_opts p = *o;
    for (int i = 0; i < 2; i++) {
        if (p.kernel[i] < 1)
            return kn__errp(KN_EINVAL, "%s: kernel size %lld must be >= 1", who,
                            (long long)p.kernel[i]);
        if (p.stride[i] == 0) p.stride[i] = p.kernel[i];
        if (p.dilation[i] == 0) p.dilation[i] = 1;
        if (p.stride[i] < 0 || p.padding[i] < 0 || p.dilation[i] < 0)
            return kn__errp(KN_EINVAL, "%s: stride, padding and dilation must be >= 0", who);
        if (p.padding[i] * 2 > p.kernel[i])
            return kn__errp(KN_EINVAL,
                            "%s: pad should be at most half of effective kernel size, "
                            "but got pad=%lld, kernel_size=%lld",
                            who, (long long)p.padding[i], (long long)p.kernel[i]);
    }
    layer cfg = {.pool = p};
    return make(kind, &cfg);
}
kn_module *kn_nn_maxpool2d(const kn_pool_opts *o) {
    return pool(L_MAXPOOL, o);
}
kn_module *kn_nn_avgpool2d(const kn_pool_opts *o) {
    return pool(L_AVGPOOL, o);
}

kn_module *kn_nn_adaptive_avgpool2d(int64_t out_h, int64_t out_w) {
    if (out_h < 1 || out_w < 1)
        return kn__errp(KN_EINVAL, "AdaptiveAvgPool2d: output size (%lld, %lld) must be >= 1",
                        (long long)out_h, (long long)out_w);
    layer cfg = {.out_hw = {out_h, out_w}};
    return make(L_ADAPTIVE, &cfg);
}

kn_module *kn_nn_flatten(int start_dim, int end_dim) {
    layer cfg = {.dim0 = start_dim, .dim1 = end_dim};
    return make(L_FLATTEN, &cfg);
}

static kn_module *simple(layer_kind kind, double p, bool flag, int dim) {
    layer cfg = {.p = p, .flag = flag, .dim0 = dim};
    return make(kind, &cfg);
}
kn_module *kn_nn_relu(void) {
    return simple(L_RELU, 0, false, 0);
}
kn_module *kn_nn_relu6(void) {
    return simple(L_RELU6, 0, false, 0);
}
kn_module *kn_nn_leaky_relu(double negative_slope) {
    return simple(L_LEAKY, negative_slope, false, 0);
}
kn_module *kn_nn_elu(double alpha) {
    return simple(L_ELU, alpha, false, 0);
}
kn_module *kn_nn_gelu(bool tanh_approx) {
    return simple(L_GELU, 0, tanh_approx, 0);
}
kn_module *kn_nn_silu(void) {
    return simple(L_SILU, 0, false, 0);
}
kn_module *kn_nn_sigmoid(void) {
    return simple(L_SIGMOID, 0, false, 0);
}
kn_module *kn_nn_tanh(void) {
    return simple(L_TANH, 0, false, 0);
}
kn_module *kn_nn_softmax(int dim) {
    return simple(L_SOFTMAX, 0, false, dim);
}
kn_module *kn_nn_log_softmax(int dim) {
    return simple(L_LOGSOFTMAX, 0, false, dim);
}
kn_module *kn_nn_identity(void) {
    return simple(L_IDENTITY, 0, false, 0);
}
