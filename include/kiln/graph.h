/*
 * kiln/graph.h - static graphs: trace a function or module into an SSA graph, compile it (dead code
 * and common subexpression elimination, constant folding, algebraic simplification, conv+batchnorm
 * folding, elementwise fusion, epilogue fusion, a static memory plan) and run it with no
 * allocation per run. The same registry ops and kernels as eager mode run the graph, so graph
 * results equal eager results bit for bit (each pass that could change rounding says so).
 *
 * Ownership: kn_trace* return a graph the caller frees with kn_graph_free. A graph keeps a
 * reference to every weight it captured (the module's tensors: later in-place updates to them are
 * seen by the graph, as in a frozen-for-inference module that is then fine-tuned). Tensors
 * returned by kn_graph_run follow the usual rules of kiln/core.h (new references, scope-owned).
 *
 * Symbolic batch: unless static_batch is set, dim 0 of every input is the symbolic dimension
 * "batch"; one graph runs any batch size. A memory plan is built per bound batch size and cached,
 * the 8 most recently used at most (kn_graph_stats reports how many plans were built: a new
 * batch size is a counted recompile, also logged as a warning).
 *
 * Thread safety: a graph runs on one thread at a time (its arena is shared between runs); kernels
 * parallelise internally. Different graphs may run concurrently.
 */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include "kiln/nn.h"
#include "kiln/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_graph kn_graph;

/* A function to trace: reads in[0..nin), stores up to max_out new tensors (like op results) in
 * out and returns how many, or a negative kn_status. It may call any kiln op and module. */
typedef int (*kn_traced_fn)(void *user, kn_tensor *const *in, int nin, kn_tensor **out,
                            int max_out);

typedef struct kn_trace_opts {
    const char *const *input_names;  /* NULL: "input", "input_1", ... */
    const char *const *output_names; /* NULL: "output", "output_1", ... */
    const kn_named_tensor *weights;  /* names for captured tensors (e.g. a state dict) */
    int nweights;
    bool static_batch; /* every dim static (default: dim 0 of each input is "batch") */
} kn_trace_opts;

/* Runs fn once on the example inputs, recording every op it calls. Tensors fn uses that are not
 * computed from the inputs become weights (named from opts->weights, else "const_N"). Host reads
 * of traced values (kn_item, kn_tensor_data, kn_tensor_get, kn_tensor_read) are recorded as
 * guards: such a trace may have frozen a data-dependent branch; kn_trace_check tells. Errors: the
 * function's own error, KN_EUNSUPPORTED for an output not computed by ops, KN_ESHAPE when the
 * batch dimension cannot be symbolic (set static_batch). */
kn_graph *kn_trace(kn_traced_fn fn, void *user, kn_tensor *const *inputs, int nin,
                   const kn_trace_opts *opts);
/* Traces kn_module_forward(m, .) on example (in eval mode, restored afterwards) with weights named
 * like the state dict; input "input", output "output". */
kn_graph *kn_trace_module(kn_module *m, kn_tensor *example);
/* Re-runs fn eagerly on fresh inputs (tracing it again) and runs the graph on them; refuses the
 * trace (KN_EMISUSE, naming the first differing node and any host read before it) when the ops
 * differ or an output differs beyond rtol 1e-5 / atol 1e-6. A batch-symbolic graph is also
 * compared with eager mode at one row fewer, which catches values the host computed from the
 * batch size (1.0 / kn_tensor_dim(x, 0)) and the trace baked in. KN_OK when they agree. */
kn_status kn_trace_check(kn_graph *g, kn_traced_fn fn, void *user, kn_tensor *const *fresh,
                         int nin);
/* Number of host reads recorded while tracing (0: the trace cannot hide a branch on data). */
int kn_graph_host_reads(const kn_graph *g);
void kn_graph_free(kn_graph *g); /* NULL is a no-op */

/* ---- compile ---- */
enum {
    KN_PASS_DCE = 1 << 0,      /* dead code elimination */
    KN_PASS_CSE = 1 << 1,      /* common subexpression elimination */
    KN_PASS_FOLD = 1 << 2,     /* constant folding (of weights too when freeze is set) */
    KN_PASS_SIMPLIFY = 1 << 3, /* x*1, x/1, x-0, reshape of reshape, identity casts/views, ... */
    KN_PASS_CONV_BN = 1 << 4,  /* conv2d followed by eval batch_norm -> one conv (freeze only) */
    KN_PASS_FUSE = 1 << 5,     /* chains of elementwise ops -> one pass over memory */
    KN_PASS_EPILOGUE = 1 << 6, /* elementwise ops after linear/matmul/conv run on its output */
    KN_PASS_INPLACE = 1 << 7,  /* the planner lets elementwise ops overwrite a dying input */
    KN_PASS_EARLY_UPDATE = 1 << 8, /* optimizer updates run as soon as nothing else reads */
    KN_PASS_UPDATE_FUSE = 1 << 9,  /* a weight-gradient GEMM is applied block by block */
    KN_PASS_PREPACK = 1 << 10,     /* f32 linear weights packed once for the GEMM (freeze only) */
    KN_PASS_INTEROP = 1 << 11,     /* independent heavy nodes run side by side, a thread each */
    KN_PASS_RESIDUAL = 1 << 12,    /* relu(add(packed conv, shortcut)) -> one node (freeze only) */
    KN_PASS_ALL = 0x1fff,
};
typedef struct kn_compile_opts {
    unsigned disable; /* KN_PASS_* bits to switch off (bisecting) */
    bool freeze;      /* weights are constants (inference): enables folding them, conv+bn and
                         prepacking */
} kn_compile_opts;
/* Runs the passes (NULL opts: all passes, no freeze). Compiling again starts from the traced
 * graph, so passes can be toggled. Plans are built lazily per batch size. $KILN_GRAPH_DISABLE
 * (e.g. "fuse,cse", or "all") switches passes off in every compile, for bisecting. */
