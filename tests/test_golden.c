/*
 * test_golden.c - kiln's public ops against PyTorch: replays tests/golden/ops.json + ops.bin
 * (written by tools/gen_ref.py with python3-torch; see tools/README.md) through the public API.
 *
 * For each case: builds the inputs (as non-contiguous views when the case asks), calls the public
 * function through the adapter table below (op name -> kn_* call built from the case's params),
 * compares every output with PyTorch's, then the gradients of sum(outputs[k] * weights[k]) (via
 * kn_grad) with PyTorch's. It does all of that twice, with the fast kernels and with the
 * reference kernels forced (kn__force_ref), and also compares the two runs tightly. For
 * differentiable float cases it then runs kn_gradcheck in f64 on the case's inputs. Each case
 * counts as one test; a failing case prints one line: op, case id and the first mismatch.
 *
 * Not here: dropout (different RNG than PyTorch), registry attribute names (only the public
 * headers are used, plus kn__force_ref). The fixture is found through $KILN_SOURCE_DIR (set by
 * CTest) or the working directory; a missing or corrupt fixture is one clear failure, never a
 * crash.
 *
 * Usage: test_golden [substring]   runs only cases whose id or op contains substring.
 *        KILN_GOLDEN_VERBOSE=1       prints every case and the per-op table.
 */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden/autograd_basics.h"
#include "kn_test.h"
#include "ops/op_impl.h"

#define GOLDEN_MAGIC "KILN-GOLDEN"
#define GOLDEN_VERSION 1
#define MAXT 16 /* inputs / outputs per case */
#define MSGLEN 512

/* Golden tolerances (|got - want| <= atol + rtol * |want|). f64 is the exact-math check: kiln and
 * PyTorch differ only by summation order there. Integer, bool, f16 and bf16 results are exact. */
#define F32_ATOL 1e-5
#define F32_RTOL 1e-4
#define F64_ATOL 1e-10
#define F64_RTOL 1e-10
/* Fast kernel vs reference kernel, same machine: only the summation order may differ. Rounding
 * error of a sum scales with its terms, not with the (possibly cancelled) result, so atol is
 * multiplied by max(1, max |output|) of the tensor being compared. */
#define REF_F32_ATOL 2e-6
#define REF_F32_RTOL 1e-5
#define REF_F64_ATOL 1e-12
#define REF_F64_RTOL 1e-12

enum { NC_NONE = 0, NC_TRANSPOSE, NC_STRIDE };

typedef struct tdesc {
    bool present; /* weights/grads may be null */
    const char *name;
    kn_dtype dt;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    int64_t numel;
    const unsigned char *data; /* inside the .bin */
    bool grad;
    int nc;
} tdesc;

typedef struct gcase {
    const char *id, *op;
    json_object *params;
    int nin, nout;
    tdesc in[MAXT], out[MAXT], w[MAXT], g[MAXT];
    bool has_grads, gradcheck;
} gcase;

typedef struct fixture {
    json_object *root, *cases;
    unsigned char *bin;
    size_t bin_size;
    char torch[64];
} fixture;

/* ------------------------------------------------------------------ small utilities */
static void msgf(char *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msgf(char *msg, const char *fmt, ...) {
    if (msg[0]) return; /* keep the first failure */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, MSGLEN, fmt, ap);
    va_end(ap);
}

static uint32_t crc32_buf(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static bool dtype_from_name(const char *s, kn_dtype *dt) {
    static const char *names[] = {"float32", "float64", "float16", "bfloat16", "int8",
                                  "uint8",   "int32",   "int64",   "bool"};
    static const kn_dtype dts[] = {KN_F32, KN_F64, KN_F16, KN_BF16, KN_I8,
                                   KN_U8,  KN_I32, KN_I64, KN_BOOL};
    for (size_t i = 0; s && i < sizeof(dts) / sizeof(dts[0]); i++)
        if (!strcmp(s, names[i])) {
            *dt = dts[i];
            return true;
        }
    return false;
}

static size_t esize(kn_dtype dt) {
    switch (dt) {
    case KN_F64:
    case KN_I64: return 8;
    case KN_F32:
    case KN_I32: return 4;
    case KN_F16:
    case KN_BF16: return 2;
    default: return 1;
    }
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* element j of raw little-endian data as double (independent of kiln's own conversions) */
static double raw_at(kn_dtype dt, const unsigned char *p, int64_t j) {
    const unsigned char *q = p + (size_t)j * esize(dt);
    switch (dt) {
    case KN_F32: {
        float v;
        memcpy(&v, q, 4);
        return v;
    }
    case KN_F64: {
        double v;
        memcpy(&v, q, 8);
        return v;
    }
    case KN_F16: {
        uint16_t v;
        memcpy(&v, q, 2);
        return half_to_double(v);
    }
    case KN_BF16: {
        uint16_t v;
        memcpy(&v, q, 2);
        uint32_t u = (uint32_t)v << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case KN_I8: return (int8_t)q[0];
    case KN_U8: return q[0];
    case KN_BOOL: return q[0] != 0;
    case KN_I32: {
        int32_t v;
        memcpy(&v, q, 4);
        return v;
    }
    case KN_I64: {
        int64_t v;
        memcpy(&v, q, 8);
        return (double)v;
    }
    default: return NAN;
    }
}

static void shape_str(char *buf, size_t len, int nd, const int64_t *s) {
    size_t o = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < nd && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < len) snprintf(buf + o, len - o, ")");
}

/* ------------------------------------------------------------------ fixture loading */
static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)sz + 1))) {
            if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
                free(buf);
                buf = NULL;
            } else {
                buf[sz] = 0;
                *n = (size_t)sz;
            }
        }
    }
    fclose(f);
    return buf;
}

static json_object *jget(json_object *o, const char *k) {
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, k, &v))
        return NULL;
    return v;
}

