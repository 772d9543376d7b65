/*
 * import.c - ONNX model -> kiln graph (issue #5): runs the ONNX graph once on example inputs with
 * the op converters of ops_*.c while kiln's tracer records it (see onnx_impl.h for the scheme),
 * plus the pieces every converter shares: TensorProto -> kiln tensor, attribute and static-input
 * accessors, and the pre-flight check that lists every unsupported op before anything runs.
 *
 * Control flow: If (its condition known at import), Loop (trip count and condition known,
 * unrolled) and Scan (opset 9+, unrolled) run their subgraphs inline; every import runs at most
 * MAX_NODES_RUN nodes.
 *
 * Symbolic batch: when every graph input's first dim is symbolic (a name like "batch" or
 * unknown) the model is traced at batch 2 and at batch 3; the two traces must agree node for node,
 * and the dims and attribute entries that differ must be k * batch in both (Shape arithmetic
 * such as batch * heads becomes a proportional attribute, kn__g_symbolic_from). The result is
 * then checked against eager execution at batch 3 and 2 (kn_trace_check). A model whose graph
 * depends on the batch otherwise is imported with static shapes instead (logged).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "graph/graph_impl.h"
#include "kiln/onnx.h"
#include "onnx/onnx_impl.h"

/* ---- dtypes and tensors ---- */

int kn__ox_dtype(int32_t dt) {
    switch (dt) {
    case KN_ONNX_FLOAT: return KN_F32;
    case KN_ONNX_DOUBLE: return KN_F64;
    case KN_ONNX_FLOAT16: return KN_F16;
    case 16: return KN_BF16;
    case KN_ONNX_INT8: return KN_I8;
    case KN_ONNX_UINT8: return KN_U8;
    case KN_ONNX_INT32: return KN_I32;
    case KN_ONNX_INT64: return KN_I64;
    case KN_ONNX_BOOL: return KN_BOOL;
    default: return -1;
    }
}

const char *kn__ox_dtype_name(int32_t dt) {
    static const char *const names[] = {
        "UNDEFINED",      "FLOAT",    "UINT8",        "INT8",           "UINT16",
        "INT16",          "INT32",    "INT64",        "STRING",         "BOOL",
        "FLOAT16",        "DOUBLE",   "UINT32",       "UINT64",         "COMPLEX64",
        "COMPLEX128",     "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ", "UINT4",    "INT4",         "FLOAT4E2M1",     "FLOAT8E8M0"};
    return dt >= 0 && dt < (int32_t)(sizeof names / sizeof *names) ? names[dt] : "?";
}

/* external data: a relative path under base_dir without "..", holding `bytes` at offset; the
 * file's size is checked before anything is allocated for it */
static kn_status external_where(const kn_onnx_tensor *t, const char *base_dir, size_t bytes,
                                char *path, size_t pn, int64_t *offset) {
    char loc[512] = "";
    int64_t off = 0, len = -1;
    for (size_t i = 0; i < t->n_external; i++) {
        const kn_onnx_kv *kv = &t->external_data[i];
        char val[512];
        size_t n = kv->value.n < sizeof val - 1 ? kv->value.n : sizeof val - 1;
        if (n) memcpy(val, kv->value.p, n);
        val[n] = 0;
        if (kv->key.n == 8 && !memcmp(kv->key.p, "location", 8)) {
            if (kv->value.n >= sizeof loc || memchr(kv->value.p, 0, kv->value.n))
                return kn__err(KN_EFORMAT, "external data: bad location");
            memcpy(loc, val, n + 1);
        } else if (kv->key.n == 6 && !memcmp(kv->key.p, "offset", 6)) {
            off = strtoll(val, NULL, 10);
        } else if (kv->key.n == 6 && !memcmp(kv->key.p, "length", 6)) {
            len = strtoll(val, NULL, 10);
        }
    }
    if (!loc[0]) return kn__err(KN_EFORMAT, "external data: no location");
    if (loc[0] == '/' || strstr(loc, ".."))
        return kn__err(KN_EFORMAT,
                       "external data: location '%s' must be a relative path inside the "
                       "model's folder",
                       loc);
    if (!base_dir) return kn__err(KN_EUNSUPPORTED, "external data '%s': no model folder", loc);
    if (off < 0 || (len >= 0 && (uint64_t)len != bytes))
        return kn__err(KN_EFORMAT,
                       "external data '%s': offset %lld / length %lld do not fit %zu bytes", loc,
                       (long long)off, (long long)len, bytes);
    snprintf(path, pn, "%s/%s", base_dir, loc);
    struct stat sb;
    if (stat(path, &sb)) return kn__err(KN_EIO, "external data: cannot open '%s'", path);
    if ((uint64_t)sb.st_size < (uint64_t)off || (uint64_t)sb.st_size - (uint64_t)off < bytes)
        return kn__err(KN_EFORMAT, "external data '%s': shorter than %zu bytes at %lld", path,
                       bytes, (long long)off);
    *offset = off;
    return KN_OK;
}

static kn_status read_external(const char *path, int64_t off, void *dst, size_t bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return kn__err(KN_EIO, "external data: cannot open '%s'", path);
    bool ok = fseeko(f, (off_t)off, SEEK_SET) == 0 && fread(dst, 1, bytes, f) == bytes;
    fclose(f);
    if (!ok) return kn__err(KN_EIO, "external data '%s': cannot read %zu bytes", path, bytes);
    return KN_OK;
}

kn_tensor *kn__ox_tensor(const kn_onnx_tensor *t, const char *base_dir) {
    int dt = kn__ox_dtype(t->data_type);
    if (dt < 0)
        return kn__errp(KN_EUNSUPPORTED, "tensor '%.*s': dtype %s is not supported", (int)t->name.n,
                        t->name.p, kn__ox_dtype_name(t->data_type));
    if (t->ndims > KN_MAX_DIMS)
        return kn__errp(KN_ELIMIT, "tensor '%.*s': %d dims, kiln supports %d", (int)t->name.n,
                        t->name.p, t->ndims, KN_MAX_DIMS);
    /* a payload of the right size must be there before anything is allocated for it (the
     * parser checked raw and typed sizes; external data is checked against the file) */
    if (t->numel && !t->has_raw && !t->external && !t->typed_field)
        return kn__errp(KN_EFORMAT, "tensor '%.*s': no data", (int)t->name.n, t->name.p);
    size_t es = kn_dtype_size((kn_dtype)dt), bytes = (size_t)t->numel * es;
    char path[1100];
    int64_t off = 0;
    if (t->external && bytes / es != (size_t)t->numel)
        return kn__errp(KN_ELIMIT, "tensor '%.*s': size overflows", (int)t->name.n, t->name.p);
    if (t->external && external_where(t, base_dir, bytes, path, sizeof path, &off)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        return kn__errp(kn_last_status(), "tensor '%.*s': %s", (int)t->name.n, t->name.p, msg);
    }
    kn_tensor *r = kn__tensor_alloc((kn_dtype)dt, t->ndims, t->dims); /* ours until done */
    if (!r) return NULL;
    char *dst = kn_tensor_data(r);
    kn_status st = KN_OK;
    if (t->has_raw) {
        if (bytes) memcpy(dst, t->raw.p, bytes); /* size checked by the parser; little-endian */
    } else if (t->external) {
        st = read_external(path, off, dst, bytes);
    } else if (t->typed_field) {
        uint64_t *v = kn__malloc(sizeof *v * (t->typed_count ? t->typed_count : 1));
        if (!v) {
            kn_tensor_free(r);
            return NULL;
        }
        st = kn__onnx_tensor_values(t, v);
        for (int64_t i = 0; st == KN_OK && i < t->numel; i++) {
            uint64_t u = v[i];
            switch ((kn_dtype)dt) {
            case KN_F32: {
                float f = t->typed_field == 4 ? kn__pb_f32((uint32_t)u) : (float)(int64_t)u;
                memcpy(dst + 4 * i, &f, 4);
                break;
            }
            case KN_F64: {
                double d = kn__pb_f64(u);
                memcpy(dst + 8 * i, &d, 8);
                break;
            }
            case KN_F16:
            case KN_BF16: {
                uint16_t h = (uint16_t)u;
                memcpy(dst + 2 * i, &h, 2);
                break;
            }
            case KN_I8: ((int8_t *)dst)[i] = (int8_t)u; break;
            case KN_U8: ((uint8_t *)dst)[i] = (uint8_t)u; break;
            case KN_BOOL: ((uint8_t *)dst)[i] = u != 0; break;
            case KN_I32: ((int32_t *)dst)[i] = (int32_t)u; break;
            case KN_I64: ((int64_t *)dst)[i] = (int64_t)u; break;
            default: break;
            }
        }
        kn__free(v);
    }
    if (st) {
        kn_tensor_free(r);
        return NULL;
    }
    return kn__scope_adopt(r);
}

