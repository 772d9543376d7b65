/*
 * index.c - the indexing and padding op family: gather, scatter_add, index_select, index_add
 * (internal), pad (constant / reflect) and its reflect backward (internal), repeat, tril, triu,
 * one_hot. PyTorch semantics (torch.gather, Tensor.scatter_add, torch.index_select,
 * F.pad, Tensor.repeat, torch.tril/triu, F.one_hot); ONNX names in each opdef.
 *
 * Not here: slicing, concat, split (shape.c), embedding (loss.c, built on index_add).
 *
 * Invariants:
 *  - Every index read from a tensor is bounds-checked before any output element is written;
 *    an out-of-range or negative index is KN_EINVAL naming the op, the index, the dim and its
 *    size. No kernel ever dereferences an unchecked index.
 *  - Kernels accept inputs of any strides (gather and scatter_add read x/src through their
 *    strides; the others make a contiguous temporary with kn__contig).
 *  - Accumulating kernels (scatter_add, index_add, pad_reflect_backward) give each output element
 *    to exactly one thread and add its contributions in index order, so results do not depend on
 *    the thread count.
 *  - Backward rules use ops only: gather <-> scatter_add and index_select <-> index_add are each
 *    other's gradient; constant pad's gradient is the opposite pad (a crop); reflect pad's is the
 *    internal pad_reflect_backward, whose own gradient is reflect pad again.
 */
#include <math.h>
#include <string.h>

#include "ops/op_impl.h"

/* Minimum element count before a loop goes parallel. */
#define PAR_MIN 32768
/* Column chunk of the accumulating kernels (fixed, so the partition is thread-count free). */
#define QCHUNK 256

#define BY_SIZE(es, ...)                                                                           \
    switch (es) {                                                                                  \
    case 1: {                                                                                      \
        typedef uint8_t E;                                                                         \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case 2: {                                                                                      \
        typedef uint16_t E;                                                                        \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case 4: {                                                                                      \
        typedef uint32_t E;                                                                        \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    default: {                                                                                     \
        typedef uint64_t E;                                                                        \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    }

#define BY_NUM(dt, ...)                                                                            \
    switch (dt) {                                                                                  \
    case KN_F32: {                                                                                 \
        typedef float T;                                                                           \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case KN_F64: {                                                                                 \
        typedef double T;                                                                          \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case KN_I8: {                                                                                  \
        typedef int8_t T;                                                                          \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case KN_U8: {                                                                                  \
        typedef uint8_t T;                                                                         \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case KN_I32: {                                                                                 \
        typedef int32_t T;                                                                         \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case KN_I64: {                                                                                 \
        typedef int64_t T;                                                                         \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    default: break;                                                                                \
    }

#define IDX_DT (KN_DT(KN_I32) | KN_DT(KN_I64))

static int64_t prod_range(const int64_t *s, int a, int b) {
    int64_t p = 1;
    for (int i = a; i < b; i++)
        p *= s[i];
    return p;
}

static const char *shp(char *buf, const kn_tensor *t) {
    return kn__shape_str(buf, 96, t->ndim, t->shape);
}

/* Index values as a contiguous int64 array. *owned gets a buffer to kn__free (or NULL). */
static const int64_t *idx_i64(kn_tensor *t, int64_t **owned) {
    *owned = NULL;
    if (t->dtype == KN_I64 && kn__is_contiguous(t)) return (const int64_t *)kn__ptr(t);
    int64_t n = kn__numel(t->ndim, t->shape);
    int64_t *b = kn__malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!b) return NULL;
    if (n > 0 && kn_tensor_read(t, KN_I64, b, (size_t)n * sizeof(int64_t)) != KN_OK) {
        kn__free(b);
        return NULL;
    }
    *owned = b;
    return b;
}

/* Every index in [0, size): else KN_EINVAL "<op>: index 7 out of range for dim 1 of size 5". */
static kn_status check_idx(const char *op, const int64_t *ix, int64_t n, int64_t size, int dim) {
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++)
        if ((uint64_t)ix[i] >= (uint64_t)size) {
            bad = i;
            break;
        }
    if (bad >= 0)
        return kn__err(KN_EINVAL, "%s: index %lld out of range for dim %d of size %lld", op,
                       (long long)ix[bad], dim, (long long)size);
    return KN_OK;
}

/* Offset (with strides st) of row r of `shape` over dims [0, nd-1), leaving out dim `skip`. */
static int64_t row_off(int64_t r, int nd, const int64_t *shape, const int64_t *st, int skip) {
    int64_t off = 0;
    for (int d = nd - 2; d >= 0; d--) {
        int64_t c = r % shape[d];
        r /= shape[d];
        if (d != skip) off += c * st[d];
    }
    return off;
}

/* ================================ gather ================================ */
/* out = x.gather(dim, index): out[..i..] = x[..index[..i..]..] along dim; out has index's shape.
 * x any dtype, any strides; index i64 (or i32), same rank, index.size(d) <= x.size(d), d != dim. */

static kn_status gather_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0], *ix = c->in[1];
    char a[96], b[96];
    if (!(IDX_DT & KN_DT(ix->dtype)))
        return kn__err(KN_EDTYPE, "gather: index must be int64 or int32, got %s",
                       kn_dtype_name(ix->dtype));
    if (x->ndim == 0) return kn__err(KN_ESHAPE, "gather: input must have at least one dimension");
    int dim = kn__axis("gather", (int)kn__attr_int(c->attrs, "dim", 0), x->ndim);
    if (dim < 0) return kn_last_status();
    if (ix->ndim != x->ndim)
        return kn__err(KN_ESHAPE, "gather: index %s and input %s must have the same rank",
                       shp(a, ix), shp(b, x));
    for (int d = 0; d < x->ndim; d++)
        if (d != dim && ix->shape[d] > x->shape[d])
            return kn__err(KN_ESHAPE,
                           "gather: index %s larger than input %s in dim %d (only dim %d may be)",
                           shp(a, ix), shp(b, x), d, dim);
    kn__out_like(c, 0, ix, x->dtype);
    return KN_OK;
}

static kn_status gather_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0], *out = c->out[0];
    int nd = x->ndim, dim = kn__axis("gather", (int)kn__attr_int(c->attrs, "dim", 0), nd);
    int64_t n = kn__numel(out->ndim, out->shape);
    if (n == 0) return KN_OK;
    int64_t *owned;
    const int64_t *ix = idx_i64(c->in[1], &owned);
    if (!ix) return kn_last_status();
    kn_status st = check_idx("gather", ix, n, x->shape[dim], dim);
    if (st != KN_OK) goto done;
    const int64_t *ishape = out->shape;
    int64_t L = ishape[nd - 1], rows = n / L, xsd = x->strides[dim], xsl = x->strides[nd - 1];
    size_t es = kn_dtype_size(x->dtype);
    const char *xp = kn__ptr(x);
    char *op = kn__ptr(out);
    bool last = dim == nd - 1;
#pragma omp parallel for num_threads(kn__threads()) if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = row_off(r, nd, ishape, x->strides, dim);
        const int64_t *ir = ix + r * L;
        BY_SIZE(es, {
            const E *xs = (const E *)xp + base;
            E *o = (E *)op + r * L;
            if (last)
                for (int64_t j = 0; j < L; j++)
                    o[j] = xs[ir[j] * xsd];
            else
                for (int64_t j = 0; j < L; j++)
                    o[j] = xs[ir[j] * xsd + j * xsl];
        })
    }
done:
    kn__free(owned);
    return st;
}

static const kn_opdef op_gather;
static const kn_opdef op_scatter_add;
static const kn_opdef op_index_add;
static const kn_opdef op_pad;
static const kn_opdef op_pad_reflect_bw;
static const kn_opdef op_tril;
static const kn_opdef op_triu;

static kn_tensor *call_dim(const kn_opdef *op, kn_tensor *const *in, int nin, int dim) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", dim);
    return kn__op1(op, in, nin, &a);
}

static kn_status gather_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    int dim = (int)kn__attr_int(c->attrs, "dim", 0);
    kn_tensor *z = kn_zeros(c->gout[0]->dtype, x->ndim, x->shape);
    kn_tensor *in[3] = {z, c->in[1], c->gout[0]};
    c->gin[0] = call_dim(&op_scatter_add, in, 3, dim);
    return c->gin[0] ? KN_OK : kn_last_status();
}

kn_tensor *kn_gather(kn_tensor *x, int dim, kn_tensor *index) {
    kn_tensor *in[2] = {x, index};
    return call_dim(&op_gather, in, 2, dim);
}

/* ============================== scatter_add ============================== */
/* out = x.clone(); out[..index[..i..]..] += src[..i..] along dim, for every i in index's shape.
 * index.size(d) <= src.size(d) for all d and <= x.size(d) for d != dim. */

static kn_status scatter_add_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0], *ix = c->in[1], *src = c->in[2];
    char a[96], b[96], s[96];
    if (!(IDX_DT & KN_DT(ix->dtype)))
        return kn__err(KN_EDTYPE, "scatter_add: index must be int64 or int32, got %s",
                       kn_dtype_name(ix->dtype));
    if (src->dtype != x->dtype)
        return kn__err(KN_EDTYPE, "scatter_add: src dtype %s differs from input dtype %s",
                       kn_dtype_name(src->dtype), kn_dtype_name(x->dtype));
    if (x->ndim == 0)
        return kn__err(KN_ESHAPE, "scatter_add: input must have at least one dimension");
    int dim = kn__axis("scatter_add", (int)kn__attr_int(c->attrs, "dim", 0), x->ndim);
    if (dim < 0) return kn_last_status();
    if (ix->ndim != x->ndim || src->ndim != x->ndim)
        return kn__err(KN_ESHAPE,
                       "scatter_add: input %s, index %s and src %s must have the same rank",
                       shp(a, x), shp(b, ix), shp(s, src));
    for (int d = 0; d < x->ndim; d++)
        if (ix->shape[d] > src->shape[d] || (d != dim && ix->shape[d] > x->shape[d]))
            return kn__err(KN_ESHAPE,
                           "scatter_add: index %s too large in dim %d for input %s / src %s",
                           shp(a, ix), d, shp(b, x), shp(s, src));
    kn__out_like(c, 0, x, x->dtype);
    return KN_OK;
}

