/*
 * norm.c - normalisation ops: softmax, log_softmax, layer_norm, group_norm, batch_norm, plus the
 * internal fused backward ops softmax_backward, log_softmax_backward, layer_norm_backward and
 * batch_norm_backward. PyTorch semantics (torch.nn.functional pages of the same names).
 *
 * Saved statistics: layer_norm, group_norm and batch_norm have three outputs (y, mean, rstd) like
 * aten's native_* ops; the public wrappers return y only. The backward rules read mean/rstd from
 * the saved outputs instead of recomputing them, and also honour gradients reaching mean/rstd
 * (which happens only in double backward), so create_graph differentiation stays exact.
 *
 * Backward strategy: when grad mode is on during backward (create_graph), the rules are composed
 * of differentiable ops; otherwise they call the fused internal ops (one pass, f32 vector kernels).
 * The fused ops themselves have no backward: differentiating them directly (kn_op_call with grad
 * on) is not supported, and is never needed because the composed path is taken whenever the
 * backward is being recorded. group_norm's backward is always composed of ops.
 *
 * Not here: instance norm, RMS norm, momentum=None (cumulative average) batch norm.
 * Invariants: kernels see contiguous buffers (inputs go through kn__contig); every output element
 * is computed by one thread in a fixed order (batch_norm's per-channel sums, layer_norm's weight
 * gradient partials over fixed 64-row blocks), so results do not depend on the thread count.
 * Fast f32/f64 kernels are in norm_kernels.inc, reference kernels in kernels/ref/norm_ref.c.
 */
#include <math.h>
#include <omp.h>

#include "ops/norm_impl.h"

/* ---- fast kernels for both float types ---- */
#define NK_T float
#define NK_SFX f32
#define NK_EXP kn__nrm_expf
#include "ops/norm_kernels.inc"
#undef NK_T
#undef NK_SFX
#undef NK_EXP
#define NK_T double
#define NK_SFX f64
#define NK_EXP exp
#include "ops/norm_kernels.inc"
#undef NK_T
#undef NK_SFX
#undef NK_EXP

/* ---- small helpers ---- */
static kn_status fail_status(void) {
    kn_status s = kn_last_status();
    return s != KN_OK ? s : KN_EINTERNAL;
}

/* axis for softmax-like ops; a 0-d tensor accepts 0 and -1 like PyTorch */
static int norm_axis(const char *op, int64_t axis, int ndim) {
    int n = ndim == 0 ? 1 : ndim;
    if (axis < -n || axis >= n) {
        kn__err(KN_EINVAL, "%s: dim %lld out of range for a %d-d tensor", op, (long long)axis,
                ndim);
        return -1;
    }
    return (int)(axis < 0 ? axis + n : axis);
}

/* (O, D, I) around axis a of t (0-d: 1, 1, 1) */
static void odi(const kn_tensor *t, int a, int64_t *O, int64_t *D, int64_t *I) {
    *O = 1, *D = 1, *I = 1;
    if (t->ndim == 0) return;
    for (int k = 0; k < a; k++)
        *O *= t->shape[k];
    *D = t->shape[a];
    for (int k = a + 1; k < t->ndim; k++)
        *I *= t->shape[k];
}

static bool same_shape(const kn_tensor *a, const kn_tensor *b) {
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(int64_t) * a->ndim) == 0;
}

static kn_status check_same(const char *op, const char *what, const kn_tensor *x,
                            const kn_tensor *t) {
    char b1[128], b2[128];
    if (t->dtype != x->dtype)
        return kn__err(KN_EDTYPE, "%s: %s dtype %s differs from input dtype %s", op, what,
                       kn_dtype_name(t->dtype), kn_dtype_name(x->dtype));
    if (!same_shape(x, t))
        return kn__err(KN_ESHAPE, "%s: %s shape %s differs from %s", op, what,
                       kn__shape_str(b1, sizeof b1, t->ndim, t->shape),
                       kn__shape_str(b2, sizeof b2, x->ndim, x->shape));
    return KN_OK;
}

static int nthreads(int64_t work) {
    return work >= KN_NRM_PAR_MIN ? kn__threads() : 1;
}

/* contiguous versions of up to 8 inputs (NULL passes through); frees on failure */
static bool contig_all(kn_tensor *const *in, kn_tensor **out, int n) {
    for (int i = 0; i < n; i++) {
        out[i] = in[i] ? kn__contig(in[i]) : NULL;
        if (in[i] && !out[i]) {
            for (int k = 0; k < i; k++)
                kn_tensor_free(out[k]);
            return false;
        }
    }
    return true;
}
static void free_all(kn_tensor **t, int n) {
    for (int i = 0; i < n; i++)
        kn_tensor_free(t[i]);
}
static const void *cptr(const kn_tensor *t) {
    return t ? (const void *)kn__ptr(t) : NULL;
}

/* ======================================================================================== */
/* softmax / log_softmax                                                                      */
/* ======================================================================================== */

static kn_status softmax_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    if (norm_axis(c->op->name, kn__attr_int(c->attrs, "dim", -1), x->ndim) < 0) return KN_EINVAL;
    kn__out_like(c, 0, x, x->dtype);
    return KN_OK;
}

static kn_status softmax_run(kn_opctx *c, bool log, bool ref) {
    kn_tensor *x = kn__contig(c->in[0]);
    if (!x) return fail_status();
    int a = norm_axis(c->op->name, kn__attr_int(c->attrs, "dim", -1), x->ndim);
    int64_t O, D, I;
    odi(x, a, &O, &D, &I);
    const void *xp = kn__ptr(x);
    void *yp = kn__ptr(c->out[0]);
    kn_dtype dt = x->dtype;
    int lg = log;
    if (ref || O * D * I == 0) {
        kn__softmax_ref(dt, xp, yp, O, D, I, log);
    } else if (I == 1) {
        int64_t R = O, RB = 8, nb = (R + RB - 1) / RB;
        int nt = nthreads(R * D);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t b = 0; b < nb; b++) {
            int64_t r0 = b * RB, r1 = r0 + RB < R ? r0 + RB : R;
            if (dt == KN_F32)
                softmax_rows_f32(xp, yp, r0, r1, D, lg);
            else
                softmax_rows_f64(xp, yp, r0, r1, D, lg);
        }
    } else {
        int64_t nib = (I + NK_IB - 1) / NK_IB, nb = O * nib;
        int nt = nthreads(O * D * I);
        size_t es = kn_dtype_size(dt);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t b = 0; b < nb; b++) {
            int64_t o = b / nib, i0 = (b % nib) * NK_IB, i1 = i0 + NK_IB < I ? i0 + NK_IB : I;
            const char *xo = (const char *)xp + (size_t)(o * D * I) * es;
            char *yo = (char *)yp + (size_t)(o * D * I) * es;
            if (dt == KN_F32)
                softmax_cols_f32((const float *)xo, (float *)yo, D, I, i0, i1, lg);
            else
                softmax_cols_f64((const double *)xo, (double *)yo, D, I, i0, i1, lg);
        }
    }
    kn_tensor_free(x);
    return KN_OK;
}
static kn_status softmax_forward(kn_opctx *c) {
    return softmax_run(c, false, false);
}
static kn_status softmax_forward_ref(kn_opctx *c) {
    return softmax_run(c, false, true);
}
static kn_status log_softmax_forward(kn_opctx *c) {
    return softmax_run(c, true, false);
}
static kn_status log_softmax_forward_ref(kn_opctx *c) {
    return softmax_run(c, true, true);
}

