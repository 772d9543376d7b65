/*
 * export.c - kiln graph -> ONNX ModelProto file (issue #5, the direction opposite to import.c):
 * kn_onnx_export writes the graph as traced (g->traced once compiled, else g itself: a traced,
 * loaded or imported graph) as an ai.onnx model at opset 13..17.
 *
 * How: each live kiln node becomes one or a few ONNX nodes (the table `ops` at the end: linear ->
 * Gemm, or MatMul with W^T as an initializer (as PyTorch exports it) + Add; gelu -> an Erf or Tanh
 * composition; layer_norm -> LayerNormalization at opset 17, a ReduceMean / Sqrt composition
 * before; ...). Weights become initializers (raw_data, little endian: the host's order) under
 * their kiln names, made unique and printable; attribute values the ONNX op takes as inputs
 * (Reshape's shape, Slice's starts, Clip's bounds, ...) become initializers named after their
 * node ("reshape_7/shape").
 *
 * Symbolic batch: a value dim marked `sym` that equals the traced batch is the dim_param "batch"
 * in the graph's inputs and outputs. An attribute entry that follows the batch (sym_attr: k *
 * batch; only reshape / expand "shape" and slice "start" / "end") is written as 0 where Reshape
 * can copy the input's dim, 1 where Expand keeps it, -1 when it is a reshape's only such entry,
 * else computed at run time as k * (dim 0 of a graph input) with Shape -> Gather -> Mul -> Concat.
 *
 * The protobuf is written by hand (no library): a growable byte buffer with varints, keys and
 * length-delimited submessages built in their own buffer first, then copied into the parent's.
 * Field numbers are onnx.proto's (see onnx_model.c). Repeated scalars are written unpacked (proto2
 * style, which every reader accepts).
 *
 * Does not: export training graphs (batch_norm training mode, dropout masks, losses, backward
 * ops), ops without an ONNX equivalent (the table), other attributes that follow the batch, or
 * fused groups: such a node gives KN_EUNSUPPORTED naming the op and the node, and nothing is
 * written. Nodes whose outputs nothing uses are skipped (they cannot fail the export); dropout is
 * Identity (ONNX inference semantics). The whole model is built in memory, then written to
 * "<path>.tmp.<pid>.<n>", fsync'd and renamed over path.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph/graph_impl.h"
#include "kiln/onnx.h"
#include "onnx/onnx_model.h"

#define EX_MAX_BYTES ((size_t)2 << 30) /* protobuf messages are limited to 2 GiB */

/* ================================================================ protobuf writer */

typedef struct pbuf {
    uint8_t *p;
    size_t n, cap;
    bool bad; /* an allocation failed: the content is incomplete */
} pbuf;

static void pb_free(pbuf *b) {
    kn__free(b->p);
    *b = (pbuf){0};
}

