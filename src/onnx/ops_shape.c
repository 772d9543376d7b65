/*
 * ops_shape.c - ONNX shape and data-movement ops onto kiln's: Constant, Identity, Shape, Size,
 * Reshape, Flatten, Transpose, Squeeze / Unsqueeze (axes as attribute before opset 13, as input
 * after), Concat, Split, Slice (attributes before opset 10; negative steps), Gather,
 * GatherElements, Expand, ConstantOfShape, Range, Tile, Pad (constant / reflect / edge; pads as
 * attribute before opset 11), Trilu, DepthToSpace, SpaceToDepth, EyeLike, and the window
 * functions (Hann, Hamming, Blackman), which are constants of their static size.
 *
 * Index arithmetic that kiln's view ops cannot express (negative-step slices, edge padding) is
 * an index_select with indices computed here: they are constants of the graph.
 */
#include <math.h>
#include <string.h>

#include "onnx/onnx_impl.h"

static kn_status constant(kn_ox *x) {
    const kn_onnx_attr *a;
    if ((a = kn__ox_attr(x, "value")) && a->t) return kn__ox_set(x, 0, kn__ox_tensor(a->t, NULL));
    if ((a = kn__ox_attr(x, "value_float"))) return kn__ox_set(x, 0, kn_scalar(KN_F32, a->f));
    if ((a = kn__ox_attr(x, "value_int"))) return kn__ox_set(x, 0, kn_scalar(KN_I64, (double)a->i));
    if ((a = kn__ox_attr(x, "value_floats"))) {
        int64_t n = (int64_t)a->n_floats;
        return kn__ox_set(x, 0, kn_from_data(KN_F32, 1, &n, a->floats));
    }
    if ((a = kn__ox_attr(x, "value_ints"))) {
        int64_t n = (int64_t)a->n_ints;
        return kn__ox_set(x, 0, kn_from_data(KN_I64, 1, &n, a->ints));
    }
    return kn__err(KN_EUNSUPPORTED, "Constant without a tensor, float(s) or int(s) value");
}

static kn_status identity(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    return a ? kn__ox_set(x, 0, a) : kn_last_status();
}