/* softmax_backward / log_softmax_backward: inputs (gy, y), attr dim */
static kn_status softmax_bw_infer(kn_opctx *c) {
    kn_tensor *g = c->in[0], *y = c->in[1];
    kn_status s = check_same(c->op->name, "saved output", g, y);
    if (s) return s;
    if (norm_axis(c->op->name, kn__attr_int(c->attrs, "dim", -1), y->ndim) < 0) return KN_EINVAL;
    kn__out_like(c, 0, y, y->dtype);
    return KN_OK;
}

static kn_status softmax_bw_run(kn_opctx *c, bool log, bool ref) {
    kn_tensor *t[2];
    if (!contig_all(c->in, t, 2)) return fail_status();
    kn_tensor *g = t[0], *y = t[1];
    int a = norm_axis(c->op->name, kn__attr_int(c->attrs, "dim", -1), y->ndim);
    int64_t O, D, I;
    odi(y, a, &O, &D, &I);
    const void *gp = kn__ptr(g), *yp = kn__ptr(y);
    void *op = kn__ptr(c->out[0]);
    kn_dtype dt = y->dtype;
    int lg = log;
    if (ref || O * D * I == 0) {
        kn__softmax_bw_ref(dt, gp, yp, op, O, D, I, log);
    } else if (I == 1) {
        int64_t R = O, RB = 8, nb = (R + RB - 1) / RB;
        int nt = nthreads(R * D);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t b = 0; b < nb; b++) {
            int64_t r0 = b * RB, r1 = r0 + RB < R ? r0 + RB : R;
            if (dt == KN_F32)
                softmax_bw_rows_f32(gp, yp, op, r0, r1, D, lg);
            else
                softmax_bw_rows_f64(gp, yp, op, r0, r1, D, lg);
        }
    } else {
        int64_t nib = (I + NK_IB - 1) / NK_IB, nb = O * nib;
        int nt = nthreads(O * D * I);
        size_t es = kn_dtype_size(dt), off;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) private(off)
        for (int64_t b = 0; b < nb; b++) {
            int64_t o = b / nib, i0 = (b % nib) * NK_IB, i1 = i0 + NK_IB < I ? i0 + NK_IB : I;
            off = (size_t)(o * D * I) * es;
            if (dt == KN_F32)
                softmax_bw_cols_f32((const float *)((const char *)gp + off),
                                    (const float *)((const char *)yp + off),
                                    (float *)((char *)op + off), D, I, i0, i1, lg);
            else
                softmax_bw_cols_f64((const double *)((const char *)gp + off),
                                    (const double *)((const char *)yp + off),
                                    (double *)((char *)op + off), D, I, i0, i1, lg);
        }
    }
    free_all(t, 2);
    return KN_OK;
}
static kn_status softmax_bw_forward(kn_opctx *c) {
    return softmax_bw_run(c, false, false);
}
static kn_status softmax_bw_forward_ref(kn_opctx *c) {
    return softmax_bw_run(c, false, true);
}
static kn_status log_softmax_bw_forward(kn_opctx *c) {
    return softmax_bw_run(c, true, false);
}
static kn_status log_softmax_bw_forward_ref(kn_opctx *c) {
    return softmax_bw_run(c, true, true);
}

static const kn_opdef op_softmax_bw = {
    .name = "softmax_backward",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = softmax_bw_infer,
    .forward = softmax_bw_forward,
    .forward_ref = softmax_bw_forward_ref,
    .doc = "gx = y*(gy - sum(gy*y, dim)) from (gy, y); fused softmax backward, not differentiable"};
static const kn_opdef op_log_softmax_bw = {
    .name = "log_softmax_backward",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = softmax_bw_infer,
    .forward = log_softmax_bw_forward,
    .forward_ref = log_softmax_bw_forward_ref,
    .doc = "gx = gy - exp(y)*sum(gy, dim) from (gy, y); fused, not differentiable"};

static kn_status softmax_backward_common(kn_bwctx *c, bool log) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *g = c->gout[0], *y = c->out[0];
    if (kn_is_grad_enabled()) { /* recorded backward: composed of differentiable ops */
        int dim = norm_axis(c->op->name, kn__attr_int(c->attrs, "dim", -1), y->ndim);
        int nax = y->ndim == 0 ? 0 : 1;
        if (log)
            c->gin[0] = kn_sub(g, kn_mul(kn_exp(y), kn_sum(g, &dim, nax, true)));
        else
            c->gin[0] = kn_mul(y, kn_sub(g, kn_sum(kn_mul(g, y), &dim, nax, true)));
    } else {
        kn_tensor *in[2] = {g, y};
        c->gin[0] = kn__op1(log ? &op_log_softmax_bw : &op_softmax_bw, in, 2, c->attrs);
    }
    return c->gin[0] ? KN_OK : fail_status();
}
static kn_status softmax_backward(kn_bwctx *c) {
    return softmax_backward_common(c, false);
}
static kn_status log_softmax_backward(kn_bwctx *c) {
    return softmax_backward_common(c, true);
}

static const kn_opdef op_softmax = {.name = "softmax",
                                    .min_in = 1,
                                    .max_in = 1,
                                    .nout = 1,
                                    .dtypes = KN_DT_FLOAT,
                                    .infer = softmax_infer,
                                    .forward = softmax_forward,
                                    .forward_ref = softmax_forward_ref,
                                    .backward = softmax_backward,
                                    .onnx = "Softmax",
                                    .doc = "exp(x - max) / sum(exp(x - max)) along attr dim"};
static const kn_opdef op_log_softmax = {.name = "log_softmax",
                                        .min_in = 1,
                                        .max_in = 1,
                                        .nout = 1,
                                        .dtypes = KN_DT_FLOAT,
                                        .infer = softmax_infer,
                                        .forward = log_softmax_forward,
                                        .forward_ref = log_softmax_forward_ref,
                                        .backward = log_softmax_backward,
                                        .onnx = "LogSoftmax",
                                        .doc = "x - max - log(sum(exp(x - max))) along attr dim"};

/* ======================================================================================== */
/* layer_norm                                                                                 */
/* ======================================================================================== */

/* attrs: nnorm (normalised trailing dims), eps, has_weight, has_bias */
static kn_status affine_flags(kn_opctx *c, int base, int *hw, int *hb) {
    int extra = c->nin - base;
    *hw = (int)kn__attr_int(c->attrs, "has_weight", extra >= 1);
    *hb = (int)kn__attr_int(c->attrs, "has_bias", extra >= 2);
    if (*hw < 0 || *hw > 1 || *hb < 0 || *hb > 1 || *hw + *hb != extra)
        return kn__err(KN_EINVAL, "%s: %d optional inputs but has_weight=%d has_bias=%d",
                       c->op->name, extra, *hw, *hb);
    return KN_OK;
}

/* weight/bias must have exactly `ndim` dims equal to `shape` and x's dtype */
static kn_status check_param(const char *op, const char *what, const kn_tensor *x,
                             const kn_tensor *p, int ndim, const int64_t *shape) {
    char b1[128], b2[128];
    if (p->dtype != x->dtype)
        return kn__err(KN_EDTYPE, "%s: %s dtype %s differs from input dtype %s", op, what,
                       kn_dtype_name(p->dtype), kn_dtype_name(x->dtype));
    if (p->ndim != ndim || memcmp(p->shape, shape, sizeof(int64_t) * ndim) != 0)
        return kn__err(KN_ESHAPE, "%s: %s shape %s, expected %s", op, what,
                       kn__shape_str(b1, sizeof b1, p->ndim, p->shape),
                       kn__shape_str(b2, sizeof b2, ndim, shape));
    return KN_OK;
}

