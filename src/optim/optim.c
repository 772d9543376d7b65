/*
 * optim.c - optimizers (SGD, Adam, AdamW, RMSprop) with PyTorch 1.13's update rules, defaults,
 * option checks and state names, plus gradient clipping (torch.nn.utils.clip_grad_norm_ /
 * clip_grad_value_).
 *
 * A step is one fused pass per parameter: a vectorised kernel (optim_kernels.inc, f32 and f64)
 * reads param, grad and state once and writes them once, split across OpenMP threads in fixed
 * chunks when the parameter is large. State buffers are allocated lazily on a parameter's first
 * update and reused: a steady training loop allocates nothing in step(). Updates write the
 * parameters' memory directly: nothing is recorded on the autograd tape.
 *
 * Not here: sparse grads, complex params, per-parameter-group options, closures, foreach/fused
 * variants (the results are those of PyTorch's single-tensor loops).
 *
 * Invariants: params are contiguous f32/f64 leaf tensors (checked at construction); a state buffer
 * has the param's dtype and shape; live[b] says buffer b holds state (its storage may exist
 * without being live); a failed step() changes no parameter.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Roundings are explicit in the kernels (fma where PyTorch fuses, plain ops elsewhere): keep GCC
 * from contracting a*b+c on its own. */
#pragma GCC optimize("fp-contract=off")

#include "core/core_impl.h"
#include "kernels/gemm.h"
#include "ops/op_impl.h"
#include "optim/optim_impl.h"

#define OK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define CHUNK 16384    /* elements per parallel work item */
#define PAR_MIN 65536  /* parameters smaller than this update on one thread */
#define NORM_BLOCKS 64 /* clip_grad_norm_: at most this many partial sums per tensor */

typedef enum { K_SGD, K_ADAM, K_ADAMW, K_RMSPROP } okind;
static const char *const kind_names[] = {"SGD", "Adam", "AdamW", "RMSprop"};

/* state buffers; slot B_N is the "step" scalar */
enum { B_MOM, B_EXP_AVG, B_EXP_AVG_SQ, B_MAX_SQ, B_SQUARE_AVG, B_GRAD_AVG, B_N };
#define S_STEP B_N
static const char *const slot_names[B_N + 1] = {
    "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg", "step"};
#define LR_NAME "param_groups.lr"

/* kernel arguments (one struct for every kind; the chunk functions convert to the dtype) */
typedef struct kargs {
    void *p, *b0, *b1, *b2;
    const void *g;
    double lr, wd, mom, damp1, sgn, dec, b1c, omb1, b2c, omb2, bc2s, eps, nss, alpha, oma;
    int mask;
} kargs;

#define OK_T float
#define OK_SFX f32
#define OK_SQRT sqrtf
#define OK_FMA fmaf
#include "optim/optim_kernels.inc"
#undef OK_T
#undef OK_SFX
#undef OK_SQRT
#undef OK_FMA
#define OK_T double
#define OK_SFX f64
#define OK_SQRT sqrt
#define OK_FMA fma
#include "optim/optim_kernels.inc"
#undef OK_T
#undef OK_SFX
#undef OK_SQRT
#undef OK_FMA

typedef struct pstate {
    kn_tensor *p;            /* retained */
    kn_tensor *buf[B_N];     /* owned, param dtype and shape; NULL until needed */
    bool live[B_N];          /* buf[b] holds state */
    bool has_step;           /* "step" exists (Adam, AdamW, RMSprop after the first update) */
    double step;             /* per-parameter update count, like PyTorch's state['step'] */
    kn_tensor *step_t;       /* 0-d f64 handed out by kn_optimizer_state */
    kn_tensor *cnt_t;        /* 0-d f64 update count read by graph update nodes */
    kn_tensor *gtmp;         /* contiguous param-dtype copy of an unusual grad (reused) */
    const void *g;           /* this step's grad data (transient) */
    char names[B_N + 1][40]; /* "state.<i>.<slot>" */
} pstate;

struct kn_optimizer {
    okind kind;
    int n;
    pstate *ps;
    double lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha;
    bool nesterov, maximize, amsgrad, centered;
    int64_t steps;
    double initial_lr; /* NAN until a scheduler sets it */
    kn_tensor *lr_t;   /* 0-d f64 handed out by kn_optimizer_state */
};

/* ================= construction ================= */

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return (x > y) - (x < y);
}

static kn_optimizer *opt_new(okind kind, kn_tensor *const *params, int n) {
    const char *who = kind_names[kind];
    if (!params || n <= 0)
        return kn__errp(KN_EINVAL, "%s: optimizer got an empty parameter list", who);
    for (int i = 0; i < n; i++) {
        kn_tensor *p = params[i];
        if (!p) return kn__errp(KN_EINVAL, "%s: parameter %d is NULL", who, i);
        if (p->dtype != KN_F32 && p->dtype != KN_F64)
            return kn__errp(KN_EDTYPE, "%s: parameter %d has dtype %s (float32 or float64 needed)",
                            who, i, kn_dtype_name(p->dtype));
        if (p->grad_fn)
            return kn__errp(KN_EINVAL, "%s: can't optimize a non-leaf tensor (parameter %d)", who,
                            i);
        if (!kn__is_contiguous(p))
            return kn__errp(KN_EUNSUPPORTED, "%s: parameter %d is not contiguous", who, i);
    }
    kn_tensor **sorted = kn__malloc(sizeof(kn_tensor *) * (size_t)n);
    if (!sorted) return NULL;
    memcpy(sorted, params, sizeof(kn_tensor *) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(kn_tensor *), cmp_ptr);
    for (int i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1]) {
            kn__free(sorted);
            return kn__errp(KN_EINVAL, "%s: a parameter appears more than once", who);
        }
    kn__free(sorted);

    kn_optimizer *o = kn__calloc(1, sizeof *o);
    if (!o) return NULL;
    o->ps = kn__calloc((size_t)n, sizeof(pstate));
    if (!o->ps) {
        kn__free(o);
        return NULL;
    }
    o->kind = kind;
    o->n = n;
    o->initial_lr = NAN;
    for (int i = 0; i < n; i++) {
        o->ps[i].p = kn_tensor_retain(params[i]);
        for (int s = 0; s <= B_N; s++)
            snprintf(o->ps[i].names[s], sizeof o->ps[i].names[s], "state.%d.%s", i, slot_names[s]);
    }
    return o;
}

/* nonneg finite check helper: sets the error naming the option */
static bool bad_nonneg(const char *who, const char *what, double v) {
    if (v >= 0 && isfinite(v)) return false;
    kn__err(KN_EINVAL, "%s: invalid %s value: %g", who, what, v);
    return true;
}
static bool bad_beta(const char *who, int idx, double v) {
    if (v >= 0 && v < 1) return false;
    kn__err(KN_EINVAL, "%s: invalid beta parameter at index %d: %g (need 0 <= beta < 1)", who, idx,
            v);
    return true;
}

