/*
 * test_pb.c - tests for the protobuf wire-format reader (src/onnx/pb.h): hand-encoded messages
 * with every wire type, nesting, packed and unpacked repeated fields, negative and zigzag
 * integers, floats, empty messages; every malformed case gives KN_EFORMAT naming the offset;
 * every truncation of a valid message is read without going out of bounds (each prefix lives in
 * its own exact-size heap block, so the ASan build catches any over-read); and, when
 * /usr/share/libonnx-testdata/data exists (or $KILN_ONNX_TESTDATA names a directory to walk instead
 * of its node/), the ModelProto of up to 50 model.onnx files found there parses to the end.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kn_test.h"
#include "kt_pb.h"
#include "onnx/pb.h"

/* ---- well-formed input ---- */
static void test_every_wire_type(void) {
    enc e = {0};
    put_tag(&e, 1, KN_PB_VARINT);
    put_varint(&e, 150);
    put_tag(&e, 2, KN_PB_I64);
    put_le(&e, 0x0102030405060708ull, 8);
    put_bytes(&e, 3, "testing", 7);
    put_tag(&e, 4, KN_PB_I32);
    put_le(&e, 0xdeadbeefu, 4);
    put_tag(&e, KN_PB_MAX_FIELD, KN_PB_VARINT); /* the largest legal field number */
    put_varint(&e, 1);
    KT_EQ_INT(3, e.b[0] == 0x08 && e.b[1] == 0x96 && e.b[2] == 0x01 ? 3 : 0); /* spec example */

    kn_pb m = kn__pb_init(e.b, e.n);
    kn_pb_field f;
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(1, f.num);
    KT_EQ_INT(KN_PB_VARINT, f.wire);
    KT_EQ_INT(150, f.v);
    KT_EQ_INT(0, f.off);
    KT_EQ_INT(0, kn__pb_len(f.sub));
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(2, f.num);
    KT_EQ_INT(KN_PB_I64, f.wire);
    KT_TRUE(f.v == 0x0102030405060708ull);
    KT_EQ_INT(3, f.off);
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(3, f.num);
    KT_EQ_INT(KN_PB_LEN, f.wire);
    KT_EQ_INT(7, f.v);
    size_t len;
    const char *s = kn__pb_str(f.sub, &len);
    KT_EQ_INT(7, len);
    KT_TRUE(memcmp(s, "testing", 7) == 0);
    KT_TRUE(kn__pb_str_eq(f.sub, "testing"));
    KT_TRUE(!kn__pb_str_eq(f.sub, "test"));
    KT_TRUE(!kn__pb_str_eq(f.sub, "testing!"));
    KT_TRUE((const uint8_t *)s > e.b && (const uint8_t *)s < e.b + e.n); /* zero-copy */
    KT_OK(kn__pb_want(&f, KN_PB_LEN, "name"));
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(4, f.num);
    KT_EQ_INT(KN_PB_I32, f.wire);
    KT_TRUE(f.v == 0xdeadbeefu);
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(KN_PB_MAX_FIELD, f.num);
    KT_EQ_INT(1, f.v);
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f));
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f)); /* stays done */
    KT_EQ_INT(e.n, kn__pb_offset(m));
}

static void test_nested(void) {
    /* outer { 7: graph { 1: node { 2: "Relu", 5: 42 }, 1: node { } }, 8: 3 } */
    enc node = {0}, graph = {0}, outer = {0};
    put_bytes(&node, 2, "Relu", 4);
    put_tag(&node, 5, KN_PB_VARINT);
    put_varint(&node, 42);
    put_bytes(&graph, 1, node.b, node.n);
    put_bytes(&graph, 1, "", 0);
    put_bytes(&outer, 7, graph.b, graph.n);
    put_tag(&outer, 8, KN_PB_VARINT);
    put_varint(&outer, 3);

    kn_pb m = kn__pb_init(outer.b, outer.n), g, n;
    kn_pb_field f;
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(7, f.num);
    g = f.sub;
    KT_OK(kn__pb_next(&g, &f));
    KT_EQ_INT(1, f.num);
    n = f.sub;
    KT_EQ_INT(4, kn__pb_offset(n)); /* offsets count from the outer buffer's start */
    KT_OK(kn__pb_next(&n, &f));
    KT_EQ_INT(2, f.num);
    KT_TRUE(kn__pb_str_eq(f.sub, "Relu"));
    KT_OK(kn__pb_next(&n, &f));
    KT_EQ_INT(5, f.num);
    KT_EQ_INT(42, f.v);
    KT_STATUS(KN_PB_DONE, kn__pb_next(&n, &f));
    KT_OK(kn__pb_next(&g, &f)); /* the empty node */
    KT_EQ_INT(1, f.num);
    KT_EQ_INT(0, f.v);
    n = f.sub;
    KT_STATUS(KN_PB_DONE, kn__pb_next(&n, &f));
    KT_STATUS(KN_PB_DONE, kn__pb_next(&g, &f));
    KT_OK(kn__pb_next(&m, &f)); /* the outer walk continues after the nested message */
    KT_EQ_INT(8, f.num);
    KT_EQ_INT(3, f.v);
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f));
}

