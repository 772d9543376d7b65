/*
 * pb.c - the protobuf wire-format reader declared in pb.h: varints, tags, fixed values and
 * length-delimited payloads, every read bounds-checked against the view's end.
 *
 * Lengths from the input are compared against the bytes remaining (end - p) before any pointer
 * is formed from them, so a hostile length cannot overflow pointer arithmetic. Errors name the
 * byte offset from the start of the buffer; on error the caller's view is not advanced.
 */
#include "onnx/pb.h"

#include "core/core_impl.h"

static const uint8_t pb_empty[1];

kn_pb kn__pb_init(const void *data, size_t n) {
    /* NULL + 0 is undefined behaviour: give empty input a real (zero-length) address */
    const uint8_t *p = (data && n) ? (const uint8_t *)data : pb_empty;
    kn_pb m = {p, p + (data ? n : 0), p};
    return m;
}

/* Reads a varint at *pp (< end). `what` names it for the message ("tag", "length", ...). */
static kn_status pb_varint_at(const uint8_t **pp, const uint8_t *end, const uint8_t *base,
                              const char *what, uint64_t *out) {
    const uint8_t *p = *pp;
    size_t left = (size_t)(end - p);
    uint64_t v = 0;
    for (size_t i = 0; i < 10; i++) {
        if (i == left)
            return kn__err(KN_EFORMAT, "protobuf: offset %zu: truncated varint (%s)",
                           (size_t)(p - base), what);
        uint8_t b = p[i];
        if (i == 9 && (b & 0x80)) break; /* an 11th byte would follow */
        if (i == 9 && b > 1)
            return kn__err(KN_EFORMAT, "protobuf: offset %zu: varint (%s) overflows 64 bits",
                           (size_t)(p - base), what);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pp = p + i + 1;
            *out = v;
            return KN_OK;
        }
    }
    return kn__err(KN_EFORMAT, "protobuf: offset %zu: varint (%s) longer than 10 bytes",
                   (size_t)(p - base), what);
}

kn_status kn__pb_varint(kn_pb *m, uint64_t *out) {
    return pb_varint_at(&m->p, m->end, m->base, "value", out);
}

static uint64_t pb_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static kn_status pb_fixed(kn_pb *m, int n, const char *what, uint64_t *out) {
    size_t left = (size_t)(m->end - m->p);
    if (left < (size_t)n)
        return kn__err(KN_EFORMAT, "protobuf: offset %zu: %s needs %d bytes, %zu left",
                       kn__pb_offset(*m), what, n, left);
    *out = pb_le(m->p, n);
    m->p += n;
    return KN_OK;
}

kn_status kn__pb_fixed32(kn_pb *m, uint32_t *out) {
    uint64_t v = 0;
    kn_status s = pb_fixed(m, 4, "fixed32", &v);
    if (s == KN_OK) *out = (uint32_t)v;
    return s;
}

kn_status kn__pb_fixed64(kn_pb *m, uint64_t *out) {
    return pb_fixed(m, 8, "fixed64", out);
}

kn_status kn__pb_next(kn_pb *m, kn_pb_field *f) {
    if (m->p >= m->end) return KN_PB_DONE;
    size_t at = kn__pb_offset(*m);
    kn_pb r = *m; /* committed to *m only on success */
    uint64_t tag;
    kn_status s = pb_varint_at(&r.p, r.end, r.base, "tag", &tag);
    if (s != KN_OK) return s;
    uint64_t num = tag >> 3;
    int wire = (int)(tag & 7);
    if (num == 0)
        return kn__err(KN_EFORMAT, "protobuf: offset %zu: field number 0 (wire type %d)", at, wire);
    if (num > KN_PB_MAX_FIELD)
        return kn__err(KN_EFORMAT, "protobuf: offset %zu: field number %llu > %u", at,
                       (unsigned long long)num, KN_PB_MAX_FIELD);
    kn_pb_field out = {.num = (uint32_t)num, .wire = wire, .off = at};
    switch (wire) {
    case KN_PB_VARINT: s = pb_varint_at(&r.p, r.end, r.base, "varint field", &out.v); break;
    case KN_PB_I64: s = pb_fixed(&r, 8, "fixed64 field", &out.v); break;
    case KN_PB_I32: s = pb_fixed(&r, 4, "fixed32 field", &out.v); break;
    case KN_PB_LEN: {
        uint64_t len;
        s = pb_varint_at(&r.p, r.end, r.base, "length", &len);
        if (s != KN_OK) break;
        size_t left = (size_t)(r.end - r.p);
        if (len > (uint64_t)left)
            return kn__err(KN_EFORMAT,
                           "protobuf: offset %zu: field %llu length %llu past the end (%zu bytes "
                           "left)",
                           at, (unsigned long long)num, (unsigned long long)len, left);
        out.v = len;
        out.sub.base = r.base;
        out.sub.p = r.p;
        out.sub.end = r.p + (size_t)len;
        r.p = out.sub.end;
        break;
    }
    case 3:
    case 4:
        return kn__err(KN_EFORMAT,
                       "protobuf: offset %zu: field %llu uses wire type %d (groups are not "
                       "supported)",
                       at, (unsigned long long)num, wire);
    default:
        return kn__err(KN_EFORMAT, "protobuf: offset %zu: field %llu has invalid wire type %d", at,
                       (unsigned long long)num, wire);
    }
    if (s != KN_OK) return s;
    if (wire != KN_PB_LEN) {
        /* sub is an empty view at the field's end, so callers never see a stale pointer */
        out.sub.base = r.base;
        out.sub.p = out.sub.end = r.p;
    }
    *m = r;
    *f = out;
    return KN_OK;
}

kn_status kn__pb_packed_count(kn_pb sub, int wire, size_t *count) {
    size_t len = kn__pb_len(sub);
    switch (wire) {
    case KN_PB_I32:
    case KN_PB_I64: {
        size_t w = wire == KN_PB_I32 ? 4 : 8;
        if (len % w)
            return kn__err(KN_EFORMAT,
                           "protobuf: offset %zu: packed fixed%zu payload of %zu bytes is not a "
                           "multiple of %zu",
                           kn__pb_offset(sub), w * 8, len, w);
        *count = len / w;
        return KN_OK;
    }
    case KN_PB_VARINT: {
        size_t n = 0;
        uint64_t v;
        while (sub.p < sub.end) {
            kn_status s = kn__pb_varint(&sub, &v);
            if (s != KN_OK) return s;
            n++;
        }
        *count = n;
        return KN_OK;
    }
    default:
        return kn__err(KN_EINVAL,
                       "protobuf: packed fields hold varint, fixed32 or fixed64 "
                       "elements, not wire type %d",
                       wire);
    }
}

static const char *pb_wire_name(int wire) {
    switch (wire) {
    case KN_PB_VARINT: return "varint";
    case KN_PB_I64: return "fixed64";
    case KN_PB_LEN: return "length-delimited";
    case KN_PB_I32: return "fixed32";
    default: return "invalid";
    }
}

kn_status kn__pb_want(const kn_pb_field *f, int wire, const char *what) {
    if (f->wire == wire) return KN_OK;
    return kn__err(KN_EFORMAT,
                   "protobuf: offset %zu: %s (field %u): wire type %d (%s), expected %d (%s)",
                   f->off, what, f->num, f->wire, pb_wire_name(f->wire), wire, pb_wire_name(wire));
}
