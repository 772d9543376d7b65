/*
 * reduce.c - sum and mean over any axes (keepdim), and the shared reduction machinery declared
 * in reduce_impl.h. Other reductions (prod, max, var, logsumexp, norm, ...) live in stats.c.
 * Integer and bool sums accumulate in int64 and return int64 (PyTorch's rule).
 */
#include <omp.h>

#include "ops/reduce_impl.h"

#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

kn_status kn__reduce_mask(const char *op, const kn_attrs *a, int ndim, bool *mask) {
    int64_t axes[KN_MAX_ATTR_INTS];
    int n = kn__attr_ints(a, "axes", axes, KN_MAX_ATTR_INTS);
    for (int i = 0; i < KN_MAX_DIMS; i++)
        mask[i] = n <= 0 && i < ndim;
    for (int i = 0; i < n; i++) {
        int d = kn__axis(op, (int)axes[i], ndim);
        if (d < 0) return kn_last_status();
        if (ndim == 0) continue;
        if (mask[d]) return kn__err(KN_EINVAL, "%s: dim %d appears twice in axes", op, d);
        mask[d] = true;
    }
    return KN_OK;
}

kn_status kn__reduce_infer(kn_opctx *c, kn_dtype dt) {
    const kn_tensor *x = c->in[0];
    bool mask[KN_MAX_DIMS];
    kn_status st = kn__reduce_mask(c->op->name, c->attrs, x->ndim, mask);
    if (st) return st;
    bool keep = kn__attr_int(c->attrs, "keepdim", 0) != 0;
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (!mask[i])
            c->out_shape[0][nd++] = x->shape[i];
        else if (keep)
            c->out_shape[0][nd++] = 1;
    }
    c->out_ndim[0] = nd;
    c->out_dtype[0] = dt;
    return KN_OK;
}

int64_t kn__reduce_count(const kn_tensor *x, const bool *mask) {
    int64_t n = 1;
    for (int i = 0; i < x->ndim; i++)
        if (mask[i]) n *= x->shape[i];
    return n;
}

kn_tensor *kn__reduce_expand(kn_tensor *g, const kn_tensor *x, const kn_attrs *a) {
    bool mask[KN_MAX_DIMS];
    if (kn__reduce_mask("reduce_backward", a, x->ndim, mask)) return NULL;
    int64_t keep[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        keep[i] = mask[i] ? 1 : x->shape[i];
    return kn_expand(kn_reshape(g, x->ndim, keep), x->ndim, x->shape);
}

kn_tensor *kn__reduce_prepare(kn_tensor *x, const bool *mask, kn_rplan *p) {
    int first = -1, last = -1;
    bool adjacent = true;
    for (int i = 0; i < x->ndim; i++) {
        if (!mask[i] || x->shape[i] == 1) continue;
        if (first < 0)
            first = i;
        else if (last != i - 1) {
            /* a gap of size-1 dims is still adjacent */
            for (int k = last + 1; k < i; k++)
                if (x->shape[k] != 1) adjacent = false;
        }
        last = i;
    }
    if (first < 0) { /* nothing of size > 1 reduced */
        p->A = kn__numel(x->ndim, x->shape);
        p->R = 1;
        p->B = 1;
        return kn__contig(x);
    }
    if (adjacent) {
        p->A = kn__numel(first, x->shape);
        p->R = kn__numel(last - first + 1, x->shape + first);
        p->B = kn__numel(x->ndim - last - 1, x->shape + last + 1);
        return kn__contig(x);
    }
    /* permute kept dims first, reduced dims last, and copy */
    int64_t shape[KN_MAX_DIMS], st[KN_MAX_DIMS];
    int nd = 0;
    p->A = 1;
    p->R = 1;
    p->B = 1;
    for (int i = 0; i < x->ndim; i++)
        if (!mask[i]) shape[nd] = x->shape[i], st[nd++] = x->strides[i], p->A *= x->shape[i];
    for (int i = 0; i < x->ndim; i++)
        if (mask[i]) shape[nd] = x->shape[i], st[nd++] = x->strides[i], p->R *= x->shape[i];
    kn_tensor *v = kn__tensor_view(x, nd, shape, st, x->offset);
    if (!v) return NULL;
    kn_tensor *c = kn__contig(v);
    kn_tensor_free(v);
    return c;
}

/* ---- deterministic sums ---- */
CLONES static float block_sum_f32(const float *x, int64_t n) {
    float acc[32] = {0};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 32; k++)
            acc[k] += x[i + k];
    float s = 0;
    for (int k = 0; k < 32; k++)
        s += acc[k];
    for (; i < n; i++)
        s += x[i];
    return s;
}
double kn__sum_f32(const float *x, int64_t n) {
    double s = 0;
    for (int64_t b = 0; b < n; b += KN_RBLOCK)
        s += block_sum_f32(x + b, n - b < KN_RBLOCK ? n - b : KN_RBLOCK);
    return s;
}
static double block_sum_f64(const double *x, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += x[i + k];
    double s = 0;
    for (int k = 0; k < 8; k++)
        s += acc[k];
    for (; i < n; i++)
        s += x[i];
    return s;
}
double kn__sum_f64(const double *x, int64_t n) {
    double s = 0;
    for (int64_t b = 0; b < n; b += KN_RBLOCK)
        s += block_sum_f64(x + b, n - b < KN_RBLOCK ? n - b : KN_RBLOCK);
    return s;
}