static kn_status scatter_add_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0], *src = c->in[2], *out = c->out[0];
    int nd = x->ndim, dim = kn__axis("scatter_add", (int)kn__attr_int(c->attrs, "dim", 0), nd);
    size_t es = kn_dtype_size(x->dtype);
    int64_t nx = kn__numel(nd, x->shape);
    kn_tensor *xc = kn__contig(x);
    if (!xc) return kn_last_status();
    if (nx > 0) memcpy(kn__ptr(out), kn__ptr(xc), (size_t)nx * es);
    kn_tensor_free(xc);
    const kn_tensor *it = c->in[1];
    int64_t ni = kn__numel(nd, it->shape);
    if (ni == 0) return KN_OK;
    int64_t *owned;
    const int64_t *ix = idx_i64(c->in[1], &owned);
    if (!ix) return kn_last_status();
    kn_status st = check_idx("scatter_add", ix, ni, x->shape[dim], dim);
    if (st != KN_OK) goto done;
    const int64_t *ishape = it->shape;
    int64_t istr[KN_MAX_DIMS], ostr[KN_MAX_DIMS];
    kn__contiguous_strides(nd, ishape, istr);
    kn__contiguous_strides(nd, x->shape, ostr);
    int64_t L = ishape[nd - 1], K = dim == nd - 1 ? 1 : ishape[dim];
    int64_t groups = ni / L / K; /* rows with the dim coordinate removed (unless dim is last) */
    int64_t osd = ostr[dim], osl = ostr[nd - 1], ssd = src->strides[dim],
            ssl = src->strides[nd - 1];
    bool last = dim == nd - 1;
    char *op = kn__ptr(out);
    const char *sp = kn__ptr(src);
    /* shape used to decode a group index: index shape with dim (when not last) set to 1 */
    int64_t gshape[KN_MAX_DIMS];
    memcpy(gshape, ishape, sizeof(int64_t) * nd);
    if (!last) gshape[dim] = 1;
    kn_dtype dt = x->dtype;
    /* tasks: (group, column chunk); a chunk of the last dim only when dim is not last, since
     * then each output element is reached from one column only */
    int64_t njc = last ? 1 : (L + QCHUNK - 1) / QCHUNK, tasks = groups * njc;
