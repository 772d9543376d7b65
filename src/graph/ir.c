/*
 * ir.c - the graph IR: building, copying, rewriting uses, compaction, shape inference for a bound
 * batch size (through each op's own infer function), and the introspection API.
 */
#include <stdarg.h>
#include <stdlib.h>

#include "graph/graph_impl.h"

kn_graph *kn__g_new(void) {
    kn_graph *g = kn__calloc(1, sizeof *g);
    return g;
}

static bool grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *q = kn__realloc(*p, (size_t)nc * elem);
    if (!q) return false;
    memset((char *)q + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
    *p = q;
    *cap = nc;
    return true;
}

int kn__g_add_value(kn_graph *g, int kind, kn_dtype dt, int ndim, const int64_t *shape) {
    if (!grow((void **)&g->vals, &g->cap_vals, g->nvals + 1, sizeof *g->vals)) return -1;
    kn_gval *v = &g->vals[g->nvals];
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->dtype = dt;
    v->ndim = ndim;
    if (ndim) memcpy(v->shape, shape, sizeof(int64_t) * (size_t)ndim);
    v->node = -1;
    return g->nvals++;
}

int kn__g_add_node(kn_graph *g, const kn_opdef *op, const int *in, int nin, const kn_attrs *at,
                   int nout) {
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->nnodes + 1, sizeof *g->nodes)) return -1;
    kn_gnode *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->nin = nin;
    n->nout = nout;
    n->epilogue_of = -1;
    if (!(n->in = kn__malloc(sizeof(int) * (size_t)(nin > 0 ? nin : 1)))) return -1;
    if (nin) memcpy(n->in, in, sizeof(int) * (size_t)nin);
    if (at) n->attrs = *at;
    for (int o = 0; o < KN_MAX_OUTS; o++)
        n->out[o] = -1;
    return g->nnodes++;
}

int kn__g_add_weight(kn_graph *g, const char *name, kn_tensor *t, bool constant) {
    int v = kn__g_add_value(g, GV_WEIGHT, t->dtype, t->ndim, t->shape);
    if (v < 0) return -1;
    size_t len = strlen(name) + 1;
    if (!(g->vals[v].name = kn__malloc(len))) return -1;
    memcpy(g->vals[v].name, name, len);
    g->vals[v].data = kn_tensor_retain(t);
    g->vals[v].constant = constant;
    return v;
}

kn_status kn__g_freeze_input(kn_graph *g, int k, kn_tensor *t) {
    if (k < 0 || k >= g->ninputs || g->compiled)
        return kn__err(KN_EMISUSE, "graph: cannot freeze input %d", k);
    kn_gval *v = &g->vals[g->inputs[k]];
    if (v->dtype != t->dtype || v->ndim != t->ndim ||
        memcmp(v->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim))
        return kn__err(KN_ESHAPE, "graph: frozen value of input '%s' has another shape", v->name);
    v->kind = GV_WEIGHT;
    v->data = kn_tensor_retain(t);
    v->constant = true;
    v->sym = 0;
    memmove(g->inputs + k, g->inputs + k + 1, sizeof(int) * (size_t)(g->ninputs - k - 1));
    g->ninputs--;
    return KN_OK;
}

/* a positive multiple k * b of b whose counterpart at b2 is k * b2 */
static bool proportional(int64_t v, int64_t v2, int64_t b, int64_t b2) {
    return v > 0 && v % b == 0 && v2 == v / b * b2;
}