kn_tensor *kn__ox_scalar_like(const kn_tensor *x, double v) {
    return kn_scalar(kn_tensor_dtype(x), v);
}

/* ---- converter table ---- */

const kn_ox_op *kn__ox_find(const char *op_type, size_t len, int64_t opset, bool *known) {
    static const kn_ox_op *const tables[] = {kn__ox_ops_math,   kn__ox_ops_nn,   kn__ox_ops_shape,
                                             kn__ox_ops_reduce, kn__ox_ops_loss, kn__ox_ops_resize,
                                             kn__ox_ops_rnn,    kn__ox_ops_misc, kn__ox_ops_quant};
    if (known) *known = false;
    for (size_t k = 0; k < sizeof tables / sizeof *tables; k++)
        for (const kn_ox_op *o = tables[k]; o->name; o++) {
            if (strlen(o->name) != len || memcmp(o->name, op_type, len)) continue;
            if (known) *known = true;
            if (opset >= o->since && (!o->until || opset <= o->until)) return o;
        }
    return NULL;
}

/* ---- attributes ---- */

bool kn__ox_is(const kn_ox *x, const char *name) {
    size_t n = strlen(name);
    return x->node->op_type.n == n && !memcmp(x->node->op_type.p, name, n);
}

const kn_onnx_attr *kn__ox_attr(const kn_ox *x, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < x->node->n_attrs; i++) {
        const kn_onnx_attr *a = &x->node->attrs[i];
        if (a->name.n == n && !memcmp(a->name.p, name, n)) return a;
    }
    return NULL;
}

int64_t kn__ox_int(const kn_ox *x, const char *name, int64_t def) {
    const kn_onnx_attr *a = kn__ox_attr(x, name);
    return a ? a->i : def;
}

double kn__ox_float(const kn_ox *x, const char *name, double def) {
    const kn_onnx_attr *a = kn__ox_attr(x, name);
    return a ? a->f : def;
}

int kn__ox_ints(const kn_ox *x, const char *name, int64_t *out, int max) {
    const kn_onnx_attr *a = kn__ox_attr(x, name);
    if (!a) return -1;
    if (a->n_ints > (size_t)max)
        return kn__err(KN_ELIMIT, "attribute %s: %zu values, at most %d", name, a->n_ints, max);
    if (a->n_ints) memcpy(out, a->ints, sizeof *out * a->n_ints);
    return (int)a->n_ints;
}

int kn__ox_floats(const kn_ox *x, const char *name, float *out, int max) {
    const kn_onnx_attr *a = kn__ox_attr(x, name);
    if (!a) return -1;
    if (a->n_floats > (size_t)max)
        return kn__err(KN_ELIMIT, "attribute %s: %zu values, at most %d", name, a->n_floats, max);
    if (a->n_floats) memcpy(out, a->floats, sizeof *out * a->n_floats);
    return (int)a->n_floats;
}

const char *kn__ox_str(const kn_ox *x, const char *name, const char *def, char *buf, size_t n) {
    const kn_onnx_attr *a = kn__ox_attr(x, name);
    if (!a || !n) return def;
    size_t k = a->s.n < n - 1 ? a->s.n : n - 1;
    if (k) memcpy(buf, a->s.p, k);
    buf[k] = 0;
    return buf;
}

/* ---- inputs and outputs ---- */

kn_tensor *kn__ox_in(const kn_ox *x, int i) {
    return i >= 0 && i < x->nin ? x->in[i] : NULL;
}

kn_tensor *kn__ox_need(const kn_ox *x, int i) {
    kn_tensor *t = kn__ox_in(x, i);
    if (!t) return kn__errp(KN_EFORMAT, "input %d is required", i);
    return t;
}

static kn_status freeze_input(const kn_ox *x, int i);

static int static_values(const kn_ox *x, int i, kn_dtype dt, void *out, int max) {
    kn_tensor *t = kn__ox_need(x, i);
    if (!t) return kn_last_status();
    if (!x->in_static[i] && freeze_input(x, i) != KN_OK)
        return kn__err(KN_EUNSUPPORTED,
                       "input %d ('%.*s') is computed from the model's inputs at run time; kiln "
                       "needs it constant (an initializer, a Constant or shape arithmetic)",
                       i, (int)x->node->inputs[i].n, x->node->inputs[i].p);
    int64_t n = kn_tensor_numel(t);
    if (n > max)
        return kn__err(KN_ELIMIT, "input %d: %lld values, at most %d", i, (long long)n, max);
    kn_status st = kn_tensor_read(t, dt, out, (size_t)n * kn_dtype_size(dt));
    return st ? st : (int)n;
}

int kn__ox_in_ints(const kn_ox *x, int i, int64_t *out, int max) {
    return static_values(x, i, KN_I64, out, max);
}

int kn__ox_in_doubles(const kn_ox *x, int i, double *out, int max) {
    return static_values(x, i, KN_F64, out, max);
}

kn_status kn__ox_set(kn_ox *x, int i, kn_tensor *t) {
    if (!t) return kn_last_status() ? kn_last_status() : KN_EINTERNAL;
    if (i < KN_OX_MAX_IO) x->out[i] = t;
    return KN_OK;
}

