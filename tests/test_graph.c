/*
 * test_graph.c - trace, compile and run: graph results equal eager results bit for bit (MLP,
 * LeNet, fused elementwise chains, every pass switched off in turn), the symbolic batch, the
 * allocation-free run, guarded tracing, conv+batchnorm folding (with a tolerance), and errors.
 */
#include "kernels/gemm.h"
#include "kn_test.h"
#include "kt_models.h"
#include "ops/op_impl.h"

extern uint64_t kn__alloc_count(void);

/* bit-exact: same shape and identical bytes */
static int same_bits(const kn_tensor *a, const kn_tensor *b) {
    if (!a || !b || kn_tensor_ndim(a) != kn_tensor_ndim(b) ||
        kn_tensor_numel(a) != kn_tensor_numel(b) || kn_tensor_dtype(a) != kn_tensor_dtype(b))
        return 0;
    if (kt_tensor_close("bits", a, b, 0, 0)) return 0;
    return 1;
}

/* plan of g at `batch` as text */
static void plan_text(kn_graph *g, int64_t batch, char *buf, size_t n) {
    memset(buf, 0, n);
    FILE *f = fmemopen(buf, n - 1, "w");
    KT_OK(kn_graph_print(g, f, true, batch));
    fclose(f);
}

/* signatures and op histogram of g as text */
static void graph_text(kn_graph *g, char *buf, size_t n) {
    memset(buf, 0, n);
    FILE *f = fmemopen(buf, n - 1, "w");
    KT_OK(kn_graph_print(g, f, false, 0));
    fclose(f);
}

static kn_tensor *eager_eval(kn_module *m, kn_tensor *x) {
    kn_module_train(m, false);
    bool prev = kn_no_grad_begin();
    kn_tensor *y = kn_module_forward(m, x);
    kn_no_grad_end(prev);
    return y;
}

/* a frozen graph of m at several batch sizes: eager's results within the tolerance, and no
 * allocation once a batch size's plan exists (shape: the input's, dim 0 overwritten) */
static void check_frozen(kn_graph *g, kn_module *m, int64_t *shape, const int64_t *batches, int nb,
                         double atol, double rtol) {
    for (int i = 0; i < nb; i++) {
        shape[0] = batches[i];
        kn_tensor *xi = kn_randn(KN_F32, 4, shape), *y = NULL;
        KT_EQ_INT(1, kn_graph_run(g, &xi, 1, &y, 1));
        KT_CLOSE(y, eager_eval(m, xi), atol, rtol);
        uint64_t before = kn__alloc_count();
        KT_OK(kn_graph_run_into(g, &xi, 1, &y, 1));
        KT_EQ_INT(0, kn__alloc_count() - before);
    }
}

static void check_module(kn_module *m, int64_t c, int64_t h, int64_t w) {
    kn_scope s = kn_scope_begin();
    int64_t shape[4] = {8, c, h, w};
    kn_tensor *x = kn_randn(KN_F32, 4, shape);
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    KT_OK(kn_graph_compile(g, NULL));
    int64_t batches[] = {8, 1, 64, 3};
    for (int i = 0; i < 4; i++) {
        shape[0] = batches[i];
        kn_tensor *xi = kn_randn(KN_F32, 4, shape), *y = NULL;
        KT_EQ_INT(1, kn_graph_run(g, &xi, 1, &y, 1));
        KT_TRUE(same_bits(y, eager_eval(m, xi)));
    }
    kn_graph_stats st;
    KT_OK(kn_graph_stats_get(g, &st));
    KT_EQ_INT(4, st.plans_built); /* one per batch size, counted */
    KT_TRUE(st.fused_groups > 0);
    /* every pass off in turn gives the same bits */
    shape[0] = 5;
    kn_tensor *x5 = kn_randn(KN_F32, 4, shape), *ref = eager_eval(m, x5);
    for (unsigned bit = 1; bit < KN_PASS_ALL; bit <<= 1) {
        kn_compile_opts o = {.disable = bit};
        KT_OK(kn_graph_compile(g, &o));
        kn_tensor *y = NULL;
        KT_EQ_INT(1, kn_graph_run(g, &x5, 1, &y, 1));
        if (!same_bits(y, ref)) KT_FAIL("pass bit %u off changes the result", bit);
    }
    kn_graph_free(g);
    kn_scope_end(s);
}

static void test_mlp_bit_exact(void) {
    kn_manual_seed(1);
    kn_module *m = mlp();
    check_module(m, 1, 28, 28);
    kn_module_free(m);
}

static void test_lenet_bit_exact(void) {
    kn_manual_seed(2);
    kn_module *m = lenet();
    check_module(m, 1, 28, 28);
    kn_module_free(m);
}

/* a chain of elementwise ops with broadcasting and a scalar */
static int chain_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_tensor *x = in[0], *b = in[1];
    kn_tensor *t = kn_add(kn_mul_scalar(x, 2.0), b);
    t = kn_mul(kn_gelu(t, false), kn_sigmoid(x));
    t = kn_sub(kn_tanh(t), kn_exp(kn_neg(kn_abs(x))));
    out[0] = kn_relu(t);
    out[1] = kn_sum(t, (int[]){1}, 1, false);
    return 2;
}

