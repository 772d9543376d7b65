/*
 * norm_ref.c - reference kernels for softmax/log_softmax, layer/group/batch normalisation and
 * their backward passes. Plain serial loops, double accumulation, libm exp/log: the ground truth
 * that the fast kernels in ops/norm.c are tested against. Formulas follow PyTorch's
 * torch.nn.functional pages (softmax, log_softmax, layer_norm, group_norm, batch_norm).
 *
 * Not fast, not parallel. dt is KN_F32 or KN_F64; every buffer is contiguous (see norm_impl.h).
 */
#include <math.h>

#include "ops/norm_impl.h"

static inline double ld(kn_dtype dt, const void *p, int64_t i) {
    return dt == KN_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void st(kn_dtype dt, void *p, int64_t i, double v) {
    if (dt == KN_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* x, y: (O, D, I) */
void kn__softmax_ref(kn_dtype dt, const void *x, void *y, int64_t O, int64_t D, int64_t I,
                     bool lg) {
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            int64_t base = o * D * I + i;
            double m = -INFINITY;
            for (int64_t d = 0; d < D; d++) {
                double v = ld(dt, x, base + d * I);
                if (v > m || isnan(v)) m = v;
                if (isnan(m)) break;
            }
            if (isinf(m)) m = 0; /* all -inf (or an +inf): no shift, let exp/log decide */
            double s = 0;
            for (int64_t d = 0; d < D; d++) s += exp(ld(dt, x, base + d * I) - m);
            double ls = m + log(s);
            for (int64_t d = 0; d < D; d++) {
                double v = ld(dt, x, base + d * I);
                st(dt, y, base + d * I, lg ? v - ls : exp(v - m) / s);
            }
        }
}

void kn__softmax_bw_ref(kn_dtype dt, const void *g, const void *y, void *gx, int64_t O, int64_t D,
                        int64_t I, bool lg) {
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            int64_t base = o * D * I + i;
            double s = 0;
            for (int64_t d = 0; d < D; d++) {
                int64_t k = base + d * I;
                s += lg ? ld(dt, g, k) : ld(dt, g, k) * ld(dt, y, k);
            }
            for (int64_t d = 0; d < D; d++) {
                int64_t k = base + d * I;
                double gv = ld(dt, g, k), yv = ld(dt, y, k);
                st(dt, gx, k, lg ? gv - exp(yv) * s : yv * (gv - s));
            }
        }
}

/* mean and biased variance of n elements of p (two passes) */
static void stats(kn_dtype dt, const void *p, int64_t off, int64_t n, double *mean, double *var) {
    double s = 0;
    for (int64_t k = 0; k < n; k++) s += ld(dt, p, off + k);
    double m = n ? s / (double)n : NAN;
    double q = 0;
    for (int64_t k = 0; k < n; k++) {
        double d = ld(dt, p, off + k) - m;
        q += d * d;
    }
    *mean = m;
    *var = n ? q / (double)n : NAN;
}

void kn__layer_norm_ref(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                        void *mean, void *rstd, int64_t R, int64_t M, double eps) {
    for (int64_t r = 0; r < R; r++) {
        double m, v;
        stats(dt, x, r * M, M, &m, &v);
        double rs = 1.0 / sqrt(v + eps);
        st(dt, mean, r, m);
        st(dt, rstd, r, rs);
        for (int64_t j = 0; j < M; j++) {
            double t = (ld(dt, x, r * M + j) - m) * rs;
            if (w) t *= ld(dt, w, j);
            if (b) t += ld(dt, b, j);
            st(dt, y, r * M + j, t);
        }
    }
}

void kn__layer_norm_bw_ref(kn_dtype dt, const void *g, const void *x, const void *mean,
                           const void *rstd, const void *gmean, const void *grstd, const void *w,
                           void *gx, void *gw, void *gb, int64_t R, int64_t M) {
    for (int64_t j = 0; j < M; j++) {
        if (gw) st(dt, gw, j, 0);
        if (gb) st(dt, gb, j, 0);
    }
    for (int64_t r = 0; r < R; r++) {
        double m = ld(dt, mean, r), rs = ld(dt, rstd, r);
        double a = 0, bsum = 0;
        for (int64_t j = 0; j < M; j++) {
            int64_t k = r * M + j;
            double gv = ld(dt, g, k) * (w ? ld(dt, w, j) : 1.0);
            double xh = (ld(dt, x, k) - m) * rs;
            a += gv;
            bsum += gv * xh;
            if (gw) st(dt, gw, j, ld(dt, gw, j) + ld(dt, g, k) * xh);
            if (gb) st(dt, gb, j, ld(dt, gb, j) + ld(dt, g, k));
        }
        if (!gx) continue;
        double gm = gmean ? ld(dt, gmean, r) : 0, gr = grstd ? ld(dt, grstd, r) : 0;
        for (int64_t j = 0; j < M; j++) {
            int64_t k = r * M + j;
            double gv = ld(dt, g, k) * (w ? ld(dt, w, j) : 1.0);
            double xh = (ld(dt, x, k) - m) * rs;
            double v = rs * (gv - a / (double)M - xh * bsum / (double)M);
            v += gm / (double)M - gr * rs * rs * xh / (double)M;
            st(dt, gx, k, v);
        }
    }
}

void kn__group_norm_ref(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                        void *mean, void *rstd, int64_t N, int64_t C, int64_t S, int64_t G,
                        double eps) {
    int64_t cg = C / G;
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            int64_t off = (n * C + gi * cg) * S;
            double m, v;
            stats(dt, x, off, cg * S, &m, &v);
            double rs = 1.0 / sqrt(v + eps);
            st(dt, mean, n * G + gi, m);
            st(dt, rstd, n * G + gi, rs);
            for (int64_t c = gi * cg; c < (gi + 1) * cg; c++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t k = (n * C + c) * S + s;
                    double t = (ld(dt, x, k) - m) * rs;
                    if (w) t *= ld(dt, w, c);
                    if (b) t += ld(dt, b, c);
                    st(dt, y, k, t);
                }
        }
}

