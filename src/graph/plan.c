/*
 * plan.c - the static memory plan and the executor.
 *
 * A plan is built once per batch size: shapes are inferred, every value gets a tensor header,
 * view ops (reshape when strides allow, permute, expand, slice) are resolved once into headers
 * sharing their base's storage, and every other result gets a buffer. Buffers get liveness
 * intervals [defining step, last step that reads it or any view of it] and are packed into one
 * arena by offset, largest first, at the lowest offset that does not overlap a buffer alive at the
 * same time (the greedy-by-size strategy of TFLite's arena planner). Elementwise nodes and fused
 * groups may take over the buffer of an input that dies at that node (in place).
 *
 * Running binds the caller's tensors: each input's storage points at the caller's data (views of
 * it follow, since they share the storage), each output buffer at the caller's output, so a run
 * copies nothing and allocates nothing (kernels that need scratch take it from kiln's caching
 * allocator). Outputs that are views or inputs are copied out at the end.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "graph/graph_impl.h"

enum { K_OP, K_VIEW, K_COPY, K_GROUP };
#define MAX_PLANS 8 /* plans kept per graph (one per batch size) */
/* Whether a concurrent window pays is measured, not assumed: window by window, a plan alternates
 * runs with that window's lanes side by side and one after the other (both valid for the memory
 * plan, same bits; the windows not yet decided run side by side), skips TUNE_SKIP warm-up runs,
 * then keeps the mode with the lower median run time over TUNE_RUNS timed runs each. Whole runs
 * are timed because a window's cost can show up after it (data left in the other core's cache).
 * The cost model proposes windows; the machine decides. */
#define TUNE_SKIP 2
#define TUNE_RUNS 12

typedef struct pbuf {
    int64_t size, off;
    int def, last;
    kn_storage *st; /* shared by the values living in this buffer */
    bool output;    /* bound to the caller's output at run time */
    bool own_st;    /* a workspace: st belongs to the plan */
} pbuf;

struct kn_plan {
    kn_plan *next;
    int64_t batch;
    int nvals, nnodes;
    kn_tensor **vt;       /* header per value (owned) */
    int *buf_of;          /* value -> buffer, -1: input, weight or view */
    int *root;            /* value -> value whose storage it uses (itself for buffers) */
    uint8_t *kind;        /* per node */
    kn_attrs *attrs;      /* per node, bound to the batch */
    kn_tensor **copy_src; /* K_COPY: header of the input's shape over the output's buffer */
    int *ws_buf;          /* per node: workspace buffer or -1 */
    int *win_end;         /* per node: > 0 where a concurrent window starts (interop.c) */
    uint8_t *lane;        /* per node in a window: lane 0 or 1, or 2: right after the window */
    int nwin;             /* windows in the schedule */
    uint8_t *together;    /* per window start: 1 lanes side by side, 0 one after the other */
    int tune_win;         /* node starting the window being timed; -1 when all are decided */
    int tune_n;           /* runs so far timing it */
    int nkept;            /* windows decided side by side */
    double tune_us[2][TUNE_RUNS];
    pbuf *bufs;
    int nbufs;
    void **staging; /* per input: a buffer for callers' non-contiguous inputs */
    int ninputs;
    void *arena;
    int64_t arena_bytes;
    double *prof_us; /* per node: microseconds summed over profiled runs (kn_graph_profile) */
    int64_t prof_runs;
};

static void plan_free(kn_plan *p) {
    if (!p) return;
    for (int v = 0; v < p->nvals; v++)
        kn_tensor_free(p->vt ? p->vt[v] : NULL);
    for (int i = 0; p->copy_src && i < p->nnodes; i++)
        kn_tensor_free(p->copy_src[i]);
    for (int i = 0; p->staging && i < p->ninputs; i++)
        kn__aligned_free(p->staging[i]);
    kn__aligned_free(p->arena);
    kn__free(p->vt);
    kn__free(p->buf_of);
    kn__free(p->root);
    kn__free(p->kind);
    kn__free(p->attrs);
    kn__free(p->copy_src);
    kn__free(p->ws_buf);
    kn__free(p->win_end);
    kn__free(p->lane);
    kn__free(p->together);
    kn__free(p->prof_us);
    for (int k = 0; p->bufs && k < p->nbufs; k++)
        if (p->bufs[k].own_st) kn__free(p->bufs[k].st);
    kn__free(p->bufs);
    kn__free(p->staging);
    kn__free(p);
}

void kn__plan_free_all(kn_graph *g) {
    while (g->plans) {
        kn_plan *n = g->plans->next;
        plan_free(g->plans);
        g->plans = n;
    }
}

int64_t kn__plan_arena(const kn_plan *p) {
    return p->arena_bytes;
}

