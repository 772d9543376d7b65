/*
 * trace.c - kn_trace: runs a function once with the op pipeline's trace hook set, recording each
 * top-level op as a graph node (ops that run inside another op's forward are that op's business
 * and are not recorded). Tensors are identified by pointer; the tracer holds a reference to every
 * tensor it has mapped so a freed tensor's address cannot be reused under it during the trace.
 *
 * Guards: host reads of traced values (kn_item, kn_tensor_data, ...) outside op kernels are
 * counted; kn_trace_check re-traces on fresh inputs and compares op sequences, captured constants
 * and outputs, naming the first node that differs.
 *
 * Symbolic batch: after the trace, shapes are re-inferred with batch B+1; value dims that move are
 * the batch, and reshape/expand attrs whose leading entry was the batch follow it (sym_attr).
 */
#include <math.h>
#include <stdlib.h>

#include "graph/graph_impl.h"

typedef struct {
    const kn_tensor *key;
    int v;
} slot;

/* By storage: every mapped tensor, so that an alias (a new header over the same bytes with the
 * same geometry, as the autograd tape saves outputs) resolves to the same value. */
typedef struct {
    const kn_storage *key;
    const kn_tensor *t;
    int v;
} sslot;

typedef struct tracer {
    kn_graph *g;
    slot *map;
    size_t cap, used;
    sslot *smap;
    size_t scap, sused;
    kn_tensor **held;
    int nheld, cap_held;
    const kn_trace_opts *o;
    int nconst;
    char write_err[256];
} tracer;

static _Thread_local tracer *tl_tr;

void *kn__trace_pause(void) {
    tracer *t = tl_tr;
    tl_tr = NULL;
    return t;
}

void kn__trace_resume(void *t) {
    tl_tr = t;
}

static size_t hash_ptr(const void *p) {
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int map_get(const tracer *t, const kn_tensor *k) {
    if (!t->cap) return -1;
    for (size_t i = hash_ptr(k) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (t->map[i].key == k) return t->map[i].v;
        if (!t->map[i].key) return -1;
    }
}

static bool same_geometry(const kn_tensor *a, const kn_tensor *b) {
    return a->dtype == b->dtype && a->ndim == b->ndim && a->offset == b->offset &&
           !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) &&
           !memcmp(a->strides, b->strides, sizeof(int64_t) * (size_t)a->ndim);
}

static int alias_get(const tracer *t, const kn_tensor *k) {
    if (!t->scap || !k->storage) return -1;
    for (size_t i = hash_ptr(k->storage) & (t->scap - 1); t->smap[i].key;
         i = (i + 1) & (t->scap - 1))
        if (t->smap[i].key == k->storage && same_geometry(t->smap[i].t, k)) return t->smap[i].v;
    return -1;
}

static kn_status alias_put(tracer *t, const kn_tensor *k, int v) {
    if (!k->storage) return KN_OK;
    if (2 * (t->sused + 1) > t->scap) {
        size_t nc = t->scap ? t->scap * 2 : 256;
        sslot *m = kn__calloc(nc, sizeof *m);
        if (!m) return kn_last_status();
        for (size_t i = 0; i < t->scap; i++) {
            if (!t->smap[i].key) continue;
            size_t j = hash_ptr(t->smap[i].key) & (nc - 1);
            while (m[j].key)
                j = (j + 1) & (nc - 1);
            m[j] = t->smap[i];
        }
        kn__free(t->smap);
        t->smap = m;
        t->scap = nc;
    }
    size_t i = hash_ptr(k->storage) & (t->scap - 1);
    while (t->smap[i].key)
        i = (i + 1) & (t->scap - 1);
    t->smap[i] = (sslot){k->storage, k, v};
    t->sused++;
    return KN_OK;
}

