/*
** test_cuda_alloc.c -- the caching allocator's policy (core/block_pool.h)
** on a fake source of address space, so it runs in every build: rounding,
** segment sizes, splitting, best fit, merging, giving segments back, the
** retry when the source fails, and a random workload checked against a
** naive model. Then the `reserved` statistic: the CPU's block cache here,
** the CUDA allocator where a device is (skipped otherwise, and said so).
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/block_pool.h"
#include "core/device.h"
#include "core/storage.h"
#include "core/tensor.h"

#define MiB ((size_t)1 << 20)

/* ---- a fake source: address ranges, never touched ---- */

#define FAKE_MAX 1024

typedef struct {
  uintptr_t next;
  size_t limit, held;
  int allocs, frees, syncs, bad_frees, nseg;
  uintptr_t seg_addr[FAKE_MAX];
  size_t seg_size[FAKE_MAX];
} fake;

static void *fake_alloc(void *ctx, size_t n) {
  fake *f = ctx;
  if (f->held + n > f->limit || f->nseg == FAKE_MAX) return NULL;
  uintptr_t a = f->next;
  f->next += n + 4096;  /* a gap, so neighbouring segments never touch */
  f->seg_addr[f->nseg] = a;
  f->seg_size[f->nseg++] = n;
  f->held += n;
  f->allocs++;
  return (void *)a;
}

static void fake_free(void *ctx, void *p, size_t n) {
  fake *f = ctx;
  for (int i = 0; i < f->nseg; i++)
    if (f->seg_addr[i] == (uintptr_t)p && f->seg_size[i] == n) {
      f->seg_addr[i] = f->seg_addr[--f->nseg];
      f->seg_size[i] = f->seg_size[f->nseg];
      f->held -= n;
      f->frees++;
      return;
    }
  f->bad_frees++;  /* not a segment it gave, or the wrong size */
}

static void fake_sync(void *ctx) { ((fake *)ctx)->syncs++; }

static ln_block_pool *fake_pool(fake *f, size_t limit) {
  memset(f, 0, sizeof *f);
  f->next = (uintptr_t)1 << 32;
  f->limit = limit;
  return ln_block_pool_new((ln_block_source){ fake_alloc, fake_free, fake_sync, f });
}

/* Offset of p in the segment that holds it, or -1. */
static int64_t seg_offset(const fake *f, void *p) {
  for (int i = 0; i < f->nseg; i++)
    if ((uintptr_t)p >= f->seg_addr[i] && (uintptr_t)p < f->seg_addr[i] + f->seg_size[i])
      return (int64_t)((uintptr_t)p - f->seg_addr[i]);
  return -1;
}

/* ---- the policy ---- */

static void test_sizes(void) {
  CHECK(ln_block_pool_round(0) == 512);
  CHECK(ln_block_pool_round(1) == 512);
  CHECK(ln_block_pool_round(512) == 512);
  CHECK(ln_block_pool_round(513) == 1024);
  CHECK(ln_block_pool_round(SIZE_MAX) == 0);
  CHECK(ln_block_pool_segment_size(512) == 2 * MiB);
  CHECK(ln_block_pool_segment_size(MiB) == 2 * MiB);
  CHECK(ln_block_pool_segment_size(MiB + 512) == 20 * MiB);
  CHECK(ln_block_pool_segment_size(10 * MiB - 512) == 20 * MiB);
  CHECK(ln_block_pool_segment_size(10 * MiB) == 10 * MiB);
  CHECK(ln_block_pool_segment_size(10 * MiB + 512) == 12 * MiB);
  CHECK(ln_block_pool_segment_size(SIZE_MAX - 511) == 0);
}

static void test_small_blocks(void) {
  fake f;
  ln_block_pool *p = fake_pool(&f, SIZE_MAX);
  void *a = ln_block_pool_alloc(p, 1000), *b = ln_block_pool_alloc(p, 1000);
  void *c = ln_block_pool_alloc(p, 0);
  /* one 2 MiB segment, cut in address order */
  CHECK(f.allocs == 1 && f.seg_size[0] == 2 * MiB);
  CHECK(seg_offset(&f, a) == 0 && seg_offset(&f, b) == 1024 && seg_offset(&f, c) == 2048);
  ln_block_pool_stats s = ln_block_pool_stats_get(p);
  CHECK(s.reserved == 2 * MiB && s.allocated == 2560 && s.segments == 1);
  CHECK(s.free_blocks == 1);
  /* a freed block is the best fit for the next request of its size */
  CHECK(ln_block_pool_free(p, b));
  CHECK(ln_block_pool_alloc(p, 700) == b);
  CHECK(ln_block_pool_stats_get(p).free_blocks == 1);
  /* freeing everything merges the segment back into one block */
  CHECK(ln_block_pool_free(p, a) && ln_block_pool_free(p, c) && ln_block_pool_free(p, b));
  s = ln_block_pool_stats_get(p);
  CHECK(s.allocated == 0 && s.free_blocks == 1 && s.reserved == 2 * MiB);
  CHECK(!ln_block_pool_free(p, b));          /* twice */
  CHECK(!ln_block_pool_free(p, (char *)a + 512));
  /* the cache is used before the source */
  void *d = ln_block_pool_alloc(p, 4000);
  CHECK(d == a && f.allocs == 1);
  ln_block_pool_empty(p);                    /* d is in use: nothing goes back */
  CHECK(f.frees == 0 && f.syncs == 0);
  CHECK(ln_block_pool_free(p, d));
  ln_block_pool_empty(p);
  CHECK(f.frees == 1 && f.syncs == 1 && f.held == 0 && f.bad_frees == 0);
  s = ln_block_pool_stats_get(p);
  CHECK(s.reserved == 0 && s.segments == 0 && s.free_blocks == 0);
  ln_block_pool_destroy(p);
}

