/*
 * interop.c - inter-op parallelism: which stretches of a plan's schedule run as two concurrent
 * lanes, one thread each (TensorFlow's inter-op thread pool, planned statically).
 *
 * Why: the GEMMs of small layers do not speed up with a second thread (LeNet's 256x120 linear:
 * 27 us on one thread or two) and convolutions gain only 1.4-1.7x, while backward passes hold
 * pairs of independent heavy nodes: a layer's input gradient and its weight gradient. Running
 * the two side by side on one thread each keeps both cores busy without splitting either node.
 *
 * A window [s, e) of consecutive nodes runs concurrently when its nodes split into two groups
 * with no conflict between them: no node of one reads or writes a storage the other writes
 * (values through views count as their base; nodes that mutate inputs - optimizer updates -
 * write every input, so an update stays away from the readers of its parameter). Each lane runs
 * its nodes in schedule order; the window starts after every earlier node and ends before any
 * later one. Estimated work (multiply-adds for convolutions and GEMMs, elements moved for the
 * rest) picks the windows: both lanes at least INTEROP_MIN_WORK and the lighter at least half
 * the heavier, or one thread each is slower than two threads one after the other. Windows with
 * random ops are never formed (the RNG draw order must stay the schedule's).
 *
 * Results are bit-identical: every kernel gives the same result for any thread count, and a
 * window only reorders nodes that do not touch each other's data. The memory plan treats the
 * whole window as one step (every buffer used inside it is alive throughout) and runs no node
 * of a window in place (plan.c).
 */
#include "graph/graph_impl.h"

#define INTEROP_MAX_WINDOW 8      /* nodes per window */
#define INTEROP_MIN_SAVING 1e6    /* estimated saving per window, about 15 us */
#define INTEROP_ELEMENT_COST 12.0 /* a moved element costs about 12 multiply-adds */
#define INTEROP_SPEEDUP 1.6       /* two threads vs one on convolutions and memory-bound ops */
#define INTEROP_BWD_INPUT 1.25    /* its kernels also multiply the padding (LeNet: 156 vs 130 us) */
#define INTEROP_GEMM_2T 30e6      /* a GEMM this large (multiply-adds) runs 2x on two threads */

static double numel(const int64_t *s, int nd) {
    double n = 1;
    for (int d = 0; d < nd; d++)
        n *= (double)s[d];
    return n;
}

static bool is_gemm(const char *op) {
    return !strcmp(op, "matmul") || !strcmp(op, "linear") || !strcmp(op, "linear_packed");
}

double kn__g_node_macs(const kn_gnode *n, const int64_t *a, int na, const int64_t *b, int nb,
                       const int64_t *o, int no) {
    if (!n->op || n->nin < 2) return -1;
    const char *op = n->op->name;
    int64_t ws[4];
    if (is_gemm(op) && na >= 1) return numel(o, no) * (double)a[na - 1];
    if (!strcmp(op, "conv2d") && nb == 4) /* out x (C/G * KH * KW) */
        return numel(o, no) * numel(&b[1], 3);
    if (!strcmp(op, "conv2d_packed") && kn__attr_ints(&n->attrs, "weight_shape", ws, 4) == 4)
        return numel(o, no) * numel(&ws[1], 3);
    if (!strcmp(op, "conv2d_backward_input") && nb == 4) /* gy x (C/G * KH * KW) */
        return numel(a, na) * numel(&b[1], 3);
    if (!strcmp(op, "conv2d_backward_weight") && no == 4) /* gy x (C/G * KH * KW) */
        return numel(b, nb) * numel(&o[1], 3);
    return -1;
}

/* estimated single-thread time of node i (multiply-add equivalents); *two = its time on two
 * threads (measured here: LeNet's convolutions 1.45-1.75x faster on two threads, its pools and
 * sums about 1.6x, GEMMs of a few million multiply-adds not at all) */
static double node_work(const kn_graph *g, int i, int64_t (*sh)[KN_MAX_DIMS], const int *nd,
                        double *two) {
    const kn_gnode *n = &g->nodes[i];
    *two = 0;
    if (n->op && (n->op->flags & KN_OPF_VIEW)) return 0;
    if (n->nin >= 2 && n->nout >= 1) { /* (an optimizer update has no output) */
        int a = n->in[0], b = n->in[1], o = n->out[0];
        double w = kn__g_node_macs(n, sh[a], nd[a], sh[b], nd[b], sh[o], nd[o]);
        if (w >= 0 && is_gemm(n->op->name)) {
            *two = w / (1 + (w < INTEROP_GEMM_2T ? w / INTEROP_GEMM_2T : 1));
            return w;
        }
        if (w >= 0) { /* convolutions */
            if (!strcmp(n->op->name, "conv2d_backward_input")) w *= INTEROP_BWD_INPUT;
            *two = w / INTEROP_SPEEDUP;
            return w;
        }
    }
    double e = 0;
    for (int j = 0; j < n->nin; j++)
        e += numel(sh[n->in[j]], nd[n->in[j]]);
    for (int k = 0; k < n->nout; k++)
        e += numel(sh[n->out[k]], nd[n->out[k]]);
    *two = e * INTEROP_ELEMENT_COST / INTEROP_SPEEDUP;
    return e * INTEROP_ELEMENT_COST;
}

