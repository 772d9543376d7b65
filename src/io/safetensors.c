/*
 * safetensors.c - the .kiln container: safetensors' layout, read and written.
 *
 *   [u64 N, little endian][N bytes of JSON header, space padded][data section]
 *   header: {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [2, 3],
 *            "data_offsets": [begin, end]}, ...}   offsets relative to the data section.
 *
 * Writing: the header lists tensors in the caller's order; the data section holds them packed
 * with no holes (safetensors' rule) in order of decreasing element size (stable), so with the
 * data section starting at a 64-byte file offset (the header is space padded to make 8 + N a
 * multiple of 64) every tensor starts at a multiple of its element size. Bytes are C order,
 * little endian. The write is atomic: "<path>.tmp.<pid>.<seq>" in the same directory, fsync,
 * rename, fsync of the directory; on failure the temp file is removed and an existing file at
 * path is untouched.
 *
 * Reading: the header is untrusted. kn_file_open checks the length (<= file size - 8, <= 100 MB),
 * that the JSON parses (strict, valid UTF-8, no NUL characters, only whitespace after it) into an
 * object without duplicate names, every entry's dtype, shape (<= 8 non-negative integer dims,
 * byte size overflow checked), data_offsets (inside the data section, matching the byte size)
 * and that no two byte ranges overlap; "__metadata__" must map strings to strings. Holes in the
 * data section are accepted. The file is mapped MAP_PRIVATE: tensors from kn_file_get view the
 * mapping (zero copy) when their bytes are aligned to the element size, else they are copies.
 * Views hold a reference on the mapping, so they outlive kn_file_close. Writing into a view is
 * allowed (copy on write: the file never changes) and is seen by other views of the same name
 * from the same kn_file. Bool tensors are checked to hold only 0 and 1 when fetched.
 *
 * Not here: module/checkpoint logic (checkpoint.c); big-endian hosts (refused at compile time).
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_impl.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kiln's file I/O assumes a little-endian host"
#endif

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* 100 MB, as safetensors */
#define ST_ALIGN 64                         /* file offset of the data section */
#define ST_STAGE (1u << 20)                 /* write staging buffer for small tensors */

/* ---- dtypes: the first KN_NDTYPES rows are indexed by kn_dtype ---- */
typedef struct st_dtype {
    const char *name;
    kn_dtype dt; /* KN_NDTYPES: a safetensors dtype kiln does not compute with */
    unsigned size;
} st_dtype;
static const st_dtype DTYPES[] = {
    {"F32", KN_F32, 4},         {"F64", KN_F64, 8},         {"F16", KN_F16, 2},
    {"BF16", KN_BF16, 2},       {"I8", KN_I8, 1},           {"U8", KN_U8, 1},
    {"I32", KN_I32, 4},         {"I64", KN_I64, 8},         {"BOOL", KN_BOOL, 1},
    {"I16", KN_NDTYPES, 2},     {"U16", KN_NDTYPES, 2},     {"U32", KN_NDTYPES, 4},
    {"U64", KN_NDTYPES, 8},     {"F8_E4M3", KN_NDTYPES, 1}, {"F8_E5M2", KN_NDTYPES, 1},
    {"F8_E8M0", KN_NDTYPES, 1},
};
#define ST_NDTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

static const st_dtype *dtype_lookup(const char *s) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(DTYPES[i].name, s) == 0) return &DTYPES[i];
    return NULL;
}

/* ---- the mapping, shared by the file and the tensors viewing it ---- */
typedef struct st_map {
    _Atomic long refs;
    void *base;
    size_t len;
} st_map;

static void map_unref(st_map *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    munmap(m->base, m->len);
    kn__free(m);
}
static void map_release_cb(void *data, void *user) {
    (void)data;
    map_unref(user);
}

