/*
 * test_graph_file.c - graph files (kn_graph_save / kn_graph_load): MLP and LeNet round trips give
 * the same IR and bit-identical results at two batch sizes, float attrs and constant flags round
 * trip exactly, colliding weight names are made unique, and hostile files (truncated at every
 * length, bytes of the header replaced, hand-edited graphs) give KN_EFORMAT naming the file and
 * the field, never a crash. Also writes the fixture of tests/cli_graph.sh (a LeNet graph file, an
 * input, the expected output and a weights-only file) into $KILN_TEST_OUT.
 */
#include <json-c/json.h>
#include <unistd.h>

#include "graph/graph_impl.h"
#include "kn_test.h"
#include "kt_models.h"

static char g_dir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

/* same dtype, shape and bytes */
static int same_bytes(kn_tensor *a, kn_tensor *b) {
    if (!a || !b || kn_tensor_dtype(a) != kn_tensor_dtype(b) ||
        kn_tensor_ndim(a) != kn_tensor_ndim(b) ||
        memcmp(kn_tensor_shape(a), kn_tensor_shape(b), sizeof(int64_t) * kn_tensor_ndim(a)))
        return 0;
    kn_tensor *ca = kn_contiguous(a), *cb = kn_contiguous(b);
    size_t n = (size_t)kn_tensor_numel(a) * kn_dtype_size(kn_tensor_dtype(a));
    return memcmp(kn_tensor_data(ca), kn_tensor_data(cb), n) == 0;
}

/* The loaded graph b has the IR of a as traced (weights: same names, bytes, constant flags). */
static int same_ir(const kn_graph *a0, const kn_graph *b) {
    const kn_graph *a = a0->traced ? a0->traced : a0;
    if (a->nvals != b->nvals || a->nnodes != b->nnodes || a->ninputs != b->ninputs ||
        a->noutputs != b->noutputs || a->batch != b->batch || a->host_reads != b->host_reads ||
        b->traced_nodes != b->nnodes)
        return 0;
    for (int v = 0; v < a->nvals; v++) {
        const kn_gval *x = &a->vals[v], *y = &b->vals[v];
        if (x->kind != y->kind || x->dtype != y->dtype || x->ndim != y->ndim ||
            memcmp(x->shape, y->shape, sizeof(int64_t) * x->ndim) || x->sym != y->sym)
            return 0;
        if (x->kind == GV_NODE && (x->node != y->node || x->out_index != y->out_index)) return 0;
        if (x->kind != GV_NODE && strcmp(x->name, y->name)) return 0;
        if (x->kind == GV_WEIGHT && (x->constant != y->constant || !same_bytes(x->data, y->data)))
            return 0;
    }
    for (int i = 0; i < a->nnodes; i++) {
        const kn_gnode *x = &a->nodes[i], *y = &b->nodes[i];
        if (!y->op || x->op != y->op || x->nin != y->nin || x->nout != y->nout ||
            x->sym_attr != y->sym_attr || x->attrs.n != y->attrs.n ||
            memcmp(x->in, y->in, sizeof(int) * x->nin) ||
            memcmp(x->out, y->out, sizeof(int) * x->nout))
            return 0;
        for (int k = 0; k < x->attrs.n; k++) {
            const kn_attr *p = &x->attrs.a[k], *q = &y->attrs.a[k];
            if (strcmp(p->name, q->name) || p->kind != q->kind || p->n != q->n) return 0;
            if (p->kind == KN_ATTR_FLOAT ? memcmp(&p->f, &q->f, sizeof p->f) != 0
                                         : memcmp(p->ints, q->ints, sizeof(int64_t) * p->n) != 0)
                return 0;
        }
    }
    for (int i = 0; i < a->ninputs; i++)
        if (a->inputs[i] != b->inputs[i]) return 0;
    for (int i = 0; i < a->noutputs; i++)
        if (a->outputs[i] != b->outputs[i] || strcmp(a->out_names[i], b->out_names[i])) return 0;
    return 1;
}

/* Trace m, save (compiled first when `compile_first`), load; both graphs give the same bytes at
 * two batch sizes, and the loaded graph has the traced IR. */
