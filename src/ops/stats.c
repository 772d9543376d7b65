/*
 * stats.c - statistical reductions: prod, amax, amin, max_dim/min_dim (values + i64 indices),
 * argmax/argmin, var/std (with correction), logsumexp, p-norms. PyTorch semantics (torch.prod,
 * torch.amax, torch.max(x, dim), torch.argmax, torch.var(correction=), torch.logsumexp,
 * torch.linalg.vector_norm). sum and mean live in reduce.c; the axis parsing and the (A, R, B)
 * view of a reduction come from reduce_impl.h.
 *
 * dtypes: prod/amax/amin/max_dim/min_dim/argmax/argmin take f32, f64 and the integer types (prod
 * of integers accumulates in int64 with wraparound and returns int64, like PyTorch); var, std,
 * logsumexp and norm take f32/f64. Floats accumulate in double. NaN propagates through max/min
 * (the index of the first NaN wins, like PyTorch); ties give the first index.
 * Empty reductions: prod 1, var/std NaN, logsumexp -inf, norm 0; max/min/arg* refuse them.
 *
 * Gradients (composed of ops): amax/amin split the gradient evenly among tied maxima; max_dim
 * routes it to the returned index; prod uses prod/x without zeros, the product of the others at
 * a single zero, and 0 where a slice holds two or more zeros (PyTorch's rule); norm masks the
 * norm == 0 case to 0 like PyTorch.
 *
 * Determinism: a row reduction (B == 1) is split into fixed chunks of ST_CHUNK elements whose
 * partials are combined in chunk order; a column reduction (B > 1) runs over R in order for each
 * column. Which thread computes what never changes the result.
 */
#include <math.h>
#include <omp.h>

#include "ops/norm_impl.h"
#include "ops/reduce_impl.h"

enum { S_PROD, S_VAR, S_STD, S_LSE, S_NORM, S_AMAX, S_AMIN, S_MAXD, S_MIND, S_ARGMAX, S_ARGMIN };

/* accumulator: prod {prod}; var {n, mean, M2}; lse {shift, sum exp(x - shift)}; norm {sum|max} */
typedef struct sacc {
    double a, b, c;
} sacc;

#define SK_T float
#define SK_SFX f32
#define SK_EXP kn__nrm_expf
#include "ops/stats_kernels.inc"
#undef SK_T
#undef SK_SFX
#undef SK_EXP
#define SK_T double
#define SK_SFX f64
#define SK_EXP exp
#include "ops/stats_kernels.inc"
#undef SK_T
#undef SK_SFX
#undef SK_EXP

#define ST_CHUNK 8192 /* elements per row chunk (fixed: results independent of threads) */

static kn_status fail_status(void) {
    kn_status s = kn_last_status();
    return s != KN_OK ? s : KN_EINTERNAL;
}
static int nthreads(int64_t work) {
    return work >= KN_NRM_PAR_MIN ? kn__threads() : 1;
}

static sacc acc_combine(sacc x, sacc y, int kind) {
    switch (kind) {
    case S_PROD: return (sacc){x.a * y.a, 0, 0};
    case S_VAR:
    case S_STD: {
        if (x.a == 0) return y;
        if (y.a == 0) return x;
        double n = x.a + y.a, d = y.b - x.b;
        return (sacc){n, x.b + d * y.a / n, x.c + y.c + d * d * x.a * y.a / n};
    }
    case S_LSE: {
        double m = x.a > y.a ? x.a : y.a;
        return (sacc){m, x.b * exp(x.a - m) + y.b * exp(y.a - m), 0};
    }
    default: return x; /* S_NORM: handled by the caller (sum or max) */
    }
}

static sacc norm_combine(sacc x, sacc y, double p) {
    if (!isinf(p)) return (sacc){x.a + y.a, 0, 0};
    double r = x.a; /* max, NaN wins */
    if (r == r && (y.a > r || y.a != y.a)) r = y.a;
    return (sacc){r, 0, 0};
}

static double acc_final(sacc s, int kind, double p, int64_t corr) {
    switch (kind) {
    case S_PROD: return s.a;
    case S_VAR:
    case S_STD: {
        double d = s.a - (double)corr;
        double v = s.c / (d > 0 ? d : 0);
        return kind == S_STD ? sqrt(v) : v;
    }
    case S_LSE: return s.a + log(s.b);
    case S_NORM:
        if (p == 2) return sqrt(s.a);
        if (p == 1 || isinf(p)) return s.a;
        return pow(s.a, 1.0 / p);
    }
    return NAN;
}