kn_optimizer *kn_sgd_new(kn_tensor *const *params, int n, const kn_sgd_opts *o) {
    if (!o) return kn__errp(KN_EINVAL, "SGD: options are required (lr)");
    if (!(o->lr > 0) || isinf(o->lr))
        return kn__errp(KN_EINVAL, "SGD: invalid learning rate (lr): %g (required, > 0)", o->lr);
    if (bad_nonneg("SGD", "momentum", o->momentum) ||
        bad_nonneg("SGD", "weight_decay", o->weight_decay))
        return NULL;
    if (!isfinite(o->dampening))
        return kn__errp(KN_EINVAL, "SGD: invalid dampening value: %g", o->dampening);
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
        return kn__errp(KN_EINVAL, "SGD: nesterov momentum requires a momentum and zero dampening");
    kn_optimizer *opt = opt_new(K_SGD, params, n);
    if (!opt) return NULL;
    opt->lr = o->lr;
    opt->momentum = o->momentum;
    opt->dampening = o->dampening;
    opt->weight_decay = o->weight_decay;
    opt->nesterov = o->nesterov;
    opt->maximize = o->maximize;
    return opt;
}

static kn_optimizer *adam_new(okind kind, kn_tensor *const *params, int n, const kn_adam_opts *o) {
    const char *who = kind_names[kind];
    kn_adam_opts d = {0};
    if (!o) o = &d;
    double lr = o->lr ? o->lr : 1e-3, b1 = o->beta1 ? o->beta1 : 0.9,
           b2 = o->beta2 ? o->beta2 : 0.999, eps = o->eps ? o->eps : 1e-8;
    double wd = kind == K_ADAMW && o->weight_decay == 0 ? 1e-2 : o->weight_decay;
    if (bad_nonneg(who, "learning rate (lr)", lr) || bad_nonneg(who, "epsilon (eps)", eps) ||
        bad_beta(who, 0, b1) || bad_beta(who, 1, b2) || bad_nonneg(who, "weight_decay", wd))
        return NULL;
    kn_optimizer *opt = opt_new(kind, params, n);
    if (!opt) return NULL;
    opt->lr = lr;
    opt->beta1 = b1;
    opt->beta2 = b2;
    opt->eps = eps;
    opt->weight_decay = wd;
    opt->amsgrad = o->amsgrad;
    opt->maximize = o->maximize;
    return opt;
}

kn_optimizer *kn_adam_new(kn_tensor *const *params, int n, const kn_adam_opts *o) {
    return adam_new(K_ADAM, params, n, o);
}
kn_optimizer *kn_adamw_new(kn_tensor *const *params, int n, const kn_adam_opts *o) {
    return adam_new(K_ADAMW, params, n, o);
}

kn_optimizer *kn_rmsprop_new(kn_tensor *const *params, int n, const kn_rmsprop_opts *o) {
    kn_rmsprop_opts d = {0};
    if (!o) o = &d;
    double lr = o->lr ? o->lr : 1e-2, alpha = o->alpha ? o->alpha : 0.99,
           eps = o->eps ? o->eps : 1e-8;
    if (bad_nonneg("RMSprop", "learning rate (lr)", lr) ||
        bad_nonneg("RMSprop", "epsilon (eps)", eps) ||
        bad_nonneg("RMSprop", "momentum", o->momentum) ||
        bad_nonneg("RMSprop", "weight_decay", o->weight_decay) ||
        bad_nonneg("RMSprop", "alpha", alpha))
        return NULL;
    kn_optimizer *opt = opt_new(K_RMSPROP, params, n);
    if (!opt) return NULL;
    opt->lr = lr;
    opt->alpha = alpha;
    opt->eps = eps;
    opt->momentum = o->momentum;
    opt->weight_decay = o->weight_decay;
    opt->centered = o->centered;
    return opt;
}

/* every parameter of m that requires grad */
static kn_tensor **module_trainable(kn_module *m, const char *who, int *count) {
    if (!m) return kn__errp(KN_EINVAL, "%s: NULL module", who);
    int total = kn_module_parameters(m, NULL, 0);
    if (total < 0) return NULL;
    kn_named_tensor *nt = kn__malloc(sizeof *nt * (size_t)(total ? total : 1));
    kn_tensor **ps = kn__malloc(sizeof *ps * (size_t)(total ? total : 1));
    if (!nt || !ps) {
        kn__free(nt);
        kn__free(ps);
        return NULL;
    }
    total = kn_module_parameters(m, nt, total);
    int c = 0;
    for (int i = 0; i < total; i++)
        if (nt[i].tensor && kn_tensor_requires_grad(nt[i].tensor)) ps[c++] = nt[i].tensor;
    kn__free(nt);
    *count = c;
    return ps;
}

kn_optimizer *kn_sgd_for(kn_module *m, const kn_sgd_opts *o) {
    int n = 0;
    kn_tensor **ps = module_trainable(m, "SGD", &n);
    if (!ps) return NULL;
    kn_optimizer *opt = kn_sgd_new(ps, n, o);
    kn__free(ps);
    return opt;
}
kn_optimizer *kn_adam_for(kn_module *m, const kn_adam_opts *o) {
    int n = 0;
    kn_tensor **ps = module_trainable(m, "Adam", &n);
    if (!ps) return NULL;
    kn_optimizer *opt = kn_adam_new(ps, n, o);
    kn__free(ps);
    return opt;
}
kn_optimizer *kn_adamw_for(kn_module *m, const kn_adam_opts *o) {
    int n = 0;
    kn_tensor **ps = module_trainable(m, "AdamW", &n);
    if (!ps) return NULL;
    kn_optimizer *opt = kn_adamw_new(ps, n, o);
    kn__free(ps);
    return opt;
}

void kn_optimizer_free(kn_optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        pstate *s = &opt->ps[i];
        kn_tensor_free(s->p);
        for (int b = 0; b < B_N; b++)
            kn_tensor_free(s->buf[b]);
        kn_tensor_free(s->step_t);
        kn_tensor_free(s->cnt_t);
        kn_tensor_free(s->gtmp);
    }
    kn_tensor_free(opt->lr_t);
    kn__free(opt->ps);
    kn__free(opt);
}

/* ================= step ================= */

static size_t tensor_bytes(const kn_tensor *t) {
    return (size_t)kn__numel(t->ndim, t->shape) * kn_dtype_size(t->dtype);
}

/* allocates buffer b of s if missing; zero: also zero-initialise it as fresh state (live) */
static kn_status ensure_buf(pstate *s, int b, bool zero) {
    if (!s->buf[b]) {
        s->buf[b] = kn__tensor_alloc(s->p->dtype, s->p->ndim, s->p->shape);
        if (!s->buf[b]) return kn_last_status();
    }
    if (zero && !s->live[b]) {
        size_t nb = tensor_bytes(s->p);
        if (nb) memset(kn__ptr(s->buf[b]), 0, nb);
        s->live[b] = true;
    }
    return KN_OK;
}