static void roundtrip_module(kn_module *m, bool compile_first) {
    kn_scope s = kn_scope_begin();
    int64_t shape[4] = {8, 1, 28, 28};
    kn_graph *g = kn_trace_module(m, kn_randn(KN_F32, 4, shape));
    KT_NOTNULL(g);
    if (compile_first) KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    const char *path = tmp_path("module.kiln");
    KT_OK(kn_graph_save(g, path));
    kn_graph *h = kn_graph_load(path);
    KT_NOTNULL(h);
    KT_TRUE(same_ir(g, h));
    if (compile_first) KT_OK(kn_graph_compile(h, &(kn_compile_opts){.freeze = true}));
    int64_t batches[2] = {8, 3};
    for (int k = 0; k < 2; k++) {
        shape[0] = batches[k];
        kn_tensor *x = kn_randn(KN_F32, 4, shape), *y1 = NULL, *y2 = NULL;
        KT_EQ_INT(1, kn_graph_run(g, &x, 1, &y1, 1));
        KT_EQ_INT(1, kn_graph_run(h, &x, 1, &y2, 1));
        KT_EQ_INT(batches[k], kn_tensor_shape(y2)[0]);
        KT_TRUE(same_bytes(y1, y2));
    }
    kn_graph_stats a, b;
    KT_OK(kn_graph_stats_get(g, &a));
    KT_OK(kn_graph_stats_get(h, &b));
    KT_EQ_INT(a.traced_nodes, b.traced_nodes);
    KT_EQ_INT(a.nodes, b.nodes);
    KT_EQ_INT(a.weight_params, b.weight_params);
    /* the metadata fields */
    kn_file *f = kn_file_open(path);
    KT_NOTNULL(f);
    KT_TRUE(strcmp(kn_file_meta(f, "kiln.format"), "graph") == 0);
    KT_EQ_INT(kn_graph_arena_bytes(h, 1), strtoll(kn_file_meta(f, "kiln.arena_bytes"), NULL, 10));
    KT_TRUE(strstr(kn_file_meta(f, "kiln.provenance"),
                   "\"kiln_version\":\"" KN_VERSION_STRING "\"") != NULL);
    KT_TRUE(strstr(kn_file_meta(f, "kiln.provenance"), "saved_utc") != NULL);
    KT_TRUE(strstr(kn_file_meta(f, "kiln.graph"), "fused") == NULL);
    /* a loaded (and run, so compiled) graph saves the same IR again */
    const char *path2 = tmp_path("module2.kiln");
    KT_OK(kn_graph_save(h, path2));
    kn_file *f2 = kn_file_open(path2);
    KT_NOTNULL(f2);
    KT_TRUE(strcmp(kn_file_meta(f, "kiln.graph"), kn_file_meta(f2, "kiln.graph")) == 0);
    kn_file_close(f2);
    kn_file_close(f);
    kn_graph_free(g);
    kn_graph_free(h);
    kn_scope_end(s);
}

static void test_mlp_roundtrip(void) {
    kn_manual_seed(11);
    kn_module *m = mlp();
    roundtrip_module(m, false);
    roundtrip_module(m, true);
    kn_module_free(m);
}

static void test_lenet_roundtrip(void) {
    kn_manual_seed(12);
    kn_module *m = lenet();
    roundtrip_module(m, false);
    roundtrip_module(m, true);
    kn_module_free(m);
}

/* ---- a small graph with a float attr, a captured constant and a batch-following reshape ---- */
static const double SLOPE = 0.1234567891234;
static kn_tensor *tw1, *tb1, *tw2;

static int tiny_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_tensor *h = kn_leaky_relu(kn_linear(in[0], tw1, tb1), SLOPE);
    h = kn_linear(h, tw2, NULL);
    h = kn_add(h, kn_full(KN_F32, 1, (int64_t[]){4}, 0.25)); /* unnamed: still a weight */
    int64_t b = kn_tensor_shape(in[0])[0];
    h = kn_reshape(h, 3, (int64_t[]){b, 2, 2});
    out[0] = kn_mul_scalar(kn_sum(h, (int[]){2}, 1, false), 0.5); /* a 0-d true constant */
    return 1;
}

