/*
 * test_index.c - the indexing and padding family (src/ops/index.c): gather, scatter_add,
 * index_select, index_add (internal), pad (constant / reflect), repeat, tril, triu, one_hot.
 * Hand-checked values, f64 finite-difference gradient checks (non-contiguous inputs and size-1
 * dims included), thread-count independence, and error paths (out-of-range indices, wrong
 * dtypes, shape mismatches).
 */
#include "kn_test.h"

#include "ops/op_impl.h"

/* ---- helpers ---- */
static kn_tensor *T64(int nd, const int64_t *shape, const double *v) {
    return kn_from_data(KN_F64, nd, shape, v);
}
static kn_tensor *I64(int nd, const int64_t *shape, const int64_t *v) {
    return kn_from_data(KN_I64, nd, shape, v);
}
/* f64 leaf with requires_grad and values from a fixed pattern */
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
/* expected tensor of the shape of `like` */
static kn_tensor *expect(const kn_tensor *like, const double *v) {
    return T64(kn_tensor_ndim(like), kn_tensor_shape(like), v);
}
static int check_grad(kn_gradcheck_fn f, void *user, kn_tensor *const *in, int n) {
    char msg[512] = "";
    kn_status s = kn_gradcheck(f, user, in, n, 1e-6, 1e-7, 1e-5, msg, sizeof msg);
    if (s != KN_OK) fprintf(stderr, "  gradcheck: %s (%s)\n", msg, kn_last_error());
    return s == KN_OK;
}

/* ================================ gather ================================ */

static void test_gather_values(void) {
    kn_scope sc = kn_scope_begin();
    double xv[] = {1, 2, 3, 4};
    int64_t s22[] = {2, 2};
    kn_tensor *x = T64(2, s22, xv);
    int64_t iv[] = {0, 0, 1, 0};
    kn_tensor *ix = I64(2, s22, iv);
    /* torch.gather(x, 1, [[0,0],[1,0]]) = [[1,1],[4,3]] */
    kn_tensor *g1 = kn_gather(x, 1, ix);
    double e1[] = {1, 1, 4, 3};
    KT_CLOSE(g1, expect(g1, e1), 0, 0);
    /* dim 0: out[i][j] = x[ix[i][j]][j] = [[1,2],[3,2]] */
    kn_tensor *g0 = kn_gather(x, 0, ix);
    double e0[] = {1, 2, 3, 2};
    KT_CLOSE(g0, expect(g0, e0), 0, 0);
    /* negative dim and an index smaller than x in the other dim */
    int64_t s12[] = {1, 2};
    int64_t iv2[] = {1, 1};
    kn_tensor *g2 = kn_gather(x, -1, I64(2, s12, iv2));
    KT_EQ_INT(1, kn_tensor_dim(g2, 0));
    double e2[] = {2, 2};
    KT_CLOSE(g2, expect(g2, e2), 0, 0);
    /* non-contiguous input: x^T = [[1,3],[2,4]] */
    kn_tensor *gt = kn_gather(kn_transpose(x, 0, 1), 1, ix);
    double et[] = {1, 1, 4, 2};
    KT_CLOSE(gt, expect(gt, et), 0, 0);
    /* int32 data, int32 index */
    int32_t xi[] = {10, 20, 30, 40, 50, 60};
    int64_t s23[] = {2, 3};
    int32_t ii[] = {2, 0, 1, 1};
    kn_tensor *gi = kn_gather(kn_from_data(KN_I32, 2, s23, xi), 1,
                              kn_from_data(KN_I32, 2, s22, ii));
    KT_NOTNULL(gi);
    KT_EQ_INT(KN_I32, kn_tensor_dtype(gi));
    int32_t out[4];
    KT_OK(kn_tensor_read(gi, KN_I32, out, sizeof out));
    KT_EQ_INT(30, out[0]);
    KT_EQ_INT(10, out[1]);
    KT_EQ_INT(50, out[2]);
    KT_EQ_INT(50, out[3]);
    /* 3-D, gather along the middle dim */
    int64_t s3[] = {2, 3, 2}, si3[] = {2, 2, 2};
    double x3[12];
    for (int i = 0; i < 12; i++) x3[i] = i;
    int64_t i3[] = {2, 0, 1, 1, 0, 0, 2, 1};
    kn_tensor *g3 = kn_gather(T64(3, s3, x3), 1, I64(3, si3, i3));
    /* out[a][b][c] = x[a][i3[a][b][c]][c] = 6a + 2*idx + c */
    double e3[] = {4, 1, 2, 3, 6, 7, 10, 9};
    KT_CLOSE(g3, expect(g3, e3), 0, 0);
    kn_scope_end(sc);
}

static void test_gather_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s25[] = {2, 5}, s21[] = {2, 1};
    kn_tensor *x = kn_zeros(KN_F32, 2, s25);
    int64_t bad[] = {7, 0};
    KT_ERR(KN_EINVAL, kn_gather(x, 1, I64(2, s21, bad)),
           "gather: index 7 out of range for dim 1 of size 5");
    int64_t neg[] = {0, -1};
    KT_ERR(KN_EINVAL, kn_gather(x, 1, I64(2, s21, neg)), "index -1 out of range");
    KT_ERR(KN_EDTYPE, kn_gather(x, 1, kn_zeros(KN_F32, 2, s21)), "gather: index must be int64");
    int64_t s2[] = {2};
    KT_ERR(KN_ESHAPE, kn_gather(x, 1, kn_zeros(KN_I64, 1, s2)), "same rank");
    int64_t s31[] = {3, 1};
    KT_ERR(KN_ESHAPE, kn_gather(x, 1, kn_zeros(KN_I64, 2, s31)), "gather");
    kn_tensor *e = kn_gather(x, 5, kn_zeros(KN_I64, 2, s21));
    KT_TRUE(e == NULL);
    KT_TRUE(kn_last_status() != KN_OK);
    /* NULL input keeps the earlier error */
    KT_TRUE(kn_gather(NULL, 0, kn_zeros(KN_I64, 2, s21)) == NULL);
    kn_scope_end(sc);
}