static kn_status layer_norm_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    const char *op = c->op->name;
    char b1[128];
    int64_t nn = kn__attr_int(c->attrs, "nnorm", 1);
    if (nn < 1 || nn > x->ndim)
        return kn__err(KN_EINVAL, "%s: nnorm %lld invalid for input shape %s (need 1..ndim)", op,
                       (long long)nn, kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    if (!(kn__attr_float(c->attrs, "eps", 1e-5) >= 0))
        return kn__err(KN_EINVAL, "%s: eps must be >= 0", op);
    int hw, hb;
    kn_status s = affine_flags(c, 1, &hw, &hb);
    if (s) return s;
    const int64_t *ns = x->shape + x->ndim - nn;
    for (int i = 1; i < c->nin; i++) {
        s = check_param(op, hw && i == 1 ? "weight" : "bias", x, c->in[i], (int)nn, ns);
        if (s) return s;
    }
    kn__out_like(c, 0, x, x->dtype);
    for (int o = 1; o < 3; o++) {
        c->out_dtype[o] = x->dtype;
        c->out_ndim[o] = x->ndim;
        for (int k = 0; k < x->ndim; k++)
            c->out_shape[o][k] = k < x->ndim - nn ? x->shape[k] : 1;
    }
    return KN_OK;
}

static kn_status layer_norm_run(kn_opctx *c, bool ref) {
    kn_tensor *t[3] = {0};
    if (!contig_all(c->in, t, c->nin)) return fail_status();
    int hw, hb;
    affine_flags(c, 1, &hw, &hb);
    kn_tensor *x = t[0], *w = hw ? t[1] : NULL, *b = hb ? t[1 + hw] : NULL;
    int nn = (int)kn__attr_int(c->attrs, "nnorm", 1);
    double eps = kn__attr_float(c->attrs, "eps", 1e-5);
    int64_t M = kn__numel(nn, x->shape + x->ndim - nn), R = kn__numel(x->ndim - nn, x->shape);
    void *y = kn__ptr(c->out[0]), *mean = kn__ptr(c->out[1]), *rstd = kn__ptr(c->out[2]);
    kn_dtype dt = x->dtype;
    if (ref || M == 0) {
        kn__layer_norm_ref(dt, kn__ptr(x), cptr(w), cptr(b), y, mean, rstd, R, M, eps);
    } else {
        int64_t RB = 4, nb = (R + RB - 1) / RB;
        int nt = nthreads(R * M);
        const void *xp = kn__ptr(x), *wp = cptr(w), *bp = cptr(b);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t k = 0; k < nb; k++) {
            int64_t r0 = k * RB, r1 = r0 + RB < R ? r0 + RB : R;
            if (dt == KN_F32)
                ln_rows_f32(xp, wp, bp, y, mean, rstd, r0, r1, M, eps);
            else
                ln_rows_f64(xp, wp, bp, y, mean, rstd, r0, r1, M, eps);
        }
    }
    free_all(t, c->nin);
    return KN_OK;
}
static kn_status layer_norm_forward(kn_opctx *c) {
    return layer_norm_run(c, false);
}
static kn_status layer_norm_forward_ref(kn_opctx *c) {
    return layer_norm_run(c, true);
}

/* layer_norm_backward: inputs (gy, x, mean, rstd, gmean, grstd[, weight]); attrs nnorm,
 * has_weight, need (bit 0 gx, bit 1 gw, bit 2 gb). Outputs gx (x's shape), gw and gb (the
 * normalised shape; zeros when not needed). */
static kn_status ln_bw_infer(kn_opctx *c) {
    kn_tensor *g = c->in[0], *x = c->in[1];
    const char *op = c->op->name;
    int64_t nn = kn__attr_int(c->attrs, "nnorm", 1);
    int hw = (int)kn__attr_int(c->attrs, "has_weight", c->nin == 7);
    if (nn < 1 || nn > x->ndim || hw != (c->nin == 7))
        return kn__err(KN_EINVAL, "%s: bad nnorm %lld / has_weight %d for %d inputs", op,
                       (long long)nn, hw, c->nin);
    kn_status s = check_same(op, "input", g, x);
    if (s) return s;
    int64_t sh[KN_MAX_DIMS];
    for (int k = 0; k < x->ndim; k++)
        sh[k] = k < x->ndim - nn ? x->shape[k] : 1;
    const char *names[4] = {"mean", "rstd", "mean gradient", "rstd gradient"};
    for (int i = 2; i < 6; i++)
        if ((s = check_param(op, names[i - 2], x, c->in[i], x->ndim, sh))) return s;
    if (hw && (s = check_param(op, "weight", x, c->in[6], (int)nn, x->shape + x->ndim - nn)))
        return s;
    kn__out_like(c, 0, x, x->dtype);
    for (int o = 1; o < 3; o++) {
        c->out_dtype[o] = x->dtype;
        c->out_ndim[o] = (int)nn;
        memcpy(c->out_shape[o], x->shape + x->ndim - nn, sizeof(int64_t) * nn);
    }
    return KN_OK;
}

#define LN_BW_RB 64 /* rows per weight-gradient partial block (fixed: thread-count independent) */

static kn_status ln_bw_run(kn_opctx *c, bool ref) {
    kn_tensor *t[7] = {0};
    if (!contig_all(c->in, t, c->nin)) return fail_status();
    kn_tensor *g = t[0], *x = t[1], *w = c->nin == 7 ? t[6] : NULL;
    int nn = (int)kn__attr_int(c->attrs, "nnorm", 1);
    int need = (int)kn__attr_int(c->attrs, "need", 7);
    kn_dtype dt = x->dtype;
    size_t es = kn_dtype_size(dt);
    int64_t M = kn__numel(nn, x->shape + x->ndim - nn);
    int64_t R = kn__numel(x->ndim - nn, x->shape);
    void *gx = (need & 1) ? kn__ptr(c->out[0]) : NULL;
    void *gw = (need & 2) ? kn__ptr(c->out[1]) : NULL;
    void *gb = (need & 4) ? kn__ptr(c->out[2]) : NULL;
    kn_status st = KN_OK;
    if (!(need & 1)) memset(kn__ptr(c->out[0]), 0, (size_t)(R * M) * es);
    if (!(need & 2)) memset(kn__ptr(c->out[1]), 0, (size_t)M * es);
    if (!(need & 4)) memset(kn__ptr(c->out[2]), 0, (size_t)M * es);
    const void *gp = kn__ptr(g), *xp = kn__ptr(x), *mp = kn__ptr(t[2]), *rp = kn__ptr(t[3]);
    const void *gmp = kn__ptr(t[4]), *grp = kn__ptr(t[5]), *wp = cptr(w);
    if (ref || R * M == 0) {
        kn__layer_norm_bw_ref(dt, gp, xp, mp, rp, gmp, grp, wp, gx, gw, gb, R, M);
        goto done;
    }
    int64_t nb = (R + LN_BW_RB - 1) / LN_BW_RB;
    char *part = NULL; /* per block: gw partial (M) then gb partial (M) */
    if (gw || gb) {
        size_t n;
        if (!kn__mul_ok((size_t)nb, (size_t)M * 2 * es, &n) || !(part = kn__aligned_alloc(n))) {
            st = fail_status();
            goto done;
        }
    }
    int nt = nthreads(R * M);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t k = 0; k < nb; k++) {
        int64_t r0 = k * LN_BW_RB, r1 = r0 + LN_BW_RB < R ? r0 + LN_BW_RB : R;
        char *pw = gw ? part + (size_t)(k * 2 * M) * es : NULL;
        char *pb = gb ? part + (size_t)((k * 2 + 1) * M) * es : NULL;
        if (dt == KN_F32)
            ln_bw_rows_f32(gp, xp, mp, rp, gmp, grp, wp, gx, (float *)pw, (float *)pb, r0, r1, M);
        else
            ln_bw_rows_f64(gp, xp, mp, rp, gmp, grp, wp, gx, (double *)pw, (double *)pb, r0, r1, M);
    }
    if (part) { /* combine the block partials in block order, columns in parallel */
        int nt2 = nthreads(nb * M);
#pragma omp parallel for num_threads(nt2) schedule(static) if (nt2 > 1)
        for (int64_t j = 0; j < M; j++) {
            for (int which = 0; which < 2; which++) {
                void *dst = which ? gb : gw;
                if (!dst) continue;
                if (dt == KN_F32) {
                    float s = 0;
                    for (int64_t k = 0; k < nb; k++)
                        s += ((float *)part)[(k * 2 + which) * M + j];
                    ((float *)dst)[j] = s;
                } else {
                    double s = 0;
                    for (int64_t k = 0; k < nb; k++)
                        s += ((double *)part)[(k * 2 + which) * M + j];
                    ((double *)dst)[j] = s;
                }
            }
        }
        kn__aligned_free(part);
    }