static kn_graph *tiny_graph(void) {
    kn_manual_seed(13);
    tw1 = kn_keep(kn_randn(KN_F32, 2, (int64_t[]){8, 6}));
    tb1 = kn_keep(kn_randn(KN_F32, 1, (int64_t[]){8}));
    tw2 = kn_keep(kn_randn(KN_F32, 2, (int64_t[]){4, 8}));
    kn_named_tensor w[3] = {{"fc1.weight", tw1}, {"fc1.bias", tb1}, {"fc2.weight", tw2}};
    kn_trace_opts o = {.weights = w, .nweights = 3};
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){5, 6});
    return kn_trace(tiny_fn, NULL, &x, 1, &o);
}

static void test_float_attr_and_constants(void) {
    kn_scope s = kn_scope_begin();
    kn_graph *g = tiny_graph();
    KT_NOTNULL(g);
    const char *path = tmp_path("tiny.kiln");
    KT_OK(kn_graph_save(g, path));
    kn_graph *h = kn_graph_load(path);
    KT_NOTNULL(h);
    KT_TRUE(same_ir(g, h));
    int found = 0, consts = 0, syms = 0;
    for (int i = 0; i < h->nnodes; i++) {
        double f = kn__attr_float(&h->nodes[i].attrs, "negative_slope", -1);
        if (f != -1) {
            found = 1;
            KT_TRUE(memcmp(&f, &SLOPE, sizeof f) == 0);
        }
        syms += h->nodes[i].sym_attr != 0;
    }
    for (int v = 0; v < h->nvals; v++)
        if (h->vals[v].kind == GV_WEIGHT) consts += h->vals[v].constant ? 1 : 100;
    KT_TRUE(found);
    KT_EQ_INT(401, consts); /* three named weights, one unnamed tensor, one 0-d constant */
    KT_EQ_INT(1, syms);     /* the reshape follows the batch */
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){7, 6}), *y1, *y2;
    KT_EQ_INT(1, kn_graph_run(g, &x, 1, &y1, 1));
    KT_EQ_INT(1, kn_graph_run(h, &x, 1, &y2, 1));
    KT_TRUE(same_bytes(y1, y2));
    kn_graph_free(g);
    kn_graph_free(h);
    kn_tensor_free(tw1), kn_tensor_free(tb1), kn_tensor_free(tw2);
    kn_scope_end(s);
}

/* awkward doubles survive the text format bit for bit (inf and nan as strings) */
static int slopes_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    const double *sl = user;
    kn_tensor *h = in[0];
    for (int k = 0; sl[k] != 42; k++)
        h = kn_leaky_relu(h, sl[k]);
    out[0] = h;
    return 1;
}

static void test_float_text_exact(void) {
    kn_scope s = kn_scope_begin();
    const double sl[] = {0.1,
                         1.0 / 3,
                         -0.0,
                         5e-324,
                         2.2250738585072014e-308,
                         1e300,
                         -1.0,
                         1e17,
                         123456789012345678.0,
                         0.1234567891234,
                         INFINITY,
                         -INFINITY,
                         42};
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){2, 3});
    kn_graph *g = kn_trace(slopes_fn, (void *)sl, &x, 1, NULL);
    KT_NOTNULL(g);
    const char *path = tmp_path("slopes.kiln");
    KT_OK(kn_graph_save(g, path));
    kn_graph *h = kn_graph_load(path);
    KT_NOTNULL(h);
    KT_EQ_INT(12, h->nnodes);
    for (int i = 0; i < 12; i++) {
        double f = h->nodes[i].attrs.a[0].f;
        if (memcmp(&f, &sl[i], sizeof f)) KT_FAIL("slope %d: %.17g became %.17g", i, sl[i], f);
    }
    KT_TRUE(same_ir(g, h));
    kn_graph_free(g);
    kn_graph_free(h);
    kn_scope_end(s);
}

static int two_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_tensor **w = user;
    out[0] = kn_add(kn_add(kn_mul(in[0], w[0]), w[1]), w[2]);
    return 1;
}

