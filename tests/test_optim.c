/*
 * test_optim.c - optimizers, LR schedulers and gradient clipping against PyTorch 1.13 numbers
 * (tests/golden/optim_ref.h from tools/gen_optim_ref.py), state save/load round trips, thread
 * count independence, no allocation in steady steps, error paths and leaks.
 */
#include <math.h>
#include <string.h>

#include "core/core_impl.h"
#include "golden/optim_ref.h"
#include "kn_test.h"
#include "optim/optim_impl.h"

#define LEAK_BEGIN size_t kt_live0 = kn_live_tensors()
#define LEAK_END KT_EQ_INT(kt_live0, kn_live_tensors())

/* ---------------- helpers ---------------- */

static kn_tensor *from_f64(kn_dtype dt, int ndim, const int64_t *shape, const double *v) {
    kn_tensor *t = kn_from_data(KN_F64, ndim, shape, v);
    if (dt == KN_F64 || !t) return t;
    kn_tensor *c = kn_cast(t, dt);
    kn_tensor_free(t);
    return c;
}

static const int64_t SH0[2] = {2, 3}, SH1[1] = {4};

/* the two golden parameters, requires_grad */
static void make_params(kn_dtype dt, kn_tensor **p) {
    p[0] = from_f64(dt, 2, SH0, oref_p0_init);
    p[1] = from_f64(dt, 1, SH1, oref_p1_init);
    kn_tensor_set_requires_grad(p[0], true);
    kn_tensor_set_requires_grad(p[1], true);
}

static void set_grad(kn_tensor *p, kn_tensor *g) {
    kn_tensor_set_grad(p, g);
    kn_tensor_free(g);
}

/* grads of golden step k (p1 gets none where the fixture says so) */
static void set_step_grads(kn_dtype dt, kn_tensor **p, int k) {
    set_grad(p[0], from_f64(dt, 2, SH0, oref_grads[k]));
    if (oref_p1_has_grad[k])
        set_grad(p[1], from_f64(dt, 1, SH1, oref_grads[k] + 6));
    else
        kn_tensor_set_grad(p[1], NULL);
}

static kn_optimizer *make_case_opt(const oref_case *c, kn_tensor **p, int n) {
    if (!strcmp(c->kind, "sgd")) {
        kn_sgd_opts o = {.lr = c->lr,
                         .momentum = c->momentum,
                         .dampening = c->dampening,
                         .weight_decay = c->weight_decay,
                         .nesterov = c->nesterov,
                         .maximize = c->maximize};
        return kn_sgd_new(p, n, &o);
    }
    if (!strcmp(c->kind, "adam") || !strcmp(c->kind, "adamw")) {
        kn_adam_opts o = {.lr = c->lr,
                          .beta1 = c->beta1,
                          .beta2 = c->beta2,
                          .eps = c->eps,
                          .weight_decay = c->weight_decay,
                          .amsgrad = c->amsgrad,
                          .maximize = c->maximize};
        return !strcmp(c->kind, "adam") ? kn_adam_new(p, n, &o) : kn_adamw_new(p, n, &o);
    }
    kn_rmsprop_opts o = {.lr = c->lr,
                         .alpha = c->alpha,
                         .eps = c->eps,
                         .weight_decay = c->weight_decay,
                         .momentum = c->momentum,
                         .centered = c->centered};
    return kn_rmsprop_new(p, n, &o);
}

static double params_maxrel(kn_tensor **p, const double *e, double *vals) {
    double v[10], worst = 0;
    kn_tensor_read(p[0], KN_F64, v, sizeof(double) * 6);
    kn_tensor_read(p[1], KN_F64, v + 6, sizeof(double) * 4);
    for (int j = 0; j < 10; j++) {
        double d = fabs(v[j] - e[j]) / fmax(fabs(e[j]), 1e-3);
        if (getenv("OPTIM_DEBUG")) fprintf(stderr, "  [%d] %.9g %.9g\n", j, v[j], e[j]);
        if (!(d <= worst)) worst = d;
        if (vals) vals[j] = v[j];
    }
    return worst;
}

/* ---------------- optimizers vs PyTorch ---------------- */

static void test_optimizers_golden(void) {
    LEAK_BEGIN;
    for (int ci = 0; ci < OREF_NCASES; ci++) {
        const oref_case *c = &oref_cases[ci];
        for (int d = 0; d < 2; d++) {
            kn_dtype dt = d ? KN_F32 : KN_F64;
            double tol = d ? 1e-6 : 1e-12;
            kn_tensor *p[2];
            make_params(dt, p);
            kn_optimizer *opt = make_case_opt(c, p, 2);
            KT_NOTNULL(opt);
            for (int k = 0; k < OREF_NSTEPS; k++) {
                set_step_grads(dt, p, k);
                KT_OK(kn_optimizer_step(opt));
                double got[10];
                double rel = params_maxrel(p, d ? c->f32[k] : c->f64[k], got);
                if (!(rel <= tol))
                    KT_FAIL("%s %s step %d: max relative diff %.3g > %g (p0[0] %.17g vs %.17g)",
                            c->name, kn_dtype_name(dt), k, rel, tol, got[0],
                            d ? c->f32[k][0] : c->f64[k][0]);
                /* nothing recorded: params stay leaves without a grad_fn */
                KT_TRUE(kn_tensor_grad_fn_name(p[0]) == NULL && kn_tensor_is_leaf(p[0]));
            }
            KT_EQ_INT(OREF_NSTEPS, kn_optimizer_steps(opt));
            kn_optimizer_free(opt);
            kn_tensor_free(p[0]);
            kn_tensor_free(p[1]);
        }
    }
    LEAK_END;
}

static void test_defaults_and_names(void) {
    LEAK_BEGIN;
    kn_tensor *p[2];
    make_params(KN_F32, p);
    kn_optimizer *a = kn_adam_new(p, 2, NULL), *w = kn_adamw_new(p, 2, NULL),
                 *r = kn_rmsprop_new(p, 2, NULL);
    kn_sgd_opts so = {.lr = 0.5};
    kn_optimizer *s = kn_sgd_new(p, 2, &so);
    KT_NOTNULL(a);
    KT_NOTNULL(w);
    KT_NOTNULL(r);
    KT_NOTNULL(s);
    KT_TRUE(!strcmp(kn_optimizer_name(a), "Adam") && !strcmp(kn_optimizer_name(w), "AdamW") &&
            !strcmp(kn_optimizer_name(r), "RMSprop") && !strcmp(kn_optimizer_name(s), "SGD"));
    KT_NEAR(1e-3, kn_optimizer_lr(a), 0);
    KT_NEAR(1e-3, kn_optimizer_lr(w), 0);
    KT_NEAR(1e-2, kn_optimizer_lr(r), 0);
    KT_NEAR(0.5, kn_optimizer_lr(s), 0);
    KT_NEAR(0.9, kn__optim_momentum(a), 0);
    KT_OK(kn_optimizer_set_lr(s, 0.25));
    KT_NEAR(0.25, kn_optimizer_lr(s), 0);
    KT_STATUS(KN_EINVAL, kn_optimizer_set_lr(s, -1));
    KT_STATUS(KN_EINVAL, kn_optimizer_set_lr(s, NAN));
    KT_NEAR(0.25, kn_optimizer_lr(s), 0);
    KT_EQ_INT(0, kn_optimizer_steps(s));
    kn_optimizer_free(a);
    kn_optimizer_free(w);
    kn_optimizer_free(r);
    kn_optimizer_free(s);
    kn_optimizer_free(NULL);
    kn_tensor_free(p[0]);
    kn_tensor_free(p[1]);
    LEAK_END;
}

