/*
 * test_data.c - the data module (src/data/): IDX (plain and gzip, the real Fashion-MNIST files
 * when installed, hostile files), NPY (round trips for every dtype, NumPy-written fixtures from
 * tests/data/npy/ made by tools/gen_npy_fixtures.py, hostile headers), CSV (good and bad files),
 * and the loader (batch counts, shuffle coverage and reproducibility, prefetch on == off,
 * transform values, scopes and leaks, freeing mid-epoch, the global RNG left alone).
 * Hostile files are written at test time into a temp directory that is removed at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "kn_test.h"

#include "core/core_impl.h"
#include "kiln/data.h"

/* ---- temp files ---- */

static char g_dir[256];

static const char *tp(const char *name) { /* path in the temp dir (8 rotating buffers) */
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static void write_gz(const char *path, const void *p, size_t n) {
    gzFile g = gzopen(path, "wb");
    if (!g) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    if (n) gzwrite(g, p, (unsigned)n);
    gzclose(g);
}

static void write_text(const char *path, const char *s) {
    write_bytes(path, s, strlen(s));
}

static unsigned char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

/* IDX bytes: magic, dims, then data as given (already big endian). Returns malloc'd buffer. */
static unsigned char *idx_bytes(int type, int ndim, const uint32_t *dims, const void *data,
                                size_t nbytes, size_t *len) {
    *len = 4 + 4 * (size_t)ndim + nbytes;
    unsigned char *b = malloc(*len + 1);
    b[0] = 0;
    b[1] = 0;
    b[2] = (unsigned char)type;
    b[3] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        b[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        b[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        b[7 + 4 * i] = (unsigned char)dims[i];
    }
    if (nbytes) memcpy(b + 4 + 4 * ndim, data, nbytes);
    return b;
}

static void write_idx(const char *path, bool gz, int type, int ndim, const uint32_t *dims,
                      const void *data, size_t nbytes) {
    size_t len;
    unsigned char *b = idx_bytes(type, ndim, dims, data, nbytes, &len);
    if (gz)
        write_gz(path, b, len);
    else
        write_bytes(path, b, len);
    free(b);
}

/* ---- IDX ---- */

static void test_idx_types(void) {
    kn_scope s = kn_scope_begin();
    uint8_t u8[12];
    for (int i = 0; i < 12; i++)
        u8[i] = (uint8_t)(i * 20);
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tp(gz ? "u8.idx.gz" : "u8.idx");
        write_idx(p, gz, 0x08, 3, (uint32_t[]){3, 2, 2}, u8, 12);
        kn_tensor *t = kn_idx_load(p);
        KT_NOTNULL(t);
        KT_EQ_INT(KN_U8, kn_tensor_dtype(t));
        KT_EQ_INT(3, kn_tensor_ndim(t));
        KT_EQ_INT(3, kn_tensor_dim(t, 0));
        KT_EQ_INT(2, kn_tensor_dim(t, 2));
        KT_EQ_INT(220, (int)kn_tensor_get(t, (int64_t[]){2, 1, 1}));
        KT_EQ_INT(20, (int)kn_tensor_get(t, (int64_t[]){0, 0, 1}));
    }
    /* i8 */
    int8_t i8[3] = {-128, 0, 127};
    write_idx(tp("i8.idx"), false, 0x09, 1, (uint32_t[]){3}, i8, 3);
    kn_tensor *t = kn_idx_load(tp("i8.idx"));
    KT_NOTNULL(t);
    KT_EQ_INT(KN_I8, kn_tensor_dtype(t));
    KT_EQ_INT(-128, (int)kn_tensor_get(t, (int64_t[]){0}));
    /* i16 big endian -> i32 */
    unsigned char i16[6] = {0xFF, 0xFE, 0x01, 0x00, 0x80, 0x00}; /* -2, 256, -32768 */
    write_idx(tp("i16.idx.gz"), true, 0x0B, 1, (uint32_t[]){3}, i16, 6);
    t = kn_idx_load(tp("i16.idx.gz"));
    KT_NOTNULL(t);
    KT_EQ_INT(KN_I32, kn_tensor_dtype(t));
    KT_EQ_INT(-2, (int)kn_tensor_get(t, (int64_t[]){0}));
    KT_EQ_INT(256, (int)kn_tensor_get(t, (int64_t[]){1}));
    KT_EQ_INT(-32768, (int)kn_tensor_get(t, (int64_t[]){2}));
    /* i32 */
    unsigned char i32[8] = {0xFF, 0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x00, 0x00}; /* -3, 65536 */
    write_idx(tp("i32.idx"), false, 0x0C, 2, (uint32_t[]){1, 2}, i32, 8);
    t = kn_idx_load(tp("i32.idx"));
    KT_NOTNULL(t);
    KT_EQ_INT(KN_I32, kn_tensor_dtype(t));
    KT_EQ_INT(65536, (int)kn_tensor_get(t, (int64_t[]){0, 1}));
    KT_EQ_INT(-3, (int)kn_tensor_get(t, (int64_t[]){0, 0}));
    /* f32: 1.5 = 0x3FC00000, -2 = 0xC0000000 */
    unsigned char f32[8] = {0x3F, 0xC0, 0, 0, 0xC0, 0, 0, 0};
    write_idx(tp("f32.idx.gz"), true, 0x0D, 1, (uint32_t[]){2}, f32, 8);
    t = kn_idx_load(tp("f32.idx.gz"));
    KT_NOTNULL(t);
    KT_EQ_INT(KN_F32, kn_tensor_dtype(t));
    KT_NEAR(1.5, kn_tensor_get(t, (int64_t[]){0}), 0);
    KT_NEAR(-2, kn_tensor_get(t, (int64_t[]){1}), 0);
    /* f64: 0.25 = 0x3FD0000000000000 */
    unsigned char f64[8] = {0x3F, 0xD0, 0, 0, 0, 0, 0, 0};
    write_idx(tp("f64.idx"), false, 0x0E, 1, (uint32_t[]){1}, f64, 8);
    t = kn_idx_load(tp("f64.idx"));
    KT_NOTNULL(t);
    KT_EQ_INT(KN_F64, kn_tensor_dtype(t));
    KT_NEAR(0.25, kn_tensor_get(t, (int64_t[]){0}), 0);
    /* empty dims: (0, 28, 28) */
    write_idx(tp("empty.idx"), false, 0x08, 3, (uint32_t[]){0, 28, 28}, NULL, 0);
    t = kn_idx_load(tp("empty.idx"));
    KT_NOTNULL(t);
    KT_EQ_INT(0, kn_tensor_numel(t));
    /* larger gzip file crossing the incremental-growth path: 3 MiB of data */
    size_t big = 3u << 20;
    uint8_t *bd = malloc(big);
    for (size_t i = 0; i < big; i++)
        bd[i] = (uint8_t)(i * 7 + (i >> 12));
    write_idx(tp("big.idx.gz"), true, 0x08, 2, (uint32_t[]){3 << 10, 1 << 10}, bd, big);
    t = kn_idx_load(tp("big.idx.gz"));
    KT_NOTNULL(t);
    KT_TRUE(memcmp(kn_tensor_data(t), bd, big) == 0);
    free(bd);
    kn_scope_end(s);
}

static void test_idx_hostile(void) {
    uint8_t data[64] = {0};
    size_t len;
    unsigned char *b;
    /* truncated header */
    write_bytes(tp("h1.idx"), "\0\0", 2);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("h1.idx")), "truncated header");
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("h1.idx")), "h1.idx");
    /* ndim 3, only one dim present */
    b = idx_bytes(0x08, 3, (uint32_t[]){5, 5, 5}, NULL, 0, &len);
    write_bytes(tp("h2.idx"), b, 8);
    free(b);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("h2.idx")), "truncated header");
    /* empty file */
    write_bytes(tp("h3.idx"), "", 0);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("h3.idx")), "truncated header");
    /* wrong magic */
    write_bytes(tp("m.idx"), "\x01\x02\x08\x01\0\0\0\1x", 9);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("m.idx")), "not an IDX file");
    /* unknown type byte */
    write_idx(tp("t.idx"), false, 0x0A, 1, (uint32_t[]){1}, data, 1);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("t.idx")), "unknown IDX element type 0x0a");
    /* too many dims */
    b = idx_bytes(0x08, 9, (uint32_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, data, 1, &len);
    write_bytes(tp("d9.idx"), b, len);
    free(b);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("d9.idx")), "9 dimensions");
    /* truncated data, plain and gzip: the message names the shape and where the data ends */
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tp(gz ? "train-images-idx3-ubyte.gz" : "train-images-idx3-ubyte");
        write_idx(p, gz, 0x08, 3, (uint32_t[]){60000, 28, 28}, data, 64);
        KT_ERR(KN_EFORMAT, kn_idx_load(p),
               "header says 60000 x 28 x 28 but the data ends after "
               "64 of 47040000 bytes");
        KT_ERR(KN_EFORMAT, kn_idx_load(p), "train-images-idx3-ubyte");
    }
    /* one element short */
    write_idx(tp("short.idx"), false, 0x0C, 1, (uint32_t[]){4}, data, 15);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("short.idx")), "ends after 15 of 16 bytes");
    /* trailing bytes */
    write_idx(tp("trail.idx.gz"), true, 0x08, 1, (uint32_t[]){4}, data, 5);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("trail.idx.gz")), "trailing bytes");
    /* dims product overflow (size_t) and absurd sizes */
    write_idx(tp("ovf.idx"), false, 0x0E, 4,
              (uint32_t[]){0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, data, 8);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("ovf.idx")), "too large");
    write_idx(tp("ovf2.idx.gz"), true, 0x0E, 2, (uint32_t[]){0xFFFFFFFF, 0xFFFFFFFF}, data, 8);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("ovf2.idx.gz")), "too large");
    /* a lying gzip header: claims 1 TiB, holds 64 bytes; must not allocate from the header */
    write_idx(tp("liar.idx.gz"), true, 0x08, 2, (uint32_t[]){1u << 20, 1u << 20}, data, 64);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("liar.idx.gz")), "data ends after 64 of");
    /* and 40 MB claimed by a few hundred bytes of zeros: the buffer grows as data arrives */
    uint8_t *z = calloc(1, 5u << 20);
    write_idx(tp("liar2.idx.gz"), true, 0x08, 2, (uint32_t[]){10000, 4000}, z, 5u << 20);
    free(z);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("liar2.idx.gz")), "data ends after 5242880 of 40000000");
    /* gzip garbage: valid gzip magic, junk after */
    unsigned char junk[64] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0x03};
    for (int i = 10; i < 64; i++)
        junk[i] = (unsigned char)(i * 37 + 11);
    write_bytes(tp("junk.gz"), junk, sizeof junk);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("junk.gz")), "junk.gz");
    /* gzip stream cut in half */
    uint8_t vals[4096];
    for (int i = 0; i < 4096; i++)
        vals[i] = (uint8_t)(i * 13 ^ (i >> 3));
    write_idx(tp("full.idx.gz"), true, 0x08, 1, (uint32_t[]){4096}, vals, 4096);
    unsigned char *full = read_whole(tp("full.idx.gz"), &len);
    write_bytes(tp("cut.idx.gz"), full, len / 2);
    free(full);
    KT_ERR(KN_EFORMAT, kn_idx_load(tp("cut.idx.gz")), "cut.idx.gz");
    /* OS errors */
    KT_ERR(KN_EIO, kn_idx_load(tp("does-not-exist.idx")), "No such file");
    KT_ERR(KN_EIO, kn_idx_load(g_dir), "directory");
    KT_ERR(KN_EINVAL, kn_idx_load(NULL), "NULL");
}

