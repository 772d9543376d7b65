/*
 * conv_ref_tmpl.h - body of the convolution/pooling kernels, included by conv_ref.c once per
 * dtype with T (element type), S (suffix f32/f64) and ACC (accumulator type of the averaging
 * kernels) defined. Contract and invariants in kernels/conv.h.
 */
#define KN_CAT2(a, b) a##b
#define KN_CAT(a, b) KN_CAT2(a, b)
#define FN(name) KN_CAT(KN_CAT(kn__, name), KN_CAT(_, S))
#define LOCAL(name) KN_CAT(name, KN_CAT(_, S))

/* ---------------------------------------------------------------- im2col / col2im */

/* Output columns [lo, hi) whose input column ow*s + off lies inside [0, W). */
static inline void LOCAL(valid_cols)(int64_t OW, int64_t W, int64_t s, int64_t off, int64_t *lo,
                                     int64_t *hi) {
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = W - off > 0 ? (W - off + s - 1) / s : 0;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

void FN(im2col)(const T *x, const kn_conv_geom *g, int64_t Cg, int64_t oh0, int64_t oh1,
                T *col) {
    const int64_t H = g->H, W = g->W, OW = g->OW, KH = g->KH, KW = g->KW;
    const int64_t TN = (oh1 - oh0) * OW, rows = Cg * KH * KW;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (rows * TN > 65536) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        T *dst = col + r * TN;
        const T *xc = x + c * H * W;
        int64_t off = kw * g->dw - g->pl, lo, hi;
        LOCAL(valid_cols)(OW, W, g->sw, off, &lo, &hi);
        for (int64_t oh = oh0; oh < oh1; oh++) {
            T *d = dst + (oh - oh0) * OW;
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            if (ih < 0 || ih >= H) {
                memset(d, 0, sizeof(T) * (size_t)OW);
                continue;
            }
            const T *src = xc + ih * W + off;
            for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0;
            if (g->sw == 1) {
                memcpy(d + lo, src + lo, sizeof(T) * (size_t)(hi - lo));
            } else {
                const int64_t sw = g->sw;
                for (int64_t ow = lo; ow < hi; ow++) d[ow] = src[ow * sw];
            }
            for (int64_t ow = hi; ow < OW; ow++) d[ow] = 0;
        }
    }
}

void FN(col2im)(const T *col, const kn_conv_geom *g, int64_t Cg, int64_t oh0, int64_t oh1,
                T *gx) {
    const int64_t H = g->H, W = g->W, OW = g->OW, KH = g->KH, KW = g->KW;
    const int64_t TN = (oh1 - oh0) * OW;
    int nth = kn__threads();
    /* one thread per input channel: each gx plane has one writer, in a fixed order */
#pragma omp parallel for num_threads(nth) if (Cg * KH * KW * TN > 65536) schedule(static)
    for (int64_t c = 0; c < Cg; c++) {
        T *gc = gx + c * H * W;
        for (int64_t kh = 0; kh < KH; kh++)
            for (int64_t kw = 0; kw < KW; kw++) {
                const T *src = col + ((c * KH + kh) * KW + kw) * TN;
                int64_t off = kw * g->dw - g->pl, lo, hi;
                LOCAL(valid_cols)(OW, W, g->sw, off, &lo, &hi);
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    int64_t ih = oh * g->sh - g->pt + kh * g->dh;
                    if (ih < 0 || ih >= H) continue;
                    T *d = gc + ih * W + off;
                    const T *s = src + (oh - oh0) * OW;
                    if (g->sw == 1) {
                        for (int64_t ow = lo; ow < hi; ow++) d[ow] += s[ow];
                    } else {
                        const int64_t sw = g->sw;
                        for (int64_t ow = lo; ow < hi; ow++) d[ow * sw] += s[ow];
                    }
                }
            }
    }
}

/* ---------------------------------------------------------------- direct convolution */

