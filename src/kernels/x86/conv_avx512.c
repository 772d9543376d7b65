/*
 * conv_avx512.c - direct stride-1, dilation-1, ungrouped f32 convolution for AVX-512: no
 * im2col, no GEMM packing (the NCHW analogue of oneDNN's direct kernels).
 *
 * The input of one image is copied into a zero-padded grid (rows Wp = OW + KW - 1 apart).
 * Outputs are computed on the padded grid, flattened (rows Wp apart; the last KW - 1 columns of
 * each row are garbage and cropped afterwards), so a run of 48 outputs is 48 consecutive floats
 * whatever the row width. An output tile is 8 channels x 48 positions in 24 zmm accumulators;
 * for every input channel and tap it loads three vectors of the padded input and does 24 FMAs
 * with 8 broadcast weights (packed as [o/8][c][kh][kw][8], zero beyond O): FMA-bound. For small
 * convolutions (LeNet's) this removes the per-image im2col and tiny-GEMM call overhead.
 * The input gradient of such a convolution is the same kind of convolution (gy correlated with
 * the 180-degree-rotated, channel-swapped filters, padding K - 1 - p), so it runs through the
 * same kernel.
 *
 * Numerics: each output sums its (c, kh, kw) terms in that order with fused multiply-adds: the
 * reference's terms in another order, within the conv tolerance. Determinism: images run in
 * parallel, each computed by one thread in a fixed order, so the thread count does not matter.
 * Returns false, doing nothing, without AVX-512F, for other geometries (groups, strides,
 * dilation) or when memory is short; the caller then uses the GEMM-based paths.
 */
#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "core/core_impl.h"
#include "kernels/conv.h"

#define CCHUNK 16   /* input channels per pass over a tile */
#define SLACK 64    /* floats read past the grid by the last tile's loads (results discarded) */
#define SMALL_P 64  /* forward: below this many output positions ... */
#define LONG_K 1024 /* ... and with at least this long a reduction, im2col + GEMM is faster */

typedef struct {
    int64_t C, O, OB, H, W, OH, OW, KH, KW, pt, pl, Wp, Hp, PS;
    bool relu; /* relu on the output, in the loop that adds the bias */
} dgeom;

/* yp[o][j0 .. j0+48) for all channel blocks, j over the flattened padded output grid (NP) */
__attribute__((target("avx512f"))) static void out_tile(const float *xp, const float *wp, float *yp,
                                                        const dgeom *d, int64_t j0, int64_t NP,
                                                        int64_t c0, int64_t c1, int64_t ob0,
                                                        int64_t ob1) {
    const int64_t K2 = d->KH * d->KW;
    int64_t left = NP - j0;
    __mmask16 m[3];
    for (int v = 0; v < 3; v++) {
        int64_t l = left - 16 * v;
        m[v] = l >= 16 ? 0xffff : l <= 0 ? 0 : (__mmask16)((1u << l) - 1);
    }
    for (int64_t ob = ob0; ob < ob1; ob++) {
        const float *wb = wp + ob * d->C * K2 * 8;
        __m512 a[8][3];
        for (int i = 0; i < 8; i++) {
            const float *yr = yp + (ob * 8 + i) * NP + j0;
            bool resume = c0 > 0 && ob * 8 + i < d->O; /* partial sums of earlier channels */
            for (int v = 0; v < 3; v++)
                a[i][v] = resume ? _mm512_maskz_loadu_ps(m[v], yr + 16 * v) : _mm512_setzero_ps();
        }
        for (int64_t c = c0; c < c1; c++) {
            const float *xr = xp + c * d->PS + j0;
            const float *wc = wb + c * K2 * 8;
            for (int64_t kh = 0; kh < d->KH; kh++)
                for (int64_t kw = 0; kw < d->KW; kw++) {
                    const float *src = xr + kh * d->Wp + kw;
                    __m512 x0 = _mm512_loadu_ps(src), x1 = _mm512_loadu_ps(src + 16),
                           x2 = _mm512_loadu_ps(src + 32);
                    const float *wk = wc + (kh * d->KW + kw) * 8;
                    for (int i = 0; i < 8; i++) {
                        __m512 w = _mm512_set1_ps(wk[i]);
                        a[i][0] = _mm512_fmadd_ps(w, x0, a[i][0]);
                        a[i][1] = _mm512_fmadd_ps(w, x1, a[i][1]);
                        a[i][2] = _mm512_fmadd_ps(w, x2, a[i][2]);
                    }
                }
        }
        for (int i = 0; i < 8 && ob * 8 + i < d->O; i++) {
            float *yr = yp + (ob * 8 + i) * NP + j0;
            for (int v = 0; v < 3; v++)
                if (m[v]) _mm512_mask_storeu_ps(yr + 16 * v, m[v], a[i][v]);
        }
    }
}

