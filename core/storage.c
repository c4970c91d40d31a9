/*
** storage.c -- reference-counted device memory and allocation statistics.
*/
#include <stdlib.h>

#include "storage.h"

#define LN_MAX_DEVICES 16

struct ln_storage {
  int refcount;
  void *data;
  size_t nbytes;
  ln_device dev;
  bool counted;                      /* allocated by us: counts in the stats */
  void (*deleter)(void *ctx, void *ptr);
  void *ctx;
};

static ln_memory_stats stats[LN_DEVICE_TYPE_COUNT][LN_MAX_DEVICES];
static ln_oom_handler oom_handler;
static void *oom_ud;

void ln_set_oom_handler(ln_oom_handler fn, void *ud) {
  oom_handler = fn;
  oom_ud = ud;
}

static ln_memory_stats *stats_of(ln_device dev) {
  if (dev.index < 0 || dev.index >= LN_MAX_DEVICES) return NULL;
  return &stats[dev.type][dev.index];
}

static void account(ln_device dev, int64_t delta) {
  ln_memory_stats *s = stats_of(dev);
  if (!s) return;
  int64_t now = __atomic_add_fetch(&s->in_use, delta, __ATOMIC_RELAXED);
  if (delta > 0) {
    __atomic_add_fetch(&s->allocations, 1, __ATOMIC_RELAXED);
    int64_t peak = __atomic_load_n(&s->peak, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&s->peak, &peak, now, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
  }
}

void ln_memory_reserved_add(ln_device dev, int64_t delta) {
  ln_memory_stats *s = stats_of(dev);
  if (s) __atomic_add_fetch(&s->reserved, delta, __ATOMIC_RELAXED);
}

ln_memory_stats ln_memory_stats_get(ln_device dev) {
  ln_memory_stats *s = stats_of(dev), out = { 0, 0, 0, 0 };
  if (s) {
    out.in_use = __atomic_load_n(&s->in_use, __ATOMIC_RELAXED);
    out.peak = __atomic_load_n(&s->peak, __ATOMIC_RELAXED);
    out.allocations = __atomic_load_n(&s->allocations, __ATOMIC_RELAXED);
    out.reserved = __atomic_load_n(&s->reserved, __ATOMIC_RELAXED);
  }
  return out;
}

void ln_memory_stats_reset_peak(ln_device dev) {
  ln_memory_stats *s = stats_of(dev);
  if (s) __atomic_store_n(&s->peak, __atomic_load_n(&s->in_use, __ATOMIC_RELAXED),
                          __ATOMIC_RELAXED);
}

void ln_empty_cache(ln_device_type type) {
  const ln_backend *b = ln_backend_get(type);
  if (b && b->empty_cache) b->empty_cache();
}

/* Allocate on the device's backend; on failure give the out-of-memory
** handler one chance (a full GC in Lua) and retry once. */
static void *device_alloc(const ln_backend *b, ln_device dev, size_t nbytes) {
  void *p = b->alloc(dev.index, nbytes);
  if (!p && oom_handler) {
    oom_handler(oom_ud);
    p = b->alloc(dev.index, nbytes);
  }
  return p;
}

ln_storage *ln_storage_new(ln_device dev, size_t nbytes) {
  if (ln_device_check(dev) != LN_OK) return NULL;
  const ln_backend *b = ln_backend_get(dev.type);
  ln_storage *s = malloc(sizeof *s);
  if (!s) { ln_error(LN_ENOMEM, "out of memory allocating a storage"); return NULL; }
  s->data = device_alloc(b, dev, nbytes);
  if (!s->data) {
    char name[32];
    free(s);
    ln_error(LN_ENOMEM, "out of memory: tried to allocate %zu bytes on %s",
             nbytes, ln_device_str(dev, name, sizeof name));
    return NULL;
  }
  s->refcount = 1;
  s->nbytes = nbytes;
  s->dev = dev;
  s->counted = true;
  s->deleter = NULL;
  s->ctx = NULL;
  account(dev, (int64_t)nbytes);
  return s;
}

ln_storage *ln_storage_wrap(ln_device dev, void *ptr, size_t nbytes,
                            void (*deleter)(void *ctx, void *ptr), void *ctx) {
  ln_storage *s = malloc(sizeof *s);
  if (!s) { ln_error(LN_ENOMEM, "out of memory allocating a storage"); return NULL; }
  *s = (ln_storage){ .refcount = 1, .data = ptr, .nbytes = nbytes, .dev = dev,
                     .counted = false, .deleter = deleter, .ctx = ctx };
  return s;
}

void ln_storage_retain(ln_storage *s) {
  __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void ln_storage_release(ln_storage *s) {
  if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  if (s->counted) {
    ln_backend_get(s->dev.type)->free(s->dev.index, s->data, s->nbytes);
    account(s->dev, -(int64_t)s->nbytes);
  } else if (s->deleter) {
    s->deleter(s->ctx, s->data);
  }
  free(s);
}

void *ln_storage_data(const ln_storage *s) { return s->data; }
size_t ln_storage_nbytes(const ln_storage *s) { return s->nbytes; }
ln_device ln_storage_device(const ln_storage *s) { return s->dev; }
int ln_storage_refcount(const ln_storage *s) {
  return __atomic_load_n(&s->refcount, __ATOMIC_RELAXED);
}