typedef struct {
    int dim;
    kn_tensor *idx;
    bool transpose;
} dimidx;

static kn_tensor *f_gather(kn_tensor *const *in, void *u) {
    dimidx *d = u;
    kn_tensor *x = d->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    return kn_gather(x, d->dim, d->idx);
}

static void test_gather_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s32[] = {3, 2};
    kn_tensor *x = leaf(2, s34, 0.3);
    int64_t iv[] = {0, 0, 3, 1, 2, 2}; /* duplicates accumulate */
    dimidx d = {1, I64(2, s32, iv), false};
    KT_TRUE(check_grad(f_gather, &d, &x, 1));
    int64_t s24[] = {2, 4};
    int64_t iv0[] = {0, 2, 2, 1, 1, 1, 0, 2};
    dimidx d0 = {0, I64(2, s24, iv0), false};
    KT_TRUE(check_grad(f_gather, &d0, &x, 1));
    /* non-contiguous: x (4, 3) transposed to (3, 4) */
    int64_t s43[] = {4, 3};
    kn_tensor *xt = leaf(2, s43, 1.1);
    dimidx dt = {1, I64(2, s32, iv), true};
    KT_TRUE(check_grad(f_gather, &dt, &xt, 1));
    /* size-1 dims */
    int64_t s1[] = {1, 3, 1}, si[] = {1, 2, 1};
    int64_t iv1[] = {2, 2};
    kn_tensor *x1 = leaf(3, s1, 0.5);
    dimidx d1 = {1, I64(3, si, iv1), false};
    KT_TRUE(check_grad(f_gather, &d1, &x1, 1));
    kn_scope_end(sc);
}

/* ============================== scatter_add ============================== */

static void test_scatter_add_values(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s22[] = {2, 2};
    double xv[] = {1, 1, 1, 1, 1, 1};
    kn_tensor *x = T64(2, s23, xv);
    double sv[] = {1, 2, 3, 4};
    int64_t iv[] = {0, 0, 2, 1};
    /* dim 1: row0 += {1 at 0, 2 at 0} -> [4,1,1]; row1 += {3 at 2, 4 at 1} -> [1,5,4] */
    kn_tensor *r1 = kn_scatter_add(x, 1, I64(2, s22, iv), T64(2, s22, sv));
    double e1[] = {4, 1, 1, 1, 5, 4};
    KT_CLOSE(r1, expect(r1, e1), 0, 0);
    /* dim 0 with index [[0,0],[1,0]]: out[idx[i][j]][j] += src[i][j] */
    int64_t iv0[] = {0, 0, 1, 0};
    kn_tensor *r0 = kn_scatter_add(x, 0, I64(2, s22, iv0), T64(2, s22, sv));
    double e0[] = {2, 7, 1, 4, 1, 1};
    KT_CLOSE(r0, expect(r0, e0), 0, 0);
    /* index smaller than src: only index's box of src is used */
    int64_t s12[] = {1, 2}, s33[] = {3, 3};
    int64_t ivs[] = {2, 2};
    double big[] = {1, 2, 100, 100, 100, 100, 100, 100, 100};
    kn_tensor *rs = kn_scatter_add(x, 1, I64(2, s12, ivs), T64(2, s33, big));
    double es[] = {1, 1, 4, 1, 1, 1};
    KT_CLOSE(rs, expect(rs, es), 0, 0);
    /* the input is not modified */
    double ones[] = {1, 1, 1, 1, 1, 1};
    KT_CLOSE(x, expect(x, ones), 0, 0);
    /* int64 data */
    int64_t xi[] = {0, 0, 0}, si[] = {5, 6, 7}, ii[] = {2, 2, 0};
    int64_t s3[] = {3};
    kn_tensor *ri = kn_scatter_add(I64(1, s3, xi), 0, I64(1, s3, ii), I64(1, s3, si));
    int64_t out[3];
    KT_OK(kn_tensor_read(ri, KN_I64, out, sizeof out));
    KT_EQ_INT(7, out[0]);
    KT_EQ_INT(0, out[1]);
    KT_EQ_INT(11, out[2]);
    kn_scope_end(sc);
}

static void test_scatter_add_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s21[] = {2, 1};
    kn_tensor *x = kn_zeros(KN_F64, 2, s23);
    int64_t bad[] = {0, 3};
    KT_ERR(KN_EINVAL, kn_scatter_add(x, 1, I64(2, s21, bad), kn_ones(KN_F64, 2, s21)),
           "scatter_add: index 3 out of range for dim 1 of size 3");
    KT_ERR(KN_EDTYPE, kn_scatter_add(x, 1, I64(2, s21, bad), kn_ones(KN_F32, 2, s21)),
           "scatter_add: src dtype");
    KT_ERR(KN_EDTYPE, kn_scatter_add(x, 1, kn_zeros(KN_F64, 2, s21), kn_ones(KN_F64, 2, s21)),
           "index must be int64");
    int64_t s31[] = {3, 1};
    KT_ERR(KN_ESHAPE, kn_scatter_add(x, 1, kn_zeros(KN_I64, 2, s31), kn_ones(KN_F64, 2, s31)),
           "scatter_add");
    int64_t s22[] = {2, 2};
    KT_ERR(KN_ESHAPE, kn_scatter_add(x, 1, kn_zeros(KN_I64, 2, s22), kn_ones(KN_F64, 2, s21)),
           "scatter_add");
    kn_scope_end(sc);
}

