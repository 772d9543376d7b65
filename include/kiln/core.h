/*
 * kiln/core.h - status codes, dtypes, tensors, autorelease scopes, RNG, threads.
 *
 * Ownership rules (read these once; every other header follows them):
 *  - Every function returning a new `kn_tensor *` hands out one reference.
 *  - Outside any scope the caller owns that reference and drops it with kn_tensor_free().
 *  - Inside a scope (kn_scope_begin .. kn_scope_end) the scope owns it: the tensor stays valid
 *    until kn_scope_end and is released there. Do not kn_tensor_free() it yourself. To let a
 *    tensor outlive the scope, call kn_keep(t): it then belongs to the enclosing scope, or to the
 *    caller when there is none. A training step wrapped in a scope runs in flat memory.
 *  - Functions returning a tensor return NULL on failure; the reason is in kn_last_status() and
 *    kn_last_error() (thread-local). Passing NULL as an input tensor to an op returns NULL and
 *    keeps the earlier error, so chains of calls can be checked once at the end.
 *  - Borrowed pointers (kn_tensor_grad, kn_tensor_shape, kn_tensor_data) stay valid while the
 *    tensor they came from is alive and unchanged.
 *
 * Thread safety: tensors are reference counted atomically and may be read from several threads.
 * Error slots, grad mode and scopes are per thread. Mutating a tensor (in-place ops, backward
 * into .grad) while another thread uses it is the caller's race to avoid.
 */
#ifndef KILN_CORE_H
#define KILN_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KN_VERSION_STRING "0.1.0"
#define KN_MAX_DIMS 8

/* Result codes, grouped by cause. KN_OK is 0, errors are negative. */
typedef enum kn_status {
    KN_OK = 0,
    KN_EINVAL = -1,       /* bad argument value (negative size, bad axis, NULL) */
    KN_ESHAPE = -2,       /* shapes do not fit together */
    KN_EDTYPE = -3,       /* dtype not supported by the op or mismatched */
    KN_EFORMAT = -4,      /* corrupt or truncated input file / data */
    KN_EUNSUPPORTED = -5, /* valid request kiln does not implement */
    KN_ENOMEM = -6,       /* allocation failed */
    KN_EIO = -7,          /* operating system I/O error */
    KN_ELIMIT = -8,       /* a hard limit (dims, sizes, counts) exceeded */
    KN_EMISUSE = -9,      /* API used in the wrong order / state (e.g. backward twice) */
    KN_EINTERNAL = -10,   /* a bug in kiln */
} kn_status;

typedef enum kn_dtype {
    KN_F32 = 0,
    KN_F64,
    KN_F16,
    KN_BF16,
    KN_I8,
    KN_U8,
    KN_I32,
    KN_I64,
    KN_BOOL,
    KN_NDTYPES
} kn_dtype;

typedef struct kn_tensor kn_tensor;

/* ---- errors and logging ---- */
kn_status kn_last_status(void);
const char *kn_last_error(void); /* "" when no error; valid until the next failing call */
void kn_clear_error(void);
const char *kn_status_name(kn_status s); /* "KN_ESHAPE" */
/* Log callback: level 0=debug 1=info 2=warn 3=error. NULL restores the default (stderr, >=warn). */
typedef void (*kn_log_fn)(int level, const char *msg, void *user);
void kn_set_log(kn_log_fn fn, void *user);

/* ---- dtypes ---- */
const char *kn_dtype_name(kn_dtype dt); /* "float32", "int64", ... ; "?" when invalid */
size_t kn_dtype_size(kn_dtype dt);      /* bytes per element, 0 when invalid */
bool kn_dtype_is_float(kn_dtype dt);    /* f32 f64 f16 bf16 */

/* ---- creation (shape is copied; ndim 0 = scalar) ---- */
kn_tensor *kn_empty(kn_dtype dt, int ndim, const int64_t *shape); /* uninitialised */
kn_tensor *kn_zeros(kn_dtype dt, int ndim, const int64_t *shape);
kn_tensor *kn_ones(kn_dtype dt, int ndim, const int64_t *shape);
kn_tensor *kn_full(kn_dtype dt, int ndim, const int64_t *shape, double value);
kn_tensor *kn_scalar(kn_dtype dt, double value); /* 0-d tensor */
kn_tensor *kn_zeros_like(const kn_tensor *t);
kn_tensor *kn_ones_like(const kn_tensor *t);
kn_tensor *kn_full_like(const kn_tensor *t, double value);
kn_tensor *kn_arange(double start, double end, double step, kn_dtype dt);
kn_tensor *kn_linspace(double start, double end, int64_t steps, kn_dtype dt);
kn_tensor *kn_eye(int64_t n, int64_t m, kn_dtype dt);
/* Random tensors draw from the global seeded generator (kn_manual_seed). */
kn_tensor *kn_rand(kn_dtype dt, int ndim, const int64_t *shape);  /* U[0,1) */
kn_tensor *kn_randn(kn_dtype dt, int ndim, const int64_t *shape); /* N(0,1) */
kn_tensor *kn_randint(int64_t low, int64_t high, kn_dtype dt, int ndim, const int64_t *shape);
/* Copies nbytes = numel * dtype size from data (C order). */
kn_tensor *kn_from_data(kn_dtype dt, int ndim, const int64_t *shape, const void *data);
/* Wraps caller memory without copying; `release(data, user)` is called when the last view dies
 * (NULL release: caller keeps the memory alive for the tensor's lifetime). */
