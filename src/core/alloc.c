/*
 * alloc.c - the only malloc wrapper. Counts allocations (the graph executor's "no malloc per
 * run" test reads the counter) and can inject a failure after N calls (tests of ENOMEM paths).
 */
#include <stdlib.h>
#include <unistd.h>

#include "core/core_impl.h"

static _Atomic long g_fail_after;
static _Atomic uint64_t g_count;

void kn__alloc_fail_after(long n) {
    atomic_store(&g_fail_after, n);
}
uint64_t kn__alloc_count(void) {
    return atomic_load(&g_count);
}

static bool should_fail(void) {
    atomic_fetch_add(&g_count, 1);
    long f = atomic_load(&g_fail_after);
    if (f <= 0) return false;
    if (atomic_fetch_sub(&g_fail_after, 1) == 1) return true;
    return false;
}

void *kn__malloc(size_t n) {
    void *p = should_fail() ? NULL : malloc(n ? n : 1);
    if (!p) kn__err(KN_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *kn__calloc(size_t n, size_t sz) {
    size_t tot;
    if (!kn__mul_ok(n, sz, &tot))
        return kn__errp(KN_ELIMIT, "allocation of %zu x %zu overflows", n, sz);
    void *p = should_fail() ? NULL : calloc(tot ? tot : 1, 1);
    if (!p) kn__err(KN_ENOMEM, "out of memory allocating %zu bytes", tot);
    return p;
}

void *kn__realloc(void *old, size_t n) {
    void *p = should_fail() ? NULL : realloc(old, n ? n : 1);
    if (!p) kn__err(KN_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void kn__free(void *p) {
    free(p);
}

/* ---- tensor buffers: 64-byte aligned, large ones cached ----
 * Freshly mmapped memory costs a page fault per 4 KiB on first touch, which for a 25 MB
 * activation is more time than the op itself. Like PyTorch's CUDA caching allocator, freed
 * blocks of >= KN_CACHE_MIN bytes are kept (up to $KILN_ALLOC_CACHE_MB, default 1024) and
 * handed out again to requests that fit within 1/8 of their size. A training step allocates
 * the same sizes every step, so steady state makes no system calls and touches no new pages.
 * The floor is 64 KiB, not glibc's 128 KiB mmap threshold: a batch of 64 Fashion-MNIST images
 * (200 KiB) and the MLP's activations (32-128 KiB) freed each step made glibc trim and regrow
 * its heap every step (the eager MLP step 930 -> 1070 us once the loader built batches on the
 * caller's thread). Each block carries a 64-byte header holding its capacity. Thread safe (one
 * mutex). */
#include <pthread.h>

#define KN_CACHE_MIN ((size_t)64 << 10)
#define KN_CACHE_SLOTS 512
#define KN_HDR 64

typedef struct {
    void *base;
    size_t cap;
} cblock;
static cblock g_cache[KN_CACHE_SLOTS];
static int g_ncache;
static size_t g_cached_bytes, g_cache_limit = (size_t)-1;
static pthread_mutex_t g_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t cache_limit(void) {
    if (g_cache_limit == (size_t)-1) {
        const char *e = getenv("KILN_ALLOC_CACHE_MB");
        long mb = e && *e ? strtol(e, NULL, 10) : 1024;
        g_cache_limit = mb > 0 ? (size_t)mb << 20 : 0;
    }
    return g_cache_limit;
}

static _Atomic size_t g_in_use, g_peak;

static void in_use_add(size_t n) {
    size_t now = atomic_fetch_add(&g_in_use, n) + n, p = atomic_load(&g_peak);
    while (now > p && !atomic_compare_exchange_weak(&g_peak, &p, now)) {
    }
}

size_t kn_memory_in_use(void) {
    return atomic_load(&g_in_use);
}
size_t kn_memory_peak(void) {
    return atomic_load(&g_peak);
}
void kn_memory_reset_peak(void) {
    atomic_store(&g_peak, atomic_load(&g_in_use));
}

static void *aligned_alloc_raw(size_t n);
void *kn__aligned_alloc(size_t n) {
    void *p = aligned_alloc_raw(n);
    if (p) in_use_add(*(size_t *)((char *)p - KN_HDR));
    return p;
}

/* Physical memory: a tensor larger than it can never be backed (untrusted shapes ask for such
 * sizes; refusing them here gives the same error in every build, sanitizers included). */
static size_t phys_bytes(void) {
    static size_t v;
    if (!v) {
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        v = pages > 0 && size > 0 ? (size_t)pages * (size_t)size : (size_t)1 << 40;
    }
    return v;
}

static void *aligned_alloc_raw(size_t n) {
    size_t cap = (n + 4095) & ~(size_t)4095;
    if (cap < n || cap + KN_HDR < cap)
        return kn__errp(KN_ELIMIT, "allocation of %zu bytes overflows", n);
    if (n > phys_bytes())
        return kn__errp(KN_ENOMEM,
                        "allocation of %zu bytes is more than this machine's memory "
                        "(%zu bytes)",
                        n, phys_bytes());
    if (should_fail()) return kn__errp(KN_ENOMEM, "out of memory allocating %zu bytes", n);
    if (cap >= KN_CACHE_MIN) {
        pthread_mutex_lock(&g_cache_mu);
        int best = -1;
        for (int i = 0; i < g_ncache; i++)
            if (g_cache[i].cap >= cap && g_cache[i].cap - cap <= cap / 8 &&
                (best < 0 || g_cache[i].cap < g_cache[best].cap))
                best = i;
        if (best >= 0) {
            char *base = g_cache[best].base;
            g_cached_bytes -= g_cache[best].cap;
            g_cache[best] = g_cache[--g_ncache];
            pthread_mutex_unlock(&g_cache_mu);
            return base + KN_HDR;
        }
        pthread_mutex_unlock(&g_cache_mu);
    }
    char *base = aligned_alloc(64, cap + KN_HDR);
    if (!base) return kn__errp(KN_ENOMEM, "out of memory allocating %zu bytes", n);
    *(size_t *)base = cap;
    return base + KN_HDR;
}

void kn__aligned_free(void *p) {
    if (!p) return;
    char *base = (char *)p - KN_HDR;
    size_t cap = *(size_t *)base;
    atomic_fetch_sub(&g_in_use, cap);
    if (cap >= KN_CACHE_MIN) {
        pthread_mutex_lock(&g_cache_mu);
        if (g_ncache < KN_CACHE_SLOTS && g_cached_bytes + cap <= cache_limit()) {
            g_cache[g_ncache++] = (cblock){base, cap};
            g_cached_bytes += cap;
            pthread_mutex_unlock(&g_cache_mu);
            return;
        }
        pthread_mutex_unlock(&g_cache_mu);
    }
    free(base);
}

size_t kn_memory_cached(void) {
    pthread_mutex_lock(&g_cache_mu);
    size_t n = g_cached_bytes;
    pthread_mutex_unlock(&g_cache_mu);
    return n;
}

void kn_memory_trim(void) {
    pthread_mutex_lock(&g_cache_mu);
    for (int i = 0; i < g_ncache; i++)
        free(g_cache[i].base);
    g_ncache = 0;
    g_cached_bytes = 0;
    pthread_mutex_unlock(&g_cache_mu);
}

/* ---- kernel scratch: per-thread blocks reused across calls ----
 * Kernels that need temporary buffers (packed weights, padded tiles) take them here, so a loop
 * of identical calls (a graph run, a training step) reuses the same blocks and allocates
 * nothing. Each thread keeps up to SCRATCH_SLOTS blocks; a block is handed out to one caller at a
 * time and grows (reallocated) when a larger request finds no block big enough. */
#define SCRATCH_SLOTS 8
typedef struct {
    void *p;
    size_t cap;
    bool used;
} sblock;
static _Thread_local sblock tl_scratch[SCRATCH_SLOTS];

void *kn__scratch_get(size_t n) {
    int best = -1, spare = -1;
    for (int i = 0; i < SCRATCH_SLOTS; i++) {
        sblock *b = &tl_scratch[i];
        if (b->used) continue;
        if (b->p && b->cap >= n && (best < 0 || b->cap < tl_scratch[best].cap)) best = i;
        if (spare < 0 || (!b->p && tl_scratch[spare].p)) spare = i;
    }
    if (best < 0 && spare < 0) return kn__aligned_alloc(n); /* every slot busy: plain block */
    if (best < 0) {
        sblock *b = &tl_scratch[spare];
        void *p = kn__aligned_alloc(n ? n : 64);
        if (!p) return NULL;
        kn__aligned_free(b->p);
        b->p = p;
        b->cap = n ? n : 64;
        best = spare;
    }
    tl_scratch[best].used = true;
    return tl_scratch[best].p;
}

void kn__scratch_put(void *p) {
    if (!p) return;
    for (int i = 0; i < SCRATCH_SLOTS; i++)
        if (tl_scratch[i].p == p) {
            tl_scratch[i].used = false;
            return;
        }
    kn__aligned_free(p);
}
