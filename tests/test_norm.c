/*
 * test_norm.c - the normalisation family (src/ops/norm.c): softmax, log_softmax, layer_norm,
 * group_norm, batch_norm and their fused backward ops. Hand-checked values (including the
 * running-stat update), f64 finite-difference gradient checks (non-contiguous inputs, size-1
 * dims, training and eval, double backward through the composed rules), fast kernels against the
 * reference kernels, thread-count independence, scopes, and error paths.
 */
#include "kn_test.h"
#include "kt_f64.h"

#include "ops/op_impl.h"

/* first output of an op called by name */
static kn_tensor *call1(const char *name, kn_tensor *const *in, int n, const kn_attrs *a,
                        kn_tensor **out3) {
    kn_tensor *out[4] = {0};
    if (kn_op_call(name, in, n, a, out, 4) < 0) return NULL;
    if (out3)
        for (int i = 0; i < 3; i++) out3[i] = out[i];
    return out[0];
}

/* ================================ softmax ================================ */

static void test_softmax_values(void) {
    kn_scope sc = kn_scope_begin();
    double xv[] = {1, 2, 3, 1, 1, 1};
    int64_t s23[] = {2, 3};
    kn_tensor *x = T64(2, s23, xv);
    /* softmax([1,2,3]) = [0.09003057, 0.24472847, 0.66524096] */
    double e[] = {0.0900305731703805, 0.2447284710547976, 0.6652409557748219,
                  1.0 / 3, 1.0 / 3, 1.0 / 3};
    KT_CLOSE(kn_softmax(x, 1), expect(x, e), 1e-15, 1e-14);
    KT_CLOSE(kn_softmax(x, -1), expect(x, e), 1e-15, 1e-14);
    double le[6];
    for (int i = 0; i < 6; i++) le[i] = log(e[i]);
    KT_CLOSE(kn_log_softmax(x, 1), expect(x, le), 1e-14, 1e-14);
    /* along dim 0: columns [1,1], [2,1], [3,1] */
    double s1 = 1 / (1 + exp(-1.0)), s2 = 1 / (1 + exp(-2.0));
    double e0[] = {0.5, s1, s2, 0.5, 1 - s1, 1 - s2};
    KT_CLOSE(kn_softmax(x, 0), expect(x, e0), 1e-15, 1e-14);
    /* f32 with a huge shift is stable; -inf entries get 0 */
    float fv[] = {1000, 1001, -INFINITY, 5};
    int64_t s4[] = {4};
    kn_tensor *xf = kn_from_data(KN_F32, 1, s4, fv);
    kn_tensor *yf = kn_softmax(xf, 0);
    float out[4];
    KT_OK(kn_tensor_read(yf, KN_F32, out, sizeof out));
    KT_NEAR(1 / (1 + exp(1.0)), out[0], 1e-6);
    KT_NEAR(0, out[2], 0);
    KT_NEAR(0, out[3], 1e-30);
    kn_tensor *lf = kn_log_softmax(xf, 0);
    KT_OK(kn_tensor_read(lf, KN_F32, out, sizeof out));
    KT_NEAR(-log1p(exp(-1.0)), out[1], 1e-6);
    KT_TRUE(isinf(out[2]) && out[2] < 0);
    /* NaN poisons its row only; 0-d input gives 1 (log: 0) */
    double nv[] = {1, NAN, 2, 0, 0, 0};
    kn_tensor *yn = kn_softmax(T64(2, s23, nv), 1);
    double nb[6];
    KT_OK(kn_tensor_read(yn, KN_F64, nb, sizeof nb));
    KT_TRUE(isnan(nb[0]) && isnan(nb[1]) && isnan(nb[2]));
    KT_NEAR(1.0 / 3, nb[4], 1e-15);
    KT_NEAR(1, kn_item(kn_softmax(kn_scalar(KN_F64, 3), 0)), 0);
    KT_NEAR(0, kn_item(kn_log_softmax(kn_scalar(KN_F32, 3), -1)), 0);
    /* non-contiguous input */
    kn_tensor *xt = kn_transpose(x, 0, 1); /* (3, 2) */
    KT_CLOSE(kn_softmax(xt, 1), kn_transpose(kn_softmax(x, 0), 0, 1), 1e-15, 1e-14);
    kn_scope_end(sc);
}

typedef struct {
    int dim, log, transpose;
} smx;
static kn_tensor *f_softmax(kn_tensor *const *in, void *u) {
    smx *s = u;
    kn_tensor *x = s->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    return s->log ? kn_log_softmax(x, s->dim) : kn_softmax(x, s->dim);
}