static int64_t align64(int64_t n) {
    return (n + 63) & ~(int64_t)63;
}

/* def: the step (plan.c's unit of liveness) that writes it */
static int new_buf(kn_plan *p, kn_tensor *t, int def) {
    pbuf *b = &p->bufs[p->nbufs];
    b->size = align64((int64_t)t->storage->nbytes);
    b->def = b->last = def;
    b->st = t->storage;
    return p->nbufs++;
}

/* In place: node i may write over input value v's buffer (v dies at i's step, same bytes).
 * Never for a node of a concurrent lane, where "dies at this step" does not order the readers. */
static int inplace_source(const kn_graph *g, kn_plan *p, const kn_gnode *n, int i, int out,
                          const int *last_use, const int *step, bool concurrent) {
    if ((g->copts.disable & KN_PASS_INPLACE) || concurrent) return -1;
    if (n->op && !n->op->pointwise) return -1;
    for (int j = 0; j < n->nin; j++) {
        int v = n->in[j], b = p->buf_of[v];
        if (b < 0 || p->root[v] != v || last_use[v] != step[i] || p->bufs[b].output) continue;
        const kn_tensor *a = p->vt[v], *o = p->vt[out];
        if (a->dtype != o->dtype || a->ndim != o->ndim ||
            memcmp(a->shape, o->shape, sizeof(int64_t) * (size_t)a->ndim) || !kn__is_contiguous(a))
            continue;
        /* every other input of the node must not be a view of the same buffer */
        bool clash = false;
        for (int k = 0; k < n->nin; k++)
            clash |= k != j && p->buf_of[p->root[n->in[k]]] == b;
        if (!clash) return v;
    }
    return -1;
}

