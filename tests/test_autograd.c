/* test_autograd.c - the tape, backward, grad, no-grad, detach, double backward, error paths,
 * finite-difference checks of the core ops, and a long training-style loop in flat memory. */
#include "kn_test.h"

static kn_tensor *param(kn_dtype dt, int nd, const int64_t *shape, double scale) {
    kn_tensor *r = kn_randn(dt, nd, shape);
    kn_tensor *p = kn_mul_scalar(r, scale);
    kn_tensor_free(r);
    kn_tensor_set_requires_grad(p, true);
    return p;
}

static void test_simple_backward(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_from_data(KN_F32, 1, (int64_t[]){3}, (float[]){1, 2, 3});
    KT_OK(kn_tensor_set_requires_grad(x, true));
    kn_tensor *y = kn_sum(kn_mul(x, x), NULL, 0, false); /* sum x^2 -> grad 2x */
    KT_TRUE(!kn_tensor_is_leaf(y));
    KT_OK(kn_backward(y, NULL));
    kn_tensor *g = kn_tensor_grad(x);
    KT_NOTNULL(g);
    KT_NEAR(2, kn_tensor_get(g, (int64_t[]){0}), 0);
    KT_NEAR(6, kn_tensor_get(g, (int64_t[]){2}), 0);
    /* accumulation: a second graph adds */
    kn_tensor *y2 = kn_sum(x, NULL, 0, false);
    KT_OK(kn_backward(y2, NULL));
    KT_NEAR(7, kn_tensor_get(kn_tensor_grad(x), (int64_t[]){2}), 0);
    kn_scope_end(s);
}

/* regression: backward on a leaf (no graph at all) used to qsort a NULL node list (UBSan) */
static void test_backward_on_leaf(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_scalar(KN_F32, 3.0);
    KT_OK(kn_tensor_set_requires_grad(x, true));
    KT_OK(kn_backward(x, NULL));
    KT_NEAR(1, kn_item(kn_tensor_grad(x)), 0);
    kn_scope_end(s);
}

/* .grad may take over a fresh, exclusively owned gradient (no copy), but must never alias a
 * tensor someone else can see: the user's seed through a view, or one gradient routed twice */
static void test_grad_never_aliases(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_F32, 2, (int64_t[]){2, 3});
    kn_tensor_set_requires_grad(x, true);
    kn_tensor *seed = kn_full(KN_F32, 1, (int64_t[]){6}, 2.0);
    kn_backward_opts o = {.grad_output = seed};
    KT_OK(kn_backward(kn_reshape(x, 1, (int64_t[]){6}), &o)); /* grad = reshape(seed): a view */
    KT_TRUE(!kn_tensor_shares_storage(kn_tensor_grad(x), seed));
    KT_OK(kn_backward(kn_sum(kn_reshape(x, 1, (int64_t[]){6}), NULL, 0, false), NULL));
    KT_NEAR(2.0, kn_tensor_get(seed, (int64_t[]){0}), 0); /* accumulation left the seed alone */
    KT_NEAR(3.0, kn_tensor_get(kn_tensor_grad(x), (int64_t[]){0, 0}), 0);
    /* add routes the same gradient tensor to both inputs: they must get separate .grad */
    kn_tensor *a = kn_ones(KN_F32, 1, (int64_t[]){4}), *b = kn_ones(KN_F32, 1, (int64_t[]){4});
    kn_tensor_set_requires_grad(a, true);
    kn_tensor_set_requires_grad(b, true);
    KT_OK(kn_backward(kn_sum(kn_mul_scalar(kn_add(a, b), 3.0), NULL, 0, false), NULL));
    KT_TRUE(!kn_tensor_shares_storage(kn_tensor_grad(a), kn_tensor_grad(b)));
    KT_OK(kn_backward(kn_sum(a, NULL, 0, false), NULL));
    KT_NEAR(4.0, kn_tensor_get(kn_tensor_grad(a), (int64_t[]){0}), 0);
    KT_NEAR(3.0, kn_tensor_get(kn_tensor_grad(b), (int64_t[]){0}), 0);
    kn_scope_end(s);
}