/* this step's grad as contiguous data of the param's dtype (a copy only when it is not) */
static kn_status grad_prep(const kn_optimizer *opt, pstate *s, int i) {
    kn_tensor *p = s->p, *g = p->grad;
    if (g->dtype == p->dtype && kn__is_contiguous(g)) {
        s->g = kn__ptr(g);
        return KN_OK;
    }
    if (!kn_dtype_is_float(g->dtype))
        return kn__err(KN_EDTYPE, "%s: step: parameter %d has a %s gradient", kind_names[opt->kind],
                       i, kn_dtype_name(g->dtype));
    if (!s->gtmp) {
        s->gtmp = kn__tensor_alloc(p->dtype, p->ndim, p->shape);
        if (!s->gtmp) return kn_last_status();
    }
    kn_status st = kn_tensor_read(g, p->dtype, kn__ptr(s->gtmp), tensor_bytes(p));
    if (st != KN_OK) return st;
    s->g = kn__ptr(s->gtmp);
    return KN_OK;
}

/* state the kind needs for one update: allocated (zeroed where PyTorch starts from zeros) */
static kn_status state_prep(const kn_optimizer *opt, pstate *s) {
    kn_status st = KN_OK;
    switch (opt->kind) {
    case K_SGD: /* the buffer starts as a copy of the first d_p (live after that update) */
        if (opt->momentum != 0) st = ensure_buf(s, B_MOM, false);
        break;
    case K_ADAM:
    case K_ADAMW:
        if (st == KN_OK) st = ensure_buf(s, B_EXP_AVG, true);
        if (st == KN_OK) st = ensure_buf(s, B_EXP_AVG_SQ, true);
        if (st == KN_OK && opt->amsgrad) st = ensure_buf(s, B_MAX_SQ, true);
        break;
    case K_RMSPROP:
        if (st == KN_OK) st = ensure_buf(s, B_SQUARE_AVG, true);
        if (st == KN_OK && opt->momentum > 0) st = ensure_buf(s, B_MOM, true);
        if (st == KN_OK && opt->centered) st = ensure_buf(s, B_GRAD_AVG, true);
        break;
    }
    return st;
}

typedef void (*chunk_fn)(const kargs *a, int64_t lo, int64_t hi);

/* runs fn over [0, n) in fixed chunks, in parallel when n is large */
static void run_chunks(chunk_fn fn, const kargs *a, int64_t n) {
    int nth = kn__threads();
    if (n < PAR_MIN || nth <= 1) {
        fn(a, 0, n);
        return;
    }
    int64_t nc = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t c = 0; c < nc; c++)
        fn(a, c * CHUNK, c * CHUNK + CHUNK < n ? c * CHUNK + CHUNK : n);
}

/* Hyperparameters of one update: the optimizer's, or a graph node's attrs. */
typedef struct hyper {
    okind kind;
    double lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha;
    bool nesterov, maximize, amsgrad, centered;
} hyper;

static hyper opt_hyper(const kn_optimizer *o) {
    return (hyper){o->kind,     o->lr,      o->momentum, o->dampening, o->weight_decay,
                   o->beta1,    o->beta2,   o->eps,      o->alpha,     o->nesterov,
                   o->maximize, o->amsgrad, o->centered};
}

/* One fused update of param p with grad data g and state buffers buf[B_*]. *count is the update
 * count (Adam, RMSprop: PyTorch's state['step'], 0 before the first update; SGD: 1 once the
 * momentum buffer is live) and is advanced. The eager step and the graph's update node both
 * come here, so their results are identical. */
/* Elements [off, off + n) of p and its buffers, with g the gradient of those elements. */
static void apply_update_range(const hyper *h, kn_tensor *p, const void *g, kn_tensor *const *buf,
                               double *count, int64_t off, int64_t n) {
    bool f32 = p->dtype == KN_F32;
    size_t es = kn_dtype_size(p->dtype);
#define AT(t) (kn__ptr(t) + (size_t)off * es)
    kargs a = {.p = AT(p), .g = g, .lr = h->lr, .sgn = h->maximize ? -1.0 : 1.0};
    switch (h->kind) {
    case K_SGD: {
        int w = h->weight_decay != 0;
        int m = h->momentum != 0 ? (*count > 0 ? 2 : 1) : 0;
        int ne = m && h->nesterov;
        a.b0 = m ? AT(buf[B_MOM]) : NULL;
        a.wd = h->weight_decay;
        a.mom = h->momentum;
        a.damp1 = 1 - h->dampening;
        a.mask = w | (m << 1) | (ne << 3);
        run_chunks(f32 ? sgd_chunk_f32 : sgd_chunk_f64, &a, n);
        if (m) *count = 1;
        break;
    }
    case K_ADAM:
    case K_ADAMW: {
        double step = *count += 1;
        double bc1 = 1 - pow(h->beta1, step), bc2 = 1 - pow(h->beta2, step);
        bool adamw = h->kind == K_ADAMW;
        int l2 = !adamw && h->weight_decay != 0;
        a.b0 = AT(buf[B_EXP_AVG]);
        a.b1 = AT(buf[B_EXP_AVG_SQ]);
        a.b2 = h->amsgrad ? AT(buf[B_MAX_SQ]) : NULL;
        a.wd = h->weight_decay;
        a.dec = 1 - h->lr * h->weight_decay;
        a.b1c = h->beta1;
        a.omb1 = 1 - h->beta1;
        a.b2c = h->beta2;
        a.omb2 = 1 - h->beta2;
        a.bc2s = sqrt(bc2);
        a.eps = h->eps;
        a.nss = -(h->lr / bc1);
        a.mask = l2 | ((int)adamw << 1) | ((int)h->amsgrad << 2);
        run_chunks(f32 ? adam_chunk_f32 : adam_chunk_f64, &a, n);
        break;
    }
    case K_RMSPROP: {
        *count += 1;
        int l2 = h->weight_decay != 0, cen = h->centered, mom = h->momentum > 0;
        a.b0 = AT(buf[B_SQUARE_AVG]);
        a.b1 = cen ? AT(buf[B_GRAD_AVG]) : NULL;
        a.b2 = mom ? AT(buf[B_MOM]) : NULL;
        a.sgn = 1.0;
        a.wd = h->weight_decay;
        a.alpha = h->alpha;
        a.oma = 1 - h->alpha;
        a.eps = h->eps;
        a.mom = h->momentum;
        a.mask = l2 | (cen << 1) | (mom << 2);
        run_chunks(f32 ? rms_chunk_f32 : rms_chunk_f64, &a, n);
        break;
    }
    }
}
#undef AT

static void apply_update(const hyper *h, kn_tensor *p, const void *g, kn_tensor *const *buf,
                         double *count) {
    apply_update_range(h, p, g, buf, count, 0, kn__numel(p->ndim, p->shape));
}

/* the host-side update count of a parameter, as apply_update reads it */
static double count_of(const kn_optimizer *opt, const pstate *s) {
    if (opt->kind == K_SGD) return s->live[B_MOM] ? 1 : 0;
    return s->has_step ? s->step : 0;
}
static void set_count(const kn_optimizer *opt, pstate *s, double c) {
    if (opt->kind == K_SGD) {
        if (c > 0) s->live[B_MOM] = true;
    } else if (c > 0) {
        s->has_step = true;
        s->step = c;
        for (int b = 0; b < B_N; b++) /* the update wrote them: they hold state now */
            if (s->buf[b]) s->live[b] = true;
    }
}

