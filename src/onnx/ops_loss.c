/*
 * ops_loss.c - ONNX loss ops onto kiln's: NegativeLogLikelihoodLoss (onto nll_loss) and
 * SoftmaxCrossEntropyLoss (onto cross_entropy, or log_softmax + nll_loss when the optional
 * log_prob output is used), from opset 12 (later versions changed only the allowed types).
 *
 * Both take input (N, C, d1..dk), target (N, d1..dk) int32/int64, an optional class weight (C),
 * attributes reduction ("mean", "sum", "none") and ignore_index. kiln's ops have PyTorch's
 * semantics, which are ONNX's: ignored targets contribute zero, and "mean" divides by the summed
 * weight of the non-ignored targets. ONNX ignores no target when ignore_index is absent (kiln's
 * default is -100), so that case passes a value no target can hold.
 */
#include <string.h>

#include "onnx/onnx_impl.h"

/* Reads reduction and ignore_index into o; checks the input and target ranks. */
static kn_status loss_opts(const kn_ox *x, kn_tensor *in, kn_tensor *target, kn_tensor *weight,
                           kn_loss_opts *o) {
    memset(o, 0, sizeof *o);
    char buf[16];
    const char *red = kn__ox_str(x, "reduction", "mean", buf, sizeof buf);
    if (!strcmp(red, "mean"))
        o->reduction = KN_REDUCE_MEAN;
    else if (!strcmp(red, "sum"))
        o->reduction = KN_REDUCE_SUM;
    else if (!strcmp(red, "none"))
        o->reduction = KN_REDUCE_NONE;
    else
        return kn__err(KN_EINVAL, "reduction '%s' is not one of mean, sum, none", red);
    o->has_ignore_index = true;
    o->ignore_index = kn__ox_attr(x, "ignore_index") ? kn__ox_int(x, "ignore_index", 0) : INT64_MIN;
    o->weight = weight;
    if (kn_tensor_ndim(in) < 2)
        return kn__err(KN_EINVAL, "input must be (N, C, d1..dk), got %d dims", kn_tensor_ndim(in));
    kn_dtype tdt = kn_tensor_dtype(target);
    if (tdt != KN_I64 && tdt != KN_I32)
        return kn__err(KN_EUNSUPPORTED, "target must be int32 or int64, got %s",
                       kn_dtype_name(tdt));
    return KN_OK;
}

static kn_status nll(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *target = in ? kn__ox_need(x, 1) : NULL;
    if (!target) return kn_last_status();
    kn_loss_opts o;
    kn_status st = loss_opts(x, in, target, kn__ox_in(x, 2), &o);
    if (st) return st;
    return kn__ox_set(x, 0, kn_nll_loss(in, target, &o));
}

static kn_status sce(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *target = in ? kn__ox_need(x, 1) : NULL;
    if (!target) return kn_last_status();
    kn_loss_opts o;
    kn_status st = loss_opts(x, in, target, kn__ox_in(x, 2), &o);
    if (st) return st;
    if (x->nout < 2 || !x->want[1]) return kn__ox_set(x, 0, kn_cross_entropy(in, target, &o));
    kn_tensor *logp = kn_log_softmax(in, 1);
    st = kn__ox_set(x, 1, logp);
    if (st) return st;
    return kn__ox_set(x, 0, kn_nll_loss(logp, target, &o));
}

const kn_ox_op kn__ox_ops_loss[] = {
    {"NegativeLogLikelihoodLoss", nll, 12, 0, false},
    {"SoftmaxCrossEntropyLoss", sce, 12, 0, false},
    {NULL, NULL, 0, 0, false},
};
