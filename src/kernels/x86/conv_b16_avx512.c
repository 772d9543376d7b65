/*
 * conv_b16_avx512.c - stride-1, dilation-1, ungrouped f32 convolution for batches of small
 * images with the batch in the vector lanes: one zmm holds one pixel of 16 images.
 *
 * Why: for small images (LeNet's 28x28 and 12x12 layers) the spatial direct kernel
 * (conv_avx512.c) wastes most of its multiply-adds on zero padding, on the garbage columns of
 * its padded grid and on unused output channels of its 8-channel blocks; the input gradient of
 * LeNet's second conv did 4x the useful work. With 16 images per vector every lane is a real
 * image, rows outside the input are skipped by loop bounds, and only the left/right column
 * padding is computed on zeros. Layouts (per group of 16 images, "T"): x [C][H][Wp][16] with
 * zero columns around each row (Wp = max(OW + KW - 1, pl + W)); y [O][OH][OW][16]. The group's
 * images are transposed in (16x16 register transposes) and out again; the output transpose
 * adds the bias and applies a fused relu.
 *
 * Kernels: forward (and the input gradient, which is the same convolution with the weights
 * rotated by 180 degrees, channels swapped and padding K - 1 - p) computes blocks of OBK output
 * channels x JB output columns (up to 6 x 4 accumulators); the weight gradient computes blocks
 * of OBW output channels x KW kernel columns for one (input channel, kernel row), summing over
 * all images and positions in the lanes and reducing the lanes at the end.
 *
 * Numerics: every output sums its terms in a fixed order (c, kh, kw; for the weight gradient
 * groups, rows, columns, then a fixed lane reduction); work is split over output elements only,
 * so results do not depend on the thread count. The orders differ from the reference loops
 * (within the conv tolerance). As in conv_avx512.c, the zero columns are multiplied in, so an
 * inf/NaN weight or input can reach sums the reference leaves out.
 * Returns false, doing nothing, without AVX-512F, for other geometries, batches below 16,
 * large images (the T buffers of a group above B16_MAX_GROUP_BYTES) or when memory is short;
 * the caller then uses the other paths.
 */
#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "core/core_impl.h"
#include "kernels/conv.h"

#define L 16                          /* images per group (lanes) */
#define B16_MIN_N 16                  /* smaller batches would leave lanes idle */
#define B16_MAX_GROUP_BYTES (1 << 20) /* x + y of one group: keeps a group in L2 */
#define B16_MAX_KW 7
#define JB 4 /* output columns per forward block */

typedef struct {
    int64_t C, O, H, W, OH, OW, KH, KW, pt, pl, Wp;
    int64_t xs, ys; /* floats per group: C*H*Wp*L, O*OH*OW*L */
} bgeom;

/* forward-form geometry: x (C, H, W) -> y (O, OH, OW), kernel KH x KW, top/left padding pt/pl */
static bool make(bgeom *d, int64_t C, int64_t O, int64_t H, int64_t W, int64_t OH, int64_t OW,
                 int64_t KH, int64_t KW, int64_t pt, int64_t pl) {
    *d = (bgeom){
        .C = C, .O = O, .H = H, .W = W, .OH = OH, .OW = OW, .KH = KH, .KW = KW, .pt = pt, .pl = pl};
    if (C < 1 || O < 1 || H < 1 || W < 1 || OH < 1 || OW < 1 || KH < 1 || KW < 1 ||
        KW > B16_MAX_KW || pt < 0 || pl < 0)
        return false;
    if (C > 4096 || O > 4096 || H > 4096 || pl > 4096 || W > 4096 || OH > 4096 || OW > 4096 ||
        KH > 4096)
        return false;
    d->Wp = OW + KW - 1 > pl + W ? OW + KW - 1 : pl + W;
    d->xs = C * H * d->Wp * L;
    d->ys = O * OH * OW * L;
    return (d->xs + d->ys) * (int64_t)sizeof(float) <= B16_MAX_GROUP_BYTES;
}

static bool eligible(const kn_conv_geom *g) {
    return kn__has_avx512f() && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && g->G == 1 &&
           g->N >= B16_MIN_N;
}