#pragma omp parallel for num_threads(kn__threads()) if (ni > PAR_MIN) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t g = t / njc, j0 = last ? 0 : (t % njc) * QCHUNK;
        int64_t j1 = last ? L : (j0 + QCHUNK < L ? j0 + QCHUNK : L);
        int64_t ob = row_off(g, nd, gshape, ostr, dim);
        int64_t sb = row_off(g, nd, gshape, src->strides, dim);
        int64_t ib = row_off(g, nd, gshape, istr, -1);
        for (int64_t k = 0; k < K; k++) {
            const int64_t *ir = ix + ib + k * (last ? 0 : istr[dim]);
            BY_NUM(dt, {
                T *o = (T *)op + ob;
                const T *s = (const T *)sp + sb + k * (last ? 0 : ssd);
                if (last)
                    for (int64_t j = j0; j < j1; j++)
                        o[ir[j] * osd] += s[j * ssl];
                else
                    for (int64_t j = j0; j < j1; j++)
                        o[ir[j] * osd + j * osl] += s[j * ssl];
            })
        }
    }
done:
    kn__free(owned);
    return st;
}

/* Pads g with zeros at the high end of each dim up to `shape` (same rank). */
static kn_tensor *pad_high_to(kn_tensor *g, int nd, const int64_t *shape) {
    int64_t pads[2 * KN_MAX_DIMS] = {0};
    bool any = false;
    for (int d = 0; d < nd; d++) {
        pads[2 * (nd - 1 - d) + 1] = shape[d] - g->shape[d];
        any |= shape[d] != g->shape[d];
    }
    if (!any) return g;
    return kn_pad(g, pads, 2 * nd, KN_PAD_CONSTANT, 0.0);
}

static kn_status scatter_add_backward(kn_bwctx *c) {
    int dim = (int)kn__attr_int(c->attrs, "dim", 0);
    kn_tensor *g = c->gout[0];
    if (c->needs[0]) c->gin[0] = kn__sum_to(g, g->ndim, g->shape);
    if (c->needs[2]) {
        kn_tensor *in[2] = {g, c->in[1]};
        kn_tensor *gs = call_dim(&op_gather, in, 2, dim);
        if (gs) gs = pad_high_to(gs, c->in[2]->ndim, c->in[2]->shape);
        c->gin[2] = gs;
    }
    if ((c->needs[0] && !c->gin[0]) || (c->needs[2] && !c->gin[2])) return kn_last_status();
    return KN_OK;
}

kn_tensor *kn_scatter_add(kn_tensor *x, int dim, kn_tensor *index, kn_tensor *src) {
    kn_tensor *in[3] = {x, index, src};
    return call_dim(&op_scatter_add, in, 3, dim);
}

/* ============================ index_select ============================ */
/* out = x.index_select(dim, index): x (P, N, Q) viewed around dim, index (K) -> out (P, K, Q). */

static kn_status index_select_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0], *ix = c->in[1];
    char a[96];
    if (!(IDX_DT & KN_DT(ix->dtype)))
        return kn__err(KN_EDTYPE, "index_select: index must be int64 or int32, got %s",
                       kn_dtype_name(ix->dtype));
    if (ix->ndim > 1)
        return kn__err(KN_ESHAPE, "index_select: index must be 1-D, got shape %s", shp(a, ix));
    if (x->ndim == 0)
        return kn__err(KN_ESHAPE, "index_select: input must have at least one dimension");
    int dim = kn__axis("index_select", (int)kn__attr_int(c->attrs, "dim", 0), x->ndim);
    if (dim < 0) return kn_last_status();
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][dim] = ix->ndim ? ix->shape[0] : 1;
    return KN_OK;
}

static kn_status index_select_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0], *out = c->out[0];
    int nd = x->ndim, dim = kn__axis("index_select", (int)kn__attr_int(c->attrs, "dim", 0), nd);
    int64_t K = out->shape[dim];
    int64_t *owned;
    const int64_t *ix = idx_i64(c->in[1], &owned);
    if (!ix) return kn_last_status();
    kn_status st = check_idx("index_select", ix, K, x->shape[dim], dim);
    if (st != KN_OK) {
        kn__free(owned);
        return st;
    }
    int64_t P = prod_range(x->shape, 0, dim), N = x->shape[dim],
            Q = prod_range(x->shape, dim + 1, nd);
    if (P * K * Q == 0) {
        kn__free(owned);
        return KN_OK;
    }
    kn_tensor *xc = kn__contig(x);
    if (!xc) {
        kn__free(owned);
        return kn_last_status();
    }
    size_t es = kn_dtype_size(x->dtype);
    const char *xp = kn__ptr(xc);
    char *op = kn__ptr(out);
    int64_t total = P * K * Q;
    if (Q == 1) {
#pragma omp parallel for num_threads(kn__threads()) if (total > PAR_MIN) schedule(static)
        for (int64_t p = 0; p < P; p++) {
            BY_SIZE(es, {
                const E *xs = (const E *)xp + p * N;
                E *o = (E *)op + p * K;
                for (int64_t k = 0; k < K; k++)
                    o[k] = xs[ix[k]];
            })
        }
    } else {
#pragma omp parallel for num_threads(kn__threads()) if (total > PAR_MIN) schedule(static)
        for (int64_t r = 0; r < P * K; r++) {
            int64_t p = r / K, k = r % K;
            memcpy(op + (size_t)r * Q * es, xp + (size_t)(p * N + ix[k]) * Q * es, (size_t)Q * es);
        }
    }
    kn_tensor_free(xc);
    kn__free(owned);
    return KN_OK;
}

static kn_status index_select_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0];
    int dim = (int)kn__attr_int(c->attrs, "dim", 0);
    kn_tensor *z = kn_zeros(c->gout[0]->dtype, x->ndim, x->shape);
    kn_tensor *in[3] = {z, c->in[1], c->gout[0]};
    c->gin[0] = call_dim(&op_index_add, in, 3, dim);
    return c->gin[0] ? KN_OK : kn_last_status();
}

static const kn_opdef op_index_select;

kn_tensor *kn_index_select(kn_tensor *x, int dim, kn_tensor *index) {
    kn_tensor *in[2] = {x, index};
    return call_dim(&op_index_select, in, 2, dim);
}

/* ============================ index_add (internal) ============================ */
/* out = x.index_add(dim, index, src): x (P, N, Q), index (K), src (P, K, Q);
 * out[p, index[k], q] += src[p, k, q]. Embedding's and index_select's gradient. */

