/*
 * test_io.c - the .kiln container (safetensors), module weights and checkpoints (kiln/io.h).
 *
 * Covers: round trip of every dtype incl. 0-d and size-0 tensors and non-contiguous inputs;
 * metadata; the exact header bytes of a tiny file; every file kiln writes obeys the reference
 * safetensors loader's rules (checked here in C: header starts with '{', ranges contiguous from 0
 * and covering the data section); a fixture written by PyTorch (tools/st_reference.py); zero-copy
 * views outliving kn_file_close; unaligned tensors copied; hostile files (every truncation,
 * random bit flips, hand-made bad headers); atomic saves under injected failures; module
 * save/load (strict errors name the keys); checkpoints that resume training bit-exactly
 * (SGD momentum + StepLR + dropout RNG) and leave everything untouched when invalid.
 */
#define _GNU_SOURCE /* memmem */
#include <dirent.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_impl.h"
#include "io/io_impl.h"
#include "kiln/io.h"
#include "kn_test.h"

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s", g_dir, name);
    return b;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len ? (size_t)len : 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) len = -1;
    fclose(f);
    if (len < 0) {
        free(b);
        return NULL;
    }
    *n = (size_t)len;
    return b;
}

static int write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(b, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

/* A file from a header text (padded to make the data section 8-aligned) and data bytes. */
static int write_raw(const char *path, const char *header, const void *data, size_t dn) {
    size_t hl = strlen(header), pad = (8 - hl % 8) % 8;
    size_t total = 8 + hl + pad + dn;
    unsigned char *b = malloc(total);
    uint64_t n = hl + pad;
    memcpy(b, &n, 8);
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', pad);
    if (dn) memcpy(b + 8 + hl + pad, data, dn);
    int r = write_bytes(path, b, total);
    free(b);
    return r;
}

/* The reference (Rust) safetensors loader's rules, which are stricter than kiln's reader:
 * returns NULL when path obeys them, else the reason. */
static const char *st_rules(const char *path) {
    static char why[256];
    size_t n;
    unsigned char *b = read_all(path, &n);
    if (!b) return "unreadable";
    const char *r = NULL;
    uint64_t hl;
    json_object *root = NULL;
    if (n < 8) {
        r = "short";
        goto out;
    }
    memcpy(&hl, b, 8);
    if (hl > n - 8) {
        r = "header length";
        goto out;
    }
    if ((8 + hl) % 8) {
        r = "data section not 8-aligned";
        goto out;
    }
    if (b[8] != '{') {
        r = "header does not start with '{'";
        goto out;
    }
    char *h = malloc(hl + 1);
    memcpy(h, b + 8, hl);
    h[hl] = 0;
    root = json_tokener_parse(h);
    free(h);
    if (!root || !json_object_is_type(root, json_type_object)) {
        r = "JSON";
        goto out;
    }
    uint64_t data = n - 8 - hl;
    int cnt = 0;
    uint64_t begin[256], end[256];
    json_object_object_foreach(root, k, v) {
        if (strcmp(k, "__metadata__") == 0) continue;
        json_object *o;
        if (!json_object_object_get_ex(v, "data_offsets", &o) || cnt >= 256) {
            r = "entry";
            goto out;
        }
        begin[cnt] = (uint64_t)json_object_get_int64(json_object_array_get_idx(o, 0));
        end[cnt] = (uint64_t)json_object_get_int64(json_object_array_get_idx(o, 1));
        cnt++;
    }
    /* sort by begin (insertion sort), then contiguous from 0 */
    for (int i = 1; i < cnt; i++)
        for (int j = i; j > 0 && (begin[j - 1] > begin[j] ||
                                  (begin[j - 1] == begin[j] && end[j - 1] > end[j]));
             j--) {
            uint64_t t = begin[j];
            begin[j] = begin[j - 1];
            begin[j - 1] = t;
            t = end[j];
            end[j] = end[j - 1];
            end[j - 1] = t;
        }
    uint64_t pos = 0;
    for (int i = 0; i < cnt; i++) {
        if (begin[i] != pos) {
            snprintf(why, sizeof why, "range [%llu, %llu] does not start at %llu",
                     (unsigned long long)begin[i], (unsigned long long)end[i],
                     (unsigned long long)pos);
            r = why;
            goto out;
        }
        pos = end[i];
    }
    if (pos != data) r = "data section not fully covered";
out:
    json_object_put(root);
    free(b);
    return r;
}

static bool same_bytes(kn_tensor *a, kn_tensor *b) {
    if (kn_tensor_dtype(a) != kn_tensor_dtype(b) || kn_tensor_ndim(a) != kn_tensor_ndim(b))
        return false;
    int nd = kn_tensor_ndim(a);
    if (nd && memcmp(kn_tensor_shape(a), kn_tensor_shape(b), sizeof(int64_t) * nd)) return false;
    size_t nb = (size_t)kn_tensor_numel(a) * kn_dtype_size(kn_tensor_dtype(a));
    unsigned char *x = malloc(nb + 1), *y = malloc(nb + 1);
    bool ok = kn_tensor_read(a, kn_tensor_dtype(a), x, nb) == KN_OK &&
              kn_tensor_read(b, kn_tensor_dtype(b), y, nb) == KN_OK && memcmp(x, y, nb) == 0;
    free(x);
    free(y);
    return ok;
}

static bool file_equals(const char *path, const unsigned char *b, size_t n) {
    size_t m;
    unsigned char *c = read_all(path, &m);
    bool eq = c && m == n && memcmp(b, c, n) == 0;
    free(c);
    return eq;
}

/* Temp files "<base>.tmp.*" left in the test dir. */
static int leftover_tmp(const char *base) {
    DIR *d = opendir(g_dir);
    int n = 0;
    char pre[300];
    snprintf(pre, sizeof pre, "%s.tmp.", base);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strncmp(e->d_name, pre, strlen(pre)) == 0) n++;
    if (d) closedir(d);
    return n;
}

/* ---- round trips ---- */
static kn_tensor *make(kn_dtype dt, int nd, const int64_t *shape, int salt) {
    kn_tensor *t = kn_empty(dt, nd, shape);
    int64_t n = kn_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = dt == KN_BOOL           ? (double)((i + salt) % 2)
                   : dt == KN_U8           ? (double)((i * 37 + salt) % 256)
                   : kn_dtype_is_float(dt) ? (i - 3.0) * 0.25 + salt
                                           : (double)((i - 3) * 11 + salt);
        kn__store_f64(dt, (char *)kn_tensor_data(t) + i * kn_dtype_size(dt), v);
    }
    return t;
}