static bool fixture_open(fixture *fx, char *msg) {
    memset(fx, 0, sizeof(*fx));
    const char *src = getenv("KILN_SOURCE_DIR");
    const char *bases[] = {src, ".", "..", "../.."};
    char dir[1024] = "", path[1100];
    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        if (!bases[i] || !bases[i][0]) continue;
        snprintf(path, sizeof(path), "%s/tests/golden/ops.json", bases[i]);
        FILE *f = fopen(path, "rb");
        if (f) {
            fclose(f);
            snprintf(dir, sizeof(dir), "%s/tests/golden", bases[i]);
            break;
        }
    }
    if (!dir[0]) {
        msgf(msg,
             "fixture tests/golden/ops.json not found (KILN_SOURCE_DIR=%s, cwd tried); "
             "regenerate with /usr/bin/python3 tools/gen_ref.py",
             src ? src : "unset");
        return false;
    }
    snprintf(path, sizeof(path), "%s/ops.json", dir);
    size_t jn = 0;
    char *text = read_file(path, &jn);
    if (!text) {
        msgf(msg, "cannot read %s", path);
        return false;
    }
    json_tokener *tok = json_tokener_new_ex(64);
    fx->root = tok ? json_tokener_parse_ex(tok, text, (int)jn) : NULL;
    if (!fx->root || json_tokener_get_error(tok) != json_tokener_success) {
        enum json_tokener_error je = tok ? json_tokener_get_error(tok) : json_tokener_success;
        msgf(msg, "%s: not valid JSON (%s)", path,
             !tok                          ? "out of memory"
             : je == json_tokener_continue ? "truncated"
                                           : json_tokener_error_desc(je));
        if (fx->root) json_object_put(fx->root);
        fx->root = NULL;
    }
    if (tok) json_tokener_free(tok);
    free(text);
    if (!fx->root) return false;
    json_object *magic = jget(fx->root, "magic"), *ver = jget(fx->root, "version");
    const char *ms = magic ? json_object_get_string(magic) : NULL;
    if (!ms || strcmp(ms, GOLDEN_MAGIC) || !ver || json_object_get_int(ver) != GOLDEN_VERSION) {
        msgf(msg, "%s: bad magic/version (want %s v%d)", path, GOLDEN_MAGIC, GOLDEN_VERSION);
        return false;
    }
    json_object *tv = jget(fx->root, "torch");
    snprintf(fx->torch, sizeof(fx->torch), "%s", tv ? json_object_get_string(tv) : "?");
    fx->cases = jget(fx->root, "cases");
    json_object *bn = jget(fx->root, "bin"), *bs = jget(fx->root, "bin_size"),
                *bc = jget(fx->root, "bin_crc32");
    const char *bname = bn ? json_object_get_string(bn) : NULL;
    if (!fx->cases || !json_object_is_type(fx->cases, json_type_array) || !bname ||
        strchr(bname, '/') || !bs || !bc) {
        msgf(msg, "%s: missing cases/bin/bin_size/bin_crc32", path);
        return false;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, bname);
    size_t bnn = 0;
    fx->bin = (unsigned char *)read_file(path, &bnn);
    if (!fx->bin) {
        msgf(msg, "cannot read %s", path);
        return false;
    }
    fx->bin_size = bnn;
    if ((int64_t)bnn != json_object_get_int64(bs)) {
        msgf(msg, "%s: %zu bytes, ops.json says %lld (truncated or stale?)", path, bnn,
             (long long)json_object_get_int64(bs));
        return false;
    }
    uint32_t crc = crc32_buf(fx->bin, bnn);
    if ((int64_t)crc != json_object_get_int64(bc)) {
        msgf(msg, "%s: crc32 %u, ops.json says %lld (corrupt or stale)", path, crc,
             (long long)json_object_get_int64(bc));
        return false;
    }
    return true;
}

static void fixture_close(fixture *fx) {
    if (fx->root) json_object_put(fx->root);
    free(fx->bin);
    memset(fx, 0, sizeof(*fx));
}

/* Parses a tensor descriptor; everything from the file is validated against the .bin. */
static bool parse_tensor(const fixture *fx, json_object *j, tdesc *t, bool is_input, char *msg,
                         const char *what) {
    memset(t, 0, sizeof(*t));
    if (!j || json_object_is_type(j, json_type_null)) return true; /* absent */
    json_object *dt = jget(j, "dtype"), *sh = jget(j, "shape"), *off = jget(j, "offset");
    if (!dtype_from_name(dt ? json_object_get_string(dt) : NULL, &t->dt) || !sh ||
        !json_object_is_type(sh, json_type_array) || !off) {
        msgf(msg, "fixture: %s: bad dtype/shape/offset", what);
        return false;
    }
    size_t nd = json_object_array_length(sh);
    if (nd > KN_MAX_DIMS) {
        msgf(msg, "fixture: %s: %zu dims", what, nd);
        return false;
    }
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        int64_t d = json_object_get_int64(json_object_array_get_idx(sh, i));
        if (d < 0 || d > ((int64_t)1 << 30) || (d && numel > ((int64_t)1 << 40) / d)) {
            msgf(msg, "fixture: %s: bad dim %lld", what, (long long)d);
            return false;
        }
        t->shape[i] = d;
        numel *= d;
    }
    t->numel = numel;
    int64_t o = json_object_get_int64(off);
    if (o < 0 || (size_t)o > fx->bin_size || (size_t)numel * esize(t->dt) > fx->bin_size - o) {
        msgf(msg, "fixture: %s: data [%lld, +%lld elements) outside ops.bin", what, (long long)o,
             (long long)numel);
        return false;
    }
    t->data = fx->bin + o;
    t->present = true;
    if (is_input) {
        json_object *n = jget(j, "name"), *g = jget(j, "grad"), *nc = jget(j, "noncontig");
        t->name = n ? json_object_get_string(n) : "";
        t->grad = g && json_object_get_boolean(g);
        if (t->grad && t->dt != KN_F32 && t->dt != KN_F64) {
            msgf(msg, "fixture: %s: grad on a non-float input", what);
            return false;
        }
        if (nc) {
            const char *s = json_object_get_string(nc);
            t->nc = !strcmp(s, "transpose") ? NC_TRANSPOSE : !strcmp(s, "stride") ? NC_STRIDE : -1;
            if (t->nc < 0 || (t->nc == NC_TRANSPOSE && nd < 2) || (t->nc == NC_STRIDE && nd < 1)) {
                msgf(msg, "fixture: %s: bad noncontig \"%s\"", what, s);
                return false;
            }
        }
    }
    return true;
}

static bool parse_list(const fixture *fx, json_object *arr, tdesc *ts, int *n, bool inputs,
                       char *msg, const char *what) {
    *n = 0;
    if (!arr || !json_object_is_type(arr, json_type_array)) {
        msgf(msg, "fixture: %s missing", what);
        return false;
    }
    size_t len = json_object_array_length(arr);
    if (len > MAXT) {
        msgf(msg, "fixture: %zu %s (max %d)", len, what, MAXT);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char w[64];
        snprintf(w, sizeof(w), "%s[%zu]", what, i);
        if (!parse_tensor(fx, json_object_array_get_idx(arr, i), &ts[i], inputs, msg, w))
            return false;
        if (inputs && !ts[i].present) {
            msgf(msg, "fixture: %s is null", w);
            return false;
        }
    }
    *n = (int)len;
    return true;
}

static bool parse_case(const fixture *fx, json_object *j, gcase *c, char *msg) {
    memset(c, 0, sizeof(*c));
    json_object *id = jget(j, "id"), *op = jget(j, "op");
    c->id = id ? json_object_get_string(id) : NULL;
    c->op = op ? json_object_get_string(op) : NULL;
    c->params = jget(j, "params");
    if (!c->id || !c->op || !c->params || !json_object_is_type(c->params, json_type_object)) {
        msgf(msg, "fixture: case without id/op/params");
        return false;
    }
    if (!parse_list(fx, jget(j, "inputs"), c->in, &c->nin, true, msg, "inputs") ||
        !parse_list(fx, jget(j, "outputs"), c->out, &c->nout, false, msg, "outputs"))
        return false;
    for (int i = 0; i < c->nout; i++)
        if (!c->out[i].present) {
            msgf(msg, "fixture: outputs[%d] is null", i);
            return false;
        }
    json_object *ws = jget(j, "weights"), *gs = jget(j, "grads");
    if (ws || gs) {
        int nw = 0, ng = 0;
        if (!parse_list(fx, ws, c->w, &nw, false, msg, "weights") ||
            !parse_list(fx, gs, c->g, &ng, false, msg, "grads"))
            return false;
        if (nw != c->nout || ng != c->nin) {
            msgf(msg, "fixture: %d weights for %d outputs, %d grads for %d inputs", nw, c->nout, ng,
                 c->nin);
            return false;
        }
        for (int i = 0; i < c->nin; i++)
            if (c->g[i].present != c->in[i].grad) {
                msgf(msg, "fixture: grads[%d] does not match inputs[%d].grad", i, i);
                return false;
            }
        c->has_grads = true;
        json_object *gc = jget(j, "gradcheck");
        c->gradcheck = gc && json_object_get_boolean(gc);
    }
    return true;
}

