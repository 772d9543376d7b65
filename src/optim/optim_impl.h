/*
 * optim_impl.h - what the LR schedulers (sched.c) need from an optimizer beyond optim.h: the
 * param group's "initial_lr" (PyTorch sets it once, the first scheduler's base lr) and the
 * momentum that OneCycleLR cycles (SGD/RMSprop momentum, Adam/AdamW beta1). Not installed.
 */
#ifndef KILN_OPTIM_IMPL_H
#define KILN_OPTIM_IMPL_H

#include "kiln/optim.h"

/* NAN until a scheduler sets it. */
double kn__optim_initial_lr(const kn_optimizer *opt);
void kn__optim_set_initial_lr(kn_optimizer *opt, double lr);
/* SGD/RMSprop: momentum; Adam/AdamW: beta1. */
double kn__optim_momentum(const kn_optimizer *opt);
void kn__optim_set_momentum(kn_optimizer *opt, double m);

/* ---- compiled training steps (src/graph/train.c) ----
 * kn__optim_update_with: one step using grads[i] for parameter i (NULL: not updated), through
 * the "optimizer_update" op so that a trace records it; the same arithmetic as
 * kn_optimizer_step. Around a replayed graph step: _pre writes the lr and each parameter's update
 * count into the tensors the graph reads, _post reads the counts back and counts the step. */
kn_status kn__optim_update_with(kn_optimizer *opt, kn_tensor *const *grads);
kn_status kn__optim_graph_pre(kn_optimizer *opt);
void kn__optim_graph_post(kn_optimizer *opt);
/* The update ops the graph compiler rewrites between (see optim.c). */
struct kn_opdef;
extern const struct kn_opdef kn__op_optimizer_update, kn__op_matmul_update;
/* The optimizer's parameters (borrowed), in order. */
int kn__optim_params(kn_optimizer *opt, kn_tensor **out, int max);

#endif
