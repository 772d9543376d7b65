/*
 * kiln/ops.h - the operators, eager and differentiable.
 *
 * Every function here is a thin wrapper over one entry of the op registry (src/ops/): the same
 * entry serves eager mode, autograd, and later the graph compiler and ONNX. Each returns a new
 * tensor (see kiln/core.h for ownership) or NULL with kn_last_error() naming the op and shapes.
 *
 * Conventions (PyTorch semantics unless stated):
 *  - Binary ops broadcast NumPy-style and need both inputs of the same dtype (no implicit
 *    promotion; use kn_cast). Comparisons and logical ops return KN_BOOL.
 *  - Axes may be negative. `axes`/`naxes` with naxes == 0 means "all axes".
 *  - Float ops accept f32 and f64 (f16/bf16 storage is converted with kn_cast); integer dtypes
 *    are accepted where the op is meaningful on them (arithmetic, comparisons, max/min, shape ops).
 *  - View ops (reshape when strides allow, transpose, permute, slice, expand, squeeze, unsqueeze,
 *    detach) share storage with their input.
 *  - Ops ending in '_' work in place, return KN_OK or an error, and are never recorded by autograd:
 *    they refuse (KN_EMISUSE) a tensor that requires grad while grad mode is on.
 */
#ifndef KILN_OPS_H
#define KILN_OPS_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- generic entry: call any registered op by name (tests, graph, ONNX) ---- */
/* An attribute: integer list (kind KN_ATTR_INTS; a single int is a list of one) or a float. */
#define KN_MAX_ATTRS 8
#define KN_MAX_ATTR_INTS 16
typedef enum { KN_ATTR_INTS = 1, KN_ATTR_FLOAT = 2 } kn_attr_kind;
typedef struct kn_attr {
    char name[24];
    int kind;
    int n;
    int64_t ints[KN_MAX_ATTR_INTS];
    double f;
} kn_attr;
typedef struct kn_attrs {
    int n;
    kn_attr a[KN_MAX_ATTRS];
} kn_attrs;
kn_status kn_attrs_set_int(kn_attrs *a, const char *name, int64_t v);
kn_status kn_attrs_set_ints(kn_attrs *a, const char *name, const int64_t *v, int n);
kn_status kn_attrs_set_float(kn_attrs *a, const char *name, double v);
/* Runs op `name` on inputs; writes up to max_out outputs, returns how many (or < 0 status). */
int kn_op_call(const char *name, kn_tensor *const *inputs, int ninputs, const kn_attrs *attrs,
               kn_tensor **outputs, int max_out);
/* Registry listing (for docs/ops.md and tests). */
int kn_op_count(void);
const char *kn_op_name(int i);
/* Fills a one-line description: dtypes, differentiable, ONNX name. */
kn_status kn_op_describe(const char *name, char *buf, size_t len);

/* ---- copies, casts, views ---- */
kn_tensor *kn_clone(kn_tensor *t);      /* contiguous copy, differentiable */
kn_tensor *kn_contiguous(kn_tensor *t); /* t itself (+1 ref) when already contiguous */
kn_tensor *kn_cast(kn_tensor *t, kn_dtype dt);
kn_tensor *kn_reshape(kn_tensor *t, int ndim, const int64_t *shape); /* one -1 allowed */
kn_tensor *kn_flatten(kn_tensor *t, int start_dim, int end_dim);
kn_tensor *kn_transpose(kn_tensor *t, int dim0, int dim1);
kn_tensor *kn_permute(kn_tensor *t, const int *dims);
kn_tensor *kn_squeeze(kn_tensor *t, int dim); /* dim = KN_ALL_DIMS squeezes every size-1 dim */
kn_tensor *kn_unsqueeze(kn_tensor *t, int dim);
kn_tensor *kn_expand(kn_tensor *t, int ndim, const int64_t *shape); /* -1 keeps a dim */
/* Python slice semantics on one dim: t[..., start:end:step, ...]; step > 0; clamps like Python. */
kn_tensor *kn_slice(kn_tensor *t, int dim, int64_t start, int64_t end, int64_t step);
#define KN_ALL_DIMS 127
#define KN_SLICE_END INT64_MAX