/* Column sums out[b] = sum_r x[r*B + b] (B > 1): sequential over r for each b: fixed order. */
CLONES static void colsum_f32(const float *x, int64_t R, int64_t B, int64_t b0, int64_t b1,
                              float *out) {
    for (int64_t b = b0; b < b1; b++)
        out[b] = 0;
    for (int64_t r = 0; r < R; r++) {
        const float *row = x + r * B;
        for (int64_t b = b0; b < b1; b++)
            out[b] += row[b];
    }
}

typedef struct {
    bool mean;
} sumargs;

static int64_t load_i64(kn_dtype dt, const char *p) {
    switch (dt) {
    case KN_I8: return *(const int8_t *)p;
    case KN_U8:
    case KN_BOOL: return *(const uint8_t *)p;
    case KN_I32: return *(const int32_t *)p;
    default: return *(const int64_t *)p;
    }
}

/* Start of the last run of reduced dims (size-1 dims do not break a run), or -1 when all the
 * reduced dims of size > 1 already form one run. */
static int split_point(const kn_tensor *x, const bool *mask) {
    int last = -1;
    for (int i = x->ndim - 1; i >= 0 && last < 0; i--)
        if (mask[i] && x->shape[i] > 1) last = i;
    if (last < 0) return -1;
    int start = last;
    while (start > 0 && (mask[start - 1] || x->shape[start - 1] == 1))
        start--;
    for (int i = 0; i < start; i++)
        if (mask[i] && x->shape[i] > 1) return start;
    return -1;
}

/* Reduced dims on both sides of a kept one (a bias gradient's {0, 2, 3}): sum the last run
 * first, then the rest of that partial sum, each stage over adjacent dims, instead of copying x
 * into a permuted layout. The order of additions is fixed by the shape alone. */
static const kn_opdef op_sum;
static kn_status sum_run(kn_opctx *c, bool ref);

/* A contiguous header with the given shape over memory it does not own, on the stack. */
static void stack_tensor(kn_tensor *t, kn_storage *st, kn_dtype dt, int nd, const int64_t *shape,
                         void *data, int64_t offset) {
    memset(t, 0, sizeof *t);
    memset(st, 0, sizeof *st);
    atomic_init(&st->refcount, 1);
    st->data = data;
    st->nbytes = (size_t)kn__numel(nd, shape) * kn_dtype_size(dt);
    st->external = true;
    atomic_init(&t->refcount, 1);
    t->dtype = dt;
    t->ndim = nd;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)nd);
    kn__contiguous_strides(nd, shape, t->strides);
    t->offset = offset;
    t->storage = st;
}

/* Two adjacent-axis sums (inner axes into per-thread scratch, then outer axes into the output),
 * run directly on stack headers: the same arithmetic as sum(sum(x, inner), outer) with no
 * allocation, so compiled graphs stay allocation-free. */
