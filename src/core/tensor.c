/*
 * tensor.c - tensor headers, refcounted storage, creation, inspection and strided copies.
 * Views share storage; a tensor header is freed when its refcount drops to zero, the storage
 * when the last header using it is gone. Ops live in src/ops/, not here.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "core/core_impl.h"

static _Atomic long g_live;

size_t kn_live_tensors(void) {
    return (size_t)atomic_load(&g_live);
}

int64_t kn__numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

void kn__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 1 ? shape[i] : 1;
    }
}

bool kn__is_contiguous(const kn_tensor *t) {
    if (kn__numel(t->ndim, t->shape) == 0) return true; /* no element is addressed */
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

kn_status kn__check_shape(const char *who, int ndim, const int64_t *shape, kn_dtype dt) {
    if ((unsigned)dt >= KN_NDTYPES) return kn__err(KN_EDTYPE, "%s: invalid dtype %d", who, (int)dt);
    if (ndim < 0 || ndim > KN_MAX_DIMS)
        return kn__err(KN_ELIMIT, "%s: %d dims (kiln supports 0 to %d)", who, ndim, KN_MAX_DIMS);
    if (ndim > 0 && !shape) return kn__err(KN_EINVAL, "%s: shape is NULL", who);
    size_t n = kn_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return kn__err(KN_EINVAL, "%s: negative size %lld in dim %d", who, (long long)shape[i],
                           i);
        if (!kn__mul_ok(n, (size_t)shape[i], &n) || n > ((size_t)1 << 48))
            return kn__err(KN_ELIMIT, "%s: tensor of that shape is too large", who);
    }
    return KN_OK;
}

int kn__axis(const char *who, int axis, int ndim) {
    int n = ndim ? ndim : 1;
    if (axis < -n || axis >= n) {
        kn__err(KN_EINVAL, "%s: dim %d out of range for a %d-d tensor", who, axis, ndim);
        return -1;
    }
    return axis < 0 ? axis + n : axis;
}

static kn_tensor *header_new(kn_dtype dt, int ndim, const int64_t *shape) {
    kn_tensor *t = kn__calloc(1, sizeof *t);
    if (!t) return NULL;
    atomic_init(&t->refcount, 1);
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * ndim);
    kn__contiguous_strides(ndim, t->shape, t->strides);
    atomic_fetch_add(&g_live, 1);
    return t;
}

kn_tensor *kn__tensor_alloc(kn_dtype dt, int ndim, const int64_t *shape) {
    if (kn__check_shape("tensor", ndim, shape, dt)) return NULL;
    kn_tensor *t = header_new(dt, ndim, shape);
    if (!t) return NULL;
    kn_storage *s = kn__calloc(1, sizeof *s);
    size_t nbytes = (size_t)kn__numel(ndim, shape) * kn_dtype_size(dt);
    void *data = s ? kn__aligned_alloc(nbytes) : NULL;
    if (!data) {
        kn__free(s);
        kn__free(t);
        atomic_fetch_sub(&g_live, 1);
        return NULL;
    }
    atomic_init(&s->refcount, 1);
    s->data = data;
    s->nbytes = nbytes;
    t->storage = s;
    return t;
}

kn_tensor *kn__tensor_view(kn_tensor *src, int ndim, const int64_t *shape, const int64_t *strides,
                           int64_t offset) {
    kn_tensor *t = header_new(src->dtype, ndim, shape);
    if (!t) return NULL;
    if (ndim) memcpy(t->strides, strides, sizeof(int64_t) * ndim);
    t->offset = offset;
    t->storage = src->storage;
    atomic_fetch_add(&src->storage->refcount, 1);
    return t;
}

static void storage_release(kn_storage *s) {
    if (!s || atomic_fetch_sub(&s->refcount, 1) != 1) return;
    if (s->release)
        s->release(s->data, s->user);
    else if (!s->external)
        kn__aligned_free(s->data);
    kn__free(s);
}

kn_tensor *kn_tensor_retain(kn_tensor *t) {
    if (t) atomic_fetch_add(&t->refcount, 1);
    return t;
}