typedef struct st_entry {
    char *name;
    const st_dtype *dt;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

struct kn_file {
    char *path;
    st_map *map;
    const unsigned char *data; /* data section */
    uint64_t data_len;
    int n;
    st_entry *e;
    int *by_name; /* entry indices sorted by name */
    int nmeta;
    char **mkey, **mval;
    char *meta_json;
};

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = kn__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- header scanning: duplicate names and NUL characters (json-c hides both) ---- */
typedef struct span {
    const char *p;
    size_t n;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Walks JSON text already accepted by json-c. Counts the top-level keys (and stores their raw
 * spans when keys != NULL); returns -1 when a string holds an escaped NUL (\u0000), -2 on a
 * single-quoted string (json-c accepts those even in strict mode; JSON does not). */
static int64_t scan_header(const char *h, size_t n, span *keys) {
    int depth = 0;
    bool in_str = false, esc = false, expect_key = false, is_key = false;
    int64_t count = 0;
    size_t kstart = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (in_str) {
            if (esc) {
                esc = false;
                if (c == 'u' && i + 4 < n && memcmp(h + i + 1, "0000", 4) == 0) return -1;
            } else if (c == '\\') {
                esc = true;
            } else if (c == '"') {
                in_str = false;
                if (is_key) {
                    if (keys) keys[count] = (span){h + kstart, i - kstart};
                    count++;
                }
            }
            continue;
        }
        switch (c) {
        case '\'': return -2;
        case '{':
            depth++;
            if (depth == 1) expect_key = true;
            break;
        case '[': depth++; break;
        case '}':
        case ']': depth--; break;
        case ',':
            if (depth == 1) expect_key = true;
            break;
        case '"':
            in_str = true;
            is_key = depth == 1 && expect_key;
            if (is_key) {
                kstart = i + 1;
                expect_key = false;
            }
            break;
        default: break;
        }
    }
    return count;
}

/* ---- kn_file ---- */
static kn_status fmt_err(const kn_file *f, const char *fmt, ...) KN_PRINTF(2, 3);
static kn_status fmt_err(const kn_file *f, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kn__err(KN_EFORMAT, "%s: %s", f->path, msg);
}

/* A JSON integer as int64 (json-c clamps values beyond int64 to INT64_MAX). */
static bool json_int(json_object *v, int64_t *out) {
    if (!v || !json_object_is_type(v, json_type_int)) return false;
    *out = json_object_get_int64(v);
    return true;
}

static kn_status parse_entry(kn_file *f, st_entry *e, const char *name, json_object *v) {
    json_object *d, *sh, *off;
    if (!json_object_is_type(v, json_type_object))
        return fmt_err(f, "tensor '%s': entry is not a JSON object", name);
    if (!json_object_object_get_ex(v, "dtype", &d) || !json_object_is_type(d, json_type_string))
        return fmt_err(f, "tensor '%s': missing or non-string dtype", name);
    e->dt = dtype_lookup(json_object_get_string(d));
    if (!e->dt)
        return fmt_err(f, "tensor '%s': unknown dtype '%.40s'", name, json_object_get_string(d));
    if (!json_object_object_get_ex(v, "shape", &sh) || !json_object_is_type(sh, json_type_array))
        return fmt_err(f, "tensor '%s': missing or non-array shape", name);
    size_t nd = json_object_array_length(sh);
    if (nd > KN_MAX_DIMS)
        return fmt_err(f, "tensor '%s': shape has %zu dims (kiln supports at most %d)", name, nd,
                       KN_MAX_DIMS);
    e->ndim = (int)nd;
    /* the byte size, checked like kn__check_shape so kn_file_get cannot fail on the shape */
    uint64_t nbytes = e->dt->size;
    bool zero = false;
    for (int i = 0; i < e->ndim; i++) {
        int64_t s;
        if (!json_int(json_object_array_get_idx(sh, i), &s))
            return fmt_err(f, "tensor '%s': shape[%d] is not an integer", name, i);
        if (s < 0)
            return fmt_err(f, "tensor '%s': shape[%d] = %lld is negative", name, i, (long long)s);
        e->shape[i] = s;
        if (s == 0) zero = true;
        if (__builtin_mul_overflow(nbytes, (uint64_t)s, &nbytes) || nbytes > ((uint64_t)1 << 48))
            return fmt_err(f, "tensor '%s': shape too large", name);
    }
    if (zero) nbytes = 0;
    int64_t b, en;
    if (!json_object_object_get_ex(v, "data_offsets", &off) ||
        !json_object_is_type(off, json_type_array) || json_object_array_length(off) != 2 ||
        !json_int(json_object_array_get_idx(off, 0), &b) ||
        !json_int(json_object_array_get_idx(off, 1), &en))
        return fmt_err(f, "tensor '%s': data_offsets must be [begin, end] integers", name);
    if (b < 0 || en < b)
        return fmt_err(f, "tensor '%s': data_offsets [%lld, %lld] are not a range", name,
                       (long long)b, (long long)en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->end > f->data_len)
        return fmt_err(f, "tensor '%s': data_offsets [%llu, %llu] beyond data size %llu", name,
                       (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)f->data_len);
    if (e->end - e->begin != nbytes) {
        char sb[96];
        return fmt_err(f,
                       "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, %s %s needs %llu",
                       name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin), e->dt->name,
                       kn__shape_str(sb, sizeof sb, e->ndim, e->shape), (unsigned long long)nbytes);
    }
    e->name = dupstr(name);
    return e->name ? KN_OK : KN_ENOMEM;
}

