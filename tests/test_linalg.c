/* test_linalg.c - matmul, linear and the GEMM kernels: hand-checked values, 1-D/N-D/broadcast
 * semantics of torch.matmul, strided operands, BLAS vs reference vs naive GEMM, thread-count
 * independence, f64 gradient checks (first and second order) and error messages. */
#include "kernels/gemm.h"
#include "kn_test.h"
#include "ops/op_impl.h"

#define RUN(fn)                                                                                \
    do {                                                                                       \
        kn_scope s_ = kn_scope_begin();                                                        \
        KT_RUN(fn);                                                                            \
        kn_scope_end(s_);                                                                      \
    } while (0)

static kn_tensor *from(kn_dtype dt, int nd, const int64_t *shape, const double *v) {
    kn_tensor *t = kn_from_data(KN_F64, nd, shape, v);
    return dt == KN_F64 ? t : kn_cast(t, dt);
}

static kn_tensor *randn(kn_dtype dt, int nd, const int64_t *shape) {
    return kn_randn(dt, nd, shape);
}

static kn_tensor *leaf(int nd, const int64_t *shape) {
    kn_tensor *t = kn_randn(KN_F64, nd, shape);
    kn_tensor_set_requires_grad(t, true);
    return t;
}

/* Runs a registered op with the reference kernels forced on or off. */
static kn_tensor *run_op(const char *name, kn_tensor **in, int nin, const kn_attrs *a, bool ref) {
    bool prev = kn__force_ref(ref);
    kn_tensor *out[KN_MAX_OUTS] = {0};
    int n = kn_op_call(name, in, nin, a, out, KN_MAX_OUTS);
    kn__force_ref(prev);
    return n >= 1 ? out[0] : NULL;
}

/* Expected torch.matmul by explicit loops over (contiguous copies of) a and b, in double. */
static kn_tensor *matmul_expected(kn_tensor *a, kn_tensor *b) {
    int na = kn_tensor_ndim(a), nb = kn_tensor_ndim(b);
    kn_tensor *a2 = na == 1 ? kn_unsqueeze(a, 0) : a;
    kn_tensor *b2 = nb == 1 ? kn_unsqueeze(b, 1) : b;
    int n2a = kn_tensor_ndim(a2), n2b = kn_tensor_ndim(b2);
    const int64_t *sa = kn_tensor_shape(a2), *sb = kn_tensor_shape(b2);
    int64_t M = sa[n2a - 2], K = sa[n2a - 1], N = sb[n2b - 1];
    int nbd = (n2a > n2b ? n2a : n2b) - 2;
    int64_t bs[8], osh[10];
    for (int i = 0; i < nbd; i++) {
        int ia = i - (nbd - (n2a - 2)), ib = i - (nbd - (n2b - 2));
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        bs[i] = da > db ? da : db;
        osh[i] = bs[i];
    }
    osh[nbd] = M;
    osh[nbd + 1] = N;
    kn_tensor *out = kn_zeros(KN_F64, nbd + 2, osh);
    double *o = kn_tensor_data(out);
    int64_t B = 1;
    for (int i = 0; i < nbd; i++) B *= bs[i];
    for (int64_t bi = 0; bi < B; bi++) {
        int64_t idx[8], rem = bi;
        for (int d = nbd - 1; d >= 0; d--) {
            idx[d] = rem % bs[d];
            rem /= bs[d];
        }
        int64_t ia[10], ib[10];
        for (int d = 0; d < n2a - 2; d++) {
            int64_t v = idx[d + nbd - (n2a - 2)];
            ia[d] = sa[d] == 1 ? 0 : v;
        }
        for (int d = 0; d < n2b - 2; d++) {
            int64_t v = idx[d + nbd - (n2b - 2)];
            ib[d] = sb[d] == 1 ? 0 : v;
        }
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    ia[n2a - 2] = i;
                    ia[n2a - 1] = k;
                    ib[n2b - 2] = k;
                    ib[n2b - 1] = j;
                    s += kn_tensor_get(a2, ia) * kn_tensor_get(b2, ib);
                }
                o[(bi * M + i) * N + j] = s;
            }
    }
    /* drop the promoted dims like torch.matmul */
    int64_t fsh[10];
    int fn = 0;
    for (int i = 0; i < nbd; i++) fsh[fn++] = bs[i];
    if (na > 1) fsh[fn++] = M;
    if (nb > 1) fsh[fn++] = N;
    return kn_reshape(out, fn, fsh);
}