/* a grad that is non-contiguous or of another dtype gives the same update as a plain one */
static void test_unusual_grads(void) {
    LEAK_BEGIN;
    const oref_case *c = &oref_cases[5]; /* adam_amsgrad_wd */
    kn_tensor *p[2], *q[2];
    make_params(KN_F32, p);
    make_params(KN_F32, q);
    kn_optimizer *o1 = make_case_opt(c, p, 2), *o2 = make_case_opt(c, q, 2);
    KT_NOTNULL(o1);
    KT_NOTNULL(o2);
    for (int k = 0; k < OREF_NSTEPS; k++) {
        set_step_grads(KN_F32, p, k);
        /* q0: transposed view of a (3, 2) tensor; q1: float64 grad */
        double tg[6];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                tg[j * 2 + i] = oref_grads[k][i * 3 + j];
        int64_t sh[2] = {3, 2};
        kn_tensor *t = from_f64(KN_F32, 2, sh, tg);
        kn_tensor *tt = kn_transpose(t, 0, 1);
        KT_TRUE(!kn_tensor_is_contiguous(tt));
        set_grad(q[0], tt);
        kn_tensor_free(t);
        if (oref_p1_has_grad[k])
            set_grad(q[1], from_f64(KN_F64, 1, SH1, oref_grads[k] + 6));
        else
            kn_tensor_set_grad(q[1], NULL);
        KT_OK(kn_optimizer_step(o1));
        KT_OK(kn_optimizer_step(o2));
        for (int i = 0; i < 2; i++)
            KT_TRUE(!memcmp(kn_tensor_data(p[i]), kn_tensor_data(q[i]),
                            sizeof(float) * (size_t)kn_tensor_numel(p[i])));
    }
    /* a non-float grad is refused before anything changes */
    float before[6];
    memcpy(before, kn_tensor_data(q[0]), sizeof before);
    int64_t sh6[2] = {2, 3};
    kn_tensor *ig = kn_zeros(KN_I32, 2, sh6);
    KT_OK(kn_tensor_set_grad(q[0], ig));
    kn_tensor_free(ig);
    KT_STATUS(KN_EDTYPE, kn_optimizer_step(o2));
    KT_TRUE(strstr(kn_last_error(), "parameter 0") != NULL);
    KT_TRUE(!memcmp(before, kn_tensor_data(q[0]), sizeof before));
    kn_optimizer_free(o1);
    kn_optimizer_free(o2);
    for (int i = 0; i < 2; i++) {
        kn_tensor_free(p[i]);
        kn_tensor_free(q[i]);
    }
    LEAK_END;
}

/* ---------------- large parameters: parallel, deterministic, allocation free ---------------- */

static void run_big(kn_dtype dt, int threads, int which, void *out, size_t nbytes,
                    uint64_t *allocs) {
    int64_t sh[2] = {613, 509}; /* 312017 elements: several chunks and a ragged tail */
    kn_manual_seed(7);
    kn_tensor *p = kn_randn(dt, 2, sh), *g1 = kn_randn(dt, 2, sh), *g2 = kn_randn(dt, 2, sh);
    kn_tensor_set_requires_grad(p, true);
    kn_optimizer *o = NULL;
    if (which == 0) {
        kn_sgd_opts so = {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = true};
        o = kn_sgd_new(&p, 1, &so);
    } else if (which == 1) {
        kn_adam_opts ao = {.lr = 1e-2, .amsgrad = true};
        o = kn_adamw_new(&p, 1, &ao);
    } else {
        kn_rmsprop_opts ro = {.momentum = 0.5, .centered = true, .weight_decay = 1e-3};
        o = kn_rmsprop_new(&p, 1, &ro);
    }
    kn_set_num_threads(threads);
    kn_tensor_set_grad(p, g1);
    kn_optimizer_step(o);
    uint64_t a0 = kn__alloc_count();
    for (int k = 0; k < 4; k++) {
        kn_optimizer_zero_grad(o, false);
        kn_add_(kn_tensor_grad(p), k % 2 ? g1 : g2, 1.0);
        kn_optimizer_step(o);
    }
    *allocs = kn__alloc_count() - a0;
    memcpy(out, kn_tensor_data(p), nbytes);
    kn_optimizer_free(o);
    kn_tensor_free(p);
    kn_tensor_free(g1);
    kn_tensor_free(g2);
}

static void test_big_threads(void) {
    LEAK_BEGIN;
    int nth0 = kn_get_num_threads();
    size_t n = 613 * 509;
    for (int d = 0; d < 2; d++) {
        kn_dtype dt = d ? KN_F64 : KN_F32;
        size_t nb = n * kn_dtype_size(dt);
        char *a = malloc(nb), *b = malloc(nb);
        for (int which = 0; which < 3; which++) {
            uint64_t al1 = 0, al2 = 0;
            run_big(dt, 1, which, a, nb, &al1);
            run_big(dt, 3, which, b, nb, &al2);
            if (memcmp(a, b, nb)) {
                free(a);
                free(b);
                kn_set_num_threads(nth0);
                KT_FAIL("optimizer %d %s: results depend on the thread count", which,
                        kn_dtype_name(dt));
            }
            KT_EQ_INT(0, al1);
            KT_EQ_INT(0, al2);
        }
        free(a);
        free(b);
    }
    kn_set_num_threads(nth0);
    LEAK_END;
}

/* ---------------- state ---------------- */

static int find_entry(const kn_named_tensor *st, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(st[i].name, name)) return i;
    return -1;
}