static void test_empty(void) {
    kn_pb_field f;
    kn_pb m = kn__pb_init(NULL, 0);
    KT_EQ_INT(0, kn__pb_len(m));
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f));
    uint8_t one = 0;
    m = kn__pb_init(&one, 0);
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f));
    size_t count = 99;
    KT_OK(kn__pb_packed_count(m, KN_PB_VARINT, &count));
    KT_EQ_INT(0, count);
    KT_OK(kn__pb_packed_count(m, KN_PB_I32, &count));
    KT_EQ_INT(0, count);
    uint64_t v;
    KT_STATUS(KN_EFORMAT, kn__pb_varint(&m, &v));
    KT_STATUS(KN_EFORMAT, kn__pb_fixed64(&m, &v));
}

static void test_integers(void) {
    enc e = {0};
    put_tag(&e, 1, KN_PB_VARINT);
    put_varint(&e, (uint64_t)-1); /* int64 -1: 10 bytes */
    put_tag(&e, 2, KN_PB_VARINT);
    put_varint(&e, (uint64_t)INT64_MIN);
    put_tag(&e, 3, KN_PB_VARINT);
    put_varint(&e, (uint64_t)(int64_t)-5); /* int32 -5 is sign-extended to 10 bytes too */
    put_tag(&e, 4, KN_PB_VARINT);
    put_varint(&e, UINT64_MAX);
    put_tag(&e, 5, KN_PB_VARINT);
    put_varint(&e, (uint64_t)INT64_MAX);
    KT_EQ_INT(4 * 11 + 10, e.n);
    KT_EQ_INT(0xff, e.b[1]);
    KT_EQ_INT(0x01, e.b[10]); /* the 10th byte of a 64-bit varint holds only bit 63 */

    kn_pb m = kn__pb_init(e.b, e.n);
    kn_pb_field f;
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(-1, kn__pb_int64(f.v));
    KT_OK(kn__pb_next(&m, &f));
    KT_TRUE(kn__pb_int64(f.v) == INT64_MIN);
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(-5, kn__pb_int32(f.v));
    KT_EQ_INT(-5, kn__pb_int64(f.v));
    KT_OK(kn__pb_next(&m, &f));
    KT_TRUE(f.v == UINT64_MAX);
    KT_OK(kn__pb_next(&m, &f));
    KT_TRUE(kn__pb_int64(f.v) == INT64_MAX);
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f));

    KT_EQ_INT(INT32_MIN, kn__pb_int32(0x80000000u));
    KT_EQ_INT(INT32_MAX, kn__pb_int32(0x7fffffffu));
    KT_EQ_INT(7, kn__pb_int32(0x100000007ull)); /* int32 keeps the low 32 bits */
}

static void test_zigzag(void) {
    /* protobuf.dev encoding table: 0->0, -1->1, 1->2, -2->3, 0x7fffffff->0xfffffffe, ... */
    KT_EQ_INT(0, kn__pb_sint64(0));
    KT_EQ_INT(-1, kn__pb_sint64(1));
    KT_EQ_INT(1, kn__pb_sint64(2));
    KT_EQ_INT(-2, kn__pb_sint64(3));
    KT_EQ_INT(2147483647, kn__pb_sint64(4294967294u));
    KT_EQ_INT(-2147483648LL, kn__pb_sint64(4294967295u));
    KT_TRUE(kn__pb_sint64(UINT64_MAX - 1) == INT64_MAX);
    KT_TRUE(kn__pb_sint64(UINT64_MAX) == INT64_MIN);
    KT_EQ_INT(INT32_MAX, kn__pb_sint32(0xfffffffeu));
    KT_EQ_INT(INT32_MIN, kn__pb_sint32(0xffffffffu));
    KT_EQ_INT(-3, kn__pb_sint32(5));
    /* through the wire: sint64 -300 is zigzag 599 */
    enc e = {0};
    put_tag(&e, 1, KN_PB_VARINT);
    put_varint(&e, 599);
    kn_pb m = kn__pb_init(e.b, e.n);
    kn_pb_field f;
    KT_OK(kn__pb_next(&m, &f));
    KT_EQ_INT(-300, kn__pb_sint64(f.v));
}

