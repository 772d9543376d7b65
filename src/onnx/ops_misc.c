/*
 * ops_misc.c - ONNX ops onto kiln's that fit no other family: Shrink,
 * MeanVarianceNormalization, CumSum (exclusive / reverse; static axis), OneHot (static depth and
 * values), Scatter / ScatterElements / ScatterND (reduction none / add / mul / max / min),
 * GatherND (batch_dims), TopK (static k), Einsum, Det (matrices up to 5x5), NonZero / Compress
 * (their value-dependent output shapes come from static or frozen inputs), MaxUnpool (a scatter
 * into zeros), ReverseSequence (static lengths: a gather), BitShift (uint8), and DFT / STFT
 * (static lengths: matmuls with constant cosine / sine matrices).
 *
 * How they are built from kiln's ops:
 *  - CumSum: log2(n) shifted adds along the axis (Hillis-Steele scan), exact for integers.
 *  - Scatter*: none and add are scatter_add / index_add (plus a hit mask for none); mul / max /
 *    min need static indices: the updates landing on each element are gathered in layers with
 *    host-computed index_select indices and combined with the data.
 *  - GatherND: row indices computed with ops (so indices may be dynamic), then index_select.
 *  - TopK: k rounds of (max, first untaken index of the max) along the axis; cost O(k n).
 *  - Einsum: diagonals by an identity mask, labels of one operand summed early, then pairwise
 *    contraction with batched matmul, finally a permute to the output order.
 *  - Det: Laplace expansion along the first row (n! products, hence the size limit).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "onnx/onnx_impl.h"

/* A 1-D int64 constant. */
static kn_tensor *i64_vec(const int64_t *v, int64_t n) {
    return kn_from_data(KN_I64, 1, &n, v);
}

/* arange(n) as int64 shaped (1, .., n at dim, .., 1) of rank r, for comparisons along dim. */
static kn_tensor *arange_at(int64_t n, int dim, int r) {
    int64_t s[KN_MAX_DIMS];
    for (int i = 0; i < r; i++)
        s[i] = i == dim ? n : 1;
    return kn_reshape(kn_arange(0, (double)n, 1, KN_I64), r, s);
}

/* t reversed along dim */
static kn_tensor *flip(kn_tensor *t, int dim) {
    int64_t n = kn_tensor_shape(t)[dim];
    int64_t *ix = kn__malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!ix) return kn__errp(KN_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        ix[i] = n - 1 - i;
    kn_tensor *r = kn_index_select(t, dim, i64_vec(ix, n));
    kn__free(ix);
    return r;
}

/* int64 indices with negative values wrapped by adding `dims` (a tensor broadcasting to idx) */
static kn_tensor *wrap_neg(kn_tensor *idx, kn_tensor *dims) {
    if (!idx) return NULL;
    if (kn_tensor_dtype(idx) != KN_I64) idx = kn_cast(idx, KN_I64);
    return kn_where(kn_lt(idx, kn_scalar(KN_I64, 0)), kn_add(idx, dims), idx);
}

/* the largest / smallest value of t's dtype (infinities for floats) */
static double dtype_extreme(kn_dtype dt, bool high) {
    switch (dt) {
    case KN_I8: return high ? INT8_MAX : INT8_MIN;
    case KN_U8: return high ? UINT8_MAX : 0;
    case KN_I32: return high ? INT32_MAX : INT32_MIN;
    case KN_I64: return high ? 9223372036854774784.0 : (double)INT64_MIN;
    case KN_BOOL: return high ? 1 : 0;
    default: return high ? INFINITY : -INFINITY;
    }
}

static kn_status shrink(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    double lambd = kn__ox_float(x, "lambd", 0.5), bias = kn__ox_float(x, "bias", 0.0);
    kn_tensor *lo = kn_lt(a, kn__ox_scalar_like(a, -lambd));
    kn_tensor *hi = kn_gt(a, kn__ox_scalar_like(a, lambd));
    kn_tensor *y = kn_where(hi, kn_sub(a, kn__ox_scalar_like(a, bias)), kn__ox_scalar_like(a, 0));
    return kn__ox_set(x, 0, kn_where(lo, kn_add(a, kn__ox_scalar_like(a, bias)), y));
}

static kn_status mvn(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a), axes[KN_MAX_DIMS];
    int64_t ax[KN_MAX_DIMS] = {0, 2, 3};
    int n = kn__ox_ints(x, "axes", ax, KN_MAX_DIMS);
    if (n < -1) return n;
    if (n == -1) n = 3;
    for (int i = 0; i < n; i++) {
        kn_status st = kn__ox_axis(ax[i], r, "axis", &axes[i]);
        if (st) return st;
    }
    /* (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9), ONNX's function body */
    kn_tensor *mean = kn_mean(a, axes, n, true);
    kn_tensor *sd = kn_sqrt(kn_var(a, axes, n, 0, true));
    return kn__ox_set(x, 0, kn_div(kn_sub(a, mean), kn_add_scalar(sd, 1e-9)));
}

/* ---- CumSum ---- */

static kn_tensor *shift_in_zeros(kn_tensor *y, int axis, int64_t s) {
    int r = kn_tensor_ndim(y);
    int64_t shape[KN_MAX_DIMS], n = kn_tensor_shape(y)[axis];
    memcpy(shape, kn_tensor_shape(y), sizeof(int64_t) * (size_t)r);
    shape[axis] = s;
    kn_tensor *parts[2] = {kn_zeros(kn_tensor_dtype(y), r, shape), kn_slice(y, axis, 0, n - s, 1)};
    return kn_concat(parts, 2, axis);
}

static kn_status cumsum(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a || !kn__ox_need(x, 1)) return kn_last_status();
    int64_t ax;
    int k = kn__ox_in_ints(x, 1, &ax, 1);
    if (k < 0) return k;
    if (k != 1) return kn__err(KN_EINVAL, "axis must hold one value");
    int r = kn_tensor_ndim(a), axis;
    if (r == 0) return kn__err(KN_ESHAPE, "CumSum of a 0-d tensor");
    kn_status st = kn__ox_axis(ax, r, "axis", &axis);
    if (st) return st;
    bool exclusive = kn__ox_int(x, "exclusive", 0), reverse = kn__ox_int(x, "reverse", 0);
    int64_t n = kn_tensor_shape(a)[axis];
    kn_tensor *y = reverse ? flip(a, axis) : a;
    for (int64_t s = 1; s < n && y; s *= 2)
        y = kn_add(y, shift_in_zeros(y, axis, s));
    if (exclusive && n > 0 && y) y = shift_in_zeros(y, axis, 1);
    if (reverse && y) y = flip(y, axis);
    return kn__ox_set(x, 0, y == a ? kn_clone(a) : y);
}

/* ---- OneHot ---- */