kn_status kn__g_symbolic_from(kn_graph *g, const kn_graph *h, int64_t b, int64_t b2) {
    if (g->nnodes != h->nnodes || g->nvals != h->nvals || g->ninputs != h->ninputs ||
        g->noutputs != h->noutputs || b < 1 || b2 < 1 || b == b2)
        return kn__err(KN_ESHAPE,
                       "symbolic batch: the traces at batch %lld and %lld differ in "
                       "structure",
                       (long long)b, (long long)b2);
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i], *m = &h->nodes[i];
        if (n->op != m->op || n->nin != m->nin || n->nout != m->nout ||
            memcmp(n->in, m->in, sizeof(int) * (size_t)n->nin) ||
            memcmp(n->out, m->out, sizeof(int) * (size_t)n->nout) || n->attrs.n != m->attrs.n)
            return kn__err(KN_ESHAPE,
                           "symbolic batch: node %d (%s) differs between batch %lld "
                           "and %lld",
                           i, kn__g_node_name(n), (long long)b, (long long)b2);
    }
    for (int v = 0; v < g->nvals; v++) {
        const kn_gval *x = &g->vals[v], *y = &h->vals[v];
        if (x->kind != y->kind || x->dtype != y->dtype || x->ndim != y->ndim)
            return kn__err(KN_ESHAPE, "symbolic batch: value %d differs", v);
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d] && !proportional(x->shape[d], y->shape[d], b, b2))
                return kn__err(KN_ESHAPE,
                               "symbolic batch: dim %d of value %d is %lld at batch %lld and "
                               "%lld at %lld",
                               d, v, (long long)x->shape[d], (long long)b, (long long)y->shape[d],
                               (long long)b2);
        if (x->kind == GV_WEIGHT) {
            /* by value: a constant may be a view (a transposed initializer) */
            size_t bytes = (size_t)kn_tensor_numel(x->data) * kn_dtype_size(x->dtype);
            kn_tensor *cx = kn__contig(x->data), *cy = kn__contig(y->data);
            bool same = cx && cy && kn_tensor_numel(cx) == kn_tensor_numel(cy) &&
                        !memcmp(kn__ptr(cx), kn__ptr(cy), bytes);
            kn_tensor_free(cx);
            kn_tensor_free(cy);
            if (!same)
                return kn__err(KN_ESHAPE, "symbolic batch: constant '%s' depends on the batch",
                               x->name ? x->name : "?");
        }
    }
    /* everything matched: mark the attr entries that follow the batch, then the values */
    uint32_t *bits = kn__calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *bits);
    if (!bits) return kn_last_status();
    for (int i = 0; i < g->nnodes; i++) {
        const kn_attrs *p = &g->nodes[i].attrs, *q = &h->nodes[i].attrs;
        for (int a = 0; a < p->n; a++) {
            const kn_attr *x = &p->a[a], *y = &q->a[a];
            bool same_kind = x->kind == y->kind && x->n == y->n && !strcmp(x->name, y->name);
            if (same_kind && x->kind == KN_ATTR_FLOAT && x->f == y->f) continue;
            for (int j = 0; same_kind && x->kind == KN_ATTR_INTS && j < x->n; j++) {
                if (x->ints[j] == y->ints[j]) continue;
                if (a >= 4 || j >= 8 || !proportional(x->ints[j], y->ints[j], b, b2))
                    same_kind = false;
                else
                    bits[i] |= 1u << (8 * a + j);
            }
            if (!same_kind) {
                kn__free(bits);
                return kn__err(KN_ESHAPE,
                               "symbolic batch: attribute '%s' of node %d (%s) "
                               "depends on the batch in a way kiln cannot follow",
                               x->name, i, kn__g_node_name(&g->nodes[i]));
            }
        }
    }
    for (int i = 0; i < g->nnodes; i++)
        g->nodes[i].sym_attr = bits[i];
    kn__free(bits);
    for (int v = 0; v < g->nvals; v++) {
        kn_gval *x = &g->vals[v];
        x->sym = 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != h->vals[v].shape[d]) x->sym |= (uint8_t)(1u << d);
    }
    g->batch = b;
    return KN_OK;
}

static char *dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = kn__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void free_ir(kn_graph *g) {
    for (int i = 0; i < g->nvals; i++) {
        kn__free(g->vals[i].name);
        kn_tensor_free(g->vals[i].data);
    }
    for (int i = 0; i < g->nnodes; i++) {
        kn__free(g->nodes[i].in);
        kn__free(g->nodes[i].mem);
    }
    for (int i = 0; i < g->noutputs; i++)
        kn__free(g->out_names ? g->out_names[i] : NULL);
    kn__free(g->vals);
    kn__free(g->nodes);
    kn__free(g->inputs);
    kn__free(g->outputs);
    kn__free(g->out_names);
}