/* ---- elementwise unary ---- */
kn_tensor *kn_neg(kn_tensor *x);
kn_tensor *kn_abs(kn_tensor *x);
kn_tensor *kn_sign(kn_tensor *x);
kn_tensor *kn_exp(kn_tensor *x);
kn_tensor *kn_log(kn_tensor *x);
kn_tensor *kn_log1p(kn_tensor *x);
kn_tensor *kn_sqrt(kn_tensor *x);
kn_tensor *kn_rsqrt(kn_tensor *x);
kn_tensor *kn_square(kn_tensor *x);
kn_tensor *kn_sin(kn_tensor *x);
kn_tensor *kn_cos(kn_tensor *x);
kn_tensor *kn_tanh(kn_tensor *x);
kn_tensor *kn_sigmoid(kn_tensor *x);
kn_tensor *kn_relu(kn_tensor *x);
kn_tensor *kn_relu6(kn_tensor *x);
kn_tensor *kn_leaky_relu(kn_tensor *x, double negative_slope); /* attr "negative_slope" */
kn_tensor *kn_elu(kn_tensor *x, double alpha);                 /* attr "alpha" */
kn_tensor *kn_gelu(kn_tensor *x, bool tanh_approx);            /* attr "approximate" 0/1 */
kn_tensor *kn_silu(kn_tensor *x);
kn_tensor *kn_softplus(kn_tensor *x, double beta, double threshold); /* attrs "beta","threshold" */
kn_tensor *kn_erf(kn_tensor *x);
kn_tensor *kn_reciprocal(kn_tensor *x);
kn_tensor *kn_floor(kn_tensor *x); /* floor/ceil/round: no gradient (round half to even) */
kn_tensor *kn_ceil(kn_tensor *x);
kn_tensor *kn_round(kn_tensor *x);
kn_tensor *kn_logical_not(kn_tensor *x); /* any dtype -> bool */
/* trigonometric and hyperbolic: NaN outside the domain (like libm) */
kn_tensor *kn_tan(kn_tensor *x);
kn_tensor *kn_asin(kn_tensor *x);
kn_tensor *kn_acos(kn_tensor *x);
kn_tensor *kn_atan(kn_tensor *x);
kn_tensor *kn_sinh(kn_tensor *x);
kn_tensor *kn_cosh(kn_tensor *x);
kn_tensor *kn_asinh(kn_tensor *x);
kn_tensor *kn_acosh(kn_tensor *x);
kn_tensor *kn_atanh(kn_tensor *x);

