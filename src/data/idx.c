/*
 * idx.c - IDX files (the MNIST family), plain or gzip-compressed, and the Fashion-MNIST / MNIST
 * directory loader.
 *
 * Format (http://yann.lecun.com/exdb/mnist/): bytes 0,0, a type byte (0x08 u8, 0x09 i8, 0x0B i16,
 * 0x0C i32, 0x0D f32, 0x0E f64), a dim-count byte, then that many big-endian u32 dims, then the
 * elements big-endian in C order. i16 is widened to i32 (kiln has no i16).
 *
 * Files are untrusted. Every header field is validated, the element count times the element size
 * is overflow-checked, and no buffer larger than the data can hold is allocated: for plain files
 * the file size bounds it; for gzip, reading is incremental (the buffer grows only as decompressed
 * data actually arrives), starting at most at what deflate's maximum ratio (1032:1) allows for the
 * compressed size. Bad content gives KN_EFORMAT, OS errors KN_EIO, each message naming the file.
 * The data must end exactly where the header says (trailing bytes are an error: the MNIST files
 * are exact, so extra bytes mean a wrong or corrupt file).
 *
 * zlib's gzopen/gzread read plain files transparently, so gzip is detected from the content, not
 * the file name.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/core_impl.h"
#include "kiln/data.h"

#define IDX_GROW_START ((size_t)4 << 20) /* first buffer when the final size is not trusted yet */
#define IDX_CHUNK ((unsigned)1 << 30)    /* gzread takes an unsigned length */

typedef struct {
    const char *path;
    gzFile gz;
    int fd;       /* our descriptor; gzdopen owns it once gz is open */
    size_t fsize; /* size of the file on disk */
    bool direct;  /* plain file (no gzip) */
} idx_in;

/* Reads up to n bytes; returns the count read (short only at the end of the data) or -1 with the
 * error set. */
static int64_t in_read(idx_in *in, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        unsigned want = n - got > IDX_CHUNK ? IDX_CHUNK : (unsigned)(n - got);
        int r = gzread(in->gz, (char *)buf + got, want);
        if (r < 0) {
            int zerr = 0;
            const char *msg = gzerror(in->gz, &zerr);
            if (zerr == Z_ERRNO) {
                kn__err(KN_EIO, "%s: read failed: %s", in->path, strerror(errno));
            } else if (zerr == Z_MEM_ERROR) {
                kn__err(KN_ENOMEM, "%s: out of memory while decompressing", in->path);
            } else {
                kn__err(KN_EFORMAT, "%s: corrupt gzip data after %zu bytes (%s)", in->path, got,
                        msg ? msg : "zlib error");
            }
            return -1;
        }
        got += (size_t)r;
        if ((unsigned)r < want) {
            /* end of data: a compressed stream that stops mid-way is an error, not an EOF */
            int zerr = 0;
            const char *msg = gzerror(in->gz, &zerr);
            if (zerr != Z_OK && zerr != Z_STREAM_END) {
                kn__err(KN_EFORMAT, "%s: gzip stream is truncated or corrupt (%s)", in->path,
                        msg ? msg : "zlib error");
                return -1;
            }
            break;
        }
    }
    return (int64_t)got;
}

