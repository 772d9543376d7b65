/*
 * test_onnx_model.c - tests for the ONNX ModelProto parser (src/onnx/onnx_model.h): hand-encoded
 * models (a Relu graph with dim_value / dim_param shapes; a Gemm with a raw_data and a float_data
 * initializer and an absent optional input; a node with attributes of every type including a
 * subgraph, packed and unpacked ints), every field checked; malformed models (wrong wire types
 * at several paths, negative dims, raw_data / float_data size mismatches, unknown data_type,
 * nesting too deep) give the right status and a message naming the path; every truncation of a
 * valid model (each prefix in its own exact-size heap block, so ASan catches over-reads) gives
 * KN_EFORMAT; every allocation failure gives KN_ENOMEM without leaks; and when
 * /usr/share/libonnx-testdata/data (or $KILN_ONNX_TESTDATA) exists, every model.onnx under it
 * parses.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core_impl.h"
#include "kn_test.h"
#include "kt_pb.h"
#include "onnx/onnx_model.h"

static bool str_is(kn_onnx_str s, const char *z) {
    return s.n == strlen(z) && (s.n == 0 || memcmp(s.p, z, s.n) == 0);
}

/* ModelProto with the graph as the LAST field, so every proper prefix is invalid */
static void model_of(enc *m, const enc *graph) {
    enc op = {0};
    put_str(&op, 1, "");
    put_int(&op, 2, 17);
    put_int(m, 1, 8);
    put_str(m, 2, "kiln-test");
    put_msg(m, 8, &op);
    put_msg(m, 7, graph);
}

static void relu_model(enc *m) {
    enc g = {0}, node = {0};
    put_str(&node, 1, "x");
    put_str(&node, 2, "y");
    put_str(&node, 3, "relu0");
    put_str(&node, 4, "Relu");
    put_str(&g, 2, "tiny");
    put_msg(&g, 1, &node);
    int64_t d[2] = {-1, 4};
    kt_value_info(&g, 11, "x", 1, 2, d);
    kt_value_info(&g, 12, "y", 1, 2, d);
    put_int(&g, 99, 5); /* unknown field: skipped */
    model_of(m, &g);
}

static void test_relu(void) {
    enc m = {0};
    relu_model(&m);
    kn_onnx_model *om = kn__onnx_model_parse(m.b, m.n);
    KT_NOTNULL(om);
    KT_EQ_INT(8, om->ir_version);
    KT_TRUE(str_is(om->producer_name, "kiln-test"));
    KT_EQ_INT(1, om->n_opsets);
    KT_TRUE(str_is(om->opsets[0].domain, ""));
    KT_EQ_INT(17, om->opsets[0].version);
    kn_onnx_graph *g = &om->graph;
    KT_TRUE(str_is(g->name, "tiny"));
    KT_EQ_INT(1, g->n_nodes);
    KT_EQ_INT(0, g->n_initializers);
    KT_EQ_INT(1, g->n_inputs);
    KT_EQ_INT(1, g->n_outputs);
    KT_EQ_INT(0, g->n_value_infos);
    kn_onnx_node *n = &g->nodes[0];
    KT_TRUE(str_is(n->op_type, "Relu"));
    KT_TRUE(str_is(n->name, "relu0"));
    KT_TRUE(str_is(n->domain, ""));
    KT_EQ_INT(1, n->n_inputs);
    KT_EQ_INT(1, n->n_outputs);
    KT_EQ_INT(0, n->n_attrs);
    KT_TRUE(str_is(n->inputs[0], "x"));
    KT_TRUE(str_is(n->outputs[0], "y"));
    KT_TRUE((const uint8_t *)n->op_type.p > m.b && (const uint8_t *)n->op_type.p < m.b + m.n);
    kn_onnx_value_info *vi = &g->inputs[0];
    KT_TRUE(str_is(vi->name, "x"));
    KT_TRUE(vi->has_tensor_type);
    KT_EQ_INT(KN_ONNX_FLOAT, vi->elem_type);
    KT_TRUE(vi->has_shape);
    KT_EQ_INT(2, vi->ndims);
    KT_TRUE(!vi->dims[0].has_value);
    KT_TRUE(str_is(vi->dims[0].param, "N"));
    KT_TRUE(vi->dims[1].has_value);
    KT_EQ_INT(4, vi->dims[1].value);
    KT_TRUE(str_is(g->outputs[0].name, "y"));
    kn__onnx_model_free(om);
}