void kn_tensor_free(kn_tensor *t) {
    if (!t || atomic_fetch_sub(&t->refcount, 1) != 1) return;
    kn_tensor *g = t->grad;
    struct kn_node *fn = t->grad_fn_weak ? NULL : t->grad_fn;
    storage_release(t->storage);
    kn__free(t);
    atomic_fetch_sub(&g_live, 1);
    kn_tensor_free(g);
    kn__node_release(fn);
}

kn_tensor *kn__contig(kn_tensor *t) {
    if (kn__is_contiguous(t)) return kn_tensor_retain(t);
    kn_tensor *c = kn__tensor_alloc(t->dtype, t->ndim, t->shape);
    if (c) kn__copy_into(c, t);
    return c;
}

/* ---- strided copy ---- */
/* Collapses dims of src that are contiguous with each other (dst is contiguous). */
static int collapse(const kn_tensor *src, int64_t *shape, int64_t *strides) {
    int n = 0;
    for (int i = 0; i < src->ndim; i++) {
        if (src->shape[i] == 1) continue;
        if (n > 0 && strides[n - 1] == src->strides[i] * src->shape[i]) {
            shape[n - 1] *= src->shape[i];
            strides[n - 1] = src->strides[i];
        } else {
            shape[n] = src->shape[i];
            strides[n] = src->strides[i];
            n++;
        }
    }
    return n;
}

void kn__copy_into(kn_tensor *dst, const kn_tensor *src) {
    int64_t shape[KN_MAX_DIMS], strides[KN_MAX_DIMS];
    int nd = collapse(src, shape, strides);
    size_t es = kn_dtype_size(src->dtype);
    int64_t numel = kn__numel(src->ndim, src->shape);
    char *d = kn__ptr(dst);
    const char *s = kn__ptr(src);
    if (numel == 0) return;
    if (nd == 0 || (nd == 1 && strides[0] == 1)) {
        memcpy(d, s, (size_t)numel * es);
        return;
    }
    int64_t inner = shape[nd - 1], istride = strides[nd - 1];
    int64_t outer = numel / inner;
    int nth = numel > 32768 ? kn__threads() : 1;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        int64_t rem = o, off = 0;
        for (int k = nd - 2; k >= 0; k--) {
            off += (rem % shape[k]) * strides[k];
            rem /= shape[k];
        }
        char *dp = d + (size_t)(o * inner) * es;
        const char *sp = s + off * (int64_t)es;
        switch (es) {
        case 4:
            for (int64_t i = 0; i < inner; i++)
                ((uint32_t *)dp)[i] = ((const uint32_t *)sp)[i * istride];
            break;
        case 8:
            for (int64_t i = 0; i < inner; i++)
                ((uint64_t *)dp)[i] = ((const uint64_t *)sp)[i * istride];
            break;
        case 2:
            for (int64_t i = 0; i < inner; i++)
                ((uint16_t *)dp)[i] = ((const uint16_t *)sp)[i * istride];
            break;
        default:
            for (int64_t i = 0; i < inner; i++)
                dp[i] = sp[i * istride];
        }
    }
}

/* ---- creation ---- */
kn_tensor *kn_empty(kn_dtype dt, int ndim, const int64_t *shape) {
    return kn__scope_adopt(kn__tensor_alloc(dt, ndim, shape));
}

static void fill_value(kn_tensor *t, double v) {
    int64_t n = kn_tensor_numel(t);
    char *p = kn__ptr(t);
    size_t es = kn_dtype_size(t->dtype);
    if (v == 0.0) {
        memset(p, 0, (size_t)n * es);
        return;
    }
    char one[8];
    kn__store_f64(t->dtype, one, v);
    if (t->dtype == KN_F32) {
        float f = (float)v;
        for (int64_t i = 0; i < n; i++)
            ((float *)p)[i] = f;
    } else {
        for (int64_t i = 0; i < n; i++)
            memcpy(p + i * es, one, es);
    }
}

