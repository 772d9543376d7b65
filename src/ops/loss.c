/*
 * loss.c - loss functions, dropout and embedding (PyTorch semantics: F.cross_entropy,
 * F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.binary_cross_entropy,
 * F.binary_cross_entropy_with_logits, F.dropout, F.embedding).
 *
 * Ops: cross_entropy (fused log_softmax + nll with ignore_index, label smoothing, class weights;
 * a second output keeps the per-sample logsumexp for the backward) and its internal
 * cross_entropy_backward ((softmax - smoothed one-hot) * weight * scale in one pass per row,
 * itself differentiable for double backward); nll_loss and nll_loss_backward; one op per
 * pointwise loss (gradients built from elementwise ops, so they differentiate again); dropout
 * (two outputs: y and the bool keep-mask) with dropout_backward; embedding (its gradient is
 * index_add, defined in index.c).
 *
 * Not here: log_softmax/softmax (norm.c), the index ops (index.c).
 *
 * Invariants:
 *  - Class targets are validated before any loss is computed: a target outside [0, C) that is
 *    not ignore_index is KN_EINVAL naming the op, the target and C; embedding indices likewise.
 *  - Loss reductions add the per-sample losses in double, serially in sample order, so results
 *    never depend on the thread count. Dropout draws element i of a call from counter base + i of
 *    the global generator (kn__rng_reserve), so its mask is thread-count free as well.
 *  - Reduction "mean" of cross_entropy / nll_loss divides by the summed class weight of the
 *    non-ignored targets (PyTorch's weighted mean); with every target ignored the mean is NaN
 *    and the gradient is zero.
 *  - The fast cross_entropy kernels (f32, class dim innermost) fall back to the double reference
 *    for any row holding inf or NaN, so non-finite logits behave like libm would.
 */
#include <math.h>
#include <string.h>

#include "kernels/vmath.h"
#include "ops/op_impl.h"

#define PAR_MIN 32768

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define LS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LS_CLONES
#endif

static const char *shp(char *buf, const kn_tensor *t) {
    return kn__shape_str(buf, 96, t->ndim, t->shape);
}

