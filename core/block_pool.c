/*
** block_pool.c -- the caching allocator's policy (block_pool.h).
**
** A segment from the source is a chain of blocks in address order (prev,
** next), each handed out or free. Free blocks sit in one of two sets
** sorted by (size, address), small and large, so a best fit is a binary
** search; handed-out blocks sit in a set sorted by address, so a free
** finds its block. Sets are sorted arrays: a few hundred entries is the
** usual count, and a memmove of those costs less than a tree's pointers.
**
** Nothing may fail half-way: before a block is handed out, the free set of
** its kind gets room for every block of that kind (plus the two that the
** allocation may add) and the handed-out set room for one more, so frees,
** merges and splits never need memory the pool has not already got.
*/
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"

typedef struct block {
  uintptr_t addr;
  size_t size;
  bool allocated;
  bool small;                 /* from a small segment */
  struct block *prev, *next;  /* neighbours in the same segment */
} block;

typedef struct {
  block **v;
  size_t n, cap;
} block_set;

struct ln_block_pool {
  ln_block_source src;
  block_set free_small, free_large;  /* by (size, addr) */
  block_set live;                    /* by addr */
  size_t blocks_small, blocks_large; /* blocks of each kind, free or not */
  ln_block_pool_stats stats;
};

/* ---- sorted sets ---- */

typedef int (*block_cmp)(const block *a, const block *b);

static int by_addr(const block *a, const block *b) {
  return a->addr < b->addr ? -1 : a->addr > b->addr;
}

static int by_size(const block *a, const block *b) {
  if (a->size != b->size) return a->size < b->size ? -1 : 1;
  return by_addr(a, b);
}

/* The index of the first entry not below key. */
static size_t lower_bound(const block_set *s, const block *key, block_cmp cmp) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cmp(s->v[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static bool reserve(block_set *s, size_t cap) {
  if (cap <= s->cap) return true;
  size_t want = s->cap ? s->cap : 16;
  while (want < cap) want *= 2;
  block **v = realloc(s->v, want * sizeof *v);
  if (!v) return false;
  s->v = v;
  s->cap = want;
  return true;
}

/* Room was reserved beforehand (see the top). */
static void insert(block_set *s, block *b, block_cmp cmp) {
  size_t i = lower_bound(s, b, cmp);
  memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof *s->v);
  s->v[i] = b;
  s->n++;
}

static void remove_at(block_set *s, size_t i) {
  memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof *s->v);
  s->n--;
}

/* b must be in s. */
static void remove_block(block_set *s, block *b, block_cmp cmp) {
  remove_at(s, lower_bound(s, b, cmp));
}

/* ---- the policy's sizes ---- */

size_t ln_block_pool_round(size_t nbytes) {
  if (nbytes == 0) return LN_POOL_MIN_BLOCK;
  if (nbytes > SIZE_MAX - (LN_POOL_MIN_BLOCK - 1)) return 0;
  return (nbytes + LN_POOL_MIN_BLOCK - 1) / LN_POOL_MIN_BLOCK * LN_POOL_MIN_BLOCK;
}

size_t ln_block_pool_segment_size(size_t rounded) {
  if (rounded <= LN_POOL_SMALL_SIZE) return LN_POOL_SMALL_SEGMENT;
  if (rounded < LN_POOL_MIN_LARGE_ALLOC) return LN_POOL_LARGE_SEGMENT;
  if (rounded > SIZE_MAX - (LN_POOL_ROUND_LARGE - 1)) return 0;
  return (rounded + LN_POOL_ROUND_LARGE - 1) / LN_POOL_ROUND_LARGE * LN_POOL_ROUND_LARGE;
}

/* ---- the pool ---- */

ln_block_pool *ln_block_pool_new(ln_block_source src) {
  ln_block_pool *p = calloc(1, sizeof *p);
  if (p) p->src = src;
  return p;
}

static block_set *free_set(ln_block_pool *p, bool small) {
  return small ? &p->free_small : &p->free_large;
}

static size_t *block_count(ln_block_pool *p, bool small) {
  return small ? &p->blocks_small : &p->blocks_large;
}

static bool whole_segment(const block *b) { return !b->prev && !b->next; }

/* Return the wholly free segments of s to the source. */
static void release_free_segments(ln_block_pool *p, block_set *s, bool small) {
  size_t kept = 0;
  for (size_t i = 0; i < s->n; i++) {
    block *b = s->v[i];
    if (!whole_segment(b)) { s->v[kept++] = b; continue; }
    p->src.free(p->src.ctx, (void *)b->addr, b->size);
    p->stats.reserved -= b->size;
    p->stats.segments--;
    (*block_count(p, small))--;
    free(b);
  }
  s->n = kept;
}

