/*
** safetensors.h -- reading and writing the safetensors format:
** 8-byte little-endian header length, a JSON header mapping names to
** {dtype, shape, data_offsets} plus an optional "__metadata__" object of
** string values, then the raw little-endian data.
*/
#ifndef LN_SAFETENSORS_H
#define LN_SAFETENSORS_H

#include "tensor.h"

typedef struct ln_named_tensor {
  char *name;          /* owned */
  ln_tensor *tensor;   /* owned reference */
} ln_named_tensor;

typedef struct ln_kv {
  char *key, *value;   /* owned */
} ln_kv;

/* A loaded file: tensors in file order (sorted by data offset), metadata. */
typedef struct ln_tensor_file {
  ln_named_tensor *tensors;
  int n_tensors;
  ln_kv *metadata;
  int n_metadata;
} ln_tensor_file;

/* Write atomically: to "<target>.tmp.<pid>", fsync, rename over the target,
** the file at the end of path's symbolic links (the links stay). A failed
** save leaves an existing file intact. An existing target that is not a
** regular file (a FIFO, a device, a directory) or that the caller may not
** write is refused (LN_EIO); a replaced file keeps its permission bits.
** Tensors are written contiguous, from any device. */
ln_status ln_safetensors_save(const char *path, const ln_named_tensor *tensors,
                              int n, const ln_kv *metadata, int n_metadata);

/* Read a whole file into CPU tensors. Truncated or corrupt files give
** LN_EFORMAT with a message naming the problem and the path. */
ln_status ln_safetensors_load(const char *path, ln_tensor_file *out);

/* Parse an in-memory image of a file (used by load and by fuzz tests). */
ln_status ln_safetensors_parse(const uint8_t *buf, size_t len, ln_tensor_file *out);

void ln_tensor_file_free(ln_tensor_file *f);

#endif