void kn__batch_stats_ref(kn_dtype dt, const void *x, double *mean, double *var, int64_t N,
                         int64_t C, int64_t S) {
    double cnt = (double)N * (double)S;
    for (int64_t c = 0; c < C; c++) {
        double s = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < S; k++) s += ld(dt, x, (n * C + c) * S + k);
        double m = s / cnt, q = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < S; k++) {
                double d = ld(dt, x, (n * C + c) * S + k) - m;
                q += d * d;
            }
        mean[c] = m;
        var[c] = q / cnt;
    }
}

void kn__channel_affine_ref(kn_dtype dt, const void *x, void *y, const double *a,
                            const double *s, int64_t N, int64_t C, int64_t S) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t k = 0; k < S; k++) {
                int64_t i = (n * C + c) * S + k;
                st(dt, y, i, ld(dt, x, i) * a[c] + s[c]);
            }
}

void kn__batch_norm_bw_ref(kn_dtype dt, const void *g, const void *x, const void *mean,
                           const void *rstd, const void *gmean, const void *grstd, const void *w,
                           void *gx, void *gw, void *gb, int64_t N, int64_t C, int64_t S,
                           bool training) {
    double cnt = (double)N * (double)S;
    for (int64_t c = 0; c < C; c++) {
        double m = ld(dt, mean, c), rs = ld(dt, rstd, c), wc = w ? ld(dt, w, c) : 1.0;
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < S; k++) {
                int64_t i = (n * C + c) * S + k;
                sg += ld(dt, g, i);
                sgx += ld(dt, g, i) * (ld(dt, x, i) - m) * rs;
            }
        if (gw) st(dt, gw, c, sgx);
        if (gb) st(dt, gb, c, sg);
        if (!gx) continue;
        double gm = training && gmean ? ld(dt, gmean, c) : 0;
        double gr = training && grstd ? ld(dt, grstd, c) : 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < S; k++) {
                int64_t i = (n * C + c) * S + k;
                double gv = ld(dt, g, i), xh = (ld(dt, x, i) - m) * rs;
                double v;
                if (training)
                    v = wc * rs * (gv - sg / cnt - xh * sgx / cnt) + gm / cnt -
                        gr * rs * rs * xh / cnt;
                else
                    v = gv * wc * rs;
                st(dt, gx, i, v);
            }
    }
}
