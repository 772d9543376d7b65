/*
 * dispatch.c - the op pipeline (validate, infer, allocate, run, record, adopt), attributes,
 * broadcasting helpers and the elementwise iterator shared by op families.
 * The registry of families is in registry.c; autograd plugs in through kn__record.
 */
#include <omp.h>
#include <stdlib.h>

#include "ops/op_impl.h"

kn_record_fn kn__record;
kn_record_fn kn__trace_hook;
static _Thread_local bool tl_force_ref;
static _Thread_local int tl_depth;

int kn__op_depth(void) {
    return tl_depth;
}
static _Thread_local bool tl_no_grad; /* stored inverted so the zero default means "on" */

bool kn__grad_mode(void) {
    return !tl_no_grad;
}
void kn__set_grad_mode(bool on) {
    tl_no_grad = !on;
}
bool kn__force_ref(bool on) {
    bool prev = tl_force_ref;
    tl_force_ref = on;
    return prev;
}
bool kn__forcing_ref(void) {
    return tl_force_ref;
}

kn_status kn__check_inplace(const char *op, const kn_tensor *t) {
    if (!t) return kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "%s: NULL tensor", op);
    if (KN_UNLIKELY(kn__host_write_hook != NULL)) kn__host_write_hook(t, op); /* a tracer */
    if (t->requires_grad && kn__grad_mode())
        return kn__err(KN_EMISUSE,
                       "%s: in-place update of a tensor that requires grad while grad mode is "
                       "on (wrap it in kn_no_grad_begin/kn_no_grad_end)",
                       op);
    return KN_OK;
}

/* ---- attributes ---- */
static kn_attr *attr_slot(kn_attrs *a, const char *name) {
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->a[i].name, name) == 0) return &a->a[i];
    if (a->n >= KN_MAX_ATTRS) return NULL;
    kn_attr *s = &a->a[a->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

kn_status kn_attrs_set_ints(kn_attrs *a, const char *name, const int64_t *v, int n) {
    if (!a || !name || n < 0 || (n && !v)) return kn__err(KN_EINVAL, "attrs: bad argument");
    if (n > KN_MAX_ATTR_INTS)
        return kn__err(KN_ELIMIT, "attrs: '%s' has %d values (max %d)", name, n, KN_MAX_ATTR_INTS);
    if (strlen(name) >= sizeof a->a[0].name)
        return kn__err(KN_ELIMIT, "attrs: name '%s' too long", name);
    kn_attr *s = attr_slot(a, name);
    if (!s) return kn__err(KN_ELIMIT, "attrs: more than %d attributes", KN_MAX_ATTRS);
    s->kind = KN_ATTR_INTS;
    s->n = n;
    if (n) memcpy(s->ints, v, sizeof(int64_t) * n);
    return KN_OK;
}
kn_status kn_attrs_set_int(kn_attrs *a, const char *name, int64_t v) {
    return kn_attrs_set_ints(a, name, &v, 1);
}
kn_status kn_attrs_set_float(kn_attrs *a, const char *name, double v) {
    if (!a || !name) return kn__err(KN_EINVAL, "attrs: bad argument");
    if (strlen(name) >= sizeof a->a[0].name)
        return kn__err(KN_ELIMIT, "attrs: name '%s' too long", name);
    kn_attr *s = attr_slot(a, name);
    if (!s) return kn__err(KN_ELIMIT, "attrs: more than %d attributes", KN_MAX_ATTRS);
    s->kind = KN_ATTR_FLOAT;
    s->n = 1;
    s->f = v;
    return KN_OK;
}

static const kn_attr *attr_get(const kn_attrs *a, const char *name) {
    if (!a) return NULL;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->a[i].name, name) == 0) return &a->a[i];
    return NULL;
}
bool kn__attr_has(const kn_attrs *a, const char *name) {
    return attr_get(a, name) != NULL;
}
int64_t kn__attr_int(const kn_attrs *a, const char *name, int64_t def) {
    const kn_attr *s = attr_get(a, name);
    if (!s || s->n < 1) return def;
    if (s->kind != KN_ATTR_FLOAT) return s->ints[0];
    /* a float where an int is expected (e.g. from a file): out of range or NaN reads as absent */
    return s->f >= -9.2e18 && s->f <= 9.2e18 ? (int64_t)s->f : def;
}
int kn__attr_ints(const kn_attrs *a, const char *name, int64_t *out, int max) {
    const kn_attr *s = attr_get(a, name);
    if (!s || s->kind != KN_ATTR_INTS) return -1;
    int n = s->n < max ? s->n : max;
    if (n) memcpy(out, s->ints, sizeof(int64_t) * n);
    return s->n;
}
double kn__attr_float(const kn_attrs *a, const char *name, double def) {
    const kn_attr *s = attr_get(a, name);
    if (!s || s->n < 1) return def;
    return s->kind == KN_ATTR_FLOAT ? s->f : (double)s->ints[0];
}

