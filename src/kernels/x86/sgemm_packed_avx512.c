/*
 * sgemm_packed_avx512.c - y = x W^T + b for f32 with W packed ahead of time: the kernel of the
 * graph compiler's prepack pass (linear layers of frozen graphs, whose weights are constants).
 *
 * A general GEMM (OpenBLAS) packs both operands on every call; for an inference batch the weight
 * is the large operand, so that packing is a large share of the time (measured 26% of an MLP at
 * batch 64). Here W (N x K) is packed once into panels of 32 output columns,
 * wp[(nb * K + k) * 32 + j] = W[nb * 32 + j][k] (zeros past N), and the micro-kernel reads x
 * where it lies: 8 rows x 32 columns in 16 zmm accumulators; per k it loads two vectors of the
 * panel and broadcasts one element of each of the 8 rows (FMA-bound: 16 FMAs per 2 loads and 8
 * embedded broadcasts; 8 rows rather than 12 measured 182 vs 173 GFLOP/s at batch 64, which 12
 * does not divide). Batch 1 takes 4 panels at once instead, for enough independent chains.
 *
 * Numerics: each output starts from its bias and adds its K products in k order with fused
 * multiply-adds: the same terms as the GEMM path in another rounding order (the prepack pass is
 * therefore frozen-only and tested with a tolerance). Determinism: an output is computed by one
 * thread in one order; threads split (panel, row block) tasks, so the thread count does not
 * change results.
 */
#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "core/core_impl.h"
#include "kernels/gemm.h"

#define MR 8
#define NR 32

bool kn__sgemm_packed_available(void) {
    return kn__has_avx512f();
}

int64_t kn__sgemm_packed_size(int64_t N, int64_t K) {
    return (N + NR - 1) / NR * NR * K;
}

void kn__sgemm_pack_wt(const float *w, int64_t ldw, int64_t N, int64_t K, float *wp) {
    int64_t nb = (N + NR - 1) / NR;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t k = 0; k < K; k++) {
            float *d = wp + (b * K + k) * NR;
            for (int64_t j = 0; j < NR; j++) {
                int64_t n = b * NR + j;
                d[j] = n < N ? w[n * ldw + k] : 0.0f;
            }
        }
}

/* rows [0, rows) of an MR-row block (rows < MR: the missing rows repeat the last one; their
 * results are not stored), columns [0, 32) of panel p masked by m0 / m1 */
__attribute__((target("avx512f"))) static void micro(const float *x, int64_t ldx, int rows,
                                                     const float *p, int64_t K, const float *bias,
                                                     float *c, int64_t ldc, __mmask16 m0,
                                                     __mmask16 m1) {
    const float *xr[MR];
    for (int r = 0; r < MR; r++)
        xr[r] = x + (r < rows ? r : rows - 1) * ldx;
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    __m512 a[MR][2];
    for (int r = 0; r < MR; r++)
        a[r][0] = b0, a[r][1] = b1;
    for (int64_t k = 0; k < K; k++) {
        __m512 w0 = _mm512_load_ps(p + k * NR), w1 = _mm512_load_ps(p + k * NR + 16);
        for (int r = 0; r < MR; r++) {
            __m512 v = _mm512_set1_ps(xr[r][k]);
            a[r][0] = _mm512_fmadd_ps(v, w0, a[r][0]);
            a[r][1] = _mm512_fmadd_ps(v, w1, a[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, a[r][0]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, a[r][1]);
    }
}

/* One row (batch-1 inference) against up to 4 panels at once: 8 independent accumulators hide the
 * FMA latency that a single row's 2 would expose. Same per-output order as micro(). */
#define RP 4
__attribute__((target("avx512f"))) static void micro_row(const float *x, const float *p, int np,
                                                         int64_t K, const float *bias, float *c,
                                                         int64_t N, int64_t n0) {
    __m512 a[RP][2];
    const float *pp[RP];
    __mmask16 m[RP][2];
    for (int q = 0; q < RP; q++) {
        int64_t cols = q < np ? N - (n0 + q * NR) : 0;
        if (cols > NR) cols = NR;
        m[q][0] = cols >= 16 ? 0xffff : cols <= 0 ? 0 : (__mmask16)((1u << cols) - 1);
        m[q][1] = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
        pp[q] = p + (q < np ? q : 0) * K * NR;
        const float *bq = bias ? bias + n0 + q * NR : NULL;
        a[q][0] = bq ? _mm512_maskz_loadu_ps(m[q][0], bq) : _mm512_setzero_ps();
        a[q][1] = bq ? _mm512_maskz_loadu_ps(m[q][1], bq + 16) : _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < K; k++) {
        __m512 v = _mm512_set1_ps(x[k]);
        for (int q = 0; q < RP; q++) {
            a[q][0] = _mm512_fmadd_ps(v, _mm512_load_ps(pp[q] + k * NR), a[q][0]);
            a[q][1] = _mm512_fmadd_ps(v, _mm512_load_ps(pp[q] + k * NR + 16), a[q][1]);
        }
    }
    for (int q = 0; q < np; q++) {
        _mm512_mask_storeu_ps(c + n0 + q * NR, m[q][0], a[q][0]);
        _mm512_mask_storeu_ps(c + n0 + q * NR + 16, m[q][1], a[q][1]);
    }
}

bool kn__sgemm_packed(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx, const float *wp,
                      const float *bias, float *c, int64_t ldc) {
    if (!kn__sgemm_packed_available() || ((uintptr_t)wp & 63)) return false;
    if (M <= 0 || N <= 0) return true;
    const int64_t NB = (N + NR - 1) / NR, MB = (M + MR - 1) / MR, T = NB * MB;
    const int nth = kn__threads();
    if (M == 1) {
        const int64_t G = (NB + RP - 1) / RP;
#pragma omp parallel for num_threads(nth) if (nth > 1 && G > 1 && N * K > 1 << 16) schedule(static)
        for (int64_t gq = 0; gq < G; gq++) {
            int np = (int)(NB - gq * RP < RP ? NB - gq * RP : RP);
            micro_row(x, wp + gq * RP * K * NR, np, K, bias, c, N, gq * RP * NR);
        }
        return true;
    }
    const bool par = nth > 1 && T > 1 && (double)M * (double)N * (double)K > 1 << 18;
    /* tasks (panel, row block), panel-major: a thread's consecutive tasks share a panel */
#pragma omp parallel for num_threads(nth) if (par) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        int64_t nb = t / MB, mb = t % MB, n0 = nb * NR, m0 = mb * MR;
        int64_t cols = N - n0 < NR ? N - n0 : NR, rows = M - m0 < MR ? M - m0 : MR;
        __mmask16 k0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
        __mmask16 k1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
        micro(x + m0 * ldx, ldx, (int)rows, wp + nb * K * NR, K, bias ? bias + n0 : NULL,
              c + m0 * ldc + n0, ldc, k0, k1);
    }
    return true;
}
