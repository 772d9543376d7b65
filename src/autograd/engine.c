/*
 * engine.c - the tape and the backward engine.
 *
 * Recording: when grad mode is on and an input requires grad, each op gets a node holding
 * strong references to its inputs (upstream, so no cycles), its attrs, and aliases of its outputs
 * whose grad_fn points back at the node WITHOUT owning it (PyTorch's saved-output trick: the node
 * owns the alias, the alias must not own the node). Outputs own their node.
 *
 * Backward: collect the nodes reachable from the roots, order them by creation sequence (a node's
 * inputs are always older), then visit newest first: sum the incoming gradients, call the op's
 * backward rule (which runs ops, recorded again when create_graph), and route each input gradient
 * to the producing node or to the leaf's .grad. Without retain_graph each node drops its saved
 * tensors after use; a second backward through it fails with KN_EMISUSE.
 */
#include <stdlib.h>

#include "ops/op_impl.h"

struct kn_node {
    kn_node_base base;
    const kn_opdef *op;
    kn_attrs attrs;
    int nin;
    kn_tensor **in;
    bool *needs;
    int nout;
    kn_tensor *out[KN_MAX_OUTS]; /* aliases, grad_fn_weak */
    bool freed;
    uint64_t seq;
    /* scratch for one backward run */
    uint64_t visit;
    int slot;
};

static _Atomic uint64_t g_seq, g_visit;

static void free_saved(struct kn_node *n) {
    for (int i = 0; i < n->nin; i++) {
        kn_tensor_free(n->in[i]);
        n->in[i] = NULL;
    }
    for (int o = 0; o < n->nout; o++) {
        kn_tensor *a = n->out[o];
        if (!a) continue;
        a->grad_fn = NULL; /* anyone still holding the alias sees a plain tensor */
        kn_tensor_free(a);
        n->out[o] = NULL;
    }
    n->freed = true;
}

static void node_destroy(kn_node_base *b) {
    struct kn_node *n = (struct kn_node *)b;
    free_saved(n);
    kn__free(n->in);
    kn__free(n->needs);
    kn__free(n);
}

static kn_status record(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs,
                        kn_tensor **out, int nout) {
    if (!op->backward) return KN_OK;
    bool any = false;
    for (int i = 0; i < nin; i++)
        any |= in[i]->requires_grad;
    if (!any) return KN_OK;
    bool any_float_out = false;
    for (int o = 0; o < nout; o++)
        any_float_out |= kn_dtype_is_float(out[o]->dtype);
    if (!any_float_out) return KN_OK;
    struct kn_node *n = kn__calloc(1, sizeof *n);
    if (!n) return kn_last_status();
    n->in = kn__calloc((size_t)(nin ? nin : 1), sizeof *n->in);
    n->needs = kn__calloc((size_t)(nin ? nin : 1), sizeof *n->needs);
    if (!n->in || !n->needs) goto oom;
    atomic_init(&n->base.refcount, 0);
    n->base.destroy = node_destroy;
    n->op = op;
    n->attrs = *attrs;
    n->nin = nin;
    n->nout = nout;
    n->seq = atomic_fetch_add(&g_seq, 1);
    for (int o = 0; o < nout; o++) {
        kn_tensor *t = out[o];
        kn_tensor *a = kn__tensor_view(t, t->ndim, t->shape, t->strides, t->offset);
        if (!a) goto oom;
        a->grad_fn = n;
        a->grad_fn_weak = true;
        a->out_index = o;
        a->requires_grad = kn_dtype_is_float(t->dtype);
        n->out[o] = a;
    }
    for (int i = 0; i < nin; i++) {
        n->in[i] = kn_tensor_retain(in[i]);
        n->needs[i] = in[i]->requires_grad;
    }
    for (int o = 0; o < nout; o++) {
        if (!kn_dtype_is_float(out[o]->dtype)) continue;
        out[o]->grad_fn = n;
        out[o]->out_index = o;
        out[o]->requires_grad = true;
        kn__node_retain(n);
    }
    return KN_OK;
oom:
    for (int o = 0; o < nout; o++)
        kn_tensor_free(n->out[o]);
    kn__free(n->in);
    kn__free(n->needs);
    kn__free(n);
    return kn_last_status();
}

__attribute__((constructor)) static void install_recorder(void) {
    kn__record = record;
}

