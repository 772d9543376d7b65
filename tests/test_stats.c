/*
 * test_stats.c - the statistical reductions (src/ops/stats.c): prod, amax, amin, max_dim,
 * min_dim, argmax, argmin, var, std, logsumexp, norm. Hand-checked values (ties, NaN, -inf,
 * integers, keepdim, non-adjacent axes, empty reductions), f64 finite-difference gradient checks
 * (non-contiguous inputs, size-1 dims), hand-checked gradients where finite differences do not
 * apply (ties, zeros in prod), fast vs reference kernels, thread-count independence, errors.
 */
#include "kn_test.h"
#include "kt_f64.h"

#include "ops/op_impl.h"

static void read_i64(kn_tensor *t, int64_t *out, int n) {
    kn_tensor_read(t, KN_I64, out, sizeof(int64_t) * (size_t)n);
}
/* gradient of sum(y * w) (w = 1 when NULL) for a single input, no grad graph kept */
static kn_tensor *grad_of(kn_tensor *y, kn_tensor *x) {
    kn_tensor *g = NULL;
    kn_tensor *l = kn_sum(y, NULL, 0, false);
    if (kn_grad(&l, 1, NULL, &x, 1, false, &g) != KN_OK) return NULL;
    return g;
}

/* ================================ values ================================ */

static void test_values_basic(void) {
    kn_scope sc = kn_scope_begin();
    double xv[] = {1, 5, 2, -3, 4, 0.5};
    int64_t s23[] = {2, 3};
    kn_tensor *x = T64(2, s23, xv);
    int a1[] = {1}, a0[] = {0};
    double p1[] = {10, -6};
    KT_CLOSE(kn_prod(x, a1, 1, false), T64(1, (int64_t[]){2}, p1), 0, 0);
    KT_NEAR(-60, kn_item(kn_prod(x, NULL, 0, false)), 1e-12);
    double mx0[] = {1, 5, 2};
    KT_CLOSE(kn_amax(x, a0, 1, false), T64(1, (int64_t[]){3}, mx0), 0, 0);
    kn_tensor *mk = kn_amin(x, a1, 1, true);
    KT_EQ_INT(2, kn_tensor_ndim(mk));
    KT_EQ_INT(1, kn_tensor_dim(mk, 1));
    double mn1[] = {1, -3};
    KT_CLOSE(mk, expect(mk, mn1), 0, 0);
    KT_NEAR(5, kn_item(kn_amax(x, NULL, 0, false)), 0);
    /* var/std with corrections: row 0 {1,5,2}: mean 8/3, sum sq dev = 26/3 */
    double ss0 = 26.0 / 3, m1 = 1.5 / 3, ss1 = (3.5 - m1) * 0 + 0;
    (void)ss1;
    double r1[] = {-3, 4, 0.5}, q1 = 0;
    for (int i = 0; i < 3; i++) q1 += (r1[i] - m1) * (r1[i] - m1);
    double v1[] = {ss0 / 2, q1 / 2}, v0[] = {ss0 / 3, q1 / 3}, v2[] = {ss0, q1};
    KT_CLOSE(kn_var(x, a1, 1, 1, false), T64(1, (int64_t[]){2}, v1), 1e-14, 1e-14);
    KT_CLOSE(kn_var(x, a1, 1, 0, false), T64(1, (int64_t[]){2}, v0), 1e-14, 1e-14);
    KT_CLOSE(kn_var(x, a1, 1, 2, false), T64(1, (int64_t[]){2}, v2), 1e-14, 1e-14);
    double sd[] = {sqrt(v1[0]), sqrt(v1[1])};
    KT_CLOSE(kn_std(x, a1, 1, 1, false), T64(1, (int64_t[]){2}, sd), 1e-14, 1e-14);
    /* one element with correction 1: 0 / 0 = NaN like PyTorch */
    KT_TRUE(isnan(kn_item(kn_var(kn_slice(kn_slice(x, 1, 0, 1, 1), 0, 0, 1, 1), a1, 1, 1, true))));
    /* logsumexp */
    double l1[] = {log(exp(1) + exp(5) + exp(2)), log(exp(-3) + exp(4) + exp(0.5))};
    KT_CLOSE(kn_logsumexp(x, a1, 1, false), T64(1, (int64_t[]){2}, l1), 1e-14, 1e-14);
    /* norms over all */
    double n1 = 0, n2 = 0, n3 = 0, ninf = 0;
    for (int i = 0; i < 6; i++) {
        n1 += fabs(xv[i]), n2 += xv[i] * xv[i], n3 += pow(fabs(xv[i]), 3);
        ninf = fmax(ninf, fabs(xv[i]));
    }
    KT_NEAR(n1, kn_item(kn_norm(x, 1, NULL, 0, false)), 1e-14);
    KT_NEAR(sqrt(n2), kn_item(kn_norm(x, 2, NULL, 0, false)), 1e-14);
    KT_NEAR(cbrt(n3), kn_item(kn_norm(x, 3, NULL, 0, false)), 1e-13);
    KT_NEAR(ninf, kn_item(kn_norm(x, INFINITY, NULL, 0, false)), 0);
    KT_NEAR(pow(pow(1, 0.5) + pow(5, 0.5) + pow(2, 0.5), 2),
            kn_item(kn_norm(kn_slice(x, 0, 0, 1, 1), 0.5, NULL, 0, false)), 1e-12);
    /* f32 */
    kn_tensor *xf = kn_cast(x, KN_F32);
    KT_NEAR(sqrt(n2), kn_item(kn_norm(xf, 2, NULL, 0, false)), 1e-5);
    KT_EQ_INT(KN_F32, kn_tensor_dtype(kn_var(xf, NULL, 0, 1, false)));
    kn_scope_end(sc);
}