static void test_large_blocks(void) {
  fake f;
  ln_block_pool *p = fake_pool(&f, SIZE_MAX);
  /* under 10 MiB: a 20 MiB segment, split while more than 1 MiB is left */
  void *a = ln_block_pool_alloc(p, 3 * MiB), *b = ln_block_pool_alloc(p, 3 * MiB);
  void *c = ln_block_pool_alloc(p, MiB + 1);
  CHECK(f.allocs == 1 && f.seg_size[0] == 20 * MiB);
  CHECK(seg_offset(&f, a) == 0 && seg_offset(&f, b) == (int64_t)(3 * MiB));
  CHECK(seg_offset(&f, c) == (int64_t)(6 * MiB));
  /* small requests never take large blocks */
  void *s0 = ln_block_pool_alloc(p, 100);
  CHECK(f.allocs == 2 && f.seg_size[1] == 2 * MiB);
  /* a rest of at most 1 MiB stays with the block */
  void *d = ln_block_pool_alloc(p, 12 * MiB);  /* of the 13 MiB - 512 left */
  CHECK(f.allocs == 2 && seg_offset(&f, d) == (int64_t)(7 * MiB + 512));
  ln_block_pool_stats s = ln_block_pool_stats_get(p);
  CHECK(s.allocated == 20 * MiB + 512);      /* d took the whole rest, s0 512 */
  /* from 10 MiB on, the segment is the request rounded up to 2 MiB */
  void *e = ln_block_pool_alloc(p, 11 * MiB);
  CHECK(f.allocs == 3 && f.seg_size[2] == 12 * MiB);
  /* best fit: a freed 3 MiB hole serves 2.5 MiB before a 12 MiB one */
  CHECK(ln_block_pool_free(p, e) && ln_block_pool_free(p, b));
  CHECK(ln_block_pool_alloc(p, 2 * MiB + MiB / 2) == b);
  void *all[] = { a, b, c, d, s0 };
  for (int i = 0; i < 5; i++) CHECK(ln_block_pool_free(p, all[i]));
  s = ln_block_pool_stats_get(p);
  CHECK(s.allocated == 0 && s.free_blocks == 3 && s.segments == 3);
  ln_block_pool_empty(p);
  CHECK(f.held == 0 && f.frees == 3 && f.bad_frees == 0);
  ln_block_pool_destroy(p);
}

/* When the source is full, cached segments go back and it is asked once
** more; when that fails too, the request fails and the pool is intact. */
static void test_source_failure(void) {
  fake f;
  ln_block_pool *p = fake_pool(&f, 21 * MiB);
  void *a = ln_block_pool_alloc(p, 100);
  CHECK(ln_block_pool_free(p, a));
  CHECK(f.held == 2 * MiB);
  void *big = ln_block_pool_alloc(p, 19 * MiB);  /* 20 MiB: fits only without the cache */
  CHECK(big != NULL && f.syncs == 1 && f.frees == 1 && f.held == 20 * MiB);
  CHECK(ln_block_pool_stats_get(p).reserved == 20 * MiB);
  CHECK(ln_block_pool_alloc(p, 2 * MiB) == NULL);
  ln_block_pool_stats s = ln_block_pool_stats_get(p);
  CHECK(s.reserved == 20 * MiB && s.allocated == 20 * MiB && s.segments == 1);
  void *small = ln_block_pool_alloc(p, 512);     /* 1 MiB left: no room for 2 */
  CHECK(small == NULL);
  CHECK(ln_block_pool_free(p, big));
  CHECK(ln_block_pool_alloc(p, 100) != NULL);    /* the big one goes back for it */
  CHECK(f.held == 2 * MiB && f.bad_frees == 0);
  ln_block_pool_destroy(p);                      /* with a block still out */
  CHECK(f.held == 0 && f.nseg == 0 && f.bad_frees == 0);
}