static bool pb_reserve(pbuf *b, size_t more) {
    if (b->bad) return false;
    if (more <= b->cap - b->n) return true;
    if (more > EX_MAX_BYTES || b->n > EX_MAX_BYTES) {
        b->bad = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < more)
        cap *= 2;
    uint8_t *p = kn__realloc(b->p, cap);
    if (!p) {
        b->bad = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void pb_raw(pbuf *b, const void *d, size_t n) {
    if (n == 0 || !pb_reserve(b, n)) return;
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void pb_varint(pbuf *b, uint64_t v) {
    uint8_t t[10];
    int k = 0;
    do {
        t[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) t[k] |= 0x80;
        k++;
    } while (v);
    pb_raw(b, t, (size_t)k);
}

static void pb_key(pbuf *b, uint32_t num, int wire) {
    pb_varint(b, ((uint64_t)num << 3) | (uint64_t)wire);
}

/* int64 / int32 / enum field: two's complement (a negative value takes 10 bytes) */
static void pb_int(pbuf *b, uint32_t num, int64_t v) {
    pb_key(b, num, KN_PB_VARINT);
    pb_varint(b, (uint64_t)v);
}

static void pb_float(pbuf *b, uint32_t num, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint8_t t[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    pb_key(b, num, KN_PB_I32);
    pb_raw(b, t, 4);
}

static void pb_bytes(pbuf *b, uint32_t num, const void *d, size_t n) {
    pb_key(b, num, KN_PB_LEN);
    pb_varint(b, n);
    pb_raw(b, d, n);
}

static void pb_str(pbuf *b, uint32_t num, const char *s) {
    pb_bytes(b, num, s, strlen(s));
}

/* Appends child as submessage `num` and frees it. */
static void pb_msg(pbuf *b, uint32_t num, pbuf *child) {
    if (child->bad) b->bad = true;
    pb_bytes(b, num, child->p, child->n);
    pb_free(child);
}

/* ================================================================ onnx.proto field numbers */
enum {
    M_IR_VERSION = 1, /* ModelProto */
    M_PRODUCER_NAME = 2,
    M_PRODUCER_VERSION = 3,
    M_GRAPH = 7,
    M_OPSET_IMPORT = 8,
    OS_DOMAIN = 1, /* OperatorSetIdProto */
    OS_VERSION = 2,
    G_NODE = 1, /* GraphProto */
    G_NAME = 2,
    G_INITIALIZER = 5,
    G_INPUT = 11,
    G_OUTPUT = 12,
    N_INPUT = 1, /* NodeProto */
    N_OUTPUT = 2,
    N_NAME = 3,
    N_OP_TYPE = 4,
    N_ATTRIBUTE = 5,
    A_NAME = 1, /* AttributeProto */
    A_F = 2,
    A_I = 3,
    A_S = 4,
    A_INTS = 8,
    A_TYPE = 20,
    T_DIMS = 1, /* TensorProto */
    T_DATA_TYPE = 2,
    T_NAME = 8,
    T_RAW_DATA = 9,
    VI_NAME = 1, /* ValueInfoProto */
    VI_TYPE = 2,
    TP_TENSOR = 1, /* TypeProto */
    TT_ELEM_TYPE = 1,
    TT_SHAPE = 2,
    SH_DIM = 1, /* TensorShapeProto */
    D_VALUE = 1,
    D_PARAM = 2,
};
enum { AT_FLOAT = 1, AT_INT = 2, AT_STRING = 3, AT_INTS = 7 };

static int onnx_dtype(kn_dtype dt) {
    switch (dt) {
    case KN_F32: return KN_ONNX_FLOAT;
    case KN_F64: return KN_ONNX_DOUBLE;
    case KN_F16: return KN_ONNX_FLOAT16;
    case KN_BF16: return 16;
    case KN_I8: return KN_ONNX_INT8;
    case KN_U8: return KN_ONNX_UINT8;
    case KN_I32: return KN_ONNX_INT32;
    case KN_I64: return KN_ONNX_INT64;
    case KN_BOOL: return KN_ONNX_BOOL;
    default: return 0;
    }
}

/* ---- attributes: each helper appends one `attribute` field of a NodeProto ---- */
static void at_int(pbuf *a, const char *name, int64_t v) {
    pbuf t = {0};
    pb_str(&t, A_NAME, name);
    pb_int(&t, A_TYPE, AT_INT);
    pb_int(&t, A_I, v);
    pb_msg(a, N_ATTRIBUTE, &t);
}
static void at_float(pbuf *a, const char *name, double v) {
    pbuf t = {0};
    pb_str(&t, A_NAME, name);
    pb_int(&t, A_TYPE, AT_FLOAT);
    pb_float(&t, A_F, (float)v);
    pb_msg(a, N_ATTRIBUTE, &t);
}
static void at_ints(pbuf *a, const char *name, const int64_t *v, int n) {
    pbuf t = {0};
    pb_str(&t, A_NAME, name);
    pb_int(&t, A_TYPE, AT_INTS);
    for (int i = 0; i < n; i++)
        pb_int(&t, A_INTS, v[i]);
    pb_msg(a, N_ATTRIBUTE, &t);
}
static void at_str(pbuf *a, const char *name, const char *s) {
    pbuf t = {0};
    pb_str(&t, A_NAME, name);
    pb_int(&t, A_TYPE, AT_STRING);
    pb_str(&t, A_S, s);
    pb_msg(a, N_ATTRIBUTE, &t);
}

/* ================================================================ the exporter */

/* an open-addressing set of strings */
typedef struct strset {
    const char **s;
    size_t cap, n;
} strset;

typedef struct ex {
    const kn_graph *g;
    int opset;
    pbuf nodes, inits; /* GraphProto fields: node (1) and initializer (5) entries */
    bool *used;        /* per value: read by a live node or a graph output */
    const char **vname;
    const char **oname; /* per graph output (a value listed twice gets an Identity) */
    const char *batch;  /* the run-time batch (1-D int64), once emitted */
    const char **wt;    /* per weight value: its transposed initializer, once made */
    /* every name handed out (values, initializers): an open-addressing set of owned strings */
    strset names;  /* owns its strings */
    strset refs;   /* names some emitted node reads (borrowed from `names`) */
    int cur;       /* node being converted */
    int sub;       /* ONNX nodes emitted for it so far */
    bool oom;      /* a name allocation failed */
    char what[80]; /* "node 12 (linear)" for messages */
} ex;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static bool set_has(const strset *t, const char *s) {
    if (!t->cap) return false;
    for (size_t i = hash_str(s) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (!t->s[i]) return false;
        if (strcmp(t->s[i], s) == 0) return true;
    }
}

static bool set_put(strset *t, const char *s) {
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        const char **u = kn__calloc(cap, sizeof(char *));
        if (!u) return false;
        for (size_t k = 0; k < t->cap; k++) {
            if (!t->s[k]) continue;
            size_t i = hash_str(t->s[k]) & (cap - 1);
            while (u[i])
                i = (i + 1) & (cap - 1);
            u[i] = t->s[k];
        }
        kn__free(t->s);
        t->s = u;
        t->cap = cap;
    }
    size_t i = hash_str(s) & (t->cap - 1);
    while (t->s[i])
        i = (i + 1) & (t->cap - 1);
    t->s[i] = s;
    t->n++;
    return true;
}

/* A new unique name from base ("<base>", "<base>.1", ...), owned by the set. Characters outside
 * printable ASCII become '_'. Returns "" (and sets oom) when out of memory. */
static const char *uniq(ex *e, const char *base) {
    size_t len = strlen(base);
    if (len > 900) len = 900;
    char *s = kn__malloc(len + 32); /* room for "value" and a ".<k>" suffix */
    if (!s) {
        e->oom = true;
        return "";
    }
    memcpy(s, base, len);
    s[len] = 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) s[i] = '_';
    if (len == 0) memcpy(s, "value", 6);
    size_t bl = strlen(s);
    for (int k = 1; set_has(&e->names, s); k++)
        snprintf(s + bl, len + 32 - bl, ".%d", k);
    if (!set_put(&e->names, s)) {
        kn__free(s);
        e->oom = true;
        return "";
    }
    return s;
}

/* A fresh name for a temporary of the current node: "<op>_<node>/<what>". */
static const char *tmp_name(ex *e, const char *what) {
    char b[160];
    snprintf(b, sizeof b, "%s_%d/%s", e->g->nodes[e->cur].op->name, e->cur, what);
    return uniq(e, b);
}

static kn_status unsup(ex *e, const char *fmt, ...) KN_PRINTF(2, 3);
static kn_status unsup(ex *e, const char *fmt, ...) {
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kn__err(KN_EUNSUPPORTED, "onnx export: %s: %s", e->what, msg);
}

/* ---- nodes and initializers ---- */

/* Emits one ONNX node; attrs (may be NULL) holds `attribute` fields and is consumed. An empty
 * input name is an absent optional input. */
static void node(ex *e, const char *op, const char *const *in, int nin, const char *const *out,
                 int nout, pbuf *attrs) {
    pbuf t = {0};
    for (int i = 0; i < nin; i++) {
        pb_str(&t, N_INPUT, in[i]);
        if (*in[i] && !set_has(&e->refs, in[i]) && !set_put(&e->refs, in[i])) e->oom = true;
    }
    for (int i = 0; i < nout; i++)
        pb_str(&t, N_OUTPUT, out[i]);
    char name[96];
    if (e->sub)
        snprintf(name, sizeof name, "%s_%d/%d", e->g->nodes[e->cur].op->name, e->cur, e->sub);
    else
        snprintf(name, sizeof name, "%s_%d", e->g->nodes[e->cur].op->name, e->cur);
    e->sub++;
    pb_str(&t, N_NAME, name);
    pb_str(&t, N_OP_TYPE, op);
    if (attrs) {
        if (attrs->bad) t.bad = true;
        pb_raw(&t, attrs->p, attrs->n);
        pb_free(attrs);
    }
    pb_msg(&e->nodes, G_NODE, &t);
}

/* One-input, one-output node writing a fresh temporary (or `out` when given). */
static const char *op1(ex *e, const char *op, const char *x, const char *out, pbuf *attrs) {
    const char *o = out ? out : tmp_name(e, op);
    node(e, op, &x, 1, &o, 1, attrs);
    return o;
}
static const char *op2(ex *e, const char *op, const char *a, const char *b, const char *out,
                       pbuf *attrs) {
    const char *o = out ? out : tmp_name(e, op);
    const char *in[2] = {a, b};
    node(e, op, in, 2, &o, 1, attrs);
    return o;
}

/* A TensorProto initializer from contiguous little-endian data; returns its name. */
static const char *init_named(ex *e, const char *name, kn_dtype dt, int ndim, const int64_t *shape,
                              const void *data) {
    pbuf t = {0};
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        pb_int(&t, T_DIMS, shape[d]);
        n *= shape[d];
    }
    pb_int(&t, T_DATA_TYPE, onnx_dtype(dt));
    pb_str(&t, T_NAME, name);
    pb_bytes(&t, T_RAW_DATA, data, (size_t)n * kn_dtype_size(dt));
    pb_msg(&e->inits, G_INITIALIZER, &t);
    return name;
}

/* An int64 initializer of the current node: 1-D of n values, or 0-d when scalar. */
static const char *c_i64(ex *e, const char *what, const int64_t *v, int n, bool scalar) {
    int64_t shape[1] = {n};
    return init_named(e, tmp_name(e, what), KN_I64, scalar ? 0 : 1, shape, v);
}
/* A 0-d constant of dtype dt holding v. */
static const char *c_scalar(ex *e, const char *what, kn_dtype dt, double v) {
    uint64_t buf = 0;
    kn__store_f64(dt, &buf, v);
    return init_named(e, tmp_name(e, what), dt, 0, NULL, &buf);
}

/* ---- the current node's view ---- */
typedef struct nctx {
    const kn_gnode *n;
    const char *in[KN_MAX_INS];
    const char *out[KN_MAX_OUTS];
    const kn_gval *x; /* input 0 */
    const kn_gval *y; /* output 0 */
} nctx;

static int64_t a_int(const nctx *c, const char *name, int64_t def) {
    return kn__attr_int(&c->n->attrs, name, def);
}
static double a_float(const nctx *c, const char *name, double def) {
    return kn__attr_float(&c->n->attrs, name, def);
}
static int a_ints(const nctx *c, const char *name, int64_t *out) {
    return kn__attr_ints(&c->n->attrs, name, out, KN_MAX_ATTR_INTS);
}
static bool a_has(const nctx *c, const char *name) {
    return kn__attr_has(&c->n->attrs, name);
}
/* Fails when output k (k >= 1) of the node is used: the mapping only computes output 0. */
static kn_status only_out0(ex *e, const nctx *c) {
    for (int k = 1; k < c->n->nout; k++)
        if (e->used[c->n->out[k]])
            return unsup(e, "output %d is used, only output 0 has an ONNX equivalent", k);
    return KN_OK;
}

/* Axis normalised into [0, ndim); ndim 0 gives 0. */
static int64_t norm_axis(int64_t a, int ndim) {
    return ndim > 0 && a < 0 ? a + ndim : a;
}

/* Reduce over axes with keepdims: ReduceSum takes axes as an input (opset 13+), the others as an
 * attribute (until opset 18). An empty axes list reduces nothing: Identity. */
static const char *reduce(ex *e, const char *op, const char *x, const int64_t *axes, int naxes,
                          bool keep, const char *out) {
    if (naxes == 0) return op1(e, "Identity", x, out, NULL);
    pbuf a = {0};
    at_int(&a, "keepdims", keep);
    if (strcmp(op, "ReduceSum") == 0)
        return op2(e, op, x, c_i64(e, "axes", axes, naxes, false), out, &a);
    at_ints(&a, "axes", axes, naxes);
    return op1(e, op, x, out, &a);
}

/* The reduced axes of a kiln reduction ("axes" absent or empty: all), normalised. */
static int red_axes(const nctx *c, int64_t *axes) {
    int64_t v[KN_MAX_ATTR_INTS];
    int n = a_ints(c, "axes", v), nd = c->x->ndim;
    if (n <= 0) {
        for (int d = 0; d < nd; d++)
            axes[d] = d;
        return nd;
    }
    for (int i = 0; i < n; i++)
        axes[i] = norm_axis(v[i], nd);
    return nd == 0 ? 0 : n;
}

/* The batch size at run time as a 1-D int64 tensor of one element: dim 0 of a graph input whose
 * dim 0 is the batch (Shape -> Gather, emitted once, at first use). NULL when no input has it. */
static const char *batch_1d(ex *e) {
    if (e->batch) return e->batch;
    const kn_graph *g = e->g;
    for (int i = 0; i < g->ninputs; i++) {
        const kn_gval *v = &g->vals[g->inputs[i]];
        if (!(v->sym & 1) || v->shape[0] != g->batch) continue;
        const char *shp = op1(e, "Shape", e->vname[g->inputs[i]], tmp_name(e, "batch_shape"), NULL);
        int64_t idx = 0;
        pbuf a = {0};
        at_int(&a, "axis", 0);
        e->batch = op2(e, "Gather", shp, c_i64(e, "batch_index", &idx, 1, false),
                       tmp_name(e, "batch"), &a);
        return e->batch;
    }
    return NULL;
}

/* True when entry j of the node's int attribute `name` follows the batch (sym_attr). */
static bool sym_entry(const nctx *c, const char *name, int j) {
    for (int a = 0; a < c->n->attrs.n && a < 4; a++)
        if (strcmp(c->n->attrs.a[a].name, name) == 0)
            return j < 8 && (c->n->sym_attr >> (8 * a + j) & 1);
    return false;
}

/* An int64 operand v[0..n): the entries in `dyn` (a bit mask) are k * batch at trace time and
 * become k * (the run-time batch). All static: one initializer; else Concat of pieces. NULL when
 * the graph has no input to read the batch from. */
static const char *ints_operand(ex *e, const char *what, const int64_t *v, int n, uint32_t dyn) {
    if (!dyn) return c_i64(e, what, v, n, false);
    const char *b = batch_1d(e);
    if (!b || e->g->batch <= 0) return NULL;
    const char *parts[KN_MAX_ATTR_INTS];
    int np = 0;
    for (int i = 0; i < n;) {
        if (dyn >> i & 1) {
            int64_t k = v[i] / e->g->batch;
            parts[np++] = k == 1 ? b : op2(e, "Mul", b, c_i64(e, "k", &k, 1, false), NULL, NULL);
            i++;
            continue;
        }
        int j = i;
        while (j < n && !(dyn >> j & 1))
            j++;
        parts[np++] = c_i64(e, what, v + i, j - i, false);
        i = j;
    }
    pbuf a = {0};
    at_int(&a, "axis", 0);
    const char *o = tmp_name(e, what);
    node(e, "Concat", parts, np, &o, 1, &a);
    return o;
}

/* ================================================================ op converters */

typedef struct exop exop;
typedef kn_status (*exfn)(ex *e, const exop *o, nctx *c);
struct exop {
    const char *kiln, *onnx;
    exfn fn;
    int since; /* lowest opset the mapping works at (0: any) */
};

/* same-name op on all inputs, one output */
static kn_status x_same(ex *e, const exop *o, nctx *c) {
    kn_status st = only_out0(e, c);
    if (st) return st;
    node(e, o->onnx, c->in, c->n->nin, c->out, 1, NULL);
    return KN_OK;
}

/* logical ops: ONNX wants bool operands, kiln takes any dtype (nonzero is true) */
static kn_status x_logic(ex *e, const exop *o, nctx *c) {
    const char *in[2];
    for (int i = 0; i < c->n->nin && i < 2; i++) {
        in[i] = c->in[i];
        if (e->g->vals[c->n->in[i]].dtype != KN_BOOL) {
            pbuf a = {0};
            at_int(&a, "to", KN_ONNX_BOOL);
            in[i] = op1(e, "Cast", in[i], NULL, &a);
        }
    }
    node(e, o->onnx, in, c->n->nin, c->out, 1, NULL);
    return KN_OK;
}

static kn_status x_ne(ex *e, const exop *o, nctx *c) {
    (void)o;
    op1(e, "Not", op2(e, "Equal", c->in[0], c->in[1], NULL, NULL), c->out[0], NULL);
    return KN_OK;
}

static kn_status x_identity(ex *e, const exop *o, nctx *c) {
    (void)o;
    kn_status st = only_out0(e, c);
    if (st) return st;
    op1(e, "Identity", c->in[0], c->out[0], NULL);
    return KN_OK;
}

static kn_status x_leaky(ex *e, const exop *o, nctx *c) {
    (void)o;
    pbuf a = {0};
    at_float(&a, "alpha", a_float(c, "negative_slope", 0.01));
    op1(e, "LeakyRelu", c->in[0], c->out[0], &a);
    return KN_OK;
}

static kn_status x_elu(ex *e, const exop *o, nctx *c) {
    (void)o;
    pbuf a = {0};
    at_float(&a, "alpha", a_float(c, "alpha", 1.0));
    op1(e, "Elu", c->in[0], c->out[0], &a);
    return KN_OK;
}

/* gelu: x * 0.5 * (1 + erf(x / sqrt 2)), or the tanh form
 * 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) (PyTorch's approximate='tanh') */
static kn_status x_gelu(ex *e, const exop *o, nctx *c) {
    (void)o;
    kn_dtype dt = c->x->dtype;
    const char *x = c->in[0], *inner;
    if (a_int(c, "approximate", 0)) {
        const char *x3 = op2(e, "Mul", op2(e, "Mul", x, x, NULL, NULL), x, NULL, NULL);
        const char *t = op2(
            e, "Add", x, op2(e, "Mul", x3, c_scalar(e, "k", dt, 0.044715), NULL, NULL), NULL, NULL);
        inner = op1(e, "Tanh",
                    op2(e, "Mul", t, c_scalar(e, "sqrt_2_pi", dt, sqrt(2.0 / M_PI)), NULL, NULL),
                    NULL, NULL);
    } else {
        inner = op1(e, "Erf", op2(e, "Mul", x, c_scalar(e, "rsqrt2", dt, M_SQRT1_2), NULL, NULL),
                    NULL, NULL);
    }
    const char *one = op2(e, "Add", inner, c_scalar(e, "one", dt, 1.0), NULL, NULL);
    const char *half = op2(e, "Mul", x, c_scalar(e, "half", dt, 0.5), NULL, NULL);
    op2(e, "Mul", half, one, c->out[0], NULL);
    return KN_OK;
}

static kn_status x_silu(ex *e, const exop *o, nctx *c) {
    (void)o;
    op2(e, "Mul", c->in[0], op1(e, "Sigmoid", c->in[0], NULL, NULL), c->out[0], NULL);
    return KN_OK;
}

/* softplus(x) = log(1 + e^(beta x)) / beta; kiln's threshold (x past it) differs by < e^-20 */
static kn_status x_softplus(ex *e, const exop *o, nctx *c) {
    (void)o;
    double beta = a_float(c, "beta", 1.0);
    if (beta == 1.0) {
        op1(e, "Softplus", c->in[0], c->out[0], NULL);
        return KN_OK;
    }
    const char *b = c_scalar(e, "beta", c->x->dtype, beta);
    op2(e, "Div", op1(e, "Softplus", op2(e, "Mul", c->in[0], b, NULL, NULL), NULL, NULL), b,
        c->out[0], NULL);
    return KN_OK;
}

static kn_status x_square(ex *e, const exop *o, nctx *c) {
    (void)o;
    op2(e, "Mul", c->in[0], c->in[0], c->out[0], NULL);
    return KN_OK;
}
static kn_status x_rsqrt(ex *e, const exop *o, nctx *c) {
    (void)o;
    op1(e, "Reciprocal", op1(e, "Sqrt", c->in[0], NULL, NULL), c->out[0], NULL);
    return KN_OK;
}
static kn_status x_log1p(ex *e, const exop *o, nctx *c) {
    (void)o;
    op1(e, "Log", op2(e, "Add", c->in[0], c_scalar(e, "one", c->x->dtype, 1.0), NULL, NULL),
        c->out[0], NULL);
    return KN_OK;
}

static kn_status clip(ex *e, nctx *c, bool has_lo, double lo, bool has_hi, double hi) {
    const char *in[3] = {c->in[0], has_lo ? c_scalar(e, "min", c->x->dtype, lo) : "",
                         has_hi ? c_scalar(e, "max", c->x->dtype, hi) : ""};
    node(e, "Clip", in, has_hi ? 3 : has_lo ? 2 : 1, c->out, 1, NULL);
    return KN_OK;
}
static kn_status x_clamp(ex *e, const exop *o, nctx *c) {
    (void)o;
    return clip(e, c, a_has(c, "min"), a_float(c, "min", 0), a_has(c, "max"), a_float(c, "max", 0));
}
static kn_status x_relu6(ex *e, const exop *o, nctx *c) {
    (void)o;
    return clip(e, c, true, 0, true, 6);
}

static kn_status x_cast(ex *e, const exop *o, nctx *c) {
    (void)o;
    pbuf a = {0};
    at_int(&a, "to", onnx_dtype(c->y->dtype));
    op1(e, "Cast", c->in[0], c->out[0], &a);
    return KN_OK;
}

static kn_status x_softmax(ex *e, const exop *o, nctx *c) {
    pbuf a = {0};
    at_int(&a, "axis", norm_axis(a_int(c, "dim", -1), c->x->ndim));
    op1(e, o->onnx, c->in[0], c->out[0], &a);
    return KN_OK;
}

/* W^T of a 2-D weight value w as an initializer "<name>_t" (made once per weight), or NULL
 * when w is not a weight. */
static const char *weight_t(ex *e, int w) {
    const kn_gval *gv = &e->g->vals[w];
    if (gv->kind != GV_WEIGHT || !gv->data || gv->ndim != 2) return NULL;
    if (e->wt[w]) return e->wt[w];
    kn_tensor *t = kn__contig(gv->data);
    if (!t) {
        e->oom = true;
        return NULL;
    }
    int64_t R = t->shape[0], C = t->shape[1], shape[2] = {C, R};
    size_t es = kn_dtype_size(t->dtype);
    char *buf = kn__malloc((size_t)(R > 0 && C > 0 ? R * C : 1) * es), name[1024];
    if (!buf) {
        kn_tensor_free(t);
        e->oom = true;
        return NULL;
    }
    const char *src = kn__ptr(t);
    for (int64_t i = 0; i < R; i++)
        for (int64_t j = 0; j < C; j++)
            memcpy(buf + (size_t)(j * R + i) * es, src + (size_t)(i * C + j) * es, es);
    snprintf(name, sizeof name, "%s_t", e->vname[w]);
    e->wt[w] = init_named(e, uniq(e, name), t->dtype, 2, shape, buf);
    kn__free(buf);
    kn_tensor_free(t);
    return e->wt[w];
}

/* linear: y = x W^T + b. 2-D x: Gemm(transB = 1); else MatMul(x, W^T) (+ b) with W^T an
 * initializer when W is a weight (as PyTorch exports it), else a Transpose node. */
static kn_status x_linear(ex *e, const exop *o, nctx *c) {
    (void)o;
    if (c->x->ndim == 2) {
        pbuf a = {0};
        at_int(&a, "transB", 1);
        node(e, "Gemm", c->in, c->n->nin, c->out, 1, &a);
        return KN_OK;
    }
    const char *wt = weight_t(e, c->n->in[1]);
    if (!wt) wt = op1(e, "Transpose", c->in[1], NULL, NULL); /* default perm: reversed */
    if (c->n->nin < 3) {
        op2(e, "MatMul", c->in[0], wt, c->out[0], NULL);
        return KN_OK;
    }
    op2(e, "Add", op2(e, "MatMul", c->in[0], wt, NULL, NULL), c->in[2], c->out[0], NULL);
    return KN_OK;
}

/* (C, H, W) inputs of 2-D ops: ONNX wants (N, C, H, W); unsqueeze and squeeze around them */
static const char *unsq0(ex *e, const char *x) {
    int64_t z = 0;
    return op2(e, "Unsqueeze", x, c_i64(e, "axes", &z, 1, false), NULL, NULL);
}
static void sq0(ex *e, const char *x, const char *out) {
    int64_t z = 0;
    op2(e, "Squeeze", x, c_i64(e, "axes", &z, 1, false), out, NULL);
}

/* conv attrs: "stride", "pads" (1, 2 or 4 values: top, left, bottom, right), "dilation",
 * "groups"; conv_transpose2d adds "output_padding" */
static void conv_attrs(const nctx *c, pbuf *a, bool transpose) {
    int64_t v[KN_MAX_ATTR_INTS], p[4] = {0, 0, 0, 0}, s[2] = {1, 1}, d[2] = {1, 1};
    int n = a_ints(c, "stride", v);
    if (n >= 1) s[0] = s[1] = v[0];
    if (n >= 2) s[1] = v[1];
    n = a_ints(c, "dilation", v);
    if (n >= 1) d[0] = d[1] = v[0];
    if (n >= 2) d[1] = v[1];
    n = a_ints(c, "pads", v);
    if (n == 1) p[0] = p[1] = p[2] = p[3] = v[0];
    if (n == 2) p[0] = p[2] = v[0], p[1] = p[3] = v[1];
    if (n == 4) memcpy(p, v, sizeof p);
    at_ints(a, "strides", s, 2);
    at_ints(a, "pads", p, 4);
    at_ints(a, "dilations", d, 2);
    at_int(a, "group", a_int(c, "groups", 1));
    if (transpose) {
        int64_t op_[2] = {0, 0};
        n = a_ints(c, "output_padding", v);
        if (n >= 1) op_[0] = op_[1] = v[0];
        if (n >= 2) op_[1] = v[1];
        at_ints(a, "output_padding", op_, 2);
    }
}

static kn_status x_conv(ex *e, const exop *o, nctx *c) {
    bool t = strcmp(o->kiln, "conv_transpose2d") == 0;
    if (c->x->ndim != 4) return unsup(e, "input of rank %d (only (N, C, H, W))", c->x->ndim);
    pbuf a = {0};
    conv_attrs(c, &a, t);
    const kn_gval *w = &e->g->vals[c->n->in[1]];
    at_ints(&a, "kernel_shape", w->shape + 2, 2);
    bool relu = a_int(c, "relu", 0) != 0;
    const char *y = relu ? tmp_name(e, "conv") : c->out[0];
    node(e, o->onnx, c->in, c->n->nin, &y, 1, &a);
    if (relu) op1(e, "Relu", y, c->out[0], NULL);
    return KN_OK;
}

/* pools: "kernel", "stride" (default kernel), "padding" (symmetric), "dilation" (max),
 * "ceil_mode", "count_include_pad" (avg, default 1). PyTorch's ceil mode drops a last window
 * that starts in the padding, ONNX's does not: ceil_mode is written only where it changes the
 * traced output size, which is where both agree. */
static int64_t pool_len(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}
static kn_status x_pool(ex *e, const exop *o, nctx *c) {
    bool is_max = strcmp(o->kiln, "max_pool2d") == 0;
    kn_status st = only_out0(e, c);
    if (st) return st;
    int nd = c->x->ndim;
    if (nd != 3 && nd != 4) return unsup(e, "input of rank %d", nd);
    int64_t v[KN_MAX_ATTR_INTS], k[2], s[2], p[2] = {0, 0}, d[2] = {1, 1};
    int n = a_ints(c, "kernel", v);
    if (n < 1) return unsup(e, "no kernel attribute");
    k[0] = v[0], k[1] = n >= 2 ? v[1] : v[0];
    s[0] = k[0], s[1] = k[1];
    n = a_ints(c, "stride", v);
    if (n >= 1 && v[0] > 0) s[0] = s[1] = v[0];
    if (n >= 2 && v[1] > 0) s[1] = v[1];
    n = a_ints(c, "padding", v);
    if (n >= 1) p[0] = p[1] = v[0];
    if (n >= 2) p[1] = v[1];
    n = a_ints(c, "dilation", v);
    if (n >= 1) d[0] = d[1] = v[0];
    if (n >= 2) d[1] = v[1];
    bool ceil = false;
    if (a_int(c, "ceil_mode", 0))
        for (int i = 0; i < 2; i++)
            ceil |= c->y->shape[nd - 2 + i] !=
                    pool_len(c->x->shape[nd - 2 + i], k[i], s[i], p[i], d[i]);
    pbuf a = {0};
    int64_t pads[4] = {p[0], p[1], p[0], p[1]};
    at_ints(&a, "kernel_shape", k, 2);
    at_ints(&a, "strides", s, 2);
    at_ints(&a, "pads", pads, 4);
    at_int(&a, "ceil_mode", ceil);
    if (is_max)
        at_ints(&a, "dilations", d, 2);
    else
        at_int(&a, "count_include_pad", a_int(c, "count_include_pad", 1) != 0);
    if (nd == 4) {
        op1(e, o->onnx, c->in[0], c->out[0], &a);
    } else {
        sq0(e, op1(e, o->onnx, unsq0(e, c->in[0]), NULL, &a), c->out[0]);
    }
    return KN_OK;
}

static kn_status x_global_pool(ex *e, const exop *o, nctx *c) {
    (void)o;
    if (c->x->ndim == 4) {
        op1(e, "GlobalAveragePool", c->in[0], c->out[0], NULL);
        return KN_OK;
    }
    int64_t ax[2] = {c->x->ndim - 2, c->x->ndim - 1};
    reduce(e, "ReduceMean", c->in[0], ax, 2, true, c->out[0]);
    return KN_OK;
}

/* adaptive_avg_pool2d: global when the output is 1x1, an AveragePool when the sizes divide */
static kn_status x_adaptive(ex *e, const exop *o, nctx *c) {
    int nd = c->x->ndim;
    int64_t H = c->x->shape[nd - 2], W = c->x->shape[nd - 1];
    int64_t OH = c->y->shape[nd - 2], OW = c->y->shape[nd - 1];
    if (OH == 1 && OW == 1) return x_global_pool(e, o, c);
    if (OH < 1 || OW < 1 || H % OH || W % OW)
        return unsup(e, "adaptive pooling of (%lld, %lld) to (%lld, %lld) (only sizes that divide)",
                     (long long)H, (long long)W, (long long)OH, (long long)OW);
    int64_t k[2] = {H / OH, W / OW}, pads[4] = {0, 0, 0, 0};
    pbuf a = {0};
    at_ints(&a, "kernel_shape", k, 2);
    at_ints(&a, "strides", k, 2);
    at_ints(&a, "pads", pads, 4);
    if (nd == 4)
        op1(e, "AveragePool", c->in[0], c->out[0], &a);
    else
        sq0(e, op1(e, "AveragePool", unsq0(e, c->in[0]), NULL, &a), c->out[0]);
    return KN_OK;
}

/* A constant of `n` copies of v, dtype dt, 1-D (missing affine parameters). */
static const char *c_fill(ex *e, const char *what, kn_dtype dt, int64_t n, double v) {
    size_t es = kn_dtype_size(dt);
    char *buf = kn__calloc((size_t)(n ? n : 1), es);
    if (!buf) {
        e->oom = true;
        return "";
    }
    for (int64_t i = 0; i < n; i++)
        kn__store_f64(dt, buf + (size_t)i * es, v);
    const char *r = init_named(e, tmp_name(e, what), dt, 1, &n, buf);
    kn__free(buf);
    return r;
}

/* batch_norm (eval): inputs x, [running_mean], [running_var], [weight], [bias] per has_* */
static kn_status x_batch_norm(ex *e, const exop *o, nctx *c) {
    (void)o;
    kn_status st = only_out0(e, c);
    if (st) return st;
    if (a_int(c, "training", 0)) return unsup(e, "batch_norm in training mode");
    static const char *const has[4] = {"has_mean", "has_var", "has_weight", "has_bias"};
    const char *p[4];
    int k = 1;
    int64_t C = c->x->ndim >= 2 ? c->x->shape[1] : 0;
    for (int i = 0; i < 4; i++) {
        bool h = a_int(c, has[i], c->n->nin >= i + 2) != 0;
        if (h && k < c->n->nin)
            p[i] = c->in[k++];
        else if (i < 2)
            return unsup(e, "no running statistics");
        else
            p[i] = c_fill(e, i == 2 ? "scale" : "bias", c->x->dtype, C, i == 2 ? 1.0 : 0.0);
    }
    const char *in[5] = {c->in[0], p[2], p[3], p[0], p[1]};
    pbuf a = {0};
    at_float(&a, "epsilon", a_float(c, "eps", 1e-5));
    node(e, "BatchNormalization", in, 5, c->out, 1, &a);
    return KN_OK;
}

/* y = (x - mean) / sqrt(var + eps) over axes (keepdims), population variance */
static const char *normalize(ex *e, const char *x, const int64_t *axes, int naxes, kn_dtype dt,
                             double eps) {
    const char *d =
        op2(e, "Sub", x, reduce(e, "ReduceMean", x, axes, naxes, true, NULL), NULL, NULL);
    const char *var =
        reduce(e, "ReduceMean", op2(e, "Mul", d, d, NULL, NULL), axes, naxes, true, NULL);
    const char *den =
        op1(e, "Sqrt", op2(e, "Add", var, c_scalar(e, "eps", dt, eps), NULL, NULL), NULL, NULL);
    return op2(e, "Div", d, den, NULL, NULL);
}

/* layer_norm: inputs x, [weight], [bias]; attrs nnorm, eps, has_weight, has_bias */
static kn_status x_layer_norm(ex *e, const exop *o, nctx *c) {
    (void)o;
    kn_status st = only_out0(e, c);
    if (st) return st;
    int nd = c->x->ndim;
    int64_t nn = a_int(c, "nnorm", 1);
    double eps = a_float(c, "eps", 1e-5);
    bool hw = a_int(c, "has_weight", c->n->nin >= 2) != 0;
    bool hb = a_int(c, "has_bias", c->n->nin >= 3) != 0;
    const char *w = hw ? c->in[1] : NULL, *b = hb ? c->in[hw ? 2 : 1] : NULL;
    if (nn < 1 || nn > nd) return unsup(e, "nnorm %lld for rank %d", (long long)nn, nd);
    if (e->opset >= 17) {
        if (!w) {
            int64_t cnt = 1;
            for (int d = nd - (int)nn; d < nd; d++) {
                if (c->x->sym >> d & 1) return unsup(e, "normalising over the batch dim");
                cnt *= c->x->shape[d];
            }
            const char *flat = c_fill(e, "scale", c->x->dtype, cnt, 1.0);
            w = op2(e, "Reshape", flat,
                    c_i64(e, "scale_shape", c->x->shape + nd - nn, (int)nn, false), NULL, NULL);
        }
        const char *in[3] = {c->in[0], w, b ? b : ""};
        pbuf a = {0};
        at_int(&a, "axis", -nn);
        at_float(&a, "epsilon", eps);
        node(e, "LayerNormalization", in, b ? 3 : 2, c->out, 1, &a);
        return KN_OK;
    }
    int64_t axes[KN_MAX_DIMS];
    for (int i = 0; i < nn; i++)
        axes[i] = nd - nn + i;
    const char *y = normalize(e, c->in[0], axes, (int)nn, c->x->dtype, eps);
    if (w) y = op2(e, "Mul", y, w, b ? NULL : c->out[0], NULL);
    if (b) y = op2(e, "Add", y, b, c->out[0], NULL);
    if (!w && !b) op1(e, "Identity", y, c->out[0], NULL);
    return KN_OK;
}

/* group_norm: x (N, C, *) normalised per (sample, group): Reshape to (N, G, -1), normalise over
 * axis 2, Reshape back to Shape(x), then weight and bias viewed as (C, 1, ...) */
static kn_status x_group_norm(ex *e, const exop *o, nctx *c) {
    (void)o;
    kn_status st = only_out0(e, c);
    if (st) return st;
    int nd = c->x->ndim;
    if (nd < 2) return unsup(e, "input of rank %d", nd);
    int64_t G = a_int(c, "groups", 1), C = c->x->shape[1];
    bool hw = a_int(c, "has_weight", c->n->nin >= 2) != 0;
    bool hb = a_int(c, "has_bias", c->n->nin >= 3) != 0;
    int64_t gs[3] = {0, G, -1}, ax = 2;
    const char *g3 = op2(e, "Reshape", c->in[0], c_i64(e, "group_shape", gs, 3, false), NULL, NULL);
    const char *y = normalize(e, g3, &ax, 1, c->x->dtype, a_float(c, "eps", 1e-5));
    y = op2(e, "Reshape", y, op1(e, "Shape", c->in[0], NULL, NULL), hw || hb ? NULL : c->out[0],
            NULL);
    int64_t ps[KN_MAX_DIMS];
    ps[0] = C;
    for (int d = 1; d < nd - 1; d++)
        ps[d] = 1;
    const char *pshape = (hw || hb) ? c_i64(e, "param_shape", ps, nd - 1, false) : NULL;
    if (hw)
        y = op2(e, "Mul", y, op2(e, "Reshape", c->in[1], pshape, NULL, NULL), hb ? NULL : c->out[0],
                NULL);
    if (hb)
        op2(e, "Add", y, op2(e, "Reshape", c->in[hw ? 2 : 1], pshape, NULL, NULL), c->out[0], NULL);
    return KN_OK;
}

/* reshape: attr "shape" (one -1 allowed). An entry that follows the batch (sym_attr, k * batch)
 * is 0 where the input has the same symbolic dim at that index (ONNX copies it), else -1 when it
 * is the only one and there is no -1, else computed from the run-time batch. A literal 0 (an
 * empty dim) needs allowzero (opset 14+), which rules out the copying 0. */
static kn_status x_reshape(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t v[KN_MAX_ATTR_INTS];
    int n = a_ints(c, "shape", v), ndyn = 0, last = -1;
    if (n < 0) return unsup(e, "no shape attribute");
    uint32_t dyn = 0;
    bool zeros = false, copies = false, m1 = false;
    for (int j = 0; j < n; j++) {
        bool s = sym_entry(c, "shape", j);
        if (s && j < c->x->ndim && (c->x->sym >> j & 1) && c->x->shape[j] == v[j]) {
            v[j] = 0;
            copies = true;
        } else if (s) {
            dyn |= 1u << j;
            ndyn++;
            last = j;
        } else {
            zeros |= v[j] == 0;
            m1 |= v[j] == -1;
        }
    }
    if (ndyn == 1 && !m1) {
        v[last] = -1;
        dyn = 0;
    }
    pbuf a = {0};
    if (zeros) {
        if (copies || e->opset < 14)
            return unsup(e, "a reshape to an empty dim %s",
                         copies ? "together with the symbolic batch" : "needs opset 14");
        at_int(&a, "allowzero", 1);
    }
    const char *shape = ints_operand(e, "shape", v, n, dyn);
    if (!shape) {
        pb_free(&a);
        return unsup(e, "the shape follows the batch but no graph input has it as dim 0");
    }
    op2(e, "Reshape", c->in[0], shape, c->out[0], &a);
    return KN_OK;
}

/* expand: attr "shape" (-1 keeps a dim, leading new dims allowed); ONNX broadcasts both ways,
 * so every dim the input already has is written 1; a size-1 dim expanded to k * batch is
 * computed from the run-time batch */
static kn_status x_expand(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t v[KN_MAX_ATTR_INTS];
    int n = a_ints(c, "shape", v), xn = c->x->ndim;
    if (n < xn) return unsup(e, "bad shape attribute");
    uint32_t dyn = 0;
    for (int i = 0; i < n; i++) {
        int j = i - (n - xn);
        if (j >= 0 && ((c->x->sym >> j & 1) || c->x->shape[j] != 1))
            v[i] = 1;
        else if (sym_entry(c, "shape", i))
            dyn |= 1u << i;
        else if (v[i] < 0)
            v[i] = 1;
    }
    const char *shape = ints_operand(e, "shape", v, n, dyn);
    if (!shape) return unsup(e, "the shape follows the batch but no graph input has it as dim 0");
    op2(e, "Expand", c->in[0], shape, c->out[0], NULL);
    return KN_OK;
}

static kn_status x_permute(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t v[KN_MAX_ATTR_INTS];
    int n = a_ints(c, "dims", v);
    for (int i = 0; i < n; i++)
        v[i] = norm_axis(v[i], c->x->ndim);
    pbuf a = {0};
    at_ints(&a, "perm", v, n > 0 ? n : 0);
    op1(e, "Transpose", c->in[0], c->out[0], &a);
    return KN_OK;
}

/* slice: attrs dim, start (0), end (INT64_MAX), step (1): Python clamping, as ONNX's. A start or
 * end that follows the batch is read at run time, an end equal to a symbolic dim is "to the end" */
static kn_status x_slice(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t d = norm_axis(a_int(c, "dim", 0), c->x->ndim), s = a_int(c, "start", 0);
    int64_t en = a_int(c, "end", INT64_MAX), st = a_int(c, "step", 1);
    bool ds = sym_entry(c, "start", 0), de = sym_entry(c, "end", 0);
    if (de && d < c->x->ndim && (c->x->sym >> d & 1) && c->x->shape[d] == en) {
        en = INT64_MAX;
        de = false;
    }
    const char *in[5] = {c->in[0], ints_operand(e, "starts", &s, 1, ds),
                         ints_operand(e, "ends", &en, 1, de), c_i64(e, "axes", &d, 1, false),
                         c_i64(e, "steps", &st, 1, false)};
    if (!in[1] || !in[2])
        return unsup(e, "the slice follows the batch but no graph input has it as dim 0");
    node(e, "Slice", in, 5, c->out, 1, NULL);
    return KN_OK;
}

static kn_status x_concat(ex *e, const exop *o, nctx *c) {
    (void)o;
    pbuf a = {0};
    at_int(&a, "axis", norm_axis(a_int(c, "dim", 0), c->x->ndim));
    node(e, "Concat", c->in, c->n->nin, c->out, 1, &a);
    return KN_OK;
}

/* sum / mean / amax / amin / prod / logsumexp over attr axes (all when absent), keepdim.
 * Integer and bool sums and products give int64 in kiln: cast first. */
static kn_status x_reduce(ex *e, const exop *o, nctx *c) {
    int64_t axes[KN_MAX_DIMS];
    int na = red_axes(c, axes);
    const char *x = c->in[0];
    if (c->y->dtype != c->x->dtype) {
        pbuf a = {0};
        at_int(&a, "to", onnx_dtype(c->y->dtype));
        x = op1(e, "Cast", x, NULL, &a);
    }
    reduce(e, o->onnx, x, axes, na, a_int(c, "keepdim", 0) != 0, c->out[0]);
    return KN_OK;
}

/* var / std: sum((x - mean)^2) / (count - correction); the count must be static */
static kn_status x_var(ex *e, const exop *o, nctx *c) {
    int64_t axes[KN_MAX_DIMS], cnt = 1;
    int na = red_axes(c, axes);
    for (int i = 0; i < na; i++) {
        if (c->x->sym >> axes[i] & 1) return unsup(e, "a variance over the batch dim");
        cnt *= c->x->shape[axes[i]];
    }
    kn_dtype dt = c->x->dtype;
    bool keep = a_int(c, "keepdim", 0) != 0, is_std = strcmp(o->kiln, "std") == 0;
    const char *m = reduce(e, "ReduceMean", c->in[0], axes, na, true, NULL);
    const char *d = op2(e, "Sub", c->in[0], m, NULL, NULL);
    const char *ss = reduce(e, "ReduceSum", op2(e, "Mul", d, d, NULL, NULL), axes, na, keep, NULL);
    double dof = (double)cnt - (double)a_int(c, "correction", 1);
    const char *v = op2(e, "Div", ss, c_scalar(e, "dof", dt, dof), is_std ? NULL : c->out[0], NULL);
    if (is_std) op1(e, "Sqrt", v, c->out[0], NULL);
    return KN_OK;
}

/* norm: vector p-norm over axes; p 1 and 2 have ONNX reductions, inf is max |x| */
static kn_status x_norm(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t axes[KN_MAX_DIMS];
    int na = red_axes(c, axes);
    bool keep = a_int(c, "keepdim", 0) != 0;
    double p = a_float(c, "p", 2.0);
    if (p == 2.0 || p == 1.0) {
        reduce(e, p == 2.0 ? "ReduceL2" : "ReduceL1", c->in[0], axes, na, keep, c->out[0]);
    } else if (isinf(p) && p > 0) {
        reduce(e, "ReduceMax", op1(e, "Abs", c->in[0], NULL, NULL), axes, na, keep, c->out[0]);
    } else if (p > 0) {
        kn_dtype dt = c->x->dtype;
        const char *pw =
            op2(e, "Pow", op1(e, "Abs", c->in[0], NULL, NULL), c_scalar(e, "p", dt, p), NULL, NULL);
        op2(e, "Pow", reduce(e, "ReduceSum", pw, axes, na, keep, NULL),
            c_scalar(e, "inv_p", dt, 1.0 / p), c->out[0], NULL);
    } else {
        return unsup(e, "norm with p = %g", p);
    }
    return KN_OK;
}

/* argmax / argmin: attr dim (absent: over the flattened tensor), keepdim */
static kn_status x_arg(ex *e, const exop *o, nctx *c) {
    pbuf a = {0};
    if (!a_has(c, "dim")) {
        int64_t m1 = -1, ys[KN_MAX_DIMS];
        const char *flat = op2(e, "Reshape", c->in[0], c_i64(e, "flat", &m1, 1, false), NULL, NULL);
        at_int(&a, "axis", 0);
        at_int(&a, "keepdims", 0);
        const char *r = op1(e, o->onnx, flat, NULL, &a);
        memcpy(ys, c->y->shape, sizeof ys);
        op2(e, "Reshape", r, c_i64(e, "shape", ys, c->y->ndim, false), c->out[0], NULL);
        return KN_OK;
    }
    at_int(&a, "axis", norm_axis(a_int(c, "dim", 0), c->x->ndim));
    at_int(&a, "keepdims", a_int(c, "keepdim", 0) != 0);
    op1(e, o->onnx, c->in[0], c->out[0], &a);
    return KN_OK;
}

/* max_dim / min_dim: (values, int64 indices) along attr dim, keepdim */
static kn_status x_maxdim(ex *e, const exop *o, nctx *c) {
    bool mx = strcmp(o->kiln, "max_dim") == 0, keep = a_int(c, "keepdim", 0) != 0;
    int64_t d = norm_axis(a_int(c, "dim", 0), c->x->ndim);
    if (e->used[c->n->out[0]])
        reduce(e, mx ? "ReduceMax" : "ReduceMin", c->in[0], &d, 1, keep, c->out[0]);
    if (c->n->nout > 1 && e->used[c->n->out[1]]) {
        pbuf a = {0};
        at_int(&a, "axis", d);
        at_int(&a, "keepdims", keep);
        op1(e, mx ? "ArgMax" : "ArgMin", c->in[0], c->out[1], &a);
    }
    return KN_OK;
}

/* pad: attr "pads" in torch order (last dim first: lo, hi, ...), "mode" 0 constant / 1 reflect,
 * "value" */
static kn_status x_pad(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t v[KN_MAX_ATTR_INTS], p[2 * KN_MAX_DIMS] = {0};
    int n = a_ints(c, "pads", v), nd = c->x->ndim;
    for (int i = 0; i + 1 < n && i / 2 < nd; i += 2) {
        p[nd - 1 - i / 2] = v[i];
        p[2 * nd - 1 - i / 2] = v[i + 1];
    }
    int mode = (int)a_int(c, "mode", 0);
    if (mode != 0 && mode != 1) return unsup(e, "pad mode %d", mode);
    pbuf a = {0};
    at_str(&a, "mode", mode ? "reflect" : "constant");
    const char *in[3] = {c->in[0], c_i64(e, "pads", p, 2 * nd, false),
                         mode ? "" : c_scalar(e, "value", c->x->dtype, a_float(c, "value", 0.0))};
    node(e, "Pad", in, mode ? 2 : 3, c->out, 1, &a);
    return KN_OK;
}

/* repeat (Tensor.repeat): Tile, after unsqueezing the new leading dims */
static kn_status x_repeat(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t r[KN_MAX_ATTR_INTS];
    int n = a_ints(c, "repeats", r), nd = c->x->ndim;
    if (n < nd) return unsup(e, "fewer repeats than dims");
    const char *x = c->in[0];
    if (n > nd) {
        int64_t ax[KN_MAX_DIMS];
        for (int i = 0; i < n - nd; i++)
            ax[i] = i;
        x = op2(e, "Unsqueeze", x, c_i64(e, "axes", ax, n - nd, false), NULL, NULL);
    }
    op2(e, "Tile", x, c_i64(e, "repeats", r, n, false), c->out[0], NULL);
    return KN_OK;
}

static kn_status x_trilu(ex *e, const exop *o, nctx *c) {
    int64_t k = a_int(c, "k", 0);
    pbuf a = {0};
    at_int(&a, "upper", strcmp(o->kiln, "triu") == 0);
    op2(e, "Trilu", c->in[0], c_i64(e, "k", &k, 1, true), c->out[0], &a);
    return KN_OK;
}

static kn_status x_one_hot(ex *e, const exop *o, nctx *c) {
    (void)o;
    int64_t depth = c->y->shape[c->y->ndim - 1], vals[2] = {0, 1};
    pbuf a = {0};
    at_int(&a, "axis", -1);
    const char *in[3] = {c->in[0], c_i64(e, "depth", &depth, 1, true),
                         c_i64(e, "values", vals, 2, false)};
    node(e, "OneHot", in, 3, c->out, 1, &a);
    return KN_OK;
}

/* an index operand as ONNX wants it (int32 or int64) */
static const char *index_operand(ex *e, const char *name, kn_dtype dt) {
    if (dt == KN_I64 || dt == KN_I32) return name;
    pbuf a = {0};
    at_int(&a, "to", KN_ONNX_INT64);
    return op1(e, "Cast", name, NULL, &a);
}

/* index_select(x, index 1-D; dim) -> Gather(axis); embedding(weight, indices) -> Gather(axis 0);
 * gather(x, index; dim) -> GatherElements(axis) */
static kn_status x_gather(ex *e, const exop *o, nctx *c) {
    bool emb = strcmp(o->kiln, "embedding") == 0;
    pbuf a = {0};
    at_int(&a, "axis", emb ? 0 : norm_axis(a_int(c, "dim", 0), c->x->ndim));
    op2(e, o->onnx, c->in[0], index_operand(e, c->in[1], e->g->vals[c->n->in[1]].dtype), c->out[0],
        &a);
    return KN_OK;
}

/* scatter_add(x, index, src; dim) -> ScatterElements(reduction "add"), opset 16+ */
static kn_status x_scatter_add(ex *e, const exop *o, nctx *c) {
    (void)o;
    pbuf a = {0};
    at_int(&a, "axis", norm_axis(a_int(c, "dim", 0), c->x->ndim));
    at_str(&a, "reduction", "add");
    const char *in[3] = {c->in[0], index_operand(e, c->in[1], e->g->vals[c->n->in[1]].dtype),
                         c->in[2]};
    node(e, "ScatterElements", in, 3, c->out, 1, &a);
    return KN_OK;
}

static const exop ops[] = {
    /* elementwise, same name */
    {"neg", "Neg", x_same, 0},
    {"abs", "Abs", x_same, 0},
    {"sign", "Sign", x_same, 0},
    {"exp", "Exp", x_same, 0},
    {"log", "Log", x_same, 0},
    {"sqrt", "Sqrt", x_same, 0},
    {"sin", "Sin", x_same, 0},
    {"cos", "Cos", x_same, 0},
    {"tan", "Tan", x_same, 0},
    {"asin", "Asin", x_same, 0},
    {"acos", "Acos", x_same, 0},
    {"atan", "Atan", x_same, 0},
    {"sinh", "Sinh", x_same, 0},
    {"cosh", "Cosh", x_same, 0},
    {"asinh", "Asinh", x_same, 0},
    {"acosh", "Acosh", x_same, 0},
    {"atanh", "Atanh", x_same, 0},
    {"tanh", "Tanh", x_same, 0},
    {"sigmoid", "Sigmoid", x_same, 0},
    {"relu", "Relu", x_same, 0},
    {"erf", "Erf", x_same, 0},
    {"reciprocal", "Reciprocal", x_same, 0},
    {"floor", "Floor", x_same, 0},
    {"ceil", "Ceil", x_same, 0},
    {"round", "Round", x_same, 0},
    {"add", "Add", x_same, 0},
    {"sub", "Sub", x_same, 0},
    {"mul", "Mul", x_same, 0},
    {"div", "Div", x_same, 0},
    {"pow", "Pow", x_same, 0},
    {"maximum", "Max", x_same, 0},
    {"minimum", "Min", x_same, 0},
    {"eq", "Equal", x_same, 0},
    {"lt", "Less", x_same, 0},
    {"le", "LessOrEqual", x_same, 0},
    {"gt", "Greater", x_same, 0},
    {"ge", "GreaterOrEqual", x_same, 0},
    {"ne", "Equal", x_ne, 0},
    {"logical_and", "And", x_logic, 0},
    {"logical_or", "Or", x_logic, 0},
    {"logical_not", "Not", x_logic, 0},
    {"where", "Where", x_same, 0},
    {"matmul", "MatMul", x_same, 0},
    /* elementwise, composed or with attributes */
    {"leaky_relu", "LeakyRelu", x_leaky, 0},
    {"elu", "Elu", x_elu, 0},
    {"gelu", "Erf", x_gelu, 0},
    {"silu", "Sigmoid", x_silu, 0},
    {"softplus", "Softplus", x_softplus, 0},
    {"square", "Mul", x_square, 0},
    {"rsqrt", "Reciprocal", x_rsqrt, 0},
    {"log1p", "Log", x_log1p, 0},
    {"relu6", "Clip", x_relu6, 0},
    {"clamp", "Clip", x_clamp, 0},
    {"cast", "Cast", x_cast, 0},
    {"clone", "Identity", x_identity, 0},
    {"dropout", "Identity", x_identity, 0},
    {"softmax", "Softmax", x_softmax, 0},
    {"log_softmax", "LogSoftmax", x_softmax, 0},
    /* nn */
    {"linear", "Gemm", x_linear, 0},
    {"conv2d", "Conv", x_conv, 0},
    {"conv_transpose2d", "ConvTranspose", x_conv, 0},
    {"max_pool2d", "MaxPool", x_pool, 0},
    {"avg_pool2d", "AveragePool", x_pool, 0},
    {"global_avg_pool2d", "GlobalAveragePool", x_global_pool, 0},
    {"adaptive_avg_pool2d", "AveragePool", x_adaptive, 0},
    {"batch_norm", "BatchNormalization", x_batch_norm, 0},
    {"layer_norm", "LayerNormalization", x_layer_norm, 0},
    {"group_norm", "Reshape", x_group_norm, 0},
    /* shape */
    {"reshape", "Reshape", x_reshape, 0},
    {"expand", "Expand", x_expand, 0},
    {"permute", "Transpose", x_permute, 0},
    {"slice", "Slice", x_slice, 0},
    {"concat", "Concat", x_concat, 0},
    {"pad", "Pad", x_pad, 0},
    {"repeat", "Tile", x_repeat, 0},
    {"tril", "Trilu", x_trilu, 14},
    {"triu", "Trilu", x_trilu, 14},
    /* reductions */
    {"sum", "ReduceSum", x_reduce, 0},
    {"mean", "ReduceMean", x_reduce, 0},
    {"amax", "ReduceMax", x_reduce, 0},
    {"amin", "ReduceMin", x_reduce, 0},
    {"prod", "ReduceProd", x_reduce, 0},
    {"logsumexp", "ReduceLogSumExp", x_reduce, 0},
    {"var", "ReduceMean", x_var, 0},
    {"std", "ReduceMean", x_var, 0},
    {"norm", "ReduceL2", x_norm, 0},
    {"argmax", "ArgMax", x_arg, 0},
    {"argmin", "ArgMin", x_arg, 0},
    {"max_dim", "ReduceMax", x_maxdim, 0},
    {"min_dim", "ReduceMin", x_maxdim, 0},
    /* indexing */
    {"index_select", "Gather", x_gather, 0},
    {"embedding", "Gather", x_gather, 0},
    {"gather", "GatherElements", x_gather, 0},
    {"scatter_add", "ScatterElements", x_scatter_add, 16},
    {"one_hot", "OneHot", x_one_hot, 0},
    {NULL, NULL, NULL, 0},
};

static const exop *find_op(const char *name) {
    for (const exop *o = ops; o->kiln; o++)
        if (strcmp(o->kiln, name) == 0) return o;
    return NULL;
}

/* ================================================================ graph */

static void value_info(ex *e, pbuf *b, uint32_t field, const char *name, int v) {
    const kn_gval *gv = &e->g->vals[v];
    pbuf shape = {0}, tt = {0}, type = {0}, vi = {0};
    for (int d = 0; d < gv->ndim; d++) {
        pbuf dim = {0};
        if (!(gv->sym >> d & 1))
            pb_int(&dim, D_VALUE, gv->shape[d]);
        else if (gv->shape[d] == e->g->batch)
            pb_str(&dim, D_PARAM, "batch");
        /* else: a dim that moves with the batch without being it: unknown */
        pb_msg(&shape, SH_DIM, &dim);
    }
    pb_int(&tt, TT_ELEM_TYPE, onnx_dtype(gv->dtype));
    pb_msg(&tt, TT_SHAPE, &shape);
    pb_msg(&type, TP_TENSOR, &tt);
    pb_str(&vi, VI_NAME, name);
    pb_msg(&vi, VI_TYPE, &type);
    pb_msg(b, field, &vi);
}

/* Marks the values live nodes read (backwards from the outputs); returns the live-node mask. */
static bool *liveness(ex *e) {
    const kn_graph *g = e->g;
    bool *live = kn__calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof(bool));
    if (!live) return NULL;
    for (int i = 0; i < g->noutputs; i++)
        e->used[g->outputs[i]] = true;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        const kn_gnode *n = &g->nodes[i];
        for (int k = 0; k < n->nout; k++)
            live[i] |= e->used[n->out[k]];
        if (live[i])
            for (int j = 0; j < n->nin; j++)
                e->used[n->in[j]] = true;
    }
    return live;
}