static void test_values_index(void) {
    kn_scope sc = kn_scope_begin();
    /* ties: first index */
    double xv[] = {3, 7, 7, 1, 2, 2, 9, 2};
    int64_t s24[] = {2, 4};
    kn_tensor *x = T64(2, s24, xv);
    kn_tensor *idx = NULL;
    kn_tensor *v = kn_max_dim(x, 1, false, &idx);
    KT_NOTNULL(v);
    KT_NOTNULL(idx);
    KT_EQ_INT(KN_I64, kn_tensor_dtype(idx));
    int64_t iv[2];
    read_i64(idx, iv, 2);
    KT_EQ_INT(1, iv[0]);
    KT_EQ_INT(2, iv[1]);
    double ev[] = {7, 9};
    KT_CLOSE(v, expect(v, ev), 0, 0);
    v = kn_min_dim(x, -1, true, &idx);
    KT_EQ_INT(2, kn_tensor_ndim(idx));
    read_i64(idx, iv, 2);
    KT_EQ_INT(3, iv[0]);
    KT_EQ_INT(0, iv[1]);
    double evm[] = {1, 2};
    KT_CLOSE(v, expect(v, evm), 0, 0);
    KT_NOTNULL(kn_max_dim(x, 0, false, NULL)); /* indices not wanted */
    kn_tensor *am = kn_argmax(x, 0, false);
    int64_t a4[4];
    read_i64(am, a4, 4);
    KT_EQ_INT(0, a4[0]);
    KT_EQ_INT(0, a4[1]); /* 7 vs 9: col 2 -> index 1 */
    KT_EQ_INT(1, a4[2]);
    KT_EQ_INT(1, a4[3]); /* 1 vs 2 */
    /* flattened */
    KT_EQ_INT(6, (int64_t)kn_item(kn_argmax(x, KN_ALL_DIMS, false)));
    KT_EQ_INT(3, (int64_t)kn_item(kn_argmin(x, KN_ALL_DIMS, false)));
    KT_EQ_INT(0, kn_tensor_ndim(kn_argmin(x, KN_ALL_DIMS, false)));
    /* NaN wins and its first index is returned; amax propagates NaN */
    double nv[] = {1, NAN, 5, NAN};
    kn_tensor *xn = T64(1, (int64_t[]){4}, nv);
    KT_EQ_INT(1, (int64_t)kn_item(kn_argmax(xn, 0, false)));
    KT_EQ_INT(1, (int64_t)kn_item(kn_argmin(xn, 0, false)));
    KT_TRUE(isnan(kn_item(kn_amax(xn, NULL, 0, false))));
    KT_TRUE(isnan(kn_item(kn_amin(kn_cast(xn, KN_F32), NULL, 0, false))));
    KT_TRUE(isnan(kn_item(kn_logsumexp(xn, NULL, 0, false))));
    KT_TRUE(isnan(kn_item(kn_norm(xn, INFINITY, NULL, 0, false))));
    /* integers: values keep the dtype, prod goes to int64 and wraps */
    int32_t ivv[] = {3, -7, 100, 2, 2, -1};
    kn_tensor *xi = kn_from_data(KN_I32, 2, (int64_t[]){2, 3}, ivv);
    kn_tensor *mi = kn_amax(xi, (int[]){1}, 1, false);
    KT_EQ_INT(KN_I32, kn_tensor_dtype(mi));
    int64_t m2[2];
    read_i64(mi, m2, 2);
    KT_EQ_INT(100, m2[0]);
    KT_EQ_INT(2, m2[1]);
    kn_tensor *pi = kn_prod(xi, (int[]){1}, 1, false);
    KT_EQ_INT(KN_I64, kn_tensor_dtype(pi));
    read_i64(pi, m2, 2);
    KT_EQ_INT(-2100, m2[0]);
    KT_EQ_INT(-4, m2[1]);
    kn_tensor *ii = NULL;
    kn_tensor *vi = kn_min_dim(xi, 0, false, &ii);
    int64_t i3[3], v3[3];
    read_i64(ii, i3, 3);
    read_i64(vi, v3, 3);
    KT_EQ_INT(1, i3[0]); /* min(3, 2) */
    KT_EQ_INT(-7, v3[1]);
    KT_EQ_INT(1, i3[2]);
    int64_t big[] = {INT64_MAX - 1, INT64_MAX, INT64_MAX - 2};
    kn_tensor *xb = kn_from_data(KN_I64, 1, (int64_t[]){3}, big);
    KT_EQ_INT(1, (int64_t)kn_item(kn_argmax(xb, 0, false)));
    int64_t bb;
    read_i64(kn_amax(xb, NULL, 0, false), &bb, 1);
    KT_TRUE(bb == INT64_MAX);
    uint8_t uv[] = {200, 255, 7};
    kn_tensor *xu = kn_from_data(KN_U8, 1, (int64_t[]){3}, uv);
    KT_EQ_INT(2, (int64_t)kn_item(kn_argmin(xu, 0, false)));
    KT_EQ_INT(200 * 255 * 7, (int64_t)kn_item(kn_prod(xu, NULL, 0, false)));
    int8_t i8v[] = {-128, 5, 127};
    kn_tensor *x8 = kn_from_data(KN_I8, 1, (int64_t[]){3}, i8v);
    KT_EQ_INT(-128, (int64_t)kn_item(kn_amin(x8, NULL, 0, false)));
    kn_scope_end(sc);
}

