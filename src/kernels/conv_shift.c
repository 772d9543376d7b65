/*
 * conv_shift.c - stride-1, dilation-1 convolution as KH*KW shifted GEMMs (no im2col).
 *
 * The input is copied once into a zero-padded grid (Hp, Wp) per channel. Read as a flat row of
 * length OH*Wp starting at kh*Wp + kw, that grid IS the (kh, kw) tap's input matrix for every
 * output position of the padded output grid (OH, Wp): so each tap is one GEMM over the whole
 * image with the tap's (O, C) weight slice, accumulated into a padded output, whose last
 * Wp - OW columns per row are discarded. Backward-data is the transpose (GEMMs scattered into
 * a padded gradient grid). Compared with im2col this removes the 9x-expanded column buffer and
 * its memory traffic. (The weight gradient stays on im2col: as KH*KW GEMMs with a 64x64 output
 * and a long reduction it measured ~8% slower than im2col's larger GEMMs.)
 *
 * Determinism: every accumulation happens in a fixed order (taps in order), independent of the
 * thread count.
 * Each entry returns false, having done nothing, when the geometry is not eligible or scratch
 * memory is short; the caller then uses im2col.
 */
#include <omp.h>
#include <string.h>

#include "core/core_impl.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"

typedef struct {
    int64_t Hp, Wp, PS, NP; /* padded grid, plane stride, padded output length OH*Wp */
    int64_t Cg, Og, K2;
} shift_geom;

static bool shift_ok(const kn_conv_geom *g, shift_geom *s) {
    if (g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->KH * g->KW < 2) return false;
    if (g->G < 1 || g->C % g->G || g->O % g->G) return false;
    s->Hp = g->OH + g->KH - 1;
    s->Wp = g->OW + g->KW - 1;
    if (s->Hp < g->H + g->pt || s->Wp < g->W + g->pl || g->pt < 0 || g->pl < 0) return false;
    s->PS = s->Hp * s->Wp + g->KW - 1;
    s->NP = g->OH * s->Wp;
    s->Cg = g->C / g->G;
    s->Og = g->O / g->G;
    s->K2 = g->KH * g->KW;
    /* each tap is a GEMM with K = Cg: too few channels and im2col's one big GEMM wins */
    return s->Cg >= 16;
}

/* padded copy of Cg input planes (x: Cg x H x W) into xp (Cg x PS); only the border is zeroed */
static void pad_in(size_t es, const char *x, char *xp, const kn_conv_geom *g, const shift_geom *s) {
    const int64_t right = s->Wp - g->pl - g->W, bottom = s->Hp - g->pt - g->H;
    for (int64_t c = 0; c < s->Cg; c++) {
        char *pl = xp + (size_t)(c * s->PS) * es;
        memset(pl, 0, (size_t)(g->pt * s->Wp + g->pl) * es); /* top rows + first left pad */
        for (int64_t h = 0; h < g->H; h++) {
            char *row = pl + (size_t)((h + g->pt) * s->Wp + g->pl) * es;
            memcpy(row, x + (size_t)((c * g->H + h) * g->W) * es, (size_t)g->W * es);
            /* this row's right pad and the next row's left pad are adjacent */
            memset(row + (size_t)g->W * es, 0, (size_t)(right + (h + 1 < g->H ? g->pl : 0)) * es);
        }
        /* bottom rows and the tail read by the last taps */
        int64_t done = (g->pt + g->H) * s->Wp;
        memset(pl + (size_t)done * es, 0, (size_t)(bottom * s->Wp + g->KW - 1) * es);
    }
}