static void test_backward_errors(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_F32, 1, (int64_t[]){3});
    kn_tensor_set_requires_grad(x, true);
    kn_tensor *y = kn_exp(x);
    KT_STATUS(KN_EMISUSE, kn_backward(y, NULL)); /* non-scalar, no seed */
    KT_TRUE(strstr(kn_last_error(), "only for scalar outputs"));
    kn_tensor *l = kn_sum(y, NULL, 0, false);
    KT_OK(kn_backward(l, NULL));
    KT_STATUS(KN_EMISUSE, kn_backward(l, NULL)); /* graph freed */
    KT_TRUE(strstr(kn_last_error(), "second time"));
    kn_tensor *l2 = kn_sum(kn_exp(x), NULL, 0, false);
    kn_backward_opts o = {.retain_graph = true};
    KT_OK(kn_backward(l2, &o));
    KT_OK(kn_backward(l2, &o));
    kn_tensor *c = kn_ones(KN_F32, 1, (int64_t[]){3});
    KT_STATUS(KN_EMISUSE, kn_backward(kn_sum(c, NULL, 0, false), NULL));
    kn_tensor *seed = kn_ones(KN_F32, 1, (int64_t[]){4});
    kn_backward_opts bad = {.grad_output = seed};
    KT_STATUS(KN_ESHAPE, kn_backward(kn_exp(x), &bad));
    KT_STATUS(KN_EDTYPE, kn_tensor_set_requires_grad(kn_ones(KN_I64, 1, (int64_t[]){2}), true));
    KT_STATUS(KN_EMISUSE, kn_tensor_set_requires_grad(y, false));
    kn_scope_end(s);
}

static void test_no_grad_and_detach(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_F32, 1, (int64_t[]){2});
    kn_tensor_set_requires_grad(x, true);
    bool prev = kn_no_grad_begin();
    kn_tensor *y = kn_mul(x, x);
    kn_no_grad_end(prev);
    KT_TRUE(!kn_tensor_requires_grad(y));
    kn_tensor *d = kn_detach(kn_mul(x, x));
    KT_TRUE(!kn_tensor_requires_grad(d) && kn_tensor_is_leaf(d));
    /* gradient stops at detach: d(x * detach(x)) / dx = detach(x) = 1 */
    kn_tensor *l = kn_sum(kn_mul(x, kn_detach(x)), NULL, 0, false);
    KT_OK(kn_backward(l, NULL));
    KT_NEAR(1, kn_tensor_get(kn_tensor_grad(x), (int64_t[]){0}), 0);
    kn_scope_end(s);
}