void FN(conv2d_direct)(const T *x, const T *w, const T *b, T *y, const kn_conv_geom *g) {
    const int64_t N = g->N, C = g->C, H = g->H, W = g->W, O = g->O, KH = g->KH, KW = g->KW;
    const int64_t OH = g->OH, OW = g->OW, Cg = C / g->G, Og = O / g->G;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) collapse(2) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            int64_t grp = o / Og;
            const T *wo = w + o * Cg * KH * KW;
            T *yo = y + (n * O + o) * OH * OW;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    T s = b ? b[o] : (T)0;
                    for (int64_t c = 0; c < Cg; c++) {
                        const T *xc = x + (n * C + grp * Cg + c) * H * W;
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
                            if (ih < 0 || ih >= H) continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                                if (iw < 0 || iw >= W) continue;
                                s += xc[ih * W + iw] * wo[(c * KH + kh) * KW + kw];
                            }
                        }
                    }
                    yo[oh * OW + ow] = s;
                }
        }
}

void FN(conv2d_bwd_input_direct)(const T *gy, const T *w, T *gx, const kn_conv_geom *g) {
    const int64_t N = g->N, C = g->C, H = g->H, W = g->W, O = g->O, KH = g->KH, KW = g->KW;
    const int64_t OH = g->OH, OW = g->OW, Cg = C / g->G, Og = O / g->G;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) collapse(2) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            int64_t grp = c / Cg, cl = c % Cg;
            T *gxc = gx + (n * C + c) * H * W;
            for (int64_t ih = 0; ih < H; ih++)
                for (int64_t iw = 0; iw < W; iw++) {
                    T s = 0;
                    for (int64_t o = grp * Og; o < (grp + 1) * Og; o++) {
                        const T *gyo = gy + (n * O + o) * OH * OW;
                        const T *wo = w + (o * Cg + cl) * KH * KW;
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t t = ih + g->pt - kh * g->dh;
                            if (t < 0 || t % g->sh) continue;
                            int64_t oh = t / g->sh;
                            if (oh >= OH) continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t u = iw + g->pl - kw * g->dw;
                                if (u < 0 || u % g->sw) continue;
                                int64_t ow = u / g->sw;
                                if (ow >= OW) continue;
                                s += gyo[oh * OW + ow] * wo[kh * KW + kw];
                            }
                        }
                    }
                    gxc[ih * W + iw] = s;
                }
        }
}

void FN(conv2d_bwd_weight_direct)(const T *x, const T *gy, T *gw, const kn_conv_geom *g) {
    const int64_t N = g->N, C = g->C, H = g->H, W = g->W, O = g->O, KH = g->KH, KW = g->KW;
    const int64_t OH = g->OH, OW = g->OW, Cg = C / g->G, Og = O / g->G;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) collapse(2) schedule(static)
    for (int64_t o = 0; o < O; o++)
        for (int64_t cl = 0; cl < Cg; cl++) {
            int64_t grp = o / Og;
            for (int64_t kh = 0; kh < KH; kh++)
                for (int64_t kw = 0; kw < KW; kw++) {
                    T s = 0;
                    for (int64_t n = 0; n < N; n++) {
                        const T *xc = x + (n * C + grp * Cg + cl) * H * W;
                        const T *gyo = gy + (n * O + o) * OH * OW;
                        for (int64_t oh = 0; oh < OH; oh++) {
                            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
                            if (ih < 0 || ih >= H) continue;
                            for (int64_t ow = 0; ow < OW; ow++) {
                                int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                                if (iw < 0 || iw >= W) continue;
                                s += xc[ih * W + iw] * gyo[oh * OW + ow];
                            }
                        }
                    }
                    gw[((o * Cg + cl) * KH + kh) * KW + kw] = s;
                }
        }
}

/* ---------------------------------------------------------------- one input channel per group */