static void test_softmax_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s234[] = {2, 3, 4}, s15[] = {1, 5}, s41[] = {4, 1};
    for (int lg = 0; lg < 2; lg++) {
        smx a = {1, lg, 0}, b = {0, lg, 0}, c = {-2, lg, 0}, t = {1, lg, 1};
        kn_tensor *x = leaf(2, s34, 0.3), *y = leaf(3, s234, 1.1);
        KT_TRUE(check_grad(f_softmax, &a, &x, 1));
        KT_TRUE(check_grad(f_softmax, &b, &x, 1));
        KT_TRUE(check_grad(f_softmax, &c, &y, 1));
        KT_TRUE(check_grad(f_softmax, &t, &x, 1)); /* non-contiguous */
        kn_tensor *z = leaf(2, s15, 0.9), *w = leaf(2, s41, 0.2);
        KT_TRUE(check_grad(f_softmax, &a, &z, 1));
        KT_TRUE(check_grad(f_softmax, &a, &w, 1)); /* softmax over a size-1 dim */
        KT_TRUE(check_grad(f_softmax, &b, &w, 1));
    }
    kn_scope_end(sc);
}

/* f(x) = d/dx sum(op(x) * v): gradchecking it checks the second derivative */
typedef struct {
    int which; /* 0 softmax 1 log_softmax 2 layer_norm(w,b) 3 batch_norm train 4 group_norm */
    kn_tensor *v;
} dbl;
static kn_tensor *f_double(kn_tensor *const *in, void *u) {
    dbl *d = u;
    kn_tensor *y = NULL;
    switch (d->which) {
    case 0: y = kn_softmax(in[0], 1); break;
    case 1: y = kn_log_softmax(in[0], 0); break;
    case 2: y = kn_layer_norm(in[0], 1, in[1], in[2], 1e-5); break;
    case 3: y = kn_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5); break;
    case 4: y = kn_group_norm(in[0], 2, in[1], in[2], 1e-5); break;
    }
    kn_tensor *l = kn_sum(kn_mul(y, d->v), NULL, 0, false);
    int n = d->which >= 2 ? 3 : 1;
    kn_tensor *g[3] = {0};
    if (kn_grad(&l, 1, NULL, in, n, true, g) != KN_OK) return NULL;
    /* combine all first-order grads so every second-order path is checked */
    kn_tensor *r = kn_sum(kn_square(g[0]), NULL, 0, false);
    for (int i = 1; i < n; i++) r = kn_add(r, kn_sum(kn_mul(g[i], g[i]), NULL, 0, false));
    return r;
}

static void test_double_backward(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s4[] = {4}, s432[] = {4, 3, 2}, s3[] = {3};
    int64_t s2422[] = {2, 4, 2, 2}, s1[] = {4};
    dbl a = {0, leaf(2, s34, 2.0)};
    kn_tensor *x = leaf(2, s34, 0.5);
    KT_TRUE(check_grad(f_double, &a, &x, 1));
    dbl b = {1, a.v};
    KT_TRUE(check_grad(f_double, &b, &x, 1));
    dbl c = {2, a.v};
    kn_tensor *ln[3] = {leaf(2, s34, 0.1), leaf(1, s4, 0.7), leaf(1, s4, 0.9)};
    KT_TRUE(check_grad(f_double, &c, ln, 3));
    dbl d = {3, leaf(3, s432, 1.7)};
    kn_tensor *bn[3] = {leaf(3, s432, 0.3), leaf(1, s3, 0.2), leaf(1, s3, 0.4)};
    KT_TRUE(check_grad(f_double, &d, bn, 3));
    dbl e = {4, leaf(4, s2422, 0.6)};
    kn_tensor *gn[3] = {leaf(4, s2422, 0.8), leaf(1, s1, 0.2), leaf(1, s1, 0.3)};
    KT_TRUE(check_grad(f_double, &e, gn, 3));
    kn_scope_end(sc);
}

static void test_softmax_fast_vs_ref(void) {
    kn_scope sc = kn_scope_begin();
    int64_t shapes[3][3] = {{67, 1000, 1}, {8, 70, 33}, {3, 5000, 1}};
    int dims[3] = {1, 1, 0};
    for (int k = 0; k < 3; k++) {
        for (int dt = 0; dt < 2; dt++) {
            kn_dtype t = dt ? KN_F64 : KN_F32;
            int nd = shapes[k][2] == 1 ? 2 : 3;
            kn_tensor *x = kn_mul_scalar(randn(t, nd, shapes[k], 10 + k), 3.0);
            kn_tensor *g = randn(t, nd, shapes[k], 20 + k);
            for (int lg = 0; lg < 2; lg++) {
                kn_tensor *yf = lg ? kn_log_softmax(x, dims[k]) : kn_softmax(x, dims[k]);
                kn_attrs a = {0};
                kn_attrs_set_int(&a, "dim", dims[k]);
                kn_tensor *in[2] = {g, yf};
                const char *bw = lg ? "log_softmax_backward" : "softmax_backward";
                kn_tensor *gf = call1(bw, in, 2, &a, NULL);
                bool prev = kn__force_ref(true);
                kn_tensor *yr = lg ? kn_log_softmax(x, dims[k]) : kn_softmax(x, dims[k]);
                kn_tensor *gr = call1(bw, in, 2, &a, NULL);
                kn__force_ref(prev);
                double tol = dt ? 1e-13 : 3e-6;
                KT_CLOSE(yf, yr, tol, tol);
                KT_CLOSE(gf, gr, tol, 1e-5);
            }
        }
    }
    kn_scope_end(sc);
}