static void roundtrip_case(const oref_case *c, kn_dtype dt) {
    kn_tensor *p[2], *q[2];
    make_params(dt, p);
    kn_optimizer *o1 = make_case_opt(c, p, 2);
    KT_NOTNULL(o1);
    for (int k = 0; k < 3; k++) {
        set_step_grads(dt, p, k);
        KT_OK(kn_optimizer_step(o1));
    }
    kn_named_tensor st[32];
    int ns = kn_optimizer_state(o1, NULL, 0);
    KT_TRUE(ns > 0 && ns <= 32);
    KT_EQ_INT(ns, kn_optimizer_state(o1, st, 32));
    KT_TRUE(!strcmp(st[ns - 1].name, "param_groups.lr"));
    /* a fresh optimizer over clones of the parameters */
    for (int i = 0; i < 2; i++) {
        q[i] = kn_clone(p[i]);
        kn_tensor *d = kn_detach(q[i]);
        kn_tensor_free(q[i]);
        q[i] = d;
        kn_tensor_set_requires_grad(q[i], true);
    }
    kn_optimizer *o2 = make_case_opt(c, q, 2);
    KT_NOTNULL(o2);
    KT_OK(kn_optimizer_set_lr(o2, 123.0)); /* restored from param_groups.lr */
    KT_OK(kn_optimizer_load_state(o2, st, ns));
    KT_NEAR(kn_optimizer_lr(o1), kn_optimizer_lr(o2), 0);
    kn_named_tensor st2[32];
    KT_EQ_INT(ns, kn_optimizer_state(o2, st2, 32));
    for (int i = 0; i < ns; i++) {
        int j = find_entry(st2, ns, st[i].name);
        KT_TRUE(j >= 0);
        KT_CLOSE(st2[j].tensor, st[i].tensor, 0, 0);
    }
    for (int k = 3; k < OREF_NSTEPS; k++) {
        set_step_grads(dt, p, k);
        set_step_grads(dt, q, k);
        KT_OK(kn_optimizer_step(o1));
        KT_OK(kn_optimizer_step(o2));
        for (int i = 0; i < 2; i++)
            if (memcmp(kn_tensor_data(p[i]), kn_tensor_data(q[i]),
                       kn_dtype_size(dt) * (size_t)kn_tensor_numel(p[i])))
                KT_FAIL("%s %s: step %d differs after load_state", c->name, kn_dtype_name(dt), k);
    }
    kn_optimizer_free(o1);
    kn_optimizer_free(o2);
    for (int i = 0; i < 2; i++) {
        kn_tensor_free(p[i]);
        kn_tensor_free(q[i]);
    }
}

static void test_state_roundtrip(void) {
    LEAK_BEGIN;
    for (int ci = 0; ci < OREF_NCASES; ci++) {
        roundtrip_case(&oref_cases[ci], KN_F32);
        if (kt_cur_failed) return;
        roundtrip_case(&oref_cases[ci], KN_F64);
        if (kt_cur_failed) return;
    }
    LEAK_END;
}

static void test_state_names(void) {
    LEAK_BEGIN;
    kn_tensor *p[2];
    make_params(KN_F64, p);
    kn_adam_opts ao = {.lr = 0.01, .amsgrad = true};
    kn_optimizer *o = kn_adam_new(p, 2, &ao);
    kn_named_tensor st[16];
    /* nothing but the lr before the first step */
    KT_EQ_INT(1, kn_optimizer_state(o, st, 16));
    KT_TRUE(!strcmp(st[0].name, "param_groups.lr"));
    KT_EQ_INT(0, kn_tensor_ndim(st[0].tensor));
    KT_EQ_INT(KN_F64, kn_tensor_dtype(st[0].tensor));
    KT_NEAR(0.01, kn_item(st[0].tensor), 0);
    /* steps 0..2: p1 has no grad at step 2 */
    for (int k = 0; k < 3; k++) {
        set_step_grads(KN_F64, p, k);
        KT_OK(kn_optimizer_step(o));
    }
    int n = kn_optimizer_state(o, st, 16);
    KT_EQ_INT(9, n);
    const char *want[9] = {"state.0.step",           "state.0.exp_avg",        "state.0.exp_avg_sq",
                           "state.0.max_exp_avg_sq", "state.1.step",           "state.1.exp_avg",
                           "state.1.exp_avg_sq",     "state.1.max_exp_avg_sq", "param_groups.lr"};
    for (int i = 0; i < 9; i++)
        if (strcmp(st[i].name, want[i])) KT_FAIL("entry %d: %s, want %s", i, st[i].name, want[i]);
    KT_NEAR(3, kn_item(st[0].tensor), 0);
    KT_NEAR(2, kn_item(st[4].tensor), 0); /* per-parameter step */
    KT_EQ_INT(2, kn_tensor_ndim(st[1].tensor));
    /* max 2 writes two entries and still returns the total */
    kn_named_tensor two[2];
    KT_EQ_INT(9, kn_optimizer_state(o, two, 2));
    KT_TRUE(!strcmp(two[1].name, "state.0.exp_avg"));
    kn_optimizer_free(o);

    /* SGD: momentum buffer only once momentum is used, no step */
    kn_sgd_opts so = {.lr = 0.1};
    o = kn_sgd_new(p, 2, &so);
    set_step_grads(KN_F64, p, 0);
    KT_OK(kn_optimizer_step(o));
    KT_EQ_INT(1, kn_optimizer_state(o, st, 16));
    kn_optimizer_free(o);
    so.momentum = 0.9;
    o = kn_sgd_new(p, 2, &so);
    KT_OK(kn_optimizer_step(o));
    KT_EQ_INT(3, kn_optimizer_state(o, st, 16));
    KT_TRUE(!strcmp(st[0].name, "state.0.momentum_buffer") &&
            !strcmp(st[1].name, "state.1.momentum_buffer"));
    /* first momentum buffer = the first d_p */
    KT_CLOSE(st[0].tensor, kn_tensor_grad(p[0]), 0, 0);
    kn_optimizer_free(o);

    /* RMSprop order: step, square_avg, momentum_buffer, grad_avg */
    kn_rmsprop_opts ro = {.momentum = 0.5, .centered = true};
    o = kn_rmsprop_new(p, 2, &ro);
    KT_OK(kn_optimizer_step(o));
    KT_EQ_INT(9, kn_optimizer_state(o, st, 16));
    KT_TRUE(!strcmp(st[0].name, "state.0.step") && !strcmp(st[1].name, "state.0.square_avg") &&
            !strcmp(st[2].name, "state.0.momentum_buffer") &&
            !strcmp(st[3].name, "state.0.grad_avg"));
    kn_optimizer_free(o);
    kn_tensor_free(p[0]);
    kn_tensor_free(p[1]);
    LEAK_END;
}