static kn_status shape(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t start = kn__ox_int(x, "start", 0), end = kn__ox_int(x, "end", r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    int64_t n = end > start ? end - start : 0;
    return kn__ox_set(x, 0, kn_from_data(KN_I64, 1, &n, kn_tensor_shape(a) + start));
}

static kn_status size(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    return a ? kn__ox_set(x, 0, kn_scalar(KN_I64, (double)kn_tensor_numel(a))) : kn_last_status();
}

static kn_status reshape(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int64_t s[KN_MAX_DIMS + 1];
    int n = x->opset < 5 ? kn__ox_ints(x, "shape", s, KN_MAX_DIMS + 1)
                         : kn__ox_in_ints(x, 1, s, KN_MAX_DIMS + 1);
    if (n < 0) return n;
    if (n > KN_MAX_DIMS) return kn__err(KN_ELIMIT, "shape of %d dims", n);
    bool allow_zero = kn__ox_int(x, "allowzero", 0) != 0;
    for (int i = 0; i < n; i++)
        if (s[i] == 0 && !allow_zero) {
            if (i >= kn_tensor_ndim(a)) return kn__err(KN_ESHAPE, "shape[%d] = 0 copies no dim", i);
            s[i] = kn_tensor_shape(a)[i];
        }
    return kn__ox_set(x, 0, kn_reshape(a, n, s));
}

static kn_status flatten(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t axis = kn__ox_int(x, "axis", 1);
    if (axis < 0) axis += r;
    if (axis < 0 || axis > r) return kn__err(KN_EINVAL, "axis out of range for rank %d", r);
    int64_t s[2] = {1, 1};
    for (int i = 0; i < r; i++)
        s[i >= axis] *= kn_tensor_shape(a)[i];
    return kn__ox_set(x, 0, kn_reshape(a, 2, s));
}

static kn_status transpose(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t p[KN_MAX_DIMS];
    int dims[KN_MAX_DIMS];
    int n = kn__ox_ints(x, "perm", p, KN_MAX_DIMS);
    if (n < -1) return n;
    if (n >= 0 && n != r) return kn__err(KN_EINVAL, "perm has %d entries for rank %d", n, r);
    for (int i = 0; i < r; i++)
        dims[i] = n >= 0 ? (int)p[i] : r - 1 - i;
    return kn__ox_set(x, 0, kn_permute(a, dims));
}

/* axes of Squeeze / Unsqueeze / reductions: attribute before `input_since`, input after */
static int read_axes(const kn_ox *x, int input_since, int input_index, int64_t *axes, int max) {
    if (x->opset < input_since) return kn__ox_ints(x, "axes", axes, max);
    if (!kn__ox_in(x, input_index)) return -1;
    return kn__ox_in_ints(x, input_index, axes, max);
}

static kn_status squeeze(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t axes[KN_MAX_DIMS], s[KN_MAX_DIMS];
    int n = read_axes(x, 13, 1, axes, KN_MAX_DIMS);
    if (n < -1) return n;
    bool drop[KN_MAX_DIMS] = {0};
    for (int i = 0; i < n; i++) {
        int ax;
        kn_status st = kn__ox_axis(axes[i], r, "axis", &ax);
        if (st) return st;
        if (kn_tensor_shape(a)[ax] != 1)
            return kn__err(KN_ESHAPE, "cannot squeeze dim %d of size %lld", ax,
                           (long long)kn_tensor_shape(a)[ax]);
        drop[ax] = true;
    }
    int k = 0;
    for (int i = 0; i < r; i++)
        if (!(n < 0 ? kn_tensor_shape(a)[i] == 1 : drop[i])) s[k++] = kn_tensor_shape(a)[i];
    return kn__ox_set(x, 0, kn_reshape(a, k, s));
}

static kn_status unsqueeze(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t axes[KN_MAX_DIMS], s[KN_MAX_DIMS];
    int n = read_axes(x, 13, 1, axes, KN_MAX_DIMS);
    if (n < -1) return n;
    if (n < 0) return kn__err(KN_EINVAL, "axes is required");
    int out = r + n;
    if (out > KN_MAX_DIMS) return kn__err(KN_ELIMIT, "result of rank %d", out);
    bool ins[KN_MAX_DIMS] = {0};
    for (int i = 0; i < n; i++) {
        int ax;
        kn_status st = kn__ox_axis(axes[i], out, "axis", &ax);
        if (st) return st;
        if (ins[ax]) return kn__err(KN_EINVAL, "axis %d repeated", ax);
        ins[ax] = true;
    }
    for (int i = 0, k = 0; i < out; i++)
        s[i] = ins[i] ? 1 : kn_tensor_shape(a)[k++];
    return kn__ox_set(x, 0, kn_reshape(a, out, s));
}

static kn_status concat(kn_ox *x) {
    kn_tensor *ts[KN_OX_MAX_IO];
    int n = 0;
    for (int i = 0; i < x->nin; i++) {
        kn_tensor *t = kn__ox_in(x, i);
        if (t) ts[n++] = t;
    }
    if (!n) return kn__err(KN_EINVAL, "no inputs");
    int axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 1), kn_tensor_ndim(ts[0]), "axis", &axis);
    if (st) return st;
    return kn__ox_set(x, 0, n == 1 ? kn_clone(ts[0]) : kn_concat(ts, n, axis));
}