static void test_weight_names_unique(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *w[3];
    for (int k = 0; k < 3; k++)
        w[k] = kn_full(KN_F32, 1, (int64_t[]){3}, k + 1);
    kn_named_tensor names[3] = {{"w", w[0]}, {"w", w[1]}, {"__metadata__", w[2]}};
    kn_trace_opts o = {.weights = names, .nweights = 3};
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){2, 3});
    kn_graph *g = kn_trace(two_fn, w, &x, 1, &o);
    KT_NOTNULL(g);
    const char *path = tmp_path("names.kiln");
    KT_OK(kn_graph_save(g, path));
    kn_graph *h = kn_graph_load(path);
    KT_NOTNULL(h);
    const char *want[3] = {"w", "w.1", "__metadata__.1"};
    int k = 0;
    for (int v = 0; v < h->nvals; v++)
        if (h->vals[v].kind == GV_WEIGHT && k < 3) KT_TRUE(strcmp(h->vals[v].name, want[k++]) == 0);
    KT_EQ_INT(3, k);
    kn_tensor *y1, *y2;
    KT_EQ_INT(1, kn_graph_run(g, &x, 1, &y1, 1));
    KT_EQ_INT(1, kn_graph_run(h, &x, 1, &y2, 1));
    KT_TRUE(same_bytes(y1, y2));
    kn_graph_free(g);
    kn_graph_free(h);
    kn_scope_end(s);
}

/* ---- hostile files ---- */
static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static int write_all(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(b, 1, n, f);
    return fclose(f) == 0 && w == n;
}

/* A load of a damaged file: fails with KN_EFORMAT naming the file, or succeeds (the damage hit a
 * harmless byte, e.g. a name or a weight's value) and then runs or fails cleanly. */
static int g_loaded;
static int check_damaged(const char *path, kn_tensor *x, long where) {
    kn_clear_error();
    kn_graph *g = kn_graph_load(path);
    if (!g) {
        if (kn_last_status() != KN_EFORMAT || !strstr(kn_last_error(), path)) {
            fprintf(stderr, "  damage at %ld: %s: %s\n", where, kn_status_name(kn_last_status()),
                    kn_last_error());
            return 0;
        }
        return 1;
    }
    g_loaded++;
    kn_scope s = kn_scope_begin();
    kn_tensor *y = NULL;
    (void)kn_graph_run(g, &x, 1, &y, 1);
    kn_scope_end(s);
    kn_graph_free(g);
    return 1;
}

static void test_truncated(void) {
    kn_scope s = kn_scope_begin();
    kn_graph *g = tiny_graph();
    KT_NOTNULL(g);
    const char *good = tmp_path("tiny.kiln"), *cut = tmp_path("cut.kiln");
    KT_OK(kn_graph_save(g, good));
    size_t n;
    unsigned char *b = read_all(good, &n);
    KT_NOTNULL(b);
    int fails = 0, loaded = 0;
    for (size_t len = 0; len < n; len += kt_quick() ? 13 : 1) {
        KT_TRUE(write_all(cut, b, len));
        kn_clear_error();
        kn_graph *h = kn_graph_load(cut);
        if (h) {
            loaded++;
            kn_graph_free(h);
        } else if (kn_last_status() != KN_EFORMAT || !strstr(kn_last_error(), cut)) {
            if (fails++ < 5)
                fprintf(stderr, "  cut at %zu: %s: %s\n", len, kn_status_name(kn_last_status()),
                        kn_last_error());
        }
    }
    KT_EQ_INT(0, fails);
    KT_EQ_INT(0, loaded); /* every truncation loses tensor bytes or header */
    free(b);
    kn_graph_free(g);
    kn_tensor_free(tw1), kn_tensor_free(tb1), kn_tensor_free(tw2);
    kn_scope_end(s);
}