/* y (OH, OW) = bias + sum_{kh,kw} w[kh][kw] * x shifted: whole-row vector loops per tap */
KN_CONV_CLONES static void LOCAL(dw_plane_fwd)(const T *restrict x, const T *restrict w, T bias,
                                               T *restrict y, const kn_conv_geom *g) {
    const int64_t W = g->W, OW = g->OW, KW = g->KW, sw = g->sw;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        T *yr = y + oh * OW;
        for (int64_t ow = 0; ow < OW; ow++) yr[ow] = bias;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            if (ih < 0 || ih >= g->H) continue;
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t off = kw * g->dw - g->pl, lo, hi;
                LOCAL(valid_cols)(OW, W, sw, off, &lo, &hi);
                const T *src = x + ih * W + off;
                const T wv = w[kh * KW + kw];
                if (sw == 1)
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += wv * src[ow];
                else
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += wv * src[ow * sw];
            }
        }
    }
}

/* gx (H, W) += scatter of w (KH, KW) times gy (OH, OW) */
KN_CONV_CLONES static void LOCAL(dw_plane_bwd_input)(const T *restrict gy, const T *restrict w,
                                                     T *restrict gx, const kn_conv_geom *g) {
    const int64_t W = g->W, OW = g->OW, KW = g->KW, sw = g->sw;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        const T *gr = gy + oh * OW;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            if (ih < 0 || ih >= g->H) continue;
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t off = kw * g->dw - g->pl, lo, hi;
                LOCAL(valid_cols)(OW, W, sw, off, &lo, &hi);
                T *dst = gx + ih * W + off;
                const T wv = w[kh * KW + kw];
                if (sw == 1)
                    for (int64_t ow = lo; ow < hi; ow++) dst[ow] += wv * gr[ow];
                else
                    for (int64_t ow = lo; ow < hi; ow++) dst[ow * sw] += wv * gr[ow];
            }
        }
    }
}

/* acc (KH*KW, OW) += per-column products gy (OH, OW) * x shifted; summed over ow later, so the
 * inner loops stay elementwise (vectorised) and the order is fixed */
KN_CONV_CLONES static void LOCAL(dw_plane_bwd_weight)(const T *restrict x, const T *restrict gy,
                                                      T *restrict acc, const kn_conv_geom *g) {
    const int64_t W = g->W, OW = g->OW, KW = g->KW, sw = g->sw;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        const T *gr = gy + oh * OW;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            if (ih < 0 || ih >= g->H) continue;
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t off = kw * g->dw - g->pl, lo, hi;
                LOCAL(valid_cols)(OW, W, sw, off, &lo, &hi);
                const T *src = x + ih * W + off;
                T *a = acc + (kh * KW + kw) * OW;
                if (sw == 1)
                    for (int64_t ow = lo; ow < hi; ow++) a[ow] += gr[ow] * src[ow];
                else
                    for (int64_t ow = lo; ow < hi; ow++) a[ow] += gr[ow] * src[ow * sw];
            }
        }
    }
}

void FN(dwconv2d)(const T *x, const T *w, const T *b, T *y, const kn_conv_geom *g) {
    const int64_t O = g->O, Og = g->O / g->G, HW = g->H * g->W, P = g->OH * g->OW;
    const int64_t KK = g->KH * g->KW, planes = g->N * O;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * P * KK > 32768) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        int64_t n = q / O, o = q % O;
        LOCAL(dw_plane_fwd)(x + (n * g->C + o / Og) * HW, w + o * KK, b ? b[o] : (T)0, y + q * P,
                            g);
    }
}

void FN(dwconv2d_bwd_input)(const T *gy, const T *w, T *gx, const kn_conv_geom *g) {
    const int64_t C = g->C, Og = g->O / g->G, HW = g->H * g->W, P = g->OH * g->OW;
    const int64_t KK = g->KH * g->KW, planes = g->N * C;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * Og * P * KK > 32768) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        int64_t n = q / C, c = q % C;
        for (int64_t o = c * Og; o < (c + 1) * Og; o++)
            LOCAL(dw_plane_bwd_input)(gy + (n * g->O + o) * P, w + o * KK, gx + q * HW, g);
    }
}

