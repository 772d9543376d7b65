/*
 * test_nn.c - the module system (src/nn/): PyTorch names and order for nested models (MLP,
 * LeNet-5, a user-defined net), state_dict order, parameter counts, default initialisation
 * bounds and statistics, kaiming/xavier formulas, train/eval for dropout and batch norm
 * (running stats, num_batches_tracked), freezing, a user-defined residual block, forward shapes
 * of every built-in layer, error messages with module paths, PyTorch repr strings, and memory
 * (scopes, freeing, kn_live_tensors back to its start).
 */
#include "kn_test.h"

#include "nn/nn_impl.h"

/* ---- helpers ---- */

static double *read_f64(kn_tensor *t, int64_t *n) {
    *n = kn_tensor_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(*n ? *n : 1));
    kn_tensor_read(t, KN_F64, v, sizeof(double) * (size_t)*n);
    return v;
}

typedef struct stats {
    double mean, var, min, max;
} stats;
static stats stats_of(kn_tensor *t) {
    int64_t n;
    double *v = read_f64(t, &n);
    stats s = {0, 0, INFINITY, -INFINITY};
    for (int64_t i = 0; i < n; i++) {
        s.mean += v[i];
        if (v[i] < s.min) s.min = v[i];
        if (v[i] > s.max) s.max = v[i];
    }
    s.mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        s.var += (v[i] - s.mean) * (v[i] - s.mean);
    s.var /= (double)(n > 1 ? n - 1 : 1);
    free(v);
    return s;
}

static bool shape_is(kn_tensor *t, int nd, const int64_t *shape) {
    if (!t || kn_tensor_ndim(t) != nd) return false;
    for (int i = 0; i < nd; i++)
        if (kn_tensor_shape(t)[i] != shape[i]) return false;
    return true;
}

/* repr as a malloc'd string */
static char *repr(kn_module *m) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (kn_module_print(m, f) != KN_OK) fprintf(f, "<print failed: %s>", kn_last_error());
    fclose(f);
    return buf;
}
#define KT_REPR(m, expected)                                                                       \
    do {                                                                                           \
        char *kt_r = repr(m);                                                                      \
        int kt_ok = !strcmp(kt_r, expected);                                                       \
        if (!kt_ok) fprintf(stderr, "  got:\n%s  expected:\n%s", kt_r, expected);                  \
        free(kt_r);                                                                                \
        if (!kt_ok) KT_FAIL("repr differs");                                                       \
    } while (0)

/* Compares the enumerated names with a NULL-terminated list. */
static int names_are(const kn_named_tensor *v, int n, const char *const *expected) {
    int k = 0;
    for (; expected[k]; k++)
        if (k >= n || strcmp(v[k].name, expected[k])) {
            fprintf(stderr, "  name %d: got '%s', expected '%s'\n", k, k < n ? v[k].name : "-",
                    expected[k]);
            return 0;
        }
    if (k != n) fprintf(stderr, "  %d names, expected %d\n", n, k);
    return k == n;
}

static kn_module *mlp(void) {
    kn_module *mods[] = {kn_nn_linear(784, 512, true), kn_nn_relu(), kn_nn_linear(512, 256, true),
                         kn_nn_relu(), kn_nn_linear(256, 10, true)};
    return kn_nn_sequential(mods, 5);
}

static kn_module *lenet(void) {
    kn_pool_opts p2 = {.kernel = {2, 2}};
    kn_module *mods[] = {kn_nn_conv2d(1, 6, 5, 5, NULL, true),
                         kn_nn_relu(),
                         kn_nn_maxpool2d(&p2),
                         kn_nn_conv2d(6, 16, 5, 5, NULL, true),
                         kn_nn_relu(),
                         kn_nn_maxpool2d(&p2),
                         kn_nn_flatten(1, -1),
                         kn_nn_linear(256, 120, true),
                         kn_nn_relu(),
                         kn_nn_linear(120, 84, true),
                         kn_nn_relu(),
                         kn_nn_linear(84, 10, true)};
    return kn_nn_sequential(mods, 12);
}

/* ================================ naming and order ================================ */

static void test_mlp_names_and_count(void) {
    kn_module *m = mlp();
    KT_NOTNULL(m);
    kn_named_tensor p[16];
    int n = kn_module_parameters(m, p, 16);
    static const char *const want[] = {"0.weight", "0.bias", "2.weight", "2.bias",
                                       "4.weight", "4.bias", NULL};
    KT_TRUE(names_are(p, n, want));
    int64_t w0[2] = {512, 784}, b4[1] = {10};
    KT_TRUE(shape_is(p[0].tensor, 2, w0));
    KT_TRUE(shape_is(p[5].tensor, 1, b4));
    for (int i = 0; i < n; i++) {
        KT_TRUE(kn_tensor_is_leaf(p[i].tensor));
        KT_TRUE(kn_tensor_requires_grad(p[i].tensor));
        KT_EQ_INT(KN_F32, kn_tensor_dtype(p[i].tensor));
    }
    KT_EQ_INT(784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10, kn_module_num_params(m, false));
    KT_EQ_INT(535818, kn_module_num_params(m, true));
    KT_EQ_INT(6, kn_module_parameters(m, NULL, 0)); /* sizing call */
    KT_EQ_INT(0, kn_module_buffers(m, NULL, 0));
    /* partial output: writes only max entries, returns the total */
    kn_named_tensor two[2];
    KT_EQ_INT(6, kn_module_parameters(m, two, 2));
    KT_TRUE(!strcmp(two[1].name, "0.bias"));
    /* names stay valid across calls and are reused */
    const char *first = p[0].name;
    kn_module_parameters(m, p, 16);
    KT_TRUE(first == p[0].name);
    KT_TRUE(!strcmp(kn_module_type(m), "Sequential"));
    KT_TRUE(!strcmp(kn_module_type(kn_module_child(m, "2")), "Linear"));
    KT_TRUE(kn_module_param(kn_module_child(m, "4"), "bias") == p[5].tensor);
    KT_TRUE(kn_module_param(m, "4.bias") == p[5].tensor); /* dotted paths work too */
    kn_module_free(m);
}

static void test_lenet_names_and_forward(void) {
    kn_module *m = lenet();
    KT_NOTNULL(m);
    kn_named_tensor p[16];
    int n = kn_module_parameters(m, p, 16);
    static const char *const want[] = {"0.weight",  "0.bias",  "3.weight", "3.bias",
                                       "7.weight",  "7.bias",  "9.weight", "9.bias",
                                       "11.weight", "11.bias", NULL};
    KT_TRUE(names_are(p, n, want));
    int64_t c1[4] = {6, 1, 5, 5}, c2[4] = {16, 6, 5, 5}, f1[2] = {120, 256};
    KT_TRUE(shape_is(p[0].tensor, 4, c1));
    KT_TRUE(shape_is(p[2].tensor, 4, c2));
    KT_TRUE(shape_is(p[4].tensor, 2, f1));
    KT_EQ_INT(156 + 2416 + 30840 + 10164 + 850, kn_module_num_params(m, false));
    kn_scope sc = kn_scope_begin();
    kn_manual_seed(1);
    int64_t xs[4] = {2, 1, 28, 28}, ys[2] = {2, 10};
    kn_tensor *y = kn_module_forward(m, kn_randn(KN_F32, 4, xs));
    KT_TRUE(shape_is(y, 2, ys));
    kn_tensor *loss = kn_mean(kn_square(y), NULL, 0, false);
    KT_OK(kn_backward(loss, NULL));
    for (int i = 0; i < n; i++) {
        kn_tensor *g = kn_tensor_grad(p[i].tensor);
        KT_NOTNULL(g);
        KT_TRUE(shape_is(g, kn_tensor_ndim(p[i].tensor), kn_tensor_shape(p[i].tensor)));
    }
    kn_scope_end(sc);
    kn_module_free(m);
}

/* a user-defined container: forward = classifier(features(x)) */
static kn_tensor *net_forward(kn_module *m, kn_tensor *x) {
    kn_scope sc = kn_scope_begin();
    kn_tensor *h = kn_module_forward(kn_module_child(m, "features"), x);
    kn_tensor *y = kn_keep(kn_module_forward(kn_module_child(m, "classifier"), h));
    kn_scope_end(sc);
    return y;
}