kn_status kn__ox_axis(int64_t axis, int rank, const char *what, int *out) {
    if (axis < -rank || axis >= (rank ? rank : 1))
        return kn__err(KN_EINVAL, "%s %lld is out of range for rank %d", what, (long long)axis,
                       rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return KN_OK;
}

/* ---- the interpreter ---- */

typedef struct vslot {
    kn_onnx_str name;
    kn_tensor *t;
    bool is_static;
    int input;     /* index among the graph's inputs, or -1 */
    uint64_t deps; /* bit i: computed from graph input i (inputs beyond 64: not tracked) */
} vslot;

typedef struct kn_ox_imp {
    const kn_onnx_model *m;
    const char *base_dir;
    int64_t opset;
    vslot *tab;
    size_t cap;
    /* graph inputs that are not initializers, in order */
    int nin;
    const kn_onnx_value_info **inputs;
    kn_tensor **inits; /* one per initializer (owned) */
    kn_named_tensor *wnames;
    char **names;    /* NUL-terminated copies: input names, output names, initializer names */
    bool may_freeze; /* example inputs given: shape inputs may be frozen */
    bool frozen[KN_OX_MAX_IO]; /* inputs frozen to their example values */
    vslot *in_slot[KN_OX_MAX_IO];
    int64_t nodes_run; /* nodes executed so far, unrolled Loop bodies included */
} imp;

static size_t hash_str(kn_onnx_str s) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < s.n; i++)
        h = (h ^ (unsigned char)s.p[i]) * 1099511628211ULL;
    return (size_t)h;
}

static vslot *tab_find(imp *im, kn_onnx_str name, bool insert) {
    if (!im->cap) return NULL;
    for (size_t i = hash_str(name) & (im->cap - 1);; i = (i + 1) & (im->cap - 1)) {
        vslot *s = &im->tab[i];
        if (!s->name.p) return insert ? (s->name = name, s->input = -1, s->deps = 0, s) : NULL;
        if (s->name.n == name.n && (!name.n || !memcmp(s->name.p, name.p, name.n))) return s;
    }
}

static char *dup_str(kn_onnx_str s) {
    char *r = kn__malloc(s.n + 1);
    if (r) {
        if (s.n) memcpy(r, s.p, s.n);
        r[s.n] = 0;
    }
    return r;
}

static void imp_free(imp *im) {
    kn__free(im->inits); /* the tensors belong to the import's scope */
    kn__free(im->wnames);
    kn__free(im->tab);
    kn__free(im->inputs);
    if (im->names) {
        size_t n = im->m->graph.n_inputs + im->m->graph.n_outputs + im->m->graph.n_initializers;
        for (size_t i = 0; i < n; i++)
            kn__free(im->names[i]);
    }
    kn__free(im->names);
}

static bool is_default_domain(kn_onnx_str d) {
    return d.n == 0 || (d.n == 7 && !memcmp(d.p, "ai.onnx", 7));
}

static int64_t model_opset(const kn_onnx_model *m) {
    for (size_t i = 0; i < m->n_opsets; i++)
        if (is_default_domain(m->opsets[i].domain)) return m->opsets[i].version;
    return -1;
}

static bool is_initializer(const kn_onnx_graph *g, kn_onnx_str name) {
    for (size_t i = 0; i < g->n_initializers; i++)
        if (g->initializers[i].name.n == name.n &&
            !memcmp(g->initializers[i].name.p, name.p, name.n))
            return true;
    return false;
}

/* Converts the initializers and finds the real inputs. */
static kn_status imp_init(imp *im, const kn_onnx_model *m, const char *base_dir) {
    memset(im, 0, sizeof *im);
    im->m = m;
    im->base_dir = base_dir;
    const kn_onnx_graph *g = &m->graph;
    if ((im->opset = model_opset(m)) < 1)
        return kn__err(KN_EFORMAT, "model: no opset_import for the ai.onnx domain");
    size_t nn = g->n_inputs + g->n_outputs + g->n_initializers;
    im->names = kn__calloc(nn ? nn : 1, sizeof(char *));
    im->inits = kn__calloc(g->n_initializers + 1, sizeof(kn_tensor *));
    im->wnames = kn__calloc(g->n_initializers + 1, sizeof(kn_named_tensor));
    im->inputs = kn__calloc(g->n_inputs + 1, sizeof(*im->inputs));
    if (!im->names || !im->inits || !im->wnames || !im->inputs) return KN_ENOMEM;
    for (size_t i = 0; i < g->n_inputs; i++)
        if (!g->inputs[i].name.n) return kn__err(KN_EFORMAT, "graph input %zu has no name", i);
    for (size_t i = 0; i < g->n_outputs; i++)
        if (!g->outputs[i].name.n) return kn__err(KN_EFORMAT, "graph output %zu has no name", i);
    for (size_t i = 0; i < g->n_initializers; i++)
        if (!g->initializers[i].name.n)
            return kn__err(KN_EFORMAT, "initializer %zu has no name", i);
    for (size_t i = 0; i < g->n_inputs; i++) {
        if (is_initializer(g, g->inputs[i].name)) continue;
        if (!g->inputs[i].has_tensor_type)
            return kn__err(KN_EUNSUPPORTED, "graph input '%.*s' is not a tensor",
                           (int)g->inputs[i].name.n, g->inputs[i].name.p);
        im->inputs[im->nin] = &g->inputs[i];
        if (!(im->names[im->nin] = dup_str(g->inputs[i].name))) return KN_ENOMEM;
        im->nin++;
    }
    for (size_t i = 0; i < g->n_outputs; i++)
        if (!(im->names[g->n_inputs + i] = dup_str(g->outputs[i].name))) return KN_ENOMEM;
    for (size_t i = 0; i < g->n_initializers; i++) {
        const kn_onnx_tensor *t = &g->initializers[i];
        if (!(im->inits[i] = kn__ox_tensor(t, base_dir))) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            return kn__err(kn_last_status(), "initializer %zu: %s", i, msg);
        }
        char *nm = im->names[g->n_inputs + g->n_outputs + i] = dup_str(t->name);
        if (!nm) return KN_ENOMEM;
        im->wnames[i] = (kn_named_tensor){nm, im->inits[i]};
    }
    return KN_OK;
}

/* A value used as a shape / axes / pads that is a graph input, or is computed only from integer
 * graph inputs (a size cast to float for Range): those inputs are frozen to the example's values
 * (see the header). A value computed from float data is never frozen. */
static kn_status freeze_input(const kn_ox *x, int i) {
    imp *im = x->imp;
    vslot *s = tab_find(im, x->node->inputs[i], false);
    if (!im->may_freeze || !s || !s->deps) return KN_EUNSUPPORTED;
    for (int k = 0; k < im->nin && s->input < 0; k++)
        if (((s->deps >> k) & 1) && !im->in_slot[k]) return KN_EUNSUPPORTED;
    for (int k = 0; k < im->nin && s->input < 0; k++)
        if ((s->deps >> k) & 1) {
            kn_dtype dt = kn_tensor_dtype(im->in_slot[k]->t);
            if (kn_dtype_is_float(dt)) return KN_EUNSUPPORTED;
        }
    for (int k = 0; k < im->nin; k++) {
        if (!((s->deps >> k) & 1)) continue;
        if (!im->frozen[k])
            kn__log(2,
                    "onnx import: input '%.*s' is used (through '%.*s') as a shape or index "
                    "argument: frozen to the example's value",
                    (int)im->in_slot[k]->name.n, im->in_slot[k]->name.p, (int)s->name.n, s->name.p);
        im->frozen[k] = true;
        im->in_slot[k]->is_static = true;
    }
    s->is_static = true;
    return KN_OK;
}

