/*
 * bench_train.c - kiln side of the training benchmark: samples/s of an eager training loop on
 * the real Fashion-MNIST training set, and the process's peak RSS, through the public API only
 * (kn_nn_* modules, kn_cross_entropy, kn_backward, SGD, kn_loader), one kn_scope per step.
 *
 * What it does not do: run PyTorch, compare, or aggregate rounds. bench/run.sh runs this program
 * and `bench/peer_torch.py train` alternately and turns the raw lines into ratios. The models,
 * loss, optimizer, batch size and normalisation here and in peer_torch.py (TRAIN_*) must stay
 * the same.
 *
 * Models (as the examples use them):
 *   mlp:   Flatten, Linear(784,512), ReLU, Linear(512,256), ReLU, Linear(256,10)
 *   lenet: Conv2d(1,6,5), ReLU, MaxPool2d(2), Conv2d(6,16,5), ReLU, MaxPool2d(2), Flatten,
 *          Linear(256,120), ReLU, Linear(120,84), ReLU, Linear(84,10)
 * Step: zero_grad(set_to_none=True) on both sides (PyTorch 2.x default), forward, cross_entropy
 * (mean), backward, SGD(lr 0.01, momentum 0.9) step, loss read back with kn_item (as a training
 * loop that logs the running loss does). Data: kn_mnist_load(kn_fashion_mnist_dir(), "train"),
 * kn_loader with shuffle (seed 1234), batch 64, last partial batch kept (drop_last off, like
 * PyTorch's DataLoader default), x*1/255 normalised with mean 0.2860 / std 0.3530, prefetch on,
 * add_channel_dim for lenet. Batch fetching is inside the timed loop (it is part of training).
 *
 * Modes:
 *  - timed (default): warm-up of BENCH_TRAIN_WARMUP (20) steps, then N steps with N chosen from
 *    the warm-up's speed so that they take about BENCH_TRAIN_S (6) seconds (clamped to
 *    [20, 100000]); --steps N fixes N. Steps run on across epoch boundaries. samples/s = samples
 *    in the N steps / their wall time.
 *  - --epochs E: E full epochs from the start (no warm-up), for the flat-memory check
 *    (run.sh compares the peak RSS of separate 1- and 3-epoch processes). --epoch-steps K caps
 *    each epoch at K steps (for BENCH_QUICK only).
 * BENCH_QUICK=1 (timed mode): 2 warm-up and 5 timed steps, a pipeline check, not a measurement.
 *
 * Output: one raw line on stdout,
 *   raw bench=train model=<m> impl=kiln threads=<n> samples_per_s=<..> steps=<N> samples=<..>
 *       seconds=<..> loss=<mean loss of the timed steps> peak_rss_mb=<ru_maxrss> live_growth=<..>
 *   raw bench=train_rss model=<m> impl=kiln threads=<n> epochs=<E> steps=<..> samples_per_s=<..>
 *       loss=<..> peak_rss_mb=<..> live_tensors=<at the end of each epoch, comma separated>
 * or `raw bench=train... impl=kiln status=error msg="<kn_last_error()>"`. live_growth is the
 * number of live tensors after the timed steps minus after the warm-up (0: nothing leaks).
 *
 * Usage: bench_train --model mlp|lenet [--threads 2] [--steps N] [--epochs E] [--epoch-steps K]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kiln/kiln.h"

#define BATCH 64
#define MIN_STEPS 20
#define MAX_STEPS 100000
#define MAX_EPOCHS 64

static const double LR = 0.01, MOMENTUM = 0.9;
static const double MEAN = 0.2860, STD = 0.3530;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double env_double(const char *name, double dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    double v = strtod(s, &end);
    return (*end == '\0' && v > 0) ? v : dflt;
}

static bool env_flag(const char *name) {
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

/* Peak resident set size of this process in MiB (Linux: ru_maxrss is in KiB). */
static double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1.0;
    return (double)ru.ru_maxrss / 1024.0;
}

/* ---- models: must match make_train_model in peer_torch.py ---- */

static kn_module *make_mlp(void) {
    kn_module *m[] = {kn_nn_flatten(1, -1), kn_nn_linear(784, 512, true),
                      kn_nn_relu(),         kn_nn_linear(512, 256, true),
                      kn_nn_relu(),         kn_nn_linear(256, 10, true)};
    return kn_nn_sequential(m, (int)(sizeof m / sizeof m[0]));
}