static kn_status build(kn_graph *g, kn_plan *p) {
    int nv = g->nvals, nn = g->nnodes;
    int64_t(*sh)[KN_MAX_DIMS] = kn__calloc((size_t)nv, sizeof *sh);
    int *nd = kn__calloc((size_t)nv, sizeof(int));
    int *last_use = kn__calloc((size_t)nv, sizeof(int));
    /* step[i]: node i's time for liveness, in execution order. The lanes of a concurrent window
     * all have the window's first index (every buffer they use is alive across the window), the
     * nodes deferred after it the next ones; conc[i]: node i runs in a lane */
    int *step = kn__malloc(sizeof(int) * (size_t)(nn ? nn : 1));
    uint8_t *conc = kn__calloc((size_t)(nn ? nn : 1), 1);
    p->nvals = nv;
    p->nnodes = nn;
    p->vt = kn__calloc((size_t)nv, sizeof *p->vt);
    p->buf_of = kn__malloc(sizeof(int) * (size_t)nv);
    p->root = kn__malloc(sizeof(int) * (size_t)nv);
    p->kind = kn__calloc((size_t)(nn ? nn : 1), 1);
    p->attrs = kn__calloc((size_t)(nn ? nn : 1), sizeof *p->attrs);
    p->copy_src = kn__calloc((size_t)(nn ? nn : 1), sizeof *p->copy_src);
    p->bufs = kn__calloc((size_t)nv + (size_t)nn, sizeof *p->bufs);
    p->ws_buf = kn__malloc(sizeof(int) * (size_t)(nn ? nn : 1));
    p->win_end = kn__calloc((size_t)(nn ? nn : 1), sizeof(int));
    p->lane = kn__calloc((size_t)(nn ? nn : 1), 1);
    p->together = kn__calloc((size_t)(nn ? nn : 1), 1);
    p->staging = kn__calloc((size_t)g->ninputs + 1, sizeof *p->staging);
    p->ninputs = p->staging ? g->ninputs : 0;
    kn_status st = KN_OK;
    if (!sh || !nd || !last_use || !p->vt || !p->buf_of || !p->root || !p->kind || !p->attrs ||
        !p->copy_src || !p->bufs || !p->staging || !p->ws_buf || !step || !conc || !p->win_end ||
        !p->lane || !p->together) {
        st = kn_last_status();
        goto done;
    }
    if ((st = kn__g_infer(g, p->batch, sh, nd))) goto done;
    if ((st = kn__g_interop(g, sh, nd, p->win_end, p->lane))) goto done;
    for (int i = 0; i < nn; i++)
        step[i] = i;
    p->tune_win = -1;
    for (int i = nn - 1; i >= 0; i--) {
        if (p->win_end[i] <= i) continue;
        p->nwin++;
        p->together[i] = 1;
        p->tune_win = i;
    }
    for (int i = 0; i < nn; i++) {
        int next = i + 1;
        for (int k = i; k < p->win_end[i]; k++) {
            conc[k] = p->lane[k] < 2;
            step[k] = conc[k] ? i : next++;
        }
    }
    for (int v = 0; v < nv; v++) {
        p->buf_of[v] = -1;
        p->root[v] = v;
        last_use[v] = -1;
    }
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            if (step[i] > last_use[g->nodes[i].in[j]]) last_use[g->nodes[i].in[j]] = step[i];
    /* graph outputs are read after the last node: nothing may overwrite them (nor, through the
     * view propagation below, the buffers they are views of) */
    for (int k = 0; k < g->noutputs; k++)
        last_use[g->outputs[k]] = nn;
    /* inputs and weights */
    for (int v = 0; v < nv; v++) {
        const kn_gval *gv = &g->vals[v];
        if (gv->kind == GV_WEIGHT) p->vt[v] = kn_tensor_retain(gv->data);
        if (gv->kind == GV_INPUT &&
            !(p->vt[v] = kn__tensor_external(gv->dtype, nd[v], sh[v], NULL)))
            goto oom;
    }
    for (int i = 0; i < g->ninputs; i++) {
        size_t nb = p->vt[g->inputs[i]]->storage->nbytes;
        if (!(p->staging[i] = kn__aligned_alloc(nb ? nb : 64))) goto oom;
    }
    /* node outputs, in order */
    for (int i = 0; i < nn; i++) {
        const kn_gnode *n = &g->nodes[i];
        kn__g_bind_attrs(n, p->batch, g->batch, &p->attrs[i]);
        bool view = n->op && (n->op->flags & KN_OPF_VIEW);
        int64_t vs[KN_MAX_DIMS];
        if (view && !strcmp(n->op->name, "reshape") &&
            !kn__view_strides(p->vt[n->in[0]], nd[n->out[0]], sh[n->out[0]], vs))
            view = false; /* a reshape that must copy: K_COPY below */
        if (view) {
            kn_tensor *ins[KN_MAX_INS];
            for (int j = 0; j < n->nin; j++)
                ins[j] = p->vt[n->in[j]];
            kn_opctx c;
            memset(&c, 0, sizeof c);
            c.op = n->op;
            c.nin = n->nin;
            c.in = ins;
            c.attrs = &p->attrs[i];
            c.nout = 1;
            c.out_dtype[0] = g->vals[n->out[0]].dtype;
            c.out_ndim[0] = nd[n->out[0]];
            memcpy(c.out_shape[0], sh[n->out[0]], sizeof c.out_shape[0]);
            if ((st = n->op->forward(&c))) goto done;
            p->vt[n->out[0]] = c.out[0];
            p->root[n->out[0]] = p->root[n->in[0]];
            p->kind[i] = K_VIEW;
            int r = p->root[n->in[0]];
            if (last_use[n->out[0]] > last_use[r]) last_use[r] = last_use[n->out[0]];
            continue;
        }
        p->kind[i] = !n->op ? K_GROUP : (n->op->flags & KN_OPF_VIEW) ? K_COPY : K_OP;
        p->ws_buf[i] = -1;
        if (n->op && n->op->workspace) {
            /* temporary memory of this node only: a buffer alive at step i */
            kn_tensor *ins[KN_MAX_INS];
            for (int j = 0; j < n->nin; j++)
                ins[j] = p->vt[n->in[j]];
            kn_opctx c = {.op = n->op, .nin = n->nin, .in = ins, .attrs = &p->attrs[i]};
            size_t wb = n->op->workspace(&c);
            kn_storage *ws = kn__calloc(1, sizeof *ws);
            if (!ws) goto oom;
            atomic_init(&ws->refcount, 1);
            ws->nbytes = wb;
            ws->external = true;
            pbuf *b = &p->bufs[p->nbufs];
            b->size = align64((int64_t)wb);
            b->def = b->last = step[i];
            b->st = ws;
            b->own_st = true;
            p->ws_buf[i] = p->nbufs++;
        }
        for (int o = 0; o < n->nout; o++) {
            int v = n->out[o];
            if (!(p->vt[v] = kn__tensor_external(g->vals[v].dtype, nd[v], sh[v], NULL))) goto oom;
        }
        int v0 = n->out[0],
            src = n->nout == 1 ? inplace_source(g, p, n, i, v0, last_use, step, conc[i]) : -1;
        for (int o = 0; o < n->nout; o++) {
            int v = n->out[o];
            if (o == 0 && src >= 0) {
                /* share the dying input's storage */
                kn_storage *s = p->vt[src]->storage;
                atomic_fetch_add(&s->refcount, 1);
                kn_storage *mine = p->vt[v]->storage;
                p->vt[v]->storage = s;
                kn__free(mine);
                p->buf_of[v] = p->buf_of[src];
                continue;
            }
            p->buf_of[v] = new_buf(p, p->vt[v], step[i]);
            p->bufs[p->buf_of[v]].output = kn__g_is_output(g, v);
        }
        if (p->kind[i] == K_COPY) {
            const kn_tensor *x = p->vt[n->in[0]];
            int64_t cs[KN_MAX_DIMS];
            kn__contiguous_strides(x->ndim, x->shape, cs);
            if (!(p->copy_src[i] = kn__tensor_view(p->vt[v0], x->ndim, x->shape, cs, 0))) goto oom;
        }
    }
    /* liveness: a buffer lives until the last read of any value stored in it */
    for (int v = 0; v < nv; v++) {
        int r = p->root[v], b = p->buf_of[r];
        if (b < 0 && p->buf_of[v] >= 0) b = p->buf_of[v];
        if (b >= 0 && last_use[v] > p->bufs[b].last) p->bufs[b].last = last_use[v];
        if (b >= 0 && kn__g_is_output(g, v)) p->bufs[b].last = nn;
    }
    /* pack: largest first, lowest offset clear of every placed buffer alive at the same time */
    int *ord = kn__malloc(sizeof(int) * (size_t)(p->nbufs ? p->nbufs : 1));
    if (!ord) goto oom;
    for (int k = 0; k < p->nbufs; k++)
        ord[k] = k;
    for (int a = 1; a < p->nbufs; a++) /* insertion sort by size, descending (stable) */
        for (int b = a; b > 0 && p->bufs[ord[b]].size > p->bufs[ord[b - 1]].size; b--) {
            int t = ord[b];
            ord[b] = ord[b - 1];
            ord[b - 1] = t;
        }
    int64_t top = 0;
    for (int k = 0; k < p->nbufs; k++) {
        pbuf *b = &p->bufs[ord[k]];
        if (b->output) continue; /* lives in the caller's output tensor */
        int64_t off = 0;
        bool moved = true;
        while (moved) {
            moved = false;
            for (int q = 0; q < k; q++) {
                const pbuf *o = &p->bufs[ord[q]];
                if (o->output || o->last < b->def || b->last < o->def) continue;
                if (off < o->off + o->size && o->off < off + b->size) {
                    off = o->off + o->size;
                    moved = true;
                }
            }
        }
        b->off = off;
        if (off + b->size > top) top = off + b->size;
    }
    kn__free(ord);
    p->arena_bytes = top;
    if (!(p->arena = kn__aligned_alloc((size_t)(top ? top : 64)))) goto oom;
    for (int k = 0; k < p->nbufs; k++)
        if (!p->bufs[k].output) p->bufs[k].st->data = (char *)p->arena + p->bufs[k].off;
    goto done;
oom:
    st = kn_last_status() ? kn_last_status() : KN_ENOMEM;
done:
    kn__free(sh);
    kn__free(nd);
    kn__free(last_use);
    kn__free(step);
    kn__free(conc);
    return st;
}