static void test_mnist_fake_dir(void) {
    kn_scope s = kn_scope_begin();
    mkdir(tp("mn"), 0755);
    uint8_t img[5 * 28 * 28], lab[5] = {9, 0, 3, 7, 1};
    for (int i = 0; i < 5 * 28 * 28; i++)
        img[i] = (uint8_t)i;
    write_idx(tp("mn/train-images-idx3-ubyte.gz"), true, 0x08, 3, (uint32_t[]){5, 28, 28}, img,
              sizeof img);
    write_idx(tp("mn/train-labels-idx1-ubyte"), false, 0x08, 1, (uint32_t[]){5}, lab, 5);
    kn_tensor *x = NULL, *y = NULL;
    KT_OK(kn_mnist_load(tp("mn"), "train", &x, &y));
    KT_EQ_INT(KN_U8, kn_tensor_dtype(x));
    KT_EQ_INT(KN_I64, kn_tensor_dtype(y));
    KT_EQ_INT(5, kn_tensor_dim(y, 0));
    KT_EQ_INT(28, kn_tensor_dim(x, 2));
    KT_EQ_INT(7, (int)kn_tensor_get(y, (int64_t[]){3}));
    KT_EQ_INT(img[28 * 28 + 5], (int)kn_tensor_get(x, (int64_t[]){1, 0, 5}));
    /* the test split is missing */
    kn_clear_error();
    KT_STATUS(KN_EIO, kn_mnist_load(tp("mn"), "test", &x, &y));
    KT_TRUE(x == NULL && y == NULL);
    KT_TRUE(strstr(kn_last_error(), "dataset-fashion-mnist") != NULL);
    KT_TRUE(strstr(kn_last_error(), "t10k-images-idx3-ubyte") != NULL);
    KT_STATUS(KN_EINVAL, kn_mnist_load(tp("mn"), "valid", &x, &y));
    /* count mismatch */
    write_idx(tp("mn/t10k-images-idx3-ubyte"), false, 0x08, 3, (uint32_t[]){5, 28, 28}, img,
              sizeof img);
    write_idx(tp("mn/t10k-labels-idx1-ubyte.gz"), true, 0x08, 1, (uint32_t[]){4}, lab, 4);
    KT_STATUS(KN_EFORMAT, kn_mnist_load(tp("mn"), "test", &x, &y));
    KT_TRUE(strstr(kn_last_error(), "5 images but") != NULL);
    /* wrong kind of file */
    write_idx(tp("mn/t10k-labels-idx1-ubyte.gz"), true, 0x08, 2, (uint32_t[]){5, 1}, lab, 5);
    KT_STATUS(KN_EFORMAT, kn_mnist_load(tp("mn"), "test", &x, &y));
    kn_scope_end(s);
    /* outside a scope the caller owns the results */
    size_t live = kn_live_tensors();
    KT_OK(kn_mnist_load(tp("mn"), "train", &x, &y));
    KT_EQ_INT(live + 2, kn_live_tensors());
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live, kn_live_tensors());
    /* directory lookup */
    const char *old = getenv("KILN_FASHION_MNIST");
    char saved[512] = "";
    if (old) snprintf(saved, sizeof saved, "%s", old);
    setenv("KILN_FASHION_MNIST", "/some/where", 1);
    KT_TRUE(strcmp(kn_fashion_mnist_dir(), "/some/where") == 0);
    unsetenv("KILN_FASHION_MNIST");
    KT_TRUE(strcmp(kn_fashion_mnist_dir(), "/usr/share/datasets/fashion-mnist") == 0);
    if (old) setenv("KILN_FASHION_MNIST", saved, 1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_fashion_mnist_real(void) {
    const char *dir = kn_fashion_mnist_dir();
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("  (skipped: %s is absent; install Debian's dataset-fashion-mnist)\n", dir);
        return;
    }
    kn_scope s = kn_scope_begin();
    kn_tensor *x = NULL, *y = NULL, *tx = NULL, *ty = NULL;
    double t0 = now_s();
    KT_OK(kn_mnist_load(dir, "train", &x, &y));
    double t1 = now_s();
    KT_OK(kn_mnist_load(dir, "test", &tx, &ty));
    KT_EQ_INT(3, kn_tensor_ndim(x));
    KT_EQ_INT(60000, kn_tensor_dim(x, 0));
    KT_EQ_INT(28, kn_tensor_dim(x, 1));
    KT_EQ_INT(28, kn_tensor_dim(x, 2));
    KT_EQ_INT(60000, kn_tensor_dim(y, 0));
    KT_EQ_INT(10000, kn_tensor_dim(tx, 0));
    KT_EQ_INT(10000, kn_tensor_dim(ty, 0));
    KT_EQ_INT(KN_U8, kn_tensor_dtype(x));
    KT_EQ_INT(KN_I64, kn_tensor_dtype(y));
    KT_EQ_INT(9, (int)kn_tensor_get(y, (int64_t[]){0})); /* Fashion-MNIST: ankle boot */
    const int64_t *lab = kn_tensor_data(y);
    int64_t counts[10] = {0};
    for (int i = 0; i < 60000; i++) {
        if (lab[i] < 0 || lab[i] > 9) KT_FAIL("label %lld at %d", (long long)lab[i], i);
        counts[lab[i]]++;
    }
    for (int c = 0; c < 10; c++)
        KT_EQ_INT(6000, counts[c]); /* balanced classes */
    const int64_t *tl = kn_tensor_data(ty);
    for (int i = 0; i < 10000; i++)
        if (tl[i] < 0 || tl[i] > 9) KT_FAIL("test label %lld at %d", (long long)tl[i], i);
    const uint8_t *px = kn_tensor_data(x);
    int mx = 0;
    for (int i = 0; i < 784; i++)
        mx = px[i] > mx ? px[i] : mx;
    KT_TRUE(mx > 100); /* the first image is not blank */
    /* batch assembly cost: one epoch of 64-sample batches, u8 -> normalised f32, shuffled */
    kn_loader_opts o = {.batch_size = 64,
                        .shuffle = true,
                        .seed = 1,
                        .scale = 1.0 / 255,
                        .mean = 0.2860,
                        .std = 0.3530,
                        .add_channel_dim = true};
    kn_loader *l = kn_loader_new(x, y, &o);
    KT_NOTNULL(l);
    double t2 = now_s();
    int nb = 0;
    kn_tensor *bx, *by;
    for (;;) {
        kn_scope bs = kn_scope_begin();
        int r = kn_loader_next(l, &bx, &by);
        if (r == 1 && nb == 0) {
            KT_EQ_INT(4, kn_tensor_ndim(bx));
            KT_EQ_INT(1, kn_tensor_dim(bx, 1));
        }
        kn_scope_end(bs);
        if (r != 1) break;
        nb++;
    }
    double t3 = now_s();
    kn_loader_free(l);
    KT_EQ_INT(938, nb);
    printf("  fashion-mnist: train load %.0f ms, one epoch of batch assembly %.1f ms "
           "(%.1f us/batch)\n",
           1e3 * (t1 - t0), 1e3 * (t3 - t2), 1e6 * (t3 - t2) / nb);
    kn_scope_end(s);
}

