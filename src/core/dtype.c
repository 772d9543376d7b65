/*
 * dtype.c - the dtype table and scalar conversions (including f16/bf16 bit patterns).
 * bf16 rounds to nearest even; f16 handles subnormals, infinities and NaN.
 */
#include <math.h>

#include "core/core_impl.h"

static const struct {
    const char *name;
    size_t size;
} DT[KN_NDTYPES] = {
    [KN_F32] = {"float32", 4},   [KN_F64] = {"float64", 8}, [KN_F16] = {"float16", 2},
    [KN_BF16] = {"bfloat16", 2}, [KN_I8] = {"int8", 1},     [KN_U8] = {"uint8", 1},
    [KN_I32] = {"int32", 4},     [KN_I64] = {"int64", 8},   [KN_BOOL] = {"bool", 1},
};

const char *kn_dtype_name(kn_dtype dt) {
    return (unsigned)dt < KN_NDTYPES ? DT[dt].name : "?";
}
size_t kn_dtype_size(kn_dtype dt) {
    return (unsigned)dt < KN_NDTYPES ? DT[dt].size : 0;
}
bool kn_dtype_is_float(kn_dtype dt) {
    return dt == KN_F32 || dt == KN_F64 || dt == KN_F16 || dt == KN_BF16;
}

float kn__bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t kn__f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* nearest even */
    return (uint16_t)(u >> 16);
}

float kn__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal */
            float f = ldexpf((float)man, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t kn__f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00u;
    if (a >= 65520.0f) return sign | 0x7c00u; /* overflow -> inf */
    if (a < 6.103515625e-05f) {               /* subnormal or zero: round to multiple of 2^-24 */
        float q = nearbyintf(a * 16777216.0f);
        return sign | (uint16_t)q;
    }
    uint32_t au;
    memcpy(&au, &a, 4);
    uint32_t exp = (au >> 23) - 112, man = au & 0x7fffffu;
    uint32_t r = (exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return sign | (uint16_t)r;
}

double kn__load_f64(kn_dtype dt, const void *p) {
    switch (dt) {
    case KN_F32: return *(const float *)p;
    case KN_F64: return *(const double *)p;
    case KN_F16: return kn__f16_to_f32(*(const uint16_t *)p);
    case KN_BF16: return kn__bf16_to_f32(*(const uint16_t *)p);
    case KN_I8: return *(const int8_t *)p;
    case KN_U8: return *(const uint8_t *)p;
    case KN_I32: return *(const int32_t *)p;
    case KN_I64: return (double)*(const int64_t *)p;
    case KN_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    default: return NAN;
    }
}

/* Float -> integer conversions truncate toward zero and saturate (NaN -> 0), so hostile values
 * never hit C's undefined float->int conversion. */
static int64_t sat_i64(double v, double lo, double hi) {
    if (isnan(v)) return 0;
    if (v <= lo) return (int64_t)lo;
    if (v >= hi) return (int64_t)hi;
    return (int64_t)v;
}

void kn__store_f64(kn_dtype dt, void *p, double v) {
    switch (dt) {
    case KN_F32: *(float *)p = (float)v; break;
    case KN_F64: *(double *)p = v; break;
    case KN_F16: *(uint16_t *)p = kn__f32_to_f16((float)v); break;
    case KN_BF16: *(uint16_t *)p = kn__f32_to_bf16((float)v); break;
    case KN_I8: *(int8_t *)p = (int8_t)sat_i64(v, -128, 127); break;
    case KN_U8: *(uint8_t *)p = (uint8_t)sat_i64(v, 0, 255); break;
    case KN_I32: *(int32_t *)p = (int32_t)sat_i64(v, -2147483648.0, 2147483647.0); break;
    case KN_I64: *(int64_t *)p = sat_i64(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case KN_BOOL: *(uint8_t *)p = v != 0.0; break;
    default: break;
    }
}

void kn__bswap(void *data, size_t n, size_t esz) {
    if (esz == 2) {
        uint16_t *p = data;
        for (size_t i = 0; i < n; i++)
            p[i] = __builtin_bswap16(p[i]);
    } else if (esz == 4) {
        uint32_t *p = data;
        for (size_t i = 0; i < n; i++)
            p[i] = __builtin_bswap32(p[i]);
    } else if (esz == 8) {
        uint64_t *p = data;
        for (size_t i = 0; i < n; i++)
            p[i] = __builtin_bswap64(p[i]);
    }
}
