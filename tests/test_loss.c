/*
 * test_loss.c - losses, dropout and embedding (src/ops/loss.c): hand-checked values, a double
 * reference for cross_entropy (weights, ignore_index, label smoothing, spatial dims), fast vs
 * reference kernels, f64 finite-difference gradient checks of every differentiable op, dropout
 * statistics and reproducibility, and error paths.
 */
#include <time.h>

#include "kn_test.h"

#include "ops/op_impl.h"

static kn_tensor *T64(int nd, const int64_t *shape, const double *v) {
    return kn_from_data(KN_F64, nd, shape, v);
}
static kn_tensor *I64(int nd, const int64_t *shape, const int64_t *v) {
    return kn_from_data(KN_I64, nd, shape, v);
}
static kn_tensor *leaf(int nd, const int64_t *shape, double seed) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        v[i] = sin(seed + 0.7 * (double)i) * 1.5 + 0.1 * (double)(i % 3);
    kn_tensor *t = T64(nd, shape, v);
    free(v);
    kn_tensor_set_requires_grad(t, true);
    return t;
}
static int check_grad(kn_gradcheck_fn f, void *user, kn_tensor *const *in, int n) {
    char msg[512] = "";
    kn_status s = kn_gradcheck(f, user, in, n, 1e-6, 1e-7, 1e-5, msg, sizeof msg);
    if (s != KN_OK) fprintf(stderr, "  gradcheck: %s (%s)\n", msg, kn_last_error());
    return s == KN_OK;
}
static double item(kn_tensor *t) { return t ? kn_item(t) : NAN; }

/* ======================= cross_entropy reference (double) ======================= */
/* x (N, C, S) contiguous doubles, t (N*S); returns the reduced loss or fills none[] */
static double ce_ref(const double *x, const int64_t *t, int64_t N, int64_t C, int64_t S,
                     const double *w, int64_t ign, double eps, int red, double *none) {
    double tot = 0, W = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            int64_t ti = t[n * S + s];
            double l = 0;
            if (ti != ign) {
                double m = -INFINITY, se = 0;
                for (int64_t c = 0; c < C; c++) m = fmax(m, x[(n * C + c) * S + s]);
                for (int64_t c = 0; c < C; c++) se += exp(x[(n * C + c) * S + s] - m);
                double lse = m + log(se), wt = w ? w[ti] : 1;
                l = (1 - eps) * wt * (lse - x[(n * C + ti) * S + s]);
                for (int64_t c = 0; c < C; c++)
                    l += eps / (double)C * (w ? w[c] : 1) * (lse - x[(n * C + c) * S + s]);
                W += wt;
            }
            if (none) none[n * S + s] = l;
            tot += l;
        }
    return red == KN_REDUCE_MEAN ? tot / W : tot;
}

static void test_ce_values(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s2[] = {2}, s3[] = {3};
    double xv[] = {1, 2, 3, 1, 1, 1};
    int64_t tv[] = {2, 0};
    kn_tensor *x = T64(2, s23, xv), *t = I64(1, s2, tv);
    KT_NEAR(0.753109126556245, item(kn_cross_entropy(x, t, NULL)), 1e-14);
    kn_loss_opts o = {.reduction = KN_REDUCE_SUM};
    KT_NEAR(1.506218253112491, item(kn_cross_entropy(x, t, &o)), 1e-14);
    o.reduction = KN_REDUCE_NONE;
    kn_tensor *nn = kn_cross_entropy(x, t, &o);
    double en[] = {0.407605964444381, 1.098612288668110};
    KT_CLOSE(nn, T64(1, s2, en), 1e-14, 0);
    /* weighted mean divides by the target weights */
    double wv[] = {1, 2, 3};
    kn_loss_opts ow = {.weight = T64(1, s3, wv)};
    KT_NEAR(0.580357545500313, item(kn_cross_entropy(x, t, &ow)), 1e-14);
    /* label smoothing, unweighted and weighted */
    kn_loss_opts ol = {.label_smoothing = 0.1};
    KT_NEAR(0.803109126556245, item(kn_cross_entropy(x, t, &ol)), 1e-14);
    ol.weight = ow.weight;
    KT_NEAR(0.630966036939240, item(kn_cross_entropy(x, t, &ol)), 1e-14);
    /* f32 gives the same to float precision */
    kn_tensor *x32 = kn_cast(x, KN_F32);
    kn_tensor *l32 = kn_cross_entropy(x32, t, NULL);
    KT_EQ_INT(KN_F32, kn_tensor_dtype(l32));
    KT_NEAR(0.753109126556245, item(l32), 1e-6);
    /* int32 targets, unbatched (C) logits with a 0-d target */
    int32_t t32[] = {2, 0};
    KT_NEAR(0.753109126556245, item(kn_cross_entropy(x, kn_from_data(KN_I32, 1, s2, t32), NULL)),
            1e-14);
    kn_tensor *row = T64(1, s3, xv);
    kn_tensor *t0 = kn_scalar(KN_I64, 2);
    KT_NEAR(0.407605964444381, item(kn_cross_entropy(row, t0, NULL)), 1e-14);
    kn_scope_end(sc);
}