kn_tensor *kn_full(kn_dtype dt, int ndim, const int64_t *shape, double value) {
    kn_tensor *t = kn__tensor_alloc(dt, ndim, shape);
    if (!t) return NULL;
    fill_value(t, value);
    return kn__scope_adopt(t);
}
kn_tensor *kn_zeros(kn_dtype dt, int ndim, const int64_t *shape) {
    return kn_full(dt, ndim, shape, 0.0);
}
kn_tensor *kn_ones(kn_dtype dt, int ndim, const int64_t *shape) {
    return kn_full(dt, ndim, shape, 1.0);
}
kn_tensor *kn_scalar(kn_dtype dt, double value) {
    return kn_full(dt, 0, NULL, value);
}
kn_tensor *kn_full_like(const kn_tensor *t, double value) {
    if (!t) return NULL;
    return kn_full(t->dtype, t->ndim, t->shape, value);
}
kn_tensor *kn_zeros_like(const kn_tensor *t) {
    return kn_full_like(t, 0.0);
}
kn_tensor *kn_ones_like(const kn_tensor *t) {
    return kn_full_like(t, 1.0);
}

kn_tensor *kn_arange(double start, double end, double step, kn_dtype dt) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
        return kn__errp(KN_EINVAL, "arange: need finite start/end and a non-zero step");
    double cnt = ceil((end - start) / step);
    if (cnt < 0) cnt = 0;
    if (cnt > 1e12) return kn__errp(KN_ELIMIT, "arange: %.0f elements is too many", cnt);
    int64_t n = (int64_t)cnt;
    kn_tensor *t = kn__tensor_alloc(dt, 1, &n);
    if (!t) return NULL;
    size_t es = kn_dtype_size(dt);
    for (int64_t i = 0; i < n; i++)
        kn__store_f64(dt, kn__ptr(t) + i * es, start + (double)i * step);
    return kn__scope_adopt(t);
}

kn_tensor *kn_linspace(double start, double end, int64_t steps, kn_dtype dt) {
    if (steps < 0) return kn__errp(KN_EINVAL, "linspace: negative steps %lld", (long long)steps);
    kn_tensor *t = kn__tensor_alloc(dt, 1, &steps);
    if (!t) return NULL;
    size_t es = kn_dtype_size(dt);
    double step = steps > 1 ? (end - start) / (double)(steps - 1) : 0;
    /* like PyTorch: the first half counts from start, the second half back from end */
    int64_t half = steps / 2;
    for (int64_t i = 0; i < steps; i++) {
        double v = steps == 1 ? start
                   : i < half ? start + step * (double)i
                              : end - step * (double)(steps - 1 - i);
        kn__store_f64(dt, kn__ptr(t) + i * es, v);
    }
    return kn__scope_adopt(t);
}

kn_tensor *kn_eye(int64_t n, int64_t m, kn_dtype dt) {
    if (m < 0) m = n;
    int64_t shape[2] = {n, m};
    kn_tensor *t = kn__tensor_alloc(dt, 2, shape);
    if (!t) return NULL;
    fill_value(t, 0.0);
    size_t es = kn_dtype_size(dt);
    for (int64_t i = 0; i < n && i < m; i++)
        kn__store_f64(dt, kn__ptr(t) + (i * m + i) * es, 1.0);
    return kn__scope_adopt(t);
}