static void test_roundtrip_all_dtypes(void) {
    const int64_t s23[] = {2, 3}, s0[] = {0, 3}, s204[] = {2, 0, 4}, s4[] = {5};
    kn_named_tensor ts[32];
    int n = 0;
    static char names[32][32];
    for (int dt = 0; dt < KN_NDTYPES; dt++) {
        snprintf(names[n], 32, "%s.m", kn_dtype_name(dt));
        ts[n] = (kn_named_tensor){names[n], make(dt, 2, s23, dt)};
        n++;
        snprintf(names[n], 32, "%s.scalar", kn_dtype_name(dt));
        ts[n] = (kn_named_tensor){names[n], make(dt, 0, NULL, dt + 1)};
        n++;
        snprintf(names[n], 32, "%s.empty", kn_dtype_name(dt));
        ts[n] = (kn_named_tensor){names[n], make(dt, dt % 2 ? 3 : 2, dt % 2 ? s204 : s0, 0)};
        n++;
    }
    /* non-contiguous input: a transposed view */
    kn_tensor *base = make(KN_F32, 2, s23, 5);
    kn_tensor *tr = kn_transpose(base, 0, 1);
    ts[n++] = (kn_named_tensor){"transposed", tr};
    kn_tensor *row = kn_slice(base, 0, 1, 2, 1); /* contiguous view at a storage offset */
    ts[n++] = (kn_named_tensor){"row", row};
    ts[n++] = (kn_named_tensor){"odd.u8", make(KN_U8, 1, s4, 1)}; /* 5 bytes: misaligns a tail */
    const char *meta = "{\"author\":\"kiln test\",\"note\":\"quote \\\" and unicode \\u00e9\"}";
    const char *p = tpath("all.kiln");
    KT_OK(kn_save_tensors(p, ts, n, meta));
    const char *why = st_rules(p);
    if (why) KT_FAIL("not a valid safetensors file: %s", why);
    kn_file *f = kn_file_open(p);
    KT_NOTNULL(f);
    KT_EQ_INT(n, kn_file_count(f));
    for (int i = 0; i < n; i++)
        KT_TRUE(strcmp(kn_file_name(f, i), ts[i].name) == 0);
    kn_tensor *got[32];
    for (int i = 0; i < n; i++) {
        got[i] = kn_file_get(f, ts[i].name);
        KT_NOTNULL(got[i]);
        /* (core: kn_tensor_is_contiguous is false for fresh size-0 tensors like (2, 0, 4)) */
        if (kn_tensor_numel(got[i])) KT_TRUE(kn_tensor_is_contiguous(got[i]));
        /* kiln's layout puts every tensor at a multiple of its element size: zero copy */
        size_t es = kn_dtype_size(kn_tensor_dtype(got[i]));
        KT_EQ_INT(0, (uintptr_t)kn_tensor_data(got[i]) % es);
    }
    KT_TRUE(strcmp(kn_file_meta(f, "author"), "kiln test") == 0);
    KT_TRUE(strcmp(kn_file_meta(f, "note"), "quote \" and unicode \xc3\xa9") == 0);
    KT_TRUE(kn_file_meta(f, "absent") == NULL);
    json_object *mo = json_tokener_parse(kn_file_metadata(f));
    KT_TRUE(mo && json_object_object_length(mo) == 2);
    json_object_put(mo);
    KT_ERR(KN_EINVAL, kn_file_get(f, "nope"), "no tensor 'nope'");
    KT_TRUE(kn_file_name(f, n) == NULL);
    kn_file_close(f);
    /* views outlive the file */
    for (int i = 0; i < n; i++) {
        if (!same_bytes(got[i], ts[i].tensor)) KT_FAIL("tensor '%s' differs", ts[i].name);
        KT_EQ_INT(kn_tensor_ndim(ts[i].tensor), kn_tensor_ndim(got[i]));
    }
    /* writing into a view is allowed and never reaches the file */
    float *d = kn_tensor_data(got[0]);
    d[0] = 1234.5f;
    size_t before_n;
    unsigned char *before = read_all(p, &before_n);
    for (int i = 0; i < n; i++)
        kn_tensor_free(got[i]);
    KT_TRUE(file_equals(p, before, before_n));
    f = kn_file_open(p);
    kn_tensor *again = kn_file_get(f, ts[0].name);
    kn_file_close(f);
    KT_TRUE(same_bytes(again, ts[0].tensor));
    kn_tensor_free(again);
    free(before);
    for (int i = 0; i < n; i++)
        kn_tensor_free(ts[i].tensor);
    kn_tensor_free(base);
    /* no metadata, no tensors */
    KT_OK(kn_save_tensors(tpath("empty.kiln"), NULL, 0, NULL));
    KT_TRUE(st_rules(tpath("empty.kiln")) == NULL);
    f = kn_file_open(tpath("empty.kiln"));
    KT_NOTNULL(f);
    KT_EQ_INT(0, kn_file_count(f));
    KT_TRUE(strcmp(kn_file_metadata(f), "{}") == 0);
    kn_file_close(f);
}

static void test_header_bytes(void) {
    const float v[2] = {1.0f, -2.0f};
    const int64_t s[] = {2};
    kn_tensor *x = kn_from_data(KN_F32, 1, s, v);
    kn_tensor *b = kn_scalar(KN_BOOL, 1);
    kn_named_tensor ts[] = {{"x", x}, {"flag", b}};
    const char *p = tpath("tiny.kiln");
    KT_OK(kn_save_tensors(p, ts, 2, "{\"k\":\"v\"}"));
    size_t n;
    unsigned char *f = read_all(p, &n);
    KT_NOTNULL(f);
    const char *want = "{\"__metadata__\":{\"k\":\"v\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                       "\"data_offsets\":[0,8]},\"flag\":{\"dtype\":\"BOOL\",\"shape\":[],"
                       "\"data_offsets\":[8,9]}}";
    size_t wl = strlen(want);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)f[i] << (8 * i); /* little endian */
    KT_EQ_INT(0, (8 + hl) % 64);
    KT_EQ_INT((wl + 8 + 63) / 64 * 64 - 8, hl);
    KT_EQ_INT(8 + hl + 9, n);
    KT_TRUE(memcmp(f + 8, want, wl) == 0);
    for (size_t i = wl; i < hl; i++)
        KT_EQ_INT(' ', f[8 + i]);
    float got[2];
    memcpy(got, f + 8 + hl, 8);
    KT_NEAR(1.0, got[0], 0);
    KT_NEAR(-2.0, got[1], 0);
    KT_EQ_INT(1, f[8 + hl + 8]);
    free(f);
    kn_tensor_free(x);
    kn_tensor_free(b);
}