static void test_fused_chain_bit_exact(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(3);
    int64_t sx[2] = {33, 1000}, sb[1] = {1000};
    kn_tensor *in[2] = {kn_randn(KN_F32, 2, sx), kn_randn(KN_F32, 1, sb)};
    kn_graph *g = kn_trace(chain_fn, NULL, in, 2, NULL);
    KT_NOTNULL(g);
    kn_graph_stats st;
    KT_OK(kn_graph_stats_get(g, &st));
    KT_TRUE(st.fused_groups >= 1);
    KT_TRUE(st.nodes < st.traced_nodes);
    int64_t sizes[] = {33, 1, 200}; /* 200 x 1000 runs in parallel chunks */
    for (int k = 0; k < 3; k++) {
        sx[0] = sizes[k];
        kn_tensor *xi[2] = {kn_randn(KN_F32, 2, sx), in[1]};
        kn_tensor *e[2], *y[2];
        KT_EQ_INT(2, chain_fn(NULL, xi, 2, e, 2));
        KT_EQ_INT(2, kn_graph_run(g, xi, 2, y, 2));
        KT_TRUE(same_bits(y[0], e[0]));
        KT_TRUE(same_bits(y[1], e[1]));
    }
    kn_graph_free(g);
    kn_scope_end(s);
}

/* prepack: a frozen MLP's f32 linears become linear_packed (on AVX-512 machines), within float
 * rounding of eager at batch 1, 13 (a row tail) and 64, with no allocation per run; the packed
 * kernel equals its reference bit for bit; switching the pass off restores plain linear */
static void test_prepack(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(6);
    kn_module *m = mlp();
    int64_t shape[4] = {13, 1, 28, 28};
    kn_tensor *x = kn_randn(KN_F32, 4, shape);
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    char buf[8192];
    graph_text(g, buf, sizeof buf);
    bool packed = strstr(buf, "linear_packed") != NULL;
    KT_TRUE(packed == kn__sgemm_packed_available());
    check_frozen(g, m, shape, (int64_t[]){1, 13, 64}, 3, 1e-5, 1e-4);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true, .disable = KN_PASS_PREPACK}));
    graph_text(g, buf, sizeof buf);
    KT_TRUE(strstr(buf, "linear_packed") == NULL);
    kn_graph_free(g);
    kn_module_free(m);
    /* the kernel against the op's reference loops (the same order per output: the same bits),
     * over row, column and reduction tails, with and without a bias */
    const int64_t Ms[] = {1, 5, 13, 64}, Ns[] = {32, 45, 100}, Ks[] = {1, 7, 300};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                int64_t M = Ms[a], N = Ns[b], K = Ks[c], P = kn__sgemm_packed_size(N, K);
                kn_tensor *w = kn_randn(KN_F32, 2, (int64_t[]){N, K});
                kn_tensor *wp = kn_zeros(KN_F32, 1, &P);
                kn__sgemm_pack_wt(kn_tensor_data(w), K, N, K, kn_tensor_data(wp));
                kn_tensor *in[3] = {kn_randn(KN_F32, 2, (int64_t[]){M, K}), wp,
                                    kn_randn(KN_F32, 1, &N)};
                kn_attrs at = {0};
                kn_attrs_set_int(&at, "out", N);
                kn_attrs_set_int(&at, "in", K);
                int nin = 2 + (int)((a + b + c) % 2);
                kn_tensor *y = NULL, *yr = NULL;
                KT_EQ_INT(1, kn_op_call("linear_packed", in, nin, &at, &y, 1));
                bool prev = kn__force_ref(true);
                KT_EQ_INT(1, kn_op_call("linear_packed", in, nin, &at, &yr, 1));
                kn__force_ref(prev);
                KT_TRUE(same_bits(y, yr));
                KT_CLOSE(y, kn_linear(in[0], w, nin == 3 ? in[2] : NULL), 1e-4, 1e-4);
            }
    kn_scope_end(s);
}

/* frozen conv nets: conv2d with >= 32 output channels becomes conv2d_packed (the stem-like
 * 7x7 stride 2, a 3x3 after batch norm folding, a strided 1x1, a grouped one that stays conv2d),
 * results within the conv tolerance of eager at several batch sizes, no allocation per run, and
 * the pass switched off gives plain conv2d again */
static void test_prepack_conv(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(8);
    kn_conv_opts stem = {.stride = {2, 2}, .padding = {3, 3}}, p1 = {.padding = {1, 1}},
                 s2 = {.stride = {2, 2}}, grp = {.padding = {1, 1}, .groups = 4};
    kn_module *mods[] = {kn_nn_conv2d(3, 32, 7, 7, &stem, false),
                         kn_nn_batchnorm2d(32, 1e-5, 0.1),
                         kn_nn_relu(),
                         kn_nn_conv2d(32, 64, 3, 3, &p1, true),
                         kn_nn_relu(),
                         kn_nn_conv2d(64, 96, 1, 1, &s2, true),
                         kn_nn_conv2d(96, 96, 3, 3, &grp, true),
                         kn_nn_relu()};
    kn_module *m = kn_nn_sequential(mods, 8);
    int64_t shape[4] = {2, 3, 30, 27};
    kn_tensor *x = kn_randn(KN_F32, 4, shape);
    (void)eager_eval(m, x);
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    char buf[16384];
    graph_text(g, buf, sizeof buf);
    KT_TRUE(strstr(buf, "conv2d_packed") != NULL || !kn__has_avx512f());
    KT_TRUE(strstr(buf, "  conv2d ") != NULL); /* the grouped layer stays (histogram line) */
    check_frozen(g, m, shape, (int64_t[]){1, 2, 5}, 3, 1e-4, 1e-4);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true, .disable = KN_PASS_PREPACK}));
    graph_text(g, buf, sizeof buf);
    KT_TRUE(strstr(buf, "conv2d_packed") == NULL);
    kn_graph_free(g);
    kn_module_free(m);
    kn_scope_end(s);
}