static kn_status map_put(tracer *t, kn_tensor *k, int v) {
    if (2 * (t->used + 1) > t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 256;
        slot *m = kn__calloc(nc, sizeof *m);
        if (!m) return kn_last_status();
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->map[i].key) continue;
            size_t j = hash_ptr(t->map[i].key) & (nc - 1);
            while (m[j].key)
                j = (j + 1) & (nc - 1);
            m[j] = t->map[i];
        }
        kn__free(t->map);
        t->map = m;
        t->cap = nc;
    }
    size_t i = hash_ptr(k) & (t->cap - 1);
    while (t->map[i].key && t->map[i].key != k)
        i = (i + 1) & (t->cap - 1);
    if (!t->map[i].key) {
        t->used++;
        kn_status st = alias_put(t, k, v);
        if (st) return st;
        if (t->nheld == t->cap_held) {
            int nc = t->cap_held ? t->cap_held * 2 : 256;
            kn_tensor **h = kn__realloc(t->held, sizeof *h * (size_t)nc);
            if (!h) return kn_last_status();
            t->held = h;
            t->cap_held = nc;
        }
        t->held[t->nheld++] = kn_tensor_retain(k);
    }
    t->map[i].key = k;
    t->map[i].v = v;
    return KN_OK;
}

/* A tensor the function used that was not computed from the inputs: a weight. */
static int capture(tracer *t, kn_tensor *x) {
    const char *name = NULL;
    for (int i = 0; t->o && i < t->o->nweights; i++)
        if (t->o->weights[i].tensor == x) name = t->o->weights[i].name;
    char buf[32];
    if (!name) snprintf(buf, sizeof buf, "const_%d", t->nconst++), name = buf;
    /* only unnamed 0-d captures (the scalars op wrappers make, autograd's seed) are constants
     * the compiler may fold; any other tensor is a weight the caller may still change */
    int v = kn__g_add_weight(t->g, name, x, name == buf && x->ndim == 0);
    if (v < 0 || map_put(t, x, v) != KN_OK) return -1;
    return v;
}

static kn_status trace_op(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs,
                          kn_tensor **out, int nout) {
    tracer *t = tl_tr;
    if (!t) return KN_OK;
    int ids[KN_MAX_INS];
    for (int i = 0; i < nin; i++) {
        ids[i] = map_get(t, in[i]);
        if (ids[i] < 0) ids[i] = alias_get(t, in[i]);
        if (ids[i] < 0 && (ids[i] = capture(t, in[i])) < 0) return kn_last_status();
    }
    kn_attrs at = *attrs;
    if (!strcmp(op->name, "one_hot") && kn__attr_int(attrs, "num_classes", -1) == -1) {
        /* the class count came from the data: freeze it, and count it as a host read so
         * kn_trace_check looks for inputs that change it */
        kn_attrs_set_int(&at, "num_classes", out[0]->shape[out[0]->ndim - 1]);
        if (t->g->host_reads++ == 0)
            snprintf(t->g->first_read, sizeof t->g->first_read,
                     "one_hot's num_classes taken from the data at node %d", t->g->nnodes);
    }
    int n = kn__g_add_node(t->g, op, ids, nin, &at, nout);
    if (n < 0) return kn_last_status();
    for (int o = 0; o < nout; o++) {
        int v = kn__g_add_value(t->g, GV_NODE, out[o]->dtype, out[o]->ndim, out[o]->shape);
        if (v < 0) return kn_last_status();
        t->g->vals[v].node = n;
        t->g->vals[v].out_index = o;
        t->g->nodes[n].out[o] = v;
        kn_status st = map_put(t, out[o], v);
        if (st) return st;
    }
    return KN_OK;
}

/* An in-place update (kn_add_, kn_fill_, ...) of a tensor the trace has seen is not an op: it
 * cannot be recorded, so the trace is refused (the first such write is kept for the message). */