static kn_module *make_lenet(void) {
    const kn_pool_opts pool = {.kernel = {2, 2}, .stride = {2, 2}};
    kn_module *m[] = {kn_nn_conv2d(1, 6, 5, 5, NULL, true),
                      kn_nn_relu(),
                      kn_nn_maxpool2d(&pool),
                      kn_nn_conv2d(6, 16, 5, 5, NULL, true),
                      kn_nn_relu(),
                      kn_nn_maxpool2d(&pool),
                      kn_nn_flatten(1, -1),
                      kn_nn_linear(256, 120, true),
                      kn_nn_relu(),
                      kn_nn_linear(120, 84, true),
                      kn_nn_relu(),
                      kn_nn_linear(84, 10, true)};
    return kn_nn_sequential(m, (int)(sizeof m / sizeof m[0]));
}

/* ---- the training loop ---- */

typedef struct trainer {
    kn_module *model;
    kn_optimizer *opt;
    kn_loader *loader;
} trainer;

/* One training step on the loader's next batch (starting the next epoch when this one is over
 * and `roll` is set). Returns 1 after a step (*nsamples, *loss set), 0 at the end of an epoch
 * when !roll, -1 on error. */
static int train_step(trainer *t, bool roll, int64_t *nsamples, double *loss_out) {
    kn_scope s = kn_scope_begin();
    int rc = -1;
    kn_tensor *x = NULL, *y = NULL;
    int got = kn_loader_next(t->loader, &x, &y);
    if (got == 0 && roll) got = kn_loader_next(t->loader, &x, &y);
    if (got <= 0) {
        rc = got;
        goto done;
    }
    if (kn_optimizer_zero_grad(t->opt, true) != KN_OK) goto done;
    kn_tensor *logits = kn_module_forward(t->model, x);
    if (!logits) goto done;
    kn_tensor *loss = kn_cross_entropy(logits, y, NULL);
    if (!loss) goto done;
    if (kn_backward(loss, NULL) != KN_OK) goto done;
    if (kn_optimizer_step(t->opt) != KN_OK) goto done;
    *loss_out = kn_item(loss);
    *nsamples = kn_tensor_dim(x, 0);
    rc = 1;
done:
    kn_scope_end(s);
    return rc;
}

static void print_error(const char *bench, const char *model, const char *what) {
    char buf[320];
    snprintf(buf, sizeof buf, "%s: %s", what, kn_last_error());
    for (char *p = buf; *p; p++)
        if (*p == '"' || *p == '\n') *p = '\'';
    printf("raw bench=%s model=%s impl=kiln status=error msg=\"%s\"\n", bench, model, buf);
    fflush(stdout);
}

/* Timed mode. Returns 0 or 1 (error, line printed). */
static int run_timed(trainer *t, const char *model, int threads, long fixed_steps) {
    bool quick = env_flag("BENCH_QUICK");
    int warm = quick ? 2 : (int)env_double("BENCH_TRAIN_WARMUP", 20);
    double target = env_double("BENCH_TRAIN_S", 6.0);
    int64_t ns = 0;
    double loss = 0.0, t0 = now_s();
    for (int i = 0; i < warm; i++)
        if (train_step(t, true, &ns, &loss) != 1) {
            print_error("train", model, "warm-up step");
            return 1;
        }
    double per = (now_s() - t0) / (warm > 0 ? warm : 1);
    long steps = fixed_steps;
    if (steps <= 0) {
        steps = quick ? 5 : (per > 0 ? (long)ceil(target / per) : MAX_STEPS);
        if (!quick) steps = steps < MIN_STEPS ? MIN_STEPS : steps > MAX_STEPS ? MAX_STEPS : steps;
    }
    size_t live0 = kn_live_tensors();
    int64_t samples = 0;
    double loss_sum = 0.0;
    t0 = now_s();
    for (long i = 0; i < steps; i++) {
        if (train_step(t, true, &ns, &loss) != 1) {
            print_error("train", model, "timed step");
            return 1;
        }
        samples += ns;
        loss_sum += loss;
    }
    double secs = now_s() - t0;
    long live_growth = (long)kn_live_tensors() - (long)live0;
    printf("raw bench=train model=%s impl=kiln threads=%d samples_per_s=%.1f steps=%ld "
           "samples=%lld seconds=%.3f loss=%.4f peak_rss_mb=%.1f live_growth=%ld\n",
           model, threads, (double)samples / secs, steps, (long long)samples, secs,
           loss_sum / (double)steps, peak_rss_mb(), live_growth);
    fflush(stdout);
    return 0;
}