/* two residual blocks: a projection shortcut computed after the main branch's second conv (the
 * pass moves it first) ending in relu, then an identity shortcut without relu */
static int res_blocks(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_tensor **w = user;
    kn_conv_opts p1 = {.padding = {1, 1}};
    kn_tensor *h = kn_relu(kn_conv2d(in[0], w[0], w[1], &p1));
    kn_tensor *h2 = kn_conv2d(h, w[2], w[3], &p1);
    kn_tensor *sc = kn_conv2d(in[0], w[4], NULL, NULL);
    kn_tensor *y = kn_relu(kn_add(h2, sc));
    out[0] = kn_add(kn_conv2d(y, w[5], NULL, &p1), y);
    return 1;
}

/* the residual pass: both blocks' add (and relu) run inside the packed conv; the same bits as
 * with the pass off, eager within the conv tolerance, any batch */
static void test_residual_fusion(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(9);
    kn_tensor *w[6] = {kn_mul_scalar(kn_randn(KN_F32, 4, (int64_t[]){32, 16, 3, 3}), 0.1),
                       kn_randn(KN_F32, 1, (int64_t[]){32}),
                       kn_mul_scalar(kn_randn(KN_F32, 4, (int64_t[]){32, 32, 3, 3}), 0.1),
                       kn_randn(KN_F32, 1, (int64_t[]){32}),
                       kn_mul_scalar(kn_randn(KN_F32, 4, (int64_t[]){32, 16, 1, 1}), 0.1),
                       kn_mul_scalar(kn_randn(KN_F32, 4, (int64_t[]){32, 32, 3, 3}), 0.1)};
    int64_t shape[4] = {2, 16, 10, 11};
    kn_tensor *x = kn_randn(KN_F32, 4, shape);
    kn_graph *g = kn_trace(res_blocks, w, &x, 1, NULL);
    KT_NOTNULL(g);
    kn_graph *ref = kn_trace(res_blocks, w, &x, 1, NULL);
    KT_NOTNULL(ref);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    KT_OK(kn_graph_compile(ref, &(kn_compile_opts){.freeze = true, .disable = KN_PASS_RESIDUAL}));
    char buf[8192];
    graph_text(g, buf, sizeof buf);
    if (kn__has_avx512f()) {
        KT_TRUE(strstr(buf, "  add ") == NULL);  /* both adds folded */
        KT_TRUE(strstr(buf, "  relu ") == NULL); /* and the block's relus */
    }
    int64_t batches[3] = {1, 2, 3};
    for (int i = 0; i < 3; i++) {
        shape[0] = batches[i];
        kn_tensor *xi = kn_randn(KN_F32, 4, shape), *y = NULL, *yr = NULL, *ye = NULL;
        KT_EQ_INT(1, kn_graph_run(g, &xi, 1, &y, 1));
        KT_EQ_INT(1, kn_graph_run(ref, &xi, 1, &yr, 1));
        KT_TRUE(same_bits(y, yr));
        KT_EQ_INT(1, res_blocks(w, &xi, 1, &ye, 1));
        KT_CLOSE(y, ye, 1e-4, 1e-4);
    }
    kn_graph_free(g);
    kn_graph_free(ref);
    kn_scope_end(s);
}

/* two independent GEMMs too small to gain from a second thread each: the plan runs them side
 * by side (interop.c); bit-identical to eager with the pass on, off, and on one thread */
static int two_gemms(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    out[0] = kn_add(kn_relu(kn_matmul(in[0], in[1])), kn_matmul(in[2], in[3]));
    return 1;
}

static void test_interop_windows(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(11);
    int64_t sh[2] = {160, 160};
    kn_tensor *in[4];
    for (int k = 0; k < 4; k++)
        in[k] = kn_randn(KN_F32, 2, sh);
    kn_tensor *ref = NULL;
    KT_EQ_INT(1, two_gemms(NULL, in, 4, &ref, 1));
    kn_graph *g = kn_trace(two_gemms, NULL, in, 4, &(kn_trace_opts){.static_batch = true});
    KT_NOTNULL(g);
    static char plan[1 << 14];
    plan_text(g, 0, plan, sizeof plan);
    KT_TRUE(strstr(plan, "two lanes") != NULL);
    int prev = kn_get_num_threads();
    for (int t = 2; t >= 1; t--) {
        kn_set_num_threads(t);
        kn_tensor *y = NULL;
        KT_EQ_INT(1, kn_graph_run(g, in, 4, &y, 1));
        KT_TRUE(same_bits(y, ref));
    }
    kn_set_num_threads(prev);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.disable = KN_PASS_INTEROP}));
    plan_text(g, 0, plan, sizeof plan);
    KT_TRUE(strstr(plan, "two lanes") == NULL);
    kn_tensor *y = NULL;
    KT_EQ_INT(1, kn_graph_run(g, in, 4, &y, 1));
    KT_TRUE(same_bits(y, ref));
    /* allocation-free once warm, the second lane's thread included */
    KT_OK(kn_graph_compile(g, NULL));
    KT_OK(kn_graph_run_into(g, in, 4, &y, 1));
    uint64_t before = kn__alloc_count();
    for (int r = 0; r < 3; r++)
        KT_OK(kn_graph_run_into(g, in, 4, &y, 1));
    KT_EQ_INT(0, kn__alloc_count() - before);
    KT_TRUE(same_bits(y, ref));
    /* the first runs time both ways, then one is kept; the bits never change */
    plan_text(g, 0, plan, sizeof plan);
    KT_TRUE(strstr(plan, "timing both ways") != NULL);
    for (int r = 0; r < 40; r++)
        KT_OK(kn_graph_run_into(g, in, 4, &y, 1));
    KT_TRUE(same_bits(y, ref));
    plan_text(g, 0, plan, sizeof plan);
    KT_TRUE(strstr(plan, "(measured: ") != NULL);
    kn_graph_free(g);
    kn_scope_end(s);
}