/* Writes the weight value v as an initializer (raw little-endian bytes). */
static kn_status weight_init(ex *e, int v) {
    const kn_gval *gv = &e->g->vals[v];
    if (!gv->data) return kn__err(KN_EINTERNAL, "onnx export: weight value %d has no tensor", v);
    if (!onnx_dtype(gv->data->dtype))
        return kn__err(KN_EUNSUPPORTED, "onnx export: weight '%s' has dtype %s", e->vname[v],
                       kn_dtype_name(gv->data->dtype));
    kn_tensor *t = kn__contig(gv->data);
    if (!t) return kn_last_status();
    init_named(e, e->vname[v], t->dtype, t->ndim, t->shape, kn__ptr(t));
    kn_tensor_free(t);
    return KN_OK;
}

static kn_status build(ex *e) {
    const kn_graph *g = e->g;
    kn_status st = KN_OK;
    for (int i = 0; i < g->noutputs; i++)
        if (g->vals[g->outputs[i]].kind != GV_NODE)
            return kn__err(KN_EUNSUPPORTED, "onnx export: output %d is not computed by a node", i);
    bool *live = liveness(e);
    if (!live) return kn_last_status();
    /* names: inputs and outputs keep theirs, then weights, then node values */
    for (int i = 0; i < g->ninputs; i++) {
        const kn_gval *v = &g->vals[g->inputs[i]];
        e->vname[g->inputs[i]] = uniq(e, v->name && *v->name ? v->name : "input");
    }
    for (int i = 0; i < g->noutputs; i++) {
        const char *nm = g->out_names[i] && *g->out_names[i] ? g->out_names[i] : "output";
        if (!e->vname[g->outputs[i]]) e->vname[g->outputs[i]] = uniq(e, nm);
    }
    for (int v = 0; v < g->nvals; v++) {
        const kn_gval *gv = &g->vals[v];
        if (gv->kind == GV_WEIGHT && e->used[v] && !e->vname[v])
            e->vname[v] = uniq(e, gv->name && *gv->name ? gv->name : "weight");
    }
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i];
        if (!live[i]) continue;
        for (int k = 0; k < n->nout; k++) {
            char b[96];
            if (e->vname[n->out[k]]) continue;
            if (k)
                snprintf(b, sizeof b, "%s_%d:%d", n->op ? n->op->name : "fused", i, k);
            else
                snprintf(b, sizeof b, "%s_%d", n->op ? n->op->name : "fused", i);
            e->vname[n->out[k]] = uniq(e, b);
        }
    }
    if (e->oom) goto nomem;
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i];
        if (!live[i]) continue;
        snprintf(e->what, sizeof e->what, "node %d (%s)", i, n->op ? n->op->name : "fused group");
        if (!n->op || n->dead || n->nin < 1) {
            st = kn__err(n->op && !n->dead ? KN_EUNSUPPORTED : KN_EINTERNAL,
                         "onnx export: %s is %s", e->what,
                         !n->op    ? "a fused group"
                         : n->dead ? "dead"
                                   : "a node without inputs");
            goto done;
        }
        const exop *o = find_op(n->op->name);
        if (!o) {
            st = kn__err(KN_EUNSUPPORTED, "onnx export: %s: op '%s' has no ONNX mapping", e->what,
                         n->op->name);
            goto done;
        }
        if (o->since > e->opset) {
            st = kn__err(KN_EUNSUPPORTED, "onnx export: %s: op '%s' needs opset %d or later",
                         e->what, n->op->name, o->since);
            goto done;
        }
        for (int b = 0; b < 32; b++) {
            if (!(n->sym_attr >> b & 1) || b / 8 >= n->attrs.n) continue;
            const char *an = n->attrs.a[b / 8].name;
            bool ok =
                (!strcmp(o->kiln, "reshape") || !strcmp(o->kiln, "expand")) && !strcmp(an, "shape");
            ok |= !strcmp(o->kiln, "slice") && (!strcmp(an, "start") || !strcmp(an, "end"));
            if (!ok) {
                st = kn__err(KN_EUNSUPPORTED,
                             "onnx export: %s: attribute '%s' follows the batch size (export "
                             "a graph traced with static_batch)",
                             e->what, an);
                goto done;
            }
        }
        nctx c = {.n = n, .x = &g->vals[n->in[0]], .y = &g->vals[n->out[0]]};
        for (int j = 0; j < n->nin; j++)
            c.in[j] = e->vname[n->in[j]];
        for (int k = 0; k < n->nout; k++)
            c.out[k] = e->vname[n->out[k]];
        e->cur = i;
        e->sub = 0;
        if ((st = o->fn(e, o, &c))) goto done;
        if (e->oom) goto nomem;
    }
    /* weights some node reads (a linear's W may only be read as its transposed copy) */
    for (int v = 0; v < g->nvals; v++)
        if (g->vals[v].kind == GV_WEIGHT && e->used[v] &&
            (set_has(&e->refs, e->vname[v]) || kn__g_is_output(g, v)) && (st = weight_init(e, v)))
            goto done;
    /* an output listed twice (or more) gets its own name through Identity */
    for (int i = 0; i < g->noutputs; i++) {
        e->oname[i] = e->vname[g->outputs[i]];
        for (int j = 0; j < i; j++) {
            if (g->outputs[j] != g->outputs[i]) continue;
            const char *nm = g->out_names[i] && *g->out_names[i] ? g->out_names[i] : "output";
            e->cur = g->vals[g->outputs[i]].node;
            e->sub = 100 + i;
            snprintf(e->what, sizeof e->what, "output %d", i);
            e->oname[i] = op1(e, "Identity", e->vname[g->outputs[i]], uniq(e, nm), NULL);
            break;
        }
    }
    if (e->oom || e->nodes.bad || e->inits.bad) goto nomem;
    goto done;