/* Random fills use counter-based draws (seed, base + i): deterministic for any thread count. */
static double u01(uint64_t r) {
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

kn_tensor *kn_rand(kn_dtype dt, int ndim, const int64_t *shape) {
    kn_tensor *t = kn__tensor_alloc(dt, ndim, shape);
    if (!t) return NULL;
    int64_t n = kn_tensor_numel(t);
    uint64_t seed, base = kn__rng_reserve((uint64_t)n, &seed);
    size_t es = kn_dtype_size(dt);
    for (int64_t i = 0; i < n; i++)
        kn__store_f64(dt, kn__ptr(t) + i * es, u01(kn__rng_at(seed, base + (uint64_t)i)));
    return kn__scope_adopt(t);
}

kn_tensor *kn_randn(kn_dtype dt, int ndim, const int64_t *shape) {
    kn_tensor *t = kn__tensor_alloc(dt, ndim, shape);
    if (!t) return NULL;
    int64_t n = kn_tensor_numel(t);
    uint64_t seed, base = kn__rng_reserve((uint64_t)n, &seed);
    size_t es = kn_dtype_size(dt);
    for (int64_t i = 0; i < n; i++) { /* Box-Muller from one 64-bit draw split in two */
        uint64_t r = kn__rng_at(seed, base + (uint64_t)i);
        double u1 = ((double)(r >> 40) + 1.0) / 16777217.0; /* (0,1] 24 bits */
        double u2 = (double)((r >> 8) & 0xffffffu) / 16777216.0;
        double v = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        kn__store_f64(dt, kn__ptr(t) + i * es, v);
    }
    return kn__scope_adopt(t);
}

kn_tensor *kn_randint(int64_t low, int64_t high, kn_dtype dt, int ndim, const int64_t *shape) {
    if (high <= low)
        return kn__errp(KN_EINVAL, "randint: high %lld must exceed low %lld", (long long)high,
                        (long long)low);
    kn_tensor *t = kn__tensor_alloc(dt, ndim, shape);
    if (!t) return NULL;
    int64_t n = kn_tensor_numel(t);
    uint64_t seed, base = kn__rng_reserve((uint64_t)n, &seed);
    uint64_t range = (uint64_t)(high - low);
    size_t es = kn_dtype_size(dt);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = kn__rng_at(seed, base + (uint64_t)i);
        kn__store_f64(dt, kn__ptr(t) + i * es, (double)(low + (int64_t)(r % range)));
    }
    return kn__scope_adopt(t);
}

kn_tensor *kn_from_data(kn_dtype dt, int ndim, const int64_t *shape, const void *data) {
    kn_tensor *t = kn__tensor_alloc(dt, ndim, shape);
    if (!t) return NULL;
    size_t n = (size_t)kn_tensor_numel(t) * kn_dtype_size(dt);
    if (n && !data) {
        kn_tensor_free(t);
        return kn__errp(KN_EINVAL, "from_data: data is NULL");
    }
    if (n) memcpy(t->storage->data, data, n);
    return kn__scope_adopt(t);
}

kn_tensor *kn_from_blob(kn_dtype dt, int ndim, const int64_t *shape, void *data,
                        void (*release)(void *, void *), void *user) {
    if (kn__check_shape("from_blob", ndim, shape, dt)) return NULL;
    if (!data && kn__numel(ndim, shape) > 0) return kn__errp(KN_EINVAL, "from_blob: data is NULL");
    kn_tensor *t = kn__tensor_external(dt, ndim, shape, data);
    if (t) {
        t->storage->release = release;
        t->storage->user = user;
        t->storage->external = release == NULL;
    }
    return kn__scope_adopt(t);
}

kn_tensor *kn__tensor_external(kn_dtype dt, int ndim, const int64_t *shape, void *data) {
    kn_tensor *t = header_new(dt, ndim, shape);
    kn_storage *s = t ? kn__calloc(1, sizeof *s) : NULL;
    if (!s) {
        if (t) {
            kn__free(t);
            atomic_fetch_sub(&g_live, 1);
        }
        return NULL;
    }
    atomic_init(&s->refcount, 1);
    s->data = data;
    s->nbytes = (size_t)kn__numel(ndim, shape) * kn_dtype_size(dt);
    s->external = true;
    t->storage = s;
    return t;
}

