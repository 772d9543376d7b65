/*
 * pool_avx512.c - max pooling with AVX-512: 2x2 / stride 2 on short rows (W <= 32), and the
 * interior of any stride-2 pool without indices (ResNet's 3x3 stem pool).
 *
 * The generic kernel vectorises along a row of output columns; with LeNet's 8- and 24-wide
 * planes a row is a handful of columns and the scalar selects become branches that mispredict
 * on every other element. Here one row pair (two input rows, one output row) is one step:
 * masked loads, even/odd de-interleave with permutes, and the window's four candidates compared
 * with mask registers in the reference's scan order (a later candidate wins when greater or NaN),
 * so values and indices are bit-identical to the reference.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>

#include "core/core_impl.h"
#include "kernels/conv.h"

/* One row pair of width W (<= 32): the windows' four candidates (a b / c d, 16 lanes = output
 * columns) compared in the reference's scan order, a later one winning when greater or NaN.
 * Returns the maxima; *tb, *tc, *td: lanes where b, c, d took over at their turn. */
static inline __attribute__((always_inline, target("avx512f"))) __m512
scan_pair(const float *r0, int64_t W, __mmask16 lo_m, __mmask16 hi_m, __mmask16 *tb, __mmask16 *tc,
          __mmask16 *td) {
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const float *r1 = r0 + W;
    __m512 a0 = _mm512_maskz_loadu_ps(lo_m, r0), a1 = _mm512_maskz_loadu_ps(hi_m, r0 + 16);
    __m512 b0 = _mm512_maskz_loadu_ps(lo_m, r1), b1 = _mm512_maskz_loadu_ps(hi_m, r1 + 16);
    __m512 a = _mm512_permutex2var_ps(a0, even, a1), b = _mm512_permutex2var_ps(a0, odd, a1);
    __m512 c = _mm512_permutex2var_ps(b0, even, b1), d = _mm512_permutex2var_ps(b0, odd, b1);
    __m512 m = a;
    *tb = _mm512_cmp_ps_mask(b, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    m = _mm512_mask_mov_ps(m, *tb, b);
    *tc = _mm512_cmp_ps_mask(c, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q);
    m = _mm512_mask_mov_ps(m, *tc, c);
    *td = _mm512_cmp_ps_mask(d, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(m, *td, d);
}

__attribute__((target("avx512f"))) static void rows(const float *x, float *y, int64_t *idx,
                                                    int64_t nrows, int64_t OH, int64_t W) {
    const int64_t OW = W / 2;
    const __mmask16 lo_m = (__mmask16)(W >= 16 ? 0xffff : (1u << W) - 1);
    const __mmask16 hi_m = (__mmask16)(W <= 16 ? 0 : (1u << (W - 16)) - 1);
    const __mmask16 out_m = (__mmask16)((1u << OW) - 1);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int64_t r = 0; r < nrows; r++) {
        __mmask16 tb, tc, td;
        __m512 m = scan_pair(x + r * 2 * W, W, lo_m, hi_m, &tb, &tc, &td);
        /* index offset of the winner: a 0, b 1, c W, d W + 1 */
        __m512i k = _mm512_maskz_mov_epi32(tb, _mm512_set1_epi32(1));
        k = _mm512_mask_mov_epi32(k, tc, _mm512_set1_epi32((int)W));
        k = _mm512_mask_mov_epi32(k, td, _mm512_set1_epi32((int)W + 1));
        _mm512_mask_storeu_ps(y + r * OW, out_m, m);
        if (idx) {
            /* index within the plane: 2*oh*W + 2*ow + k */
            int64_t oh = r % OH;
            __m512i v = _mm512_add_epi32(
                _mm512_add_epi32(_mm512_set1_epi32((int)(2 * oh * W)), _mm512_slli_epi32(lane, 1)),
                k);
            __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
            __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
            _mm512_mask_storeu_epi64(idx + r * OW, (__mmask8)(out_m & 0xff), lo);
            if (OW > 8) _mm512_mask_storeu_epi64(idx + r * OW + 8, (__mmask8)(out_m >> 8), hi);
        }
    }
}

bool kn__maxpool2x2_rows_avx512(const float *x, float *y, int64_t *idx, int64_t nrows, int64_t OH,
                                int64_t W) {
    if (!kn__has_avx512f() || W < 2 || W > 32 || (W & 1) || OH < 1 || 2 * OH * W > INT32_MAX)
        return false;
    rows(x, y, idx, nrows, OH, W);
    return true;
}

/* Backward of the same pool, dense: every input element lies in exactly one window, so each
 * output row pair is written whole (gy + 0 where the element is its window's argmax, +0
 * elsewhere) instead of zeroing the plane and scattering. "gy + 0" is what the reference's
 * scatter into zeros computes (it turns -0 into +0), so the bits agree. relu_mask (the graph
 * compiler's fusion of a following relu_backward, x being relu's output): the argmax element
 * keeps its gradient only when it is > 0, as relu_backward would (+0 otherwise). */
__attribute__((target("avx512f"))) static void bwd_rows(const float *x, const float *gy, float *gx,
                                                        int64_t r0, int64_t r1, int64_t W,
                                                        bool relu_mask) {
    const int64_t OW = W / 2;
    const __mmask16 lo_m = (__mmask16)(W >= 16 ? 0xffff : (1u << W) - 1);
    const __mmask16 hi_m = (__mmask16)(W <= 16 ? 0 : (1u << (W - 16)) - 1);
    const __mmask16 out_m = (__mmask16)((1u << OW) - 1);
    /* interleave e (even columns) and o (odd columns) back into a row: lanes 0..15, 16..31 */
    const __m512i il_lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i il_hi =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t r = r0; r < r1; r++) {
        __mmask16 tb, tc, td;
        __m512 m = scan_pair(x + r * 2 * W, W, lo_m, hi_m, &tb, &tc, &td);
        /* winner masks: d if td; else c if tc; else b if tb; else a */
        __mmask16 wd = td, wc = tc & ~td, wb = tb & ~tc & ~td, wa = ~(tb | tc | td);
        if (relu_mask) { /* relu's backward too: the argmax element passes only if it is > 0 */
            __mmask16 pos = _mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ);
            wa &= pos, wb &= pos, wc &= pos, wd &= pos;
        }
        __m512 g = _mm512_add_ps(_mm512_maskz_loadu_ps(out_m, gy + r * OW), zero);
        __m512 ea = _mm512_maskz_mov_ps(wa, g), ob = _mm512_maskz_mov_ps(wb, g);
        __m512 ec = _mm512_maskz_mov_ps(wc, g), od = _mm512_maskz_mov_ps(wd, g);
        float *y0 = gx + r * 2 * W, *y1 = y0 + W;
        _mm512_mask_storeu_ps(y0, lo_m, _mm512_permutex2var_ps(ea, il_lo, ob));
        _mm512_mask_storeu_ps(y0 + 16, hi_m, _mm512_permutex2var_ps(ea, il_hi, ob));
        _mm512_mask_storeu_ps(y1, lo_m, _mm512_permutex2var_ps(ec, il_lo, od));
        _mm512_mask_storeu_ps(y1 + 16, hi_m, _mm512_permutex2var_ps(ec, il_hi, od));
    }
}