static kn_status one_hot(kn_ox *x) {
    kn_tensor *ind = kn__ox_need(x, 0), *vals = kn__ox_need(x, 2);
    if (!ind || !vals || !kn__ox_need(x, 1)) return kn_last_status();
    double d;
    int k = kn__ox_in_doubles(x, 1, &d, 1);
    if (k < 0) return k;
    if (k != 1 || !(d >= 1) || d > 1e9)
        return kn__err(KN_EINVAL, "depth must be one positive value");
    if (kn_tensor_numel(vals) != 2)
        return kn__err(KN_EINVAL, "values must hold [off_value, on_value]");
    int64_t depth = (int64_t)d;
    int r = kn_tensor_ndim(ind), axis;
    if (r + 1 > KN_MAX_DIMS) return kn__err(KN_ELIMIT, "result of rank %d", r + 1);
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", -1), r + 1, "axis", &axis);
    if (st) return st;
    kn_tensor *idx = ind;
    if (kn_tensor_dtype(idx) != KN_I64) idx = kn_cast(idx, KN_I64); /* floats truncate */
    idx = wrap_neg(idx, kn_scalar(KN_I64, (double)depth));
    kn_tensor *hit = kn_eq(kn_unsqueeze(idx, axis), arange_at(depth, axis, r + 1));
    int64_t two = 2;
    kn_tensor *v = kn_reshape(vals, 1, &two);
    return kn__ox_set(x, 0, kn_where(hit, kn_slice(v, 0, 1, 2, 1), kn_slice(v, 0, 0, 1, 1)));
}

/* ---- Scatter family ---- */

enum { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN };

static kn_status read_reduction(const kn_ox *x, int *red) {
    char b[16];
    const char *s = kn__ox_str(x, "reduction", "none", b, sizeof b);
    *red = !strcmp(s, "none")  ? RED_NONE
           : !strcmp(s, "add") ? RED_ADD
           : !strcmp(s, "mul") ? RED_MUL
           : !strcmp(s, "max") ? RED_MAX
           : !strcmp(s, "min") ? RED_MIN
                               : -1;
    if (*red < 0) return kn__err(KN_EUNSUPPORTED, "reduction '%s'", s);
    return KN_OK;
}

/* data (R, S), upd (N, S), target[N] in [0, R): each data row combined (mul / max / min) with
 * the update rows that target it, in layers of index_select with host-computed indices. */
static kn_tensor *scatter_layers(kn_tensor *data, kn_tensor *upd, const int64_t *target, int64_t N,
                                 int red) {
    int64_t R = kn_tensor_shape(data)[0], S = kn_tensor_shape(data)[1];
    kn_dtype dt = kn_tensor_dtype(data);
    int64_t *cnt = kn__malloc(sizeof(int64_t) * (size_t)(R + 1)), *sel = NULL;
    if (!cnt) goto oom;
    memset(cnt, 0, sizeof(int64_t) * (size_t)(R + 1));
    int64_t layers = 0;
    for (int64_t i = 0; i < N; i++)
        if (++cnt[target[i]] > layers) layers = cnt[target[i]];
    sel = kn__malloc(sizeof(int64_t) * (size_t)(R > 0 ? R : 1));
    if (!sel) goto oom;
    /* the identity of the reduction as an extra update row N */
    double idv = red == RED_MUL ? 1 : dtype_extreme(dt, red == RED_MIN);
    int64_t one[2] = {1, S};
    kn_tensor *parts[2] = {upd, kn_full(dt, 2, one, idv)};
    kn_tensor *ext = kn_concat(parts, 2, 0), *y = data;
    /* layer l takes, for each row, its l-th update in index order (row N when it has fewer) */
    memset(cnt, 0, sizeof(int64_t) * (size_t)(R + 1));
    for (int64_t l = 0; l < layers && y; l++) {
        for (int64_t i = 0; i < R; i++)
            sel[i] = N;
        for (int64_t i = 0; i < N; i++)
            if (cnt[target[i]]++ == l) sel[target[i]] = i;
        memset(cnt, 0, sizeof(int64_t) * (size_t)(R + 1));
        kn_tensor *u = kn_index_select(ext, 0, i64_vec(sel, R));
        y = red == RED_MUL ? kn_mul(y, u) : red == RED_MAX ? kn_maximum(y, u) : kn_minimum(y, u);
    }
    kn__free(cnt);
    kn__free(sel);
    return y == data ? kn_clone(data) : y;
oom:
    kn__free(cnt);
    kn__free(sel);
    return kn__errp(KN_ENOMEM, "out of memory");
}

/* Static indices of input i as int64 (numel values, allocated; kn__free it). */
static int64_t *static_indices(const kn_ox *x, int i, int64_t *n) {
    *n = kn_tensor_numel(x->in[i]);
    if (*n > INT32_MAX) return kn__errp(KN_ELIMIT, "input %d: %lld indices", i, (long long)*n);
    int64_t *v = kn__malloc(sizeof(int64_t) * (size_t)(*n > 0 ? *n : 1));
    if (!v) return kn__errp(KN_ENOMEM, "out of memory");
    int k = kn__ox_in_ints(x, i, v, (int)*n);
    if (k < 0) {
        kn__free(v);
        return NULL;
    }
    return v;
}

static kn_status scatter_elements(kn_ox *x) {
    kn_tensor *data = kn__ox_need(x, 0), *ind = kn__ox_need(x, 1), *upd = kn__ox_need(x, 2);
    if (!data || !ind || !upd) return kn_last_status();
    int r = kn_tensor_ndim(data), axis, red;
    if (r == 0) return kn__err(KN_ESHAPE, "data must have at least one dimension");
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 0), r, "axis", &axis);
    if (!st) st = read_reduction(x, &red);
    if (st) return st;
    const int64_t *ds = kn_tensor_shape(data), *is = kn_tensor_shape(ind);
    if (kn_tensor_ndim(ind) != r || kn_tensor_ndim(upd) != r)
        return kn__err(KN_ESHAPE, "data, indices and updates must have the same rank");
    for (int d = 0; d < r; d++)
        if (kn_tensor_shape(upd)[d] != is[d] || (d != axis && is[d] > ds[d]))
            return kn__err(KN_ESHAPE, "indices / updates do not fit data in dim %d", d);
    if (kn_tensor_dtype(upd) != kn_tensor_dtype(data))
        return kn__err(KN_EDTYPE, "updates and data dtypes differ");
    if (red == RED_NONE || red == RED_ADD) {
        kn_tensor *idx = wrap_neg(ind, kn_scalar(KN_I64, (double)ds[axis]));
        if (red == RED_ADD) return kn__ox_set(x, 0, kn_scatter_add(data, axis, idx, upd));
        kn_dtype dt = kn_tensor_dtype(data);
        if (dt == KN_BOOL) upd = kn_cast(upd, KN_U8); /* scatter_add is numeric */
        kn_tensor *hits =
            kn_scatter_add(kn_zeros(KN_I32, r, ds), axis, idx, kn_ones(KN_I32, r, is));
        kn_tensor *put = kn_scatter_add(kn_zeros(kn_tensor_dtype(upd), r, ds), axis, idx, upd);
        if (dt == KN_BOOL && put) put = kn_cast(put, KN_BOOL);
        return kn__ox_set(x, 0, kn_where(kn_gt(hits, kn_scalar(KN_I32, 0)), put, data));
    }
    /* mul / max / min: static indices; target offset of every update element */
    int64_t n, N = kn_tensor_numel(data);
    int64_t *v = static_indices(x, 1, &n);
    if (!v) return kn_last_status();
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, off = 0, mul = 1;
        for (int d = r - 1; d >= 0; d--) {
            int64_t c = rem % is[d];
            rem /= is[d];
            if (d == axis) {
                c = v[i] < 0 ? v[i] + ds[d] : v[i];
                if (c < 0 || c >= ds[d]) {
                    long long bad = (long long)v[i];
                    kn__free(v);
                    return kn__err(KN_EINVAL, "index %lld out of range for axis of size %lld", bad,
                                   (long long)ds[d]);
                }
            }
            off += c * mul;
            mul *= ds[d];
        }
        v[i] = off;
    }
    int64_t ds2[2] = {N, 1}, us2[2] = {n, 1};
    kn_tensor *y = scatter_layers(kn_reshape(data, 2, ds2), kn_reshape(upd, 2, us2), v, n, red);
    kn__free(v);
    return kn__ox_set(x, 0, y ? kn_reshape(y, r, ds) : NULL);
}

