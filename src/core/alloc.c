/*
 * alloc.c - the only malloc wrapper. Counts allocations (the graph executor's "no malloc per
 * run" test reads the counter) and can inject a failure after N calls (tests of ENOMEM paths).
 */
#include <stdlib.h>

#include "core/core_impl.h"

static _Atomic long g_fail_after;
static _Atomic uint64_t g_count;

void kn__alloc_fail_after(long n) { atomic_store(&g_fail_after, n); }
uint64_t kn__alloc_count(void) { return atomic_load(&g_count); }

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
    if (!kn__mul_ok(n, sz, &tot)) return kn__errp(KN_ELIMIT, "allocation of %zu x %zu overflows", n, sz);
    void *p = should_fail() ? NULL : calloc(tot ? tot : 1, 1);
    if (!p) kn__err(KN_ENOMEM, "out of memory allocating %zu bytes", tot);
    return p;
}

void *kn__realloc(void *old, size_t n) {
    void *p = should_fail() ? NULL : realloc(old, n ? n : 1);
    if (!p) kn__err(KN_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void kn__free(void *p) { free(p); }

void *kn__aligned_alloc(size_t n) {
    size_t r = (n + 63) & ~(size_t)63;
    if (r < n) return kn__errp(KN_ELIMIT, "allocation of %zu bytes overflows", n);
    void *p = should_fail() ? NULL : aligned_alloc(64, r ? r : 64);
    if (!p) kn__err(KN_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void kn__aligned_free(void *p) { free(p); }