/* ---- NPY ---- */

static const char *fixture(const char *name) {
    static char buf[1024];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/tests/data/npy/%s.npy", src && *src ? src : ".", name);
    return buf;
}

/* base(i) = (i % 7) - 3, the fixture generator's formula */
static double fbase(int64_t i) {
    return (double)(i % 7) - 3;
}

static int check_fixture(const char *name, kn_dtype dt, int nd, const int64_t *shape, double mul,
                         double add, bool as_bool) {
    kn_tensor *t = kn_npy_load(fixture(name));
    if (!t) {
        fprintf(stderr, "  %s: %s\n", name, kn_last_error());
        return 1;
    }
    int bad = 0;
    if (kn_tensor_dtype(t) != dt || kn_tensor_ndim(t) != nd) bad = 1;
    for (int i = 0; !bad && i < nd; i++)
        if (kn_tensor_dim(t, i) != shape[i]) bad = 1;
    if (bad) {
        fprintf(stderr, "  %s: dtype %s ndim %d\n", name, kn_dtype_name(kn_tensor_dtype(t)),
                kn_tensor_ndim(t));
        kn_tensor_free(t);
        return 1;
    }
    int64_t n = kn_tensor_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    kn_tensor_read(t, KN_F64, v, sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double e = as_bool ? (fbase(i) > 0) : (fbase(i) + add) * mul;
        if (v[i] != e) {
            fprintf(stderr, "  %s[%lld]: got %g expected %g\n", name, (long long)i, v[i], e);
            bad = 1;
            break;
        }
    }
    free(v);
    kn_tensor_free(t);
    return bad;
}