/* One image: padded copy, output tiles, bias (+ relu) and crop. `inner` parallelises inside the
 * image (over channels, and over tiles of 48 positions x OBC channel blocks), for batches smaller
 * than the thread count; every output is still summed by one thread in one order. */
#define OBC 4 /* channel blocks (of 8) per task */
static void image(const float *xn, const float *wp, const float *bias, float *yn, float *xp,
                  float *yp, const dgeom *d, int nth) {
    const int64_t NP = d->OH * d->Wp, ntile = (NP + 47) / 48, nobc = (d->OB + OBC - 1) / OBC;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < d->C; c++) {
            memset(xp + c * d->PS, 0, (size_t)d->PS * sizeof(float));
            for (int64_t h = 0; h < d->H; h++)
                memcpy(xp + c * d->PS + (h + d->pt) * d->Wp + d->pl, xn + (c * d->H + h) * d->W,
                       (size_t)d->W * sizeof(float));
        }
#pragma omp single
        memset(xp + d->C * d->PS, 0, SLACK * sizeof(float));
        /* channel chunks keep the input rows of a tile and the weights of a chunk in L1; the
         * partial sums go through yp between chunks (summation order unchanged: c ascending) */
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntile * nobc; t++) {
            int64_t j0 = (t / nobc) * 48, ob0 = (t % nobc) * OBC;
            int64_t ob1 = ob0 + OBC < d->OB ? ob0 + OBC : d->OB;
            for (int64_t c0 = 0; c0 < d->C; c0 += CCHUNK)
                out_tile(xp, wp, yp, d, j0, NP, c0, c0 + CCHUNK < d->C ? c0 + CCHUNK : d->C, ob0,
                         ob1);
        }
#pragma omp for schedule(static)
        for (int64_t o = 0; o < d->O; o++) {
            float bv = bias ? bias[o] : 0.0f;
            for (int64_t oh = 0; oh < d->OH; oh++) {
                const float *s = yp + o * NP + oh * d->Wp;
                float *t = yn + (o * d->OH + oh) * d->OW;
                if (d->relu) /* the relu op's formula: x > 0 ? x : (NaN ? x : 0) */
                    for (int64_t ow = 0; ow < d->OW; ow++) {
                        float v = s[ow] + bv;
                        t[ow] = v > 0 ? v : (v != v ? v : 0.0f);
                    }
                else
                    for (int64_t ow = 0; ow < d->OW; ow++)
                        t[ow] = s[ow] + bv;
            }
        }
    }
}

/* y (N, O, OH, OW) = correlation of x (N, C, H, W) with packed weights wp (+ bias): images in
 * parallel when there are at least as many as threads, else each image in parallel inside */