void ln_block_pool_empty(ln_block_pool *p) {
  bool any = false;
  for (int small = 0; small < 2 && !any; small++) {
    block_set *s = free_set(p, small);
    for (size_t i = 0; i < s->n && !any; i++) any = whole_segment(s->v[i]);
  }
  if (!any) return;
  if (p->src.sync) p->src.sync(p->src.ctx);
  release_free_segments(p, &p->free_small, true);
  release_free_segments(p, &p->free_large, false);
}

/* A new segment for a rounded request, as one free block not yet in any
** set; on failure the cached segments go back and the source is asked
** once more. */
static block *new_segment(ln_block_pool *p, size_t size, bool small) {
  size_t seg = ln_block_pool_segment_size(size);
  block *b = seg ? malloc(sizeof *b) : NULL;
  if (!b) return NULL;
  void *ptr = p->src.alloc(p->src.ctx, seg);
  if (!ptr) {
    ln_block_pool_empty(p);
    ptr = p->src.alloc(p->src.ctx, seg);
  }
  if (!ptr) {
    free(b);
    return NULL;
  }
  *b = (block){ .addr = (uintptr_t)ptr, .size = seg, .small = small };
  (*block_count(p, small))++;
  p->stats.reserved += seg;
  p->stats.segments++;
  return b;
}

/* Cut b (free, in no set) down to size when the rest is worth keeping;
** the rest becomes a free block of its own. Without memory for the new
** block, b stays whole. */
static void split(ln_block_pool *p, block *b, size_t size) {
  size_t rest = b->size - size;
  if (b->small ? rest < LN_POOL_MIN_BLOCK : rest <= LN_POOL_SMALL_SIZE) return;
  block *r = malloc(sizeof *r);
  if (!r) return;
  *r = (block){ .addr = b->addr + size, .size = rest, .small = b->small,
                .prev = b, .next = b->next };
  if (b->next) b->next->prev = r;
  b->next = r;
  b->size = size;
  (*block_count(p, b->small))++;
  insert(free_set(p, b->small), r, by_size);
}

void *ln_block_pool_alloc(ln_block_pool *p, size_t nbytes) {
  size_t size = ln_block_pool_round(nbytes);
  if (!size) return NULL;
  bool small = size <= LN_POOL_SMALL_SIZE;
  block_set *fs = free_set(p, small);
  if (!reserve(fs, *block_count(p, small) + 2) || !reserve(&p->live, p->live.n + 1))
    return NULL;
  block key = { .size = size };
  size_t i = lower_bound(fs, &key, by_size);
  block *b;
  if (i < fs->n) {
    b = fs->v[i];
    remove_at(fs, i);
  } else if (!(b = new_segment(p, size, small))) {
    return NULL;
  }
  split(p, b, size);
  b->allocated = true;
  insert(&p->live, b, by_addr);
  p->stats.allocated += b->size;
  return (void *)b->addr;
}

/* Merge b->next into b; neither is in a set. */
static void merge_next(ln_block_pool *p, block *b) {
  block *n = b->next;
  b->size += n->size;
  b->next = n->next;
  if (n->next) n->next->prev = b;
  (*block_count(p, n->small))--;
  free(n);
}

bool ln_block_pool_free(ln_block_pool *p, void *ptr) {
  block key = { .addr = (uintptr_t)ptr };
  size_t i = lower_bound(&p->live, &key, by_addr);
  if (i >= p->live.n || p->live.v[i]->addr != key.addr) return false;
  block *b = p->live.v[i];
  remove_at(&p->live, i);
  p->stats.allocated -= b->size;
  b->allocated = false;
  block_set *fs = free_set(p, b->small);
  if (b->next && !b->next->allocated) {
    remove_block(fs, b->next, by_size);
    merge_next(p, b);
  }
  if (b->prev && !b->prev->allocated) {
    b = b->prev;
    remove_block(fs, b, by_size);
    merge_next(p, b);
  }
  insert(fs, b, by_size);
  return true;
}

ln_block_pool_stats ln_block_pool_stats_get(const ln_block_pool *p) {
  ln_block_pool_stats s = p->stats;
  s.free_blocks = (int64_t)(p->free_small.n + p->free_large.n);
  return s;
}

/* Segments are the chains' first blocks; each block is in exactly one set. */
void ln_block_pool_destroy(ln_block_pool *p) {
  if (!p) return;
  block_set *sets[3] = { &p->free_small, &p->free_large, &p->live };
  if (p->stats.segments > 0 && p->src.sync) p->src.sync(p->src.ctx);
  for (int k = 0; k < 3; k++)
    for (size_t i = 0; i < sets[k]->n; i++) {
      block *b = sets[k]->v[i];
      if (b->prev) continue;
      size_t total = 0;
      for (block *c = b; c; c = c->next) total += c->size;
      p->src.free(p->src.ctx, (void *)b->addr, total);
    }
  for (int k = 0; k < 3; k++) {
    for (size_t i = 0; i < sets[k]->n; i++) free(sets[k]->v[i]);
    free(sets[k]->v);
  }
  free(p);
}
