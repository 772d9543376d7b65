/*
 * passes.c - graph passes that keep results bit-identical to eager mode (dead code and common
 * subexpression elimination, constant folding, algebraic simplification), conv+batchnorm folding
 * (which changes rounding: see kn__g_conv_bn), and kn_graph_compile, which runs them in order.
 *
 * Every pass rewrites uses and marks nodes dead; kn__g_compact then renumbers. Random and mutating
 * ops are never removed, merged or folded: removing a dropout would shift the RNG stream of every
 * later random op, and batch_norm in training mode updates its running statistics.
 */
#include <math.h>
#include <stdlib.h>

#include "graph/graph_impl.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "optim/optim_impl.h"

static bool pinned(const kn_gnode *n) {
    return n->op && (n->op->flags & (KN_OPF_RANDOM | KN_OPF_MUTATES));
}

kn_status kn__g_dce(kn_graph *g) {
    bool *live = kn__calloc((size_t)(g->nvals ? g->nvals : 1), sizeof(bool));
    if (!live) return kn_last_status();
    for (int i = 0; i < g->noutputs; i++)
        live[g->outputs[i]] = true;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        kn_gnode *n = &g->nodes[i];
        if (n->dead) continue;
        bool used = pinned(n);
        for (int o = 0; o < n->nout && !used; o++)
            used = live[n->out[o]];
        if (!used) {
            n->dead = true;
            continue;
        }
        for (int j = 0; j < n->nin; j++)
            live[n->in[j]] = true;
    }
    kn__free(live);
    return kn__g_compact(g);
}

static bool attrs_same(const kn_gnode *a, const kn_gnode *b) {
    if (a->attrs.n != b->attrs.n || a->sym_attr != b->sym_attr) return false;
    for (int k = 0; k < a->attrs.n; k++) {
        const kn_attr *p = &a->attrs.a[k], *q = &b->attrs.a[k];
        if (strcmp(p->name, q->name) || p->kind != q->kind || p->n != q->n) return false;
        if (p->kind == KN_ATTR_FLOAT && memcmp(&p->f, &q->f, sizeof p->f)) return false;
        if (p->kind == KN_ATTR_INTS && memcmp(p->ints, q->ints, sizeof(int64_t) * (size_t)p->n))
            return false;
    }
    return true;
}

/* Values some op writes in place (optimizer state, running statistics): reading one before and
 * after the write gives different data, so CSE and identity rules must not merge such reads. */
static bool *written_values(const kn_graph *g) {
    bool *w = kn__calloc((size_t)(g->nvals ? g->nvals : 1), sizeof(bool));
    if (!w) return NULL;
    for (int i = 0; i < g->nnodes; i++)
        if (!g->nodes[i].dead && pinned(&g->nodes[i]) && (g->nodes[i].op->flags & KN_OPF_MUTATES))
            for (int j = 0; j < g->nodes[i].nin; j++) {
                const kn_opdef *op = g->nodes[i].op; /* the updates only read grads and lr */
                if (op == &kn__op_optimizer_update && (j == 1 || j == 2)) continue;
                if (op == &kn__op_matmul_update && (j == 0 || j == 1 || j == 3)) continue;
                w[g->nodes[i].in[j]] = true;
            }
    return w;
}

static bool reads_written(const kn_gnode *n, const bool *w) {
    for (int j = 0; j < n->nin; j++)
        if (w[n->in[j]]) return true;
    return false;
}

kn_status kn__g_cse(kn_graph *g) {
    bool *w = written_values(g);
    if (!w) return kn_last_status();
    for (int j = 0; j < g->nnodes; j++) {
        kn_gnode *b = &g->nodes[j];
        if (b->dead || !b->op || pinned(b) || reads_written(b, w)) continue;
        for (int i = 0; i < j; i++) {
            kn_gnode *a = &g->nodes[i];
            if (a->dead || a->op != b->op || a->nin != b->nin || a->nout != b->nout) continue;
            if (memcmp(a->in, b->in, sizeof(int) * (size_t)a->nin) || !attrs_same(a, b)) continue;
            for (int o = 0; o < b->nout; o++)
                kn__g_replace(g, b->out[o], a->out[o]);
            b->dead = true;
            break;
        }
    }
    kn__free(w);
    return kn__g_compact(g);
}

/* A weight the pass may treat as a constant. */
static bool is_const(const kn_graph *g, int v, bool freeze) {
    const kn_gval *gv = &g->vals[v];
    return gv->kind == GV_WEIGHT && (gv->constant || freeze);
}

static int folded_weight(kn_graph *g, kn_tensor *t) {
    char name[32];
    static _Atomic int counter;
    snprintf(name, sizeof name, "folded_%d", atomic_fetch_add(&counter, 1));
    return kn__g_add_weight(g, name, t, true);
}