static kn_module *nested_net(void) {
    kn_pool_opts p2 = {.kernel = {2, 2}};
    kn_module *f[] = {kn_nn_conv2d(3, 4, 3, 3, NULL, true), kn_nn_batchnorm2d(4, 1e-5, 0.1),
                      kn_nn_relu(), kn_nn_maxpool2d(&p2)};
    kn_module *c[] = {kn_nn_flatten(1, -1), kn_nn_linear(16, 5, true)};
    kn_module *fs = kn_nn_sequential(f, 4), *cs = kn_nn_sequential(c, 2);
    kn_module *net = kn_module_new("Net", net_forward, NULL, NULL);
    kn_status s1 = kn_module_add_child(net, "features", fs); /* frees fs on failure */
    kn_status s2 = kn_module_add_child(net, "classifier", cs);
    if (s1 || s2) {
        kn_module_free(net);
        return NULL;
    }
    return net;
}

static void test_nested_names(void) {
    kn_module *net = nested_net();
    KT_NOTNULL(net);
    kn_named_tensor v[16];
    int n = kn_module_parameters(net, v, 16);
    static const char *const params[] = {"features.0.weight",
                                         "features.0.bias",
                                         "features.1.weight",
                                         "features.1.bias",
                                         "classifier.1.weight",
                                         "classifier.1.bias",
                                         NULL};
    KT_TRUE(names_are(v, n, params));
    n = kn_module_buffers(net, v, 16);
    static const char *const bufs[] = {"features.1.running_mean", "features.1.running_var",
                                       "features.1.num_batches_tracked", NULL};
    KT_TRUE(names_are(v, n, bufs));
    n = kn_module_state_dict(net, v, 16);
    static const char *const sd[] = {"features.0.weight",
                                     "features.0.bias",
                                     "features.1.weight",
                                     "features.1.bias",
                                     "features.1.running_mean",
                                     "features.1.running_var",
                                     "features.1.num_batches_tracked",
                                     "classifier.1.weight",
                                     "classifier.1.bias",
                                     NULL};
    KT_TRUE(names_are(v, n, sd));
    /* a subtree enumerates with names relative to itself, like model.features.named_...() */
    kn_module *feat = kn_module_child(net, "features");
    n = kn_module_parameters(feat, v, 16);
    static const char *const fp[] = {"0.weight", "0.bias", "1.weight", "1.bias", NULL};
    KT_TRUE(names_are(v, n, fp));
    KT_TRUE(kn_module_child(net, "features.1") == kn_module_child(feat, "1"));
    KT_TRUE(!strcmp(kn_module_type(kn_module_child(net, "features.1")), "BatchNorm2d"));
    KT_NOTNULL(kn_module_buffer(net, "features.1.running_var"));
    KT_ERR(KN_EINVAL, kn_module_child(net, "features.9"), "no child 'features.9'");
    KT_ERR(KN_EINVAL, kn_module_param(net, "features.0.nope"), "no parameter");
    KT_ERR(KN_EINVAL, kn_module_buffer(net, "weight"), "no buffer");
    /* forward through the user container */
    kn_scope sc = kn_scope_begin();
    int64_t xs[4] = {2, 3, 6, 6}, ys[2] = {2, 5};
    kn_tensor *y = kn_module_forward(net, kn_randn(KN_F32, 4, xs));
    KT_TRUE(shape_is(y, 2, ys));
    kn_scope_end(sc);
    kn_module_free(net);
}

static void test_state_dict_order(void) {
    /* PyTorch: Sequential(Conv2d, BatchNorm2d, ReLU, Linear).state_dict().keys() */
    kn_module *mods[] = {kn_nn_conv2d(1, 2, 3, 3, NULL, true), kn_nn_batchnorm2d(2, 1e-5, 0.1),
                         kn_nn_relu(), kn_nn_linear(4, 3, true)};
    kn_module *m = kn_nn_sequential(mods, 4);
    KT_NOTNULL(m);
    kn_named_tensor v[16];
    int n = kn_module_state_dict(m, v, 16);
    static const char *const want[] = {"0.weight",
                                       "0.bias",
                                       "1.weight",
                                       "1.bias",
                                       "1.running_mean",
                                       "1.running_var",
                                       "1.num_batches_tracked",
                                       "3.weight",
                                       "3.bias",
                                       NULL};
    KT_TRUE(names_are(v, n, want));
    KT_EQ_INT(KN_I64, kn_tensor_dtype(v[6].tensor));
    KT_EQ_INT(0, kn_tensor_ndim(v[6].tensor));
    KT_EQ_INT(0, (long long)kn_item(v[6].tensor));
    KT_TRUE(!kn_tensor_requires_grad(v[4].tensor));
    kn_module_free(m);
}

/* weight tying: one tensor registered twice appears once in parameters(), twice in state_dict */
static void test_shared_params(void) {
    kn_module *m = kn_module_new("Tied", NULL, NULL, NULL);
    int64_t s[2] = {3, 4};
    kn_tensor *w = kn_zeros(KN_F32, 2, s);
    KT_OK(kn_module_add_param(m, "a", w));
    KT_OK(kn_module_add_param(m, "b", kn_tensor_retain(w)));
    kn_named_tensor v[4];
    KT_EQ_INT(1, kn_module_parameters(m, v, 4));
    KT_EQ_INT(2, kn_module_state_dict(m, v, 4));
    KT_EQ_INT(12, kn_module_num_params(m, false));
    kn_module_free(m);
}

/* ================================ initialisation ================================ */

static void check_uniform(kn_tensor *t, double bound, const char *what) {
    stats s = stats_of(t);
    int64_t n = kn_tensor_numel(t);
    if (!(s.min >= -bound && s.max <= bound))
        KT_FAIL("%s: values [%g, %g] outside +-%g", what, s.min, s.max, bound);
    double tol_mean = 5.0 * bound / sqrt(3.0 * (double)n) + 1e-12;
    if (fabs(s.mean) > tol_mean) KT_FAIL("%s: mean %g (tol %g)", what, s.mean, tol_mean);
    double var = bound * bound / 3.0;
    if (n >= 1000 && fabs(s.var - var) > 0.06 * var)
        KT_FAIL("%s: variance %g, expected %g", what, s.var, var);
    if (n >= 1000 && (s.max < 0.98 * bound || s.min > -0.98 * bound))
        KT_FAIL("%s: range [%g, %g] does not fill +-%g", what, s.min, s.max, bound);
}
#define CHECK_UNIFORM(t, bound, what)                                                              \
    do {                                                                                           \
        check_uniform(t, bound, what);                                                             \
        if (kt_cur_failed) return;                                                                 \
    } while (0)

static void test_default_init_linear_conv(void) {
    kn_manual_seed(123);
    kn_module *m = mlp();
    KT_NOTNULL(m);
    int64_t fans[3] = {784, 512, 256};
    const char *idx[3] = {"0", "2", "4"};
    for (int i = 0; i < 3; i++) {
        kn_module *l = kn_module_child(m, idx[i]);
        double bound = 1.0 / sqrt((double)fans[i]);
        CHECK_UNIFORM(kn_module_param(l, "weight"), bound, "linear weight");
        CHECK_UNIFORM(kn_module_param(l, "bias"), bound, "linear bias");
    }
    kn_module_free(m);

    kn_conv_opts g2 = {.groups = 2};
    kn_module *c = kn_nn_conv2d(8, 64, 3, 3, &g2, true); /* weight (64, 4, 3, 3): fan_in 36 */
    KT_NOTNULL(c);
    CHECK_UNIFORM(kn_module_param(c, "weight"), 1.0 / 6.0, "conv weight");
    CHECK_UNIFORM(kn_module_param(c, "bias"), 1.0 / 6.0, "conv bias");
    kn_module_free(c);

    c = kn_nn_conv1d(5, 40, 7, NULL, true); /* fan_in 35 */
    KT_NOTNULL(c);
    CHECK_UNIFORM(kn_module_param(c, "weight"), 1.0 / sqrt(35.0), "conv1d weight");
    kn_module_free(c);

    /* ConvTranspose2d: weight (in, out/groups, kh, kw) = (64, 4, 3, 3): fan_in = 4*9 = 36 */
    kn_module *t = kn_nn_conv_transpose2d(64, 8, 3, 3, &g2, NULL, true);
    KT_NOTNULL(t);
    int64_t ws[4] = {64, 4, 3, 3};
    KT_TRUE(shape_is(kn_module_param(t, "weight"), 4, ws));
    CHECK_UNIFORM(kn_module_param(t, "weight"), 1.0 / 6.0, "conv_transpose weight");
    CHECK_UNIFORM(kn_module_param(t, "bias"), 1.0 / 6.0, "conv_transpose bias");
    kn_module_free(t);

    /* bias=false: no bias parameter */
    kn_module *nb = kn_nn_linear(3, 2, false);
    KT_EQ_INT(1, kn_module_parameters(nb, NULL, 0));
    KT_EQ_INT(6, kn_module_num_params(nb, false));
    kn_module_free(nb);
}