void kn_graph_free(kn_graph *g) {
    if (!g) return;
    kn__plan_free_all(g);
    free_ir(g);
    kn_graph_free(g->traced);
    kn__free(g->pass_log);
    kn__free(g);
}

kn_graph *kn__g_clone(const kn_graph *s) {
    kn_graph *g = kn__g_new();
    if (!g) return NULL;
    g->batch = s->batch;
    g->host_reads = s->host_reads;
    memcpy(g->first_read, s->first_read, sizeof g->first_read);
    g->vals = kn__calloc((size_t)(s->nvals ? s->nvals : 1), sizeof *g->vals);
    g->nodes = kn__calloc((size_t)(s->nnodes ? s->nnodes : 1), sizeof *g->nodes);
    g->inputs = kn__calloc((size_t)(s->ninputs ? s->ninputs : 1), sizeof(int));
    g->outputs = kn__calloc((size_t)(s->noutputs ? s->noutputs : 1), sizeof(int));
    g->out_names = kn__calloc((size_t)(s->noutputs ? s->noutputs : 1), sizeof(char *));
    if (!g->vals || !g->nodes || !g->inputs || !g->outputs || !g->out_names) goto fail;
    g->cap_vals = g->nvals = s->nvals;
    g->cap_nodes = s->nnodes ? s->nnodes : 1;
    for (int i = 0; i < s->nvals; i++) {
        g->vals[i] = s->vals[i];
        g->vals[i].name = NULL;
        g->vals[i].data = kn_tensor_retain(s->vals[i].data);
        if (s->vals[i].name && !(g->vals[i].name = dup_str(s->vals[i].name))) goto fail;
    }
    for (int i = 0; i < s->nnodes; i++) {
        g->nodes[i] = s->nodes[i];
        g->nodes[i].in = NULL;
        g->nodes[i].mem = NULL;
        g->nnodes = i + 1;
        if (!(g->nodes[i].in = kn__malloc(sizeof(int) * (size_t)(s->nodes[i].nin + 1)))) goto fail;
        memcpy(g->nodes[i].in, s->nodes[i].in, sizeof(int) * (size_t)s->nodes[i].nin);
        if (s->nodes[i].nmem) {
            size_t nb = sizeof(kn_gmember) * (size_t)s->nodes[i].nmem;
            if (!(g->nodes[i].mem = kn__malloc(nb))) goto fail;
            memcpy(g->nodes[i].mem, s->nodes[i].mem, nb);
        }
    }
    g->ninputs = s->ninputs;
    memcpy(g->inputs, s->inputs, sizeof(int) * (size_t)s->ninputs);
    g->noutputs = s->noutputs;
    memcpy(g->outputs, s->outputs, sizeof(int) * (size_t)s->noutputs);
    for (int i = 0; i < s->noutputs; i++)
        if (!(g->out_names[i] = dup_str(s->out_names[i]))) goto fail;
    return g;
fail:
    kn_graph_free(g);
    return NULL;
}

void kn__g_replace(kn_graph *g, int from, int to) {
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            if (g->nodes[i].in[j] == from) g->nodes[i].in[j] = to;
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == from) g->outputs[i] = to;
}

bool kn__g_is_output(const kn_graph *g, int v) {
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == v) return true;
    return false;
}

int *kn__g_uses(const kn_graph *g) {
    int *u = kn__calloc((size_t)(g->nvals ? g->nvals : 1), sizeof(int));
    if (!u) return NULL;
    for (int i = 0; i < g->nnodes; i++)
        if (!g->nodes[i].dead)
            for (int j = 0; j < g->nodes[i].nin; j++)
                u[g->nodes[i].in[j]]++;
    for (int i = 0; i < g->noutputs; i++)
        u[g->outputs[i]]++;
    return u;
}