static kn_status parse_metadata(kn_file *f, json_object *m) {
    if (!json_object_is_type(m, json_type_object))
        return fmt_err(f, "__metadata__ is not a JSON object");
    int n = json_object_object_length(m);
    f->mkey = kn__calloc(n ? n : 1, sizeof(char *));
    f->mval = kn__calloc(n ? n : 1, sizeof(char *));
    if (!f->mkey || !f->mval) return KN_ENOMEM;
    json_object_object_foreach(m, k, v) {
        if (!json_object_is_type(v, json_type_string))
            return fmt_err(f, "__metadata__ value '%.64s' is not a string", k);
        f->mkey[f->nmeta] = dupstr(k);
        f->mval[f->nmeta] = dupstr(json_object_get_string(v));
        f->nmeta++;
        if (!f->mkey[f->nmeta - 1] || !f->mval[f->nmeta - 1]) return KN_ENOMEM;
    }
    f->meta_json = dupstr(
        json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    return f->meta_json ? KN_OK : KN_ENOMEM;
}

static int by_range(const void *a, const void *b, void *ctx) {
    const st_entry *e = ctx, *x = &e[*(const int *)a], *y = &e[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}
static int by_name(const void *a, const void *b, void *ctx) {
    const st_entry *e = ctx;
    return strcmp(e[*(const int *)a].name, e[*(const int *)b].name);
}

/* Names the duplicate key of a header whose raw key count exceeds json-c's. */
static kn_status duplicate_err(kn_file *f, const char *h, size_t n, int64_t count) {
    span *k = kn__malloc(sizeof(span) * (size_t)count);
    if (!k) return KN_ENOMEM;
    scan_header(h, n, k);
    qsort(k, (size_t)count, sizeof *k, span_cmp);
    for (int64_t i = 1; i < count; i++)
        if (span_cmp(&k[i - 1], &k[i]) == 0) {
            int len = k[i].n > 64 ? 64 : (int)k[i].n;
            const char *p = k[i].p;
            kn__free(k);
            return fmt_err(f, "duplicate name \"%.*s\" in the header", len, p);
        }
    kn__free(k);
    return fmt_err(f, "duplicate name in the header (names equal once unescaped)");
}

static kn_status parse_header(kn_file *f, const unsigned char *base, size_t size) {
    uint64_t hlen = 0;
    memcpy(&hlen, base, 8); /* little endian host */
    if (hlen > size - 8)
        return fmt_err(f, "header length %llu beyond file size %zu", (unsigned long long)hlen,
                       size);
    if (hlen > ST_MAX_HEADER)
        return kn__err(KN_ELIMIT, "%s: header length %llu over the 100 MB limit", f->path,
                       (unsigned long long)hlen);
    if (hlen < 2) return fmt_err(f, "header length %llu is too short", (unsigned long long)hlen);
    const char *h = (const char *)base + 8;
    f->data = base + 8 + hlen;
    f->data_len = size - 8 - hlen;
    if (memchr(h, 0, hlen)) return fmt_err(f, "header contains a NUL byte");

    kn_status st = KN_OK;
    json_tokener *tok = json_tokener_new_ex(16);
    if (!tok) return kn__err(KN_ENOMEM, "%s: out of memory parsing the header", f->path);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, h, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        st = fmt_err(f, "header is not valid JSON (%s at byte %zu)",
                     jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr),
                     end);
        goto out;
    }
    for (size_t i = end; i < hlen; i++)
        if (h[i] != ' ' && h[i] != '\t' && h[i] != '\n' && h[i] != '\r') {
            st = fmt_err(f, "bytes after the JSON header at byte %zu", i);
            goto out;
        }
    if (!json_object_is_type(root, json_type_object)) {
        st = fmt_err(f, "header is not a JSON object");
        goto out;
    }
    int nkeys = json_object_object_length(root);
    int64_t raw = scan_header(h, end, NULL);
    if (raw < 0) {
        st = fmt_err(f, raw == -1 ? "header string contains a NUL character (\\u0000)"
                                  : "header is not valid JSON (single-quoted string)");
        goto out;
    }
    if (raw != nkeys) {
        st = duplicate_err(f, h, end, raw);
        goto out;
    }
    json_object *meta = NULL;
    json_object_object_get_ex(root, "__metadata__", &meta);
    int n = nkeys - (meta != NULL);
    f->e = kn__calloc(n ? n : 1, sizeof *f->e);
    f->by_name = kn__malloc(sizeof(int) * (n ? n : 1));
    if (!f->e || !f->by_name) {
        st = KN_ENOMEM;
        goto out;
    }
    if (meta && (st = parse_metadata(f, meta))) goto out;
    json_object_object_foreach(root, key, val) {
        if (val == meta && strcmp(key, "__metadata__") == 0) continue;
        if ((st = parse_entry(f, &f->e[f->n], key, val))) goto out;
        f->by_name[f->n] = f->n;
        f->n++;
    }
    /* no two byte ranges overlap (an empty range may touch its neighbours' ends) */
    qsort_r(f->by_name, f->n, sizeof(int), by_range, f->e);
    for (int i = 1; i < f->n; i++) {
        const st_entry *a = &f->e[f->by_name[i - 1]], *b = &f->e[f->by_name[i]];
        if (b->begin < a->end) {
            st = fmt_err(f, "tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", a->name,
                         (unsigned long long)a->begin, (unsigned long long)a->end, b->name,
                         (unsigned long long)b->begin, (unsigned long long)b->end);
            goto out;
        }
    }
    qsort_r(f->by_name, f->n, sizeof(int), by_name, f->e);
out:
    json_object_put(root);
    return st;
}

