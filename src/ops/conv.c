/*
 * conv.c - the convolution and pooling op family (NCHW): conv2d, conv_transpose2d, max_pool2d,
 * avg_pool2d, adaptive_avg_pool2d, global_avg_pool2d, their internal backward ops, and conv1d
 * (composed from conv2d on a height-1 image; no kernel of its own).
 *
 * Stride-1 ungrouped f32 convolutions (forward, input gradient, and the weight gradient of
 * small images) run the direct AVX-512 kernels of kernels/x86/conv_avx512.c where the CPU has
 * them; other stride-1, dilation-1 ones first try the shifted-GEMM kernels of
 * kernels/conv_shift.c (no column buffer); otherwise, or when those decline, convolution is
 * im2col + GEMM per (image, group), over tiles of whole output rows so that the column buffer
 * stays in L2; a 1x1 stride-1 unpadded convolution is one GEMM on the input as
 * is. The bias is the GEMM's initial C (beta = 1). Depthwise convolutions (one input channel and
 * at most 8 outputs per group) use direct vectorised loops instead, forward and backward.
 * Backward: input gradient = GEMM + col2im
 * (conv_transpose2d runs this same path forward, with the bias as col2im's initial value);
 * weight gradient = im2col + GEMM accumulated over the batch in a fixed number of partial sums
 * (fixed by the shape, not the thread count) added in order. Images run in parallel, each with
 * a single-threaded GEMM, when there are enough of them; otherwise the GEMM and im2col use the
 * threads. forward_ref of every op runs direct loops (kernels/conv.h).
 *
 * Attributes: conv ops "stride" (1 or 2 ints), "pads" (1, 2 (h, w) or 4 (top, left, bottom,
 * right) ints), "dilation", "groups"; conv_transpose2d adds "output_padding"; the backward ops
 * add "input_size" (H, W) or "kernel_size" (KH, KW). Pools: "kernel", "stride" (default =
 * kernel), "padding" (symmetric, 1 or 2 ints), "dilation" (max), "ceil_mode",
 * "count_include_pad" (avg, default 1), "indices" (max: 1 adds the i64 indices output);
 * adaptive: "output_size"; pool backward ops add "input_size".
 *
 * Does not: support integer dtypes, 3-D convolution, or padding modes other than zeros.
 * Invariants: results do not depend on the thread count (see kernels/conv.h and gemm.h).
 */
#include <limits.h>
#include <math.h>
#include <omp.h>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "ops/op_impl.h"

#define ATTR_MAX ((int64_t)1 << 31) /* bound on strides/pads/dilations from untrusted attrs */
#define COL_TILE_BYTES ((int64_t)1 << 20)
#define WGRAD_SLOTS 8                        /* partial sums of the weight gradient */
#define WGRAD_SLOT_BYTES ((int64_t)64 << 20) /* memory allowed for them */

/* ====================================================================== attributes */

/* Reads an int pair attribute: absent -> def, 1 value -> both, 2 values -> as given. */
static kn_status attr_pair(const char *op, const kn_attrs *a, const char *name, int64_t def,
                           int64_t lo, int64_t out[2]) {
    int64_t v[KN_MAX_ATTR_INTS];
    int n = kn__attr_ints(a, name, v, KN_MAX_ATTR_INTS);
    if (n < 0) {
        out[0] = out[1] = def;
        return KN_OK;
    }
    if (n != 1 && n != 2)
        return kn__err(KN_EINVAL, "%s: attribute '%s' needs 1 or 2 values, got %d", op, name, n);
    out[0] = v[0];
    out[1] = n == 2 ? v[1] : v[0];
    for (int i = 0; i < 2; i++)
        if (out[i] < lo || out[i] > ATTR_MAX)
            return kn__err(KN_EINVAL, "%s: %s (%lld, %lld) out of range (min %lld)", op, name,
                           (long long)out[0], (long long)out[1], (long long)lo);
    return KN_OK;
}

typedef struct {
    int64_t s[2], d[2];
    int64_t p[4]; /* top, left, bottom, right */
    int64_t G;
} conv_params;

static kn_status conv_params_read(const char *op, const kn_attrs *a, conv_params *p) {
    kn_status st;
    if ((st = attr_pair(op, a, "stride", 1, 1, p->s)) != KN_OK) return st;
    if ((st = attr_pair(op, a, "dilation", 1, 1, p->d)) != KN_OK) return st;
    int64_t v[KN_MAX_ATTR_INTS];
    int n = kn__attr_ints(a, "pads", v, KN_MAX_ATTR_INTS);
    if (n < 0) {
        p->p[0] = p->p[1] = p->p[2] = p->p[3] = 0;
    } else if (n == 1) {
        p->p[0] = p->p[1] = p->p[2] = p->p[3] = v[0];
    } else if (n == 2) {
        p->p[0] = p->p[2] = v[0];
        p->p[1] = p->p[3] = v[1];
    } else if (n == 4) {
        memcpy(p->p, v, sizeof p->p);
    } else {
        return kn__err(KN_EINVAL, "%s: attribute 'pads' needs 1, 2 or 4 values, got %d", op, n);
    }
    for (int i = 0; i < 4; i++)
        if (p->p[i] < 0 || p->p[i] > ATTR_MAX)
            return kn__err(KN_EINVAL, "%s: pads (%lld, %lld, %lld, %lld) out of range", op,
                           (long long)p->p[0], (long long)p->p[1], (long long)p->p[2],
                           (long long)p->p[3]);
    p->G = kn__attr_int(a, "groups", 1);
    if (p->G < 1 || p->G > ATTR_MAX)
        return kn__err(KN_EINVAL, "%s: groups %lld must be >= 1", op, (long long)p->G);
    return KN_OK;
}

static void conv_params_write(kn_attrs *a, const conv_params *p) {
    kn_attrs_set_ints(a, "stride", p->s, 2);
    kn_attrs_set_ints(a, "pads", p->p, 4);
    kn_attrs_set_ints(a, "dilation", p->d, 2);
    kn_attrs_set_int(a, "groups", p->G);
}

/* Output length of a convolution; -1 when the dilated kernel does not fit the padded input.
 * 128-bit arithmetic: sizes of empty tensors and attributes are untrusted. */
static int64_t conv_out_len(int64_t in, int64_t k, int64_t s, int64_t plo, int64_t phi, int64_t d) {
    __int128 num = (__int128)in + plo + phi - (__int128)d * (k - 1) - 1;
    return num < 0 || num / s + 1 > INT64_MAX ? -1 : (int64_t)(num / s + 1);
}

static kn_conv_geom make_geom(const kn_tensor *x, int64_t O, int64_t KH, int64_t KW, int64_t OH,
                              int64_t OW, const conv_params *p) {
    kn_conv_geom g = {.N = x->shape[0],
                      .C = x->shape[1],
                      .H = x->shape[2],
                      .W = x->shape[3],
                      .O = O,
                      .KH = KH,
                      .KW = KW,
                      .OH = OH,
                      .OW = OW,
                      .sh = p->s[0],
                      .sw = p->s[1],
                      .pt = p->p[0],
                      .pl = p->p[1],
                      .dh = p->d[0],
                      .dw = p->d[1],
                      .G = p->G};
    return g;
}

/* ====================================================================== GEMM drivers */

static void im2col(kn_dtype dt, const void *x, const kn_conv_geom *g, int64_t Cg, int64_t oh0,
                   int64_t oh1, void *col) {
    if (dt == KN_F32)
        kn__im2col_f32(x, g, Cg, oh0, oh1, col);
    else
        kn__im2col_f64(x, g, Cg, oh0, oh1, col);
}

static void col2im(kn_dtype dt, const void *col, const kn_conv_geom *g, int64_t Cg, int64_t oh0,
                   int64_t oh1, void *gx) {
    if (dt == KN_F32)
        kn__col2im_f32(col, g, Cg, oh0, oh1, gx);
    else
        kn__col2im_f64(col, g, Cg, oh0, oh1, gx);
}

static bool is_direct_1x1(const kn_conv_geom *g, const conv_params *p) {
    return g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && p->p[0] == 0 && p->p[1] == 0 &&
           p->p[2] == 0 && p->p[3] == 0 && g->OH == g->H && g->OW == g->W;
}

/* One input channel per group, several groups and few outputs per group (depthwise): direct
 * loops beat G tiny GEMMs. An ungrouped single-channel input (a first layer on grayscale, G = 1)
 * keeps GEMM: measured 2.3x faster for LeNet's 1->6 5x5 layer than the direct loops. */
static bool use_direct_dw(const kn_conv_geom *g) {
    return g->G > 1 && g->C == g->G && g->O / g->G <= 8;
}

/* Output rows per im2col tile, so that one tile of columns is about COL_TILE_BYTES. */
static int64_t tile_rows(const kn_conv_geom *g, int64_t KK, size_t es) {
    double row = (double)KK * (double)g->OW * (double)es;
    int64_t th = row > 0 ? (int64_t)(COL_TILE_BYTES / row) : g->OH;
    if (th < 1) th = 1;
    if (th > g->OH) th = g->OH;
    return th;
}

/* Whether to run images in parallel (each with single-threaded GEMMs) rather than one image
 * at a time with threaded GEMMs. Either way results are the same. */
static bool images_parallel(int64_t N, int nth) {
    return nth > 1 && N >= 2 && (N >= 2 * (int64_t)nth || N % nth == 0);
}

/* Scratch of `slots` column buffers; NULL with KN_ENOMEM set on failure or overflow. */
static void *col_alloc(int64_t KK, int64_t th, int64_t OW, size_t es, int slots,
                       int64_t *per_slot) {
    size_t a, b, c;
    if (!kn__mul_ok((size_t)KK, (size_t)(th * OW), &a) || !kn__mul_ok(a, es, &b) ||
        !kn__mul_ok(b, (size_t)slots, &c))
        return kn__errp(KN_ENOMEM, "conv2d: column buffer size overflows");
    *per_slot = (int64_t)a;
    return kn__scratch_get(c ? c : 64);
}

/* Fills rows [0, Og) of y (Og x P, row stride P) with bias values b[0..Og). */
static void fill_bias(kn_dtype dt, void *y, const void *b, int64_t Og, int64_t P) {
    for (int64_t o = 0; o < Og; o++) {
        if (dt == KN_F32) {
            float *r = (float *)y + o * P, v = ((const float *)b)[o];
            for (int64_t i = 0; i < P; i++)
                r[i] = v;
        } else {
            double *r = (double *)y + o * P, v = ((const double *)b)[o];
            for (int64_t i = 0; i < P; i++)
                r[i] = v;
        }
    }
}