static void store_f(kn_dtype dt, void *out, int64_t i, double v) {
    if (dt == KN_F32)
        ((float *)out)[i] = (float)v;
    else
        ((double *)out)[i] = v;
}

/* float reductions on a contiguous (A, R, B) buffer */
static kn_status float_reduce(kn_dtype dt, const void *x, void *out, kn_rplan pl, int kind,
                              double p, int64_t corr) {
    int64_t A = pl.A, R = pl.R, B = pl.B;
    if (A * B == 0) return KN_OK;
    size_t es = kn_dtype_size(dt);
    int nt = nthreads(A * R * B);
    if (B == 1) {
        int64_t nch = R ? (R + ST_CHUNK - 1) / ST_CHUNK : 1;
        size_t n;
        sacc *part;
        if (!kn__mul_ok((size_t)(A * nch), sizeof(sacc), &n) || !(part = kn__malloc(n)))
            return fail_status();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < A * nch; t++) {
            int64_t a = t / nch, r0 = (t % nch) * ST_CHUNK;
            int64_t len = R - r0 < ST_CHUNK ? R - r0 : ST_CHUNK;
            const char *xp = (const char *)x + (size_t)(a * R + r0) * es;
            part[t] = dt == KN_F32 ? stat_chunk_f32((const float *)xp, len, kind, p)
                                   : stat_chunk_f64((const double *)xp, len, kind, p);
        }
        int nt2 = nthreads(A * nch * 64);
#pragma omp parallel for num_threads(nt2) schedule(static) if (nt2 > 1)
        for (int64_t a = 0; a < A; a++) {
            sacc s = part[a * nch];
            for (int64_t k = 1; k < nch; k++)
                s = kind == S_NORM ? norm_combine(s, part[a * nch + k], p)
                                   : acc_combine(s, part[a * nch + k], kind);
            store_f(dt, out, a, acc_final(s, kind, p, corr));
        }
        kn__free(part);
        return KN_OK;
    }
    int64_t nib = (B + SK_IB - 1) / SK_IB;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < A * nib; t++) {
        int64_t a = t / nib, i0 = (t % nib) * SK_IB, i1 = i0 + SK_IB < B ? i0 + SK_IB : B;
        sacc acc[SK_IB];
        const char *xp = (const char *)x + (size_t)(a * R * B) * es;
        if (dt == KN_F32)
            stat_cols_f32((const float *)xp, R, B, i0, i1, kind, p, acc);
        else
            stat_cols_f64((const double *)xp, R, B, i0, i1, kind, p, acc);
        for (int64_t i = i0; i < i1; i++)
            store_f(dt, out, a * B + i, acc_final(acc[i - i0], kind, p, corr));
    }
    return KN_OK;
}

static int64_t load_i64(kn_dtype dt, const char *base, int64_t i) {
    switch (dt) {
    case KN_I8: return ((const int8_t *)base)[i];
    case KN_U8: return ((const uint8_t *)base)[i];
    case KN_I32: return ((const int32_t *)base)[i];
    case KN_I64: return ((const int64_t *)base)[i];
    default: return 0;
    }
}

/* integer product, wrapping like int64 arithmetic: out (A*B) int64 */
static void int_prod(kn_dtype dt, const char *x, int64_t *out, kn_rplan pl) {
    int64_t A = pl.A, R = pl.R, B = pl.B;
    int nt = nthreads(A * R * B);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t o = 0; o < A * B; o++) {
        int64_t a = o / B, b = o % B;
        uint64_t acc = 1;
        for (int64_t r = 0; r < R; r++)
            acc *= (uint64_t)load_i64(dt, x, (a * R + r) * B + b);
        out[o] = (int64_t)acc;
    }
}

/* max/min with first index over (A, R, B); vals and/or idx may be NULL. Floats: NaN wins. */
#define MAXMIN_KERNEL(T, SFX, FLT)                                                                 \
    static void maxmin_##SFX(const T *x, T *vals, int64_t *idx, kn_rplan pl, int ismin) {          \
        int64_t A = pl.A, R = pl.R, B = pl.B;                                                      \
        int nt = nthreads(A * R * B);                                                              \
        _Pragma("omp parallel for num_threads(nt) schedule(static) if (nt > 1)") for (int64_t o =  \
                                                                                          0;       \
                                                                                      o < A * B;   \
                                                                                      o++) {       \
            int64_t a = o / B, b = o % B;                                                          \
            const T *xp = x + a * R * B + b;                                                       \
            T best = xp[0];                                                                        \
            int64_t bi = 0;                                                                        \
            for (int64_t r = 1; r < R; r++) {                                                      \
                T v = xp[r * B];                                                                   \
                if (FLT && best != best) break;                                                    \
                if ((ismin ? v < best : v > best) || (FLT && v != v)) best = v, bi = r;            \
            }                                                                                      \
            if (vals) vals[o] = best;                                                              \
            if (idx) idx[o] = bi;                                                                  \
        }                                                                                          \
    }
