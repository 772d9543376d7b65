/*
 * graph_file.c - kn_graph_save / kn_graph_load: a static graph in a .kiln (safetensors) file.
 *
 * The file is an ordinary .kiln file written by kn_save_tensors (atomic). Every weight value of
 * the graph is a tensor named by the weight's name (made unique with ".1", ".2", ... when two
 * collide; a loaded graph's weights carry the file's names). "__metadata__" holds, all strings:
 *   "kiln.format"      "graph"
 *   "kiln.graph"       JSON text of the IR as traced (below)
 *   "kiln.arena_bytes" the memory plan's arena at batch 1 (informational, not read back)
 *   "kiln.provenance"  JSON text {"kiln_version", "saved_utc", "host"}
 * kiln.graph: {"version": 1, "batch": B (0: static), "host_reads": n, "first_read": "...",
 *   "inputs":  [{"name", "value", "dtype", "shape" (-1 for the batch dim)}],
 *   "outputs": [{"name", "value"}],
 *   "values":  [{"kind": "input"|"weight"|"node", "dtype", "shape" (as traced), "sym",
 *                "name" (input, weight), "constant" (weight), "node", "out_index" (node)}],
 *   "nodes":   [{"op", "inputs": [value ids], "nout", "outs": [value ids],
 *                "attrs": [{"name", "kind": "ints", "ints": [..]} | {"name", "kind": "float",
 *                "f": x}], "sym_attr"}]}
 * dtypes are kiln's names ("float32"). Float attrs are written with 17 significant digits (an
 * exact round trip; "inf", "-inf", "nan" as strings). The graph saved is always the graph as
 * traced (the passes are re-run on load, so a file never holds a fused group).
 *
 * Loading treats the file as hostile: every count is bounded, every id range checked, values
 * are defined before use (node order is topological), each node's outputs point back at it, each
 * node's op infers exactly the stored output dtypes and shapes from the stored input shapes and
 * attrs, the symbolic-batch marks match a re-inference at batch + 1, and every weight is in the
 * file with the declared dtype and shape. Any violation gives NULL with KN_EFORMAT and a message
 * "<path>: graph: <field>: <problem>". Only then can the graph reach kernels.
 *
 * Not here: the container (safetensors.c), the IR and its passes (src/graph/).
 */
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "graph/graph_impl.h"
#include "io/io_impl.h"

#define GF_VERSION 1
#define GF_MAX_VALUES (1 << 20)
#define GF_MAX_NODES (1 << 20)
#define GF_MAX_IO 64 /* inputs and outputs each (kn_graph_run handles 64 outputs) */
#define GF_MAX_NAME 1024
#define GF_MAX_BATCH ((int64_t)1 << 31)
#define GF_JSON_DEPTH 32

static const char *kind_name(int k) {
    return k == GV_INPUT ? "input" : k == GV_WEIGHT ? "weight" : k == GV_NODE ? "node" : "?";
}

/* ---- saving ---- */
typedef struct jb {
    bool ok;
} jb;

/* Adds v under key k of o (v is consumed either way). */
static void put(jb *b, json_object *o, const char *k, json_object *v) {
    if (!b->ok || !v || !o || json_object_object_add(o, k, v)) {
        json_object_put(v);
        b->ok = false;
    }
}
static void push(jb *b, json_object *a, json_object *v) {
    if (!b->ok || !v || !a || json_object_array_add(a, v)) {
        json_object_put(v);
        b->ok = false;
    }
}

static json_object *shape_json(jb *b, int ndim, const int64_t *shape, uint8_t sym) {
    json_object *a = json_object_new_array();
    for (int d = 0; d < ndim; d++)
        push(b, a, json_object_new_int64((sym >> d) & 1 ? -1 : shape[d]));
    return a;
}

/* A double that reads back bit for bit (strtod of 17 significant digits is exact). */
static json_object *double_json(double f) {
    if (isnan(f)) return json_object_new_string("nan");
    if (isinf(f)) return json_object_new_string(f > 0 ? "inf" : "-inf");
    char s[48];
    snprintf(s, sizeof s, "%.17g", f);
    if (!strpbrk(s, ".eE")) strcat(s, ".0"); /* stays a JSON double ("-0" -> "-0.0") */
    return json_object_new_double_s(f, s);
}

static json_object *attrs_json(jb *b, const kn_attrs *at) {
    json_object *a = json_object_new_array();
    for (int k = 0; k < at->n && k < KN_MAX_ATTRS; k++) {
        const kn_attr *x = &at->a[k];
        json_object *o = json_object_new_object();
        put(b, o, "name", json_object_new_string(x->name));
        if (x->kind == KN_ATTR_FLOAT) {
            put(b, o, "kind", json_object_new_string("float"));
            put(b, o, "f", double_json(x->f));
        } else {
            put(b, o, "kind", json_object_new_string("ints"));
            json_object *v = json_object_new_array();
            for (int j = 0; j < x->n && j < KN_MAX_ATTR_INTS; j++)
                push(b, v, json_object_new_int64(x->ints[j]));
            put(b, o, "ints", v);
        }
        push(b, a, o);
    }
    return a;
}