static void test_default_init_norm_embedding(void) {
    kn_module *bn = kn_nn_batchnorm2d(5, 1e-5, 0.1);
    KT_NOTNULL(bn);
    stats w = stats_of(kn_module_param(bn, "weight")), b = stats_of(kn_module_param(bn, "bias"));
    stats rm = stats_of(kn_module_buffer(bn, "running_mean"));
    stats rv = stats_of(kn_module_buffer(bn, "running_var"));
    KT_TRUE(w.min == 1 && w.max == 1 && b.min == 0 && b.max == 0);
    KT_TRUE(rm.min == 0 && rm.max == 0 && rv.min == 1 && rv.max == 1);
    kn_module_free(bn);

    int64_t ns[2] = {3, 4};
    kn_module *ln = kn_nn_layernorm(2, ns, 1e-5, true);
    KT_TRUE(shape_is(kn_module_param(ln, "weight"), 2, ns));
    KT_TRUE(stats_of(kn_module_param(ln, "weight")).min == 1);
    KT_TRUE(stats_of(kn_module_param(ln, "bias")).max == 0);
    kn_module_free(ln);
    ln = kn_nn_layernorm(2, ns, 1e-5, false);
    KT_EQ_INT(0, kn_module_parameters(ln, NULL, 0));
    kn_module_free(ln);

    kn_module *gn = kn_nn_groupnorm(2, 6, 1e-5, true);
    KT_EQ_INT(12, kn_module_num_params(gn, false));
    KT_TRUE(stats_of(kn_module_param(gn, "weight")).min == 1);
    kn_module_free(gn);

    kn_manual_seed(7);
    kn_module *e = kn_nn_embedding(1000, 64);
    KT_NOTNULL(e);
    stats s = stats_of(kn_module_param(e, "weight"));
    KT_NEAR(0.0, s.mean, 0.02);
    KT_NEAR(1.0, sqrt(s.var), 0.02);
    kn_module_free(e);
}

