/*
 * test_train.c - the llm.c-style expected-trajectory test: the Fashion-MNIST example's MLP and
 * LeNet, initialised by a formula, trained 10 steps on deterministic batches with SGD (momentum
 * 0.9) and with AdamW, must reproduce PyTorch's losses (1e-4 relative) and final weights (1e-4)
 * recorded by tools/gen_train_ref.py in tests/golden/train_ref.safetensors. Also: training is
 * bit-identical with 1 and 2 threads, and a training loop runs in flat memory.
 */
#include <math.h>

#include "kn_test.h"

enum { STEPS = 10, BATCH = 64 };
static const double MEAN = 0.2860, STD = 0.3530;

static kn_module *make_mlp(void) {
    kn_module *m[] = {kn_nn_flatten(1, -1), kn_nn_linear(784, 512, true),
                      kn_nn_relu(),         kn_nn_linear(512, 256, true),
                      kn_nn_relu(),         kn_nn_linear(256, 10, true)};
    return kn_nn_sequential(m, 6);
}

static kn_module *make_lenet(void) {
    kn_pool_opts pool = {.kernel = {2, 2}};
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
    return kn_nn_sequential(m, 12);
}

/* param k, element i: bound * sin(0.7 i + 1.3 k + 0.1), bound = 1/sqrt(fan_in of its layer) */
static int init_formula(kn_module *model) {
    kn_named_tensor sd[64];
    int n = kn_module_state_dict(model, sd, 64);
    if (n < 1 || n > 64) return -1;
    for (int k = 0; k < n; k++) {
        char layer[64];
        snprintf(layer, sizeof layer, "%s", sd[k].name);
        char *dot = strrchr(layer, '.');
        if (!dot) return -1;
        *dot = 0;
        kn_tensor *w = kn_module_param(kn_module_child(model, layer), "weight");
        int64_t fan_in, fan_out;
        if (!w || kn_init_fans(w, &fan_in, &fan_out)) return -1;
        double bound = 1.0 / sqrt((double)fan_in);
        int64_t ne = kn_tensor_numel(sd[k].tensor);
        float *v = kn_tensor_data(sd[k].tensor);
        for (int64_t i = 0; i < ne; i++)
            v[i] = (float)(bound * sin(0.7 * (double)i + 1.3 * k + 0.1));
    }
    return 0;
}

static void make_batch(int b, bool image, kn_tensor **x, kn_tensor **y) {
    static float xs[BATCH * 784];
    static int64_t ys[BATCH];
    for (int n = 0; n < BATCH; n++) {
        for (int p = 0; p < 784; p++) {
            int u = (n * 131 + p * 17 + b * 7) % 256;
            xs[n * 784 + p] = (float)(((float)u / 255.0f - (float)MEAN) / (float)STD);
        }
        ys[n] = (n * 7 + b * 3) % 10;
    }
    *x = image ? kn_from_data(KN_F32, 4, (int64_t[]){BATCH, 1, 28, 28}, xs)
               : kn_from_data(KN_F32, 2, (int64_t[]){BATCH, 784}, xs);
    *y = kn_from_data(KN_I64, 1, (int64_t[]){BATCH}, ys);
}

/* trains STEPS steps; losses[STEPS]; returns 0 on success */
static int train(kn_module *model, bool image, bool adamw, double *losses) {
    kn_optimizer *opt = adamw ? kn_adamw_for(model, &(kn_adam_opts){.lr = 1e-3})
                              : kn_sgd_for(model, &(kn_sgd_opts){.lr = 0.01, .momentum = 0.9});
    if (!opt) return -1;
    int rc = 0;
    for (int b = 0; b < STEPS && rc == 0; b++) {
        kn_scope s = kn_scope_begin();
        kn_tensor *x, *y;
        make_batch(b, image, &x, &y);
        kn_optimizer_zero_grad(opt, true);
        kn_tensor *loss = kn_cross_entropy(kn_module_forward(model, x), y, NULL);
        if (!loss || kn_backward(loss, NULL) || kn_optimizer_step(opt))
            rc = -1;
        else
            losses[b] = kn_item(loss);
        kn_scope_end(s);
    }
    kn_optimizer_free(opt);
    return rc;
}