/* Data order: decreasing element size, stable: every tensor lands aligned. */
static void test_layout_order(void) {
    const int64_t s3[] = {3}, s1[] = {1};
    kn_tensor *a = make(KN_U8, 1, s3, 0), *b = make(KN_F64, 1, s1, 0), *c = make(KN_F16, 1, s3, 0),
              *d = make(KN_I32, 1, s1, 0), *e = make(KN_I64, 1, s3, 0);
    kn_named_tensor ts[] = {{"a", a}, {"b", b}, {"c", c}, {"d", d}, {"e", e}};
    const char *p = tpath("order.kiln");
    KT_OK(kn_save_tensors(p, ts, 5, NULL));
    KT_TRUE(st_rules(p) == NULL);
    size_t n;
    unsigned char *f = read_all(p, &n);
    uint64_t hl;
    memcpy(&hl, f, 8);
    char *h = strndup((char *)f + 8, hl);
    /* b (8) then e (8) then d (4) then c (2) then a (1) */
    KT_TRUE(strstr(h, "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}"));
    KT_TRUE(strstr(h, "\"e\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[8,32]}"));
    KT_TRUE(strstr(h, "\"d\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[32,36]}"));
    KT_TRUE(strstr(h, "\"c\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[36,42]}"));
    KT_TRUE(strstr(h, "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[42,45]}"));
    KT_TRUE(strncmp(h, "{\"a\":", 5) == 0); /* header keeps the caller's order */
    free(h);
    free(f);
    kn_tensor *ts2[] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++)
        kn_tensor_free(ts2[i]);
}

static const char *fixture_path(void) {
    static char buf[512];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/tests/data/torch_written.safetensors", src ? src : ".");
    return buf;
}

/* Written by PyTorch through tools/st_reference.py (values in its fixture()). */
static void test_torch_fixture(void) {
    kn_file *f = kn_file_open(fixture_path());
    KT_NOTNULL(f);
    KT_EQ_INT(11, kn_file_count(f));
    KT_TRUE(strcmp(kn_file_meta(f, "producer"), "tools/st_reference.py") == 0);
    struct {
        const char *name;
        kn_dtype dt;
        int nd;
        int64_t shape[2];
        int n;
        double v[8];
    } want[] = {
        {"a.f32", KN_F32, 2, {2, 3}, 6, {0, .5, 1, 1.5, 2, 2.5}},
        {"b.f64", KN_F64, 1, {4}, 4, {-1.25, -.25, .75, 1.75}},
        {"c.f16", KN_F16, 1, {3}, 3, {0, .25, .5}},
        {"d.bf16", KN_BF16, 2, {2, 2}, 4, {0, 2, 4, 6}},
        {"e.i64", KN_I64, 1, {6}, 6, {-3e12, -2e12, -1e12, 0, 1e12, 2e12}},
        {"f.i32", KN_I32, 1, {5}, 5, {0, -7, -14, -21, -28}},
        {"g.i8", KN_I8, 1, {8}, 8, {-4, -3, -2, -1, 0, 1, 2, 3}},
        {"h.u8", KN_U8, 1, {6}, 6, {250, 251, 252, 253, 254, 255}},
        {"i.bool", KN_BOOL, 1, {4}, 4, {1, 0, 1, 1}},
        {"scalar", KN_F32, 0, {0}, 1, {3.5}},
        {"empty", KN_F32, 2, {0, 4}, 0, {0}},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        kn_tensor *t = kn_file_get(f, want[k].name);
        KT_NOTNULL(t);
        KT_EQ_INT(want[k].dt, kn_tensor_dtype(t));
        KT_EQ_INT(want[k].nd, kn_tensor_ndim(t));
        for (int d = 0; d < want[k].nd; d++)
            KT_EQ_INT(want[k].shape[d], kn_tensor_shape(t)[d]);
        KT_EQ_INT(want[k].n, kn_tensor_numel(t));
        double got[8];
        KT_OK(kn_tensor_read(t, KN_F64, got, sizeof(double) * want[k].n));
        for (int i = 0; i < want[k].n; i++)
            KT_NEAR(want[k].v[i], got[i], 0);
        kn_tensor_free(t);
    }
    kn_file_close(f);
}

/* A tensor whose bytes are not aligned to its element size is copied. */
static void test_unaligned_copy(void) {
    unsigned char data[9] = {7};
    float v[2] = {1.5f, -3.0f};
    memcpy(data + 1, v, 8);
    const char *p = tpath("unaligned.kiln");
    KT_TRUE(write_raw(p,
                      "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}",
                      data, 9) == 0);
    kn_file *f = kn_file_open(p);
    KT_NOTNULL(f);
    kn_tensor *b = kn_file_get(f, "b");
    KT_NOTNULL(b);
    KT_EQ_INT(0, (uintptr_t)kn_tensor_data(b) % 4);
    KT_NEAR(1.5, kn_tensor_get(b, (int64_t[]){0}), 0);
    KT_NEAR(-3.0, kn_tensor_get(b, (int64_t[]){1}), 0);
    kn_tensor_free(b);
    /* holes in the data section are accepted by kiln */
    kn_file_close(f);
    KT_TRUE(write_raw(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data,
                      9) == 0);
    f = kn_file_open(p);
    KT_NOTNULL(f);
    kn_file_close(f);
}

/* ---- hostile files ---- */
static kn_tensor *g_small[4];
static const char *small_file(void) {
    const int64_t s2[] = {2}, s3[] = {3};
    g_small[0] = make(KN_F32, 1, s2, 1);
    g_small[1] = make(KN_I64, 1, s3, 2);
    g_small[2] = make(KN_BOOL, 1, s3, 0);
    g_small[3] = make(KN_F16, 0, NULL, 0);
    kn_named_tensor ts[] = {
        {"w", g_small[0]}, {"idx", g_small[1]}, {"mask", g_small[2]}, {"s", g_small[3]}};
    const char *p = tpath("small.kiln");
    if (kn_save_tensors(p, ts, 4, "{\"format\":\"kiln\"}")) return NULL;
    for (int i = 0; i < 4; i++)
        kn_tensor_free(g_small[i]);
    return p;
}