/* f(x) = sum(x^3 * w): grad = 3x^2 w, Hessian-vector product with v = 6 x w v */
static void test_hessian_vector_product(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_from_data(KN_F64, 1, (int64_t[]){3}, (double[]){0.5, -1.0, 2.0});
    kn_tensor *w = kn_from_data(KN_F64, 1, (int64_t[]){3}, (double[]){1.0, 2.0, -0.5});
    kn_tensor *v = kn_from_data(KN_F64, 1, (int64_t[]){3}, (double[]){0.3, 0.7, 1.1});
    kn_tensor_set_requires_grad(x, true);
    kn_tensor *f = kn_sum(kn_mul(kn_pow_scalar(x, 3), w), NULL, 0, false);
    kn_tensor *g;
    KT_OK(kn_grad(&f, 1, NULL, &x, 1, true, &g));
    KT_TRUE(kn_tensor_requires_grad(g));
    KT_NEAR(3 * 0.25 * 1.0, kn_tensor_get(g, (int64_t[]){0}), 1e-12);
    kn_tensor *gv = kn_sum(kn_mul(g, v), NULL, 0, false);
    kn_tensor *hv;
    KT_OK(kn_grad(&gv, 1, NULL, &x, 1, false, &hv));
    double xs[3] = {0.5, -1.0, 2.0}, ws[3] = {1.0, 2.0, -0.5}, vs[3] = {0.3, 0.7, 1.1};
    for (int i = 0; i < 3; i++)
        KT_NEAR(6 * xs[i] * ws[i] * vs[i], kn_tensor_get(hv, (int64_t[]){i}), 1e-12);
    /* also through tanh and exp (saved outputs in the double-backward path) */
    kn_tensor *f2 = kn_sum(kn_tanh(kn_exp(x)), NULL, 0, false);
    kn_tensor *g2, *h2;
    KT_OK(kn_grad(&f2, 1, NULL, &x, 1, true, &g2));
    kn_tensor *s2 = kn_sum(g2, NULL, 0, false);
    KT_OK(kn_grad(&s2, 1, NULL, &x, 1, false, &h2));
    for (int i = 0; i < 3; i++) { /* d2/dx2 tanh(e^x) = e^x sech^2 (1 - 2 e^x tanh) */
        double e = exp(xs[i]), t = tanh(e), sech2 = 1 - t * t;
        KT_NEAR(e * sech2 * (1 - 2 * e * t), kn_tensor_get(h2, (int64_t[]){i}), 1e-10);
    }
    kn_scope_end(s);
}

static void test_grad_non_leaf_and_unused(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_F64, 1, (int64_t[]){2});
    kn_tensor *u = kn_ones(KN_F64, 1, (int64_t[]){2});
    kn_tensor_set_requires_grad(x, true);
    kn_tensor_set_requires_grad(u, true);
    kn_tensor *h = kn_mul_scalar(x, 3.0);
    kn_tensor *y = kn_sum(kn_square(h), NULL, 0, false);
    kn_tensor *ins[3] = {h, x, u}, *gs[3];
    KT_OK(kn_grad(&y, 1, NULL, ins, 3, false, gs));
    KT_NEAR(6, kn_tensor_get(gs[0], (int64_t[]){0}), 1e-12);  /* dy/dh = 2h */
    KT_NEAR(18, kn_tensor_get(gs[1], (int64_t[]){1}), 1e-12); /* dy/dx = 18x */
    KT_NEAR(0, kn_tensor_get(gs[2], (int64_t[]){1}), 0);      /* unused -> zeros */
    KT_TRUE(kn_tensor_grad(x) == NULL);                       /* kn_grad leaves .grad alone */
    kn_scope_end(s);
}

/* ---- finite-difference checks of the core ops ---- */
typedef kn_tensor *(*f1)(kn_tensor *);
static kn_tensor *apply_unary(kn_tensor *const *in, void *u) {
    return ((f1)u)(in[0]);
}

