/*
 * onnx_model.h - the second layer of kiln's ONNX import (issue #5): parses an ONNX ModelProto
 * held in memory into a validated, zero-copy description (model > graph > nodes, attributes,
 * tensors, value infos). Internal; not installed. Knows the ONNX schema (onnx.proto field
 * numbers) but not ONNX operator semantics: mapping ops onto kiln is the next layer's job.
 *
 * Zero-copy: every string and payload is a view into the caller's buffer, which must outlive
 * the model. Arrays (nodes, dims, decoded attribute ints/floats, ...) are allocated with
 * kn__malloc and all owned by the one kn_onnx_model, freed by kn__onnx_model_free.
 *
 * Validation (any failure: NULL, KN_EFORMAT, message naming the path, e.g.
 * "graph.node[3] (conv1).attribute[1] (alpha).t.dims[0]: negative dimension -2"):
 * wire types of every known field; dims >= 0, at most KN_ONNX_MAX_DIMS of them, element count
 * overflow-checked; data_type in 0 .. KN_ONNX_DTYPE_MAX (0 only without data); raw_data size ==
 * numel x element size, typed-field count == numel (x2 for complex), the typed field matching
 * data_type, at most one payload kind; external tensors carry no inline payload; attribute type
 * in 0 .. 14; value-info dim_value >= 0. Nesting deeper than KN_PB_MAX_DEPTH messages or more
 * than KN_ONNX_MAX_COUNT items in one repeated field: KN_ELIMIT. Out of memory: KN_ENOMEM.
 * Unknown fields are skipped (forward compatibility). Nothing aborts on any input.
 *
 * Not parsed (skipped like unknown fields): doc strings, metadata_props, functions, training
 * info, sparse tensors, attribute fields tensors / graphs / type_protos, non-tensor TypeProtos
 * (sequence, map, optional: value_info.has_tensor_type is false).
 */
#ifndef KILN_ONNX_MODEL_H
#define KILN_ONNX_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "onnx/pb.h"

#define KN_ONNX_MAX_DIMS 64          /* dims per tensor / shape (kiln itself uses <= 8) */
#define KN_ONNX_MAX_COUNT (1u << 22) /* items in one repeated field (nodes, inputs, ...) */
#define KN_ONNX_DTYPE_MAX 24         /* TensorProto.DataType: FLOAT=1 .. FLOAT8E8M0=24 */

/* TensorProto.DataType values kiln cares about by name. */
enum {
    KN_ONNX_UNDEFINED = 0,
    KN_ONNX_FLOAT = 1,
    KN_ONNX_UINT8 = 2,
    KN_ONNX_INT8 = 3,
    KN_ONNX_INT32 = 6,
    KN_ONNX_INT64 = 7,
    KN_ONNX_STRING = 8,
    KN_ONNX_BOOL = 9,
    KN_ONNX_FLOAT16 = 10,
    KN_ONNX_DOUBLE = 11,
};

/* AttributeProto.AttributeType. */
enum {
    KN_ONNX_ATTR_UNDEFINED = 0,
    KN_ONNX_ATTR_FLOAT = 1,
    KN_ONNX_ATTR_INT = 2,
    KN_ONNX_ATTR_STRING = 3,
    KN_ONNX_ATTR_TENSOR = 4,
    KN_ONNX_ATTR_GRAPH = 5,
    KN_ONNX_ATTR_FLOATS = 6,
    KN_ONNX_ATTR_INTS = 7,
    KN_ONNX_ATTR_STRINGS = 8,
    KN_ONNX_ATTR_MAX = 14 /* TYPE_PROTOS */
};

/* A string or bytes view into the input: not NUL-terminated, may contain NULs, not checked to be
 * UTF-8. An absent string is {p, 0} (p may be NULL). */
typedef struct kn_onnx_str {
    const char *p;
    size_t n;
} kn_onnx_str;

/* StringStringEntryProto (external_data). */
typedef struct kn_onnx_kv {
    kn_onnx_str key, value;
} kn_onnx_kv;

/* TensorProto. Exactly one of: no payload; raw (has_raw); a typed field (typed_field != 0);
 * external (data in another file, described by external_data: location, offset, length...). */