static void on_write(const kn_tensor *x, const char *what) {
    tracer *t = tl_tr;
    if (!t || kn__op_depth() > 0 || t->write_err[0]) return;
    int v = map_get(t, x);
    if (v < 0) v = alias_get(t, x);
    if (v < 0 && x->storage)
        for (size_t i = 0; i < t->scap && v < 0; i++)
            if (t->smap[i].key == x->storage) v = t->smap[i].v; /* a view of a traced tensor */
    if (v >= 0)
        snprintf(t->write_err, sizeof t->write_err,
                 "trace: %s wrote in place into a tensor the trace uses (value %d); in-place "
                 "updates are not recorded: use the out-of-place op (kn_add, kn_mul_scalar, ...)",
                 what, v);
}

static void on_read(const kn_tensor *x, const char *what) {
    tracer *t = tl_tr;
    if (!t || kn__op_depth() > 0) return;
    int v = map_get(t, x);
    if (v < 0 || t->g->vals[v].kind == GV_WEIGHT) return;
    if (t->g->host_reads++ == 0) {
        const kn_gval *gv = &t->g->vals[v];
        if (gv->kind == GV_NODE)
            snprintf(t->g->first_read, sizeof t->g->first_read, "%s of the output of node %d (%s)",
                     what, gv->node, t->g->nodes[gv->node].op->name);
        else
            snprintf(t->g->first_read, sizeof t->g->first_read, "%s of input '%s'", what, gv->name);
    }
}

static void tracer_free(tracer *t) {
    for (int i = 0; i < t->nheld; i++)
        kn_tensor_free(t->held[i]);
    kn__free(t->held);
    kn__free(t->map);
    kn__free(t->smap);
}

/* Re-infers at batch B+1: marks value dims that move, and attrs that must follow the batch. */
static kn_status find_symbolic(kn_graph *g) {
    int64_t b2 = g->batch + 1;
    /* values computed from the inputs: only their shapes can follow the batch */
    bool *dep = kn__calloc((size_t)(g->nvals ? g->nvals : 1), sizeof(bool));
    if (!dep) return kn_last_status();
    for (int k = 0; k < g->ninputs; k++)
        dep[g->inputs[k]] = true;
    for (int i = 0; i < g->nnodes; i++) {
        bool d = false;
        for (int j = 0; j < g->nodes[i].nin; j++)
            d |= dep[g->nodes[i].in[j]];
        for (int o = 0; o < g->nodes[i].nout; o++)
            dep[g->nodes[i].out[o]] = d;
    }
    for (int i = 0; i < g->nnodes; i++) {
        kn_gnode *n = &g->nodes[i];
        if (n->nin == 0 || !dep[n->in[0]]) continue; /* a reshaped weight is not batched */
        for (int a = 0; a < n->attrs.n && a < 4; a++) {
            kn_attr *at = &n->attrs.a[a];
            if (at->kind == KN_ATTR_INTS && at->n > 0 && at->ints[0] == g->batch &&
                (strcmp(at->name, "shape") == 0 || strcmp(at->name, "in_shape") == 0) &&
                n->nin > 0 && g->vals[n->in[0]].ndim > 0 && g->vals[n->in[0]].shape[0] == g->batch)
                n->sym_attr |= 1u << (8 * a);
        }
    }
    kn__free(dep);
    int64_t(*sh)[KN_MAX_DIMS] = kn__calloc((size_t)g->nvals, sizeof *sh);
    int *nd = kn__calloc((size_t)g->nvals, sizeof(int));
    kn_status st = sh && nd ? KN_OK : kn_last_status();
    /* a candidate attr whose input does not follow the batch is a coincidence: drop it */
    for (int pass = 0; pass < 2 && st == KN_OK; pass++) {
        st = kn__g_infer(g, b2, sh, nd);
        if (st) break;
        for (int i = 0; i < g->nnodes; i++) {
            kn_gnode *n = &g->nodes[i];
            if (n->sym_attr && (nd[n->in[0]] == 0 || sh[n->in[0]][0] != b2)) n->sym_attr = 0;
        }
    }
    if (st == KN_OK) {
        for (int v = 0; v < g->nvals; v++) {
            kn_gval *gv = &g->vals[v];
            gv->sym = 0;
            if (nd[v] != gv->ndim) {
                st = kn__err(KN_ESHAPE, "trace: the rank of a value depends on the batch size");
                break;
            }
            for (int d = 0; d < gv->ndim; d++)
                if (sh[v][d] != gv->shape[d]) gv->sym |= (uint8_t)(1u << d);
        }
    }
    kn__free(sh);
    kn__free(nd);
    return st;
}

