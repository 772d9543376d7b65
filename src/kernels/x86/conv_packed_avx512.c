/*
 * conv_packed_avx512.c - f32 convolution with weights packed ahead of time, vectorised over
 * output channels: the kernel of the conv2d_packed op, which the graph compiler's prepack pass
 * puts in place of a frozen graph's conv2d (the weight is a constant, packed once at compile time).
 *
 * Why a second direct kernel: conv_avx512.c vectorises over output positions of one channel, so
 * small images waste its 48-wide tiles (ResNet's 7x7 layers: 63 padded positions in two tiles of
 * 48) and it packs the weights on every call (2.4 MB for a 256-channel 3x3 layer); it only does
 * stride 1. Here a vector holds 16 output channels.
 *
 * Structure, inside out:
 * - tile: 64 channels x R (<= 6) consecutive outputs of one row in 4 x R zmm accumulators; for
 *   every (c, kh, kw) it loads 4 weight vectors and broadcasts R input values (R x stride apart
 *   in the zero-padded input row): 4 x R FMAs. 3x3 kernels have their nine taps unrolled. One
 *   function per tile shape (gcc spilled accumulators when they shared one).
 * - item: one 64-channel block x a band of output rows (about 256 outputs, possibly from several
 *   images): input channels in chunks whose weights (64 x 160 floats, 40 KB) stay in L1 while
 *   every tile of the band uses them, partial sums waiting in a band buffer ([position][64]);
 *   the next chunk's weights are prefetched into L2 meanwhile. Then the store: bias, the
 *   residual (conv2d_packed's "residual" input), relu, gathered from the buffer 16 outputs at a
 *   time into contiguous runs of each channel row; outputs over 32 MB in all are streamed past
 *   the caches.
 * - group: as many images as have padded copies within 2 MB; their copies are made, then their
 *   items run over the threads, block-major (a thread's items share a weight block). A layer
 *   without top/left padding reads its input directly; a strided 1x1 layer gets a packed copy
 *   of the pixels it reads and runs at stride 1.
 *
 * Packed layout: [O/64 blocks][C][KH][KW][64], zeros for channels >= O.
 *
 * Numerics: each output is 0, then + w * x for (c, kh, kw) ascending with fused multiply-adds
 * (padding included as zeros), then + bias, then + the residual if given, then relu if asked:
 * the order of conv_avx512.c's kernel, so stride-1 results equal it bit for bit, and another
 * order than im2col + GEMM (within the conv tolerance). One thread computes each output:
 * results do not depend on the thread count.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "core/core_impl.h"
#include "kernels/conv.h"

#define OCB 64 /* output channels per packed block (4 vectors) */
#define RMAX 6 /* outputs per tile: 4 x 6 accumulators (at 7 gcc spills one of the 28) */
#define MAX_TAPS 1024
#define CHUNK_K 160 /* (channel, tap) steps per chunk: 64 x 160 weights = 40 KB, in L1 */
#define BAND_P 256  /* output positions per work item (its partial sums: 64 KB) */
#define GROUP_BYTES ((size_t)2 << 20) /* padded input images processed together */

typedef struct {
    int64_t C, H, W, O, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl, Hp, Wp, PS, K, OB, nseg;
    int64_t cc;   /* input channels per chunk */
    bool inplace; /* no padding needed: the kernel reads the input itself (Hp = H, Wp = W) */
    int64_t sub_h, sub_w; /* > 0: a strided 1x1 layer; its copy keeps only every sub_h-th row and
                             sub_w-th column, and the kernel runs it at stride 1 */
    int64_t band;         /* output rows per work item */
    bool stream;          /* the output is much larger than the caches: stores bypass them */
    bool relu;
    int64_t taps;
    int32_t toff[MAX_TAPS]; /* offset of tap (kh, kw) in a padded channel */
} pgeom;

/* Outputs larger than this are streamed to memory (non-temporal stores): at batch 64 a layer's
 * output is read again only after the whole batch, long evicted, and streaming saves reading
 * each line before writing it (ResNet-18 batch 64, 2 threads: about 4% of the run). */
double kn__conv_stream_bytes = 32.0 * (1 << 20);

int64_t kn__conv_packed_size(int64_t O, int64_t C, int64_t KH, int64_t KW) {
    return (O + OCB - 1) / OCB * OCB * C * KH * KW;
}