kn_status kn__g_fold(kn_graph *g, bool freeze) {
    bool prev = kn_no_grad_begin();
    kn_status st = KN_OK;
    for (int i = 0; i < g->nnodes && st == KN_OK; i++) {
        kn_gnode *n = &g->nodes[i];
        if (n->dead || !n->op || pinned(n) || n->nin == 0) continue;
        bool all = true;
        for (int j = 0; j < n->nin && all; j++)
            all = is_const(g, n->in[j], freeze);
        if (!all) continue;
        kn_tensor *in[KN_MAX_INS], *out[KN_MAX_OUTS] = {0};
        for (int j = 0; j < n->nin; j++)
            in[j] = g->vals[n->in[j]].data;
        kn_scope sc = kn_scope_begin();
        int k = kn__op_run(n->op, in, n->nin, &n->attrs, out, KN_MAX_OUTS);
        if (k == n->nout) {
            for (int o = 0; o < k && st == KN_OK; o++) {
                /* views of weights are materialised so the constant owns compact bytes */
                kn_tensor *c = kn__contig(out[o]);
                int v = c ? folded_weight(g, c) : -1;
                kn_tensor_free(c);
                if (v < 0)
                    st = kn_last_status();
                else
                    kn__g_replace(g, n->out[o], v);
            }
            n->dead = true;
        } else if (k < 0) {
            st = k;
        }
        kn_scope_end(sc);
    }
    kn_no_grad_end(prev);
    return st ? st : kn__g_compact(g);
}

/* ---- algebraic simplification ---- */
/* Whether weight v is a constant whose every element has exactly the bits of `value` (f32/f64). */
static bool const_all(const kn_graph *g, int v, double value) {
    const kn_gval *gv = &g->vals[v];
    if (gv->kind != GV_WEIGHT || !gv->constant || !kn_dtype_is_float(gv->dtype)) return false;
    int64_t n = kn__numel(gv->ndim, gv->shape);
    if (n > 4096) return false;
    for (int64_t i = 0; i < n; i++) {
        int64_t idx[KN_MAX_DIMS], r = i;
        for (int d = gv->ndim - 1; d >= 0; d--)
            idx[d] = r % gv->shape[d], r /= gv->shape[d];
        double x = kn_tensor_get(gv->data, idx);
        if (memcmp(&x, &value, sizeof x) != 0) return false;
    }
    return true;
}

static bool same_shape(const kn_gval *a, const kn_gval *b) {
    return a->ndim == b->ndim && a->dtype == b->dtype &&
           memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0 && a->sym == b->sym;
}

static bool is_op(const kn_gnode *n, const char *name) {
    return n->op && strcmp(n->op->name, name) == 0;
}

/* The value the node's output can be replaced by, or -1. Every rule is exact in IEEE arithmetic:
 * x*1, x/1 and x-(+0) give x bit for bit (also -0 and NaN); x+0 is NOT simplified (-0+0 = +0). */
/* How many live node inputs and graph outputs read v (kn__g_uses for one value, without
 * allocating: the rules below check single-use as they rewrite). */
static int value_uses(const kn_graph *g, int v) {
    int uses = kn__g_is_output(g, v);
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; !g->nodes[i].dead && j < g->nodes[i].nin; j++)
            uses += g->nodes[i].in[j] == v;
    return uses;
}