static json_object *graph_json(jb *b, const kn_graph *g, char *const *wname) {
    json_object *r = json_object_new_object();
    put(b, r, "version", json_object_new_int(GF_VERSION));
    put(b, r, "batch", json_object_new_int64(g->batch));
    put(b, r, "host_reads", json_object_new_int(g->host_reads));
    if (g->host_reads) put(b, r, "first_read", json_object_new_string(g->first_read));
    json_object *ins = json_object_new_array();
    for (int i = 0; i < g->ninputs; i++) {
        const kn_gval *v = &g->vals[g->inputs[i]];
        json_object *o = json_object_new_object();
        put(b, o, "name", json_object_new_string(v->name ? v->name : ""));
        put(b, o, "value", json_object_new_int(g->inputs[i]));
        put(b, o, "dtype", json_object_new_string(kn_dtype_name(v->dtype)));
        put(b, o, "shape", shape_json(b, v->ndim, v->shape, v->sym));
        push(b, ins, o);
    }
    put(b, r, "inputs", ins);
    json_object *outs = json_object_new_array();
    for (int i = 0; i < g->noutputs; i++) {
        json_object *o = json_object_new_object();
        put(b, o, "name", json_object_new_string(g->out_names[i] ? g->out_names[i] : ""));
        put(b, o, "value", json_object_new_int(g->outputs[i]));
        push(b, outs, o);
    }
    put(b, r, "outputs", outs);
    json_object *vals = json_object_new_array();
    for (int i = 0; i < g->nvals; i++) {
        const kn_gval *v = &g->vals[i];
        json_object *o = json_object_new_object();
        put(b, o, "kind", json_object_new_string(kind_name(v->kind)));
        put(b, o, "dtype", json_object_new_string(kn_dtype_name(v->dtype)));
        put(b, o, "shape", shape_json(b, v->ndim, v->shape, 0));
        put(b, o, "sym", json_object_new_int(v->sym));
        if (v->kind == GV_NODE) {
            put(b, o, "node", json_object_new_int(v->node));
            put(b, o, "out_index", json_object_new_int(v->out_index));
        } else {
            const char *nm = v->kind == GV_WEIGHT ? wname[i] : v->name;
            put(b, o, "name", json_object_new_string(nm ? nm : ""));
        }
        if (v->kind == GV_WEIGHT) put(b, o, "constant", json_object_new_boolean(v->constant));
        push(b, vals, o);
    }
    put(b, r, "values", vals);
    json_object *nodes = json_object_new_array();
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i];
        json_object *o = json_object_new_object();
        put(b, o, "op", json_object_new_string(n->op->name));
        json_object *in = json_object_new_array();
        for (int j = 0; j < n->nin; j++)
            push(b, in, json_object_new_int(n->in[j]));
        put(b, o, "inputs", in);
        put(b, o, "nout", json_object_new_int(n->nout));
        json_object *ou = json_object_new_array();
        for (int k = 0; k < n->nout; k++)
            push(b, ou, json_object_new_int(n->out[k]));
        put(b, o, "outs", ou);
        put(b, o, "attrs", attrs_json(b, &n->attrs));
        put(b, o, "sym_attr", json_object_new_int64(n->sym_attr));
        push(b, nodes, o);
    }
    put(b, r, "nodes", nodes);
    return r;
}

static json_object *provenance_json(jb *b) {
    char host[256] = "unknown", when[32] = "unknown";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++) /* keep the metadata plain ASCII */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object *o = json_object_new_object();
    put(b, o, "kiln_version", json_object_new_string(KN_VERSION_STRING));
    put(b, o, "saved_utc", json_object_new_string(when));
    put(b, o, "host", json_object_new_string(host));
    return o;
}