static void test_floats(void) {
    enc e = {0};
    put_f32(&e, 1, 1.5f);
    put_f32(&e, 2, -0.0f);
    put_f32(&e, 3, INFINITY);
    put_f64(&e, 4, -2.25);
    put_f64(&e, 5, 1e300);
    put_tag(&e, 6, KN_PB_I32);
    put_le(&e, 0x3f800000u, 4); /* 1.0f, bytes written explicitly little-endian */
    kn_pb m = kn__pb_init(e.b, e.n);
    kn_pb_field f;
    KT_OK(kn__pb_next(&m, &f));
    KT_OK(kn__pb_want(&f, KN_PB_I32, "value"));
    KT_NEAR(1.5, kn__pb_f32(f.v), 0);
    KT_OK(kn__pb_next(&m, &f));
    KT_TRUE(kn__pb_f32(f.v) == 0 && signbit(kn__pb_f32(f.v)));
    KT_OK(kn__pb_next(&m, &f));
    KT_TRUE(isinf(kn__pb_f32(f.v)));
    KT_OK(kn__pb_next(&m, &f));
    KT_OK(kn__pb_want(&f, KN_PB_I64, "value"));
    KT_NEAR(-2.25, kn__pb_f64(f.v), 0);
    KT_OK(kn__pb_next(&m, &f));
    KT_NEAR(1e300, kn__pb_f64(f.v), 0);
    KT_OK(kn__pb_next(&m, &f));
    KT_NEAR(1.0, kn__pb_f32(f.v), 0);
    KT_STATUS(KN_PB_DONE, kn__pb_next(&m, &f));
}

static void test_repeated(void) {
    /* 1: packed int64 [1, 300, -1]; 2: packed float [0.5, -4]; 3: packed double [3.25];
     * 4: unpacked int64 repeated 3 times with another field in between */
    enc pv = {0}, e = {0};
    put_varint(&pv, 1);
    put_varint(&pv, 300);
    put_varint(&pv, (uint64_t)-1);
    put_bytes(&e, 1, pv.b, pv.n);
    enc pf = {0};
    float fl[2] = {0.5f, -4.0f};
    for (int i = 0; i < 2; i++) {
        uint32_t u;
        memcpy(&u, &fl[i], 4);
        put_le(&pf, u, 4);
    }
    put_bytes(&e, 2, pf.b, pf.n);
    enc pd = {0};
    double d = 3.25;
    uint64_t du;
    memcpy(&du, &d, 8);
    put_le(&pd, du, 8);
    put_bytes(&e, 3, pd.b, pd.n);
    for (int i = 0; i < 3; i++) {
        put_tag(&e, 4, KN_PB_VARINT);
        put_varint(&e, (uint64_t)(int64_t)(i - 1));
        if (i == 1) put_bytes(&e, 9, "x", 1);
    }

    kn_pb m = kn__pb_init(e.b, e.n);
    kn_pb_field f;
    size_t count;
    uint64_t v;
    uint32_t u32;
    KT_OK(kn__pb_next(&m, &f));
    KT_OK(kn__pb_packed_count(f.sub, KN_PB_VARINT, &count));
    KT_EQ_INT(3, count);
    int64_t want[3] = {1, 300, -1};
    for (size_t i = 0; i < count; i++) {
        KT_OK(kn__pb_varint(&f.sub, &v));
        KT_EQ_INT(want[i], kn__pb_int64(v));
    }
    KT_EQ_INT(0, kn__pb_len(f.sub));
    KT_OK(kn__pb_next(&m, &f));
    KT_OK(kn__pb_packed_count(f.sub, KN_PB_I32, &count));
    KT_EQ_INT(2, count);
    for (size_t i = 0; i < count; i++) {
        KT_OK(kn__pb_fixed32(&f.sub, &u32));
        KT_NEAR(fl[i], kn__pb_f32(u32), 0);
    }
    KT_STATUS(KN_EFORMAT, kn__pb_fixed32(&f.sub, &u32)); /* exhausted */
    KT_OK(kn__pb_next(&m, &f));
    KT_OK(kn__pb_packed_count(f.sub, KN_PB_I64, &count));
    KT_EQ_INT(1, count);
    KT_OK(kn__pb_fixed64(&f.sub, &v));
    KT_NEAR(3.25, kn__pb_f64(v), 0);
    /* the same packed payload read with the wrong element width is rejected */
    kn_pb floats = kn__pb_init(pf.b, pf.n);
    KT_OK(kn__pb_packed_count(floats, KN_PB_I64, &count));
    KT_EQ_INT(1, count);
    floats = kn__pb_init(pf.b, 6);
    KT_STATUS(KN_EFORMAT, kn__pb_packed_count(floats, KN_PB_I32, &count));
    KT_TRUE(strstr(kn_last_error(), "not a multiple of 4") != NULL);
    KT_STATUS(KN_EINVAL, kn__pb_packed_count(floats, KN_PB_LEN, &count));

    int64_t got[3];
    int n = 0;
    while (kn__pb_next(&m, &f) == KN_OK)
        if (f.num == 4 && n < 3) got[n++] = kn__pb_int64(f.v);
    KT_EQ_INT(3, n);
    KT_EQ_INT(-1, got[0]);
    KT_EQ_INT(0, got[1]);
    KT_EQ_INT(1, got[2]);
}

