/*
 * bench_infer.c - kiln side of the inference-latency benchmark (issue 4, static graphs): the
 * latency of one forward call of a small model at batch 1 and batch 64, compiled
 * (kn_trace_module + kn_graph_compile with freeze + kn_graph_run_into into a preallocated output)
 * and eager (kn_module_forward), through the public API only.
 *
 * What it does not do: run PyTorch, compare, or aggregate rounds. bench/run.sh (`graph`) runs this
 * program and `bench/peer_torch.py infer` (PyTorch eager under inference_mode, and
 * torch.jit.trace + torch.jit.freeze) alternately and turns the raw lines into ratios. The models
 * and inputs here and in peer_torch.py must stay the same.
 *
 * Models (exactly as bench_train.c builds them; weights from PyTorch's default initialisation
 * after kn_manual_seed(0); eval mode):
 *   mlp:   Flatten, Linear(784,512), ReLU, Linear(512,256), ReLU, Linear(256,10)
 *   lenet: Conv2d(1,6,5), ReLU, MaxPool2d(2), Conv2d(6,16,5), ReLU, MaxPool2d(2), Flatten,
 *          Linear(256,120), ReLU, Linear(120,84), ReLU, Linear(84,10)
 * Input: kn_randn (N,1,28,28) f32 after kn_manual_seed(1), for both models.
 *
 * Implementations:
 *  - kiln_graph: per model, kn_trace_module on an example batch (the batch dim is symbolic, so one
 *    graph serves every batch size; each size gets its memory plan on its first call, inside the
 *    warm-up), kn_graph_compile(freeze = true), then per call kn_graph_run_into(graph, x, out)
 *    with `out` allocated once per case: no allocation per call.
 *  - kiln_eager: per call kn_scope_begin, kn_module_forward, kn_scope_end, under kn_no_grad_begin
 *    (the scope end, which frees the intermediates and the output, is inside the timed part:
 *    PyTorch frees its intermediates during the forward).
 * Method: per case (model, batch, threads) kn_set_num_threads(threads), 20 warm-up calls, then
 * K timed calls with K chosen from the last 10 warm-up calls' speed so that they take about
 * BENCH_TARGET_S (0.4) seconds, clamped to [20, 5000]. Each call is timed on its own with
 * clock_gettime(CLOCK_MONOTONIC); the median and the 90th percentile (nearest rank) are reported.
 * BENCH_QUICK=1: 2 warm-up and 5 timed calls (a pipeline check, not a measurement).
 * Graph lines carry max_abs_diff: the largest |graph - eager| over the output for the case's input
 * (computed once, untimed; freeze may fold weights and change rounding slightly).
 *
 * Output: one raw line per case and implementation on stdout,
 *   raw bench=infer model=<m> batch=<b> threads=<t> impl=kiln_graph ms=<median> p90_ms=<..>
 *       reps=<K> max_abs_diff=<..>
 *   raw bench=infer model=<m> batch=<b> threads=<t> impl=kiln_eager ms=<median> p90_ms=<..>
 *       reps=<K>
 * or `raw bench=infer model=<m> batch=<b> threads=<t> impl=<..> status=error msg="<..>"`.
 *
 * Usage: bench_infer [--models mlp,lenet] [--batches 1,64] [--threads 1,2]
 *                    [--mode graph|eager|both]   (defaults shown; mode default both)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/kiln.h"

#include "bench_util.h"

#define WARMUP 20
#define MIN_REPS 20
#define MAX_REPS 5000

static void print_error(const char *model, int64_t batch, int threads, const char *impl,
                        const char *what) {
    /* Quotes in the message would break the line format: replace them. */
    char msg[320];
    snprintf(msg, sizeof msg, "%s: %s", what, kn_last_error());
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\n') *p = '\'';
    printf("raw bench=infer model=%s batch=%lld threads=%d impl=%s status=error msg=\"%s\"\n",
           model, (long long)batch, threads, impl, msg);
    fflush(stdout);
}

/* ---- models: must match bench_train.c and make_train_model in peer_torch.py ---- */

#include "bench_models.h"

/* ---- one timed call of either implementation ---- */

typedef struct infer_case {
    kn_module *model;
    kn_graph *graph; /* NULL in eager */
    kn_tensor *x;
    kn_tensor *out; /* graph: the preallocated output */
} infer_case;