/* ================================ layer_norm ================================ */

static void test_layer_norm_values(void) {
    kn_scope sc = kn_scope_begin();
    double xv[] = {1, 2, 3, 4, 2, 2, 2, 2};
    int64_t s24[] = {2, 4}, s4[] = {4};
    kn_tensor *x = T64(2, s24, xv);
    double eps = 1e-5, rs = 1 / sqrt(1.25 + eps), rs0 = 1 / sqrt(eps);
    double e[] = {-1.5 * rs, -0.5 * rs, 0.5 * rs, 1.5 * rs, 0, 0, 0, 0};
    (void)rs0;
    KT_CLOSE(kn_layer_norm(x, 1, NULL, NULL, eps), expect(x, e), 1e-14, 1e-13);
    double wv[] = {1, 2, 3, 4}, bv[] = {0.5, 0, -1, 0};
    kn_tensor *w = T64(1, s4, wv), *b = T64(1, s4, bv);
    double ewb[8], ew[8], eb[8];
    for (int i = 0; i < 8; i++) {
        ewb[i] = e[i] * wv[i % 4] + bv[i % 4];
        ew[i] = e[i] * wv[i % 4];
        eb[i] = e[i] + bv[i % 4];
    }
    KT_CLOSE(kn_layer_norm(x, 1, w, b, eps), expect(x, ewb), 1e-14, 1e-13);
    KT_CLOSE(kn_layer_norm(x, 1, w, NULL, eps), expect(x, ew), 1e-14, 1e-13);
    KT_CLOSE(kn_layer_norm(x, 1, NULL, b, eps), expect(x, eb), 1e-14, 1e-13);
    /* over both dims: mean 2.25, var = mean(x^2) - 2.25^2 */
    double var = (1 + 4 + 9 + 16 + 16) / 8.0 - 2.25 * 2.25, r2 = 1 / sqrt(var + eps);
    double e2[8];
    for (int i = 0; i < 8; i++) e2[i] = (xv[i] - 2.25) * r2;
    KT_CLOSE(kn_layer_norm(x, 2, NULL, NULL, eps), expect(x, e2), 1e-14, 1e-13);
    /* saved statistics through the generic entry */
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "nnorm", 1);
    kn_attrs_set_float(&a, "eps", eps);
    kn_tensor *o3[3];
    KT_NOTNULL(call1("layer_norm", &x, 1, &a, o3));
    KT_EQ_INT(2, kn_tensor_ndim(o3[1]));
    KT_EQ_INT(1, kn_tensor_dim(o3[1], 1));
    double m[] = {2.5, 2}, r[] = {rs, rs0};
    KT_CLOSE(o3[1], expect(o3[1], m), 1e-15, 1e-14);
    KT_CLOSE(o3[2], expect(o3[2], r), 1e-9, 1e-12);
    /* f32 and non-contiguous input */
    kn_tensor *xf = kn_cast(kn_transpose(T64(2, s24, xv), 0, 1), KN_F32); /* (4, 2) */
    kn_tensor *yf = kn_layer_norm(kn_transpose(kn_transpose(xf, 0, 1), 0, 1), 1, NULL, NULL, eps);
    KT_CLOSE(yf, kn_cast(kn_layer_norm(kn_cast(xf, KN_F64), 1, NULL, NULL, eps), KN_F32), 1e-6,
             1e-6);
    kn_scope_end(sc);
}

typedef struct {
    int nnorm, hw, hb, transpose;
    double eps;
} lnc;
static kn_tensor *f_layer_norm(kn_tensor *const *in, void *u) {
    lnc *c = u;
    kn_tensor *x = c->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    kn_tensor *w = c->hw ? in[1] : NULL, *b = c->hb ? in[1 + c->hw] : NULL;
    return kn_layer_norm(x, c->nnorm, w, b, c->eps);
}

static void test_layer_norm_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s4[] = {4}, s234[] = {2, 3, 4}, s43[] = {4, 3};
    int64_t s15[] = {1, 5}, s5[] = {5}, s41[] = {4, 1}, s1[] = {1};
    lnc a = {1, 1, 1, 0, 1e-5};
    kn_tensor *in[3] = {leaf(2, s34, 0.1), leaf(1, s4, 0.5), leaf(1, s4, 0.9)};
    KT_TRUE(check_grad(f_layer_norm, &a, in, 3));
    lnc b = {2, 1, 0, 0, 1e-5};
    kn_tensor *in2[2] = {leaf(3, s234, 0.4), leaf(2, s34, 0.2)};
    KT_TRUE(check_grad(f_layer_norm, &b, in2, 2));
    lnc c = {1, 0, 1, 0, 1e-3};
    kn_tensor *in3[2] = {leaf(2, s34, 0.7), leaf(1, s4, 0.3)};
    KT_TRUE(check_grad(f_layer_norm, &c, in3, 2));
    lnc d = {1, 1, 1, 1, 1e-5}; /* non-contiguous x: (4,3)^T */
    kn_tensor *in4[3] = {leaf(2, s43, 0.6), leaf(1, s4, 0.5), leaf(1, s4, 0.9)};
    KT_TRUE(check_grad(f_layer_norm, &d, in4, 3));
    lnc e = {1, 1, 1, 0, 1e-5}; /* one row */
    kn_tensor *in5[3] = {leaf(2, s15, 0.3), leaf(1, s5, 0.1), leaf(1, s5, 0.2)};
    KT_TRUE(check_grad(f_layer_norm, &e, in5, 3));
    lnc f = {1, 1, 1, 0, 1e-2}; /* normalising one element: y = b, grad x = 0 */
    kn_tensor *in6[3] = {leaf(2, s41, 0.3), leaf(1, s1, 0.1), leaf(1, s1, 0.2)};
    KT_TRUE(check_grad(f_layer_norm, &f, in6, 3));
    lnc g = {3, 0, 0, 0, 1e-5}; /* whole tensor */
    kn_tensor *x3 = leaf(3, s234, 0.8);
    KT_TRUE(check_grad(f_layer_norm, &g, &x3, 1));
    kn_scope_end(sc);
}