void FN(dwconv2d_bwd_weight)(const T *x, const T *gy, T *gw, const kn_conv_geom *g, T *scratch) {
    const int64_t O = g->O, Og = g->O / g->G, HW = g->H * g->W, P = g->OH * g->OW;
    const int64_t KK = g->KH * g->KW, OW = g->OW;
    int nth = kn__threads();
#pragma omp parallel num_threads(nth) if (g->N * O * P * KK > 32768)
    {
        T *acc = scratch + (int64_t)omp_get_thread_num() * KK * OW;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < O; o++) {
            memset(acc, 0, sizeof(T) * (size_t)(KK * OW));
            for (int64_t n = 0; n < g->N; n++)
                LOCAL(dw_plane_bwd_weight)(x + (n * g->C + o / Og) * HW, gy + (n * O + o) * P, acc,
                                           g);
            for (int64_t k = 0; k < KK; k++) {
                T s = 0;
                for (int64_t ow = 0; ow < OW; ow++) s += acc[k * OW + ow];
                gw[o * KK + k] = s;
            }
        }
    }
}

/* ---------------------------------------------------------------- max pool */

/* PyTorch's scan for one window: rows then columns, first maximum wins, NaN propagates. */
static inline T LOCAL(max_window)(const T *xp, const kn_pool_geom *p, int64_t oh, int64_t ow,
                                  int64_t *arg) {
    int64_t hs = oh * p->sh - p->ph, ws = ow * p->sw - p->pw;
    int64_t he = hs + (p->kh - 1) * p->dh + 1, we = ws + (p->kw - 1) * p->dw + 1;
    if (he > p->H) he = p->H;
    if (we > p->W) we = p->W;
    while (hs < 0) hs += p->dh;
    while (ws < 0) ws += p->dw;
    int64_t best = hs * p->W + ws;
    T m = -(T)INFINITY;
    for (int64_t ih = hs; ih < he; ih += p->dh)
        for (int64_t iw = ws; iw < we; iw += p->dw) {
            T v = xp[ih * p->W + iw];
            if (v > m || isnan(v)) {
                m = v;
                best = ih * p->W + iw;
            }
        }
    *arg = best;
    return m;
}

void FN(maxpool2d_ref)(const T *x, T *y, int64_t *idx, const kn_pool_geom *p, int64_t planes) {
    const int64_t HW = p->H * p->W, OHW = p->OH * p->OW;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * OHW > 16384) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        const T *xp = x + q * HW;
        for (int64_t oh = 0; oh < p->OH; oh++)
            for (int64_t ow = 0; ow < p->OW; ow++) {
                int64_t a;
                y[q * OHW + oh * p->OW + ow] = LOCAL(max_window)(xp, p, oh, ow, &a);
                if (idx) idx[q * OHW + oh * p->OW + ow] = a;
            }
    }
}

/* Fast path: the columns whose windows lie inside the row are done as whole-row vector loops
 * (kernel offsets outer, output columns inner), in the same scan order per window as the
 * reference, so values and indices match it exactly. Border columns use the scalar scan. */
/* The common 2x2 / stride 2 pool with every window inside the plane: the four candidates of a
 * window compared in the reference's scan order (row 0 col 0, row 0 col 1, row 1 col 0, row 1
 * col 1; a later one wins if greater or NaN), as straight-line selects that vectorise. */
KN_CONV_CLONES static void LOCAL(maxpool_2x2)(const T *restrict xp, T *restrict yp,
                                              int64_t *restrict ip, const kn_pool_geom *p) {
    const int64_t W = p->W, OW = p->OW;
    for (int64_t oh = 0; oh < p->OH; oh++) {
        const T *r0 = xp + 2 * oh * W, *r1 = r0 + W;
        T *yr = yp + oh * OW;
        int64_t *ir = ip ? ip + oh * OW : NULL;
        for (int64_t ow = 0; ow < OW; ow++) {
            T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            T m = a;
            int64_t k = 0;
            /* `|`, not `||`: no short-circuit branch, so short rows stay branch-free too */
            bool tb = (b > m) | (b != b);
            m = tb ? b : m;
            k = tb ? 1 : k;
            bool tc = (c > m) | (c != c);
            m = tc ? c : m;
            k = tc ? W : k;
            bool td = (d > m) | (d != d);
            m = td ? d : m;
            k = td ? W + 1 : k;
            yr[ow] = m;
            if (ir) ir[ow] = 2 * oh * W + 2 * ow + k;
        }
    }
}