/* y (N, O, OH, OW) = conv(x, w) + b. All contiguous; b may be NULL. */
static kn_status conv_fwd_gemm(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                               const kn_conv_geom *g, const conv_params *p, bool *relu_done) {
    *relu_done = false;
    const size_t es = kn_dtype_size(dt);
    const int64_t G = g->G, Cg = g->C / G, Og = g->O / G, KK = Cg * g->KH * g->KW;
    const int64_t P = g->OH * g->OW, HW = g->H * g->W;
    if (g->N == 0 || g->O == 0 || P == 0) return KN_OK;
    if (use_direct_dw(g)) { /* depthwise: direct loops beat G tiny GEMMs */
        if (dt == KN_F32)
            kn__dwconv2d_f32(x, w, b, y, g);
        else
            kn__dwconv2d_f64(x, w, b, y, g);
        return KN_OK;
    }
    const bool direct = is_direct_1x1(g, p);
    if (!direct && dt == KN_F32 &&
        (kn__conv_b16_fwd(x, w, b, y, g) || kn__conv_direct_avx512_fwd(x, w, b, y, g))) {
        *relu_done = g->relu; /* the kernel applies it while adding the bias */
        return KN_OK;
    }
    if (!direct && kn__conv_shift_fwd(dt, x, w, b, y, g)) return KN_OK;
    const int64_t th = tile_rows(g, KK, es);
    const int nth = kn__threads();
    const bool par = images_parallel(g->N, nth);
    const int slots = par ? nth : 1;
    int64_t per = 0;
    char *col = NULL;
    if (!direct && !(col = col_alloc(KK, th, g->OW, es, slots, &per))) return kn_last_status();
    KN_PAR_FOR(
        par, nth, n, g->N,
        char *mycol = col ? col + (size_t)(par ? omp_get_thread_num() : 0) * per * es : NULL;
        for (int64_t gr = 0; gr < G; gr++) {
            char *yg = (char *)y + (size_t)((n * g->O + gr * Og) * P) * es;
            const char *xg = (const char *)x + (size_t)((n * g->C + gr * Cg) * HW) * es;
            const char *wg = (const char *)w + (size_t)(gr * Og * KK) * es;
            double beta = 0.0;
            if (b) {
                fill_bias(dt, yg, (const char *)b + (size_t)(gr * Og) * es, Og, P);
                beta = 1.0;
            }
            if (direct) {
                kn__gemm(dt, false, false, false, Og, P, Cg, 1.0, wg, KK, xg, HW, beta, yg, P);
                continue;
            }
            for (int64_t oh0 = 0; oh0 < g->OH; oh0 += th) {
                int64_t oh1 = oh0 + th < g->OH ? oh0 + th : g->OH, TN = (oh1 - oh0) * g->OW;
                im2col(dt, xg, g, Cg, oh0, oh1, mycol);
                kn__gemm(dt, false, false, false, Og, TN, KK, 1.0, wg, KK, mycol, TN, beta,
                         yg + (size_t)(oh0 * g->OW) * es, P);
            }
        });
    kn__scratch_put(col);
    return KN_OK;
}

/* gx (N, C, H, W) = conv^T(gy; w) [+ b as the initial value of every gx plane], i.e. the input
 * gradient of conv2d and the forward of conv_transpose2d. gy is (N, O, OH, OW). */
static kn_status conv_bwd_data_gemm(kn_dtype dt, const void *gy, const void *w, const void *b,
                                    void *gx, const kn_conv_geom *g, const conv_params *p) {
    const size_t es = kn_dtype_size(dt);
    const int64_t G = g->G, Cg = g->C / G, Og = g->O / G, KK = Cg * g->KH * g->KW;
    const int64_t P = g->OH * g->OW, HW = g->H * g->W;
    if (g->N == 0 || g->C == 0 || HW == 0) return KN_OK;
    if (g->O == 0 || P == 0) { /* nothing flows back: zeros (or the bias) */
        for (int64_t n = 0; n < g->N; n++) {
            char *xn = (char *)gx + (size_t)(n * g->C * HW) * es;
            if (b)
                fill_bias(dt, xn, b, g->C, HW);
            else
                memset(xn, 0, (size_t)(g->C * HW) * es);
        }
        return KN_OK;
    }
    const int nth = kn__threads();
    if (use_direct_dw(g)) { /* depthwise: initialise every plane, then scatter directly */
#pragma omp parallel for num_threads(nth) if (g->N * g->C * HW > 65536) schedule(static)
        for (int64_t q = 0; q < g->N * g->C; q++) {
            char *pl = (char *)gx + (size_t)(q * HW) * es;
            if (b)
                fill_bias(dt, pl, (const char *)b + (size_t)(q % g->C) * es, 1, HW);
            else
                memset(pl, 0, (size_t)HW * es);
        }
        if (dt == KN_F32)
            kn__dwconv2d_bwd_input_f32(gy, w, gx, g);
        else
            kn__dwconv2d_bwd_input_f64(gy, w, gx, g);
        return KN_OK;
    }
    const bool direct = is_direct_1x1(g, p);
    if (!direct && dt == KN_F32 &&
        (kn__conv_b16_bwd_data(gy, w, b, gx, g) ||
         kn__conv_direct_avx512_bwd_data(gy, w, b, gx, g)))
        return KN_OK;
    if (!direct && kn__conv_shift_bwd_data(dt, gy, w, b, gx, g)) return KN_OK;
    const int64_t th = tile_rows(g, KK, es);
    const bool par = images_parallel(g->N, nth);
    const int slots = par ? nth : 1;
    int64_t per = 0;
    char *col = NULL;
    if (!direct && !(col = col_alloc(KK, th, g->OW, es, slots, &per))) return kn_last_status();
    KN_PAR_FOR(
        par, nth, n, g->N,
        char *mycol = col ? col + (size_t)(par ? omp_get_thread_num() : 0) * per * es : NULL;
        for (int64_t gr = 0; gr < G; gr++) {
            char *xg = (char *)gx + (size_t)((n * g->C + gr * Cg) * HW) * es;
            const char *yg = (const char *)gy + (size_t)((n * g->O + gr * Og) * P) * es;
            const char *wg = (const char *)w + (size_t)(gr * Og * KK) * es;
            double beta = 0.0;
            if (b) {
                fill_bias(dt, xg, (const char *)b + (size_t)(gr * Cg) * es, Cg, HW);
                beta = 1.0;
            } else if (!direct) {
                memset(xg, 0, (size_t)(Cg * HW) * es);
            }
            if (direct) { /* gx_g (Cg, HW) = w_g^T (Cg, Og) gy_g (Og, HW) */
                kn__gemm(dt, false, true, false, Cg, P, Og, 1.0, wg, KK, yg, P, beta, xg, HW);
                continue;
            }
            for (int64_t oh0 = 0; oh0 < g->OH; oh0 += th) {
                int64_t oh1 = oh0 + th < g->OH ? oh0 + th : g->OH, TN = (oh1 - oh0) * g->OW;
                /* col (KK, TN) = w_g^T (KK, Og) gy_g[:, tile] (Og, TN) */
                kn__gemm(dt, false, true, false, KK, TN, Og, 1.0, wg, KK,
                         yg + (size_t)(oh0 * g->OW) * es, P, 0.0, mycol, TN);
                col2im(dt, mycol, g, Cg, oh0, oh1, xg);
            }
        });
    kn__scratch_put(col);
    return KN_OK;
}

/* gw (O, C/G, KH, KW) = sum over images of gy_n (Og, P) col_n^T (P, KK), per group. The batch
 * is cut into `slots` contiguous ranges (a function of N and the sizes only); each range sums
 * its images in order into its own partial, and the partials are added in order. */
static kn_status conv_bwd_weight_gemm(kn_dtype dt, const void *x, const void *gy, void *gw,
                                      const kn_conv_geom *g, const conv_params *p) {
    const size_t es = kn_dtype_size(dt);
    const int64_t G = g->G, Cg = g->C / G, Og = g->O / G, KK = Cg * g->KH * g->KW;
    const int64_t P = g->OH * g->OW, HW = g->H * g->W, WN = g->O * KK;
    if (WN == 0) return KN_OK;
    if (g->N == 0 || P == 0) {
        memset(gw, 0, (size_t)WN * es);
        return KN_OK;
    }
    const int nth = kn__threads();
    if (use_direct_dw(g)) { /* depthwise: one weight plane per output channel, direct loops */
        int64_t per = 0;
        char *scratch = col_alloc(KK, 1, g->OW, es, nth, &per);
        if (!scratch) return kn_last_status();
        if (dt == KN_F32)
            kn__dwconv2d_bwd_weight_f32(x, gy, gw, g, (float *)scratch);
        else
            kn__dwconv2d_bwd_weight_f64(x, gy, gw, g, (double *)scratch);
        kn__scratch_put(scratch);
        return KN_OK;
    }
    const bool direct = is_direct_1x1(g, p);
    if (!direct && dt == KN_F32 &&
        (kn__conv_b16_bwd_weight(x, gy, gw, g) || kn__conv_direct_avx512_bwd_weight(x, gy, gw, g)))
        return KN_OK;
    const int64_t th = tile_rows(g, KK, es);
    int64_t S = g->N < WGRAD_SLOTS ? g->N : WGRAD_SLOTS;
    while (S > 1 && (S - 1) * WN * (int64_t)es > WGRAD_SLOT_BYTES)
        S--;
    const bool par = nth > 1 && S > 1;
    const int cslots = par ? nth : 1;
    int64_t per = 0;
    char *col = NULL, *part = NULL;
    if (!direct && !(col = col_alloc(KK, th, g->OW, es, cslots, &per))) return kn_last_status();
    if (S > 1 && !(part = kn__scratch_get((size_t)((S - 1) * WN) * es))) {
        kn__scratch_put(col);
        return kn_last_status();
    }
    KN_PAR_FOR(
        par, nth, s, S,
        char *mycol = col ? col + (size_t)(par ? omp_get_thread_num() : 0) * per * es : NULL;
        char *acc = s == 0 ? (char *)gw : part + (size_t)((s - 1) * WN) * es;
        int64_t n0 = g->N * s / S, n1 = g->N * (s + 1) / S; for (int64_t n = n0; n < n1; n++) {
            for (int64_t gr = 0; gr < G; gr++) {
                const char *xg = (const char *)x + (size_t)((n * g->C + gr * Cg) * HW) * es;
                const char *yg = (const char *)gy + (size_t)((n * g->O + gr * Og) * P) * es;
                char *wg = acc + (size_t)(gr * Og * KK) * es;
                if (direct) { /* gw_g (Og, Cg) += gy_g (Og, P) x_g^T (P, Cg) */
                    kn__gemm(dt, false, false, true, Og, Cg, P, 1.0, yg, P, xg, HW,
                             n == n0 ? 0.0 : 1.0, wg, KK);
                    continue;
                }
                for (int64_t oh0 = 0; oh0 < g->OH; oh0 += th) {
                    int64_t oh1 = oh0 + th < g->OH ? oh0 + th : g->OH, TN = (oh1 - oh0) * g->OW;
                    im2col(dt, xg, g, Cg, oh0, oh1, mycol);
                    kn__gemm(dt, false, false, true, Og, KK, TN, 1.0,
                             yg + (size_t)(oh0 * g->OW) * es, P, mycol, TN,
                             (n == n0 && oh0 == 0) ? 0.0 : 1.0, wg, KK);
                }
            }
        });
    for (int64_t s = 1; s < S; s++) {
        const char *src = part + (size_t)((s - 1) * WN) * es;
        if (dt == KN_F32) {
            float *d = gw;
            const float *q = (const float *)src;
            for (int64_t i = 0; i < WN; i++)
                d[i] += q[i];
        } else {
            double *d = gw;
            const double *q = (const double *)src;
            for (int64_t i = 0; i < WN; i++)
                d[i] += q[i];
        }
    }
    kn__scratch_put(part);
    kn__scratch_put(col);
    return KN_OK;
}