static void test_npy_fixtures(void) {
    int64_t s23[2] = {2, 3};
    struct {
        const char *name;
        kn_dtype dt;
        double mul, add;
        bool b;
    } c[] = {
        {"f4", KN_F32, 0.5, 0, 0},     {"f8", KN_F64, 0.5, 0, 0},    {"f2", KN_F16, 0.5, 0, 0},
        {"i1", KN_I8, 1, 0, 0},        {"u1", KN_U8, 1, 3, 0},       {"i4", KN_I32, 1000, 0, 0},
        {"i8", KN_I64, 1e12, 0, 0},    {"b1", KN_BOOL, 1, 0, 1},     {"i2", KN_I32, 100, 0, 0},
        {"u2", KN_I32, 10000, 3, 0},   {"be_f4", KN_F32, 0.5, 0, 0}, {"be_f8", KN_F64, 0.5, 0, 0},
        {"be_i8", KN_I64, 1e12, 0, 0}, {"v2_f4", KN_F32, 0.5, 0, 0}, {"v3_f4", KN_F32, 0.5, 0, 0}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        if (check_fixture(c[i].name, c[i].dt, 2, s23, c[i].mul, c[i].add, c[i].b))
            KT_FAIL("fixture %s", c[i].name);
    /* Fortran order comes back C-contiguous with C-order values */
    if (check_fixture("fortran_f4", KN_F32, 3, (int64_t[]){2, 3, 4}, 0.5, 0, 0))
        KT_FAIL("fortran_f4");
    if (check_fixture("fortran_i4", KN_I32, 2, (int64_t[]){3, 5}, 1, 0, 0)) KT_FAIL("fortran_i4");
    kn_tensor *t = kn_npy_load(fixture("fortran_f4"));
    KT_NOTNULL(t);
    KT_TRUE(kn_tensor_is_contiguous(t));
    kn_tensor_free(t);
    if (check_fixture("vec5_i4", KN_I32, 1, (int64_t[]){5}, 1, 0, 0)) KT_FAIL("vec5_i4");
    if (check_fixture("empty_f4", KN_F32, 2, (int64_t[]){0, 3}, 1, 0, 0)) KT_FAIL("empty_f4");
    t = kn_npy_load(fixture("scalar_f8"));
    KT_NOTNULL(t);
    KT_EQ_INT(0, kn_tensor_ndim(t));
    KT_NEAR(2.5, kn_item(t), 0);
    kn_tensor_free(t);
    /* pickles are refused */
    KT_ERR(KN_EUNSUPPORTED, kn_npy_load(fixture("object")), "object arrays");
    /* a fixture saved again by kiln is byte-identical to NumPy's file (same header layout) */
    const char *names[] = {"f4", "f8", "i8", "u1", "b1", "vec5_i4", "scalar_f8", "empty_f4"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        t = kn_npy_load(fixture(names[i]));
        KT_NOTNULL(t);
        KT_OK(kn_npy_save(tp("resave.npy"), t));
        kn_tensor_free(t);
        size_t na, nb;
        unsigned char *a = read_whole(fixture(names[i]), &na),
                      *b = read_whole(tp("resave.npy"), &nb);
        bool same = a && b && na == nb && memcmp(a, b, na) == 0;
        free(a);
        free(b);
        if (!same) KT_FAIL("kiln's %s.npy differs from NumPy's", names[i]);
    }
}

static void test_npy_roundtrip(void) {
    kn_scope s = kn_scope_begin();
    kn_dtype dts[] = {KN_F32, KN_F64, KN_F16, KN_BF16, KN_I8, KN_U8, KN_I32, KN_I64, KN_BOOL};
    struct {
        int nd;
        int64_t shape[8];
    } shapes[] = {{2, {3, 4}}, {0, {0}}, {1, {5}}, {2, {0, 3}}, {8, {1, 2, 1, 2, 1, 2, 1, 3}}};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            int64_t n = kn__numel(shapes[k].nd, shapes[k].shape);
            kn_tensor *a = kn_arange(0, (double)n, 1, KN_F64);
            a = kn_reshape(kn_sub(a, kn_scalar(KN_F64, 4)), shapes[k].nd, shapes[k].shape);
            a = kn_cast(a, dts[d]);
            KT_NOTNULL(a);
            KT_OK(kn_npy_save(tp("rt.npy"), a));
            kn_tensor *b = kn_npy_load(tp("rt.npy"));
            KT_NOTNULL(b);
            KT_EQ_INT(dts[d], kn_tensor_dtype(b));
            KT_EQ_INT(shapes[k].nd, kn_tensor_ndim(b));
            size_t nbytes = (size_t)n * kn_dtype_size(dts[d]);
            if (nbytes && memcmp(kn_tensor_data(a), kn_tensor_data(b), nbytes) != 0)
                KT_FAIL("round trip of %s differs", kn_dtype_name(dts[d]));
        }
    }
    /* non-contiguous input is written in C order */
    kn_tensor *m = kn_reshape(kn_arange(0, 6, 1, KN_F32), 2, (int64_t[]){2, 3});
    kn_tensor *mt = kn_transpose(m, 0, 1);
    KT_OK(kn_npy_save(tp("t.npy"), mt));
    kn_tensor *r = kn_npy_load(tp("t.npy"));
    KT_NOTNULL(r);
    KT_EQ_INT(3, kn_tensor_dim(r, 0));
    KT_CLOSE(r, kn_contiguous(mt), 0, 0);
    /* overwriting is atomic and leaves no temp file */
    KT_OK(kn_npy_save(tp("t.npy"), m));
    r = kn_npy_load(tp("t.npy"));
    KT_EQ_INT(2, kn_tensor_dim(r, 0));
    KT_EQ_INT(0, count_tmp_files(g_dir));
    /* write errors */
    kn_clear_error();
    KT_STATUS(KN_EIO, kn_npy_save(tp("no/such/dir/x.npy"), m));
    KT_TRUE(strstr(kn_last_error(), "No such file") != NULL);
    KT_STATUS(KN_EINVAL, kn_npy_save(tp("x.npy"), NULL));
    kn_scope_end(s);
}

/* Writes an NPY file with the given version and header text (padded) followed by data. */
static void write_npy(const char *path, int major, const char *hdr, const void *data, size_t n) {
    size_t hl = strlen(hdr), prefix = major == 1 ? 10 : 12;
    size_t total = (prefix + hl + 1 + 63) / 64 * 64;
    unsigned char *b = calloc(1, total + n);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    size_t hlen = total - prefix;
    for (size_t i = 0; i < prefix - 8; i++)
        b[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + prefix, hdr, hl);
    memset(b + prefix + hl, ' ', total - prefix - hl - 1);
    b[total - 1] = '\n';
    if (n) memcpy(b + total, data, n);
    write_bytes(path, b, total + n);
    free(b);
}

static void test_npy_hostile(void) {
    float d[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const char *p = tp("h.npy");
    /* sanity: the helper writes valid files */
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", d, 32);
    kn_tensor *t = kn_npy_load(p);
    KT_NOTNULL(t);
    KT_NEAR(8, kn_tensor_get(t, (int64_t[]){1, 3}), 0);
    kn_tensor_free(t);
    /* double quotes, no trailing comma, Python 2 longs */
    write_npy(p, 1, "{\"descr\": \"<f4\", \"shape\": (2L, 4L), \"fortran_order\": False}", d, 32);
    t = kn_npy_load(p);
    KT_NOTNULL(t);
    kn_tensor_free(t);

    write_bytes(p, "\x93NUMPX\x01\x00\x00\x00", 10);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "magic");
    write_bytes(p, "\x93NUM", 4);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "ends after 4 bytes");
    write_bytes(p, "\x93NUMPY\x04\x00\x10\x00", 10);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "version 4.0");
    write_bytes(p, "\x93NUMPY\x01\x00\xff\xff{'descr'", 17);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "header");
    write_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\x7f{", 13);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "implausible");
    write_bytes(p, "\x93NUMPY\x02\x00\x10", 9);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "h.npy");
    struct {
        const char *hdr;
        kn_status st;
        const char *msg;
    } bad[] = {
        {"[1, 2, 3]", KN_EFORMAT, "not a dict"},
        {"{'descr': '<f4', 'fortran_order': False}", KN_EFORMAT, "missing key 'shape'"},
        {"{'descr': '<f4', 'shape': (2, 4)}", KN_EFORMAT, "missing key 'fortran_order'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), 'x': 1}", KN_EFORMAT,
         "unexpected or repeated key 'x'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (8,)}", KN_EFORMAT,
         "repeated key 'descr'"},
        {"{'descr': '<f4', 'fortran_order': maybe, 'shape': (8,)}", KN_EFORMAT, "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 8)}", KN_EFORMAT,
         "non-negative integers"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 4]}", KN_EFORMAT, "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 4)}", KN_EFORMAT, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", KN_EFORMAT,
         "more than 8 dims"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", KN_EFORMAT,
         "overflows"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4096)}",
         KN_EFORMAT, "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000)}", KN_EFORMAT,
         "but only 32 data bytes follow"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}", KN_EFORMAT,
         "(3, 4) '<f4' (48 bytes)"},
        {"{'descr': '|O', 'fortran_order': False, 'shape': (8,)}", KN_EUNSUPPORTED,
         "object arrays"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (8,)}", KN_EUNSUPPORTED,
         "structured"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (4,)}", KN_EUNSUPPORTED, "'<c8'"},
        {"{'descr': '<u8', 'fortran_order': False, 'shape': (4,)}", KN_EUNSUPPORTED,
         "not supported"},
        {"{'descr': '<U3', 'fortran_order': False, 'shape': (2,)}", KN_EUNSUPPORTED, "'<U3'"},
        {"{'descr': 42, 'fortran_order': False, 'shape': (2,)}", KN_EFORMAT, "not a string"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (8,)} junk", KN_EFORMAT,
         "text after the dict"},
        {"{'descr': '<f4\\x00', 'fortran_order': False, 'shape': (8,)}", KN_EFORMAT,
         "not a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_npy(p, i % 2 ? 2 : 1, bad[i].hdr, d, 32);
        kn_clear_error();
        t = kn_npy_load(p);
        if (t) {
            kn_tensor_free(t);
            KT_FAIL("accepted header %s", bad[i].hdr);
        }
        if (kn_last_status() != bad[i].st || !strstr(kn_last_error(), bad[i].msg) ||
            !strstr(kn_last_error(), "h.npy"))
            KT_FAIL("header %s: got %s \"%s\", expected %s with \"%s\"", bad[i].hdr,
                    kn_status_name(kn_last_status()), kn_last_error(), kn_status_name(bad[i].st),
                    bad[i].msg);
    }
    /* NUL inside the header */
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (8,)}", d, 32);
    size_t n;
    unsigned char *b = read_whole(p, &n);
    b[20] = 0;
    write_bytes(p, b, n);
    free(b);
    KT_ERR(KN_EFORMAT, kn_npy_load(p), "NUL");
    KT_ERR(KN_EIO, kn_npy_load(tp("missing.npy")), "No such file");
    KT_ERR(KN_EIO, kn_npy_load(g_dir), "directory");
}