static void test_state_errors(void) {
    LEAK_BEGIN;
    kn_tensor *p[2];
    make_params(KN_F32, p);
    kn_adam_opts ao = {.lr = 0.01};
    kn_optimizer *o = kn_adam_new(p, 2, &ao);
    set_step_grads(KN_F32, p, 0);
    KT_OK(kn_optimizer_step(o));
    kn_named_tensor st[16], bad[16];
    int n = kn_optimizer_state(o, st, 16);
    KT_EQ_INT(7, n);
    float before[6];
    memcpy(before, kn_tensor_data(st[1].tensor), sizeof before); /* state.0.exp_avg */

    kn_tensor *wrong = kn_zeros(KN_F32, 1, SH1), *ints = kn_zeros(KN_I64, 2, SH0),
              *two = kn_zeros(KN_F64, 1, (int64_t[]){2}), *neg = kn_scalar(KN_F64, -1);
#define BAD_LOAD(status, idx, nm, tens, substr)                                                    \
    do {                                                                                           \
        memcpy(bad, st, sizeof(kn_named_tensor) * (size_t)n);                                      \
        if ((idx) >= 0) bad[idx] = (kn_named_tensor){(nm), (tens)};                                \
        KT_STATUS(status, kn_optimizer_load_state(o, bad, n));                                     \
        if (!strstr(kn_last_error(), (substr)))                                                    \
            KT_FAIL("message \"%s\" lacks \"%s\"", kn_last_error(), (substr));                     \
    } while (0)
    BAD_LOAD(KN_EFORMAT, 1, "state.0.exp_avgg", st[1].tensor, "state.0.exp_avgg");
    BAD_LOAD(KN_EFORMAT, 1, "state.2.exp_avg", st[1].tensor, "state.2.exp_avg");
    BAD_LOAD(KN_EFORMAT, 1, "state.0.momentum_buffer", st[1].tensor, "momentum_buffer");
    BAD_LOAD(KN_EFORMAT, 1, "state.-1.exp_avg", st[1].tensor, "state.-1");
    BAD_LOAD(KN_EFORMAT, 1, "weights", st[1].tensor, "weights");
    BAD_LOAD(KN_ESHAPE, 1, "state.0.exp_avg", wrong, "state.0.exp_avg");
    BAD_LOAD(KN_EDTYPE, 1, "state.0.exp_avg", ints, "state.0.exp_avg");
    BAD_LOAD(KN_ESHAPE, 0, "state.0.step", two, "state.0.step");
    BAD_LOAD(KN_EFORMAT, 0, "state.0.step", neg, "state.0.step");
    BAD_LOAD(KN_EFORMAT, 6, "param_groups.lr", neg, "param_groups.lr");
    BAD_LOAD(KN_EFORMAT, 2, "state.0.exp_avg", st[1].tensor, "duplicate");
    BAD_LOAD(KN_EINVAL, 1, NULL, st[1].tensor, "entry 1");
    BAD_LOAD(KN_EINVAL, 1, "state.0.exp_avg", NULL, "entry 1");
    /* missing partner entry */
    KT_STATUS(KN_EFORMAT, kn_optimizer_load_state(o, st + 1, n - 1));
    KT_TRUE(strstr(kn_last_error(), "state.0.step") != NULL);
    KT_STATUS(KN_EINVAL, kn_optimizer_load_state(o, NULL, 3));
    KT_STATUS(KN_EINVAL, kn_optimizer_load_state(NULL, st, n));
    /* nothing changed on any failure */
    KT_TRUE(!memcmp(before, kn_tensor_data(st[1].tensor), sizeof before));
    KT_EQ_INT(n, kn_optimizer_state(o, bad, 16));
    /* loading its own state is a no-op; loading nothing but the lr drops the state */
    KT_OK(kn_optimizer_load_state(o, st, n));
    KT_TRUE(!memcmp(before, kn_tensor_data(st[1].tensor), sizeof before));
    KT_OK(kn_optimizer_load_state(o, st + n - 1, 1));
    KT_EQ_INT(1, kn_optimizer_state(o, bad, 16));
    /* float64 state converts to the float32 params (PyTorch casts state to the param dtype) */
    kn_tensor *d64 = kn_cast(wrong, KN_F64);
    kn_named_tensor conv[4] = {
        {"state.1.step", neg}, {"state.1.exp_avg", d64}, {"state.1.exp_avg_sq", d64}};
    KT_STATUS(KN_EFORMAT, kn_optimizer_load_state(o, conv, 3)); /* step -1 */
    kn_tensor *five = kn_scalar(KN_F32, 5);
    conv[0].tensor = five;
    KT_OK(kn_optimizer_load_state(o, conv, 3));
    KT_EQ_INT(5, kn_optimizer_steps(o));
    KT_EQ_INT(4, kn_optimizer_state(o, bad, 16));
    KT_EQ_INT(KN_F32, kn_tensor_dtype(bad[1].tensor));
    kn_tensor_free(five);
    kn_tensor_free(d64);
    kn_tensor_free(wrong);
    kn_tensor_free(ints);
    kn_tensor_free(two);
    kn_tensor_free(neg);
    KT_EQ_INT(-1, kn_optimizer_state(NULL, st, 1));
    KT_EQ_INT(-1, kn_optimizer_state(o, NULL, 1));
    kn_optimizer_free(o);
    kn_tensor_free(p[0]);
    kn_tensor_free(p[1]);
    LEAK_END;
}

/* ---------------- options and parameters ---------------- */