kn_status kn__g_compact(kn_graph *g) {
    int *keep = kn__calloc((size_t)(g->nvals ? g->nvals : 1), sizeof(int));
    int *nmap = kn__calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof(int));
    if (!keep || !nmap) {
        kn__free(keep);
        kn__free(nmap);
        return kn_last_status();
    }
    for (int i = 0; i < g->ninputs; i++)
        keep[g->inputs[i]] = 1;
    for (int i = 0; i < g->noutputs; i++)
        keep[g->outputs[i]] = 1;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].dead) continue;
        for (int j = 0; j < g->nodes[i].nin; j++)
            keep[g->nodes[i].in[j]] = 1;
        for (int o = 0; o < g->nodes[i].nout; o++)
            keep[g->nodes[i].out[o]] = 1;
    }
    /* renumber values */
    int nv = 0;
    for (int v = 0; v < g->nvals; v++) {
        if (!keep[v]) {
            kn__free(g->vals[v].name);
            kn_tensor_free(g->vals[v].data);
            keep[v] = -1;
            continue;
        }
        g->vals[nv] = g->vals[v];
        keep[v] = nv++;
    }
    g->nvals = nv;
    int nn = 0;
    for (int i = 0; i < g->nnodes; i++) {
        kn_gnode *n = &g->nodes[i];
        if (n->dead) {
            kn__free(n->in);
            kn__free(n->mem);
            nmap[i] = -1;
            continue;
        }
        nmap[i] = nn;
        g->nodes[nn++] = *n;
    }
    g->nnodes = nn;
    for (int i = 0; i < nn; i++) {
        kn_gnode *n = &g->nodes[i];
        for (int j = 0; j < n->nin; j++)
            n->in[j] = keep[n->in[j]];
        for (int o = 0; o < n->nout; o++) {
            n->out[o] = keep[n->out[o]];
            g->vals[n->out[o]].node = i;
            g->vals[n->out[o]].out_index = o;
        }
        if (n->epilogue_of >= 0) n->epilogue_of = nmap[n->epilogue_of];
    }
    for (int i = 0; i < g->ninputs; i++)
        g->inputs[i] = keep[g->inputs[i]];
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i] = keep[g->outputs[i]];
    kn__free(keep);
    kn__free(nmap);
    return KN_OK;
}

void kn__g_bind_attrs(const kn_gnode *n, int64_t batch, int64_t traced_batch, kn_attrs *out) {
    *out = n->attrs;
    if (!n->sym_attr || batch <= 0 || batch == traced_batch) return;
    for (int a = 0; a < out->n && a < 4; a++)
        for (int j = 0; j < 8 && j < out->a[a].n; j++)
            if (n->sym_attr & (1u << (8 * a + j)))
                out->a[a].ints[j] = n->attrs.a[a].ints[j] / traced_batch * batch;
}

const char *kn__g_node_name(const kn_gnode *n) {
    return n->op ? n->op->name : "fused";
}

/* A header with a shape and dtype but no storage: what infer functions look at. */
static void fake_tensor(kn_tensor *t, kn_dtype dt, int ndim, const int64_t *shape) {
    memset(t, 0, sizeof *t);
    t->refcount = 1;
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    kn__contiguous_strides(ndim, shape, t->strides);
}

/* Output shape of a fused group: its members inferred in turn. */
static kn_status infer_group(const kn_gnode *n, kn_tensor *ext, kn_opctx *res) {
    kn_tensor *mt = kn__calloc((size_t)n->nmem, sizeof(kn_tensor));
    if (!mt) return kn_last_status();
    kn_status st = KN_OK;
    for (int k = 0; k < n->nmem && st == KN_OK; k++) {
        const kn_gmember *m = &n->mem[k];
        kn_tensor *ins[4];
        for (int j = 0; j < m->nin; j++)
            ins[j] = m->in[j] >= 0 ? &ext[m->in[j]] : &mt[-1 - m->in[j]];
        kn_opctx c;
        memset(&c, 0, sizeof c);
        c.op = m->op;
        c.nin = m->nin;
        c.in = ins;
        c.attrs = &m->attrs;
        c.nout = 1;
        if ((st = m->op->infer(&c)) == KN_OK) {
            fake_tensor(&mt[k], c.out_dtype[0], c.out_ndim[0], c.out_shape[0]);
            if (k == n->nmem - 1) *res = c;
        }
    }
    kn__free(mt);
    return st;
}