static void test_flipped_header_bytes(void) {
    kn_scope s = kn_scope_begin();
    kn_graph *g = tiny_graph();
    KT_NOTNULL(g);
    const char *good = tmp_path("tiny.kiln"), *bad = tmp_path("flip.kiln");
    KT_OK(kn_graph_save(g, good));
    size_t n;
    unsigned char *b = read_all(good, &n);
    KT_NOTNULL(b);
    uint64_t hlen;
    memcpy(&hlen, b, 8);
    /* the JSON region: where kiln.graph starts to the end of the header */
    const char *hdr = (const char *)b + 8;
    const char *at = strstr(hdr, "\"kiln.graph\"");
    KT_NOTNULL(at);
    size_t from = (size_t)(at - (const char *)b);
    static const unsigned char repl[] = {'0', '9', '-', '"',  ']', '}', '[',
                                         ',', 'x', ' ', 0xff, '1', '\\'};
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){3, 6});
    int bad_loads = 0, tries = 0;
    size_t step = kt_quick() ? 7 : 1;
    for (size_t pos = from; pos < 8 + hlen; pos += step) {
        for (int r = 0; r < 2; r++) {
            unsigned char old = b[pos];
            b[pos] = repl[(pos * 2 + (size_t)r) % sizeof repl];
            if (b[pos] == old) b[pos] ^= 1;
            KT_TRUE(write_all(bad, b, n));
            b[pos] = old;
            tries++;
            if (!check_damaged(bad, x, (long)pos) && bad_loads++ > 5) break;
        }
    }
    /* digits changed one at a time: shapes, ids, attrs */
    for (size_t pos = from; pos < 8 + hlen; pos++) {
        if (b[pos] < '0' || b[pos] > '9') continue;
        unsigned char old = b[pos];
        b[pos] = (unsigned char)('0' + (old - '0' + 1) % 10);
        KT_TRUE(write_all(bad, b, n));
        b[pos] = old;
        tries++;
        if (!check_damaged(bad, x, (long)pos) && bad_loads++ > 5) break;
    }
    KT_EQ_INT(0, bad_loads);
    KT_TRUE(tries > 100);
    printf("  %d damaged headers: %d loaded, the rest refused\n", tries, g_loaded);
    free(b);
    kn_graph_free(g);
    kn_tensor_free(tw1), kn_tensor_free(tb1), kn_tensor_free(tw2);
    kn_scope_end(s);
}

/* Rewrites the tiny graph's file: kiln.graph edited by `edit`, tensor `drop` left out, tensor
 * `reshape` replaced by a (3) tensor. */
typedef void (*json_edit)(json_object *root);

static kn_status write_edited(const char *src, const char *dst, json_edit edit, const char *drop,
                              const char *reshape) {
    kn_file *f = kn_file_open(src);
    if (!f) return kn_last_status();
    json_object *meta = json_tokener_parse(kn_file_metadata(f));
    json_object *graph = json_tokener_parse(kn_file_meta(f, "kiln.graph"));
    if (edit) edit(graph);
    json_object_object_add(meta, "kiln.graph",
                           json_object_new_string(json_object_to_json_string(graph)));
    kn_named_tensor ts[16];
    int n = 0;
    for (int i = 0; i < kn_file_count(f) && n < 16; i++) {
        const char *name = kn_file_name(f, i);
        if (drop && !strcmp(name, drop)) continue;
        kn_tensor *t = reshape && !strcmp(name, reshape) ? kn_zeros(KN_F32, 1, (int64_t[]){3})
                                                         : kn_file_get(f, name);
        ts[n++] = (kn_named_tensor){name, t};
    }
    kn_status st = kn_save_tensors(dst, ts, n, json_object_to_json_string(meta));
    json_object_put(meta);
    json_object_put(graph);
    kn_file_close(f);
    return st;
}

