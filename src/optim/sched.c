/*
 * sched.c - learning-rate schedulers with PyTorch 1.13's semantics (torch/optim/lr_scheduler.py):
 * StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR and OneCycleLR (cosine, two
 * phases). Construction does what _LRScheduler.__init__ does with last_epoch=-1: the optimizer's
 * "initial_lr" is set once (setdefault; OneCycleLR overwrites it with max_lr/div_factor), base_lr
 * is that value, and one step runs (last_epoch 0) that writes the epoch-0 lr into the optimizer.
 *
 * The chainable schedulers use PyTorch's recursive get_lr() forms, reading the optimizer's current
 * lr, so values agree with PyTorch to the last bit and several schedulers can be stacked on one
 * optimizer the way PyTorch allows. OneCycleLR also cycles the momentum like PyTorch's default
 * cycle_momentum=True (base 0.85, max 0.95): SGD/RMSprop momentum, Adam/AdamW beta1; at
 * construction the momentum becomes 0.95.
 *
 * Not here: per-group lrs (kiln optimizers have one group), epoch arguments to step(), verbose
 * printing, ReduceLROnPlateau/CyclicLR/warm restarts. Invariant: last_lr is the lr this scheduler
 * last wrote; a scheduler never owns its optimizer.
 */
#include <math.h>

#include "core/core_impl.h"
#include "optim/optim_impl.h"

typedef enum { S_STEP, S_MULTISTEP, S_EXP, S_COSINE, S_LINEAR, S_ONECYCLE } skind;

struct kn_scheduler {
    skind kind;
    const char *name;
    kn_optimizer *opt;
    int64_t last_epoch;
    double base_lr, last_lr;
    /* StepLR / MultiStepLR / ExponentialLR */
    int64_t step_size;
    double gamma;
    int64_t *milestones;
    int nmilestones;
    /* CosineAnnealingLR */
    int64_t t_max;
    double eta_min;
    /* LinearLR */
    double start_factor, end_factor;
    int64_t total_iters;
    /* OneCycleLR */
    int64_t total_steps;
    double max_lr, min_lr, div_factor, final_div_factor, end_step0;
    double base_momentum, max_momentum;
};