/* ---- elementwise binary (broadcasting) ---- */
kn_tensor *kn_add(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_sub(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_mul(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_div(kn_tensor *a, kn_tensor *b); /* true division; integer dtypes truncate */
kn_tensor *kn_pow(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_maximum(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_minimum(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_eq(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_ne(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_lt(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_le(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_gt(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_ge(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_logical_and(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_logical_or(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_where(kn_tensor *cond, kn_tensor *a, kn_tensor *b); /* cond bool, broadcasts */
/* clamp to [lo, hi]; pass NAN to leave a side open. attrs "min","max" (absent = open). */
kn_tensor *kn_clamp(kn_tensor *x, double lo, double hi);
/* scalar forms: the scalar is converted to x's dtype */
kn_tensor *kn_add_scalar(kn_tensor *x, double s);
kn_tensor *kn_mul_scalar(kn_tensor *x, double s);
kn_tensor *kn_pow_scalar(kn_tensor *x, double exponent);

/* ---- reductions (naxes == 0: all axes) ---- */
kn_tensor *kn_sum(kn_tensor *x, const int *axes, int naxes, bool keepdim);
kn_tensor *kn_mean(kn_tensor *x, const int *axes, int naxes, bool keepdim);
kn_tensor *kn_prod(kn_tensor *x, const int *axes, int naxes, bool keepdim);
kn_tensor *kn_amax(kn_tensor *x, const int *axes, int naxes, bool keepdim);
kn_tensor *kn_amin(kn_tensor *x, const int *axes, int naxes, bool keepdim);
/* max/min along one dim with indices (torch.max(x, dim)); *indices gets an i64 tensor. */
kn_tensor *kn_max_dim(kn_tensor *x, int dim, bool keepdim, kn_tensor **indices);
kn_tensor *kn_min_dim(kn_tensor *x, int dim, bool keepdim, kn_tensor **indices);
kn_tensor *kn_argmax(kn_tensor *x, int dim, bool keepdim); /* i64; first index of ties */
kn_tensor *kn_argmin(kn_tensor *x, int dim, bool keepdim);
kn_tensor *kn_var(kn_tensor *x, const int *axes, int naxes, int64_t correction, bool keepdim);
kn_tensor *kn_std(kn_tensor *x, const int *axes, int naxes, int64_t correction, bool keepdim);
kn_tensor *kn_logsumexp(kn_tensor *x, const int *axes, int naxes, bool keepdim);
kn_tensor *kn_norm(kn_tensor *x, double p, const int *axes, int naxes, bool keepdim); /* p>0 */

/* ---- linear algebra ---- */
/* torch.matmul: 1-D and N-D operands, batch dims broadcast. */
kn_tensor *kn_matmul(kn_tensor *a, kn_tensor *b);
/* y = x W^T + b; x (*, in), W (out, in), b (out) or NULL. */
kn_tensor *kn_linear(kn_tensor *x, kn_tensor *w, kn_tensor *b);

/* ---- convolution and pooling (NCHW / NCL) ---- */
typedef struct kn_conv_opts {
    int64_t stride[2];   /* 0 means 1 */
    int64_t padding[2];  /* ignored when same_padding */
    int64_t dilation[2]; /* 0 means 1 */
    int64_t groups;      /* 0 means 1 */
    bool same_padding;   /* padding='same' (stride must be 1) */
} kn_conv_opts;
/* x (N, Cin, L), w (Cout, Cin/groups, K), b (Cout) or NULL. Only [0] of the arrays is used. */
kn_tensor *kn_conv1d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const kn_conv_opts *o);
/* x (N, Cin, H, W), w (Cout, Cin/groups, KH, KW), b (Cout) or NULL. */
kn_tensor *kn_conv2d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const kn_conv_opts *o);
/* x (N, Cin, H, W), w (Cin, Cout/groups, KH, KW); output_padding per dim. */
kn_tensor *kn_conv_transpose2d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const kn_conv_opts *o,
                               const int64_t output_padding[2]);
typedef struct kn_pool_opts {
    int64_t kernel[2];
    int64_t stride[2]; /* 0 means = kernel */
    int64_t padding[2];
    int64_t dilation[2]; /* max pool only; 0 means 1 */
    bool ceil_mode;
    bool count_include_pad; /* avg pool only (PyTorch default true: set it) */
} kn_pool_opts;
/* indices (may be NULL): i64 flat index into each H*W plane, like PyTorch. */
kn_tensor *kn_max_pool2d(kn_tensor *x, const kn_pool_opts *o, kn_tensor **indices);
kn_tensor *kn_avg_pool2d(kn_tensor *x, const kn_pool_opts *o);
kn_tensor *kn_adaptive_avg_pool2d(kn_tensor *x, int64_t out_h, int64_t out_w);
kn_tensor *kn_global_avg_pool2d(kn_tensor *x); /* (N,C,H,W) -> (N,C,1,1) */

/* ---- normalisation ---- */
/* x (N, C, *). training: normalise with batch stats and update running_mean/var in place
 * (unbiased var, momentum like PyTorch; either may be NULL). eval: use running stats.
 * weight/bias (C) or NULL. */
kn_tensor *kn_batch_norm(kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var,
                         kn_tensor *weight, kn_tensor *bias, bool training, double momentum,
                         double eps);
/* normalises over the last `nnorm` dims; weight/bias of that shape or NULL. */
kn_tensor *kn_layer_norm(kn_tensor *x, int nnorm, kn_tensor *weight, kn_tensor *bias, double eps);
kn_tensor *kn_group_norm(kn_tensor *x, int64_t groups, kn_tensor *weight, kn_tensor *bias,
                         double eps);
kn_tensor *kn_softmax(kn_tensor *x, int dim);
kn_tensor *kn_log_softmax(kn_tensor *x, int dim);

/* ---- losses ---- */
typedef enum { KN_REDUCE_MEAN = 0, KN_REDUCE_SUM = 1, KN_REDUCE_NONE = 2 } kn_reduction;
typedef struct kn_loss_opts {
    kn_reduction reduction;
    int64_t ignore_index;   /* class-index targets equal to this are skipped; default -100 */
    bool has_ignore_index;  /* false: use -100 like PyTorch */
    double label_smoothing; /* cross_entropy only */
    double beta;            /* unused; kn_smooth_l1_loss takes beta (0 = plain L1, like PyTorch) */
    kn_tensor *weight;      /* per-class weight (C) or NULL (cross_entropy, nll) */
} kn_loss_opts;
/* logits (N, C) or (N, C, d...), target i64 class indices (N) / (N, d...). opts may be NULL. */
kn_tensor *kn_cross_entropy(kn_tensor *logits, kn_tensor *target, const kn_loss_opts *o);
kn_tensor *kn_nll_loss(kn_tensor *logp, kn_tensor *target, const kn_loss_opts *o);
kn_tensor *kn_mse_loss(kn_tensor *x, kn_tensor *y, kn_reduction r);
kn_tensor *kn_l1_loss(kn_tensor *x, kn_tensor *y, kn_reduction r);
kn_tensor *kn_smooth_l1_loss(kn_tensor *x, kn_tensor *y, kn_reduction r, double beta);
kn_tensor *kn_binary_cross_entropy(kn_tensor *p, kn_tensor *y, kn_reduction r);
kn_tensor *kn_binary_cross_entropy_with_logits(kn_tensor *x, kn_tensor *y, kn_reduction r);

/* ---- dropout, embedding ---- */
/* Draws its mask from the global generator; identity when !training or p == 0. */
kn_tensor *kn_dropout(kn_tensor *x, double p, bool training);
kn_tensor *kn_embedding(kn_tensor *weight, kn_tensor *indices); /* indices i32/i64 */

/* ---- joining, splitting, indexing ---- */
kn_tensor *kn_concat(kn_tensor *const *ts, int n, int dim);
kn_tensor *kn_stack(kn_tensor *const *ts, int n, int dim);
/* split into pieces of `size` along dim (last may be smaller); writes up to max_out tensors and
 * returns the count (< 0: status). chunk: `chunks` nearly equal pieces like torch.chunk. */
int kn_split(kn_tensor *t, int64_t size, int dim, kn_tensor **out, int max_out);
int kn_chunk(kn_tensor *t, int chunks, int dim, kn_tensor **out, int max_out);
kn_tensor *kn_gather(kn_tensor *x, int dim, kn_tensor *index);      /* index i64 */
kn_tensor *kn_scatter_add(kn_tensor *x, int dim, kn_tensor *index, kn_tensor *src);
kn_tensor *kn_index_select(kn_tensor *x, int dim, kn_tensor *index); /* index 1-D i64/i32 */
typedef enum { KN_PAD_CONSTANT = 0, KN_PAD_REFLECT = 1 } kn_pad_mode;
/* pads like torch.nn.functional.pad: pads = {last_lo, last_hi, prev_lo, prev_hi, ...}, npads
 * even */
kn_tensor *kn_pad(kn_tensor *x, const int64_t *pads, int npads, kn_pad_mode mode, double value);
kn_tensor *kn_repeat(kn_tensor *x, int n, const int64_t *repeats); /* n >= ndim */
kn_tensor *kn_tril(kn_tensor *x, int64_t k);
kn_tensor *kn_triu(kn_tensor *x, int64_t k);
kn_tensor *kn_one_hot(kn_tensor *indices, int64_t num_classes); /* i64 out; -1 classes: infer */

/* ---- in place, never recorded ---- */
kn_status kn_copy_(kn_tensor *dst, kn_tensor *src); /* broadcasts src, casts dtype */
kn_status kn_fill_(kn_tensor *t, double v);
kn_status kn_zero_(kn_tensor *t);
kn_status kn_add_(kn_tensor *t, kn_tensor *src, double alpha); /* t += alpha * src */
kn_status kn_mul_scalar_(kn_tensor *t, double s);

#ifdef __cplusplus
}
#endif
#endif