static void gemm_model(enc *m) {
    enc g = {0}, node = {0}, a1 = {0}, a2 = {0}, w = {0}, b = {0};
    put_str(&node, 1, "x");
    put_str(&node, 1, "W");
    put_str(&node, 1, "B");
    put_str(&node, 1, ""); /* absent optional input */
    put_str(&node, 2, "y");
    put_str(&node, 4, "Gemm");
    put_str(&a1, 1, "alpha");
    put_f32(&a1, 2, 0.5f);
    put_int(&a1, 20, KN_ONNX_ATTR_FLOAT);
    put_msg(&node, 5, &a1);
    put_str(&a2, 1, "transB");
    put_int(&a2, 3, 1);
    put_int(&a2, 20, KN_ONNX_ATTR_INT);
    put_msg(&node, 5, &a2);
    put_msg(&g, 1, &node);
    /* W: 2x3 floats in raw_data, dims packed */
    int64_t wd[2] = {2, 3};
    put_packed_int(&w, 1, wd, 2);
    put_int(&w, 2, KN_ONNX_FLOAT);
    put_str(&w, 8, "W");
    float wv[6] = {1, 2, 3, 4, 5, 6};
    put_bytes(&w, 9, wv, sizeof wv);
    put_msg(&g, 5, &w);
    /* B: [3] floats in float_data, dims unpacked */
    put_int(&b, 1, 3);
    put_int(&b, 2, KN_ONNX_FLOAT);
    float bv[3] = {0.25f, -1, 7};
    put_packed_f32(&b, 4, bv, 3);
    put_str(&b, 8, "B");
    put_msg(&g, 5, &b);
    int64_t xd[2] = {-1, 3}, yd[2] = {-1, 2};
    kt_value_info(&g, 11, "x", 1, 2, xd);
    kt_value_info(&g, 12, "y", 1, 2, yd);
    kt_value_info(&g, 13, "mid", 7, 0, NULL);
    model_of(m, &g);
}