/* Opens path and, if that works, fetches and reads every tensor. Returns the open status. */
static kn_status exercise(const char *path) {
    kn_clear_error();
    kn_file *f = kn_file_open(path);
    if (!f) return kn_last_status();
    for (int i = 0; i < kn_file_count(f); i++) {
        kn_tensor *t = kn_file_get(f, kn_file_name(f, i));
        if (!t) continue;
        int64_t n = kn_tensor_numel(t);
        double *buf = malloc(sizeof(double) * (n ? (size_t)n : 1));
        kn_tensor_read(t, KN_F64, buf, sizeof(double) * (size_t)n);
        free(buf);
        kn_tensor_free(t);
    }
    (void)kn_file_metadata(f);
    (void)kn_file_meta(f, "format");
    kn_file_close(f);
    return KN_OK;
}

static void test_truncated_everywhere(void) {
    const char *p = small_file();
    KT_NOTNULL(p);
    size_t n;
    unsigned char *b = read_all(p, &n);
    KT_NOTNULL(b);
    const char *q = tpath("trunc.kiln");
    for (size_t len = 0; len < n; len++) {
        KT_TRUE(write_bytes(q, b, len) == 0);
        kn_status st = exercise(q);
        if (st != KN_EFORMAT)
            KT_FAIL("truncated to %zu of %zu bytes: %s (%s)", len, n, kn_status_name(st),
                    kn_last_error());
        if (!strstr(kn_last_error(), "trunc.kiln"))
            KT_FAIL("message lacks the path: %s", kn_last_error());
    }
    KT_TRUE(write_bytes(q, b, n) == 0);
    KT_EQ_INT(KN_OK, exercise(q));
    free(b);
}

static void test_bit_flips(void) {
    const char *p = small_file();
    KT_NOTNULL(p);
    size_t n;
    unsigned char *b = read_all(p, &n);
    uint64_t hl;
    memcpy(&hl, b, 8);
    unsigned char *c = malloc(n);
    const char *q = tpath("flip.kiln");
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int opened = 0, failed = 0;
    for (int it = 0; it < 200; it++) {
        memcpy(c, b, n);
        int flips = 1 + it % 3;
        for (int k = 0; k < flips; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t r = rng >> 33;
            /* mostly the length and header (the data bytes always parse) */
            size_t pos = (r % 10 < 8) ? (size_t)((r >> 4) % (8 + hl)) : (size_t)((r >> 4) % n);
            c[pos] ^= (unsigned char)(1u << ((r >> 20) % 8));
        }
        KT_TRUE(write_bytes(q, c, n) == 0);
        kn_status st = exercise(q);
        if (st == KN_OK)
            opened++;
        else if (st == KN_EFORMAT || st == KN_ELIMIT)
            failed++;
        else
            KT_FAIL("iteration %d: unexpected %s (%s)", it, kn_status_name(st), kn_last_error());
    }
    KT_TRUE(opened > 0 && failed > 0);
    free(b);
    free(c);
}

static void expect_open_err(const char *header, const void *data, size_t dn, kn_status want,
                            const char *substr) {
    const char *p = tpath("hostile.kiln");
    KT_TRUE(write_raw(p, header, data, dn) == 0);
    KT_ERR(want, kn_file_open(p), substr);
}