/* The trace itself; when outs is given, fn's outputs are handed back (+1 each). */
kn_graph *kn__trace_outputs(kn_traced_fn fn, void *user, kn_tensor *const *inputs, int nin,
                            const kn_trace_opts *o, kn_tensor **outs, int *nouts) {
    if (!fn || nin < 0 || (nin && !inputs)) return kn__errp(KN_EINVAL, "trace: bad argument");
    if (tl_tr) return kn__errp(KN_EMISUSE, "trace: already tracing on this thread");
    for (int i = 0; i < nin; i++)
        if (!inputs[i]) return kn__errp(KN_EINVAL, "trace: input %d is NULL", i);
    tracer t = {.o = o};
    kn_graph *g = t.g = kn__g_new();
    if (!g) return NULL;
    kn_tensor *res[16] = {0};
    int nres = 0;
    kn_status st = KN_OK;
    if (!(g->inputs = kn__calloc((size_t)(nin ? nin : 1), sizeof(int)))) goto fail;
    for (int i = 0; i < nin; i++) {
        int v = kn__g_add_value(g, GV_INPUT, inputs[i]->dtype, inputs[i]->ndim, inputs[i]->shape);
        char buf[32];
        const char *nm = o && o->input_names ? o->input_names[i] : NULL;
        if (!nm) {
            if (i)
                snprintf(buf, sizeof buf, "input_%d", i);
            else
                snprintf(buf, sizeof buf, "input");
            nm = buf;
        }
        size_t len = strlen(nm) + 1;
        if (v < 0 || !(g->vals[v].name = kn__malloc(len))) goto fail;
        memcpy(g->vals[v].name, nm, len);
        g->inputs[g->ninputs++] = v;
        if ((st = map_put(&t, inputs[i], v))) goto fail;
    }
    tl_tr = &t;
    kn__trace_hook = trace_op;
    kn__host_read_hook = on_read;
    kn__host_write_hook = on_write;
    kn_scope sc = kn_scope_begin();
    nres = fn(user, inputs, nin, res, 16);
    if (nres > 0) {
        for (int i = 0; i < nres; i++) {
            int v = res[i] ? map_get(&t, res[i]) : -1;
            if (res[i] && (v < 0 || g->vals[v].kind != GV_NODE)) {
                /* an input or weight returned as is: the graph copies it */
                kn_tensor *c = kn_clone(res[i]);
                if (c) res[i] = c;
            }
            kn_tensor_retain(res[i]); /* ours beyond the scope */
        }
    }
    kn_scope_end(sc);
    tl_tr = NULL;
    if (nres < 0) {
        st = nres;
        goto fail;
    }
    if (nres == 0) {
        st = kn__err(KN_EINVAL, "trace: the function returned no outputs");
        goto fail;
    }
    if (t.write_err[0]) {
        st = kn__err(KN_EUNSUPPORTED, "%s", t.write_err);
        goto fail;
    }
    g->outputs = kn__calloc((size_t)nres, sizeof(int));
    g->out_names = kn__calloc((size_t)nres, sizeof(char *));
    if (!g->outputs || !g->out_names) goto fail;
    for (int i = 0; i < nres; i++) {
        int v = res[i] ? map_get(&t, res[i]) : -1;
        if (v < 0 || g->vals[v].kind != GV_NODE) {
            st = kn__err(KN_EUNSUPPORTED, "trace: output %d was not computed by kiln ops", i);
            goto fail;
        }
        char buf[32];
        const char *nm = o && o->output_names ? o->output_names[i] : NULL;
        if (!nm) {
            if (i)
                snprintf(buf, sizeof buf, "output_%d", i);
            else
                snprintf(buf, sizeof buf, "output");
            nm = buf;
        }
        size_t len = strlen(nm) + 1;
        if (!(g->out_names[i] = kn__malloc(len))) goto fail;
        memcpy(g->out_names[i], nm, len);
        g->outputs[g->noutputs++] = v;
    }
    if (!(o && o->static_batch) && nin > 0 && inputs[0]->ndim > 0 && inputs[0]->shape[0] > 0) {
        g->batch = inputs[0]->shape[0];
        for (int i = 0; i < nin; i++)
            if (inputs[i]->ndim > 0 && inputs[i]->shape[0] == g->batch)
                g->vals[g->inputs[i]].sym = 1;
        if ((st = find_symbolic(g)) != KN_OK) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            st = kn__err(KN_ESHAPE,
                         "trace: the batch dimension cannot be symbolic (%s); trace with "
                         "static_batch",
                         msg);
            goto fail;
        }
    }
    /* tensors an op writes to (optimizer state, running statistics) are state, not constants */
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op->flags & KN_OPF_MUTATES)
            for (int j = 0; j < g->nodes[i].nin; j++)
                g->vals[g->nodes[i].in[j]].constant = false;
    g->traced_nodes = g->nnodes;
    tracer_free(&t);
    if (outs) {
        for (int i = 0; i < nres; i++)
            outs[i] = res[i];
        *nouts = nres;
    } else {
        for (int i = 0; i < nres; i++)
            kn_tensor_free(res[i]);
    }
    return g;