static const char *to_text(json_object *o) {
    return json_object_to_json_string_ext(o,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

static bool name_taken(char *const *names, int upto, const char *s) {
    if (strcmp(s, "__metadata__") == 0) return true;
    for (int i = 0; i < upto; i++)
        if (names[i] && strcmp(names[i], s) == 0) return true;
    return false;
}

kn_status kn_graph_save(kn_graph *g, const char *path) {
    if (!g || !path) return kn__err(KN_EINVAL, "graph_save: NULL %s", g ? "path" : "graph");
    /* first: this compiles g when needed, which is also what creates g->traced */
    int64_t arena = kn_graph_arena_bytes(g, 1);
    if (arena < 0) return (kn_status)arena;
    const kn_graph *s = g->traced ? g->traced : g;
    for (int i = 0; i < s->nnodes; i++)
        if (!s->nodes[i].op || s->nodes[i].dead)
            return kn__err(KN_EINTERNAL, "graph_save: node %d of the traced graph is %s", i,
                           s->nodes[i].op ? "dead" : "a fused group");
    kn_status st = KN_OK;
    char **wname = kn__calloc((size_t)(s->nvals ? s->nvals : 1), sizeof(char *));
    kn_named_tensor *ts = kn__calloc((size_t)(s->nvals ? s->nvals : 1), sizeof *ts);
    json_object *graph = NULL, *prov = NULL, *meta = NULL;
    int nt = 0;
    if (!wname || !ts) goto nomem;
    for (int v = 0; v < s->nvals; v++) {
        const kn_gval *gv = &s->vals[v];
        if (gv->kind != GV_WEIGHT) continue;
        if (!gv->data) {
            st = kn__err(KN_EINTERNAL, "graph_save: weight value %d has no tensor", v);
            goto done;
        }
        const char *base = gv->name && *gv->name ? gv->name : "weight";
        size_t len = strlen(base) + 24;
        if (!(wname[v] = kn__malloc(len))) goto nomem;
        snprintf(wname[v], len, "%s", base);
        for (int k = 1; name_taken(wname, v, wname[v]); k++)
            snprintf(wname[v], len, "%s.%d", base, k);
        ts[nt++] = (kn_named_tensor){wname[v], gv->data};
    }
    jb b = {.ok = true};
    graph = graph_json(&b, s, wname);
    prov = provenance_json(&b);
    meta = json_object_new_object();
    char arena_txt[32];
    snprintf(arena_txt, sizeof arena_txt, "%lld", (long long)arena);
    put(&b, meta, "kiln.format", json_object_new_string("graph"));
    put(&b, meta, "kiln.graph", b.ok ? json_object_new_string(to_text(graph)) : NULL);
    put(&b, meta, "kiln.arena_bytes", json_object_new_string(arena_txt));
    put(&b, meta, "kiln.provenance", b.ok ? json_object_new_string(to_text(prov)) : NULL);
    const char *text = b.ok ? to_text(meta) : NULL;
    if (!text) goto nomem;
    st = kn_save_tensors(path, ts, nt, text);
    goto done;
nomem:
    st = kn_last_status() == KN_ENOMEM
             ? KN_ENOMEM
             : kn__err(KN_ENOMEM, "%s: out of memory saving a graph", path);
done:
    for (int v = 0; wname && v < s->nvals; v++)
        kn__free(wname[v]);
    kn__free(wname);
    kn__free(ts);
    json_object_put(graph);
    json_object_put(prov);
    json_object_put(meta);
    return st;
}

/* ---- loading ---- */
typedef struct ld {
    const char *path;
    kn_file *f;
    kn_graph *g;
    int nnodes_decl; /* length of "nodes" */
} ld;

static kn_status bad(const ld *l, const char *fmt, ...) KN_PRINTF(2, 3);
static kn_status bad(const ld *l, const char *fmt, ...) {
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kn__err(KN_EFORMAT, "%s: graph: %s", l->path, msg);
}

/* The field k of o when it has type t, else NULL. */
static json_object *field(json_object *o, const char *k, json_type t) {
    json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, t)) return NULL;
    return v;
}

static kn_status get_int(const ld *l, json_object *o, const char *what, const char *k, int64_t lo,
                         int64_t hi, int64_t *out) {
    json_object *v = field(o, k, json_type_int);
    if (!v) return bad(l, "%s.%s: missing or not an integer", what, k);
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return bad(l, "%s.%s: %lld out of range [%lld, %lld]", what, k, (long long)x, (long long)lo,
                   (long long)hi);
    *out = x;
    return KN_OK;
}

