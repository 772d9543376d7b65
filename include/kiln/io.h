/*
 * kiln/io.h - the .kiln file: a safetensors-compatible container (8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
 * little-endian bytes; kiln's own sections go in "__metadata__"), and checkpoints built on it.
 * Any safetensors reader can load a .kiln file's tensors; loading never executes code.
 *
 * Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of the
 * directory; a crash never leaves a half-written file and an existing file is replaced only by a
 * complete one. Reads are untrusted: every offset, size, dtype, shape and JSON field is checked;
 * a corrupt or truncated file gives KN_EFORMAT with a message naming the file and the field.
 * Thread safety: a kn_file may be read from several threads.
 */
#ifndef KILN_IO_H
#define KILN_IO_H

#include "kiln/nn.h"
#include "kiln/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- raw container ---- */
/* metadata: a JSON object of string values (safetensors requires strings) or NULL. */
kn_status kn_save_tensors(const char *path, const kn_named_tensor *ts, int n,
                          const char *metadata_json);

typedef struct kn_file kn_file;
kn_file *kn_file_open(const char *path); /* reads and validates the header; maps the data */
void kn_file_close(kn_file *f);          /* tensors obtained from f stay valid after close */
int kn_file_count(const kn_file *f);
const char *kn_file_name(const kn_file *f, int i);
/* A tensor viewing the file's bytes (zero-copy when aligned, else a copy); NULL + KN_EINVAL
 * when absent. */
kn_tensor *kn_file_get(kn_file *f, const char *name);
/* The "__metadata__" object as JSON text ("{}" when absent); borrowed. */
const char *kn_file_metadata(const kn_file *f);
/* One metadata value (a string), or NULL when absent; borrowed. */
const char *kn_file_meta(const kn_file *f, const char *key);

/* ---- module weights ---- */
kn_status kn_module_save(kn_module *m, const char *path);
/* strict: every parameter/buffer must be in the file with the same shape, and the file must have
 * no extra tensors (names listed in the error); copies into the module's tensors. */
kn_status kn_module_load(kn_module *m, const char *path, bool strict);

/* ---- checkpoints: weights + optimizer state + scheduler + step + RNG state ---- */
typedef struct kn_checkpoint {
    kn_module *model;         /* required */
    kn_optimizer *optimizer;  /* may be NULL */
    kn_scheduler *scheduler;  /* may be NULL */
    int64_t step, epoch;      /* saved / restored */
    const char *extra_json;   /* saved into metadata "extra" (may be NULL); not restored */
} kn_checkpoint;
kn_status kn_checkpoint_save(const char *path, const kn_checkpoint *c);
/* Restores into c's model/optimizer/scheduler (which must have the same structure), sets step
 * and epoch, and restores the global RNG state. Nothing is modified when the file is invalid. */
kn_status kn_checkpoint_load(const char *path, kn_checkpoint *c);

#ifdef __cplusplus
}
#endif
#endif
