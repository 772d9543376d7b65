/*
 * kiln/onnx.h - ONNX interop: import a .onnx model as a kiln graph (then compile, run, save it as
 * .kiln like any traced graph), check a model for unsupported ops before running anything,
 * export a kiln graph as an ONNX model, and read ONNX TensorProto files (the inputs and outputs
 * of ONNX's test data).
 *
 * Supported: the ai.onnx domain, opsets 7..17 with per-opset semantics; initializers (raw, typed
 * or external data next to the model) become the graph's weights under their ONNX names.
 * Untrusted files: every length, count and offset is validated; a bad file is KN_EFORMAT naming
 * where (e.g. "graph.node[3] (conv1).attribute[1] (alpha): ..."), an op kiln lacks is
 * KN_EUNSUPPORTED naming the node. Nothing aborts.
 *
 * Shapes: shape arithmetic in the model (Shape -> Gather -> Concat -> Reshape) is evaluated at
 * import. When every input's dim 0 is symbolic ("batch", "N" or unknown) and no example inputs
 * are given, dim 0 stays symbolic in the graph (checked against eager execution at two batch
 * sizes; a model that bakes the batch size in is imported with static shapes and a warning).
 * Other symbolic dims need example inputs.
 *
 * Ownership: the returned graph belongs to the caller (kn_graph_free). Thread safety: import and
 * check may run concurrently on different threads.
 */
#ifndef KILN_ONNX_H
#define KILN_ONNX_H

#include <stdio.h>

#include "kiln/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_onnx_opts {
    /* Example inputs (borrowed), in the order of the model's non-initializer inputs: they fix
     * every shape and dtype (the graph is then static). NULL: made from the declared shapes. */
    kn_tensor *const *example;
    int nexample;
    bool static_batch; /* never keep dim 0 symbolic */
} kn_onnx_opts;

/* Imports a model file (external data is looked up next to it). opts may be NULL. */
kn_graph *kn_onnx_import(const char *path, const kn_onnx_opts *opts);
/* Same from memory; base_dir (may be NULL) is where external data files live. */
kn_graph *kn_onnx_import_mem(const void *data, size_t n, const char *base_dir,
                             const kn_onnx_opts *opts);

/* Pre-flight: lists every unsupported op / opset / dtype at once, with counts, to report (may be
 * NULL). Returns the number of distinct problems (0: importable as far as a static look can
 * tell), or a negative kn_status when the file cannot be read or parsed. */
int kn_onnx_check(const char *path, FILE *report);
int kn_onnx_check_mem(const void *data, size_t n, FILE *report);

/* Reads a serialized TensorProto file (input_0.pb). */
kn_tensor *kn_onnx_read_tensor(const char *path);

/* ---- export: a kiln graph as an ONNX model ----
 * Writes the graph as traced (a traced, loaded or imported graph; compiling does not matter) as
 * an ai.onnx ModelProto at `opset` 13..17 (0: 13), atomically (temp file + rename). Weights
 * become initializers under their names (made unique); the symbolic batch stays the dim_param
 * "batch". Ops: the inference ops of kiln (linear, conv2d, pools, batch_norm in eval mode,
 * layer_norm, group_norm, elementwise and reductions, shape ops, softmax, gather, ...); a node
 * without an ONNX mapping (training ops, losses, backward ops) is KN_EUNSUPPORTED naming the op
 * and the node, and nothing is written. Errors: KN_EINVAL (NULL, bad opset), KN_EIO, KN_ENOMEM,
 * KN_ELIMIT (over protobuf's 2 GiB). Thread safety: like reading the graph (one thread at a
 * time per graph). */
kn_status kn_onnx_export(kn_graph *g, const char *path, int opset);

#ifdef __cplusplus
}
#endif
#endif