static inline double ld(const char *p, kn_dtype dt, int64_t i) {
    return dt == KN_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void st(char *p, kn_dtype dt, int64_t i, double v) {
    if (dt == KN_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* exp of the softmax argument x - max (<= 0): the shared vectorised exp */
#define ls_expf_neg kn__expf

/* ================= class-index losses: shared geometry and data ================= */
/* logits x (N, C, d1..) viewed as (N, C, S), or (C) with a 0-d target (N = S = 1).
 * target (N, d1..) int64/int32; weight (C) of x's dtype or absent. */

typedef struct {
    int64_t N, C, S, M; /* M = N * S samples */
    int red;
    int64_t ign;
    double eps;
    kn_dtype dt;
    const int64_t *t;
    int64_t *t_owned;
    double *w;   /* class weights (C) or NULL */
    float *wf;   /* f32 copy for the fast kernel, or NULL */
    double wsum; /* sum of the class weights (C when unweighted) */
    double W;    /* summed weight of the non-ignored targets */
} clsdata;

/* x = in[first], target = in[first + 1], weight = in[wi] when present */
static kn_status cls_geom(const char *op, const kn_opctx *c, int first, int wi, clsdata *cd) {
    kn_tensor *x = c->in[first], *t = c->in[first + 1];
    kn_tensor *w = c->nin > wi ? c->in[wi] : NULL;
    char a[96], b[96];
    memset(cd, 0, sizeof *cd);
    if (!kn_dtype_is_float(x->dtype) || (x->dtype != KN_F32 && x->dtype != KN_F64))
        return kn__err(KN_EDTYPE, "%s: input must be float32 or float64, got %s", op,
                       kn_dtype_name(x->dtype));
    if (t->dtype != KN_I64 && t->dtype != KN_I32)
        return kn__err(KN_EDTYPE, "%s: target must hold int64 class indices, got %s", op,
                       kn_dtype_name(t->dtype));
    if (x->ndim < 1)
        return kn__err(KN_ESHAPE, "%s: input must be (N, C, ...) or (C), got a scalar", op);
    bool ok;
    if (x->ndim == 1) {
        ok = t->ndim == 0;
        cd->N = 1;
        cd->C = x->shape[0];
        cd->S = 1;
    } else {
        ok = t->ndim == x->ndim - 1 && t->shape[0] == x->shape[0];
        for (int d = 2; ok && d < x->ndim; d++)
            ok = t->shape[d - 1] == x->shape[d];
        cd->N = x->shape[0];
        cd->C = x->shape[1];
        cd->S = 1;
        for (int d = 2; d < x->ndim; d++)
            cd->S *= x->shape[d];
    }
    if (!ok)
        return kn__err(KN_ESHAPE,
                       "%s: target %s does not match input %s (expected input shape "
                       "without the class dim 1)",
                       op, shp(a, t), shp(b, x));
    if (w) {
        if (w->dtype != x->dtype)
            return kn__err(KN_EDTYPE, "%s: weight dtype %s differs from input dtype %s", op,
                           kn_dtype_name(w->dtype), kn_dtype_name(x->dtype));
        if (w->ndim != 1 || w->shape[0] != cd->C)
            return kn__err(KN_ESHAPE, "%s: weight %s must have shape (%lld) for input %s", op,
                           shp(a, w), (long long)cd->C, shp(b, x));
    }
    cd->M = cd->N * cd->S;
    cd->dt = x->dtype;
    cd->red = (int)kn__attr_int(c->attrs, "reduction", KN_REDUCE_MEAN);
    cd->ign = kn__attr_int(c->attrs, "ignore_index", -100);
    cd->eps = kn__attr_float(c->attrs, "label_smoothing", 0.0);
    if (cd->red < KN_REDUCE_MEAN || cd->red > KN_REDUCE_NONE)
        return kn__err(KN_EINVAL, "%s: unknown reduction %d (0 mean, 1 sum, 2 none)", op, cd->red);
    if (!(cd->eps >= 0.0 && cd->eps <= 1.0))
        return kn__err(KN_EINVAL, "%s: label_smoothing %g must be in [0, 1]", op, cd->eps);
    return KN_OK;
}

static void cls_free(clsdata *cd) {
    kn__scratch_put(cd->t_owned);
    kn__scratch_put(cd->w);
    kn__scratch_put(cd->wf);
    cd->t_owned = NULL;
    cd->w = NULL;
    cd->wf = NULL;
}

/* Loads targets and weights, checks every target, sums the weights. */
static kn_status cls_load(const char *op, const kn_opctx *c, int first, int wi, clsdata *cd) {
    kn_tensor *t = c->in[first + 1], *w = c->nin > wi ? c->in[wi] : NULL;
    int64_t M = cd->M, C = cd->C;
    if (t->dtype == KN_I64 && kn__is_contiguous(t)) {
        cd->t = (const int64_t *)kn__ptr(t);
    } else {
        cd->t_owned = kn__scratch_get((size_t)(M > 0 ? M : 1) * sizeof(int64_t));
        if (!cd->t_owned) return kn_last_status();
        if (M > 0 && kn_tensor_read(t, KN_I64, cd->t_owned, (size_t)M * sizeof(int64_t)))
            return kn_last_status();
        cd->t = cd->t_owned;
    }
    for (int64_t i = 0; i < M; i++) {
        int64_t v = cd->t[i];
        if (v != cd->ign && (v < 0 || v >= C))
            return kn__err(KN_EINVAL, "%s: target %lld out of range for %lld classes", op,
                           (long long)v, (long long)C);
    }
    if (w) {
        cd->w = kn__scratch_get((size_t)(C > 0 ? C : 1) * sizeof(double));
        cd->wf = kn__scratch_get((size_t)(C > 0 ? C : 1) * sizeof(float));
        if (!cd->w || !cd->wf) return kn_last_status();
        if (C > 0 && kn_tensor_read(w, KN_F64, cd->w, (size_t)C * sizeof(double)))
            return kn_last_status();
        cd->wsum = 0;
        for (int64_t k = 0; k < C; k++) {
            cd->wf[k] = (float)cd->w[k];
            cd->wsum += cd->w[k];
        }
    } else {
        cd->wsum = (double)C;
    }
    cd->W = 0;
    for (int64_t i = 0; i < M; i++)
        if (cd->t[i] != cd->ign) cd->W += cd->w ? cd->w[cd->t[i]] : 1.0;
    return KN_OK;
}

static kn_status cls_out(kn_opctx *c, const clsdata *cd, int first) {
    kn_tensor *t = c->in[first + 1];
    c->out_dtype[0] = cd->dt;
    if (cd->red == KN_REDUCE_NONE) {
        c->out_ndim[0] = t->ndim;
        memcpy(c->out_shape[0], t->shape, sizeof(int64_t) * t->ndim);
    } else {
        c->out_ndim[0] = 0;
    }
    return KN_OK;
}

/* Writes the per-sample losses reduced as asked into out. */
static void cls_finish(kn_tensor *out, const double *loss, const clsdata *cd) {
    char *o = kn__ptr(out);
    if (cd->red == KN_REDUCE_NONE) {
        for (int64_t i = 0; i < cd->M; i++)
            st(o, cd->dt, i, loss[i]);
        return;
    }
    double s = 0;
    for (int64_t i = 0; i < cd->M; i++)
        s += loss[i];
    st(o, cd->dt, 0, cd->red == KN_REDUCE_MEAN ? s / cd->W : s);
}

/* Gradient reaching sample i: g as doubles (M for none, 1 otherwise) scaled by the reduction. */
static inline double cls_coef(const clsdata *cd, const double *g, int64_t i) {
    if (cd->red == KN_REDUCE_NONE) return g[i];
    return cd->red == KN_REDUCE_SUM ? g[0] : g[0] / cd->W;
}

/* the first n values of t (any strides) as doubles */
static double *read_f64(kn_tensor *t, int64_t n) {
    double *b = kn__scratch_get((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (b && n > 0 && kn_tensor_read(t, KN_F64, b, (size_t)n * sizeof(double)) != KN_OK) {
        kn__scratch_put(b);
        return NULL;
    }
    return b;
}

static double *cls_gbuf(kn_tensor *g, const clsdata *cd) {
    int64_t n = cd->red == KN_REDUCE_NONE ? cd->M : 1;
    double *b = kn__scratch_get((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (b && n > 0 && kn_tensor_read(g, KN_F64, b, (size_t)n * sizeof(double)) != KN_OK) {
        kn__scratch_put(b);
        return NULL;
    }
    return b;
}

static kn_status cls_bw_infer(kn_opctx *c, const char *op, int wi) {
    clsdata cd;
    kn_status s = cls_geom(op, c, 1, wi, &cd);
    if (s != KN_OK) return s;
    kn_tensor *g = c->in[0], *x = c->in[1];
    char a[96];
    if (g->dtype != x->dtype)
        return kn__err(KN_EDTYPE, "%s: gradient dtype %s differs from input dtype %s", op,
                       kn_dtype_name(g->dtype), kn_dtype_name(x->dtype));
    bool ok = cd.red == KN_REDUCE_NONE
                  ? g->ndim == c->in[2]->ndim &&
                        memcmp(g->shape, c->in[2]->shape, sizeof(int64_t) * g->ndim) == 0
                  : kn__numel(g->ndim, g->shape) == 1;
    if (!ok) return kn__err(KN_ESHAPE, "%s: gradient %s does not fit the loss", op, shp(a, g));
    kn__out_like(c, 0, x, x->dtype);
    return KN_OK;
}

/* ============================ cross_entropy ============================ */
/* Per sample (not ignored), with lse = logsumexp over classes and w = 1 when unweighted:
 *   loss = (1 - eps) * w[t] * (lse - x[t]) + eps / C * sum_c w[c] * (lse - x[c])
 * d loss / d x[c] = a * softmax[c] - (1 - eps) * w[t] * [c == t] - eps / C * w[c],
 *   a = (1 - eps) * w[t] + eps / C * sum_c w[c]. */

/* ---- reference: double math, class stride `cs` (S) ---- */
static double ce_lse_ref(const char *x, kn_dtype dt, int64_t b, int64_t C, int64_t cs) {
    double m = -INFINITY;
    for (int64_t k = 0; k < C; k++) {
        double v = ld(x, dt, b + k * cs);
        if (isnan(v)) return v;
        if (v > m) m = v;
    }
    if (isinf(m)) return m > 0 ? NAN : m; /* +inf logit: NaN like log_softmax; all -inf */
    double s = 0;
    for (int64_t k = 0; k < C; k++)
        s += exp(ld(x, dt, b + k * cs) - m);
    return m + log(s);
}

static double ce_loss_ref(const char *x, int64_t b, int64_t t, double lse, const clsdata *cd) {
    int64_t C = cd->C, cs = cd->S;
    double wt = cd->w ? cd->w[t] : 1.0;
    double l = (1.0 - cd->eps) * wt * (lse - ld(x, cd->dt, b + t * cs));
    if (cd->eps > 0) {
        double sm = 0;
        for (int64_t k = 0; k < C; k++)
            sm += (cd->w ? cd->w[k] : 1.0) * (lse - ld(x, cd->dt, b + k * cs));
        l += cd->eps / (double)C * sm;
    }
    return l;
}

/* gx = (coef * a + h) * p - coef * (eps / C * w + (1 - eps) * w[t] * onehot); h is the
 * gradient reaching the saved logsumexp (d lse / dx = p) */
static void ce_grad_ref(const char *x, char *gx, int64_t b, int64_t t, double lse, double coef,
                        double h, const clsdata *cd) {
    int64_t C = cd->C, cs = cd->S;
    if (t == cd->ign) {
        for (int64_t k = 0; k < C; k++)
            st(gx, cd->dt, b + k * cs, 0.0);
        return;
    }
    double wt = cd->w ? cd->w[t] : 1.0, ec = cd->eps / (double)C;
    double a = (1.0 - cd->eps) * wt + ec * cd->wsum;
    for (int64_t k = 0; k < C; k++) {
        double p = exp(ld(x, cd->dt, b + k * cs) - lse);
        double v = a * p - ec * (cd->w ? cd->w[k] : 1.0);
        if (k == t) v -= (1.0 - cd->eps) * wt;
        st(gx, cd->dt, b + k * cs, coef * v + h * p);
    }
}

/* ---- fast f32 kernels (class dim innermost). Long rows (C >= CE_LONG) run one vector loop per
 * pass over each row; short rows are handled a block of rows at a time so the exp loop runs over
 * the whole block (C = 10 would otherwise never fill a vector). ---- */
#define CE_LONG 512
#define CE_BLK 2048 /* floats of scratch per block of short rows */

/* max of the row; *bad set when the row holds inf or NaN. */
LS_CLONES static float row_max_f32(const float *x, int64_t n, int *bad) {
    float m = -INFINITY, z = 0.0f;
#pragma omp simd reduction(max : m) reduction(+ : z)
    for (int64_t i = 0; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        z += x[i] * 0.0f; /* NaN when any element is inf or NaN */
    }
    *bad = z != 0.0f;
    return m;
}

/* The exp loops run whole 16-lane vectors only: the tail goes through a padded 16-element
 * buffer (pad -200: exp gives 0) instead of a scalar epilogue, which would cost as much as the
 * vector body for short rows. */
LS_CLONES static float row_sumexp_f32(const float *x, int64_t n, float m) {
    int64_t n16 = n & ~(int64_t)15;
    float s = 0.0f, t = 0.0f, tmp[16];
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n16; i++)
        s += ls_expf_neg(x[i] - m);
    if (n16 < n) {
        for (int j = 0; j < 16; j++)
            tmp[j] = n16 + j < n ? x[n16 + j] - m : -200.0f;
#pragma omp simd reduction(+ : t)
        for (int j = 0; j < 16; j++)
            t += ls_expf_neg(tmp[j]);
    }
    return s + t;
}

LS_CLONES static float row_sum_f32(const float *x, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

LS_CLONES static float row_dot_f32(const float *x, const float *w, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += x[i] * w[i];
    return s;
}

/* v[i] = exp(v[i]) for v[i] <= 0 */
LS_CLONES static void vexp_f32(float *v, int64_t n) {
    int64_t n16 = n & ~(int64_t)15;
    float tmp[16];
#pragma omp simd
    for (int64_t i = 0; i < n16; i++)
        v[i] = ls_expf_neg(v[i]);
    if (n16 < n) {
        for (int j = 0; j < 16; j++)
            tmp[j] = n16 + j < n ? v[n16 + j] : 0.0f;
#pragma omp simd
        for (int j = 0; j < 16; j++)
            tmp[j] = ls_expf_neg(tmp[j]);
        for (int64_t i = n16; i < n; i++)
            v[i] = tmp[i - n16];
    }
}

/* g[i] = ca * exp(x[i] - lse) - ce * w[i] (w NULL: 1) */
LS_CLONES static void row_grad_f32(const float *restrict x, float *restrict g, int64_t n, float lse,
                                   float ca, float ce, const float *restrict w) {
    int64_t n16 = n & ~(int64_t)15;
    float tmp[16];
    if (w) {
#pragma omp simd
        for (int64_t i = 0; i < n16; i++)
            g[i] = ca * ls_expf_neg(x[i] - lse) - ce * w[i];
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n16; i++)
            g[i] = ca * ls_expf_neg(x[i] - lse) - ce;
    }
    if (n16 < n) {
        for (int j = 0; j < 16; j++)
            tmp[j] = n16 + j < n ? x[n16 + j] - lse : 0.0f;
#pragma omp simd
        for (int j = 0; j < 16; j++)
            tmp[j] = ls_expf_neg(tmp[j]);
        for (int64_t i = n16; i < n; i++)
            g[i] = ca * tmp[i - n16] - ce * (w ? w[i] : 1.0f);
    }
}

static inline double ce_loss_row_f32(const float *xr, int64_t t, float lse, const clsdata *cd) {
    double wt = cd->w ? cd->w[t] : 1.0;
    double l = (1.0 - cd->eps) * wt * ((double)lse - xr[t]);
    if (cd->eps > 0) {
        double sx = cd->wf ? row_dot_f32(xr, cd->wf, cd->C) : row_sum_f32(xr, cd->C);
        l += cd->eps / (double)cd->C * ((double)lse * cd->wsum - sx);
    }
    return l;
}

/* rows [r0, r1) of a contiguous (M, C) f32 buffer: loss[r] and lse[r] (0 when ignored) */
static void ce_fwd_rows_f32(const float *x, int64_t r0, int64_t r1, const clsdata *cd, double *loss,
                            float *lse) {
    int64_t C = cd->C;
    if (C >= CE_LONG) {
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = x + r * C;
            int64_t t = cd->t[r];
            int bad = 0;
            if (t == cd->ign) {
                loss[r] = 0.0;
                lse[r] = 0.0f;
                continue;
            }
            float m = row_max_f32(xr, C, &bad);
            if (bad) {
                double l = ce_lse_ref((const char *)x, KN_F32, r * C, C, 1);
                lse[r] = (float)l;
                loss[r] = ce_loss_ref((const char *)x, r * C, t, l, cd);
                continue;
            }
            lse[r] = m + logf(row_sumexp_f32(xr, C, m));
            loss[r] = ce_loss_row_f32(xr, t, lse[r], cd);
        }
        return;
    }
    float buf[CE_BLK], mx[CE_BLK];
    int64_t per = C > 0 ? CE_BLK / C : CE_BLK;
    for (int64_t b0 = r0; b0 < r1; b0 += per) {
        int64_t b1 = b0 + per < r1 ? b0 + per : r1;
        for (int64_t r = b0; r < b1; r++) {
            const float *xr = x + r * C;
            float *br = buf + (r - b0) * C;
            int bad = 0;
            float m = row_max_f32(xr, C, &bad);
            mx[r - b0] = bad ? NAN : m;
            if (bad) m = 0.0f;
            for (int64_t k = 0; k < C; k++)
                br[k] = bad ? 0.0f : xr[k] - m;
        }
        vexp_f32(buf, (b1 - b0) * C);
        for (int64_t r = b0; r < b1; r++) {
            const float *xr = x + r * C;
            int64_t t = cd->t[r];
            if (t == cd->ign) {
                loss[r] = 0.0;
                lse[r] = 0.0f;
            } else if (isnan(mx[r - b0])) {
                double l = ce_lse_ref((const char *)x, KN_F32, r * C, C, 1);
                lse[r] = (float)l;
                loss[r] = ce_loss_ref((const char *)x, r * C, t, l, cd);
            } else {
                lse[r] = mx[r - b0] + logf(row_sum_f32(buf + (r - b0) * C, C));
                loss[r] = ce_loss_row_f32(xr, t, lse[r], cd);
            }
        }
    }
}

/* rows [r0, r1) of the gradient; coef(r) scales each row */
static void ce_bwd_rows_f32(const float *x, float *gx, const float *lse, const double *g,
                            const double *h, int64_t r0, int64_t r1, const clsdata *cd) {
    int64_t C = cd->C;
    double ec = cd->eps / (double)C;
    int64_t per = C >= CE_LONG ? 1 : (C > 0 ? CE_BLK / C : CE_BLK);
    for (int64_t b0 = r0; b0 < r1; b0 += per) {
        int64_t b1 = b0 + per < r1 ? b0 + per : r1;
        if (C < CE_LONG) {
            /* short rows: exp of the whole block in one vector loop */
            for (int64_t r = b0; r < b1; r++) {
                const float *xr = x + r * C;
                float *gr = gx + r * C;
                bool skip = cd->t[r] == cd->ign || !isfinite(lse[r]);
                for (int64_t k = 0; k < C; k++)
                    gr[k] = skip ? 0.0f : xr[k] - lse[r];
            }
            vexp_f32(gx + b0 * C, (b1 - b0) * C);
        }
        for (int64_t r = b0; r < b1; r++) {
            const float *xr = x + r * C;
            float *gr = gx + r * C;
            int64_t t = cd->t[r];
            if (t == cd->ign) {
                memset(gr, 0, (size_t)C * sizeof(float));
                continue;
            }
            double coef = cls_coef(cd, g, r);
            if (!isfinite(lse[r])) {
                ce_grad_ref((const char *)x, (char *)gx, r * C, t, lse[r], coef, h[r], cd);
                continue;
            }
            double wt = cd->w ? cd->w[t] : 1.0, a = (1.0 - cd->eps) * wt + ec * cd->wsum;
            float ca = (float)(coef * a + h[r]), ce = (float)(coef * ec);
            if (C >= CE_LONG)
                row_grad_f32(xr, gr, C, lse[r], ca, ce, cd->wf);
            else if (cd->wf)
                for (int64_t k = 0; k < C; k++)
                    gr[k] = ca * gr[k] - ce * cd->wf[k];
            else
                for (int64_t k = 0; k < C; k++)
                    gr[k] = ca * gr[k] - ce;
            gr[t] -= (float)(coef * (1.0 - cd->eps) * wt);
        }
    }
}

static kn_status ce_infer(kn_opctx *c) {
    clsdata cd;
    kn_status s = cls_geom("cross_entropy", c, 0, 2, &cd);
    if (s != KN_OK) return s;
    cls_out(c, &cd, 0);
    /* output 1: the per-sample logsumexp, saved for the backward */
    c->out_dtype[1] = cd.dt;
    c->out_ndim[1] = c->in[1]->ndim;
    memcpy(c->out_shape[1], c->in[1]->shape, sizeof(int64_t) * c->in[1]->ndim);
    return KN_OK;
}

#define CE_PAR_MIN 131072 /* logits elements before a cross_entropy loop goes parallel */

static kn_status ce_forward_impl(kn_opctx *c, bool fast) {
    clsdata cd;
    cls_geom("cross_entropy", c, 0, 2, &cd);
    kn_status s = cls_load("cross_entropy", c, 0, 2, &cd);
    double *loss = NULL;
    kn_tensor *xc = NULL;
    if (s != KN_OK) goto done;
    loss = kn__scratch_get((size_t)(cd.M > 0 ? cd.M : 1) * sizeof(double));
    xc = loss ? kn__contig(c->in[0]) : NULL;
    if (!xc) {
        s = kn_last_status();
        goto done;
    }
    const char *x = kn__ptr(xc);
    char *lse = kn__ptr(c->out[1]);
    int64_t M = cd.M, C = cd.C, S = cd.S;
    if (fast && cd.dt == KN_F32 && S == 1) {
        /* fixed chunks of rows: each row's result is independent of the partition anyway */
        int64_t chunk = 64, nch = (M + chunk - 1) / chunk;
#pragma omp parallel for num_threads(kn__threads()) if (M * C > CE_PAR_MIN) schedule(static)
        for (int64_t k = 0; k < nch; k++)
            ce_fwd_rows_f32((const float *)x, k * chunk, (k + 1) * chunk < M ? (k + 1) * chunk : M,
                            &cd, loss, (float *)lse);
    } else {
#pragma omp parallel for num_threads(kn__threads()) if (M * C > CE_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < M; i++) {
            int64_t t = cd.t[i], b = (i / S) * C * S + i % S;
            if (t == cd.ign) {
                loss[i] = 0.0;
                st(lse, cd.dt, i, 0.0);
                continue;
            }
            double l = ce_lse_ref(x, cd.dt, b, C, S);
            st(lse, cd.dt, i, l);
            loss[i] = ce_loss_ref(x, b, t, l, &cd);
        }
    }
    cls_finish(c->out[0], loss, &cd);
done:
    kn_tensor_free(xc);
    kn__scratch_put(loss);
    cls_free(&cd);
    return s;
}

static kn_status ce_forward(kn_opctx *c) {
    return ce_forward_impl(c, true);
}
static kn_status ce_forward_ref(kn_opctx *c) {
    return ce_forward_impl(c, false);
}

static const kn_opdef op_ce_bw;

static kn_status ce_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    /* gout[1] (gradient of the saved logsumexp) is zero unless a double backward uses it */
    kn_tensor *in[6] = {c->gout[0], c->in[0],   c->in[1],
                        c->out[1],  c->gout[1], c->nin > 2 ? c->in[2] : NULL};
    c->gin[0] = kn__op1(&op_ce_bw, in, c->nin + 3, c->attrs);
    return c->gin[0] ? KN_OK : kn_last_status();
}

/* ---- cross_entropy_backward (internal): inputs (g, x, target, lse, h[, weight]) -> dL/dx,
 * where lse is cross_entropy's per-sample logsumexp and h the gradient reaching it. ---- */
static kn_status ceb_infer(kn_opctx *c) {
    kn_status s = cls_bw_infer(c, "cross_entropy_backward", 5);
    if (s != KN_OK) return s;
    kn_tensor *t = c->in[2];
    char a[96];
    for (int i = 3; i <= 4; i++) {
        kn_tensor *l = c->in[i];
        if (l->dtype != c->in[1]->dtype || l->ndim != t->ndim ||
            memcmp(l->shape, t->shape, sizeof(int64_t) * t->ndim) != 0)
            return kn__err(KN_ESHAPE, "cross_entropy_backward: input %d %s %s does not fit", i,
                           shp(a, l), kn_dtype_name(l->dtype));
    }
    return KN_OK;
}

static kn_status ceb_forward_impl(kn_opctx *c, bool fast) {
    clsdata cd;
    cls_geom("cross_entropy_backward", c, 1, 5, &cd);
    kn_status s = cls_load("cross_entropy_backward", c, 1, 5, &cd);
    double *g = NULL, *h = NULL;
    kn_tensor *xc = NULL, *lc = NULL;
    if (s != KN_OK) goto done;
    g = cls_gbuf(c->in[0], &cd);
    h = g ? read_f64(c->in[4], cd.M) : NULL;
    xc = h ? kn__contig(c->in[1]) : NULL;
    lc = xc ? kn__contig(c->in[3]) : NULL;
    if (!lc) {
        s = kn_last_status();
        goto done;
    }
    const char *x = kn__ptr(xc), *lse = kn__ptr(lc);
    char *gx = kn__ptr(c->out[0]);
    int64_t M = cd.M, C = cd.C, S = cd.S;
    if (fast && cd.dt == KN_F32 && S == 1) {
        int64_t chunk = 64, nch = (M + chunk - 1) / chunk;
#pragma omp parallel for num_threads(kn__threads()) if (M * C > CE_PAR_MIN) schedule(static)
        for (int64_t k = 0; k < nch; k++)
            ce_bwd_rows_f32((const float *)x, (float *)gx, (const float *)lse, g, h, k * chunk,
                            (k + 1) * chunk < M ? (k + 1) * chunk : M, &cd);
    } else {
#pragma omp parallel for num_threads(kn__threads()) if (M * C > CE_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < M; i++) {
            int64_t b = (i / S) * C * S + i % S;
            ce_grad_ref(x, gx, b, cd.t[i], ld(lse, cd.dt, i), cls_coef(&cd, g, i), h[i], &cd);
        }
    }
done:
    kn_tensor_free(xc);
    kn_tensor_free(lc);
    kn__scratch_put(g);
    kn__scratch_put(h);
    cls_free(&cd);
    return s;
}

static kn_status ceb_forward(kn_opctx *c) {
    return ceb_forward_impl(c, true);
}
static kn_status ceb_forward_ref(kn_opctx *c) {
    return ceb_forward_impl(c, false);
}

/* Double backward. With p = exp(x - lse) (0 on ignored samples), the output is
 *   B = coef(g) * (a * p - K) + h * p,   K independent of x.
 * For an incoming gradient G:
 *   dx = Q * G and dlse = -sum_c(Q * G), with Q = (coef a + h) p = B - B(lse = +inf);
 *   dh = sum_c(G * p), p = B(g = 0, h = 1);
 *   dg = sum of G * B(g = 1, h = 0) over the classes (none) or over everything (mean, sum).
 * Every piece is an op, so higher orders follow. */
static kn_tensor *ceb_call(kn_bwctx *c, kn_tensor *g, kn_tensor *lse, kn_tensor *h) {
    kn_tensor *in[6] = {g, c->in[1], c->in[2], lse, h, c->nin > 5 ? c->in[5] : NULL};
    return kn__op1(&op_ce_bw, in, c->nin, c->attrs);
}

static kn_status ceb_backward(kn_bwctx *c) {
    kn_tensor *G = c->gout[0], *g = c->in[0], *x = c->in[1], *lse = c->in[3], *h = c->in[4];
    int cdim = x->ndim == 1 ? 0 : 1;
    if (c->needs[1] || c->needs[3]) {
        kn_tensor *q = kn_sub(c->out[0], ceb_call(c, g, kn_full_like(lse, INFINITY), h));
        kn_tensor *qg = kn_mul(q, G);
        if (c->needs[1]) c->gin[1] = qg;
        if (c->needs[3]) c->gin[3] = kn_neg(kn_sum(qg, &cdim, 1, false));
    }
    if (c->needs[4])
        c->gin[4] =
            kn_sum(kn_mul(G, ceb_call(c, kn_zeros_like(g), lse, kn_ones_like(h))), &cdim, 1, false);
    if (c->needs[0]) {
        kn_tensor *b1 = kn_mul(G, ceb_call(c, kn_ones_like(g), lse, kn_zeros_like(h)));
        int red = (int)kn__attr_int(c->attrs, "reduction", KN_REDUCE_MEAN);
        kn_tensor *s =
            red == KN_REDUCE_NONE ? kn_sum(b1, &cdim, 1, false) : kn_sum(b1, NULL, 0, false);
        c->gin[0] = s ? kn_reshape(s, g->ndim, g->shape) : NULL;
    }
    for (int i = 0; i < 5; i++)
        if (c->needs[i] && i != 2 && !c->gin[i]) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_ce;

static void cls_attrs(kn_attrs *a, const kn_loss_opts *o, bool smoothing) {
    kn_attrs_set_int(a, "reduction", o ? (int64_t)o->reduction : KN_REDUCE_MEAN);
    kn_attrs_set_int(a, "ignore_index", o && o->has_ignore_index ? o->ignore_index : -100);
    if (smoothing && o && o->label_smoothing != 0.0)
        kn_attrs_set_float(a, "label_smoothing", o->label_smoothing);
}

kn_tensor *kn_cross_entropy(kn_tensor *logits, kn_tensor *target, const kn_loss_opts *o) {
    kn_attrs a = {0};
    cls_attrs(&a, o, true);
    kn_tensor *in[3] = {logits, target, o ? o->weight : NULL};
    return kn__op1(&op_ce, in, o && o->weight ? 3 : 2, &a);
}

/* =============================== nll_loss =============================== */
/* loss_i = -w[t_i] * logp[i, t_i] (0 for ignored samples), reduced like cross_entropy. */

static kn_status nll_infer(kn_opctx *c) {
    clsdata cd;
    kn_status s = cls_geom("nll_loss", c, 0, 2, &cd);
    return s != KN_OK ? s : cls_out(c, &cd, 0);
}

static kn_status nll_forward(kn_opctx *c) {
    clsdata cd;
    cls_geom("nll_loss", c, 0, 2, &cd);
    kn_status s = cls_load("nll_loss", c, 0, 2, &cd);
    double *loss = NULL;
    kn_tensor *xc = NULL;
    if (s != KN_OK) goto done;
    loss = kn__scratch_get((size_t)(cd.M > 0 ? cd.M : 1) * sizeof(double));
    xc = loss ? kn__contig(c->in[0]) : NULL;
    if (!xc) {
        s = kn_last_status();
        goto done;
    }
    const char *x = kn__ptr(xc);
    for (int64_t i = 0; i < cd.M; i++) {
        int64_t t = cd.t[i], b = (i / cd.S) * cd.C * cd.S + i % cd.S;
        loss[i] = t == cd.ign ? 0.0 : -(cd.w ? cd.w[t] : 1.0) * ld(x, cd.dt, b + t * cd.S);
    }
    cls_finish(c->out[0], loss, &cd);
done:
    kn_tensor_free(xc);
    kn__scratch_put(loss);
    cls_free(&cd);
    return s;
}

static const kn_opdef op_nll_bw;
static const kn_opdef op_nll;

static kn_status nll_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *in[4] = {c->gout[0], c->in[0], c->in[1], c->nin > 2 ? c->in[2] : NULL};
    c->gin[0] = kn__op1(&op_nll_bw, in, c->nin + 1, c->attrs);
    return c->gin[0] ? KN_OK : kn_last_status();
}

/* ---- nll_loss_backward (internal): (g, logp, target[, weight]) -> dense dL/dlogp ---- */
static kn_status nllb_infer(kn_opctx *c) {
    return cls_bw_infer(c, "nll_loss_backward", 3);
}

static kn_status nllb_forward(kn_opctx *c) {
    clsdata cd;
    cls_geom("nll_loss_backward", c, 1, 3, &cd);
    kn_status s = cls_load("nll_loss_backward", c, 1, 3, &cd);
    double *g = NULL;
    if (s != KN_OK) goto done;
    g = cls_gbuf(c->in[0], &cd);
    if (!g) {
        s = kn_last_status();
        goto done;
    }
    char *gx = kn__ptr(c->out[0]);
    size_t es = kn_dtype_size(cd.dt);
    int64_t n = kn__numel(c->out[0]->ndim, c->out[0]->shape);
    if (n > 0) memset(gx, 0, (size_t)n * es);
    for (int64_t i = 0; i < cd.M; i++) {
        int64_t t = cd.t[i], b = (i / cd.S) * cd.C * cd.S + i % cd.S;
        if (t != cd.ign) st(gx, cd.dt, b + t * cd.S, -cls_coef(&cd, g, i) * (cd.w ? cd.w[t] : 1.0));
    }
done:
    kn__scratch_put(g);
    cls_free(&cd);
    return s;
}

/* The map g -> nll_loss_backward(g) is the adjoint of the (linear) nll_loss, so its gradient
 * with respect to g is nll_loss of the incoming gradient; it does not depend on logp's values. */
static kn_status nllb_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *in[3] = {c->gout[0], c->in[2], c->nin > 3 ? c->in[3] : NULL};
    c->gin[0] = kn__op1(&op_nll, in, c->nin - 1, c->attrs);
    return c->gin[0] ? KN_OK : kn_last_status();
}

kn_tensor *kn_nll_loss(kn_tensor *logp, kn_tensor *target, const kn_loss_opts *o) {
    kn_attrs a = {0};
    cls_attrs(&a, o, false);
    kn_tensor *in[3] = {logp, target, o ? o->weight : NULL};
    return kn__op1(&op_nll, in, o && o->weight ? 3 : 2, &a);
}

/* ============================ pointwise losses ============================ */
/* x, y of one float dtype and shape (mse/l1/smooth_l1 broadcast in their wrappers, like
 * PyTorch; the BCE pair requires equal shapes). attr "reduction"; smooth_l1 also "beta". */

enum { PL_MSE, PL_L1, PL_SL1, PL_BCE, PL_BCEL };

static const kn_opdef op_mse, op_l1, op_sl1, op_bce, op_bcel;

static int pl_kind(const kn_opdef *op) {
    return op == &op_mse   ? PL_MSE
           : op == &op_l1  ? PL_L1
           : op == &op_sl1 ? PL_SL1
           : op == &op_bce ? PL_BCE
                           : PL_BCEL;
}

static inline double pl_elem(int kind, double x, double y, double beta) {
    switch (kind) {
    case PL_MSE: return (x - y) * (x - y);
    case PL_L1: return fabs(x - y);
    case PL_SL1: {
        double d = fabs(x - y);
        return d < beta ? 0.5 * d * d / beta : d - 0.5 * beta;
    }
    case PL_BCE: {
        double lp = log(x), l1p = log1p(-x);
        lp = lp < -100.0 ? -100.0 : lp;
        l1p = l1p < -100.0 ? -100.0 : l1p;
        return -(y * lp + (1.0 - y) * l1p);
    }
    default: return (x > 0 ? x : 0.0) - x * y + log1p(exp(-fabs(x)));
    }
}

static kn_status pl_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0], *y = c->in[1];
    const char *op = c->op->name;
    char a[96], b[96];
    if (y->dtype != x->dtype)
        return kn__err(KN_EDTYPE, "%s: target dtype %s differs from input dtype %s", op,
                       kn_dtype_name(y->dtype), kn_dtype_name(x->dtype));
    if (x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof(int64_t) * x->ndim) != 0)
        return kn__err(KN_ESHAPE, "%s: target %s must have the shape of input %s", op, shp(a, y),
                       shp(b, x));
    int red = (int)kn__attr_int(c->attrs, "reduction", KN_REDUCE_MEAN);
    if (red < KN_REDUCE_MEAN || red > KN_REDUCE_NONE)
        return kn__err(KN_EINVAL, "%s: unknown reduction %d (0 mean, 1 sum, 2 none)", op, red);
    double beta = kn__attr_float(c->attrs, "beta", 1.0);
    if (c->op == &op_sl1 && !(beta >= 0))
        return kn__err(KN_EINVAL, "%s: beta %g must be >= 0", op, beta);
    c->out_dtype[0] = x->dtype;
    if (red == KN_REDUCE_NONE)
        kn__out_like(c, 0, x, x->dtype);
    else
        c->out_ndim[0] = 0;
    return KN_OK;
}

