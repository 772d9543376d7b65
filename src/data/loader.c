/*
 * loader.c - mini-batches from in-memory tensors: shuffle, drop_last, normalise, prefetch.
 *
 * Order: epoch e visits the samples in a permutation that depends only on (seed, e): a local
 * splitmix64 stream seeded from both drives an unbiased Fisher-Yates shuffle (Lemire's bounded
 * draw). The global kiln RNG is never touched, so the model's random stream (init, dropout) does
 * not depend on the data order, and resuming at epoch e (kn_loader_set_epoch) reproduces it.
 * Without shuffle, the order is 0..N-1.
 *
 * Batches: x rows are gathered and converted in one pass per row: to f32 as
 * x * (scale/std) + (-mean/std) (scale 0 -> 1, std 0 -> 1), a loop GCC vectorises. With the
 * identity transform (scale 0 or 1, mean 0, std 0 or 1) an f32 x is memcpy'd, and an integer or
 * bool x keeps its dtype (token ids stay i64); other float dtypes are cast to f32. add_channel_dim
 * inserts a size-1 axis after the batch axis. y rows are gathered unchanged (labels i64 stay i64).
 *
 * Prefetch: one worker thread builds the batch after the one the caller holds (double
 * buffering: at most one batch ahead) into tensors from kn__tensor_alloc, which belong to no
 * scope; kn_loader_next hands them to the caller's current scope (scopes are thread-local, so the
 * worker never creates scope-owned tensors). Errors on the worker travel back with their message.
 * The worker only runs on a spare core: while kiln's compute threads take every online CPU
 * (kn_set_num_threads), a woken worker would preempt one of them and stall its team at the next
 * barrier (LeNet training on 2 cores: 89-92k -> 94k samples/s compiled without it), so batches
 * are then built in the caller, as they are when the worker has not started the one asked for.
 * Every batch is a pure function of (epoch, batch index), so results are identical either way.
 * kn_loader_free stops and joins the worker at any point of an epoch.
 *
 * Epochs: next() returns 0 once after the last batch; the epoch counter then already names the
 * following epoch, whose first batch the next call returns.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_impl.h"
#include "kiln/data.h"

typedef struct {
    int64_t *perm; /* permutation of the epoch perm_epoch (shuffle only) */
    int64_t perm_epoch;
} builder;

typedef struct {
    bool full;
    uint64_t gen;
    int64_t epoch, batch;
    kn_tensor *x, *y;
    kn_status st;
    char msg[512];
} slot;

struct kn_loader {
    kn_tensor *x, *y; /* contiguous, owned references */
    kn_loader_opts o;
    int64_t n, nb;     /* samples, batches per epoch */
    size_t xrow, yrow; /* elements per sample */
    kn_dtype xout;     /* batch dtype of x */
    bool convert;      /* x goes through the f32 transform */
    float a, b;        /* out = x * a + b */
    int xnd, ynd;
    int64_t xshape[KN_MAX_DIMS], yshape[KN_MAX_DIMS]; /* batch shapes; [0] set per batch */
    int64_t epoch, pos;                               /* the caller's cursor */
    builder bd;  /* the worker's (or the caller's when not threaded) */
    builder bdc; /* the caller's, for batches it builds itself when threaded */
    /* prefetch */
    bool threaded, stop;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen; /* bumped by set_epoch: stale builds are dropped */
    bool job_pending;
    bool building; /* the worker has taken a job and not delivered it yet */
    int64_t job_epoch, job_batch;
    slot s;
};

/* ---- order ---- */