done:
    free_all(t, c->nin);
    return st;
}
static kn_status ln_bw_forward(kn_opctx *c) {
    return ln_bw_run(c, false);
}
static kn_status ln_bw_forward_ref(kn_opctx *c) {
    return ln_bw_run(c, true);
}

static const kn_opdef op_layer_norm_bw = {
    .name = "layer_norm_backward",
    .min_in = 6,
    .max_in = 7,
    .nout = 3,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = ln_bw_infer,
    .forward = ln_bw_forward,
    .forward_ref = ln_bw_forward_ref,
    .doc = "(gx, gw, gb) from (gy, x, mean, rstd, gmean, grstd[, w]); fused, not differentiable"};

/* Gradient of a normalisation over `axes` (the reduced dims, M elements each group) composed of
 * ops: x, mean, rstd broadcastable; gy already multiplied by the weight. Includes the gradients
 * gmean/grstd that reach the saved statistics. */
static kn_tensor *norm_grad_composed(kn_tensor *gyw, kn_tensor *xhat, kn_tensor *rstd,
                                     kn_tensor *gmean, kn_tensor *grstd, const int *axes, int naxes,
                                     double M) {
    kn_tensor *a = kn_mean(gyw, axes, naxes, true);
    kn_tensor *b = kn_mean(kn_mul(gyw, xhat), axes, naxes, true);
    kn_tensor *gx = kn_mul(rstd, kn_sub(kn_sub(gyw, a), kn_mul(xhat, b)));
    gx = kn_add(gx, kn_mul_scalar(gmean, 1.0 / M));
    /* d rstd / dx = -rstd^2 * xhat / M */
    return kn_add(gx, kn_mul(kn_mul(grstd, kn_square(rstd)), kn_mul_scalar(xhat, -1.0 / M)));
}

static kn_status layer_norm_backward(kn_bwctx *c) {
    int nn = (int)kn__attr_int(c->attrs, "nnorm", 1);
    int hw = (int)kn__attr_int(c->attrs, "has_weight", c->nin >= 2);
    int hb = (int)kn__attr_int(c->attrs, "has_bias", c->nin >= 3);
    kn_tensor *x = c->in[0], *w = hw ? c->in[1] : NULL, *b = hb ? c->in[1 + hw] : NULL;
    bool nx = c->needs[0], nw = hw && c->needs[1], nbias = hb && c->needs[1 + hw];
    if (!nx && !nw && !nbias) return KN_OK;
    kn_tensor *g = c->gout[0], *mean = c->out[1], *rstd = c->out[2];
    if (kn_is_grad_enabled()) {
        int axes[KN_MAX_DIMS];
        for (int k = 0; k < nn; k++)
            axes[k] = x->ndim - nn + k;
        double M = (double)kn__numel(nn, x->shape + x->ndim - nn);
        kn_tensor *xhat = kn_mul(kn_sub(x, mean), rstd);
        if (nx)
            c->gin[0] = norm_grad_composed(w ? kn_mul(g, w) : g, xhat, rstd, c->gout[1], c->gout[2],
                                           axes, nn, M);
        if (nw) c->gin[1] = kn__sum_to(kn_mul(g, xhat), w->ndim, w->shape);
        if (nbias) c->gin[1 + hw] = kn__sum_to(g, b->ndim, b->shape);
    } else {
        kn_tensor *in[7] = {g, x, mean, rstd, c->gout[1], c->gout[2], w};
        kn_attrs a = {0};
        kn_attrs_set_int(&a, "nnorm", nn);
        kn_attrs_set_int(&a, "has_weight", hw);
        kn_attrs_set_int(&a, "need", (nx ? 1 : 0) | (nw ? 2 : 0) | (nbias ? 4 : 0));
        kn_tensor *out[3] = {0};
        if (kn__op_run(&op_layer_norm_bw, in, hw ? 7 : 6, &a, out, 3) < 0) return fail_status();
        if (nx) c->gin[0] = out[0];
        if (nw) c->gin[1] = out[1];
        if (nbias) c->gin[1 + hw] = out[2];
        return KN_OK; /* unused outputs belong to the engine's scope */
    }
    if ((nx && !c->gin[0]) || (nw && !c->gin[1]) || (nbias && !c->gin[1 + hw]))
        return fail_status();
    return KN_OK;
}

static const kn_opdef op_layer_norm = {
    .name = "layer_norm",
    .min_in = 1,
    .max_in = 3,
    .nout = 3,
    .dtypes = KN_DT_FLOAT,
    .infer = layer_norm_infer,
    .forward = layer_norm_forward,
    .forward_ref = layer_norm_forward_ref,
    .backward = layer_norm_backward,
    .onnx = "LayerNormalization",
    .doc = "(x - mean) * rstd * w + b over the last attr nnorm dims; outputs y, mean, rstd"};

/* ======================================================================================== */
/* group_norm                                                                                 */
/* ======================================================================================== */

/* inputs (x[, w][, b]); attrs groups, eps, has_weight, has_bias. x (N, C, *), w/b (C). Outputs
 * y, mean (N, G), rstd (N, G). */
