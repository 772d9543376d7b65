/*
 * threads.c - one thread setting for OpenMP and OpenBLAS together (no oversubscription), and
 * CPU feature detection. Default: $KILN_NUM_THREADS, else the number of online cores.
 */
#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/core_impl.h"

#ifdef KILN_HAVE_BLAS
void openblas_set_num_threads(int n);
#endif

static _Atomic int g_threads; /* 0 = not initialised */

static int default_threads(void) {
    const char *e = getenv("KILN_NUM_THREADS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == 0 && v >= 1 && v <= 4096) return (int)v;
        kn__log(2, "ignoring KILN_NUM_THREADS=\"%s\" (want an integer >= 1)", e);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

static void apply(int n) {
    atomic_store(&g_threads, n);
    omp_set_num_threads(n);
#ifdef KILN_HAVE_BLAS
    openblas_set_num_threads(n);
#endif
}

void kn__runtime_init(void) {
    if (atomic_load(&g_threads) == 0) apply(default_threads());
}

static _Thread_local int tl_threads; /* 0: the global setting */
static _Atomic int g_cpus;           /* online CPUs, read once */

int kn__online_cpus(void) {
    int n = atomic_load(&g_cpus);
    if (n == 0) {
        long v = sysconf(_SC_NPROCESSORS_ONLN);
        n = v >= 1 ? (int)v : 1;
        atomic_store(&g_cpus, n);
    }
    return n;
}

int kn__threads_local(int n) {
    int prev = tl_threads;
    tl_threads = n > 0 ? n : 0;
    return prev;
}

void kn__blas_threads(int n) {
#ifdef KILN_HAVE_BLAS
    openblas_set_num_threads(n >= 1 ? n : 1);
#else
    (void)n;
#endif
}

int kn__threads(void) {
    if (tl_threads) return tl_threads;
    int n = atomic_load(&g_threads);
    if (n == 0) {
        kn__runtime_init();
        n = atomic_load(&g_threads);
    }
    return n;
}

kn_status kn_set_num_threads(int n) {
    if (n < 1) return kn__err(KN_EINVAL, "set_num_threads: %d threads (need >= 1)", n);
    apply(n);
    return KN_OK;
}

int kn_get_num_threads(void) {
    return kn__threads();
}

bool kn_have_blas(void) {
#ifdef KILN_HAVE_BLAS
    return true;
#else
    return false;
#endif
}

const char *kn_cpu_features(void) {
    static char buf[128];
    if (buf[0]) return buf;
    __builtin_cpu_init();
    size_t o = 0;
    const char *names[] = {"sse4.2",   "avx",      "avx2",       "fma",       "avx512f",
                           "avx512bw", "avx512vl", "avx512vnni", "avx512bf16"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int has = 0;
        switch (i) {
        case 0: has = __builtin_cpu_supports("sse4.2"); break;
        case 1: has = __builtin_cpu_supports("avx"); break;
        case 2: has = __builtin_cpu_supports("avx2"); break;
        case 3: has = __builtin_cpu_supports("fma"); break;
        case 4: has = __builtin_cpu_supports("avx512f"); break;
        case 5: has = __builtin_cpu_supports("avx512bw"); break;
        case 6: has = __builtin_cpu_supports("avx512vl"); break;
        case 7: has = __builtin_cpu_supports("avx512vnni"); break;
        case 8: has = __builtin_cpu_supports("avx512bf16"); break;
        }
        if (has) o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", o ? " " : "", names[i]);
    }
    if (!buf[0]) snprintf(buf, sizeof buf, "baseline");
    return buf;
}
