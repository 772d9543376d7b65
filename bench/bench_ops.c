/*
 * bench_ops.c - kiln side of the core-op benchmark: common ops at realistic sizes, forward and
 * backward, through the public API (kiln/kiln.h).
 *
 * What it does not do: run PyTorch, compare, or aggregate rounds. bench/run.sh runs this program
 * and bench/peer_torch.py alternately and turns the raw lines into ratios. The cases here and in
 * peer_torch.py (OPS) must stay the same list with the same shapes.
 *
 * Passes:
 *  - fwd: the op on inputs that do not require grad (no tape), output freed outside the timing.
 *  - bwd: per call, the forward runs untimed on inputs that require grad, then the timed part is
 *    kn_grad(out, grad_output = g, inputs = every float input): the gradients w.r.t. all inputs
 *    given a fixed random output grad g. PyTorch does the same with torch.autograd.grad.
 * Method (the same as peer_torch.py): warm-up of at least 2 calls and up to ~0.25 s, then K timed
 * calls, K chosen so that the K calls take about BENCH_TARGET_S seconds (clamped to [5, 200]);
 * the median is reported. Every call runs inside a kn_scope so memory stays flat.
 * BENCH_QUICK=1: 1 warm-up call and 2 timed calls (a pipeline check, not a measurement).
 *
 * Output: one raw line per case on stdout,
 *   raw bench=ops op=<op> pass=fwd|bwd shape=<shape> impl=kiln threads=<n> ms=<median> reps=<k>
 * or `... impl=kiln status=error msg="<kn_last_error()>"`.
 *
 * Usage: bench_ops [--threads 2] [--ops add,mul,...]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/kiln.h"

#include "bench_util.h"

#define MAX_IN 4
#define MAX_REPS 200
#define MIN_REPS 5

/* One benchmark case: `nin` differentiable f32 inputs, optional non-differentiable extras. */
typedef struct opcase {
    const char *name;                      /* op= */
    const char *shape;                     /* shape= (same string as peer_torch.py) */
    kn_tensor *(*setup)(struct opcase *c); /* creates in[]/extra[]; returns in[0] or NULL */
    kn_tensor *(*run)(struct opcase *c);   /* the op itself */
    int nin;
    kn_tensor *in[MAX_IN];
    kn_tensor *extra[2];
} opcase;

static kn_tensor *randn(int ndim, const int64_t *shape) {
    return kn_randn(KN_F32, ndim, shape);
}

/* ---- the cases: shapes must match OPS in peer_torch.py ---- */

static const int64_t S_ACT[3] = {64, 128, 768}; /* transformer activations (B, T, C) */
static const int64_t S_ROWS[2] = {64 * 128, 768};
static const int64_t S_C768[1] = {768};
static const int64_t S_IMG[4] = {8, 64, 56, 56};
static const int64_t S_IMG_BIG[4] = {8, 64, 112, 112};
static const int64_t S_C64[1] = {64};
static const int64_t S_W3x3[4] = {64, 64, 3, 3};

static kn_tensor *setup_act(opcase *c) {
    return c->in[0] = randn(3, S_ACT);
}
static kn_tensor *setup_act2(opcase *c) {
    c->in[1] = randn(3, S_ACT);
    return c->in[0] = randn(3, S_ACT);
}
static kn_tensor *setup_act_bias(opcase *c) {
    c->in[1] = randn(1, S_C768);
    return c->in[0] = randn(3, S_ACT);
}
static kn_tensor *setup_rows(opcase *c) {
    return c->in[0] = randn(2, S_ROWS);
}
static kn_tensor *setup_layer_norm(opcase *c) {
    c->in[1] = randn(1, S_C768);
    c->in[2] = randn(1, S_C768);
    return c->in[0] = randn(2, S_ROWS);
}
static kn_tensor *setup_conv(opcase *c) {
    c->in[1] = randn(4, S_W3x3);
    c->in[2] = randn(1, S_C64);
    return c->in[0] = randn(4, S_IMG);
}
static kn_tensor *setup_pool(opcase *c) {
    return c->in[0] = randn(4, S_IMG_BIG);
}
static kn_tensor *setup_bn(opcase *c) {
    c->in[1] = randn(1, S_C64);
    c->in[2] = randn(1, S_C64);
    c->extra[0] = kn_zeros(KN_F32, 1, S_C64);
    c->extra[1] = kn_ones(KN_F32, 1, S_C64);
    return c->in[0] = randn(4, S_IMG);
}