static void test_no_allocation_per_run(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(4);
    kn_module *ms[2] = {mlp(), lenet()};
    for (int k = 0; k < 2; k++) {
        int64_t shape[4] = {16, 1, 28, 28};
        kn_tensor *x = kn_randn(KN_F32, 4, shape);
        kn_graph *g = kn_trace_module(ms[k], x);
        KT_NOTNULL(g);
        kn_tensor *y = kn_zeros(KN_F32, 2, (int64_t[]){16, 10});
        KT_OK(kn_graph_run_into(g, &x, 1, &y, 1)); /* builds the plan */
        uint64_t before = kn__alloc_count();
        for (int r = 0; r < 5; r++)
            KT_OK(kn_graph_run_into(g, &x, 1, &y, 1));
        KT_EQ_INT(0, kn__alloc_count() - before);
        KT_TRUE(same_bits(y, eager_eval(ms[k], x)));
        kn_graph_free(g);
        kn_module_free(ms[k]);
    }
    kn_scope_end(s);
}

/* profiling: per-node times of LeNet's plan, GFLOP/s for its convolutions and GEMMs, counters
 * reset when switched on again, same results, and no profile before a profiled run */
static void test_profile(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(6);
    kn_module *m = lenet();
    int64_t shape[4] = {4, 1, 28, 28};
    kn_tensor *x = kn_randn(KN_F32, 4, shape);
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    kn_tensor *y = kn_zeros(KN_F32, 2, (int64_t[]){4, 10});
    KT_OK(kn_graph_run_into(g, &x, 1, &y, 1));
    KT_STATUS(KN_EINVAL, kn_graph_profile_print(g, stderr, 4, 0)); /* nothing profiled yet */
    KT_OK(kn_graph_profile(g, true));
    for (int r = 0; r < 3; r++)
        KT_OK(kn_graph_run_into(g, &x, 1, &y, 1));
    KT_TRUE(same_bits(y, eager_eval(m, x)));
    char buf[8192] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    KT_OK(kn_graph_profile_print(g, f, 4, 0));
    fclose(f);
    KT_TRUE(strstr(buf, "profile (batch 4, 3 runs)") != NULL);
    KT_TRUE(strstr(buf, "conv2d") != NULL);
    KT_TRUE(strstr(buf, "(4, 10)") != NULL); /* the last linear's output */
    KT_TRUE(strstr(buf, "GFLOP/s") != NULL);
    /* rows are slowest first: the ms/run column never increases */
    double prev = 1e30;
    int rows = 0;
    for (char *line = strstr(buf, "\n  "); line; line = strstr(line + 1, "\n  ")) {
        int node;
        char op[64];
        double ms;
        const char *shape_end = strchr(line + 1, ')'), *eol = strchr(line + 1, '\n');
        if (sscanf(line, " %d %63s", &node, op) == 2 && shape_end && (!eol || shape_end < eol) &&
            sscanf(shape_end + 1, "%lf", &ms) == 1) {
            KT_TRUE(ms <= prev);
            prev = ms;
            rows++;
        }
    }
    KT_TRUE(rows >= 4);
    /* on again: counters restart; top limits the rows */
    KT_OK(kn_graph_profile(g, true));
    KT_OK(kn_graph_run_into(g, &x, 1, &y, 1));
    memset(buf, 0, sizeof buf);
    f = fmemopen(buf, sizeof buf - 1, "w");
    KT_OK(kn_graph_profile_print(g, f, 4, 2));
    fclose(f);
    KT_TRUE(strstr(buf, "1 runs)") != NULL);
    int lines = 0; /* title, column names, then exactly `top` nodes (views are not counted) */
    for (const char *q = buf; (q = strchr(q, '\n')); q++)
        lines++;
    KT_EQ_INT(4, lines);
    /* off: the next run drops the counters */
    KT_OK(kn_graph_profile(g, false));
    KT_OK(kn_graph_run_into(g, &x, 1, &y, 1));
    KT_STATUS(KN_EINVAL, kn_graph_profile_print(g, stderr, 4, 0));
    KT_STATUS(KN_EINVAL, kn_graph_profile(NULL, true));
    kn_graph_free(g);
    kn_module_free(m);
    kn_scope_end(s);
}

/* branches on a value read on the host: positive sums take relu, others neg */
static int branchy(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_tensor *s = kn_sum(in[0], NULL, 0, false);
    out[0] = kn_item(s) > 0 ? kn_relu(in[0]) : kn_neg(in[0]);
    return 1;
}

/* host code that reads the batch size: fine at the traced batch, wrong at any other */
static int batch_mean_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    out[0] =
        kn_mul_scalar(kn_sum(in[0], (int[]){0}, 1, false), 1.0 / (double)kn_tensor_dim(in[0], 0));
    return 1;
}
static int relu_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    out[0] = kn_relu(in[0]);
    return 1;
}
static void test_trace_check_catches_batch_constant(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){4, 3}),
              *x2 = kn_randn(KN_F32, 2, (int64_t[]){4, 3});
    kn_graph *g = kn_trace(batch_mean_fn, NULL, &x, 1, NULL);
    KT_NOTNULL(g);
    KT_STATUS(KN_EMISUSE, kn_trace_check(g, batch_mean_fn, NULL, &x2, 1));
    KT_TRUE(strstr(kn_last_error(), "batch size") != NULL);
    kn_graph_free(g);
    g = kn_trace(relu_fn, NULL, &x, 1, NULL);
    KT_OK(kn_trace_check(g, relu_fn, NULL, &x2, 1));
    kn_graph_free(g);
    kn_scope_end(s);
}