static void test_layer_norm_fast_vs_ref(void) {
    kn_scope sc = kn_scope_begin();
    int64_t shapes[2][2] = {{300, 768}, {5, 3000}};
    for (int k = 0; k < 2; k++)
        for (int dt = 0; dt < 2; dt++) {
            kn_dtype t = dt ? KN_F64 : KN_F32;
            int64_t M = shapes[k][1], sM[1] = {M}, sR[2] = {shapes[k][0], 1};
            kn_tensor *x = kn_add_scalar(randn(t, 2, shapes[k], 1 + k), 2.0);
            kn_tensor *w = randn(t, 1, sM, 2), *b = randn(t, 1, sM, 3);
            kn_tensor *g = randn(t, 2, shapes[k], 4);
            kn_tensor *gm = randn(t, 2, sR, 5), *gr = randn(t, 2, sR, 6);
            kn_attrs a = {0};
            kn_attrs_set_int(&a, "nnorm", 1);
            kn_tensor *in[3] = {x, w, b}, *f3[3], *r3[3], *fb[3], *rb[3];
            KT_NOTNULL(call1("layer_norm", in, 3, &a, f3));
            kn_attrs ab = {0};
            kn_attrs_set_int(&ab, "nnorm", 1);
            kn_tensor *bin[7] = {g, x, f3[1], f3[2], gm, gr, w};
            KT_NOTNULL(call1("layer_norm_backward", bin, 7, &ab, fb));
            bool prev = kn__force_ref(true);
            KT_NOTNULL(call1("layer_norm", in, 3, &a, r3));
            KT_NOTNULL(call1("layer_norm_backward", bin, 7, &ab, rb));
            kn__force_ref(prev);
            double tol = dt ? 1e-11 : 2e-5;
            for (int i = 0; i < 3; i++) {
                KT_CLOSE(f3[i], r3[i], tol, tol);
                KT_CLOSE(fb[i], rb[i], tol * 10, tol);
            }
            /* without weight: 6 inputs */
            kn_attrs_set_int(&ab, "has_weight", 0);
            KT_NOTNULL(call1("layer_norm_backward", bin, 6, &ab, fb));
            prev = kn__force_ref(true);
            KT_NOTNULL(call1("layer_norm_backward", bin, 6, &ab, rb));
            kn__force_ref(prev);
            KT_CLOSE(fb[0], rb[0], tol * 10, tol);
        }
    kn_scope_end(sc);
}

/* ================================ group_norm ================================ */

static void test_group_norm_values(void) {
    kn_scope sc = kn_scope_begin();
    /* x (1, 4, 2): groups of 2 channels = 4 values each */
    double xv[] = {1, 2, 3, 4, 0, 0, 4, 4};
    int64_t s142[] = {1, 4, 2}, s4[] = {4};
    kn_tensor *x = T64(3, s142, xv);
    double eps = 1e-5, r1 = 1 / sqrt(1.25 + eps), r2 = 1 / sqrt(4 + eps);
    double e[] = {-1.5 * r1, -0.5 * r1, 0.5 * r1, 1.5 * r1, -2 * r2, -2 * r2, 2 * r2, 2 * r2};
    KT_CLOSE(kn_group_norm(x, 2, NULL, NULL, eps), expect(x, e), 1e-14, 1e-13);
    double wv[] = {1, 2, 3, 4}, bv[] = {0, 1, 0, -1};
    double ew[8];
    for (int i = 0; i < 8; i++) ew[i] = e[i] * wv[i / 2] + bv[i / 2];
    KT_CLOSE(kn_group_norm(x, 2, T64(1, s4, wv), T64(1, s4, bv), eps), expect(x, ew), 1e-14,
             1e-13);
    /* groups = 1 equals layer_norm over (C, *) */
    KT_CLOSE(kn_group_norm(x, 1, NULL, NULL, eps), kn_layer_norm(x, 2, NULL, NULL, eps), 1e-14,
             1e-13);
    kn_scope_end(sc);
}