static void test_gemm(void) {
    enc m = {0};
    gemm_model(&m);
    kn_onnx_model *om = kn__onnx_model_parse(m.b, m.n);
    KT_NOTNULL(om);
    kn_onnx_graph *g = &om->graph;
    KT_EQ_INT(1, g->n_nodes);
    kn_onnx_node *n = &g->nodes[0];
    KT_TRUE(str_is(n->op_type, "Gemm"));
    KT_EQ_INT(4, n->n_inputs);
    KT_TRUE(str_is(n->inputs[1], "W"));
    KT_TRUE(str_is(n->inputs[2], "B"));
    KT_EQ_INT(0, n->inputs[3].n);
    KT_EQ_INT(2, n->n_attrs);
    KT_TRUE(str_is(n->attrs[0].name, "alpha"));
    KT_EQ_INT(KN_ONNX_ATTR_FLOAT, n->attrs[0].type);
    KT_NEAR(0.5, n->attrs[0].f, 0);
    KT_TRUE(str_is(n->attrs[1].name, "transB"));
    KT_EQ_INT(KN_ONNX_ATTR_INT, n->attrs[1].type);
    KT_EQ_INT(1, n->attrs[1].i);
    KT_EQ_INT(2, g->n_initializers);
    kn_onnx_tensor *w = &g->initializers[0];
    KT_TRUE(str_is(w->name, "W"));
    KT_EQ_INT(KN_ONNX_FLOAT, w->data_type);
    KT_EQ_INT(2, w->ndims);
    KT_EQ_INT(2, w->dims[0]);
    KT_EQ_INT(3, w->dims[1]);
    KT_EQ_INT(6, w->numel);
    KT_TRUE(w->has_raw);
    KT_EQ_INT(24, w->raw.n);
    float wv[6];
    memcpy(wv, w->raw.p, 24);
    KT_NEAR(6, wv[5], 0);
    KT_EQ_INT(0, w->typed_field);
    KT_TRUE(!w->external);
    kn_onnx_tensor *b = &g->initializers[1];
    KT_TRUE(str_is(b->name, "B"));
    KT_EQ_INT(1, b->ndims);
    KT_EQ_INT(3, b->dims[0]);
    KT_TRUE(!b->has_raw);
    KT_EQ_INT(4, b->typed_field);
    KT_EQ_INT(3, b->typed_count);
    KT_TRUE(b->typed.p != NULL);
    KT_EQ_INT(12, kn__pb_len(b->typed));
    uint64_t v[3];
    KT_OK(kn__onnx_tensor_values(b, v));
    KT_NEAR(0.25, kn__pb_f32(v[0]), 0);
    KT_NEAR(-1, kn__pb_f32(v[1]), 0);
    KT_NEAR(7, kn__pb_f32(v[2]), 0);
    KT_EQ_INT(1, g->n_value_infos);
    KT_TRUE(str_is(g->value_infos[0].name, "mid"));
    KT_EQ_INT(KN_ONNX_INT64, g->value_infos[0].elem_type);
    KT_EQ_INT(0, g->value_infos[0].ndims); /* a scalar: shape present, no dims */
    KT_TRUE(g->value_infos[0].has_shape);
    kn__onnx_model_free(om);
}

static void attrs_model(enc *m) {
    enc g = {0}, node = {0}, a = {0}, t = {0}, sub = {0}, subnode = {0};
    put_str(&node, 4, "Custom");
    put_str(&node, 7, "com.example");
    /* f, i, s */
    put_str(&a, 1, "f"), put_f32(&a, 2, -2.5f), put_int(&a, 20, 1), put_msg(&node, 5, &a);
    a.n = 0;
    put_str(&a, 1, "i"), put_int(&a, 3, -7), put_int(&a, 20, 2), put_msg(&node, 5, &a);
    a.n = 0;
    put_str(&a, 1, "s"), put_str(&a, 4, "hello"), put_int(&a, 20, 3), put_msg(&node, 5, &a);
    /* t: int64 tensor [2] with int64_data unpacked, plus external-free */
    put_int(&t, 1, 2);
    put_int(&t, 2, KN_ONNX_INT64);
    put_int(&t, 7, -5);
    put_int(&t, 7, 9);
    a.n = 0;
    put_str(&a, 1, "t"), put_msg(&a, 5, &t), put_int(&a, 20, 4), put_msg(&node, 5, &a);
    /* g: a subgraph with one Identity node */
    put_str(&subnode, 1, "x");
    put_str(&subnode, 2, "z");
    put_str(&subnode, 4, "Identity");
    put_str(&sub, 2, "body");
    put_msg(&sub, 1, &subnode);
    a.n = 0;
    put_str(&a, 1, "g"), put_msg(&a, 6, &sub), put_int(&a, 20, 5), put_msg(&node, 5, &a);
    /* floats packed */
    float fl[3] = {1.5f, 2.5f, -3};
    a.n = 0;
    put_str(&a, 1, "floats"), put_packed_f32(&a, 7, fl, 3), put_int(&a, 20, 6);
    put_msg(&node, 5, &a);
    /* ints unpacked */
    a.n = 0;
    put_str(&a, 1, "ints_u"), put_int(&a, 8, 1), put_int(&a, 8, -2), put_int(&a, 8, 3);
    put_int(&a, 20, 7), put_msg(&node, 5, &a);
    /* ints packed */
    int64_t iv[4] = {10, -20, 0, INT64_MAX};
    a.n = 0;
    put_str(&a, 1, "ints_p"), put_packed_int(&a, 8, iv, 4), put_int(&a, 20, 7);
    put_msg(&node, 5, &a);
    /* strings */
    a.n = 0;
    put_str(&a, 1, "strings"), put_str(&a, 9, "a"), put_str(&a, 9, ""), put_str(&a, 9, "ccc");
    put_int(&a, 20, 8), put_msg(&node, 5, &a);
    put_msg(&g, 1, &node);
    model_of(m, &g);
}