#define PL_BLOCK 4096

static kn_status pl_forward(kn_opctx *c) {
    int kind = pl_kind(c->op), red = (int)kn__attr_int(c->attrs, "reduction", KN_REDUCE_MEAN);
    double beta = kn__attr_float(c->attrs, "beta", 1.0);
    kn_tensor *xc = kn__contig(c->in[0]), *yc = xc ? kn__contig(c->in[1]) : NULL;
    kn_status s = KN_OK;
    double *part = NULL;
    if (!yc) {
        s = kn_last_status();
        goto done;
    }
    kn_dtype dt = xc->dtype;
    const char *x = kn__ptr(xc), *y = kn__ptr(yc);
    char *o = kn__ptr(c->out[0]);
    int64_t n = kn__numel(xc->ndim, xc->shape);
    if (kind == PL_BCE) {
        for (int64_t i = 0; i < n; i++) {
            double v = ld(x, dt, i);
            if (!(v >= 0.0 && v <= 1.0)) {
                s = kn__err(KN_EINVAL, "%s: input values must be in [0, 1], got %g at %lld",
                            c->op->name, v, (long long)i);
                goto done;
            }
        }
    }
    if (red == KN_REDUCE_NONE) {
#pragma omp parallel for num_threads(kn__threads()) if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            st(o, dt, i, pl_elem(kind, ld(x, dt, i), ld(y, dt, i), beta));
        goto done;
    }
    int64_t nb = (n + PL_BLOCK - 1) / PL_BLOCK;
    part = kn__scratch_get((size_t)(nb > 0 ? nb : 1) * sizeof(double));
    if (!part) {
        s = kn_last_status();
        goto done;
    }
#pragma omp parallel for num_threads(kn__threads()) if (n > PAR_MIN) schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e = (b + 1) * PL_BLOCK < n ? (b + 1) * PL_BLOCK : n;
        double acc = 0;
        for (int64_t i = b * PL_BLOCK; i < e; i++)
            acc += pl_elem(kind, ld(x, dt, i), ld(y, dt, i), beta);
        part[b] = acc;
    }
    double tot = 0;
    for (int64_t b = 0; b < nb; b++)
        tot += part[b];
    st(o, dt, 0, red == KN_REDUCE_MEAN ? tot / (double)n : tot);