static void test_ce_ignore(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s33[] = {3, 3}, s3[] = {3};
    double xv[] = {1, 2, 3, 1, 1, 1, 0.5, -1, 2};
    int64_t tv[] = {2, -100, 0};
    kn_tensor *x = T64(2, s33, xv), *t = I64(1, s3, tv);
    double none[3];
    int64_t tr[] = {2, -100, 0};
    double e = ce_ref(xv, tr, 3, 3, 1, NULL, -100, 0, KN_REDUCE_MEAN, none);
    KT_NEAR(e, item(kn_cross_entropy(x, t, NULL)), 1e-14);
    kn_loss_opts o = {.reduction = KN_REDUCE_NONE};
    kn_tensor *ln = kn_cross_entropy(x, t, &o);
    KT_CLOSE(ln, T64(1, s3, none), 1e-14, 0);
    KT_NEAR(0.0, kn_tensor_get(ln, (int64_t[]){1}), 0);
    /* a custom ignore_index that is a valid class */
    int64_t tv2[] = {2, 1, 1};
    kn_loss_opts oi = {.has_ignore_index = true, .ignore_index = 1};
    double e2 = ce_ref(xv, tv2, 3, 3, 1, NULL, 1, 0, KN_REDUCE_MEAN, NULL);
    KT_NEAR(e2, item(kn_cross_entropy(x, I64(1, s3, tv2), &oi)), 1e-14);
    /* with weights and label smoothing */
    double wv[] = {0.5, 2, 1.5};
    oi.weight = T64(1, s3, wv);
    oi.label_smoothing = 0.2;
    double e3 = ce_ref(xv, tv2, 3, 3, 1, wv, 1, 0.2, KN_REDUCE_MEAN, NULL);
    KT_NEAR(e3, item(kn_cross_entropy(x, I64(1, s3, tv2), &oi)), 1e-14);
    /* every target ignored: mean is NaN like PyTorch, sum is 0 */
    int64_t all[] = {-100, -100, -100};
    KT_TRUE(isnan(item(kn_cross_entropy(x, I64(1, s3, all), NULL))));
    kn_loss_opts os = {.reduction = KN_REDUCE_SUM};
    KT_NEAR(0.0, item(kn_cross_entropy(x, I64(1, s3, all), &os)), 0);
    kn_scope_end(sc);
}

static void test_ce_spatial(void) {
    kn_scope sc = kn_scope_begin();
    /* (N, C, H, W) = (2, 4, 3, 2), targets (2, 3, 2) */
    int64_t sx[] = {2, 4, 3, 2}, st[] = {2, 3, 2}, s4[] = {4};
    double xv[48];
    for (int i = 0; i < 48; i++) xv[i] = sin(0.37 * i) * 2;
    int64_t tv[12] = {0, 3, 2, 1, -100, 2, 3, 3, 0, 1, 2, 0};
    double wv[] = {1, 0.5, 2, 1.25};
    kn_tensor *x = T64(4, sx, xv), *t = I64(3, st, tv);
    for (int red = 0; red < 3; red++) {
        for (int wi = 0; wi < 2; wi++) {
            kn_loss_opts o = {.reduction = red, .label_smoothing = 0.15,
                              .weight = wi ? T64(1, s4, wv) : NULL};
            double none[12];
            double e = ce_ref(xv, tv, 2, 4, 6, wi ? wv : NULL, -100, 0.15, red, none);
            kn_tensor *l = kn_cross_entropy(x, t, &o);
            KT_NOTNULL(l);
            if (red == KN_REDUCE_NONE) {
                KT_EQ_INT(3, kn_tensor_ndim(l));
                KT_CLOSE(l, T64(3, st, none), 1e-13, 0);
            } else {
                KT_NEAR(e, item(l), 1e-13);
            }
            /* f32 fast path equals its reference */
            kn_tensor *x32 = kn_cast(x, KN_F32);
            if (o.weight) o.weight = kn_cast(o.weight, KN_F32);
            kn_tensor *o1 = kn_cross_entropy(x32, t, &o);
            KT_NOTNULL(o1);
            KT_CLOSE(o1, l, 1e-5, 1e-5);
        }
    }
    kn_scope_end(sc);
}

static void test_ce_fast_vs_ref(void) {
    kn_scope sc = kn_scope_begin();
    int64_t Cs[] = {10, 37, 1000};
    kn_manual_seed(1);
    for (int ci = 0; ci < 3; ci++) {
        int64_t N = 64, C = Cs[ci];
        int64_t sx[] = {N, C}, st[] = {N}, sw[] = {C};
        kn_tensor *x = kn_mul_scalar(kn_randn(KN_F32, 2, sx), 4.0);
        kn_tensor *t = kn_randint(0, C, KN_I64, 1, st);
        /* a few ignored targets */
        int64_t tv[64];
        kn_tensor_read(t, KN_I64, tv, sizeof tv);
        tv[3] = tv[17] = -100;
        t = I64(1, st, tv);
        kn_tensor *w = kn_add_scalar(kn_rand(KN_F32, 1, sw), 0.5);
        for (int cfg = 0; cfg < 4; cfg++) {
            kn_loss_opts o = {.reduction = cfg == 3 ? KN_REDUCE_NONE : KN_REDUCE_MEAN,
                              .label_smoothing = cfg >= 1 ? 0.1 : 0.0,
                              .weight = cfg >= 2 ? w : NULL};
            kn_tensor *xl = kn_detach(x);
            kn_tensor_set_requires_grad(xl, true);
            kn_tensor *fast = kn_cross_entropy(xl, t, &o);
            KT_NOTNULL(fast);
            kn_tensor *g = cfg == 3 ? kn_ones_like(fast) : NULL;
            kn_backward_opts bo = {.grad_output = g};
            KT_OK(kn_backward(fast, &bo));
            kn_tensor *gfast = kn_clone(kn_tensor_grad(xl));
            kn_tensor_set_grad(xl, NULL);
            bool prev = kn__force_ref(true);
            kn_tensor *ref = kn_cross_entropy(xl, t, &o);
            kn_status s = kn_backward(ref, &bo);
            kn__force_ref(prev);
            KT_OK(s);
            KT_CLOSE(fast, ref, 1e-6, 2e-6);
            KT_CLOSE(gfast, kn_tensor_grad(xl), 1e-7, 1e-5);
        }
    }
    kn_scope_end(sc);
}