/* ------------------------------------------------------------------ adapters: op -> kn_* call */
typedef struct actx {
    const gcase *c;
    kn_tensor *const *in;
} actx;
typedef void (*anyfn)(void); /* the kn_* function an adapter calls, for shared adapters */
typedef int (*adapter_fn)(const actx *a, anyfn fn, kn_tensor **out, int max_out);

static kn_tensor *IN(const actx *a, const char *name) {
    for (int i = 0; i < a->c->nin; i++)
        if (!strcmp(a->c->in[i].name, name)) return a->in[i];
    return NULL;
}
static json_object *P(const actx *a, const char *k) {
    json_object *v = jget(a->c->params, k);
    return v && !json_object_is_type(v, json_type_null) ? v : NULL;
}
static int64_t p_int(const actx *a, const char *k, int64_t def) {
    json_object *v = P(a, k);
    return v ? json_object_get_int64(v) : def;
}
static double p_f(const actx *a, const char *k, double def) {
    json_object *v = P(a, k);
    return v ? json_object_get_double(v) : def;
}
static bool p_bool(const actx *a, const char *k) {
    json_object *v = P(a, k);
    return v && json_object_get_boolean(v);
}
static const char *p_str(const actx *a, const char *k) {
    json_object *v = P(a, k);
    return v ? json_object_get_string(v) : "";
}
/* integer list: count (0 for [] or absent), at most max entries */
static int p_ints(const actx *a, const char *k, int64_t *out, int max) {
    json_object *v = P(a, k);
    if (!v || !json_object_is_type(v, json_type_array)) return 0;
    int n = (int)json_object_array_length(v);
    if (n > max) n = max;
    for (int i = 0; i < n; i++)
        out[i] = json_object_get_int64(json_object_array_get_idx(v, i));
    return n;
}
static int p_axes(const actx *a, int *axes) {
    int64_t v[KN_MAX_DIMS];
    int n = p_ints(a, "axes", v, KN_MAX_DIMS);
    for (int i = 0; i < n; i++)
        axes[i] = (int)v[i];
    return n;
}
static kn_dtype p_dtype(const actx *a) {
    kn_dtype dt = KN_NDTYPES;
    dtype_from_name(p_str(a, "dtype"), &dt);
    return dt;
}
static kn_reduction p_red(const actx *a) {
    const char *r = p_str(a, "reduction");
    return !strcmp(r, "sum") ? KN_REDUCE_SUM : !strcmp(r, "none") ? KN_REDUCE_NONE : KN_REDUCE_MEAN;
}

#define RET1(expr)                                                                                 \
    do {                                                                                           \
        out[0] = (expr);                                                                           \
        return out[0] ? 1 : -1;                                                                    \
    } while (0)
#define RETST(st, t)                                                                               \
    do {                                                                                           \
        if ((st) != KN_OK) return -1;                                                              \
        out[0] = (t);                                                                              \
        return 1;                                                                                  \
    } while (0)

typedef kn_tensor *(*un_fn)(kn_tensor *);
typedef kn_tensor *(*bin_fn)(kn_tensor *, kn_tensor *);
typedef kn_tensor *(*red_fn)(kn_tensor *, const int *, int, bool);
typedef kn_tensor *(*dimred_fn)(kn_tensor *, int, bool, kn_tensor **);
typedef kn_tensor *(*argred_fn)(kn_tensor *, int, bool);
typedef kn_tensor *(*var_fn)(kn_tensor *, const int *, int, int64_t, bool);
typedef kn_tensor *(*tri_fn)(kn_tensor *, int64_t);
typedef kn_tensor *(*join_fn)(kn_tensor *const *, int, int);
typedef kn_tensor *(*pair_loss_fn)(kn_tensor *, kn_tensor *, kn_reduction);
typedef kn_tensor *(*cls_loss_fn)(kn_tensor *, kn_tensor *, const kn_loss_opts *);

#define X IN(a, "x")