kn_file *kn_file_open(const char *path) {
    if (!path) return kn__errp(KN_EINVAL, "file_open: path is NULL");
    /* O_NONBLOCK: a FIFO must not block the open (it is refused below as not regular) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return kn__errp(KN_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kn__errp(KN_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return kn__errp(KN_EINVAL, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return kn__errp(KN_EFORMAT, "%s: %zu bytes, too short for a safetensors header", path,
                        size);
    }
    kn_file *f = kn__calloc(1, sizeof *f);
    st_map *m = kn__calloc(1, sizeof *m);
    char *p = dupstr(path);
    void *base =
        (f && m && p) ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    int e = errno;
    close(fd);
    if (base == MAP_FAILED) {
        if (f && m && p) kn__err(KN_EIO, "%s: cannot map: %s", path, strerror(e));
        kn__free(f);
        kn__free(m);
        kn__free(p);
        return NULL;
    }
    atomic_init(&m->refs, 1);
    m->base = base;
    m->len = size;
    f->map = m;
    f->path = p;
    if (parse_header(f, base, size) != KN_OK) {
        kn_file_close(f);
        return NULL;
    }
    return f;
}

void kn_file_close(kn_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++)
        kn__free(f->e[i].name);
    kn__free(f->e);
    kn__free(f->by_name);
    for (int i = 0; i < f->nmeta; i++) {
        kn__free(f->mkey[i]);
        kn__free(f->mval[i]);
    }
    kn__free(f->mkey);
    kn__free(f->mval);
    kn__free(f->meta_json);
    kn__free(f->path);
    map_unref(f->map);
    kn__free(f);
}

int kn_file_count(const kn_file *f) {
    return f ? f->n : 0;
}

const char *kn_file_name(const kn_file *f, int i) {
    if (!f || i < 0 || i >= f->n)
        return kn__errp(KN_EINVAL, "file_name: index %d out of range [0, %d)", i, f ? f->n : 0);
    return f->e[i].name;
}

const char *kn_file_metadata(const kn_file *f) {
    return f && f->meta_json ? f->meta_json : "{}";
}

const char *kn_file_meta(const kn_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->mkey[i], key) == 0) return f->mval[i];
    return NULL;
}

int kn__file_find(const kn_file *f, const char *name) {
    if (!f || !name) return -1;
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, i = f->by_name[mid];
        int c = strcmp(name, f->e[i].name);
        if (c == 0) return i;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

void kn__file_entry(const kn_file *f, int i, kn_dtype *dt, int *ndim, const int64_t **shape) {
    const st_entry *e = &f->e[i];
    if (dt) *dt = e->dt->dt;
    if (ndim) *ndim = e->ndim;
    if (shape) *shape = e->shape;
}

const char *kn__file_path(const kn_file *f) {
    return f ? f->path : "?";
}

kn_tensor *kn_file_get(kn_file *f, const char *name) {
    if (!f || !name) return kn__errp(KN_EINVAL, "file_get: %s is NULL", f ? "name" : "file");
    int i = kn__file_find(f, name);
    if (i < 0) return kn__errp(KN_EINVAL, "%s: no tensor '%s'", f->path, name);
    const st_entry *e = &f->e[i];
    if (e->dt->dt == KN_NDTYPES)
        return kn__errp(KN_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not supported by kiln",
                        f->path, name, e->dt->name);
    const unsigned char *p = f->data + e->begin;
    size_t nb = (size_t)(e->end - e->begin);
    if (e->dt->dt == KN_BOOL)
        for (size_t k = 0; k < nb; k++)
            if (p[k] > 1)
                return kn__errp(KN_EFORMAT, "%s: tensor '%s': bool element %zu is %u (not 0/1)",
                                f->path, name, k, p[k]);
    if (nb == 0) return kn_empty(e->dt->dt, e->ndim, e->shape);
    if ((uintptr_t)p % e->dt->size != 0) return kn_from_data(e->dt->dt, e->ndim, e->shape, p);
    atomic_fetch_add(&f->map->refs, 1);
    kn_tensor *t = kn_from_blob(e->dt->dt, e->ndim, e->shape, (void *)p, map_release_cb, f->map);
    if (!t) map_unref(f->map); /* from_blob did not take the reference */
    return t;
}