static void test_gradcheck_unary(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(1);
    struct {
        const char *name;
        f1 fn;
        int domain; /* 0: any, 1: positive, 2: (-0.9, 0.9), 3: > 1 */
    } ops[] = {{"neg", kn_neg, 0},
               {"abs", kn_abs, 0},
               {"exp", kn_exp, 0},
               {"log", kn_log, 1},
               {"log1p", kn_log1p, 1},
               {"sqrt", kn_sqrt, 1},
               {"rsqrt", kn_rsqrt, 1},
               {"square", kn_square, 0},
               {"sin", kn_sin, 0},
               {"cos", kn_cos, 0},
               {"tanh", kn_tanh, 0},
               {"sigmoid", kn_sigmoid, 0},
               {"relu", kn_relu, 0},
               {"relu6", kn_relu6, 0},
               {"silu", kn_silu, 0},
               {"erf", kn_erf, 0},
               {"reciprocal", kn_reciprocal, 1},
               {"tan", kn_tan, 2},
               {"asin", kn_asin, 2},
               {"acos", kn_acos, 2},
               {"atan", kn_atan, 0},
               {"sinh", kn_sinh, 0},
               {"cosh", kn_cosh, 0},
               {"asinh", kn_asinh, 0},
               {"acosh", kn_acosh, 3},
               {"atanh", kn_atanh, 2}};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        kn_tensor *x = kn_mul_scalar(kn_randn(KN_F64, 2, (int64_t[]){3, 4}), 2.0);
        if (ops[i].domain == 1) x = kn_add_scalar(kn_abs(x), 0.5);
        if (ops[i].domain == 2) x = kn_mul_scalar(kn_tanh(x), 0.9);
        if (ops[i].domain == 3) x = kn_add_scalar(kn_abs(x), 1.2);
        /* keep relu-like kinks away from the finite-difference step */
        x = kn_where(kn_lt(kn_abs(x), kn_scalar(KN_F64, 0.05)), kn_scalar(KN_F64, 0.3), x);
        kn_tensor *xt = kn_transpose(kn_contiguous(x), 0, 1); /* non-contiguous input */
        kn_tensor *leaf = kn_detach(xt);
        kn_tensor_set_requires_grad(leaf, true);
        char msg[256] = "";
        if (kn_gradcheck(apply_unary, (void *)ops[i].fn, &leaf, 1, 1e-6, 1e-7, 1e-5, msg,
                         sizeof msg))
            KT_FAIL("%s: %s", ops[i].name, msg);
    }
    kn_scope_end(s);
}

static kn_tensor *f_leaky(kn_tensor *const *in, void *u) {
    return kn_leaky_relu(in[0], 0.1);
}
static kn_tensor *f_elu(kn_tensor *const *in, void *u) {
    return kn_elu(in[0], 1.3);
}
static kn_tensor *f_gelu(kn_tensor *const *in, void *u) {
    return kn_gelu(in[0], false);
}
static kn_tensor *f_gelu_t(kn_tensor *const *in, void *u) {
    return kn_gelu(in[0], true);
}
static kn_tensor *f_softplus(kn_tensor *const *in, void *u) {
    return kn_softplus(in[0], 2.0, 3.0);
}
static kn_tensor *f_clamp(kn_tensor *const *in, void *u) {
    return kn_clamp(in[0], -0.5, 0.7);
}
/* second derivatives through the fused backward ops: d/dx sum(grad of gelu) */
static kn_tensor *f_gelu_grad(kn_tensor *const *in, void *u) {
    kn_tensor *x = in[0], *g;
    kn_tensor *y = kn_sum(kn_gelu(x, u != NULL), NULL, 0, false);
    if (kn_grad(&y, 1, NULL, &x, 1, true, &g)) return NULL;
    return g;
}