typedef struct {
    int64_t groups;
    int hw, hb, noncontig;
} gnc;
static kn_tensor *f_group_norm(kn_tensor *const *in, void *u) {
    gnc *c = u;
    kn_tensor *x = c->noncontig ? kn_transpose(in[0], 0, 2) : in[0];
    return kn_group_norm(x, c->groups, c->hw ? in[1] : NULL, c->hb ? in[1 + c->hw] : NULL, 1e-5);
}

static void test_group_norm_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s264[] = {2, 6, 4}, s6[] = {6}, s2[] = {2, 4}, s462[] = {4, 6, 2}, s41[] = {1, 4};
    int64_t s4[] = {4};
    gnc a = {3, 1, 1, 0};
    kn_tensor *in[3] = {leaf(3, s264, 0.1), leaf(1, s6, 0.5), leaf(1, s6, 0.9)};
    KT_TRUE(check_grad(f_group_norm, &a, in, 3));
    gnc b = {2, 0, 0, 0};
    kn_tensor *x2 = leaf(2, s2, 0.4); /* (N, C) input */
    KT_TRUE(check_grad(f_group_norm, &b, &x2, 1));
    gnc c = {6, 1, 0, 1}; /* one channel per group, non-contiguous (4,6,2)^T(0,2) = (2,6,4) */
    kn_tensor *in3[2] = {leaf(3, s462, 0.2), leaf(1, s6, 0.7)};
    KT_TRUE(check_grad(f_group_norm, &c, in3, 2));
    gnc d = {1, 0, 1, 0};
    kn_tensor *in4[2] = {leaf(2, s41, 0.2), leaf(1, s4, 0.6)};
    KT_TRUE(check_grad(f_group_norm, &d, in4, 2));
    kn_scope_end(sc);
}

static void test_group_norm_fast_vs_ref(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sx[] = {4, 32, 9, 9}, sc32[] = {32};
    for (int dt = 0; dt < 2; dt++) {
        kn_dtype t = dt ? KN_F64 : KN_F32;
        kn_tensor *x = randn(t, 4, sx, 7), *w = randn(t, 1, sc32, 8), *b = randn(t, 1, sc32, 9);
        kn_tensor *yf = kn_group_norm(x, 8, w, b, 1e-5);
        bool prev = kn__force_ref(true);
        kn_tensor *yr = kn_group_norm(x, 8, w, b, 1e-5);
        kn__force_ref(prev);
        KT_CLOSE(yf, yr, dt ? 1e-12 : 1e-5, 1e-5);
    }
    kn_scope_end(sc);
}

/* ================================ batch_norm ================================ */

static void test_batch_norm_values(void) {
    kn_scope sc = kn_scope_begin();
    /* x (2, 2, 2): channel 0 = {1, 2, 5, 6}, channel 1 = {0, 0, 4, 8} */
    double xv[] = {1, 2, 0, 0, 5, 6, 4, 8};
    int64_t s222[] = {2, 2, 2}, s2[] = {2};
    kn_tensor *x = T64(3, s222, xv);
    double rmv[] = {1, -1}, rvv[] = {2, 0.5};
    kn_tensor *rm = T64(1, s2, rmv), *rv = T64(1, s2, rvv);
    double eps = 1e-5, mom = 0.1;
    /* batch stats: ch0 mean 3.5, var (6.25+2.25+2.25+6.25)/4 = 4.25;
     * ch1 mean 3, var (9+9+1+25)/4 = 11 */
    double m0 = 3.5, v0 = 4.25, m1 = 3, v1 = 11;
    double wv[] = {2, -1}, bv[] = {0.5, 1};
    kn_tensor *y = kn_batch_norm(x, rm, rv, T64(1, s2, wv), T64(1, s2, bv), true, mom, eps);
    double e[8];
    for (int i = 0; i < 8; i++) {
        int c = (i / 2) % 2;
        double m = c ? m1 : m0, v = c ? v1 : v0;
        e[i] = (xv[i] - m) / sqrt(v + eps) * wv[c] + bv[c];
    }
    KT_CLOSE(y, expect(y, e), 1e-14, 1e-13);
    /* running stats: momentum * batch + (1 - momentum) * running, unbiased var (n = 4) */
    double erm[] = {0.1 * 3.5 + 0.9 * 1, 0.1 * 3 + 0.9 * -1};
    double erv[] = {0.1 * (4.25 * 4 / 3) + 0.9 * 2, 0.1 * (11.0 * 4 / 3) + 0.9 * 0.5};
    KT_CLOSE(rm, expect(rm, erm), 1e-15, 1e-14);
    KT_CLOSE(rv, expect(rv, erv), 1e-15, 1e-14);
    /* eval: uses the (updated) running stats, does not change them */
    kn_tensor *ye = kn_batch_norm(x, rm, rv, NULL, NULL, false, mom, eps);
    double ee[8];
    for (int i = 0; i < 8; i++) {
        int c = (i / 2) % 2;
        ee[i] = (xv[i] - erm[c]) / sqrt(erv[c] + eps);
    }
    KT_CLOSE(ye, expect(ye, ee), 1e-14, 1e-13);
    KT_CLOSE(rm, expect(rm, erm), 0, 0);
    KT_CLOSE(rv, expect(rv, erv), 0, 0);
    /* training with only running_var, and momentum 1: running_var = unbiased batch var */
    double rv2v[] = {0, 0};
    kn_tensor *rv2 = T64(1, s2, rv2v);
    KT_NOTNULL(kn_batch_norm(x, NULL, rv2, NULL, NULL, true, 1.0, eps));
    double erv2[] = {4.25 * 4 / 3, 11.0 * 4 / 3};
    KT_CLOSE(rv2, expect(rv2, erv2), 1e-15, 1e-14);
    /* f32 running stats in a non-contiguous view (every other element of a (4,) buffer) */
    float buf[4] = {0, 9, 0, 9};
    int64_t s4[] = {4};
    kn_tensor *rb = kn_from_data(KN_F32, 1, s4, buf);
    kn_tensor *rmv2 = kn_slice(rb, 0, 0, 4, 2);
    KT_NOTNULL(kn_batch_norm(kn_cast(x, KN_F32), rmv2, NULL, NULL, NULL, true, 0.5, eps));
    float got[4];
    KT_OK(kn_tensor_read(rb, KN_F32, got, sizeof got));
    KT_NEAR(1.75, got[0], 1e-6);
    KT_NEAR(9, got[1], 0);
    KT_NEAR(1.5, got[2], 1e-6);
    /* 2-D (N, C) input (the small-plane path), f32 */
    double x2v[] = {1, 10, 3, 20, 5, 60};
    int64_t s32[] = {3, 2};
    kn_tensor *x2 = kn_cast(T64(2, s32, x2v), KN_F32);
    kn_tensor *y2 = kn_batch_norm(x2, NULL, NULL, NULL, NULL, true, 0.1, 0);
    double va = 8.0 / 3, vb = (400 + 100 + 900) / 3.0;
    double e2[] = {-2 / sqrt(va), -20 / sqrt(vb), 0, -10 / sqrt(vb), 2 / sqrt(va), 30 / sqrt(vb)};
    KT_CLOSE(y2, kn_cast(T64(2, s32, e2), KN_F32), 1e-6, 1e-6);
    kn_scope_end(sc);
}