static void update_one(kn_optimizer *opt, pstate *s) {
    hyper h = opt_hyper(opt);
    double c = count_of(opt, s);
    apply_update(&h, s->p, s->g, s->buf, &c);
    set_count(opt, s, c);
}

kn_status kn_optimizer_step(kn_optimizer *opt) {
    if (!opt) return kn__err(KN_EINVAL, "optimizer_step: NULL optimizer");
    /* pass 1: everything that can fail (grad conversion, state allocation) */
    for (int i = 0; i < opt->n; i++) {
        pstate *s = &opt->ps[i];
        if (!s->p->grad) continue;
        kn_status st = grad_prep(opt, s, i);
        if (st == KN_OK) st = state_prep(opt, s);
        if (st != KN_OK) return st;
    }
    /* pass 2: the updates */
    for (int i = 0; i < opt->n; i++) {
        pstate *s = &opt->ps[i];
        if (s->p->grad) update_one(opt, s);
        s->g = NULL;
    }
    opt->steps++;
    return KN_OK;
}

/* ---- strided fallback (non-contiguous or half-precision grads) ---- */

static bool has_broadcast_stride(const kn_tensor *t) {
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] > 1 && t->strides[d] == 0) return true;
    return false;
}

typedef enum { MAP_ZERO, MAP_SCALE, MAP_CLAMP } map_op;

/* applies op to every element of t in place through its strides, via double */
static void strided_map(kn_tensor *t, map_op op, double c) {
    int nd = t->ndim;
    int64_t idx[KN_MAX_DIMS] = {0}, n = kn__numel(nd, t->shape);
    size_t es = kn_dtype_size(t->dtype);
    char *base = kn__ptr(t);
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int d = 0; d < nd; d++)
            off += idx[d] * t->strides[d];
        char *e = base + off * (int64_t)es;
        double v = op == MAP_ZERO ? 0 : kn__load_f64(t->dtype, e);
        if (op == MAP_SCALE) v *= c;
        if (op == MAP_CLAMP) v = v < -c ? -c : (v > c ? c : v);
        kn__store_f64(t->dtype, e, v);
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

kn_status kn_optimizer_zero_grad(kn_optimizer *opt, bool set_to_none) {
    if (!opt) return kn__err(KN_EINVAL, "optimizer_zero_grad: NULL optimizer");
    for (int i = 0; i < opt->n; i++) {
        kn_tensor *p = opt->ps[i].p, *g = p->grad;
        if (!g) continue;
        if (set_to_none) {
            kn_tensor_set_grad(p, NULL);
        } else if (g->grad_fn) {
            /* a create_graph gradient belongs to a graph: detach by replacing it (PyTorch
             * detaches it, then zeroes in place) */
            kn_tensor *z = kn__tensor_alloc(g->dtype, g->ndim, g->shape);
            if (!z) return kn_last_status();
            size_t nb = tensor_bytes(z);
            if (nb) memset(kn__ptr(z), 0, nb);
            kn_tensor_set_grad(p, z);
            kn_tensor_free(z);
        } else if (kn__is_contiguous(g)) {
            size_t nb = tensor_bytes(g);
            if (nb) memset(kn__ptr(g), 0, nb);
        } else {
            strided_map(g, MAP_ZERO, 0);
        }
    }
    return KN_OK;
}

double kn_optimizer_lr(const kn_optimizer *opt) {
    if (!opt) {
        kn__err(KN_EINVAL, "optimizer_lr: NULL optimizer");
        return NAN;
    }
    return opt->lr;
}

kn_status kn_optimizer_set_lr(kn_optimizer *opt, double lr) {
    if (!opt) return kn__err(KN_EINVAL, "optimizer_set_lr: NULL optimizer");
    if (!(lr >= 0) || isinf(lr))
        return kn__err(KN_EINVAL, "%s: invalid learning rate (lr): %g", kind_names[opt->kind], lr);
    opt->lr = lr;
    return KN_OK;
}

int64_t kn_optimizer_steps(const kn_optimizer *opt) {
    if (!opt) {
        kn__err(KN_EINVAL, "optimizer_steps: NULL optimizer");
        return -1;
    }
    return opt->steps;
}

const char *kn_optimizer_name(const kn_optimizer *opt) {
    return opt ? kind_names[opt->kind] : "?";
}

double kn__optim_initial_lr(const kn_optimizer *opt) {
    return opt->initial_lr;
}
void kn__optim_set_initial_lr(kn_optimizer *opt, double lr) {
    opt->initial_lr = lr;
}
double kn__optim_momentum(const kn_optimizer *opt) {
    return opt->kind == K_ADAM || opt->kind == K_ADAMW ? opt->beta1 : opt->momentum;
}
void kn__optim_set_momentum(kn_optimizer *opt, double m) {
    if (opt->kind == K_ADAM || opt->kind == K_ADAMW)
        opt->beta1 = m;
    else
        opt->momentum = m;
}

/* ================= state ================= */

/* slots in PyTorch's order per kind (step first where it exists) */
static const int order_sgd[] = {B_MOM, -1};
static const int order_adam[] = {S_STEP, B_EXP_AVG, B_EXP_AVG_SQ, B_MAX_SQ, -1};
static const int order_rms[] = {S_STEP, B_SQUARE_AVG, B_MOM, B_GRAD_AVG, -1};
static const int *kind_order(okind k) {
    return k == K_SGD ? order_sgd : k == K_RMSPROP ? order_rms : order_adam;
}

/* slots required (when a parameter has any state) and allowed, as bit masks */
static void kind_slots(const kn_optimizer *o, unsigned *req, unsigned *allowed) {
    *req = 0;
    *allowed = 0;
    for (const int *s = kind_order(o->kind); *s >= 0; s++)
        *allowed |= 1u << *s;
    switch (o->kind) {
    case K_SGD: break;
    case K_ADAM:
    case K_ADAMW:
        *req = 1u << S_STEP | 1u << B_EXP_AVG | 1u << B_EXP_AVG_SQ;
        if (o->amsgrad) *req |= 1u << B_MAX_SQ;
        break;
    case K_RMSPROP:
        *req = 1u << S_STEP | 1u << B_SQUARE_AVG;
        if (o->momentum > 0) *req |= 1u << B_MOM;
        if (o->centered) *req |= 1u << B_GRAD_AVG;
        break;
    }
}

static kn_tensor *scalar_f64(kn_tensor **slot, double v) {
    if (!*slot) {
        *slot = kn__tensor_alloc(KN_F64, 0, NULL);
        if (!*slot) return NULL;
    }
    *(double *)kn__ptr(*slot) = v;
    return *slot;
}