/* ------------------------------------------------------------------ GEMM kernels */

static void fill(double *p, int64_t n, unsigned seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = ((seed >> 8) & 0xffff) / 65536.0 - 0.5;
    }
}

/* blocked (kn__?gemm_ref) and dispatched (BLAS) kernels vs the naive loop, both dtypes, all
 * transposes, sizes across the block edges, padded leading dimensions, alpha/beta */
static void test_gemm_kernels(void) {
    int64_t sizes[][3] = {{1, 1, 1},   {7, 5, 3},     {6, 16, 1},   {13, 17, 300},
                          {100, 530, 9}, {97, 33, 257}, {1601, 3, 5}, {2, 4100, 2}};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        int64_t M = sizes[si][0], N = sizes[si][1], K = sizes[si][2];
        for (int tr = 0; tr < 4; tr++) {
            bool ta = tr & 1, tb = tr & 2;
            int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
            int64_t na = (ta ? K : M) * lda, nbb = (tb ? N : K) * ldb, nc = M * ldc;
            double *A = malloc(sizeof(double) * na), *B = malloc(sizeof(double) * nbb);
            double *C0 = malloc(sizeof(double) * nc), *C1 = malloc(sizeof(double) * nc),
                   *C2 = malloc(sizeof(double) * nc);
            float *Af = malloc(sizeof(float) * na), *Bf = malloc(sizeof(float) * nbb);
            float *F0 = malloc(sizeof(float) * nc), *F1 = malloc(sizeof(float) * nc),
                  *F2 = malloc(sizeof(float) * nc);
            fill(A, na, 1 + si);
            fill(B, nbb, 7 + si);
            fill(C0, nc, 3);
            for (int64_t i = 0; i < na; i++) Af[i] = (float)A[i];
            for (int64_t i = 0; i < nbb; i++) Bf[i] = (float)B[i];
            for (int64_t i = 0; i < nc; i++) F0[i] = (float)C0[i];
            memcpy(C1, C0, sizeof(double) * nc);
            memcpy(C2, C0, sizeof(double) * nc);
            memcpy(F1, F0, sizeof(float) * nc);
            memcpy(F2, F0, sizeof(float) * nc);
            double alpha = 0.75, beta = tr == 3 ? 0.0 : -0.5;
            kn__dgemm_naive(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
            kn__dgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
            kn__dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
            kn__sgemm_naive(ta, tb, M, N, K, (float)alpha, Af, lda, Bf, ldb, (float)beta, F0, ldc);
            kn__sgemm_ref(ta, tb, M, N, K, (float)alpha, Af, lda, Bf, ldb, (float)beta, F1, ldc);
            kn__sgemm(ta, tb, M, N, K, (float)alpha, Af, lda, Bf, ldb, (float)beta, F2, ldc);
            double md = 0, mf = 0;
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    int64_t k = i * ldc + j;
                    md = fmax(md, fmax(fabs(C1[k] - C0[k]), fabs(C2[k] - C0[k])));
                    mf = fmax(mf, fmax(fabs(F1[k] - F0[k]), fabs(F2[k] - F0[k])));
                }
            /* the padding columns of C are never touched */
            int untouched = 1;
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = N; j < ldc; j++)
                    untouched &= C1[i * ldc + j] == C0[i * ldc + j] &&
                                 F1[i * ldc + j] == F0[i * ldc + j];
            free(A), free(B), free(C0), free(C1), free(C2);
            free(Af), free(Bf), free(F0), free(F1), free(F2);
            if (!(md <= 1e-12 * (double)K + 1e-14) || !(mf <= 2e-6 * (double)K))
                KT_FAIL("gemm %lldx%lldx%lld ta=%d tb=%d: max diff f64 %g f32 %g", (long long)M,
                        (long long)N, (long long)K, ta, tb, md, mf);
            KT_TRUE(untouched);
        }
    }
}