kn_plan *kn__plan_get(kn_graph *g, int64_t batch) {
    if (g->batch == 0) batch = 0;
    for (kn_plan **pp = &g->plans; *pp; pp = &(*pp)->next)
        if ((*pp)->batch == batch) {
            kn_plan *hit = *pp; /* most recently used first */
            *pp = hit->next;
            hit->next = g->plans;
            g->plans = hit;
            return hit;
        }
    kn_plan *p = kn__calloc(1, sizeof *p);
    if (!p) return NULL;
    p->batch = batch;
    kn_status st = build(g, p);
    if (st) {
        plan_free(p);
        return NULL;
    }
    g->plans_built++;
    if (g->plans_built > 1 && !g->quiet_plans) /* a recompile is reported, never silent */
        kn__log(2, "graph: new plan for batch %lld (plan %d of this graph, %lld arena bytes)",
                (long long)batch, g->plans_built, (long long)p->arena_bytes);
    p->next = g->plans;
    g->plans = p;
    g->last_arena = p->arena_bytes;
    /* keep the MAX_PLANS most recently built: a server fed every batch size must not hold an
     * arena per size forever (the oldest is rebuilt, and counted, if it comes back) */
    int k = 1;
    for (kn_plan *q = g->plans; q->next; q = q->next, k++)
        if (k == MAX_PLANS) {
            kn_plan *old = q->next;
            q->next = NULL;
            while (old) {
                kn_plan *n = old->next;
                plan_free(old);
                old = n;
            }
            break;
        }
    return p;
}

static double us_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e6 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e3;
}