static bool valid_name(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

static kn_status get_name(const ld *l, json_object *o, const char *what, const char *k, size_t max,
                          const char **out) {
    json_object *v = field(o, k, json_type_string);
    if (!v) return bad(l, "%s.%s: missing or not a string", what, k);
    const char *s = json_object_get_string(v);
    if (!valid_name(s, max))
        return bad(l, "%s.%s: '%.40s' is not a valid name (1 to %zu printable characters)", what, k,
                   s, max);
    *out = s;
    return KN_OK;
}

static kn_status get_dtype(const ld *l, json_object *o, const char *what, kn_dtype *out) {
    json_object *v = field(o, "dtype", json_type_string);
    if (!v) return bad(l, "%s.dtype: missing or not a string", what);
    const char *s = json_object_get_string(v);
    for (int d = 0; d < KN_NDTYPES; d++)
        if (strcmp(s, kn_dtype_name((kn_dtype)d)) == 0) {
            *out = (kn_dtype)d;
            return KN_OK;
        }
    return bad(l, "%s.dtype: unknown dtype '%.40s'", what, s);
}

/* A shape: <= KN_MAX_DIMS entries, each >= 0 (or -1 when allow_sym), byte size <= 2^48. */
static kn_status get_shape(const ld *l, json_object *o, const char *what, kn_dtype dt,
                           bool allow_sym, int *ndim, int64_t *shape) {
    json_object *a = field(o, "shape", json_type_array);
    if (!a) return bad(l, "%s.shape: missing or not an array", what);
    size_t nd = json_object_array_length(a);
    if (nd > KN_MAX_DIMS)
        return bad(l, "%s.shape: %zu dims (kiln supports at most %d)", what, nd, KN_MAX_DIMS);
    size_t bytes = kn_dtype_size(dt);
    for (size_t d = 0; d < nd; d++) {
        json_object *x = json_object_array_get_idx(a, d);
        if (!json_object_is_type(x, json_type_int))
            return bad(l, "%s.shape[%zu]: not an integer", what, d);
        int64_t s = json_object_get_int64(x);
        if (s < (allow_sym ? -1 : 0))
            return bad(l, "%s.shape[%zu]: %lld is negative", what, d, (long long)s);
        shape[d] = s;
        if (s > 0 && (!kn__mul_ok(bytes, (size_t)s, &bytes) || bytes > ((size_t)1 << 48)))
            return bad(l, "%s.shape: too large", what);
    }
    *ndim = (int)nd;
    return KN_OK;
}

static kn_status parse_attrs(const ld *l, json_object *o, const char *what, kn_attrs *at) {
    memset(at, 0, sizeof *at);
    json_object *a = field(o, "attrs", json_type_array);
    if (!a) return bad(l, "%s.attrs: missing or not an array", what);
    size_t n = json_object_array_length(a);
    if (n > KN_MAX_ATTRS) return bad(l, "%s.attrs: %zu entries (max %d)", what, n, KN_MAX_ATTRS);
    for (size_t k = 0; k < n; k++) {
        char w[160];
        snprintf(w, sizeof w, "%s.attrs[%zu]", what, k);
        json_object *e = json_object_array_get_idx(a, k);
        if (!json_object_is_type(e, json_type_object)) return bad(l, "%s: not an object", w);
        kn_attr *x = &at->a[k];
        const char *name, *kind;
        kn_status st = get_name(l, e, w, "name", sizeof x->name - 1, &name);
        if (st) return st;
        for (size_t j = 0; j < k; j++)
            if (strcmp(at->a[j].name, name) == 0) return bad(l, "%s: duplicate name '%s'", w, name);
        memcpy(x->name, name, strlen(name) + 1);
        json_object *kv = field(e, "kind", json_type_string);
        kind = kv ? json_object_get_string(kv) : "";
        if (strcmp(kind, "ints") == 0) {
            json_object *iv = field(e, "ints", json_type_array);
            if (!iv) return bad(l, "%s.ints: missing or not an array", w);
            size_t m = json_object_array_length(iv);
            if (m > KN_MAX_ATTR_INTS)
                return bad(l, "%s.ints: %zu values (max %d)", w, m, KN_MAX_ATTR_INTS);
            for (size_t j = 0; j < m; j++) {
                json_object *x1 = json_object_array_get_idx(iv, j);
                if (!json_object_is_type(x1, json_type_int))
                    return bad(l, "%s.ints[%zu]: not an integer", w, j);
                x->ints[j] = json_object_get_int64(x1);
            }
            x->kind = KN_ATTR_INTS;
            x->n = (int)m;
        } else if (strcmp(kind, "float") == 0) {
            json_object *fv = NULL;
            json_object_object_get_ex(e, "f", &fv);
            double f;
            if (json_object_is_type(fv, json_type_double) ||
                json_object_is_type(fv, json_type_int)) {
                f = json_object_get_double(fv);
            } else if (json_object_is_type(fv, json_type_string)) {
                const char *s = json_object_get_string(fv);
                if (strcmp(s, "nan") == 0)
                    f = NAN;
                else if (strcmp(s, "inf") == 0)
                    f = INFINITY;
                else if (strcmp(s, "-inf") == 0)
                    f = -INFINITY;
                else
                    return bad(l, "%s.f: '%.40s' is not a number", w, s);
            } else {
                return bad(l, "%s.f: missing or not a number", w);
            }
            x->kind = KN_ATTR_FLOAT;
            x->n = 1;
            x->f = f;
        } else {
            return bad(l, "%s.kind: '%.40s' is neither \"ints\" nor \"float\"", w, kind);
        }
    }
    at->n = (int)n;
    return KN_OK;
}

/* A header with a shape and dtype but no storage, for infer functions. */
static void fake_tensor(kn_tensor *t, const kn_gval *v) {
    memset(t, 0, sizeof *t);
    t->refcount = 1;
    t->dtype = v->dtype;
    t->ndim = v->ndim;
    memcpy(t->shape, v->shape, sizeof t->shape);
    kn__contiguous_strides(v->ndim, v->shape, t->strides);
}

static bool same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int64_t) * (size_t)na) == 0);
}

/* Node i's op, run on the stored input shapes and attrs, must give exactly the stored outputs
 * (the checks the dispatcher makes before infer included). */