static void test_gemm_edges(void) {
    /* beta == 0 overwrites NaN in C; K == 0 scales C by beta; M == 0 touches nothing */
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1};
    float C[4] = {NAN, NAN, NAN, NAN};
    kn__sgemm(false, false, 2, 2, 3, 1, A, 3, B, 2, 0, C, 2);
    KT_NEAR(4, C[0], 0);
    KT_NEAR(5, C[1], 0);
    KT_NEAR(10, C[2], 0);
    KT_NEAR(11, C[3], 0);
    float R[4] = {NAN, NAN, NAN, NAN};
    kn__sgemm_ref(false, false, 2, 2, 3, 1, A, 3, B, 2, 0, R, 2);
    for (int i = 0; i < 4; i++) KT_NEAR(C[i], R[i], 0);
    float D[4] = {NAN, 1, 2, 3};
    kn__sgemm(false, false, 2, 2, 0, 1, A, 1, B, 2, 0, D, 2);
    for (int i = 0; i < 4; i++) KT_NEAR(0, D[i], 0);
    double E[4] = {1, 2, 3, 4};
    kn__dgemm_ref(true, true, 2, 2, 0, 1, NULL, 2, NULL, 1, 2.0, E, 2);
    KT_NEAR(8, E[3], 0);
    kn__dgemm(false, false, 0, 2, 3, 1, NULL, 3, NULL, 2, 0, NULL, 2);
    KT_TRUE(kn__gemm_uses_blas() == kn_have_blas());
}

/* ------------------------------------------------------------------ matmul */

static void test_matmul_values(void) {
    double av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {7, 8, 9, 10, 11, 12};
    for (int d = 0; d < 2; d++) {
        kn_dtype dt = d ? KN_F64 : KN_F32;
        kn_tensor *a = from(dt, 2, (int64_t[]){2, 3}, av), *b = from(dt, 2, (int64_t[]){3, 2}, bv);
        kn_tensor *c = kn_matmul(a, b);
        KT_NOTNULL(c);
        KT_EQ_INT(dt, kn_tensor_dtype(c));
        double ev[4] = {58, 64, 139, 154};
        KT_CLOSE(c, from(KN_F64, 2, (int64_t[]){2, 2}, ev), 0, 0);
        /* 1-D cases */
        kn_tensor *v3 = from(dt, 1, (int64_t[]){3}, (double[]){1, 2, 3});
        kn_tensor *w3 = from(dt, 1, (int64_t[]){3}, (double[]){4, 5, 6});
        kn_tensor *dot = kn_matmul(v3, w3);
        KT_EQ_INT(0, kn_tensor_ndim(dot));
        KT_NEAR(32, kn_item(dot), 0);
        kn_tensor *vm = kn_matmul(from(dt, 1, (int64_t[]){2}, (double[]){1, 2}), a);
        KT_EQ_INT(1, kn_tensor_ndim(vm));
        KT_CLOSE(vm, from(KN_F64, 1, (int64_t[]){3}, (double[]){9, 12, 15}), 0, 0);
        kn_tensor *mv = kn_matmul(a, from(dt, 1, (int64_t[]){3}, (double[]){1, 1, 1}));
        KT_CLOSE(mv, from(KN_F64, 1, (int64_t[]){2}, (double[]){6, 15}), 0, 0);
    }
}

/* shapes of torch.matmul: (a shape, b shape) -> compared with explicit loops, f32 and f64 */
static void test_matmul_shapes(void) {
    struct {
        int na, nb;
        int64_t sa[4], sb[4];
        int nout;
        int64_t so[4];
    } cases[] = {
        {1, 1, {5}, {5}, 0, {0}},
        {1, 2, {4}, {4, 3}, 1, {3}},
        {2, 1, {3, 4}, {4}, 1, {3}},
        {3, 1, {2, 3, 4}, {4}, 2, {2, 3}},
        {1, 3, {3}, {2, 3, 4}, 2, {2, 4}},
        {3, 2, {2, 3, 4}, {4, 5}, 3, {2, 3, 5}},
        {2, 3, {3, 4}, {2, 4, 5}, 3, {2, 3, 5}},
        {4, 3, {2, 1, 3, 4}, {3, 4, 2}, 4, {2, 3, 3, 2}},
        {3, 3, {1, 3, 4}, {5, 4, 2}, 3, {5, 3, 2}},
        {2, 2, {1, 4}, {4, 1}, 2, {1, 1}},
        {3, 3, {6, 1, 7}, {6, 7, 1}, 3, {6, 1, 1}},
        {2, 2, {0, 4}, {4, 3}, 2, {0, 3}},
        {2, 2, {3, 0}, {0, 2}, 2, {3, 2}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int d = 0; d < 2; d++) {
            kn_dtype dt = d ? KN_F64 : KN_F32;
            kn_tensor *a = randn(dt, cases[i].na, cases[i].sa);
            kn_tensor *b = randn(dt, cases[i].nb, cases[i].sb);
            kn_tensor *c = kn_matmul(a, b);
            KT_NOTNULL(c);
            KT_EQ_INT(cases[i].nout, kn_tensor_ndim(c));
            for (int k = 0; k < cases[i].nout; k++)
                KT_EQ_INT(cases[i].so[k], kn_tensor_shape(c)[k]);
            KT_CLOSE(c, matmul_expected(a, b), d ? 1e-12 : 1e-5, d ? 1e-12 : 1e-5);
            /* the reference kernel agrees */
            kn_tensor *in[2] = {a, b};
            KT_CLOSE(run_op("matmul", in, 2, NULL, true), c, d ? 1e-12 : 1e-5, 1e-5);
        }
    }
}

