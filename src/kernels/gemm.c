/*
 * gemm.c - the GEMM dispatcher: OpenBLAS (cblas_sgemm/dgemm, row-major) when kiln is built with
 * KILN_HAVE_BLAS, else the blocked reference kernel in ref/gemm_ref.c. Contract in gemm.h.
 *
 * Does not: copy operands, set BLAS thread counts (kn_set_num_threads does), or allocate.
 * Invariants: sizes that do not fit BLAS's 32-bit ints go to the reference kernel; K == 0 and
 * beta == 0 are handled here so that BLAS never sees a degenerate call.
 */
#include "kernels/gemm.h"

#include <limits.h>

#include "core/core_impl.h"

#ifdef KILN_HAVE_BLAS
#include <cblas.h>
#endif

bool kn__gemm_uses_blas(void) {
#ifdef KILN_HAVE_BLAS
    return true;
#else
    return false;
#endif
}

#ifdef KILN_HAVE_BLAS
static bool fits_int(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
    return M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
           ldc <= INT_MAX;
}
#endif

#define SCALE_C(T)                                                                             \
    for (int64_t i = 0; i < M; i++) {                                                          \
        T *c = C + i * ldc;                                                                    \
        if (beta == 0)                                                                         \
            for (int64_t j = 0; j < N; j++) c[j] = 0;                                          \
        else if (beta != 1)                                                                    \
            for (int64_t j = 0; j < N; j++) c[j] *= beta;                                      \
    }

void kn__sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        SCALE_C(float);
        return;
    }
#ifdef KILN_HAVE_BLAS
    if (M == 1 && fits_int(M, N, K, lda, ldb, ldc) && (ta || lda >= K)) {
        /* a single row (batch-1 inference): GEMV reads the weights once, without packing */
        if (tb)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, alpha, B, (int)ldb, A,
                        ta ? (int)lda : 1, beta, C, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)K, (int)N, alpha, B, (int)ldb, A,
                        ta ? (int)lda : 1, beta, C, 1);
        return;
    }
    if (fits_int(M, N, K, lda, ldb, ldc)) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
        return;
    }
#endif
    kn__sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kn__dgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
               int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        SCALE_C(double);
        return;
    }
#ifdef KILN_HAVE_BLAS
    if (fits_int(M, N, K, lda, ldb, ldc)) {
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
        return;
    }
#endif
    kn__dgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kn__gemm(kn_dtype dt, bool ref, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
              double alpha, const void *A, int64_t lda, const void *B, int64_t ldb, double beta,
              void *C, int64_t ldc) {
    if (dt == KN_F32) {
        (ref ? kn__sgemm_ref : kn__sgemm)(ta, tb, M, N, K, (float)alpha, A, lda, B, ldb,
                                          (float)beta, C, ldc);
    } else {
        KN_ASSERT(dt == KN_F64);
        (ref ? kn__dgemm_ref : kn__dgemm)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
}
