/*
 * kiln/data.h - data sets: readers for IDX (the MNIST family, plain or .gz through zlib), NPY
 * (read/write, every kiln dtype, C and Fortran order) and CSV of numbers; and a loader that
 * batches, shuffles with a seed, drops the last partial batch on request, normalises, and
 * prefetches the next batch on a background thread.
 *
 * Files are untrusted: a malformed file gives KN_EFORMAT (or KN_EIO for OS errors) and a message
 * naming the file and the problem, never a crash. Returned tensors follow the usual ownership
 * rules. Thread safety: a loader is used from one thread (its prefetch thread is internal).
 */
#ifndef KILN_DATA_H
#define KILN_DATA_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* IDX file (magic 0x00000803 etc.), gzip detected from the content; dtype per the IDX type
 * (u8, i8, i16 -> i32, i32, f32, f64). */
kn_tensor *kn_idx_load(const char *path);
/* NPY v1/v2/v3 (little or big endian, C or Fortran order; Fortran arrays are returned as
 * C-contiguous copies). Object arrays and pickles are refused. */
kn_tensor *kn_npy_load(const char *path);
kn_status kn_npy_save(const char *path, const kn_tensor *t); /* atomic (temp + rename) */
/* CSV of numbers -> 2-D tensor of dt; header: skip the first line; delim ',' when 0. Rows must
 * have equal lengths. */
kn_tensor *kn_csv_load(const char *path, kn_dtype dt, bool header, char delim);

/* Fashion-MNIST / MNIST from a directory holding {train,t10k}-{images-idx3,labels-idx1}-ubyte
 * (.gz or not). split: "train" or "test". images -> u8 (N, 28, 28), labels -> i64 (N). */
kn_status kn_mnist_load(const char *dir, const char *split, kn_tensor **images,
                        kn_tensor **labels);
/* Where Debian's dataset-fashion-mnist installs it (or $KILN_FASHION_MNIST). */
const char *kn_fashion_mnist_dir(void);

/* ---- loader ---- */
typedef struct kn_loader kn_loader;
typedef struct kn_loader_opts {
    int64_t batch_size; /* required */
    bool shuffle;
    uint64_t seed;     /* shuffling seed; epoch e uses (seed, e) */
    bool drop_last;
    bool prefetch;     /* build the next batch on a background thread */
    /* x transform: x_f32 = (x * scale - mean) / std, applied per element after casting to
     * f32; scale 0 means 1 (use 1/255 for u8 images), std 0 means 1. */
    double scale, mean, std;
    bool add_channel_dim; /* (B, H, W) -> (B, 1, H, W) */
} kn_loader_opts;
/* x: (N, ...) any dtype; y: (N, ...) or NULL. Both retained. */
kn_loader *kn_loader_new(kn_tensor *x, kn_tensor *y, const kn_loader_opts *o);
int64_t kn_loader_num_batches(const kn_loader *l);
/* Next batch of the current epoch: 1 with x and y set (new tensors, usual ownership; *y NULL
 * without labels), 0 at the end of the epoch (the next call starts the next epoch), < 0 error. */
int kn_loader_next(kn_loader *l, kn_tensor **x, kn_tensor **y);
/* Starts epoch `epoch` explicitly (resume: the shuffle order depends only on seed and epoch). */
kn_status kn_loader_set_epoch(kn_loader *l, int64_t epoch);
int64_t kn_loader_epoch(const kn_loader *l);
void kn_loader_free(kn_loader *l);

#ifdef __cplusplus
}
#endif
#endif