int kn_optimizer_state(kn_optimizer *opt, kn_named_tensor *out, int max) {
    if (!opt || max < 0 || (max > 0 && !out)) {
        kn__err(KN_EINVAL, "optimizer_state: NULL optimizer or bad output array");
        return -1;
    }
    int c = 0;
    for (int i = 0; i < opt->n; i++) {
        pstate *s = &opt->ps[i];
        if (opt->kind != K_SGD && !s->has_step) continue; /* no update yet (or a failed one) */
        for (const int *sl = kind_order(opt->kind); *sl >= 0; sl++) {
            kn_tensor *t;
            if (*sl == S_STEP) {
                if (!s->has_step) continue;
                if (c < max && !scalar_f64(&s->step_t, s->step)) return -1;
                t = s->step_t;
            } else {
                if (!s->live[*sl]) continue;
                t = s->buf[*sl];
            }
            if (c < max) out[c] = (kn_named_tensor){.name = s->names[*sl], .tensor = t};
            c++;
        }
    }
    if (c < max) {
        if (!scalar_f64(&opt->lr_t, opt->lr)) return -1;
        out[c] = (kn_named_tensor){.name = LR_NAME, .tensor = opt->lr_t};
    }
    return c + 1;
}

/* "state.<i>.<slot>" -> (i, slot); false when the name has another form */
static bool parse_name(const char *name, int n, int *pi, int *slot) {
    if (strncmp(name, "state.", 6) != 0) return false;
    const char *d = name + 6;
    int64_t i = 0;
    int nd = 0;
    while (*d >= '0' && *d <= '9') {
        i = i * 10 + (*d++ - '0');
        if (++nd > 10) return false;
    }
    if (nd == 0 || *d != '.' || i >= n) return false;
    for (int s = 0; s <= B_N; s++)
        if (strcmp(d + 1, slot_names[s]) == 0) {
            *pi = (int)i;
            *slot = s;
            return true;
        }
    return false;
}

static double scalar_value(const kn_tensor *t) {
    double v;
    if (kn_tensor_read(t, KN_F64, &v, sizeof v) != KN_OK) return NAN;
    return v;
}

kn_status kn_optimizer_load_state(kn_optimizer *opt, const kn_named_tensor *st, int n) {
    if (!opt || n < 0 || (n > 0 && !st))
        return kn__err(KN_EINVAL, "optimizer_load_state: NULL optimizer or bad entry array");
    const char *who = kind_names[opt->kind];
    unsigned req, allowed;
    kind_slots(opt, &req, &allowed);
    /* which entry fills (param, slot); -1 none */
    int *from = kn__malloc(sizeof(int) * (size_t)opt->n * (B_N + 1));
    if (!from) return kn_last_status();
    for (int k = 0; k < opt->n * (B_N + 1); k++)
        from[k] = -1;
    int lr_from = -1;
    kn_status ret = KN_OK;
    char a[96], b[96];

    /* 1. validate every entry */
    for (int e = 0; e < n; e++) {
        const char *name = st[e].name;
        const kn_tensor *t = st[e].tensor;
        if (!name || !t) {
            ret = kn__err(KN_EINVAL, "%s: load_state: entry %d has no name or tensor", who, e);
            goto done;
        }
        if (!kn_dtype_is_float(t->dtype)) {
            ret = kn__err(KN_EDTYPE, "%s: load_state: '%s' has dtype %s (floating point needed)",
                          who, name, kn_dtype_name(t->dtype));
            goto done;
        }
        int i, slot;
        bool scalar;
        if (strcmp(name, LR_NAME) == 0) {
            if (lr_from >= 0) goto dup;
            lr_from = e;
            scalar = true;
        } else if (parse_name(name, opt->n, &i, &slot) && (allowed >> slot & 1)) {
            if (from[i * (B_N + 1) + slot] >= 0) goto dup;
            from[i * (B_N + 1) + slot] = e;
            scalar = slot == S_STEP;
            if (!scalar) {
                const kn_tensor *p = opt->ps[i].p;
                if (t->ndim != p->ndim || memcmp(t->shape, p->shape, sizeof(int64_t) * p->ndim)) {
                    ret = kn__err(KN_ESHAPE,
                                  "%s: load_state: '%s' has shape %s, parameter %d "
                                  "has %s",
                                  who, name, kn__shape_str(a, sizeof a, t->ndim, t->shape), i,
                                  kn__shape_str(b, sizeof b, p->ndim, p->shape));
                    goto done;
                }
            }
        } else {
            ret = kn__err(KN_EFORMAT, "%s: load_state: unknown entry '%s' (parameters: %d)", who,
                          name, opt->n);
            goto done;
        }
        if (scalar) {
            if (kn__numel(t->ndim, t->shape) != 1) {
                ret = kn__err(KN_ESHAPE, "%s: load_state: '%s' must have one element, has %s", who,
                              name, kn__shape_str(a, sizeof a, t->ndim, t->shape));
                goto done;
            }
            double v = scalar_value(t);
            if (!(v >= 0) || isinf(v)) {
                ret = kn__err(KN_EFORMAT, "%s: load_state: '%s' = %g is not a valid value", who,
                              name, v);
                goto done;
            }
        }
        continue;
    dup:
        ret = kn__err(KN_EFORMAT, "%s: load_state: duplicate entry '%s'", who, name);
        goto done;
    }
    /* 2. a parameter's state is all or nothing */
    for (int i = 0; i < opt->n; i++) {
        unsigned have = 0;
        for (int s = 0; s <= B_N; s++)
            if (from[i * (B_N + 1) + s] >= 0) have |= 1u << s;
        if (!have || (have & req) == req) continue;
        for (int s = 0; s <= B_N; s++)
            if ((req >> s & 1) && !(have >> s & 1)) {
                ret = kn__err(KN_EFORMAT, "%s: load_state: state.%d.%s is missing", who, i,
                              slot_names[s]);
                goto done;
            }
    }
    /* 3. allocate what is missing (nothing changes meaning yet) */
    for (int i = 0; i < opt->n; i++)
        for (int s = 0; s < B_N; s++)
            if (from[i * (B_N + 1) + s] >= 0 && (ret = ensure_buf(&opt->ps[i], s, false)))
                goto done;
    /* 4. commit: the loaded state replaces the old one */
    double maxstep = -1;
    for (int i = 0; i < opt->n; i++) {
        pstate *ps = &opt->ps[i];
        for (int s = 0; s < B_N; s++) {
            int e = from[i * (B_N + 1) + s];
            ps->live[s] = e >= 0;
            if (e < 0 || kn__ptr(st[e].tensor) == kn__ptr(ps->buf[s])) continue;
            if ((ret = kn_tensor_read(st[e].tensor, ps->p->dtype, kn__ptr(ps->buf[s]),
                                      tensor_bytes(ps->p))))
                goto done;
        }
        int e = from[i * (B_N + 1) + S_STEP];
        ps->has_step = e >= 0;
        ps->step = e >= 0 ? scalar_value(st[e].tensor) : 0;
        if (ps->has_step && ps->step > maxstep) maxstep = ps->step;
    }
    if (lr_from >= 0) opt->lr = scalar_value(st[lr_from].tensor);
    if (maxstep >= 0) opt->steps = (int64_t)maxstep;
done:
    kn__free(from);
    return ret;
}