typedef struct {
    int dim;
    kn_tensor *idx;
} scat;

static kn_tensor *f_scatter(kn_tensor *const *in, void *u) {
    scat *s = u;
    return kn_scatter_add(in[0], s->dim, s->idx, in[1]);
}

static void test_scatter_add_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s33[] = {3, 3}, s32[] = {3, 2};
    kn_tensor *in[2] = {leaf(2, s34, 0.1), leaf(2, s33, 0.9)};
    int64_t iv[] = {0, 0, 3, 1, 2, 2};
    scat s = {1, I64(2, s32, iv)}; /* index smaller than src: src grad padded with zeros */
    KT_TRUE(check_grad(f_scatter, &s, in, 2));
    int64_t s24[] = {2, 4};
    int64_t iv0[] = {0, 2, 2, 1, 1, 1, 0, 2};
    kn_tensor *in0[2] = {leaf(2, s34, 0.2), leaf(2, s34, 0.4)};
    scat s0 = {0, I64(2, s24, iv0)};
    KT_TRUE(check_grad(f_scatter, &s0, in0, 2));
    kn_scope_end(sc);
}

static void test_scatter_add_threads(void) {
    kn_scope sc = kn_scope_begin();
    /* large enough to go parallel; duplicates everywhere; same bits with 1 and 2 threads */
    int64_t sx[] = {64, 300}, si[] = {200, 300};
    kn_manual_seed(5);
    kn_tensor *x = kn_randn(KN_F32, 2, sx), *src = kn_randn(KN_F32, 2, si);
    kn_tensor *ix = kn_randint(0, 64, KN_I64, 2, si);
    int prev = kn_get_num_threads();
    kn_set_num_threads(1);
    kn_tensor *a = kn_scatter_add(x, 0, ix, src);
    kn_set_num_threads(2);
    kn_tensor *b = kn_scatter_add(x, 0, ix, src);
    kn_set_num_threads(prev);
    KT_CLOSE(a, b, 0, 0);
    /* and against a serial loop in double */
    int64_t nx = 64 * 300, ni = 200 * 300;
    float *xv = malloc(sizeof(float) * nx), *sv = malloc(sizeof(float) * ni);
    int64_t *iv = malloc(sizeof(int64_t) * ni);
    kn_tensor_read(x, KN_F32, xv, sizeof(float) * nx);
    kn_tensor_read(src, KN_F32, sv, sizeof(float) * ni);
    kn_tensor_read(ix, KN_I64, iv, sizeof(int64_t) * ni);
    for (int64_t i = 0; i < ni; i++) xv[iv[i] * 300 + i % 300] += sv[i];
    kn_tensor *e = kn_from_data(KN_F32, 2, sx, xv);
    free(xv);
    free(sv);
    free(iv);
    KT_CLOSE(a, e, 0, 0); /* same order of additions */
    kn_scope_end(sc);
}

/* ============================ index_select / index_add ============================ */

static void test_index_select_values(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s3[] = {3}, s2[] = {2};
    double xv[] = {1, 2, 3, 4, 5, 6};
    kn_tensor *x = T64(2, s23, xv);
    int64_t iv[] = {2, 0, 2};
    kn_tensor *r1 = kn_index_select(x, 1, I64(1, s3, iv));
    double e1[] = {3, 1, 3, 6, 4, 6};
    KT_CLOSE(r1, expect(r1, e1), 0, 0);
    int32_t iv32[] = {1, 1};
    kn_tensor *r0 = kn_index_select(x, 0, kn_from_data(KN_I32, 1, s2, iv32));
    double e0[] = {4, 5, 6, 4, 5, 6};
    KT_CLOSE(r0, expect(r0, e0), 0, 0);
    /* non-contiguous, middle dim of a 3-D tensor, empty index */
    kn_tensor *rt = kn_index_select(kn_transpose(x, 0, 1), 0, I64(1, s3, iv));
    double et[] = {3, 6, 1, 4, 3, 6};
    KT_CLOSE(rt, expect(rt, et), 0, 0);
    int64_t s0[] = {0};
    kn_tensor *re = kn_index_select(x, 1, kn_zeros(KN_I64, 1, s0));
    KT_NOTNULL(re);
    KT_EQ_INT(0, kn_tensor_dim(re, 1));
    int64_t s232[] = {2, 3, 2};
    double x3[12];
    for (int i = 0; i < 12; i++) x3[i] = i;
    int64_t iv3[] = {1};
    int64_t s1[] = {1};
    kn_tensor *r3 = kn_index_select(T64(3, s232, x3), 1, I64(1, s1, iv3));
    double e3[] = {2, 3, 8, 9};
    KT_CLOSE(r3, expect(r3, e3), 0, 0);
    /* bool data */
    bool bv[] = {true, false, true};
    int64_t ib[] = {1, 0};
    kn_tensor *rb = kn_index_select(kn_from_data(KN_BOOL, 1, s3, bv), 0, I64(1, s2, ib));
    bool ob[2];
    KT_OK(kn_tensor_read(rb, KN_BOOL, ob, sizeof ob));
    KT_TRUE(!ob[0] && ob[1]);
    kn_scope_end(sc);
}