static void test_hostile_headers(void) {
    unsigned char z[64] = {0};
#define F32E(name, shape, off)                                                                     \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" off "}"
    expect_open_err("{" F32E("w", "[-1]", "[0,4]") "}", z, 4, KN_EFORMAT,
                    "shape[0] = -1 is negative");
    expect_open_err("{" F32E("w", "[1.0]", "[0,4]") "}", z, 4, KN_EFORMAT,
                    "shape[0] is not an integer");
    expect_open_err("{" F32E("w", "[\"1\"]", "[0,4]") "}", z, 4, KN_EFORMAT, "not an integer");
    expect_open_err("{" F32E("w", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", z, 4, KN_EFORMAT, "9 dims");
    expect_open_err("{" F32E("w", "[1099511627776,1099511627776]", "[0,4]") "}", z, 4, KN_EFORMAT,
                    "too large");
    expect_open_err("{" F32E("w", "[18446744073709551615]", "[0,4]") "}", z, 4, KN_EFORMAT, "");
    expect_open_err("{" F32E("w", "2", "[0,4]") "}", z, 4, KN_EFORMAT, "non-array shape");
    expect_open_err("{" F32E("conv1.weight", "[1024]", "[4096,8192]") "}", z, 64, KN_EFORMAT,
                    "tensor 'conv1.weight': data_offsets [4096, 8192] beyond data size 64");
    expect_open_err("{" F32E("w", "[2]", "[0,4]") "}", z, 8, KN_EFORMAT,
                    "data_offsets [0, 4] hold 4 bytes, F32 (2,) needs 8");
    expect_open_err("{" F32E("w", "[1]", "[8,4]") "}", z, 8, KN_EFORMAT, "are not a range");
    expect_open_err("{" F32E("w", "[1]", "[-4,0]") "}", z, 8, KN_EFORMAT, "are not a range");
    expect_open_err("{" F32E("w", "[1]", "[0,4,8]") "}", z, 8, KN_EFORMAT, "[begin, end]");
    expect_open_err("{" F32E("w", "[1]", "[0.0,4]") "}", z, 8, KN_EFORMAT, "[begin, end]");
    expect_open_err("{" F32E("a", "[2]", "[0,8]") "," F32E("b", "[2]", "[4,12]") "}", z, 16,
                    KN_EFORMAT, "overlap");
    expect_open_err("{" F32E("a", "[4]", "[0,16]") "," F32E("b", "[0]", "[8,8]") "}", z, 16,
                    KN_EFORMAT, "overlap");
    expect_open_err("{" F32E("a", "[1]", "[0,4]") "," F32E("a", "[1]", "[4,8]") "}", z, 8,
                    KN_EFORMAT, "duplicate name \"a\"");
    expect_open_err("{" F32E("a", "[1]", "[0,4]") "," F32E("\\u0061", "[1]", "[4,8]") "}", z, 8,
                    KN_EFORMAT, "duplicate name");
    expect_open_err("{\"w\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4,
                    KN_EFORMAT, "unknown dtype 'F12'");
    expect_open_err("{\"w\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, KN_EFORMAT,
                    "non-string dtype");
    expect_open_err("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, KN_EFORMAT,
                    "missing or non-string dtype");
    expect_open_err("{\"w\":[1,2]}", z, 4, KN_EFORMAT, "entry is not a JSON object");
    expect_open_err("[1,2]", z, 0, KN_EFORMAT, "not a JSON object");
    expect_open_err("\"text\"", z, 0, KN_EFORMAT, "not a JSON object");
    expect_open_err("{\"w\":", z, 0, KN_EFORMAT, "not valid JSON");
    expect_open_err("{'w':1}", z, 0, KN_EFORMAT, "not valid JSON");
    expect_open_err("{} x", z, 0, KN_EFORMAT, "not valid JSON");
    expect_open_err("{\"__metadata__\":{\"a\":1}}", z, 0, KN_EFORMAT, "value 'a' is not a string");
    expect_open_err("{\"__metadata__\":[]}", z, 0, KN_EFORMAT, "__metadata__ is not");
    expect_open_err("{\"a\\u0000b\":{}}", z, 0, KN_EFORMAT, "NUL");
    expect_open_err("{\"\xff\xfe\":{}}", z, 0, KN_EFORMAT, "not valid JSON");
    /* a NUL byte inside the header */
    {
        const char *p = tpath("hostile.kiln");
        unsigned char b[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', 0, ' ', ' ', ' ', ' '};
        KT_TRUE(write_bytes(p, b, 16) == 0);
        KT_ERR(KN_EFORMAT, kn_file_open(p), "NUL byte");
        /* header length beyond the file, and huge */
        uint64_t big = 9;
        memcpy(b, &big, 8);
        KT_TRUE(write_bytes(p, b, 16) == 0);
        KT_ERR(KN_EFORMAT, kn_file_open(p), "header length 9 beyond file size 16");
        big = UINT64_MAX;
        memcpy(b, &big, 8);
        KT_TRUE(write_bytes(p, b, 16) == 0);
        KT_ERR(KN_EFORMAT, kn_file_open(p), "beyond file size");
        big = 0;
        memcpy(b, &big, 8);
        KT_TRUE(write_bytes(p, b, 16) == 0);
        KT_ERR(KN_EFORMAT, kn_file_open(p), "too short");
        KT_TRUE(write_bytes(p, b, 7) == 0);
        KT_ERR(KN_EFORMAT, kn_file_open(p), "too short");
        KT_TRUE(write_bytes(p, b, 0) == 0);
        KT_ERR(KN_EFORMAT, kn_file_open(p), "too short");
        /* over the 100 MB limit in a (sparse) file that is big enough */
        big = 101u << 20;
        memcpy(b, &big, 8);
        KT_TRUE(write_bytes(p, b, 16) == 0);
        KT_TRUE(truncate(p, (off_t)(102u << 20)) == 0);
        KT_ERR(KN_ELIMIT, kn_file_open(p), "100 MB");
        unlink(p);
    }
    KT_ERR(KN_EIO, kn_file_open(tpath("does-not-exist.kiln")), "cannot open");
    KT_ERR(KN_EINVAL, kn_file_open(g_dir), "not a regular file");
    KT_TRUE(mkfifo(tpath("fifo"), 0600) == 0); /* must not block waiting for a writer */
    KT_ERR(KN_EINVAL, kn_file_open(tpath("fifo")), "not a regular file");
    unlink(tpath("fifo"));
    KT_ERR(KN_EINVAL, kn_file_open(NULL), "NULL");
    /* listed but unsupported dtype: open works, get refuses; bad bools refused on get */
    const char *p = tpath("hostile.kiln");
    unsigned char data[8] = {0, 1, 2, 0, 1, 0, 0, 0};
    KT_TRUE(write_raw(p,
                      "{\"h\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[4,8]},"
                      "\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}",
                      data, 8) == 0);
    kn_file *f = kn_file_open(p);
    KT_NOTNULL(f);
    KT_ERR(KN_EUNSUPPORTED, kn_file_get(f, "h"), "dtype I16");
    KT_ERR(KN_EFORMAT, kn_file_get(f, "m"), "bool element 2 is 2");
    kn_file_close(f);
#undef F32E
}

static void test_save_errors(void) {
    const int64_t s[] = {2};
    kn_tensor *t = kn_zeros(KN_F32, 1, s);
    const char *p = tpath("err.kiln");
    kn_named_tensor bad1[] = {{"a", t}, {NULL, t}};
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, bad1, 2, NULL));
    kn_named_tensor bad2[] = {{"a", t}, {"b", NULL}};
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, bad2, 2, NULL));
    KT_TRUE(strstr(kn_last_error(), "'b'"));
    kn_named_tensor dup[] = {{"a", t}, {"b", t}, {"a", t}};
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, dup, 3, NULL));
    KT_TRUE(strstr(kn_last_error(), "duplicate name 'a'"));
    kn_named_tensor res[] = {{"__metadata__", t}};
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, res, 1, NULL));
    kn_named_tensor ok[] = {{"a", t}};
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, ok, 1, "[1]"));
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, ok, 1, "{\"a\":1}"));
    KT_TRUE(strstr(kn_last_error(), "'a' is not a string"));
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, ok, 1, "{\"a\":\"x\"} junk"));
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, ok, -1, NULL));
    KT_STATUS(KN_EINVAL, kn_save_tensors(NULL, ok, 1, NULL));
    KT_STATUS(KN_EIO, kn_save_tensors(tpath("no/such/dir/x.kiln"), ok, 1, NULL));
    KT_TRUE(access(p, F_OK) != 0); /* nothing was written */
    KT_EQ_INT(0, leftover_tmp("err.kiln"));
    kn_tensor_free(t);
}