static kn_status scatter_nd(kn_ox *x) {
    kn_tensor *data = kn__ox_need(x, 0), *ind = kn__ox_need(x, 1), *upd = kn__ox_need(x, 2);
    if (!data || !ind || !upd) return kn_last_status();
    int red;
    kn_status st = read_reduction(x, &red);
    if (st) return st;
    int r = kn_tensor_ndim(data), q = kn_tensor_ndim(ind);
    const int64_t *ds = kn_tensor_shape(data), *is = kn_tensor_shape(ind);
    int64_t k = q ? is[q - 1] : -1;
    if (q < 1 || k < 1 || k > r)
        return kn__err(KN_ESHAPE, "indices' last dim must be in [1, data's rank]");
    /* updates: indices.shape[:-1] + data.shape[k:] */
    bool ok = kn_tensor_ndim(upd) == q - 1 + r - (int)k;
    for (int d = 0; ok && d < q - 1; d++)
        ok = kn_tensor_shape(upd)[d] == is[d];
    for (int d = (int)k; ok && d < r; d++)
        ok = kn_tensor_shape(upd)[q - 1 + d - k] == ds[d];
    if (!ok) return kn__err(KN_ESHAPE, "updates do not have shape indices[:-1] + data[k:]");
    if (kn_tensor_dtype(upd) != kn_tensor_dtype(data))
        return kn__err(KN_EDTYPE, "updates and data dtypes differ");
    int64_t R = 1, S = 1, N = 1, strides[KN_MAX_DIMS], dims[KN_MAX_DIMS];
    for (int d = (int)k - 1; d >= 0; d--)
        strides[d] = R, dims[d] = ds[d], R *= ds[d];
    for (int d = (int)k; d < r; d++)
        S *= ds[d];
    for (int d = 0; d < q - 1; d++)
        N *= is[d];
    int64_t s2[2] = {R, S}, u2[2] = {N, S};
    kn_tensor *flat = kn_reshape(data, 2, s2), *u = kn_reshape(upd, 2, u2), *y;
    if (red == RED_NONE || red == RED_ADD) {
        kn_tensor *idx = wrap_neg(ind, i64_vec(dims, k));
        int last = q - 1;
        kn_tensor *row =
            kn_reshape(kn_sum(kn_mul(idx, i64_vec(strides, k)), &last, 1, false), 1, &N);
        kn_attrs at = {0};
        kn_attrs_set_int(&at, "dim", 0);
        kn_tensor *in[3] = {flat, row, u};
        if (red == RED_NONE) {
            int64_t r1[2] = {R, 1}, n1[2] = {N, 1};
            kn_tensor *hin[3] = {kn_zeros(KN_I32, 2, r1), row, kn_ones(KN_I32, 2, n1)}, *hits, *put;
            in[0] = kn_zeros(kn_tensor_dtype(data), 2, s2);
            if (kn_op_call("index_add", hin, 3, &at, &hits, 1) < 0 ||
                kn_op_call("index_add", in, 3, &at, &put, 1) < 0)
                return kn_last_status();
            y = kn_where(kn_gt(hits, kn_scalar(KN_I32, 0)), put, flat);
        } else if (kn_op_call("index_add", in, 3, &at, &y, 1) < 0) {
            return kn_last_status();
        }
    } else {
        int64_t n;
        int64_t *v = static_indices(x, 1, &n);
        if (!v) return kn_last_status();
        for (int64_t i = 0; i < N; i++) {
            int64_t off = 0;
            for (int64_t j = 0; j < k; j++) {
                int64_t c = v[i * k + j] < 0 ? v[i * k + j] + ds[j] : v[i * k + j];
                if (c < 0 || c >= ds[j]) {
                    long long bad = (long long)v[i * k + j];
                    kn__free(v);
                    return kn__err(KN_EINVAL, "index %lld out of range for dim %lld of size %lld",
                                   bad, (long long)j, (long long)ds[j]);
                }
                off += c * strides[j];
            }
            v[i] = off;
        }
        y = scatter_layers(flat, u, v, N, red);
        kn__free(v);
    }
    return kn__ox_set(x, 0, y ? kn_reshape(y, r, ds) : NULL);
}

static kn_status gather_nd(kn_ox *x) {
    kn_tensor *data = kn__ox_need(x, 0), *ind = kn__ox_need(x, 1);
    if (!data || !ind) return kn_last_status();
    int r = kn_tensor_ndim(data), q = kn_tensor_ndim(ind);
    int64_t b = kn__ox_int(x, "batch_dims", 0);
    const int64_t *ds = kn_tensor_shape(data), *is = kn_tensor_shape(ind);
    int64_t k = q ? is[q - 1] : -1;
    if (b < 0 || q < 1 || b >= q || b + k > r || k < 1)
        return kn__err(KN_ESHAPE, "indices' last dim and batch_dims do not fit data's rank");
    for (int d = 0; d < b; d++)
        if (ds[d] != is[d]) return kn__err(KN_ESHAPE, "batch dim %d differs", d);
    int64_t B = 1, G = 1, S = 1, strides[KN_MAX_DIMS], dims[KN_MAX_DIMS], os[KN_MAX_DIMS];
    for (int d = 0; d < b; d++)
        B *= ds[d];
    for (int64_t j = k - 1; j >= 0; j--)
        strides[j] = G, dims[j] = ds[b + j], G *= ds[b + j];
    for (int d = (int)(b + k); d < r; d++)
        S *= ds[d];
    int on = 0;
    for (int d = 0; d < q - 1; d++)
        os[on++] = is[d];
    for (int d = (int)(b + k); d < r; d++)
        os[on++] = ds[d];
    if (on > KN_MAX_DIMS) return kn__err(KN_ELIMIT, "result of rank %d", on);
    kn_tensor *idx = wrap_neg(ind, i64_vec(dims, k));
    int last = q - 1;
    kn_tensor *row = kn_sum(kn_mul(idx, i64_vec(strides, k)), &last, 1, false);
    if (b > 0) { /* offset of each batch: (flat batch index) * G, broadcast over the rest */
        kn_tensor *off = kn_empty(KN_I64, 1, &B);
        if (!off) return kn_last_status();
        int64_t *p = kn_tensor_data(off), bs[KN_MAX_DIMS];
        for (int64_t i = 0; i < B; i++)
            p[i] = i * G;
        for (int d = 0; d < q - 1; d++)
            bs[d] = d < b ? is[d] : 1;
        row = kn_add(row, kn_reshape(off, q - 1, bs));
    }
    int64_t n = kn_tensor_numel(ind) / k, s2[2] = {B * G, S};
    kn_tensor *y = kn_index_select(kn_reshape(data, 2, s2), 0, kn_reshape(row, 1, &n));
    return kn__ox_set(x, 0, y ? kn_reshape(y, on, os) : NULL);
}