/* transposed views go to GEMM as trans flags, other strides are copied: same results */
static void test_matmul_strided(void) {
    kn_tensor *a = randn(KN_F32, 2, (int64_t[]){6, 5});   /* a^T is (5, 6) */
    kn_tensor *b = randn(KN_F32, 2, (int64_t[]){7, 6});   /* b^T is (6, 7) */
    kn_tensor *at = kn_transpose(a, 0, 1), *bt = kn_transpose(b, 0, 1);
    KT_TRUE(!kn_tensor_is_contiguous(at));
    kn_tensor *c = kn_matmul(at, bt);
    KT_CLOSE(c, kn_matmul(kn_contiguous(at), kn_contiguous(bt)), 1e-5, 1e-5);
    KT_CLOSE(c, matmul_expected(at, bt), 1e-5, 1e-5);
    /* every-other column: no GEMM layout, copied */
    kn_tensor *wide = randn(KN_F32, 2, (int64_t[]){5, 12});
    kn_tensor *sl = kn_slice(wide, 1, 0, KN_SLICE_END, 2); /* (5, 6), column stride 2 */
    KT_CLOSE(kn_matmul(sl, bt), matmul_expected(sl, bt), 1e-5, 1e-5);
    /* a row slice keeps a padded leading dimension */
    kn_tensor *rows = kn_slice(wide, 1, 3, 9, 1); /* (5, 6), row stride 12 */
    KT_CLOSE(kn_matmul(rows, bt), matmul_expected(rows, bt), 1e-5, 1e-5);
    /* batched transposed and expanded (stride 0) operands */
    kn_tensor *x = randn(KN_F64, 3, (int64_t[]){4, 3, 5});
    kn_tensor *y = randn(KN_F64, 2, (int64_t[]){2, 5});
    kn_tensor *xt = kn_transpose(x, 1, 2);                              /* (4, 5, 3) */
    kn_tensor *ye = kn_expand(kn_unsqueeze(y, 0), 3, (int64_t[]){4, 2, 5}); /* (4, 2, 5) */
    KT_CLOSE(kn_matmul(ye, xt), matmul_expected(ye, xt), 1e-12, 1e-12);
    kn_tensor *xp = kn_permute(x, (int[]){1, 0, 2}); /* (3, 4, 5), batch stride 5 */
    kn_tensor *z = randn(KN_F64, 2, (int64_t[]){5, 2});
    KT_CLOSE(kn_matmul(xp, z), matmul_expected(xp, z), 1e-12, 1e-12);
    /* a vector with a stride */
    kn_tensor *v = kn_slice(randn(KN_F64, 1, (int64_t[]){10}), 0, 0, KN_SLICE_END, 2);
    kn_tensor *v2 = kn_slice(randn(KN_F64, 1, (int64_t[]){6}), 0, 0, 4, 2); /* (2), stride 2 */
    KT_CLOSE(kn_matmul(z, v2), matmul_expected(z, v2), 1e-12, 1e-12);
    KT_CLOSE(kn_matmul(v, z), matmul_expected(v, z), 1e-12, 1e-12);
}

