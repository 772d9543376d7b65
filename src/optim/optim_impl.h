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

#endif
