/*
 * norm_impl.h - internals shared by the normalisation ops (norm.c), the statistical reductions
 * (stats.c) and their reference kernels (kernels/ref/norm_ref.c).
 *
 * Holds: a branch-free expf that GCC vectorizes (NaN in, NaN out), chunked f32 sums that keep
 * vector speed but add the chunk totals in double, the target_clones macro, and the reference
 * kernels' declarations. Every kernel here takes contiguous buffers; strides are resolved by the
 * callers (kn__contig).
 *
 * Layout names used throughout: a tensor reduced along one axis is viewed as (O, D, I): O outer
 * rows, D the reduced axis, I the inner (trailing) elements; I == 1 means the axis is the last.
 */
#ifndef KILN_NORM_IMPL_H
#define KILN_NORM_IMPL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/vmath.h"
#include "ops/op_impl.h"

/* Runtime dispatch for the hot per-row kernels (the build has no -march). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define KN_NRM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KN_NRM_CLONES
#endif

/* the shared vectorised exp (src/kernels/vmath.h) */
#define kn__nrm_expf kn__expf

/* ---- chunked sums: vector float partials over 1024 elements, chunk totals added in double, so
 * long rows keep ~1e-7 relative accuracy. The order is fixed by n alone. ---- */
#define KN_NRM_CHUNK 1024
static inline double kn__nrm_sum_f32(const float *x, int64_t n) {
    double tot = 0;
    for (int64_t i0 = 0; i0 < n; i0 += KN_NRM_CHUNK) {
        int64_t e = n - i0 < KN_NRM_CHUNK ? n : i0 + KN_NRM_CHUNK;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++)
            s += x[i];
        tot += s;
    }
    return tot;
}
/* sum((x - m)^2) */
static inline double kn__nrm_sqdev_f32(const float *x, int64_t n, float m) {
    double tot = 0;
    for (int64_t i0 = 0; i0 < n; i0 += KN_NRM_CHUNK) {
        int64_t e = n - i0 < KN_NRM_CHUNK ? n : i0 + KN_NRM_CHUNK;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++) {
            float d = x[i] - m;
            s += d * d;
        }
        tot += s;
    }
    return tot;
}
static inline double kn__nrm_sum_f64(const double *x, int64_t n) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}
static inline double kn__nrm_sqdev_f64(const double *x, int64_t n, double m) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - m;
        s += d * d;
    }
    return s;
}

/* Parallel loops: OpenMP over independent rows/channels only; every output element is computed by
 * one thread in a fixed order, so results never depend on the thread count. */
#define KN_NRM_PAR_MIN 32768 /* elements of work below which a loop stays serial */

/* Runs a multi-output op and keeps output 0 (and output 1 into *second when second != NULL);
 * the other outputs are dropped through a private scope, so this works inside and outside user
 * scopes. Returns output 0 or NULL with the error set. */
static inline kn_tensor *kn__nrm_run_first(const kn_opdef *op, kn_tensor *const *in, int nin,
                                           const kn_attrs *a, kn_tensor **second) {
    kn_tensor *out[KN_MAX_OUTS] = {0};
    kn_scope s = kn_scope_begin();
    int n = kn__op_run(op, in, nin, a, out, KN_MAX_OUTS);
    kn_tensor *y = n > 0 ? kn_keep(out[0]) : NULL;
    if (second) *second = y && n > 1 ? kn_keep(out[1]) : NULL;
    kn_scope_end(s);
    return y;
}

/* ---- reference kernels (kernels/ref/norm_ref.c): plain loops, double accumulation, libm exp.
 * dt is KN_F32 or KN_F64; all buffers contiguous, of that dtype unless stated. ---- */
/* y = softmax(x) (or log_softmax when log) along D of an (O, D, I) buffer. */
void kn__softmax_ref(kn_dtype dt, const void *x, void *y, int64_t O, int64_t D, int64_t I, bool lg);
/* gx from gy and the saved output y: softmax: y*(g - sum(g*y)); log: g - exp(y)*sum(g). */
void kn__softmax_bw_ref(kn_dtype dt, const void *g, const void *y, void *gx, int64_t O, int64_t D,
                        int64_t I, bool lg);
/* Rows of M: y = (x - mean) * rstd * w + b (w, b of M or NULL); mean/rstd of R. */
void kn__layer_norm_ref(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                        void *mean, void *rstd, int64_t R, int64_t M, double eps);
/* gmean/grstd (R, may be NULL = zero) are gradients reaching the saved mean/rstd outputs.
 * gx, gw, gb may be NULL when not wanted. */
void kn__layer_norm_bw_ref(kn_dtype dt, const void *g, const void *x, const void *mean,
                           const void *rstd, const void *gmean, const void *grstd, const void *w,
                           void *gx, void *gw, void *gb, int64_t R, int64_t M);
/* x (N, C, S); groups G; mean/rstd (N, G). */
void kn__group_norm_ref(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                        void *mean, void *rstd, int64_t N, int64_t C, int64_t S, int64_t G,
                        double eps);
/* Per-channel batch statistics of x (N, C, S): mean[c], biased var[c] (double arrays). */
void kn__batch_stats_ref(kn_dtype dt, const void *x, double *mean, double *var, int64_t N,
                         int64_t C, int64_t S);
/* y = x * a[c] + s[c] (double coefficient arrays of C). */
void kn__channel_affine_ref(kn_dtype dt, const void *x, void *y, const double *a, const double *s,
                            int64_t N, int64_t C, int64_t S);
/* batch_norm backward. training: full formula with gmean/grstd (C, may be NULL); eval: g*w*rstd.
 * gx, gw, gb may be NULL. */
void kn__batch_norm_bw_ref(kn_dtype dt, const void *g, const void *x, const void *mean,
                           const void *rstd, const void *gmean, const void *grstd, const void *w,
                           void *gx, void *gw, void *gb, int64_t N, int64_t C, int64_t S,
                           bool training);

#endif