/* ---- TopK ---- */

/* concat of any number of tensors (kiln's concat takes at most KN_MAX_INS): in groups */
static kn_tensor *concat_many(kn_tensor **ts, int64_t n, int axis) {
    while (n > 1) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i += 32) {
            int64_t g = n - i < 32 ? n - i : 32;
            ts[m++] = g == 1 ? ts[i] : kn_concat(ts + i, (int)g, axis);
            if (!ts[m - 1]) return NULL;
        }
        n = m;
    }
    return ts[0];
}

static kn_status top_k(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int64_t k;
    if (x->opset < 10) {
        k = kn__ox_int(x, "k", -1);
    } else {
        int n = kn__ox_in_ints(x, 1, &k, 1);
        if (n < 0) return n;
        if (n != 1) return kn__err(KN_EINVAL, "K must hold one value");
    }
    int r = kn_tensor_ndim(a), axis;
    if (r == 0) return kn__err(KN_ESHAPE, "TopK of a 0-d tensor");
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", -1), r, "axis", &axis);
    if (st) return st;
    int64_t n = kn_tensor_shape(a)[axis];
    if (k < 0 || k > n)
        return kn__err(KN_EINVAL, "k %lld out of range for axis of size %lld", (long long)k,
                       (long long)n);
    bool largest = kn__ox_int(x, "largest", 1) != 0;
    if (k == 0) {
        int64_t s[KN_MAX_DIMS];
        memcpy(s, kn_tensor_shape(a), sizeof(int64_t) * (size_t)r);
        s[axis] = 0;
        kn_status e = kn__ox_set(x, 0, kn_slice(a, axis, 0, 0, 1));
        return e ? e : kn__ox_set(x, 1, kn_zeros(KN_I64, r, s));
    }
    if (k > 4096)
        return kn__err(KN_ELIMIT, "TopK with k = %lld (kiln builds it of k rounds; at most 4096)",
                       (long long)k);
    kn_tensor **vals = kn__malloc(sizeof(kn_tensor *) * (size_t)k * 2);
    if (!vals) return kn__err(KN_ENOMEM, "out of memory");
    kn_tensor **ids = vals + k;
    /* round j: the max (min) of the untaken elements, then its first untaken index */
    kn_tensor *ar = arange_at(n, axis, r), *avail = NULL;
    kn_tensor *fill = kn__ox_scalar_like(a, dtype_extreme(kn_tensor_dtype(a), !largest));
    for (int64_t j = 0; j < k; j++) {
        kn_tensor *cand = avail ? kn_where(avail, a, fill) : a;
        kn_tensor *v = largest ? kn_amax(cand, &axis, 1, true) : kn_amin(cand, &axis, 1, true);
        kn_tensor *hit = kn_eq(a, v);
        if (kn_dtype_is_float(kn_tensor_dtype(a))) /* a NaN maximum picks the first NaN */
            hit = kn_logical_or(hit, kn_logical_and(kn_ne(a, a), kn_ne(v, v)));
        if (avail) hit = kn_logical_and(hit, avail);
        kn_tensor *i = kn_argmax(kn_cast(hit, KN_U8), axis, true);
        kn_tensor *rest = kn_ne(ar, i);
        avail = avail ? kn_logical_and(avail, rest) : rest;
        if (!avail) {
            kn__free(vals);
            return kn_last_status();
        }
        vals[j] = v, ids[j] = i;
    }
    kn_tensor *yv = concat_many(vals, k, axis), *yi = concat_many(ids, k, axis);
    kn__free(vals);
    st = kn__ox_set(x, 0, yv);
    return st ? st : kn__ox_set(x, 1, yi);
}

/* ---- Einsum ---- */

#define EIN_MAX_LABELS 64
typedef struct {
    kn_tensor *t;
    int n;
    int lab[KN_MAX_DIMS];
} ein_term;

/* Labels of one term: letters are their ASCII code, ellipsis dims 128 + position in the
 * (right-aligned) broadcast block of nell dims. rank < 0: the output (ellipsis takes nell). */
static kn_status ein_parse(const char *s, size_t len, int rank, int nell, int *lab, int *n,
                           int *ell) {
    int letters = 0, dots = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.')
            dots++;
        else if ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))
            letters++;
        else if (s[i] != ' ')
            return kn__err(KN_EINVAL, "equation: bad character '%c'", s[i]);
    }
    if (dots != 0 && dots != 3) return kn__err(KN_EINVAL, "equation: bad ellipsis");
    int e = dots ? (rank < 0 ? nell : rank - letters) : 0;
    if (rank >= 0 && (e < 0 || (!dots && letters != rank)))
        return kn__err(KN_EINVAL, "equation: term has %d labels for an input of rank %d", letters,
                       rank);
    if (letters + e > KN_MAX_DIMS) return kn__err(KN_ELIMIT, "einsum term of rank %d", letters + e);
    *ell = e;
    int k = 0;
    bool done_dots = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (!done_dots)
                for (int j = 0; j < e; j++)
                    lab[k++] = 128 + j; /* inputs are re-aligned by the caller */
            done_dots = true;
        } else if (s[i] != ' ') {
            lab[k++] = (unsigned char)s[i];
        }
    }
    *n = k;
    return KN_OK;
}

static int ein_find(const ein_term *t, int l) {
    for (int i = 0; i < t->n; i++)
        if (t->lab[i] == l) return i;
    return -1;
}

/* sum out dim d of a term */
static kn_status ein_sum_dim(ein_term *t, int d) {
    t->t = kn_sum(t->t, &d, 1, false);
    if (!t->t) return kn_last_status();
    memmove(t->lab + d, t->lab + d + 1, sizeof(int) * (size_t)(t->n - d - 1));
    t->n--;
    return KN_OK;
}

/* repeated labels of one term -> diagonal (x * eye over the two dims, summed over the second) */
static kn_status ein_diagonals(ein_term *t) {
    for (int p = 0; p < t->n; p++)
        for (int q = p + 1; q < t->n; q++) {
            if (t->lab[p] != t->lab[q]) continue;
            const int64_t *s = kn_tensor_shape(t->t);
            if (s[p] != s[q]) return kn__err(KN_ESHAPE, "einsum: diagonal of unequal dims");
            int64_t ms[KN_MAX_DIMS];
            for (int i = 0; i < t->n; i++)
                ms[i] = i == p || i == q ? s[i] : 1;
            kn_tensor *eye = kn_reshape(kn_eye(s[p], s[p], kn_tensor_dtype(t->t)), t->n, ms);
            t->t = kn_mul(t->t, eye);
            if (!t->t) return kn_last_status();
            kn_status st = ein_sum_dim(t, q);
            if (st) return st;
            q = p; /* rescan */
        }
    return KN_OK;
}