/* fast (BLAS) and reference kernels agree; results do not depend on the thread count */
static void test_matmul_fast_vs_ref_threads(void) {
    kn_tensor *a = randn(KN_F32, 2, (int64_t[]){129, 257});
    kn_tensor *b = randn(KN_F32, 2, (int64_t[]){257, 65});
    kn_tensor *in[2] = {a, b};
    kn_tensor *fast = run_op("matmul", in, 2, NULL, false);
    kn_tensor *ref = run_op("matmul", in, 2, NULL, true);
    KT_CLOSE(fast, ref, 1e-4, 1e-4);
    int prev = kn_get_num_threads();
    kn_tensor *x = randn(KN_F32, 3, (int64_t[]){16, 40, 30}); /* batch-parallel path */
    kn_tensor *y = randn(KN_F32, 3, (int64_t[]){16, 30, 20});
    kn_tensor *p = randn(KN_F32, 2, (int64_t[]){300, 300}); /* threaded GEMM path */
    kn_tensor *r[2][4];
    for (int t = 0; t < 2; t++) {
        kn_set_num_threads(t + 1);
        r[t][0] = kn_matmul(x, y);
        r[t][1] = kn_matmul(p, p);
        kn_tensor *pin[2] = {p, p};
        r[t][2] = run_op("matmul", pin, 2, NULL, true);
        kn_tensor *xin[2] = {x, y};
        r[t][3] = run_op("matmul", xin, 2, NULL, true);
    }
    kn_set_num_threads(prev);
    for (int k = 0; k < 4; k++) KT_CLOSE(r[1][k], r[0][k], 0, 0);
}

typedef struct {
    int ta, tb; /* transpose input 0/1 (last two dims) inside f: non-contiguous operands */
} mm_gc;

static kn_tensor *f_matmul(kn_tensor *const *in, void *u) {
    const mm_gc *o = u;
    kn_tensor *a = o && o->ta ? kn_transpose(in[0], -1, -2) : in[0];
    kn_tensor *b = o && o->tb ? kn_transpose(in[1], -1, -2) : in[1];
    return kn_matmul(a, b);
}

static void test_matmul_gradcheck(void) {
    struct {
        int na, nb;
        int64_t sa[4], sb[4];
        mm_gc o;
    } cases[] = {
        {2, 2, {3, 4}, {4, 5}, {0, 0}},      {1, 2, {4}, {4, 5}, {0, 0}},
        {2, 1, {3, 4}, {4}, {0, 0}},         {1, 1, {4}, {4}, {0, 0}},
        {3, 2, {2, 3, 4}, {4, 5}, {0, 0}},   {4, 3, {2, 1, 3, 4}, {3, 4, 2}, {0, 0}},
        {2, 3, {3, 4}, {2, 4, 5}, {0, 0}},   {3, 1, {2, 3, 4}, {4}, {0, 0}},
        {1, 3, {3}, {2, 3, 4}, {0, 0}},      {2, 2, {1, 4}, {4, 1}, {0, 0}},
        {2, 2, {4, 3}, {5, 4}, {1, 1}},      {3, 3, {2, 4, 3}, {1, 4, 2}, {1, 0}},
        {3, 2, {2, 3, 4}, {5, 4}, {0, 1}},
    };
    char msg[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kn_tensor *in[2] = {leaf(cases[i].na, cases[i].sa), leaf(cases[i].nb, cases[i].sb)};
        kn_status st = kn_gradcheck(f_matmul, &cases[i].o, in, 2, 1e-6, 1e-7, 1e-6, msg,
                                    sizeof msg);
        if (st != KN_OK) KT_FAIL("case %zu: %s", i, msg);
    }
}

/* second order: the gradient of sum(matmul(a, b)^2) w.r.t. a, differentiated again */
static kn_tensor *f_matmul_grad(kn_tensor *const *in, void *u) {
    (void)u;
    kn_tensor *y = kn_matmul(in[0], in[1]);
    kn_tensor *l = kn_sum(kn_mul(y, y), NULL, 0, false);
    kn_tensor *g[2] = {0};
    if (kn_grad(&l, 1, NULL, in, 2, true, g) != KN_OK) return NULL;
    return kn_add(kn_sum(g[0], NULL, 0, false), kn_sum(kn_mul(g[1], g[1]), NULL, 0, false));
}

static void test_matmul_double_backward(void) {
    char msg[256];
    kn_tensor *in[2] = {leaf(3, (int64_t[]){2, 3, 4}), leaf(2, (int64_t[]){4, 2})};
    kn_status st = kn_gradcheck(f_matmul_grad, NULL, in, 2, 1e-6, 1e-6, 1e-5, msg, sizeof msg);
    if (st != KN_OK) KT_FAIL("%s", msg);
}