/* r[i] = row i of a 16x16 block -> r[i] = column i */
__attribute__((target("avx512f"))) static inline void tr16(__m512 r[16]) {
    __m512 a[16], b[16];
    for (int k = 0; k < 8; k++) {
        a[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        __m512d p0 = _mm512_castps_pd(a[4 * k]), p1 = _mm512_castps_pd(a[4 * k + 1]);
        __m512d p2 = _mm512_castps_pd(a[4 * k + 2]), p3 = _mm512_castps_pd(a[4 * k + 3]);
        b[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(p0, p2));
        b[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p0, p2));
        b[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(p1, p3));
        b[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(p1, p3));
    }
    /* b[4k + m], 128-bit block q: column 4q + m of rows 4k .. 4k+3 */
    for (int m = 0; m < 4; m++) {
        __m512 c = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88);
        __m512 dd = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xdd);
        __m512 e = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
        __m512 f = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xdd);
        r[m] = _mm512_shuffle_f32x4(c, e, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(c, e, 0xdd);
        r[4 + m] = _mm512_shuffle_f32x4(dd, f, 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(dd, f, 0xdd);
    }
}

/* Plane p (of `planes`) of images n0 .. n0+nb (image stride `istride` floats) into T rows:
 * dst[(p*H + h)*Wp + pl + w][lane] = src[n0 + lane][p][h][w], zero for padding and for lanes
 * >= nb. dst must already hold zeros in the padding columns (done by the caller per group). */
__attribute__((target("avx512f"))) static void to_t(const float *src, int64_t istride, int nb,
                                                    int64_t p, int64_t H, int64_t W, int64_t Wp,
                                                    int64_t pl, float *dst) {
    const int64_t HW = H * W;
    const float *s0 = src + p * HW;
    /* the plane is read as one flat run of HW pixels; each pixel goes to its padded place */
    for (int64_t q0 = 0; q0 < HW; q0 += L) {
        int64_t cnt = HW - q0 < L ? HW - q0 : L;
        __mmask16 m = (__mmask16)((1u << cnt) - 1);
        __m512 r[16];
        for (int i = 0; i < L; i++)
            r[i] = i < nb ? _mm512_maskz_loadu_ps(m, s0 + i * istride + q0) : _mm512_setzero_ps();
        tr16(r);
        for (int64_t k = 0; k < cnt; k++) {
            int64_t q = q0 + k, h = q / W, w = q % W;
            _mm512_storeu_ps(dst + ((p * H + h) * Wp + pl + w) * L, r[k]);
        }
    }
}

/* The inverse for outputs: dst[n0 + lane][p][q] = src[p*P + q][lane] (+ bias, relu), P = OH*OW,
 * lanes < nb only. */
__attribute__((target("avx512f"))) static void from_t(const float *src, int64_t P, int64_t p,
                                                      float *dst, int64_t istride, int nb,
                                                      float bias, bool relu) {
    const float *s0 = src + p * P * L;
    float *d0 = dst + p * P;
    const __m512 bv = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (int64_t q0 = 0; q0 < P; q0 += L) {
        int64_t cnt = P - q0 < L ? P - q0 : L;
        __mmask16 m = (__mmask16)((1u << cnt) - 1);
        __m512 r[16];
        for (int64_t k = 0; k < L; k++)
            r[k] = k < cnt ? _mm512_loadu_ps(s0 + (q0 + k) * L) : zero;
        tr16(r);
        for (int i = 0; i < nb; i++) {
            __m512 v = _mm512_add_ps(r[i], bv);
            if (relu) { /* the relu op's formula: x > 0 ? x : (NaN ? x : 0) */
                __mmask16 keep = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ) |
                                 _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                v = _mm512_maskz_mov_ps(keep, v);
            }
            _mm512_mask_storeu_ps(d0 + i * istride + q0, m, v);
        }
    }
}

/* ---- forward: y[o][i][j] = sum_c sum_kh sum_kw w(o, c, kh, kw) x[c][i + kh - pt][j + kw] ----
 * w(o, c, kh, kw) = wt[((o * C + c) * KH + kh) * KW + kw] */