static bool run(const float *x, const float *wp, const float *bias, float *y, const dgeom *d,
                int64_t N) {
    const int nth = kn__threads();
    const bool per_image = N >= nth;
    const int slots = per_image ? nth : 1;
    const int64_t NP = d->OH * d->Wp;
    const size_t per = (size_t)(d->C * d->PS + SLACK + d->O * NP);
    float *scr = kn__scratch_get(per * (size_t)slots * sizeof(float));
    if (!scr) {
        kn_clear_error();
        return false;
    }
    const int64_t xs = d->C * d->H * d->W, ys = d->O * d->OH * d->OW;
    if (per_image) {
#pragma omp parallel for num_threads(slots) schedule(static)
        for (int64_t n = 0; n < N; n++) {
            float *xp = scr + per * (size_t)omp_get_thread_num();
            image(x + n * xs, wp, bias, y + n * ys, xp, xp + d->C * d->PS + SLACK, d, 1);
        }
    } else {
        for (int64_t n = 0; n < N; n++)
            image(x + n * xs, wp, bias, y + n * ys, scr, scr + d->C * d->PS + SLACK, d, nth);
    }
    kn__scratch_put(scr);
    return true;
}

static bool make_geom(const kn_conv_geom *g, dgeom *d) {
    *d = (dgeom){.C = g->C,
                 .O = g->O,
                 .OB = (g->O + 7) / 8,
                 .H = g->H,
                 .W = g->W,
                 .OH = g->OH,
                 .OW = g->OW,
                 .KH = g->KH,
                 .KW = g->KW,
                 .pt = g->pt,
                 .pl = g->pl};
    d->Hp = d->OH + d->KH - 1;
    d->Wp = d->OW + d->KW - 1;
    d->PS = d->Hp * d->Wp;
    return d->pt >= 0 && d->pl >= 0 && d->Hp >= d->H + d->pt && d->Wp >= d->W + d->pl &&
           d->O >= 1 && d->C >= 1 && d->OW >= 1 && d->OH >= 1;
}

static bool eligible(const kn_conv_geom *g) {
    /* KW <= 16 keeps the last tile's unmasked loads inside the SLACK after the padded grid */
    return kn__has_avx512f() && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && g->G == 1 &&
           g->N >= 1 && g->KW <= 16;
}

/* packs w into [o/8][c][k][o%8] (zeros for o >= O); src(o, c, k) gives the source element */
static float *pack(const dgeom *d, const float *w, bool rot) {
    const int64_t K2 = d->KH * d->KW;
    float *wp = kn__scratch_get((size_t)(d->OB * 8 * d->C * K2) * sizeof(float));
    if (!wp) {
        kn_clear_error();
        return NULL;
    }
    /* written in order ([ob][c][k][i]), blocks of output channels in parallel */
#pragma omp parallel for num_threads(kn__threads()) if (d->OB * d->C * K2 > 16384) schedule(static)
    for (int64_t ob = 0; ob < d->OB; ob++) {
        float *dst = wp + ob * d->C * K2 * 8;
        for (int64_t c = 0; c < d->C; c++)
            for (int64_t k = 0; k < K2; k++, dst += 8)
                for (int64_t i = 0; i < 8; i++) {
                    int64_t o = ob * 8 + i;
                    dst[i] = o >= d->O ? 0.0f
                             : rot     ? w[(c * d->O + o) * K2 + (K2 - 1 - k)]
                                       : w[(o * d->C + c) * K2 + k];
                }
    }
    return wp;
}

bool kn__conv_direct_avx512_fwd(const float *x, const float *w, const float *b, float *y,
                                const kn_conv_geom *g) {
    dgeom d;
    /* a few output positions and a long reduction (ResNet's 7x7x512 layers): the padded tiles
     * would be mostly waste; im2col + GEMM measured 2x faster */
    if (g->OH * g->OW < SMALL_P && g->C * g->KH * g->KW >= LONG_K) return false;
    if (!eligible(g) || !make_geom(g, &d)) return false;
    d.relu = g->relu;
    float *wp = pack(&d, w, false);
    if (!wp) return false;
    bool ok = run(x, wp, b, y, &d, g->N);
    kn__scratch_put(wp);
    return ok;
}