/* ---- malformed input ---- */
typedef struct {
    const char *name;
    uint8_t b[16];
    size_t n;
    size_t fields_ok; /* fields read before the bad one */
    const char *msg;  /* substring the error message must contain */
} bad_case;

static void test_malformed(void) {
    static const bad_case cases[] = {
        {"truncated tag", {0x80}, 1, 0, "offset 0: truncated varint (tag)"},
        {"truncated value", {0x08, 0x80, 0x80}, 3, 0, "offset 1: truncated varint"},
        {"11-byte varint",
         {0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
         12,
         0,
         "longer than 10 bytes"},
        {"65-bit varint",
         {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
         11,
         0,
         "overflows 64 bits"},
        {"11-byte tag",
         {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x08},
         11,
         0,
         "longer than 10 bytes"},
        {"length past the end", {0x08, 0x01, 0x12, 0x05, 'a', 'b'}, 6, 1, "offset 2: field 2"},
        {"huge length",
         {0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'a'},
         12,
         0,
         "past the end"},
        {"truncated length", {0x12, 0x85}, 2, 0, "truncated varint (length)"},
        {"field number 0", {0x00, 0x01}, 2, 0, "field number 0"},
        {"field number 0 LEN", {0x02, 0x00}, 2, 0, "field number 0"},
        {"field number 2^29", {0x80, 0x80, 0x80, 0x80, 0x20, 0x01}, 6, 0, "> 536870911"},
        {"field number 2^32", {0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x01}, 7, 0, "field number"},
        {"wire type 3 (start group)", {0x0b}, 1, 0, "groups are not supported"},
        {"wire type 4 (end group)", {0x08, 0x00, 0x0c}, 3, 1, "offset 2: field 1 uses wire type 4"},
        {"wire type 6", {0x0e, 0x00}, 2, 0, "invalid wire type 6"},
        {"wire type 7", {0x0f}, 1, 0, "invalid wire type 7"},
        {"truncated fixed32", {0x0d, 0x01, 0x02, 0x03}, 4, 0, "fixed32 field needs 4 bytes, 3"},
        {"truncated fixed64", {0x09, 0x01}, 2, 0, "fixed64 field needs 8 bytes, 1 left"},
    };
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < ncases; i++) {
        const bad_case *c = &cases[i];
        /* exact-size heap copy: any over-read is an ASan error */
        uint8_t *buf = malloc(c->n);
        memcpy(buf, c->b, c->n);
        kn_pb m = kn__pb_init(buf, c->n);
        kn_pb_field f;
        size_t ok = 0;
        kn_status s;
        kn_clear_error();
        while ((s = kn__pb_next(&m, &f)) == KN_OK)
            ok++;
        kn_pb before = m;
        kn_status again = kn__pb_next(&m, &f);
        char msg[256];
        snprintf(msg, sizeof msg, "%s", kn_last_error());
        free(buf);
        if (s != KN_EFORMAT)
            KT_FAIL("%s: expected KN_EFORMAT, got %s (%s)", c->name, kn_status_name(s), msg);
        if (ok != c->fields_ok)
            KT_FAIL("%s: %zu fields read before the error, expected %zu", c->name, ok,
                    c->fields_ok);
        if (!strstr(msg, c->msg) || !strstr(msg, "offset"))
            KT_FAIL("%s: message \"%s\" lacks \"%s\"", c->name, msg, c->msg);
        /* the view is not advanced by a failed read, so the error repeats */
        if (again != KN_EFORMAT || before.p != m.p) KT_FAIL("%s: view advanced on error", c->name);
    }
    /* a malformed varint inside a packed payload */
    uint8_t packed[3] = {0x01, 0x80, 0x80};
    size_t count;
    KT_STATUS(KN_EFORMAT, kn__pb_packed_count(kn__pb_init(packed, 3), KN_PB_VARINT, &count));
    KT_TRUE(strstr(kn_last_error(), "offset 1: truncated varint") != NULL);
    /* a field of the wrong wire type for the schema */
    uint8_t s7[] = {0x08, 0x01, 0x38, 0x05};
    kn_pb m = kn__pb_init(s7, sizeof s7);
    kn_pb_field f;
    KT_OK(kn__pb_next(&m, &f));
    KT_OK(kn__pb_next(&m, &f));
    KT_STATUS(KN_EFORMAT, kn__pb_want(&f, KN_PB_LEN, "graph"));
    KT_TRUE(strstr(kn_last_error(), "offset 2: graph (field 7): wire type 0 (varint), expected "
                                    "2 (length-delimited)") != NULL);
}

/* ---- truncation at every byte ---- */
/* Walks m, descending into LEN payloads that parse as messages (as a schema-less reader
 * would), up to KN_PB_MAX_DEPTH. Returns the status of the top-level walk. */
static kn_status walk(kn_pb m, int depth, size_t *nfields) {
    kn_pb_field f;
    kn_status s;
    while ((s = kn__pb_next(&m, &f)) == KN_OK) {
        (*nfields)++;
        if (f.wire == KN_PB_LEN && depth + 1 < KN_PB_MAX_DEPTH) {
            size_t sub = 0;
            (void)walk(f.sub, depth + 1, &sub); /* strings are not messages: errors expected */
            size_t count;
            (void)kn__pb_packed_count(f.sub, KN_PB_VARINT, &count);
        }
    }
    return s;
}

static void test_truncation(void) {
    enc inner = {0}, e = {0};
    put_bytes(&inner, 1, "abc", 3);
    put_tag(&inner, 2, KN_PB_VARINT);
    put_varint(&inner, (uint64_t)-7);
    put_f64(&inner, 3, 0.25);
    put_tag(&e, 1, KN_PB_VARINT);
    put_varint(&e, 1ull << 40);
    put_bytes(&e, 7, inner.b, inner.n);
    put_f32(&e, 300, 2.0f); /* two-byte tag */
    enc packed = {0};
    put_varint(&packed, 5);
    put_varint(&packed, (uint64_t)-5);
    put_bytes(&e, 8, packed.b, packed.n);
    /* offsets where a top-level field ends: exactly these prefixes are valid messages */
    size_t ends[4], nends = 0;
    {
        kn_pb m = kn__pb_init(e.b, e.n);
        kn_pb_field f;
        while (kn__pb_next(&m, &f) == KN_OK)
            ends[nends++] = kn__pb_offset(m);
    }
    KT_EQ_INT(4, nends);
    KT_EQ_INT(e.n, ends[3]);
    for (size_t k = 0; k <= e.n; k++) {
        uint8_t *buf = malloc(k ? k : 1);
        memcpy(buf, e.b, k);
        size_t nf = 0;
        kn_status s = walk(kn__pb_init(buf, k), 0, &nf);
        free(buf);
        int boundary = k == 0;
        for (size_t j = 0; j < nends; j++)
            if (ends[j] == k) boundary = 1;
        if (boundary && s != KN_PB_DONE)
            KT_FAIL("prefix %zu: expected a complete message, got %s", k, kn_status_name(s));
        if (!boundary && s != KN_EFORMAT)
            KT_FAIL("prefix %zu: expected KN_EFORMAT, got %s", k, kn_status_name(s));
    }
}

/* ---- real ONNX files ---- */
/* Checks that an ONNX ModelProto parses to the end and has a length-delimited graph (field 7). */
static int check_model(const uint8_t *b, size_t n, const char *path) {
    kn_pb m = kn__pb_init(b, n);
    kn_pb_field f;
    kn_status s;
    int graphs = 0;
    while ((s = kn__pb_next(&m, &f)) == KN_OK) {
        if (f.num != 7) continue;
        if (kn__pb_want(&f, KN_PB_LEN, "ModelProto.graph") != KN_OK) break;
        size_t nf = 0;
        kn_status gs = walk(f.sub, 1, &nf);
        if (gs != KN_PB_DONE) {
            fprintf(stderr, "  %s: graph: %s\n", path, kn_last_error());
            return 0;
        }
        graphs++;
    }
    if (s != KN_PB_DONE || graphs != 1) {
        fprintf(stderr, "  %s: %s (%d graphs)\n", path, s == KN_PB_DONE ? "" : kn_last_error(),
                graphs);
        return 0;
    }
    return 1;
}

static void test_model_proto_inline(void) {
    /* ModelProto { ir_version: 8, producer_name: "kiln", graph { node { op_type: "Relu" } },
     * opset_import { version: 17 } } */
    enc node = {0}, graph = {0}, opset = {0}, model = {0};
    put_bytes(&node, 4, "Relu", 4);
    put_bytes(&graph, 1, node.b, node.n);
    put_bytes(&graph, 2, "g", 1);
    put_tag(&opset, 2, KN_PB_VARINT);
    put_varint(&opset, 17);
    put_tag(&model, 1, KN_PB_VARINT);
    put_varint(&model, 8);
    put_bytes(&model, 2, "kiln", 4);
    put_bytes(&model, 7, graph.b, graph.n);
    put_bytes(&model, 8, opset.b, opset.n);
    KT_TRUE(check_model(model.b, model.n, "inline"));
    KT_EQ_INT(0x3a, model.b[8]); /* the graph's tag: field 7, wire type 2 */
    model.b[8] = 0x38;           /* field 7 as a varint: rejected */
    KT_TRUE(!check_model(model.b, model.n, "inline (expected failure)"));
}

static int find_models(const char *dir, char paths[][512], int *n, int max, int depth) {
    if (depth > 8 || *n >= max) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    /* collect names and sort them so the chosen files do not depend on readdir order */
    char(*names)[256] = malloc(sizeof(char[256]) * 4096);
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nn < 4096) {
        if (de->d_name[0] == '.') continue;
        snprintf(names[nn++], 256, "%s", de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, 256, (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < nn && *n < max; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode))
            find_models(p, paths, n, max, depth + 1);
        else if (strcmp(names[i], "model.onnx") == 0)
            snprintf(paths[(*n)++], 512, "%s", p);
    }
    free(names);
    return *n;
}