kn_status kn__g_infer(const kn_graph *g, int64_t batch, int64_t (*shapes)[KN_MAX_DIMS],
                      int *ndims) {
    for (int v = 0; v < g->nvals; v++) {
        const kn_gval *gv = &g->vals[v];
        if (gv->kind == GV_NODE) continue;
        ndims[v] = gv->ndim;
        memcpy(shapes[v], gv->shape, sizeof gv->shape);
        if (gv->kind == GV_INPUT && batch > 0 && (gv->sym & 1)) shapes[v][0] = batch;
    }
    kn_tensor ins[KN_MAX_INS];
    kn_tensor *inp[KN_MAX_INS];
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i];
        if (n->dead) continue;
        if (n->nin > KN_MAX_INS) return kn__err(KN_ELIMIT, "graph: node %d has too many inputs", i);
        for (int j = 0; j < n->nin; j++) {
            int v = n->in[j];
            fake_tensor(&ins[j], g->vals[v].dtype, ndims[v], shapes[v]);
            inp[j] = &ins[j];
        }
        kn_opctx c;
        memset(&c, 0, sizeof c);
        kn_attrs at;
        kn__g_bind_attrs(n, batch, g->batch, &at);
        kn_status st;
        if (n->op) {
            c.op = n->op;
            c.nin = n->nin;
            c.in = inp;
            c.attrs = &at;
            c.nout = n->op->nout;
            st = n->op->infer(&c);
        } else {
            st = infer_group(n, ins, &c);
        }
        if (st != KN_OK) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            return kn__err(st, "graph: node %d (%s) for batch %lld: %s", i, kn__g_node_name(n),
                           (long long)batch, msg);
        }
        for (int o = 0; o < n->nout; o++) {
            int v = n->out[o];
            ndims[v] = c.out_ndim[o];
            memcpy(shapes[v], c.out_shape[o], sizeof shapes[v]);
            if (c.out_dtype[o] != g->vals[v].dtype)
                return kn__err(KN_EINTERNAL, "graph: node %d (%s) changes dtype", i,
                               kn__g_node_name(n));
        }
    }
    return KN_OK;
}

void kn__g_log(kn_graph *g, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    if (g->pass_log_len + (size_t)n + 1 > g->pass_log_cap) {
        size_t nc = (g->pass_log_cap ? g->pass_log_cap * 2 : 1024) + (size_t)n;
        char *p = kn__realloc(g->pass_log, nc);
        if (!p) return;
        g->pass_log = p;
        g->pass_log_cap = nc;
    }
    memcpy(g->pass_log + g->pass_log_len, line, (size_t)n + 1);
    g->pass_log_len += (size_t)n;
}

/* ---- introspection ---- */
int kn_graph_num_inputs(const kn_graph *g) {
    return g ? g->ninputs : -1;
}
int kn_graph_num_outputs(const kn_graph *g) {
    return g ? g->noutputs : -1;
}
int kn_graph_host_reads(const kn_graph *g) {
    return g ? g->host_reads : -1;
}

static void sig_of(const kn_graph *g, int v, const char *name, kn_graph_sig *out) {
    const kn_gval *gv = &g->vals[v];
    out->name = name;
    out->dtype = gv->dtype;
    out->ndim = gv->ndim;
    for (int d = 0; d < gv->ndim; d++)
        out->shape[d] = (gv->sym >> d) & 1 ? -1 : gv->shape[d];
}

kn_status kn_graph_input(const kn_graph *g, int i, kn_graph_sig *out) {
    if (!g || !out || i < 0 || i >= g->ninputs)
        return kn__err(KN_EINVAL, "graph_input: no input %d", i);
    sig_of(g, g->inputs[i], g->vals[g->inputs[i]].name, out);
    return KN_OK;
}
kn_status kn_graph_output(const kn_graph *g, int i, kn_graph_sig *out) {
    if (!g || !out || i < 0 || i >= g->noutputs)
        return kn__err(KN_EINVAL, "graph_output: no output %d", i);
    sig_of(g, g->outputs[i], g->out_names[i], out);
    return KN_OK;
}

static kn_status ensure_compiled(kn_graph *g) {
    return g->compiled ? KN_OK : kn_graph_compile(g, NULL);
}