static void test_trace_check_catches_branch(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *pos = kn_full(KN_F32, 2, (int64_t[]){2, 3}, 1.0);
    kn_tensor *neg = kn_full(KN_F32, 2, (int64_t[]){2, 3}, -1.0);
    kn_tensor *pos2 = kn_full(KN_F32, 2, (int64_t[]){2, 3}, 2.0);
    kn_graph *g = kn_trace(branchy, NULL, &pos, 1, NULL);
    KT_NOTNULL(g);
    KT_EQ_INT(1, kn_graph_host_reads(g));
    KT_OK(kn_trace_check(g, branchy, NULL, &pos2, 1)); /* same path: accepted */
    KT_STATUS(KN_EMISUSE, kn_trace_check(g, branchy, NULL, &neg, 1));
    KT_TRUE(strstr(kn_last_error(), "node 1 is 'relu'") != NULL);
    KT_TRUE(strstr(kn_last_error(), "kn_item") != NULL);
    kn_graph_free(g);
    kn_scope_end(s);
}

static kn_tensor *bn_fwd(kn_module *m, kn_tensor *x) {
    return kn_module_forward(kn_module_child(m, "0"), x);
}

static void test_conv_bn_fold(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(5);
    kn_module *m[] = {kn_nn_conv2d(3, 8, 3, 3, NULL, true), kn_nn_batchnorm2d(8, 1e-5, 0.1),
                      kn_nn_relu()};
    kn_module *net = kn_nn_sequential(m, 3);
    (void)bn_fwd;
    /* give the running statistics values */
    kn_module *bn = kn_module_child(net, "1");
    kn_init_uniform_(kn_module_buffer(bn, "running_mean"), -0.5, 0.5);
    kn_init_uniform_(kn_module_buffer(bn, "running_var"), 0.5, 2.0);
    kn_init_uniform_(kn_module_param(bn, "weight"), 0.5, 1.5);
    kn_init_uniform_(kn_module_param(bn, "bias"), -0.5, 0.5);
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){4, 3, 12, 12});
    kn_graph *g = kn_trace_module(net, x);
    KT_NOTNULL(g);
    KT_OK(kn_graph_compile(g, &(kn_compile_opts){.freeze = true}));
    kn_graph_stats st;
    KT_OK(kn_graph_stats_get(g, &st));
    KT_EQ_INT(1, st.nodes); /* one conv2d: batch_norm folded into it, relu fused into it */
    kn_tensor *y = NULL;
    KT_EQ_INT(1, kn_graph_run(g, &x, 1, &y, 1));
    KT_CLOSE(y, eager_eval(net, x), 1e-5, 1e-5);
    kn_graph_free(g);
    kn_module_free(net);
    kn_scope_end(s);
}

/* plans are cached per batch size, at most 8: the 9th size evicts the least recently used */
static void test_plan_cache_bounded(void) {
    kn_scope s = kn_scope_begin();
    kn_module *m = mlp();
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){2, 1, 28, 28}), *y = NULL;
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    for (int64_t b = 1; b <= 10; b++) {
        kn_tensor *xb = kn_randn(KN_F32, 4, (int64_t[]){b, 1, 28, 28});
        KT_EQ_INT(1, kn_graph_run(g, &xb, 1, &y, 1));
        KT_TRUE(same_bits(y, eager_eval(m, xb)));
    }
    kn_graph_stats st;
    KT_OK(kn_graph_stats_get(g, &st));
    KT_EQ_INT(10, st.plans_built);
    kn_tensor *x10 = kn_randn(KN_F32, 4, (int64_t[]){10, 1, 28, 28});
    KT_EQ_INT(1, kn_graph_run(g, &x10, 1, &y, 1)); /* still cached */
    kn_tensor *x1 = kn_randn(KN_F32, 4, (int64_t[]){1, 1, 28, 28});
    KT_EQ_INT(1, kn_graph_run(g, &x1, 1, &y, 1)); /* evicted: built again */
    KT_OK(kn_graph_stats_get(g, &st));
    KT_EQ_INT(11, st.plans_built);
    kn_graph_free(g);
    kn_module_free(m);
    kn_scope_end(s);
}

static void test_bad_inputs(void) {
    kn_scope s = kn_scope_begin();
    kn_module *m = mlp();
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){2, 1, 28, 28}), *y = NULL;
    kn_graph *g = kn_trace_module(m, x);
    KT_NOTNULL(g);
    kn_tensor *bad = kn_randn(KN_F32, 4, (int64_t[]){2, 1, 28, 27});
    KT_EQ_INT(KN_ESHAPE, kn_graph_run(g, &bad, 1, &y, 1));
    KT_TRUE(strstr(kn_last_error(), "input 'input' has shape (2, 1, 28, 27)") != NULL);
    kn_tensor *i64 = kn_zeros(KN_I64, 4, (int64_t[]){2, 1, 28, 28});
    KT_EQ_INT(KN_EDTYPE, kn_graph_run(g, &i64, 1, &y, 1));
    KT_EQ_INT(KN_EINVAL, kn_graph_run(g, NULL, 0, &y, 1));
    kn_tensor *small = kn_zeros(KN_F32, 2, (int64_t[]){2, 9});
    KT_STATUS(KN_ESHAPE, kn_graph_run_into(g, &x, 1, &small, 1));
    /* a non-contiguous input is copied, not refused */
    kn_tensor *big = kn_randn(KN_F32, 4, (int64_t[]){2, 1, 28, 56});
    kn_tensor *nc = kn_slice(big, 3, 0, 56, 2);
    KT_EQ_INT(1, kn_graph_run(g, &nc, 1, &y, 1));
    KT_TRUE(same_bits(y, eager_eval(m, nc)));
    kn_graph_free(g);
    kn_module_free(m);
    kn_scope_end(s);
}