MAXMIN_KERNEL(float, f32, 1)
MAXMIN_KERNEL(double, f64, 1)
MAXMIN_KERNEL(int8_t, i8, 0)
MAXMIN_KERNEL(uint8_t, u8, 0)
MAXMIN_KERNEL(int32_t, i32, 0)
MAXMIN_KERNEL(int64_t, i64, 0)

static void maxmin(kn_dtype dt, const void *x, void *vals, int64_t *idx, kn_rplan pl, int ismin) {
    if (pl.A * pl.B == 0 || pl.R == 0) return;
    switch (dt) {
    case KN_F32: maxmin_f32(x, vals, idx, pl, ismin); break;
    case KN_F64: maxmin_f64(x, vals, idx, pl, ismin); break;
    case KN_I8: maxmin_i8(x, vals, idx, pl, ismin); break;
    case KN_U8: maxmin_u8(x, vals, idx, pl, ismin); break;
    case KN_I32: maxmin_i32(x, vals, idx, pl, ismin); break;
    case KN_I64: maxmin_i64(x, vals, idx, pl, ismin); break;
    default: break;
    }
}

/* ---- attrs and masks ---- */
static bool is_dim_kind(int kind) {
    return kind >= S_MAXD;
}

/* single-dim ops: attr "dim" (absent: all dims, only argmax/argmin) */
static kn_status dim_mask(const char *op, const kn_attrs *a, int ndim, bool *mask) {
    for (int i = 0; i < KN_MAX_DIMS; i++)
        mask[i] = false;
    if (!kn__attr_has(a, "dim")) {
        for (int i = 0; i < ndim; i++)
            mask[i] = true;
        return KN_OK;
    }
    int d = kn__axis(op, (int)kn__attr_int(a, "dim", 0), ndim);
    if (d < 0) return fail_status();
    if (ndim > 0) mask[d] = true;
    return KN_OK;
}

static kn_status get_mask(const kn_opctx *c, int kind, bool *mask) {
    return is_dim_kind(kind) ? dim_mask(c->op->name, c->attrs, c->in[0]->ndim, mask)
                             : kn__reduce_mask(c->op->name, c->attrs, c->in[0]->ndim, mask);
}

