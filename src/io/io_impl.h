/*
 * io_impl.h - internals shared by src/io/safetensors.c (the container) and src/io/checkpoint.c
 * (module weights and checkpoints). Not installed.
 */
#ifndef KILN_IO_IMPL_H
#define KILN_IO_IMPL_H

#include "core/core_impl.h"
#include "kiln/io.h"

/* Index of the tensor called `name` in f (header order), or -1; sets no error. */
int kn__file_find(const kn_file *f, const char *name);
/* dtype (KN_NDTYPES for a safetensors dtype kiln lacks), rank and shape of entry i. */
void kn__file_entry(const kn_file *f, int i, kn_dtype *dt, int *ndim, const int64_t **shape);
/* The path the file was opened with (for messages). */
const char *kn__file_path(const kn_file *f);

#endif