static json_object *at(json_object *root, const char *arr, int i) {
    return json_object_array_get_idx(json_object_object_get(root, arr), (size_t)i);
}
static void set(json_object *o, const char *k, json_object *v) {
    json_object_object_add(o, k, v);
}
static json_object *ints(int n, const int64_t *v) {
    json_object *a = json_object_new_array();
    for (int i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_int64(v[i]));
    return a;
}
static int last_value(json_object *root) {
    return (int)json_object_array_length(json_object_object_get(root, "values")) - 1;
}
static void e_unknown_op(json_object *r) {
    set(at(r, "nodes", 0), "op", json_object_new_string("no_such_op"));
}
static void e_value_range(json_object *r) {
    set(at(r, "nodes", 1), "inputs", ints(1, (int64_t[]){9999}));
}
static void e_use_before_def(json_object *r) {
    json_object *in = json_object_object_get(at(r, "nodes", 0), "inputs");
    json_object_array_put_idx(in, 0, json_object_new_int(last_value(r)));
}
static void e_bad_dtype(json_object *r) {
    set(at(r, "values", 0), "dtype", json_object_new_string("float99"));
}
static void e_too_many_dims(json_object *r) {
    set(at(r, "values", 1), "shape", ints(9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}));
}
static void e_negative_dim(json_object *r) {
    set(at(r, "values", 1), "shape", ints(2, (int64_t[]){8, -6}));
}
static void e_weight_decl_shape(json_object *r) {
    set(at(r, "values", 1), "shape", ints(2, (int64_t[]){8, 7}));
}
static void e_output_shape(json_object *r) {
    set(at(r, "values", last_value(r)), "shape", ints(2, (int64_t[]){5, 3}));
}
static void e_nout(json_object *r) {
    set(at(r, "nodes", 0), "nout", json_object_new_int(3));
}
static void e_too_many_inputs(json_object *r) {
    set(at(r, "nodes", 0), "inputs", ints(4, (int64_t[]){0, 1, 2, 1}));
}
static void e_attr_name(json_object *r) {
    json_object *a = json_object_object_get(at(r, "nodes", 1), "attrs");
    set(json_object_array_get_idx(a, 0), "name",
        json_object_new_string("a_very_long_attribute_name_indeed"));
}
static void e_attr_ints(json_object *r) {
    json_object *a = json_object_new_object();
    set(a, "name", json_object_new_string("shape"));
    set(a, "kind", json_object_new_string("ints"));
    int64_t v[17] = {0};
    set(a, "ints", ints(17, v));
    json_object *arr = json_object_new_array();
    json_object_array_add(arr, a);
    set(at(r, "nodes", 4), "attrs", arr);
}
static void e_too_many_attrs(json_object *r) {
    json_object *arr = json_object_new_array();
    for (int k = 0; k < 9; k++) {
        json_object *a = json_object_new_object();
        char nm[8];
        snprintf(nm, sizeof nm, "a%d", k);
        set(a, "name", json_object_new_string(nm));
        set(a, "kind", json_object_new_string("float"));
        set(a, "f", json_object_new_double(1));
        json_object_array_add(arr, a);
    }
    set(at(r, "nodes", 1), "attrs", arr);
}
static void e_slope_value(json_object *r) { /* a plain edit: loads and runs fine */
    json_object *a = json_object_object_get(at(r, "nodes", 1), "attrs");
    set(json_object_array_get_idx(a, 0), "f", json_object_new_double(0.5));
}
static void e_sym(json_object *r) {
    set(at(r, "values", last_value(r)), "sym", json_object_new_int(0));
}
static void e_sym_attr(json_object *r) {
    set(at(r, "nodes", 4), "sym_attr", json_object_new_int(1 << 9));
}
static void e_input_is_weight(json_object *r) {
    set(at(r, "inputs", 0), "value", json_object_new_int(1));
}
static void e_output_range(json_object *r) {
    set(at(r, "outputs", 0), "value", json_object_new_int(-1));
}
static void e_no_outputs(json_object *r) {
    set(r, "outputs", json_object_new_array());
}
static void e_version(json_object *r) {
    set(r, "version", json_object_new_int(2));
}
static void e_kind(json_object *r) {
    set(at(r, "values", 2), "kind", json_object_new_string("tensor"));
}
static void e_out_not_mine(json_object *r) {
    json_object *o = json_object_object_get(at(r, "nodes", 0), "outs");
    json_object_array_put_idx(o, 0, json_object_new_int(last_value(r)));
}
static void e_not_object(json_object *r) {
    set(r, "nodes", json_object_new_string("none"));
}
static void e_dtype_mismatch(json_object *r) {
    set(at(r, "values", 0), "dtype", json_object_new_string("float64"));
    set(at(r, "inputs", 0), "dtype", json_object_new_string("float64"));
}

static void e_one_hot_classes(json_object *r) {
    json_object *a = json_object_object_get(at(r, "nodes", 1), "attrs");
    set(json_object_array_get_idx(a, 0), "ints", ints(1, (int64_t[]){-1}));
}
static void e_one_hot_no_attrs(json_object *r) {
    set(at(r, "nodes", 1), "attrs", json_object_new_array());
}
static int onehot_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    out[0] = kn_one_hot(kn_argmax(in[0], 1, false), 5);
    return 1;
}

