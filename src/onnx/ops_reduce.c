/*
 * ops_reduce.c - ONNX reductions onto kiln's: ReduceSum / Mean / Max / Min / Prod / L1 / L2 /
 * LogSum / LogSumExp / SumSquare (axes as attribute, or as input from opset 13 for ReduceSum and
 * 18 for the rest; keepdims; noop_with_empty_axes) and ArgMax / ArgMin (keepdims,
 * select_last_index).
 */
#include <string.h>

#include "onnx/onnx_impl.h"

static kn_status reduce(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a);
    int64_t ax64[KN_MAX_DIMS];
    int input_since = kn__ox_is(x, "ReduceSum") ? 13 : 18;
    int n = x->opset < input_since ? kn__ox_ints(x, "axes", ax64, KN_MAX_DIMS)
            : kn__ox_in(x, 1)      ? kn__ox_in_ints(x, 1, ax64, KN_MAX_DIMS)
                                   : -1;
    if (n < -1) return n;
    if (n <= 0) {
        if (kn__ox_int(x, "noop_with_empty_axes", 0)) return kn__ox_set(x, 0, a);
        n = 0;
    }
    int axes[KN_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        kn_status st = kn__ox_axis(ax64[i], r, "axis", &axes[i]);
        if (st) return st;
    }
    if (n == 0 && r == 0) return kn__ox_set(x, 0, kn_clone(a));
    bool keep = kn__ox_int(x, "keepdims", 1) != 0;
    kn_tensor *y;
    if (kn__ox_is(x, "ReduceSum"))
        y = kn_sum(a, axes, n, keep);
    else if (kn__ox_is(x, "ReduceMean"))
        y = kn_mean(a, axes, n, keep);
    else if (kn__ox_is(x, "ReduceMax"))
        y = kn_amax(a, axes, n, keep);
    else if (kn__ox_is(x, "ReduceMin"))
        y = kn_amin(a, axes, n, keep);
    else if (kn__ox_is(x, "ReduceProd"))
        y = kn_prod(a, axes, n, keep);
    else if (kn__ox_is(x, "ReduceL1"))
        y = kn_sum(kn_abs(a), axes, n, keep);
    else if (kn__ox_is(x, "ReduceL2"))
        y = kn_sqrt(kn_sum(kn_mul(a, a), axes, n, keep));
    else if (kn__ox_is(x, "ReduceSumSquare"))
        y = kn_sum(kn_mul(a, a), axes, n, keep);
    else if (kn__ox_is(x, "ReduceLogSum"))
        y = kn_log(kn_sum(a, axes, n, keep));
    else
        y = kn_logsumexp(a, axes, n, keep);
    return kn__ox_set(x, 0, y);
}

static kn_status arg(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0);
    if (!a) return kn_last_status();
    int r = kn_tensor_ndim(a), axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", 0), r, "axis", &axis);
    if (st) return st;
    bool keep = kn__ox_int(x, "keepdims", 1) != 0, is_max = kn__ox_is(x, "ArgMax");
    if (kn__ox_int(x, "select_last_index", 0)) {
        /* the last of ties: the first in the reversed dim, mapped back */
        int64_t n = kn_tensor_shape(a)[axis];
        int64_t *idx = kn__malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        if (!idx) return KN_ENOMEM;
        for (int64_t i = 0; i < n; i++)
            idx[i] = n - 1 - i;
        kn_tensor *rev = kn_index_select(a, axis, kn_from_data(KN_I64, 1, &n, idx));
        kn__free(idx);
        kn_tensor *i = is_max ? kn_argmax(rev, axis, keep) : kn_argmin(rev, axis, keep);
        return kn__ox_set(x, 0, kn_sub(kn_scalar(KN_I64, (double)(n - 1)), i));
    }
    return kn__ox_set(x, 0, is_max ? kn_argmax(a, axis, keep) : kn_argmin(a, axis, keep));
}

const kn_ox_op kn__ox_ops_reduce[] = {
    {"ReduceSum", reduce, 1, 0, false},
    {"ReduceMean", reduce, 1, 0, false},
    {"ReduceMax", reduce, 1, 0, false},
    {"ReduceMin", reduce, 1, 0, false},
    {"ReduceProd", reduce, 1, 0, false},
    {"ReduceL1", reduce, 1, 0, false},
    {"ReduceL2", reduce, 1, 0, false},
    {"ReduceSumSquare", reduce, 1, 0, false},
    {"ReduceLogSum", reduce, 1, 0, false},
    {"ReduceLogSumExp", reduce, 1, 0, false},
    {"ArgMax", arg, 1, 0, false},
    {"ArgMin", arg, 1, 0, false},
    {NULL, NULL, 0, 0, false},
};