static kn_status exec_node(const kn_graph *g, kn_plan *p, int i) {
    const kn_gnode *n = &g->nodes[i];
    kn_tensor *ins[KN_MAX_INS];
    for (int j = 0; j < n->nin; j++)
        ins[j] = p->vt[n->in[j]];
    switch (p->kind[i]) {
    case K_VIEW: return KN_OK;
    case K_COPY: kn__copy_into(p->copy_src[i], ins[0]); return KN_OK;
    case K_GROUP: return kn__g_run_group(n, ins, p->vt[n->out[0]]);
    default: break;
    }
    kn_opctx c;
    memset(&c, 0, sizeof c);
    c.op = n->op;
    c.nin = n->nin;
    c.in = ins;
    c.attrs = &p->attrs[i];
    c.nout = n->nout;
    if (p->ws_buf[i] >= 0) {
        c.ws = p->bufs[p->ws_buf[i]].st->data;
        c.ws_bytes = p->bufs[p->ws_buf[i]].st->nbytes;
    }
    for (int o = 0; o < n->nout; o++) {
        kn_tensor *t = p->vt[n->out[o]];
        c.out[o] = t;
        c.out_dtype[o] = t->dtype;
        c.out_ndim[o] = t->ndim;
        memcpy(c.out_shape[o], t->shape, sizeof c.out_shape[o]);
    }
    bool ref = kn__forcing_ref() && n->op->forward_ref;
    kn_status st = (ref ? n->op->forward_ref : n->op->forward)(&c);
    if (st) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        return kn__err(st, "graph: node %d (%s): %s", i, n->op->name, msg);
    }
    return KN_OK;
}

/* node i, timed into p->prof_us[i] while the graph is profiled (each node by the one thread that
 * runs it, so lanes side by side need no lock) */
static kn_status run_node(const kn_graph *g, kn_plan *p, int i) {
    if (!p->prof_us) return exec_node(g, p, i);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kn_status st = exec_node(g, p, i);
    p->prof_us[i] += us_since(&t0);
    return st;
}

static bool fits(const kn_tensor *t, const kn_tensor *want) {
    return t->dtype == want->dtype && t->ndim == want->ndim && kn__is_contiguous(t) &&
           memcmp(t->shape, want->shape, sizeof(int64_t) * (size_t)t->ndim) == 0;
}

/* lane l's nodes of window [s, e) in order; on error *bad = the node, msg = its message */
static kn_status run_lane(const kn_graph *g, kn_plan *p, int s, int e, int l, int *bad, char *msg,
                          size_t msg_len) {
    for (int k = s; k < e; k++) {
        if (p->lane[k] != l) continue;
        kn_status st = run_node(g, p, k);
        if (st) {
            *bad = k;
            snprintf(msg, msg_len, "%s", kn_last_error());
            return st;
        }
    }
    return KN_OK;
}

/* Window [s, e): lanes 0 and 1 side by side, a thread each with single-threaded kernels
 * (OpenBLAS too, for the window's duration), then the deferred nodes (lane 2) in order. The
 * first error (lowest node) is returned. Without `together` (one thread, or the tuning found it
 * slower) lane 0, then lane 1, then the deferred nodes, which the memory plan allows as well. */
static kn_status run_window(const kn_graph *g, kn_plan *p, int s, int e, bool together) {
    kn_status st[2] = {KN_OK, KN_OK};
    int bad[2] = {e, e};
    char msg[2][320] = {"", ""};
    if (together) {
        kn__blas_threads(1);
#pragma omp parallel num_threads(2)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            int prev = kn__threads_local(1);
            for (int l = t; l < 2; l += nt)
                st[l] = run_lane(g, p, s, e, l, &bad[l], msg[l], sizeof msg[l]);
            kn__threads_local(prev);
        }
        kn__blas_threads(kn__threads());
    } else { /* outside any parallel region: the kernels keep their own threads */
        for (int l = 0; l < 2 && !st[0]; l++)
            st[l] = run_lane(g, p, s, e, l, &bad[l], msg[l], sizeof msg[l]);
    }
    int l = bad[1] < bad[0];
    if (st[l]) return kn__err(st[l], "%s", msg[l]);
    return run_lane(g, p, s, e, 2, &bad[0], msg[0], sizeof msg[0]);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* timed tuning run k (0-based, alternating modes of window p->tune_win) started at t0; after
 * the last one, decides that window and moves to the next */