static void test_init_formulas(void) {
    int64_t big[2] = {1000, 500}, conv[4] = {8, 4, 3, 3};
    kn_tensor *t = kn_empty(KN_F32, 2, big);
    int64_t fi = 0, fo = 0;
    KT_OK(kn_init_fans(t, &fi, &fo));
    KT_EQ_INT(500, fi);
    KT_EQ_INT(1000, fo);
    kn_tensor *c = kn_empty(KN_F32, 4, conv);
    KT_OK(kn_init_fans(c, &fi, &fo));
    KT_EQ_INT(36, fi);
    KT_EQ_INT(72, fo);
    kn_manual_seed(3);
    struct {
        int kind; /* 0 kaiming_uniform 1 kaiming_normal 2 xavier_uniform 3 xavier_normal */
        double a;
        kn_fan_mode mode;
        const char *nl;
        double std;
    } cases[] = {
        {0, 0, KN_FAN_IN, "relu", sqrt(2.0) / sqrt(500.0)},
        {1, 0, KN_FAN_OUT, "relu", sqrt(2.0) / sqrt(1000.0)},
        {0, sqrt(5.0), KN_FAN_IN, "leaky_relu", sqrt(1.0 / 3.0) / sqrt(500.0)},
        {1, 0.2, KN_FAN_IN, "leaky_relu", sqrt(2.0 / 1.04) / sqrt(500.0)},
        {1, 0, KN_FAN_IN, "tanh", 5.0 / 3.0 / sqrt(500.0)},
        {0, 0, KN_FAN_OUT, "linear", 1.0 / sqrt(1000.0)},
        {1, 0, KN_FAN_IN, NULL, sqrt(2.0) / sqrt(500.0)}, /* default leaky_relu with a = 0 */
        {2, 1.0, 0, NULL, sqrt(2.0 / 1500.0)},
        {2, 2.0, 0, NULL, 2.0 * sqrt(2.0 / 1500.0)},
        {3, 1.0, 0, NULL, sqrt(2.0 / 1500.0)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kn_status s;
        switch (cases[i].kind) {
        case 0: s = kn_init_kaiming_uniform_(t, cases[i].a, cases[i].mode, cases[i].nl); break;
        case 1: s = kn_init_kaiming_normal_(t, cases[i].a, cases[i].mode, cases[i].nl); break;
        case 2: s = kn_init_xavier_uniform_(t, cases[i].a); break;
        default: s = kn_init_xavier_normal_(t, cases[i].a); break;
        }
        KT_OK(s);
        stats st = stats_of(t);
        double sd = sqrt(st.var);
        if (fabs(sd - cases[i].std) > 0.05 * cases[i].std)
            KT_FAIL("case %zu: std %g, expected %g", i, sd, cases[i].std);
        if (fabs(st.mean) > 0.05 * cases[i].std) KT_FAIL("case %zu: mean %g", i, st.mean);
        if (cases[i].kind == 0 || cases[i].kind == 2) { /* uniform: bounded by sqrt(3) std */
            double bound = sqrt(3.0) * cases[i].std;
            if (st.max > bound || st.min < -bound || st.max < 0.99 * bound)
                KT_FAIL("case %zu: range [%g, %g] vs bound %g", i, st.min, st.max, bound);
        }
    }
    /* uniform_ / normal_ draw like kn_rand / kn_randn from the same seed */
    kn_manual_seed(11);
    kn_tensor *r = kn_rand(KN_F32, 2, big);
    kn_manual_seed(11);
    KT_OK(kn_init_uniform_(t, 0.0, 1.0));
    KT_CLOSE(t, r, 0, 0);
    kn_tensor_free(r);
    kn_manual_seed(12);
    r = kn_randn(KN_F32, 2, big);
    kn_manual_seed(12);
    KT_OK(kn_init_normal_(t, 0.0, 1.0));
    KT_CLOSE(t, r, 0, 0);
    kn_tensor_free(r);
    KT_OK(kn_init_uniform_(t, -2.0, 3.0));
    stats su = stats_of(t);
    KT_TRUE(su.min >= -2.0 && su.max <= 3.0);
    KT_NEAR(0.5, su.mean, 0.02);
    KT_NEAR(25.0 / 12.0, su.var, 0.05);
    KT_OK(kn_init_normal_(t, 3.0, 0.5));
    stats sn = stats_of(t);
    KT_NEAR(3.0, sn.mean, 0.01);
    KT_NEAR(0.5, sqrt(sn.var), 0.01);
    KT_OK(kn_init_constant_(t, 2.5));
    KT_TRUE(stats_of(t).min == 2.5 && stats_of(t).max == 2.5);
    KT_OK(kn_init_zeros_(c));
    KT_TRUE(stats_of(c).max == 0);
    KT_OK(kn_init_ones_(c));
    KT_TRUE(stats_of(c).min == 1);
    /* a non-contiguous view is filled through its strides */
    kn_tensor *tv = kn_transpose(c, 0, 1);
    KT_OK(kn_init_uniform_(tv, 5.0, 6.0));
    KT_TRUE(stats_of(c).min >= 5.0 && stats_of(c).max <= 6.0);
    kn_tensor_free(tv);
    /* f64 and parameters that require grad are fine */
    kn_tensor *d = kn_zeros(KN_F64, 2, conv);
    kn_tensor_set_requires_grad(d, true);
    KT_OK(kn_init_xavier_uniform_(d, 1.0));
    KT_TRUE(stats_of(d).max > 0);
    kn_tensor_free(d);
    /* zero-element tensors are a no-op, like PyTorch */
    int64_t z[2] = {0, 5};
    kn_tensor *e = kn_empty(KN_F32, 2, z);
    KT_OK(kn_init_kaiming_uniform_(e, 0, KN_FAN_IN, "relu"));
    kn_tensor_free(e);
    /* errors */
    int64_t one[1] = {5};
    kn_tensor *v1 = kn_zeros(KN_F32, 1, one);
    KT_STATUS(KN_EINVAL, kn_init_fans(v1, &fi, &fo));
    KT_TRUE(strstr(kn_last_error(), "fewer than 2 dimensions") != NULL);
    KT_STATUS(KN_EINVAL, kn_init_xavier_uniform_(v1, 1.0));
    KT_STATUS(KN_EINVAL, kn_init_kaiming_normal_(t, 0, KN_FAN_IN, "swish"));
    KT_TRUE(strstr(kn_last_error(), "swish") != NULL);
    KT_STATUS(KN_EINVAL, kn_init_uniform_(t, 1.0, 0.0));
    KT_STATUS(KN_EINVAL, kn_init_normal_(t, 0.0, -1.0));
    kn_tensor *ints = kn_zeros(KN_I64, 1, one);
    KT_STATUS(KN_EDTYPE, kn_init_uniform_(ints, 0, 1));
    KT_OK(kn_init_constant_(ints, 7)); /* fill works on integers */
    KT_EQ_INT(7, (long long)kn_tensor_get(ints, (int64_t[]){2}));
    kn_tensor_free(ints);
    kn_tensor_free(v1);
    kn_tensor_free(t);
    kn_tensor_free(c);
}

/* ================================ train / eval ================================ */

static void test_train_eval_flags(void) {
    kn_module *net = nested_net();
    KT_TRUE(kn_module_is_training(net));
    kn_module_train(net, false);
    KT_TRUE(!kn_module_is_training(net));
    KT_TRUE(!kn_module_is_training(kn_module_child(net, "features.1")));
    kn_module_train(kn_module_child(net, "features"), true);
    KT_TRUE(kn_module_is_training(kn_module_child(net, "features.3")));
    KT_TRUE(!kn_module_is_training(kn_module_child(net, "classifier.0")));
    kn_module_free(net);
}

static void test_dropout_modes(void) {
    kn_module *d = kn_nn_dropout(0.5);
    KT_NOTNULL(d);
    kn_scope sc = kn_scope_begin();
    int64_t s[1] = {10000};
    kn_tensor *x = kn_ones(KN_F32, 1, s);
    kn_manual_seed(5);
    kn_tensor *y = kn_module_forward(d, x);
    int64_t n;
    double *v = read_f64(y, &n);
    int zeros = 0, twos = 0;
    for (int64_t i = 0; i < n; i++) {
        zeros += v[i] == 0.0;
        twos += v[i] == 2.0;
    }
    free(v);
    KT_EQ_INT(n, zeros + twos); /* survivors scaled by 1/(1-p) */
    KT_NEAR(0.5, (double)zeros / (double)n, 0.03);
    kn_module_train(d, false);
    kn_tensor *ye = kn_module_forward(d, x);
    KT_CLOSE(ye, x, 0, 0); /* identity in eval */
    kn_scope_end(sc);
    kn_module_free(d);
}

static void test_batchnorm_modes(void) {
    kn_module *bn = kn_nn_batchnorm2d(2, 1e-5, 0.1);
    KT_NOTNULL(bn);
    kn_tensor *rm = kn_module_buffer(bn, "running_mean");
    kn_tensor *rv = kn_module_buffer(bn, "running_var");
    kn_tensor *nbt = kn_module_buffer(bn, "num_batches_tracked");
    kn_scope sc = kn_scope_begin();
    /* x (2, 2, 1, 2): channel 0 = {1, 2, 3, 4} (mean 2.5, unbiased var 5/3), channel 1 = 10s */
    float xv[8] = {1, 2, 10, 10, 3, 4, 10, 10};
    int64_t xs[4] = {2, 2, 1, 2};
    kn_tensor *x = kn_from_data(KN_F32, 4, xs, xv);
    kn_tensor *y = kn_module_forward(bn, x);
    KT_NOTNULL(y);
    KT_EQ_INT(1, (long long)kn_item(nbt));
    KT_NEAR(0.25, kn_tensor_get(rm, (int64_t[]){0}), 1e-6);
    KT_NEAR(1.0, kn_tensor_get(rm, (int64_t[]){1}), 1e-6);
    KT_NEAR(0.9 + 0.1 * 5.0 / 3.0, kn_tensor_get(rv, (int64_t[]){0}), 1e-6);
    KT_NEAR(0.9, kn_tensor_get(rv, (int64_t[]){1}), 1e-6);
    /* training output uses the batch stats (biased var 1.25) */
    KT_NEAR((1 - 2.5) / sqrt(1.25 + 1e-5), kn_tensor_get(y, (int64_t[]){0, 0, 0, 0}), 1e-5);
    kn_module_forward(bn, x);
    KT_EQ_INT(2, (long long)kn_item(nbt));
    double rm0 = kn_tensor_get(rm, (int64_t[]){0}), rv0 = kn_tensor_get(rv, (int64_t[]){0});
    /* eval: running stats are used and left alone */
    kn_module_train(bn, false);
    kn_tensor *ye = kn_module_forward(bn, x);
    KT_NOTNULL(ye);
    KT_EQ_INT(2, (long long)kn_item(nbt));
    KT_NEAR(rm0, kn_tensor_get(rm, (int64_t[]){0}), 0);
    KT_NEAR(rv0, kn_tensor_get(rv, (int64_t[]){0}), 0);
    KT_NEAR((1 - rm0) / sqrt(rv0 + 1e-5), kn_tensor_get(ye, (int64_t[]){0, 0, 0, 0}), 1e-5);
    kn_scope_end(sc);
    kn_module_free(bn);

    /* BatchNorm1d on (N, C) and (N, C, L) */
    kn_module *b1 = kn_nn_batchnorm1d(3, 1e-5, 0.1);
    sc = kn_scope_begin();
    int64_t s2[2] = {4, 3}, s3[3] = {4, 3, 5};
    KT_TRUE(shape_is(kn_module_forward(b1, kn_randn(KN_F32, 2, s2)), 2, s2));
    KT_TRUE(shape_is(kn_module_forward(b1, kn_randn(KN_F32, 3, s3)), 3, s3));
    KT_EQ_INT(2, (long long)kn_item(kn_module_buffer(b1, "num_batches_tracked")));
    KT_ERR(KN_EINVAL, kn_module_forward(b1, kn_randn(KN_F32, 2, (int64_t[]){1, 3})),
           "more than 1 value per channel");
    KT_EQ_INT(2, (long long)kn_item(kn_module_buffer(b1, "num_batches_tracked")));
    kn_scope_end(sc);
    kn_module_free(b1);
}

/* ================================ freezing ================================ */

static void test_freeze(void) {
    kn_module *m = mlp();
    KT_NOTNULL(m);
    KT_OK(kn_module_freeze(m, true));
    KT_EQ_INT(0, kn_module_num_params(m, true));
    KT_EQ_INT(535818, kn_module_num_params(m, false));
    kn_named_tensor p[8];
    int n = kn_module_parameters(m, p, 8);
    int64_t xs[2] = {3, 784};
    kn_scope sc = kn_scope_begin();
    kn_tensor *x = kn_randn(KN_F32, 2, xs);
    kn_tensor *y = kn_module_forward(m, x);
    KT_TRUE(!kn_tensor_requires_grad(y));
    KT_STATUS(KN_EMISUSE, kn_backward(kn_sum(y, NULL, 0, false), NULL));
    /* freeze only the first layer: its grads stay NULL, the others get grads */
    KT_OK(kn_module_freeze(m, false));
    KT_OK(kn_module_freeze(kn_module_child(m, "0"), true));
    KT_EQ_INT(535818 - 784 * 512 - 512, kn_module_num_params(m, true));
    KT_OK(kn_backward(kn_sum(kn_module_forward(m, x), NULL, 0, false), NULL));
    kn_scope_end(sc);
    for (int i = 0; i < n; i++) {
        bool frozen = i < 2;
        KT_TRUE(frozen == (kn_tensor_grad(p[i].tensor) == NULL));
        KT_TRUE(frozen == !kn_tensor_requires_grad(p[i].tensor));
    }
    KT_STATUS(KN_EINVAL, kn_module_freeze(NULL, true));
    kn_module_free(m);
}

/* ================================ user-defined modules ================================ */

typedef struct resblock {
    kn_module *conv1, *bn1, *conv2; /* borrowed: children own them */
    int calls;
} resblock;

/* y = relu(x + scale * conv2(relu(bn1(conv1(x))))) */
static kn_tensor *resblock_forward(kn_module *m, kn_tensor *x) {
    resblock *r = kn_module_state(m);
    r->calls++;
    kn_scope sc = kn_scope_begin();
    kn_tensor *h = kn_module_forward(r->conv1, x);
    h = kn_relu(kn_module_forward(r->bn1, h));
    h = kn_module_forward(r->conv2, h);
    h = kn_mul(h, kn_module_param(m, "scale"));
    kn_tensor *y = kn_keep(kn_relu(kn_add(x, h)));
    kn_scope_end(sc);
    return y;
}

static kn_module *resblock_new(int64_t ch) {
    resblock *r = calloc(1, sizeof *r);
    kn_module *m = kn_module_new("ResBlock", resblock_forward, r, free);
    if (!m) return NULL;
    kn_conv_opts p1 = {.padding = {1, 1}};
    r->conv1 = kn_nn_conv2d(ch, ch, 3, 3, &p1, false);
    r->bn1 = kn_nn_batchnorm2d(ch, 1e-5, 0.1);
    r->conv2 = kn_nn_conv2d(ch, ch, 3, 3, &p1, true);
    /* constructed inside a scope, like a model built within a training function */
    kn_scope sc = kn_scope_begin();
    kn_status s = kn_module_add_param(m, "scale", kn_full(KN_F32, 1, (int64_t[]){1}, 0.5));
    kn_scope_end(sc);
    if (s || kn_module_add_child(m, "conv1", r->conv1) || kn_module_add_child(m, "bn1", r->bn1) ||
        kn_module_add_child(m, "conv2", r->conv2)) {
        kn_module_free(m);
        return NULL;
    }
    return m;
}

static void test_user_module(void) {
    size_t live0 = kn_live_tensors();
    kn_scope outer = kn_scope_begin(); /* constructors inside a scope: params outlive it */
    kn_module *m = resblock_new(4);
    kn_scope_end(outer);
    KT_NOTNULL(m);
    kn_named_tensor v[16];
    int n = kn_module_parameters(m, v, 16);
    static const char *const want[] = {"scale",        "conv1.weight", "bn1.weight", "bn1.bias",
                                       "conv2.weight", "conv2.bias",   NULL};
    KT_TRUE(names_are(v, n, want));
    KT_TRUE(kn_tensor_requires_grad(kn_module_param(m, "scale")));
    KT_TRUE(kn_tensor_is_leaf(kn_module_param(m, "scale")));
    KT_NEAR(0.5, kn_item(kn_module_param(m, "scale")), 0);
    KT_TRUE(!strcmp(kn_module_type(m), "ResBlock"));
    KT_REPR(m, "ResBlock(\n"
               "  (conv1): Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
               "bias=False)\n"
               "  (bn1): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, "
               "track_running_stats=True)\n"
               "  (conv2): Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
               ")\n");
    kn_scope sc = kn_scope_begin();
    int64_t xs[4] = {2, 4, 5, 5};
    kn_manual_seed(9);
    kn_tensor *x = kn_randn(KN_F32, 4, xs);
    kn_tensor_set_requires_grad(x, true);
    kn_tensor *y = kn_module_forward(m, x);
    KT_TRUE(shape_is(y, 4, xs));
    KT_OK(kn_backward(kn_sum(y, NULL, 0, false), NULL));
    for (int i = 0; i < n; i++)
        KT_NOTNULL(kn_tensor_grad(v[i].tensor));
    KT_NOTNULL(kn_tensor_grad(x));
    /* gradient of scale, by hand: sum over positions where y > 0 of conv2(...) */
    kn_module_train(m, false); /* eval: deterministic, no running-stat change */
    kn_tensor_set_grad(kn_module_param(m, "scale"), NULL);
    resblock *r = kn_module_state(m);
    bool prev = kn_no_grad_begin();
    kn_tensor *h = kn_module_forward(
        r->conv2, kn_relu(kn_module_forward(r->bn1, kn_module_forward(r->conv1, x))));
    kn_tensor *ye = kn_module_forward(m, x);
    kn_no_grad_end(prev);
    kn_tensor *mask = kn_cast(kn_gt(ye, kn_scalar(KN_F32, 0)), KN_F32);
    double expect = kn_item(kn_sum(kn_mul(h, mask), NULL, 0, false));
    KT_OK(kn_backward(kn_sum(kn_module_forward(m, x), NULL, 0, false), NULL));
    double got = kn_item(kn_tensor_grad(kn_module_param(m, "scale")));
    KT_NEAR(expect, got, 1e-3 * (1 + fabs(expect)));
    KT_EQ_INT(3, r->calls);
    kn_scope_end(sc);
    kn_module_free(m); /* frees the state with free() */
    KT_EQ_INT(live0, kn_live_tensors());
}

/* ================================ forward shapes ================================ */

static void test_forward_shapes(void) {
    kn_scope sc = kn_scope_begin();
    kn_manual_seed(2);
    struct {
        kn_module *m;
        int nx;
        int64_t xs[4];
        int ny;
        int64_t ys[4];
    } cases[] = {
        {kn_nn_linear(4, 5, true), 3, {2, 3, 4}, 3, {2, 3, 5}},
        {kn_nn_linear(4, 5, false), 1, {4}, 1, {5}},
        {kn_nn_conv1d(3, 4, 3, NULL, true), 3, {2, 3, 10}, 3, {2, 4, 8}},
        {kn_nn_conv1d(3, 4, 3, &(kn_conv_opts){.stride = {2}, .padding = {1}}, true),
         2,
         {3, 10},
         2,
         {4, 5}},
        {kn_nn_conv2d(3, 8, 3, 3, &(kn_conv_opts){.stride = {2, 2}, .padding = {1, 1}}, true),
         4,
         {2, 3, 9, 9},
         4,
         {2, 8, 5, 5}},
        {kn_nn_conv2d(4, 6, 3, 3, &(kn_conv_opts){.same_padding = true, .groups = 2}, true),
         3,
         {4, 7, 7},
         3,
         {6, 7, 7}},
        {kn_nn_conv2d(2, 2, 3, 3, &(kn_conv_opts){.dilation = {2, 2}}, false),
         4,
         {1, 2, 9, 9},
         4,
         {1, 2, 5, 5}},
        {kn_nn_conv_transpose2d(4, 6, 3, 3, &(kn_conv_opts){.stride = {2, 2}, .padding = {1, 1}},
                                (int64_t[]){1, 1}, true),
         4,
         {1, 4, 5, 5},
         4,
         {1, 6, 10, 10}},
        {kn_nn_batchnorm1d(3, 1e-5, 0.1), 3, {4, 3, 5}, 3, {4, 3, 5}},
        {kn_nn_batchnorm2d(3, 1e-5, 0.1), 4, {2, 3, 4, 4}, 4, {2, 3, 4, 4}},
        {kn_nn_layernorm(2, (int64_t[]){3, 4}, 1e-5, true), 3, {2, 3, 4}, 3, {2, 3, 4}},
        {kn_nn_groupnorm(2, 6, 1e-5, true), 4, {2, 6, 3, 3}, 4, {2, 6, 3, 3}},
        {kn_nn_dropout(0.3), 2, {5, 6}, 2, {5, 6}},
        {kn_nn_maxpool2d(&(kn_pool_opts){.kernel = {2, 2}}), 4, {1, 3, 8, 8}, 4, {1, 3, 4, 4}},
        {kn_nn_maxpool2d(&(kn_pool_opts){.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}),
         4,
         {1, 2, 7, 7},
         4,
         {1, 2, 4, 4}},
        {kn_nn_avgpool2d(&(kn_pool_opts){.kernel = {2, 2}, .count_include_pad = true}),
         4,
         {2, 3, 6, 6},
         4,
         {2, 3, 3, 3}},
        {kn_nn_adaptive_avgpool2d(1, 1), 4, {2, 5, 7, 7}, 4, {2, 5, 1, 1}},
        {kn_nn_adaptive_avgpool2d(2, 3), 4, {1, 2, 6, 6}, 4, {1, 2, 2, 3}},
        {kn_nn_flatten(1, -1), 4, {2, 3, 4, 5}, 2, {2, 60}},
        {kn_nn_flatten(0, 1), 3, {2, 3, 4}, 2, {6, 4}},
        {kn_nn_relu(), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_relu6(), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_leaky_relu(0.1), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_elu(1.0), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_gelu(false), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_gelu(true), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_silu(), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_sigmoid(), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_tanh(), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_softmax(1), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_log_softmax(-1), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_identity(), 2, {3, 4}, 2, {3, 4}},
        {kn_nn_sequential(NULL, 0), 2, {3, 4}, 2, {3, 4}},
    };
    int nc = (int)(sizeof cases / sizeof *cases);
    for (int i = 0; i < nc; i++) {
        if (!cases[i].m) KT_FAIL("case %d: constructor failed: %s", i, kn_last_error());
        kn_tensor *x = kn_randn(KN_F32, cases[i].nx, cases[i].xs);
        kn_tensor *y = kn_module_forward(cases[i].m, x);
        if (!shape_is(y, cases[i].ny, cases[i].ys))
            KT_FAIL("case %d (%s): bad output (%s)", i, kn_module_type(cases[i].m),
                    kn_last_error());
    }
    /* values of the element-wise layers are those of the ops */
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){3, 4});
    KT_CLOSE(kn_module_forward(cases[20].m, x), kn_relu(x), 0, 0);
    KT_CLOSE(kn_module_forward(cases[22].m, x), kn_leaky_relu(x, 0.1), 0, 0);
    KT_CLOSE(kn_module_forward(cases[25].m, x), kn_gelu(x, true), 0, 0);
    KT_CLOSE(kn_module_forward(cases[29].m, x), kn_softmax(x, 1), 0, 0);
    KT_CLOSE(kn_module_forward(cases[31].m, x), x, 0, 0);
    KT_CLOSE(kn_module_forward(cases[32].m, x), x, 0, 0);
    /* Linear = x W^T + b; Embedding = rows of the weight */
    kn_module *lin = cases[0].m;
    kn_tensor *x3 = kn_randn(KN_F32, 3, (int64_t[]){2, 3, 4});
    KT_CLOSE(kn_module_forward(lin, x3),
             kn_linear(x3, kn_module_param(lin, "weight"), kn_module_param(lin, "bias")), 1e-6,
             1e-6);
    kn_module *emb = kn_nn_embedding(10, 3);
    int64_t idx[4] = {1, 9, 0, 1};
    kn_tensor *ix = kn_from_data(KN_I64, 2, (int64_t[]){2, 2}, idx);
    kn_tensor *e = kn_module_forward(emb, ix);
    KT_TRUE(shape_is(e, 3, (int64_t[]){2, 2, 3}));
    KT_CLOSE(kn_slice(kn_reshape(e, 2, (int64_t[]){4, 3}), 0, 1, 2, 1),
             kn_slice(kn_module_param(emb, "weight"), 0, 9, 10, 1), 0, 0);
    kn_module_free(emb);
    /* unbatched conv equals the batched result without the batch dim */
    kn_module *conv = cases[4].m;
    kn_tensor *xb = kn_randn(KN_F32, 4, (int64_t[]){1, 3, 9, 9});
    KT_CLOSE(kn_module_forward(conv, kn_squeeze(xb, 0)), kn_squeeze(kn_module_forward(conv, xb), 0),
             1e-6, 1e-6);
    for (int i = 0; i < nc; i++)
        kn_module_free(cases[i].m);
    kn_scope_end(sc);
}

