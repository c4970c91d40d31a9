/*
** cpu.c -- the CPU backend table: aligned host memory and memcpy.
*/
#include <stdlib.h>
#include <string.h>

#include "device.h"

#define LN_CPU_ALIGN 64

static int cpu_device_count(void) { return 1; }

/* Aligned for vector loads; at least one cache line so that empty tensors
** still have a valid, non-NULL data pointer. */
static void *cpu_alloc(int index, size_t nbytes) {
  (void)index;
  size_t n = (nbytes + LN_CPU_ALIGN - 1) / LN_CPU_ALIGN * LN_CPU_ALIGN;
  if (n < nbytes) return NULL;  /* overflow */
  return aligned_alloc(LN_CPU_ALIGN, n ? n : LN_CPU_ALIGN);
}

static void cpu_free(int index, void *ptr, size_t nbytes) {
  (void)index; (void)nbytes;
  free(ptr);
}

static ln_status cpu_copy(void *dst, ln_device dst_dev, const void *src,
                          ln_device src_dev, size_t nbytes) {
  (void)dst_dev; (void)src_dev;
  if (nbytes) memmove(dst, src, nbytes);
  return LN_OK;
}

static ln_status cpu_fill(int index, void *ptr, size_t n, size_t elem_size,
                          const void *elem) {
  (void)index;
  char *p = ptr;
  for (size_t i = 0; i < n; i++) memcpy(p + i * elem_size, elem, elem_size);
  return LN_OK;
}

static bool cpu_supports(ln_backend_op op, ln_dtype dtype) {
  (void)op; (void)dtype;
  return true;
}

const ln_backend ln_cpu_backend = {
  .name = "cpu",
  .device_count = cpu_device_count,
  .alloc = cpu_alloc,
  .free = cpu_free,
  .copy = cpu_copy,
  .fill = cpu_fill,
  .supports = cpu_supports,
};
