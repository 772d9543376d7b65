/*
 * test_onnx_import.c - ONNX import (src/onnx/import.c and the converters): PyTorch-exported models
 * (tools/gen_onnx_models.py) against PyTorch's outputs at two batch sizes from one imported
 * graph, save/load of an imported graph, per-opset semantics, shape inputs frozen from examples,
 * external data (and its path rules), kn_onnx_check's report, and hostile files (truncation at
 * many points, byte mutations): an error naming the problem, never a crash.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/kiln.h"
#include "kn_test.h"
#include "kt_pb.h"

static const char *src_dir(void) {
    const char *d = getenv("KILN_SOURCE_DIR");
    return d ? d : ".";
}

static kn_tensor *load_npy(const char *model, const char *what, int b) {
    char p[1024];
    snprintf(p, sizeof p, "%s/tests/data/onnx/%s.%s.b%d.npy", src_dir(), model, what, b);
    return kn_npy_load(p);
}

static kn_tensor *run1(kn_graph *g, kn_tensor *x) {
    kn_tensor *out[4] = {0};
    int n = kn_graph_run(g, &x, 1, out, 4);
    return n == 1 ? out[0] : NULL;
}

/* PyTorch-exported models: one import (batch symbolic) serves batch 2 and 5, frozen compile,
 * outputs within float rounding of PyTorch's; an import at the example's shape too */
static void check_torch_model(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/onnx/%s.onnx", src_dir(), name);
    kn_graph *g = kn_onnx_import(path, NULL);
    KT_NOTNULL(g);
    if (!g) return;
    kn_graph_sig s;
    KT_OK(kn_graph_input(g, 0, &s));
    KT_EQ_INT(-1, s.shape[0]);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    kn_scope sc = kn_scope_begin();
    for (int b = 2; b <= 5; b += 3) {
        kn_tensor *x = load_npy(name, "in", b), *e = load_npy(name, "out", b);
        KT_NOTNULL(x);
        KT_NOTNULL(e);
        KT_CLOSE(run1(g, x), e, 1e-5, 1e-4);
    }
    kn_scope_end(sc);
    kn_graph_free(g);
    sc = kn_scope_begin();
    kn_tensor *x = load_npy(name, "in", 5), *e = load_npy(name, "out", 5);
    kn_onnx_opts o = {.example = &x, .nexample = 1};
    g = kn_onnx_import(path, &o);
    KT_NOTNULL(g);
    if (g) KT_CLOSE(run1(g, x), e, 1e-5, 1e-4);
    kn_scope_end(sc);
    kn_graph_free(g);
}

static void test_torch_mlp(void) {
    check_torch_model("mlp");
}

static void test_torch_cnn_bn(void) {
    check_torch_model("cnn_bn");
}

/* the encoder's attention reshapes to (batch * heads, ...): a proportional symbolic attribute */
static void test_torch_encoder(void) {
    check_torch_model("encoder");
}

/* an imported graph saved as .kiln and loaded back gives the same outputs, at another batch too
 * (the encoder's batch * heads attributes survive the file) */
static void save_load(const char *name) {
    char path[1024], out[256];
    snprintf(path, sizeof path, "%s/tests/data/onnx/%s.onnx", src_dir(), name);
    snprintf(out, sizeof out, "/tmp/kiln_test_onnx_%d.kiln", (int)getpid());
    kn_graph *g = kn_onnx_import(path, NULL);
    KT_NOTNULL(g);
    if (!g) return;
    KT_OK(kn_graph_save(g, out));
    kn_graph *h = kn_graph_load(out);
    KT_NOTNULL(h);
    kn_scope sc = kn_scope_begin();
    kn_tensor *x = load_npy(name, "in", 5);
    if (h) KT_CLOSE(run1(h, x), load_npy(name, "out", 5), 1e-5, 1e-4);
    if (h) KT_CLOSE(run1(h, x), run1(g, x), 0, 0);
    kn_scope_end(sc);
    kn_graph_free(g);
    kn_graph_free(h);
    unlink(out);
}

static void test_save_load(void) {
    save_load("cnn_bn");
    save_load("encoder");
}

/* ---- hand-built models ---- */

static void model_of(enc *m, const enc *graph, int opset) {
    enc op = {0};
    put_str(&op, 1, "");
    put_int(&op, 2, opset);
    put_int(m, 1, 8);
    put_msg(m, 8, &op);
    put_msg(m, 7, graph);
}