/* ====================================================================== conv2d */

static kn_status check_4d(const char *op, const char *what, const kn_tensor *t) {
    char s[128];
    if (t->ndim != 4)
        return kn__err(KN_ESHAPE, "%s: %s %s must be 4-D", op, what,
                       kn__shape_str(s, sizeof s, t->ndim, t->shape));
    return KN_OK;
}

static kn_status check_bias(const char *op, const kn_tensor *b, int64_t O) {
    char s[128];
    if (b->ndim != 1 || b->shape[0] != O)
        return kn__err(KN_ESHAPE, "%s: bias %s must be (%lld,)", op,
                       kn__shape_str(s, sizeof s, b->ndim, b->shape), (long long)O);
    return KN_OK;
}

/* Validates x (N, C, H, W) against w (O, C/G, KH, KW) and computes the output size. */
static kn_status conv2d_check(const char *op, const kn_tensor *x, const kn_tensor *w,
                              const conv_params *p, int64_t *OH, int64_t *OW) {
    kn_status st;
    char s1[128], s2[128];
    if ((st = check_4d(op, "input", x)) != KN_OK) return st;
    if ((st = check_4d(op, "weight", w)) != KN_OK) return st;
    int64_t C = x->shape[1], O = w->shape[0];
    __int128 cexp = (__int128)w->shape[1] * p->G;
    if (cexp != C)
        return kn__err(KN_ESHAPE,
                       "%s: input %s has %lld channels but weight %s with groups %lld expects "
                       "%lld",
                       op, kn__shape_str(s1, sizeof s1, 4, x->shape), (long long)C,
                       kn__shape_str(s2, sizeof s2, 4, w->shape), (long long)p->G,
                       (long long)(cexp > INT64_MAX ? -1 : (int64_t)cexp));
    if (O % p->G)
        return kn__err(KN_ESHAPE,
                       "%s: weight %s: %lld output channels not divisible by groups %lld", op,
                       kn__shape_str(s2, sizeof s2, 4, w->shape), (long long)O, (long long)p->G);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return kn__err(KN_ESHAPE, "%s: weight %s has an empty kernel", op,
                       kn__shape_str(s2, sizeof s2, 4, w->shape));
    *OH = conv_out_len(x->shape[2], w->shape[2], p->s[0], p->p[0], p->p[2], p->d[0]);
    *OW = conv_out_len(x->shape[3], w->shape[3], p->s[1], p->p[1], p->p[3], p->d[1]);
    if (*OH < 1 || *OW < 1)
        return kn__err(KN_ESHAPE,
                       "%s: input %s padded by (%lld, %lld, %lld, %lld) is smaller than the "
                       "dilated kernel (%lld, %lld)",
                       op, kn__shape_str(s1, sizeof s1, 4, x->shape), (long long)p->p[0],
                       (long long)p->p[1], (long long)p->p[2], (long long)p->p[3],
                       (long long)(p->d[0] * (w->shape[2] - 1) + 1),
                       (long long)(p->d[1] * (w->shape[3] - 1) + 1));
    return KN_OK;
}

static kn_status conv2d_infer(kn_opctx *c) {
    kn_status st;
    conv_params p;
    if ((st = kn__same_dtype(c, 0, c->nin - 1)) != KN_OK) return st;
    if ((st = conv_params_read("conv2d", c->attrs, &p)) != KN_OK) return st;
    int64_t OH = 0, OW = 0;
    if ((st = conv2d_check("conv2d", c->in[0], c->in[1], &p, &OH, &OW)) != KN_OK) return st;
    if (c->nin == 3 && (st = check_bias("conv2d", c->in[2], c->in[1]->shape[0])) != KN_OK)
        return st;
    int64_t shape[4] = {c->in[0]->shape[0], c->in[1]->shape[0], OH, OW};
    c->out_ndim[0] = 4;
    memcpy(c->out_shape[0], shape, sizeof shape);
    c->out_dtype[0] = c->in[0]->dtype;
    return kn__check_shape("conv2d", 4, shape, c->in[0]->dtype);
}

/* Contiguous copies (+1 refs) of up to 3 inputs; NULL entries stay NULL. */
static kn_status contig_inputs(kn_opctx *c, kn_tensor **t) {
    for (int i = 0; i < 3; i++)
        t[i] = NULL;
    for (int i = 0; i < c->nin && i < 3; i++) {
        if (!(t[i] = kn__contig(c->in[i]))) {
            for (int j = 0; j < i; j++)
                kn_tensor_free(t[j]);
            return kn_last_status();
        }
    }
    return KN_OK;
}

static void free3(kn_tensor **t) {
    for (int i = 0; i < 3; i++)
        kn_tensor_free(t[i]);
}

static void relu_pass(kn_tensor *y) {
    int64_t n = kn__numel(y->ndim, y->shape);
    int nth = kn__threads();
    if (y->dtype == KN_F32) {
        float *v = (float *)kn__ptr(y);
#pragma omp parallel for num_threads(nth) if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++)
            v[i] = v[i] > 0 ? v[i] : (v[i] != v[i] ? v[i] : 0.0f);
    } else {
        double *v = (double *)kn__ptr(y);
#pragma omp parallel for num_threads(nth) if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++)
            v[i] = v[i] > 0 ? v[i] : (v[i] != v[i] ? v[i] : 0.0);
    }
}