/* ---- reference: gather each output's elements into a double vector, textbook formulas ---- */
static kn_status stats_ref(kn_opctx *c, int kind, const bool *mask) {
    kn_tensor *x = c->in[0];
    int kd[KN_MAX_DIMS], rd[KN_MAX_DIMS], nk = 0, nr = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (mask[i])
            rd[nr++] = i;
        else
            kd[nk++] = i;
    }
    int64_t R = 1, O = 1;
    for (int i = 0; i < nr; i++)
        R *= x->shape[rd[i]];
    for (int i = 0; i < nk; i++)
        O *= x->shape[kd[i]];
    double *v = kn__malloc(sizeof(double) * (size_t)(R ? R : 1));
    if (!v) return fail_status();
    double p = kn__attr_float(c->attrs, "p", 2.0);
    int64_t corr = kn__attr_int(c->attrs, "correction", 1);
    size_t es = kn_dtype_size(x->dtype);
    const char *base = kn__ptr(x);
    kn_dtype odt = c->out[0]->dtype;
    char *ob = kn__ptr(c->out[0]);
    size_t oes = kn_dtype_size(odt);
    int64_t ki[KN_MAX_DIMS] = {0};
    for (int64_t o = 0; o < O; o++) {
        int64_t off = 0;
        for (int i = 0; i < nk; i++)
            off += ki[i] * x->strides[kd[i]];
        int64_t ri[KN_MAX_DIMS] = {0};
        for (int64_t r = 0; r < R; r++) {
            int64_t e = off;
            for (int i = 0; i < nr; i++)
                e += ri[i] * x->strides[rd[i]];
            v[r] = kn__load_f64(x->dtype, base + (size_t)e * es);
            for (int i = nr - 1; i >= 0; i--) {
                if (++ri[i] < x->shape[rd[i]]) break;
                ri[i] = 0;
            }
        }
        double res = 0;
        int64_t bi = 0;
        switch (kind) {
        case S_PROD: {
            if (!kn_dtype_is_float(x->dtype)) {
                uint64_t q = 1;
                for (int64_t r = 0; r < R; r++)
                    q *= (uint64_t)(int64_t)v[r];
                ((int64_t *)ob)[o] = (int64_t)q;
                goto next;
            }
            res = 1;
            for (int64_t r = 0; r < R; r++)
                res *= v[r];
            break;
        }
        case S_VAR:
        case S_STD: {
            double m = 0, q = 0;
            for (int64_t r = 0; r < R; r++)
                m += v[r];
            m /= (double)R;
            for (int64_t r = 0; r < R; r++)
                q += (v[r] - m) * (v[r] - m);
            double d = (double)R - (double)corr;
            res = q / (d > 0 ? d : 0);
            if (kind == S_STD) res = sqrt(res);
            break;
        }
        case S_LSE: {
            double m = -INFINITY;
            for (int64_t r = 0; r < R; r++)
                if (v[r] > m || isnan(v[r])) m = v[r];
            if (isinf(m)) m = 0;
            double s = 0;
            for (int64_t r = 0; r < R; r++)
                s += exp(v[r] - m);
            res = m + log(s);
            break;
        }
        case S_NORM: {
            for (int64_t r = 0; r < R; r++) {
                double a = fabs(v[r]);
                if (isinf(p))
                    res = (a > res || isnan(a)) && !isnan(res) ? a : res;
                else
                    res += pow(a, p);
            }
            if (!isinf(p)) res = pow(res, 1.0 / p);
            break;
        }
        default: { /* max/min family */
            bool mn = kind == S_AMIN || kind == S_MIND || kind == S_ARGMIN;
            res = v[0];
            for (int64_t r = 1; r < R && !isnan(res); r++)
                if ((mn ? v[r] < res : v[r] > res) || isnan(v[r])) res = v[r], bi = r;
            break;
        }
        }
        if (kind == S_ARGMAX || kind == S_ARGMIN)
            ((int64_t *)ob)[o] = bi;
        else
            kn__store_f64(odt, ob + (size_t)o * oes, res);
        if (kind == S_MAXD || kind == S_MIND) ((int64_t *)kn__ptr(c->out[1]))[o] = bi;
    next:
        for (int i = nk - 1; i >= 0; i--) {
            if (++ki[i] < x->shape[kd[i]]) break;
            ki[i] = 0;
        }
    }
    kn__free(v);
    return KN_OK;
}

static kn_status stats_run(kn_opctx *c, int kind, bool ref) {
    kn_tensor *x = c->in[0];
    bool mask[KN_MAX_DIMS];
    kn_status st = get_mask(c, kind, mask);
    if (st) return st;
    if (ref) return stats_ref(c, kind, mask);
    kn_rplan pl;
    kn_tensor *xc = kn__reduce_prepare(x, mask, &pl);
    if (!xc) return fail_status();
    const void *xp = kn__ptr(xc);
    void *op = kn__ptr(c->out[0]);
    double p = kn__attr_float(c->attrs, "p", 2.0);
    int64_t corr = kn__attr_int(c->attrs, "correction", 1);
    switch (kind) {
    case S_PROD:
        if (!kn_dtype_is_float(x->dtype)) {
            int_prod(x->dtype, xp, op, pl);
            break;
        }
        /* fall through */
    case S_VAR:
    case S_STD:
    case S_LSE:
    case S_NORM: st = float_reduce(x->dtype, xp, op, pl, kind, p, corr); break;
    case S_AMAX:
    case S_AMIN: maxmin(x->dtype, xp, op, NULL, pl, kind == S_AMIN); break;
    case S_MAXD:
    case S_MIND: maxmin(x->dtype, xp, op, (int64_t *)kn__ptr(c->out[1]), pl, kind == S_MIND); break;
    case S_ARGMAX:
    case S_ARGMIN: maxmin(x->dtype, xp, NULL, op, pl, kind == S_ARGMIN); break;
    }
    kn_tensor_free(xc);
    return st;
}

