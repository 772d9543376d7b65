/*
 * onnx_model.c - parses an ONNX ModelProto into the zero-copy description of onnx_model.h, on
 * top of the protobuf wire reader (pb.h).
 *
 * Each message is read in two passes: the first counts the repeated fields (so arrays are
 * allocated once, exactly sized), the second fills and validates. Allocations go into one
 * arena (a list of kn__malloc blocks) owned by the model, so a failure anywhere frees
 * everything at once. Errors are prefixed with the path of each enclosing message on the way
 * out ("graph.node[3] (n).attribute[1] (alpha).t.dims[0]: ...").
 */
#include "onnx/onnx_model.h"

#include <stdarg.h>
#include <stdio.h>

#include "core/core_impl.h"

typedef union ar_blk {
    union ar_blk *next;
    max_align_t align;
} ar_blk;

typedef struct ctx {
    ar_blk *arena;
} ctx;

/* count zeroed elements of size sz; NULL (no error) when count == 0 */
static kn_status ar_alloc(ctx *c, size_t count, size_t sz, void *out) {
    *(void **)out = NULL;
    if (count == 0) return KN_OK;
    size_t bytes;
    if (!kn__mul_ok(count, sz, &bytes) || bytes > SIZE_MAX - sizeof(ar_blk))
        return kn__err(KN_ELIMIT, "allocation of %zu x %zu bytes overflows", count, sz);
    ar_blk *b = kn__malloc(sizeof(ar_blk) + bytes);
    if (!b) return KN_ENOMEM;
    memset(b + 1, 0, bytes);
    b->next = c->arena;
    c->arena = b;
    *(void **)out = b + 1;
    return KN_OK;
}

/* Prefixes the current error message with a path component. */
static kn_status wrap(kn_status s, const char *fmt, ...) KN_PRINTF(2, 3);
static kn_status wrap(kn_status s, const char *fmt, ...) {
    char old[512], pre[256];
    snprintf(old, sizeof old, "%s", kn_last_error());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    /* deep paths: keep the innermost part (and the problem), elide the outer components */
    if (strlen(pre) + strlen(old) > 400)
        return kn__err(s, "%s%s", strncmp(old, "...", 3) == 0 ? "" : "...", old);
    bool pb = strncmp(old, "protobuf:", 9) == 0;
    return kn__err(s, "%s%s%s", pre, pb ? ": " : ".", old);
}

/* The first string field `num` of msg (for naming a message in errors; {NULL,0} if none). */
static kn_onnx_str peek_str(kn_pb msg, uint32_t num) {
    kn_onnx_str r = {NULL, 0};
    kn_pb_field f;
    while (kn__pb_next(&msg, &f) == KN_OK)
        if (f.num == num && f.wire == KN_PB_LEN) {
            r.p = kn__pb_str(f.sub, &r.n);
            break;
        }
    return r;
}
/* printf args for a name suffix " (name)" */
#define NAMEFMT "%s%.*s%s"
#define NAMEARG(s)                                                                                 \
    (s).n ? " (" : "", (int)((s).n > 64 ? 64 : (s).n), (s).p ? (s).p : "", (s).n ? ")" : ""

static kn_status get_str(const kn_pb_field *f, const char *what, kn_onnx_str *out) {
    kn_status s = kn__pb_want(f, KN_PB_LEN, what);
    if (s) return s;
    out->p = kn__pb_str(f->sub, &out->n);
    return KN_OK;
}
static kn_status get_varint(const kn_pb_field *f, const char *what, int64_t *out) {
    kn_status s = kn__pb_want(f, KN_PB_VARINT, what);
    if (s) return s;
    *out = kn__pb_int64(f->v);
    return KN_OK;
}

/* Counts fields `num` in msg; a LEN field with packed element wire `pw` (>= 0) counts its
 * elements, otherwise each occurrence counts 1. */