typedef struct {
    int training, hw, hb, noncontig;
    kn_tensor *rm, *rv;
} bnc;
static kn_tensor *f_batch_norm(kn_tensor *const *in, void *u) {
    bnc *c = u;
    kn_tensor *x = c->noncontig ? kn_transpose(in[0], 0, 2) : in[0];
    return kn_batch_norm(x, c->rm, c->rv, c->hw ? in[1] : NULL, c->hb ? in[1 + c->hw] : NULL,
                         c->training, 0.1, 1e-5);
}

static void test_batch_norm_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s432[] = {4, 3, 2}, s3[] = {3}, s53[] = {5, 3}, s2388[] = {2, 3, 8, 8};
    int64_t s234[] = {2, 3, 4}, s1[] = {1}, s612[] = {6, 1, 2};
    double rmv[] = {0.1, -0.2, 0.3}, rvv[] = {1.5, 0.7, 2.0};
    kn_tensor *rm = T64(1, s3, rmv), *rv = T64(1, s3, rvv);
    for (int tr = 0; tr < 2; tr++) {
        bnc a = {tr, 1, 1, 0, tr ? NULL : rm, tr ? NULL : rv};
        kn_tensor *in[3] = {leaf(3, s432, 0.1), leaf(1, s3, 0.5), leaf(1, s3, 0.9)};
        KT_TRUE(check_grad(f_batch_norm, &a, in, 3));
        bnc b = {tr, 0, 0, 0, rm, rv}; /* 2-D input, no affine, with running stats */
        kn_tensor *x2 = leaf(2, s53, 0.3);
        KT_TRUE(check_grad(f_batch_norm, &b, &x2, 1));
        bnc c = {tr, 1, 0, 0, tr ? NULL : rm, tr ? NULL : rv}; /* planes of 64: the big path */
        kn_tensor *in3[2] = {leaf(4, s2388, 0.2), leaf(1, s3, 0.4)};
        KT_TRUE(check_grad(f_batch_norm, &c, in3, 2));
        bnc d = {tr, 0, 1, 1, tr ? NULL : rm, tr ? NULL : rv}; /* non-contiguous: (4,3,2)^T */
        kn_tensor *in4[2] = {leaf(3, s234, 0.6), leaf(1, s3, 0.4)};
        KT_TRUE(check_grad(f_batch_norm, &d, in4, 2));
    }
    /* one channel (size-1 dim), training */
    bnc e = {1, 1, 1, 0, NULL, NULL};
    kn_tensor *in5[3] = {leaf(3, s612, 0.8), leaf(1, s1, 0.5), leaf(1, s1, 0.9)};
    KT_TRUE(check_grad(f_batch_norm, &e, in5, 3));
    kn_scope_end(sc);
}