/* Runs one node: inputs from the table, converter, outputs into the table. */
static kn_status control_flow(imp *im, const kn_onnx_node *nd, bool *done);

#define MAX_NODES_RUN ((int64_t)1 << 20) /* per import: a bound on unrolled loops */

static kn_status run_node(imp *im, const kn_onnx_node *nd) {
    if (++im->nodes_run > MAX_NODES_RUN)
        return kn__err(KN_ELIMIT, "the model runs more than %lld nodes (loops unrolled)",
                       (long long)MAX_NODES_RUN);
    if (!is_default_domain(nd->domain))
        return kn__err(KN_EUNSUPPORTED, "domain '%.*s' is not supported", (int)nd->domain.n,
                       nd->domain.p);
    bool handled = false;
    kn_status cst = control_flow(im, nd, &handled);
    if (handled || cst) return cst;
    bool known;
    const kn_ox_op *op = kn__ox_find(nd->op_type.p, nd->op_type.n, im->opset, &known);
    if (!op)
        return kn__err(KN_EUNSUPPORTED, known ? "not supported at opset %lld" : "not supported",
                       (long long)im->opset);
    if (nd->n_inputs > KN_OX_MAX_IO || nd->n_outputs > KN_OX_MAX_IO)
        return kn__err(KN_ELIMIT, "more than %d inputs or outputs", KN_OX_MAX_IO);
    kn_ox x = {.imp = im,
               .node = nd,
               .opset = im->opset,
               .nin = (int)nd->n_inputs,
               .nout = (int)nd->n_outputs};
    bool all_static = true;
    uint64_t deps = 0;
    for (int i = 0; i < x.nin; i++) {
        if (!nd->inputs[i].n) continue;
        vslot *s = tab_find(im, nd->inputs[i], false);
        if (!s || !s->t)
            return kn__err(KN_EFORMAT, "input '%.*s' is not computed before this node",
                           (int)nd->inputs[i].n, nd->inputs[i].p);
        x.in[i] = s->t;
        x.in_static[i] = s->is_static;
        all_static &= s->is_static;
        deps |= s->deps;
    }
    for (int i = 0; i < x.nout; i++)
        x.want[i] = nd->outputs[i].n > 0;
    void *tr = all_static ? kn__trace_pause() : NULL;
    kn_status st = op->fn(&x);
    if (all_static) kn__trace_resume(tr);
    if (st) return st;
    for (int i = 0; i < x.nout; i++) {
        if (!x.want[i]) continue;
        if (!x.out[i]) return kn__err(KN_EINTERNAL, "output %d was not computed", i);
        vslot *s = tab_find(im, nd->outputs[i], true);
        s->t = x.out[i];
        s->is_static = all_static || op->shape_only;
        s->deps = s->is_static ? 0 : deps;
    }
    return KN_OK;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* Names a graph can define, its subgraphs' included (sizes the value table). */
static size_t names_in(const kn_onnx_graph *g, int depth) {
    size_t n = g->n_inputs + g->n_initializers;
    for (size_t i = 0; i < g->n_nodes; i++) {
        n += g->nodes[i].n_outputs;
        for (size_t a = 0; a < g->nodes[i].n_attrs && depth < KN_PB_MAX_DEPTH; a++)
            if (g->nodes[i].attrs[a].g) n += names_in(g->nodes[i].attrs[a].g, depth + 1);
    }
    return n;
}

/* Runs a graph's (or subgraph's) nodes in order; errors name the node. */
static kn_status run_nodes(imp *im, const kn_onnx_graph *g) {
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kn_onnx_node *nd = &g->nodes[i];
        kn_status st = run_node(im, nd);
        if (st) {
            char msg[600];
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            return kn__err(st, "node %zu (%.*s%s%.*s%s): %s", i, (int)nd->op_type.n, nd->op_type.p,
                           nd->name.n ? " '" : "", (int)nd->name.n, nd->name.p,
                           nd->name.n ? "'" : "", msg);
        }
    }
    return KN_OK;
}

/* ---- control flow: If with a condition known at import, Loop with a known trip count ----
 * Both run their body subgraphs inline (a Loop unrolled), so the traced graph has no control
 * flow. Subgraph nodes see the outer values by name (ONNX scoping), their initializers are
 * constants. A condition or trip count computed from the model's inputs at run time is
 * refused, as any static argument is (or frozen from the example inputs). */
#define LOOP_MAX_TRIPS 4096

static const kn_onnx_graph *graph_attr(const kn_onnx_node *nd, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < nd->n_attrs; i++)
        if (nd->attrs[i].name.n == n && !memcmp(nd->attrs[i].name.p, name, n))
            return nd->attrs[i].g;
    return NULL;
}

static kn_status bind(imp *im, kn_onnx_str name, kn_tensor *t, bool is_static, uint64_t deps) {
    if (!name.n) return KN_OK;
    vslot *s = tab_find(im, name, true);
    if (!s) return kn__err(KN_ELIMIT, "too many values");
    s->t = t;
    s->is_static = is_static;
    s->deps = is_static ? 0 : deps;
    return KN_OK;
}

static kn_status subgraph_inits(imp *im, const kn_onnx_graph *g) {
    for (size_t i = 0; i < g->n_initializers; i++) {
        kn_tensor *t = kn__ox_tensor(&g->initializers[i], im->base_dir);
        kn_status st = t ? bind(im, g->initializers[i].name, t, true, 0) : kn_last_status();
        if (st) return st;
    }
    return KN_OK;
}

/* an input of nd (index i) as a static integer, through the converters' reader (so graph inputs
 * may be frozen); *present false when the optional input is absent */
static kn_status static_int(imp *im, const kn_onnx_node *nd, int i, int64_t *v, bool *present) {
    *present = (size_t)i < nd->n_inputs && nd->inputs[i].n;
    if (!*present) return KN_OK;
    vslot *s = tab_find(im, nd->inputs[i], false);
    if (!s || !s->t)
        return kn__err(KN_EFORMAT, "input '%.*s' is not computed before this node",
                       (int)nd->inputs[i].n, nd->inputs[i].p);
    kn_ox x = {.imp = im, .node = nd, .opset = im->opset, .nin = (int)nd->n_inputs};
    x.in[i] = s->t;
    x.in_static[i] = s->is_static;
    int n = kn__ox_in_ints(&x, i, v, 1);
    if (n < 0) return n;
    return n == 1 ? KN_OK : kn__err(KN_EINVAL, "input %d must hold one value", i);
}

static kn_status run_if(imp *im, const kn_onnx_node *nd) {
    int64_t c;
    bool present;
    kn_status st = static_int(im, nd, 0, &c, &present);
    if (st) return st;
    if (!present) return kn__err(KN_EFORMAT, "If without a condition");
    const kn_onnx_graph *b = graph_attr(nd, c ? "then_branch" : "else_branch");
    if (!b) return kn__err(KN_EFORMAT, "If without its %s", c ? "then_branch" : "else_branch");
    if (b->n_outputs != nd->n_outputs)
        return kn__err(KN_EFORMAT, "If: the branch has %zu outputs, the node %zu", b->n_outputs,
                       nd->n_outputs);
    if ((st = subgraph_inits(im, b)) || (st = run_nodes(im, b))) return st;
    for (size_t k = 0; k < nd->n_outputs; k++) {
        vslot *s = tab_find(im, b->outputs[k].name, false);
        if (!s || !s->t) return kn__err(KN_EFORMAT, "If: branch output %zu is never computed", k);
        if ((st = bind(im, nd->outputs[k], s->t, s->is_static, s->deps))) return st;
    }
    return KN_OK;
}

