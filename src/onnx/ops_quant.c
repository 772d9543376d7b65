/*
 * ops_quant.c - ONNX quantization ops onto kiln's: QuantizeLinear and DequantizeLinear (per-tensor
 * and per-axis scale / zero point, uint8 and int8), DynamicQuantizeLinear (uint8), MatMulInteger,
 * ConvInteger, QLinearMatMul and QLinearConv.
 *
 * kiln has no integer compute kernels: everything runs in floating point on the values minus
 * their zero points, with ONNX's rounding (half to even) and saturation before the cast to the
 * quantized dtype. The integer matmul / conv sums run in f32, where a sum of products of 8-bit
 * values is exact while it stays below 2^24 (reductions of at most 258 terms); longer reductions
 * run in f64, which keeps the int32 result exact. The Q-linear ops requantize in f64 like ONNX's
 * reference (int32 accumulator times an f32 multiplier is f64 in NumPy). The convolutions go
 * through the Conv converter (same attributes: auto_pad, pads, strides, dilations, group, 1-D to
 * 3-D). Blocked quantization (opset 21 block_size) and 4-bit / 16-bit / float8 types are not
 * supported.
 */
#include <string.h>

#include "onnx/onnx_impl.h"

/* ---- helpers ---- */

static kn_tensor *as_dt(kn_tensor *t, kn_dtype dt) {
    if (!t) return NULL;
    return kn_tensor_dtype(t) == dt ? t : kn_cast(t, dt);
}

/* Scale or zero point p (input index `idx`, for messages) made broadcastable against ref, cast to
 * dt: one value becomes a 0-d tensor; a 1-D tensor is laid along dim `axis` of ref (its length
 * must match); a tensor of more dims is used as it is when nd_ok (it broadcasts), else rejected. */