/* The fused gradient is (softmax - onehot) / N for the plain mean. */
static void test_ce_grad_formula(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sx[] = {64, 10}, st[] = {64}, ax = 1;
    kn_manual_seed(2);
    kn_tensor *x = kn_randn(KN_F32, 2, sx);
    kn_tensor_set_requires_grad(x, true);
    kn_tensor *t = kn_randint(0, 10, KN_I64, 1, st);
    kn_tensor *l = kn_cross_entropy(x, t, NULL);
    KT_OK(kn_backward(l, NULL));
    bool prev = kn_no_grad_begin();
    kn_tensor *e = kn_sub(kn_softmax(x, (int)ax), kn_cast(kn_one_hot(t, 10), KN_F32));
    e = kn_mul_scalar(e, 1.0 / 64);
    kn_no_grad_end(prev);
    KT_CLOSE(kn_tensor_grad(x), e, 1e-7, 1e-5);
    /* the loss agrees with log_softmax + nll */
    kn_tensor *l2 = kn_nll_loss(kn_log_softmax(kn_detach(x), 1), t, NULL);
    KT_NEAR(item(l2), item(l), 1e-6);
    kn_scope_end(sc);
}

typedef struct {
    kn_tensor *t;
    kn_loss_opts o;
    int mode; /* 0 plain, 1 transpose (non-contiguous logits), 2 nll of log_softmax */
} cecfg;

static kn_tensor *f_ce(kn_tensor *const *in, void *u) {
    cecfg *c = u;
    if (c->mode == 1) return kn_cross_entropy(kn_transpose(in[0], 0, 1), c->t, &c->o);
    if (c->mode == 2) return kn_nll_loss(in[0], c->t, &c->o);
    return kn_cross_entropy(in[0], c->t, &c->o);
}

static void test_ce_gradcheck(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s45[] = {4, 5}, s4[] = {4}, s5[] = {5};
    int64_t tv[] = {1, 4, -100, 0};
    double wv[] = {0.5, 1, 2, 1.5, 0.75};
    kn_tensor *x = leaf(2, s45, 0.1), *t = I64(1, s4, tv), *w = T64(1, s5, wv);
    for (int red = 0; red < 3; red++)
        for (int cfg = 0; cfg < 4; cfg++) {
            cecfg c = {t, {.reduction = red, .label_smoothing = (cfg & 1) ? 0.2 : 0.0,
                           .weight = (cfg & 2) ? w : NULL}, 0};
            if (!check_grad(f_ce, &c, &x, 1))
                KT_FAIL("cross_entropy gradcheck red %d cfg %d", red, cfg);
        }
    /* custom ignore_index, non-contiguous logits */
    int64_t s54[] = {5, 4};
    kn_tensor *xt = leaf(2, s54, 0.4);
    int64_t tvi[] = {1, 4, 2, 4};
    cecfg ct = {I64(1, s4, tvi),
                {.has_ignore_index = true, .ignore_index = 4, .label_smoothing = 0.1}, 1};
    KT_TRUE(check_grad(f_ce, &ct, &xt, 1));
    /* spatial (N, C, L) with a size-1 dim, and unbatched (C) */
    int64_t s231[] = {2, 3, 2, 1}, st[] = {2, 2, 1};
    int64_t tv2[] = {2, 0, -100, 1};
    kn_tensor *xs = leaf(4, s231, 0.9);
    cecfg cs = {I64(3, st, tv2), {.label_smoothing = 0.3}, 0};
    KT_TRUE(check_grad(f_ce, &cs, &xs, 1));
    cs.o.reduction = KN_REDUCE_NONE;
    KT_TRUE(check_grad(f_ce, &cs, &xs, 1));
    kn_tensor *x1 = leaf(1, s5, 0.2);
    cecfg c1 = {kn_scalar(KN_I64, 3), {0}, 0};
    KT_TRUE(check_grad(f_ce, &c1, &x1, 1));
    kn_scope_end(sc);
}

/* second order: gradcheck of x -> d(sum(CE(x) * u))/dx (and of the incoming gradient u, for
 * reduction none), built with kn_grad(create_graph) */
typedef struct {
    kn_tensor *t;
    kn_loss_opts o;
} ce2cfg;

static kn_tensor *f_ce_grad(kn_tensor *const *in, void *u) {
    ce2cfg *c = u;
    kn_tensor *l = kn_cross_entropy(in[0], c->t, &c->o);
    kn_tensor *gx = NULL;
    if (!l || kn_grad(&l, 1, &in[1], &in[0], 1, true, &gx) != KN_OK) return NULL;
    /* a nonlinear use of the gradient so second derivatives of every part show */
    return kn_mul(gx, kn_add_scalar(in[0], 0.5));
}

/* the saved logsumexp is an output too (kn_op_call), differentiable through the same node */
static kn_tensor *f_ce_lse(kn_tensor *const *in, void *u) {
    ce2cfg *c = u;
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "reduction", KN_REDUCE_SUM);
    kn_attrs_set_int(&a, "ignore_index", -100);
    kn_attrs_set_float(&a, "label_smoothing", 0.1);
    kn_tensor *ins[2] = {in[0], c->t}, *out[2] = {0};
    if (kn_op_call("cross_entropy", ins, 2, &a, out, 2) != 2) return NULL;
    kn_tensor *l = kn_add(out[0], kn_sum(kn_mul(out[1], out[1]), NULL, 0, false));
    kn_tensor *gx = NULL;
    if (!l || kn_grad(&l, 1, NULL, &in[0], 1, true, &gx) != KN_OK) return NULL;
    return kn_add(kn_mul(gx, gx), kn_mul_scalar(in[0], 0.0)); /* second order through lse too */
}