static kn_status run_loop(imp *im, const kn_onnx_node *nd) {
    const kn_onnx_graph *b = graph_attr(nd, "body");
    if (!b) return kn__err(KN_EFORMAT, "Loop without a body");
    size_t N = nd->n_inputs >= 2 ? nd->n_inputs - 2 : 0; /* loop-carried values */
    if (nd->n_inputs < 2 || b->n_inputs != N + 2 || b->n_outputs < N + 1 ||
        nd->n_outputs != b->n_outputs - 1 || b->n_outputs - 1 - N > KN_OX_MAX_IO)
        return kn__err(KN_EFORMAT, "Loop: inputs, outputs and body do not fit together");
    size_t K = b->n_outputs - 1 - N; /* scan outputs */
    int64_t trips = LOOP_MAX_TRIPS, cond = 1;
    bool has_m, has_c;
    kn_status st = static_int(im, nd, 0, &trips, &has_m);
    if (!st) st = static_int(im, nd, 1, &cond, &has_c);
    if (st) return st;
    if (!has_m && !has_c) return kn__err(KN_EUNSUPPORTED, "Loop without a trip count or condition");
    if (trips < 0) trips = 0;
    if (trips > LOOP_MAX_TRIPS && has_m)
        return kn__err(KN_ELIMIT, "Loop of %lld trips (kiln unrolls at most %d)", (long long)trips,
                       LOOP_MAX_TRIPS);
    kn_tensor *carried[KN_OX_MAX_IO] = {0};
    bool cstat[KN_OX_MAX_IO] = {0};
    uint64_t cdeps[KN_OX_MAX_IO] = {0};
    if (N > KN_OX_MAX_IO) return kn__err(KN_ELIMIT, "Loop: %zu carried values", N);
    for (size_t k = 0; k < N; k++) {
        vslot *s = nd->inputs[k + 2].n ? tab_find(im, nd->inputs[k + 2], false) : NULL;
        if (!s || !s->t) return kn__err(KN_EUNSUPPORTED, "Loop: carried value %zu is absent", k);
        carried[k] = s->t, cstat[k] = s->is_static, cdeps[k] = s->deps;
    }
    size_t slots = (K ? K : 1) * (size_t)(trips ? trips : 1);
    kn_tensor **scans = kn__calloc(slots, sizeof *scans);
    bool *sstat = kn__calloc(slots, sizeof *sstat);
    uint64_t *sdeps = kn__calloc(slots, sizeof *sdeps);
    if (!scans || !sstat || !sdeps) {
        kn__free(scans);
        kn__free(sstat);
        kn__free(sdeps);
        return KN_ENOMEM;
    }
    int64_t it = 0;
    if ((st = subgraph_inits(im, b))) goto done;
    for (; it < trips && cond; it++) {
        if ((st = bind(im, b->inputs[0].name, kn_scalar(KN_I64, (double)it), true, 0)) ||
            (st = bind(im, b->inputs[1].name, kn_scalar(KN_BOOL, 1), true, 0)))
            goto done;
        for (size_t k = 0; k < N; k++)
            if ((st = bind(im, b->inputs[k + 2].name, carried[k], cstat[k], cdeps[k]))) goto done;
        if ((st = run_nodes(im, b))) goto done;
        vslot *cs = tab_find(im, b->outputs[0].name, false);
        if (!cs || !cs->t || !cs->is_static) {
            st = kn__err(KN_EUNSUPPORTED, "Loop: the condition is computed from the model's "
                                          "inputs at run time");
            goto done;
        }
        if (kn_tensor_numel(cs->t) != 1) {
            st = kn__err(KN_EFORMAT, "Loop: the condition has %lld elements, not one",
                         (long long)kn_tensor_numel(cs->t));
            goto done;
        }
        cond = kn_item(cs->t) != 0;
        for (size_t k = 0; k < N + K; k++) {
            vslot *s = tab_find(im, b->outputs[k + 1].name, false);
            if (!s || !s->t) {
                st = kn__err(KN_EFORMAT, "Loop: body output %zu is never computed", k + 1);
                goto done;
            }
            if (k < N)
                carried[k] = s->t, cstat[k] = s->is_static, cdeps[k] = s->deps;
            else
                scans[(k - N) * (size_t)trips + (size_t)it] = s->t,
                                                sstat[(k - N) * (size_t)trips + (size_t)it] =
                                                    s->is_static,
                                                sdeps[(k - N) * (size_t)trips + (size_t)it] =
                                                    s->deps;
        }
        if (!has_m && it + 1 == LOOP_MAX_TRIPS && cond) {
            st = kn__err(KN_ELIMIT, "Loop ran %d trips without its condition turning false",
                         LOOP_MAX_TRIPS);
            goto done;
        }
    }
    for (size_t k = 0; k < N; k++)
        if ((st = bind(im, nd->outputs[k], carried[k], cstat[k], cdeps[k]))) goto done;
    for (size_t k = 0; k < K && st == KN_OK; k++) {
        if (!it) {
            st = kn__err(KN_EUNSUPPORTED, "Loop: scan output %zu of zero trips", k);
            break;
        }
        /* stacked along a new first dim; static when every trip's value was */
        bool all_static = true;
        uint64_t deps = 0;
        for (int64_t i = 0; i < it; i++) {
            all_static &= sstat[k * (size_t)trips + (size_t)i];
            deps |= sdeps[k * (size_t)trips + (size_t)i];
        }
        void *tr = all_static ? kn__trace_pause() : NULL;
        kn_tensor **piece = scans + k * (size_t)trips;
        kn_tensor *cat = kn_stack(piece, (int)(it < 64 ? it : 64), 0);
        for (int64_t i0 = 64; cat && i0 < it; i0 += 64) { /* kn_stack takes 64 at a time */
            kn_tensor *parts[2] = {cat,
                                   kn_stack(piece + i0, (int)(it - i0 < 64 ? it - i0 : 64), 0)};
            cat = parts[1] ? kn_concat(parts, 2, 0) : NULL;
        }
        if (all_static) kn__trace_resume(tr);
        st = cat ? bind(im, nd->outputs[N + k], cat, all_static, deps) : kn_last_status();
    }
done:
    kn__free(scans);
    kn__free(sstat);
    kn__free(sdeps);
    return st;
}

/* Scan (opset 9+): the body runs once per slice of the scan inputs along their axis (unrolled);
 * state values carry over, scan outputs are stacked along their axis */
