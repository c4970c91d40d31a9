/*
** allocator.c -- the CUDA caching allocator (allocator.h): a block pool
** per device, created on first use and kept for the process's life, over
** cudaMalloc/cudaFree. One lock covers every pool; the pools' policy is
** core/block_pool.c's, tested on the CPU with a fake source.
*/
#include <pthread.h>
#include <stdbool.h>

#include <cuda_runtime_api.h>

#include "core/block_pool.h"
#include "core/storage.h"
#include "cuda/allocator.h"
#include "cuda/runtime.h"

#define MAX_DEVICES 64

static ln_block_pool *pools[MAX_DEVICES];
static int pool_device[MAX_DEVICES];  /* the ctx of pool i points at entry i */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;

/* Make `device` current; returns the device that was (-1: none known).
** Segments come and go on the pool's device, but the caller's current
** device is left as it was: a caller holding another device's stream may
** allocate before it launches there. */
static int enter_device(int device) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != device && cudaSetDevice(device) != cudaSuccess) return -2;
  return prev;
}

static void leave_device(int device, int prev) {
  if (prev >= 0 && prev != device) cudaSetDevice(prev);
  cudaGetLastError();  /* an error here is not the caller's to see */
}

/* A segment from CUDA on the ctx's device; NULL (error cleared) on failure. */
static void *segment_alloc(void *ctx, size_t nbytes) {
  int device = *(int *)ctx, prev = enter_device(device);
  void *p = NULL;
  bool ok = prev != -2 && cudaMalloc(&p, nbytes) == cudaSuccess;
  leave_device(device, prev);
  if (!ok) return NULL;
  ln_memory_reserved_add((ln_device){ LN_CUDA, device }, (int64_t)nbytes);
  return p;
}

/* Nothing can be reported from a free; an error is cleared and dropped. */
static void segment_free(void *ctx, void *ptr, size_t nbytes) {
  int device = *(int *)ctx, prev = enter_device(device);
  if (prev != -2) cudaFree(ptr);
  leave_device(device, prev);
  ln_memory_reserved_add((ln_device){ LN_CUDA, device }, -(int64_t)nbytes);
}

/* Before segments go back: blocks freed by the host may still be in use by
** work queued on the stream. A failure is dropped (cudaFree reports it). */
static void segment_sync(void *ctx) {
  int device = *(int *)ctx, prev = enter_device(device);
  if (ln_cuda_synchronize(device) != LN_OK) ln_clear_error();
  leave_device(device, prev);
}

/* The device's pool, created on first use; NULL out of range or memory.
** Called with the lock held. */
static ln_block_pool *pool_of(int device) {
  if (device < 0 || device >= MAX_DEVICES) return NULL;
  if (!pools[device]) {
    pool_device[device] = device;
    pools[device] = ln_block_pool_new((ln_block_source){
      .alloc = segment_alloc, .free = segment_free, .sync = segment_sync,
      .ctx = &pool_device[device] });
  }
  return pools[device];
}

void *ln_cuda_alloc(int device, size_t nbytes) {
  pthread_mutex_lock(&pools_lock);
  ln_block_pool *p = pool_of(device);
  void *ptr = p ? ln_block_pool_alloc(p, nbytes) : NULL;
  pthread_mutex_unlock(&pools_lock);
  return ptr;
}

void ln_cuda_free(int device, void *ptr) {
  pthread_mutex_lock(&pools_lock);
  ln_block_pool *p = device >= 0 && device < MAX_DEVICES ? pools[device] : NULL;
  if (p) ln_block_pool_free(p, ptr);
  pthread_mutex_unlock(&pools_lock);
}

void ln_cuda_empty_cache(void) {
  pthread_mutex_lock(&pools_lock);
  for (int i = 0; i < MAX_DEVICES; i++)
    if (pools[i]) ln_block_pool_empty(pools[i]);
  pthread_mutex_unlock(&pools_lock);
}