static void tune_record(kn_plan *p, int k, bool together, const struct timespec *t0) {
    p->tune_us[together][k / 2] = us_since(t0);
    if (k + 1 < 2 * TUNE_RUNS) return;
    double med[2];
    for (int m = 0; m < 2; m++) {
        qsort(p->tune_us[m], TUNE_RUNS, sizeof(double), cmp_double);
        med[m] = (p->tune_us[m][TUNE_RUNS / 2 - 1] + p->tune_us[m][TUNE_RUNS / 2]) / 2;
    }
    int w = p->tune_win;
    p->together[w] = med[1] < med[0];
    p->nkept += p->together[w];
    kn__log(1,
            "graph: plan for batch %lld: window at node %d %s (median run %.0f us side by side, "
            "%.0f us one lane after the other)",
            (long long)p->batch, w, p->together[w] ? "kept" : "runs sequentially", med[1], med[0]);
    p->tune_n = 0;
    p->tune_win = -1;
    for (int i = w + 1; i < p->nnodes && p->tune_win < 0; i++)
        if (p->win_end[i] > i) p->tune_win = i;
}

kn_status kn__plan_run(kn_graph *g, kn_plan *p, kn_tensor *const *in, kn_tensor *const *out) {
    for (int i = 0; i < g->ninputs; i++) {
        kn_tensor *h = p->vt[g->inputs[i]];
        if (fits(in[i], h)) {
            h->storage->data = kn__ptr(in[i]);
        } else {
            h->storage->data = p->staging[i];
            kn__copy_into(h, in[i]);
        }
    }
    /* outputs stored in a buffer of their own are written straight into the caller's tensors */
    for (int i = 0; i < g->noutputs; i++) {
        int v = g->outputs[i], b = p->buf_of[v];
        if (b >= 0 && p->root[v] == v && p->bufs[b].output) p->bufs[b].st->data = kn__ptr(out[i]);
    }
    if (g->profile && !p->prof_us && !(p->prof_us = kn__calloc((size_t)p->nnodes, sizeof(double))))
        return kn_last_status();
    if (!g->profile && p->prof_us) {
        kn__free(p->prof_us);
        p->prof_us = NULL;
        p->prof_runs = 0;
    }
    p->prof_runs += p->prof_us != NULL;
    const bool lanes = kn__threads() >= 2;
    int tune = -1; /* this run's index among the timing runs of window p->tune_win */
    bool probe = true;
    struct timespec t0;
    if (lanes && p->tune_win >= 0) {
        tune = p->tune_n++;
        probe = tune % 2 == 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
    }
    for (int i = 0; i < g->nnodes;) {
        bool win = p->win_end[i] > i;
        bool together = lanes && (i == p->tune_win && tune >= 0 ? probe : p->together[i]);
        kn_status st = win ? run_window(g, p, i, p->win_end[i], together) : run_node(g, p, i);
        if (st) return st;
        i = win ? p->win_end[i] : i + 1;
    }
    if (tune >= TUNE_SKIP) tune_record(p, tune - TUNE_SKIP, probe, &t0);
    for (int i = 0; i < g->noutputs; i++) {
        int v = g->outputs[i], b = p->buf_of[v];
        bool direct = b >= 0 && p->root[v] == v && p->bufs[b].output &&
                      p->bufs[b].st->data == kn__ptr(out[i]);
        if (!direct) kn__copy_into(out[i], p->vt[v]);
    }
    return KN_OK;
}

void kn__plan_print(const kn_graph *g, const kn_plan *p, FILE *f) {
    fprintf(f, "schedule (batch %lld):\n", (long long)(p->batch ? p->batch : g->batch));
    if (p->nwin && p->tune_win >= 0)
        fprintf(f, "  %d two-lane windows (timing both ways over the first runs)\n", p->nwin);
    else if (p->nwin)
        fprintf(f,
                "  %d two-lane windows (measured: %d faster side by side, the others run one "
                "lane after the other)\n",
                p->nwin, p->nkept);
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i];
        char shape[96] = "()";
        int b = -1;
        if (n->nout > 0) {
            const kn_tensor *t = p->vt[n->out[0]];
            kn__shape_str(shape, sizeof shape, t->ndim, t->shape);
            b = p->buf_of[n->out[0]];
        }
        if (p->win_end[i] > i)
            fprintf(f, "  -- nodes %d..%d: two lanes (| and ||)%s, then the > nodes\n", i,
                    p->win_end[i] - 1,
                    p->tune_win >= 0 && p->tune_win <= i ? ""
                    : p->together[i]                     ? " side by side"
                                                         : " one after the other");
        bool in_win = false;
        for (int s = 0; s <= i && !in_win; s++)
            in_win = p->win_end[s] > i;
        fprintf(f, "%s%3d %-20s -> %-18s",
                !in_win           ? "  "
                : p->lane[i] == 2 ? " >"
                : p->lane[i]      ? "||"
                                  : "| ",
                i, kn__g_node_name(n), shape);
        if (p->kind[i] == K_VIEW)
            fprintf(f, " view");
        else if (b >= 0 && p->bufs[b].output)
            fprintf(f, " caller's output");
        else if (b >= 0)
            fprintf(f, " arena [%lld, +%lld)", (long long)p->bufs[b].off,
                    (long long)p->bufs[b].size);
        if (!n->op) {
            fprintf(f, " fused:");
            for (int k = 0; k < n->nmem; k++)
                fprintf(f, "%s%s", k ? "," : " ", n->mem[k].op->name);
            if (n->epilogue_of >= 0) fprintf(f, " (epilogue of %d)", n->epilogue_of);
        }
        fprintf(f, "\n");
    }
}

