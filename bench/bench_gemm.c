/*
 * bench_gemm.c - kiln side of the f32 GEMM benchmark: C = A B for square N x N matrices through
 * the public kn_matmul, at each requested thread count (kn_set_num_threads drives OpenMP and
 * OpenBLAS together).
 *
 * What it does not do: run PyTorch, compare, or aggregate rounds. bench/run.sh runs this program
 * and bench/peer_torch.py alternately and turns the raw lines into ratios.
 *
 * Output: one raw line per case on stdout,
 *   raw bench=gemm n=1024 threads=2 impl=kiln ms=<median> gflops=<2 N^3 / median> reps=<k>
 * or, when the op fails, `... impl=kiln status=error msg="<kn_last_error()>"`.
 * Method (the same as peer_torch.py): warm-up of at least 2 calls and up to ~0.25 s, then K
 * timed calls with K chosen so that K calls take about BENCH_TARGET_S seconds (clamped to
 * [5, 200]); the median is reported. Every call runs inside a kn_scope so memory stays flat.
 * BENCH_QUICK=1 makes it 1 warm-up call and 2 timed calls (a pipeline check, not a measurement).
 *
 * Usage: bench_gemm [--threads 1,2] [--sizes 256,512,1024,2048]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/kiln.h"

#include "bench_util.h"

#define MAX_REPS 200
#define MIN_REPS 5

static void print_error(int64_t n, int threads, const char *what) {
    /* Quotes in the message would break the line format: replace them. */
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", what, kn_last_error());
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\n') *p = '\'';
    printf("raw bench=gemm n=%lld threads=%d impl=kiln status=error msg=\"%s\"\n", (long long)n,
           threads, msg);
    fflush(stdout);
}

/* Times kn_matmul(a, b); returns the median seconds (or < 0 on error). */
static double time_matmul(kn_tensor *a, kn_tensor *b, bool quick, double target_s, int *reps_out) {
    double warm_total = 0.0;
    int warm = 0;
    double samples[MAX_REPS];
    /* Warm-up: at least 2 calls (1 in quick mode), up to ~0.25 s or 10 calls. */
    do {
        kn_scope s = kn_scope_begin();
        double t0 = now_s();
        kn_tensor *c = kn_matmul(a, b);
        double t1 = now_s();
        kn_scope_end(s);
        if (!c) return -1.0;
        warm_total += t1 - t0;
        warm++;
    } while (!quick && (warm < 2 || (warm_total < 0.25 && warm < 10)));
    int reps = 2;
    if (!quick) {
        double per = warm_total / warm;
        reps = per > 0 ? (int)ceil(target_s / per) : MAX_REPS;
        if (reps < MIN_REPS) reps = MIN_REPS;
        if (reps > MAX_REPS) reps = MAX_REPS;
    }
    for (int i = 0; i < reps; i++) {
        kn_scope s = kn_scope_begin();
        double t0 = now_s();
        kn_tensor *c = kn_matmul(a, b);
        double t1 = now_s();
        kn_scope_end(s);
        if (!c) return -1.0;
        samples[i] = t1 - t0;
    }
    *reps_out = reps;
    return median(samples, reps);
}

int main(int argc, char **argv) {
    int64_t threads[MAX_LIST] = {1, 2}, sizes[MAX_LIST] = {256, 512, 1024, 2048};
    int nthreads = 2, nsizes = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            nthreads = parse_list(argv[++i], threads);
            if (nthreads <= 0) goto usage;
        } else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            nsizes = parse_list(argv[++i], sizes);
            if (nsizes <= 0) goto usage;
        } else {
            goto usage;
        }
    }
    bool quick = env_flag("BENCH_QUICK");
    double target_s = env_double("BENCH_TARGET_S", 0.4);

    printf("# bench_gemm: kiln %s blas=%d cpu=\"%s\" quick=%d\n", KN_VERSION_STRING,
           (int)kn_have_blas(), kn_cpu_features(), (int)quick);
    kn_manual_seed(1234);
    int failures = 0;
    for (int ti = 0; ti < nthreads; ti++) {
        if (kn_set_num_threads((int)threads[ti]) != KN_OK) {
            print_error(0, (int)threads[ti], "kn_set_num_threads");
            failures++;
            continue;
        }
        for (int si = 0; si < nsizes; si++) {
            int64_t n = sizes[si], shape[2] = {n, n};
            kn_tensor *a = kn_randn(KN_F32, 2, shape);
            kn_tensor *b = kn_randn(KN_F32, 2, shape);
            int reps = 0;
            double t = (a && b) ? time_matmul(a, b, quick, target_s, &reps) : -1.0;
            if (t < 0) {
                print_error(n, (int)threads[ti], "matmul");
                failures++;
            } else {
                double gflops = 2.0 * (double)n * (double)n * (double)n / t * 1e-9;
                printf("raw bench=gemm n=%lld threads=%d impl=kiln ms=%.4f gflops=%.2f reps=%d\n",
                       (long long)n, (int)threads[ti], t * 1e3, gflops, reps);
                fflush(stdout);
            }
            kn_tensor_free(a);
            kn_tensor_free(b);
        }
    }
    return failures ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench_gemm [--threads 1,2] [--sizes 256,512,1024,2048]\n");
    return 2;
}