static int simplify_node(kn_graph *g, kn_gnode *n) {
    const kn_gval *out = &g->vals[n->out[0]];
    if (n->nout != 1 && !is_op(n, "batch_norm")) return -1;
    int a = n->nin > 0 ? n->in[0] : -1, b = n->nin > 1 ? n->in[1] : -1;
    if (is_op(n, "mul")) {
        if (const_all(g, b, 1.0) && same_shape(&g->vals[a], out)) return a;
        if (const_all(g, a, 1.0) && same_shape(&g->vals[b], out)) return b;
    }
    if (is_op(n, "div") && const_all(g, b, 1.0) && same_shape(&g->vals[a], out)) return a;
    if (is_op(n, "sub") && const_all(g, b, 0.0) && same_shape(&g->vals[a], out)) return a;
    if ((is_op(n, "reshape") || is_op(n, "cast") || is_op(n, "clone") || is_op(n, "expand")) &&
        same_shape(&g->vals[a], out) && !kn__g_is_output(g, n->out[0]))
        return a;
    if (is_op(n, "neg") && g->vals[a].kind == GV_NODE) {
        const kn_gnode *p = &g->nodes[g->vals[a].node];
        if (!p->dead && is_op(p, "neg")) return p->in[0];
    }
    if (is_op(n, "relu") && g->vals[a].kind == GV_NODE && kn_dtype_is_float(out->dtype)) {
        /* relu(conv2d(...)) whose conv output has no other reader: the conv applies it while
         * adding its bias (same formula, same bits), saving a pass over the activation */
        kn_gnode *cv = &g->nodes[g->vals[a].node];
        int uses = value_uses(g, a);
        if (!cv->dead && is_op(cv, "conv2d") && uses == 1 && !kn__attr_int(&cv->attrs, "relu", 0) &&
            kn_attrs_set_int(&cv->attrs, "relu", 1) == KN_OK)
            return a;
    }
    if (is_op(n, "relu_backward") && g->vals[b].kind == GV_NODE) {
        /* relu_backward(g, x) masks with x > 0; relu(x) > 0 exactly when x > 0 (NaN: neither),
         * so the mask can come from relu's output. Then relu's input has no use after the
         * forward and relu runs in place over it: one activation less is kept for backward. */
        for (int i = 0; i < g->nnodes; i++) {
            const kn_gnode *r = &g->nodes[i];
            if (!r->dead && is_op(r, "relu") && r->in[0] == b &&
                g->vals[r->out[0]].dtype == g->vals[b].dtype) {
                n->in[1] = r->out[0];
                break;
            }
        }
        /* relu_backward(max_pool2d_backward(gy, y), y) with y = relu's output: one kernel that
         * routes each window's gradient only where its maximum is > 0 (exactly relu's mask at
         * the only element that received a gradient) */
        const kn_gval *va = &g->vals[a];
        if (va->kind == GV_NODE) {
            kn_gnode *mp = &g->nodes[va->node];
            int uses = value_uses(g, a);
            if (!mp->dead && is_op(mp, "max_pool2d_backward") && mp->in[1] == n->in[1] &&
                uses == 1 && !kn__attr_int(&mp->attrs, "relu_mask", 0) &&
                kn_attrs_set_int(&mp->attrs, "relu_mask", 1) == KN_OK)
                return a;
        }
    }
    if (is_op(n, "reshape") && g->vals[a].kind == GV_NODE) {
        /* reshape(reshape(x)) -> reshape(x): rewire in place, keep this node */
        const kn_gnode *p = &g->nodes[g->vals[a].node];
        if (!p->dead && is_op(p, "reshape")) n->in[0] = p->in[0];
    }
    return -1;
}

kn_status kn__g_simplify(kn_graph *g) {
    bool *written = written_values(g);
    if (!written) return kn_last_status();
    for (int i = 0; i < g->nnodes; i++) {
        kn_gnode *n = &g->nodes[i];
        if (n->dead || !n->op || pinned(n)) continue;
        int r = reads_written(n, written) ? -1 : simplify_node(g, n);
        if (r >= 0) {
            kn__g_replace(g, n->out[0], r);
            n->dead = true;
        }
    }
    kn__free(written);
    return kn__g_compact(g);
}

/* ---- conv2d + eval batch_norm -> conv2d with scaled weights and a new bias ----
 * w'[o] = w[o] * s[o], b'[o] = (b[o] - mean[o]) * s[o] + beta[o], s = gamma / sqrt(var + eps),
 * computed in f64 and rounded once. This changes rounding (one multiply-add per output instead of
 * a normalisation after the conv), so it only runs on frozen graphs and is tested with a
 * tolerance. */
static kn_status fold_one(kn_graph *g, kn_gnode *conv, kn_gnode *bn) {
    int64_t flags[4];
    static const char *names[4] = {"has_mean", "has_var", "has_weight", "has_bias"};
    int idx = 1, at[4];
    for (int k = 0; k < 4; k++) {
        flags[k] = kn__attr_int(&bn->attrs, names[k], 0);
        at[k] = flags[k] ? bn->in[idx++] : -1;
    }
    if (!flags[0] || !flags[1]) return KN_OK;
    for (int k = 0; k < 4; k++)
        if (at[k] >= 0 && g->vals[at[k]].kind != GV_WEIGHT) return KN_OK;
    const kn_gval *w = &g->vals[conv->in[1]];
    int64_t O = w->shape[0], per = kn__numel(w->ndim, w->shape) / (O ? O : 1);
    double eps = kn__attr_float(&bn->attrs, "eps", 1e-5);
    kn_tensor *nw = kn__tensor_alloc(w->dtype, w->ndim, w->shape);
    kn_tensor *nb = kn__tensor_alloc(w->dtype, 1, &O);
    double *buf = kn__malloc(sizeof(double) * (size_t)(per * O + 5 * O + 1));
    kn_status st = nw && nb && buf ? KN_OK : kn_last_status();
    if (st == KN_OK) {
        double *wv = buf, *mean = wv + per * O, *var = mean + O, *gam = var + O, *bet = gam + O,
               *bias = bet + O;
        st = kn_tensor_read(w->data, KN_F64, wv, sizeof(double) * (size_t)(per * O));
        kn_tensor *src[4] = {g->vals[at[0]].data, g->vals[at[1]].data,
                             at[2] >= 0 ? g->vals[at[2]].data : NULL,
                             at[3] >= 0 ? g->vals[at[3]].data : NULL};
        double *dst[4] = {mean, var, gam, bet};
        for (int k = 0; k < 4 && st == KN_OK; k++) {
            if (src[k])
                st = kn_tensor_read(src[k], KN_F64, dst[k], sizeof(double) * (size_t)O);
            else
                for (int64_t o = 0; o < O; o++)
                    dst[k][o] = k == 2 ? 1.0 : 0.0;
        }
        if (st == KN_OK && conv->nin > 2)
            st =
                kn_tensor_read(g->vals[conv->in[2]].data, KN_F64, bias, sizeof(double) * (size_t)O);
        else
            for (int64_t o = 0; o < O; o++)
                bias[o] = 0;
        for (int64_t o = 0; o < O && st == KN_OK; o++) {
            double s = gam[o] / sqrt(var[o] + eps);
            for (int64_t i = 0; i < per; i++)
                kn__store_f64(w->dtype,
                              kn__ptr(nw) + (size_t)(o * per + i) * kn_dtype_size(w->dtype),
                              wv[o * per + i] * s);
            kn__store_f64(w->dtype, kn__ptr(nb) + (size_t)o * kn_dtype_size(w->dtype),
                          (bias[o] - mean[o]) * s + bet[o]);
        }
    }
    if (st == KN_OK) {
        int vw = folded_weight(g, nw), vb = folded_weight(g, nb);
        int ins[3] = {conv->in[0], vw, vb};
        int *nin = kn__realloc(conv->in, sizeof ins);
        if (vw < 0 || vb < 0 || !nin) {
            st = kn_last_status();
        } else {
            conv->in = nin;
            memcpy(conv->in, ins, sizeof ins);
            conv->nin = 3;
            kn__g_replace(g, bn->out[0], conv->out[0]);
            bn->dead = true;
        }
    }
    kn_tensor_free(nw);
    kn_tensor_free(nb);
    kn__free(buf);
    return st;
}