/* ---- public tensor flags ---- */
kn_status kn_tensor_set_requires_grad(kn_tensor *t, bool rg) {
    if (!t) return kn__err(KN_EINVAL, "set_requires_grad: NULL tensor");
    if (t->grad_fn)
        return kn__err(KN_EMISUSE, "set_requires_grad: only leaf tensors can change "
                                   "requires_grad (use kn_detach)");
    if (rg && !kn_dtype_is_float(t->dtype))
        return kn__err(KN_EDTYPE,
                       "set_requires_grad: only floating tensors can require grad, "
                       "not %s",
                       kn_dtype_name(t->dtype));
    t->requires_grad = rg;
    return KN_OK;
}
bool kn_tensor_requires_grad(const kn_tensor *t) {
    return t && t->requires_grad;
}
bool kn_tensor_is_leaf(const kn_tensor *t) {
    return t && !t->grad_fn;
}
kn_tensor *kn_tensor_grad(const kn_tensor *t) {
    return t ? t->grad : NULL;
}
kn_status kn_tensor_set_grad(kn_tensor *t, kn_tensor *g) {
    if (!t) return kn__err(KN_EINVAL, "set_grad: NULL tensor");
    if (g && (g->ndim != t->ndim || memcmp(g->shape, t->shape, sizeof(int64_t) * t->ndim))) {
        char a[128], b[128];
        return kn__err(KN_ESHAPE, "set_grad: grad %s does not match tensor %s",
                       kn__shape_str(a, sizeof a, g->ndim, g->shape),
                       kn__shape_str(b, sizeof b, t->ndim, t->shape));
    }
    kn_tensor_retain(g);
    kn_tensor_free(t->grad);
    t->grad = g;
    return KN_OK;
}
const char *kn_tensor_grad_fn_name(const kn_tensor *t) {
    return t && t->grad_fn ? t->grad_fn->op->name : NULL;
}

bool kn_set_grad_enabled(bool on) {
    bool prev = kn__grad_mode();
    kn__set_grad_mode(on);
    return prev;
}
bool kn_is_grad_enabled(void) {
    return kn__grad_mode();
}
bool kn_no_grad_begin(void) {
    return kn_set_grad_enabled(false);
}
void kn_no_grad_end(bool prev) {
    kn__set_grad_mode(prev);
}

kn_tensor *kn_detach(kn_tensor *t) {
    if (!t) return NULL;
    return kn__scope_adopt(kn__tensor_view(t, t->ndim, t->shape, t->strides, t->offset));
}

/* ---- the engine ---- */
typedef struct {
    struct kn_node **nodes;
    int n, cap;
    kn_tensor **gbuf; /* n * KN_MAX_OUTS owned gradient sums */
} walk;

static bool same_shape(const kn_tensor *a, const kn_tensor *b) {
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(int64_t) * a->ndim) == 0;
}

/* Whether nobody but its current owner can see g (one header reference, storage used by no
 * other header): then a leaf's .grad may take it over instead of copying it, and later in-place
 * accumulation into .grad cannot show through anywhere else. */
static bool exclusive(const kn_tensor *g) {
    return atomic_load(&g->refcount) == 1 && atomic_load(&g->storage->refcount) == 1 &&
           !g->grad_fn && !g->storage->release && !g->storage->external && kn__is_contiguous(g);
}

/* Adds g (borrowed) into *slot (owned). */
static kn_status accumulate(kn_tensor **slot, kn_tensor *g) {
    if (!*slot) {
        *slot = kn_tensor_retain(g);
        return KN_OK;
    }
    kn_tensor *s = kn_add(*slot, g); /* scope-owned: keep a reference of our own */
    if (!s) return kn_last_status();
    kn_tensor_retain(s);
    kn_tensor_free(*slot);
    *slot = s;
    return KN_OK;
}

/* Whether gradient flowing into tensor t reaches a requested input (kn_grad's pruning). */
static bool edge_wanted(const kn_tensor *t, kn_tensor *const *inputs, int ninputs,
                        const bool *leads) {
    for (int k = 0; k < ninputs; k++)
        if (inputs[k] == t) return true;
    return t->grad_fn && leads[t->grad_fn->slot];
}

static int cmp_seq_desc(const void *a, const void *b) {
    uint64_t x = (*(struct kn_node *const *)a)->seq, y = (*(struct kn_node *const *)b)->seq;
    return x < y ? 1 : x > y ? -1 : 0;
}