static kn_status split(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 0), kn_tensor_ndim(a), "axis", &axis);
    if (st) return st;
    int64_t len = kn_tensor_shape(a)[axis], parts[KN_OX_MAX_IO];
    int n = x->opset < 13 ? kn__ox_ints(x, "split", parts, KN_OX_MAX_IO)
                          : (kn__ox_in(x, 1) ? kn__ox_in_ints(x, 1, parts, KN_OX_MAX_IO) : -1);
    if (n < -1) return n;
    if (n < 0) { /* equal parts, one per output */
        n = x->nout;
        if (n < 1 || len % n)
            return kn__err(KN_ESHAPE, "dim %lld does not split into %d equal parts", (long long)len,
                           n);
        for (int i = 0; i < n; i++)
            parts[i] = len / n;
    }
    if (n != x->nout) return kn__err(KN_EINVAL, "%d split sizes for %d outputs", n, x->nout);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (parts[i] < 0 || at + parts[i] > len)
            return kn__err(KN_ESHAPE, "split sizes do not add up to %lld", (long long)len);
        if (x->want[i] && (st = kn__ox_set(x, i, kn_slice(a, axis, at, at + parts[i], 1))))
            return st;
        at += parts[i];
    }
    if (at != len) return kn__err(KN_ESHAPE, "split sizes do not add up to %lld", (long long)len);
    return KN_OK;
}

/* x[idx] along dim with host-computed indices (graph constants) */
static kn_tensor *take(kn_tensor *a, int dim, const int64_t *idx, int64_t n) {
    kn_tensor *it = kn_from_data(KN_I64, 1, &n, idx);
    return it ? kn_index_select(a, dim, it) : NULL;
}

static kn_status slice(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t st_[KN_MAX_DIMS], en[KN_MAX_DIMS], ax[KN_MAX_DIMS], sp[KN_MAX_DIMS];
    int ns, ne, na, nst;
    if (x->opset < 10) {
        ns = kn__ox_ints(x, "starts", st_, KN_MAX_DIMS);
        ne = kn__ox_ints(x, "ends", en, KN_MAX_DIMS);
        na = kn__ox_ints(x, "axes", ax, KN_MAX_DIMS);
        nst = -1;
    } else {
        ns = kn__ox_in_ints(x, 1, st_, KN_MAX_DIMS);
        ne = kn__ox_in_ints(x, 2, en, KN_MAX_DIMS);
        na = kn__ox_in(x, 3) ? kn__ox_in_ints(x, 3, ax, KN_MAX_DIMS) : -1;
        nst = kn__ox_in(x, 4) ? kn__ox_in_ints(x, 4, sp, KN_MAX_DIMS) : -1;
    }
    if (ns < 0 && ns != -1) return ns;
    if (ne < -1 || na < -1 || nst < -1) return ne < -1 ? ne : na < -1 ? na : nst;
    if (ns < 0 || ne != ns || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
        return kn__err(KN_EINVAL, "starts, ends, axes and steps must have the same length");
    kn_tensor *y = a;
    for (int i = 0; i < ns && y; i++) {
        int d;
        kn_status st = kn__ox_axis(na >= 0 ? ax[i] : i, r, "axis", &d);
        if (st) return st;
        int64_t dim = kn_tensor_shape(a)[d], step = nst >= 0 ? sp[i] : 1;
        int64_t s = st_[i], e = en[i];
        if (step == 0) return kn__err(KN_EINVAL, "step 0");
        /* a step beyond the dim takes at most one element either way: clamping it keeps the
         * result and the arithmetic in range (INT64_MIN cannot be negated) */
        int64_t lim = dim > 0 ? dim : 1;
        if (step > lim) step = lim;
        if (step < -lim) step = -lim;
        if (step > 0) {
            y = kn_slice(y, d, s < -dim ? 0 : s, e < -dim ? 0 : e, step);
            continue;
        }
        /* negative step: start clamps to [0, dim-1], end to [-1, dim-1] after adding dim */
        if (s < 0) s += dim;
        if (e < 0) e += dim;
        s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
        e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
        int64_t cnt = s > e ? (s - e - 1) / -step + 1 : 0;
        int64_t *idx = kn__malloc(sizeof(int64_t) * (size_t)(cnt ? cnt : 1));
        if (!idx) return KN_ENOMEM;
        for (int64_t k = 0; k < cnt; k++)
            idx[k] = s + k * step;
        y = take(y, d, idx, cnt);
        kn__free(idx);
    }
    return kn__ox_set(x, 0, y == a ? kn_clone(a) : y);
}

/* negative indices count from the end of dim */
static kn_tensor *wrap_index(const kn_ox *x, int i, int64_t dim) {
    kn_tensor *idx = kn__ox_need(x, i);
    if (!idx) return NULL;
    if (kn_tensor_dtype(idx) != KN_I64) idx = kn_cast(idx, KN_I64);
    kn_tensor *zero = kn_scalar(KN_I64, 0);
    return kn_where(kn_lt(idx, zero), kn_add(idx, kn_scalar(KN_I64, (double)dim)), idx);
}

static kn_status gather(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a || !kn__ox_need(x, 1)) return kn_last_status();
    int r = kn_tensor_ndim(a), axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 0), r, "axis", &axis);
    if (st) return st;
    kn_tensor *idx = wrap_index(x, 1, kn_tensor_shape(a)[axis]);
    if (!idx) return kn_last_status();
    int ri = kn_tensor_ndim(idx);
    if (r - 1 + ri > KN_MAX_DIMS) return kn__err(KN_ELIMIT, "result of rank %d", r - 1 + ri);
    int64_t n = kn_tensor_numel(idx), s[KN_MAX_DIMS];
    kn_tensor *y = kn_index_select(a, axis, kn_reshape(idx, 1, &n));
    int k = 0;
    for (int i = 0; i < axis; i++)
        s[k++] = kn_tensor_shape(a)[i];
    for (int i = 0; i < ri; i++)
        s[k++] = kn_tensor_shape(idx)[i];
    for (int i = axis + 1; i < r; i++)
        s[k++] = kn_tensor_shape(a)[i];
    return kn__ox_set(x, 0, y ? kn_reshape(y, k, s) : NULL);
}