/* ---- infer ---- */
static kn_status infer_common(kn_opctx *c, int kind) {
    kn_tensor *x = c->in[0];
    const char *op = c->op->name;
    char b1[128];
    bool mask[KN_MAX_DIMS];
    kn_status st = get_mask(c, kind, mask);
    if (st) return st;
    bool fl = kn_dtype_is_float(x->dtype);
    if (!fl && (kind == S_VAR || kind == S_STD || kind == S_LSE || kind == S_NORM))
        return kn__err(KN_EDTYPE, "%s: needs a floating dtype, got %s", op,
                       kn_dtype_name(x->dtype));
    if (kind >= S_AMAX && kn__reduce_count(x, mask) == 0)
        return kn__err(KN_EINVAL, "%s: cannot reduce an empty dim (input shape %s)", op,
                       kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    if (kind == S_NORM) {
        double p = kn__attr_float(c->attrs, "p", 2.0);
        if (!(p > 0)) return kn__err(KN_EINVAL, "%s: p must be > 0, got %g", op, p);
    }
    kn_dtype odt = x->dtype;
    if (kind == S_PROD && !fl) odt = KN_I64;
    if (kind == S_ARGMAX || kind == S_ARGMIN) odt = KN_I64;
    bool keep = kn__attr_int(c->attrs, "keepdim", 0) != 0;
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (!mask[i])
            c->out_shape[0][nd++] = x->shape[i];
        else if (keep)
            c->out_shape[0][nd++] = 1;
    }
    c->out_ndim[0] = nd;
    c->out_dtype[0] = odt;
    if (kind == S_MAXD || kind == S_MIND) {
        c->out_ndim[1] = nd;
        memcpy(c->out_shape[1], c->out_shape[0], sizeof(int64_t) * nd);
        c->out_dtype[1] = KN_I64;
    }
    return KN_OK;
}

#define STAT_OP_FUNCS(name, kind)                                                                  \
    static kn_status name##_infer(kn_opctx *c) {                                                   \
        return infer_common(c, kind);                                                              \
    }                                                                                              \
    static kn_status name##_forward(kn_opctx *c) {                                                 \
        return stats_run(c, kind, false);                                                          \
    }                                                                                              \
    static kn_status name##_forward_ref(kn_opctx *c) {                                             \
        return stats_run(c, kind, true);                                                           \
    }
STAT_OP_FUNCS(prod, S_PROD)
STAT_OP_FUNCS(amax, S_AMAX)
STAT_OP_FUNCS(amin, S_AMIN)
STAT_OP_FUNCS(max_dim, S_MAXD)
STAT_OP_FUNCS(min_dim, S_MIND)
STAT_OP_FUNCS(argmax, S_ARGMAX)
STAT_OP_FUNCS(argmin, S_ARGMIN)
STAT_OP_FUNCS(var, S_VAR)
STAT_OP_FUNCS(std, S_STD)
STAT_OP_FUNCS(logsumexp, S_LSE)
STAT_OP_FUNCS(norm, S_NORM)

/* ---- backward (composed of ops) ---- */
typedef struct bw_geom {
    bool mask[KN_MAX_DIMS];
    int axes[KN_MAX_DIMS], naxes; /* reduced dims */
    int64_t kshape[KN_MAX_DIMS];  /* x's shape with reduced dims set to 1 */
    int64_t count;                /* elements per output */
} bw_geom;

static kn_status geom(kn_bwctx *c, int kind, bw_geom *g) {
    kn_tensor *x = c->in[0];
    kn_status st = is_dim_kind(kind) ? dim_mask(c->op->name, c->attrs, x->ndim, g->mask)
                                     : kn__reduce_mask(c->op->name, c->attrs, x->ndim, g->mask);
    if (st) return st;
    g->naxes = 0;
    for (int i = 0; i < x->ndim; i++) {
        g->kshape[i] = g->mask[i] ? 1 : x->shape[i];
        if (g->mask[i]) g->axes[g->naxes++] = i;
    }
    g->count = kn__reduce_count(x, g->mask);
    return KN_OK;
}

/* t (an output or its gradient) in keepdim form */
static kn_tensor *keepform(kn_tensor *t, const kn_tensor *x, const bw_geom *g) {
    return kn_reshape(t, x->ndim, g->kshape);
}

static kn_status set_gin(kn_bwctx *c, kn_tensor *t) {
    c->gin[0] = t;
    return t ? KN_OK : fail_status();
}

static const kn_opdef op_prod;