static void test_gradcheck_activations(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(2);
    kn_gradcheck_fn fs[] = {f_leaky, f_elu, f_gelu, f_gelu_t, f_softplus, f_clamp, f_gelu_grad};
    const char *names[] = {"leaky_relu", "elu", "gelu", "gelu_tanh", "softplus", "clamp", "gelu''"};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
        kn_tensor *x = kn_mul_scalar(kn_randn(KN_F64, 1, (int64_t[]){9}), 1.5);
        x = kn_where(kn_lt(kn_abs(kn_add_scalar(x, -0.7)), kn_scalar(KN_F64, 0.02)),
                     kn_scalar(KN_F64, 0.9), x);
        x = kn_where(kn_lt(kn_abs(kn_add_scalar(x, 0.5)), kn_scalar(KN_F64, 0.02)),
                     kn_scalar(KN_F64, 0.9), x);
        x = kn_where(kn_lt(kn_abs(x), kn_scalar(KN_F64, 0.02)), kn_scalar(KN_F64, 0.9), x);
        kn_tensor_set_requires_grad(x, true);
        char msg[256] = "";
        if (kn_gradcheck(fs[i], NULL, &x, 1, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
            KT_FAIL("%s: %s", names[i], msg);
    }
    kn_tensor *x = kn_randn(KN_F64, 1, (int64_t[]){5});
    kn_tensor_set_requires_grad(x, true);
    char msg[256] = "";
    if (kn_gradcheck(f_gelu_grad, (void *)1, &x, 1, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
        KT_FAIL("gelu_tanh'': %s", msg);
    kn_scope_end(s);
}

typedef kn_tensor *(*f2)(kn_tensor *, kn_tensor *);
static kn_tensor *apply_binary(kn_tensor *const *in, void *u) {
    return ((f2)u)(in[0], in[1]);
}

static void test_gradcheck_binary_broadcast(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(3);
    f2 fns[] = {kn_add, kn_sub, kn_mul, kn_div, kn_pow, kn_maximum, kn_minimum};
    const char *names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"};
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
        kn_tensor *a = kn_randn(KN_F64, 3, (int64_t[]){2, 1, 4});
        kn_tensor *b = kn_randn(KN_F64, 2, (int64_t[]){3, 1});
        if (fns[i] == kn_pow || fns[i] == kn_div) {
            a = kn_add_scalar(kn_abs(a), 0.5);
            b = kn_add_scalar(kn_abs(b), 0.5);
        }
        kn_tensor_set_requires_grad(a, true);
        kn_tensor_set_requires_grad(b, true);
        kn_tensor *in[2] = {a, b};
        char msg[256] = "";
        if (kn_gradcheck(apply_binary, (void *)fns[i], in, 2, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
            KT_FAIL("%s: %s", names[i], msg);
    }
    kn_scope_end(s);
}

static kn_tensor *f_where(kn_tensor *const *in, void *u) {
    return kn_where(kn_gt(in[0], kn_scalar(KN_F64, 0)), in[0], in[1]);
}
static kn_tensor *f_sum_axes(kn_tensor *const *in, void *u) {
    return kn_sum(in[0], (int[]){0, 2}, 2, false);
}
static kn_tensor *f_mean_keep(kn_tensor *const *in, void *u) {
    return kn_mean(in[0], (int[]){-1}, 1, true);
}
static kn_tensor *f_shapes(kn_tensor *const *in, void *u) {
    kn_tensor *x = in[0]; /* (2,3,4) */
    kn_tensor *a = kn_permute(x, (int[]){2, 0, 1});
    kn_tensor *b = kn_reshape(kn_contiguous(a), 2, (int64_t[]){4, 6});
    kn_tensor *c = kn_slice(b, 1, 1, 6, 2);
    kn_tensor *d = kn_expand(kn_unsqueeze(c, 0), 3, (int64_t[]){2, 4, 3});
    kn_tensor *e =
        kn_concat((kn_tensor *[]){d, kn_squeeze(kn_slice(d, 0, 0, 1, 1), 0 + 0) ? d : d}, 2, 1);
    kn_tensor *st = kn_stack((kn_tensor *[]){e, e}, 2, 0);
    kn_tensor *pieces[4];
    int n = kn_split(st, 3, 2, pieces, 4);
    if (n < 2) return NULL;
    return kn_mul(kn_flatten(pieces[1], 0, -1), kn_cast(kn_flatten(pieces[0], 0, -1), KN_F64));
}
static kn_tensor *f_cast(kn_tensor *const *in, void *u) {
    return kn_cast(kn_mul(kn_cast(in[0], KN_F32), kn_cast(in[0], KN_F32)), KN_F64);
}

static void test_gradcheck_misc(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(4);
    kn_tensor *a = kn_randn(KN_F64, 2, (int64_t[]){3, 4}), *b = kn_randn(KN_F64, 1, (int64_t[]){4});
    kn_tensor_set_requires_grad(a, true);
    kn_tensor_set_requires_grad(b, true);
    char msg[256] = "";
    kn_tensor *in[2] = {a, b};
    if (kn_gradcheck(f_where, NULL, in, 2, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
        KT_FAIL("where: %s", msg);
    kn_tensor *x = kn_randn(KN_F64, 3, (int64_t[]){2, 3, 4});
    kn_tensor_set_requires_grad(x, true);
    if (kn_gradcheck(f_sum_axes, NULL, &x, 1, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
        KT_FAIL("sum: %s", msg);
    if (kn_gradcheck(f_mean_keep, NULL, &x, 1, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
        KT_FAIL("mean: %s", msg);
    if (kn_gradcheck(f_shapes, NULL, &x, 1, 1e-6, 1e-7, 1e-5, msg, sizeof msg))
        KT_FAIL("shape ops: %s", msg);
    if (kn_gradcheck(f_cast, NULL, &x, 1, 1e-3, 1e-4, 1e-3, msg, sizeof msg))
        KT_FAIL("cast: %s", msg);
    kn_scope_end(s);
}

/* A 10,000-step forward/backward/update loop (a tiny MLP) must run in flat memory. */
static void test_long_loop_flat_memory(void) {
    int steps = kt_quick() ? 2000 : 10000;
    kn_manual_seed(5);
    size_t live0 = kn_live_tensors();
    kn_tensor *w1 = param(KN_F32, 2, (int64_t[]){16, 8}, 0.3),
              *b1 = param(KN_F32, 1, (int64_t[]){16}, 0.1);
    kn_tensor *w2 = param(KN_F32, 2, (int64_t[]){1, 16}, 0.3);
    kn_tensor *x = kn_randn(KN_F32, 2, (int64_t[]){32, 8});
    kn_tensor *y = kn_sum(x, (int[]){1}, 1, true);
    kn_tensor *ps[3] = {w1, b1, w2};
    size_t live_after_setup = kn_live_tensors();
    double first = 0, last = 0;
    size_t live_mid = 0;
    for (int step = 0; step < steps; step++) {
        kn_scope s = kn_scope_begin();
        kn_tensor *h = kn_relu(kn_add(kn_matmul(x, kn_transpose(w1, 0, 1)), b1));
        kn_tensor *out = kn_matmul(h, kn_transpose(w2, 0, 1));
        kn_tensor *loss = kn_mean(kn_square(kn_sub(out, y)), NULL, 0, false);
        if (!loss || kn_backward(loss, NULL)) {
            kn_scope_end(s);
            KT_FAIL("step %d: %s", step, kn_last_error());
        }
        double l = kn_item(loss);
        if (step == 0) first = l;
        last = l;
        bool prev = kn_no_grad_begin();
        for (int i = 0; i < 3; i++) {
            kn_add_(ps[i], kn_tensor_grad(ps[i]), -0.01);
            kn_zero_(kn_tensor_grad(ps[i]));
        }
        kn_no_grad_end(prev);
        kn_scope_end(s);
        if (step == 10) live_mid = kn_live_tensors();
    }
    KT_EQ_INT(live_mid, kn_live_tensors());
    KT_TRUE(last < first * 0.5);
    (void)live_after_setup;
    for (int i = 0; i < 3; i++)
        kn_tensor_free(ps[i]);
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live0, kn_live_tensors());
}

static void test_no_leaks_so_far(void) {
    KT_EQ_INT(0, kn_live_tensors());
}

int main(void) {
    KT_RUN(test_simple_backward);
    KT_RUN(test_no_leaks_so_far);
    KT_RUN(test_backward_on_leaf);
    KT_RUN(test_grad_never_aliases);
    KT_RUN(test_backward_errors);
    KT_RUN(test_no_grad_and_detach);
    KT_RUN(test_hessian_vector_product);
    KT_RUN(test_grad_non_leaf_and_unused);
    KT_RUN(test_gradcheck_unary);
    KT_RUN(test_gradcheck_activations);
    KT_RUN(test_gradcheck_binary_broadcast);
    KT_RUN(test_no_leaks_so_far);
    KT_RUN(test_gradcheck_misc);
    KT_RUN(test_no_leaks_so_far);
    KT_RUN(test_long_loop_flat_memory);
    return kt_finish();
}