static void test_values_shapes(void) {
    kn_scope sc = kn_scope_begin();
    /* non-adjacent axes (permuted path) and keepdim, against hand loops */
    int64_t s[] = {2, 3, 4};
    double xv[24];
    for (int i = 0; i < 24; i++) xv[i] = (double)((i * 7) % 11) - 4.5;
    kn_tensor *x = T64(3, s, xv);
    int ax[] = {0, 2};
    kn_tensor *p = kn_amax(x, ax, 2, true);
    KT_EQ_INT(3, kn_tensor_ndim(p));
    KT_EQ_INT(1, kn_tensor_dim(p, 0));
    KT_EQ_INT(3, kn_tensor_dim(p, 1));
    kn_tensor *lse = kn_logsumexp(x, ax, 2, false);
    kn_tensor *vr = kn_var(x, (int[]){2, 0}, 2, 1, false);
    double em[3], el[3], ev[3];
    for (int j = 0; j < 3; j++) {
        double m = -INFINITY, s1 = 0, s2 = 0, se = 0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 4; k++) {
                double v = xv[i * 12 + j * 4 + k];
                m = fmax(m, v), s1 += v, s2 += v * v, se += exp(v);
            }
        em[j] = m;
        el[j] = log(se);
        ev[j] = (s2 - s1 * s1 / 8) / 7;
    }
    KT_CLOSE(p, expect(p, em), 0, 0);
    KT_CLOSE(lse, expect(lse, el), 1e-13, 1e-13);
    KT_CLOSE(vr, expect(vr, ev), 1e-13, 1e-13);
    /* non-contiguous input, negative axes */
    kn_tensor *xt = kn_transpose(x, 0, 2); /* (4, 3, 2) */
    KT_CLOSE(kn_var(xt, (int[]){-1, 0}, 2, 1, false), vr, 1e-13, 1e-13);
    KT_CLOSE(kn_prod(xt, (int[]){1}, 1, false),
             kn_transpose(kn_prod(x, (int[]){1}, 1, false), 0, 1), 0, 1e-15);
    /* 0-d input */
    kn_tensor *z = kn_scalar(KN_F64, -2.5);
    KT_NEAR(-2.5, kn_item(kn_amax(z, NULL, 0, false)), 0);
    KT_NEAR(-2.5, kn_item(kn_logsumexp(z, NULL, 0, false)), 1e-15);
    KT_NEAR(2.5, kn_item(kn_norm(z, 2, NULL, 0, false)), 0);
    KT_EQ_INT(0, (int64_t)kn_item(kn_argmax(z, 0, false)));
    /* empty reductions */
    kn_tensor *e = kn_zeros(KN_F64, 2, (int64_t[]){3, 0});
    kn_tensor *pe = kn_prod(e, (int[]){1}, 1, false);
    double ones[] = {1, 1, 1};
    KT_CLOSE(pe, expect(pe, ones), 0, 0);
    KT_TRUE(isinf(kn_item(kn_logsumexp(kn_slice(e, 0, 0, 1, 1), NULL, 0, false))));
    KT_NEAR(0, kn_item(kn_norm(e, 2, NULL, 0, false)), 0);
    KT_TRUE(isnan(kn_item(kn_var(e, NULL, 0, 1, false))));
    KT_EQ_INT(0, kn_tensor_numel(kn_amax(e, (int[]){0}, 1, false))); /* kept dim is empty */
    /* logsumexp with -inf / +inf */
    double iv[] = {-INFINITY, -INFINITY, 1, INFINITY};
    kn_tensor *xi = T64(2, (int64_t[]){2, 2}, iv);
    kn_tensor *li = kn_logsumexp(xi, (int[]){1}, 1, false);
    double lb[2];
    KT_OK(kn_tensor_read(li, KN_F64, lb, sizeof lb));
    KT_TRUE(isinf(lb[0]) && lb[0] < 0);
    KT_TRUE(isinf(lb[1]) && lb[1] > 0);
    /* large values do not overflow */
    double hv[] = {1000, 1000};
    KT_NEAR(1000 + log(2.0), kn_item(kn_logsumexp(T64(1, (int64_t[]){2}, hv), NULL, 0, false)),
            1e-12);
    kn_scope_end(sc);
}

