/*
 * fuzz_pb.c - libFuzzer target for the protobuf wire-format reader (src/onnx/pb.h). Walks the
 * input as a message, descends into every length-delimited payload as a nested message (as a
 * schema-less reader would, up to KN_PB_MAX_DEPTH), and reads each payload as packed varints,
 * fixed32 and fixed64, checking the reader's own invariants. Built with
 * -fsanitize=fuzzer,address,undefined by `make fuzz` (clang, -DKILN_FUZZ=ON); run it briefly
 * with `./build-fuzz/fuzz_pb -max_total_time=20`.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "onnx/pb.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) abort();                                                                         \
    } while (0)

static void read_packed(kn_pb sub) {
    static const int wires[3] = {KN_PB_VARINT, KN_PB_I32, KN_PB_I64};
    for (int w = 0; w < 3; w++) {
        size_t count = 0;
        if (kn__pb_packed_count(sub, wires[w], &count) != KN_OK) continue;
        kn_pb m = sub;
        volatile uint64_t sink = 0; /* unsigned: wraps, no UB */
        for (size_t i = 0; i < count; i++) {
            uint64_t v = 0;
            uint32_t u = 0;
            kn_status s = wires[w] == KN_PB_VARINT ? kn__pb_varint(&m, &v)
                          : wires[w] == KN_PB_I32  ? kn__pb_fixed32(&m, &u)
                                                   : kn__pb_fixed64(&m, &v);
            CHECK(s == KN_OK); /* a validated count never fails to read */
            sink +=
                (uint64_t)(kn__pb_int64(v) ^ kn__pb_sint64(v) ^ kn__pb_int32(v) ^ kn__pb_sint32(u));
            sink += (uint64_t)(kn__pb_f32(u) == kn__pb_f32(u)) + (kn__pb_f64(v) == 0.0);
        }
        CHECK(kn__pb_len(m) == 0); /* the count covers the whole payload */
        (void)sink;
    }
}

static void walk(kn_pb m, int depth) {
    kn_pb_field f;
    kn_status s;
    while ((s = kn__pb_next(&m, &f)) == KN_OK) {
        CHECK(f.num >= 1 && f.num <= KN_PB_MAX_FIELD);
        CHECK(f.sub.p >= f.sub.base && f.sub.p <= f.sub.end && f.sub.end <= m.end);
        CHECK(m.p <= m.end);
        if (f.wire != KN_PB_LEN) continue;
        CHECK(f.v == kn__pb_len(f.sub));
        (void)kn__pb_str_eq(f.sub, "Conv");
        read_packed(f.sub);
        if (depth + 1 < KN_PB_MAX_DEPTH) walk(f.sub, depth + 1);
    }
    CHECK(s == KN_PB_DONE || s == KN_EFORMAT);
    CHECK(s != KN_EFORMAT || kn_last_error()[0] != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    walk(kn__pb_init(data, size), 0);
    return 0;
}