kn_status kn__g_conv_bn(kn_graph *g) {
    int *uses = kn__g_uses(g);
    if (!uses) return kn_last_status();
    kn_status st = KN_OK;
    for (int i = 0; i < g->nnodes && st == KN_OK; i++) {
        kn_gnode *bn = &g->nodes[i];
        if (bn->dead || !is_op(bn, "batch_norm") || kn__attr_int(&bn->attrs, "training", 1))
            continue;
        int x = bn->in[0];
        if (g->vals[x].kind != GV_NODE || uses[x] != 1 || uses[bn->out[1]] || uses[bn->out[2]])
            continue;
        kn_gnode *conv = &g->nodes[g->vals[x].node];
        if (conv->dead || !is_op(conv, "conv2d") || g->vals[conv->in[1]].kind != GV_WEIGHT ||
            (conv->nin > 2 && g->vals[conv->in[2]].kind != GV_WEIGHT))
            continue;
        st = fold_one(g, conv, bn);
    }
    kn__free(uses);
    return st ? st : kn__g_compact(g);
}

/* ---- prepack: f32 linear -> linear_packed, conv2d -> conv2d_packed, weights packed once ----
 * The weight (a constant of the frozen graph) is packed at compile time for the AVX-512 kernel
 * (kernels/x86/sgemm_packed_avx512.c), so a run no longer packs it inside the GEMM. Each output
 * sums the same terms in another order than the GEMM path: frozen graphs only, tested with a
 * tolerance. Only where the kernel runs (AVX-512F) and the layer has at least 32 outputs (a
 * panel of 32 columns would be mostly padding below that). */
/* conv2d -> conv2d_packed where its kernel runs (x86/conv_packed_avx512.c): f32, groups 1, a
 * constant weight (and bias) and at least 32 output channels (the kernel computes blocks of 64).
 * Returns 1 when converted, 0 when not applicable, < 0 on error. */
static int prepack_conv(kn_graph *g, int i) {
    kn_gnode *n = &g->nodes[i];
    const kn_gval *x = &g->vals[n->in[0]], *w = &g->vals[n->in[1]];
    if (x->dtype != KN_F32 || x->ndim != 4 || w->kind != GV_WEIGHT || w->ndim != 4 ||
        w->shape[0] < 32 || (n->nin > 2 && g->vals[n->in[2]].kind != GV_WEIGHT))
        return 0;
    int64_t s[4], d[4], p[4];
    int ns = kn__attr_ints(&n->attrs, "stride", s, 2),
        nd = kn__attr_ints(&n->attrs, "dilation", d, 2),
        np = kn__attr_ints(&n->attrs, "pads", p, 4);
    kn_conv_geom cg = {.N = 1,
                       .C = w->shape[1],
                       .O = w->shape[0],
                       .KH = w->shape[2],
                       .KW = w->shape[3],
                       .G = kn__attr_int(&n->attrs, "groups", 1),
                       .sh = ns > 0 ? s[0] : 1,
                       .sw = ns > 0 ? s[ns - 1] : 1,
                       .dh = nd > 0 ? d[0] : 1,
                       .dw = nd > 0 ? d[nd - 1] : 1,
                       .pt = np > 0 ? p[0] : 0,
                       .pl = np == 4  ? p[1]
                             : np > 0 ? p[np - 1]
                                      : 0};
    if (cg.C != x->shape[1] || !kn__conv_packed_supported(&cg)) return 0;
    int64_t size = kn__conv_packed_size(cg.O, cg.C, cg.KH, cg.KW);
    kn_tensor *wc = kn__contig(w->data);
    kn_tensor *wp = wc ? kn__tensor_alloc(KN_F32, 1, &size) : NULL;
    if (!wp) {
        kn_tensor_free(wc);
        return -1;
    }
    kn__conv_pack_w((const float *)kn__ptr(wc), cg.O, cg.C, cg.KH, cg.KW, (float *)kn__ptr(wp));
    kn_tensor_free(wc);
    int v = folded_weight(g, wp);
    kn_tensor_free(wp);
    if (v < 0) return -1;
    n = &g->nodes[i];
    n->in[1] = v;
    n->op = &kn__op_conv2d_packed;
    int64_t ws[4] = {cg.O, cg.C, cg.KH, cg.KW};
    return kn_attrs_set_ints(&n->attrs, "weight_shape", ws, 4) == KN_OK ? 1 : -1;
}