void kn__conv_pack_w(const float *w, int64_t O, int64_t C, int64_t KH, int64_t KW, float *wp) {
    const int64_t K = C * KH * KW, OB = (O + OCB - 1) / OCB;
    for (int64_t ob = 0; ob < OB; ob++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < OCB; i++) {
                int64_t o = ob * OCB + i;
                wp[(ob * K + k) * OCB + i] = o < O ? w[o * K + k] : 0.0f;
            }
}

bool kn__conv_packed_supported(const kn_conv_geom *g) {
    return kn__has_avx512f() && g->G == 1 && g->KH * g->KW <= MAX_TAPS && g->sw >= 1 &&
           g->sw <= 2 && g->sh >= 1 && g->dh >= 1 && g->dw >= 1 && g->pt >= 0 && g->pl >= 0;
}

/* out[r][0..64) (+)= sum over nc channels and every tap of wb * x at xb + r * S: R outputs of
 * one row; acc: add to what out holds (the partial sums of earlier channels); pf: npf cache
 * lines to prefetch, ppc per channel. KWU == 3: a 3x3 kernel with dilation 1 (the nine taps
 * unrolled, immediate offsets); 0: any kernel, taps from the offset table. */
__attribute__((always_inline, target("avx512f"))) static inline void
tile(const float *xb, const float *wb, const pgeom *d, int64_t nc, bool acc, float *out,
     const char *pf, int64_t npf, const int R, const int S, const int KWU) {
    __m512 a[RMAX][4];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++)
            a[r][v] = acc ? _mm512_load_ps(out + r * OCB + 16 * v) : _mm512_setzero_ps();
    const float *w = wb;
    const int64_t ppc = (npf + nc - 1) / (nc ? nc : 1); /* prefetches per channel */
    for (int64_t c = 0; c < nc; c++) {
        const float *xc = xb + c * d->PS;
        for (int64_t q = c * ppc; q < npf && q < (c + 1) * ppc; q++)
            _mm_prefetch(pf + 64 * q, _MM_HINT_T1);
#define STEP(src)                                                                                  \
    do {                                                                                           \
        const float *s_ = (src);                                                                   \
        __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16),                              \
               w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);                         \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                      \
            __m512 xv = _mm512_set1_ps(s_[r * S]);                                                 \
            a[r][0] = _mm512_fmadd_ps(w0, xv, a[r][0]);                                            \
            a[r][1] = _mm512_fmadd_ps(w1, xv, a[r][1]);                                            \
            a[r][2] = _mm512_fmadd_ps(w2, xv, a[r][2]);                                            \
            a[r][3] = _mm512_fmadd_ps(w3, xv, a[r][3]);                                            \
        }                                                                                          \
        w += OCB;                                                                                  \
        __asm__ volatile("" ::: "memory"); /* gcc interleaving steps spills accumulators */        \
    } while (0)
        if (KWU == 3) { /* 3x3, dilation 1: the nine taps unrolled */
            const float *r0 = xc, *r1 = xc + d->Wp, *r2 = xc + 2 * d->Wp;
            STEP(r0);
            STEP(r0 + 1);
            STEP(r0 + 2);
            STEP(r1);
            STEP(r1 + 1);
            STEP(r1 + 2);
            STEP(r2);
            STEP(r2 + 1);
            STEP(r2 + 2);
        } else {
            for (int64_t t = 0; t < d->taps; t++)
                STEP(xc + d->toff[t]);
        }
#undef STEP
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++)
            _mm512_store_ps(out + r * OCB + 16 * v, a[r][v]);
}

/* one function per (R, S, 3x3 or not), each register-allocated on its own */
typedef void (*tile_fn)(const float *, const float *, const pgeom *, int64_t, bool, float *,
                        const char *, int64_t);
#define TILE_FN(R, S, K)                                                                           \
    __attribute__((noinline, target("avx512f"))) static void tile_##R##_##S##_##K(                 \
        const float *xb, const float *wb, const pgeom *d, int64_t nc, bool acc, float *out,        \
        const char *pf, int64_t npf) {                                                             \
        tile(xb, wb, d, nc, acc, out, pf, npf, R, S, K);                                           \
    }
