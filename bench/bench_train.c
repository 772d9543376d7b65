/*
 * bench_train.c - kiln side of the training benchmark: samples/s of a training loop on the real
 * Fashion-MNIST training set, and the process's peak RSS, through the public API only (kn_nn_*
 * modules, kn_cross_entropy, kn_backward, SGD, kn_loader), one kn_scope per step. --mode eager
 * (default) runs the eager loop; --mode graph runs the same step as a compiled kn_train_step.
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
 * PyTorch's DataLoader default), x*1/255 normalised with mean 0.2860 / std 0.3530, prefetch on
 * (kiln's loader prefetches only with a core spare from the compute threads; at 2 threads on 2
 * cores batches are built in the loop, as peer_torch.py builds them), add_channel_dim for lenet. Batch fetching is inside the timed loop (it is part of training).
 *
 * --mode graph: kn_train_step_new(loss_fn, model, opt, NULL) with loss_fn = cross_entropy(
 * forward(x), y), and kn_train_step_run per batch instead of zero_grad/forward/backward/step (the
 * loss comes back through its double *). Before the warm-up, two compile steps (real SGD steps)
 * trace the step for the full batch and for the last partial batch's size (60000 % 64 = 32 rows,
 * sliced from a batch) and build both memory plans, so no trace or plan allocation falls inside
 * the timed steps when they cross an epoch boundary.
 *
 * Memory of a step (timed mode): kn_memory_reset_peak() right before the timed steps, then
 * step_peak_mb = (kn_memory_peak() after them - kn_memory_in_use() before them) / 2^20: what the
 * steps allocate on top of what lives between steps (in_use_mb: parameters, optimizer state, the
 * graph's arenas). Eager drops the previous step's .grad tensors (zero_grad(set_to_none), which
 * the next step does first anyway) before in_use_mb is read, so its step_peak_mb counts the
 * gradients as well as the activations. The graph keeps activations and gradients in its
 * preallocated arena, so its step_peak_mb is only what runs outside the arena (batches, kernel
 * scratch); arena_mb is the full-batch step's arena (0 in eager), partial_arena_mb the partial
 * batch's, and step_mem_mb = step_peak_mb + arena_mb is the memory one step needs in either
 * mode (the number to compare between modes).
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
 * Output: one raw line on stdout (impl=kiln for eager, impl=kiln_graph for graph),
 *   raw bench=train model=<m> impl=kiln threads=<n> samples_per_s=<..> steps=<N> samples=<..>
 *       seconds=<..> loss=<mean loss of the timed steps> peak_rss_mb=<ru_maxrss> live_growth=<..>
 *       step_peak_mb=<..> in_use_mb=<..> arena_mb=<..> partial_arena_mb=<..> step_mem_mb=<..>
 *   raw bench=train_rss model=<m> impl=kiln threads=<n> epochs=<E> steps=<..> samples_per_s=<..>
 *       loss=<..> peak_rss_mb=<..> live_tensors=<at the end of each epoch, comma separated>
 * or `raw bench=train... impl=kiln status=error msg="<kn_last_error()>"`. live_growth is the
 * number of live tensors after the timed steps minus after the warm-up (0: nothing leaks).
 *
 * Usage: bench_train --model mlp|lenet [--mode eager|graph] [--threads 2] [--steps N]
 *                    [--epochs E] [--epoch-steps K]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kiln/kiln.h"

#include "bench_util.h"

#define BATCH 64
#define MIN_STEPS 20
#define MAX_STEPS 100000
#define MAX_EPOCHS 64

static const double LR = 0.01, MOMENTUM = 0.9;
static const double MEAN = 0.2860, STD = 0.3530;
static const char *g_impl = "kiln"; /* "kiln_graph" in graph mode */

/* Peak resident set size of this process in MiB (Linux: ru_maxrss is in KiB). */
static double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1.0;
    return (double)ru.ru_maxrss / 1024.0;
}