static kn_status check_node_infer(const ld *l, int i) {
    const kn_graph *g = l->g;
    const kn_gnode *n = &g->nodes[i];
    kn_tensor ins[KN_MAX_INS];
    kn_tensor *inp[KN_MAX_INS];
    for (int j = 0; j < n->nin; j++) {
        fake_tensor(&ins[j], &g->vals[n->in[j]]);
        inp[j] = &ins[j];
    }
    if (n->nin > 0 && !(n->op->dtypes & KN_DT(ins[0].dtype)))
        return bad(l, "nodes[%d] (%s): input dtype %s is not supported by the op", i, n->op->name,
                   kn_dtype_name(ins[0].dtype));
    kn_opctx c;
    memset(&c, 0, sizeof c);
    c.op = n->op;
    c.nin = n->nin;
    c.in = inp;
    c.attrs = &n->attrs;
    c.nout = n->op->nout;
    kn_status st = n->op->infer(&c);
    if (st) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        return bad(l, "nodes[%d] (%s): the op refuses its stored inputs/attrs: %s", i, n->op->name,
                   msg);
    }
    if (c.nout != n->nout)
        return bad(l, "nodes[%d] (%s): nout is %d but the op gives %d outputs", i, n->op->name,
                   n->nout, c.nout);
    for (int o = 0; o < n->nout; o++) {
        const kn_gval *v = &g->vals[n->out[o]];
        if (c.out_dtype[o] != v->dtype ||
            !same_shape(c.out_ndim[o], c.out_shape[o], v->ndim, v->shape)) {
            char a[96], b[96];
            return bad(l, "nodes[%d] (%s): output %d is stored as %s %s but the op infers %s %s", i,
                       n->op->name, o, kn_dtype_name(v->dtype),
                       kn__shape_str(a, sizeof a, v->ndim, v->shape), kn_dtype_name(c.out_dtype[o]),
                       kn__shape_str(b, sizeof b, c.out_ndim[o], c.out_shape[o]));
        }
    }
    return KN_OK;
}

static kn_status load_value(ld *l, json_object *o, int v, int64_t batch) {
    char w[48];
    snprintf(w, sizeof w, "values[%d]", v);
    if (!json_object_is_type(o, json_type_object)) return bad(l, "%s: not an object", w);
    json_object *kv = field(o, "kind", json_type_string);
    const char *ks = kv ? json_object_get_string(kv) : "";
    int kind = !strcmp(ks, "input")    ? GV_INPUT
               : !strcmp(ks, "weight") ? GV_WEIGHT
               : !strcmp(ks, "node")   ? GV_NODE
                                       : 0;
    if (!kind) return bad(l, "%s.kind: '%.40s' is not input, weight or node", w, ks);
    kn_dtype dt = KN_F32;
    int ndim = 0;
    int64_t shape[KN_MAX_DIMS] = {0}, sym;
    kn_status st;
    if ((st = get_dtype(l, o, w, &dt)) || (st = get_shape(l, o, w, dt, false, &ndim, shape)) ||
        (st = get_int(l, o, w, "sym", 0, (1 << ndim) - 1, &sym)))
        return st;
    if (sym && batch == 0)
        return bad(l, "%s.sym: %lld in a graph with a static batch", w, (long long)sym);
    kn_graph *g = l->g;
    if (kind == GV_WEIGHT) {
        const char *name;
        json_object *cv = field(o, "constant", json_type_boolean);
        if ((st = get_name(l, o, w, "name", GF_MAX_NAME, &name))) return st;
        if (!cv) return bad(l, "%s.constant: missing or not a boolean", w);
        if (sym) return bad(l, "%s.sym: a weight cannot follow the batch", w);
        int e = kn__file_find(l->f, name);
        if (e < 0) return bad(l, "%s: weight '%.200s' is missing from the file", w, name);
        kn_dtype fdt;
        int fnd;
        const int64_t *fsh;
        kn__file_entry(l->f, e, &fdt, &fnd, &fsh);
        if (fdt != dt || !same_shape(fnd, fsh, ndim, shape)) {
            char a[96], b[96];
            return bad(l, "%s: weight '%.200s' is %s %s in the file but declared %s %s", w, name,
                       fdt < KN_NDTYPES ? kn_dtype_name(fdt) : "(unsupported dtype)",
                       kn__shape_str(a, sizeof a, fnd, fsh), kn_dtype_name(dt),
                       kn__shape_str(b, sizeof b, ndim, shape));
        }
        kn_tensor *t = kn_file_get(l->f, name); /* scope-owned: the graph retains it */
        if (!t) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            return bad(l, "%s: weight '%.200s': %s", w, name, msg);
        }
        if (kn__g_add_weight(g, name, t, json_object_get_boolean(cv)) != v)
            return kn_last_status() ? kn_last_status() : KN_ENOMEM;
        return KN_OK;
    }
    if (kn__g_add_value(g, kind, dt, ndim, shape) != v) return kn_last_status();
    kn_gval *gv = &g->vals[v];
    gv->sym = (uint8_t)sym;
    if (kind == GV_INPUT) {
        const char *name;
        if ((st = get_name(l, o, w, "name", GF_MAX_NAME, &name))) return st;
        if (sym & ~1) return bad(l, "%s.sym: only dim 0 of an input can be the batch", w);
        if (sym && shape[0] != batch)
            return bad(l, "%s: dim 0 is %lld but the batch is %lld", w, (long long)shape[0],
                       (long long)batch);
        size_t len = strlen(name) + 1;
        if (!(gv->name = kn__malloc(len))) return kn_last_status();
        memcpy(gv->name, name, len);
    } else {
        int64_t node, oi;
        if ((st = get_int(l, o, w, "node", 0, l->nnodes_decl - 1, &node)) ||
            (st = get_int(l, o, w, "out_index", 0, KN_MAX_OUTS - 1, &oi)))
            return st;
        gv->node = (int)node;
        gv->out_index = (int)oi;
    }
    return KN_OK;
}