static kn_status count_field(kn_pb msg, uint32_t num, int pw, const char *what, size_t *n) {
    kn_pb_field f;
    kn_status s;
    *n = 0;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        if (f.num != num) continue;
        size_t k = 1;
        if (pw >= 0 && f.wire == KN_PB_LEN) {
            if ((s = kn__pb_packed_count(f.sub, pw, &k))) return wrap(s, "%s", what);
        }
        if (k > KN_ONNX_MAX_COUNT - *n)
            return kn__err(KN_ELIMIT, "%s: more than %u items", what, KN_ONNX_MAX_COUNT);
        *n += k;
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

static kn_status check_depth(int depth) {
    if (depth > KN_PB_MAX_DEPTH)
        return kn__err(KN_ELIMIT, "messages nested deeper than %d", KN_PB_MAX_DEPTH);
    return KN_OK;
}

/* ---- TensorProto ---- */

/* element size in bytes for raw_data; 0: none (STRING / UNDEFINED); -1: 4-bit (2 per byte) */
static int dtype_size(int32_t dt) {
    static const signed char sz[KN_ONNX_DTYPE_MAX + 1] = {0, 4, 1,  1, 2, 2, 4, 8, 0,  1,  2,  8, 4,
                                                          8, 8, 16, 2, 1, 1, 1, 1, -1, -1, -1, 1};
    return sz[dt];
}
/* the typed field a data type is stored in, and the element count multiplier */
static int dtype_field(int32_t dt) {
    switch (dt) {
    case 1:
    case 14: return 4;
    case 8: return 6;
    case 7: return 7;
    case 11:
    case 15: return 10;
    case 12:
    case 13: return 11;
    case 0: return 0;
    default: return 5;
    }
}
static int field_wire(int num) {
    return num == 4 ? KN_PB_I32 : num == 10 ? KN_PB_I64 : num == 6 ? KN_PB_LEN : KN_PB_VARINT;
}

static kn_status parse_tensor_body(ctx *c, kn_pb msg, kn_onnx_tensor *t) {
    kn_pb_field f;
    kn_status s;
    size_t ndims = 0, n_ext = 0, n_str = 0, typed = 0;
    int typed_field = 0, typed_pieces = 0;
    bool last_packed = false;
    t->msg = msg;
    if ((s = count_field(msg, 1, KN_PB_VARINT, "dims", &ndims))) return s;
    if (ndims > KN_ONNX_MAX_DIMS)
        return kn__err(KN_ELIMIT, "dims: %zu dimensions, at most %d", ndims, KN_ONNX_MAX_DIMS);
    if ((s = count_field(msg, 13, -1, "external_data", &n_ext))) return s;
    if ((s = count_field(msg, 6, -1, "string_data", &n_str))) return s;
    if ((s = ar_alloc(c, ndims, sizeof(int64_t), &t->dims))) return s;
    if ((s = ar_alloc(c, n_ext, sizeof(kn_onnx_kv), &t->external_data))) return s;
    if ((s = ar_alloc(c, n_str, sizeof(kn_onnx_str), &t->strings))) return s;
    static const char *const tf_name[12] = {
        [4] = "float_data", [5] = "int32_data",   [6] = "string_data",
        [7] = "int64_data", [10] = "double_data", [11] = "uint64_data"};
    int64_t loc = 0;
    size_t di = 0;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        switch (f.num) {
        case 1: /* dims */
            if (f.wire == KN_PB_LEN) {
                uint64_t v;
                while (di < ndims && kn__pb_len(f.sub) && kn__pb_varint(&f.sub, &v) == KN_OK)
                    t->dims[di++] = kn__pb_int64(v);
            } else {
                if ((s = kn__pb_want(&f, KN_PB_VARINT, "dims"))) return s;
                t->dims[di++] = kn__pb_int64(f.v);
            }
            break;
        case 2: {
            int64_t v;
            if ((s = get_varint(&f, "data_type", &v))) return s;
            if (v < 0 || v > KN_ONNX_DTYPE_MAX)
                return kn__err(KN_EFORMAT, "data_type: unknown value %lld", (long long)v);
            t->data_type = (int32_t)v;
            break;
        }
        case 4:
        case 5:
        case 6:
        case 7:
        case 10:
        case 11: {
            const char *what = tf_name[f.num];
            if (typed_field && typed_field != (int)f.num)
                return kn__err(KN_EFORMAT, "%s: tensor also has %s", what, tf_name[typed_field]);
            typed_field = (int)f.num;
            int ew = field_wire(typed_field);
            size_t k = 1;
            if (f.num == 6) {
                kn_onnx_str sv;
                if ((s = get_str(&f, what, &sv))) return s;
                t->strings[typed] = sv;
            } else if (f.wire == KN_PB_LEN) {
                if ((s = kn__pb_packed_count(f.sub, ew, &k))) return wrap(s, "%s", what);
                t->typed = f.sub;
                last_packed = true;
            } else if ((s = kn__pb_want(&f, ew, what))) {
                return s;
            }
            if (k > KN_ONNX_MAX_COUNT - typed)
                return kn__err(KN_ELIMIT, "%s: more than %u items", what, KN_ONNX_MAX_COUNT);
            typed += k;
            typed_pieces++;
            break;
        }
        case 8:
            if ((s = get_str(&f, "name", &t->name))) return s;
            break;
        case 9:
            if ((s = get_str(&f, "raw_data", &t->raw))) return s;
            t->has_raw = true;
            break;
        case 13: {
            kn_onnx_kv *kv = &t->external_data[t->n_external];
            if ((s = kn__pb_want(&f, KN_PB_LEN, "external_data"))) return s;
            kn_pb e = f.sub;
            kn_pb_field g;
            while ((s = kn__pb_next(&e, &g)) == KN_OK) {
                if (g.num == 1 && (s = get_str(&g, "key", &kv->key))) break;
                if (g.num == 2 && (s = get_str(&g, "value", &kv->value))) break;
            }
            if (s != KN_PB_DONE) return wrap(s, "external_data[%zu]", t->n_external);
            t->n_external++;
            break;
        }
        case 14:
            if ((s = get_varint(&f, "data_location", &loc))) return s;
            if (loc != 0 && loc != 1)
                return kn__err(KN_EFORMAT, "data_location: unknown value %lld", (long long)loc);
            break;
        default: break;
        }
    }
    if (s != KN_PB_DONE) return s;
    t->ndims = (int)ndims;
    t->external = loc == 1;
    t->typed_field = typed_field;
    t->typed_count = typed;
    if (typed_pieces != 1 || !last_packed) t->typed = (kn_pb){NULL, NULL, NULL};
    int64_t numel = 1;
    for (size_t i = 0; i < ndims; i++) {
        if (t->dims[i] < 0)
            return kn__err(KN_EFORMAT, "dims[%zu]: negative dimension %lld", i,
                           (long long)t->dims[i]);
        if (t->dims[i] && numel > INT64_MAX / t->dims[i])
            return kn__err(KN_EFORMAT, "dims: element count overflows");
        numel *= t->dims[i];
    }
    if ((uint64_t)numel > SIZE_MAX) return kn__err(KN_EFORMAT, "dims: element count overflows");
    t->numel = numel;
    int kinds = t->has_raw + (typed_field != 0);
    if (kinds > 1) return kn__err(KN_EFORMAT, "raw_data: tensor also has %s", tf_name[typed_field]);
    if (t->external && kinds)
        return kn__err(KN_EFORMAT, "data_location: external tensor with inline data");
    if (!kinds) return KN_OK;
    int32_t dt = t->data_type;
    if (dt == KN_ONNX_UNDEFINED) return kn__err(KN_EFORMAT, "data_type: UNDEFINED with data");
    int es = dtype_size(dt);
    if (t->has_raw) {
        if (es == 0) return kn__err(KN_EFORMAT, "raw_data: not allowed for data_type %d", dt);
        size_t want;
        if (es < 0)
            want = (size_t)numel / 2 + (size_t)(numel & 1);
        else if (!kn__mul_ok((size_t)numel, (size_t)es, &want))
            return kn__err(KN_EFORMAT, "raw_data: size overflows");
        if (want != t->raw.n)
            return kn__err(KN_EFORMAT, "raw_data: %zu bytes, expected %zu (%lld x %d-byte)",
                           t->raw.n, want, (long long)numel, es);
        return KN_OK;
    }
    if (dtype_field(dt) != typed_field)
        return kn__err(KN_EFORMAT, "%s: does not hold data_type %d", tf_name[typed_field], dt);
    size_t want = (size_t)numel;
    if (es < 0)
        want = (size_t)numel / 2 + (size_t)(numel & 1);
    else if (dt == 14 || dt == 15) {
        if (!kn__mul_ok(want, 2, &want)) return kn__err(KN_EFORMAT, "dims: count overflows");
    }
    if (typed != want)
        return kn__err(KN_EFORMAT, "%s: %zu elements, expected %zu", tf_name[typed_field], typed,
                       want);
    return KN_OK;
}