/* ---- models: must match make_train_model in peer_torch.py ---- */

#include "bench_models.h"

/* ---- the training loop ---- */

typedef struct trainer {
    kn_module *model;
    kn_optimizer *opt;
    kn_loader *loader;
    kn_train_step *ts; /* graph mode */
    int64_t partial;   /* rows of the last partial batch (0: none) */
} trainer;

/* The graph mode's loss function: cross_entropy(model(x), y). */
static int loss_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    (void)nin;
    (void)max_out;
    out[0] = kn_cross_entropy(kn_module_forward(user, in[0]), in[1], NULL);
    return out[0] ? 1 : (int)kn_last_status();
}

/* One step on batch (x, y) in either mode; KN_OK with *loss_out set. */
static kn_status step_on(trainer *t, kn_tensor *x, kn_tensor *y, double *loss_out) {
    if (t->ts) {
        kn_tensor *in[2] = {x, y};
        return kn_train_step_run(t->ts, in, 2, loss_out);
    }
    kn_status st = kn_optimizer_zero_grad(t->opt, true);
    if (st != KN_OK) return st;
    kn_tensor *logits = kn_module_forward(t->model, x);
    kn_tensor *loss = logits ? kn_cross_entropy(logits, y, NULL) : NULL;
    if (!loss) return kn_last_status();
    if ((st = kn_backward(loss, NULL)) != KN_OK) return st;
    if ((st = kn_optimizer_step(t->opt)) != KN_OK) return st;
    *loss_out = kn_item(loss);
    return KN_OK;
}

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
    if (step_on(t, x, y, loss_out) != KN_OK) goto done;
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
    printf("raw bench=%s model=%s impl=%s status=error msg=\"%s\"\n", bench, model, g_impl, buf);
    fflush(stdout);
}

/* Graph mode, before the warm-up: one step on a full batch and one on the first t->partial rows
 * of the next batch, so that both shapes are traced and compiled and both memory plans (arenas)
 * exist. *full_g and *part_g get the two graphs (borrowed; NULL when there is no partial batch).
 * Returns 0 or 1 (error, line printed). */
static int compile_steps(trainer *t, const char *model, kn_graph **full_g, kn_graph **part_g) {
    int64_t ns = 0;
    double loss = 0.0;
    *full_g = *part_g = NULL;
    if (train_step(t, true, &ns, &loss) != 1 || !(*full_g = kn_train_step_graph(t->ts))) {
        print_error("train", model, "compile step (full batch)");
        return 1;
    }
    if (t->partial <= 0) return 0;
    kn_scope s = kn_scope_begin();
    int rc = 1;
    kn_tensor *x = NULL, *y = NULL;
    int got = kn_loader_next(t->loader, &x, &y);
    if (got == 0) got = kn_loader_next(t->loader, &x, &y);
    if (got != 1 || kn_tensor_dim(x, 0) < t->partial) goto done;
    kn_tensor *xs = kn_contiguous(kn_slice(x, 0, 0, t->partial, 1));
    kn_tensor *ys = kn_contiguous(kn_slice(y, 0, 0, t->partial, 1));
    if (!xs || !ys || step_on(t, xs, ys, &loss) != KN_OK) goto done;
    if (!(*part_g = kn_train_step_graph(t->ts)) || kn_graph_arena_bytes(*part_g, t->partial) < 0)
        goto done;
    rc = 0;
done:
    kn_scope_end(s);
    if (rc) print_error("train", model, "compile step (partial batch)");
    return rc;
}