static void test_ce_double_backward(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s45[] = {4, 5}, s4[] = {4}, s5[] = {5};
    int64_t tv[] = {1, 4, -100, 0};
    double wv[] = {0.5, 1, 2, 1.5, 0.75};
    kn_tensor *t = I64(1, s4, tv), *w = T64(1, s5, wv);
    for (int red = 0; red < 3; red++) {
        /* the incoming gradient is an input too: (4) for none, a scalar otherwise */
        kn_tensor *in[2] = {leaf(2, s45, 0.3 + red),
                            red == KN_REDUCE_NONE ? leaf(1, s4, 1.7) : leaf(0, NULL, 1.7)};
        ce2cfg c = {t, {.reduction = red, .label_smoothing = 0.2, .weight = w}};
        if (!check_grad(f_ce_grad, &c, in, 2))
            KT_FAIL("cross_entropy double backward, reduction %d", red);
    }
    /* spatial logits */
    int64_t s232[] = {2, 3, 2}, st[] = {2, 2};
    int64_t tv2[] = {2, 0, -100, 1};
    kn_tensor *xs[2] = {leaf(3, s232, 0.8), leaf(0, NULL, 0.4)};
    ce2cfg cs = {I64(2, st, tv2), {.label_smoothing = 0.1}};
    KT_TRUE(check_grad(f_ce_grad, &cs, xs, 2));
    /* through the logsumexp output, first and second order */
    kn_tensor *x = leaf(2, s45, 0.6);
    ce2cfg cl = {t, {0}};
    KT_TRUE(check_grad(f_ce_lse, &cl, &x, 1));
    kn_scope_end(sc);
}

static void test_ce_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s25[] = {2, 5}, s2[] = {2}, s3[] = {3};
    kn_tensor *x = kn_zeros(KN_F32, 2, s25);
    int64_t bad[] = {7, 0};
    KT_ERR(KN_EINVAL, kn_cross_entropy(x, I64(1, s2, bad), NULL),
           "cross_entropy: target 7 out of range for 5 classes");
    int64_t neg[] = {0, -1};
    KT_ERR(KN_EINVAL, kn_cross_entropy(x, I64(1, s2, neg), NULL), "target -1 out of range");
    KT_ERR(KN_EDTYPE, kn_cross_entropy(x, kn_zeros(KN_F32, 1, s2), NULL),
           "cross_entropy: target must hold int64");
    KT_ERR(KN_ESHAPE, kn_cross_entropy(x, kn_zeros(KN_I64, 1, s3), NULL), "cross_entropy");
    KT_ERR(KN_ESHAPE, kn_cross_entropy(x, kn_zeros(KN_I64, 2, s25), NULL), "does not match");
    kn_loss_opts ow = {.weight = kn_ones(KN_F32, 1, s3)};
    KT_ERR(KN_ESHAPE, kn_cross_entropy(x, kn_zeros(KN_I64, 1, s2), &ow), "weight");
    ow.weight = kn_ones(KN_F64, 1, (int64_t[]){5});
    KT_ERR(KN_EDTYPE, kn_cross_entropy(x, kn_zeros(KN_I64, 1, s2), &ow), "weight dtype");
    KT_ERR(KN_EDTYPE, kn_cross_entropy(kn_zeros(KN_I32, 2, s25), kn_zeros(KN_I64, 1, s2), NULL),
           "cross_entropy");
    kn_loss_opts ol = {.label_smoothing = 1.5};
    KT_ERR(KN_EINVAL, kn_cross_entropy(x, kn_zeros(KN_I64, 1, s2), &ol), "label_smoothing");
    kn_loss_opts orr = {.reduction = (kn_reduction)9};
    KT_ERR(KN_EINVAL, kn_cross_entropy(x, kn_zeros(KN_I64, 1, s2), &orr), "reduction");
    KT_ERR(KN_EINVAL, kn_nll_loss(x, I64(1, s2, bad), NULL), "nll_loss: target 7 out of range");
    KT_TRUE(kn_cross_entropy(NULL, kn_zeros(KN_I64, 1, s2), NULL) == NULL);
    kn_scope_end(sc);
}

static void test_nll(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s2[] = {2}, s3[] = {3};
    double xv[] = {-1, -2, -3, -0.5, -1.5, -2.5};
    int64_t tv[] = {2, 0};
    kn_tensor *x = T64(2, s23, xv), *t = I64(1, s2, tv);
    KT_NEAR(1.75, item(kn_nll_loss(x, t, NULL)), 1e-15);
    kn_loss_opts o = {.reduction = KN_REDUCE_SUM};
    KT_NEAR(3.5, item(kn_nll_loss(x, t, &o)), 1e-15);
    double wv[] = {2, 1, 0.5};
    kn_loss_opts ow = {.weight = T64(1, s3, wv)};
    /* (0.5*3 + 2*0.5) / (0.5 + 2) = 1 */
    KT_NEAR(1.0, item(kn_nll_loss(x, t, &ow)), 1e-15);
    int64_t ti[] = {-100, 1};
    KT_NEAR(1.5, item(kn_nll_loss(x, I64(1, s2, ti), NULL)), 1e-15);
    /* gradients */
    kn_tensor *xl = leaf(2, s23, 0.3);
    for (int red = 0; red < 3; red++) {
        cecfg c = {I64(1, s2, ti), {.reduction = red, .weight = ow.weight}, 2};
        if (!check_grad(f_ce, &c, &xl, 1)) KT_FAIL("nll gradcheck red %d", red);
    }
    kn_scope_end(sc);
}

/* second order: the gradient of nll_loss (linear in logp) w.r.t. logp is constant, and the
 * nll_loss_backward op differentiates w.r.t. its incoming gradient */
static kn_tensor *f_nll_bw(kn_tensor *const *in, void *u) {
    cecfg *c = u;
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "reduction", c->o.reduction);
    kn_attrs_set_int(&a, "ignore_index", -100);
    kn_tensor *ins[3] = {in[0], in[1], c->t}, *out = NULL;
    return kn_op_call("nll_loss_backward", ins, 3, &a, &out, 1) == 1 ? out : NULL;
}