static int ad_unary(const actx *a, anyfn fn, kn_tensor **out, int max_out) {
    RET1(((un_fn)fn)(X));
}
static int ad_binary(const actx *a, anyfn fn, kn_tensor **out, int max_out) {
    RET1(((bin_fn)fn)(IN(a, "a"), IN(a, "b")));
}
static int ad_clone(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_clone(X));
}
static int ad_contiguous(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_contiguous(X));
}
static int ad_cast(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_cast(X, p_dtype(a)));
}
static int ad_reshape(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int64_t s[KN_MAX_DIMS];
    int n = p_ints(a, "shape", s, KN_MAX_DIMS);
    RET1(kn_reshape(X, n, s));
}
static int ad_flatten(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_flatten(X, (int)p_int(a, "start", 0), (int)p_int(a, "end", -1)));
}
static int ad_transpose(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_transpose(X, (int)p_int(a, "dim0", 0), (int)p_int(a, "dim1", 1)));
}
static int ad_permute(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int64_t d[KN_MAX_DIMS];
    int dims[KN_MAX_DIMS] = {0}, n = p_ints(a, "dims", d, KN_MAX_DIMS);
    for (int i = 0; i < n; i++)
        dims[i] = (int)d[i];
    RET1(kn_permute(X, dims));
}
static int ad_squeeze(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_squeeze(X, (int)p_int(a, "dim", KN_ALL_DIMS))); /* null: every size-1 dim */
}
static int ad_unsqueeze(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_unsqueeze(X, (int)p_int(a, "dim", 0)));
}
static int ad_expand(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int64_t s[KN_MAX_DIMS];
    int n = p_ints(a, "shape", s, KN_MAX_DIMS);
    RET1(kn_expand(X, n, s));
}
static int ad_slice(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_slice(X, (int)p_int(a, "dim", 0), p_int(a, "start", 0), p_int(a, "end", KN_SLICE_END),
                  p_int(a, "step", 1)));
}
static int ad_leaky_relu(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_leaky_relu(X, p_f(a, "negative_slope", 0.01)));
}
static int ad_elu(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_elu(X, p_f(a, "alpha", 1.0)));
}
static int ad_gelu(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_gelu(X, p_bool(a, "tanh")));
}
static int ad_softplus(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_softplus(X, p_f(a, "beta", 1.0), p_f(a, "threshold", 20.0)));
}
static int ad_where(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_where(IN(a, "cond"), IN(a, "a"), IN(a, "b")));
}
static int ad_clamp(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_clamp(X, p_f(a, "min", NAN), p_f(a, "max", NAN)));
}
static int ad_add_scalar(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_add_scalar(X, p_f(a, "s", 0)));
}
static int ad_mul_scalar(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_mul_scalar(X, p_f(a, "s", 1)));
}
static int ad_pow_scalar(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_pow_scalar(X, p_f(a, "exponent", 1)));
}
static int ad_reduce(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int axes[KN_MAX_DIMS], n = p_axes(a, axes);
    RET1(((red_fn)fn)(X, axes, n, p_bool(a, "keepdim")));
}
static int ad_dimred(const actx *a, anyfn fn, kn_tensor **out, int m) {
    out[1] = NULL;
    out[0] = ((dimred_fn)fn)(X, (int)p_int(a, "dim", 0), p_bool(a, "keepdim"), &out[1]);
    return out[0] && out[1] ? 2 : -1;
}
static int ad_argred(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(((argred_fn)fn)(X, (int)p_int(a, "dim", 0), p_bool(a, "keepdim")));
}
static int ad_var(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int axes[KN_MAX_DIMS], n = p_axes(a, axes);
    RET1(((var_fn)fn)(X, axes, n, p_int(a, "correction", 1), p_bool(a, "keepdim")));
}
static int ad_norm(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int axes[KN_MAX_DIMS], n = p_axes(a, axes);
    RET1(kn_norm(X, p_f(a, "p", 2), axes, n, p_bool(a, "keepdim")));
}
static int ad_linear(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_linear(X, IN(a, "w"), IN(a, "b")));
}
static kn_conv_opts conv_opts(const actx *a) {
    kn_conv_opts o = {0};
    p_ints(a, "stride", o.stride, 2);
    p_ints(a, "padding", o.padding, 2);
    p_ints(a, "dilation", o.dilation, 2);
    o.groups = p_int(a, "groups", 1);
    o.same_padding = p_bool(a, "same");
    return o;
}
static int ad_conv1d(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_conv_opts o = conv_opts(a);
    RET1(kn_conv1d(X, IN(a, "w"), IN(a, "b"), &o));
}
static int ad_conv2d(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_conv_opts o = conv_opts(a);
    RET1(kn_conv2d(X, IN(a, "w"), IN(a, "b"), &o));
}
static int ad_conv_transpose2d(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_conv_opts o = conv_opts(a);
    int64_t op[2] = {0, 0};
    p_ints(a, "output_padding", op, 2);
    RET1(kn_conv_transpose2d(X, IN(a, "w"), IN(a, "b"), &o, op));
}
static kn_pool_opts pool_opts(const actx *a) {
    kn_pool_opts o = {0};
    p_ints(a, "kernel", o.kernel, 2);
    p_ints(a, "stride", o.stride, 2);
    p_ints(a, "padding", o.padding, 2);
    p_ints(a, "dilation", o.dilation, 2);
    o.ceil_mode = p_bool(a, "ceil_mode");
    o.count_include_pad = p_bool(a, "count_include_pad");
    return o;
}
static int ad_max_pool2d(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_pool_opts o = pool_opts(a);
    out[1] = NULL;
    out[0] = kn_max_pool2d(X, &o, &out[1]);
    return out[0] && out[1] ? 2 : -1;
}
static int ad_avg_pool2d(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_pool_opts o = pool_opts(a);
    RET1(kn_avg_pool2d(X, &o));
}
static int ad_adaptive_avg_pool2d(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int64_t s[2] = {1, 1};
    p_ints(a, "out", s, 2);
    RET1(kn_adaptive_avg_pool2d(X, s[0], s[1]));
}
static int ad_batch_norm(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_tensor *rm = IN(a, "running_mean"), *rv = IN(a, "running_var");
    bool training = p_bool(a, "training");
    out[0] = kn_batch_norm(X, rm, rv, IN(a, "weight"), IN(a, "bias"), training,
                           p_f(a, "momentum", 0.1), p_f(a, "eps", 1e-5));
    if (!out[0]) return -1;
    if (!training || !rm) return 1;
    out[1] = rm; /* updated in place: compared like outputs */
    out[2] = rv;
    return 3;
}
static int ad_layer_norm(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_layer_norm(X, (int)p_int(a, "nnorm", 1), IN(a, "weight"), IN(a, "bias"),
                       p_f(a, "eps", 1e-5)));
}
static int ad_group_norm(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_group_norm(X, p_int(a, "groups", 1), IN(a, "weight"), IN(a, "bias"),
                       p_f(a, "eps", 1e-5)));
}
static int ad_softmax(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(((kn_tensor * (*)(kn_tensor *, int)) fn)(X, (int)p_int(a, "dim", -1)));
}
static int ad_cls_loss(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_loss_opts o = {.reduction = p_red(a), .ignore_index = -100};
    if (P(a, "ignore_index")) {
        o.has_ignore_index = true;
        o.ignore_index = p_int(a, "ignore_index", -100);
    }
    o.label_smoothing = p_f(a, "label_smoothing", 0);
    o.weight = IN(a, "weight");
    RET1(((cls_loss_fn)fn)(X, IN(a, "target"), &o));
}
static int ad_pair_loss(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(((pair_loss_fn)fn)(X, IN(a, "y"), p_red(a)));
}
static int ad_smooth_l1(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_smooth_l1_loss(X, IN(a, "y"), p_red(a), p_f(a, "beta", 0)));
}
static int ad_embedding(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_embedding(IN(a, "weight"), IN(a, "indices")));
}
static int ad_join(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(((join_fn)fn)(a->in, a->c->nin, (int)p_int(a, "dim", 0)));
}
static int ad_split(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int n = kn_split(X, p_int(a, "size", 1), (int)p_int(a, "dim", 0), out, m);
    return n < 0 ? -1 : n;
}
static int ad_chunk(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int n = kn_chunk(X, (int)p_int(a, "chunks", 1), (int)p_int(a, "dim", 0), out, m);
    return n < 0 ? -1 : n;
}
static int ad_gather(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_gather(X, (int)p_int(a, "dim", 0), IN(a, "index")));
}
static int ad_scatter_add(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_scatter_add(X, (int)p_int(a, "dim", 0), IN(a, "index"), IN(a, "src")));
}
static int ad_index_select(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_index_select(X, (int)p_int(a, "dim", 0), IN(a, "index")));
}
static int ad_pad(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int64_t pads[2 * KN_MAX_DIMS];
    int n = p_ints(a, "pads", pads, 2 * KN_MAX_DIMS);
    kn_pad_mode mode = !strcmp(p_str(a, "mode"), "reflect") ? KN_PAD_REFLECT : KN_PAD_CONSTANT;
    RET1(kn_pad(X, pads, n, mode, p_f(a, "value", 0)));
}
static int ad_repeat(const actx *a, anyfn fn, kn_tensor **out, int m) {
    int64_t r[KN_MAX_DIMS];
    int n = p_ints(a, "repeats", r, KN_MAX_DIMS);
    RET1(kn_repeat(X, n, r));
}
static int ad_tri(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(((tri_fn)fn)(X, p_int(a, "k", 0)));
}
static int ad_one_hot(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_one_hot(X, p_int(a, "num_classes", -1)));
}
/* in place: applied to the "dst" input itself (a fresh tensor or view each run) */
static int ad_copy_(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RETST(kn_copy_(IN(a, "dst"), IN(a, "src")), IN(a, "dst"));
}
static int ad_fill_(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RETST(kn_fill_(IN(a, "dst"), p_f(a, "v", 0)), IN(a, "dst"));
}
static int ad_zero_(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RETST(kn_zero_(IN(a, "dst")), IN(a, "dst"));
}
static int ad_add_(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RETST(kn_add_(IN(a, "dst"), IN(a, "src"), p_f(a, "alpha", 1)), IN(a, "dst"));
}
static int ad_mul_scalar_(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RETST(kn_mul_scalar_(IN(a, "dst"), p_f(a, "s", 1)), IN(a, "dst"));
}
static int ad_arange(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_arange(p_f(a, "start", 0), p_f(a, "end", 0), p_f(a, "step", 1), p_dtype(a)));
}
static int ad_linspace(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_linspace(p_f(a, "start", 0), p_f(a, "end", 0), p_int(a, "steps", 0), p_dtype(a)));
}
static int ad_eye(const actx *a, anyfn fn, kn_tensor **out, int m) {
    RET1(kn_eye(p_int(a, "n", 0), p_int(a, "m", 0), p_dtype(a)));
}
/* examples/autograd_basics.c: out = Linear(x), out.sum().backward(); outputs out, W.grad, b.grad */
static int ad_autograd_basics(const actx *a, anyfn fn, kn_tensor **out, int m) {
    kn_tensor *w = IN(a, "weight"), *b = IN(a, "bias");
    if (kn_tensor_set_requires_grad(w, true) || kn_tensor_set_requires_grad(b, true)) return -1;
    kn_tensor *y = kn_linear(X, w, b);
    kn_tensor *s = kn_sum(y, NULL, 0, false);
    if (!s || kn_backward(s, NULL) != KN_OK) return -1;
    out[0] = kn_detach(y);
    out[1] = kn_tensor_grad(w);
    out[2] = kn_tensor_grad(b);
    return out[0] && out[1] && out[2] ? 3 : -1;
}