/* ---- CSV ---- */

static void test_csv_good(void) {
    kn_scope s = kn_scope_begin();
    write_text(tp("a.csv"), "x,y,z\r\n1, 2.5 ,-3\r\n\r\n  4,5e1,\t6  \n7,8,9");
    kn_tensor *t = kn_csv_load(tp("a.csv"), KN_F32, true, 0);
    KT_NOTNULL(t);
    KT_EQ_INT(3, kn_tensor_dim(t, 0));
    KT_EQ_INT(3, kn_tensor_dim(t, 1));
    float e[9] = {1, 2.5f, -3, 4, 50, 6, 7, 8, 9};
    KT_CLOSE(t, kn_from_data(KN_F32, 2, (int64_t[]){3, 3}, e), 0, 0);
    /* integers, ';' */
    write_text(tp("b.csv"), "1;2\n-3;4.0\n1e3;0\n");
    t = kn_csv_load(tp("b.csv"), KN_I64, false, ';');
    KT_NOTNULL(t);
    KT_EQ_INT(KN_I64, kn_tensor_dtype(t));
    KT_EQ_INT(1000, (int)kn_tensor_get(t, (int64_t[]){2, 0}));
    KT_EQ_INT(-3, (int)kn_tensor_get(t, (int64_t[]){1, 0}));
    /* whitespace-separated */
    write_text(tp("c.txt"), "  1   2\t3\n4 5 6   \n");
    t = kn_csv_load(tp("c.txt"), KN_F64, false, ' ');
    KT_NOTNULL(t);
    KT_EQ_INT(2, kn_tensor_dim(t, 0));
    KT_EQ_INT(3, kn_tensor_dim(t, 1));
    KT_NEAR(6, kn_tensor_get(t, (int64_t[]){1, 2}), 0);
    /* big i64 exactly, nan */
    write_text(tp("d.csv"), "9007199254740993,nan\n");
    t = kn_csv_load(tp("d.csv"), KN_I64, false, ',');
    KT_TRUE(t == NULL); /* nan is not an integer */
    t = kn_csv_load(tp("d.csv"), KN_F64, false, ',');
    KT_NOTNULL(t);
    KT_TRUE(isnan(kn_tensor_get(t, (int64_t[]){0, 1})));
    write_text(tp("d.csv"), "9007199254740993\n");
    t = kn_csv_load(tp("d.csv"), KN_I64, false, ',');
    KT_NOTNULL(t);
    int64_t v;
    kn_tensor_read(t, KN_I64, &v, sizeof v);
    KT_EQ_INT(9007199254740993LL, v);
    /* u8, bool, single column */
    write_text(tp("e.csv"), "255\n0\n");
    t = kn_csv_load(tp("e.csv"), KN_U8, false, 0);
    KT_NOTNULL(t);
    KT_EQ_INT(255, (int)kn_tensor_get(t, (int64_t[]){0, 0}));
    t = kn_csv_load(tp("e.csv"), KN_BOOL, false, 0);
    KT_NOTNULL(t);
    KT_EQ_INT(1, (int)kn_tensor_get(t, (int64_t[]){0, 0}));
    KT_EQ_INT(0, (int)kn_tensor_get(t, (int64_t[]){1, 0}));
    /* empty file and header only */
    write_text(tp("f.csv"), "");
    t = kn_csv_load(tp("f.csv"), KN_F32, false, 0);
    KT_NOTNULL(t);
    KT_EQ_INT(0, kn_tensor_numel(t));
    write_text(tp("f.csv"), "a,b\n");
    t = kn_csv_load(tp("f.csv"), KN_F32, true, 0);
    KT_NOTNULL(t);
    KT_EQ_INT(2, kn_tensor_ndim(t));
    KT_EQ_INT(0, kn_tensor_dim(t, 0));
    kn_scope_end(s);
}

static void test_csv_bad(void) {
    write_text(tp("r.csv"), "1,2,3\n4,5,6\n\n7,8\n");
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("r.csv"), KN_F32, false, 0),
           "r.csv:4: ragged row: 2 "
           "fields, but the first row "
           "has 3");
    write_text(tp("n.csv"), "h1,h2\n1,2\n3,abc\n");
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("n.csv"), KN_F32, true, 0),
           "n.csv:3: column 2: 'abc' is not a number");
    write_text(tp("n2.csv"), "1,2x\n");
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("n2.csv"), KN_F64, false, 0), "column 2: '2x'");
    /* without header=true a text header is an error on line 1 */
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("n.csv"), KN_F32, false, 0), "n.csv:1: column 1");
    write_text(tp("e.csv"), "1,,3\n");
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("e.csv"), KN_F32, false, 0), "e.csv:1: column 2 is empty");
    write_text(tp("o.csv"), "1\n256\n");
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("o.csv"), KN_U8, false, 0),
           "o.csv:2: column 1: 256 is out "
           "of range for uint8");
    write_text(tp("i.csv"), "1.5\n");
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("i.csv"), KN_I32, false, 0), "not an integer");
    write_text(tp("z.csv"), "1\0002\n");
    write_bytes(tp("z.csv"), "1\0002\n", 4);
    KT_ERR(KN_EFORMAT, kn_csv_load(tp("z.csv"), KN_F32, false, 0), "NUL");
    KT_ERR(KN_EIO, kn_csv_load(tp("nope.csv"), KN_F32, false, 0), "nope.csv");
    KT_ERR(KN_EINVAL, kn_csv_load(tp("r.csv"), KN_F32, false, '.'), "delimiter");
}

/* ---- loader ---- */