static void test_nll_backward_op(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s2[] = {2};
    int64_t tv[] = {2, -100};
    cecfg c = {I64(1, s2, tv), {.reduction = KN_REDUCE_NONE}, 0};
    kn_tensor *in[2] = {leaf(1, s2, 0.1), leaf(2, s23, 0.2)};
    KT_TRUE(check_grad(f_nll_bw, &c, in, 1)); /* w.r.t. g only; logp's gradient is zero */
    kn_scope_end(sc);
}

/* ============================ pointwise losses ============================ */

static void test_pointwise_values(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s3[] = {3};
    double xv[] = {1, -2, 0.5}, yv[] = {0, 1, 1};
    kn_tensor *x = T64(1, s3, xv), *y = T64(1, s3, yv);
    /* mse: (1 + 9 + 0.25) / 3 */
    KT_NEAR(10.25 / 3, item(kn_mse_loss(x, y, KN_REDUCE_MEAN)), 1e-15);
    KT_NEAR(10.25, item(kn_mse_loss(x, y, KN_REDUCE_SUM)), 1e-15);
    kn_tensor *mn = kn_mse_loss(x, y, KN_REDUCE_NONE);
    double emn[] = {1, 9, 0.25};
    KT_CLOSE(mn, T64(1, s3, emn), 1e-15, 0);
    /* l1: (1 + 3 + 0.5) / 3 */
    KT_NEAR(1.5, item(kn_l1_loss(x, y, KN_REDUCE_MEAN)), 1e-15);
    /* smooth_l1 beta 1: d = 1 -> 0.5 (boundary: d - 0.5 beta), 3 -> 2.5, 0.5 -> 0.125 */
    KT_NEAR(3.125, item(kn_smooth_l1_loss(x, y, KN_REDUCE_SUM, 1.0)), 1e-15);
    /* beta 2: 1 -> 0.25, 3 -> 2, 0.5 -> 0.0625 */
    KT_NEAR(2.3125, item(kn_smooth_l1_loss(x, y, KN_REDUCE_SUM, 2.0)), 1e-15);
    /* beta 0 is L1 */
    KT_NEAR(4.5, item(kn_smooth_l1_loss(x, y, KN_REDUCE_SUM, 0.0)), 1e-15);
    /* bce */
    double pv[] = {0.2, 0.9, 0.5}, tv[] = {0, 1, 1};
    KT_NEAR(0.340550415843994,
            item(kn_binary_cross_entropy(T64(1, s3, pv), T64(1, s3, tv), KN_REDUCE_MEAN)),
            1e-14);
    /* log clamped at -100: p = 0 with y = 1 costs 100, p = 1 with y = 1 costs 0 */
    double pe[] = {0, 1, 0}, te[] = {1, 1, 0};
    kn_tensor *be = kn_binary_cross_entropy(T64(1, s3, pe), T64(1, s3, te), KN_REDUCE_NONE);
    double ebe[] = {100, 0, 0};
    KT_CLOSE(be, T64(1, s3, ebe), 1e-12, 0);
    /* with logits, including extreme values that overflow naive forms */
    double lx[] = {-1, 2, 0.5}, ly[] = {0, 1, 0.3};
    KT_NEAR(0.421422227580434,
            item(kn_binary_cross_entropy_with_logits(T64(1, s3, lx), T64(1, s3, ly),
                                                     KN_REDUCE_MEAN)),
            1e-14);
    double bx[] = {800, -800, 30}, by[] = {0, 0, 1};
    kn_tensor *bl = kn_binary_cross_entropy_with_logits(T64(1, s3, bx), T64(1, s3, by),
                                                        KN_REDUCE_NONE);
    double ebl[] = {800, 0, log1p(exp(-30))};
    KT_CLOSE(bl, T64(1, s3, ebl), 1e-12, 1e-12);
    /* f32 inputs keep their dtype */
    kn_tensor *m32 = kn_mse_loss(kn_cast(x, KN_F32), kn_cast(y, KN_F32), KN_REDUCE_MEAN);
    KT_EQ_INT(KN_F32, kn_tensor_dtype(m32));
    KT_NEAR(10.25 / 3, item(m32), 1e-6);
    /* broadcasting (mse, l1, smooth_l1): x (2, 3) vs y (3) */
    int64_t s23[] = {2, 3};
    double x2[] = {1, 2, 3, 4, 5, 6};
    kn_tensor *mb = kn_mse_loss(T64(2, s23, x2), T64(1, s3, yv), KN_REDUCE_SUM);
    /* (1 + 1 + 4) + (16 + 16 + 25) */
    KT_NEAR(63, item(mb), 1e-12);
    /* large input: blocked reduction */
    int64_t sl[] = {100000};
    kn_tensor *big = kn_full(KN_F32, 1, sl, 0.5);
    KT_NEAR(0.25, item(kn_mse_loss(big, kn_zeros_like(big), KN_REDUCE_MEAN)), 1e-7);
    kn_scope_end(sc);
}

static void test_pointwise_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s3[] = {3}, s2[] = {2}, s31[] = {3, 1};
    kn_tensor *x = kn_zeros(KN_F32, 1, s3);
    KT_ERR(KN_ESHAPE, kn_mse_loss(x, kn_zeros(KN_F32, 1, s2), KN_REDUCE_MEAN), "mse_loss");
    KT_ERR(KN_EDTYPE, kn_l1_loss(x, kn_zeros(KN_F64, 1, s3), KN_REDUCE_MEAN), "l1_loss");
    KT_ERR(KN_ESHAPE,
           kn_binary_cross_entropy(x, kn_zeros(KN_F32, 2, s31), KN_REDUCE_MEAN),
           "binary_cross_entropy: target (3, 1) must have the shape");
    KT_ERR(KN_ESHAPE, kn_binary_cross_entropy_with_logits(x, kn_zeros(KN_F32, 1, s2),
                                                          KN_REDUCE_MEAN),
           "binary_cross_entropy_with_logits");
    double pv[] = {0.5, 1.5, 0.1};
    KT_ERR(KN_EINVAL,
           kn_binary_cross_entropy(T64(1, s3, pv), kn_zeros(KN_F64, 1, s3), KN_REDUCE_MEAN),
           "input values must be in [0, 1]");
    KT_ERR(KN_EINVAL, kn_smooth_l1_loss(x, x, KN_REDUCE_MEAN, -1.0), "beta");
    KT_ERR(KN_EINVAL, kn_mse_loss(x, x, (kn_reduction)5), "reduction");
    KT_ERR(KN_EDTYPE, kn_mse_loss(kn_zeros(KN_I32, 1, s3), kn_zeros(KN_I32, 1, s3),
                                  KN_REDUCE_MEAN),
           "mse_loss");
    kn_scope_end(sc);
}