static kn_tensor *param(const kn_tensor *ref, kn_tensor *p, int64_t axis, kn_dtype dt, bool nd_ok,
                        int idx) {
    if (!p) return NULL;
    int rank = kn_tensor_ndim(ref), pd = kn_tensor_ndim(p);
    int64_t n = kn_tensor_numel(p);
    if (n == 1) return as_dt(kn_reshape(p, 0, NULL), dt);
    if (pd > 1) {
        if (nd_ok) return as_dt(p, dt);
        return kn__errp(KN_EUNSUPPORTED,
                        "input %d has %d dims: only a scalar or a 1-D tensor is supported (no "
                        "blocked quantization)",
                        idx, pd);
    }
    int ax;
    if (kn__ox_axis(axis, rank, "axis", &ax)) return NULL;
    if (kn_tensor_shape(ref)[ax] != n)
        return kn__errp(KN_ESHAPE, "input %d has %lld values for dim %d of size %lld", idx,
                        (long long)n, ax, (long long)kn_tensor_shape(ref)[ax]);
    int64_t shape[KN_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        shape[i] = i == ax ? n : 1;
    return as_dt(kn_reshape(p, rank, shape), dt);
}

static bool is_q8(kn_dtype dt) {
    return dt == KN_U8 || dt == KN_I8;
}

/* round half to even, saturate to dt's range, cast (y is f32 or f64) */
static kn_tensor *saturate(kn_tensor *y, kn_dtype dt) {
    double lo = dt == KN_U8 ? 0.0 : -128.0, hi = dt == KN_U8 ? 255.0 : 127.0;
    return kn_cast(kn_clamp(kn_round(y), lo, hi), dt);
}

/* 8-bit input i (u8 / i8), or NULL with an error naming it */
static kn_tensor *need_q8(const kn_ox *x, int i) {
    kn_tensor *t = kn__ox_need(x, i);
    if (t && !is_q8(kn_tensor_dtype(t)))
        return kn__errp(KN_EUNSUPPORTED, "input %d is %s: only uint8 and int8 are supported", i,
                        kn_dtype_name(kn_tensor_dtype(t)));
    return t;
}

/* f32 sums of `terms` products of values in [-255, 255] are exact below 2^24 */
static kn_dtype acc_dtype(int64_t terms) {
    return terms <= (int64_t)(16777216.0 / (255.0 * 255.0)) ? KN_F32 : KN_F64;
}

/* ---- QuantizeLinear / DequantizeLinear ---- */

static kn_status quantize_linear(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *s = kn__ox_need(x, 1), *z = kn__ox_in(x, 2);
    if (!in || !s) return kn_last_status();
    if (kn__ox_int(x, "block_size", 0) != 0)
        return kn__err(KN_EUNSUPPORTED, "blocked quantization (block_size) is not supported");
    kn_dtype odt = KN_U8;
    int64_t want = kn__ox_int(x, "output_dtype", 0);
    if (want) {
        int d = kn__ox_dtype((int32_t)want);
        if (d < 0 || !is_q8((kn_dtype)d))
            return kn__err(KN_EUNSUPPORTED, "output_dtype %s: only uint8 and int8 are supported",
                           kn__ox_dtype_name((int32_t)want));
        odt = (kn_dtype)d;
    }
    if (z) {
        kn_dtype zd = kn_tensor_dtype(z);
        if (!is_q8(zd))
            return kn__err(KN_EUNSUPPORTED, "zero point is %s: only uint8 and int8 are supported",
                           kn_dtype_name(zd));
        if (want && zd != odt)
            return kn__err(KN_EINVAL, "output_dtype does not match the zero point's dtype");
        odt = zd;
    }
    /* NumPy's x / scale: f32 for float inputs, f64 for int32 or f64 ones */
    kn_dtype xd = kn_tensor_dtype(in);
    kn_dtype cd = xd == KN_F64 || xd == KN_I32 ? KN_F64 : KN_F32;
    int64_t axis = kn__ox_int(x, "axis", 1);
    kn_tensor *y = kn_round(kn_div(as_dt(in, cd), param(in, s, axis, cd, false, 1)));
    if (z) y = kn_add(y, param(in, z, axis, cd, false, 2));
    return kn__ox_set(x, 0, saturate(y, odt));
}

static kn_status dequantize_linear(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *s = kn__ox_need(x, 1), *z = kn__ox_in(x, 2);
    if (!in || !s) return kn_last_status();
    if (kn__ox_int(x, "block_size", 0) != 0)
        return kn__err(KN_EUNSUPPORTED, "blocked quantization (block_size) is not supported");
    kn_dtype xd = kn_tensor_dtype(in), sd = kn_tensor_dtype(s);
    if (!kn_dtype_is_float(sd))
        return kn__err(KN_EINVAL, "input 1 (scale) is %s, not a float dtype", kn_dtype_name(sd));
    if (!is_q8(xd) && xd != KN_I32)
        return kn__err(KN_EUNSUPPORTED, "input 0 is %s: only uint8, int8 and int32 are supported",
                       kn_dtype_name(xd));
    if (z && kn_tensor_dtype(z) != xd)
        return kn__err(KN_EINVAL, "zero point is %s, input is %s",
                       kn_dtype_name(kn_tensor_dtype(z)), kn_dtype_name(xd));
    int64_t axis = kn__ox_int(x, "axis", 1);
    kn_tensor *y = as_dt(in, KN_F32);
    if (z) y = kn_sub(y, param(in, z, axis, KN_F32, false, 2));
    y = kn_mul(y, param(in, s, axis, KN_F32, false, 1));
    return kn__ox_set(x, 0, as_dt(y, sd));
}

/* ---- DynamicQuantizeLinear ---- */

static kn_status dynamic_quantize_linear(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0);
    if (!in) return kn_last_status();
    if (kn_tensor_dtype(in) != KN_F32)
        return kn__err(KN_EUNSUPPORTED, "input is %s: DynamicQuantizeLinear takes float",
                       kn_dtype_name(kn_tensor_dtype(in)));
    if (kn_tensor_numel(in) == 0)
        return kn__err(KN_EUNSUPPORTED, "DynamicQuantizeLinear of an empty tensor");
    kn_tensor *zero = kn_scalar(KN_F32, 0.0), *one = kn_scalar(KN_F32, 1.0);
    kn_tensor *hi = kn_maximum(kn_amax(in, NULL, 0, false), zero);
    kn_tensor *lo = kn_minimum(kn_amin(in, NULL, 0, false), zero);
    /* all zeros: the range is empty and the scale is 1 (ONNX's reference) */
    kn_tensor *scale = kn_where(kn_eq(hi, lo), one, kn_div(kn_sub(hi, lo), kn_scalar(KN_F32, 255)));
    kn_tensor *zp = kn_round(kn_clamp(kn_neg(kn_div(lo, scale)), 0.0, 255.0));
    kn_tensor *y = kn_add(kn_round(kn_div(in, scale)), zp);
    kn_status st = kn__ox_set(x, 0, kn_cast(kn_clamp(y, 0.0, 255.0), KN_U8));
    if (!st && x->nout > 1) st = kn__ox_set(x, 1, scale);
    if (!st && x->nout > 2) st = kn__ox_set(x, 2, kn_cast(zp, KN_U8));
    return st;
}

