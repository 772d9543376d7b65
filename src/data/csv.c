/*
 * csv.c - CSV files of numbers -> a 2-D tensor (rows, columns).
 *
 * Rules: one row per line ("\n" or "\r\n"); with `header` the first line is skipped whatever it
 * holds; blank (whitespace-only) lines are skipped; fields are separated by `delim` (',' when 0)
 * and may carry spaces or tabs around them. When delim is ' ' or '\t', any run of spaces and tabs
 * separates fields (like numpy.loadtxt's default). Every row must have as many fields as the first
 * (a ragged row is KN_EFORMAT naming its line); a field that is empty or not a number is
 * KN_EFORMAT naming the line and column. Floats accept what strtod accepts (nan, inf, 1e-3).
 * Integer dtypes take integers (or integral floats such as 3.0 or 1e3) in the dtype's range;
 * bool takes numbers (non-zero is true). No quoting, no text columns, no missing values.
 * An empty file (or a header only) gives a (0, 0) tensor.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_impl.h"
#include "kiln/data.h"

typedef struct {
    char *v;
    size_t n, cap, esz;
} vbuf;

static bool vb_push(vbuf *b, const void *elem) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024, bytes;
        if (!kn__mul_ok(cap, b->esz, &bytes)) return false;
        char *nv = kn__realloc(b->v, bytes);
        if (!nv) return false;
        b->v = nv;
        b->cap = cap;
    }
    memcpy(b->v + b->n * b->esz, elem, b->esz);
    b->n++;
    return true;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rbe");
    if (!f) return kn__errp(KN_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = 0, cap = 1 << 16;
    char *buf = kn__malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = cap > SIZE_MAX / 4 ? NULL : kn__realloc(buf, cap * 2 + 1);
        if (!nb) {
            kn__free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        kn__err(KN_EIO, "%s: read failed: %s", path, strerror(errno));
        kn__free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

/* Parses the NUL-terminated field into one element of dt at out. */
static kn_status parse_field(const char *path, long long line, long long col, char *f, kn_dtype dt,
                             void *out) {
    while (is_ws(*f))
        f++;
    char *e = f + strlen(f);
    while (e > f && is_ws(e[-1]))
        *--e = 0;
    if (!*f) return kn__err(KN_EFORMAT, "%s:%lld: column %lld is empty", path, line, col);
    char *end;
    errno = 0;
    if (kn_dtype_is_float(dt) || dt == KN_BOOL) {
        double v = strtod(f, &end);
        if (end != e || end == f) goto notnum;
        if (dt == KN_BOOL)
            *(uint8_t *)out = v != 0;
        else
            kn__store_f64(dt, out, v);
        return KN_OK;
    }
    long long iv = strtoll(f, &end, 10);
    bool ok = end == e && errno == 0;
    if (!ok) { /* integral floats are fine: 3.0, 1e3 */
        errno = 0;
        double v = strtod(f, &end);
        if (end != e || end == f) goto notnum;
        if (!(v == floor(v)) || !(fabs(v) < 9.2e18))
            return kn__err(KN_EFORMAT,
                           "%s:%lld: column %lld: '%.40s' is not an integer (dtype "
                           "%s)",
                           path, line, col, f, kn_dtype_name(dt));
        iv = (long long)v;
    }
    long long lo, hi;
    switch (dt) {
    case KN_I8: lo = INT8_MIN, hi = INT8_MAX; break;
    case KN_U8: lo = 0, hi = UINT8_MAX; break;
    case KN_I32: lo = INT32_MIN, hi = INT32_MAX; break;
    default: lo = INT64_MIN, hi = INT64_MAX; break;
    }
    if (iv < lo || iv > hi)
        return kn__err(KN_EFORMAT, "%s:%lld: column %lld: %s is out of range for %s", path, line,
                       col, f, kn_dtype_name(dt));
    switch (dt) {
    case KN_I8: *(int8_t *)out = (int8_t)iv; break;
    case KN_U8: *(uint8_t *)out = (uint8_t)iv; break;
    case KN_I32: *(int32_t *)out = (int32_t)iv; break;
    default: *(int64_t *)out = iv; break;
    }
    return KN_OK;
notnum:
    return kn__err(KN_EFORMAT, "%s:%lld: column %lld: '%.40s' is not a number", path, line, col, f);
}

kn_tensor *kn_csv_load(const char *path, kn_dtype dt, bool header, char delim) {
    if (!path) return kn__errp(KN_EINVAL, "kn_csv_load: path is NULL");
    if ((unsigned)dt >= KN_NDTYPES) return kn__errp(KN_EDTYPE, "kn_csv_load: invalid dtype");
    if (delim == 0) delim = ',';
    if (delim == '\n' || delim == '\r' || (delim >= '0' && delim <= '9') || delim == '.' ||
        delim == '-' || delim == '+' || delim == 'e' || delim == 'E')
        return kn__errp(KN_EINVAL, "kn_csv_load: delimiter '%c' cannot separate numbers", delim);
    bool wsdelim = delim == ' ' || delim == '\t';
    size_t len = 0;
    char *buf = read_file(path, &len);
    if (!buf) return NULL;
    if (memchr(buf, 0, len)) {
        kn__free(buf);
        return kn__errp(KN_EFORMAT, "%s: contains NUL bytes (not a text file)", path);
    }
    vbuf vb = {.esz = kn_dtype_size(dt)};
    unsigned char elem[8];
    long long ncols = -1, rows = 0, line = 0;
    kn_tensor *t = NULL;
    char *p = buf, *end = buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        *le = 0;
        char *l = p;
        p = nl ? nl + 1 : end;
        line++;
        if (header && line == 1) continue;
        char *q = l;
        while (is_ws(*q))
            q++;
        if (!*q) continue; /* blank line */
        long long col = 0;
        char *s = wsdelim ? q : l;
        for (;;) {
            char *d;
            if (wsdelim) {
                d = s;
                while (*d && !is_ws(*d))
                    d++;
            } else {
                d = strchr(s, delim);
                if (!d) d = s + strlen(s);
            }
            char sep = *d;
            *d = 0;
            col++;
            if (parse_field(path, line, col, s, dt, elem)) goto fail;
            if (!vb_push(&vb, elem)) goto fail;
            if (!sep) break;
            s = d + 1;
            if (wsdelim) {
                while (is_ws(*s))
                    s++;
                if (!*s) break; /* trailing whitespace */
            }
        }
        if (ncols < 0) {
            ncols = col;
        } else if (col != ncols) {
            kn__err(KN_EFORMAT, "%s:%lld: ragged row: %lld fields, but the first row has %lld",
                    path, line, col, ncols);
            goto fail;
        }
        rows++;
    }
    int64_t shape[2] = {rows, ncols < 0 ? 0 : ncols};
    t = kn__tensor_alloc(dt, 2, shape);
    if (!t) goto fail;
    if (vb.n) memcpy(kn__ptr(t), vb.v, vb.n * vb.esz);
    kn__free(vb.v);
    kn__free(buf);
    return kn__scope_adopt(t);
fail:
    kn__free(vb.v);
    kn__free(buf);
    return NULL;
}