static kn_status parse_tensor(ctx *c, kn_pb msg, int depth, kn_onnx_tensor *t) {
    kn_status s = check_depth(depth);
    if (!s) s = parse_tensor_body(c, msg, t);
    return s;
}

kn_status kn__onnx_tensor_values(const kn_onnx_tensor *t, uint64_t *out) {
    int tf = t->typed_field;
    if (tf != 4 && tf != 5 && tf != 7 && tf != 10 && tf != 11)
        return kn__err(KN_EINVAL, "onnx tensor: no numeric typed field");
    int ew = field_wire(tf);
    kn_pb m = t->msg;
    kn_pb_field f;
    size_t i = 0;
    while (i < t->typed_count && kn__pb_next(&m, &f) == KN_OK) {
        if ((int)f.num != tf) continue;
        if (f.wire != KN_PB_LEN) {
            out[i++] = f.v;
            continue;
        }
        kn_pb p = f.sub;
        while (kn__pb_len(p) && i < t->typed_count) {
            uint64_t v = 0;
            uint32_t u = 0;
            kn_status s;
            if (ew == KN_PB_VARINT)
                s = kn__pb_varint(&p, &v);
            else if (ew == KN_PB_I64)
                s = kn__pb_fixed64(&p, &v);
            else
                s = kn__pb_fixed32(&p, &u), v = u;
            if (s) return s;
            out[i++] = v;
        }
    }
    return KN_OK;
}