/* a view op that is never a copy (a reshape is one when strides do not allow a view) */
static bool pure_view(const kn_gnode *n) {
    return n->op && (n->op->flags & KN_OPF_VIEW) && strcmp(n->op->name, "reshape") != 0;
}

/* the value whose storage v uses, through pure views. A reshape's output is its own base: the
 * reshape node reads its input's base and writes its output, so a writer of the input, the
 * reshape and the reshape's readers always end up in one lane, in schedule order. */
static int base_of(const kn_graph *g, int v) {
    for (int depth = 0; depth < 64; depth++) {
        const kn_gval *gv = &g->vals[v];
        if (gv->kind != GV_NODE) return v;
        const kn_gnode *p = &g->nodes[gv->node];
        if (!pure_view(p) || gv->out_index != 0) return v;
        v = p->in[0];
    }
    return v;
}

/* R(x): bases of x's inputs; W(x): its outputs (none for a pure view, which runs nothing: its
 * readers read its base), plus every input of a node that mutates its inputs. Returns the
 * counts. */
static int read_set(const kn_graph *g, int i, int *r) {
    const kn_gnode *n = &g->nodes[i];
    for (int j = 0; j < n->nin; j++)
        r[j] = base_of(g, n->in[j]);
    return n->nin;
}

static int write_set(const kn_graph *g, int i, int *w) {
    const kn_gnode *n = &g->nodes[i];
    int c = 0;
    for (int k = 0; k < n->nout && !pure_view(n); k++)
        w[c++] = n->out[k];
    if (n->op && (n->op->flags & KN_OPF_MUTATES)) c += read_set(g, i, w + c);
    return c;
}

static bool meets(const int *a, int na, const int *b, int nb) {
    for (int x = 0; x < na; x++)
        for (int y = 0; y < nb; y++)
            if (a[x] == b[y]) return true;
    return false;
}

/* whether nodes a and b must not run at the same time: one writes what the other touches */
static bool conflict(const kn_graph *g, int a, int b) {
    if (g->nodes[a].nin > KN_MAX_INS || g->nodes[b].nin > KN_MAX_INS) return true;
    int ra[KN_MAX_INS], rb[KN_MAX_INS], wa[KN_MAX_INS + KN_MAX_OUTS], wb[KN_MAX_INS + KN_MAX_OUTS];
    int nra = read_set(g, a, ra), nrb = read_set(g, b, rb);
    int nwa = write_set(g, a, wa), nwb = write_set(g, b, wb);
    return meets(wa, nwa, rb, nrb) || meets(wa, nwa, wb, nwb) || meets(wb, nwb, ra, nra);
}

/* Window state: conflicts between its nodes as bit masks (bit m of cm[k]: nodes s+k and s+m
 * conflict), per-node one- and two-thread times. */
typedef struct {
    int s, n; /* first node, node count */
    uint16_t cm[INTEROP_MAX_WINDOW];
    double w1[INTEROP_MAX_WINDOW], w2[INTEROP_MAX_WINDOW];
} window;

/* Plans the nodes of `sel` (a subset of the window) as two conflict-free lanes balancing
 * one-thread time, the others deferred to right after the window (lane 2), which is legal when
 * no selected node later than a deferred one conflicts with it. Returns the estimated saving over
 * running the selected nodes one after the other on two threads, 0 when illegal or no gain. */
static double plan_subset(const window *w, unsigned sel, uint8_t *lane) {
    for (int k = 0; k < w->n; k++)
        if (!(sel >> k & 1) && (w->cm[k] & sel & ~((2u << k) - 1))) return 0;
    int comp[INTEROP_MAX_WINDOW], nc = 0;
    double cw[INTEROP_MAX_WINDOW] = {0};
    for (int k = 0; k < w->n; k++)
        comp[k] = -1;
    for (int k = 0; k < w->n; k++) { /* components by flood fill over the selected nodes */
        if (!(sel >> k & 1) || comp[k] >= 0) continue;
        unsigned todo = 1u << k, seen = 0;
        while (todo) {
            int q = __builtin_ctz(todo);
            todo &= todo - 1;
            seen |= 1u << q;
            comp[q] = nc;
            todo |= w->cm[q] & sel & ~seen;
        }
        nc++;
    }
    int ids[INTEROP_MAX_WINDOW], ni = 0;
    for (int k = 0; k < w->n; k++)
        if (comp[k] >= 0) cw[comp[k]] += w->w1[k];
    for (int c = 0; c < nc; c++)
        if (cw[c] > 0) ids[ni++] = c;
    if (ni < 2) return 0;
    for (int a = 1; a < ni; a++) /* largest component first onto the lighter lane */
        for (int b = a; b > 0 && cw[ids[b]] > cw[ids[b - 1]]; b--) {
            int t = ids[b];
            ids[b] = ids[b - 1];
            ids[b - 1] = t;
        }
    double lw[2] = {0, 0};
    uint8_t to_lane[INTEROP_MAX_WINDOW] = {0};
    for (int q = 0; q < ni; q++) {
        int l = lw[1] < lw[0];
        to_lane[ids[q]] = (uint8_t)l;
        lw[l] += cw[ids[q]];
    }
    double seq = 0, conc = lw[0] > lw[1] ? lw[0] : lw[1];
    for (int k = 0; k < w->n; k++) {
        lane[k] = comp[k] < 0 ? 2 : to_lane[comp[k]]; /* zero-work nodes follow their component */
        if (comp[k] >= 0) seq += w->w2[k];
    }
    return seq - conc >= INTEROP_MIN_SAVING ? seq - conc : 0;
}