/* ================= gradient clipping ================= */

/* the grads of params that have one; NULL entries are an error */
static kn_status clip_args(const char *who, kn_tensor *const *params, int n) {
    if (n < 0 || (n > 0 && !params))
        return kn__err(KN_EINVAL, "%s: bad parameter array (n %d)", who, n);
    for (int i = 0; i < n; i++) {
        if (!params[i]) return kn__err(KN_EINVAL, "%s: parameter %d is NULL", who, i);
        kn_tensor *g = params[i]->grad;
        if (!g) continue;
        if (!kn_dtype_is_float(g->dtype))
            return kn__err(KN_EDTYPE, "%s: parameter %d has a %s gradient", who, i,
                           kn_dtype_name(g->dtype));
        if (has_broadcast_stride(g))
            return kn__err(KN_EUNSUPPORTED, "%s: the gradient of parameter %d is an expanded view",
                           who, i);
    }
    return KN_OK;
}

/* sum |x|^q (q 2, 1, or general with pq) or max |x| (q 0) over contiguous f32/f64 data, in
 * fixed blocks whose partial results combine in a fixed order (thread-count independent) */
static double contig_norm(const void *x, bool f32, int64_t n, int q, double pq) {
    double part[NORM_BLOCKS];
    int64_t blk = (n + NORM_BLOCKS - 1) / NORM_BLOCKS;
    if (blk < 4096) blk = 4096;
    int nb = (int)((n + blk - 1) / blk);
    int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (nb > 1 && nth > 1) schedule(static)
    for (int b = 0; b < nb; b++) {
        int64_t lo = b * blk, hi = lo + blk < n ? lo + blk : n;
        if (q == 0)
            part[b] = f32 ? absmax_part_f32(x, lo, hi) : absmax_part_f64(x, lo, hi);
        else
            part[b] = f32 ? norm_part_f32(x, lo, hi, q, pq) : norm_part_f64(x, lo, hi, q, pq);
    }
    double r = 0;
    for (int b = 0; b < nb; b++) {
        if (q == 0)
            r = (part[b] > r || isnan(part[b])) && !isnan(r) ? part[b] : r;
        else
            r += part[b];
    }
    return r;
}

/* norm of one grad: (sum |x|^p)^(1/p), or max |x| */
static kn_status grad_norm(kn_tensor *g, double p, double *out) {
    int q = isinf(p) ? 0 : p == 2 ? 2 : p == 1 ? 1 : 3;
    int64_t n = kn__numel(g->ndim, g->shape);
    double r;
    if ((g->dtype == KN_F32 || g->dtype == KN_F64) && kn__is_contiguous(g)) {
        r = contig_norm(kn__ptr(g), g->dtype == KN_F32, n, q, p);
    } else {
        double *tmp = kn__malloc(sizeof(double) * (size_t)(n ? n : 1));
        if (!tmp) return kn_last_status();
        kn_status st = kn_tensor_read(g, KN_F64, tmp, sizeof(double) * (size_t)n);
        if (st != KN_OK) {
            kn__free(tmp);
            return st;
        }
        r = contig_norm(tmp, false, n, q, p);
        kn__free(tmp);
    }
    *out = q == 0 ? r : q == 2 ? sqrt(r) : q == 1 ? r : pow(r, 1.0 / p);
    return KN_OK;
}

static void grad_apply(kn_tensor *g, map_op op, double c) {
    int64_t n = kn__numel(g->ndim, g->shape);
    if (!((g->dtype == KN_F32 || g->dtype == KN_F64) && kn__is_contiguous(g))) {
        strided_map(g, op, c);
        return;
    }
    bool f32 = g->dtype == KN_F32;
    void *x = kn__ptr(g);
    int nth = kn__threads();
    int64_t nc = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(nth) if (n >= PAR_MIN && nth > 1) schedule(static)
    for (int64_t k = 0; k < nc; k++) {
        int64_t lo = k * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        if (op == MAP_SCALE)
            f32 ? scale_part_f32(x, lo, hi, c) : scale_part_f64(x, lo, hi, c);
        else
            f32 ? clamp_part_f32(x, lo, hi, c) : clamp_part_f64(x, lo, hi, c);
    }
}

double kn_clip_grad_norm_(kn_tensor *const *params, int n, double max_norm, double norm_type) {
    const char *who = "clip_grad_norm_";
    if (clip_args(who, params, n) != KN_OK) return NAN;
    if (!(max_norm >= 0)) {
        kn__err(KN_EINVAL, "%s: max_norm must be >= 0, got %g", who, max_norm);
        return NAN;
    }
    if (!(norm_type > 0)) {
        kn__err(KN_EINVAL, "%s: norm_type must be > 0 (or INFINITY), got %g", who, norm_type);
        return NAN;
    }
    /* PyTorch: norms per grad, then the norm of those norms */
    double total = 0;
    bool any = false, inf = isinf(norm_type);
    for (int i = 0; i < n; i++) {
        kn_tensor *g = params[i]->grad;
        if (!g) continue;
        double gn = 0;
        if (grad_norm(g, norm_type, &gn) != KN_OK) return NAN;
        any = true;
        if (inf)
            total = (gn > total || isnan(gn)) && !isnan(total) ? gn : total;
        else
            total += norm_type == 2 ? gn * gn : norm_type == 1 ? gn : pow(gn, norm_type);
    }
    if (!any) return 0.0;
    if (!inf)
        total = norm_type == 2 ? sqrt(total) : norm_type == 1 ? total : pow(total, 1 / norm_type);
    double coef = max_norm / (total + 1e-6);
    if (coef > 1.0) coef = 1.0; /* torch.clamp(max=1): NaN stays NaN */
    if (coef != 1.0)
        for (int i = 0; i < n; i++)
            if (params[i]->grad) grad_apply(params[i]->grad, MAP_SCALE, coef);
    return total;
}

kn_status kn_clip_grad_value_(kn_tensor *const *params, int n, double clip) {
    const char *who = "clip_grad_value_";
    kn_status st = clip_args(who, params, n);
    if (st != KN_OK) return st;
    if (!(clip >= 0)) return kn__err(KN_EINVAL, "%s: clip value must be >= 0, got %g", who, clip);
    for (int i = 0; i < n; i++)
        if (params[i]->grad) grad_apply(params[i]->grad, MAP_CLAMP, clip);
    return KN_OK;
}

/* ================= the update as an op, for compiled training steps =================
 * "optimizer_update" runs apply_update on (param, grad, lr, count, state buffers...) in place.
 * It is an internal op of this layer (not in the registry: it exists for graphs traced from a
 * training step). Inputs: param, grad (contiguous, param's dtype), lr (0-d f64), count (0-d f64,
 * advanced), then the state buffers of the slots in attr "slots" (bit b = B_b), in slot order.
 * Attrs: kind, slots, flags (nesterov | maximize<<1 | amsgrad<<2 | centered<<3), wd, h0..h2
 * (SGD: momentum, dampening; Adam/AdamW: beta1, beta2, eps; RMSprop: alpha, eps, momentum). */
