/*
 * core_impl.h - internals shared by kiln's modules: the tensor struct, the error slot, the
 * allocator and small helpers. Not installed; never included by users.
 *
 * Invariants: a tensor's (storage, offset, shape, strides) always address bytes inside
 * storage->nbytes; ndim <= KN_MAX_DIMS; refcount > 0 while reachable.
 */
#ifndef KILN_CORE_IMPL_H
#define KILN_CORE_IMPL_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "kiln/kiln.h"

#if defined(__GNUC__)
#define KN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KN_LIKELY(x) __builtin_expect(!!(x), 1)
#define KN_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define KN_PRINTF(a, b)
#define KN_LIKELY(x) (x)
#define KN_UNLIKELY(x) (x)
#endif

#ifdef NDEBUG
#define KN_ASSERT(c) ((void)0)
#else
#include <assert.h>
#define KN_ASSERT(c) assert(c)
#endif

/* ---- errors: set the thread's slot and return the status (use as `return kn__err(...)`) ---- */
kn_status kn__err(kn_status s, const char *fmt, ...) KN_PRINTF(2, 3);
/* Same, returning NULL, for functions that return pointers. */
void *kn__errp(kn_status s, const char *fmt, ...) KN_PRINTF(2, 3);
void kn__log(int level, const char *fmt, ...) KN_PRINTF(2, 3);
/* Formats a shape as "(2, 3, 4)" into buf (at least 96 bytes recommended). */
const char *kn__shape_str(char *buf, size_t len, int ndim, const int64_t *shape);

/* ---- allocator: the only malloc wrapper (64-byte aligned for kernels) ---- */
void *kn__malloc(size_t n); /* NULL + KN_ENOMEM error on failure */
void *kn__calloc(size_t n, size_t sz);
void *kn__realloc(void *p, size_t n); /* not aligned beyond malloc's guarantee */
void kn__free(void *p);
void *kn__aligned_alloc(size_t n); /* 64-byte aligned; free with kn__aligned_free */
void kn__aligned_free(void *p);
/* Kernel scratch (64-byte aligned): a per-thread block reused by later calls; give it back with
 * kn__scratch_put on the same thread. Steady-state loops allocate nothing. */
void *kn__scratch_get(size_t n);
void kn__scratch_put(void *p);
/* Test hooks: fail the Nth allocation from now (0 = off); count allocations made so far. */
void kn__alloc_fail_after(long n);
uint64_t kn__alloc_count(void);
/* Overflow-checked a*b; false on overflow. */
static inline bool kn__mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* ---- tensors ---- */
typedef struct kn_storage {
    _Atomic long refcount;
    void *data;
    size_t nbytes;
    void (*release)(void *data, void *user); /* NULL: data from kn__aligned_alloc */
    void *user;
    bool external; /* from_blob with no release: never freed */
} kn_storage;

/* Autograd tape node (src/autograd/): core only needs to drop references to it, through the
 * header every node starts with, so core does not depend on the autograd layer. */
typedef struct kn_node_base {
    _Atomic long refcount;
    void (*destroy)(struct kn_node_base *node);
} kn_node_base;
struct kn_node;
static inline void kn__node_release(struct kn_node *n) {
    kn_node_base *b = (kn_node_base *)n;
    if (b && atomic_fetch_sub(&b->refcount, 1) == 1) b->destroy(b);
}
static inline void kn__node_retain(struct kn_node *n) {
    if (n) atomic_fetch_add(&((kn_node_base *)n)->refcount, 1);
}

struct kn_tensor {
    _Atomic long refcount;
    kn_dtype dtype;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    int64_t strides[KN_MAX_DIMS]; /* elements */
    int64_t offset;               /* elements */
    kn_storage *storage;
    bool requires_grad;
    bool grad_fn_weak;       /* saved output alias: does not own grad_fn */
    struct kn_node *grad_fn; /* producing node (owned unless grad_fn_weak) */
    int out_index;           /* which output of grad_fn */
    kn_tensor *grad;         /* owned */
};

/* New contiguous tensor with fresh (uninitialised) storage; not registered in any scope. */
kn_tensor *kn__tensor_alloc(kn_dtype dt, int ndim, const int64_t *shape);
/* New contiguous tensor over memory kiln does not own (data may be NULL and set later through
 * t->storage->data); the storage never frees it. Not registered in any scope. */
kn_tensor *kn__tensor_external(kn_dtype dt, int ndim, const int64_t *shape, void *data);
/* New tensor header viewing t's storage with the given geometry; not registered. */
kn_tensor *kn__tensor_view(kn_tensor *t, int ndim, const int64_t *shape, const int64_t *strides,
                           int64_t offset);