static void node(enc *g, const char *op, const char *in0, const char *in1, const char *out,
                 const enc *attr) {
    enc n = {0};
    put_str(&n, 1, in0);
    if (in1) put_str(&n, 1, in1);
    put_str(&n, 2, out);
    put_str(&n, 4, op);
    if (attr) put_msg(&n, 5, attr);
    put_msg(g, 1, &n);
}

static kn_tensor *import_run(const enc *m, kn_tensor *x) {
    kn_onnx_opts o = {.example = &x, .nexample = 1};
    kn_graph *g = kn_onnx_import_mem(m->b, m->n, NULL, &o);
    if (!g) return NULL;
    kn_tensor *y = run1(g, x);
    kn_graph_free(g);
    return y;
}

/* Softmax: before opset 13 the input is coerced to 2-D at axis (default 1); from 13 the
 * softmax runs along axis (default -1) only */
static void test_softmax_opsets(void) {
    kn_scope sc = kn_scope_begin();
    int64_t d[3] = {2, 3, 4};
    kn_manual_seed(3);
    kn_tensor *x = kn_randn(KN_F32, 3, d);
    for (int opset = 11; opset <= 13; opset += 2) {
        enc g = {0}, m = {0};
        node(&g, "Softmax", "x", NULL, "y", NULL);
        kt_value_info(&g, 11, "x", 1, 3, d);
        kt_value_info(&g, 12, "y", 1, 3, d);
        model_of(&m, &g, opset);
        kn_tensor *y = import_run(&m, x);
        KT_NOTNULL(y);
        int64_t s2[2] = {2, 12};
        kn_tensor *e =
            opset == 13 ? kn_softmax(x, 2) : kn_reshape(kn_softmax(kn_reshape(x, 2, s2), 1), 3, d);
        KT_CLOSE(y, e, 0, 0);
    }
    kn_scope_end(sc);
}

/* Reshape's shape from a graph input: frozen to the example's value (the graph keeps only the
 * data input); without examples it is an error naming the input */
static void test_shape_input_frozen(void) {
    kn_scope sc = kn_scope_begin();
    enc g = {0}, m = {0};
    int64_t dx[2] = {2, 6}, ds[1] = {2}, dy[2] = {3, 4};
    node(&g, "Reshape", "x", "shape", "y", NULL);
    kt_value_info(&g, 11, "x", 1, 2, dx);
    kt_value_info(&g, 11, "shape", 7, 1, ds);
    kt_value_info(&g, 12, "y", 1, 2, dy);
    model_of(&m, &g, 13);
    kn_tensor *x = kn_arange(0, 12, 1, KN_F32);
    x = kn_reshape(x, 2, dx);
    int64_t sv[2] = {3, 4};
    kn_tensor *shape = kn_from_data(KN_I64, 1, ds, sv);
    kn_tensor *ex[2] = {x, shape};
    kn_onnx_opts o = {.example = ex, .nexample = 2};
    kn_graph *gr = kn_onnx_import_mem(m.b, m.n, NULL, &o);
    KT_NOTNULL(gr);
    if (gr) {
        KT_EQ_INT(1, kn_graph_num_inputs(gr));
        KT_CLOSE(run1(gr, x), kn_reshape(x, 2, dy), 0, 0);
    }
    kn_graph_free(gr);
    KT_ERR(KN_EUNSUPPORTED, kn_onnx_import_mem(m.b, m.n, NULL, NULL), "input 1 ('shape')");
    kn_scope_end(sc);
}

/* regression: a constant computed at import as a view (Transpose of an initializer) is the
 * same at batch 2 and 3, so the batch stays symbolic */