bool kn__conv_direct_avx512_bwd_data(const float *gy, const float *w, const float *b, float *gx,
                                     const kn_conv_geom *g) {
    if (!eligible(g)) return false;
    /* gx = gy correlated with rot180(w), channels swapped, padding K - 1 - p */
    kn_conv_geom t = *g;
    t.C = g->O;
    t.O = g->C;
    t.H = g->OH;
    t.W = g->OW;
    t.OH = g->H;
    t.OW = g->W;
    t.pt = g->KH - 1 - g->pt;
    t.pl = g->KW - 1 - g->pl;
    dgeom d;
    if (!make_geom(&t, &d)) return false;
    float *wp = pack(&d, w, true);
    if (!wp) return false;
    bool ok = run(gy, wp, b, gx, &d, g->N);
    kn__scratch_put(wp);
    return ok;
}

/* ---- weight gradient for small images ----
 * gw[o][c][k] = sum_n sum_j gy_pad[n][o][j] * x_pad[n][c][j + off_k], j over the flattened padded
 * output grid (gy is zero on the garbage columns, so they add nothing for finite x; an inf or
 * NaN input pixel can reach a sum through them, where the reference would leave it out). One
 * work item = (8 output channels, c, tap); it keeps 8 vector partial sums over all images and
 * positions in a fixed order, then reduces them: thread-count independent. Only used for small
 * images (P <= 1024), where im2col + per-image tiny GEMMs dominate. */
#define DW_MAX_P 1024
#define DW_MAX_BYTES ((size_t)64 << 20)

__attribute__((target("avx512f"))) static void dw_item(const float *xall, const float *gall,
                                                       float *gw, const dgeom *d, int64_t N,
                                                       int64_t NP16, size_t xper, size_t gper,
                                                       int64_t ob, int64_t c, int64_t k) {
    const int64_t K2 = d->KH * d->KW, off = (k / d->KW) * d->Wp + k % d->KW;
    const int64_t NP = d->OH * d->Wp;
    __m512 acc[8];
    for (int i = 0; i < 8; i++)
        acc[i] = _mm512_setzero_ps();
    for (int64_t n = 0; n < N; n++) {
        const float *xs = xall + (size_t)n * xper + c * d->PS + off;
        const float *gs = gall + (size_t)n * gper + ob * 8 * NP16;
        for (int64_t j = 0; j < NP; j += 16) {
            int64_t l = NP - j;
            __mmask16 m = l >= 16 ? 0xffff : (__mmask16)((1u << l) - 1);
            __m512 xv = _mm512_maskz_loadu_ps(m, xs + j);
            for (int i = 0; i < 8; i++)
                acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(gs + i * NP16 + j), xv, acc[i]);
        }
    }
    for (int i = 0; i < 8 && ob * 8 + i < d->O; i++)
        gw[((ob * 8 + i) * d->C + c) * K2 + k] = _mm512_reduce_add_ps(acc[i]);
}

/* The same sums, register-blocked: one item is 4 output channels x one input channel x one
 * kernel row (all KW columns), so each gy vector feeds KW FMAs and each x vector 4 (the plain
 * item reloads gy for every kernel column). Every accumulator sees the same products in the same
 * order as in dw_item, so the results are identical. KW is a compile-time constant. */
static inline __attribute__((always_inline, target("avx512f"))) void
dw_row_t(const float *xall, const float *gall, float *gw, const dgeom *d, int64_t N, int64_t NP16,
         size_t xper, size_t gper, int64_t o4, int64_t c, int64_t kh, const int KW) {
    const int64_t K2 = d->KH * d->KW, NP = d->OH * d->Wp, off = kh * d->Wp;
    __m512 acc[4][5];
    for (int i = 0; i < 4; i++)
        for (int q = 0; q < KW; q++)
            acc[i][q] = _mm512_setzero_ps();
    for (int64_t n = 0; n < N; n++) {
        const float *xs = xall + (size_t)n * xper + c * d->PS + off;
        const float *gs = gall + (size_t)n * gper + o4 * 4 * NP16;
        for (int64_t j = 0; j < NP; j += 16) {
            int64_t l = NP - j;
            __mmask16 m = l >= 16 ? 0xffff : (__mmask16)((1u << l) - 1);
            __m512 xv[5];
            for (int q = 0; q < KW; q++)
                xv[q] = _mm512_maskz_loadu_ps(m, xs + j + q);
            for (int i = 0; i < 4; i++) {
                __m512 gv = _mm512_loadu_ps(gs + i * NP16 + j);
                for (int q = 0; q < KW; q++)
                    acc[i][q] = _mm512_fmadd_ps(gv, xv[q], acc[i][q]);
            }
        }
    }
    for (int i = 0; i < 4 && o4 * 4 + i < d->O; i++)
        for (int q = 0; q < KW; q++)
            gw[((o4 * 4 + i) * d->C + c) * K2 + kh * d->KW + q] = _mm512_reduce_add_ps(acc[i][q]);
}