static void test_attrs(void) {
    enc m = {0};
    attrs_model(&m);
    kn_onnx_model *om = kn__onnx_model_parse(m.b, m.n);
    KT_NOTNULL(om);
    kn_onnx_node *n = &om->graph.nodes[0];
    KT_TRUE(str_is(n->domain, "com.example"));
    KT_EQ_INT(9, n->n_attrs);
    kn_onnx_attr *a = n->attrs;
    KT_NEAR(-2.5, a[0].f, 0);
    KT_EQ_INT(-7, a[1].i);
    KT_EQ_INT(KN_ONNX_ATTR_INT, a[1].type);
    KT_TRUE(str_is(a[2].s, "hello"));
    KT_NOTNULL(a[3].t);
    KT_EQ_INT(KN_ONNX_INT64, a[3].t->data_type);
    KT_EQ_INT(7, a[3].t->typed_field);
    KT_EQ_INT(2, a[3].t->typed_count);
    KT_TRUE(a[3].t->typed.p == NULL); /* unpacked: no single view */
    uint64_t v[2];
    KT_OK(kn__onnx_tensor_values(a[3].t, v));
    KT_EQ_INT(-5, kn__pb_int64(v[0]));
    KT_EQ_INT(9, kn__pb_int64(v[1]));
    KT_NOTNULL(a[4].g);
    KT_EQ_INT(KN_ONNX_ATTR_GRAPH, a[4].type);
    KT_TRUE(str_is(a[4].g->name, "body"));
    KT_EQ_INT(1, a[4].g->n_nodes);
    KT_TRUE(str_is(a[4].g->nodes[0].op_type, "Identity"));
    KT_TRUE(str_is(a[4].g->nodes[0].outputs[0], "z"));
    KT_EQ_INT(3, a[5].n_floats);
    KT_NEAR(-3, a[5].floats[2], 0);
    KT_NEAR(1.5, a[5].floats[0], 0);
    KT_EQ_INT(3, a[6].n_ints);
    KT_EQ_INT(1, a[6].ints[0]);
    KT_EQ_INT(-2, a[6].ints[1]);
    KT_EQ_INT(3, a[6].ints[2]);
    KT_EQ_INT(4, a[7].n_ints);
    KT_EQ_INT(-20, a[7].ints[1]);
    KT_TRUE(a[7].ints[3] == INT64_MAX);
    KT_EQ_INT(3, a[8].n_strings);
    KT_TRUE(str_is(a[8].strings[0], "a"));
    KT_TRUE(str_is(a[8].strings[1], ""));
    KT_TRUE(str_is(a[8].strings[2], "ccc"));
    KT_EQ_INT(0, a[0].n_ints);
    KT_TRUE(a[0].t == NULL && a[0].g == NULL);
    kn__onnx_model_free(om);
}

/* builds a model whose single initializer is `t` */
static void init_model(enc *m, const enc *t) {
    enc g = {0};
    put_msg(&g, 5, t);
    model_of(m, &g);
}

#define EXPECT_FAIL(status, m, substr) KT_ERR(status, kn__onnx_model_parse((m).b, (m).n), substr)