/* ================================ gradients ================================ */

typedef struct {
    int op; /* 0 prod 1 amax 2 amin 3 max_dim 4 min_dim 5 var 6 std 7 lse 8 norm */
    int axes[3], naxes, keepdim, transpose;
    double p;
    int64_t corr;
} sop;
static kn_tensor *f_stat(kn_tensor *const *in, void *u) {
    sop *s = u;
    kn_tensor *x = s->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    switch (s->op) {
    case 0: return kn_prod(x, s->axes, s->naxes, s->keepdim);
    case 1: return kn_amax(x, s->axes, s->naxes, s->keepdim);
    case 2: return kn_amin(x, s->axes, s->naxes, s->keepdim);
    case 3: return kn_max_dim(x, s->axes[0], s->keepdim, NULL);
    case 4: return kn_min_dim(x, s->axes[0], s->keepdim, NULL);
    case 5: return kn_var(x, s->axes, s->naxes, s->corr, s->keepdim);
    case 6: return kn_std(x, s->axes, s->naxes, s->corr, s->keepdim);
    case 7: return kn_logsumexp(x, s->axes, s->naxes, s->keepdim);
    default: return kn_norm(x, s->p, s->axes, s->naxes, s->keepdim);
    }
}

static void test_gradcheck_all(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s234[] = {2, 3, 4}, s15[] = {1, 5}, s41[] = {4, 1};
    double ps[] = {2, 1, 3, 0.5, 1.5, INFINITY};
    for (int op = 0; op <= 8 + 5; op++) {
        sop base = {op > 8 ? 8 : op, {1}, 1, 0, 0, op > 8 ? ps[op - 8] : ps[0], 1};
        if (op == 8) base.p = 2;
        sop cases[6];
        for (int k = 0; k < 6; k++) cases[k] = base;
        cases[1].axes[0] = 0, cases[1].keepdim = 1;                    /* dim 0, keepdim */
        cases[2].transpose = 1;                                        /* non-contiguous */
        cases[3].naxes = 0;                                            /* all axes */
        cases[4].axes[0] = 2, cases[4].axes[1] = 0, cases[4].naxes = 2; /* 3-D, two axes */
        cases[5].corr = 0;
        if (op == 3 || op == 4) cases[4].naxes = 1, cases[3].naxes = 1;
        kn_tensor *x = leaf(2, s34, 0.3 + op), *y = leaf(3, s234, 0.1 * op);
        for (int k = 0; k < 6; k++) {
            kn_tensor *in = k == 4 ? y : x;
            if (!check_grad(f_stat, &cases[k], &in, 1))
                KT_FAIL("op %d case %d", op, k);
        }
        /* size-1 dims */
        kn_tensor *z = leaf(2, s15, 0.2 * op + 0.1), *w = leaf(2, s41, 0.5);
        if (!check_grad(f_stat, &base, &z, 1)) KT_FAIL("op %d (1,5)", op);
        if (base.op != 5 && base.op != 6) /* var over one element is inf/nan */
            if (!check_grad(f_stat, &base, &w, 1)) KT_FAIL("op %d (4,1)", op);
    }
    kn_scope_end(sc);
}