static kn_status upd_infer(kn_opctx *c) {
    const kn_tensor *p = c->in[0], *g = c->in[1];
    int64_t slots = kn__attr_int(c->attrs, "slots", 0), nb = __builtin_popcountll(slots);
    if (c->nin != 4 + nb)
        return kn__err(KN_EINVAL, "optimizer_update: %d inputs for %lld state buffers", c->nin,
                       (long long)nb);
    if (g->dtype != p->dtype || g->ndim != p->ndim ||
        memcmp(g->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim))
        return kn__err(KN_ESHAPE, "optimizer_update: gradient does not match its parameter");
    for (int i = 2; i < 4; i++)
        if (c->in[i]->dtype != KN_F64 || c->in[i]->ndim != 0)
            return kn__err(KN_EDTYPE, "optimizer_update: input %d must be a 0-d float64", i);
    for (int i = 4; i < c->nin; i++)
        if (c->in[i]->dtype != p->dtype ||
            kn__numel(c->in[i]->ndim, c->in[i]->shape) != kn__numel(p->ndim, p->shape))
            return kn__err(KN_ESHAPE, "optimizer_update: state buffer %d does not match", i - 4);
    c->nout = 0;
    return KN_OK;
}

static hyper attrs_hyper(const kn_attrs *at) {
    hyper h = {.kind = (okind)kn__attr_int(at, "kind", K_SGD)};
    int64_t f = kn__attr_int(at, "flags", 0);
    double h0 = kn__attr_float(at, "h0", 0), h1 = kn__attr_float(at, "h1", 0),
           h2 = kn__attr_float(at, "h2", 0);
    h.weight_decay = kn__attr_float(at, "wd", 0);
    h.nesterov = f & 1, h.maximize = f & 2, h.amsgrad = f & 4, h.centered = f & 8;
    if (h.kind == K_SGD) h.momentum = h0, h.dampening = h1;
    if (h.kind == K_ADAM || h.kind == K_ADAMW) h.beta1 = h0, h.beta2 = h1, h.eps = h2;
    if (h.kind == K_RMSPROP) h.alpha = h0, h.eps = h1, h.momentum = h2;
    return h;
}

static kn_status upd_forward(kn_opctx *c) {
    hyper h = attrs_hyper(c->attrs);
    h.lr = *(const double *)kn__ptr(c->in[2]);
    double *count = (double *)kn__ptr(c->in[3]);
    kn_tensor *buf[B_N] = {0};
    int64_t slots = kn__attr_int(c->attrs, "slots", 0);
    for (int b = 0, k = 4; b < B_N; b++)
        if (slots & (1 << b)) buf[b] = c->in[k++];
    apply_update(&h, c->in[0], kn__ptr(c->in[1]), buf, count);
    return KN_OK;
}

const kn_opdef kn__op_optimizer_update = {.name = "optimizer_update",
                                          .min_in = 4,
                                          .max_in = 4 + B_N,
                                          .nout = 0,
                                          .dtypes = KN_DT_FLOAT,
                                          .flags = KN_OPF_MUTATES | KN_OPF_INTERNAL,
                                          .infer = upd_infer,
                                          .forward = upd_forward,
                                          .doc = "one optimizer update of a parameter, in place"};

static kn_attrs update_attrs(const kn_optimizer *o, unsigned slots) {
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "kind", o->kind);
    kn_attrs_set_int(&a, "slots", slots);
    kn_attrs_set_int(&a, "flags",
                     o->nesterov | o->maximize << 1 | o->amsgrad << 2 | o->centered << 3);
    kn_attrs_set_float(&a, "wd", o->weight_decay);
    double h[3] = {0};
    if (o->kind == K_SGD) h[0] = o->momentum, h[1] = o->dampening;
    if (o->kind == K_ADAM || o->kind == K_ADAMW) h[0] = o->beta1, h[1] = o->beta2, h[2] = o->eps;
    if (o->kind == K_RMSPROP) h[0] = o->alpha, h[1] = o->eps, h[2] = o->momentum;
    kn_attrs_set_float(&a, "h0", h[0]);
    kn_attrs_set_float(&a, "h1", h[1]);
    kn_attrs_set_float(&a, "h2", h[2]);
    return a;
}

kn_status kn__optim_graph_pre(kn_optimizer *opt) {
    if (!scalar_f64(&opt->lr_t, opt->lr)) return kn_last_status();
    for (int i = 0; i < opt->n; i++) {
        pstate *ps = &opt->ps[i];
        if (!scalar_f64(&ps->cnt_t, count_of(opt, ps))) return kn_last_status();
        /* state that is not live (fresh, or reset by load_state) starts from zeros, in the
         * buffers the graph holds (ensure_buf zeroes in place, it never reallocates) */
        kn_status st = state_prep(opt, ps);
        if (st) return st;
    }
    return KN_OK;
}

void kn__optim_graph_post(kn_optimizer *opt) {
    for (int i = 0; i < opt->n; i++)
        set_count(opt, &opt->ps[i], *(const double *)kn__ptr(opt->ps[i].cnt_t));
    opt->steps++;
}

kn_status kn__optim_update_with(kn_optimizer *opt, kn_tensor *const *grads) {
    if (!opt || !grads) return kn__err(KN_EINVAL, "optimizer_update: NULL argument");
    kn_status st = kn__optim_graph_pre(opt);
    for (int i = 0; i < opt->n && st == KN_OK; i++)
        if (grads[i]) st = state_prep(opt, &opt->ps[i]);
    for (int i = 0; i < opt->n && st == KN_OK; i++) {
        pstate *s = &opt->ps[i];
        kn_tensor *g = grads[i];
        if (!g) continue;
        if (g->dtype != s->p->dtype) g = kn_cast(g, s->p->dtype);
        if (g && !kn__is_contiguous(g)) g = kn_contiguous(g);
        if (!g) return kn_last_status();
        kn_tensor *in[4 + B_N] = {s->p, g, opt->lr_t, s->cnt_t};
        int n = 4;
        unsigned slots = 0;
        for (int b = 0; b < B_N; b++)
            if (s->buf[b]) in[n++] = s->buf[b], slots |= 1u << b;
        kn_attrs a = update_attrs(opt, slots);
        kn_tensor *none[1];
        bool prev = kn_no_grad_begin(); /* the update is not differentiated */
        int r = kn__op_run(&kn__op_optimizer_update, in, n, &a, none, 1);
        kn_no_grad_end(prev);
        if (r < 0) st = r;
    }
    if (st == KN_OK) kn__optim_graph_post(opt);
    return st;
}

int kn__optim_params(kn_optimizer *opt, kn_tensor **out, int max) {
    for (int i = 0; i < opt->n && i < max; i++)
        out[i] = opt->ps[i].p;
    return opt->n;
}