/* A and B contracted over the labels they share that are not in keep[] */
static kn_status ein_contract(ein_term *A, ein_term *B, const bool *keep, ein_term *out) {
    int bat[KN_MAX_DIMS], con[KN_MAX_DIMS], ao[KN_MAX_DIMS], bo[KN_MAX_DIMS];
    int nb = 0, nc = 0, na = 0, nbo = 0;
    kn_status st;
    /* labels of one side only and not kept: sum them now */
    for (int i = A->n - 1; i >= 0; i--)
        if (ein_find(B, A->lab[i]) < 0 && !keep[A->lab[i]] && (st = ein_sum_dim(A, i))) return st;
    for (int i = B->n - 1; i >= 0; i--)
        if (ein_find(A, B->lab[i]) < 0 && !keep[B->lab[i]] && (st = ein_sum_dim(B, i))) return st;
    for (int i = 0; i < A->n; i++) {
        int l = A->lab[i];
        if (ein_find(B, l) < 0)
            ao[na++] = l;
        else if (keep[l])
            bat[nb++] = l;
        else
            con[nc++] = l;
    }
    for (int i = 0; i < B->n; i++)
        if (ein_find(A, B->lab[i]) < 0) bo[nbo++] = B->lab[i];
    if (nb + na + nbo > KN_MAX_DIMS || nb + 2 > KN_MAX_DIMS)
        return kn__err(KN_ELIMIT, "einsum: intermediate of rank %d", nb + na + nbo);
    const int64_t *sa = kn_tensor_shape(A->t), *sb = kn_tensor_shape(B->t);
    int pa[KN_MAX_DIMS], pb[KN_MAX_DIMS], k = 0;
    int64_t va[KN_MAX_DIMS], vb[KN_MAX_DIMS], M = 1, K = 1, N = 1, rs[KN_MAX_DIMS];
    /* A -> (batch.., M, K), B -> (batch.., K, N) */
    for (int i = 0; i < nb; i++) {
        pa[k] = ein_find(A, bat[i]), pb[k] = ein_find(B, bat[i]);
        va[k] = sa[pa[k]], vb[k] = sb[pb[k]];
        rs[k] = va[k] == 1 ? vb[k] : va[k];
        k++;
    }
    int ka = k, kb = k;
    for (int i = 0; i < na; i++) {
        pa[ka++] = ein_find(A, ao[i]);
        M *= rs[nb + i] = sa[pa[ka - 1]];
    }
    for (int i = 0; i < nc; i++) {
        int ia = ein_find(A, con[i]), ib = ein_find(B, con[i]);
        if (sa[ia] != sb[ib]) return kn__err(KN_ESHAPE, "einsum: contracted dims differ in size");
        pa[ka++] = ia, pb[kb++] = ib;
        K *= sa[ia];
    }
    for (int i = 0; i < nbo; i++) {
        pb[kb++] = ein_find(B, bo[i]);
        N *= rs[nb + na + i] = sb[pb[kb - 1]];
    }
    va[nb] = M, va[nb + 1] = K, vb[nb] = K, vb[nb + 1] = N;
    kn_tensor *ma = kn_reshape(kn_permute(A->t, pa), nb + 2, va);
    kn_tensor *mb = kn_reshape(kn_permute(B->t, pb), nb + 2, vb);
    out->t = kn_reshape(kn_matmul(ma, mb), nb + na + nbo, rs);
    if (!out->t) return kn_last_status();
    out->n = 0;
    for (int i = 0; i < nb; i++)
        out->lab[out->n++] = bat[i];
    for (int i = 0; i < na; i++)
        out->lab[out->n++] = ao[i];
    for (int i = 0; i < nbo; i++)
        out->lab[out->n++] = bo[i];
    return KN_OK;
}

static kn_status einsum(kn_ox *x) {
    char eq[256];
    const char *e = kn__ox_str(x, "equation", "", eq, sizeof eq);
    if (strlen(e) >= sizeof eq - 1) return kn__err(KN_ELIMIT, "equation too long");
    if (x->nin < 1 || x->nin > 16) return kn__err(KN_ELIMIT, "einsum of %d operands", x->nin);
    const char *arrow = strstr(e, "->");
    size_t in_len = arrow ? (size_t)(arrow - e) : strlen(e);
    ein_term t[16];
    int ell[16], nell = 0, nt = 0;
    for (size_t i = 0, start = 0; i <= in_len; i++) {
        if (i < in_len && e[i] != ',') continue;
        if (nt >= x->nin) return kn__err(KN_EINVAL, "equation names more operands than inputs");
        t[nt].t = kn__ox_need(x, nt);
        if (!t[nt].t) return kn_last_status();
        kn_status st = ein_parse(e + start, i - start, kn_tensor_ndim(t[nt].t), 0, t[nt].lab,
                                 &t[nt].n, &ell[nt]);
        if (st) return st;
        if (ell[nt] > nell) nell = ell[nt];
        nt++, start = i + 1;
    }
    if (nt != x->nin)
        return kn__err(KN_EINVAL, "equation names %d operands, node has %d", nt, x->nin);
    for (int i = 0; i < nt; i++) /* re-align ellipsis labels now that nell is known */
        for (int j = 0; j < t[i].n; j++)
            if (t[i].lab[j] >= 128) t[i].lab[j] += nell - ell[i];
    int count[128 + KN_MAX_DIMS] = {0}, out[KN_MAX_DIMS], no = 0;
    for (int i = 0; i < nt; i++)
        for (int j = 0; j < t[i].n; j++)
            count[t[i].lab[j]]++;
    if (arrow) {
        int oe;
        const char *o = arrow + 2;
        kn_status st = ein_parse(o, strlen(o), -1, nell, out, &no, &oe);
        if (st) return st;
    } else { /* implicit: ellipsis dims, then the labels seen once, alphabetically */
        for (int j = 0; j < nell; j++)
            out[no++] = 128 + j;
        for (int l = 0; l < 128; l++)
            if (count[l] == 1) {
                if (no >= KN_MAX_DIMS) return kn__err(KN_ELIMIT, "einsum output rank");
                out[no++] = l;
            }
    }
    bool in_out[128 + KN_MAX_DIMS] = {0};
    for (int i = 0; i < no; i++) {
        if (in_out[out[i]] || !count[out[i]])
            return kn__err(KN_EINVAL, "equation: bad output label");
        in_out[out[i]] = true;
    }
    for (int i = 0; i < nt; i++) {
        kn_status st = ein_diagonals(&t[i]);
        if (st) return st;
    }
    ein_term cur = t[0];
    for (int i = 1; i < nt; i++) {
        bool keep[128 + KN_MAX_DIMS];
        memcpy(keep, in_out, sizeof keep);
        for (int j = i + 1; j < nt; j++)
            for (int d = 0; d < t[j].n; d++)
                keep[t[j].lab[d]] = true;
        ein_term next;
        kn_status st = ein_contract(&cur, &t[i], keep, &next);
        if (st) return st;
        cur = next;
    }
    for (int d = cur.n - 1; d >= 0; d--)
        if (!in_out[cur.lab[d]]) {
            kn_status st = ein_sum_dim(&cur, d);
            if (st) return st;
        }
    if (cur.n != no) return kn__err(KN_EINTERNAL, "einsum: output labels");
    int perm[KN_MAX_DIMS];
    for (int i = 0; i < no; i++)
        perm[i] = ein_find(&cur, out[i]);
    return kn__ox_set(x, 0, no ? kn_permute(cur.t, perm) : cur.t);
}

/* ---- Det ---- */

