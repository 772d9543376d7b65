/*
 * fuzz_onnx_model.c - libFuzzer target for the ONNX ModelProto parser (src/onnx/onnx_model.h):
 * parses the input as a model and, when it parses, walks what came out (every string view and
 * tensor payload must lie inside the input) and decodes each tensor's values; then parses the
 * same bytes as a standalone TensorProto (kn__onnx_tensor_parse) and walks that. Seed corpus: the
 * model.onnx files of Debian's libonnx-testdata, e.g.
 *   mkdir -p corpus && find /usr/share/libonnx-testdata/data -name model.onnx \
 *       -exec sh -c 'cp "$1" corpus/$(md5sum "$1" | cut -c1-16)' _ {} \;
 *   ./build-fuzz/fuzz_onnx_model corpus -runs=1000000
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "onnx/onnx_model.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) abort();                                                                         \
    } while (0)

static const uint8_t *g_lo, *g_hi;

static void check_str(kn_onnx_str s) {
    if (s.n) CHECK((const uint8_t *)s.p >= g_lo && (const uint8_t *)s.p + s.n <= g_hi);
}

static void walk_graph(const kn_onnx_graph *g, int depth);

static void walk_tensor(const kn_onnx_tensor *t) {
    check_str(t->name);
    if (t->has_raw) check_str(t->raw);
    for (size_t i = 0; t->typed_field == 6 && i < t->typed_count; i++)
        check_str(t->strings[i]);
    if (t->typed_field && t->typed_field != 6 && t->typed_count <= (1u << 16)) {
        uint64_t *buf = malloc(sizeof(uint64_t) * (t->typed_count ? t->typed_count : 1));
        if (buf) CHECK(kn__onnx_tensor_values(t, buf) == KN_OK);
        free(buf);
    }
}

static void walk_graph(const kn_onnx_graph *g, int depth) {
    CHECK(depth <= KN_PB_MAX_DEPTH);
    check_str(g->name);
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kn_onnx_node *nd = &g->nodes[i];
        check_str(nd->op_type);
        check_str(nd->domain);
        for (size_t j = 0; j < nd->n_inputs; j++)
            check_str(nd->inputs[j]);
        for (size_t j = 0; j < nd->n_attrs; j++) {
            const kn_onnx_attr *a = &nd->attrs[j];
            check_str(a->name);
            if (a->t) walk_tensor(a->t);
            if (a->g) walk_graph(a->g, depth + 1);
        }
    }
    for (size_t i = 0; i < g->n_initializers; i++)
        walk_tensor(&g->initializers[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    g_lo = data;
    g_hi = data + size;
    kn_onnx_model *m = kn__onnx_model_parse(data, size);
    if (m) {
        walk_graph(&m->graph, 0);
        kn__onnx_model_free(m);
    }
    /* the same bytes as a standalone TensorProto (the input_N.pb files of ONNX's tests) */
    kn_onnx_tensor_file *t = kn__onnx_tensor_parse(data, size);
    if (t) {
        walk_tensor(&t->t);
        kn__onnx_tensor_file_free(t);
    }
    return 0;
}