static kn_status index_add_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0], *ix = c->in[1], *src = c->in[2];
    char a[96], b[96], s[96];
    if (!(IDX_DT & KN_DT(ix->dtype)))
        return kn__err(KN_EDTYPE, "index_add: index must be int64 or int32, got %s",
                       kn_dtype_name(ix->dtype));
    if (src->dtype != x->dtype)
        return kn__err(KN_EDTYPE, "index_add: src dtype %s differs from input dtype %s",
                       kn_dtype_name(src->dtype), kn_dtype_name(x->dtype));
    if (ix->ndim > 1)
        return kn__err(KN_ESHAPE, "index_add: index must be 1-D, got shape %s", shp(a, ix));
    if (x->ndim == 0)
        return kn__err(KN_ESHAPE, "index_add: input must have at least one dimension");
    int dim = kn__axis("index_add", (int)kn__attr_int(c->attrs, "dim", 0), x->ndim);
    if (dim < 0) return kn_last_status();
    int64_t K = ix->ndim ? ix->shape[0] : 1;
    bool ok = src->ndim == x->ndim;
    for (int d = 0; ok && d < x->ndim; d++)
        ok = src->shape[d] == (d == dim ? K : x->shape[d]);
    if (!ok)
        return kn__err(KN_ESHAPE, "index_add: src %s does not fit input %s and index %s",
                       shp(s, src), shp(a, x), shp(b, ix));
    kn__out_like(c, 0, x, x->dtype);
    return KN_OK;
}

static kn_status index_add_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0], *out = c->out[0];
    int nd = x->ndim, dim = kn__axis("index_add", (int)kn__attr_int(c->attrs, "dim", 0), nd);
    size_t es = kn_dtype_size(x->dtype);
    int64_t P = prod_range(x->shape, 0, dim), N = x->shape[dim],
            Q = prod_range(x->shape, dim + 1, nd);
    int64_t K = c->in[2]->shape[dim];
    kn_tensor *xc = kn__contig(x);
    if (!xc) return kn_last_status();
    if (P * N * Q > 0) memcpy(kn__ptr(out), kn__ptr(xc), (size_t)(P * N * Q) * es);
    kn_tensor_free(xc);
    if (P * K * Q == 0) return KN_OK;
    int64_t *owned;
    const int64_t *ix = idx_i64(c->in[1], &owned);
    if (!ix) return kn_last_status();
    kn_status st = check_idx("index_add", ix, K, N, dim);
    kn_tensor *sc = st == KN_OK ? kn__contig(c->in[2]) : NULL;
    if (st != KN_OK || !sc) {
        kn__free(owned);
        return st != KN_OK ? st : kn_last_status();
    }
    const char *sp = kn__ptr(sc);
    char *op = kn__ptr(out);
    int64_t nqc = (Q + QCHUNK - 1) / QCHUNK, tasks = P * nqc;
    kn_dtype dt = x->dtype;
#pragma omp parallel for num_threads(kn__threads()) if (P * K * Q > PAR_MIN) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t p = t / nqc, q0 = (t % nqc) * QCHUNK, q1 = q0 + QCHUNK < Q ? q0 + QCHUNK : Q;
        BY_NUM(dt, {
            for (int64_t k = 0; k < K; k++) {
                T *o = (T *)op + (p * N + ix[k]) * Q;
                const T *s = (const T *)sp + (p * K + k) * Q;
                for (int64_t q = q0; q < q1; q++)
                    o[q] += s[q];
            }
        })
    }
    kn_tensor_free(sc);
    kn__free(owned);
    return KN_OK;
}

static kn_status index_add_backward(kn_bwctx *c) {
    int dim = (int)kn__attr_int(c->attrs, "dim", 0);
    kn_tensor *g = c->gout[0];
    if (c->needs[0]) c->gin[0] = kn__sum_to(g, g->ndim, g->shape);
    if (c->needs[2]) c->gin[2] = kn_index_select(g, dim, c->in[1]);
    if ((c->needs[0] && !c->gin[0]) || (c->needs[2] && !c->gin[2])) return kn_last_status();
    return KN_OK;
}

/* ================================= pad ================================= */
/* torch.nn.functional.pad: attr "pads" = {last_lo, last_hi, prev_lo, prev_hi, ...} (npads even,
 * <= 2*ndim), "mode" 0 constant / 1 reflect, "value" (constant). Constant pads may be negative
 * (crop). Reflect pads must be >= 0 and < the size of their dim. */

typedef struct {
    int nd;
    int64_t lo[KN_MAX_DIMS], hi[KN_MAX_DIMS];
} padspec;

static kn_status pad_spec(const char *op, const kn_attrs *attrs, int nd, padspec *ps) {
    int64_t p[KN_MAX_ATTR_INTS];
    int np = kn__attr_ints(attrs, "pads", p, KN_MAX_ATTR_INTS);
    if (np < 0) np = 0;
    if (np % 2 != 0) return kn__err(KN_EINVAL, "%s: padding length %d must be even", op, np);
    if (np / 2 > nd)
        return kn__err(KN_EINVAL, "%s: padding length %d too large for a %d-D input", op, np, nd);
    ps->nd = nd;
    for (int d = 0; d < nd; d++)
        ps->lo[d] = ps->hi[d] = 0;
    for (int i = 0; i < np / 2; i++) {
        ps->lo[nd - 1 - i] = p[2 * i];
        ps->hi[nd - 1 - i] = p[2 * i + 1];
    }
    return KN_OK;
}

static inline int64_t reflect_i(int64_t i, int64_t n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
}