static kn_status collect(walk *w, kn_tensor *const *roots, int nroots) {
    uint64_t gen = atomic_fetch_add(&g_visit, 1) + 1;
    struct kn_node **stack = NULL;
    int sn = 0, scap = 0;
    kn_status st = KN_OK;
#define PUSH_NODE(nd)                                                                              \
    do {                                                                                           \
        struct kn_node *nd_ = (nd);                                                                \
        if (nd_ && nd_->visit != gen) {                                                            \
            nd_->visit = gen;                                                                      \
            if (nd_->freed) {                                                                      \
                st = kn__err(KN_EMISUSE,                                                           \
                             "backward: trying to go through the graph a second time (op "         \
                             "'%s' already freed its saved tensors); pass retain_graph to "        \
                             "the first backward",                                                 \
                             nd_->op->name);                                                       \
                goto done;                                                                         \
            }                                                                                      \
            if (sn == scap) {                                                                      \
                scap = scap ? scap * 2 : 64;                                                       \
                void *ns_ = kn__realloc(stack, sizeof *stack * (size_t)scap);                      \
                if (!ns_) {                                                                        \
                    st = kn_last_status();                                                         \
                    goto done;                                                                     \
                }                                                                                  \
                stack = ns_;                                                                       \
            }                                                                                      \
            stack[sn++] = nd_;                                                                     \
            if (w->n == w->cap) {                                                                  \
                w->cap = w->cap ? w->cap * 2 : 64;                                                 \
                void *nn_ = kn__realloc(w->nodes, sizeof *w->nodes * (size_t)w->cap);              \
                if (!nn_) {                                                                        \
                    st = kn_last_status();                                                         \
                    goto done;                                                                     \
                }                                                                                  \
                w->nodes = nn_;                                                                    \
            }                                                                                      \
            kn__node_retain(nd_);                                                                  \
            w->nodes[w->n++] = nd_;                                                                \
        }                                                                                          \
    } while (0)
    for (int r = 0; r < nroots; r++)
        PUSH_NODE(roots[r]->grad_fn);
    while (sn > 0) {
        struct kn_node *n = stack[--sn];
        for (int i = 0; i < n->nin; i++)
            if (n->needs[i]) PUSH_NODE(n->in[i]->grad_fn);
    }
#undef PUSH_NODE
done:
    kn__free(stack);
    return st;
}