static kn_status gather_elements(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a || !kn__ox_need(x, 1)) return kn_last_status();
    int axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 0), kn_tensor_ndim(a), "axis", &axis);
    if (st) return st;
    kn_tensor *idx = wrap_index(x, 1, kn_tensor_shape(a)[axis]);
    return kn__ox_set(x, 0, idx ? kn_gather(a, axis, idx) : NULL);
}

/* NumPy broadcast of a shape with x's, for Expand */
static kn_status expand(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int64_t s[KN_MAX_DIMS], out[KN_MAX_DIMS];
    int n = kn__ox_in_ints(x, 1, s, KN_MAX_DIMS);
    if (n < 0) return n;
    int r = kn_tensor_ndim(a), o;
    kn_status st = kn__broadcast_shape("Expand", r, kn_tensor_shape(a), n, s, &o, out);
    if (st) return st;
    int64_t as[KN_MAX_DIMS];
    for (int i = 0; i < o; i++)
        as[i] = i < o - r ? 1 : kn_tensor_shape(a)[i - (o - r)];
    kn_tensor *v = o == r ? a : kn_reshape(a, o, as);
    return kn__ox_set(x, 0, kn_contiguous(kn_expand(v, o, out)));
}

static kn_status constant_of_shape(kn_ox *x) {
    int64_t s[KN_MAX_DIMS];
    int n = kn__ox_in_ints(x, 0, s, KN_MAX_DIMS);
    if (n < 0) return n;
    const kn_onnx_attr *a = kn__ox_attr(x, "value");
    kn_dtype dt = KN_F32;
    double v = 0;
    if (a && a->t) {
        kn_tensor *t = kn__ox_tensor(a->t, NULL);
        if (!t) return kn_last_status();
        if (kn_tensor_numel(t) != 1) return kn__err(KN_EINVAL, "value must have one element");
        dt = kn_tensor_dtype(t);
        v = kn_item(t); /* t belongs to the import's scope */
    }
    return kn__ox_set(x, 0, kn_full(dt, n, s, v));
}