__attribute__((target("avx512f"))) static void dw_row(const float *xall, const float *gall,
                                                      float *gw, const dgeom *d, int64_t N,
                                                      int64_t NP16, size_t xper, size_t gper,
                                                      int64_t o4, int64_t c, int64_t kh) {
    switch (d->KW) {
    case 3: dw_row_t(xall, gall, gw, d, N, NP16, xper, gper, o4, c, kh, 3); break;
    case 5: dw_row_t(xall, gall, gw, d, N, NP16, xper, gper, o4, c, kh, 5); break;
    default: dw_row_t(xall, gall, gw, d, N, NP16, xper, gper, o4, c, kh, (int)d->KW); break;
    }
}

bool kn__conv_direct_avx512_bwd_weight(const float *x, const float *gy, float *gw,
                                       const kn_conv_geom *g) {
    dgeom d;
    /* a few input channels give too few work items for the threads: im2col does better */
    if (!eligible(g) || !make_geom(g, &d) || g->OH * g->OW > DW_MAX_P || g->C < 4) return false;
    const int64_t NP = d.OH * d.Wp, NP16 = (NP + 15) / 16 * 16, K2 = d.KH * d.KW;
    const size_t xper = (size_t)(d.C * d.PS + SLACK), gper = (size_t)(d.OB * 8 * NP16);
    size_t tot;
    if (!kn__mul_ok(xper + gper, (size_t)g->N, &tot) || tot * sizeof(float) > DW_MAX_BYTES)
        return false;
    float *buf = kn__scratch_get(tot * sizeof(float));
    if (!buf) {
        kn_clear_error();
        return false;
    }
    float *xall = buf, *gall = buf + xper * (size_t)g->N;
    const int nth = kn__threads();
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t n = 0; n < g->N; n++) {
        float *xp = xall + (size_t)n * xper, *gp = gall + (size_t)n * gper;
        memset(xp, 0, xper * sizeof(float));
        for (int64_t c = 0; c < d.C; c++)
            for (int64_t h = 0; h < d.H; h++)
                memcpy(xp + c * d.PS + (h + d.pt) * d.Wp + d.pl,
                       x + ((n * d.C + c) * d.H + h) * d.W, (size_t)d.W * sizeof(float));
        memset(gp, 0, gper * sizeof(float));
        for (int64_t o = 0; o < d.O; o++)
            for (int64_t oh = 0; oh < d.OH; oh++)
                memcpy(gp + o * NP16 + oh * d.Wp, gy + ((n * d.O + o) * d.OH + oh) * d.OW,
                       (size_t)d.OW * sizeof(float));
    }
    if (d.KW <= 5) {
        const int64_t items = d.OB * 2 * d.C * d.KH; /* 4-channel groups x C x kernel rows */
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t it = 0; it < items; it++)
            dw_row(xall, gall, gw, &d, g->N, NP16, xper, gper, it / (d.C * d.KH), (it / d.KH) % d.C,
                   it % d.KH);
    } else {
        const int64_t items = d.OB * d.C * K2;
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t it = 0; it < items; it++)
            dw_item(xall, gall, gw, &d, g->N, NP16, xper, gper, it / (d.C * K2), (it / K2) % d.C,
                    it % K2);
    }
    kn__scratch_put(buf);
    return true;
}