static inline __attribute__((always_inline, target("avx512f"))) void
fwd_block(const float *xt, const float *wt, float *yt, const bgeom *d, int64_t o0, int64_t i,
          int64_t j0, const int OBK, const int NJ) {
    const int64_t K2 = d->KH * d->KW, CK = d->C * K2;
    __m512 acc[6][JB];
    for (int o = 0; o < OBK; o++)
        for (int jj = 0; jj < NJ; jj++)
            acc[o][jj] = _mm512_setzero_ps();
    int64_t kh0 = d->pt - i > 0 ? d->pt - i : 0;
    int64_t kh1 = d->H + d->pt - i < d->KH ? d->H + d->pt - i : d->KH;
    for (int64_t c = 0; c < d->C; c++)
        for (int64_t kh = kh0; kh < kh1; kh++) {
            const float *xr = xt + ((c * d->H + i + kh - d->pt) * d->Wp + j0) * L;
            const float *wr = wt + (o0 * d->C + c) * K2 + kh * d->KW;
            for (int64_t kw = 0; kw < d->KW; kw++) {
                __m512 xv[JB];
                for (int jj = 0; jj < NJ; jj++)
                    xv[jj] = _mm512_loadu_ps(xr + (jj + kw) * L);
                for (int o = 0; o < OBK; o++) {
                    __m512 wv = _mm512_set1_ps(wr[o * CK + kw]);
                    for (int jj = 0; jj < NJ; jj++)
                        acc[o][jj] = _mm512_fmadd_ps(wv, xv[jj], acc[o][jj]);
                }
            }
        }
    for (int o = 0; o < OBK; o++)
        for (int jj = 0; jj < NJ; jj++)
            _mm512_storeu_ps(yt + (((o0 + o) * d->OH + i) * d->OW + j0 + jj) * L, acc[o][jj]);
}

#define FWD_NJ(OBK)                                                                                \
    switch (nj) {                                                                                  \
    case 1: fwd_block(xt, wt, yt, d, o0, i, j0, OBK, 1); break;                                    \
    case 2: fwd_block(xt, wt, yt, d, o0, i, j0, OBK, 2); break;                                    \
    case 3: fwd_block(xt, wt, yt, d, o0, i, j0, OBK, 3); break;                                    \
    default: fwd_block(xt, wt, yt, d, o0, i, j0, OBK, JB); break;                                  \
    }

/* one (channel block, output row) item: all its columns */
__attribute__((target("avx512f"))) static void fwd_row(const float *xt, const float *wt, float *yt,
                                                       const bgeom *d, int64_t o0, int obk,
                                                       int64_t i) {
    for (int64_t j0 = 0; j0 < d->OW; j0 += JB) {
        int nj = d->OW - j0 < JB ? (int)(d->OW - j0) : JB;
        switch (obk) {
        case 1: FWD_NJ(1); break;
        case 2: FWD_NJ(2); break;
        case 3: FWD_NJ(3); break;
        case 4: FWD_NJ(4); break;
        case 5: FWD_NJ(5); break;
        default: FWD_NJ(6); break;
        }
    }
}
#undef FWD_NJ

/* output channels per block: 6 (24 accumulators), 4 when that divides O and 6 does not */
static int fwd_obk(int64_t O) {
    return O % 6 != 0 && O % 4 == 0 ? 4 : 6;
}

/* [*a, *b): this thread's share of n items when `split`, else all of them */
static void share(int64_t n, bool split, int64_t *a, int64_t *b) {
    int t = split ? omp_get_thread_num() : 0, nt = split ? omp_get_num_threads() : 1;
    *a = n * t / nt;
    *b = n * (t + 1) / nt;
}

/* One group of nb images through scratch xt / yt. With `split`, every thread of the team calls
 * it and the work is shared out, with barriers between the phases; else one thread does all. */
static void fwd_group(const float *xg, const float *wt, const float *bias, bool relu, float *yg,
                      const bgeom *d, int nb, float *xt, float *yt, bool split) {
    const int64_t xstride = d->C * d->H * d->W, ystride = d->O * d->OH * d->OW;
    const int obk = fwd_obk(d->O);
    const int64_t nob = (d->O + obk - 1) / obk, items = nob * d->OH;
    int64_t a, b;
    share(d->C, split, &a, &b);
    for (int64_t c = a; c < b; c++) {
        if (d->Wp != d->W) /* only the padding columns need zeros: to_t writes every pixel */
            for (int64_t r = c * d->H; r < (c + 1) * d->H; r++) {
                float *row = xt + r * d->Wp * L;
                memset(row, 0, (size_t)(d->pl * L) * sizeof(float));
                memset(row + (d->pl + d->W) * L, 0,
                       (size_t)((d->Wp - d->pl - d->W) * L) * sizeof(float));
            }
        to_t(xg, xstride, nb, c, d->H, d->W, d->Wp, d->pl, xt);
    }
    if (split) {
#pragma omp barrier
    }
    share(items, split, &a, &b);
    for (int64_t it = a; it < b; it++) {
        int64_t o0 = it / d->OH * obk;
        fwd_row(xt, wt, yt, d, o0, d->O - o0 < obk ? (int)(d->O - o0) : obk, it % d->OH);
    }
    if (split) {
#pragma omp barrier
    }
    share(d->O, split, &a, &b);
    for (int64_t o = a; o < b; o++)
        from_t(yt, d->OH * d->OW, o, yg, ystride, nb, bias ? bias[o] : 0.0f, relu);
    if (split) { /* the next group reuses xt / yt */
#pragma omp barrier
    }
}