/* Epochs mode (flat-memory check). Returns 0 or 1. */
static int run_epochs(trainer *t, const char *model, int threads, int epochs, long epoch_steps) {
    size_t live[MAX_EPOCHS];
    int64_t samples = 0, ns = 0;
    long steps = 0;
    double loss = 0.0, loss_sum = 0.0, last_epoch_loss = 0.0, t0 = now_s();
    for (int e = 0; e < epochs; e++) {
        if (kn_loader_set_epoch(t->loader, e) != KN_OK) {
            print_error("train_rss", model, "set_epoch");
            return 1;
        }
        long k = 0;
        loss_sum = 0.0;
        for (; epoch_steps <= 0 || k < epoch_steps; k++) {
            int rc = train_step(t, false, &ns, &loss);
            if (rc == 0) break;
            if (rc < 0) {
                print_error("train_rss", model, "step");
                return 1;
            }
            samples += ns;
            loss_sum += loss;
        }
        steps += k;
        last_epoch_loss = k ? loss_sum / (double)k : 0.0;
        live[e] = kn_live_tensors();
    }
    double secs = now_s() - t0;
    printf("raw bench=train_rss model=%s impl=kiln threads=%d epochs=%d steps=%ld "
           "samples_per_s=%.1f loss=%.4f peak_rss_mb=%.1f live_tensors=",
           model, threads, epochs, steps, (double)samples / secs, last_epoch_loss, peak_rss_mb());
    for (int e = 0; e < epochs; e++)
        printf("%s%zu", e ? "," : "", live[e]);
    printf("\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int threads = 2, epochs = 0;
    long steps = 0, epoch_steps = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
            if (threads < 1) goto usage;
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atol(argv[++i]);
            if (steps < 1) goto usage;
        } else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) {
            epochs = atoi(argv[++i]);
            if (epochs < 1 || epochs > MAX_EPOCHS) goto usage;
        } else if (!strcmp(argv[i], "--epoch-steps") && i + 1 < argc) {
            epoch_steps = atol(argv[++i]);
            if (epoch_steps < 1) goto usage;
        } else {
            goto usage;
        }
    }
    bool lenet;
    if (model && !strcmp(model, "mlp"))
        lenet = false;
    else if (model && !strcmp(model, "lenet"))
        lenet = true;
    else
        goto usage;
    const char *bench = epochs ? "train_rss" : "train";
    if (kn_set_num_threads(threads) != KN_OK) {
        fprintf(stderr, "bench_train: kn_set_num_threads(%d): %s\n", threads, kn_last_error());
        return 2;
    }
    printf("# bench_train: kiln %s model=%s threads=%d blas=%d cpu=\"%s\" quick=%d data=%s\n",
           KN_VERSION_STRING, model, kn_get_num_threads(), (int)kn_have_blas(), kn_cpu_features(),
           (int)env_flag("BENCH_QUICK"), kn_fashion_mnist_dir());
    fflush(stdout);

    int rc = 1;
    trainer t = {0};
    kn_tensor *images = NULL, *labels = NULL;
    if (kn_mnist_load(kn_fashion_mnist_dir(), "train", &images, &labels) != KN_OK) {
        print_error(bench, model, "kn_mnist_load");
        goto out;
    }
    kn_loader_opts lo = {.batch_size = BATCH,
                         .shuffle = true,
                         .seed = 1234,
                         .drop_last = false,
                         .prefetch = true,
                         .scale = 1.0 / 255.0,
                         .mean = MEAN,
                         .std = STD,
                         .add_channel_dim = lenet};
    t.loader = kn_loader_new(images, labels, &lo);
    if (!t.loader) {
        print_error(bench, model, "kn_loader_new");
        goto out;
    }
    kn_manual_seed(1234);
    t.model = lenet ? make_lenet() : make_mlp();
    if (!t.model) {
        print_error(bench, model, "model");
        goto out;
    }
    kn_sgd_opts so = {.lr = LR, .momentum = MOMENTUM};
    t.opt = kn_sgd_for(t.model, &so);
    if (!t.opt) {
        print_error(bench, model, "kn_sgd_for");
        goto out;
    }
    rc = epochs ? run_epochs(&t, model, threads, epochs, epoch_steps)
                : run_timed(&t, model, threads, steps);
out:
    if (t.opt) kn_optimizer_free(t.opt);
    kn_module_free(t.model);
    if (t.loader) kn_loader_free(t.loader);
    kn_tensor_free(images);
    kn_tensor_free(labels);
    return rc;
usage:
    fprintf(stderr, "usage: bench_train --model mlp|lenet [--threads 2] [--steps N] "
                    "[--epochs E] [--epoch-steps K]\n");
    return 2;
}