static void test_grad_special(void) {
    kn_scope sc = kn_scope_begin();
    /* amax ties split evenly; max_dim routes to the first index */
    double xv[] = {1, 3, 3, 2};
    kn_tensor *x = T64(1, (int64_t[]){4}, xv);
    kn_tensor_set_requires_grad(x, true);
    double e1[] = {0, 0.5, 0.5, 0};
    KT_CLOSE(grad_of(kn_amax(x, NULL, 0, false), x), expect(x, e1), 0, 0);
    double e2[] = {0, 1, 0, 0};
    KT_CLOSE(grad_of(kn_max_dim(x, 0, false, NULL), x), expect(x, e2), 0, 0);
    double e3[] = {1, 0, 0, 0};
    KT_CLOSE(grad_of(kn_min_dim(x, 0, true, NULL), x), expect(x, e3), 0, 0);
    KT_CLOSE(grad_of(kn_amin(x, NULL, 0, false), x), expect(x, e3), 0, 0);
    /* norm inf with a tie of |x| and a sign */
    double nv[] = {-3, 1, 3};
    kn_tensor *xn = T64(1, (int64_t[]){3}, nv);
    kn_tensor_set_requires_grad(xn, true);
    double en[] = {-0.5, 0, 0.5};
    KT_CLOSE(grad_of(kn_norm(xn, INFINITY, NULL, 0, false), xn), expect(xn, en), 0, 0);
    /* norm 2 of zeros: gradient 0, not NaN */
    kn_tensor *z = kn_zeros(KN_F64, 1, (int64_t[]){3});
    kn_tensor_set_requires_grad(z, true);
    double ez[] = {0, 0, 0};
    KT_CLOSE(grad_of(kn_norm(z, 2, NULL, 0, false), z), expect(z, ez), 0, 0);
    KT_CLOSE(grad_of(kn_norm(z, 3, NULL, 0, false), z), expect(z, ez), 0, 0);
    /* prod with one zero: product of the others at the zero; with two zeros: all 0 */
    double pv[] = {2, 0, 3, 0, 5, 0, 4, 1, 2};
    kn_tensor *xp = T64(2, (int64_t[]){3, 3}, pv);
    kn_tensor_set_requires_grad(xp, true);
    double ep[] = {0, 6, 0, 0, 0, 0, 2, 8, 4};
    KT_CLOSE(grad_of(kn_prod(xp, (int[]){1}, 1, false), xp), expect(xp, ep), 0, 1e-15);
    /* gradcheck at the single-zero point works too (prod is linear in each element) */
    double pz[] = {2, 0, 3, 1.5, -1, 0.5};
    kn_tensor *xz = T64(2, (int64_t[]){2, 3}, pz);
    kn_tensor_set_requires_grad(xz, true);
    sop s = {0, {1}, 1, 0, 0, 2, 1};
    KT_TRUE(check_grad(f_stat, &s, &xz, 1));
    kn_scope_end(sc);
}

