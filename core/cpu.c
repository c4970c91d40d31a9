/*
** cpu.c -- the CPU backend table: aligned host memory and memcpy.
*/
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "storage.h"

#define LN_CPU_ALIGN 64

static int cpu_device_count(void) { return 1; }

/* A cache of large freed blocks. Lua frees tensors when its collector
** runs, not when the last reference goes, and glibc returns large freed
** blocks to the system; without a cache every new activation of a training
** loop comes from fresh pages and pays a page fault per 4 KiB on first
** write (2-4x the cost of the kernel itself on 25 MB tensors). Blocks of
** at least CACHE_MIN bytes are kept, up to CACHE_SLOTS of them and
** CACHE_MAX_BYTES in all, and handed out again for requests at most 1/8
** smaller; an allocation that fails empties the cache and tries again. */
#define CACHE_MIN ((size_t)256 << 10)
#define CACHE_SLOTS 64
#define CACHE_MAX_BYTES ((size_t)2 << 30)

static struct {
  pthread_mutex_t lock;
  void *ptr[CACHE_SLOTS];
  size_t size[CACHE_SLOTS];
  int n;
  size_t bytes;
} cache = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The smallest cached block of n..n+n/8 bytes, removed from the cache;
** its size in *size. */
static void *cache_take(size_t n, size_t *size) {
  int best = -1;
  void *p = NULL;
  pthread_mutex_lock(&cache.lock);
  for (int i = 0; i < cache.n; i++)
    if (cache.size[i] >= n && cache.size[i] - n <= n / 8 &&
        (best < 0 || cache.size[i] < cache.size[best]))
      best = i;
  if (best >= 0) {
    p = cache.ptr[best];
    *size = cache.size[best];
    cache.bytes -= cache.size[best];
    cache.n--;
    cache.ptr[best] = cache.ptr[cache.n];
    cache.size[best] = cache.size[cache.n];
  }
  pthread_mutex_unlock(&cache.lock);
  return p;
}

/* Keep a block of n bytes; false when the cache is full. */
static bool cache_put(void *p, size_t n) {
  bool kept = false;
  pthread_mutex_lock(&cache.lock);
  if (cache.n < CACHE_SLOTS && cache.bytes + n <= CACHE_MAX_BYTES) {
    cache.ptr[cache.n] = p;
    cache.size[cache.n++] = n;
    cache.bytes += n;
    kept = true;
  }
  pthread_mutex_unlock(&cache.lock);
  return kept;
}

static void cpu_empty_cache(void) {
  pthread_mutex_lock(&cache.lock);
  for (int i = 0; i < cache.n; i++) free(cache.ptr[i]);
  ln_memory_reserved_add(LN_DEVICE_CPU, -(int64_t)cache.bytes);
  cache.n = 0;
  cache.bytes = 0;
  pthread_mutex_unlock(&cache.lock);
}

/* The size actually allocated for a request: a multiple of the alignment,
** at least one cache line so that empty tensors still have a valid,
** non-NULL data pointer; 0 on overflow. */
static size_t block_size(size_t nbytes) {
  size_t n = (nbytes + LN_CPU_ALIGN - 1) / LN_CPU_ALIGN * LN_CPU_ALIGN;
  if (n < nbytes) return 0;
  return n ? n : LN_CPU_ALIGN;
}

/* Blocks are kept with their requested size rounded by block_size; a
** cached block handed out for a smaller request is freed as that request's
** size, which only matters for the cache's byte count and the reserved
** statistic (a few percent): both count it as that size from then on. */
static void *cpu_alloc(int index, size_t nbytes) {
  (void)index;
  size_t n = block_size(nbytes), got = 0;
  if (!n) return NULL;
  void *p = n >= CACHE_MIN ? cache_take(n, &got) : NULL;
  if (p) {
    ln_memory_reserved_add(LN_DEVICE_CPU, -(int64_t)(got - n));
    return p;
  }
  p = aligned_alloc(LN_CPU_ALIGN, n);
  if (!p) {
    cpu_empty_cache();
    p = aligned_alloc(LN_CPU_ALIGN, n);
  }
  if (p) ln_memory_reserved_add(LN_DEVICE_CPU, (int64_t)n);
  return p;
}

static void cpu_free(int index, void *ptr, size_t nbytes) {
  (void)index;
  size_t n = block_size(nbytes);
  if (n >= CACHE_MIN && cache_put(ptr, n)) return;
  free(ptr);
  ln_memory_reserved_add(LN_DEVICE_CPU, -(int64_t)n);
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
  .empty_cache = cpu_empty_cache,
};