static void test_option_errors(void) {
    LEAK_BEGIN;
    kn_tensor *p[2];
    make_params(KN_F32, p);
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, NULL), "lr");
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, &(kn_sgd_opts){.lr = 0}), "lr");
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, &(kn_sgd_opts){.lr = -0.1}), "lr");
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, &(kn_sgd_opts){.lr = 0.1, .momentum = -1}), "momentum");
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, &(kn_sgd_opts){.lr = 0.1, .weight_decay = -1}),
           "weight_decay");
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, &(kn_sgd_opts){.lr = 0.1, .nesterov = true}), "esterov");
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 2, &(kn_sgd_opts){.lr = 0.1, .dampening = NAN}), "dampening");
    KT_ERR(
        KN_EINVAL,
        kn_sgd_new(p, 2,
                   &(kn_sgd_opts){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
        "esterov");
    KT_ERR(KN_EINVAL, kn_adam_new(p, 2, &(kn_adam_opts){.lr = -1}), "lr");
    KT_ERR(KN_EINVAL, kn_adam_new(p, 2, &(kn_adam_opts){.beta1 = 1.0}), "index 0");
    KT_ERR(KN_EINVAL, kn_adam_new(p, 2, &(kn_adam_opts){.beta2 = 1.5}), "index 1");
    KT_ERR(KN_EINVAL, kn_adam_new(p, 2, &(kn_adam_opts){.beta2 = -0.5}), "index 1");
    KT_ERR(KN_EINVAL, kn_adamw_new(p, 2, &(kn_adam_opts){.eps = -1}), "eps");
    KT_ERR(KN_EINVAL, kn_adamw_new(p, 2, &(kn_adam_opts){.weight_decay = -1}), "weight_decay");
    KT_ERR(KN_EINVAL, kn_rmsprop_new(p, 2, &(kn_rmsprop_opts){.lr = -1}), "lr");
    KT_ERR(KN_EINVAL, kn_rmsprop_new(p, 2, &(kn_rmsprop_opts){.alpha = -1}), "alpha");
    KT_ERR(KN_EINVAL, kn_rmsprop_new(p, 2, &(kn_rmsprop_opts){.momentum = -1}), "momentum");
    KT_ERR(KN_EINVAL, kn_rmsprop_new(p, 2, &(kn_rmsprop_opts){.eps = -1}), "eps");
    KT_ERR(KN_EINVAL, kn_rmsprop_new(p, 2, &(kn_rmsprop_opts){.weight_decay = NAN}),
           "weight_decay");
    kn_tensor_free(p[0]);
    kn_tensor_free(p[1]);
    LEAK_END;
}

static void test_param_errors(void) {
    LEAK_BEGIN;
    kn_sgd_opts so = {.lr = 0.1};
    kn_tensor *p[3];
    make_params(KN_F32, p);
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 0, &so), "empty");
    KT_ERR(KN_EINVAL, kn_adam_new(NULL, 2, NULL), "empty");
    p[2] = NULL;
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 3, &so), "parameter 2");
    p[2] = p[0];
    KT_ERR(KN_EINVAL, kn_sgd_new(p, 3, &so), "more than once");
    p[2] = kn_zeros(KN_I32, 1, SH1);
    KT_ERR(KN_EDTYPE, kn_adam_new(p, 3, NULL), "parameter 2");
    kn_tensor_free(p[2]);
    p[2] = kn_mul(p[0], p[0]); /* non-leaf */
    KT_ERR(KN_EINVAL, kn_adam_new(p, 3, NULL), "non-leaf");
    kn_tensor_free(p[2]);
    kn_tensor *base = kn_zeros(KN_F32, 2, SH0);
    p[2] = kn_transpose(base, 0, 1); /* a leaf view, not contiguous */
    KT_ERR(KN_EUNSUPPORTED, kn_rmsprop_new(p, 3, NULL), "contiguous");
    kn_tensor_free(p[2]);
    kn_tensor_free(base);
    KT_STATUS(KN_EINVAL, kn_optimizer_step(NULL));
    KT_STATUS(KN_EINVAL, kn_optimizer_zero_grad(NULL, true));
    KT_TRUE(isnan(kn_optimizer_lr(NULL)));
    KT_EQ_INT(-1, kn_optimizer_steps(NULL));
    kn_tensor_free(p[0]);
    kn_tensor_free(p[1]);
    LEAK_END;
}

/* allocation failure during the first step leaves every parameter untouched */
static void test_step_alloc_failure(void) {
    LEAK_BEGIN;
    kn_tensor *p[2];
    make_params(KN_F32, p);
    kn_adam_opts ao = {.lr = 0.1, .amsgrad = true};
    kn_optimizer *o = kn_adam_new(p, 2, &ao);
    set_step_grads(KN_F32, p, 0);
    float b0[6], b1[4];
    memcpy(b0, kn_tensor_data(p[0]), sizeof b0);
    memcpy(b1, kn_tensor_data(p[1]), sizeof b1);
    int failed = 0;
    for (long k = 1; k < 40; k++) {
        kn__alloc_fail_after(k);
        kn_status st = kn_optimizer_step(o);
        kn__alloc_fail_after(0);
        if (st == KN_OK) break;
        failed++;
        KT_EQ_INT(KN_ENOMEM, st);
        KT_TRUE(!memcmp(b0, kn_tensor_data(p[0]), sizeof b0));
        KT_TRUE(!memcmp(b1, kn_tensor_data(p[1]), sizeof b1));
        KT_EQ_INT(0, kn_optimizer_steps(o));
        KT_EQ_INT(1, kn_optimizer_state(o, NULL, 0)); /* no half-made state shows */
    }
    KT_TRUE(failed > 0);
    KT_EQ_INT(1, kn_optimizer_steps(o));
    /* the successful retry equals an optimizer that never failed */
    kn_tensor *q[2];
    make_params(KN_F32, q);
    kn_optimizer *o2 = kn_adam_new(q, 2, &ao);
    set_step_grads(KN_F32, q, 0);
    KT_OK(kn_optimizer_step(o2));
    KT_TRUE(!memcmp(kn_tensor_data(p[0]), kn_tensor_data(q[0]), sizeof b0));
    kn_optimizer_free(o);
    kn_optimizer_free(o2);
    for (int i = 0; i < 2; i++) {
        kn_tensor_free(p[i]);
        kn_tensor_free(q[i]);
    }
    LEAK_END;
}

static void test_zero_grad(void) {
    LEAK_BEGIN;
    kn_tensor *p[2];
    make_params(KN_F32, p);
    kn_sgd_opts so = {.lr = 0.1};
    kn_optimizer *o = kn_sgd_new(p, 2, &so);
    set_step_grads(KN_F32, p, 0);
    kn_tensor *g0 = kn_tensor_grad(p[0]);
    KT_OK(kn_optimizer_zero_grad(o, false));
    KT_TRUE(kn_tensor_grad(p[0]) == g0); /* zeroed in place */
    kn_tensor *z = kn_zeros(KN_F32, 2, SH0);
    KT_CLOSE(g0, z, 0, 0);
    kn_tensor_free(z);
    /* a non-contiguous grad is zeroed through its strides */
    int64_t sh[2] = {3, 2};
    kn_tensor *t = kn_ones(KN_F32, 2, sh);
    kn_tensor *tt = kn_transpose(t, 0, 1);
    set_grad(p[0], tt);
    KT_OK(kn_optimizer_zero_grad(o, false));
    kn_tensor *sum = kn_sum(t, NULL, 0, false);
    KT_NEAR(0, kn_item(sum), 0);
    kn_tensor_free(sum);
    kn_tensor_free(t);
    KT_OK(kn_optimizer_zero_grad(o, true));
    KT_TRUE(kn_tensor_grad(p[0]) == NULL && kn_tensor_grad(p[1]) == NULL);
    /* no grads: step is a no-op */
    float before[6];
    memcpy(before, kn_tensor_data(p[0]), sizeof before);
    KT_OK(kn_optimizer_step(o));
    KT_TRUE(!memcmp(before, kn_tensor_data(p[0]), sizeof before));
    kn_optimizer_free(o);
    kn_tensor_free(p[0]);
    kn_tensor_free(p[1]);
    LEAK_END;
}