static kn_status group_norm_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    const char *op = c->op->name;
    char b1[128];
    if (x->ndim < 2)
        return kn__err(KN_ESHAPE, "%s: input shape %s, expected (N, C, *)", op,
                       kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    int64_t G = kn__attr_int(c->attrs, "groups", 1), C = x->shape[1];
    if (G < 1 || C % G != 0)
        return kn__err(KN_EINVAL, "%s: %lld groups do not divide %lld channels of input %s", op,
                       (long long)G, (long long)C, kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    if (!(kn__attr_float(c->attrs, "eps", 1e-5) >= 0))
        return kn__err(KN_EINVAL, "%s: eps must be >= 0", op);
    int hw, hb;
    kn_status s = affine_flags(c, 1, &hw, &hb);
    if (s) return s;
    for (int i = 1; i < c->nin; i++)
        if ((s = check_param(op, hw && i == 1 ? "weight" : "bias", x, c->in[i], 1, &C))) return s;
    kn__out_like(c, 0, x, x->dtype);
    for (int o = 1; o < 3; o++) {
        c->out_dtype[o] = x->dtype;
        c->out_ndim[o] = 2;
        c->out_shape[o][0] = x->shape[0];
        c->out_shape[o][1] = G;
    }
    return KN_OK;
}

static kn_status group_norm_run(kn_opctx *c, bool ref) {
    kn_tensor *t[3] = {0};
    if (!contig_all(c->in, t, c->nin)) return fail_status();
    int hw, hb;
    affine_flags(c, 1, &hw, &hb);
    kn_tensor *x = t[0], *w = hw ? t[1] : NULL, *b = hb ? t[1 + hw] : NULL;
    int64_t G = kn__attr_int(c->attrs, "groups", 1);
    double eps = kn__attr_float(c->attrs, "eps", 1e-5);
    int64_t N = x->shape[0], C = x->shape[1], S = kn__numel(x->ndim - 2, x->shape + 2);
    int64_t cg = C / G;
    kn_dtype dt = x->dtype;
    void *y = kn__ptr(c->out[0]), *mean = kn__ptr(c->out[1]), *rstd = kn__ptr(c->out[2]);
    const void *xp = kn__ptr(x), *wp = cptr(w), *bp = cptr(b);
    if (ref || cg * S == 0) {
        kn__group_norm_ref(dt, xp, wp, bp, y, mean, rstd, N, C, S, G, eps);
    } else {
        int nt = nthreads(N * C * S);
        size_t es = kn_dtype_size(dt);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t k = 0; k < N * G; k++) {
            int64_t n = k / G, gi = k % G;
            size_t off = (size_t)((n * C + gi * cg) * S) * es;
            if (dt == KN_F32)
                gn_group_f32((const float *)((const char *)xp + off), wp, bp,
                             (float *)((char *)y + off), (float *)mean + k, (float *)rstd + k,
                             gi * cg, cg, S, eps);
            else
                gn_group_f64((const double *)((const char *)xp + off), wp, bp,
                             (double *)((char *)y + off), (double *)mean + k, (double *)rstd + k,
                             gi * cg, cg, S, eps);
        }
    }
    free_all(t, c->nin);
    return KN_OK;
}
static kn_status group_norm_forward(kn_opctx *c) {
    return group_norm_run(c, false);
}
static kn_status group_norm_forward_ref(kn_opctx *c) {
    return group_norm_run(c, true);
}

/* (1, C, 1, ...) view shape for per-channel tensors against x */
static kn_tensor *chan_view(kn_tensor *p, const kn_tensor *x) {
    int64_t sh[KN_MAX_DIMS];
    for (int k = 0; k < x->ndim; k++)
        sh[k] = k == 1 ? x->shape[1] : 1;
    return kn_reshape(p, x->ndim, sh);
}

static kn_status group_norm_backward(kn_bwctx *c) {
    int hw = (int)kn__attr_int(c->attrs, "has_weight", c->nin >= 2);
    int hb = (int)kn__attr_int(c->attrs, "has_bias", c->nin >= 3);
    kn_tensor *x = c->in[0], *w = hw ? c->in[1] : NULL;
    bool nx = c->needs[0], nw = hw && c->needs[1], nbias = hb && c->needs[1 + hw];
    if (!nx && !nw && !nbias) return KN_OK;
    int64_t G = kn__attr_int(c->attrs, "groups", 1), N = x->shape[0];
    int64_t g3[3] = {N, G, -1}, s3[3] = {N, G, 1};
    kn_tensor *g = c->gout[0];
    kn_tensor *mean3 = kn_reshape(c->out[1], 3, s3), *rstd3 = kn_reshape(c->out[2], 3, s3);
    kn_tensor *xr = kn_reshape(x, 3, g3);
    kn_tensor *xhat3 = kn_mul(kn_sub(xr, mean3), rstd3);
    kn_tensor *xhat = kn_reshape(xhat3, x->ndim, x->shape);
    int rax[KN_MAX_DIMS], nr = 0; /* all axes but 1 */
    for (int k = 0; k < x->ndim; k++)
        if (k != 1) rax[nr++] = k;
    if (nx) {
        kn_tensor *gw = w ? kn_mul(g, chan_view(w, x)) : g;
        int ax2 = 2;
        double M = x->shape[0] ? (double)kn__numel(x->ndim, x->shape) / (double)(N * G) : 0;
        kn_tensor *gxr =
            norm_grad_composed(kn_reshape(gw, 3, g3), xhat3, rstd3, kn_reshape(c->gout[1], 3, s3),
                               kn_reshape(c->gout[2], 3, s3), &ax2, 1, M);
        c->gin[0] = kn_reshape(gxr, x->ndim, x->shape);
        if (!c->gin[0]) return fail_status();
    }
    if (nw && !(c->gin[1] = kn_sum(kn_mul(g, xhat), rax, nr, false))) return fail_status();
    if (nbias && !(c->gin[1 + hw] = kn_sum(g, rax, nr, false))) return fail_status();
    return KN_OK;
}

static const kn_opdef op_group_norm = {
    .name = "group_norm",
    .min_in = 1,
    .max_in = 3,
    .nout = 3,
    .dtypes = KN_DT_FLOAT,
    .infer = group_norm_infer,
    .forward = group_norm_forward,
    .forward_ref = group_norm_forward_ref,
    .backward = group_norm_backward,
    .onnx = "GroupNormalization",
    .doc = "normalise x (N, C, *) over attr groups of channels; outputs y, mean, rstd (N, G)"};

/* ======================================================================================== */
/* batch_norm                                                                                 */
/* ======================================================================================== */

/* inputs (x[, running_mean][, running_var][, w][, b]); attrs training (default 0, like
 * F.batch_norm), momentum (0.1), eps (1e-5), has_mean, has_var, has_weight, has_bias (default:
 * the first nin-1 of those, in that order). Outputs y, mean (C), rstd (C): the batch statistics
 * when training (mean, 1/sqrt(biased var + eps)), the running ones in eval. */
typedef struct bn_args {
    int has[4]; /* mean, var, weight, bias */
    int idx[4]; /* input index of each, or -1 */
} bn_args;

/* has_* default to F.batch_norm's positional order: (x, running_mean, running_var, w, b) */
static int bn_flags(const kn_attrs *a, int nin, bn_args *b) {
    static const char *names[4] = {"has_mean", "has_var", "has_weight", "has_bias"};
    int k = 1;
    for (int i = 0; i < 4; i++) {
        b->has[i] = (int)kn__attr_int(a, names[i], nin >= i + 2);
        b->idx[i] = b->has[i] ? k++ : -1;
    }
    return k;
}

static kn_status bn_parse(const kn_opctx *c, bn_args *b) {
    int k = bn_flags(c->attrs, c->nin, b);
    if (k != c->nin)
        return kn__err(KN_EINVAL, "%s: %d inputs but the has_* attrs describe %d", c->op->name,
                       c->nin, k);
    return KN_OK;
}