/* the only node reading value v (-1: none, several, or v is a graph output) */
static int only_reader(const kn_graph *g, int v) {
    if (kn__g_is_output(g, v)) return -1;
    int r = -1;
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; !g->nodes[i].dead && j < g->nodes[i].nin; j++)
            if (g->nodes[i].in[j] == v) {
                if (r >= 0 && r != i) return -1;
                r = i;
            }
    return r;
}

/* Moves node p to position i < p (nodes i..p-1 shift down one); values follow. Valid when p
 * reads nothing defined at or after i. */
static void move_node(kn_graph *g, int p, int i) {
    kn_gnode moved = g->nodes[p];
    memmove(&g->nodes[i + 1], &g->nodes[i], sizeof *g->nodes * (size_t)(p - i));
    g->nodes[i] = moved;
    for (int k = i; k <= p; k++)
        for (int o = 0; o < g->nodes[k].nout; o++)
            g->vals[g->nodes[k].out[o]].node = k;
}

/* ---- residual epilogue: relu(add(conv2d_packed(x), r)) -> conv2d_packed(x, ..., r) ----
 * A ResNet block ends in add(conv(...), shortcut) and a relu. When the conv's output has no
 * other reader, the add (and a relu that is its only reader) run inside the conv's store: attr
 * "residual" with r as its last input, "relu" applied after the add. The same float operations
 * in the same order as the separate nodes: the same bits, one pass over the activation less.
 * The shortcut must exist before the conv runs: a shortcut node computed after the conv (the
 * downsampling conv) is moved before it when it reads nothing the conv precedes. */
kn_status kn__g_fuse_residuals(kn_graph *g) {
    for (int i = 0; i < g->nnodes; i++) {
        kn_gnode *n = &g->nodes[i];
        if (n->dead || n->op != &kn__op_conv2d_packed || kn__attr_int(&n->attrs, "relu", 0) ||
            kn__attr_int(&n->attrs, "residual", 0) || n->epilogue_of >= 0)
            continue;
        const int v = n->out[0], j = only_reader(g, v);
        if (j < 0 || !is_op(&g->nodes[j], "add") || g->nodes[j].nin != 2) continue;
        const kn_gnode *a = &g->nodes[j];
        const int r = a->in[0] == v ? a->in[1] : a->in[0];
        const kn_gval *vr = &g->vals[r], *vv = &g->vals[v], *va = &g->vals[a->out[0]];
        if (r == v || vr->dtype != KN_F32 || vr->ndim != 4 || vr->sym != vv->sym ||
            memcmp(vr->shape, vv->shape, sizeof vv->shape) || va->dtype != KN_F32)
            continue;
        if (vr->kind == GV_NODE && vr->node > i) { /* the shortcut comes later: move it first */
            const kn_gnode *p = &g->nodes[vr->node];
            bool ok = !pinned(p) && p->op && !(p->op->flags & KN_OPF_VIEW) && p->nout == 1;
            for (int k = 0; ok && k < p->nin; k++)
                ok = g->vals[p->in[k]].kind != GV_NODE || g->vals[p->in[k]].node < i;
            if (!ok) continue;
            move_node(g, vr->node, i);
            i++; /* the conv moved down one */
            n = &g->nodes[i];
        }
        const int j2 = only_reader(g, v); /* the add, wherever it is now */
        int out = g->nodes[j2].out[0], k = only_reader(g, out);
        bool relu =
            k >= 0 && is_op(&g->nodes[k], "relu") && g->vals[g->nodes[k].out[0]].dtype == KN_F32;
        int *in = kn__realloc(n->in, sizeof(int) * (size_t)(n->nin + 1));
        if (!in) return kn_last_status();
        n->in = in;
        n->in[n->nin++] = r;
        if (kn_attrs_set_int(&n->attrs, "residual", 1) ||
            (relu && kn_attrs_set_int(&n->attrs, "relu", 1)))
            return kn_last_status();
        g->nodes[j2].dead = true;
        kn__g_replace(g, out, v);
        if (relu) {
            g->nodes[k].dead = true;
            kn__g_replace(g, g->nodes[k].out[0], v);
        }
    }
    return kn__g_compact(g);
}