static void test_index_select_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s2[] = {2};
    kn_tensor *x = kn_zeros(KN_F32, 2, s23);
    int64_t bad[] = {0, 3};
    KT_ERR(KN_EINVAL, kn_index_select(x, 1, I64(1, s2, bad)),
           "index_select: index 3 out of range for dim 1 of size 3");
    KT_ERR(KN_EDTYPE, kn_index_select(x, 1, kn_zeros(KN_F32, 1, s2)), "index_select");
    KT_ERR(KN_ESHAPE, kn_index_select(x, 1, kn_zeros(KN_I64, 2, s23)), "must be 1-D");
    kn_scope_end(sc);
}

static kn_tensor *f_index_select(kn_tensor *const *in, void *u) {
    dimidx *d = u;
    kn_tensor *x = d->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    return kn_index_select(x, d->dim, d->idx);
}

static kn_tensor *f_index_add(kn_tensor *const *in, void *u) {
    dimidx *d = u;
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "dim", d->dim);
    kn_tensor *ins[3] = {in[0], d->idx, in[1]}, *out = NULL;
    return kn_op_call("index_add", ins, 3, &a, &out, 1) == 1 ? out : NULL;
}

static void test_index_select_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4}, s5[] = {5};
    int64_t iv[] = {1, 3, 1, 0, 1};
    kn_tensor *x = leaf(2, s34, 0.2);
    dimidx d1 = {1, I64(1, s5, iv), false};
    KT_TRUE(check_grad(f_index_select, &d1, &x, 1));
    int64_t iv0[] = {2, 2, 0, 1, 2};
    dimidx d0 = {0, I64(1, s5, iv0), false};
    KT_TRUE(check_grad(f_index_select, &d0, &x, 1));
    int64_t s43[] = {4, 3};
    kn_tensor *xt = leaf(2, s43, 0.8);
    dimidx dt = {1, I64(1, s5, iv), true};
    KT_TRUE(check_grad(f_index_select, &dt, &xt, 1));
    /* index_add itself (internal op): values and gradients */
    int64_t s35[] = {3, 5};
    kn_tensor *in[2] = {leaf(2, s34, 0.3), leaf(2, s35, 0.6)};
    KT_TRUE(check_grad(f_index_add, &d1, in, 2));
    double zv[12] = {0}, ov[15];
    for (int i = 0; i < 15; i++) ov[i] = 1;
    kn_tensor *ins[2] = {T64(2, s34, zv), T64(2, s35, ov)};
    kn_tensor *r = f_index_add(ins, &d1);
    double e[] = {1, 3, 0, 1, 1, 3, 0, 1, 1, 3, 0, 1};
    KT_CLOSE(r, expect(r, e), 0, 0);
    int64_t bad[] = {1, 4, 1, 0, 1};
    dimidx db = {1, I64(1, s5, bad), false};
    KT_ERR(KN_EINVAL, f_index_add(ins, &db), "index_add: index 4 out of range");
    kn_scope_end(sc);
}

/* ================================= pad ================================= */

static void test_pad_constant(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s3[] = {3};
    double xv[] = {1, 2, 3};
    kn_tensor *x = T64(1, s3, xv);
    int64_t p1[] = {2, 1};
    kn_tensor *r = kn_pad(x, p1, 2, KN_PAD_CONSTANT, 0.0);
    double e[] = {0, 0, 1, 2, 3, 0};
    KT_CLOSE(r, expect(r, e), 0, 0);
    /* value, 2-D, pads on both dims */
    int64_t s22[] = {2, 2};
    double x2[] = {1, 2, 3, 4};
    int64_t p2[] = {1, 0, 0, 1}; /* last dim (1, 0), first dim (0, 1) */
    kn_tensor *r2 = kn_pad(T64(2, s22, x2), p2, 4, KN_PAD_CONSTANT, -1.0);
    KT_EQ_INT(3, kn_tensor_dim(r2, 0));
    KT_EQ_INT(3, kn_tensor_dim(r2, 1));
    double e2[] = {-1, 1, 2, -1, 3, 4, -1, -1, -1};
    KT_CLOSE(r2, expect(r2, e2), 0, 0);
    /* negative pads crop */
    int64_t pc[] = {-1, 1};
    kn_tensor *rc = kn_pad(x, pc, 2, KN_PAD_CONSTANT, 9.0);
    double ec[] = {2, 3, 9};
    KT_CLOSE(rc, expect(rc, ec), 0, 0);
    int64_t pcc[] = {-2, -1};
    kn_tensor *rcc = kn_pad(x, pcc, 2, KN_PAD_CONSTANT, 0.0);
    KT_EQ_INT(0, kn_tensor_dim(rcc, 0));
    /* crop the first dim of a 2-D tensor to nothing but one row, non-contiguous input */
    int64_t p3[] = {0, 0, -1, 0};
    kn_tensor *r3 = kn_pad(kn_transpose(T64(2, s22, x2), 0, 1), p3, 4, KN_PAD_CONSTANT, 0);
    double e3[] = {2, 4};
    KT_CLOSE(r3, T64(2, (int64_t[]){1, 2}, e3), 0, 0);
    /* integer and bool data */
    int32_t xi[] = {7, 8};
    int64_t s2[] = {2};
    kn_tensor *ri = kn_pad(kn_from_data(KN_I32, 1, s2, xi), p1, 2, KN_PAD_CONSTANT, 5.0);
    int32_t oi[5];
    KT_OK(kn_tensor_read(ri, KN_I32, oi, sizeof oi));
    KT_TRUE(oi[0] == 5 && oi[1] == 5 && oi[2] == 7 && oi[3] == 8 && oi[4] == 5);
    /* padding an empty tensor gives all `value` */
    int64_t s0[] = {0};
    kn_tensor *pe = kn_pad(kn_zeros(KN_F64, 1, s0), p1, 2, KN_PAD_CONSTANT, 4.0);
    double epe[] = {4, 4, 4};
    KT_CLOSE(pe, T64(1, s3, epe), 0, 0);
    /* no pads = copy; 0-d input */
    kn_tensor *r0 = kn_pad(kn_scalar(KN_F64, 3.0), NULL, 0, KN_PAD_CONSTANT, 0);
    KT_NEAR(3.0, kn_item(r0), 0);
    kn_scope_end(sc);
}