static kn_status batch_norm_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    const char *op = c->op->name;
    char b1[128];
    if (x->ndim < 2)
        return kn__err(KN_ESHAPE, "%s: input shape %s, expected (N, C, *)", op,
                       kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    bn_args b;
    kn_status s = bn_parse(c, &b);
    if (s) return s;
    int64_t C = x->shape[1];
    bool training = kn__attr_int(c->attrs, "training", 0) != 0;
    static const char *what[4] = {"running_mean", "running_var", "weight", "bias"};
    for (int i = 0; i < 4; i++)
        if (b.has[i] && (s = check_param(op, what[i], x, c->in[b.idx[i]], 1, &C))) return s;
    if (!training && (!b.has[0] || !b.has[1]))
        return kn__err(KN_EINVAL, "%s: running_mean and running_var are required in eval mode", op);
    if (!(kn__attr_float(c->attrs, "eps", 1e-5) >= 0))
        return kn__err(KN_EINVAL, "%s: eps must be >= 0", op);
    if (training && kn__numel(x->ndim, x->shape) / (C ? C : 1) <= 1 && C > 0)
        return kn__err(KN_EINVAL,
                       "%s: expected more than 1 value per channel when training, got input "
                       "shape %s",
                       op, kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    kn__out_like(c, 0, x, x->dtype);
    for (int o = 1; o < 3; o++) {
        c->out_dtype[o] = x->dtype;
        c->out_ndim[o] = 1;
        c->out_shape[o][0] = C;
    }
    return KN_OK;
}

static double ld1(const kn_tensor *t, int64_t i) { /* element i of a 1-D float tensor */
    const char *p = kn__ptr(t) + (size_t)(i * t->strides[0]) * kn_dtype_size(t->dtype);
    return t->dtype == KN_F32 ? (double)*(const float *)p : *(const double *)p;
}
static void st1(kn_tensor *t, int64_t i, double v) {
    char *p = kn__ptr(t) + (size_t)(i * t->strides[0]) * kn_dtype_size(t->dtype);
    if (t->dtype == KN_F32)
        *(float *)p = (float)v;
    else
        *(double *)p = v;
}

#define BN_SMALL_S 64 /* below this plane size, channels are processed as columns */

static kn_status batch_norm_run(kn_opctx *c, bool ref) {
    bn_args ba;
    bn_parse(c, &ba);
    kn_tensor *xin = c->in[0];
    kn_tensor *x = kn__contig(xin);
    if (!x) return fail_status();
    kn_tensor *rm = ba.has[0] ? c->in[ba.idx[0]] : NULL, *rv = ba.has[1] ? c->in[ba.idx[1]] : NULL;
    kn_tensor *w = ba.has[2] ? c->in[ba.idx[2]] : NULL, *bb = ba.has[3] ? c->in[ba.idx[3]] : NULL;
    bool training = kn__attr_int(c->attrs, "training", 0) != 0;
    double mom = kn__attr_float(c->attrs, "momentum", 0.1);
    double eps = kn__attr_float(c->attrs, "eps", 1e-5);
    kn_dtype dt = x->dtype;
    size_t es = kn_dtype_size(dt);
    int64_t N = x->shape[0], C = x->shape[1], S = kn__numel(x->ndim - 2, x->shape + 2);
    int64_t K = C * S;
    kn_status st = KN_OK;
    bool small = S < BN_SMALL_S;
    /* per channel: mean, var, then a (scale) and s (shift): y = x*a + s; small S: column sums */
    double *buf = kn__malloc(sizeof(double) * (size_t)(4 * C + (small ? K : 0) + 1));
    void *ex = NULL; /* expanded per-column coefficients (small S path) */
    if (!buf) {
        st = fail_status();
        goto done;
    }
    double *mean = buf, *var = buf + C, *ca = buf + 2 * C, *cs = buf + 3 * C;
    double *colsum = buf + 4 * C;
    const void *xp = kn__ptr(x);
    void *yp = kn__ptr(c->out[0]);
    int nt = nthreads(N * K);
    if (!training) {
        for (int64_t ch = 0; ch < C; ch++)
            mean[ch] = ld1(rm, ch), var[ch] = ld1(rv, ch);
    } else if (ref || N * K == 0) {
        kn__batch_stats_ref(dt, xp, mean, var, N, C, S);
    } else if (!small) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t ch = 0; ch < C; ch++) {
            if (dt == KN_F32)
                bn_chan_stats_f32(xp, N, C, S, ch, mean + ch, var + ch);
            else
                bn_chan_stats_f64(xp, N, C, S, ch, mean + ch, var + ch);
        }
    } else { /* columns of (N, K): fixed 256-column blocks */
        int64_t KB = 256, nkb = (K + KB - 1) / KB;
        if (!(ex = kn__aligned_alloc((size_t)K * es))) {
            st = fail_status();
            goto done;
        }
        double cnt = (double)N * (double)S;
        for (int pass = 0; pass < 2; pass++) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
            for (int64_t kb = 0; kb < nkb; kb++) {
                int64_t k0 = kb * KB, k1 = k0 + KB < K ? k0 + KB : K;
                if (dt == KN_F32)
                    bn_col_sums_f32(xp, pass ? ex : NULL, colsum, N, K, k0, k1);
                else
                    bn_col_sums_f64(xp, pass ? ex : NULL, colsum, N, K, k0, k1);
            }
            for (int64_t ch = 0; ch < C; ch++) {
                double s = 0;
                for (int64_t k = 0; k < S; k++)
                    s += colsum[ch * S + k];
                if (pass == 0) {
                    mean[ch] = s / cnt;
                    for (int64_t k = 0; k < S; k++) { /* centre for pass 2 */
                        if (dt == KN_F32)
                            ((float *)ex)[ch * S + k] = (float)mean[ch];
                        else
                            ((double *)ex)[ch * S + k] = mean[ch];
                    }
                } else {
                    double mt = dt == KN_F32 ? (double)(float)mean[ch] : mean[ch];
                    double dm = mean[ch] - mt, v = s / cnt - dm * dm;
                    var[ch] = v > 0 ? v : 0;
                }
            }
        }
    }
    /* coefficients, saved statistics, running-stat update (PyTorch: unbiased var, momentum) */
    double cnt = (double)N * (double)S;
    for (int64_t ch = 0; ch < C; ch++) {
        double rs = 1.0 / sqrt(var[ch] + eps);
        double wv = w ? ld1(w, ch) : 1.0, bv = bb ? ld1(bb, ch) : 0.0;
        ca[ch] = rs * wv;
        cs[ch] = bv - mean[ch] * ca[ch];
        st1(c->out[1], ch, mean[ch]);
        st1(c->out[2], ch, rs);
        if (training) {
            if (rm) st1(rm, ch, mom * mean[ch] + (1.0 - mom) * ld1(rm, ch));
            if (rv) st1(rv, ch, mom * (var[ch] * cnt / (cnt - 1.0)) + (1.0 - mom) * ld1(rv, ch));
        }
    }
    if (ref || N * K == 0) {
        kn__channel_affine_ref(dt, xp, yp, ca, cs, N, C, S);
    } else if (!small) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t ch = 0; ch < C; ch++) {
            if (dt == KN_F32)
                bn_chan_affine_f32(xp, yp, N, C, S, ch, ca[ch], cs[ch]);
            else
                bn_chan_affine_f64(xp, yp, N, C, S, ch, ca[ch], cs[ch]);
        }
    } else {
        void *A = kn__aligned_alloc((size_t)(2 * K) * es);
        if (!A) {
            st = fail_status();
            goto done;
        }
        for (int64_t k = 0; k < K; k++) {
            int64_t ch = k / S;
            if (dt == KN_F32)
                ((float *)A)[k] = (float)ca[ch], ((float *)A)[K + k] = (float)cs[ch];
            else
                ((double *)A)[k] = ca[ch], ((double *)A)[K + k] = cs[ch];
        }
        int64_t NB = 16, nnb = (N + NB - 1) / NB;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t b = 0; b < nnb; b++) {
            int64_t n0 = b * NB, n1 = n0 + NB < N ? n0 + NB : N;
            if (dt == KN_F32)
                bn_rows_affine_f32(xp, yp, A, (const float *)A + K, K, n0, n1);
            else
                bn_rows_affine_f64(xp, yp, A, (const double *)A + K, K, n0, n1);
        }
        kn__aligned_free(A);
    }
