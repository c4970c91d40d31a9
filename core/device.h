/*
** device.h -- devices and the backend table each device registers.
** core/ knows only this seam; cuda/ fills a table and registers it.
*/
#ifndef LN_DEVICE_H
#define LN_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "dtype.h"
#include "status.h"

typedef enum ln_device_type { LN_CPU = 0, LN_CUDA, LN_DEVICE_TYPE_COUNT } ln_device_type;

typedef struct ln_device {
  ln_device_type type;
  int index;  /* 0 for the CPU */
} ln_device;

#define LN_DEVICE_CPU ((ln_device){ LN_CPU, 0 })

/* Operations a backend may or may not provide, for `supports`. */
typedef enum ln_backend_op {
  LN_OP_FILL,
  LN_OP_ELEMENTWISE,
  LN_OP_REDUCE,
  LN_OP_MATMUL,
  LN_OP_BATCHNORM,
  LN_OP_COUNT
} ln_backend_op;

typedef struct ln_backend {
  const char *name;                         /* "cpu", "cuda" */
  int (*device_count)(void);                /* 0 when no device or driver */
  /* Raw memory. alloc returns NULL on failure (no message needed). */
  void *(*alloc)(int index, size_t nbytes);
  void (*free)(int index, void *ptr, size_t nbytes);
  /* Copy n bytes; at least one side is on this backend's device. */
  ln_status (*copy)(void *dst, ln_device dst_dev, const void *src,
                    ln_device src_dev, size_t nbytes);
  /* Fill n contiguous elements of `dtype` at ptr with the bit pattern `elem`. */
  ln_status (*fill)(int index, void *ptr, size_t n, size_t elem_size,
                    const void *elem);
  bool (*supports)(ln_backend_op op, ln_dtype dtype);
  /* Give cached free blocks back to the system; NULL when nothing is cached. */
  void (*empty_cache)(void);
  /* Wait until the device has finished the work queued on it; NULL when
  ** every call finishes its work before returning (the CPU). */
  ln_status (*synchronize)(int index);
  /* The device's product name ("NVIDIA H100 80GB HBM3") into buf; NULL
  ** when the backend has none to tell. */
  ln_status (*device_name)(int index, char *buf, size_t n);
  /* Kernels for core's generic ops (core/device_kernels.h); NULL for the
  ** CPU, whose kernels core calls directly. */
  const struct ln_device_kernels *kernels;
} ln_backend;

/* Register `b` for a device type (replaces any previous one). */
void ln_backend_register(ln_device_type type, const ln_backend *b);

/* The backend for a device type, or NULL when none was compiled in. */
const ln_backend *ln_backend_get(ln_device_type type);

/* Check that `dev` exists: a backend is registered and the index is below
** its device count. Sets a clear message otherwise. */
ln_status ln_device_check(ln_device dev);

/* Parse "cpu", "cuda", "cuda:1"; LN_EINVAL otherwise. */
ln_status ln_device_parse(const char *s, ln_device *out);

/* Write "cpu" or "cuda:0" into buf (at least 16 bytes). */
const char *ln_device_str(ln_device dev, char *buf, size_t n);

static inline bool ln_device_eq(ln_device a, ln_device b) {
  return a.type == b.type && a.index == b.index;
}

/* Called once by ln_init() to register the CPU backend and, when compiled
** in, the CUDA one. */
void ln_backends_init(void);

#endif
