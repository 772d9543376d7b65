/*
 * kiln/optim.h - optimizers (SGD, Adam, AdamW, RMSprop), learning-rate schedulers and gradient
 * clipping, with PyTorch's update rules, defaults and names so a torch.optim user's knowledge
 * carries over. Updates run in place without autograd recording.
 *
 * Ownership: an optimizer keeps references to its parameters (retained) and owns its state
 * tensors (momentum buffers, exp_avg, ...). A scheduler refers to its optimizer (not owned: free
 * the scheduler first or together). Thread safety: one thread at a time per optimizer.
 */
#ifndef KILN_OPTIM_H
#define KILN_OPTIM_H

#include "kiln/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_optimizer kn_optimizer;

typedef struct kn_sgd_opts {
    double lr; /* required (> 0) */
    double momentum, dampening, weight_decay;
    bool nesterov; /* needs momentum > 0 and dampening == 0, like PyTorch */
    bool maximize;
} kn_sgd_opts;
typedef struct kn_adam_opts {
    double lr;           /* 0 means 1e-3 */
    double beta1, beta2; /* 0 means 0.9 / 0.999 */
    double eps;          /* 0 means 1e-8 */
    double weight_decay; /* Adam: L2 added to the gradient; AdamW: decoupled (0 means 1e-2) */
    bool amsgrad;
    bool maximize;
} kn_adam_opts;
typedef struct kn_rmsprop_opts {
    double lr;    /* 0 means 1e-2 */
    double alpha; /* 0 means 0.99 */
    double eps;   /* 0 means 1e-8 */
    double weight_decay, momentum;
    bool centered;
} kn_rmsprop_opts;

/* params: the tensors to optimise (retained). NULL + error on a bad option (named). */
kn_optimizer *kn_sgd_new(kn_tensor *const *params, int n, const kn_sgd_opts *o);
kn_optimizer *kn_adam_new(kn_tensor *const *params, int n, const kn_adam_opts *o);
kn_optimizer *kn_adamw_new(kn_tensor *const *params, int n, const kn_adam_opts *o);
kn_optimizer *kn_rmsprop_new(kn_tensor *const *params, int n, const kn_rmsprop_opts *o);
/* Convenience: every trainable parameter of a module. */
kn_optimizer *kn_sgd_for(kn_module *m, const kn_sgd_opts *o);
kn_optimizer *kn_adam_for(kn_module *m, const kn_adam_opts *o);
kn_optimizer *kn_adamw_for(kn_module *m, const kn_adam_opts *o);
void kn_optimizer_free(kn_optimizer *opt);

/* One update from the parameters' .grad (parameters without a grad are skipped). */
kn_status kn_optimizer_step(kn_optimizer *opt);
/* set_to_none: drop .grad (PyTorch 2 default) instead of zeroing it in place. */
kn_status kn_optimizer_zero_grad(kn_optimizer *opt, bool set_to_none);
double kn_optimizer_lr(const kn_optimizer *opt);
kn_status kn_optimizer_set_lr(kn_optimizer *opt, double lr);
int64_t kn_optimizer_steps(const kn_optimizer *opt);
const char *kn_optimizer_name(const kn_optimizer *opt); /* "SGD", "Adam", ... */

/* ---- state, for checkpoints and inspection ----
 * Named tensors in PyTorch's state_dict spirit: "state.<param index>.<buffer>" (for example
 * "state.0.momentum_buffer", "state.3.exp_avg_sq") plus 0-d tensors for scalars
 * ("state.0.step"). Entries are borrowed and live until the next step/free. Returns the count;
 * call with max 0 to size. */
int kn_optimizer_state(kn_optimizer *opt, kn_named_tensor *out, int max);
/* Restores state saved by kn_optimizer_state (names and shapes must match the parameters:
 * KN_ESHAPE / KN_EFORMAT naming the entry otherwise). Copies the data. */
kn_status kn_optimizer_load_state(kn_optimizer *opt, const kn_named_tensor *st, int n);

/* ---- learning-rate schedulers (call kn_scheduler_step once per epoch or per step, like
 * PyTorch; the optimizer's lr is updated in place) ---- */
typedef struct kn_scheduler kn_scheduler;
kn_scheduler *kn_steplr_new(kn_optimizer *opt, int64_t step_size, double gamma);
kn_scheduler *kn_multisteplr_new(kn_optimizer *opt, const int64_t *milestones, int n,
                                 double gamma);
kn_scheduler *kn_exponentiallr_new(kn_optimizer *opt, double gamma);
kn_scheduler *kn_cosinelr_new(kn_optimizer *opt, int64_t t_max, double eta_min);
/* LinearLR: factor goes from start_factor to end_factor over total_iters steps */
kn_scheduler *kn_linearlr_new(kn_optimizer *opt, double start_factor, double end_factor,
                              int64_t total_iters);
/* OneCycleLR with cosine annealing (PyTorch defaults: pct_start 0.3, div_factor 25,
 * final_div_factor 1e4; pass 0 for a default). Like PyTorch's cycle_momentum=True it also
 * cycles momentum (SGD/RMSprop) or beta1 (Adam/AdamW) between 0.95 and 0.85, starting at 0.95
 * when created. Stepping past total_steps is KN_EMISUSE. */
kn_scheduler *kn_onecyclelr_new(kn_optimizer *opt, double max_lr, int64_t total_steps,
                                double pct_start, double div_factor, double final_div_factor);
kn_status kn_scheduler_step(kn_scheduler *s);
double kn_scheduler_lr(const kn_scheduler *s);
int64_t kn_scheduler_last_epoch(const kn_scheduler *s);
/* state for checkpoints: last_epoch and base lr */
kn_status kn_scheduler_get_state(const kn_scheduler *s, int64_t *last_epoch, double *base_lr);
kn_status kn_scheduler_set_state(kn_scheduler *s, int64_t last_epoch, double base_lr);
void kn_scheduler_free(kn_scheduler *s);

/* ---- gradient clipping (torch.nn.utils) ---- */
/* Scales all grads so their joint norm is <= max_norm; returns the norm before clipping
 * (NAN + error on failure). norm_type: 2 for L2, INFINITY for max. */
double kn_clip_grad_norm_(kn_tensor *const *params, int n, double max_norm, double norm_type);
kn_status kn_clip_grad_value_(kn_tensor *const *params, int n, double clip);

#ifdef __cplusplus
}
#endif
#endif