KN_CONV_CLONES static void LOCAL(maxpool_plane)(const T *restrict xp, T *restrict yp,
                                                int64_t *restrict ip, const kn_pool_geom *p) {
    if (p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0 &&
        p->dh == 1 && p->dw == 1 && 2 * p->OH <= p->H && 2 * p->OW <= p->W) {
#if KN_POOL_F32
        /* short rows: the AVX-512 row-pair kernel (same bits) */
        if (p->W == 2 * p->OW && p->H == 2 * p->OH && p->W <= 32 &&
            kn__maxpool2x2_rows_avx512(xp, yp, ip, p->OH, p->OH, p->W))
            return;
#endif
        LOCAL(maxpool_2x2)(xp, yp, ip, p);
        return;
    }
    const int64_t W = p->W, OW = p->OW, sw = p->sw, dw = p->dw, kw = p->kw;
    /* interior: ow*sw - pw >= 0 and ow*sw - pw + (kw-1)*dw < W */
    int64_t lo = (p->pw + sw - 1) / sw;
    int64_t span = W - 1 + p->pw - (kw - 1) * dw;
    int64_t hi = span >= 0 ? span / sw + 1 : 0;
    if (hi > OW) hi = OW;
    if (lo > hi) lo = hi;
    bool interior_done = false;
#if KN_POOL_F32
    interior_done = !ip && kn__maxpool_s2_interior_avx512(xp, yp, p, lo, hi);
#endif
    for (int64_t oh = 0; oh < p->OH; oh++) {
        T *yr = yp + oh * OW;
        int64_t *ir = ip ? ip + oh * OW : NULL;
        for (int64_t ow = 0; ow < lo; ow++) {
            int64_t a;
            yr[ow] = LOCAL(max_window)(xp, p, oh, ow, &a);
            if (ir) ir[ow] = a;
        }
        for (int64_t ow = hi; ow < OW; ow++) {
            int64_t a;
            yr[ow] = LOCAL(max_window)(xp, p, oh, ow, &a);
            if (ir) ir[ow] = a;
        }
        if (lo >= hi || interior_done) continue;
        int64_t hs = oh * p->sh - p->ph, he = hs + (p->kh - 1) * p->dh + 1;
        if (he > p->H) he = p->H;
        while (hs < 0) hs += p->dh;
        for (int64_t ow = lo; ow < hi; ow++) yr[ow] = -(T)INFINITY;
        if (ir) {
            for (int64_t ow = lo; ow < hi; ow++) ir[ow] = hs * W + ow * sw - p->pw;
            for (int64_t ih = hs; ih < he; ih += p->dh)
                for (int64_t k = 0; k < kw; k++) {
                    int64_t off = ih * W + k * dw - p->pw;
                    const T *xr = xp + off;
                    for (int64_t ow = lo; ow < hi; ow++) {
                        T v = xr[ow * sw];
                        bool take = v > yr[ow] || v != v;
                        yr[ow] = take ? v : yr[ow];
                        ir[ow] = take ? off + ow * sw : ir[ow];
                    }
                }
        } else {
            for (int64_t ih = hs; ih < he; ih += p->dh)
                for (int64_t k = 0; k < kw; k++) {
                    const T *xr = xp + ih * W + k * dw - p->pw;
                    if (sw == 2) {
                        for (int64_t ow = lo; ow < hi; ow++) {
                            T v = xr[ow * 2], m = yr[ow];
                            yr[ow] = (v > m || v != v) ? v : m;
                        }
                    } else if (sw == 1) {
                        for (int64_t ow = lo; ow < hi; ow++) {
                            T v = xr[ow], m = yr[ow];
                            yr[ow] = (v > m || v != v) ? v : m;
                        }
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) {
                            T v = xr[ow * sw], m = yr[ow];
                            yr[ow] = (v > m || v != v) ? v : m;
                        }
                    }
                }
        }
    }
}