/* w for the nodes [s, s + n): false when a node must not run concurrently (random ops: the
 * RNG draw order is the schedule's) */
static bool make_window(const kn_graph *g, int s, int n, const double *w1, const double *w2,
                        window *w) {
    memset(w, 0, sizeof *w);
    w->s = s;
    w->n = n;
    for (int k = 0; k < n; k++) {
        const kn_gnode *nd = &g->nodes[s + k];
        if (nd->op && (nd->op->flags & KN_OPF_RANDOM)) {
            w->n = k;
            break;
        }
        w->w1[k] = w1[s + k];
        w->w2[k] = w2[s + k];
    }
    for (int k = 0; k < w->n; k++)
        for (int m = k + 1; m < w->n; m++)
            if (conflict(g, s + k, s + m)) {
                w->cm[k] |= (uint16_t)(1u << m);
                w->cm[m] |= (uint16_t)(1u << k);
            }
    return w->n >= 2;
}

/* the best plan of the window's first n nodes over the subsets holding the first and the last
 * (other windows cover the shorter ranges); the saving (0: none) */
static double best_plan(window *w, int n, uint8_t *lane) {
    double total = 0;
    for (int k = 0; k < n; k++)
        total += w->w2[k];
    if (total < INTEROP_MIN_SAVING) return 0; /* the saving is less than the whole */
    double best = 0;
    uint8_t l[INTEROP_MAX_WINDOW];
    int keep = w->n;
    w->n = n;
    for (unsigned sel = 1; sel < 1u << n; sel++) {
        if (!(sel & 1) || !(sel >> (n - 1) & 1)) continue;
        double v = plan_subset(w, sel, l);
        if (v > best) {
            best = v;
            memcpy(lane, l, (size_t)n);
        }
    }
    w->n = keep;
    return best;
}

kn_status kn__g_interop(const kn_graph *g, int64_t (*sh)[KN_MAX_DIMS], const int *nd, int *win_end,
                        uint8_t *lane) {
    const int nn = g->nnodes;
    for (int i = 0; i < nn; i++) {
        win_end[i] = 0;
        lane[i] = 0;
    }
    if (g->copts.disable & KN_PASS_INTEROP) return KN_OK;
    double *work = kn__malloc(sizeof(double) * 2 * (size_t)(nn ? nn : 1)), *two = work + nn;
    /* the set of disjoint windows with the most saving (weighted interval scheduling, right
     * to left): best[s] = max(best[s + 1], saving(s, e) + best[e]) */
    double *best = kn__calloc((size_t)nn + 1, sizeof(double));
    int *pick = kn__calloc((size_t)nn + 1, sizeof(int));
    uint8_t *pl = kn__malloc((size_t)(nn ? nn : 1) * INTEROP_MAX_WINDOW);
    if (!work || !best || !pick || !pl) {
        kn__free(work);
        kn__free(best);
        kn__free(pick);
        kn__free(pl);
        return kn_last_status();
    }
    for (int i = 0; i < nn; i++)
        work[i] = node_work(g, i, sh, nd, &two[i]);
    for (int s = nn - 1; s >= 0; s--) {
        best[s] = best[s + 1];
        uint8_t l[INTEROP_MAX_WINDOW];
        window w;
        int wn = nn - s < INTEROP_MAX_WINDOW ? nn - s : INTEROP_MAX_WINDOW;
        if (!make_window(g, s, wn, work, two, &w)) continue;
        for (int e = s + 2; e <= s + w.n; e++) {
            double v = best_plan(&w, e - s, l);
            if (v > 0 && v + best[e] > best[s]) {
                best[s] = v + best[e];
                pick[s] = e;
                memcpy(pl + (size_t)s * INTEROP_MAX_WINDOW, l, (size_t)(e - s));
            }
        }
    }
    for (int s = 0; s < nn;) {
        if (!pick[s]) {
            s++;
            continue;
        }
        win_end[s] = pick[s];
        memcpy(lane + s, pl + (size_t)s * INTEROP_MAX_WINDOW, (size_t)(pick[s] - s));
        s = pick[s];
    }
    kn__free(work);
    kn__free(best);
    kn__free(pick);
    kn__free(pl);
    return KN_OK;
}
