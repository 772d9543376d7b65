/*
 * fuse.c - elementwise fusion and epilogue fusion, and the kernel that runs a fused group.
 *
 * A fused group is a chain of ops with a `pointwise` kernel (kiln's elementwise ops) where each
 * link's result has no other use and every member has the group's output shape (external inputs
 * may be smaller and broadcast). It runs as one pass over memory: kn__iter walks the output with
 * every external input broadcast, and each run is cut into tiles of TILE elements that go through
 * the members' own eager kernels via small stack buffers. Each member computes every element with
 * exactly the eager kernel, so results are bit-identical to eager mode.
 *
 * Epilogue: a group (even of one op) whose chain starts at the only use of a linear / matmul /
 * conv2d output is scheduled right after that node and, when shapes and dtypes match, writes in
 * place over its output while it is still in cache (the planner aliases the two).
 */
#include "graph/graph_impl.h"

#define TILE 256
#define MAX_MEMBERS 16

static bool fusable(const kn_graph *g, const kn_gnode *n) {
    if (n->dead || !n->op || !n->op->pointwise || n->nout != 1 || n->nin > 4) return false;
    if (!kn_dtype_is_float(g->vals[n->out[0]].dtype)) return false;
    kn_dtype dt[4];
    for (int j = 0; j < n->nin; j++)
        dt[j] = g->vals[n->in[j]].dtype;
    kn_iter_fn fn;
    _Alignas(16) char args[KN_PW_ARGS];
    kn_status st = n->op->pointwise(n->op, &n->attrs, dt, &fn, args);
    if (st) kn_clear_error();
    return st == KN_OK;
}

static bool same_geom(const kn_gval *a, const kn_gval *b) {
    return a->ndim == b->ndim && a->sym == b->sym && a->dtype == b->dtype &&
           memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

static bool is_producer(const kn_gnode *n) {
    if (!n->op) return false;
    const char *nm = n->op->name;
    return !strcmp(nm, "linear") || !strcmp(nm, "matmul") || !strcmp(nm, "conv2d") ||
           !strcmp(nm, "linear_packed") || !strcmp(nm, "conv2d_packed");
}

typedef struct {
    int nodes[MAX_MEMBERS];
    int n;
    int next; /* external inputs so far */
} chain;

/* Turns chain c into one fused node at the position of its last member. */
static kn_status materialise(kn_graph *g, const chain *c) {
    kn_gnode *last = &g->nodes[c->nodes[c->n - 1]];
    kn_gmember *mem = kn__calloc((size_t)c->n, sizeof *mem);
    int *ext = kn__malloc(sizeof(int) * (size_t)(4 * c->n));
    if (!mem || !ext) {
        kn__free(mem);
        kn__free(ext);
        return kn_last_status();
    }
    int next = 0;
    for (int k = 0; k < c->n; k++) {
        const kn_gnode *n = &g->nodes[c->nodes[k]];
        kn_gmember *m = &mem[k];
        m->op = n->op;
        m->attrs = n->attrs;
        m->nin = n->nin;
        m->dtype = g->vals[n->out[0]].dtype;
        for (int j = 0; j < n->nin; j++) {
            int v = n->in[j], src = -1;
            for (int p = 0; p < k; p++)
                if (g->nodes[c->nodes[p]].out[0] == v) src = p;
            if (src >= 0) {
                m->in[j] = -1 - src;
                continue;
            }
            int e = 0;
            while (e < next && ext[e] != v)
                e++;
            if (e == next) ext[next++] = v;
            m->in[j] = e;
        }
    }
    for (int k = 0; k < c->n - 1; k++)
        g->nodes[c->nodes[k]].dead = true;
    kn__free(last->in);
    last->in = ext;
    last->nin = next;
    last->op = NULL;
    last->mem = mem;
    last->nmem = c->n;
    memset(&last->attrs, 0, sizeof last->attrs);
    last->sym_attr = 0;
    return KN_OK;
}

/* Moves each epilogue group right after its producer (valid: see the file comment). */
static kn_status schedule_epilogues(kn_graph *g) {
    kn_gnode *order = kn__malloc(sizeof *order * (size_t)(g->nnodes ? g->nnodes : 1));
    int *pos = kn__malloc(sizeof(int) * (size_t)(g->nnodes ? g->nnodes : 1));
    if (!order || !pos) {
        kn__free(order);
        kn__free(pos);
        return kn_last_status();
    }
    int k = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].epilogue_of >= 0) continue;
        pos[i] = k;
        order[k++] = g->nodes[i];
        for (int j = i + 1; j < g->nnodes; j++)
            if (g->nodes[j].epilogue_of == i) pos[j] = k, order[k++] = g->nodes[j];
    }
    for (int i = 0; i < g->nnodes; i++)
        if (order[i].epilogue_of >= 0) order[i].epilogue_of = pos[order[i].epilogue_of];
    memcpy(g->nodes, order, sizeof *order * (size_t)g->nnodes);
    for (int i = 0; i < g->nnodes; i++)
        for (int o = 0; o < g->nodes[i].nout; o++)
            g->vals[g->nodes[i].out[o]].node = i;
    kn__free(order);
    kn__free(pos);
    return KN_OK;
}

