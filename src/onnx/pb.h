/*
 * pb.h - a hand-written, bounds-checked, zero-copy reader for the protobuf WIRE FORMAT
 * (https://protobuf.dev/programming-guides/encoding/), the first layer of kiln's ONNX import.
 * Internal; not installed. No protobuf library is used and no schema is known here: the reader
 * walks (field number, wire type, value) triples and the caller (the ONNX importer) decides what
 * each field means.
 *
 * What it does not do: allocate, copy, recurse, or know about ONNX. Nested messages come back as
 * a view (`kn_pb`) of the original bytes; the caller recurses into them and must stop at
 * KN_PB_MAX_DEPTH levels (KN_ELIMIT), since a hostile file can nest messages arbitrarily deep.
 *
 * Invariants: every view satisfies base <= p <= end and all of [base, end) lies inside the buffer
 * given to kn__pb_init. Every length read from the input is compared against the bytes remaining
 * before a pointer is formed from it, so no read past `end` and no pointer overflow can happen.
 * Malformed input gives KN_EFORMAT with a message naming the byte offset (from the start of the
 * buffer given to kn__pb_init) and the problem; the view is then left unchanged. Nothing aborts.
 *
 * Typical use:
 *
 *   kn_pb m = kn__pb_init(buf, n);
 *   kn_pb_field f;
 *   kn_status s;
 *   while ((s = kn__pb_next(&m, &f)) == KN_OK) {
 *       if (f.num == 7 && f.wire == KN_PB_LEN) parse_graph(f.sub, depth + 1);
 *       else if (f.num == 1 && f.wire == KN_PB_VARINT) ir_version = kn__pb_int64(f.v);
 *   }                                    // unknown fields are simply skipped
 *   if (s != KN_PB_DONE) return s;       // KN_EFORMAT, message already set
 *
 * Thread safety: all functions are pure apart from setting the calling thread's error slot.
 */
#ifndef KILN_ONNX_PB_H
#define KILN_ONNX_PB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kiln/kiln.h"

/* Deepest message nesting a caller should follow (ONNX: model > graph > node > attribute >
 * graph > ...); deeper input should be rejected with KN_ELIMIT. */
#define KN_PB_MAX_DEPTH 64
/* Largest field number the wire format allows (2^29 - 1). */
#define KN_PB_MAX_FIELD 536870911u
/* Positive "no more fields" result of kn__pb_next (not an error). */
#define KN_PB_DONE ((kn_status)1)

/* Wire types. 3 and 4 (groups, deprecated) and 6, 7 (undefined) are rejected as KN_EFORMAT. */
enum { KN_PB_VARINT = 0, KN_PB_I64 = 1, KN_PB_LEN = 2, KN_PB_I32 = 5 };

/* A view of bytes: the unread part of a message is [p, end); base is the start of the whole
 * buffer (for error offsets). Does not own the bytes: they must outlive every view of them. */
typedef struct kn_pb {
    const uint8_t *p, *end, *base;
} kn_pb;

/* One field. VARINT: the raw 64-bit value in v. I64 / I32: the little-endian value in v (I32 in
 * the low 32 bits). LEN: the payload bytes in sub (a nested message, a string, bytes or a packed
 * repeated field; which one is up to the schema), v = its length. */
typedef struct kn_pb_field {
    uint32_t num; /* 1 .. KN_PB_MAX_FIELD */
    int wire;     /* KN_PB_VARINT, KN_PB_I64, KN_PB_LEN or KN_PB_I32 */
    uint64_t v;
    kn_pb sub;  /* LEN: the payload; other wire types: an empty view at the field's end */
    size_t off; /* byte offset of the field's tag (for messages) */
} kn_pb_field;

/* A view of data[0, n). data may be NULL when n == 0. */
kn_pb kn__pb_init(const void *data, size_t n);

/* Reads the next field of m into f and advances m past it. Returns KN_OK, KN_PB_DONE when m is
 * exhausted (f untouched), or KN_EFORMAT (truncated varint, varint over 10 bytes or 64 bits,
 * field number 0 or > KN_PB_MAX_FIELD, wire type 3/4/6/7, length or fixed value past the end),
 * leaving m unchanged. */
kn_status kn__pb_next(kn_pb *m, kn_pb_field *f);

/* Reads one varint (at most 10 bytes, at most 64 bits) from m and advances; KN_EFORMAT if m is
 * empty or the varint is truncated or too long. Also the element reader of packed varints. */
kn_status kn__pb_varint(kn_pb *m, uint64_t *out);
/* Element readers for packed fixed32 / fixed64 (float / double) fields: read 4 or 8 bytes,
 * little-endian, and advance; KN_EFORMAT when fewer bytes remain. */
kn_status kn__pb_fixed32(kn_pb *m, uint32_t *out);
kn_status kn__pb_fixed64(kn_pb *m, uint64_t *out);

/* Number of elements in a packed repeated field's payload `sub` whose elements have wire type
 * `wire` (KN_PB_VARINT, KN_PB_I32 or KN_PB_I64). Validates the whole payload first (every varint
 * complete and at most 10 bytes; fixed payload a multiple of 4 or 8), so a caller can allocate
 * `*count` elements and then read them with the element readers above without further failure.
 * KN_EINVAL for another wire type, KN_EFORMAT for a malformed payload. */
kn_status kn__pb_packed_count(kn_pb sub, int wire, size_t *count);

/* Fails with KN_EFORMAT "offset O: <what> (field N): wire type W, expected E" unless
 * f->wire == wire. */
kn_status kn__pb_want(const kn_pb_field *f, int wire, const char *what);

/* Byte offset of the view's read position from the start of the buffer (for messages). */
static inline size_t kn__pb_offset(kn_pb m) {
    return (size_t)(m.p - m.base);
}
/* Bytes left in the view; a string/bytes field's length. */
static inline size_t kn__pb_len(kn_pb m) {
    return (size_t)(m.end - m.p);
}
/* A string/bytes field as pointer + length: NOT NUL-terminated, may contain NULs, and is not
 * checked to be UTF-8. */
static inline const char *kn__pb_str(kn_pb m, size_t *len) {
    *len = kn__pb_len(m);
    return (const char *)m.p;
}
/* True when the string field equals the NUL-terminated s. */
static inline bool kn__pb_str_eq(kn_pb m, const char *s) {
    size_t n = strlen(s);
    return kn__pb_len(m) == n && (n == 0 || memcmp(m.p, s, n) == 0);
}

/* ---- scalar decoding of a varint / fixed value (the schema says which applies) ---- */
/* int64 / int32 / enum: two's complement; negative numbers are 10-byte varints. int32 keeps the
 * low 32 bits, as protobuf does. No implementation-defined casts. */
static inline int64_t kn__pb_int64(uint64_t v) {
    return v <= (uint64_t)INT64_MAX ? (int64_t)v : -(int64_t)(~v) - 1;
}
static inline int32_t kn__pb_int32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}
/* sint64 / sint32: zigzag (0, -1, 1, -2, ... encode as 0, 1, 2, 3, ...). */
static inline int64_t kn__pb_sint64(uint64_t v) {
    return kn__pb_int64((v >> 1) ^ (0 - (v & 1)));
}
static inline int32_t kn__pb_sint32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    return kn__pb_int32((u >> 1) ^ (0u - (u & 1u)));
}
/* float from fixed32, double from fixed64 (bit copies; NaN payloads preserved). */
static inline float kn__pb_f32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline double kn__pb_f64(uint64_t v) {
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

#endif