/* A failing save leaves the old file byte-identical and no temp file behind. */
static void test_atomic_save(void) {
    const int64_t s[] = {4}, big[] = {600, 600}; /* 1.4 MB non-contiguous: a copy when written */
    kn_tensor *a = kn_full(KN_F32, 1, s, 1.0);
    kn_named_tensor old[] = {{"a", a}};
    const char *p = tpath("atomic.kiln");
    KT_OK(kn_save_tensors(p, old, 1, "{\"v\":\"1\"}"));
    size_t n;
    unsigned char *orig = read_all(p, &n);
    kn_tensor *bsrc = kn_rand(KN_F32, 2, big);
    kn_tensor *bt = kn_transpose(bsrc, 0, 1);
    kn_tensor *c = kn_full(KN_I64, 1, s, 7.0);
    kn_named_tensor nw[] = {{"c", c}, {"a", a}, {"big", bt}};
    kn_named_tensor bad[] = {{"c", c}, {"a", NULL}};
    KT_STATUS(KN_EINVAL, kn_save_tensors(p, bad, 2, NULL));
    KT_TRUE(file_equals(p, orig, n));
    int failures = 0;
    for (long k = 1; k < 100; k++) {
        kn__alloc_fail_after(k);
        kn_status st = kn_save_tensors(p, nw, 3, "{\"v\":\"2\"}");
        kn__alloc_fail_after(0);
        if (st == KN_OK) break;
        KT_EQ_INT(KN_ENOMEM, st);
        failures++;
        if (!file_equals(p, orig, n)) KT_FAIL("allocation failure %ld changed the file", k);
        if (leftover_tmp("atomic.kiln")) KT_FAIL("allocation failure %ld left a temp file", k);
    }
    /* order, offsets, temp name, staging buffer (after the temp file exists), big copy */
    KT_TRUE(failures >= 5);
    kn_file *f = kn_file_open(p);
    KT_NOTNULL(f);
    KT_TRUE(strcmp(kn_file_meta(f, "v"), "2") == 0);
    kn_tensor *g = kn_file_get(f, "big");
    KT_TRUE(same_bytes(g, bt));
    kn_tensor_free(g);
    kn_file_close(f);
    KT_EQ_INT(0, leftover_tmp("atomic.kiln"));
    /* a replaced file keeps its permission bits */
    KT_TRUE(chmod(p, 0600) == 0);
    KT_OK(kn_save_tensors(p, old, 1, NULL));
    struct stat sb;
    KT_TRUE(stat(p, &sb) == 0);
    KT_EQ_INT(0600, sb.st_mode & 0777);
    free(orig);
    kn_tensor_free(a);
    kn_tensor_free(bsrc);
    kn_tensor_free(bt);
    kn_tensor_free(c);
}

/* Several threads fetch from one kn_file; views outlive the close. */
static kn_file *g_shared;
static void *reader(void *arg) {
    long bad = 0;
    for (int it = 0; it < 200; it++)
        for (int i = 0; i < kn_file_count(g_shared); i++) {
            kn_tensor *t = kn_file_get(g_shared, kn_file_name(g_shared, i));
            if (!t) bad++;
            kn_tensor_free(t);
        }
    return (void *)bad;
}
static void test_threads(void) {
    const char *p = small_file();
    g_shared = kn_file_open(p);
    KT_NOTNULL(g_shared);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, reader, NULL);
    long bad = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad += (long)r;
    }
    kn_file_close(g_shared);
    KT_EQ_INT(0, bad);
}

/* ---- modules ---- */
static kn_module *mlp(int hidden, bool bn) {
    kn_module *mods[5];
    int n = 0;
    mods[n++] = kn_nn_linear(4, hidden, true);
    if (bn) mods[n++] = kn_nn_batchnorm1d(hidden, 1e-5, 0.1);
    mods[n++] = kn_nn_relu();
    mods[n++] = kn_nn_dropout(0.25);
    mods[n++] = kn_nn_linear(hidden, 2, true);
    return kn_nn_sequential(mods, n);
}

static bool same_state(kn_module *a, kn_module *b) {
    kn_named_tensor x[32], y[32];
    int n = kn_module_state_dict(a, x, 32), m = kn_module_state_dict(b, y, 32);
    if (n != m) return false;
    for (int i = 0; i < n; i++)
        if (strcmp(x[i].name, y[i].name) || !same_bytes(x[i].tensor, y[i].tensor)) return false;
    return true;
}

static void test_module_save_load(void) {
    kn_manual_seed(1);
    kn_module *a = mlp(8, true);
    KT_NOTNULL(a);
    kn_init_normal_(kn_module_buffer(kn_module_child(a, "1"), "running_mean"), 0, 1);
    const char *p = tpath("mlp.kiln");
    KT_OK(kn_module_save(a, p));
    KT_TRUE(st_rules(p) == NULL);
    kn_file *f = kn_file_open(p);
    KT_NOTNULL(f);
    KT_TRUE(strcmp(kn_file_meta(f, "kind"), "weights") == 0);
    KT_TRUE(strcmp(kn_file_meta(f, "format"), "kiln") == 0);
    KT_TRUE(kn__file_find(f, "1.running_var") >= 0 && kn__file_find(f, "4.bias") >= 0);
    kn_file_close(f);

    kn_manual_seed(2);
    kn_module *b = mlp(8, true);
    KT_TRUE(!same_state(a, b));
    KT_OK(kn_module_load(b, p, true));
    KT_TRUE(same_state(a, b));

    /* strict: missing and unexpected keys are listed; nothing changes */
    kn_module *c = mlp(8, false); /* no batch norm: "1" is ReLU, linear is "3" */
    kn_manual_seed(3);
    kn_module *c0 = mlp(8, false);
    KT_OK(kn_module_load(c0, p, false)); /* non-strict: loads "0.*" only */
    KT_STATUS(KN_EFORMAT, kn_module_load(c, p, true));
    KT_TRUE(strstr(kn_last_error(), "missing key(s): \"3.weight\", \"3.bias\""));
    KT_TRUE(strstr(kn_last_error(), "unexpected key(s): \"1.weight\""));
    KT_TRUE(strstr(kn_last_error(), "\"4.bias\""));
    KT_TRUE(strstr(kn_last_error(), "Sequential"));
    kn_tensor *w0 = kn_module_param(kn_module_child(c0, "0"), "weight");
    kn_tensor *wa = kn_module_param(kn_module_child(a, "0"), "weight");
    KT_TRUE(same_bytes(w0, wa));

    /* shape mismatch: an error even when not strict; the model is untouched */
    kn_module *d = mlp(6, true), *d_copy = mlp(6, true);
    KT_OK(kn_module_save(d, tpath("d.kiln")));
    KT_OK(kn_module_load(d_copy, tpath("d.kiln"), true));
    KT_STATUS(KN_ESHAPE, kn_module_load(d, p, false));
    KT_TRUE(strstr(kn_last_error(), "size mismatch for '0.weight': shape (8, 4) in the file, "
                                    "(6, 4) in the model"));
    KT_TRUE(same_state(d, d_copy));

    /* a file of f64 tensors loads into the f32 model with a cast (PyTorch's copy_) */
    kn_named_tensor sd[32];
    int n = kn_module_state_dict(a, sd, 32);
    kn_tensor *conv[32];
    for (int i = 0; i < n; i++) {
        conv[i] = kn_cast(sd[i].tensor, KN_F64);
        sd[i].tensor = conv[i];
    }
    KT_OK(kn_save_tensors(tpath("f64.safetensors"), sd, n, NULL));
    for (int i = 0; i < n; i++)
        kn_tensor_free(conv[i]);
    kn_module *e = mlp(8, true);
    KT_OK(kn_module_load(e, tpath("f64.safetensors"), true));
    KT_TRUE(same_state(a, e));

    /* a failing save keeps the old weights file */
    size_t len;
    unsigned char *orig = read_all(p, &len);
    kn__alloc_fail_after(1);
    KT_STATUS(KN_ENOMEM, kn_module_save(d, p));
    kn__alloc_fail_after(0);
    KT_TRUE(file_equals(p, orig, len));
    free(orig);
    KT_STATUS(KN_EIO, kn_module_load(a, tpath("missing.kiln"), true));
    kn_module *mods[] = {a, b, c, c0, d, d_copy, e};
    for (int i = 0; i < 7; i++)
        kn_module_free(mods[i]);
}