done:
    kn__aligned_free(ex);
    kn__free(buf);
    kn_tensor_free(x);
    return st;
}
static kn_status batch_norm_forward(kn_opctx *c) {
    return batch_norm_run(c, false);
}
static kn_status batch_norm_forward_ref(kn_opctx *c) {
    return batch_norm_run(c, true);
}

/* batch_norm_backward: inputs (gy, x, mean, rstd, gmean, grstd[, w]); attrs training,
 * has_weight, need (bit 0 gx, bit 1 gw, bit 2 gb). Outputs gx, gw (C), gb (C). */
static kn_status bn_bw_infer(kn_opctx *c) {
    kn_tensor *g = c->in[0], *x = c->in[1];
    const char *op = c->op->name;
    char b1[128];
    int hw = (int)kn__attr_int(c->attrs, "has_weight", c->nin == 7);
    if (hw != (c->nin == 7))
        return kn__err(KN_EINVAL, "%s: has_weight %d for %d inputs", op, hw, c->nin);
    if (x->ndim < 2)
        return kn__err(KN_ESHAPE, "%s: input shape %s, expected (N, C, *)", op,
                       kn__shape_str(b1, sizeof b1, x->ndim, x->shape));
    kn_status s = check_same(op, "input", g, x);
    if (s) return s;
    int64_t C = x->shape[1];
    const char *names[5] = {"mean", "rstd", "mean gradient", "rstd gradient", "weight"};
    for (int i = 2; i < c->nin; i++)
        if ((s = check_param(op, names[i - 2], x, c->in[i], 1, &C))) return s;
    kn__out_like(c, 0, x, x->dtype);
    for (int o = 1; o < 3; o++) {
        c->out_dtype[o] = x->dtype;
        c->out_ndim[o] = 1;
        c->out_shape[o][0] = C;
    }
    return KN_OK;
}

static kn_status bn_bw_run(kn_opctx *c, bool ref) {
    kn_tensor *t[7] = {0};
    if (!contig_all(c->in, t, c->nin)) return fail_status();
    kn_tensor *g = t[0], *x = t[1], *w = c->nin == 7 ? t[6] : NULL;
    bool training = kn__attr_int(c->attrs, "training", 0) != 0;
    int need = (int)kn__attr_int(c->attrs, "need", 7);
    kn_dtype dt = x->dtype;
    size_t es = kn_dtype_size(dt);
    int64_t N = x->shape[0], C = x->shape[1], S = kn__numel(x->ndim - 2, x->shape + 2);
    int64_t K = C * S;
    void *gx = (need & 1) ? kn__ptr(c->out[0]) : NULL;
    void *gwp = (need & 2) ? kn__ptr(c->out[1]) : NULL;
    void *gbp = (need & 4) ? kn__ptr(c->out[2]) : NULL;
    if (!gx) memset(kn__ptr(c->out[0]), 0, (size_t)(N * K) * es);
    if (!gwp) memset(kn__ptr(c->out[1]), 0, (size_t)C * es);
    if (!gbp) memset(kn__ptr(c->out[2]), 0, (size_t)C * es);
    const void *gp = kn__ptr(g), *xp = kn__ptr(x);
    kn_status st = KN_OK;
    double *buf = NULL;
    void *ex = NULL;
    if (ref || N * K == 0) {
        kn__batch_norm_bw_ref(dt, gp, xp, kn__ptr(t[2]), kn__ptr(t[3]), kn__ptr(t[4]),
                              kn__ptr(t[5]), cptr(w), gx, gwp, gbp, N, C, S, training);
        goto done;
    }
    bool small = S < BN_SMALL_S;
    if (!(buf = kn__malloc(sizeof(double) * (size_t)(5 * C + (small ? 2 * K : 0) + 1)))) {
        st = fail_status();
        goto done;
    }
    double *sg = buf, *sgx = buf + C, *cg = buf + 2 * C, *cx = buf + 3 * C, *c0 = buf + 4 * C;
    double *colg = buf + 5 * C, *colgx = colg + K;
    double cnt = (double)N * (double)S;
    int nt = nthreads(N * K);
    /* coefficients of gx = g*cg + x*cx + c0 for channel ch, from the sums sg, sgx */
#define BN_COEF(ch)                                                                                \
    do {                                                                                           \
        double mu = ld1(t[2], ch), rs = ld1(t[3], ch), wv = w ? ld1(w, ch) : 1.0;                  \
        if (gwp) st1(c->out[1], ch, sgx[ch] * rs);                                                 \
        if (gbp) st1(c->out[2], ch, sg[ch]);                                                       \
        cg[ch] = wv * rs;                                                                          \
        if (training) {                                                                            \
            double gm = ld1(t[4], ch), gr = ld1(t[5], ch);                                         \
            double kx = -rs * rs * rs * (wv * sgx[ch] + gr) / cnt;                                 \
            cx[ch] = kx;                                                                           \
            c0[ch] = (-wv * rs * sg[ch] + gm) / cnt - kx * mu;                                     \
        } else {                                                                                   \
            cx[ch] = 0, c0[ch] = 0;                                                                \
        }                                                                                          \
    } while (0)
    if (!small) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t ch = 0; ch < C; ch++) {
            double mu = ld1(t[2], ch);
            if (dt == KN_F32)
                bn_chan_bw_sums_f32(gp, xp, N, C, S, ch, (float)mu, sg + ch, sgx + ch);
            else
                bn_chan_bw_sums_f64(gp, xp, N, C, S, ch, mu, sg + ch, sgx + ch);
            if (dt == KN_F32) /* the kernel centred on the rounded mean: correct for it */
                sgx[ch] -= sg[ch] * (mu - (double)(float)mu);
            BN_COEF(ch);
            if (gx) {
                if (dt == KN_F32)
                    bn_chan_bw_apply_f32(gp, xp, gx, N, C, S, ch, cg[ch], cx[ch], c0[ch]);
                else
                    bn_chan_bw_apply_f64(gp, xp, gx, N, C, S, ch, cg[ch], cx[ch], c0[ch]);
            }
        }
    } else {
        int64_t KB = 256, nkb = (K + KB - 1) / KB;
        if (!(ex = kn__aligned_alloc((size_t)(3 * K) * es))) {
            st = fail_status();
            goto done;
        }
        for (int64_t k = 0; k < K; k++) {
            double mu = ld1(t[2], k / S);
            if (dt == KN_F32)
                ((float *)ex)[k] = (float)mu;
            else
                ((double *)ex)[k] = mu;
        }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t k0 = kb * KB, k1 = k0 + KB < K ? k0 + KB : K;
            if (dt == KN_F32)
                bn_col_bw_sums_f32(gp, xp, ex, colg, colgx, N, K, k0, k1);
            else
                bn_col_bw_sums_f64(gp, xp, ex, colg, colgx, N, K, k0, k1);
        }
        for (int64_t ch = 0; ch < C; ch++) {
            double a = 0, b = 0, mu = ld1(t[2], ch);
            for (int64_t k = 0; k < S; k++)
                a += colg[ch * S + k], b += colgx[ch * S + k];
            sg[ch] = a;
            sgx[ch] = b;
            if (dt == KN_F32) sgx[ch] -= a * (mu - (double)(float)mu);
            BN_COEF(ch);
        }
        if (gx) {
            for (int64_t k = 0; k < K; k++) {
                int64_t ch = k / S;
                if (dt == KN_F32) {
                    float *E = ex;
                    E[k] = (float)cg[ch], E[K + k] = (float)cx[ch], E[2 * K + k] = (float)c0[ch];
                } else {
                    double *E = ex;
                    E[k] = cg[ch], E[K + k] = cx[ch], E[2 * K + k] = c0[ch];
                }
            }
            int64_t NB = 16, nnb = (N + NB - 1) / NB;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
            for (int64_t b = 0; b < nnb; b++) {
                int64_t n0 = b * NB, n1 = n0 + NB < N ? n0 + NB : N;
                if (dt == KN_F32)
                    bn_rows_bw_apply_f32(gp, xp, gx, ex, (const float *)ex + K,
                                         (const float *)ex + 2 * K, K, n0, n1);
                else
                    bn_rows_bw_apply_f64(gp, xp, gx, ex, (const double *)ex + K,
                                         (const double *)ex + 2 * K, K, n0, n1);
            }
        }
    }