typedef struct opent {
    const char *op;
    adapter_fn ad;
    anyfn fn;
    double tol_scale; /* f32 golden tolerance multiplier (0 = 1); say why where > 1 */
    int passed, failed;
} opent;

#define U(name)                                                                                    \
    { #name, ad_unary, (anyfn)kn_##name, 0, 0, 0 }
#define B(name)                                                                                    \
    { #name, ad_binary, (anyfn)kn_##name, 0, 0, 0 }
#define A(name)                                                                                    \
    { #name, ad_##name, NULL, 0, 0, 0 }
#define AF(name, ad, fn)                                                                           \
    { #name, ad, (anyfn)fn, 0, 0, 0 }

static opent g_ops[] = {
    A(clone),
    A(contiguous),
    A(cast),
    A(reshape),
    A(flatten),
    A(transpose),
    A(permute),
    A(squeeze),
    A(unsqueeze),
    A(expand),
    A(slice),
    U(neg),
    U(abs),
    U(sign),
    U(exp),
    U(log),
    U(log1p),
    U(sqrt),
    U(rsqrt),
    U(square),
    U(sin),
    U(cos),
    U(tanh),
    U(sigmoid),
    U(relu),
    U(relu6),
    A(leaky_relu),
    A(elu),
    A(gelu),
    U(silu),
    A(softplus),
    U(erf),
    U(reciprocal),
    U(floor),
    U(ceil),
    U(round),
    U(logical_not),
    B(add),
    B(sub),
    B(mul),
    B(div),
    B(pow),
    B(maximum),
    B(minimum),
    B(eq),
    B(ne),
    B(lt),
    B(le),
    B(gt),
    B(ge),
    B(logical_and),
    B(logical_or),
    A(where),
    A(clamp),
    A(add_scalar),
    A(mul_scalar),
    A(pow_scalar),
    AF(sum, ad_reduce, kn_sum),
    AF(mean, ad_reduce, kn_mean),
    AF(prod, ad_reduce, kn_prod),
    AF(amax, ad_reduce, kn_amax),
    AF(amin, ad_reduce, kn_amin),
    AF(logsumexp, ad_reduce, kn_logsumexp),
    AF(max_dim, ad_dimred, kn_max_dim),
    AF(min_dim, ad_dimred, kn_min_dim),
    AF(argmax, ad_argred, kn_argmax),
    AF(argmin, ad_argred, kn_argmin),
    AF(var, ad_var, kn_var),
    AF(std, ad_var, kn_std),
    A(norm),
    B(matmul),
    A(linear),
    /* conv2d_bigger sums 144 (forward) to 288 (input grad) products of N(0,1) values, so f32
     * rounding alone reaches ~3e-5 absolute on results near 0: 4x the default tolerance. */
    A(conv1d),
    {"conv2d", ad_conv2d, NULL, 4, 0, 0},
    A(conv_transpose2d),
    A(max_pool2d),
    A(avg_pool2d),
    A(adaptive_avg_pool2d),
    U(global_avg_pool2d),
    A(batch_norm),
    A(layer_norm),
    A(group_norm),
    AF(softmax, ad_softmax, kn_softmax),
    AF(log_softmax, ad_softmax, kn_log_softmax),
    AF(cross_entropy, ad_cls_loss, kn_cross_entropy),
    AF(nll_loss, ad_cls_loss, kn_nll_loss),
    AF(mse_loss, ad_pair_loss, kn_mse_loss),
    AF(l1_loss, ad_pair_loss, kn_l1_loss),
    AF(smooth_l1_loss, ad_smooth_l1, NULL),
    AF(binary_cross_entropy, ad_pair_loss, kn_binary_cross_entropy),
    AF(binary_cross_entropy_with_logits, ad_pair_loss, kn_binary_cross_entropy_with_logits),
    A(embedding),
    AF(concat, ad_join, kn_concat),
    AF(stack, ad_join, kn_stack),
    A(split),
    A(chunk),
    A(gather),
    A(scatter_add),
    A(index_select),
    A(pad),
    A(repeat),
    AF(tril, ad_tri, kn_tril),
    AF(triu, ad_tri, kn_triu),
    A(one_hot),
    A(copy_),
    A(fill_),
    A(zero_),
    A(add_),
    A(mul_scalar_),
    A(arange),
    A(linspace),
    A(eye),
    A(autograd_basics),
};

static opent *find_op(const char *name) {
    for (size_t i = 0; i < sizeof(g_ops) / sizeof(g_ops[0]); i++)
        if (!strcmp(g_ops[i].op, name)) return &g_ops[i];
    return NULL;
}

/* ------------------------------------------------------------------ building inputs */
/* a value that stands out in the gaps of a "stride" input (a kernel reading them is wrong) */
static void filler(kn_dtype dt, unsigned char *p) {
    switch (dt) {
    case KN_F32: {
        float v = 1000.5f;
        memcpy(p, &v, 4);
        break;
    }
    case KN_F64: {
        double v = 1000.5;
        memcpy(p, &v, 8);
        break;
    }
    case KN_F16: {
        uint16_t v = 0x63D1;
        memcpy(p, &v, 2);
        break;
    } /* 1000.5 */
    case KN_BF16: {
        uint16_t v = 0x447A;
        memcpy(p, &v, 2);
        break;
    } /* 1000 */
    case KN_I32: {
        int32_t v = 77;
        memcpy(p, &v, 4);
        break;
    }
    case KN_I64: {
        int64_t v = 77;
        memcpy(p, &v, 8);
        break;
    }
    case KN_BOOL: p[0] = 1; break;
    default: p[0] = 77; break;
    }
}

static kn_tensor *from_desc(const tdesc *t) {
    return kn_from_data(t->dt, t->ndim, t->shape, t->data);
}

/* Builds input t; *leaf is the tensor that owns the storage (the one to take grads against).
 * requires_grad is set on the leaf before the view is taken, so the view is recorded. */
static kn_tensor *build_input(const tdesc *t, bool want_grad, kn_tensor **leaf) {
    size_t es = esize(t->dt);
    int nd = t->ndim;
    kn_tensor *L = NULL;
    if (t->nc == NC_NONE) {
        L = from_desc(t);
    } else if (t->nc == NC_TRANSPOSE) {
        int64_t R = t->shape[nd - 2], C = t->shape[nd - 1], s2[KN_MAX_DIMS];
        int64_t batch = (R > 0 && C > 0) ? t->numel / (R * C) : 0;
        unsigned char *buf = malloc((size_t)t->numel * es + 1);
        if (!buf) return NULL;
        for (int64_t b = 0; b < batch; b++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++)
                    memcpy(buf + (size_t)((b * C + c) * R + r) * es,
                           t->data + (size_t)((b * R + r) * C + c) * es, es);
        memcpy(s2, t->shape, sizeof(int64_t) * (size_t)nd);
        s2[nd - 2] = C;
        s2[nd - 1] = R;
        L = kn_from_data(t->dt, nd, s2, buf);
        free(buf);
    } else {
        int64_t n = t->shape[nd - 1], outer = n ? t->numel / n : 0, s2[KN_MAX_DIMS];
        size_t total = (size_t)(outer * 2 * n);
        unsigned char *buf = malloc(total * es + 1);
        if (!buf) return NULL;
        for (size_t k = 0; k < total; k++)
            filler(t->dt, buf + k * es);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < n; j++)
                memcpy(buf + (size_t)(o * 2 * n + 2 * j) * es, t->data + (size_t)(o * n + j) * es,
                       es);
        memcpy(s2, t->shape, sizeof(int64_t) * (size_t)nd);
        s2[nd - 1] = 2 * n;
        L = kn_from_data(t->dt, nd, s2, buf);
        free(buf);
    }
    if (!L) return NULL;
    if (want_grad && kn_tensor_set_requires_grad(L, true) != KN_OK) return NULL;
    *leaf = L;
    if (t->nc == NC_TRANSPOSE) return kn_transpose(L, nd - 2, nd - 1);
    if (t->nc == NC_STRIDE) return kn_slice(L, nd - 1, 0, KN_SLICE_END, 2);
    return L;
}

/* gradient w.r.t. the logical input, from the gradient w.r.t. its leaf */
static kn_tensor *grad_view(kn_tensor *gL, const tdesc *t) {
    if (!gL || t->nc == NC_NONE) return gL;
    if (t->nc == NC_TRANSPOSE) return kn_transpose(gL, t->ndim - 2, t->ndim - 1);
    return kn_slice(gL, t->ndim - 1, 0, KN_SLICE_END, 2);
}

/* ------------------------------------------------------------------ comparisons */
static void tols(kn_dtype dt, bool vs_ref, double scale, double *atol, double *rtol) {
    if (scale <= 0) scale = 1;
    if (dt == KN_F32) {
        *atol = (vs_ref ? REF_F32_ATOL : F32_ATOL) * scale;
        *rtol = (vs_ref ? REF_F32_RTOL : F32_RTOL) * scale;
    } else if (dt == KN_F64) {
        *atol = (vs_ref ? REF_F64_ATOL : F64_ATOL) * scale;
        *rtol = (vs_ref ? REF_F64_RTOL : F64_RTOL) * scale;
    } else {
        *atol = *rtol = 0;
    }
}

/* compares n values; on mismatch writes "<what>: [i] got .. want .. (k of n differ, max ..)" */
static bool close_vals(const char *what, const double *got, const double *want, int64_t n,
                       double atol, double rtol, char *msg) {
    int64_t bad = 0, first = -1;
    double maxd = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if ((isnan(g) && isnan(w)) || g == w) continue;
        double d = fabs(g - w);
        if (isnan(d) || isinf(w) || isinf(g)) d = INFINITY;
        if (d > maxd) maxd = d;
        if (!(d <= atol + rtol * fabs(w))) {
            if (first < 0) first = i;
            bad++;
        }
    }
    if (!bad) return true;
    msgf(msg,
         "%s: [%lld] got %.9g want %.9g (%lld of %lld differ, max |diff| %.3g, atol %g "
         "rtol %g)",
         what, (long long)first, got[first], want[first], (long long)bad, (long long)n, maxd, atol,
         rtol);
    return false;
}

/* reads t (any strides) as doubles; NULL on failure (message in msg) */
static double *read_vals(const char *what, kn_tensor *t, char *msg) {
    int64_t n = kn_tensor_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!v) return NULL;
    if (kn_tensor_read(t, KN_F64, v, sizeof(double) * (size_t)n) != KN_OK) {
        msgf(msg, "%s: kn_tensor_read failed: %s", what, kn_last_error());
        free(v);
        return NULL;
    }
    return v;
}

/* got vs the golden tensor; *vals_out (if non-NULL) receives got's values (caller frees) */
static bool check_tensor(const char *what, kn_tensor *got, const tdesc *want, double scale,
                         char *msg, double **vals_out) {
    if (!got) {
        msgf(msg, "%s: NULL (%s)", what, kn_last_error());
        return false;
    }
    if (kn_tensor_dtype(got) != want->dt) {
        msgf(msg, "%s: dtype %s, want %s", what, kn_dtype_name(kn_tensor_dtype(got)),
             kn_dtype_name(want->dt));
        return false;
    }
    int nd = kn_tensor_ndim(got);
    if (nd != want->ndim || memcmp(kn_tensor_shape(got), want->shape, sizeof(int64_t) * nd)) {
        char a[128], b[128];
        shape_str(a, sizeof(a), nd, kn_tensor_shape(got));
        shape_str(b, sizeof(b), want->ndim, want->shape);
        msgf(msg, "%s: shape %s, want %s", what, a, b);
        return false;
    }
    double *g = read_vals(what, got, msg);
    double *w = malloc(sizeof(double) * (size_t)(want->numel ? want->numel : 1));
    bool ok = g && w;
    if (ok) {
        for (int64_t i = 0; i < want->numel; i++)
            w[i] = raw_at(want->dt, want->data, i);
        double atol, rtol;
        tols(want->dt, false, scale, &atol, &rtol);
        ok = close_vals(what, g, w, want->numel, atol, rtol, msg);
    }
    free(w);
    if (vals_out && g)
        *vals_out = g;
    else
        free(g);
    return ok;
}

/* ------------------------------------------------------------------ running one case */
typedef struct runres {
    double *vals[MAXT]; /* outputs' values (fast run), for the fast-vs-ref comparison */
    int64_t n[MAXT];
} runres;

static void runres_free(runres *r) {
    for (int i = 0; i < MAXT; i++)
        free(r->vals[i]);
    memset(r, 0, sizeof(*r));
}

/* Gradients of sum(out[k] * w[k]) w.r.t. the leaves of the grad inputs, compared with golden. */
static bool check_grads(const gcase *c, const opent *e, const char *mode, kn_tensor **out,
                        kn_tensor **leaf, char *msg) {
    kn_tensor *outs[MAXT], *ws[MAXT], *leaves[MAXT], *grads[MAXT] = {0};
    int no = 0, ni = 0, idx[MAXT];
    char what[96];
    for (int k = 0; k < c->nout; k++)
        if (c->w[k].present) {
            outs[no] = out[k];
            ws[no++] = from_desc(&c->w[k]);
        }
    for (int i = 0; i < c->nin; i++)
        if (c->in[i].grad) {
            idx[ni] = i;
            leaves[ni++] = leaf[i];
        }
    if (kn_grad(outs, no, ws, leaves, ni, false, grads) != KN_OK) {
        msgf(msg, "[%s] kn_grad failed: %s", mode, kn_last_error());
        return false;
    }
    bool ok = true;
    for (int j = 0; j < ni; j++) {
        const tdesc *t = &c->in[idx[j]];
        snprintf(what, sizeof(what), "[%s] grad %s", mode, t->name);
        if (!check_tensor(what, grad_view(grads[j], t), &c->g[idx[j]], e->tol_scale, msg, NULL))
            ok = false;
    }
    return ok;
}

/* One run (fast or reference kernels): forward + gradients vs golden; the fast run keeps its
 * output values in *keep, the reference run compares against them. */
static bool run_once(const gcase *c, const opent *e, bool ref, runres *keep, char *msg) {
    bool prev_ref = kn__force_ref(ref);
    const char *mode = ref ? "ref" : "fast";
    char what[96];
    kn_scope sc = kn_scope_begin();
    kn_tensor *in[MAXT] = {0}, *leaf[MAXT] = {0}, *out[MAXT] = {0};
    actx a = {c, in};
    bool ok = true;
    int n = -1;
    for (int i = 0; i < c->nin && ok; i++) {
        in[i] = build_input(&c->in[i], c->in[i].grad, &leaf[i]);
        if (!in[i]) {
            msgf(msg, "[%s] building input %s: %s", mode, c->in[i].name, kn_last_error());
            ok = false;
        }
    }
    if (ok) {
        kn_clear_error();
        n = e->ad(&a, e->fn, out, MAXT);
        if (n < 0)
            msgf(msg, "[%s] call failed: %s", mode, kn_last_error());
        else if (n != c->nout)
            msgf(msg, "[%s] %d outputs, want %d", mode, n, c->nout);
        ok = n == c->nout;
    }
    for (int k = 0; ok && k < n; k++) {
        double *vals = NULL;
        snprintf(what, sizeof(what), "[%s] output %d", mode, k);
        if (!check_tensor(what, out[k], &c->out[k], e->tol_scale, msg, &vals)) ok = false;
        if (vals && !ref) {
            keep->vals[k] = vals;
            keep->n[k] = c->out[k].numel;
            vals = NULL;
        } else if (vals && keep->vals[k] && keep->n[k] == c->out[k].numel) {
            double atol, rtol, mx = 1;
            tols(c->out[k].dt, true, 1.0, &atol, &rtol);
            for (int64_t j = 0; j < keep->n[k]; j++)
                if (isfinite(vals[j]) && fabs(vals[j]) > mx) mx = fabs(vals[j]);
            atol *= mx;
            snprintf(what, sizeof(what), "fast vs ref output %d", k);
            if (!close_vals(what, keep->vals[k], vals, keep->n[k], atol, rtol, msg)) ok = false;
        }
        free(vals);
    }
    /* gradients are checked even when an output differed: the message keeps the first issue */
    if (n == c->nout && c->has_grads && !check_grads(c, e, mode, out, leaf, msg)) ok = false;
    kn_scope_end(sc);
    kn__force_ref(prev_ref);
    return ok;
}

typedef struct gcuser {
    const gcase *c;
    opent *e;
    kn_tensor *full[MAXT];
    int gidx[MAXT], ng;
} gcuser;

static kn_tensor *gc_fn(kn_tensor *const *inputs, void *user) {
    gcuser *u = user;
    kn_tensor *in[MAXT], *out[MAXT] = {0};
    memcpy(in, u->full, sizeof(in));
    for (int k = 0; k < u->ng; k++)
        in[u->gidx[k]] = inputs[k];
    actx a = {u->c, in};
    int n = u->e->ad(&a, u->e->fn, out, MAXT);
    return n >= 1 ? out[0] : NULL;
}

/* kn_gradcheck in f64 on the case's inputs (float ones cast to f64, contiguous) */
static bool run_gradcheck(const gcase *c, opent *e, char *msg) {
    gcuser u = {.c = c, .e = e};
    kn_scope sc = kn_scope_begin();
    bool ok = true;
    kn_tensor *gin[MAXT];
    int64_t total = 0;
    for (int i = 0; i < c->nin; i++) {
        const tdesc *t = &c->in[i];
        if (t->dt == KN_F32 || t->dt == KN_F64) {
            double *v = malloc(sizeof(double) * (size_t)(t->numel ? t->numel : 1));
            if (!v) {
                ok = false;
                goto done;
            }
            for (int64_t j = 0; j < t->numel; j++)
                v[j] = raw_at(t->dt, t->data, j);
            u.full[i] = kn_from_data(KN_F64, t->ndim, t->shape, v);
            free(v);
        } else {
            u.full[i] = from_desc(t);
        }
        if (!u.full[i]) {
            msgf(msg, "[gradcheck] building input %s: %s", t->name, kn_last_error());
            ok = false;
            goto done;
        }
        if (t->grad) {
            kn_tensor_set_requires_grad(u.full[i], true);
            gin[u.ng] = u.full[i];
            u.gidx[u.ng++] = i;
            total += t->numel;
        }
    }
    if (kt_quick() && total > 256) goto done; /* sanitizer builds: small cases only */
    char buf[256] = "";
    kn_manual_seed(1234);
    if (kn_gradcheck(gc_fn, &u, gin, u.ng, 1e-6, 1e-5, 1e-3, buf, sizeof(buf)) != KN_OK) {
        msgf(msg, "[gradcheck f64] %s", buf[0] ? buf : kn_last_error());
        ok = false;
    }
done:
    kn_scope_end(sc);
    return ok;
}

static int g_gradchecks;  /* how many ran (printed at the end) */
static int g_graph_cases; /* cases also run as a traced + compiled graph */

/* ------------------------------------------------------------------ graph equivalence */
typedef struct gtuser {
    const gcase *c;
    opent *e;
} gtuser;

static int trace_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    gtuser *u = user;
    actx a = {u->c, in};
    return u->e->ad(&a, u->e->fn, out, max_out);
}