static kn_status load_node(ld *l, json_object *o, int i) {
    char w[48];
    snprintf(w, sizeof w, "nodes[%d]", i);
    if (!json_object_is_type(o, json_type_object)) return bad(l, "%s: not an object", w);
    kn_graph *g = l->g;
    json_object *ov = field(o, "op", json_type_string);
    if (!ov) return bad(l, "%s.op: missing or not a string", w);
    const kn_opdef *op = kn__op_find(json_object_get_string(ov));
    if (!op) return bad(l, "%s.op: unknown op '%.40s'", w, json_object_get_string(ov));
    snprintf(w, sizeof w, "nodes[%d] (%s)", i, op->name);
    json_object *ia = field(o, "inputs", json_type_array), *oa = field(o, "outs", json_type_array);
    if (!ia) return bad(l, "%s.inputs: missing or not an array", w);
    if (!oa) return bad(l, "%s.outs: missing or not an array", w);
    size_t nin = json_object_array_length(ia);
    int max_in = op->max_in < 0 || op->max_in > KN_MAX_INS ? KN_MAX_INS : op->max_in;
    if (nin < (size_t)op->min_in || nin > (size_t)max_in)
        return bad(l, "%s.inputs: %zu inputs, the op takes %d to %d", w, nin, op->min_in, max_in);
    int in[KN_MAX_INS];
    for (size_t j = 0; j < nin; j++) {
        json_object *x = json_object_array_get_idx(ia, j);
        if (!json_object_is_type(x, json_type_int))
            return bad(l, "%s.inputs[%zu]: not an integer", w, j);
        int64_t v = json_object_get_int64(x);
        if (v < 0 || v >= g->nvals)
            return bad(l, "%s.inputs[%zu]: value %lld out of range [0, %d)", w, j, (long long)v,
                       g->nvals);
        const kn_gval *gv = &g->vals[v];
        if (gv->kind == GV_NODE && (gv->node >= i || gv->out_index >= g->nodes[gv->node].nout ||
                                    g->nodes[gv->node].out[gv->out_index] != v))
            return bad(l, "%s.inputs[%zu]: value %lld is used before it is defined", w, j,
                       (long long)v);
        in[j] = (int)v;
    }
    int64_t nout, sa;
    kn_status st;
    if ((st =
             get_int(l, o, w, "nout", 1, op->nout < KN_MAX_OUTS ? op->nout : KN_MAX_OUTS, &nout)) ||
        (st = get_int(l, o, w, "sym_attr", 0, UINT32_MAX, &sa)))
        return st;
    if (json_object_array_length(oa) != (size_t)nout)
        return bad(l, "%s.outs: %zu entries for nout %lld", w, json_object_array_length(oa),
                   (long long)nout);
    kn_attrs at;
    if ((st = parse_attrs(l, o, w, &at))) return st;
    if (strcmp(op->name, "one_hot") == 0) {
        /* without num_classes one_hot's infer reads the indices' values, which a graph does not
         * have at load or plan time: traces freeze it, so a file must carry it */
        int k = 0;
        while (k < at.n && strcmp(at.a[k].name, "num_classes") != 0)
            k++;
        if (k == at.n || at.a[k].kind != KN_ATTR_INTS || at.a[k].n != 1 || at.a[k].ints[0] < 0)
            return bad(l, "%s.attrs: num_classes must be one integer >= 0", w);
    }
    for (int b = 0; b < 32; b++) {
        int a = b / 8, j = b % 8;
        if (((uint32_t)sa >> b & 1) &&
            (a >= at.n || at.a[a].kind != KN_ATTR_INTS || j >= at.a[a].n))
            return bad(l, "%s.sym_attr: bit %d names no integer attribute entry", w, b);
        if (((uint32_t)sa >> b & 1) &&
            (l->g->batch < 1 || at.a[a].ints[j] < 1 || at.a[a].ints[j] % l->g->batch))
            return bad(l, "%s.sym_attr: bit %d marks %lld, not a multiple of the batch %lld", w, b,
                       (long long)at.a[a].ints[j], (long long)l->g->batch);
    }
    int id = kn__g_add_node(g, op, in, (int)nin, &at, (int)nout);
    if (id != i) return kn_last_status() ? kn_last_status() : KN_ENOMEM;
    kn_gnode *n = &g->nodes[i];
    n->sym_attr = (uint32_t)sa;
    for (int k = 0; k < nout; k++) {
        json_object *x = json_object_array_get_idx(oa, (size_t)k);
        int64_t v = json_object_is_type(x, json_type_int) ? json_object_get_int64(x) : -1;
        if (v < 0 || v >= g->nvals)
            return bad(l, "%s.outs[%d]: not a value id in [0, %d)", w, k, g->nvals);
        const kn_gval *gv = &g->vals[v];
        if (gv->kind != GV_NODE || gv->node != i || gv->out_index != k)
            return bad(l, "%s.outs[%d]: value %lld is not output %d of this node", w, k,
                       (long long)v, k);
        n->out[k] = (int)v;
    }
    return check_node_infer(l, i);
}