/* ---- compiled training steps ---- */
typedef struct {
    kn_module *m;
} lossctx;

static int loss_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    lossctx *c = user;
    out[0] = kn_cross_entropy(kn_module_forward(c->m, in[0]), in[1], NULL);
    return out[0] ? 1 : kn_last_status();
}

/* 20 steps eager vs 20 steps as a compiled graph, same init and batches of B: identical losses
 * and parameters (bit for bit), with a batch of another size at step 10 (a second trace). With
 * `lanes` the plan must hold a concurrent window (interop.c). */
static void train_both_b(kn_module *(*make)(void), bool adam, bool big_grad, int64_t batch,
                         bool lanes) {
    kn_scope s = kn_scope_begin();
    kn_module *m[2];
    kn_optimizer *opt[2];
    for (int k = 0; k < 2; k++) {
        kn_manual_seed(7);
        m[k] = make();
        opt[k] = adam ? kn_adam_for(m[k], &(kn_adam_opts){.lr = 1e-3})
                      : kn_sgd_for(m[k], &(kn_sgd_opts){.lr = 0.05, .momentum = 0.9});
        KT_NOTNULL(opt[k]);
    }
    lossctx ctx = {m[1]};
    kn_train_step *ts = kn_train_step_new(loss_fn, &ctx, opt[1], NULL);
    KT_NOTNULL(ts);
    kn_manual_seed(8);
    for (int step = 0; step < 20; step++) {
        kn_scope inner = kn_scope_begin();
        int64_t B = step == 10 ? 5 : batch;
        kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){B, 1, 28, 28});
        kn_tensor *y = kn_cast(kn_mul_scalar(kn_rand(KN_F32, 1, &B), 9.99), KN_I64);
        /* eager */
        kn_tensor *l = kn_cross_entropy(kn_module_forward(m[0], x), y, NULL);
        KT_OK(kn_optimizer_zero_grad(opt[0], true));
        KT_OK(kn_backward(l, NULL));
        KT_OK(kn_optimizer_step(opt[0]));
        double le = kn_item(l), lg = -1;
        kn_tensor *in[2] = {x, y};
        KT_OK(kn_train_step_run(ts, in, 2, &lg));
        if (le != lg) KT_FAIL("step %d: eager loss %.9g, graph loss %.9g", step, le, lg);
        kn_scope_end(inner);
    }
    kn_named_tensor p0[16], p1[16];
    int n = kn_module_parameters(m[0], p0, 16);
    KT_EQ_INT(n, kn_module_parameters(m[1], p1, 16));
    for (int i = 0; i < n; i++)
        if (!same_bits(p0[i].tensor, p1[i].tensor)) KT_FAIL("parameter %s differs", p0[i].name);
    KT_EQ_INT(20, kn_optimizer_steps(opt[1]));
    {
        /* a compiled training step allocates nothing once traced */
        int64_t B = batch;
        kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){B, 1, 28, 28});
        kn_tensor *y = kn_cast(kn_mul_scalar(kn_rand(KN_F32, 1, &B), 9.99), KN_I64);
        kn_tensor *in[2] = {x, y};
        double l;
        KT_OK(kn_train_step_run(ts, in, 2, &l));
        uint64_t before = kn__alloc_count();
        for (int r = 0; r < 3; r++)
            KT_OK(kn_train_step_run(ts, in, 2, &l));
        KT_EQ_INT(0, kn__alloc_count() - before);
    }
    kn_graph_stats st;
    KT_OK(kn_graph_stats_get(kn_train_step_graph(ts), &st));
    KT_TRUE(st.fused_groups > 0);
    {
        /* the weight-gradient GEMMs were fused into their updates */
        char buf[8192] = {0};
        FILE *f = fmemopen(buf, sizeof buf - 1, "w");
        KT_OK(kn_graph_print(kn_train_step_graph(ts), f, false, batch));
        fclose(f);
        /* gradients of 1 MiB or more are applied block by block */
        KT_EQ_INT(big_grad, strstr(buf, "matmul_update") != NULL);
        static char plan[1 << 16];
        plan_text(kn_train_step_graph(ts), batch, plan, sizeof plan);
        if (lanes) KT_TRUE(strstr(plan, "two lanes") != NULL);
    }
    kn_train_step_free(ts);
    for (int k = 0; k < 2; k++) {
        kn_optimizer_free(opt[k]);
        kn_module_free(m[k]);
    }
    kn_scope_end(s);
}

static void train_both(kn_module *(*make)(void), bool adam, bool big_grad) {
    train_both_b(make, adam, big_grad, 16, false);
}

static void test_train_step_mlp_sgd(void) {
    train_both(mlp, false, false);
}
/* LeNet at batch 64: the backward pass runs weight and input gradients side by side (interop),
 * with the batch-in-lanes convolution kernels; the same bits as eager, also on one thread (the
 * windows then run their lanes one after the other) */