/* ---- public run API ---- */
static kn_status check_inputs(const kn_graph *g, kn_tensor *const *in, int nin, int64_t *batch) {
    if (!g || (nin && !in)) return kn__err(KN_EINVAL, "graph_run: NULL argument");
    if (nin != g->ninputs)
        return kn__err(KN_EINVAL, "graph_run: got %d inputs, the graph takes %d", nin, g->ninputs);
    *batch = 0;
    for (int i = 0; i < nin; i++) {
        const kn_gval *v = &g->vals[g->inputs[i]];
        if (!in[i]) return kn__err(KN_EINVAL, "graph_run: input %d ('%s') is NULL", i, v->name);
        if (in[i]->dtype != v->dtype)
            return kn__err(KN_EDTYPE, "graph_run: input '%s' is %s, the graph expects %s", v->name,
                           kn_dtype_name(in[i]->dtype), kn_dtype_name(v->dtype));
        bool ok = in[i]->ndim == v->ndim;
        for (int d = 0; ok && d < v->ndim; d++)
            ok = ((v->sym >> d) & 1) ? in[i]->shape[d] >= 1 : in[i]->shape[d] == v->shape[d];
        if (ok && (v->sym & 1)) {
            if (*batch && in[i]->shape[0] != *batch) ok = false;
            *batch = in[i]->shape[0];
        }
        if (!ok) {
            char a[96], b[160];
            int o = snprintf(b, sizeof b, "(");
            for (int d = 0; d < v->ndim && o < (int)sizeof b - 24; d++) {
                if ((v->sym >> d) & 1)
                    o += snprintf(b + o, sizeof b - (size_t)o, "%sbatch", d ? ", " : "");
                else
                    o += snprintf(b + o, sizeof b - (size_t)o, "%s%lld", d ? ", " : "",
                                  (long long)v->shape[d]);
            }
            snprintf(b + o, sizeof b - (size_t)o, ")");
            return kn__err(KN_ESHAPE, "graph_run: input '%s' has shape %s, the graph expects %s%s",
                           v->name, kn__shape_str(a, sizeof a, in[i]->ndim, in[i]->shape), b,
                           v->sym ? " (batch >= 1, the same for every input)" : "");
        }
    }
    return KN_OK;
}

static kn_plan *prepare(kn_graph *g, kn_tensor *const *in, int nin) {
    int64_t batch;
    if (check_inputs(g, in, nin, &batch)) return NULL;
    if (!g->compiled && kn_graph_compile(g, NULL)) return NULL;
    kn_plan *p = kn__plan_get(g, batch);
    if (p) g->last_arena = p->arena_bytes;
    return p;
}

kn_status kn_graph_run_into(kn_graph *g, kn_tensor *const *inputs, int nin,
                            kn_tensor *const *outputs, int nout) {
    kn_plan *p = prepare(g, inputs, nin);
    if (!p) return kn_last_status();
    if (nout != g->noutputs || (nout && !outputs))
        return kn__err(KN_EINVAL, "graph_run_into: %d outputs given, the graph has %d", nout,
                       g->noutputs);
    for (int i = 0; i < nout; i++) {
        const kn_tensor *want = p->vt[g->outputs[i]];
        if (!outputs[i] || !fits(outputs[i], want)) {
            char a[96];
            return kn__err(KN_ESHAPE,
                           "graph_run_into: output %d ('%s') must be a contiguous %s tensor of "
                           "shape %s",
                           i, g->out_names[i], kn_dtype_name(want->dtype),
                           kn__shape_str(a, sizeof a, want->ndim, want->shape));
        }
    }
    return kn__plan_run(g, p, inputs, outputs);
}