done:
    kn__scratch_put(part);
    kn_tensor_free(xc);
    kn_tensor_free(yc);
    return s;
}

/* Gradients with ops: gx = f'(x, y) * g * scale (scale 1/n for mean), gy likewise. */
static kn_status pl_backward(kn_bwctx *c) {
    int kind = pl_kind(c->op), red = (int)kn__attr_int(c->attrs, "reduction", KN_REDUCE_MEAN);
    double beta = kn__attr_float(c->attrs, "beta", 1.0);
    kn_tensor *x = c->in[0], *y = c->in[1], *g = c->gout[0];
    int64_t n = kn__numel(x->ndim, x->shape);
    double scale = red == KN_REDUCE_MEAN ? 1.0 / (double)n : 1.0;
    kn_tensor *dx = NULL, *dy = NULL; /* d loss_elem / dx, / dy */
    switch (kind) {
    case PL_MSE: dx = kn_mul_scalar(kn_sub(x, y), 2.0); break;
    case PL_L1: dx = kn_sign(kn_sub(x, y)); break;
    case PL_SL1:
        dx = beta > 0 ? kn_clamp(kn_mul_scalar(kn_sub(x, y), 1.0 / beta), -1.0, 1.0)
                      : kn_sign(kn_sub(x, y));
        break;
    case PL_BCE: {
        /* PyTorch: (x - y) / max(x (1 - x), 1e-12); target: max(log1p(-x), -100) - max(log x,
         * -100) */
        kn_tensor *one_m = kn_add_scalar(kn_neg(x), 1.0);
        if (c->needs[0]) dx = kn_div(kn_sub(x, y), kn_clamp(kn_mul(x, one_m), 1e-12, NAN));
        if (c->needs[1])
            dy = kn_sub(kn_clamp(kn_log1p(kn_neg(x)), -100.0, NAN),
                        kn_clamp(kn_log(x), -100.0, NAN));
        break;
    }
    default: /* with logits: dx = sigmoid(x) - y, dy = -x */
        if (c->needs[0]) dx = kn_sub(kn_sigmoid(x), y);
        if (c->needs[1]) dy = kn_neg(x);
        break;
    }
    if (kind == PL_MSE || kind == PL_L1 || kind == PL_SL1) {
        if (c->needs[1] && dx) dy = kn_neg(dx);
    }
    if (scale != 1.0) g = kn_mul_scalar(g, scale);
    if (c->needs[0]) {
        c->gin[0] = kn_mul(dx, g);
        if (!c->gin[0]) return kn_last_status();
    }
    if (c->needs[1]) {
        c->gin[1] = kn_mul(dy, g);
        if (!c->gin[1]) return kn_last_status();
    }
    return KN_OK;
}