/* ---- MatMulInteger / QLinearMatMul ---- */

/* (a - a_zp) @ (b - b_zp), exact, in f32 or f64: a zero point per row of a (a 1-D tensor of M
 * values, or [..., M, 1]) or per column of b (N values, or [..., 1, N]) */
static kn_tensor *int_matmul(kn_tensor *a, kn_tensor *az, kn_tensor *b, kn_tensor *bz, int iaz,
                             int ibz) {
    int ra = kn_tensor_ndim(a), rb = kn_tensor_ndim(b);
    if (ra < 1 || rb < 1) return kn__errp(KN_ESHAPE, "MatMul of a 0-d tensor");
    kn_dtype cd = acc_dtype(kn_tensor_shape(a)[ra - 1]);
    kn_tensor *af = as_dt(a, cd), *bf = as_dt(b, cd);
    if (az && kn_tensor_dtype(az) != kn_tensor_dtype(a))
        return kn__errp(KN_EINVAL, "input %d (zero point) is %s, its tensor is %s", iaz,
                        kn_dtype_name(kn_tensor_dtype(az)), kn_dtype_name(kn_tensor_dtype(a)));
    if (bz && kn_tensor_dtype(bz) != kn_tensor_dtype(b))
        return kn__errp(KN_EINVAL, "input %d (zero point) is %s, its tensor is %s", ibz,
                        kn_dtype_name(kn_tensor_dtype(bz)), kn_dtype_name(kn_tensor_dtype(b)));
    /* a 1-D a is one row: its zero point must be a single value (rank is out of range) */
    if (az) af = kn_sub(af, param(a, az, ra >= 2 ? ra - 2 : ra, cd, true, iaz));
    if (bz) bf = kn_sub(bf, param(b, bz, rb - 1, cd, true, ibz));
    return kn_matmul(af, bf);
}

static kn_status matmul_integer(kn_ox *x) {
    kn_tensor *a = need_q8(x, 0), *b = a ? need_q8(x, 1) : NULL;
    if (!a || !b) return kn_last_status();
    kn_tensor *y = int_matmul(a, kn__ox_in(x, 2), b, kn__ox_in(x, 3), 2, 3);
    return kn__ox_set(x, 0, y ? kn_cast(y, KN_I32) : NULL);
}

/* the f32 multiplier sa * sb / sy (NumPy f32 arithmetic) as f64 */
static kn_tensor *multiplier(kn_tensor *sa, kn_tensor *sb, kn_tensor *sy) {
    return kn_cast(kn_div(kn_mul(sa, sb), sy), KN_F64);
}