static void test_train_step_lenet_b64_lanes(void) {
    train_both_b(lenet, false, false, 64, true);
    int prev = kn_get_num_threads();
    kn_set_num_threads(1);
    train_both_b(lenet, true, false, 64, true);
    kn_set_num_threads(prev);
}
static void test_train_step_lenet_sgd(void) {
    train_both(lenet, false, false);
}
/* mlp_full (kt_models.h): its first layer's gradient GEMM runs in several row blocks */
static void test_train_step_mlp_full_adam(void) {
    train_both(mlp_full, true, true);
}
static void test_train_step_mlp_adam(void) {
    train_both(mlp, true, false);
}
static void test_train_step_lenet_adam(void) {
    train_both(lenet, true, false);
}

/* debugging aid kept as a test: loss + gradients (no update) replayed equal eager kn_grad */
typedef struct {
    kn_module *m;
    kn_tensor **params;
    int np;
} gradctx;
static int grad_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    gradctx *c = user;
    kn_tensor *l = kn_cross_entropy(kn_module_forward(c->m, in[0]), in[1], NULL);
    out[0] = l;
    kn_status st = kn_grad(&l, 1, NULL, c->params, c->np, false, out + 1);
    return st ? st : 1 + c->np;
}
static void test_gradient_graph(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(9);
    kn_module *m = lenet();
    kn_named_tensor ps[16];
    int np = kn_module_parameters(m, ps, 16);
    kn_tensor *params[16];
    for (int i = 0; i < np; i++)
        params[i] = ps[i].tensor;
    gradctx c = {m, params, np};
    int64_t B = 8;
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){B, 1, 28, 28});
    kn_tensor *y = kn_cast(kn_mul_scalar(kn_rand(KN_F32, 1, &B), 9.99), KN_I64);
    kn_tensor *in[2] = {x, y};
    kn_graph *g = kn_trace(grad_fn, &c, in, 2, &(kn_trace_opts){.static_batch = true});
    KT_NOTNULL(g);
    for (int r = 0; r < 3; r++) {
        kn_tensor *x2 = kn_randn(KN_F32, 4, (int64_t[]){B, 1, 28, 28});
        kn_tensor *in2[2] = {x2, y}, *e[17], *got[17];
        KT_EQ_INT(1 + np, grad_fn(&c, in2, 2, e, 17));
        KT_EQ_INT(1 + np, kn_graph_run(g, in2, 2, got, 17));
        for (int i = 0; i < 1 + np; i++)
            if (!same_bits(got[i], e[i])) KT_FAIL("run %d: output %d differs", r, i);
    }
    kn_graph_free(g);
    kn_module_free(m);
    kn_scope_end(s);
}

/* ---- regressions from review (each failed before its fix) ---- */
static int graph_equals_eager(kn_traced_fn fn, void *u, kn_tensor **in, int nin) {
    kn_graph *g = kn_trace(fn, u, in, nin, NULL);
    if (!g) return 0;
    kn_tensor *got[8] = {0}, *want[8] = {0};
    int ng = kn_graph_run(g, in, nin, got, 8), ne = fn(u, in, nin, want, 8), ok = ng == ne;
    for (int i = 0; ok && i < ne; i++)
        ok = same_bits(kn_contiguous(got[i]), kn_contiguous(want[i]));
    kn_graph_free(g);
    return ok;
}
/* an output that is a view of a buffer a later elementwise node could take over */
static int view_out_fn(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    kn_tensor *t = kn_softmax(in[0], 1);
    out[0] = kn_reshape(t, 3, (int64_t[]){-1, 2, 4});
    out[1] = kn_neg(t);
    return 2;
}
/* an output that took over its input's buffer in place, then read by a later in-place op */
static int inplace_out_fn(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    kn_tensor *a = kn_relu(kn_softmax(in[0], 1));
    out[0] = a;
    out[1] = kn_neg(a);
    return 2;
}
static void test_outputs_never_overwritten(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){2, 8});
    KT_TRUE(graph_equals_eager(view_out_fn, NULL, &x, 1));
    KT_TRUE(graph_equals_eager(inplace_out_fn, NULL, &x, 1));
    kn_scope_end(s);
}

/* in-place calls on traced tensors cannot be recorded: the trace is refused */
static int inplace_call_fn(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    kn_tensor *y = kn_exp(in[0]);
    kn_add_(y, in[0], 1.0);
    out[0] = y;
    return 1;
}
/* unnamed captured tensors are weights: changing them later shows in the graph */
static int capture_fn(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    kn_tensor **w = u;
    out[0] = kn_add(kn_mul(in[0], w[0]), kn_exp(w[1]));
    return 1;
}
/* a reshaped weight whose dim 0 happens to equal the example batch */
static int reshape_weight_fn(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    out[0] = kn_linear(in[0], kn_reshape(u, 2, (int64_t[]){4, 3}), NULL);
    return 1;
}
static void test_trace_edge_cases(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){4, 3});
    KT_ERR(KN_EUNSUPPORTED, kn_trace(inplace_call_fn, NULL, &x, 1, NULL), "in place");
    kn_tensor *w[2] = {kn_ones(KN_F32, 1, (int64_t[]){3}), kn_zeros(KN_F32, 1, (int64_t[]){3})};
    kn_graph *g = kn_trace(capture_fn, w, &x, 1, NULL);
    KT_NOTNULL(g);
    KT_OK(kn_graph_compile(g, NULL));
    kn_fill_(w[0], 3);
    kn_fill_(w[1], 1);
    kn_tensor *y = NULL, *want[1];
    KT_EQ_INT(1, kn_graph_run(g, &x, 1, &y, 1));
    capture_fn(w, &x, 1, want, 1);
    KT_TRUE(same_bits(y, want[0]));
    kn_graph_free(g);
    kn_tensor *W = kn_randn(KN_F32, 3, (int64_t[]){4, 3, 1});
    g = kn_trace(reshape_weight_fn, W, &x, 1, NULL); /* batch 4 == W's dim 0 */
    KT_NOTNULL(g);
    kn_tensor *x7 = kn_randn(KN_F32, 2, (int64_t[]){7, 3});
    KT_EQ_INT(1, kn_graph_run(g, &x7, 1, &y, 1));
    reshape_weight_fn(W, &x7, 1, want, 1);
    KT_TRUE(same_bits(y, want[0]));
    kn_graph_free(g);
    kn_scope_end(s);
}

