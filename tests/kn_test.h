/*
 * kn_test.h - kiln's in-repo test helpers: typed asserts that print both values, a tensor compare
 * that prints the first mismatches and the max difference, and the closing line
 * "N passed, N failed". A test is a function; a failed assert marks it failed and returns.
 *
 *   static void test_add(void) { KT_EQ_INT(2, 1 + 1); }
 *   int main(void) { KT_RUN(test_add); return kt_finish(); }
 */
#ifndef KN_TEST_H
#define KN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"

static int kt_passed, kt_failed, kt_cur_failed;
static const char *kt_cur_name;

#define KT_FAIL(...)                                                                           \
    do {                                                                                       \
        fprintf(stderr, "  FAIL %s:%d in %s: ", __FILE__, __LINE__, kt_cur_name);              \
        fprintf(stderr, __VA_ARGS__);                                                          \
        fprintf(stderr, "\n");                                                                 \
        kt_cur_failed = 1;                                                                     \
        return;                                                                                \
    } while (0)

#define KT_TRUE(c)                                                                             \
    do {                                                                                       \
        if (!(c)) KT_FAIL("expected true: %s (last error: %s)", #c, kn_last_error());          \
    } while (0)
#define KT_EQ_INT(expected, actual)                                                            \
    do {                                                                                       \
        long long kt_e = (long long)(expected), kt_a = (long long)(actual);                    \
        if (kt_e != kt_a) KT_FAIL("%s == %s: expected %lld, got %lld", #expected, #actual,     \
                                  kt_e, kt_a);                                                 \
    } while (0)
#define KT_NEAR(expected, actual, tol)                                                         \
    do {                                                                                       \
        double kt_e = (double)(expected), kt_a = (double)(actual);                             \
        if (!(fabs(kt_e - kt_a) <= (tol)) && !(isnan(kt_e) && isnan(kt_a)))                    \
            KT_FAIL("%s ~ %s: expected %.9g, got %.9g (tol %g)", #expected, #actual, kt_e,     \
                    kt_a, (double)(tol));                                                      \
    } while (0)
#define KT_OK(status_expr)                                                                     \
    do {                                                                                       \
        kn_status kt_s = (status_expr);                                                        \
        if (kt_s != KN_OK) KT_FAIL("%s returned %s: %s", #status_expr, kn_status_name(kt_s),   \
                                   kn_last_error());                                           \
    } while (0)
#define KT_STATUS(expected, status_expr)                                                       \
    do {                                                                                       \
        kn_status kt_s = (status_expr);                                                        \
        if (kt_s != (expected)) KT_FAIL("%s: expected %s, got %s (%s)", #status_expr,          \
                                        kn_status_name(expected), kn_status_name(kt_s),        \
                                        kn_last_error());                                      \
    } while (0)
#define KT_NOTNULL(p)                                                                          \
    do {                                                                                       \
        if ((p) == NULL) KT_FAIL("%s is NULL: %s", #p, kn_last_error());                       \
    } while (0)
/* Expects a NULL result with the given status and an error message containing `substr`. */
#define KT_ERR(expected, ptr_expr, substr)                                                     \
    do {                                                                                       \
        kn_clear_error();                                                                      \
        void *kt_p = (void *)(ptr_expr);                                                       \
        if (kt_p != NULL) KT_FAIL("%s: expected failure %s, got a result", #ptr_expr,          \
                                  kn_status_name(expected));                                   \
        if (kn_last_status() != (expected))                                                    \
            KT_FAIL("%s: expected %s, got %s (%s)", #ptr_expr, kn_status_name(expected),       \
                    kn_status_name(kn_last_status()), kn_last_error());                        \
        if (!strstr(kn_last_error(), (substr)))                                                \
            KT_FAIL("%s: message \"%s\" lacks \"%s\"", #ptr_expr, kn_last_error(), (substr));  \
    } while (0)

/* Compares two tensors of equal shape elementwise: |a-e| <= atol + rtol*|e| (NaN == NaN).
 * Returns 0 when close; else prints up to 5 mismatches and the max difference, returns 1. */
static inline int kt_tensor_close(const char *what, const kn_tensor *actual,
                                  const kn_tensor *expected, double atol, double rtol) {
    if (!actual || !expected) {
        fprintf(stderr, "  %s: NULL tensor (%s)\n", what, kn_last_error());
        return 1;
    }
    int nd = kn_tensor_ndim(actual);
    if (nd != kn_tensor_ndim(expected) ||
        memcmp(kn_tensor_shape(actual), kn_tensor_shape(expected), sizeof(int64_t) * nd) != 0) {
        fprintf(stderr, "  %s: shape mismatch (ndim %d vs %d)\n", what, nd,
                kn_tensor_ndim(expected));
        return 1;
    }
    int64_t n = kn_tensor_numel(actual);
    double *a = malloc(sizeof(double) * (n ? n : 1)), *e = malloc(sizeof(double) * (n ? n : 1));
    kn_tensor_read(actual, KN_F64, a, sizeof(double) * n);
    kn_tensor_read(expected, KN_F64, e, sizeof(double) * n);
    int bad = 0;
    double maxd = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(e[i])) continue;
        double d = fabs(a[i] - e[i]);
        if (isnan(d) || (isinf(e[i]) && a[i] != e[i])) d = INFINITY;
        if (isinf(e[i]) && a[i] == e[i]) d = 0;
        if (d > maxd) maxd = d;
        if (!(d <= atol + rtol * fabs(e[i]))) {
            if (bad < 5)
                fprintf(stderr, "  %s: [%lld] got %.9g expected %.9g\n", what, (long long)i, a[i],
                        e[i]);
            bad++;
        }
    }
    if (bad) fprintf(stderr, "  %s: %d of %lld differ, max |diff| %.3g\n", what, bad,
                     (long long)n, maxd);
    free(a);
    free(e);
    return bad ? 1 : 0;
}
#define KT_CLOSE(actual, expected, atol, rtol)                                                 \
    do {                                                                                       \
        if (kt_tensor_close(#actual, (actual), (expected), (atol), (rtol)))                   \
            KT_FAIL("tensors differ: %s vs %s", #actual, #expected);                           \
    } while (0)

#define KT_RUN(fn)                                                                             \
    do {                                                                                       \
        kt_cur_name = #fn;                                                                     \
        kt_cur_failed = 0;                                                                     \
        kn_clear_error();                                                                      \
        fn();                                                                                  \
        if (kt_cur_failed) {                                                                   \
            kt_failed++;                                                                       \
            fprintf(stderr, "[FAIL] %s\n", #fn);                                               \
        } else {                                                                               \
            kt_passed++;                                                                       \
            printf("[ ok ] %s\n", #fn);                                                        \
        }                                                                                      \
    } while (0)

static inline int kt_finish(void) {
    printf("%d passed, %d failed\n", kt_passed, kt_failed);
    return kt_failed ? 1 : 0;
}

/* True when KILN_TEST_QUICK is set (sanitizer builds shorten long loops). */
static inline int kt_quick(void) {
    const char *q = getenv("KILN_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

#endif