#define TILE_FNS(S, K)                                                                             \
    TILE_FN(1, S, K)                                                                               \
    TILE_FN(2, S, K) TILE_FN(3, S, K) TILE_FN(4, S, K) TILE_FN(5, S, K) TILE_FN(6, S, K)
TILE_FNS(1, 0)
TILE_FNS(2, 0)
TILE_FNS(1, 3)
TILE_FNS(2, 3)
#define TILE_ROW(S, K)                                                                             \
    {                                                                                              \
        tile_1_##S##_##K, tile_2_##S##_##K, tile_3_##S##_##K, tile_4_##S##_##K, tile_5_##S##_##K,  \
            tile_6_##S##_##K                                                                       \
    }
static const tile_fn k_tiles[2][2][RMAX] = {{TILE_ROW(1, 0), TILE_ROW(1, 3)},
                                            {TILE_ROW(2, 0), TILE_ROW(2, 3)}};

/* one tile of R outputs at stride S (3x3 kernels unrolled; a 7-wide unroll measured slower) */
static void tile_any(const float *xb, const float *wb, const pgeom *d, int64_t nc, bool acc,
                     float *out, const char *pf, int64_t npf, int R, int S) {
    const bool k3 = d->KH == 3 && d->KW == 3 && d->dh == 1 && d->dw == 1;
    k_tiles[S - 1][k3][R - 1](xb, wb, d, nc, acc, out, pf, npf);
}

/* y[o][r0 * OW + j] = buf[j][o - 64 ob] + bias[o] (+ the residual, then relu'd) for the
 * block's channels and j < n: each channel's run of n outputs is gathered from buf 16 at a time
 * and stored whole. rn: the image's residual (NULL: none). */
__attribute__((target("avx512f"))) static void store(const float *buf, const float *bias,
                                                     const float *rn, float *yn, const pgeom *d,
                                                     int64_t ob, int64_t r0, int64_t n) {
    const int64_t P = d->OH * d->OW, o1 = (ob + 1) * OCB < d->O ? (ob + 1) * OCB : d->O;
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32(OCB));
    for (int64_t o = ob * OCB; o < o1; o++) {
        const __m512 bv = _mm512_set1_ps(bias ? bias[o] : 0.0f);
        const float *src = buf + (o - ob * OCB);
        float *yr = yn + o * P + r0 * d->OW;
        /* j advances to 64-byte boundaries of yr: whole aligned vectors can be streamed */
        int64_t head = (int64_t)((64 - ((uintptr_t)yr & 63)) & 63) / 4;
        if (((uintptr_t)yr & 3) || !d->stream) head = 0;
        for (int64_t j = 0; j < n;) {
            const int64_t len = j == 0 && head ? (head < n ? head : n) : (n - j < 16 ? n - j : 16);
            const __mmask16 m = len >= 16 ? 0xffff : (__mmask16)((1u << len) - 1);
            __m512 v = _mm512_add_ps(
                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, src + j * OCB, 4), bv);
            if (rn) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, rn + o * P + r0 * d->OW + j));
            if (d->relu) /* the relu op's formula: x > 0 ? x : (NaN ? x : 0) */
                v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v);
            if (d->stream && len == 16 && !((uintptr_t)(yr + j) & 63))
                _mm512_stream_ps(yr + j, v); /* past the caches: not read again soon */
            else
                _mm512_mask_storeu_ps(yr + j, m, v);
            j += len;
        }
    }
    if (d->stream) _mm_sfence(); /* streamed stores are visible before anything that follows */
}

/* Channels of block ob, rows [v0, v1) of the group's images stacked (row v: image v / OH of
 * the group, output row v % OH): channel chunks in order (the chunk's weights, 64 x cc x taps
 * floats, stay in L1 while every tile of the band uses them, across images; partial sums wait in
 * buf, [position][64]), then bias, relu and the store, a contiguous run per channel row and
 * image. xps: the group's padded images, PS * C apart; y0: the group's first output image. */