/* determinant of m (..., n, n), shaped (..., 1, 1) */
static kn_tensor *det_rec(kn_tensor *m, int n) {
    int r = kn_tensor_ndim(m);
    if (n == 1) return m;
    if (n == 2) {
        kn_tensor *a = kn_slice(kn_slice(m, r - 2, 0, 1, 1), r - 1, 0, 1, 1);
        kn_tensor *b = kn_slice(kn_slice(m, r - 2, 0, 1, 1), r - 1, 1, 2, 1);
        kn_tensor *c = kn_slice(kn_slice(m, r - 2, 1, 2, 1), r - 1, 0, 1, 1);
        kn_tensor *d = kn_slice(kn_slice(m, r - 2, 1, 2, 1), r - 1, 1, 2, 1);
        return kn_sub(kn_mul(a, d), kn_mul(b, c));
    }
    kn_tensor *rows = kn_slice(m, r - 2, 1, n, 1), *acc = NULL;
    int64_t cols[8];
    for (int j = 0; j < n; j++) {
        for (int c = 0, k = 0; c < n; c++)
            if (c != j) cols[k++] = c;
        kn_tensor *minor = kn_index_select(rows, r - 1, i64_vec(cols, n - 1));
        kn_tensor *term = kn_mul(kn_slice(kn_slice(m, r - 2, 0, 1, 1), r - 1, j, j + 1, 1),
                                 det_rec(minor, n - 1));
        acc = !acc ? term : j % 2 ? kn_sub(acc, term) : kn_add(acc, term);
        if (!acc) return NULL;
    }
    return acc;
}

static kn_status det(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    const int64_t *s = kn_tensor_shape(a);
    if (r < 2 || s[r - 1] != s[r - 2]) return kn__err(KN_ESHAPE, "Det needs (..., n, n) matrices");
    if (s[r - 1] < 1 || s[r - 1] > 5)
        return kn__err(KN_EUNSUPPORTED, "Det of %lldx%lld matrices (kiln expands up to 5x5)",
                       (long long)s[r - 1], (long long)s[r - 1]);
    kn_tensor *d = det_rec(a, (int)s[r - 1]);
    return kn__ox_set(x, 0, d ? kn_reshape(d, r - 2, s) : NULL);
}

/* ---- NonZero, Compress: value-dependent shapes from static values ---- */

static double *static_doubles(const kn_ox *x, int i, int64_t *n) {
    *n = kn_tensor_numel(x->in[i]);
    if (*n > INT32_MAX) return kn__errp(KN_ELIMIT, "input %d: %lld values", i, (long long)*n);
    double *v = kn__malloc(sizeof(double) * (size_t)(*n > 0 ? *n : 1));
    if (!v) return kn__errp(KN_ENOMEM, "out of memory");
    int k = kn__ox_in_doubles(x, i, v, (int)*n);
    if (k < 0) {
        kn__free(v);
        return NULL;
    }
    return v;
}

static kn_status non_zero(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int64_t n, nz = 0;
    double *v = static_doubles(x, 0, &n);
    if (!v) return kn_last_status();
    int r = kn_tensor_ndim(a), rr = r ? r : 1;
    const int64_t *s = kn_tensor_shape(a);
    for (int64_t i = 0; i < n; i++)
        nz += v[i] != 0;
    int64_t os[2] = {rr, nz};
    kn_tensor *y = kn_empty(KN_I64, 2, os);
    if (y) {
        int64_t *p = kn_tensor_data(y), k = 0;
        for (int64_t i = 0; i < n; i++) {
            if (v[i] == 0) continue;
            for (int64_t d = r - 1, rem = i; d >= 0; d--)
                p[d * nz + k] = rem % s[d], rem /= s[d];
            if (!r) p[k] = 0;
            k++;
        }
    }
    kn__free(v);
    return kn__ox_set(x, 0, y);
}

static kn_status compress(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a || !kn__ox_need(x, 1)) return kn_last_status();
    int axis = 0;
    if (kn__ox_attr(x, "axis")) {
        if (kn_tensor_ndim(a) == 0) return kn__err(KN_ESHAPE, "Compress of a 0-d tensor");
        kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 0), kn_tensor_ndim(a), "axis", &axis);
        if (st) return st;
    } else {
        int64_t all = kn_tensor_numel(a);
        a = kn_reshape(a, 1, &all);
        if (!a) return kn_last_status();
    }
    int64_t n, k = 0;
    double *v = static_doubles(x, 1, &n);
    if (!v) return kn_last_status();
    if (n > kn_tensor_shape(a)[axis]) {
        kn__free(v);
        return kn__err(KN_ESHAPE, "condition longer than the axis");
    }
    int64_t *ix = kn__malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!ix) {
        kn__free(v);
        return kn__err(KN_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n; i++)
        if (v[i] != 0) ix[k++] = i;
    kn_tensor *y = kn_index_select(a, axis, i64_vec(ix, k));
    kn__free(ix);
    kn__free(v);
    return kn__ox_set(x, 0, y);
}

/* MaxUnpool: the values go to their flat positions (indices over the whole output, as MaxPool's
 * Indices output gives them) in zeros of the unpooled shape (output_shape input, else from
 * kernel / strides / pads) */