kn_status kn_graph_stats_get(kn_graph *g, kn_graph_stats *out) {
    if (!g || !out) return kn__err(KN_EINVAL, "graph_stats: NULL argument");
    kn_status st = ensure_compiled(g);
    if (st) return st;
    memset(out, 0, sizeof *out);
    out->traced_nodes = g->traced_nodes;
    for (int i = 0; i < g->nnodes; i++) {
        out->nodes++;
        if (!g->nodes[i].op) out->fused_groups++;
    }
    /* the model's own weights (as traced): folded or packed copies are compile artifacts */
    const kn_graph *t = g->traced ? g->traced : g;
    for (int v = 0; v < t->nvals; v++) {
        if (t->vals[v].kind != GV_WEIGHT) continue;
        out->weights++;
        int64_t n = kn__numel(t->vals[v].ndim, t->vals[v].shape);
        out->weight_params += n;
        out->weight_bytes += n * (int64_t)kn_dtype_size(t->vals[v].dtype);
    }
    out->plans_built = g->plans_built;
    out->arena_bytes = g->last_arena;
    return KN_OK;
}

int64_t kn_graph_arena_bytes(kn_graph *g, int64_t batch) {
    if (!g) return kn__err(KN_EINVAL, "graph_arena_bytes: NULL graph");
    kn_status st = ensure_compiled(g);
    if (st) return st;
    kn_plan *p = kn__plan_get(g, batch);
    return p ? kn__plan_arena(p) : kn_last_status();
}

static void print_sig(FILE *f, const kn_graph_sig *s) {
    fprintf(f, "  %-16s %-8s (", s->name ? s->name : "?", kn_dtype_name(s->dtype));
    for (int d = 0; d < s->ndim; d++) {
        if (s->shape[d] < 0)
            fprintf(f, "%sbatch", d ? ", " : "");
        else
            fprintf(f, "%s%lld", d ? ", " : "", (long long)s->shape[d]);
    }
    fprintf(f, ")\n");
}

static void print_histogram(const kn_graph *g, FILE *f) {
    const char *names[256];
    int counts[256], n = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *nd = &g->nodes[i];
        int k = nd->op ? 1 : nd->nmem;
        for (int m = 0; m < k; m++) {
            const char *nm = nd->op ? nd->op->name : nd->mem[m].op->name;
            int j = 0;
            while (j < n && strcmp(names[j], nm) != 0)
                j++;
            if (j == n && n < 256) names[n] = nm, counts[n++] = 0;
            if (j < n) counts[j]++;
        }
    }
    for (int j = 0; j < n; j++)
        fprintf(f, "  %-24s %d\n", names[j], counts[j]);
}

kn_status kn_graph_print(kn_graph *g, FILE *f, bool plan, int64_t batch) {
    if (!g || !f) return kn__err(KN_EINVAL, "graph_print: NULL argument");
    kn_status st = ensure_compiled(g);
    if (st) return st;
    kn_graph_sig s;
    fprintf(f, "inputs:\n");
    for (int i = 0; i < g->ninputs; i++)
        kn_graph_input(g, i, &s), print_sig(f, &s);
    fprintf(f, "outputs:\n");
    for (int i = 0; i < g->noutputs; i++)
        kn_graph_output(g, i, &s), print_sig(f, &s);
    kn_graph_stats gs;
    kn_graph_stats_get(g, &gs);
    fprintf(f, "weights: %d tensors, %lld parameters, %lld bytes\n", gs.weights,
            (long long)gs.weight_params, (long long)gs.weight_bytes);
    fprintf(f, "nodes: %d traced, %d compiled (%d fused groups)\n", gs.traced_nodes, gs.nodes,
            gs.fused_groups);
    if (g->host_reads)
        fprintf(f, "host reads during trace: %d (first: %s)\n", g->host_reads, g->first_read);
    fprintf(f, "op histogram (compiled, fused members counted):\n");
    print_histogram(g, f);
    kn_plan *p = kn__plan_get(g, batch > 0 ? batch : 1);
    if (!p) return kn_last_status();
    fprintf(f, "arena: %lld bytes at batch %lld\n", (long long)kn__plan_arena(p),
            (long long)(batch > 0 ? batch : 1));
    if (plan) {
        fprintf(f, "passes:\n%s", g->pass_log ? g->pass_log : "");
        kn__plan_print(g, p, f);
    }
    return KN_OK;
}