typedef struct {
    int kind;
    kn_reduction red;
    double beta;
    bool transpose;
} plcfg;

static kn_tensor *f_pl(kn_tensor *const *in, void *u) {
    plcfg *c = u;
    kn_tensor *x = in[0], *y = in[1];
    if (c->transpose) x = kn_transpose(x, 0, 1);
    switch (c->kind) {
    case 0:
        return kn_mse_loss(x, y, c->red);
    case 1:
        return kn_l1_loss(x, y, c->red);
    case 2:
        return kn_smooth_l1_loss(x, y, c->red, c->beta);
    case 3: /* keep p inside (0, 1) */
        return kn_binary_cross_entropy(kn_sigmoid(x), y, c->red);
    case 4: /* y in (0, 1) through sigmoid too */
        return kn_binary_cross_entropy(kn_sigmoid(x), kn_sigmoid(y), c->red);
    default:
        return kn_binary_cross_entropy_with_logits(x, y, c->red);
    }
}

static void test_pointwise_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s43[] = {4, 3}, s4[] = {4};
    for (int kind = 0; kind < 6; kind++)
        for (int red = 0; red < 3; red++) {
            kn_tensor *in[2] = {leaf(2, s34, 0.1 + kind), leaf(2, s34, 2.3 + red)};
            plcfg c = {kind, red, 0.6, false};
            if (!check_grad(f_pl, &c, in, 2)) KT_FAIL("pointwise kind %d red %d", kind, red);
        }
    /* non-contiguous input, broadcast target, smooth_l1 with beta 0 */
    kn_tensor *in[2] = {leaf(2, s43, 0.5), leaf(1, s4, 0.9)};
    plcfg cm = {0, KN_REDUCE_MEAN, 1, true};
    KT_TRUE(check_grad(f_pl, &cm, in, 2));
    plcfg cs = {2, KN_REDUCE_SUM, 0.0, true};
    KT_TRUE(check_grad(f_pl, &cs, in, 2));
    kn_scope_end(sc);
}

/* BCE gradients stay finite at p = 0 and p = 1 (PyTorch's eps clamp) */
static void test_bce_edges(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s3[] = {3};
    double pv[] = {0, 1, 0.5}, yv[] = {0, 1, 1};
    kn_tensor *p = T64(1, s3, pv);
    kn_tensor_set_requires_grad(p, true);
    kn_tensor *l = kn_binary_cross_entropy(p, T64(1, s3, yv), KN_REDUCE_SUM);
    KT_NEAR(log(2.0), item(l), 1e-15);
    KT_OK(kn_backward(l, NULL));
    kn_tensor *g = kn_tensor_grad(p);
    KT_NOTNULL(g);
    for (int64_t i = 0; i < 3; i++) KT_TRUE(isfinite(kn_tensor_get(g, &i)));
    int64_t i2 = 2;
    KT_NEAR(-2.0, kn_tensor_get(g, &i2), 1e-12);
    kn_scope_end(sc);
}

/* ================================ dropout ================================ */

static void test_dropout(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s[] = {200, 500};
    kn_tensor *x = kn_ones(KN_F32, 2, s);
    double ps[] = {0.1, 0.5, 0.8};
    for (int k = 0; k < 3; k++) {
        double p = ps[k];
        kn_manual_seed(123);
        kn_tensor *y = kn_dropout(x, p, true);
        KT_NOTNULL(y);
        int64_t n = 100000, zeros = 0, scaled = 0;
        float *v = malloc(sizeof(float) * n);
        kn_tensor_read(y, KN_F32, v, sizeof(float) * n);
        for (int64_t i = 0; i < n; i++) {
            if (v[i] == 0.0f) zeros++;
            else if (fabsf(v[i] - (float)(1.0 / (1.0 - p))) < 1e-6f) scaled++;
        }
        free(v);
        KT_EQ_INT(n, zeros + scaled);
        /* binomial sd <= 0.0016: 5 sd */
        KT_NEAR(p, (double)zeros / (double)n, 0.008);
        /* same seed, same mask, regardless of the thread count */
        int prev = kn_get_num_threads();
        kn_set_num_threads(1);
        kn_manual_seed(123);
        kn_tensor *y1 = kn_dropout(x, p, true);
        kn_set_num_threads(2);
        kn_manual_seed(123);
        kn_tensor *y2 = kn_dropout(x, p, true);
        kn_set_num_threads(prev);
        KT_CLOSE(y1, y, 0, 0);
        KT_CLOSE(y2, y, 0, 0);
        /* the next call draws a different mask */
        kn_tensor *y3 = kn_dropout(x, p, true);
        double diff = item(kn_sum(kn_abs(kn_sub(y3, y)), NULL, 0, false));
        KT_TRUE(diff > 0);
    }
    /* eval and p = 0: identity; p = 1: zeros */
    kn_tensor *e = kn_dropout(x, 0.5, false);
    KT_CLOSE(e, x, 0, 0);
    KT_CLOSE(kn_dropout(x, 0.0, true), x, 0, 0);
    KT_CLOSE(kn_dropout(x, 1.0, true), kn_zeros_like(x), 0, 0);
    /* errors */
    KT_ERR(KN_EINVAL, kn_dropout(x, 1.5, true), "dropout: probability 1.5");
    KT_ERR(KN_EINVAL, kn_dropout(x, -0.1, false), "dropout");
    KT_ERR(KN_EDTYPE, kn_dropout(kn_zeros(KN_I32, 2, s), 0.5, true), "dropout");
    kn_scope_end(sc);
}

