/*
 * bench_models.h - the two Fashion-MNIST models every kiln benchmark times, defined once for
 * bench_train.c and bench_infer.c. They must match make_train_model in peer_torch.py (and the
 * examples' models): MLP 784-512-256-10 with ReLU; LeNet-5 conv5x5(6) pool conv5x5(16) pool
 * fc120 fc84 fc10.
 */
#ifndef KILN_BENCH_MODELS_H
#define KILN_BENCH_MODELS_H

#include "kiln/kiln.h"

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

#endif