static kn_status run_scan(imp *im, const kn_onnx_node *nd) {
    const kn_onnx_graph *b = graph_attr(nd, "body");
    int64_t M = 0, ax_in[KN_OX_MAX_IO] = {0}, dir_in[KN_OX_MAX_IO] = {0};
    int64_t ax_out[KN_OX_MAX_IO] = {0}, dir_out[KN_OX_MAX_IO] = {0};
    for (size_t i = 0; i < nd->n_attrs; i++)
        if (nd->attrs[i].name.n == 15 && !memcmp(nd->attrs[i].name.p, "num_scan_inputs", 15))
            M = nd->attrs[i].i;
    if (im->opset < 9) return kn__err(KN_EUNSUPPORTED, "Scan before opset 9 (batched form)");
    if (!b || M < 1 || (size_t)M > nd->n_inputs || nd->n_inputs > KN_OX_MAX_IO ||
        nd->n_outputs > KN_OX_MAX_IO || b->n_inputs != nd->n_inputs ||
        b->n_outputs != nd->n_outputs)
        return kn__err(KN_EFORMAT, "Scan: inputs, outputs and body do not fit together");
    size_t N = nd->n_inputs - (size_t)M, K = nd->n_outputs - N;
    if (nd->n_outputs < N) return kn__err(KN_EFORMAT, "Scan: fewer outputs than state values");
    kn_ox x = {.imp = im, .node = nd, .opset = im->opset, .nin = (int)nd->n_inputs};
    int na = kn__ox_ints(&x, "scan_input_axes", ax_in, KN_OX_MAX_IO);
    int nd_ = kn__ox_ints(&x, "scan_input_directions", dir_in, KN_OX_MAX_IO);
    int no = kn__ox_ints(&x, "scan_output_axes", ax_out, KN_OX_MAX_IO);
    int ndo = kn__ox_ints(&x, "scan_output_directions", dir_out, KN_OX_MAX_IO);
    if ((na >= 0 && na != M) || (nd_ >= 0 && nd_ != M) || (no >= 0 && (size_t)no != K) ||
        (ndo >= 0 && (size_t)ndo != K) || na < -1 || nd_ < -1 || no < -1 || ndo < -1)
        return kn__err(KN_EINVAL, "Scan: axes / directions do not match the scan values");
    kn_tensor *state[KN_OX_MAX_IO], *scan_in[KN_OX_MAX_IO];
    bool sst[KN_OX_MAX_IO];
    uint64_t sdp[KN_OX_MAX_IO], deps_in = 0;
    bool in_static = true;
    int64_t T = -1;
    for (size_t i = 0; i < nd->n_inputs; i++) {
        vslot *s = nd->inputs[i].n ? tab_find(im, nd->inputs[i], false) : NULL;
        if (!s || !s->t) return kn__err(KN_EFORMAT, "Scan: input %zu is absent", i);
        if (i < N) {
            state[i] = s->t, sst[i] = s->is_static, sdp[i] = s->deps;
            continue;
        }
        size_t j = i - N;
        int r = kn_tensor_ndim(s->t), ax;
        kn_status st = kn__ox_axis(ax_in[j], r, "scan_input_axes", &ax);
        if (st) return st;
        ax_in[j] = ax;
        int64_t len = kn_tensor_shape(s->t)[ax];
        if (T >= 0 && len != T) return kn__err(KN_ESHAPE, "Scan: scan inputs of different lengths");
        T = len;
        scan_in[j] = s->t;
        in_static &= s->is_static;
        deps_in |= s->deps;
    }
    if (T < 1 || T > LOOP_MAX_TRIPS) return kn__err(KN_ELIMIT, "Scan of %lld steps", (long long)T);
    kn_status st = subgraph_inits(im, b);
    size_t slots = (K ? K : 1) * (size_t)T;
    kn_tensor **outs = kn__calloc(slots, sizeof *outs);
    bool *ost = kn__calloc(slots, sizeof *ost);
    uint64_t *odp = kn__calloc(slots, sizeof *odp);
    if (!outs || !ost || !odp) st = KN_ENOMEM;
    for (int64_t t = 0; st == KN_OK && t < T; t++) {
        for (size_t k = 0; k < N && !st; k++)
            st = bind(im, b->inputs[k].name, state[k], sst[k], sdp[k]);
        for (size_t j = 0; j < (size_t)M && !st; j++) {
            int64_t at = dir_in[j] ? T - 1 - t : t;
            void *tr = in_static ? kn__trace_pause() : NULL;
            kn_tensor *sl =
                kn_squeeze(kn_slice(scan_in[j], (int)ax_in[j], at, at + 1, 1), (int)ax_in[j]);
            if (in_static) kn__trace_resume(tr);
            st = sl ? bind(im, b->inputs[N + j].name, sl, in_static, deps_in) : kn_last_status();
        }
        if (st || (st = run_nodes(im, b))) break;
        for (size_t k = 0; k < N + K && !st; k++) {
            vslot *s = tab_find(im, b->outputs[k].name, false);
            if (!s || !s->t) {
                st = kn__err(KN_EFORMAT, "Scan: body output %zu is never computed", k);
            } else if (k < N) {
                state[k] = s->t, sst[k] = s->is_static, sdp[k] = s->deps;
            } else {
                size_t o = (k - N) * (size_t)T + (size_t)(dir_out[k - N] ? T - 1 - t : t);
                outs[o] = s->t, ost[o] = s->is_static, odp[o] = s->deps;
            }
        }
    }
    for (size_t k = 0; k < N && !st; k++)
        st = bind(im, nd->outputs[k], state[k], sst[k], sdp[k]);
    for (size_t k = 0; k < K && !st; k++) {
        bool all = true;
        uint64_t deps = 0;
        for (int64_t t = 0; t < T; t++)
            all &= ost[k * (size_t)T + (size_t)t], deps |= odp[k * (size_t)T + (size_t)t];
        int r = kn_tensor_ndim(outs[k * (size_t)T]) + 1, ax;
        if ((st = kn__ox_axis(ax_out[k], r, "scan_output_axes", &ax))) break;
        void *tr = all ? kn__trace_pause() : NULL;
        kn_tensor **piece = outs + k * (size_t)T;
        kn_tensor *cat = kn_stack(piece, (int)(T < 64 ? T : 64), ax);
        for (int64_t i0 = 64; cat && i0 < T; i0 += 64) {
            kn_tensor *parts[2] = {cat, kn_stack(piece + i0, (int)(T - i0 < 64 ? T - i0 : 64), ax)};
            cat = parts[1] ? kn_concat(parts, 2, ax) : NULL;
        }
        if (all) kn__trace_resume(tr);
        st = cat ? bind(im, nd->outputs[N + k], cat, all, deps) : kn_last_status();
    }
    kn__free(outs);
    kn__free(ost);
    kn__free(odp);
    return st;
}

static kn_status control_flow(imp *im, const kn_onnx_node *nd, bool *done) {
    *done = true;
    if (nd->op_type.n == 2 && !memcmp(nd->op_type.p, "If", 2)) return run_if(im, nd);
    if (nd->op_type.n == 4 && !memcmp(nd->op_type.p, "Loop", 4)) return run_loop(im, nd);
    if (nd->op_type.n == 4 && !memcmp(nd->op_type.p, "Scan", 4)) return run_scan(im, nd);
    *done = false;
    return KN_OK;
}