static kn_tensor *f_dropout(kn_tensor *const *in, void *u) {
    kn_manual_seed(77); /* the same mask on every evaluation */
    return kn_dropout(kn_transpose(in[0], 0, 1), *(double *)u, true);
}

static void test_dropout_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s[] = {5, 6};
    kn_tensor *x = leaf(2, s, 0.3);
    double p = 0.4;
    KT_TRUE(check_grad(f_dropout, &p, &x, 1));
    /* gradient = mask / (1 - p): equals y / x where x != 0 */
    kn_manual_seed(9);
    kn_tensor *y = kn_dropout(x, p, true);
    KT_OK(kn_backward(kn_sum(y, NULL, 0, false), NULL));
    bool prev = kn_no_grad_begin();
    kn_tensor *ratio = kn_div(y, x);
    kn_no_grad_end(prev);
    KT_CLOSE(kn_tensor_grad(x), ratio, 1e-12, 1e-12);
    kn_scope_end(sc);
}

/* =============================== embedding =============================== */

static void test_embedding(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sw[] = {4, 3}, si[] = {2, 2};
    double wv[12];
    for (int i = 0; i < 12; i++) wv[i] = i;
    kn_tensor *w = T64(2, sw, wv);
    int64_t iv[] = {3, 0, 3, 1};
    kn_tensor *e = kn_embedding(w, I64(2, si, iv));
    KT_NOTNULL(e);
    KT_EQ_INT(3, kn_tensor_ndim(e));
    KT_EQ_INT(3, kn_tensor_dim(e, 2));
    double ee[] = {9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5};
    KT_CLOSE(e, T64(3, (int64_t[]){2, 2, 3}, ee), 0, 0);
    int32_t i32[] = {2};
    kn_tensor *e1 = kn_embedding(w, kn_from_data(KN_I32, 1, (int64_t[]){1}, i32));
    double e1v[] = {6, 7, 8};
    KT_CLOSE(e1, T64(2, (int64_t[]){1, 3}, e1v), 0, 0);
    /* 0-d index gives one row */
    kn_tensor *e0 = kn_embedding(w, kn_scalar(KN_I64, 1));
    KT_EQ_INT(1, kn_tensor_ndim(e0));
    /* errors name the index, never crash */
    int64_t bad[] = {0, 7, 1, 2};
    KT_ERR(KN_EINVAL, kn_embedding(w, I64(2, si, bad)),
           "embedding: index 7 out of range for num_embeddings 4");
    int64_t neg[] = {0, -1, 1, 2};
    KT_ERR(KN_EINVAL, kn_embedding(w, I64(2, si, neg)), "index -1 out of range");
    KT_ERR(KN_EDTYPE, kn_embedding(w, kn_zeros(KN_F32, 2, si)), "embedding: indices must be");
    KT_ERR(KN_ESHAPE, kn_embedding(kn_zeros(KN_F32, 1, (int64_t[]){4}), I64(2, si, iv)),
           "embedding: weight must be 2-D");
    kn_scope_end(sc);
}

typedef struct {
    kn_tensor *idx;
} embcfg;

static kn_tensor *f_emb(kn_tensor *const *in, void *u) {
    return kn_embedding(in[0], ((embcfg *)u)->idx);
}

static void test_embedding_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sw[] = {5, 3}, si[] = {2, 3};
    int64_t iv[] = {4, 0, 4, 2, 4, 0}; /* duplicates accumulate; row 1 and 3 get zero */
    kn_tensor *w = leaf(2, sw, 0.2);
    embcfg c = {I64(2, si, iv)};
    KT_TRUE(check_grad(f_emb, &c, &w, 1));
    /* the gradient of sum(embedding) counts each row's uses */
    KT_OK(kn_backward(kn_sum(kn_embedding(w, c.idx), NULL, 0, false), NULL));
    double eg[] = {2, 2, 2, 0, 0, 0, 1, 1, 1, 0, 0, 0, 3, 3, 3};
    KT_CLOSE(kn_tensor_grad(w), T64(2, sw, eg), 0, 0);
    /* non-contiguous int32 indices */
    int32_t i32[] = {1, 2, 3, 4, 0, 1};
    kn_tensor *it = kn_transpose(kn_from_data(KN_I32, 2, (int64_t[]){2, 3}, i32), 0, 1);
    embcfg ct = {it};
    KT_TRUE(check_grad(f_emb, &ct, &w, 1));
    kn_scope_end(sc);
}