/* ---- the pipeline ---- */
static const kn_attrs k_empty_attrs;

static void dtype_list(uint32_t mask, char *buf, size_t len) {
    size_t o = 0;
    buf[0] = 0;
    for (int d = 0; d < KN_NDTYPES && o < len; d++)
        if (mask & KN_DT(d))
            o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? ", " : "", kn_dtype_name(d));
}

/* Runs the pipeline; outputs are returned +1 and not yet adopted by a scope. */
static int run_raw(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs,
                   kn_tensor **out, int max_out) {
    if (!attrs) attrs = &k_empty_attrs;
    for (int i = 0; i < nin; i++) {
        if (!in[i]) {
            /* keep the error of the call that produced the NULL */
            if (kn_last_status() == KN_OK) kn__err(KN_EINVAL, "%s: input %d is NULL", op->name, i);
            return kn_last_status();
        }
    }
    int max_in = op->max_in < 0 ? KN_MAX_INS : op->max_in;
    if (nin < op->min_in || nin > max_in)
        return kn__err(KN_EINVAL, "%s: got %d inputs, expects %d to %d", op->name, nin, op->min_in,
                       max_in);
    if (nin > 0 && !(op->dtypes & KN_DT(in[0]->dtype))) {
        char list[160];
        dtype_list(op->dtypes, list, sizeof list);
        return kn__err(KN_EDTYPE, "%s: dtype %s is not supported (supports %s)", op->name,
                       kn_dtype_name(in[0]->dtype), list);
    }
    kn_opctx c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.nin = nin;
    c.in = in;
    c.attrs = attrs;
    c.nout = op->nout;
    kn_status st = op->infer(&c);
    if (st != KN_OK) return st;
    if (c.nout > max_out || c.nout > KN_MAX_OUTS)
        return kn__err(KN_EINTERNAL, "%s: %d outputs but room for %d", op->name, c.nout, max_out);
    if (!(op->flags & KN_OPF_VIEW)) {
        for (int o = 0; o < c.nout; o++) {
            c.out[o] = kn__tensor_alloc(c.out_dtype[o], c.out_ndim[o], c.out_shape[o]);
            if (!c.out[o]) {
                st = kn_last_status();
                goto fail;
            }
        }
    }
    tl_depth++;
    st = (tl_force_ref && op->forward_ref ? op->forward_ref : op->forward)(&c);
    tl_depth--;
    if (st != KN_OK) goto fail;
    if (kn__trace_hook && tl_depth == 0) {
        st = kn__trace_hook(op, in, nin, attrs, c.out, c.nout);
        if (st != KN_OK) goto fail;
    }
    if (kn__record && !tl_no_grad) {
        st = kn__record(op, in, nin, attrs, c.out, c.nout);
        if (st != KN_OK) goto fail;
    }
    for (int o = 0; o < c.nout; o++)
        out[o] = c.out[o];
    return c.nout;
fail:
    for (int o = 0; o < c.nout; o++)
        kn_tensor_free(c.out[o]);
    return st;
}

int kn__op_run(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs,
               kn_tensor **out, int max_out) {
    int n = run_raw(op, in, nin, attrs, out, max_out);
    for (int o = 0; o < n; o++)
        out[o] = kn__scope_adopt(out[o]);
    return n;
}