/* ---- checkpoints ---- */
typedef struct trainer {
    kn_module *model;
    kn_optimizer *opt;
    kn_scheduler *sched;
} trainer;

static trainer trainer_new(uint64_t seed) {
    kn_manual_seed(seed);
    trainer t = {.model = mlp(8, true)};
    kn_sgd_opts o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3};
    t.opt = kn_sgd_for(t.model, &o);
    t.sched = kn_steplr_new(t.opt, 2, 0.5);
    return t;
}
static void trainer_free(trainer *t) {
    kn_scheduler_free(t->sched);
    kn_optimizer_free(t->opt);
    kn_module_free(t->model);
}

/* One step on a batch drawn from the global RNG (so the RNG state matters twice: data and
 * dropout). */
static kn_status train_step(trainer *t) {
    kn_scope s = kn_scope_begin();
    const int64_t xs[] = {16, 4}, ys[] = {16, 2};
    kn_tensor *x = kn_randn(KN_F32, 2, xs), *y = kn_randn(KN_F32, 2, ys);
    kn_status st = kn_optimizer_zero_grad(t->opt, true);
    kn_tensor *loss = kn_mse_loss(kn_module_forward(t->model, x), y, KN_REDUCE_MEAN);
    if (!st) st = loss ? kn_backward(loss, NULL) : kn_last_status();
    if (!st) st = kn_optimizer_step(t->opt);
    if (!st) st = kn_scheduler_step(t->sched);
    kn_scope_end(s);
    return st;
}

static void test_checkpoint_resume(void) {
    trainer a = trainer_new(7);
    for (int i = 0; i < 3; i++)
        KT_OK(train_step(&a));
    const char *p = tpath("ckpt.kiln");
    kn_checkpoint ca = {.model = a.model,
                        .optimizer = a.opt,
                        .scheduler = a.sched,
                        .step = 3,
                        .epoch = 1,
                        .extra_json = "{\"note\":\"resume test\"}"};
    KT_OK(kn_checkpoint_save(p, &ca));
    KT_TRUE(st_rules(p) == NULL);
    kn_file *f = kn_file_open(p);
    KT_NOTNULL(f);
    KT_TRUE(strcmp(kn_file_meta(f, "kind"), "checkpoint") == 0);
    KT_TRUE(strcmp(kn_file_meta(f, "optimizer"), "SGD") == 0);
    KT_TRUE(strcmp(kn_file_meta(f, "step"), "3") == 0);
    KT_TRUE(strcmp(kn_file_meta(f, "extra"), "{\"note\":\"resume test\"}") == 0);
    KT_TRUE(kn_file_meta(f, "rng_counter") && kn_file_meta(f, "scheduler_base_lr"));
    KT_TRUE(kn__file_find(f, "optimizer.state.0.momentum_buffer") >= 0);
    kn_file_close(f);
    kn_rng_state rs = kn_rng_get_state();
    /* the original continues */
    for (int i = 0; i < 4; i++)
        KT_OK(train_step(&a));
    double lr_a = kn_optimizer_lr(a.opt);
    kn_rng_state ra = kn_rng_get_state();

    /* fresh instances (other seed, other init), restored, continue the same way */
    trainer b = trainer_new(12345);
    KT_TRUE(!same_state(a.model, b.model));
    kn_checkpoint cb = {.model = b.model, .optimizer = b.opt, .scheduler = b.sched};
    KT_OK(kn_checkpoint_load(p, &cb));
    KT_EQ_INT(3, cb.step);
    KT_EQ_INT(1, cb.epoch);
    kn_rng_state rb0 = kn_rng_get_state();
    KT_TRUE(rb0.seed == rs.seed && rb0.counter == rs.counter);
    KT_EQ_INT(3, kn_scheduler_last_epoch(b.sched));
    for (int i = 0; i < 4; i++)
        KT_OK(train_step(&b));
    KT_TRUE(same_state(a.model, b.model)); /* bit-exact */
    KT_TRUE(kn_optimizer_lr(b.opt) == lr_a);
    kn_rng_state rb = kn_rng_get_state();
    KT_TRUE(rb.seed == ra.seed && rb.counter == ra.counter);

    /* kn_module_load reads the weights of a checkpoint (optimizer entries are not unexpected) */
    kn_module *m = mlp(8, true);
    KT_OK(kn_module_load(m, p, true));
    kn_module_free(m);
    trainer_free(&a);
    trainer_free(&b);
}