/* Random allocations and frees against a list of what is out: blocks
** never overlap, lie inside the source's segments, keep their rounded
** size, and everything merges back and returns at the end. */
static void test_random_workload(void) {
  enum { N = 300, STEPS = 20000 };
  fake f;
  ln_block_pool *p = fake_pool(&f, (size_t)8 << 30);
  void *ptr[N] = { 0 };
  size_t size[N] = { 0 };
  uint64_t r = 12345;
  int overlap = 0, outside = 0, failed = 0, bad_free = 0;
  for (int step = 0; step < STEPS; step++) {
    r = r * 6364136223846793005u + 1442695040888963407u;
    int k = (int)((r >> 33) % N);
    if (ptr[k]) {
      bad_free += !ln_block_pool_free(p, ptr[k]);
      ptr[k] = NULL;
      continue;
    }
    int kind = (int)((r >> 20) % 8);  /* mostly small, some large, a few huge */
    size_t n = kind < 5 ? (size_t)(r >> 40) % (64 << 10)
             : kind < 7 ? (size_t)(r >> 40) % (8 * MiB) : (size_t)(r >> 40) % (24 * MiB);
    ptr[k] = ln_block_pool_alloc(p, n);
    size[k] = ln_block_pool_round(n);
    if (!ptr[k]) { failed++; continue; }
    uintptr_t a = (uintptr_t)ptr[k];
    int64_t off = seg_offset(&f, ptr[k]);
    outside += off < 0 || (uintptr_t)off % 512 != 0;
    for (int j = 0; j < N; j++) {
      uintptr_t b = (uintptr_t)ptr[j];
      if (j != k && ptr[j] && a < b + size[j] && b < a + size[k]) overlap++;
    }
    if (step % 5000 == 0) ln_block_pool_empty(p);
  }
  for (int k = 0; k < N; k++)
    if (ptr[k]) bad_free += !ln_block_pool_free(p, ptr[k]);
  CHECK(overlap == 0 && outside == 0 && failed == 0 && bad_free == 0);
  ln_block_pool_stats s = ln_block_pool_stats_get(p);
  CHECK(s.allocated == 0);
  CHECK(s.free_blocks == s.segments);            /* each segment one free block again */
  CHECK(s.reserved == f.held);
  ln_block_pool_empty(p);
  CHECK(f.held == 0 && f.nseg == 0 && f.bad_frees == 0);
  ln_block_pool_destroy(p);
}

/* ---- the reserved statistic ---- */

static void test_cpu_reserved(void) {
  ln_empty_cache(LN_CPU);
  ln_memory_stats before = ln_memory_stats_get(LN_DEVICE_CPU);
  CHECK(before.reserved >= before.in_use);
  int64_t size[1] = { 1 << 18 };               /* 1 MiB of float32: cached when freed */
  ln_tensor *t = ln_empty(size, 1, LN_F32, LN_DEVICE_CPU);
  ln_memory_stats during = ln_memory_stats_get(LN_DEVICE_CPU);
  CHECK(during.reserved - before.reserved == (int64_t)MiB);
  ln_tensor_release(t);
  ln_memory_stats after = ln_memory_stats_get(LN_DEVICE_CPU);
  CHECK(after.in_use == before.in_use && after.reserved == during.reserved);
  ln_empty_cache(LN_CPU);
  CHECK(ln_memory_stats_get(LN_DEVICE_CPU).reserved == before.reserved);
}

static void test_cuda_reserved(void) {
  const ln_backend *b = ln_backend_get(LN_CUDA);
  if (!b || b->device_count() == 0) {
    printf("test_cuda_alloc: skipped: no CUDA device (the CUDA allocator is untested)\n");
    return;
  }
  ln_device dev = { LN_CUDA, 0 };
  ln_empty_cache(LN_CUDA);
  ln_memory_stats before = ln_memory_stats_get(dev);
  int64_t size[1] = { 1000 };
  ln_tensor *x = ln_zeros(size, 1, LN_F32, dev), *y = ln_zeros(size, 1, LN_F32, dev);
  CHECK(x && y);
  ln_memory_stats during = ln_memory_stats_get(dev);
  CHECK(during.in_use - before.in_use == 8000);
  CHECK(during.reserved - before.reserved == (int64_t)(2 * MiB));  /* one small segment */
  char *px = ln_tensor_data(x), *py = ln_tensor_data(y);
  CHECK(py - px == 4096);                        /* 4000 bytes rounded to 512s */
  ln_tensor_release(x);
  ln_tensor *z = ln_zeros(size, 1, LN_F32, dev);   /* reuses x's block */
  CHECK(z && (char *)ln_tensor_data(z) == px);
  ln_tensor_release(y);
  ln_tensor_release(z);
  CHECK(ln_memory_stats_get(dev).reserved == during.reserved);
  ln_empty_cache(LN_CUDA);
  CHECK(ln_memory_stats_get(dev).reserved == before.reserved);
  CHECK_OK(b->synchronize(0));
  char name[256];
  CHECK_OK(b->device_name(0, name, sizeof name));
  CHECK(name[0] != '\0');
}

int main(void) {
  ln_init();
  test_sizes();
  test_small_blocks();
  test_large_blocks();
  test_source_failure();
  test_random_workload();
  test_cpu_reserved();
  test_cuda_reserved();
  return check_done("test_cuda_alloc");
}