/* acc (exact integers) * mult + y_zp, rounded and saturated to y_zp's dtype (or dt) */
static kn_tensor *requantize(kn_tensor *acc, kn_tensor *mult, kn_tensor *yz, kn_dtype dt) {
    kn_tensor *r = kn_mul(as_dt(acc, KN_F64), mult);
    if (yz) r = kn_add(r, yz);
    return saturate(r, dt);
}

static kn_status scales_f32(const kn_ox *x, const int *idx, int n) {
    for (int k = 0; k < n; k++) {
        kn_tensor *s = kn__ox_need(x, idx[k]);
        if (!s) return kn_last_status();
        if (kn_tensor_dtype(s) != KN_F32)
            return kn__err(KN_EUNSUPPORTED, "input %d (scale) is %s: only float is supported",
                           idx[k], kn_dtype_name(kn_tensor_dtype(s)));
    }
    return KN_OK;
}

static kn_status qlinear_matmul(kn_ox *x) {
    kn_tensor *a = need_q8(x, 0), *b = a ? need_q8(x, 3) : NULL;
    if (!a || !b) return kn_last_status();
    kn_status st = scales_f32(x, (const int[]){1, 4, 6}, 3);
    if (st) return st;
    kn_tensor *yz = kn__ox_in(x, 7);
    kn_dtype odt = yz ? kn_tensor_dtype(yz) : kn_tensor_dtype(a);
    if (!is_q8(odt))
        return kn__err(KN_EUNSUPPORTED, "input 7 (y_zero_point) is %s: only uint8 and int8",
                       kn_dtype_name(odt));
    kn_tensor *acc = int_matmul(a, kn__ox_in(x, 2), b, kn__ox_in(x, 5), 2, 5);
    if (!acc) return kn_last_status();
    int ra = kn_tensor_ndim(a), rb = kn_tensor_ndim(b);
    kn_tensor *mult = multiplier(param(a, x->in[1], ra >= 2 ? ra - 2 : ra, KN_F32, true, 1),
                                 param(b, x->in[4], rb - 1, KN_F32, true, 4),
                                 param(acc, x->in[6], kn_tensor_ndim(acc) - 1, KN_F32, true, 6));
    kn_tensor *yzf = yz ? param(acc, yz, kn_tensor_ndim(acc) - 1, KN_F64, true, 7) : NULL;
    if (yz && !yzf) return kn_last_status();
    return kn__ox_set(x, 0, requantize(acc, mult, yzf, odt));
}

/* ---- ConvInteger / QLinearConv ---- */

/* (x - x_zp) conv (w - w_zp) with the node's Conv attributes, exact, in f32 or f64; w_zp per
 * output channel (M values) or one value */
static kn_tensor *int_conv(kn_ox *x, kn_tensor *in, kn_tensor *xz, kn_tensor *w, kn_tensor *wz,
                           int ixz, int iwz) {
    int rw = kn_tensor_ndim(w);
    if (rw < 3 || kn_tensor_ndim(in) != rw)
        return kn__errp(KN_ESHAPE, "convolution of a %d-D input with a %d-D weight",
                        kn_tensor_ndim(in), rw);
    int64_t terms = 1;
    for (int i = 1; i < rw; i++)
        terms *= kn_tensor_shape(w)[i];
    kn_dtype cd = acc_dtype(terms);
    kn_tensor *xf = as_dt(in, cd), *wf = as_dt(w, cd);
    if (xz && kn_tensor_dtype(xz) != kn_tensor_dtype(in))
        return kn__errp(KN_EINVAL, "input %d (zero point) is %s, its tensor is %s", ixz,
                        kn_dtype_name(kn_tensor_dtype(xz)), kn_dtype_name(kn_tensor_dtype(in)));
    if (wz && kn_tensor_dtype(wz) != kn_tensor_dtype(w))
        return kn__errp(KN_EINVAL, "input %d (zero point) is %s, its tensor is %s", iwz,
                        kn_dtype_name(kn_tensor_dtype(wz)), kn_dtype_name(kn_tensor_dtype(w)));
    if (xz) xf = kn_sub(xf, param(in, xz, 1, cd, false, ixz));
    if (wz) wf = kn_sub(wf, param(w, wz, 0, cd, false, iwz));
    if (!xf || !wf) return NULL;
    const kn_ox_op *conv = kn__ox_find("Conv", 4, x->opset, NULL);
    if (!conv) return kn__errp(KN_EINTERNAL, "no Conv converter");
    /* the Conv converter on the float operands, with this node's attributes */
    kn_ox sub = *x;
    memset(sub.in, 0, sizeof sub.in);
    memset(sub.in_static, 0, sizeof sub.in_static);
    memset(sub.out, 0, sizeof sub.out);
    sub.nin = 2;
    sub.in[0] = xf;
    sub.in[1] = wf;
    sub.nout = 1;
    kn_status st = conv->fn(&sub);
    if (st) return NULL;
    if (!sub.out[0]) return kn__errp(KN_EINTERNAL, "Conv converter set no output");
    return sub.out[0];
}