/* non-finite logits: the fast kernel hands such rows to the reference, so both agree */
static void test_ce_nonfinite(void) {
    kn_scope sc = kn_scope_begin();
    for (int ci = 0; ci < 2; ci++) {
        int64_t C = ci ? 700 : 6, sx[] = {5, C}, st[] = {5};
        kn_manual_seed(4);
        kn_tensor *x = kn_randn(KN_F32, 2, sx);
        float *v = malloc(sizeof(float) * 5 * C);
        kn_tensor_read(x, KN_F32, v, sizeof(float) * 5 * C);
        v[0 * C + 1] = -INFINITY; /* masked logit: finite loss */
        v[0 * C + 3] = -INFINITY;
        v[1 * C + 2] = INFINITY;
        v[2 * C + 0] = NAN;
        for (int64_t k = 0; k < C; k++) v[3 * C + k] = -INFINITY;
        x = kn_from_data(KN_F32, 2, sx, v);
        free(v);
        int64_t tv[] = {0, 1, 2, 4, 5};
        kn_tensor *t = I64(1, st, tv);
        kn_loss_opts o = {.reduction = KN_REDUCE_NONE, .label_smoothing = 0.0};
        kn_tensor_set_requires_grad(x, true);
        kn_tensor *fast = kn_cross_entropy(x, t, &o);
        KT_NOTNULL(fast);
        kn_backward_opts bo = {.grad_output = kn_ones_like(fast)};
        KT_OK(kn_backward(fast, &bo));
        kn_tensor *gfast = kn_clone(kn_tensor_grad(x));
        kn_tensor_set_grad(x, NULL);
        bool prev = kn__force_ref(true);
        kn_tensor *ref = kn_cross_entropy(x, t, &o);
        kn_status s = kn_backward(ref, &bo);
        kn__force_ref(prev);
        KT_OK(s);
        KT_CLOSE(fast, ref, 1e-6, 1e-6);
        KT_CLOSE(gfast, kn_tensor_grad(x), 1e-7, 1e-5);
        int64_t i0 = 0, i4 = 4;
        KT_TRUE(isfinite(kn_tensor_get(fast, &i0)));
        KT_TRUE(isfinite(kn_tensor_get(fast, &i4)));
    }
    kn_scope_end(sc);
}

/* big enough to run in parallel: the same bits with 1 and 2 threads */
static void test_ce_threads(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sx[] = {512, 1000}, st[] = {512};
    kn_manual_seed(8);
    kn_tensor *x = kn_randn(KN_F32, 2, sx);
    kn_tensor *t = kn_randint(0, 1000, KN_I64, 1, st);
    kn_tensor *r[2], *g[2];
    int prev = kn_get_num_threads();
    for (int k = 0; k < 2; k++) {
        kn_set_num_threads(k + 1);
        kn_tensor *xl = kn_detach(x);
        kn_tensor_set_requires_grad(xl, true);
        kn_loss_opts o = {.label_smoothing = 0.05};
        r[k] = kn_cross_entropy(xl, t, &o);
        kn_backward(r[k], NULL);
        g[k] = kn_tensor_grad(xl);
    }
    kn_set_num_threads(prev);
    KT_CLOSE(r[0], r[1], 0, 0);
    KT_CLOSE(g[0], g[1], 0, 0);
    kn_scope_end(sc);
}

/* a training-style step inside a scope leaves no tensors behind */
static void test_no_leaks(void) {
    size_t before = kn_live_tensors();
    kn_tensor *w = kn_randn(KN_F32, 2, (int64_t[]){10, 4});
    kn_tensor_set_requires_grad(w, true);
    for (int it = 0; it < 3; it++) {
        kn_scope sc = kn_scope_begin();
        int64_t si[] = {6}, s64[] = {6, 4};
        int64_t iv[] = {1, 2, 3, 1, 0, 9};
        kn_tensor *e = kn_embedding(w, I64(1, si, iv));
        kn_tensor *d = kn_dropout(e, 0.3, true);
        int64_t tv[] = {0, 3, -100, 2, 1, 1};
        kn_loss_opts o = {.label_smoothing = 0.1};
        kn_tensor *l = kn_cross_entropy(d, I64(1, si, tv), &o);
        kn_tensor *l2 = kn_mse_loss(d, kn_zeros(KN_F32, 2, s64), KN_REDUCE_MEAN);
        kn_tensor *l3 = kn_binary_cross_entropy_with_logits(d, kn_zeros(KN_F32, 2, s64),
                                                            KN_REDUCE_SUM);
        KT_OK(kn_backward(kn_add(kn_add(l, l2), l3), NULL));
        kn_scope_end(sc);
    }
    KT_NOTNULL(kn_tensor_grad(w));
    kn_tensor_free(w);
    KT_EQ_INT(before, kn_live_tensors());
}

/* timing line for the cross_entropy hot path (informational, not asserted) */
static void test_ce_speed(void) {
    if (kt_quick()) return;
    kn_scope sc = kn_scope_begin();
    int64_t C[] = {10, 1000};
    for (int k = 0; k < 2; k++) {
        int64_t sx[] = {64, C[k]}, st[] = {64};
        kn_tensor *x = kn_randn(KN_F32, 2, sx);
        kn_tensor_set_requires_grad(x, true);
        kn_tensor *t = kn_randint(0, C[k], KN_I64, 1, st);
        int iters = 2000;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < iters; i++) {
            kn_scope s2 = kn_scope_begin();
            kn_tensor *l = kn_cross_entropy(x, t, NULL);
            kn_backward(l, NULL);
            kn_scope_end(s2);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double us = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) /
                    1e3 / iters;
        printf("  cross_entropy fwd+bwd (64, %lld) f32: %.2f us\n", (long long)C[k], us);
    }
    kn_scope_end(sc);
}

int main(void) {
    KT_RUN(test_ce_values);
    KT_RUN(test_ce_ignore);
    KT_RUN(test_ce_spatial);
    KT_RUN(test_ce_fast_vs_ref);
    KT_RUN(test_ce_grad_formula);
    KT_RUN(test_ce_nonfinite);
    KT_RUN(test_ce_threads);
    KT_RUN(test_ce_gradcheck);
    KT_RUN(test_ce_double_backward);
    KT_RUN(test_ce_errors);
    KT_RUN(test_nll);
    KT_RUN(test_nll_backward_op);
    KT_RUN(test_pointwise_values);
    KT_RUN(test_pointwise_errors);
    KT_RUN(test_pointwise_grad);
    KT_RUN(test_bce_edges);
    KT_RUN(test_dropout);
    KT_RUN(test_dropout_grad);
    KT_RUN(test_embedding);
    KT_RUN(test_embedding_grad);
    KT_RUN(test_no_leaks);
    KT_RUN(test_ce_speed);
    return kt_finish();
}