static void test_malformed(void) {
    enc m = {0}, t = {0}, g = {0}, node = {0}, a = {0};
    /* graph as a varint */
    put_int(&m, 1, 8);
    put_int(&m, 7, 3);
    EXPECT_FAIL(KN_EFORMAT, m, "graph (field 7)");
    /* no graph */
    m.n = 0;
    put_int(&m, 1, 8);
    EXPECT_FAIL(KN_EFORMAT, m, "graph: missing");
    /* op_type as a varint, in node[1] */
    put_str(&node, 4, "Relu");
    put_msg(&g, 1, &node);
    node.n = 0;
    put_str(&node, 3, "second");
    put_int(&node, 4, 1);
    put_msg(&g, 1, &node);
    m.n = 0;
    model_of(&m, &g);
    EXPECT_FAIL(KN_EFORMAT, m, "graph.node[1] (second): protobuf: offset");
    EXPECT_FAIL(KN_EFORMAT, m, "op_type (field 4)");
    /* attribute f as a varint */
    g.n = node.n = 0;
    put_str(&a, 1, "alpha");
    put_int(&a, 2, 1);
    put_str(&node, 4, "Elu");
    put_msg(&node, 5, &a);
    put_msg(&node, 5, &a);
    put_msg(&g, 1, &node);
    m.n = 0;
    model_of(&m, &g);
    EXPECT_FAIL(KN_EFORMAT, m, "graph.node[0] (Elu).attribute[0] (alpha): protobuf");
    /* attribute type out of range */
    g.n = node.n = a.n = 0;
    put_str(&a, 1, "beta");
    put_int(&a, 20, 15);
    put_msg(&node, 5, &a);
    put_msg(&g, 1, &node);
    m.n = 0;
    model_of(&m, &g);
    EXPECT_FAIL(KN_EFORMAT, m, "attribute[0] (beta).type: unknown value 15");
    /* dims as fixed32 */
    put_tag(&t, 1, KN_PB_I32);
    put_varint(&t, 0), put_varint(&t, 0), put_varint(&t, 0), put_varint(&t, 0);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "graph.initializer[0]: protobuf");
    EXPECT_FAIL(KN_EFORMAT, m, "dims (field 1)");
    /* negative dim */
    t.n = 0;
    put_int(&t, 1, 2);
    put_int(&t, 1, -3);
    put_str(&t, 8, "W");
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "graph.initializer[0] (W).dims[1]: negative dimension -3");
    /* raw_data size mismatch */
    t.n = 0;
    put_int(&t, 1, 2);
    put_int(&t, 2, KN_ONNX_FLOAT);
    put_bytes(&t, 9, "1234567", 7);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "raw_data: 7 bytes, expected 8");
    /* float_data count mismatch */
    t.n = 0;
    put_int(&t, 1, 2);
    put_int(&t, 2, KN_ONNX_FLOAT);
    put_f32(&t, 4, 1.0f);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "float_data: 1 elements, expected 2");
    /* typed field not matching the data type */
    t.n = 0;
    put_int(&t, 1, 1);
    put_int(&t, 2, KN_ONNX_INT64);
    put_f32(&t, 4, 1.0f);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "float_data: does not hold data_type 7");
    /* unknown data type */
    t.n = 0;
    put_int(&t, 2, 99);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "data_type: unknown value 99");
    /* element count overflow */
    t.n = 0;
    for (int i = 0; i < 3; i++)
        put_int(&t, 1, INT64_MAX / 2);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "overflows");
    /* too many dims */
    t.n = 0;
    for (int i = 0; i < KN_ONNX_MAX_DIMS + 1; i++)
        put_int(&t, 1, 1);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_ELIMIT, m, "at most 64");
    /* external tensor with inline data */
    t.n = 0;
    put_int(&t, 2, KN_ONNX_FLOAT);
    put_bytes(&t, 9, "1234", 4);
    put_int(&t, 14, 1);
    m.n = 0;
    init_model(&m, &t);
    EXPECT_FAIL(KN_EFORMAT, m, "external tensor with inline data");
    /* negative dim_value in a value_info, dim_value as LEN */
    int64_t d[1] = {0};
    g.n = 0;
    kt_value_info(&g, 11, "x", 1, 1, d);
    m.n = 0;
    model_of(&m, &g);
    kn_onnx_model *ok = kn__onnx_model_parse(m.b, m.n);
    KT_NOTNULL(ok);
    kn__onnx_model_free(ok);
    enc dim = {0}, shape = {0}, tt = {0}, ty = {0}, vi = {0};
    put_int(&dim, 1, -4);
    put_msg(&shape, 1, &dim);
    put_msg(&tt, 2, &shape);
    put_msg(&ty, 1, &tt);
    put_str(&vi, 1, "in0");
    put_msg(&vi, 2, &ty);
    g.n = 0;
    put_msg(&g, 11, &vi);
    m.n = 0;
    model_of(&m, &g);
    EXPECT_FAIL(KN_EFORMAT, m,
                "graph.input[0] (in0).type.tensor_type.shape.dim[0].dim_value: negative -4");
    dim.n = shape.n = tt.n = ty.n = vi.n = g.n = m.n = 0;
    put_str(&dim, 1, "7");
    put_msg(&shape, 1, &dim);
    put_msg(&tt, 2, &shape);
    put_msg(&ty, 1, &tt);
    put_msg(&vi, 2, &ty);
    put_msg(&g, 12, &vi);
    model_of(&m, &g);
    EXPECT_FAIL(KN_EFORMAT, m, "graph.output[0].type.tensor_type.shape.dim[0]: protobuf");
}