/* y (N, O, OH, OW) = conv(x (N, C, H, W), w) (+ bias, relu) with w(o, c, kh, kw) read from wt.
 * Whole groups per thread when they divide evenly (no barriers), else each group shared. */
static bool fwd_run(const float *x, const float *wt, const float *bias, bool relu, float *y,
                    const bgeom *d, int64_t N) {
    const int nth = kn__threads();
    const int64_t ng = (N + L - 1) / L;
    const bool per_group = nth > 1 && (ng % nth == 0 || ng >= 4 * nth);
    const size_t per = (size_t)(d->xs + d->ys);
    float *scr = kn__scratch_get(per * (size_t)(per_group ? nth : 1) * sizeof(float));
    if (!scr) {
        kn_clear_error();
        return false;
    }
    const int64_t xstride = d->C * d->H * d->W, ystride = d->O * d->OH * d->OW;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int tid = omp_get_thread_num();
        float *xt = scr + (per_group ? per * (size_t)tid : 0);
        for (int64_t gi = 0; gi < ng; gi++) {
            if (per_group && gi % nth != tid) continue;
            const int nb = N - gi * L < L ? (int)(N - gi * L) : L;
            fwd_group(x + gi * L * xstride, wt, bias, relu, y + gi * L * ystride, d, nb, xt,
                      xt + d->xs, !per_group && omp_get_num_threads() > 1);
        }
    }
    kn__scratch_put(scr);
    return true;
}

bool kn__conv_b16_fwd(const float *x, const float *w, const float *b, float *y,
                      const kn_conv_geom *g) {
    bgeom d;
    if (!eligible(g) || !make(&d, g->C, g->O, g->H, g->W, g->OH, g->OW, g->KH, g->KW, g->pt, g->pl))
        return false;
    return fwd_run(x, w, b, g->relu, y, &d, g->N);
}

bool kn__conv_b16_bwd_data(const float *gy, const float *w, const float *b, float *gx,
                           const kn_conv_geom *g) {
    /* gx = gy correlated with rot180(w), channels swapped, padding K - 1 - p */
    bgeom d;
    if (!eligible(g) || !make(&d, g->O, g->C, g->OH, g->OW, g->H, g->W, g->KH, g->KW,
                              g->KH - 1 - g->pt, g->KW - 1 - g->pl))
        return false;
    const int64_t K2 = g->KH * g->KW;
    float *wt = kn__scratch_get((size_t)(g->C * g->O * K2) * sizeof(float));
    if (!wt) {
        kn_clear_error();
        return false;
    }
    for (int64_t c = 0; c < g->C; c++) /* wt(c, o, k) = w(o, c, K2 - 1 - k) */
        for (int64_t o = 0; o < g->O; o++)
            for (int64_t k = 0; k < K2; k++)
                wt[(c * g->O + o) * K2 + k] = w[(o * g->C + c) * K2 + (K2 - 1 - k)];
    bool ok = fwd_run(gy, wt, b, false, gx, &d, g->N);
    kn__scratch_put(wt);
    return ok;
}

/* ---- weight gradient: gw(o, c, kh, kw) = sum_n sum_i,j gy[n][o][i][j] x[n][c][i+kh-pt][j+kw] */
static inline __attribute__((always_inline, target("avx512f"))) void
wgrad_item(const float *xall, const float *gall, float *gw, const bgeom *d, int64_t ng, int64_t o0,
           int64_t c, int64_t kh, const int OBW, const int KW) {
    const int64_t K2 = d->KH * KW, P = d->OH * d->OW;
    __m512 acc[4][B16_MAX_KW];
    for (int o = 0; o < OBW; o++)
        for (int q = 0; q < KW; q++)
            acc[o][q] = _mm512_setzero_ps();
    int64_t i0 = d->pt - kh > 0 ? d->pt - kh : 0;
    int64_t i1 = d->H + d->pt - kh < d->OH ? d->H + d->pt - kh : d->OH;
    for (int64_t gi = 0; gi < ng; gi++) {
        const float *xg = xall + gi * d->xs, *gg = gall + gi * d->ys;
        for (int64_t i = i0; i < i1; i++) {
            const float *xr = xg + ((c * d->H + i + kh - d->pt) * d->Wp) * L;
            const float *gr = gg + ((o0 * d->OH + i) * d->OW) * L;
            for (int64_t j = 0; j < d->OW; j++) {
                __m512 gv[4];
                for (int o = 0; o < OBW; o++)
                    gv[o] = _mm512_loadu_ps(gr + (o * P + j) * L);
                for (int q = 0; q < KW; q++) {
                    __m512 xv = _mm512_loadu_ps(xr + (j + q) * L);
                    for (int o = 0; o < OBW; o++)
                        acc[o][q] = _mm512_fmadd_ps(gv[o], xv, acc[o][q]);
                }
            }
        }
    }
    for (int o = 0; o < OBW; o++)
        for (int q = 0; q < KW; q++)
            gw[((o0 + o) * d->C + c) * K2 + kh * KW + q] = _mm512_reduce_add_ps(acc[o][q]);
}