/* one_hot without num_classes would read index values at load time (it has none) */
static void test_one_hot_needs_classes(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){4, 5});
    kn_graph *g = kn_trace(onehot_fn, NULL, &x, 1, NULL);
    KT_NOTNULL(g);
    const char *good = tmp_path("onehot.kiln"), *bad = tmp_path("edited.kiln");
    KT_OK(kn_graph_save(g, good));
    kn_graph *h = kn_graph_load(good);
    KT_NOTNULL(h);
    KT_TRUE(!strcmp(h->nodes[1].op->name, "one_hot"));
    kn_graph_free(h);
    json_edit edits[2] = {e_one_hot_classes, e_one_hot_no_attrs};
    for (int k = 0; k < 2; k++) {
        KT_OK(write_edited(good, bad, edits[k], NULL, NULL));
        KT_ERR(KN_EFORMAT, kn_graph_load(bad), "nodes[1] (one_hot).attrs: num_classes must be");
    }
    kn_graph_free(g);
    kn_scope_end(s);
}

static void test_hand_edited(void) {
    kn_scope s = kn_scope_begin();
    kn_graph *g = tiny_graph();
    KT_NOTNULL(g);
    const char *good = tmp_path("tiny.kiln"), *bad = tmp_path("edited.kiln");
    KT_OK(kn_graph_save(g, good));
    /* value ids of the tiny graph: 0 input, 1 fc1.weight, 2 fc1.bias, ... */
    kn_graph *h = kn_graph_load(good);
    KT_NOTNULL(h);
    KT_EQ_INT(GV_INPUT, h->vals[0].kind);
    KT_TRUE(h->vals[1].kind == GV_WEIGHT && !strcmp(h->vals[1].name, "fc1.weight"));
    KT_TRUE(!strcmp(h->nodes[1].op->name, "leaky_relu") &&
            !strcmp(h->nodes[4].op->name, "reshape"));
    kn_graph_free(h);
    static const struct {
        json_edit edit;
        const char *drop, *reshape, *expect;
    } cases[] = {
        {e_unknown_op, NULL, NULL, "nodes[0].op: unknown op 'no_such_op'"},
        {e_value_range, NULL, NULL, "value 9999 out of range"},
        {e_use_before_def, NULL, NULL, "used before it is defined"},
        {e_bad_dtype, NULL, NULL, "values[0].dtype: unknown dtype 'float99'"},
        {e_too_many_dims, NULL, NULL, "values[1].shape: 9 dims"},
        {e_negative_dim, NULL, NULL, "values[1].shape[1]: -6 is negative"},
        {e_weight_decl_shape, NULL, NULL, "weight 'fc1.weight' is float32 (8, 6) in the file"},
        {NULL, "fc1.bias", NULL, "weight 'fc1.bias' is missing from the file"},
        {NULL, NULL, "fc2.weight", "weight 'fc2.weight' is float32 (3,) in the file"},
        {e_output_shape, NULL, NULL, "but the op infers"},
        {e_nout, NULL, NULL, "nout: 3 out of range"},
        {e_too_many_inputs, NULL, NULL, "4 inputs, the op takes"},
        {e_attr_name, NULL, NULL, "attrs[0].name"},
        {e_attr_ints, NULL, NULL, "17 values (max 16)"},
        {e_too_many_attrs, NULL, NULL, "9 entries (max 8)"},
        {e_sym, NULL, NULL, ".sym: 0, but at batch 6"},
        {e_sym_attr, NULL, NULL, "sym_attr: bit 9"},
        {e_input_is_weight, NULL, NULL, "inputs[0].value: value 1 is not an input"},
        {e_output_range, NULL, NULL, "outputs[0].value: -1 out of range"},
        {e_no_outputs, NULL, NULL, "outputs: 0 entries"},
        {e_version, NULL, NULL, "version 2 is not supported"},
        {e_kind, NULL, NULL, "values[2].kind: 'tensor'"},
        {e_out_not_mine, NULL, NULL, "nodes[0] (linear).outs[0]"},
        {e_not_object, NULL, NULL, "nodes: missing or not an array"},
        {e_dtype_mismatch, NULL, NULL, "nodes[0] (linear): the op refuses"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        KT_OK(write_edited(good, bad, cases[k].edit, cases[k].drop, cases[k].reshape));
        kn_clear_error();
        kn_graph *e = kn_graph_load(bad);
        if (e) KT_FAIL("case %zu (%s) loaded", k, cases[k].expect);
        if (kn_last_status() != KN_EFORMAT || !strstr(kn_last_error(), cases[k].expect) ||
            !strstr(kn_last_error(), bad))
            KT_FAIL("case %zu: %s: \"%s\" lacks \"%s\"", k, kn_status_name(kn_last_status()),
                    kn_last_error(), cases[k].expect);
    }
    /* an edit that keeps the graph valid loads and runs (the test can tell) */
    KT_OK(write_edited(good, bad, e_slope_value, NULL, NULL));
    h = kn_graph_load(bad);
    KT_NOTNULL(h);
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){2, 6}), *y;
    KT_EQ_INT(1, kn_graph_run(h, &x, 1, &y, 1));
    kn_graph_free(h);
    /* not a graph: a weights file, garbage JSON, a missing file */
    kn_module *m = mlp();
    KT_OK(kn_module_save(m, bad));
    KT_ERR(KN_EFORMAT, kn_graph_load(bad), "not a graph file (metadata kiln.format is missing)");
    kn_module_free(m);
    kn_tensor *t = kn_zeros(KN_F32, 1, (int64_t[]){2});
    kn_named_tensor one = {"t", t};
    KT_OK(kn_save_tensors(bad, &one, 1, "{\"kiln.format\": \"graph\", \"kiln.graph\": \"{\"}"));
    KT_ERR(KN_EFORMAT, kn_graph_load(bad), "kiln.graph is not valid JSON");
    KT_OK(kn_save_tensors(bad, &one, 1, "{\"kiln.format\": \"graph\", \"kiln.graph\": \"[]\"}"));
    KT_ERR(KN_EFORMAT, kn_graph_load(bad), "not a JSON object");
    KT_ERR(KN_EIO, kn_graph_load(tmp_path("missing.kiln")), "missing.kiln");
    KT_ERR(KN_EINVAL, kn_graph_load(NULL), "NULL");
    KT_STATUS(KN_EINVAL, kn_graph_save(NULL, bad));
    kn_graph_free(g);
    kn_tensor_free(tw1), kn_tensor_free(tb1), kn_tensor_free(tw2);
    kn_scope_end(s);
}