/* Index of the latest node producing one of node n's inputs (-1: inputs and weights only). */
static int latest_producer(const kn_graph *g, const chain *c) {
    int latest = -1;
    for (int k = 0; k < c->n; k++) {
        const kn_gnode *n = &g->nodes[c->nodes[k]];
        for (int j = 0; j < n->nin; j++) {
            const kn_gval *v = &g->vals[n->in[j]];
            bool member = false;
            for (int p = 0; p < k; p++)
                member |= g->nodes[c->nodes[p]].out[0] == n->in[j];
            if (!member && v->kind == GV_NODE && v->node > latest) latest = v->node;
        }
    }
    return latest;
}

kn_status kn__g_fuse(kn_graph *g, bool epilogue) {
    int *uses = kn__g_uses(g);
    int *chain_of = kn__malloc(sizeof(int) * (size_t)(g->nvals ? g->nvals : 1));
    chain *chains = kn__calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *chains);
    kn_status st = uses && chain_of && chains ? KN_OK : kn_last_status();
    int nch = 0;
    for (int v = 0; st == KN_OK && v < g->nvals; v++)
        chain_of[v] = -1;
    for (int i = 0; st == KN_OK && i < g->nnodes; i++) {
        kn_gnode *n = &g->nodes[i];
        if (!fusable(g, n)) continue;
        const kn_gval *out = &g->vals[n->out[0]];
        int join = -1;
        for (int j = 0; j < n->nin && join < 0; j++) {
            int v = n->in[j], c = chain_of[v];
            if (c >= 0 && uses[v] == 1 && chains[c].n < MAX_MEMBERS &&
                same_geom(&g->vals[v], out) && chains[c].next + n->nin <= KN_ITER_OPS - 1)
                join = c;
        }
        if (join < 0) join = nch++;
        chain *c = &chains[join];
        if (c->n) chain_of[g->nodes[c->nodes[c->n - 1]].out[0]] = -1;
        c->nodes[c->n++] = i;
        c->next += n->nin;
        chain_of[n->out[0]] = join;
    }
    for (int k = 0; st == KN_OK && k < nch; k++) {
        chain *c = &chains[k];
        const kn_gnode *first = &g->nodes[c->nodes[0]];
        int prod = -1;
        if (epilogue) {
            int v = first->in[0];
            const kn_gval *gv = &g->vals[v];
            if (gv->kind == GV_NODE && uses[v] == 1 && is_producer(&g->nodes[gv->node]) &&
                latest_producer(g, c) <= gv->node)
                prod = gv->node;
        }
        if (c->n < 2 && prod < 0) continue;
        int at = c->nodes[c->n - 1];
        if ((st = materialise(g, c)) == KN_OK) g->nodes[at].epilogue_of = prod;
    }
    kn__free(uses);
    kn__free(chain_of);
    kn__free(chains);
    if (st == KN_OK) st = kn__g_compact(g);
    if (st == KN_OK && epilogue) st = schedule_epilogues(g);
    return st;
}

/* ---- running a group ---- */
typedef struct {
    const kn_gnode *n;
    kn_iter_fn fn[MAX_MEMBERS];
    _Alignas(16) char args[MAX_MEMBERS][KN_PW_ARGS];
} group_run;

static void group_kernel(void *arg, int64_t count, char **ptrs, const int64_t *strides) {
    const group_run *r = arg;
    const kn_gnode *n = r->n;
    _Alignas(64) char tmp[MAX_MEMBERS][TILE * 8];
    for (int64_t at = 0; at < count; at += TILE) {
        int64_t len = count - at < TILE ? count - at : TILE;
        for (int k = 0; k < n->nmem; k++) {
            const kn_gmember *m = &n->mem[k];
            char *p[5];
            int64_t s[5];
            size_t es = kn_dtype_size(m->dtype);
            s[0] = (int64_t)es;
            p[0] = k == n->nmem - 1 ? ptrs[0] + at * (int64_t)es : tmp[k];
            for (int j = 0; j < m->nin; j++) {
                int e = m->in[j];
                if (e >= 0) {
                    s[j + 1] = strides[e + 1];
                    p[j + 1] = ptrs[e + 1] + at * strides[e + 1];
                } else {
                    s[j + 1] = (int64_t)kn_dtype_size(n->mem[-1 - e].dtype);
                    p[j + 1] = tmp[-1 - e];
                }
            }
            r->fn[k]((void *)r->args[k], len, p, s);
        }
    }
}

kn_status kn__g_run_group(const kn_gnode *n, kn_tensor *const *in, kn_tensor *out) {
    group_run r;
    r.n = n;
    for (int k = 0; k < n->nmem; k++) {
        const kn_gmember *m = &n->mem[k];
        kn_dtype dt[4];
        for (int j = 0; j < m->nin; j++)
            dt[j] = m->in[j] >= 0 ? in[m->in[j]]->dtype : n->mem[-1 - m->in[j]].dtype;
        kn_status st = m->op->pointwise(m->op, &m->attrs, dt, &r.fn[k], r.args[k]);
        if (st) return st;
    }
    return kn__iter(out, in, n->nin, group_kernel, &r);
}