static kn_status in_open(idx_in *in, const char *path) {
    memset(in, 0, sizeof *in);
    in->path = path;
    in->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (in->fd < 0) return kn__err(KN_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(in->fd, &st) != 0) {
        int e = errno;
        close(in->fd);
        return kn__err(KN_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(in->fd);
        return kn__err(KN_EIO, "%s: is a directory", path);
    }
    in->fsize = st.st_size > 0 ? (size_t)st.st_size : 0;
    in->gz = gzdopen(in->fd, "rb");
    if (!in->gz) {
        close(in->fd);
        return kn__err(KN_ENOMEM, "%s: cannot start the gzip reader", path);
    }
    gzbuffer(in->gz, 1 << 17);
    return KN_OK;
}

static void in_close(idx_in *in) {
    if (in->gz) gzclose_r(in->gz); /* closes fd too */
    in->gz = NULL;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *shape_x(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? " x %lld" : "%lld", (long long)shape[i]);
    if (ndim == 0) snprintf(buf, len, "a scalar");
    return buf;
}

kn_tensor *kn_idx_load(const char *path) {
    if (!path) return kn__errp(KN_EINVAL, "kn_idx_load: path is NULL");
    idx_in in;
    if (in_open(&in, path)) return NULL;
    in.direct = gzdirect(in.gz) != 0; /* looks at the first bytes: gzip or plain */

    kn_tensor *t = NULL;
    void *raw = NULL; /* staging buffer when not reading straight into t */
    unsigned char hdr[4 + 4 * 255];
    int64_t r = in_read(&in, hdr, 4);
    if (r < 0) goto fail;
    if (r < 4) {
        kn__err(KN_EFORMAT, "%s: truncated header: the data ends after %lld bytes (IDX needs 4)",
                path, (long long)r);
        goto fail;
    }
    if (hdr[0] != 0 || hdr[1] != 0) {
        kn__err(KN_EFORMAT,
                "%s: not an IDX file (magic %02x %02x %02x %02x, expected 00 00 "
                "<type> <ndim>)",
                path, hdr[0], hdr[1], hdr[2], hdr[3]);
        goto fail;
    }
    kn_dtype dt;
    size_t fesz;
    switch (hdr[2]) {
    case 0x08:
        dt = KN_U8;
        fesz = 1;
        break;
    case 0x09:
        dt = KN_I8;
        fesz = 1;
        break;
    case 0x0B:
        dt = KN_I32;
        fesz = 2;
        break; /* i16 widened */
    case 0x0C:
        dt = KN_I32;
        fesz = 4;
        break;
    case 0x0D:
        dt = KN_F32;
        fesz = 4;
        break;
    case 0x0E:
        dt = KN_F64;
        fesz = 8;
        break;
    default:
        kn__err(KN_EFORMAT,
                "%s: unknown IDX element type 0x%02x (expected 08, 09, 0B, 0C, 0D "
                "or 0E)",
                path, hdr[2]);
        goto fail;
    }
    int ndim = hdr[3];
    if (ndim > KN_MAX_DIMS) {
        kn__err(KN_EFORMAT, "%s: header has %d dimensions (kiln supports at most %d)", path, ndim,
                KN_MAX_DIMS);
        goto fail;
    }
    r = in_read(&in, hdr + 4, (size_t)ndim * 4);
    if (r < 0) goto fail;
    if (r < ndim * 4) {
        kn__err(KN_EFORMAT,
                "%s: truncated header: %d dimensions declared but the file ends "
                "after %lld bytes",
                path, ndim, (long long)(4 + r));
        goto fail;
    }
    int64_t shape[KN_MAX_DIMS];
    size_t count = 1, nbytes;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        shape[i] = be32(hdr + 4 + 4 * i);
        if (!kn__mul_ok(count, (size_t)shape[i], &count)) overflow = true;
    }
    char sb[160];
    shape_x(sb, sizeof sb, ndim, shape);
    if (overflow || !kn__mul_ok(count, fesz, &nbytes) || nbytes > ((size_t)1 << 48)) {
        kn__err(KN_EFORMAT, "%s: header dims %s are too large (size overflows)", path, sb);
        goto fail;
    }
    size_t hbytes = 4 + (size_t)ndim * 4;

    /* How much may we allocate before the data has proved to exist? */
    size_t bound;
    if (in.direct) {
        bound = in.fsize > hbytes ? in.fsize - hbytes : 0;
        if (bound < nbytes) {
            kn__err(KN_EFORMAT, "%s: header says %s but the data ends after %zu of %zu bytes", path,
                    sb, bound, nbytes);
            goto fail;
        }
    } else if (!kn__mul_ok(in.fsize, 1032, &bound) || bound > SIZE_MAX - 4096) {
        bound = SIZE_MAX;
    } else {
        bound += 4096;
    }
    size_t cap = nbytes;
    if (cap > bound && cap > IDX_GROW_START) cap = bound > IDX_GROW_START ? bound : IDX_GROW_START;

    bool into_t = cap == nbytes && fesz == kn_dtype_size(dt);
    if (into_t) {
        t = kn__tensor_alloc(dt, ndim, shape);
        if (!t) goto fail;
    }
    size_t got = 0;
    char *dst = into_t ? kn__ptr(t) : NULL;
    if (!into_t) {
        raw = kn__malloc(cap ? cap : 1);
        if (!raw) goto fail;
        dst = raw;
    }
    for (;;) {
        r = in_read(&in, dst + got, cap - got);
        if (r < 0) goto fail;
        got += (size_t)r;
        if (got < cap || cap == nbytes) break;
        /* buffer full but more is expected: grow (doubling, at most to the declared size) */
        size_t ncap = cap > nbytes / 2 ? nbytes : cap * 2;
        void *nr = kn__realloc(raw, ncap);
        if (!nr) goto fail;
        raw = dst = nr;
        cap = ncap;
    }
    if (got < nbytes) {
        kn__err(KN_EFORMAT, "%s: header says %s but the data ends after %zu of %zu bytes", path, sb,
                got, nbytes);
        goto fail;
    }
    unsigned char extra;
    r = in_read(&in, &extra, 1);
    if (r < 0) goto fail;
    if (r > 0) {
        kn__err(KN_EFORMAT, "%s: trailing bytes after the %s data the header declares", path, sb);
        goto fail;
    }
    if (!into_t) {
        t = kn__tensor_alloc(dt, ndim, shape);
        if (!t) goto fail;
        if (fesz == 2) { /* i16 big endian -> i32 */
            const unsigned char *s = raw;
            int32_t *d = (int32_t *)kn__ptr(t);
            for (size_t i = 0; i < count; i++)
                d[i] = (int16_t)(s[2 * i] << 8 | s[2 * i + 1]);
        } else {
            memcpy(kn__ptr(t), raw, nbytes);
        }
        kn__free(raw);
        raw = NULL;
    }
    if (fesz >= 4) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        kn__bswap(kn__ptr(t), count, fesz);
#endif
    }
    in_close(&in);
    return kn__scope_adopt(t);

