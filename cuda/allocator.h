/*
** allocator.h -- the CUDA caching allocator: one block pool
** (core/block_pool.h) per device over cudaMalloc/cudaFree. Memory taken
** from CUDA and given back is reported as the device's `reserved` bytes
** (core/storage.h); what storages hold is counted by core/storage.c.
** Thread-safe.
*/
#ifndef LN_CUDA_ALLOCATOR_H
#define LN_CUDA_ALLOCATOR_H

#include <stddef.h>

/* At least nbytes of device memory (a real pointer for 0 bytes), or NULL
** when CUDA cannot give more even after the device's cache went back. */
void *ln_cuda_alloc(int device, size_t nbytes);

/* Keep a block from ln_cuda_alloc for reuse. Work queued on the device's
** stream before this call may still use it; the next user's work is
** queued after, on the same stream. */
void ln_cuda_free(int device, void *ptr);

/* Give every device's wholly free cached segments back to CUDA. */
void ln_cuda_empty_cache(void);

#endif