/* ---- fixture for tests/cli_graph.sh ---- */
static void test_cli_fixture(void) {
    const char *dir = getenv("KILN_TEST_OUT");
    if (!dir || !*dir) {
        printf("  (KILN_TEST_OUT not set: no CLI fixture written)\n");
        return;
    }
    kn_scope s = kn_scope_begin();
    kn_manual_seed(14);
    kn_module *m = lenet();
    char p[4][512];
    snprintf(p[0], sizeof p[0], "%s/test_lenet_graph.kiln", dir);
    snprintf(p[1], sizeof p[1], "%s/test_lenet_input.npy", dir);
    snprintf(p[2], sizeof p[2], "%s/test_lenet_expected.npy", dir);
    snprintf(p[3], sizeof p[3], "%s/test_lenet_weights.kiln", dir);
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){4, 1, 28, 28}), *y = NULL;
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    KT_OK(kn_graph_save(g, p[0]));
    kn_graph *h = kn_graph_load(p[0]);
    KT_NOTNULL(h);
    /* compiled like the CLI compiles model files (frozen: folding and prepacking apply) */
    KT_OK(kn_graph_compile(h, &(kn_compile_opts){.freeze = true}));
    KT_EQ_INT(1, kn_graph_run(h, &x, 1, &y, 1));
    KT_OK(kn_npy_save(p[1], x));
    KT_OK(kn_npy_save(p[2], y));
    KT_OK(kn_module_save(m, p[3]));
    kn_graph_free(g);
    kn_graph_free(h);
    kn_module_free(m);
    kn_scope_end(s);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/kiln_gfile_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    KT_RUN(test_mlp_roundtrip);
    KT_RUN(test_lenet_roundtrip);
    KT_RUN(test_float_attr_and_constants);
    KT_RUN(test_float_text_exact);
    KT_RUN(test_weight_names_unique);
    KT_RUN(test_truncated);
    KT_RUN(test_flipped_header_bytes);
    KT_RUN(test_hand_edited);
    KT_RUN(test_one_hot_needs_classes);
    KT_RUN(test_cli_fixture);
    const char *files[] = {"module.kiln", "tiny.kiln",   "slopes.kiln", "names.kiln",  "cut.kiln",
                           "flip.kiln",   "edited.kiln", "onehot.kiln", "module2.kiln"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(tmp_path(files[i]));
    rmdir(g_dir);
    return kt_finish();
}