static kn_file *golden(void) {
    const char *root = getenv("KILN_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/train_ref.safetensors", root ? root : ".");
    return kn_file_open(path);
}

static void check_config(const char *mname, bool adamw) {
    kn_file *f = golden();
    KT_NOTNULL(f);
    bool lenet = strcmp(mname, "lenet") == 0;
    kn_module *model = lenet ? make_lenet() : make_mlp();
    if (!model || init_formula(model)) {
        kn_module_free(model);
        kn_file_close(f);
        KT_FAIL("%s: model setup failed: %s", mname, kn_last_error());
    }
    double losses[STEPS];
    int rc = train(model, lenet, adamw, losses);
    const char *oname = adamw ? "adamw" : "sgd";
    char key[128];
    int bad = rc;
    kn_scope s = kn_scope_begin();
    snprintf(key, sizeof key, "%s.%s.losses", mname, oname);
    kn_tensor *ref = kn_file_get(f, key);
    for (int i = 0; !bad && ref && i < STEPS; i++) {
        double e = kn_tensor_get(ref, (int64_t[]){i});
        if (fabs(losses[i] - e) > 1e-4 * fabs(e)) {
            fprintf(stderr, "  %s/%s step %d: loss %.7f, PyTorch %.7f\n", mname, oname, i,
                    losses[i], e);
            bad = 1;
        }
    }
    kn_named_tensor sd[64];
    int n = kn_module_state_dict(model, sd, 64);
    for (int k = 0; !bad && k < n; k++) {
        snprintf(key, sizeof key, "%s.%s.%s", mname, oname, sd[k].name);
        kn_tensor *e = kn_file_get(f, key);
        kn_tensor *a =
            lenet ? sd[k].tensor
                  : kn_slice(kn_reshape(sd[k].tensor, 1, (int64_t[]){-1}), 0, 0, KN_SLICE_END, 7);
        if (!e || !a) {
            bad = 1;
            break;
        }
        if (lenet) e = kn_reshape(e, kn_tensor_ndim(a), kn_tensor_shape(a));
        bad = kt_tensor_close(key, a, e, 1e-4, 1e-4);
    }
    kn_scope_end(s);
    kn_module_free(model);
    kn_file_close(f);
    if (!ref) KT_FAIL("golden file lacks %s.%s.losses", mname, oname);
    if (bad) KT_FAIL("%s with %s differs from PyTorch (%s)", mname, oname, kn_last_error());
}

static void test_mlp_sgd(void) {
    check_config("mlp", false);
}
static void test_mlp_adamw(void) {
    check_config("mlp", true);
}
static void test_lenet_sgd(void) {
    check_config("lenet", false);
}
static void test_lenet_adamw(void) {
    check_config("lenet", true);
}

/* the whole training step is bit-identical with 1 and 2 threads */
static void test_threads_bit_identical(void) {
    double l1[STEPS], l2[STEPS];
    int prev = kn_get_num_threads();
    kn_module *a = make_lenet(), *b = make_lenet();
    KT_TRUE(a && b && init_formula(a) == 0 && init_formula(b) == 0);
    kn_set_num_threads(1);
    int r1 = train(a, true, false, l1);
    kn_set_num_threads(2);
    int r2 = train(b, true, false, l2);
    kn_set_num_threads(prev);
    kn_named_tensor sa[64], sb[64];
    int n = kn_module_state_dict(a, sa, 64);
    kn_module_state_dict(b, sb, 64);
    int same = r1 == 0 && r2 == 0;
    for (int i = 0; same && i < STEPS; i++)
        same = l1[i] == l2[i];
    for (int k = 0; same && k < n; k++)
        same = memcmp(kn_tensor_data(sa[k].tensor), kn_tensor_data(sb[k].tensor),
                      (size_t)kn_tensor_numel(sa[k].tensor) * 4) == 0;
    kn_module_free(a);
    kn_module_free(b);
    KT_TRUE(same);
}

static void test_no_leaks(void) {
    KT_EQ_INT(0, kn_live_tensors());
}

int main(void) {
    KT_RUN(test_mlp_sgd);
    KT_RUN(test_mlp_adamw);
    KT_RUN(test_lenet_sgd);
    KT_RUN(test_lenet_adamw);
    KT_RUN(test_threads_bit_identical);
    KT_RUN(test_no_leaks);
    return kt_finish();
}
