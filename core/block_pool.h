/*
** block_pool.h -- the policy of a caching allocator, in plain C: it takes
** large segments from a raw source (cudaMalloc for the CUDA backend, a
** fake in tests/c/test_cuda_alloc.c), splits them into blocks, keeps freed
** blocks for reuse and merges free neighbours again. Like PyTorch's CUDA
** caching allocator, without streams or events: all work on a device runs
** in order on one stream, so a block freed by the host may be handed out
** again at once; the next user's work comes after the last user's.
**
** Sizes are rounded up to 512 bytes. Requests of up to 1 MiB come from
** 2 MiB segments ("small" blocks), larger ones from segments of 20 MiB
** (requests under 10 MiB) or of the request rounded up to 2 MiB. A free
** block is chosen best fit (smallest, then lowest address) among the free
** blocks of its kind and split when the rest is worth keeping: at least
** 512 bytes for small blocks, more than 1 MiB for large ones. When the
** source fails, the pool returns its wholly free segments and tries once
** more.
**
** Not thread-safe: the caller holds a lock around every call.
*/
#ifndef LN_BLOCK_POOL_H
#define LN_BLOCK_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LN_POOL_MIN_BLOCK ((size_t)512)
#define LN_POOL_SMALL_SIZE ((size_t)1 << 20)     /* largest small request */
#define LN_POOL_SMALL_SEGMENT ((size_t)2 << 20)
#define LN_POOL_LARGE_SEGMENT ((size_t)20 << 20) /* for requests under 10 MiB */
#define LN_POOL_MIN_LARGE_ALLOC ((size_t)10 << 20)
#define LN_POOL_ROUND_LARGE ((size_t)2 << 20)

/* Where segments come from. alloc returns NULL on failure; free gets back
** exactly what alloc gave. sync (may be NULL) runs before segments are
** returned, to wait for work that may still use them. */
typedef struct ln_block_source {
  void *(*alloc)(void *ctx, size_t nbytes);
  void (*free)(void *ctx, void *ptr, size_t nbytes);
  void (*sync)(void *ctx);
  void *ctx;
} ln_block_source;

typedef struct ln_block_pool ln_block_pool;

typedef struct ln_block_pool_stats {
  size_t reserved;     /* bytes of all segments held from the source */
  size_t allocated;    /* bytes of blocks handed out (rounded sizes) */
  int64_t segments;    /* segments held */
  int64_t free_blocks; /* blocks kept for reuse */
} ln_block_pool_stats;

/* A new, empty pool (NULL when out of memory). */
ln_block_pool *ln_block_pool_new(ln_block_source src);

/* Return every segment to the source and free the pool; blocks still
** handed out become invalid. NULL is fine. */
void ln_block_pool_destroy(ln_block_pool *p);

/* A block of at least nbytes (512 for 0), aligned as the source's
** segments are, or NULL when the source cannot give more memory. */
void *ln_block_pool_alloc(ln_block_pool *p, size_t nbytes);

/* Take a block back for reuse; false when ptr was not handed out by p. */
bool ln_block_pool_free(ln_block_pool *p, void *ptr);

/* Return the wholly free segments to the source. */
void ln_block_pool_empty(ln_block_pool *p);

ln_block_pool_stats ln_block_pool_stats_get(const ln_block_pool *p);

/* The policy's sizes: a request rounded (0 on overflow), and the segment
** taken from the source for a rounded request. */
size_t ln_block_pool_round(size_t nbytes);
size_t ln_block_pool_segment_size(size_t rounded);

#endif