fail:
    kn__free(raw);
    kn_tensor_free(t);
    in_close(&in);
    return NULL;
}

/* ---- MNIST family ---- */

const char *kn_fashion_mnist_dir(void) {
    const char *e = getenv("KILN_FASHION_MNIST");
    if (e && *e) return e;
    return "/usr/share/datasets/fashion-mnist";
}

/* Finds <dir>/<stem>.gz or <dir>/<stem>; writes the path into buf. */
static kn_status find_file(const char *dir, const char *stem, char *buf, size_t len) {
    const char *names[2] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        int n = snprintf(buf, len, "%s/%s%s", dir, stem, names[i]);
        if (n < 0 || (size_t)n >= len) return kn__err(KN_EINVAL, "kn_mnist_load: path too long");
        if (access(buf, F_OK) == 0) return KN_OK;
    }
    return kn__err(KN_EIO,
                   "kn_mnist_load: %s/%s(.gz) not found (for Fashion-MNIST install "
                   "Debian's dataset-fashion-mnist, or set $KILN_FASHION_MNIST)",
                   dir, stem);
}

kn_status kn_mnist_load(const char *dir, const char *split, kn_tensor **images,
                        kn_tensor **labels) {
    if (images) *images = NULL;
    if (labels) *labels = NULL;
    if (!dir || !split || !images || !labels)
        return kn__err(KN_EINVAL, "kn_mnist_load: NULL argument");
    const char *prefix;
    if (strcmp(split, "train") == 0)
        prefix = "train";
    else if (strcmp(split, "test") == 0 || strcmp(split, "t10k") == 0)
        prefix = "t10k";
    else
        return kn__err(KN_EINVAL, "kn_mnist_load: split \"%s\" (expected \"train\" or \"test\")",
                       split);
    char ipath[4096], lpath[4096], stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", prefix);
    if (find_file(dir, stem, ipath, sizeof ipath)) return kn_last_status();
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", prefix);
    if (find_file(dir, stem, lpath, sizeof lpath)) return kn_last_status();

    kn_tensor *im = NULL, *lb = NULL, *out = NULL;
    kn_scope sc = kn_scope_begin(); /* keeps the intermediates out of the caller's scope */
    kn_status st = KN_OK;
    im = kn_idx_load(ipath);
    if (im) lb = kn_idx_load(lpath);
    if (!im || !lb) {
        st = kn_last_status();
        goto done;
    }
    char sb[96];
    if (kn_tensor_dtype(im) != KN_U8 || kn_tensor_ndim(im) != 3) {
        st = kn__err(KN_EFORMAT, "%s: expected u8 images (N, H, W), got %s %s", ipath,
                     kn_dtype_name(kn_tensor_dtype(im)),
                     kn__shape_str(sb, sizeof sb, im->ndim, im->shape));
        goto done;
    }
    if (kn_tensor_dtype(lb) != KN_U8 || kn_tensor_ndim(lb) != 1) {
        st = kn__err(KN_EFORMAT, "%s: expected u8 labels (N), got %s %s", lpath,
                     kn_dtype_name(kn_tensor_dtype(lb)),
                     kn__shape_str(sb, sizeof sb, lb->ndim, lb->shape));
        goto done;
    }
    if (im->shape[0] != lb->shape[0]) {
        st = kn__err(KN_EFORMAT, "%s has %lld images but %s has %lld labels", ipath,
                     (long long)im->shape[0], lpath, (long long)lb->shape[0]);
        goto done;
    }
    out = kn__tensor_alloc(KN_I64, 1, lb->shape);
    if (!out) {
        st = kn_last_status();
        goto done;
    }
    const uint8_t *s = (const uint8_t *)kn__ptr(lb);
    int64_t *d = (int64_t *)kn__ptr(out);
    for (int64_t i = 0; i < lb->shape[0]; i++)
        d[i] = s[i];
    kn_tensor_retain(im); /* survives the scope below */
done:
    kn_scope_end(sc);
    if (st != KN_OK) return st;
    *images = kn__scope_adopt(im);
    *labels = kn__scope_adopt(out);
    if (!*images || !*labels) { /* the scope could not record one (out of memory); the other
                                 * already belongs to the scope, which frees it */
        *images = *labels = NULL;
        return kn__err(KN_ENOMEM, "kn_mnist_load: out of memory");
    }
    return KN_OK;
}