kn_tensor *kn__op1(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs) {
    kn_tensor *out[KN_MAX_OUTS] = {0};
    int n = run_raw(op, in, nin, attrs, out, KN_MAX_OUTS);
    if (n < 1) return NULL;
    /* extra outputs (saved statistics) stay alive through the tape node if it needs them */
    for (int i = 1; i < n; i++)
        kn_tensor_free(out[i]);
    return kn__scope_adopt(out[0]);
}

int kn_op_call(const char *name, kn_tensor *const *inputs, int ninputs, const kn_attrs *attrs,
               kn_tensor **outputs, int max_out) {
    if (!name || (ninputs && !inputs) || !outputs || ninputs < 0)
        return kn__err(KN_EINVAL, "op_call: bad argument");
    const kn_opdef *op = kn__op_find(name);
    if (!op) return kn__err(KN_EUNSUPPORTED, "op_call: no op named '%s'", name);
    return kn__op_run(op, inputs, ninputs, attrs, outputs, max_out);
}

kn_status kn_op_describe(const char *name, char *buf, size_t len) {
    const kn_opdef *op = name ? kn__op_find(name) : NULL;
    if (!op) return kn__err(KN_EUNSUPPORTED, "op_describe: no op named '%s'", name ? name : "");
    if (!buf || !len) return kn__err(KN_EINVAL, "op_describe: no buffer");
    char list[160];
    dtype_list(op->dtypes, list, sizeof list);
    snprintf(buf, len, "%s | %s | %s | %s | %s | %s", op->name, list, op->backward ? "yes" : "no",
             op->forward_ref ? "fast+ref" : "ref", op->onnx ? op->onnx : "-",
             op->doc ? op->doc : "");
    return KN_OK;
}

/* ---- shape helpers ---- */
kn_status kn__broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                              int *nout, int64_t *out) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t a = i < n - na ? 1 : sa[i - (n - na)];
        int64_t b = i < n - nb ? 1 : sb[i - (n - nb)];
        if (a != b && a != 1 && b != 1) {
            char s1[128], s2[128];
            return kn__err(KN_ESHAPE,
                           "%s: shapes %s and %s cannot be broadcast (dim %d: %lld vs %lld)", op,
                           kn__shape_str(s1, sizeof s1, na, sa),
                           kn__shape_str(s2, sizeof s2, nb, sb), i, (long long)a, (long long)b);
        }
        out[i] = a == 1 ? b : a;
    }
    *nout = n;
    return KN_OK;
}

void kn__bcast_strides(const kn_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    int off = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - off;
        strides[i] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j];
        (void)shape;
    }
}

void kn__out_like(kn_opctx *c, int i, const kn_tensor *t, kn_dtype dt) {
    c->out_dtype[i] = dt;
    c->out_ndim[i] = t->ndim;
    memcpy(c->out_shape[i], t->shape, sizeof(int64_t) * KN_MAX_DIMS);
}

kn_status kn__same_dtype(const kn_opctx *c, int first, int last) {
    for (int i = first + 1; i <= last && i < c->nin; i++)
        if (c->in[i]->dtype != c->in[first]->dtype)
            return kn__err(KN_EDTYPE, "%s: input %d is %s but input %d is %s (cast explicitly)",
                           c->op->name, first, kn_dtype_name(c->in[first]->dtype), i,
                           kn_dtype_name(c->in[i]->dtype));
    return KN_OK;
}

kn_tensor *kn__sum_to(kn_tensor *g, int ndim, const int64_t *shape) {
    if (!g) return NULL;
    if (g->ndim == ndim && memcmp(g->shape, shape, sizeof(int64_t) * ndim) == 0)
        return kn__scope_adopt(kn_tensor_retain(g));
    int axes[KN_MAX_DIMS], na = 0, lead = g->ndim - ndim;
    for (int i = 0; i < g->ndim; i++) {
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) axes[na++] = i;
    }
    kn_tensor *s = na ? kn_sum(g, axes, na, true) : g;
    return kn_reshape(s, ndim, shape);
}