/* rows of length OW (Og x OH x OW) spread onto the padded output grid (Og x NP), zero-filled */
static void pad_out(size_t es, const char *y, char *yp, const kn_conv_geom *g,
                    const shift_geom *s) {
    for (int64_t o = 0; o < s->Og; o++)
        for (int64_t h = 0; h < g->OH; h++) {
            char *r = yp + (size_t)(o * s->NP + h * s->Wp) * es;
            memcpy(r, y + (size_t)((o * g->OH + h) * g->OW) * es, (size_t)g->OW * es);
            memset(r + (size_t)g->OW * es, 0, (size_t)(s->Wp - g->OW) * es);
        }
}

/* weight (O, Cg, KH, KW) -> per tap: fwd layout [k][gr][o][c], or transposed [k][gr][c][o] */
static void repack(size_t es, const char *w, char *wk, const kn_conv_geom *g, const shift_geom *s,
                   bool transposed) {
    for (int64_t k = 0; k < s->K2; k++)
        for (int64_t gr = 0; gr < g->G; gr++)
            for (int64_t o = 0; o < s->Og; o++)
                for (int64_t c = 0; c < s->Cg; c++) {
                    int64_t src = (((gr * s->Og + o) * s->Cg + c) * s->K2) + k;
                    int64_t dst = transposed ? ((k * g->G + gr) * s->Cg + c) * s->Og + o
                                             : ((k * g->G + gr) * s->Og + o) * s->Cg + c;
                    memcpy(wk + (size_t)dst * es, w + (size_t)src * es, es);
                }
}

/* dst (R planes of rows x cols, contiguous) = src (R planes of stride sp, rows of stride sr)
 * [+ bias[r]]: the crop of a padded grid, with the bias folded into the same pass */
static void crop_bias(kn_dtype dt, const char *src, int64_t sp, int64_t sr, char *dst, int64_t R,
                      int64_t rows, int64_t cols, const char *bias) {
    size_t es = kn_dtype_size(dt);
    for (int64_t r = 0; r < R; r++)
        for (int64_t h = 0; h < rows; h++) {
            const char *a = src + (size_t)(r * sp + h * sr) * es;
            char *d = dst + (size_t)((r * rows + h) * cols) * es;
            if (!bias) {
                memcpy(d, a, (size_t)cols * es);
            } else if (dt == KN_F32) {
                float bv = ((const float *)bias)[r];
                for (int64_t i = 0; i < cols; i++)
                    ((float *)d)[i] = ((const float *)a)[i] + bv;
            } else {
                double bv = ((const double *)bias)[r];
                for (int64_t i = 0; i < cols; i++)
                    ((double *)d)[i] = ((const double *)a)[i] + bv;
            }
        }
}

/* what both entries set up: geometry, repacked weights, per-thread scratch (padded input and
 * padded output grid); images run in parallel when there are enough of them */
typedef struct {
    shift_geom s;
    size_t es, per;
    int nth;
    bool par;
    char *wk, *scr;
} shift_run;

static bool shift_begin(kn_dtype dt, const void *w, const kn_conv_geom *g, bool transposed,
                        shift_run *r) {
    if (!shift_ok(g, &r->s)) return false;
    r->es = kn_dtype_size(dt);
    r->nth = kn__threads();
    r->par = r->nth > 1 && g->N >= r->nth;
    r->per = (size_t)(r->s.Cg * r->s.PS + r->s.Og * r->s.NP);
    r->wk = kn__scratch_get((size_t)(r->s.K2 * g->O * r->s.Cg) * r->es);
    r->scr = r->wk ? kn__scratch_get(r->per * (size_t)(r->par ? r->nth : 1) * r->es) : NULL;
    if (!r->scr) {
        kn__scratch_put(r->wk);
        kn_clear_error();
        return false;
    }
    repack(r->es, w, r->wk, g, &r->s, transposed);
    return true;
}

static void shift_end(shift_run *r) {
    kn__scratch_put(r->scr);
    kn__scratch_put(r->wk);
}