static void test_symbolic_with_view_constant(void) {
    enc g = {0}, m = {0}, t = {0};
    put_int(&t, 1, 2);
    put_int(&t, 1, 3);
    put_int(&t, 2, 1);
    float w[6] = {1, 2, 3, 4, 5, 6};
    put_bytes(&t, 9, w, sizeof w);
    put_str(&t, 8, "W");
    put_msg(&g, 5, &t);
    node(&g, "Transpose", "W", NULL, "Wt", NULL);
    node(&g, "MatMul", "x", "Wt", "y", NULL);
    int64_t dx[2] = {-1, 3}, dy[2] = {-1, 2};
    kt_value_info(&g, 11, "x", 1, 2, dx);
    kt_value_info(&g, 12, "y", 1, 2, dy);
    model_of(&m, &g, 13);
    kn_graph *gr = kn_onnx_import_mem(m.b, m.n, NULL, NULL);
    KT_NOTNULL(gr);
    if (!gr) return;
    kn_graph_sig s;
    KT_OK(kn_graph_input(gr, 0, &s));
    KT_EQ_INT(-1, s.shape[0]);
    kn_scope sc = kn_scope_begin();
    int64_t d4[2] = {4, 3}, ws[2] = {2, 3};
    kn_tensor *x = kn_ones(KN_F32, 2, d4);
    KT_CLOSE(run1(gr, x), kn_linear(x, kn_from_data(KN_F32, 2, ws, w), NULL), 0, 0);
    kn_scope_end(sc);
    kn_graph_free(gr);
}

/* regression: a shape from the file asking for 40 TB is an error naming the node (it aborted
 * under the sanitizers before the allocator refused sizes beyond physical memory) */
static void test_huge_shape(void) {
    int64_t big[3] = {100000, 100000, 1000}, d[1] = {1};
    enc t = {0}, a = {0}, g = {0}, m = {0};
    put_int(&t, 1, 3);
    put_int(&t, 2, 7);
    put_packed_int(&t, 7, big, 3);
    put_str(&a, 1, "value");
    put_msg(&a, 5, &t);
    put_int(&a, 20, 4);
    enc n = {0};
    put_str(&n, 2, "s");
    put_str(&n, 4, "Constant");
    put_msg(&n, 5, &a);
    put_msg(&g, 1, &n);
    node(&g, "ConstantOfShape", "s", NULL, "y", NULL);
    kt_value_info(&g, 12, "y", 1, 1, d);
    model_of(&m, &g, 13);
    KT_ERR(KN_ENOMEM, kn_onnx_import_mem(m.b, m.n, NULL, NULL), "node 1 (ConstantOfShape)");
}

/* a Loop whose unrolling would run more than a million nodes is refused (a hostile model must not
 * make the import run forever); a short one unrolls and runs */
static void loop_model(enc *m, int64_t trips, int body_nodes) {
    static enc body, g, t, a, cn, ln;
    memset(&body, 0, sizeof body), memset(&g, 0, sizeof g), memset(&t, 0, sizeof t);
    memset(&a, 0, sizeof a), memset(&cn, 0, sizeof cn), memset(&ln, 0, sizeof ln);
    int64_t d[1] = {2}, s0[1] = {0};
    /* body(i, cond, v) -> (cond, v'), v' = v + 1 through a chain of Identity nodes */
    kt_value_info(&body, 11, "i", 7, 0, s0);
    kt_value_info(&body, 11, "c", 9, 0, s0);
    kt_value_info(&body, 11, "v", 1, 1, d);
    char prev[16] = "v", cur[16];
    for (int k = 0; k < body_nodes; k++) {
        snprintf(cur, sizeof cur, "b%d", k);
        node(&body, "Identity", prev, NULL, cur, NULL);
        memcpy(prev, cur, sizeof prev);
    }
    node(&body, "Add", prev, "one", "v2", NULL);
    node(&body, "Identity", "c", NULL, "c2", NULL);
    kt_value_info(&body, 12, "c2", 9, 0, s0);
    kt_value_info(&body, 12, "v2", 1, 1, d);
    /* main: M constant, cond constant true, one = 1.0 */
    put_int(&t, 2, 7);
    put_str(&t, 8, "M");
    put_packed_int(&t, 7, &trips, 1);
    put_msg(&g, 5, &t);
    enc tc = {0}, to = {0};
    put_int(&tc, 2, 9);
    put_str(&tc, 8, "C");
    int64_t one = 1;
    put_packed_int(&tc, 5, &one, 1);
    put_msg(&g, 5, &tc);
    put_int(&to, 2, 1);
    put_str(&to, 8, "one");
    put_packed_f32(&to, 4, (float[]){1.0f}, 1);
    put_msg(&g, 5, &to);
    put_str(&a, 1, "body");
    put_msg(&a, 6, &body);
    put_int(&a, 20, 5);
    put_str(&ln, 1, "M");
    put_str(&ln, 1, "C");
    put_str(&ln, 1, "x");
    put_str(&ln, 2, "y");
    put_str(&ln, 4, "Loop");
    put_msg(&ln, 5, &a);
    put_msg(&g, 1, &ln);
    kt_value_info(&g, 11, "x", 1, 1, d);
    kt_value_info(&g, 12, "y", 1, 1, d);
    model_of(m, &g, 13);
}