static kn_tensor *run_add(opcase *c) {
    return kn_add(c->in[0], c->in[1]);
}
static kn_tensor *run_mul(opcase *c) {
    return kn_mul(c->in[0], c->in[1]);
}
static kn_tensor *run_relu(opcase *c) {
    return kn_relu(c->in[0]);
}
static kn_tensor *run_gelu(opcase *c) {
    return kn_gelu(c->in[0], false);
} /* erf form */
static kn_tensor *run_exp(opcase *c) {
    return kn_exp(c->in[0]);
}
static kn_tensor *run_sum(opcase *c) {
    int axis = -1;
    return kn_sum(c->in[0], &axis, 1, false);
}
static kn_tensor *run_softmax(opcase *c) {
    return kn_softmax(c->in[0], -1);
}
static kn_tensor *run_layer_norm(opcase *c) {
    return kn_layer_norm(c->in[0], 1, c->in[1], c->in[2], 1e-5);
}
static kn_tensor *run_conv2d(opcase *c) {
    kn_conv_opts o = {.stride = {1, 1}, .padding = {1, 1}};
    return kn_conv2d(c->in[0], c->in[1], c->in[2], &o);
}
static kn_tensor *run_max_pool2d(opcase *c) {
    kn_pool_opts o = {.kernel = {2, 2}, .stride = {2, 2}};
    return kn_max_pool2d(c->in[0], &o, NULL);
}
static kn_tensor *run_batch_norm(opcase *c) {
    return kn_batch_norm(c->in[0], c->extra[0], c->extra[1], c->in[1], c->in[2], true, 0.1, 1e-5);
}

static opcase CASES[] = {
    {"add", "64x128x768+768", setup_act_bias, run_add, 2, {0}, {0}},
    {"mul", "64x128x768*64x128x768", setup_act2, run_mul, 2, {0}, {0}},
    {"relu", "64x128x768", setup_act, run_relu, 1, {0}, {0}},
    {"gelu", "64x128x768", setup_act, run_gelu, 1, {0}, {0}},
    {"exp", "64x128x768", setup_act, run_exp, 1, {0}, {0}},
    {"sum", "8192x768:dim=-1", setup_rows, run_sum, 1, {0}, {0}},
    {"softmax", "8192x768:dim=-1", setup_rows, run_softmax, 1, {0}, {0}},
    {"layer_norm", "8192x768:w,b", setup_layer_norm, run_layer_norm, 3, {0}, {0}},
    {"conv2d", "8x64x56x56:w=64x64x3x3,b,pad=1", setup_conv, run_conv2d, 3, {0}, {0}},
    {"max_pool2d", "8x64x112x112:k=2,s=2", setup_pool, run_max_pool2d, 1, {0}, {0}},
    {"batch_norm", "8x64x56x56:train,w,b", setup_bn, run_batch_norm, 3, {0}, {0}},
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ---- timing ---- */

typedef struct timing {
    bool quick;
    double target_s;
} timing;

/* One call; returns its timed seconds, or < 0 on error (message in kn_last_error()). */
static double one_call(opcase *c, kn_tensor *g) {
    kn_scope s = kn_scope_begin();
    double dt = -1.0;
    if (!g) {
        double t0 = now_s();
        kn_tensor *y = c->run(c);
        double t1 = now_s();
        if (y) dt = t1 - t0;
    } else {
        kn_tensor *y = c->run(c); /* untimed forward that records the tape */
        if (y) {
            kn_tensor *grads[MAX_IN] = {0};
            double t0 = now_s();
            kn_status st = kn_grad(&y, 1, &g, c->in, c->nin, false, grads);
            double t1 = now_s();
            if (st == KN_OK) dt = t1 - t0;
        }
    }
    kn_scope_end(s);
    return dt;
}

/* Warm-up then K timed calls; returns the median seconds or < 0 on error. */
static double time_case(opcase *c, kn_tensor *g, const timing *tm, int *reps_out) {
    double samples[MAX_REPS], warm_total = 0.0;
    int warm = 0;
    do {
        double dt = one_call(c, g);
        if (dt < 0) return -1.0;
        warm_total += dt;
        warm++;
    } while (!tm->quick && (warm < 2 || (warm_total < 0.25 && warm < 10)));
    int reps = 2;
    if (!tm->quick) {
        double per = warm_total / warm;
        reps = per > 0 ? (int)ceil(tm->target_s / per) : MAX_REPS;
        reps = reps < MIN_REPS ? MIN_REPS : reps > MAX_REPS ? MAX_REPS : reps;
    }
    for (int i = 0; i < reps; i++) {
        samples[i] = one_call(c, g);
        if (samples[i] < 0) return -1.0;
    }
    *reps_out = reps;
    return median(samples, reps);
}

static void print_status(const opcase *c, const char *pass, const char *status, const char *msg) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", msg ? msg : "");
    for (char *p = buf; *p; p++)
        if (*p == '"' || *p == '\n') *p = '\'';
    printf("raw bench=ops op=%s pass=%s shape=%s impl=kiln status=%s msg=\"%s\"\n", c->name, pass,
           c->shape, status, buf);
    fflush(stdout);
}

