/*
 * op_impl.h - the op registry contract. One `kn_opdef` per op, defined in the op family's file
 * (src/ops/<family>.c) and listed in that family's table; registry.c collects the tables.
 *
 * The dispatcher (dispatch.c) runs an op as:
 *   1. every input non-NULL (else return NULL keeping the earlier error);
 *   2. def->infer(c): validate dtypes/shapes/attrs, fill c->out_dtype/out_ndim/out_shape for
 *      every output (errors via kn__err naming the op and the shapes);
 *   3. allocate contiguous outputs (skipped for KN_OPF_VIEW: forward builds c->out itself);
 *   4. def->forward(c) (or forward_ref when the reference is forced);
 *   5. when grad mode is on, the op has a backward and some input requires grad: record a tape
 *      node holding the inputs, attrs and aliases of the outputs;
 *   6. hand the outputs to the current scope.
 * Backward rules receive the saved inputs/outputs and the output gradients and must compute the
 * input gradients WITH OPS (kn_mul, kn_sum, ...), never with raw loops, except through dedicated
 * backward ops registered like any other (e.g. "conv2d_backward_input").
 */
#ifndef KILN_OP_IMPL_H
#define KILN_OP_IMPL_H

#include "core/core_impl.h"

#define KN_MAX_OUTS 4
#define KN_MAX_INS 64

enum {
    KN_OPF_VIEW = 1 << 0,        /* output 0 aliases input 0's storage */
    KN_OPF_ELEMENTWISE = 1 << 1, /* fusion class: pointwise with broadcasting */
    KN_OPF_REDUCTION = 1 << 2,   /* fusion class: reduction */
    KN_OPF_RANDOM = 1 << 3,      /* draws from the RNG */
    KN_OPF_INTERNAL = 1 << 4,    /* backward helper op, not in the public API */
    KN_OPF_MUTATES = 1 << 5,     /* writes to an input (batch_norm running stats) */
};

/* dtype masks */
#define KN_DT(d) (1u << (d))
#define KN_DT_FLOAT (KN_DT(KN_F32) | KN_DT(KN_F64))
#define KN_DT_INT (KN_DT(KN_I8) | KN_DT(KN_U8) | KN_DT(KN_I32) | KN_DT(KN_I64))
#define KN_DT_NUM (KN_DT_FLOAT | KN_DT_INT)
#define KN_DT_ALL (KN_DT_NUM | KN_DT(KN_BOOL) | KN_DT(KN_F16) | KN_DT(KN_BF16))

typedef struct kn_opdef kn_opdef;
/* An elementwise kernel run by kn__iter (below): n elements, ptrs[0] the output (contiguous),
 * ptrs[1..] inputs with byte strides strides[1..] (0 = broadcast). */
typedef void (*kn_iter_fn)(void *args, int64_t n, char **ptrs, const int64_t *strides);
#define KN_PW_ARGS 64
#define KN_ITER_OPS 16 /* output + inputs that kn__iter handles */

typedef struct kn_opctx {
    const kn_opdef *op;
    int nin;
    kn_tensor *const *in;
    const kn_attrs *attrs;
    int nout; /* preset to def->nout; infer may lower it for variable-output ops */
    kn_dtype out_dtype[KN_MAX_OUTS];
    int out_ndim[KN_MAX_OUTS];
    int64_t out_shape[KN_MAX_OUTS][KN_MAX_DIMS];
    kn_tensor *out[KN_MAX_OUTS];
    /* Workspace for ops with a `workspace` hook: the graph executor passes a slice of its arena
     * (planned like any buffer); eagerly it is NULL and the op takes kernel scratch. */
    void *ws;
    size_t ws_bytes;
} kn_opctx;

typedef struct kn_bwctx {
    const kn_opdef *op;
    const kn_attrs *attrs;
    int nin;
    kn_tensor *const *in; /* saved inputs (graph-connected) */
    int nout;
    kn_tensor *const *out;  /* saved outputs (graph-connected through this node) */
    kn_tensor *const *gout; /* gradient of each output; never NULL (zeros when unused) */
    const bool *needs;      /* needs[i]: input i wants a gradient */
    kn_tensor **gin;        /* set gin[i] (new tensor, any scope rules apply) or leave NULL */
} kn_bwctx;

struct kn_opdef {
    const char *name;
    int min_in, max_in; /* max_in -1: up to KN_MAX_INS */
    int nout;
    uint32_t dtypes; /* accepted dtypes of input 0 (KN_DT_* mask) */
    uint32_t flags;
    kn_status (*infer)(kn_opctx *c);
    kn_status (*forward)(kn_opctx *c);
    kn_status (*forward_ref)(kn_opctx *c); /* reference kernel, NULL: forward is the reference */
    kn_status (*backward)(kn_bwctx *c);    /* NULL: not differentiable */
    /* Elementwise ops: the kernel and argument block (at most KN_PW_ARGS bytes) that forward
     * hands to kn__iter for these input dtypes and attrs, so the graph compiler's fused groups
     * run exactly the eager kernel on tiles. NULL: not fusable. Fast kernels only. */
    kn_status (*pointwise)(const kn_opdef *op, const kn_attrs *at, const kn_dtype *in_dt,
                           kn_iter_fn *fn, void *args);
    const char *onnx; /* ONNX op it maps to, or NULL */
    const char *doc;  /* one line */
    /* Bytes of temporary memory forward needs for these inputs (NULL: none planned). */
    size_t (*workspace)(const kn_opctx *c);
};