static kn_tensor *pl_call(const kn_opdef *op, kn_tensor *x, kn_tensor *y, kn_reduction r,
                          bool broadcast, double beta, bool has_beta) {
    if (!x || !y) return kn__op1(op, (kn_tensor *[]){x, y}, 2, NULL); /* keeps the error */
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "reduction", (int64_t)r);
    if (has_beta) kn_attrs_set_float(&a, "beta", beta);
    if (broadcast &&
        (x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof(int64_t) * x->ndim) != 0)) {
        int nd;
        int64_t shape[KN_MAX_DIMS];
        if (kn__broadcast_shape(op->name, x->ndim, x->shape, y->ndim, y->shape, &nd, shape))
            return NULL;
        /* the expanded views live in a private scope; only the loss leaves it */
        kn_scope sc = kn_scope_begin();
        kn_tensor *in[2] = {kn_expand(x, nd, shape), kn_expand(y, nd, shape)};
        kn_tensor *out = kn__op1(op, in, 2, &a);
        if (out) kn_keep(out);
        kn_scope_end(sc);
        return out;
    }
    kn_tensor *in[2] = {x, y};
    return kn__op1(op, in, 2, &a);
}

kn_tensor *kn_mse_loss(kn_tensor *x, kn_tensor *y, kn_reduction r) {
    return pl_call(&op_mse, x, y, r, true, 0, false);
}
kn_tensor *kn_l1_loss(kn_tensor *x, kn_tensor *y, kn_reduction r) {
    return pl_call(&op_l1, x, y, r, true, 0, false);
}
kn_tensor *kn_smooth_l1_loss(kn_tensor *x, kn_tensor *y, kn_reduction r, double beta) {
    return pl_call(&op_sl1, x, y, r, true, beta, true);
}
kn_tensor *kn_binary_cross_entropy(kn_tensor *p, kn_tensor *y, kn_reduction r) {
    return pl_call(&op_bce, p, y, r, false, 0, false);
}
kn_tensor *kn_binary_cross_entropy_with_logits(kn_tensor *x, kn_tensor *y, kn_reduction r) {
    return pl_call(&op_bcel, x, y, r, false, 0, false);
}