/* capture: when non-NULL, gradients for inputs[] go to grads[] instead of leaves' .grad */
static kn_status run_backward(kn_tensor *const *roots, kn_tensor *const *seeds, int nroots,
                              bool retain, bool create_graph, kn_tensor *const *inputs, int ninputs,
                              kn_tensor **captured) {
    walk w = {0};
    bool *leads = NULL;
    kn_status st = KN_OK;
    bool prev_mode = kn_set_grad_enabled(create_graph);
    kn_scope scope = kn_scope_begin();
    st = collect(&w, roots, nroots);
    if (st != KN_OK) goto done;
    if (w.n > 1) qsort(w.nodes, (size_t)w.n, sizeof *w.nodes, cmp_seq_desc);
    w.gbuf = kn__calloc((size_t)(w.n ? w.n : 1) * KN_MAX_OUTS, sizeof *w.gbuf);
    if (!w.gbuf) {
        st = kn_last_status();
        goto done;
    }
    for (int i = 0; i < w.n; i++)
        w.nodes[i]->slot = i;
    /* kn_grad: only nodes on a path to a requested input do work (oldest first, so a node's
     * producers are decided before it) */
    if (captured) {
        leads = kn__calloc((size_t)(w.n ? w.n : 1), sizeof *leads);
        if (!leads) {
            st = kn_last_status();
            goto done;
        }
        for (int i = w.n - 1; i >= 0; i--) {
            struct kn_node *n = w.nodes[i];
            for (int k = 0; k < n->nin && !leads[i]; k++)
                leads[i] = edge_wanted(n->in[k], inputs, ninputs, leads);
        }
    }

    /* routes gradient g for tensor t (an input of some node, or a root) */
#define ROUTE(t, g)                                                                                \
    do {                                                                                           \
        kn_tensor *t_ = (t), *g_ = (g);                                                            \
        int cap_ = -1;                                                                             \
        for (int k_ = 0; captured && k_ < ninputs; k_++)                                           \
            if (inputs[k_] == t_ && !t_->grad_fn) cap_ = k_;                                       \
        if (t_->grad_fn) {                                                                         \
            st = accumulate(&w.gbuf[t_->grad_fn->slot * KN_MAX_OUTS + t_->out_index], g_);         \
        } else if (cap_ >= 0) {                                                                    \
            st = accumulate(&captured[cap_], g_);                                                  \
        } else if (!captured && t_->requires_grad) {                                               \
            if (!t_->grad) {                                                                       \
                kn_tensor *c_ = create_graph || exclusive(g_) ? kn_tensor_retain(g_) : NULL;       \
                if (!c_) { /* shared with something else: .grad gets its own copy */               \
                    c_ = kn__tensor_alloc(g_->dtype, g_->ndim, g_->shape);                         \
                    if (c_) kn__copy_into(c_, g_);                                                 \
                }                                                                                  \
                if (!c_) st = kn_last_status();                                                    \
                t_->grad = c_;                                                                     \
            } else if (create_graph) {                                                             \
                st = accumulate(&t_->grad, g_);                                                    \
            } else {                                                                               \
                st = kn_add_(t_->grad, g_, 1.0);                                                   \
            }                                                                                      \
        }                                                                                          \
        if (st != KN_OK) goto done;                                                                \
    } while (0)

    for (int r = 0; r < nroots; r++)
        ROUTE(roots[r], seeds[r]);

    for (int i = 0; i < w.n; i++) {
        struct kn_node *n = w.nodes[i];
        kn_tensor **gb = &w.gbuf[i * KN_MAX_OUTS];
        /* capture gradients of requested non-leaf inputs produced here */
        for (int k = 0; captured && k < ninputs; k++)
            if (inputs[k]->grad_fn == n && gb[inputs[k]->out_index]) {
                st = accumulate(&captured[k], gb[inputs[k]->out_index]);
                if (st) goto done;
            }
        bool any = false, needs[KN_MAX_INS];
        for (int o = 0; o < n->nout; o++)
            any |= gb[o] != NULL;
        for (int k = 0; k < n->nin; k++)
            needs[k] = n->needs[k] && (!leads || edge_wanted(n->in[k], inputs, ninputs, leads));
        if (leads && !leads[i]) any = false;
        if (any) {
            kn_scope ns = kn_scope_begin();
            kn_tensor *gout[KN_MAX_OUTS] = {0}, *gin[KN_MAX_INS] = {0};
            for (int o = 0; o < n->nout; o++) {
                gout[o] = gb[o] ? gb[o] : kn_zeros_like(n->out[o]);
                if (!gout[o]) {
                    st = kn_last_status();
                    kn_scope_end(ns);
                    goto done;
                }
            }
            kn_bwctx c = {.op = n->op,
                          .attrs = &n->attrs,
                          .nin = n->nin,
                          .in = n->in,
                          .nout = n->nout,
                          .out = n->out,
                          .gout = gout,
                          .needs = needs,
                          .gin = gin};
            st = n->op->backward(&c);
            for (int k = 0; st == KN_OK && k < n->nin; k++) {
                if (!needs[k] || !gin[k]) continue;
                if (!same_shape(gin[k], n->in[k])) {
                    char a[128], b[128];
                    st = kn__err(
                        KN_EINTERNAL,
                        "backward of '%s' gave input %d a gradient of shape %s, expected %s",
                        n->op->name, k, kn__shape_str(a, sizeof a, gin[k]->ndim, gin[k]->shape),
                        kn__shape_str(b, sizeof b, n->in[k]->ndim, n->in[k]->shape));
                    break;
                }
                ROUTE(n->in[k], gin[k]);
            }
            kn_scope_end(ns);
            if (st != KN_OK) {
                if (kn_last_status() == KN_OK) kn__err(st, "backward of '%s' failed", n->op->name);
                goto done;
            }
        }
        for (int o = 0; o < KN_MAX_OUTS; o++) {
            kn_tensor_free(gb[o]);
            gb[o] = NULL;
        }
        if (!retain) free_saved(n);
    }
#undef ROUTE
done:
    kn__free(leads);
    if (w.gbuf)
        for (int i = 0; i < w.n * KN_MAX_OUTS; i++)
            kn_tensor_free(w.gbuf[i]);
    kn__free(w.gbuf);
    for (int i = 0; i < w.n; i++)
        kn__node_release(w.nodes[i]);
    kn__free(w.nodes);
    kn_scope_end(scope);
    kn_set_grad_enabled(prev_mode);
    return st;
}