/* ================================ errors ================================ */

static void test_forward_errors(void) {
    kn_scope sc = kn_scope_begin();
    kn_module *lin = kn_nn_linear(4, 2, true);
    KT_ERR(KN_ESHAPE, kn_module_forward(lin, kn_zeros(KN_F32, 2, (int64_t[]){3, 5})),
           "Linear: input (3, 5) last dim != in_features 4");
    KT_ERR(KN_ESHAPE, kn_module_forward(lin, kn_scalar(KN_F32, 1)), "Linear: input ()");
    /* NULL input keeps the earlier error */
    kn__err(KN_EDTYPE, "earlier failure");
    KT_TRUE(kn_module_forward(lin, NULL) == NULL);
    KT_EQ_INT(KN_EDTYPE, kn_last_status());
    KT_TRUE(!strcmp(kn_last_error(), "earlier failure"));
    KT_ERR(KN_EINVAL, kn_module_forward(NULL, kn_scalar(KN_F32, 1)), "NULL module");
    kn_module_free(lin);

    kn_module *conv = kn_nn_conv2d(1, 6, 5, 5, NULL, true);
    KT_ERR(KN_ESHAPE, kn_module_forward(conv, kn_zeros(KN_F32, 4, (int64_t[]){1, 3, 28, 28})),
           "Conv2d: input (1, 3, 28, 28) has 3 channels, expected in_channels 1");
    KT_ERR(KN_ESHAPE, kn_module_forward(conv, kn_zeros(KN_F32, 2, (int64_t[]){28, 28})),
           "Conv2d: expected 3-D (unbatched) or 4-D (batched) input");
    kn_module_free(conv);
    kn_module *bn = kn_nn_batchnorm2d(6, 1e-5, 0.1);
    KT_ERR(KN_ESHAPE, kn_module_forward(bn, kn_zeros(KN_F32, 3, (int64_t[]){6, 4, 4})),
           "BatchNorm2d: expected 4D input (got 3D input");
    KT_ERR(KN_ESHAPE, kn_module_forward(bn, kn_zeros(KN_F32, 4, (int64_t[]){2, 5, 4, 4})),
           "num_features 6");
    kn_module_free(bn);
    kn_module *ln = kn_nn_layernorm(1, (int64_t[]){8}, 1e-5, true);
    KT_ERR(KN_ESHAPE, kn_module_forward(ln, kn_zeros(KN_F32, 2, (int64_t[]){2, 7})),
           "LayerNorm: input (2, 7) does not end with normalized_shape (8,)");
    kn_module_free(ln);
    kn_module *emb = kn_nn_embedding(5, 2);
    KT_ERR(KN_EDTYPE, kn_module_forward(emb, kn_zeros(KN_F32, 1, (int64_t[]){3})), "embedding");
    kn_module_free(emb);

    /* errors inside containers name the path: Sequential child, then nested */
    kn_module *mods[] = {kn_nn_linear(4, 3, true), kn_nn_relu(), kn_nn_linear(5, 2, true)};
    kn_module *seq = kn_nn_sequential(mods, 3);
    KT_ERR(KN_ESHAPE, kn_module_forward(seq, kn_zeros(KN_F32, 2, (int64_t[]){2, 4})),
           "Linear: input (2, 3) last dim != in_features 5 [module '2']");
    kn_module *net = kn_module_new("Net", net_forward, NULL, NULL);
    kn_module *cls[] = {kn_nn_flatten(1, -1), kn_nn_linear(3, 2, true)};
    KT_OK(kn_module_add_child(net, "features", seq));
    KT_OK(kn_module_add_child(net, "classifier", kn_nn_sequential(cls, 2)));
    KT_ERR(KN_ESHAPE, kn_module_forward(net, kn_zeros(KN_F32, 2, (int64_t[]){2, 4})),
           "[module 'features.2']");
    kn_pool_opts p3 = {.kernel = {3, 3}};
    kn_module *pm[] = {kn_nn_maxpool2d(&p3)};
    kn_module *ps = kn_nn_sequential(pm, 1);
    KT_ERR(KN_ESHAPE, kn_module_forward(ps, kn_zeros(KN_F32, 4, (int64_t[]){1, 1, 2, 2})),
           "[module '0' (MaxPool2d)]");
    kn_module_free(ps);
    kn_module_free(net);
    kn_scope_end(sc);
}