/* a training loop through autograd: zero_grad, backward, step */
static void test_with_autograd(void) {
    LEAK_BEGIN;
    int64_t sh[1] = {3};
    double w0[3] = {1, -2, 3};
    kn_tensor *w = kn_from_data(KN_F64, 1, sh, w0);
    kn_tensor_set_requires_grad(w, true);
    kn_sgd_opts so = {.lr = 0.1};
    kn_optimizer *o = kn_sgd_new(&w, 1, &so);
    for (int k = 0; k < 3; k++) {
        kn_scope sc = kn_scope_begin();
        KT_OK(kn_optimizer_zero_grad(o, k % 2));
        kn_tensor *loss = kn_sum(kn_mul(w, w), NULL, 0, false); /* grad 2w */
        KT_OK(kn_backward(loss, NULL));
        KT_OK(kn_optimizer_step(o));
        kn_scope_end(sc);
    }
    /* w *= (1 - 0.2) each step */
    for (int i = 0; i < 3; i++) {
        int64_t ix = i;
        KT_NEAR(w0[i] * 0.512, kn_tensor_get(w, &ix), 1e-15);
    }
    KT_TRUE(kn_tensor_is_leaf(w) && kn_tensor_requires_grad(w));
    kn_optimizer_free(o);
    kn_tensor_free(w);
    LEAK_END;
}

static void test_module_optimizers(void) {
    LEAK_BEGIN;
    kn_module *mods[2] = {kn_nn_linear(4, 3, true), kn_nn_linear(3, 2, false)};
    kn_module *m = kn_nn_sequential(mods, 2);
    KT_NOTNULL(m);
    kn_sgd_opts so = {.lr = 0.1};
    kn_optimizer *o = kn_sgd_for(m, &so);
    KT_NOTNULL(o);
    kn_named_tensor st[8];
    KT_EQ_INT(1, kn_optimizer_state(o, st, 8));
    kn_optimizer_free(o);
    o = kn_adam_for(m, NULL);
    KT_NOTNULL(o);
    kn_optimizer_free(o);
    /* frozen parameters are left out */
    KT_OK(kn_module_freeze(kn_module_child(m, "0"), true));
    o = kn_adamw_for(m, NULL);
    KT_NOTNULL(o);
    /* only "1.weight": its grad updates, state for one parameter */
    kn_tensor *w = kn_module_param(kn_module_child(m, "1"), "weight");
    kn_tensor *g = kn_ones_like(w);
    set_grad(w, g);
    KT_OK(kn_optimizer_step(o));
    KT_EQ_INT(4, kn_optimizer_state(o, st, 8));
    kn_optimizer_free(o);
    KT_OK(kn_module_freeze(m, true));
    KT_ERR(KN_EINVAL, kn_sgd_for(m, &so), "empty");
    KT_ERR(KN_EINVAL, kn_sgd_for(NULL, &so), "NULL");
    kn_module_free(m);
    LEAK_END;
}

/* ---------------- schedulers ---------------- */

static kn_scheduler *make_sched(const char *name, kn_optimizer *o, kn_scheduler **second) {
    *second = NULL;
    if (!strcmp(name, "steplr")) return kn_steplr_new(o, 3, 0.5);
    if (!strcmp(name, "multisteplr")) {
        int64_t ms[4] = {2, 5, 5, 9};
        return kn_multisteplr_new(o, ms, 4, 0.3);
    }
    if (!strcmp(name, "exponentiallr")) return kn_exponentiallr_new(o, 0.9);
    if (!strcmp(name, "cosinelr")) return kn_cosinelr_new(o, 7, 0.001);
    if (!strcmp(name, "linearlr")) return kn_linearlr_new(o, 0.25, 1.0, 6);
    if (!strcmp(name, "linearlr_down")) return kn_linearlr_new(o, 1.0, 0.1, 8);
    if (!strcmp(name, "onecyclelr")) return kn_onecyclelr_new(o, 0.5, 20, 0, 0, 0);
    if (!strcmp(name, "onecyclelr_custom")) return kn_onecyclelr_new(o, 0.2, 25, 0.4, 10, 100);
    if (!strcmp(name, "chain_exp_step")) {
        kn_scheduler *a = kn_exponentiallr_new(o, 0.9);
        *second = kn_steplr_new(o, 3, 0.5);
        return a;
    }
    return NULL;
}

static void test_schedulers_golden(void) {
    LEAK_BEGIN;
    for (int si = 0; si < OREF_NSCHEDS; si++) {
        const oref_sched *c = &oref_scheds[si];
        bool onecycle = !strncmp(c->name, "onecyclelr", 10);
        for (int useadam = 0; useadam < (onecycle ? 2 : 1); useadam++) {
            kn_tensor *p = kn_zeros(KN_F32, 1, (int64_t[]){3});
            kn_tensor_set_requires_grad(p, true);
            kn_sgd_opts so = {.lr = 0.1, .momentum = 0.9};
            kn_adam_opts ao = {.lr = 0.1};
            kn_optimizer *o = useadam ? kn_adam_new(&p, 1, &ao) : kn_sgd_new(&p, 1, &so);
            kn_scheduler *s2, *s = make_sched(c->name, o, &s2);
            KT_NOTNULL(s);
            for (int k = 0; k <= OREF_NSCHED; k++) {
                if (k > 0) {
                    KT_OK(kn_scheduler_step(s));
                    if (s2) KT_OK(kn_scheduler_step(s2));
                }
                double lr = kn_optimizer_lr(o);
                if (!(fabs(lr - c->lr[k]) <= 1e-12 * fabs(c->lr[k])))
                    KT_FAIL("%s: lr at epoch %d is %.17g, PyTorch %.17g", c->name, k, lr, c->lr[k]);
                KT_NEAR(lr, kn_scheduler_lr(s2 ? s2 : s), 0);
                KT_EQ_INT(k, kn_scheduler_last_epoch(s));
                double m = kn__optim_momentum(o);
                if (onecycle && !(fabs(m - c->momentum[k]) <= 1e-12))
                    KT_FAIL("%s: momentum at epoch %d is %.17g, PyTorch %.17g", c->name, k, m,
                            c->momentum[k]);
            }
            if (onecycle) { /* step total_steps is the last one allowed, like PyTorch */
                int64_t total = strstr(c->name, "custom") ? 25 : 20;
                while (kn_scheduler_last_epoch(s) < total)
                    KT_OK(kn_scheduler_step(s));
                KT_STATUS(KN_EMISUSE, kn_scheduler_step(s));
                KT_EQ_INT(total, kn_scheduler_last_epoch(s));
            }
            kn_scheduler_free(s);
            kn_scheduler_free(s2);
            kn_optimizer_free(o);
            kn_tensor_free(p);
        }
    }
    LEAK_END;
}

