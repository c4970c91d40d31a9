/*
** scratch.c -- per-thread scratch memory (scratch.h).
*/
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scratch.h"

#define SCRATCH_ALIGN 64

/* A block served outside the arena (it did not fit while others were
** held) starts with this header; they form a stack, newest first, so that
** giving back a block also frees the outside ones taken after it. */
typedef struct outside {
  struct outside *prev;
  size_t mark;       /* the arena's top when it was taken */
} outside;

typedef struct arena {
  char *base;
  size_t cap, top;   /* bytes held in the arena: [0, top) */
  size_t extra;      /* bytes held outside it, taken since it was empty */
  size_t want;       /* the largest total held */
  outside *out;      /* the outside blocks held, newest first */
} arena;

static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void arena_free(void *v) {
  arena *a = v;
  free(a->base);
  free(a);
}

static void arena_init(void) { pthread_key_create(&arena_key, arena_free); }

static arena *arena_get(void) {
  pthread_once(&arena_once, arena_init);
  arena *a = pthread_getspecific(arena_key);
  if (a) return a;
  if (!(a = calloc(1, sizeof *a))) return NULL;
  if (pthread_setspecific(arena_key, a) != 0) {
    free(a);
    return NULL;
  }
  return a;
}

static void *outside_alloc(arena *a, size_t n) {
  outside *o = aligned_alloc(SCRATCH_ALIGN, SCRATCH_ALIGN + n);
  if (!o) return NULL;
  o->prev = a->out;
  o->mark = a->top;
  a->out = o;
  a->extra += n;
  return (char *)o + SCRATCH_ALIGN;
}

static void outside_pop(arena *a) {
  outside *o = a->out;
  a->out = o->prev;
  free(o);
}

void *ln_scratch_alloc(size_t n) {
  if (n > SIZE_MAX / 2) return NULL;
  n = (n + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
  if (!n) n = SCRATCH_ALIGN;
  arena *a = arena_get();
  if (!a) return NULL;
  if (a->top + a->extra + n > a->want) a->want = a->top + a->extra + n;
  if (a->top == 0 && a->cap < a->want) {   /* empty: grow to the largest total */
    char *p = aligned_alloc(SCRATCH_ALIGN, a->want);
    if (p) {
      free(a->base);
      a->base = p;
      a->cap = a->want;
    }
  }
  if (a->top + n > a->cap) return outside_alloc(a, n);
  void *p = a->base + a->top;
  a->top += n;
  return p;
}

void *ln_scratch_zeroed(size_t n) {
  void *p = ln_scratch_alloc(n);
  if (p) memset(p, 0, n);
  return p;
}

void ln_scratch_free(void *p) {
  arena *a = p ? pthread_getspecific(arena_key) : NULL;
  if (!a) return;
  uintptr_t u = (uintptr_t)p, lo = (uintptr_t)a->base;
  if (a->base && u >= lo && u < lo + a->cap) {
    a->top = u - lo;
    while (a->out && a->out->mark > a->top) outside_pop(a);
  } else {   /* an outside block, after the outside ones taken since */
    outside *mine = (outside *)((char *)p - SCRATCH_ALIGN);
    a->top = mine->mark;
    while (a->out != mine) outside_pop(a);
    outside_pop(a);
  }
  if (a->top == 0 && !a->out) a->extra = 0;
}