static kn_status pad_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    padspec ps;
    char a[96];
    kn_status st = pad_spec("pad", c->attrs, x->ndim, &ps);
    if (st != KN_OK) return st;
    int mode = (int)kn__attr_int(c->attrs, "mode", KN_PAD_CONSTANT);
    if (mode != KN_PAD_CONSTANT && mode != KN_PAD_REFLECT)
        return kn__err(KN_EINVAL, "pad: unknown mode %d (0 constant, 1 reflect)", mode);
    kn__out_like(c, 0, x, x->dtype);
    for (int d = 0; d < x->ndim; d++) {
        if (mode == KN_PAD_REFLECT) {
            if (ps.lo[d] < 0 || ps.hi[d] < 0)
                return kn__err(KN_EINVAL, "pad: reflect padding (%lld, %lld) of dim %d is negative",
                               (long long)ps.lo[d], (long long)ps.hi[d], d);
            if ((ps.lo[d] || ps.hi[d]) && (ps.lo[d] >= x->shape[d] || ps.hi[d] >= x->shape[d]))
                return kn__err(KN_EINVAL,
                               "pad: reflect padding (%lld, %lld) of dim %d must be less than its "
                               "size in input %s",
                               (long long)ps.lo[d], (long long)ps.hi[d], d, shp(a, x));
        }
        int64_t s;
        if (__builtin_add_overflow(x->shape[d], ps.lo[d], &s) ||
            __builtin_add_overflow(s, ps.hi[d], &s) || s < 0)
            return kn__err(KN_ESHAPE,
                           "pad: padding (%lld, %lld) gives dim %d of input %s a "
                           "negative or overflowing size",
                           (long long)ps.lo[d], (long long)ps.hi[d], d, shp(a, x));
        c->out_shape[0][d] = s;
    }
    return kn__check_shape("pad", x->ndim, c->out_shape[0], x->dtype);
}

static kn_status pad_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0], *out = c->out[0];
    padspec ps;
    pad_spec("pad", c->attrs, x->ndim, &ps);
    int mode = (int)kn__attr_int(c->attrs, "mode", KN_PAD_CONSTANT);
    int nd = x->ndim;
    size_t es = kn_dtype_size(x->dtype);
    int64_t n = kn__numel(nd, out->shape);
    if (n == 0) return KN_OK;
    uint64_t vbuf = 0;
    kn__store_f64(x->dtype, &vbuf, kn__attr_float(c->attrs, "value", 0.0));
    kn_tensor *xc = kn__contig(x);
    if (!xc) return kn_last_status();
    const char *xp = kn__ptr(xc);
    char *op = kn__ptr(out);
    if (nd == 0) {
        memcpy(op, xp, es);
        kn_tensor_free(xc);
        return KN_OK;
    }
    int64_t xs[KN_MAX_DIMS];
    kn__contiguous_strides(nd, x->shape, xs);
    const int64_t *os = out->shape;
    int64_t OL = os[nd - 1], XL = x->shape[nd - 1], lo = ps.lo[nd - 1], rows = n / OL;
    bool refl = mode == KN_PAD_REFLECT, empty_src = kn__numel(nd, x->shape) == 0;
    /* last-dim segments for constant mode: [0,a) fill, [a,a+cnt) copy from src a-lo, rest fill */
    int64_t a = lo > 0 ? lo : 0, cnt = (XL + lo < OL ? XL + lo : OL) - a;
    if (cnt < 0 || empty_src) cnt = 0;
    if (a > OL) a = OL;
#pragma omp parallel for num_threads(kn__threads()) if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rr = r, off = 0;
        bool valid = !empty_src;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t o = rr % os[d];
            rr /= os[d];
            int64_t i = o - ps.lo[d];
            if (refl)
                i = reflect_i(i, x->shape[d]);
            else if (i < 0 || i >= x->shape[d])
                valid = false;
            off += i * xs[d];
        }
        BY_SIZE(es, {
            E *o = (E *)op + r * OL;
            E v;
            memcpy(&v, &vbuf, sizeof(E));
            const E *s = (const E *)xp + off;
            if (!valid) {
                for (int64_t j = 0; j < OL; j++)
                    o[j] = v;
            } else if (refl) {
                for (int64_t j = 0; j < lo; j++)
                    o[j] = s[reflect_i(j - lo, XL)];
                memcpy(o + lo, s, (size_t)XL * sizeof(E));
                for (int64_t j = lo + XL; j < OL; j++)
                    o[j] = s[reflect_i(j - lo, XL)];
            } else {
                for (int64_t j = 0; j < a; j++)
                    o[j] = v;
                if (cnt > 0) memcpy(o + a, s + (a - lo), (size_t)cnt * sizeof(E));
                for (int64_t j = a + cnt; j < OL; j++)
                    o[j] = v;
            }
        })
    }
    kn_tensor_free(xc);
    return KN_OK;
}

static void pads_attr(kn_attrs *a, const int64_t *pads, int npads, bool negate) {
    int64_t p[KN_MAX_ATTR_INTS];
    for (int i = 0; i < npads && i < KN_MAX_ATTR_INTS; i++)
        p[i] = negate ? -pads[i] : pads[i];
    kn_attrs_set_ints(a, "pads", p, npads < KN_MAX_ATTR_INTS ? npads : KN_MAX_ATTR_INTS);
}

static kn_status pad_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    int64_t p[KN_MAX_ATTR_INTS];
    int np = kn__attr_ints(c->attrs, "pads", p, KN_MAX_ATTR_INTS);
    if (np < 0) np = 0;
    int mode = (int)kn__attr_int(c->attrs, "mode", KN_PAD_CONSTANT);
    kn_attrs a = {0};
    if (mode == KN_PAD_CONSTANT) {
        /* the gradient of a pad is the opposite pad (a crop; a crop's is a zero pad) */
        pads_attr(&a, p, np, true);
        kn_attrs_set_int(&a, "mode", KN_PAD_CONSTANT);
        c->gin[0] = kn__op1(&op_pad, &c->gout[0], 1, &a);
    } else {
        pads_attr(&a, p, np, false);
        c->gin[0] = kn__op1(&op_pad_reflect_bw, &c->gout[0], 1, &a);
    }
    return c->gin[0] ? KN_OK : kn_last_status();
}

kn_tensor *kn_pad(kn_tensor *x, const int64_t *pads, int npads, kn_pad_mode mode, double value) {
    if (npads < 0 || npads > KN_MAX_ATTR_INTS || (npads > 0 && !pads))
        return kn__errp(KN_EINVAL, "pad: %d pads (expected an even count <= %d)", npads,
                        KN_MAX_ATTR_INTS);
    kn_attrs a = {0};
    pads_attr(&a, pads, npads, false);
    kn_attrs_set_int(&a, "mode", (int64_t)mode);
    if (value != 0.0) kn_attrs_set_float(&a, "value", value);
    return kn__op1(&op_pad, &x, 1, &a);
}

/* ======================= pad_reflect_backward (internal) ======================= */
/* g (padded shape) -> gin (input shape): gin[i] = sum of g[o] over every o with reflect(o) = i.
 * Each input row is owned by one thread, which adds the output rows mapping to it in a fixed
 * order. Its own gradient is reflect pad. */

