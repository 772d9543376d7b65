/*
 * train.c - compiled training steps (kn_train_step): the step function (loss, kn_grad over the
 * optimizer's parameters, kn__optim_update_with) is traced once per input shape while it runs
 * eagerly, compiled with the usual passes and replayed. The graph captures the parameters and the
 * optimizer's state tensors (learning rate, update counts, moment buffers) by reference and
 * updates them in place, so eager and compiled steps can be mixed and checkpoints see the state.
 */
#include "graph/graph_impl.h"
#include "optim/optim_impl.h"

#define STEP_CACHE 4

typedef struct {
    kn_graph *g;
    int nin;
    kn_dtype dt[8];
    int nd[8];
    int64_t shape[8][KN_MAX_DIMS];
    kn_tensor *loss; /* preallocated output */
} entry;

struct kn_train_step {
    kn_traced_fn loss_fn;
    void *user;
    kn_optimizer *opt;
    kn_compile_opts copts;
    kn_tensor **params;
    int np;
    entry cache[STEP_CACHE];
    int last;
};

kn_train_step *kn_train_step_new(kn_traced_fn loss_fn, void *user, kn_optimizer *opt,
                                 const kn_compile_opts *opts) {
    if (!loss_fn || !opt) return kn__errp(KN_EINVAL, "train_step_new: NULL argument");
    kn_train_step *s = kn__calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loss_fn = loss_fn;
    s->user = user;
    s->opt = opt;
    if (opts) s->copts = *opts;
    s->copts.freeze = false;
    s->np = kn__optim_params(opt, NULL, 0);
    if (!(s->params = kn__calloc((size_t)(s->np ? s->np : 1), sizeof *s->params))) {
        kn__free(s);
        return NULL;
    }
    kn__optim_params(opt, s->params, s->np);
    s->last = -1;
    return s;
}

void kn_train_step_free(kn_train_step *s) {
    if (!s) return;
    for (int i = 0; i < STEP_CACHE; i++) {
        kn_graph_free(s->cache[i].g);
        kn_tensor_free(s->cache[i].loss);
    }
    kn__free(s->params);
    kn__free(s);
}

kn_graph *kn_train_step_graph(kn_train_step *s) {
    return s && s->last >= 0 ? s->cache[s->last].g : NULL;
}

/* the traced function: loss, gradients, update */
static int step_fn(void *user, kn_tensor *const *in, int nin, kn_tensor **out, int max_out) {
    kn_train_step *s = user;
    kn_tensor *res[4] = {0};
    int n = s->loss_fn(s->user, in, nin, res, 4);
    if (n < 1)
        return n < 0 ? n : kn__err(KN_EINVAL, "train_step: the loss function returned nothing");
    kn_tensor *loss = res[0];
    if (!loss || kn_tensor_numel(loss) != 1)
        return kn__err(KN_EINVAL, "train_step: the loss must have one element");
    kn_tensor **grads = kn__calloc((size_t)(s->np ? s->np : 1), sizeof *grads);
    if (!grads) return kn_last_status();
    kn_status st = kn_grad(&loss, 1, NULL, s->params, s->np, false, grads);
    if (st == KN_OK) st = kn__optim_update_with(s->opt, grads);
    kn__free(grads);
    if (st) return st;
    out[0] = loss;
    return 1;
}

static bool matches(const entry *e, kn_tensor *const *in, int nin) {
    if (!e->g || e->nin != nin) return false;
    for (int i = 0; i < nin; i++)
        if (in[i]->dtype != e->dt[i] || in[i]->ndim != e->nd[i] ||
            memcmp(in[i]->shape, e->shape[i], sizeof(int64_t) * (size_t)in[i]->ndim))
            return false;
    return true;
}

static double loss_value(const kn_tensor *t) {
    return kn__load_f64(t->dtype, kn__ptr(t));
}

kn_status kn_train_step_run(kn_train_step *s, kn_tensor *const *in, int nin, double *loss) {
    if (!s || nin < 0 || nin > 8 || (nin && !in))
        return kn__err(KN_EINVAL, "train_step_run: bad arguments (at most 8 inputs)");
    for (int i = 0; i < nin; i++)
        if (!in[i]) return kn__err(KN_EINVAL, "train_step_run: input %d is NULL", i);
    for (int k = 0; k < STEP_CACHE; k++) {
        entry *e = &s->cache[k];
        if (!matches(e, in, nin)) continue;
        kn_status st = kn__optim_graph_pre(s->opt);
        if (st == KN_OK) st = kn_graph_run_into(e->g, in, nin, &e->loss, 1);
        if (st) return st;
        kn__optim_graph_post(s->opt);
        if (loss) *loss = loss_value(e->loss);
        s->last = k;
        return KN_OK;
    }
    /* a new shape: run the step eagerly under the tracer, then compile (reported) */
    int traced = 0;
    for (int k = 0; k < STEP_CACHE; k++)
        traced += s->cache[k].g != NULL;
    if (traced)
        kn__log(2,
                "train_step: tracing and compiling again for new input shapes (input 0: %lld "
                "rows)",
                nin ? (long long)(in[0]->ndim ? in[0]->shape[0] : 1) : 0LL);
    int slot = 0;
    for (int k = 0; k < STEP_CACHE; k++)
        if (!s->cache[k].g) {
            slot = k;
            break;
        } else if (k == STEP_CACHE - 1) {
            slot = (s->last + 1) % STEP_CACHE;
        }
    entry *e = &s->cache[slot];
    kn_graph_free(e->g);
    kn_tensor_free(e->loss);
    memset(e, 0, sizeof *e);
    bool prev = kn__grad_mode();
    kn__set_grad_mode(true); /* the step differentiates */
    kn_trace_opts o = {.static_batch = true, .output_names = (const char *[]){"loss"}};
    kn_tensor *eager = NULL;
    int ne = 0;
    kn_graph *g = kn__trace_outputs(step_fn, s, in, nin, &o, &eager, &ne);
    kn__set_grad_mode(prev);
    if (!g) return kn_last_status();
    if (loss) *loss = loss_value(eager);
    kn_tensor_free(eager);
    kn_status st = kn_graph_compile(g, &s->copts);
    const kn_gval *lv = &g->vals[g->outputs[0]];
    if (st == KN_OK && !(e->loss = kn__tensor_alloc(lv->dtype, lv->ndim, lv->shape)))
        st = kn_last_status();
    if (st) {
        kn_graph_free(g);
        return st;
    }
    e->g = g;
    e->nin = nin;
    for (int i = 0; i < nin; i++) {
        e->dt[i] = in[i]->dtype;
        e->nd[i] = in[i]->ndim;
        memcpy(e->shape[i], in[i]->shape, sizeof e->shape[i]);
    }
    s->last = slot;
    return KN_OK;
}
