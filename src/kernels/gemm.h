/*
 * gemm.h - kiln's single internal GEMM entry, row-major:
 *
 *     C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C
 *
 * op(X) is X or X^T (ta / tb). A is stored (M x K) row-major with row stride lda when !ta and
 * (K x M) when ta; likewise B is (K x N) with ldb when !tb and (N x K) when tb. Leading
 * dimensions follow BLAS: at least max(1, stored columns).
 *
 * kn__sgemm / kn__dgemm go to OpenBLAS (cblas_?gemm) when kiln is built with KILN_HAVE_BLAS and
 * the sizes fit BLAS's 32-bit ints, else to the blocked reference kernel (gemm_ref.c), which is
 * also what ops call as their forward_ref. kn__?gemm_naive is a plain triple loop used only by
 * tests as ground truth for the blocked kernel.
 *
 * Invariants: beta == 0 never reads C (NaN/garbage in C is overwritten); K == 0 scales C by beta;
 * M == 0 or N == 0 does nothing. For a given problem every C element is accumulated in the same
 * order whatever the thread count (threads split M and N, never K), so results do not depend on
 * kn_set_num_threads. Called inside an OpenMP parallel region, both kernels run single-threaded.
 */
#ifndef KN_KERNELS_GEMM_H
#define KN_KERNELS_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/core.h"

void kn__sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kn__dgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
               int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

/* Blocked portable kernel (packing + register-tiled micro-kernel, OpenMP over tiles). */
void kn__sgemm_ref(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kn__dgemm_ref(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                   int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

/* Triple loop, single-threaded; tests only. */
void kn__sgemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kn__dgemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                     const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                     double *C, int64_t ldc);

/* dtype-generic form for op code written once for f32 and f64 (dt is KN_F32 or KN_F64);
 * ref selects the reference kernel (forward_ref paths). */
void kn__gemm(kn_dtype dt, bool ref, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
              double alpha, const void *A, int64_t lda, const void *B, int64_t ldb, double beta,
              void *C, int64_t ldc);

/* ---- y = x W^T (+ b) with W packed once (sgemm_packed_avx512.c; the prepack pass) ----
 * kn__sgemm_pack_wt packs W (N x K, row stride ldw) into wp of kn__sgemm_packed_size(N, K)
 * floats (64-byte aligned). kn__sgemm_packed computes c (M x N, ldc) = x (M x K, ldx) W^T + bias
 * (bias: N values or NULL); false, doing nothing, without AVX-512F or with a misaligned wp. */
bool kn__sgemm_packed_available(void);
int64_t kn__sgemm_packed_size(int64_t N, int64_t K);
void kn__sgemm_pack_wt(const float *w, int64_t ldw, int64_t N, int64_t K, float *wp);
bool kn__sgemm_packed(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx, const float *wp,
                      const float *bias, float *c, int64_t ldc);

/* True when kn__sgemm uses OpenBLAS. */
bool kn__gemm_uses_blas(void);

#endif