/* ---- writing ---- */
typedef struct st_writer {
    int fd;
    const char *path; /* the destination, for messages */
    char *buf;
    size_t used;
} st_writer;

static kn_status write_all(st_writer *w, const void *data, size_t n) {
    const char *p = data;
    while (n) {
        ssize_t k = write(w->fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return kn__err(KN_EIO, "%s: write failed: %s", w->path, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return KN_OK;
}

static kn_status flush_buf(st_writer *w) {
    kn_status st = write_all(w, w->buf, w->used);
    w->used = 0;
    return st;
}

/* Appends t's bytes in C order. */
static kn_status write_tensor(st_writer *w, kn_tensor *t) {
    size_t nb = (size_t)kn__numel(t->ndim, t->shape) * kn_dtype_size(t->dtype);
    if (nb == 0) return KN_OK;
    kn_status st;
    if (nb <= ST_STAGE) {
        if (w->used + nb > ST_STAGE && (st = flush_buf(w))) return st;
        if (kn__is_contiguous(t))
            memcpy(w->buf + w->used, kn__ptr(t), nb);
        else if ((st = kn_tensor_read(t, t->dtype, w->buf + w->used, nb)))
            return st;
        w->used += nb;
        return KN_OK;
    }
    if ((st = flush_buf(w))) return st;
    kn_tensor *c = kn__contig(t);
    if (!c) return kn_last_status() ? kn_last_status() : KN_ENOMEM;
    st = write_all(w, kn__ptr(c), nb);
    kn_tensor_free(c);
    return st;
}

static int by_name_nt(const void *a, const void *b, void *ctx) {
    const kn_named_tensor *ts = ctx;
    return strcmp(ts[*(const int *)a].name, ts[*(const int *)b].name);
}

/* Parses caller metadata: a JSON object of strings. */
static kn_status parse_user_meta(const char *text, json_object **out) {
    json_tokener *tok = json_tokener_new();
    if (!tok) return kn__err(KN_ENOMEM, "save_tensors: out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    size_t len = strlen(text);
    json_object *m = len <= INT32_MAX ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
    bool ok = m && json_tokener_get_error(tok) == json_tokener_success;
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    for (size_t i = end; ok && i < len; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\n' && text[i] != '\r') ok = false;
    if (!ok || !json_object_is_type(m, json_type_object)) {
        json_object_put(m);
        return kn__err(KN_EINVAL, "save_tensors: metadata is not a JSON object");
    }
    json_object_object_foreach(m, k, v) {
        if (!json_object_is_type(v, json_type_string)) {
            kn__err(KN_EINVAL,
                    "save_tensors: metadata value '%.64s' is not a string "
                    "(safetensors metadata maps strings to strings)",
                    k);
            json_object_put(m);
            return KN_EINVAL;
        }
    }
    *out = m;
    return KN_OK;
}

static json_object *entry_json(const kn_tensor *t, uint64_t begin, uint64_t end) {
    json_object *o = json_object_new_object(), *sh = json_object_new_array(),
                *off = json_object_new_array();
    bool ok = o && sh && off;
    ok = ok && !json_object_object_add(o, "dtype", json_object_new_string(DTYPES[t->dtype].name));
    for (int d = 0; ok && d < t->ndim; d++)
        ok = !json_object_array_add(sh, json_object_new_int64(t->shape[d]));
    ok = ok && !json_object_object_add(o, "shape", sh);
    if (ok) sh = NULL;
    ok = ok && !json_object_array_add(off, json_object_new_int64((int64_t)begin)) &&
         !json_object_array_add(off, json_object_new_int64((int64_t)end)) &&
         !json_object_object_add(o, "data_offsets", off);
    if (ok) return o;
    json_object_put(o);
    json_object_put(sh);
    json_object_put(off);
    return NULL;
}

static _Atomic unsigned long g_tmp_seq;

kn_status kn_save_tensors(const char *path, const kn_named_tensor *ts, int n,
                          const char *metadata_json) {
    if (!path || !*path) return kn__err(KN_EINVAL, "save_tensors: path is NULL or empty");
    if (n < 0 || (n > 0 && !ts))
        return kn__err(KN_EINVAL, "save_tensors: %d tensors from %p", n, (const void *)ts);
    for (int i = 0; i < n; i++) {
        if (!ts[i].name) return kn__err(KN_EINVAL, "save_tensors: entry %d has no name", i);
        if (!ts[i].tensor)
            return kn__err(KN_EINVAL, "save_tensors: tensor '%s' (entry %d) is NULL", ts[i].name,
                           i);
        if ((unsigned)ts[i].tensor->dtype >= KN_NDTYPES)
            return kn__err(KN_EDTYPE, "save_tensors: tensor '%s' has an invalid dtype", ts[i].name);
        if (strcmp(ts[i].name, "__metadata__") == 0)
            return kn__err(KN_EINVAL, "save_tensors: '__metadata__' is reserved");
    }
    kn_status st = KN_OK;
    json_object *root = NULL, *meta = NULL;
    int *idx = NULL;
    uint64_t *begin = NULL;
    char *tmp = NULL;
    st_writer w = {.fd = -1, .path = path};
    bool created = false; /* the temp file exists and is ours to remove */
    if (metadata_json && (st = parse_user_meta(metadata_json, &meta))) return st;

    idx = kn__malloc(sizeof(int) * (n ? n : 1));
    begin = kn__malloc(sizeof(uint64_t) * (n ? n : 1));
    if (!idx || !begin) goto nomem;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof(int), by_name_nt, (void *)ts);
    for (int i = 1; i < n; i++)
        if (strcmp(ts[idx[i - 1]].name, ts[idx[i]].name) == 0) {
            st = kn__err(KN_EINVAL, "save_tensors: duplicate name '%s'", ts[idx[i]].name);
            goto done;
        }
    /* layout: decreasing element size, stable in the caller's order */
    int k = 0;
    uint64_t off = 0;
    for (unsigned sz = 8; sz >= 1; sz /= 2)
        for (int i = 0; i < n; i++)
            if (kn_dtype_size(ts[i].tensor->dtype) == sz) {
                idx[k++] = i;
                begin[i] = off;
                off += (uint64_t)kn__numel(ts[i].tensor->ndim, ts[i].tensor->shape) * sz;
            }
    if (k != n) {
        st = kn__err(KN_EINTERNAL, "save_tensors: element size outside {1, 2, 4, 8}");
        goto done;
    }

    root = json_object_new_object();
    if (!root) goto nomem;
    if (meta) {
        if (json_object_object_add(root, "__metadata__", meta)) goto nomem;
        meta = NULL;
    }
    for (int i = 0; i < n; i++) {
        const kn_tensor *t = ts[i].tensor;
        uint64_t nb = (uint64_t)kn__numel(t->ndim, t->shape) * kn_dtype_size(t->dtype);
        json_object *e = entry_json(t, begin[i], begin[i] + nb);
        if (!e) goto nomem;
        if (json_object_object_add(root, ts[i].name, e)) {
            json_object_put(e);
            goto nomem;
        }
    }
    const char *hdr = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!hdr) goto nomem;
    size_t hlen = strlen(hdr);
    size_t padded = (8 + hlen + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN - 8;
    if (padded > ST_MAX_HEADER) {
        st = kn__err(KN_ELIMIT, "%s: header of %zu bytes over the 100 MB limit", path, padded);
        goto done;
    }

    size_t tl = strlen(path) + 64;
    tmp = kn__malloc(tl);
    if (!tmp) goto nomem;
    snprintf(tmp, tl, "%s.tmp.%ld.%lu", path, (long)getpid(),
             (unsigned long)atomic_fetch_add(&g_tmp_seq, 1));
    w.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (w.fd < 0) {
        st = kn__err(KN_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    created = true;
    struct stat old; /* a replaced file keeps its permission bits */
    if (stat(path, &old) == 0 && S_ISREG(old.st_mode)) (void)fchmod(w.fd, old.st_mode & 07777);
    w.buf = kn__malloc(ST_STAGE);
    if (!w.buf) goto nomem;
    uint64_t n64 = padded;
    memcpy(w.buf, &n64, 8);
    w.used = 8;
    /* header through the staging buffer, in pieces */
    for (size_t pos = 0; pos < padded;) {
        if (w.used == ST_STAGE && (st = flush_buf(&w))) goto done;
        size_t take = ST_STAGE - w.used;
        if (take > padded - pos) take = padded - pos;
        for (size_t j = 0; j < take; j++, pos++)
            w.buf[w.used + j] = pos < hlen ? hdr[pos] : ' ';
        w.used += take;
    }
    for (int i = 0; i < n; i++)
        if ((st = write_tensor(&w, ts[idx[i]].tensor))) goto done;
    if ((st = flush_buf(&w))) goto done;
    if (fsync(w.fd) != 0) {
        st = kn__err(KN_EIO, "%s: fsync failed: %s", path, strerror(errno));
        goto done;
    }
    int fd = w.fd;
    w.fd = -1;
    if (close(fd) != 0) {
        st = kn__err(KN_EIO, "%s: close failed: %s", path, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = kn__err(KN_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
        goto done;
    }
    created = false; /* renamed: nothing to remove */
    /* make the rename durable: fsync the directory (some file systems refuse; ignored) */
    {
        const char *slash = strrchr(path, '/');
        char *dir = NULL;
        if (slash) {
            size_t dl = slash == path ? 1 : (size_t)(slash - path);
            dir = kn__malloc(dl + 1);
            if (dir) {
                memcpy(dir, path, dl);
                dir[dl] = 0;
            }
        }
        int dfd = open(slash ? (dir ? dir : "/") : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            if (fsync(dfd) != 0 && errno == EIO)
                st = kn__err(KN_EIO, "%s: fsync of the directory failed", path);
            close(dfd);
        }
        kn__free(dir);
    }
    goto done;
nomem: /* kn__malloc set the message; json-c's allocator did not */
    st = kn_last_status() == KN_ENOMEM ? KN_ENOMEM : kn__err(KN_ENOMEM, "%s: out of memory", path);
done:
    if (w.fd >= 0) close(w.fd);
    if (created) unlink(tmp);
    kn__free(tmp);
    kn__free(w.buf);
    kn__free(idx);
    kn__free(begin);
    json_object_put(root);
    json_object_put(meta);
    return st;
}