static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, range), unbiased (Lemire 2019). */
static uint64_t bounded(uint64_t *s, uint64_t range) {
    __uint128_t m = (__uint128_t)sm64(s) * range;
    uint64_t lo = (uint64_t)m;
    if (lo < range) {
        uint64_t thresh = -range % range;
        while (lo < thresh) {
            m = (__uint128_t)sm64(s) * range;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

static void make_perm(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
    uint64_t a = seed, b = (uint64_t)epoch ^ 0x5851F42D4C957F2Dull;
    uint64_t st = sm64(&a) ^ (sm64(&b) * 0xD1B54A32D192ED03ull);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bounded(&st, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- batch assembly ---- */

/* One row of x (n elements of dtype dt) -> f32 with out = v * a + b. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void
convert_row(float *restrict d, const void *restrict src, kn_dtype dt, size_t n, float a, float b) {
    switch (dt) {
    case KN_U8: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = (float)s[i] * a + b;
        break;
    }
    case KN_F32: {
        const float *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = s[i] * a + b;
        break;
    }
    case KN_I8: {
        const int8_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = (float)s[i] * a + b;
        break;
    }
    case KN_BOOL: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = (float)(s[i] != 0) * a + b;
        break;
    }
    case KN_I32: {
        const int32_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = (float)s[i] * a + b;
        break;
    }
    case KN_I64: {
        const int64_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = (float)s[i] * a + b;
        break;
    }
    case KN_F64: {
        const double *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = (float)s[i] * a + b;
        break;
    }
    case KN_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = kn__f16_to_f32(s[i]) * a + b;
        break;
    }
    case KN_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = kn__bf16_to_f32(s[i]) * a + b;
        break;
    }
    default: break;
    }
}

static void gather(char *dst, const char *src, size_t rowbytes, const int64_t *idx, int64_t start,
                   int64_t cnt) {
    for (int64_t i = 0; i < cnt; i++) {
        int64_t k = idx ? idx[start + i] : start + i;
        if (idx && i + 2 < cnt) {
            const char *nx = src + (size_t)idx[start + i + 2] * rowbytes;
            for (size_t off = 0; off < rowbytes && off < 8192; off += 64)
                __builtin_prefetch(nx + off);
        }
        memcpy(dst + (size_t)i * rowbytes, src + (size_t)k * rowbytes, rowbytes);
    }
}

/* Builds batch `batch` of epoch `epoch` into fresh unscoped tensors. Pure in (epoch, batch). */
static kn_status build(kn_loader *l, builder *bd, int64_t epoch, int64_t batch, kn_tensor **ox,
                       kn_tensor **oy) {
    *ox = *oy = NULL;
    const int64_t *idx = NULL;
    if (l->o.shuffle) {
        if (!bd->perm) {
            bd->perm = kn__malloc(sizeof(int64_t) * (size_t)(l->n ? l->n : 1));
            if (!bd->perm) return kn_last_status();
            bd->perm_epoch = -1;
        }
        if (bd->perm_epoch != epoch) {
            make_perm(bd->perm, l->n, l->o.seed, epoch);
            bd->perm_epoch = epoch;
        }
        idx = bd->perm;
    }
    int64_t start = batch * l->o.batch_size;
    int64_t cnt = l->n - start < l->o.batch_size ? l->n - start : l->o.batch_size;
    int64_t xs[KN_MAX_DIMS], ys[KN_MAX_DIMS];
    memcpy(xs, l->xshape, sizeof xs);
    xs[0] = cnt;
    kn_tensor *tx = kn__tensor_alloc(l->xout, l->xnd, xs), *ty = NULL;
    if (!tx) return kn_last_status();
    const char *xsrc = kn__ptr(l->x);
    size_t xesz = kn_dtype_size(l->x->dtype);
    if (l->convert) {
        float *d = (float *)kn__ptr(tx);
        size_t rowbytes = l->xrow * xesz;
        for (int64_t i = 0; i < cnt; i++) {
            int64_t k = idx ? idx[start + i] : start + i;
            if (idx && i + 2 < cnt) { /* shuffled rows are cache misses: fetch ahead */
                const char *nx = xsrc + (size_t)idx[start + i + 2] * rowbytes;
                for (size_t off = 0; off < rowbytes && off < 8192; off += 64)
                    __builtin_prefetch(nx + off);
            }
            convert_row(d + (size_t)i * l->xrow, xsrc + (size_t)k * l->xrow * xesz, l->x->dtype,
                        l->xrow, l->a, l->b);
        }
    } else {
        gather(kn__ptr(tx), xsrc, l->xrow * xesz, idx, start, cnt);
    }
    if (l->y) {
        memcpy(ys, l->yshape, sizeof ys);
        ys[0] = cnt;
        ty = kn__tensor_alloc(l->y->dtype, l->ynd, ys);
        if (!ty) {
            kn_tensor_free(tx);
            return kn_last_status();
        }
        gather(kn__ptr(ty), kn__ptr(l->y), l->yrow * kn_dtype_size(l->y->dtype), idx, start, cnt);
    }
    *ox = tx;
    *oy = ty;
    return KN_OK;
}

/* ---- prefetch worker ---- */

static void queue_after(kn_loader *l, int64_t epoch, int64_t batch) { /* mu held */
    if (l->nb == 0) return;
    if (batch + 1 < l->nb) {
        l->job_epoch = epoch;
        l->job_batch = batch + 1;
    } else {
        l->job_epoch = epoch + 1;
        l->job_batch = 0;
    }
    l->job_pending = true;
    pthread_cond_broadcast(&l->cv);
}

static void *worker(void *arg) {
    kn_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        if (l->s.full || !l->job_pending) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        int64_t e = l->job_epoch, b = l->job_batch;
        uint64_t g = l->gen;
        l->job_pending = false;
        l->building = true;
        pthread_mutex_unlock(&l->mu);

        kn_tensor *tx, *ty;
        kn_status st = build(l, &l->bd, e, b, &tx, &ty);

        pthread_mutex_lock(&l->mu);
        l->building = false;
        pthread_cond_broadcast(&l->cv);
        if (g != l->gen || l->stop || l->s.full) { /* stale (set_epoch) or shutting down */
            kn_tensor_free(tx);
            kn_tensor_free(ty);
            continue;
        }
        l->s.full = true;
        l->s.gen = g;
        l->s.epoch = e;
        l->s.batch = b;
        l->s.x = tx;
        l->s.y = ty;
        l->s.st = st;
        l->s.msg[0] = 0;
        if (st) snprintf(l->s.msg, sizeof l->s.msg, "%s", kn_last_error());
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void slot_clear(slot *s) {
    kn_tensor_free(s->x);
    kn_tensor_free(s->y);
    s->x = s->y = NULL;
    s->full = false;
}

/* ---- public ---- */

kn_loader *kn_loader_new(kn_tensor *x, kn_tensor *y, const kn_loader_opts *o) {
    if (!x || !o) return kn__errp(KN_EINVAL, "kn_loader_new: %s is NULL", !x ? "x" : "opts");
    if (o->batch_size < 1)
        return kn__errp(KN_EINVAL, "kn_loader_new: batch_size %lld (must be >= 1)",
                        (long long)o->batch_size);
    char sa[96], sb[96];
    if (x->ndim < 1)
        return kn__errp(KN_ESHAPE, "kn_loader_new: x must be (N, ...), got a 0-d tensor");
    if (y && (y->ndim < 1 || y->shape[0] != x->shape[0]))
        return kn__errp(KN_ESHAPE, "kn_loader_new: x %s and y %s differ in the sample count",
                        kn__shape_str(sa, sizeof sa, x->ndim, x->shape),
                        kn__shape_str(sb, sizeof sb, y->ndim, y->shape));
    if (o->add_channel_dim && x->ndim + 1 > KN_MAX_DIMS)
        return kn__errp(KN_ELIMIT, "kn_loader_new: add_channel_dim on a %d-d x exceeds %d dims",
                        x->ndim, KN_MAX_DIMS);
    kn_loader *l = kn__calloc(1, sizeof *l);
    if (!l) return NULL;
    l->o = *o;
    l->x = kn__contig(x);
    l->y = y ? kn__contig(y) : NULL;
    if (!l->x || (y && !l->y)) {
        kn_tensor_free(l->x);
        kn_tensor_free(l->y);
        kn__free(l);
        return NULL;
    }
    l->n = x->shape[0];
    l->nb = o->drop_last ? l->n / o->batch_size : (l->n + o->batch_size - 1) / o->batch_size;
    l->xrow = (size_t)kn__numel(x->ndim - 1, x->shape + 1);
    double scale = o->scale == 0 ? 1 : o->scale, sd = o->std == 0 ? 1 : o->std;
    bool identity = scale == 1 && o->mean == 0 && sd == 1;
    l->convert = !identity || (kn_dtype_is_float(x->dtype) && x->dtype != KN_F32);
    l->xout = l->convert ? KN_F32 : x->dtype;
    l->a = (float)(scale / sd);
    l->b = (float)(-o->mean / sd);
    l->xshape[0] = 0;
    l->xnd = 1;
    if (o->add_channel_dim) l->xshape[l->xnd++] = 1;
    for (int i = 1; i < x->ndim; i++)
        l->xshape[l->xnd++] = x->shape[i];
    if (l->y) {
        l->ynd = y->ndim;
        memcpy(l->yshape, y->shape, sizeof(int64_t) * (size_t)y->ndim);
        l->yrow = (size_t)kn__numel(y->ndim - 1, y->shape + 1);
    }
    l->bd.perm_epoch = -1;
    l->bdc.perm_epoch = -1;
    if (o->prefetch) {
        bool mu_ok = pthread_mutex_init(&l->mu, NULL) == 0;
        bool cv_ok = mu_ok && pthread_cond_init(&l->cv, NULL) == 0;
        if (cv_ok) {
            queue_after(l, 0, -1); /* batch 0 of epoch 0 */
            if (pthread_create(&l->th, NULL, worker, l) == 0) {
                l->threaded = true;
            } else { /* no thread: fall back to building in the caller; same results */
                l->job_pending = false;
            }
        }
        if (!l->threaded) {
            if (cv_ok) pthread_cond_destroy(&l->cv);
            if (mu_ok) pthread_mutex_destroy(&l->mu);
        }
    }
    return l;
}

int64_t kn_loader_num_batches(const kn_loader *l) {
    return l ? l->nb : 0;
}

int64_t kn_loader_epoch(const kn_loader *l) {
    return l ? l->epoch : 0;
}

int kn_loader_next(kn_loader *l, kn_tensor **x, kn_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    if (!l || !x) {
        kn__err(KN_EINVAL, "kn_loader_next: %s is NULL", !l ? "loader" : "x");
        return -1;
    }
    if (l->pos >= l->nb) { /* end of the epoch; the job for the next one is already queued */
        l->epoch++;
        l->pos = 0;
        return 0;
    }
    kn_tensor *tx = NULL, *ty = NULL;
    const bool spare = l->threaded && kn__online_cpus() > kn__threads();
    bool inline_build = !l->threaded;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        while (!l->s.full && l->building)
            pthread_cond_wait(&l->cv, &l->mu);
        inline_build = !l->s.full; /* the worker has not started it (or has no core): build here */
    }
    if (l->threaded && inline_build) {
        l->job_pending = false;
        if (spare) queue_after(l, l->epoch, l->pos);
        pthread_mutex_unlock(&l->mu);
        if (build(l, &l->bdc, l->epoch, l->pos, &tx, &ty)) return -1;
    } else if (l->threaded) {
        slot s = l->s;
        l->s.full = false;
        l->s.x = l->s.y = NULL;
        if (s.st == KN_OK && (s.epoch != l->epoch || s.batch != l->pos)) {
            kn_tensor_free(s.x);
            kn_tensor_free(s.y);
            s.st = KN_EINTERNAL;
            snprintf(s.msg, sizeof s.msg,
                     "kn_loader_next: prefetched batch %lld of epoch %lld, "
                     "expected %lld of %lld",
                     (long long)s.batch, (long long)s.epoch, (long long)l->pos,
                     (long long)l->epoch);
        }
        if (s.st != KN_OK) { /* retry this batch on the next call */
            l->job_epoch = l->epoch;
            l->job_batch = l->pos;
            l->job_pending = true;
            pthread_cond_broadcast(&l->cv);
            pthread_mutex_unlock(&l->mu);
            kn__err(s.st, "%s", s.msg);
            return -1;
        }
        if (spare) queue_after(l, l->epoch, l->pos);
        pthread_mutex_unlock(&l->mu);
        tx = s.x;
        ty = s.y;
    } else if (build(l, &l->bd, l->epoch, l->pos, &tx, &ty)) {
        return -1;
    }
    l->pos++;
    if (!y) {
        kn_tensor_free(ty);
        ty = NULL;
    }
    /* adopt into the caller's scope (this thread's); adopt frees the tensor if it cannot */
    *x = kn__scope_adopt(tx);
    if (ty) *y = kn__scope_adopt(ty);
    if (!*x || (ty && !*y)) {
        *x = NULL;
        if (y) *y = NULL;
        kn__err(KN_ENOMEM, "kn_loader_next: out of memory");
        return -1;
    }
    return 1;
}

kn_status kn_loader_set_epoch(kn_loader *l, int64_t epoch) {
    if (!l) return kn__err(KN_EINVAL, "kn_loader_set_epoch: loader is NULL");
    if (epoch < 0)
        return kn__err(KN_EINVAL, "kn_loader_set_epoch: epoch %lld (must be >= 0)",
                       (long long)epoch);
    l->epoch = epoch;
    l->pos = 0;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        l->gen++;
        slot_clear(&l->s);
        queue_after(l, epoch, -1);
        pthread_mutex_unlock(&l->mu);
    }
    return KN_OK;
}

void kn_loader_free(kn_loader *l) {
    if (!l) return;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->th, NULL);
        slot_clear(&l->s);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
    }
    kn__free(l->bd.perm);
    kn__free(l->bdc.perm);
    kn_tensor_free(l->x);
    kn_tensor_free(l->y);
    kn__free(l);
}