static void test_no_forward(void) {
    kn_module *m = kn_module_new("Holder", NULL, NULL, NULL);
    kn_tensor *x = kn_zeros(KN_F32, 1, (int64_t[]){2});
    KT_ERR(KN_EMISUSE, kn_module_forward(m, x), "Holder: module has no forward function");
    kn_tensor_free(x);
    kn_module_free(m);
}

static int g_state_freed;
static void count_free(void *p) {
    (void)p;
    g_state_freed++;
}

static void test_construction_errors(void) {
    KT_ERR(KN_EINVAL, kn_nn_linear(-1, 3, true), "Linear");
    KT_ERR(KN_EINVAL, kn_nn_conv2d(3, 4, 3, 3, &(kn_conv_opts){.groups = 2}, true),
           "divisible by groups");
    KT_ERR(KN_EINVAL, kn_nn_conv2d(3, 4, 0, 3, NULL, true), "kernel size");
    KT_ERR(KN_EINVAL,
           kn_nn_conv2d(3, 4, 3, 3, &(kn_conv_opts){.same_padding = true, .stride = {2, 2}}, true),
           "padding='same' is not supported for strided");
    KT_ERR(KN_EINVAL, kn_nn_conv_transpose2d(3, 4, 3, 3, NULL, (int64_t[]){1, 1}, true),
           "output_padding");
    KT_ERR(KN_EINVAL, kn_nn_groupnorm(4, 6, 1e-5, true), "divisible by num_groups");
    KT_ERR(KN_EINVAL, kn_nn_dropout(1.5), "Dropout: probability has to be between 0 and 1");
    KT_ERR(KN_EINVAL, kn_nn_batchnorm2d(0, 1e-5, 0.1), "num_features");
    KT_ERR(KN_EINVAL, kn_nn_layernorm(0, NULL, 1e-5, true), "LayerNorm");
    KT_ERR(KN_EINVAL, kn_nn_maxpool2d(NULL), "MaxPool2d: options are required");
    KT_ERR(KN_EINVAL, kn_nn_adaptive_avgpool2d(0, 1), "AdaptiveAvgPool2d");
    KT_ERR(KN_EINVAL, kn_module_new(NULL, NULL, NULL, NULL), "type_name");
    /* the state is released on failure too */
    g_state_freed = 0;
    KT_TRUE(kn_module_new("", NULL, &g_state_freed, count_free) == NULL);
    KT_EQ_INT(1, g_state_freed);
    /* a NULL entry fails Sequential and frees the other modules (ASan checks the leak) */
    kn_module *mods[] = {kn_nn_linear(2, 2, true), NULL, kn_nn_relu()};
    KT_ERR(KN_EINVAL, kn_nn_sequential(mods, 3), "Sequential: module 1 is NULL");
    /* a failed constructor inside the list keeps its own error */
    kn_clear_error();
    kn_module *bad[] = {kn_nn_relu(), kn_nn_dropout(2.0)};
    KT_TRUE(kn_nn_sequential(bad, 2) == NULL);
    KT_EQ_INT(KN_EINVAL, kn_last_status());
    KT_TRUE(strstr(kn_last_error(), "Dropout: probability") != NULL);

    kn_module *m = kn_module_new("Box", NULL, NULL, NULL);
    int64_t s[1] = {3};
    KT_OK(kn_module_add_param(m, "w", kn_zeros(KN_F32, 1, s)));
    KT_STATUS(KN_EINVAL, kn_module_add_param(m, "w", kn_zeros(KN_F32, 1, s)));
    KT_TRUE(strstr(kn_last_error(), "already has an attribute named 'w'") != NULL);
    KT_STATUS(KN_EINVAL, kn_module_add_buffer(m, "w", kn_zeros(KN_F32, 1, s)));
    KT_STATUS(KN_EINVAL, kn_module_add_param(m, "a.b", kn_zeros(KN_F32, 1, s)));
    KT_STATUS(KN_EINVAL, kn_module_add_param(m, "", kn_zeros(KN_F32, 1, s)));
    KT_STATUS(KN_EDTYPE, kn_module_add_param(m, "i", kn_zeros(KN_I64, 1, s)));
    KT_OK(kn_module_add_buffer(m, "count", kn_zeros(KN_I64, 1, s))); /* buffers: any dtype */
    KT_TRUE(!kn_tensor_requires_grad(kn_module_buffer(m, "count")));
    /* a non-leaf cannot be a parameter */
    kn_tensor *leaf = kn_ones(KN_F32, 1, s);
    kn_tensor_set_requires_grad(leaf, true);
    KT_STATUS(KN_EMISUSE, kn_module_add_param(m, "nl", kn_mul_scalar(leaf, 2.0)));
    kn_tensor_free(leaf);
    KT_STATUS(KN_EINVAL, kn_module_add_param(NULL, "x", kn_zeros(KN_F32, 1, s)));
    /* children: cycles, double parents, duplicate names */
    kn_module *c = kn_nn_relu();
    KT_OK(kn_module_add_child(m, "act", c));
    KT_STATUS(KN_EMISUSE, kn_module_add_child(m, "act2", c)); /* still owned by m */
    KT_STATUS(KN_EINVAL, kn_module_add_child(m, "w", kn_nn_relu()));
    kn_module *inner = kn_module_new("Inner", NULL, NULL, NULL);
    KT_OK(kn_module_add_child(m, "inner", inner));
    kn_module *root = kn_module_new("Root", NULL, NULL, NULL);
    KT_OK(kn_module_add_child(root, "m", m));
    KT_STATUS(KN_EMISUSE, kn_module_add_child(inner, "loop", root));
    KT_STATUS(KN_EINVAL, kn_nn_sequential_append(root, kn_nn_relu()));
    KT_TRUE(strstr(kn_last_error(), "not a Sequential") != NULL);
    kn_module_free(root);
}