static void item(const float *xps, const float *wp, const float *bias, const float *res0, float *y0,
                 const pgeom *d, int64_t ob, int64_t v0, int64_t v1, float *buf) {
    const int64_t ntiles = (v1 - v0) * d->nseg, per = d->C * d->PS;
    for (int64_t c0 = 0; c0 < d->C; c0 += d->cc) {
        const int64_t nc = c0 + d->cc < d->C ? d->cc : d->C - c0;
        const float *wb = wp + (ob * d->K + c0 * d->taps) * OCB;
        /* the next chunk's weights, a slice per tile, into L2 */
        const char *next = (const char *)(wb + nc * d->taps * OCB);
        const int64_t nlines = (c0 + d->cc < d->C ? d->cc * d->taps : 0) * (OCB * 4 / 64);
        const int64_t slice = (nlines + ntiles - 1) / ntiles;
        int64_t i = 0;
        for (int64_t v = v0; v < v1; v++) {
            const float *xr = xps + v / d->OH * per + c0 * d->PS + v % d->OH * d->sh * d->Wp;
            for (int64_t seg = 0; seg < d->nseg; seg++, i++) {
                /* segments of nearly equal length <= RMAX covering the row */
                const int64_t ow0 = seg * d->OW / d->nseg, ow1 = (seg + 1) * d->OW / d->nseg;
                const int64_t npf = nlines - i * slice < slice ? nlines - i * slice : slice;
                tile_any(xr + ow0 * d->sw, wb, d, nc, c0 > 0, buf + ((v - v0) * d->OW + ow0) * OCB,
                         next + i * slice * 64, npf > 0 ? npf : 0, (int)(ow1 - ow0), (int)d->sw);
            }
        }
    }
    const int64_t ys = d->O * d->OH * d->OW;
    for (int64_t v = v0; v < v1;) { /* one run per image */
        int64_t n = v / d->OH, e = (n + 1) * d->OH < v1 ? (n + 1) * d->OH : v1;
        store(buf + (v - v0) * d->OW * OCB, bias, res0 ? res0 + n * ys : NULL, y0 + n * ys, d, ob,
              v % d->OH, (e - v) * d->OW);
        v = e;
    }
}

/* zero-padded copy of one image: channel c at xp + c * PS, rows Wp apart; for a strided 1x1
 * layer, the input pixels it reads, packed (OH x OW) */
static void pad_channel(const float *xn, float *xp, const pgeom *d, int64_t c) {
    float *dst = xp + c * d->PS;
    const float *src = xn + c * d->H * d->W;
    if (d->sub_h) {
        for (int64_t oh = 0; oh < d->OH; oh++)
            for (int64_t ow = 0; ow < d->OW; ow++)
                dst[oh * d->OW + ow] = src[oh * d->sub_h * d->W + ow * d->sub_w];
        return;
    }
    memset(dst, 0, (size_t)d->PS * sizeof(float));
    const int64_t wcopy = d->W < d->Wp - d->pl ? d->W : d->Wp - d->pl;
    for (int64_t h = 0; h < d->H && h + d->pt < d->Hp; h++)
        if (wcopy > 0)
            memcpy(dst + (h + d->pt) * d->Wp + d->pl, src + h * d->W,
                   (size_t)wcopy * sizeof(float));
}

/* images [n0, n0 + gn): padded copies (channels over the threads), then the work items (block
 * ob, band of stacked rows) over the threads; bufs: a band buffer per thread */
static void group(const float *x, const float *wp, const float *bias, const float *res, float *y,
                  float *xps, float *bufs, const pgeom *d, int64_t n0, int64_t gn, int nth) {
    const int64_t rows = gn * d->OH, nband = (rows + d->band - 1) / d->band;
    const int64_t items = d->OB * nband, xs = d->C * d->H * d->W, per = d->C * d->PS;
    const float *xg = d->inplace ? x + n0 * xs : xps;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        float *buf = bufs + (size_t)omp_get_thread_num() * (size_t)(d->band * d->OW * OCB);
        if (!d->inplace) {
#pragma omp for schedule(static)
            for (int64_t q = 0; q < gn * d->C; q++)
                pad_channel(x + (n0 + q / d->C) * xs, xps + q / d->C * per, d, q % d->C);
        }
        /* block-major: a thread's consecutive items share a weight block */
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            int64_t v0 = it % nband * d->band, v1 = v0 + d->band < rows ? v0 + d->band : rows;
            const int64_t off = n0 * d->O * d->OH * d->OW;
            item(xg, wp, bias, res ? res + off : NULL, y + off, d, it / nband, v0, v1, buf);
        }
    }
}