/* ================================ dropout ================================ */
/* Outputs y = x * mask / (1 - p) and the bool keep-mask (PyTorch's native_dropout, ONNX
 * Dropout). Element i keeps when its uniform draw u_i >= p, so P(keep) = 1 - p; p = 1 zeroes. */

static kn_status dropout_infer(kn_opctx *c) {
    double p = kn__attr_float(c->attrs, "p", 0.5);
    if (!(p >= 0.0 && p <= 1.0))
        return kn__err(KN_EINVAL, "dropout: probability %g must be in [0, 1]", p);
    kn__out_like(c, 0, c->in[0], c->in[0]->dtype);
    kn__out_like(c, 1, c->in[0], KN_BOOL);
    return KN_OK;
}

static kn_status dropout_forward(kn_opctx *c) {
    double p = kn__attr_float(c->attrs, "p", 0.5);
    double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    kn_tensor *xc = kn__contig(c->in[0]);
    if (!xc) return kn_last_status();
    int64_t n = kn__numel(xc->ndim, xc->shape);
    uint64_t seed;
    uint64_t base = kn__rng_reserve((uint64_t)n, &seed);
    kn_dtype dt = xc->dtype;
    const char *x = kn__ptr(xc);
    char *y = kn__ptr(c->out[0]);
    bool *mask = (bool *)kn__ptr(c->out[1]);
#pragma omp parallel for num_threads(kn__threads()) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double u =
            (double)(kn__rng_at(seed, base + (uint64_t)i) >> 11) * (1.0 / 9007199254740992.0);
        bool keep = u >= p;
        mask[i] = keep;
        if (dt == KN_F32)
            ((float *)y)[i] = keep ? ((const float *)x)[i] * (float)scale : 0.0f;
        else
            ((double *)y)[i] = keep ? ((const double *)x)[i] * scale : 0.0;
    }
    kn_tensor_free(xc);
    return KN_OK;
}