/* ---- ValueInfoProto ---- */

static kn_status parse_shape(ctx *c, kn_pb msg, kn_onnx_value_info *vi) {
    size_t nd;
    kn_status s = count_field(msg, 1, -1, "dim", &nd);
    if (s) return s;
    if (nd > KN_ONNX_MAX_DIMS)
        return kn__err(KN_ELIMIT, "dim: %zu dimensions, at most %d", nd, KN_ONNX_MAX_DIMS);
    if ((s = ar_alloc(c, nd, sizeof(kn_onnx_dim), &vi->dims))) return s;
    vi->has_shape = true;
    vi->ndims = 0;
    kn_pb_field f;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        if (f.num != 1) continue;
        if ((s = kn__pb_want(&f, KN_PB_LEN, "dim"))) return s;
        kn_onnx_dim *d = &vi->dims[vi->ndims];
        kn_pb m = f.sub;
        kn_pb_field g;
        while ((s = kn__pb_next(&m, &g)) == KN_OK) {
            if (g.num == 1) {
                if ((s = get_varint(&g, "dim_value", &d->value))) break;
                if (d->value < 0) {
                    s = kn__err(KN_EFORMAT, "dim_value: negative %lld", (long long)d->value);
                    break;
                }
                d->has_value = true;
            } else if (g.num == 2) {
                if ((s = get_str(&g, "dim_param", &d->param))) break;
            }
        }
        if (s != KN_PB_DONE) return wrap(s, "dim[%d]", vi->ndims);
        vi->ndims++;
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

static kn_status parse_tensor_type(ctx *c, kn_pb msg, kn_onnx_value_info *vi) {
    kn_pb_field f;
    kn_status s;
    vi->has_tensor_type = true;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        if (f.num == 1) {
            int64_t v;
            if ((s = get_varint(&f, "elem_type", &v))) return s;
            if (v < 0 || v > KN_ONNX_DTYPE_MAX)
                return kn__err(KN_EFORMAT, "elem_type: unknown value %lld", (long long)v);
            vi->elem_type = (int32_t)v;
        } else if (f.num == 2) {
            if ((s = kn__pb_want(&f, KN_PB_LEN, "shape"))) return s;
            if ((s = parse_shape(c, f.sub, vi))) return wrap(s, "shape");
        }
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

static kn_status parse_value_info(ctx *c, kn_pb msg, int depth, kn_onnx_value_info *vi) {
    kn_pb_field f;
    kn_status s = check_depth(depth + 3);
    if (s) return s;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        if (f.num == 1) {
            if ((s = get_str(&f, "name", &vi->name))) return s;
        } else if (f.num == 2) {
            if ((s = kn__pb_want(&f, KN_PB_LEN, "type"))) return s;
            kn_pb m = f.sub;
            kn_pb_field g;
            while ((s = kn__pb_next(&m, &g)) == KN_OK) {
                if (g.num != 1) continue;
                if ((s = kn__pb_want(&g, KN_PB_LEN, "tensor_type"))) break;
                if ((s = parse_tensor_type(c, g.sub, vi))) {
                    s = wrap(s, "tensor_type");
                    break;
                }
            }
            if (s != KN_PB_DONE) return wrap(s, "type");
        }
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

/* ---- NodeProto / AttributeProto / GraphProto ---- */

static kn_status parse_graph(ctx *c, kn_pb msg, int depth, kn_onnx_graph *g);

static kn_status parse_attr(ctx *c, kn_pb msg, int depth, kn_onnx_attr *a) {
    kn_status s = check_depth(depth);
    if (s) return s;
    if ((s = count_field(msg, 7, KN_PB_I32, "floats", &a->n_floats))) return s;
    if ((s = count_field(msg, 8, KN_PB_VARINT, "ints", &a->n_ints))) return s;
    if ((s = count_field(msg, 9, -1, "strings", &a->n_strings))) return s;
    if ((s = ar_alloc(c, a->n_floats, sizeof(float), &a->floats))) return s;
    if ((s = ar_alloc(c, a->n_ints, sizeof(int64_t), &a->ints))) return s;
    if ((s = ar_alloc(c, a->n_strings, sizeof(kn_onnx_str), &a->strings))) return s;
    size_t nf = 0, ni = 0, ns = 0;
    kn_pb_field f;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        switch (f.num) {
        case 1:
            if ((s = get_str(&f, "name", &a->name))) return s;
            break;
        case 2:
            if ((s = kn__pb_want(&f, KN_PB_I32, "f"))) return s;
            a->f = kn__pb_f32(f.v);
            break;
        case 3:
            if ((s = get_varint(&f, "i", &a->i))) return s;
            break;
        case 4:
            if ((s = get_str(&f, "s", &a->s))) return s;
            break;
        case 5:
            if ((s = kn__pb_want(&f, KN_PB_LEN, "t"))) return s;
            if (!a->t && (s = ar_alloc(c, 1, sizeof(kn_onnx_tensor), &a->t))) return s;
            memset(a->t, 0, sizeof *a->t);
            if ((s = parse_tensor(c, f.sub, depth + 1, a->t))) return wrap(s, "t");
            break;
        case 6:
            if ((s = kn__pb_want(&f, KN_PB_LEN, "g"))) return s;
            if (!a->g && (s = ar_alloc(c, 1, sizeof(kn_onnx_graph), &a->g))) return s;
            memset(a->g, 0, sizeof *a->g);
            if ((s = parse_graph(c, f.sub, depth + 1, a->g))) return wrap(s, "g");
            break;
        case 7:
            if (f.wire == KN_PB_LEN) {
                uint32_t u;
                while (nf < a->n_floats && kn__pb_fixed32(&f.sub, &u) == KN_OK)
                    a->floats[nf++] = kn__pb_f32(u);
            } else {
                if ((s = kn__pb_want(&f, KN_PB_I32, "floats"))) return s;
                a->floats[nf++] = kn__pb_f32(f.v);
            }
            break;
        case 8:
            if (f.wire == KN_PB_LEN) {
                uint64_t v;
                while (ni < a->n_ints && kn__pb_varint(&f.sub, &v) == KN_OK)
                    a->ints[ni++] = kn__pb_int64(v);
            } else {
                if ((s = kn__pb_want(&f, KN_PB_VARINT, "ints"))) return s;
                a->ints[ni++] = kn__pb_int64(f.v);
            }
            break;
        case 9:
            if ((s = get_str(&f, "strings", &a->strings[ns++]))) return s;
            break;
        case 20: {
            int64_t v;
            if ((s = get_varint(&f, "type", &v))) return s;
            if (v < 0 || v > KN_ONNX_ATTR_MAX)
                return kn__err(KN_EFORMAT, "type: unknown value %lld", (long long)v);
            a->type = (int32_t)v;
            break;
        }
        default: break;
        }
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

static kn_status parse_node(ctx *c, kn_pb msg, int depth, kn_onnx_node *nd) {
    kn_status s = check_depth(depth);
    if (s) return s;
    if ((s = count_field(msg, 1, -1, "input", &nd->n_inputs))) return s;
    if ((s = count_field(msg, 2, -1, "output", &nd->n_outputs))) return s;
    if ((s = count_field(msg, 5, -1, "attribute", &nd->n_attrs))) return s;
    if ((s = ar_alloc(c, nd->n_inputs, sizeof(kn_onnx_str), &nd->inputs))) return s;
    if ((s = ar_alloc(c, nd->n_outputs, sizeof(kn_onnx_str), &nd->outputs))) return s;
    if ((s = ar_alloc(c, nd->n_attrs, sizeof(kn_onnx_attr), &nd->attrs))) return s;
    size_t ni = 0, no = 0, na = 0;
    kn_pb_field f;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        switch (f.num) {
        case 1:
            if ((s = get_str(&f, "input", &nd->inputs[ni]))) return wrap(s, "input[%zu]", ni);
            ni++;
            break;
        case 2:
            if ((s = get_str(&f, "output", &nd->outputs[no]))) return wrap(s, "output[%zu]", no);
            no++;
            break;
        case 3:
            if ((s = get_str(&f, "name", &nd->name))) return s;
            break;
        case 4:
            if ((s = get_str(&f, "op_type", &nd->op_type))) return s;
            break;
        case 7:
            if ((s = get_str(&f, "domain", &nd->domain))) return s;
            break;
        case 5:
            if ((s = kn__pb_want(&f, KN_PB_LEN, "attribute"))) return wrap(s, "attribute[%zu]", na);
            if ((s = parse_attr(c, f.sub, depth + 1, &nd->attrs[na]))) {
                kn_onnx_str nm = peek_str(f.sub, 1);
                return wrap(s, "attribute[%zu]" NAMEFMT, na, NAMEARG(nm));
            }
            na++;
            break;
        default: break;
        }
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

static kn_status parse_graph(ctx *c, kn_pb msg, int depth, kn_onnx_graph *g) {
    kn_status s = check_depth(depth);
    if (s) return s;
    static const char *const what[14] = {
        [1] = "node", [5] = "initializer", [11] = "input", [12] = "output", [13] = "value_info"};
    if ((s = count_field(msg, 1, -1, "node", &g->n_nodes))) return s;
    if ((s = count_field(msg, 5, -1, "initializer", &g->n_initializers))) return s;
    if ((s = count_field(msg, 11, -1, "input", &g->n_inputs))) return s;
    if ((s = count_field(msg, 12, -1, "output", &g->n_outputs))) return s;
    if ((s = count_field(msg, 13, -1, "value_info", &g->n_value_infos))) return s;
    if ((s = ar_alloc(c, g->n_nodes, sizeof(kn_onnx_node), &g->nodes))) return s;
    if ((s = ar_alloc(c, g->n_initializers, sizeof(kn_onnx_tensor), &g->initializers))) return s;
    if ((s = ar_alloc(c, g->n_inputs, sizeof(kn_onnx_value_info), &g->inputs))) return s;
    if ((s = ar_alloc(c, g->n_outputs, sizeof(kn_onnx_value_info), &g->outputs))) return s;
    if ((s = ar_alloc(c, g->n_value_infos, sizeof(kn_onnx_value_info), &g->value_infos))) return s;
    size_t idx[14] = {0};
    kn_pb_field f;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        uint32_t num = f.num;
        if (num == 2) {
            if ((s = get_str(&f, "name", &g->name))) return s;
            continue;
        }
        if (num != 1 && num != 5 && num != 11 && num != 12 && num != 13) continue;
        size_t i = idx[num]++;
        if ((s = kn__pb_want(&f, KN_PB_LEN, what[num]))) return wrap(s, "%s[%zu]", what[num], i);
        uint32_t name_field = 1;
        if (num == 1)
            s = parse_node(c, f.sub, depth + 1, &g->nodes[i]), name_field = 3;
        else if (num == 5)
            s = parse_tensor(c, f.sub, depth + 1, &g->initializers[i]), name_field = 8;
        else {
            kn_onnx_value_info *vi = num == 11   ? &g->inputs[i]
                                     : num == 12 ? &g->outputs[i]
                                                 : &g->value_infos[i];
            s = parse_value_info(c, f.sub, depth + 1, vi);
        }
        if (s) {
            kn_onnx_str nm = peek_str(f.sub, name_field);
            if (num == 1 && nm.n == 0) nm = peek_str(f.sub, 4);
            return wrap(s, "%s[%zu]" NAMEFMT, what[num], i, NAMEARG(nm));
        }
    }
    return s == KN_PB_DONE ? KN_OK : s;
}

/* ---- ModelProto ---- */

static kn_status parse_model(ctx *c, kn_pb msg, kn_onnx_model *m) {
    kn_status s = count_field(msg, 8, -1, "opset_import", &m->n_opsets);
    if (s) return s;
    if ((s = ar_alloc(c, m->n_opsets, sizeof(kn_onnx_opset), &m->opsets))) return s;
    size_t no = 0;
    bool has_graph = false;
    kn_pb_field f;
    while ((s = kn__pb_next(&msg, &f)) == KN_OK) {
        switch (f.num) {
        case 1:
            if ((s = get_varint(&f, "ir_version", &m->ir_version))) return s;
            break;
        case 2:
            if ((s = get_str(&f, "producer_name", &m->producer_name))) return s;
            break;
        case 7:
            if ((s = kn__pb_want(&f, KN_PB_LEN, "graph"))) return s;
            memset(&m->graph, 0, sizeof m->graph);
            if ((s = parse_graph(c, f.sub, 1, &m->graph))) return wrap(s, "graph");
            has_graph = true;
            break;
        case 8: {
            kn_onnx_opset *o = &m->opsets[no];
            if ((s = kn__pb_want(&f, KN_PB_LEN, "opset_import")))
                return wrap(s, "opset_import[%zu]", no);
            kn_pb e = f.sub;
            kn_pb_field g;
            while ((s = kn__pb_next(&e, &g)) == KN_OK) {
                if (g.num == 1 && (s = get_str(&g, "domain", &o->domain))) break;
                if (g.num == 2 && (s = get_varint(&g, "version", &o->version))) break;
            }
            if (s != KN_PB_DONE) return wrap(s, "opset_import[%zu]", no);
            no++;
            break;
        }
        default: break;
        }
    }
    if (s != KN_PB_DONE) return s;
    if (!has_graph) return kn__err(KN_EFORMAT, "graph: missing");
    return KN_OK;
}

kn_onnx_model *kn__onnx_model_parse(const void *data, size_t n) {
    if (!data && n) return kn__errp(KN_EINVAL, "onnx: NULL data");
    kn_onnx_model *m = kn__calloc(1, sizeof *m);
    if (!m) return NULL;
    ctx c = {NULL};
    kn_status s = parse_model(&c, kn__pb_init(data, n), m);
    m->arena_ = c.arena;
    if (s) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        kn__onnx_model_free(m);
        return kn__errp(s, "onnx model: %s", msg);
    }
    return m;
}

static void arena_free(ar_blk *b) {
    while (b) {
        ar_blk *next = b->next;
        kn__free(b);
        b = next;
    }
}

void kn__onnx_model_free(kn_onnx_model *m) {
    if (!m) return;
    arena_free(m->arena_);
    kn__free(m);
}

kn_onnx_tensor_file *kn__onnx_tensor_parse(const void *data, size_t n) {
    if (!data && n) return kn__errp(KN_EINVAL, "onnx tensor: NULL data");
    kn_onnx_tensor_file *f = kn__calloc(1, sizeof *f);
    if (!f) return NULL;
    ctx c = {NULL};
    kn_status s = parse_tensor(&c, kn__pb_init(data, n), 0, &f->t);
    f->arena_ = c.arena;
    if (s) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        kn__onnx_tensor_file_free(f);
        return kn__errp(s, "onnx tensor: %s", msg);
    }
    return f;
}

void kn__onnx_tensor_file_free(kn_onnx_tensor_file *f) {
    if (!f) return;
    arena_free(f->arena_);
    kn__free(f);
}