/* The traced function: the whole ONNX graph on in[0..nin). */
static int run_graph(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    imp *im = user;
    const kn_onnx_graph *g = &im->m->graph;
    if ((size_t)max_out < g->n_outputs)
        return kn__err(KN_ELIMIT, "model: %zu outputs, kiln graphs have at most %d", g->n_outputs,
                       max_out);
    kn__free(im->tab);
    im->nodes_run = 0;
    im->cap = pow2_at_least(2 * (names_in(g, 0) + 8));
    if (!(im->tab = kn__calloc(im->cap, sizeof(vslot)))) return KN_ENOMEM;
    for (size_t i = 0; i < g->n_initializers; i++) {
        vslot *s = tab_find(im, g->initializers[i].name, true);
        s->t = im->inits[i];
        s->is_static = true;
    }
    for (int i = 0; i < nin; i++) {
        vslot *s = tab_find(im, im->inputs[i]->name, true);
        s->t = in[i];
        s->is_static = im->frozen[i];
        s->input = i;
        s->deps = i < 64 ? (uint64_t)1 << i : 0;
        im->in_slot[i] = s;
    }
    kn_status st = run_nodes(im, g);
    if (st) return st;
    for (size_t i = 0; i < g->n_outputs; i++) {
        vslot *s = tab_find(im, g->outputs[i].name, false);
        if (!s || !s->t)
            return kn__err(KN_EFORMAT, "graph output '%.*s' is never computed",
                           (int)g->outputs[i].name.n, g->outputs[i].name.p);
        out[i] = s->t;
    }
    return (int)g->n_outputs;
}

#define EXAMPLE_MAX ((int64_t)1 << 28) /* elements of an example made from a declared shape */

/* Example inputs: the caller's, or made from the declared shapes (symbolic dim 0 = batch). */
static kn_status make_examples(imp *im, const kn_onnx_opts *o, int64_t batch, kn_tensor **ex,
                               bool *sym) {
    *sym = im->nin > 0;
    for (int i = 0; i < im->nin; i++) {
        const kn_onnx_value_info *vi = im->inputs[i];
        if (o && o->example && i < o->nexample && o->example[i]) {
            ex[i] = o->example[i];
            *sym = false;
            continue;
        }
        int dt = kn__ox_dtype(vi->elem_type);
        if (dt < 0)
            return kn__err(KN_EUNSUPPORTED, "input '%.*s': dtype %s is not supported",
                           (int)vi->name.n, vi->name.p, kn__ox_dtype_name(vi->elem_type));
        if (!vi->has_shape)
            return kn__err(KN_EUNSUPPORTED, "input '%.*s' has no shape; give example inputs",
                           (int)vi->name.n, vi->name.p);
        if (vi->ndims > KN_MAX_DIMS)
            return kn__err(KN_ELIMIT, "input '%.*s': %d dims, kiln supports %d", (int)vi->name.n,
                           vi->name.p, vi->ndims, KN_MAX_DIMS);
        int64_t shape[KN_MAX_DIMS];
        for (int d = 0; d < vi->ndims; d++) {
            if (vi->dims[d].has_value) {
                shape[d] = vi->dims[d].value;
                if (d == 0) *sym = false;
            } else if (d == 0) {
                shape[d] = batch;
            } else {
                return kn__err(KN_EUNSUPPORTED,
                               "input '%.*s': dim %d ('%.*s') is symbolic; kiln keeps only dim 0 "
                               "symbolic: give example inputs of the shape to use",
                               (int)vi->name.n, vi->name.p, d, (int)vi->dims[d].param.n,
                               vi->dims[d].param.p);
            }
        }
        if (vi->ndims == 0) *sym = false;
        /* the file's declared shape sizes the example: bounded (give examples for more) */
        int64_t numel = 1;
        for (int d = 0; d < vi->ndims; d++)
            if (numel > 0 && (shape[d] > EXAMPLE_MAX || (numel *= shape[d]) > EXAMPLE_MAX))
                return kn__err(KN_ELIMIT,
                               "input '%.*s': a declared shape of more than %lld elements; give "
                               "example inputs",
                               (int)vi->name.n, vi->name.p, (long long)EXAMPLE_MAX);
        if (dt == KN_F32 || dt == KN_F64)
            ex[i] = kn_rand((kn_dtype)dt, vi->ndims, shape);
        else
            ex[i] = kn_zeros((kn_dtype)dt, vi->ndims, shape);
        if (!ex[i]) return kn_last_status();
    }
    return KN_OK;
}

static kn_graph *trace_model(imp *im, kn_tensor *const *ex, bool static_batch) {
    const kn_onnx_graph *g = &im->m->graph;
    kn_trace_opts to = {.input_names = (const char *const *)im->names,
                        .output_names = (const char *const *)im->names + g->n_inputs,
                        .weights = im->wnames,
                        .nweights = (int)g->n_initializers,
                        .static_batch = static_batch};
    memset(im->frozen, 0, sizeof im->frozen);
    kn_graph *gr = kn_trace(run_graph, im, ex, im->nin, &to);
    /* frozen inputs become constants (last first: indices shift) */
    for (int i = im->nin - 1; gr && i >= 0; i--)
        if (im->frozen[i] && kn__g_freeze_input(gr, i, ex[i])) kn_graph_free(gr), gr = NULL;
    return gr;
}

kn_graph *kn_onnx_import_mem(const void *data, size_t n, const char *base_dir,
                             const kn_onnx_opts *o) {
    kn_onnx_model *m = kn__onnx_model_parse(data, n);
    if (!m) return NULL;
    imp im;
    kn_graph *gr = NULL;
    kn_tensor *ex[KN_OX_MAX_IO] = {0};
    bool sym = false;
    bool grad = kn_set_grad_enabled(false);
    kn_scope sc = kn_scope_begin(); /* initializers, examples and temporaries */
    kn_status st = imp_init(&im, m, base_dir);
    if (!st && im.nin > KN_OX_MAX_IO)
        st = kn__err(KN_ELIMIT, "model: %d inputs, at most %d", im.nin, KN_OX_MAX_IO);
    if (!st) st = make_examples(&im, o, 2, ex, &sym);
    im.may_freeze = !st && o && o->example && o->nexample >= im.nin;
    if (!st) {
        bool want_sym = sym && !(o && o->static_batch);
        gr = trace_model(&im, ex, true);
        if (gr && want_sym) {
            /* a second trace at batch 3 tells which dims and attribute entries follow the
             * batch; then the graph must agree with eager execution at batch 3 and 2 */
            kn_tensor *ex3[KN_OX_MAX_IO] = {0};
            kn_status cst = make_examples(&im, o, 3, ex3, &sym);
            kn_graph *g3 = cst ? NULL : trace_model(&im, ex3, true);
            if (!cst) cst = g3 ? kn__g_symbolic_from(gr, g3, 2, 3) : kn_last_status();
            kn_graph_free(g3);
            if (!cst) {
                gr->quiet_plans = true; /* the check's plans are ours, not the user's */
                cst = kn_trace_check(gr, run_graph, &im, ex3, im.nin);
                gr->quiet_plans = false;
                kn__plan_free_all(gr);
                gr->plans_built = 0;
            }
            if (cst) {
                kn__log(2,
                        "onnx import: the batch dimension cannot stay symbolic (%s); "
                        "importing with static shapes",
                        kn_last_error());
                kn_graph_free(gr);
                kn_clear_error();
                gr = trace_model(&im, ex, true);
            }
        }
    }
    if (st) kn_graph_free(gr), gr = NULL;
    char msg[800] = "";
    if (!gr) snprintf(msg, sizeof msg, "%s", kn_last_error());
    kn_status err = kn_last_status();
    imp_free(&im);
    kn_scope_end(sc);
    kn__onnx_model_free(m);
    kn_set_grad_enabled(grad);
    if (!gr) return kn__errp(err ? err : KN_EINTERNAL, "onnx import: %s", msg);
    return gr;
}