#define WG_KW(OBW)                                                                                 \
    switch (d->KW) {                                                                               \
    case 1: wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 1); break;                           \
    case 2: wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 2); break;                           \
    case 3: wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 3); break;                           \
    case 4: wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 4); break;                           \
    case 5: wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 5); break;                           \
    case 6:                                                                                        \
        if (OBW <= 3) wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 6);                        \
        break;                                                                                     \
    default:                                                                                       \
        if (OBW <= 3) wgrad_item(xall, gall, gw, d, ng, o0, c, kh, OBW, 7);                        \
        break;                                                                                     \
    }

__attribute__((target("avx512f"))) static void wgrad(const float *xall, const float *gall,
                                                     float *gw, const bgeom *d, int64_t ng,
                                                     int64_t o0, int obw, int64_t c, int64_t kh) {
    switch (obw) {
    case 1: WG_KW(1); break;
    case 2: WG_KW(2); break;
    case 3: WG_KW(3); break;
    default: WG_KW(4); break;
    }
}
#undef WG_KW

#define B16_WG_MAX_BYTES ((size_t)64 << 20)

bool kn__conv_b16_bwd_weight(const float *x, const float *gy, float *gw, const kn_conv_geom *g) {
    bgeom d;
    if (!eligible(g) || !make(&d, g->C, g->O, g->H, g->W, g->OH, g->OW, g->KH, g->KW, g->pt, g->pl))
        return false;
    const int64_t N = g->N, ng = (N + L - 1) / L;
    size_t tot;
    if (!kn__mul_ok((size_t)(d.xs + d.ys), (size_t)ng, &tot) ||
        tot * sizeof(float) > B16_WG_MAX_BYTES)
        return false;
    float *buf = kn__scratch_get(tot * sizeof(float));
    if (!buf) {
        kn_clear_error();
        return false;
    }
    float *xall = buf, *gall = buf + (size_t)(ng * d.xs);
    /* 4 output channels per item (3 when that divides O and 4 does not, or for kernels wider
     * than 5: 28 accumulators at most); O is cut into blocks of that size, the last smaller */
    const int obw = d.KW <= 5 && (d.O % 4 == 0 || d.O % 3 != 0) ? 4 : 3;
    const int64_t nob = (d.O + obw - 1) / obw, items = nob * d.C * d.KH;
    const int64_t xstride = d.C * d.H * d.W, ystride = d.O * d.OH * d.OW;
    const int nth = kn__threads();
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
#pragma omp for schedule(static)
        for (int64_t gi = 0; gi < ng; gi++) {
            const int nb = N - gi * L < L ? (int)(N - gi * L) : L;
            float *xt = xall + gi * d.xs, *gt = gall + gi * d.ys;
            if (d.Wp != d.W) memset(xt, 0, (size_t)d.xs * sizeof(float));
            for (int64_t c = 0; c < d.C; c++)
                to_t(x + gi * L * xstride, xstride, nb, c, d.H, d.W, d.Wp, d.pl, xt);
            for (int64_t o = 0; o < d.O; o++)
                to_t(gy + gi * L * ystride, ystride, nb, o, d.OH, d.OW, d.OW, 0, gt);
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            int64_t ob = it / (d.C * d.KH), o0 = ob * obw;
            int n = d.O - o0 < obw ? (int)(d.O - o0) : obw;
            wgrad(xall, gall, gw, &d, ng, o0, n, (it / d.KH) % d.C, it % d.KH);
        }
    }
    kn__scratch_put(buf);
    return true;
}