/* W = P @ Q: P's gradient GEMM reads Q, which its own update changes in place */
typedef struct {
    kn_tensor *P, *Q;
} lowrank;
static int lowrank_loss(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    lowrank *c = u;
    out[0] = kn_sum(kn_mul(in[0], kn_matmul(c->P, c->Q)), NULL, 0, false);
    return 1;
}
/* a state reset by load_state (a checkpoint from before the first step) between steps */
static int lsq_loss(void *u, kn_tensor *const *in, int nin, kn_tensor **out, int mo) {
    out[0] = kn_mean(kn_square(kn_matmul(in[0], u)), NULL, 0, false);
    return 1;
}
static void test_train_step_edge_cases(void) {
    kn_scope s = kn_scope_begin();
    lowrank c[2];
    kn_optimizer *o[2];
    for (int k = 0; k < 2; k++) {
        kn_manual_seed(3);
        c[k].P = kn_mul_scalar(kn_randn(KN_F32, 2, (int64_t[]){512, 512}), 0.05);
        c[k].Q = kn_mul_scalar(kn_randn(KN_F32, 2, (int64_t[]){512, 512}), 0.05);
        kn_tensor_set_requires_grad(c[k].P, true);
        kn_tensor_set_requires_grad(c[k].Q, true);
        kn_tensor *ps[2] = {c[k].P, c[k].Q};
        o[k] = kn_sgd_new(ps, 2, &(kn_sgd_opts){.lr = 0.01});
    }
    kn_train_step *ts = kn_train_step_new(lowrank_loss, &c[1], o[1], NULL);
    for (int step = 0; step < 2; step++) {
        kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){512, 512}), *l;
        lowrank_loss(&c[0], &x, 1, &l, 1);
        KT_OK(kn_optimizer_zero_grad(o[0], true));
        KT_OK(kn_backward(l, NULL));
        KT_OK(kn_optimizer_step(o[0]));
        double lg;
        KT_OK(kn_train_step_run(ts, &x, 1, &lg));
    }
    KT_TRUE(same_bits(c[0].P, c[1].P));
    KT_TRUE(same_bits(c[0].Q, c[1].Q));
    kn_train_step_free(ts);
    kn_optimizer_free(o[0]);
    kn_optimizer_free(o[1]);
    kn_tensor *W[2];
    kn_optimizer *a[2];
    for (int k = 0; k < 2; k++) {
        kn_manual_seed(3);
        W[k] = kn_randn(KN_F32, 2, (int64_t[]){8, 4});
        kn_tensor_set_requires_grad(W[k], true);
        a[k] = kn_adam_new(&W[k], 1, &(kn_adam_opts){.lr = 0.01});
    }
    ts = kn_train_step_new(lsq_loss, W[1], a[1], NULL);
    for (int step = 0; step < 4; step++) {
        if (step == 2) {
            KT_OK(kn_optimizer_load_state(a[0], NULL, 0));
            KT_OK(kn_optimizer_load_state(a[1], NULL, 0));
        }
        kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){16, 8}), *l;
        lsq_loss(W[0], &x, 1, &l, 1);
        KT_OK(kn_optimizer_zero_grad(a[0], true));
        KT_OK(kn_backward(l, NULL));
        KT_OK(kn_optimizer_step(a[0]));
        double lg;
        KT_OK(kn_train_step_run(ts, &x, 1, &lg));
        if (!same_bits(W[0], W[1])) KT_FAIL("step %d: parameters differ", step);
    }
    kn_train_step_free(ts);
    kn_optimizer_free(a[0]);
    kn_optimizer_free(a[1]);
    kn_scope_end(s);
}

int main(void) {
    KT_RUN(test_outputs_never_overwritten);
    KT_RUN(test_trace_edge_cases);
    KT_RUN(test_train_step_edge_cases);
    KT_RUN(test_gradient_graph);
    KT_RUN(test_train_step_mlp_sgd);
    KT_RUN(test_train_step_lenet_sgd);
    KT_RUN(test_train_step_mlp_adam);
    KT_RUN(test_train_step_mlp_full_adam);
    KT_RUN(test_train_step_lenet_adam);
    KT_RUN(test_train_step_lenet_b64_lanes);
    KT_RUN(test_interop_windows);
    KT_RUN(test_mlp_bit_exact);
    KT_RUN(test_lenet_bit_exact);
    KT_RUN(test_fused_chain_bit_exact);
    KT_RUN(test_no_allocation_per_run);
    KT_RUN(test_trace_check_catches_branch);
    KT_RUN(test_trace_check_catches_batch_constant);
    KT_RUN(test_conv_bn_fold);
    KT_RUN(test_prepack);
    KT_RUN(test_prepack_conv);
    KT_RUN(test_residual_fusion);
    KT_RUN(test_bad_inputs);
    KT_RUN(test_plan_cache_bounded);
    KT_RUN(test_profile);
    return kt_finish();
}