static kn_status pad_rbw_infer(kn_opctx *c) {
    kn_tensor *g = c->in[0];
    padspec ps;
    char a[96];
    kn_status st = pad_spec("pad_reflect_backward", c->attrs, g->ndim, &ps);
    if (st != KN_OK) return st;
    kn__out_like(c, 0, g, g->dtype);
    for (int d = 0; d < g->ndim; d++) {
        int64_t s = g->shape[d] - ps.lo[d] - ps.hi[d];
        if (ps.lo[d] < 0 || ps.hi[d] < 0 || s < 1 ||
            ((ps.lo[d] || ps.hi[d]) && (ps.lo[d] >= s || ps.hi[d] >= s)))
            return kn__err(KN_ESHAPE, "pad_reflect_backward: pads do not fit gradient %s",
                           shp(a, g));
        c->out_shape[0][d] = s;
    }
    return KN_OK;
}

static kn_status pad_rbw_forward(kn_opctx *c) {
    kn_tensor *out = c->out[0];
    padspec ps;
    int nd = c->in[0]->ndim;
    pad_spec("pad_reflect_backward", c->attrs, nd, &ps);
    kn_tensor *g = kn__contig(c->in[0]);
    if (!g) return kn_last_status();
    int64_t n = kn__numel(nd, out->shape);
    if (nd == 0 || n == 0) {
        if (n > 0) memcpy(kn__ptr(out), kn__ptr(g), kn_dtype_size(g->dtype));
        kn_tensor_free(g);
        return KN_OK;
    }
    const int64_t *is = out->shape, *os = g->shape;
    int64_t gst[KN_MAX_DIMS];
    kn__contiguous_strides(nd, os, gst);
    int64_t IL = is[nd - 1], OL = os[nd - 1], lo = ps.lo[nd - 1], rows = n / IL;
    kn_dtype dt = g->dtype;
    const char *gp = kn__ptr(g);
    char *op = kn__ptr(out);
#pragma omp parallel for num_threads(kn__threads()) if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        /* output-row candidates per outer dim: up to 3 padded coordinates map to coordinate i */
        int64_t cand[KN_MAX_DIMS][3];
        int nc[KN_MAX_DIMS], at[KN_MAX_DIMS];
        int64_t rr = r;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rr % is[d], sz = is[d], l = ps.lo[d];
            rr /= is[d];
            nc[d] = 0;
            at[d] = 0;
            cand[d][nc[d]++] = i + l;
            if (i >= 1 && i <= l) cand[d][nc[d]++] = l - i;
            int64_t o3 = l + 2 * (sz - 1) - i;
            if (i < sz - 1 && o3 < os[d] && o3 >= l + sz) cand[d][nc[d]++] = o3;
        }
        BY_NUM(dt, {
            T *dst = (T *)op + r * IL;
            for (int64_t j = 0; j < IL; j++)
                dst[j] = 0;
            for (;;) {
                int64_t goff = 0;
                for (int d = 0; d < nd - 1; d++)
                    goff += cand[d][at[d]] * gst[d];
                const T *src = (const T *)gp + goff;
                for (int64_t o = 0; o < OL; o++)
                    dst[reflect_i(o - lo, IL)] += src[o];
                int d = nd - 2;
                while (d >= 0 && ++at[d] == nc[d])
                    at[d--] = 0;
                if (d < 0) break;
            }
        })
    }
    kn_tensor_free(g);
    return KN_OK;
}

static kn_status pad_rbw_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    int64_t p[KN_MAX_ATTR_INTS];
    int np = kn__attr_ints(c->attrs, "pads", p, KN_MAX_ATTR_INTS);
    c->gin[0] = kn_pad(c->gout[0], p, np < 0 ? 0 : np, KN_PAD_REFLECT, 0.0);
    return c->gin[0] ? KN_OK : kn_last_status();
}

/* ================================ repeat ================================ */
/* Tensor.repeat: attr "repeats" (n >= ndim values); x is read as shape (1,..,1, *x.shape)
 * and out[i] = x[i % xshape] in every dim. */

static int repeat_shape(const kn_opctx *c, int64_t *rep, int64_t *xs) {
    int n = kn__attr_ints(c->attrs, "repeats", rep, KN_MAX_ATTR_INTS);
    kn_tensor *x = c->in[0];
    if (n < x->ndim || n > KN_MAX_DIMS) return -1;
    int lead = n - x->ndim;
    for (int d = 0; d < n; d++)
        xs[d] = d < lead ? 1 : x->shape[d - lead];
    return n;
}

static kn_status repeat_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    int64_t rep[KN_MAX_ATTR_INTS], xs[KN_MAX_DIMS];
    int n = kn__attr_ints(c->attrs, "repeats", rep, KN_MAX_ATTR_INTS);
    if (n < x->ndim || n > KN_MAX_DIMS)
        return kn__err(KN_EINVAL,
                       "repeat: %d repeat counts for a %d-D input (need between %d and %d)",
                       n < 0 ? 0 : n, x->ndim, x->ndim, KN_MAX_DIMS);
    repeat_shape(c, rep, xs);
    for (int d = 0; d < n; d++) {
        if (rep[d] < 0)
            return kn__err(KN_EINVAL, "repeat: repeat count %lld for dim %d is negative",
                           (long long)rep[d], d);
        if (__builtin_mul_overflow(rep[d], xs[d], &c->out_shape[0][d]))
            return kn__err(KN_ELIMIT, "repeat: dim %d overflows", d);
    }
    c->out_ndim[0] = n;
    c->out_dtype[0] = x->dtype;
    return kn__check_shape("repeat", n, c->out_shape[0], x->dtype);
}