static kn_status prod_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    bw_geom g;
    kn_status st = geom(c, S_PROD, &g);
    if (st) return st;
    kn_dtype dt = x->dtype;
    kn_tensor *gk = keepform(c->gout[0], x, &g);
    kn_tensor *zero = kn_scalar(dt, 0), *one = kn_scalar(dt, 1);
    kn_tensor *isz = kn_eq(x, zero);
    kn_tensor *nz = kn_sum(kn_cast(isz, dt), g.axes, g.naxes, true); /* zeros per slice */
    kn_tensor *xs = kn_where(isz, one, x);
    kn_attrs a = {0};
    int64_t ax[KN_MAX_DIMS];
    for (int i = 0; i < g.naxes; i++)
        ax[i] = g.axes[i];
    if (g.naxes) kn_attrs_set_ints(&a, "axes", ax, g.naxes);
    kn_attrs_set_int(&a, "keepdim", 1);
    kn_tensor *pnz = kn__op1(&op_prod, &xs, 1, &a); /* product of the non-zeros */
    kn_tensor *none = kn_div(pnz, xs);              /* no zero: prod / x */
    kn_tensor *single = kn_where(isz, pnz, zero);   /* one zero: others' product at it */
    kn_tensor *d = kn_where(kn_eq(nz, zero), none, kn_where(kn_eq(nz, one), single, zero));
    return set_gin(c, kn_mul(gk, d));
}

static kn_status amax_backward_common(kn_bwctx *c, int kind) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    bw_geom g;
    kn_status st = geom(c, kind, &g);
    if (st) return st;
    kn_tensor *m = kn_cast(kn_eq(x, keepform(c->out[0], x, &g)), x->dtype);
    kn_tensor *cnt = kn_sum(m, g.axes, g.naxes, true);
    return set_gin(c, kn_mul(kn_div(keepform(c->gout[0], x, &g), cnt), m));
}
static kn_status amax_backward(kn_bwctx *c) {
    return amax_backward_common(c, S_AMAX);
}
static kn_status amin_backward(kn_bwctx *c) {
    return amax_backward_common(c, S_AMIN);
}

static kn_status maxd_backward_common(kn_bwctx *c, int kind) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    bw_geom g;
    kn_status st = geom(c, kind, &g);
    if (st) return st;
    int d = g.naxes ? g.axes[0] : 0;
    int64_t D = x->ndim ? x->shape[d] : 1, sh[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        sh[i] = i == d ? D : 1;
    kn_tensor *ar = kn_reshape(kn_arange(0, (double)D, 1, KN_I64), x->ndim, sh);
    kn_tensor *sel = kn_eq(ar, keepform(c->out[1], x, &g));
    return set_gin(c, kn_where(sel, keepform(c->gout[0], x, &g), kn_scalar(x->dtype, 0)));
}
static kn_status max_dim_backward(kn_bwctx *c) {
    return maxd_backward_common(c, S_MAXD);
}
static kn_status min_dim_backward(kn_bwctx *c) {
    return maxd_backward_common(c, S_MIND);
}

static kn_status var_backward_common(kn_bwctx *c, int kind) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    bw_geom g;
    kn_status st = geom(c, kind, &g);
    if (st) return st;
    double dof = (double)g.count - (double)kn__attr_int(c->attrs, "correction", 1);
    if (dof < 0) dof = 0;
    kn_tensor *dev = kn_sub(x, kn_mean(x, g.axes, g.naxes, true));
    kn_tensor *gk = keepform(c->gout[0], x, &g);
    if (kind == S_VAR) return set_gin(c, kn_mul(gk, kn_mul_scalar(dev, 2.0 / dof)));
    /* d std = d var / (2 std) */
    kn_tensor *sk = keepform(c->out[0], x, &g);
    return set_gin(c, kn_mul(kn_div(gk, sk), kn_mul_scalar(dev, 1.0 / dof)));
}
static kn_status var_backward(kn_bwctx *c) {
    return var_backward_common(c, S_VAR);
}
static kn_status std_backward(kn_bwctx *c) {
    return var_backward_common(c, S_STD);
}

static kn_status logsumexp_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    bw_geom g;
    kn_status st = geom(c, S_LSE, &g);
    if (st) return st;
    kn_tensor *e = kn_exp(kn_sub(x, keepform(c->out[0], x, &g)));
    return set_gin(c, kn_mul(keepform(c->gout[0], x, &g), e));
}