static kn_status sum_in_stages(kn_opctx *c, const bool *mask, int split) {
    kn_tensor *x = c->in[0], *o = c->out[0];
    int64_t inner[KN_MAX_DIMS], outer[KN_MAX_DIMS];
    int ni = 0, no = 0;
    int64_t mshape[KN_MAX_DIMS], oshape[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        mshape[i] = oshape[i] = x->shape[i];
        if (!mask[i]) continue;
        if (i >= split) {
            inner[ni++] = i;
            mshape[i] = oshape[i] = 1;
        } else {
            outer[no++] = i;
            oshape[i] = 1;
        }
    }
    size_t es = kn_dtype_size(x->dtype);
    void *buf = kn__scratch_get((size_t)kn__numel(x->ndim, mshape) * es + 64);
    if (!buf) return kn_last_status();
    kn_tensor mid, ov;
    kn_storage ms, os;
    stack_tensor(&mid, &ms, x->dtype, x->ndim, mshape, buf, 0);
    stack_tensor(&ov, &os, o->dtype, x->ndim, oshape, o->storage->data, o->offset);
    kn_attrs a1 = {0}, a2 = {0};
    kn_attrs_set_ints(&a1, "axes", inner, ni);
    kn_attrs_set_int(&a1, "keepdim", 1);
    kn_attrs_set_ints(&a2, "axes", outer, no);
    kn_attrs_set_int(&a2, "keepdim", 1);
    kn_tensor *m1 = &mid, *o2 = &ov;
    kn_opctx c1 = {.op = &op_sum, .nin = 1, .in = &x, .attrs = &a1, .nout = 1, .out = {m1}};
    kn_opctx c2 = {.op = &op_sum, .nin = 1, .in = &m1, .attrs = &a2, .nout = 1, .out = {o2}};
    kn_status st = sum_run(&c1, false);
    if (st == KN_OK) st = sum_run(&c2, false);
    kn__scratch_put(buf);
    if (st == KN_OK && strcmp(c->op->name, "mean") == 0) {
        double r = (double)kn__reduce_count(x, mask);
        int64_t n = kn__numel(o->ndim, o->shape);
        if (o->dtype == KN_F32)
            for (int64_t i = 0; i < n; i++)
                ((float *)kn__ptr(o))[i] = (float)(((float *)kn__ptr(o))[i] / r);
        else
            for (int64_t i = 0; i < n; i++)
                ((double *)kn__ptr(o))[i] /= r;
    }
    return st;
}

static kn_status sum_run(kn_opctx *c, bool ref) {
    bool mean = strcmp(c->op->name, "mean") == 0;
    kn_tensor *x = c->in[0], *o = c->out[0];
    bool mask[KN_MAX_DIMS];
    kn__reduce_mask(c->op->name, c->attrs, x->ndim, mask);
    int split = ref ? -1 : split_point(x, mask);
    if (split >= 0) return sum_in_stages(c, mask, split);
    kn_rplan p;
    kn_tensor *xc = kn__reduce_prepare(x, mask, &p);
    if (!xc) return kn_last_status();
    int64_t A = p.A, R = p.R, B = p.B, nout = A * B;
    int nth = (A * R * B > 32768) ? kn__threads() : 1;
    const char *xb = kn__ptr(xc);
    char *ob = kn__ptr(o);
    if (x->dtype == KN_F32) {
        const float *xf = (const float *)xb;
        float *of = (float *)ob;
        if (B == 1 && !ref) {
            if (A >= nth || R < 2 * KN_RBLOCK) {
#pragma omp parallel for num_threads(nth) schedule(static)
                for (int64_t a = 0; a < A; a++) {
                    double s = kn__sum_f32(xf + a * R, R);
                    of[a] = (float)(mean ? s / (double)R : s);
                }
            } else { /* few long rows: blocks in parallel, partials added in order */
                int64_t nb = (R + KN_RBLOCK - 1) / KN_RBLOCK;
                double *part = kn__malloc(sizeof(double) * (size_t)nb);
                if (!part) {
                    kn_tensor_free(xc);
                    return kn_last_status();
                }
                for (int64_t a = 0; a < A; a++) {
#pragma omp parallel for num_threads(nth) schedule(static)
                    for (int64_t b = 0; b < nb; b++) {
                        int64_t s0 = b * KN_RBLOCK, len = R - s0 < KN_RBLOCK ? R - s0 : KN_RBLOCK;
                        part[b] = kn__sum_f32(xf + a * R + s0, len);
                    }
                    double s = 0;
                    for (int64_t b = 0; b < nb; b++)
                        s += part[b];
                    of[a] = (float)(mean ? s / (double)R : s);
                }
                kn__free(part);
            }
        } else if (!ref) {
            /* split the B columns of each a among threads */
#pragma omp parallel for num_threads(nth) schedule(static) collapse(2)
            for (int64_t a = 0; a < A; a++)
                for (int64_t t = 0; t < nth; t++) {
                    int64_t b0 = B * t / nth, b1 = B * (t + 1) / nth;
                    if (b0 < b1) colsum_f32(xf + a * R * B, R, B, b0, b1, of + a * B);
                }
            if (mean)
                for (int64_t i = 0; i < nout; i++)
                    of[i] = (float)((double)of[i] / (double)R);
        } else { /* reference: plain double accumulation in index order */
            for (int64_t a = 0; a < A; a++)
                for (int64_t b = 0; b < B; b++) {
                    double s = 0;
                    for (int64_t r = 0; r < R; r++)
                        s += xf[(a * R + r) * B + b];
                    of[a * B + b] = (float)(mean ? s / (double)R : s);
                }
        }
    } else if (x->dtype == KN_F64) {
        const double *xd = (const double *)xb;
        double *od = (double *)ob;
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t i = 0; i < nout; i++) {
            int64_t a = i / B, b = i % B;
            double s;
            if (B == 1) {
                s = kn__sum_f64(xd + a * R, R);
            } else {
                s = 0;
                for (int64_t r = 0; r < R; r++)
                    s += xd[(a * R + r) * B + b];
            }
            od[i] = mean ? s / (double)R : s;
        }
    } else { /* integers and bool -> int64 */
        size_t es = kn_dtype_size(x->dtype);
        int64_t *oi = (int64_t *)ob;
        for (int64_t i = 0; i < nout; i++) {
            int64_t a = i / B, b = i % B;
            uint64_t s = 0;
            for (int64_t r = 0; r < R; r++)
                s += (uint64_t)load_i64(x->dtype, xb + (size_t)((a * R + r) * B + b) * es);
            oi[i] = (int64_t)s;
        }
    }
    kn_tensor_free(xc);
    return KN_OK;
}
static kn_status sum_forward(kn_opctx *c) {
    return sum_run(c, false);
}
static kn_status sum_forward_ref(kn_opctx *c) {
    return sum_run(c, true);
}