fail:
    tl_tr = NULL;
    if (st == KN_OK) st = kn_last_status() ? kn_last_status() : KN_ENOMEM;
    for (int i = 0; i < nres && nres > 0; i++)
        kn_tensor_free(res[i]);
    tracer_free(&t);
    kn_graph_free(g);
    if (kn_last_status() == KN_OK) kn__err(st, "trace failed");
    return NULL;
}

kn_graph *kn_trace(kn_traced_fn fn, void *user, kn_tensor *const *inputs, int nin,
                   const kn_trace_opts *opts) {
    return kn__trace_outputs(fn, user, inputs, nin, opts, NULL, NULL);
}

static int module_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_tensor *y = kn_module_forward(user, in[0]);
    if (!y) return kn_last_status();
    out[0] = y;
    return 1;
}

kn_graph *kn_trace_module(kn_module *m, kn_tensor *example) {
    if (!m || !example) return kn__errp(KN_EINVAL, "trace_module: NULL argument");
    int n = kn_module_state_dict(m, NULL, 0);
    kn_named_tensor *sd = kn__calloc((size_t)(n > 0 ? n : 1), sizeof *sd);
    if (!sd) return NULL;
    kn_module_state_dict(m, sd, n);
    bool was = kn_module_is_training(m);
    kn_module_train(m, false);
    bool prev = kn_no_grad_begin();
    kn_trace_opts o = {.weights = sd, .nweights = n};
    kn_graph *g = kn_trace(module_fn, m, &example, 1, &o);
    kn_no_grad_end(prev);
    kn_module_train(m, was);
    kn__free(sd);
    return g;
}

/* ---- kn_trace_check ---- */
static bool same_bytes(const kn_tensor *a, const kn_tensor *b) {
    if (a == b) return true;
    if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim ||
        memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim))
        return false;
    kn_tensor *ca = kn__contig((kn_tensor *)a), *cb = kn__contig((kn_tensor *)b);
    bool eq = ca && cb &&
              memcmp(kn__ptr(ca), kn__ptr(cb),
                     (size_t)kn__numel(a->ndim, a->shape) * kn_dtype_size(a->dtype)) == 0;
    kn_tensor_free(ca);
    kn_tensor_free(cb);
    return eq;
}

