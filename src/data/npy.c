/*
 * npy.c - NumPy .npy files: read (format versions 1.0, 2.0, 3.0; little or big endian; C or
 * Fortran order) and atomic write (1.0, or 2.0 when the header does not fit 1.0's u16 length).
 *
 * Spec: numpy/lib/format.py (NEP 1). The header is a Python dict literal with exactly the keys
 * 'descr', 'fortran_order' and 'shape'; it is parsed here by a small literal parser, never
 * evaluated. Supported descrs ('<' '>' '|' '=' byte orders): f2 f4 f8 i1 u1 i4 i8 b1, plus i2 and
 * u2 (widened to i32) and u4 (widened to i64). kiln's bfloat16 has no NumPy dtype: it is written
 * as '<V2' (2-byte void, which is what ml_dtypes' bfloat16 saves as), and '<V2' / '|V2' is read
 * back as bfloat16. Object arrays ('O', i.e. pickles), structured dtypes, strings, u8 and
 * complex are refused (KN_EUNSUPPORTED). Fortran-order arrays come back as C-contiguous copies.
 * Bytes after the data are ignored, as NumPy does (files with several arrays appended).
 *
 * Files are untrusted: header length, dim count (<= KN_MAX_DIMS), every dim and count * itemsize
 * are checked, and the data size is checked against the file size before any allocation.
 * Writes go to a temp file in the same directory, are fsync'd and renamed over the target.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_impl.h"
#include "kiln/data.h"

#define NPY_MAX_HEADER ((size_t)1 << 20)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ORDER '<'
#else
#define HOST_ORDER '>'
#endif

/* ---- header parsing ---- */

typedef struct {
    const char *s, *p, *e, *path; /* start, cursor, end, file name */
} hp;