/* Runs one epoch, appending x[:,0] values (as int64) to order; returns the batch count. */
static int run_epoch(kn_loader *l, int64_t *order, int64_t *sizes) {
    int nb = 0, k = 0;
    kn_tensor *x, *y;
    for (;;) {
        kn_scope s = kn_scope_begin();
        int r = kn_loader_next(l, &x, &y);
        if (r == 1) {
            int64_t b = kn_tensor_dim(x, 0);
            if (sizes) sizes[nb] = b;
            for (int64_t i = 0; i < b; i++) {
                int64_t idx[8] = {i, 0, 0, 0, 0, 0, 0, 0};
                if (order) order[k] = (int64_t)kn_tensor_get(x, idx);
                if (y) { /* y rows travel with x rows: y = 10 * x */
                    int64_t yi[2] = {i, 0};
                    if ((int64_t)kn_tensor_get(y, yi) != 10 * (int64_t)kn_tensor_get(x, idx)) {
                        kn_scope_end(s);
                        return -100;
                    }
                }
                k++;
            }
            nb++;
        }
        kn_scope_end(s);
        if (r != 1) return r < 0 ? -1 : nb;
    }
}

static void test_loader_counts(void) {
    size_t live = kn_live_tensors();
    kn_tensor *x = kn_arange(0, 10, 1, KN_I64), *y = kn_arange(0, 100, 10, KN_I64);
    for (int pf = 0; pf < 2; pf++) {
        kn_loader_opts o = {.batch_size = 3, .prefetch = pf};
        kn_loader *l = kn_loader_new(x, y, &o);
        KT_NOTNULL(l);
        KT_EQ_INT(4, kn_loader_num_batches(l));
        int64_t sizes[8], order[16];
        KT_EQ_INT(0, kn_loader_epoch(l));
        KT_EQ_INT(4, run_epoch(l, order, sizes));
        KT_EQ_INT(3, sizes[0]);
        KT_EQ_INT(1, sizes[3]);
        for (int i = 0; i < 10; i++)
            KT_EQ_INT(i, order[i]); /* no shuffle: in order */
        KT_EQ_INT(1, kn_loader_epoch(l));
        KT_EQ_INT(4, run_epoch(l, NULL, NULL));
        KT_EQ_INT(2, kn_loader_epoch(l));
        kn_loader_free(l);
        o.drop_last = true;
        l = kn_loader_new(x, y, &o);
        KT_EQ_INT(3, kn_loader_num_batches(l));
        KT_EQ_INT(3, run_epoch(l, order, sizes));
        KT_EQ_INT(3, sizes[2]);
        kn_loader_free(l);
        /* fewer samples than a batch, drop_last: no batches, epochs still advance */
        o.batch_size = 11;
        l = kn_loader_new(x, y, &o);
        KT_EQ_INT(0, kn_loader_num_batches(l));
        kn_tensor *bx, *by;
        KT_EQ_INT(0, kn_loader_next(l, &bx, &by));
        KT_TRUE(bx == NULL && by == NULL);
        KT_EQ_INT(0, kn_loader_next(l, &bx, &by));
        KT_EQ_INT(2, kn_loader_epoch(l));
        kn_loader_free(l);
        o.drop_last = false;
        l = kn_loader_new(x, NULL, &o); /* one partial batch, no labels */
        KT_EQ_INT(1, kn_loader_num_batches(l));
        KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
        KT_TRUE(by == NULL);
        KT_EQ_INT(10, kn_tensor_dim(bx, 0));
        kn_tensor_free(bx);
        KT_EQ_INT(1, kn_loader_next(l, &bx, NULL) == 0); /* end of epoch; y pointer optional */
        kn_loader_free(l);
    }
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live, kn_live_tensors());
}