/* Reads a whole file (callers free with kn__free). */
static void *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return kn__errp(KN_EIO, "cannot open '%s'", path);
    void *buf = NULL;
    if (fseeko(f, 0, SEEK_END) == 0) {
        off_t sz = ftello(f);
        if (sz >= 0 && fseeko(f, 0, SEEK_SET) == 0 && (buf = kn__malloc((size_t)sz + 1))) {
            if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
                kn__free(buf);
                buf = kn__errp(KN_EIO, "cannot read '%s'", path);
            }
            *n = (size_t)sz;
        }
    }
    fclose(f);
    if (!buf && !kn_last_status()) kn__err(KN_EIO, "cannot read '%s'", path);
    return buf;
}

static void dir_of(const char *path, char *dir, size_t n) {
    const char *sl = strrchr(path, '/');
    if (!sl)
        snprintf(dir, n, ".");
    else
        snprintf(dir, n, "%.*s", (int)((sl - path) ? (sl - path) : 1), path);
}

kn_graph *kn_onnx_import(const char *path, const kn_onnx_opts *o) {
    if (!path) return kn__errp(KN_EINVAL, "onnx import: NULL path");
    size_t n = 0;
    void *buf = read_file(path, &n);
    if (!buf) return NULL;
    char dir[1024];
    dir_of(path, dir, sizeof dir);
    kn_graph *g = kn_onnx_import_mem(buf, n, dir, o);
    kn__free(buf);
    return g;
}

kn_tensor *kn_onnx_read_tensor(const char *path) {
    if (!path) return kn__errp(KN_EINVAL, "onnx tensor: NULL path");
    size_t n = 0;
    void *buf = read_file(path, &n);
    if (!buf) return NULL;
    kn_onnx_tensor_file *f = kn__onnx_tensor_parse(buf, n);
    kn_tensor *t = f ? kn__ox_tensor(&f->t, NULL) : NULL;
    kn__onnx_tensor_file_free(f);
    kn__free(buf);
    if (!t) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        return kn__errp(kn_last_status(), "%s: %s", path, msg);
    }
    return t;
}

/* ---- pre-flight ---- */

typedef struct issue {
    char what[200];
    int count;
} issue;

static void add_issue(issue *is, int *n, int max, const char *what) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(is[i].what, what)) {
            is[i].count++;
            return;
        }
    if (*n < max) {
        snprintf(is[*n].what, sizeof is[*n].what, "%s", what);
        is[(*n)++].count = 1;
    }
}

static void check_graph(const kn_onnx_graph *g, int64_t opset, issue *is, int *n, int max) {
    char buf[200];
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kn_onnx_node *nd = &g->nodes[i];
        bool known;
        if (!is_default_domain(nd->domain)) {
            snprintf(buf, sizeof buf, "op %.*s of domain '%.*s'", (int)nd->op_type.n, nd->op_type.p,
                     (int)nd->domain.n, nd->domain.p);
            add_issue(is, n, max, buf);
        } else if (!kn__ox_find(nd->op_type.p, nd->op_type.n, opset, &known) &&
                   !(nd->op_type.n == 2 && !memcmp(nd->op_type.p, "If", 2)) &&
                   !(nd->op_type.n == 4 && !memcmp(nd->op_type.p, "Loop", 4)) &&
                   !(nd->op_type.n == 4 && !memcmp(nd->op_type.p, "Scan", 4) && opset >= 9)) {
            snprintf(buf, sizeof buf, known ? "op %.*s at opset %lld" : "op %.*s",
                     (int)nd->op_type.n, nd->op_type.p, (long long)opset);
            add_issue(is, n, max, buf);
        }
        for (size_t a = 0; a < nd->n_attrs; a++)
            if (nd->attrs[a].g) check_graph(nd->attrs[a].g, opset, is, n, max);
    }
    for (size_t i = 0; i < g->n_initializers; i++)
        if (kn__ox_dtype(g->initializers[i].data_type) < 0) {
            snprintf(buf, sizeof buf, "initializer dtype %s",
                     kn__ox_dtype_name(g->initializers[i].data_type));
            add_issue(is, n, max, buf);
        }
    const kn_onnx_value_info *vis[2] = {g->inputs, g->outputs};
    size_t nvis[2] = {g->n_inputs, g->n_outputs};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < nvis[k]; i++) {
            const kn_onnx_value_info *vi = &vis[k][i];
            if (!vi->has_tensor_type)
                snprintf(buf, sizeof buf, "graph %s that is not a tensor (sequence, map, optional)",
                         k ? "output" : "input");
            else if (vi->elem_type && kn__ox_dtype(vi->elem_type) < 0)
                snprintf(buf, sizeof buf, "graph %s dtype %s", k ? "output" : "input",
                         kn__ox_dtype_name(vi->elem_type));
            else
                continue;
            add_issue(is, n, max, buf);
        }
}

int kn_onnx_check_mem(const void *data, size_t n, FILE *report) {
    kn_onnx_model *m = kn__onnx_model_parse(data, n);
    if (!m) return kn_last_status();
    int64_t opset = model_opset(m);
    issue is[256];
    int ni = 0, total = 0;
    if (opset < 1) {
        add_issue(is, &ni, 256, "no opset_import for the ai.onnx domain");
    } else {
        if (opset < 7 || opset > 17) {
            char buf[100];
            snprintf(buf, sizeof buf, "opset %lld (kiln targets 7..17)", (long long)opset);
            if (report) fprintf(report, "note: %s\n", buf);
        }
        check_graph(&m->graph, opset, is, &ni, 256);
    }
    for (int i = 0; i < ni; i++) {
        total += is[i].count;
        if (report) fprintf(report, "unsupported: %s (x%d)\n", is[i].what, is[i].count);
    }
    if (report) {
        if (ni)
            fprintf(report, "%d unsupported item%s (%d distinct) in %zu nodes\n", total,
                    total == 1 ? "" : "s", ni, m->graph.n_nodes);
        else
            fprintf(report, "ok: %zu nodes, opset %lld, every op supported\n", m->graph.n_nodes,
                    (long long)opset);
    }
    kn__onnx_model_free(m);
    return ni;
}

int kn_onnx_check(const char *path, FILE *report) {
    if (!path) return kn__err(KN_EINVAL, "onnx check: NULL path");
    size_t n = 0;
    void *buf = read_file(path, &n);
    if (!buf) return kn_last_status();
    int r = kn_onnx_check_mem(buf, n, report);
    kn__free(buf);
    return r;
}
