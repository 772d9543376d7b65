/*
 * kiln/autograd.h - define-by-run reverse-mode automatic differentiation.
 *
 * When grad mode is on and any input of an op requires grad, the op records a tape node that
 * keeps what its backward rule needs. Backward rules are themselves written with ops, so with
 * create_graph the gradients are differentiable again (Hessian-vector products, gradient
 * penalties).
 *
 * Ownership: .grad belongs to its tensor (borrowed pointer from kn_tensor_grad). Gradients
 * returned by kn_grad follow the usual rule for new tensors (scope-owned inside a scope).
 * Thread safety: grad mode is per thread; running backward on one graph from two threads at once
 * is not supported.
 */
#ifndef KILN_AUTOGRAD_H
#define KILN_AUTOGRAD_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* requires_grad may only be set on leaf tensors of a floating dtype (KN_EMISUSE / KN_EDTYPE). */
kn_status kn_tensor_set_requires_grad(kn_tensor *t, bool requires_grad);
bool kn_tensor_requires_grad(const kn_tensor *t);
bool kn_tensor_is_leaf(const kn_tensor *t);
/* Accumulated gradient, or NULL if none yet. Borrowed. */
kn_tensor *kn_tensor_grad(const kn_tensor *t);
/* Replaces .grad (retains g; NULL clears it). */
kn_status kn_tensor_set_grad(kn_tensor *t, kn_tensor *g);
/* Name of the op that produced t ("mul", ...) or NULL for a leaf. */
const char *kn_tensor_grad_fn_name(const kn_tensor *t);

/* Grad mode (per thread). kn_set_grad_enabled returns the previous value. */
bool kn_set_grad_enabled(bool enabled);
bool kn_is_grad_enabled(void);
/* no-grad scope: `bool prev = kn_no_grad_begin(); ...; kn_no_grad_end(prev);` */
bool kn_no_grad_begin(void);
void kn_no_grad_end(bool prev);

typedef struct kn_backward_opts {
    kn_tensor *grad_output; /* seed gradient; NULL means 1 and requires a one-element output */
    bool retain_graph;      /* keep saved tensors so backward can run again */
    bool create_graph;      /* record the backward pass itself (implies retain_graph) */
} kn_backward_opts;

/* Accumulates d(output)/d(leaf) into every leaf's .grad. opts may be NULL.
 * Errors: KN_EMISUSE when output does not require grad, when the graph was already freed by an
 * earlier backward (pass retain_graph), or when output is not a scalar and no grad_output is given;
 * KN_ESHAPE when grad_output's shape differs from output's. */
kn_status kn_backward(kn_tensor *output, const kn_backward_opts *opts);

/* Gradients of sum(outputs[i] * grad_outputs[i]) w.r.t. inputs, returned in grads[0..ninputs)
 * (new tensors; an input the outputs do not depend on gets zeros). grad_outputs may be NULL
 * (all outputs scalar). Does not touch .grad. */
kn_status kn_grad(kn_tensor *const *outputs, int noutputs, kn_tensor *const *grad_outputs,
                  kn_tensor *const *inputs, int ninputs, bool create_graph, kn_tensor **grads);

/* A new tensor sharing storage with t, cut from the graph (requires_grad false). */
kn_tensor *kn_detach(kn_tensor *t);

/* Finite-difference gradient check in f64 (like torch.autograd.gradcheck).
 * f maps inputs to one output tensor; every input must be f64 with requires_grad set. Compares
 * the analytic gradient of sum(f(x) * w) for a fixed random w against central differences with
 * step eps; passes when |a - n| <= atol + rtol * |n| elementwise. On failure writes a message
 * naming the input and element into msg (if msg != NULL). */
typedef kn_tensor *(*kn_gradcheck_fn)(kn_tensor *const *inputs, void *user);
kn_status kn_gradcheck(kn_gradcheck_fn f, void *user, kn_tensor *const *inputs, int ninputs,
                       double eps, double atol, double rtol, char *msg, size_t msglen);

#ifdef __cplusplus
}
#endif
#endif