static void test_loop_budget(void) {
    static enc m1, m2;
    memset(&m1, 0, sizeof m1), memset(&m2, 0, sizeof m2);
    loop_model(&m1, 3, 2);
    kn_scope sc = kn_scope_begin();
    int64_t d[1] = {2};
    kn_tensor *x = kn_zeros(KN_F32, 1, d);
    kn_onnx_opts o = {.example = &x, .nexample = 1};
    kn_graph *g = kn_onnx_import_mem(m1.b, m1.n, NULL, &o);
    KT_NOTNULL(g);
    if (g) KT_CLOSE(run1(g, x), kn_full(KN_F32, 1, d, 3.0), 0, 0);
    kn_graph_free(g);
    kn_scope_end(sc);
    loop_model(&m2, 4096, 300);
    KT_TRUE(m2.n < sizeof m2.b);
    KT_ERR(KN_ELIMIT, kn_onnx_import_mem(m2.b, m2.n, NULL, NULL), "more than");
}

/* a model with one initializer W (2x2 float) as external data in `loc` */
static void external_model(enc *m, const char *loc, int64_t length) {
    enc g = {0}, t = {0}, kv1 = {0}, kv2 = {0};
    put_int(&t, 1, 2);
    put_int(&t, 1, 2);
    put_int(&t, 2, 1);
    put_str(&t, 8, "W");
    put_str(&kv1, 1, "location");
    put_str(&kv1, 2, loc);
    put_msg(&t, 13, &kv1);
    if (length >= 0) {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)length);
        put_str(&kv2, 1, "length");
        put_str(&kv2, 2, b);
        put_msg(&t, 13, &kv2);
    }
    put_int(&t, 14, 1); /* EXTERNAL */
    put_msg(&g, 5, &t);
    int64_t d[2] = {2, 2};
    node(&g, "MatMul", "x", "W", "y", NULL);
    kt_value_info(&g, 11, "x", 1, 2, d);
    kt_value_info(&g, 12, "y", 1, 2, d);
    model_of(m, &g, 13);
}

static void test_external_data(void) {
    char dir[] = "/tmp/kiln_onnx_ext_XXXXXX";
    KT_TRUE(mkdtemp(dir) != NULL);
    char p[256];
    snprintf(p, sizeof p, "%s/w.bin", dir);
    FILE *f = fopen(p, "wb");
    float w[4] = {1, 2, 3, 4};
    fwrite(w, 4, 4, f);
    fclose(f);
    kn_scope sc = kn_scope_begin();
    int64_t d[2] = {2, 2};
    kn_tensor *x = kn_ones(KN_F32, 2, d);
    kn_onnx_opts o = {.example = &x, .nexample = 1};
    enc m = {0};
    external_model(&m, "w.bin", 16);
    kn_graph *g = kn_onnx_import_mem(m.b, m.n, dir, &o);
    KT_NOTNULL(g);
    if (g) KT_CLOSE(run1(g, x), kn_matmul(x, kn_from_data(KN_F32, 2, d, w)), 0, 0);
    kn_graph_free(g);
    enc bad1 = {0}, bad2 = {0}, bad3 = {0};
    external_model(&bad1, "../w.bin", -1);
    KT_ERR(KN_EFORMAT, kn_onnx_import_mem(bad1.b, bad1.n, dir, &o), "relative path");
    external_model(&bad2, "w.bin", 12);
    KT_ERR(KN_EFORMAT, kn_onnx_import_mem(bad2.b, bad2.n, dir, &o), "do not fit");
    f = fopen(p, "wb");
    fwrite(w, 4, 3, f); /* 12 bytes: too short */
    fclose(f);
    external_model(&bad3, "w.bin", -1);
    KT_ERR(KN_EFORMAT, kn_onnx_import_mem(bad3.b, bad3.n, dir, &o), "shorter");
    kn_scope_end(sc);
    unlink(p);
    rmdir(dir);
}