static kn_status norm_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    bw_geom g;
    kn_status st = geom(c, S_NORM, &g);
    if (st) return st;
    double p = kn__attr_float(c->attrs, "p", 2.0);
    kn_dtype dt = x->dtype;
    kn_tensor *gk = keepform(c->gout[0], x, &g), *nk = keepform(c->out[0], x, &g);
    kn_tensor *zero = kn_scalar(dt, 0);
    if (p == 1) return set_gin(c, kn_mul(gk, kn_sign(x)));
    if (isinf(p)) { /* like amax of |x|: split among ties, with the sign */
        kn_tensor *m = kn_cast(kn_eq(kn_abs(x), nk), dt);
        kn_tensor *cnt = kn_sum(m, g.axes, g.naxes, true);
        return set_gin(c, kn_mul(kn_mul(kn_div(gk, cnt), m), kn_sign(x)));
    }
    kn_tensor *nz = kn_eq(nk, zero);
    if (p == 2) { /* x * g / norm, 0 where norm == 0 */
        kn_tensor *scale = kn_where(nz, zero, kn_div(gk, nk));
        return set_gin(c, kn_mul(x, scale));
    }
    /* sign(x) |x|^(p-1) * g / norm^(p-1); 0 where x == 0 or norm == 0 */
    kn_tensor *ax = kn_abs(x);
    kn_tensor *xs = kn_where(kn_eq(ax, zero), zero, kn_mul(kn_sign(x), kn_pow_scalar(ax, p - 1)));
    kn_tensor *scale = kn_where(nz, zero, kn_div(gk, kn_pow_scalar(nk, p - 1)));
    return set_gin(c, kn_mul(xs, scale));
}

/* ---- op table ---- */
#define STAT_OPDEF(var_, name_, dts, bw, onnx_, doc_)                                              \
    static const kn_opdef var_ = {.name = #name_,                                                  \
                                  .min_in = 1,                                                     \
                                  .max_in = 1,                                                     \
                                  .nout = 1,                                                       \
                                  .dtypes = dts,                                                   \
                                  .flags = KN_OPF_REDUCTION,                                       \
                                  .infer = name_##_infer,                                          \
                                  .forward = name_##_forward,                                      \
                                  .forward_ref = name_##_forward_ref,                              \
                                  .backward = bw,                                                  \
                                  .onnx = onnx_,                                                   \
                                  .doc = doc_}
STAT_OPDEF(op_prod, prod, KN_DT_NUM, prod_backward, "ReduceProd",
           "product over attr axes (all when absent), keepdim; integers give int64");
STAT_OPDEF(op_amax, amax, KN_DT_NUM, amax_backward, "ReduceMax",
           "maximum over axes, keepdim; gradient split among ties");
STAT_OPDEF(op_amin, amin, KN_DT_NUM, amin_backward, "ReduceMin",
           "minimum over axes, keepdim; gradient split among ties");
STAT_OPDEF(op_argmax, argmax, KN_DT_NUM, NULL, "ArgMax",
           "int64 index of the first maximum along attr dim (all dims flattened when absent)");
STAT_OPDEF(op_argmin, argmin, KN_DT_NUM, NULL, "ArgMin",
           "int64 index of the first minimum along attr dim (all dims flattened when absent)");
STAT_OPDEF(op_var, var, KN_DT_FLOAT, var_backward, NULL,
           "variance over axes with attr correction (default 1), keepdim");
STAT_OPDEF(op_std, std, KN_DT_FLOAT, std_backward, NULL,
           "standard deviation over axes with attr correction (default 1), keepdim");
STAT_OPDEF(op_logsumexp, logsumexp, KN_DT_FLOAT, logsumexp_backward, "ReduceLogSumExp",
           "log(sum(exp(x))) over axes, stable, keepdim");
STAT_OPDEF(op_norm, norm, KN_DT_FLOAT, norm_backward, NULL,
           "vector p-norm over axes (attr p > 0, inf allowed), keepdim");
static const kn_opdef op_max_dim = {
    .name = "max_dim",
    .min_in = 1,
    .max_in = 1,
    .nout = 2,
    .dtypes = KN_DT_NUM,
    .flags = KN_OPF_REDUCTION,
    .infer = max_dim_infer,
    .forward = max_dim_forward,
    .forward_ref = max_dim_forward_ref,
    .backward = max_dim_backward,
    .doc = "(values, int64 indices) of the maximum along attr dim; first index of ties"};
static const kn_opdef op_min_dim = {
    .name = "min_dim",
    .min_in = 1,
    .max_in = 1,
    .nout = 2,
    .dtypes = KN_DT_NUM,
    .flags = KN_OPF_REDUCTION,
    .infer = min_dim_infer,
    .forward = min_dim_forward,
    .forward_ref = min_dim_forward_ref,
    .backward = min_dim_backward,
    .doc = "(values, int64 indices) of the minimum along attr dim; first index of ties"};

const kn_opdef *const kn__ops_stats[] = {&op_prod,    &op_amax,      &op_amin,   &op_max_dim,
                                         &op_min_dim, &op_argmax,    &op_argmin, &op_var,
                                         &op_std,     &op_logsumexp, &op_norm,   NULL};