bool kn__maxpool2x2_bwd_rows_avx512(const float *x, const float *gy, float *gx, int64_t nrows,
                                    int64_t W, bool relu_mask) {
    if (!kn__has_avx512f() || W < 2 || W > 32 || (W & 1)) return false;
    int nth = kn__threads();
#pragma omp parallel num_threads(nth) if (nrows * W > 16384)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t per = (nrows + n - 1) / n, s = per * t, e = s + per < nrows ? s + per : nrows;
        if (s < e) bwd_rows(x, gy, gx, s, e, W, relu_mask);
    }
    return true;
}

__attribute__((target("avx512f"))) static void
maxpool_s2_interior(const float *x, float *y, const kn_pool_geom *p, int64_t lo, int64_t hi) {
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int64_t oh = 0; oh < p->OH; oh++) {
        int64_t hs = oh * p->sh - p->ph, he = hs + (p->kh - 1) * p->dh + 1;
        if (he > p->H) he = p->H;
        while (hs < 0)
            hs += p->dh;
        for (int64_t ow = lo; ow < hi; ow += 16) {
            const int64_t n = hi - ow < 16 ? hi - ow : 16; /* outputs; inputs 2n - 1 per tap */
            const __mmask16 m0 = n >= 8 ? 0xffff : (__mmask16)((1u << (2 * n - 1)) - 1);
            const __mmask16 m1 = n > 8 ? (__mmask16)((1u << (2 * n - 17)) - 1) : 0;
            __m512 m = _mm512_set1_ps(-INFINITY);
            for (int64_t ih = hs; ih < he; ih += p->dh)
                for (int64_t k = 0; k < p->kw; k++) {
                    const float *src = x + ih * p->W + 2 * ow + k - p->pw;
                    __m512 v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, src), even,
                                                      _mm512_maskz_loadu_ps(m1, src + 16));
                    __mmask16 t = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) |
                                  _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                    m = _mm512_mask_mov_ps(m, t, v);
                }
            _mm512_mask_storeu_ps(y + oh * p->OW + ow, (__mmask16)((1u << n) - 1), m);
        }
    }
}

/* Stride-2 max pool, no indices: the interior outputs [lo, hi) of every output row of one plane
 * (windows inside the row; the caller does the borders), 16 output columns per step: a tap's
 * 16 inputs (32 apart by 2) are two loads and an even-lane permute; candidates are scanned in
 * the reference's order (rows, then taps; a later one wins when greater or NaN), so the values
 * are bit-identical. Rows outside the image are skipped like the reference skips them. */
bool kn__maxpool_s2_interior_avx512(const float *x, float *y, const kn_pool_geom *p, int64_t lo,
                                    int64_t hi) {
    if (!kn__has_avx512f() || p->sw != 2 || p->dw != 1 || lo >= hi) return false;
    maxpool_s2_interior(x, y, p, lo, hi);
    return true;
}