static kn_status conv2d_run(kn_opctx *c, bool ref) {
    conv_params p;
    kn_status st = conv_params_read("conv2d", c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *t[3];
    if ((st = contig_inputs(c, t)) != KN_OK) return st;
    kn_tensor *y = c->out[0];
    kn_conv_geom g = make_geom(t[0], t[1]->shape[0], t[1]->shape[2], t[1]->shape[3], y->shape[2],
                               y->shape[3], &p);
    g.relu = kn__attr_int(c->attrs, "relu", 0) != 0;
    bool relu_done = false;
    kn_dtype dt = y->dtype;
    const void *b = t[2] ? kn__ptr(t[2]) : NULL;
    if (ref) {
        if (dt == KN_F32)
            kn__conv2d_direct_f32((float *)kn__ptr(t[0]), (float *)kn__ptr(t[1]), b,
                                  (float *)kn__ptr(y), &g);
        else
            kn__conv2d_direct_f64((double *)kn__ptr(t[0]), (double *)kn__ptr(t[1]), b,
                                  (double *)kn__ptr(y), &g);
    } else {
        st = conv_fwd_gemm(dt, kn__ptr(t[0]), kn__ptr(t[1]), b, kn__ptr(y), &g, &p, &relu_done);
    }
    /* "relu" (set only by the graph compiler): the direct AVX-512 kernel applied it while adding
     * the bias; every other path gets the relu op's formula here */
    if (st == KN_OK && g.relu && !relu_done) relu_pass(y);
    free3(t);
    return st;
}

static kn_status conv2d_forward(kn_opctx *c) {
    return conv2d_run(c, false);
}
static kn_status conv2d_forward_ref(kn_opctx *c) {
    return conv2d_run(c, true);
}

static const kn_opdef op_conv2d, op_conv2d_bwd_input, op_conv2d_bwd_weight;

/* conv2d(x, w) with params p, as an op (recorded, differentiable). */
static kn_tensor *call_conv2d(kn_tensor *x, kn_tensor *w, const conv_params *p) {
    kn_attrs a = {0};
    conv_params_write(&a, p);
    kn_tensor *in[2] = {x, w};
    return kn__op1(&op_conv2d, in, 2, &a);
}

static kn_tensor *call_bwd_input(kn_tensor *gy, kn_tensor *w, const conv_params *p, int64_t H,
                                 int64_t W) {
    kn_attrs a = {0};
    conv_params_write(&a, p);
    int64_t hw[2] = {H, W};
    kn_attrs_set_ints(&a, "input_size", hw, 2);
    kn_tensor *in[2] = {gy, w};
    return kn__op1(&op_conv2d_bwd_input, in, 2, &a);
}

static kn_tensor *call_bwd_weight(kn_tensor *x, kn_tensor *gy, const conv_params *p, int64_t KH,
                                  int64_t KW) {
    kn_attrs a = {0};
    conv_params_write(&a, p);
    int64_t k[2] = {KH, KW};
    kn_attrs_set_ints(&a, "kernel_size", k, 2);
    kn_tensor *in[2] = {x, gy};
    return kn__op1(&op_conv2d_bwd_weight, in, 2, &a);
}

/* bias gradient: sum over N, H, W */
static kn_tensor *sum_nhw(kn_tensor *g) {
    int axes[3] = {0, 2, 3};
    return kn_sum(g, axes, 3, false);
}

static kn_status conv2d_backward(kn_bwctx *c) {
    if (kn__attr_int(c->attrs, "relu", 0))
        return kn__err(KN_EUNSUPPORTED, "conv2d: the fused relu of a compiled graph has no "
                                        "backward rule (differentiate before compiling)");
    conv_params p;
    kn_status st = conv_params_read("conv2d", c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *x = c->in[0], *w = c->in[1], *g = c->gout[0];
    if (c->needs[0] && !(c->gin[0] = call_bwd_input(g, w, &p, x->shape[2], x->shape[3])))
        return kn_last_status();
    if (c->needs[1] && !(c->gin[1] = call_bwd_weight(x, g, &p, w->shape[2], w->shape[3])))
        return kn_last_status();
    if (c->nin == 3 && c->needs[2] && !(c->gin[2] = sum_nhw(g))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_conv2d = {
    .name = "conv2d",
    .min_in = 2,
    .max_in = 3,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = conv2d_infer,
    .forward = conv2d_forward,
    .forward_ref = conv2d_forward_ref,
    .backward = conv2d_backward,
    .onnx = "Conv",
    .doc = "2-D convolution, x (N,C,H,W), w (O,C/groups,KH,KW), b (O) optional",
};

/* ---------------------------------------------------------------- conv2d_backward_input */

/* gy (N, O, OH, OW), w (O, C/G, KH, KW), "input_size" (H, W) -> gx (N, C, H, W). gy's size
 * may be smaller than the conv output of (H, W) (conv_transpose2d's output padding). */
static kn_status bwd_input_infer(kn_opctx *c) {
    const char *op = c->op->name;
    kn_status st;
    conv_params p;
    char s1[128], s2[128];
    if ((st = kn__same_dtype(c, 0, 1)) != KN_OK) return st;
    if ((st = conv_params_read(op, c->attrs, &p)) != KN_OK) return st;
    const kn_tensor *gy = c->in[0], *w = c->in[1];
    if ((st = check_4d(op, "grad_output", gy)) != KN_OK) return st;
    if ((st = check_4d(op, "weight", w)) != KN_OK) return st;
    int64_t hw[2] = {0, 0};
    if ((st = attr_pair(op, c->attrs, "input_size", -1, 0, hw)) != KN_OK) return st;
    if (hw[0] < 0) return kn__err(KN_EINVAL, "%s: attribute 'input_size' is required", op);
    if (gy->shape[1] != w->shape[0] || w->shape[0] % p.G || w->shape[2] < 1 || w->shape[3] < 1)
        return kn__err(KN_ESHAPE, "%s: grad_output %s does not fit weight %s (groups %lld)", op,
                       kn__shape_str(s1, sizeof s1, 4, gy->shape),
                       kn__shape_str(s2, sizeof s2, 4, w->shape), (long long)p.G);
    int64_t OH = conv_out_len(hw[0], w->shape[2], p.s[0], p.p[0], p.p[2], p.d[0]);
    int64_t OW = conv_out_len(hw[1], w->shape[3], p.s[1], p.p[1], p.p[3], p.d[1]);
    if (gy->shape[2] > OH || gy->shape[3] > OW)
        return kn__err(KN_ESHAPE, "%s: grad_output %s is larger than the conv output (%lld, %lld)",
                       op, kn__shape_str(s1, sizeof s1, 4, gy->shape), (long long)OH,
                       (long long)OW);
    int64_t shape[4] = {gy->shape[0], w->shape[1] * p.G, hw[0], hw[1]};
    c->out_ndim[0] = 4;
    memcpy(c->out_shape[0], shape, sizeof shape);
    c->out_dtype[0] = gy->dtype;
    return kn__check_shape(op, 4, shape, gy->dtype);
}

/* Shared by conv2d_backward_input (b = NULL) and conv_transpose2d: out = conv^T(in0; in1) + b */
static kn_status bwd_data_run(kn_opctx *c, bool ref) {
    conv_params p;
    kn_status st = conv_params_read(c->op->name, c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *t[3];
    if ((st = contig_inputs(c, t)) != KN_OK) return st;
    kn_tensor *gx = c->out[0], *gy = t[0], *w = t[1];
    kn_conv_geom g =
        make_geom(gx, w->shape[0], w->shape[2], w->shape[3], gy->shape[2], gy->shape[3], &p);
    kn_dtype dt = gx->dtype;
    const void *b = t[2] ? kn__ptr(t[2]) : NULL;
    if (ref) {
        if (dt == KN_F32)
            kn__conv2d_bwd_input_direct_f32((float *)kn__ptr(gy), (float *)kn__ptr(w),
                                            (float *)kn__ptr(gx), &g);
        else
            kn__conv2d_bwd_input_direct_f64((double *)kn__ptr(gy), (double *)kn__ptr(w),
                                            (double *)kn__ptr(gx), &g);
        if (b) {
            int64_t HW = g.H * g.W;
            for (int64_t n = 0; n < g.N; n++)
                for (int64_t ch = 0; ch < g.C; ch++)
                    for (int64_t i = 0; i < HW; i++) {
                        int64_t k = (n * g.C + ch) * HW + i;
                        if (dt == KN_F32)
                            ((float *)kn__ptr(gx))[k] += ((const float *)b)[ch];
                        else
                            ((double *)kn__ptr(gx))[k] += ((const double *)b)[ch];
                    }
        }
    } else {
        st = conv_bwd_data_gemm(dt, kn__ptr(gy), kn__ptr(w), b, kn__ptr(gx), &g, &p);
    }
    free3(t);
    return st;
}

static kn_status bwd_input_forward(kn_opctx *c) {
    return bwd_data_run(c, false);
}
static kn_status bwd_input_forward_ref(kn_opctx *c) {
    return bwd_data_run(c, true);
}

static kn_status bwd_input_backward(kn_bwctx *c) {
    /* y = conv^T(gy; w): d/dgy = conv(gg; w), d/dw = conv2d_backward_weight(gg, gy) */
    conv_params p;
    kn_status st = conv_params_read(c->op->name, c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *gy = c->in[0], *w = c->in[1], *gg = c->gout[0];
    if (c->needs[0]) {
        kn_tensor *r = call_conv2d(gg, w, &p);
        if (r && (r->shape[2] != gy->shape[2] || r->shape[3] != gy->shape[3])) {
            r = kn_slice(kn_slice(r, 2, 0, gy->shape[2], 1), 3, 0, gy->shape[3], 1);
        }
        if (!(c->gin[0] = r)) return kn_last_status();
    }
    if (c->needs[1] && !(c->gin[1] = call_bwd_weight(gg, gy, &p, w->shape[2], w->shape[3])))
        return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_conv2d_bwd_input = {
    .name = "conv2d_backward_input",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = bwd_input_infer,
    .forward = bwd_input_forward,
    .forward_ref = bwd_input_forward_ref,
    .backward = bwd_input_backward,
    .doc = "input gradient of conv2d: (grad_output, weight) -> grad_input",
};

/* ---------------------------------------------------------------- conv2d_backward_weight */

/* x (N, C, H, W), gy (N, O, OH, OW), "kernel_size" (KH, KW) -> gw (O, C/G, KH, KW) */
static kn_status bwd_weight_infer(kn_opctx *c) {
    const char *op = c->op->name;
    kn_status st;
    conv_params p;
    char s1[128], s2[128];
    if ((st = kn__same_dtype(c, 0, 1)) != KN_OK) return st;
    if ((st = conv_params_read(op, c->attrs, &p)) != KN_OK) return st;
    const kn_tensor *x = c->in[0], *gy = c->in[1];
    if ((st = check_4d(op, "input", x)) != KN_OK) return st;
    if ((st = check_4d(op, "grad_output", gy)) != KN_OK) return st;
    int64_t k[2] = {0, 0};
    if ((st = attr_pair(op, c->attrs, "kernel_size", -1, 1, k)) != KN_OK) return st;
    if (k[0] < 1) return kn__err(KN_EINVAL, "%s: attribute 'kernel_size' is required", op);
    int64_t OH = conv_out_len(x->shape[2], k[0], p.s[0], p.p[0], p.p[2], p.d[0]);
    int64_t OW = conv_out_len(x->shape[3], k[1], p.s[1], p.p[1], p.p[3], p.d[1]);
    if (x->shape[0] != gy->shape[0] || x->shape[1] % p.G || gy->shape[1] % p.G ||
        gy->shape[2] > OH || gy->shape[3] > OW)
        return kn__err(KN_ESHAPE,
                       "%s: input %s and grad_output %s do not fit (kernel (%lld, %lld), groups "
                       "%lld)",
                       op, kn__shape_str(s1, sizeof s1, 4, x->shape),
                       kn__shape_str(s2, sizeof s2, 4, gy->shape), (long long)k[0], (long long)k[1],
                       (long long)p.G);
    int64_t shape[4] = {gy->shape[1], x->shape[1] / p.G, k[0], k[1]};
    c->out_ndim[0] = 4;
    memcpy(c->out_shape[0], shape, sizeof shape);
    c->out_dtype[0] = x->dtype;
    return kn__check_shape(op, 4, shape, x->dtype);
}

static kn_status bwd_weight_run(kn_opctx *c, bool ref) {
    conv_params p;
    kn_status st = conv_params_read(c->op->name, c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *t[3];
    if ((st = contig_inputs(c, t)) != KN_OK) return st;
    kn_tensor *gw = c->out[0], *x = t[0], *gy = t[1];
    kn_conv_geom g =
        make_geom(x, gw->shape[0], gw->shape[2], gw->shape[3], gy->shape[2], gy->shape[3], &p);
    kn_dtype dt = gw->dtype;
    if (ref) {
        if (dt == KN_F32)
            kn__conv2d_bwd_weight_direct_f32((float *)kn__ptr(x), (float *)kn__ptr(gy),
                                             (float *)kn__ptr(gw), &g);
        else
            kn__conv2d_bwd_weight_direct_f64((double *)kn__ptr(x), (double *)kn__ptr(gy),
                                             (double *)kn__ptr(gw), &g);
    } else {
        st = conv_bwd_weight_gemm(dt, kn__ptr(x), kn__ptr(gy), kn__ptr(gw), &g, &p);
    }
    free3(t);
    return st;
}

static kn_status bwd_weight_forward(kn_opctx *c) {
    return bwd_weight_run(c, false);
}
static kn_status bwd_weight_forward_ref(kn_opctx *c) {
    return bwd_weight_run(c, true);
}

static kn_status bwd_weight_backward(kn_bwctx *c) {
    /* y = bw(x, gy) with <gg, y> = <gy, conv(x; gg)>: d/dx = conv^T(gy; gg), d/dgy = conv(x; gg) */
    conv_params p;
    kn_status st = conv_params_read(c->op->name, c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *x = c->in[0], *gy = c->in[1], *gg = c->gout[0];
    if (c->needs[0] && !(c->gin[0] = call_bwd_input(gy, gg, &p, x->shape[2], x->shape[3])))
        return kn_last_status();
    if (c->needs[1]) {
        kn_tensor *r = call_conv2d(x, gg, &p);
        if (r && (r->shape[2] != gy->shape[2] || r->shape[3] != gy->shape[3]))
            r = kn_slice(kn_slice(r, 2, 0, gy->shape[2], 1), 3, 0, gy->shape[3], 1);
        if (!(c->gin[1] = r)) return kn_last_status();
    }
    return KN_OK;
}

static const kn_opdef op_conv2d_bwd_weight = {
    .name = "conv2d_backward_weight",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = bwd_weight_infer,
    .forward = bwd_weight_forward,
    .forward_ref = bwd_weight_forward_ref,
    .backward = bwd_weight_backward,
    .doc = "weight gradient of conv2d: (input, grad_output) -> grad_weight",
};

/* ---------------------------------------------------------------- conv2d_packed
 * conv2d with its weight packed ahead of time for the output-channel-vectorised kernel
 * (x86/conv_packed_avx512.c): what the graph compiler's prepack pass turns a frozen graph's f32
 * conv2d (groups 1) into. Inputs x (N, C, H, W), wp (the packed weight, 1-D), b (O) optional,
 * then with attr "residual" a tensor of the output's shape added after the bias (the pass folds
 * a ResNet block's `add` into the conv that feeds it); attrs: the conv's stride, pads, dilation,
 * "weight_shape" (O, C, KH, KW) and "relu", applied last. Inference only (no backward). */
static kn_status packed_params(const kn_opctx *c, conv_params *p, int64_t ws[4]) {
    kn_status st = conv_params_read("conv2d_packed", c->attrs, p);
    if (st != KN_OK) return st;
    if (kn__attr_ints(c->attrs, "weight_shape", ws, 4) != 4 || ws[0] < 1 || ws[1] < 1 ||
        ws[2] < 1 || ws[3] < 1 || ws[0] > ATTR_MAX || ws[1] > ATTR_MAX || ws[2] > ATTR_MAX ||
        ws[3] > ATTR_MAX || p->G != 1)
        return kn__err(KN_EINVAL, "conv2d_packed: needs weight_shape (O, C, KH, KW) >= 1 and "
                                  "groups 1");
    return KN_OK;
}

static kn_status packed_infer(kn_opctx *c) {
    kn_status st;
    conv_params p;
    int64_t ws[4], OH, OW;
    char s1[128];
    if ((st = kn__same_dtype(c, 0, c->nin - 1)) != KN_OK) return st;
    if ((st = packed_params(c, &p, ws)) != KN_OK) return st;
    const kn_tensor *x = c->in[0], *wp = c->in[1];
    if ((st = check_4d("conv2d_packed", "input", x)) != KN_OK) return st;
    if (x->shape[1] != ws[1])
        return kn__err(KN_ESHAPE, "conv2d_packed: input %s does not have %lld channels",
                       kn__shape_str(s1, sizeof s1, 4, x->shape), (long long)ws[1]);
    if (wp->ndim != 1 || (double)ws[0] * ws[1] * ws[2] * ws[3] > 1e15 ||
        wp->shape[0] != kn__conv_packed_size(ws[0], ws[1], ws[2], ws[3]))
        return kn__err(KN_ESHAPE,
                       "conv2d_packed: packed weight %s does not hold (%lld, %lld, "
                       "%lld, %lld)",
                       kn__shape_str(s1, sizeof s1, wp->ndim, wp->shape), (long long)ws[0],
                       (long long)ws[1], (long long)ws[2], (long long)ws[3]);
    const int res = kn__attr_int(c->attrs, "residual", 0) != 0;
    if (c->nin - res < 2)
        return kn__err(KN_EINVAL, "conv2d_packed: attribute residual needs a residual input");
    if (c->nin - res == 3 && (st = check_bias("conv2d_packed", c->in[2], ws[0])) != KN_OK)
        return st;
    OH = conv_out_len(x->shape[2], ws[2], p.s[0], p.p[0], p.p[2], p.d[0]);
    OW = conv_out_len(x->shape[3], ws[3], p.s[1], p.p[1], p.p[3], p.d[1]);
    if (OH < 1 || OW < 1)
        return kn__err(KN_ESHAPE, "conv2d_packed: input %s padded is smaller than the kernel",
                       kn__shape_str(s1, sizeof s1, 4, x->shape));
    int64_t shape[4] = {x->shape[0], ws[0], OH, OW};
    const kn_tensor *r = res ? c->in[c->nin - 1] : NULL;
    if (r && (r->ndim != 4 || memcmp(r->shape, shape, sizeof shape) != 0))
        return kn__err(KN_ESHAPE, "conv2d_packed: residual %s is not of the output's shape",
                       kn__shape_str(s1, sizeof s1, r->ndim, r->shape));
    c->out_ndim[0] = 4;
    memcpy(c->out_shape[0], shape, sizeof shape);
    c->out_dtype[0] = x->dtype;
    return kn__check_shape("conv2d_packed", 4, shape, x->dtype);
}

/* reference: per output 0, + w * x over (c, kh, kw) ascending inside the input, + bias,
 * + residual (res may be NULL), relu */
static void packed_ref(const float *x, const float *wp, const float *b, const float *res, float *y,
                       const kn_conv_geom *g) {
    const int64_t K = g->C * g->KH * g->KW;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t o = 0; o < g->O; o++) {
            const float *wo = wp + (o / 64) * K * 64 + o % 64;
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    float acc = 0.0f;
                    for (int64_t ci = 0; ci < g->C; ci++)
                        for (int64_t kh = 0; kh < g->KH; kh++)
                            for (int64_t kw = 0; kw < g->KW; kw++) {
                                int64_t h = oh * g->sh - g->pt + kh * g->dh;
                                int64_t w = ow * g->sw - g->pl + kw * g->dw;
                                if (h < 0 || h >= g->H || w < 0 || w >= g->W) continue;
                                acc = fmaf(wo[((ci * g->KH + kh) * g->KW + kw) * 64],
                                           x[((n * g->C + ci) * g->H + h) * g->W + w], acc);
                            }
                    const int64_t at = ((n * g->O + o) * g->OH + oh) * g->OW + ow;
                    float v = acc + (b ? b[o] : 0.0f);
                    if (res) v += res[at];
                    y[at] = !g->relu ? v : v > 0 ? v : (v != v ? v : 0.0f);
                }
        }
}

static kn_status packed_run(kn_opctx *c, bool ref) {
    conv_params p;
    int64_t ws[4];
    kn_status st = packed_params(c, &p, ws);
    if (st != KN_OK) return st;
    const bool res = kn__attr_int(c->attrs, "residual", 0) != 0;
    kn_opctx cc = *c; /* inputs without the residual: x, wp, bias */
    cc.nin = c->nin - res;
    kn_tensor *t[3], *r = NULL;
    if ((st = contig_inputs(&cc, t)) != KN_OK) return st;
    if (res && !(r = kn__contig(c->in[c->nin - 1]))) {
        free3(t);
        return kn_last_status();
    }
    kn_tensor *y = c->out[0];
    kn_conv_geom g = make_geom(t[0], ws[0], ws[2], ws[3], y->shape[2], y->shape[3], &p);
    g.relu = kn__attr_int(c->attrs, "relu", 0) != 0;
    const float *x = (const float *)kn__ptr(t[0]), *wp = (const float *)kn__ptr(t[1]);
    const float *b = t[2] ? (const float *)kn__ptr(t[2]) : NULL;
    const float *pr = r ? (const float *)kn__ptr(r) : NULL;
    float *py = (float *)kn__ptr(y);
    if (ref || !kn__conv_packed_fwd(x, wp, b, pr, py, &g)) packed_ref(x, wp, b, pr, py, &g);
    free3(t);
    kn_tensor_free(r);
    return KN_OK;
}

static kn_status packed_forward(kn_opctx *c) {
    return packed_run(c, false);
}
static kn_status packed_forward_ref(kn_opctx *c) {
    return packed_run(c, true);
}

const kn_opdef kn__op_conv2d_packed = {
    .name = "conv2d_packed",
    .min_in = 2,
    .max_in = 4,
    .nout = 1,
    .dtypes = KN_DT(KN_F32),
    .flags = KN_OPF_INTERNAL,
    .infer = packed_infer,
    .forward = packed_forward,
    .forward_ref = packed_forward_ref,
    .doc = "conv2d with a weight packed by the prepack pass (frozen graphs); attrs stride, pads, "
           "dilation, weight_shape, residual (the last input is added after the bias), relu (last)",
};

/* ---------------------------------------------------------------- conv_transpose2d */

/* x (N, Cin, H, W), w (Cin, Cout/G, KH, KW), b (Cout) -> (N, Cout, OH, OW) with
 * OH = (H-1)*s - pt - pb + d*(KH-1) + output_padding + 1. */
static kn_status convt_infer(kn_opctx *c) {
    const char *op = "conv_transpose2d";
    kn_status st;
    conv_params p;
    char s1[128], s2[128];
    if ((st = kn__same_dtype(c, 0, c->nin - 1)) != KN_OK) return st;
    if ((st = conv_params_read(op, c->attrs, &p)) != KN_OK) return st;
    const kn_tensor *x = c->in[0], *w = c->in[1];
    if ((st = check_4d(op, "input", x)) != KN_OK) return st;
    if ((st = check_4d(op, "weight", w)) != KN_OK) return st;
    int64_t op_[2] = {0, 0};
    if ((st = attr_pair(op, c->attrs, "output_padding", 0, 0, op_)) != KN_OK) return st;
    if (x->shape[1] != w->shape[0] || w->shape[0] % p.G)
        return kn__err(
            KN_ESHAPE, "%s: input %s has %lld channels but weight %s (groups %lld) expects %lld",
            op, kn__shape_str(s1, sizeof s1, 4, x->shape), (long long)x->shape[1],
            kn__shape_str(s2, sizeof s2, 4, w->shape), (long long)p.G, (long long)w->shape[0]);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return kn__err(KN_ESHAPE, "%s: weight %s has an empty kernel", op,
                       kn__shape_str(s2, sizeof s2, 4, w->shape));
    for (int i = 0; i < 2; i++)
        if (op_[i] >= p.s[i] && op_[i] >= p.d[i])
            return kn__err(KN_EINVAL,
                           "%s: output_padding (%lld, %lld) must be smaller than either stride "
                           "(%lld, %lld) or dilation (%lld, %lld)",
                           op, (long long)op_[0], (long long)op_[1], (long long)p.s[0],
                           (long long)p.s[1], (long long)p.d[0], (long long)p.d[1]);
    int64_t Cout = w->shape[1] * p.G;
    if (c->nin == 3 && (st = check_bias(op, c->in[2], Cout)) != KN_OK) return st;
    __int128 oh = (__int128)(x->shape[2] - 1) * p.s[0] - p.p[0] - p.p[2] +
                  (__int128)p.d[0] * (w->shape[2] - 1) + op_[0] + 1;
    __int128 ow = (__int128)(x->shape[3] - 1) * p.s[1] - p.p[1] - p.p[3] +
                  (__int128)p.d[1] * (w->shape[3] - 1) + op_[1] + 1;
    int64_t OH = oh > INT64_MAX ? -1 : (int64_t)oh, OW = ow > INT64_MAX ? -1 : (int64_t)ow;
    if (x->shape[2] < 1 || x->shape[3] < 1 || OH < 1 || OW < 1)
        return kn__err(KN_ESHAPE, "%s: input %s with weight %s gives an empty output (%lld, %lld)",
                       op, kn__shape_str(s1, sizeof s1, 4, x->shape),
                       kn__shape_str(s2, sizeof s2, 4, w->shape), (long long)OH, (long long)OW);
    int64_t shape[4] = {x->shape[0], Cout, OH, OW};
    c->out_ndim[0] = 4;
    memcpy(c->out_shape[0], shape, sizeof shape);
    c->out_dtype[0] = x->dtype;
    return kn__check_shape(op, 4, shape, x->dtype);
}

static kn_status convt_forward(kn_opctx *c) {
    return bwd_data_run(c, false);
}
static kn_status convt_forward_ref(kn_opctx *c) {
    return bwd_data_run(c, true);
}

static kn_status convt_backward(kn_bwctx *c) {
    conv_params p;
    kn_status st = conv_params_read("conv_transpose2d", c->attrs, &p);
    if (st != KN_OK) return st;
    kn_tensor *x = c->in[0], *w = c->in[1], *g = c->gout[0];
    if (c->needs[0]) { /* the adjoint of conv^T is conv */
        kn_tensor *r = call_conv2d(g, w, &p);
        if (r && (r->shape[2] != x->shape[2] || r->shape[3] != x->shape[3]))
            r = kn_slice(kn_slice(r, 2, 0, x->shape[2], 1), 3, 0, x->shape[3], 1);
        if (!(c->gin[0] = r)) return kn_last_status();
    }
    if (c->needs[1] && !(c->gin[1] = call_bwd_weight(g, x, &p, w->shape[2], w->shape[3])))
        return kn_last_status();
    if (c->nin == 3 && c->needs[2] && !(c->gin[2] = sum_nhw(g))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_conv_transpose2d = {
    .name = "conv_transpose2d",
    .min_in = 2,
    .max_in = 3,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = convt_infer,
    .forward = convt_forward,
    .forward_ref = convt_forward_ref,
    .backward = convt_backward,
    .onnx = "ConvTranspose",
    .doc = "transposed 2-D convolution, x (N,Cin,H,W), w (Cin,Cout/groups,KH,KW), b (Cout)",
};

/* ====================================================================== pooling */

typedef struct {
    int64_t k[2], s[2], p[2], d[2];
    bool ceil_mode, count_include_pad, indices;
} pool_params;

static kn_status pool_params_read(const char *op, const kn_attrs *a, bool is_max, pool_params *p) {
    kn_status st;
    if (!kn__attr_has(a, "kernel"))
        return kn__err(KN_EINVAL, "%s: attribute 'kernel' is required", op);
    if ((st = attr_pair(op, a, "kernel", 1, 1, p->k)) != KN_OK) return st;
    if ((st = attr_pair(op, a, "stride", 0, 0, p->s)) != KN_OK) return st;
    for (int i = 0; i < 2; i++)
        if (p->s[i] == 0) p->s[i] = p->k[i];
    if ((st = attr_pair(op, a, "padding", 0, 0, p->p)) != KN_OK) return st;
    if ((st = attr_pair(op, a, "dilation", 1, 1, p->d)) != KN_OK) return st;
    if (!is_max && (p->d[0] != 1 || p->d[1] != 1))
        return kn__err(KN_EINVAL, "%s: dilation is not supported", op);
    if (p->p[0] > p->k[0] / 2 || p->p[1] > p->k[1] / 2)
        return kn__err(
            KN_EINVAL, "%s: padding (%lld, %lld) should be at most half of kernel (%lld, %lld)", op,
            (long long)p->p[0], (long long)p->p[1], (long long)p->k[0], (long long)p->k[1]);
    p->ceil_mode = kn__attr_int(a, "ceil_mode", 0) != 0;
    p->count_include_pad = kn__attr_int(a, "count_include_pad", 1) != 0;
    p->indices = kn__attr_int(a, "indices", 0) != 0;
    return KN_OK;
}

static void pool_params_write(kn_attrs *a, const pool_params *p, bool is_max) {
    kn_attrs_set_ints(a, "kernel", p->k, 2);
    kn_attrs_set_ints(a, "stride", p->s, 2);
    kn_attrs_set_ints(a, "padding", p->p, 2);
    kn_attrs_set_int(a, "ceil_mode", p->ceil_mode);
    if (is_max)
        kn_attrs_set_ints(a, "dilation", p->d, 2);
    else
        kn_attrs_set_int(a, "count_include_pad", p->count_include_pad);
}

/* PyTorch's pooling_output_shape; < 1 when the window does not fit. */
static int64_t pool_out_len(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t d,
                            bool ceil_mode) {
    __int128 num =
        (__int128)in + 2 * (__int128)pad - (__int128)d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (num < 0 || num / s >= INT64_MAX) return 0;
    int64_t o = (int64_t)(num / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + pad) o--;
    return o;
}

static kn_status check_pool_input(const char *op, const kn_tensor *x) {
    char s[128];
    if (x->ndim != 3 && x->ndim != 4)
        return kn__err(KN_ESHAPE, "%s: input %s must be (N, C, H, W) or (C, H, W)", op,
                       kn__shape_str(s, sizeof s, x->ndim, x->shape));
    return KN_OK;
}

static kn_pool_geom make_pool_geom(int64_t H, int64_t W, int64_t OH, int64_t OW,
                                   const pool_params *p) {
    kn_pool_geom g = {.H = H,
                      .W = W,
                      .OH = OH,
                      .OW = OW,
                      .kh = p->k[0],
                      .kw = p->k[1],
                      .sh = p->s[0],
                      .sw = p->s[1],
                      .ph = p->p[0],
                      .pw = p->p[1],
                      .dh = p->d[0],
                      .dw = p->d[1],
                      .count_include_pad = p->count_include_pad};
    return g;
}

/* Output size of a pool on x; error naming op when empty. */
static kn_status pool_out_shape(const char *op, const kn_tensor *x, const pool_params *p,
                                int64_t *OH, int64_t *OW) {
    char s[128];
    int nd = x->ndim;
    *OH = pool_out_len(x->shape[nd - 2], p->k[0], p->s[0], p->p[0], p->d[0], p->ceil_mode);
    *OW = pool_out_len(x->shape[nd - 1], p->k[1], p->s[1], p->p[1], p->d[1], p->ceil_mode);
    if (*OH < 1 || *OW < 1)
        return kn__err(KN_ESHAPE,
                       "%s: input %s is too small for kernel (%lld, %lld) (output "
                       "(%lld, %lld))",
                       op, kn__shape_str(s, sizeof s, nd, x->shape), (long long)p->k[0],
                       (long long)p->k[1], (long long)*OH, (long long)*OW);
    return KN_OK;
}

static int64_t planes_of(const kn_tensor *t) {
    return kn__numel(t->ndim - 2, t->shape);
}

/* ---------------------------------------------------------------- max_pool2d */

static kn_status maxpool_infer(kn_opctx *c) {
    kn_status st;
    pool_params p;
    const kn_tensor *x = c->in[0];
    if ((st = pool_params_read("max_pool2d", c->attrs, true, &p)) != KN_OK) return st;
    if ((st = check_pool_input("max_pool2d", x)) != KN_OK) return st;
    int64_t OH = 0, OW = 0;
    if ((st = pool_out_shape("max_pool2d", x, &p, &OH, &OW)) != KN_OK) return st;
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][x->ndim - 2] = OH;
    c->out_shape[0][x->ndim - 1] = OW;
    c->nout = p.indices ? 2 : 1;
    if (p.indices) {
        kn__out_like(c, 1, x, KN_I64);
        memcpy(c->out_shape[1], c->out_shape[0], sizeof c->out_shape[0]);
    }
    return KN_OK;
}

static kn_status maxpool_run(kn_opctx *c, bool ref) {
    pool_params p;
    kn_status st = pool_params_read("max_pool2d", c->attrs, true, &p);
    if (st != KN_OK) return st;
    kn_tensor *x = kn__contig(c->in[0]);
    if (!x) return kn_last_status();
    kn_tensor *y = c->out[0];
    int nd = x->ndim;
    kn_pool_geom g =
        make_pool_geom(x->shape[nd - 2], x->shape[nd - 1], y->shape[nd - 2], y->shape[nd - 1], &p);
    int64_t *idx = c->nout > 1 ? (int64_t *)kn__ptr(c->out[1]) : NULL;
    int64_t planes = planes_of(x);
    if (x->dtype == KN_F32)
        (ref ? kn__maxpool2d_ref_f32 : kn__maxpool2d_f32)((float *)kn__ptr(x), (float *)kn__ptr(y),
                                                          idx, &g, planes);
    else
        (ref ? kn__maxpool2d_ref_f64 : kn__maxpool2d_f64)((double *)kn__ptr(x),
                                                          (double *)kn__ptr(y), idx, &g, planes);
    kn_tensor_free(x);
    return KN_OK;
}

static kn_status maxpool_forward(kn_opctx *c) {
    return maxpool_run(c, false);
}
static kn_status maxpool_forward_ref(kn_opctx *c) {
    return maxpool_run(c, true);
}

static const kn_opdef op_maxpool_bwd;

static kn_status maxpool_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    pool_params p;
    kn_status st = pool_params_read("max_pool2d", c->attrs, true, &p);
    if (st != KN_OK) return st;
    kn_attrs a = {0};
    pool_params_write(&a, &p, true);
    kn_tensor *in[2] = {c->gout[0], c->in[0]};
    if (!(c->gin[0] = kn__op1(&op_maxpool_bwd, in, 2, &a))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_maxpool = {
    .name = "max_pool2d",
    .min_in = 1,
    .max_in = 1,
    .nout = 2,
    .dtypes = KN_DT_FLOAT,
    .infer = maxpool_infer,
    .forward = maxpool_forward,
    .forward_ref = maxpool_forward_ref,
    .backward = maxpool_backward,
    .onnx = "MaxPool",
    .doc = "2-D max pooling (kernel, stride, padding, dilation, ceil_mode; optional indices)",
};

/* (gy, x) -> gx: gy routed to the argmax of each window (recomputed from x). */
static kn_status maxpool_bwd_infer(kn_opctx *c) {
    const char *op = "max_pool2d_backward";
    kn_status st;
    pool_params p;
    char s1[128], s2[128];
    if ((st = kn__same_dtype(c, 0, 1)) != KN_OK) return st;
    if ((st = pool_params_read(op, c->attrs, true, &p)) != KN_OK) return st;
    const kn_tensor *gy = c->in[0], *x = c->in[1];
    if ((st = check_pool_input(op, x)) != KN_OK) return st;
    int64_t OH = 0, OW = 0;
    if ((st = pool_out_shape(op, x, &p, &OH, &OW)) != KN_OK) return st;
    int nd = x->ndim;
    bool ok = gy->ndim == nd && gy->shape[nd - 2] == OH && gy->shape[nd - 1] == OW;
    for (int i = 0; ok && i < nd - 2; i++)
        ok = gy->shape[i] == x->shape[i];
    if (!ok)
        return kn__err(KN_ESHAPE, "%s: grad_output %s does not match input %s", op,
                       kn__shape_str(s1, sizeof s1, gy->ndim, gy->shape),
                       kn__shape_str(s2, sizeof s2, nd, x->shape));
    kn__out_like(c, 0, x, x->dtype);
    return KN_OK;
}

static kn_status maxpool_bwd_forward(kn_opctx *c) {
    pool_params p;
    kn_status st = pool_params_read("max_pool2d_backward", c->attrs, true, &p);
    if (st != KN_OK) return st;
    kn_tensor *gy = kn__contig(c->in[0]), *x = gy ? kn__contig(c->in[1]) : NULL;
    if (!x) {
        kn_tensor_free(gy);
        return kn_last_status();
    }
    kn_tensor *gx = c->out[0];
    int nd = x->ndim;
    kn_pool_geom g = make_pool_geom(x->shape[nd - 2], x->shape[nd - 1], gy->shape[nd - 2],
                                    gy->shape[nd - 1], &p);
    /* set by the graph compiler when it fuses a following relu_backward (x is relu's output) */
    g.relu_mask = kn__attr_int(c->attrs, "relu_mask", 0) != 0;
    if (x->dtype == KN_F32)
        kn__maxpool2d_bwd_f32((float *)kn__ptr(gy), (float *)kn__ptr(x), (float *)kn__ptr(gx), &g,
                              planes_of(x));
    else
        kn__maxpool2d_bwd_f64((double *)kn__ptr(gy), (double *)kn__ptr(x), (double *)kn__ptr(gx),
                              &g, planes_of(x));
    kn_tensor_free(gy);
    kn_tensor_free(x);
    return KN_OK;
}

static kn_status maxpool_bwd_backward(kn_bwctx *c) {
    /* linear in gy: d/dgy <gg, route(gy)> = gg gathered at the argmax of each window */
    if (!c->needs[0]) return KN_OK;
    pool_params p;
    kn_status st = pool_params_read("max_pool2d_backward", c->attrs, true, &p);
    if (st != KN_OK) return st;
    p.indices = true;
    kn_attrs a = {0};
    pool_params_write(&a, &p, true);
    kn_attrs_set_int(&a, "indices", 1);
    kn_tensor *x = c->in[1], *gy = c->in[0], *gg = c->gout[0];
    kn_tensor *out[KN_MAX_OUTS] = {0};
    kn_tensor *in[1] = {kn_detach(x)};
    int n = kn__op_run(&op_maxpool, in, 1, &a, out, KN_MAX_OUTS);
    if (n < 2) return n < 0 ? (kn_status)n : kn__err(KN_EINTERNAL, "max_pool2d: no indices");
    int nd = x->ndim;
    int64_t planes = planes_of(x);
    int64_t sg[2] = {planes, x->shape[nd - 2] * x->shape[nd - 1]};
    int64_t si[2] = {planes, gy->shape[nd - 2] * gy->shape[nd - 1]};
    kn_tensor *r = kn_gather(kn_reshape(gg, 2, sg), 1, kn_reshape(out[1], 2, si));
    r = kn_reshape(r, gy->ndim, gy->shape);
    if (!(c->gin[0] = r)) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_maxpool_bwd = {
    .name = "max_pool2d_backward",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = maxpool_bwd_infer,
    .forward = maxpool_bwd_forward,
    .backward = maxpool_bwd_backward,
    .doc = "input gradient of max_pool2d: (grad_output, input) -> grad_input",
};

/* ---------------------------------------------------------------- avg_pool2d */

static kn_status avgpool_infer(kn_opctx *c) {
    kn_status st;
    pool_params p;
    const kn_tensor *x = c->in[0];
    if ((st = pool_params_read("avg_pool2d", c->attrs, false, &p)) != KN_OK) return st;
    if ((st = check_pool_input("avg_pool2d", x)) != KN_OK) return st;
    int64_t OH = 0, OW = 0;
    if ((st = pool_out_shape("avg_pool2d", x, &p, &OH, &OW)) != KN_OK) return st;
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][x->ndim - 2] = OH;
    c->out_shape[0][x->ndim - 1] = OW;
    return KN_OK;
}

static kn_status avgpool_forward(kn_opctx *c) {
    pool_params p;
    kn_status st = pool_params_read("avg_pool2d", c->attrs, false, &p);
    if (st != KN_OK) return st;
    kn_tensor *x = kn__contig(c->in[0]);
    if (!x) return kn_last_status();
    kn_tensor *y = c->out[0];
    int nd = x->ndim;
    kn_pool_geom g =
        make_pool_geom(x->shape[nd - 2], x->shape[nd - 1], y->shape[nd - 2], y->shape[nd - 1], &p);
    if (x->dtype == KN_F32)
        kn__avgpool2d_f32((float *)kn__ptr(x), (float *)kn__ptr(y), &g, planes_of(x));
    else
        kn__avgpool2d_f64((double *)kn__ptr(x), (double *)kn__ptr(y), &g, planes_of(x));
    kn_tensor_free(x);
    return KN_OK;
}

static const kn_opdef op_avgpool, op_avgpool_bwd;

static kn_status avgpool_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    pool_params p;
    kn_status st = pool_params_read("avg_pool2d", c->attrs, false, &p);
    if (st != KN_OK) return st;
    kn_attrs a = {0};
    pool_params_write(&a, &p, false);
    const kn_tensor *x = c->in[0];
    int64_t hw[2] = {x->shape[x->ndim - 2], x->shape[x->ndim - 1]};
    kn_attrs_set_ints(&a, "input_size", hw, 2);
    kn_tensor *in[1] = {c->gout[0]};
    if (!(c->gin[0] = kn__op1(&op_avgpool_bwd, in, 1, &a))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_avgpool = {
    .name = "avg_pool2d",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = avgpool_infer,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .onnx = "AveragePool",
    .doc = "2-D average pooling (kernel, stride, padding, ceil_mode, count_include_pad)",
};

/* gy (.., OH, OW), "input_size" (H, W) -> gx (.., H, W) */
static kn_status avgpool_bwd_infer(kn_opctx *c) {
    const char *op = "avg_pool2d_backward";
    kn_status st;
    pool_params p;
    char s1[128];
    const kn_tensor *gy = c->in[0];
    if ((st = pool_params_read(op, c->attrs, false, &p)) != KN_OK) return st;
    if ((st = check_pool_input(op, gy)) != KN_OK) return st;
    int64_t hw[2] = {0, 0};
    if ((st = attr_pair(op, c->attrs, "input_size", -1, 0, hw)) != KN_OK) return st;
    if (hw[0] < 0) return kn__err(KN_EINVAL, "%s: attribute 'input_size' is required", op);
    int nd = gy->ndim;
    int64_t OH = pool_out_len(hw[0], p.k[0], p.s[0], p.p[0], 1, p.ceil_mode);
    int64_t OW = pool_out_len(hw[1], p.k[1], p.s[1], p.p[1], 1, p.ceil_mode);
    if (gy->shape[nd - 2] != OH || gy->shape[nd - 1] != OW)
        return kn__err(KN_ESHAPE, "%s: grad_output %s does not match input size (%lld, %lld)", op,
                       kn__shape_str(s1, sizeof s1, nd, gy->shape), (long long)hw[0],
                       (long long)hw[1]);
    kn__out_like(c, 0, gy, gy->dtype);
    c->out_shape[0][nd - 2] = hw[0];
    c->out_shape[0][nd - 1] = hw[1];
    return kn__check_shape(op, nd, c->out_shape[0], gy->dtype);
}

static kn_status avgpool_bwd_forward(kn_opctx *c) {
    pool_params p;
    kn_status st = pool_params_read("avg_pool2d_backward", c->attrs, false, &p);
    if (st != KN_OK) return st;
    kn_tensor *gy = kn__contig(c->in[0]);
    if (!gy) return kn_last_status();
    kn_tensor *gx = c->out[0];
    int nd = gx->ndim;
    kn_pool_geom g = make_pool_geom(gx->shape[nd - 2], gx->shape[nd - 1], gy->shape[nd - 2],
                                    gy->shape[nd - 1], &p);
    if (gx->dtype == KN_F32)
        kn__avgpool2d_bwd_f32((float *)kn__ptr(gy), (float *)kn__ptr(gx), &g, planes_of(gx));
    else
        kn__avgpool2d_bwd_f64((double *)kn__ptr(gy), (double *)kn__ptr(gx), &g, planes_of(gx));
    kn_tensor_free(gy);
    return KN_OK;
}

static kn_status avgpool_bwd_backward(kn_bwctx *c) {
    /* linear: the adjoint of the adjoint is avg_pool2d itself */
    if (!c->needs[0]) return KN_OK;
    pool_params p;
    kn_status st = pool_params_read("avg_pool2d_backward", c->attrs, false, &p);
    if (st != KN_OK) return st;
    kn_attrs a = {0};
    pool_params_write(&a, &p, false);
    kn_tensor *in[1] = {c->gout[0]};
    if (!(c->gin[0] = kn__op1(&op_avgpool, in, 1, &a))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_avgpool_bwd = {
    .name = "avg_pool2d_backward",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = avgpool_bwd_infer,
    .forward = avgpool_bwd_forward,
    .backward = avgpool_bwd_backward,
    .doc = "input gradient of avg_pool2d: grad_output -> grad_input",
};

/* ---------------------------------------------------------------- adaptive_avg_pool2d */

static kn_status adaptive_infer(kn_opctx *c) {
    const char *op = "adaptive_avg_pool2d";
    kn_status st;
    char s1[128];
    const kn_tensor *x = c->in[0];
    if ((st = check_pool_input(op, x)) != KN_OK) return st;
    int64_t o[2] = {0, 0};
    if ((st = attr_pair(op, c->attrs, "output_size", -1, 1, o)) != KN_OK) return st;
    if (o[0] < 1) return kn__err(KN_EINVAL, "%s: attribute 'output_size' is required", op);
    int nd = x->ndim;
    if (x->shape[nd - 2] < 1 || x->shape[nd - 1] < 1)
        return kn__err(KN_ESHAPE, "%s: input %s has an empty plane", op,
                       kn__shape_str(s1, sizeof s1, nd, x->shape));
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][nd - 2] = o[0];
    c->out_shape[0][nd - 1] = o[1];
    return kn__check_shape(op, nd, c->out_shape[0], x->dtype);
}

static kn_status adaptive_forward(kn_opctx *c) {
    kn_tensor *x = kn__contig(c->in[0]), *y = c->out[0];
    if (!x) return kn_last_status();
    int nd = x->ndim;
    int64_t H = x->shape[nd - 2], W = x->shape[nd - 1], OH = y->shape[nd - 2],
            OW = y->shape[nd - 1];
    if (x->dtype == KN_F32)
        kn__adaptive_avgpool2d_f32((float *)kn__ptr(x), (float *)kn__ptr(y), H, W, OH, OW,
                                   planes_of(x));
    else
        kn__adaptive_avgpool2d_f64((double *)kn__ptr(x), (double *)kn__ptr(y), H, W, OH, OW,
                                   planes_of(x));
    kn_tensor_free(x);
    return KN_OK;
}

static const kn_opdef op_adaptive, op_adaptive_bwd;

static kn_status adaptive_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    const kn_tensor *x = c->in[0];
    kn_attrs a = {0};
    int64_t hw[2] = {x->shape[x->ndim - 2], x->shape[x->ndim - 1]};
    kn_attrs_set_ints(&a, "input_size", hw, 2);
    kn_tensor *in[1] = {c->gout[0]};
    if (!(c->gin[0] = kn__op1(&op_adaptive_bwd, in, 1, &a))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_adaptive = {
    .name = "adaptive_avg_pool2d",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = adaptive_infer,
    .forward = adaptive_forward,
    .backward = adaptive_backward,
    .doc = "adaptive 2-D average pooling to output_size (PyTorch windows)",
};

static kn_status adaptive_bwd_infer(kn_opctx *c) {
    const char *op = "adaptive_avg_pool2d_backward";
    kn_status st;
    const kn_tensor *gy = c->in[0];
    if ((st = check_pool_input(op, gy)) != KN_OK) return st;
    int64_t hw[2] = {0, 0};
    if ((st = attr_pair(op, c->attrs, "input_size", -1, 1, hw)) != KN_OK) return st;
    if (hw[0] < 1) return kn__err(KN_EINVAL, "%s: attribute 'input_size' is required", op);
    int nd = gy->ndim;
    kn__out_like(c, 0, gy, gy->dtype);
    c->out_shape[0][nd - 2] = hw[0];
    c->out_shape[0][nd - 1] = hw[1];
    return kn__check_shape(op, nd, c->out_shape[0], gy->dtype);
}

static kn_status adaptive_bwd_forward(kn_opctx *c) {
    kn_tensor *gy = kn__contig(c->in[0]), *gx = c->out[0];
    if (!gy) return kn_last_status();
    int nd = gx->ndim;
    int64_t H = gx->shape[nd - 2], W = gx->shape[nd - 1], OH = gy->shape[nd - 2],
            OW = gy->shape[nd - 1];
    if (gx->dtype == KN_F32)
        kn__adaptive_avgpool2d_bwd_f32((float *)kn__ptr(gy), (float *)kn__ptr(gx), H, W, OH, OW,
                                       planes_of(gx));
    else
        kn__adaptive_avgpool2d_bwd_f64((double *)kn__ptr(gy), (double *)kn__ptr(gx), H, W, OH, OW,
                                       planes_of(gx));
    kn_tensor_free(gy);
    return KN_OK;
}

static kn_status adaptive_bwd_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    const kn_tensor *gy = c->in[0];
    kn_attrs a = {0};
    int64_t o[2] = {gy->shape[gy->ndim - 2], gy->shape[gy->ndim - 1]};
    kn_attrs_set_ints(&a, "output_size", o, 2);
    kn_tensor *in[1] = {c->gout[0]};
    if (!(c->gin[0] = kn__op1(&op_adaptive, in, 1, &a))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_adaptive_bwd = {
    .name = "adaptive_avg_pool2d_backward",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_INTERNAL,
    .infer = adaptive_bwd_infer,
    .forward = adaptive_bwd_forward,
    .backward = adaptive_bwd_backward,
    .doc = "input gradient of adaptive_avg_pool2d: grad_output -> grad_input",
};

/* ---------------------------------------------------------------- global_avg_pool2d */

static kn_status global_infer(kn_opctx *c) {
    kn_status st;
    const kn_tensor *x = c->in[0];
    if ((st = check_pool_input("global_avg_pool2d", x)) != KN_OK) return st;
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][x->ndim - 2] = 1;
    c->out_shape[0][x->ndim - 1] = 1;
    return KN_OK;
}

static kn_status global_forward(kn_opctx *c) {
    kn_tensor *x = kn__contig(c->in[0]), *y = c->out[0];
    if (!x) return kn_last_status();
    int nd = x->ndim;
    int64_t hw = x->shape[nd - 2] * x->shape[nd - 1];
    if (x->dtype == KN_F32)
        kn__global_avgpool2d_f32((float *)kn__ptr(x), (float *)kn__ptr(y), hw, planes_of(x));
    else
        kn__global_avgpool2d_f64((double *)kn__ptr(x), (double *)kn__ptr(y), hw, planes_of(x));
    kn_tensor_free(x);
    return KN_OK;
}

static kn_status global_backward(kn_bwctx *c) {
    if (!c->needs[0]) return KN_OK;
    const kn_tensor *x = c->in[0];
    int nd = x->ndim;
    double hw = (double)(x->shape[nd - 2] * x->shape[nd - 1]);
    kn_tensor *g = kn_expand(c->gout[0], nd, x->shape);
    if (!(c->gin[0] = kn_mul_scalar(g, 1.0 / hw))) return kn_last_status();
    return KN_OK;
}

static const kn_opdef op_global = {
    .name = "global_avg_pool2d",
    .min_in = 1,
    .max_in = 1,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = global_infer,
    .forward = global_forward,
    .backward = global_backward,
    .onnx = "GlobalAveragePool",
    .doc = "mean over H and W: (N,C,H,W) -> (N,C,1,1)",
};

/* ====================================================================== registry, public API */

const kn_opdef *const kn__ops_conv[] = {&op_conv2d,
                                        &op_conv2d_bwd_input,
                                        &op_conv2d_bwd_weight,
                                        &op_conv_transpose2d,
                                        &op_maxpool,
                                        &op_maxpool_bwd,
                                        &op_avgpool,
                                        &op_avgpool_bwd,
                                        &op_adaptive,
                                        &op_adaptive_bwd,
                                        &op_global,
                                        &kn__op_conv2d_packed,
                                        NULL};

static int64_t or1(int64_t v) {
    return v == 0 ? 1 : v;
}

/* Fills conv attrs from public opts; w gives the kernel size for padding='same'. */
static kn_status conv_opts_attrs(const char *op, const kn_conv_opts *o, const kn_tensor *w, int nsp,
                                 kn_attrs *a) {
    kn_conv_opts d = {0};
    if (!o) o = &d;
    int64_t s[2] = {or1(o->stride[0]), or1(o->stride[1])};
    int64_t dl[2] = {or1(o->dilation[0]), or1(o->dilation[1])};
    int64_t pads[4] = {o->padding[0], o->padding[1], o->padding[0], o->padding[1]};
    if (nsp == 1) { /* conv1d: only [0] is used; the height axis is a dummy of size 1 */
        s[1] = s[0], s[0] = 1;
        dl[1] = dl[0], dl[0] = 1;
        pads[1] = pads[3] = o->padding[0];
        pads[0] = pads[2] = 0;
    }
    if (o->same_padding) {
        if (s[0] != 1 || s[1] != 1)
            return kn__err(KN_EINVAL,
                           "%s: padding='same' is not supported for strided "
                           "convolutions (stride (%lld, %lld))",
                           op, (long long)s[0], (long long)s[1]);
        if (w->ndim != 2 + nsp) return KN_OK; /* infer reports the shape error */
        int64_t k[2] = {nsp == 1 ? 1 : w->shape[2], nsp == 1 ? w->shape[2] : w->shape[3]};
        for (int i = 0; i < 2; i++) {
            int64_t total = dl[i] * (k[i] - 1);
            pads[i] = total / 2; /* PyTorch puts the odd extra pad on the high side */
            pads[i + 2] = total - total / 2;
        }
    }
    kn_attrs_set_ints(a, "stride", s, 2);
    kn_attrs_set_ints(a, "pads", pads, 4);
    kn_attrs_set_ints(a, "dilation", dl, 2);
    kn_attrs_set_int(a, "groups", or1(o->groups));
    return KN_OK;
}

kn_tensor *kn_conv2d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const kn_conv_opts *o) {
    kn_tensor *in[3] = {x, w, b};
    if (!x || !w) return kn__op1(&op_conv2d, in, 2, NULL); /* reports the NULL input */
    kn_attrs a = {0};
    if (conv_opts_attrs("conv2d", o, w, 2, &a) != KN_OK) return NULL;
    return kn__op1(&op_conv2d, in, b ? 3 : 2, &a);
}

kn_tensor *kn_conv1d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const kn_conv_opts *o) {
    char s1[128], s2[128];
    kn_tensor *in[3] = {x, w, b};
    if (!x || !w) return kn__op1(&op_conv2d, in, 2, NULL);
    if (x->ndim != 3 || w->ndim != 3)
        return kn__errp(KN_ESHAPE,
                        "conv1d: input %s and weight %s must be 3-D (N, C, L) and "
                        "(O, C/groups, K)",
                        kn__shape_str(s1, sizeof s1, x->ndim, x->shape),
                        kn__shape_str(s2, sizeof s2, w->ndim, w->shape));
    kn_attrs a = {0};
    if (conv_opts_attrs("conv1d", o, w, 1, &a) != KN_OK) return NULL;
    kn_scope sc = kn_scope_begin();
    kn_tensor *in2[3] = {kn_unsqueeze(x, 2), kn_unsqueeze(w, 2), b};
    kn_tensor *y = (in2[0] && in2[1]) ? kn__op1(&op_conv2d, in2, b ? 3 : 2, &a) : NULL;
    y = kn_keep(kn_squeeze(y, 2));
    kn_scope_end(sc);
    return y;
}

kn_tensor *kn_conv_transpose2d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const kn_conv_opts *o,
                               const int64_t output_padding[2]) {
    kn_tensor *in[3] = {x, w, b};
    if (!x || !w) return kn__op1(&op_conv_transpose2d, in, 2, NULL);
    if (o && o->same_padding)
        return kn__errp(KN_EINVAL, "conv_transpose2d: padding='same' is not supported");
    kn_attrs a = {0};
    if (conv_opts_attrs("conv_transpose2d", o, w, 2, &a) != KN_OK) return NULL;
    if (output_padding) kn_attrs_set_ints(&a, "output_padding", output_padding, 2);
    return kn__op1(&op_conv_transpose2d, in, b ? 3 : 2, &a);
}

static kn_status pool_opts_attrs(const kn_pool_opts *o, bool is_max, kn_attrs *a) {
    if (!o)
        return kn__err(KN_EINVAL, "%s: options are required (kernel size)",
                       is_max ? "max_pool2d" : "avg_pool2d");
    pool_params p = {.k = {o->kernel[0], o->kernel[1]},
                     .s = {o->stride[0] ? o->stride[0] : o->kernel[0],
                           o->stride[1] ? o->stride[1] : o->kernel[1]},
                     .p = {o->padding[0], o->padding[1]},
                     .d = {or1(o->dilation[0]), or1(o->dilation[1])},
                     .ceil_mode = o->ceil_mode,
                     .count_include_pad = o->count_include_pad};
    pool_params_write(a, &p, is_max);
    return KN_OK;
}

kn_tensor *kn_max_pool2d(kn_tensor *x, const kn_pool_opts *o, kn_tensor **indices) {
    if (indices) *indices = NULL;
    kn_attrs a = {0};
    if (pool_opts_attrs(o, true, &a) != KN_OK) return NULL;
    if (!indices) return kn__op1(&op_maxpool, &x, 1, &a);
    kn_attrs_set_int(&a, "indices", 1);
    kn_tensor *out[KN_MAX_OUTS] = {0};
    int n = kn__op_run(&op_maxpool, &x, 1, &a, out, KN_MAX_OUTS);
    if (n < 2) return NULL;
    *indices = out[1];
    return out[0];
}

kn_tensor *kn_avg_pool2d(kn_tensor *x, const kn_pool_opts *o) {
    kn_attrs a = {0};
    if (pool_opts_attrs(o, false, &a) != KN_OK) return NULL;
    return kn__op1(&op_avgpool, &x, 1, &a);
}

kn_tensor *kn_adaptive_avg_pool2d(kn_tensor *x, int64_t out_h, int64_t out_w) {
    kn_attrs a = {0};
    int64_t o[2] = {out_h, out_w};
    if (out_h < 1 || out_w < 1)
        return kn__errp(KN_EINVAL, "adaptive_avg_pool2d: output size (%lld, %lld) must be >= 1",
                        (long long)out_h, (long long)out_w);
    kn_attrs_set_ints(&a, "output_size", o, 2);
    return kn__op1(&op_adaptive, &x, 1, &a);
}

kn_tensor *kn_global_avg_pool2d(kn_tensor *x) {
    return kn__op1(&op_global, &x, 1, NULL);
}