static void test_scheduler_state(void) {
    LEAK_BEGIN;
    kn_tensor *p = kn_zeros(KN_F64, 1, (int64_t[]){3});
    kn_sgd_opts so = {.lr = 0.1, .momentum = 0.9};
    const char *names[3] = {"cosinelr", "steplr", "onecyclelr"};
    for (int i = 0; i < 3; i++) {
        const oref_sched *c = NULL;
        for (int j = 0; j < OREF_NSCHEDS; j++)
            if (!strcmp(oref_scheds[j].name, names[i])) c = &oref_scheds[j];
        KT_NOTNULL(c);
        kn_optimizer *o1 = kn_sgd_new(&p, 1, &so), *o2 = kn_sgd_new(&p, 1, &so);
        kn_scheduler *x, *s1 = make_sched(names[i], o1, &x), *s2;
        for (int k = 0; k < 9; k++)
            KT_OK(kn_scheduler_step(s1));
        int64_t ep;
        double base;
        KT_OK(kn_scheduler_get_state(s1, &ep, &base));
        KT_EQ_INT(9, ep);
        /* resume: optimizer lr from the optimizer's state, scheduler counters from its own */
        kn_named_tensor st[4];
        int n = kn_optimizer_state(o1, st, 4);
        s2 = make_sched(names[i], o2, &x);
        KT_OK(kn_optimizer_load_state(o2, st, n));
        KT_OK(kn_scheduler_set_state(s2, ep, base));
        KT_EQ_INT(9, kn_scheduler_last_epoch(s2));
        KT_NEAR(c->momentum[9], kn__optim_momentum(o2), 1e-15);
        for (int k = 10; k <= OREF_NSCHED; k++) {
            KT_OK(kn_scheduler_step(s2));
            KT_NEAR(c->lr[k], kn_optimizer_lr(o2), 1e-12 * c->lr[k]);
            KT_NEAR(c->momentum[k], kn__optim_momentum(o2), 1e-15);
        }
        KT_STATUS(KN_EINVAL, kn_scheduler_set_state(s2, -1, base));
        KT_STATUS(KN_EINVAL, kn_scheduler_set_state(s2, 3, -1));
        kn_scheduler_free(s1);
        kn_scheduler_free(s2);
        kn_optimizer_free(o1);
        kn_optimizer_free(o2);
    }
    kn_tensor_free(p);
    LEAK_END;
}

static void test_scheduler_errors(void) {
    LEAK_BEGIN;
    kn_tensor *p = kn_zeros(KN_F32, 1, (int64_t[]){3});
    kn_sgd_opts so = {.lr = 0.1};
    kn_optimizer *o = kn_sgd_new(&p, 1, &so);
    int64_t ms[2] = {1, 2};
    KT_ERR(KN_EINVAL, kn_steplr_new(NULL, 3, 0.5), "NULL");
    KT_ERR(KN_EINVAL, kn_steplr_new(o, 0, 0.5), "step_size");
    KT_ERR(KN_EINVAL, kn_steplr_new(o, 3, -0.5), "gamma");
    KT_ERR(KN_EINVAL, kn_multisteplr_new(o, NULL, 2, 0.5), "milestones");
    KT_ERR(KN_EINVAL, kn_multisteplr_new(o, ms, 2, NAN), "gamma");
    KT_ERR(KN_EINVAL, kn_exponentiallr_new(o, INFINITY), "gamma");
    KT_ERR(KN_EINVAL, kn_cosinelr_new(o, 0, 0), "t_max");
    KT_ERR(KN_EINVAL, kn_cosinelr_new(o, 5, -1), "eta_min");
    KT_ERR(KN_EINVAL, kn_linearlr_new(o, 0, 1, 5), "start_factor");
    KT_ERR(KN_EINVAL, kn_linearlr_new(o, 1.5, 1, 5), "start_factor");
    KT_ERR(KN_EINVAL, kn_linearlr_new(o, 0.5, 1.1, 5), "end_factor");
    KT_ERR(KN_EINVAL, kn_linearlr_new(o, 0.5, 1, -1), "total_iters");
    KT_ERR(KN_EINVAL, kn_onecyclelr_new(o, 0.1, 0, 0, 0, 0), "total_steps");
    KT_ERR(KN_EINVAL, kn_onecyclelr_new(o, 0.1, 10, 1.5, 0, 0), "pct_start");
    KT_ERR(KN_EINVAL, kn_onecyclelr_new(o, -0.1, 10, 0, 0, 0), "max_lr");
    KT_ERR(KN_EINVAL, kn_onecyclelr_new(o, 0.1, 10, 0, -2, 0), "div_factor");
    KT_ERR(KN_EINVAL, kn_onecyclelr_new(o, 0.1, 10, 0.1, 0, 0), "zero length");
    KT_NEAR(0.1, kn_optimizer_lr(o), 0); /* failed constructors leave the optimizer alone */
    KT_STATUS(KN_EINVAL, kn_scheduler_step(NULL));
    KT_TRUE(isnan(kn_scheduler_lr(NULL)));
    KT_STATUS(KN_EINVAL, kn_scheduler_get_state(NULL, NULL, NULL));
    kn_scheduler_free(NULL);
    /* the first scheduler's base lr is the optimizer's initial_lr, shared like PyTorch */
    kn_scheduler *a = kn_exponentiallr_new(o, 0.5);
    KT_OK(kn_scheduler_step(a));
    kn_scheduler *b = kn_cosinelr_new(o, 10, 0);
    double base;
    KT_OK(kn_scheduler_get_state(b, NULL, &base));
    KT_NEAR(0.1, base, 0);
    KT_NEAR(0.05, kn_scheduler_lr(b), 1e-17);
    kn_scheduler_free(a);
    kn_scheduler_free(b);
    kn_optimizer_free(o);
    kn_tensor_free(p);
    LEAK_END;
}

/* ---------------- clipping ---------------- */

static void make_clip(kn_dtype dt, kn_tensor **p) {
    int64_t s0[2] = {3, 4}, s1[1] = {5};
    p[0] = kn_zeros(dt, 2, s0);
    p[1] = kn_zeros(dt, 1, s1);
    p[2] = kn_zeros(dt, 1, s1); /* no grad: ignored */
    set_grad(p[0], from_f64(dt, 2, s0, oref_clip_g0));
    set_grad(p[1], from_f64(dt, 1, s1, oref_clip_g1));
}