/* torch's _annealing_cos */
static double anneal_cos(double start, double end, double pct) {
    double cos_out = cos(M_PI * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
}

/* OneCycleLR's lr and momentum at epoch e (torch's OneCycleLR.get_lr, two phases, cosine) */
static kn_status onecycle_at(const kn_scheduler *s, int64_t e, double *lr, double *mom) {
    if (e > s->total_steps)
        return kn__err(KN_EMISUSE, "OneCycleLR: tried to step %lld times; total_steps is %lld",
                       (long long)e + 1, (long long)s->total_steps);
    double start_step = 0, end_step, lr_a, lr_b, m_a, m_b;
    if ((double)e <= s->end_step0) { /* phase 1: warm up */
        end_step = s->end_step0;
        lr_a = s->base_lr, lr_b = s->max_lr, m_a = s->max_momentum, m_b = s->base_momentum;
    } else { /* phase 2: anneal */
        start_step = s->end_step0;
        end_step = (double)(s->total_steps - 1);
        lr_a = s->max_lr, lr_b = s->min_lr, m_a = s->base_momentum, m_b = s->max_momentum;
    }
    if (end_step - start_step == 0)
        return kn__err(KN_EINVAL,
                       "OneCycleLR: a phase of zero length at step %lld (pct_start * "
                       "total_steps must not be 1 or total_steps)",
                       (long long)e);
    double pct = ((double)e - start_step) / (end_step - start_step);
    *lr = anneal_cos(lr_a, lr_b, pct);
    *mom = anneal_cos(m_a, m_b, pct);
    return KN_OK;
}

/* The lr for s->last_epoch (already advanced), from the optimizer's current lr where PyTorch's
 * get_lr() is recursive. OneCycleLR also writes the momentum. */
static kn_status get_lr(kn_scheduler *s, double *out) {
    double lr = kn_optimizer_lr(s->opt);
    int64_t e = s->last_epoch;
    switch (s->kind) {
    case S_STEP: *out = (e == 0 || e % s->step_size != 0) ? lr : lr * s->gamma; return KN_OK;
    case S_MULTISTEP: {
        int count = 0;
        for (int i = 0; i < s->nmilestones; i++)
            count += s->milestones[i] == e;
        *out = count ? lr * pow(s->gamma, count) : lr;
        return KN_OK;
    }
    case S_EXP: *out = e == 0 ? lr : lr * s->gamma; return KN_OK;
    case S_COSINE: {
        double T = (double)s->t_max;
        if (e == 0)
            *out = lr;
        else if ((e - 1 - s->t_max) % (2 * s->t_max) == 0)
            *out = lr + (s->base_lr - s->eta_min) * (1 - cos(M_PI / T)) / 2;
        else
            *out = (1 + cos(M_PI * (double)e / T)) / (1 + cos(M_PI * (double)(e - 1) / T)) *
                       (lr - s->eta_min) +
                   s->eta_min;
        return KN_OK;
    }
    case S_LINEAR:
        if (e == 0)
            *out = lr * s->start_factor;
        else if (e > s->total_iters)
            *out = lr;
        else
            *out = lr * (1. + (s->end_factor - s->start_factor) /
                                  ((double)s->total_iters * s->start_factor +
                                   (double)(e - 1) * (s->end_factor - s->start_factor)));
        return KN_OK;
    case S_ONECYCLE: {
        double mom;
        kn_status st = onecycle_at(s, e, out, &mom);
        if (st == KN_OK) kn__optim_set_momentum(s->opt, mom);
        return st;
    }
    }
    return kn__err(KN_EINTERNAL, "scheduler: bad kind");
}

kn_status kn_scheduler_step(kn_scheduler *s) {
    if (!s) return kn__err(KN_EINVAL, "scheduler_step: NULL scheduler");
    s->last_epoch++;
    double lr = NAN;
    kn_status st = get_lr(s, &lr);
    if (st != KN_OK) {
        s->last_epoch--;
        return st;
    }
    if (!(lr >= 0) || isinf(lr)) {
        s->last_epoch--;
        return kn__err(KN_EINVAL, "%s: computed lr %g at epoch %lld is not a valid lr", s->name, lr,
                       (long long)s->last_epoch + 1);
    }
    st = kn_optimizer_set_lr(s->opt, lr);
    if (st != KN_OK) {
        s->last_epoch--;
        return st;
    }
    s->last_lr = lr;
    return KN_OK;
}

/* _LRScheduler.__init__ with last_epoch = -1; takes ownership of s (freed on failure) */
static kn_scheduler *sched_init(kn_scheduler *s) {
    if (isnan(kn__optim_initial_lr(s->opt)))
        kn__optim_set_initial_lr(s->opt, kn_optimizer_lr(s->opt));
    s->base_lr = kn__optim_initial_lr(s->opt);
    s->last_epoch = -1;
    if (kn_scheduler_step(s) != KN_OK) {
        kn_scheduler_free(s);
        return NULL;
    }
    return s;
}

static kn_scheduler *sched_alloc(kn_optimizer *opt, skind kind, const char *name) {
    if (!opt) return kn__errp(KN_EINVAL, "%s: NULL optimizer", name);
    kn_scheduler *s = kn__calloc(1, sizeof *s);
    if (!s) return NULL;
    s->kind = kind;
    s->name = name;
    s->opt = opt;
    return s;
}

static bool bad_gamma(const char *who, double gamma) {
    if (gamma >= 0 && isfinite(gamma)) return false;
    kn__err(KN_EINVAL, "%s: gamma must be a finite number >= 0, got %g", who, gamma);
    return true;
}

kn_scheduler *kn_steplr_new(kn_optimizer *opt, int64_t step_size, double gamma) {
    if (step_size < 1)
        return kn__errp(KN_EINVAL, "StepLR: step_size must be >= 1, got %lld",
                        (long long)step_size);
    if (bad_gamma("StepLR", gamma)) return NULL;
    kn_scheduler *s = sched_alloc(opt, S_STEP, "StepLR");
    if (!s) return NULL;
    s->step_size = step_size;
    s->gamma = gamma;
    return sched_init(s);
}

kn_scheduler *kn_multisteplr_new(kn_optimizer *opt, const int64_t *milestones, int n,
                                 double gamma) {
    if (n < 0 || (n > 0 && !milestones))
        return kn__errp(KN_EINVAL, "MultiStepLR: bad milestones (n %d)", n);
    if (bad_gamma("MultiStepLR", gamma)) return NULL;
    kn_scheduler *s = sched_alloc(opt, S_MULTISTEP, "MultiStepLR");
    if (!s) return NULL;
    if (n > 0) {
        s->milestones = kn__malloc(sizeof(int64_t) * (size_t)n);
        if (!s->milestones) {
            kn__free(s);
            return NULL;
        }
        memcpy(s->milestones, milestones, sizeof(int64_t) * (size_t)n);
    }
    s->nmilestones = n;
    s->gamma = gamma;
    return sched_init(s);
}

kn_scheduler *kn_exponentiallr_new(kn_optimizer *opt, double gamma) {
    if (bad_gamma("ExponentialLR", gamma)) return NULL;
    kn_scheduler *s = sched_alloc(opt, S_EXP, "ExponentialLR");
    if (!s) return NULL;
    s->gamma = gamma;
    return sched_init(s);
}

kn_scheduler *kn_cosinelr_new(kn_optimizer *opt, int64_t t_max, double eta_min) {
    if (t_max < 1 || t_max > ((int64_t)1 << 52))
        return kn__errp(KN_EINVAL, "CosineAnnealingLR: t_max must be >= 1, got %lld",
                        (long long)t_max);
    if (!(eta_min >= 0) || isinf(eta_min))
        return kn__errp(KN_EINVAL, "CosineAnnealingLR: eta_min must be finite and >= 0, got %g",
                        eta_min);
    kn_scheduler *s = sched_alloc(opt, S_COSINE, "CosineAnnealingLR");
    if (!s) return NULL;
    s->t_max = t_max;
    s->eta_min = eta_min;
    return sched_init(s);
}

kn_scheduler *kn_linearlr_new(kn_optimizer *opt, double start_factor, double end_factor,
                              int64_t total_iters) {
    if (!(start_factor > 0 && start_factor <= 1))
        return kn__errp(KN_EINVAL, "LinearLR: start_factor expected in (0, 1], got %g",
                        start_factor);
    if (!(end_factor >= 0 && end_factor <= 1))
        return kn__errp(KN_EINVAL, "LinearLR: end_factor expected in [0, 1], got %g", end_factor);
    if (total_iters < 0)
        return kn__errp(KN_EINVAL, "LinearLR: total_iters must be >= 0, got %lld",
                        (long long)total_iters);
    kn_scheduler *s = sched_alloc(opt, S_LINEAR, "LinearLR");
    if (!s) return NULL;
    s->start_factor = start_factor;
    s->end_factor = end_factor;
    s->total_iters = total_iters;
    return sched_init(s);
}

kn_scheduler *kn_onecyclelr_new(kn_optimizer *opt, double max_lr, int64_t total_steps,
                                double pct_start, double div_factor, double final_div_factor) {
    if (pct_start == 0) pct_start = 0.3;
    if (div_factor == 0) div_factor = 25.;
    if (final_div_factor == 0) final_div_factor = 1e4;
    if (total_steps < 1 || total_steps > ((int64_t)1 << 52))
        return kn__errp(KN_EINVAL, "OneCycleLR: expected positive integer total_steps, got %lld",
                        (long long)total_steps);
    if (!(pct_start >= 0 && pct_start <= 1))
        return kn__errp(KN_EINVAL, "OneCycleLR: expected pct_start between 0 and 1, got %g",
                        pct_start);
    if (!(max_lr > 0) || isinf(max_lr))
        return kn__errp(KN_EINVAL, "OneCycleLR: max_lr must be finite and > 0, got %g", max_lr);
    if (!(div_factor > 0) || isinf(div_factor))
        return kn__errp(KN_EINVAL, "OneCycleLR: div_factor must be finite and > 0, got %g",
                        div_factor);
    if (!(final_div_factor > 0) || isinf(final_div_factor))
        return kn__errp(KN_EINVAL, "OneCycleLR: final_div_factor must be finite and > 0, got %g",
                        final_div_factor);
    if (pct_start * (double)total_steps == 1)
        return kn__errp(KN_EINVAL, "OneCycleLR: pct_start * total_steps == 1 gives a warm-up "
                                   "phase of zero length");
    kn_scheduler *s = sched_alloc(opt, S_ONECYCLE, "OneCycleLR");
    if (!s) return NULL;
    s->total_steps = total_steps;
    s->end_step0 = pct_start * (double)total_steps - 1;
    s->max_lr = max_lr;
    s->div_factor = div_factor;
    s->final_div_factor = final_div_factor;
    s->base_momentum = 0.85;
    s->max_momentum = 0.95;
    double initial = max_lr / div_factor;
    s->min_lr = initial / final_div_factor;
    kn__optim_set_initial_lr(opt, initial); /* OneCycleLR overwrites initial_lr */
    kn__optim_set_momentum(opt, s->max_momentum);
    return sched_init(s);
}

double kn_scheduler_lr(const kn_scheduler *s) {
    if (!s) {
        kn__err(KN_EINVAL, "scheduler_lr: NULL scheduler");
        return NAN;
    }
    return s->last_lr;
}

int64_t kn_scheduler_last_epoch(const kn_scheduler *s) {
    if (!s) {
        kn__err(KN_EINVAL, "scheduler_last_epoch: NULL scheduler");
        return -1;
    }
    return s->last_epoch;
}

kn_status kn_scheduler_get_state(const kn_scheduler *s, int64_t *last_epoch, double *base_lr) {
    if (!s) return kn__err(KN_EINVAL, "scheduler_get_state: NULL scheduler");
    if (last_epoch) *last_epoch = s->last_epoch;
    if (base_lr) *base_lr = s->base_lr;
    return KN_OK;
}

/* Like load_state_dict: restores the counters; the optimizer's lr comes from its own state
 * (OneCycleLR also puts back the momentum of last_epoch). */
kn_status kn_scheduler_set_state(kn_scheduler *s, int64_t last_epoch, double base_lr) {
    if (!s) return kn__err(KN_EINVAL, "scheduler_set_state: NULL scheduler");
    if (last_epoch < 0)
        return kn__err(KN_EINVAL, "%s: set_state: last_epoch must be >= 0, got %lld", s->name,
                       (long long)last_epoch);
    if (!(base_lr >= 0) || isinf(base_lr))
        return kn__err(KN_EINVAL, "%s: set_state: base_lr must be finite and >= 0, got %g", s->name,
                       base_lr);
    if (s->kind == S_ONECYCLE && last_epoch > s->total_steps)
        return kn__err(KN_EINVAL, "OneCycleLR: set_state: last_epoch %lld > total_steps %lld",
                       (long long)last_epoch, (long long)s->total_steps);
    s->last_epoch = last_epoch;
    s->base_lr = base_lr;
    if (s->kind == S_ONECYCLE) {
        s->min_lr = base_lr / s->final_div_factor;
        /* PyTorch restores the cycled momentum with the optimizer's param_groups; kiln's
         * optimizer state has no momentum entry, so recompute it for last_epoch */
        double lr, mom;
        if (onecycle_at(s, last_epoch, &lr, &mom) == KN_OK) kn__optim_set_momentum(s->opt, mom);
    }
    kn__optim_set_initial_lr(s->opt, base_lr);
    s->last_lr = kn_optimizer_lr(s->opt);
    return KN_OK;
}

void kn_scheduler_free(kn_scheduler *s) {
    if (!s) return;
    kn__free(s->milestones);
    kn__free(s);
}