bool kn__conv_shift_fwd(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                        const kn_conv_geom *g) {
    shift_run r;
    /* few output positions, long reduction: KH*KW GEMMs with a tiny N lose to one im2col GEMM
     * (ResNet's 7x7x512 layers: 8.1 vs 1.6 ms) */
    if (g->OH * g->OW < 64 && g->C * g->KH * g->KW >= 1024) return false;
    if (!shift_begin(dt, w, g, false, &r)) return false;
    const shift_geom s = r.s;
    const size_t es = r.es, per = r.per;
    const int nth = r.nth;
    const bool par = r.par;
    char *const wk = r.wk, *const scr = r.scr;
    const int64_t HW = g->H * g->W, P = g->OH * g->OW;
    KN_PAR_FOR(
        par, nth, n, g->N, char *xp = scr + per * (size_t)(par ? omp_get_thread_num() : 0) * es;
        char *yp = xp + (size_t)(s.Cg * s.PS) * es; for (int64_t gr = 0; gr < g->G; gr++) {
            pad_in(es, (const char *)x + (size_t)((n * g->C + gr * s.Cg) * HW) * es, xp, g, &s);
            for (int64_t k = 0; k < s.K2; k++) {
                int64_t off = (k / g->KW) * s.Wp + k % g->KW;
                kn__gemm(dt, false, false, false, s.Og, s.NP, s.Cg, 1.0,
                         wk + (size_t)((k * g->G + gr) * s.Og * s.Cg) * es, s.Cg,
                         xp + (size_t)off * es, s.PS, k ? 1.0 : 0.0, yp, s.NP);
            }
            char *yg = (char *)y + (size_t)((n * g->O + gr * s.Og) * P) * es;
            crop_bias(dt, yp, s.NP, s.Wp, yg, s.Og, g->OH, g->OW,
                      b ? (const char *)b + (size_t)(gr * s.Og) * es : NULL);
        });
    shift_end(&r);
    return true;
}

bool kn__conv_shift_bwd_data(kn_dtype dt, const void *gy, const void *w, const void *b, void *gx,
                             const kn_conv_geom *g) {
    shift_run r;
    if (!shift_begin(dt, w, g, true, &r)) return false;
    const shift_geom s = r.s;
    const size_t es = r.es, per = r.per;
    const int nth = r.nth;
    const bool par = r.par;
    char *const wk = r.wk, *const scr = r.scr;
    const int64_t HW = g->H * g->W, P = g->OH * g->OW;
    KN_PAR_FOR(
        par, nth, n, g->N, char *xp = scr + per * (size_t)(par ? omp_get_thread_num() : 0) * es;
        char *yp = xp + (size_t)(s.Cg * s.PS) * es; for (int64_t gr = 0; gr < g->G; gr++) {
            pad_out(es, (const char *)gy + (size_t)((n * g->O + gr * s.Og) * P) * es, yp, g, &s);
            /* tap 0 (offset 0) overwrites [0, NP) of every plane with beta 0; only the rest of
             * each plane needs zeros before the other taps accumulate */
            for (int64_t c = 0; c < s.Cg; c++)
                memset(xp + (size_t)(c * s.PS + s.NP) * es, 0, (size_t)(s.PS - s.NP) * es);
            for (int64_t k = 0; k < s.K2; k++) {
                int64_t off = (k / g->KW) * s.Wp + k % g->KW;
                kn__gemm(dt, false, false, false, s.Cg, s.NP, s.Og, 1.0,
                         wk + (size_t)((k * g->G + gr) * s.Cg * s.Og) * es, s.Og, yp, s.NP,
                         k ? 1.0 : 0.0, xp + (size_t)off * es, s.PS);
            }
            char *xg = (char *)gx + (size_t)((n * g->C + gr * s.Cg) * HW) * es;
            crop_bias(dt, xp + (size_t)(g->pt * s.Wp + g->pl) * es, s.PS, s.Wp, xg, s.Cg, g->H,
                      g->W, b ? (const char *)b + (size_t)(gr * s.Cg) * es : NULL);
        });
    shift_end(&r);
    return true;
}