bool kn__conv_packed_fwd(const float *x, const float *wp, const float *b, const float *res,
                         float *y, const kn_conv_geom *g) {
    if (!kn__conv_packed_supported(g)) return false;
    pgeom *d = kn__scratch_get(sizeof *d);
    if (!d) {
        kn_clear_error();
        return false;
    }
    *d = (pgeom){.C = g->C,
                 .H = g->H,
                 .W = g->W,
                 .O = g->O,
                 .OH = g->OH,
                 .OW = g->OW,
                 .KH = g->KH,
                 .KW = g->KW,
                 .sh = g->sh,
                 .sw = g->sw,
                 .dh = g->dh,
                 .dw = g->dw,
                 .pt = g->pt,
                 .pl = g->pl,
                 .relu = g->relu};
    d->Hp = (d->OH - 1) * d->sh + (d->KH - 1) * d->dh + 1;
    d->Wp = (d->OW - 1) * d->sw + (d->KW - 1) * d->dw + 1;
    /* without top/left padding and inside the image (1x1 layers): no padded copy */
    d->inplace = d->pt == 0 && d->pl == 0 && d->Hp <= d->H && d->Wp <= d->W;
    if (d->inplace && d->KH == 1 && d->KW == 1 && (d->sh > 1 || d->sw > 1)) {
        /* strided 1x1 (ResNet's downsampling): a packed copy of the pixels it reads, run at
         * stride 1, so consecutive outputs share input cache lines */
        d->inplace = false;
        d->sub_h = d->sh;
        d->sub_w = d->sw;
        d->sh = d->sw = 1;
        d->Hp = d->OH;
        d->Wp = d->OW;
    } else if (d->inplace) {
        d->Hp = d->H;
        d->Wp = d->W;
    }
    d->PS = d->Hp * d->Wp;
    if ((double)d->Hp * (double)d->Wp >= 2147483647.0) { /* tap offsets are 32-bit */
        kn__scratch_put(d);
        return false;
    }
    d->K = d->C * d->KH * d->KW;
    d->OB = (d->O + OCB - 1) / OCB;
    d->nseg = (d->OW + RMAX - 1) / RMAX;
    d->taps = d->KH * d->KW;
    for (int64_t kh = 0; kh < d->KH; kh++)
        for (int64_t kw = 0; kw < d->KW; kw++)
            d->toff[kh * d->KW + kw] = (int32_t)(kh * d->dh * d->Wp + kw * d->dw);
    d->cc = CHUNK_K / d->taps > 1 ? CHUNK_K / d->taps : 1;
    d->stream = (double)g->N * (double)d->O * (double)(d->OH * d->OW) * 4 > kn__conv_stream_bytes;
    d->band = BAND_P / d->OW > 1 ? BAND_P / d->OW : 1;
    const int nth = kn__threads();
    /* images per group: their padded copies within GROUP_BYTES, so that a band's rows from
     * several images share each chunk of weights (ResNet's 7x7 layers at batch 64) */
    const size_t per = (size_t)(d->C * d->PS), bufn = (size_t)(d->band * d->OW * OCB);
    int64_t gn = (int64_t)(GROUP_BYTES / (per * sizeof(float) + 1));
    gn = gn < 1 ? 1 : gn > g->N ? g->N : gn;
    float *scr =
        g->N > 0 && (double)d->C * (double)d->PS < 1e9
            ? kn__scratch_get(
                  (bufn * (size_t)nth + (d->inplace ? 0 : per * (size_t)gn)) * sizeof(float) + 64)
            : NULL;
    if (!scr) {
        kn_clear_error();
        kn__scratch_put(d);
        return g->N == 0;
    }
    float *bufs = (float *)(((uintptr_t)scr + 63) & ~(uintptr_t)63); /* nth band buffers */
    float *xps = bufs + bufn * (size_t)nth;                          /* padded images */
    for (int64_t n0 = 0; n0 < g->N; n0 += gn)
        group(x, wp, b, res, y, xps, bufs, d, n0, n0 + gn < g->N ? gn : g->N - n0, nth);
    kn__scratch_put(scr);
    kn__scratch_put(d);
    return true;
}