static void test_pad_reflect(void) {
    kn_scope sc = kn_scope_begin();
    /* F.pad(arange(5.), (2, 3), 'reflect') = [2,1,0,1,2,3,4,3,2,1] */
    kn_tensor *x = kn_arange(0, 5, 1, KN_F64);
    int64_t p[] = {2, 3};
    kn_tensor *r = kn_pad(x, p, 2, KN_PAD_REFLECT, 0);
    double e[] = {2, 1, 0, 1, 2, 3, 4, 3, 2, 1};
    KT_CLOSE(r, expect(r, e), 0, 0);
    /* 2-D, both dims: x = [[0,1,2],[3,4,5]], pads (1,1,1,1) */
    int64_t s23[] = {2, 3};
    double xv[] = {0, 1, 2, 3, 4, 5};
    int64_t p2[] = {1, 1, 1, 1};
    kn_tensor *r2 = kn_pad(T64(2, s23, xv), p2, 4, KN_PAD_REFLECT, 0);
    double e2[] = {4, 3, 4, 5, 4, 1, 0, 1, 2, 1, 4, 3, 4, 5, 4, 1, 0, 1, 2, 1};
    KT_CLOSE(r2, expect(r2, e2), 0, 0);
    /* NCHW-style 4-D with only the last two dims padded; float32 */
    int64_t s4[] = {1, 2, 2, 3};
    kn_tensor *x4 = kn_cast(kn_arange(0, 12, 1, KN_F64), KN_F32);
    x4 = kn_reshape(x4, 4, s4);
    int64_t p4[] = {2, 0, 1, 0};
    kn_tensor *r4 = kn_pad(x4, p4, 4, KN_PAD_REFLECT, 0);
    KT_NOTNULL(r4);
    KT_EQ_INT(3, kn_tensor_dim(r4, 2));
    KT_EQ_INT(5, kn_tensor_dim(r4, 3));
    /* channel 1 row 0 of output = reflected row 1 of channel 1: [9,10,11] -> [11,10,9,10,11] */
    int64_t at[] = {0, 1, 0, 0};
    KT_NEAR(11, kn_tensor_get(r4, at), 0);
    at[3] = 1;
    KT_NEAR(10, kn_tensor_get(r4, at), 0);
    at[2] = 2;
    at[3] = 4;
    KT_NEAR(11, kn_tensor_get(r4, at), 0);
    kn_scope_end(sc);
}

static void test_pad_errors(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s3[] = {3};
    kn_tensor *x = kn_zeros(KN_F32, 1, s3);
    int64_t p3[] = {1, 1, 1};
    KT_ERR(KN_EINVAL, kn_pad(x, p3, 3, KN_PAD_CONSTANT, 0), "pad: padding length 3");
    int64_t p4[] = {1, 1, 1, 1};
    KT_ERR(KN_EINVAL, kn_pad(x, p4, 4, KN_PAD_CONSTANT, 0), "too large for a 1-D input");
    int64_t pr[] = {3, 0};
    KT_ERR(KN_EINVAL, kn_pad(x, pr, 2, KN_PAD_REFLECT, 0), "must be less than");
    int64_t pn[] = {-1, 0};
    KT_ERR(KN_EINVAL, kn_pad(x, pn, 2, KN_PAD_REFLECT, 0), "negative");
    int64_t pneg[] = {-2, -2};
    KT_ERR(KN_ESHAPE, kn_pad(x, pneg, 2, KN_PAD_CONSTANT, 0), "negative or overflowing");
    int64_t ok[] = {1, 1};
    KT_ERR(KN_EINVAL, kn_pad(x, ok, 2, (kn_pad_mode)7, 0), "unknown mode");
    KT_ERR(KN_EINVAL, kn_pad(x, ok, -2, KN_PAD_CONSTANT, 0), "pad");
    kn_scope_end(sc);
}

typedef struct {
    int64_t pads[8];
    int np;
    kn_pad_mode mode;
    bool transpose;
} padcfg;

static kn_tensor *f_pad(kn_tensor *const *in, void *u) {
    padcfg *p = u;
    kn_tensor *x = p->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    return kn_pad(x, p->pads, p->np, p->mode, 0.5);
}