/* ---- "matmul_update": a 2-D weight's gradient computed and applied block by block ----
 * The gradient of a weight used as y = x @ W^T (or any 2-D matmul) is a matmul a @ b. Fused with
 * the parameter's update, it is computed a block of rows at a time into per-thread scratch and
 * each block is applied at once, so the whole gradient never exists (for the MLP's first layer,
 * 1.6 MB less in the step's arena). Each gradient element is one GEMM dot product over the
 * batch whatever the row blocking, and the update is elementwise, so results are the same as
 * matmul followed by optimizer_update (the training-trajectory tests check this bit for bit).
 * Inputs: a (R x K), b (K x C), param (R x C), lr, count, state buffers; attrs as
 * optimizer_update. */
static bool mat2_layout(const kn_tensor *t, bool *trans, int64_t *ld) {
    if (t->ndim != 2) return false;
    if (t->strides[1] == 1 && t->strides[0] >= t->shape[1]) {
        *trans = false;
        *ld = t->strides[0] > 0 ? t->strides[0] : 1;
        return true;
    }
    if (t->strides[0] == 1 && t->strides[1] >= t->shape[0]) {
        *trans = true;
        *ld = t->strides[1] > 0 ? t->strides[1] : 1;
        return true;
    }
    return false;
}

static kn_status mmu_infer(kn_opctx *c) {
    const kn_tensor *a = c->in[0], *b = c->in[1], *p = c->in[2];
    if (a->ndim != 2 || b->ndim != 2 || p->ndim != 2 || a->shape[1] != b->shape[0] ||
        p->shape[0] != a->shape[0] || p->shape[1] != b->shape[1] || a->dtype != p->dtype ||
        b->dtype != p->dtype)
        return kn__err(KN_ESHAPE, "matmul_update: operands do not make the parameter's gradient");
    kn_tensor *const *rest = c->in + 2;
    kn_opctx u = *c;
    kn_tensor *ins[4 + B_N];
    ins[0] = (kn_tensor *)p;
    ins[1] = (kn_tensor *)p; /* the gradient has the parameter's shape and dtype */
    for (int i = 1; i < c->nin - 2; i++)
        ins[i + 1] = rest[i];
    u.in = ins;
    u.nin = c->nin - 1;
    kn_status st = upd_infer(&u);
    c->nout = 0;
    return st;
}

/* rows per block: about 1 MiB of gradient at a time (fewer, larger GEMMs keep their speed) */
static int64_t mmu_rows(int64_t R, int64_t C, size_t es) {
    /* equal blocks of about 1 MiB, a multiple of 16 rows */
    int64_t bytes = R * C * (int64_t)es, nb = (bytes + ((int64_t)1 << 20) - 1) >> 20;
    if (nb < 1) nb = 1;
    int64_t rb = ((R + nb - 1) / nb + 15) / 16 * 16;
    return rb > R ? R : rb < 1 ? 1 : rb;
}

static kn_status mmu_forward(kn_opctx *c) {
    kn_tensor *a = c->in[0], *b = c->in[1], *p = c->in[2];
    bool ta, tb;
    int64_t lda, ldb;
    if (!mat2_layout(a, &ta, &lda) || !mat2_layout(b, &tb, &ldb))
        return kn__err(KN_EUNSUPPORTED, "matmul_update: operand layout");
    int64_t R = a->shape[0], K = a->shape[1], C = b->shape[1];
    size_t es = kn_dtype_size(p->dtype);
    hyper h = attrs_hyper(c->attrs);
    h.lr = *(const double *)kn__ptr(c->in[3]);
    double *count = (double *)kn__ptr(c->in[4]), c0 = *count, cnt = c0;
    kn_tensor *buf[B_N] = {0};
    int64_t slots = kn__attr_int(c->attrs, "slots", 0);
    for (int s = 0, k = 5; s < B_N; s++)
        if (slots & (1 << s)) buf[s] = c->in[k++];
    int64_t rb = mmu_rows(R, C, es);
    size_t need = (size_t)(rb > 0 ? rb : 1) * (size_t)(C > 0 ? C : 1) * es;
    void *g = c->ws && c->ws_bytes >= need ? c->ws : kn__scratch_get(need);
    if (!g) return kn_last_status();
    int64_t half = (rb / 2 + 15) / 16 * 16;
    if (kn__threads() >= 2 && R > rb && half >= 16 && !omp_in_parallel()) {
        /* two lanes, a thread each with single-threaded kernels (OpenBLAS too, meanwhile):
         * blocks of half the rows, each lane its half of the scratch. A GEMM of a few hundred
         * rows and a batch-long reduction gains little from a second thread, the update is
         * memory-bound: the MLP's first layer 356 -> ~290 us. Same bits (see above). */
        kn__blas_threads(1);
        double cnts[2] = {c0, c0};
#pragma omp parallel num_threads(2)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            int prev = kn__threads_local(1);
            char *gt = (char *)g + (size_t)(t * half * C) * es;
            for (int64_t r0 = t * half; r0 < R; r0 += nt * half) {
                int64_t n = R - r0 < half ? R - r0 : half;
                const char *ap = kn__ptr(a) + (size_t)(ta ? r0 : r0 * lda) * es;
                kn__gemm(p->dtype, false, ta, tb, n, C, K, 1.0, ap, lda, kn__ptr(b), ldb, 0.0, gt,
                         C);
                cnts[t] = c0;
                apply_update_range(&h, p, gt, buf, &cnts[t], r0 * C, n * C);
            }
            kn__threads_local(prev);
        }
        kn__blas_threads(kn__threads());
        *count = cnts[0];
        if (g != c->ws) kn__scratch_put(g);
        return KN_OK;
    }
    for (int64_t r0 = 0; r0 < R; r0 += rb) {
        int64_t n = R - r0 < rb ? R - r0 : rb;
        const char *ap = kn__ptr(a) + (size_t)(ta ? r0 : r0 * lda) * es;
        kn__gemm(p->dtype, false, ta, tb, n, C, K, 1.0, ap, lda, kn__ptr(b), ldb, 0.0, g, C);
        cnt = c0;
        apply_update_range(&h, p, g, buf, &cnt, r0 * C, n * C);
    }
    *count = cnt;
    if (g != c->ws) kn__scratch_put(g);
    return KN_OK;
}

static size_t mmu_workspace(const kn_opctx *c) {
    const kn_tensor *a = c->in[0], *b = c->in[1];
    int64_t R = a->shape[0], C = b->shape[1];
    size_t es = kn_dtype_size(a->dtype);
    return (size_t)(R > 0 ? mmu_rows(R, C, es) : 1) * (size_t)(C > 0 ? C : 1) * es;
}

const kn_opdef kn__op_matmul_update = {
    .name = "matmul_update",
    .min_in = 5,
    .max_in = 5 + B_N,
    .nout = 0,
    .dtypes = KN_DT_FLOAT,
    .flags = KN_OPF_MUTATES | KN_OPF_INTERNAL,
    .workspace = mmu_workspace,
    .infer = mmu_infer,
    .forward = mmu_forward,
    .doc = "a 2-D parameter's gradient as a @ b, applied block by block by its optimizer"};