/* An invalid checkpoint modifies nothing: model, optimizer, scheduler, RNG. */
static void test_checkpoint_invalid(void) {
    trainer a = trainer_new(3);
    for (int i = 0; i < 2; i++)
        KT_OK(train_step(&a));
    const char *p = tpath("ckpt2.kiln");
    kn_checkpoint ca = {.model = a.model, .optimizer = a.opt, .scheduler = a.sched, .step = 2};
    KT_OK(kn_checkpoint_save(p, &ca));

    trainer b = trainer_new(99);
    KT_OK(train_step(&b));
    kn_module *other = mlp(6, true); /* (initialisation draws from the RNG: before r0) */
    kn_adam_opts ao = {0};
    kn_optimizer *adam = kn_adam_for(a.model, &ao);
    const char *q = tpath("ckpt2.snapshot.kiln");
    kn_checkpoint cs = {.model = b.model, .optimizer = b.opt, .scheduler = b.sched, .step = 1};
    KT_OK(kn_checkpoint_save(q, &cs)); /* b's state, to compare with later */
    kn_rng_state r0 = kn_rng_get_state();
    double lr0 = kn_optimizer_lr(b.opt);
    int64_t le0 = kn_scheduler_last_epoch(b.sched);

    size_t n;
    unsigned char *buf = read_all(p, &n);
    const char *bad = tpath("ckpt2.bad.kiln");
    kn_checkpoint cb = {.model = b.model, .optimizer = b.opt, .scheduler = b.sched, .step = 77};
    /* truncated */
    KT_TRUE(write_bytes(bad, buf, n - 3) == 0);
    KT_STATUS(KN_EFORMAT, kn_checkpoint_load(bad, &cb));
    /* a weights file is not a checkpoint */
    KT_OK(kn_module_save(a.model, bad));
    KT_STATUS(KN_EFORMAT, kn_checkpoint_load(bad, &cb));
    KT_TRUE(strstr(kn_last_error(), "not a kiln checkpoint"));
    /* a model of another shape */
    kn_checkpoint co = {.model = other};
    KT_OK(kn_checkpoint_save(bad, &co));
    KT_STATUS(KN_EFORMAT, kn_checkpoint_load(bad, &cb)); /* no optimizer state in the file */
    KT_TRUE(strstr(kn_last_error(), "lacks \"optimizer\""));
    kn_checkpoint cm = {.model = b.model, .step = 77};
    KT_STATUS(KN_ESHAPE, kn_checkpoint_load(bad, &cm));
    KT_TRUE(strstr(kn_last_error(), "size mismatch for '0.weight'"));
    kn_module_free(other);
    /* another optimizer */
    kn_checkpoint cad = {.model = a.model, .optimizer = adam};
    KT_OK(kn_checkpoint_save(bad, &cad));
    KT_STATUS(KN_EFORMAT, kn_checkpoint_load(bad, &cb));
    KT_TRUE(strstr(kn_last_error(), "Adam"));
    kn_optimizer_free(adam);
    /* corrupt metadata: rng_counter not a number (header edited in place, same length) */
    {
        unsigned char *c = malloc(n);
        memcpy(c, buf, n);
        char *h = memmem(c, n, "\"rng_counter\":\"", 15);
        KT_NOTNULL(h);
        h[15] = 'x';
        KT_TRUE(write_bytes(bad, c, n) == 0);
        free(c);
        KT_STATUS(KN_EFORMAT, kn_checkpoint_load(bad, &cb));
        KT_TRUE(strstr(kn_last_error(), "rng_counter"));
    }
    /* a missing model tensor (renamed in place) */
    {
        unsigned char *c = malloc(n);
        memcpy(c, buf, n);
        char *h = memmem(c, n, "\"4.bias\"", 8);
        KT_NOTNULL(h);
        h[1] = '5';
        KT_TRUE(write_bytes(bad, c, n) == 0);
        free(c);
        KT_STATUS(KN_EFORMAT, kn_checkpoint_load(bad, &cb));
        KT_TRUE(strstr(kn_last_error(), "missing key(s): \"4.bias\""));
        KT_TRUE(strstr(kn_last_error(), "unexpected key(s): \"5.bias\""));
    }
    /* optimizer state the optimizer refuses (a parameter index it does not have): the
     * scheduler, already restored by then, is rolled back */
    {
        unsigned char *c = malloc(n);
        memcpy(c, buf, n);
        char *h = memmem(c, n, "\"optimizer.state.5.", 19);
        KT_NOTNULL(h);
        h[17] = '9';
        KT_TRUE(write_bytes(bad, c, n) == 0);
        free(c);
        kn_status st = kn_checkpoint_load(bad, &cb);
        KT_TRUE(st != KN_OK);
        KT_TRUE(strstr(kn_last_error(), "9"));
    }
    /* nothing changed */
    KT_EQ_INT(77, cb.step);
    kn_rng_state r1 = kn_rng_get_state();
    KT_TRUE(r1.seed == r0.seed && r1.counter == r0.counter);
    KT_TRUE(kn_optimizer_lr(b.opt) == lr0);
    KT_EQ_INT(le0, kn_scheduler_last_epoch(b.sched));
    KT_OK(kn_checkpoint_save(bad, &cs));
    size_t n1, n2;
    unsigned char *s1 = read_all(q, &n1), *s2 = read_all(bad, &n2);
    KT_TRUE(s1 && s2 && n1 == n2 && memcmp(s1, s2, n1) == 0);
    free(s1);
    free(s2);
    free(buf);
    trainer_free(&a);
    trainer_free(&b);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/kiln_test_io.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    KT_RUN(test_roundtrip_all_dtypes);
    KT_RUN(test_header_bytes);
    KT_RUN(test_layout_order);
    KT_RUN(test_torch_fixture);
    KT_RUN(test_unaligned_copy);
    KT_RUN(test_truncated_everywhere);
    KT_RUN(test_bit_flips);
    KT_RUN(test_hostile_headers);
    KT_RUN(test_save_errors);
    KT_RUN(test_atomic_save);
    KT_RUN(test_threads);
    KT_RUN(test_module_save_load);
    KT_RUN(test_checkpoint_resume);
    KT_RUN(test_checkpoint_invalid);
    /* clean up the temp dir (KILN_TEST_KEEP=1 keeps it, e.g. for tools/st_reference.py --verify) */
    const char *keep = getenv("KILN_TEST_KEEP");
    if (keep && *keep && strcmp(keep, "0") != 0) {
        printf("kept test files in %s\n", g_dir);
        return kt_finish();
    }
    DIR *d = opendir(g_dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(tpath(e->d_name));
    if (d) closedir(d);
    rmdir(g_dir);
    return kt_finish();
}