static kn_status refuse(const kn_graph *g, const char *what) {
    if (g->host_reads)
        return kn__err(KN_EMISUSE,
                       "trace_check: %s; the trace read tensor values on the host (%s), so it "
                       "froze a data-dependent path",
                       what, g->first_read);
    return kn__err(KN_EMISUSE, "trace_check: %s", what);
}

static bool attrs_equal(const kn_gnode *x, const kn_gnode *y) {
    if (x->attrs.n != y->attrs.n) return false;
    for (int k = 0; k < x->attrs.n; k++) {
        const kn_attr *p = &x->attrs.a[k], *q = &y->attrs.a[k];
        if (strcmp(p->name, q->name) || p->kind != q->kind || p->n != q->n) return false;
        if (p->kind == KN_ATTR_FLOAT
                ? p->f != q->f
                : (x->sym_attr == 0 && memcmp(p->ints, q->ints, sizeof(int64_t) * (size_t)p->n)))
            return false;
    }
    return true;
}

/* Compares op sequences and captured constants of the traced graph and a fresh re-trace. */
static kn_status compare_traces(const kn_graph *a, const kn_graph *b) {
    char what[256];
    int n = a->nnodes < b->nnodes ? a->nnodes : b->nnodes;
    for (int i = 0; i < n; i++) {
        const kn_gnode *x = &a->nodes[i], *y = &b->nodes[i];
        if (x->op != y->op) {
            snprintf(what, sizeof what,
                     "node %d is '%s' in the trace but the function now runs '%s'", i, x->op->name,
                     y->op->name);
            return refuse(a, what);
        }
        bool same_in = x->nin == y->nin;
        for (int j = 0; same_in && j < x->nin; j++) {
            const kn_gval *va = &a->vals[x->in[j]], *vb = &b->vals[y->in[j]];
            same_in =
                va->kind == vb->kind &&
                (va->kind != GV_NODE || (va->node == vb->node && va->out_index == vb->out_index));
            if (same_in && va->kind == GV_WEIGHT && !same_bytes(va->data, vb->data)) {
                snprintf(what, sizeof what,
                         "node %d (%s) uses a constant that changed with the inputs", i,
                         x->op->name);
                return refuse(a, what);
            }
        }
        if (!same_in || !attrs_equal(x, y)) {
            snprintf(what, sizeof what, "node %d (%s) ran with different %s", i, x->op->name,
                     same_in ? "attributes" : "inputs");
            return refuse(a, what);
        }
    }
    if (a->nnodes != b->nnodes) {
        snprintf(what, sizeof what,
                 "the trace has %d ops but the function now runs %d (they differ from node %d)",
                 a->nnodes, b->nnodes, n);
        return refuse(a, what);
    }
    return KN_OK;
}

static bool close_enough(kn_tensor *x, kn_tensor *y, double *worst) {
    if (x->dtype != y->dtype || x->ndim != y->ndim ||
        memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim))
        return false;
    int64_t n = kn__numel(x->ndim, x->shape);
    double *a = kn__malloc(sizeof(double) * (size_t)(n ? n : 1));
    double *b = kn__malloc(sizeof(double) * (size_t)(n ? n : 1));
    bool ok = a && b && kn_tensor_read(x, KN_F64, a, sizeof(double) * (size_t)n) == KN_OK &&
              kn_tensor_read(y, KN_F64, b, sizeof(double) * (size_t)n) == KN_OK;
    for (int64_t i = 0; ok && i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (isnan(a[i]) && isnan(b[i])) continue;
        if (!(d <= 1e-6 + 1e-5 * fabs(b[i]))) {
            ok = false;
            *worst = d;
        }
    }
    kn__free(a);
    kn__free(b);
    return ok;
}