void FN(maxpool2d)(const T *x, T *y, int64_t *idx, const kn_pool_geom *p, int64_t planes) {
    const int64_t HW = p->H * p->W, OHW = p->OH * p->OW;
    int nth = kn__threads();
#if KN_POOL_F32
    /* 2x2 / stride 2 tiling whole planes with short rows: the planes stack into one tall image,
     * whose row pairs the AVX-512 kernel takes in a few large chunks */
    if (p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0 &&
        p->dh == 1 && p->dw == 1 && p->H == 2 * p->OH && p->W == 2 * p->OW && p->W <= 32) {
        const int64_t rows = planes * p->OH;
        bool ok = true;
#pragma omp parallel num_threads(nth) if (rows * p->W > 16384) reduction(&& : ok)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            int64_t per = (rows + n - 1) / n, r0 = per * t, r1 = r0 + per < rows ? r0 + per : rows;
            /* chunks start at whole planes so indices stay plane-relative */
            r0 = (r0 + p->OH - 1) / p->OH * p->OH;
            r1 = t == n - 1 ? rows : (r1 + p->OH - 1) / p->OH * p->OH;
            if (r0 < r1)
                ok = kn__maxpool2x2_rows_avx512(x + r0 * 2 * p->W, y + r0 * p->OW,
                                                idx ? idx + r0 * p->OW : NULL, r1 - r0, p->OH,
                                                p->W);
        }
        if (ok) return;
    }
#endif
#pragma omp parallel for num_threads(nth) if (planes * OHW > 16384) schedule(static)
    for (int64_t q = 0; q < planes; q++)
        LOCAL(maxpool_plane)(x + q * HW, y + q * OHW, idx ? idx + q * OHW : NULL, p);
}

/* Routes gy to each window's argmax. The argmax comes from the vectorised forward scan
 * (maxpool_plane, same scan order as the reference, so the same element wins), into per-thread
 * scratch; without scratch memory it falls back to the scalar scan. */
void FN(maxpool2d_bwd)(const T *gy, const T *x, T *gx, const kn_pool_geom *p, int64_t planes) {
    const int64_t HW = p->H * p->W, OHW = p->OH * p->OW;
#if KN_POOL_F32
    /* 2x2 / stride 2 tiling the plane exactly, short rows: dense AVX-512 backward (same bits) */
    if (p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0 &&
        p->dh == 1 && p->dw == 1 && p->H == 2 * p->OH && p->W == 2 * p->OW && p->W <= 32 &&
        kn__maxpool2x2_bwd_rows_avx512(x, gy, gx, planes * p->OH, p->W, p->relu_mask))
        return;
#endif
    int nth = kn__threads();
#pragma omp parallel num_threads(nth) if (planes * HW > 16384)
    {
        int64_t *ib = kn__scratch_get(sizeof(int64_t) * (size_t)OHW);
        T *yb = ib ? kn__scratch_get(sizeof(T) * (size_t)OHW) : NULL;
#pragma omp for schedule(static)
        for (int64_t q = 0; q < planes; q++) {
            const T *xp = x + q * HW, *gp = gy + q * OHW;
            T *gxp = gx + q * HW;
            memset(gxp, 0, sizeof(T) * (size_t)HW);
            if (yb) {
                LOCAL(maxpool_plane)(xp, yb, ib, p);
                for (int64_t o = 0; o < OHW; o++)
                    if (ib[o] >= 0 && ib[o] < HW && (!p->relu_mask || xp[ib[o]] > 0))
                        gxp[ib[o]] += gp[o];
                continue;
            }
            for (int64_t oh = 0; oh < p->OH; oh++)
                for (int64_t ow = 0; ow < p->OW; ow++) {
                    int64_t a;
                    (void)LOCAL(max_window)(xp, p, oh, ow, &a);
                    if (a >= 0 && a < HW && (!p->relu_mask || xp[a] > 0))
                        gxp[a] += gp[oh * p->OW + ow];
                }
        }
        kn__scratch_put(yb);
        kn__scratch_put(ib);
    }
}

/* ---------------------------------------------------------------- average pools */

