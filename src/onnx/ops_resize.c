/*
 * ops_resize.c - ONNX resize ops onto kiln's: Resize (opset 10: scales only, asymmetric; opset
 * 11+: roi / scales / sizes, modes nearest / linear / cubic, every coordinate_transformation_mode
 * incl. tf_crop_and_resize with extrapolation_value, nearest_mode, cubic_coeff_a,
 * exclude_outside; opset 18+: axes and keep_aspect_ratio_policy, antialias refused) and Upsample
 * (opset 7 scales attribute, opset 9 scales input).
 *
 * Resizing is separable: for each resized axis the source indices and weights of every output
 * position (1 tap for nearest, 2 for linear, 4 for cubic, following ONNX's reference: edge
 * clamping, exclude_outside renormalisation) are computed here on the host, and the axis becomes
 * sum_k weight_k * index_select(x, axis, index_k) with the weights a graph constant broadcast
 * along that axis (nearest is a single index_select). tf_crop_and_resize positions outside the
 * input get extrapolation_value through a where with a constant mask. Upsample and Resize-10
 * nearest pick floor when enlarging and ceil when shrinking (as ONNX Runtime). Linear / cubic
 * compute in f64 for f64 inputs and in f32 otherwise (integers rounded back).
 */
#include <math.h>
#include <string.h>

#include "onnx/onnx_impl.h"

enum { RZ_NEAREST, RZ_LINEAR, RZ_CUBIC };
enum { CT_HALF_PIXEL, CT_HALF_PIXEL_SYM, CT_PYTORCH, CT_ALIGN, CT_ASYM, CT_TF_NN, CT_TF_CROP };
enum { NM_PREFER_FLOOR, NM_PREFER_CEIL, NM_FLOOR, NM_CEIL, NM_LEGACY };

#define RZ_MAX_TAPS 4
#define RZ_MAX_OUT ((int64_t)1 << 31)

typedef struct rz_params {
    int mode, ctm, nearest;
    double cubic_a, extrapolation;
    bool exclude_outside;
} rz_params;

/* Source position of output position xo along an axis of length `in` resized by `scale` to `out`
 * (ONNX's reference: the "output width" of the formulas is scale * in, not out). */
static double source_pos(const rz_params *p, int64_t xo, int64_t in, int64_t out, double scale,
                         double lo, double hi) {
    double x = (double)xo, ow = scale * (double)in;
    switch (p->ctm) {
    case CT_HALF_PIXEL_SYM: {
        double adjustment = (double)out / ow, center = (double)in / 2;
        return center * (1 - adjustment) + (x + 0.5) / scale - 0.5;
    }
    case CT_PYTORCH: return out > 1 ? (x + 0.5) / scale - 0.5 : 0;
    case CT_ALIGN: return ow == 1 ? 0 : x * (double)(in - 1) / (ow - 1);
    case CT_ASYM: return x / scale;
    case CT_TF_NN: return (x + 0.5) / scale;
    case CT_TF_CROP:
        return (ow == 1 ? (hi - lo) * (double)(in - 1) / 2
                        : x * (hi - lo) * (double)(in - 1) / (ow - 1)) +
               lo * (double)(in - 1);
    default: return (x + 0.5) / scale - 0.5;
    }
}