static kn_status seed_for(const char *who, kn_tensor *out, kn_tensor *given, kn_tensor **seed) {
    if (given) {
        if (!same_shape(given, out)) {
            char a[128], b[128];
            return kn__err(KN_ESHAPE, "%s: grad_output %s does not match output %s", who,
                           kn__shape_str(a, sizeof a, given->ndim, given->shape),
                           kn__shape_str(b, sizeof b, out->ndim, out->shape));
        }
        if (given->dtype != out->dtype)
            return kn__err(KN_EDTYPE, "%s: grad_output is %s, output is %s", who,
                           kn_dtype_name(given->dtype), kn_dtype_name(out->dtype));
        *seed = kn_tensor_retain(given);
        return KN_OK;
    }
    if (kn_tensor_numel(out) != 1)
        return kn__err(KN_EMISUSE,
                       "%s: output has %lld elements; grad can be implicitly created "
                       "only for scalar outputs (pass grad_output)",
                       who, (long long)kn_tensor_numel(out));
    kn_tensor *one = kn__tensor_alloc(out->dtype, out->ndim, out->shape);
    if (!one) return kn_last_status();
    kn__store_f64(out->dtype, kn__ptr(one), 1.0);
    *seed = one;
    return KN_OK;
}

kn_status kn_backward(kn_tensor *output, const kn_backward_opts *opts) {
    kn_backward_opts o = opts ? *opts : (kn_backward_opts){0};
    if (!output)
        return kn_last_status() ? kn_last_status() : kn__err(KN_EINVAL, "backward: NULL output");
    if (!output->requires_grad)
        return kn__err(KN_EMISUSE, "backward: the output does not require grad and has no "
                                   "grad_fn (no input required grad, or grad mode was off)");
    kn_tensor *seed = NULL;
    kn_status st = seed_for("backward", output, o.grad_output, &seed);
    if (st) return st;
    st = run_backward(&output, &seed, 1, o.retain_graph || o.create_graph, o.create_graph, NULL, 0,
                      NULL);
    kn_tensor_free(seed);
    return st;
}

kn_status kn_grad(kn_tensor *const *outputs, int noutputs, kn_tensor *const *grad_outputs,
                  kn_tensor *const *inputs, int ninputs, bool create_graph, kn_tensor **grads) {
    if (!outputs || noutputs < 1 || noutputs > KN_MAX_INS || !inputs || ninputs < 1 || !grads)
        return kn__err(KN_EINVAL, "grad: need outputs, inputs and a grads array");
    for (int i = 0; i < ninputs; i++) {
        grads[i] = NULL;
        if (!inputs[i]) return kn__err(KN_EINVAL, "grad: input %d is NULL", i);
        if (!inputs[i]->requires_grad)
            return kn__err(KN_EMISUSE, "grad: input %d does not require grad", i);
    }
    kn_tensor *seeds[KN_MAX_INS] = {0};
    kn_status st = KN_OK;
    for (int i = 0; i < noutputs && !st; i++) {
        if (!outputs[i])
            st = kn__err(KN_EINVAL, "grad: output %d is NULL", i);
        else if (!outputs[i]->requires_grad)
            st = kn__err(KN_EMISUSE, "grad: output %d does not require grad", i);
        else
            st = seed_for("grad", outputs[i], grad_outputs ? grad_outputs[i] : NULL, &seeds[i]);
    }
    kn_tensor **cap = kn__calloc((size_t)ninputs, sizeof *cap);
    if (!cap) st = kn_last_status();
    if (!st) st = run_backward(outputs, seeds, noutputs, true, create_graph, inputs, ninputs, cap);
    for (int i = 0; i < noutputs; i++)
        kn_tensor_free(seeds[i]);
    if (st) {
        for (int i = 0; cap && i < ninputs; i++)
            kn_tensor_free(cap[i]);
        kn__free(cap);
        return st;
    }
    for (int i = 0; i < ninputs; i++) {
        if (cap[i]) {
            grads[i] = kn__scope_adopt(cap[i]);
        } else {
            grads[i] = kn_zeros_like(inputs[i]);
        }
    }
    kn__free(cap);
    return KN_OK;
}