static void test_onnx_testdata(void) {
    /* KILN_ONNX_TESTDATA overrides the directory (to test this walk on other files) */
    const char *root = getenv("KILN_ONNX_TESTDATA");
    if (!root || !*root) root = "/usr/share/libonnx-testdata/data/node";
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("  (skipped: %s not installed)\n", root);
        return;
    }
    static char paths[50][512];
    int n = 0;
    find_models(root, paths, &n, 50, 0);
    KT_TRUE(n > 0);
    for (int i = 0; i < n; i++) {
        FILE *fp = fopen(paths[i], "rb");
        if (!fp) KT_FAIL("cannot open %s", paths[i]);
        fseek(fp, 0, SEEK_END);
        long sz = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
        size_t got = fread(buf, 1, (size_t)(sz > 0 ? sz : 0), fp);
        fclose(fp);
        int ok = got == (size_t)sz && check_model(buf, got, paths[i]);
        free(buf);
        if (!ok) KT_FAIL("%s does not parse as a ModelProto", paths[i]);
    }
    printf("  %d ONNX model files parsed\n", n);
}

int main(void) {
    KT_RUN(test_every_wire_type);
    KT_RUN(test_nested);
    KT_RUN(test_empty);
    KT_RUN(test_integers);
    KT_RUN(test_zigzag);
    KT_RUN(test_floats);
    KT_RUN(test_repeated);
    KT_RUN(test_malformed);
    KT_RUN(test_truncation);
    KT_RUN(test_model_proto_inline);
    KT_RUN(test_onnx_testdata);
    return kt_finish();
}