static void test_depth(void) {
    /* graph { node { attribute { g: graph { ... } } } } nested 30 times: > 64 messages */
    static enc cur, next;
    memset(&cur, 0, sizeof cur);
    for (int level = 0; level < 30; level++) {
        enc a = {0}, node = {0};
        put_str(&a, 1, "body");
        put_msg(&a, 6, &cur);
        put_str(&node, 4, "Loop");
        put_msg(&node, 5, &a);
        memset(&next, 0, sizeof next);
        put_msg(&next, 1, &node);
        cur = next;
    }
    enc m = {0};
    model_of(&m, &cur);
    EXPECT_FAIL(KN_ELIMIT, m, "nested deeper than 64");
    /* 10 levels are fine */
    memset(&cur, 0, sizeof cur);
    for (int level = 0; level < 10; level++) {
        enc a = {0}, node = {0};
        put_str(&a, 1, "body");
        put_msg(&a, 6, &cur);
        put_str(&node, 4, "Loop");
        put_msg(&node, 5, &a);
        memset(&next, 0, sizeof next);
        put_msg(&next, 1, &node);
        cur = next;
    }
    m.n = 0;
    model_of(&m, &cur);
    kn_onnx_model *om = kn__onnx_model_parse(m.b, m.n);
    KT_NOTNULL(om);
    kn__onnx_model_free(om);
}

/* every proper prefix of a valid model fails with KN_EFORMAT; the full one parses */
static void truncations(const enc *m) {
    for (size_t len = 0; len <= m->n; len++) {
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, m->b, len);
        kn_clear_error();
        kn_onnx_model *om = kn__onnx_model_parse(buf, len);
        if (len == m->n) {
            if (!om) KT_FAIL("full model failed: %s", kn_last_error());
        } else if (om || kn_last_status() != KN_EFORMAT) {
            KT_FAIL("prefix %zu/%zu: got %s (%s)", len, m->n, om ? "a model" : "an error",
                    kn_last_error());
        }
        kn__onnx_model_free(om);
        free(buf);
    }
}

static void test_truncation(void) {
    enc m = {0};
    relu_model(&m);
    truncations(&m);
    m.n = 0;
    gemm_model(&m);
    truncations(&m);
    m.n = 0;
    attrs_model(&m);
    truncations(&m);
    KT_TRUE(m.n > 200);
}

