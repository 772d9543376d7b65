/*
 * onnx_impl.h - the contract between the ONNX importer (import.c) and the op converters
 * (ops_*.c, one file per ONNX op family). Internal.
 *
 * Import runs the ONNX graph once, node by node, on example inputs with kiln's eager ops while the
 * graph tracer records them (kn_trace): each converter computes its node's outputs from its
 * inputs with ordinary kiln ops (kn_add, kn_conv2d, kn_op_call, ...), so the imported graph is
 * made of registry ops and compiles like any traced graph.
 *
 * Static values: initializers, Constant nodes, Shape/Size results and everything computed only
 * from those are "static". A node whose inputs are all static runs with the tracer paused (its
 * result becomes a constant of the graph): this is how ONNX's shape arithmetic
 * (Shape -> Gather -> Concat -> Reshape) turns into kiln's attribute-carrying ops. Converters read
 * host values (a Reshape's shape, Slice's starts) only from static inputs, with kn__ox_in_ints;
 * reading a value computed from the model's inputs is an error naming the input.
 *
 * A converter returns KN_OK with every requested output set, or an error (usually
 * KN_EUNSUPPORTED) whose message says what is not supported; the importer prefixes the node.
 * Tensors converters make belong to the current scope (import runs inside one).
 */
#ifndef KILN_ONNX_IMPL_H
#define KILN_ONNX_IMPL_H

#include "core/core_impl.h"
#include "kiln/ops.h"
#include "onnx/onnx_model.h"
#include "ops/op_impl.h"

#define KN_OX_MAX_IO 64

typedef struct kn_ox {
    struct kn_ox_imp *imp; /* the importer (private) */
    const kn_onnx_node *node;
    int64_t opset; /* of the ai.onnx domain */
    int nin;       /* inputs named by the node (absent optional ones are NULL below) */
    kn_tensor *in[KN_OX_MAX_IO];
    bool in_static[KN_OX_MAX_IO];
    int nout; /* outputs named by the node (an empty name is an unused optional output) */
    bool want[KN_OX_MAX_IO];
    kn_tensor *out[KN_OX_MAX_IO]; /* set by the converter */
} kn_ox;

typedef kn_status (*kn_ox_fn)(kn_ox *x);

/* One ONNX op: supported for opsets since..until (until 0: no upper bound). */
typedef struct kn_ox_op {
    const char *name;
    kn_ox_fn fn;
    int since, until;
    bool shape_only; /* the outputs depend only on input shapes (Shape, Size): always static */
} kn_ox_op;

/* Families (one table per ops_*.c, terminated by a {NULL} entry). */
extern const kn_ox_op kn__ox_ops_math[];
extern const kn_ox_op kn__ox_ops_nn[];
extern const kn_ox_op kn__ox_ops_shape[];
extern const kn_ox_op kn__ox_ops_reduce[];
extern const kn_ox_op kn__ox_ops_loss[];
extern const kn_ox_op kn__ox_ops_resize[];
extern const kn_ox_op kn__ox_ops_rnn[];
extern const kn_ox_op kn__ox_ops_misc[];
extern const kn_ox_op kn__ox_ops_quant[];

/* The converter for op_type at this opset: NULL when unknown; *known (may be NULL) is set when
 * the op exists but not at this opset. */
const kn_ox_op *kn__ox_find(const char *op_type, size_t len, int64_t opset, bool *known);

/* Whether the node is op `name` (converters shared by several ops). */
bool kn__ox_is(const kn_ox *x, const char *name);

/* ---- attributes (names are literals; the node's attribute of that name, any declared type) */
const kn_onnx_attr *kn__ox_attr(const kn_ox *x, const char *name);
int64_t kn__ox_int(const kn_ox *x, const char *name, int64_t def);
double kn__ox_float(const kn_ox *x, const char *name, double def);
/* Copies up to max ints; returns the count, -1 when absent, or a negative status (KN_ELIMIT
 * naming the attribute when there are more than max). */
int kn__ox_ints(const kn_ox *x, const char *name, int64_t *out, int max);
int kn__ox_floats(const kn_ox *x, const char *name, float *out, int max);
/* The string attribute as a NUL-terminated copy in buf (truncated), or def when absent. */
const char *kn__ox_str(const kn_ox *x, const char *name, const char *def, char *buf, size_t n);

/* ---- inputs ---- */
/* Input i or NULL when absent (beyond nin, or an empty name). */
kn_tensor *kn__ox_in(const kn_ox *x, int i);
/* Input i that must be present: NULL with an error naming the input otherwise. */
kn_tensor *kn__ox_need(const kn_ox *x, int i);
/* The values of static input i as int64 (any numeric dtype, truncating), at most max of them;
 * returns the count or a negative status (not static: KN_EUNSUPPORTED naming the input). A graph
 * input read this way while importing with example inputs is frozen to the example's value: it
 * becomes a constant of the graph and leaves the signature (logged). */
int kn__ox_in_ints(const kn_ox *x, int i, int64_t *out, int max);
/* Same as doubles. */
int kn__ox_in_doubles(const kn_ox *x, int i, double *out, int max);

/* ---- outputs ---- */
/* Stores output i (the tensor stays owned by the scope). NULL: returns the pending error. */
kn_status kn__ox_set(kn_ox *x, int i, kn_tensor *t);

/* ---- helpers shared by converters ---- */
/* Normalises an axis in [-rank, rank) to [0, rank); KN_EINVAL naming `what` when out of range. */
kn_status kn__ox_axis(int64_t axis, int rank, const char *what, int *out);
/* kiln dtype of an ONNX TensorProto.DataType, or -1 when kiln has no such dtype. */
int kn__ox_dtype(int32_t onnx_dt);
const char *kn__ox_dtype_name(int32_t onnx_dt);
/* A kiln tensor from an ONNX tensor (copied). Raw, typed and external data (a file under
 * base_dir, which may be NULL: then external data is an error). */
kn_tensor *kn__ox_tensor(const kn_onnx_tensor *t, const char *base_dir);
/* A 0-d tensor of x's dtype. */
kn_tensor *kn__ox_scalar_like(const kn_tensor *x, double v);
#endif