kn_status kn__g_prepack(kn_graph *g) {
    kn_status st = KN_OK;
    for (int i = 0; i < g->nnodes && st == KN_OK; i++) {
        kn_gnode *n = &g->nodes[i];
        if (!n->dead && is_op(n, "conv2d") && !n->sym_attr && prepack_conv(g, i) < 0)
            return kn_last_status();
        if (!kn__sgemm_packed_available()) continue;
        if (n->dead || !is_op(n, "linear") || n->sym_attr) continue;
        const kn_gval *x = &g->vals[n->in[0]], *w = &g->vals[n->in[1]];
        if (x->dtype != KN_F32 || w->kind != GV_WEIGHT || w->ndim != 2 || w->shape[0] < 32 ||
            (n->nin > 2 && g->vals[n->in[2]].kind != GV_WEIGHT))
            continue;
        int64_t N = w->shape[0], K = w->shape[1], size = kn__sgemm_packed_size(N, K);
        kn_tensor *wc = kn__contig(w->data);
        kn_tensor *wp = wc ? kn__tensor_alloc(KN_F32, 1, &size) : NULL;
        if (!wp) {
            kn_tensor_free(wc);
            return kn_last_status();
        }
        kn__sgemm_pack_wt((const float *)kn__ptr(wc), K, N, K, (float *)kn__ptr(wp));
        kn_tensor_free(wc);
        int v = folded_weight(g, wp);
        kn_tensor_free(wp);
        if (v < 0) return kn_last_status();
        n = &g->nodes[i]; /* adding a value does not move nodes, but stay safe */
        n->in[1] = v;
        n->op = &kn__op_linear_packed;
        kn_attrs at = {0};
        kn_attrs_set_int(&at, "out", N);
        kn_attrs_set_int(&at, "in", K);
        n->attrs = at;
    }
    return st ? st : kn__g_compact(g);
}

/* ---- early updates ----
 * Moves each node that mutates an input (optimizer_update) to just after the last node that
 * reads any of its inputs, directly or through views (a later reader must not see the new
 * value). A parameter's gradient then dies right after it is computed instead of living until
 * the end of the step, so the memory plan overlaps gradients with the rest of backward.
 * Results are unchanged: the update reads and writes exactly what it did. */
static bool reads_through_views(const kn_graph *g, int node, int v, int depth) {
    const kn_gnode *n = &g->nodes[node];
    for (int j = 0; j < n->nin; j++) {
        int u = n->in[j];
        if (u == v) return true;
        const kn_gval *gu = &g->vals[u];
        if (depth < 8 && gu->kind == GV_NODE) {
            const kn_gnode *p = &g->nodes[gu->node];
            if (p->op && (p->op->flags & KN_OPF_VIEW) &&
                reads_through_views(g, gu->node, v, depth + 1))
                return true;
        }
    }
    return false;
}

kn_status kn__g_early_updates(kn_graph *g) {
    int *id = kn__malloc(sizeof(int) * (size_t)(g->nnodes ? g->nnodes : 1)); /* original index */
    if (!id) return kn_last_status();
    for (int i = 0; i < g->nnodes; i++)
        id[i] = i;
    for (int i = 0; i < g->nnodes; i++) {
        kn_gnode *n = &g->nodes[i];
        /* optimizer_update writes inputs 0 (param) and 3.. (count, state); 1, 2 are read */
        if (n->op != &kn__op_optimizer_update) continue;
        int after = -1; /* last node before i that produces an input or reads a written one */
        for (int k = 0; k < i; k++) {
            const kn_gnode *m = &g->nodes[k];
            bool dep = false;
            for (int j = 0; j < n->nin && !dep; j++) {
                for (int o = 0; o < m->nout && !dep; o++)
                    dep = m->out[o] == n->in[j];
                dep = dep || (j != 1 && j != 2 && reads_through_views(g, k, n->in[j], 0));
            }
            if (dep) after = k;
        }
        /* a later reader of a written input means the trace read after writing: keep order */
        bool later = false;
        for (int k = i + 1; k < g->nnodes && !later; k++)
            for (int j = 0; j < n->nin && !later; j++)
                later = j != 1 && j != 2 && reads_through_views(g, k, n->in[j], 0);
        /* do not split a node from its epilogue */
        while (after >= 0 && after + 1 < i && g->nodes[after + 1].epilogue_of == id[after])
            after++;
        if (later || after + 1 >= i) continue;
        kn_gnode moved = *n;
        int mid = id[i];
        memmove(&g->nodes[after + 2], &g->nodes[after + 1],
                sizeof *g->nodes * (size_t)(i - after - 1));
        memmove(&id[after + 2], &id[after + 1], sizeof(int) * (size_t)(i - after - 1));
        g->nodes[after + 1] = moved;
        id[after + 1] = mid;
    }
    int *pos = kn__malloc(sizeof(int) * (size_t)(g->nnodes ? g->nnodes : 1));
    if (!pos) {
        kn__free(id);
        return kn_last_status();
    }
    for (int i = 0; i < g->nnodes; i++)
        pos[id[i]] = i;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].epilogue_of >= 0) g->nodes[i].epilogue_of = pos[g->nodes[i].epilogue_of];
        for (int o = 0; o < g->nodes[i].nout; o++)
            g->vals[g->nodes[i].out[o]].node = i;
    }
    kn__free(pos);
    kn__free(id);
    return KN_OK;
}

