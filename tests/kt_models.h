/*
 * kt_models.h - the small models the graph tests trace, defined once: an MLP (784-64-32-10, the
 * examples' shape made small), the examples' full MLP (784-512-256-10) and LeNet-5.
 */
#ifndef KT_MODELS_H
#define KT_MODELS_H

#include "kiln/kiln.h"

static kn_module *kt_mlp(int64_t h1, int64_t h2) {
    kn_module *m[] = {kn_nn_flatten(1, -1), kn_nn_linear(784, h1, true),
                      kn_nn_relu(),         kn_nn_linear(h1, h2, true),
                      kn_nn_relu(),         kn_nn_linear(h2, 10, true)};
    return kn_nn_sequential(m, 6);
}
static inline kn_module *mlp(void) {
    return kt_mlp(64, 32);
}
static inline kn_module *mlp_full(void) {
    return kt_mlp(512, 256);
}

static inline kn_module *lenet(void) {
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

#endif