static int grads_match(kn_tensor **p, const double *e, double tol) {
    double v[17];
    kn_tensor_read(kn_tensor_grad(p[0]), KN_F64, v, sizeof(double) * 12);
    kn_tensor_read(kn_tensor_grad(p[1]), KN_F64, v + 12, sizeof(double) * 5);
    for (int j = 0; j < 17; j++)
        if (!(fabs(v[j] - e[j]) <= tol * fmax(fabs(e[j]), 1e-3))) {
            fprintf(stderr, "  grad %d: %.17g vs %.17g\n", j, v[j], e[j]);
            return 0;
        }
    return 1;
}

static void test_clip_golden(void) {
    LEAK_BEGIN;
    for (int d = 0; d < 2; d++) {
        kn_dtype dt = d ? KN_F32 : KN_F64;
        double tol = d ? 1e-6 : 1e-12;
        for (int ci = 0; ci < OREF_NCLIP; ci++) {
            const oref_clip *c = &oref_clips[ci];
            kn_tensor *p[3];
            make_clip(dt, p);
            double tot = kn_clip_grad_norm_(p, 3, c->max_norm, c->norm_type);
            double et = d ? c->total32 : c->total64;
            if (!(fabs(tot - et) <= tol * et))
                KT_FAIL("clip %d %s: total %.17g vs %.17g", ci, kn_dtype_name(dt), tot, et);
            if (!grads_match(p, d ? c->g32 : c->g64, tol))
                KT_FAIL("clip %d %s: clipped grads differ", ci, kn_dtype_name(dt));
            for (int i = 0; i < 3; i++)
                kn_tensor_free(p[i]);
        }
        kn_tensor *p[3];
        make_clip(dt, p);
        KT_OK(kn_clip_grad_value_(p, 3, OREF_CLIP_VALUE));
        KT_TRUE(grads_match(p, d ? oref_clip_value32 : oref_clip_value64, 0));
        for (int i = 0; i < 3; i++)
            kn_tensor_free(p[i]);
    }
    LEAK_END;
}

static void test_clip_more(void) {
    LEAK_BEGIN;
    kn_tensor *p[3];
    make_clip(KN_F64, p);
    /* a transposed (non-contiguous) grad gives the same norm and is scaled in place */
    kn_tensor *g = kn_tensor_grad(p[0]);
    kn_tensor *g_t = kn_transpose(g, 0, 1);
    kn_tensor *gt = kn_contiguous(g_t);
    kn_tensor *gtt = kn_transpose(gt, 0, 1);
    kn_tensor_free(g_t);
    kn_tensor_free(gt);
    int64_t s0[2] = {3, 4};
    kn_tensor *q = kn_zeros(KN_F64, 2, s0);
    set_grad(q, gtt);
    kn_tensor *qs[3] = {q, p[1], p[2]};
    double t1 = kn_clip_grad_norm_(qs, 3, 1.0, 2.0);
    KT_NEAR(oref_clips[0].total64, t1, 1e-12 * t1);
    KT_TRUE(grads_match(qs, oref_clips[0].g64, 1e-12));
    /* no grads at all: 0, nothing happens */
    KT_NEAR(0, kn_clip_grad_norm_(p + 2, 1, 1.0, 2.0), 0);
    KT_NEAR(0, kn_clip_grad_norm_(NULL, 0, 1.0, 2.0), 0);
    /* errors */
    kn_clear_error();
    KT_TRUE(isnan(kn_clip_grad_norm_(p, 3, -1, 2)));
    KT_EQ_INT(KN_EINVAL, kn_last_status());
    KT_TRUE(isnan(kn_clip_grad_norm_(p, 3, 1, 0)));
    KT_TRUE(strstr(kn_last_error(), "norm_type") != NULL);
    kn_tensor *bad[2] = {p[0], NULL};
    KT_TRUE(isnan(kn_clip_grad_norm_(bad, 2, 1, 2)));
    KT_TRUE(strstr(kn_last_error(), "parameter 1") != NULL);
    KT_STATUS(KN_EINVAL, kn_clip_grad_value_(p, 3, -1));
    KT_STATUS(KN_EINVAL, kn_clip_grad_value_(bad, 2, 1));
    /* an expanded grad cannot be scaled in place */
    kn_tensor *one = kn_ones(KN_F64, 2, (int64_t[]){1, 4});
    kn_tensor *ex = kn_expand(one, 2, s0);
    set_grad(q, ex);
    KT_STATUS(KN_EUNSUPPORTED, kn_clip_grad_value_(qs, 1, 0.5));
    kn_tensor_free(one);
    /* large grad: thread count independent, inf norm with NaN propagates */
    int64_t big[1] = {300001};
    kn_manual_seed(3);
    kn_tensor *bp = kn_zeros(KN_F32, 1, big);
    set_grad(bp, kn_randn(KN_F32, 1, big));
    int nth0 = kn_get_num_threads();
    kn_set_num_threads(1);
    double n1 = kn_clip_grad_norm_(&bp, 1, 1e9, 2);
    kn_set_num_threads(3);
    double n3 = kn_clip_grad_norm_(&bp, 1, 1e9, 2);
    kn_set_num_threads(nth0);
    KT_TRUE(n1 == n3);
    KT_NEAR(sqrt(300001.0), n1, 0.01 * sqrt(300001.0));
    ((float *)kn_tensor_data(kn_tensor_grad(bp)))[12345] = NAN;
    KT_TRUE(isnan(kn_clip_grad_norm_(&bp, 1, 1e9, INFINITY)));
    kn_tensor_free(bp);
    kn_tensor_free(q);
    for (int i = 0; i < 3; i++)
        kn_tensor_free(p[i]);
    LEAK_END;
}

int main(void) {
    KT_RUN(test_optimizers_golden);
    KT_RUN(test_defaults_and_names);
    KT_RUN(test_unusual_grads);
    KT_RUN(test_big_threads);
    KT_RUN(test_state_roundtrip);
    KT_RUN(test_state_names);
    KT_RUN(test_state_errors);
    KT_RUN(test_option_errors);
    KT_RUN(test_param_errors);
    KT_RUN(test_step_alloc_failure);
    KT_RUN(test_zero_grad);
    KT_RUN(test_with_autograd);
    KT_RUN(test_module_optimizers);
    KT_RUN(test_schedulers_golden);
    KT_RUN(test_scheduler_state);
    KT_RUN(test_scheduler_errors);
    KT_RUN(test_clip_golden);
    KT_RUN(test_clip_more);
    return kt_finish();
}