static void test_matmul_errors(void) {
    kn_tensor *a = kn_ones(KN_F32, 2, (int64_t[]){2, 3});
    kn_tensor *b = kn_ones(KN_F32, 2, (int64_t[]){4, 5});
    KT_ERR(KN_ESHAPE, kn_matmul(a, b), "matmul: shapes (2, 3) and (4, 5) cannot be multiplied");
    KT_ERR(KN_ESHAPE, kn_matmul(kn_ones(KN_F32, 1, (int64_t[]){3}),
                                kn_ones(KN_F32, 1, (int64_t[]){4})),
           "cannot be multiplied");
    KT_ERR(KN_ESHAPE, kn_matmul(kn_scalar(KN_F32, 2), a), "at least 1 dimension");
    KT_ERR(KN_ESHAPE, kn_matmul(kn_ones(KN_F32, 3, (int64_t[]){2, 2, 3}),
                                kn_ones(KN_F32, 3, (int64_t[]){3, 3, 2})),
           "batch dims of (2, 2, 3) and (3, 3, 2)");
    KT_ERR(KN_EDTYPE, kn_matmul(a, kn_ones(KN_F64, 2, (int64_t[]){3, 2})), "matmul");
    KT_ERR(KN_EDTYPE, kn_matmul(kn_ones(KN_I32, 2, (int64_t[]){2, 3}),
                                kn_ones(KN_I32, 2, (int64_t[]){3, 2})),
           "matmul: dtype int32 is not supported");
    KT_ERR(KN_EINVAL, kn_matmul(NULL, a), "matmul");
}

/* ------------------------------------------------------------------ linear */

static void test_linear_values(void) {
    double xv[6] = {1, 2, 3, -1, 0, 2}, wv[6] = {1, 0, 0, 0, 1, 1}, bv[2] = {10, 20};
    for (int d = 0; d < 2; d++) {
        kn_dtype dt = d ? KN_F64 : KN_F32;
        kn_tensor *x = from(dt, 2, (int64_t[]){2, 3}, xv), *w = from(dt, 2, (int64_t[]){2, 3}, wv);
        kn_tensor *b = from(dt, 1, (int64_t[]){2}, bv);
        double e1[4] = {11, 25, 9, 22}, e0[4] = {1, 5, -1, 2};
        KT_CLOSE(kn_linear(x, w, b), from(KN_F64, 2, (int64_t[]){2, 2}, e1), 0, 0);
        KT_CLOSE(kn_linear(x, w, NULL), from(KN_F64, 2, (int64_t[]){2, 2}, e0), 0, 0);
        /* 1-D input */
        kn_tensor *y = kn_linear(from(dt, 1, (int64_t[]){3}, xv), w, b);
        KT_EQ_INT(1, kn_tensor_ndim(y));
        KT_CLOSE(y, from(KN_F64, 1, (int64_t[]){2}, e1), 0, 0);
    }
}

static void test_linear_shapes_strided(void) {
    for (int d = 0; d < 2; d++) {
        kn_dtype dt = d ? KN_F64 : KN_F32;
        double tol = d ? 1e-12 : 1e-5;
        kn_tensor *x = randn(dt, 3, (int64_t[]){2, 3, 4});
        kn_tensor *w = randn(dt, 2, (int64_t[]){5, 4});
        kn_tensor *b = randn(dt, 1, (int64_t[]){5});
        kn_tensor *e = kn_add(kn_matmul(x, kn_transpose(w, 0, 1)), b);
        kn_tensor *y = kn_linear(x, w, b);
        KT_EQ_INT(3, kn_tensor_ndim(y));
        KT_EQ_INT(5, kn_tensor_shape(y)[2]);
        KT_CLOSE(y, e, tol, tol);
        /* transposed weight view (stored (in, out)), permuted x, strided bias */
        kn_tensor *wt = kn_transpose(kn_contiguous(kn_transpose(w, 0, 1)), 0, 1);
        KT_TRUE(!kn_tensor_is_contiguous(wt));
        kn_tensor *xp = kn_permute(kn_contiguous(kn_permute(x, (int[]){1, 0, 2})),
                                   (int[]){1, 0, 2});
        KT_TRUE(!kn_tensor_is_contiguous(xp));
        kn_tensor *b2 = kn_squeeze(kn_slice(kn_stack((kn_tensor *[]){b, b}, 2, 1), 1, 0, 1, 1), 1);
        KT_EQ_INT(2, kn_tensor_strides(b2)[0]);
        KT_CLOSE(kn_linear(xp, wt, b2), e, tol, tol);
        kn_tensor *xt = kn_transpose(randn(dt, 2, (int64_t[]){4, 6}), 0, 1); /* (6, 4) */
        KT_CLOSE(kn_linear(xt, w, NULL), kn_matmul(xt, kn_transpose(w, 0, 1)), tol, tol);
        /* fast vs reference */
        kn_tensor *in[3] = {x, w, b};
        KT_CLOSE(run_op("linear", in, 3, NULL, true), y, tol, tol);
        /* empty batch and empty input features */
        kn_tensor *x0 = randn(dt, 2, (int64_t[]){0, 4});
        KT_EQ_INT(0, kn_tensor_numel(kn_linear(x0, w, b)));
        kn_tensor *yk = kn_linear(randn(dt, 2, (int64_t[]){3, 0}),
                                  randn(dt, 2, (int64_t[]){5, 0}), b);
        KT_CLOSE(yk, kn_expand(b, 2, (int64_t[]){3, 5}), 0, 0);
    }
}