static void test_alloc_failure(void) {
    enc m = {0};
    attrs_model(&m);
    int failures = 0;
    for (long k = 1; k < 200; k++) {
        kn__alloc_fail_after(k);
        kn_clear_error();
        kn_onnx_model *om = kn__onnx_model_parse(m.b, m.n);
        kn__alloc_fail_after(0);
        if (om) {
            kn__onnx_model_free(om);
            break;
        }
        failures++;
        KT_EQ_INT(KN_ENOMEM, kn_last_status());
    }
    KT_TRUE(failures > 5);
}

/* single-byte mutations of a valid model: a model or an error, never a crash (ASan build) */
static void test_mutations(void) {
    enc m = {0};
    attrs_model(&m);
    static const int deltas[] = {1, -1, 0x40, 0x80};
    int parsed = 0, failed = 0;
    for (size_t i = 0; i < m.n; i++)
        for (int k = 0; k < 6; k++) {
            uint8_t *buf = malloc(m.n);
            memcpy(buf, m.b, m.n);
            buf[i] = k < 4 ? (uint8_t)(buf[i] + deltas[k]) : k == 4 ? 0 : 0xff;
            kn_clear_error();
            kn_onnx_model *om = kn__onnx_model_parse(buf, m.n);
            if (om)
                parsed++;
            else if (kn_last_status() == KN_EFORMAT || kn_last_status() == KN_ELIMIT)
                failed++;
            else
                KT_FAIL("byte %zu: unexpected %s", i, kn_status_name(kn_last_status()));
            kn__onnx_model_free(om);
            free(buf);
        }
    KT_TRUE(parsed > 0 && failed > 0);
}

static int find_models(const char *dir, char (*paths)[512], int *n, int max, int depth) {
    if (depth > 8 || *n >= max) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    while ((de = readdir(d)) && *n < max) {
        if (de->d_name[0] == '.') continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode))
            find_models(p, paths, n, max, depth + 1);
        else if (strcmp(de->d_name, "model.onnx") == 0)
            snprintf(paths[(*n)++], 512, "%s", p);
    }
    closedir(d);
    return *n;
}

static void test_onnx_testdata(void) {
    const char *root = getenv("KILN_ONNX_TESTDATA");
    if (!root || !*root) root = "/usr/share/libonnx-testdata/data";
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("  (skipped: %s not installed)\n", root);
        return;
    }
    enum { MAXM = 8192 };
    char(*paths)[512] = malloc(sizeof(char[512]) * MAXM);
    int n = 0, bad = 0;
    find_models(root, paths, &n, MAXM, 0);
    for (int i = 0; i < n; i++) {
        FILE *fp = fopen(paths[i], "rb");
        if (!fp) {
            bad++;
            continue;
        }
        fseek(fp, 0, SEEK_END);
        long sz = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
        size_t got = fread(buf, 1, (size_t)(sz > 0 ? sz : 0), fp);
        fclose(fp);
        kn_onnx_model *om = got == (size_t)sz ? kn__onnx_model_parse(buf, got) : NULL;
        if (!om) {
            fprintf(stderr, "  %s: %s\n", paths[i], kn_last_error());
            bad++;
        }
        kn__onnx_model_free(om);
        free(buf);
    }
    free(paths);
    printf("  %d ONNX model files, %d failed\n", n, bad);
    KT_TRUE(n > 0);
    KT_EQ_INT(0, bad);
}

int main(void) {
    KT_RUN(test_relu);
    KT_RUN(test_gemm);
    KT_RUN(test_attrs);
    KT_RUN(test_malformed);
    KT_RUN(test_depth);
    KT_RUN(test_truncation);
    KT_RUN(test_alloc_failure);
    KT_RUN(test_mutations);
    KT_RUN(test_onnx_testdata);
    return kt_finish();
}