/* ---- public API ---- */
static kn_status axes_attrs(const char *op, kn_attrs *a, const int *axes, int naxes, bool keepdim) {
    if (naxes < 0 || naxes > KN_MAX_DIMS || (naxes > 0 && !axes))
        return kn__err(KN_EINVAL, "%s: invalid axes (count %d)", op, naxes);
    int64_t ax[KN_MAX_DIMS];
    for (int i = 0; i < naxes; i++)
        ax[i] = axes[i];
    if (naxes) kn_attrs_set_ints(a, "axes", ax, naxes);
    kn_attrs_set_int(a, "keepdim", keepdim);
    return KN_OK;
}

static kn_tensor *axes_call(const kn_opdef *op, kn_tensor *x, const int *axes, int naxes,
                            bool keepdim, kn_attrs *a) {
    if (axes_attrs(op->name, a, axes, naxes, keepdim)) return NULL;
    return kn__op1(op, &x, 1, a);
}

kn_tensor *kn_prod(kn_tensor *x, const int *axes, int naxes, bool keepdim) {
    kn_attrs a = {0};
    return axes_call(&op_prod, x, axes, naxes, keepdim, &a);
}
kn_tensor *kn_amax(kn_tensor *x, const int *axes, int naxes, bool keepdim) {
    kn_attrs a = {0};
    return axes_call(&op_amax, x, axes, naxes, keepdim, &a);
}
kn_tensor *kn_amin(kn_tensor *x, const int *axes, int naxes, bool keepdim) {
    kn_attrs a = {0};
    return axes_call(&op_amin, x, axes, naxes, keepdim, &a);
}
kn_tensor *kn_var(kn_tensor *x, const int *axes, int naxes, int64_t correction, bool keepdim) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "correction", correction);
    return axes_call(&op_var, x, axes, naxes, keepdim, &a);
}
kn_tensor *kn_std(kn_tensor *x, const int *axes, int naxes, int64_t correction, bool keepdim) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "correction", correction);
    return axes_call(&op_std, x, axes, naxes, keepdim, &a);
}
kn_tensor *kn_logsumexp(kn_tensor *x, const int *axes, int naxes, bool keepdim) {
    kn_attrs a = {0};
    return axes_call(&op_logsumexp, x, axes, naxes, keepdim, &a);
}
kn_tensor *kn_norm(kn_tensor *x, double p, const int *axes, int naxes, bool keepdim) {
    kn_attrs a = {0};
    kn_attrs_set_float(&a, "p", p);
    return axes_call(&op_norm, x, axes, naxes, keepdim, &a);
}

static kn_tensor *dim_call(const kn_opdef *op, kn_tensor *x, int dim, bool keepdim,
                           kn_tensor **indices) {
    kn_attrs a = {0};
    if (dim != KN_ALL_DIMS) kn_attrs_set_int(&a, "dim", dim);
    kn_attrs_set_int(&a, "keepdim", keepdim && dim != KN_ALL_DIMS); /* PyTorch ignores it then */
    if (op->nout == 1) return kn__op1(op, &x, 1, &a);
    if (!indices) return kn__nrm_run_first(op, &x, 1, &a, NULL);
    kn_tensor *out[2] = {0};
    *indices = NULL;
    if (kn__op_run(op, &x, 1, &a, out, 2) < 0) return NULL;
    *indices = out[1];
    return out[0];
}

kn_tensor *kn_max_dim(kn_tensor *x, int dim, bool keepdim, kn_tensor **indices) {
    if (dim == KN_ALL_DIMS) {
        if (indices) *indices = NULL;
        return kn__errp(KN_EINVAL, "max_dim: needs one dim");
    }
    return dim_call(&op_max_dim, x, dim, keepdim, indices);
}
kn_tensor *kn_min_dim(kn_tensor *x, int dim, bool keepdim, kn_tensor **indices) {
    if (dim == KN_ALL_DIMS) {
        if (indices) *indices = NULL;
        return kn__errp(KN_EINVAL, "min_dim: needs one dim");
    }
    return dim_call(&op_min_dim, x, dim, keepdim, indices);
}
kn_tensor *kn_argmax(kn_tensor *x, int dim, bool keepdim) {
    return dim_call(&op_argmax, x, dim, keepdim, NULL);
}
kn_tensor *kn_argmin(kn_tensor *x, int dim, bool keepdim) {
    return dim_call(&op_argmin, x, dim, keepdim, NULL);
}