static void free_case(opcase *c) {
    for (int i = 0; i < MAX_IN; i++) {
        kn_tensor_free(c->in[i]);
        c->in[i] = NULL;
    }
    for (int i = 0; i < 2; i++) {
        kn_tensor_free(c->extra[i]);
        c->extra[i] = NULL;
    }
}

/* Runs fwd and bwd of one case; returns the number of failed passes. */
static int bench_case(opcase *c, int threads, const timing *tm) {
    int failed = 0;
    size_t live0 = kn_live_tensors();
    kn_manual_seed(1234);
    if (!c->setup(c)) {
        print_status(c, "fwd", "error", kn_last_error());
        print_status(c, "bwd", "error", kn_last_error());
        free_case(c);
        return 2;
    }
    int reps = 0;
    double t = time_case(c, NULL, tm, &reps);
    if (t < 0) {
        print_status(c, "fwd", "error", kn_last_error());
        failed++;
    } else {
        printf("raw bench=ops op=%s pass=fwd shape=%s impl=kiln threads=%d ms=%.4f reps=%d\n",
               c->name, c->shape, threads, t * 1e3, reps);
        fflush(stdout);
    }

    /* Backward: every float input requires grad; g is a random output grad. */
    kn_tensor *g = NULL;
    const char *why = NULL;
    for (int i = 0; i < c->nin; i++)
        if (kn_tensor_set_requires_grad(c->in[i], true) != KN_OK) why = "set_requires_grad";
    if (!why) {
        kn_scope s = kn_scope_begin();
        kn_tensor *y = c->run(c);
        if (y) g = kn_keep(randn(kn_tensor_ndim(y), kn_tensor_shape(y)));
        kn_scope_end(s);
        if (!g) why = "forward";
    }
    t = why ? -1.0 : time_case(c, g, tm, &reps);
    if (t < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s%s%s", why ? why : "", why ? ": " : "", kn_last_error());
        print_status(c, "bwd", "error", msg);
        failed++;
    } else {
        printf("raw bench=ops op=%s pass=bwd shape=%s impl=kiln threads=%d ms=%.4f reps=%d\n",
               c->name, c->shape, threads, t * 1e3, reps);
        fflush(stdout);
    }
    kn_tensor_free(g);
    free_case(c);
    if (kn_live_tensors() != live0) /* the scopes must leave nothing behind */
        printf("# warning: op=%s: %zu tensors alive before the case, %zu after\n", c->name, live0,
               kn_live_tensors());
    return failed;
}

/* Whether `name` is in the comma-separated list (NULL list: everything). */
static bool selected(const char *list, const char *name) {
    if (!list || !*list) return true;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

int main(int argc, char **argv) {
    int threads = 2;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
            if (threads < 1) goto usage;
        } else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            only = argv[++i];
        } else {
            goto usage;
        }
    }
    timing tm = {.quick = env_flag("BENCH_QUICK"), .target_s = env_double("BENCH_TARGET_S", 0.4)};
    if (kn_set_num_threads(threads) != KN_OK) {
        fprintf(stderr, "bench_ops: kn_set_num_threads(%d): %s\n", threads, kn_last_error());
        return 2;
    }
    printf("# bench_ops: kiln %s threads=%d blas=%d cpu=\"%s\" quick=%d\n", KN_VERSION_STRING,
           kn_get_num_threads(), (int)kn_have_blas(), kn_cpu_features(), (int)tm.quick);
    int failed = 0;
    for (int i = 0; i < NCASES; i++)
        if (selected(only, CASES[i].name)) failed += bench_case(&CASES[i], threads, &tm);
    return failed ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench_ops [--threads 2] [--ops add,mul,...]\n");
    return 2;
}