/* ---- elementwise iterator ---- */
typedef struct {
    int nops, nd;
    int64_t shape[KN_MAX_DIMS];
    int64_t bstrides[KN_ITER_OPS][KN_MAX_DIMS]; /* bytes */
    char *base[KN_ITER_OPS];
} iter_plan;

static void iter_range(const iter_plan *p, kn_iter_fn fn, void *args, int64_t start, int64_t end) {
    int nd = p->nd;
    int64_t inner = p->shape[nd - 1];
    int64_t idx[KN_MAX_DIMS];
    int64_t rem = start;
    for (int k = nd - 1; k >= 0; k--) {
        idx[k] = rem % p->shape[k];
        rem /= p->shape[k];
    }
    char *ptrs[KN_ITER_OPS];
    int64_t istr[KN_ITER_OPS];
    for (int o = 0; o < p->nops; o++)
        istr[o] = p->bstrides[o][nd - 1];
    int64_t pos = start;
    while (pos < end) {
        for (int o = 0; o < p->nops; o++) {
            int64_t off = 0;
            for (int k = 0; k < nd; k++)
                off += idx[k] * p->bstrides[o][k];
            ptrs[o] = p->base[o] + off;
        }
        int64_t n = inner - idx[nd - 1];
        if (n > end - pos) n = end - pos;
        fn(args, n, ptrs, istr);
        pos += n;
        idx[nd - 1] += n;
        for (int k = nd - 1; k > 0 && idx[k] >= p->shape[k]; k--) {
            idx[k] = 0;
            idx[k - 1]++;
        }
    }
}

kn_status kn__iter(kn_tensor *out, kn_tensor *const *ins, int nins, kn_iter_fn fn, void *args) {
    iter_plan p;
    if (nins > KN_ITER_OPS - 1) return kn__err(KN_EINTERNAL, "iter: too many operands");
    p.nops = nins + 1;
    int64_t numel = kn__numel(out->ndim, out->shape);
    if (numel == 0) return KN_OK;
    /* per-operand element strides over the output shape */
    int64_t st[KN_ITER_OPS][KN_MAX_DIMS];
    for (int i = 0; i < out->ndim; i++)
        st[0][i] = out->strides[i];
    for (int o = 0; o < nins; o++)
        kn__bcast_strides(ins[o], out->ndim, out->shape, st[o + 1]);
    /* drop size-1 dims and merge dims that are contiguous for every operand */
    int nd = 0;
    for (int i = 0; i < out->ndim; i++) {
        if (out->shape[i] == 1) continue;
        bool merge = nd > 0;
        for (int o = 0; o < p.nops && merge; o++)
            merge = st[o][i] * out->shape[i] == p.bstrides[o][nd - 1];
        if (merge) {
            p.shape[nd - 1] *= out->shape[i];
            for (int o = 0; o < p.nops; o++)
                p.bstrides[o][nd - 1] = st[o][i];
        } else {
            p.shape[nd] = out->shape[i];
            for (int o = 0; o < p.nops; o++)
                p.bstrides[o][nd] = st[o][i];
            nd++;
        }
    }
    if (nd == 0) {
        nd = 1;
        p.shape[0] = 1;
        for (int o = 0; o < p.nops; o++)
            p.bstrides[o][0] = 0;
    }
    p.nd = nd;
    for (int o = 0; o < p.nops; o++) {
        size_t es = kn_dtype_size(o == 0 ? out->dtype : ins[o - 1]->dtype);
        for (int k = 0; k < nd; k++)
            p.bstrides[o][k] *= (int64_t)es;
        p.base[o] = kn__ptr(o == 0 ? out : ins[o - 1]);
    }
    int nth = kn__threads();
    if (numel < 65536 || nth == 1) {
        iter_range(&p, fn, args, 0, numel);
        return KN_OK;
    }
#pragma omp parallel num_threads(nth)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        /* chunks aligned to 16 elements keep each thread's vector loops whole */
        int64_t per = ((numel + n - 1) / n + 15) & ~(int64_t)15;
        int64_t s = per * t, e = s + per < numel ? s + per : numel;
        if (s < e) iter_range(&p, fn, args, s, e);
    }
    return KN_OK;
}
