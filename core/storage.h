/*
** storage.h -- reference-counted raw memory on a device.
** Tensors are views on a storage; a view retains its storage.
*/
#ifndef LN_STORAGE_H
#define LN_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"

typedef struct ln_storage ln_storage;

/* A new storage of nbytes on dev (new reference), or NULL with a message.
** On allocation failure the out-of-memory handler (if any) is called once
** and the allocation retried before giving up. Memory is not zeroed. */
ln_storage *ln_storage_new(ln_device dev, size_t nbytes);

/* Wrap memory owned by someone else (no copy). `deleter(ctx, ptr)` runs
** when the last reference goes; it may be NULL. New reference. */
ln_storage *ln_storage_wrap(ln_device dev, void *ptr, size_t nbytes,
                            void (*deleter)(void *ctx, void *ptr), void *ctx);

void ln_storage_retain(ln_storage *s);
void ln_storage_release(ln_storage *s);  /* NULL is fine */

void *ln_storage_data(const ln_storage *s);
size_t ln_storage_nbytes(const ln_storage *s);
ln_device ln_storage_device(const ln_storage *s);
int ln_storage_refcount(const ln_storage *s);

/* Out-of-memory handler: called once when an allocation fails, before the
** retry (the Lua bindings run a full garbage collection here). */
typedef void (*ln_oom_handler)(void *ud);
void ln_set_oom_handler(ln_oom_handler fn, void *ud);

/* Allocation statistics of one device, in bytes. */
typedef struct ln_memory_stats {
  int64_t in_use;      /* bytes held by live storages we allocated */
  int64_t peak;        /* highest in_use since start or last reset */
  int64_t allocations; /* number of successful allocations */
  int64_t reserved;    /* bytes the device's allocator holds from the
                          system (cudaMalloc, malloc), its cache included */
} ln_memory_stats;

ln_memory_stats ln_memory_stats_get(ln_device dev);
void ln_memory_stats_reset_peak(ln_device dev);

/* For allocators: they took (delta > 0) or gave back (delta < 0) delta
** bytes of the system's memory for dev. */
void ln_memory_reserved_add(ln_device dev, int64_t delta);

/* Give the blocks a device's allocator keeps for reuse back to the system
** (they do not count as in use). */
void ln_empty_cache(ln_device_type type);

#endif