static bool same_bytes(kn_tensor *x, kn_tensor *y) {
    if (!x || !y || kn_tensor_dtype(x) != kn_tensor_dtype(y) ||
        kn_tensor_ndim(x) != kn_tensor_ndim(y) ||
        memcmp(kn_tensor_shape(x), kn_tensor_shape(y), sizeof(int64_t) * (size_t)kn_tensor_ndim(x)))
        return false;
    size_t nb = (size_t)kn_tensor_numel(x) * kn_dtype_size(kn_tensor_dtype(x));
    unsigned char *a = malloc(nb + 1), *b = malloc(nb + 1);
    bool eq = a && b && kn_tensor_read(x, kn_tensor_dtype(x), a, nb) == KN_OK &&
              kn_tensor_read(y, kn_tensor_dtype(y), b, nb) == KN_OK && memcmp(a, b, nb) == 0;
    free(a);
    free(b);
    return eq;
}

/* The DESIGN's compiler contract: the op traced into a graph, compiled with every pass and run
 * on the same inputs gives the eager result bit for bit. The batch dim is symbolic where the op
 * allows (else the trace is static). */
static bool run_graph(const gcase *c, opent *e, char *msg) {
    kn_scope sc = kn_scope_begin();
    bool prev = kn_no_grad_begin(), ok = true;
    kn_tensor *in[MAXT] = {0}, *leaf[MAXT], *eager[MAXT] = {0}, *got[MAXT] = {0};
    gtuser u = {c, e};
    for (int i = 0; i < c->nin && ok; i++)
        ok = (in[i] = build_input(&c->in[i], false, &leaf[i])) != NULL;
    kn_manual_seed(42);
    int n = ok ? trace_fn(&u, in, c->nin, eager, MAXT) : -1;
    kn_graph *g = NULL;
    if (n == c->nout) {
        g = kn_trace(trace_fn, &u, in, c->nin, NULL);
        if (!g && kn_last_status() == KN_ESHAPE &&
            strstr(kn_last_error(), "cannot be symbolic") != NULL)
            g = kn_trace(trace_fn, &u, in, c->nin, &(kn_trace_opts){.static_batch = true});
    }
    size_t oplen = strlen(c->op);
    if (oplen && c->op[oplen - 1] == '_') {
        /* in-place functions are not ops: a trace that calls one is refused, never silently
         * wrong */
        ok = !g && kn_last_status() == KN_EUNSUPPORTED && strstr(kn_last_error(), "in place");
        if (!ok) msgf(msg, "[graph] tracing an in-place call was not refused: %s", kn_last_error());
        kn_graph_free(g);
        kn_no_grad_end(prev);
        kn_scope_end(sc);
        g_graph_cases += ok;
        return ok;
    }
    int ng = g ? kn_graph_run(g, in, c->nin, got, MAXT) : -1;
    if (n != c->nout || !g || ng != n) {
        msgf(msg, "[graph] %s", kn_last_error());
        ok = false;
    }
    for (int k = 0; ok && k < n; k++)
        if (!same_bytes(got[k], eager[k])) {
            msgf(msg, "[graph] output %d differs from eager", k);
            ok = false;
        }
    kn_graph_free(g);
    kn_no_grad_end(prev);
    kn_scope_end(sc);
    g_graph_cases += ok;
    return ok;
}