/* A family's table: `const kn_opdef *const kn__ops_<family>[] = {&op_a, &op_b, NULL};` */
const kn_opdef *kn__op_find(const char *name);

/* Runs an op eagerly (the whole pipeline above). Outputs go to out[0..nout); returns nout or a
 * negative status. ins may contain NULL only if the op allows it (it never does: optional inputs
 * are expressed by a shorter input list). */
int kn__op_run(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs,
               kn_tensor **out, int max_out);
/* Single-output convenience: returns the output or NULL. attrs may be NULL. */
kn_tensor *kn__op1(const kn_opdef *op, kn_tensor *const *in, int nin, const kn_attrs *attrs);
/* Force reference kernels in this thread (tests compare fast vs reference). Returns previous. */
bool kn__force_ref(bool on);
bool kn__forcing_ref(void);

/* ---- attribute access (names are short literals) ---- */
int64_t kn__attr_int(const kn_attrs *a, const char *name, int64_t def);
/* Copies up to max ints, returns the count, or -1 when absent. */
int kn__attr_ints(const kn_attrs *a, const char *name, int64_t *out, int max);
double kn__attr_float(const kn_attrs *a, const char *name, double def);
bool kn__attr_has(const kn_attrs *a, const char *name);

/* ---- helpers for infer/backward ---- */
/* Broadcast shape of a and b into out; KN_ESHAPE naming `op` when incompatible. */
kn_status kn__broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                              int *nout, int64_t *out);
/* Sums g down to `shape` (reverse of broadcasting), with ops. Returns g (+1 ref, scope-adopted)
 * when shapes already match. */
kn_tensor *kn__sum_to(kn_tensor *g, int ndim, const int64_t *shape);
/* Strides that view t as (ndim, shape) without copying, or false (reshape's rule). */
bool kn__view_strides(const kn_tensor *t, int ndim, const int64_t *shape, int64_t *out);
/* Sets out shape i to the shape of tensor t, and dtype. */
void kn__out_like(kn_opctx *c, int i, const kn_tensor *t, kn_dtype dt);
/* Checks that all inputs have the dtype of input 0 (names the op and both dtypes). */
kn_status kn__same_dtype(const kn_opctx *c, int first, int last);

/* ---- element iteration over up to KN_ITER_OPS - 1 operands with broadcasting (elementwise
 * kernels) ---- kn__iter collapses contiguous dims and calls fn(args, n, ptrs, strides_bytes) for
 * runs of the innermost dimension, in parallel over outer indices when the total is large. Operand
 * 0 is the output (contiguous, shape = iteration shape); operands 1.. are inputs broadcast to it.
 */
kn_status kn__iter(kn_tensor *out, kn_tensor *const *ins, int nins, kn_iter_fn fn, void *args);
/* Strides (in elements) of t broadcast to (ndim, shape): 0 where t has size 1 or is missing. */
void kn__bcast_strides(const kn_tensor *t, int ndim, const int64_t *shape, int64_t *strides);

/* Registry of families (one line per family in registry.c). */
extern const kn_opdef *const kn__ops_elementwise[];
extern const kn_opdef *const kn__ops_shape[];
extern const kn_opdef *const kn__ops_reduce[];
extern const kn_opdef *const kn__ops_linalg[];
extern const kn_opdef *const kn__ops_conv[];
extern const kn_opdef *const kn__ops_norm[];
extern const kn_opdef *const kn__ops_loss[];
extern const kn_opdef *const kn__ops_index[];
extern const kn_opdef *const kn__ops_stats[];
/* linear with a pre-packed weight (linalg.c): the graph compiler's prepack pass emits it */
extern const kn_opdef kn__op_linear_packed;
/* conv2d with a pre-packed weight (conv.c): the prepack pass emits it for frozen graphs */
extern const kn_opdef kn__op_conv2d_packed;

/* ---- the autograd layer plugs in here (set by src/autograd/ at load time), so ops do not
 * depend on the layer above them ---- */
typedef kn_status (*kn_record_fn)(const kn_opdef *op, kn_tensor *const *in, int nin,
                                  const kn_attrs *attrs, kn_tensor **out, int nout);
extern kn_record_fn kn__record;
/* The graph layer's tracer plugs in the same way: called after every op run at the top level
 * (not for ops that run inside another op's forward), with its inputs and outputs. */
extern kn_record_fn kn__trace_hook;
/* How many op forwards are running on this thread (0 at the top level). */
int kn__op_depth(void);
/* Grad mode lives with the op pipeline (it is the recording switch). Per thread. */
bool kn__grad_mode(void);
void kn__set_grad_mode(bool on);
/* For in-place ops: refuses a tensor that requires grad while grad mode is on. */
kn_status kn__check_inplace(const char *op, const kn_tensor *t);
#endif