/* Runs one call; returns its seconds, or < 0 on error. */
static double call_once(const infer_case *c) {
    double t0 = now_s();
    if (c->graph) {
        if (kn_graph_run_into(c->graph, &c->x, 1, &c->out, 1) != KN_OK) return -1.0;
        return now_s() - t0;
    }
    kn_scope s = kn_scope_begin();
    kn_tensor *y = kn_module_forward(c->model, c->x);
    kn_scope_end(s);
    double t = now_s() - t0;
    return y ? t : -1.0;
}

/* Warm-up, then K timed calls. Returns 0 with *median_ms, *p90_ms, *reps set, or -1. */
static int time_case(const infer_case *c, bool quick, double target_s, double *median_ms,
                     double *p90_ms, int *reps_out) {
    int warm = quick ? 2 : WARMUP;
    double tail = 0.0;
    int ntail = 0;
    for (int i = 0; i < warm; i++) {
        double t = call_once(c);
        if (t < 0) return -1;
        if (i >= warm / 2) {
            tail += t;
            ntail++;
        }
    }
    int reps = 5;
    if (!quick) {
        double per = ntail ? tail / ntail : 0.0;
        reps = per > 0 ? (int)fmin(ceil(target_s / per), (double)MAX_REPS) : MAX_REPS;
        if (reps < MIN_REPS) reps = MIN_REPS;
        if (reps > MAX_REPS) reps = MAX_REPS;
    }
    double *v = malloc(sizeof *v * (size_t)reps);
    if (!v) return -1;
    for (int i = 0; i < reps; i++) {
        if ((v[i] = call_once(c)) < 0) {
            free(v);
            return -1;
        }
    }
    qsort(v, (size_t)reps, sizeof *v, cmp_double);
    double med = reps % 2 ? v[reps / 2] : 0.5 * (v[reps / 2 - 1] + v[reps / 2]);
    int k = (int)ceil(0.9 * reps) - 1; /* nearest rank */
    *median_ms = med * 1e3;
    *p90_ms = v[k < 0 ? 0 : k] * 1e3;
    *reps_out = reps;
    free(v);
    return 0;
}

/* Largest |a - b| over two f32 tensors of the same shape; < 0 on error. */
static double max_abs_diff(kn_tensor *a, kn_tensor *b) {
    int64_t n = kn_tensor_numel(a);
    if (n != kn_tensor_numel(b) || n <= 0) return -1.0;
    float *pa = malloc(sizeof *pa * (size_t)n), *pb = malloc(sizeof *pb * (size_t)n);
    double m = -1.0;
    if (pa && pb && kn_tensor_read(a, KN_F32, pa, sizeof *pa * (size_t)n) == KN_OK &&
        kn_tensor_read(b, KN_F32, pb, sizeof *pb * (size_t)n) == KN_OK) {
        m = 0.0;
        for (int64_t i = 0; i < n; i++)
            m = fmax(m, fabs((double)pa[i] - (double)pb[i]));
    }
    free(pa);
    free(pb);
    return m;
}

/* The output of graph g for batch b, allocated once (the signature's batch dim set to b). */
static kn_tensor *graph_output(kn_graph *g, int64_t b) {
    kn_graph_sig sig;
    if (kn_graph_output(g, 0, &sig) != KN_OK) return NULL;
    for (int d = 0; d < sig.ndim; d++)
        if (sig.shape[d] < 0) sig.shape[d] = b;
    return kn_empty(sig.dtype, sig.ndim, sig.shape);
}