static bool run_case(const gcase *c, opent *e, char *msg) {
    size_t live0 = kn_live_tensors();
    runres keep = {0};
    kn_manual_seed(42);
    bool ok = run_once(c, e, false, &keep, msg);
    ok = run_once(c, e, true, &keep, msg) && ok;
    runres_free(&keep);
    if (strcmp(c->op, "autograd_basics") != 0) /* a backward pass, not an op */
        ok = run_graph(c, e, msg) && ok;
    /* gradcheck needs f64 outputs: casts are checked by the golden grads instead */
    if (c->has_grads && c->gradcheck && strcmp(c->op, "cast") != 0) {
        ok = run_gradcheck(c, e, msg) && ok;
        g_gradchecks++;
    }
    kn_clear_error();
    size_t live1 = kn_live_tensors();
    if (live1 != live0) {
        msgf(msg, "%lld tensors leaked", (long long)live1 - (long long)live0);
        ok = false;
    }
    return ok;
}

/* ------------------------------------------------------------------ the example's numbers */
static bool vals_close_f(const float *want, kn_tensor *got, int n, const char *what) {
    if (!got || kn_tensor_numel(got) != n) {
        fprintf(stderr, "  %s: missing or wrong size (%s)\n", what, kn_last_error());
        return false;
    }
    float buf[64];
    if (kn_tensor_read(got, KN_F32, buf, sizeof(float) * (size_t)n) != KN_OK) return false;
    for (int i = 0; i < n; i++)
        if (!(fabs(buf[i] - want[i]) <= F32_ATOL + F32_RTOL * fabs(want[i]))) {
            fprintf(stderr, "  %s: [%d] got %.9g want %.9g\n", what, i, buf[i], want[i]);
            return false;
        }
    return true;
}

