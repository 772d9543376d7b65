/*
 * kt_pb.h - a tiny protobuf encoder for hand-building test messages (tests of the wire reader and
 * of the ONNX model parser). Writes past the buffer are dropped (tests check lengths).
 */
#ifndef KT_PB_H
#define KT_PB_H

#include <stdint.h>
#include <string.h>

#include "onnx/pb.h"

typedef struct {
    uint8_t b[8192];
    size_t n;
} enc;

static inline void put_byte(enc *e, uint8_t x) {
    if (e->n < sizeof e->b) e->b[e->n++] = x;
}
static inline void put_varint(enc *e, uint64_t v) {
    do {
        uint8_t x = v & 0x7f;
        v >>= 7;
        put_byte(e, (uint8_t)(x | (v ? 0x80 : 0)));
    } while (v);
}
static inline void put_tag(enc *e, uint32_t num, int wire) {
    put_varint(e, ((uint64_t)num << 3) | (uint64_t)wire);
}
static inline void put_le(enc *e, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        put_byte(e, (uint8_t)(v >> (8 * i)));
}
static inline void put_int(enc *e, uint32_t num, int64_t v) {
    put_tag(e, num, KN_PB_VARINT);
    put_varint(e, (uint64_t)v);
}
static inline void put_bytes(enc *e, uint32_t num, const void *p, size_t n) {
    put_tag(e, num, KN_PB_LEN);
    put_varint(e, n);
    for (size_t i = 0; i < n; i++)
        put_byte(e, ((const uint8_t *)p)[i]);
}
static inline void put_str(enc *e, uint32_t num, const char *s) {
    put_bytes(e, num, s, strlen(s));
}
static inline void put_msg(enc *e, uint32_t num, const enc *m) {
    put_bytes(e, num, m->b, m->n);
}
static inline void put_f32(enc *e, uint32_t num, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_tag(e, num, KN_PB_I32);
    put_le(e, u, 4);
}
static inline void put_f64(enc *e, uint32_t num, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    put_tag(e, num, KN_PB_I64);
    put_le(e, u, 8);
}
static inline void put_packed_f32(enc *e, uint32_t num, const float *v, size_t n) {
    put_tag(e, num, KN_PB_LEN);
    put_varint(e, 4 * n);
    for (size_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        put_le(e, u, 4);
    }
}
static inline void put_packed_int(enc *e, uint32_t num, const int64_t *v, size_t n) {
    enc p = {0};
    for (size_t k = 0; k < n; k++)
        put_varint(&p, (uint64_t)v[k]);
    put_msg(e, num, &p);
}

/* ValueInfoProto `name`: tensor(elem)[dims], dims < 0 meaning a dim_param "N" */
static inline void kt_value_info(enc *out, uint32_t num, const char *name, int elem, int nd,
                                 const int64_t *dims) {
    enc shape = {0}, tt = {0}, type = {0}, vi = {0};
    for (int i = 0; i < nd; i++) {
        enc d = {0};
        if (dims[i] >= 0)
            put_int(&d, 1, dims[i]);
        else
            put_str(&d, 2, "N");
        put_msg(&shape, 1, &d);
    }
    put_int(&tt, 1, elem);
    put_msg(&tt, 2, &shape);
    put_msg(&type, 1, &tt);
    put_str(&vi, 1, name);
    put_msg(&vi, 2, &type);
    put_msg(out, num, &vi);
}

#endif