static bool is_perm(const int64_t *v, int64_t n) {
    char *seen = calloc(1, (size_t)n);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        if (v[i] < 0 || v[i] >= n || seen[v[i]])
            ok = false;
        else
            seen[v[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_loader_shuffle(void) {
    enum { N = 1000 };
    size_t live = kn_live_tensors();
    kn_scope sc = kn_scope_begin();
    kn_tensor *x = kn_keep(kn_arange(0, N, 1, KN_I64));
    kn_tensor *y = kn_keep(kn_reshape(kn_arange(0, 10 * N, 10, KN_I64), 2, (int64_t[]){N, 1}));
    kn_scope_end(sc);
    kn_rng_state rs = kn_rng_get_state();
    kn_loader_opts o = {.batch_size = 64, .shuffle = true, .seed = 42};
    kn_loader *a = kn_loader_new(x, y, &o), *b = kn_loader_new(x, y, &o);
    o.seed = 43;
    kn_loader *c = kn_loader_new(x, y, &o);
    static int64_t e0[N], e1[N], e0b[N], e1b[N], c0[N], e3[N], e3b[N];
    KT_EQ_INT(16, run_epoch(a, e0, NULL));
    KT_EQ_INT(16, run_epoch(a, e1, NULL));
    KT_TRUE(is_perm(e0, N));
    KT_TRUE(is_perm(e1, N));
    KT_TRUE(memcmp(e0, e1, sizeof e0) != 0); /* different epoch, different order */
    int fixed = 0;
    for (int i = 0; i < N; i++)
        fixed += e0[i] == i;
    KT_TRUE(fixed < 20); /* actually shuffled */
    KT_EQ_INT(16, run_epoch(b, e0b, NULL));
    KT_EQ_INT(16, run_epoch(b, e1b, NULL));
    KT_TRUE(memcmp(e0, e0b, sizeof e0) == 0); /* same seed and epoch, same order */
    KT_TRUE(memcmp(e1, e1b, sizeof e1) == 0);
    KT_EQ_INT(16, run_epoch(c, c0, NULL));
    KT_TRUE(memcmp(e0, c0, sizeof e0) != 0); /* another seed */
    /* resume: set_epoch(3) reproduces epoch 3 reached by iterating */
    run_epoch(a, NULL, NULL);
    KT_EQ_INT(3, kn_loader_epoch(a));
    run_epoch(a, e3, NULL);
    KT_OK(kn_loader_set_epoch(b, 3));
    KT_EQ_INT(3, kn_loader_epoch(b));
    run_epoch(b, e3b, NULL);
    KT_TRUE(memcmp(e3, e3b, sizeof e3) == 0);
    /* set_epoch mid-epoch restarts it */
    kn_tensor *bx, *by;
    KT_OK(kn_loader_set_epoch(b, 1));
    KT_EQ_INT(1, kn_loader_next(b, &bx, &by));
    kn_tensor_free(bx);
    kn_tensor_free(by);
    KT_OK(kn_loader_set_epoch(b, 1));
    run_epoch(b, e1b, NULL);
    KT_TRUE(memcmp(e1, e1b, sizeof e1) == 0);
    KT_STATUS(KN_EINVAL, kn_loader_set_epoch(b, -1));
    /* the global RNG is untouched */
    kn_rng_state rs2 = kn_rng_get_state();
    KT_TRUE(rs.seed == rs2.seed && rs.counter == rs2.counter);
    kn_loader_free(a);
    kn_loader_free(b);
    kn_loader_free(c);
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live, kn_live_tensors());
}

/* Collects every batch of `epochs` epochs (with a set_epoch jump) into flat arrays. */
static int collect(kn_tensor *x, kn_tensor *y, kn_loader_opts o, float *xs, int64_t *ys,
                   int64_t *bsz, int *nbatch) {
    kn_loader *l = kn_loader_new(x, y, &o);
    if (!l) return -1;
    size_t kx = 0, ky = 0;
    int nb = 0;
    for (int e = 0; e < 4; e++) {
        if (e == 2) kn_loader_set_epoch(l, 7);
        for (;;) {
            kn_scope s = kn_scope_begin();
            kn_tensor *bx, *by;
            int r = kn_loader_next(l, &bx, &by);
            if (r == 1) {
                size_t n = (size_t)kn_tensor_numel(bx), m = (size_t)kn_tensor_numel(by);
                kn_tensor_read(bx, KN_F32, xs + kx, n * sizeof(float));
                kn_tensor_read(by, KN_I64, ys + ky, m * sizeof(int64_t));
                kx += n;
                ky += m;
                bsz[nb++] = kn_tensor_dim(bx, 0);
            }
            kn_scope_end(s);
            if (r < 0) {
                kn_loader_free(l);
                return -1;
            }
            if (r == 0) break;
        }
    }
    kn_loader_free(l);
    *nbatch = nb;
    return (int)kx;
}

static void test_loader_prefetch_equal(void) {
    enum { N = 203, H = 5, W = 3 };
    size_t live = kn_live_tensors();
    uint8_t *px = malloc(N * H * W);
    for (int i = 0; i < N * H * W; i++)
        px[i] = (uint8_t)(i * 31 + (i >> 5));
    kn_tensor *x = kn_from_data(KN_U8, 3, (int64_t[]){N, H, W}, px);
    kn_tensor *y = kn_arange(0, N, 1, KN_I64);
    size_t cap = 4 * N * H * W + 64;
    float *xa = malloc(cap * sizeof(float)), *xb = malloc(cap * sizeof(float));
    int64_t *ya = malloc(4 * N * sizeof(int64_t)), *yb = malloc(4 * N * sizeof(int64_t));
    int64_t ba[64], bb[64];
    /* one compute thread leaves a core spare for the worker; all of them make the loader build
     * batches in the caller (on a 2-core machine) */
    int prev = kn_get_num_threads();
    for (int t = 0; t < 2; t++) {
        kn_set_num_threads(t ? prev : 1);
        for (int dl = 0; dl < 2; dl++) {
            for (int sh = 0; sh < 2; sh++) {
                kn_loader_opts o = {.batch_size = 16,
                                    .shuffle = sh,
                                    .seed = 5,
                                    .drop_last = dl,
                                    .scale = 1.0 / 255,
                                    .mean = 0.5,
                                    .std = 0.25,
                                    .add_channel_dim = true};
                int na, nb;
                int ka = collect(x, y, o, xa, ya, ba, &na);
                o.prefetch = true;
                int kb = collect(x, y, o, xb, yb, bb, &nb);
                KT_TRUE(ka > 0);
                KT_EQ_INT(ka, kb);
                KT_EQ_INT(na, nb);
                KT_EQ_INT(dl ? 4 * 12 : 4 * 13, na);
                KT_TRUE(memcmp(xa, xb, (size_t)ka * sizeof(float)) == 0);
                KT_TRUE(memcmp(ba, bb, (size_t)na * sizeof(int64_t)) == 0);
                int64_t ny = 0;
                for (int i = 0; i < na; i++)
                    ny += ba[i];
                KT_TRUE(memcmp(ya, yb, (size_t)ny * sizeof(int64_t)) == 0);
                /* values: x rows match the y index through the transform */
                for (int64_t i = 0; i < ny; i++) {
                    int64_t k = ya[i];
                    for (int j = 0; j < H * W; j++) {
                        float e = ((float)px[k * H * W + j] / 255.0f - 0.5f) / 0.25f;
                        if (fabsf(xa[i * H * W + j] - e) > 1e-5f)
                            KT_FAIL("x[%lld][%d] = %g, expected %g", (long long)i, j,
                                    xa[i * H * W + j], e);
                    }
                }
            }
        }
    }
    kn_set_num_threads(prev);
    free(px);
    free(xa);
    free(xb);
    free(ya);
    free(yb);
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live, kn_live_tensors());
}

static void test_loader_transform(void) {
    kn_scope s = kn_scope_begin();
    uint8_t px[2 * 2 * 2] = {0, 51, 102, 153, 204, 255, 10, 20};
    kn_tensor *x = kn_from_data(KN_U8, 3, (int64_t[]){2, 2, 2}, px);
    kn_loader_opts o = {
        .batch_size = 2, .scale = 1.0 / 255, .mean = 0.5, .std = 0.5, .add_channel_dim = true};
    kn_loader *l = kn_loader_new(x, NULL, &o);
    kn_tensor *bx, *by;
    KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    KT_EQ_INT(KN_F32, kn_tensor_dtype(bx));
    KT_EQ_INT(4, kn_tensor_ndim(bx));
    int64_t es[4] = {2, 1, 2, 2};
    for (int i = 0; i < 4; i++)
        KT_EQ_INT(es[i], kn_tensor_dim(bx, i));
    float v[8];
    kn_tensor_read(bx, KN_F32, v, sizeof v);
    for (int i = 0; i < 8; i++)
        KT_NEAR((px[i] / 255.0 - 0.5) / 0.5, v[i], 1e-6);
    kn_loader_free(l);
    /* scale 0 and std 0 mean 1; mean alone */
    o = (kn_loader_opts){.batch_size = 8, .mean = 3};
    l = kn_loader_new(x, NULL, &o);
    KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    KT_EQ_INT(KN_F32, kn_tensor_dtype(bx));
    KT_EQ_INT(3, kn_tensor_ndim(bx));
    kn_tensor_read(bx, KN_F32, v, sizeof v);
    for (int i = 0; i < 8; i++)
        KT_NEAR(px[i] - 3.0, v[i], 1e-5);
    kn_loader_free(l);
    /* identity transform: integer x keeps its dtype, f64 becomes f32 */
    o = (kn_loader_opts){.batch_size = 8};
    l = kn_loader_new(x, NULL, &o);
    KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    KT_EQ_INT(KN_U8, kn_tensor_dtype(bx));
    KT_EQ_INT(255, (int)kn_tensor_get(bx, (int64_t[]){1, 0, 1}));
    kn_loader_free(l);
    kn_tensor *xd = kn_cast(x, KN_F64);
    l = kn_loader_new(xd, NULL, &o);
    KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    KT_EQ_INT(KN_F32, kn_tensor_dtype(bx));
    KT_NEAR(204, kn_tensor_get(bx, (int64_t[]){1, 0, 0}), 0);
    kn_loader_free(l);
    /* other dtypes through the conversion loop */
    kn_dtype dts[] = {KN_I8, KN_I32, KN_I64, KN_F16, KN_BF16, KN_BOOL, KN_F32};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
        kn_tensor *xt = kn_cast(kn_sub(kn_cast(x, KN_F32), kn_scalar(KN_F32, 100)), dts[d]);
        o = (kn_loader_opts){.batch_size = 8, .scale = 2, .std = 4};
        l = kn_loader_new(xt, NULL, &o);
        KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
        KT_CLOSE(bx,
                 kn_div(kn_mul(kn_cast(xt, KN_F32), kn_scalar(KN_F32, 2)), kn_scalar(KN_F32, 4)),
                 1e-6, 1e-6);
        kn_loader_free(l);
    }
    /* non-contiguous x */
    kn_tensor *xt = kn_transpose(x, 1, 2);
    o = (kn_loader_opts){.batch_size = 1};
    l = kn_loader_new(xt, NULL, &o);
    KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    KT_EQ_INT(102, (int)kn_tensor_get(bx, (int64_t[]){0, 0, 1}));
    kn_loader_free(l);
    /* errors */
    o = (kn_loader_opts){.batch_size = 0};
    KT_ERR(KN_EINVAL, kn_loader_new(x, NULL, &o), "batch_size 0");
    o.batch_size = 2;
    KT_ERR(KN_ESHAPE, kn_loader_new(x, kn_arange(0, 3, 1, KN_I64), &o),
           "x (2, 2, 2) and y (3,) differ");
    KT_ERR(KN_ESHAPE, kn_loader_new(kn_scalar(KN_F32, 1), NULL, &o), "0-d");
    KT_ERR(KN_EINVAL, kn_loader_new(NULL, NULL, &o), "x is NULL");
    KT_ERR(KN_EINVAL, kn_loader_new(x, NULL, NULL), "opts is NULL");
    o.add_channel_dim = true;
    KT_ERR(KN_ELIMIT,
           kn_loader_new(kn_zeros(KN_F32, 8, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1}), NULL, &o),
           "add_channel_dim");
    KT_EQ_INT(-1, kn_loader_next(NULL, &bx, &by));
    kn_loader_free(NULL);
    kn_scope_end(s);
}