static void ws(hp *h) {
    while (h->p < h->e && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

static bool lit(hp *h, const char *s) {
    size_t n = strlen(s);
    if ((size_t)(h->e - h->p) >= n && memcmp(h->p, s, n) == 0) {
        h->p += n;
        return true;
    }
    return false;
}

/* Python string literal in single or double quotes, no escapes (descrs never need them). */
static bool str(hp *h, char *out, size_t cap) {
    if (h->p >= h->e || (*h->p != '\'' && *h->p != '"')) return false;
    char q = *h->p++;
    size_t n = 0;
    while (h->p < h->e && *h->p != q) {
        if (*h->p == '\\' || n + 1 >= cap) return false;
        out[n++] = *h->p++;
    }
    if (h->p >= h->e) return false;
    h->p++;
    out[n] = 0;
    return true;
}

static kn_status herr(hp *h, const char *what) {
    return kn__err(KN_EFORMAT, "%s: bad NPY header: %s (at header byte %ld)", h->path, what,
                   (long)(h->p - h->s));
}

typedef struct {
    char descr[32];
    bool fortran;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
} npy_header;

static kn_status parse_shape(hp *h, npy_header *o) {
    if (!lit(h, "(")) return herr(h, "'shape' is not a tuple");
    o->ndim = 0;
    for (;;) {
        ws(h);
        if (lit(h, ")")) break;
        if (h->p >= h->e || *h->p < '0' || *h->p > '9')
            return herr(h, "'shape' holds something other than non-negative integers");
        int64_t v = 0;
        while (h->p < h->e && *h->p >= '0' && *h->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return kn__err(KN_EFORMAT, "%s: bad NPY header: a dim in 'shape' overflows",
                               h->path);
            v = v * 10 + (*h->p++ - '0');
        }
        lit(h, "L"); /* Python 2 longs */
        if (o->ndim >= KN_MAX_DIMS)
            return kn__err(KN_EFORMAT, "%s: NPY shape has more than %d dims (kiln's limit)",
                           h->path, KN_MAX_DIMS);
        o->shape[o->ndim++] = v;
        ws(h);
        if (lit(h, ",")) continue;
        ws(h);
        if (lit(h, ")")) break;
        return herr(h, "'shape' tuple is malformed");
    }
    return KN_OK;
}

static kn_status parse_header(const char *path, const char *s, size_t n, npy_header *o) {
    hp h = {s, s, s + n, path};
    memset(o, 0, sizeof *o);
    bool have_d = false, have_f = false, have_s = false;
    ws(&h);
    if (!lit(&h, "{")) return herr(&h, "not a dict");
    for (;;) {
        ws(&h);
        if (lit(&h, "}")) break;
        char key[32];
        if (!str(&h, key, sizeof key)) return herr(&h, "expected a quoted key");
        ws(&h);
        if (!lit(&h, ":")) return herr(&h, "expected ':'");
        ws(&h);
        if (strcmp(key, "descr") == 0 && !have_d) {
            if (h.p < h.e && *h.p == '[')
                return kn__err(KN_EUNSUPPORTED,
                               "%s: structured NPY dtypes (record arrays) are "
                               "not supported",
                               path);
            if (!str(&h, o->descr, sizeof o->descr)) return herr(&h, "'descr' is not a string");
            have_d = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_f) {
            if (lit(&h, "True"))
                o->fortran = true;
            else if (lit(&h, "False"))
                o->fortran = false;
            else
                return herr(&h, "'fortran_order' is not True or False");
            have_f = true;
        } else if (strcmp(key, "shape") == 0 && !have_s) {
            kn_status st = parse_shape(&h, o);
            if (st) return st;
            have_s = true;
        } else {
            return kn__err(KN_EFORMAT, "%s: bad NPY header: unexpected or repeated key '%s'", path,
                           key);
        }
        ws(&h);
        if (lit(&h, ",")) continue;
        ws(&h);
        if (lit(&h, "}")) break;
        return herr(&h, "expected ',' or '}'");
    }
    ws(&h);
    if (h.p != h.e) return herr(&h, "text after the dict");
    if (!have_d || !have_f || !have_s)
        return kn__err(KN_EFORMAT, "%s: bad NPY header: missing key '%s'", path,
                       !have_d   ? "descr"
                       : !have_f ? "fortran_order"
                                 : "shape");
    return KN_OK;
}

/* descr -> kiln dtype, file element size, byte order ('<' '>' or '|'), and whether the element is
 * widened: 0 none, 1 i2->i32, 2 u2->i32, 3 u4->i64, 4 bool normalise. */
static kn_status map_descr(const char *path, const char *d, kn_dtype *dt, size_t *fesz, char *order,
                           int *widen) {
    char o = d[0];
    const char *k = d;
    if (o == '<' || o == '>' || o == '|' || o == '=')
        k++;
    else
        o = '|';
    if (o == '=') o = HOST_ORDER;
    *order = o;
    *widen = 0;
    struct {
        const char *k;
        kn_dtype dt;
        size_t sz;
        int widen;
    } tab[] = {{"f2", KN_F16, 2, 0}, {"f4", KN_F32, 4, 0},  {"f8", KN_F64, 8, 0},
               {"i1", KN_I8, 1, 0},  {"u1", KN_U8, 1, 0},   {"i4", KN_I32, 4, 0},
               {"i8", KN_I64, 8, 0}, {"b1", KN_BOOL, 1, 4}, {"V2", KN_BF16, 2, 0},
               {"i2", KN_I32, 2, 1}, {"u2", KN_I32, 2, 2},  {"u4", KN_I64, 4, 3}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (strcmp(k, tab[i].k) == 0) {
            *dt = tab[i].dt;
            *fesz = tab[i].sz;
            *widen = tab[i].widen;
            return KN_OK;
        }
    }
    if (k[0] == 'O')
        return kn__err(KN_EUNSUPPORTED,
                       "%s: NPY object arrays (descr '%s', pickled Python "
                       "objects) are refused: they can execute code",
                       path, d);
    return kn__err(KN_EUNSUPPORTED,
                   "%s: NPY dtype '%s' is not supported (kiln reads f2 f4 f8 "
                   "i1 u1 i2 u2 i4 u4 i8 b1, and V2 as bfloat16)",
                   path, d);
}

static size_t read_full(FILE *f, void *buf, size_t n) {
    return n ? fread(buf, 1, n, f) : 0;
}

static uint32_t le_u(const unsigned char *p, int n) {
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

kn_tensor *kn_npy_load(const char *path) {
    if (!path) return kn__errp(KN_EINVAL, "kn_npy_load: path is NULL");
    FILE *f = fopen(path, "rbe");
    if (!f) return kn__errp(KN_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *hdr = NULL;
    void *raw = NULL;
    kn_tensor *t = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        kn__err(KN_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        kn__err(KN_EIO, "%s: is a directory", path);
        goto fail;
    }
    size_t fsize = st.st_size > 0 ? (size_t)st.st_size : 0;
    unsigned char pre[12];
    size_t r = read_full(f, pre, 10);
    if (r < 10) {
        if (ferror(f)) goto ioerr;
        kn__err(KN_EFORMAT, "%s: not an NPY file: it ends after %zu bytes", path, r);
        goto fail;
    }
    if (memcmp(pre, "\x93NUMPY", 6) != 0) {
        kn__err(KN_EFORMAT, "%s: not an NPY file (no \\x93NUMPY magic)", path);
        goto fail;
    }
    int major = pre[6], minor = pre[7];
    size_t prefix, hlen;
    if (major == 1) {
        prefix = 10;
        hlen = le_u(pre + 8, 2);
    } else if (major == 2 || major == 3) {
        if (read_full(f, pre + 10, 2) < 2) {
            if (ferror(f)) goto ioerr;
            kn__err(KN_EFORMAT, "%s: NPY header truncated", path);
            goto fail;
        }
        prefix = 12;
        hlen = le_u(pre + 8, 4);
    } else {
        kn__err(KN_EFORMAT,
                "%s: unsupported NPY format version %d.%d (kiln reads 1.0, 2.0 "
                "and 3.0)",
                path, major, minor);
        goto fail;
    }
    if (hlen > NPY_MAX_HEADER) {
        kn__err(KN_EFORMAT, "%s: NPY header length %zu is implausible (limit %zu)", path, hlen,
                NPY_MAX_HEADER);
        goto fail;
    }
    if (hlen > fsize - prefix) {
        kn__err(KN_EFORMAT, "%s: NPY header says %zu header bytes but the file has %zu", path, hlen,
                fsize - prefix);
        goto fail;
    }
    hdr = kn__malloc(hlen + 1);
    if (!hdr) goto fail;
    if (read_full(f, hdr, hlen) < hlen) {
        if (ferror(f)) goto ioerr;
        kn__err(KN_EFORMAT, "%s: NPY header truncated", path);
        goto fail;
    }
    hdr[hlen] = 0;
    if (memchr(hdr, 0, hlen)) {
        kn__err(KN_EFORMAT, "%s: bad NPY header: contains a NUL byte", path);
        goto fail;
    }
    npy_header h;
    if (parse_header(path, hdr, hlen, &h)) goto fail;
    kn_dtype dt = KN_F32;
    size_t fesz = 1;
    char order = HOST_ORDER;
    int widen = 0;
    if (map_descr(path, h.descr, &dt, &fesz, &order, &widen)) goto fail;

    size_t count = 1, nbytes;
    bool ovf = false;
    for (int i = 0; i < h.ndim; i++)
        if (!kn__mul_ok(count, (size_t)h.shape[i], &count)) ovf = true;
    char sb[160];
    kn__shape_str(sb, sizeof sb, h.ndim, h.shape);
    if (ovf || !kn__mul_ok(count, fesz, &nbytes) || nbytes > ((size_t)1 << 48)) {
        kn__err(KN_EFORMAT, "%s: NPY shape %s is too large (size overflows)", path, sb);
        goto fail;
    }
    size_t avail = fsize - prefix - hlen;
    if (nbytes > avail) {
        kn__err(KN_EFORMAT,
                "%s: NPY header says %s '%s' (%zu bytes) but only %zu data bytes "
                "follow",
                path, sb, h.descr, nbytes, avail);
        goto fail;
    }

    int64_t sshape[KN_MAX_DIMS]; /* the shape in storage order */
    for (int i = 0; i < h.ndim; i++)
        sshape[i] = h.fortran ? h.shape[h.ndim - 1 - i] : h.shape[i];
    t = kn__tensor_alloc(dt, h.ndim, sshape);
    if (!t) goto fail;
    bool direct = fesz == kn_dtype_size(dt);
    void *dst = kn__ptr(t);
    if (!direct) {
        raw = kn__malloc(nbytes ? nbytes : 1);
        if (!raw) goto fail;
        dst = raw;
    }
    if (read_full(f, dst, nbytes) < nbytes) {
        if (ferror(f)) goto ioerr;
        kn__err(KN_EFORMAT, "%s: NPY data truncated", path);
        goto fail;
    }
    if (order != '|' && order != HOST_ORDER && fesz > 1) kn__bswap(dst, count, fesz);
    if (widen == 4) {
        uint8_t *b = dst;
        for (size_t i = 0; i < count; i++)
            b[i] = b[i] != 0;
    } else if (widen) {
        const void *s = raw;
        if (widen == 1) {
            int32_t *d = (int32_t *)kn__ptr(t);
            for (size_t i = 0; i < count; i++)
                d[i] = ((const int16_t *)s)[i];
        } else if (widen == 2) {
            int32_t *d = (int32_t *)kn__ptr(t);
            for (size_t i = 0; i < count; i++)
                d[i] = ((const uint16_t *)s)[i];
        } else {
            int64_t *d = (int64_t *)kn__ptr(t);
            for (size_t i = 0; i < count; i++)
                d[i] = ((const uint32_t *)s)[i];
        }
    }
    if (h.fortran && h.ndim > 1) { /* reverse the axes: a C-order view, then a copy */
        int64_t vstr[KN_MAX_DIMS];
        for (int i = 0; i < h.ndim; i++)
            vstr[i] = t->strides[h.ndim - 1 - i];
        kn_tensor *v = kn__tensor_view(t, h.ndim, h.shape, vstr, 0);
        kn_tensor *c = v ? kn__contig(v) : NULL;
        kn_tensor_free(v);
        if (!c) goto fail;
        kn_tensor_free(t);
        t = c;
    }
    kn__free(raw);
    kn__free(hdr);
    fclose(f);
    return kn__scope_adopt(t);

ioerr:
    kn__err(KN_EIO, "%s: read failed: %s", path, strerror(errno));
fail:
    kn__free(raw);
    kn__free(hdr);
    kn_tensor_free(t);
    fclose(f);
    return NULL;
}

/* ---- writing ---- */

static const char *descr_of(kn_dtype dt) {
    switch (dt) {
    case KN_F32: return HOST_ORDER == '<' ? "<f4" : ">f4";
    case KN_F64: return HOST_ORDER == '<' ? "<f8" : ">f8";
    case KN_F16: return HOST_ORDER == '<' ? "<f2" : ">f2";
    case KN_BF16: return HOST_ORDER == '<' ? "<V2" : ">V2";
    case KN_I8: return "|i1";
    case KN_U8: return "|u1";
    case KN_I32: return HOST_ORDER == '<' ? "<i4" : ">i4";
    case KN_I64: return HOST_ORDER == '<' ? "<i8" : ">i8";
    case KN_BOOL: return "|b1";
    default: return NULL;
    }
}

static kn_status write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return kn__err(KN_EIO, "%s: write failed: %s", path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return KN_OK;
}

/* fsync the directory holding path so the rename is durable; best effort. */
static void sync_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t n = (size_t)(slash - path);
        if (n == 0) n = 1;
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static _Atomic unsigned g_tmp_counter;

kn_status kn_npy_save(const char *path, const kn_tensor *t) {
    if (!path || !t) return kn__err(KN_EINVAL, "kn_npy_save: NULL argument");
    const char *descr = descr_of(t->dtype);
    if (!descr) return kn__err(KN_EDTYPE, "kn_npy_save: invalid dtype %d", (int)t->dtype);

    /* header: the dict as numpy writes it, padded with spaces and '\n' to a 64-byte boundary */
    char dict[512];
    int n =
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                      (long long)t->shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", t->ndim == 1 ? "," : "");
    size_t dlen = (size_t)n;
    int major = 1;
    size_t prefix = 10;
    size_t total = (prefix + dlen + 1 + 63) / 64 * 64;
    if (total - prefix > 65535) {
        major = 2;
        prefix = 12;
        total = (prefix + dlen + 1 + 63) / 64 * 64;
    }
    size_t hlen = total - prefix;
    unsigned char head[640];
    memcpy(head, "\x93NUMPY", 6);
    head[6] = (unsigned char)major;
    head[7] = 0;
    for (size_t i = 0; i < prefix - 8; i++)
        head[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(head + prefix, dict, dlen);
    memset(head + prefix + dlen, ' ', total - prefix - dlen - 1);
    head[total - 1] = '\n';

    kn_tensor *c = kn__contig((kn_tensor *)t);
    if (!c) return kn_last_status();
    size_t nbytes = (size_t)kn__numel(c->ndim, c->shape) * kn_dtype_size(c->dtype);

    char tmp[4200];
    int fd = -1;
    kn_status st = KN_OK;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        unsigned k = atomic_fetch_add(&g_tmp_counter, 1);
        int m = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(), k);
        if (m < 0 || (size_t)m >= sizeof tmp) {
            kn_tensor_free(c);
            return kn__err(KN_EINVAL, "kn_npy_save: path too long");
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        st = kn__err(KN_EIO, "%s: cannot create temp file %s: %s", path, tmp, strerror(errno));
        kn_tensor_free(c);
        return st;
    }
    st = write_all(fd, head, total, path);
    if (!st) st = write_all(fd, kn__ptr(c), nbytes, path);
    if (!st && fsync(fd) != 0) st = kn__err(KN_EIO, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) != 0 && !st) st = kn__err(KN_EIO, "%s: close failed: %s", path, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = kn__err(KN_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (st)
        unlink(tmp);
    else
        sync_dir(path);
    kn_tensor_free(c);
    return st;
}