static kn_status load_io(ld *l, json_object *root) {
    kn_graph *g = l->g;
    json_object *ia = field(root, "inputs", json_type_array);
    json_object *oa = field(root, "outputs", json_type_array);
    if (!ia) return bad(l, "inputs: missing or not an array");
    if (!oa) return bad(l, "outputs: missing or not an array");
    size_t ni = json_object_array_length(ia), no = json_object_array_length(oa);
    if (ni > GF_MAX_IO) return bad(l, "inputs: %zu entries (max %d)", ni, GF_MAX_IO);
    if (no < 1 || no > GF_MAX_IO) return bad(l, "outputs: %zu entries (1 to %d)", no, GF_MAX_IO);
    g->inputs = kn__calloc(ni ? ni : 1, sizeof(int));
    g->outputs = kn__calloc(no, sizeof(int));
    g->out_names = kn__calloc(no, sizeof(char *));
    if (!g->inputs || !g->outputs || !g->out_names) return kn_last_status();
    kn_status st;
    for (size_t i = 0; i < ni; i++) {
        char w[32];
        snprintf(w, sizeof w, "inputs[%zu]", i);
        json_object *o = json_object_array_get_idx(ia, i);
        if (!json_object_is_type(o, json_type_object)) return bad(l, "%s: not an object", w);
        const char *name;
        int64_t v, shape[KN_MAX_DIMS];
        kn_dtype dt = KN_F32;
        int nd = 0;
        if ((st = get_name(l, o, w, "name", GF_MAX_NAME, &name)) ||
            (st = get_int(l, o, w, "value", 0, g->nvals - 1, &v)) ||
            (st = get_dtype(l, o, w, &dt)) || (st = get_shape(l, o, w, dt, true, &nd, shape)))
            return st;
        const kn_gval *gv = &g->vals[v];
        if (gv->kind != GV_INPUT)
            return bad(l, "%s.value: value %lld is not an input", w, (long long)v);
        for (size_t k = 0; k < i; k++)
            if (g->inputs[k] == v)
                return bad(l, "%s.value: value %lld is listed twice", w, (long long)v);
        bool same = strcmp(name, gv->name) == 0 && dt == gv->dtype && nd == gv->ndim;
        for (int d = 0; same && d < nd; d++)
            same = shape[d] == ((gv->sym >> d) & 1 ? -1 : gv->shape[d]);
        if (!same)
            return bad(l, "%s: name, dtype or shape differs from values[%lld]", w, (long long)v);
        g->inputs[g->ninputs++] = (int)v;
    }
    for (int v = 0, k; v < g->nvals; v++) {
        for (k = 0; k < g->ninputs && g->inputs[k] != v; k++)
            ;
        if (g->vals[v].kind == GV_INPUT && k == g->ninputs)
            return bad(l, "values[%d]: an input value missing from 'inputs'", v);
    }
    for (size_t i = 0; i < no; i++) {
        char w[32];
        snprintf(w, sizeof w, "outputs[%zu]", i);
        json_object *o = json_object_array_get_idx(oa, i);
        if (!json_object_is_type(o, json_type_object)) return bad(l, "%s: not an object", w);
        const char *name;
        int64_t v;
        if ((st = get_name(l, o, w, "name", GF_MAX_NAME, &name)) ||
            (st = get_int(l, o, w, "value", 0, g->nvals - 1, &v)))
            return st;
        if (g->vals[v].kind != GV_NODE)
            return bad(l, "%s.value: value %lld is not computed by a node", w, (long long)v);
        size_t len = strlen(name) + 1;
        if (!(g->out_names[i] = kn__malloc(len))) return kn_last_status();
        memcpy(g->out_names[i], name, len);
        g->outputs[g->noutputs++] = (int)v;
    }
    return KN_OK;
}

/* Whole-graph inference (what the planner will run): as traced it must give the stored shapes;
 * at batch + 1 exactly the dims marked `sym` may move. */
static kn_status check_graph_infer(const ld *l) {
    const kn_graph *g = l->g;
    int nv = g->nvals;
    int64_t(*sh)[KN_MAX_DIMS] = kn__calloc((size_t)(nv ? nv : 1), sizeof *sh);
    int *nd = kn__calloc((size_t)(nv ? nv : 1), sizeof(int));
    kn_status st = sh && nd ? KN_OK : kn_last_status();
    char msg[300], a[96], b[96];
    for (int pass = 0; pass < 2 && st == KN_OK; pass++) {
        int64_t batch = pass ? g->batch + 1 : 0;
        if (pass && g->batch == 0) break;
        if ((st = kn__g_infer(g, batch, sh, nd))) {
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            st = bad(l, "shape inference at batch %lld fails: %s", (long long)batch, msg);
            break;
        }
        for (int v = 0; v < nv && st == KN_OK; v++) {
            const kn_gval *gv = &g->vals[v];
            if (pass == 0 && !same_shape(nd[v], sh[v], gv->ndim, gv->shape)) {
                st = bad(l, "values[%d]: stored shape %s, inferred %s", v,
                         kn__shape_str(a, sizeof a, gv->ndim, gv->shape),
                         kn__shape_str(b, sizeof b, nd[v], sh[v]));
            } else if (pass == 1) {
                unsigned moved = 0;
                for (int d = 0; d < gv->ndim && nd[v] == gv->ndim; d++)
                    moved |= (unsigned)(sh[v][d] != gv->shape[d]) << d;
                if (nd[v] != gv->ndim || moved != gv->sym)
                    st = bad(l, "values[%d].sym: %u, but at batch %lld the value is %s", v,
                             (unsigned)gv->sym, (long long)batch,
                             kn__shape_str(a, sizeof a, nd[v], sh[v]));
            }
        }
    }
    kn__free(sh);
    kn__free(nd);
    return st;
}

