/*
 * kt_f64.h - small f64 helpers shared by the op-family tests: literal tensors, deterministic
 * leaves that require grad, a gradcheck wrapper that prints why it failed, seeded randn.
 */
#ifndef KT_F64_H
#define KT_F64_H

#include "kn_test.h"

static inline kn_tensor *T64(int nd, const int64_t *shape, const double *v) {
    return kn_from_data(KN_F64, nd, shape, v);
}
static inline kn_tensor *expect(const kn_tensor *like, const double *v) {
    return T64(kn_tensor_ndim(like), kn_tensor_shape(like), v);
}
/* f64 leaf with requires_grad, values from a fixed irregular pattern */
static inline kn_tensor *leaf(int nd, const int64_t *shape, double seed) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        v[i] = sin(seed + 0.7 * (double)i) * 1.5 + 0.1 * (double)(i % 3) + 0.05 * seed;
    kn_tensor *t = T64(nd, shape, v);
    free(v);
    kn_tensor_set_requires_grad(t, true);
    return t;
}
static inline int check_grad(kn_gradcheck_fn f, void *user, kn_tensor *const *in, int n) {
    char msg[512] = "";
    kn_status s = kn_gradcheck(f, user, in, n, 1e-6, 1e-6, 1e-5, msg, sizeof msg);
    if (s != KN_OK) fprintf(stderr, "  gradcheck: %s (%s)\n", msg, kn_last_error());
    return s == KN_OK;
}
static inline kn_tensor *randn(kn_dtype dt, int nd, const int64_t *shape, uint64_t seed) {
    kn_manual_seed(seed);
    return kn_randn(dt, nd, shape);
}

#endif