/* second order through the composed rules: gradcheck of x -> d/dx sum(op(x) * v) */
typedef struct {
    int op;
    kn_tensor *v;
} dsop;
static kn_tensor *f_dstat(kn_tensor *const *in, void *u) {
    dsop *d = u;
    int ax[] = {1};
    kn_tensor *y = d->op == 0   ? kn_logsumexp(in[0], ax, 1, false)
                   : d->op == 1 ? kn_std(in[0], ax, 1, 1, false)
                   : d->op == 2 ? kn_norm(in[0], 2, ax, 1, false)
                                : kn_prod(in[0], ax, 1, false);
    kn_tensor *l = kn_sum(kn_mul(y, d->v), NULL, 0, false), *g = NULL;
    if (kn_grad(&l, 1, NULL, in, 1, true, &g) != KN_OK) return NULL;
    return kn_sum(kn_square(g), NULL, 0, false);
}
static void test_double_backward(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s3[] = {3};
    kn_tensor *x = leaf(2, s34, 0.4), *v = leaf(1, s3, 1.3);
    for (int op = 0; op < 4; op++) {
        dsop d = {op, v};
        if (!check_grad(f_dstat, &d, &x, 1)) KT_FAIL("op %d", op);
    }
    kn_scope_end(sc);
}

/* ================================ fast vs ref, threads ================================ */

