/*
 * shape.c - view and layout ops: reshape (a view when strides allow, else a copy), flatten,
 * transpose, permute, squeeze, unsqueeze, expand, slice, and the joins concat/stack and splits
 * split/chunk (composed from slice). Views share storage with their input; their backward rules
 * are views or reshapes of the gradient, except slice, whose backward is the internal op
 * "slice_backward" (scatter the gradient into zeros).
 */
#include "ops/op_impl.h"

/* ---- reshape ---- */
/* Strides for viewing t as (ndim, shape) without a copy, or false when impossible
 * (the algorithm of PyTorch's computeStride: match chunks of contiguous dims). */
bool kn__view_strides(const kn_tensor *t, int ndim, const int64_t *shape, int64_t *out) {
    int64_t numel = kn__numel(t->ndim, t->shape);
    if (numel == 0 || t->ndim == 0) {
        kn__contiguous_strides(ndim, shape, out);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->strides[t->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->shape[d];
        if (d == 0 ||
            (t->shape[d - 1] != 1 && t->strides[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                out[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (d > 0) {
                chunk_base_stride = t->strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

static kn_status reshape_infer(kn_opctx *c) {
    const kn_tensor *x = c->in[0];
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__attr_ints(c->attrs, "shape", shape, KN_MAX_DIMS);
    if (nd < 0 || nd > KN_MAX_DIMS)
        return kn__err(KN_EINVAL, "reshape: missing or too long 'shape' (max %d dims)",
                       KN_MAX_DIMS);
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < nd; i++) {
        if (shape[i] == -1) {
            if (infer >= 0) return kn__err(KN_EINVAL, "reshape: only one dimension can be -1");
            infer = i;
        } else if (shape[i] < 0) {
            return kn__err(KN_EINVAL, "reshape: invalid size %lld", (long long)shape[i]);
        } else if (__builtin_mul_overflow(known, shape[i], &known)) {
            return kn__err(KN_ELIMIT, "reshape: the target shape has too many elements");
        }
    }
    int64_t numel = kn__numel(x->ndim, x->shape);
    char a[128], b[128];
    if (infer >= 0) {
        if (known == 0 || numel % known)
            return kn__err(KN_ESHAPE, "reshape: shape %s is invalid for input of size %lld",
                           kn__shape_str(a, sizeof a, nd, shape), (long long)numel);
        shape[infer] = numel / known;
    } else if (known != numel) {
        return kn__err(KN_ESHAPE, "reshape: shape %s is invalid for input %s of size %lld",
                       kn__shape_str(a, sizeof a, nd, shape),
                       kn__shape_str(b, sizeof b, x->ndim, x->shape), (long long)numel);
    }
    c->out_dtype[0] = x->dtype;
    c->out_ndim[0] = nd;
    memcpy(c->out_shape[0], shape, sizeof(int64_t) * KN_MAX_DIMS);
    return KN_OK;
}
static kn_status reshape_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    int64_t st[KN_MAX_DIMS];
    if (kn__view_strides(x, c->out_ndim[0], c->out_shape[0], st)) {
        c->out[0] = kn__tensor_view(x, c->out_ndim[0], c->out_shape[0], st, x->offset);
    } else {
        c->out[0] = kn__tensor_alloc(x->dtype, c->out_ndim[0], c->out_shape[0]);
        if (c->out[0]) {
            kn_tensor *tmp = kn__contig(x);
            if (!tmp) return kn_last_status();
            memcpy(kn__ptr(c->out[0]), kn__ptr(tmp),
                   (size_t)kn__numel(x->ndim, x->shape) * kn_dtype_size(x->dtype));
            kn_tensor_free(tmp);
        }
    }
    return c->out[0] ? KN_OK : kn_last_status();
}
static kn_status to_input_shape(kn_bwctx *c) {
    if (c->needs[0]) {
        c->gin[0] = kn_reshape(c->gout[0], c->in[0]->ndim, c->in[0]->shape);
        if (!c->gin[0]) return kn_last_status();
    }
    return KN_OK;
}
static const kn_opdef op_reshape = {
    .name = "reshape",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_ALL,
    .flags = KN_OPF_VIEW,
    .infer = reshape_infer,
    .forward = reshape_forward,
    .backward = to_input_shape,
    .onnx = "Reshape",
    .doc = "new shape, one -1 inferred; a view when strides allow; attr shape"};

kn_tensor *kn_reshape(kn_tensor *t, int ndim, const int64_t *shape) {
    kn_attrs a = {0};
    if (ndim < 0 || ndim > KN_MAX_DIMS || (ndim && !shape))
        return kn__errp(KN_EINVAL, "reshape: invalid target rank %d", ndim);
    kn_attrs_set_ints(&a, "shape", shape, ndim);
    return kn__op1(&op_reshape, &t, 1, &a);
}

kn_tensor *kn_flatten(kn_tensor *t, int start_dim, int end_dim) {
    if (!t) return NULL;
    if (t->ndim == 0) return kn_reshape(t, 1, (int64_t[]){1});
    int s = kn__axis("flatten", start_dim, t->ndim), e = kn__axis("flatten", end_dim, t->ndim);
    if (s < 0 || e < 0) return NULL;
    if (s > e)
        return kn__errp(KN_EINVAL, "flatten: start_dim %d after end_dim %d", start_dim, end_dim);
    int64_t shape[KN_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < s; i++)
        shape[nd++] = t->shape[i];
    int64_t m = 1;
    for (int i = s; i <= e; i++)
        m *= t->shape[i];
    shape[nd++] = m;
    for (int i = e + 1; i < t->ndim; i++)
        shape[nd++] = t->shape[i];
    return kn_reshape(t, nd, shape);
}

/* ---- permute / transpose ---- */
static kn_status get_perm(const kn_opctx *c, int *perm) {
    int64_t p[KN_MAX_DIMS];
    int nd = c->in[0]->ndim;
    int n = kn__attr_ints(c->attrs, "dims", p, KN_MAX_DIMS);
    if (n != nd)
        return kn__err(KN_EINVAL, "permute: %d dims given for a %d-d tensor", n < 0 ? 0 : n, nd);
    bool seen[KN_MAX_DIMS] = {0};
    for (int i = 0; i < nd; i++) {
        int64_t d = p[i] < 0 ? p[i] + nd : p[i];
        if (d < 0 || d >= nd || seen[d])
            return kn__err(KN_EINVAL, "permute: dims are not a permutation of 0..%d", nd - 1);
        seen[d] = true;
        perm[i] = (int)d;
    }
    return KN_OK;
}
static kn_status permute_infer(kn_opctx *c) {
    int perm[KN_MAX_DIMS];
    kn_status st = get_perm(c, perm);
    if (st) return st;
    c->out_dtype[0] = c->in[0]->dtype;
    c->out_ndim[0] = c->in[0]->ndim;
    for (int i = 0; i < c->in[0]->ndim; i++)
        c->out_shape[0][i] = c->in[0]->shape[perm[i]];
    return KN_OK;
}
static kn_status permute_forward(kn_opctx *c) {
    int perm[KN_MAX_DIMS];
    get_perm(c, perm);
    kn_tensor *x = c->in[0];
    int64_t st[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        st[i] = x->strides[perm[i]];
    c->out[0] = kn__tensor_view(x, x->ndim, c->out_shape[0], st, x->offset);
    return c->out[0] ? KN_OK : kn_last_status();
}
static kn_status permute_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    int64_t p[KN_MAX_DIMS];
    int nd = c->in[0]->ndim, inv[KN_MAX_DIMS];
    kn__attr_ints(c->attrs, "dims", p, KN_MAX_DIMS);
    for (int i = 0; i < nd; i++)
        inv[p[i] < 0 ? p[i] + nd : p[i]] = i;
    c->gin[0] = kn_permute(c->gout[0], inv);
    return c->gin[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_permute = {.name = "permute",
                                    .min_in = 1,
                                    .max_in = 1,
                                    .nout = 1,
                                    .dtypes = KN_DT_ALL,
                                    .flags = KN_OPF_VIEW,
                                    .infer = permute_infer,
                                    .forward = permute_forward,
                                    .backward = permute_backward,
                                    .onnx = "Transpose",
                                    .doc = "reorder dims (view); attr dims"};

kn_tensor *kn_permute(kn_tensor *t, const int *dims) {
    if (!t) return NULL;
    if (!dims && t->ndim) return kn__errp(KN_EINVAL, "permute: dims is NULL");
    int64_t p[KN_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        p[i] = dims[i];
    kn_attrs a = {0};
    kn_attrs_set_ints(&a, "dims", p, t->ndim);
    return kn__op1(&op_permute, &t, 1, &a);
}

kn_tensor *kn_transpose(kn_tensor *t, int dim0, int dim1) {
    if (!t) return NULL;
    int a = kn__axis("transpose", dim0, t->ndim), b = kn__axis("transpose", dim1, t->ndim);
    if (a < 0 || b < 0) return NULL;
    int perm[KN_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        perm[i] = i;
    if (t->ndim) {
        perm[a] = b;
        perm[b] = a;
    }
    return kn_permute(t, perm);
}

/* ---- squeeze / unsqueeze (reshape views with their own names for graphs) ---- */
kn_tensor *kn_squeeze(kn_tensor *t, int dim) {
    if (!t) return NULL;
    int64_t shape[KN_MAX_DIMS];
    int nd = 0;
    int d = dim == KN_ALL_DIMS ? -1 : kn__axis("squeeze", dim, t->ndim);
    if (dim != KN_ALL_DIMS && d < 0) return NULL;
    for (int i = 0; i < t->ndim; i++) {
        bool drop = t->shape[i] == 1 && (dim == KN_ALL_DIMS || i == d);
        if (!drop) shape[nd++] = t->shape[i];
    }
    return kn_reshape(t, nd, shape);
}

kn_tensor *kn_unsqueeze(kn_tensor *t, int dim) {
    if (!t) return NULL;
    if (t->ndim >= KN_MAX_DIMS)
        return kn__errp(KN_ELIMIT, "unsqueeze: tensor already has %d dims", KN_MAX_DIMS);
    int d = kn__axis("unsqueeze", dim, t->ndim + 1);
    if (d < 0) return NULL;
    int64_t shape[KN_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i <= t->ndim; i++) {
        if (i == d) shape[nd++] = 1;
        if (i < t->ndim) shape[nd++] = t->shape[i];
    }
    return kn_reshape(t, nd, shape);
}

/* ---- expand ---- */
static kn_status expand_infer(kn_opctx *c) {
    const kn_tensor *x = c->in[0];
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__attr_ints(c->attrs, "shape", shape, KN_MAX_DIMS);
    char a[128], b[128];
    if (nd < x->ndim || nd > KN_MAX_DIMS)
        return kn__err(KN_ESHAPE, "expand: cannot expand %s to %d dims",
                       kn__shape_str(a, sizeof a, x->ndim, x->shape), nd);
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - x->ndim);
        int64_t have = j < 0 ? 1 : x->shape[j];
        if (shape[i] == -1) {
            if (j < 0) return kn__err(KN_EINVAL, "expand: -1 not allowed in a new leading dim");
            shape[i] = have;
        }
        if (have != shape[i] && have != 1)
            return kn__err(KN_ESHAPE, "expand: %s cannot be expanded to %s (dim %d)",
                           kn__shape_str(a, sizeof a, x->ndim, x->shape),
                           kn__shape_str(b, sizeof b, nd, shape), i);
    }
    c->out_dtype[0] = x->dtype;
    c->out_ndim[0] = nd;
    memcpy(c->out_shape[0], shape, sizeof shape);
    return KN_OK;
}
static kn_status expand_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    int64_t st[KN_MAX_DIMS];
    kn__bcast_strides(x, c->out_ndim[0], c->out_shape[0], st);
    c->out[0] = kn__tensor_view(x, c->out_ndim[0], c->out_shape[0], st, x->offset);
    return c->out[0] ? KN_OK : kn_last_status();
}
static kn_status expand_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    c->gin[0] = kn__sum_to(c->gout[0], c->in[0]->ndim, c->in[0]->shape);
    return c->gin[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_expand = {.name = "expand",
                                   .min_in = 1,
                                   .max_in = 1,
                                   .nout = 1,
                                   .dtypes = KN_DT_ALL,
                                   .flags = KN_OPF_VIEW,
                                   .infer = expand_infer,
                                   .forward = expand_forward,
                                   .backward = expand_backward,
                                   .onnx = "Expand",
                                   .doc = "broadcast view (stride 0); attr shape (-1 keeps a dim)"};
kn_tensor *kn_expand(kn_tensor *t, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > KN_MAX_DIMS || (ndim && !shape))
        return kn__errp(KN_EINVAL, "expand: invalid target rank %d", ndim);
    kn_attrs a = {0};
    kn_attrs_set_ints(&a, "shape", shape, ndim);
    return kn__op1(&op_expand, &t, 1, &a);
}

/* ---- slice ---- */
typedef struct {
    int dim;
    int64_t start, len, step;
} slice_spec;

/* Python semantics: clamp start/end into [0, size] after adding size to negatives. */
static kn_status slice_resolve(const char *who, const kn_attrs *at, int ndim, const int64_t *shape,
                               slice_spec *s) {
    int d = kn__axis(who, (int)kn__attr_int(at, "dim", 0), ndim);
    if (d < 0 || ndim == 0)
        return kn__err(KN_EINVAL, "%s: cannot slice a 0-d tensor or bad dim", who);
    int64_t size = shape[d];
    int64_t start = kn__attr_int(at, "start", 0), end = kn__attr_int(at, "end", INT64_MAX);
    int64_t step = kn__attr_int(at, "step", 1);
    if (step <= 0)
        return kn__err(KN_EINVAL, "%s: step must be positive, got %lld", who, (long long)step);
    if (step > (shape[d] > 0 ? shape[d] : 1)) step = shape[d] > 0 ? shape[d] : 1; /* same view */
    if (start < 0) start = start < -size ? 0 : start + size;
    if (end < 0) end = end < -size ? 0 : end + size;
    if (start > size) start = size;
    if (end > size) end = size;
    int64_t len = end > start ? (end - start - 1) / step + 1 : 0; /* no overflow for huge steps */
    *s = (slice_spec){d, start, len, step};
    return KN_OK;
}
static kn_status slice_infer(kn_opctx *c) {
    slice_spec s = {0};
    kn_status st = slice_resolve("slice", c->attrs, c->in[0]->ndim, c->in[0]->shape, &s);
    if (st) return st;
    kn__out_like(c, 0, c->in[0], c->in[0]->dtype);
    c->out_shape[0][s.dim] = s.len;
    return KN_OK;
}
static kn_status slice_forward(kn_opctx *c) {
    kn_tensor *x = c->in[0];
    slice_spec s = {0};
    slice_resolve("slice", c->attrs, x->ndim, x->shape, &s);
    int64_t st[KN_MAX_DIMS];
    memcpy(st, x->strides, sizeof st);
    st[s.dim] *= s.step;
    c->out[0] = kn__tensor_view(x, x->ndim, c->out_shape[0], st,
                                x->offset + (s.len ? s.start * x->strides[s.dim] : 0));
    return c->out[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_slice_backward;
static kn_status slice_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    kn_attrs a = *c->attrs;
    kn_attrs_set_ints(&a, "in_shape", c->in[0]->shape, c->in[0]->ndim);
    c->gin[0] = kn__op1(&op_slice_backward, &c->gout[0], 1, &a);
    return c->gin[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_slice = {
    .name = "slice",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_ALL,
    .flags = KN_OPF_VIEW,
    .infer = slice_infer,
    .forward = slice_forward,
    .backward = slice_backward,
    .onnx = "Slice",
    .doc = "x[start:end:step] on one dim (view); attrs dim, start, end, step"};

/* slice_backward(g): zeros of in_shape with g written into the slice */
static kn_status slice_bw_infer(kn_opctx *c) {
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__attr_ints(c->attrs, "in_shape", shape, KN_MAX_DIMS);
    if (nd < 1) return kn__err(KN_EINVAL, "slice_backward: missing in_shape");
    slice_spec s = {0};
    kn_status st = slice_resolve("slice_backward", c->attrs, nd, shape, &s);
    if (st) return st;
    if (c->in[0]->ndim != nd || c->in[0]->shape[s.dim] != s.len)
        return kn__err(KN_ESHAPE, "slice_backward: gradient does not match the slice");
    c->out_dtype[0] = c->in[0]->dtype;
    c->out_ndim[0] = nd;
    memcpy(c->out_shape[0], shape, sizeof shape);
    return KN_OK;
}
static kn_status slice_bw_forward(kn_opctx *c) {
    kn_tensor *o = c->out[0];
    memset(kn__ptr(o), 0, (size_t)kn__numel(o->ndim, o->shape) * kn_dtype_size(o->dtype));
    slice_spec s = {0};
    slice_resolve("slice_backward", c->attrs, o->ndim, o->shape, &s);
    if (s.len == 0) return KN_OK;
    int64_t st[KN_MAX_DIMS];
    memcpy(st, o->strides, sizeof st);
    st[s.dim] *= s.step;
    kn_tensor *view = kn__tensor_view(o, o->ndim, c->in[0]->shape, st, s.start * o->strides[s.dim]);
    if (!view) return kn_last_status();
    bool prev = kn_set_grad_enabled(false);
    kn_status r = kn_copy_(view, c->in[0]);
    kn_set_grad_enabled(prev);
    kn_tensor_free(view);
    return r;
}
static kn_status slice_bw_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    c->gin[0] = kn__op1(&op_slice, &c->gout[0], 1, c->attrs);
    return c->gin[0] ? KN_OK : kn_last_status();
}
static const kn_opdef op_slice_backward = {.name = "slice_backward",
                                           .min_in = 1,
                                           .max_in = 1,
                                           .nout = 1,
                                           .dtypes = KN_DT_ALL,
                                           .flags = KN_OPF_INTERNAL,
                                           .infer = slice_bw_infer,
                                           .forward = slice_bw_forward,
                                           .backward = slice_bw_backward,
                                           .doc = "scatter a slice's gradient into zeros"};

kn_tensor *kn_slice(kn_tensor *t, int dim, int64_t start, int64_t end, int64_t step) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", dim);
    kn_attrs_set_int(&a, "start", start);
    kn_attrs_set_int(&a, "end", end);
    kn_attrs_set_int(&a, "step", step);
    return kn__op1(&op_slice, &t, 1, &a);
}

/* ---- concat ---- */
static kn_status concat_infer(kn_opctx *c) {
    const kn_tensor *x0 = c->in[0];
    if (x0->ndim == 0)
        return kn__err(KN_EINVAL, "concat: zero-dimensional tensors cannot be concatenated");
    int d = kn__axis("concat", (int)kn__attr_int(c->attrs, "dim", 0), x0->ndim);
    if (d < 0) return kn_last_status();
    kn_status st = kn__same_dtype(c, 0, c->nin - 1);
    if (st) return st;
    int64_t total = 0;
    for (int i = 0; i < c->nin; i++) {
        const kn_tensor *x = c->in[i];
        bool ok = x->ndim == x0->ndim;
        for (int k = 0; ok && k < x0->ndim; k++)
            ok = k == d || x->shape[k] == x0->shape[k];
        if (!ok) {
            char a[128], b[128];
            return kn__err(KN_ESHAPE,
                           "concat: input %d has shape %s, input 0 has %s (only dim %d may differ)",
                           i, kn__shape_str(a, sizeof a, x->ndim, x->shape),
                           kn__shape_str(b, sizeof b, x0->ndim, x0->shape), d);
        }
        total += x->shape[d];
    }
    kn__out_like(c, 0, x0, x0->dtype);
    c->out_shape[0][d] = total;
    return KN_OK;
}
static kn_status concat_forward(kn_opctx *c) {
    kn_tensor *o = c->out[0];
    int d = kn__axis("concat", (int)kn__attr_int(c->attrs, "dim", 0), o->ndim);
    size_t es = kn_dtype_size(o->dtype);
    int64_t outer = kn__numel(d, o->shape), inner = kn__numel(o->ndim - d - 1, o->shape + d + 1);
    int64_t orow = o->shape[d] * inner, off = 0;
    for (int i = 0; i < c->nin; i++) {
        kn_tensor *x = kn__contig(c->in[i]);
        if (!x) return kn_last_status();
        int64_t row = x->shape[d] * inner;
        const char *src = kn__ptr(x);
        char *dst = kn__ptr(o) + (size_t)off * es;
        for (int64_t r = 0; r < outer; r++)
            memcpy(dst + (size_t)(r * orow) * es, src + (size_t)(r * row) * es, (size_t)row * es);
        off += row;
        kn_tensor_free(x);
    }
    return KN_OK;
}
static kn_status concat_backward(kn_bwctx *c) {
    int d = kn__axis("concat", (int)kn__attr_int(c->attrs, "dim", 0), c->in[0]->ndim);
    int64_t off = 0;
    for (int i = 0; i < c->nin; i++) {
        int64_t n = c->in[i]->shape[d];
        if (c->needs[i]) {
            c->gin[i] = kn_slice(c->gout[0], d, off, off + n, 1);
            if (!c->gin[i]) return kn_last_status();
        }
        off += n;
    }
    return KN_OK;
}
static const kn_opdef op_concat = {.name = "concat",
                                   .min_in = 1,
                                   .max_in = -1,
                                   .nout = 1,
                                   .dtypes = KN_DT_ALL,
                                   .infer = concat_infer,
                                   .forward = concat_forward,
                                   .backward = concat_backward,
                                   .onnx = "Concat",
                                   .doc = "join along an existing dim; attr dim"};

kn_tensor *kn_concat(kn_tensor *const *ts, int n, int dim) {
    if (!ts || n < 1) return kn__errp(KN_EINVAL, "concat: need at least one tensor");
    if (n > KN_MAX_INS) return kn__errp(KN_ELIMIT, "concat: %d tensors (max %d)", n, KN_MAX_INS);
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", dim);
    return kn__op1(&op_concat, ts, n, &a);
}

kn_tensor *kn_stack(kn_tensor *const *ts, int n, int dim) {
    if (!ts || n < 1) return kn__errp(KN_EINVAL, "stack: need at least one tensor");
    if (n > KN_MAX_INS) return kn__errp(KN_ELIMIT, "stack: %d tensors (max %d)", n, KN_MAX_INS);
    for (int i = 0; i < n; i++) {
        if (!ts[i]) return NULL;
        if (ts[i]->ndim != ts[0]->ndim ||
            memcmp(ts[i]->shape, ts[0]->shape, sizeof(int64_t) * ts[0]->ndim)) {
            char a[128], b[128];
            return kn__errp(KN_ESHAPE, "stack: tensor %d has shape %s, tensor 0 has %s", i,
                            kn__shape_str(a, sizeof a, ts[i]->ndim, ts[i]->shape),
                            kn__shape_str(b, sizeof b, ts[0]->ndim, ts[0]->shape));
        }
    }
    int d = kn__axis("stack", dim, ts[0]->ndim + 1);
    if (d < 0) return NULL;
    kn_tensor *u[KN_MAX_INS];
    kn_scope s = kn_scope_begin();
    for (int i = 0; i < n; i++)
        u[i] = kn_unsqueeze(ts[i], d);
    kn_tensor *r = kn_keep(kn_concat(u, n, d));
    kn_scope_end(s);
    return r;
}

int kn_split(kn_tensor *t, int64_t size, int dim, kn_tensor **out, int max_out) {
    if (!t) return kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "split: NULL tensor");
    if (size <= 0)
        return kn__err(KN_EINVAL, "split: split size must be positive, got %lld", (long long)size);
    int d = kn__axis("split", dim, t->ndim);
    if (d < 0 || t->ndim == 0) return kn__err(KN_EINVAL, "split: bad dim %d", dim);
    int64_t len = t->shape[d];
    int64_t n = len == 0 ? 1 : (len + size - 1) / size;
    if (n > max_out || !out)
        return kn__err(KN_ELIMIT, "split: %lld pieces but room for %d", (long long)n, max_out);
    for (int64_t i = 0; i < n; i++) {
        out[i] = kn_slice(t, d, i * size, (i + 1) * size, 1);
        if (!out[i]) {
            kn_status st = kn_last_status();
            if (!kn__scope_active()) /* outside a scope, release the pieces made so far */
                for (int64_t k = 0; k < i; k++)
                    kn_tensor_free(out[k]);
            return st;
        }
    }
    return (int)n;
}

int kn_chunk(kn_tensor *t, int chunks, int dim, kn_tensor **out, int max_out) {
    if (!t) return kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "chunk: NULL tensor");
    if (chunks <= 0) return kn__err(KN_EINVAL, "chunk: chunks must be positive, got %d", chunks);
    int d = kn__axis("chunk", dim, t->ndim);
    if (d < 0 || t->ndim == 0) return kn__err(KN_EINVAL, "chunk: bad dim %d", dim);
    int64_t len = t->shape[d];
    int64_t size = (len + chunks - 1) / chunks;
    if (size == 0) size = 1;
    return kn_split(t, size, d, out, max_out);
}

const kn_opdef *const kn__ops_shape[] = {&op_reshape,        &op_permute, &op_expand, &op_slice,
                                         &op_slice_backward, &op_concat,  NULL};
