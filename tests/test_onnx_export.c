/*
 * test_onnx_export.c - kiln graph -> ONNX (src/onnx/export.c), checked by importing the file back
 * with kiln's ONNX importer and, when the benchmark setup installed it, by ONNX Runtime:
 * traced MLP and LeNet (dim 0 stays symbolic; outputs at batch 1 and 4 match the original graph),
 * the PyTorch-exported test models imported, exported and imported again, two traced functions
 * that use most of the mapped ops (at two opsets: layer_norm is LayerNormalization at 17 and a
 * composition before), an unsupported op (KN_EUNSUPPORTED naming it, no file left behind) and
 * bad arguments.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/kiln.h"
#include "kn_test.h"
#include "kt_models.h"

static char g_dir[256];

static const char *src_dir(void) {
    const char *d = getenv("KILN_SOURCE_DIR");
    return d ? d : ".";
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* files in g_dir whose name starts with prefix (temp files of an interrupted write) */
static int count_prefixed(const char *prefix) {
    DIR *d = opendir(g_dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static kn_tensor *run1(kn_graph *g, kn_tensor *x) {
    kn_tensor *out[4] = {0};
    int n = kn_graph_run(g, &x, 1, out, 4);
    return n == 1 ? out[0] : NULL;
}

/* ONNX Runtime through bench/ort_bench.js, when bench/ort has onnxruntime-node and node runs */
static int ort_available(void) {
    static int avail = -1;
    if (avail < 0) {
        char p[1024];
        snprintf(p, sizeof p, "%s/bench/ort/node_modules/onnxruntime-node", src_dir());
        avail = exists(p) && system("command -v node >/dev/null 2>&1") == 0;
        if (!avail)
            printf("  (ONNX Runtime check skipped: bench/ort/node_modules/onnxruntime-node or "
                   "node missing)\n");
    }
    return avail;
}

/* Runs `node bench/ort_bench.js --check model x.npy y.npy`: ORT's output on x must match y. */
static int ort_check(const char *model, kn_tensor *x, kn_tensor *y, const char *tag) {
    char xp[600], yp[600], cmd[2400];
    snprintf(xp, sizeof xp, "%s", tmp_path("ort_in.npy"));
    snprintf(yp, sizeof yp, "%s", tmp_path("ort_out.npy"));
    if (kn_npy_save(xp, x) != KN_OK || kn_npy_save(yp, y) != KN_OK) return -1;
    snprintf(cmd, sizeof cmd, "node '%s/bench/ort_bench.js' --check '%s' '%s' '%s'", src_dir(),
             model, xp, yp);
    printf("  %s: ", tag);
    fflush(stdout);
    int rc = system(cmd);
    return rc == 0 ? 0 : 1;
}

/* Exports g at opset, imports the file back and compares both graphs at batches 1 and 4 (the
 * re-imported graph keeps dim 0 symbolic when g has it); with ORT, checks ORT's output too. */
static void roundtrip(kn_graph *g, const char *name, int opset, double atol, double rtol,
                      bool ort) {
    char file[128], path[600];
    snprintf(file, sizeof file, "%s_%d.onnx", name, opset);
    snprintf(path, sizeof path, "%s", tmp_path(file));
    KT_OK(kn_onnx_export(g, path, opset));
    kn_graph *h = kn_onnx_import(path, NULL);
    KT_NOTNULL(h);
    kn_graph_sig a, b;
    KT_OK(kn_graph_input(g, 0, &a));
    KT_OK(kn_graph_input(h, 0, &b));
    KT_EQ_INT(a.shape[0], b.shape[0]);
    KT_EQ_INT(a.ndim, b.ndim);
    KT_TRUE(strcmp(a.name, b.name) == 0);
    kn_graph_sig oa, ob;
    KT_OK(kn_graph_output(g, 0, &oa));
    KT_OK(kn_graph_output(h, 0, &ob));
    KT_TRUE(strcmp(oa.name, ob.name) == 0);
    kn_scope sc = kn_scope_begin();
    int64_t batches[2] = {1, 4};
    for (int k = 0; k < 2; k++) {
        if (a.shape[0] >= 0 && k) break; /* static graph: its own batch only */
        int64_t shape[KN_MAX_DIMS];
        memcpy(shape, a.shape, sizeof shape);
        if (shape[0] < 0) shape[0] = batches[k];
        kn_tensor *x = kn_randn(a.dtype, a.ndim, shape);
        kn_tensor *y = run1(g, x), *y2 = run1(h, x);
        KT_NOTNULL(y);
        KT_CLOSE(y2, y, atol, rtol);
        if (ort && ort_available()) {
            char tag[160];
            snprintf(tag, sizeof tag, "%s opset %d batch %lld", name, opset, (long long)shape[0]);
            if (ort_check(path, x, y, tag)) KT_FAIL("ONNX Runtime disagrees on %s", tag);
        }
    }
    kn_scope_end(sc);
    kn_graph_free(h);
    if (!getenv("KT_KEEP")) unlink(path);
}

static void check_module(kn_module *m, const char *name, int64_t c, int64_t hw) {
    kn_scope sc = kn_scope_begin();
    int64_t shape[4] = {3, c, hw, hw};
    kn_graph *g = kn_trace_module(m, kn_randn(KN_F32, 4, shape));
    KT_NOTNULL(g);
    kn_graph_sig s;
    KT_OK(kn_graph_input(g, 0, &s));
    KT_EQ_INT(-1, s.shape[0]);
    roundtrip(g, name, 0, 1e-6, 1e-5, true);
    roundtrip(g, name, 17, 1e-6, 1e-5, false);
    /* a compiled (frozen) graph exports what was traced */
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    roundtrip(g, name, 13, 1e-6, 1e-5, false);
    kn_graph_free(g);
    kn_scope_end(sc);
}

static void test_mlp(void) {
    kn_module *m = mlp();
    check_module(m, "mlp", 1, 28);
    kn_module_free(m);
}

static void test_lenet(void) {
    kn_module *m = lenet();
    check_module(m, "lenet", 1, 28);
    kn_module_free(m);
}

/* PyTorch-exported models: import, export, import again; outputs equal PyTorch's at batch 2 and
 * 5 (symbolic batch), and a static import (example input) exports too */
static void check_torch(const char *name) {
    char path[1024], in[1024], out[1024];
    snprintf(path, sizeof path, "%s/tests/data/onnx/%s.onnx", src_dir(), name);
    kn_graph *g = kn_onnx_import(path, NULL);
    KT_NOTNULL(g);
    const char *exp = tmp_path("torch.onnx");
    KT_OK(kn_onnx_export(g, exp, 0));
    kn_graph *h = kn_onnx_import(exp, NULL);
    KT_NOTNULL(h);
    kn_graph_sig s;
    KT_OK(kn_graph_input(h, 0, &s));
    KT_EQ_INT(-1, s.shape[0]);
    kn_scope sc = kn_scope_begin();
    for (int b = 2; b <= 5; b += 3) {
        snprintf(in, sizeof in, "%s/tests/data/onnx/%s.in.b%d.npy", src_dir(), name, b);
        snprintf(out, sizeof out, "%s/tests/data/onnx/%s.out.b%d.npy", src_dir(), name, b);
        kn_tensor *x = kn_npy_load(in), *e = kn_npy_load(out);
        KT_NOTNULL(x);
        KT_NOTNULL(e);
        KT_CLOSE(run1(h, x), e, 1e-5, 1e-4);
        KT_CLOSE(run1(h, x), run1(g, x), 1e-6, 1e-5);
    }
    kn_graph_free(h);
    kn_graph_free(g);
    /* static import at the example's shape */
    snprintf(in, sizeof in, "%s/tests/data/onnx/%s.in.b5.npy", src_dir(), name);
    snprintf(out, sizeof out, "%s/tests/data/onnx/%s.out.b5.npy", src_dir(), name);
    kn_tensor *x = kn_npy_load(in), *e = kn_npy_load(out);
    KT_NOTNULL(x);
    kn_onnx_opts o = {.example = &x, .nexample = 1};
    g = kn_onnx_import(path, &o);
    KT_NOTNULL(g);
    KT_OK(kn_onnx_export(g, exp, 17));
    h = kn_onnx_import(exp, &o);
    KT_NOTNULL(h);
    KT_CLOSE(run1(h, x), e, 1e-5, 1e-4);
    kn_scope_end(sc);
    kn_graph_free(h);
    kn_graph_free(g);
    unlink(exp);
}

static void test_torch_cnn_bn(void) {
    check_torch("cnn_bn");
}

static void test_torch_encoder(void) {
    check_torch("encoder");
}

/* ---- traced functions covering the op mappings ---- */

typedef struct params {
    kn_tensor *cw, *cb, *bn_m, *bn_v, *bn_w, *bn_b, *tw, *gn_w, *gn_b; /* image ops */
    kn_tensor *ln_w, *ln_b, *lw, *lb, *mw, *emb, *idx;                 /* sequence ops */
} params;

/* (B, N) from any (B, ...) */
static kn_tensor *flat(kn_tensor *t) {
    return kn_flatten(t, 1, -1);
}

/* image ops on x (B, 3, 7, 7): one (B, N) output joining every result */
static int f_image(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    (void)nin;
    (void)max_out;
    params *p = user;
    kn_tensor *x = in[0], *parts[24];
    int n = 0;
    kn_conv_opts co = {.stride = {2, 2}, .padding = {1, 1}};
    kn_tensor *c = kn_conv2d(x, p->cw, p->cb, &co); /* (B, 4, 4, 4) */
    c = kn_batch_norm(c, p->bn_m, p->bn_v, p->bn_w, p->bn_b, false, 0.1, 1e-5);
    parts[n++] = flat(kn_gelu(c, false));
    parts[n++] = flat(kn_gelu(c, true));
    kn_pool_opts mp = {.kernel = {2, 2}, .ceil_mode = true};
    parts[n++] = flat(kn_max_pool2d(x, &mp, NULL)); /* 7 -> 4 with ceil mode */
    kn_pool_opts ap = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
    parts[n++] = flat(kn_avg_pool2d(x, &ap)); /* count_include_pad false */
    ap.count_include_pad = true;
    parts[n++] = flat(kn_avg_pool2d(x, &ap));
    parts[n++] = flat(kn_adaptive_avg_pool2d(c, 2, 2));
    parts[n++] = flat(kn_global_avg_pool2d(c));
    parts[n++] = flat(kn_group_norm(c, 2, p->gn_w, p->gn_b, 1e-5));
    kn_conv_opts to = {.stride = {2, 2}, .padding = {1, 1}};
    int64_t opad[2] = {1, 1};
    parts[n++] = flat(kn_conv_transpose2d(c, p->tw, NULL, &to, opad));
    int64_t pads[4] = {1, 2, 2, 1};
    parts[n++] = flat(kn_pad(x, pads, 4, KN_PAD_REFLECT, 0));
    parts[n++] = flat(kn_pad(x, pads, 4, KN_PAD_CONSTANT, 0.5));
    kn_tensor *e = flat(kn_silu(c));
    e = kn_add(e, kn_softplus(e, 2.0, 20.0));
    e = kn_add(kn_leaky_relu(e, 0.2), kn_elu(e, 0.7));
    e = kn_add(kn_relu6(kn_mul_scalar(e, 4.0)), kn_clamp(e, -0.3, 0.4));
    kn_tensor *a1 = kn_add_scalar(kn_abs(e), 1.0);
    e = kn_add(e, kn_mul(kn_rsqrt(a1), kn_log1p(kn_abs(e))));
    e = kn_add(e, kn_erf(kn_square(kn_sin(e))));
    e = kn_where(kn_gt(e, kn_mul_scalar(e, 0.5)), e, kn_neg(e));
    e = kn_cast(kn_add(kn_cast(e, KN_F64), kn_cast(e, KN_F64)), KN_F32);
    parts[n++] = e;
    /* reductions, broadcast back */
    int ax[2] = {2, 3};
    kn_tensor *r = kn_add(kn_sum(x, ax, 2, true), kn_mean(x, ax, 2, true));
    r = kn_add(r, kn_sub(kn_amax(x, ax, 2, true), kn_amin(x, ax, 2, true)));
    r = kn_add(r, kn_add(kn_var(x, ax, 2, 1, true), kn_std(x, ax, 2, 0, true)));
    r = kn_add(r, kn_add(kn_logsumexp(x, ax, 2, true), kn_norm(x, 2.0, ax, 2, true)));
    r = kn_add(r, kn_add(kn_norm(x, 1.0, ax, 2, true), kn_norm(x, 3.0, ax, 2, true)));
    parts[n++] = flat(kn_add(x, r));
    /* shape ops */
    kn_tensor *s = kn_slice(x, 2, 1, 6, 2); /* (B, 3, 3, 7) */
    int perm[4] = {0, 3, 1, 2};
    s = kn_permute(s, perm); /* (B, 7, 3, 3) */
    parts[n++] = flat(kn_tril(s, 0));
    parts[n++] = flat(kn_triu(s, 1));
    int64_t rep[5] = {1, 1, 2, 1, 2}; /* one new leading dim: (1, B, 14, 3, 6) */
    int a0 = 0;
    parts[n++] = flat(kn_sum(kn_repeat(s, 5, rep), &a0, 1, false));
    kn_tensor *u = kn_unsqueeze(kn_mean(x, ax, 2, false), 1); /* (B, 1, 3) */
    int64_t es[3] = {-1, 4, 3};
    parts[n++] = flat(kn_expand(u, 3, es));
    out[0] = kn_concat(parts, n, 1);
    return out[0] ? 1 : kn_last_status();
}

/* sequence ops on x (B, 5, 16): layer norms, 3-D linear and matmul, head reshapes (a batched
 * matmul traces a batch * heads reshape, which needs a graph made symbolic from two traces: the
 * encoder test has it),
 * softmax, argmax / max_dim, embedding, index_select, gather, one_hot */
static int f_seq(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    (void)nin;
    (void)max_out;
    params *p = user;
    kn_tensor *x = in[0], *parts[16];
    int n = 0;
    int64_t B = kn_tensor_shape(x)[0];
    kn_tensor *h = kn_layer_norm(x, 1, p->ln_w, p->ln_b, 1e-5);
    parts[n++] = flat(kn_layer_norm(x, 2, NULL, NULL, 1e-6));
    kn_tensor *q = kn_linear(h, p->lw, p->lb); /* (B, 5, 16) */
    int64_t s4[4] = {B, 5, 4, 4};
    int perm[4] = {0, 2, 1, 3};
    kn_tensor *qh = kn_permute(kn_reshape(q, 4, s4), perm); /* (B, 4, 5, 4) */
    parts[n++] = flat(kn_softmax(kn_mul(qh, qh), -1));
    parts[n++] = flat(kn_matmul(q, p->mw)); /* (B, 5, 16) @ (16, 8) */
    parts[n++] = flat(kn_log_softmax(q, 1));
    kn_tensor *am = kn_argmax(q, 2, false); /* (B, 5) int64 */
    parts[n++] = kn_cast(am, KN_F32);
    parts[n++] = flat(kn_cast(kn_argmin(q, 1, true), KN_F32));
    kn_tensor *mi = NULL;
    parts[n++] = flat(kn_max_dim(q, 2, false, &mi));
    parts[n++] = kn_cast(mi, KN_F32);
    parts[n++] = flat(kn_embedding(p->emb, am)); /* (B, 5, 3) */
    parts[n++] = flat(kn_index_select(x, 2, p->idx));
    kn_tensor *gi = kn_reshape(am, 3, (int64_t[]){B, 5, 1});
    parts[n++] = flat(kn_gather(q, 2, gi));
    parts[n++] = flat(kn_cast(kn_one_hot(am, 16), KN_F32));
    out[0] = kn_concat(parts, n, 1);
    return out[0] ? 1 : kn_last_status();
}

static void make_params(params *p) {
    int64_t cw[4] = {4, 3, 3, 3}, c4[1] = {4}, tw[4] = {4, 2, 3, 3}, lw[2] = {16, 16},
            l16[1] = {16}, emb[2] = {16, 3}, idx[1] = {3};
    p->cw = kn_randn(KN_F32, 4, cw);
    p->cb = kn_randn(KN_F32, 1, c4);
    p->bn_m = kn_randn(KN_F32, 1, c4);
    p->bn_v = kn_add_scalar(kn_abs(kn_randn(KN_F32, 1, c4)), 0.5);
    p->bn_w = kn_randn(KN_F32, 1, c4);
    p->bn_b = kn_randn(KN_F32, 1, c4);
    p->tw = kn_randn(KN_F32, 4, tw);
    p->gn_w = kn_randn(KN_F32, 1, c4);
    p->gn_b = kn_randn(KN_F32, 1, c4);
    p->ln_w = kn_randn(KN_F32, 1, l16);
    p->ln_b = kn_randn(KN_F32, 1, l16);
    p->lw = kn_randn(KN_F32, 2, lw);
    p->lb = kn_randn(KN_F32, 1, l16);
    p->mw = kn_randn(KN_F32, 2, (int64_t[]){16, 8});
    p->emb = kn_randn(KN_F32, 2, emb);
    int64_t iv[3] = {15, 0, 7};
    p->idx = kn_from_data(KN_I64, 1, idx, iv);
}

static void check_fn(kn_traced_fn fn, const char *name, int ndim, const int64_t *shape,
                     const int *opsets, int nops) {
    kn_scope sc = kn_scope_begin();
    params p;
    make_params(&p);
    kn_tensor *x = kn_randn(KN_F32, ndim, shape);
    kn_graph *g = kn_trace(fn, &p, &x, 1, NULL);
    KT_NOTNULL(g);
    kn_graph_sig s;
    KT_OK(kn_graph_input(g, 0, &s));
    KT_EQ_INT(-1, s.shape[0]);
    for (int i = 0; i < nops; i++)
        roundtrip(g, name, opsets[i], 1e-5, 1e-4, true);
    kn_graph_free(g);
    kn_scope_end(sc);
}

static void test_image_ops(void) {
    int64_t shape[4] = {2, 3, 7, 7};
    int opsets[2] = {14, 17}; /* Trilu: 14+ */
    check_fn(f_image, "image_ops", 4, shape, opsets, 2);
}

static void test_seq_ops(void) {
    int64_t shape[3] = {2, 5, 16};
    int opsets[2] = {13, 17};
    check_fn(f_seq, "seq_ops", 3, shape, opsets, 2);
}

/* ---- errors ---- */

static int f_loss(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    (void)user;
    (void)nin;
    (void)max_out;
    out[0] = kn_mse_loss(kn_relu(in[0]), in[0], KN_REDUCE_MEAN);
    return out[0] ? 1 : kn_last_status();
}

static int f_tril(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    (void)user;
    (void)nin;
    (void)max_out;
    out[0] = kn_tril(in[0], 0);
    return out[0] ? 1 : kn_last_status();
}

static void test_unsupported(void) {
    kn_scope sc = kn_scope_begin();
    int64_t shape[2] = {4, 4};
    kn_tensor *x = kn_randn(KN_F32, 2, shape);
    kn_graph *g = kn_trace(f_loss, NULL, &x, 1, NULL);
    KT_NOTNULL(g);
    const char *path = tmp_path("loss.onnx");
    unlink(path);
    kn_clear_error();
    KT_STATUS(KN_EUNSUPPORTED, kn_onnx_export(g, path, 0));
    KT_TRUE(strstr(kn_last_error(), "mse_loss") != NULL);
    KT_TRUE(strstr(kn_last_error(), "node 1") != NULL);
    KT_TRUE(!exists(path));
    KT_EQ_INT(0, count_prefixed("loss.onnx"));
    /* an existing file is left as it was */
    FILE *f = fopen(path, "w");
    KT_TRUE(f != NULL);
    fputs("old", f);
    fclose(f);
    KT_STATUS(KN_EUNSUPPORTED, kn_onnx_export(g, path, 0));
    struct stat st;
    KT_TRUE(stat(path, &st) == 0 && st.st_size == 3);
    KT_EQ_INT(1, count_prefixed("loss.onnx"));
    unlink(path);
    kn_graph_free(g);
    /* an op that needs a later opset */
    g = kn_trace(f_tril, NULL, &x, 1, NULL);
    KT_NOTNULL(g);
    KT_STATUS(KN_EUNSUPPORTED, kn_onnx_export(g, path, 13));
    KT_TRUE(strstr(kn_last_error(), "opset 14") != NULL);
    KT_TRUE(!exists(path));
    KT_OK(kn_onnx_export(g, path, 14));
    KT_TRUE(exists(path));
    unlink(path);
    /* bad arguments */
    KT_STATUS(KN_EINVAL, kn_onnx_export(g, path, 12));
    KT_STATUS(KN_EINVAL, kn_onnx_export(g, path, 18));
    KT_STATUS(KN_EINVAL, kn_onnx_export(NULL, path, 0));
    KT_STATUS(KN_EINVAL, kn_onnx_export(g, NULL, 0));
    KT_TRUE(!exists(path));
    KT_STATUS(KN_EIO, kn_onnx_export(g, "/nonexistent-dir/x.onnx", 14));
    kn_graph_free(g);
    kn_scope_end(sc);
}

int main(void) {
    kn_set_log(NULL, NULL);
    snprintf(g_dir, sizeof g_dir, "/tmp/kiln_test_onnx_export_%d", (int)getpid());
    if (mkdir(g_dir, 0700) != 0) {
        perror(g_dir);
        return 1;
    }
    KT_RUN(test_mlp);
    KT_RUN(test_lenet);
    KT_RUN(test_torch_cnn_bn);
    KT_RUN(test_torch_encoder);
    KT_RUN(test_image_ops);
    KT_RUN(test_seq_ops);
    KT_RUN(test_unsupported);
    if (!getenv("KT_KEEP")) { /* KT_KEEP=1 keeps the exported models for a look */
        DIR *d = opendir(g_dir);
        for (struct dirent *e; d && (e = readdir(d));)
            if (e->d_name[0] != '.') unlink(tmp_path(e->d_name));
        if (d) closedir(d);
        rmdir(g_dir);
    }
    return kt_finish();
}