static kn_tensor *f_linear(kn_tensor *const *in, void *u) {
    int mode = *(int *)u;
    if (mode == 1) return kn_linear(in[0], in[1], NULL);
    if (mode == 2) return kn_linear(kn_transpose(in[0], 0, 1), kn_transpose(in[1], 0, 1), in[2]);
    return kn_linear(in[0], in[1], in[2]);
}

static void test_linear_gradcheck(void) {
    char msg[256];
    struct {
        int mode, nx;
        int64_t sx[3], sw[2];
    } cases[] = {
        {0, 2, {3, 4}, {5, 4}},   {1, 2, {3, 4}, {5, 4}}, {0, 3, {2, 3, 4}, {2, 4}},
        {0, 1, {4}, {3, 4}},      {0, 2, {1, 1}, {1, 1}}, {2, 2, {4, 3}, {4, 2}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t out = cases[i].mode == 2 ? cases[i].sw[1] : cases[i].sw[0];
        kn_tensor *in[3] = {leaf(cases[i].nx, cases[i].sx), leaf(2, cases[i].sw),
                            leaf(1, &out)};
        int n = cases[i].mode == 1 ? 2 : 3;
        kn_status st = kn_gradcheck(f_linear, &cases[i].mode, in, n, 1e-6, 1e-7, 1e-6, msg,
                                    sizeof msg);
        if (st != KN_OK) KT_FAIL("case %zu: %s", i, msg);
    }
}

static void test_linear_errors(void) {
    kn_tensor *x = kn_ones(KN_F32, 2, (int64_t[]){2, 3});
    KT_ERR(KN_ESHAPE, kn_linear(x, kn_ones(KN_F32, 2, (int64_t[]){4, 5}), NULL),
           "linear: input (2, 3) and weight (4, 5)");
    KT_ERR(KN_ESHAPE, kn_linear(x, kn_ones(KN_F32, 1, (int64_t[]){3}), NULL), "linear");
    KT_ERR(KN_ESHAPE,
           kn_linear(x, kn_ones(KN_F32, 2, (int64_t[]){4, 3}), kn_ones(KN_F32, 1, (int64_t[]){3})),
           "linear: bias (3,) does not fit weight (4, 3)");
    KT_ERR(KN_EDTYPE, kn_linear(x, kn_ones(KN_F64, 2, (int64_t[]){4, 3}), NULL), "linear");
}

static void test_no_leaks(void) {
    /* everything above ran inside scopes: nothing may be left alive */
    KT_EQ_INT(0, kn_live_tensors());
}

int main(void) {
    kn_manual_seed(1234);
    RUN(test_gemm_kernels);
    RUN(test_gemm_edges);
    RUN(test_matmul_values);
    RUN(test_matmul_shapes);
    RUN(test_matmul_strided);
    RUN(test_matmul_fast_vs_ref_threads);
    RUN(test_matmul_gradcheck);
    RUN(test_matmul_double_backward);
    RUN(test_matmul_errors);
    RUN(test_linear_values);
    RUN(test_linear_shapes_strided);
    RUN(test_linear_gradcheck);
    RUN(test_linear_errors);
    KT_RUN(test_no_leaks);
    return kt_finish();
}