kn_status kn_graph_compile(kn_graph *g, const kn_compile_opts *opts);

/* ---- run ---- */
/* Runs the compiled graph (compiling with defaults first if needed). Inputs must match the
 * signature's dtypes and shapes (any size for the batch dim); outputs are new tensors. */
int kn_graph_run(kn_graph *g, kn_tensor *const *inputs, int nin, kn_tensor **outputs, int max_out);
/* Same, writing into caller-provided contiguous outputs of the right dtype and shape: no
 * allocation at all once the plan for this batch size exists. */
kn_status kn_graph_run_into(kn_graph *g, kn_tensor *const *inputs, int nin,
                            kn_tensor *const *outputs, int nout);

/* ---- introspection ---- */
typedef struct kn_graph_sig {
    const char *name; /* borrowed */
    kn_dtype dtype;
    int ndim;
    int64_t shape[KN_MAX_DIMS]; /* -1 for the symbolic batch dim */
} kn_graph_sig;
int kn_graph_num_inputs(const kn_graph *g);
int kn_graph_num_outputs(const kn_graph *g);
kn_status kn_graph_input(const kn_graph *g, int i, kn_graph_sig *out);
kn_status kn_graph_output(const kn_graph *g, int i, kn_graph_sig *out);

typedef struct kn_graph_stats {
    int traced_nodes;      /* as traced */
    int nodes;             /* after the passes (a fused group counts once) */
    int fused_groups;      /* elementwise groups and epilogues */
    int weights;           /* weight tensors of the model (as traced, not compile artifacts) */
    int64_t weight_params; /* their element count */
    int64_t weight_bytes;
    int plans_built;     /* memory plans built so far (one per batch size seen) */
    int64_t arena_bytes; /* of the most recent plan (0 before the first run) */
} kn_graph_stats;
kn_status kn_graph_stats_get(kn_graph *g, kn_graph_stats *out);
/* Peak arena bytes for a batch size (builds that plan if needed). */
int64_t kn_graph_arena_bytes(kn_graph *g, int64_t batch);
/* Prints signatures, op histogram and weights; with plan, also the nodes before and after each
 * pass, the fused groups and the arena of the plan for `batch`. */
kn_status kn_graph_print(kn_graph *g, FILE *f, bool plan, int64_t batch);

/* ---- profiling (the role of ONNX Runtime's enable_profiling / torch.profiler) ----
 * Switches per-node timing on or off (off by default). While on, every run adds each node's
 * wall time to its plan's counters (two clock reads per node; nodes running side by side in two
 * lanes are each timed by their own thread). Switching on, or off and on, resets the counters. */
kn_status kn_graph_profile(kn_graph *g, bool on);
/* Prints the profiled nodes of the plan for `batch` (ignored for static graphs), slowest first:
 * op, output shape, mean ms per run, share, cumulative share and, for convolutions and GEMMs,
 * GFLOP/s. top > 0 prints only that many. KN_EINVAL when that plan has no profiled run. */
kn_status kn_graph_profile_print(kn_graph *g, FILE *f, int64_t batch, int top);

/* ---- compiled training steps: forward, loss, backward and optimizer update as one graph ----
 * The tf.function + GradientTape of kiln. The backward part is the registry's backward rules
 * recorded while the step runs once eagerly under the tracer; the update is one
 * "optimizer_update" node per parameter running the optimizer's own fused kernel. Shapes are
 * static (a batch of another size is traced and compiled once more, and counted), because a
 * loss's mean over the batch bakes the batch size into the backward pass. */
typedef struct kn_train_step kn_train_step;
/* loss_fn computes a one-element loss from the step's inputs (e.g. images, labels) with any
 * modules and ops, storing it in out[0] and returning 1. The step trains opt's parameters. opts:
 * passes to switch off (freeze is ignored). Errors: KN_EINVAL for NULL arguments. */
kn_train_step *kn_train_step_new(kn_traced_fn loss_fn, void *user, kn_optimizer *opt,
                                 const kn_compile_opts *opts);
/* One training step; *loss (may be NULL) gets the loss. The first step for an input shape runs
 * eagerly while it is traced (a real step), later ones replay the compiled graph. Parameters,
 * optimizer state and the lr schedule behave as with kn_optimizer_step; .grad is not written
 * (gradients live in the graph's arena). */
kn_status kn_train_step_run(kn_train_step *s, kn_tensor *const *inputs, int nin, double *loss);
/* The graph of the most recent step (borrowed; NULL before the first step). */
kn_graph *kn_train_step_graph(kn_train_step *s);
void kn_train_step_free(kn_train_step *s); /* NULL is a no-op */

/* ---- files: the graph travels in a .kiln file's metadata, its weights as its tensors ---- */
/* Writes the traced graph (before passes: they are re-run on load), its signatures, weights,
 * arena size for batch 1 and provenance; atomically. The file stays a safetensors file. */
kn_status kn_graph_save(kn_graph *g, const char *path);
/* Loads a graph saved by kn_graph_save. Every field is validated (ops exist, arities, value ids,
 * attrs, weight shapes): a bad file gives KN_EFORMAT naming the problem. */
kn_graph *kn_graph_load(const char *path);

#ifdef __cplusplus
}
#endif
#endif