/* Timed mode. Returns 0 or 1 (error, line printed). */
static int run_timed(trainer *t, const char *model, int threads, long fixed_steps) {
    bool quick = env_flag("BENCH_QUICK");
    int warm = quick ? 2 : (int)env_double("BENCH_TRAIN_WARMUP", 20);
    double target = env_double("BENCH_TRAIN_S", 6.0);
    int64_t ns = 0;
    kn_graph *full_g = NULL, *part_g = NULL;
    if (t->ts && compile_steps(t, model, &full_g, &part_g)) return 1;
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
    size_t live0 = kn_live_tensors(); /* before zero_grad drops the .grad tensors */
    int64_t arena = 0, part_arena = 0;
    if (t->ts) {
        /* builds the full batch's plan too when there was no warm-up step */
        arena = kn_graph_arena_bytes(full_g, BATCH);
        part_arena = part_g ? kn_graph_arena_bytes(part_g, t->partial) : 0;
        if (arena < 0 || part_arena < 0) {
            print_error("train", model, "kn_graph_arena_bytes");
            return 1;
        }
    } else if (kn_optimizer_zero_grad(t->opt, true) != KN_OK) {
        print_error("train", model, "zero_grad");
        return 1;
    }
    int64_t samples = 0;
    double loss_sum = 0.0;
    const double mib = 1024.0 * 1024.0;
    size_t in_use0 = kn_memory_in_use();
    kn_memory_reset_peak();
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
    size_t peak = kn_memory_peak();
    double step_peak = (double)(peak > in_use0 ? peak - in_use0 : 0) / mib;
    long live_growth = (long)kn_live_tensors() - (long)live0;
    printf("raw bench=train model=%s impl=%s threads=%d samples_per_s=%.1f steps=%ld "
           "samples=%lld seconds=%.3f loss=%.4f peak_rss_mb=%.1f live_growth=%ld "
           "step_peak_mb=%.3f in_use_mb=%.3f arena_mb=%.3f partial_arena_mb=%.3f "
           "step_mem_mb=%.3f\n",
           model, g_impl, threads, (double)samples / secs, steps, (long long)samples, secs,
           loss_sum / (double)steps, peak_rss_mb(), live_growth, step_peak, (double)in_use0 / mib,
           (double)arena / mib, (double)part_arena / mib, step_peak + (double)arena / mib);
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
    printf("raw bench=train_rss model=%s impl=%s threads=%d epochs=%d steps=%ld "
           "samples_per_s=%.1f loss=%.4f peak_rss_mb=%.1f live_tensors=",
           model, g_impl, threads, epochs, steps, (double)samples / secs, last_epoch_loss,
           peak_rss_mb());
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
    bool graph = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            const char *m = argv[++i];
            if (!strcmp(m, "graph"))
                graph = true;
            else if (strcmp(m, "eager"))
                goto usage;
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
    if (graph) g_impl = "kiln_graph";
    if (kn_set_num_threads(threads) != KN_OK) {
        fprintf(stderr, "bench_train: kn_set_num_threads(%d): %s\n", threads, kn_last_error());
        return 2;
    }
    printf("# bench_train: kiln %s model=%s mode=%s threads=%d blas=%d cpu=\"%s\" quick=%d "
           "data=%s\n",
           KN_VERSION_STRING, model, graph ? "graph" : "eager", kn_get_num_threads(),
           (int)kn_have_blas(), kn_cpu_features(), (int)env_flag("BENCH_QUICK"),
           kn_fashion_mnist_dir());
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
    if (graph && !(t.ts = kn_train_step_new(loss_fn, t.model, t.opt, NULL))) {
        print_error(bench, model, "kn_train_step_new");
        goto out;
    }
    t.partial = kn_tensor_dim(images, 0) % BATCH;
    rc = epochs ? run_epochs(&t, model, threads, epochs, epoch_steps)
                : run_timed(&t, model, threads, steps);
out:
    kn_train_step_free(t.ts);
    if (t.opt) kn_optimizer_free(t.opt);
    kn_module_free(t.model);
    if (t.loader) kn_loader_free(t.loader);
    kn_tensor_free(images);
    kn_tensor_free(labels);
    return rc;
usage:
    fprintf(stderr, "usage: bench_train --model mlp|lenet [--mode eager|graph] [--threads 2] "
                    "[--steps N] [--epochs E] [--epoch-steps K]\n");
    return 2;
}