/* The window coefficients for fractional part `ratio` in (0, 1]; returns the tap count. */
static int coeffs(const rz_params *p, double ratio, double scale, double *c) {
    if (p->mode == RZ_NEAREST) {
        int nm = p->nearest;
        if (nm == NM_LEGACY) nm = scale >= 1 ? NM_FLOOR : NM_CEIL; /* Upsample / Resize-10 */
        bool right = ratio == 1              ? true
                     : nm == NM_PREFER_FLOOR ? ratio > 0.5
                     : nm == NM_PREFER_CEIL  ? ratio >= 0.5
                                             : nm == NM_CEIL;
        c[0] = right ? 0 : 1;
        c[1] = right ? 1 : 0;
        return 2;
    }
    if (p->mode == RZ_LINEAR) {
        c[0] = 1 - ratio;
        c[1] = ratio;
        return 2;
    }
    double A = p->cubic_a, r = ratio, s = 1 - ratio;
    c[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
    c[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
    c[2] = ((A + 2) * s - (A + 3)) * s * s + 1;
    c[3] = ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A;
    return 4;
}

/* Per output position: up to RZ_MAX_TAPS (index, weight) pairs with distinct indices and
 * non-zero weights (idx/w are out * RZ_MAX_TAPS), their count, and whether the position lies
 * outside the input (tf_crop_and_resize: extrapolation_value). */
static void plan_axis(const rz_params *p, int64_t in, int64_t out, double scale, double lo,
                      double hi, int64_t *idx, double *w, int *cnt, bool *outside) {
    for (int64_t xo = 0; xo < out; xo++) {
        int64_t *pi = idx + xo * RZ_MAX_TAPS;
        double *pw = w + xo * RZ_MAX_TAPS;
        double xs = source_pos(p, xo, in, out, scale, lo, hi);
        cnt[xo] = 0;
        outside[xo] = p->ctm == CT_TF_CROP && (xs < 0 || xs > (double)(in - 1));
        if (outside[xo]) continue;
        double fl = floor(xs), ratio = xs == fl ? 1 : xs - fl, c[RZ_MAX_TAPS];
        int n = coeffs(p, ratio, scale, c), half = n / 2;
        /* the n nearest indices of the edge-padded axis (pad n/2 each side), ties to the left:
         * the window starting at ceil(xs) - n/2, moved inside the padded axis */
        double cs = ceil(xs), lim = (double)in + 2 * half;
        cs = cs < -lim ? -lim : cs > lim ? lim : cs;
        int64_t start = (int64_t)cs; /* ceil(xs) - n/2, in padded coordinates */
        if (start < 0) start = 0;
        if (start > in + 2 * half - n) start = in + 2 * half - n;
        start -= half;
        if (p->exclude_outside) {
            double sum = 0;
            for (int k = 0; k < n; k++) {
                if (start + k < 0 || start + k >= in) c[k] = 0;
                sum += c[k];
            }
            if (sum != 0)
                for (int k = 0; k < n; k++)
                    c[k] /= sum;
        }
        for (int k = 0; k < n; k++) {
            if (c[k] == 0) continue;
            int64_t t = start + k;
            t = t < 0 ? 0 : t >= in ? in - 1 : t;
            int j = 0;
            while (j < cnt[xo] && pi[j] != t)
                j++;
            if (j == cnt[xo]) {
                pi[j] = t;
                pw[j] = 0;
                cnt[xo]++;
            }
            pw[j] += c[k];
        }
    }
}

/* A constant of `n` values shaped to broadcast along `axis` of a rank-`rank` tensor. */
static kn_tensor *along(kn_dtype dt, const void *data, int64_t n, int axis, int rank) {
    int64_t s[KN_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        s[i] = i == axis ? n : 1;
    return kn_from_data(dt, rank, s, data);
}

/* a resized along `axis` to `out` positions. */
static kn_tensor *resize_axis(const rz_params *p, kn_tensor *a, int axis, int64_t out, double scale,
                              double lo, double hi) {
    int rank = kn_tensor_ndim(a);
    int64_t in = kn_tensor_shape(a)[axis];
    kn_dtype dt = kn_tensor_dtype(a);
    size_t n = (size_t)(out > 0 ? out : 1);
    int64_t *idx = kn__malloc(n * RZ_MAX_TAPS * sizeof *idx), *col = kn__malloc(n * sizeof *col);
    double *w = kn__malloc(n * RZ_MAX_TAPS * sizeof *w);
    int *cnt = kn__malloc(n * sizeof *cnt);
    bool *outside = kn__malloc(n * sizeof *outside);
    void *wk = kn__malloc(n * sizeof(double));
    kn_tensor *y = NULL;
    if (!idx || !col || !w || !cnt || !outside || !wk) goto done;
    plan_axis(p, in, out, scale, lo, hi, idx, w, cnt, outside);
    int taps = 0;
    bool ones = true, identity = out == in, any_outside = false;
    for (int64_t i = 0; i < out; i++) {
        taps = cnt[i] > taps ? cnt[i] : taps;
        any_outside |= outside[i];
        if (!outside[i] && (cnt[i] != 1 || w[i * RZ_MAX_TAPS] != 1)) ones = false;
        if (cnt[i] != 1 || idx[i * RZ_MAX_TAPS] != i) identity = false;
    }
    identity = identity && ones && !any_outside;
    if (identity) {
        y = a;
        goto done;
    }
    int64_t shp[KN_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        shp[i] = i == axis ? out : kn_tensor_shape(a)[i];
    if (taps == 0) { /* every position outside (or no position at all) */
        y = kn_full(dt, rank, shp, any_outside ? p->extrapolation : 0);
        goto done;
    }
    for (int k = 0; k < taps; k++) {
        for (int64_t i = 0; i < out; i++) {
            bool has = k < cnt[i];
            col[i] = cnt[i] ? idx[i * RZ_MAX_TAPS + (has ? k : 0)] : 0;
            double v = has ? w[i * RZ_MAX_TAPS + k] : 0;
            if (dt == KN_F64)
                ((double *)wk)[i] = v;
            else
                ((float *)wk)[i] = (float)v;
        }
        kn_tensor *g = kn_index_select(a, axis, kn_from_data(KN_I64, 1, &out, col));
        if (!ones) g = kn_mul(g, along(dt, wk, out, axis, rank));
        y = k ? kn_add(y, g) : g;
        if (!y) goto done;
    }
    if (any_outside)
        y = kn_where(along(KN_BOOL, outside, out, axis, rank),
                     kn__ox_scalar_like(a, p->extrapolation), y);
done:
    kn__free(idx);
    kn__free(col);
    kn__free(w);
    kn__free(cnt);
    kn__free(outside);
    kn__free(wk);
    return y;
}

/* Resizes every axis of a to out[] with scale[] (roi: starts then ends, per axis). */
static kn_status resize(kn_ox *x, kn_tensor *a, const rz_params *p, const int64_t *out,
                        const double *scale, const double *roi) {
    int rank = kn_tensor_ndim(a);
    kn_dtype dt = kn_tensor_dtype(a);
    bool weighted = p->mode != RZ_NEAREST || p->exclude_outside;
    kn_dtype cdt = dt == KN_F64 ? KN_F64 : KN_F32;
    kn_tensor *y = weighted && cdt != dt ? kn_cast(a, cdt) : a;
    /* shrinking axes first: the later ones then work on less data */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < rank && y; i++) {
            if ((out[i] < kn_tensor_shape(a)[i]) != (pass == 0)) continue;
            if (out[i] > RZ_MAX_OUT)
                return kn__err(KN_ELIMIT, "output dim %d of %lld", i, (long long)out[i]);
            y = resize_axis(p, y, i, out[i], scale[i], roi ? roi[i] : 0, roi ? roi[rank + i] : 1);
        }
    if (y && kn_tensor_dtype(y) != dt)
        y = kn_cast(dt == KN_F16 || dt == KN_BF16 ? y : kn_round(y), dt);
    return kn__ox_set(x, 0, y);
}

/* The output size of a dim of `in` for scale s (floor(in * ext * s), ext: the roi extent of
 * tf_crop_and_resize, else 1); i names the scale in errors. */
static kn_status scale_dim(int64_t in, double s, double ext, int i, int64_t *out) {
    if (!(s > 0) || !isfinite(s))
        return kn__err(KN_EINVAL, "scales[%d] = %g is not a positive number", i, s);
    double o = floor((double)in * ext * s);
    if (!(o >= 0) || o > (double)RZ_MAX_OUT) return kn__err(KN_ELIMIT, "output dim %d of %g", i, o);
    *out = (int64_t)o;
    return KN_OK;
}

static int parse_mode(const char *m) {
    if (!strcmp(m, "nearest")) return RZ_NEAREST;
    if (!strcmp(m, "linear") || !strcmp(m, "bilinear")) return RZ_LINEAR;
    if (!strcmp(m, "cubic")) return RZ_CUBIC;
    return -1;
}

/* Upsample (7..9) and Resize-10: scales only, asymmetric coordinates, nearest = floor when
 * enlarging and ceil when shrinking (as ONNX Runtime). */
static kn_status legacy(kn_ox *x, bool upsample) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int rank = kn_tensor_ndim(a);
    char mb[32];
    const char *m = kn__ox_str(x, "mode", "nearest", mb, sizeof mb);
    rz_params p = {parse_mode(m), CT_ASYM, NM_LEGACY, -0.75, 0, false};
    if (p.mode < 0 || p.mode == RZ_CUBIC) return kn__err(KN_EUNSUPPORTED, "mode '%s'", m);
    double sc[KN_MAX_DIMS], scale[KN_MAX_DIMS];
    int64_t out[KN_MAX_DIMS];
    int n;
    if (upsample && x->opset < 9) {
        float f[KN_MAX_DIMS];
        n = kn__ox_floats(x, "scales", f, KN_MAX_DIMS);
        if (n == -1) return kn__err(KN_EINVAL, "attribute scales is required");
        for (int i = 0; i < n; i++)
            sc[i] = f[i];
    } else {
        n = kn__ox_in_doubles(x, 1, sc, KN_MAX_DIMS);
    }
    if (n < -1) return n;
    if (n != rank) return kn__err(KN_EINVAL, "%d scales for rank %d", n, rank);
    for (int i = 0; i < rank; i++) {
        kn_status st = scale_dim(kn_tensor_shape(a)[i], sc[i], 1, i, &out[i]);
        if (st) return st;
        scale[i] = sc[i];
    }
    return resize(x, a, &p, out, scale, NULL);
}

static kn_status upsample(kn_ox *x) {
    return legacy(x, true);
}

/* Static input i, or -1 when absent or empty. */
static int optional_doubles(const kn_ox *x, int i, double *v, int max) {
    kn_tensor *t = kn__ox_in(x, i);
    if (!t || kn_tensor_numel(t) == 0) return -1;
    return kn__ox_in_doubles(x, i, v, max);
}

static kn_status resize_op(kn_ox *x) {
    if (x->opset < 11) return legacy(x, false);
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int rank = kn_tensor_ndim(a);
    char mb[32], cb[32], nb[32], kb[32];
    const char *m = kn__ox_str(x, "mode", "nearest", mb, sizeof mb);
    const char *ct = kn__ox_str(x, "coordinate_transformation_mode", "half_pixel", cb, sizeof cb);
    const char *nm = kn__ox_str(x, "nearest_mode", "round_prefer_floor", nb, sizeof nb);
    const char *kp = kn__ox_str(x, "keep_aspect_ratio_policy", "stretch", kb, sizeof kb);
    rz_params p = {parse_mode(m),
                   -1,
                   -1,
                   kn__ox_float(x, "cubic_coeff_a", -0.75),
                   kn__ox_float(x, "extrapolation_value", 0),
                   kn__ox_int(x, "exclude_outside", 0) != 0};
    if (p.mode < 0 || (p.mode == RZ_LINEAR && !strcmp(m, "bilinear")))
        return kn__err(KN_EUNSUPPORTED, "mode '%s'", m);
    static const char *const cts[] = {
        "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
        "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
    for (int i = 0; i < 7; i++)
        if (!strcmp(ct, cts[i])) p.ctm = i;
    if (p.ctm < 0) return kn__err(KN_EUNSUPPORTED, "coordinate_transformation_mode '%s'", ct);
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(nm, nms[i])) p.nearest = i;
    if (p.nearest < 0) return kn__err(KN_EUNSUPPORTED, "nearest_mode '%s'", nm);
    if (kn__ox_int(x, "antialias", 0)) return kn__err(KN_EUNSUPPORTED, "antialias");
    int policy = !strcmp(kp, "stretch")       ? 0
                 : !strcmp(kp, "not_larger")  ? 1
                 : !strcmp(kp, "not_smaller") ? 2
                                              : -1;
    if (policy < 0) return kn__err(KN_EUNSUPPORTED, "keep_aspect_ratio_policy '%s'", kp);

    /* axes (opset 18): the axes scales / sizes / roi name; all axes otherwise */
    int64_t ax64[KN_MAX_DIMS];
    int axes[KN_MAX_DIMS], na = kn__ox_ints(x, "axes", ax64, KN_MAX_DIMS);
    if (na < -1) return na;
    bool seen[KN_MAX_DIMS] = {0};
    if (na < 0) {
        na = rank;
        for (int i = 0; i < rank; i++)
            axes[i] = i;
    } else {
        for (int i = 0; i < na; i++) {
            kn_status st = kn__ox_axis(ax64[i], rank, "axis", &axes[i]);
            if (st) return st;
            if (seen[axes[i]]) return kn__err(KN_EINVAL, "axis %d repeated", axes[i]);
            seen[axes[i]] = true;
        }
    }

    double scale[KN_MAX_DIMS], roi[2 * KN_MAX_DIMS], r[2 * KN_MAX_DIMS], sc[KN_MAX_DIMS];
    int64_t out[KN_MAX_DIMS], sz[KN_MAX_DIMS];
    for (int i = 0; i < rank; i++) {
        out[i] = kn_tensor_shape(a)[i];
        scale[i] = 1;
        roi[i] = 0;
        roi[rank + i] = 1;
    }
    if (p.ctm == CT_TF_CROP) {
        int nr = optional_doubles(x, 1, r, 2 * KN_MAX_DIMS);
        if (nr < -1) return nr;
        if (nr != 2 * na)
            return kn__err(KN_EINVAL, "tf_crop_and_resize needs a roi of %d values, got %d", 2 * na,
                           nr < 0 ? 0 : nr);
        for (int i = 0; i < na; i++) {
            if (!isfinite(r[i]) || !isfinite(r[na + i]))
                return kn__err(KN_EINVAL, "roi is not finite");
            roi[axes[i]] = r[i];
            roi[rank + axes[i]] = r[na + i];
        }
    }
    int ns = optional_doubles(x, 2, sc, KN_MAX_DIMS), nz = -1;
    if (ns < -1) return ns;
    kn_tensor *st3 = kn__ox_in(x, 3);
    if (st3 && kn_tensor_numel(st3) > 0) nz = kn__ox_in_ints(x, 3, sz, KN_MAX_DIMS);
    if (nz < -1) return nz;
    if ((ns >= 0) == (nz >= 0))
        return kn__err(KN_EINVAL, "exactly one of scales and sizes must be given");
    if (ns >= 0) {
        if (ns != na) return kn__err(KN_EINVAL, "%d scales for %d axes", ns, na);
        for (int i = 0; i < na; i++) {
            int d = axes[i];
            double ext = p.ctm == CT_TF_CROP ? roi[rank + d] - roi[d] : 1;
            kn_status st = scale_dim(kn_tensor_shape(a)[d], sc[i], ext, i, &out[d]);
            if (st) return st;
            scale[d] = sc[i];
        }
    } else {
        if (nz != na) return kn__err(KN_EINVAL, "%d sizes for %d axes", nz, na);
        double keep = policy == 1 ? INFINITY : 0;
        for (int i = 0; i < na; i++) {
            int64_t in = kn_tensor_shape(a)[axes[i]];
            if (sz[i] < 0 || sz[i] > RZ_MAX_OUT || (in == 0 && sz[i] != 0))
                return kn__err(KN_EINVAL, "sizes[%d] = %lld for a dim of %lld", i, (long long)sz[i],
                               (long long)in);
            double s = in ? (double)sz[i] / (double)in : 1;
            keep = policy == 1 ? fmin(keep, s) : fmax(keep, s);
        }
        for (int i = 0; i < na; i++) {
            int d = axes[i];
            int64_t in = kn_tensor_shape(a)[d];
            if (!in) continue;
            if (policy == 0) {
                out[d] = sz[i];
                scale[d] = (double)sz[i] / (double)in;
            } else { /* one scale for all axes, sizes rounded */
                out[d] = (int64_t)floor(keep * (double)in + 0.5);
                scale[d] = keep;
            }
        }
    }
    for (int i = 0; i < rank; i++)
        if (out[i] > 0 && !(scale[i] > 0))
            return kn__err(KN_EINVAL, "axis %d of size 0 resized to %lld", i, (long long)out[i]);
    return resize(x, a, &p, out, scale, p.ctm == CT_TF_CROP ? roi : NULL);
}

const kn_ox_op kn__ox_ops_resize[] = {
    {"Upsample", upsample, 7, 9, false},
    {"Resize", resize_op, 10, 0, false},
    {NULL, NULL, 0, 0, false},
};