static void test_free_detaches_child(void) {
    kn_module *m = mlp();
    kn_module_free(kn_module_child(m, "2")); /* like `del model[2]` */
    kn_named_tensor v[8];
    int n = kn_module_parameters(m, v, 8);
    /* Sequential renumbers like PyTorch's __delitem__ */
    static const char *const want[] = {"0.weight", "0.bias", "3.weight", "3.bias", NULL};
    KT_TRUE(names_are(v, n, want));
    KT_OK(kn_nn_sequential_append(m, kn_nn_relu()));
    KT_TRUE(!strcmp(kn_module_type(kn_module_child(m, "4")), "ReLU"));
    /* other containers keep their names */
    kn_module *net = nested_net();
    kn_module_free(kn_module_child(net, "features"));
    n = kn_module_parameters(net, v, 8);
    static const char *const rest[] = {"classifier.1.weight", "classifier.1.bias", NULL};
    KT_TRUE(names_are(v, n, rest));
    kn_module_free(net);
    kn_module_free(NULL);
    kn_module_free(m);
}

/* ================================ printing ================================ */

static void test_print(void) {
    kn_module *m = mlp();
    KT_REPR(m, "Sequential(\n"
               "  (0): Linear(in_features=784, out_features=512, bias=True)\n"
               "  (1): ReLU()\n"
               "  (2): Linear(in_features=512, out_features=256, bias=True)\n"
               "  (3): ReLU()\n"
               "  (4): Linear(in_features=256, out_features=10, bias=True)\n"
               ")\n");
    kn_module_free(m);
    m = lenet();
    KT_REPR(m, "Sequential(\n"
               "  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))\n"
               "  (1): ReLU()\n"
               "  (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, "
               "ceil_mode=False)\n"
               "  (3): Conv2d(6, 16, kernel_size=(5, 5), stride=(1, 1))\n"
               "  (4): ReLU()\n"
               "  (5): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, "
               "ceil_mode=False)\n"
               "  (6): Flatten(start_dim=1, end_dim=-1)\n"
               "  (7): Linear(in_features=256, out_features=120, bias=True)\n"
               "  (8): ReLU()\n"
               "  (9): Linear(in_features=120, out_features=84, bias=True)\n"
               "  (10): ReLU()\n"
               "  (11): Linear(in_features=84, out_features=10, bias=True)\n"
               ")\n");
    kn_module_free(m);
    m = nested_net();
    KT_REPR(m, "Net(\n"
               "  (features): Sequential(\n"
               "    (0): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))\n"
               "    (1): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, "
               "track_running_stats=True)\n"
               "    (2): ReLU()\n"
               "    (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, "
               "ceil_mode=False)\n"
               "  )\n"
               "  (classifier): Sequential(\n"
               "    (0): Flatten(start_dim=1, end_dim=-1)\n"
               "    (1): Linear(in_features=16, out_features=5, bias=True)\n"
               "  )\n"
               ")\n");
    kn_module_free(m);
    struct {
        kn_module *m;
        const char *s;
    } one[] = {
        {kn_nn_conv2d(3, 8, 3, 3, &(kn_conv_opts){.stride = {2, 2}, .padding = {1, 1}}, false),
         "Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"},
        {kn_nn_conv2d(4, 8, 3, 1,
                      &(kn_conv_opts){.dilation = {2, 1}, .groups = 4, .same_padding = true}, true),
         "Conv2d(4, 8, kernel_size=(3, 1), stride=(1, 1), padding=same, dilation=(2, 1), "
         "groups=4)"},
        {kn_nn_conv1d(16, 33, 3, &(kn_conv_opts){.stride = {2}}, true),
         "Conv1d(16, 33, kernel_size=(3,), stride=(2,))"},
        {kn_nn_conv_transpose2d(16, 33, 3, 3, &(kn_conv_opts){.stride = {2, 2}, .padding = {1, 1}},
                                (int64_t[]){1, 1}, true),
         "ConvTranspose2d(16, 33, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
         "output_padding=(1, 1))"},
        {kn_nn_batchnorm1d(100, 1e-3, 0.01),
         "BatchNorm1d(100, eps=0.001, momentum=0.01, affine=True, track_running_stats=True)"},
        {kn_nn_layernorm(1, (int64_t[]){10}, 1e-5, true),
         "LayerNorm((10,), eps=1e-05, elementwise_affine=True)"},
        {kn_nn_layernorm(2, (int64_t[]){3, 4}, 1e-6, false),
         "LayerNorm((3, 4), eps=1e-06, elementwise_affine=False)"},
        {kn_nn_groupnorm(3, 6, 1e-5, true), "GroupNorm(3, 6, eps=1e-05, affine=True)"},
        {kn_nn_dropout(0.5), "Dropout(p=0.5, inplace=False)"},
        {kn_nn_dropout(0), "Dropout(p=0.0, inplace=False)"},
        {kn_nn_embedding(10, 3), "Embedding(10, 3)"},
        {kn_nn_maxpool2d(&(kn_pool_opts){
             .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}),
         "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)"},
        {kn_nn_maxpool2d(&(kn_pool_opts){.kernel = {3, 2}}),
         "MaxPool2d(kernel_size=(3, 2), stride=(3, 2), padding=0, dilation=1, ceil_mode=False)"},
        {kn_nn_avgpool2d(&(kn_pool_opts){.kernel = {2, 2}, .count_include_pad = true}),
         "AvgPool2d(kernel_size=2, stride=2, padding=0)"},
        {kn_nn_adaptive_avgpool2d(1, 1), "AdaptiveAvgPool2d(output_size=(1, 1))"},
        {kn_nn_flatten(1, -1), "Flatten(start_dim=1, end_dim=-1)"},
        {kn_nn_relu(), "ReLU()"},
        {kn_nn_relu6(), "ReLU6()"},
        {kn_nn_leaky_relu(0.01), "LeakyReLU(negative_slope=0.01)"},
        {kn_nn_elu(1.0), "ELU(alpha=1.0)"},
        {kn_nn_gelu(false), "GELU(approximate='none')"},
        {kn_nn_gelu(true), "GELU(approximate='tanh')"},
        {kn_nn_silu(), "SiLU()"},
        {kn_nn_sigmoid(), "Sigmoid()"},
        {kn_nn_tanh(), "Tanh()"},
        {kn_nn_softmax(1), "Softmax(dim=1)"},
        {kn_nn_log_softmax(-1), "LogSoftmax(dim=-1)"},
        {kn_nn_identity(), "Identity()"},
        {kn_nn_sequential(NULL, 0), "Sequential()"},
        {kn_module_new("MyBlock", NULL, NULL, NULL), "MyBlock()"},
    };
    for (size_t i = 0; i < sizeof one / sizeof *one; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s\n", one[i].s);
        if (!one[i].m) KT_FAIL("case %zu: constructor failed: %s", i, kn_last_error());
        KT_REPR(one[i].m, want);
        kn_module_free(one[i].m);
    }
    /* nested Sequential indentation */
    kn_module *inner[] = {kn_nn_relu()};
    kn_module *outer[] = {kn_nn_sequential(inner, 1), kn_nn_tanh()};
    m = kn_nn_sequential(outer, 2);
    KT_REPR(m, "Sequential(\n"
               "  (0): Sequential(\n"
               "    (0): ReLU()\n"
               "  )\n"
               "  (1): Tanh()\n"
               ")\n");
    kn_module_free(m);
    KT_STATUS(KN_EINVAL, kn_module_print(NULL, stdout));
}