/* A symbolic-batch graph must also agree with eager mode at another batch size: host code that
 * computed something from the batch size (1.0 / kn_tensor_dim(x, 0)) baked it into the trace as
 * a constant, which only shows at a different batch. Checked at one row fewer. */
static kn_status check_other_batch(kn_graph *g, kn_traced_fn fn, void *user,
                                   kn_tensor *const *fresh, int nin) {
    int64_t b = 0;
    for (int i = 0; i < nin; i++)
        if ((g->vals[g->inputs[i]].sym & 1) && fresh[i]->ndim > 0) b = fresh[i]->shape[0];
    if (b < 2 || nin > KN_MAX_INS) return KN_OK;
    kn_scope sc = kn_scope_begin();
    kn_tensor *nar[KN_MAX_INS], *want[16] = {0}, *got[16] = {0};
    for (int i = 0; i < nin; i++)
        nar[i] = (g->vals[g->inputs[i]].sym & 1) ? kn_slice(fresh[i], 0, 0, b - 1, 1) : fresh[i];
    int ne = fn(user, nar, nin, want, 16);
    int ng = ne > 0 ? kn_graph_run(g, nar, nin, got, 16) : ne;
    kn_status st = ne < 0 ? ne : ng < 0 ? ng : KN_OK;
    for (int i = 0; st == KN_OK && i < ne && i < ng; i++) {
        double worst = 0;
        if (!close_enough(got[i], want[i], &worst)) {
            char what[300];
            snprintf(what, sizeof what,
                     "at batch %lld (one row fewer) output %d differs from eager (by %g): a value "
                     "computed on the host from the batch size was baked into the trace (e.g. "
                     "1.0 / kn_tensor_dim(x, 0)); compute it with ops, or trace with static_batch",
                     (long long)(b - 1), i, worst);
            st = refuse(g, what);
        }
    }
    kn_scope_end(sc);
    return st;
}

kn_status kn_trace_check(kn_graph *g, kn_traced_fn fn, void *user, kn_tensor *const *fresh,
                         int nin) {
    if (!g || !fn) return kn__err(KN_EINVAL, "trace_check: NULL argument");
    if (nin != g->ninputs)
        return kn__err(KN_EINVAL, "trace_check: %d inputs for a graph with %d", nin, g->ninputs);
    const kn_graph *as_traced = g->traced ? g->traced : g;
    kn_tensor *eager[16];
    int ne = 0;
    /* the re-trace only provides the op sequence and eager outputs to compare with: static
     * shapes (a symbolic graph's batch handling is checked by running it, here and below) */
    kn_trace_opts o = {.static_batch = true};
    kn_graph *g2 = kn__trace_outputs(fn, user, fresh, nin, &o, eager, &ne);
    if (!g2) return kn_last_status();
    kn_status st = compare_traces(as_traced, g2);
    kn_graph_free(g2);
    kn_tensor *got[16] = {0};
    int ng = st == KN_OK ? kn_graph_run(g, fresh, nin, got, 16) : 0;
    if (st == KN_OK && ng < 0) st = ng;
    for (int i = 0; st == KN_OK && i < ng && i < ne; i++) {
        double worst = 0;
        if (!close_enough(got[i], eager[i], &worst)) {
            char what[200];
            snprintf(what, sizeof what, "output %d of the graph differs from eager (by %g)", i,
                     worst);
            st = refuse(g, what);
        }
    }
    for (int i = 0; i < ne; i++)
        kn_tensor_free(eager[i]);
    if (!kn__scope_active())
        for (int i = 0; i < ng; i++)
            kn_tensor_free(got[i]);
    if (st == KN_OK && g->batch > 0) st = check_other_batch(g, fn, user, fresh, nin);
    return st;
}
