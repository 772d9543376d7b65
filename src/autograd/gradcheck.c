/*
 * gradcheck.c - finite-difference gradient check in f64, like torch.autograd.gradcheck:
 * compares the analytic gradient of sum(f(x) * w) against central differences, element by
 * element, for every input. w is a fixed, non-uniform weight so errors cannot cancel.
 */
#include <math.h>
#include <stdlib.h>

#include "ops/op_impl.h"

static double weight_at(int64_t j) { return cos(1.3 * (double)j + 0.4); }

/* sum(out * w) in f64, or NAN on error */
static double weighted_sum(kn_tensor *out) {
    int64_t n = kn_tensor_numel(out);
    double *buf = kn__malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!buf) return NAN;
    double s = 0;
    if (kn_tensor_read(out, KN_F64, buf, sizeof(double) * (size_t)n) == KN_OK)
        for (int64_t j = 0; j < n; j++) s += buf[j] * weight_at(j);
    else
        s = NAN;
    kn__free(buf);
    return s;
}

static double *elem(kn_tensor *t, int64_t flat) {
    int64_t off = t->offset;
    for (int k = t->ndim - 1; k >= 0; k--) {
        off += (flat % t->shape[k]) * t->strides[k];
        flat /= t->shape[k];
    }
    return (double *)t->storage->data + off;
}

kn_status kn_gradcheck(kn_gradcheck_fn f, void *user, kn_tensor *const *inputs, int ninputs,
                       double eps, double atol, double rtol, char *msg, size_t msglen) {
    if (!f || !inputs || ninputs < 1 || ninputs > KN_MAX_INS)
        return kn__err(KN_EINVAL, "gradcheck: bad arguments");
    for (int i = 0; i < ninputs; i++) {
        if (!inputs[i] || inputs[i]->dtype != KN_F64 || !inputs[i]->requires_grad)
            return kn__err(KN_EINVAL, "gradcheck: input %d must be f64 and require grad", i);
    }
    kn_status st = KN_OK;
    kn_scope scope = kn_scope_begin();
    kn_tensor *grads[KN_MAX_INS] = {0};
    kn_tensor *out = f(inputs, user);
    if (!out) {
        st = kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "gradcheck: f failed");
        goto done;
    }
    if (out->dtype != KN_F64) {
        st = kn__err(KN_EDTYPE, "gradcheck: f must return f64, got %s", kn_dtype_name(out->dtype));
        goto done;
    }
    int64_t no = kn_tensor_numel(out);
    kn_tensor *w = kn__scope_adopt(kn__tensor_alloc(KN_F64, out->ndim, out->shape));
    if (!w) {
        st = kn_last_status();
        goto done;
    }
    for (int64_t j = 0; j < no; j++) ((double *)kn__ptr(w))[j] = weight_at(j);
    if (!out->requires_grad) {
        /* f ignores its inputs: the analytic gradient is zero everywhere */
        for (int i = 0; i < ninputs; i++) grads[i] = kn_zeros_like(inputs[i]);
    } else {
        st = kn_grad(&out, 1, &w, inputs, ninputs, false, grads);
        if (st) goto done;
    }
    for (int i = 0; i < ninputs && st == KN_OK; i++) {
        kn_tensor *x = inputs[i];
        kn_tensor *g = kn__contig(grads[i]);
        if (!g) {
            st = kn_last_status();
            break;
        }
        int64_t n = kn_tensor_numel(x);
        for (int64_t j = 0; j < n; j++) {
            double *p = elem(x, j), orig = *p;
            kn_scope s2 = kn_scope_begin();
            *p = orig + eps;
            double fp = weighted_sum(f(inputs, user));
            *p = orig - eps;
            double fm = weighted_sum(f(inputs, user));
            *p = orig;
            kn_scope_end(s2);
            double num = (fp - fm) / (2 * eps);
            double ana = ((double *)kn__ptr(g))[j];
            if (!(fabs(ana - num) <= atol + rtol * fabs(num))) {
                if (msg && msglen)
                    snprintf(msg, msglen,
                             "input %d element %lld: analytic %.10g vs numeric %.10g", i,
                             (long long)j, ana, num);
                st = kn__err(KN_EINVAL, "gradcheck: input %d element %lld: analytic %.10g vs "
                                        "numeric %.10g", i, (long long)j, ana, num);
                break;
            }
        }
        kn_tensor_free(g);
    }
done:
    kn_scope_end(scope);
    return st;
}