kn_graph *kn_graph_load(const char *path) {
    if (!path) return kn__errp(KN_EINVAL, "graph_load: path is NULL");
    ld l = {.path = path};
    json_object *root = NULL;
    kn_status st = KN_OK;
    kn_scope sc = kn_scope_begin(); /* owns the weight tensors from the file; the graph retains */
    if (!(l.f = kn_file_open(path))) goto fail;
    const char *fmt = kn_file_meta(l.f, "kiln.format");
    if (!fmt || strcmp(fmt, "graph") != 0) {
        st = bad(&l, "not a graph file (metadata kiln.format is %s%.40s%s)", fmt ? "'" : "",
                 fmt ? fmt : "missing", fmt ? "'" : "");
        goto fail;
    }
    const char *text = kn_file_meta(l.f, "kiln.graph");
    if (!text) {
        st = bad(&l, "metadata kiln.graph is missing");
        goto fail;
    }
    json_tokener *tok = json_tokener_new_ex(GF_JSON_DEPTH);
    if (!tok) {
        st = kn__err(KN_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    size_t len = strlen(text);
    root = len <= INT_MAX ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    bool trailing = false;
    for (size_t i = end; i < len; i++)
        trailing |= text[i] != ' ' && text[i] != '\t' && text[i] != '\n' && text[i] != '\r';
    if (!root || jerr != json_tokener_success || trailing) {
        st = bad(&l, "kiln.graph is not valid JSON (%s at byte %zu)",
                 trailing                        ? "trailing bytes"
                 : jerr == json_tokener_continue ? "truncated"
                                                 : json_tokener_error_desc(jerr),
                 end);
        goto fail;
    }
    if (!json_object_is_type(root, json_type_object)) {
        st = bad(&l, "kiln.graph is not a JSON object");
        goto fail;
    }
    int64_t version, batch, reads;
    if ((st = get_int(&l, root, "kiln.graph", "version", 0, INT_MAX, &version))) goto fail;
    if (version != GF_VERSION) {
        st = bad(&l, "version %lld is not supported (this kiln reads version %d)",
                 (long long)version, GF_VERSION);
        goto fail;
    }
    if ((st = get_int(&l, root, "kiln.graph", "batch", 0, GF_MAX_BATCH, &batch)) ||
        (st = get_int(&l, root, "kiln.graph", "host_reads", 0, INT_MAX, &reads)))
        goto fail;
    json_object *va = field(root, "values", json_type_array);
    json_object *na = field(root, "nodes", json_type_array);
    if (!va || !na) {
        st = bad(&l, "%s: missing or not an array", va ? "nodes" : "values");
        goto fail;
    }
    size_t nv = json_object_array_length(va), nn = json_object_array_length(na);
    if (nv > GF_MAX_VALUES || nn > GF_MAX_NODES) {
        st = bad(&l, "%zu values and %zu nodes (limits %d, %d)", nv, nn, GF_MAX_VALUES,
                 GF_MAX_NODES);
        goto fail;
    }
    l.nnodes_decl = (int)nn;
    if (!(l.g = kn__g_new())) goto fail;
    l.g->batch = batch;
    l.g->host_reads = (int)reads;
    json_object *fr = field(root, "first_read", json_type_string);
    if (fr) snprintf(l.g->first_read, sizeof l.g->first_read, "%s", json_object_get_string(fr));
    for (size_t v = 0; v < nv; v++)
        if ((st = load_value(&l, json_object_array_get_idx(va, v), (int)v, batch))) goto fail;
    for (size_t i = 0; i < nn; i++)
        if ((st = load_node(&l, json_object_array_get_idx(na, i), (int)i))) goto fail;
    for (int v = 0; v < l.g->nvals; v++) {
        const kn_gval *gv = &l.g->vals[v];
        if (gv->kind == GV_NODE && (gv->out_index >= l.g->nodes[gv->node].nout ||
                                    l.g->nodes[gv->node].out[gv->out_index] != v)) {
            st = bad(&l, "values[%d]: not output %d of node %d", v, gv->out_index, gv->node);
            goto fail;
        }
    }
    if ((st = load_io(&l, root)) || (st = check_graph_infer(&l))) goto fail;
    l.g->traced_nodes = l.g->nnodes;
    json_object_put(root);
    kn_file_close(l.f);
    kn_scope_end(sc);
    return l.g;
fail:
    if (kn_last_status() == KN_OK)
        kn__err(st ? st : KN_ENOMEM, "%s: loading the graph failed", path);
    json_object_put(root);
    kn_graph_free(l.g);
    kn_file_close(l.f);
    kn_scope_end(sc);
    return NULL;
}