#undef BN_COEF
done:
    kn__aligned_free(ex);
    kn__free(buf);
    free_all(t, c->nin);
    return st;
}
static kn_status bn_bw_forward(kn_opctx *c) {
    return bn_bw_run(c, false);
}
static kn_status bn_bw_forward_ref(kn_opctx *c) {
    return bn_bw_run(c, true);
}

static const kn_opdef op_batch_norm_bw = {
    .name = "batch_norm_backward",
    .min_in = 6,
    .max_in = 7,
    .nout = 3,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = bn_bw_infer,
    .forward = bn_bw_forward,
    .forward_ref = bn_bw_forward_ref,
    .doc = "(gx, gw, gb) from (gy, x, mean, rstd, gmean, grstd[, w]); fused, not differentiable"};

static kn_status batch_norm_backward(kn_bwctx *c) {
    bn_args ba;
    bn_flags(c->attrs, c->nin, &ba);
    bool training = kn__attr_int(c->attrs, "training", 0) != 0;
    kn_tensor *x = c->in[0], *w = ba.has[2] ? c->in[ba.idx[2]] : NULL;
    bool nx = c->needs[0], nw = ba.has[2] && c->needs[ba.idx[2]];
    bool nbias = ba.has[3] && c->needs[ba.idx[3]];
    if (!nx && !nw && !nbias) return KN_OK;
    kn_tensor *g = c->gout[0], *mean = c->out[1], *rstd = c->out[2];
    if (kn_is_grad_enabled()) {
        int rax[KN_MAX_DIMS], nr = 0; /* all axes but 1 */
        for (int d = 0; d < x->ndim; d++)
            if (d != 1) rax[nr++] = d;
        kn_tensor *mb = chan_view(mean, x), *rb = chan_view(rstd, x);
        kn_tensor *xhat = kn_mul(kn_sub(x, mb), rb);
        if (nx) {
            kn_tensor *gw = w ? kn_mul(g, chan_view(w, x)) : g;
            if (training) {
                double M = (double)kn__numel(x->ndim, x->shape) / (double)x->shape[1];
                c->gin[0] = norm_grad_composed(gw, xhat, rb, chan_view(c->gout[1], x),
                                               chan_view(c->gout[2], x), rax, nr, M);
            } else {
                c->gin[0] = kn_mul(gw, rb);
            }
            if (!c->gin[0]) return fail_status();
        }
        if (nw && !(c->gin[ba.idx[2]] = kn_sum(kn_mul(g, xhat), rax, nr, false)))
            return fail_status();
        if (nbias && !(c->gin[ba.idx[3]] = kn_sum(g, rax, nr, false))) return fail_status();
        return KN_OK;
    }
    kn_tensor *in[7] = {g, x, mean, rstd, c->gout[1], c->gout[2], w};
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "training", training);
    kn_attrs_set_int(&a, "has_weight", w != NULL);
    kn_attrs_set_int(&a, "need", (nx ? 1 : 0) | (nw ? 2 : 0) | (nbias ? 4 : 0));
    kn_tensor *out[3] = {0};
    if (kn__op_run(&op_batch_norm_bw, in, w ? 7 : 6, &a, out, 3) < 0) return fail_status();
    if (nx) c->gin[0] = out[0];
    if (nw) c->gin[ba.idx[2]] = out[1];
    if (nbias) c->gin[ba.idx[3]] = out[2];
    return KN_OK;
}

static const kn_opdef op_batch_norm = {
    .name = "batch_norm",
    .min_in = 1,
    .max_in = 5,
    .nout = 3,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_MUTATES,
    .infer = batch_norm_infer,
    .forward = batch_norm_forward,
    .forward_ref = batch_norm_forward_ref,
    .backward = batch_norm_backward,
    .onnx = "BatchNormalization",
    .doc = "per-channel normalisation of x (N, C, *); training updates running stats in place; "
           "outputs y, mean, rstd"};

const kn_opdef *const kn__ops_norm[] = {
    &op_softmax,       &op_log_softmax, &op_softmax_bw, &op_log_softmax_bw, &op_layer_norm,
    &op_layer_norm_bw, &op_group_norm,  &op_batch_norm, &op_batch_norm_bw,  NULL};

/* ======================================================================================== */
/* public API                                                                                 */
/* ======================================================================================== */

kn_tensor *kn_softmax(kn_tensor *x, int dim) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", dim);
    return kn__op1(&op_softmax, &x, 1, &a);
}

kn_tensor *kn_log_softmax(kn_tensor *x, int dim) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", dim);
    return kn__op1(&op_log_softmax, &x, 1, &a);
}

kn_tensor *kn_layer_norm(kn_tensor *x, int nnorm, kn_tensor *weight, kn_tensor *bias, double eps) {
    kn_tensor *in[3] = {x};
    int n = 1;
    if (weight) in[n++] = weight;
    if (bias) in[n++] = bias;
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "nnorm", nnorm);
    kn_attrs_set_float(&a, "eps", eps);
    kn_attrs_set_int(&a, "has_weight", weight != NULL);
    kn_attrs_set_int(&a, "has_bias", bias != NULL);
    return kn__nrm_run_first(&op_layer_norm, in, n, &a, NULL);
}

kn_tensor *kn_group_norm(kn_tensor *x, int64_t groups, kn_tensor *weight, kn_tensor *bias,
                         double eps) {
    kn_tensor *in[3] = {x};
    int n = 1;
    if (weight) in[n++] = weight;
    if (bias) in[n++] = bias;
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "groups", groups);
    kn_attrs_set_float(&a, "eps", eps);
    kn_attrs_set_int(&a, "has_weight", weight != NULL);
    kn_attrs_set_int(&a, "has_bias", bias != NULL);
    return kn__nrm_run_first(&op_group_norm, in, n, &a, NULL);
}

kn_tensor *kn_batch_norm(kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var,
                         kn_tensor *weight, kn_tensor *bias, bool training, double momentum,
                         double eps) {
    kn_tensor *in[5] = {x};
    kn_tensor *opt[4] = {running_mean, running_var, weight, bias};
    static const char *names[4] = {"has_mean", "has_var", "has_weight", "has_bias"};
    kn_attrs a = {0};
    int n = 1;
    for (int i = 0; i < 4; i++) {
        if (opt[i]) in[n++] = opt[i];
        kn_attrs_set_int(&a, names[i], opt[i] != NULL);
    }
    kn_attrs_set_int(&a, "training", training);
    kn_attrs_set_float(&a, "momentum", momentum);
    kn_attrs_set_float(&a, "eps", eps);
    return kn__nrm_run_first(&op_batch_norm, in, n, &a, NULL);
}