typedef kn_tensor *(*statfn)(kn_tensor *x, const int *axes, int naxes);
static kn_tensor *sf_prod(kn_tensor *x, const int *a, int n) { return kn_prod(x, a, n, false); }
static kn_tensor *sf_amax(kn_tensor *x, const int *a, int n) { return kn_amax(x, a, n, false); }
static kn_tensor *sf_amin(kn_tensor *x, const int *a, int n) { return kn_amin(x, a, n, true); }
static kn_tensor *sf_var(kn_tensor *x, const int *a, int n) { return kn_var(x, a, n, 1, false); }
static kn_tensor *sf_std(kn_tensor *x, const int *a, int n) { return kn_std(x, a, n, 0, false); }
static kn_tensor *sf_lse(kn_tensor *x, const int *a, int n) { return kn_logsumexp(x, a, n, false); }
static kn_tensor *sf_n2(kn_tensor *x, const int *a, int n) { return kn_norm(x, 2, a, n, false); }
static kn_tensor *sf_n1(kn_tensor *x, const int *a, int n) { return kn_norm(x, 1, a, n, false); }
static kn_tensor *sf_n3(kn_tensor *x, const int *a, int n) { return kn_norm(x, 3, a, n, false); }
static kn_tensor *sf_ninf(kn_tensor *x, const int *a, int n) {
    return kn_norm(x, INFINITY, a, n, false);
}
static kn_tensor *sf_argmax(kn_tensor *x, const int *a, int n) {
    return kn_argmax(x, n ? a[0] : KN_ALL_DIMS, false);
}
static kn_tensor *sf_maxdim_idx(kn_tensor *x, const int *a, int n) {
    kn_tensor *i = NULL;
    kn_max_dim(x, n ? a[0] : 0, false, &i);
    return i;
}
static kn_tensor *sf_mindim(kn_tensor *x, const int *a, int n) {
    return kn_min_dim(x, n ? a[0] : 0, true, NULL);
}

static void test_fast_vs_ref(void) {
    kn_scope sc = kn_scope_begin();
    statfn fns[] = {sf_prod, sf_amax, sf_amin, sf_var, sf_std, sf_lse, sf_n2,
                    sf_n1,   sf_n3,   sf_ninf, sf_argmax, sf_maxdim_idx, sf_mindim};
    int nf = (int)(sizeof fns / sizeof fns[0]);
    /* rows longer than a chunk, columns, permuted axes, all axes */
    int64_t s1[] = {3, 20000}, s2[] = {40, 50, 30};
    int ax_last[] = {1}, ax_mid[] = {1}, ax_02[] = {0, 2}, ax_0[] = {0};
    struct {
        int64_t *shape;
        int nd;
        int *axes;
        int na;
    } cases[] = {{s1, 2, ax_last, 1}, {s1, 2, NULL, 0}, {s2, 3, ax_mid, 1},
                 {s2, 3, ax_02, 2},   {s2, 3, ax_0, 1}, {s1, 2, ax_0, 1}};
    for (int c = 0; c < 6; c++)
        for (int dt = 0; dt < 2; dt++) {
            kn_dtype t = dt ? KN_F64 : KN_F32;
            kn_tensor *x = randn(t, cases[c].nd, cases[c].shape, 40 + c);
            kn_tensor *xp = kn_add_scalar(kn_mul_scalar(kn_abs(x), 0.001), 1.0); /* for prod */
            for (int f = 0; f < nf; f++) {
                bool multi = cases[c].na > 1;
                if (multi && (fns[f] == sf_argmax || fns[f] == sf_maxdim_idx ||
                              fns[f] == sf_mindim))
                    continue;
                if (cases[c].na == 0 && (fns[f] == sf_maxdim_idx || fns[f] == sf_mindim))
                    continue;
                kn_tensor *in = fns[f] == sf_prod ? xp : x;
                kn_tensor *a = fns[f](in, cases[c].axes, cases[c].na);
                bool prev = kn__force_ref(true);
                kn_tensor *b = fns[f](in, cases[c].axes, cases[c].na);
                kn__force_ref(prev);
                double tol = dt ? 1e-11 : 2e-5;
                if (kt_tensor_close("fast vs ref", a, b, tol, tol))
                    KT_FAIL("case %d fn %d dtype %d", c, f, dt);
            }
        }
    /* integer dtypes */
    int64_t si[] = {50, 37};
    kn_tensor *xi = kn_randint(-100, 100, KN_I32, 2, si);
    statfn ifns[] = {sf_prod, sf_amax, sf_amin, sf_argmax, sf_maxdim_idx, sf_mindim};
    for (int f = 0; f < 6; f++)
        for (int k = 0; k < 2; k++) {
            int ax[] = {k};
            kn_tensor *a = ifns[f](xi, ax, 1);
            bool prev = kn__force_ref(true);
            kn_tensor *b = ifns[f](xi, ax, 1);
            kn__force_ref(prev);
            if (kt_tensor_close("int fast vs ref", a, b, 0, 0)) KT_FAIL("int fn %d axis %d", f, k);
        }
    kn_scope_end(sc);
}