int kn_graph_run(kn_graph *g, kn_tensor *const *inputs, int nin, kn_tensor **outputs, int max_out) {
    kn_plan *p = prepare(g, inputs, nin);
    if (!p) return kn_last_status();
    if (!outputs || max_out < g->noutputs)
        return kn__err(KN_EINVAL, "graph_run: room for %d outputs, the graph has %d", max_out,
                       g->noutputs);
    kn_tensor *out[64];
    if (g->noutputs > 64) return kn__err(KN_ELIMIT, "graph_run: more than 64 outputs");
    for (int i = 0; i < g->noutputs; i++) {
        const kn_tensor *w = p->vt[g->outputs[i]];
        if (!(out[i] = kn__tensor_alloc(w->dtype, w->ndim, w->shape))) {
            for (int k = 0; k < i; k++)
                kn_tensor_free(out[k]);
            return kn_last_status();
        }
    }
    kn_status st = kn__plan_run(g, p, inputs, out);
    for (int i = 0; i < g->noutputs; i++) {
        if (st)
            kn_tensor_free(out[i]);
        else
            outputs[i] = kn__scope_adopt(out[i]);
    }
    return st ? st : g->noutputs;
}

/* ---- profiling ---- */
kn_status kn_graph_profile(kn_graph *g, bool on) {
    if (!g) return kn__err(KN_EINVAL, "graph_profile: NULL graph");
    g->profile = on;
    for (kn_plan *p = g->plans; p; p = p->next) {
        if (p->prof_us) memset(p->prof_us, 0, sizeof(double) * (size_t)p->nnodes);
        p->prof_runs = 0;
    }
    return KN_OK;
}

/* multiply-adds of a convolution or GEMM node (interop.c's count), 0 for the others */
static double node_macs(const kn_graph *g, const kn_plan *p, int i) {
    const kn_gnode *n = &g->nodes[i];
    if (!n->op || n->nin < 2 || n->nout < 1) return 0;
    const kn_tensor *a = p->vt[n->in[0]], *b = p->vt[n->in[1]], *y = p->vt[n->out[0]];
    double w = kn__g_node_macs(n, a->shape, a->ndim, b->shape, b->ndim, y->shape, y->ndim);
    return w > 0 ? w : 0;
}

typedef struct {
    double us;
    int node;
} timed_node;

static int by_time(const void *a, const void *b) { /* slowest first, then by node */
    const timed_node *x = a, *y = b;
    return x->us < y->us ? 1 : x->us > y->us ? -1 : (x->node > y->node) - (x->node < y->node);
}

kn_status kn_graph_profile_print(kn_graph *g, FILE *f, int64_t batch, int top) {
    if (!g || !f) return kn__err(KN_EINVAL, "graph_profile_print: NULL argument");
    kn_plan *p = g->plans;
    while (p && p->batch != (g->batch ? batch : 0))
        p = p->next;
    if (!p || !p->prof_us || !p->prof_runs)
        return kn__err(KN_EINVAL,
                       "graph_profile_print: no profiled runs at batch %lld (switch profiling on "
                       "with kn_graph_profile, then run the graph)",
                       (long long)batch);
    timed_node *ord = kn__malloc(sizeof *ord * (size_t)(p->nnodes ? p->nnodes : 1));
    if (!ord) return kn_last_status();
    double total = 0;
    for (int i = 0; i < p->nnodes; i++) {
        ord[i] = (timed_node){p->prof_us[i], i};
        total += p->prof_us[i];
    }
    qsort(ord, (size_t)p->nnodes, sizeof *ord, by_time);
    const double runs = (double)p->prof_runs;
    fprintf(f,
            "profile (batch %lld, %lld runs): %.3f ms per run in nodes (side-by-side lanes "
            "count both)\n",
            (long long)(p->batch ? p->batch : g->batch), (long long)p->prof_runs,
            total / runs / 1e3);
    fprintf(f, "  %4s %-20s %-20s %10s %6s %6s %8s\n", "node", "op", "output", "ms/run", "%",
            "cum%", "GFLOP/s");
    double cum = 0;
    int shown = 0; /* views take no time and are not listed, nor counted against top */
    for (int r = 0; r < p->nnodes && (top <= 0 || shown < top); r++) {
        int i = ord[r].node;
        const kn_gnode *n = &g->nodes[i];
        if (p->kind[i] == K_VIEW) continue;
        shown++;
        char shape[96] = "()";
        if (n->nout > 0) {
            const kn_tensor *t = p->vt[n->out[0]];
            kn__shape_str(shape, sizeof shape, t->ndim, t->shape);
        }
        double us = p->prof_us[i] / runs, macs = node_macs(g, p, i);
        cum += p->prof_us[i];
        fprintf(f, "  %4d %-20s %-20s %10.4f %6.2f %6.2f", i, kn__g_node_name(n), shape, us / 1e3,
                total > 0 ? 100 * p->prof_us[i] / total : 0, total > 0 ? 100 * cum / total : 0);
        if (macs > 0 && us > 0) fprintf(f, " %8.1f", 2 * macs / us / 1e3);
        fprintf(f, "\n");
    }
    kn__free(ord);
    return KN_OK;
}