/* What examples/autograd_basics.c does, from tests/golden/autograd_basics.h. */
static void test_autograd_basics_header(void) {
    kn_scope sc = kn_scope_begin();
    int64_t xs[2] = {1, AUTOGRAD_BASICS_IN}, ws[2] = {AUTOGRAD_BASICS_OUT, AUTOGRAD_BASICS_IN},
            bs[1] = {AUTOGRAD_BASICS_OUT};
    kn_tensor *x = kn_from_data(KN_F32, 2, xs, autograd_basics_x);
    kn_tensor *w = kn_from_data(KN_F32, 2, ws, autograd_basics_weight);
    kn_tensor *b = kn_from_data(KN_F32, 1, bs, autograd_basics_bias);
    bool ok = x && w && b && kn_tensor_set_requires_grad(w, true) == KN_OK &&
              kn_tensor_set_requires_grad(b, true) == KN_OK;
    kn_tensor *y = ok ? kn_linear(x, w, b) : NULL;
    kn_tensor *s = kn_sum(y, NULL, 0, false);
    ok = ok && s && kn_backward(s, NULL) == KN_OK;
    ok = ok && vals_close_f(autograd_basics_out, y, AUTOGRAD_BASICS_OUT, "out");
    ok = ok && vals_close_f(autograd_basics_weight_grad, kn_tensor_grad(w),
                            AUTOGRAD_BASICS_OUT * AUTOGRAD_BASICS_IN, "weight.grad");
    ok = ok && vals_close_f(autograd_basics_bias_grad, kn_tensor_grad(b), AUTOGRAD_BASICS_OUT,
                            "bias.grad");
    kn_scope_end(sc);
    if (!ok) KT_FAIL("autograd_basics.h numbers not reproduced (%s)", kn_last_error());
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    const char *vb = getenv("KILN_GOLDEN_VERBOSE");
    bool verbose = vb && *vb && strcmp(vb, "0") != 0;
    fixture fx;
    char msg[MSGLEN] = "";
    if (!fixture_open(&fx, msg)) {
        fprintf(stderr, "FAIL golden fixture: %s\n", msg);
        kt_failed++;
    } else {
        size_t ncase = json_object_array_length(fx.cases);
        printf("golden: %zu cases (torch %s)\n", ncase, fx.torch);
        for (size_t i = 0; i < ncase; i++) {
            gcase c;
            msg[0] = 0;
            if (!parse_case(&fx, json_object_array_get_idx(fx.cases, i), &c, msg)) {
                fprintf(stderr, "FAIL case #%zu (%s): %s\n", i, c.id ? c.id : "?", msg);
                kt_failed++;
                continue;
            }
            if (filter && !strstr(c.id, filter) && strcmp(c.op, filter) != 0) continue;
            opent *e = find_op(c.op);
            bool ok;
            if (!e) {
                msgf(msg, "no adapter for op \"%s\" in test_golden.c", c.op);
                ok = false;
            } else {
                ok = run_case(&c, e, msg);
                if (ok)
                    e->passed++;
                else
                    e->failed++;
            }
            if (ok) {
                kt_passed++;
                if (verbose) printf("[ ok ] %s %s\n", c.op, c.id);
            } else {
                kt_failed++;
                fprintf(stderr, "FAIL op=%s case=%s: %s\n", c.op, c.id, msg);
            }
        }
        int nops = 0, bad = 0;
        for (size_t i = 0; i < sizeof(g_ops) / sizeof(g_ops[0]); i++) {
            opent *e = &g_ops[i];
            if (!e->passed && !e->failed) continue;
            nops++;
            if (e->failed) bad++;
            if (e->failed || verbose)
                printf("golden op %-34s %3d passed %3d failed\n", e->op, e->passed, e->failed);
        }
        printf("golden: %d ops, %d with failures; %d f64 gradchecks; %d cases bit-exact as "
               "compiled graphs\n",
               nops, bad, g_gradchecks, g_graph_cases);
    }
    fixture_close(&fx);
    KT_RUN(test_autograd_basics_header);
    return kt_finish();
}