/* ---- gradient GEMM fused into its parameter's update ----
 * optimizer_update(W, matmul(a, b), ...) where the matmul's only use is the update becomes one
 * matmul_update node (optim.c): the gradient is produced and applied a block of rows at a time
 * and never materialised whole. Same results (see optim.c). */
kn_status kn__g_fuse_updates(kn_graph *g) {
    int *uses = kn__g_uses(g);
    if (!uses) return kn_last_status();
    kn_status st = KN_OK;
    for (int i = 0; i < g->nnodes && st == KN_OK; i++) {
        kn_gnode *u = &g->nodes[i];
        if (u->dead || u->op != &kn__op_optimizer_update || u->nin < 4) continue;
        int gv = u->in[1];
        const kn_gval *v = &g->vals[gv];
        if (v->kind != GV_NODE || uses[gv] != 1 || v->ndim != 2) continue;
        kn_gnode *m = &g->nodes[v->node];
        if (m->dead || !is_op(m, "matmul") || m->nin != 2 || g->vals[m->in[0]].ndim != 2 ||
            g->vals[m->in[1]].ndim != 2 || !kn_dtype_is_float(v->dtype))
            continue;
        /* the GEMM moves from the matmul's place to the update's: nothing in between may write
         * what it reads (another parameter's update, with W = A @ B factorisations) */
        bool clash = false;
        for (int k = v->node + 1; k < i && !clash; k++) {
            const kn_gnode *w = &g->nodes[k];
            if (w->dead || !w->op || !(w->op->flags & KN_OPF_MUTATES)) continue;
            for (int j = 0; j < w->nin && !clash; j++)
                clash = reads_through_views(g, v->node, w->in[j], 0);
        }
        if (clash) continue;
        /* worth it for large gradients only: smaller ones cost little memory and one GEMM call
         * is faster than several */
        if (kn__numel(v->ndim, v->shape) * (int64_t)kn_dtype_size(v->dtype) < ((int64_t)1 << 20))
            continue;
        int *in = kn__malloc(sizeof(int) * (size_t)(u->nin + 1));
        if (!in) {
            st = kn_last_status();
            break;
        }
        in[0] = m->in[0];
        in[1] = m->in[1];
        in[2] = u->in[0];
        for (int j = 2; j < u->nin; j++)
            in[j + 1] = u->in[j];
        kn__free(u->in);
        u->in = in;
        u->nin += 1;
        u->op = &kn__op_matmul_update;
        m->dead = true;
    }
    kn__free(uses);
    return st ? st : kn__g_compact(g);
}

/* ---- the pipeline ---- */
static kn_status restart_from_trace(kn_graph *g) {
    kn__plan_free_all(g);
    g->pass_log_len = 0;
    if (g->pass_log) g->pass_log[0] = 0;
    if (!g->traced) return (g->traced = kn__g_clone(g)) ? KN_OK : kn_last_status();
    kn_graph *c = kn__g_clone(g->traced);
    if (!c) return kn_last_status();
    /* swap the IR of g with the fresh copy, then free the old IR with the copy */
    kn_graph tmp = *g;
#define SWAP(f) (g->f = c->f, c->f = tmp.f)
    SWAP(vals);
    SWAP(nvals);
    SWAP(cap_vals);
    SWAP(nodes);
    SWAP(nnodes);
    SWAP(cap_nodes);
    SWAP(inputs);
    SWAP(ninputs);
    SWAP(outputs);
    SWAP(noutputs);
    SWAP(out_names);
#undef SWAP
    kn_graph_free(c);
    return KN_OK;
}

typedef struct {
    unsigned bit;
    const char *name;
} pass_info;

/* The node sequence after a pass, for kiln info --plan: op names, fused groups as
 * [member+member], wrapped. */