static void test_pad_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s5[] = {5}, s34[] = {3, 4}, s234[] = {2, 3, 4}, s1[] = {1, 3, 1};
    kn_tensor *x1 = leaf(1, s5, 0.1), *x2 = leaf(2, s34, 0.2), *x3 = leaf(3, s234, 0.3);
    kn_tensor *xs = leaf(3, s1, 0.4);
    padcfg c1 = {{2, 3}, 2, KN_PAD_CONSTANT, false};
    KT_TRUE(check_grad(f_pad, &c1, &x1, 1));
    padcfg c2 = {{-1, 2, 1, -1}, 4, KN_PAD_CONSTANT, false};
    KT_TRUE(check_grad(f_pad, &c2, &x2, 1));
    padcfg c3 = {{1, 1, 0, 2, 1, 0}, 6, KN_PAD_CONSTANT, false};
    KT_TRUE(check_grad(f_pad, &c3, &x3, 1));
    padcfg r1 = {{4, 3}, 2, KN_PAD_REFLECT, false};
    KT_TRUE(check_grad(f_pad, &r1, &x1, 1));
    padcfg r2 = {{3, 1, 2, 2}, 4, KN_PAD_REFLECT, false};
    KT_TRUE(check_grad(f_pad, &r2, &x2, 1));
    padcfg r3 = {{1, 2, 2, 1, 1, 1}, 6, KN_PAD_REFLECT, false};
    KT_TRUE(check_grad(f_pad, &r3, &x3, 1));
    int64_t s43[] = {4, 3};
    kn_tensor *xt = leaf(2, s43, 0.6);
    padcfg rt = {{3, 3, 1, 2}, 4, KN_PAD_REFLECT, true};
    KT_TRUE(check_grad(f_pad, &rt, &xt, 1));
    padcfg ct = {{0, 3, -1, 2}, 4, KN_PAD_CONSTANT, true};
    KT_TRUE(check_grad(f_pad, &ct, &xt, 1));
    padcfg rs = {{0, 0, 2, 1}, 4, KN_PAD_REFLECT, false}; /* size-1 last dim, unpadded */
    KT_TRUE(check_grad(f_pad, &rs, &xs, 1));
    kn_scope_end(sc);
}

/* the reflect gradient op differentiates again (its gradient is reflect pad) */
static kn_tensor *f_pad_rbw(kn_tensor *const *in, void *u) {
    padcfg *p = u;
    kn_attrs a = {0};
    kn_attrs_set_ints(&a, "pads", p->pads, p->np);
    kn_tensor *out = NULL;
    return kn_op_call("pad_reflect_backward", in, 1, &a, &out, 1) == 1 ? out : NULL;
}

static void test_pad_reflect_backward_op(void) {
    kn_scope sc = kn_scope_begin();
    /* g over the padded shape of a (2, 3) input with pads (2, 1, 1, 1) -> (4, 6) */
    int64_t s46[] = {4, 6};
    kn_tensor *g = leaf(2, s46, 0.7);
    padcfg p = {{2, 1, 1, 1}, 4, KN_PAD_REFLECT, false};
    KT_TRUE(check_grad(f_pad_rbw, &p, &g, 1));
    /* adjointness: <pad(x), g> == <x, pad_reflect_backward(g)> */
    int64_t s23[] = {2, 3};
    kn_tensor *x = leaf(2, s23, 0.9);
    kn_tensor *px = kn_pad(x, p.pads, 4, KN_PAD_REFLECT, 0);
    kn_tensor *bg = f_pad_rbw(&g, &p);
    double lhs = kn_item(kn_sum(kn_mul(px, g), NULL, 0, false));
    double rhs = kn_item(kn_sum(kn_mul(x, bg), NULL, 0, false));
    KT_NEAR(lhs, rhs, 1e-12);
    kn_scope_end(sc);
}

static void test_pad_large(void) {
    kn_scope sc = kn_scope_begin();
    /* parallel path vs per-element definition */
    int64_t s[] = {4, 8, 40, 50};
    kn_manual_seed(3);
    kn_tensor *x = kn_randn(KN_F32, 4, s);
    int64_t p[] = {3, 2, 1, 4};
    kn_tensor *r = kn_pad(x, p, 4, KN_PAD_REFLECT, 0);
    kn_tensor *c = kn_pad(x, p, 4, KN_PAD_CONSTANT, 2.0);
    KT_NOTNULL(r);
    KT_NOTNULL(c);
    int bad = 0;
    for (int64_t a = 0; a < 4 && !bad; a++)
        for (int64_t b = 0; b < 8; b++)
            for (int64_t h = 0; h < 45; h += 3)
                for (int64_t w = 0; w < 55; w++) {
                    int64_t ih = h - 1, iw = w - 3;
                    int64_t rh = ih < 0 ? -ih : (ih >= 40 ? 78 - ih : ih);
                    int64_t rw = iw < 0 ? -iw : (iw >= 50 ? 98 - iw : iw);
                    int64_t io[] = {a, b, h, w}, ir[] = {a, b, rh, rw}, ic[] = {a, b, ih, iw};
                    if (kn_tensor_get(r, io) != kn_tensor_get(x, ir)) bad++;
                    bool in = ih >= 0 && ih < 40 && iw >= 0 && iw < 50;
                    if (kn_tensor_get(c, io) != (in ? kn_tensor_get(x, ic) : 2.0)) bad++;
                }
    KT_EQ_INT(0, bad);
    kn_scope_end(sc);
}

/* ================================ repeat ================================ */