static void test_threads_independent(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s[] = {5, 70000}, s3[] = {30, 200, 40};
    kn_tensor *x = randn(KN_F32, 2, s, 77), *y = randn(KN_F32, 3, s3, 78);
    statfn fns[] = {sf_var, sf_lse, sf_n2, sf_n3, sf_amax, sf_argmax};
    int prev = kn_get_num_threads();
    int ax1[] = {1};
    for (int f = 0; f < 6; f++) {
        kn_tensor *r[2][3];
        for (int k = 0; k < 2; k++) {
            kn_set_num_threads(k + 1);
            r[k][0] = fns[f](x, ax1, 1);
            r[k][1] = fns[f](x, NULL, 0);
            r[k][2] = fns[f](y, ax1, 1);
        }
        kn_set_num_threads(prev);
        for (int i = 0; i < 3; i++)
            if (kt_tensor_close("threads", r[0][i], r[1][i], 0, 0)) KT_FAIL("fn %d case %d", f, i);
    }
    kn_scope_end(sc);
}

/* ================================ errors ================================ */

static void test_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s20[] = {2, 0};
    kn_tensor *x = kn_ones(KN_F64, 2, s23), *xi = kn_ones(KN_I32, 2, s23);
    KT_ERR(KN_EDTYPE, kn_var(xi, NULL, 0, 1, false), "var");
    KT_ERR(KN_EDTYPE, kn_std(xi, NULL, 0, 1, false), "std");
    KT_ERR(KN_EDTYPE, kn_logsumexp(xi, NULL, 0, false), "logsumexp");
    KT_ERR(KN_EDTYPE, kn_norm(xi, 2, NULL, 0, false), "norm");
    KT_ERR(KN_EDTYPE, kn_amax(kn_ones(KN_BOOL, 2, s23), NULL, 0, false), "amax");
    KT_ERR(KN_EINVAL, kn_norm(x, 0, NULL, 0, false), "p must be > 0");
    KT_ERR(KN_EINVAL, kn_norm(x, -1, NULL, 0, false), "norm");
    KT_ERR(KN_EINVAL, kn_norm(x, NAN, NULL, 0, false), "norm");
    KT_ERR(KN_EINVAL, kn_amax(x, (int[]){2}, 1, false), "amax");
    KT_ERR(KN_EINVAL, kn_prod(x, (int[]){1, -1}, 2, false), "twice");
    KT_ERR(KN_EINVAL, kn_var(x, (int[]){0}, -1, 1, false), "var");
    KT_ERR(KN_EINVAL, kn_amax(kn_ones(KN_F64, 2, s20), (int[]){1}, 1, false), "empty");
    KT_ERR(KN_EINVAL, kn_argmin(kn_ones(KN_F64, 2, s20), KN_ALL_DIMS, false), "argmin");
    kn_tensor *idx = (kn_tensor *)1;
    KT_ERR(KN_EINVAL, kn_max_dim(x, 5, false, &idx), "max_dim");
    KT_TRUE(idx == NULL);
    KT_ERR(KN_EINVAL, kn_min_dim(x, KN_ALL_DIMS, false, NULL), "min_dim");
    KT_ERR(KN_EINVAL, kn_argmax(x, -3, false), "argmax");
    kn_scope_end(sc);
}

int main(void) {
    KT_RUN(test_values_basic);
    KT_RUN(test_values_index);
    KT_RUN(test_values_shapes);
    KT_RUN(test_gradcheck_all);
    KT_RUN(test_grad_special);
    KT_RUN(test_double_backward);
    KT_RUN(test_fast_vs_ref);
    KT_RUN(test_threads_independent);
    KT_RUN(test_errors);
    return kt_finish();
}