nomem:
    st = kn__err(KN_ENOMEM, "onnx export: out of memory (or a model over 2 GiB)");
done:
    kn__free(live);
    return st;
}

/* The graph's inputs and outputs (value infos), after build. */
static void io_infos(ex *e, pbuf *b) {
    const kn_graph *g = e->g;
    for (int i = 0; i < g->ninputs; i++)
        value_info(e, b, G_INPUT, e->vname[g->inputs[i]], g->inputs[i]);
    for (int i = 0; i < g->noutputs; i++)
        value_info(e, b, G_OUTPUT, e->oname[i], g->outputs[i]);
}

static _Atomic unsigned g_tmp_seq;

static kn_status write_all(int fd, const void *p, size_t n) {
    const uint8_t *q = p;
    while (n) {
        ssize_t w = write(fd, q, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return KN_EIO;
        q += w;
        n -= (size_t)w;
    }
    return KN_OK;
}

/* head (ModelProto fields before the graph), then the graph's pieces, to path atomically */
static kn_status write_file(const char *path, const pbuf *head, const pbuf *const *parts, int np) {
    size_t tl = strlen(path) + 64;
    char *tmp = kn__malloc(tl);
    if (!tmp) return kn_last_status();
    snprintf(tmp, tl, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&g_tmp_seq, 1));
    kn_status st = KN_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = kn__err(KN_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        kn__free(tmp);
        return st;
    }
    if (write_all(fd, head->p, head->n)) goto io;
    for (int i = 0; i < np; i++)
        if (write_all(fd, parts[i]->p, parts[i]->n)) goto io;
    if (fsync(fd) != 0) goto io;
    if (close(fd) != 0) {
        fd = -1;
        goto io;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = kn__err(KN_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
        unlink(tmp);
        kn__free(tmp);
        return st;
    }
    kn__free(tmp);
    return KN_OK;
io:
    st = kn__err(KN_EIO, "%s: writing %s failed: %s", path, tmp, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    kn__free(tmp);
    return st;
}

kn_status kn_onnx_export(kn_graph *g, const char *path, int opset) {
    if (!g || !path) return kn__err(KN_EINVAL, "onnx export: NULL %s", g ? "path" : "graph");
    if (opset == 0) opset = 13;
    if (opset < 13 || opset > 17)
        return kn__err(KN_EINVAL, "onnx export: opset %d (kiln writes 13..17)", opset);
    const kn_graph *s = g->traced ? g->traced : g;
    if (s->noutputs < 1) return kn__err(KN_EINVAL, "onnx export: the graph has no outputs");
    ex e = {.g = s, .opset = opset};
    size_t nv = (size_t)(s->nvals ? s->nvals : 1);
    e.used = kn__calloc(nv, sizeof(bool));
    e.vname = kn__calloc(nv, sizeof(char *));
    e.oname = kn__calloc((size_t)s->noutputs, sizeof(char *));
    e.wt = kn__calloc(nv, sizeof(char *));
    kn_status st = e.used && e.vname && e.oname && e.wt ? build(&e) : kn_last_status();
    pbuf head = {0}, gio = {0}, ghead = {0}, op = {0};
    if (st == KN_OK) {
        pb_str(&ghead, G_NAME, "kiln");
        io_infos(&e, &gio);
        pb_int(&head, M_IR_VERSION, opset >= 15 ? 8 : 7);
        pb_str(&head, M_PRODUCER_NAME, "kiln");
        pb_str(&head, M_PRODUCER_VERSION, KN_VERSION_STRING);
        pb_str(&op, OS_DOMAIN, "");
        pb_int(&op, OS_VERSION, opset);
        pb_msg(&head, M_OPSET_IMPORT, &op);
        size_t glen = ghead.n + e.nodes.n + e.inits.n + gio.n;
        if (glen > EX_MAX_BYTES) {
            st = kn__err(KN_ELIMIT,
                         "onnx export: the model would be %zu bytes (protobuf's limit is "
                         "2 GiB)",
                         glen);
        } else {
            pb_key(&head, M_GRAPH, KN_PB_LEN);
            pb_varint(&head, glen);
            if (head.bad || gio.bad || ghead.bad)
                st = kn__err(KN_ENOMEM, "onnx export: out of memory");
        }
    }
    if (st == KN_OK) {
        const pbuf *parts[4] = {&ghead, &e.nodes, &e.inits, &gio};
        st = write_file(path, &head, parts, 4);
    }
    pb_free(&head);
    pb_free(&gio);
    pb_free(&ghead);
    pb_free(&e.nodes);
    pb_free(&e.inits);
    for (size_t i = 0; i < e.names.cap; i++)
        kn__free((char *)e.names.s[i]);
    kn__free(e.names.s);
    kn__free(e.refs.s);
    kn__free(e.used);
    kn__free(e.vname);
    kn__free(e.oname);
    kn__free(e.wt);
    return st;
}