static kn_status conv_integer(kn_ox *x) {
    kn_tensor *in = need_q8(x, 0), *w = in ? need_q8(x, 1) : NULL;
    if (!in || !w) return kn_last_status();
    kn_tensor *y = int_conv(x, in, kn__ox_in(x, 2), w, kn__ox_in(x, 3), 2, 3);
    return kn__ox_set(x, 0, y ? kn_cast(y, KN_I32) : NULL);
}

static kn_status qlinear_conv(kn_ox *x) {
    kn_tensor *in = need_q8(x, 0), *w = in ? need_q8(x, 3) : NULL;
    if (!in || !w) return kn_last_status();
    kn_status st = scales_f32(x, (const int[]){1, 4, 6}, 3);
    if (st) return st;
    kn_tensor *yz = kn__ox_in(x, 7), *bias = kn__ox_in(x, 8);
    kn_dtype odt = yz ? kn_tensor_dtype(yz) : kn_tensor_dtype(in);
    if (!is_q8(odt))
        return kn__err(KN_EUNSUPPORTED, "input 7 (y_zero_point) is %s: only uint8 and int8",
                       kn_dtype_name(odt));
    if (bias && (kn_tensor_dtype(bias) != KN_I32 || kn_tensor_ndim(bias) != 1))
        return kn__err(KN_EINVAL, "input 8 (bias) must be a 1-D int32 tensor");
    kn_tensor *acc = int_conv(x, in, kn__ox_in(x, 2), w, kn__ox_in(x, 5), 2, 5);
    if (!acc) return kn_last_status();
    /* per output channel values of acc (N, M, ...) lie along dim 1 */
    acc = as_dt(acc, KN_F64);
    if (bias) acc = kn_add(acc, param(acc, bias, 1, KN_F64, false, 8));
    kn_tensor *mult = multiplier(param(acc, x->in[1], 1, KN_F32, false, 1),
                                 param(acc, x->in[4], 1, KN_F32, false, 4),
                                 param(acc, x->in[6], 1, KN_F32, false, 6));
    kn_tensor *yzf = yz ? param(acc, yz, 1, KN_F64, false, 7) : NULL;
    if (yz && !yzf) return kn_last_status();
    return kn__ox_set(x, 0, requantize(acc, mult, yzf, odt));
}

const kn_ox_op kn__ox_ops_quant[] = {
    {"QuantizeLinear", quantize_linear, 10, 0, false},
    {"DequantizeLinear", dequantize_linear, 10, 0, false},
    {"DynamicQuantizeLinear", dynamic_quantize_linear, 11, 0, false},
    {"MatMulInteger", matmul_integer, 10, 0, false},
    {"ConvInteger", conv_integer, 10, 0, false},
    {"QLinearMatMul", qlinear_matmul, 10, 0, false},
    {"QLinearConv", qlinear_conv, 10, 0, false},
    {NULL, NULL, 0, 0, false},
};