/* All cases of one model. Returns the number of failed cases. */
static int bench_model(const char *name, const int64_t *batches, int nb, const int64_t *threads,
                       int nt, bool do_graph, bool do_eager, bool quick, double target_s) {
    int failures = 0;
    kn_manual_seed(0);
    kn_module *m = strcmp(name, "lenet") ? make_mlp() : make_lenet();
    kn_graph *g = NULL;
    if (!m) {
        print_error(name, batches[0], (int)threads[0], "kiln", "model");
        return nb * nt;
    }
    kn_module_train(m, false);
    if (do_graph) {
        int64_t shape[4] = {batches[0], 1, 28, 28};
        kn_tensor *ex = kn_randn(KN_F32, 4, shape);
        g = ex ? kn_trace_module(m, ex) : NULL;
        kn_tensor_free(ex);
        const kn_compile_opts co = {.freeze = true};
        if (!g || kn_graph_compile(g, &co) != KN_OK) {
            print_error(name, batches[0], (int)threads[0], "kiln_graph", "trace/compile");
            failures += nb * nt;
            kn_graph_free(g);
            g = NULL;
            do_graph = false;
        }
    }
    bool prev = kn_no_grad_begin();
    for (int bi = 0; bi < nb; bi++) {
        int64_t b = batches[bi], shape[4] = {b, 1, 28, 28};
        kn_manual_seed(1); /* the same input whichever modes run */
        kn_tensor *x = kn_randn(KN_F32, 4, shape);
        kn_tensor *out = do_graph && x ? graph_output(g, b) : NULL;
        /* untimed check of the graph against eager */
        double diff = -1.0;
        if (do_graph && out && kn_graph_run_into(g, &x, 1, &out, 1) == KN_OK) {
            kn_scope s = kn_scope_begin();
            kn_tensor *ref = kn_module_forward(m, x);
            if (ref) diff = max_abs_diff(out, ref);
            kn_scope_end(s);
        }
        for (int ti = 0; ti < nt; ti++) {
            int th = (int)threads[ti];
            if (kn_set_num_threads(th) != KN_OK) {
                print_error(name, b, th, "kiln", "kn_set_num_threads");
                failures++;
                continue;
            }
            for (int k = 0; k < 2; k++) {
                bool graph = k == 0;
                if (graph ? !do_graph : !do_eager) continue;
                const char *impl = graph ? "kiln_graph" : "kiln_eager";
                infer_case c = {.model = m, .graph = graph ? g : NULL, .x = x, .out = out};
                double med = 0, p90 = 0;
                int reps = 0;
                if (!x || (graph && (!out || diff < 0)) ||
                    time_case(&c, quick, target_s, &med, &p90, &reps) != 0) {
                    print_error(name, b, th, impl, graph ? "kn_graph_run_into" : "forward");
                    failures++;
                    continue;
                }
                printf("raw bench=infer model=%s batch=%lld threads=%d impl=%s ms=%.5f "
                       "p90_ms=%.5f reps=%d",
                       name, (long long)b, th, impl, med, p90, reps);
                if (graph) printf(" max_abs_diff=%.3g", diff);
                printf("\n");
                fflush(stdout);
            }
        }
        kn_tensor_free(out);
        kn_tensor_free(x);
    }
    kn_no_grad_end(prev);
    kn_graph_free(g);
    kn_module_free(m);
    return failures;
}

int main(int argc, char **argv) {
    int64_t batches[MAX_LIST] = {1, 64}, threads[MAX_LIST] = {1, 2};
    int nb = 2, nt = 2;
    const char *models = "mlp,lenet", *mode = "both";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc) {
            models = argv[++i];
        } else if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
            if ((nb = parse_list(argv[++i], batches)) <= 0) goto usage;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if ((nt = parse_list(argv[++i], threads)) <= 0) goto usage;
        } else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            mode = argv[++i];
            if (strcmp(mode, "graph") && strcmp(mode, "eager") && strcmp(mode, "both")) goto usage;
        } else {
            goto usage;
        }
    }
    /* validate the model list before running anything */
    char list[256];
    if (strlen(models) >= sizeof list) goto usage;
    strcpy(list, models);
    int nmodels = 0;
    for (char *p = strtok(list, ","); p; p = strtok(NULL, ",")) {
        if (strcmp(p, "mlp") && strcmp(p, "lenet")) goto usage;
        nmodels++;
    }
    if (!nmodels) goto usage;
    bool do_graph = strcmp(mode, "eager") != 0, do_eager = strcmp(mode, "graph") != 0;
    bool quick = env_flag("BENCH_QUICK");
    double target_s = env_double("BENCH_TARGET_S", 0.4);
    printf("# bench_infer: kiln %s mode=%s blas=%d cpu=\"%s\" quick=%d\n", KN_VERSION_STRING, mode,
           (int)kn_have_blas(), kn_cpu_features(), (int)quick);
    fflush(stdout);
    int failures = 0;
    strcpy(list, models);
    for (char *p = strtok(list, ","); p; p = strtok(NULL, ","))
        failures += bench_model(p, batches, nb, threads, nt, do_graph, do_eager, quick, target_s);
    return failures ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench_infer [--models mlp,lenet] [--batches 1,64] [--threads 1,2] "
                    "[--mode graph|eager|both]\n");
    return 2;
}