/* PyTorch's avg_pool2d window: clipped bounds and the divisor. false when the window is empty. */
static inline bool LOCAL(avg_window)(const kn_pool_geom *p, int64_t oh, int64_t ow, int64_t *hs,
                                     int64_t *he, int64_t *ws, int64_t *we, ACC *div) {
    int64_t h0 = oh * p->sh - p->ph, w0 = ow * p->sw - p->pw;
    int64_t h1 = h0 + p->kh, w1 = w0 + p->kw;
    if (h1 > p->H + p->ph) h1 = p->H + p->ph;
    if (w1 > p->W + p->pw) w1 = p->W + p->pw;
    int64_t pool = (h1 - h0) * (w1 - w0);
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    if (h1 > p->H) h1 = p->H;
    if (w1 > p->W) w1 = p->W;
    *hs = h0;
    *he = h1;
    *ws = w0;
    *we = w1;
    if (h0 >= h1 || w0 >= w1) return false;
    *div = (ACC)(p->count_include_pad ? pool : (h1 - h0) * (w1 - w0));
    return true;
}

void FN(avgpool2d)(const T *x, T *y, const kn_pool_geom *p, int64_t planes) {
    const int64_t HW = p->H * p->W, OHW = p->OH * p->OW;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * OHW > 16384) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        const T *xp = x + q * HW;
        for (int64_t oh = 0; oh < p->OH; oh++)
            for (int64_t ow = 0; ow < p->OW; ow++) {
                int64_t hs, he, ws, we;
                ACC div;
                T *o = y + q * OHW + oh * p->OW + ow;
                if (!LOCAL(avg_window)(p, oh, ow, &hs, &he, &ws, &we, &div)) {
                    *o = 0;
                    continue;
                }
                ACC s = 0;
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++) s += xp[ih * p->W + iw];
                *o = (T)(s / div);
            }
    }
}

void FN(avgpool2d_bwd)(const T *gy, T *gx, const kn_pool_geom *p, int64_t planes) {
    const int64_t HW = p->H * p->W, OHW = p->OH * p->OW;
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * HW > 16384) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        T *gxp = gx + q * HW;
        memset(gxp, 0, sizeof(T) * (size_t)HW);
        for (int64_t oh = 0; oh < p->OH; oh++)
            for (int64_t ow = 0; ow < p->OW; ow++) {
                int64_t hs, he, ws, we;
                ACC div;
                if (!LOCAL(avg_window)(p, oh, ow, &hs, &he, &ws, &we, &div)) continue;
                T v = (T)(gy[q * OHW + oh * p->OW + ow] / div);
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++) gxp[ih * p->W + iw] += v;
            }
    }
}

void FN(adaptive_avgpool2d)(const T *x, T *y, int64_t H, int64_t W, int64_t OH, int64_t OW,
                            int64_t planes) {
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * H * W > 16384) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        const T *xp = x + q * H * W;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * H / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * W / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
                ACC s = 0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * W + iw];
                y[(q * OH + oh) * OW + ow] = (T)(s / (ACC)((h1 - h0) * (w1 - w0)));
            }
        }
    }
}

void FN(adaptive_avgpool2d_bwd)(const T *gy, T *gx, int64_t H, int64_t W, int64_t OH,
                                int64_t OW, int64_t planes) {
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * H * W > 16384) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        T *gxp = gx + q * H * W;
        memset(gxp, 0, sizeof(T) * (size_t)(H * W));
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * H / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * W / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
                T v = (T)(gy[(q * OH + oh) * OW + ow] / (ACC)((h1 - h0) * (w1 - w0)));
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) gxp[ih * W + iw] += v;
            }
        }
    }
}

void FN(global_avgpool2d)(const T *x, T *y, int64_t hw, int64_t planes) {
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (planes * hw > 32768) schedule(static)
    for (int64_t q = 0; q < planes; q++) {
        const T *xp = x + q * hw;
        ACC s = 0;
        for (int64_t i = 0; i < hw; i++) s += xp[i];
        y[q] = hw ? (T)(s / (ACC)hw) : (T)NAN;
    }
}

#undef FN
#undef LOCAL
#undef KN_CAT
#undef KN_CAT2