static kn_status range(kn_ox *x) {
    double v[3];
    for (int i = 0; i < 3; i++) {
        int n = kn__ox_in_doubles(x, i, &v[i], 1);
        if (n < 0) return n;
        if (n != 1) return kn__err(KN_EINVAL, "input %d must be a scalar", i);
    }
    if (v[2] == 0) return kn__err(KN_EINVAL, "delta 0");
    kn_dtype dt = kn_tensor_dtype(x->in[0]);
    double cnt = ceil((v[1] - v[0]) / v[2]);
    if (!(cnt <= 1e9)) return kn__err(KN_ELIMIT, "range of %g elements", cnt); /* NaN too */
    int64_t n = cnt > 0 ? (int64_t)cnt : 0;
    kn_tensor *r = kn_empty(KN_F64, 1, &n);
    if (!r) return kn_last_status();
    double *p = kn_tensor_data(r);
    for (int64_t i = 0; i < n; i++)
        p[i] = v[0] + (double)i * v[2];
    return kn__ox_set(x, 0, dt == KN_F64 ? r : kn_cast(r, dt));
}

static kn_status tile(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int64_t rep[KN_MAX_DIMS];
    int n = kn__ox_in_ints(x, 1, rep, KN_MAX_DIMS);
    if (n < 0) return n;
    if (n != kn_tensor_ndim(a))
        return kn__err(KN_EINVAL, "repeats has %d values for rank %d", n, kn_tensor_ndim(a));
    return kn__ox_set(x, 0, kn_repeat(a, n, rep));
}

static kn_status pad(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t p[2 * KN_MAX_DIMS];
    double value = 0;
    int n;
    if (x->opset < 11) {
        n = kn__ox_ints(x, "pads", p, 2 * KN_MAX_DIMS);
        if (n < 0) n = kn__ox_ints(x, "paddings", p, 2 * KN_MAX_DIMS); /* opset 1 */
        value = kn__ox_float(x, "value", 0.0);
    } else {
        n = kn__ox_in_ints(x, 1, p, 2 * KN_MAX_DIMS);
        if (n >= 0 && kn__ox_in(x, 2)) {
            int k = kn__ox_in_doubles(x, 2, &value, 1);
            if (k < 0) return k;
        }
    }
    if (n < -1) return n;
    if (n != 2 * r) return kn__err(KN_EINVAL, "pads has %d values for rank %d", n, r);
    char mb[16];
    const char *mode = kn__ox_str(x, "mode", "constant", mb, sizeof mb);
    if (!strcmp(mode, "constant")) {
        int64_t tp[2 * KN_MAX_DIMS];
        for (int d = 0; d < r; d++)
            tp[2 * (r - 1 - d)] = p[d], tp[2 * (r - 1 - d) + 1] = p[r + d];
        if (2 * r > KN_MAX_ATTR_INTS) return kn__err(KN_ELIMIT, "pad of rank %d", r);
        return kn__ox_set(x, 0, kn_pad(a, tp, 2 * r, KN_PAD_CONSTANT, value));
    }
    bool reflect = !strcmp(mode, "reflect");
    if (!reflect && strcmp(mode, "edge")) return kn__err(KN_EUNSUPPORTED, "pad mode '%s'", mode);
    /* per dim: an index_select with reflected / clamped indices */
    kn_tensor *y = a;
    for (int d = 0; d < r && y; d++) {
        int64_t lo = p[d], hi = p[r + d], dim = kn_tensor_shape(a)[d];
        if (!lo && !hi) continue;
        if (lo < 0 || hi < 0 || dim == 0 || lo > (int64_t)1 << 31 || hi > (int64_t)1 << 31 ||
            (reflect && (lo >= dim || hi >= dim)))
            return kn__err(KN_EINVAL, "%s pads (%lld, %lld) do not fit dim %d of size %lld", mode,
                           (long long)lo, (long long)hi, d, (long long)dim);
        int64_t cnt = dim + lo + hi;
        int64_t *idx = kn__malloc(sizeof(int64_t) * (size_t)cnt);
        if (!idx) return KN_ENOMEM;
        for (int64_t k = 0; k < cnt; k++) {
            int64_t i = k - lo;
            if (reflect) {
                if (i < 0) i = -i;
                if (i >= dim) i = 2 * (dim - 1) - i;
            } else {
                i = i < 0 ? 0 : i >= dim ? dim - 1 : i;
            }
            idx[k] = i;
        }
        y = take(y, d, idx, cnt);
        kn__free(idx);
    }
    return kn__ox_set(x, 0, y == a ? kn_clone(a) : y);
}