/* Contiguous version of t: t itself (+1 ref) when already contiguous, else a copy. Not
 * registered in any scope and not recorded on the tape: always kn_tensor_free() it. */
kn_tensor *kn__contig(kn_tensor *t);
/* Hands a fresh (+1) tensor to the current scope if one is open; returns t. NULL passes through. */
kn_tensor *kn__scope_adopt(kn_tensor *t);
/* Whether new tensors are currently owned by a scope on this thread. */
bool kn__scope_active(void);
void kn__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
bool kn__is_contiguous(const kn_tensor *t);
int64_t kn__numel(int ndim, const int64_t *shape);
/* Validates a user shape: ndim in [0, 8], dims >= 0, numel*elem size fits; sets error. */
kn_status kn__check_shape(const char *who, int ndim, const int64_t *shape, kn_dtype dt);
/* Normalises a possibly negative axis for rank ndim; sets error and returns -1 when invalid. */
int kn__axis(const char *who, int axis, int ndim);
static inline char *kn__ptr(const kn_tensor *t) {
    return (char *)t->storage->data + (size_t)t->offset * kn_dtype_size(t->dtype);
}
/* Copies src (any strides, same dtype) into dst (contiguous, same shape). Parallel when large. */
void kn__copy_into(kn_tensor *dst, const kn_tensor *src);
/* Set by the graph layer while tracing: told when user code reads a tensor's values on the host
 * (kn_item, kn_tensor_data, kn_tensor_get, kn_tensor_read); `what` names the function. */
extern void (*kn__host_read_hook)(const kn_tensor *t, const char *what);
/* Likewise for in-place writes by the public in-place functions (kn_add_, kn_fill_, ...). */
extern void (*kn__host_write_hook)(const kn_tensor *t, const char *what);
/* Reverses the byte order of n elements of esz bytes (2, 4 or 8; others untouched), in place:
 * big-endian files (IDX, NPY '>') on this little-endian machine. */
void kn__bswap(void *data, size_t n, size_t esz);
/* Element conversions used by casts, printing and kn_item. */
double kn__load_f64(kn_dtype dt, const void *p);
void kn__store_f64(kn_dtype dt, void *p, double v);
float kn__bf16_to_f32(uint16_t h);
uint16_t kn__f32_to_bf16(float f);
float kn__f16_to_f32(uint16_t h);
uint16_t kn__f32_to_f16(float f);

/* ---- RNG: counter-based, so a stream position can be saved and split ---- */
uint64_t kn__rng_next_u64(void); /* advances the global generator */
double kn__rng_uniform(void);    /* [0,1) with 53 random bits */
/* Reserves n draws and returns the counter base: draw i = kn__rng_at(seed, base + i). Lets
 * parallel kernels fill tensors deterministically regardless of the thread count. */
uint64_t kn__rng_reserve(uint64_t n, uint64_t *seed);
uint64_t kn__rng_at(uint64_t seed, uint64_t counter);

/* ---- threads ---- */
int kn__threads(void); /* current setting, initialised on first use */
/* whether this CPU has AVX-512F (the x86 kernels' gate; a load of a flag set at startup, so
 * safe from any thread) */
static inline bool kn__has_avx512f(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}
/* online CPUs (read once) */
int kn__online_cpus(void);
/* This thread's kernels use n threads from now on (0: the global setting again); returns the
 * previous local value. The graph executor's concurrent lanes run with 1. */
int kn__threads_local(int n);
/* OpenBLAS's thread count for the next calls, process-wide (no-op without BLAS); the caller
 * makes sure no BLAS call is in flight and restores kn__threads() afterwards. */
void kn__blas_threads(int n);
/* for (int64_t var = 0; var < n; var++) { body } on nth threads when `par`, else serially and
 * OUTSIDE any parallel region. Not `#pragma omp parallel for if (par)`: that inactive region
 * makes the threaded kernels inside the body (im2col, BLAS) nested teams, which libgomp runs
 * up to 20x slower (ResNet-18's first convolution at batch 1: 62 ms -> 2.5 ms). The body is
 * compiled twice. */
// clang-format off
#define KN_PAR_FOR(par, nth, var, n, ...)                                                      \
    do {                                                                                       \
        if (par) {                                                                             \
            _Pragma("omp parallel for num_threads(nth) schedule(static)")                      \
            for (int64_t var = 0; var < (n); var++) { __VA_ARGS__ }                            \
        } else {                                                                               \
            for (int64_t var = 0; var < (n); var++) { __VA_ARGS__ }                            \
        }                                                                                      \
    } while (0)
// clang-format on
void kn__runtime_init(void);

#endif