static void log_nodes(kn_graph *g) {
    int col = 24; /* after "  <pass>  <n> nodes:" */
    for (int i = 0; i < g->nnodes; i++) {
        const kn_gnode *n = &g->nodes[i];
        char item[256];
        int len = 0;
        if (n->op) {
            len = snprintf(item, sizeof item, "%s", n->op->name);
        } else {
            len = snprintf(item, sizeof item, "[");
            for (int k = 0; k < n->nmem && len < (int)sizeof item - 40; k++)
                len += snprintf(item + len, sizeof item - (size_t)len, "%s%s", k ? "+" : "",
                                n->mem[k].op->name);
            len += snprintf(item + len, sizeof item - (size_t)len, "]");
        }
        if (col + len + 1 > 84) {
            kn__g_log(g, "\n                        ");
            col = 0;
        }
        kn__g_log(g, " %s", item);
        col += len + 1;
    }
    kn__g_log(g, "\n");
}

/* $KILN_GRAPH_DISABLE: comma-separated pass names to switch off in every compile (bisecting a
 * problem in a program you cannot edit), e.g. "fuse,cse"; "all" switches off every pass. */
static unsigned env_disabled(void) {
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"dce", KN_PASS_DCE},
                 {"cse", KN_PASS_CSE},
                 {"fold", KN_PASS_FOLD},
                 {"simplify", KN_PASS_SIMPLIFY},
                 {"conv_bn", KN_PASS_CONV_BN},
                 {"fuse", KN_PASS_FUSE},
                 {"epilogue", KN_PASS_EPILOGUE},
                 {"inplace", KN_PASS_INPLACE},
                 {"early_upd", KN_PASS_EARLY_UPDATE},
                 {"upd_gemm", KN_PASS_UPDATE_FUSE},
                 {"prepack", KN_PASS_PREPACK},
                 {"residual", KN_PASS_RESIDUAL},
                 {"interop", KN_PASS_INTEROP},
                 {"all", KN_PASS_ALL}};
    const char *e = getenv("KILN_GRAPH_DISABLE");
    unsigned bits = 0;
    while (e && *e) {
        size_t len = strcspn(e, ",");
        bool known = false;
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            if (strlen(names[k].name) == len && !strncmp(e, names[k].name, len))
                bits |= names[k].bit, known = true;
        if (!known) kn__log(2, "KILN_GRAPH_DISABLE: unknown pass '%.*s'", (int)len, e);
        e += len + (e[len] == ',');
    }
    return bits;
}

kn_status kn_graph_compile(kn_graph *g, const kn_compile_opts *opts) {
    if (!g) return kn__err(KN_EINVAL, "graph_compile: NULL graph");
    kn_compile_opts o = opts ? *opts : (kn_compile_opts){0};
    o.disable |= env_disabled();
    kn_status st = restart_from_trace(g);
    if (st) return st;
    g->copts = o;
    g->compiled = false;
    static const pass_info order[] = {
        {KN_PASS_SIMPLIFY, "simplify"},
        {KN_PASS_FOLD, "fold"},
        {KN_PASS_CONV_BN, "conv_bn"},
        {KN_PASS_SIMPLIFY, "simplify"},
        {KN_PASS_CSE, "cse"},
        {KN_PASS_DCE, "dce"},
        {KN_PASS_PREPACK, "prepack"},
        {KN_PASS_RESIDUAL, "residual"},
        {KN_PASS_FUSE, "fuse"},
        {KN_PASS_EARLY_UPDATE, "early_upd"},
        {KN_PASS_UPDATE_FUSE, "upd_gemm"},
    };
    kn__g_log(g, "  %-10s %4d nodes:", "traced", g->nnodes);
    log_nodes(g);
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        unsigned bit = order[k].bit;
        if (o.disable & bit) {
            kn__g_log(g, "  %-10s off\n", order[k].name);
            continue;
        }
        switch (bit) {
        case KN_PASS_SIMPLIFY: st = kn__g_simplify(g); break;
        case KN_PASS_FOLD: st = kn__g_fold(g, o.freeze); break;
        case KN_PASS_CONV_BN: st = o.freeze ? kn__g_conv_bn(g) : KN_OK; break;
        case KN_PASS_CSE: st = kn__g_cse(g); break;
        case KN_PASS_DCE: st = kn__g_dce(g); break;
        case KN_PASS_FUSE: st = kn__g_fuse(g, !(o.disable & KN_PASS_EPILOGUE)); break;
        case KN_PASS_EARLY_UPDATE: st = kn__g_early_updates(g); break;
        case KN_PASS_UPDATE_FUSE: st = kn__g_fuse_updates(g); break;
        case KN_PASS_PREPACK: st = o.freeze ? kn__g_prepack(g) : KN_OK; break;
        case KN_PASS_RESIDUAL: st = o.freeze ? kn__g_fuse_residuals(g) : KN_OK; break;
        }
        if (st) return st;
        int groups = 0;
        for (int i = 0; i < g->nnodes; i++)
            groups += g->nodes[i].op == NULL;
        kn__g_log(g, "  %-10s %4d nodes", order[k].name, g->nnodes);
        if (bit == KN_PASS_FUSE) kn__g_log(g, " (%d fused groups)", groups);
        kn__g_log(g, ":");
        log_nodes(g);
    }
    g->compiled = true;
    return KN_OK;
}