static void test_batch_norm_fast_vs_ref(void) {
    kn_scope sc = kn_scope_begin();
    int64_t shapes[3][4] = {{8, 16, 12, 12}, {64, 40, 1, 1}, {6, 5, 3, 7}};
    for (int k = 0; k < 3; k++)
        for (int dt = 0; dt < 2; dt++)
            for (int tr = 0; tr < 2; tr++) {
                kn_dtype t = dt ? KN_F64 : KN_F32;
                int64_t C = shapes[k][1], sC[1] = {C};
                int nd = k == 1 ? 2 : 4;
                kn_tensor *x = kn_add_scalar(randn(t, nd, shapes[k], 11 + k), 3.0);
                kn_tensor *w = randn(t, 1, sC, 12), *b = randn(t, 1, sC, 13);
                kn_tensor *g = randn(t, nd, shapes[k], 14);
                kn_tensor *gm = randn(t, 1, sC, 15), *gr = randn(t, 1, sC, 16);
                kn_tensor *rm[2], *rv[2], *f3[3], *r3[3], *fb[3], *rb[3];
                for (int i = 0; i < 2; i++) {
                    rm[i] = kn_mul_scalar(randn(t, 1, sC, 17), 0.1);
                    rv[i] = kn_add_scalar(kn_abs(randn(t, 1, sC, 18)), 0.5);
                }
                kn_attrs a = {0};
                kn_attrs_set_int(&a, "has_mean", 1);
                kn_attrs_set_int(&a, "has_var", 1);
                kn_attrs_set_int(&a, "has_weight", 1);
                kn_attrs_set_int(&a, "has_bias", 1);
                kn_attrs_set_int(&a, "training", tr);
                kn_tensor *in0[5] = {x, rm[0], rv[0], w, b}, *in1[5] = {x, rm[1], rv[1], w, b};
                KT_NOTNULL(call1("batch_norm", in0, 5, &a, f3));
                bool prev = kn__force_ref(true);
                KT_NOTNULL(call1("batch_norm", in1, 5, &a, r3));
                kn__force_ref(prev);
                double tol = dt ? 1e-11 : 3e-5;
                for (int i = 0; i < 3; i++) KT_CLOSE(f3[i], r3[i], tol, tol);
                KT_CLOSE(rm[0], rm[1], tol, tol);
                KT_CLOSE(rv[0], rv[1], tol, tol);
                kn_attrs ab = {0};
                kn_attrs_set_int(&ab, "training", tr);
                kn_tensor *bin[7] = {g, x, f3[1], f3[2], gm, gr, w};
                KT_NOTNULL(call1("batch_norm_backward", bin, 7, &ab, fb));
                prev = kn__force_ref(true);
                KT_NOTNULL(call1("batch_norm_backward", bin, 7, &ab, rb));
                kn__force_ref(prev);
                for (int i = 0; i < 3; i++) KT_CLOSE(fb[i], rb[i], tol * 30, tol * 10);
            }
    kn_scope_end(sc);
}

/* ================================ threads, scopes ================================ */

static void test_threads_independent(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sx[] = {200, 384}, sw[] = {384}, sb[] = {8, 16, 20, 20}, s16[] = {16};
    kn_tensor *x = kn_add_scalar(randn(KN_F32, 2, sx, 31), 1.0);
    kn_tensor *w = randn(KN_F32, 1, sw, 32);
    kn_tensor_set_requires_grad(x, true);
    kn_tensor_set_requires_grad(w, true);
    kn_tensor *xb = randn(KN_F32, 4, sb, 33), *wb = randn(KN_F32, 1, s16, 34);
    kn_tensor_set_requires_grad(xb, true);
    kn_tensor_set_requires_grad(wb, true);
    kn_tensor *res[2][6];
    int prev = kn_get_num_threads();
    for (int k = 0; k < 2; k++) {
        kn_set_num_threads(k + 1);
        kn_tensor *y = kn_layer_norm(x, 1, w, NULL, 1e-5);
        kn_tensor *l = kn_sum(kn_mul(kn_softmax(y, 1), y), NULL, 0, false);
        kn_tensor *in[2] = {x, w}, *g[2];
        KT_OK(kn_grad(&l, 1, NULL, in, 2, false, g));
        kn_tensor *yb = kn_batch_norm(xb, NULL, NULL, wb, NULL, true, 0.1, 1e-5);
        kn_tensor *lb = kn_sum(kn_mul(yb, yb), NULL, 0, false);
        kn_tensor *inb[2] = {xb, wb}, *gb[2];
        KT_OK(kn_grad(&lb, 1, NULL, inb, 2, false, gb));
        res[k][0] = y, res[k][1] = g[0], res[k][2] = g[1];
        res[k][3] = yb, res[k][4] = gb[0], res[k][5] = gb[1];
    }
    kn_set_num_threads(prev);
    for (int i = 0; i < 6; i++) KT_CLOSE(res[0][i], res[1][i], 0, 0);
    kn_scope_end(sc);
}