static kn_status trilu(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int64_t k = 0;
    if (kn__ox_in(x, 1)) {
        int n = kn__ox_in_ints(x, 1, &k, 1);
        if (n < 0) return n;
    }
    bool upper = kn__ox_int(x, "upper", 1) != 0;
    return kn__ox_set(x, 0, upper ? kn_triu(a, k) : kn_tril(a, k));
}

/* DepthToSpace (DCR / CRD) and SpaceToDepth: reshape, permute, reshape */
static kn_status depth_space(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    if (kn_tensor_ndim(a) != 4) return kn__err(KN_ESHAPE, "input must be 4-D");
    int64_t b = kn__ox_int(x, "blocksize", 0);
    const int64_t *s = kn_tensor_shape(a);
    int64_t N = s[0], C = s[1], H = s[2], W = s[3];
    if (b < 1 || b > (1 << 15)) return kn__err(KN_EINVAL, "blocksize must be in [1, 32768]");
    bool to_space = x->node->op_type.p[0] == 'D';
    kn_tensor *y;
    if (to_space) {
        if (C % (b * b)) return kn__err(KN_ESHAPE, "channels not divisible by blocksize^2");
        char mb[8];
        bool crd = !strcmp(kn__ox_str(x, "mode", "DCR", mb, sizeof mb), "CRD");
        int64_t c = C / (b * b);
        int64_t s6[6] = {N, b, b, c, H, W}, o4[4] = {N, c, H * b, W * b};
        int p[6] = {0, 3, 4, 1, 5, 2};
        if (crd) {
            s6[1] = c, s6[2] = b, s6[3] = b;
            int q[6] = {0, 1, 4, 2, 5, 3};
            memcpy(p, q, sizeof p);
        }
        y = kn_reshape(kn_permute(kn_reshape(a, 6, s6), p), 4, o4);
    } else {
        if (H % b || W % b) return kn__err(KN_ESHAPE, "spatial dims not divisible by blocksize");
        int64_t s6[6] = {N, C, H / b, b, W / b, b}, o4[4] = {N, C * b * b, H / b, W / b};
        int p[6] = {0, 3, 5, 1, 2, 4};
        y = kn_reshape(kn_permute(kn_reshape(a, 6, s6), p), 4, o4);
    }
    return kn__ox_set(x, 0, y);
}

