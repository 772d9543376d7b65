/*
 * vmath.h - branch-free f32 math that GCC auto-vectorizes (exp, log, tanh, sigmoid, erf).
 * Used by the fast f32 kernels; the reference kernels use libm. Accuracy: exp/log within ~2 ULP,
 * tanh/sigmoid within ~3e-7 relative, erf within 1.5e-7 absolute (Abramowitz-Stegun 7.1.26).
 * Needs -fno-trapping-math (set by CMake) for floorf to vectorise.
 * Cephes-style range reduction and polynomials (the algorithms are textbook; no code copied).
 */
#ifndef KILN_VMATH_H
#define KILN_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float kn__bits2f(int32_t i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline int32_t kn__f2bits(float f) {
    int32_t i;
    memcpy(&i, &f, 4);
    return i;
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n by exponent bits
 * (n rounded with the 1.5*2^23 trick, split in two factors so 2^128 cannot overflow). NaN passes
 * through; results below ~1e-45 flush to 0. Within 1 ULP on [-104, 88.7]. */
static inline float kn__expf(float x) {
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 88.8f ? 88.8f : xc;
    float t = xc * 1.44269504088896341f + 12582912.0f;
    int32_t ni = kn__f2bits(t) - 0x4B400000;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    int32_t h = ni >> 1;
    /* unsigned shifts: for NaN input ni is garbage (the result is discarded below) */
    float res = p * kn__bits2f((int32_t)((uint32_t)(h + 127) << 23)) *
                kn__bits2f((int32_t)((uint32_t)(ni - h + 127) << 23));
    return x != x ? x : res;
}

/* log(x) for normal x > 0 (x <= 0 gives -inf/NaN like libm; +inf passes through; subnormal
 * inputs are not rescaled and lose accuracy). */
static inline float kn__logf(float x) {
    int32_t bits = kn__f2bits(x);
    int32_t e = ((bits >> 23) & 0xff) - 126;
    float m = kn__bits2f((bits & 0x007fffff) | 0x3f000000); /* [0.5, 1) */
    int small = m < 0.707106781186547524f;
    e -= small;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float y = 7.0376836292E-2f;
    y = y * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f;
    y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f;
    y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f;
    y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    float r = m + y + 0.693359375f * fe;
    r = x == 0.0f ? -INFINITY : r;
    r = x < 0.0f ? NAN : r;
    r = x == INFINITY ? INFINITY : r;
    r = x != x ? x : r;
    return r;
}

static inline float kn__tanhf(float x) {
    float a = fabsf(x);
    /* small |x|: odd polynomial (Cephes tanhf) keeps relative accuracy near 0 */
    float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    float small = x + x * z * p;
    float e = kn__expf(2.0f * (a < 9.0f ? a : 9.0f));
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0 ? -big : big;
    return a < 0.625f ? small : big;
}

static inline float kn__sigmoidf(float x) {
    return 1.0f / (1.0f + kn__expf(-x));
}

static inline float kn__erff(float x) {
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * kn__expf(-a * a);
    return x < 0 ? -y : y;
}

#endif
