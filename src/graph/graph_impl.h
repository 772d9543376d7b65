/*
 * graph_impl.h - the graph IR shared by trace.c (building), passes.c / fuse.c (rewriting),
 * plan.c (memory plan + executor) and io/graph_file.c (serialisation).
 *
 * IR: values and nodes in arrays. A value is an input, a weight (a tensor the graph holds), or
 * output `out_index` of node `node`. Nodes are kept in topological order (every input of node i is
 * an input, a weight, or an output of a node before i). Passes mostly mark nodes dead and
 * rewrite value uses, and `kn__g_compact` renumbers; the few that move a node (early updates,
 * the residual pass, epilogue scheduling) keep the order topological and update vals[].node.
 *
 * Symbolic batch: g->batch is the batch size at trace time (0: static). `sym` on a value marks
 * the dims that follow the batch; `sym_attr` on a node marks attribute entries proportional to
 * the batch, k * batch (reshape's "shape"[0] after a flatten: k = 1; batch * heads in attention):
 * binding another batch B rewrites them to k * B.
 */
#ifndef KILN_GRAPH_IMPL_H
#define KILN_GRAPH_IMPL_H

#include "kiln/graph.h"
#include "ops/op_impl.h"

enum { GV_INPUT = 1, GV_WEIGHT, GV_NODE };

typedef struct kn_gval {
    int kind;
    kn_dtype dtype;
    int ndim;
    int64_t shape[KN_MAX_DIMS]; /* as traced */
    uint8_t sym;                /* bit d: dim d is the batch */
    int node, out_index;        /* GV_NODE */
    char *name;                 /* inputs and weights (owned) */
    kn_tensor *data;            /* GV_WEIGHT (owned reference) */
    bool constant;              /* GV_WEIGHT that is a true constant (folded, scalars) */
} kn_gval;

/* One op of a fused elementwise group: its inputs are external (>= 0: index into the group
 * node's `in`) or earlier members (-1 - k: member k's result). */
typedef struct kn_gmember {
    const kn_opdef *op;
    kn_attrs attrs;
    int nin;
    int in[4];
    kn_dtype dtype;
} kn_gmember;

typedef struct kn_gnode {
    const kn_opdef *op; /* NULL for a fused group (members below) */
    int nin, nout;
    int *in; /* value ids (owned) */
    int out[KN_MAX_OUTS];
    kn_attrs attrs;
    uint32_t sym_attr; /* bit (8*a + j): attrs.a[a].ints[j] is the batch size */
    bool dead;
    /* fused group (op == NULL): members run on tiles in order; the last is the result */
    int nmem;
    kn_gmember *mem;
    int epilogue_of; /* >= 0: group runs right after that node, in place on its output */
} kn_gnode;

typedef struct kn_plan kn_plan;

struct kn_graph {
    kn_gval *vals;
    int nvals, cap_vals;
    kn_gnode *nodes;
    int nnodes, cap_nodes;
    int *inputs, ninputs;
    int *outputs, noutputs;
    char **out_names;
    int64_t batch; /* batch size at trace time; 0 = static shapes */
    int host_reads;
    char first_read[160]; /* description of the first host read */
    /* compile state */
    kn_graph *traced; /* a copy of the graph as traced (compile restarts from it) */
    bool compiled;
    kn_compile_opts copts;
    int traced_nodes;
    char *pass_log; /* per-pass node counts, for kiln info --plan */
    size_t pass_log_len, pass_log_cap;
    kn_plan *plans; /* linked list, one per batch size */
    int plans_built;
    bool quiet_plans; /* checks run by the builder (ONNX import): new plans are not logged */
    bool profile;     /* kn_graph_profile: runs time every node */
    int64_t last_arena;
};

/* ---- ir.c ---- */
kn_graph *kn__g_new(void);
int kn__g_add_value(kn_graph *g, int kind, kn_dtype dt, int ndim, const int64_t *shape);
/* Adds a node; returns its index or -1 (error set). in is copied. */
int kn__g_add_node(kn_graph *g, const kn_opdef *op, const int *in, int nin, const kn_attrs *at,
                   int nout);
int kn__g_add_weight(kn_graph *g, const char *name, kn_tensor *t, bool constant);
kn_graph *kn__g_clone(const kn_graph *g);
/* Makes g batch-symbolic from a second trace h of the same function at another batch (g at b, h
 * at b2, both static): they must match node for node, constants byte for byte; value dims and
 * int attr entries that differ must be k * batch in both (they become sym / sym_attr). KN_ESHAPE
 * naming the first difference otherwise (g unchanged). */