static kn_status max_unpool(kn_ox *x) {
    kn_tensor *v = kn__ox_need(x, 0), *idx = kn__ox_need(x, 1);
    if (!v || !idx) return kn_last_status();
    int r = kn_tensor_ndim(v);
    if (r < 3 || r > KN_MAX_DIMS) return kn__err(KN_ESHAPE, "input must be (N, C, ...)");
    /* the indices address the default unpooled shape (kernel / strides / pads); output_shape,
     * when given, pads that at the end of each spatial dim (ONNX's reference) */
    int64_t shape[KN_MAX_DIMS], want[KN_MAX_DIMS];
    int64_t k[KN_MAX_DIMS], st[KN_MAX_DIMS], p[2 * KN_MAX_DIMS];
    int nk = kn__ox_ints(x, "kernel_shape", k, KN_MAX_DIMS);
    if (nk != r - 2) return kn__err(KN_EINVAL, "kernel_shape must have %d values", r - 2);
    for (int i = 0; i < nk; i++)
        st[i] = 1, p[i] = p[nk + i] = 0;
    if (kn__ox_ints(x, "strides", st, KN_MAX_DIMS) > nk ||
        kn__ox_ints(x, "pads", p, 2 * KN_MAX_DIMS) > 2 * nk)
        return kn__err(KN_EINVAL, "strides / pads do not fit kernel_shape");
    shape[0] = kn_tensor_shape(v)[0], shape[1] = kn_tensor_shape(v)[1];
    for (int i = 0; i < nk; i++)
        shape[2 + i] = (kn_tensor_shape(v)[2 + i] - 1) * st[i] + k[i] - p[i] - p[nk + i];
    bool pad_out = kn__ox_in(x, 2) != NULL;
    if (pad_out) {
        int n = kn__ox_in_ints(x, 2, want, KN_MAX_DIMS);
        if (n < 0) return n;
        if (n != r) return kn__err(KN_EINVAL, "output_shape has %d values for rank %d", n, r);
        for (int i = 0; i < r; i++)
            if (want[i] < shape[i] || (i < 2 && want[i] != shape[i]) || want[i] > (int64_t)1 << 31)
                return kn__err(KN_EINVAL, "output_shape is smaller than the unpooled shape");
    }
    int64_t total = 1;
    for (int i = 0; i < r; i++) {
        if (shape[i] < 1 || shape[i] > (int64_t)1 << 31) return kn__err(KN_EINVAL, "output shape");
        total *= shape[i];
        if (total > (int64_t)1 << 34)
            return kn__err(KN_ELIMIT, "output of %lld+ elements", (long long)total);
    }
    int64_t n = kn_tensor_numel(v);
    if (kn_tensor_numel(idx) != n) return kn__err(KN_ESHAPE, "indices do not match the input");
    kn_tensor *fi = kn_reshape(kn_tensor_dtype(idx) == KN_I64 ? idx : kn_cast(idx, KN_I64), 1, &n);
    /* indices outside the output never write out of bounds (those computed at run time land on
     * element 0 instead) */
    kn_tensor *bad = fi ? kn_logical_or(kn_lt(fi, kn_scalar(KN_I64, 0)),
                                        kn_ge(fi, kn_scalar(KN_I64, (double)total)))
                        : NULL;
    if (!bad) return kn_last_status();
    if (x->in_static[1]) { /* known now: an index outside the output is an error */
        int64_t *iv = kn__malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        if (!iv) return KN_ENOMEM;
        kn_status st = kn_tensor_read(idx, KN_I64, iv, sizeof(int64_t) * (size_t)n);
        for (int64_t i = 0; st == KN_OK && i < n; i++)
            if (iv[i] < 0 || iv[i] >= total)
                st = kn__err(KN_EINVAL, "index %lld is outside the output", (long long)iv[i]);
        kn__free(iv);
        if (st) return st;
    }
    kn_tensor *y = kn_scatter_add(kn_zeros(kn_tensor_dtype(v), 1, &total), 0,
                                  kn_where(bad, kn_scalar(KN_I64, 0), fi), kn_reshape(v, 1, &n));
    y = y ? kn_reshape(y, r, shape) : NULL;
    if (y && pad_out) {
        int64_t pads[2 * KN_MAX_DIMS] = {0};
        for (int i = 2; i < r; i++) /* kn_pad: last dim first, (before, after) */
            pads[2 * (r - 1 - i) + 1] = want[i] - shape[i];
        y = kn_pad(y, pads, 2 * (r - 2), KN_PAD_CONSTANT, 0.0);
    }
    return kn__ox_set(x, 0, y);
}

/* ReverseSequence: row b of the batch has its first sequence_lens[b] steps reversed (static
 * lengths): a gather along the time axis with host-computed indices */
static kn_status reverse_sequence(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t ta = kn__ox_int(x, "time_axis", 0), ba = kn__ox_int(x, "batch_axis", 1);
    if (r < 2 || (ta != 0 && ta != 1) || ba != 1 - ta)
        return kn__err(KN_EINVAL, "time_axis / batch_axis must be 0 / 1 or 1 / 0");
    const int64_t *s = kn_tensor_shape(a);
    int64_t T = s[ta], B = s[ba], lens[4096];
    if (B > 4096) return kn__err(KN_ELIMIT, "batch of %lld", (long long)B);
    int n = kn__ox_in_ints(x, 1, lens, 4096);
    if (n < 0) return n;
    if (n != B)
        return kn__err(KN_EINVAL, "sequence_lens has %d values for batch %lld", n, (long long)B);
    int64_t rest = kn_tensor_numel(a) / (T > 0 && B > 0 ? T * B : 1), cnt = T * B * rest;
    int64_t *idx = kn__malloc(sizeof(int64_t) * (size_t)(cnt ? cnt : 1));
    if (!idx) return KN_ENOMEM;
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < B; b++) {
            int64_t L = lens[b] < 0 ? 0 : lens[b] > T ? T : lens[b], src = t < L ? L - 1 - t : t;
            int64_t i0 = ta == 0 ? t * B + b : b * T + t;
            for (int64_t k = 0; k < rest; k++)
                idx[i0 * rest + k] = src;
        }
    kn_tensor *it = kn_from_data(KN_I64, r, s, idx);
    kn__free(idx);
    return kn__ox_set(x, 0, it ? kn_gather(a, (int)ta, it) : NULL);
}

/* BitShift on uint8: x * 2^y (mod 256) or x / 2^y, in int32 */
static kn_status bit_shift(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1);
    if (!a || !b) return kn_last_status();
    if (kn_tensor_dtype(a) != KN_U8 || kn_tensor_dtype(b) != KN_U8)
        return kn__err(KN_EUNSUPPORTED, "BitShift of %s (kiln: uint8)",
                       kn_dtype_name(kn_tensor_dtype(a)));
    char d[8];
    bool left = !strcmp(kn__ox_str(x, "direction", "", d, sizeof d), "LEFT");
    kn_tensor *ai = kn_cast(a, KN_I32), *bi = kn_clamp(kn_cast(b, KN_I32), 0, 8);
    kn_tensor *p = kn_pow(kn_scalar(KN_I32, 2), bi);
    kn_tensor *y = left ? kn_mul(ai, p) : kn_div(ai, p);
    if (left && y) y = kn_sub(y, kn_mul(kn_div(y, kn_scalar(KN_I32, 256)), kn_scalar(KN_I32, 256)));
    return kn__ox_set(x, 0, y ? kn_cast(y, KN_U8) : NULL);
}

/* the DFT of re + i im (im may be NULL) along their last dim (N values) into K frequencies, as
 * matmuls with constant cosine / sine matrices: forward X = x (C - iS), inverse x (C + iS) / N */
static kn_status dft_last(kn_tensor *re, kn_tensor *im, int64_t N, int64_t K, bool inverse,
                          kn_dtype dt, kn_tensor **ore, kn_tensor **oim) {
    double *cs = kn__malloc(sizeof(double) * (size_t)(2 * N * K));
    if (!cs) return KN_ENOMEM;
    double sc = inverse ? 1.0 / (double)N : 1.0, sg = inverse ? 1.0 : -1.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            double ang = 2 * M_PI * (double)((n * k) % N) / (double)N;
            cs[n * K + k] = cos(ang) * sc;
            cs[N * K + n * K + k] = sg * sin(ang) * sc;
        }
    int64_t ms[2] = {N, K};
    kn_tensor *C = kn_cast(kn_from_data(KN_F64, 2, ms, cs), dt);
    kn_tensor *S = kn_cast(kn_from_data(KN_F64, 2, ms, cs + N * K), dt);
    kn__free(cs);
    /* (re + i im)(C + i S) = re C - im S + i (re S + im C) */
    *ore = kn_matmul(re, C), *oim = kn_matmul(re, S);
    if (im) *ore = kn_sub(*ore, kn_matmul(im, S)), *oim = kn_add(*oim, kn_matmul(im, C));
    return *ore && *oim ? KN_OK : kn_last_status();
}

/* DFT (opset 17): along `axis` of x (..., N, 1) real or (..., N, 2) complex, as two matmuls with
 * constant cosine / sine matrices (the length is static); dft_length pads with zeros or
 * truncates, onesided keeps N/2 + 1 frequencies, inverse conjugates and divides by N */