static void test_py_float(void) {
    struct {
        double v;
        const char *s;
    } c[] = {{1e-5, "1e-05"},     {0.1, "0.1"},
             {1.0, "1.0"},        {0.001, "0.001"},
             {1e-4, "0.0001"},    {0.3, "0.3"},
             {100.0, "100.0"},    {123.456, "123.456"},
             {1e16, "1e+16"},     {1e15, "1000000000000000.0"},
             {-2.5, "-2.5"},      {0.0, "0.0"},
             {1.5e-7, "1.5e-07"}, {2.0 / 3.0, "0.6666666666666666"},
             {NAN, "nan"},        {INFINITY, "inf"},
             {0.01, "0.01"}};
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        char buf[64];
        kn__py_float(buf, sizeof buf, c[i].v);
        if (strcmp(buf, c[i].s))
            KT_FAIL("py_float(%.17g) = '%s', expected '%s'", c[i].v, buf, c[i].s);
    }
}

/* ================================ memory ================================ */

static void test_memory(void) {
    size_t live0 = kn_live_tensors();
    kn_scope build = kn_scope_begin(); /* building inside a scope must not tie params to it */
    kn_module *m = lenet();
    kn_scope_end(build);
    KT_NOTNULL(m);
    kn_named_tensor v[16];
    int n = kn_module_parameters(m, v, 16);
    KT_EQ_INT(live0 + (size_t)n, kn_live_tensors()); /* only the parameters are alive */
    size_t live_mid = 0;
    kn_manual_seed(4);
    for (int step = 0; step < 4; step++) {
        kn_scope sc = kn_scope_begin();
        kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){4, 1, 28, 28});
        kn_tensor *y = kn_module_forward(m, x);
        kn_tensor *loss = kn_mean(kn_square(y), NULL, 0, false);
        KT_OK(kn_backward(loss, NULL));
        kn_scope_end(sc);
        if (step == 1) live_mid = kn_live_tensors();
    }
    KT_EQ_INT(live_mid, kn_live_tensors()); /* params + grads, steady */
    /* forward outside any scope: Sequential frees its intermediates, caller owns the result */
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){2, 1, 28, 28});
    bool prev = kn_no_grad_begin();
    kn_tensor *y = kn_module_forward(m, x);
    kn_no_grad_end(prev);
    KT_NOTNULL(y);
    KT_EQ_INT(live_mid + 2, kn_live_tensors());
    kn_tensor_free(y);
    kn_tensor_free(x);
    /* with grad outside a scope: the graph holds the intermediates until y is freed */
    x = kn_randn(KN_F32, 4, (int64_t[]){2, 1, 28, 28});
    y = kn_module_forward(m, x);
    kn_tensor_free(y);
    kn_tensor_free(x);
    KT_EQ_INT(live_mid, kn_live_tensors());
    kn_module_free(m);
    KT_EQ_INT(live0, kn_live_tensors());
}

/* every allocation of construction, enumeration and printing may fail: NULL / an error, never a
 * crash or a leak (the ASan build checks the leaks) */
static void test_alloc_failures(void) {
    size_t live0 = kn_live_tensors();
    int k = 1, built = 0;
    for (; k < 5000 && !built; k++) {
        kn__alloc_fail_after(k);
        kn_module *a = lenet();
        kn_module *b = nested_net();
        kn_named_tensor v[16];
        int n = a ? kn_module_state_dict(a, v, 16) : -1;
        if (n >= 0 && n != 10) KT_FAIL("k=%d: %d entries", k, n);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        kn_status s = kn_module_print(b ? b : a, f);
        fclose(f);
        free(buf);
        built = a && b && n == 10 && s == KN_OK && kn__alloc_count() > 0;
        kn__alloc_fail_after(0);
        kn_module_free(a);
        kn_module_free(b);
    }
    KT_TRUE(built);
    KT_TRUE(k > 50); /* the failures were really injected along the way */
    KT_EQ_INT(live0, kn_live_tensors());
}

static void test_no_leaks(void) {
    KT_EQ_INT(0, kn_live_tensors());
}

int main(void) {
    KT_RUN(test_mlp_names_and_count);
    KT_RUN(test_lenet_names_and_forward);
    KT_RUN(test_nested_names);
    KT_RUN(test_state_dict_order);
    KT_RUN(test_shared_params);
    KT_RUN(test_default_init_linear_conv);
    KT_RUN(test_default_init_norm_embedding);
    KT_RUN(test_init_formulas);
    KT_RUN(test_train_eval_flags);
    KT_RUN(test_dropout_modes);
    KT_RUN(test_batchnorm_modes);
    KT_RUN(test_freeze);
    KT_RUN(test_user_module);
    KT_RUN(test_forward_shapes);
    KT_RUN(test_forward_errors);
    KT_RUN(test_no_forward);
    KT_RUN(test_construction_errors);
    KT_RUN(test_free_detaches_child);
    KT_RUN(test_print);
    KT_RUN(test_py_float);
    KT_RUN(test_memory);
    KT_RUN(test_alloc_failures);
    KT_RUN(test_no_leaks);
    return kt_finish();
}