static const kn_opdef op_dropout_bw;

static kn_status dropout_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    double p = kn__attr_float(c->attrs, "p", 0.5);
    kn_attrs a = {0};
    kn_attrs_set_float(&a, "scale", p < 1.0 ? 1.0 / (1.0 - p) : 0.0);
    kn_tensor *in[2] = {c->gout[0], c->out[1]};
    c->gin[0] = kn__op1(&op_dropout_bw, in, 2, &a);
    return c->gin[0] ? KN_OK : kn_last_status();
}

/* ---- dropout_backward (internal): (g, mask) -> g * mask * scale; linear, its own gradient ---- */
static kn_status dropout_bw_infer(kn_opctx *c) {
    kn_tensor *g = c->in[0], *m = c->in[1];
    char a[96], b[96];
    if (m->dtype != KN_BOOL)
        return kn__err(KN_EDTYPE, "dropout_backward: mask must be bool, got %s",
                       kn_dtype_name(m->dtype));
    if (g->ndim != m->ndim || memcmp(g->shape, m->shape, sizeof(int64_t) * g->ndim) != 0)
        return kn__err(KN_ESHAPE, "dropout_backward: gradient %s and mask %s differ", shp(a, g),
                       shp(b, m));
    kn__out_like(c, 0, g, g->dtype);
    return KN_OK;
}

static kn_status dropout_bw_forward(kn_opctx *c) {
    double scale = kn__attr_float(c->attrs, "scale", 1.0);
    kn_tensor *gc = kn__contig(c->in[0]), *mc = gc ? kn__contig(c->in[1]) : NULL;
    if (!mc) {
        kn_tensor_free(gc);
        return kn_last_status();
    }
    int64_t n = kn__numel(gc->ndim, gc->shape);
    const bool *m = (const bool *)kn__ptr(mc);
    if (gc->dtype == KN_F32) {
        const float *g = (const float *)kn__ptr(gc);
        float *o = (float *)kn__ptr(c->out[0]), s = (float)scale;
        for (int64_t i = 0; i < n; i++)
            o[i] = m[i] ? g[i] * s : 0.0f;
    } else {
        const double *g = (const double *)kn__ptr(gc);
        double *o = (double *)kn__ptr(c->out[0]);
        for (int64_t i = 0; i < n; i++)
            o[i] = m[i] ? g[i] * scale : 0.0;
    }
    kn_tensor_free(gc);
    kn_tensor_free(mc);
    return KN_OK;
}

static kn_status dropout_bw_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *in[2] = {c->gout[0], c->in[1]};
    c->gin[0] = kn__op1(&op_dropout_bw, in, 2, c->attrs);
    return c->gin[0] ? KN_OK : kn_last_status();
}

static const kn_opdef op_dropout;

kn_tensor *kn_dropout(kn_tensor *x, double p, bool training) {
    if (!x) return kn__op1(&op_dropout, &x, 1, NULL); /* keeps the earlier error */
    if (!(p >= 0.0 && p <= 1.0))
        return kn__errp(KN_EINVAL, "dropout: probability %g must be in [0, 1]", p);
    if (!kn_dtype_is_float(x->dtype) || (x->dtype != KN_F32 && x->dtype != KN_F64))
        return kn__errp(KN_EDTYPE, "dropout: input must be float32 or float64, got %s",
                        kn_dtype_name(x->dtype));
    if (!training || p == 0.0) return kn__scope_adopt(kn_tensor_retain(x));
    kn_attrs a = {0};
    kn_attrs_set_float(&a, "p", p);
    return kn__op1(&op_dropout, &x, 1, &a); /* the mask lives on in the tape node */
}

/* =============================== embedding =============================== */
/* weight (V, D), indices (any shape) i32/i64 -> (*indices.shape, D). Gradient: index_add of the
 * output gradient rows into a zero (V, D). */

static kn_status emb_infer(kn_opctx *c) {
    kn_tensor *w = c->in[0], *ix = c->in[1];
    char a[96];
    if (ix->dtype != KN_I64 && ix->dtype != KN_I32)
        return kn__err(KN_EDTYPE, "embedding: indices must be int64 or int32, got %s",
                       kn_dtype_name(ix->dtype));
    if (w->ndim != 2)
        return kn__err(KN_ESHAPE, "embedding: weight must be 2-D (num_embeddings, dim), got %s",
                       shp(a, w));
    if (ix->ndim >= KN_MAX_DIMS)
        return kn__err(KN_ELIMIT, "embedding: indices %s have too many dims", shp(a, ix));
    kn__out_like(c, 0, ix, w->dtype);
    c->out_ndim[0] = ix->ndim + 1;
    c->out_shape[0][ix->ndim] = w->shape[1];
    return KN_OK;
}