/* ---- inspection ---- */
kn_dtype kn_tensor_dtype(const kn_tensor *t) {
    return t ? t->dtype : KN_NDTYPES;
}
int kn_tensor_ndim(const kn_tensor *t) {
    return t ? t->ndim : -1;
}
const int64_t *kn_tensor_shape(const kn_tensor *t) {
    return t ? t->shape : NULL;
}
const int64_t *kn_tensor_strides(const kn_tensor *t) {
    return t ? t->strides : NULL;
}
int64_t kn_tensor_numel(const kn_tensor *t) {
    return t ? kn__numel(t->ndim, t->shape) : 0;
}
bool kn_tensor_is_contiguous(const kn_tensor *t) {
    return t && kn__is_contiguous(t);
}
int64_t kn_tensor_dim(const kn_tensor *t, int axis) {
    if (!t) return -1;
    int a = kn__axis("dim", axis, t->ndim);
    if (a < 0) return -1;
    return t->ndim ? t->shape[a] : 1;
}
void (*kn__host_read_hook)(const kn_tensor *t, const char *what);
void (*kn__host_write_hook)(const kn_tensor *t, const char *what);
#define HOST_READ(t, what)                                                                         \
    do {                                                                                           \
        if (KN_UNLIKELY(kn__host_read_hook != NULL) && (t)) kn__host_read_hook((t), (what));       \
    } while (0)

void *kn_tensor_data(kn_tensor *t) {
    HOST_READ(t, "kn_tensor_data");
    return t ? kn__ptr(t) : NULL;
}
bool kn_tensor_shares_storage(const kn_tensor *a, const kn_tensor *b) {
    return a && b && a->storage == b->storage;
}

static int64_t elem_offset(const kn_tensor *t, int64_t flat) {
    int64_t off = t->offset;
    for (int k = t->ndim - 1; k >= 0; k--) {
        off += (flat % t->shape[k]) * t->strides[k];
        flat /= t->shape[k];
    }
    return off;
}

kn_status kn_tensor_read(const kn_tensor *t, kn_dtype dt, void *buf, size_t nbytes) {
    if (!t || (!buf && nbytes)) return kn__err(KN_EINVAL, "tensor_read: NULL argument");
    HOST_READ(t, "kn_tensor_read");
    if ((unsigned)dt >= KN_NDTYPES) return kn__err(KN_EDTYPE, "tensor_read: invalid dtype");
    int64_t n = kn_tensor_numel(t);
    size_t des = kn_dtype_size(dt), ses = kn_dtype_size(t->dtype);
    if ((size_t)n * des != nbytes)
        return kn__err(KN_EINVAL, "tensor_read: buffer has %zu bytes, tensor needs %zu", nbytes,
                       (size_t)n * des);
    const char *base = t->storage->data;
    if (dt == t->dtype && kn__is_contiguous(t)) {
        if (nbytes) memcpy(buf, base + (size_t)t->offset * ses, nbytes);
        return KN_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        const char *p = base + elem_offset(t, i) * (int64_t)ses;
        if (dt == t->dtype)
            memcpy((char *)buf + i * des, p, des);
        else
            kn__store_f64(dt, (char *)buf + i * des, kn__load_f64(t->dtype, p));
    }
    return KN_OK;
}

double kn_item(const kn_tensor *t) {
    if (!t) return NAN;
    HOST_READ(t, "kn_item");
    if (kn_tensor_numel(t) != 1) {
        kn__err(KN_EINVAL, "item: tensor has %lld elements, expected 1",
                (long long)kn_tensor_numel(t));
        return NAN;
    }
    return kn__load_f64(t->dtype, (const char *)t->storage->data +
                                      elem_offset(t, 0) * (int64_t)kn_dtype_size(t->dtype));
}

double kn_tensor_get(const kn_tensor *t, const int64_t *index) {
    if (!t || (t->ndim && !index)) return NAN;
    HOST_READ(t, "kn_tensor_get");
    int64_t off = t->offset;
    for (int k = 0; k < t->ndim; k++) {
        if (index[k] < 0 || index[k] >= t->shape[k]) {
            kn__err(KN_EINVAL, "tensor_get: index %lld out of range for dim %d of size %lld",
                    (long long)index[k], k, (long long)t->shape[k]);
            return NAN;
        }
        off += index[k] * t->strides[k];
    }
    return kn__load_f64(t->dtype,
                        (const char *)t->storage->data + off * (int64_t)kn_dtype_size(t->dtype));
}