static kn_status repeat_forward(kn_opctx *c) {
    kn_tensor *out = c->out[0];
    int64_t rep[KN_MAX_ATTR_INTS], xs[KN_MAX_DIMS], st[KN_MAX_DIMS];
    int n = repeat_shape(c, rep, xs);
    int64_t total = kn__numel(n, out->shape);
    if (total == 0) return KN_OK;
    kn_tensor *xc = kn__contig(c->in[0]);
    if (!xc) return kn_last_status();
    size_t es = kn_dtype_size(xc->dtype);
    const char *xp = kn__ptr(xc);
    char *op = kn__ptr(out);
    if (n == 0) {
        memcpy(op, xp, es);
        kn_tensor_free(xc);
        return KN_OK;
    }
    kn__contiguous_strides(n, xs, st);
    const int64_t *os = out->shape;
    int64_t OL = os[n - 1], XL = xs[n - 1], rows = total / OL;
#pragma omp parallel for num_threads(kn__threads()) if (total > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rr = r, off = 0;
        for (int d = n - 2; d >= 0; d--) {
            off += (rr % os[d]) % xs[d] * st[d];
            rr /= os[d];
        }
        char *o = op + (size_t)(r * OL) * es;
        for (int64_t k = 0; k < rep[n - 1]; k++)
            memcpy(o + (size_t)(k * XL) * es, xp + (size_t)off * es, (size_t)XL * es);
    }
    kn_tensor_free(xc);
    return KN_OK;
}

static kn_status repeat_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_tensor *x = c->in[0], *g = c->gout[0];
    int64_t rep[KN_MAX_ATTR_INTS];
    int n = kn__attr_ints(c->attrs, "repeats", rep, KN_MAX_ATTR_INTS), lead = n - x->ndim;
    int64_t cur[KN_MAX_DIMS];
    memcpy(cur, g->shape, sizeof(int64_t) * n);
    /* fold one repeated dim at a time: (pre, r, s * post) summed over r -> (pre, s * post) */
    for (int d = 0; d < n && g; d++) {
        if (rep[d] == 1) continue;
        int64_t s = d < lead ? 1 : x->shape[d - lead];
        int64_t shape3[3] = {prod_range(cur, 0, d), rep[d], s * prod_range(cur, d + 1, n)};
        int ax = 1;
        kn_tensor *t = kn_reshape(g, 3, shape3);
        t = kn_sum(t, &ax, 1, false);
        cur[d] = s;
        g = kn_reshape(t, n, cur);
    }
    if (g) g = kn_reshape(g, x->ndim, x->shape);
    c->gin[0] = g;
    return g ? KN_OK : kn_last_status();
}

static const kn_opdef op_repeat;

kn_tensor *kn_repeat(kn_tensor *x, int n, const int64_t *repeats) {
    if (n < 0 || n > KN_MAX_DIMS || (n > 0 && !repeats))
        return kn__errp(KN_EINVAL, "repeat: %d repeat counts (need 0..%d)", n, KN_MAX_DIMS);
    kn_attrs a = {0};
    kn_attrs_set_ints(&a, "repeats", repeats, n);
    return kn__op1(&op_repeat, &x, 1, &a);
}

/* ============================== tril / triu ============================== */
/* Keeps out[..., i, j] where j - i <= k (tril) or j - i >= k (triu), zero elsewhere. attr "k". */

static kn_status tri_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    char a[96];
    if (x->ndim < 2)
        return kn__err(KN_ESHAPE, "%s: input must have at least 2 dims, got %s", c->op->name,
                       shp(a, x));
    kn__out_like(c, 0, x, x->dtype);
    return KN_OK;
}

static kn_status tri_forward(kn_opctx *c) {
    kn_tensor *out = c->out[0];
    bool upper = c->op == &op_triu;
    int64_t k = kn__attr_int(c->attrs, "k", 0);
    int nd = out->ndim;
    int64_t R = out->shape[nd - 2], C = out->shape[nd - 1], total = kn__numel(nd, out->shape);
    if (total == 0) return KN_OK;
    kn_tensor *xc = kn__contig(c->in[0]);
    if (!xc) return kn_last_status();
    size_t es = kn_dtype_size(xc->dtype);
    const char *xp = kn__ptr(xc);
    char *op = kn__ptr(out);
    int64_t rows = total / C;
    /* beyond [-R-1, C+1] the diagonal offset changes nothing: clamp it so i + k cannot overflow */
    int64_t kc = k < -R - 1 ? -R - 1 : k > C + 1 ? C + 1 : k;
#pragma omp parallel for num_threads(kn__threads()) if (total > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = r % R;
        /* kept columns: tril [0, i+k], triu [i+k, C) */
        int64_t b = i + kc, j0, j1;
        if (upper) {
            j0 = b < 0 ? 0 : (b > C ? C : b);
            j1 = C;
        } else {
            j0 = 0;
            j1 = b + 1 < 0 ? 0 : (b + 1 > C ? C : b + 1);
        }
        char *o = op + (size_t)(r * C) * es;
        const char *s = xp + (size_t)(r * C) * es;
        memset(o, 0, (size_t)j0 * es);
        memcpy(o + (size_t)j0 * es, s + (size_t)j0 * es, (size_t)(j1 - j0) * es);
        memset(o + (size_t)j1 * es, 0, (size_t)(C - j1) * es);
    }
    kn_tensor_free(xc);
    return KN_OK;
}

static kn_status tri_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "k", kn__attr_int(c->attrs, "k", 0));
    c->gin[0] = kn__op1(c->op, &c->gout[0], 1, &a);
    return c->gin[0] ? KN_OK : kn_last_status();
}

kn_tensor *kn_tril(kn_tensor *x, int64_t k) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "k", k);
    return kn__op1(&op_tril, &x, 1, &a);
}

kn_tensor *kn_triu(kn_tensor *x, int64_t k) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "k", k);
    return kn__op1(&op_triu, &x, 1, &a);
}

/* ================================ one_hot ================================ */
/* F.one_hot: indices (any shape, int) -> i64 (*, num_classes); attr "num_classes", -1 = max+1. */

static kn_status one_hot_infer(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    char a[96];
    if (!(KN_DT_INT & KN_DT(x->dtype)))
        return kn__err(KN_EDTYPE, "one_hot: indices must be an integer dtype, got %s",
                       kn_dtype_name(x->dtype));
    if (x->ndim >= KN_MAX_DIMS)
        return kn__err(KN_ELIMIT, "one_hot: input %s already has %d dims", shp(a, x), KN_MAX_DIMS);
    int64_t C = kn__attr_int(c->attrs, "num_classes", -1);
    int64_t n = kn__numel(x->ndim, x->shape);
    if (C < -1)
        return kn__err(KN_EINVAL, "one_hot: num_classes %lld must be -1 or >= 0", (long long)C);
    if (C == -1) {
        if (n == 0)
            return kn__err(KN_EINVAL, "one_hot: cannot infer num_classes from an empty tensor");
        int64_t *owned;
        const int64_t *v = idx_i64(x, &owned);
        if (!v) return kn_last_status();
        int64_t m = v[0];
        for (int64_t i = 1; i < n; i++)
            m = v[i] > m ? v[i] : m;
        kn__free(owned);
        if (m < 0) return kn__err(KN_EINVAL, "one_hot: class values must be non-negative");
        C = m + 1;
    }
    kn__out_like(c, 0, x, KN_I64);
    c->out_ndim[0] = x->ndim + 1;
    c->out_shape[0][x->ndim] = C;
    return kn__check_shape("one_hot", x->ndim + 1, c->out_shape[0], KN_I64);
}