static kn_status emb_forward(kn_opctx *c) {
    kn_tensor *w = c->in[0], *ix = c->in[1];
    int64_t M = kn__numel(ix->ndim, ix->shape), V = w->shape[0], D = w->shape[1];
    int64_t *owned = NULL;
    const int64_t *id;
    if (ix->dtype == KN_I64 && kn__is_contiguous(ix)) {
        id = (const int64_t *)kn__ptr(ix);
    } else {
        owned = kn__scratch_get((size_t)(M > 0 ? M : 1) * sizeof(int64_t));
        if (!owned) return kn_last_status();
        if (M > 0 && kn_tensor_read(ix, KN_I64, owned, (size_t)M * sizeof(int64_t))) {
            kn__scratch_put(owned);
            return kn_last_status();
        }
        id = owned;
    }
    for (int64_t i = 0; i < M; i++)
        if (id[i] < 0 || id[i] >= V) {
            kn_status s =
                kn__err(KN_EINVAL, "embedding: index %lld out of range for num_embeddings %lld",
                        (long long)id[i], (long long)V);
            kn__scratch_put(owned);
            return s;
        }
    kn_tensor *wc = kn__contig(w);
    if (!wc) {
        kn__scratch_put(owned);
        return kn_last_status();
    }
    size_t row = (size_t)D * kn_dtype_size(w->dtype);
    const char *wp = kn__ptr(wc);
    char *o = kn__ptr(c->out[0]);
    if (row > 0) {
#pragma omp parallel for num_threads(kn__threads()) if (M * D > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < M; i++)
            memcpy(o + (size_t)i * row, wp + (size_t)id[i] * row, row);
    }
    kn_tensor_free(wc);
    kn__scratch_put(owned);
    return KN_OK;
}

static kn_status emb_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    static const kn_opdef *index_add;
    if (!index_add) index_add = kn__op_find("index_add");
    if (!index_add) return kn__err(KN_EINTERNAL, "embedding: op index_add is not registered");
    kn_tensor *w = c->in[0], *ix = c->in[1], *g = c->gout[0];
    int64_t M = kn__numel(ix->ndim, ix->shape), D = w->shape[1];
    int64_t gshape[2] = {M, D};
    kn_tensor *in[3] = {kn_zeros(g->dtype, 2, w->shape), kn_reshape(ix, 1, &M),
                        kn_reshape(g, 2, gshape)};
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", 0);
    c->gin[0] = kn__op1(index_add, in, 3, &a);
    return c->gin[0] ? KN_OK : kn_last_status();
}

static const kn_opdef op_embedding;

kn_tensor *kn_embedding(kn_tensor *weight, kn_tensor *indices) {
    kn_tensor *in[2] = {weight, indices};
    return kn__op1(&op_embedding, in, 2, NULL);
}

/* ================================ table ================================ */

static const kn_opdef op_ce = {
    .name = "cross_entropy",
    .min_in = 2,
    .max_in = 3,
    .nout = 2,
    .dtypes = KN_DT_FLOAT,
    .infer = ce_infer,
    .forward = ce_forward,
    .forward_ref = ce_forward_ref,
    .backward = ce_backward,
    .onnx = "SoftmaxCrossEntropyLoss",
    .doc = "F.cross_entropy(logits, target[, weight]) -> (loss, per-sample logsumexp); attrs "
           "reduction, ignore_index, label_smoothing"};
static const kn_opdef op_ce_bw = {
    .name = "cross_entropy_backward",
    .min_in = 5,
    .max_in = 6,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = ceb_infer,
    .forward = ceb_forward,
    .forward_ref = ceb_forward_ref,
    .backward = ceb_backward,
    .onnx = NULL,
    .doc = "(g, logits, target, lse, g_lse[, weight]) -> (softmax - smoothed one-hot) * "
           "weight * scale + g_lse * softmax"};
static const kn_opdef op_nll = {
    .name = "nll_loss",
    .min_in = 2,
    .max_in = 3,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = nll_infer,
    .forward = nll_forward,
    .backward = nll_backward,
    .onnx = "NegativeLogLikelihoodLoss",
    .doc = "F.nll_loss(logp, target[, weight]); attrs reduction, ignore_index"};
static const kn_opdef op_nll_bw = {
    .name = "nll_loss_backward",
    .min_in = 3,
    .max_in = 4,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = nllb_infer,
    .forward = nllb_forward,
    .backward = nllb_backward,
    .onnx = NULL,
    .doc = "(g, logp, target[, weight]) -> -weight[t] * scale at the target class"};
static const kn_opdef op_mse = {.name = "mse_loss",
                                .min_in = 2,
                                .max_in = 2,
                                .nout = 1,
                                .dtypes = KN_DT_FLOAT,
                                .infer = pl_infer,
                                .forward = pl_forward,
                                .backward = pl_backward,
                                .onnx = NULL,
                                .doc = "F.mse_loss; attr reduction"};
static const kn_opdef op_l1 = {.name = "l1_loss",
                               .min_in = 2,
                               .max_in = 2,
                               .nout = 1,
                               .dtypes = KN_DT_FLOAT,
                               .infer = pl_infer,
                               .forward = pl_forward,
                               .backward = pl_backward,
                               .onnx = NULL,
                               .doc = "F.l1_loss; attr reduction"};
static const kn_opdef op_sl1 = {.name = "smooth_l1_loss",
                                .min_in = 2,
                                .max_in = 2,
                                .nout = 1,
                                .dtypes = KN_DT_FLOAT,
                                .infer = pl_infer,
                                .forward = pl_forward,
                                .backward = pl_backward,
                                .onnx = NULL,
                                .doc = "F.smooth_l1_loss; attrs reduction, beta (0: L1)"};
static const kn_opdef op_bce = {.name = "binary_cross_entropy",
                                .min_in = 2,
                                .max_in = 2,
                                .nout = 1,
                                .dtypes = KN_DT_FLOAT,
                                .infer = pl_infer,
                                .forward = pl_forward,
                                .backward = pl_backward,
                                .onnx = NULL,
                                .doc =
                                    "F.binary_cross_entropy (log clamped at -100); attr reduction"};
static const kn_opdef op_bcel = {
    .name = "binary_cross_entropy_with_logits",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = pl_infer,
    .forward = pl_forward,
    .backward = pl_backward,
    .onnx = NULL,
    .doc = "F.binary_cross_entropy_with_logits (stable form); attr reduction"};
static const kn_opdef op_dropout = {.name = "dropout",
                                    .min_in = 1,
                                    .max_in = 1,
                                    .nout = 2,
                                    .dtypes = KN_DT_FLOAT,
                                    .flags = KN_OPF_RANDOM,
                                    .infer = dropout_infer,
                                    .forward = dropout_forward,
                                    .backward = dropout_backward,
                                    .onnx = "Dropout",
                                    .doc = "training dropout -> (y, bool keep-mask); attr p"};
static const kn_opdef op_dropout_bw = {.name = "dropout_backward",
                                       .min_in = 2,
                                       .max_in = 2,
                                       .nout = 1,
                                       .dtypes = KN_DT_FLOAT,
                                       .flags = KN_OPF_INTERNAL,
                                       .infer = dropout_bw_infer,
                                       .forward = dropout_bw_forward,
                                       .backward = dropout_bw_backward,
                                       .onnx = NULL,
                                       .doc = "(g, mask) -> g * mask * scale; attr scale"};
static const kn_opdef op_embedding = {.name = "embedding",
                                      .min_in = 2,
                                      .max_in = 2,
                                      .nout = 1,
                                      .dtypes = KN_DT_ALL,
                                      .infer = emb_infer,
                                      .forward = emb_forward,
                                      .backward = emb_backward,
                                      .onnx = "Gather",
                                      .doc = "F.embedding(weight (V, D), indices int)"};

const kn_opdef *const kn__ops_loss[] = {
    &op_ce,  &op_ce_bw, &op_nll,     &op_nll_bw,     &op_mse,       &op_l1, &op_sl1,
    &op_bce, &op_bcel,  &op_dropout, &op_dropout_bw, &op_embedding, NULL};