static void scopes_and_free(void) {
    size_t live = kn_live_tensors();
    kn_tensor *x = kn_zeros(KN_U8, 3, (int64_t[]){500, 28, 28});
    kn_tensor *y = kn_zeros(KN_I64, 1, (int64_t[]){500});
    kn_loader_opts o = {.batch_size = 32, .shuffle = true, .prefetch = true, .scale = 1.0 / 255};
    /* batches belong to the caller's scope */
    kn_loader *l = kn_loader_new(x, y, &o);
    kn_scope s = kn_scope_begin();
    kn_tensor *bx, *by;
    for (int i = 0; i < 5; i++)
        KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    kn_tensor *kept = kn_keep(bx);
    kn_scope_end(s);
    KT_EQ_INT(32, kn_tensor_dim(kept, 0));
    kn_tensor_free(kept);
    /* free mid-epoch, with the next batch prefetched or in flight */
    kn_loader_free(l);
    for (int k = 0; k < 50; k++) {
        l = kn_loader_new(x, y, &o);
        KT_NOTNULL(l);
        for (int i = 0; i < k % 4; i++) {
            KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
            kn_tensor_free(bx);
            kn_tensor_free(by);
        }
        if (k % 3 == 0) kn_loader_set_epoch(l, k);
        kn_loader_free(l);
    }
    /* free right after a full epoch (the next epoch's first batch is being built) */
    l = kn_loader_new(x, y, &o);
    KT_EQ_INT(16, run_epoch(l, NULL, NULL));
    kn_loader_free(l);
    /* retained inputs: the caller may drop its references while the loader lives */
    kn_tensor *x2 = kn_ones(KN_F32, 2, (int64_t[]){10, 2});
    l = kn_loader_new(x2, NULL, &(kn_loader_opts){.batch_size = 4, .prefetch = true});
    kn_tensor_free(x2);
    KT_EQ_INT(1, kn_loader_next(l, &bx, &by));
    KT_NEAR(1, kn_tensor_get(bx, (int64_t[]){3, 1}), 0);
    kn_tensor_free(bx);
    kn_loader_free(l);
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live, kn_live_tensors());
}

/* with a core spare for the worker (one compute thread) and without (all of them, on a 2-core
 * machine: batches built in the caller) */
static void test_loader_scopes_and_free(void) {
    int prev = kn_get_num_threads();
    kn_set_num_threads(1);
    scopes_and_free();
    kn_set_num_threads(prev);
    scopes_and_free();
}

/* Every allocation point of every reader and of the loader fails once: an error, no crash, no
 * leak (ASan's leak check covers the raw buffers). */
static void test_alloc_failures(void) {
    uint8_t img[4 * 3 * 3];
    for (int i = 0; i < 36; i++)
        img[i] = (uint8_t)i;
    write_idx(tp("af.idx.gz"), true, 0x0B, 3, (uint32_t[]){2, 3, 3}, img, 36);
    write_text(tp("af.csv"), "a,b\n1,2\n3,4\n");
    size_t live = kn_live_tensors();
    kn_tensor *src = kn_arange(0, 12, 1, KN_F32);
    KT_OK(kn_npy_save(tp("af.npy"), src));
    kn_tensor *x = kn_zeros(KN_U8, 3, (int64_t[]){10, 3, 3}), *y = kn_arange(0, 10, 1, KN_I64);
    for (int which = 0; which < 5; which++) {
        bool done = false;
        for (long n = 1; n < 200 && !done; n++) {
            kn_clear_error();
            kn__alloc_fail_after(n);
            kn_tensor *t = NULL;
            int r = 1;
            switch (which) {
            case 0: t = kn_idx_load(tp("af.idx.gz")); break;
            case 1: t = kn_npy_load(tp("af.npy")); break;
            case 2: t = kn_csv_load(tp("af.csv"), KN_F64, true, 0); break;
            case 3: r = kn_npy_save(tp("af2.npy"), src) == KN_OK; break;
            case 4: {
                kn_loader_opts o = {
                    .batch_size = 3, .shuffle = true, .prefetch = n % 2, .scale = 0.5};
                kn_loader *l = kn_loader_new(x, y, &o);
                r = l != NULL;
                int got = 0;
                for (int k = 0; l && k < 12; k++) {
                    kn_tensor *bx, *by;
                    int q = kn_loader_next(l, &bx, &by);
                    if (q < 0) {
                        if (kn_last_status() != KN_ENOMEM) KT_FAIL("loader: %s", kn_last_error());
                        r = 0;
                        continue; /* the failed batch is retried */
                    }
                    got += q;
                    kn_tensor_free(bx);
                    kn_tensor_free(by);
                }
                if (l && got != 9) KT_FAIL("loader produced %d batches, expected 9", got);
                kn_loader_free(l);
                break;
            }
            }
            kn__alloc_fail_after(0);
            if (which < 3) r = t != NULL;
            if (!r && which != 4 && kn_last_status() != KN_ENOMEM)
                KT_FAIL("case %d, failing allocation %ld: %s %s", which, n,
                        kn_status_name(kn_last_status()), kn_last_error());
            if (r && which != 4 && n > 1) done = true; /* no allocation left to fail */
            if (which == 4 && n > 60) done = true;
            kn_tensor_free(t);
        }
    }
    kn_tensor_free(src);
    kn_tensor_free(x);
    kn_tensor_free(y);
    KT_EQ_INT(live, kn_live_tensors());
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/kiln_test_data_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    size_t live = kn_live_tensors();
    KT_RUN(test_idx_types);
    KT_RUN(test_idx_hostile);
    KT_RUN(test_mnist_fake_dir);
    KT_RUN(test_fashion_mnist_real);
    KT_RUN(test_npy_fixtures);
    KT_RUN(test_npy_roundtrip);
    KT_RUN(test_npy_hostile);
    KT_RUN(test_csv_good);
    KT_RUN(test_csv_bad);
    KT_RUN(test_loader_counts);
    KT_RUN(test_loader_shuffle);
    KT_RUN(test_loader_prefetch_equal);
    KT_RUN(test_loader_transform);
    KT_RUN(test_loader_scopes_and_free);
    KT_RUN(test_alloc_failures);
    if (kn_live_tensors() != live) {
        fprintf(stderr, "[FAIL] leak: %zu tensors alive at exit, %zu at start\n", kn_live_tensors(),
                live);
        kt_failed++;
    }
    rm_tree(g_dir);
    return kt_finish();
}