static void test_scopes_and_leaks(void) {
    size_t live = kn_live_tensors();
    int64_t s24[] = {2, 4}, s4[] = {4};
    kn_tensor *x = randn(KN_F32, 2, s24, 3), *w = kn_ones(KN_F32, 1, s4);
    /* outside any scope: the caller owns y; the saved statistics must not leak */
    kn_tensor *y = kn_layer_norm(x, 1, w, NULL, 1e-5);
    KT_NOTNULL(y);
    kn_tensor *z = kn_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
    KT_NOTNULL(z);
    kn_tensor_free(y);
    kn_tensor_free(z);
    /* inside a scope, y stays valid until the scope ends */
    kn_scope s = kn_scope_begin();
    kn_tensor *y2 = kn_group_norm(kn_reshape(x, 2, s24), 2, NULL, NULL, 1e-5);
    KT_NOTNULL(y2);
    KT_EQ_INT(8, kn_tensor_numel(y2));
    kn_scope_end(s);
    kn_tensor_free(x);
    kn_tensor_free(w);
    KT_EQ_INT(live, kn_live_tensors());
}

/* ================================ errors ================================ */

static void test_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s3[] = {3}, s4[] = {4}, s13[] = {1, 3}, s2[] = {2};
    kn_tensor *x = kn_ones(KN_F64, 2, s23), *xi = kn_ones(KN_I32, 2, s23);
    KT_ERR(KN_EDTYPE, kn_softmax(xi, 1), "softmax");
    KT_ERR(KN_EINVAL, kn_softmax(x, 2), "softmax");
    KT_ERR(KN_EINVAL, kn_log_softmax(x, -3), "log_softmax");
    KT_ERR(KN_EINVAL, kn_layer_norm(x, 3, NULL, NULL, 1e-5), "layer_norm");
    KT_ERR(KN_EINVAL, kn_layer_norm(x, 0, NULL, NULL, 1e-5), "layer_norm");
    KT_ERR(KN_ESHAPE, kn_layer_norm(x, 1, kn_ones(KN_F64, 1, s4), NULL, 1e-5), "weight");
    KT_ERR(KN_ESHAPE, kn_layer_norm(x, 1, NULL, kn_ones(KN_F64, 2, s13), 1e-5), "bias");
    KT_ERR(KN_EDTYPE, kn_layer_norm(x, 1, kn_ones(KN_F32, 1, s3), NULL, 1e-5), "layer_norm");
    KT_ERR(KN_EINVAL, kn_layer_norm(x, 1, NULL, NULL, -1), "eps");
    KT_ERR(KN_EINVAL, kn_group_norm(x, 2, NULL, NULL, 1e-5), "group_norm");
    KT_ERR(KN_ESHAPE, kn_group_norm(kn_ones(KN_F64, 1, s3), 1, NULL, NULL, 1e-5), "group_norm");
    KT_ERR(KN_ESHAPE, kn_group_norm(x, 3, kn_ones(KN_F64, 1, s2), NULL, 1e-5), "weight");
    KT_ERR(KN_EINVAL, kn_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5),
           "running_mean");
    KT_ERR(KN_EINVAL, kn_batch_norm(kn_ones(KN_F64, 2, s13), NULL, NULL, NULL, NULL, true, 0.1,
                                    1e-5),
           "more than 1 value");
    KT_ERR(KN_ESHAPE, kn_batch_norm(x, kn_zeros(KN_F64, 1, s2), NULL, NULL, NULL, true, 0.1, 1e-5),
           "running_mean");
    KT_ERR(KN_EDTYPE, kn_batch_norm(x, NULL, NULL, kn_ones(KN_F32, 1, s3), NULL, true, 0.1, 1e-5),
           "batch_norm");
    KT_ERR(KN_ESHAPE, kn_batch_norm(kn_ones(KN_F64, 1, s3), NULL, NULL, NULL, NULL, true, 0.1,
                                    1e-5),
           "batch_norm");
    KT_ERR(KN_EDTYPE, kn_batch_norm(xi, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), "batch_norm");
    /* internal ops validate too */
    kn_tensor *in[2] = {x, kn_ones(KN_F64, 1, s3)}, *out[1];
    kn_clear_error();
    KT_TRUE(kn_op_call("softmax_backward", in, 2, NULL, out, 1) < 0);
    KT_TRUE(strstr(kn_last_error(), "softmax_backward") != NULL);
    /* NULL input keeps the earlier error */
    KT_ERR(KN_EDTYPE, kn_layer_norm(kn_softmax(xi, 0), 1, NULL, NULL, 1e-5), "softmax");
    kn_scope_end(sc);
}

int main(void) {
    KT_RUN(test_softmax_values);
    KT_RUN(test_softmax_grad);
    KT_RUN(test_softmax_fast_vs_ref);
    KT_RUN(test_layer_norm_values);
    KT_RUN(test_layer_norm_grad);
    KT_RUN(test_layer_norm_fast_vs_ref);
    KT_RUN(test_group_norm_values);
    KT_RUN(test_group_norm_grad);
    KT_RUN(test_group_norm_fast_vs_ref);
    KT_RUN(test_batch_norm_values);
    KT_RUN(test_batch_norm_grad);
    KT_RUN(test_batch_norm_fast_vs_ref);
    KT_RUN(test_double_backward);
    KT_RUN(test_threads_independent);
    KT_RUN(test_scopes_and_leaks);
    KT_RUN(test_errors);
    return kt_finish();
}