kn_status kn__g_symbolic_from(kn_graph *g, const kn_graph *h, int64_t b, int64_t b2);
/* Turns input k into a constant weight holding t (retained; same dtype and shape): it leaves the
 * signature. Only before compiling. */
kn_status kn__g_freeze_input(kn_graph *g, int k, kn_tensor *t);
/* Replaces every use of value `from` (node inputs and graph outputs) by `to`. */
void kn__g_replace(kn_graph *g, int from, int to);
/* Drops dead nodes and values nobody references; renumbers. */
kn_status kn__g_compact(kn_graph *g);
/* uses[v] = number of node inputs + graph outputs referring to v (caller frees). */
int *kn__g_uses(const kn_graph *g);
bool kn__g_is_output(const kn_graph *g, int v);
/* Infers every node's output shapes for a batch size (0: as traced) into shapes[v]/ndims[v];
 * rewrites sym_attr entries. Errors name the node. */
kn_status kn__g_infer(const kn_graph *g, int64_t batch, int64_t (*shapes)[KN_MAX_DIMS], int *ndims);
/* The node's attrs with sym_attr entries set to `batch` (batch 0: unchanged). */
void kn__g_bind_attrs(const kn_gnode *n, int64_t batch, int64_t traced_batch, kn_attrs *out);
void kn__g_log(kn_graph *g, const char *fmt, ...) KN_PRINTF(2, 3);
const char *kn__g_node_name(const kn_gnode *n); /* op name or "fused" */

/* ---- trace.c ---- */
/* kn_trace that also hands back fn's outputs (+1 each, at most 16) from the traced run. */
kn_graph *kn__trace_outputs(kn_traced_fn fn, void *user, kn_tensor *const *inputs, int nin,
                            const kn_trace_opts *o, kn_tensor **outs, int *nouts);

/* Pauses this thread's trace (ops run but are not recorded; returns the tracer, NULL when none)
 * and resumes it. The ONNX importer computes constant shape arithmetic this way. */
void *kn__trace_pause(void);
void kn__trace_resume(void *tracer);

/* ---- passes.c / fuse.c ---- */
kn_status kn__g_dce(kn_graph *g);
kn_status kn__g_cse(kn_graph *g);
kn_status kn__g_fold(kn_graph *g, bool freeze);
kn_status kn__g_simplify(kn_graph *g);
kn_status kn__g_conv_bn(kn_graph *g);
kn_status kn__g_prepack(kn_graph *g);
kn_status kn__g_fuse_residuals(kn_graph *g);
kn_status kn__g_fuse(kn_graph *g, bool epilogue);
kn_status kn__g_early_updates(kn_graph *g);
kn_status kn__g_fuse_updates(kn_graph *g);

/* ---- interop.c ---- */
/* Multiply-adds of a GEMM or convolution node (matmul, linear, linear_packed, conv2d,
 * conv2d_packed, conv2d_backward_input/weight) from its first two inputs' and its output's
 * shapes; -1 for other ops. The inter-op cost model and the profiler's GFLOP/s use it. */
double kn__g_node_macs(const kn_gnode *n, const int64_t *a, int na, const int64_t *b, int nb,
                       const int64_t *o, int no);
/* Concurrent windows of the schedule for shapes sh/nd: win_end[s] = e > s when nodes [s, e) run
 * as two lanes (lane[k] = 0 or 1), else 0. Nothing when g->copts disables KN_PASS_INTEROP. */
kn_status kn__g_interop(const kn_graph *g, int64_t (*sh)[KN_MAX_DIMS], const int *nd, int *win_end,
                        uint8_t *lane);

/* ---- plan.c ---- */
void kn__plan_free_all(kn_graph *g);
kn_plan *kn__plan_get(kn_graph *g, int64_t batch);
int64_t kn__plan_arena(const kn_plan *p);
kn_status kn__plan_run(kn_graph *g, kn_plan *p, kn_tensor *const *in, kn_tensor *const *out);
void kn__plan_print(const kn_graph *g, const kn_plan *p, FILE *f);

/* ---- fused kernels (fuse.c) ---- */
/* Elementwise kernel of a member: fills fn/args the way the op's forward calls kn__iter. */
kn_status kn__g_run_group(const kn_gnode *n, kn_tensor *const *in, kn_tensor *out);
#endif