typedef struct kn_onnx_tensor {
    kn_onnx_str name;
    int32_t data_type; /* 0 .. KN_ONNX_DTYPE_MAX */
    int ndims;
    int64_t *dims; /* ndims values, each >= 0; NULL when ndims == 0 (a scalar) */
    int64_t numel; /* product of dims (1 for a scalar), fits int64 and size_t */
    bool has_raw;  /* raw_data present: little-endian bytes, size checked against numel */
    kn_onnx_str raw;
    int typed_field;    /* 0 or the field holding the data: 4 float_data, 5 int32_data,
                           6 string_data, 7 int64_data, 10 double_data, 11 uint64_data */
    size_t typed_count; /* elements in it: numel, 2*numel (complex) or ceil(numel/2) (4-bit) */
    /* When the typed field came as ONE packed field (the usual case): its payload, elements
     * being fixed32 (4), fixed64 (10) or varints (5, 7, 11). Otherwise p == NULL: read the
     * values with kn__onnx_tensor_values. */
    kn_pb typed;
    kn_onnx_str *strings; /* typed_field == 6: typed_count views */
    bool external;        /* data_location == EXTERNAL */
    size_t n_external;
    kn_onnx_kv *external_data;
    kn_pb msg; /* the TensorProto's bytes (used by kn__onnx_tensor_values) */
} kn_onnx_tensor;

/* TensorShapeProto.Dimension: a value, a symbolic parameter, or neither (unknown). */
typedef struct kn_onnx_dim {
    bool has_value;
    int64_t value; /* >= 0 */
    kn_onnx_str param;
} kn_onnx_dim;

/* ValueInfoProto with a tensor type. has_shape false: rank unknown. */
typedef struct kn_onnx_value_info {
    kn_onnx_str name;
    bool has_tensor_type;
    int32_t elem_type; /* 0 .. KN_ONNX_DTYPE_MAX */
    bool has_shape;
    int ndims;
    kn_onnx_dim *dims;
} kn_onnx_value_info;

struct kn_onnx_graph;

/* AttributeProto. `type` is the declared type (0 when an old exporter left it out); every field
 * present is filled regardless. floats / ints are decoded copies (packed or not in the file). */
typedef struct kn_onnx_attr {
    kn_onnx_str name;
    int32_t type; /* KN_ONNX_ATTR_*, 0 .. KN_ONNX_ATTR_MAX */
    float f;
    int64_t i;
    kn_onnx_str s;
    kn_onnx_tensor *t;       /* NULL when absent */
    struct kn_onnx_graph *g; /* NULL when absent */
    size_t n_floats, n_ints, n_strings;
    float *floats;
    int64_t *ints;
    kn_onnx_str *strings;
} kn_onnx_attr;

/* NodeProto. An empty input name is an absent optional input. */
typedef struct kn_onnx_node {
    kn_onnx_str op_type, domain, name;
    size_t n_inputs, n_outputs, n_attrs;
    kn_onnx_str *inputs, *outputs;
    kn_onnx_attr *attrs;
} kn_onnx_node;

/* GraphProto (the main graph or a subgraph). */
typedef struct kn_onnx_graph {
    kn_onnx_str name;
    size_t n_nodes, n_initializers, n_inputs, n_outputs, n_value_infos;
    kn_onnx_node *nodes;
    kn_onnx_tensor *initializers;
    kn_onnx_value_info *inputs, *outputs, *value_infos;
} kn_onnx_graph;

/* OperatorSetIdProto (empty domain = the default "ai.onnx"). */
typedef struct kn_onnx_opset {
    kn_onnx_str domain;
    int64_t version;
} kn_onnx_opset;

/* ModelProto. A graph is required. */
typedef struct kn_onnx_model {
    int64_t ir_version;
    kn_onnx_str producer_name;
    size_t n_opsets;
    kn_onnx_opset *opsets;
    kn_onnx_graph graph;
    void *arena_; /* private: the allocations owned by the model */
} kn_onnx_model;

/* Parses data[0, n) (not copied: it must outlive the result). NULL + error on failure. */
kn_onnx_model *kn__onnx_model_parse(const void *data, size_t n);
/* Frees the model and every array it owns; NULL is a no-op. */
void kn__onnx_model_free(kn_onnx_model *m);

/* A standalone TensorProto (the input_N.pb / output_N.pb files of ONNX's tests). */
typedef struct kn_onnx_tensor_file {
    kn_onnx_tensor t;
    void *arena_; /* private */
} kn_onnx_tensor_file;
/* Parses one serialized TensorProto (zero-copy like kn__onnx_model_parse). NULL + error. */
kn_onnx_tensor_file *kn__onnx_tensor_parse(const void *data, size_t n);
void kn__onnx_tensor_file_free(kn_onnx_tensor_file *f); /* NULL is a no-op */

/* Decodes t's typed field (typed_field 4, 5, 7, 10 or 11) into out[0, typed_count) as raw
 * 64-bit values: fixed32 bits (use kn__pb_f32), fixed64 bits (kn__pb_f64) or varint values
 * (kn__pb_int64 / kn__pb_int32). Cannot fail on a parsed tensor; KN_EINVAL for another field. */
kn_status kn__onnx_tensor_values(const kn_onnx_tensor *t, uint64_t *out);

#endif