static void test_check_report(void) {
    enc g = {0}, m = {0};
    int64_t d[2] = {2, 2};
    node(&g, "Relu", "x", NULL, "a", NULL);
    node(&g, "FooBar", "a", NULL, "b", NULL);
    node(&g, "FooBar", "b", NULL, "c", NULL);
    node(&g, "Resize9000", "c", NULL, "y", NULL);
    kt_value_info(&g, 11, "x", 1, 2, d);
    kt_value_info(&g, 12, "y", 1, 2, d);
    model_of(&m, &g, 13);
    char buf[2048] = "";
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    KT_EQ_INT(2, kn_onnx_check_mem(m.b, m.n, f));
    fclose(f);
    KT_TRUE(strstr(buf, "op FooBar (x2)") != NULL);
    KT_TRUE(strstr(buf, "op Resize9000 (x1)") != NULL);
    KT_TRUE(strstr(buf, "Relu") == NULL);
    /* and the import names the first unsupported node */
    KT_ERR(KN_EUNSUPPORTED, kn_onnx_import_mem(m.b, m.n, NULL, NULL), "node 1 (FooBar)");
}

/* an import that either succeeds or fails with a message */
static void import_counted(const void *buf, size_t n, int *ok, int *err) {
    kn_clear_error();
    kn_graph *g = kn_onnx_import_mem(buf, n, NULL, NULL);
    if (g) {
        (*ok)++;
    } else {
        (*err)++;
        KT_TRUE(kn_last_error()[0] != 0);
    }
    kn_graph_free(g);
}

/* hostile files: every prefix of a small real model at a stride, and byte mutations */
static void test_hostile(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/onnx/encoder.onnx", src_dir());
    FILE *f = fopen(path, "rb");
    KT_TRUE(f != NULL);
    if (!f) return;
    static unsigned char buf[1 << 17], mut[1 << 17];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int ok = 0, err = 0;
    for (size_t k = 0; k < n; k += 97)
        import_counted(buf, k, &ok, &err);
    uint64_t r = 12345;
    for (int i = 0; i < 600; i++) {
        memcpy(mut, buf, n);
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t at = (size_t)(r >> 33) % n;
        mut[at] = (unsigned char)(mut[at] + 1 + (r >> 20) % 255);
        import_counted(mut, n, &ok, &err);
        int c = kn_onnx_check_mem(mut, n, NULL);
        KT_TRUE(c >= 0 || kn_last_error()[0] != 0);
    }
    KT_TRUE(err > 0);
    printf("  hostile: %d imported, %d refused with a message\n", ok, err);
}

/* inputs that crashed or hung the import (found by fuzz/fuzz_onnx_import.c or by review), kept
 * as regression tests: each must import, compile and run, or fail with a message */
static void test_fuzz_crashers(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/onnx/crashers", src_dir());
    DIR *d = opendir(dir);
    KT_TRUE(d != NULL);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        kn_clear_error();
        kn_graph *g = kn_onnx_import(path, NULL);
        if (!g) {
            KT_TRUE(kn_last_error()[0] != 0);
        } else if (kn_graph_compile(g, &(kn_compile_opts){.freeze = true}) == KN_OK) {
            kn_scope sc = kn_scope_begin();
            int ni = kn_graph_num_inputs(g);
            kn_tensor *in[8] = {0}, *out[16];
            bool ok = ni <= 8;
            for (int i = 0; ok && i < ni; i++) {
                kn_graph_sig s;
                kn_graph_input(g, i, &s);
                int64_t shape[8];
                for (int k = 0; k < s.ndim; k++)
                    shape[k] = s.shape[k] < 0 ? 2 : s.shape[k];
                ok = (in[i] = kn_zeros(s.dtype, s.ndim, shape)) != NULL;
            }
            if (ok) kn_graph_run(g, in, ni, out, 16);
            kn_scope_end(sc);
        }
        kn_graph_free(g);
        n++;
    }
    closedir(d);
    KT_TRUE(n > 0);
    printf("  %d former crashers import or fail cleanly\n", n);
}

int main(void) {
    kn_set_log(NULL, NULL);
    KT_RUN(test_torch_mlp);
    KT_RUN(test_torch_cnn_bn);
    KT_RUN(test_torch_encoder);
    KT_RUN(test_save_load);
    KT_RUN(test_softmax_opsets);
    KT_RUN(test_shape_input_frozen);
    KT_RUN(test_symbolic_with_view_constant);
    KT_RUN(test_huge_shape);
    KT_RUN(test_loop_budget);
    KT_RUN(test_external_data);
    KT_RUN(test_check_report);
    KT_RUN(test_hostile);
    KT_RUN(test_fuzz_crashers);
    return kt_finish();
}