static void test_repeat(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s2[] = {2};
    double xv[] = {1, 2};
    kn_tensor *x = T64(1, s2, xv);
    int64_t r1[] = {3};
    kn_tensor *a = kn_repeat(x, 1, r1);
    double ea[] = {1, 2, 1, 2, 1, 2};
    KT_CLOSE(a, expect(a, ea), 0, 0);
    int64_t r2[] = {2, 2};
    kn_tensor *b = kn_repeat(x, 2, r2); /* (2, 4) */
    KT_EQ_INT(2, kn_tensor_ndim(b));
    double eb[] = {1, 2, 1, 2, 1, 2, 1, 2};
    KT_CLOSE(b, expect(b, eb), 0, 0);
    int64_t s22[] = {2, 2};
    double x2[] = {1, 2, 3, 4};
    int64_t r3[] = {2, 1, 2};
    kn_tensor *c = kn_repeat(T64(2, s22, x2), 3, r3); /* (2, 2, 4) */
    double ec[] = {1, 2, 1, 2, 3, 4, 3, 4, 1, 2, 1, 2, 3, 4, 3, 4};
    KT_CLOSE(c, expect(c, ec), 0, 0);
    /* non-contiguous and int data */
    int64_t xi[] = {1, 2, 3, 4};
    int64_t r4[] = {1, 2};
    kn_tensor *d = kn_repeat(kn_transpose(I64(2, s22, xi), 0, 1), 2, r4);
    int64_t od[8];
    KT_OK(kn_tensor_read(d, KN_I64, od, sizeof od));
    int64_t ed[] = {1, 3, 1, 3, 2, 4, 2, 4};
    for (int i = 0; i < 8; i++) KT_EQ_INT(ed[i], od[i]);
    /* zero repeats give an empty dim */
    int64_t r0[] = {0, 2};
    kn_tensor *z = kn_repeat(T64(2, s22, x2), 2, r0);
    KT_EQ_INT(0, kn_tensor_numel(z));
    /* errors */
    KT_ERR(KN_EINVAL, kn_repeat(T64(2, s22, x2), 1, r1), "repeat");
    int64_t rn[] = {1, -1};
    KT_ERR(KN_EINVAL, kn_repeat(T64(2, s22, x2), 2, rn), "negative");
    kn_scope_end(sc);
}

typedef struct {
    int n;
    int64_t r[8];
    bool transpose;
} repcfg;

static kn_tensor *f_repeat(kn_tensor *const *in, void *u) {
    repcfg *c = u;
    kn_tensor *x = c->transpose ? kn_transpose(in[0], 0, 1) : in[0];
    return kn_repeat(x, c->n, c->r);
}

static void test_repeat_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s23[] = {2, 3}, s1[] = {1, 3};
    kn_tensor *x = leaf(2, s23, 0.3), *x1 = leaf(2, s1, 0.5);
    repcfg a = {2, {2, 3}, false};
    KT_TRUE(check_grad(f_repeat, &a, &x, 1));
    repcfg b = {4, {2, 1, 3, 2}, false};
    KT_TRUE(check_grad(f_repeat, &b, &x, 1));
    repcfg c = {3, {1, 4, 1}, false};
    KT_TRUE(check_grad(f_repeat, &c, &x1, 1));
    int64_t s32[] = {3, 2};
    kn_tensor *xt = leaf(2, s32, 0.8);
    repcfg d = {2, {3, 2}, true};
    KT_TRUE(check_grad(f_repeat, &d, &xt, 1));
    kn_scope_end(sc);
}

/* ============================== tril / triu ============================== */

static void test_tril_triu(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s34[] = {3, 4};
    kn_tensor *x = kn_add_scalar(kn_reshape(kn_arange(0, 12, 1, KN_F64), 2, s34), 1.0);
    kn_tensor *l0 = kn_tril(x, 0);
    double el0[] = {1, 0, 0, 0, 5, 6, 0, 0, 9, 10, 11, 0};
    KT_CLOSE(l0, expect(l0, el0), 0, 0);
    kn_tensor *l1 = kn_tril(x, 1);
    double el1[] = {1, 2, 0, 0, 5, 6, 7, 0, 9, 10, 11, 12};
    KT_CLOSE(l1, expect(l1, el1), 0, 0);
    kn_tensor *lm = kn_tril(x, -1);
    double elm[] = {0, 0, 0, 0, 5, 0, 0, 0, 9, 10, 0, 0};
    KT_CLOSE(lm, expect(lm, elm), 0, 0);
    kn_tensor *u0 = kn_triu(x, 0);
    double eu0[] = {1, 2, 3, 4, 0, 6, 7, 8, 0, 0, 11, 12};
    KT_CLOSE(u0, expect(u0, eu0), 0, 0);
    kn_tensor *u2 = kn_triu(x, 2);
    double eu2[] = {0, 0, 3, 4, 0, 0, 0, 8, 0, 0, 0, 0};
    KT_CLOSE(u2, expect(u2, eu2), 0, 0);
    kn_tensor *um = kn_triu(x, -5);
    KT_CLOSE(um, x, 0, 0);
    kn_tensor *lz = kn_tril(x, -9);
    KT_CLOSE(lz, kn_zeros_like(x), 0, 0);
    /* batched, non-contiguous, bool */
    int64_t s223[] = {2, 2, 3};
    kn_tensor *b = kn_ones(KN_BOOL, 3, s223);
    kn_tensor *bt = kn_tril(kn_transpose(b, 1, 2), 0); /* (2, 3, 2) */
    bool ob[12];
    KT_OK(kn_tensor_read(bt, KN_BOOL, ob, sizeof ob));
    bool eb[] = {1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1};
    for (int i = 0; i < 12; i++) KT_EQ_INT(eb[i], ob[i]);
    int64_t s3[] = {3};
    KT_ERR(KN_ESHAPE, kn_tril(kn_zeros(KN_F32, 1, s3), 0), "tril: input must have at least 2");
    KT_ERR(KN_ESHAPE, kn_triu(kn_zeros(KN_F32, 1, s3), 0), "triu");
    kn_scope_end(sc);
}

typedef struct {
    bool upper, transpose;
    int64_t k;
} tricfg;