static kn_status sum_infer(kn_opctx *c) {
    kn_dtype dt = c->in[0]->dtype;
    if (dt == KN_F16 || dt == KN_BF16)
        return kn__err(KN_EDTYPE, "%s: %s is not supported (cast to float32)", c->op->name,
                       kn_dtype_name(dt));
    if (strcmp(c->op->name, "mean") == 0 && !kn_dtype_is_float(dt))
        return kn__err(KN_EDTYPE, "mean: needs a floating dtype, got %s", kn_dtype_name(dt));
    return kn__reduce_infer(c, kn_dtype_is_float(dt) ? dt : KN_I64);
}

static kn_status sum_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *g = kn__reduce_expand(c->gout[0], c->in[0], c->attrs);
    if (g && strcmp(c->op->name, "mean") == 0) {
        bool mask[KN_MAX_DIMS];
        kn__reduce_mask("mean", c->attrs, c->in[0]->ndim, mask);
        g = kn_mul_scalar(g, 1.0 / (double)kn__reduce_count(c->in[0], mask));
    }
    c->gin[0] = g;
    return g ? KN_OK : kn_last_status();
}

static const kn_opdef op_sum = {.name = "sum",
                                .min_in = 1,
                                .max_in = 1,
                                .nout = 1,
                                .dtypes = KN_DT_ALL,
                                .flags = KN_OPF_REDUCTION,
                                .infer = sum_infer,
                                .forward = sum_forward,
                                .forward_ref = sum_forward_ref,
                                .backward = sum_backward,
                                .onnx = "ReduceSum",
                                .doc = "sum over axes (all when absent); attrs axes, keepdim"};
static const kn_opdef op_mean = {.name = "mean",
                                 .min_in = 1,
                                 .max_in = 1,
                                 .nout = 1,
                                 .dtypes = KN_DT_FLOAT,
                                 .flags = KN_OPF_REDUCTION,
                                 .infer = sum_infer,
                                 .forward = sum_forward,
                                 .forward_ref = sum_forward_ref,
                                 .backward = sum_backward,
                                 .onnx = "ReduceMean",
                                 .doc = "mean over axes (all when absent); attrs axes, keepdim"};

static kn_tensor *reduce_call(const kn_opdef *op, kn_tensor *x, const int *axes, int naxes,
                              bool keepdim) {
    if (naxes < 0 || naxes > KN_MAX_DIMS || (naxes && !axes))
        return kn__errp(KN_EINVAL, "%s: invalid axes (count %d)", op->name, naxes);
    kn_attrs a = {0};
    int64_t ax[KN_MAX_DIMS];
    for (int i = 0; i < naxes; i++)
        ax[i] = axes[i];
    if (naxes) kn_attrs_set_ints(&a, "axes", ax, naxes);
    kn_attrs_set_int(&a, "keepdim", keepdim);
    return kn__op1(op, &x, 1, &a);
}
kn_tensor *kn_sum(kn_tensor *x, const int *axes, int naxes, bool keepdim) {
    return reduce_call(&op_sum, x, axes, naxes, keepdim);
}
kn_tensor *kn_mean(kn_tensor *x, const int *axes, int naxes, bool keepdim) {
    return reduce_call(&op_mean, x, axes, naxes, keepdim);
}

const kn_opdef *const kn__ops_reduce[] = {&op_sum, &op_mean, NULL};