kn_tensor *kn_from_blob(kn_dtype dt, int ndim, const int64_t *shape, void *data,
                        void (*release)(void *data, void *user), void *user);

/* ---- references ---- */
kn_tensor *kn_tensor_retain(kn_tensor *t); /* +1 reference, returns t */
void kn_tensor_free(kn_tensor *t);         /* -1 reference; NULL is a no-op */

/* ---- autorelease scopes (see the ownership rules above) ---- */
typedef struct kn_scope {
    size_t mark;
    int depth;
} kn_scope;
kn_scope kn_scope_begin(void);
void kn_scope_end(kn_scope s); /* releases what the scope owns; ends inner scopes left open */
kn_tensor *kn_keep(kn_tensor *t); /* moves t out of the current scope; returns t */
size_t kn_live_tensors(void);     /* tensors alive in the process (for leak tests) */
/* Tensor buffers of 64 KiB or more are cached after free and reused (no page faults in a
 * steady training loop); $KILN_ALLOC_CACHE_MB caps the cache (default 1024, 0 disables).
 * kn_memory_cached reports its size, kn_memory_trim returns it to the system. Thread safe. */
size_t kn_memory_cached(void);
void kn_memory_trim(void);
/* Bytes of tensor memory (and kernel scratch) in use now, and the highest value since the last
 * kn_memory_reset_peak (or the start). Cached free blocks do not count. Thread safe. */
size_t kn_memory_in_use(void);
size_t kn_memory_peak(void);
void kn_memory_reset_peak(void);

/* ---- inspection ---- */
kn_dtype kn_tensor_dtype(const kn_tensor *t);
int kn_tensor_ndim(const kn_tensor *t);
const int64_t *kn_tensor_shape(const kn_tensor *t);
const int64_t *kn_tensor_strides(const kn_tensor *t); /* in elements */
int64_t kn_tensor_dim(const kn_tensor *t, int axis);  /* negative axis counts from the end */
int64_t kn_tensor_numel(const kn_tensor *t);
bool kn_tensor_is_contiguous(const kn_tensor *t);
/* Pointer to element [0,...,0] of t's storage (honours offset; strides apply). */
void *kn_tensor_data(kn_tensor *t);
/* Copies t (any strides) in C order, converted to `dt`, into buf of `nbytes`. */
kn_status kn_tensor_read(const kn_tensor *t, kn_dtype dt, void *buf, size_t nbytes);
/* Value of a one-element tensor as double; NAN and an error when t has != 1 element. */
double kn_item(const kn_tensor *t);
/* Element at a multi-index (length ndim), as double. */
double kn_tensor_get(const kn_tensor *t, const int64_t *index);
bool kn_tensor_shares_storage(const kn_tensor *a, const kn_tensor *b);

/* ---- printing, PyTorch style: tensor([[1., 2.]], requires_grad=True) ---- */
/* Returns a malloc'd string; free it with kn_string_free. Large tensors are summarised. */
char *kn_tensor_to_string(const kn_tensor *t);
void kn_string_free(char *s);
kn_status kn_tensor_print(const kn_tensor *t, FILE *f);

/* ---- RNG: one global seeded generator (philox-like counter based, reproducible) ---- */
void kn_manual_seed(uint64_t seed);
typedef struct kn_rng_state {
    uint64_t seed, counter;
} kn_rng_state;
kn_rng_state kn_rng_get_state(void);
void kn_rng_set_state(kn_rng_state s);

/* ---- threads: one setting drives OpenMP and OpenBLAS together ---- */
/* Default: $KILN_NUM_THREADS, else the number of cores. n < 1 is KN_EINVAL. */
kn_status kn_set_num_threads(int n);
int kn_get_num_threads(void);
/* "avx2 avx512f ..." as detected at run time. */
const char *kn_cpu_features(void);
/* Whether the f32 GEMM goes through OpenBLAS (true) or kiln's reference kernel (false). */
bool kn_have_blas(void);

#ifdef __cplusplus
}
#endif
#endif