static kn_tensor *f_tri(kn_tensor *const *in, void *u) {
    tricfg *c = u;
    kn_tensor *x = c->transpose ? kn_transpose(in[0], 1, 2) : in[0];
    return c->upper ? kn_triu(x, c->k) : kn_tril(x, c->k);
}

static void test_tri_grad(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s[] = {2, 3, 4};
    kn_tensor *x = leaf(3, s, 0.2);
    tricfg a = {false, false, 0}, b = {true, false, 1}, c = {true, true, -1};
    KT_TRUE(check_grad(f_tri, &a, &x, 1));
    KT_TRUE(check_grad(f_tri, &b, &x, 1));
    KT_TRUE(check_grad(f_tri, &c, &x, 1));
    kn_scope_end(sc);
}

/* ================================ one_hot ================================ */

static void test_one_hot(void) {
    kn_scope sc = kn_scope_begin();
    int64_t s3[] = {3};
    int64_t v[] = {0, 2, 1};
    kn_tensor *o = kn_one_hot(I64(1, s3, v), 4);
    KT_NOTNULL(o);
    KT_EQ_INT(KN_I64, kn_tensor_dtype(o));
    KT_EQ_INT(4, kn_tensor_dim(o, 1));
    int64_t out[12];
    KT_OK(kn_tensor_read(o, KN_I64, out, sizeof out));
    int64_t e[] = {1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0};
    for (int i = 0; i < 12; i++) KT_EQ_INT(e[i], out[i]);
    /* inferred classes = max + 1, 2-D int32 input */
    int64_t s22[] = {2, 2};
    int32_t v2[] = {1, 4, 0, 2};
    kn_tensor *o2 = kn_one_hot(kn_from_data(KN_I32, 2, s22, v2), -1);
    KT_NOTNULL(o2);
    KT_EQ_INT(3, kn_tensor_ndim(o2));
    KT_EQ_INT(5, kn_tensor_dim(o2, 2));
    int64_t at[] = {0, 1, 4};
    KT_NEAR(1, kn_tensor_get(o2, at), 0);
    at[2] = 3;
    KT_NEAR(0, kn_tensor_get(o2, at), 0);
    /* errors */
    KT_ERR(KN_EINVAL, kn_one_hot(I64(1, s3, v), 2), "one_hot: class 2 out of range");
    int64_t neg[] = {0, -1, 1};
    KT_ERR(KN_EINVAL, kn_one_hot(I64(1, s3, neg), 3), "non-negative");
    KT_ERR(KN_EINVAL, kn_one_hot(I64(1, s3, neg), -1), "non-negative");
    KT_ERR(KN_EDTYPE, kn_one_hot(kn_zeros(KN_F32, 1, s3), 3), "one_hot");
    int64_t s0[] = {0};
    KT_ERR(KN_EINVAL, kn_one_hot(kn_zeros(KN_I64, 1, s0), -1), "empty");
    kn_tensor *ez = kn_one_hot(kn_zeros(KN_I64, 1, s0), 3);
    KT_NOTNULL(ez);
    KT_EQ_INT(0, kn_tensor_numel(ez));
    kn_scope_end(sc);
}

/* ============================ large / parallel ============================ */

static void test_large_gather_select(void) {
    kn_scope sc = kn_scope_begin();
    int64_t sx[] = {300, 257};
    kn_manual_seed(11);
    kn_tensor *x = kn_randn(KN_F32, 2, sx);
    kn_tensor *ix = kn_randint(0, 257, KN_I64, 2, sx);
    kn_tensor *g = kn_gather(x, 1, ix);
    int64_t si[] = {500};
    kn_tensor *sel = kn_randint(0, 300, KN_I64, 1, si);
    kn_tensor *s = kn_index_select(x, 0, sel);
    KT_NOTNULL(g);
    KT_NOTNULL(s);
    int bad = 0;
    for (int64_t i = 0; i < 300; i += 7)
        for (int64_t j = 0; j < 257; j++) {
            int64_t a[] = {i, j};
            int64_t b[] = {i, (int64_t)kn_tensor_get(ix, a)};
            if (kn_tensor_get(g, a) != kn_tensor_get(x, b)) bad++;
        }
    for (int64_t k = 0; k < 500; k += 13)
        for (int64_t j = 0; j < 257; j++) {
            int64_t a[] = {k, j}, kk[] = {k};
            int64_t b[] = {(int64_t)kn_tensor_get(sel, kk), j};
            if (kn_tensor_get(s, a) != kn_tensor_get(x, b)) bad++;
        }
    KT_EQ_INT(0, bad);
    kn_scope_end(sc);
}

int main(void) {
    KT_RUN(test_gather_values);
    KT_RUN(test_gather_errors);
    KT_RUN(test_gather_grad);
    KT_RUN(test_scatter_add_values);
    KT_RUN(test_scatter_add_errors);
    KT_RUN(test_scatter_add_grad);
    KT_RUN(test_scatter_add_threads);
    KT_RUN(test_index_select_values);
    KT_RUN(test_index_select_errors);
    KT_RUN(test_index_select_grad);
    KT_RUN(test_pad_constant);
    KT_RUN(test_pad_reflect);
    KT_RUN(test_pad_errors);
    KT_RUN(test_pad_grad);
    KT_RUN(test_pad_reflect_backward_op);
    KT_RUN(test_pad_large);
    KT_RUN(test_repeat);
    KT_RUN(test_repeat_grad);
    KT_RUN(test_tril_triu);
    KT_RUN(test_tri_grad);
    KT_RUN(test_one_hot);
    KT_RUN(test_large_gather_select);
    return kt_finish();
}