static kn_status dft(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a), axis;
    if (r < 2 || (kn_tensor_shape(a)[r - 1] != 1 && kn_tensor_shape(a)[r - 1] != 2))
        return kn__err(KN_ESHAPE, "input must end in a dim of 1 (real) or 2 (complex)");
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 1), r - 1, "axis", &axis);
    if (st) return st;
    kn_dtype dt = kn_tensor_dtype(a);
    if (dt != KN_F32 && dt != KN_F64) return kn__err(KN_EDTYPE, "DFT of %s", kn_dtype_name(dt));
    bool complex_in = kn_tensor_shape(a)[r - 1] == 2, inverse = kn__ox_int(x, "inverse", 0) != 0;
    bool onesided = kn__ox_int(x, "onesided", 0) != 0;
    int64_t n_in = kn_tensor_shape(a)[axis], N = n_in;
    if (kn__ox_in(x, 1)) {
        int k = kn__ox_in_ints(x, 1, &N, 1);
        if (k < 0) return k;
        if (k != 1 || N < 1 || N > 1 << 16)
            return kn__err(KN_EINVAL, "dft_length must be in [1, 65536]");
    }
    if (onesided && complex_in) return kn__err(KN_EINVAL, "onesided needs a real input");
    int64_t K = onesided ? N / 2 + 1 : N;
    /* x moved to (..., N): real and imaginary parts, padded / truncated to N */
    int perm[KN_MAX_DIMS];
    for (int i = 0, k = 0; i < r - 1; i++)
        if (i != axis) perm[k++] = i;
    perm[r - 2] = axis, perm[r - 1] = r - 1;
    kn_tensor *m = kn_permute(a, perm); /* (..., n_in, 1|2) */
    kn_tensor *re = kn_squeeze(kn_slice(m, r - 1, 0, 1, 1), r - 1);
    kn_tensor *im = complex_in ? kn_squeeze(kn_slice(m, r - 1, 1, 2, 1), r - 1) : NULL;
    if (N != n_in) {
        int64_t p[2] = {0, N - n_in};
        re = kn_pad(re, p, 2, KN_PAD_CONSTANT, 0.0);
        if (im) im = kn_pad(im, p, 2, KN_PAD_CONSTANT, 0.0);
    }
    kn_tensor *ore, *oim;
    if ((st = dft_last(re, im, N, K, inverse, dt, &ore, &oim))) return st;
    kn_tensor *parts[2] = {ore, oim};
    kn_tensor *y = ore && oim ? kn_stack(parts, 2, r - 1) : NULL; /* (..., K, 2) */
    int back[KN_MAX_DIMS];
    for (int i = 0; i < r; i++)
        back[perm[i]] = i;
    return kn__ox_set(x, 0, y ? kn_contiguous(kn_permute(y, back)) : NULL);
}

/* STFT (opset 17): frames of frame_length every frame_step samples (a gather with host-computed
 * indices), times the window, each transformed by dft_last; output (batch, frames, K, 2) */
static kn_status stft(kn_ox *x) {
    kn_tensor *sig = kn__ox_need(x, 0), *win = kn__ox_in(x, 2);
    if (!sig) return kn_last_status();
    int r = kn_tensor_ndim(sig);
    if (r != 3 || (kn_tensor_shape(sig)[2] != 1 && kn_tensor_shape(sig)[2] != 2))
        return kn__err(KN_ESHAPE, "signal must be (batch, length, 1 or 2)");
    kn_dtype dt = kn_tensor_dtype(sig);
    if (dt != KN_F32 && dt != KN_F64) return kn__err(KN_EDTYPE, "STFT of %s", kn_dtype_name(dt));
    int64_t step, L, len = kn_tensor_shape(sig)[1];
    int n = kn__ox_in_ints(x, 1, &step, 1);
    if (n < 0) return n;
    if (kn__ox_in(x, 3)) {
        int k = kn__ox_in_ints(x, 3, &L, 1);
        if (k < 0) return k;
    } else if (win) {
        L = kn_tensor_numel(win);
    } else {
        return kn__err(KN_EINVAL, "STFT needs a window or a frame_length");
    }
    if (step < 1 || L < 1 || L > len || L > 1 << 16)
        return kn__err(KN_EINVAL, "frame_step / frame_length do not fit the signal");
    bool complex_in = kn_tensor_shape(sig)[2] == 2, onesided = kn__ox_int(x, "onesided", 1) != 0;
    if (onesided && complex_in) return kn__err(KN_EINVAL, "onesided needs a real signal");
    int64_t F = (len - L) / step + 1, K = onesided ? L / 2 + 1 : L, cnt = F * L;
    int64_t *idx = kn__malloc(sizeof(int64_t) * (size_t)cnt);
    if (!idx) return KN_ENOMEM;
    for (int64_t f = 0; f < F; f++)
        for (int64_t l = 0; l < L; l++)
            idx[f * L + l] = f * step + l;
    kn_tensor *it = kn_from_data(KN_I64, 1, &cnt, idx);
    kn__free(idx);
    int64_t B = kn_tensor_shape(sig)[0], fs[3] = {B, F, L};
    kn_tensor *frames = kn_index_select(sig, 1, it); /* (B, F*L, c) */
    kn_tensor *re = kn_reshape(kn_squeeze(kn_slice(frames, 2, 0, 1, 1), 2), 3, fs);
    kn_tensor *im =
        complex_in ? kn_reshape(kn_squeeze(kn_slice(frames, 2, 1, 2, 1), 2), 3, fs) : NULL;
    if (win) {
        if (kn_tensor_numel(win) != L)
            return kn__err(KN_ESHAPE, "window of %lld values for frames of %lld",
                           (long long)kn_tensor_numel(win), (long long)L);
        kn_tensor *w = kn_reshape(kn_tensor_dtype(win) == dt ? win : kn_cast(win, dt), 1, &L);
        re = kn_mul(re, w);
        if (im) im = kn_mul(im, w);
    }
    kn_tensor *ore, *oim;
    kn_status st = dft_last(re, im, L, K, false, dt, &ore, &oim);
    if (st) return st;
    kn_tensor *parts[2] = {ore, oim};
    return kn__ox_set(x, 0, kn_stack(parts, 2, 3));
}

const kn_ox_op kn__ox_ops_misc[] = {
    {"STFT", stft, 17, 0, false},
    {"DFT", dft, 17, 0, false},
    {"MaxUnpool", max_unpool, 9, 0, false},
    {"ReverseSequence", reverse_sequence, 10, 0, false},
    {"BitShift", bit_shift, 11, 0, false},
    {"Shrink", shrink, 9, 0, false},
    {"MeanVarianceNormalization", mvn, 9, 0, false},
    {"CumSum", cumsum, 11, 0, false},
    {"OneHot", one_hot, 9, 0, false},
    {"Scatter", scatter_elements, 9, 10, false},
    {"ScatterElements", scatter_elements, 11, 0, false},
    {"ScatterND", scatter_nd, 11, 0, false},
    {"GatherND", gather_nd, 11, 0, false},
    {"TopK", top_k, 1, 0, false},
    {"Einsum", einsum, 12, 0, false},
    {"Det", det, 11, 0, false},
    {"NonZero", non_zero, 9, 0, false},
    {"Compress", compress, 9, 0, false},
    {NULL, NULL, 0, 0, false},
};