static kn_status one_hot_forward(kn_opctx *c) {
    kn_tensor *out = c->out[0];
    int64_t n = kn__numel(c->in[0]->ndim, c->in[0]->shape), C = out->shape[out->ndim - 1];
    int64_t *owned;
    const int64_t *v = idx_i64(c->in[0], &owned);
    if (!v) return kn_last_status();
    kn_status st = KN_OK;
    for (int64_t i = 0; i < n; i++) {
        if (v[i] < 0) {
            st = kn__err(KN_EINVAL, "one_hot: class values must be non-negative, got %lld",
                         (long long)v[i]);
            break;
        }
        if (v[i] >= C) {
            st = kn__err(KN_EINVAL, "one_hot: class %lld out of range for num_classes %lld",
                         (long long)v[i], (long long)C);
            break;
        }
    }
    if (st == KN_OK) {
        int64_t *o = (int64_t *)kn__ptr(out);
        if (n * C > 0) memset(o, 0, (size_t)(n * C) * sizeof(int64_t));
        for (int64_t i = 0; i < n; i++)
            o[i * C + v[i]] = 1;
    }
    kn__free(owned);
    return st;
}

static const kn_opdef op_one_hot;

kn_tensor *kn_one_hot(kn_tensor *indices, int64_t num_classes) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "num_classes", num_classes);
    return kn__op1(&op_one_hot, &indices, 1, &a);
}

/* ================================ table ================================ */

static const kn_opdef op_gather = {.name = "gather",
                                   .min_in = 2,
                                   .max_in = 2,
                                   .nout = 1,
                                   .dtypes = KN_DT_ALL,
                                   .infer = gather_infer,
                                   .forward = gather_forward,
                                   .backward = gather_backward,
                                   .onnx = "GatherElements",
                                   .doc = "x.gather(dim, index); attr dim"};
static const kn_opdef op_scatter_add = {.name = "scatter_add",
                                        .min_in = 3,
                                        .max_in = 3,
                                        .nout = 1,
                                        .dtypes = KN_DT_NUM,
                                        .infer = scatter_add_infer,
                                        .forward = scatter_add_forward,
                                        .backward = scatter_add_backward,
                                        .onnx = "ScatterElements",
                                        .doc = "x.scatter_add(dim, index, src); attr dim"};
static const kn_opdef op_index_select = {.name = "index_select",
                                         .min_in = 2,
                                         .max_in = 2,
                                         .nout = 1,
                                         .dtypes = KN_DT_ALL,
                                         .infer = index_select_infer,
                                         .forward = index_select_forward,
                                         .backward = index_select_backward,
                                         .onnx = "Gather",
                                         .doc = "x.index_select(dim, index 1-D); attr dim"};
static const kn_opdef op_index_add = {
    .name = "index_add",
    .min_in = 3,
    .max_in = 3,
    .nout = 1,
    .dtypes = KN_DT_NUM,
    .flags = KN_OPF_INTERNAL,
    .infer = index_add_infer,
    .forward = index_add_forward,
    .backward = index_add_backward,
    .onnx = NULL,
    .doc = "x.index_add(dim, index 1-D, src); attr dim (index_select/embedding gradient)"};
static const kn_opdef op_pad = {
    .name = "pad",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_ALL,
    .infer = pad_infer,
    .forward = pad_forward,
    .backward = pad_backward,
    .onnx = "Pad",
    .doc = "F.pad constant/reflect; attrs pads (torch order), mode 0/1, value"};
static const kn_opdef op_pad_reflect_bw = {
    .name = "pad_reflect_backward",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_NUM,
    .flags = KN_OPF_INTERNAL,
    .infer = pad_rbw_infer,
    .forward = pad_rbw_forward,
    .backward = pad_rbw_backward,
    .onnx = NULL,
    .doc = "gradient of reflect pad: folds the padded borders back; attr pads"};
static const kn_opdef op_repeat = {.name = "repeat",
                                   .min_in = 1,
                                   .max_in = 1,
                                   .nout = 1,
                                   .dtypes = KN_DT_ALL,
                                   .infer = repeat_infer,
                                   .forward = repeat_forward,
                                   .backward = repeat_backward,
                                   .onnx = "Tile",
                                   .doc = "Tensor.repeat; attr repeats"};
static const kn_opdef op_tril = {.name = "tril",
                                 .min_in = 1,
                                 .max_in = 1,
                                 .nout = 1,
                                 .dtypes = KN_DT_ALL,
                                 .infer = tri_infer,
                                 .forward = tri_forward,
                                 .backward = tri_backward,
                                 .onnx = "Trilu",
                                 .doc = "lower triangle of the last two dims; attr k"};
static const kn_opdef op_triu = {.name = "triu",
                                 .min_in = 1,
                                 .max_in = 1,
                                 .nout = 1,
                                 .dtypes = KN_DT_ALL,
                                 .infer = tri_infer,
                                 .forward = tri_forward,
                                 .backward = tri_backward,
                                 .onnx = "Trilu",
                                 .doc = "upper triangle of the last two dims; attr k"};
static const kn_opdef op_one_hot = {.name = "one_hot",
                                    .min_in = 1,
                                    .max_in = 1,
                                    .nout = 1,
                                    .dtypes = KN_DT_INT,
                                    .infer = one_hot_infer,
                                    .forward = one_hot_forward,
                                    .backward = NULL,
                                    .onnx = "OneHot",
                                    .doc = "F.one_hot -> int64; attr num_classes (-1: max + 1)"};

const kn_opdef *const kn__ops_index[] = {
    &op_gather, &op_scatter_add, &op_index_select, &op_index_add, &op_pad, &op_pad_reflect_bw,
    &op_repeat, &op_tril,        &op_triu,         &op_one_hot,   NULL};