static kn_status eye_like(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    if (kn_tensor_ndim(a) != 2) return kn__err(KN_ESHAPE, "input must be 2-D");
    kn_dtype dt = kn_tensor_dtype(a);
    if (kn__ox_attr(x, "dtype")) {
        int d = kn__ox_dtype((int32_t)kn__ox_int(x, "dtype", 1));
        if (d < 0) return kn__err(KN_EUNSUPPORTED, "dtype");
        dt = (kn_dtype)d;
    }
    int64_t n = kn_tensor_shape(a)[0], m = kn_tensor_shape(a)[1], k = kn__ox_int(x, "k", 0);
    double *p = kn__calloc((size_t)(n * m) + 1, sizeof(double));
    if (!p) return KN_ENOMEM;
    /* the rows i with 0 <= i + k < m, computed without overflow (k comes from the file) */
    if (n > 0 && m > 0 && k < m && k > -n) {
        int64_t i0 = k < 0 ? -k : 0, i1 = m - k < n ? m - k : n;
        for (int64_t i = i0; i < i1; i++)
            p[i * m + i + k] = 1;
    }
    kn_tensor *e = kn_from_data(KN_F64, 2, kn_tensor_shape(a), p);
    kn__free(p);
    return kn__ox_set(x, 0, e ? kn_cast(e, dt) : NULL);
}

/* HannWindow / HammingWindow / BlackmanWindow (opset 17): a constant of `size` values */
static kn_status window(kn_ox *x) {
    int64_t n;
    int k = kn__ox_in_ints(x, 0, &n, 1);
    if (k < 0) return k;
    if (k != 1 || n < 0 || n > (int64_t)1 << 24)
        return kn__err(KN_EINVAL, "size must be one value in [0, 2^24]");
    int dt = kn__ox_dtype((int32_t)kn__ox_int(x, "output_datatype", KN_ONNX_FLOAT));
    if (dt < 0) return kn__err(KN_EUNSUPPORTED, "output_datatype");
    double len = kn__ox_int(x, "periodic", 1) ? (double)n : (double)(n - 1);
    double *w = kn__malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!w) return KN_ENOMEM;
    char kind = x->node->op_type.p[0]; /* Hann, Hamming, Blackman */
    bool hann = kind == 'H' && x->node->op_type.n == 10;
    for (int64_t i = 0; i < n; i++) {
        double a = len > 0 ? 2 * M_PI * (double)i / len : 0;
        w[i] = kind == 'B' ? 0.42 - 0.5 * cos(a) + 0.08 * cos(2 * a)
               : hann      ? 0.5 - 0.5 * cos(a)
                           : 25.0 / 46.0 - 21.0 / 46.0 * cos(a);
    }
    kn_tensor *t = kn_from_data(KN_F64, 1, &n, w);
    kn__free(w);
    return kn__ox_set(x, 0, t && dt != KN_F64 ? kn_cast(t, (kn_dtype)dt) : t);
}

const kn_ox_op kn__ox_ops_shape[] = {
    {"Constant", constant, 1, 0, false},
    {"Identity", identity, 1, 0, false},
    {"Shape", shape, 1, 0, true},
    {"Size", size, 1, 0, true},
    {"Reshape", reshape, 1, 0, false},
    {"Flatten", flatten, 1, 0, false},
    {"Transpose", transpose, 1, 0, false},
    {"Squeeze", squeeze, 1, 0, false},
    {"Unsqueeze", unsqueeze, 1, 0, false},
    {"Concat", concat, 1, 0, false},
    {"Split", split, 1, 17, false},
    {"Slice", slice, 1, 0, false},
    {"Gather", gather, 1, 0, false},
    {"GatherElements", gather_elements, 11, 0, false},
    {"Expand", expand, 8, 0, false},
    {"ConstantOfShape", constant_of_shape, 9, 0, false},
    {"Range", range, 11, 0, false},
    {"Tile", tile, 6, 0, false},
    {"Pad", pad, 1, 0, false},
    {"Trilu", trilu, 14, 0, false},
    {"DepthToSpace", depth_space, 1, 0, false},
    {"SpaceToDepth", depth_space, 1, 0, false},
    {"EyeLike", eye_like, 9, 0, true},
    {"HannWindow", window, 17, 0, false},
    {"HammingWindow", window, 17, 0, false},
    {"BlackmanWindow", window, 17, 0, false},
    {NULL, NULL, 0, 0, false},
};
